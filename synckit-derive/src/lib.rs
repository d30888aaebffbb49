//! `#[derive(Event)]` for [synckit](https://docs.rs/synckit).
//!
//! Use it through `synckit::Event` (feature `derive`, on by default); the
//! attributes, what they generate and examples are documented there:
//! <https://docs.rs/synckit/latest/synckit/trait.Event.html#deriving-event>.

mod ast;
mod attr;
mod case;
mod ctxt;
mod expand;
mod fallback;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `synckit::Event`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
