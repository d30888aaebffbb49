//! The typed core on `wasm32-unknown-unknown`, run under node by
//! `wasm-bindgen-test-runner` (see `.ci/run`): events, cursors, the
//! in-memory store and a subscription, with no tokio and no threads.
#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use synckit::{Cursor, Error, Event, EventStore, ExpectedVersion, MemoryStore, NewEvent, Start};
use wasm_bindgen_test::wasm_bindgen_test;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(aggregate_id = "cart")]
enum CartEvent {
    ItemAdded {
        cart: String,
        sku: String,
    },
    #[event(type = "cart.checked_out")]
    CheckedOut {
        cart: String,
    },
}

#[wasm_bindgen_test]
fn derive_round_trips() {
    let e = CartEvent::ItemAdded {
        cart: "c1".into(),
        sku: "s".into(),
    };
    assert_eq!(e.aggregate_id(), "c1");
    let data = e.encode().unwrap();
    assert_eq!(CartEvent::decode("ItemAdded", data).unwrap(), e);
    assert!(matches!(
        CartEvent::decode("nope", serde_json::json!({})),
        Err(Error::UnknownEventType { .. })
    ));
}

#[wasm_bindgen_test]
fn cursors_parse() {
    assert_eq!(Cursor::parse("").unwrap(), Cursor::START);
    assert!(Cursor::parse("-1").is_err());
}

#[wasm_bindgen_test]
fn new_events_get_distinct_ids() {
    // Ids (UUID v7) need the JavaScript clock and random source.
    let a = NewEvent::new("x", "t", serde_json::json!({}));
    let b = NewEvent::new("x", "t", serde_json::json!({}));
    assert_ne!(a.id(), b.id());
}

#[wasm_bindgen_test]
async fn memory_store_appends_loads_and_delivers() {
    let store = MemoryStore::new();
    let mut sub = CartEvent::subscribe_from(&store, Start::Beginning)
        .await
        .unwrap();
    store
        .append_events(
            ExpectedVersion::NoStream,
            &[
                CartEvent::ItemAdded {
                    cart: "c1".into(),
                    sku: "s".into(),
                },
                CartEvent::CheckedOut { cart: "c1".into() },
            ],
        )
        .await
        .unwrap();
    let err = store
        .append_event(
            ExpectedVersion::NoStream,
            &CartEvent::CheckedOut { cart: "c1".into() },
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Conflict {
            actual: Some(2),
            ..
        }
    ));
    let all = store.load(Cursor::START).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[0].created_at.timestamp() > 1_600_000_000);
    let first = sub.next().await.unwrap().unwrap();
    let second = sub.next().await.unwrap().unwrap();
    assert_eq!(first.stream_version, 1);
    assert_eq!(second.event_type, "cart.checked_out");
}

/// Version 2 of a cart item: version 1 called the SKU `code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(
    type = "cart.item",
    aliases = ["ItemPut"],
    version = 2,
    upcast(v1 = "code_to_sku")
)]
struct CartItem {
    #[event(aggregate_id)]
    cart: String,
    sku: String,
}

fn code_to_sku(mut data: serde_json::Value) -> Result<serde_json::Value, String> {
    let map = data.as_object_mut().ok_or("not an object")?;
    let code = map.remove("code").ok_or("no `code`")?;
    map.insert("sku".into(), code);
    Ok(data)
}

#[wasm_bindgen_test]
async fn old_events_are_upcast_on_read() {
    let store = MemoryStore::new();
    store
        .append(
            ExpectedVersion::Any,
            vec![
                NewEvent::new(
                    "c1",
                    "ItemPut",
                    serde_json::json!({"cart": "c1", "code": "a"}),
                ),
                NewEvent::new("c1", "cart.item", serde_json::json!({"cart": "c1"}))
                    .with_id("no-code"),
                NewEvent::from_event(&CartItem {
                    cart: "c1".into(),
                    sku: "b".into(),
                })
                .unwrap(),
            ],
        )
        .await
        .unwrap();
    let mut sub = CartItem::subscribe_from(&store, Start::Beginning)
        .await
        .unwrap();
    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(first.data.sku, "a");
    assert_eq!(first.event_type, "ItemPut");
    assert!(matches!(
        sub.next().await.unwrap(),
        Err(Error::Upcast { from: 1, event_id: Some(id), .. }) if id == "no-code"
    ));
    assert_eq!(sub.next().await.unwrap().unwrap().data.sku, "b");
}

#[derive(Default)]
struct Cart {
    items: Vec<String>,
    checked_out: bool,
}

impl synckit::Aggregate for Cart {
    type Event = CartEvent;
    const NAME: &'static str = "cart";
    fn apply(&mut self, event: &CartEvent) {
        match event {
            CartEvent::ItemAdded { sku, .. } => self.items.push(sku.clone()),
            CartEvent::CheckedOut { .. } => self.checked_out = true,
        }
    }
}

#[wasm_bindgen_test]
async fn aggregates_decide_and_retry_on_the_memory_store() {
    use synckit::{Decide, DecideError};
    let store = MemoryStore::new();
    let add = |sku: &'static str| {
        move |cart: &Cart| {
            if cart.checked_out {
                return Err("checked out");
            }
            Ok(vec![CartEvent::ItemAdded {
                cart: "c1".into(),
                sku: sku.into(),
            }])
        }
    };
    store.decide("c1", Decide::new(), add("a")).await.unwrap();
    // Two commands at once on one task: both apply, in some order.
    let (first, second) = futures::join!(
        store.decide("c1", Decide::new(), add("b")),
        store.decide("c1", Decide::new(), add("c"))
    );
    assert!(first.is_ok() && second.is_ok());
    store
        .decide("c1", Decide::new().command_id("checkout-1"), |_: &Cart| {
            Ok::<_, &str>(vec![CartEvent::CheckedOut { cart: "c1".into() }])
        })
        .await
        .unwrap();
    assert!(matches!(
        store.decide("c1", Decide::new(), add("d")).await,
        Err(DecideError::Rejected("checked out"))
    ));
    let mut loaded = store.load_aggregate::<Cart>("c1").await.unwrap();
    loaded.state.items.sort();
    assert_eq!(loaded.state.items, ["a", "b", "c"]);
    assert_eq!(loaded.version, Some(4));
}
