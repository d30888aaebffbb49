//! The behaviour every backend shares, written once.
//!
//! Each check takes a fresh, empty store. `behaviour_suite!` instantiates
//! every check for one backend, so the backends cannot drift apart.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use synckit::{
    Cursor, Error, Event, ExpectedVersion, Filter, Message, NewEvent, Start, SubscriptionSource,
};

/// The events the suite appends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum Account {
    Opened {
        #[event(aggregate_id)]
        id: String,
        owner: String,
    },
    Deposited {
        #[event(aggregate_id)]
        id: String,
        amount: u64,
    },
}

/// A second event type, to check type filters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(type = "audit.note")]
pub struct AuditNote {
    #[event(aggregate_id)]
    pub id: String,
    pub text: String,
}

fn opened(id: &str) -> Account {
    Account::Opened {
        id: id.into(),
        owner: "Ada".into(),
    }
}

fn deposited(id: &str, amount: u64) -> Account {
    Account::Deposited {
        id: id.into(),
        amount,
    }
}

/// Waits for the next item of a subscription, failing the test after a
/// generous deadline instead of hanging.
pub(crate) async fn next_within<S: futures::Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("no item within 20 s")
        .expect("the stream ended")
}

pub async fn expected_versions_are_enforced<S: SubscriptionSource>(store: S) {
    let first = store
        .append_event(ExpectedVersion::NoStream, &opened("a"))
        .await
        .unwrap();
    assert_eq!((first.version, first.stream_version), (1, 1));

    let err = store
        .append_event(ExpectedVersion::NoStream, &deposited("a", 1))
        .await
        .unwrap_err();
    match err {
        Error::Conflict {
            aggregate_id,
            expected,
            actual,
        } => {
            assert_eq!(aggregate_id, "a");
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert_eq!(actual, Some(1));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let err = store
        .append_event(ExpectedVersion::Exact(5), &deposited("a", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                actual: Some(1),
                expected: ExpectedVersion::Exact(5),
                ..
            }
        ),
        "{err}"
    );
    let err = store
        .append_event(ExpectedVersion::StreamExists, &opened("nobody"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { actual: None, .. }), "{err}");

    let second = store
        .append_event(ExpectedVersion::Exact(1), &deposited("a", 5))
        .await
        .unwrap();
    assert_eq!((second.version, second.stream_version), (2, 2));
    store
        .append_event(ExpectedVersion::StreamExists, &deposited("a", 6))
        .await
        .unwrap();
    store
        .append_event(ExpectedVersion::Any, &deposited("a", 7))
        .await
        .unwrap();
    assert_eq!(store.stream_version("a").await.unwrap(), Some(4));
    assert_eq!(store.stream_version("b").await.unwrap(), None);
    assert_eq!(store.load(Cursor::START).await.unwrap().len(), 4);
}

pub async fn concurrent_appends_with_one_expectation_have_one_winner<S: SubscriptionSource>(
    store: S,
) {
    store
        .append_event(ExpectedVersion::NoStream, &opened("race"))
        .await
        .unwrap();
    let attempts = (0..8).map(|i| {
        let store = store.clone();
        async move {
            store
                .append_event(ExpectedVersion::Exact(1), &deposited("race", i))
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(
                r,
                Error::Conflict {
                    actual: Some(2),
                    expected: ExpectedVersion::Exact(1),
                    ..
                }
            ),
            "{r}"
        );
    }
    assert_eq!(store.stream_version("race").await.unwrap(), Some(2));
}

pub async fn same_id_is_idempotent_other_content_is_a_duplicate<S: SubscriptionSource>(store: S) {
    let event = NewEvent::from_event(&opened("a")).unwrap().with_id("evt-1");
    let first = store
        .append(ExpectedVersion::NoStream, vec![event.clone()])
        .await
        .unwrap();
    // A retry of the same append (even with a now-stale expectation) returns
    // the stored record and writes nothing.
    let again = store
        .append(ExpectedVersion::NoStream, vec![event.clone()])
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(store.latest_version().await.unwrap(), Cursor::new(1));

    let other = NewEvent::from_event(&deposited("a", 1))
        .unwrap()
        .with_id("evt-1");
    let err = store
        .append(ExpectedVersion::Any, vec![other])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateEvent { id, .. } if id == "evt-1"),
        "{err}"
    );

    // A batch that repeats a stored event next to a new one is refused whole.
    let new = NewEvent::from_event(&deposited("a", 2))
        .unwrap()
        .with_id("evt-2");
    let err = store
        .append(ExpectedVersion::Any, vec![event, new])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateEvent { .. }), "{err}");
    assert_eq!(store.load(Cursor::START).await.unwrap().len(), 1);
}

