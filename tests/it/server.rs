//! The HTTP and SSE face over real TCP, on memory, SQLite and PostgreSQL:
//! access control, pages and their caching, appends and their errors, the
//! live feed with resumption, and a client that never reads.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use synckit::postgres::{Config, PgStore};
use synckit::server::{self, Limits, TokenPolicy};
use synckit::sqlite::SqliteStore;
use synckit::{MemoryStore, SubscriptionSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKENS: &str = "# test tokens\nadmin *\nada user-ada*\n";

/// Serves `store` on a free port; returns its base address.
async fn serve<S: SubscriptionSource>(store: S, limits: Limits) -> String {
    let app = server::router(store)
        .policy(TokenPolicy::parse(TOKENS).unwrap())
        .limits(limits)
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

async fn sqlite_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("events.db"))
        .await
        .unwrap();
    (store, dir)
}

async fn pg_store() -> PgStore {
    let mut config = Config::new(synckit_workspace::database_url().await);
    config.max_open_conns = 4;
    config.min_idle_conns = 0;
    PgStore::connect(config).await.unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, headers)
}

fn append_body(expected: Value, events: &[(&str, Value)]) -> Value {
    let events: Vec<Value> = events
        .iter()
        .map(|(kind, data)| json!({"type": kind, "data": data}))
        .collect();
    json!({"expected_version": expected, "events": events})
}

