//! Copying another store (the embedded SQLite one, typically) into
//! PostgreSQL: in order, in batches, resumable, verified.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures::TryStreamExt;
use md5::{Digest, Md5};
use serde_json::Value;

use diesel::pg::Pg;

use super::PgStore;
use super::rows::JsonMap;
use crate::model::cursor::Cursor;
use crate::model::error::{Error, Result};
use crate::model::filter::Filter;
use crate::model::recorded::Recorded;
use crate::sql::{Number, Statement, checkpoint, int};
use crate::store::EventStore;

/// Progress of an import, reported after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportProgress {
    /// Events copied so far, this run and earlier runs.
    pub copied: u64,
    /// Version in the source of the last event copied.
    pub source_position: u64,
}

/// What an import did and found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Events copied by this run (0 when an earlier run finished).
    pub copied_now: u64,
    /// Events in the source.
    pub source_count: u64,
    /// Events in the target.
    pub target_count: u64,
    /// Checksum over the source's events, in order.
    pub source_checksum: String,
    /// Checksum over the target's events, in order; equal to the source's.
    pub target_checksum: String,
}

/// The checkpoint row that records how far an import got.
fn checkpoint_name(source_name: &str) -> String {
    format!("synckit.import:{source_name}")
}

/// An order-sensitive checksum and count over a store's events: id,
/// aggregate, type, stream version, data, metadata and creation time (to the
/// microsecond). JSON is hashed by meaning, not by text: keys in byte
/// order whatever order a map keeps them in (`jsonb` reorders them, and
/// serde_json's `preserve_order` keeps the order read), numbers by value
/// (`jsonb` stores `-0.0` as `0.0` and `1e2` as `100`).
pub(crate) async fn checksum<S: EventStore>(store: &S) -> Result<(u64, String)> {
    let mut hasher = Md5::new();
    let mut count = 0u64;
    let mut events = store.read_stream(Filter::all(), Cursor::START);
    while let Some(e) = events.try_next().await? {
        for text in [&e.id, &e.aggregate_id, &e.event_type] {
            hash_json(&mut hasher, &Value::from(text.as_str()));
        }
        hasher.update(e.stream_version.to_string().as_bytes());
        hash_json(&mut hasher, &e.data);
        hash_json(&mut hasher, &Value::Object(e.metadata));
        hasher.update(e.created_at.timestamp_micros().to_string().as_bytes());
        hasher.update(b"\n");
        count += 1;
    }
    let digest = hasher.finalize();
    Ok((count, digest.iter().map(|b| format!("{b:02x}")).collect()))
}

/// Feeds a JSON value to the hasher in a canonical form (see [`checksum`]).
fn hash_json(hasher: &mut Md5, value: &Value) {
    match value {
        Value::Null => hasher.update(b"n"),
        Value::Bool(b) => hasher.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            hasher.update(b"#");
            hasher.update(canonical_number(n).as_bytes());
            hasher.update(b";");
        }
        Value::String(s) => {
            // Length-prefixed: no string can pass for two.
            hasher.update(format!("s{}:", s.len()).as_bytes());
            hasher.update(s.as_bytes());
        }
        Value::Array(items) => {
            hasher.update(format!("a{}:", items.len()).as_bytes());
            for item in items {
                hash_json(hasher, item);
            }
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            hasher.update(format!("o{}:", keys.len()).as_bytes());
            for key in keys {
                hash_json(hasher, &Value::from(key.as_str()));
                hash_json(hasher, &map[key]);
            }
        }
    }
}

/// A number by its value: integers as integers, integral floats that an
/// `f64` holds exactly as integers too, zero without a sign.
fn canonical_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    // 2^53: every integer up to it is exact in an f64.
    if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
        // Exact: `f` is integral and within i64.
        #[allow(clippy::cast_possible_truncation)]
        let i = f as i64;
        return i.to_string();
    }
    format!("{f:e}")
}

