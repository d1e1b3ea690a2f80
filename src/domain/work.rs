//! The records of the sales floor: pools of unowned leads, tasks, durable timers and the
//! notifications the server leaves for people. Pure types and their validation.

use super::FieldError;
use super::time::{Millis, parse_rfc3339};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A named pool of unowned leads reps may claim from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub id: Uuid,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: u64,
    pub name: String,
    /// How many leads claimed from this pool one rep may hold at once.
    pub max_claims_per_rep: u32,
}

pub const DEFAULT_MAX_CLAIMS: u32 = 20;
const MAX_NAME: usize = 100;

/// The body of `POST /v1/pools`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolInput {
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    /// Default 20.
    pub max_claims_per_rep: Option<u32>,
}

impl PoolInput {
    pub fn validate(&self) -> Result<(String, u32), Vec<FieldError>> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return Err(vec![FieldError::new(
                "name",
                format!("must be 1 to {MAX_NAME} characters"),
            )]);
        }
        Ok((
            name.to_owned(),
            self.max_claims_per_rep.unwrap_or(DEFAULT_MAX_CLAIMS),
        ))
    }
}

/// A to-do for a person, optionally about a lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: Uuid,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: u64,
    pub lead_id: Option<Uuid>,
    pub owner_id: Uuid,
    pub title: String,
    pub due_at: Option<Millis>,
    pub done: bool,
    pub done_at: Option<Millis>,
    /// Who or what made it (None: the server, e.g. a sequence).
    pub created_by: Option<Uuid>,
}

const MAX_TITLE: usize = 500;

/// The body of `POST /v1/tasks`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    pub title: String,
    pub lead_id: Option<Uuid>,
    /// Default: the caller.
    pub owner_id: Option<Uuid>,
    /// RFC 3339.
    pub due_at: Option<String>,
    #[serde(default)]
    pub done: bool,
}

/// A task input, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub title: String,
    pub lead_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub due_at: Option<Millis>,
    pub done: bool,
}

pub fn check_title(title: &str) -> Result<String, FieldError> {
    let t = title.trim();
    if t.is_empty() || t.chars().count() > MAX_TITLE {
        return Err(FieldError::new(
            "title",
            format!("must be 1 to {MAX_TITLE} characters"),
        ));
    }
    Ok(t.to_owned())
}

pub fn check_due(field: &str, due: Option<&str>) -> Result<Option<Millis>, FieldError> {
    due.map(|d| parse_rfc3339(d).map_err(|m| FieldError::new(field, m)))
        .transpose()
}

impl TaskInput {
    pub fn validate(&self) -> Result<NewTask, Vec<FieldError>> {
        let mut errors = Vec::new();
        let title = check_title(&self.title).map_err(|e| errors.push(e)).ok();
        let due = check_due("due_at", self.due_at.as_deref())
            .map_err(|e| errors.push(e))
            .ok();
        match (title, due) {
            (Some(title), Some(due_at)) if errors.is_empty() => Ok(NewTask {
                title,
                lead_id: self.lead_id,
                owner_id: self.owner_id,
                due_at,
                done: self.done,
            }),
            _ => Err(errors),
        }
    }
}

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerKind {
    /// A step of a late first touch on a lead (`subject`).
    Sla(super::sla::SlaStep),
    /// The follow-up deadline of a touched lead.
    FollowUp,
    /// The reminder an hour before a task (`subject`) is due.
    TaskReminder,
    /// The next step of a nurture enrollment (`subject`).
    Sequence,
    /// An `on_event` action put off by `later` on a lead (`subject`); the lead's `rule_later`
    /// event with the timer's id holds the action.
    RuleLater,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Sla(s) => match s {
                super::sla::SlaStep::Remind => "sla.remind",
                super::sla::SlaStep::Escalate => "sla.escalate",
                super::sla::SlaStep::Reclaim => "sla.reclaim",
            },
            TimerKind::FollowUp => "sla.follow_up",
            TimerKind::TaskReminder => "task.reminder",
            TimerKind::Sequence => "sequence.step",
            TimerKind::RuleLater => "rule.later",
        }
    }
}

/// A durable timer: a row keyed by its due time, fired once by the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub id: Uuid,
    pub due: Millis,
    pub kind: TimerKind,
    /// The lead or task it is about.
    pub subject: Uuid,
    pub created_at: Millis,
}

/// How long before a task's due time its reminder fires.
pub const TASK_REMINDER_MS: i64 = 3_600_000;

/// Notification kinds this release leaves.
pub const NOTIFICATION_KINDS: &[&str] = &[
    "lead.assigned",
    "lead.claimed",
    "lead.released",
    "lead.reclaimed",
    "sla.reminder",
    "sla.escalated",
    "task.due",
];

/// A message for one person, kept until delivery channels pick it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: Uuid,
    pub at: Millis,
    pub kind: String,
    pub recipient_id: Uuid,
    pub lead_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    /// JSON details (ids and reasons, never personal data, so erasure of a lead need not
    /// rewrite them).
    pub data: String,
    pub read_at: Option<Millis>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_input_is_checked_field_by_field() {
        let bad = TaskInput {
            title: "  ".into(),
            lead_id: None,
            owner_id: None,
            due_at: Some("tomorrow".into()),
            done: false,
        };
        let errors = bad.validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["title", "due_at"]);
        let good = TaskInput {
            title: " Call back ".into(),
            due_at: Some("2026-11-23T10:00:00Z".into()),
            ..bad
        };
        let t = good.validate().unwrap();
        assert_eq!(t.title, "Call back");
        assert!(t.due_at.is_some());
    }

    #[test]
    fn pool_names_are_required_and_claims_default() {
        let p = PoolInput {
            name: " East ".into(),
            max_claims_per_rep: None,
        };
        assert_eq!(p.validate().unwrap(), ("East".into(), DEFAULT_MAX_CLAIMS));
        assert!(
            PoolInput {
                name: "".into(),
                max_claims_per_rep: Some(1)
            }
            .validate()
            .is_err()
        );
    }
}
