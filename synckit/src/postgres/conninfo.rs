//! Connection strings split the way tokio-postgres splits them.
//!
//! Whatever synckit reads from a connection string (the password it hides,
//! the `sslmode` it enforces) it finds exactly where the driver will: two
//! parsers that disagree about where a password ends leak the rest of it,
//! or read `sslmode=require` out of a password. The rules are the driver's
//! (`tokio_postgres::Config`'s `FromStr`), byte for byte:
//!
//! - URL form (`postgres://` or `postgresql://`, no leading space): the
//!   credentials run to the first `@` of the whole string, the user to
//!   their first `:`, the password from there; the host runs to the next
//!   `/` or `?`, the path to the next `?`, and the query is `key=value`
//!   pairs, each key up to its first `=` and each value up to the next `&`.
//! - key=value form: keys run to whitespace or `=`; a value is quoted
//!   (`'...'`) or runs to the next whitespace; in both a backslash escapes
//!   the next character.

use std::ops::Range;

/// The URL prefixes the driver accepts.
const URL_PREFIXES: [&str; 2] = ["postgres://", "postgresql://"];

/// One `key=value` parameter, of either form, with byte ranges into the
/// string.
#[derive(Debug)]
pub(crate) struct Param {
    /// The key as the driver reads it (percent-decoded in a URL).
    pub(crate) key: String,
    /// The value as the driver reads it (unescaped, percent-decoded).
    pub(crate) value: String,
    /// The value's bytes in the string (quotes included).
    pub(crate) value_range: Range<usize>,
    /// The whole parameter, key to value.
    pub(crate) whole: Range<usize>,
}

/// A URL connection string's password and query, by byte ranges.
#[derive(Debug)]
pub(crate) struct Url {
    /// The password in the credentials, when there is one.
    pub(crate) password: Option<Range<usize>>,
    /// Where the query starts (just after its `?`), when there is one.
    pub(crate) query_start: Option<usize>,
    /// The query's parameters.
    pub(crate) params: Vec<Param>,
}

/// The parts of a URL connection string (`None`: not a URL).
pub(crate) fn url(conn: &str) -> Option<Url> {
    let start = URL_PREFIXES
        .iter()
        .find(|p| conn.starts_with(*p))
        .map(|p| p.len())?;
    let rest = &conn[start..];
    let mut password = None;
    let mut after_credentials = start;
    if let Some(at) = rest.find('@') {
        let credentials = &rest[..at];
        if let Some(colon) = credentials.find(':') {
            password = Some(start + colon + 1..start + at);
        }
        after_credentials = start + at + 1;
    }
    // Host up to '/' or '?', path up to '?': the query starts at the first
    // '?' after the credentials.
    let query_start = conn[after_credentials..]
        .find('?')
        .map(|q| after_credentials + q + 1);
    let mut params = Vec::new();
    if let Some(mut at) = query_start {
        while at < conn.len() {
            let Some(eq) = conn[at..].find('=') else {
                // "unterminated parameter": the driver refuses the string.
                break;
            };
            let key_range = at..at + eq;
            let value_start = at + eq + 1;
            let value_end = conn[value_start..]
                .find('&')
                .map_or(conn.len(), |a| value_start + a);
            params.push(Param {
                key: percent_decode(&conn[key_range.clone()]),
                value: percent_decode(&conn[value_start..value_end]),
                value_range: value_start..value_end,
                whole: key_range.start..value_end,
            });
            at = value_end + 1;
        }
    }
    Some(Url {
        password,
        query_start,
        params,
    })
}

