//! The PostgreSQL rows: each measures synckit and, in the same run on a
//! fresh database with the identical schema (indexes and triggers
//! included), the fastest path a hand-written tokio-postgres program takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value, json};
use synckit::postgres::{Config, PgStore};
use synckit::{
    Cursor, Event, EventStore, ExpectedVersion, Filter, NewEvent, Start, SubscriptionSource,
};
use tokio::sync::Barrier;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};

use crate::report::{self, Goal, Rates, Row};
use crate::workload::{self, Heads, OrderLinePlaced, RawEvent};

/// Rounds of the latency rows run before measuring.
const WARM_UP: usize = 30;
const BATCH: u64 = 1000;
/// The events of one append in the small-batch rows.
const SMALL_BATCH: u64 = 100;
const INSERT_COLUMNS: &str =
    "events (id, aggregate_id, event_type, data, metadata, stream_version)";

/// Samples of each of `setups` in turn, `samples` each after `WARM_UP`
/// unrecorded rounds: taken turn about, they meet the same noise.
macro_rules! interleaved {
    ($samples:expr; $($setup:expr),+) => {{
        for _ in 0..WARM_UP {
            $( let _ = $setup.sample().await; )+
        }
        let mut all = vec![Vec::with_capacity($samples); [$(stringify!($setup)),+].len()];
        for _ in 0..$samples {
            let mut i = 0;
            $(
                all[i].push($setup.sample().await);
                i += 1;
            )+
            let _ = i;
        }
        all
    }};
}

/// Throughput rows run each side four times, in one order, the other, the
/// other again and the first (so no side is always first), and keep each
/// side's best: interference from the rest of the machine lowers a figure,
/// never raises it. (0 is synckit; 1 and 2 are baselines.)
const ROUNDS: [[u8; 3]; 4] = [[0, 1, 2], [2, 1, 0], [2, 1, 0], [0, 1, 2]];

/// The server and the databases the rows create (and drop at the end).
pub struct Bench {
    admin: tokio_postgres::Client,
    server: synckit_workspace::Server,
}

impl Bench {
    pub async fn connect() -> Bench {
        let server = synckit_workspace::server();
        let admin = raw(&server.admin_url()).await;
        Bench { admin, server }
    }

    pub async fn server_version(&self) -> String {
        let row = self
            .admin
            .query_one("SELECT version()", &[])
            .await
            .expect("version");
        row.get(0)
    }

    /// A fresh database with synckit's schema; its connection string.
    pub async fn fresh(&self, name: &str) -> String {
        // One statement per call: DROP/CREATE DATABASE refuse to run in the
        // implicit transaction of a multi-statement query.
        self.admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop database");
        self.admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let url = self.server.url(name);
        store(&url).await.close().await.expect("close");
        url
    }

