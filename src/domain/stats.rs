//! A lead's activity summary: how often each kind of activity happened and when last, and the
//! same per page path. The score hook reads it instead of a lead's whole history, and the
//! store keeps it current in the transaction that records an activity.

use super::activity::Activity;
use super::time::Millis;
use serde::{Deserialize, Serialize};

/// Most page paths remembered per lead; the least recently seen goes first.
pub const MAX_PAGES: usize = 200;
/// Most activity kinds remembered per lead (kinds are client-chosen names).
pub const MAX_KINDS: usize = 100;
const MAX_PATH_LEN: usize = 300;

/// How often one thing happened, and when last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub key: String,
    pub count: u32,
    pub last_at: Millis,
}

/// Counts and last times per activity kind and per page path. Field order is part of the
/// stored format.
/// The activity kind of a page view (tracking, or recorded through the API).
pub const PAGE_VIEW: &str = "page_view";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityStats {
    pub kinds: Vec<Tally>,
    pub pages: Vec<Tally>,
    /// When the newest activity of any kind happened.
    pub last_at: Option<Millis>,
}

impl ActivityStats {
    /// Counts one activity; a page view also counts for its page. Only page views do: a
    /// note or an email click that carries a URL is no visit to that page.
    pub fn record(&mut self, a: &Activity) {
        let page = match a.kind == PAGE_VIEW {
            true => activity_path(a),
            false => None,
        };
        self.record_parts(&a.kind, page.as_deref(), a.occurred_at);
    }

    pub fn record_parts(&mut self, kind: &str, path: Option<&str>, at: Millis) {
        bump(&mut self.kinds, kind, at, MAX_KINDS);
        if let Some(p) = path {
            bump(&mut self.pages, p, at, MAX_PAGES);
        }
        self.last_at = Some(self.last_at.map_or(at, |l| l.max(at)));
    }

