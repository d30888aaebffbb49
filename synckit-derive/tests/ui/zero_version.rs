use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(version = 0)]
struct UserCreated {
    #[event(aggregate_id)]
    id: String,
}

fn main() {}
