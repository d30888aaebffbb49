//! `#[derive(Event)]`, end to end: type names, aggregate ids, the stored
//! form, serde attributes, generics, re-exports and JSON Schemas.

use serde::{Deserialize, Serialize};
use serde_json::json;
use synckit::metadata::SCHEMA_VERSION;
use synckit::{Error, Event, NewEvent};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
pub struct UserRegistered {
    #[event(aggregate_id)]
    pub user_id: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(type = "order.placed", version = 3)]
struct OrderPlaced {
    #[event(aggregate_id)]
    order: u64,
    total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(aggregate_id = "user_id")]
pub enum UserEvent {
    Registered(UserRegistered),
    #[event(type = "user.renamed", version = 2)]
    Renamed {
        user_id: String,
        name: String,
    },
    Deactivated {
        #[event(aggregate_id)]
        account: String,
        reason: Option<String>,
    },
}

#[test]
fn struct_names_and_aggregate_ids() {
    let e = UserRegistered {
        user_id: "u-1".into(),
        email: "a@example.com".into(),
    };
    assert_eq!(UserRegistered::event_types(), &["UserRegistered"]);
    assert_eq!(e.event_type(), "UserRegistered");
    assert_eq!(e.aggregate_id(), "u-1");
    assert_eq!(e.schema_version(), 1);

    let o = OrderPlaced {
        order: 42,
        total_cents: 1999,
    };
    assert_eq!(o.event_type(), "order.placed");
    assert_eq!(o.aggregate_id(), "42");
    assert_eq!(o.schema_version(), 3);
}

#[test]
fn enum_has_one_type_per_variant() {
    assert_eq!(
        UserEvent::event_types(),
        &[
            "UserEvent.Registered",
            "user.renamed",
            "UserEvent.Deactivated"
        ]
    );
    let registered = UserEvent::Registered(UserRegistered {
        user_id: "u-1".into(),
        email: "e".into(),
    });
    let renamed = UserEvent::Renamed {
        user_id: "u-2".into(),
        name: "Ada".into(),
    };
    let deactivated = UserEvent::Deactivated {
        account: "u-3".into(),
        reason: None,
    };
    assert_eq!(registered.event_type(), "UserEvent.Registered");
    assert_eq!(registered.aggregate_id(), "u-1");
    assert_eq!(renamed.event_type(), "user.renamed");
    assert_eq!(renamed.aggregate_id(), "u-2");
    assert_eq!(renamed.schema_version(), 2);
    assert_eq!(
        deactivated.aggregate_id(),
        "u-3",
        "field marker beats the enum rule"
    );
    assert_eq!(deactivated.schema_version(), 1);
}

#[test]
fn enum_data_is_the_variant_content_and_round_trips() {
    let renamed = UserEvent::Renamed {
        user_id: "u-2".into(),
        name: "Ada".into(),
    };
    let data = renamed.encode().unwrap();
    assert_eq!(data, json!({"user_id": "u-2", "name": "Ada"}));
    assert_eq!(UserEvent::decode("user.renamed", data).unwrap(), renamed);

    let registered = UserEvent::Registered(UserRegistered {
        user_id: "u-1".into(),
        email: "e".into(),
    });
    let data = registered.encode().unwrap();
    assert_eq!(data, json!({"user_id": "u-1", "email": "e"}));
    assert_eq!(UserEvent::decode("Registered", data).unwrap(), registered);
}

#[test]
fn decode_errors_name_the_problem() {
    let err = UserEvent::decode("user.deleted", json!({})).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownEventType { event_type, expected, .. }
            if event_type == "user.deleted" && expected.contains(&"user.renamed")),
        "{err}"
    );
    let err = UserEvent::decode("user.renamed", json!({"user_id": 5})).unwrap_err();
    assert!(
        matches!(&err, Error::Decode { event_type, .. } if event_type == "user.renamed"),
        "{err}"
    );
    let err = UserRegistered::decode("Other", json!({})).unwrap_err();
    assert!(matches!(err, Error::UnknownEventType { .. }), "{err}");
}

