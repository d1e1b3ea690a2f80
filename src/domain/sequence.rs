//! Nurture sequences: their definitions (`plugins/sequences/*.toml`), checked into ordered
//! steps with exit conditions, and the enrollment of one lead in one sequence. Pure.

use super::time::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The most steps one sequence may have, and how many steps without a wait one run may take
/// (a `goto` loop with no wait in it stops there instead of spinning).
pub const MAX_STEPS: usize = 200;
pub const MAX_STEPS_PER_RUN: usize = 50;

/// A checked sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// The file's stem: what `enroll("…")` names.
    pub name: String,
    pub description: String,
    pub steps: Vec<Step>,
    pub exit_on: Vec<ExitCondition>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Waits a fixed time before the next step.
    Wait(i64),
    /// Waits until the owner's team's next business hour (now, if it is one).
    WaitBusinessHour,
    /// Sends the marketing email made from a template in `plugins/templates/`.
    Email(String),
    /// Emits an event to the webhooks subscribed to it.
    Webhook(String),
    /// Gives the owner (or, without one, nobody: the step is skipped) a task.
    Task { title: String, due_in: Option<i64> },
    /// Sets lead fields: `status`, `stage`, `tags` (+tag to add) or a custom `fields.x`.
    Set(BTreeMap<String, serde_json::Value>),
    /// Evaluates a Rhai condition on the lead and its activity; true jumps to `goto`.
    Branch { condition: String, goto: usize },
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Wait(_) | Step::WaitBusinessHour => "wait",
            Step::Email(_) => "email",
            Step::Webhook(_) => "webhook",
            Step::Task { .. } => "task",
            Step::Set(_) => "set",
            Step::Branch { .. } => "branch",
        }
    }
}

/// Why an enrollment ends before its last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitCondition {
    /// The lead reached SQL (or a later stage).
    Sql,
    /// The lead may no longer be contacted (`do_not_contact`).
    Unsubscribed,
    /// The lead replied to an email (an `email_reply` activity).
    Replied,
    /// The lead became an opportunity or customer.
    Converted,
    /// The owner touched the lead (call, email, meeting, touch) after it was enrolled.
    OwnerTookOver,
}

impl ExitCondition {
    pub const ALL: [ExitCondition; 5] = [
        ExitCondition::Sql,
        ExitCondition::Unsubscribed,
        ExitCondition::Replied,
        ExitCondition::Converted,
        ExitCondition::OwnerTookOver,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExitCondition::Sql => "sql",
            ExitCondition::Unsubscribed => "unsubscribed",
            ExitCondition::Replied => "replied",
            ExitCondition::Converted => "converted",
            ExitCondition::OwnerTookOver => "owner_took_over",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SequenceFile {
    #[serde(default)]
    description: String,
    /// Default: every condition.
    exit_on: Option<Vec<String>>,
    #[serde(default)]
    step: Vec<StepFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    /// A name other steps' `goto` may use.
    label: Option<String>,
    wait: Option<String>,
    email: Option<String>,
    webhook: Option<String>,
    task: Option<String>,
    due_in: Option<String>,
    set: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "if")]
    condition: Option<String>,
    goto: Option<GotoFile>,
}

/// `goto = "label"`, `goto = "end"`, or a step number, quoted or not.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GotoFile {
    Number(i64),
    Name(String),
}

