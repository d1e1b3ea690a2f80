//! Service levels: the policy the `sla` hook sets for a lead (first touch, its reminder,
//! escalation and reclaim steps, the follow-up interval) and the per-lead state the server
//! keeps while the clock runs. Pure.

use super::hours::{BusinessHours, deadline};
use super::time::Millis;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;

/// How long an owner has, in working time from assignment. The defaults are DESIGN.md's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlaPolicy {
    /// First touch is due this many minutes after assignment.
    pub first_touch_minutes: i64,
    /// Remind the owner at this point if untouched (0: never).
    pub remind_minutes: i64,
    /// Escalate to the owner's manager at this point if untouched (0: never).
    pub escalate_minutes: i64,
    /// Take the lead back and route it again at this point if untouched (0: never).
    pub reclaim_minutes: i64,
    /// After a touch, the next one is due within this many minutes, or the lead goes back to
    /// the pool (0: no follow-up rule).
    pub follow_up_minutes: i64,
}

impl Default for SlaPolicy {
    fn default() -> Self {
        SlaPolicy {
            first_touch_minutes: 120,
            remind_minutes: 120,
            escalate_minutes: 240,
            reclaim_minutes: 480,
            follow_up_minutes: 3 * 24 * 60,
        }
    }
}

/// The largest value a policy may name: a year.
const MAX_MINUTES: i64 = 366 * 24 * 60;

impl SlaPolicy {
    /// Checks the ranges a script might get wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("first_touch_minutes", self.first_touch_minutes),
            ("remind_minutes", self.remind_minutes),
            ("escalate_minutes", self.escalate_minutes),
            ("reclaim_minutes", self.reclaim_minutes),
            ("follow_up_minutes", self.follow_up_minutes),
        ] {
            if !(0..=MAX_MINUTES).contains(&v) {
                return Err(format!("{name} must be 0 to {MAX_MINUTES}, not {v}"));
            }
        }
        if self.first_touch_minutes == 0 {
            return Err("first_touch_minutes must be at least 1".into());
        }
        Ok(())
    }

    /// The untouched-lead steps and when each falls due, in order of time.
    pub fn steps(&self, from: Millis, hours: Option<&BusinessHours>) -> Vec<(SlaStep, Millis)> {
        let mut steps: Vec<(SlaStep, Millis)> = [
            (SlaStep::Remind, self.remind_minutes),
            (SlaStep::Escalate, self.escalate_minutes),
            (SlaStep::Reclaim, self.reclaim_minutes),
        ]
        .into_iter()
        .filter(|(_, m)| *m > 0)
        .map(|(s, m)| (s, deadline(hours, from, m * MINUTE_MS)))
        .collect();
        steps.sort_by_key(|(s, at)| (*at, *s));
        steps
    }

    pub fn first_touch_due(&self, from: Millis, hours: Option<&BusinessHours>) -> Millis {
        deadline(hours, from, self.first_touch_minutes * MINUTE_MS)
    }

    pub fn follow_up_due(&self, from: Millis, hours: Option<&BusinessHours>) -> Option<Millis> {
        (self.follow_up_minutes > 0)
            .then(|| deadline(hours, from, self.follow_up_minutes * MINUTE_MS))
    }
}

/// A step taken when a lead's first touch is late.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SlaStep {
    Remind,
    Escalate,
    Reclaim,
}

impl SlaStep {
    pub fn as_str(self) -> &'static str {
        match self {
            SlaStep::Remind => "remind",
            SlaStep::Escalate => "escalate",
            SlaStep::Reclaim => "reclaim",
        }
    }
}

/// The SLA clock of one lead under its current owner (kept in `lead_sla`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaState {
    pub owner_id: Uuid,
    pub policy: SlaPolicy,
    /// When this owner got the lead; the clock runs from here.
    pub assigned_at: Millis,
    /// The first-touch deadline of this owner.
    pub first_touch_due: Millis,
    /// The first touch by this owner, if made.
    pub first_touch_at: Option<Millis>,
    /// The last touch by this owner.
    pub last_touch_at: Option<Millis>,
    /// Steps already taken for a late first touch.
    pub steps_taken: Vec<SlaStep>,
    /// The next follow-up deadline, once touched.
    pub follow_up_due: Option<Millis>,
    /// The lead's first first-touch deadline ever and who met it first: what the
    /// speed-to-lead report measures (a reassignment does not reset them).
    pub original_due: Millis,
    pub first_touch_by: Option<Uuid>,
}

impl SlaState {
    /// Whether the first touch came in time (None while untouched and not yet late).
    pub fn met(&self, now: Millis) -> Option<bool> {
        match self.first_touch_at {
            Some(t) => Some(t <= self.first_touch_due),
            None if now > self.first_touch_due => Some(false),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_steps_fall_at_two_four_and_eight_hours() {
        let steps = SlaPolicy::default().steps(0, None);
        assert_eq!(
            steps,
            vec![
                (SlaStep::Remind, 2 * HOUR_MS),
                (SlaStep::Escalate, 4 * HOUR_MS),
                (SlaStep::Reclaim, 8 * HOUR_MS)
            ]
        );
        assert_eq!(SlaPolicy::default().first_touch_due(0, None), 2 * HOUR_MS);
        assert_eq!(
            SlaPolicy::default().follow_up_due(0, None),
            Some(72 * HOUR_MS)
        );
    }

    #[test]
    fn zero_turns_a_step_off_and_bad_values_are_refused() {
        let p = SlaPolicy {
            escalate_minutes: 0,
            follow_up_minutes: 0,
            ..SlaPolicy::default()
        };
        assert_eq!(p.steps(0, None).len(), 2);
        assert_eq!(p.follow_up_due(0, None), None);
        assert!(p.validate().is_ok());
        let bad = SlaPolicy {
            remind_minutes: -1,
            ..SlaPolicy::default()
        };
        assert!(bad.validate().unwrap_err().contains("remind_minutes"));
        let none = SlaPolicy {
            first_touch_minutes: 0,
            ..SlaPolicy::default()
        };
        assert!(none.validate().is_err());
    }

    #[test]
    fn business_hours_stretch_the_clock() {
        let h = BusinessHours::parse(
            &["mon", "tue", "wed", "thu", "fri"].map(String::from),
            "09:00",
            "18:00",
            "Asia/Shanghai",
            &[],
        )
        .unwrap();
        // Friday 2026-11-27 17:30 Shanghai = 09:30Z.
        let fri = crate::domain::time::parse_rfc3339("2026-11-27T09:30:00Z").unwrap();
        let due = SlaPolicy::default().first_touch_due(fri, Some(&h));
        assert_eq!(
            crate::domain::time::to_rfc3339(due),
            "2026-11-30T02:30:00.000Z"
        );
    }
}
