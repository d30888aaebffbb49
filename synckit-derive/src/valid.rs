//! Checks across fields and variants, resolving the container into the
//! model that `expand` generates code from.

use std::collections::HashMap;

use proc_macro2::Span;
use quote::ToTokens;
use syn::{Ident, LitStr, Member, Type};

use crate::ast::{Container, Data, Field, Style, Variant};
use crate::attr::{EventAttrs, Keyed, Upcast};
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
        aliases: Vec<String>,
        aggregate: Member,
        version: u32,
        upcasts: Vec<Step>,
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
    pub(crate) aliases: Vec<String>,
    pub(crate) upcasts: Vec<Step>,
}

/// One step of an event type's upcast chain.
#[derive(Clone)]
pub(crate) struct Step {
    pub(crate) from: u32,
    pub(crate) with: syn::Path,
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
            let event_type = match container.attrs.event_type.as_ref() {
                Some(given) => checked_name(cx, &given.value),
                None => ident.to_string(),
            };
            let version = container_version.unwrap_or(1);
            let aliases = aliases(cx, &container.attrs, std::slice::from_ref(&event_type));
            let upcasts = chain(cx, &[], &container.attrs, version, ident);
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
                aliases,
                aggregate: aggregate?,
                version,
                upcasts,
            }
        }
        Data::Enum(variants) => {
            if variants.is_empty() {
                cx.error_spanned_by(ident, "an enum without variants produces no events");
                return None;
            }
            // The enum's own chain is checked once here; a variant that
            // inherits it is not checked again.
            let enum_chain = chain(
                cx,
                &[],
                &container.attrs,
                container_version.unwrap_or(1),
                ident,
            );
            let resolved: Vec<_> = variants
                .iter()
                .map(|v| resolve_variant(cx, container, v, container_version, &enum_chain))
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

/// A given event type name or alias, checked against what the store
/// accepts.
fn checked_name(cx: &mut Ctxt, lit: &LitStr) -> String {
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

/// The `aliases = [..]` of an item, checked; an alias that is one of
/// `taken` (its own name) or given twice is an error.
fn aliases(cx: &mut Ctxt, attrs: &EventAttrs, taken: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for lit in attrs.aliases.iter().flat_map(|a| &a.value) {
        let name = checked_name(cx, lit);
        if taken.contains(&name) || out.contains(&name) {
            cx.error_spanned_by(
                lit,
                format!("the alias {name:?} is already a name of this event type"),
            );
        } else {
            out.push(name);
        }
    }
    out
}

/// The upcast chain of an item with schema version `version`: the steps
/// it inherits (an enum's, for a variant that keeps the enum's version),
/// replaced by its own for the same `from`. Each `from` is below
/// `version` and given once; the steps run without a gap up to
/// `version - 1` (versions below the first step decode as its input).
fn chain(
    cx: &mut Ctxt,
    inherited: &[Step],
    attrs: &EventAttrs,
    version: u32,
    item: &Ident,
) -> Vec<Step> {
    let mut own: Vec<&Upcast> = Vec::new();
    for upcast in &attrs.upcasts {
        if upcast.from >= version {
            cx.error_spanned_by(
                &upcast.at,
                format!(
                    "a step from version {} is not below the schema version {version}; the chain steps from each older version to the next, up to `version = {version}`",
                    upcast.from
                ),
            );
        } else if let Some(first) = own.iter().find(|u| u.from == upcast.from) {
            let mut error = syn::Error::new_spanned(
                &upcast.at,
                format!("duplicate step from version {}", upcast.from),
            );
            error.combine(syn::Error::new_spanned(&first.at, "the first one is here"));
            cx.syn_error(error);
        } else {
            own.push(upcast);
        }
    }
    let mut steps: Vec<Step> = inherited
        .iter()
        .filter(|s| !own.iter().any(|u| u.from == s.from))
        .cloned()
        .chain(own.iter().map(|u| Step {
            from: u.from,
            with: u.with.clone(),
        }))
        .collect();
    steps.sort_by_key(|s| s.from);
    if let Some(first) = steps.first() {
        let missing: Vec<String> = (first.from..version)
            .filter(|v| !steps.iter().any(|s| s.from == *v))
            .map(|v| v.to_string())
            .collect();
        if !missing.is_empty() && !attrs.upcasts.is_empty() {
            let at = attrs
                .version
                .as_ref()
                .map(|v| v.key.clone())
                .unwrap_or_else(|| item.to_token_stream());
            cx.error_spanned_by(
                at,
                format!(
                    "the upcast chain of `{item}` has a gap: no step from version {}; each version from {} up to {} needs its step, like `upcast(v{} = \"..\")`",
                    missing.join(", "),
                    first.from,
                    version - 1,
                    missing[0]
                ),
            );
        }
    }
    steps
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
    enum_chain: &[Step],
) -> Option<ResolvedVariant> {
    let ident = variant.ident;
    // The default name carries the enum's name, so that two enums' variants
    // of one name are two event types; the bare variant name (the default
    // before) stays readable as an alias.
    let (event_type, legacy) = match variant.attrs.event_type.as_ref() {
        Some(given) => (checked_name(cx, &given.value), None),
        None => (
            format!("{}.{ident}", container.input.ident),
            Some(ident.to_string()),
        ),
    };
    let mut aliases = aliases(cx, &variant.attrs, std::slice::from_ref(&event_type));
    if let Some(legacy) = legacy.filter(|l| !aliases.contains(l)) {
        aliases.push(legacy);
    }
    let version = variant
        .attrs
        .version
        .as_ref()
        .map(|v| v.value)
        .or(container_version)
        .unwrap_or(1);
    let inherited = if variant.attrs.version.is_some() {
        &[][..]
    } else {
        enum_chain
    };
    let upcasts = if variant.attrs.upcasts.is_empty() && variant.attrs.version.is_none() {
        enum_chain.to_vec()
    } else {
        chain(cx, inherited, &variant.attrs, version, ident)
    };
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
        version,
        aliases,
        upcasts,
    })
}

