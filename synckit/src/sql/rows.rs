//! The one row decoder. Each backend's row type reads the columns in its
//! own SQL types, then hands them here as [`StoredParts`]; every rule about
//! what a stored row means is in this file, so a row reads the same on
//! every backend (the behaviour suite pins each rule on each).
//!
//! A row that does not decode is an error of its own
//! ([`Error::UnreadableEvent`], or [`Error::Decode`] for data that does not
//! fit the payload), naming its version and id, so that one row never
//! fails a whole page.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::model::cursor::Cursor;
use crate::model::error::{Error, Result};
use crate::model::payload::Payload;
use crate::model::recorded::Recorded;
use crate::store::TypedPage;

/// A JSON column as a backend loaded it.
pub(crate) enum StoredJson<'a> {
    /// SQL `NULL`.
    Null,
    /// The JSON text.
    Text(&'a [u8]),
    /// A value the driver could not take, and why.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Unreadable(&'a str),
}

/// The columns of one stored event, loaded but not yet checked.
pub(crate) struct StoredParts<'a> {
    pub(crate) version: i64,
    pub(crate) stream_version: i64,
    pub(crate) id: String,
    pub(crate) aggregate_id: String,
    pub(crate) event_type: String,
    pub(crate) data: StoredJson<'a>,
    pub(crate) metadata: StoredJson<'a>,
    /// The time, or why the stored value is not one.
    pub(crate) created_at: std::result::Result<DateTime<Utc>, String>,
}

/// A backend's row of `events`, as pages and loads take it.
pub(crate) trait StoredRow: Send + 'static {
    /// The stored `version` column.
    fn version(&self) -> i64;

    /// What the row holds in memory, roughly.
    fn held_bytes(&self) -> usize;

    /// The row decoded into `P` by [`decode`].
    fn into_payload<P: Payload>(self) -> Result<Recorded<P>>;

    /// The row as a raw event.
    fn into_recorded(self) -> Result<Recorded>
    where
        Self: Sized,
    {
        self.into_payload::<Value>()
    }
}

/// A page of rows, decoded into `P` as each is taken.
pub(crate) fn page<R: StoredRow, P: Payload>(rows: Vec<R>) -> TypedPage<P> {
    TypedPage::from_rows(
        rows,
        |r| Cursor::new(super::int::nonnegative(r.version())),
        R::held_bytes,
        R::into_payload,
    )
}

/// Every row as a raw event, or the first row's error.
pub(crate) fn recorded<R: StoredRow>(rows: Vec<R>) -> Result<Vec<Recorded>> {
    rows.into_iter().map(R::into_recorded).collect()
}

/// The event `id` of a lookup by id ([`super::query::event_with_id`]),
/// or [`Error::EventNotFound`].
pub(crate) fn the_event<R: StoredRow>(rows: Vec<R>, id: String) -> Result<Recorded> {
    match rows.into_iter().next() {
        Some(row) => row.into_recorded(),
        None => Err(Error::EventNotFound { id }),
    }
}

/// The event in `parts`, decoded into `P`. The rules, checked in this
/// order:
///
/// 1. `version` and `stream_version` are positive (a negative or zero
///    version names itself as version 0: reads select `version > after`
///    with `after >= 0`);
/// 2. `created_at` is a time (not `infinity`, not unparsable text);
/// 3. `metadata` that is an object is taken as it is; SQL `NULL` and JSON
///    `null` are an empty object; any other JSON value (a row another tool
///    wrote) is kept under the key `"value"`; text that is not JSON is
///    unreadable;
/// 4. `data` decodes into `P` (SQL `NULL` as JSON `null`), upcast from
///    the metadata's schema version for an [`Event`](crate::Event) type.
pub(crate) fn decode<P: Payload>(parts: StoredParts<'_>) -> Result<Recorded<P>> {
    let StoredParts {
        version,
        stream_version,
        id,
        aggregate_id,
        event_type,
        data,
        metadata,
        created_at,
    } = parts;
    let (version, stream_version) = positions(version, stream_version, &id)?;
    let unreadable = |reason: String| Error::unreadable(version, &id, reason);
    let created_at = created_at.map_err(|e| unreadable(format!("its created_at {e}")))?;
    let metadata = match metadata {
        StoredJson::Null => Value::Null,
        StoredJson::Unreadable(e) => return Err(unreadable(format!("its metadata: {e}"))),
        StoredJson::Text(json) => {
            serde_json::from_slice(json).map_err(|e| unreadable(format!("its metadata: {e}")))?
        }
    };
    let metadata = match metadata {
        Value::Null => Map::new(),
        Value::Object(map) => map,
        other => Map::from_iter([("value".to_owned(), other)]),
    };
    let json = match data {
        StoredJson::Null => b"null".as_slice(),
        StoredJson::Text(json) => json,
        StoredJson::Unreadable(e) => return Err(unreadable(format!("its data: {e}"))),
    };
    let data =
        P::from_json(&event_type, &metadata, &id, json).map_err(|e| e.with_event(version, &id))?;
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

/// Rule 1 of [`decode`].
fn positions(version: i64, stream_version: i64, id: &str) -> Result<(u64, u64)> {
    let at = super::int::nonnegative(version);
    if at == 0 {
        return Err(Error::unreadable(
            0,
            id,
            format!("its version is {version}"),
        ));
    }
    let stream = u64::try_from(stream_version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            Error::unreadable(at, id, format!("its stream version is {stream_version}"))
        })?;
    Ok((at, stream))
}
