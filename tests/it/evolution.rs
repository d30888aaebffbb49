//! Schema evolution, on every backend: events appended by "old" code (raw
//! JSON in the old shapes and names, with the old metadata) read back as
//! current values through every read path. Instantiated per backend by
//! `behaviour_suite!`.

use std::convert::Infallible;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use synckit::{
    Cursor, Error, Event, ExpectedVersion, Message, NewEvent, Recorded, Start, SubscriptionSource,
    metadata,
};

use crate::behaviour::next_within;

/// Version 3 of a user's events. `Registered` was `UserCreated` with a
/// `name` (version 1), then `user.registered` with a `full_name` (version
/// 2), and now splits the name. `EmailChanged` keeps its own version 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(
    aggregate_id = "user_id",
    version = 3,
    upcast(v1 = "rename_name", v2 = "split_full_name")
)]
pub enum UserEvent {
    #[event(type = "user.registered", aliases = ["UserCreated"])]
    Registered {
        user_id: String,
        first_name: String,
        last_name: String,
    },
    #[event(version = 2, upcast(v1 = "email_v1_to_v2"))]
    EmailChanged {
        user_id: String,
        email: String,
        verified: bool,
    },
}

/// Version 1 to 2 of `Registered`, over the stored JSON: `name` became
/// `full_name`.
fn rename_name(mut data: Value) -> Result<Value, String> {
    let map = data.as_object_mut().ok_or("not an object")?;
    let name = map.remove("name").ok_or("no `name`")?;
    map.insert("full_name".into(), name);
    Ok(data)
}

/// Version 2 to 3 of `Registered`: the full name is split at its first
/// space; a name without one fails.
fn split_full_name(mut data: Value) -> Result<Value, String> {
    let map = data.as_object_mut().ok_or("not an object")?;
    let full = map
        .remove("full_name")
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or("no `full_name`")?;
    let (first, last) = full
        .split_once(' ')
        .ok_or_else(|| format!("{full:?} has no space to split at"))?;
    map.insert("first_name".into(), first.into());
    map.insert("last_name".into(), last.into());
    Ok(data)
}

/// The version-1 shape of `EmailChanged`, as a typed older struct.
#[derive(Deserialize)]
struct EmailChangedV1 {
    user_id: String,
    address: String,
}

/// The version-2 shape of `EmailChanged`.
#[derive(Serialize)]
struct EmailChangedV2 {
    user_id: String,
    email: String,
    verified: bool,
}

fn email_v1_to_v2(old: EmailChangedV1) -> Result<EmailChangedV2, Infallible> {
    Ok(EmailChangedV2 {
        user_id: old.user_id,
        email: old.address,
        verified: false,
    })
}

fn registered(user: &str, first: &str, last: &str) -> UserEvent {
    UserEvent::Registered {
        user_id: user.into(),
        first_name: first.into(),
        last_name: last.into(),
    }
}

/// What old code wrote: every older name and shape, with and without a
/// recorded schema version; then one event of today's code.
fn old_events() -> Vec<NewEvent> {
    let v = |n: u32| Value::from(n);
    vec![
        // Version 1, before versions were recorded: no schema_version.
        NewEvent::new(
            "u1",
            "UserCreated",
            json!({"user_id": "u1", "name": "Ada Lovelace"}),
        )
        .with_id("old-1"),
        NewEvent::new(
            "u2",
            "UserCreated",
            json!({"user_id": "u2", "name": "Alan Turing"}),
        )
        .with_metadata(metadata::SCHEMA_VERSION, v(1))
        .with_id("old-2"),
        NewEvent::new(
            "u3",
            "user.registered",
            json!({"user_id": "u3", "full_name": "Grace Brewster Hopper"}),
        )
        .with_metadata(metadata::SCHEMA_VERSION, v(2))
        .with_id("old-3"),
        // The bare variant name was the default type name before.
        NewEvent::new(
            "u1",
            "EmailChanged",
            json!({"user_id": "u1", "address": "ada@example.com"}),
        )
        .with_id("old-4"),
        NewEvent::from_event(&registered("u4", "Edsger", "Dijkstra"))
            .unwrap()
            .with_id("new-5"),
    ]
}

