//! Email addresses: trimmed, lowercased and syntax-checked before they are stored or matched.

use std::fmt;

/// A syntactically valid, normalized (trimmed, lowercased) email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Normalizes and checks `raw`. The check is deliberately practical, not RFC 5322 in full:
    /// one `@`, a non-empty local part, a dotted domain of letters, digits and hyphens.
    pub fn parse(raw: &str) -> Result<Email, String> {
        let normalized = raw.trim().to_lowercase();
        if normalized.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let Some((local, domain)) = normalized.split_once('@') else {
            return Err("is not a valid email address (missing @)".into());
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| tld.chars().all(char::is_alphabetic) && tld.len() >= 2);
        if !local_ok || !domain_ok {
            return Err("is not a valid email address".into());
        }
        Ok(Email(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Free and personal mail providers: a lead from one of these is flagged `personal_email`.
pub const DEFAULT_PERSONAL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "qq.com",
    "163.com",
    "126.com",
    "yeah.net",
    "foxmail.com",
    "sina.com",
    "sina.cn",
    "sohu.com",
    "aliyun.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "mail.ru",
    "yandex.ru",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_spacing() {
        let e = Email::parse("  Wang.Zong@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "wang.zong@example.com");
        assert_eq!(e.domain(), "example.com");
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "",
            "no-at",
            "a@b",
            "a@@b.com",
            "@b.com",
            "a@.com",
            "a b@c.com",
            "a@b.c0m",
            "a..b@c.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn accepts_plus_and_unicode_domains() {
        assert!(Email::parse("a+tag@sub.example.co").is_ok());
        assert!(Email::parse("王@例子.中国").is_ok());
    }
}
