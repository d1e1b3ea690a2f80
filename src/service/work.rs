//! Who works a lead, in the write path: routing (the `route` hook) at capture and at the SQL
//! hand-off, assignment, pools and claims, the SLA clock (the `sla` hook, durable timers) and
//! touches, and what each fired timer does. Every function here runs inside the writer, so an
//! assignment, its timers, events and notifications commit with the change that caused them.

use crate::domain::lead::{Lead, Status};
use crate::domain::routing::{DEFAULT_POOL, Decision, Rep, Roster, RouteTrigger};
use crate::domain::sequence::ExitCondition;
use crate::domain::sla::{SlaState, SlaStep};
use crate::domain::user::{Role, User};
use crate::domain::work::{Notification, Pool, Timer, TimerKind};
use crate::script::Plugins;
use crate::store::{Entity, Op, StoreError, Tx};
use serde_json::{Value, json};
use uuid::Uuid;

type R<T> = Result<T, StoreError>;

/// The pool every unplaceable lead lands in, made on first need.
pub(crate) fn default_pool(tx: &mut Tx<'_>) -> R<Pool> {
    if let Some(p) = tx.pool_by_name(DEFAULT_POOL)? {
        return Ok(p);
    }
    let pool = Pool {
        id: tx.new_id(),
        created_at: tx.now,
        updated_at: tx.now,
        version: 1,
        name: DEFAULT_POOL.into(),
        max_claims_per_rep: crate::domain::work::DEFAULT_MAX_CLAIMS,
    };
    tx.put_pool(None, &pool)?;
    tx.change(Entity::Pool, pool.id, Op::Create, None)?;
    Ok(pool)
}

/// Leaves a notification for `recipient`.
pub(crate) fn notify(
    tx: &mut Tx<'_>,
    kind: &str,
    recipient: Uuid,
    lead: Option<Uuid>,
    task: Option<Uuid>,
    data: Value,
) -> R<()> {
    let n = Notification {
        id: tx.new_id(),
        at: tx.now,
        kind: kind.to_owned(),
        recipient_id: recipient,
        lead_id: lead,
        task_id: task,
        data: data.to_string(),
        read_at: None,
    };
    tx.notify(&n)
}

/// Who hears about `user`'s leads: their manager, else their team's managers, else admins.
pub(crate) fn managers_of(tx: &Tx<'_>, user: Option<&User>) -> R<Vec<Uuid>> {
    if let Some(m) = user.and_then(|u| u.manager_id)
        && tx.user(m)?.is_some_and(|m| m.active)
    {
        return Ok(vec![m]);
    }
    let users = tx.users()?;
    let team = user.and_then(|u| u.team.as_deref());
    let team_managers: Vec<Uuid> = users
        .iter()
        .filter(|m| {
            m.active && m.role == Role::Manager && team.is_some() && m.team.as_deref() == team
        })
        .map(|m| m.id)
        .collect();
    if !team_managers.is_empty() {
        return Ok(team_managers);
    }
    Ok(users
        .iter()
        .filter(|u| u.active && u.role == Role::Admin)
        .map(|u| u.id)
        .collect())
}

/// Routes `lead` (the `route` hook or the built-in rule) and applies the decision to it. The
/// caller writes the lead.
pub(crate) fn route(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
    trigger: RouteTrigger,
) -> R<()> {
    let mut reps = Vec::new();
    for u in tx.users()? {
        let load = tx.load_of(u.id)?;
        reps.extend(Rep::from_user(&u, load));
    }
    let excluded = (trigger == RouteTrigger::Reclaim)
        .then_some(lead.owner_id)
        .flatten();
    let roster = Roster::new(reps, tx.round_robin_positions()?, excluded);
    let default = default_pool(tx)?;
    let pools = pool_names(tx)?;
    let loaded = plugins.current();
    let routed = plugins.route(&loaded, lead, roster, &pools, trigger, tx.now);
    for (key, rep) in &routed.turns {
        tx.set_round_robin(key, *rep)?;
    }
    match routed.decision {
        Decision::Keep => Ok(()),
        Decision::Owner(owner) => give(tx, plugins, lead, owner, None, trigger.as_str()),
        Decision::Pool(name) => {
            let pool = tx.pool_by_name(&name)?.unwrap_or(default);
            to_pool(tx, lead, &pool, None, trigger.as_str(), None)
        }
    }
}

fn pool_names(tx: &Tx<'_>) -> R<Vec<String>> {
    Ok(tx.pools()?.into_iter().map(|p| p.name).collect())
}

