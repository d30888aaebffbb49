//! The impl emitted beside the errors when the input has mistakes, so that
//! the user sees those mistakes, not a cascade of "`Event` is not
//! implemented" from every use of the type.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::expand::{impl_header, subscription_helpers};

/// An `Event` impl whose methods are never reached (the crate does not
/// compile).
pub(crate) fn stub(input: &DeriveInput, krate: &syn::Path) -> TokenStream {
    let header = impl_header(input, krate, &[]);
    let helpers = subscription_helpers(input, krate);
    quote! {
        #helpers
        #header {
            fn event_types() -> &'static [&'static str] { ::core::unreachable!() }
            fn event_type(&self) -> &'static str { ::core::unreachable!() }
            fn aggregate_id(&self) -> #krate::__private::String { ::core::unreachable!() }
            fn layout() -> &'static #krate::__private::Layout { ::core::unreachable!() }
        }
    }
}
