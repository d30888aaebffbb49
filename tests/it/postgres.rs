//! The PostgreSQL store against a real server: the shared behaviour suite,
//! the gap-free fence, plain-SQL writers, migrations and configuration.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use synckit::notification::{GLOBAL_CHANNEL, stream_channel};
use synckit::postgres::{Config, PgStore, migrate};
use synckit::{Cursor, Error, EventStore, ExpectedVersion, Filter, NewEvent, NotificationPayload};
use synckit_workspace::{database_url, raw_client, raw_listener};

/// A store on a fresh database, sized for many tests in parallel.
pub(crate) async fn store_with(batch_size: usize) -> (PgStore, String) {
    let url = database_url().await;
    let mut config = Config::new(url.clone());
    config.batch_size = batch_size;
    config.max_open_conns = 8;
    config.min_idle_conns = 0;
    config.notification_timeout = Duration::from_millis(500);
    (PgStore::connect(config).await.expect("connect"), url)
}

mod suite {
    crate::behaviour_suite!(async { super::store_with(7).await.0 });
}

fn event(aggregate: &str, n: u64) -> NewEvent {
    NewEvent::new(
        aggregate,
        "Deposited",
        json!({"id": aggregate, "amount": n}),
    )
}

/// Inserts one event in a transaction that stays open until the returned
/// client commits; returns the version it took.
async fn hold_open_insert(client: &tokio_postgres::Client, id: &str) -> i64 {
    client.batch_execute("BEGIN").await.unwrap();
    let row = client
        .query_one(
            "INSERT INTO events (id, aggregate_id, event_type, data) \
             VALUES ($1, 'held', 'Deposited', '{}') RETURNING version",
            &[&id],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_never_steps_over_a_late_commit() {
    let (store, url) = store_with(100).await;
    store
        .append(ExpectedVersion::Any, vec![event("warm", 0)])
        .await
        .unwrap();
    let held = raw_client(&url).await;
    let n = hold_open_insert(&held, "late").await as u64;
    let later: Vec<_> = (1..=5).map(|i| event("fast", i)).collect();
    let committed = store.append(ExpectedVersion::Any, later).await.unwrap();
    assert_eq!(
        committed[0].version,
        n + 1,
        "the held transaction took version {n}"
    );

    // Nothing past N-1 is readable while N is pending.
    assert!(store.load(Cursor::new(n - 1)).await.unwrap().is_empty());
    assert_eq!(store.latest_version().await.unwrap(), Cursor::new(n - 1));

    held.batch_execute("COMMIT").await.unwrap();
    let after: Vec<u64> = store
        .load(Cursor::new(n - 1))
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(after, (n..=n + 5).collect::<Vec<_>>());
}

/// A stream read over many pages reads on under the fence its first page
/// took, then takes a new one at its end: events committed meanwhile are
/// read, and a transaction still open stops it, as it stops a single read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reads_go_on_past_their_first_fence_but_never_over_a_late_commit() {
    use futures::StreamExt;

    let (store, url) = store_with(5).await;
    let first: Vec<_> = (0..12).map(|i| event("early", i)).collect();
    store.append(ExpectedVersion::Any, first).await.unwrap();

    // Committed while the read is under way, before it takes its next
    // fence: read. (The stream reads one page ahead: the first page's five
    // events are out, and the page after the second, the first that may
    // take a new fence, is requested with the sixth.)
    let mut read = store.read_stream(Filter::all(), Cursor::START);
    let mut versions = Vec::new();
    for _ in 0..5 {
        versions.push(read.next().await.unwrap().unwrap().version);
    }
    let during: Vec<_> = (0..7).map(|i| event("during", i)).collect();
    store.append(ExpectedVersion::Any, during).await.unwrap();
    while let Some(e) = read.next().await {
        versions.push(e.unwrap().version);
    }
    assert_eq!(versions, (1..=19).collect::<Vec<u64>>());

    // Open while the read is under way, with later commits: the read stops
    // before it, and a read after its commit gets it and what followed.
    let mut read = store.read_stream(Filter::all(), Cursor::new(10));
    let mut versions = Vec::new();
    for _ in 0..6 {
        versions.push(read.next().await.unwrap().unwrap().version);
    }
    let held = raw_client(&url).await;
    let n = hold_open_insert(&held, "late").await as u64;
    let after: Vec<_> = (0..3).map(|i| event("after", i)).collect();
    store.append(ExpectedVersion::Any, after).await.unwrap();
    while let Some(e) = read.next().await {
        versions.push(e.unwrap().version);
    }
    assert_eq!(versions, (11..n).collect::<Vec<u64>>());
    held.batch_execute("COMMIT").await.unwrap();
    let rest: Vec<u64> = store
        .read_stream(Filter::all(), Cursor::new(n - 1))
        .map(|e| e.unwrap().version)
        .collect()
        .await;
    assert_eq!(rest, (n..=n + 3).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_releases_the_fence() {
    let (store, url) = store_with(100).await;
    let held = raw_client(&url).await;
    let n = hold_open_insert(&held, "doomed").await as u64;
    store
        .append(ExpectedVersion::Any, vec![event("x", 1)])
        .await
        .unwrap();
    assert!(store.load(Cursor::START).await.unwrap().is_empty());
    held.batch_execute("ROLLBACK").await.unwrap();
    let all = store.load(Cursor::START).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].version, n + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_resuming_readers_see_everything_once_in_order() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 40;
    let (store, url) = store_with(50).await;
    let total = WRITERS * PER_WRITER;

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = raw_client(&url).await;
                let mut seed = (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                for i in 0..PER_WRITER {
                    // Random commit delay: a transaction holds its versions
                    // while others commit after it.
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let delay = Duration::from_micros(seed % 4000);
                    let tx_size = 1 + (seed % 3) as usize;
                    client.batch_execute("BEGIN").await.unwrap();
                    for k in 0..tx_size {
                        client
                            .execute(
                                "INSERT INTO events (id, aggregate_id, event_type, data) \
                                 VALUES ($1, $2, 'Deposited', '{}')",
                                &[&format!("w{w}-{i}-{k}"), &format!("writer-{w}")],
                            )
                            .await
                            .unwrap();
                    }
                    tokio::time::sleep(delay).await;
                    client.batch_execute("COMMIT").await.unwrap();
                }
            })
        })
        .collect();
    let expected_total: usize = {
        // Recompute the writers' transaction sizes.
        (0..WRITERS)
            .map(|w| {
                let mut seed = (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                (0..PER_WRITER)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        1 + (seed % 3) as usize
                    })
                    .sum::<usize>()
            })
            .sum()
    };
    assert!(expected_total >= total);

    let readers: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(expected_total);
                let mut position = Cursor::START;
                let deadline = Instant::now() + Duration::from_secs(60);
                while seen.len() < expected_total && Instant::now() < deadline {
                    let page = store.read(&Filter::all(), position, 17).await.unwrap();
                    if page.is_empty() {
                        tokio::task::yield_now().await;
                    }
                    for e in page {
                        position = e.cursor();
                        seen.push(e.version);
                    }
                }
                seen
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    for r in readers {
        let seen = r.await.unwrap();
        assert_eq!(
            seen.len(),
            expected_total,
            "a reader missed or repeated events"
        );
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order");
        let unique: HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), expected_total);
    }
    let stored = store.load(Cursor::START).await.unwrap();
    assert_eq!(stored.len(), expected_total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_sql_insert_gets_a_stream_version_and_notifies() {
    let (store, url) = store_with(100).await;
    store
        .append(ExpectedVersion::Any, vec![event("psql", 1)])
        .await
        .unwrap();
    let long_id = "x".repeat(300);
    let long_channel = stream_channel(&long_id);
    let (_listener, mut notifications) = raw_listener(
        &url,
        &format!("LISTEN \"stream_psql\"; LISTEN \"{long_channel}\"; LISTEN {GLOBAL_CHANNEL}"),
    )
    .await;

    let other = raw_client(&url).await;
    other
        .batch_execute(
            "INSERT INTO events (id, aggregate_id, event_type, data) \
             VALUES ('from-psql', 'psql', 'Deposited', '{\"amount\": 2}')",
        )
        .await
        .unwrap();
    other
        .execute(
            "INSERT INTO events (id, aggregate_id, event_type, data) VALUES ('long', $1, 'T', '{}')",
            &[&long_id],
        )
        .await
        .unwrap();

    let from_psql = store.get("from-psql").await.unwrap();
    assert_eq!(from_psql.stream_version, 2);
    assert_eq!(from_psql.data, json!({"amount": 2}));
    assert!(from_psql.metadata.is_empty());
    let long = store.get("long").await.unwrap();
    assert_eq!(long.stream_version, 1);

    let mut channels = Vec::new();
    while channels.len() < 4 {
        let (channel, payload) =
            tokio::time::timeout(Duration::from_secs(10), notifications.recv())
                .await
                .expect("notification within 10 s")
                .unwrap();
        let payload = NotificationPayload::from_json(&payload).unwrap();
        if channel == "stream_psql" {
            assert_eq!(payload.id, "from-psql");
            assert_eq!(payload.version, from_psql.version);
            assert_eq!(payload.stream_name, "stream_psql");
        }
        if channel == long_channel {
            assert_eq!(payload.aggregate_id, long_id);
        }
        channels.push(channel);
    }
    channels.sort();
    let mut expected = vec![
        GLOBAL_CHANNEL.to_owned(),
        GLOBAL_CHANNEL.to_owned(),
        "stream_psql".to_owned(),
        long_channel,
    ];
    expected.sort();
    assert_eq!(channels, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_chunked_and_atomic() {
    let (store, url) = store_with(1000).await;
    let batch: Vec<_> = (0..2500).map(|i| event("bulk", i)).collect();
    let recorded = store
        .append(ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    assert_eq!(recorded.len(), 2500);
    assert_eq!(recorded.last().unwrap().stream_version, 2500);

    // Make the third chunk of the next batch fail inside the database: the
    // first two chunks must not remain.
    let admin = raw_client(&url).await;
    admin
        .batch_execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.event_type = 'Poison' THEN RAISE EXCEPTION 'poison'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
        )
        .await
        .unwrap();
    let mut batch: Vec<_> = (0..2500).map(|i| event("bulk", i)).collect();
    batch[2200] = NewEvent::new("bulk", "Poison", json!({}));
    let err = store
        .append(ExpectedVersion::Exact(2500), batch)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Database { .. }), "{err}");
    assert_eq!(store.count().await.unwrap(), 2500);
    assert_eq!(store.stream_version("bulk").await.unwrap(), Some(2500));
    // The failed transaction did not stay open on a pooled connection.
    let again = store
        .append(ExpectedVersion::Exact(2500), vec![event("bulk", 1)])
        .await
        .unwrap();
    assert_eq!(again[0].stream_version, 2501);
}

/// Several streams interleaved in one batch that spans chunks, on streams
/// that already hold events: each stream's positions continue from its head
/// without gaps, in the order given, and the global versions follow the
/// input order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_streams_continue_their_positions_across_chunks() {
    let (store, _url) = store_with(4).await;
    store
        .append(
            ExpectedVersion::Any,
            vec![event("a", 0), event("b", 0), event("b", 1)],
        )
        .await
        .unwrap();
    let batch: Vec<_> = (0..11)
        .map(|i| event(["a", "b", "c"][i % 3], i as u64 + 10))
        .collect();
    let recorded = store
        .append(ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    let ids: Vec<&str> = recorded.iter().map(|r| r.id.as_str()).collect();
    let sent: Vec<&str> = batch.iter().map(NewEvent::id).collect();
    assert_eq!(ids, sent, "recorded in input order");
    assert!(
        recorded
            .windows(2)
            .all(|w| w[1].version == w[0].version + 1)
    );
    for (aggregate, head) in [("a", 1), ("b", 2), ("c", 0)] {
        let positions: Vec<u64> = recorded
            .iter()
            .filter(|r| r.aggregate_id == aggregate)
            .map(|r| r.stream_version)
            .collect();
        let expected: Vec<u64> = (head + 1..=head + positions.len() as u64).collect();
        assert_eq!(positions, expected, "stream {aggregate}");
    }
    let stored = store.load_by_aggregate("b", Cursor::START).await.unwrap();
    let positions: Vec<u64> = stored.iter().map(|r| r.stream_version).collect();
    assert_eq!(positions, (1..=6).collect::<Vec<_>>());
    // One stream over several chunks with an expectation: checked once,
    // against the head before the batch; a failed one writes nothing.
    let more: Vec<_> = (0..9).map(|i| event("a", 100 + i)).collect();
    let err = store
        .append(ExpectedVersion::Exact(1), more.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                actual: Some(5),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.count().await.unwrap(), 14);
    let recorded = store.append(ExpectedVersion::Exact(5), more).await.unwrap();
    let positions: Vec<u64> = recorded.iter().map(|r| r.stream_version).collect();
    assert_eq!(positions, (6..=14).collect::<Vec<_>>());
}

/// Writers that do not expect a version never fail on each other: racing
/// appends to one stream (single events and pairs) all land, at distinct
/// consecutive positions, each pair's events side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_appends_without_expectation_all_land_in_one_stream() {
    let (store, _url) = store_with(100).await;
    let writers = (0..8u64).map(|w| {
        let store = store.clone();
        async move {
            for i in 0..10 {
                let mut events = vec![event("hot", w * 100 + 2 * i)];
                if w % 2 == 1 {
                    events.push(event("hot", w * 100 + 2 * i + 1));
                }
                store.append(ExpectedVersion::Any, events).await.unwrap();
            }
        }
    });
    futures::future::join_all(writers).await;
    let stored = store.load_by_aggregate("hot", Cursor::START).await.unwrap();
    let positions: Vec<u64> = stored.iter().map(|r| r.stream_version).collect();
    assert_eq!(positions, (1..=120).collect::<Vec<_>>());
    for pair in stored.windows(2) {
        let seq = |r: &synckit::Recorded| r.data["amount"].as_u64().unwrap();
        if seq(&pair[0]) % 2 == 0 && (seq(&pair[0]) / 100) % 2 == 1 {
            assert_eq!(seq(&pair[1]), seq(&pair[0]) + 1, "a pair was split");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_missing_event_is_not_found() {
    let (store, _) = store_with(10).await;
    let err = store.get("nope").await.unwrap_err();
    assert!(
        matches!(&err, Error::EventNotFound { id } if id == "nope"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_even_when_processes_start_together() {
    let url = database_url().await;
    let starts = (0..4).map(|_| {
        let mut config = Config::new(url.clone());
        config.max_open_conns = 2;
        config.min_idle_conns = 0;
        PgStore::connect(config)
    });
    for result in futures::future::join_all(starts).await {
        result.expect("every concurrent start succeeds");
    }
    let report = migrate(&Config::new(url.clone())).await.unwrap();
    assert!(report.applied.is_empty(), "{report:?}");

    // An up-to-date database runs no DDL: a connect succeeds while another
    // session holds an exclusive lock on the events table.
    let locker = raw_client(&url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut config = Config::new(url.clone());
    config.connect_timeout = Duration::from_secs(5);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), PgStore::connect(config))
        .await
        .expect("connect did not wait for the table lock")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    locker.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_migrations_an_empty_database_is_refused_clearly() {
    let url = database_url().await;
    let mut config = Config::new(url.clone());
    config.run_migrations = false;
    let err = PgStore::connect(config).await.unwrap_err();
    assert!(err.to_string().contains("run the migrations"), "{err}");
    let report = migrate(&Config::new(url.clone())).await.unwrap();
    assert_eq!(report.applied.len(), 7, "{:?}", report.applied);
    let again = migrate(&Config::new(url.clone())).await.unwrap();
    assert!(again.applied.is_empty(), "up to date: {:?}", again.applied);
    let mut config = Config::new(url);
    config.run_migrations = false;
    PgStore::connect(config).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connection_strings_fail_clearly_within_the_timeout() {
    let err = PgStore::open("postgres://user:secret@host:notaport/db")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConnection { .. }), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");

    // Nothing listens: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = PgStore::open(format!("postgres://u:secret@127.0.0.1:{port}/db"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConnection { .. }), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
    // The cause is in the message, not only in the driver's error chain.
    assert!(err.to_string().contains("refused"), "{err}");

    // The server refuses: its reason is in the message.
    let err = PgStore::open(synckit_workspace::server().url("synckit_no_such_database"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConnection { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(r#"database "synckit_no_such_database" does not exist"#),
        "{err}"
    );

    // Something accepts but never answers: fails after the connect timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut config = Config::new(format!("host=127.0.0.1 port={port} user=u password=secret"));
    config.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = PgStore::connect(config).await.unwrap_err();
    assert!(matches!(err, Error::InvalidConnection { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!err.to_string().contains("secret"), "{err}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_fields_take_effect() {
    let url = database_url().await;
    let mut config = Config::new(url.clone());
    config.max_open_conns = 3;
    config.min_idle_conns = 1;
    let store = PgStore::connect(config).await.unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(stats.max_open, 3);
    assert!(stats.open <= 3);
    let cached = store.prepared_statements().await.unwrap();
    assert!(
        cached.iter().any(|s| s == "SELECT $1::bigint AS count"),
        "{cached:?}"
    );

    let mut config = Config::new(url.clone());
    config.prepared_statements = false;
    config.min_idle_conns = 0;
    let unprepared = PgStore::connect(config).await.unwrap();
    let left = unprepared.prepared_statements().await.unwrap();
    assert!(left.iter().all(|s| s.starts_with("SET ")), "{left:?}");
    // Appends and loads work without a statement cache (PgBouncer mode).
    unprepared
        .append(ExpectedVersion::Any, vec![event("nocache", 1)])
        .await
        .unwrap();
    assert_eq!(unprepared.load(Cursor::START).await.unwrap().len(), 1);

    let mut config = Config::new(url);
    config.batch_size = 0;
    assert!(matches!(
        PgStore::connect(config).await,
        Err(Error::InvalidInput { .. })
    ));
    store.close().await.unwrap();
    assert!(matches!(store.stats(), Err(Error::StoreClosed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_role_appends_and_reads_with_migrations_run_separately() {
    let url = database_url().await;
    migrate(&Config::new(url.clone())).await.unwrap();
    let admin = raw_client(&url).await;
    let role = format!("synckit_app_{}", std::process::id());
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             GRANT SELECT, INSERT ON events TO {role}; \
             GRANT SELECT, INSERT, UPDATE ON synckit_checkpoints TO {role}; \
             GRANT USAGE, SELECT ON SEQUENCE events_version_seq TO {role}; \
             GRANT EXECUTE ON FUNCTION synckit_fence() TO {role};"
        ))
        .await
        .unwrap();
    let mut config = Config::new(format!("{url} user={role}"));
    config.run_migrations = false;
    config.min_idle_conns = 0;
    let store = PgStore::connect(config).await.unwrap();
    store
        .append(ExpectedVersion::NoStream, vec![event("app", 1)])
        .await
        .unwrap();
    assert_eq!(store.load(Cursor::START).await.unwrap().len(), 1);
    use synckit::SubscriptionSource;
    store
        .save_checkpoint("projector", Cursor::new(1))
        .await
        .unwrap();
    store
        .save_checkpoint("projector", Cursor::new(1))
        .await
        .unwrap();
    assert_eq!(
        store.load_checkpoint("projector").await.unwrap(),
        Some(Cursor::new(1))
    );
    // The role cannot run DDL, so migrations are refused rather than half-run.
    let err = admin
        .batch_execute(&format!("SET ROLE {role}; CREATE TABLE nope (x int)"))
        .await;
    assert!(err.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_at_every_length_limit_never_fail_on_notification_limits() {
    use synckit::validate::{MAX_AGGREGATE_ID_LEN, MAX_EVENT_TYPE_LEN, MAX_ID_LEN};
    let (store, _) = store_with(10).await;
    // Multi-byte characters: the limits are in bytes, and so are PostgreSQL's
    // 63-byte channel names and 8000-byte payloads.
    let aggregate = "é".repeat(MAX_AGGREGATE_ID_LEN / 2);
    let event = NewEvent::new(aggregate.clone(), "t".repeat(MAX_EVENT_TYPE_LEN), json!({}))
        .with_id("i".repeat(MAX_ID_LEN));
    let recorded = store
        .append(ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    assert_eq!(recorded[0].aggregate_id, aggregate);
    assert_eq!(
        store
            .load_by_aggregate(&aggregate, Cursor::START)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A writer reads the sequence, then takes its pending mark; others may
/// commit above the head it read before the mark shows, so the fence the
/// database gives drops below versions already committed. The store's
/// `latest_version` never goes back, and a subscription from now, even in
/// a store that never saw the higher fence, delivers only what commits
/// after it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_never_moves_back_and_start_now_skips_what_committed_before() {
    let (store, url) = store_with(100).await;
    let first: Vec<_> = (1..=5).map(|n| event("early", n)).collect();
    store.append(ExpectedVersion::Any, first).await.unwrap();
    assert_eq!(store.latest_version().await.unwrap(), Cursor::new(5));
    // A late mark, as such a writer takes it: a lower bound of versions it
    // has not taken yet, below five committed ones.
    let late = raw_client(&url).await;
    late.batch_execute("BEGIN; SELECT pg_advisory_xact_lock_shared(4611686018427387904 + 1)")
        .await
        .unwrap();
    let fence: i64 = late
        .query_one("SELECT synckit_fence()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(fence, 0, "the database's fence dropped");
    assert_eq!(
        store.latest_version().await.unwrap(),
        Cursor::new(5),
        "latest_version went back"
    );

    let mut config = Config::new(url.clone());
    config.min_idle_conns = 0;
    let fresh = PgStore::connect(config).await.unwrap();
    let mut from_fresh =
        synckit::SubscriptionSource::subscribe(&fresh, Filter::all(), synckit::Start::Now)
            .await
            .unwrap();
    let mut from_store =
        synckit::SubscriptionSource::subscribe(&store, Filter::all(), synckit::Start::Now)
            .await
            .unwrap();
    let sixth = store
        .append(ExpectedVersion::Any, vec![event("after", 6)])
        .await
        .unwrap();
    late.batch_execute("COMMIT").await.unwrap();
    for subscription in [&mut from_fresh, &mut from_store] {
        let next = crate::behaviour::next_within(subscription).await.unwrap();
        assert_eq!(
            next.version, sixth[0].version,
            "delivered an event committed before it started"
        );
    }
}