/// The parameters of a key=value connection string. Where the driver would
/// refuse the string (a key without `=`, an unterminated quote), what can
/// be told apart is still returned, an open quote running to the end.
pub(crate) fn key_values(conn: &str) -> Vec<Param> {
    let mut params = Vec::new();
    let mut chars = conn.char_indices().peekable();
    let end = conn.len();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut chars);
        let Some(&(key_start, _)) = chars.peek() else {
            break;
        };
        while chars
            .next_if(|(_, c)| !c.is_whitespace() && *c != '=')
            .is_some()
        {}
        let key_end = chars.peek().map_or(end, |(i, _)| *i);
        skip_ws(&mut chars);
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            // No '=' after a key: the driver stops here with an error.
            if key_end == key_start {
                chars.next();
            }
            continue;
        }
        skip_ws(&mut chars);
        let value_start = chars.peek().map_or(end, |(i, _)| *i);
        let mut value = String::new();
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        while let Some(&(_, c)) = chars.peek() {
            if (quoted && c == '\'') || (!quoted && c.is_whitespace()) {
                break;
            }
            chars.next();
            if c == '\\' {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            } else {
                value.push(c);
            }
        }
        if quoted {
            chars.next_if(|(_, c)| *c == '\'');
        }
        let value_end = chars.peek().map_or(end, |(i, _)| *i);
        params.push(Param {
            key: conn[key_start..key_end].to_owned(),
            value,
            value_range: value_start..value_end,
            whole: key_start..value_end,
        });
    }
    params
}

/// Decodes `%XX` escapes (bytes, then UTF-8, lossily); a `%` not followed
/// by two hex digits stays as it is.
pub(crate) fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    // A hex digit's value fits a nibble.
    let hex = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi * 16 + lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connection string with every password replaced by `***`.
