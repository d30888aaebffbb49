//! The PostgreSQL store: connect, append, a conflict on purpose, a batch,
//! loads and pool stats.
//!
//! Run: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example postgres`
//! (without `DATABASE_URL` it uses that local server).
#![allow(clippy::print_stdout)]

use serde::{Deserialize, Serialize};
use synckit::postgres::{Config, PgStore};
use synckit::{Cursor, Error, Event, EventStore, ExpectedVersion};

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(aggregate_id = "account")]
enum AccountEvent {
    Opened { account: String, owner: String },
    Deposited { account: String, amount: u64 },
}

#[tokio::main]
async fn main() -> synckit::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let config = Config::new(url);
    println!("connecting to {}", config.redacted_connection_string());
    let store = PgStore::connect(config).await?;

    // A fresh account per run, so the example can run again and again.
    let account = format!("account-{}", chrono::Utc::now().timestamp_micros());
    let opened = store
        .append_event(
            ExpectedVersion::NoStream,
            &AccountEvent::Opened {
                account: account.clone(),
                owner: "Ada".into(),
            },
        )
        .await?;
    println!(
        "appended {} at version {} (stream version {})",
        opened.event_type, opened.version, opened.stream_version
    );

    // Appending as if the stream were new again is a conflict.
    match store
        .append_event(
            ExpectedVersion::NoStream,
            &AccountEvent::Opened {
                account: account.clone(),
                owner: "Eve".into(),
            },
        )
        .await
    {
        Err(e @ Error::Conflict { .. }) => println!("conflict, as intended: {e}"),
        other => println!("expected a conflict, got {other:?}"),
    }

    let deposits: Vec<_> = (1..=3)
        .map(|amount| AccountEvent::Deposited {
            account: account.clone(),
            amount,
        })
        .collect();
    let batch = store
        .append_events(ExpectedVersion::Exact(1), &deposits)
        .await?;
    println!(
        "appended a batch of {} events, versions {}..={}",
        batch.len(),
        batch[0].version,
        batch[batch.len() - 1].version
    );

    let stream = store.load_by_aggregate(&account, Cursor::START).await?;
    for recorded in stream {
        let event = recorded.decode::<AccountEvent>()?;
        println!("  #{} {:?}", event.stream_version, event.data);
    }
    let latest = store.latest_version().await?;
    let tail = store
        .load(Cursor::new(latest.version().saturating_sub(4)))
        .await?;
    println!(
        "latest version {latest}; the last {} events of the store:",
        tail.len()
    );
    for e in tail {
        println!("  v{} {} {}", e.version, e.aggregate_id, e.event_type);
    }
    println!("pool: {:?}", store.stats()?);
    store.close().await?;
    Ok(())
}
