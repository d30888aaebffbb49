use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
struct UserCreated {
    #[event(aggregate_id = "id")]
    id: String,
}

fn main() {}
