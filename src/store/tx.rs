//! `Tx`: the write transaction a writer job runs in, with typed operations that keep records,
//! their secondary indexes and the changelog consistent with each other.

use super::codec::{decode, encode};
use super::lead_index;
use super::tables::*;
use super::{ChangeEntry, Entity, IdempotentResponse, Op, StoreResult, get_record, lead_by_key};
use crate::domain::activity::{Activity, LeadEvent};
use crate::domain::form::Form;
use crate::domain::lead::Lead;
use crate::domain::score::ScoreDetails;
use crate::domain::stats::ActivityStats;
use crate::domain::time::Millis;
use crate::domain::user::{Token, User};
use crate::domain::visitor::{PageView, Visitor};
use redb::{ReadableTable, Table, WriteTransaction};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use uuid::Uuid;

/// Makes time-ordered UUIDv7 ids, strictly increasing within this writer even when many are
/// made in one millisecond or the clock steps back.
pub(super) struct IdGen {
    last_ms: u64,
    counter: u128,
}

impl IdGen {
    pub(super) fn new() -> Self {
        IdGen {
            last_ms: 0,
            counter: 0,
        }
    }

    fn next(&mut self, now: Millis) -> Uuid {
        let ms = u64::try_from(now.max(0)).unwrap_or(0) & ((1 << 48) - 1);
        if ms > self.last_ms {
            self.last_ms = ms;
            // A random start leaves room below 2^73 to count up within the millisecond.
            let mut seed = [0u8; 16];
            if getrandom::fill(&mut seed).is_err() {
                seed = [0; 16];
            }
            self.counter = u128::from_be_bytes(seed) & ((1 << 72) - 1);
        } else {
            self.counter += 1;
            if self.counter >= (1 << 74) {
                self.last_ms += 1;
                self.counter = 0;
            }
        }
        let rand_a = (self.counter >> 62) & 0xfff;
        let rand_b = self.counter & ((1 << 62) - 1);
        let v =
            (u128::from(self.last_ms) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b;
        Uuid::from_u128(v)
    }
}

/// A lead `put_lead` holds back: the version in its tables and the one to write.
struct PendingLead {
    stored: Option<Lead>,
    latest: Lead,
}

/// A changelog row held back by [`Tx::hold_changes`], with the seq it was given.
struct HeldChange {
    seq: u64,
    entry: ChangeEntry,
    event: Option<HeldEvent>,
}

/// A webhook event beyond the one every changelog row makes (a sequence's `webhook` step).
pub(super) struct HeldEvent {
    pub name: String,
    pub entity: String,
    pub data: serde_json::Value,
}

/// One open write transaction with every table open. Jobs in a batch share it in order, so each
/// sees the writes of the jobs before it.
pub struct Tx<'t> {
    /// The time of this batch, from the injected clock.
    pub now: Millis,
    pub(super) next_seq: u64,
    pub(super) ids: &'t mut IdGen,
    /// Set when a user or token changed, so cached authentications are dropped on commit.
    pub(super) auth_changed: bool,
    pub(super) leads: Table<'t, u128, &'static [u8]>,
    pub(super) lead_index: Table<'t, &'static [u8], ()>,
    pub(super) lead_by_email: Table<'t, &'static str, u128>,
    pub(super) lead_by_phone: Table<'t, &'static str, u128>,
    pub(super) activities: Table<'t, u128, &'static [u8]>,
    pub(super) activity_by_lead: Table<'t, (u128, i64, u128), ()>,
    pub(super) lead_events: Table<'t, (u128, u128), &'static [u8]>,
    pub(super) users: Table<'t, u128, &'static [u8]>,
    pub(super) user_by_name: Table<'t, &'static str, u128>,
    pub(super) user_by_email: Table<'t, &'static str, u128>,
    pub(super) tokens: Table<'t, &'static [u8], &'static [u8]>,
    pub(super) changelog: Table<'t, u64, &'static [u8]>,
    pub(super) idempotency: Table<'t, (u128, &'static str), &'static [u8]>,
    pub(super) idempotency_by_lead: Table<'t, (u128, u128, &'static str), ()>,
    pub(super) alt_keys: Table<'t, &'static str, u128>,
    pub(super) alt_keys_by_lead: Table<'t, (u128, &'static str), ()>,
    pub(super) duplicate_keys: Table<'t, (&'static str, u128), ()>,
    pub(super) forms: Table<'t, u128, &'static [u8]>,
    pub(super) form_by_key: Table<'t, &'static str, u128>,
    pub(super) visitors: Table<'t, &'static str, &'static [u8]>,
    pub(super) page_views: Table<'t, (&'static str, u128), &'static [u8]>,
    pub(super) lead_visitors: Table<'t, (u128, &'static str), ()>,
    pub(super) lead_stats: Table<'t, u128, &'static [u8]>,
    pub(super) score_details: Table<'t, u128, &'static [u8]>,
    pub(super) score_review: Table<'t, (i64, u128), ()>,
    pub(super) pools: Table<'t, u128, &'static [u8]>,
    pub(super) pool_by_name: Table<'t, &'static str, u128>,
    pub(super) pool_claims: Table<'t, (u128, u128, u128), i64>,
    pub(super) claim_by_lead: Table<'t, u128, (u128, u128)>,
    pub(super) owner_load: Table<'t, u128, u64>,
    pub(super) round_robin: Table<'t, &'static str, u128>,
    pub(super) timers: Table<'t, (i64, u128), &'static [u8]>,
    pub(super) timers_by_subject: Table<'t, (u128, u128), i64>,
    pub(super) lead_sla: Table<'t, u128, &'static [u8]>,
    pub(super) tasks: Table<'t, u128, &'static [u8]>,
    pub(super) task_by_owner: Table<'t, (u128, i64, u128), bool>,
    pub(super) task_by_lead: Table<'t, (u128, u128), ()>,
    pub(super) notifications: Table<'t, u128, &'static [u8]>,
    pub(super) notification_by_recipient: Table<'t, (u128, u128), ()>,
    pub(super) notification_by_lead: Table<'t, (u128, u128), ()>,
    pub(super) enrollments: Table<'t, u128, &'static [u8]>,
    pub(super) enrollment_by_lead: Table<'t, (u128, u128), ()>,
    pub(super) open_enrollment: Table<'t, (u128, &'static str), u128>,
    pub(super) mails: Table<'t, u128, &'static [u8]>,
    pub(super) mail_queue: Table<'t, (i64, u128), ()>,
    pub(super) mail_by_lead: Table<'t, (u128, u128), ()>,
    pub(super) mail_tokens: Table<'t, &'static str, u128>,
    /// The earliest unsent mail queued in this transaction: the sender is woken on commit.
    pub(super) earliest_mail: Option<Millis>,
    /// The earliest timer added in this transaction: the scheduler is woken for it on commit.
    pub(super) earliest_timer: Option<Millis>,
    /// The webhook outbox (`tx_outbox`): every changelog row is offered to it.
    pub(super) outbox: super::tx_outbox::Outbox<'t>,
    /// Leads written by the running job and not yet in their tables (see `put_lead`).
    pending_leads: HashMap<u128, PendingLead>,
    /// Changelog rows held back by [`Tx::hold_changes`] until the new lead they belong to is
    /// placed, in seq order.
    held_changes: Option<Vec<HeldChange>>,
    /// Whether other writes are queued behind this batch.
    waiting: &'t (dyn Fn() -> bool + 't),
}

