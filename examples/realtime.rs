//! Real-time subscriptions with typed events: one stream, all streams and
//! one event type, over PostgreSQL LISTEN/NOTIFY. Appends a few events from
//! a second store (as another process would), prints what arrives, exits.
//!
//! Run: `cargo run --example realtime` (`DATABASE_URL`, else the local
//! server `postgres://postgres@127.0.0.1:5432/postgres`).
#![allow(clippy::print_stdout)]

use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use synckit::postgres::{Config, PgStore};
use synckit::{Event, EventStore, ExpectedVersion, Filter, HandlerSubscriptions};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate_id = "user_id")]
enum UserEvent {
    Registered { user_id: String, email: String },
    Renamed { user_id: String, name: String },
}

#[tokio::main]
async fn main() -> synckit::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let store = PgStore::connect(Config::new(url.clone())).await?;
    let user = format!("user-{}", chrono::Utc::now().timestamp_micros());

    // Typed stream of one aggregate, and of one enum's event types.
    let mut one_user = UserEvent::subscribe_stream(&store, user.clone()).await?;
    let mut all_users = UserEvent::subscribe(&store).await?;
    // A handler in a task of its own: the notification payload of every event.
    let (tx, mut payloads) = tokio::sync::mpsc::unbounded_channel();
    let _all = store
        .subscribe_with(Filter::all(), move |payload| {
            let tx = tx.clone();
            async move { tx.send(payload).map_err(|e| e.to_string()) }
        })
        .await?;
    println!(
        "subscribed: {:?}",
        store
            .active_subscriptions()
            .iter()
            .map(|f| f.describe())
            .collect::<Vec<_>>()
    );

    // Another store on the same database stands in for another process.
    let writer = PgStore::connect(Config::new(url)).await?;
    writer
        .append_events(
            ExpectedVersion::NoStream,
            &[
                UserEvent::Registered {
                    user_id: user.clone(),
                    email: "ada@example.com".into(),
                },
                UserEvent::Renamed {
                    user_id: user.clone(),
                    name: "Ada Lovelace".into(),
                },
            ],
        )
        .await?;

    let within = Duration::from_secs(10);
    for _ in 0..2 {
        if let Ok(Some(event)) = tokio::time::timeout(within, one_user.next()).await {
            let event = event?;
            println!("stream {user}: #{} {:?}", event.stream_version, event.data);
        }
        if let Ok(Some(event)) = tokio::time::timeout(within, all_users.next()).await {
            let event = event?;
            println!("type filter: v{} {}", event.version, event.event_type);
        }
        if let Ok(Some(payload)) = tokio::time::timeout(within, payloads.recv()).await {
            println!(
                "handler: {}",
                serde_json::to_string(&payload).unwrap_or_default()
            );
        }
    }
    println!("listener connected: {}", store.is_listener_connected());
    writer.close().await?;
    store.close().await?;
    Ok(())
}
