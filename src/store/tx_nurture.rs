//! `Tx` operations for nurture: enrollments (one open per lead and sequence) and the mail
//! outbox with its send queue and link tokens — each kept consistent with its indexes.

use super::codec::{decode, encode};
use super::tables::*;
use super::tx::Tx;
use super::{StoreResult, get_record};
use crate::domain::lead::Lead;
use crate::domain::mail::{MailStatus, OutMail};
use crate::domain::sequence::Enrollment;
use crate::domain::time::Millis;
use redb::ReadableTable;
use uuid::Uuid;

impl Tx<'_> {
    // ----- enrollments -----

    pub fn enrollment(&self, id: Uuid) -> StoreResult<Option<Enrollment>> {
        get_record(&self.enrollments, id.as_u128())
    }

    /// The open (active or paused) enrollment of `lead` in `sequence`.
    pub fn open_enrollment(&self, lead: Uuid, sequence: &str) -> StoreResult<Option<Uuid>> {
        Ok(self
            .open_enrollment
            .get((lead.as_u128(), sequence))?
            .map(|v| Uuid::from_u128(v.value())))
    }

    /// Stores an enrollment and keeps the open-enrollment key in step with its status.
    pub fn put_enrollment(&mut self, e: &Enrollment) -> StoreResult<()> {
        let (lead, id) = (e.lead_id.as_u128(), e.id.as_u128());
        self.enrollments.insert(id, encode(e).as_slice())?;
        self.enrollment_by_lead.insert((lead, id), ())?;
        let key = (lead, e.sequence.as_str());
        if e.status.is_open() {
            self.open_enrollment.insert(key, id)?;
        } else if self.open_enrollment.get(key)?.map(|v| v.value()) == Some(id) {
            self.open_enrollment.remove(key)?;
        }
        Ok(())
    }

    /// A lead's enrollments, oldest first.
    pub fn enrollments_of(&self, lead: Uuid) -> StoreResult<Vec<Enrollment>> {
        let l = lead.as_u128();
        let ids: Vec<u128> = self
            .enrollment_by_lead
            .range((l, 0)..=(l, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = get_record(&self.enrollments, id)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    // ----- mail -----

    pub fn mail(&self, id: Uuid) -> StoreResult<Option<OutMail>> {
        get_record(&self.mails, id.as_u128())
    }

    pub fn mail_by_token(&self, token: &str) -> StoreResult<Option<OutMail>> {
        match self.mail_tokens.get(token)?.map(|v| v.value()) {
            Some(id) => get_record(&self.mails, id),
            None => Ok(None),
        }
    }

    /// Stores a message; an unsent one is (re)queued at its next attempt.
    pub fn put_mail(&mut self, old: Option<&OutMail>, m: &OutMail) -> StoreResult<()> {
        let id = m.id.as_u128();
        if let Some(o) = old.filter(|o| o.status == MailStatus::Unsent) {
            self.mail_queue.remove((o.next_attempt_at, id))?;
        }
        self.mails.insert(id, encode(m).as_slice())?;
        if old.is_none() {
            self.mail_by_lead.insert((m.lead_id.as_u128(), id), ())?;
            self.mail_tokens.insert(m.token.as_str(), id)?;
        }
        if m.status == MailStatus::Unsent {
            self.mail_queue.insert((m.next_attempt_at, id), ())?;
            self.earliest_mail = Some(
                self.earliest_mail
                    .map_or(m.next_attempt_at, |e| e.min(m.next_attempt_at)),
            );
        }
        Ok(())
    }

    /// Unsent mail of a lead (to suppress it when the lead may no longer be contacted).
    pub fn unsent_mail_of(&self, lead: Uuid) -> StoreResult<Vec<OutMail>> {
        let l = lead.as_u128();
        let mut out = Vec::new();
        for row in self.mail_by_lead.range((l, 0)..=(l, u128::MAX))? {
            let id = row?.0.value().1;
            if let Some(m) = get_record::<OutMail, _>(&self.mails, id)?
                && m.status == MailStatus::Unsent
            {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The earliest time an unsent message is due, if any.
    pub fn next_mail_due(&self) -> StoreResult<Option<Millis>> {
        Ok(self.mail_queue.first()?.map(|(k, _)| k.value().0))
    }

    /// Moves the enrollments and mail of a lead merged away to the lead it merged into, so
    /// its sequences go on there and the links in mail already sent keep working. An open
    /// enrollment in a sequence `into` is already in must have been ended first. Returns the
    /// ids of the moved enrollments and mail.
    pub fn move_lead_nurture(
        &mut self,
        from: Uuid,
        into: Uuid,
    ) -> StoreResult<(Vec<Uuid>, Vec<Uuid>)> {
        let f = from.as_u128();
        let mut enrollments = Vec::new();
        for old in self.enrollments_of(from)? {
            let id = old.id.as_u128();
            self.enrollment_by_lead.remove((f, id))?;
            if self
                .open_enrollment
                .get((f, old.sequence.as_str()))?
                .map(|v| v.value())
                == Some(id)
            {
                self.open_enrollment.remove((f, old.sequence.as_str()))?;
            }
            let mut e = old;
            e.lead_id = into;
            e.version += 1;
            e.updated_at = self.now;
            self.put_enrollment(&e)?;
            enrollments.push(e.id);
        }
        let ids: Vec<u128> = self
            .mail_by_lead
            .range((f, 0)..=(f, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        let mut mails = Vec::with_capacity(ids.len());
        for id in ids {
            self.mail_by_lead.remove((f, id))?;
            if let Some(mut m) = get_record::<OutMail, _>(&self.mails, id)? {
                m.lead_id = into;
                self.mails.insert(id, encode(&m).as_slice())?;
                self.mail_by_lead.insert((into.as_u128(), id), ())?;
                mails.push(m.id);
            }
        }
        Ok((enrollments, mails))
    }

    /// Forgets a lead's enrollments and mail (erasure).
    pub(super) fn erase_lead_nurture(&mut self, lead: &Lead) -> StoreResult<()> {
        let l = lead.id.as_u128();
        let enrollments: Vec<u128> = self
            .enrollment_by_lead
            .range((l, 0)..=(l, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for id in enrollments {
            self.cancel_timers(Uuid::from_u128(id), |_| true)?;
            self.enrollment_by_lead.remove((l, id))?;
            if let Some(v) = self.enrollments.remove(id)? {
                let e: Enrollment = decode(v.value())?;
                let key = (l, e.sequence.as_str());
                if self.open_enrollment.get(key)?.map(|v| v.value()) == Some(id) {
                    self.open_enrollment.remove(key)?;
                }
            }
        }
        let mails: Vec<u128> = self
            .mail_by_lead
            .range((l, 0)..=(l, u128::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for id in mails {
            self.mail_by_lead.remove((l, id))?;
            if let Some(v) = self.mails.remove(id)? {
                let m: OutMail = decode(v.value())?;
                self.mail_tokens.remove(m.token.as_str())?;
                if m.status == MailStatus::Unsent {
                    self.mail_queue.remove((m.next_attempt_at, id))?;
                }
            }
        }
        Ok(())
    }
}

impl super::Snapshot {
    pub fn enrollment(&self, id: Uuid) -> StoreResult<Option<Enrollment>> {
        get_record(&self.txn.open_table(ENROLLMENTS)?, id.as_u128())
    }

    /// A lead's enrollments, oldest first.
    pub fn enrollments_of(&self, lead: Uuid) -> StoreResult<Vec<Enrollment>> {
        self.records_of_lead(ENROLLMENT_BY_LEAD, ENROLLMENTS, lead)
    }

    /// Every email to `lead`, sent or not, oldest first.
    pub fn mails_of_lead(&self, lead: Uuid) -> StoreResult<Vec<OutMail>> {
        self.records_of_lead(MAIL_BY_LEAD, MAILS, lead)
    }

    pub fn mail(&self, id: Uuid) -> StoreResult<Option<OutMail>> {
        get_record(&self.txn.open_table(MAILS)?, id.as_u128())
    }

    pub fn mail_by_token(&self, token: &str) -> StoreResult<Option<OutMail>> {
        let tokens = self.txn.open_table(MAIL_TOKENS)?;
        match tokens.get(token)?.map(|v| v.value()) {
            Some(id) => get_record(&self.txn.open_table(MAILS)?, id),
            None => Ok(None),
        }
    }

    /// Unsent mail due by `now` (up to `limit`, soonest first) and when the next one after
    /// those falls due.
    pub fn mails_due(
        &self,
        now: Millis,
        limit: usize,
    ) -> StoreResult<(Vec<OutMail>, Option<Millis>)> {
        let queue = self.txn.open_table(MAIL_QUEUE)?;
        let mails = self.txn.open_table(MAILS)?;
        let mut due = Vec::new();
        for row in queue.iter()? {
            let (at, id) = row?.0.value();
            if at > now || due.len() >= limit {
                return Ok((due, Some(at)));
            }
            if let Some(m) = get_record(&mails, id)? {
                due.push(m);
            }
        }
        Ok((due, None))
    }

    /// Mail, newest first, before `before` (a mail id), optionally of one lead and status:
    /// up to `limit` items, examining at most `scan` rows. Also returns the id to continue
    /// from when it stopped early (more may match).
    pub fn mails(
        &self,
        lead: Option<Uuid>,
        status: Option<MailStatus>,
        before: Option<Uuid>,
        limit: usize,
        scan: usize,
    ) -> StoreResult<(Vec<OutMail>, Option<Uuid>)> {
        let mails = self.txn.open_table(MAILS)?;
        let upper = before.map_or(u128::MAX, |b| b.as_u128().saturating_sub(1));
        let keep = |m: &OutMail| status.is_none_or(|s| m.status == s);
        let mut out = Vec::new();
        let mut last = None;
        let ids: Box<dyn Iterator<Item = StoreResult<u128>>> = match lead {
            Some(l) => {
                let index = self.txn.open_table(MAIL_BY_LEAD)?;
                let l = l.as_u128();
                let rows: Vec<StoreResult<u128>> = index
                    .range((l, 0)..=(l, upper))?
                    .rev()
                    .take(scan + 1)
                    .map(|r| r.map(|(k, _)| k.value().1).map_err(Into::into))
                    .collect();
                Box::new(rows.into_iter())
            }
            None => {
                let rows: Vec<StoreResult<u128>> = mails
                    .range(..=upper)?
                    .rev()
                    .take(scan + 1)
                    .map(|r| r.map(|(k, _)| k.value()).map_err(Into::into))
                    .collect();
                Box::new(rows.into_iter())
            }
        };
        for (examined, id) in ids.enumerate() {
            let id = id?;
            if out.len() == limit {
                return Ok((out, None));
            }
            if examined == scan {
                return Ok((out, last));
            }
            last = Some(Uuid::from_u128(id));
            if let Some(m) = get_record(&mails, id)?.filter(keep) {
                out.push(m);
            }
        }
        Ok((out, None))
    }
}