    pub async fn drop_databases(&self) {
        for name in ["synckit_bench_a", "synckit_bench_b"] {
            let _ = self
                .admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }

    /// 1,000-event batches by 2 writers: synckit beside raw `unnest` and
    /// binary COPY inserts of the same rows (the faster is the baseline).
    pub async fn batch_append(&self, batches: u64) -> Row {
        let (mut ss, mut us, mut cs) = (Rates::default(), Rates::default(), Rates::default());
        for order in ROUNDS {
            for which in order {
                let url = self.fresh("synckit_bench_a").await;
                match which {
                    0 => ss.push(batch_synckit(&url, batches).await),
                    1 => us.push(batch_raw(&url, batches, RawBatch::Unnest).await),
                    _ => cs.push(batch_raw(&url, batches, RawBatch::Copy).await),
                };
            }
        }
        let (s, u, c) = (ss.best(), us.best(), cs.best());
        let (b, how) = if u >= c { (u, "unnest") } else { (c, "COPY") };
        Row {
            measurement: "batch append, 1,000-event batches, 2 writers".into(),
            synckit: report::rate(s),
            baseline: format!(
                "{} (raw {how}; {} unnest, {} COPY)",
                report::rate(b),
                report::rate(u),
                report::rate(c)
            ),
            ratio: s / b,
            goal: Goal::AtLeast(0.8),
            figures: json!({"synckit": s, "raw_unnest": u, "raw_copy": c,
                            "rounds": {"synckit": ss.all(), "raw_unnest": us.all(), "raw_copy": cs.all()}}),
        }
    }

    /// The cost of the per-event notifications: synckit's batch append,
    /// which notifies after its commit, beside the same with the
    /// notification function made a no-op.
    pub async fn notify_cost(&self, batches: u64) -> Row {
        let (mut withs, mut withouts) = (Rates::default(), Rates::default());
        for order in ROUNDS {
            for which in order.into_iter().filter(|w| *w < 2) {
                let url = self.fresh("synckit_bench_a").await;
                if which == 0 {
                    withs.push(batch_synckit(&url, batches).await);
                } else {
                    raw(&url)
                        .await
                        .batch_execute(
                            "CREATE OR REPLACE FUNCTION synckit_notify_appended() RETURNS void \
                             LANGUAGE plpgsql AS $$ BEGIN \
                             PERFORM set_config('synckit.appended', '', false); END $$",
                        )
                        .await
                        .expect("silence the notifications");
                    withouts.push(batch_synckit(&url, batches).await);
                }
            }
        }
        let (with, without) = (withs.best(), withouts.best());
        Row {
            measurement: "NOTIFY cost: batch append with its notifications (sent after the commit)"
                .into(),
            synckit: report::rate(with),
            baseline: format!("{} without them", report::rate(without)),
            ratio: with / without,
            goal: Goal::Reported,
            figures: json!({"with_notifications": with, "without_notifications": without,
                            "rounds": {"with_notifications": withs.all(), "without_notifications": withouts.all()}}),
        }
    }

    /// Single-event appends by `writers` concurrent writers, beside raw
    /// single-row INSERTs with the notify trigger (the row's baseline) and
    /// without it: one commit per event with no NOTIFY, the ceiling that
    /// PostgreSQL's NOTIFY commit lock keeps the other two under.
    pub async fn single_append(&self, writers: u64, total: u64) -> Vec<Row> {
        let per = (total / writers).max(1);
        // Each side's p99 is that of its best round.
        let (mut ss, mut rs, mut ns) = (Rates::default(), Rates::default(), Rates::default());
        for order in ROUNDS {
            for which in order {
                let url = self.fresh("synckit_bench_a").await;
                match which {
                    0 => ss.push_with(single_synckit(&url, writers, per, false).await),
                    1 => rs.push_with(single_raw(&url, writers, per).await),
                    _ => {
                        raw(&url)
                            .await
                            .batch_execute("DROP TRIGGER events_notify_trigger ON events")
                            .await
                            .expect("drop trigger");
                        ns.push_with(single_raw(&url, writers, per).await);
                    }
                }
            }
        }
        let ((s, sp), (r, rp), (n, np)) = (ss.best_round(), rs.best_round(), ns.best_round());
        let plural = if writers == 1 { "" } else { "s" };
        vec![
            Row {
                measurement: format!("single appends, {writers} writer{plural}"),
                synckit: format!("{}, p99 {}", report::rate(s), report::ms(sp)),
                baseline: format!(
                    "{}, p99 {} (raw single-row INSERT)",
                    report::rate(r),
                    report::ms(rp)
                ),
                ratio: s / r,
                goal: Goal::AtLeast(0.8),
                figures: json!({"synckit": s, "synckit_p99_ms": sp.as_secs_f64() * 1e3,
                                "raw": r, "raw_p99_ms": rp.as_secs_f64() * 1e3,
                                "raw_without_trigger": n, "raw_without_trigger_p99_ms": np.as_secs_f64() * 1e3,
                                "rounds": {"synckit": ss.all(), "raw": rs.all(), "raw_without_trigger": ns.all()}}),
            },
            Row {
                measurement: format!(
                    "single appends, {writers} writer{plural}, against the one-commit-per-event ceiling"
                ),
                synckit: format!("{}, p99 {}", report::rate(s), report::ms(sp)),
                baseline: format!(
                    "{}, p99 {} (raw single-row INSERT, notify trigger disabled)",
                    report::rate(n),
                    report::ms(np)
                ),
                ratio: s / n,
                goal: Goal::Reported,
                figures: json!({"synckit": s, "raw_without_trigger": n}),
            },
        ]
    }

    /// What the listener costs writers: single appends by `writers` writers
    /// on a store that also holds a subscription (its listener gets every
    /// commit's notification) beside the same on a store that only writes.
    pub async fn listening_cost(&self, writers: u64, total: u64) -> Row {
        let per = (total / writers).max(1);
        let (mut ls, mut ws) = (Rates::default(), Rates::default());
        for order in ROUNDS {
            for which in order.into_iter().filter(|w| *w < 2) {
                let url = self.fresh("synckit_bench_a").await;
                let (rate, _) = single_synckit(&url, writers, per, which == 0).await;
                if which == 0 {
                    ls.push(rate);
                } else {
                    ws.push(rate);
                }
            }
        }
        let (l, w) = (ls.best(), ws.best());
        Row {
            measurement: format!(
                "listener cost: single appends, {writers} writers, on a store with a subscription open"
            ),
            synckit: report::rate(l),
            baseline: format!(
                "{} on a store that only writes (no listener)",
                report::rate(w)
            ),
            ratio: l / w,
            goal: Goal::Reported,
            figures: json!({"listening": l, "write_only": w,
                            "rounds": {"listening": ls.all(), "write_only": ws.all()}}),
        }
    }

    /// Loads `events` events into typed structs, and a tenth of them, to
    /// show that memory does not grow with the count.
    pub async fn load(&self, events: u64) -> Row {
        let url = self.fresh("synckit_bench_a").await;
        seed(&url, events).await;
        // Each side in turn (ROUNDS), keeping its best.
        let (mut ss, mut rs) = (Rates::default(), Rates::default());
        for order in ROUNDS {
            for which in order {
                match which {
                    0 => ss.push(load_synckit(&url, events).await),
                    1 => rs.push(load_raw(&url, events).await),
                    _ => 0.0,
                };
            }
        }
        let (s, r) = (ss.best(), rs.best());
        // Memory, each load in a process of its own, at the full count and
        // at a tenth of it.
        let small = (events / 10).max(1);
        let peak = |side: &str, n: u64| {
            report::probe_peak_rss(&[&format!("pg-{side}"), &url, &n.to_string()])
        };
        let (s_peak, s_small_peak) = (peak("synckit", events), peak("synckit", small));
        let (r_peak, r_small_peak) = (peak("raw", events), peak("raw", small));
        Row {
            measurement: format!("load {} events into typed structs", thousands(events)),
            synckit: format!(
                "{}, peak RSS +{} (+{} at {})",
                report::rate(s),
                report::mib(s_peak),
                report::mib(s_small_peak),
                thousands(small)
            ),
            baseline: format!(
                "{}, peak RSS +{} (raw SELECT + serde_json; +{} at {})",
                report::rate(r),
                report::mib(r_peak),
                report::mib(r_small_peak),
                thousands(small)
            ),
            ratio: s / r,
            goal: Goal::AtLeast(0.8),
            figures: json!({"events": events, "synckit": s, "synckit_peak_rss_bytes": s_peak,
                            "raw": r, "raw_peak_rss_bytes": r_peak, "small_events": small,
                            "synckit_small_peak_rss_bytes": s_small_peak,
                            "raw_small_peak_rss_bytes": r_small_peak,
                            "rounds": {"synckit": ss.all(), "raw": rs.all()}}),
        }
    }

    /// A catch-up subscription from the beginning over `events` typed
    /// events, beside `read_stream_as` over the same events and a raw
    /// streamed SELECT decoding them with serde (the second row).
    pub async fn catch_up(&self, events: u64) -> Vec<Row> {
        let url = self.fresh("synckit_bench_a").await;
        seed(&url, events).await;
        let (mut cs, mut ls, mut rs) = (Rates::default(), Rates::default(), Rates::default());
        for order in ROUNDS {
            for which in order {
                match which {
                    0 => cs.push(catch_up_synckit(&url, events).await),
                    1 => ls.push(load_synckit(&url, events).await),
                    _ => rs.push(load_raw(&url, events).await),
                };
            }
        }
        let (c, l, r) = (cs.best(), ls.best(), rs.best());
        let figures = json!({"events": events, "catch_up": c, "read_stream_as": l, "raw": r,
                             "rounds": {"catch_up": cs.all(), "read_stream_as": ls.all(), "raw": rs.all()}});
        vec![
            Row {
                measurement: format!(
                    "catch-up subscription from the beginning, {} typed events",
                    thousands(events)
                ),
                synckit: report::rate(c),
                baseline: format!("{} (read_stream_as, same events)", report::rate(l)),
                ratio: c / l,
                goal: Goal::AtLeast(0.9),
                figures: figures.clone(),
            },
            Row {
                measurement: format!(
                    "catch-up subscription from the beginning, {} typed events, against a raw SELECT",
                    thousands(events)
                ),
                synckit: report::rate(c),
                baseline: format!("{} (raw streamed SELECT + serde_json)", report::rate(r)),
                ratio: c / r,
                goal: Goal::AtLeast(0.8),
                figures,
            },
        ]
    }

    /// 100-event appends by 2 writers, with p99, beside raw `unnest`
    /// INSERTs of the same rows; and the same synckit appends with the GIN
    /// indexes on `data` and `metadata` that databases made before the
    /// `json_indexes_opt_in` migration had (reported).
    pub async fn small_batches(&self, batches: u64) -> Vec<Row> {
        let (mut ss, mut rs, mut gs) = (Rates::default(), Rates::default(), Rates::default());
        for order in ROUNDS {
            for which in order {
                let url = self.fresh("synckit_bench_a").await;
                match which {
                    0 => ss.push_with(batch_synckit_sized(&url, batches, SMALL_BATCH).await),
                    1 => rs.push_with(batch_raw_sized(&url, batches, SMALL_BATCH).await),
                    _ => {
                        raw(&url)
                            .await
                            .batch_execute(
                                "CREATE INDEX idx_events_data_gin ON events USING GIN (data); \
                                 CREATE INDEX idx_events_metadata_gin ON events USING GIN (metadata)",
                            )
                            .await
                            .expect("create GIN indexes");
                        gs.push_with(batch_synckit_sized(&url, batches, SMALL_BATCH).await);
                    }
                }
            }
        }
        let ((s, sp), (r, rp), (g, gp)) = (ss.best_round(), rs.best_round(), gs.best_round());
        let figures = json!({"synckit": s, "synckit_p99_ms": sp.as_secs_f64() * 1e3,
                             "raw": r, "raw_p99_ms": rp.as_secs_f64() * 1e3,
                             "synckit_with_gin": g, "synckit_with_gin_p99_ms": gp.as_secs_f64() * 1e3,
                             "rounds": {"synckit": ss.all(), "raw": rs.all(), "synckit_with_gin": gs.all()}});
        vec![
            Row {
                measurement: "batch append, 100-event batches, 2 writers".into(),
                synckit: format!("{}, p99 {}", report::rate(s), report::ms(sp)),
                baseline: format!(
                    "{}, p99 {} (raw unnest INSERT)",
                    report::rate(r),
                    report::ms(rp)
                ),
                ratio: s / r,
                goal: Goal::AtLeast(0.9),
                figures: figures.clone(),
            },
            Row {
                measurement: "batch append, 100-event batches, 2 writers, p99 latency".into(),
                synckit: report::ms(sp),
                baseline: format!("{} (raw unnest INSERT)", report::ms(rp)),
                // Lower is better: shown as raw ÷ synckit against 1 / 1.5.
                ratio: rp.as_secs_f64() / sp.as_secs_f64().max(1e-9),
                goal: Goal::AtLeast(1.0 / 1.5),
                figures: figures.clone(),
            },
            Row {
                measurement: "batch append, 100-event batches, 2 writers, with the GIN indexes on data and metadata".into(),
                synckit: format!("{}, p99 {}", report::rate(g), report::ms(gp)),
                baseline: format!("{}, p99 {} (synckit without them)", report::rate(s), report::ms(sp)),
                ratio: g / s,
                goal: Goal::Reported,
                figures,
            },
        ]
    }

    /// Append (from another store, as another process would) until a
    /// typed live subscriber holds the event, beside the same row inserted
    /// by a raw client until a raw LISTEN connection holds its NOTIFY. Both
    /// include the insert and its commit; the bare NOTIFY round trip (no
    /// insert, no commit to flush) is shown for scale.
    pub async fn commit_to_subscriber(&self, samples: usize) -> Row {
        let url = self.fresh("synckit_bench_a").await;
        let mut fan = Fan::open(&url, 1, 0).await;
        let mut raw_insert = RawInsert::open(&url).await;
        let mut raw_notify = RawNotify::open(&url).await;
        let mut all = interleaved!(samples; fan, raw_insert, raw_notify);
        fan.close().await;
        let (mut n, mut r, mut s) = (
            all.pop().unwrap_or_default(),
            all.pop().unwrap_or_default(),
            all.pop().unwrap_or_default(),
        );
        let (s50, s99) = (
            workload::percentile(&mut s, 50),
            workload::percentile(&mut s, 99),
        );
        let (r50, r99) = (
            workload::percentile(&mut r, 50),
            workload::percentile(&mut r, 99),
        );
        let (n50, n99) = (
            workload::percentile(&mut n, 50),
            workload::percentile(&mut n, 99),
        );
        Row {
            measurement: "append commit → typed live subscriber".into(),
            synckit: format!("p50 {}, p99 {}", report::ms(s50), report::ms(s99)),
            baseline: format!(
                "p50 {}, p99 {} (raw INSERT → LISTEN; bare NOTIFY → LISTEN: p50 {}, p99 {})",
                report::ms(r50),
                report::ms(r99),
                report::ms(n50),
                report::ms(n99)
            ),
            ratio: s99.as_secs_f64() / r99.as_secs_f64(),
            goal: Goal::AtMost(2.0),
            figures: json!({"synckit_p50_ms": s50.as_secs_f64() * 1e3, "synckit_p99_ms": s99.as_secs_f64() * 1e3,
                            "raw_p50_ms": r50.as_secs_f64() * 1e3, "raw_p99_ms": r99.as_secs_f64() * 1e3,
                            "notify_p50_ms": n50.as_secs_f64() * 1e3, "notify_p99_ms": n99.as_secs_f64() * 1e3}),
        }
    }

    /// `streams` stream subscriptions and 10 global ones on one store,
    /// beside the same store with one subscription.
    pub async fn many_subscriptions(&self, streams: usize, samples: usize) -> Row {
        let (url_many, url_one) = (
            self.fresh("synckit_bench_a").await,
            self.fresh("synckit_bench_b").await,
        );
        let mut many = Fan::open(&url_many, streams, 10).await;
        let mut one = Fan::open(&url_one, 1, 0).await;
        let mut all = interleaved!(samples; many, one);
        let (mut o, mut m) = (all.pop().unwrap_or_default(), all.pop().unwrap_or_default());
        let (m99, o99) = (
            workload::percentile(&mut m, 99),
            workload::percentile(&mut o, 99),
        );
        let opening = many.opening;
        many.close().await;
        one.close().await;
        // Memory, each set of subscriptions opened in a process of its own.
        let many_rss = report::probe_peak_rss(&["fanout", &url_many, &streams.to_string()]);
        let one_rss = report::probe_peak_rss(&["fanout", &url_one, "1"]);
        Row {
            measurement: format!(
                "{} stream + 10 global subscriptions on one store",
                thousands(streams as u64)
            ),
            synckit: format!(
                "p99 {}, RSS +{} (opened in {:.1} s)",
                report::ms(m99),
                report::mib(many_rss),
                opening.as_secs_f64()
            ),
            baseline: format!(
                "p99 {}, RSS +{} (1 subscription)",
                report::ms(o99),
                report::mib(one_rss)
            ),
            ratio: m99.as_secs_f64() / o99.as_secs_f64(),
            goal: Goal::AtMost(2.0),
            figures: json!({"streams": streams, "p99_ms": m99.as_secs_f64() * 1e3, "rss_bytes": many_rss,
                            "opening_s": opening.as_secs_f64(),
                            "one_p99_ms": o99.as_secs_f64() * 1e3, "one_rss_bytes": one_rss}),
        }
    }
}

pub fn thousands(n: u64) -> String {
    report::rate(n as f64).trim_end_matches(" ev/s").to_owned()
}

/// A store on `url`. Both sides talk plain TCP to the local server: the
/// raw baseline has no TLS, and `sslmode=prefer` (the default) would
/// encrypt synckit's connections.
pub async fn store(url: &str) -> PgStore {
    let mut config = Config::new(format!("{url} sslmode=disable"));
    config.max_open_conns = 40;
    // Opened as needed: several stores are open at once in some rows.
    config.min_idle_conns = 2;

    PgStore::connect(config).await.expect("connect")
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// Runs `writers` tasks that each prepare, run their warm-up, wait for the
/// others, then run the measured part and return its latencies. Returns
/// the measured part's wall time and every latency.
async fn run_writers<F, Fut>(writers: u64, body: F) -> (Duration, Vec<Duration>)
where
    F: Fn(u64, Arc<Barrier>) -> Fut,
    Fut: Future<Output = Vec<Duration>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(writers as usize + 1));
    let tasks: Vec<_> = (0..writers)
        .map(|w| tokio::spawn(body(w, barrier.clone())))
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("writer"));
    }
    (started.elapsed(), latencies)
}

