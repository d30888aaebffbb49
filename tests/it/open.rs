//! `synckit::open`: one target string picks the backend, and the store it
//! returns behaves as that backend's own.

use synckit::{
    AnyStore, Cursor, Error, EventStore, ExpectedVersion, Filter, NewEvent, Start, StoreConfig,
    SubscriptionSource,
};
use synckit_workspace::database_url;

/// Appends through `store`, reads it back and receives it live.
async fn round_trip(store: AnyStore) {
    let mut live = store.subscribe(Filter::all(), Start::Now).await.unwrap();
    let event = NewEvent::new("open-1", "Opened", serde_json::json!({"n": 1}));
    let stored = store
        .append(ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    let loaded = store.load(Cursor::START).await.unwrap();
    assert_eq!(loaded, stored);
    let received = crate::behaviour::next_within(&mut live).await.unwrap();
    assert_eq!(received, stored[0]);
    assert_eq!(store.stream_version("open-1").await.unwrap(), Some(1));
    store.close().await.unwrap();
    assert!(matches!(
        store.latest_version().await,
        Err(Error::StoreClosed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_picks_each_backend_from_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.db");
    for (target, backend) in [
        ("memory:".to_owned(), "memory"),
        (file.display().to_string(), "sqlite"),
        (
            format!("sqlite://{}", dir.path().join("other.db").display()),
            "sqlite",
        ),
        (database_url().await, "postgres"),
    ] {
        let store = synckit::open(&target).await.unwrap();
        assert_eq!(store.backend(), backend, "{target}");
        round_trip(store).await;
    }
    assert!(file.exists(), "the SQLite target is the file it names");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_that_name_no_store_are_refused_before_connecting() {
    for target in ["", "   "] {
        assert!(matches!(
            StoreConfig::parse(target),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            synckit::open(target).await,
            Err(Error::InvalidInput { .. })
        ));
    }
    // A directory is no SQLite file: refused with the backend's own error.
    let dir = tempfile::tempdir().unwrap();
    let refused = synckit::open(&dir.path().display().to_string()).await;
    assert!(
        matches!(refused, Err(Error::InvalidConnection { .. })),
        "{refused:?}"
    );
}
