//! The derive input, read into containers, variants and fields with their
//! parsed attributes.

use syn::{DeriveInput, Ident, Member, Type};

use crate::attr::{self, EventAttrs, Position, SerdeContainer};
use crate::ctxt::Ctxt;

pub(crate) struct Container<'a> {
    pub(crate) input: &'a DeriveInput,
    pub(crate) attrs: EventAttrs,
    pub(crate) serde: SerdeContainer,
    pub(crate) data: Data<'a>,
}

impl Container<'_> {
    /// The path of the runtime crate: `#[event(crate = "...")]`, else
    /// `::synckit`. Read here once, for the impl and for the fallback.
    pub(crate) fn krate(&self) -> syn::Path {
        self.attrs
            .krate
            .as_ref()
            .map(|k| k.value.clone())
            .unwrap_or_else(|| syn::parse_quote!(::synckit))
    }
}

pub(crate) enum Data<'a> {
    Struct(Vec<Field<'a>>),
    Enum(Vec<Variant<'a>>),
    Union(&'a syn::DataUnion),
}

pub(crate) struct Variant<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) attrs: EventAttrs,
    pub(crate) serde_rename: Option<String>,
    pub(crate) style: Style,
    pub(crate) fields: Vec<Field<'a>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Named,
    Tuple,
    Unit,
}

pub(crate) struct Field<'a> {
    pub(crate) original: &'a syn::Field,
    pub(crate) member: Member,
    pub(crate) ty: &'a Type,
    pub(crate) attrs: EventAttrs,
}

impl<'a> Container<'a> {
    pub(crate) fn from_ast(cx: &mut Ctxt, input: &'a DeriveInput) -> Self {
        let position = match input.data {
            syn::Data::Enum(_) => Position::Enum,
            _ => Position::Struct,
        };
        let attrs = attr::parse_event_attrs(cx, &input.attrs, position);
        let data = match &input.data {
            syn::Data::Struct(s) => Data::Struct(fields_from_ast(cx, &s.fields)),
            syn::Data::Enum(e) => Data::Enum(
                e.variants
                    .iter()
                    .map(|v| Variant {
                        ident: &v.ident,
                        attrs: attr::parse_event_attrs(cx, &v.attrs, Position::Variant),
                        serde_rename: attr::serde_variant_rename(&v.attrs),
                        style: style_of(&v.fields),
                        fields: fields_from_ast(cx, &v.fields),
                    })
                    .collect(),
            ),
            syn::Data::Union(u) => Data::Union(u),
        };
        Container {
            input,
            attrs,
            serde: attr::serde_container(&input.attrs),
            data,
        }
    }
}

fn style_of(fields: &syn::Fields) -> Style {
    match fields {
        syn::Fields::Named(_) => Style::Named,
        syn::Fields::Unnamed(_) => Style::Tuple,
        syn::Fields::Unit => Style::Unit,
    }
}

fn fields_from_ast<'a>(cx: &mut Ctxt, fields: &'a syn::Fields) -> Vec<Field<'a>> {
    fields
        .iter()
        .enumerate()
        .map(|(index, field)| Field {
            original: field,
            member: match &field.ident {
                Some(ident) => Member::Named(ident.clone()),
                None => Member::Unnamed(index.into()),
            },
            ty: &field.ty,
            attrs: attr::parse_event_attrs(cx, &field.attrs, Position::Field),
        })
        .collect()
}