/// Makes `owner` the lead's owner: an `assigned` event, a notification and a fresh SLA clock.
/// `how` says why (capture, sql, reclaim, assign, claim).
pub(crate) fn give(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
    owner: Uuid,
    actor: Option<Uuid>,
    how: &str,
) -> R<()> {
    let from = lead.owner_id;
    if from == Some(owner) {
        return Ok(());
    }
    lead.owner_id = Some(owner);
    lead.pool_id = None;
    tx.event(
        lead.id,
        "assigned",
        actor,
        json!({"owner_id": owner, "from": from, "how": how}),
    )?;
    if how == "claim" {
        let claimer = tx.user(owner)?;
        for m in managers_of(tx, claimer.as_ref())? {
            notify(
                tx,
                "lead.claimed",
                m,
                Some(lead.id),
                None,
                json!({"owner_id": owner}),
            )?;
        }
    } else if actor != Some(owner) {
        notify(
            tx,
            "lead.assigned",
            owner,
            Some(lead.id),
            None,
            json!({"how": how, "by": actor}),
        )?;
    }
    start_sla(tx, plugins, lead, owner)
}

/// Puts the lead in `pool` without an owner; its SLA timers stop.
pub(crate) fn to_pool(
    tx: &mut Tx<'_>,
    lead: &mut Lead,
    pool: &Pool,
    actor: Option<Uuid>,
    how: &str,
    reason: Option<&str>,
) -> R<()> {
    let kind = if how == "release" {
        "released"
    } else {
        "pooled"
    };
    let from = lead.owner_id;
    if from.is_none() && lead.pool_id == Some(pool.id) {
        return Ok(());
    }
    lead.owner_id = None;
    lead.pool_id = Some(pool.id);
    lead.next_follow_up_at = None;
    tx.cancel_timers(lead.id, is_sla_timer)?;
    tx.event(
        lead.id,
        kind,
        actor,
        json!({"pool_id": pool.id, "pool": pool.name, "from": from, "how": how, "reason": reason}),
    )?;
    Ok(())
}

pub(crate) fn is_sla_timer(k: TimerKind) -> bool {
    matches!(k, TimerKind::Sla(_) | TimerKind::FollowUp)
}

/// Starts the first-touch clock of `owner` on `lead`: the `sla` hook's policy, counted in the
/// owner's team's working hours, with a timer for each step.
pub(crate) fn start_sla(tx: &mut Tx<'_>, plugins: &Plugins, lead: &mut Lead, owner: Uuid) -> R<()> {
    tx.cancel_timers(lead.id, is_sla_timer)?;
    let previous = tx.sla_state(lead.id)?;
    let loaded = plugins.current();
    let Some(policy) = plugins.sla(&loaded, lead, tx.now) else {
        // No SLA under this owner: the last owner's clock must not run on for them.
        if previous.is_some() {
            tx.remove_sla_state(lead.id)?;
        }
        lead.next_follow_up_at = None;
        return Ok(());
    };
    let team = tx.user(owner)?.and_then(|u| u.team);
    let hours = plugins.business_hours(team.as_deref());
    let due = policy.first_touch_due(tx.now, hours);
    // One timer at a time: each step schedules the next when it fires, in its transaction.
    if let Some(&(step, at)) = policy.steps(tx.now, hours).first() {
        tx.add_timer(TimerKind::Sla(step), at, lead.id)?;
    }
    let state = SlaState {
        owner_id: owner,
        policy,
        assigned_at: tx.now,
        first_touch_due: due,
        first_touch_at: None,
        last_touch_at: None,
        steps_taken: Vec::new(),
        follow_up_due: None,
        original_due: previous.as_ref().map_or(due, |p| p.original_due),
        first_touch_by: previous.and_then(|p| p.first_touch_by),
    };
    tx.put_sla_state(lead.id, &state)?;
    lead.next_follow_up_at = Some(due);
    Ok(())
}

