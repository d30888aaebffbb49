//! `RemoteStore` over real TCP: the shared behaviour suite through the HTTP
//! face onto SQLite and PostgreSQL, a server stopped and started again
//! under live subscriptions with writers running, and access control as a
//! client sees it.

use synckit::SubscriptionSource;
use synckit::client::{Config, RemoteStore};
use synckit::server::{self, Limits};

/// Serves `store` to anyone on a free port, with pages smaller than the
/// client's (so reads go on past the server's cap), and connects a
/// client.
pub(crate) async fn remote<S: SubscriptionSource>(store: S) -> RemoteStore {
    let app = server::router(store)
        .allow_anonymous()
        .limits(Limits::default().with_page_size(5))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = Config::new(format!("http://{address}")).with_batch_size(7);
    RemoteStore::connect(config).await.expect("connect")
}

mod on_sqlite {
    crate::behaviour_suite!(async { super::remote(crate::sqlite::fresh_store(7).await).await });
}

mod on_postgres {
    crate::behaviour_suite!(async { super::remote(crate::postgres::store_with(7).await.0).await });
}

use std::collections::HashSet;

use crate::restartable::Server;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use synckit::{Cursor, Error, EventStore, ExpectedVersion, Filter, Message, NewEvent, Start};

fn backing_file() -> std::path::PathBuf {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    std::mem::forget(dir);
    path
}

/// Appends one event, retrying while the server is away; an answer lost
/// in the cut is safe to retry, since the event keeps its id. Returns how
/// many attempts failed.
async fn append_until_stored(store: &RemoteStore, event: NewEvent) -> u32 {
    let mut failed = 0;
    loop {
        match store
            .append(ExpectedVersion::Any, vec![event.clone()])
            .await
        {
            Ok(_) => return failed,
            Err(e) if e.is_transient() => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("append {}: {e}", event.id()),
        }
    }
}

/// The server goes down and comes back on the same port while two writers
/// append through the client and a subscription follows from the
/// beginning: the subscription gets every event once, in order, and goes
/// live again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_under_writers_and_a_live_subscription_loses_nothing_and_repeats_nothing()
{
    const PER_WRITER: usize = 150;
    let path = backing_file();
    let mut server = Server::start(path.clone(), 0, anyone).await;
    let port = server.port;
    let config = Config::new(server.url()).with_max_backoff(Duration::from_millis(200));
    let client = RemoteStore::connect(config).await.unwrap();

    let mut subscription = client
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap()
        .messages();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            match message {
                Ok(Message::Event(event)) => {
                    if seen_tx.send((event.version, event.id.clone())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                // The client closed at the end.
                Err(Error::StoreClosed) => break,
                Err(e) => {
                    assert!(e.is_transient(), "only transient errors while away: {e}");
                }
            }
        }
    });

    let writers: Vec<_> = (0..2)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut failed = 0;
                for n in 0..PER_WRITER {
                    let event = NewEvent::new(format!("w{w}"), "Tick", json!({ "n": n }))
                        .with_id(format!("w{w}-{n}"));
                    failed += append_until_stored(&client, event).await;
                }
                failed
            })
        })
        .collect();

    let mut seen = Vec::new();
    let deadline = Duration::from_secs(30);
    while seen.len() < 60 {
        seen.push(
            tokio::time::timeout(deadline, seen_rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    server.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = Server::start(path, port, anyone).await;

    let mut failed = 0;
    for writer in writers {
        failed += writer.await.unwrap();
    }
    assert!(failed > 0, "the writers never met the server down");
    while seen.len() < 2 * PER_WRITER {
        let next = tokio::time::timeout(deadline, seen_rx.recv()).await;
        seen.push(next.expect("an event is missing").unwrap());
    }
    // Nothing more comes: no event twice.
    let extra = tokio::time::timeout(Duration::from_millis(500), seen_rx.recv()).await;
    assert!(extra.is_err(), "an event came twice: {extra:?}");

    let versions: Vec<u64> = seen.iter().map(|(v, _)| *v).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "out of order");
    let ids: HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), 2 * PER_WRITER);
    let stored = client.load(Cursor::START).await.unwrap();
    assert_eq!(stored.len(), 2 * PER_WRITER);

    // Live again: an event appended now arrives.
    let last = client
        .append(
            ExpectedVersion::Any,
            vec![NewEvent::new("w0", "Tick", json!({}))],
        )
        .await
        .unwrap();
    let (version, _) = tokio::time::timeout(deadline, seen_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(version, last[0].version);
    client.close().await.unwrap();
    // The subscription may or may not have read while the server was
    // away; if it did, it said so with transient errors only.
    tokio::time::timeout(deadline, follower)
        .await
        .unwrap()
        .unwrap();
    drop(server);
}

