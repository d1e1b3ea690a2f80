//! Timestamps as stored (milliseconds since the Unix epoch, UTC) and as shown (RFC 3339).

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};

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
    let t = DateTime::parse_from_rfc3339(s.trim())
        .map_err(|_| "must be an RFC 3339 timestamp such as 2026-11-23T08:00:00Z".to_owned())?
        .with_timezone(&Utc);
    // Every time given back is UTC, so one whose offset carries it out of years 0000–9999
    // would have no RFC 3339 form.
    if !(0..=9999).contains(&t.year()) {
        return Err("must fall within the years 0000 to 9999 in UTC".to_owned());
    }
    Ok(t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_normalizes_offsets() {
        let ms = parse_rfc3339("2026-11-23T16:00:00+08:00").unwrap();
        assert_eq!(to_rfc3339(ms), "2026-11-23T08:00:00.000Z");
        assert!(parse_rfc3339("yesterday").is_err());
        assert!(parse_rfc3339("0000-01-01T00:00:00+01:00").is_err());
        assert!(parse_rfc3339("9999-12-31T23:30:00-01:00").is_err());
        let first = parse_rfc3339("0000-01-01T00:00:00Z").unwrap();
        assert_eq!(to_rfc3339(first), "0000-01-01T00:00:00.000Z");
        let last = parse_rfc3339("9999-12-31T23:59:59.999Z").unwrap();
        assert_eq!(to_rfc3339(last), "9999-12-31T23:59:59.999Z");
    }
}
