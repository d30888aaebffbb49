//! The embedded SQLite store: the shared behaviour suite on real files,
//! another process's commits, and files that must be refused untouched.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use synckit::sqlite::{self, SqliteStore};
use synckit::{
    Cursor, Error, EventStore, ExpectedVersion, Filter, NewEvent, Start, SubscriptionSource,
};

use crate::behaviour::{Account, next_within};

/// A store on a new file in its own temporary directory (kept alive with
/// the store by leaking the guard: the directory goes with the process's
/// temp cleanup).
pub(crate) async fn fresh_store(batch_size: usize) -> SqliteStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = sqlite::Config::new(dir.path().join("events.db"));
    config.batch_size = batch_size;
    config.poll_interval = Duration::from_millis(20);
    let store = SqliteStore::connect(config).await.expect("open");
    std::mem::forget(dir);
    store
}

mod suite {
    crate::behaviour_suite!(async { super::fresh_store(7).await });
}

/// Appends go in as multi-row INSERTs with the rest row by row: a batch
/// over several streams keeps every position whatever its length, and a row
/// refused inside the database, in a multi-row chunk or after them, leaves
/// nothing of the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_batches_keep_their_positions_and_fail_whole() {
    let store = fresh_store(1000).await;
    let event = |stream: &str, n: usize| NewEvent::new(stream, "Counted", json!({ "n": n }));
    let first: Vec<_> = (0..10).map(|n| event("a", n)).collect();
    store
        .append(ExpectedVersion::NoStream, first)
        .await
        .unwrap();
    for len in [1, 63, 64, 65, 150] {
        let before = store.load(Cursor::START).await.unwrap();
        let batch: Vec<_> = (0..len).map(|n| event(["a", "b", "c"][n % 3], n)).collect();
        let recorded = store
            .append(ExpectedVersion::Any, batch.clone())
            .await
            .unwrap();
        let stored = store
            .load(Cursor::new(before.last().unwrap().version))
            .await
            .unwrap();
        assert_eq!(stored, recorded, "a batch of {len} reads back as returned");
        let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
        let next = before.last().unwrap().version + 1;
        assert_eq!(versions, (next..next + len as u64).collect::<Vec<_>>());
        for (sent, got) in batch.iter().zip(&stored) {
            assert_eq!((sent.id(), sent.data()), (got.id.as_str(), &got.data));
            let earlier = before
                .iter()
                .chain(stored.iter().take_while(|e| e.id != got.id))
                .filter(|e| e.aggregate_id == got.aggregate_id)
                .count() as u64;
            assert_eq!(got.stream_version, earlier + 1, "{} of {len}", got.id);
        }
    }

    let stored = store.load(Cursor::START).await.unwrap();
    for poisoned in [70, 140] {
        let mut batch: Vec<_> = (0..150).map(|n| event("d", n)).collect();
        // An id stored already, with other content: refused by the
        // database's unique index when its row goes in.
        batch[poisoned] =
            NewEvent::new("d", "Counted", json!({ "other": true })).with_id(stored[5].id.clone());
        let err = store.append(ExpectedVersion::Any, batch).await.unwrap_err();
        assert!(matches!(err, Error::DuplicateEvent { .. }), "{err}");
        assert_eq!(store.load(Cursor::START).await.unwrap(), stored);
        assert_eq!(store.stream_version("d").await.unwrap(), None);
    }
}

