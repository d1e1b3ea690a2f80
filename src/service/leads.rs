//! Lead operations: create with dedupe by email or phone, batch create, read, list, patch,
//! erase and export.

use super::{Precondition, Service, ServiceError, ServiceResult};
use crate::domain::activity::{Activity, LeadEvent};
use crate::domain::lead::{Lead, NewLead, ValidPatch};
use crate::domain::user::{Principal, Role};
use crate::domain::visitor::{PageView, Visitor};
use crate::store::lead_index::SortKey;
use crate::store::query::{self, LeadFilter, LeadQuery, Visibility};
use crate::store::{Entity, Op, StoreError, Tx};
use serde_json::json;
use uuid::Uuid;

/// What a create did.
#[derive(Debug, Clone)]
pub struct CreateOutcome {
    pub lead: Lead,
    pub merged: bool,
    /// False when a duplicate capture had nothing new for the lead it matched.
    pub changed: bool,
    /// An import row that changed nothing had its differing values recorded (a `merged` event).
    pub conflicts_recorded: bool,
}

/// One item of a batch create, in request order.
#[derive(Debug, Clone)]
pub enum BatchItem {
    Done(Box<CreateOutcome>),
    Failed(ServiceError),
}

#[derive(Debug, Clone)]
pub struct ListParams {
    pub filter: LeadFilter,
    pub sort: SortKey,
    pub descending: bool,
    pub limit: usize,
    pub after: Option<crate::store::query::Position>,
}

/// Everything held about one person (`GET /v1/leads/{id}/export`).
#[derive(Debug, Clone)]
pub struct LeadExport {
    pub lead: Lead,
    pub activities: Vec<Activity>,
    pub events: Vec<LeadEvent>,
    /// The tracker visitors stitched to this person, with any page views still held for them.
    pub visitors: Vec<(Visitor, Vec<PageView>)>,
    /// Other keys that lead here: emails and phones of merged leads, merged lead ids,
    /// imported-row fingerprints (`e:`, `p:`, `m:`, `r:`).
    pub other_keys: Vec<String>,
    pub score: super::ScoreView,
    pub sla: super::SlaView,
    pub tasks: Vec<crate::domain::work::Task>,
    pub notifications: Vec<crate::domain::work::Notification>,
    pub enrollments: Vec<crate::domain::sequence::Enrollment>,
    /// Every email to the person, sent or not, with its text.
    pub emails: Vec<crate::domain::mail::OutMail>,
    /// Webhook deliveries about the person (their payloads hold its data); `None` for a
    /// caller who may not see webhooks (admins only).
    pub deliveries: Option<Vec<crate::domain::webhook::Delivery>>,
}

/// Who may own a lead the caller creates or reassigns: reps only themselves, managers
/// themselves and their team, admins anyone (existence is checked in the transaction).
pub(crate) fn check_owner_right(p: &Principal, owner: Option<Uuid>) -> ServiceResult<()> {
    let Some(owner) = owner else { return Ok(()) };
    match p.role() {
        Role::Admin => Ok(()),
        Role::Manager if owner == p.id() || p.team_member_ids.contains(&owner) => Ok(()),
        Role::Rep if owner == p.id() => Ok(()),
        _ => Err(ServiceError::Forbidden(
            "you may only assign leads to yourself or, as a manager, to your team".into(),
        )),
    }
}

/// The refusal of a change to a visible lead the caller does not own (a rep and a pooled or
/// a teammate's lead).
pub(crate) fn not_yours() -> ServiceError {
    ServiceError::Forbidden(
        "reps may change only the leads they own; claim a pooled lead first".into(),
    )
}

/// Whether a create by `p` without owner or pool becomes `p`'s own lead: what a rep or manager
/// creates is theirs, or they could not see it afterwards.
pub(crate) fn owner_is_defaulted(p: &Principal, new: &NewLead) -> bool {
    new.owner_id.is_none() && new.pool_id.is_none() && p.role() != Role::Admin
}

