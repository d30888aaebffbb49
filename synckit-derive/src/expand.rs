//! Code generation of the `Event` impl.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::DeriveInput;

use crate::ast::{Container, Style};
use crate::ctxt::Ctxt;
use crate::fallback;
use crate::valid::{self, Kind, Model, Repr, Step, VariantAggregate};

/// Expands the derive: the impl, or every error plus a stub impl so that the
/// user sees the real mistakes rather than a cascade of "`Event` is not
/// implemented".
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let container = Container::from_ast(&mut cx, input);
    let model = valid::check(&mut cx, &container);
    match (cx.finish(), model) {
        (None, Some(model)) => impl_event(input, &model),
        (Some(errors), _) => {
            let krate = container.krate();
            let mut out = errors.to_compile_error();
            // No stub for a union: its impl could never hold.
            if !matches!(input.data, syn::Data::Union(_)) {
                out.extend(fallback::stub(input, &krate));
            }
            out
        }
        // `check` returns `None` only after recording an error.
        (None, None) => {
            syn::Error::new_spanned(&input.ident, "cannot derive `Event`").to_compile_error()
        }
    }
}

/// `impl ... where Self: serde + Send + Sync + 'static` — the impl applies
/// exactly where `Event`'s supertraits hold, for generic types too.
pub(crate) fn impl_header(
    input: &DeriveInput,
    krate: &syn::Path,
    delegates: &[&syn::Type],
) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause
        .cloned()
        .unwrap_or_else(|| syn::parse_quote!(where));
    where_clause.predicates.push(syn::parse_quote!(
        Self: #krate::__private::Serialize
            + #krate::__private::DeserializeOwned
            + ::core::marker::Send
            + ::core::marker::Sync
            + 'static
    ));
    // A newtype variant without an aggregate id rule asks its inner value.
    for ty in delegates {
        where_clause
            .predicates
            .push(syn::parse_quote!(#ty: #krate::Event));
    }
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Event for #ident #ty_generics #where_clause
    }
}

