//! Webhook subscriptions and their delivery log as operations (admins only): create with the
//! SSRF check of the destination, update (pause, resume, rotate the secret), delete, list
//! deliveries, replay one. The delivery worker lives in `delivery`.

use super::{Idempotency, Precondition, Render, Service, ServiceError, ServiceResult, Written};
use crate::config::WebhooksConfig;
use crate::domain::time::Millis;
use crate::domain::user::Principal;
use crate::domain::webhook::{
    Delivery, DeliveryStatus, Destination, NewWebhook, RetryPolicy, ValidWebhookPatch, Webhook,
    forbidden_reason, refusal,
};
use crate::store::DeliveryPage;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How webhooks are delivered (from `[webhooks]` in the configuration).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// One attempt's limit: connect, send and answer.
    pub timeout: Duration,
    pub allow_private: bool,
    /// Attempts in flight at once.
    pub max_concurrency: usize,
    pub retry: RetryPolicy,
    /// How long delivered and dead deliveries stay in the log.
    pub retention_ms: i64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings::from(&WebhooksConfig::default())
    }
}

impl From<&WebhooksConfig> for WebhookSettings {
    fn from(c: &WebhooksConfig) -> Self {
        let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        WebhookSettings {
            timeout: Duration::from_secs(c.timeout_secs.max(1)),
            allow_private: c.allow_private_destinations,
            max_concurrency: usize::try_from(c.max_concurrency.max(1)).unwrap_or(64),
            retry: RetryPolicy {
                base_ms: ms(c.retry_base_secs),
                max_delay_ms: ms(c.retry_max_delay_secs),
                give_up_after_ms: ms(c.retry_for_hours.saturating_mul(3600)),
            },
            retention_ms: ms(c.retention_days.saturating_mul(86_400)),
        }
    }
}

/// What the webhook and live-event parts of the service share: settings, the worker's wake-up
/// and the signal that ends open event streams at shutdown.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    pub(crate) settings: WebhookSettings,
    /// Wakes the delivery worker after a write that queued deliveries without a changelog row
    /// (a replay, a resumed webhook).
    pub(crate) wake: tokio::sync::Notify,
    /// Cancelled when the server stops, so `/v1/events` streams end and shutdown can finish.
    pub(crate) closing: CancellationToken,
}

/// A fresh signing secret: `whsec_` and 48 hex digits of OS randomness.
fn new_secret() -> ServiceResult<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| {
        ServiceError::Store(crate::store::StoreError::Storage(format!(
            "no randomness: {e}"
        )))
    })?;
    Ok(format!("whsec_{}", hex::encode(bytes)))
}

fn admin_only(p: &Principal) -> ServiceResult<()> {
    if p.is_admin() {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "only admins manage webhooks".into(),
        ))
    }
}

/// How long the destination check waits for DNS before accepting the URL unchecked (each
/// attempt checks the resolved address again anyway).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

impl Service {
    /// Uses these delivery settings instead of the defaults.
    pub fn with_webhooks(mut self, settings: WebhookSettings) -> Self {
        self.hooks = std::sync::Arc::new(Hooks {
            settings,
            ..Hooks::default()
        });
        self
    }

    pub fn webhook_settings(&self) -> &WebhookSettings {
        &self.hooks.settings
    }

    /// Ends every open `/v1/events` stream (the server is stopping).
    pub fn close_event_streams(&self) {
        self.hooks.closing.cancel();
    }

