use serde::{Deserialize, Serialize};
use synckit::Event;

#[derive(Serialize, Deserialize, Event)]
#[event(aggregate_id = "id")]
enum UserEvent {
    #[event(type = "user.registered", aliases = ["UserCreated"])]
    Registered { id: String },
    #[event(type = "UserCreated")]
    Imported { id: String },
}

fn main() {}
