//! Durable subscriptions as a projection uses them: checkpoints that reach
//! the head past events the filter does not take, waiting for a version
//! (read your writes), the caught-up report of `run`, and the handler retry
//! settings. Instantiated per backend by `behaviour_suite!`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use synckit::{
    Cursor, Error, EventStore, ExpectedVersion, Filter, HandlerRetry, Message, Recorded, Start,
    SubscriptionSource,
};

use crate::behaviour::{Account, AuditNote, checkpoint_reaches, next_within};

fn note(id: &str, n: u64) -> AuditNote {
    AuditNote {
        id: id.into(),
        text: format!("note {n}"),
    }
}

fn deposited(id: &str, amount: u64) -> Account {
    Account::Deposited {
        id: id.into(),
        amount,
    }
}

async fn notes<S: EventStore>(store: &S, count: u64) -> u64 {
    let batch: Vec<_> = (0..count).map(|n| note("n", n)).collect();
    let written = store
        .append_events(ExpectedVersion::Any, &batch)
        .await
        .unwrap();
    written.last().unwrap().version
}

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 20 s"))
}

/// A filtered durable subscription's checkpoint moves past the events it
/// does not take, in the catch-up and live, so it reaches the head, its
/// `run` reports the catch-up, and a restart starts at the head.
pub async fn a_filtered_checkpoint_reaches_the_head_past_events_it_does_not_take<
    S: SubscriptionSource,
>(
    store: S,
) {
    // More notes than a page (the suite's batch is 7), one account event
    // among them.
    notes(&store, 10).await;
    let first = store
        .append_event(ExpectedVersion::Any, &deposited("a", 1))
        .await
        .unwrap()
        .version;
    let head = notes(&store, 20).await;

    // As messages: the event, then how far the read went, then the marker.
    let mut messages = Box::pin(
        Account::subscribe_from(&store, Start::Beginning)
            .await
            .unwrap()
            .messages(),
    );
    match next_within(&mut messages).await.unwrap() {
        Message::Event(e) => assert_eq!(e.version, first),
        other => panic!("expected event {first}, got {other:?}"),
    }
    assert_eq!(
        next_within(&mut messages).await.unwrap(),
        Message::Progress(Cursor::new(head))
    );
    assert_eq!(next_within(&mut messages).await.unwrap(), Message::CaughtUp);

    let subscription = Account::subscribe_from(&store, Start::checkpoint("accounts"))
        .await
        .unwrap();
    let progress = subscription.progress();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handled = seen.clone();
    let running = tokio::spawn(subscription.run(move |event: Recorded<Account>| {
        handled.lock().unwrap().push(event.version);
        async { Ok::<_, std::convert::Infallible>(()) }
    }));
    let reached = within("caught up", progress.caught_up()).await.unwrap();
    assert_eq!(reached, Cursor::new(head));
    assert!(progress.is_caught_up());
    checkpoint_reaches(&store, "accounts", head).await;

    // Live: only notes commit, and the checkpoint follows them.
    let live_head = notes(&store, 9).await;
    within("the live notes", progress.wait_for(live_head))
        .await
        .unwrap();
    checkpoint_reaches(&store, "accounts", live_head).await;
    assert_eq!(*seen.lock().unwrap(), [first]);
    running.abort();
    let _ = running.await;
    assert!(progress.has_ended());

    // A restart starts at the head: nothing is read twice.
    let again = Account::subscribe_from(&store, Start::checkpoint("accounts"))
        .await
        .unwrap();
    assert_eq!(again.position(), Cursor::new(live_head));
    let mut again = Box::pin(again.messages());
    assert_eq!(next_within(&mut again).await.unwrap(), Message::CaughtUp);
}

/// `wait_for(v)` returns once the handler has handled everything up to `v`
/// and the checkpoint is saved; a waiter is told when the run ends first.
pub async fn wait_for_returns_after_the_handler_and_fails_when_the_run_ends<
    S: SubscriptionSource,
>(
    store: S,
) {
    let subscription = store
        .subscribe(Filter::all(), Start::checkpoint("reader"))
        .await
        .unwrap();
    let progress = subscription.progress();
    assert_eq!(progress.handled(), Cursor::START);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handled = seen.clone();
    let running = tokio::spawn(subscription.run(move |event: Recorded| {
        let handled = handled.clone();
        async move {
            // Slow enough that a wait that did not wait would see nothing.
            tokio::time::sleep(Duration::from_millis(5)).await;
            handled.lock().unwrap().push(event.version);
            Ok::<_, std::convert::Infallible>(())
        }
    }));
    within("caught up", progress.caught_up()).await.unwrap();
    for round in 0..3 {
        let written = store
            .append_events(
                ExpectedVersion::Any,
                &[deposited("w", round), deposited("w", round + 10)],
            )
            .await
            .unwrap();
        let version = written.last().unwrap().version;
        let reached = within("the write", progress.wait_for(version))
            .await
            .unwrap();
        assert!(reached.version() >= version);
        assert!(seen.lock().unwrap().contains(&version), "handled first");
        let saved = store.load_checkpoint("reader").await.unwrap().unwrap();
        assert!(saved.version() >= version, "saved first: {saved:?}");
        // Already reached: returns at once.
        progress.wait_for(version).await.unwrap();
    }
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4, 5, 6]);

    let waiter = {
        let progress = progress.clone();
        tokio::spawn(async move { progress.wait_for(1_000).await })
    };
    store.close().await.unwrap();
    within("the run", running).await.unwrap().unwrap();
    let err = within("the waiter", waiter).await.unwrap().unwrap_err();
    match &err {
        Error::SubscriptionEnded {
            subscription,
            position,
            wanted,
        } => {
            assert_eq!(subscription, "reader");
            assert_eq!((*position, *wanted), (6, Some(1_000)));
        }
        other => panic!("expected SubscriptionEnded, got {other:?}"),
    }
    assert!(err.to_string().contains("reader"), "{err}");
}

