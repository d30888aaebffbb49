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
