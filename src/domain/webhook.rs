//! Webhooks as data: subscriptions and their event patterns, the delivery records of the
//! outbox, and the pure rules around them — which event names exist and which a pattern
//! matches, which destination addresses are refused (SSRF), the retry schedule, and the
//! signature a receiver checks. No I/O here.

use super::time::Millis;
use super::{FieldError, Problems, patch_required};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use uuid::Uuid;

/// Change events, named `{entity}.{op in the past tense}` from the changelog rows the server
/// writes (see `/v1/changes`). A notification's changelog row is delivered under its kind
/// instead (`lead.assigned` …, `work::NOTIFICATION_KINDS`).
pub const CHANGE_EVENTS: &[&str] = &[
    "lead.created",
    "lead.updated",
    "lead.deleted",
    "lead.merged",
    "activity.created",
    "task.created",
    "task.updated",
    "task.deleted",
    "user.created",
    "user.updated",
    "user.deleted",
    "form.created",
    "form.updated",
    "form.deleted",
    "pool.created",
    "enrollment.created",
    "enrollment.updated",
    "mail.created",
    "mail.updated",
];

/// Events a sequence's `webhook` step emits are named `sequence.<its name>`.
pub const SEQUENCE_EVENT_PREFIX: &str = "sequence.";

/// Most event patterns one subscription may list.
pub const MAX_EVENTS: usize = 50;
/// Longest destination URL.
pub const MAX_URL: usize = 2048;
/// Bounds of a secret the client chooses.
pub const MIN_SECRET: usize = 16;
pub const MAX_SECRET: usize = 256;

/// The event name of a changelog row: `lead` + `create` → `lead.created`.
pub fn change_event(entity: &str, op: &str) -> String {
    let past = match op {
        "create" => "created",
        "update" => "updated",
        "delete" => "deleted",
        "merge" => "merged",
        other => other,
    };
    format!("{entity}.{past}")
}

/// Every event name a subscription may list.
pub fn known_events() -> impl Iterator<Item = &'static str> {
    CHANGE_EVENTS
        .iter()
        .chain(super::work::NOTIFICATION_KINDS.iter())
        .copied()
}

/// Checks one event pattern: a known event name, `*` (everything), or `prefix.*` where some
/// known event starts with `prefix.` (`lead.*` covers `lead.created` and `lead.assigned`).
pub fn check_pattern(p: &str) -> Result<(), String> {
    if p == "*" || known_events().any(|e| e == p) {
        return Ok(());
    }
    // `sequence.*`, or the event of one sequence step (`sequence.nurture.done`).
    if let Some(name) = p.strip_prefix(SEQUENCE_EVENT_PREFIX)
        && !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '*'))
        && (name == "*" || !name.contains('*'))
    {
        return Ok(());
    }
    if let Some(prefix) = p.strip_suffix(".*")
        && !prefix.is_empty()
        && known_events().any(|e| e.strip_prefix(prefix).is_some_and(|r| r.starts_with('.')))
    {
        return Ok(());
    }
    Err(format!(
        "`{p}` is not an event: use one of {}, `sequence.<name>` (a sequence's webhook step), `*`, or a prefix such as `lead.*`",
        known_events().collect::<Vec<_>>().join(", ")
    ))
}

/// Whether `event` is one of `patterns`.
pub fn matches(patterns: &[String], event: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == event
            || p.strip_suffix(".*").is_some_and(|prefix| {
                event
                    .strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with('.'))
            })
    })
}

/// The `data` of a notification event: its details, with its recipient and task added.
pub fn notification_data(n: &super::work::Notification) -> serde_json::Value {
    use serde_json::{Value, json};
    let mut data = match serde_json::from_str::<Value>(&n.data) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    data.entry("recipient_id")
        .or_insert_with(|| json!(n.recipient_id));
    data.entry("task_id").or_insert_with(|| json!(n.task_id));
    Value::Object(data)
}

/// A subscription: events matching `events` are POSTed to `url`, signed with `secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: Uuid,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: u64,
    pub url: String,
    pub events: Vec<String>,
    /// The HMAC key (its UTF-8 bytes). Shown once, on create.
    pub secret: String,
    /// Paused subscriptions get no new deliveries and attempt none of their pending ones.
    pub active: bool,
}

/// The body of `POST /v1/webhooks`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// `http` or `https` URL the deliveries are POSTed to.
    #[schema(pattern = "^[hH][tT][tT][pP][sS]?://", max_length = 2048)]
    pub url: String,
    /// Event names or patterns (`*`, `lead.*`).
    #[schema(min_items = 1, max_items = 50)]
    pub events: Vec<String>,
    /// The signing secret (16–256 visible ASCII characters); generated when omitted.
    pub secret: Option<String>,
    /// Default true.
    pub active: Option<bool>,
}

