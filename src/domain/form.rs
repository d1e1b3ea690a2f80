//! Web forms: the stored form definition, what an admin may send to create or change one, and
//! how a public submission is read into a lead capture (required fields, hidden tracking fields,
//! the honeypot and the render token).

use super::lead::{LeadInput, Utm};
use super::time::{Millis, to_rfc3339};
use super::{FieldError, Problems, clean_text, patch_field, patch_required};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// Lead fields a form may ask for directly; any other field name becomes a custom field.
pub const LEAD_FIELDS: &[&str] = &[
    "name",
    "email",
    "phone",
    "company",
    "title",
    "industry",
    "company_size",
    "region",
    "country",
];

/// The honeypot field: invisible to people, filled by bots.
pub const HONEYPOT: &str = "_hp";
/// The signed render time the hosted page carries.
pub const RENDER_TOKEN: &str = "_ts";
const MAX_FIELDS: usize = 40;
const MAX_ORIGINS: usize = 20;
const MAX_VALUE_CHARS: usize = 5_000;

/// One input of a form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FormField {
    /// A lead field (name, email, phone, company, title, industry, company_size, region,
    /// country) or a custom field name (a-z, 0-9, _).
    pub name: String,
    /// What the page shows, in the form's language.
    pub label: String,
    #[serde(default)]
    pub required: bool,
}

/// A form as stored. Field order is part of the stored format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Form {
    pub id: Uuid,
    pub key: String,
    pub name: String,
    pub language: String,
    pub fields: Vec<FormField>,
    pub redirect_url: Option<String>,
    pub campaign_id: Option<Uuid>,
    pub allowed_origins: Vec<String>,
    pub source: String,
    pub activity_kind: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: u64,
}

/// The body of `POST /v1/forms`, and (every field optional) of `PATCH /v1/forms/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FormInput {
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    /// The public key in `/f/{key}`; made up when absent (3 to 40 of a-z, 0-9, -).
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub key: Option<String>,
    /// BCP 47 language of the page, e.g. `en` (default) or `zh-CN`.
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub language: Option<String>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub fields: Option<Vec<FormField>>,
    /// Where a browser goes after a successful submit; absent or `null`: a thank-you page.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub redirect_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Uuid>)]
    pub campaign_id: Option<Option<Uuid>>,
    /// Origins (`https://www.example.com`) whose pages may post this form from the browser.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_origins: Option<Option<Vec<String>>>,
    /// The source given to leads from this form (default `web_form`).
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub source: Option<String>,
    /// The activity kind a submission records (default `form_submit`; e.g. `demo_request`).
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub activity_kind: Option<String>,
}

/// A form as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FormView {
    pub id: Uuid,
    pub key: String,
    pub name: String,
    pub language: String,
    pub fields: Vec<FormField>,
    pub redirect_url: Option<String>,
    pub campaign_id: Option<Uuid>,
    pub allowed_origins: Vec<String>,
    pub source: String,
    pub activity_kind: String,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
    /// The hosted page's path.
    pub url: String,
}

impl From<&Form> for FormView {
    fn from(f: &Form) -> Self {
        FormView {
            id: f.id,
            key: f.key.clone(),
            name: f.name.clone(),
            language: f.language.clone(),
            fields: f.fields.clone(),
            redirect_url: f.redirect_url.clone(),
            campaign_id: f.campaign_id,
            allowed_origins: f.allowed_origins.clone(),
            source: f.source.clone(),
            activity_kind: f.activity_kind.clone(),
            created_at: to_rfc3339(f.created_at),
            updated_at: to_rfc3339(f.updated_at),
            version: f.version,
            url: format!("/f/{}", f.key),
        }
    }
}

