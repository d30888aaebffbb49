//! An application's own `synckit` command: the stock commands plus
//! `schema check` over the application's event types.
//!
//! `cargo run -p synckit-cli --example app_cli -- schema check` checks the
//! store `DATABASE_URL` names against `UserEvent` and `OrderPlaced`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use synckit::Event;
use synckit::evolution::EventTypes;

/// A user's events at schema version 2: `Registered` was `UserCreated`
/// with one `name`.
#[derive(Serialize, Deserialize, Event)]
#[event(aggregate_id = "user_id", version = 2, upcast(v1 = "split_name"))]
enum UserEvent {
    #[event(type = "user.registered", aliases = ["UserCreated"])]
    Registered {
        user_id: String,
        first: String,
        last: String,
    },
}

fn split_name(mut data: Value) -> Result<Value, String> {
    let map = data.as_object_mut().ok_or("not an object")?;
    let name = map
        .remove("name")
        .and_then(|n| n.as_str().map(str::to_owned))
        .ok_or("no `name`")?;
    let (first, last) = name
        .split_once(' ')
        .ok_or_else(|| format!("{name:?} has no space"))?;
    map.insert("first".into(), first.into());
    map.insert("last".into(), last.into());
    Ok(data)
}

/// An event type that never changed.
#[derive(Serialize, Deserialize, Event)]
#[event(type = "order.placed")]
struct OrderPlaced {
    #[event(aggregate_id)]
    order_id: String,
    total: u64,
}

fn main() -> std::process::ExitCode {
    let types = EventTypes::new()
        .with::<UserEvent>()
        .and_then(|t| t.with::<OrderPlaced>());
    match types {
        Ok(types) => synckit_cli::run(types),
        Err(e) => {
            eprintln!("synckit: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