/// Every name a variant is read by (its type and aliases) belongs to one
/// variant only.
fn check_unique_types(
    cx: &mut Ctxt,
    variants: &[Variant<'_>],
    resolved: &[Option<ResolvedVariant>],
) {
    let mut seen: HashMap<String, (Span, bool)> = HashMap::new();
    for (variant, resolved) in variants.iter().zip(resolved) {
        let type_span = variant
            .attrs
            .event_type
            .as_ref()
            .map(|t| t.value.span())
            .unwrap_or_else(|| variant.ident.span());
        let mut names: Vec<(String, Span, bool)> = Vec::new();
        match resolved {
            Some(r) => {
                names.push((r.event_type.clone(), type_span, false));
                for alias in &r.aliases {
                    let span = variant
                        .attrs
                        .aliases
                        .iter()
                        .flat_map(|a| &a.value)
                        .find(|lit| lit.value() == *alias)
                        .map_or_else(|| variant.ident.span(), LitStr::span);
                    names.push((alias.clone(), span, true));
                }
            }
            None => {
                if let Some(t) = &variant.attrs.event_type {
                    names.push((t.value.value(), type_span, false));
                }
            }
        }
        for (name, span, alias) in names {
            if let Some((first, first_alias)) = seen.get(&name) {
                let message = if alias || *first_alias {
                    format!(
                        "two variants are read by the name {name:?}; an alias (an old name) belongs to one event type only"
                    )
                } else {
                    format!(
                        "two variants have the event type {name:?}; give one of them `#[event(type = \"...\")]`"
                    )
                };
                let mut error = syn::Error::new(span, message);
                error.combine(syn::Error::new(
                    *first,
                    format!("{name:?} is first used here"),
                ));
                cx.syn_error(error);
            } else {
                seen.insert(name, (span, alias));
            }
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
