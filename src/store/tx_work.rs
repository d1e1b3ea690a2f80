//! `Tx` operations for the sales floor: pools and claims, owner loads, round-robin positions,
//! durable timers, SLA state, tasks and notifications — each kept consistent with its indexes.

use super::codec::{decode, encode};
use super::tx::Tx;
use super::{ChangeEntry, Entity, Op, StoreResult, get_record};
use crate::domain::lead::{Lead, Stage, Status};
use crate::domain::sla::SlaState;
use crate::domain::time::Millis;
use crate::domain::work::{Notification, Pool, Task, Timer, TimerKind};
use redb::ReadableTable;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The owner a lead counts against, if it is open (capacity is about leads still being worked).
pub fn open_owner(lead: &Lead) -> Option<Uuid> {
    let closed = matches!(lead.stage, Stage::Customer | Stage::Disqualified)
        || matches!(lead.status, Status::Converted | Status::Unqualified);
    if closed { None } else { lead.owner_id }
}

/// Where a task sits in its owner's due-time index (no due time sorts last).
fn task_key(t: &Task) -> (u128, i64, u128) {
    (
        t.owner_id.as_u128(),
        t.due_at.unwrap_or(i64::MAX),
        t.id.as_u128(),
    )
}

impl Tx<'_> {
    // ----- owner load -----

    /// Open leads `owner` holds now.
    pub fn load_of(&self, owner: Uuid) -> StoreResult<u64> {
        Ok(self
            .owner_load
            .get(owner.as_u128())?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Moves one unit of load when a lead's open owner changes (called by `put_lead` and
    /// `erase_lead`).
    pub(super) fn shift_load(&mut self, from: Option<Uuid>, to: Option<Uuid>) -> StoreResult<()> {
        if from == to {
            return Ok(());
        }
        if let Some(o) = from {
            let n = self.load_of(o)?.saturating_sub(1);
            if n == 0 {
                self.owner_load.remove(o.as_u128())?;
            } else {
                self.owner_load.insert(o.as_u128(), n)?;
            }
        }
        if let Some(o) = to {
            let n = self.load_of(o)? + 1;
            self.owner_load.insert(o.as_u128(), n)?;
        }
        Ok(())
    }

    // ----- pools and claims -----

    pub fn pool(&self, id: Uuid) -> StoreResult<Option<Pool>> {
        get_record(&self.pools, id.as_u128())
    }

    pub fn pool_by_name(&self, name: &str) -> StoreResult<Option<Pool>> {
        match self.pool_by_name.get(name.to_lowercase().as_str())? {
            Some(id) => self.pool(Uuid::from_u128(id.value())),
            None => Ok(None),
        }
    }

    pub fn pools(&self) -> StoreResult<Vec<Pool>> {
        let mut out = Vec::new();
        for row in self.pools.iter()? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    pub fn put_pool(&mut self, old: Option<&Pool>, new: &Pool) -> StoreResult<()> {
        let id = new.id.as_u128();
        self.pools.insert(id, encode(new).as_slice())?;
        let old_name = old.map(|p| p.name.to_lowercase());
        let new_name = new.name.to_lowercase();
        if old_name.as_deref() != Some(new_name.as_str()) {
            if let Some(n) = old_name {
                self.pool_by_name.remove(n.as_str())?;
            }
            self.pool_by_name.insert(new_name.as_str(), id)?;
        }
        Ok(())
    }

    /// Leads `rep` holds now from claims on `pool`.
    pub fn claims_held(&self, pool: Uuid, rep: Uuid) -> StoreResult<u64> {
        let (p, r) = (pool.as_u128(), rep.as_u128());
        let mut n = 0;
        for row in self.pool_claims.range((p, r, 0)..=(p, r, u128::MAX))? {
            row?;
            n += 1;
        }
        Ok(n)
    }

    pub fn put_claim(&mut self, pool: Uuid, rep: Uuid, lead: Uuid) -> StoreResult<()> {
        self.drop_claim(lead)?;
        self.pool_claims
            .insert((pool.as_u128(), rep.as_u128(), lead.as_u128()), self.now)?;
        self.claim_by_lead
            .insert(lead.as_u128(), (pool.as_u128(), rep.as_u128()))?;
        Ok(())
    }

    /// The pool a lead was claimed from, while its claimer still holds it.
    pub fn claim_of(&self, lead: Uuid) -> StoreResult<Option<(Uuid, Uuid)>> {
        Ok(self.claim_by_lead.get(lead.as_u128())?.map(|v| {
            let (p, r) = v.value();
            (Uuid::from_u128(p), Uuid::from_u128(r))
        }))
    }

    /// Ends a lead's claim (its owner changed or it was erased).
    pub(super) fn drop_claim(&mut self, lead: Uuid) -> StoreResult<()> {
        let old = self
            .claim_by_lead
            .remove(lead.as_u128())?
            .map(|v| v.value());
        if let Some((p, r)) = old {
            self.pool_claims.remove((p, r, lead.as_u128()))?;
        }
        Ok(())
    }

    // ----- round robin -----

    pub fn round_robin_positions(&self) -> StoreResult<BTreeMap<String, Uuid>> {
        let mut out = BTreeMap::new();
        for row in self.round_robin.iter()? {
            let (k, v) = row?;
            out.insert(k.value().to_owned(), Uuid::from_u128(v.value()));
        }
        Ok(out)
    }

    pub fn set_round_robin(&mut self, key: &str, rep: Uuid) -> StoreResult<()> {
        self.round_robin.insert(key, rep.as_u128())?;
        Ok(())
    }

    // ----- timers -----

    /// Adds a timer; the scheduler is woken if it is earlier than what it sleeps for.
    pub fn add_timer(&mut self, kind: TimerKind, due: Millis, subject: Uuid) -> StoreResult<Timer> {
        let t = Timer {
            id: self.new_id(),
            due,
            kind,
            subject,
            created_at: self.now,
        };
        self.put_timer(&t)?;
        Ok(t)
    }

    fn put_timer(&mut self, t: &Timer) -> StoreResult<()> {
        let id = t.id.as_u128();
        self.timers.insert((t.due, id), encode(t).as_slice())?;
        self.timers_by_subject
            .insert((t.subject.as_u128(), id), t.due)?;
        self.earliest_timer = Some(self.earliest_timer.map_or(t.due, |e| e.min(t.due)));
        Ok(())
    }

    /// The timers of a lead or task.
    pub fn timers_of(&self, subject: Uuid) -> StoreResult<Vec<Timer>> {
        let s = subject.as_u128();
        let keys: Vec<(u128, i64)> = self
            .timers_by_subject
            .range((s, 0)..=(s, u128::MAX))?
            .map(|r| r.map(|(k, v)| (k.value().1, v.value())))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(keys.len());
        for (id, due) in keys {
            if let Some(v) = self.timers.get((due, id))? {
                out.push(decode(v.value())?);
            }
        }
        Ok(out)
    }

    /// Gives a pending timer another subject, keeping its id and due time.
    pub fn move_timer(&mut self, t: &Timer, subject: Uuid) -> StoreResult<()> {
        if self.remove_timer(t)? {
            self.put_timer(&Timer {
                subject,
                ..t.clone()
            })?;
        }
        Ok(())
    }

    /// Removes a timer; false if it was already gone (fired or cancelled).
    pub fn remove_timer(&mut self, t: &Timer) -> StoreResult<bool> {
        let id = t.id.as_u128();
        let existed = self.timers.remove((t.due, id))?.is_some();
        self.timers_by_subject.remove((t.subject.as_u128(), id))?;
        Ok(existed)
    }

    /// Cancels the subject's timers for which `which` holds; returns how many.
    pub fn cancel_timers(
        &mut self,
        subject: Uuid,
        which: impl Fn(TimerKind) -> bool,
    ) -> StoreResult<usize> {
        let mut n = 0;
        for t in self.timers_of(subject)? {
            if which(t.kind) && self.remove_timer(&t)? {
                n += 1;
            }
        }
        Ok(n)
    }

    // ----- SLA state -----

    pub fn sla_state(&self, lead: Uuid) -> StoreResult<Option<SlaState>> {
        get_record(&self.lead_sla, lead.as_u128())
    }

    pub fn put_sla_state(&mut self, lead: Uuid, state: &SlaState) -> StoreResult<()> {
        self.lead_sla
            .insert(lead.as_u128(), encode(state).as_slice())?;
        Ok(())
    }

    /// Forgets a lead's SLA clock (its new owner has no SLA).
    pub fn remove_sla_state(&mut self, lead: Uuid) -> StoreResult<()> {
        self.lead_sla.remove(lead.as_u128())?;
        Ok(())
    }

    // ----- tasks -----

    pub fn task(&self, id: Uuid) -> StoreResult<Option<Task>> {
        get_record(&self.tasks, id.as_u128())
    }

    pub fn put_task(&mut self, old: Option<&Task>, new: &Task) -> StoreResult<()> {
        let id = new.id.as_u128();
        self.tasks.insert(id, encode(new).as_slice())?;
        if let Some(o) = old {
            self.task_by_owner.remove(task_key(o))?;
            if o.lead_id != new.lead_id
                && let Some(l) = o.lead_id
            {
                self.task_by_lead.remove((l.as_u128(), id))?;
            }
        }
        self.task_by_owner.insert(task_key(new), new.done)?;
        if let Some(l) = new.lead_id {
            self.task_by_lead.insert((l.as_u128(), id), ())?;
        }
        Ok(())
    }

    pub fn delete_task(&mut self, t: &Task) -> StoreResult<()> {
        let id = t.id.as_u128();
        self.tasks.remove(id)?;
        self.task_by_owner.remove(task_key(t))?;
        if let Some(l) = t.lead_id {
            self.task_by_lead.remove((l.as_u128(), id))?;
        }
        self.cancel_timers(t.id, |_| true)?;
        Ok(())
    }

    /// Whether `user` has a task still to do (their tasks are listed by owner, so a deleted
    /// owner's would be listed for nobody).
    pub fn has_open_tasks(&self, user: Uuid) -> StoreResult<bool> {
        let u = user.as_u128();
        for row in self
            .task_by_owner
            .range((u, i64::MIN, 0)..=(u, i64::MAX, u128::MAX))?
        {
            if !row?.1.value() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn tasks_of_lead(&self, lead: Uuid) -> StoreResult<Vec<Task>> {
        let l = lead.as_u128();
        let ids: Vec<u128> = self
            .task_by_lead
            .range((l, 0)..=(l, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(t) = get_record(&self.tasks, id)? {
                out.push(t);
            }
        }
        Ok(out)
    }

    // ----- notifications -----

    /// Stores a notification with its changelog row (the recipient is its "owner", so only
    /// they and admins see it in the feed).
    pub fn notify(&mut self, n: &Notification) -> StoreResult<()> {
        let id = n.id.as_u128();
        self.notifications.insert(id, encode(n).as_slice())?;
        self.notification_by_recipient
            .insert((n.recipient_id.as_u128(), id), ())?;
        if let Some(l) = n.lead_id {
            self.notification_by_lead.insert((l.as_u128(), id), ())?;
        }
        self.change_entry(ChangeEntry {
            entity: Entity::Notification,
            id: n.id,
            op: Op::Create,
            at: self.now,
            lead_id: n.lead_id,
            owner_id: Some(n.recipient_id),
            pool_id: None,
        })?;
        Ok(())
    }

    pub fn notification(&self, id: Uuid) -> StoreResult<Option<Notification>> {
        get_record(&self.notifications, id.as_u128())
    }

    pub fn put_notification(&mut self, n: &Notification) -> StoreResult<()> {
        self.notifications
            .insert(n.id.as_u128(), encode(n).as_slice())?;
        Ok(())
    }

    /// Moves the tasks and notifications of a lead merged away to the lead it merged into;
    /// returns the tasks as they are now (a new version each).
    pub fn move_lead_work(&mut self, from: Uuid, into: Uuid) -> StoreResult<Vec<Task>> {
        let mut moved = Vec::new();
        for old in self.tasks_of_lead(from)? {
            let mut t = old.clone();
            t.lead_id = Some(into);
            t.version += 1;
            t.updated_at = self.now;
            self.put_task(Some(&old), &t)?;
            moved.push(t);
        }
        let f = from.as_u128();
        let notes: Vec<u128> = self
            .notification_by_lead
            .range((f, 0)..=(f, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for n in notes {
            self.notification_by_lead.remove((f, n))?;
            if let Some(mut note) = get_record::<Notification, _>(&self.notifications, n)? {
                note.lead_id = Some(into);
                self.put_notification(&note)?;
                self.notification_by_lead.insert((into.as_u128(), n), ())?;
            }
        }
        Ok(moved)
    }

    /// Removes everything the sales floor holds about an erased lead.
    pub(super) fn erase_lead_work(&mut self, lead: &Lead) -> StoreResult<()> {
        let id = lead.id.as_u128();
        self.shift_load(open_owner(lead), None)?;
        self.drop_claim(lead.id)?;
        self.cancel_timers(lead.id, |_| true)?;
        self.lead_sla.remove(id)?;
        for t in self.tasks_of_lead(lead.id)? {
            self.delete_task(&t)?;
        }
        let notes: Vec<u128> = self
            .notification_by_lead
            .range((id, 0)..=(id, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for n in notes {
            self.notification_by_lead.remove((id, n))?;
            if let Some(v) = self.notifications.remove(n)? {
                let note: Notification = decode(v.value())?;
                self.notification_by_recipient
                    .remove((note.recipient_id.as_u128(), n))?;
            }
        }
        Ok(())
    }
}
