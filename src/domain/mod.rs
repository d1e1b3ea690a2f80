//! Pure domain types and rules: leads, activities, users, and the value types that parse and
//! normalize what clients send (emails, phones, stages). No I/O and no clock reads here.

pub mod activity;
pub mod channel;
pub mod dedupe;
pub mod email;
pub mod form;
pub mod hours;
pub mod lead;
pub mod mail;
pub mod phone;
pub mod routing;
pub mod score;
pub mod sequence;
pub mod sla;
pub mod speed;
pub mod stats;
pub mod time;
pub mod user;
pub mod visitor;
pub mod webhook;
pub mod work;

use serde::{Deserialize, Deserializer, Serialize};

/// A problem with one field of client input, named so a frontend can point at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Collects field errors while checking a whole input, so the client hears about all of them.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<FieldError>);

impl Problems {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was reported, else every problem.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

/// For `#[serde(deserialize_with)]` in merge patches: tells an absent field (`None`, via
/// `#[serde(default)]`) from an explicit `null` (`Some(None)`).
pub(crate) fn patch_field<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// For a merge-patch member that has no empty value (a lead's stage, a user's role): present
/// means `Some`, and `null` — which RFC 7396 reads as "remove" — is refused as a wrong type
/// naming the member, instead of being taken for "leave alone".
pub(crate) fn patch_required<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<T>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom(
            "may not be null: it has no empty value; leave it out to keep it",
        )),
    }
}

/// Checks a free-text field: trimmed, bounded, no control characters. Empty becomes `None`.
pub fn clean_text(
    problems: &mut Problems,
    field: &str,
    value: Option<String>,
    max_chars: usize,
) -> Option<String> {
    let value = value?;
    let collapsed = value.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return None;
    }
    if collapsed.chars().count() > max_chars {
        problems.push(field, format!("must be at most {max_chars} characters"));
        return None;
    }
    if collapsed.chars().any(char::is_control) {
        problems.push(field, "must not contain control characters");
        return None;
    }
    Some(collapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_collapses_spacing_and_drops_empty() {
        let mut p = Problems::default();
        assert_eq!(
            clean_text(&mut p, "company", Some("  Acme   Ltd \t".into()), 100),
            Some("Acme Ltd".into())
        );
        assert_eq!(clean_text(&mut p, "company", Some("   ".into()), 100), None);
        assert!(p.is_empty());
    }

    #[test]
    fn clean_text_reports_too_long() {
        let mut p = Problems::default();
        assert_eq!(clean_text(&mut p, "name", Some("abcdef".into()), 3), None);
        assert_eq!(p.0[0].field, "name");
    }
}