impl PgStore {
    /// Copies every event of `source` into this store, in order and in
    /// batches of [`Config::batch_size`](super::Config), keeping ids,
    /// aggregates, types, data, metadata, creation times and stream
    /// versions; then verifies counts and checksums over both stores.
    ///
    /// `source_name` identifies the source (a file path, say): progress is
    /// recorded under it in the same transaction as each batch, so a run
    /// that is interrupted continues where it stopped when started again,
    /// and never copies an event twice. The target must be empty or hold
    /// only an earlier run of the same import.
    pub async fn import_from<S: EventStore>(
        &self,
        source: &S,
        source_name: &str,
        mut on_progress: impl FnMut(ImportProgress) + Send,
    ) -> Result<ImportReport> {
        let name = checkpoint_name(source_name);
        if name.len() > crate::model::validate::MAX_ID_LEN {
            return Err(Error::invalid("source name", "is too long"));
        }
        let (mut position, mut copied) = self.import_start(&name).await?;
        let mut copied_now = 0u64;
        let batch = self.inner.config.batch_size.max(1);
        loop {
            let page = source
                .read(&Filter::all(), Cursor::new(position), batch)
                .await?;
            let Some(last) = page.last().map(|e| e.version) else {
                break;
            };
            self.import_batch(&name, &page, last).await?;
            position = last;
            copied += int::len(page.len());
            copied_now += int::len(page.len());
            on_progress(ImportProgress {
                copied,
                source_position: position,
            });
            if page.len() < batch {
                break;
            }
        }
        let (source_count, source_checksum) = checksum(source).await?;
        let (target_count, target_checksum) = checksum(self).await?;
        if source_count != target_count || source_checksum != target_checksum {
            return Err(Error::database(
                "import",
                format!(
                    "verification failed: source has {source_count} events ({source_checksum}), \
                     target {target_count} ({target_checksum})"
                ),
            ));
        }
        Ok(ImportReport {
            copied_now,
            source_count,
            target_count,
            source_checksum,
            target_checksum,
        })
    }

    /// Where an import resumes: the source version after which to read, and
    /// how many events earlier runs copied.
    async fn import_start(&self, name: &str) -> Result<(u64, u64)> {
        let name = name.to_owned();
        self.with_conn("import", async |conn| {
            let done: Vec<Number> = checkpoint::load::<Pg>(name)
                .load(&mut *conn)
                .await
                .map_err(|e| Error::database("import", e))?;
            let count: Vec<Number> = Statement::new("SELECT count(*) AS n FROM events")
                .load(&mut *conn)
                .await
                .map_err(|e| Error::database("import", e))?;
            let count = Number::first(count).map_or(0, int::nonnegative);
            match checkpoint::position(done) {
                Some(p) => Ok((p.version(), count)),
                None if count == 0 => Ok((0, 0)),
                None => Err(Error::invalid(
                    "import target",
                    format!("holds {count} events that no earlier run of this import copied; import into an empty database"),
                )),
            }
        })
        .await
    }

    async fn import_batch(&self, name: &str, page: &[Recorded], last: u64) -> Result<()> {
        let ids: Vec<&str> = page.iter().map(|e| e.id.as_str()).collect();
        let aggregates: Vec<&str> = page.iter().map(|e| e.aggregate_id.as_str()).collect();
        let types: Vec<&str> = page.iter().map(|e| e.event_type.as_str()).collect();
        let data: Vec<&Value> = page.iter().map(|e| &e.data).collect();
        let metadata: Vec<JsonMap<'_>> = page.iter().map(|e| JsonMap(&e.metadata)).collect();
        let stream_versions: Vec<i64> =
            page.iter().map(|e| int::to_sql(e.stream_version)).collect();
        let created: Vec<DateTime<Utc>> = page.iter().map(|e| e.created_at).collect();
        let name = name.to_owned();
        let position = Cursor::new(last);
        self.with_conn("import", async |conn| {
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                Statement::new(
                    "INSERT INTO events (id, aggregate_id, event_type, data, metadata, stream_version, created_at) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::bigint[], $7::timestamptz[])",
                )
                .bind::<Array<Text>, _>(&ids)
                .bind::<Array<Text>, _>(&aggregates)
                .bind::<Array<Text>, _>(&types)
                .bind::<Array<Jsonb>, _>(&data)
                .bind::<Array<Jsonb>, _>(&metadata)
                .bind::<Array<BigInt>, _>(&stream_versions)
                .bind::<Array<Timestamptz>, _>(&created)
                .execute(&mut *conn)
                .await?;
                // Progress commits with the batch: all or nothing.
                checkpoint::save::<Pg>(name, position)
                    .execute(&mut *conn)
                .await?;
                Ok(())
            })
            .await
            .map_err(|e| Error::database("import", e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn digest(value: &Value) -> Vec<u8> {
        let mut hasher = Md5::new();
        hash_json(&mut hasher, value);
        hasher.finalize().to_vec()
    }

    #[test]
    fn json_is_hashed_by_meaning_not_text() {
        let parsed = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        assert_eq!(
            digest(&json!({"x": -0.0})),
            digest(&parsed(r#"{"x": 0.0}"#))
        );
        assert_eq!(
            digest(&parsed(r#"{"y": 1e2}"#)),
            digest(&parsed(r#"{"y": 100}"#))
        );
        assert_eq!(
            digest(&parsed(r#"{"b": 1, "aa": [2, "3"]}"#)),
            digest(&parsed(r#"{"aa": [2, "3"], "b": 1}"#))
        );
        assert_ne!(digest(&json!({"x": 1.5})), digest(&json!({"x": 1})));
        assert_ne!(digest(&json!(["ab", "c"])), digest(&json!(["a", "bc"])));
        assert_ne!(digest(&json!({"a": null})), digest(&json!({})));
    }
}
