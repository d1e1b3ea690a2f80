//! Pools and the lead actions of the sales floor: assign, claim, release and touch; a lead's
//! SLA clock; the caller's notifications. Each action is decided inside the writer from what
//! the transaction reads, so two reps claiming one lead at once cannot both win.

use super::leads::{check_owner_exists, check_owner_right};
use super::work::{default_pool, give, managers_of, notify, place, to_pool, touch, write_lead};
use super::{Idempotency, Render, Service, ServiceError, ServiceResult, Written};
use crate::domain::lead::Lead;
use crate::domain::sla::{SlaState, SlaStep};
use crate::domain::time::Millis;
use crate::domain::user::{Principal, Role};
use crate::domain::work::{Notification, Pool, PoolInput, Timer};
use crate::store::{Entity, Op, StoreError, Tx};
use serde_json::json;
use uuid::Uuid;

const MAX_REASON: usize = 500;

/// Where an assign sends a lead.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Owner(Uuid),
    Pool(Uuid),
}

/// A lead's SLA clock and its pending timers.
#[derive(Debug, Clone)]
pub struct SlaView {
    pub state: Option<SlaState>,
    /// The policy's late-first-touch steps under this owner and when each falls due (each
    /// step's timer is added when the one before it fires).
    pub steps: Vec<(SlaStep, Millis)>,
    pub timers: Vec<Timer>,
}

fn visible_lead(tx: &Tx<'_>, p: &Principal, id: Uuid) -> Result<Option<Lead>, StoreError> {
    Ok(tx.lead(id)?.filter(|l| p.can_see_lead(l)))
}

impl Service {
    pub fn pools(&self) -> ServiceResult<Vec<Pool>> {
        let mut pools = self.store.read()?.pools()?;
        pools.sort_by_cached_key(|p| p.name.to_lowercase());
        Ok(pools)
    }

    pub fn pool(&self, id: Uuid) -> ServiceResult<Pool> {
        self.store
            .read()?
            .pool(id)?
            .ok_or(ServiceError::NotFound("pool"))
    }

    /// Creates a pool (admins). A second pool of the same name is a conflict.
    pub async fn create_pool(
        &self,
        p: &Principal,
        input: PoolInput,
        idem: Option<(Idempotency, Render<Pool>)>,
    ) -> ServiceResult<Written<Pool>> {
        if !p.is_admin() {
            return Err(ServiceError::Forbidden("only admins create pools".into()));
        }
        let (name, max_claims) = input.validate().map_err(ServiceError::Invalid)?;
        self.write_idempotent(p.id(), idem, move |tx| {
            if name.eq_ignore_ascii_case(crate::domain::routing::DEFAULT_POOL) {
                default_pool(tx)?;
            }
            if tx.pool_by_name(&name)?.is_some() {
                return Ok(Err(ServiceError::Conflict(format!(
                    "a pool named `{name}` exists"
                ))));
            }
            let pool = Pool {
                id: tx.new_id(),
                created_at: tx.now,
                updated_at: tx.now,
                version: 1,
                name,
                max_claims_per_rep: max_claims,
            };
            tx.put_pool(None, &pool)?;
            tx.change(Entity::Pool, pool.id, Op::Create, None)?;
            Ok(Ok(pool))
        })
        .await
    }

    /// Makes sure the default pool exists (on start), so it is listed before any lead needs it.
    pub async fn ensure_default_pool(&self) -> ServiceResult<()> {
        self.store.write(|tx| default_pool(tx).map(|_| ())).await?;
        Ok(())
    }

    /// A manager or admin gives a lead to a rep, or moves it to a pool.
    pub async fn assign(&self, p: &Principal, id: Uuid, target: Target) -> ServiceResult<Lead> {
        if p.role() == Role::Rep {
            return Err(ServiceError::Forbidden(
                "reps cannot assign leads; claim or release them instead".into(),
            ));
        }
        if let Target::Owner(o) = target {
            check_owner_right(p, Some(o))?;
        }
        let (principal, plugins) = (p.clone(), self.plugins.clone());
        self.store
            .write(move |tx| {
                let p = &principal;
                let Some(before) = visible_lead(tx, p, id)? else {
                    return Ok(Err(ServiceError::NotFound("lead")));
                };
                let mut lead = before.clone();
                match target {
                    Target::Owner(o) => {
                        if let Err(e) = check_owner_exists(tx, Some(o))? {
                            return Ok(Err(e));
                        }
                        if before.owner_id != Some(o)
                            && let Err(e) = check_capacity(tx, o)?
                        {
                            return Ok(Err(e));
                        }
                        lead.owner_id = Some(o);
                    }
                    Target::Pool(pool) => {
                        if tx.pool(pool)?.is_none() {
                            return Ok(Err(ServiceError::invalid("pool_id", "no such pool")));
                        }
                        lead.owner_id = None;
                        lead.pool_id = Some(pool);
                    }
                }
                place(tx, &plugins, &before, &mut lead, p.actor())?;
                write_lead(tx, &before, &mut lead)?;
                Ok(Ok(lead))
            })
            .await?
    }

