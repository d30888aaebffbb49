//! serde's `rename_all` rules, applied to variant names, so that synckit
//! finds a variant under the name serde writes.

/// Applies a `rename_all` rule to a variant name; `None` for a rule serde
/// does not know (serde itself reports that).
pub(crate) fn rename_variant(rule: &str, variant: &str) -> Option<String> {
    let snake = || {
        let mut out = String::new();
        for (i, ch) in variant.char_indices() {
            if i > 0 && ch.is_uppercase() {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        }
        out
    };
    Some(match rule {
        "lowercase" => variant.to_ascii_lowercase(),
        "UPPERCASE" => variant.to_ascii_uppercase(),
        "PascalCase" => variant.to_owned(),
        "camelCase" => {
            let mut chars = variant.chars();
            match chars.next() {
                Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        }
        "snake_case" => snake(),
        "SCREAMING_SNAKE_CASE" => snake().to_ascii_uppercase(),
        "kebab-case" => snake().replace('_', "-"),
        "SCREAMING-KEBAB-CASE" => snake().to_ascii_uppercase().replace('_', "-"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::rename_variant;

    #[test]
    fn matches_serde_rules() {
        let cases = [
            ("lowercase", "UserCreated", "usercreated"),
            ("UPPERCASE", "UserCreated", "USERCREATED"),
            ("PascalCase", "UserCreated", "UserCreated"),
            ("camelCase", "UserCreated", "userCreated"),
            ("snake_case", "UserCreated", "user_created"),
            ("SCREAMING_SNAKE_CASE", "UserCreated", "USER_CREATED"),
            ("kebab-case", "UserCreated", "user-created"),
            ("SCREAMING-KEBAB-CASE", "UserCreated", "USER-CREATED"),
        ];
        for (rule, input, expected) in cases {
            assert_eq!(
                rename_variant(rule, input).as_deref(),
                Some(expected),
                "{rule}"
            );
        }
        assert_eq!(rename_variant("Title Case", "A"), None);
    }
}