pub(crate) fn redact(conn: &str) -> String {
    let mut hidden: Vec<Range<usize>> = Vec::new();
    // A leading space makes the driver refuse a URL; hide its password all
    // the same.
    let trimmed = conn.trim_start();
    let offset = conn.len() - trimmed.len();
    match url(trimmed) {
        Some(url) => {
            hidden.extend(url.password.map(|r| r.start + offset..r.end + offset));
            hidden.extend(
                url.params
                    .iter()
                    .filter(|p| p.key.eq_ignore_ascii_case("password"))
                    .map(|p| p.value_range.start + offset..p.value_range.end + offset),
            );
        }
        None => hidden.extend(
            key_values(conn)
                .into_iter()
                .filter(|p| p.key.eq_ignore_ascii_case("password"))
                .map(|p| p.value_range),
        ),
    }
    let mut out = conn.to_owned();
    hidden.sort_by_key(|r| r.start);
    for range in hidden.into_iter().rev() {
        out.replace_range(range, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use proptest::prelude::*;

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
        // The driver ends the credentials at the first '@'.
        assert_eq!(
            redact("postgres://a:p@ss@host/db"),
            "postgres://a:***@ss@host/db"
        );
        // '/' and '?' belong to a password that comes before the '@'.
        assert_eq!(
            redact("postgres://app:pa/ss@127.0.0.1:5999/x"),
            "postgres://app:***@127.0.0.1:5999/x"
        );
        assert_eq!(
            redact("postgres://app:pa?ss@h/x?sslmode=require"),
            "postgres://app:***@h/x?sslmode=require"
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
        // An escaped space does not end an unquoted value.
        assert_eq!(redact("password=a\\ b host=h"), "password=*** host=h");
        assert_eq!(redact("password='never closed"), "password=***");
    }

    #[test]
    fn a_password_the_driver_ends_at_its_first_at_sign_is_hidden_there() {
        // The driver reads "\u{a0}," as the password and the rest as hosts.
        let conn = "postgres://app:\u{a0},@\u{a0},@db.internal:5432/events";
        assert_eq!(
            redact(conn),
            "postgres://app:***@\u{a0},@db.internal:5432/events"
        );
    }

    #[test]
    fn a_password_cannot_downgrade_tls() {
        let conn = "postgres://app:pa?sslmode=disable&x@db/events?sslmode=require";
        let (rest, tls) = super::super::tls::split(conn).unwrap();
        assert_eq!(tls.mode, super::super::tls::SslMode::Require);
        let passed = tokio_postgres::Config::from_str(&rest).unwrap();
        assert_eq!(passed.get_password(), Some(&b"pa?sslmode=disable&x"[..]));
        assert_eq!(
            passed.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert!(!redact(conn).contains("disable"));
    }

    #[test]
    fn percent_decoding_never_splits_a_character() {
        assert_eq!(percent_decode("%aé"), "%aé");
        assert_eq!(percent_decode("é%"), "é%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41%42"), "AB");
    }

    /// Characters that mean something to one of the two forms.
    const SPECIAL: &[char] = &[
        ':', '@', '/', '?', '#', '&', '=', '%', ' ', '\'', '\\', '+', ';', ',', '[', ']', '!', '$',
        '*', '\t', 'é', '\u{a0}', 'a', 'Z', '0',
    ];

    fn password() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(SPECIAL), 1..16)
            .prop_map(|chars| chars.into_iter().collect())
    }

    /// What the driver reads from a connection string.
    fn read(conn: &str) -> Option<tokio_postgres::Config> {
        tokio_postgres::Config::from_str(conn).ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever password the driver reads from a URL, the redacted
        /// string holds none of it, and reads the same otherwise.
        #[test]
        fn url_redaction_hides_what_the_driver_reads_as_the_password(secret in password()) {
            let conn = format!("postgres://app:{secret}@db.internal:5432/events?sslmode=require&application_name=x");
            let redacted = redact(&conn);
            // Exactly the driver's password is masked, whether or not the
            // driver accepts the rest: its raw text runs from after "app:"
            // to the first '@'.
            let raw = secret.split('@').next().unwrap_or_default();
            let prefix = "postgres://app:";
            let expected = format!("{prefix}***{}", &conn[prefix.len() + raw.len()..]);
            prop_assert_eq!(&redacted, &expected);
            if let Some(original) = read(&conn) {
                let shown = read(&redacted).expect("the redacted string parses as the original did");
                prop_assert!(shown.get_password().is_none_or(|p| p == b"***"), "{redacted}");
                prop_assert_eq!(shown.get_user(), original.get_user());
                prop_assert_eq!(shown.get_hosts(), original.get_hosts());
                prop_assert_eq!(shown.get_dbname(), original.get_dbname());
                prop_assert_eq!(shown.get_application_name(), original.get_application_name());
                // TLS settings come from where the driver finds them.
                let (rest, tls) = super::super::tls::split(&conn).expect("split");
                prop_assert_eq!(tls.mode, super::super::tls::SslMode::Require);
                let passed = read(&rest).expect("the string for the driver parses");
                prop_assert_eq!(passed.get_password(), original.get_password());
            }
        }

        /// The same for key=value strings, quoted and unquoted.
        #[test]
        fn key_value_redaction_hides_what_the_driver_reads_as_the_password(secret in password(), quoted in any::<bool>()) {
            let escaped: String = secret
                .chars()
                .flat_map(|c| match c {
                    '\\' | '\'' => vec!['\\', c],
                    c if !quoted && c.is_whitespace() => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            let value = if quoted { format!("'{escaped}'") } else { escaped };
            let conn = format!("host=db user=app password={value} dbname=events sslmode=require");
            let original = read(&conn).expect("the driver reads it");
            prop_assert_eq!(original.get_password(), Some(secret.as_bytes()));
            let redacted = redact(&conn);
            let shown = read(&redacted).expect("the redacted string parses");
            prop_assert_eq!(shown.get_password(), Some(&b"***"[..]));
            prop_assert_eq!(shown.get_dbname(), original.get_dbname());
            // Exactly the value is masked, quotes and escapes included.
            prop_assert_eq!(
                &redacted,
                "host=db user=app password=*** dbname=events sslmode=require"
            );
            let (rest, tls) = super::super::tls::split(&conn).expect("split");
            prop_assert_eq!(tls.mode, super::super::tls::SslMode::Require);
            let passed = read(&rest).expect("parses");
            prop_assert_eq!(passed.get_password(), Some(secret.as_bytes()));
        }

        /// No connection string makes redaction or parsing panic.
        #[test]
        fn no_connection_string_panics(conn in "\\PC*", prefix in proptest::sample::select(&["", "postgres://", "postgresql://", "host="][..])) {
            let conn = format!("{prefix}{conn}");
            let _ = redact(&conn);
            let _ = super::super::tls::split(&conn);
            let _ = key_values(&conn);
            let _ = percent_decode(&conn);
        }
    }
}