/// The body of `PATCH /v1/webhooks/{id}` (a merge patch; absent fields stay).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub events: Option<Vec<String>>,
    /// A new signing secret (rotation); never shown back.
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub secret: Option<String>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub active: Option<bool>,
}

/// A destination URL, checked for shape (not yet for where it resolves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub url: url::Url,
}

impl Destination {
    pub fn parse(raw: &str) -> Result<Destination, String> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > MAX_URL {
            return Err(format!("must be an http(s) URL of at most {MAX_URL} bytes"));
        }
        let url = url::Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL".into());
        }
        if url.host().is_none() {
            return Err("must name a host".into());
        }
        if url.fragment().is_some() {
            return Err("must not have a #fragment".into());
        }
        Ok(Destination { url })
    }

    /// The host's address when the URL names one literally (`http://10.0.0.1/`, `http://[::1]/`).
    pub fn literal_ip(&self) -> Option<IpAddr> {
        match self.url.host()? {
            url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
            url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
            url::Host::Domain(_) => None,
        }
    }

    /// The host name when it is a name, not an address.
    pub fn domain(&self) -> Option<&str> {
        match self.url.host()? {
            url::Host::Domain(d) => Some(d),
            _ => None,
        }
    }

    /// The port the URL connects to.
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// Why this URL is refused before any lookup: a private literal address or a name that
    /// always means this machine (`localhost`).
    pub fn refused_before_lookup(&self) -> Option<String> {
        if let Some(ip) = self.literal_ip() {
            return forbidden_reason(ip).map(|why| refusal(ip, why));
        }
        let d = self.domain()?.trim_end_matches('.').to_ascii_lowercase();
        (d == "localhost" || d.ends_with(".localhost"))
            .then(|| format!("names this machine ({d}); webhooks may not reach it"))
    }
}

/// The message for a refused address.
pub fn refusal(ip: IpAddr, why: &str) -> String {
    format!(
        "resolves to {ip}, a {why} address; set [webhooks] allow_private_destinations = true to allow it"
    )
}

/// Why a destination address is refused (SSRF): loopback, private, link-local, unique-local,
/// unspecified, shared (CGNAT), multicast, broadcast or reserved. `None`: a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => forbidden_v4(a),
        IpAddr::V6(a) => forbidden_v6(a),
    }
}

fn forbidden_v4(a: Ipv4Addr) -> Option<&'static str> {
    let [b0, b1, ..] = a.octets();
    if b0 == 0 {
        Some("unspecified")
    } else if a.is_loopback() {
        Some("loopback")
    } else if a.is_private() {
        Some("private")
    } else if a.is_link_local() {
        Some("link-local")
    } else if b0 == 100 && (64..128).contains(&b1) {
        Some("shared (CGNAT)")
    } else if a.is_multicast() {
        Some("multicast")
    } else if a.is_broadcast() {
        Some("broadcast")
    } else if b0 >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn forbidden_v6(a: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = a.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let s = a.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return forbidden_v4(v4);
    }
    if a.is_unspecified() {
        Some("unspecified")
    } else if a.is_loopback() {
        Some("loopback")
    } else if a.is_multicast() {
        Some("multicast")
    } else if s[0] & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if s[0] & 0xffc0 == 0xfec0 {
        Some("site-local")
    } else {
        None
    }
}

/// The checked form of a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub url: Destination,
    pub events: Vec<String>,
    pub secret: Option<String>,
    pub active: bool,
}

/// The checked form of a patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidWebhookPatch {
    pub url: Option<Destination>,
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    pub active: Option<bool>,
}

fn check_url(problems: &mut Problems, raw: &str) -> Option<Destination> {
    Destination::parse(raw)
        .map_err(|m| problems.push("url", m))
        .ok()
}

