//! Append throughput of the PostgreSQL store beside the fastest raw
//! tokio-postgres path on the same schema (trigger and indexes included),
//! measured in the same run on a fresh database each.
//!
//! Run: `cargo run --release --example bench` (uses `DATABASE_URL`, else
//! the local server; creates and drops its own databases).
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use serde_json::json;
use synckit::postgres::{Config, PgStore};
use synckit::{EventStore, ExpectedVersion, NewEvent};

const AGGREGATES: u64 = 1000;
/// Latency rounds run before measuring.
const WARM_UP: usize = 30;

fn payload(i: u64) -> serde_json::Value {
    json!({
        "order_id": format!("order-{}", i % AGGREGATES),
        "customer": "customer-0042",
        "sku": format!("SKU-{:06}", i * 7919 % 1_000_000),
        "quantity": i % 5 + 1,
        "unit_price_cents": 1999,
        "currency": "EUR",
        "note": "standard shipping, leave at the door",
    })
}

fn new_event(i: u64) -> NewEvent {
    NewEvent::new(
        format!("order-{}", i % AGGREGATES),
        "OrderLinePlaced",
        payload(i),
    )
}

async fn fresh_database(admin_url: &str, name: &str) -> String {
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .expect("connect to the admin database");
    tokio::spawn(conn);
    // One statement per call: DROP/CREATE DATABASE refuse to run in the
    // implicit transaction of a multi-statement query.
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop database");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let mut config: tokio_postgres::Config = admin_url.parse().expect("admin url");
    config.dbname(name);
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    format!(
        "host={host} port={} user={} dbname={name}",
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_user().unwrap_or("postgres")
    )
}

