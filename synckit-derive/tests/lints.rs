//! Derived code compiles cleanly under strict lints.
#![deny(warnings, unused_qualifications, missing_docs)]

use serde::{Deserialize, Serialize};
use synckit::Event;

/// A struct event.
#[derive(Serialize, Deserialize, Event)]
#[event(type = "thing.made", version = 2)]
pub struct Made {
    /// The aggregate.
    #[event(aggregate_id)]
    pub id: u64,
}

/// An enum event with every variant shape.
#[derive(Serialize, Deserialize, Event)]
#[event(aggregate_id = "id")]
pub enum Things {
    /// Newtype, delegating.
    Made(Made),
    /// Struct variant under the enum rule.
    Renamed {
        /// The aggregate.
        id: String,
    },
    /// Tuple variant with a marker.
    Tagged(String, #[event(aggregate_id)] String),
}

/// An evolved event: aliases and an upcast chain of a JSON step and a
/// typed one.
#[derive(Serialize, Deserialize, Event)]
#[event(
    aggregate_id = "id",
    version = 3,
    upcast(v1 = "json_step", v2 = "Older::step")
)]
pub enum Evolved {
    /// Renamed once.
    #[event(type = "evolved.one", aliases = ["One"])]
    One {
        /// The aggregate.
        id: String,
    },
}

fn json_step(data: serde_json::Value) -> Result<serde_json::Value, String> {
    Ok(data)
}

#[derive(Deserialize)]
struct Older {
    id: String,
}

#[derive(Serialize)]
struct Newer {
    id: String,
}

impl Older {
    fn step(self) -> Result<Newer, std::convert::Infallible> {
        Ok(Newer { id: self.id })
    }
}

/// A generic event.
#[derive(Serialize, Deserialize, Event)]
pub struct Wrapper<T> {
    /// The aggregate.
    #[event(aggregate_id)]
    pub id: String,
    /// Anything.
    pub inner: T,
}

#[test]
fn derived_code_is_lint_clean() {
    let t = Things::Tagged("x".into(), "agg".into());
    assert_eq!(t.aggregate_id(), "agg");
    assert_eq!(Things::Made(Made { id: 4 }).aggregate_id(), "4");
    assert_eq!(
        Wrapper::<u8> {
            id: "w".into(),
            inner: 1
        }
        .event_type(),
        "Wrapper"
    );
}
