//! Exactly-once projections: the handler's writes and the checkpoint
//! commit in one transaction. A handler failure rolls back its writes; a
//! projection killed (SIGKILL) again and again, at whatever point it is,
//! applies each event exactly once in the end; so do group members (the
//! 20,000-event runs of `groups.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::sql_types::Text;
use serde_json::json;
use synckit::{
    AnyStore, Cursor, Error, EventStore, ExpectedVersion, Filter, HandlerRetry, NewEvent, Recorded,
    Start, Subscription, SubscriptionSource,
};

use crate::groups::{Process, until, within};

const CREATE: &str =
    "CREATE TABLE IF NOT EXISTS read_model (id TEXT PRIMARY KEY, n BIGINT NOT NULL)";
const COUNT_SQL: &str = "INSERT INTO read_model (id, n) VALUES ($1, 1) \
     ON CONFLICT (id) DO UPDATE SET n = read_model.n + 1";

/// Creates the read model table: one row per event id, `n` the times it
/// was applied.
pub(crate) async fn create_read_model(target: &str) {
    if !target.ends_with(".db") {
        synckit_workspace::raw_client(target)
            .await
            .execute(CREATE, &[])
            .await
            .unwrap();
    } else {
        // The store's own tables first, then the read model beside them.
        synckit::open(target).await.unwrap().close().await.unwrap();
        rusqlite::Connection::open(target)
            .unwrap()
            .execute(CREATE, [])
            .unwrap();
    }
}

/// The read model's rows, and the most times one event was applied.
pub(crate) async fn read_model(target: &str) -> (u64, u64) {
    let sql = "SELECT count(*), coalesce(max(n), 0) FROM read_model";
    if !target.ends_with(".db") {
        let row = synckit_workspace::raw_client(target)
            .await
            .query_one(sql, &[])
            .await
            .unwrap();
        (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64)
    } else {
        let conn = rusqlite::Connection::open(target).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.query_row(sql, [], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
        })
        .unwrap()
    }
}

/// The projection a member process runs: counts each event it applies in
/// `read_model`, printing `applying V` inside the transaction.
pub(crate) async fn project_into_read_model(
    store: AnyStore,
    subscription: Subscription,
    say: fn(String),
) {
    let outcome = match store {
        AnyStore::Postgres(store) => {
            use diesel_async::RunQueryDsl;
            store
                .project(subscription, |conn, events: &[Recorded]| {
                    Box::pin(async move {
                        for event in events {
                            say(format!("applying {}", event.version));
                            diesel::sql_query(COUNT_SQL)
                                .bind::<Text, _>(&event.id)
                                .execute(conn)
                                .await?;
                        }
                        Ok::<_, diesel::result::Error>(())
                    })
                })
                .await
        }
        AnyStore::Sqlite(store) => {
            use diesel::RunQueryDsl;
            store
                .project(subscription, move |conn, events: &[Recorded]| {
                    for event in events {
                        say(format!("applying {}", event.version));
                        diesel::sql_query(COUNT_SQL)
                            .bind::<Text, _>(&event.id)
                            .execute(conn)?;
                    }
                    Ok::<_, diesel::result::Error>(())
                })
                .await
        }
        other => panic!("no projection on {other:?}"),
    };
    outcome.unwrap();
}

/// Appends `count` events of 10 aggregates, 10 per append.
async fn append<S: EventStore>(store: &S, count: usize) {
    for chunk in 0..count / 10 {
        let events = (0..10)
            .map(|k| NewEvent::new(format!("a-{k}"), "Tick", json!({ "chunk": chunk })))
            .collect();
        store.append(ExpectedVersion::Any, events).await.unwrap();
    }
}

