//! Group commit and notifications after the commit, against a real server.
//!
//! To put appends into one group for certain, a first append is held in
//! flight: it waits for a stream lock that another connection holds in an
//! open transaction, and the appends queued meanwhile form the next group
//! when that connection commits. Whether rows share a transaction is read
//! off their `xmin`.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::json;
use synckit::notification::GLOBAL_CHANNEL;
use synckit::postgres::{Config, PgStore};
use synckit::{
    Error, EventStore, ExpectedVersion, Filter, NewEvent, NotificationPayload, Recorded, Start,
    SubscriptionSource,
};
use synckit_workspace::{database_url, raw_client, raw_listener};

type Append<'a> = Pin<Box<dyn Future<Output = synckit::Result<Vec<Recorded>>> + Send + 'a>>;

async fn store() -> (PgStore, String) {
    let url = database_url().await;
    let mut config = Config::new(url.clone());
    config.max_open_conns = 6;
    config.min_idle_conns = 0;
    config.notification_timeout = Duration::from_millis(300);
    (PgStore::connect(config).await.expect("connect"), url)
}

fn event(id: &str, aggregate: &str) -> NewEvent {
    NewEvent::new(aggregate, "Deposited", json!({"amount": 1})).with_id(id)
}

/// Polls each append once: enough to put it in the writer queue.
async fn queue(appends: &mut [Append<'_>]) {
    for append in appends.iter_mut() {
        let polled = futures::poll!(append.as_mut());
        assert!(
            polled.is_pending(),
            "an append finished while one is held in flight"
        );
    }
}

/// A commit held in flight: an append to `blocked` without an expectation,
/// waiting for the stream lock that `holder`'s open transaction took.
struct Held<'a> {
    holder: tokio_postgres::Client,
    append: Append<'a>,
}

async fn hold_a_commit<'a>(store: &'a PgStore, url: &str) -> Held<'a> {
    let holder = raw_client(url).await;
    holder
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(1937337195, hashtext('blocked'))")
        .await
        .unwrap();
    let mut append: Append<'a> =
        Box::pin(store.append(ExpectedVersion::Any, vec![event("blocker", "blocked")]));
    assert!(futures::poll!(append.as_mut()).is_pending());
    // Wait until its statement waits for the lock (the group is running).
    let watcher = raw_client(url).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held append never waited for the lock"
        );
        // Drive it: its group task runs on its own, this only keeps the
        // future's waker fresh.
        let _ = futures::poll!(append.as_mut());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Held { holder, append }
}

impl Held<'_> {
    /// Lets the held commit go, and returns its outcome.
    async fn release(self) -> synckit::Result<Vec<Recorded>> {
        self.holder.batch_execute("COMMIT").await.unwrap();
        self.append.await
    }
}

