//! The notification payload and channel names, as a PostgreSQL client sees
//! them with `LISTEN`.

use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// The channel that announces every event.
pub const GLOBAL_CHANNEL: &str = "events_global";

/// The longest channel name PostgreSQL accepts, in bytes.
pub const MAX_CHANNEL_LEN: usize = 63;

const STREAM_PREFIX: &str = "stream_";
const HASHED_PREFIX: &str = "stream_md5_";

/// The logical stream name of an aggregate: `stream_{aggregate_id}` (the
/// `stream_name` column and payload field).
pub fn stream_name(aggregate_id: &str) -> String {
    format!("{STREAM_PREFIX}{aggregate_id}")
}

/// The notification channel of one aggregate's events.
///
/// `stream_{aggregate_id}` while that fits PostgreSQL's 63-byte limit on
/// channel names; for longer ids, `stream_md5_` followed by the 32 hex digits
/// of the MD5 of the aggregate id. The same rule runs in the database
/// trigger, so `LISTEN` in psql works with either form:
///
/// ```
/// use synckit::notification::stream_channel;
///
/// assert_eq!(stream_channel("order-1"), "stream_order-1");
/// // In psql: SELECT 'stream_md5_' || md5(repeat('x', 300));
/// assert_eq!(
///     stream_channel(&"x".repeat(300)),
///     "stream_md5_8a4876ea55d998a5d91ed59db796af28"
/// );
/// ```
pub fn stream_channel(aggregate_id: &str) -> String {
    if STREAM_PREFIX.len() + aggregate_id.len() <= MAX_CHANNEL_LEN {
        return stream_name(aggregate_id);
    }
    let digest = Md5::digest(aggregate_id.as_bytes());
    let mut channel = String::with_capacity(HASHED_PREFIX.len() + 32);
    channel.push_str(HASHED_PREFIX);
    for byte in digest {
        channel.push_str(&format!("{byte:02x}"));
    }
    channel
}

/// What every notification carries (JSON, field names as in the payload).
///
/// It announces an event; the event itself is read from the table, which is
/// the truth (notifications are lost while a listener is disconnected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NotificationPayload {
    /// Global version of the event.
    pub version: u64,
    /// Event id.
    pub id: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Event type.
    pub event_type: String,
    /// `stream_{aggregate_id}`.
    pub stream_name: String,
    /// When the event was recorded.
    pub created_at: DateTime<Utc>,
}

impl NotificationPayload {
    /// Parses the JSON text of a notification.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The payload announcing a recorded event.
    pub fn of<T>(event: &crate::Recorded<T>) -> Self {
        NotificationPayload {
            version: event.version,
            id: event.id.clone(),
            aggregate_id: event.aggregate_id.clone(),
            event_type: event.event_type.clone(),
            stream_name: stream_name(&event.aggregate_id),
            created_at: event.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_keep_their_name_long_ids_are_hashed() {
        assert_eq!(stream_channel("user-1"), "stream_user-1");
        let exactly = "a".repeat(MAX_CHANNEL_LEN - 7);
        assert_eq!(stream_channel(&exactly), format!("stream_{exactly}"));
        let long = "a".repeat(MAX_CHANNEL_LEN - 6);
        let channel = stream_channel(&long);
        assert!(channel.starts_with("stream_md5_"), "{channel}");
        assert_eq!(channel.len(), 11 + 32);
        // PostgreSQL: SELECT md5(repeat('x', 300)).
        assert_eq!(
            stream_channel(&"x".repeat(300)),
            "stream_md5_8a4876ea55d998a5d91ed59db796af28"
        );
    }

    #[test]
    fn payload_round_trips_with_seed_field_names() {
        let text = r#"{"version":7,"id":"e","aggregate_id":"a","event_type":"t","stream_name":"stream_a","created_at":"2024-01-02T03:04:05.123456+00:00"}"#;
        let p = NotificationPayload::from_json(text).unwrap();
        assert_eq!(p.version, 7);
        assert_eq!(p.stream_name, "stream_a");
        let back = serde_json::to_value(&p).unwrap();
        for key in [
            "version",
            "id",
            "aggregate_id",
            "event_type",
            "stream_name",
            "created_at",
        ] {
            assert!(back.get(key).is_some(), "{key}");
        }
    }
}
