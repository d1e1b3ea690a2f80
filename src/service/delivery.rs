//! The webhook delivery worker: one task that reads the due deliveries from the outbox queue,
//! POSTs each (signed, with its delivery id as idempotency key) from a pool of concurrent
//! attempts, and records the outcomes of finished attempts together in one write: delivered,
//! retried later with exponential backoff, or dead-lettered after the retry window. It wakes
//! when a commit may have queued deliveries (the committed-seq watch, or `Hooks::wake`), when
//! the clock reaches the next due attempt, and when an attempt finishes.
//!
//! Delivery is at least once: an attempt whose outcome was not recorded (a crash, a stop) is
//! made again after a restart, with the same delivery id.

use super::webhooks::WebhookSettings;
use super::{Service, ServiceResult};
use crate::domain::time::Millis;
use crate::domain::webhook::{
    Delivery, DeliveryStatus, Destination, Webhook, forbidden_reason, refusal, sign,
};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use uuid::Uuid;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub id: Uuid,
    /// When the attempt started (the injected clock).
    pub at: Millis,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl AttemptOutcome {
    pub fn delivered(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Most of a failed answer's body kept as its error.
const ERROR_BODY_CHARS: usize = 200;

/// A resolver that hands the HTTP client only public addresses, so the address an attempt
/// connects to is the one checked (no DNS rebinding between check and connect).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> = found
                .iter()
                .filter(|a| forbidden_reason(a.ip()).is_none())
                .copied()
                .collect();
            if public.is_empty() {
                let why = match found.first() {
                    Some(a) => refusal(a.ip(), forbidden_reason(a.ip()).unwrap_or("non-public")),
                    None => format!("{host} has no address"),
                };
                return Err(why.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Makes the HTTP attempts.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
}

/// An error and the errors under it, on one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

impl Sender {
    pub fn new(settings: &WebhookSettings) -> Result<Sender, String> {
        let mut b = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A redirect could lead anywhere, an internal address included: a 3xx is a failure.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect for us, around the address check.
            .no_proxy()
            .pool_max_idle_per_host(settings.max_concurrency.min(256))
            .tcp_nodelay(true)
            .user_agent(concat!("Leadline-Webhooks/", env!("CARGO_PKG_VERSION")));
        if !settings.allow_private {
            b = b.dns_resolver(Arc::new(PublicOnly));
        }
        let client = b
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Sender {
            client,
            allow_private: settings.allow_private,
        })
    }

    /// POSTs `d` to `webhook` once. `at` is when the attempt started.
    pub async fn attempt(&self, d: &Delivery, webhook: &Webhook, at: Millis) -> AttemptOutcome {
        let (status, error) = self.send(d, webhook).await;
        AttemptOutcome {
            id: d.id,
            at,
            status,
            error,
        }
    }

    async fn send(&self, d: &Delivery, webhook: &Webhook) -> (Option<u16>, Option<String>) {
        let dest = match Destination::parse(&webhook.url) {
            Ok(dest) => dest,
            Err(e) => return (None, Some(format!("url {e}"))),
        };
        if !self.allow_private
            && let Some(why) = dest.refused_before_lookup()
        {
            return (None, Some(format!("refused: the destination {why}")));
        }
        let body = d.payload();
        let signature = sign(webhook.secret.as_bytes(), &body);
        let sent = self
            .client
            .post(dest.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-leadline-signature", signature)
            .header("x-leadline-delivery", d.id.to_string())
            .header("x-leadline-event", d.event.as_str())
            .body(body)
            .send()
            .await;
        let mut res = match sent {
            Ok(res) => res,
            Err(e) => {
                let why = describe(&e);
                let why = if why.contains("allow_private_destinations") {
                    format!("refused: the destination {why}")
                } else {
                    why
                };
                return (None, Some(why));
            }
        };
        let status = res.status().as_u16();
        // Read (a little of) the answer, so the connection can be used again.
        let mut text = Vec::new();
        while let Ok(Some(chunk)) = res.chunk().await {
            if text.len() < 4096 {
                text.extend_from_slice(&chunk[..chunk.len().min(4096 - text.len())]);
            }
        }
        if (200..300).contains(&status) {
            return (Some(status), None);
        }
        let snippet: String = String::from_utf8_lossy(&text)
            .chars()
            .take(ERROR_BODY_CHARS)
            .collect();
        let why = if snippet.trim().is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {}", snippet.trim())
        };
        (Some(status), Some(why))
    }
}

/// A delivery due now and the webhook it goes to.
pub type DueDelivery = (Delivery, Arc<Webhook>);

/// Records finished attempts: delivered, retried at the next backoff step, or dead.
fn record(
    tx: &mut crate::store::Tx<'_>,
    r: &AttemptOutcome,
    settings: &WebhookSettings,
) -> crate::store::StoreResult<()> {
    let Some(old) = tx.delivery(r.id)? else {
        return Ok(());
    };
    if old.status != DeliveryStatus::Pending {
        return Ok(());
    }
    let mut d = old.clone();
    d.attempts = d.attempts.saturating_add(1);
    d.last_attempt_at = Some(r.at);
    d.last_status_code = r.status;
    d.last_error.clone_from(&r.error);
    let first = *d.first_attempt_at.get_or_insert(r.at);
    if r.delivered() {
        d.status = DeliveryStatus::Delivered;
        d.delivered_at = Some(tx.now);
        d.finished_at = Some(tx.now);
    } else {
        match settings.retry.after_failure(first, r.at, d.attempts) {
            Some(next) => d.next_attempt_at = Some(next),
            None => {
                d.status = DeliveryStatus::Dead;
                d.finished_at = Some(tx.now);
            }
        }
    }
    tx.put_delivery(&old, d)?;
    Ok(())
}

impl Service {
    /// Up to `limit` deliveries due now that `skip` does not name, each with its webhook; and
    /// when the next falls due.
    pub fn due_deliveries(
        &self,
        limit: usize,
        skip: impl Fn(u128) -> bool,
    ) -> ServiceResult<(Vec<DueDelivery>, Option<Millis>)> {
        let snap = self.store.read()?;
        let (due, next) = snap.deliveries_due(self.now(), limit, skip)?;
        if due.is_empty() {
            return Ok((Vec::new(), next));
        }
        let hooks: HashMap<Uuid, Arc<Webhook>> = snap
            .webhooks()?
            .into_iter()
            .map(|w| (w.id, Arc::new(w)))
            .collect();
        let out = due
            .into_iter()
            .filter_map(|d| hooks.get(&d.webhook_id).cloned().map(|w| (d, w)))
            .collect();
        Ok((out, next))
    }

    /// Records the outcomes of finished attempts in one write.
    pub async fn record_attempts(&self, outcomes: Vec<AttemptOutcome>) -> ServiceResult<()> {
        let settings = self.hooks.settings.clone();
        self.store
            .write(move |tx| {
                for r in &outcomes {
                    record(tx, r, &settings)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
}

/// How often old deliveries are swept out of the log.
const PRUNE_EVERY_MS: i64 = 3_600_000;

/// Runs the delivery worker until `stop` resolves. Attempts in flight then are abandoned and
/// made again after the next start.
pub async fn run_delivery(service: Service, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let settings = service.hooks.settings.clone();
    let sender = loop {
        match Sender::new(&settings) {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(error = %e, "webhook delivery cannot start; retrying in 30 s");
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    };
    let hooks = service.hooks.clone();
    let clock = service.clock();
    let mut seq = service.store().committed_seq();
    let mut seq_open = true;
    let max = settings.max_concurrency;
    // Deliveries being attempted or whose outcome is not yet recorded: never read as due.
    let mut in_flight: HashSet<u128> = HashSet::new();
    let mut tasks: JoinSet<AttemptOutcome> = JoinSet::new();
    let mut task_ids: HashMap<tokio::task::Id, u128> = HashMap::new();
    // Outcomes waiting for the next write, and the write in progress (one at a time): attempts
    // go on while outcomes commit.
    let mut unrecorded: Vec<AttemptOutcome> = Vec::new();
    let mut unrecorded_ids: Vec<u128> = Vec::new();
    let mut committing = false;
    let (recorded_tx, mut recorded) = tokio::sync::mpsc::unbounded_channel::<Vec<u128>>();
    let mut backoff = Duration::from_millis(100);
    let mut next_prune = clock.now_ms();
    loop {
        if clock.now_ms() >= next_prune {
            next_prune = match service.prune_deliveries().await {
                Ok((n, done)) => {
                    if n > 0 {
                        tracing::debug!(deliveries = n, "old deliveries pruned");
                    }
                    if done {
                        clock.now_ms() + PRUNE_EVERY_MS
                    } else {
                        clock.now_ms()
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning old deliveries failed");
                    clock.now_ms() + PRUNE_EVERY_MS
                }
            };
        }
        if !committing && !unrecorded.is_empty() {
            committing = true;
            let outcomes = std::mem::take(&mut unrecorded);
            let ids = std::mem::take(&mut unrecorded_ids);
            let (service, done) = (service.clone(), recorded_tx.clone());
            tokio::spawn(async move {
                if let Err(e) = service.record_attempts(outcomes).await {
                    tracing::warn!(error = %e, "recording webhook attempts failed; they will be made again");
                }
                let _ = done.send(ids);
            });
        }
        // Mark the seq seen before reading, so a commit after the read wakes the wait below.
        if seq_open {
            seq.borrow_and_update();
        }
        let mut next_due = None;
        let room = max.saturating_sub(tasks.len());
        if room > 0 {
            match service.due_deliveries(room, |id| in_flight.contains(&id)) {
                Ok((due, next)) => {
                    backoff = Duration::from_millis(100);
                    next_due = next;
                    let now = clock.now_ms();
                    for (d, w) in due {
                        let id = d.id.as_u128();
                        let sender = sender.clone();
                        let handle = tasks.spawn(async move { sender.attempt(&d, &w, now).await });
                        task_ids.insert(handle.id(), id);
                        in_flight.insert(id);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading due webhook deliveries failed; retrying");
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        }
        let room_left = tasks.len() < max;
        let due = async {
            match next_due {
                Some(at) if room_left => clock.clone().wait_until(at).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            first = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let mut finished = vec![first];
                while let Some(more) = tasks.try_join_next_with_id() {
                    finished.push(Some(more));
                }
                for f in finished.into_iter().flatten() {
                    match f {
                        Ok((task, outcome)) => {
                            if let Some(id) = task_ids.remove(&task) {
                                unrecorded_ids.push(id);
                            }
                            unrecorded.push(outcome);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "a webhook attempt failed to run; it will be made again");
                            if let Some(id) = task_ids.remove(&e.id()) {
                                unrecorded_ids.push(id);
                            }
                        }
                    }
                }
            }
            Some(ids) = recorded.recv() => {
                committing = false;
                for id in ids {
                    in_flight.remove(&id);
                }
            }
            changed = seq.changed(), if seq_open => {
                if changed.is_err() {
                    seq_open = false;
                }
            }
            _ = hooks.wake.notified() => {}
            _ = due => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::webhook::RetryPolicy;

    fn delivery() -> Delivery {
        let id = Uuid::now_v7();
        Delivery {
            id,
            webhook_id: Uuid::now_v7(),
            created_at: 0,
            event: "lead.created".into(),
            seq: 7,
            at: 1_795_420_800_000,
            entity: "lead".into(),
            entity_id: id,
            lead_id: Some(id),
            data: r#"{"op":"create"}"#.into(),
            chain_key: id,
            chain_pos: id,
            status: DeliveryStatus::Pending,
            attempts: 0,
            first_attempt_at: None,
            last_attempt_at: None,
            next_attempt_at: Some(0),
            last_status_code: None,
            last_error: None,
            delivered_at: None,
            finished_at: None,
            replays: 0,
        }
    }

    fn webhook(url: String) -> Webhook {
        Webhook {
            id: Uuid::now_v7(),
            created_at: 0,
            updated_at: 0,
            version: 1,
            url,
            events: vec!["*".into()],
            secret: "0123456789abcdef".into(),
            active: true,
        }
    }

    fn settings(allow_private: bool) -> WebhookSettings {
        WebhookSettings {
            timeout: Duration::from_secs(5),
            allow_private,
            max_concurrency: 4,
            retry: RetryPolicy::default(),
            retention_ms: 0,
        }
    }

    /// A listener that counts connections.
    async fn listener() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = n.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        });
        (addr, n)
    }

    #[tokio::test]
    async fn private_destinations_are_refused_at_attempt_time_without_connecting() {
        let (addr, connections) = listener().await;
        let sender = Sender::new(&settings(false)).unwrap();
        for url in [
            format!("http://{addr}/hook"),
            format!("http://localhost:{}/hook", addr.port()),
        ] {
            let out = sender.attempt(&delivery(), &webhook(url.clone()), 5).await;
            assert!(!out.delivered());
            assert_eq!(out.status, None);
            let err = out.error.unwrap_or_default();
            assert!(err.starts_with("refused"), "{url}: {err}");
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_resolver_filters_out_private_addresses() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match PublicOnly.resolve(name).await {
            Ok(_) => panic!("localhost resolved to a public address"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("loopback"), "{err}");
    }

    #[tokio::test]
    async fn allowed_private_destinations_are_attempted() {
        let (addr, connections) = listener().await;
        let sender = Sender::new(&settings(true)).unwrap();
        let out = sender
            .attempt(&delivery(), &webhook(format!("http://{addr}/hook")), 5)
            .await;
        assert!(!out.delivered());
        assert!(out.error.is_some());
        assert!(connections.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    }
}