/// Reads "90s", "30m", "24h", "7d", "2w" (or a sum like "1d12h").
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("is empty".into());
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1_000,
            'm' => MINUTE_MS,
            'h' => HOUR_MS,
            'd' => DAY_MS,
            'w' => 7 * DAY_MS,
            _ => return Err(format!("`{s}`: use a number and s, m, h, d or w, like 7d")),
        };
        if number.is_empty() {
            return Err(format!("`{s}`: a number must come before `{c}`"));
        }
        let n: i64 = number
            .parse()
            .map_err(|_| format!("`{s}` is longer than a year"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{s}` is longer than a year"))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!(
            "`{s}`: give a unit (s, m, h, d or w) after {number}"
        ));
    }
    if total > 366 * DAY_MS {
        return Err(format!("`{s}` is longer than a year"));
    }
    Ok(total)
}

/// A template or event name: letters, digits, `_`, `-`, `.`.
fn check_name(what: &str, s: &str) -> Result<String, String> {
    let t = s.trim();
    let ok = !t.is_empty()
        && t.len() <= 100
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(t.to_owned())
    } else {
        Err(format!(
            "{what} `{s}` must be 1 to 100 of a-z, 0-9, `_`, `-` and `.`"
        ))
    }
}

/// Fields a `set` step may change.
pub fn settable(field: &str) -> bool {
    matches!(field, "status" | "stage" | "tags")
        || field
            .strip_prefix("fields.")
            .is_some_and(|f| !f.is_empty() && f.len() <= 100)
}

/// Whether `field` (one [`settable`] names) takes `value` in a `set`: a known status or
/// stage, a tag of 1 to 100 characters, anything for `fields.<name>`.
pub fn set_value_fits(field: &str, value: &serde_json::Value) -> bool {
    let text = value.as_str();
    match field {
        "status" => text.and_then(super::lead::Status::parse).is_some(),
        "stage" => text.and_then(super::lead::Stage::parse).is_some(),
        "tags" => text.is_some_and(|t| !t.trim().is_empty() && t.trim().chars().count() <= 100),
        f => settable(f),
    }
}

impl Sequence {
    /// Parses and checks one file. Errors name the step (1-based) and what is wrong.
    pub fn parse(name: &str, toml_text: &str) -> Result<Sequence, String> {
        let file: SequenceFile = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        if file.step.is_empty() {
            return Err("has no [[step]]".into());
        }
        if file.step.len() > MAX_STEPS {
            return Err(format!("has more than {MAX_STEPS} steps"));
        }
        let mut labels = BTreeMap::new();
        for (i, s) in file.step.iter().enumerate() {
            if let Some(l) = &s.label
                && labels.insert(l.trim().to_owned(), i).is_some()
            {
                return Err(format!("step {}: label `{l}` is used twice", i + 1));
            }
        }
        let mut steps = Vec::with_capacity(file.step.len());
        for (i, s) in file.step.into_iter().enumerate() {
            let at = |m: String| format!("step {}: {m}", i + 1);
            steps.push(step(s, &labels).map_err(at)?);
        }
        let exit_on = match file.exit_on {
            None => ExitCondition::ALL.to_vec(),
            Some(list) => list
                .iter()
                .map(|c| {
                    ExitCondition::parse(c.trim()).ok_or_else(|| {
                        format!(
                            "exit_on: `{c}` is not one of sql, unsubscribed, replied, converted, owner_took_over"
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Sequence {
            name: name.to_owned(),
            description: file.description,
            steps,
            exit_on,
        })
    }

    /// Templates its email steps use.
    pub fn templates(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().filter_map(|s| match s {
            Step::Email(t) => Some(t.as_str()),
            _ => None,
        })
    }
}

fn step(s: StepFile, labels: &BTreeMap<String, usize>) -> Result<Step, String> {
    let actions = [
        s.wait.is_some(),
        s.email.is_some(),
        s.webhook.is_some(),
        s.task.is_some(),
        s.set.is_some(),
        s.condition.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if actions != 1 {
        return Err("give exactly one of wait, email, webhook, task, set or if (with goto)".into());
    }
    if s.due_in.is_some() && s.task.is_none() {
        return Err("due_in belongs to a task step".into());
    }
    if s.goto.is_some() && s.condition.is_none() {
        return Err("goto belongs to an if step".into());
    }
    if let Some(w) = s.wait {
        return match w.trim() {
            "next_business_hour" => Ok(Step::WaitBusinessHour),
            d => match parse_duration(d).map_err(|e| format!("wait: {e}"))? {
                // A shorter wait in a loop would run the sequence almost without pause, each
                // pass written to the timeline, and the no-wait guard would never see it.
                ms if ms < MINUTE_MS => Err(format!("wait: `{d}` is shorter than a minute")),
                ms => Ok(Step::Wait(ms)),
            },
        };
    }
    if let Some(t) = s.email {
        return Ok(Step::Email(check_name("template", &t)?));
    }
    if let Some(e) = s.webhook {
        return Ok(Step::Webhook(check_name("event", &e)?));
    }
    if let Some(title) = s.task {
        let title = title.trim().to_owned();
        if title.is_empty() || title.chars().count() > 500 {
            return Err("task: the title must be 1 to 500 characters".into());
        }
        let due_in = s
            .due_in
            .map(|d| parse_duration(&d).map_err(|e| format!("due_in: {e}")))
            .transpose()?;
        return Ok(Step::Task { title, due_in });
    }
    if let Some(set) = s.set {
        if set.is_empty() {
            return Err("set: name at least one field".into());
        }
        if let Some(f) = set.keys().find(|f| !settable(f)) {
            return Err(format!(
                "set: `{f}` cannot be set (use status, stage, tags or fields.<name>)"
            ));
        }
        return Ok(Step::Set(set));
    }
    let condition = s.condition.unwrap_or_default();
    if condition.trim().is_empty() {
        return Err("if: the condition is empty".into());
    }
    let target = match s.goto.ok_or("if: say where to go with goto")? {
        GotoFile::Number(n) => n.to_string(),
        GotoFile::Name(name) => name.trim().to_owned(),
    };
    let goto = goto_index(&target, labels)?;
    Ok(Step::Branch { condition, goto })
}

/// A label, a 1-based step number, or `end`.
fn goto_index(target: &str, labels: &BTreeMap<String, usize>) -> Result<usize, String> {
    if target == "end" {
        return Ok(usize::MAX);
    }
    if let Some(i) = labels.get(target) {
        return Ok(*i);
    }
    match target.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n - 1),
        _ => Err(format!(
            "goto `{target}` is not a label, a step number or `end`"
        )),
    }
}

/// How an enrollment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentStatus {
    Active,
    Paused,
    Completed,
    Exited,
}

impl EnrollmentStatus {
    pub fn is_open(self) -> bool {
        matches!(self, EnrollmentStatus::Active | EnrollmentStatus::Paused)
    }
}

/// One lead in one sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub sequence: String,
    pub status: EnrollmentStatus,
    /// The next step to run (0-based).
    pub step: u32,
    pub enrolled_at: Millis,
    pub updated_at: Millis,
    pub version: u64,
    /// When the next step runs, while active.
    pub next_at: Option<Millis>,
    /// Why it ended early (an exit condition, `unenrolled`, or an error).
    pub reason: Option<String>,
    /// Who enrolled it (None: a rule).
    pub enrolled_by: Option<Uuid>,
    /// Steps run so far.
    pub steps_run: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_takes_known_statuses_stages_short_tags_and_any_custom_value() {
        use serde_json::json;
        for (field, value) in [
            ("status", json!("nurturing")),
            ("stage", json!("mql")),
            ("tags", json!(" vip ")),
            ("fields.budget", json!({"amount": 5})),
        ] {
            assert!(set_value_fits(field, &value), "{field} = {value}");
        }
        for (field, value) in [
            ("status", json!("won")),
            ("stage", json!(3)),
            ("tags", json!("  ")),
            ("tags", json!("x".repeat(101))),
            ("owner_id", json!("x")),
        ] {
            assert!(!set_value_fits(field, &value), "{field} = {value}");
        }
    }

    const WELCOME: &str = r#"
description = "one email a week for 4 weeks"
[[step]]
email = "welcome_1"
[[step]]
wait = "7d"
[[step]]
label = "check"
if = 'lead.score >= 40'
goto = "end"
[[step]]
task = "Call them"
due_in = "1d"
[[step]]
set = { status = "nurturing", "fields.segment" = "warm" }
[[step]]
wait = "next_business_hour"
[[step]]
webhook = "nurture.done"
[[step]]
if = "true"
goto = "check"
"#;

    #[test]
    fn a_sequence_file_becomes_checked_steps() {
        let s = Sequence::parse("welcome", WELCOME).unwrap();
        assert_eq!(s.exit_on, ExitCondition::ALL.to_vec());
        assert_eq!(s.steps[0], Step::Email("welcome_1".into()));
        assert_eq!(s.steps[1], Step::Wait(7 * DAY_MS));
        assert_eq!(
            s.steps[2],
            Step::Branch {
                condition: "lead.score >= 40".into(),
                goto: usize::MAX
            }
        );
        assert_eq!(
            s.steps[3],
            Step::Task {
                title: "Call them".into(),
                due_in: Some(DAY_MS)
            }
        );
        assert_eq!(s.steps[5], Step::WaitBusinessHour);
        assert_eq!(s.steps[6], Step::Webhook("nurture.done".into()));
        assert_eq!(
            s.steps[7],
            Step::Branch {
                condition: "true".into(),
                goto: 2
            }
        );
        assert_eq!(s.templates().collect::<Vec<_>>(), ["welcome_1"]);
    }

    #[test]
    fn goto_takes_a_step_number_quoted_or_not() {
        for goto in ["1", "\"1\""] {
            let text = format!("[[step]]\nemail = \"a\"\n[[step]]\nif = \"true\"\ngoto = {goto}");
            let s = Sequence::parse("x", &text).unwrap();
            let goto_first = Step::Branch {
                condition: "true".into(),
                goto: 0,
            };
            assert_eq!(s.steps[1], goto_first, "{goto}");
        }
    }

    #[test]
    fn mistakes_name_the_step() {
        let cases = [
            ("[[step]]\nwait = \"7 days\"", "step 1: wait"),
            ("[[step]]\nemail = \"a\"\nwait = \"1d\"", "exactly one"),
            ("[[step]]\nif = \"true\"\ngoto = \"nowhere\"", "nowhere"),
            ("[[step]]\nset = { owner_id = \"x\" }", "owner_id"),
            ("[[step]]\nemail = \"../etc\"", "template"),
            ("exit_on = [\"bored\"]\n[[step]]\nemail = \"a\"", "bored"),
            ("", "no [[step]]"),
            ("[[step]]\nmail = \"a\"", "unknown field"),
            (
                "[[step]]\nwait = \"0s\"",
                "step 1: wait: `0s` is shorter than a minute",
            ),
            ("[[step]]\nwait = \"59s\"", "shorter than a minute"),
            ("[[step]]\nif = \"true\"\ngoto = 0", "goto `0`"),
        ];
        for (text, want) in cases {
            let err = Sequence::parse("x", text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("1d12h"), Ok(DAY_MS + 12 * HOUR_MS));
        assert_eq!(parse_duration("2w"), Ok(14 * DAY_MS));
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("400d").is_err());
        let huge = parse_duration("99999999999999999999d").unwrap_err();
        assert!(huge.contains("longer than a year"), "{huge}");
    }
}
