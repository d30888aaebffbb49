//! `RemoteStore` in a real browser (headless Chromium, through
//! `wasm-bindgen-test-runner` and chromedriver): fetch and `EventSource`
//! against a server the test run starts. Run by the workspace's
//! `cargo test --test browser` (`tests/browser/`), which serves a store,
//! passes its address and a restart control at compile time
//! (`SYNCKIT_BROWSER_SERVER`, `SYNCKIT_BROWSER_CONTROL`) and runs this
//! file in the browser.
#![cfg(all(target_arch = "wasm32", target_os = "unknown", feature = "client"))]

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use synckit::client::{Config, RemoteStore};
use synckit::{Event, EventStore, ExpectedVersion, Recorded, Start, Subscription};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
enum Note {
    Posted {
        #[event(aggregate_id)]
        board: String,
        text: String,
    },
}

fn setting(value: Option<&'static str>, name: &str) -> &'static str {
    value.unwrap_or_else(|| {
        panic!("{name} is not set: run `cargo test --test browser` at the workspace root")
    })
}

fn server() -> &'static str {
    setting(
        option_env!("SYNCKIT_BROWSER_SERVER"),
        "SYNCKIT_BROWSER_SERVER",
    )
}

fn control() -> &'static str {
    setting(
        option_env!("SYNCKIT_BROWSER_CONTROL"),
        "SYNCKIT_BROWSER_CONTROL",
    )
}

fn posted(board: &str, text: &str) -> Note {
    Note::Posted {
        board: board.into(),
        text: text.into(),
    }
}

async fn next(notes: &mut Subscription<Note>) -> Recorded<Note> {
    loop {
        match notes.next().await.expect("the subscription ended") {
            Ok(event) => return event,
            // While the server restarts: retried by the subscription.
            Err(e) if e.is_transient() => continue,
            Err(e) => panic!("subscription error: {e}"),
        }
    }
}

/// Appends from the browser, receives through a typed subscription, and
/// keeps receiving, once each and in order, after the server is stopped
/// and started again.
#[wasm_bindgen_test]
async fn append_and_follow_a_typed_stream_across_a_server_restart() {
    let config = Config::new(server()).with_max_backoff(std::time::Duration::from_millis(200));
    let remote = RemoteStore::connect(config).await.expect("connect");
    let board = format!("board-{}", js_sys::Date::now());
    let mut notes = Note::subscribe_stream_from(&remote, board.clone(), Start::Beginning)
        .await
        .expect("subscribe");

    let first = remote
        .append_event(ExpectedVersion::NoStream, &posted(&board, "first"))
        .await
        .expect("append from the browser");
    let got = next(&mut notes).await;
    assert_eq!(got.data, posted(&board, "first"));
    assert_eq!(got.version, first.version);

    // The harness stops the server, cutting the live feed, and answers
    // once it serves again on the same port.
    let restarted = reqwest::Client::new()
        .post(format!("{}/restart", control()))
        .send()
        .await
        .expect("restart control");
    assert!(restarted.status().is_success());

    let second = remote
        .append_event(ExpectedVersion::Exact(1), &posted(&board, "second"))
        .await
        .expect("append after the restart");
    let got = next(&mut notes).await;
    assert_eq!(got.data, posted(&board, "second"));
    assert_eq!((got.version, got.stream_version), (second.version, 2));

    let third = remote
        .append_event(ExpectedVersion::Exact(2), &posted(&board, "third"))
        .await
        .expect("third append");
    // Nothing twice: the next event is the third.
    assert_eq!(next(&mut notes).await.version, third.version);
    let stream = remote.read_aggregate(&board, 0, 10).await.expect("read");
    assert_eq!(stream.len(), 3);
    remote.close().await.expect("close");
}
