//! The HTTP face on PostgreSQL, beside the same store in process, in one
//! run: appends through `RemoteStore` against appends on the store, append
//! → typed subscriber through the client against the same subscription in
//! process, and one server feeding 1,000 Server-Sent Events clients against
//! one feeding one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::json;
use synckit::client::{Config, RemoteStore};
use synckit::postgres::PgStore;
use synckit::{EventStore, ExpectedVersion, Filter, NewEvent, Start, SubscriptionSource, server};

use crate::pg::{Bench, store, thousands};
use crate::report::{self, Goal, Row};
use crate::workload;

/// Samples left out at the start of each latency series.
const WARM_UP: usize = 30;

/// Serves `store` to anyone on a free port; its base address.
async fn serve(store: PgStore) -> String {
    let limits = server::Limits::default().with_live_connections(2048);
    let app = server::router(store)
        .allow_anonymous()
        .limits(limits)
        .build()
        .expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// `total` single-event appends by `writers` tasks; events per second.
async fn appends<S: EventStore>(store: &S, writers: u64, total: u64) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..total / writers {
                    let event =
                        NewEvent::new(format!("h-{w}-{}", i % 50), "Tick", json!({ "i": i }));
                    store
                        .append(ExpectedVersion::Any, vec![event])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    (total / writers * writers) as f64 / started.elapsed().as_secs_f64()
}

/// Single appends over HTTP by 8 clients, against the same appends on the
/// store the server serves.
pub async fn append_throughput(bench: &Bench, total: u64) -> Row {
    const WRITERS: u64 = 8;
    let (mut remote_rates, mut direct_rates) = (report::Rates::default(), report::Rates::default());
    for round in 0..2 {
        for which in if round == 0 { [0, 1] } else { [1, 0] } {
            let url = bench.fresh("synckit_bench_a").await;
            let direct = store(&url).await;
            if which == 0 {
                let remote = RemoteStore::connect(Config::new(serve(direct.clone()).await))
                    .await
                    .expect("connect");
                remote_rates.push(appends(&remote, WRITERS, total).await);
                remote.close().await.expect("close");
            } else {
                direct_rates.push(appends(&direct, WRITERS, total).await);
            }
            direct.close().await.expect("close");
        }
    }
    let (r, d) = (remote_rates.best(), direct_rates.best());
    Row {
        measurement: format!("single appends over HTTP (RemoteStore), {WRITERS} clients"),
        synckit: report::rate(r),
        baseline: format!(
            "{} (the same appends on the store in process)",
            report::rate(d)
        ),
        ratio: r / d,
        goal: Goal::Reported,
        figures: json!({ "http_per_s": r, "direct_per_s": d }),
    }
}

/// Append → typed subscriber through `RemoteStore`, against the same
/// subscription on the store in process, sample by sample.
pub async fn append_to_client(bench: &Bench, samples: usize) -> Row {
    let url = bench.fresh("synckit_bench_a").await;
    let direct = store(&url).await;
    let remote = RemoteStore::connect(Config::new(serve(direct.clone()).await))
        .await
        .expect("connect");
    let mut near = direct
        .subscribe(Filter::stream("latency"), Start::Now)
        .await
        .expect("subscribe");
    let mut far = remote
        .subscribe(Filter::stream("latency"), Start::Now)
        .await
        .expect("subscribe");
    let (mut n, mut f) = (Vec::new(), Vec::new());
    for i in 0..samples + WARM_UP {
        let started = Instant::now();
        let event = NewEvent::new("latency", "Tick", json!({ "i": i }));
        direct
            .append(ExpectedVersion::Any, vec![event])
            .await
            .expect("append");
        // Both are read as they arrive: whichever comes first is timed
        // first.
        let (mut near_at, mut far_at) = (None, None);
        while near_at.is_none() || far_at.is_none() {
            tokio::select! {
                e = near.next(), if near_at.is_none() => {
                    e.expect("open").expect("event");
                    near_at = Some(started.elapsed());
                }
                e = far.next(), if far_at.is_none() => {
                    e.expect("open").expect("event");
                    far_at = Some(started.elapsed());
                }
            }
        }
        if i >= WARM_UP {
            n.extend(near_at);
            f.extend(far_at);
        }
    }
    remote.close().await.expect("close");
    direct.close().await.expect("close");
    let (f50, f99) = workload::p50_p99(&mut f);
    let (n50, n99) = workload::p50_p99(&mut n);
    Row {
        measurement: "append → typed subscriber through RemoteStore (SSE wake-up, page read)"
            .into(),
        synckit: format!("p50 {}, p99 {}", report::ms(f50), report::ms(f99)),
        baseline: format!(
            "p50 {}, p99 {} (the same subscription in process)",
            report::ms(n50),
            report::ms(n99)
        ),
        ratio: f99.as_secs_f64() / n99.as_secs_f64(),
        goal: Goal::Reported,
        figures: json!({"client_p50_ms": f50.as_secs_f64() * 1e3, "client_p99_ms": f99.as_secs_f64() * 1e3,
                        "in_process_p50_ms": n50.as_secs_f64() * 1e3, "in_process_p99_ms": n99.as_secs_f64() * 1e3}),
    }
}

/// `clients` raw SSE connections to `url`'s live feed, each counting the
/// events it receives; returns the receivers of each arrival.
async fn open_feeds(
    url: &str,
    after: u64,
    clients: usize,
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    tokio::sync::mpsc::UnboundedReceiver<Instant>,
) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let http = reqwest::Client::new();
    let opened = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (http, sender, opened) = (http.clone(), sender.clone(), Arc::clone(&opened));
        let url = format!("{url}/events/live?after={after}");
        tasks.push(tokio::spawn(async move {
            let response = http.get(url).send().await.expect("live feed");
            assert!(
                response.status().is_success(),
                "live feed: {}",
                response.status()
            );
            let mut events = response.bytes_stream().eventsource();
            opened.wait().await;
            while let Some(Ok(event)) = events.next().await {
                // Stored events have an id; `caught-up` has none.
                if !event.id.is_empty() && event.event == "message" {
                    let _ = sender.send(Instant::now());
                }
            }
        }));
    }
    opened.wait().await;
    (tasks, receiver)
}

