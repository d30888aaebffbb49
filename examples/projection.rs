//! Two members of a consumer group run an exactly-once projection into one
//! table: each account's deposits go to one member, in order, and each
//! deposit is added to the account's balance exactly once, because the
//! member's writes and its partition's checkpoint commit in one
//! transaction. Then it exits.
//!
//! Run: `cargo run --example projection`. Without `DATABASE_URL` it uses a
//! fresh SQLite file in the temporary directory, removed at the end; a
//! `DATABASE_URL` picks the store by the rules of `synckit::open` (a
//! `postgres://` URL or key=value string: PostgreSQL; anything else: a
//! SQLite file path). Each run uses a group and accounts of its own, so it
//! can run again on the same database.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use serde::{Deserialize, Serialize};
use synckit::{AnyStore, Event, EventStore, ExpectedVersion, Recorded, Start, SubscriptionSource};

/// A typed event: `account` is its stream.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct Deposited {
    #[event(aggregate_id)]
    account: String,
    amount: i64,
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS example_balances (
    account TEXT PRIMARY KEY,
    amount BIGINT NOT NULL,
    deposits BIGINT NOT NULL
)";

/// The read model's one statement, written through the projection's
/// transaction (`$1`: PostgreSQL's placeholders; SQLite takes them too).
const ADD: &str = "INSERT INTO example_balances (account, amount, deposits) VALUES ($1, $2, 1)
    ON CONFLICT (account) DO UPDATE
    SET amount = example_balances.amount + excluded.amount,
        deposits = example_balances.deposits + 1";

/// Runs one member of group `group` on its own store (as another process
/// would), projecting into the table until its store closes.
async fn member(
    target: &str,
    group: &str,
) -> Result<(AnyStore, tokio::task::JoinHandle<synckit::Result<()>>), Box<dyn std::error::Error>> {
    let store = synckit::open(target).await?;
    let subscription = Deposited::subscribe_from(&store, Start::group(group, 4))
        .await?
        // Up to 10 events (of those already read) per transaction.
        .with_events_per_transaction(10);
    let running = match store.clone() {
        AnyStore::Postgres(store) => tokio::spawn(async move {
            use diesel_async::RunQueryDsl;
            store
                .project(subscription, |conn, events: &[Recorded<Deposited>]| {
                    Box::pin(async move {
                        for event in events {
                            diesel::sql_query(ADD)
                                .bind::<Text, _>(&event.data.account)
                                .bind::<BigInt, _>(event.data.amount)
                                .execute(conn)
                                .await?;
                        }
                        Ok::<_, diesel::result::Error>(())
                    })
                })
                .await
        }),
        AnyStore::Sqlite(store) => tokio::spawn(async move {
            use diesel::RunQueryDsl;
            store
                .project(subscription, |conn, events: &[Recorded<Deposited>]| {
                    for event in events {
                        diesel::sql_query(ADD)
                            .bind::<Text, _>(&event.data.account)
                            .bind::<BigInt, _>(event.data.amount)
                            .execute(conn)?;
                    }
                    Ok::<_, diesel::result::Error>(())
                })
                .await
        }),
        other => {
            return Err(format!(
                "a projection needs PostgreSQL or SQLite, not {}",
                other.backend()
            )
            .into());
        }
    };
    Ok((store, running))
}

/// Creates the table, or reads `(account, amount, deposits)` of the
/// accounts starting with `prefix`.
async fn table(
    target: &str,
    prefix: Option<&str>,
) -> Result<Vec<(String, i64, i64)>, Box<dyn std::error::Error>> {
    let query = "SELECT account, amount, deposits FROM example_balances \
                 WHERE substr(account, 1, length($1)) = $1 ORDER BY account";
    if matches!(
        synckit::StoreConfig::parse(target)?,
        synckit::StoreConfig::Postgres(_)
    ) {
        let (client, connection) = tokio_postgres::connect(target, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let Some(prefix) = prefix else {
            client.batch_execute(CREATE).await?;
            return Ok(Vec::new());
        };
        let rows = client.query(query, &[&prefix]).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    } else {
        let conn = rusqlite::Connection::open(target)?;
        let Some(prefix) = prefix else {
            conn.execute(CREATE, [])?;
            return Ok(Vec::new());
        };
        let mut statement = conn.prepare(query)?;
        let rows = statement.query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fresh = std::env::temp_dir().join(format!(
        "synckit-projection-{}.db",
        chrono::Utc::now().timestamp_micros()
    ));
    let target = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| fresh.display().to_string());
    let outcome = project_balances(&target).await;
    for file in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{file}", fresh.display()));
    }
    outcome
}

/// The whole example on the store `target` names; an error when a balance
/// is not what the deposits add up to.
pub(crate) async fn project_balances(target: &str) -> Result<(), Box<dyn std::error::Error>> {
    let run = chrono::Utc::now().timestamp_micros();
    let (group, prefix) = (format!("balances-{run}"), format!("acct-{run}-"));

    // The store's tables first (opening migrates), then the read model
    // beside them.
    let store = synckit::open(target).await?;
    println!("using the {} store", store.backend());
    table(target, None).await?;

    // 200 deposits to 8 accounts, 1 to 200.
    let mut expected = std::collections::BTreeMap::<String, (i64, i64)>::new();
    let mut head = 0;
    for n in 1..=200i64 {
        let account = format!("{prefix}{}", n % 8);
        let e = expected.entry(account.clone()).or_default();
        (e.0, e.1) = (e.0 + n, e.1 + 1);
        let stored = store
            .append_event(ExpectedVersion::Any, &Deposited { account, amount: n })
            .await?;
        head = stored.version;
    }

    // Two members: the first takes all 4 partitions, then hands 2 to the
    // second when it joins.
    let (first, first_run) = member(target, &group).await?;
    let (second, second_run) = member(target, &group).await?;

    // Done when every partition's checkpoint, committed with the
    // projection's writes, is at the head.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        let groups = store.groups().await?;
        if let Some(g) = groups.iter().find(|g| g.name == group)
            && g.members.len() == 2
            && g.members.iter().all(|m| m.partitions.len() == 2)
            && g.parts
                .iter()
                .all(|p| p.position.is_some_and(|v| v >= head))
        {
            break g.clone();
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the projection did not reach version {head} within 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for m in &report.members {
        println!("member {} owns partitions {:?}", m.id, m.partitions);
    }
    // Closing a member's store ends its projection and gives its
    // partitions back at once.
    first.close().await?;
    second.close().await?;
    first_run.await??;
    second_run.await??;

    let balances = table(target, Some(&prefix)).await?;
    for (account, amount, deposits) in &balances {
        println!(
            "{account}: {amount} from {deposits} deposits (partition {})",
            synckit::Group::new(&group, 4).partition_of(account)
        );
        if expected.get(account) != Some(&(*amount, *deposits)) {
            return Err(format!("{account}: expected {:?}", expected.get(account)).into());
        }
    }
    if balances.len() != expected.len() {
        return Err("an account is missing from the read model".into());
    }
    println!("every deposit applied exactly once");
    store.close().await?;
    Ok(())
}
