//! Schema evolution: the event types an application reads, checked against
//! each other and against what a store holds.
//!
#![doc = include_str!("docs/evolution.md")]

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;

use crate::model::cursor::Cursor;
use crate::model::error::{Error, Result};
use crate::model::event::{Event, Target};
use crate::model::filter::Filter;
use crate::model::recorded::Recorded;
use crate::model::upcast::stored_schema_version;
use crate::store::EventStore;

/// The [`Event`] types an application reads, with every name each reads
/// (current names and aliases), no name claimed by two types.
///
/// Two types that read one name cannot both be right about the events
/// stored under it (one of them decodes the other's events, or fails on
/// them), so [`EventTypes::with`] refuses the second. (A struct and an
/// enum variant that wraps it under the same name are two readers of one
/// type: add the one the application reads through.)
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use synckit::Event;
/// use synckit::evolution::EventTypes;
///
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(aggregate_id = "id")]
/// enum AccountEvent { Opened { id: String } }
///
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(aggregate_id = "id")]
/// enum CardEvent { Opened { id: String } }
///
/// // `AccountEvent.Opened` and `CardEvent.Opened` are two names, but both
/// // still read the bare name `Opened`, the default of older releases.
/// let err = EventTypes::new().with::<AccountEvent>()?.with::<CardEvent>().unwrap_err();
/// assert!(err.to_string().contains("\"Opened\""), "{err}");
/// # Ok::<(), synckit::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventTypes {
    types: Vec<Registered>,
}

#[derive(Debug, Clone)]
struct Registered {
    rust_type: &'static str,
    targets: Vec<Target>,
    decode: fn(Recorded) -> Result<()>,
}

impl EventTypes {
    /// No types.
    pub fn new() -> Self {
        EventTypes::default()
    }

    /// Adds `E`; [`Error::InvalidInput`] when one of its names (current or
    /// alias) is read by a type added before. Adding a type twice is a
    /// no-op.
    pub fn with<E: Event>(mut self) -> Result<Self> {
        let rust_type = std::any::type_name::<E>();
        if self.types.iter().any(|t| t.rust_type == rust_type) {
            return Ok(self);
        }
        let targets: Vec<Target> = E::layout().targets().collect();
        for name in targets.iter().flat_map(Target::names) {
            if let Some(other) = self.reader_of(name) {
                return Err(Error::invalid(
                    "event types",
                    format!(
                        "{} and {rust_type} both read the event type name {name:?}; give one of them its own `#[event(type = \"...\")]` (an explicit type name has no bare-name alias)",
                        other.rust_type
                    ),
                ));
            }
        }
        self.types.push(Registered {
            rust_type,
            targets,
            decode: |raw| raw.decode::<E>().map(drop),
        });
        Ok(self)
    }

    /// Whether no type was added.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The filter of every name the types read.
    pub fn filter(&self) -> Filter {
        Filter::types(
            self.types
                .iter()
                .flat_map(|t| &t.targets)
                .flat_map(Target::names),
        )
    }

    fn reader_of(&self, name: &str) -> Option<&Registered> {
        self.types.iter().find(|t| {
            t.targets
                .iter()
                .any(|target| target.names().any(|n| n == name))
        })
    }

