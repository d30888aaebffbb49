//! The events every row writes and reads: realistic order lines of about
//! 200 bytes of JSON, spread over 1,000 aggregates.

use serde::{Deserialize, Serialize};
use synckit::NewEvent;

/// Aggregates the events are spread over.
pub const AGGREGATES: u64 = 1000;

/// One line of an order.
#[derive(Debug, Clone, Serialize, Deserialize, synckit::Event)]
pub struct OrderLinePlaced {
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

/// The name of aggregate `a`.
pub fn aggregate(a: u64) -> String {
    format!("order-{a:05}")
}

/// The `i`-th event, on aggregate `a`.
pub fn order_line(i: u64, a: u64) -> OrderLinePlaced {
    OrderLinePlaced {
        order_id: aggregate(a),
        line: i,
        customer: format!("customer-{:04}", i * 31 % 10_000),
        sku: format!("SKU-{:06}", i * 7919 % 1_000_000),
        quantity: (i % 5 + 1) as u32,
        unit_price_cents: 1999 + i % 100,
        currency: "EUR".to_owned(),
        channel: "web-checkout".to_owned(),
        note: "standard shipping, leave at the door".to_owned(),
    }
}

/// The `i`-th event as synckit appends it (fresh UUIDv7 id, schema version
/// in the metadata); the raw baselines write exactly these rows.
pub fn new_event(i: u64, a: u64) -> NewEvent {
    NewEvent::from_event(&order_line(i, a)).expect("encodable")
}

/// A writer's events, `count` of them from `first`, over the aggregates it
/// owns (`a % writers == writer`), so that concurrent writers never race on
/// a stream and every row's work is the same for synckit and the baseline.
pub fn owned_events(first: u64, count: u64, writer: u64, writers: u64) -> Vec<NewEvent> {
    let owned = AGGREGATES / writers;
    (first..first + count)
        .map(|i| new_event(i, (i % owned) * writers + writer))
        .collect()
}

/// Stream positions that a writer who owns its aggregates tracks in memory
/// (what the fastest hand-written program does instead of asking the
/// database).
#[derive(Default)]
pub struct Heads(std::collections::HashMap<String, i64>);

impl Heads {
    /// The next position of `aggregate`, taken.
    pub fn next(&mut self, aggregate: &str) -> i64 {
        let head = self.0.entry(aggregate.to_owned()).or_insert(0);
        *head += 1;
        *head
    }

    /// The current position of `aggregate` (0 when empty).
    pub fn current(&self, aggregate: &str) -> i64 {
        self.0.get(aggregate).copied().unwrap_or(0)
    }
}

/// Percentile `p` (0–100) of `samples`, sorted in place.
pub fn percentile(samples: &mut [std::time::Duration], p: usize) -> std::time::Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len().saturating_sub(1))]
}

/// The median and the 99th percentile of `samples`.
pub fn p50_p99(samples: &mut [std::time::Duration]) -> (std::time::Duration, std::time::Duration) {
    (percentile(samples, 50), percentile(samples, 99))
}

/// What the raw programs decode each row into (synckit's `Recorded`).
#[allow(dead_code)]
pub struct RawEvent {
    pub version: i64,
    pub stream_version: i64,
    pub id: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub data: OrderLinePlaced,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}
