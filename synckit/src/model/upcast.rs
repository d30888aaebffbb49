//! Reading a stored event into the current Rust type: the name it was
//! stored under (current or alias) picks the event type, the schema version
//! in its metadata picks where the upcast chain starts, and the chain runs
//! up to the type's current version before serde sees the data.
//!
//! The stored form is never changed: upcasting happens on every read, so
//! an older binary replaying the store still reads what it wrote.

use std::any::Any;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::model::error::{BoxError, Error, Result};
use crate::model::event::{Event, Target};
use crate::model::recorded::metadata::SCHEMA_VERSION;

/// The event type of `E` a stored name is read as, or
/// [`Error::UnknownEventType`].
pub(crate) fn target<E: Event>(stored: &str) -> Result<Target> {
    E::layout()
        .target(stored)
        .ok_or_else(|| Error::UnknownEventType {
            event_type: stored.to_owned(),
            event_id: None,
            version: None,
            expected: E::event_types(),
        })
}

/// The schema version a stored event's metadata records: its
/// `schema_version` key, 1 when there is none (an event appended as raw
/// JSON, or before versions were recorded).
pub(crate) fn stored_schema_version(metadata: &Map<String, Value>) -> Result<u32, String> {
    match metadata.get(SCHEMA_VERSION) {
        None | Some(Value::Null) => Ok(1),
        Some(value) => value
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v >= 1)
            .ok_or_else(|| {
                format!("its metadata's {SCHEMA_VERSION} is {value}, not a version from 1 up")
            }),
    }
}

/// A stored event's data as a backend holds it.
pub(crate) enum StoredData<'a> {
    /// The JSON text of the `data` column.
    Json(&'a [u8]),
    /// Parsed JSON (the memory store, [`Recorded::decode`](crate::Recorded::decode)).
    Value(Value),
}

/// Decodes a stored event of `E`: name, schema version, upcasting, then
/// serde. When the stored version is the current one nothing is upcast,
/// and a struct is decoded from the JSON text directly.
pub(crate) fn decode_stored<E: Event>(
    event_type: &str,
    metadata: &Map<String, Value>,
    data: StoredData<'_>,
) -> Result<E> {
    let target = target::<E>(event_type)?;
    let decode_error = |message: String| Error::Decode {
        event_type: event_type.to_owned(),
        event_id: None,
        version: None,
        source: serde::de::Error::custom(message),
    };
    let stored = stored_schema_version(metadata).map_err(decode_error)?;
    if stored > target.version {
        return Err(decode_error(format!(
            "it was stored at schema version {stored}, and this build of {} reads versions up to {}",
            std::any::type_name::<E>(),
            target.version
        )));
    }
    if stored == target.version {
        return match data {
            StoredData::Json(json) => decode_current_json(&target, event_type, json),
            StoredData::Value(value) => decode_current(&target, event_type, value),
        };
    }
    let mut value = match data {
        StoredData::Json(json) => serde_json::from_slice(json).map_err(|source| Error::Decode {
            event_type: event_type.to_owned(),
            event_id: None,
            version: None,
            source,
        })?,
        StoredData::Value(value) => value,
    };
    for from in stored..target.version {
        value = E::upcast(target.event_type, from, value).map_err(|source| Error::Upcast {
            event_type: event_type.to_owned(),
            event_id: None,
            version: None,
            from,
            source,
        })?;
    }
    decode_current(&target, event_type, value)
}

/// Decodes data in the current shape of `target`; errors name the stored
/// event type.
pub(crate) fn decode_current<E: Event>(target: &Target, stored: &str, data: Value) -> Result<E> {
    let full = match target.variant {
        None => data,
        Some((repr, serde_name)) => repr.wrap(serde_name, data),
    };
    let value: E = serde_json::from_value(full).map_err(|source| Error::Decode {
        event_type: stored.to_owned(),
        event_id: None,
        version: None,
        source,
    })?;
    same_type(target, stored, value)
}

/// [`decode_current`] from JSON text; a struct without a [`Value`] in
/// between.
pub(crate) fn decode_current_json<E: Event>(
    target: &Target,
    stored: &str,
    json: &[u8],
) -> Result<E> {
    let decode_error = |source| Error::Decode {
        event_type: stored.to_owned(),
        event_id: None,
        version: None,
        source,
    };
    match target.variant {
        None => serde_json::from_slice(json).map_err(decode_error),
        Some(_) => decode_current(
            target,
            stored,
            serde_json::from_slice(json).map_err(decode_error)?,
        ),
    }
}

/// An untagged enum may decode into a variant other than the stored one;
/// that is data that does not fit, not a silent type change.
fn same_type<E: Event>(target: &Target, stored: &str, value: E) -> Result<E> {
    if value.event_type() == target.event_type {
        return Ok(value);
    }
    Err(Error::Decode {
        event_type: stored.to_owned(),
        event_id: None,
        version: None,
        source: serde::de::Error::custom(format!(
            "the data decodes as event type {:?}",
            value.event_type()
        )),
    })
}

/// One step of an upcast chain, as the derive calls it: `with` takes the
/// stored shape (a [`Value`] or any older type of the user's) and returns
/// the next one (a [`Value`] or a type that serializes to it).
///
/// A step over [`Value`] on both sides moves the value through without a
/// serde round trip: the `Any` checks below find it out at run time.
pub fn step<T, U, Err>(with: fn(T) -> Result<U, Err>, data: Value) -> Result<Value, BoxError>
where
    T: DeserializeOwned + 'static,
    U: Serialize + 'static,
    Err: Into<BoxError>,
{
    let input: Box<dyn Any> = Box::new(data);
    let input: T = match input.downcast::<T>() {
        Ok(same) => *same,
        Err(other) => match other.downcast::<Value>() {
            Ok(data) => serde_json::from_value(*data)
                .map_err(|e| format!("the stored data does not fit the step's input: {e}"))?,
            Err(_) => return Err("a step's input is always JSON".into()),
        },
    };
    let output: Box<dyn Any> = Box::new(with(input).map_err(Into::into)?);
    match output.downcast::<Value>() {
        Ok(value) => Ok(*value),
        Err(other) => match other.downcast::<U>() {
            Ok(typed) => serde_json::to_value(&*typed)
                .map_err(|e| format!("the step's output does not serialize: {e}").into()),
            Err(_) => Err("a step's output is its declared type".into()),
        },
    }
}
