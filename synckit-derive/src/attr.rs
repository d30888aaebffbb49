//! Parsing of `#[event(...)]`, and of the `#[serde(...)]` keys that decide
//! how serde names and tags enum variants.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, Lit, LitStr};

use crate::ctxt::Ctxt;

/// `#[event(type = "...")]`: the event type name.
pub(crate) const TYPE: &str = "type";
/// `#[event(aggregate_id)]` on a field, `#[event(aggregate_id = "field")]`
/// on a type or variant.
pub(crate) const AGGREGATE_ID: &str = "aggregate_id";
/// `#[event(version = N)]`: the schema version.
pub(crate) const VERSION: &str = "version";
/// `#[event(crate = "path")]`: where synckit lives.
pub(crate) const CRATE: &str = "crate";
/// `#[event(aliases = ["OldName"])]`: older names still read.
pub(crate) const ALIASES: &str = "aliases";
/// `#[event(upcast(v1 = "path", ...))]`: the steps of the upcast chain.
pub(crate) const UPCAST: &str = "upcast";

const ALL_KEYS: &[&str] = &[TYPE, AGGREGATE_ID, VERSION, CRATE, ALIASES, UPCAST];

/// Where an attribute sits; decides which keys it accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Struct,
    Enum,
    Variant,
    Field,
}

impl Position {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Position::Struct => &[TYPE, AGGREGATE_ID, VERSION, CRATE, ALIASES, UPCAST],
            Position::Enum => &[AGGREGATE_ID, VERSION, CRATE, UPCAST],
            Position::Variant => &[TYPE, AGGREGATE_ID, VERSION, ALIASES, UPCAST],
            Position::Field => &[AGGREGATE_ID],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Position::Struct => "a struct",
            Position::Enum => "an enum",
            Position::Variant => "a variant",
            Position::Field => "a field",
        }
    }
}

/// A parsed attribute value with the tokens of its key, for error spans.
pub(crate) struct Keyed<T> {
    pub(crate) key: TokenStream,
    pub(crate) value: T,
}

/// Every `#[event(...)]` key found on one item.
#[derive(Default)]
pub(crate) struct EventAttrs {
    pub(crate) event_type: Option<Keyed<LitStr>>,
    /// On a field the value is `None` (a marker); elsewhere it names a field.
    pub(crate) aggregate_id: Option<Keyed<Option<LitStr>>>,
    pub(crate) version: Option<Keyed<u32>>,
    pub(crate) krate: Option<Keyed<syn::Path>>,
    pub(crate) aliases: Option<Keyed<Vec<LitStr>>>,
    pub(crate) upcasts: Vec<Upcast>,
}

/// One step of `upcast(vN = "path", ...)`.
pub(crate) struct Upcast {
    /// The `vN` key, for spans.
    pub(crate) at: TokenStream,
    /// The version the step starts from.
    pub(crate) from: u32,
    /// The function, spanned at its string literal.
    pub(crate) with: syn::Path,
}

fn set_once<T>(
    cx: &mut Ctxt,
    slot: &mut Option<Keyed<T>>,
    meta: &ParseNestedMeta<'_>,
    name: &str,
    value: T,
) {
    let key = meta.path.to_token_stream();
    if let Some(first) = slot {
        let mut error = syn::Error::new_spanned(&key, format!("duplicate `{name}` attribute"));
        error.combine(syn::Error::new_spanned(
            &first.key,
            format!("`{name}` was first given here"),
        ));
        cx.syn_error(error);
        return;
    }
    *slot = Some(Keyed { key, value });
}

/// Reads `= "string"`. A value of the wrong kind is recorded in `cx` (and
/// `None` returned) so that parsing goes on and later mistakes are reported
/// too; only broken syntax stops it.
fn string_value(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    example: &str,
) -> syn::Result<Option<LitStr>> {
    let expr: Expr = meta.value()?.parse()?;
    match expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(Some(s)),
        other => {
            cx.error_spanned_by(
                other,
                format!("expected a string literal, like `{example}`"),
            );
            Ok(None)
        }
    }
}

