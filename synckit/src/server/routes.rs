//! The handlers, their query parsing and their error answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State as Extract};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{FutureExt, Stream, StreamExt};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tower_http::trace::TraceLayer;

use crate::model::cursor::Cursor;
use crate::model::error::Error;
use crate::model::filter::{Filter, Start};
use crate::model::validate;
use crate::protocol::{AppendRequest, Appended, ErrorBody, Page, Progress};
use crate::server::Limits;
use crate::server::policy::{Access, Caller, Policy, Principal};
use crate::store::SubscriptionSource;
use crate::store::subscription::Message;

pub(super) struct State<S> {
    pub(super) store: S,
    pub(super) policy: Option<Arc<dyn Policy>>,
    pub(super) live: Arc<Semaphore>,
    pub(super) limits: Arc<Limits>,
}

impl<S: Clone> Clone for State<S> {
    fn clone(&self) -> Self {
        State {
            store: self.store.clone(),
            policy: self.policy.clone(),
            live: Arc::clone(&self.live),
            limits: Arc::clone(&self.limits),
        }
    }
}

pub(super) fn router<S: SubscriptionSource>(state: State<S>) -> Router {
    Router::new()
        .route("/events", get(page::<S>).post(append_batch::<S>))
        .route("/events/live", get(live::<S>))
        .route("/events/by-id/{id}", get(by_id::<S>))
        .route("/streams/{aggregate_id}", get(stream::<S>))
        .route(
            "/streams/{aggregate_id}/events",
            axum::routing::post(append::<S>),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn(measure))
        .layer(TraceLayer::new_for_http())
}

/// An error answer: a status and its JSON body.
pub(super) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody::new(code, message),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn forbidden(access: Access, aggregate_id: &str) -> Self {
        let verb = match access {
            Access::Read => "read",
            Access::Append => "append to",
        };
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this caller may not {verb} stream {aggregate_id:?}"),
        )
        .with("aggregate_id", aggregate_id)
    }

    fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.body = self.body.with(key, value);
        self
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Conflict {
                aggregate_id,
                expected,
                actual,
            } => {
                let expected = crate::protocol::expected_version::serialize(
                    &expected,
                    serde_json::value::Serializer,
                )
                .unwrap_or_default();
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
                    .with("aggregate_id", aggregate_id)
                    .with("expected", expected)
                    .with("actual", actual)
            }
            Error::DuplicateEvent { id, .. } => {
                ApiError::new(StatusCode::CONFLICT, "duplicate_event", message).with("id", id)
            }
            Error::InvalidInput { field, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
                    .with("field", field)
            }
            Error::IncompatibleVersion { input, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_cursor", message).with("input", input)
            }
            Error::EventNotFound { id } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message).with("id", id)
            }
            Error::UnreadableEvent { version, id, .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unreadable_event",
                message,
            )
            .with("version", version)
            .with("id", id),
            Error::StoreClosed => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            error if error.is_transient() => {
                tracing::warn!(%error, "a request failed; the client may retry");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store is unavailable for now; retry",
                )
            }
            error => {
                tracing::error!(%error, "a request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed; its log says why",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The query of a read: `after`, `limit`, repeated `stream` and `type`,
/// and `access_token` for the policy.
#[derive(Default)]
struct Query {
    after: Option<u64>,
    limit: Option<usize>,
    streams: Vec<String>,
    types: Vec<String>,
    access_token: Option<String>,
}

impl Query {
    /// Parses a query; `allowed` names the parameters of the route besides
    /// `access_token`.
    fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("malformed query: {e}")))?;
        let mut query = Query::default();
        for (key, value) in pairs {
            if key != "access_token" && !allowed.contains(&key.as_str()) {
                let takes = if allowed.is_empty() {
                    "no query parameter".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {key:?}; this route takes {takes}"
                )));
            }
            match key.as_str() {
                "after" => query.after = Some(cursor(&value)?),
                "limit" => {
                    query.limit = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "limit must be a number of events, not {value:?}"
                        ))
                    })?);
                }
                "stream" => query.streams.push(value),
                "type" => query.types.push(value),
                _ => query.access_token = Some(value),
            }
        }
        Ok(query)
    }

    fn filter(&self) -> Result<Filter, ApiError> {
        let mut filter = Filter::all();
        if !self.streams.is_empty() {
            filter = filter.and_streams(self.streams.iter().cloned());
        }
        if !self.types.is_empty() {
            filter = filter.and_types(self.types.iter().cloned());
        }
        validate::check_filter(&filter)?;
        Ok(filter)
    }

    fn limit(&self, limits: &Limits) -> usize {
        self.limit.unwrap_or(limits.page_size).min(limits.page_size)
    }
}