fn valid_key(k: &str) -> bool {
    (3..=40).contains(&k.len())
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_field_name(n: &str) -> bool {
    (1..=40).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !n.starts_with('_')
        && !n.starts_with("utm_")
}

/// An absolute http(s) URL with a host.
fn http_url(s: &str) -> Option<url::Url> {
    let u = url::Url::parse(s).ok()?;
    (matches!(u.scheme(), "http" | "https") && u.host_str().is_some()).then_some(u)
}

/// `https://www.example.com` from what an admin typed; `None` if it is not an origin.
pub fn normalize_origin(s: &str) -> Option<String> {
    let u = http_url(s.trim())?;
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
        return None;
    }
    Some(u.origin().ascii_serialization())
}

fn check_fields(p: &mut Problems, fields: &[FormField]) {
    if fields.is_empty() || fields.len() > MAX_FIELDS {
        p.push("fields", format!("give 1 to {MAX_FIELDS} fields"));
    }
    let mut seen = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        if !valid_field_name(&f.name) {
            p.push(
                format!("fields[{i}].name"),
                "must be a lead field or 1 to 40 of a-z, 0-9, _ (not starting with _ or utm_)",
            );
        }
        if seen.contains(&f.name) {
            p.push(format!("fields[{i}].name"), "appears twice");
        }
        seen.push(f.name.clone());
        if f.label.trim().is_empty() || f.label.chars().count() > 200 {
            p.push(format!("fields[{i}].label"), "must be 1 to 200 characters");
        }
    }
    if !fields
        .iter()
        .any(|f| matches!(f.name.as_str(), "name" | "email" | "phone"))
    {
        p.push(
            "fields",
            "a form needs a name, email or phone field, or its leads could not be told apart",
        );
    }
}

impl FormInput {
    /// Checks a create (`base` = None) or a patch applied to `base`, returning the form it
    /// describes. `id`, `now` and a made-up `key` come from the caller.
    pub fn apply(
        self,
        base: Option<&Form>,
        id: Uuid,
        fresh_key: &str,
        now: Millis,
    ) -> Result<Form, Vec<FieldError>> {
        let mut p = Problems::default();
        let name = match (clean_text(&mut p, "name", self.name, 200), base) {
            (Some(n), _) => n,
            (None, Some(b)) => b.name.clone(),
            (None, None) => {
                p.push("name", "required");
                String::new()
            }
        };
        let key = match (self.key.map(|k| k.trim().to_lowercase()), base) {
            (Some(k), _) if valid_key(&k) => k,
            (Some(_), _) => {
                p.push("key", "must be 3 to 40 of a-z, 0-9 and -");
                String::new()
            }
            (None, Some(b)) => b.key.clone(),
            (None, None) => fresh_key.to_owned(),
        };
        let language = match self.language.map(|l| l.trim().to_owned()) {
            Some(l)
                if (2..=20).contains(&l.len())
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                l
            }
            Some(_) => {
                p.push("language", "must be a language tag such as en or zh-CN");
                String::new()
            }
            None => base.map_or_else(|| "en".to_owned(), |b| b.language.clone()),
        };
        let fields = match (self.fields, base) {
            (Some(f), _) => {
                let f: Vec<FormField> = f
                    .into_iter()
                    .map(|f| FormField {
                        name: f.name.trim().to_lowercase(),
                        label: f.label.trim().to_owned(),
                        required: f.required,
                    })
                    .collect();
                check_fields(&mut p, &f);
                f
            }
            (None, Some(b)) => b.fields.clone(),
            (None, None) => {
                p.push("fields", "required");
                Vec::new()
            }
        };
        let redirect_url = match self
            .redirect_url
            .map(|u| u.unwrap_or_default().trim().to_owned())
        {
            Some(u) if u.is_empty() => None,
            Some(u) if http_url(&u).is_some() => Some(u),
            Some(_) => {
                p.push("redirect_url", "must be an absolute http(s) URL");
                None
            }
            None => base.and_then(|b| b.redirect_url.clone()),
        };
        let allowed_origins = match self.allowed_origins.map(Option::unwrap_or_default) {
            Some(list) => {
                if list.len() > MAX_ORIGINS {
                    p.push("allowed_origins", format!("at most {MAX_ORIGINS} origins"));
                }
                let mut out = Vec::new();
                for (i, o) in list.iter().enumerate() {
                    match normalize_origin(o) {
                        Some(o) if !out.contains(&o) => out.push(o),
                        Some(_) => {}
                        None => p.push(
                            format!("allowed_origins[{i}]"),
                            "must be an origin such as https://www.example.com (no path)",
                        ),
                    }
                }
                out
            }
            None => base.map(|b| b.allowed_origins.clone()).unwrap_or_default(),
        };
        let source = match clean_text(&mut p, "source", self.source, 100) {
            Some(s) => s.to_lowercase(),
            None => base.map_or_else(|| "web_form".to_owned(), |b| b.source.clone()),
        };
        let activity_kind = match self.activity_kind.map(|k| k.trim().to_lowercase()) {
            Some(k) if super::activity::valid_kind(&k) => k,
            Some(_) => {
                p.push(
                    "activity_kind",
                    "must be 1 to 40 of a-z, 0-9, _ or . (e.g. form_submit, demo_request)",
                );
                String::new()
            }
            None => base.map_or_else(|| "form_submit".to_owned(), |b| b.activity_kind.clone()),
        };
        let form = Form {
            id: base.map_or(id, |b| b.id),
            key,
            name,
            language,
            fields,
            redirect_url,
            campaign_id: match self.campaign_id {
                Some(c) => c,
                None => base.and_then(|b| b.campaign_id),
            },
            allowed_origins,
            source,
            activity_kind,
            created_at: base.map_or(now, |b| b.created_at),
            updated_at: now,
            version: base.map_or(1, |b| b.version + 1),
        };
        p.finish(form)
    }
}

