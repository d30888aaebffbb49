//! The typed core: what an event is, how it is addressed and checked. No
//! runtime, no database: this part builds for `wasm32-unknown-unknown`.

pub(crate) mod cursor;
pub(crate) mod error;
pub(crate) mod event;
pub(crate) mod filter;
pub mod notification;
pub(crate) mod payload;
pub(crate) mod recorded;
#[cfg(feature = "schema")]
pub(crate) mod schema;
pub(crate) mod transient;
pub(crate) mod upcast;
pub mod validate;
