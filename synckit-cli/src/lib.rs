//! `synckit`: run migrations, tail events live (alone or as a consumer
//! group member), show statistics, durable subscriptions, consumer groups
//! and parked events (and retry or skip those), serve the store over HTTP
//! and Server-Sent Events (`synckit serve`), copy a SQLite store into
//! PostgreSQL, and check that every stored event still decodes into an
//! application's event types.
//!
//! The `synckit` binary is [`run`] with no event types. An application
//! builds its own, with the types it reads, so that `schema check` can
//! decode its events (upcasting included) before a deployment:
//!
//! ```no_run
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize, synckit::Event)]
//! # #[event(aggregate_id = "id")]
//! # enum AccountEvent { Opened { id: String } }
//! // src/bin/synckit.rs of the application
//! use synckit::evolution::EventTypes;
//!
//! fn main() -> std::process::ExitCode {
//!     match EventTypes::new().with::<AccountEvent>() {
//!         Ok(types) => synckit_cli::run(types),
//!         Err(e) => {
//!             eprintln!("synckit: {e}");
//!             std::process::ExitCode::FAILURE
//!         }
//!     }
//! }
//! ```
//!
//! The database comes from `--database-url` or `DATABASE_URL`: a
//! `postgres://` URL (or key=value string), or a SQLite file path
//! (optionally `sqlite://path`). Errors are one line on stderr and a
//! non-zero exit code.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::StreamExt;
use synckit::evolution::{EventTypes, SchemaReport};
use synckit::postgres::{Config, PgStore};
use synckit::sqlite::{self, SqliteStore};
use synckit::{Cursor, EventStore, Filter, Recorded, Start, StoreConfig, SubscriptionSource};

#[derive(Parser)]
#[command(
    name = "synckit",
    version,
    about = "The synckit event store's command-line tool"
)]
struct Cli {
    /// A postgres:// URL, a key=value connection string, or a SQLite file path.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded migrations (idempotent); print what was applied.
    Migrate,
    /// Serve the store over HTTP and Server-Sent Events (the routes of
    /// `synckit::server`) until Ctrl-C or SIGTERM.
    Serve {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Bearer tokens, one per line: `TOKEN PATTERN...`, a pattern being
        /// an aggregate id, a prefix ending in `*`, or `*` (every stream).
        #[arg(long, required_unless_present = "allow_anonymous")]
        token_file: Option<std::path::PathBuf>,
        /// Serve every stream to anyone, unauthenticated.
        #[arg(long, conflicts_with = "token_file")]
        allow_anonymous: bool,
        /// An origin whose pages may call the API from a browser (CORS),
        /// as `https://app.example.com`; repeatable; `*` for any.
        #[arg(long = "allow-origin", value_name = "ORIGIN")]
        allow_origins: Vec<String>,
    },
    /// Print events as they are committed, until Ctrl-C.
    Tail {
        /// Only this aggregate's events.
        #[arg(long)]
        stream: Option<String>,
        /// Only events of this type (repeatable).
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// Where to start: `beginning`, `now` (the default), or a cursor
        /// (a version).
        #[arg(long, conflicts_with = "group")]
        from: Option<String>,
        /// Tail as a member of this consumer group: each event is printed
        /// by one live member of the group, after the group's checkpoints.
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// The group's partition count (default: its live members' count).
        #[arg(long, requires = "group", value_name = "N")]
        partitions: Option<u32>,
        /// One JSON object per line instead of readable lines.
        #[arg(long)]
        json: bool,
    },
    /// Event count, latest version, streams, counts per type, notification
    /// queue usage, pool figures.
    Stats,
    /// Copy a SQLite store into the PostgreSQL database (resumable, verified).
    ImportSqlite {
        /// The SQLite file.
        file: std::path::PathBuf,
    },
    /// The stored events against this binary's event types.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Durable subscriptions: checkpoint, lag behind the head, and the
    /// consumer holding each one's lease.
    Subscriptions,
    /// Consumer groups: members, and each partition's owner, checkpoint
    /// and lag.
    Groups,
    /// Parked events: the events a subscription's handler kept failing on,
    /// and the later events of their aggregates waiting behind them.
    /// Without a subcommand, lists them.
    Parked {
        /// Only this durable subscription's (or group's) parked events.
        #[arg(long, global = true, value_name = "NAME")]
        subscription: Option<String>,
        #[command(subcommand)]
        command: Option<ParkedCommand>,
    },
}

