//! The webhook outbox in the store: subscriptions, and a delivery row for every changelog row
//! an active subscription matches, written by `Tx::change_entry` in the transaction of the
//! change itself. Keeps each delivery's queue entry, per-lead chain and status index
//! consistent; `Snapshot` readers for the worker and the delivery log.
//!
//! Ordering: the pending deliveries of one webhook about one lead (or, without a lead, one
//! subject) form a chain; only its head is in the queue, so the next goes out only after the
//! one before it was delivered or dead-lettered.

use super::codec::{decode, encode};
use super::tables::*;
use super::tx::Tx;
use super::{ChangeEntry, Entity, Snapshot, StoreResult, get_record};
use crate::domain::time::Millis;
use crate::domain::webhook::{
    Delivery, DeliveryStatus, Webhook, change_event, matches, notification_data,
};
use crate::domain::work::Notification;
use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use serde_json::{Value, json};
use uuid::Uuid;

/// An active subscription, as the outbox matches events against it.
struct Subscription {
    id: Uuid,
    events: Vec<String>,
}

/// The outbox tables of a write transaction and the active subscriptions, read when it opens
/// (a handful of rows) and kept current by the webhook writes in it.
pub(super) struct Outbox<'t> {
    webhooks: Table<'t, u128, &'static [u8]>,
    deliveries: Table<'t, u128, &'static [u8]>,
    queue: Table<'t, (i64, u128), ()>,
    chains: Table<'t, (u128, u128, u128), u128>,
    by_webhook: Table<'t, (u128, u128), ()>,
    by_status: Table<'t, (u128, u8, u128), ()>,
    by_lead: Table<'t, (u128, u128), ()>,
    subs: Vec<Subscription>,
}

/// Creates the outbox tables (so read snapshots find them on a new store).
pub(super) fn create_tables(txn: &WriteTransaction) -> StoreResult<()> {
    txn.open_table(WEBHOOKS)?;
    txn.open_table(DELIVERIES)?;
    txn.open_table(DELIVERY_QUEUE)?;
    txn.open_table(DELIVERY_CHAINS)?;
    txn.open_table(DELIVERY_BY_WEBHOOK)?;
    txn.open_table(DELIVERY_BY_STATUS)?;
    txn.open_table(DELIVERY_BY_LEAD)?;
    Ok(())
}

impl<'t> Outbox<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> StoreResult<Outbox<'t>> {
        let mut o = Outbox {
            webhooks: txn.open_table(WEBHOOKS)?,
            deliveries: txn.open_table(DELIVERIES)?,
            queue: txn.open_table(DELIVERY_QUEUE)?,
            chains: txn.open_table(DELIVERY_CHAINS)?,
            by_webhook: txn.open_table(DELIVERY_BY_WEBHOOK)?,
            by_status: txn.open_table(DELIVERY_BY_STATUS)?,
            by_lead: txn.open_table(DELIVERY_BY_LEAD)?,
            subs: Vec::new(),
        };
        o.load_subscriptions()?;
        Ok(o)
    }

    fn load_subscriptions(&mut self) -> StoreResult<()> {
        self.subs.clear();
        for row in self.webhooks.iter()? {
            let (_, v) = row?;
            let w: Webhook = decode(v.value())?;
            if w.active {
                self.subs.push(Subscription {
                    id: w.id,
                    events: w.events,
                });
            }
        }
        Ok(())
    }

    fn is_active(&self, webhook: Uuid) -> bool {
        self.subs.iter().any(|s| s.id == webhook)
    }

    fn save(&mut self, d: &Delivery) -> StoreResult<()> {
        self.deliveries
            .insert(d.id.as_u128(), encode(d).as_slice())?;
        Ok(())
    }

    /// The first delivery of a chain, if it has any.
    fn chain_head(&self, webhook: Uuid, key: Uuid) -> StoreResult<Option<u128>> {
        let (w, k) = (webhook.as_u128(), key.as_u128());
        Ok(self
            .chains
            .range((w, k, 0)..=(w, k, u128::MAX))?
            .next()
            .transpose()?
            .map(|(_, v)| v.value()))
    }

    /// Queues the head of a chain (now) if it is not queued and its webhook is active.
    fn promote_head(&mut self, webhook: Uuid, key: Uuid, now: Millis) -> StoreResult<()> {
        if !self.is_active(webhook) {
            return Ok(());
        }
        let Some(head) = self.chain_head(webhook, key)? else {
            return Ok(());
        };
        if let Some(mut d) = get_record::<Delivery, _>(&self.deliveries, head)?
            && d.next_attempt_at.is_none()
        {
            d.next_attempt_at = Some(now);
            self.queue.insert((now, head), ())?;
            self.save(&d)?;
        }
        Ok(())
    }
}

