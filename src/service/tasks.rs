//! Tasks: create, read, list, patch and delete to-dos for people, with who may see and assign
//! which, and the reminder timer an hour before each open task falls due (firing it is
//! `work::fire`'s job).

use super::{Idempotency, Precondition, Render, Service, ServiceError, ServiceResult, Written};
use crate::domain::time::Millis;
use crate::domain::user::{Principal, Role};
use crate::domain::work::{NewTask, TASK_REMINDER_MS, Task, TimerKind};
use crate::store::{ChangeEntry, Entity, Op, Snapshot, StoreError, StoreResult, Tx};
use std::collections::HashSet;
use uuid::Uuid;

/// A checked merge patch of a task; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskChanges {
    pub title: Option<String>,
    /// `Some(None)` clears the due time.
    pub due_at: Option<Option<Millis>>,
    pub done: Option<bool>,
    pub owner_id: Option<Uuid>,
    /// `Some(None)` detaches the task from its lead.
    pub lead_id: Option<Option<Uuid>>,
}

/// The filters of `GET /v1/tasks`.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub owner_id: Option<Uuid>,
    /// Tasks of every user on this team.
    pub team: Option<String>,
    pub lead_id: Option<Uuid>,
    pub done: Option<bool>,
    /// Only open tasks whose due time has passed.
    pub overdue: bool,
}

/// A page of tasks in due order, and the `(due, id)` to continue from.
#[derive(Debug, Clone)]
pub struct TaskPage {
    pub items: Vec<Task>,
    pub next: Option<(i64, u128)>,
}

/// Where a task sorts in lists: by due time, tasks without one last, id as tie-break.
pub fn task_position(t: &Task) -> (i64, u128) {
    (t.due_at.unwrap_or(i64::MAX), t.id.as_u128())
}

/// Whether an open task's due time has passed at `now`.
pub fn is_overdue(t: &Task, now: Millis) -> bool {
    !t.done && t.due_at.is_some_and(|d| d < now)
}

fn can_see_task(p: &Principal, t: &Task) -> bool {
    p.visible_owners()
        .is_none_or(|owners| owners.contains(&t.owner_id))
}

/// Who may be given a task: reps only themselves, managers themselves and their team, admins
/// anyone (existence is checked in the transaction).
fn check_owner_right(p: &Principal, owner: Uuid) -> ServiceResult<()> {
    match p.role() {
        Role::Admin => Ok(()),
        Role::Manager if owner == p.id() || p.team_member_ids.contains(&owner) => Ok(()),
        Role::Rep if owner == p.id() => Ok(()),
        _ => Err(ServiceError::Forbidden(
            "you may only give tasks to yourself or, as a manager, to your team".into(),
        )),
    }
}

fn check_owner_exists(tx: &Tx<'_>, owner: Uuid) -> Result<ServiceResult<()>, StoreError> {
    Ok(match tx.user(owner)? {
        Some(u) if u.active => Ok(()),
        Some(_) => Err(ServiceError::invalid(
            "owner_id",
            "this user is deactivated",
        )),
        None => Err(ServiceError::invalid("owner_id", "no such user")),
    })
}

/// A task may be about a lead the caller can see; any other id is unknown to them.
fn check_lead(
    tx: &Tx<'_>,
    p: &Principal,
    lead: Option<Uuid>,
) -> Result<ServiceResult<()>, StoreError> {
    let Some(id) = lead else {
        return Ok(Ok(()));
    };
    Ok(match tx.lead(id)? {
        Some(l) if p.can_see_lead(&l) => Ok(()),
        _ => Err(ServiceError::invalid("lead_id", "no such lead")),
    })
}

/// Stores a new task with its reminder and its changelog row (a person's, a rule's or a
/// sequence step's).
pub(crate) fn add_task(tx: &mut Tx<'_>, task: &Task) -> StoreResult<()> {
    tx.put_task(None, task)?;
    schedule_reminder(tx, task)?;
    log_task(tx, task, Op::Create)?;
    Ok(())
}

/// Drops the task's reminder and sets a new one if it is open and due: an hour before, or at
/// once when that moment has passed.
pub(crate) fn schedule_reminder(tx: &mut Tx<'_>, task: &Task) -> StoreResult<()> {
    tx.cancel_timers(task.id, |k| k == TimerKind::TaskReminder)?;
    if let Some(due) = task.due_at
        && !task.done
    {
        let at = due.saturating_sub(TASK_REMINDER_MS).max(tx.now);
        tx.add_timer(TimerKind::TaskReminder, at, task.id)?;
    }
    Ok(())
}