/// Parses the `#[event(...)]` attributes of one item, reporting unknown,
/// misplaced, duplicate and malformed keys.
pub(crate) fn parse_event_attrs(
    cx: &mut Ctxt,
    attrs: &[Attribute],
    position: Position,
) -> EventAttrs {
    let mut out = EventAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        let result = attr.parse_nested_meta(|meta| {
            let known = |k: &str| meta.path.is_ident(k);
            let name = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            if !position.keys().contains(&name.as_str()) {
                let message = if ALL_KEYS.contains(&name.as_str()) {
                    let hint = match (position, name.as_str()) {
                        (Position::Enum, TYPE) => "; on an enum, put `type` on each variant",
                        (Position::Enum, ALIASES) => "; on an enum, put `aliases` on each variant",
                        (Position::Variant, CRATE) => "; put `crate` on the enum",
                        (Position::Field, _) => "; on a field only `aggregate_id` is allowed",
                        _ => "",
                    };
                    format!("`{name}` is not allowed on {}{hint}", position.describe())
                } else {
                    format!(
                        "unknown event attribute `{}`; expected one of {}",
                        meta.path.to_token_stream(),
                        position
                            .keys()
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                cx.error_spanned_by(&meta.path, message);
                skip_value(&meta)?;
                return Ok(());
            }
            if known(TYPE) {
                if let Some(lit) = string_value(cx, &meta, "type = \"user.created\"")? {
                    set_once(cx, &mut out.event_type, &meta, TYPE, lit);
                }
            } else if known(AGGREGATE_ID) {
                if position == Position::Field {
                    if meta.input.peek(syn::Token![=]) {
                        cx.error_spanned_by(
                            &meta.path,
                            "on a field, write `#[event(aggregate_id)]` without a value",
                        );
                        skip_value(&meta)?;
                        return Ok(());
                    }
                    set_once(cx, &mut out.aggregate_id, &meta, AGGREGATE_ID, None);
                } else {
                    if let Some(lit) = string_value(cx, &meta, "aggregate_id = \"user_id\"")? {
                        set_once(cx, &mut out.aggregate_id, &meta, AGGREGATE_ID, Some(lit));
                    }
                }
            } else if known(VERSION) {
                let expr: Expr = meta.value()?.parse()?;
                let version = match &expr {
                    Expr::Lit(syn::ExprLit {
                        lit: Lit::Int(int), ..
                    }) => int.base10_parse::<u32>().ok().filter(|v| *v >= 1),
                    _ => None,
                };
                match version {
                    Some(version) => set_once(cx, &mut out.version, &meta, VERSION, version),
                    None => cx.error_spanned_by(
                        expr,
                        "expected a schema version from 1 to 4294967295, like `version = 2`",
                    ),
                }
            } else if known(ALIASES) {
                if let Some(list) = string_list(cx, &meta)? {
                    set_once(cx, &mut out.aliases, &meta, ALIASES, list);
                }
            } else if known(UPCAST) {
                out.upcasts.extend(upcast_value(cx, &meta)?);
            } else if known(CRATE) {
                let example = "crate = \"my_crate::synckit\"";
                if let Some(lit) = string_value(cx, &meta, example)? {
                    match lit.parse::<syn::Path>() {
                        Ok(path) => set_once(cx, &mut out.krate, &meta, CRATE, path),
                        Err(_) => {
                            cx.error_spanned_by(&lit, format!("expected a path, like `{example}`"))
                        }
                    }
                }
            }
            Ok(())
        });
        if let Err(error) = result {
            cx.syn_error(error);
        }
    }
    out
}

/// Reads `= ["a", "b"]`; a wrong value is recorded in `cx`.
fn string_list(cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<Vec<LitStr>>> {
    let expr: Expr = meta.value()?.parse()?;
    let example = "aliases = [\"UserCreated\"]";
    let Expr::Array(array) = &expr else {
        cx.error_spanned_by(
            expr,
            format!("expected a list of strings, like `{example}`"),
        );
        return Ok(None);
    };
    let mut out = Vec::new();
    for element in &array.elems {
        match element {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Str(s), ..
            }) => out.push(s.clone()),
            other => cx.error_spanned_by(
                other,
                format!("expected a string literal, like `{example}`"),
            ),
        }
    }
    Ok(Some(out))
}

