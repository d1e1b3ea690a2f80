//! Nurture over the API: the sequences loaded from `plugins/sequences`, a lead's enrollments
//! (enroll, pause, resume, unenroll), the mail outbox, and the public unsubscribe, open and
//! click links a message carries.

use super::nurture::{enroll, finish, set_paused, unsubscribe};
use super::work::write_lead;
use super::{Idempotency, Precondition, Render, Service, ServiceError, ServiceResult, Written};
use crate::domain::activity::Activity;
use crate::domain::lead::Lead;
use crate::domain::mail::{MailStatus, OutMail};
use crate::domain::sequence::{Enrollment, EnrollmentStatus};
use crate::domain::user::Principal;
use crate::script::Plugins;
use crate::script::nurture::SequenceRt;
use crate::store::{Entity, Op, StoreError, Tx};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

/// What a tracking link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    Open,
    Click(usize),
}

impl Service {
    /// Every loaded sequence, by name.
    pub fn sequences(&self) -> Vec<Arc<SequenceRt>> {
        self.plugins
            .current()
            .library()
            .sequences
            .values()
            .cloned()
            .collect()
    }

    pub fn sequence(&self, name: &str) -> ServiceResult<Arc<SequenceRt>> {
        self.plugins
            .current()
            .sequence(name)
            .ok_or(ServiceError::NotFound("sequence"))
    }

    /// A visible lead's enrollments, oldest first.
    pub fn enrollments(&self, p: &Principal, lead: Uuid) -> ServiceResult<Vec<Enrollment>> {
        let snap = self.store.read()?;
        match snap.lead(lead)? {
            Some(l) if p.can_see_lead(&l) => Ok(snap.enrollments_of(lead)?),
            _ => Err(ServiceError::NotFound("lead")),
        }
    }

    /// One enrollment of a visible lead.
    pub fn enrollment(&self, p: &Principal, id: Uuid) -> ServiceResult<Enrollment> {
        let snap = self.store.read()?;
        match snap.enrollment(id)? {
            Some(e) if snap.lead(e.lead_id)?.is_some_and(|l| p.can_see_lead(&l)) => Ok(e),
            _ => Err(ServiceError::NotFound("enrollment")),
        }
    }

    /// Enrolls a visible lead by hand.
    pub async fn enroll_lead(
        &self,
        p: &Principal,
        lead: Uuid,
        sequence: String,
        idem: Option<(Idempotency, Render<Enrollment>)>,
    ) -> ServiceResult<Written<Enrollment>> {
        let principal = p.clone();
        let plugins = self.plugins.clone();
        self.write_idempotent(p.id(), idem, move |tx| {
            let Some(l) = tx.lead(lead)?.filter(|l| principal.can_see_lead(l)) else {
                return Ok(Err(ServiceError::NotFound("lead")));
            };
            // Enrolling mails the person and writes on the lead: a change, as a PATCH is.
            if !principal.can_change_lead(&l) {
                return Ok(Err(super::leads::not_yours()));
            }
            enroll(tx, &plugins, &l, &sequence, principal.actor())
        })
        .await
    }

    /// Pauses, resumes or ends (unenrolls) an enrollment of a visible lead.
    pub async fn change_enrollment(
        &self,
        p: &Principal,
        id: Uuid,
        pre: Precondition,
        change: EnrollmentChange,
    ) -> ServiceResult<Enrollment> {
        let principal = p.clone();
        self.store
            .write(move |tx| {
                let Some(e) = visible_enrollment(tx, &principal, id)? else {
                    return Ok(Err(ServiceError::NotFound("enrollment")));
                };
                if !tx
                    .lead(e.lead_id)?
                    .is_some_and(|l| principal.can_change_lead(&l))
                {
                    return Ok(Err(super::leads::not_yours()));
                }
                if let Err(stale) = pre.check(e.version) {
                    return Ok(Err(stale));
                }
                let done = match (change, e.status) {
                    (_, EnrollmentStatus::Completed | EnrollmentStatus::Exited) => {
                        return Ok(Err(ServiceError::Conflict(format!(
                            "the enrollment has ended ({})",
                            if e.status == EnrollmentStatus::Completed {
                                "completed"
                            } else {
                                "exited"
                            }
                        ))));
                    }
                    (EnrollmentChange::Pause, EnrollmentStatus::Paused)
                    | (EnrollmentChange::Resume, EnrollmentStatus::Active) => e,
                    (EnrollmentChange::Pause, _) => set_paused(tx, e, true)?,
                    (EnrollmentChange::Resume, _) => set_paused(tx, e, false)?,
                    (EnrollmentChange::Unenroll, _) => {
                        finish(tx, e, EnrollmentStatus::Exited, Some("unenrolled"))?
                    }
                };
                Ok(Ok(done))
            })
            .await?
    }

