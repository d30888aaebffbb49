//! synckit beside the fastest hand-written path, measured in one run on
//! this machine: one table on stdout, and the same as JSON under
//! `target/bench/` (`latest.json` and one file per run) for comparing
//! commits.
//!
//! Run: `cargo run --release --example bench` (PostgreSQL from
//! `DATABASE_URL`, else the local server, else a private cluster; it
//! creates and drops its own databases). `-- --help` lists the sizes;
//! `-- --only sqlite` runs the rows whose key matches.
#![allow(clippy::print_stdout)]

mod aggregate;
mod group;
mod http;
mod pg;
mod report;
mod sqlite;
mod upcast;
mod workload;

use clap::Parser;

#[derive(Parser)]
#[command(about = "synckit beside raw SQL on this machine, one table")]
struct Args {
    /// 1,000-event batches each of the two writers appends per batch row.
    #[arg(long, default_value_t = 30)]
    batches: u64,
    /// Single appends per single-append row (split among the writers).
    #[arg(long, default_value_t = 3000)]
    singles: u64,
    /// Events of the PostgreSQL load row.
    #[arg(long, default_value_t = 1_000_000)]
    load_events: u64,
    /// Stream subscriptions of the fan-out row.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Latency samples per latency row.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Events of the SQLite load row.
    #[arg(long, default_value_t = 500_000)]
    sqlite_load_events: u64,
    /// Commands of the aggregate rows (each side; a quarter per task in the
    /// contention row).
    #[arg(long, default_value_t = 400)]
    commands: u64,
    /// Events of the upcast row (each side).
    #[arg(long, default_value_t = 200_000)]
    upcast_events: u64,
    /// Events of the catch-up rows.
    #[arg(long, default_value_t = 100_000)]
    catch_up_events: u64,
    /// Events of the consumer group rows.
    #[arg(long, default_value_t = 20_000)]
    group_events: u64,
    /// Concurrent Server-Sent Events clients of the HTTP fan-out row.
    #[arg(long, default_value_t = 1000)]
    sse_clients: usize,
    /// Only the rows whose key contains one of these (keys: batch,
    /// small-batch, single, load, catch-up, latency, fanout, notify, listen,
    /// aggregate, group, rebalance, http, sqlite, upcast).
    #[arg(long)]
    only: Vec<String>,
    /// Internal: run one load alone and print its peak memory (the memory
    /// figures; the PostgreSQL loads also print their rate to stderr):
    /// `<pg|sqlite>-<synckit|raw> <url or directory> <events>`, or
    /// `fanout <url> <stream subscriptions>`; `pg-seed <url> <events>`
    /// fills an existing database for profiling a load alone.
    #[arg(long, hide = true, num_args = 3)]
    probe: Vec<String>,
}

/// One load (or one set of subscriptions) in this process, alone: prints
/// its resident set growth.
async fn probe(kind: &str, target: &str, events: u64) {
    let before = report::rss();
    match kind {
        // The rate goes to stderr, for profiling a load alone.
        "pg-synckit" => {
            eprintln!("rate {:.0}", pg::load_synckit(target, events).await);
        }
        "pg-raw" => {
            eprintln!("rate {:.0}", pg::load_raw(target, events).await);
        }
        "pg-seed" => {
            // A database to profile a load on (`perf record … --probe
            // pg-synckit <url> <events>`); the url's database must exist.
            synckit::EventStore::close(&pg::store(target).await)
                .await
                .expect("close");
            pg::seed(target, events).await;
            return;
        }
        "sqlite-synckit" => {
            let store = sqlite::store(std::path::Path::new(target), "load.db").await;
            report::measure_load(events, sqlite::load_synckit(&store)).await;
        }
        "sqlite-raw" => {
            sqlite::load_raw(std::path::Path::new(target), events);
        }
        "group-member" => {
            // `events` is the lease time to live in milliseconds here.
            group::member_process(target, std::time::Duration::from_millis(events)).await;
            return;
        }
        "fanout" => {
            // `events` stream subscriptions, and 10 global ones beside more
            // than one, as the fan-out row opens them.
            let streams = events as usize;
            let fan = pg::Fan::open(target, streams, if streams > 1 { 10 } else { 0 }).await;
            println!("{}", report::rss().saturating_sub(before));
            fan.close().await;
            return;
        }
        other => panic!("unknown probe {other}"),
    }
    println!("{}", report::peak_rss().saturating_sub(before));
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let [kind, target, events] = args.probe.as_slice() {
        probe(kind, target, events.parse().expect("an event count")).await;
        return;
    }
    let run =
        |key: &str| args.only.is_empty() || args.only.iter().any(|o| key.contains(o.as_str()));
    let bench = pg::Bench::connect().await;
    let machine = report::machine(&bench.server_version().await);
    println!("machine: {machine}\n");
    let mut table = report::Report::default();
    if run("batch") {
        table.push(bench.batch_append(args.batches).await);
    }
    if run("single") {
        for writers in [1, 8, 32] {
            for row in bench.single_append(writers, args.singles).await {
                table.push(row);
            }
        }
    }
    if run("small-batch") {
        for row in bench.small_batches(args.batches * 10).await {
            table.push(row);
        }
    }
    if run("load") {
        table.push(bench.load(args.load_events).await);
    }
    if run("catch-up") {
        for row in bench.catch_up(args.catch_up_events).await {
            table.push(row);
        }
    }
    if run("latency") {
        table.push(bench.commit_to_subscriber(args.samples).await);
    }
    if run("fanout") {
        table.push(bench.many_subscriptions(args.streams, args.samples).await);
    }
    if run("notify") {
        table.push(bench.notify_cost(args.batches).await);
    }
    if run("listen") {
        table.push(bench.listening_cost(8, args.singles).await);
    }
    if run("aggregate") {
        table.push(aggregate::decide_on_long_streams(&bench, args.commands).await);
        table.push(aggregate::contention(&bench, args.commands / 4).await);
    }
    if run("group") {
        for row in group::throughput(&bench, args.group_events).await {
            table.push(row);
        }
    }
    if run("rebalance") {
        for row in group::rebalance(&bench).await {
            table.push(row);
        }
    }
    if run("http") {
        table.push(http::append_throughput(&bench, args.singles).await);
        table.push(http::append_to_client(&bench, args.samples).await);
        table.push(http::many_sse_clients(&bench, args.sse_clients, args.samples / 5).await);
    }
    bench.drop_databases().await;
    if run("sqlite") {
        let dir = tempfile::tempdir().expect("temporary directory");
        table.push(sqlite::batch_append(dir.path(), args.batches * 2).await);
        table.push(sqlite::single_append(dir.path(), args.singles).await);
        table.push(sqlite::load(dir.path(), args.sqlite_load_events).await);
    }
    if run("upcast") {
        let dir = tempfile::tempdir().expect("temporary directory");
        table.push(upcast::typed_load(dir.path(), args.upcast_events).await);
    }
    match table.write_json(machine) {
        Ok(path) => println!("\nwritten to {}", path.display()),
        Err(e) => println!("\nnot written: {e}"),
    }
}
