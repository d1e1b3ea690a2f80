//! Outgoing email: the outbox record of one message, its delivery state and retry schedule,
//! and the link rewriting that makes opens and clicks visible. Pure.

use super::time::Millis;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MailStatus {
    /// Waiting to be sent (no SMTP configured yet, or a retry is due later).
    Unsent,
    Sent,
    /// Gave up after the last retry.
    Failed,
    /// Not sent: the lead may no longer be contacted.
    Suppressed,
}

/// One message in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutMail {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub enrollment_id: Option<Uuid>,
    pub template: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// Marketing mail carries an unsubscribe link and stops at `do_not_contact`.
    pub marketing: bool,
    /// The secret in this message's unsubscribe, open and click links.
    pub token: String,
    /// The original targets of the rewritten links, by index.
    pub links: Vec<String>,
    pub status: MailStatus,
    pub attempts: u32,
    /// When the sender next tries it, while unsent.
    pub next_attempt_at: Millis,
    pub created_at: Millis,
    pub sent_at: Option<Millis>,
    pub last_error: Option<String>,
}

/// Tries before a message is marked failed, and the waits between them.
pub const MAX_ATTEMPTS: u32 = 8;

/// The wait after `attempts` failed tries: 1 min, doubling, at most 4 h.
pub fn retry_after(attempts: u32) -> i64 {
    let base: i64 = 60_000;
    base.saturating_mul(1_i64 << attempts.saturating_sub(1).min(8))
        .min(4 * 3_600_000)
}

/// Rewrites every `href="http…"` in `html` to go through `click_base/{n}` and returns the
/// rewritten HTML with the original targets, by `n`. Other links (mailto:, #, relative) stay,
/// and so do links under `keep` (the unsubscribe link: following it is no engagement).
pub fn track_links(html: &str, click_base: &str, keep: &str) -> (String, Vec<String>) {
    const ATTR: usize = 5; // `href=`
    let mut out = String::with_capacity(html.len() + 64);
    let mut links = Vec::new();
    let mut rest = html;
    while let Some(pos) = find_href(rest) {
        let (before, after) = rest.split_at(pos);
        out.push_str(before);
        let quote = char::from(after.as_bytes()[ATTR]);
        let value = &after[ATTR + 1..];
        let Some(len) = value.find(quote) else {
            out.push_str(after);
            return (out, links);
        };
        // Template engines escape what they insert into HTML attributes.
        let target = value[..len]
            .replace("&#x2f;", "/")
            .replace("&#x2F;", "/")
            .replace("&#47;", "/")
            .replace("&amp;", "&");
        let web = target.starts_with("http://") || target.starts_with("https://");
        if web && !target.starts_with(keep) {
            out.push_str(&format!("href={quote}{click_base}/{}{quote}", links.len()));
            links.push(target);
        } else {
            out.push_str(&after[..ATTR + 1 + len + 1]);
        }
        rest = &value[len + 1..];
    }
    out.push_str(rest);
    (out, links)
}

/// The byte offset of the next `href="` or `href='` (any case).
fn find_href(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(5))
        .find(|&i| b[i..i + 5].eq_ignore_ascii_case(b"href=") && matches!(b[i + 5], b'"' | b'\''))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_links_go_through_the_click_url_and_others_stay() {
        let html = r##"<a href="https://acme.cn/roi?a=1&amp;b=2">ROI</a> <a HREF='mailto:x@y.cn'>m</a> <a href="#top">t</a> <a href='http://x.cn'>x</a>"##;
        let (out, links) = track_links(html, "https://ll.example/c/TOKEN", "https://ll.example/u/");
        assert_eq!(
            out,
            r##"<a href="https://ll.example/c/TOKEN/0">ROI</a> <a HREF='mailto:x@y.cn'>m</a> <a href="#top">t</a> <a href='https://ll.example/c/TOKEN/1'>x</a>"##
        );
        assert_eq!(links, ["https://acme.cn/roi?a=1&b=2", "http://x.cn"]);
        let (same, none) = track_links("<p>no links</p> href=\"unclosed", "c", "u");
        assert_eq!(same, "<p>no links</p> href=\"unclosed");
        assert!(none.is_empty());
        // The unsubscribe link stays as it is, escaped or not.
        let html = r#"<a href="https:&#x2f;&#x2f;ll.example&#x2f;u&#x2f;T">u</a><a href="https://ll.example/u/T">u</a>"#;
        let (kept, none) = track_links(html, "https://ll.example/c/T", "https://ll.example/u/");
        assert_eq!(kept, html);
        assert!(none.is_empty());
    }

    #[test]
    fn retries_back_off_to_four_hours() {
        assert_eq!(retry_after(1), 60_000);
        assert_eq!(retry_after(2), 120_000);
        assert_eq!(retry_after(30), 4 * 3_600_000);
    }
}
