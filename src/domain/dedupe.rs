//! Likely-duplicate detection: the normalized keys under which two leads that are probably the
//! same person meet (same name and company; same company email domain and name), and why.

use super::lead::Lead;

/// Why two leads are listed as likely duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateReason {
    SameNameAndCompany,
    SameDomainAndName,
}

impl DuplicateReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DuplicateReason::SameNameAndCompany => "same_name_and_company",
            DuplicateReason::SameDomainAndName => "same_email_domain_and_name",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            DuplicateReason::SameNameAndCompany => "nc",
            DuplicateReason::SameDomainAndName => "dn",
        }
    }

    /// The reason a stored key was made for.
    pub fn of_key(key: &str) -> Option<DuplicateReason> {
        match key.split_once(':')?.0 {
            "nc" => Some(DuplicateReason::SameNameAndCompany),
            "dn" => Some(DuplicateReason::SameDomainAndName),
            _ => None,
        }
    }
}

/// Legal-form words that do not tell two companies apart ("Acme Ltd" is "ACME").
const COMPANY_SUFFIXES: &[&str] = &[
    "股份有限公司",
    "有限责任公司",
    "有限公司",
    "集团",
    "公司",
    "incorporated",
    "corporation",
    "limited",
    "company",
    "gmbh",
    "corp",
    "inc",
    "llc",
    "ltd",
    "plc",
    "co",
    "sa",
    "ag",
    "bv",
];

/// A person's name for comparison: lowercase, letters and digits only ("Wang  Xiaoming" and
/// "wang xiaoming" meet; "王小明" stays itself).
pub fn normalize_name(name: &str) -> Option<String> {
    let n: String = name
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    (!n.is_empty()).then_some(n)
}

/// A company name for comparison: lowercase, punctuation and spacing dropped, trailing legal
/// forms removed ("Acme, Inc." and "ACME" meet; "示例科技有限公司" and "示例科技" meet).
pub fn normalize_company(company: &str) -> Option<String> {
    let words: Vec<String> = company
        .split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == '(' || c == ')')
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let mut words = words;
    while words.len() > 1
        && words
            .last()
            .is_some_and(|w| COMPANY_SUFFIXES.contains(&w.as_str()))
    {
        words.pop();
    }
    let mut joined = words.concat();
    // CJK names carry their legal form without a space; the list puts the longest first.
    if let Some(suffix) = COMPANY_SUFFIXES
        .iter()
        .find(|s| !s.is_ascii() && joined.ends_with(*s) && joined.len() > s.len())
    {
        joined.truncate(joined.len() - suffix.len());
    }
    (!joined.is_empty()).then_some(joined)
}

/// The likely-duplicate keys of a lead. Personal mail domains say nothing about a company, so
/// the domain key is only made for company addresses. A field read here must also be compared
/// in [`same_duplicate_keys`], or a write that changes only it keeps the old keys.
pub fn duplicate_keys(lead: &Lead) -> Vec<String> {
    let mut keys = Vec::new();
    let Some(name) = lead.name.as_deref().and_then(normalize_name) else {
        return keys;
    };
    if let Some(company) = lead.company.as_deref().and_then(normalize_company) {
        keys.push(format!(
            "{}:{name}|{company}",
            DuplicateReason::SameNameAndCompany.prefix()
        ));
    }
    if !lead.flags.personal_email
        && !lead.flags.invalid_email
        && let Some((_, domain)) = lead.email.as_deref().and_then(|e| e.rsplit_once('@'))
    {
        keys.push(format!(
            "{}:{domain}|{name}",
            DuplicateReason::SameDomainAndName.prefix()
        ));
    }
    keys
}

/// Whether `a` and `b` have the same likely-duplicate keys because every field the keys are
/// made of is the same: a write that changes none of them (a new score, a new owner) need not
/// build the keys twice to find nothing to move.
pub fn same_duplicate_keys(a: &Lead, b: &Lead) -> bool {
    a.name == b.name
        && a.company == b.company
        && a.email == b.email
        && a.flags.personal_email == b.flags.personal_email
        && a.flags.invalid_email == b.flags.invalid_email
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lead::NewLead;
    use uuid::Uuid;

    fn lead(name: &str, company: Option<&str>, email: Option<&str>) -> Lead {
        NewLead {
            name: Some(name.into()),
            company: company.map(Into::into),
            email: email.map(Into::into),
            ..Default::default()
        }
        .into_lead(Uuid::nil(), 0)
    }

    #[test]
    fn names_meet_across_case_and_spacing() {
        assert_eq!(
            normalize_name("Wang  Xiaoming"),
            normalize_name("wang xiaoming")
        );
        assert_eq!(normalize_name("王小明").as_deref(), Some("王小明"));
        assert_eq!(normalize_name(" - "), None);
    }

    #[test]
    fn companies_meet_without_legal_forms() {
        assert_eq!(normalize_company("Acme, Inc.").as_deref(), Some("acme"));
        assert_eq!(normalize_company("ACME").as_deref(), Some("acme"));
        assert_eq!(normalize_company("Acme Co Ltd").as_deref(), Some("acme"));
        assert_eq!(
            normalize_company("示例科技有限公司").as_deref(),
            Some("示例科技")
        );
        assert_eq!(
            normalize_company("示例科技股份有限公司").as_deref(),
            Some("示例科技")
        );
        // A company called only by its legal form keeps it.
        assert_eq!(normalize_company("Company").as_deref(), Some("company"));
        assert!(normalize_company("有限公司").is_some());
        assert_eq!(
            normalize_company("示例科技集团有限公司").as_deref(),
            Some("示例科技集团")
        );
    }

    #[test]
    fn keys_for_name_company_and_company_domain() {
        let keys = duplicate_keys(&lead("Ann Lee", Some("Acme Ltd"), Some("ann@acme.com")));
        assert_eq!(keys, vec!["nc:annlee|acme", "dn:acme.com|annlee"]);
        assert_eq!(
            DuplicateReason::of_key(&keys[1]),
            Some(DuplicateReason::SameDomainAndName)
        );
    }

    #[test]
    fn no_keys_without_a_name_and_no_domain_key_for_personal_mail() {
        let mut l = lead("Ann", None, Some("ann@gmail.com"));
        l.flags.personal_email = true;
        assert!(duplicate_keys(&l).is_empty());
        let mut nameless = lead("x", Some("Acme"), None);
        nameless.name = None;
        assert!(duplicate_keys(&nameless).is_empty());
    }

    #[test]
    fn keys_are_the_same_when_their_fields_are() {
        let a = lead("Wang Xiaoming", Some("Acme"), Some("wang@acme.cn"));
        let mut b = a.clone();
        b.score.total = 80;
        b.owner_id = Some(Uuid::from_u128(7));
        assert!(same_duplicate_keys(&a, &b));
        assert_eq!(duplicate_keys(&a), duplicate_keys(&b));
        let changes: [fn(&mut Lead); 5] = [
            |l| l.name = Some("Li Lei".into()),
            |l| l.company = Some("Initech".into()),
            |l| l.email = Some("wang@initech.cn".into()),
            |l| l.flags.personal_email = true,
            |l| l.flags.invalid_email = true,
        ];
        for change in changes {
            let mut c = a.clone();
            change(&mut c);
            assert!(!same_duplicate_keys(&a, &c));
            assert_ne!(duplicate_keys(&a), duplicate_keys(&c));
        }
    }
}