    /// A rep takes a lead from its pool. Exactly one of two concurrent claims wins; the other
    /// gets a conflict.
    pub async fn claim(&self, p: &Principal, id: Uuid) -> ServiceResult<Lead> {
        let (principal, plugins) = (p.clone(), self.plugins.clone());
        self.store
            .write(move |tx| {
                let p = &principal;
                // A lead claimed a moment ago is no longer visible to the loser of the race,
                // who still learns it was claimed (they saw it in the pool), not that it vanished.
                // Any other lead the caller cannot see does not exist for them.
                let Some(before) = tx.lead(id)? else {
                    return Ok(Err(ServiceError::NotFound("lead")));
                };
                if !p.can_see_lead(&before) && tx.claim_of(id)?.is_none() {
                    return Ok(Err(ServiceError::NotFound("lead")));
                }
                if before.owner_id == Some(p.id()) {
                    return Ok(Ok(before));
                }
                if before.owner_id.is_some() {
                    return Ok(Err(ServiceError::Conflict(
                        "this lead has already been claimed".into(),
                    )));
                }
                let Some(pool) = before
                    .pool_id
                    .map(|pid| tx.pool(pid))
                    .transpose()?
                    .flatten()
                else {
                    return Ok(Err(ServiceError::Conflict(
                        "this lead is not in a pool".into(),
                    )));
                };
                match tx.user(p.id())? {
                    Some(u) if u.active => {}
                    _ => {
                        return Ok(Err(ServiceError::Forbidden(
                            "deactivated users cannot claim leads".into(),
                        )));
                    }
                }
                if at_capacity(tx, p.id())? {
                    return Ok(Err(ServiceError::Conflict(
                        "you hold as many open leads as your capacity allows".into(),
                    )));
                }
                let held = tx.claims_held(pool.id, p.id())?;
                if held >= u64::from(pool.max_claims_per_rep) {
                    return Ok(Err(ServiceError::Conflict(format!(
                        "you hold {held} leads claimed from `{}`, its limit per rep",
                        pool.name
                    ))));
                }
                let mut lead = before.clone();
                give(tx, &plugins, &mut lead, p.id(), p.actor(), "claim")?;
                write_lead(tx, &before, &mut lead)?;
                tx.put_claim(pool.id, p.id(), id)?;
                Ok(Ok(lead))
            })
            .await?
    }

    /// The owner (or their manager, or an admin) returns a lead to the pool it came from, or
    /// the default pool, with a reason kept on its timeline.
    pub async fn release(&self, p: &Principal, id: Uuid, reason: &str) -> ServiceResult<Lead> {
        let reason = reason.trim().to_owned();
        if reason.is_empty() || reason.chars().count() > MAX_REASON {
            return Err(ServiceError::invalid(
                "reason",
                format!("must be 1 to {MAX_REASON} characters"),
            ));
        }
        let principal = p.clone();
        self.store
            .write(move |tx| {
                let p = &principal;
                let Some(before) = visible_lead(tx, p, id)? else {
                    return Ok(Err(ServiceError::NotFound("lead")));
                };
                let Some(owner) = before.owner_id else {
                    return Ok(Err(ServiceError::Conflict("this lead has no owner".into())));
                };
                if owner != p.id() && p.role() == Role::Rep {
                    return Ok(Err(ServiceError::Forbidden(
                        "only the lead's owner or a manager can release it".into(),
                    )));
                }
                let pool = match tx.claim_of(id)? {
                    Some((pool, _)) => tx.pool(pool)?,
                    None => None,
                };
                let pool = match pool {
                    Some(pool) => pool,
                    None => default_pool(tx)?,
                };
                let mut lead = before.clone();
                to_pool(tx, &mut lead, &pool, p.actor(), "release", Some(&reason))?;
                write_lead(tx, &before, &mut lead)?;
                let data = json!({"reason": reason, "by": p.actor(), "pool_id": pool.id});
                let recipients = if owner == p.id() {
                    let user = tx.user(owner)?;
                    managers_of(tx, user.as_ref())?
                } else {
                    vec![owner]
                };
                for r in recipients {
                    notify(tx, "lead.released", r, Some(id), None, data.clone())?;
                }
                Ok(Ok(lead))
            })
            .await?
    }