pub async fn batches_are_atomic_and_bad_input_leaves_nothing<S: SubscriptionSource>(store: S) {
    let good = |n: u64| NewEvent::from_event(&deposited("b", n)).unwrap();
    let bad_inputs = vec![
        vec![
            good(1),
            NewEvent::new("b", "Deposited", json!({"note": "nul\u{0}"})),
        ],
        vec![good(1), good(2).with_id("")],
        vec![good(1), good(2).with_id("x".repeat(300))],
        vec![good(1), NewEvent::new("b\u{0}", "Deposited", json!({}))],
        vec![good(1), good(2).with_metadata("m", json!("\u{0}"))],
        vec![good(1), NewEvent::new("b", "T".repeat(256), json!({}))],
        vec![good(1), good(2).with_id("same"), good(3).with_id("same")],
    ];
    for batch in bad_inputs {
        let err = store.append(ExpectedVersion::Any, batch).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }
    // An event that fails to serialise in the middle of a typed batch.
    #[derive(Debug, Serialize, Deserialize, Event)]
    struct Fails {
        #[event(aggregate_id)]
        id: String,
        #[serde(serialize_with = "refuse")]
        value: u8,
    }
    fn refuse<S: serde::Serializer>(_: &u8, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refused"))
    }
    let err = store
        .append_events(ExpectedVersion::Any, &[opened("b")])
        .await
        .map(|_| ());
    assert!(err.is_ok());
    let err = store
        .append_events(
            ExpectedVersion::Any,
            &[
                Fails {
                    id: "b".into(),
                    value: 1,
                },
                Fails {
                    id: "b".into(),
                    value: 2,
                },
            ],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Serialization { .. }), "{err}");
    // A batch whose expectation fails is not written either.
    let err = store
        .append(ExpectedVersion::Exact(7), vec![good(1), good(2)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");

    let all = store.load(Cursor::START).await.unwrap();
    assert_eq!(all.len(), 1, "only the one good append is stored: {all:?}");

    let batch: Vec<_> = (1..=50).map(good).collect();
    let recorded = store
        .append(ExpectedVersion::Exact(1), batch)
        .await
        .unwrap();
    let versions: Vec<_> = recorded.iter().map(|r| r.stream_version).collect();
    assert_eq!(versions, (2..=51).collect::<Vec<_>>());
}

pub async fn loads_page_in_order_after_a_cursor<S: SubscriptionSource>(store: S) {
    for i in 0..25u64 {
        let id = format!("s{}", i % 3);
        store
            .append_event(ExpectedVersion::Any, &deposited(&id, i))
            .await
            .unwrap();
    }
    let all = store.load(Cursor::START).await.unwrap();
    assert_eq!(all.len(), 25);
    assert!(all.windows(2).all(|w| w[0].version < w[1].version));
    let after = store.load(Cursor::new(all[9].version)).await.unwrap();
    assert_eq!(after.len(), 15);
    assert_eq!(after[0].version, all[10].version);

    let s1 = store.load_by_aggregate("s1", Cursor::START).await.unwrap();
    assert_eq!(s1.len(), 8);
    assert!(s1.iter().all(|e| e.aggregate_id == "s1"));
    let streamed: Vec<_> = store
        .read_stream(Filter::all(), Cursor::START)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed, all);
    let latest = store.latest_version().await.unwrap();
    assert_eq!(latest, all.last().unwrap().cursor());
    assert!(store.load(latest).await.unwrap().is_empty());

    let typed = all[0].clone().decode::<Account>().unwrap();
    assert_eq!(typed.data, deposited("s0", 0));
    assert!(store.parse_version("-5").is_err());
    let err = store
        .load_by_aggregate("", Cursor::START)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
}