/// Events per second of 1,000-event batches by 2 writers, after one
/// warm-up batch each.
async fn batch_synckit(url: &str, batches: u64) -> f64 {
    batch_synckit_sized(url, batches, BATCH).await.0
}

/// Events per second and p99 latency of `size`-event batches by 2
/// writers, after one warm-up batch each.
async fn batch_synckit_sized(url: &str, batches: u64, size: u64) -> (f64, Duration) {
    let store = store(url).await;
    let (elapsed, mut latencies) = run_writers(2, |w, barrier| {
        let store = store.clone();
        async move {
            let mut all: Vec<Vec<NewEvent>> = (0..=batches)
                .map(|b| workload::owned_events(b * size, size, w, 2))
                .collect();
            let warm = all.remove(0);
            store
                .append(ExpectedVersion::Any, warm)
                .await
                .expect("append");
            barrier.wait().await;
            let mut latencies = Vec::with_capacity(all.len());
            for events in all {
                let t = Instant::now();
                store
                    .append(ExpectedVersion::Any, events)
                    .await
                    .expect("append");
                latencies.push(t.elapsed());
            }
            latencies
        }
    })
    .await;
    let rate = (batches * 2 * size) as f64 / elapsed.as_secs_f64();
    (rate, workload::percentile(&mut latencies, 99))
}