const TOKENS: &str = "ada user-ada*\nbob user-bob*\n";

fn with_tokens(store: synckit::sqlite::SqliteStore) -> axum::Router {
    let policy = server::TokenPolicy::parse(TOKENS).unwrap();
    server::router(store).policy(policy).build().unwrap()
}

fn anyone(store: synckit::sqlite::SqliteStore) -> axum::Router {
    let limits = Limits::default().with_heartbeat(Duration::from_millis(500));
    server::router(store)
        .allow_anonymous()
        .limits(limits)
        .build()
        .unwrap()
}

/// What a principal may not do comes back as a 401 or 403
/// [`Error::Remote`], writes nothing, and leaves others' events out of its
/// reads and subscriptions while its position moves past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_as_a_client_sees_it() {
    let server = Server::start(backing_file(), 0, with_tokens).await;
    let as_who = |token: &str| Config::new(server.url()).with_token(token);

    let refused = RemoteStore::connect(as_who("nobody")).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Remote { status: Some(401), code, .. } if code == "unauthorized"),
        "{refused}"
    );
    assert!(!refused.is_transient());
    let anonymous = RemoteStore::connect(Config::new(server.url())).await;
    assert!(matches!(
        anonymous,
        Err(Error::Remote {
            status: Some(401),
            ..
        })
    ));

    let ada = RemoteStore::connect(as_who("ada")).await.unwrap();
    let bob = RemoteStore::connect(as_who("bob")).await.unwrap();
    let mut following = ada
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap()
        .messages();
    assert_eq!(
        crate::behaviour::next_within(&mut following).await.unwrap(),
        Message::CaughtUp
    );

    let tick = |stream: &str| NewEvent::new(stream, "Tick", json!({}));
    bob.append(ExpectedVersion::Any, vec![tick("user-bob")])
        .await
        .unwrap();
    let forbidden = ada
        .append(ExpectedVersion::Any, vec![tick("user-bob")])
        .await
        .unwrap_err();
    assert!(
        matches!(&forbidden, Error::Remote { status: Some(403), code, .. } if code == "forbidden"),
        "{forbidden}"
    );
    // A batch with one stream it may not append to writes nothing.
    let mixed = ada
        .append(
            ExpectedVersion::Any,
            vec![tick("user-ada"), tick("user-bob")],
        )
        .await;
    assert!(matches!(
        mixed,
        Err(Error::Remote {
            status: Some(403),
            ..
        })
    ));
    assert_eq!(bob.latest_version().await.unwrap(), Cursor::new(1));
    assert!(matches!(
        ada.read_aggregate("user-bob", 0, 10).await,
        Err(Error::Remote {
            status: Some(403),
            ..
        })
    ));
    let bobs = bob.load(Cursor::START).await.unwrap();
    assert!(matches!(
        ada.get(&bobs[0].id).await,
        Err(Error::EventNotFound { .. })
    ));

    let mine = ada
        .append(ExpectedVersion::Any, vec![tick("user-ada")])
        .await
        .unwrap();
    // Bob's event is not in ada's reads or her subscription; hers is.
    let read = ada.load(Cursor::START).await.unwrap();
    assert_eq!(read, mine);
    match crate::behaviour::next_within(&mut following).await.unwrap() {
        Message::Event(event) => assert_eq!(event.id, mine[0].id),
        other => panic!("expected ada's event, got {other:?}"),
    }
    assert_eq!(ada.get(&mine[0].id).await.unwrap(), mine[0]);
}