async fn store(url: &str) -> PgStore {
    let mut config = Config::new(url);
    config.max_open_conns = 40;
    config.max_idle_conns = 40;
    PgStore::connect(config).await.expect("connect")
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// Events per second of `batches` appends of 1,000 events by 2 writers.
async fn batch_synckit(url: &str, batches: u64) -> f64 {
    let store = store(url).await;
    let started = Instant::now();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for b in 0..batches / 2 {
                    let base = (w * batches + b) * 1000;
                    let events: Vec<_> = (base..base + 1000).map(new_event).collect();
                    store
                        .append(ExpectedVersion::Any, events)
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    (batches * 1000) as f64 / started.elapsed().as_secs_f64()
}

async fn batch_raw(url: &str, batches: u64) -> f64 {
    let _schema = store(url).await;
    let started = Instant::now();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let client = raw(&url).await;
                let insert = client
                    .prepare(
                        "INSERT INTO events (id, aggregate_id, event_type, data, metadata, stream_version) \
                         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::bigint[])",
                    )
                    .await
                    .expect("prepare");
                for b in 0..batches / 2 {
                    let base = (w * batches + b) * 1000;
                    let ids: Vec<String> = (base..base + 1000).map(|i| format!("raw-{i}")).collect();
                    let aggs: Vec<String> = (base..base + 1000).map(|i| format!("raw-{w}-{b}-{i}")).collect();
                    let types = vec!["OrderLinePlaced"; 1000];
                    let data: Vec<serde_json::Value> = (base..base + 1000).map(payload).collect();
                    let meta = vec![json!({}); 1000];
                    let sv = vec![1i64; 1000];
                    client
                        .execute(&insert, &[&ids, &aggs, &types, &data, &meta, &sv])
                        .await
                        .expect("insert");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    (batches * 1000) as f64 / started.elapsed().as_secs_f64()
}

/// Events per second and p99 latency of single appends by `writers`.
async fn single_synckit(url: &str, writers: u64, per_writer: u64) -> (f64, Duration) {
    let store = store(url).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_writer as usize);
                for i in 0..per_writer {
                    let n = w * per_writer + i;
                    let t = Instant::now();
                    store
                        .append(ExpectedVersion::Any, vec![new_event(n)])
                        .await
                        .expect("append");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    summarise(tasks, writers * per_writer, started).await
}

async fn single_raw(url: &str, writers: u64, per_writer: u64) -> (f64, Duration) {
    let _schema = store(url).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let client = raw(&url).await;
                let insert = client
                    .prepare(
                        "INSERT INTO events (id, aggregate_id, event_type, data, metadata, stream_version) \
                         VALUES ($1, $2, 'OrderLinePlaced', $3, '{}', 1)",
                    )
                    .await
                    .expect("prepare");
                let mut latencies = Vec::with_capacity(per_writer as usize);
                for i in 0..per_writer {
                    let n = w * per_writer + i;
                    let t = Instant::now();
                    client
                        .execute(&insert, &[&format!("raw-{n}"), &format!("raw-agg-{n}"), &payload(n)])
                        .await
                        .expect("insert");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    summarise(tasks, writers * per_writer, started).await
}

async fn summarise(
    tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
    total: u64,
    started: Instant,
) -> (f64, Duration) {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    all.sort();
    let p99 = all[(all.len() * 99 / 100).min(all.len() - 1)];
    (rate, p99)
}

fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

/// Append (from another store, as another process would) until a typed
/// live subscriber holds the event.
async fn latency_synckit(url: &str, samples: usize) -> Vec<Duration> {
    use futures::StreamExt;
    #[derive(serde::Serialize, serde::Deserialize, synckit::Event)]
    struct Ping {
        #[event(aggregate_id)]
        id: String,
        n: usize,
    }
    let subscriber = store(url).await;
    let writer = store(url).await;
    while !subscriber.is_listener_connected() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut live = <Ping as synckit::Event>::subscribe(&subscriber)
        .await
        .expect("subscribe");
    let mut out = Vec::with_capacity(samples);
    // The first rounds warm the pools and statement caches: not counted.
    for n in 0..samples + WARM_UP {
        let started = Instant::now();
        writer
            .append_event(
                ExpectedVersion::Any,
                &Ping {
                    id: "ping".into(),
                    n,
                },
            )
            .await
            .expect("append");
        let got = live.next().await.expect("open").expect("event");
        assert_eq!(got.data.n, n);
        if n >= WARM_UP {
            out.push(started.elapsed());
        }
    }
    out
}

/// A bare NOTIFY from one connection until another connection's LISTEN
/// receives it.
async fn latency_raw(url: &str, samples: usize) -> Vec<Duration> {
    use futures::StreamExt;
    let (listener, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    listener
        .batch_execute("LISTEN bench_ping")
        .await
        .expect("listen");
    let notifier = raw(url).await;
    let mut out = Vec::with_capacity(samples);
    for n in 0..samples + WARM_UP {
        let started = Instant::now();
        notifier
            .execute("SELECT pg_notify('bench_ping', $1)", &[&n.to_string()])
            .await
            .expect("notify");
        let got = rx.recv().await.expect("notification");
        assert_eq!(got, n.to_string());
        if n >= WARM_UP {
            out.push(started.elapsed());
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned());
    println!("| measurement | synckit | raw tokio-postgres | ratio |");
    println!("|---|---|---|---|");
    let batches = 40;
    let s = batch_synckit(&fresh_database(&admin, "synckit_bench_a").await, batches).await;
    let r = batch_raw(&fresh_database(&admin, "synckit_bench_b").await, batches).await;
    println!(
        "| 1,000-event batches, 2 writers | {s:.0} ev/s | {r:.0} ev/s (unnest) | {:.2} |",
        s / r
    );
    for writers in [1u64, 8, 32] {
        let per = 2000 / writers;
        let (s, sp) = single_synckit(
            &fresh_database(&admin, "synckit_bench_a").await,
            writers,
            per,
        )
        .await;
        let (r, rp) = single_raw(
            &fresh_database(&admin, "synckit_bench_b").await,
            writers,
            per,
        )
        .await;
        println!(
            "| single appends, {writers} writers | {s:.0} ev/s, p99 {:.2} ms | {r:.0} ev/s, p99 {:.2} ms | {:.2} |",
            sp.as_secs_f64() * 1e3,
            rp.as_secs_f64() * 1e3,
            s / r
        );
    }
    let url = fresh_database(&admin, "synckit_bench_a").await;
    let mut s = latency_synckit(&url, 300).await;
    let mut r = latency_raw(&url, 300).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (s50, s99) = (percentile(&mut s, 50), percentile(&mut s, 99));
    let (r50, r99) = (percentile(&mut r, 50), percentile(&mut r, 99));
    println!(
        "| append commit → typed live subscriber | p50 {:.2} ms, p99 {:.2} ms | p50 {:.2} ms, p99 {:.2} ms (bare NOTIFY → LISTEN) | p99 {:.2} |",
        ms(s50),
        ms(s99),
        ms(r50),
        ms(r99),
        s99.as_secs_f64() / r99.as_secs_f64()
    );
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("admin");
    tokio::spawn(conn);
    for name in ["synckit_bench_a", "synckit_bench_b"] {
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}