/// Drops from a duplicate what would move the lead it merges into: the creator's default
/// ownership does not move an existing lead, a rep takes a pooled lead only by claiming it,
/// and a lead has an owner or a pool, never both.
pub(crate) fn keep_placement(p: &Principal, lead: &Lead, new: &mut NewLead, owner_defaulted: bool) {
    if lead.owner_id.is_some() || owner_defaulted || p.role() == Role::Rep {
        new.owner_id = None;
    }
    if lead.owner_id.is_some() || lead.pool_id.is_some() {
        new.pool_id = None;
    }
    if lead.pool_id.is_some() {
        new.owner_id = None;
    }
    // A follow-up date is an owner's: a lead left without one takes none (a release cleared
    // it, and an old export would bring it back).
    if lead.owner_id.is_none() && new.owner_id.is_none() {
        new.next_follow_up_at = None;
    }
}

/// Checks, inside the transaction, that an owner exists and is active.
pub(crate) fn check_owner_exists(
    tx: &Tx<'_>,
    owner: Option<Uuid>,
) -> Result<ServiceResult<()>, StoreError> {
    let Some(owner) = owner else {
        return Ok(Ok(()));
    };
    Ok(match tx.user(owner)? {
        Some(u) if u.active => Ok(()),
        Some(_) => Err(ServiceError::invalid(
            "owner_id",
            "this user is deactivated",
        )),
        None => Err(ServiceError::invalid("owner_id", "no such user")),
    })
}

/// Refuses to give a created lead to someone else who is at capacity. What callers create
/// for themselves is theirs regardless, and an import may load a rep's existing book.
fn check_given_capacity(
    tx: &Tx<'_>,
    p: &Principal,
    owner: Option<Uuid>,
    import: bool,
) -> Result<ServiceResult<()>, StoreError> {
    match owner {
        Some(o) if o != p.id() && !import => super::pools::check_capacity(tx, o),
        _ => Ok(Ok(())),
    }
}

/// Creates `new` or merges it into the lead with the same email or phone. Runs in the writer.
/// `quiet`: a duplicate that changes nothing leaves no trace (an import run again).
pub(crate) fn apply_create(
    tx: &mut Tx<'_>,
    p: &Principal,
    new: NewLead,
    quiet: bool,
) -> Result<ServiceResult<CreateOutcome>, StoreError> {
    apply_create_or_merge(tx, p, new, quiet, None)
}

