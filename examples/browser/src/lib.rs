//! The example page (`cargo run --example serve`): a typed stream followed
//! live in the browser through a [`RemoteStore`], and a form that appends
//! to it. Built from Rust with wasm-bindgen; no JavaScript framework.

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use synckit::client::{Config, RemoteStore};
use synckit::{Event, EventStore, ExpectedVersion, Message, Start};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Document, HtmlFormElement, HtmlInputElement};

/// The page's event: a note posted on a board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum Note {
    /// A note, on the board `board`.
    Posted {
        /// The board (the stream).
        #[event(aggregate_id)]
        board: String,
        /// What it says.
        text: String,
    },
}

/// The one board the page shows.
pub const BOARD: &str = "board";

/// Where the page's server mounts the API.
pub const API_PATH: &str = "/api";

/// Starts the page: follows the board, and posts what the form sends.
#[wasm_bindgen(start)]
pub fn start() {
    wasm_bindgen_futures::spawn_local(async {
        if let Err(e) = run().await {
            show_status(&format!("stopped: {e}"), false);
        }
    });
}

fn document() -> Document {
    web_sys::window()
        .and_then(|w| w.document())
        .expect("a page with a document")
}

fn show_status(text: &str, live: bool) {
    if let Some(status) = document().get_element_by_id("status") {
        status.set_text_content(Some(text));
        status.set_class_name(if live { "live" } else { "" });
    }
}

fn show_note(version: u64, text: &str) -> Result<(), JsValue> {
    let document = document();
    let item = document.create_element("li")?;
    item.set_attribute("data-version", &version.to_string())?;
    let number = document.create_element("small")?;
    number.set_text_content(Some(&format!("#{version}")));
    item.append_child(&number)?;
    item.append_child(&document.create_text_node(text))?;
    if let Some(list) = document.get_element_by_id("notes") {
        list.append_child(&item)?;
    }
    Ok(())
}

async fn run() -> Result<(), String> {
    let origin = web_sys::window()
        .ok_or("no window")?
        .location()
        .origin()
        .map_err(|_| "no origin")?;
    let remote = RemoteStore::connect(Config::new(format!("{origin}{API_PATH}")))
        .await
        .map_err(|e| e.to_string())?;
    post_from_the_form(&remote).map_err(|e| format!("{e:?}"))?;

    let mut notes = Note::subscribe_stream_from(&remote, BOARD, Start::Beginning)
        .await
        .map_err(|e| e.to_string())?
        .messages();
    while let Some(message) = notes.next().await {
        match message {
            Ok(Message::Event(event)) => {
                let Note::Posted { text, .. } = &event.data;
                show_note(event.version, text).map_err(|e| format!("{e:?}"))?;
            }
            Ok(Message::CaughtUp) => show_status("live", true),
            Ok(_) => {}
            Err(e) if e.is_transient() => show_status("reconnecting…", false),
            Err(e) => show_status(&format!("an event could not be read: {e}"), false),
        }
    }
    Err("the subscription ended".to_owned())
}

fn post_from_the_form(remote: &RemoteStore) -> Result<(), JsValue> {
    let document = document();
    let form: HtmlFormElement = document
        .get_element_by_id("post")
        .ok_or("no form")?
        .dyn_into()?;
    let input: HtmlInputElement = document
        .get_element_by_id("text")
        .ok_or("no input")?
        .dyn_into()?;
    let remote = remote.clone();
    let on_submit = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
        event.prevent_default();
        let text = input.value();
        if text.trim().is_empty() {
            return;
        }
        input.set_value("");
        let remote = remote.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let note = Note::Posted {
                board: BOARD.to_owned(),
                text,
            };
            if let Err(e) = remote.append_event(ExpectedVersion::Any, &note).await {
                show_status(&format!("could not post: {e}"), false);
            }
        });
    });
    form.add_event_listener_with_callback("submit", on_submit.as_ref().unchecked_ref())?;
    // The form lives as long as the page.
    on_submit.forget();
    Ok(())
}