/// The changelog row of a task, carrying its owner so the feed shows it to them.
pub(crate) fn log_task(tx: &mut Tx<'_>, task: &Task, op: Op) -> StoreResult<u64> {
    let entry = ChangeEntry {
        entity: Entity::Task,
        id: task.id,
        op,
        at: tx.now,
        lead_id: task.lead_id,
        owner_id: Some(task.owner_id),
        pool_id: None,
    };
    tx.change_entry(entry)
}

/// Applies `changes` to `task`; returns whether anything differs.
fn apply_changes(task: &mut Task, changes: &TaskChanges, now: Millis) -> bool {
    let before = task.clone();
    if let Some(t) = &changes.title {
        task.title.clone_from(t);
    }
    if let Some(d) = changes.due_at {
        task.due_at = d;
    }
    if let Some(o) = changes.owner_id {
        task.owner_id = o;
    }
    if let Some(l) = changes.lead_id {
        task.lead_id = l;
    }
    if let Some(done) = changes.done
        && done != task.done
    {
        task.done = done;
        task.done_at = done.then_some(now);
    }
    *task != before
}

/// Up to `need` tasks of `owner` from `from` on, due no later than `upto_due`, whose done flag
/// `keep` accepts.
fn owner_tasks(
    snap: &Snapshot,
    owner: Uuid,
    from: (i64, u128),
    upto_due: i64,
    need: usize,
    keep: impl Fn(bool) -> bool,
) -> StoreResult<Vec<Task>> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let (mut items, next) =
            snap.tasks_of_owner(owner, at, upto_due, need - out.len(), usize::MAX, &keep)?;
        out.append(&mut items);
        match next {
            Some(n) if out.len() < need => at = n,
            _ => return Ok(out),
        }
    }
}

impl Service {
    /// Creates a task for the caller or, within their rights, for someone else.
    pub async fn create_task(
        &self,
        p: &Principal,
        new: NewTask,
        idem: Option<(Idempotency, Render<Task>)>,
    ) -> ServiceResult<Written<Task>> {
        let owner = new.owner_id.unwrap_or(p.id());
        check_owner_right(p, owner)?;
        let principal = p.clone();
        self.write_idempotent(p.id(), idem, move |tx| {
            let p = &principal;
            if owner != p.id()
                && let Err(e) = check_owner_exists(tx, owner)?
            {
                return Ok(Err(e));
            }
            if let Err(e) = check_lead(tx, p, new.lead_id)? {
                return Ok(Err(e));
            }
            let task = Task {
                id: tx.new_id(),
                created_at: tx.now,
                updated_at: tx.now,
                version: 1,
                lead_id: new.lead_id,
                owner_id: owner,
                title: new.title,
                due_at: new.due_at,
                done: new.done,
                done_at: new.done.then_some(tx.now),
                created_by: p.actor(),
            };
            add_task(tx, &task)?;
            Ok(Ok(task))
        })
        .await
    }

    pub fn get_task(&self, p: &Principal, id: Uuid) -> ServiceResult<Task> {
        match self.store.read()?.task(id)? {
            Some(t) if can_see_task(p, &t) => Ok(t),
            _ => Err(ServiceError::NotFound("task")),
        }
    }

    /// Tasks the caller may see that match `filter`, by due time (none last), a page at a time
    /// from `after` (inclusive, as `next` gave it).
    pub fn list_tasks(
        &self,
        p: &Principal,
        filter: &TaskFilter,
        limit: usize,
        after: Option<(i64, u128)>,
    ) -> ServiceResult<TaskPage> {
        if filter.team.is_some() && p.role() == Role::Rep {
            return Err(ServiceError::Forbidden(
                "only managers and admins may list a team's tasks".into(),
            ));
        }
        let now = self.now();
        let snap = self.store.read()?;
        let visible = p.visible_owners();
        let sees = |o: &Uuid| visible.as_ref().is_none_or(|v| v.contains(o));
        let on_team = |u: &crate::domain::user::User, team: &str| u.team.as_deref() == Some(team);
        let mut owners: Vec<Uuid> = match (&filter.owner_id, &filter.team) {
            (Some(o), None) => vec![*o],
            (Some(o), Some(team)) => match snap.user(*o)? {
                Some(u) if on_team(&u, team) => vec![*o],
                _ => Vec::new(),
            },
            (None, Some(team)) => snap
                .users()?
                .into_iter()
                .filter(|u| on_team(u, team))
                .map(|u| u.id)
                .collect(),
            (None, None) => match &visible {
                Some(v) => v.clone(),
                None => snap.users()?.into_iter().map(|u| u.id).collect(),
            },
        };
        owners.retain(|o| sees(o));
        let from = after.unwrap_or((i64::MIN, 0));
        let done = filter.done;
        let overdue = filter.overdue;
        let keep = move |d: bool| done.is_none_or(|want| want == d) && !(overdue && d);
        let upto_due = if overdue {
            now.saturating_sub(1)
        } else {
            i64::MAX
        };
        let need = limit.saturating_add(1);
        let mut found: Vec<Task> = match filter.lead_id {
            Some(lead) => {
                let owners: HashSet<Uuid> = owners.into_iter().collect();
                snap.tasks_of_lead(lead)?
                    .into_iter()
                    .filter(|t| {
                        owners.contains(&t.owner_id)
                            && keep(t.done)
                            && task_position(t) >= from
                            && t.due_at.unwrap_or(i64::MAX) <= upto_due
                    })
                    .collect()
            }
            None => {
                let mut all = Vec::new();
                for owner in owners {
                    all.extend(owner_tasks(&snap, owner, from, upto_due, need, keep)?);
                }
                all
            }
        };
        found.sort_by_key(task_position);
        found.dedup_by_key(|t| t.id);
        let next = found.get(limit).map(task_position);
        found.truncate(limit);
        Ok(TaskPage { items: found, next })
    }

