//! Phone numbers: parsed with the `phonenumber` crate (libphonenumber's metadata) and stored
//! in E.164, so `13812345678`, `+86 138 1234 5678` and `86-13812345678` are the same number.

use phonenumber::{Mode, country::Id};
use std::str::FromStr;

/// A valid phone number in E.164 form (`+8613812345678`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

/// Parses a region code such as `CN` or `US` for use as the default region.
pub fn parse_region(code: &str) -> Result<Id, String> {
    Id::from_str(&code.trim().to_uppercase())
        .map_err(|_| format!("`{code}` is not an ISO 3166 region code such as CN or US"))
}

impl Phone {
    /// Parses `raw` in the context of `default_region`. A number written with its country code
    /// but without `+` (`86-138…`, `0086 138…`) is recognized too, since people write them so.
    pub fn parse(raw: &str, default_region: Id) -> Result<Phone, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.len() > 40 {
            return Err("is not a valid phone number".into());
        }
        let allowed = |c: char| c.is_ascii_digit() || " +-().\u{3000}".contains(c) || c == 'x';
        if !trimmed.chars().all(allowed) {
            return Err("is not a valid phone number".into());
        }
        let mut candidates = vec![trimmed.to_owned()];
        let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
        if !trimmed.starts_with('+') {
            let international = digits.strip_prefix("00").unwrap_or(&digits);
            candidates.push(format!("+{international}"));
        }
        for candidate in &candidates {
            if let Ok(number) = phonenumber::parse(Some(default_region), candidate)
                && phonenumber::is_valid(&number)
            {
                return Ok(Phone(number.format().mode(Mode::E164).to_string()));
            }
        }
        Err("is not a valid phone number for its region".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cn() -> Id {
        parse_region("cn").unwrap()
    }

    #[test]
    fn chinese_mobile_in_many_spellings_is_one_number() {
        for raw in [
            "13812345678",
            "+86 138 1234 5678",
            "86-13812345678",
            "0086 138-1234-5678",
            "(+86) 138 1234 5678",
        ] {
            assert_eq!(
                Phone::parse(raw, cn()).unwrap().as_str(),
                "+8613812345678",
                "{raw}"
            );
        }
    }

    #[test]
    fn other_regions_keep_their_country_code() {
        assert_eq!(
            Phone::parse("+1 (415) 555-2671", cn()).unwrap().as_str(),
            "+14155552671"
        );
        let us = parse_region("US").unwrap();
        assert_eq!(
            Phone::parse("415-555-2671", us).unwrap().as_str(),
            "+14155552671"
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "abc",
            "123",
            "138-1234-567x8-9999999999999999999",
            "tel:138",
        ] {
            assert!(Phone::parse(bad, cn()).is_err(), "{bad}");
        }
        assert!(parse_region("ZZZ").is_err());
    }
}
