//! Anonymous visitors of a site that includes `/t.js`: their page views while anonymous, and
//! the link to the lead they became (after which page views land on the lead directly).

use super::form::valid_visitor_id;
use super::lead::Utm;
use super::time::{Millis, to_rfc3339};
use super::{FieldError, Problems};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

/// Most anonymous page views kept per visitor; older ones are dropped first.
pub const MAX_VIEWS_PER_VISITOR: u32 = 200;
const MAX_URL: usize = 2048;
const MAX_TITLE: usize = 300;
const MAX_UTM: usize = 200;

/// A visitor as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Visitor {
    pub id: String,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// The lead this visitor became, once stitched.
    pub lead_id: Option<Uuid>,
    /// Anonymous page views held (at most `MAX_VIEWS_PER_VISITOR`).
    pub views: u32,
}

/// One anonymous page view as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageView {
    pub at: Millis,
    pub url: String,
    pub path: String,
    pub referrer: Option<String>,
    pub title: Option<String>,
    pub utm: Utm,
}

/// The body of `POST /t` (sent by `/t.js`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct PageViewInput {
    #[schema(pattern = "^[A-Za-z0-9_-]{8,64}$")]
    pub visitor_id: String,
    #[schema(pattern = "^[hH][tT][tT][pP][sS]?://", max_length = 2048)]
    pub url: String,
    pub referrer: Option<String>,
    pub title: Option<String>,
    pub utm: Option<Map<String, Value>>,
}

fn bounded(v: Option<String>, max: usize) -> Option<String> {
    let v = v?.trim().to_owned();
    if v.is_empty() {
        return None;
    }
    Some(v.chars().take(max).collect())
}

impl PageViewInput {
    /// A page view at `now`. The URL must be absolute http(s); long values are cut, not refused,
    /// because a tracker should never lose a view over a long title.
    pub fn validate(self, now: Millis) -> Result<(String, PageView), Vec<FieldError>> {
        let mut p = Problems::default();
        if !valid_visitor_id(&self.visitor_id) {
            p.push("visitor_id", "must be 8 to 64 of a-z, A-Z, 0-9, - and _");
        }
        let url = self.url.trim();
        let parsed = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        if parsed.is_none() || url.len() > MAX_URL {
            p.push(
                "url",
                format!("must be an absolute http(s) URL of at most {MAX_URL} bytes"),
            );
        }
        let mut utm = super::form::utm_from_url(url);
        for (k, v) in self.utm.unwrap_or_default() {
            let v = bounded(v.as_str().map(str::to_owned), MAX_UTM);
            match k.as_str() {
                "source" => utm.source = v.or(utm.source),
                "medium" => utm.medium = v.or(utm.medium),
                "campaign" => utm.campaign = v.or(utm.campaign),
                "term" => utm.term = v.or(utm.term),
                "content" => utm.content = v.or(utm.content),
                _ => {}
            }
        }
        let view = PageView {
            at: now,
            path: parsed
                .as_ref()
                .map_or_else(String::new, |u| u.path().to_owned()),
            url: url.to_owned(),
            referrer: bounded(self.referrer, MAX_URL),
            title: bounded(self.title, MAX_TITLE),
            utm,
        };
        p.finish((self.visitor_id, view))
    }
}

impl PageView {
    /// The properties of the `page_view` activity this view becomes.
    pub fn properties(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("url".into(), json!(self.url));
        m.insert("path".into(), json!(self.path));
        if let Some(r) = &self.referrer {
            m.insert("referrer".into(), json!(r));
        }
        if let Some(t) = &self.title {
            m.insert("title".into(), json!(t));
        }
        if self.utm != Utm::default() {
            m.insert("utm".into(), json!(self.utm));
        }
        m
    }
}

/// A visitor as the API shows it (`GET /v1/visitors/{id}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VisitorView {
    pub visitor_id: String,
    pub first_seen: String,
    pub last_seen: String,
    pub lead_id: Option<Uuid>,
    /// Anonymous page views, oldest first (empty once they moved onto the lead).
    pub page_views: Vec<PageViewView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PageViewView {
    pub at: String,
    pub url: String,
    pub path: String,
    pub referrer: Option<String>,
    pub title: Option<String>,
    pub utm: Utm,
}

impl VisitorView {
    pub fn new(v: &Visitor, views: &[PageView]) -> Self {
        VisitorView {
            visitor_id: v.id.clone(),
            first_seen: to_rfc3339(v.first_seen),
            last_seen: to_rfc3339(v.last_seen),
            lead_id: v.lead_id,
            page_views: views
                .iter()
                .map(|pv| PageViewView {
                    at: to_rfc3339(pv.at),
                    url: pv.url.clone(),
                    path: pv.path.clone(),
                    referrer: pv.referrer.clone(),
                    title: pv.title.clone(),
                    utm: pv.utm.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_takes_utm_from_its_url_and_cuts_long_titles() {
        let (vid, v) = PageViewInput {
            visitor_id: "0123456789abcdef".into(),
            url: "https://site.example/pricing?utm_source=google&utm_medium=cpc".into(),
            referrer: Some("".into()),
            title: Some("x".repeat(1000)),
            utm: None,
        }
        .validate(7)
        .unwrap();
        assert_eq!(vid, "0123456789abcdef");
        assert_eq!(v.path, "/pricing");
        assert_eq!(v.utm.source.as_deref(), Some("google"));
        assert_eq!(v.referrer, None);
        assert_eq!(v.title.unwrap().chars().count(), MAX_TITLE);
        assert_eq!(v.at, 7);
    }

    #[test]
    fn bad_ids_and_urls_are_refused() {
        let e = PageViewInput {
            visitor_id: "short".into(),
            url: "javascript:alert(1)".into(),
            ..Default::default()
        }
        .validate(0)
        .unwrap_err();
        let fields: Vec<_> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["visitor_id", "url"]);
    }

    #[test]
    fn properties_carry_what_was_seen() {
        let (_, v) = PageViewInput {
            visitor_id: "0123456789abcdef".into(),
            url: "https://site.example/a".into(),
            referrer: Some("https://www.google.com/".into()),
            ..Default::default()
        }
        .validate(0)
        .unwrap();
        let p = v.properties();
        assert_eq!(p["path"], "/a");
        assert_eq!(p["referrer"], "https://www.google.com/");
        assert!(!p.contains_key("utm"));
    }
}
