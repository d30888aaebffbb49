//! Configuration of the PostgreSQL store.

use std::fmt;
use std::time::Duration;

use crate::store::DEFAULT_BATCH_SIZE;

/// Configuration of a [`PgStore`](super::PgStore): the seed's fields, each
/// with an effect.
///
/// ```
/// use std::time::Duration;
/// use synckit::postgres::Config;
///
/// let mut config = Config::new("postgres://app:secret@db.internal:5432/events");
/// config.max_open_conns = 50;
/// config.prepared_statements = false; // PgBouncer in transaction mode
/// assert!(!format!("{config:?}").contains("secret"));
/// # let _ = Duration::ZERO;
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The connection string, as a URL (`postgres://user:pass@host/db`) or
    /// key=value pairs (`host=... user=... password=...`). Never printed:
    /// `Debug` and log lines show [`Config::redacted_connection_string`].
    pub connection_string: String,
    /// Most connections the pool opens (default 25).
    pub max_open_conns: u32,
    /// Idle connections the pool keeps when it reaps connections idle for
    /// longer than [`Config::conn_max_idle_time`]; also the number it opens
    /// up front (default 10, at most `max_open_conns`).
    pub max_idle_conns: u32,
    /// Connections older than this are closed when returned (default 1 h;
    /// `None` keeps them).
    pub conn_max_lifetime: Option<Duration>,
    /// Connections idle for longer than this are closed, down to
    /// `max_idle_conns` (default 15 min; `None` keeps them).
    pub conn_max_idle_time: Option<Duration>,
    /// How long connecting, or waiting for a pooled connection, may take
    /// before failing with [`Error::InvalidConnection`](crate::Error) or a
    /// database error (default 10 s).
    pub connect_timeout: Duration,
    /// Idle time after which subscriptions poll the table and the listener
    /// checks its connection (default 30 s).
    pub notification_timeout: Duration,
    /// First delay before the listener reconnects; doubles with jitter on
    /// each failed attempt (default 5 s).
    pub reconnect_interval: Duration,
    /// Reconnect attempts before subscriptions end with an error
    /// (default 10).
    pub max_reconnect_attempts: u32,
    /// Page size of catch-up reads and the first page of loads (the pages
    /// of a long load grow from it: see [`EventStore::read_stream`]), and
    /// chunk size of batch appends: one statement per chunk (default 1000).
    ///
    /// [`EventStore::read_stream`]: crate::EventStore::read_stream
    pub batch_size: usize,
    /// Whether connections cache prepared statements (default on). Turn it
    /// off behind PgBouncer in transaction mode: every statement is then
    /// prepared unnamed and never reused.
    pub prepared_statements: bool,
    /// Whether the store records `metrics` counters, gauges and histograms
    /// (default on; with no recorder installed they cost nothing).
    pub metrics: bool,
    /// Whether connecting runs the embedded migrations (default on). Safe
    /// when several processes start at once; a database that is up to date
    /// runs no DDL. Turn it off where the application's role may not run
    /// DDL, and run [`migrate`](super::migrate) separately.
    pub run_migrations: bool,
}

impl Config {
    /// The seed's defaults for this connection string.
    pub fn new(connection_string: impl Into<String>) -> Self {
        Config {
            connection_string: connection_string.into(),
            max_open_conns: 25,
            max_idle_conns: 10,
            conn_max_lifetime: Some(Duration::from_secs(3600)),
            conn_max_idle_time: Some(Duration::from_secs(15 * 60)),
            connect_timeout: Duration::from_secs(10),
            notification_timeout: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(5),
            max_reconnect_attempts: 10,
            batch_size: DEFAULT_BATCH_SIZE,
            prepared_statements: true,
            metrics: true,
            run_migrations: true,
        }
    }

