//! The guide's examples that need a server (compiled by the doctests, not
//! run there), run here against a real PostgreSQL, from the same files.

use synckit::sqlite::SqliteStore;
use synckit::{Cursor, EventStore, ExpectedVersion, NewEvent};
use synckit_workspace::database_url;

mod postgres_tour {
    include!("../../synckit/src/docs/examples/postgres_tour.rs");
}

mod sqlite_to_postgres {
    include!("../../synckit/src/docs/examples/sqlite_to_postgres.rs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_tour_of_the_guide_runs() {
    postgres_tour::postgres_tour(&database_url().await)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_move_from_sqlite_copies_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.db");
    let source = SqliteStore::open(&file).await.unwrap();
    let events = (0..25)
        .map(|n| {
            NewEvent::new(
                format!("a-{}", n % 3),
                "Counted",
                serde_json::json!({ "n": n }),
            )
        })
        .collect();
    let stored = source.append(ExpectedVersion::Any, events).await.unwrap();
    source.close().await.unwrap();
    let url = database_url().await;
    let report = sqlite_to_postgres::sqlite_to_postgres(&file, &url)
        .await
        .unwrap();
    assert_eq!((report.source_count, report.target_count), (25, 25));
    let target = synckit::postgres::PgStore::open(url).await.unwrap();
    let copied = target.load(Cursor::START).await.unwrap();
    assert_eq!(
        copied.iter().map(|e| (&e.id, &e.data)).collect::<Vec<_>>(),
        stored.iter().map(|e| (&e.id, &e.data)).collect::<Vec<_>>()
    );
}

// The example itself: the tests call what its `main` calls.
#[allow(dead_code)]
#[path = "../../examples/projection.rs"]
mod projection_example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_example_applies_each_deposit_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db").display().to_string();
    projection_example::project_balances(&path).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_example_applies_each_deposit_once_on_postgres() {
    let url = database_url().await;
    projection_example::project_balances(&url).await.unwrap();
    // Again on the same database: a group and accounts of its own.
    projection_example::project_balances(&url).await.unwrap();
}
