use serde::{Deserialize, Serialize};
use serde_json::Value;
use synckit::Event;

fn v1_to_v2(v: Value) -> Result<Value, String> { Ok(v) }

#[derive(Serialize, Deserialize, Event)]
#[event(aggregate_id = "id", version = 2)]
enum UserEvent {
    #[event(upcast(v1 = "v1_to_v2", v1 = "v1_to_v2"))]
    Created { id: String },
}

fn main() {}