/// What an append returns is what a load reads back: data and metadata
/// (nested, unicode, numbers) as written, positions and times as stored.
pub async fn events_read_back_as_written_and_as_returned<S: SubscriptionSource>(store: S) {
    let batch: Vec<NewEvent> = (0..3)
        .map(|i| {
            NewEvent::new(
                "rb",
                "Noted",
                json!({"i": i, "text": "zoë ∑ \"quoted\"", "nested": {"list": [1, 2.5, null, true]}}),
            )
            .with_metadata("tenant", json!({"id": 7, "name": "Ünïcode"}))
            .with_metadata("trace", json!(["a", "b"]))
        })
        .collect();
    let returned = store
        .append(ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    let loaded = store.load(Cursor::START).await.unwrap();
    assert_eq!(loaded, returned);
    for (sent, got) in batch.iter().zip(&loaded) {
        assert_eq!(sent.data(), &got.data);
        assert_eq!(sent.metadata(), &got.metadata);
        assert_eq!(sent.id(), got.id);
    }
}

/// Reads filtered by one value and by several (the backends query the two
/// differently) return exactly the matching events, in order, from a cursor.
pub async fn filters_with_one_or_several_values_select_the_same_events<S: SubscriptionSource>(
    store: S,
) {
    for i in 0..30u64 {
        let id = format!("f{}", i % 3);
        if i % 4 == 0 {
            let note = AuditNote {
                id: id.clone(),
                text: format!("note {i}"),
            };
            store
                .append_event(ExpectedVersion::Any, &note)
                .await
                .unwrap();
        } else {
            store
                .append_event(ExpectedVersion::Any, &deposited(&id, i))
                .await
                .unwrap();
        }
    }
    let all = store.load(Cursor::START).await.unwrap();
    let filters = [
        Filter::stream("f1"),
        Filter::streams(["f0", "f2"]),
        Filter::types(["audit.note"]),
        Filter::types(["Deposited", "audit.note"]),
        Filter::stream("f2").and_types(["Deposited"]),
        Filter::streams(["f0", "f1"]).and_types(["audit.note", "Opened"]),
        Filter::streams(["f0", "f1"]).and_types(["audit.note"]),
        Filter::stream("f0").and_types(["Deposited", "audit.note"]),
        Filter::stream("nobody"),
    ];
    for filter in filters {
        for after in [Cursor::START, all[11].cursor()] {
            let expected: Vec<_> = all
                .iter()
                .filter(|e| e.cursor() > after && filter.matches(e))
                .cloned()
                .collect();
            let read: Vec<_> = store
                .read_stream(filter.clone(), after)
                .try_collect()
                .await
                .unwrap();
            assert_eq!(read, expected, "{} after {after}", filter.describe());
            let page = store.read(&filter, after, 3).await.unwrap();
            assert_eq!(
                page,
                expected[..expected.len().min(3)],
                "{}",
                filter.describe()
            );
        }
    }
    assert!(
        !store
            .read(&Filter::types(["audit.note"]), Cursor::START, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn typed_loads_decode_each_event_and_go_on_after_a_bad_one<S: SubscriptionSource>(
    store: S,
) {
    store
        .append_event(ExpectedVersion::NoStream, &opened("t"))
        .await
        .unwrap();
    for i in 0..20u64 {
        store
            .append_event(ExpectedVersion::Any, &deposited("t", i))
            .await
            .unwrap();
        if i % 4 == 0 {
            let note = AuditNote {
                id: "t".into(),
                text: format!("note {i}"),
            };
            store
                .append_event(ExpectedVersion::Any, &note)
                .await
                .unwrap();
        }
    }
    // Data a plain-SQL writer could store: the type is known, the shape not.
    let bad = NewEvent::new("t", "Deposited", json!({"id": "t", "amount": "lots"}));
    let bad_id = bad.id().to_owned();
    store.append(ExpectedVersion::Any, vec![bad]).await.unwrap();
    store
        .append_event(ExpectedVersion::Any, &deposited("t", 99))
        .await
        .unwrap();

    let items: Vec<synckit::Result<synckit::Recorded<Account>>> = store
        .read_stream_as::<Account>(Account::filter(), Cursor::START)
        .collect()
        .await;
    assert_eq!(
        items.len(),
        23,
        "every Account event, the bad one as an error"
    );
    match &items[21] {
        Err(Error::Decode {
            event_id: Some(id), ..
        }) => assert_eq!(id, &bad_id),
        other => panic!("expected a decode error for the bad event, got {other:?}"),
    }
    let good: Vec<_> = items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 21)
        .map(|(_, r)| r.unwrap())
        .collect();
    assert_eq!(good[0].data, opened("t"));
    assert_eq!(good[1].data, deposited("t", 0));
    assert_eq!(good.last().unwrap().data, deposited("t", 99));
    assert!(good.windows(2).all(|w| w[0].version < w[1].version));
    // The same events, the same way as reading raw and decoding.
    let raw: Vec<synckit::Recorded> = store
        .read_stream(Account::filter(), Cursor::START)
        .try_collect()
        .await
        .unwrap();
    let decoded: Vec<_> = raw
        .into_iter()
        .filter(|r| r.id != bad_id)
        .map(|r| r.decode::<Account>().unwrap())
        .collect();
    assert_eq!(good, decoded);
    // Raw JSON through the typed path equals the untyped read.
    let as_value: Vec<synckit::Recorded> = store
        .read_stream_as::<serde_json::Value>(Filter::all(), Cursor::START)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(as_value, store.load(Cursor::START).await.unwrap());
    let notes: Vec<_> = store
        .read_stream_as::<AuditNote>(AuditNote::filter(), Cursor::new(good[10].version))
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0].data.text, "note 12");
}

pub async fn typed_subscriptions_by_type_and_stream<S: SubscriptionSource>(store: S) {
    store
        .append_event(ExpectedVersion::Any, &opened("before"))
        .await
        .unwrap();
    let mut by_type = Account::subscribe(&store).await.unwrap();
    let mut stream_a = Account::subscribe_stream(&store, "a").await.unwrap();
    let mut notes = AuditNote::subscribe_from(&store, Start::Beginning)
        .await
        .unwrap();

    store
        .append_event(ExpectedVersion::Any, &opened("a"))
        .await
        .unwrap();
    store
        .append_event(
            ExpectedVersion::Any,
            &AuditNote {
                id: "a".into(),
                text: "hello".into(),
            },
        )
        .await
        .unwrap();
    store
        .append_event(ExpectedVersion::Any, &deposited("b", 3))
        .await
        .unwrap();
    store
        .append_event(ExpectedVersion::Any, &deposited("a", 4))
        .await
        .unwrap();

    let got: Vec<Account> = vec![
        next_within(&mut by_type).await.unwrap().data,
        next_within(&mut by_type).await.unwrap().data,
        next_within(&mut by_type).await.unwrap().data,
    ];
    assert_eq!(got, vec![opened("a"), deposited("b", 3), deposited("a", 4)]);

    let first = next_within(&mut stream_a).await.unwrap();
    let second = next_within(&mut stream_a).await.unwrap();
    assert_eq!((first.data, second.data), (opened("a"), deposited("a", 4)));
    assert_eq!(second.stream_version, 3);

    let note = next_within(&mut notes).await.unwrap();
    assert_eq!(note.data.text, "hello");
    assert_eq!(note.event_type, "audit.note");
}

pub async fn two_subscribers_are_independent_and_drop_alone<S: SubscriptionSource>(store: S) {
    let mut first = store
        .subscribe(Filter::stream("x"), Start::Now)
        .await
        .unwrap();
    let second = store
        .subscribe(Filter::stream("x"), Start::Now)
        .await
        .unwrap();
    let mut all = store.subscribe(Filter::all(), Start::Now).await.unwrap();
    store
        .append_event(ExpectedVersion::Any, &opened("x"))
        .await
        .unwrap();
    assert_eq!(next_within(&mut first).await.unwrap().aggregate_id, "x");
    drop(second);
    store
        .append_event(ExpectedVersion::Any, &deposited("x", 1))
        .await
        .unwrap();
    assert_eq!(next_within(&mut first).await.unwrap().stream_version, 2);
    assert_eq!(next_within(&mut all).await.unwrap().version, 1);
    assert_eq!(next_within(&mut all).await.unwrap().version, 2);
    assert_eq!(store.hub().len(), 2, "the dropped subscription is gone");
}

pub async fn decode_failure_is_an_error_item_and_the_subscription_goes_on<S: SubscriptionSource>(
    store: S,
) {
    let mut sub = Account::subscribe_from(&store, Start::Beginning)
        .await
        .unwrap();
    store
        .append(
            ExpectedVersion::Any,
            vec![
                NewEvent::new("a", "Deposited", json!({"id": "a", "amount": "lots"}))
                    .with_id("broken"),
            ],
        )
        .await
        .unwrap();
    store
        .append_event(ExpectedVersion::Any, &deposited("a", 1))
        .await
        .unwrap();
    let err = next_within(&mut sub).await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode { event_id: Some(id), event_type, .. }
            if id == "broken" && event_type == "Deposited"),
        "{err}"
    );
    assert!(err.to_string().contains("broken"), "{err}");
    let next = next_within(&mut sub).await.unwrap();
    assert_eq!(next.data, deposited("a", 1));
}

