//! Every public future may be dropped at any await point: a web handler
//! whose client went away, a `select!`, a timeout. For each operation and
//! each backend, on both runtime flavours, the harness polls the future k
//! times (k = 1, 2, ... until it completes or goes idle), drops it, and
//! checks that the store answers at once and holds no pooled connection.
//! A dropped future that kept a lock, a connection or a task would fail the
//! next check.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use synckit::postgres::{Config, PgStore};
use synckit::sqlite::SqliteStore;
use synckit::{
    Aggregate, Cursor, Decide, EventStore, ExpectedVersion, Filter, MemoryStore, NewEvent,
    Recorded, Snapshots, Start, StoredSnapshot, SubscriptionSource,
};

/// How long a pending future may wait for its wake-up before it counts as
/// idle (waiting for something that will not come: a subscription at the
/// head, a handler loop).
const PATIENCE: Duration = Duration::from_millis(500);

/// How long the store may take to answer after a drop.
const DEADLINE: Duration = Duration::from_secs(5);

/// A waker that raises a notification the harness awaits between polls.
struct Woken(tokio::sync::Notify);

impl futures::task::ArcWake for Woken {
    fn wake_by_ref(this: &Arc<Self>) {
        this.0.notify_one();
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Completed within the polls.
    Done,
    /// Still pending after the polls.
    Pending,
    /// Pending, and no wake-up came: it waits for an outside event.
    Idle,
}

/// Polls `future` up to `polls` times, each time after its waker fired.
async fn poll_times(future: &mut BoxFuture<'static, ()>, polls: usize) -> Outcome {
    let woken = Arc::new(Woken(tokio::sync::Notify::new()));
    let waker = futures::task::waker(woken.clone());
    for _ in 0..polls {
        let mut cx = Context::from_waker(&waker);
        if let Poll::Ready(()) = Pin::new(&mut *future).poll(&mut cx) {
            return Outcome::Done;
        }
        if tokio::time::timeout(PATIENCE, woken.0.notified())
            .await
            .is_err()
        {
            return Outcome::Idle;
        }
    }
    Outcome::Pending
}

/// What a backend says about the resources it holds.
trait Holdings: SubscriptionSource {
    /// Pooled connections handed out now.
    fn connections_in_use(&self) -> u32 {
        0
    }
}

impl Holdings for MemoryStore {}
impl Holdings for SqliteStore {}
impl Holdings for synckit::client::RemoteStore {}
impl Holdings for PgStore {
    fn connections_in_use(&self) -> u32 {
        self.stats().map_or(0, |s| s.in_use)
    }
}

/// The store answers within the deadline, and gives back every pooled
/// connection.
async fn assert_answers<S: Holdings>(store: &S, what: &str, k: usize) {
    let context = format!("after dropping `{what}` at poll {k}");
    tokio::time::timeout(DEADLINE, store.latest_version())
        .await
        .unwrap_or_else(|_| panic!("{context}: the store does not answer"))
        .unwrap_or_else(|e| panic!("{context}: {e}"));
    let probe = NewEvent::new("probe", "Probed", json!({ "k": k }));
    tokio::time::timeout(DEADLINE, store.append(ExpectedVersion::Any, vec![probe]))
        .await
        .unwrap_or_else(|_| panic!("{context}: an append does not answer"))
        .unwrap_or_else(|e| panic!("{context}: {e}"));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while store.connections_in_use() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{context}: {} pooled connections still in use",
            store.connections_in_use()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Operation<S> = Box<dyn Fn(S) -> BoxFuture<'static, ()>>;

/// Every public operation, as a future to drop at each of its polls.
fn operations<S: Holdings>() -> Vec<(&'static str, Operation<S>)> {
    fn op<S, F, Fut>(name: &'static str, f: F) -> (&'static str, Operation<S>)
    where
        F: Fn(S) -> Fut + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        (name, Box::new(move |store| f(store).boxed()))
    }
    let event = |stream: &str| NewEvent::new(stream, "Counted", json!({ "n": 1 }));
    vec![
        op("append", move |s: S| async move {
            let _ = s.append(ExpectedVersion::Any, vec![event("a")]).await;
        }),
        op("append in several chunks", move |s: S| async move {
            let batch = (0..20).map(|_| event("b")).collect();
            let _ = s.append(ExpectedVersion::Any, batch).await;
        }),
        op("append that conflicts", move |s: S| async move {
            let _ = s
                .append(ExpectedVersion::Exact(999), vec![event("a")])
                .await;
        }),
        op("append repeated (idempotent)", move |s: S| async move {
            let same = event("c").with_id("the-same-id");
            let _ = s.append(ExpectedVersion::Any, vec![same]).await;
        }),
        op("read", |s: S| async move {
            let _ = s.read(&Filter::all(), Cursor::START, 50).await;
        }),
        op("load", |s: S| async move {
            let _ = s.load(Cursor::START).await;
        }),
        op("load_by_aggregate", |s: S| async move {
            let _ = s.load_by_aggregate("a", Cursor::START).await;
        }),
        op("read_stream, first item", |s: S| async move {
            let _ = s.read_stream(Filter::all(), Cursor::START).next().await;
        }),
        op("read_stream_as, every page", |s: S| async move {
            let _: Result<Vec<Recorded<Value>>, _> = s
                .read_stream_as::<Value>(Filter::stream("b"), Cursor::START)
                .try_collect()
                .await;
        }),
        op("latest_version", |s: S| async move {
            let _ = s.latest_version().await;
        }),
        op("stream_version", |s: S| async move {
            let _ = s.stream_version("a").await;
        }),
        op("subscribe, then two events", |s: S| async move {
            let Ok(mut sub) = s.subscribe(Filter::all(), Start::Beginning).await else {
                return;
            };
            let _ = sub.next().await;
            let _ = sub.next().await;
        }),
        op(
            "subscribe by stream, and wait at the head",
            |s: S| async move {
                let Ok(mut sub) = s
                    .subscribe(Filter::stream("b"), Start::After(Cursor::new(3)))
                    .await
                else {
                    return;
                };
                while let Some(Ok(_)) = sub.next().await {}
            },
        ),
        op("durable subscription: next and commit", |s: S| async move {
            let Ok(mut sub) = s
                .subscribe(Filter::all(), Start::Checkpoint("sweep".into()))
                .await
            else {
                return;
            };
            let _ = sub.next().await;
            let _ = sub.commit().await;
        }),
        op("run a handler", |s: S| async move {
            let Ok(sub) = s
                .subscribe(Filter::all(), Start::Checkpoint("runner".into()))
                .await
            else {
                return;
            };
            let _ = sub
                .run(|_event: Recorded| async { Ok::<_, std::convert::Infallible>(()) })
                .await;
        }),
        op("group member: next and commit", |s: S| async move {
            let Ok(mut sub) = s
                .subscribe(Filter::all(), Start::group("sweepers", 2))
                .await
            else {
                return;
            };
            let _ = sub.next().await;
            let _ = sub.commit().await;
        }),
        op("run a group member", |s: S| async move {
            let Ok(sub) = s.subscribe(Filter::all(), Start::group("runners", 3)).await else {
                return;
            };
            let _ = sub
                .run(|_event: Recorded| async { Ok::<_, std::convert::Infallible>(()) })
                .await;
        }),
        op("run a handler that fails: parks", |s: S| async move {
            let Ok(sub) = s
                .subscribe(Filter::all(), Start::Checkpoint("parker".into()))
                .await
            else {
                return;
            };
            let _ = sub
                .with_handler_retry(synckit::HandlerRetry::once())
                .run(|event: Recorded| async move {
                    if event.aggregate_id == "a" {
                        Err("refused")
                    } else {
                        Ok(())
                    }
                })
                .await;
        }),
        op(
            "groups, parked, retry_parked and skip_parked",
            |s: S| async move {
                let _ = s.groups().await;
                let _ = s.parked(None).await;
                let _ = s.retry_parked("parker", 1).await;
                let _ = s.skip_parked("parker", 4).await;
            },
        ),
        op("get", |s: S| async move {
            let _ = s.get("the-same-id").await;
        }),
        op("read_aggregate", |s: S| async move {
            let _ = s.read_aggregate("b", 2, 5).await;
        }),
        op(
            "decide with a command id, taking a snapshot",
            |s: S| async move {
                let _ = s
                    .decide("tally", Decide::new().command_id(uuid()), |_: &Tally| {
                        Ok::<_, String>(vec![Tallied {
                            tally: "tally".into(),
                            n: 1,
                        }])
                    })
                    .await;
            },
        ),
        op("load_aggregate from a snapshot", |s: S| async move {
            let _ = s.load_aggregate::<Tally>("tally").await;
        }),
        op("load, save and delete snapshots", |s: S| async move {
            let snapshot = StoredSnapshot::new("other", "x", 1, 1, json!({"sum": 1}));
            let _ = s.save_snapshot(snapshot).await;
            let _ = s.load_snapshot("other", "x").await;
            let _ = s.delete_snapshots("other").await;
        }),
        op("load_checkpoint and save_checkpoint", |s: S| async move {
            let position = s.load_checkpoint("manual").await.ok().flatten();
            let next = Cursor::new(position.map_or(0, |c| c.version()) + 1);
            let _ = s.save_checkpoint("manual", next).await;
        }),
    ]
}

#[derive(serde::Serialize, serde::Deserialize, synckit::Event)]
#[event(type = "tallied")]
struct Tallied {
    #[event(aggregate_id)]
    tally: String,
    n: u64,
}

/// An aggregate with a snapshot after every event.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Tally {
    sum: u64,
}