/// Events per second of a typed catch-up subscription from the beginning
/// until it has taken `events` events.
async fn catch_up_synckit(url: &str, events: u64) -> f64 {
    let store = store(url).await;
    report::measure_load(events, async {
        OrderLinePlaced::subscribe_from(&store, Start::Beginning)
            .await
            .expect("subscribe")
            .take(events as usize)
            .try_fold(0u64, |sum, e| async move {
                Ok(sum + u64::from(e.data.quantity))
            })
            .await
            .expect("catch up")
    })
    .await
}

#[derive(Clone, Copy)]
enum RawBatch {
    Unnest,
    Copy,
}

/// The same batches as rows: the writer tracks its stream positions in
/// memory and sends no query but the insert.
async fn batch_raw(url: &str, batches: u64, how: RawBatch) -> f64 {
    batch_raw_with(url, batches, BATCH, how).await.0
}

/// [`batch_raw`] by `unnest` in `size`-event batches, with p99 latency.
async fn batch_raw_sized(url: &str, batches: u64, size: u64) -> (f64, Duration) {
    batch_raw_with(url, batches, size, RawBatch::Unnest).await
}

async fn batch_raw_with(url: &str, batches: u64, size: u64, how: RawBatch) -> (f64, Duration) {
    let (elapsed, mut latencies) = run_writers(2, |w, barrier| {
        let url = url.to_owned();
        async move {
            let mut client = raw(&url).await;
            let unnest = client
                .prepare(&format!(
                    "INSERT INTO {INSERT_COLUMNS} SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::bigint[])"
                ))
                .await
                .expect("prepare");
            let mut heads = Heads::default();
            let all: Vec<Vec<NewEvent>> = (0..=batches)
                .map(|b| workload::owned_events(b * size, size, w, 2))
                .collect();
            let mut latencies = Vec::with_capacity(all.len());
            for (b, events) in all.iter().enumerate() {
                if b == 1 {
                    barrier.wait().await;
                }
                let versions: Vec<i64> = events.iter().map(|e| heads.next(e.aggregate_id())).collect();
                let t = Instant::now();
                match how {
                    RawBatch::Unnest => unnest_insert(&client, &unnest, events, &versions).await,
                    RawBatch::Copy => copy_insert(&mut client, events, &versions).await,
                }
                if b > 0 {
                    latencies.push(t.elapsed());
                }
            }
            latencies
        }
    })
    .await;
    let rate = (batches * 2 * size) as f64 / elapsed.as_secs_f64();
    (rate, workload::percentile(&mut latencies, 99))
}