/// Bad configuration is refused before any request; a server that is not
/// there is a transient error naming the operation.
#[tokio::test]
async fn bad_configuration_and_an_absent_server() {
    for (url, why) in [
        ("not an address", "url"),
        ("ftp://127.0.0.1/", "url"),
        ("mailto:ops@example.com", "url"),
    ] {
        let refused = RemoteStore::new(Config::new(url)).unwrap_err();
        assert!(
            matches!(refused, Error::InvalidInput { field, .. } if field == why),
            "{url}"
        );
    }
    let zero = Config::new("http://127.0.0.1:1").with_batch_size(0);
    assert!(matches!(
        RemoteStore::new(zero),
        Err(Error::InvalidInput {
            field: "batch_size",
            ..
        })
    ));
    let token = Config::new("http://127.0.0.1:1").with_token("two words");
    assert!(matches!(
        RemoteStore::new(token),
        Err(Error::InvalidInput { field: "token", .. })
    ));

    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let absent = RemoteStore::connect(Config::new(url.as_str()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &absent,
            Error::Remote {
                status: None,
                operation: "latest_version",
                ..
            }
        ),
        "{absent}"
    );
    assert!(absent.is_transient());
    // Offline construction works, and calls say what failed.
    let offline = RemoteStore::new(Config::new(url)).unwrap();
    let append = offline
        .append(
            ExpectedVersion::Any,
            vec![NewEvent::new("a", "T", json!({}))],
        )
        .await
        .unwrap_err();
    assert!(matches!(
        append,
        Error::Remote {
            operation: "append",
            ..
        }
    ));
    assert!(append.is_transient());
    offline.close().await.unwrap();
    assert!(matches!(
        offline.latest_version().await,
        Err(Error::StoreClosed)
    ));
}

/// The live feed a store opens for its subscriptions closes after the
/// last of them is dropped, and when the store closes: with one live
/// connection allowed, another client gets it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_goes_with_the_last_subscription_and_with_close() {
    let store = crate::sqlite::fresh_store(7).await;
    let app = server::router(store)
        .allow_anonymous()
        .limits(Limits::default().with_live_connections(1))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    // Whether the one live connection is free now, asked until `deadline`
    // for the answer `free`.
    let live_is = |free: bool| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let response = http.get(format!("{url}/events/live")).send().await.unwrap();
                let answer = response.status() != 503;
                drop(response);
                if answer == free || tokio::time::Instant::now() > deadline {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let client = RemoteStore::connect(Config::new(url.as_str()))
        .await
        .unwrap();
    let first = client.subscribe(Filter::all(), Start::Now).await.unwrap();
    let second = client
        .subscribe(Filter::stream("a"), Start::Now)
        .await
        .unwrap();
    assert!(!live_is(false).await, "the feed holds the live connection");
    drop(first);
    assert!(!live_is(false).await, "one subscription is left");
    drop(second);
    assert!(
        live_is(true).await,
        "the feed outlived its last subscription"
    );

    // A new subscription opens the feed again, and close ends it.
    let mut third = client
        .subscribe(Filter::all(), Start::Beginning)
        .await
        .unwrap()
        .messages();
    assert_eq!(
        crate::behaviour::next_within(&mut third).await.unwrap(),
        Message::CaughtUp
    );
    assert!(!live_is(false).await, "no feed for the new subscription");
    client.close().await.unwrap();
    assert!(live_is(true).await, "the feed outlived close");
}
