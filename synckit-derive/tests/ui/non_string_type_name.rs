use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(type = 42)]
struct UserCreated {
    #[event(aggregate_id)]
    id: String,
}

fn main() {}