#[derive(Subcommand)]
enum ParkedCommand {
    /// Hand the failed event at VERSION to its running subscription's
    /// handler again (then the events waiting behind it).
    Retry {
        /// The parked event's version.
        version: u64,
    },
    /// Drop the parked event at VERSION (it is never handled); the events
    /// waiting behind it go to the handler.
    Skip {
        /// The parked event's version.
        version: u64,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Decode (upcasting included) every stored event of this binary's
    /// event types, changing nothing; report per type and schema version
    /// how many decode and which do not. Exits non-zero when any fails.
    Check {
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

enum Database {
    Postgres(Config),
    Sqlite(sqlite::Config),
}

/// The store the target names ([`StoreConfig::parse`]: the same rules as
/// every synckit application).
fn database(url: Option<String>) -> Result<Database, String> {
    let url = url
        .filter(|u| !u.trim().is_empty())
        .ok_or("no database: pass --database-url or set DATABASE_URL")?;
    match StoreConfig::parse(&url).map_err(|e| e.to_string())? {
        StoreConfig::Postgres(config) => Ok(Database::Postgres(config)),
        StoreConfig::Sqlite(config) => Ok(Database::Sqlite(config)),
        _ => Err(format!(
            "{url}: the CLI works on a PostgreSQL database or a SQLite file"
        )),
    }
}

fn start(from: &str) -> Result<Start, String> {
    match from {
        "beginning" => Ok(Start::Beginning),
        "now" => Ok(Start::Now),
        cursor => Cursor::parse(cursor)
            .map(Start::After)
            .map_err(|e| format!("--from: {e}; use beginning, now or a version")),
    }
}

fn line(event: &Recorded, json: bool) -> String {
    if json {
        serde_json::to_string(event).unwrap_or_default()
    } else {
        format!(
            "{:>8}  {}  {}  {}  {}",
            event.version,
            event.created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            event.aggregate_id,
            event.event_type,
            event.data
        )
    }
}

async fn tail<S: SubscriptionSource>(
    store: S,
    filter: Filter,
    start: Start,
    json: bool,
    is_connected: impl Fn() -> Option<bool>,
) -> Result<(), String> {
    let events = store
        .subscribe(filter, start)
        .await
        .map_err(|e| e.to_string())?;
    let tailed = follow(events, json, is_connected).await;
    // Gives back what a group member owns at once, for the others.
    let _ = store.close().await;
    tailed
}

async fn follow(
    mut events: synckit::Subscription,
    json: bool,
    is_connected: impl Fn() -> Option<bool>,
) -> Result<(), String> {
    let mut stdout = std::io::stdout();
    let mut was_connected = is_connected();
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = ticks.tick() => {
                let now = is_connected();
                if now != was_connected {
                    match now {
                        Some(false) => eprintln!("synckit: connection lost; reconnecting"),
                        Some(true) => eprintln!("synckit: reconnected; catching up"),
                        None => {}
                    }
                    was_connected = now;
                }
            }
            item = events.next() => match item {
                Some(Ok(event)) => {
                    // A closed pipe (`| head`) ends the tail quietly.
                    if writeln!(stdout, "{}", line(&event, json)).and_then(|()| stdout.flush()).is_err() {
                        return Ok(());
                    }
                    if events.checkpoint_name().is_some() {
                        // A group member: printed is handled.
                        match events.commit().await {
                            Ok(()) | Err(synckit::Error::LeaseLost { .. }) => {}
                            Err(e) => eprintln!("synckit: {e}; the event may print again"),
                        }
                    }
                }
                Some(Err(e)) if e.is_transient() => eprintln!("synckit: {e}; retrying"),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(()),
            }
        }
    }
}

/// Serves `store` on `listen` until Ctrl-C or SIGTERM; then closes the
/// store (ending the live feeds) and lets the server finish.
async fn serve<S: SubscriptionSource>(
    store: S,
    listen: &str,
    token_file: Option<std::path::PathBuf>,
    cors: Option<tower_http::cors::CorsLayer>,
) -> Result<(), String> {
    let mut builder = synckit::server::router(store.clone());
    if let Some(cors) = cors {
        builder = builder.cors(cors);
    }
    let builder = match token_file {
        Some(path) => builder
            .policy(synckit::server::TokenPolicy::from_file(&path).map_err(|e| e.to_string())?),
        None => builder.allow_anonymous(),
    };
    let app = builder.build().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{address}");
    let _ = std::io::stdout().flush();
    let closing = store.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stopped().await;
            // Ends the live feeds, which would hold the shutdown forever.
            let _ = closing.close().await;
        })
        .await
        .map_err(|e| format!("the server failed: {e}"))?;
    store.close().await.map_err(|e| e.to_string())
}

