//! How records are encoded on disk: one format-version byte, then postcard. A record whose
//! version byte is older than the current one decodes through that type's migration, so a
//! file written by an older release keeps opening (golden files in `tests/golden/` pin this).

use crate::domain::activity::{Activity, LeadEvent};
use crate::domain::lead::Lead;
use crate::domain::user::{Token, User};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A type stored as a value in a redb table.
pub trait Record: Serialize + DeserializeOwned {
    /// Human name for errors.
    const NAME: &'static str;
    /// The version byte written in front of new records of this type.
    const VERSION: u8;

    /// Decodes a record written with an older `version`. Each type lists its migrations here
    /// when its layout changes; until then, older versions do not exist.
    fn migrate(version: u8, _body: &[u8]) -> Result<Self, CodecError> {
        Err(CodecError::UnknownVersion {
            record: Self::NAME,
            version,
        })
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("empty {record} record")]
    Empty { record: &'static str },
    #[error("{record} record has format version {version}, which this release cannot read")]
    UnknownVersion { record: &'static str, version: u8 },
    #[error("{record} record is corrupt: {reason}")]
    Corrupt {
        record: &'static str,
        reason: String,
    },
}

pub fn encode<T: Record>(value: &T) -> Vec<u8> {
    let out = vec![T::VERSION];
    // postcard into a Vec only fails for types serde cannot describe, which ours are not;
    // an empty body would then fail loudly on decode rather than pass silently.
    match postcard::to_extend(value, out) {
        Ok(v) => v,
        Err(_) => vec![T::VERSION],
    }
}

pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, CodecError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(CodecError::Empty { record: T::NAME });
    };
    if version == T::VERSION {
        postcard::from_bytes(body).map_err(|e| CodecError::Corrupt {
            record: T::NAME,
            reason: e.to_string(),
        })
    } else {
        T::migrate(version, body)
    }
}

impl Record for Lead {
    const NAME: &'static str = "lead";
    const VERSION: u8 = 1;
}

impl Record for Activity {
    const NAME: &'static str = "activity";
    const VERSION: u8 = 1;
}

impl Record for LeadEvent {
    const NAME: &'static str = "lead event";
    const VERSION: u8 = 1;
}

impl Record for User {
    const NAME: &'static str = "user";
    const VERSION: u8 = 1;
}

impl Record for Token {
    const NAME: &'static str = "token";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::form::Form {
    const NAME: &'static str = "form";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::visitor::Visitor {
    const NAME: &'static str = "visitor";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::visitor::PageView {
    const NAME: &'static str = "page view";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::stats::ActivityStats {
    const NAME: &'static str = "activity stats";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::score::ScoreDetails {
    const NAME: &'static str = "score details";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::work::Pool {
    const NAME: &'static str = "pool";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::work::Task {
    const NAME: &'static str = "task";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::work::Timer {
    const NAME: &'static str = "timer";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::work::Notification {
    const NAME: &'static str = "notification";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::sla::SlaState {
    const NAME: &'static str = "sla state";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::sequence::Enrollment {
    const NAME: &'static str = "enrollment";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::mail::OutMail {
    const NAME: &'static str = "mail";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::webhook::Webhook {
    const NAME: &'static str = "webhook";
    const VERSION: u8 = 1;
}

impl Record for crate::domain::webhook::Delivery {
    const NAME: &'static str = "delivery";
    const VERSION: u8 = 1;
}

impl Record for super::ChangeEntry {
    const NAME: &'static str = "change";
    const VERSION: u8 = 1;
}

impl Record for super::IdempotentResponse {
    const NAME: &'static str = "idempotent response";
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::user::TokenKind;
    use uuid::Uuid;

    #[test]
    fn round_trip_and_version_checks() {
        let t = Token {
            user_id: Uuid::now_v7(),
            kind: TokenKind::Api,
            created_at: 5,
            expires_at: None,
        };
        let bytes = encode(&t);
        assert_eq!(bytes[0], Token::VERSION);
        assert_eq!(decode::<Token>(&bytes).unwrap(), t);
        let mut future = bytes.clone();
        future[0] = 99;
        assert!(matches!(
            decode::<Token>(&future),
            Err(CodecError::UnknownVersion { version: 99, .. })
        ));
        assert!(matches!(
            decode::<Token>(&[]),
            Err(CodecError::Empty { .. })
        ));
        assert!(matches!(
            decode::<Token>(&bytes[..3]),
            Err(CodecError::Corrupt { .. })
        ));
    }
}