fn cursor(text: &str) -> Result<u64, ApiError> {
    Ok(Cursor::parse(text)?.version())
}

fn authorize<S>(
    state: &State<S>,
    headers: &HeaderMap,
    query: &Query,
) -> Result<Principal, ApiError> {
    let Some(policy) = &state.policy else {
        return Ok(Principal::anyone());
    };
    let caller = Caller::new(headers, query.access_token.as_deref());
    policy.principal(&caller).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no valid credentials: send `Authorization: Bearer TOKEN` (or `?access_token=`)",
        )
    })
}

fn check_streams(who: &Principal, streams: &[String]) -> Result<(), ApiError> {
    match streams.iter().find(|s| !who.may_stream(Access::Read, s)) {
        Some(refused) => Err(ApiError::forbidden(Access::Read, refused)),
        None => Ok(()),
    }
}

/// Where a page read started, how many events it asked for, and the head
/// it saw before it read (so a short page holds every event up to it).
struct Read {
    after: u64,
    limit: usize,
    head: u64,
}

/// What a page read: its events, the rows it could not read back, how
/// many rows that is in all, and the position of the last.
struct Rows {
    events: Vec<crate::model::recorded::Recorded>,
    unreadable: Vec<crate::protocol::Unreadable>,
    count: usize,
    last: Option<u64>,
}

impl Rows {
    /// The rows of a read that fails whole on a row it cannot read (one
    /// stream), each at `position`.
    fn whole(
        events: Vec<crate::model::recorded::Recorded>,
        position: fn(&crate::model::recorded::Recorded) -> u64,
    ) -> Self {
        Rows {
            count: events.len(),
            last: events.last().map(position),
            events,
            unreadable: Vec::new(),
        }
    }
}

/// A page's answer, with its caching headers: the events `who` may read,
/// and `next` past every row read.
fn page_response(who: &Principal, rows: Rows, read: Read, private: bool) -> Response {
    let full = read.limit > 0 && rows.count == read.limit;
    let last = rows.last.unwrap_or(read.after);
    // A short page read everything up to the head it started under, what
    // the filter left out included: the next page starts there.
    let next = if full || read.limit == 0 {
        last
    } else {
        last.max(read.head)
    };
    let events = rows
        .events
        .into_iter()
        .filter(|e| who.may(Access::Read, &e.aggregate_id, &e.event_type))
        .collect();
    let page = Page::new(events, next, read.head.max(next)).with_unreadable(rows.unreadable);
    let mut response = axum::Json(page).into_response();
    let headers = response.headers_mut();
    // A full page is `limit` events below the fence: no later commit can
    // enter it, so it never changes.
    let cache = match (full, private) {
        (true, false) => "public, max-age=31536000, immutable",
        (true, true) => "private, max-age=31536000, immutable",
        (false, _) => "no-store",
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if private {
        headers.insert(header::VARY, HeaderValue::from_static("authorization"));
    }
    response
}

async fn page<S: SubscriptionSource>(
    Extract(state): Extract<State<S>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref(), &["after", "limit", "stream", "type"])?;
    let who = authorize(&state, &headers, &query)?;
    check_streams(&who, &query.streams)?;
    let filter = query.filter()?;
    let after = query.after.unwrap_or(0);
    let limit = query.limit(&state.limits);
    let head = state.store.latest_version().await?.version();
    let mut rows = Rows::whole(Vec::new(), |e| e.version);
    if limit > 0 {
        // Row by row, as subscriptions read: a row that cannot be read
        // back stands in its place instead of failing the page.
        let start = Cursor::new(after);
        let page = state.store.read_page(&filter, start, limit).await?;
        for row in page.into_shared(start).rows {
            rows.count += 1;
            match row {
                Ok(event) => {
                    rows.last = Some(event.version);
                    rows.events.push(event);
                }
                Err(unreadable) => {
                    rows.last = Some(unreadable.version);
                    rows.unreadable.push(crate::protocol::Unreadable {
                        version: unreadable.version,
                        id: unreadable.id,
                        reason: unreadable.reason,
                    });
                }
            }
        }
    }
    let read = Read { after, limit, head };
    Ok(page_response(&who, rows, read, state.policy.is_some()))
}