async fn unnest_insert(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    events: &[NewEvent],
    versions: &[i64],
) {
    let ids: Vec<&str> = events.iter().map(NewEvent::id).collect();
    let aggregates: Vec<&str> = events.iter().map(NewEvent::aggregate_id).collect();
    let types: Vec<&str> = events.iter().map(NewEvent::event_type).collect();
    let data: Vec<&Value> = events.iter().map(NewEvent::data).collect();
    let metadata: Vec<Json<&Map<String, Value>>> =
        events.iter().map(|e| Json(e.metadata())).collect();
    client
        .execute(
            statement,
            &[&ids, &aggregates, &types, &data, &metadata, &versions],
        )
        .await
        .expect("insert");
}

async fn copy_insert(client: &mut tokio_postgres::Client, events: &[NewEvent], versions: &[i64]) {
    let tx = client.transaction().await.expect("begin");
    let sink = tx
        .copy_in(&format!("COPY {INSERT_COLUMNS} FROM STDIN BINARY"))
        .await
        .expect("copy");
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::JSONB,
            Type::JSONB,
            Type::INT8,
        ],
    );
    let mut writer = std::pin::pin!(writer);
    for (e, v) in events.iter().zip(versions) {
        let metadata = Json(e.metadata());
        let row: [&(dyn ToSql + Sync); 6] = [
            &e.id(),
            &e.aggregate_id(),
            &e.event_type(),
            e.data(),
            &metadata,
            v,
        ];
        writer.as_mut().write(&row).await.expect("copy row");
    }
    writer.finish().await.expect("copy end");
    tx.commit().await.expect("commit");
}