/// [`apply_create`], or with `known` (a lead the caller sees, and why it is this person: an
/// import row's exported `id` or its content) a merge into that lead, by the same rules.
pub(crate) fn apply_create_or_merge(
    tx: &mut Tx<'_>,
    p: &Principal,
    mut new: NewLead,
    quiet: bool,
    known: Option<(Uuid, &'static str)>,
) -> Result<ServiceResult<CreateOutcome>, StoreError> {
    if quiet && check_owner_exists(tx, new.owner_id)?.is_err() {
        // An export of another server (or of this one, before its owner left) names users
        // who cannot take leads here: the row is placed like one naming nobody, as for pools.
        new.owner_id = None;
    }
    if let Err(e) = check_owner_right(p, new.owner_id) {
        return Ok(Err(e));
    }
    if let Some(pool) = new.pool_id
        && tx.pool(pool)?.is_none()
    {
        if !quiet {
            return Ok(Err(ServiceError::invalid("pool_id", "no such pool")));
        }
        // An export of another server re-imports here: its pools are not ours, so the lead
        // is routed like any other.
        new.pool_id = None;
    }
    let owner_defaulted = owner_is_defaulted(p, &new);
    if owner_defaulted {
        // What a rep or manager creates is theirs, or they could not see it afterwards.
        new.owner_id = Some(p.id());
    }
    if let Err(e) = check_owner_exists(tx, new.owner_id)? {
        return Ok(Err(e));
    }
    let (by_email, by_phone) = match known {
        Some(_) => (None, None),
        None => (
            match &new.email {
                Some(e) => tx.lead_id_by_email(e)?,
                None => None,
            },
            match &new.phone {
                Some(ph) => tx.lead_id_by_phone(ph)?,
                None => None,
            },
        ),
    };
    let Some(existing_id) = known.map(|(id, _)| id).or(by_email).or(by_phone) else {
        if let Err(e) = check_given_capacity(tx, p, new.owner_id, quiet)? {
            return Ok(Err(e));
        }
        let id = tx.new_id();
        let lead = new.into_lead(id, tx.now);
        tx.put_lead(None, &lead)?;
        tx.change(Entity::Lead, id, Op::Create, Some(&lead))?;
        return Ok(Ok(CreateOutcome {
            lead,
            merged: false,
            changed: true,
            conflicts_recorded: false,
        }));
    };
    let Some(mut lead) = tx.lead(existing_id)? else {
        return Err(StoreError::Storage(format!(
            "dedupe index points at missing lead {existing_id}"
        )));
    };
    if !p.can_see_lead(&lead) {
        return Ok(Err(ServiceError::Conflict(
            "a lead with this email or phone already exists and belongs to someone else; \
             ask its owner or a manager"
                .into(),
        )));
    }
    let mut moved_aside = Vec::new();
    // A phone (or email) that belongs to a third lead must not be copied onto this one.
    if by_email.is_some()
        && by_phone.is_some_and(|other| other != existing_id)
        && let Some(ph) = new.phone.take()
    {
        moved_aside.push(json!({"field": "phone", "value": ph, "belongs_to": by_phone}));
    }
    let before = lead.clone();
    keep_placement(p, &lead, &mut new, owner_defaulted);
    if let Err(e) = check_given_capacity(tx, p, new.owner_id, quiet)? {
        return Ok(Err(e));
    }
    let report = lead.absorb(new);
    let changed = lead != before;
    // An import records the values a row offers that differ from the lead's once, even when
    // it fills nothing: nothing is dropped silently, and importing the file again writes
    // nothing.
    let mut conflicts_recorded = false;
    if quiet && !report.conflicts.is_empty() {
        let key = super::capture::conflicts_key(lead.id, &report.conflicts);
        if tx.alt_key(&key)?.is_none() {
            tx.put_alt_key(lead.id, &key)?;
            conflicts_recorded = !changed;
        }
    }
    if changed {
        lead.version += 1;
        lead.updated_at = tx.now;
        tx.put_lead(Some(&before), &lead)?;
        tx.change(Entity::Lead, lead.id, Op::Update, Some(&lead))?;
    } else if quiet && !conflicts_recorded {
        return Ok(Ok(CreateOutcome {
            lead,
            merged: true,
            changed,
            conflicts_recorded,
        }));
    }
    tx.event(
        lead.id,
        "merged",
        p.actor(),
        json!({
            "reason": match known {
                Some((_, reason)) => reason,
                None if by_email == Some(existing_id) => "email",
                None => "phone",
            },
            "filled": report.filled,
            "conflicts": report.conflicts,
            "not_applied": moved_aside,
        }),
    )?;
    Ok(Ok(CreateOutcome {
        lead,
        merged: true,
        changed,
        conflicts_recorded,
    }))
}

impl Service {
    pub fn get_lead(&self, p: &Principal, id: Uuid) -> ServiceResult<Lead> {
        match self.store.read()?.lead(id)? {
            Some(l) if p.can_see_lead(&l) => Ok(l),
            _ => Err(ServiceError::NotFound("lead")),
        }
    }

    pub fn list_leads(&self, p: &Principal, params: ListParams) -> ServiceResult<query::LeadPage> {
        let visibility = match p.visible_owners() {
            None => Visibility::All,
            Some(o) => Visibility::Owners(o),
        };
        let q = LeadQuery {
            filter: params.filter,
            sort: params.sort,
            descending: params.descending,
            limit: params.limit,
            after: params.after,
            visibility,
            scan_budget: self.cfg.list_scan_budget,
        };
        let snap = self.store.read()?;
        Ok(query::list_leads(&snap, &q)?)
    }

    pub async fn patch_lead(
        &self,
        p: &Principal,
        id: Uuid,
        pre: Precondition,
        patch: ValidPatch,
    ) -> ServiceResult<Lead> {
        let principal = p.clone();
        let plugins = self.plugins.clone();
        self.store
            .write(move |tx| {
                let p = &principal;
                let Some(before) = tx.lead(id)? else {
                    return Ok(Err(ServiceError::NotFound("lead")));
                };
                if !p.can_see_lead(&before) {
                    return Ok(Err(ServiceError::NotFound("lead")));
                }
                if !p.can_change_lead(&before) {
                    return Ok(Err(not_yours()));
                }
                if let Err(e) = pre.check(before.version) {
                    return Ok(Err(e));
                }
                let mut lead = before.clone();
                let changed = match patch.apply(&mut lead) {
                    Ok(c) => c,
                    Err(errors) => return Ok(Err(ServiceError::Invalid(errors))),
                };
                if changed.is_empty() {
                    return Ok(Ok(before));
                }
                if (changed.contains(&"owner_id") || changed.contains(&"pool_id"))
                    && p.role() == Role::Rep
                {
                    return Ok(Err(ServiceError::Forbidden(
                        "reps cannot reassign leads; claim or release them instead".into(),
                    )));
                }
                if changed.contains(&"owner_id") {
                    if let Err(e) = check_owner_right(p, lead.owner_id) {
                        return Ok(Err(e));
                    }
                    if let Err(e) = check_owner_exists(tx, lead.owner_id)? {
                        return Ok(Err(e));
                    }
                    // As on a create: taking a lead oneself is not giving it to someone full.
                    if let Some(o) = lead.owner_id.filter(|o| *o != p.id())
                        && let Err(e) = super::pools::check_capacity(tx, o)?
                    {
                        return Ok(Err(e));
                    }
                }
                if let Some(e) = &lead.email
                    && changed.contains(&"email")
                    && tx.lead_id_by_email(e)?.is_some_and(|other| other != id)
                {
                    return Ok(Err(ServiceError::Conflict(
                        "another lead already has this email; merge the two leads instead".into(),
                    )));
                }
                if let Some(ph) = &lead.phone
                    && changed.contains(&"phone")
                    && tx.lead_id_by_phone(ph)?.is_some_and(|other| other != id)
                {
                    return Ok(Err(ServiceError::Conflict(
                        "another lead already has this phone; merge the two leads instead".into(),
                    )));
                }
                if changed.contains(&"pool_id")
                    && let Some(pool) = lead.pool_id
                    && tx.pool(pool)?.is_none()
                {
                    return Ok(Err(ServiceError::invalid("pool_id", "no such pool")));
                }
                if changed.contains(&"owner_id") || changed.contains(&"pool_id") {
                    super::work::place(tx, &plugins, &before, &mut lead, p.actor())?;
                }
                // A stage a person set in this very write is theirs; the score follows.
                let human_stage = changed.contains(&"stage");
                super::scoring::settle(
                    tx,
                    &plugins,
                    &mut lead,
                    crate::domain::score::Trigger::Change,
                    if human_stage {
                        super::scoring::StageRule::Keep
                    } else {
                        super::scoring::StageRule::Follow
                    },
                )?;
                super::nurture::after_patch(tx, &plugins, &before, &lead)?;
                lead.version += 1;
                lead.updated_at = tx.now;
                tx.put_lead(Some(&before), &lead)?;
                tx.change(Entity::Lead, id, Op::Update, Some(&lead))?;
                tx.event(id, "updated", Some(p.id()), json!({ "fields": changed }))?;
                if human_stage && before.stage != lead.stage {
                    tx.event(
                        id,
                        "stage_changed",
                        Some(p.id()),
                        json!({"from": before.stage, "to": lead.stage}),
                    )?;
                }
                Ok(Ok(lead))
            })
            .await?
    }

    /// Erases a lead and everything held about it (GDPR erasure).
    pub async fn delete_lead(
        &self,
        p: &Principal,
        id: Uuid,
        pre: Precondition,
    ) -> ServiceResult<()> {
        let principal = p.clone();
        self.store
            .write(move |tx| {
                let Some(lead) = tx.lead(id)? else {
                    return Ok(Err(ServiceError::NotFound("lead")));
                };
                if !principal.can_see_lead(&lead) {
                    return Ok(Err(ServiceError::NotFound("lead")));
                }
                if !principal.can_change_lead(&lead) {
                    return Ok(Err(not_yours()));
                }
                if let Err(e) = pre.check(lead.version) {
                    return Ok(Err(e));
                }
                // Tasks reach their owners' feeds, not the lead's: say they went.
                let tasks = tx.tasks_of_lead(id)?;
                tx.erase_lead(&lead)?;
                tx.change(Entity::Lead, id, Op::Delete, Some(&lead))?;
                for t in &tasks {
                    super::tasks::log_task(tx, t, Op::Delete)?;
                }
                Ok(Ok(()))
            })
            .await?
    }

    /// Writes every lead `p` may see that matches `filter`, in `sort` order, to `out`, from one
    /// consistent snapshot. Blocking: run it off the async workers. Returns how many leads.
    pub fn export_leads<W: std::io::Write>(
        &self,
        p: &Principal,
        filter: LeadFilter,
        sort: SortKey,
        descending: bool,
        out: &mut crate::transfer::ExportWriter<W>,
    ) -> ServiceResult<u64> {
        let visibility = match p.visible_owners() {
            None => Visibility::All,
            Some(o) => Visibility::Owners(o),
        };
        let snap = self.store.read()?;
        let mut q = LeadQuery {
            filter,
            sort,
            descending,
            limit: 500,
            after: None,
            visibility,
            scan_budget: self.cfg.list_scan_budget,
        };
        let mut written = 0;
        loop {
            let page = query::list_leads(&snap, &q)?;
            for lead in &page.items {
                out.write(lead).map_err(|e| {
                    ServiceError::Store(StoreError::Storage(format!("export stopped: {e}")))
                })?;
                written += 1;
            }
            match page.next {
                Some(next) => q.after = Some(next),
                None => return Ok(written),
            }
        }
    }

    pub fn export_lead(&self, p: &Principal, id: Uuid) -> ServiceResult<LeadExport> {
        let snap = self.store.read()?;
        let lead = match snap.lead(id)? {
            Some(l) if p.can_see_lead(&l) => l,
            _ => return Err(ServiceError::NotFound("lead")),
        };
        let mut visitors = Vec::new();
        for vid in snap.visitors_of(id)? {
            if let Some(v) = snap.visitor(&vid)? {
                let views = snap.page_views(&vid)?;
                visitors.push((v, views));
            }
        }
        let deliveries = match p.role() {
            Role::Admin => Some(snap.deliveries_of_lead(id)?),
            _ => None,
        };
        Ok(LeadExport {
            activities: snap.activities_of(id)?,
            events: snap.events_of(id)?,
            visitors,
            other_keys: snap.alt_keys_of(id)?,
            score: self.score_view(&snap, &lead)?,
            sla: self.sla_view(&snap, &lead)?,
            tasks: snap.tasks_of_lead(id)?,
            notifications: snap.notifications_of_lead(id)?,
            enrollments: snap.enrollments_of(id)?,
            emails: snap.mails_of_lead(id)?,
            deliveries,
            lead,
        })
    }
}
