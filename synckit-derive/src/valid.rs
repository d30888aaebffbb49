//! Checks across fields and variants, resolving the container into the
//! model that `expand` generates code from.

use std::collections::HashMap;

use proc_macro2::Span;
use quote::ToTokens;
use syn::{Ident, LitStr, Member, Type};

use crate::ast::{Container, Data, Field, Style, Variant};
use crate::attr::Keyed;
use crate::case;
use crate::ctxt::Ctxt;

/// Longest event type name synckit stores, in bytes.
const MAX_EVENT_TYPE_LEN: usize = 255;

pub(crate) struct Model {
    pub(crate) krate: syn::Path,
    pub(crate) kind: Kind,
}

pub(crate) enum Kind {
    Struct {
        event_type: String,
        aggregate: Member,
        version: u32,
    },
    Enum {
        repr: Repr,
        variants: Vec<ResolvedVariant>,
    },
}

pub(crate) enum Repr {
    External,
    Internal(String),
    Adjacent(String, String),
    Untagged,
}

pub(crate) struct ResolvedVariant {
    pub(crate) ident: Ident,
    pub(crate) style: Style,
    pub(crate) event_type: String,
    pub(crate) serde_name: String,
    pub(crate) aggregate: VariantAggregate,
    pub(crate) version: u32,
}

/// Where a variant's aggregate id comes from.
pub(crate) enum VariantAggregate {
    /// A field of the variant.
    Field(Member),
    /// A named field of a newtype variant's inner value.
    InnerField(Ident),
    /// The inner value's own `Event::aggregate_id` (newtype variants).
    Delegate(Type),
}

const MISSING_HINT: &str = "mark one field with `#[event(aggregate_id)]`, or name it with `#[event(aggregate_id = \"field\")]`";

/// Checks the container; `None` when an error was recorded.
pub(crate) fn check(cx: &mut Ctxt, container: &Container<'_>) -> Option<Model> {
    let krate = container.krate();
    let container_version = container.attrs.version.as_ref().map(|v| v.value);
    let ident = &container.input.ident;
    let kind = match &container.data {
        Data::Union(union) => {
            cx.error_spanned_by(
                union.union_token,
                "`Event` cannot be derived for a union; use a struct or an enum",
            );
            return None;
        }
        Data::Struct(fields) => {
            let event_type = event_type_name(cx, container.attrs.event_type.as_ref(), ident);
            let marked = marked_field(cx, fields);
            let rule = container.attrs.aggregate_id.as_ref();
            let aggregate = match (marked, rule) {
                (Some(field), None) => Some(field.member.clone()),
                (Some(_), Some(rule)) => {
                    two_aggregate_ids(cx, &rule.key);
                    None
                }
                (
                    None,
                    Some(Keyed {
                        value: Some(name), ..
                    }),
                ) => match find_named(fields, name) {
                    Some(field) => Some(field.member.clone()),
                    None => {
                        cx.error_spanned_by(
                            name,
                            format!("this struct has no field `{}`", name.value()),
                        );
                        None
                    }
                },
                (None, _) => {
                    cx.error_spanned_by(ident, format!("missing aggregate id: {MISSING_HINT}"));
                    None
                }
            };
            Kind::Struct {
                event_type,
                aggregate: aggregate?,
                version: container_version.unwrap_or(1),
            }
        }
        Data::Enum(variants) => {
            if variants.is_empty() {
                cx.error_spanned_by(ident, "an enum without variants produces no events");
                return None;
            }
            let resolved: Vec<_> = variants
                .iter()
                .map(|v| resolve_variant(cx, container, v, container_version))
                .collect();
            check_unique_types(cx, variants, &resolved);
            Kind::Enum {
                repr: repr_of(container),
                variants: resolved.into_iter().collect::<Option<Vec<_>>>()?,
            }
        }
    };
    Some(Model { krate, kind })
}

fn event_type_name(cx: &mut Ctxt, given: Option<&Keyed<LitStr>>, ident: &Ident) -> String {
    let Some(Keyed { value: lit, .. }) = given else {
        return ident.to_string();
    };
    let name = lit.value();
    if name.is_empty() {
        cx.error_spanned_by(lit, "an event type name must not be empty");
    } else if name.len() > MAX_EVENT_TYPE_LEN {
        cx.error_spanned_by(
            lit,
            format!("an event type name is at most {MAX_EVENT_TYPE_LEN} bytes"),
        );
    } else if name.contains('\0') {
        cx.error_spanned_by(lit, "an event type name cannot contain a NUL character");
    }
    name
}

fn two_aggregate_ids(cx: &mut Ctxt, at: impl ToTokens) {
    cx.error_spanned_by(
        at,
        "two aggregate ids: an event has exactly one; keep either the field marker or the `aggregate_id = \"...\"` rule",
    );
}

/// The one field marked `#[event(aggregate_id)]`; reports a second one.
fn marked_field<'f, 'a>(cx: &mut Ctxt, fields: &'f [Field<'a>]) -> Option<&'f Field<'a>> {
    let mut marked = fields.iter().filter(|f| f.attrs.aggregate_id.is_some());
    let first = marked.next()?;
    for extra in marked {
        if let Some(key) = extra.attrs.aggregate_id.as_ref() {
            let mut error = syn::Error::new_spanned(
                &key.key,
                "two aggregate ids: only one field can be marked `#[event(aggregate_id)]`",
            );
            error.combine(syn::Error::new_spanned(
                &first.original.ident,
                "the first one is here",
            ));
            cx.syn_error(error);
        }
    }
    Some(first)
}