/// The CORS layer of `--allow-origin`: what a browser page needs to read,
/// follow and append (the methods, `Authorization`, `Content-Type` and
/// `Last-Event-ID`); `None` without origins.
fn cors(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>, String> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let parsed = origins
            .iter()
            .map(|origin| {
                let valid = origin.starts_with("http://") || origin.starts_with("https://");
                match HeaderValue::from_str(origin.trim_end_matches('/')) {
                    Ok(value) if valid => Ok(value),
                    _ => Err(format!(
                        "--allow-origin {origin:?} is not an origin (scheme://host[:port]) or *"
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(parsed)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
            ]),
    ))
}

/// Ctrl-C, or SIGTERM where there is one.
async fn stopped() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run_command(cli: Cli, types: &EventTypes) -> Result<(), String> {
    if let Command::Schema {
        command: SchemaCommand::Check { json },
    } = cli.command
    {
        return schema_check(cli.database_url, types, json).await;
    }
    let db = database(cli.database_url)?;
    match (cli.command, db) {
        (Command::Migrate, Database::Postgres(config)) => {
            let report = synckit::postgres::migrate(&config)
                .await
                .map_err(|e| e.to_string())?;
            print_applied(&report.applied);
        }
        (Command::Migrate, Database::Sqlite(config)) => {
            let report = synckit::sqlite::migrate(&config)
                .await
                .map_err(|e| e.to_string())?;
            print_applied(&report.applied);
        }
        (
            Command::Serve {
                listen,
                token_file,
                allow_origins,
                ..
            },
            db,
        ) => {
            let cors = cors(&allow_origins)?;
            match db {
                Database::Postgres(config) => {
                    let store = PgStore::connect(config).await.map_err(|e| e.to_string())?;
                    serve(store, &listen, token_file, cors).await?;
                }
                Database::Sqlite(config) => {
                    let store = SqliteStore::connect(config)
                        .await
                        .map_err(|e| e.to_string())?;
                    serve(store, &listen, token_file, cors).await?;
                }
            }
        }
        (
            Command::Tail {
                stream,
                types,
                from,
                group,
                partitions,
                json,
            },
            db,
        ) => {
            let mut filter = Filter::all();
            if let Some(stream) = stream {
                filter = filter.and_streams([stream]);
            }
            if !types.is_empty() {
                filter = filter.and_types(types);
            }
            let start = match group {
                Some(name) => Start::Group(synckit::Group::new(
                    name.clone(),
                    match partitions {
                        Some(n) => n,
                        None => live_partitions(&db, &name).await?,
                    },
                )),
                None => start(from.as_deref().unwrap_or("now"))?,
            };
            match db {
                Database::Postgres(mut config) => {
                    config.max_open_conns = 3;
                    config.min_idle_conns = 1;
                    config.reconnect_interval = Duration::from_millis(500);
                    config.max_reconnect_attempts = u32::MAX;
                    config.notification_timeout = Duration::from_secs(5);
                    let store = PgStore::connect(config).await.map_err(|e| e.to_string())?;
                    let probe = store.clone();
                    tail(store, filter, start, json, move || {
                        Some(probe.is_listener_connected())
                    })
                    .await?;
                }
                Database::Sqlite(config) => {
                    let store = SqliteStore::connect(config)
                        .await
                        .map_err(|e| e.to_string())?;
                    tail(store, filter, start, json, || None).await?;
                }
            }
        }
        (Command::Stats, Database::Postgres(config)) => {
            let store = PgStore::connect(config).await.map_err(|e| e.to_string())?;
            let s = store.summary().await.map_err(|e| e.to_string())?;
            println!("events:                   {}", s.events);
            println!("latest version:           {}", s.latest_version);
            println!("streams:                  {}", s.streams);
            if let Some(usage) = s.notification_queue_usage {
                println!("notification queue usage: {:.4}%", usage * 100.0);
            }
            let pool = store.stats().map_err(|e| e.to_string())?;
            println!(
                "pool:                     {} open of {} ({} in use, {} idle, {} waiting)",
                pool.open, pool.max_open, pool.in_use, pool.idle, pool.waiting
            );
            print_types(&s.per_type);
        }
        (Command::Stats, Database::Sqlite(config)) => {
            let store = SqliteStore::connect(config)
                .await
                .map_err(|e| e.to_string())?;
            let s = store.summary().await.map_err(|e| e.to_string())?;
            println!("events:         {}", s.events);
            println!("latest version: {}", s.latest_version);
            println!("streams:        {}", s.streams);
            print_types(&s.per_type);
        }
        (Command::Subscriptions, Database::Postgres(config)) => {
            let store = PgStore::connect(config).await.map_err(|e| e.to_string())?;
            print_subscriptions(&store.subscriptions().await.map_err(|e| e.to_string())?);
        }
        (Command::Subscriptions, Database::Sqlite(config)) => {
            let store = SqliteStore::connect(config)
                .await
                .map_err(|e| e.to_string())?;
            print_subscriptions(&store.subscriptions().await.map_err(|e| e.to_string())?);
        }
        (Command::Groups, Database::Postgres(config)) => {
            let store = PgStore::connect(config).await.map_err(|e| e.to_string())?;
            print_groups(&store.groups().await.map_err(|e| e.to_string())?);
        }
        (Command::Groups, Database::Sqlite(config)) => {
            let store = SqliteStore::connect(config)
                .await
                .map_err(|e| e.to_string())?;
            print_groups(&store.groups().await.map_err(|e| e.to_string())?);
        }
        (
            Command::Parked {
                subscription,
                command,
            },
            Database::Postgres(config),
        ) => {
            let store = PgStore::connect(config).await.map_err(|e| e.to_string())?;
            parked(store, subscription, command).await?;
        }
        (
            Command::Parked {
                subscription,
                command,
            },
            Database::Sqlite(config),
        ) => {
            let store = SqliteStore::connect(config)
                .await
                .map_err(|e| e.to_string())?;
            parked(store, subscription, command).await?;
        }
        (Command::ImportSqlite { file }, Database::Postgres(config)) => {
            let source = SqliteStore::connect(sqlite::Config::new(&file))
                .await
                .map_err(|e| e.to_string())?;
            let total = source.summary().await.map_err(|e| e.to_string())?.events;
            let target = PgStore::connect(config).await.map_err(|e| e.to_string())?;
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let bar_in = bar.clone();
            let report = target
                .import_from(&source, &file.display().to_string(), move |p| {
                    bar_in.set_position(p.copied)
                })
                .await
                .map_err(|e| e.to_string())?;
            bar.finish_and_clear();
            println!(
                "copied {} events now; source {} and target {} events, checksums {} = {}",
                report.copied_now,
                report.source_count,
                report.target_count,
                report.source_checksum,
                report.target_checksum
            );
        }
        (Command::ImportSqlite { .. }, Database::Sqlite(_)) => {
            return Err(
                "import-sqlite copies into PostgreSQL: pass a postgres:// --database-url"
                    .to_owned(),
            );
        }
        (Command::Schema { .. }, _) => unreachable!("handled above"),
    }
    Ok(())
}

async fn schema_check(url: Option<String>, types: &EventTypes, json: bool) -> Result<(), String> {
    if types.is_empty() {
        return Err("this synckit binary knows no event types: build the application's own with synckit_cli::run(EventTypes::new().with::<YourEvent>()?) and run its `schema check`".to_owned());
    }
    // Checked like every other command's target, then opened read-only in
    // effect: the check only reads.
    database(url.clone())?;
    let url = url.unwrap_or_default();
    let store = synckit::open(&url).await.map_err(|e| e.to_string())?;
    let report = types.check(&store).await.map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print_report(&report);
    }
    match report.failures() {
        0 => Ok(()),
        n => Err(format!(
            "{n} stored event{} of these types do not decode",
            if n == 1 { "" } else { "s" }
        )),
    }
}

