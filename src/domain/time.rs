//! Timestamps as stored (milliseconds since the Unix epoch, UTC) and as shown (RFC 3339).

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch, UTC: the one time representation stored on disk.
pub type Millis = i64;

pub fn to_rfc3339(ms: Millis) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

/// For `#[serde(serialize_with)]`: a stored time shown as RFC 3339, as the API shows every time.
pub fn serialize_rfc3339<S: serde::Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_rfc3339(*ms))
}

pub fn opt_rfc3339(ms: Option<Millis>) -> Option<String> {
    ms.map(to_rfc3339)
}

/// Parses an RFC 3339 timestamp (any offset) into stored milliseconds.
pub fn parse_rfc3339(s: &str) -> Result<Millis, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
        .map_err(|_| "must be an RFC 3339 timestamp such as 2026-11-23T08:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_normalizes_offsets() {
        let ms = parse_rfc3339("2026-11-23T16:00:00+08:00").unwrap();
        assert_eq!(to_rfc3339(ms), "2026-11-23T08:00:00.000Z");
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
