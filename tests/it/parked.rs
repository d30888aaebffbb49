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
