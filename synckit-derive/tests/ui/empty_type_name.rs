use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(type = "")]
struct UserCreated {
    #[event(aggregate_id)]
    id: String,
}

fn main() {}