    pub async fn patch_task(
        &self,
        p: &Principal,
        id: Uuid,
        pre: Precondition,
        changes: TaskChanges,
    ) -> ServiceResult<Task> {
        let principal = p.clone();
        self.store
            .write(move |tx| {
                let p = &principal;
                let Some(before) = tx.task(id)? else {
                    return Ok(Err(ServiceError::NotFound("task")));
                };
                if !can_see_task(p, &before) {
                    return Ok(Err(ServiceError::NotFound("task")));
                }
                if let Err(e) = pre.check(before.version) {
                    return Ok(Err(e));
                }
                let mut task = before.clone();
                if !apply_changes(&mut task, &changes, tx.now) {
                    return Ok(Ok(before));
                }
                if task.owner_id != before.owner_id {
                    if let Err(e) = check_owner_right(p, task.owner_id) {
                        return Ok(Err(e));
                    }
                    if let Err(e) = check_owner_exists(tx, task.owner_id)? {
                        return Ok(Err(e));
                    }
                }
                if task.lead_id != before.lead_id
                    && let Err(e) = check_lead(tx, p, task.lead_id)?
                {
                    return Ok(Err(e));
                }
                task.version += 1;
                task.updated_at = tx.now;
                tx.put_task(Some(&before), &task)?;
                if task.due_at != before.due_at || task.done != before.done {
                    schedule_reminder(tx, &task)?;
                }
                log_task(tx, &task, Op::Update)?;
                Ok(Ok(task))
            })
            .await?
    }

    /// Deletes a task and its reminder.
    pub async fn delete_task(
        &self,
        p: &Principal,
        id: Uuid,
        pre: Precondition,
    ) -> ServiceResult<()> {
        let principal = p.clone();
        self.store
            .write(move |tx| {
                let Some(task) = tx.task(id)? else {
                    return Ok(Err(ServiceError::NotFound("task")));
                };
                if !can_see_task(&principal, &task) {
                    return Ok(Err(ServiceError::NotFound("task")));
                }
                if let Err(e) = pre.check(task.version) {
                    return Ok(Err(e));
                }
                tx.delete_task(&task)?;
                log_task(tx, &task, Op::Delete)?;
                Ok(Ok(()))
            })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(due: Option<Millis>, done: bool) -> Task {
        Task {
            id: Uuid::from_u128(7),
            created_at: 0,
            updated_at: 0,
            version: 1,
            lead_id: None,
            owner_id: Uuid::from_u128(1),
            title: "Call".into(),
            due_at: due,
            done,
            done_at: None,
            created_by: None,
        }
    }

    #[test]
    fn overdue_needs_an_open_task_past_its_due_time() {
        assert!(is_overdue(&task(Some(10), false), 11));
        assert!(!is_overdue(&task(Some(10), false), 10));
        assert!(!is_overdue(&task(Some(10), true), 11));
        assert!(!is_overdue(&task(None, false), i64::MAX));
    }

    #[test]
    fn tasks_without_due_time_sort_last() {
        assert!(
            task_position(&task(Some(i64::MAX - 1), false)) < task_position(&task(None, false))
        );
    }

    #[test]
    fn changes_set_and_clear_done_at() {
        let mut t = task(Some(5), false);
        let done = TaskChanges {
            done: Some(true),
            ..TaskChanges::default()
        };
        assert!(apply_changes(&mut t, &done, 42));
        assert_eq!((t.done, t.done_at), (true, Some(42)));
        assert!(!apply_changes(&mut t, &done, 50));
        assert_eq!(t.done_at, Some(42));
        let reopen = TaskChanges {
            done: Some(false),
            due_at: Some(None),
            ..TaskChanges::default()
        };
        assert!(apply_changes(&mut t, &reopen, 60));
        assert_eq!((t.done, t.done_at, t.due_at), (false, None, None));
    }
}