/// In one process: batches of 8 commit with their checkpoint; a handler
/// that fails once after writing has its writes rolled back and the retry
/// applies them once; one that keeps failing ends the projection with
/// `Error::Handler`, its batch written nowhere and the checkpoint before
/// it.
async fn a_failing_handler_rolls_back_its_writes(target: &str) {
    create_read_model(target).await;
    let store = synckit::open(target).await.unwrap();
    append(&store, 50).await;
    let failed_once = Arc::new(Mutex::new(false));
    let subscription = store
        .subscribe(Filter::all(), Start::checkpoint("counter"))
        .await
        .unwrap()
        .with_events_per_transaction(8)
        .with_handler_retry(HandlerRetry::default().with_backoff(Duration::ZERO, Duration::ZERO));
    let progress = subscription.progress();
    // Fails once on event 20, after its write; always on event 60.
    let fails = move |events: &[Recorded]| {
        let mut once = failed_once.lock().unwrap();
        if events.iter().any(|e| e.version == 20) && !*once {
            *once = true;
            return true;
        }
        events.iter().any(|e| e.version == 60)
    };
    let run = match store.clone() {
        AnyStore::Postgres(store) => tokio::spawn(async move {
            use diesel_async::RunQueryDsl;
            store
                .project(subscription, move |conn, events: &[Recorded]| {
                    let refuse = fails(events);
                    Box::pin(async move {
                        for event in events {
                            diesel::sql_query(COUNT_SQL)
                                .bind::<Text, _>(&event.id)
                                .execute(conn)
                                .await?;
                        }
                        if refuse {
                            return Err("refused".into());
                        }
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    })
                })
                .await
        }),
        AnyStore::Sqlite(store) => tokio::spawn(async move {
            use diesel::RunQueryDsl;
            store
                .project(subscription, move |conn, events: &[Recorded]| {
                    for event in events {
                        diesel::sql_query(COUNT_SQL)
                            .bind::<Text, _>(&event.id)
                            .execute(conn)?;
                    }
                    if fails(events) {
                        return Err("refused".into());
                    }
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
                .await
        }),
        other => panic!("no projection on {other:?}"),
    };
    within("the projection", 20, progress.wait_for(50))
        .await
        .unwrap();
    assert_eq!(read_model(target).await, (50, 1));
    assert_eq!(
        store.load_checkpoint("counter").await.unwrap(),
        Some(Cursor::new(50))
    );

    append(&store, 20).await;
    let ended = within("the end", 20, run).await.unwrap();
    match ended {
        Err(Error::Handler {
            subscription,
            version,
            ..
        }) => {
            assert_eq!(subscription, "counter");
            assert!((51..=60).contains(&version), "{version}");
        }
        other => panic!("expected the handler's error: {other:?}"),
    }
    let checkpoint = store
        .load_checkpoint("counter")
        .await
        .unwrap()
        .unwrap()
        .version();
    assert!((50..60).contains(&checkpoint), "{checkpoint}");
    assert_eq!(
        read_model(target).await,
        (checkpoint, 1),
        "writes beyond the checkpoint"
    );
}

/// A projection process (a plain durable subscription, 5 events per
/// transaction) is killed with SIGKILL six times, at whatever point it has
/// reached, while a writer appends 300 new events in each of its lives; a
/// last one appends the rest of 2,000 and finishes. Every event is in the
/// read model exactly once.
async fn a_projection_killed_again_and_again_applies_each_event_once(target: &str) {
    const TOTAL: u64 = 2_000;
    const PER_ROUND: usize = 300;
    create_read_model(target).await;
    let store = synckit::open(target).await.unwrap();
    let env = [
        ("SYNCKIT_GROUP_MODE", "project"),
        ("SYNCKIT_GROUP_PER_TRANSACTION", "5"),
    ];
    let mut kills = 0;
    for round in 0..6u64 {
        // New events in every round, so that each life has work to be
        // killed in.
        let writer = tokio::spawn({
            let store = store.clone();
            async move { append(&store, PER_ROUND).await }
        });
        let mut member = Process::start_with(target, 0, 1_000, 0, &env);
        let seen = member.handled();
        until("the projection applying", 60, || async {
            member.handled() > seen
        })
        .await;
        // Somewhere in its next few transactions.
        tokio::time::sleep(Duration::from_millis(7 * round * round)).await;
        member.signal("-KILL");
        let _ = member.child.wait().await;
        kills += 1;
        within("the writer", 60, writer).await.unwrap();
    }
    append(&store, TOTAL as usize - 6 * PER_ROUND).await;
    let mut last = Process::start_with(target, 0, 1_000, 0, &env);
    until("every event in the read model", 60, || async {
        read_model(target).await.0 >= TOTAL
    })
    .await;
    assert_eq!(read_model(target).await, (TOTAL, 1), "after {kills} kills");
    let _ = last.child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_failing_handler_rolls_back_its_writes() {
    let url = synckit_workspace::database_url().await;
    a_failing_handler_rolls_back_its_writes(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_failing_handler_rolls_back_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db").display().to_string();
    a_failing_handler_rolls_back_its_writes(&path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_projection_killed_again_and_again_applies_each_event_once() {
    let url = synckit_workspace::database_url().await;
    a_projection_killed_again_and_again_applies_each_event_once(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_projection_killed_again_and_again_applies_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db").display().to_string();
    a_projection_killed_again_and_again_applies_each_event_once(&path).await;
}
