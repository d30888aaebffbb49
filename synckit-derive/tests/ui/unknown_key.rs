use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(typ = "user.created")]
struct UserCreated {
    #[event(aggregate_id)]
    id: String,
}

fn main() {}