    /// The owner records a touch: the first-touch clock stops, the follow-up clock restarts.
    pub async fn touch(&self, p: &Principal, id: Uuid) -> ServiceResult<Lead> {
        let (principal, plugins) = (p.clone(), self.plugins.clone());
        self.store
            .write(move |tx| {
                let p = &principal;
                let Some(before) = visible_lead(tx, p, id)? else {
                    return Ok(Err(ServiceError::NotFound("lead")));
                };
                let mut lead = before.clone();
                if !touch(tx, &plugins, &mut lead, p.id(), "touch")? {
                    return Ok(Err(ServiceError::Forbidden(
                        "only the lead's owner can touch it".into(),
                    )));
                }
                lead.last_activity_at = Some(tx.now);
                write_lead(tx, &before, &mut lead)?;
                Ok(Ok(lead))
            })
            .await?
    }

    /// A lead's SLA clock and pending timers.
    pub fn lead_sla(&self, p: &Principal, id: Uuid) -> ServiceResult<SlaView> {
        let snap = self.store.read()?;
        match snap.lead(id)? {
            Some(l) if p.can_see_lead(&l) => self.sla_view(&snap, &l),
            _ => Err(ServiceError::NotFound("lead")),
        }
    }

    /// `lead`'s SLA clock and pending timers, read from `snap`.
    pub(crate) fn sla_view(
        &self,
        snap: &crate::store::Snapshot,
        lead: &crate::domain::lead::Lead,
    ) -> ServiceResult<SlaView> {
        // A clock runs for the lead's current owner only; a pooled or reassigned lead's
        // earlier clock stopped when it left that owner.
        let state = snap
            .sla_state(lead.id)?
            .filter(|s| Some(s.owner_id) == lead.owner_id);
        let steps = match &state {
            Some(s) => {
                let team = snap.user(s.owner_id)?.and_then(|u| u.team);
                let hours = self.plugins.business_hours(team.as_deref());
                s.policy.steps(s.assigned_at, hours)
            }
            None => Vec::new(),
        };
        Ok(SlaView {
            state,
            steps,
            timers: snap
                .timers_of(lead.id)?
                .into_iter()
                .filter(|t| super::work::is_sla_timer(t.kind))
                .collect(),
        })
    }

    /// The caller's notifications, newest first, below `before`.
    pub fn notifications(
        &self,
        p: &Principal,
        before: Option<Uuid>,
        limit: usize,
    ) -> ServiceResult<Vec<Notification>> {
        Ok(self.store.read()?.notifications_of(p.id(), before, limit)?)
    }

    /// Marks one of the caller's notifications read.
    pub async fn read_notification(&self, p: &Principal, id: Uuid) -> ServiceResult<Notification> {
        let me = p.id();
        self.store
            .write(move |tx| {
                let Some(mut n) = tx.notification(id)?.filter(|n| n.recipient_id == me) else {
                    return Ok(Err(ServiceError::NotFound("notification")));
                };
                if n.read_at.is_none() {
                    n.read_at = Some(tx.now);
                    tx.put_notification(&n)?;
                }
                Ok(Ok(n))
            })
            .await?
    }
}

fn at_capacity(tx: &Tx<'_>, user: Uuid) -> Result<bool, StoreError> {
    let capacity = tx.user(user)?.map_or(0, |u| u.capacity);
    Ok(tx.load_of(user)? >= u64::from(capacity))
}

/// A 409 if `owner` already holds as many open leads as their capacity allows.
pub(crate) fn check_capacity(tx: &Tx<'_>, owner: Uuid) -> Result<ServiceResult<()>, StoreError> {
    Ok(if at_capacity(tx, owner)? {
        Err(ServiceError::Conflict(
            "this rep holds as many open leads as their capacity allows".into(),
        ))
    } else {
        Ok(())
    })
}