    /// Adds another lead's summary (a merge).
    pub fn absorb(&mut self, other: &ActivityStats) {
        for t in &other.kinds {
            add(&mut self.kinds, t, MAX_KINDS);
        }
        for t in &other.pages {
            add(&mut self.pages, t, MAX_PAGES);
        }
        self.last_at = match (self.last_at, other.last_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// A summary made up for a test or a dry run: counts per kind and per page path, all last
    /// seen at `last_at`.
    pub fn from_counts<'a>(
        kinds: impl IntoIterator<Item = (&'a str, u32)>,
        pages: impl IntoIterator<Item = (&'a str, u32)>,
        last_at: Millis,
    ) -> ActivityStats {
        let tally = |(k, n): (&str, u32)| Tally {
            key: k.to_owned(),
            count: n,
            last_at,
        };
        let kinds: Vec<Tally> = kinds.into_iter().map(tally).collect();
        let pages: Vec<Tally> = pages.into_iter().map(tally).collect();
        let any = !kinds.is_empty() || !pages.is_empty();
        ActivityStats {
            kinds,
            pages,
            last_at: any.then_some(last_at),
        }
    }

    pub fn count(&self, kind: &str) -> u32 {
        self.kinds
            .iter()
            .find(|t| t.key == kind)
            .map_or(0, |t| t.count)
    }

    pub fn last(&self, kind: &str) -> Option<Millis> {
        self.kinds.iter().find(|t| t.key == kind).map(|t| t.last_at)
    }

    /// When a page whose path is `prefix` or lies under it was last viewed (see [`Self::visits`]).
    pub fn last_visit(&self, prefix: &str) -> Option<Millis> {
        let prefix = prefix.trim_end_matches('/').to_lowercase();
        self.pages
            .iter()
            .filter(|t| path_under(&t.key, &prefix))
            .map(|t| t.last_at)
            .max()
    }

    /// Views of pages whose path is `prefix` or lies under it (`/pricing` covers
    /// `/pricing/team`, not `/pricingx`). Case-insensitive.
    pub fn visits(&self, prefix: &str) -> u32 {
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_ascii() && !prefix.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Borrowed(prefix)
        } else {
            std::borrow::Cow::Owned(prefix.to_lowercase())
        };
        self.pages
            .iter()
            .filter(|t| path_under(&t.key, &prefix))
            .map(|t| t.count)
            .sum()
    }
}

/// Whether `path` is `prefix` (lowercase) or lies under it, ignoring case. Scoring asks this
/// for every page on every call, so ASCII paths are compared without lowercasing a copy.
fn path_under(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let boundary = |rest: &str| rest.is_empty() || rest.starts_with(['/', '?', '-']);
    if path.is_ascii() {
        path.len() >= prefix.len()
            && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            && boundary(&path[prefix.len()..])
    } else {
        path.to_lowercase()
            .strip_prefix(prefix)
            .is_some_and(boundary)
    }
}

fn bump(list: &mut Vec<Tally>, key: &str, at: Millis, max: usize) {
    add(
        list,
        &Tally {
            key: key.to_owned(),
            count: 1,
            last_at: at,
        },
        max,
    );
}

fn add(list: &mut Vec<Tally>, t: &Tally, max: usize) {
    if let Some(existing) = list.iter_mut().find(|e| e.key == t.key) {
        existing.count = existing.count.saturating_add(t.count);
        existing.last_at = existing.last_at.max(t.last_at);
        return;
    }
    if list.len() >= max {
        // Forget the thing seen longest ago: recent behaviour is what scores.
        if let Some((oldest, _)) = list.iter().enumerate().min_by_key(|(_, e)| e.last_at) {
            if list[oldest].last_at > t.last_at {
                return;
            }
            list.swap_remove(oldest);
        }
    }
    list.push(t.clone());
}

/// The page path an activity is about: its `path` property, or the path of its `url`.
pub fn activity_path(a: &Activity) -> Option<String> {
    if !a.properties.contains("\"path\"") && !a.properties.contains("\"url\"") {
        return None;
    }
    let props: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&a.properties).ok()?;
    let path = match props.get("path").and_then(|v| v.as_str()) {
        Some(p) => p.to_owned(),
        None => url::Url::parse(props.get("url")?.as_str()?)
            .ok()?
            .path()
            .to_owned(),
    };
    let path = path.trim();
    if !path.starts_with('/') {
        return None;
    }
    let mut end = path.len().min(MAX_PATH_LEN);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    Some(path[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn activity(kind: &str, props: &str, at: Millis) -> Activity {
        Activity {
            id: Uuid::nil(),
            lead_id: Uuid::nil(),
            kind: kind.into(),
            occurred_at: at,
            recorded_at: at,
            actor_id: None,
            campaign_id: None,
            text: None,
            properties: props.into(),
        }
    }

    #[test]
    fn counts_kinds_and_pages_with_their_last_time() {
        let mut s = ActivityStats::default();
        s.record(&activity("page_view", r#"{"path":"/pricing"}"#, 10));
        s.record(&activity(
            "page_view",
            r#"{"url":"https://x.example/pricing/team?a=1"}"#,
            30,
        ));
        s.record(&activity("note", "{}", 20));
        // A URL on anything but a page view is no visit.
        s.record(&activity(
            "note",
            r#"{"url":"https://x.example/pricing"}"#,
            25,
        ));
        s.record(&activity("email_click", r#"{"path":"/pricing"}"#, 26));
        assert_eq!(s.count("page_view"), 2);
        assert_eq!(s.count("email_click"), 1);
        assert_eq!(s.count("note"), 2);
        assert_eq!(s.count("call"), 0);
        assert_eq!(s.last("page_view"), Some(30));
        assert_eq!(s.last_at, Some(30));
        assert_eq!(s.visits("/pricing"), 2, "the two page views");
        assert_eq!(s.last_visit("/Pricing"), Some(30));
        assert_eq!(s.last_visit("/elsewhere"), None);
        assert_eq!(s.visits("/PRICING/"), 2);
        assert_eq!(s.visits("/pricing/team"), 1);
        assert_eq!(s.visits("/pric"), 0);
    }

    #[test]
    fn absorbing_adds_counts_and_keeps_the_newest_time() {
        let mut a = ActivityStats::default();
        a.record_parts("page_view", Some("/a"), 5);
        let mut b = ActivityStats::default();
        b.record_parts("page_view", Some("/a"), 9);
        b.record_parts("call", None, 7);
        a.absorb(&b);
        assert_eq!(a.count("page_view"), 2);
        assert_eq!(a.count("call"), 1);
        assert_eq!(a.visits("/a"), 2);
        assert_eq!(a.last_at, Some(9));
    }

    #[test]
    fn the_page_list_is_bounded_and_forgets_the_oldest() {
        let mut s = ActivityStats::default();
        for i in 0..(MAX_PAGES as i64 + 10) {
            s.record_parts("page_view", Some(&format!("/p{i}")), i);
        }
        assert_eq!(s.pages.len(), MAX_PAGES);
        assert_eq!(s.visits("/p0"), 0);
        assert_eq!(s.visits(&format!("/p{}", MAX_PAGES + 9)), 1);
    }

    #[test]
    fn a_path_comes_from_path_or_url_and_must_be_absolute() {
        assert_eq!(
            activity_path(&activity("x", r#"{"path":"/a/b"}"#, 0)).as_deref(),
            Some("/a/b")
        );
        assert_eq!(
            activity_path(&activity("x", r#"{"url":"https://e.example/c"}"#, 0)).as_deref(),
            Some("/c")
        );
        assert_eq!(activity_path(&activity("x", r#"{"path":"rel"}"#, 0)), None);
        assert_eq!(activity_path(&activity("x", "{}", 0)), None);
    }
}
