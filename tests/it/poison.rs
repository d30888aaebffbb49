//! Stored rows the store did not write, and cannot read back: each is one
//! error item in its place, naming its version and id, and every reader
//! goes on past it. Every kind of row is tried on every backend that can
//! hold it, through every reader.

use std::time::Duration;

use futures::StreamExt;
use synckit::sqlite::SqliteStore;
use synckit::{
    Cursor, Error, Event, ExpectedVersion, Filter, Message, Recorded, Start, SubscriptionSource,
};

use crate::behaviour::{Account, next_within};

/// Asserts that `error` is the poison row `id` at `version`: a decode
/// error naming both, which a retry cannot cure.
fn assert_names_poison(error: &Error, version: u64, id: &str) {
    assert!(!error.is_transient(), "a poison row is permanent: {error}");
    let named = match error {
        Error::UnreadableEvent {
            version: v, id: i, ..
        } => (*v, i.as_str()),
        Error::Decode {
            version: Some(v),
            event_id: Some(i),
            ..
        }
        | Error::UnknownEventType {
            version: Some(v),
            event_id: Some(i),
            ..
        } => (*v, i.as_str()),
        other => panic!("not a decode error naming the event: {other:?}"),
    };
    assert_eq!(named, (version, id), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(id) && text.contains(&version.to_string()),
        "{text}"
    );
}

fn deposit(n: u64) -> Account {
    Account::Deposited {
        id: "a".into(),
        amount: n,
    }
}

/// With a poison row injected by `inject` (plain SQL, aggregate `a`, type
/// `Deposited`, id `poison`) between two good events, every reader yields
/// the first event, one error naming the row, then the next event. A row
/// that only typed readers refuse (`raw_poison` false) is read raw.
pub(crate) async fn every_reader_steps_over<S, F>(store: S, raw_poison: bool, inject: F)
where
    S: SubscriptionSource,
    F: AsyncFnOnce(),
{
    store
        .append_event(ExpectedVersion::NoStream, &deposit(1))
        .await
        .unwrap();
    inject().await;
    let poison = store.latest_version().await.unwrap().version();
    assert_eq!(poison, 2, "the row went in as version 2");
    store
        .append_event(ExpectedVersion::Any, &deposit(3))
        .await
        .unwrap();

    // Streamed reads, raw and typed.
    let raw: Vec<_> = store
        .read_stream(Filter::all(), Cursor::START)
        .collect()
        .await;
    assert_eq!(raw.len(), 3, "{raw:?}");
    assert_eq!(raw[0].as_ref().unwrap().version, 1);
    if raw_poison {
        assert_names_poison(raw[1].as_ref().unwrap_err(), 2, "poison");
    } else {
        assert_eq!(raw[1].as_ref().unwrap().version, 2);
    }
    assert_eq!(raw[2].as_ref().unwrap().version, 3);
    let typed: Vec<_> = store
        .read_stream_as::<Account>(Account::filter(), Cursor::START)
        .collect()
        .await;
    assert_eq!(typed.len(), 3);
    assert_names_poison(typed[1].as_ref().unwrap_err(), 2, "poison");
    assert_eq!(typed[2].as_ref().unwrap().data, deposit(3));
    // Whole loads and pages fail with the row's name, permanently.
    if raw_poison {
        assert_names_poison(&store.load(Cursor::START).await.unwrap_err(), 2, "poison");
        assert_names_poison(
            &store
                .read(&Filter::stream("a"), Cursor::START, 10)
                .await
                .unwrap_err(),
            2,
            "poison",
        );
    } else {
        assert_eq!(store.load(Cursor::START).await.unwrap().len(), 3);
    }
    // Reading after it is untouched.
    assert_eq!(store.load(Cursor::new(2)).await.unwrap().len(), 1);

    // Subscriptions, raw and typed: the error in its place, then on, live.
    let mut raw = store
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap();
    let mut typed = Account::subscribe_from(&store, Start::Beginning)
        .await
        .unwrap();
    assert_eq!(next_within(&mut raw).await.unwrap().version, 1);
    assert_eq!(next_within(&mut typed).await.unwrap().version, 1);
    if raw_poison {
        assert_names_poison(&next_within(&mut raw).await.unwrap_err(), 2, "poison");
    } else {
        assert_eq!(next_within(&mut raw).await.unwrap().version, 2);
    }
    assert_names_poison(&next_within(&mut typed).await.unwrap_err(), 2, "poison");
    assert_eq!(raw.position(), Cursor::new(2), "the position passed it");
    assert_eq!(next_within(&mut raw).await.unwrap().version, 3);
    assert_eq!(next_within(&mut typed).await.unwrap().data, deposit(3));
    store
        .append_event(ExpectedVersion::Any, &deposit(4))
        .await
        .unwrap();
    assert_eq!(next_within(&mut raw).await.unwrap().version, 4);
    assert_eq!(next_within(&mut typed).await.unwrap().data, deposit(4));

    // The message face says the same.
    let mut messages = Box::pin(
        store
            .subscribe(Filter::all(), Start::Beginning)
            .await
            .unwrap()
            .typed::<Account>()
            .messages(),
    );
    assert!(matches!(next_within(&mut messages).await, Ok(Message::Event(e)) if e.version == 1));
    assert_names_poison(&next_within(&mut messages).await.unwrap_err(), 2, "poison");
    assert!(matches!(next_within(&mut messages).await, Ok(Message::Event(e)) if e.version == 3));

    // A handler subscription passes over it and commits past it.
    let durable = Account::subscribe_from(&store, Start::Checkpoint("projector".into()))
        .await
        .unwrap();
    let (seen, mut handled) = tokio::sync::mpsc::unbounded_channel();
    let running = tokio::spawn(durable.run(move |event: Recorded<Account>| {
        let seen = seen.clone();
        async move {
            seen.send(event.version).unwrap();
            Ok::<_, std::convert::Infallible>(())
        }
    }));
    let mut versions = Vec::new();
    while versions.last() != Some(&4) {
        let next = tokio::time::timeout(Duration::from_secs(20), handled.recv()).await;
        versions.push(next.expect("the handler was called").expect("run ended"));
    }
    assert_eq!(versions, [1, 3, 4], "the poison event is passed over");
    crate::behaviour::checkpoint_reaches(&store, "projector", 4).await;
    assert!(!running.is_finished(), "run goes on");
    running.abort();
}