impl Aggregate for Tally {
    type Event = Tallied;
    const NAME: &'static str = "tally";
    fn apply(&mut self, event: &Tallied) {
        self.sum += event.n;
    }
    fn snapshots() -> Option<Snapshots<Self>> {
        Some(Snapshots::every(1))
    }
}

fn uuid() -> String {
    NewEvent::new("x", "x", Value::Null).id().to_owned()
}

/// Seeds the store, then drops every operation at every poll.
async fn sweep<S: Holdings>(store: S) {
    let seed: Vec<_> = (0..30)
        .map(|n| NewEvent::new(["a", "b", "c"][n % 3], "Counted", json!({ "n": n })))
        .collect();
    store.append(ExpectedVersion::Any, seed).await.unwrap();
    for (what, operation) in operations::<S>() {
        for k in 1.. {
            let mut future = operation(store.clone());
            let outcome = poll_times(&mut future, k).await;
            drop(future);
            assert_answers(&store, what, k).await;
            if outcome != Outcome::Pending {
                break;
            }
            assert!(k < 10_000, "`{what}` never completes");
        }
    }
}

async fn pg_store() -> PgStore {
    pg_store_with(Config::new(synckit_workspace::database_url().await)).await
}

/// The same behind PgBouncer in transaction mode: each operation runs in a
/// transaction begun by hand, and one dropped inside it must not hand a
/// connection in a transaction to the next caller.
async fn pooled_pg_store() -> PgStore {
    let (pooled, direct) = synckit_workspace::pooled_database_url().await;
    let mut config = Config::new(pooled);
    config.transaction_pooling = true;
    config.direct_connection_string = Some(direct);
    pg_store_with(config).await
}