    /// Reads every stored event of these types and decodes it (upcasting
    /// included) without changing anything: per event type and stored
    /// schema version, how many decode and which do not.
    ///
    /// A store error that is not about one stored event (a lost
    /// connection) ends the check with that error; an event that cannot be
    /// read at all is listed in [`SchemaReport::unreadable`].
    pub async fn check<S: EventStore>(&self, store: &S) -> Result<SchemaReport> {
        let mut counts: BTreeMap<(usize, usize, Option<u32>), VersionReport> = BTreeMap::new();
        let mut unreadable = Vec::new();
        let mut events = if self.is_empty() {
            futures::stream::empty().boxed()
        } else {
            store.read_stream(self.filter(), Cursor::START)
        };
        while let Some(item) = events.next().await {
            let raw = match item {
                Ok(raw) => raw,
                Err(error) => match error.poisoned_event() {
                    Some((version, id)) => {
                        unreadable.push(Failure {
                            version,
                            id: id.to_owned(),
                            stored_type: None,
                            error: error.to_string(),
                        });
                        continue;
                    }
                    None => return Err(error),
                },
            };
            let Some((type_index, target_index)) = self.position_of(&raw.event_type) else {
                continue;
            };
            let schema_version = stored_schema_version(&raw.metadata).ok();
            let entry = counts
                .entry((type_index, target_index, schema_version))
                .or_insert_with(|| VersionReport {
                    schema_version,
                    decoded: 0,
                    failed: Vec::new(),
                });
            let (version, id, stored_type) = (raw.version, raw.id.clone(), raw.event_type.clone());
            match (self.types[type_index].decode)(raw) {
                Ok(()) => entry.decoded += 1,
                Err(error) => entry.failed.push(Failure {
                    version,
                    id,
                    stored_type: Some(stored_type),
                    error: error.to_string(),
                }),
            }
        }
        let mut types = Vec::new();
        for (type_index, registered) in self.types.iter().enumerate() {
            for (target_index, target) in registered.targets.iter().enumerate() {
                let versions = counts
                    .range(
                        (type_index, target_index, None)
                            ..=(type_index, target_index, Some(u32::MAX)),
                    )
                    .map(|(_, v)| v.clone())
                    .collect();
                types.push(TypeReport {
                    event_type: target.event_type,
                    aliases: target.aliases,
                    rust_type: registered.rust_type,
                    current_version: target.version,
                    versions,
                });
            }
        }
        Ok(SchemaReport { types, unreadable })
    }

    fn position_of(&self, stored: &str) -> Option<(usize, usize)> {
        self.types.iter().enumerate().find_map(|(i, t)| {
            t.targets
                .iter()
                .position(|target| target.names().any(|n| n == stored))
                .map(|j| (i, j))
        })
    }
}

/// What [`EventTypes::check`] found.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SchemaReport {
    /// One entry per event type, in the order the types were added.
    pub types: Vec<TypeReport>,
    /// Stored events of these types that cannot be read at all.
    pub unreadable: Vec<Failure>,
}

impl SchemaReport {
    /// Whether every stored event decodes.
    pub fn is_ok(&self) -> bool {
        self.failures() == 0
    }

    /// Events that do not decode, unreadable ones included.
    pub fn failures(&self) -> usize {
        self.unreadable.len()
            + self
                .types
                .iter()
                .flat_map(|t| &t.versions)
                .map(|v| v.failed.len())
                .sum::<usize>()
    }

    /// Events that decode.
    pub fn decoded(&self) -> u64 {
        self.types
            .iter()
            .flat_map(|t| &t.versions)
            .map(|v| v.decoded)
            .sum()
    }
}

/// One event type's stored events.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TypeReport {
    /// The current name.
    pub event_type: &'static str,
    /// The older names it reads.
    pub aliases: &'static [&'static str],
    /// The Rust type that reads it.
    pub rust_type: &'static str,
    /// The schema version every stored one is upcast to.
    pub current_version: u32,
    /// Per stored schema version, lowest first; empty when the store holds
    /// none of this type.
    pub versions: Vec<VersionReport>,
}

/// The stored events of one type at one schema version.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct VersionReport {
    /// The schema version recorded in their metadata (1 when absent);
    /// `None` for a recorded value that is not a version.
    pub schema_version: Option<u32>,
    /// How many decode into the current type.
    pub decoded: u64,
    /// The ones that do not.
    pub failed: Vec<Failure>,
}

/// A stored event that does not decode.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Failure {
    /// Its global version.
    pub version: u64,
    /// Its id.
    pub id: String,
    /// The name it is stored under; `None` when the row cannot be read.
    pub stored_type: Option<String>,
    /// Why it does not decode (the step of an upcast that failed, serde's
    /// error, ...).
    pub error: String,
}
