//! What a read decodes each event into: raw JSON or an [`Event`] type.

use serde_json::{Map, Value};

use crate::model::error::{Error, Result};
use crate::model::event::Event;
use crate::model::recorded::Recorded;
use crate::model::upcast::{self, StoredData};

/// The payload a read or a subscription decodes into: raw JSON or an [`Event`] type.
pub trait Payload: Sized + Send + 'static {
    /// Turns a raw recorded event into this payload.
    fn from_recorded(raw: Recorded) -> Result<Recorded<Self>>;

    /// Builds this payload from an event's stored JSON text (`data`) and
    /// its metadata (which records the schema version), the way a backend
    /// reads it; the backend attaches the event's version and id to the
    /// error.
    fn from_json(
        event_type: &str,
        metadata: &Map<String, Value>,
        event_id: &str,
        json: &[u8],
    ) -> Result<Self>;
}

impl Payload for Value {
    fn from_recorded(raw: Recorded) -> Result<Recorded<Self>> {
        Ok(raw)
    }

    fn from_json(
        _event_type: &str,
        _metadata: &Map<String, Value>,
        event_id: &str,
        json: &[u8],
    ) -> Result<Self> {
        // The version is attached by the backend that read the row.
        serde_json::from_slice(json)
            .map_err(|e| Error::unreadable(0, event_id, format_args!("its data: {e}")))
    }
}

impl<E: Event> Payload for E {
    fn from_recorded(raw: Recorded) -> Result<Recorded<Self>> {
        raw.decode()
    }

    fn from_json(
        event_type: &str,
        metadata: &Map<String, Value>,
        _event_id: &str,
        json: &[u8],
    ) -> Result<Self> {
        upcast::decode_stored(event_type, metadata, StoredData::Json(json))
    }
}
