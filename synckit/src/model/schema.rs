//! JSON Schema of each event type's stored `data` (feature `schema`).

use serde_json::{Map, Value};

use crate::model::event::{EnumRepr, Event, EventSchema, Layout};

/// Cuts one schema per event type out of the schema schemars derives for the
/// whole Rust type.
pub(crate) fn event_schemas<T: Event + schemars::JsonSchema>() -> Vec<EventSchema> {
    let root = Value::from(schemars::schema_for!(T));
    match T::layout() {
        Layout::Struct {
            event_type,
            aliases,
            version,
        } => vec![EventSchema {
            event_type,
            aliases,
            version: *version,
            schema: titled(root.clone(), event_type),
        }],
        Layout::Enum { repr, variants } => {
            let Value::Object(root_map) = &root else {
                return Vec::new();
            };
            let alternatives: &[Value] = root_map
                .get("oneOf")
                .or_else(|| root_map.get("anyOf"))
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            variants
                .iter()
                .enumerate()
                .map(|(index, variant)| {
                    let content = variant_content(repr, alternatives, index, variant.serde_name)
                        .unwrap_or(Value::Bool(true));
                    EventSchema {
                        event_type: variant.event_type,
                        aliases: variant.aliases,
                        version: variant.version,
                        schema: titled(
                            with_root_definitions(content, root_map),
                            variant.event_type,
                        ),
                    }
                })
                .collect()
        }
    }
}

/// The schema of one variant's content within the enum's alternatives.
fn variant_content(
    repr: &EnumRepr,
    alternatives: &[Value],
    index: usize,
    serde_name: &str,
) -> Option<Value> {
    let props = |alt: &Value| alt.get("properties").and_then(Value::as_object).cloned();
    let tag_is = |alt: &Value, tag: &str| {
        alt.pointer(&format!("/properties/{tag}"))
            .is_some_and(|t| names_const(t, serde_name))
    };
    match repr {
        EnumRepr::External => alternatives
            .iter()
            .find_map(|alt| props(alt)?.get(serde_name).cloned()),
        EnumRepr::Internal { tag } => {
            let alt = alternatives.iter().find(|alt| tag_is(alt, tag))?;
            let mut alt = alt.clone();
            if let Some(p) = alt.get_mut("properties").and_then(Value::as_object_mut) {
                p.remove(*tag);
            }
            if let Some(r) = alt.get_mut("required").and_then(Value::as_array_mut) {
                r.retain(|k| k.as_str() != Some(tag));
            }
            Some(alt)
        }
        EnumRepr::Adjacent { tag, content } => {
            let alt = alternatives.iter().find(|alt| tag_is(alt, tag))?;
            props(alt)?.get(*content).cloned()
        }
        EnumRepr::Untagged => alternatives.get(index).cloned(),
    }
}

fn names_const(schema: &Value, name: &str) -> bool {
    schema.get("const").and_then(Value::as_str) == Some(name)
        || schema
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| e.len() == 1 && e[0].as_str() == Some(name))
}

/// Keeps `$schema` and `$defs` of the root so that references still resolve.
fn with_root_definitions(content: Value, root: &Map<String, Value>) -> Value {
    let mut map = match content {
        Value::Object(map) => map,
        Value::Bool(true) => Map::new(),
        other => {
            let mut m = Map::new();
            m.insert("allOf".into(), Value::Array(vec![other]));
            m
        }
    };
    for key in ["$schema", "$defs", "definitions"] {
        if let Some(v) = root.get(key) {
            map.entry(key).or_insert_with(|| v.clone());
        }
    }
    Value::Object(map)
}

fn titled(schema: Value, event_type: &str) -> schemars::Schema {
    let mut map = match schema {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.insert("title".into(), Value::String(event_type.to_owned()));
    schemars::Schema::from(map)
}