    /// Refuses a destination on a non-public address, unless the configuration allows them.
    /// A name that does not resolve now is accepted: each attempt resolves and checks again.
    async fn check_destination(&self, d: &Destination) -> ServiceResult<()> {
        if self.hooks.settings.allow_private {
            return Ok(());
        }
        if let Some(why) = d.refused_before_lookup() {
            return Err(ServiceError::invalid("url", why));
        }
        let Some(host) = d.domain() else {
            return Ok(());
        };
        let lookup = tokio::net::lookup_host((host.to_owned(), d.port()));
        if let Ok(Ok(addrs)) = tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            for a in addrs {
                if let Some(why) = forbidden_reason(a.ip()) {
                    return Err(ServiceError::invalid("url", refusal(a.ip(), why)));
                }
            }
        }
        Ok(())
    }

    pub fn webhooks(&self, p: &Principal) -> ServiceResult<Vec<Webhook>> {
        admin_only(p)?;
        Ok(self.store.read()?.webhooks()?)
    }

    pub fn webhook(&self, p: &Principal, id: Uuid) -> ServiceResult<Webhook> {
        admin_only(p)?;
        self.store
            .read()?
            .webhook(id)?
            .ok_or(ServiceError::NotFound("webhook"))
    }

    /// Creates a subscription; the returned record holds the secret (generated if none was
    /// given), which is shown to the caller this once.
    pub async fn create_webhook(
        &self,
        p: &Principal,
        input: NewWebhook,
        idem: Option<(Idempotency, Render<Webhook>)>,
    ) -> ServiceResult<Written<Webhook>> {
        admin_only(p)?;
        self.check_destination(&input.url).await?;
        let secret = match input.secret {
            Some(s) => s,
            None => new_secret()?,
        };
        self.write_idempotent(p.id(), idem, move |tx| {
            let w = Webhook {
                id: tx.new_id(),
                created_at: tx.now,
                updated_at: tx.now,
                version: 1,
                url: input.url.url.to_string(),
                events: input.events,
                secret,
                active: input.active,
            };
            tx.put_webhook(None, &w)?;
            Ok(Ok(w))
        })
        .await
    }

    pub async fn update_webhook(
        &self,
        p: &Principal,
        id: Uuid,
        patch: ValidWebhookPatch,
        pre: Precondition,
    ) -> ServiceResult<Webhook> {
        admin_only(p)?;
        if let Some(d) = &patch.url {
            self.check_destination(d).await?;
        }
        let resumed = patch.active == Some(true);
        let w = self
            .store
            .write(move |tx| {
                let Some(old) = tx.webhook(id)? else {
                    return Ok(Err(ServiceError::NotFound("webhook")));
                };
                if let Err(e) = pre.check(old.version) {
                    return Ok(Err(e));
                }
                let mut new = old.clone();
                if let Some(d) = patch.url {
                    new.url = d.url.to_string();
                }
                if let Some(e) = patch.events {
                    new.events = e;
                }
                if let Some(s) = patch.secret {
                    new.secret = s;
                }
                if let Some(a) = patch.active {
                    new.active = a;
                }
                if new != old {
                    new.version += 1;
                    new.updated_at = tx.now;
                    tx.put_webhook(Some(&old), &new)?;
                }
                Ok(Ok(new))
            })
            .await??;
        if resumed {
            self.hooks.wake.notify_one();
        }
        Ok(w)
    }

    pub async fn delete_webhook(
        &self,
        p: &Principal,
        id: Uuid,
        pre: Precondition,
    ) -> ServiceResult<()> {
        admin_only(p)?;
        self.store
            .write(move |tx| {
                let Some(old) = tx.webhook(id)? else {
                    return Ok(Err(ServiceError::NotFound("webhook")));
                };
                if let Err(e) = pre.check(old.version) {
                    return Ok(Err(e));
                }
                tx.delete_webhook(&old)?;
                Ok(Ok(()))
            })
            .await?
    }

    /// A page of a webhook's delivery log, newest first.
    pub fn deliveries(
        &self,
        p: &Principal,
        webhook: Uuid,
        status: Option<DeliveryStatus>,
        before: Option<Uuid>,
        limit: usize,
    ) -> ServiceResult<DeliveryPage> {
        admin_only(p)?;
        let snap = self.store.read()?;
        if snap.webhook(webhook)?.is_none() {
            return Err(ServiceError::NotFound("webhook"));
        }
        Ok(snap.deliveries_of(webhook, status, before, limit)?)
    }

    /// One delivery of a webhook.
    pub fn delivery(
        &self,
        p: &Principal,
        webhook: Uuid,
        id: Uuid,
    ) -> ServiceResult<Option<Delivery>> {
        admin_only(p)?;
        Ok(self
            .store
            .read()?
            .delivery(id)?
            .filter(|d| d.webhook_id == webhook))
    }

    /// Queues a delivery again with a fresh retry window, whatever its status. A delivered or
    /// dead one goes to the end of its lead's chain; a pending one keeps its place and, if it
    /// heads the chain, is due now.
    pub async fn replay_delivery(
        &self,
        p: &Principal,
        webhook: Uuid,
        delivery: Uuid,
    ) -> ServiceResult<Delivery> {
        admin_only(p)?;
        let d = self
            .store
            .write(move |tx| {
                let Some(old) = tx.delivery(delivery)?.filter(|d| d.webhook_id == webhook) else {
                    return Ok(Err(ServiceError::NotFound("delivery")));
                };
                let mut new = old.clone();
                new.attempts = 0;
                new.first_attempt_at = None;
                new.replays += 1;
                new.delivered_at = None;
                new.finished_at = None;
                new.next_attempt_at = Some(tx.now);
                if old.status != DeliveryStatus::Pending {
                    new.status = DeliveryStatus::Pending;
                    new.chain_pos = tx.new_id();
                    new.next_attempt_at = None;
                }
                Ok(Ok(tx.put_delivery(&old, new)?))
            })
            .await??;
        self.hooks.wake.notify_one();
        Ok(d)
    }

    /// Drops delivered and dead deliveries older than the retention, a chunk at a time.
    /// Returns how many went and whether nothing older is left.
    pub async fn prune_deliveries(&self) -> ServiceResult<(usize, bool)> {
        let before: Millis = self.now().saturating_sub(self.hooks.settings.retention_ms);
        Ok(self
            .store
            .write(move |tx| tx.prune_deliveries(before, 10_000, 50_000))
            .await?)
    }
}