fn print_report(report: &SchemaReport) {
    for t in &report.types {
        let aliases = if t.aliases.is_empty() {
            String::new()
        } else {
            format!(", also read as {}", t.aliases.join(", "))
        };
        println!(
            "{} ({}, schema version {}{aliases})",
            t.event_type, t.rust_type, t.current_version
        );
        if t.versions.is_empty() {
            println!("  no stored events");
        }
        for v in &t.versions {
            let at = v
                .schema_version
                .map_or_else(|| "not a version".to_owned(), |n| n.to_string());
            println!(
                "  schema version {at}: {} decode, {} fail",
                v.decoded,
                v.failed.len()
            );
            for f in &v.failed {
                println!(
                    "    version {} id {} ({}): {}",
                    f.version,
                    f.id,
                    f.stored_type.as_deref().unwrap_or("?"),
                    f.error
                );
            }
        }
    }
    for f in &report.unreadable {
        println!("unreadable: version {} id {}: {}", f.version, f.id, f.error);
    }
    println!("{} decode, {} fail", report.decoded(), report.failures());
}

fn print_applied(applied: &[String]) {
    if applied.is_empty() {
        println!("up to date: no migration applied");
    }
    for m in applied {
        println!("applied {m}");
    }
}

/// One line per durable subscription: name, checkpoint, lag, lease.
fn print_subscriptions(subscriptions: &[synckit::sqlite::DurableSubscription]) {
    if subscriptions.is_empty() {
        println!("no durable subscriptions");
    }
    for s in subscriptions {
        let position = s
            .position
            .map_or_else(|| "none".to_owned(), |p| p.to_string());
        let lease = match &s.holder {
            Some(h) => format!(
                "held by {} (token {}, {:.1} s left)",
                h.owner,
                h.token,
                h.expires_in.as_secs_f64()
            ),
            None => "no holder".to_owned(),
        };
        println!("{}  checkpoint {position}  lag {}  {lease}", s.name, s.lag);
    }
}