/// Append → the last of `clients` SSE clients, per append: p50 and p99.
async fn fan_out(
    url: &str,
    direct: &PgStore,
    clients: usize,
    samples: usize,
) -> (Duration, Duration) {
    let head = direct.latest_version().await.expect("head").version();
    let (tasks, mut arrivals) = open_feeds(url, head, clients).await;
    let mut last = Vec::with_capacity(samples);
    for i in 0..samples + WARM_UP {
        let started = Instant::now();
        let event = NewEvent::new("fan", "Tick", json!({ "i": i }));
        direct
            .append(ExpectedVersion::Any, vec![event])
            .await
            .expect("append");
        let mut latest = started;
        for _ in 0..clients {
            latest = latest.max(arrivals.recv().await.expect("a client"));
        }
        if i >= WARM_UP {
            last.push(latest - started);
        }
    }
    for task in tasks {
        task.abort();
    }
    workload::p50_p99(&mut last)
}

/// One server feeding `clients` Server-Sent Events clients, against the
/// same server feeding one: append → every client.
pub async fn many_sse_clients(bench: &Bench, clients: usize, samples: usize) -> Row {
    let url = bench.fresh("synckit_bench_a").await;
    let direct = store(&url).await;
    let base = serve(direct.clone()).await;
    let before = report::rss();
    let (m50, m99) = fan_out(&base, &direct, clients, samples).await;
    let grown = report::rss().saturating_sub(before);
    let (o50, o99) = fan_out(&base, &direct, 1, samples).await;
    direct.close().await.expect("close");
    Row {
        measurement: format!(
            "{} concurrent SSE clients on one server, append → last client",
            thousands(clients as u64)
        ),
        synckit: format!(
            "p50 {}, p99 {} (RSS +{} with the clients)",
            report::ms(m50),
            report::ms(m99),
            report::mib(grown)
        ),
        baseline: format!(
            "p50 {}, p99 {} (one client)",
            report::ms(o50),
            report::ms(o99)
        ),
        ratio: m99.as_secs_f64() / o99.as_secs_f64(),
        goal: Goal::Reported,
        figures: json!({"clients": clients, "many_p50_ms": m50.as_secs_f64() * 1e3, "many_p99_ms": m99.as_secs_f64() * 1e3,
                        "one_p50_ms": o50.as_secs_f64() * 1e3, "one_p99_ms": o99.as_secs_f64() * 1e3, "rss_bytes": grown}),
    }
}
