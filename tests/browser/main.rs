//! The browser tests: synckit's client in headless Chromium against a
//! server this test starts, and the example page (`examples/browser`).
//!
//! Not part of `cargo test --workspace` (they need Chromium, chromedriver
//! and `wasm-bindgen-test-runner`, which `.ci/run` installs): run them with
//! `cargo test --test browser`.

#[path = "../support/restartable.rs"]
mod restartable;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use synckit::server;
use tokio::sync::Mutex;
use tower_http::cors::CorsLayer;

use restartable::Server;

/// The workspace root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The path of `program` on `PATH`, or a failure saying how to get it.
fn required(program: &str, install: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| panic!("`{program}` is not installed: {install} (`.ci/run` does)"))
}

fn chromedriver() -> PathBuf {
    required(
        "chromedriver",
        "apt-get install -y chromium chromium-driver",
    )
}

/// Anyone may read and append; any origin may call (the test page is
/// served by the test runner, on another port).
fn open_to_the_page(store: synckit::sqlite::SqliteStore) -> axum::Router {
    server::router(store)
        .allow_anonymous()
        .cors(CorsLayer::very_permissive())
        .build()
        .expect("router")
}

/// `POST /restart` stops `server` and starts it again on the same port,
/// answering once it serves again.
async fn control(server: Arc<Mutex<Server>>, path: PathBuf) -> String {
    let restart = move || {
        let (server, path) = (Arc::clone(&server), path.clone());
        async move {
            let mut server = server.lock().await;
            let port = server.port;
            server.stop();
            tokio::time::sleep(Duration::from_millis(300)).await;
            *server = Server::start(path, port, open_to_the_page).await;
            "restarted"
        }
    };
    let app = axum::Router::new()
        .route("/restart", post(restart))
        .layer(CorsLayer::very_permissive());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// `synckit/tests/browser.rs` in headless Chromium: appends from the
/// browser, a typed subscription, and a server restart under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_in_headless_chromium() {
    let runner = required(
        "wasm-bindgen-test-runner",
        "cargo install wasm-bindgen-cli --version <the wasm-bindgen version in Cargo.lock>",
    );
    let driver = chromedriver();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let server = Server::start(path.clone(), 0, open_to_the_page).await;
    let api = server.url();
    let control = control(Arc::new(Mutex::new(server)), path).await;

    // A target directory of its own: this test's own build holds the
    // workspace's while it runs.
    let status = tokio::process::Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "test",
            "-p",
            "synckit",
            "--no-default-features",
            "--features",
            "client,derive",
            "--target",
            "wasm32-unknown-unknown",
            "--test",
            "browser",
        ])
        .env("CARGO_TARGET_DIR", root().join("target/browser"))
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", runner)
        .env("CHROMEDRIVER", driver)
        .env("WASM_BINDGEN_TEST_TIMEOUT", "120")
        .env("SYNCKIT_BROWSER_SERVER", &api)
        .env("SYNCKIT_BROWSER_CONTROL", &control)
        .status()
        .await
        .expect("run cargo");
    assert!(status.success(), "the browser test failed: {status}");
}

/// A WebDriver session on chromedriver: the few commands the page test
/// needs, over reqwest. (The WebDriver client crates bring a TLS stack,
/// with a C build, for what is plain JSON over HTTP on localhost.)
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: tokio::process::Child,
}

/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium.
    async fn open() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1000,800",
            ]},
        }}});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let session = loop {
            match http
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await
            {
                Ok(response) => {
                    let body: serde_json::Value = response.json().await.unwrap();
                    match body["value"]["sessionId"].as_str() {
                        Some(id) => break id.to_owned(),
                        None => panic!("chromedriver refused the session: {body}"),
                    }
                }
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("chromedriver does not answer: {e}"),
            }
        };
        Browser {
            http,
            session: format!("{base}/session/{session}"),
            driver,
        }
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.expect("chromedriver");
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("a WebDriver answer");
        assert!(status.is_success(), "WebDriver {path}: {status} {body}");
        body["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command(
            reqwest::Method::POST,
            "/url",
            serde_json::json!({ "url": url }),
        )
        .await;
    }

    /// Runs `script` in the page; its return value.
    async fn eval(&self, script: &str) -> serde_json::Value {
        let body = serde_json::json!({ "script": script, "args": [] });
        self.command(reqwest::Method::POST, "/execute/sync", body)
            .await
    }

    /// Waits until `script` returns true, failing after a deadline with
    /// what the page shows.
    async fn wait_for(&self, what: &str, script: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.eval(script).await != serde_json::Value::Bool(true) {
            if tokio::time::Instant::now() > deadline {
                let page = self.eval("return document.body.innerText").await;
                panic!("{what}: not within 30 s; the page shows {page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let body = serde_json::json!({ "using": "css selector", "value": css });
        let found = self.command(reqwest::Method::POST, "/element", body).await;
        found[ELEMENT].as_str().expect("an element").to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        let body = serde_json::json!({ "text": text });
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            body,
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            serde_json::json!({}),
        )
        .await;
    }

    /// A PNG of the window.
    async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", serde_json::Value::Null)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64"))
            .expect("a base64 PNG")
    }

    async fn close(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill().await;
    }
}

/// The notes the page lists, in order.
const NOTES: &str =
    "return Array.from(document.querySelectorAll('#notes li')).map(li => li.lastChild.textContent)";

/// `cargo run --example serve` in a real browser: the page goes live, an
/// event appended by another process (this one, writing the store's file
/// while the example's process serves it) appears on it, and so does a
/// note posted with its form. The screenshot is left at
/// `target/browser-example.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_page_shows_an_event_appended_by_another_process() {
    use synckit::{EventStore, ExpectedVersion};
    use synckit_browser_example::{BOARD, Note};

    let serve = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("examples/serve"))
        .filter(|path| path.is_file())
        .expect("the serve example is not built: cargo build --example serve");
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("board.db");
    let mut server = tokio::process::Command::new(serve)
        .current_dir(root())
        .args(["--listen", "127.0.0.1:0", "--database"])
        .arg(&database)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the serve example");
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(server.stdout.take().unwrap()));
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
            .await
            .expect("the example does not start")
            .unwrap()
            .expect("the example ended before listening");
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.to_owned();
        }
    };

    let browser = Browser::open().await;
    browser.goto(&url).await;
    browser
        .wait_for(
            "the page goes live",
            "return document.getElementById('status').textContent === 'live'",
        )
        .await;

    let writer = synckit::sqlite::SqliteStore::open(&database).await.unwrap();
    let note = |text: &str| Note::Posted {
        board: BOARD.to_owned(),
        text: text.to_owned(),
    };
    writer
        .append_event(ExpectedVersion::NoStream, &note("from another process"))
        .await
        .unwrap();
    browser
        .wait_for(
            "the other process's note appears",
            &format!("{NOTES}.includes('from another process')"),
        )
        .await;

    browser.type_into("#text", "from the form").await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for(
            "the form's note appears",
            &format!("{NOTES}.includes('from the form')"),
        )
        .await;
    let listed = browser.eval(NOTES).await;
    assert_eq!(
        listed,
        serde_json::json!(["from another process", "from the form"])
    );
    let stored = writer.read_aggregate(BOARD, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 2, "the form's note is in the store");

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    std::fs::write(root().join("target/browser-example.png"), &png).unwrap();
    browser.close().await;
    let _ = server.kill().await;
}