/// How many transactions wrote the events with these ids.
async fn transactions(url: &str, ids: &[&str]) -> i64 {
    let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    raw_client(url)
        .await
        .query_one(
            "SELECT count(DISTINCT xmin::text) FROM events WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0)
}

async fn stored_ids(url: &str) -> Vec<String> {
    raw_client(url)
        .await
        .query("SELECT id FROM events ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_expectations_on_one_stream_in_one_group_have_one_winner() {
    let (store, url) = store().await;
    let held = hold_a_commit(&store, &url).await;
    let ids: Vec<String> = (0..12).map(|i| format!("race-{i}")).collect();
    let others: Vec<String> = (0..4).map(|i| format!("other-{i}")).collect();
    let mut appends: Vec<Append<'_>> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        appends.push(Box::pin(
            store.append(ExpectedVersion::NoStream, vec![event(id, "contended")]),
        ));
        if let Some(other) = others.get(i) {
            appends.push(Box::pin(store.append(
                ExpectedVersion::NoStream,
                vec![event(other, &format!("own-{i}"))],
            )));
        }
    }
    queue(&mut appends).await;
    held.release().await.unwrap();
    let outcomes = futures::future::join_all(appends).await;
    let mut wins = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(recorded) => wins.push(recorded[0].id.clone()),
            Err(Error::Conflict { aggregate_id, .. }) => assert_eq!(aggregate_id, "contended"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // The first queued wins (arrival order); the other streams all win.
    let mut expected = vec![ids[0].clone()];
    expected.extend(others.iter().cloned());
    wins.sort();
    expected.sort();
    assert_eq!(wins, expected);
    let won: Vec<&str> = wins.iter().map(String::as_str).collect();
    assert_eq!(
        transactions(&url, &won).await,
        1,
        "one group, one transaction"
    );
    assert_eq!(store.stream_version("contended").await.unwrap(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_one_stream_in_one_group_apply_in_arrival_order() {
    let (store, url) = store().await;
    let held = hold_a_commit(&store, &url).await;
    // Each expects what the one before it leaves: a serial execution in
    // arrival order succeeds throughout.
    let mut appends: Vec<Append<'_>> = vec![
        Box::pin(store.append(ExpectedVersion::NoStream, vec![event("s-1", "s")])),
        Box::pin(store.append(
            ExpectedVersion::Exact(1),
            vec![event("s-2", "s"), event("s-3", "s")],
        )),
        Box::pin(store.append(ExpectedVersion::Any, vec![event("s-4", "s")])),
        Box::pin(store.append(ExpectedVersion::Exact(4), vec![event("s-5", "s")])),
        Box::pin(store.append(
            ExpectedVersion::Any,
            vec![event("t-1", "t"), event("s-6", "s"), event("t-2", "t")],
        )),
    ];
    queue(&mut appends).await;
    held.release().await.unwrap();
    for outcome in futures::future::join_all(appends).await {
        outcome.unwrap();
    }
    let s = store.read_aggregate("s", 0, 100).await.unwrap();
    let ids: Vec<(&str, u64)> = s
        .iter()
        .map(|r| (r.id.as_str(), r.stream_version))
        .collect();
    assert_eq!(
        ids,
        [
            ("s-1", 1),
            ("s-2", 2),
            ("s-3", 3),
            ("s-4", 4),
            ("s-5", 5),
            ("s-6", 6)
        ]
    );
    let versions: Vec<u64> = s.iter().map(|r| r.version).collect();
    assert!(
        versions.is_sorted(),
        "a stream's positions follow the global order"
    );
    let t = store.read_aggregate("t", 0, 100).await.unwrap();
    assert_eq!(
        t.iter().map(|r| r.stream_version).collect::<Vec<_>>(),
        [1, 2]
    );
    let all = ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6", "t-1", "t-2"];
    assert_eq!(
        transactions(&url, &all).await,
        1,
        "one group, one transaction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_mixing_conflicts_duplicates_replays_and_successes_fails_no_one_else() {
    let (store, url) = store().await;
    store
        .append(ExpectedVersion::Any, vec![event("stored", "old")])
        .await
        .unwrap();
    let held = hold_a_commit(&store, &url).await;
    let mut appends: Vec<Append<'_>> = vec![
        Box::pin(store.append(ExpectedVersion::NoStream, vec![event("a-1", "a")])),
        // The stream is at 1: a conflict.
        Box::pin(store.append(ExpectedVersion::Exact(5), vec![event("old-2", "old")])),
        // The same event again: an idempotent retry.
        Box::pin(store.append(ExpectedVersion::Any, vec![event("stored", "old")])),
        // A stored id with other content: a duplicate.
        Box::pin(store.append(
            ExpectedVersion::Any,
            vec![NewEvent::new("old", "Other", json!({"amount": 9})).with_id("stored")],
        )),
        // Partly stored: a duplicate, and nothing of it is written.
        Box::pin(store.append(
            ExpectedVersion::Any,
            vec![event("b-1", "b"), event("stored", "old")],
        )),
        Box::pin(store.append(ExpectedVersion::Any, vec![event("c-1", "c")])),
    ];
    queue(&mut appends).await;
    held.release().await.unwrap();
    let mut outcomes = futures::future::join_all(appends).await.into_iter();
    assert_eq!(outcomes.next().unwrap().unwrap()[0].id, "a-1");
    assert!(matches!(
        outcomes.next().unwrap(),
        Err(Error::Conflict { .. })
    ));
    let replay = outcomes.next().unwrap().unwrap();
    assert_eq!((replay[0].id.as_str(), replay[0].version), ("stored", 1));
    assert!(matches!(
        outcomes.next().unwrap(),
        Err(Error::DuplicateEvent { .. })
    ));
    assert!(matches!(
        outcomes.next().unwrap(),
        Err(Error::DuplicateEvent { .. })
    ));
    assert_eq!(outcomes.next().unwrap().unwrap()[0].id, "c-1");
    assert_eq!(stored_ids(&url).await, ["stored", "blocker", "a-1", "c-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_append_commits_whole_or_not_at_all_and_the_others_commit() {
    let (store, url) = store().await;
    let held = hold_a_commit(&store, &url).await;
    let mut appends: Vec<Append<'_>> = vec![
        Box::pin(store.append(ExpectedVersion::Any, vec![event("kept-1", "k")])),
        Box::pin(store.append(
            ExpectedVersion::Any,
            vec![event("left-1", "l"), event("left-2", "l")],
        )),
        Box::pin(store.append(ExpectedVersion::Any, vec![event("kept-2", "m")])),
    ];
    queue(&mut appends).await;
    // Its caller leaves while it waits for its group: it is never written.
    drop(appends.remove(1));
    // The held append's caller leaves while its group runs: it commits.
    let Held { holder, append } = held;
    drop(append);
    holder.batch_execute("COMMIT").await.unwrap();
    for outcome in futures::future::join_all(appends).await {
        outcome.unwrap();
    }
    assert_eq!(stored_ids(&url).await, ["blocker", "kept-1", "kept-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits_and_lose_nothing() {
    let (store, url) = store().await;
    let writers = 16;
    let per = 40;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..per {
                    store
                        .append(
                            ExpectedVersion::Exact(n),
                            vec![event(&format!("w{w}-{n}"), &format!("w{w}"))],
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let client = raw_client(&url).await;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT xmin::text), max(version) FROM events",
            &[],
        )
        .await
        .unwrap();
    let (events, commits): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(events, (writers * per) as i64);
    assert!(
        commits < events,
        "{events} events in {commits} transactions: no append shared a commit"
    );
    for w in 0..writers {
        let stream = store
            .read_aggregate(&format!("w{w}"), 0, 1000)
            .await
            .unwrap();
        let positions: Vec<u64> = stream.iter().map(|r| r.stream_version).collect();
        assert_eq!(positions, (1..=per).collect::<Vec<_>>());
    }
    eprintln!("{events} events in {commits} commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_after_the_commit_match_the_triggers_and_find_the_rows() {
    let (store, url) = store().await;
    let (_listener, mut notifications) = raw_listener(
        &url,
        &format!("LISTEN \"stream_n\"; LISTEN {GLOBAL_CHANNEL}"),
    )
    .await;
    // One event from synckit, one from plain SQL (the trigger), one batch.
    let mine = store
        .append(ExpectedVersion::NoStream, vec![event("n-1", "n")])
        .await
        .unwrap();
    raw_client(&url)
        .await
        .batch_execute(
            "INSERT INTO events (id, aggregate_id, event_type, data) \
             VALUES ('n-2', 'n', 'Deposited', '{\"amount\": 1}')",
        )
        .await
        .unwrap();
    let batch = store
        .append(
            ExpectedVersion::Exact(2),
            vec![event("n-3", "n"), event("n-4", "n")],
        )
        .await
        .unwrap();
    let checker = raw_client(&url).await;
    let mut payloads = Vec::new();
    while payloads.len() < 8 {
        let (channel, payload) =
            tokio::time::timeout(Duration::from_secs(10), notifications.recv())
                .await
                .expect("a notification within 10 s")
                .unwrap();
        // The row is committed when its notification arrives.
        let parsed = NotificationPayload::from_json(&payload).unwrap();
        let seen: i64 = checker
            .query_one("SELECT count(*) FROM events WHERE id = $1", &[&parsed.id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen, 1, "{payload}");
        payloads.push((channel, payload));
    }
    // Same keys in the same order, whoever sent them.
    let keys = |p: &str| -> Vec<String> {
        let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(p).unwrap();
        value.keys().cloned().collect()
    };
    let trigger = payloads
        .iter()
        .find(|(_, p)| p.contains("\"n-2\""))
        .unwrap()
        .1
        .clone();
    for (_, p) in &payloads {
        assert_eq!(keys(p), keys(&trigger), "{p}");
    }
    let first = payloads
        .iter()
        .find(|(c, p)| c == "stream_n" && p.contains("\"n-1\""))
        .unwrap();
    let parsed = NotificationPayload::from_json(&first.1).unwrap();
    assert_eq!(parsed.version, mine[0].version);
    assert_eq!(parsed.created_at, mine[0].created_at);
    assert_eq!(parsed.stream_name, "stream_n");
    let ids: Vec<String> = payloads
        .iter()
        .filter(|(c, _)| c == GLOBAL_CHANNEL)
        .map(|(_, p)| NotificationPayload::from_json(p).unwrap().id)
        .collect();
    assert_eq!(ids, ["n-1", "n-2", "n-3", "n-4"]);
    assert_eq!(batch.len(), 2);
    // Exactly those: no duplicate follows.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), notifications.recv())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_without_its_notification_still_reaches_subscribers() {
    let (store, url) = store().await;
    let subscriber = store.clone();
    let mut subscription = subscriber
        .subscribe(Filter::stream("quiet"), Start::Beginning)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !store.is_listener_connected() {
        assert!(Instant::now() < deadline, "the listener never connected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A writer commits the way synckit's appends do (quiet), then its
    // connection is killed before it sends the notification statement.
    let writer = raw_client(&url).await;
    let pid: i32 = writer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    writer
        .batch_execute(
            "BEGIN; SELECT set_config('synckit.notify', 'off', true); \
             INSERT INTO events (id, aggregate_id, event_type, data) \
             VALUES ('quiet-1', 'quiet', 'Deposited', '{\"amount\": 1}'); COMMIT",
        )
        .await
        .unwrap();
    let killed: bool = raw_client(&url)
        .await
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    use futures::StreamExt;
    let delivered = match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
        Ok(Some(Ok(e))) => e,
        other => panic!("no event within 10 s: {other:?}"),
    };
    assert_eq!(delivered.id, "quiet-1");
    assert!(
        writer.batch_execute("SELECT 1").await.is_err(),
        "the writer's connection is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_of_several_chunks_notifies_every_event_once_after_its_commit() {
    let url = database_url().await;
    let mut config = Config::new(url.clone());
    config.batch_size = 2;
    config.max_open_conns = 4;
    config.min_idle_conns = 0;
    let store = PgStore::connect(config).await.expect("connect");
    let (_listener, mut notifications) =
        raw_listener(&url, &format!("LISTEN {GLOBAL_CHANNEL}")).await;
    let events: Vec<NewEvent> = (0..5)
        .map(|i| event(&format!("c-{i}"), "chunked"))
        .collect();
    let recorded = store
        .append(ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    assert_eq!(recorded.len(), 5);
    let mut ids = Vec::new();
    while ids.len() < 5 {
        let (_, payload) = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
            .await
            .expect("a notification within 10 s")
            .unwrap();
        ids.push(NotificationPayload::from_json(&payload).unwrap().id);
    }
    assert_eq!(ids, ["c-0", "c-1", "c-2", "c-3", "c-4"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), notifications.recv())
            .await
            .is_err(),
        "no duplicate"
    );
}