/// The partition count of group `name` as its live members define it.
async fn live_partitions(db: &Database, name: &str) -> Result<u32, String> {
    let groups = match db {
        Database::Postgres(config) => {
            let store = PgStore::connect(config.clone())
                .await
                .map_err(|e| e.to_string())?;
            let groups = store.groups().await;
            let _ = store.close().await;
            groups
        }
        Database::Sqlite(config) => {
            let store = SqliteStore::connect(config.clone())
                .await
                .map_err(|e| e.to_string())?;
            let groups = store.groups().await;
            let _ = store.close().await;
            groups
        }
    }
    .map_err(|e| e.to_string())?;
    groups
        .iter()
        .find(|g| g.name == name && !g.members.is_empty())
        .map(|g| g.partitions)
        .ok_or_else(|| {
            format!("group {name} has no live member to take its partition count from: pass --partitions N")
        })
}

/// Per group: a line, a line per member, a line per partition.
fn print_groups(groups: &[synckit::ConsumerGroup]) {
    if groups.is_empty() {
        println!("no consumer groups");
    }
    for g in groups {
        println!(
            "{}  {} partitions  {} live members",
            g.name,
            g.partitions,
            g.members.len()
        );
        for m in &g.members {
            let parts: Vec<String> = m.partitions.iter().map(u32::to_string).collect();
            println!(
                "  member {}  partitions [{}]  {:.1} s left",
                m.id,
                parts.join(","),
                m.expires_in.as_secs_f64()
            );
        }
        for p in &g.parts {
            let position = p
                .position
                .map_or_else(|| "none".to_owned(), |n| n.to_string());
            let owner = p.owner.as_deref().unwrap_or("no owner");
            println!(
                "  partition {}  checkpoint {position}  lag {}  {owner}",
                p.partition, p.lag
            );
        }
    }
}