/// Single appends by `writers`, `per_writer` each after 10 warm-up
/// appends; events per second and p99 latency. Each append passes the
/// stream's expected version, as a command handler does.
/// `listening`: the store also holds a subscription (to a stream no one
/// writes), so its listener receives every commit's notification.
async fn single_synckit(
    url: &str,
    writers: u64,
    per_writer: u64,
    listening: bool,
) -> (f64, Duration) {
    let store = store(url).await;
    let _idle = if listening {
        let sub = store
            .subscribe(Filter::stream("nobody"), Start::Now)
            .await
            .expect("subscribe");
        while !store.is_listener_connected() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Some(sub)
    } else {
        None
    };
    let (elapsed, mut latencies) = run_writers(writers, |w, barrier| {
        let store = store.clone();
        async move {
            let mut heads = Heads::default();
            let events = workload::owned_events(0, per_writer + 10, w, writers);
            let mut latencies = Vec::with_capacity(per_writer as usize);
            for (i, e) in events.into_iter().enumerate() {
                if i == 10 {
                    barrier.wait().await;
                }
                let expected = ExpectedVersion::Exact(heads.current(e.aggregate_id()) as u64);
                heads.next(e.aggregate_id());
                let t = Instant::now();
                store.append(expected, vec![e]).await.expect("append");
                latencies.push(t.elapsed());
            }
            latencies.split_off(10)
        }
    })
    .await;
    let rate = (writers * per_writer) as f64 / elapsed.as_secs_f64();
    (rate, workload::percentile(&mut latencies, 99))
}