async fn pg_store_with(mut config: Config) -> PgStore {
    // One connection: a leaked one makes the next operation time out.
    config.max_open_conns = 1;
    config.min_idle_conns = 0;
    config.batch_size = 7;
    config.connect_timeout = Duration::from_secs(3);
    config.notification_timeout = Duration::from_millis(500);
    PgStore::connect(config).await.unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn memory_futures_dropped_at_every_poll_leave_nothing_behind() {
    sweep(MemoryStore::with_batch_size(7)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_futures_dropped_at_every_poll_leave_nothing_behind_current_thread() {
    sweep(crate::sqlite::fresh_store(7).await).await;
}

/// Through the HTTP face: a client's request dropped at any poll leaves
/// the client, the server and its store answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_futures_dropped_at_every_poll_leave_nothing_behind() {
    sweep(crate::remote::remote(crate::sqlite::fresh_store(7).await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_futures_dropped_at_every_poll_leave_nothing_behind_multi_thread() {
    sweep(crate::sqlite::fresh_store(7).await).await;
}

#[tokio::test(flavor = "current_thread")]
async fn postgres_futures_dropped_at_every_poll_leave_nothing_behind_current_thread() {
    let _alone = crate::SATURATING.lock().await;
    sweep(pg_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_futures_dropped_at_every_poll_leave_nothing_behind_multi_thread() {
    let _alone = crate::SATURATING.lock().await;
    sweep(pg_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_postgres_futures_dropped_at_every_poll_leave_nothing_behind() {
    let _alone = crate::SATURATING.lock().await;
    sweep(pooled_pg_store().await).await;
}

/// Waits until `check` holds, failing after the deadline.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A subscription dropped mid-read, a spawned handler subscription and a
/// plain one: dropping every handle, without `close()`, ends the listener,
/// and its backend leaves `pg_stat_activity`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_postgres_handle_ends_the_listener_and_its_connection() {
    let url = synckit_workspace::database_url().await;
    let mut config = Config::new(url.clone());
    config.max_open_conns = 2;
    config.batch_size = 7;
    let store = PgStore::connect(config).await.unwrap();
    let seed: Vec<_> = (0..30)
        .map(|n| NewEvent::new("a", "Counted", json!({ "n": n })))
        .collect();
    store.append(ExpectedVersion::Any, seed).await.unwrap();
    let mut plain = store
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap();
    plain.next().await.unwrap().unwrap();
    let handle = synckit::SubscriptionHandle::spawn(
        store.subscribe(Filter::all(), Start::Now).await.unwrap(),
        |_event: Recorded| async { Ok::<_, std::convert::Infallible>(()) },
    );
    let mut mid_read = store
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap();
    // Polled until its read is in flight, then dropped.
    while futures::poll!(mid_read.next()).is_ready() {}
    eventually("the listener connects", async || {
        crate::realtime::listener_connections(&url).await == 1
    })
    .await;
    drop(mid_read);
    drop(handle);
    drop(plain);
    drop(store);
    eventually("the listener's backend is gone", async || {
        crate::realtime::listener_connections(&url).await == 0
    })
    .await;
}

/// Open descriptors of this process on the database file and its WAL.
fn open_files(path: &std::path::Path) -> usize {
    let name = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc/self/fd")
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with(&name))
                .count()
        })
        .unwrap_or(0)
}

/// The same on SQLite: dropping every handle, without `close()`, closes
/// the file (the store's connection and its poller's).
#[tokio::test(flavor = "current_thread")]
async fn dropping_every_sqlite_handle_closes_the_file() {
    let store = crate::sqlite::fresh_store(7).await;
    let path = store.path().to_owned();
    let seed: Vec<_> = (0..30)
        .map(|n| NewEvent::new("a", "Counted", json!({ "n": n })))
        .collect();
    store.append(ExpectedVersion::Any, seed).await.unwrap();
    let mut mid_read = store
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap();
    while futures::poll!(mid_read.next()).is_ready() {}
    let handle = synckit::SubscriptionHandle::spawn(
        store.subscribe(Filter::all(), Start::Now).await.unwrap(),
        |_event: Recorded| async { Ok::<_, std::convert::Infallible>(()) },
    );
    eventually("the poller opens its connection", async || {
        open_files(&path) >= 2
    })
    .await;
    drop(mid_read);
    drop(handle);
    drop(store);
    eventually("every descriptor on the file is closed", async || {
        open_files(&path) == 0
    })
    .await;
}

/// A subscription polled once and then left alone (its consumer went
/// quiet, without dropping it) holds up no other call of the store.
async fn a_quiet_subscription_blocks_no_one<S: Holdings>(store: S) {
    let seed: Vec<_> = (0..30)
        .map(|n| NewEvent::new("a", "Counted", json!({ "n": n })))
        .collect();
    store.append(ExpectedVersion::Any, seed).await.unwrap();
    let mut quiet = store
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap();
    // Polled until a read is in flight (a short read on another thread can
    // be done by the time it is first polled), then left alone.
    let mut polls = 0;
    while futures::poll!(quiet.next()).is_ready() {
        polls += 1;
        assert!(polls < 100, "the subscription never waits");
    }
    for k in 0..3 {
        assert_answers(&store, "nothing (a quiet subscription is open)", k).await;
    }
    tokio::time::timeout(DEADLINE, store.close())
        .await
        .expect("close answers")
        .unwrap();
    drop(quiet);
}

#[tokio::test(flavor = "current_thread")]
async fn a_quiet_sqlite_subscription_blocks_no_one() {
    a_quiet_subscription_blocks_no_one(crate::sqlite::fresh_store(7).await).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_quiet_postgres_subscription_blocks_no_one() {
    a_quiet_subscription_blocks_no_one(pg_store().await).await;
}

/// An import dropped at every poll resumes where it stopped, copies no
/// event twice, and leaves no pooled connection behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_dropped_at_every_poll_resumes_and_leaves_nothing_behind() {
    let source = crate::sqlite::fresh_store(7).await;
    let seed: Vec<_> = (0..40)
        .map(|n| NewEvent::new(["a", "b"][n % 2], "Counted", json!({ "n": n })))
        .collect();
    source.append(ExpectedVersion::Any, seed).await.unwrap();
    let target = pg_store().await;
    for k in 1.. {
        let (from, into) = (source.clone(), target.clone());
        let mut future = async move {
            let _ = into.import_from(&from, "events.db", |_| {}).await;
        }
        .boxed();
        let outcome = poll_times(&mut future, k).await;
        drop(future);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while target.connections_in_use() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "poll {k}: a connection stays in use"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if outcome != Outcome::Pending {
            break;
        }
    }
    let report = target
        .import_from(&source, "events.db", |_| {})
        .await
        .unwrap();
    assert_eq!(report.copied_now, 0, "every event was copied already");
    assert_eq!((report.source_count, report.target_count), (40, 40));
}

/// An exactly-once projection (`project`, 3 events per transaction)
/// dropped at every poll: the store answers, holds no connection, and the
/// read model holds each event up to the checkpoint once and none after.
async fn project_sweep<S: Holdings>(store: S, target: &str, any: synckit::AnyStore) {
    crate::projection::create_read_model(target).await;
    let seed: Vec<_> = (0..20)
        .map(|n| NewEvent::new(["a", "b"][n % 2], "Counted", json!({ "n": n })))
        .collect();
    store.append(ExpectedVersion::Any, seed).await.unwrap();
    fn quiet(_: String) {}
    for k in 1.. {
        let (store_in, any) = (store.clone(), any.clone());
        let mut future = async move {
            let Ok(sub) = store_in
                .subscribe(Filter::all(), Start::Checkpoint("projector".into()))
                .await
            else {
                return;
            };
            crate::projection::project_into_read_model(
                any,
                sub.with_events_per_transaction(3),
                quiet,
            )
            .await;
        }
        .boxed();
        let outcome = poll_times(&mut future, k).await;
        drop(future);
        assert_answers(&store, "project", k).await;
        let checkpoint = store
            .load_checkpoint("projector")
            .await
            .unwrap()
            .map_or(0, |c| c.version());
        let (rows, most) = crate::projection::read_model(target).await;
        assert!(
            rows == checkpoint && most <= 1,
            "after dropping `project` at poll {k}: {rows} rows (each at most {most} times) against checkpoint {checkpoint}"
        );
        if outcome != Outcome::Pending {
            break;
        }
        assert!(k < 10_000, "`project` never completes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_projection_dropped_at_every_poll_applies_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db").display().to_string();
    let store = SqliteStore::open(&path).await.unwrap();
    project_sweep(store.clone(), &path, synckit::AnyStore::Sqlite(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_projection_dropped_at_every_poll_applies_nothing_twice() {
    let _alone = crate::SATURATING.lock().await;
    let url = synckit_workspace::database_url().await;
    let store = pg_store_with(Config::new(url.clone())).await;
    project_sweep(store.clone(), &url, synckit::AnyStore::Postgres(store)).await;
}
