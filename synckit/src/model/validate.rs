//! Input checks shared by every backend, run before anything is written.

use std::collections::HashSet;

use serde_json::Value;

use crate::model::cursor::ExpectedVersion;
use crate::model::error::{Error, Result};
use crate::model::recorded::NewEvent;

/// Longest event id, in bytes.
pub const MAX_ID_LEN: usize = 255;
/// Longest aggregate id, in bytes (well inside PostgreSQL's B-tree entry
/// limit, so the `(aggregate_id, stream_version)` index always accepts it).
pub const MAX_AGGREGATE_ID_LEN: usize = 1024;
/// Longest event type name, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 255;

fn check_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long, the limit is {max}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid(field, "contains a NUL character"));
    }
    Ok(())
}

/// Checks an aggregate id as given to a load or a filter.
pub fn check_aggregate_id(aggregate_id: &str) -> Result<()> {
    check_text("aggregate id", aggregate_id, MAX_AGGREGATE_ID_LEN)
}

/// Checks the aggregate ids and event types of a read or subscription
/// filter.
pub fn check_filter(filter: &crate::model::filter::Filter) -> Result<()> {
    for id in filter.aggregate_ids().into_iter().flatten() {
        check_aggregate_id(id)?;
    }
    for t in filter.event_types().into_iter().flatten() {
        check_text("event type", t, MAX_EVENT_TYPE_LEN)?;
    }
    Ok(())
}

/// The deepest nesting of arrays and objects an event's `data` may have
/// (its `metadata` object counts as one level of its own). Reading JSON
/// back, serde_json refuses documents nested 128 deep; an append of data
/// the store could not read back is refused instead, as
/// [`Error::InvalidInput`].
pub const MAX_JSON_DEPTH: usize = 127;

/// Rejects NUL characters anywhere in a JSON document (PostgreSQL's `jsonb`
/// cannot store `\u0000`), in keys as in values, and nesting deeper than
/// `room` levels (1 for the document's own array or object).
fn check_json(field: &'static str, value: &Value, room: usize) -> Result<()> {
    let nul = || Error::invalid(field, "contains a NUL character (\\u0000)");
    let deeper = || {
        if room == 0 {
            Err(Error::invalid(
                field,
                format!(
                    "nests arrays and objects deeper than {MAX_JSON_DEPTH} levels, which could not be read back"
                ),
            ))
        } else {
            Ok(room - 1)
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => Err(nul()),
        Value::Array(items) => {
            let room = deeper()?;
            items.iter().try_for_each(|v| check_json(field, v, room))
        }
        Value::Object(map) => {
            let room = deeper()?;
            map.iter().try_for_each(|(k, v)| {
                if k.contains('\0') {
                    return Err(nul());
                }
                check_json(field, v, room)
            })
        }
        _ => Ok(()),
    }
}

/// Checks one event.
pub fn check_event(event: &NewEvent) -> Result<()> {
    check_text("event id", &event.id, MAX_ID_LEN)?;
    check_aggregate_id(&event.aggregate_id)?;
    check_text("event type", &event.event_type, MAX_EVENT_TYPE_LEN)?;
    check_json("data", &event.data, MAX_JSON_DEPTH)?;
    event.metadata.iter().try_for_each(|(k, v)| {
        if k.contains('\0') {
            return Err(Error::invalid(
                "metadata",
                "contains a NUL character (\\u0000)",
            ));
        }
        // The metadata object is one level.
        check_json("metadata", v, MAX_JSON_DEPTH - 1)
    })
}

/// Checks a whole append: every event, no id twice, and one aggregate when
/// the append expects a version.
pub fn check_append(expected: ExpectedVersion, events: &[NewEvent]) -> Result<()> {
    let mut ids = HashSet::with_capacity(events.len());
    for event in events {
        check_event(event)?;
        if !ids.insert(event.id.as_str()) {
            return Err(Error::invalid(
                "batch",
                format!("event id {:?} appears twice", event.id),
            ));
        }
    }
    if expected != ExpectedVersion::Any
        && let Some(first) = events.first()
        && let Some(other) = events.iter().find(|e| e.aggregate_id != first.aggregate_id)
    {
        return Err(Error::invalid(
            "batch",
            format!(
                "an append expecting {expected} covers one stream, but it holds {:?} and {:?}",
                first.aggregate_id, other.aggregate_id
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event() -> NewEvent {
        NewEvent::new("a-1", "created", json!({"k": "v"}))
    }

    #[test]
    fn rejects_nul_everywhere() {
        let cases = [
            event().with_id("x\0y"),
            NewEvent::new("a\0", "created", json!({})),
            NewEvent::new("a", "cre\0ated", json!({})),
            NewEvent::new("a", "created", json!({"k": ["ok", "n\0"]})),
            NewEvent::new("a", "created", json!({"k\0": 1})),
            event().with_metadata("m", json!("\0")),
            event().with_metadata("m\0", json!(1)),
        ];
        for case in cases {
            let err = check_event(&case).unwrap_err();
            assert!(err.to_string().contains("NUL"), "{err}");
        }
    }

    /// Nested `depth` arrays around a number.
    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |inner, _| Value::Array(vec![inner]))
    }

    #[test]
    fn refuses_data_nested_deeper_than_the_decoder_reads_back() {
        let at_limit = NewEvent::new("a", "t", nested(MAX_JSON_DEPTH));
        check_event(&at_limit).unwrap();
        // What the check accepts, the decoder reads back.
        let text = serde_json::to_string(&at_limit.data).unwrap();
        serde_json::from_str::<Value>(&text).unwrap();
        let meta = event().with_metadata("m", nested(MAX_JSON_DEPTH - 1));
        check_event(&meta).unwrap();
        let text = serde_json::to_string(&meta.metadata).unwrap();
        serde_json::from_str::<Value>(&text).unwrap();

        for too_deep in [
            NewEvent::new("a", "t", nested(MAX_JSON_DEPTH + 1)),
            NewEvent::new("a", "t", nested(200)),
            event().with_metadata("m", nested(MAX_JSON_DEPTH)),
        ] {
            let err = check_event(&too_deep).unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
            assert!(err.to_string().contains("deeper than 127"), "{err}");
        }
        // One level more is what the decoder refuses.
        let text = serde_json::to_string(&nested(MAX_JSON_DEPTH + 1)).unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }

    #[test]
    fn rejects_empty_and_oversized_text() {
        assert!(check_event(&event().with_id("")).is_err());
        assert!(check_event(&event().with_id("i".repeat(MAX_ID_LEN))).is_ok());
        let err = check_event(&event().with_id("i".repeat(MAX_ID_LEN + 1))).unwrap_err();
        assert!(err.to_string().contains("the limit is 255"), "{err}");
        let long = "a".repeat(MAX_AGGREGATE_ID_LEN + 1);
        assert!(check_event(&NewEvent::new(long, "t", json!(1))).is_err());
        let long = "t".repeat(MAX_EVENT_TYPE_LEN + 1);
        assert!(check_event(&NewEvent::new("a", long, json!(1))).is_err());
    }

    #[test]
    fn rejects_repeated_ids_and_mixed_streams_with_expectation() {
        let a = event().with_id("1");
        assert!(check_append(ExpectedVersion::Any, &[a.clone(), a.clone()]).is_err());
        let b = NewEvent::new("a-2", "created", json!({}));
        assert!(check_append(ExpectedVersion::Any, &[a.clone(), b.clone()]).is_ok());
        assert!(check_append(ExpectedVersion::Exact(1), &[a, b]).is_err());
    }
}
