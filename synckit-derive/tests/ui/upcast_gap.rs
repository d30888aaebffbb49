use serde::{Deserialize, Serialize};
use serde_json::Value;
use synckit::Event;

fn v1_to_v2(v: Value) -> Result<Value, String> { Ok(v) }
fn v3_to_v4(v: Value) -> Result<Value, String> { Ok(v) }

#[derive(Serialize, Deserialize, Event)]
#[event(version = 4, upcast(v1 = "v1_to_v2", v3 = "v3_to_v4"))]
struct UserCreated {
    #[event(aggregate_id)]
    user_id: String,
}

fn main() {}
