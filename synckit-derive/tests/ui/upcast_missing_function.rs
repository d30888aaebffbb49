use serde::{Deserialize, Serialize};
use synckit::Event;

#[derive(Serialize, Deserialize, Event)]
#[event(version = 2, upcast(v1 = "no_such_function"))]
struct UserCreated {
    #[event(aggregate_id)]
    user_id: String,
}

fn main() {}
