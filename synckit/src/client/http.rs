//! The requests of [`RemoteStore`](super::RemoteStore), and the errors the
//! server answers with turned back into synckit's [`Error`].

use std::future::Future;

use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::error::{Error, Result};
use crate::protocol::ErrorBody;

/// One server: its base address, the caller's token and the HTTP client.
#[derive(Clone)]
pub(super) struct Api {
    pub(super) base: Url,
    pub(super) token: Option<String>,
    pub(super) http: reqwest::Client,
}

impl Api {
    /// The address of `segments` under the base, each segment
    /// percent-encoded (an aggregate id may hold `/`, `?` or spaces), with
    /// `query`.
    pub(super) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET url`, its JSON answer decoded.
    pub(super) fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        operation: &'static str,
        url: Url,
    ) -> impl Future<Output = Result<T>> + Send + use<T> {
        let request = self.authorized(self.http.get(url));
        send_boxed(async move { answer(operation, request.send().await).await })
    }

    /// `POST url` with a JSON body, its JSON answer decoded.
    pub(super) fn post<T: DeserializeOwned + Send + 'static, B: Serialize>(
        &self,
        operation: &'static str,
        url: Url,
        body: &B,
    ) -> impl Future<Output = Result<T>> + Send + use<T, B> {
        let request = self.authorized(self.http.post(url)).json(body);
        send_boxed(async move { answer(operation, request.send().await).await })
    }

    /// `GET url` as a Server-Sent Events feed (native only: the browser
    /// has `EventSource`).
    #[cfg(not(target_arch = "wasm32"))]
    pub(super) async fn live(&self, url: Url) -> Result<reqwest::Response> {
        let request = self
            .authorized(self.http.get(url))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = request.send().await.map_err(|e| unreachable("live", &e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            let status = response.status();
            let body = response.bytes().await.unwrap_or_default();
            Err(from_answer("live", status, &body))
        }
    }
}

/// The store's futures are `Send`; in the browser, fetch's are not, and
/// run on the page's one thread, which `SendWrapper` checks.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn send_boxed<F: Future + Send + 'static>(
    future: F,
) -> impl Future<Output = F::Output> + Send + 'static {
    future
}

/// The store's futures are `Send`; in the browser, fetch's are not, and
/// run on the page's one thread, which `SendWrapper` checks.
#[cfg(target_arch = "wasm32")]
pub(super) fn send_boxed<F: Future + 'static>(
    future: F,
) -> impl Future<Output = F::Output> + Send + 'static {
    send_wrapper::SendWrapper::new(future)
}

async fn answer<T: DeserializeOwned>(
    operation: &'static str,
    sent: reqwest::Result<reqwest::Response>,
) -> Result<T> {
    let response = sent.map_err(|e| unreachable(operation, &e))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| unreachable(operation, &e))?;
    if !status.is_success() {
        return Err(from_answer(operation, status, &body));
    }
    crate::protocol::from_slice(&body).map_err(|e| Error::Remote {
        operation,
        status: Some(status.as_u16()),
        code: "bad_answer".to_owned(),
        message: format!("the server's answer is not what the protocol says: {e}"),
    })
}

/// A request that got no answer: the server is down, restarting or out of
/// reach (transient).
pub(super) fn unreachable(operation: &'static str, error: &reqwest::Error) -> Error {
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    Error::Remote {
        operation,
        status: None,
        code: "unreachable".to_owned(),
        message,
    }
}

/// The error a server's error answer stands for: the store's own error
/// where the body names one (a conflict, a duplicate, bad input, a missing
/// event), [`Error::Remote`] for the rest.
pub(super) fn from_answer(operation: &'static str, status: StatusCode, body: &[u8]) -> Error {
    let Ok(body) = serde_json::from_slice::<ErrorBody>(body) else {
        let text = String::from_utf8_lossy(body);
        return Error::Remote {
            operation,
            status: Some(status.as_u16()),
            code: "http".to_owned(),
            message: format!("the server answered {status}: {}", text.trim()),
        };
    };
    let detail = |key: &str| body.details.get(key);
    let text = |key: &str| detail(key).and_then(|v| v.as_str()).map(str::to_owned);
    match body.error.as_str() {
        "conflict" => {
            let expected = detail("expected")
                .and_then(|v| crate::protocol::expected_version::deserialize(v.clone()).ok());
            if let (Some(aggregate_id), Some(expected)) = (text("aggregate_id"), expected) {
                return Error::Conflict {
                    aggregate_id,
                    expected,
                    actual: detail("actual").and_then(serde_json::Value::as_u64),
                };
            }
        }
        "duplicate_event" => {
            if let Some(id) = text("id") {
                let reason = body
                    .message
                    .split_once(": ")
                    .map_or(body.message.as_str(), |(_, reason)| reason)
                    .to_owned();
                return Error::DuplicateEvent { id, reason };
            }
        }
        "invalid_input" => {
            let field = text("field").unwrap_or_default();
            let reason = body
                .message
                .strip_prefix(&format!("invalid {field}: "))
                .unwrap_or(&body.message)
                .to_owned();
            return Error::InvalidInput {
                field: static_field(&field),
                reason,
            };
        }
        "bad_cursor" => {
            if let Some(input) = text("input") {
                return Error::IncompatibleVersion {
                    input,
                    reason: body.message,
                };
            }
        }
        "not_found" => {
            if let Some(id) = text("id") {
                return Error::EventNotFound { id };
            }
        }
        "unreadable_event" => {
            if let (Some(version), Some(id)) = (
                detail("version").and_then(serde_json::Value::as_u64),
                text("id"),
            ) {
                return Error::UnreadableEvent {
                    version,
                    id,
                    reason: body.message,
                };
            }
        }
        _ => {}
    }
    Error::Remote {
        operation,
        status: Some(status.as_u16()),
        code: body.error,
        message: body.message,
    }
}

/// The input names of [`Error::InvalidInput`] the server may send back
/// (the field is `&'static str`, so unknown names become `"input"`).
fn static_field(field: &str) -> &'static str {
    const FIELDS: &[&str] = &[
        "event id",
        "aggregate id",
        "event type",
        "data",
        "metadata",
        "events",
        "expected version",
        "filter",
        "batch",
    ];
    FIELDS
        .iter()
        .find(|known| **known == field)
        .copied()
        .unwrap_or("input")
}
