use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(version = "two")]
struct UserCreated {
    #[event(aggregate_id)]
    id: String,
}

fn main() {}
