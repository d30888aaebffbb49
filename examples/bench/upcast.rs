//! The cost of upcasting: a typed load where every event was stored two
//! schema versions ago (two JSON steps each), beside the same load of the
//! same events stored at the current version, same run, same store type
//! (embedded SQLite, so the row needs no server).

use std::path::Path;

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use synckit::{Cursor, Event, EventStore, ExpectedVersion, NewEvent, metadata};

use crate::report::{self, Goal, Rates, Row};
use crate::sqlite::store;
use crate::workload;

/// The order line at schema version 3. Version 1 called the quantity
/// `qty`; version 2 kept the price as a decimal string of euros.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(
    type = "order.line",
    version = 3,
    upcast(v1 = "qty_to_quantity", v2 = "price_to_cents")
)]
pub struct OrderLine {
    #[event(aggregate_id)]
    pub order_id: String,
    pub line: u64,
    pub customer: String,
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
    pub currency: String,
    pub channel: String,
    pub note: String,
}

fn qty_to_quantity(mut data: Value) -> Result<Value, String> {
    let map = data.as_object_mut().ok_or("not an object")?;
    let qty = map.remove("qty").ok_or("no `qty`")?;
    map.insert("quantity".into(), qty);
    Ok(data)
}

fn price_to_cents(mut data: Value) -> Result<Value, String> {
    let map = data.as_object_mut().ok_or("not an object")?;
    let price = map.remove("unit_price").ok_or("no `unit_price`")?;
    let euros: f64 = price
        .as_str()
        .and_then(|p| p.parse().ok())
        .ok_or("`unit_price` is no decimal")?;
    map.insert(
        "unit_price_cents".into(),
        json!((euros * 100.0).round() as u64),
    );
    Ok(data)
}

/// The `i`-th line stored at version 3, or as version-1 code wrote it.
fn stored(i: u64, old: bool) -> NewEvent {
    let line = workload::order_line(i, i % workload::AGGREGATES);
    let current = OrderLine {
        order_id: line.order_id,
        line: line.line,
        customer: line.customer,
        sku: line.sku,
        quantity: line.quantity,
        unit_price_cents: line.unit_price_cents,
        currency: line.currency,
        channel: line.channel,
        note: line.note,
    };
    if !old {
        return NewEvent::from_event(&current).expect("encodable");
    }
    let mut data = current.encode().expect("encodable");
    let map = data.as_object_mut().expect("an object");
    let quantity = map.remove("quantity").expect("quantity");
    map.insert("qty".into(), quantity);
    let cents = map
        .remove("unit_price_cents")
        .and_then(|c| c.as_u64())
        .expect("cents");
    map.insert(
        "unit_price".into(),
        json!(format!("{}.{:02}", cents / 100, cents % 100)),
    );
    NewEvent::new(current.order_id.clone(), "order.line", data)
        .with_metadata(metadata::SCHEMA_VERSION, json!(1))
}

async fn seed(dir: &Path, file: &str, events: u64, old: bool) {
    let store = store(dir, file).await;
    let mut first = 0;
    while first < events {
        let count = (events - first).min(10_000);
        let batch = (first..first + count).map(|i| stored(i, old)).collect();
        store
            .append(ExpectedVersion::Any, batch)
            .await
            .expect("seed");
        first += count;
    }
    store.close().await.expect("close");
}

async fn load(dir: &Path, file: &str) -> u64 {
    let store = store(dir, file).await;
    let quantities = store
        .read_stream_as::<OrderLine>(OrderLine::filter(), Cursor::START)
        .try_fold(0u64, |sum, e| async move {
            Ok(sum + u64::from(e.data.quantity))
        })
        .await
        .expect("load");
    store.close().await.expect("close");
    quantities
}

/// Loads `events` events stored two versions ago beside `events` stored at
/// the current version, alternating turns, best of each.
pub async fn typed_load(dir: &Path, events: u64) -> Row {
    seed(dir, "current.db", events, false).await;
    seed(dir, "old.db", events, true).await;
    let (mut upcast, mut current) = (Rates::default(), Rates::default());
    for old_turn in [false, true, true, false] {
        if old_turn {
            upcast.push(report::measure_load(events, load(dir, "old.db")).await);
        } else {
            current.push(report::measure_load(events, load(dir, "current.db")).await);
        }
    }
    let (u, c) = (upcast.best(), current.best());
    Row {
        measurement: format!(
            "SQLite typed load of {} events, each upcast twice (v1 → v3)",
            report::rate(events as f64).trim_end_matches(" ev/s")
        ),
        synckit: report::rate(u),
        baseline: format!("{} (the same events stored at v3)", report::rate(c)),
        ratio: u / c,
        goal: Goal::Reported,
        figures: json!({"events": events, "upcast": u, "current": c,
                        "rounds": {"upcast": upcast.all(), "current": current.all()}}),
    }
}
