//! Row types and the SQL of the store.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use std::io::Write;

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz};
use serde_json::{Map, Value};

use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::recorded::Recorded;
use crate::subscription::Payload;

/// Columns every event query returns, in this order.
pub(crate) const EVENT_COLUMNS: &str =
    "version, stream_version, id, aggregate_id, event_type, data, metadata, created_at";

/// One row of `events`.
#[derive(QueryableByName)]
pub(crate) struct EventRow {
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = BigInt)]
    stream_version: i64,
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    aggregate_id: String,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Nullable<Jsonb>)]
    data: Option<RawJson>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    metadata: Option<RawJson>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

/// A `jsonb` value as its JSON text, decoded later into whatever the
/// caller wants (a [`Value`], or an event type directly).
pub(crate) struct RawJson(Vec<u8>);

impl FromSql<Jsonb, Pg> for RawJson {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        // The binary form is a version byte (1) and the text.
        match value.as_bytes().split_first() {
            Some((1, text)) => Ok(RawJson(text.to_vec())),
            _ => Err("unsupported jsonb encoding".into()),
        }
    }
}

/// An event's metadata bound as `jsonb` without copying it into a
/// [`Value`] first.
#[derive(Debug)]
pub(crate) struct JsonMap<'a>(pub(crate) &'a Map<String, Value>);

impl ToSql<Jsonb, Pg> for JsonMap<'_> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        // The binary form: a version byte (1), then the text.
        out.write_all(&[1])?;
        serde_json::to_writer(out, self.0)?;
        Ok(IsNull::No)
    }
}

impl EventRow {
    /// The recorded event; rows written by plain SQL may have no data (JSON
    /// `null`) or no metadata (an empty object).
    pub(crate) fn into_recorded(self) -> Result<Recorded> {
        self.into_payload::<Value>()
    }

    /// The event's position.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor::new(self.version.max(0) as u64)
    }

    /// What the row holds in memory, roughly.
    pub(crate) fn held_bytes(&self) -> usize {
        let json = |j: &Option<RawJson>| j.as_ref().map_or(0, |j| j.0.len());
        std::mem::size_of::<Self>()
            + self.id.len()
            + self.aggregate_id.len()
            + self.event_type.len()
            + json(&self.data)
            + json(&self.metadata)
    }

    /// The event decoded into `P` straight from the stored JSON (an error
    /// for this event alone when it does not decode).
    pub(crate) fn into_payload<P: Payload>(self) -> Result<Recorded<P>> {
        let metadata = match &self.metadata {
            None => Value::Null,
            Some(json) => serde_json::from_slice(&json.0).map_err(|e| {
                Error::database("load", format!("stored metadata of {:?}: {e}", self.id))
            })?,
        };
        let metadata = match metadata {
            Value::Null => Map::new(),
            Value::Object(map) => map,
            other => {
                let mut map = Map::new();
                map.insert("value".to_owned(), other);
                map
            }
        };
        let version = u64::try_from(self.version)
            .map_err(|_| Error::database("load", format!("negative version {}", self.version)))?;
        let stream_version = u64::try_from(self.stream_version).map_err(|_| {
            Error::database(
                "load",
                format!("negative stream version {}", self.stream_version),
            )
        })?;
        let json = self.data.as_ref().map_or(&b"null"[..], |d| d.0.as_slice());
        let data = P::from_json(&self.event_type, &self.id, json)?;
        Ok(Recorded {
            version,
            stream_version,
            id: self.id,
            aggregate_id: self.aggregate_id,
            event_type: self.event_type,
            data,
            metadata,
            created_at: self.created_at,
        })
    }
}

/// What an INSERT returns: the positions the database gave an event.
#[derive(QueryableByName)]
pub(crate) struct Inserted {
    #[diesel(sql_type = Text)]
    pub(crate) id: String,
    #[diesel(sql_type = BigInt)]
    pub(crate) version: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) stream_version: i64,
    #[diesel(sql_type = Timestamptz)]
    pub(crate) created_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
pub(crate) struct Fence {
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) fence: Option<i64>,
}

/// The fence as `set_config` returns it.
#[derive(QueryableByName)]
pub(crate) struct FenceText {
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) fence: Option<String>,
}

#[derive(QueryableByName)]
pub(crate) struct StreamHead {
    #[diesel(sql_type = BigInt)]
    pub(crate) stream_version: i64,
}

#[derive(QueryableByName)]
pub(crate) struct Position {
    #[diesel(sql_type = BigInt)]
    pub(crate) position: i64,
}

#[derive(QueryableByName)]
pub(crate) struct Count {
    #[diesel(sql_type = BigInt)]
    pub(crate) count: i64,
}