pub async fn catch_up_then_live_with_caught_up_marker<S: SubscriptionSource>(store: S) {
    let batch: Vec<_> = (0..30).map(|i| deposited("c", i)).collect();
    store
        .append_events(ExpectedVersion::Any, &batch)
        .await
        .unwrap();
    let mut messages = Box::pin(
        store
            .subscribe(Filter::all(), Start::After(Cursor::new(10)))
            .await
            .unwrap()
            .messages(),
    );
    for expected in 11..=30 {
        match next_within(&mut messages).await.unwrap() {
            Message::Event(e) => assert_eq!(e.version, expected),
            other => panic!("expected event {expected}, got {other:?}"),
        }
    }
    assert_eq!(next_within(&mut messages).await.unwrap(), Message::CaughtUp);
    store
        .append_event(ExpectedVersion::Any, &deposited("c", 99))
        .await
        .unwrap();
    match next_within(&mut messages).await.unwrap() {
        Message::Event(e) => assert_eq!(e.version, 31),
        other => panic!("expected the live event, got {other:?}"),
    }
}

pub async fn durable_subscription_resumes_after_its_checkpoint<S: SubscriptionSource>(store: S) {
    let batch: Vec<_> = (0..6).map(|i| deposited("d", i)).collect();
    store
        .append_events(ExpectedVersion::Any, &batch)
        .await
        .unwrap();
    {
        let mut sub = store
            .subscribe(Filter::all(), Start::checkpoint("projector"))
            .await
            .unwrap();
        for expected in 1..=3 {
            assert_eq!(next_within(&mut sub).await.unwrap().version, expected);
            sub.commit().await.unwrap();
        }
        // Event 4 is delivered but not acknowledged.
        assert_eq!(next_within(&mut sub).await.unwrap().version, 4);
    }
    let mut again = store
        .subscribe(Filter::all(), Start::checkpoint("projector"))
        .await
        .unwrap();
    assert_eq!(next_within(&mut again).await.unwrap().version, 4);
    let err = store
        .subscribe(Filter::all(), Start::checkpoint(""))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let plain = store.subscribe(Filter::all(), Start::Now).await.unwrap();
    assert!(
        plain.commit().await.is_err(),
        "only durable subscriptions commit"
    );
}