/// The SQL of one poison row on PostgreSQL, by what is wrong with it, and
/// whether raw readers refuse it too.
const PG_POISONS: &[(&str, bool, &str)] = &[
    (
        "deep nesting",
        true,
        "INSERT INTO events (id, aggregate_id, event_type, data) \
         VALUES ('poison', 'a', 'Deposited', (repeat('[', 200) || '1' || repeat(']', 200))::jsonb)",
    ),
    (
        "a number beyond f64",
        true,
        "INSERT INTO events (id, aggregate_id, event_type, data) \
         VALUES ('poison', 'a', 'Deposited', '{\"x\": 1e400}')",
    ),
    (
        "an infinite time",
        true,
        "INSERT INTO events (id, aggregate_id, event_type, data, created_at) \
         VALUES ('poison', 'a', 'Deposited', '{\"id\": \"a\", \"amount\": 2}', 'infinity')",
    ),
    (
        "metadata nested too deep",
        true,
        "INSERT INTO events (id, aggregate_id, event_type, data, metadata) \
         VALUES ('poison', 'a', 'Deposited', '{\"id\": \"a\", \"amount\": 2}', \
                 ('{\"m\": ' || repeat('[', 200) || repeat(']', 200) || '}')::jsonb)",
    ),
    (
        "data of another shape",
        false,
        "INSERT INTO events (id, aggregate_id, event_type, data) \
         VALUES ('poison', 'a', 'Deposited', '{\"amount\": \"lots\"}')",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_poison_rows_are_one_error_item_each() {
    for (what, raw_poison, sql) in PG_POISONS {
        let (store, url) = crate::postgres::store_with(7).await;
        eprintln!("poison: {what}");
        every_reader_steps_over(store, *raw_poison, async || {
            synckit_workspace::raw_client(&url)
                .await
                .batch_execute(sql)
                .await
                .unwrap();
        })
        .await;
    }
}

/// The SQL of one poison row on SQLite (position columns given: plain SQL
/// writers there choose them).
const SQLITE_POISONS: &[(&str, bool, &str)] = &[
    ("text that is not JSON", true, "'not json', NULL, NULL"),
    ("deep nesting", true, "'DEEP', NULL, NULL"),
    ("a number beyond f64", true, "'{\"x\": 1e400}', NULL, NULL"),
    (
        "a time that is not one",
        true,
        "'{\"id\": \"a\", \"amount\": 2}', NULL, 'yesterday'",
    ),
    (
        "metadata that is not JSON",
        true,
        "'{\"id\": \"a\", \"amount\": 2}', '{', NULL",
    ),
    (
        "data of another shape",
        false,
        "'{\"amount\": \"lots\"}', NULL, NULL",
    ),
];

async fn sqlite_inject(store: &SqliteStore, values: &str) {
    let deep = format!("'{}1{}'", "[".repeat(200), "]".repeat(200));
    let values = values.replace("'DEEP'", &deep);
    let sql = format!(
        "INSERT INTO events (id, aggregate_id, event_type, stream_version, data, metadata, created_at) \
         VALUES ('poison', 'a', 'Deposited', 2, {values})"
    );
    let sql = sql.replace(", NULL)", ", strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))");
    sqlite_execute(store.path().to_owned(), sql).await;
}

/// Runs `sql` on the SQLite file through a connection of another library,
/// as another tool would.
async fn sqlite_execute(path: std::path::PathBuf, sql: String) {
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute_batch(&sql).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_poison_rows_are_one_error_item_each() {
    for (what, raw_poison, values) in SQLITE_POISONS {
        let store = crate::sqlite::fresh_store(7).await;
        eprintln!("poison: {what}");
        let injector = store.clone();
        every_reader_steps_over(store, *raw_poison, async || {
            sqlite_inject(&injector, values).await
        })
        .await;
    }
}

/// Rows another tool wrote, each with an id and its `data` and `metadata`
/// as SQL literals, and the metadata every backend reads back: the shared
/// decoding rules of the SQL backends, one row per rule.
const STORED_ROW_RULES: &[(&str, &str, &str, &str)] = &[
    ("object", "'{\"amount\": 1}'", "'{\"k\": 1}'", r#"{"k": 1}"#),
    ("sql-null", "'{\"amount\": 1}'", "NULL", "{}"),
    ("json-null", "'{\"amount\": 1}'", "'null'", "{}"),
    (
        "array",
        "'{\"amount\": 1}'",
        "'[1, 2]'",
        r#"{"value": [1, 2]}"#,
    ),
    (
        "string",
        "'{\"amount\": 1}'",
        "'\"text\"'",
        r#"{"value": "text"}"#,
    ),
    ("number", "'{\"amount\": 1}'", "'7'", r#"{"value": 7}"#),
    ("no-data", "NULL", "NULL", "{}"),
];

/// Every SQL backend reads the rows of [`STORED_ROW_RULES`] alike: metadata
/// that is no object is kept under `"value"`, absent metadata is an empty
/// object, absent data is JSON `null`; by `load`, by a typed read into raw
/// JSON and by a subscription.
async fn stored_rows_read_by_the_shared_rules<S: SubscriptionSource>(
    store: S,
    inject: impl AsyncFn(String),
) {
    for (n, (id, data, metadata, _)) in STORED_ROW_RULES.iter().enumerate() {
        inject(format!(
            "INSERT INTO events (id, aggregate_id, event_type, stream_version, data, metadata) \
             VALUES ('{id}', 'rules', 'Deposited', {}, {data}, {metadata})",
            n + 1
        ))
        .await;
    }
    let loaded = store.load(Cursor::START).await.unwrap();
    let typed: Vec<Recorded> = store
        .read_stream_as::<serde_json::Value>(Filter::all(), Cursor::START)
        .map(Result::unwrap)
        .collect()
        .await;
    let mut subscription = store
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap();
    let mut delivered = Vec::new();
    while delivered.len() < STORED_ROW_RULES.len() {
        delivered.push(next_within(&mut subscription).await.unwrap());
    }
    for read in [&loaded, &typed, &delivered] {
        assert_eq!(read.len(), STORED_ROW_RULES.len());
        for (event, (id, data, _, metadata)) in read.iter().zip(STORED_ROW_RULES) {
            assert_eq!(event.id, *id);
            let metadata: serde_json::Value = serde_json::from_str(metadata).unwrap();
            assert_eq!(
                serde_json::Value::Object(event.metadata.clone()),
                metadata,
                "{id}"
            );
            let expected_data = if *data == "NULL" {
                serde_json::Value::Null
            } else {
                serde_json::json!({"amount": 1})
            };
            assert_eq!(event.data, expected_data, "{id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_stored_rows_by_the_shared_rules() {
    let (store, url) = crate::postgres::store_with(3).await;
    stored_rows_read_by_the_shared_rules(store, async |sql| {
        synckit_workspace::raw_client(&url)
            .await
            .batch_execute(&sql)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_stored_rows_by_the_shared_rules() {
    let store = crate::sqlite::fresh_store(3).await;
    let path = store.path().to_owned();
    stored_rows_read_by_the_shared_rules(store, async |sql| {
        let path = path.clone();
        let sql = sql.replace(
            "stream_version, data, metadata)",
            "stream_version, data, metadata, created_at)",
        );
        let sql = format!(
            "{}, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            sql.trim_end_matches(')')
        );
        sqlite_execute(path, sql).await;
    })
    .await;
}

/// Through the HTTP face: a row the server cannot read back is one error
/// item in its place for every reader of a `RemoteStore` too, and whole
/// pages fail with its name, as on the store itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_poison_rows_are_one_error_item_each() {
    for (what, raw_poison, values) in SQLITE_POISONS {
        let backing = crate::sqlite::fresh_store(7).await;
        let remote = crate::remote::remote(backing.clone()).await;
        eprintln!("poison: {what}");
        every_reader_steps_over(remote, *raw_poison, async || {
            sqlite_inject(&backing, values).await
        })
        .await;
    }
}
