//! Parked events: a durable subscription's handler that keeps failing on
//! an event parks it and goes on; the later events of its aggregate wait
//! behind it, other aggregates' events are handled; a retry or a skip
//! releases them, in order.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use synckit::{
    EventStore, ExpectedVersion, Filter, HandlerRetry, NewEvent, ParkedStatus, Recorded, Start,
    SubscriptionSource,
};

async fn append<S: EventStore>(store: &S, aggregate: &str) -> u64 {
    let written = store
        .append(
            ExpectedVersion::Any,
            vec![NewEvent::new(aggregate, "Sent", json!({}))],
        )
        .await
        .unwrap();
    written[0].version
}

async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn a_poison_event_is_parked_its_aggregate_waits_and_retry_or_skip_release_it<
    S: SubscriptionSource,
>(
    store: S,
) {
    // The handler fails on the versions in `poisoned`; `handled` records
    // what it handled, in order.
    let poisoned: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let subscription = store
        .subscribe(Filter::all(), Start::checkpoint("mailer"))
        .await
        .unwrap()
        .with_handler_retry(
            HandlerRetry::default()
                .with_attempts(2)
                .with_backoff(Duration::ZERO, Duration::ZERO),
        );
    let progress = subscription.progress();
    let (fails, log) = (poisoned.clone(), handled.clone());
    let run = tokio::spawn(subscription.run(move |event: Recorded| {
        let failed = fails.lock().unwrap().contains(&event.version);
        if !failed {
            log.lock().unwrap().push(event.version);
        }
        async move {
            if failed {
                Err(format!("cannot send {}", event.version))
            } else {
                Ok(())
            }
        }
    }));

    poisoned.lock().unwrap().insert(1);
    let bad = append(&store, "bad").await;
    let good = append(&store, "good").await;
    let bad_later = append(&store, "bad").await;
    let good_later = append(&store, "good").await;
    assert_eq!((bad, good, bad_later, good_later), (1, 2, 3, 4));
    // Parked events count as handled: the checkpoint moves past them.
    progress.wait_for(4).await.unwrap();
    assert_eq!(*handled.lock().unwrap(), vec![2, 4]);
    let parked = store.parked(Some("mailer")).await.unwrap();
    let summary: Vec<(u64, &str, ParkedStatus, u32)> = parked
        .iter()
        .map(|p| (p.version, p.aggregate_id.as_str(), p.status, p.attempts))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "bad", ParkedStatus::Failed, 2),
            (3, "bad", ParkedStatus::Waiting, 0)
        ]
    );
    assert!(
        parked[0].error.contains("cannot send 1"),
        "{}",
        parked[0].error
    );
    assert_eq!(store.parked(None).await.unwrap(), parked);
    // Only a failed one can be retried; only a parked one skipped.
    assert!(!store.retry_parked("mailer", 3).await.unwrap());
    assert!(!store.retry_parked("mailer", 2).await.unwrap());
    assert!(!store.skip_parked("mailer", 2).await.unwrap());
    assert!(!store.retry_parked("other", 1).await.unwrap());

    // Retried while it still fails: parked again, attempts counted.
    assert!(store.retry_parked("mailer", 1).await.unwrap());
    eventually("parked again", async || {
        let parked = store.parked(Some("mailer")).await.unwrap();
        parked[0].status == ParkedStatus::Failed && parked[0].attempts == 4
    })
    .await;
    assert_eq!(*handled.lock().unwrap(), vec![2, 4]);

    // Fixed and retried: 1, then 3, in order; the aggregate goes on.
    poisoned.lock().unwrap().clear();
    assert!(store.retry_parked("mailer", 1).await.unwrap());
    eventually("released in order", async || {
        store.parked(Some("mailer")).await.unwrap().is_empty()
    })
    .await;
    assert_eq!(*handled.lock().unwrap(), vec![2, 4, 1, 3]);
    let next = append(&store, "bad").await;
    progress.wait_for(next).await.unwrap();
    assert_eq!(*handled.lock().unwrap(), vec![2, 4, 1, 3, next]);

    // Skipped: never handled; the one waiting behind it is.
    let worse = next + 1;
    poisoned.lock().unwrap().insert(worse);
    assert_eq!(append(&store, "worse").await, worse);
    let behind = append(&store, "worse").await;
    progress.wait_for(behind).await.unwrap();
    assert_eq!(store.parked(Some("mailer")).await.unwrap().len(), 2);
    assert!(store.skip_parked("mailer", worse).await.unwrap());
    eventually("the waiting one handled", async || {
        store.parked(Some("mailer")).await.unwrap().is_empty()
    })
    .await;
    assert_eq!(handled.lock().unwrap().last(), Some(&behind));
    assert!(!handled.lock().unwrap().contains(&worse));
    run.abort();
    let _ = run.await;

    // The old policy: the first failure after the retries stops the run.
    let stopping = store
        .subscribe(Filter::all(), Start::checkpoint("strict"))
        .await
        .unwrap()
        .with_handler_retry(HandlerRetry::once().then_stop());
    let result = stopping
        .run(|_: Recorded| async { Err::<(), _>("no") })
        .await;
    assert!(
        matches!(result, Err(synckit::Error::Handler { version: 1, .. })),
        "{result:?}"
    );
    assert!(store.parked(Some("strict")).await.unwrap().is_empty());
}