/// On a single-threaded runtime the store cannot run its calls in place
/// and hands them to blocking threads: the same behaviour.
mod current_thread {
    #[tokio::test(flavor = "current_thread")]
    async fn appends_conflicts_and_replays() {
        crate::behaviour::expected_versions_are_enforced(super::fresh_store(7).await).await;
        crate::behaviour::same_id_is_idempotent_other_content_is_a_duplicate(
            super::fresh_store(7).await,
        )
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn loads_and_typed_loads() {
        crate::behaviour::loads_page_in_order_after_a_cursor(super::fresh_store(7).await).await;
        crate::behaviour::typed_loads_decode_each_event_and_go_on_after_a_bad_one(
            super::fresh_store(7).await,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connection_on_the_same_file_wakes_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let mut config = sqlite::Config::new(&path);
    config.poll_interval = Duration::from_millis(20);
    let reader = SqliteStore::connect(config.clone()).await.unwrap();
    let writer = SqliteStore::connect(config).await.unwrap();
    let mut sub = reader.subscribe(Filter::all(), Start::Now).await.unwrap();
    writer
        .append_event(
            ExpectedVersion::NoStream,
            &Account::Opened {
                id: "a".into(),
                owner: "Ada".into(),
            },
        )
        .await
        .unwrap();
    let got = next_within(&mut sub).await.unwrap();
    assert_eq!(got.aggregate_id, "a");
    // The file really is shared: the writer's stream continues in the reader.
    let err = reader
        .append_event(
            ExpectedVersion::NoStream,
            &Account::Opened {
                id: "a".into(),
                owner: "Eve".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                actual: Some(1),
                ..
            }
        ),
        "{err}"
    );
    assert!(futures::FutureExt::now_or_never(sub.next()).is_none());
}

fn file_bytes(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();

    let err = SqliteStore::open(dir.path()).await.unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");

    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        b"these are not the bytes of a database, just a note\n".repeat(100),
    )
    .unwrap();
    let before = file_bytes(&text);
    let err = SqliteStore::open(&text).await.unwrap_err();
    assert!(err.to_string().contains("not a SQLite database"), "{err}");
    assert_eq!(file_bytes(&text), before);

    let foreign = dir.path().join("foreign.db");
    {
        use diesel::Connection;
        use diesel::connection::SimpleConnection;
        let mut c = diesel::SqliteConnection::establish(foreign.to_str().unwrap()).unwrap();
        c.batch_execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO events (body) VALUES ('x');")
            .unwrap();
    }
    let before = file_bytes(&foreign);
    let err = SqliteStore::open(&foreign).await.unwrap_err();
    assert!(err.to_string().contains("did not create"), "{err}");
    assert_eq!(file_bytes(&foreign), before);

    // A file another tool manages with diesel: its own tables beside
    // diesel's migration record, which synckit's files hold too.
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let managed = dir.path().join("managed.db");
    {
        let mut c = diesel::SqliteConnection::establish(managed.to_str().unwrap()).unwrap();
        c.batch_execute(
            "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); \
             INSERT INTO __diesel_schema_migrations (version) VALUES ('20240101000000'); \
             CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);",
        )
        .unwrap();
    }
    let before = file_bytes(&managed);
    let err = SqliteStore::open(&managed).await.unwrap_err();
    assert!(err.to_string().contains("did not create (users)"), "{err}");
    assert_eq!(file_bytes(&managed), before);
    // The same record without the application's tables is still not ours.
    {
        let mut c = diesel::SqliteConnection::establish(managed.to_str().unwrap()).unwrap();
        c.batch_execute("DROP TABLE users;").unwrap();
    }
    let before = file_bytes(&managed);
    let err = SqliteStore::open(&managed).await.unwrap_err();
    assert!(err.to_string().contains("20240101000000"), "{err}");
    assert_eq!(file_bytes(&managed), before);

    // synckit's own file with an application's table beside its own (a
    // projection's read model) opens.
    let shared = dir.path().join("shared.db");
    SqliteStore::open(&shared)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    {
        let mut c = diesel::SqliteConnection::establish(shared.to_str().unwrap()).unwrap();
        c.batch_execute("CREATE TABLE balances (account TEXT PRIMARY KEY, amount INTEGER);")
            .unwrap();
    }
    let reopened = SqliteStore::open(&shared).await.unwrap();
    assert_eq!(reopened.latest_version().await.unwrap(), Cursor::START);

    let readonly = dir.path().join("readonly.db");
    {
        let store = SqliteStore::open(&readonly).await.unwrap();
        store.close().await.unwrap();
    }
    let mut perms = std::fs::metadata(&readonly).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&readonly, perms).unwrap();
    let before = file_bytes(&readonly);
    let err = SqliteStore::open(&readonly).await.unwrap_err();
    assert!(err.to_string().contains("cannot be written"), "{err}");
    assert_eq!(file_bytes(&readonly), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_by_another_os_process_reaches_subscribers() {
    let Ok(python) = which_python() else {
        panic!(
            "this test writes from a second process with python3's sqlite3 module: install python3"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let mut config = sqlite::Config::new(&path);
    config.poll_interval = Duration::from_millis(20);
    let store = SqliteStore::connect(config).await.unwrap();
    let mut sub = store.subscribe(Filter::all(), Start::Now).await.unwrap();
    let status = std::process::Command::new(python)
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], timeout=10)\n\
             c.execute(\"INSERT INTO events (id, aggregate_id, event_type, data, metadata, stream_version) \
             VALUES ('from-python', 'py', 'Deposited', '{\\\"id\\\": \\\"py\\\", \\\"amount\\\": 5}', '{}', 1)\")\n\
             c.commit()\n",
        )
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let got = next_within(&mut sub).await.unwrap();
    assert_eq!(got.id, "from-python");
    let typed = got.decode::<Account>().unwrap();
    assert_eq!(
        typed.data,
        Account::Deposited {
            id: "py".into(),
            amount: 5
        }
    );
}

fn which_python() -> Result<&'static str, ()> {
    for candidate in ["python3", "python"] {
        if std::process::Command::new(candidate)
            .arg("-c")
            .arg("import sqlite3")
            .status()
            .is_ok_and(|s| s.success())
        {
            return Ok(candidate);
        }
    }
    Err(())
}

/// Another process holds the write lock while a durable subscription saves
/// its checkpoint: the save fails as "database is locked", a transient
/// error, and `run` retries it instead of ending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_retries_a_checkpoint_save_that_fails_transiently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let mut config = sqlite::Config::new(&path);
    config.busy_timeout = Duration::from_millis(20);
    config.poll_interval = Duration::from_millis(20);
    let store = SqliteStore::connect(config).await.unwrap();
    let first = NewEvent::new("a", "T", json!({ "n": 1 }));
    store
        .append(ExpectedVersion::Any, vec![first])
        .await
        .unwrap();
    let subscription = store
        .subscribe(Filter::all(), Start::Checkpoint("saver".into()))
        .await
        .unwrap();
    let (seen, mut handled) = tokio::sync::mpsc::unbounded_channel();
    let (locked_tx, locked) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(subscription.run(move |event: synckit::Recorded| {
        let (seen, mut locked) = (seen.clone(), locked.clone());
        async move {
            seen.send(event.version).unwrap();
            // The first event's checkpoint is saved while the lock is held.
            if event.version == 1 {
                locked.wait_for(|l| *l).await.unwrap();
            }
            Ok::<_, std::convert::Infallible>(())
        }
    }));
    assert_eq!(handled.recv().await, Some(1));
    let blocker = tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(true).unwrap();
        // Long enough for several saves to meet the lock.
        std::thread::sleep(Duration::from_millis(400));
        conn.execute_batch("COMMIT").unwrap();
    });
    blocker.await.unwrap();
    crate::behaviour::checkpoint_reaches(&store, "saver", 1).await;
    assert!(!running.is_finished(), "run goes on");
    store
        .append(
            ExpectedVersion::Any,
            vec![NewEvent::new("a", "T", json!({ "n": 2 }))],
        )
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), handled.recv())
            .await
            .unwrap(),
        Some(2),
        "run goes on after the failed saves"
    );
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_count_and_config_answer_as_on_postgres() {
    use synckit::{EventStore, ExpectedVersion, NewEvent};
    let store = fresh_store(7).await;
    assert_eq!(store.config().batch_size, 7);
    assert_eq!(store.count().await.unwrap(), 0);
    let event = NewEvent::new("a", "Opened", serde_json::json!({"n": 1})).with_id("the-id");
    store
        .append(ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
    let got = store.get("the-id").await.unwrap();
    assert_eq!((got.version, got.aggregate_id.as_str()), (1, "a"));
    assert!(matches!(
        store.get("missing").await,
        Err(synckit::Error::EventNotFound { id }) if id == "missing"
    ));
}

/// An error no retry cures ends `run` with `Error::Subscription`, which
/// names the subscription: here the checkpoint table is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_ends_with_an_error_naming_the_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let store = SqliteStore::connect(sqlite::Config::new(&path))
        .await
        .unwrap();
    store
        .append(
            ExpectedVersion::Any,
            vec![NewEvent::new("a", "T", json!({ "n": 1 }))],
        )
        .await
        .unwrap();
    let subscription = store
        .subscribe(Filter::all(), Start::Checkpoint("auditor".into()))
        .await
        .unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE synckit_checkpoints")
        .unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        subscription.run(|_: synckit::Recorded| async { Ok::<_, std::convert::Infallible>(()) }),
    )
    .await
    .expect("run ends");
    let err = result.unwrap_err();
    match &err {
        synckit::Error::Subscription {
            subscription,
            source,
        } => {
            assert_eq!(subscription, "auditor");
            assert!(
                matches!(**source, synckit::Error::Database { .. }),
                "{source}"
            );
        }
        other => panic!("expected Error::Subscription, got {other:?}"),
    }
    assert!(err.to_string().contains("\"auditor\""), "{err}");
    assert!(!err.is_transient());
}