    /// The connection string with its password replaced by `***`, in URL
    /// and in key=value form alike.
    pub fn redacted_connection_string(&self) -> String {
        redact(&self.connection_string)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("connection_string", &self.redacted_connection_string())
            .field("max_open_conns", &self.max_open_conns)
            .field("max_idle_conns", &self.max_idle_conns)
            .field("conn_max_lifetime", &self.conn_max_lifetime)
            .field("conn_max_idle_time", &self.conn_max_idle_time)
            .field("connect_timeout", &self.connect_timeout)
            .field("notification_timeout", &self.notification_timeout)
            .field("reconnect_interval", &self.reconnect_interval)
            .field("max_reconnect_attempts", &self.max_reconnect_attempts)
            .field("batch_size", &self.batch_size)
            .field("prepared_statements", &self.prepared_statements)
            .field("metrics", &self.metrics)
            .field("run_migrations", &self.run_migrations)
            .finish()
    }
}

/// Hides the password of a connection string (URL or key=value form).
pub(crate) fn redact(conn: &str) -> String {
    let trimmed = conn.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        redact_url(conn)
    } else {
        redact_key_values(conn)
    }
}

fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    // userinfo is between "://" and the last '@' before the path.
    if let Some(scheme_end) = url.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = url[rest_start..]
            .find(['/', '?'])
            .map_or(url.len(), |i| rest_start + i);
        if let Some(at) = url[rest_start..authority_end].rfind('@') {
            let userinfo = &url[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out = format!(
                    "{}{}:***{}",
                    &url[..rest_start],
                    &userinfo[..colon],
                    &url[rest_start + at..]
                );
            }
        }
    }
    // A password may also come as a query parameter.
    redact_query_password(&out)
}

fn redact_query_password(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_owned();
    };
    let (head, query) = url.split_at(q + 1);
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}{}", parts.join("&"))
}

/// One `key = value` pair of a key=value connection string, with the byte
/// range of its value (quotes included).
pub(crate) struct Pair {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) range: std::ops::Range<usize>,
    /// Byte range of the whole pair, key to value.
    pub(crate) whole: std::ops::Range<usize>,
}

/// Splits a key=value connection string (libpq syntax: values may be
/// single-quoted with backslash escapes).
pub(crate) fn key_value_pairs(conn: &str) -> Vec<Pair> {
    let bytes = conn.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = conn[key_start..i].to_owned();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value_start = i;
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let ch_len = conn[i..].chars().next().map_or(1, char::len_utf8);
                value.push_str(&conn[i..i + ch_len]);
                i += ch_len;
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            value.push_str(&conn[value_start..i]);
        }
        pairs.push(Pair {
            key,
            value,
            range: value_start..i,
            whole: key_start..i,
        });
    }
    pairs
}

fn redact_key_values(conn: &str) -> String {
    let mut out = conn.to_owned();
    for pair in key_value_pairs(conn).iter().rev() {
        if pair.key.eq_ignore_ascii_case("password") {
            out.replace_range(pair.range.clone(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(
            redact("postgres://app:s3cr%40t@db:5432/events?sslmode=require"),
            "postgres://app:***@db:5432/events?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://app@db/events"),
            "postgresql://app@db/events"
        );
        assert_eq!(
            redact("postgres://db/events?user=app&password=hunter2"),
            "postgres://db/events?user=app&password=***"
        );
        assert_eq!(
            redact("postgres://a:p@ss@host/db"),
            "postgres://a:***@host/db"
        );
    }

    #[test]
    fn redacts_key_value_passwords() {
        assert_eq!(
            redact("host=db user=app password=hunter2 dbname=events"),
            "host=db user=app password=*** dbname=events"
        );
        assert_eq!(
            redact("host=db password = 'it\\'s a secret' user=app"),
            "host=db password = *** user=app"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let text = format!("{:?}", Config::new("postgres://u:topsecret@h/d"));
        assert!(!text.contains("topsecret"), "{text}");
        let text = format!("{:?}", Config::new("user=u password=topsecret host=h"));
        assert!(!text.contains("topsecret"), "{text}");
    }
}