pub async fn closed_store_refuses_everything_and_ends_subscriptions<S: SubscriptionSource>(
    store: S,
) {
    store
        .append_event(ExpectedVersion::Any, &opened("z"))
        .await
        .unwrap();
    let mut sub = store.subscribe(Filter::all(), Start::Now).await.unwrap();
    store.close().await.unwrap();
    store.close().await.unwrap();
    let err = next_within(&mut sub).await.unwrap_err();
    assert!(matches!(err, Error::StoreClosed), "{err}");
    assert!(sub.next().await.is_none());
    assert!(matches!(
        store.append_event(ExpectedVersion::Any, &opened("z")).await,
        Err(Error::StoreClosed)
    ));
    assert!(matches!(
        store.load(Cursor::START).await,
        Err(Error::StoreClosed)
    ));
    assert!(matches!(
        store.latest_version().await,
        Err(Error::StoreClosed)
    ));
    assert!(matches!(
        store.subscribe(Filter::all(), Start::Now).await,
        Err(Error::StoreClosed)
    ));
}

/// Waits until the durable subscription `name` has committed `version`.
pub(crate) async fn checkpoint_reaches<S: SubscriptionSource>(store: &S, name: &str, version: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.load_checkpoint(name).await.unwrap() != Some(Cursor::new(version)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "checkpoint {name:?} never reached {version}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `run` passes over an event its type cannot decode (one written by
/// another version of the application, say), commits past it and handles
/// the next: the same policy on every backend.
pub async fn run_passes_over_a_poison_event_and_commits_past_it<S: SubscriptionSource>(store: S) {
    store
        .append_event(ExpectedVersion::NoStream, &opened("a"))
        .await
        .unwrap();
    let misfit = NewEvent::new("a", "Deposited", json!({ "id": "a", "amount": "lots" }));
    store
        .append(ExpectedVersion::Any, vec![misfit.with_id("misfit")])
        .await
        .unwrap();
    store
        .append_event(ExpectedVersion::Any, &deposited("a", 3))
        .await
        .unwrap();
    let subscription = Account::subscribe_from(&store, Start::Checkpoint("projection".into()))
        .await
        .unwrap();
    let (seen, mut handled) = tokio::sync::mpsc::unbounded_channel();
    let running = tokio::spawn(subscription.run(move |event: synckit::Recorded<Account>| {
        let seen = seen.clone();
        async move {
            seen.send((event.version, event.data)).unwrap();
            Ok::<_, std::convert::Infallible>(())
        }
    }));
    for expected in [(1, opened("a")), (3, deposited("a", 3))] {
        let got = tokio::time::timeout(Duration::from_secs(20), handled.recv())
            .await
            .expect("handled within 20 s")
            .expect("run ended");
        assert_eq!(got, expected, "the misfit at version 2 is passed over");
    }
    checkpoint_reaches(&store, "projection", 3).await;
    assert!(!running.is_finished(), "run goes on");
    running.abort();
}

/// A stored event the store cannot read back is refused at append on every
/// backend, before anything is written; one level less goes in and out.
pub async fn appends_refuse_json_the_store_could_not_read_back<S: SubscriptionSource>(store: S) {
    let nested = |depth: usize| (0..depth).fold(json!(1), |inner, _| Value::Array(vec![inner]));
    let deep = NewEvent::new("a", "Deep", nested(200)).with_id("deep");
    let err = store
        .append(ExpectedVersion::Any, vec![deep.clone()])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(!err.is_transient());
    // Retrying the same append gives the same answer, and nothing is stored.
    let again = store.append(ExpectedVersion::Any, vec![deep]).await;
    assert!(matches!(again, Err(Error::InvalidInput { .. })));
    assert!(store.load(Cursor::START).await.unwrap().is_empty());

    let limit = synckit::validate::MAX_JSON_DEPTH;
    let deepest = NewEvent::new("a", "Deep", nested(limit));
    store
        .append(ExpectedVersion::Any, vec![deepest.clone()])
        .await
        .unwrap();
    let back = store.load(Cursor::START).await.unwrap();
    assert_eq!(back[0].data, nested(limit));
}

/// Instantiates every behaviour check for one backend: `$fresh` is an async
/// expression giving a fresh, empty store.
#[macro_export]
macro_rules! behaviour_suite {
    ($fresh:expr) => {
        $crate::behaviour_suite!(@tests $fresh;
            expected_versions_are_enforced,
            concurrent_appends_with_one_expectation_have_one_winner,
            same_id_is_idempotent_other_content_is_a_duplicate,
            batches_are_atomic_and_bad_input_leaves_nothing,
            loads_page_in_order_after_a_cursor,
            filters_with_one_or_several_values_select_the_same_events,
            events_read_back_as_written_and_as_returned,
            typed_loads_decode_each_event_and_go_on_after_a_bad_one,
            typed_subscriptions_by_type_and_stream,
            two_subscribers_are_independent_and_drop_alone,
            decode_failure_is_an_error_item_and_the_subscription_goes_on,
            catch_up_then_live_with_caught_up_marker,
            durable_subscription_resumes_after_its_checkpoint,
            closed_store_refuses_everything_and_ends_subscriptions,
            appends_refuse_json_the_store_could_not_read_back,
            run_passes_over_a_poison_event_and_commits_past_it,
        );
        $crate::behaviour_suite!(@module evolution; $fresh;
            old_events_read_back_as_current_values_on_every_path,
            a_failing_upcast_is_an_error_item_naming_the_step_and_reads_go_on,
        );
        $crate::behaviour_suite!(@module progress; $fresh;
            a_filtered_checkpoint_reaches_the_head_past_events_it_does_not_take,
            wait_for_returns_after_the_handler_and_fails_when_the_run_ends,
            handler_retries_follow_the_settings_and_the_error_names_the_subscription,
        );
        $crate::behaviour_suite!(@module leases; $fresh;
            a_second_consumer_of_a_name_waits_as_a_standby_and_takes_over,
        );
        $crate::behaviour_suite!(@module parked; $fresh;
            a_poison_event_is_parked_its_aggregate_waits_and_retry_or_skip_release_it,
        );
        $crate::behaviour_suite!(@module groups; $fresh;
            a_group_divides_its_partitions_and_rebalances_as_members_come_and_go,
            a_member_with_another_partition_count_is_refused,
        );
        $crate::behaviour_suite!(@module aggregates; $fresh;
            concurrent_commands_never_overdraw_and_each_applies_once,
            a_command_id_sent_twice_and_concurrently_appends_once,
            a_refused_failing_or_panicking_decision_writes_nothing,
            snapshot_and_tail_equal_the_full_fold_and_are_only_a_cache,
            a_stream_reads_by_stream_version_and_loads_skip_other_streams,
        );
    };
    (@tests $fresh:expr; $($name:ident),* $(,)?) => {
        $crate::behaviour_suite!(@module behaviour; $fresh; $($name),*);
    };
    (@module $module:ident; $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::$module::$name($fresh.await).await;
            }
        )*
    };
}