/// A public submission, read against its form. Values the visitor typed are kept as sent.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    /// The lead fields, ready for normal lead validation.
    pub lead: LeadInput,
    /// Every value of the form's own fields, as submitted (kept on the activity).
    pub raw: Map<String, Value>,
    pub visitor_id: Option<String>,
    /// The page the form was on, and the referrer that brought the visitor to the site.
    pub page: Option<String>,
    pub referrer: Option<String>,
    /// The honeypot was filled.
    pub honeypot: bool,
    /// The render token, if the page carried one.
    pub render_token: Option<String>,
}

fn take(values: &mut BTreeMap<String, String>, key: &str) -> Option<String> {
    values
        .remove(key)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// UTM parameters from a page URL's query (`utm_source=…`).
pub fn utm_from_url(page: &str) -> Utm {
    let mut utm = Utm::default();
    if let Ok(u) = url::Url::parse(page) {
        for (k, v) in u.query_pairs() {
            let v = Some(v.into_owned()).filter(|v| !v.trim().is_empty());
            match k.as_ref() {
                "utm_source" => utm.source = utm.source.take().or(v),
                "utm_medium" => utm.medium = utm.medium.take().or(v),
                "utm_campaign" => utm.campaign = utm.campaign.take().or(v),
                "utm_term" => utm.term = utm.term.take().or(v),
                "utm_content" => utm.content = utm.content.take().or(v),
                _ => {}
            }
        }
    }
    utm
}

impl Form {
    /// Reads submitted values: required fields present, values bounded; hidden tracking fields
    /// (`_vid`, `_page`, `_ref`, `utm_*`) and the spam signals set aside. Unknown names are
    /// ignored so a site can post extra inputs without breaking the form.
    pub fn read_submission(
        &self,
        mut values: BTreeMap<String, String>,
    ) -> Result<Submission, Vec<FieldError>> {
        let mut p = Problems::default();
        let mut sub = Submission {
            honeypot: take(&mut values, HONEYPOT).is_some(),
            render_token: take(&mut values, RENDER_TOKEN),
            visitor_id: take(&mut values, "_vid"),
            page: take(&mut values, "_page"),
            referrer: take(&mut values, "_ref"),
            ..Default::default()
        };
        let mut utm = Utm {
            source: take(&mut values, "utm_source"),
            medium: take(&mut values, "utm_medium"),
            campaign: take(&mut values, "utm_campaign"),
            term: take(&mut values, "utm_term"),
            content: take(&mut values, "utm_content"),
        };
        if let Some(page) = &sub.page {
            let from_page = utm_from_url(page);
            utm.source = utm.source.or(from_page.source);
            utm.medium = utm.medium.or(from_page.medium);
            utm.campaign = utm.campaign.or(from_page.campaign);
            utm.term = utm.term.or(from_page.term);
            utm.content = utm.content.or(from_page.content);
        }
        let mut custom = Map::new();
        for f in &self.fields {
            let value = values.remove(&f.name).unwrap_or_default();
            sub.raw.insert(f.name.clone(), Value::String(value.clone()));
            let value = value.trim();
            if value.is_empty() {
                if f.required {
                    p.push(f.name.clone(), "required");
                }
                continue;
            }
            if value.chars().count() > MAX_VALUE_CHARS {
                p.push(
                    f.name.clone(),
                    format!("must be at most {MAX_VALUE_CHARS} characters"),
                );
                continue;
            }
            let v = Some(value.to_owned());
            let lead = &mut sub.lead;
            match f.name.as_str() {
                "name" => lead.name = v,
                "email" => lead.email = v,
                "phone" => lead.phone = v,
                "company" => lead.company = v,
                "title" => lead.title = v,
                "industry" => lead.industry = v,
                "region" => lead.region = v,
                "country" => lead.country = v,
                "company_size" => match value.replace([',', ' '], "").parse::<u32>() {
                    Ok(n) => lead.company_size = Some(n),
                    Err(_) => p.push("company_size", "must be a whole number"),
                },
                other => {
                    custom.insert(other.to_owned(), Value::String(value.to_owned()));
                }
            }
        }
        let any_utm = utm.source.is_some() || utm.medium.is_some() || utm.campaign.is_some();
        sub.lead.utm = any_utm.then_some(utm);
        sub.lead.source = Some(self.source.clone());
        sub.lead.campaign_id = self.campaign_id;
        if !custom.is_empty() {
            sub.lead.fields = Some(custom);
        }
        if let Some(vid) = &sub.visitor_id
            && !valid_visitor_id(vid)
        {
            sub.visitor_id = None;
        }
        p.finish(sub)
    }
}

/// Visitor ids come from our script: 8 to 64 of a-z, A-Z, 0-9, - and _.
pub fn valid_visitor_id(v: &str) -> bool {
    (8..=64).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(fields: serde_json::Value) -> FormInput {
        serde_json::from_value(serde_json::json!({"name": "Trial", "fields": fields})).unwrap()
    }

    fn trial() -> Form {
        input(serde_json::json!([
            {"name": "name", "label": "Name", "required": true},
            {"name": "email", "label": "Email", "required": true},
            {"name": "budget", "label": "Budget"}
        ]))
        .apply(None, Uuid::nil(), "k3y", 5)
        .unwrap()
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_new_form_gets_defaults() {
        let f = trial();
        assert_eq!(f.key, "k3y");
        assert_eq!(f.language, "en");
        assert_eq!(f.source, "web_form");
        assert_eq!(f.activity_kind, "form_submit");
        assert_eq!(f.version, 1);
    }

    #[test]
    fn bad_definitions_name_their_field() {
        let e = FormInput {
            key: Some("A B".into()),
            redirect_url: Some(Some("/thanks".into())),
            allowed_origins: Some(Some(vec![
                "https://ok.example".into(),
                "https://x.example/path".into(),
            ])),
            fields: Some(vec![FormField {
                name: "_vid".into(),
                label: "".into(),
                required: false,
            }]),
            ..Default::default()
        }
        .apply(None, Uuid::nil(), "k", 0)
        .unwrap_err();
        let fields: Vec<_> = e.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "name",
            "key",
            "redirect_url",
            "allowed_origins[1]",
            "fields[0].name",
            "fields[0].label",
            "fields",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn origins_are_normalized() {
        assert_eq!(
            normalize_origin("HTTPS://WWW.Example.com/").as_deref(),
            Some("https://www.example.com")
        );
        assert_eq!(
            normalize_origin("http://127.0.0.1:8081").as_deref(),
            Some("http://127.0.0.1:8081")
        );
        assert_eq!(normalize_origin("www.example.com"), None);
    }

    #[test]
    fn a_patch_keeps_what_it_does_not_name() {
        let base = trial();
        let patched = FormInput {
            redirect_url: Some(Some("https://example.com/thanks".into())),
            campaign_id: Some(Some(Uuid::max())),
            allowed_origins: Some(Some(vec!["https://a.example".into()])),
            ..Default::default()
        }
        .apply(Some(&base), Uuid::max(), "other", 9)
        .unwrap();
        assert_eq!(patched.id, base.id);
        assert_eq!(patched.key, "k3y");
        assert_eq!(patched.fields, base.fields);
        assert_eq!(patched.version, 2);
        assert_eq!(patched.updated_at, 9);
        let cleared: FormInput = serde_json::from_str(
            r#"{"redirect_url": null, "campaign_id": null, "allowed_origins": null}"#,
        )
        .unwrap();
        let cleared = cleared
            .apply(Some(&patched), Uuid::max(), "other", 10)
            .unwrap();
        assert_eq!(cleared.redirect_url, None);
        assert_eq!(cleared.campaign_id, None);
        assert!(cleared.allowed_origins.is_empty());
        assert_eq!(cleared.name, base.name);
    }

    #[test]
    fn null_on_a_member_without_an_empty_value_is_refused() {
        for member in [
            "name",
            "key",
            "language",
            "fields",
            "source",
            "activity_kind",
        ] {
            let body = format!(r#"{{"{member}": null}}"#);
            let e = serde_json::from_str::<FormInput>(&body).unwrap_err();
            assert!(e.to_string().contains("may not be null"), "{member}: {e}");
        }
    }

    #[test]
    fn a_submission_splits_lead_fields_custom_fields_and_tracking() {
        let sub = trial()
            .read_submission(values(&[
                ("name", " Ann "),
                ("email", "Ann@Example.com"),
                ("budget", "10k"),
                ("_vid", "abcdef0123456789"),
                (
                    "_page",
                    "https://site.example/signup?utm_source=google&utm_medium=cpc",
                ),
                ("utm_campaign", "spring"),
                ("extra", "ignored"),
            ]))
            .unwrap();
        assert_eq!(sub.lead.name.as_deref(), Some("Ann"));
        assert_eq!(sub.lead.email.as_deref(), Some("Ann@Example.com"));
        assert_eq!(sub.lead.fields.unwrap()["budget"], "10k");
        let utm = sub.lead.utm.unwrap();
        assert_eq!(utm.source.as_deref(), Some("google"));
        assert_eq!(utm.campaign.as_deref(), Some("spring"));
        assert_eq!(sub.visitor_id.as_deref(), Some("abcdef0123456789"));
        assert_eq!(sub.raw["name"], " Ann ");
        assert!(!sub.raw.contains_key("extra"));
        assert!(!sub.honeypot);
    }

    #[test]
    fn missing_required_fields_are_reported_each() {
        let e = trial()
            .read_submission(values(&[("budget", "1")]))
            .unwrap_err();
        let fields: Vec<_> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["name", "email"]);
    }

    #[test]
    fn honeypot_and_token_are_set_aside() {
        let sub = trial()
            .read_submission(values(&[
                ("name", "Bot"),
                ("email", "bot@example.com"),
                ("_hp", "http://spam"),
                ("_ts", "123.abc"),
                ("_vid", "bad id!"),
            ]))
            .unwrap();
        assert!(sub.honeypot);
        assert_eq!(sub.render_token.as_deref(), Some("123.abc"));
        assert_eq!(sub.visitor_id, None);
    }
}