/// Rows of `synckit_parked` that `run` did not write: a retry of an event
/// that is not in the store, a waiting row with nothing failed before it,
/// and (SQLite, where a column holds any type) text where numbers belong.
/// The subscription goes on, drops the row whose event is gone, hands the
/// waiting row's event to its handler, and lists the odd row.
async fn rows_written_by_hand_stop_no_subscription(target: &str) {
    let store = synckit::open(target).await.unwrap();
    let first = append(&store, "real").await;
    let id = store.load(synckit::Cursor::START).await.unwrap()[0]
        .id
        .clone();
    let mut rows = vec![
        format!("('mailer', 1000, 'no-such-id', 'ghost', 'retry', 'by hand', 0, 0)"),
        format!("('mailer', {first}, '{id}', 'real', 'waiting', 'by hand', 0, 0)"),
    ];
    let sqlite = target.ends_with(".db");
    if sqlite {
        rows.push("('mailer', 1001, 'other-id', 'odd', 'failed', 'x', 'many', 'yesterday')".into());
    }
    let insert = format!(
        "INSERT INTO synckit_parked (subscription, version, event_id, aggregate_id, status, error, attempts, parked_at) VALUES {}",
        rows.join(", ")
    );
    if sqlite {
        rusqlite::Connection::open(target)
            .unwrap()
            .execute_batch(&insert)
            .unwrap();
    } else {
        synckit_workspace::raw_client(target)
            .await
            .batch_execute(&insert)
            .await
            .unwrap();
    }

    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let subscription = store
        .subscribe(Filter::all(), Start::checkpoint("mailer"))
        .await
        .unwrap();
    let progress = subscription.progress();
    let log = handled.clone();
    let run = tokio::spawn(subscription.run(move |event: Recorded| {
        log.lock().unwrap().push(event.version);
        async { Ok::<_, std::convert::Infallible>(()) }
    }));
    let next = append(&store, "real").await;
    progress.wait_for(next).await.unwrap();
    eventually("the rows released", async || {
        let parked = store.parked(Some("mailer")).await.unwrap();
        parked.iter().all(|p| p.version > 1000)
    })
    .await;
    assert!(!run.is_finished(), "run goes on");
    // The waiting row's event handed over again (at least once), the
    // others once.
    let seen = handled.lock().unwrap().clone();
    assert_eq!(seen.iter().filter(|v| **v == first).count(), 2, "{seen:?}");
    assert!(seen.contains(&next), "{seen:?}");
    let left = store.parked(None).await.unwrap();
    if sqlite {
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(
            (left[0].version, left[0].status, left[0].attempts),
            (1001, ParkedStatus::Failed, 0)
        );
    } else {
        assert!(left.is_empty(), "{left:?}");
    }
    run.abort();
    let _ = run.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_written_by_hand_stop_no_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db").display().to_string();
    rows_written_by_hand_stop_no_subscription(&path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_written_by_hand_stop_no_subscription() {
    let url = synckit_workspace::database_url().await;
    rows_written_by_hand_stop_no_subscription(&url).await;
}