/// One event by id; 404 as well when the caller may not read it, so that
/// ids of other principals' events cannot be probed.
async fn by_id<S: SubscriptionSource>(
    Extract(state): Extract<State<S>>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let query = Query::parse(raw.as_deref(), &[])?;
    let who = authorize(&state, &headers, &query)?;
    let event = state.store.get(&id).await?;
    if !who.may(Access::Read, &event.aggregate_id, &event.event_type) {
        return Err(Error::EventNotFound { id }.into());
    }
    let mut response = axum::Json(event).into_response();
    // An event never changes once stored.
    let cache = if state.policy.is_some() {
        "private, max-age=31536000, immutable"
    } else {
        "public, max-age=31536000, immutable"
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if state.policy.is_some() {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("authorization"));
    }
    Ok(response)
}

async fn stream<S: SubscriptionSource>(
    Extract(state): Extract<State<S>>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let Path(aggregate_id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let query = Query::parse(raw.as_deref(), &["after", "limit"])?;
    let who = authorize(&state, &headers, &query)?;
    validate::check_aggregate_id(&aggregate_id)?;
    if !who.may_stream(Access::Read, &aggregate_id) {
        return Err(ApiError::forbidden(Access::Read, &aggregate_id));
    }
    let after = query.after.unwrap_or(0);
    let limit = query.limit(&state.limits);
    let head = state
        .store
        .stream_version(&aggregate_id)
        .await?
        .unwrap_or(0);
    let events = if limit == 0 {
        Vec::new()
    } else {
        state
            .store
            .read_aggregate(&aggregate_id, after, limit)
            .await?
    };
    let read = Read { after, limit, head };
    let rows = Rows::whole(events, |e| e.stream_version);
    Ok(page_response(&who, rows, read, state.policy.is_some()))
}

async fn append<S: SubscriptionSource>(
    Extract(state): Extract<State<S>>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(aggregate_id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let query = Query::parse(raw.as_deref(), &[])?;
    let who = authorize(&state, &headers, &query)?;
    validate::check_aggregate_id(&aggregate_id)?;
    if !who.may_stream(Access::Append, &aggregate_id) {
        return Err(ApiError::forbidden(Access::Append, &aggregate_id));
    }
    append_body(&state, &who, &headers, body, Some(&aggregate_id)).await
}

/// `POST /events`: one atomic append over several streams, each event
/// naming its own.
async fn append_batch<S: SubscriptionSource>(
    Extract(state): Extract<State<S>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref(), &[])?;
    let who = authorize(&state, &headers, &query)?;
    append_body(&state, &who, &headers, body, None).await
}

/// Reads an append's body (within the size limit), checks every event
/// against `who`'s access, and appends: nothing is written unless all of
/// it may be.
async fn append_body<S: SubscriptionSource>(
    state: &State<S>,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    stream: Option<&str>,
) -> Result<Response, ApiError> {
    let limit = state.limits.body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is over this server's limit of {limit} bytes"),
        )
        .with("limit", limit)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let request: AppendRequest = crate::protocol::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed append body: {e}")))?;
    let expected = request.expected_version;
    let events = request.into_events(stream)?;
    if let Some(refused) = events
        .iter()
        .find(|e| !who.may(Access::Append, e.aggregate_id(), e.event_type()))
    {
        return Err(ApiError::forbidden(Access::Append, refused.aggregate_id())
            .with("event_type", refused.event_type()));
    }
    let recorded = state.store.append(expected, events).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Appended { events: recorded }),
    )
        .into_response())
}

/// What a live feed tells `EventSource` to wait before reconnecting.
const RECONNECT: Duration = Duration::from_secs(1);

/// Holds a live feed's place among [`Limits::with_live_connections`].
struct LiveSlot {
    _permit: OwnedSemaphorePermit,
}

impl LiveSlot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("synckit_http_live_connections").increment(1.0);
        LiveSlot { _permit: permit }
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        metrics::gauge!("synckit_http_live_connections").decrement(1.0);
    }
}

