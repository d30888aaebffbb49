//! Real-time subscriptions on PostgreSQL: LISTEN/NOTIFY as a wake-up, the
//! table as the truth. Includes the chaos tests: the listener's backend
//! killed repeatedly, and connections cut by a TCP proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use synckit::postgres::{Config, PgStore};
use synckit::{
    Error, Event, EventStore, ExpectedVersion, Filter, HandlerSubscriptions, Message, NewEvent,
    Recorded, Start, SubscriptionSource,
};
use synckit_workspace::{database_url, raw_client};

use crate::behaviour::{Account, next_within};

/// A store whose own poll tick is far away, so that timely delivery proves
/// the notification path.
async fn listening_store(url: &str) -> PgStore {
    let mut config = Config::new(url);
    config.max_open_conns = 6;
    config.min_idle_conns = 0;
    config.notification_timeout = Duration::from_secs(120);
    config.reconnect_interval = Duration::from_millis(50);
    config.max_reconnect_attempts = 1000;
    config.connect_timeout = Duration::from_secs(3);
    PgStore::connect(config).await.expect("connect")
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn deposit(id: &str, amount: u64) -> Account {
    Account::Deposited {
        id: id.into(),
        amount,
    }
}

/// Listener connections of this test's database, by their application name.
pub(crate) async fn listener_connections(url: &str) -> i64 {
    raw_client(url)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'synckit-listener'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_listens_from_its_first_subscription_until_it_closes() {
    let url = database_url().await;
    let store = listening_store(&url).await;
    store
        .append_event(ExpectedVersion::Any, &deposit("w", 1))
        .await
        .unwrap();
    assert!(!store.is_listener_connected());
    assert_eq!(
        listener_connections(&url).await,
        0,
        "a writer holds no LISTEN"
    );

    let mut first = Account::subscribe_from(&store, Start::Beginning)
        .await
        .unwrap();
    let _second = store
        .subscribe(Filter::stream("w"), Start::Now)
        .await
        .unwrap();
    wait_until("the listener connects", || store.is_listener_connected()).await;
    assert_eq!(
        listener_connections(&url).await,
        1,
        "one listener per store"
    );
    // Another process's commit wakes the subscription through it.
    let other = listening_store(&url).await;
    other
        .append_event(ExpectedVersion::Any, &deposit("w", 2))
        .await
        .unwrap();
    for amount in [1, 2] {
        let e = next_within(&mut first).await.unwrap();
        assert_eq!(e.data, deposit("w", amount));
    }

    store.close().await.unwrap();
    assert!(!store.is_listener_connected());
    let deadline = Instant::now() + Duration::from_secs(20);
    while listener_connections(&url).await > 0 {
        assert!(Instant::now() < deadline, "the listener outlived close");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_append_wakes_a_subscriber() {
    let url = database_url().await;
    let reader = listening_store(&url).await;
    let writer = listening_store(&url).await;
    // The first subscription starts the listener.
    let mut typed = Account::subscribe(&reader).await.unwrap();
    wait_until("the listener connects", || reader.is_listener_connected()).await;
    writer
        .append_event(ExpectedVersion::Any, &deposit("a", 1))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), typed.next())
        .await
        .expect("delivered by notification, long before the 120 s poll")
        .unwrap()
        .unwrap();
    assert_eq!(got.data, deposit("a", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_subscriptions_are_independent_and_listed() {
    let url = database_url().await;
    let store = listening_store(&url).await;
    let (tx1, mut rx1) = tokio::sync::mpsc::unbounded_channel();
    let (tx2, mut rx2) = tokio::sync::mpsc::unbounded_channel();
    let (tx3, mut rx3) = tokio::sync::mpsc::unbounded_channel();
    let first = store
        .subscribe_with(Filter::stream("s"), move |p| {
            let tx = tx1.clone();
            async move { tx.send(p).map_err(|e| e.to_string()) }
        })
        .await
        .unwrap();
    let second = store
        .subscribe_with(Filter::stream("s"), move |p| {
            let tx = tx2.clone();
            async move { tx.send(p).map_err(|e| e.to_string()) }
        })
        .await
        .unwrap();
    let by_type = store
        .subscribe_with(Filter::types(["Account.Deposited"]), move |p| {
            let tx = tx3.clone();
            async move { tx.send(p).map_err(|e| e.to_string()) }
        })
        .await
        .unwrap();
    assert_eq!(store.active_subscriptions().len(), 3);
    let other = listening_store(&url).await;
    other
        .append_event(ExpectedVersion::Any, &deposit("s", 1))
        .await
        .unwrap();
    for rx in [&mut rx1, &mut rx2, &mut rx3] {
        let p = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.aggregate_id.as_str(), p.stream_name.as_str()),
            ("s", "stream_s")
        );
    }
    drop(second);
    wait_until("the dropped subscription is gone", || {
        store.active_subscriptions().len() == 2
    })
    .await;
    other
        .append_event(ExpectedVersion::Any, &deposit("s", 2))
        .await
        .unwrap();
    let p = tokio::time::timeout(Duration::from_secs(10), rx1.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.version, 2);
    let p = tokio::time::timeout(Duration::from_secs(10), rx3.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.version, 2);
    assert!(
        rx2.recv().await.is_none(),
        "the dropped handler's sender is gone"
    );
    assert!(!first.is_finished() && !by_type.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_sql_and_long_aggregate_ids_reach_live_subscribers() {
    let url = database_url().await;
    let store = listening_store(&url).await;
    let long_id = "L".repeat(300);
    let mut long = store
        .subscribe(Filter::stream(long_id.clone()), Start::Now)
        .await
        .unwrap();
    let client = raw_client(&url).await;
    client
        .execute(
            "INSERT INTO events (id, aggregate_id, event_type, data) VALUES ('sql-1', $1, 'Deposited', '{}')",
            &[&long_id],
        )
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), long.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.id, "sql-1");
    assert_eq!(got.aggregate_id, long_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_commit_reaches_a_live_subscriber_in_order() {
    let url = database_url().await;
    let store = listening_store(&url).await;
    let mut live = store.subscribe(Filter::all(), Start::Now).await.unwrap();
    let held = raw_client(&url).await;
    held.batch_execute("BEGIN").await.unwrap();
    let n: i64 = held
        .query_one(
            "INSERT INTO events (id, aggregate_id, event_type, data) VALUES ('late', 'l', 'T', '{}') RETURNING version",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let batch: Vec<_> = (0..3)
        .map(|i| NewEvent::new("fast", "T", json!({ "i": i })))
        .collect();
    store.append(ExpectedVersion::Any, batch).await.unwrap();
    // Nothing may arrive while version n is pending.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), live.next())
            .await
            .is_err(),
        "an event past the pending version was delivered"
    );
    held.batch_execute("COMMIT").await.unwrap();
    for expected in n..n + 4 {
        let e = next_within(&mut live).await.unwrap();
        assert_eq!(e.version, expected as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_subscription_resumes_in_a_new_store_instance() {
    let url = database_url().await;
    let first = listening_store(&url).await;
    let events: Vec<_> = (0..10).map(|i| deposit("d", i)).collect();
    first
        .append_events(ExpectedVersion::Any, &events)
        .await
        .unwrap();
    let sub = first
        .subscribe(Filter::all(), Start::checkpoint("billing"))
        .await
        .unwrap()
        .with_handler_retry(synckit::HandlerRetry::default().then_stop());
    let result = sub
        .typed::<Account>()
        .run(|e: Recorded<Account>| async move {
            if e.version == 4 {
                Err("stop here")
            } else {
                Ok(())
            }
        })
        .await;
    // The handler failed on the 4th event every time: three acknowledged.
    assert!(
        matches!(result, Err(Error::Handler { version: 4, .. })),
        "{result:?}"
    );
    first.close().await.unwrap();

    let second = listening_store(&url).await;
    let mut again = second
        .subscribe(Filter::all(), Start::checkpoint("billing"))
        .await
        .unwrap();
    for expected in 4..=10 {
        assert_eq!(next_within(&mut again).await.unwrap().version, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handler_stops_its_subscription_alone() {
    let url = database_url().await;
    let store = listening_store(&url).await;
    let failing = store
        .subscribe_with(Filter::all(), |p| async move {
            if p.version == 2 {
                Err("cannot handle 2")
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _healthy = store
        .subscribe_with(Filter::all(), move |p| {
            let tx = tx.clone();
            async move { tx.send(p.version).map_err(|e| e.to_string()) }
        })
        .await
        .unwrap();
    for i in 0..3 {
        store
            .append_event(ExpectedVersion::Any, &deposit("h", i))
            .await
            .unwrap();
    }
    let err = tokio::time::timeout(Duration::from_secs(20), failing.wait())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(&err, Error::Handler { version: 2, .. }), "{err}");
    assert!(err.to_string().contains("cannot handle 2"), "{err}");
    for expected in 1..=3 {
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap(),
            Some(expected)
        );
    }
}

/// Appends `total` events from `writers` tasks (batches of 10, explicit
/// ids, retried on transient errors: an append whose outcome was lost is
/// safe to repeat).
async fn write_events(store: PgStore, writers: usize, total: usize) {
    let per_writer = total / writers;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for chunk in 0..per_writer / 10 {
                    let batch: Vec<_> = (0..10)
                        .map(|k| {
                            let n = chunk * 10 + k;
                            NewEvent::from_event(&deposit(&format!("w{w}"), n as u64))
                                .unwrap()
                                .with_id(format!("w{w}-{n}"))
                        })
                        .collect();
                    let mut attempts = 0;
                    loop {
                        match store.append(ExpectedVersion::Any, batch.clone()).await {
                            Ok(_) => break,
                            Err(e) if e.is_transient() && attempts < 100 => {
                                attempts += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(e) => panic!("append failed: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Collects `expected` events from a subscription, checking order and
/// uniqueness; transient errors are counted, not fatal.
async fn collect(
    mut sub: synckit::Subscription,
    expected: usize,
    deadline: Duration,
) -> (Vec<u64>, usize) {
    let mut versions = Vec::with_capacity(expected);
    let mut transient = 0;
    let until = Instant::now() + deadline;
    while versions.len() < expected {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(Ok(e))) => versions.push(e.version),
            Ok(Some(Err(e))) if e.is_transient() => transient += 1,
            Ok(Some(Err(e))) => panic!("subscription failed: {e}"),
            Ok(None) => panic!("subscription ended"),
            Err(_) => panic!(
                "only {} of {expected} events within {deadline:?}",
                versions.len()
            ),
        }
    }
    (versions, transient)
}

fn assert_exactly_once_in_order(versions: &[u64], expected: usize, what: &str) {
    assert_eq!(versions.len(), expected, "{what}");
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "{what}: out of order or repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_in_order_while_the_listener_is_killed() {
    const TOTAL: usize = 20_000;
    let url = database_url().await;
    let store = listening_store(&url).await;
    store.listen().await;
    wait_until("the listener connects", || store.is_listener_connected()).await;
    let all = store.subscribe(Filter::all(), Start::Now).await.unwrap();
    let one_stream = store
        .subscribe(Filter::stream("w1"), Start::Now)
        .await
        .unwrap();
    let typed = store
        .subscribe(Account::filter(), Start::Now)
        .await
        .unwrap();
    let readers = (
        tokio::spawn(collect(all, TOTAL, Duration::from_secs(240))),
        tokio::spawn(collect(one_stream, TOTAL / 4, Duration::from_secs(240))),
        tokio::spawn(collect(typed, TOTAL, Duration::from_secs(240))),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let admin = raw_client(&url).await;
            let mut kills = 0u32;
            while !stop.load(Ordering::Acquire) {
                let rows = admin
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = 'synckit-listener' AND datname = current_database()",
                        &[],
                    )
                    .await
                    .unwrap();
                kills += rows.len() as u32;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            kills
        })
    };
    // Writers in another store: their own in-process wake-ups must not be
    // what delivers the events.
    let writer = listening_store(&url).await;
    write_events(writer, 4, TOTAL).await;
    let (all, stream, typed) = readers;
    let (all, _) = all.await.unwrap();
    let (stream, _) = stream.await.unwrap();
    let (typed, _) = typed.await.unwrap();
    stop.store(true, Ordering::Release);
    let kills = killer.await.unwrap();
    assert!(kills >= 3, "the listener was killed {kills} times");
    assert_exactly_once_in_order(&all, TOTAL, "all");
    assert_exactly_once_in_order(&stream, TOTAL / 4, "stream w1");
    assert_exactly_once_in_order(&typed, TOTAL, "type");
    wait_until("the listener reconnects", || store.is_listener_connected()).await;
}

/// A TCP proxy the test controls: `cut` closes every proxied connection
/// and refuses new ones until `restore`.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    live: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let live: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = {
            let down = down.clone();
            let live = live.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    // Checked and registered under the lock `cut` takes, so no
                    // connection slips through a cut.
                    let mut registered = live.lock().unwrap();
                    if down.load(Ordering::Acquire) {
                        drop(inbound);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    registered.push(task.abort_handle());
                }
            })
        };
        Proxy {
            port,
            down,
            live,
            accept,
        }
    }

    fn cut(&self) {
        let mut live = self.live.lock().unwrap();
        self.down.store(true, Ordering::Release);
        for task in live.drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// The test database's connection string through the proxy.
fn via_proxy(url: &str, proxy: &Proxy) -> String {
    let rest: Vec<&str> = url
        .split_whitespace()
        .filter(|kv| !kv.starts_with("host=") && !kv.starts_with("port="))
        .collect();
    format!(
        "host=127.0.0.1 port={} sslmode=disable {}",
        proxy.port,
        rest.join(" ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_in_order_across_connection_cuts() {
    const TOTAL: usize = 20_000;
    let url = database_url().await;
    let server = synckit_workspace::server();
    let proxy = Proxy::start(server.port()).await;
    assert_eq!(
        server.host(),
        "127.0.0.1",
        "the proxy forwards to 127.0.0.1"
    );
    let store = listening_store(&via_proxy(&url, &proxy)).await;
    store.listen().await;
    wait_until("the listener connects", || store.is_listener_connected()).await;
    let all = store.subscribe(Filter::all(), Start::Now).await.unwrap();
    let mut messages = Box::pin(
        store
            .subscribe(Filter::stream("w2"), Start::Beginning)
            .await
            .unwrap()
            .messages(),
    );
    assert_eq!(next_within(&mut messages).await.unwrap(), Message::CaughtUp);
    let reader = tokio::spawn(collect(all, TOTAL, Duration::from_secs(240)));
    let writer = tokio::spawn(write_events(listening_store(&url).await, 4, TOTAL));

    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut();
        wait_until("the listener notices the cut", || {
            !store.is_listener_connected()
        })
        .await;
        // Refuse new connections for a while, then accept again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !store.is_listener_connected(),
            "connected while the proxy refuses"
        );
        proxy.restore();
        wait_until("the listener reconnects", || store.is_listener_connected()).await;
    }
    writer.await.unwrap();
    let (all, _transient_errors) = reader.await.unwrap();
    assert_exactly_once_in_order(&all, TOTAL, "all, across cuts");
    let mut stream = Vec::new();
    while stream.len() < TOTAL / 4 {
        match next_within(&mut messages).await {
            Ok(Message::Event(e)) => stream.push(e.version),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) if e.is_transient() => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_exactly_once_in_order(&stream, TOTAL / 4, "stream, across cuts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_end_with_an_error_when_the_listener_gives_up() {
    let url = database_url().await;
    let server = synckit_workspace::server();
    let proxy = Proxy::start(server.port()).await;
    let mut config = Config::new(via_proxy(&url, &proxy));
    config.min_idle_conns = 0;
    config.max_open_conns = 2;
    config.reconnect_interval = Duration::from_millis(20);
    config.max_reconnect_attempts = 2;
    config.connect_timeout = Duration::from_secs(2);
    let store = PgStore::connect(config).await.unwrap();
    store.listen().await;
    wait_until("the listener connects", || store.is_listener_connected()).await;
    let mut sub = store.subscribe(Filter::all(), Start::Now).await.unwrap();
    proxy.cut();
    let err = loop {
        match next_within(&mut sub).await {
            Err(Error::ListenerFailed { attempts, .. }) => break attempts,
            Err(e) if e.is_transient() => continue,
            other => panic!("expected the listener's failure, got {other:?}"),
        }
    };
    assert!(err > 2, "{err}");
    assert!(sub.next().await.is_none(), "the subscription ended");
    assert!(!store.is_listener_connected());
    assert!(matches!(store.health(), Err(Error::ListenerFailed { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_blocks_nobody_and_catches_up() {
    let url = database_url().await;
    let store = listening_store(&url).await;
    // Never polled while the events arrive.
    let slow = store.subscribe(Filter::all(), Start::Now).await.unwrap();
    let mut fast = store.subscribe(Filter::all(), Start::Now).await.unwrap();
    let batch: Vec<_> = (0..3000)
        .map(|i| NewEvent::new("busy", "T", json!({ "i": i })))
        .collect();
    store.append(ExpectedVersion::Any, batch).await.unwrap();
    for expected in 1..=3000u64 {
        assert_eq!(next_within(&mut fast).await.unwrap().version, expected);
    }
    let (versions, _) = collect(slow, 3000, Duration::from_secs(60)).await;
    assert_exactly_once_in_order(&versions, 3000, "slow subscriber");
}

/// A subscription to one stream (or one type) whose read the fence cut
/// short, because a lower version on another stream was still pending, is
/// woken by that version's commit: its own stream gets no new event, and
/// the poll tick is two minutes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_subscription_held_back_by_the_fence_wakes_when_the_blocker_commits() {
    let url = database_url().await;
    let store = listening_store(&url).await;
    let mut by_stream = store
        .subscribe(Filter::stream("mine"), Start::Now)
        .await
        .unwrap();
    let mut by_type = store
        .subscribe(Filter::types(["Mine"]), Start::Now)
        .await
        .unwrap();
    wait_until("the listener connects", || store.is_listener_connected()).await;
    let held = raw_client(&url).await;
    held.batch_execute("BEGIN").await.unwrap();
    held.batch_execute(
        "INSERT INTO events (id, aggregate_id, event_type, data) VALUES ('blocker', 'other', 'Other', '{}')",
    )
    .await
    .unwrap();
    let mine = store
        .append(
            ExpectedVersion::Any,
            vec![NewEvent::new("mine", "Mine", json!({}))],
        )
        .await
        .unwrap();
    // Both are woken by their event, and read nothing: the fence is below.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), by_stream.next())
            .await
            .is_err(),
        "delivered past a pending version"
    );
    held.batch_execute("COMMIT").await.unwrap();
    for subscription in [&mut by_stream, &mut by_type] {
        let event = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("woken by the blocker's commit, not the poll tick")
            .unwrap()
            .unwrap();
        assert_eq!(event.version, mine[0].version);
    }
}