/// The `data` of a change event: the lead's owner and pool at the time (ids only).
fn change_data(entry: &ChangeEntry, op: &str) -> Value {
    json!({"op": op, "owner_id": entry.owner_id, "pool_id": entry.pool_id})
}

/// A serde unit variant's name (`Entity::Lead` → `lead`).
fn variant_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::from("unknown"),
    }
}

impl Tx<'_> {
    // ----- subscriptions -----

    pub fn webhook(&self, id: Uuid) -> StoreResult<Option<Webhook>> {
        get_record(&self.outbox.webhooks, id.as_u128())
    }

    /// Writes a subscription. Pausing it takes its pending deliveries out of the queue;
    /// resuming puts the head of each of its chains back, due now.
    pub fn put_webhook(&mut self, old: Option<&Webhook>, new: &Webhook) -> StoreResult<()> {
        self.outbox
            .webhooks
            .insert(new.id.as_u128(), encode(new).as_slice())?;
        self.outbox.load_subscriptions()?;
        let was_active = old.is_some_and(|o| o.active);
        if was_active && !new.active {
            self.pause_deliveries(new.id)?;
        } else if old.is_some() && !was_active && new.active {
            self.resume_deliveries(new.id)?;
        }
        Ok(())
    }

    /// Deletes a subscription and its whole delivery log; returns how many deliveries went.
    pub fn delete_webhook(&mut self, w: &Webhook) -> StoreResult<usize> {
        let id = w.id.as_u128();
        self.outbox.webhooks.remove(id)?;
        self.outbox.load_subscriptions()?;
        let ids: Vec<u128> = self
            .outbox
            .by_webhook
            .range((id, 0)..=(id, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for d in &ids {
            if let Some(d) = get_record::<Delivery, _>(&self.outbox.deliveries, *d)? {
                self.forget_delivery(&d)?;
            }
        }
        Ok(ids.len())
    }

    /// Removes a delivery and every index row of it.
    fn forget_delivery(&mut self, d: &Delivery) -> StoreResult<()> {
        let (w, id) = (d.webhook_id.as_u128(), d.id.as_u128());
        if let Some(at) = d.next_attempt_at {
            self.outbox.queue.remove((at, id))?;
        }
        if d.status == DeliveryStatus::Pending {
            self.outbox
                .chains
                .remove((w, d.chain_key.as_u128(), d.chain_pos.as_u128()))?;
        }
        self.outbox.by_status.remove((w, d.status.code(), id))?;
        self.outbox.by_webhook.remove((w, id))?;
        if let Some(lead) = d.lead_id {
            self.outbox.by_lead.remove((lead.as_u128(), id))?;
        }
        self.outbox.deliveries.remove(id)?;
        Ok(())
    }

    /// Forgets every delivery about a lead (its erasure): pending ones are not sent, and the
    /// log keeps nothing about it.
    pub(super) fn erase_lead_deliveries(&mut self, lead: Uuid) -> StoreResult<()> {
        let l = lead.as_u128();
        let ids: Vec<u128> = self
            .outbox
            .by_lead
            .range((l, 0)..=(l, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for id in ids {
            match get_record::<Delivery, _>(&self.outbox.deliveries, id)? {
                Some(d) => self.forget_delivery(&d)?,
                None => {
                    self.outbox.by_lead.remove((l, id))?;
                }
            }
        }
        Ok(())
    }

    fn pending_of(&self, webhook: Uuid) -> StoreResult<Vec<Delivery>> {
        let w = webhook.as_u128();
        let code = DeliveryStatus::Pending.code();
        let mut out = Vec::new();
        for row in self
            .outbox
            .by_status
            .range((w, code, 0)..=(w, code, u128::MAX))?
        {
            let (k, _) = row?;
            if let Some(d) = get_record(&self.outbox.deliveries, k.value().2)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn pause_deliveries(&mut self, webhook: Uuid) -> StoreResult<()> {
        for mut d in self.pending_of(webhook)? {
            if let Some(at) = d.next_attempt_at.take() {
                self.outbox.queue.remove((at, d.id.as_u128()))?;
                self.outbox.save(&d)?;
            }
        }
        Ok(())
    }

    fn resume_deliveries(&mut self, webhook: Uuid) -> StoreResult<()> {
        let w = webhook.as_u128();
        let mut keys: Vec<u128> = Vec::new();
        for row in self
            .outbox
            .chains
            .range((w, 0, 0)..=(w, u128::MAX, u128::MAX))?
        {
            let (k, _) = row?;
            let key = k.value().1;
            if keys.last() != Some(&key) {
                keys.push(key);
            }
        }
        for key in keys {
            self.outbox
                .promote_head(webhook, Uuid::from_u128(key), self.now)?;
        }
        Ok(())
    }

    // ----- the outbox -----

    /// Writes a delivery row for each active subscription the change `entry` (at `seq`)
    /// matches. Called by `change_entry`, so the rows commit with the change.
    pub(super) fn enqueue_deliveries(&mut self, seq: u64, entry: &ChangeEntry) -> StoreResult<()> {
        if self.outbox.subs.is_empty() {
            return Ok(());
        }
        let entity = variant_name(&entry.entity);
        let (event, data) = if entry.entity == Entity::Notification {
            match get_record::<Notification, _>(&self.notifications, entry.id.as_u128())? {
                Some(n) => (n.kind.clone(), notification_data(&n)),
                None => return Ok(()),
            }
        } else {
            let op = variant_name(&entry.op);
            (change_event(&entity, &op), change_data(entry, &op))
        };
        self.enqueue_event(seq, &event, &entity, entry, data)
    }

    /// Emits the event of a sequence's `webhook` step (`sequence.<name>`) to the subscriptions
    /// that want it, recorded with a changelog row for the enrollment (whose seq it carries).
    pub fn emit_sequence_event(
        &mut self,
        name: &str,
        enrollment: Uuid,
        lead: &crate::domain::lead::Lead,
        data: serde_json::Value,
    ) -> StoreResult<()> {
        let entry = ChangeEntry {
            entity: Entity::Enrollment,
            id: enrollment,
            op: crate::store::Op::Update,
            at: self.now,
            lead_id: Some(lead.id),
            owner_id: lead.owner_id,
            pool_id: lead.pool_id,
        };
        let seq = self.change_entry(entry.clone())?;
        let event = super::tx::HeldEvent {
            name: format!("{}{name}", crate::domain::webhook::SEQUENCE_EVENT_PREFIX),
            entity: "enrollment".into(),
            data,
        };
        match self.hold_event(seq, event) {
            Some(event) => self.enqueue_event(seq, &event.name, &event.entity, &entry, event.data),
            None => Ok(()),
        }
    }

    /// Writes a delivery of `event` for each active subscription that matches it.
    pub(super) fn enqueue_event(
        &mut self,
        seq: u64,
        event: &str,
        entity: &str,
        entry: &ChangeEntry,
        data: serde_json::Value,
    ) -> StoreResult<()> {
        let targets: Vec<Uuid> = self
            .outbox
            .subs
            .iter()
            .filter(|s| matches(&s.events, event))
            .map(|s| s.id)
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let (event, entity) = (event.to_owned(), entity.to_owned());
        let data = data.to_string();
        let chain_key = entry.lead_id.unwrap_or(entry.id);
        for webhook in targets {
            let id = self.new_id();
            let head = self.outbox.chain_head(webhook, chain_key)?.is_none();
            let d = Delivery {
                id,
                webhook_id: webhook,
                created_at: self.now,
                event: event.clone(),
                seq,
                at: entry.at,
                entity: entity.clone(),
                entity_id: entry.id,
                lead_id: entry.lead_id,
                data: data.clone(),
                chain_key,
                chain_pos: id,
                status: DeliveryStatus::Pending,
                attempts: 0,
                first_attempt_at: None,
                last_attempt_at: None,
                next_attempt_at: head.then_some(self.now),
                last_status_code: None,
                last_error: None,
                delivered_at: None,
                finished_at: None,
                replays: 0,
            };
            let (w, i) = (webhook.as_u128(), id.as_u128());
            self.outbox.chains.insert((w, chain_key.as_u128(), i), i)?;
            if let Some(lead) = entry.lead_id {
                self.outbox.by_lead.insert((lead.as_u128(), i), ())?;
            }
            self.outbox.by_webhook.insert((w, i), ())?;
            self.outbox
                .by_status
                .insert((w, DeliveryStatus::Pending.code(), i), ())?;
            if head {
                self.outbox.queue.insert((self.now, i), ())?;
            }
            self.outbox.save(&d)?;
        }
        Ok(())
    }

    pub fn delivery(&self, id: Uuid) -> StoreResult<Option<Delivery>> {
        get_record(&self.outbox.deliveries, id.as_u128())
    }

    /// Replaces `old` with `new`, keeping the indexes in step, and returns what was stored.
    ///
    /// A delivery that stops being pending leaves its chain, and the next one of the chain is
    /// queued, due now. One that becomes pending again (a replay) joins the end of its chain
    /// at `new.chain_pos`. A pending delivery is queued only while it heads its chain and its
    /// webhook is active: at `new.next_attempt_at`, or now if that is unset.
    pub fn put_delivery(&mut self, old: &Delivery, mut new: Delivery) -> StoreResult<Delivery> {
        let (w, id) = (new.webhook_id.as_u128(), new.id.as_u128());
        let pending = DeliveryStatus::Pending;
        if old.status != new.status {
            self.outbox.by_status.remove((w, old.status.code(), id))?;
            self.outbox
                .by_status
                .insert((w, new.status.code(), id), ())?;
        }
        let link = |d: &Delivery| {
            (d.status == pending).then(|| (w, d.chain_key.as_u128(), d.chain_pos.as_u128()))
        };
        if link(old) != link(&new) {
            if let Some(k) = link(old) {
                self.outbox.chains.remove(k)?;
            }
            if let Some(k) = link(&new) {
                self.outbox.chains.insert(k, id)?;
            }
        }
        if new.status == pending {
            let heads = self.outbox.chain_head(new.webhook_id, new.chain_key)? == Some(id);
            new.next_attempt_at = if heads && self.outbox.is_active(new.webhook_id) {
                Some(new.next_attempt_at.unwrap_or(self.now))
            } else {
                None
            };
        } else {
            new.next_attempt_at = None;
        }
        if old.next_attempt_at != new.next_attempt_at {
            if let Some(at) = old.next_attempt_at {
                self.outbox.queue.remove((at, id))?;
            }
            if let Some(at) = new.next_attempt_at {
                self.outbox.queue.insert((at, id), ())?;
            }
        }
        self.outbox.save(&new)?;
        if old.status == pending && new.status != pending {
            self.outbox
                .promote_head(new.webhook_id, new.chain_key, self.now)?;
        }
        Ok(new)
    }

    /// Deletes up to `limit` delivered or dead deliveries created before `before`, oldest
    /// first, examining at most `scan` rows. Returns how many went and whether the scan
    /// reached deliveries created at or after `before` (nothing older is left to look at).
    pub fn prune_deliveries(
        &mut self,
        before: Millis,
        limit: usize,
        scan: usize,
    ) -> StoreResult<(usize, bool)> {
        let mut doomed = Vec::new();
        let mut done = true;
        for (n, row) in self.outbox.deliveries.iter()?.enumerate() {
            if n >= scan || doomed.len() >= limit {
                done = false;
                break;
            }
            let (_, v) = row?;
            let d: Delivery = decode(v.value())?;
            if d.created_at >= before {
                break;
            }
            if d.status != DeliveryStatus::Pending {
                doomed.push(d);
            }
        }
        for d in &doomed {
            self.forget_delivery(d)?;
        }
        Ok((doomed.len(), done))
    }
}

/// A page of a webhook's delivery log, newest first.
pub type DeliveryPage = (Vec<Delivery>, Option<Uuid>);

impl Snapshot {
    pub fn webhook(&self, id: Uuid) -> StoreResult<Option<Webhook>> {
        get_record(&self.txn.open_table(WEBHOOKS)?, id.as_u128())
    }

    /// Every subscription, oldest first.
    pub fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        let table = self.txn.open_table(WEBHOOKS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    pub fn delivery(&self, id: Uuid) -> StoreResult<Option<Delivery>> {
        get_record(&self.txn.open_table(DELIVERIES)?, id.as_u128())
    }

    /// A webhook's deliveries, newest first, below `before` (an id), of one status if given.
    /// Returns the page and the id to continue below, if there may be more.
    pub fn deliveries_of(
        &self,
        webhook: Uuid,
        status: Option<DeliveryStatus>,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<DeliveryPage> {
        let table = self.txn.open_table(DELIVERIES)?;
        let w = webhook.as_u128();
        let hi = before.map_or(u128::MAX, |b| b.as_u128().saturating_sub(1));
        let mut ids = Vec::with_capacity(limit);
        match status {
            Some(s) => {
                let index = self.txn.open_table(DELIVERY_BY_STATUS)?;
                for row in index.range((w, s.code(), 0)..=(w, s.code(), hi))?.rev() {
                    if ids.len() > limit {
                        break;
                    }
                    ids.push(row?.0.value().2);
                }
            }
            None => {
                let index = self.txn.open_table(DELIVERY_BY_WEBHOOK)?;
                for row in index.range((w, 0)..=(w, hi))?.rev() {
                    if ids.len() > limit {
                        break;
                    }
                    ids.push(row?.0.value().1);
                }
            }
        }
        let more = ids.len() > limit;
        ids.truncate(limit);
        let mut out: Vec<Delivery> = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(d) = get_record(&table, id)? {
                out.push(d);
            }
        }
        let next = if more { out.last().map(|d| d.id) } else { None };
        Ok((out, next))
    }

    /// Up to `limit` queued deliveries due at or before `now`, earliest first, leaving out
    /// those `skip` names (attempts in flight); and the due time of the next one after those.
    pub fn deliveries_due(
        &self,
        now: Millis,
        limit: usize,
        skip: impl Fn(u128) -> bool,
    ) -> StoreResult<(Vec<Delivery>, Option<Millis>)> {
        let queue = self.txn.open_table(DELIVERY_QUEUE)?;
        let table = self.txn.open_table(DELIVERIES)?;
        let mut due = Vec::new();
        for row in queue.iter()? {
            let (k, _) = row?;
            let (at, id) = k.value();
            if skip(id) {
                continue;
            }
            if at > now || due.len() >= limit {
                return Ok((due, Some(at)));
            }
            if let Some(d) = get_record(&table, id)? {
                due.push(d);
            }
        }
        Ok((due, None))
    }

    /// How many deliveries are pending (queued or waiting behind another of their lead).
    pub fn pending_deliveries(&self) -> StoreResult<u64> {
        Ok(self.txn.open_table(DELIVERY_CHAINS)?.len()?)
    }

    pub fn notification_by_id(&self, id: Uuid) -> StoreResult<Option<Notification>> {
        get_record(&self.txn.open_table(NOTIFICATIONS)?, id.as_u128())
    }
}