    /// Mail in the outbox, newest first, and where to continue: admins may list it all,
    /// others the mail of one lead they see.
    pub fn mails(
        &self,
        p: &Principal,
        lead: Option<Uuid>,
        status: Option<MailStatus>,
        before: Option<Uuid>,
        limit: usize,
    ) -> ServiceResult<(Vec<OutMail>, Option<Uuid>)> {
        let snap = self.store.read()?;
        match lead {
            Some(l) if !snap.lead(l)?.is_some_and(|l| p.can_see_lead(&l)) => {
                return Err(ServiceError::NotFound("lead"));
            }
            Some(_) => {}
            None if !p.is_admin() => {
                return Err(ServiceError::invalid(
                    "lead_id",
                    "required unless you are an admin",
                ));
            }
            None => {}
        }
        let (items, resume) = snap.mails(lead, status, before, limit, self.cfg.list_scan_budget)?;
        let next = match resume {
            Some(r) => Some(r),
            None if items.len() == limit => items.last().map(|m| m.id),
            None => None,
        };
        Ok((items, next))
    }

    pub fn mail(&self, p: &Principal, id: Uuid) -> ServiceResult<OutMail> {
        let snap = self.store.read()?;
        match snap.mail(id)? {
            Some(m)
                if p.is_admin() || snap.lead(m.lead_id)?.is_some_and(|l| p.can_see_lead(&l)) =>
            {
                Ok(m)
            }
            _ => Err(ServiceError::NotFound("email")),
        }
    }

    /// The message a public link's token belongs to.
    pub fn mail_by_token(&self, token: &str) -> ServiceResult<OutMail> {
        self.store
            .read()?
            .mail_by_token(token)?
            .ok_or(ServiceError::NotFound("link"))
    }

    /// An open (pixel) or click on a message's link: an `email_open` / `email_click` activity
    /// on its lead, which scoring sees. Returns where a click goes.
    pub async fn track_mail(&self, token: String, what: Tracked) -> ServiceResult<Option<String>> {
        let plugins = self.plugins.clone();
        self.store
            .write(move |tx| {
                let Some(m) = tx.mail_by_token(&token)? else {
                    return Ok(Err(ServiceError::NotFound("link")));
                };
                let (kind, target) = match what {
                    Tracked::Open => ("email_open", None),
                    Tracked::Click(n) => match m.links.get(n) {
                        Some(url) => ("email_click", Some(url.clone())),
                        None => return Ok(Err(ServiceError::NotFound("link"))),
                    },
                };
                let props = json!({"mail_id": m.id, "template": m.template, "url": target});
                record_system_activity(tx, &plugins, m.lead_id, kind, props)?;
                Ok(Ok(target))
            })
            .await?
    }

    /// The unsubscribe link was followed (or a mail client's one-click POST arrived).
    pub async fn unsubscribe_token(&self, token: String) -> ServiceResult<()> {
        let plugins = self.plugins.clone();
        self.store
            .write(move |tx| {
                let Some(m) = tx.mail_by_token(&token)? else {
                    return Ok(Err(ServiceError::NotFound("link")));
                };
                unsubscribe(tx, &plugins, m.lead_id, "link")?;
                Ok(Ok(()))
            })
            .await?
    }
}

/// What `change_enrollment` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentChange {
    Pause,
    Resume,
    Unenroll,
}

fn visible_enrollment(
    tx: &Tx<'_>,
    p: &Principal,
    id: Uuid,
) -> Result<Option<Enrollment>, StoreError> {
    let Some(e) = tx.enrollment(id)? else {
        return Ok(None);
    };
    Ok(tx.lead(e.lead_id)?.filter(|l| p.can_see_lead(l)).map(|_| e))
}

/// Records an activity the server saw happen (no actor) on a lead: scored, and shown to
/// `on_event`, like any other activity.
fn record_system_activity(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead_id: Uuid,
    kind: &str,
    properties: serde_json::Value,
) -> Result<Option<Lead>, StoreError> {
    let Some(before) = tx.lead(lead_id)? else {
        return Ok(None);
    };
    let activity = Activity {
        id: tx.new_id(),
        lead_id,
        kind: kind.to_owned(),
        occurred_at: tx.now,
        recorded_at: tx.now,
        actor_id: None,
        campaign_id: None,
        text: None,
        properties: properties.to_string(),
    };
    tx.put_activity(&activity)?;
    tx.change(Entity::Activity, activity.id, Op::Create, Some(&before))?;
    let mut lead = before.clone();
    lead.last_activity_at = Some(tx.now);
    super::scoring::settle_change(tx, plugins, &mut lead)?;
    super::nurture::on_activity(tx, plugins, &mut lead, &activity)?;
    write_lead(tx, &before, &mut lead)?;
    Ok(Some(lead))
}
