//! The SQLite rows: synckit's embedded store beside raw statements
//! (rusqlite, cached prepared statements) on a file with the same schema
//! and the same settings (WAL, `synchronous = NORMAL`, `temp_store =
//! MEMORY`).

use std::path::Path;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde_json::json;
use synckit::sqlite::{self, SqliteStore};
use synckit::{Cursor, Event, EventStore, ExpectedVersion, NewEvent};

use crate::report::{self, Goal, Rates, Row};
use crate::workload::{self, Heads, OrderLinePlaced, RawEvent};

const BATCH: u64 = 1000;
const INSERT: &str = "INSERT INTO events (id, aggregate_id, event_type, data, metadata, stream_version) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// A migrated database file in `dir`, opened by synckit.
pub async fn store(dir: &Path, name: &str) -> SqliteStore {
    SqliteStore::connect(sqlite::Config::new(dir.join(name)))
        .await
        .expect("open")
}

/// A raw connection to a file synckit created and migrated.
async fn raw(dir: &Path, name: &str) -> rusqlite::Connection {
    store(dir, name).await.close().await.expect("close");
    let conn = rusqlite::Connection::open(dir.join(name)).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
         PRAGMA temp_store = MEMORY;",
    )
    .expect("pragmas");
    conn
}

fn insert_rows(tx: &rusqlite::Connection, events: &[NewEvent], heads: &mut Heads) {
    let mut insert = tx.prepare_cached(INSERT).expect("prepare");
    for e in events {
        let version = heads.next(e.aggregate_id());
        insert
            .execute(rusqlite::params![
                e.id(),
                e.aggregate_id(),
                e.event_type(),
                serde_json::to_string(e.data()).expect("json"),
                serde_json::to_string(e.metadata()).expect("json"),
                version
            ])
            .expect("insert");
    }
}

/// Each side runs four times, in the order synckit, raw, raw, synckit, each
/// time on a new file, and keeps its best: the machine's noise lowers a
/// figure, never raises it.
const TURNS: [bool; 4] = [false, true, true, false];

/// 1,000-event batches, one writer (SQLite has one).
pub async fn batch_append(dir: &Path, batches: u64) -> Row {
    let (mut ss, mut rs) = (Rates::default(), Rates::default());
    for (turn, raw_turn) in TURNS.into_iter().enumerate() {
        if raw_turn {
            rs.push(batch_raw(dir, &format!("batch-raw-{turn}.db"), batches).await);
        } else {
            ss.push(batch_synckit(dir, &format!("batch-synckit-{turn}.db"), batches).await);
        }
    }
    let (s, r) = (ss.best(), rs.best());
    Row {
        measurement: "SQLite batch append, 1,000-event batches".into(),
        synckit: report::rate(s),
        baseline: format!(
            "{} (raw prepared INSERTs, one transaction)",
            report::rate(r)
        ),
        ratio: s / r,
        goal: Goal::AtLeast(0.8),
        figures: json!({"synckit": s, "raw": r,
                        "rounds": {"synckit": ss.all(), "raw": rs.all()}}),
    }
}

/// `batches` batches (after one to warm up) of `BATCH` events.
fn batches_of(batches: u64) -> Vec<Vec<NewEvent>> {
    (0..=batches)
        .map(|b| workload::owned_events(b * BATCH, BATCH, 0, 1))
        .collect()
}

async fn batch_synckit(dir: &Path, file: &str, batches: u64) -> f64 {
    let store = store(dir, file).await;
    let mut all = batches_of(batches);
    store
        .append(ExpectedVersion::Any, all.remove(0))
        .await
        .expect("append");
    let started = Instant::now();
    for events in all {
        store
            .append(ExpectedVersion::Any, events)
            .await
            .expect("append");
    }
    let rate = (batches * BATCH) as f64 / started.elapsed().as_secs_f64();
    store.close().await.expect("close");
    rate
}

async fn batch_raw(dir: &Path, file: &str, batches: u64) -> f64 {
    let mut conn = raw(dir, file).await;
    let mut heads = Heads::default();
    let mut all = batches_of(batches);
    let mut write = |events: &[NewEvent], heads: &mut Heads| {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("begin");
        insert_rows(&tx, events, heads);
        tx.commit().expect("commit");
    };
    write(&all.remove(0), &mut heads);
    let started = Instant::now();
    for events in &all {
        write(events, &mut heads);
    }
    (batches * BATCH) as f64 / started.elapsed().as_secs_f64()
}

/// Single-event appends, each its own transaction, with the expected
/// version.
pub async fn single_append(dir: &Path, events: u64) -> Row {
    // Each side's p99 is that of its best round.
    let (mut ss, mut rs) = (Rates::default(), Rates::default());
    for (turn, raw_turn) in TURNS.into_iter().enumerate() {
        if raw_turn {
            rs.push_with(single_raw(dir, &format!("single-raw-{turn}.db"), events).await);
        } else {
            ss.push_with(single_synckit(dir, &format!("single-synckit-{turn}.db"), events).await);
        }
    }
    let ((s, sp), (r, rp)) = (ss.best_round(), rs.best_round());
    Row {
        measurement: "SQLite single appends, 1 writer".into(),
        synckit: format!("{}, p99 {}", report::rate(s), report::ms(sp)),
        baseline: format!(
            "{}, p99 {} (raw prepared INSERT)",
            report::rate(r),
            report::ms(rp)
        ),
        ratio: s / r,
        goal: Goal::AtLeast(0.8),
        figures: json!({"synckit": s, "synckit_p99_ms": ms(sp), "raw": r, "raw_p99_ms": ms(rp),
                        "rounds": {"synckit": ss.all(), "raw": rs.all()}}),
    }
}

