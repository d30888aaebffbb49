//! The example page (`examples/browser`) and the HTTP API, over a SQLite
//! file: a live typed stream in the browser, with a form that appends.
//!
//! Run: `cargo run --example serve`, then open <http://127.0.0.1:8080>.
//! It builds the page first (for `wasm32-unknown-unknown`, then
//! `wasm-bindgen --target web`): that needs
//! `rustup target add wasm32-unknown-unknown` and
//! `cargo install wasm-bindgen-cli` at the version of `wasm-bindgen` in
//! `Cargo.lock`. Options: `--listen ADDR`, `--database FILE` (default
//! `target/synckit-example.db`), `--no-build` (serve the page built
//! earlier). Any other writer of the file (another process, the `synckit`
//! CLI, a second server) shows up on the page live.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use axum::response::Html;
use axum::routing::get;
use clap::Parser;
use synckit::sqlite::SqliteStore;
use synckit::{EventStore, server};
use tower_http::services::ServeDir;

#[derive(Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The SQLite file of the store.
    #[arg(long, default_value = "target/synckit-example.db")]
    database: PathBuf,
    /// Serve the page built earlier instead of building it.
    #[arg(long)]
    no_build: bool,
}

const INDEX: &str = include_str!("browser/index.html");

/// The workspace root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the page into `target/browser-example/pkg`, in a target
/// directory of its own (the build that runs this example may hold the
/// workspace's).
fn build_page(pkg: &Path) -> Result<(), String> {
    let target = root().join("target/browser-example");
    let run = |command: &mut Command, what: &str| {
        let status = command
            .status()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{what} failed ({status})"))
        }
    };
    run(
        Command::new(env!("CARGO"))
            .current_dir(root())
            .args(["build", "--release", "-p", "synckit-browser-example"])
            .args(["--target", "wasm32-unknown-unknown"])
            .env("CARGO_TARGET_DIR", &target),
        "cargo build of the page (rustup target add wasm32-unknown-unknown)",
    )?;
    let wasm = target.join("wasm32-unknown-unknown/release/synckit_browser_example.wasm");
    run(
        Command::new("wasm-bindgen")
            .args(["--target", "web", "--no-typescript", "--out-dir"])
            .arg(pkg)
            .arg(wasm),
        "wasm-bindgen (cargo install wasm-bindgen-cli --version <the wasm-bindgen of Cargo.lock>)",
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let pkg = root().join("target/browser-example/pkg");
    if !args.no_build {
        build_page(&pkg)?;
    }
    let store = SqliteStore::open(&args.database).await?;
    let api = server::router(store.clone()).allow_anonymous().build()?;
    let app = axum::Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .nest_service("/pkg", ServeDir::new(pkg))
        .nest(synckit_browser_example::API_PATH, api);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let closing = store.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            // Ends the live feeds, which would hold the shutdown.
            let _ = closing.close().await;
        })
        .await?;
    Ok(())
}
