//! Field rules shared by the single-row endpoints, bulk loads and imports.

use std::fmt;

/// A value that breaks a rule, with the field named so a person can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

pub type FieldResult<T> = Result<T, FieldError>;

/// Longest value of a short text field (names, titles, cities, ids).
pub const MAX_SHORT: usize = 512;
/// Longest free text (notes, memory content).
pub const MAX_LONG: usize = 65_536;
/// Most entries in a list field (emails, phones, tags).
pub const MAX_LIST: usize = 64;

/// Trims a text field; an empty value becomes `None`.
pub fn text(field: &str, value: Option<String>, max: usize) -> FieldResult<Option<String>> {
    let Some(value) = value else { return Ok(None) };
    let trimmed = value.trim();
    if trimmed
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(FieldError::new(
            field,
            "contains a control character; remove it",
        ));
    }
    if trimmed.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// A required text field.
pub fn required_text(field: &str, value: Option<String>, max: usize) -> FieldResult<String> {
    text(field, value, max)?
        .ok_or_else(|| FieldError::new(field, "is required and must not be empty"))
}

/// A list of short texts: trimmed, empties dropped, duplicates removed
/// (first occurrence kept), bounded in count and length.
pub fn text_list(field: &str, values: Vec<String>) -> FieldResult<Vec<String>> {
    if values.len() > MAX_LIST {
        return Err(FieldError::new(
            field,
            format!("has more than {MAX_LIST} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        if let Some(v) = text(&format!("{field}[{i}]"), Some(value), MAX_SHORT)?
            && !out.contains(&v)
        {
            out.push(v);
        }
    }
    Ok(out)
}

/// Emails must be well-formed addresses; the domain is lower-cased (it is
/// case-insensitive), the local part kept as entered.
pub fn emails(values: Vec<String>) -> FieldResult<Vec<String>> {
    let values = text_list("emails", values)?;
    let mut out = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let parsed: email_address::EmailAddress = value.parse().map_err(|_| {
            FieldError::new(
                format!("emails[{i}]"),
                format!("`{value}` is not a valid email address"),
            )
        })?;
        let normal = format!("{}@{}", parsed.local_part(), parsed.domain().to_lowercase());
        if !out.contains(&normal) {
            out.push(normal);
        }
    }
    Ok(out)
}

/// The normalised form of a phone number: E.164 (`+46812345678`) when the
/// number parses (with `country`, an ISO 3166 alpha-2 code, as the region for
/// national formats), else its digits alone. A value with fewer than three
/// digits is not a phone number.
pub fn normalize_phone(field: &str, raw: &str, country: Option<&str>) -> FieldResult<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 3 || digits.len() > 20 {
        return Err(FieldError::new(
            field,
            format!("`{raw}` is not a phone number (it needs 3 to 20 digits)"),
        ));
    }
    let region = country.filter(|c| c.len() == 2).and_then(|c| {
        c.to_ascii_uppercase()
            .parse::<phonenumber::country::Id>()
            .ok()
    });
    match phonenumber::parse(region, raw) {
        Ok(number) if phonenumber::is_valid(&number) => {
            Ok(number.format().mode(phonenumber::Mode::E164).to_string())
        }
        _ => Ok(digits),
    }
}

/// Phones as entered, and beside them their normalised forms.
pub fn phones(
    values: Vec<String>,
    country: Option<&str>,
) -> FieldResult<(Vec<String>, Vec<String>)> {
    let values = text_list("phones", values)?;
    let normalized = values
        .iter()
        .enumerate()
        .map(|(i, raw)| normalize_phone(&format!("phones[{i}]"), raw, country))
        .collect::<FieldResult<Vec<_>>>()?;
    Ok((values, normalized))
}

/// `custom` and `metadata` hold a JSON object (or nothing).
pub fn object(field: &str, value: Option<serde_json::Value>) -> FieldResult<serde_json::Value> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(serde_json::Value::Object(Default::default())),
        Some(v @ serde_json::Value::Object(_)) => {
            if v.to_string().len() > MAX_LONG {
                return Err(FieldError::new(
                    field,
                    format!("is larger than {MAX_LONG} bytes"),
                ));
            }
            Ok(v)
        }
        Some(_) => Err(FieldError::new(field, "must be a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalise_to_e164_with_the_country_as_region() {
        assert_eq!(
            normalize_phone("p", "+46 8 123 456 78", None).unwrap(),
            "+46812345678"
        );
        assert_eq!(
            normalize_phone("p", "08-123 456 78", Some("se")).unwrap(),
            "+46812345678"
        );
        assert_eq!(
            normalize_phone("p", "(415) 555-2671", Some("US")).unwrap(),
            "+14155552671"
        );
        // unparseable without a region: digits are kept
        assert_eq!(
            normalize_phone("p", "08-12345678", None).unwrap(),
            "0812345678"
        );
        assert!(normalize_phone("p", "call me", None).is_err());
    }

    #[test]
    fn emails_are_validated_and_domains_lowercased() {
        assert_eq!(
            emails(vec![" Anna.B@Example.COM ".into()]).unwrap(),
            vec!["Anna.B@example.com"]
        );
        let err = emails(vec!["a@b.c".into(), "not-an-email".into()]).unwrap_err();
        assert_eq!(err.field, "emails[1]");
    }

    #[test]
    fn text_rules() {
        assert_eq!(text("f", Some("  ".into()), 10).unwrap(), None);
        assert!(text("f", Some("a\u{7}b".into()), 10).is_err());
        assert!(text("f", Some("x".repeat(11)), 10).is_err());
        assert_eq!(
            text_list("tags", vec!["a".into(), "a".into(), " ".into()]).unwrap(),
            vec!["a"]
        );
    }
}