async fn single_raw(url: &str, writers: u64, per_writer: u64) -> (f64, Duration) {
    let (elapsed, mut latencies) = run_writers(writers, |w, barrier| {
        let url = url.to_owned();
        async move {
            let client = raw(&url).await;
            let insert = prepare_insert_one(&client).await;
            let mut heads = Heads::default();
            let events = workload::owned_events(0, per_writer + 10, w, writers);
            let mut latencies = Vec::with_capacity(per_writer as usize);
            for (i, e) in events.iter().enumerate() {
                if i == 10 {
                    barrier.wait().await;
                }
                let version = heads.next(e.aggregate_id());
                let t = Instant::now();
                insert_one(&client, &insert, e, version).await;
                latencies.push(t.elapsed());
            }
            latencies.split_off(10)
        }
    })
    .await;
    let rate = (writers * per_writer) as f64 / elapsed.as_secs_f64();
    (rate, workload::percentile(&mut latencies, 99))
}

/// The raw single-row INSERT, prepared.
async fn prepare_insert_one(client: &tokio_postgres::Client) -> tokio_postgres::Statement {
    client
        .prepare(&format!(
            "INSERT INTO {INSERT_COLUMNS} VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .await
        .expect("prepare")
}

/// One event as one row, at the stream position the writer tracks.
async fn insert_one(
    client: &tokio_postgres::Client,
    insert: &tokio_postgres::Statement,
    e: &NewEvent,
    version: i64,
) {
    client
        .execute(
            insert,
            &[
                &e.id(),
                &e.aggregate_id(),
                &e.event_type(),
                e.data(),
                &Json(e.metadata()),
                &version,
            ],
        )
        .await
        .expect("insert");
}

/// Writes `events` events over 1,000 aggregates by binary COPY, 50,000 per
/// transaction.
pub async fn seed(url: &str, events: u64) {
    let mut client = raw(url).await;
    let mut heads = Heads::default();
    let mut first = 0;
    while first < events {
        let count = (events - first).min(50_000);
        let chunk = workload::owned_events(first, count, 0, 1);
        let versions: Vec<i64> = chunk.iter().map(|e| heads.next(e.aggregate_id())).collect();
        copy_insert(&mut client, &chunk, &versions).await;
        first += count;
    }
    // Vacuumed (hint bits set, statistics in) and checkpointed, so that no
    // round meets the seed's checkpoint or first-read writes.
    client
        .batch_execute("VACUUM ANALYZE events")
        .await
        .expect("vacuum");
    client
        .batch_execute("CHECKPOINT")
        .await
        .expect("checkpoint");
}

/// Loads `events` typed events with synckit's paged read.
pub async fn load_synckit(url: &str, events: u64) -> f64 {
    let store = store(url).await;
    report::measure_load(events, async {
        store
            .read_stream_as::<OrderLinePlaced>(OrderLinePlaced::filter(), Cursor::START)
            .take(events as usize)
            .try_fold(0u64, |sum, e| async move {
                Ok(sum + u64::from(e.data.quantity))
            })
            .await
            .expect("load")
    })
    .await
}

/// The same rows, their columns decoded as synckit gives them, by one
/// streamed SELECT decoding JSON straight into the types.
pub async fn load_raw(url: &str, events: u64) -> f64 {
    let client = raw(url).await;
    report::measure_load(events, async {
        let limit = events as i64;
        let rows = client
            .query_raw(
                "SELECT version, stream_version, id, aggregate_id, event_type, data, metadata, created_at \
                 FROM events WHERE event_type = 'OrderLinePlaced' ORDER BY version LIMIT $1",
                [&limit as &(dyn ToSql + Sync)],
            )
            .await
            .expect("select");
        rows.map_ok(|row| {
            let e = RawEvent {
                version: row.get(0),
                stream_version: row.get(1),
                id: row.get(2),
                aggregate_id: row.get(3),
                event_type: row.get(4),
                data: row.get::<_, Json<OrderLinePlaced>>(5).0,
                metadata: row.get::<_, Json<Map<String, Value>>>(6).0,
                created_at: row.get(7),
            };
            std::hint::black_box(&e);
            u64::from(e.data.quantity)
        })
        .try_fold(0u64, |sum, q| async move { Ok(sum + q) })
        .await
        .expect("load")
    })
    .await
}

/// A store with subscriptions, and a writer that appends from another
/// store (as another process would).
pub struct Fan {
    subscriber: PgStore,
    writer: PgStore,
    received: tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>,
    streams: u64,
    next: u64,
    opening: Duration,
}

impl Fan {
    /// Opens `streams` typed stream subscriptions and `globals` typed
    /// global ones on one store.
    pub async fn open(url: &str, streams: usize, globals: usize) -> Fan {
        let subscriber = store(url).await;
        let writer = store(url).await;
        subscriber.listen().await;
        while !subscriber.is_listener_connected() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let opened = Instant::now();
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        for s in 0..streams {
            let mut sub =
                OrderLinePlaced::subscribe_stream(&subscriber, workload::aggregate(s as u64))
                    .await
                    .expect("subscribe");
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(Ok(e)) = sub.next().await {
                    let _ = tx.send((e.data.line, Instant::now()));
                }
            });
        }
        let seen = Arc::new(AtomicU64::new(0));
        for _ in 0..globals {
            let mut sub = OrderLinePlaced::subscribe(&subscriber)
                .await
                .expect("subscribe");
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some(Ok(_)) = sub.next().await {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Fan {
            opening: opened.elapsed(),
            subscriber,
            writer,
            received,
            streams: streams as u64,
            next: 0,
        }
    }

    /// Appends to one of the streams until its subscriber holds the event.
    async fn sample(&mut self) -> Duration {
        let n = self.next;
        self.next += 1;
        let a = n * 7919 % self.streams;
        let started = Instant::now();
        self.writer
            .append_event(ExpectedVersion::Any, &workload::order_line(n, a))
            .await
            .expect("append");
        loop {
            let (line, at) = self.received.recv().await.expect("subscriber");
            if line == n {
                return at - started;
            }
        }
    }

    pub async fn close(self) {
        self.subscriber.close().await.expect("close");
        self.writer.close().await.expect("close");
    }
}

/// A raw connection listening on `channel`; its notifications' payloads
/// and arrival times.
async fn raw_listener(
    url: &str,
    channel: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
) {
    let (listener, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.payload().to_owned(), Instant::now()));
            }
        }
    });
    listener
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .expect("listen");
    (listener, rx)
}