/// The current values of [`old_events`], in order.
fn current_values() -> Vec<UserEvent> {
    vec![
        registered("u1", "Ada", "Lovelace"),
        registered("u2", "Alan", "Turing"),
        registered("u3", "Grace", "Brewster Hopper"),
        UserEvent::EmailChanged {
            user_id: "u1".into(),
            email: "ada@example.com".into(),
            verified: false,
        },
        registered("u4", "Edsger", "Dijkstra"),
    ]
}

fn data<T: Clone>(events: &[Recorded<T>]) -> Vec<T> {
    events.iter().map(|e| e.data.clone()).collect()
}

pub async fn old_events_read_back_as_current_values_on_every_path<S: SubscriptionSource>(store: S) {
    store
        .append(ExpectedVersion::Any, old_events())
        .await
        .unwrap();
    let want = current_values();

    // A raw load, then `Recorded::decode`.
    let raw = store.load(Cursor::START).await.unwrap();
    let decoded: Vec<Recorded<UserEvent>> = raw.into_iter().map(|r| r.decode().unwrap()).collect();
    assert_eq!(data(&decoded), want);
    assert_eq!(
        decoded[0].event_type, "UserCreated",
        "the envelope keeps the stored name"
    );
    assert_eq!(decoded[0].data.event_type(), "user.registered");

    // A typed load: the filter matches the old names too.
    let typed: Vec<Recorded<UserEvent>> = store
        .read_stream_as::<UserEvent>(UserEvent::filter(), Cursor::START)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(data(&typed), want);

    // A typed subscription.
    let mut sub = UserEvent::subscribe_from(&store, Start::Beginning)
        .await
        .unwrap();
    let mut live = Vec::new();
    for _ in 0..want.len() {
        live.push(next_within(&mut sub).await.unwrap().data);
    }
    assert_eq!(live, want);

    // One aggregate's typed stream, old names included.
    let mut u1 = UserEvent::subscribe_stream_from(&store, "u1", Start::Beginning)
        .await
        .unwrap();
    assert_eq!(next_within(&mut u1).await.unwrap().data, want[0]);
    assert_eq!(next_within(&mut u1).await.unwrap().data, want[3]);

    // A durable subscription, to its caught-up point.
    let durable = store
        .subscribe(UserEvent::filter(), Start::checkpoint("evolution"))
        .await
        .unwrap()
        .typed::<UserEvent>();
    let mut messages = Box::pin(durable.messages());
    let mut handled = Vec::new();
    loop {
        match next_within(&mut messages).await.unwrap() {
            Message::Event(event) => handled.push(event.data),
            Message::CaughtUp => break,
            _ => unreachable!("no other message"),
        }
    }
    assert_eq!(handled, want);

    // The stored form is untouched.
    let stored = store.load(Cursor::START).await.unwrap();
    assert_eq!(stored[0].event_type, "UserCreated");
    assert_eq!(
        stored[0].data,
        json!({"user_id": "u1", "name": "Ada Lovelace"})
    );
    assert!(stored[0].metadata.get(metadata::SCHEMA_VERSION).is_none());
}

pub async fn a_failing_upcast_is_an_error_item_naming_the_step_and_reads_go_on<
    S: SubscriptionSource,