/// The field an `aggregate_id = "..."` rule names; an error at the rule
/// when its text is not a field name.
fn rule_field(cx: &mut Ctxt, name: &LitStr) -> Option<Ident> {
    match syn::parse_str::<Ident>(&name.value()) {
        Ok(ident) => Some(Ident::new(&ident.to_string(), name.span())),
        Err(_) => {
            cx.error_spanned_by(
                name,
                format!(
                    "`aggregate_id = {:?}` must name a field, and `{}` is not a Rust identifier",
                    name.value(),
                    name.value()
                ),
            );
            None
        }
    }
}

fn find_named<'f, 'a>(fields: &'f [Field<'a>], name: &LitStr) -> Option<&'f Field<'a>> {
    fields
        .iter()
        .find(|f| matches!(&f.member, Member::Named(i) if *i == name.value()))
}

fn resolve_variant(
    cx: &mut Ctxt,
    container: &Container<'_>,
    variant: &Variant<'_>,
    container_version: Option<u32>,
) -> Option<ResolvedVariant> {
    let ident = variant.ident;
    let event_type = event_type_name(cx, variant.attrs.event_type.as_ref(), ident);
    let marked = marked_field(cx, &variant.fields);
    let own_rule = variant.attrs.aggregate_id.as_ref();
    let rule = own_rule
        .or(container.attrs.aggregate_id.as_ref())
        .and_then(|k| k.value.as_ref());
    let aggregate = match (variant.style, marked) {
        (Style::Unit, _) => {
            cx.error_spanned_by(
                ident,
                format!(
                    "unit variant `{ident}` has no field to carry an aggregate id; give it one, like `{ident} {{ #[event(aggregate_id)] id: String }}`"
                ),
            );
            None
        }
        (_, Some(field)) => {
            if let Some(rule) = own_rule {
                two_aggregate_ids(cx, &rule.key);
                None
            } else {
                Some(VariantAggregate::Field(field.member.clone()))
            }
        }
        (Style::Named, None) => match rule {
            Some(name) if rule_field(cx, name).is_none() => None,
            Some(name) => match find_named(&variant.fields, name) {
                Some(field) => Some(VariantAggregate::Field(field.member.clone())),
                None => {
                    cx.error_spanned_by(
                        ident,
                        format!(
                            "variant `{ident}` has no field `{}` for `aggregate_id = \"{}\"`; add it or mark another field with `#[event(aggregate_id)]`",
                            name.value(),
                            name.value()
                        ),
                    );
                    None
                }
            },
            None => {
                cx.error_spanned_by(
                    ident,
                    format!("missing aggregate id in variant `{ident}`: {MISSING_HINT}"),
                );
                None
            }
        },
        (Style::Tuple, None) if variant.fields.len() == 1 => Some(match rule {
            Some(name) => VariantAggregate::InnerField(rule_field(cx, name)?),
            None => VariantAggregate::Delegate(variant.fields[0].ty.clone()),
        }),
        (Style::Tuple, None) => {
            cx.error_spanned_by(
                ident,
                format!("missing aggregate id in variant `{ident}`: mark one field with `#[event(aggregate_id)]`"),
            );
            None
        }
    };
    let serde_name = match (&variant.serde_rename, &container.serde.rename_all) {
        (Some(rename), _) => rename.clone(),
        (None, Some(rule)) => {
            case::rename_variant(rule, &ident.to_string()).unwrap_or_else(|| ident.to_string())
        }
        (None, None) => ident.to_string(),
    };
    Some(ResolvedVariant {
        ident: ident.clone(),
        style: variant.style,
        event_type,
        serde_name,
        aggregate: aggregate?,
        version: variant
            .attrs
            .version
            .as_ref()
            .map(|v| v.value)
            .or(container_version)
            .unwrap_or(1),
    })
}

fn check_unique_types(
    cx: &mut Ctxt,
    variants: &[Variant<'_>],
    resolved: &[Option<ResolvedVariant>],
) {
    let mut seen: HashMap<String, Span> = HashMap::new();
    for (variant, resolved) in variants.iter().zip(resolved) {
        let name = match (&variant.attrs.event_type, resolved) {
            (_, Some(r)) => r.event_type.clone(),
            (Some(t), None) => t.value.value(),
            (None, None) => variant.ident.to_string(),
        };
        let span = variant
            .attrs
            .event_type
            .as_ref()
            .map(|t| t.value.span())
            .unwrap_or_else(|| variant.ident.span());
        if let Some(first) = seen.get(&name) {
            let mut error = syn::Error::new(
                span,
                format!(
                    "two variants have the event type {name:?}; give one of them `#[event(type = \"...\")]`"
                ),
            );
            error.combine(syn::Error::new(
                *first,
                format!("{name:?} is first used here"),
            ));
            cx.syn_error(error);
        } else {
            seen.insert(name, span);
        }
    }
}

fn repr_of(container: &Container<'_>) -> Repr {
    let serde = &container.serde;
    match (&serde.tag, &serde.content, serde.untagged) {
        (_, _, true) => Repr::Untagged,
        (Some(tag), Some(content), false) => Repr::Adjacent(tag.clone(), content.clone()),
        (Some(tag), None, false) => Repr::Internal(tag.clone()),
        (None, _, false) => Repr::External,
    }
}
