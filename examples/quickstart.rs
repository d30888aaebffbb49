//! The basic usage of synckit on the embedded default: derive an event,
//! store it, load it, receive it through a subscription.
//!
//! Run: `cargo run --example quickstart`. Without `DATABASE_URL` it uses a
//! SQLite file in the temporary directory (and prints its path); with a
//! `postgres://` (or key=value) `DATABASE_URL` it uses PostgreSQL, and with
//! any other value it takes it as a SQLite file path.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use synckit::postgres::PgStore;
use synckit::sqlite::SqliteStore;
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
        "stored {} for {} at version {}",
        stored.event_type, stored.aggregate_id, stored.version
    );

    let loaded = store.load_by_aggregate(&user_id, Cursor::START).await?;
    for event in loaded {
        let event = event.decode::<UserRegistered>()?;
        println!("loaded #{}: {:?}", event.stream_version, event.data);
    }

    match tokio::time::timeout(Duration::from_secs(10), registrations.next()).await {
        Ok(Some(event)) => println!("received through the subscription: {:?}", event?.data),
        _ => println!("nothing received within 10 s"),
    }
    store.close().await
}

#[tokio::main]
async fn main() -> synckit::Result<()> {
    match std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        Some(url)
            if url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.contains('=') =>
        {
            let config = synckit::postgres::Config::new(url);
            println!(
                "using PostgreSQL at {}",
                config.redacted_connection_string()
            );
            basic_usage(PgStore::connect(config).await?).await
        }
        other => {
            let path = match other {
                Some(path) => path.trim_start_matches("sqlite://").into(),
                None => std::env::temp_dir().join("synckit-quickstart.db"),
            };
            println!(
                "using the embedded SQLite store at {}",
                std::path::Path::display(&path)
            );
            basic_usage(SqliteStore::open(path).await?).await
        }
    }
}
