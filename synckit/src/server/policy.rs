//! Who may read and append what: the authorization hook and the token-file
//! policy of `synckit serve`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::http::HeaderMap;

use crate::model::error::{Error, Result};

/// What a request does with a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Access {
    /// Reads its events (pages, a stream, the live feed).
    Read,
    /// Appends events to it.
    Append,
}

/// What a policy sees of a request.
#[derive(Debug)]
pub struct Caller<'a> {
    headers: &'a HeaderMap,
    token: Option<&'a str>,
}

impl<'a> Caller<'a> {
    pub(crate) fn new(headers: &'a HeaderMap, query_token: Option<&'a str>) -> Self {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        Caller {
            headers,
            token: bearer.or(query_token),
        }
    }

    /// The request's headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The bearer token: of the `Authorization: Bearer ...` header, or else
    /// of the `access_token` query parameter (a browser's `EventSource`
    /// cannot set headers).
    pub fn bearer_token(&self) -> Option<&'a str> {
        self.token
    }
}

type StreamRule = dyn Fn(Access, &str) -> bool + Send + Sync;
type TypeRule = dyn Fn(Access, &str, &str) -> bool + Send + Sync;

/// Who a request comes from, and which streams and event types it may read
/// and append to.
///
/// ```
/// use synckit::server::{Access, Principal};
///
/// // Reads every stream, appends to its own only.
/// let ada = Principal::new("ada", |access, stream| {
///     access == Access::Read || stream.starts_with("user-ada")
/// })
/// // ...and never reads audit events.
/// .with_types(|_, _, event_type| !event_type.starts_with("Audit."));
/// assert!(ada.may_stream(Access::Read, "user-bob"));
/// assert!(!ada.may_stream(Access::Append, "user-bob"));
/// assert!(!ada.may(Access::Read, "user-ada", "Audit.Viewed"));
/// ```
#[derive(Clone)]
pub struct Principal {
    name: Arc<str>,
    streams: Arc<StreamRule>,
    types: Option<Arc<TypeRule>>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Principal {
    /// A principal that may `access` the streams for which `streams`
    /// answers true.
    pub fn new(
        name: impl Into<String>,
        streams: impl Fn(Access, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        Principal {
            name: name.into().into(),
            streams: Arc::new(streams),
            types: None,
        }
    }

    /// The principal of anonymous access: every stream and type.
    pub fn anyone() -> Self {
        Principal::new("anonymous", |_, _| true)
    }

    /// Also decides by event type: `types(access, aggregate_id,
    /// event_type)` must answer true too.
    pub fn with_types(
        mut self,
        types: impl Fn(Access, &str, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.types = Some(Arc::new(types));
        self
    }

    /// The principal's name (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it may `access` the stream at all.
    pub fn may_stream(&self, access: Access, aggregate_id: &str) -> bool {
        (self.streams)(access, aggregate_id)
    }

    /// Whether it may `access` events of this type in this stream.
    pub fn may(&self, access: Access, aggregate_id: &str, event_type: &str) -> bool {
        self.may_stream(access, aggregate_id)
            && self
                .types
                .as_ref()
                .is_none_or(|types| types(access, aggregate_id, event_type))
    }
}

/// The authorization hook of the server: maps a request to its principal,
/// or `None` (answered with 401).
///
/// Called once per request, before anything is read or written; a closure
/// `Fn(&Caller) -> Option<Principal>` is a policy.
pub trait Policy: Send + Sync + 'static {
    /// The request's principal, `None` when it has no valid credentials.
    fn principal(&self, caller: &Caller<'_>) -> Option<Principal>;
}

impl<F> Policy for F
where
    F: Fn(&Caller<'_>) -> Option<Principal> + Send + Sync + 'static,
{
    fn principal(&self, caller: &Caller<'_>) -> Option<Principal> {
        self(caller)
    }
}

/// Bearer tokens, each with the streams it may read and append to: the
/// policy of `synckit serve --token-file`.
///
/// One line per token: `TOKEN PATTERN...`, where a pattern is an aggregate
/// id, a prefix ending in `*`, or `*` alone (every stream). Blank lines and
/// lines starting with `#` are skipped.
///
/// ```
/// use synckit::server::{Access, Policy, TokenPolicy};
///
/// let policy = TokenPolicy::parse("# token  streams\nsecret-1 user-1 orders-*\n")?;
/// # let _ = &policy;
/// # Ok::<(), synckit::Error>(())
/// ```
#[derive(Clone)]
pub struct TokenPolicy {
    tokens: Arc<Vec<(String, Arc<[Pattern]>)>>,
}

impl fmt::Debug for TokenPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("TokenPolicy")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn matches(&self, aggregate_id: &str) -> bool {
        match self {
            Pattern::Exact(id) => id == aggregate_id,
            Pattern::Prefix(prefix) => aggregate_id.starts_with(prefix.as_str()),
        }
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidInput {
        field: "token file",
        reason,
    }
}

impl TokenPolicy {
    /// Parses a token file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let mut tokens: Vec<(String, Arc<[Pattern]>)> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let token = words.next().unwrap_or_default();
            let patterns: Vec<Pattern> = words
                .map(|word| match word.strip_suffix('*') {
                    Some(prefix) => Pattern::Prefix(prefix.to_owned()),
                    None => Pattern::Exact(word.to_owned()),
                })
                .collect();
            if patterns.is_empty() {
                return Err(invalid(format!(
                    "line {}: a token needs at least one stream pattern (`*` for every stream)",
                    number + 1
                )));
            }
            if tokens.iter().any(|(t, _)| t == token) {
                return Err(invalid(format!(
                    "line {}: this token is listed twice",
                    number + 1
                )));
            }
            tokens.push((token.to_owned(), patterns.into()));
        }
        if tokens.is_empty() {
            return Err(invalid("it lists no token".to_owned()));
        }
        Ok(TokenPolicy {
            tokens: Arc::new(tokens),
        })
    }

    /// Reads and parses a token file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        TokenPolicy::parse(&text)
    }

    /// How many tokens it lists.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether it lists no token (never true of a parsed policy).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a token was right (a few lines; no crate
/// needed for it).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Policy for TokenPolicy {
    fn principal(&self, caller: &Caller<'_>) -> Option<Principal> {
        let given = caller.bearer_token()?.as_bytes();
        let mut found = None;
        // Every token is compared, so the time does not tell which matched.
        for (index, (token, _)) in self.tokens.iter().enumerate() {
            if same_secret(token.as_bytes(), given) {
                found = Some(index);
            }
        }
        let patterns = Arc::clone(&self.tokens[found?].1);
        Some(Principal::new(
            format!("token #{}", found? + 1),
            move |_, id| patterns.iter().any(|p| p.matches(id)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller_with(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn token_files_grant_their_patterns_and_refuse_the_rest() {
        let policy = TokenPolicy::parse("# comment\n\nalpha user-1 orders-*\nbeta *\n").unwrap();
        assert_eq!(policy.len(), 2);
        let headers = caller_with("alpha");
        let alpha = policy.principal(&Caller::new(&headers, None)).unwrap();
        assert!(alpha.may_stream(Access::Read, "user-1"));
        assert!(alpha.may_stream(Access::Append, "orders-9"));
        assert!(!alpha.may_stream(Access::Read, "user-10"));
        assert!(!alpha.may_stream(Access::Read, "user-2"));
        let headers = caller_with("beta");
        let beta = policy.principal(&Caller::new(&headers, None)).unwrap();
        assert!(beta.may_stream(Access::Append, "anything"));
        let headers = caller_with("alph");
        assert!(policy.principal(&Caller::new(&headers, None)).is_none());
        let none = HeaderMap::new();
        assert!(policy.principal(&Caller::new(&none, None)).is_none());
        assert!(
            policy
                .principal(&Caller::new(&none, Some("beta")))
                .is_some()
        );
    }

    #[test]
    fn bad_token_files_say_which_line() {
        for (text, says) in [
            ("", "no token"),
            ("# only a comment\n", "no token"),
            ("lonely\n", "line 1"),
            ("a *\na x\n", "line 2: this token is listed twice"),
        ] {
            let error = TokenPolicy::parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text:?}: {error}");
        }
        let error = TokenPolicy::from_file("/nonexistent/tokens").unwrap_err();
        assert!(error.to_string().contains("/nonexistent/tokens"), "{error}");
    }
}