/// The handler is called as often as the retry settings say, and the error
/// `run` stops with names the subscription and the event.
pub async fn handler_retries_follow_the_settings_and_the_error_names_the_subscription<
    S: SubscriptionSource,
>(
    store: S,
) {
    for amount in 1..=3 {
        store
            .append_event(ExpectedVersion::Any, &deposited("r", amount))
            .await
            .unwrap();
    }
    // Version 2 fails twice, then succeeds; version 3 always fails.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let counted = calls.clone();
    let subscription = store
        .subscribe(Filter::all(), Start::checkpoint("retrying"))
        .await
        .unwrap()
        .with_handler_retry(
            HandlerRetry::default()
                .with_attempts(4)
                .with_backoff(Duration::from_millis(1), Duration::from_millis(4))
                .then_stop(),
        );
    let progress = subscription.progress();
    let result = within(
        "the run",
        subscription.run(move |event: Recorded| {
            let mut calls = counted.lock().unwrap();
            calls.push(event.version);
            let failures = calls.iter().filter(|v| **v == event.version).count();
            let outcome = match event.version {
                2 if failures <= 2 => Err(format!("flaky {failures}")),
                3 => Err(format!("broken {failures}")),
                _ => Ok(()),
            };
            async move { outcome }
        }),
    )
    .await;
    assert_eq!(*calls.lock().unwrap(), [1, 2, 2, 2, 3, 3, 3, 3]);
    match &result {
        Err(Error::Handler {
            subscription,
            version,
            source,
        }) => {
            assert_eq!((subscription.as_str(), *version), ("retrying", 3));
            assert_eq!(source.to_string(), "broken 4");
        }
        other => panic!("expected the handler's error, got {other:?}"),
    }
    assert_eq!(progress.handled(), Cursor::new(2));
    assert!(progress.has_ended());
    assert_eq!(
        store.load_checkpoint("retrying").await.unwrap(),
        Some(Cursor::new(2)),
        "a durable subscription resumes with the failing event"
    );

    // Once: the first failure stops it.
    let once = store
        .subscribe(Filter::all(), Start::After(Cursor::new(2)))
        .await
        .unwrap()
        .with_handler_retry(HandlerRetry::once());
    let tries = Arc::new(Mutex::new(0));
    let counted = tries.clone();
    let result = within(
        "the run",
        once.run(move |_: Recorded| {
            *counted.lock().unwrap() += 1;
            async { Err("no") }
        }),
    )
    .await;
    assert!(
        matches!(result, Err(Error::Handler { version: 3, .. })),
        "{result:?}"
    );
    assert_eq!(*tries.lock().unwrap(), 1);

    // The stream of a subscription is unaffected by the settings.
    let mut plain = store
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap()
        .with_handler_retry(HandlerRetry::once());
    assert_eq!(next_within(&mut plain).await.unwrap().version, 1);
    assert!(plain.next().await.is_some());
}

/// Log lines written while `f` runs on this thread.
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every failed handler call is a log line naming the subscription, the
/// event and the attempt; the last one says the subscription stops.
#[tokio::test(flavor = "current_thread")]
async fn every_failed_handler_attempt_is_logged_with_the_subscription() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || Captured(sink.clone()))
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let store = synckit::MemoryStore::new();
    store
        .append_event(ExpectedVersion::Any, &deposited("l", 1))
        .await
        .unwrap();
    let subscription = store
        .subscribe(Filter::all(), Start::checkpoint("ledger"))
        .await
        .unwrap()
        .with_handler_retry(
            HandlerRetry::default()
                .with_attempts(3)
                .with_backoff(Duration::from_millis(1), Duration::from_millis(1))
                .then_stop(),
        );
    let result = subscription
        .run(|_: Recorded| async { Err("the ledger is read-only") })
        .await;
    assert!(matches!(result, Err(Error::Handler { version: 1, .. })));
    let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("handler failed"))
        .collect();
    assert_eq!(failures.len(), 3, "{text}");
    for (n, line) in failures.iter().enumerate() {
        for part in [
            "subscription=\"ledger\"",
            "version=1",
            &format!("attempt={}", n + 1),
            "attempts=3",
            "the ledger is read-only",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line}");
        }
    }
    assert!(failures[0].contains("WARN") && failures[0].contains("retrying"));
    assert!(failures[2].contains("ERROR") && failures[2].contains("stopping"));
}