#[test]
fn new_event_records_schema_version() {
    let e = NewEvent::from_event(&UserEvent::Renamed {
        user_id: "u".into(),
        name: "n".into(),
    })
    .unwrap();
    assert_eq!(e.event_type(), "user.renamed");
    assert_eq!(e.aggregate_id(), "u");
    assert_eq!(e.metadata()[SCHEMA_VERSION], json!(2));
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Internally {
    ItemAdded {
        #[event(aggregate_id)]
        cart: String,
        #[serde(rename = "sku_code")]
        sku: String,
        #[serde(skip)]
        cached: u32,
    },
    #[serde(rename = "emptied")]
    #[event(type = "CartEmptied")]
    Emptied {
        #[event(aggregate_id)]
        cart: String,
    },
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[serde(tag = "t", content = "c")]
enum Adjacently {
    Ping {
        #[event(aggregate_id)]
        id: u32,
    },
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[serde(untagged)]
enum Untagged {
    Wide {
        #[event(aggregate_id)]
        id: String,
        a: u8,
        b: u8,
    },
    Narrow {
        #[event(aggregate_id)]
        id: String,
        a: u8,
    },
}

#[test]
fn honours_serde_representations_and_renames() {
    let added = Internally::ItemAdded {
        cart: "c".into(),
        sku: "s".into(),
        cached: 9,
    };
    let data = added.encode().unwrap();
    assert_eq!(
        data,
        json!({"cart": "c", "sku_code": "s"}),
        "tag stripped, rename kept, skip honoured"
    );
    assert_eq!(
        Internally::decode("ItemAdded", data).unwrap(),
        Internally::ItemAdded {
            cart: "c".into(),
            sku: "s".into(),
            cached: 0
        }
    );
    let emptied = Internally::Emptied { cart: "c".into() };
    let data = emptied.encode().unwrap();
    assert_eq!(Internally::decode("CartEmptied", data).unwrap(), emptied);

    let ping = Adjacently::Ping { id: 7 };
    let data = ping.encode().unwrap();
    assert_eq!(data, json!({"id": 7}));
    assert_eq!(Adjacently::decode("Ping", data).unwrap(), ping);
    assert_eq!(ping.aggregate_id(), "7");

    let narrow = Untagged::Narrow {
        id: "x".into(),
        a: 1,
    };
    let data = narrow.encode().unwrap();
    assert_eq!(Untagged::decode("Narrow", data.clone()).unwrap(), narrow);
    // The data of a `Narrow` cannot become a `Wide`: an error, not a silent
    // change of type.
    let err = Untagged::decode("Wide", data).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
struct Generic<T>
where
    T: Clone,
{
    #[event(aggregate_id)]
    key: String,
    payload: T,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
enum GenericEnum<T: Clone> {
    Wrapped(Generic<T>),
}

#[test]
fn works_with_generic_types() {
    let g = Generic {
        key: "k".into(),
        payload: vec![1u8, 2],
    };
    assert_eq!(g.aggregate_id(), "k");
    let data = g.encode().unwrap();
    assert_eq!(Generic::<Vec<u8>>::decode("Generic", data).unwrap(), g);
    let wrapped = GenericEnum::Wrapped(g);
    assert_eq!(wrapped.aggregate_id(), "k", "delegates to the inner event");
}

mod reexport {
    pub use synckit as events;
}

#[derive(Debug, Serialize, Deserialize, reexport::events::Event)]
#[event(crate = "reexport::events")]
struct ThroughReexport {
    #[event(aggregate_id)]
    id: u16,
}

#[test]
fn works_through_a_reexport() {
    assert_eq!(ThroughReexport { id: 3 }.aggregate_id(), "3");
}

#[test]
fn json_schemas_per_event_type() {
    let schemas = UserRegistered::event_schemas();
    assert_eq!(schemas.len(), 1);
    let s = serde_json::to_value(&schemas[0].schema).unwrap();
    assert_eq!(s["title"], "UserRegistered");
    assert!(s["properties"]["email"].is_object(), "{s}");

    let schemas = UserEvent::event_schemas();
    let types: Vec<_> = schemas.iter().map(|s| s.event_type).collect();
    assert_eq!(types, UserEvent::event_types());
    // Each carries its type's current schema version and older names.
    let versions: Vec<_> = schemas.iter().map(|s| (s.version, s.aliases)).collect();
    assert_eq!(
        versions,
        [
            (1, &["Registered"][..]),
            (2, &[][..]),
            (1, &["Deactivated"][..])
        ]
    );
    let renamed = serde_json::to_value(&schemas[1].schema).unwrap();
    assert_eq!(renamed["title"], "user.renamed");
    assert!(renamed["properties"]["name"].is_object(), "{renamed}");
    assert!(renamed["properties"].get("Renamed").is_none(), "{renamed}");
    // The newtype variant's schema refers to the inner type's definition,
    // which travels along.
    let registered = serde_json::to_value(&schemas[0].schema).unwrap();
    let text = registered.to_string();
    assert!(text.contains("UserRegistered"), "{text}");
}