/// The event row inserted by a raw client until a raw LISTEN connection
/// receives the trigger's notification of it.
struct RawInsert {
    _listener: tokio_postgres::Client,
    received: tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
    heads: Heads,
    next: u64,
}

impl RawInsert {
    async fn open(url: &str) -> RawInsert {
        let (_listener, received) = raw_listener(url, "events_global").await;
        let client = raw(url).await;
        let insert = prepare_insert_one(&client).await;
        RawInsert {
            _listener,
            received,
            client,
            insert,
            heads: Heads::default(),
            next: 0,
        }
    }

    async fn sample(&mut self) -> Duration {
        // Its own stream, apart from the synckit rows'.
        let e = workload::new_event(self.next, 1);
        self.next += 1;
        let version = self.heads.next(e.aggregate_id());
        let started = Instant::now();
        insert_one(&self.client, &self.insert, &e, version).await;
        loop {
            let (payload, at) = self.received.recv().await.expect("notification");
            if payload.contains(e.id()) {
                return at - started;
            }
        }
    }
}

/// A bare NOTIFY from one connection until another connection's LISTEN
/// receives it.
struct RawNotify {
    _listener: tokio_postgres::Client,
    received: tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    notifier: tokio_postgres::Client,
    next: u64,
}

impl RawNotify {
    async fn open(url: &str) -> RawNotify {
        let (_listener, received) = raw_listener(url, "bench_ping").await;
        RawNotify {
            _listener,
            received,
            notifier: raw(url).await,
            next: 0,
        }
    }

    async fn sample(&mut self) -> Duration {
        let n = self.next.to_string();
        self.next += 1;
        let started = Instant::now();
        self.notifier
            .execute("SELECT pg_notify('bench_ping', $1)", &[&n])
            .await
            .expect("notify");
        let (got, at) = self.received.recv().await.expect("notification");
        assert_eq!(got, n);
        at - started
    }
}
