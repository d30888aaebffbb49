//! The row type of SQLite's queries, in its SQL types (decoded by the
//! shared rules of [`crate::sql::rows`]).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text};

use crate::model::error::Result;
use crate::model::payload::Payload;
use crate::model::recorded::Recorded;
use crate::sql::rows::{self, StoredJson, StoredParts, StoredRow};

/// One row of `events`.
#[derive(QueryableByName)]
pub(super) struct Row {
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
    #[diesel(sql_type = Nullable<Text>)]
    data: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    metadata: Option<String>,
    #[diesel(sql_type = Text)]
    created_at: String,
}

impl StoredRow for Row {
    fn version(&self) -> i64 {
        self.version
    }

    fn held_bytes(&self) -> usize {
        let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
        std::mem::size_of::<Self>()
            + self.id.len()
            + self.aggregate_id.len()
            + self.event_type.len()
            + text(&self.data)
            + text(&self.metadata)
            + self.created_at.len()
    }

    fn into_payload<P: Payload>(self) -> Result<Recorded<P>> {
        let Row {
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
            data: stored(&data),
            metadata: stored(&metadata),
            created_at: parse_time(&created_at).map_err(|e| format!("{created_at:?}: {e}")),
        })
    }
}

/// A time as the `created_at` column stores it (RFC 3339).
pub(super) fn parse_time(text: &str) -> std::result::Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
}

/// A nullable JSON text column as the shared decoder takes it.
fn stored(column: &Option<String>) -> StoredJson<'_> {
    match column {
        None => StoredJson::Null,
        Some(text) => StoredJson::Text(text.as_bytes()),
    }
}
