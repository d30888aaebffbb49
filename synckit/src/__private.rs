//! Paths the derive's generated code uses. Not public API.

pub use crate::model::event::{EnumRepr, Layout, VariantLayout};
pub use std::string::{String, ToString};
pub use std::{format, stringify};

/// `ToString` on a field reference, callable without importing the trait.
pub fn to_string<T: std::fmt::Display + ?Sized>(value: &T) -> String {
    ToString::to_string(value)
}
pub use serde::Serialize;
pub use serde::de::DeserializeOwned;

pub use crate::store::TypedPage;
pub use crate::store::hub::Hub;
pub use crate::store::subscription::subscribe_as;

pub use crate::model::error::BoxError;
pub use crate::model::upcast::step as upcast_step;
pub use serde_json::Value;