/// Access control, appends, pages and every error answer.
async fn appends_pages_and_access_control<S: SubscriptionSource>(store: S) {
    let base = serve(store.clone(), Limits::default().with_body_bytes(4096)).await;
    let http = reqwest::Client::new();
    let post = |stream: &str, token: Option<&str>, body: &Value| {
        let mut request = http
            .post(format!("{base}/streams/{stream}/events"))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
    };

    // No token, or an unknown one: 401, nothing written.
    let opened = append_body(json!("no_stream"), &[("User.Registered", json!({"n": 1}))]);
    for token in [None, Some("wrong")] {
        let (status, body, headers) = send(post("user-ada-1", token, &opened)).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    assert_eq!(store.stream_version("user-ada-1").await.unwrap(), None);

    // Appends: 201 with the recorded events; a stale expectation is 409
    // with expected and actual.
    let (status, body, _) = send(post("user-ada-1", Some("ada"), &opened)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["events"][0]["stream_version"], 1);
    assert_eq!(body["events"][0]["aggregate_id"], "user-ada-1");
    let (status, body, _) = send(post("user-ada-1", Some("ada"), &opened)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "conflict");
    assert_eq!(body["expected"], "no_stream");
    assert_eq!(body["actual"], 1);

    // A repeated id with the same content returns the stored events.
    let retry = json!({"expected_version": 1, "events": [
        {"id": "retry-1", "type": "User.Renamed", "data": {"name": "Ada"}}]});
    let (status, first, _) = send(post("user-ada-1", Some("ada"), &retry)).await;
    assert_eq!(status, 201, "{first}");
    let (status, again, _) = send(post("user-ada-1", Some("ada"), &retry)).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(first["events"], again["events"]);
    let changed = json!({"events": [{"id": "retry-1", "type": "User.Renamed", "data": {}}]});
    let (status, body, _) = send(post("user-ada-1", Some("ada"), &changed)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("duplicate_event"))
    );

    // Another principal's stream: 403 on append (nothing written) and read.
    let (status, body, _) = send(post("user-bob", Some("ada"), &opened)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(store.stream_version("user-bob").await.unwrap(), None);
    for path in [
        "streams/user-bob",
        "events?stream=user-bob",
        "events/live?stream=user-bob",
    ] {
        let (status, body, _) = send(http.get(format!("{base}/{path}")).bearer_auth("ada")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
    }
    let (status, body, _) = send(post("user-bob", Some("admin"), &opened)).await;
    assert_eq!(status, 201, "{body}");
    let bob_version = body["events"][0]["version"].as_u64().unwrap();

    // `/events` leaves out what the caller may not read, yet moves past it.
    let (status, page, headers) = send(http.get(format!("{base}/events")).bearer_auth("ada")).await;
    assert_eq!(status, 200, "{page}");
    let streams: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["aggregate_id"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["user-ada-1", "user-ada-1"]);
    assert_eq!(page["next"], bob_version);
    assert_eq!(page["head"], bob_version);
    assert_eq!(headers["cache-control"], "no-store");
    let (_, page, _) = send(http.get(format!("{base}/events")).bearer_auth("admin")).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 3);

    // A full page never changes: cached as immutable, per caller.
    let (status, page, headers) = send(
        http.get(format!(
            "{base}/events?limit=1&type=User.Registered&type=User.Renamed"
        ))
        .bearer_auth("admin"),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(
        headers["cache-control"],
        "private, max-age=31536000, immutable"
    );
    assert_eq!(headers["vary"], "authorization");
    let after = page["next"].as_u64().unwrap();
    let (_, rest, _) = send(
        http.get(format!("{base}/events?after={after}&limit=10"))
            .bearer_auth("admin"),
    )
    .await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 2);

    // One stream by its own positions.
    let (status, page, _) = send(
        http.get(format!("{base}/streams/user-ada-1?after=1"))
            .bearer_auth("ada"),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"][0]["stream_version"], 2);
    assert_eq!(
        (page["next"].as_u64(), page["head"].as_u64()),
        (Some(2), Some(2))
    );

    // Bad input: every error a JSON body, nothing written.
    let before = store.latest_version().await.unwrap();
    let raw = |body: &'static str| {
        http.post(format!("{base}/streams/user-ada-2/events"))
            .bearer_auth("ada")
            .header("content-type", "application/json")
            .body(body)
    };
    let (status, body, _) = send(raw("{\"events\": [")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body, _) = send(raw(r#"{"expected_version": "maybe", "events": []}"#)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let huge = append_body(
        json!("any"),
        &[("User.Registered", json!("x".repeat(5000)))],
    );
    let (status, body, _) = send(post("user-ada-2", Some("ada"), &huge)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    let nameless = append_body(json!("any"), &[("", json!({}))]);
    let (status, body, _) = send(post("user-ada-2", Some("ada"), &nameless)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("invalid_input")),
        "{body}"
    );
    assert_eq!(store.latest_version().await.unwrap(), before);
    for (path, code, status_expected) in [
        ("events?after=abc", "bad_cursor", 400),
        ("events?after=-1", "bad_cursor", 400),
        ("events?limit=many", "bad_request", 400),
        ("events?colour=red", "bad_request", 400),
        ("nowhere", "not_found", 404),
    ] {
        let (status, body, _) = send(http.get(format!("{base}/{path}")).bearer_auth("ada")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (status_expected, Some(code)),
            "{path}"
        );
    }
    let (status, body, _) = send(http.delete(format!("{base}/events")).bearer_auth("ada")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

/// One parsed Server-Sent Event.
#[derive(Debug, Default)]
struct Sse {
    kind: Option<String>,
    id: Option<u64>,
    data: String,
}

/// Reads Server-Sent Events off a response body.
struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl SseReader {
    async fn open(request: reqwest::RequestBuilder) -> SseReader {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader {
            body: response
                .bytes_stream()
                .map(|b| b.map(|b| b.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    /// The next event (heartbeat comments skipped); `None` when the
    /// stream ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.body.next())
                .await
                .expect("no SSE bytes within 20 s")?
                .ok()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

fn parse(block: &str) -> Option<Sse> {
    let mut event = Sse::default();
    let mut any = false;
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("data:") {
            event.data.push_str(value.trim_start());
            any = true;
        } else if let Some(value) = line.strip_prefix("event:") {
            event.kind = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("id:") {
            event.id = Some(value.trim().parse().unwrap());
        }
    }
    any.then_some(event)
}

async fn append_as(base: &str, token: &str, stream: &str, n: usize) -> Vec<u64> {
    let events: Vec<(&str, Value)> = (0..n).map(|i| ("User.Noted", json!({"i": i}))).collect();
    let (status, body, _) = send(
        reqwest::Client::new()
            .post(format!("{base}/streams/{stream}/events"))
            .bearer_auth(token)
            .json(&append_body(json!("any"), &events)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect()
}

/// The live feed: catch-up, `caught-up`, live events, access filtering
/// with progress, resumption by `Last-Event-ID`, and a client that never
/// reads being cut off and resuming without a gap.
async fn live_feed_resumes_and_cuts_off_slow_clients<S: SubscriptionSource>(store: S) {
    let base = serve(
        store.clone(),
        Limits::default().with_heartbeat(Duration::from_millis(200)),
    )
    .await;
    let http = reqwest::Client::new();
    let ada_first = append_as(&base, "ada", "user-ada", 2).await;
    let bob = append_as(&base, "admin", "user-bob", 1).await;

    let mut feed = SseReader::open(http.get(format!("{base}/events/live?access_token=ada"))).await;
    for version in &ada_first {
        let event = feed.next().await.unwrap();
        assert_eq!((event.kind.as_deref(), event.id), (None, Some(*version)));
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["aggregate_id"], "user-ada");
    }
    // Bob's event is left out, but the position moves past it.
    let mut seen = Vec::new();
    loop {
        let event = feed.next().await.unwrap();
        if event.kind.as_deref() == Some("caught-up") {
            break;
        }
        seen.push(event);
    }
    assert!(
        seen.iter()
            .all(|e| e.kind.as_deref() == Some("progress") && e.id <= bob.last().copied()),
        "{seen:?}"
    );
    let live = append_as(&base, "admin", "user-ada", 1).await;
    let mut event = feed.next().await.unwrap();
    while event.kind.as_deref() == Some("progress") {
        event = feed.next().await.unwrap();
    }
    assert_eq!((event.kind, event.id), (None, Some(live[0])));
    drop(feed);

    // Last-Event-ID wins over `after`.
    let mut resumed = SseReader::open(
        http.get(format!("{base}/events/live?after=0&stream=user-ada"))
            .bearer_auth("ada")
            .header("last-event-id", ada_first[1].to_string()),
    )
    .await;
    let event = resumed.next().await.unwrap();
    assert_eq!(event.id, Some(live[0]));
    drop(resumed);

    // A client that never reads: its socket fills, then its queue, and it
    // is cut off; what it got ends cleanly, and a resume gets the rest.
    let small = serve(
        store.clone(),
        Limits::default()
            .with_live_buffer(8)
            .with_live_stall(Duration::from_secs(1))
            .with_heartbeat(Duration::from_secs(60)),
    )
    .await;
    let address = small.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(address.parse().unwrap()).await.unwrap();
    stalled
        .write_all(
            format!(
                "GET /events/live?stream=big HTTP/1.1\r\nhost: {address}\r\n\
                 authorization: Bearer admin\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let payload = "x".repeat(4000);
    let mut written = Vec::new();
    for _ in 0..40 {
        let events: Vec<(&str, Value)> = (0..50)
            .map(|_| ("Big.Blob", json!({"blob": payload})))
            .collect();
        let (status, body, _) = send(
            http.post(format!("{base}/streams/big/events"))
                .bearer_auth("admin")
                .json(&append_body(json!("any"), &events)),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        written.extend(
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["version"].as_u64().unwrap()),
        );
    }
    // 2,000 events of 4 kB: far more than socket buffers and the queue.
    // The client goes on not reading for longer than the stall limit: this
    // wait is the behaviour under test, not a stand-in for a signal.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stalled.read_to_end(&mut raw))
        .await
        .expect("a cut-off feed ends")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let got: Vec<u64> = text
        .split("\n\n")
        .filter_map(parse)
        .filter(|e| e.kind.is_none())
        .filter_map(|e| e.id)
        .collect();
    assert!(
        got.len() < written.len(),
        "never cut off: got all {}",
        got.len()
    );
    assert_eq!(
        got[..],
        written[..got.len()],
        "what it got is in order, with no gap"
    );
    let last = got.last().copied().unwrap_or(0);
    let mut rest = SseReader::open(
        http.get(format!("{small}/events/live?stream=big"))
            .bearer_auth("admin")
            .header("last-event-id", last.to_string()),
    )
    .await;
    let mut resumed = Vec::new();
    while resumed.len() < written.len() - got.len() {
        let event = rest.next().await.expect("the resumed feed ends early");
        if event.kind.is_none() {
            resumed.push(event.id.unwrap());
        }
    }
    assert_eq!(resumed[..], written[got.len()..]);
}

#[test]
fn a_router_without_a_policy_or_with_zero_limits_refuses_to_build() {
    let error = server::router(MemoryStore::new()).build().unwrap_err();
    assert!(error.to_string().contains("allow_anonymous"), "{error}");
    let both = server::router(MemoryStore::new())
        .policy(TokenPolicy::parse(TOKENS).unwrap())
        .allow_anonymous()
        .build();
    assert!(both.is_err());
    let zero = server::router(MemoryStore::new())
        .allow_anonymous()
        .limits(Limits::default().with_live_buffer(0))
        .build()
        .unwrap_err();
    assert!(zero.to_string().contains("live_buffer"), "{zero}");
    assert!(
        server::router(MemoryStore::new())
            .allow_anonymous()
            .build()
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_live_connections_is_503_and_a_closed_feed_frees_its_place() {
    let app = server::router(MemoryStore::new())
        .allow_anonymous()
        .limits(Limits::default().with_live_connections(1))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let mut first = SseReader::open(http.get(format!("{base}/events/live"))).await;
    assert_eq!(
        first.next().await.unwrap().kind.as_deref(),
        Some("caught-up")
    );
    let (status, body, headers) = send(http.get(format!("{base}/events/live"))).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")));
    assert_eq!(headers["retry-after"], "1");
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = http
            .get(format!("{base}/events/live"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the closed feed kept its place"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_appends_pages_and_access_control() {
    appends_pages_and_access_control(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_appends_pages_and_access_control() {
    let (store, _dir) = sqlite_store().await;
    appends_pages_and_access_control(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_appends_pages_and_access_control() {
    appends_pages_and_access_control(pg_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_live_feed_resumes_and_cuts_off_slow_clients() {
    live_feed_resumes_and_cuts_off_slow_clients(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_live_feed_resumes_and_cuts_off_slow_clients() {
    let (store, _dir) = sqlite_store().await;
    live_feed_resumes_and_cuts_off_slow_clients(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_live_feed_resumes_and_cuts_off_slow_clients() {
    live_feed_resumes_and_cuts_off_slow_clients(pg_store().await).await;
}