/// Records a touch of `lead` by `actor` if they own it: the first-touch clock stops and the
/// follow-up clock starts over. Returns whether it counted.
pub(crate) fn touch(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
    actor: Uuid,
    kind: &str,
) -> R<bool> {
    if lead.owner_id != Some(actor) {
        return Ok(false);
    }
    let now = tx.now;
    let mut state = match tx.sla_state(lead.id)? {
        Some(s) if s.owner_id == actor => s,
        _ => {
            start_sla(tx, plugins, lead, actor)?;
            match tx.sla_state(lead.id)? {
                Some(s) => s,
                // No SLA for this lead: the touch is still a touch.
                None => {
                    mark_touched(tx, lead, actor, kind, None)?;
                    super::nurture::exit_on(tx, plugins, lead.id, ExitCondition::OwnerTookOver)?;
                    return Ok(true);
                }
            }
        }
    };
    let first = state.first_touch_at.is_none();
    state.first_touch_at.get_or_insert(now);
    state.first_touch_by.get_or_insert(actor);
    state.last_touch_at = Some(now);
    tx.cancel_timers(lead.id, is_sla_timer)?;
    let team = tx.user(actor)?.and_then(|u| u.team);
    let hours = plugins.business_hours(team.as_deref());
    state.follow_up_due = state.policy.follow_up_due(now, hours);
    if let Some(due) = state.follow_up_due {
        tx.add_timer(TimerKind::FollowUp, due, lead.id)?;
    }
    tx.put_sla_state(lead.id, &state)?;
    let met = first.then_some(now <= state.first_touch_due);
    mark_touched(tx, lead, actor, kind, met)?;
    super::nurture::exit_on(tx, plugins, lead.id, ExitCondition::OwnerTookOver)?;
    lead.next_follow_up_at = state.follow_up_due;
    Ok(true)
}

fn mark_touched(
    tx: &mut Tx<'_>,
    lead: &mut Lead,
    actor: Uuid,
    kind: &str,
    met: Option<bool>,
) -> R<()> {
    let first = lead.first_touch_at.is_none();
    lead.first_touch_at.get_or_insert(tx.now);
    if lead.status == Status::New {
        lead.status = Status::Attempting;
    }
    tx.event(
        lead.id,
        "touched",
        Some(actor),
        json!({"kind": kind, "first": first, "sla_met": met}),
    )
}

/// After a new lead is stored: route it if nobody placed it, or start its owner's SLA clock
/// (an assignment by whoever created it).
pub(crate) fn place_new(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
    actor: Option<Uuid>,
) -> R<()> {
    match lead.owner_id {
        None if lead.pool_id.is_none() => route(tx, plugins, lead, RouteTrigger::Capture),
        None => Ok(()),
        Some(owner) => {
            lead.owner_id = None;
            give(tx, plugins, lead, owner, actor, "create")
        }
    }
}

/// Applies an owner or pool change a person made on `lead` (a PATCH or an assign): the new
/// owner gets it with a fresh SLA clock, or it goes to a pool — never to nobody.
pub(crate) fn place(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    before: &Lead,
    lead: &mut Lead,
    actor: Option<Uuid>,
) -> R<()> {
    let (owner, pool) = (lead.owner_id, lead.pool_id);
    lead.owner_id = before.owner_id;
    lead.pool_id = before.pool_id;
    match owner {
        Some(o) if owner != before.owner_id => give(tx, plugins, lead, o, actor, "assign"),
        Some(_) if pool.is_some() && pool != before.pool_id => {
            let target = pool_or_default(tx, pool)?;
            to_pool(tx, lead, &target, actor, "assign", None)
        }
        Some(_) => Ok(()),
        None => {
            let target = pool_or_default(tx, pool)?;
            to_pool(tx, lead, &target, actor, "assign", None)
        }
    }
}

fn pool_or_default(tx: &mut Tx<'_>, pool: Option<Uuid>) -> R<Pool> {
    match pool {
        Some(id) => match tx.pool(id)? {
            Some(p) => Ok(p),
            None => default_pool(tx),
        },
        None => default_pool(tx),
    }
}

/// Writes a lead changed by a lifecycle step, as a new version with its change entry.
pub(crate) fn write_lead(tx: &mut Tx<'_>, before: &Lead, lead: &mut Lead) -> R<bool> {
    if lead == before {
        return Ok(false);
    }
    lead.version = before.version + 1;
    lead.updated_at = tx.now;
    tx.put_lead(Some(before), lead)?;
    tx.change(Entity::Lead, lead.id, Op::Update, Some(lead))?;
    Ok(true)
}

/// Does what a due timer is for, and marks it done (removes it) in the same transaction, so it
/// fires exactly once. A timer another job already removed does nothing.
pub(crate) fn fire(tx: &mut Tx<'_>, plugins: &Plugins, timer: &Timer) -> R<()> {
    if !tx.remove_timer(timer)? {
        return Ok(());
    }
    match timer.kind {
        TimerKind::Sla(step) => sla_step(tx, plugins, timer.subject, step),
        TimerKind::FollowUp => follow_up_missed(tx, timer.subject, timer.due),
        TimerKind::TaskReminder => task_due(tx, timer.subject),
        TimerKind::Sequence => super::nurture::run(tx, plugins, timer.subject),
        TimerKind::RuleLater => super::nurture::rule_later_due(tx, plugins, timer),
    }
}

