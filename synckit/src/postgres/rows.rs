//! Row types and the SQL of the store.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use std::io::Write;

use diesel::deserialize;
use diesel::pg::{Pg, PgValue};
use diesel::result::UnexpectedEndOfRow;
use diesel::row::{Field, NamedRow, Row};
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

/// One row of `events` (the columns of [`EVENT_COLUMNS`], in that order),
/// turned into an event of payload `P` as it arrives: columns are taken
/// by position, and the stored JSON is decoded straight from the row's
/// bytes, with no copy. A row whose JSON does not decode holds the error
/// (the read goes on); its position is kept for paging.
pub(crate) struct EventRow<P = Value> {
    version: i64,
    pub(crate) event: Result<Recorded<P>>,
}

/// The JSON text of a binary `jsonb` value (a version byte, 1, then the
/// text).
fn jsonb_text(value: PgValue<'_>) -> deserialize::Result<&[u8]> {
    match value.as_bytes().split_first() {
        Some((1, text)) => Ok(text),
        _ => Err("unsupported jsonb encoding".into()),
    }
}

impl<P: Payload> QueryableByName<Pg> for EventRow<P> {
    fn build<'a>(row: &impl NamedRow<'a, Pg>) -> deserialize::Result<Self> {
        let version: i64 = row.get_value::<BigInt, _, _>(0)?;
        let stream_version: i64 = row.get_value::<BigInt, _, _>(1)?;
        let id: String = row.get_value::<Text, _, _>(2)?;
        let aggregate_id: String = row.get_value::<Text, _, _>(3)?;
        let event_type: String = row.get_value::<Text, _, _>(4)?;
        let created_at: DateTime<Utc> = row.get_value::<Timestamptz, _, _>(7)?;
        let data = Row::get(row, 5).ok_or(UnexpectedEndOfRow)?;
        let metadata = Row::get(row, 6).ok_or(UnexpectedEndOfRow)?;
        let data = data.value().map(jsonb_text).transpose()?;
        let metadata = metadata.value().map(jsonb_text).transpose()?;
        let event = recorded(
            version,
            stream_version,
            id,
            aggregate_id,
            event_type,
            data,
            metadata,
            created_at,
        );
        Ok(EventRow { version, event })
    }
}

impl<P> EventRow<P> {
    /// The event's position.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor::new(self.version.max(0) as u64)
    }
}

/// The recorded event from a row's parts; rows written by plain SQL may
/// have no data (JSON `null`) or no metadata (an empty object).
#[allow(clippy::too_many_arguments)]
fn recorded<P: Payload>(
    version: i64,
    stream_version: i64,
    id: String,
    aggregate_id: String,
    event_type: String,
    data: Option<&[u8]>,
    metadata: Option<&[u8]>,
    created_at: DateTime<Utc>,
) -> Result<Recorded<P>> {
    let metadata = match metadata {
        None => Value::Null,
        Some(json) => serde_json::from_slice(json)
            .map_err(|e| Error::database("load", format!("stored metadata of {id:?}: {e}")))?,
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
    let version = u64::try_from(version)
        .map_err(|_| Error::database("load", format!("negative version {version}")))?;
    let stream_version = u64::try_from(stream_version).map_err(|_| {
        Error::database("load", format!("negative stream version {stream_version}"))
    })?;
    let data = P::from_json(&event_type, &id, data.unwrap_or(b"null"))?;
    Ok(Recorded {
        version,
        stream_version,
        id,
        aggregate_id,
        event_type,
        data,
        metadata,
        created_at,
    })
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
