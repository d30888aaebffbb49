//! Copying the embedded SQLite store into PostgreSQL: 100,000 events, an
//! interrupted run, resumption without duplicates, verification.

use std::time::Duration;

use serde_json::json;
use synckit::postgres::{Config, PgStore};
use synckit::{Error, EventStore, ExpectedVersion, NewEvent};
use synckit_workspace::database_url;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_100k_events_resumes_after_interruption_and_verifies() {
    const TOTAL: usize = 100_000;
    let source = crate::sqlite::fresh_store(1000).await;
    for chunk in 0..TOTAL / 1000 {
        let batch: Vec<_> = (0..1000)
            .map(|k| {
                let n = chunk * 1000 + k;
                NewEvent::new(
                    format!("account-{}", n % 997),
                    if n % 3 == 0 { "Opened" } else { "Deposited" },
                    json!({ "n": n, "amount": n % 100, "note": "café ☕" }),
                )
                .with_correlation_id(format!("req-{}", n / 10))
            })
            .collect();
        source.append(ExpectedVersion::Any, batch).await.unwrap();
    }

    let url = database_url().await;
    let mut config = Config::new(url.clone());
    config.batch_size = 1000;
    config.min_idle_conns = 0;
    let target = PgStore::connect(config.clone()).await.unwrap();
    let name = source.path().display().to_string();

    // First run: stopped after 30 batches, in the middle of the copy.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = {
        let (target, source, name) = (target.clone(), source.clone(), name.clone());
        tokio::spawn(async move {
            target
                .import_from(&source, &name, move |p| {
                    let _ = tx.send(p.copied);
                })
                .await
        })
    };
    while let Some(copied) = rx.recv().await {
        if copied >= 30_000 {
            break;
        }
    }
    run.abort();
    let _ = run.await;
    let partial = target.count().await.unwrap();
    assert!((30_000..TOTAL as u64).contains(&partial), "{partial}");
    assert_eq!(partial % 1000, 0, "a batch is copied whole or not at all");

    // A new process (a new store) continues and verifies.
    let resumed = PgStore::connect(config.clone()).await.unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(300),
        resumed.import_from(&source, &name, |_| {}),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.copied_now, TOTAL as u64 - partial);
    assert_eq!(
        (report.source_count, report.target_count),
        (TOTAL as u64, TOTAL as u64)
    );
    assert_eq!(report.source_checksum, report.target_checksum);

    // Again: nothing to add.
    let again = resumed.import_from(&source, &name, |_| {}).await.unwrap();
    assert_eq!(again.copied_now, 0);
    assert_eq!(resumed.count().await.unwrap(), TOTAL as u64);

    // Everything arrived intact, in order, with its stream position.
    let first = resumed
        .get(&source.load(synckit::Cursor::START).await.unwrap()[0].id)
        .await
        .unwrap();
    assert_eq!(first.stream_version, 1);
    assert_eq!(first.data["note"], "café ☕");
    assert_eq!(first.correlation_id(), Some("req-0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_target_that_holds_other_events() {
    let source = crate::sqlite::fresh_store(10).await;
    source
        .append(
            ExpectedVersion::Any,
            vec![NewEvent::new("a", "T", json!({}))],
        )
        .await
        .unwrap();
    let target = PgStore::open(database_url().await).await.unwrap();
    target
        .append(
            ExpectedVersion::Any,
            vec![NewEvent::new("other", "T", json!({}))],
        )
        .await
        .unwrap();
    let err = target
        .import_from(&source, "src", |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(target.count().await.unwrap(), 1);
}

/// What `jsonb` normalises (a negative zero, key order) does not fail the
/// verification, and ids, types and aggregate ids of control characters at
/// their length limits go through the notification trigger, whose payload
/// would otherwise pass 8000 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_data_jsonb_normalises_and_ids_of_control_characters() {
    use synckit::validate::{MAX_AGGREGATE_ID_LEN, MAX_EVENT_TYPE_LEN, MAX_ID_LEN};
    let source = crate::sqlite::fresh_store(7).await;
    let control = |n: usize| "\u{1}".repeat(n);
    let events = vec![
        NewEvent::new(
            "a",
            "Measured",
            json!({ "x": -0.0, "b": 1, "aa": [1.5, -0.0] }),
        ),
        NewEvent::new(
            control(MAX_AGGREGATE_ID_LEN),
            control(MAX_EVENT_TYPE_LEN),
            json!({}),
        )
        .with_id(control(MAX_ID_LEN)),
    ];
    source
        .append(ExpectedVersion::Any, events.clone())
        .await
        .unwrap();
    // Appended straight to PostgreSQL, the same events fit the trigger too.
    let direct = PgStore::connect(Config::new(database_url().await))
        .await
        .unwrap();
    let mut subscription = synckit::SubscriptionSource::subscribe(
        &direct,
        synckit::Filter::all(),
        synckit::Start::Beginning,
    )
    .await
    .unwrap();
    direct
        .append(ExpectedVersion::Any, events)
        .await
        .expect("a payload that would pass 8000 bytes is shortened");
    for expected in 1..=2 {
        let event = crate::behaviour::next_within(&mut subscription)
            .await
            .unwrap();
        assert_eq!(event.version, expected);
    }

    let target = PgStore::connect(Config::new(database_url().await))
        .await
        .unwrap();
    let report = target
        .import_from(&source, "normalised.db", |_| {})
        .await
        .expect("the import verifies");
    assert_eq!((report.source_count, report.target_count), (2, 2));
    assert_eq!(report.source_checksum, report.target_checksum);
}