impl<'t> Tx<'t> {
    /// Whether ordinary writes are waiting for the writer: queued behind this batch, or in it
    /// after this job. A long background job (a rescore) uses it to end its share early, so
    /// they wait only a few milliseconds. Background writes do not count.
    pub fn writes_waiting(&self) -> bool {
        (self.waiting)()
    }

    pub(super) fn open(
        txn: &'t WriteTransaction,
        now: Millis,
        next_seq: u64,
        ids: &'t mut IdGen,
        waiting: &'t (dyn Fn() -> bool + 't),
    ) -> StoreResult<Tx<'t>> {
        Ok(Tx {
            now,
            next_seq,
            ids,
            waiting,
            auth_changed: false,
            leads: txn.open_table(LEADS)?,
            lead_index: txn.open_table(LEAD_INDEX)?,
            lead_by_email: txn.open_table(LEAD_BY_EMAIL)?,
            lead_by_phone: txn.open_table(LEAD_BY_PHONE)?,
            activities: txn.open_table(ACTIVITIES)?,
            activity_by_lead: txn.open_table(ACTIVITY_BY_LEAD)?,
            lead_events: txn.open_table(LEAD_EVENTS)?,
            users: txn.open_table(USERS)?,
            user_by_name: txn.open_table(USER_BY_NAME)?,
            user_by_email: txn.open_table(USER_BY_EMAIL)?,
            tokens: txn.open_table(TOKENS)?,
            changelog: txn.open_table(CHANGELOG)?,
            idempotency: txn.open_table(IDEMPOTENCY)?,
            idempotency_by_lead: txn.open_table(IDEMPOTENCY_BY_LEAD)?,
            alt_keys: txn.open_table(ALT_KEYS)?,
            alt_keys_by_lead: txn.open_table(ALT_KEYS_BY_LEAD)?,
            duplicate_keys: txn.open_table(DUPLICATE_KEYS)?,
            forms: txn.open_table(FORMS)?,
            form_by_key: txn.open_table(FORM_BY_KEY)?,
            visitors: txn.open_table(VISITORS)?,
            page_views: txn.open_table(PAGE_VIEWS)?,
            lead_visitors: txn.open_table(LEAD_VISITORS)?,
            lead_stats: txn.open_table(LEAD_STATS)?,
            score_details: txn.open_table(SCORE_DETAILS)?,
            score_review: txn.open_table(SCORE_REVIEW)?,
            pools: txn.open_table(POOLS)?,
            pool_by_name: txn.open_table(POOL_BY_NAME)?,
            pool_claims: txn.open_table(POOL_CLAIMS)?,
            claim_by_lead: txn.open_table(CLAIM_BY_LEAD)?,
            owner_load: txn.open_table(OWNER_LOAD)?,
            round_robin: txn.open_table(ROUND_ROBIN)?,
            timers: txn.open_table(TIMERS)?,
            timers_by_subject: txn.open_table(TIMERS_BY_SUBJECT)?,
            lead_sla: txn.open_table(LEAD_SLA)?,
            tasks: txn.open_table(TASKS)?,
            task_by_owner: txn.open_table(TASK_BY_OWNER)?,
            task_by_lead: txn.open_table(TASK_BY_LEAD)?,
            notifications: txn.open_table(NOTIFICATIONS)?,
            notification_by_recipient: txn.open_table(NOTIFICATION_BY_RECIPIENT)?,
            notification_by_lead: txn.open_table(NOTIFICATION_BY_LEAD)?,
            enrollments: txn.open_table(ENROLLMENTS)?,
            enrollment_by_lead: txn.open_table(ENROLLMENT_BY_LEAD)?,
            open_enrollment: txn.open_table(OPEN_ENROLLMENT)?,
            mails: txn.open_table(MAILS)?,
            mail_queue: txn.open_table(MAIL_QUEUE)?,
            mail_by_lead: txn.open_table(MAIL_BY_LEAD)?,
            mail_tokens: txn.open_table(MAIL_TOKENS)?,
            earliest_mail: None,
            earliest_timer: None,
            outbox: super::tx_outbox::Outbox::open(txn)?,
            pending_leads: HashMap::new(),
            held_changes: None,
        })
    }

    pub fn new_id(&mut self) -> Uuid {
        self.ids.next(self.now)
    }

    // ----- leads -----

    pub fn lead(&self, id: Uuid) -> StoreResult<Option<Lead>> {
        if let Some(pending) = self.pending_leads.get(&id.as_u128()) {
            return Ok(Some(pending.latest.clone()));
        }
        get_record(&self.leads, id.as_u128())
    }

    /// The lead with this email, or the lead that absorbed a lead with it.
    pub fn lead_id_by_email(&mut self, email: &str) -> StoreResult<Option<Uuid>> {
        self.flush_leads()?;
        lead_by_key(&self.lead_by_email, &self.alt_keys, "e:", email)
    }

    /// The lead with this phone, or the lead that absorbed a lead with it.
    pub fn lead_id_by_phone(&mut self, phone: &str) -> StoreResult<Option<Uuid>> {
        self.flush_leads()?;
        lead_by_key(&self.lead_by_phone, &self.alt_keys, "p:", phone)
    }

    pub fn alt_key(&self, key: &str) -> StoreResult<Option<Uuid>> {
        Ok(self.alt_keys.get(key)?.map(|v| Uuid::from_u128(v.value())))
    }

    /// Makes `key` find `lead` (see `tables::ALT_KEYS`).
    pub fn put_alt_key(&mut self, lead: Uuid, key: &str) -> StoreResult<()> {
        let l = lead.as_u128();
        if let Some(previous) = self.alt_keys.insert(key, l)?.map(|v| v.value())
            && previous != l
        {
            self.alt_keys_by_lead.remove((previous, key))?;
        }
        self.alt_keys_by_lead.insert((l, key), ())?;
        Ok(())
    }

    fn alt_keys_of(&self, lead: u128) -> StoreResult<Vec<String>> {
        Ok(self
            .alt_keys_by_lead
            .range((lead, "")..=(lead, "\u{10FFFF}"))?
            .map(|r| r.map(|(k, _)| k.value().1.to_owned()))
            .collect::<Result<_, _>>()?)
    }

    /// Moves every alt key of `from` to `into` (a merge).
    pub fn move_alt_keys(&mut self, from: Uuid, into: Uuid) -> StoreResult<()> {
        for key in self.alt_keys_of(from.as_u128())? {
            self.alt_keys_by_lead
                .remove((from.as_u128(), key.as_str()))?;
            self.put_alt_key(into, &key)?;
        }
        Ok(())
    }

    /// Writes `new` (replacing `old`, if given) with its index rows and email/phone keys.
    ///
    /// A job often writes one lead several times (created, scored, routed, enrolled); the
    /// record and its index rows go to their tables once, when the job ends or something reads
    /// those tables (`flush_leads`), so the rows of the in-between versions are never written
    /// and removed again. `lead` sees the latest version meanwhile. Owner load and claims move
    /// at once, because routing the next lead reads them.
    pub fn put_lead(&mut self, old: Option<&Lead>, new: &Lead) -> StoreResult<()> {
        let old_open = old.and_then(super::tx_work::open_owner);
        self.shift_load(old_open, super::tx_work::open_owner(new))?;
        if old.is_some_and(|o| o.owner_id != new.owner_id) {
            self.drop_claim(new.id)?;
        }
        match self.pending_leads.entry(new.id.as_u128()) {
            Entry::Occupied(mut e) => e.get_mut().latest = new.clone(),
            Entry::Vacant(e) => {
                e.insert(PendingLead {
                    stored: old.cloned(),
                    latest: new.clone(),
                });
            }
        }
        Ok(())
    }

    /// Writes the leads `put_lead` holds back to their tables. The writer calls it after each
    /// job; reads of the lead tables other than `lead` call it first.
    pub fn flush_leads(&mut self) -> StoreResult<()> {
        if self.pending_leads.is_empty() {
            return Ok(());
        }
        let mut pending: Vec<PendingLead> = self.pending_leads.drain().map(|(_, p)| p).collect();
        // Id order keeps the B-tree inserts local and the result independent of hashing.
        pending.sort_by_key(|p| p.latest.id);
        for p in pending {
            self.write_lead_rows(p.stored.as_ref(), &p.latest)?;
        }
        Ok(())
    }

    fn write_lead_rows(&mut self, old: Option<&Lead>, new: &Lead) -> StoreResult<()> {
        let id = new.id.as_u128();
        self.leads.insert(id, encode(new).as_slice())?;
        let (removed, added) = lead_index::diff(old, Some(new));
        for row in &removed {
            self.lead_index.remove(row.as_slice())?;
        }
        for row in &added {
            self.lead_index.insert(row.as_slice(), ())?;
        }
        let old_email = old.and_then(|o| o.email.as_deref());
        if old_email != new.email.as_deref() {
            if let Some(e) = old_email {
                self.lead_by_email.remove(e)?;
            }
            if let Some(e) = new.email.as_deref() {
                self.lead_by_email.insert(e, id)?;
            }
        }
        let old_phone = old.and_then(|o| o.phone.as_deref());
        if old_phone != new.phone.as_deref() {
            if let Some(p) = old_phone {
                self.lead_by_phone.remove(p)?;
            }
            if let Some(p) = new.phone.as_deref() {
                self.lead_by_phone.insert(p, id)?;
            }
        }
        if !old.is_some_and(|o| crate::domain::dedupe::same_duplicate_keys(o, new)) {
            let old_keys = old
                .map(crate::domain::dedupe::duplicate_keys)
                .unwrap_or_default();
            let new_keys = crate::domain::dedupe::duplicate_keys(new);
            for k in old_keys.iter().filter(|k| !new_keys.contains(k)) {
                self.duplicate_keys.remove((k.as_str(), id))?;
            }
            for k in new_keys.iter().filter(|k| !old_keys.contains(k)) {
                self.duplicate_keys.insert((k.as_str(), id), ())?;
            }
        }
        Ok(())
    }

    /// Removes a lead merged into `into` once its activities, events, keys, visitors, work
    /// and nurture have moved there. Unlike an erasure, what was said about the person keeps
    /// going: webhook deliveries of its changes, and stored idempotent replies (a retried
    /// create answers as it first did, not as a new create).
    pub fn retire_merged_lead(&mut self, gone: &Lead, into: Uuid) -> StoreResult<()> {
        let (f, i) = (gone.id.as_u128(), into.as_u128());
        let idem_keys: Vec<(u128, String)> = self
            .idempotency_by_lead
            .range((f, 0, "")..=(f, u128::MAX, "\u{10FFFF}"))?
            .map(|r| r.map(|(k, _)| (k.value().1, k.value().2.to_owned())))
            .collect::<Result<_, _>>()?;
        for (caller, key) in idem_keys {
            self.idempotency_by_lead.remove((f, caller, key.as_str()))?;
            self.idempotency_by_lead
                .insert((i, caller, key.as_str()), ())?;
        }
        // Events written since the move (an enrollment ended by the merge) go along too.
        self.move_activities(gone.id, into)?;
        // What rules put off for later is still to be done, to the survivor; its
        // `rule_later` events moved with the rest, keeping their (the timers') ids.
        for t in self.timers_of(gone.id)? {
            if t.kind == crate::domain::work::TimerKind::RuleLater {
                self.move_timer(&t, into)?;
            }
        }
        // Its webhook deliveries stay filed under its own id; the survivor's `m:` key finds
        // them when that person is erased.
        self.remove_lead(gone)
    }

    /// Erases a lead and everything held about it: index rows, activities (form payloads
    /// included), events, alt keys, its visitors and their page views, webhook deliveries
    /// about it and the leads merged into it, and stored idempotent responses that contain it.
    pub fn erase_lead(&mut self, lead: &Lead) -> StoreResult<()> {
        self.erase_lead_deliveries(lead.id)?;
        for key in self.alt_keys_of(lead.id.as_u128())? {
            if let Some(gone) = key.strip_prefix("m:").and_then(|g| Uuid::parse_str(g).ok()) {
                self.erase_lead_deliveries(gone)?;
            }
        }
        self.remove_lead(lead)
    }

    /// Everything of [`Tx::erase_lead`] but the webhook deliveries.
    fn remove_lead(&mut self, lead: &Lead) -> StoreResult<()> {
        self.flush_leads()?;
        let id = lead.id.as_u128();
        self.erase_lead_work(lead)?;
        self.erase_lead_nurture(lead)?;
        self.leads.remove(id)?;
        self.lead_stats.remove(id)?;
        if let Some(details) = self.score_details(lead.id)? {
            if let Some(at) = details.review_at {
                self.score_review.remove((at, id))?;
            }
            self.score_details.remove(id)?;
        }
        for key in crate::domain::dedupe::duplicate_keys(lead) {
            self.duplicate_keys.remove((key.as_str(), id))?;
        }
        for key in self.alt_keys_of(id)? {
            self.alt_keys_by_lead.remove((id, key.as_str()))?;
            self.alt_keys.remove(key.as_str())?;
        }
        for vid in self.visitors_of(lead.id)? {
            self.lead_visitors.remove((id, vid.as_str()))?;
            self.visitors.remove(vid.as_str())?;
            self.take_page_views(&vid)?;
        }
        for row in lead_index::rows(lead) {
            self.lead_index.remove(row.as_slice())?;
        }
        if let Some(e) = lead.email.as_deref() {
            self.lead_by_email.remove(e)?;
        }
        if let Some(p) = lead.phone.as_deref() {
            self.lead_by_phone.remove(p)?;
        }
        let activity_keys: Vec<(u128, i64, u128)> = self
            .activity_by_lead
            .range((id, i64::MIN, 0)..=(id, i64::MAX, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        for key in activity_keys {
            self.activity_by_lead.remove(key)?;
            self.activities.remove(key.2)?;
        }
        let event_keys: Vec<(u128, u128)> = self
            .lead_events
            .range((id, 0)..=(id, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        for key in event_keys {
            self.lead_events.remove(key)?;
        }
        let idem_keys: Vec<(u128, u128, String)> = self
            .idempotency_by_lead
            .range((id, 0, "")..=(id, u128::MAX, "\u{10FFFF}"))?
            .map(|r| {
                r.map(|(k, _)| {
                    let (l, c, key) = k.value();
                    (l, c, key.to_owned())
                })
            })
            .collect::<Result<_, _>>()?;
        for (l, caller, key) in idem_keys {
            self.idempotency_by_lead.remove((l, caller, key.as_str()))?;
            self.idempotency.remove((caller, key.as_str()))?;
        }
        Ok(())
    }

    /// See [`super::has_activity_text`].
    pub fn has_activity_text(&self, lead: Uuid, kind: &str, text: &str) -> StoreResult<bool> {
        super::has_activity_text(&self.activity_by_lead, &self.activities, lead, kind, text)
    }

    /// Re-points `from`'s activities and events at `into` (a merge). Activities keep their ids.
    pub fn move_activities(&mut self, from: Uuid, into: Uuid) -> StoreResult<usize> {
        let f = from.as_u128();
        let keys: Vec<(u128, i64, u128)> = self
            .activity_by_lead
            .range((f, i64::MIN, 0)..=(f, i64::MAX, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        for key in &keys {
            self.activity_by_lead.remove(*key)?;
            if let Some(mut a) = get_record::<Activity, _>(&self.activities, key.2)? {
                a.lead_id = into;
                self.put_activity(&a)?;
            }
        }
        let events: Vec<(u128, u128)> = self
            .lead_events
            .range((f, 0)..=(f, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        for key in events {
            let moved = self
                .lead_events
                .remove(key)?
                .map(|v| decode::<LeadEvent>(v.value()));
            if let Some(e) = moved {
                let mut e = e?;
                e.lead_id = into;
                self.put_event(&e)?;
            }
        }
        for vid in self.visitors_of(from)? {
            self.lead_visitors.remove((f, vid.as_str()))?;
            self.link_visitor(into, &vid)?;
            if let Some(mut v) = self.visitor(&vid)? {
                v.lead_id = Some(into);
                self.put_visitor(&v)?;
            }
        }
        Ok(keys.len())
    }

    // ----- forms -----

    pub fn form(&self, id: Uuid) -> StoreResult<Option<Form>> {
        get_record(&self.forms, id.as_u128())
    }

    pub fn form_id_by_key(&self, key: &str) -> StoreResult<Option<Uuid>> {
        Ok(self
            .form_by_key
            .get(key)?
            .map(|v| Uuid::from_u128(v.value())))
    }

    pub fn put_form(&mut self, old: Option<&Form>, new: &Form) -> StoreResult<()> {
        if let Some(old) = old
            && old.key != new.key
        {
            self.form_by_key.remove(old.key.as_str())?;
        }
        self.forms
            .insert(new.id.as_u128(), encode(new).as_slice())?;
        self.form_by_key
            .insert(new.key.as_str(), new.id.as_u128())?;
        Ok(())
    }

    pub fn delete_form(&mut self, form: &Form) -> StoreResult<()> {
        self.forms.remove(form.id.as_u128())?;
        self.form_by_key.remove(form.key.as_str())?;
        Ok(())
    }

    // ----- visitors -----

    pub fn visitor(&self, id: &str) -> StoreResult<Option<Visitor>> {
        match self.visitors.get(id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn put_visitor(&mut self, v: &Visitor) -> StoreResult<()> {
        self.visitors.insert(v.id.as_str(), encode(v).as_slice())?;
        Ok(())
    }

    /// Records an anonymous page view, dropping the visitor's oldest beyond the bound. Returns
    /// how many views the visitor now holds.
    pub fn add_page_view(&mut self, visitor: &str, view: &PageView, max: u32) -> StoreResult<u32> {
        let id = self.new_id().as_u128();
        self.page_views
            .insert((visitor, id), encode(view).as_slice())?;
        let mut held = self
            .page_views
            .range((visitor, 0)..=(visitor, u128::MAX))?
            .count() as u32;
        while held > max {
            let oldest = self
                .page_views
                .range((visitor, 0)..=(visitor, u128::MAX))?
                .next()
                .transpose()?
                .map(|(k, _)| k.value().1);
            match oldest {
                Some(k) => {
                    self.page_views.remove((visitor, k))?;
                    held -= 1;
                }
                None => break,
            }
        }
        Ok(held)
    }

    /// Removes and returns a visitor's anonymous page views, oldest first.
    pub fn take_page_views(&mut self, visitor: &str) -> StoreResult<Vec<PageView>> {
        let rows: Vec<(u128, PageView)> = self
            .page_views
            .range((visitor, 0)..=(visitor, u128::MAX))?
            .map(|r| {
                let (k, v) = r?;
                Ok((k.value().1, decode(v.value())?))
            })
            .collect::<StoreResult<_>>()?;
        for (k, _) in &rows {
            self.page_views.remove((visitor, *k))?;
        }
        Ok(rows.into_iter().map(|(_, v)| v).collect())
    }

    pub fn link_visitor(&mut self, lead: Uuid, visitor: &str) -> StoreResult<()> {
        self.lead_visitors.insert((lead.as_u128(), visitor), ())?;
        Ok(())
    }

    pub fn visitors_of(&self, lead: Uuid) -> StoreResult<Vec<String>> {
        let l = lead.as_u128();
        Ok(self
            .lead_visitors
            .range((l, "")..=(l, "\u{10FFFF}"))?
            .map(|r| r.map(|(k, _)| k.value().1.to_owned()))
            .collect::<Result<_, _>>()?)
    }

    // ----- activities and events -----

    /// Writes an activity and counts it in its lead's activity summary.
    pub fn put_activity(&mut self, a: &Activity) -> StoreResult<()> {
        let id = a.id.as_u128();
        self.activities.insert(id, encode(a).as_slice())?;
        self.activity_by_lead
            .insert((a.lead_id.as_u128(), a.occurred_at, id), ())?;
        let mut stats = self.lead_stats(a.lead_id)?;
        stats.record(a);
        self.lead_stats
            .insert(a.lead_id.as_u128(), encode(&stats).as_slice())?;
        Ok(())
    }

    /// A lead's activity summary (empty when it has no activity).
    pub fn lead_stats(&self, lead: Uuid) -> StoreResult<ActivityStats> {
        Ok(get_record(&self.lead_stats, lead.as_u128())?.unwrap_or_default())
    }

    pub fn score_details(&self, lead: Uuid) -> StoreResult<Option<ScoreDetails>> {
        get_record(&self.score_details, lead.as_u128())
    }

    /// Stores a lead's score details and keeps the review index in step with `review_at`.
    pub fn put_score_details(
        &mut self,
        lead: Uuid,
        old: Option<&ScoreDetails>,
        new: &ScoreDetails,
    ) -> StoreResult<()> {
        let id = lead.as_u128();
        let old_review = old.and_then(|d| d.review_at);
        if old_review != new.review_at {
            if let Some(at) = old_review {
                self.score_review.remove((at, id))?;
            }
            if let Some(at) = new.review_at {
                self.score_review.insert((at, id), ())?;
            }
        }
        self.score_details.insert(id, encode(new).as_slice())?;
        Ok(())
    }

    pub fn put_event(&mut self, e: &LeadEvent) -> StoreResult<()> {
        self.lead_events
            .insert((e.lead_id.as_u128(), e.id.as_u128()), encode(e).as_slice())?;
        Ok(())
    }

    /// One event of a lead's timeline.
    pub fn lead_event(&self, lead: Uuid, id: Uuid) -> StoreResult<Option<LeadEvent>> {
        match self.lead_events.get((lead.as_u128(), id.as_u128()))? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Records a system event on a lead's timeline.
    pub fn event(
        &mut self,
        lead_id: Uuid,
        kind: &str,
        actor_id: Option<Uuid>,
        data: serde_json::Value,
    ) -> StoreResult<()> {
        let e = LeadEvent {
            id: self.new_id(),
            lead_id,
            at: self.now,
            kind: kind.to_owned(),
            actor_id,
            data: data.to_string(),
        };
        self.put_event(&e)
    }

    // ----- users and tokens -----

    pub fn user(&self, id: Uuid) -> StoreResult<Option<User>> {
        get_record(&self.users, id.as_u128())
    }

    pub fn user_id_by_name(&self, name: &str) -> StoreResult<Option<Uuid>> {
        Ok(self
            .user_by_name
            .get(name.to_lowercase().as_str())?
            .map(|v| Uuid::from_u128(v.value())))
    }

    pub fn user_id_by_email(&self, email: &str) -> StoreResult<Option<Uuid>> {
        Ok(self
            .user_by_email
            .get(email)?
            .map(|v| Uuid::from_u128(v.value())))
    }

    pub fn users(&self) -> StoreResult<Vec<User>> {
        let mut out = Vec::new();
        for row in self.users.iter()? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    pub fn put_user(&mut self, old: Option<&User>, new: &User) -> StoreResult<()> {
        self.auth_changed = true;
        let id = new.id.as_u128();
        self.users.insert(id, encode(new).as_slice())?;
        let old_name = old.map(|o| o.name.to_lowercase());
        let new_name = new.name.to_lowercase();
        if old_name.as_deref() != Some(new_name.as_str()) {
            if let Some(n) = old_name {
                self.user_by_name.remove(n.as_str())?;
            }
            self.user_by_name.insert(new_name.as_str(), id)?;
        }
        let old_email = old.and_then(|o| o.email.as_deref());
        if old_email != new.email.as_deref() {
            if let Some(e) = old_email {
                self.user_by_email.remove(e)?;
            }
            if let Some(e) = new.email.as_deref() {
                self.user_by_email.insert(e, id)?;
            }
        }
        Ok(())
    }

    /// Removes a user and every token they hold.
    pub fn delete_user(&mut self, user: &User) -> StoreResult<()> {
        self.auth_changed = true;
        self.users.remove(user.id.as_u128())?;
        self.user_by_name
            .remove(user.name.to_lowercase().as_str())?;
        if let Some(e) = user.email.as_deref() {
            self.user_by_email.remove(e)?;
        }
        let mut doomed = Vec::new();
        for row in self.tokens.iter()? {
            let (k, v) = row?;
            let t: Token = decode(v.value())?;
            if t.user_id == user.id {
                doomed.push(k.value().to_vec());
            }
        }
        for k in doomed {
            self.tokens.remove(k.as_slice())?;
        }
        Ok(())
    }

    pub fn put_token(&mut self, hash: &[u8; 32], token: &Token) -> StoreResult<()> {
        self.auth_changed = true;
        self.tokens
            .insert(hash.as_slice(), encode(token).as_slice())?;
        Ok(())
    }

    pub fn delete_token(&mut self, hash: &[u8; 32]) -> StoreResult<bool> {
        self.auth_changed = true;
        Ok(self.tokens.remove(hash.as_slice())?.is_some())
    }

    /// Whether any lead is owned by `user` (one index probe).
    pub fn owns_leads(&mut self, user: Uuid) -> StoreResult<bool> {
        self.flush_leads()?;
        let prefix = lead_index::prefix(
            lead_index::Field::Owner,
            user.as_bytes(),
            lead_index::SortKey::Created,
        );
        let hi = lead_index::prefix_end(&prefix);
        Ok(self
            .lead_index
            .range(prefix.as_slice()..hi.as_slice())?
            .next()
            .is_some())
    }

    // ----- changelog -----

    /// Appends a change to the changelog in this transaction; returns its seq.
    pub fn change(
        &mut self,
        entity: Entity,
        id: Uuid,
        op: Op,
        lead: Option<&Lead>,
    ) -> StoreResult<u64> {
        self.change_entry(ChangeEntry {
            entity,
            id,
            op,
            at: self.now,
            lead_id: lead.map(|l| l.id),
            owner_id: lead.and_then(|l| l.owner_id),
            pool_id: lead.and_then(|l| l.pool_id),
        })
    }

    /// Appends a prepared changelog row; returns its seq.
    pub fn change_entry(&mut self, entry: ChangeEntry) -> StoreResult<u64> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(held) = self.held_changes.as_mut() {
            held.push(HeldChange {
                seq,
                entry,
                event: None,
            });
            return Ok(seq);
        }
        self.changelog.insert(seq, encode(&entry).as_slice())?;
        self.enqueue_deliveries(seq, &entry)?;
        Ok(seq)
    }

    /// Holds back the changelog rows (and their webhook deliveries) written from now on, until
    /// [`Tx::release_changes`]. A new lead's first rows are written before routing gives it an
    /// owner or a pool, and the feed shows a row only to those who may see its lead as the row
    /// says; held, they carry where the lead ends up when this job commits it.
    pub fn hold_changes(&mut self) {
        self.held_changes.get_or_insert_with(Vec::new);
    }

    /// Writes the held changelog rows in seq order. The rows of `lead` that the feed shows by
    /// the lead's owner and pool (the lead, its activities, enrollments and mail) take the
    /// owner and pool `lead` has now.
    pub fn release_changes(&mut self, lead: Option<&Lead>) -> StoreResult<()> {
        let Some(held) = self.held_changes.take() else {
            return Ok(());
        };
        for mut h in held {
            if let Some(lead) = lead
                && h.entry.lead_id == Some(lead.id)
                && h.entry.entity.visible_by_lead()
            {
                h.entry.owner_id = lead.owner_id;
                h.entry.pool_id = lead.pool_id;
            }
            self.changelog.insert(h.seq, encode(&h.entry).as_slice())?;
            self.enqueue_deliveries(h.seq, &h.entry)?;
            if let Some(event) = h.event {
                self.enqueue_event(h.seq, &event.name, &event.entity, &h.entry, event.data)?;
            }
        }
        Ok(())
    }

    /// Holds an extra webhook event of the changelog row `seq` if that row is held; gives the
    /// event back otherwise, for the caller to enqueue now.
    pub(super) fn hold_event(&mut self, seq: u64, event: HeldEvent) -> Option<HeldEvent> {
        match self
            .held_changes
            .as_mut()
            .and_then(|h| h.last_mut())
            .filter(|h| h.seq == seq)
        {
            Some(h) => {
                h.event = Some(event);
                None
            }
            None => Some(event),
        }
    }

    // ----- idempotency -----

    pub fn idempotent_response(
        &self,
        caller: Uuid,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>> {
        match self.idempotency.get((caller.as_u128(), key))? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Stores the first response to an idempotent create, linked to the leads it names so an
    /// erasure removes it too.
    pub fn put_idempotent_response(
        &mut self,
        caller: Uuid,
        key: &str,
        response: &IdempotentResponse,
        leads: &[Uuid],
    ) -> StoreResult<()> {
        self.idempotency
            .insert((caller.as_u128(), key), encode(response).as_slice())?;
        for lead in leads {
            self.idempotency_by_lead
                .insert((lead.as_u128(), caller.as_u128(), key), ())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_strictly_increasing() {
        let mut g = IdGen::new();
        let mut last = Uuid::nil();
        for i in 0..10_000 {
            // the clock stands still, then steps back: ids still increase
            let now = if i < 5_000 {
                1_700_000_000_000
            } else {
                1_699_999_999_000
            };
            let id = g.next(now);
            assert_eq!(id.get_version_num(), 7);
            assert!(id > last);
            last = id;
        }
    }
}