>(
    store: S,
) {
    let bad = |id: &str, user: &str, metadata_version: Value, data: Value| {
        NewEvent::new(user, "user.registered", data)
            .with_metadata(metadata::SCHEMA_VERSION, metadata_version)
            .with_id(id)
    };
    store
        .append(
            ExpectedVersion::Any,
            vec![
                // The version-2 step refuses a name without a space.
                bad(
                    "plato",
                    "u1",
                    json!(2),
                    json!({"user_id": "u1", "full_name": "Plato"}),
                ),
                // Stored by a newer build.
                bad("future", "u2", json!(9), json!({"user_id": "u2"})),
                // A schema version that is no version.
                bad("garbled", "u3", json!("two"), json!({"user_id": "u3"})),
                NewEvent::from_event(&registered("u4", "Barbara", "Liskov")).unwrap(),
            ],
        )
        .await
        .unwrap();
    let check = |items: Vec<synckit::Result<Recorded<UserEvent>>>| {
        assert_eq!(items.len(), 4);
        match &items[0] {
            Err(
                err @ Error::Upcast {
                    event_id: Some(id),
                    from: 2,
                    version: Some(1),
                    ..
                },
            ) if id == "plato" => {
                let text = err.to_string();
                assert!(text.contains("from schema version 2 to 3"), "{text}");
                assert!(text.contains("has no space"), "{text}");
            }
            other => panic!("expected the failing step, got {other:?}"),
        }
        match &items[1] {
            Err(
                err @ Error::Decode {
                    event_id: Some(id), ..
                },
            ) if id == "future" => {
                assert!(err.to_string().contains("schema version 9"), "{err}");
            }
            other => panic!("expected a newer schema version refused, got {other:?}"),
        }
        match &items[2] {
            Err(
                err @ Error::Decode {
                    event_id: Some(id), ..
                },
            ) if id == "garbled" => {
                assert!(err.to_string().contains("schema_version"), "{err}");
            }
            other => panic!("expected a bad schema version refused, got {other:?}"),
        }
        assert_eq!(
            items[3].as_ref().unwrap().data,
            registered("u4", "Barbara", "Liskov")
        );
    };
    let typed: Vec<_> = store
        .read_stream_as::<UserEvent>(UserEvent::filter(), Cursor::START)
        .collect()
        .await;
    check(typed);
    let mut sub = UserEvent::subscribe_from(&store, Start::Beginning)
        .await
        .unwrap();
    let mut live = Vec::new();
    for _ in 0..4 {
        live.push(next_within(&mut sub).await);
    }
    check(live);
    let raw = store.load(Cursor::START).await.unwrap();
    check(raw.into_iter().map(Recorded::decode).collect());
}

/// Two enums with a variant of one name, each with the default names.
#[derive(Debug, Serialize, Deserialize, Event)]
#[event(aggregate_id = "id")]
enum AccountEvent {
    Opened { id: String, owner: String },
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(aggregate_id = "id")]
enum CardEvent {
    Opened { id: String, limit: u64 },
}

/// The same, with an explicit name: no bare-name alias.
#[derive(Debug, Serialize, Deserialize, Event)]
#[event(aggregate_id = "id")]
enum LoanEvent {
    #[event(type = "loan.opened")]
    Opened { id: String },
}

#[test]
fn default_variant_names_do_not_collide_and_the_old_bare_name_is_an_alias() {
    let card = CardEvent::Opened {
        id: "c".into(),
        limit: 5,
    };
    assert_eq!(card.event_type(), "CardEvent.Opened");
    assert_eq!(AccountEvent::event_types(), &["AccountEvent.Opened"]);
    assert_eq!(
        AccountEvent::event_type_aliases(),
        [("Opened", "AccountEvent.Opened")]
    );
    assert!(LoanEvent::event_type_aliases().is_empty());
    // A card event stored today is no account event.
    let stored = NewEvent::from_event(&card).unwrap();
    assert!(matches!(
        AccountEvent::decode(stored.event_type(), stored.data().clone()),
        Err(Error::UnknownEventType { .. })
    ));
    assert!(!AccountEvent::filter().matches_parts("any", "CardEvent.Opened"));
    assert!(AccountEvent::filter().matches_parts("any", "Opened"));
    assert!(UserEvent::filter().matches_parts("any", "UserCreated"));
}

#[test]
fn event_types_refuse_two_types_reading_one_name() {
    use synckit::evolution::EventTypes;
    let err = EventTypes::new()
        .with::<AccountEvent>()
        .unwrap()
        .with::<CardEvent>()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::InvalidInput { .. }) && text.contains("\"Opened\""),
        "{text}"
    );
    assert!(
        text.contains("AccountEvent") && text.contains("CardEvent"),
        "{text}"
    );
    // Explicit names and the same type twice are fine.
    let types = EventTypes::new()
        .with::<AccountEvent>()
        .and_then(|t| t.with::<LoanEvent>())
        .and_then(|t| t.with::<AccountEvent>())
        .and_then(|t| t.with::<UserEvent>())
        .unwrap();
    assert!(
        types
            .filter()
            .event_types()
            .unwrap()
            .contains("UserCreated")
    );
    assert!(
        types
            .filter()
            .event_types()
            .unwrap()
            .contains("loan.opened")
    );
}