fn impl_event(input: &DeriveInput, model: &Model) -> TokenStream {
    let krate = &model.krate;
    let delegates: Vec<&syn::Type> = match &model.kind {
        Kind::Enum { variants, .. } => variants
            .iter()
            .filter_map(|v| match &v.aggregate {
                VariantAggregate::Delegate(ty) => Some(ty),
                _ => None,
            })
            .collect(),
        Kind::Struct { .. } => Vec::new(),
    };
    let header = impl_header(input, krate, &delegates);
    let private = quote!(#krate::__private);
    let body = match &model.kind {
        Kind::Struct {
            event_type,
            aliases,
            aggregate,
            version,
            upcasts,
        } => {
            let upcast = upcast_fn(krate, [(event_type.as_str(), upcasts.as_slice())]);
            quote! {
                fn event_types() -> &'static [&'static str] {
                    &[#event_type]
                }
                fn event_type(&self) -> &'static str {
                    #event_type
                }
                fn aggregate_id(&self) -> #private::String {
                    #private::to_string(&self.#aggregate)
                }
                fn schema_version(&self) -> u32 {
                    #version
                }
                fn layout() -> &'static #private::Layout {
                    static LAYOUT: #private::Layout = #private::Layout::Struct {
                        event_type: #event_type,
                        aliases: &[#(#aliases),*],
                        version: #version,
                    };
                    &LAYOUT
                }
                #upcast
            }
        }
        Kind::Enum { repr, variants } => {
            let types = variants.iter().map(|v| &v.event_type);
            let mut type_arms = Vec::new();
            let mut aggregate_arms = Vec::new();
            let mut version_arms = Vec::new();
            let mut layouts = Vec::new();
            for v in variants {
                let ident = &v.ident;
                let any = match v.style {
                    Style::Named => quote!(Self::#ident { .. }),
                    Style::Tuple => quote!(Self::#ident(..)),
                    Style::Unit => quote!(Self::#ident),
                };
                let (event_type, version, serde_name) = (&v.event_type, v.version, &v.serde_name);
                type_arms.push(quote!(#any => #event_type));
                version_arms.push(quote!(#any => #version));
                let aliases = &v.aliases;
                layouts.push(quote!(#private::VariantLayout {
                    event_type: #event_type,
                    serde_name: #serde_name,
                    aliases: &[#(#aliases),*],
                    version: #version,
                }));
                let binding = format_ident!("__synckit_aggregate");
                aggregate_arms.push(match (&v.aggregate, v.style) {
                    (VariantAggregate::Field(syn::Member::Named(field)), _) => quote! {
                        Self::#ident { #field: #binding, .. } => #private::to_string(#binding)
                    },
                    (VariantAggregate::Field(syn::Member::Unnamed(index)), _) => {
                        let skipped = (0..index.index).map(|_| quote!(_));
                        quote! {
                            Self::#ident(#(#skipped,)* #binding, ..) => #private::to_string(#binding)
                        }
                    }
                    (VariantAggregate::InnerField(field), _) => quote! {
                        Self::#ident(#binding) => #private::to_string(&#binding.#field)
                    },
                    (VariantAggregate::Delegate(ty), _) => quote! {
                        Self::#ident(#binding) => <#ty as #krate::Event>::aggregate_id(#binding)
                    },
                });
            }
            let repr = match repr {
                Repr::External => quote!(#private::EnumRepr::External),
                Repr::Internal(tag) => quote!(#private::EnumRepr::Internal { tag: #tag }),
                Repr::Adjacent(tag, content) => {
                    quote!(#private::EnumRepr::Adjacent { tag: #tag, content: #content })
                }
                Repr::Untagged => quote!(#private::EnumRepr::Untagged),
            };
            let upcast = upcast_fn(
                krate,
                variants
                    .iter()
                    .map(|v| (v.event_type.as_str(), v.upcasts.as_slice())),
            );
            quote! {
                #upcast
                fn event_types() -> &'static [&'static str] {
                    &[#(#types),*]
                }
                fn event_type(&self) -> &'static str {
                    match self { #(#type_arms,)* }
                }
                fn aggregate_id(&self) -> #private::String {
                    match self { #(#aggregate_arms,)* }
                }
                fn schema_version(&self) -> u32 {
                    match self { #(#version_arms,)* }
                }
                fn layout() -> &'static #private::Layout {
                    static LAYOUT: #private::Layout = #private::Layout::Enum {
                        repr: #repr,
                        variants: &[#(#layouts),*],
                    };
                    &LAYOUT
                }
            }
        }
    };
    let helpers = subscription_helpers(input, krate);
    quote! {
        #header {
            #body
        }
        #helpers
    }
}

/// `Event::upcast`: one match arm per declared step, keyed by the current
/// event type and the version the step starts from; nothing when no type
/// declares a step (the trait's default passes data through).
fn upcast_fn<'a>(
    krate: &syn::Path,
    chains: impl IntoIterator<Item = (&'a str, &'a [Step])>,
) -> TokenStream {
    let private = quote!(#krate::__private);
    let arms: Vec<TokenStream> = chains
        .into_iter()
        .flat_map(|(event_type, steps)| {
            let private = &private;
            steps.iter().map(move |Step { from, with }| {
                quote!((#event_type, #from) => #private::upcast_step(#with, data))
            })
        })
        .collect();
    if arms.is_empty() {
        return TokenStream::new();
    }
    quote! {
        fn upcast(
            event_type: &str,
            from: u32,
            data: #private::Value,
        ) -> ::core::result::Result<#private::Value, #private::BoxError> {
            match (event_type, from) {
                #(#arms,)*
                _ => ::core::result::Result::Ok(data),
            }
        }
    }
}

/// The typed subscription helpers, as inherent functions of the type
/// (`Account::subscribe(&store)`), so that they need no import and the
/// `Event` trait stays free of the subscription machinery.
pub(crate) fn subscription_helpers(input: &DeriveInput, krate: &syn::Path) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let private = quote!(#krate::__private);
    let output = quote! {
        impl ::core::future::Future<Output = #krate::Result<#krate::Subscription<Self>>>
            + ::core::marker::Send
    };
    quote! {
        #[automatically_derived]
        #[allow(dead_code)]
        impl #impl_generics #ident #ty_generics #where_clause {
            /// Subscribes to this type's events committed from now on,
            /// decoded into it.
            pub fn subscribe<__S: #krate::SubscriptionSource>(store: &__S) -> #output
            where
                Self: #krate::Event,
            {
                #private::subscribe_as::<Self, __S>(store, None, #krate::Start::Now)
            }

            /// Subscribes to this type's events from `start`, decoded into it.
            pub fn subscribe_from<__S: #krate::SubscriptionSource>(
                store: &__S,
                start: #krate::Start,
            ) -> #output
            where
                Self: #krate::Event,
            {
                #private::subscribe_as::<Self, __S>(store, None, start)
            }

            /// Subscribes to this type's events of one aggregate, committed
            /// from now on.
            pub fn subscribe_stream<__S: #krate::SubscriptionSource>(
                store: &__S,
                aggregate_id: impl ::core::convert::Into<#private::String>,
            ) -> #output
            where
                Self: #krate::Event,
            {
                #private::subscribe_as::<Self, __S>(
                    store,
                    ::core::option::Option::Some(aggregate_id.into()),
                    #krate::Start::Now,
                )
            }

            /// Subscribes to this type's events of one aggregate, from
            /// `start`.
            pub fn subscribe_stream_from<__S: #krate::SubscriptionSource>(
                store: &__S,
                aggregate_id: impl ::core::convert::Into<#private::String>,
                start: #krate::Start,
            ) -> #output
            where
                Self: #krate::Event,
            {
                #private::subscribe_as::<Self, __S>(
                    store,
                    ::core::option::Option::Some(aggregate_id.into()),
                    start,
                )
            }
        }
    }
}