/// Reads `(v1 = "path", v2 = "path", ...)`: one step per key, the key
/// naming the version the step starts from. (One key per step, rather
/// than repeated `from = N, with = ".."` lists, keeps clippy's
/// `duplicated_attributes` quiet on users' types.)
fn upcast_value(cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Vec<Upcast>> {
    let example = "upcast(v1 = \"v1_to_v2\", v2 = \"v2_to_v3\")";
    if !meta.input.peek(syn::token::Paren) {
        cx.error_spanned_by(&meta.path, format!("expected the steps, like `{example}`"));
        skip_value(meta)?;
        return Ok(Vec::new());
    }
    let mut steps = Vec::new();
    meta.parse_nested_meta(|inner| {
        let key = inner.path.to_token_stream();
        let from = inner
            .path
            .get_ident()
            .map(ToString::to_string)
            .and_then(|k| k.strip_prefix('v').and_then(|n| n.parse::<u32>().ok()))
            .filter(|v| *v >= 1);
        let Some(from) = from else {
            cx.error_spanned_by(
                &inner.path,
                format!(
                    "expected `vN = \"function\"`, the step from schema version N to N + 1, like `{example}`"
                ),
            );
            skip_value(&inner)?;
            return Ok(());
        };
        if let Some(lit) = string_value(cx, &inner, "v1 = \"v1_to_v2\"")? {
            match lit.parse::<syn::Path>() {
                Ok(with) => steps.push(Upcast { at: key, from, with }),
                Err(_) => cx.error_spanned_by(
                    &lit,
                    format!("expected the path of a function, like `{example}`"),
                ),
            }
        }
        Ok(())
    })?;
    if steps.is_empty() {
        cx.error_spanned_by(
            &meta.path,
            format!("`upcast` needs at least one step: `{example}`"),
        );
    }
    Ok(steps)
}

/// Consumes the value of a key that is being rejected or ignored:
/// `key = expr`, `key(...)`, or nothing.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

/// The container-level serde keys that shape an enum's representation.
#[derive(Default)]
pub(crate) struct SerdeContainer {
    /// The `rename_all` rule serde applies when deserializing.
    pub(crate) rename_all: Option<String>,
    pub(crate) tag: Option<String>,
    pub(crate) content: Option<String>,
    pub(crate) untagged: bool,
}

/// A key's string value, or the `deserialize` half of
/// `key(serialize = "...", deserialize = "...")`.
fn deserialize_name(meta: &ParseNestedMeta<'_>) -> syn::Result<Option<String>> {
    if meta.input.peek(syn::Token![=]) {
        return Ok(Some(meta.value()?.parse::<LitStr>()?.value()));
    }
    let mut found = None;
    if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| {
            if inner.path.is_ident("deserialize") {
                found = Some(inner.value()?.parse::<LitStr>()?.value());
            } else {
                skip_value(&inner)?;
            }
            Ok(())
        })?;
    }
    Ok(found)
}

/// Reads the serde keys that matter to synckit. Malformed serde attributes
/// are left for serde's own derive to report.
pub(crate) fn serde_container(attrs: &[Attribute]) -> SerdeContainer {
    let mut out = SerdeContainer::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename_all") {
                out.rename_all = deserialize_name(&meta)?;
            } else if meta.path.is_ident("tag") {
                out.tag = Some(meta.value()?.parse::<LitStr>()?.value());
            } else if meta.path.is_ident("content") {
                out.content = Some(meta.value()?.parse::<LitStr>()?.value());
            } else if meta.path.is_ident("untagged") {
                out.untagged = true;
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        });
    }
    out
}

/// The variant's `#[serde(rename)]` (deserialize side), if any.
pub(crate) fn serde_variant_rename(attrs: &[Attribute]) -> Option<String> {
    let mut out = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                out = deserialize_name(&meta)?;
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        });
    }
    out
}