fn sse_json(kind: Option<&'static str>, id: Option<u64>, data: &impl Serialize) -> SseEvent {
    let mut event =
        SseEvent::default().data(serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned()));
    if let Some(kind) = kind {
        event = event.event(kind);
    }
    if let Some(id) = id {
        event = event.id(id.to_string());
    }
    event
}

async fn live<S: SubscriptionSource>(
    Extract(state): Extract<State<S>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref(), &["after", "stream", "type"])?;
    let who = authorize(&state, &headers, &query)?;
    check_streams(&who, &query.streams)?;
    let filter = query.filter()?;
    let last_id = match headers.get("last-event-id") {
        Some(value) => Some(cursor(value.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_cursor",
                "Last-Event-ID is not text",
            )
        })?)?),
        None => None,
    };
    let after = last_id.or(query.after).unwrap_or(0);
    let Ok(permit) = Arc::clone(&state.live).try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "this server has {} live connections open, its limit; retry",
                state.limits.live_connections
            ),
        ));
    };
    let slot = LiveSlot::new(permit);
    let subscription = state
        .store
        .subscribe(filter, Start::After(Cursor::new(after)))
        .await?;
    let (sender, receiver) = mpsc::channel(state.limits.live_buffer);
    tokio::spawn(forward(
        subscription.messages(),
        who,
        after,
        sender,
        state.limits.live_stall,
    ));
    let body = futures::stream::unfold((receiver, slot), |(mut receiver, slot)| async move {
        let event = receiver.recv().await?;
        Some((Ok::<_, Infallible>(event), (receiver, slot)))
    });
    // First, how long a browser's `EventSource` waits before it reconnects
    // after a cut (its own default is about 3 s).
    let reconnect = SseEvent::default().retry(RECONNECT);
    let body = futures::stream::once(async move { Ok(reconnect) }).chain(body);
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(state.limits.heartbeat))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Moves a subscription's messages into a live feed's queue until the
/// client goes away, the subscription ends, or the client stalls on a full
/// queue (it is cut off and resumes from the last id it got). While the
/// queue is full the subscription is not read, so a slow client costs a
/// bounded queue, not a growing one.
async fn forward(
    messages: impl Stream<Item = crate::model::error::Result<Message>> + Send,
    who: Principal,
    mut position: u64,
    sender: mpsc::Sender<SseEvent>,
    stall: Duration,
) {
    let mut messages = std::pin::pin!(messages);
    // Past events left out by the caller's access, not yet told.
    let mut untold = None;
    loop {
        let next = match messages.next().now_or_never() {
            Some(next) => next,
            None => {
                if let Some(version) = untold.take() {
                    let event = sse_json(Some("progress"), Some(version), &Progress { version });
                    if !offer(&sender, event, stall).await {
                        return;
                    }
                }
                tokio::select! {
                    next = messages.next() => next,
                    () = sender.closed() => return,
                }
            }
        };
        let event = match next {
            None => return,
            Some(Ok(Message::Event(event))) => {
                position = event.version;
                if !who.may(Access::Read, &event.aggregate_id, &event.event_type) {
                    untold = Some(position);
                    continue;
                }
                untold = None;
                sse_json(None, Some(position), &event)
            }
            Some(Ok(Message::CaughtUp)) => {
                sse_json(Some("caught-up"), None, &Progress { version: position })
            }
            Some(Ok(Message::Progress(at))) => {
                position = at.version();
                untold = None;
                sse_json(
                    Some("progress"),
                    Some(position),
                    &Progress { version: position },
                )
            }
            Some(Err(error)) => {
                let ApiError { body, .. } = ApiError::from(error);
                sse_json(Some("error"), None, &body)
            }
        };
        if !offer(&sender, event, stall).await {
            return;
        }
    }
}

/// Queues one message, waiting for room while the client reads; false
/// when the client is gone, or has taken nothing from a full queue for
/// `stall` (it is cut off).
async fn offer(sender: &mpsc::Sender<SseEvent>, event: SseEvent, stall: Duration) -> bool {
    match sender.send_timeout(event, stall).await {
        Ok(()) => true,
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            tracing::info!("a live client reads too slowly: cut off, it resumes from its last id");
            metrics::counter!("synckit_http_live_cut_off_total").increment(1);
            false
        }
        Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on this route"),
    )
}

/// Counts and times every request by route, method and status.
async fn measure(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("synckit_http_requests_total", &labels).increment(1);
    metrics::histogram!("synckit_http_request_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
