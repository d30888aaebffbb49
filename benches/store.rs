//! Per-operation timings of the stores (criterion): `cargo bench`.
//!
//! The comparison with raw SQL, peak memory and subscription latency live
//! in the report program (`cargo run --release --example bench`); these
//! track the cost of single operations across commits. PostgreSQL comes
//! from `DATABASE_URL`, else the local server, else a private cluster.

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use synckit::postgres::{Config, PgStore};
use synckit::sqlite::SqliteStore;
use synckit::{Cursor, Event, EventStore, ExpectedVersion, NewEvent};

// The report program's events, so that both measure the same payloads.
#[allow(dead_code)]
#[path = "../examples/bench/workload.rs"]
mod workload;

use workload::OrderLinePlaced;

fn batch(first: u64, n: u64) -> Vec<NewEvent> {
    (first..first + n)
        .map(|i| workload::new_event(i, i % workload::AGGREGATES))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Encoding and decoding of typed events, without a database.
fn typed(c: &mut Criterion) {
    let mut g = c.benchmark_group("typed");
    g.throughput(Throughput::Elements(1));
    let event = workload::order_line(7, 7);
    g.bench_function("encode", |b| {
        b.iter(|| NewEvent::from_event(std::hint::black_box(&event)).expect("encode"))
    });
    let data = NewEvent::from_event(&event).expect("encode").data().clone();
    g.bench_function("decode", |b| {
        b.iter(|| OrderLinePlaced::decode("OrderLinePlaced", std::hint::black_box(data.clone())))
    });
    let json = serde_json::to_vec(&data).expect("json");
    g.bench_function("decode from JSON text", |b| {
        b.iter(|| OrderLinePlaced::decode_json("OrderLinePlaced", std::hint::black_box(&json)))
    });
    g.finish();
}

/// Appends and reads on `store`, which holds at least 1,000 events.
fn store_operations<S: EventStore>(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    store: &S,
) {
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(5));
    let mut next = 1_000_000;
    for (label, n) in [("append 1 event", 1), ("append 1,000 events", 1000)] {
        g.throughput(Throughput::Elements(n));
        if n > 1 {
            g.sample_size(20);
        }
        g.bench_function(label, |b| {
            b.to_async(rt).iter_batched(
                || {
                    next += n;
                    batch(next, n)
                },
                |events| async {
                    store
                        .append(ExpectedVersion::Any, events)
                        .await
                        .expect("append")
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("read 1,000 events, typed", |b| {
        b.to_async(rt).iter(|| async {
            store
                .read(&OrderLinePlaced::filter(), Cursor::START, 1000)
                .await
                .expect("read")
                .into_iter()
                .map(|r| r.decode::<OrderLinePlaced>().expect("decode"))
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

/// A fresh database for the benchmarks; its connection string.
async fn fresh_database() -> String {
    let server = synckit_workspace::server();
    let admin = synckit_workspace::raw_client(&server.admin_url()).await;
    admin
        .batch_execute("DROP DATABASE IF EXISTS synckit_criterion WITH (FORCE)")
        .await
        .expect("drop");
    admin
        .batch_execute("CREATE DATABASE synckit_criterion")
        .await
        .expect("create");
    server.url("synckit_criterion")
}

fn postgres(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(async {
        let store = PgStore::connect(Config::new(fresh_database().await))
            .await
            .expect("connect");
        store
            .append(ExpectedVersion::Any, batch(0, 10_000))
            .await
            .expect("seed");
        store
    });
    store_operations(c, "postgres", &rt, &store);
    rt.block_on(store.close()).expect("close");
}

fn sqlite(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = rt.block_on(async {
        let store = SqliteStore::open(dir.path().join("bench.db"))
            .await
            .expect("open");
        store
            .append(ExpectedVersion::Any, batch(0, 10_000))
            .await
            .expect("seed");
        store
    });
    store_operations(c, "sqlite", &rt, &store);
    rt.block_on(store.close()).expect("close");
}

criterion_group!(benches, typed, postgres, sqlite);
criterion_main!(benches);