fn check_events(problems: &mut Problems, events: &[String]) -> Option<Vec<String>> {
    if events.is_empty() || events.len() > MAX_EVENTS {
        problems.push("events", format!("list 1 to {MAX_EVENTS} events"));
        return None;
    }
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    let mut ok = true;
    for (i, e) in events.iter().enumerate() {
        let e = e.trim();
        match check_pattern(e) {
            Ok(()) => {
                if !out.iter().any(|x| x == e) {
                    out.push(e.to_owned());
                }
            }
            Err(m) => {
                problems.push(format!("events[{i}]"), m);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn check_secret(problems: &mut Problems, secret: &str) -> Option<String> {
    let n = secret.len();
    if !(MIN_SECRET..=MAX_SECRET).contains(&n) || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        problems.push(
            "secret",
            format!("must be {MIN_SECRET} to {MAX_SECRET} visible ASCII characters"),
        );
        return None;
    }
    Some(secret.to_owned())
}

impl WebhookInput {
    pub fn validate(&self) -> Result<NewWebhook, Vec<FieldError>> {
        let mut p = Problems::default();
        let url = check_url(&mut p, &self.url);
        let events = check_events(&mut p, &self.events);
        let secret = self.secret.as_deref().map(|s| check_secret(&mut p, s));
        match (url, events) {
            (Some(url), Some(events)) if p.is_empty() => Ok(NewWebhook {
                url,
                events,
                secret: secret.flatten(),
                active: self.active.unwrap_or(true),
            }),
            _ => Err(p.0),
        }
    }
}

impl WebhookPatch {
    pub fn validate(&self) -> Result<ValidWebhookPatch, Vec<FieldError>> {
        let mut p = Problems::default();
        let out = ValidWebhookPatch {
            url: self.url.as_deref().and_then(|u| check_url(&mut p, u)),
            events: self.events.as_deref().and_then(|e| check_events(&mut p, e)),
            secret: self.secret.as_deref().and_then(|s| check_secret(&mut p, s)),
            active: self.active,
        };
        p.finish(out)
    }
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt (or for an earlier delivery of its lead).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed for the whole retry window; kept for inspection and replay.
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "dead" => Some(DeliveryStatus::Dead),
            _ => None,
        }
    }

    /// Its byte in the status index.
    pub fn code(self) -> u8 {
        match self {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::Delivered => 1,
            DeliveryStatus::Dead => 2,
        }
    }
}

/// One event for one subscription: an outbox row, written in the transaction of the change it
/// reports, and its delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub created_at: Millis,
    /// The event name (`lead.created`, `sla.reminder` …).
    pub event: String,
    /// The changelog seq of the change.
    pub seq: u64,
    /// When the change happened.
    pub at: Millis,
    /// The changelog entity (`lead`, `notification` …) and its id.
    pub entity: String,
    pub entity_id: Uuid,
    pub lead_id: Option<Uuid>,
    /// JSON sent as the payload's `data` (ids and reasons; see `payload`).
    pub data: String,
    /// Deliveries of one webhook with the same key go out one at a time, in `chain_pos`
    /// order: the lead's id, else the entity's.
    pub chain_key: Uuid,
    pub chain_pos: Uuid,
    pub status: DeliveryStatus,
    /// Attempts since it was created or last replayed.
    pub attempts: u32,
    /// The first attempt of the current retry window (the 24 h count from here).
    pub first_attempt_at: Option<Millis>,
    pub last_attempt_at: Option<Millis>,
    /// When the worker will try it: set while it heads its chain and its webhook is active.
    pub next_attempt_at: Option<Millis>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Millis>,
    /// When it was delivered or dead-lettered (for the retention sweep).
    pub finished_at: Option<Millis>,
    pub replays: u32,
}

/// The JSON a receiver gets.
#[derive(Debug, Clone, Serialize)]
pub struct Payload<'a> {
    pub delivery_id: Uuid,
    pub event: &'a str,
    pub seq: u64,
    pub at: String,
    pub entity: &'a str,
    pub id: Uuid,
    pub lead_id: Option<Uuid>,
    pub data: serde_json::Value,
}

