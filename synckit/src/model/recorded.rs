//! Events on their way into the store ([`NewEvent`]) and out of it
//! ([`Recorded`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::cursor::Cursor;
use crate::model::error::Result;
use crate::model::event::Event;
use crate::model::upcast::{self, StoredData};

/// The metadata keys synckit itself writes.
pub mod metadata {
    /// The key of the correlation id ([`NewEvent::with_correlation_id`](crate::NewEvent::with_correlation_id)).
    pub const CORRELATION_ID: &str = "correlation_id";
    /// The key of the causation id ([`NewEvent::with_causation_id`](crate::NewEvent::with_causation_id)).
    pub const CAUSATION_ID: &str = "causation_id";
    /// The key of the event type's schema version (`#[event(version = N)]`).
    pub const SCHEMA_VERSION: &str = "schema_version";
}

use metadata::{CAUSATION_ID, CORRELATION_ID, SCHEMA_VERSION};

/// An event as stored: its place in the global order and in its stream, its
/// identity and its content.
///
/// `Recorded` (with `T = serde_json::Value`) is the raw form every backend
/// returns; [`Recorded::decode`] turns it into `Recorded<E>` for an [`Event`]
/// type `E`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Recorded<T = Value> {
    /// Global position, store-wide, increasing in commit order. Gap-free
    /// for readers (no reader steps over an event that commits late) but
    /// not consecutive: on PostgreSQL an aborted append leaves a hole, so
    /// `version == last + 1` is no loss check (resume from the last
    /// version seen instead).
    pub version: u64,
    /// Position within the aggregate's stream: 1, 2, 3, ... with no holes.
    pub stream_version: u64,
    /// Unique id of the event; appending the same id again is idempotent.
    pub id: String,
    /// The aggregate (stream) the event belongs to.
    pub aggregate_id: String,
    /// The event type name.
    pub event_type: String,
    /// The event: raw JSON, or the decoded Rust value.
    pub data: T,
    /// A JSON object of metadata (correlation and causation ids, schema
    /// version, anything the application adds).
    pub metadata: Map<String, Value>,
    /// When the store recorded the event.
    pub created_at: DateTime<Utc>,
}

impl<T> Recorded<T> {
    /// The cursor just after this event: resume from it to read what follows.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.version)
    }

    /// The correlation id from the metadata, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.metadata.get(CORRELATION_ID).and_then(Value::as_str)
    }

    /// The causation id from the metadata, if any.
    pub fn causation_id(&self) -> Option<&str> {
        self.metadata.get(CAUSATION_ID).and_then(Value::as_str)
    }

    /// Replaces the payload, keeping the envelope.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Recorded<U> {
        Recorded {
            version: self.version,
            stream_version: self.stream_version,
            id: self.id,
            aggregate_id: self.aggregate_id,
            event_type: self.event_type,
            data: f(self.data),
            metadata: self.metadata,
            created_at: self.created_at,
        }
    }
}

impl Recorded<Value> {
    /// Decodes `data` into the event type `E`: the stored name may be an
    /// alias, and data stored at an older schema version (the metadata's
    /// `schema_version`, 1 when absent) is upcast to the current one first.
    /// The error names the event. The envelope stays as stored (its
    /// `event_type` is the stored name; `data.event_type()` is the current
    /// one).
    pub fn decode<E: Event>(mut self) -> Result<Recorded<E>> {
        let data = std::mem::take(&mut self.data);
        let event =
            upcast::decode_stored(&self.event_type, &self.metadata, StoredData::Value(data))
                .map_err(|e| e.with_event(self.version, &self.id))?;
        Ok(self.map(|_| event))
    }
}

/// An event to append, built from an [`Event`] value or from raw parts.
///
/// Without [`NewEvent::with_id`] the event gets a fresh time-ordered UUID
/// (v7); pass your own id to make retries idempotent.
///
/// ```
/// use serde_json::json;
/// use synckit::NewEvent;
///
/// let e = NewEvent::new("order-1", "order.placed", json!({"total": 12}))
///     .with_id("7c0e9a52-0000-7000-8000-000000000001")
///     .with_correlation_id("request-9")
///     .with_metadata("tenant", json!("acme"));
/// assert_eq!(e.id(), "7c0e9a52-0000-7000-8000-000000000001");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub(crate) id: String,
    pub(crate) aggregate_id: String,
    pub(crate) event_type: String,
    pub(crate) data: Value,
    pub(crate) metadata: Map<String, Value>,
}

impl NewEvent {
    /// An event from raw parts.
    pub fn new(
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        data: Value,
    ) -> Self {
        NewEvent {
            id: uuid::Uuid::now_v7().to_string(),
            aggregate_id: aggregate_id.into(),
            event_type: event_type.into(),
            data,
            metadata: Map::new(),
        }
    }

    /// An event from a typed [`Event`] value; records its schema version in
    /// the metadata.
    pub fn from_event<E: Event>(event: &E) -> Result<Self> {
        let mut new = NewEvent::new(event.aggregate_id(), event.event_type(), event.encode()?);
        new.metadata
            .insert(SCHEMA_VERSION.into(), Value::from(event.schema_version()));
        Ok(new)
    }

    /// Sets the event id (for idempotent retries).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    /// Replaces the whole metadata object.
    pub fn with_metadata_map(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(self, id: impl Into<String>) -> Self {
        self.with_metadata(CORRELATION_ID, Value::String(id.into()))
    }

    /// Sets the causation id.
    pub fn with_causation_id(self, id: impl Into<String>) -> Self {
        self.with_metadata(CAUSATION_ID, Value::String(id.into()))
    }

    /// Marks this event as caused by `cause`: the causation id becomes the
    /// cause's id, the correlation id is carried over (or starts with the
    /// cause's id).
    pub fn caused_by<T>(self, cause: &Recorded<T>) -> Self {
        let correlation = cause.correlation_id().unwrap_or(&cause.id).to_owned();
        self.with_causation_id(cause.id.clone())
            .with_correlation_id(correlation)
    }

    /// The event id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The aggregate id.
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The JSON data.
    pub fn data(&self) -> &Value {
        &self.data
    }

    /// The metadata object.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// Whether a stored event is this event again (same id, aggregate, type
    /// and data): an idempotent retry rather than a duplicate.
    pub fn same_content<T>(&self, stored: &Recorded<T>) -> bool
    where
        T: PartialEq<Value>,
    {
        self.id == stored.id
            && self.aggregate_id == stored.aggregate_id
            && self.event_type == stored.event_type
            && stored.data == self.data
    }

    /// Builds the recorded form once a store has assigned its positions.
    pub(crate) fn into_recorded(
        self,
        version: u64,
        stream_version: u64,
        created_at: DateTime<Utc>,
    ) -> Recorded {
        Recorded {
            version,
            stream_version,
            id: self.id,
            aggregate_id: self.aggregate_id,
            event_type: self.event_type,
            data: self.data,
            metadata: self.metadata,
            created_at,
        }
    }

    /// Splits the event into `(id, aggregate_id, event_type, data, metadata)`.
    pub fn into_parts(self) -> (String, String, String, Value, Map<String, Value>) {
        (
            self.id,
            self.aggregate_id,
            self.event_type,
            self.data,
            self.metadata,
        )
    }
}