/// The lead, its SLA state and owner, if the SLA still applies to the current owner.
fn live_sla(tx: &Tx<'_>, lead_id: Uuid) -> R<Option<(Lead, SlaState, Uuid)>> {
    let Some(lead) = tx.lead(lead_id)? else {
        return Ok(None);
    };
    let Some(state) = tx.sla_state(lead_id)? else {
        return Ok(None);
    };
    match lead.owner_id {
        Some(o) if o == state.owner_id => Ok(Some((lead, state, o))),
        _ => Ok(None),
    }
}

fn sla_step(tx: &mut Tx<'_>, plugins: &Plugins, lead_id: Uuid, step: SlaStep) -> R<()> {
    let Some((before, mut state, owner)) = live_sla(tx, lead_id)? else {
        return Ok(());
    };
    if state.first_touch_at.is_some() || state.steps_taken.contains(&step) {
        return Ok(());
    }
    state.steps_taken.push(step);
    tx.put_sla_state(lead_id, &state)?;
    if step != SlaStep::Reclaim {
        schedule_next_step(tx, plugins, lead_id, &state, owner)?;
    }
    let due = crate::domain::time::to_rfc3339(state.first_touch_due);
    let data = json!({"step": step.as_str(), "owner_id": owner, "due": due});
    let mut lead = before.clone();
    match step {
        SlaStep::Remind => {
            // A policy may remind before the deadline; only a late one is a breach.
            let kind = if tx.now >= state.first_touch_due {
                "sla_breach"
            } else {
                "sla_reminder"
            };
            tx.event(lead_id, kind, None, data.clone())?;
            notify(tx, "sla.reminder", owner, Some(lead_id), None, data)?;
        }
        SlaStep::Escalate => {
            tx.event(lead_id, "sla_escalated", None, data.clone())?;
            let user = tx.user(owner)?;
            for m in managers_of(tx, user.as_ref())? {
                notify(tx, "sla.escalated", m, Some(lead_id), None, data.clone())?;
            }
        }
        SlaStep::Reclaim => {
            tx.event(
                lead_id,
                "reclaimed",
                None,
                json!({"from": owner, "reason": "first touch overdue"}),
            )?;
            notify(
                tx,
                "lead.reclaimed",
                owner,
                Some(lead_id),
                None,
                json!({"reason": "first touch overdue"}),
            )?;
            route(tx, plugins, &mut lead, RouteTrigger::Reclaim)?;
            if lead.owner_id == Some(owner) {
                // Routing found nobody else: the lead waits in the default pool.
                let pool = default_pool(tx)?;
                to_pool(
                    tx,
                    &mut lead,
                    &pool,
                    None,
                    "reclaim",
                    Some("first touch overdue"),
                )?;
            }
        }
    }
    write_lead(tx, &before, &mut lead)?;
    Ok(())
}

/// Adds the timer of the first step of `state`'s policy not yet taken, if any.
fn schedule_next_step(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead_id: Uuid,
    state: &SlaState,
    owner: Uuid,
) -> R<()> {
    let team = tx.user(owner)?.and_then(|u| u.team);
    let hours = plugins.business_hours(team.as_deref());
    let next = state
        .policy
        .steps(state.assigned_at, hours)
        .into_iter()
        .find(|(s, _)| !state.steps_taken.contains(s));
    if let Some((step, at)) = next {
        tx.add_timer(TimerKind::Sla(step), at.max(tx.now), lead_id)?;
    }
    Ok(())
}

fn follow_up_missed(tx: &mut Tx<'_>, lead_id: Uuid, due: i64) -> R<()> {
    let Some((before, state, owner)) = live_sla(tx, lead_id)? else {
        return Ok(());
    };
    if state.follow_up_due != Some(due) {
        return Ok(());
    }
    let reason = "no follow-up in time";
    let mut lead = before.clone();
    let pool = default_pool(tx)?;
    tx.event(
        lead_id,
        "reclaimed",
        None,
        json!({"from": owner, "reason": reason}),
    )?;
    notify(
        tx,
        "lead.reclaimed",
        owner,
        Some(lead_id),
        None,
        json!({"reason": reason}),
    )?;
    to_pool(tx, &mut lead, &pool, None, "follow_up", Some(reason))?;
    write_lead(tx, &before, &mut lead)?;
    Ok(())
}

fn task_due(tx: &mut Tx<'_>, task_id: Uuid) -> R<()> {
    let Some(task) = tx.task(task_id)? else {
        return Ok(());
    };
    if task.done {
        return Ok(());
    }
    notify(
        tx,
        "task.due",
        task.owner_id,
        task.lead_id,
        Some(task.id),
        json!({"due_at": task.due_at.map(crate::domain::time::to_rfc3339)}),
    )
}
