//! The basic usage of synckit on the embedded default: derive an event,
//! store it, load it, receive it through a subscription.
//!
//! Run: `cargo run --example quickstart`. Without `DATABASE_URL` it uses a
//! fresh SQLite file in the temporary directory, removed at the end; a
//! `DATABASE_URL` picks the store by the rules of `synckit::open` (a
//! `postgres://` URL or key=value string: PostgreSQL; anything else: a
//! SQLite file path).
#![allow(clippy::print_stdout)]

use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use synckit::{Cursor, Event, ExpectedVersion, Start, SubscriptionSource};

/// A typed event: the struct's name is its type, `user_id` its stream.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct UserRegistered {
    #[event(aggregate_id)]
    user_id: String,
    email: String,
}

async fn basic_usage<S: SubscriptionSource>(store: S) -> synckit::Result<()> {
    let user_id = format!("user-{}", chrono::Utc::now().timestamp_micros());
    // Subscribe first, from now on: it receives what is stored below.
    let mut registrations = UserRegistered::subscribe_from(&store, Start::Now).await?;

    let stored = store
        .append_event(
            ExpectedVersion::NoStream,
            &UserRegistered {
                user_id: user_id.clone(),
                email: "ada@example.com".into(),
            },
        )
        .await?;
    println!(
        "stored {} for {}: global version {}, version {} of its stream",
        stored.event_type, stored.aggregate_id, stored.version, stored.stream_version
    );

    let loaded = store.load_by_aggregate(&user_id, Cursor::START).await?;
    for event in loaded {
        let event = event.decode::<UserRegistered>()?;
        println!(
            "loaded version {} of its stream (global {}): {:?}",
            event.stream_version, event.version, event.data
        );
    }

    match tokio::time::timeout(Duration::from_secs(10), registrations.next()).await {
        Ok(Some(event)) => println!("received through the subscription: {:?}", event?.data),
        _ => println!("nothing received within 10 s"),
    }
    store.close().await
}

#[tokio::main]
async fn main() -> synckit::Result<()> {
    // A fresh file per run, removed at the end, unless DATABASE_URL names
    // a store (a postgres:// URL, a key=value string or a SQLite path).
    let fresh = std::env::temp_dir().join(format!(
        "synckit-quickstart-{}.db",
        chrono::Utc::now().timestamp_micros()
    ));
    let target = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| fresh.display().to_string());
    let store = synckit::open(&target).await?;
    println!("using the {} store", store.backend());
    basic_usage(store).await?;
    for file in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{file}", fresh.display()));
    }
    Ok(())
}