/// `synckit parked`: lists, retries or skips parked events.
async fn parked<S: SubscriptionSource>(
    store: S,
    subscription: Option<String>,
    command: Option<ParkedCommand>,
) -> Result<(), String> {
    let outcome = parked_on(&store, subscription, command).await;
    let _ = store.close().await;
    outcome
}

async fn parked_on<S: SubscriptionSource>(
    store: &S,
    subscription: Option<String>,
    command: Option<ParkedCommand>,
) -> Result<(), String> {
    let listed = store
        .parked(subscription.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let (retry, version) = match command {
        None => {
            print_parked(&listed);
            return Ok(());
        }
        Some(ParkedCommand::Retry { version }) => (true, version),
        Some(ParkedCommand::Skip { version }) => (false, version),
    };
    // The subscription it is parked in: the one named, or the only one
    // with an event parked at that version.
    let mut names: Vec<&str> = listed
        .iter()
        .filter(|p| p.version == version)
        .map(|p| p.subscription.as_str())
        .collect();
    names.dedup();
    let name = match names.as_slice() {
        [name] => (*name).to_owned(),
        [] => {
            return Err(match &subscription {
                Some(name) => format!("no event is parked at version {version} in {name}"),
                None => format!("no event is parked at version {version}"),
            });
        }
        several => {
            return Err(format!(
                "events at version {version} are parked in {}: pass --subscription NAME",
                several.join(", ")
            ));
        }
    };
    if retry {
        let waiting = listed.iter().any(|p| {
            p.subscription == name
                && p.version == version
                && p.status == synckit::ParkedStatus::Waiting
        });
        if !store
            .retry_parked(&name, version)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err(if waiting {
                format!(
                    "version {version} in {name} waits behind an earlier event of its aggregate: retry or skip that one"
                )
            } else {
                format!("version {version} in {name} is already to be retried")
            });
        }
        println!("version {version} in {name}: to be retried by the running subscription");
    } else {
        if !store
            .skip_parked(&name, version)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err(format!("no event is parked at version {version} in {name}"));
        }
        println!("version {version} in {name}: skipped");
    }
    Ok(())
}

/// One line per parked event.
fn print_parked(parked: &[synckit::ParkedEvent]) {
    if parked.is_empty() {
        println!("no parked events");
    }
    for p in parked {
        println!(
            "{}  version {}  aggregate {}  id {}  {}  attempts {}  parked {}  {}",
            p.subscription,
            p.version,
            p.aggregate_id,
            p.id,
            p.status,
            p.attempts,
            p.parked_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            p.error
        );
    }
}

fn print_types(per_type: &[(String, u64)]) {
    if !per_type.is_empty() {
        println!("per type:");
    }
    for (t, n) in per_type {
        println!("  {n:>10}  {t}");
    }
}

/// Runs the command line of the process with `types` as the event types
/// it knows (for `schema check`); errors are one line on stderr and
/// [`ExitCode::FAILURE`].
pub fn run(types: EventTypes) -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("synckit: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_command(cli, &types)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("synckit: {message}");
            ExitCode::FAILURE
        }
    }
}