/// A duration in milliseconds, for the JSON figures.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Events per second and p99 latency of `events` single appends (after
/// ten to warm up).
async fn single_synckit(dir: &Path, file: &str, events: u64) -> (f64, Duration) {
    let store = store(dir, file).await;
    let mut heads = Heads::default();
    let mut latencies = Vec::with_capacity(events as usize);
    let all = workload::owned_events(0, events + 10, 0, 1);
    let mut started = Instant::now();
    for (i, e) in all.into_iter().enumerate() {
        if i == 10 {
            started = Instant::now();
        }
        let expected = ExpectedVersion::Exact(heads.current(e.aggregate_id()) as u64);
        heads.next(e.aggregate_id());
        let t = Instant::now();
        store.append(expected, vec![e]).await.expect("append");
        latencies.push(t.elapsed());
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    store.close().await.expect("close");
    (rate, workload::percentile(&mut latencies.split_off(10), 99))
}

async fn single_raw(dir: &Path, file: &str, events: u64) -> (f64, Duration) {
    let mut conn = raw(dir, file).await;
    let mut heads = Heads::default();
    let mut latencies = Vec::with_capacity(events as usize);
    let all = workload::owned_events(0, events + 10, 0, 1);
    let mut started = Instant::now();
    for (i, e) in all.iter().enumerate() {
        if i == 10 {
            started = Instant::now();
        }
        let t = Instant::now();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("begin");
        insert_rows(&tx, std::slice::from_ref(e), &mut heads);
        tx.commit().expect("commit");
        latencies.push(t.elapsed());
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    (rate, workload::percentile(&mut latencies.split_off(10), 99))
}

/// Loads `events` events into typed structs. The file is seeded and
/// closed first (its write-ahead log checkpointed), then each side loads it
/// in turn ([`TURNS`]) and keeps its best.
pub async fn load(dir: &Path, events: u64) -> Row {
    let seeded = store(dir, "load.db").await;
    let mut first = 0;
    while first < events {
        let count = (events - first).min(10_000);
        seeded
            .append(
                ExpectedVersion::Any,
                workload::owned_events(first, count, 0, 1),
            )
            .await
            .expect("seed");
        first += count;
    }
    seeded.close().await.expect("close");
    let (mut ss, mut rs) = (Rates::default(), Rates::default());
    for raw_turn in TURNS {
        if raw_turn {
            rs.push(report::measure_load(events, async { load_raw(dir, events) }).await);
        } else {
            let store = store(dir, "load.db").await;
            ss.push(report::measure_load(events, load_synckit(&store)).await);
            store.close().await.expect("close");
        }
    }
    let (s, r) = (ss.best(), rs.best());
    let dir_text = dir.to_string_lossy();
    let peak = |side: &str| {
        report::probe_peak_rss(&[&format!("sqlite-{side}"), &dir_text, &events.to_string()])
    };
    let (s_peak, r_peak) = (peak("synckit"), peak("raw"));
    Row {
        measurement: format!(
            "SQLite load {} events into typed structs",
            report::rate(events as f64).trim_end_matches(" ev/s")
        ),
        synckit: format!("{}, peak RSS +{}", report::rate(s), report::mib(s_peak)),
        baseline: format!(
            "{}, peak RSS +{} (raw SELECT + serde_json)",
            report::rate(r),
            report::mib(r_peak)
        ),
        ratio: s / r,
        goal: Goal::AtLeast(0.8),
        figures: json!({"events": events, "synckit": s, "synckit_peak_rss_bytes": s_peak,
                        "raw": r, "raw_peak_rss_bytes": r_peak,
                        "rounds": {"synckit": ss.all(), "raw": rs.all()}}),
    }
}

/// synckit's typed load of every event: the sum of their quantities.
pub async fn load_synckit(store: &SqliteStore) -> u64 {
    store
        .read_stream_as::<OrderLinePlaced>(OrderLinePlaced::filter(), Cursor::START)
        .try_fold(0u64, |sum, e| async move {
            Ok(sum + u64::from(e.data.quantity))
        })
        .await
        .expect("load")
}

/// The same rows, their columns decoded as synckit gives them, by one
/// rusqlite SELECT decoding JSON straight into the types.
pub fn load_raw(dir: &Path, events: u64) -> u64 {
    let conn = rusqlite::Connection::open(dir.join("load.db")).expect("open");
    let mut select = conn
        .prepare(
            "SELECT version, stream_version, id, aggregate_id, event_type, data, metadata, created_at \
             FROM events WHERE event_type = 'OrderLinePlaced' ORDER BY version LIMIT ?1",
        )
        .expect("prepare");
    let mut rows = select.query([events as i64]).expect("select");
    let mut quantities = 0u64;
    while let Some(row) = rows.next().expect("row") {
        let e = RawEvent {
            version: row.get(0).expect("column"),
            stream_version: row.get(1).expect("column"),
            id: row.get(2).expect("column"),
            aggregate_id: row.get(3).expect("column"),
            event_type: row.get(4).expect("column"),
            data: serde_json::from_str(row.get_ref(5).expect("column").as_str().expect("text"))
                .expect("json"),
            metadata: serde_json::from_str(row.get_ref(6).expect("column").as_str().expect("text"))
                .expect("json"),
            created_at: chrono::DateTime::parse_from_rfc3339(
                row.get_ref(7).expect("column").as_str().expect("text"),
            )
            .expect("time")
            .with_timezone(&chrono::Utc),
        };
        quantities += u64::from(std::hint::black_box(&e).data.quantity);
    }
    quantities
}