impl Delivery {
    /// The request body of an attempt (the same bytes on every attempt).
    pub fn payload(&self) -> Vec<u8> {
        let p = Payload {
            delivery_id: self.id,
            event: &self.event,
            seq: self.seq,
            at: super::time::to_rfc3339(self.at),
            entity: &self.entity,
            id: self.entity_id,
            lead_id: self.lead_id,
            data: serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null),
        };
        serde_json::to_vec(&p).unwrap_or_default()
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`: the `X-Leadline-Signature`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this never fails; an empty signature would fail
    // every receiver's check rather than pass one.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// When to try again and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first failure; it doubles after each further one…
    pub base_ms: i64,
    /// …up to this.
    pub max_delay_ms: i64,
    /// A delivery still failing this long after its first attempt is dead-lettered.
    pub give_up_after_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 10_000,
            max_delay_ms: 3_600_000,
            give_up_after_ms: 24 * 3_600_000,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failed attempt in a row (1-based).
    pub fn delay(&self, failures: u32) -> i64 {
        let doublings = failures.saturating_sub(1).min(40);
        self.base_ms
            .saturating_mul(1_i64 << doublings)
            .min(self.max_delay_ms)
            .max(0)
    }

    /// What follows a failed attempt at `at`, the window having opened at `first`: the time of
    /// the next attempt, or `None` when the delivery is dead.
    pub fn after_failure(&self, first: Millis, at: Millis, failures: u32) -> Option<Millis> {
        if at.saturating_sub(first) >= self.give_up_after_ms {
            return None;
        }
        Some(at.saturating_add(self.delay(failures)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_events_are_named_in_the_past_tense() {
        assert_eq!(change_event("lead", "create"), "lead.created");
        assert_eq!(change_event("lead", "merge"), "lead.merged");
        assert_eq!(change_event("task", "delete"), "task.deleted");
        for e in CHANGE_EVENTS {
            assert!(check_pattern(e).is_ok(), "{e}");
        }
    }

    #[test]
    fn patterns_match_names_prefixes_and_everything() {
        let p = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(matches(&p(&["*"]), "task.due"));
        assert!(matches(&p(&["lead.*"]), "lead.created"));
        assert!(matches(&p(&["lead.*"]), "lead.assigned"));
        assert!(!matches(&p(&["lead.*"]), "leads.created"));
        assert!(!matches(&p(&["lead.*"]), "activity.created"));
        assert!(matches(&p(&["sla.reminder"]), "sla.reminder"));
        assert!(!matches(&p(&["sla.reminder"]), "sla.escalated"));
        assert!(!matches(&p(&[]), "lead.created"));
    }

    #[test]
    fn unknown_events_and_prefixes_are_refused() {
        assert!(check_pattern("*").is_ok());
        assert!(check_pattern("lead.*").is_ok());
        assert!(check_pattern("sla.*").is_ok());
        assert!(check_pattern("lead.assigned").is_ok());
        for bad in [
            "lead.create",
            "nope.*",
            ".*",
            "",
            "lead",
            "*.created",
            "le.*",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn inputs_name_the_bad_field() {
        let input = WebhookInput {
            url: "ftp://example.com/".into(),
            events: vec!["lead.created".into(), "lead.exploded".into()],
            secret: Some("short".into()),
            active: None,
        };
        let errors = input.validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["url", "events[1]", "secret"]);
        let ok = WebhookInput {
            url: " https://hooks.example.com/leadline ".into(),
            events: vec!["lead.*".into(), "lead.*".into(), "task.due".into()],
            secret: None,
            active: None,
        }
        .validate()
        .unwrap();
        assert_eq!(ok.events, vec!["lead.*", "task.due"]);
        assert!(ok.active);
        assert_eq!(ok.url.url.as_str(), "https://hooks.example.com/leadline");
        let none = WebhookInput {
            url: "https://x.example/".into(),
            events: vec![],
            secret: None,
            active: None,
        };
        assert_eq!(none.validate().unwrap_err()[0].field, "events");
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        let refused = [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ];
        for a in refused {
            let ip: IpAddr = a.parse().unwrap();
            assert!(forbidden_reason(ip).is_some(), "{a} should be refused");
        }
        for a in [
            "93.184.216.34",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(forbidden_reason(ip), None, "{a} is public");
        }
        assert_eq!(
            forbidden_reason("100.64.1.1".parse().unwrap()),
            Some("shared (CGNAT)")
        );
        assert_eq!(
            forbidden_reason("fd00::1".parse().unwrap()),
            Some("unique-local")
        );
    }

    #[test]
    fn destinations_refused_before_any_lookup() {
        let refused = |u: &str| Destination::parse(u).unwrap().refused_before_lookup();
        assert!(refused("http://127.0.0.1:8080/hook").is_some());
        assert!(refused("http://10.0.0.1/").is_some());
        assert!(refused("http://[::1]/").is_some());
        assert!(refused("http://localhost:9000/").is_some());
        assert!(refused("http://api.localhost/").is_some());
        assert!(refused("https://hooks.example.com/").is_none());
        assert!(refused("http://93.184.216.34/").is_none());
        assert!(Destination::parse("mailto:a@b.c").is_err());
        assert!(Destination::parse("not a url").is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_to_an_hour_and_gives_up_after_a_day() {
        let r = RetryPolicy::default();
        let delays: Vec<i64> = (1..=11).map(|n| r.delay(n) / 1000).collect();
        assert_eq!(
            delays,
            vec![10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(r.delay(1000), 3_600_000);
        let first = 1_000_000;
        assert_eq!(r.after_failure(first, first, 1), Some(first + 10_000));
        assert_eq!(
            r.after_failure(first, first + 86_399_999, 40),
            Some(first + 86_399_999 + 3_600_000)
        );
        assert_eq!(r.after_failure(first, first + 86_400_000, 41), None);
        // The whole schedule: attempts until a day has passed, then dead.
        let (mut at, mut n) = (first, 1);
        while let Some(next) = r.after_failure(first, at, n) {
            at = next;
            n += 1;
        }
        assert!(at >= first + 86_400_000 && at < first + 86_400_000 + 3_600_000);
        assert_eq!(n, 33, "33 attempts in all");
    }
}
