//! Derives events on a struct and on an enum, and prints their type names,
//! aggregate ids, stored form and JSON Schemas.
//!
//! Run: `cargo run --example derive`
#![allow(clippy::print_stdout)]

use serde::{Deserialize, Serialize};
use synckit::{Event, NewEvent};

/// A struct is one event type; `type` overrides the default name.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "user.registered", version = 2)]
struct UserRegistered {
    #[event(aggregate_id)]
    user_id: String,
    email: String,
}

/// An enum is one event type per variant.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(aggregate_id = "order_id")]
enum OrderEvent {
    Placed {
        order_id: u64,
        total_cents: i64,
    },
    #[event(type = "order.shipped")]
    Shipped {
        order_id: u64,
        carrier: String,
    },
}

fn show<E: Event + schemars::JsonSchema + std::fmt::Debug>(event: &E) -> synckit::Result<()> {
    let new = NewEvent::from_event(event)?;
    println!("{event:?}");
    println!("  event type:   {}", event.event_type());
    println!("  aggregate id: {}", event.aggregate_id());
    println!("  stored data:  {}", new.data());
    println!(
        "  metadata:     {}",
        serde_json::Value::Object(new.metadata().clone())
    );
    Ok(())
}

fn main() -> synckit::Result<()> {
    show(&UserRegistered {
        user_id: "user-1".into(),
        email: "ada@example.com".into(),
    })?;
    show(&OrderEvent::Placed {
        order_id: 7,
        total_cents: 1999,
    })?;
    show(&OrderEvent::Shipped {
        order_id: 7,
        carrier: "post".into(),
    })?;

    println!(
        "\nevent types of OrderEvent: {:?}",
        OrderEvent::event_types()
    );
    for schema in UserRegistered::event_schemas()
        .into_iter()
        .chain(OrderEvent::event_schemas())
    {
        let text = serde_json::to_string_pretty(&schema.schema).map_err(|source| {
            synckit::Error::Serialization {
                event_type: schema.event_type.to_owned(),
                source,
            }
        })?;
        println!("\nJSON Schema of {}:\n{text}", schema.event_type);
    }
    Ok(())
}
