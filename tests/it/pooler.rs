//! Behind a real PgBouncer in transaction mode, where consecutive
//! transactions of one client run on whichever server connection is free:
//! the shared behaviour suite, concurrent writers and readers, and what the
//! store refuses because it cannot work through a pooler.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use synckit::postgres::{Config, PgStore, migrate};
use synckit::{Error, EventStore, ExpectedVersion, Filter, NewEvent, Start, SubscriptionSource};
use synckit_workspace::pooled_database_url;

/// A pooled configuration: more client connections than the pooler has
/// server connections, so that clients share them.
fn pooled_config(pooled: &str, direct: Option<&str>, batch_size: usize) -> Config {
    let mut config = Config::new(pooled);
    config.transaction_pooling = true;
    config.direct_connection_string = direct.map(str::to_owned);
    config.batch_size = batch_size;
    config.max_open_conns = 8;
    config.min_idle_conns = 0;
    config.notification_timeout = Duration::from_millis(500);
    config
}

/// A store on a fresh database through the pooler, listening directly.
pub(crate) async fn pooled_store(batch_size: usize) -> PgStore {
    let (pooled, direct) = pooled_database_url().await;
    PgStore::connect(pooled_config(&pooled, Some(&direct), batch_size))
        .await
        .expect("connect through the pooler")
}

mod suite {
    crate::behaviour_suite!(async { super::pooled_store(7).await });
}

/// Writers and a catch-up subscription through the pooler: every event
/// once, in order, with no session state carried between statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_a_subscriber_through_the_pooler_see_every_event_once() {
    const WRITERS: usize = 4;
    const EACH: usize = 50;
    let store = pooled_store(7).await;
    let mut subscription = store
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    let event =
                        NewEvent::new(format!("w{w}-{}", n % 3), "Counted", json!({ "n": n }));
                    store
                        .append(ExpectedVersion::Any, vec![event])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    while seen.len() < WRITERS * EACH {
        let event = crate::behaviour::next_within(&mut subscription)
            .await
            .unwrap();
        seen.push(event.version);
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seen:?}"
    );
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), WRITERS * EACH);
    let loaded = store.load(synckit::Cursor::START).await.unwrap();
    assert_eq!(loaded.len(), WRITERS * EACH);
    assert!(
        store.is_listener_connected(),
        "the listener connects directly"
    );
    // No statement of synckit's outlives the transaction that prepared
    // it; what stays on the server connections is the driver's connection
    // setup (see the README on poolers).
    let left = store.prepared_statements().await.unwrap();
    assert!(
        left.iter()
            .all(|s| s == "SET TIME ZONE 'UTC'" || s == "SET CLIENT_ENCODING TO 'UTF8'"),
        "{left:?}"
    );
}

/// Without a direct connection, what needs a session is refused with an
/// error that says what to set; the rest works through the pooler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_needs_a_session_is_refused_without_a_direct_connection() {
    let (pooled, direct) = pooled_database_url().await;
    let err = PgStore::connect(pooled_config(&pooled, None, 7))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(
        err.to_string().contains("direct_connection_string"),
        "{err}"
    );
    let err = migrate(&pooled_config(&pooled, None, 7)).await.unwrap_err();
    assert!(
        err.to_string().contains("direct_connection_string"),
        "{err}"
    );

    migrate(&pooled_config(&pooled, Some(&direct), 7))
        .await
        .unwrap();
    let mut config = pooled_config(&pooled, None, 7);
    config.run_migrations = false;
    let store = PgStore::connect(config).await.unwrap();
    store
        .append(
            ExpectedVersion::NoStream,
            vec![NewEvent::new("a", "T", json!({}))],
        )
        .await
        .unwrap();
    assert_eq!(store.load(synckit::Cursor::START).await.unwrap().len(), 1);
    let err = store
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("direct_connection_string"),
        "{err}"
    );
    assert!(!store.is_listener_connected());
    // The handler shapes go through the same refusal.
    let handler =
        synckit::HandlerSubscriptions::subscribe_with(&store, synckit::Filter::all(), |_| async {
            Ok::<_, std::convert::Infallible>(())
        })
        .await;
    assert!(handler.is_err());
}

/// Through the pooler the notifications go by value after the commit (the
/// session setting of the direct path would not be this client's): every
/// append's events are notified, once each, in order. No idle tick can
/// stand in for them here: the listener of this test is a raw one, and the
/// store's own is not started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_through_the_pooler_notify_after_their_commit() {
    let (pooled, direct) = pooled_database_url().await;
    let store = PgStore::connect(pooled_config(&pooled, Some(&direct), 100))
        .await
        .expect("connect through the pooler");
    let (_listener, mut notifications) = synckit_workspace::raw_listener(
        &direct,
        &format!("LISTEN {}", synckit::notification::GLOBAL_CHANNEL),
    )
    .await;
    let appends: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(
                        ExpectedVersion::NoStream,
                        vec![
                            NewEvent::new(format!("p{i}"), "T", json!({})).with_id(format!("e{i}")),
                        ],
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    for a in appends {
        a.await.unwrap();
    }
    let mut ids = Vec::new();
    while ids.len() < 6 {
        let (_, payload) = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
            .await
            .expect("a notification within 10 s")
            .unwrap();
        ids.push(
            synckit::NotificationPayload::from_json(&payload)
                .unwrap()
                .id,
        );
    }
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 6, "{ids:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), notifications.recv())
            .await
            .is_err(),
        "no duplicate"
    );
}
