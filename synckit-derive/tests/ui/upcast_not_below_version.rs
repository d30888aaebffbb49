use serde::{Deserialize, Serialize};
use serde_json::Value;
use synckit::Event;

fn v2_to_v3(v: Value) -> Result<Value, String> { Ok(v) }

#[derive(Serialize, Deserialize, Event)]
#[event(version = 2, upcast(v2 = "v2_to_v3"))]
struct UserCreated {
    #[event(aggregate_id)]
    user_id: String,
}

fn main() {}
