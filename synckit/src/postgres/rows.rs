//! The row types of PostgreSQL's queries, in its SQL types (decoded by
//! the shared rules of [`crate::sql::rows`]).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use std::io::Write;

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz};
use serde_json::{Map, Value};

use crate::model::error::Result;
use crate::model::payload::Payload;
use crate::model::recorded::Recorded;
use crate::sql::rows::{self, StoredJson, StoredParts, StoredRow};

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
    created_at: RawTime,
}

/// A `jsonb` value as its JSON text, decoded later into whatever the
/// caller wants (a [`Value`], or an event type directly). Never fails to
/// load: a value it cannot take is an error of its row alone, when the row
/// is decoded, so that one row cannot fail a whole page.
pub(crate) struct RawJson(std::result::Result<Vec<u8>, String>);

impl FromSql<Jsonb, Pg> for RawJson {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        // The binary form is a version byte (1) and the text.
        Ok(RawJson(match value.as_bytes().split_first() {
            Some((1, text)) => Ok(text.to_vec()),
            _ => Err("unsupported jsonb encoding".to_owned()),
        }))
    }
}

impl RawJson {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, Vec::len)
    }

    /// A nullable column as the shared decoder takes it.
    fn stored(column: &Option<RawJson>) -> StoredJson<'_> {
        match column {
            None => StoredJson::Null,
            Some(RawJson(Ok(text))) => StoredJson::Text(text),
            Some(RawJson(Err(e))) => StoredJson::Unreadable(e),
        }
    }
}

/// A `timestamptz` that may be `infinity` or `-infinity` (plain SQL can
/// store those; no [`DateTime`] holds them): checked when its row is
/// decoded, like [`RawJson`].
pub(crate) struct RawTime(Option<DateTime<Utc>>);

impl FromSql<Timestamptz, Pg> for RawTime {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        // Microseconds since 2000-01-01 UTC; i64::MAX and MIN are the
        // infinities.
        let bytes: [u8; 8] = value
            .as_bytes()
            .try_into()
            .map_err(|_| "a timestamptz is 8 bytes")?;
        let micros = i64::from_be_bytes(bytes);
        let epoch = DateTime::<Utc>::from_timestamp(946_684_800, 0);
        Ok(RawTime(if micros == i64::MAX || micros == i64::MIN {
            None
        } else {
            epoch.and_then(|e| e.checked_add_signed(chrono::TimeDelta::microseconds(micros)))
        }))
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

impl StoredRow for EventRow {
    fn version(&self) -> i64 {
        self.version
    }

    fn held_bytes(&self) -> usize {
        let json = |j: &Option<RawJson>| j.as_ref().map_or(0, RawJson::len);
        std::mem::size_of::<Self>()
            + self.id.len()
            + self.aggregate_id.len()
            + self.event_type.len()
            + json(&self.data)
            + json(&self.metadata)
    }

    fn into_payload<P: Payload>(self) -> Result<Recorded<P>> {
        let EventRow {
            version,
            stream_version,
            id,
            aggregate_id,
            event_type,
            data,
            metadata,
            created_at,
        } = self;
        rows::decode(StoredParts {
            version,
            stream_version,
            id,
            aggregate_id,
            event_type,
            data: RawJson::stored(&data),
            metadata: RawJson::stored(&metadata),
            created_at: created_at.0.ok_or_else(|| "is infinite".to_owned()),
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

/// The fence as `set_config` returns it.
#[derive(QueryableByName)]
pub(crate) struct FenceText {
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) fence: Option<String>,
    /// The last version taken (committed or not).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) head: Option<i64>,
}
