//! Nurture in the writer: enrolling leads (by `on_event` and by hand), running a sequence's
//! steps on the durable scheduler — each run recorded in the transaction that adds the next
//! step's timer, so no step is skipped or run twice — exit conditions, and queueing the
//! marketing email a step sends.

use super::work::write_lead;
use super::{ServiceError, ServiceResult};
use crate::domain::activity::{Activity, LeadEvent};
use crate::domain::lead::{Lead, Stage, Status};
use crate::domain::mail::{MailStatus, OutMail, track_links};
use crate::domain::sequence::{
    DAY_MS, Enrollment, EnrollmentStatus, ExitCondition, MAX_STEPS_PER_RUN, Step,
};
use crate::domain::time::Millis;
use crate::domain::work::{Task, Timer, TimerKind};
use crate::script::nurture::{Action, LeadEventIn, SequenceRt, render};
use crate::script::{Hook, Loaded, Plugins};
use crate::store::{Entity, Op, StoreError, Tx};
use base64::Engine as _;
use serde_json::{Value, json};
use uuid::Uuid;

type R<T> = Result<T, StoreError>;

/// Asks `on_event` what `event` means for `lead` and does it. A `set` changes `lead` in
/// place (and rescores it); the caller writes it, as it writes its own changes.
pub(crate) fn on_event(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
    mut event: LeadEventIn,
) -> R<()> {
    let loaded = plugins.current();
    let enrollments = tx.enrollments_of(lead.id)?;
    event.sequences = enrollments.iter().map(|e| e.sequence.clone()).collect();
    let actions = plugins.on_event(&loaded, &event, lead, tx.now);
    carry_out(tx, plugins, &loaded, lead, &event, &enrollments, actions)
}

/// Carries out `on_event`'s answer to `event`, in order.
fn carry_out(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    loaded: &Loaded,
    lead: &mut Lead,
    event: &LeadEventIn,
    enrollments: &[Enrollment],
    actions: Vec<Action>,
) -> R<()> {
    for action in actions {
        match action {
            Action::Enroll(name) => {
                // A rule that enrolls a lead again each time the sequence completes loops
                // without end when the sequence has no wait.
                let since = tx.now.saturating_sub(DAY_MS);
                let recent = enrollments
                    .iter()
                    .filter(|e| e.sequence == name && e.enrolled_at > since)
                    .count();
                if recent >= MAX_RULE_ENROLLMENTS_PER_DAY {
                    plugins.refuse_answer(
                        loaded,
                        Hook::OnEvent,
                        format!(
                            "enroll(\"{name}\") on {}: the lead entered `{name}` {recent} times in the last day, so it is not enrolled again (a loop?)",
                            event.kind
                        ),
                        tx.now,
                    );
                    continue;
                }
                if let Err(e) = enroll(tx, plugins, lead, &name, None)? {
                    tracing::debug!(lead = %lead.id, sequence = %name, reason = %e, "on_event enrollment not made");
                }
            }
            Action::Unenroll(name) => {
                if let Some(id) = tx.open_enrollment(lead.id, &name)?
                    && let Some(e) = tx.enrollment(id)?
                {
                    finish(tx, e, EnrollmentStatus::Exited, Some("unenrolled"))?;
                }
            }
            Action::Task { title, due_in } => {
                if owner_task(tx, lead, &title, due_in)?.is_none() {
                    tracing::debug!(lead = %lead.id, %title, "on_event task not made: the lead has no owner");
                }
            }
            Action::Notify(message) => match lead.owner_id {
                Some(owner) => super::work::notify(
                    tx,
                    "rule",
                    owner,
                    Some(lead.id),
                    None,
                    json!({"message": message, "event": event.kind}),
                )?,
                None => {
                    tracing::debug!(lead = %lead.id, "on_event notification not left: the lead has no owner")
                }
            },
            Action::Set { field, value } => {
                let depth = RuleSetDepth::enter();
                if depth.too_deep() {
                    plugins.refuse_answer(
                        loaded,
                        Hook::OnEvent,
                        format!(
                            "set(\"{field}\", {value}) on {}: rules have set fields {MAX_RULE_SET_DEPTH} times over in this write, each setting off the next, so it is not done (a loop?)",
                            event.kind
                        ),
                        tx.now,
                    );
                    continue;
                }
                let before = lead.clone();
                set_field(lead, &field, &value);
                if *lead != before {
                    tx.event(
                        lead.id,
                        "rule_set",
                        None,
                        json!({"field": field, "value": value, "event": event.kind}),
                    )?;
                    // What a rule set is scored like any change (and may set off `lead.scored`).
                    super::scoring::settle_change(tx, plugins, lead)?;
                }
            }
            Action::Later { after, action } => {
                let due = tx.now.saturating_add(after);
                // The timeline event keeps the action, under the timer's id, until it is due.
                let timer = tx.add_timer(TimerKind::RuleLater, due, lead.id)?;
                tx.put_event(&LeadEvent {
                    id: timer.id,
                    lead_id: lead.id,
                    at: tx.now,
                    kind: "rule_later".into(),
                    actor_id: None,
                    data: json!({
                        "action": action.to_json(),
                        "due_at": crate::domain::time::to_rfc3339(due),
                        "event": event.kind,
                    })
                    .to_string(),
                })?;
            }
        }
    }
    Ok(())
}

/// Carries out an action a rule put off with `later`, on the lead as it is now. The lead's
/// `rule_later` event, under the timer's id, holds the action.
pub(crate) fn rule_later_due(tx: &mut Tx<'_>, plugins: &Plugins, timer: &Timer) -> R<()> {
    let Some(mut lead) = tx.lead(timer.subject)? else {
        return Ok(());
    };
    let kept = tx
        .lead_event(lead.id, timer.id)?
        .and_then(|e| serde_json::from_str::<Value>(&e.data).ok());
    let Some(kept) = kept else {
        tracing::warn!(lead = %lead.id, timer = %timer.id, "a rule's later action has no rule_later event to read it from; skipped");
        return Ok(());
    };
    let action = match Action::from_json(&kept["action"]) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(lead = %lead.id, action = %kept["action"], error = %e, "a rule's later action no longer reads as an action; skipped");
            return Ok(());
        }
    };
    let loaded = plugins.current();
    let enrollments = tx.enrollments_of(lead.id)?;
    let event = LeadEventIn {
        kind: kept["event"].as_str().unwrap_or("rule.later").to_owned(),
        sequences: enrollments.iter().map(|e| e.sequence.clone()).collect(),
        ..Default::default()
    };
    let before = lead.clone();
    carry_out(
        tx,
        plugins,
        &loaded,
        &mut lead,
        &event,
        &enrollments,
        vec![action],
    )?;
    write_lead(tx, &before, &mut lead)?;
    Ok(())
}

/// How many `set` actions deep rules may set each other off in one write: a rule that sets a
/// field on `lead.scored`, which rescores the lead, which runs the rule again...
const MAX_RULE_SET_DEPTH: u32 = 4;

thread_local! {
    static RULE_SET_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// One level of `set` actions running inside another's rescore; leaving drops the level
/// (also when the write fails part way).
struct RuleSetDepth;

impl RuleSetDepth {
    fn enter() -> Self {
        RULE_SET_DEPTH.with(|d| d.set(d.get() + 1));
        RuleSetDepth
    }

    fn too_deep(&self) -> bool {
        RULE_SET_DEPTH.with(|d| d.get() > MAX_RULE_SET_DEPTH)
    }
}

impl Drop for RuleSetDepth {
    fn drop(&mut self) {
        RULE_SET_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Gives `lead`'s owner a task about it, due `due_in` ms from now if given (a rule's or a
/// sequence step's). Returns its id; `None` when the lead has no owner to give it to.
fn owner_task(tx: &mut Tx<'_>, lead: &Lead, title: &str, due_in: Option<i64>) -> R<Option<Uuid>> {
    let Some(owner) = lead.owner_id else {
        return Ok(None);
    };
    let task = Task {
        id: tx.new_id(),
        created_at: tx.now,
        updated_at: tx.now,
        version: 1,
        lead_id: Some(lead.id),
        owner_id: owner,
        title: title.to_owned(),
        due_at: due_in.map(|d| tx.now.saturating_add(d)),
        done: false,
        done_at: None,
        created_by: None,
    };
    super::tasks::add_task(tx, &task)?;
    Ok(Some(task.id))
}

/// How many times a day rules may put one lead into one sequence.
const MAX_RULE_ENROLLMENTS_PER_DAY: usize = 5;

/// `on_event` for a new activity on `lead`.
pub(crate) fn on_activity(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
    activity: &Activity,
) -> R<()> {
    let path = serde_json::from_str::<Value>(&activity.properties)
        .ok()
        .and_then(|p| p.get("path").and_then(Value::as_str).map(str::to_owned));
    on_event(
        tx,
        plugins,
        lead,
        LeadEventIn {
            kind: "activity.created".into(),
            activity: Some(activity.kind.clone()),
            path,
            ..Default::default()
        },
    )
}

/// Enrolls `lead` in `sequence`; its first step runs on the scheduler right after this commits.
/// An open enrollment in the same sequence is a conflict; so is a lead that may not be
/// contacted.
pub(crate) fn enroll(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &Lead,
    sequence: &str,
    by: Option<Uuid>,
) -> R<ServiceResult<Enrollment>> {
    if plugins.current().sequence(sequence).is_none() {
        return Ok(Err(ServiceError::invalid(
            "sequence",
            format!("no sequence named `{sequence}` in plugins/sequences"),
        )));
    }
    if tx.open_enrollment(lead.id, sequence)?.is_some() {
        return Ok(Err(ServiceError::Conflict(format!(
            "the lead is already in sequence `{sequence}`"
        ))));
    }
    if lead.flags.do_not_contact {
        return Ok(Err(ServiceError::Conflict(
            "the lead may not be contacted (do_not_contact)".into(),
        )));
    }
    let e = Enrollment {
        id: tx.new_id(),
        lead_id: lead.id,
        sequence: sequence.to_owned(),
        status: EnrollmentStatus::Active,
        step: 0,
        enrolled_at: tx.now,
        updated_at: tx.now,
        version: 1,
        next_at: Some(tx.now),
        reason: None,
        enrolled_by: by,
        steps_run: 0,
    };
    tx.add_timer(TimerKind::Sequence, tx.now, e.id)?;
    tx.put_enrollment(&e)?;
    tx.change(Entity::Enrollment, e.id, Op::Create, Some(lead))?;
    tx.event(
        lead.id,
        "enrolled",
        by,
        json!({"sequence": sequence, "enrollment_id": e.id}),
    )?;
    Ok(Ok(e))
}

/// Ends an enrollment (completed, or exited with a reason) and cancels its timer.
pub(crate) fn finish(
    tx: &mut Tx<'_>,
    mut e: Enrollment,
    status: EnrollmentStatus,
    reason: Option<&str>,
) -> R<Enrollment> {
    tx.cancel_timers(e.id, |k| k == TimerKind::Sequence)?;
    if status == EnrollmentStatus::Exited {
        // Mail this sequence queued but did not send yet goes no further (an SQL lead gets
        // no stale welcome once SMTP comes up).
        let lead = tx.lead(e.lead_id)?;
        for m in tx.unsent_mail_of(e.lead_id)? {
            if m.enrollment_id == Some(e.id) {
                let mut s = m.clone();
                s.status = MailStatus::Suppressed;
                s.last_error = Some(format!(
                    "the sequence ended: {}",
                    reason.unwrap_or("exited")
                ));
                tx.put_mail(Some(&m), &s)?;
                tx.change(Entity::Mail, s.id, Op::Update, lead.as_ref())?;
            }
        }
    }
    e.status = status;
    e.reason = reason.map(str::to_owned);
    e.next_at = None;
    e.updated_at = tx.now;
    e.version += 1;
    tx.put_enrollment(&e)?;
    let lead = tx.lead(e.lead_id)?;
    tx.change(Entity::Enrollment, e.id, Op::Update, lead.as_ref())?;
    let kind = if status == EnrollmentStatus::Completed {
        "sequence_completed"
    } else {
        "sequence_exited"
    };
    tx.event(
        e.lead_id,
        kind,
        None,
        json!({"sequence": e.sequence, "enrollment_id": e.id, "reason": reason}),
    )?;
    Ok(e)
}

/// Pauses or resumes an enrollment. A paused enrollment keeps when its next step was due;
/// resuming runs it then, or now if that has passed.
pub(crate) fn set_paused(tx: &mut Tx<'_>, mut e: Enrollment, paused: bool) -> R<Enrollment> {
    tx.cancel_timers(e.id, |k| k == TimerKind::Sequence)?;
    if paused {
        e.status = EnrollmentStatus::Paused;
    } else {
        e.status = EnrollmentStatus::Active;
        let due = e.next_at.unwrap_or(tx.now).max(tx.now);
        e.next_at = Some(due);
        tx.add_timer(TimerKind::Sequence, due, e.id)?;
    }
    e.updated_at = tx.now;
    e.version += 1;
    tx.put_enrollment(&e)?;
    let lead = tx.lead(e.lead_id)?;
    tx.change(Entity::Enrollment, e.id, Op::Update, lead.as_ref())?;
    tx.event(
        e.lead_id,
        if paused {
            "sequence_paused"
        } else {
            "sequence_resumed"
        },
        None,
        json!({"sequence": e.sequence, "enrollment_id": e.id}),
    )?;
    Ok(e)
}

/// Ends every open enrollment of `lead` whose sequence exits on `why`.
pub(crate) fn exit_on(tx: &mut Tx<'_>, plugins: &Plugins, lead: Uuid, why: ExitCondition) -> R<()> {
    let loaded = plugins.current();
    for e in tx.enrollments_of(lead)? {
        if !e.status.is_open() {
            continue;
        }
        let applies = loaded
            .sequence(&e.sequence)
            .is_none_or(|s| s.def.exit_on.contains(&why));
        if applies {
            finish(tx, e, EnrollmentStatus::Exited, Some(why.as_str()))?;
        }
    }
    Ok(())
}

/// The first exit condition of `seq` that holds for `lead` now.
fn exit_reason(
    tx: &Tx<'_>,
    seq: &SequenceRt,
    lead: &Lead,
    e: &Enrollment,
) -> R<Option<ExitCondition>> {
    for c in &seq.def.exit_on {
        let holds = match c {
            ExitCondition::Unsubscribed => lead.flags.do_not_contact,
            ExitCondition::Converted => {
                matches!(lead.stage, Stage::Opportunity | Stage::Customer)
                    || lead.status == Status::Converted
            }
            ExitCondition::Sql => matches!(
                lead.stage,
                Stage::Sql | Stage::Opportunity | Stage::Customer
            ),
            ExitCondition::Replied => tx
                .lead_stats(lead.id)?
                .last("email_reply")
                .is_some_and(|at| at >= e.enrolled_at),
            ExitCondition::OwnerTookOver => tx.sla_state(lead.id)?.is_some_and(|s| {
                Some(s.owner_id) == lead.owner_id
                    && s.last_touch_at.is_some_and(|t| t >= e.enrolled_at)
            }),
        };
        if holds {
            return Ok(Some(*c));
        }
    }
    Ok(None)
}

/// How long an enrollment in a sequence whose file has a mistake waits before it looks again.
const BROKEN_RETRY: Millis = 5 * 60 * 1000;

/// Runs an enrollment's due steps up to its next wait (the scheduler's `Sequence` timer).
pub(crate) fn run(tx: &mut Tx<'_>, plugins: &Plugins, enrollment: Uuid) -> R<()> {
    let Some(mut e) = tx.enrollment(enrollment)? else {
        return Ok(());
    };
    if e.status != EnrollmentStatus::Active {
        return Ok(());
    }
    let loaded = plugins.current();
    let Some(seq) = loaded.sequence(&e.sequence) else {
        if loaded.sequence_is_broken(&e.sequence) {
            // A typo saved before a restart must not end every enrollment in the sequence:
            // they wait, and go on once the file loads again.
            tx.add_timer(
                TimerKind::Sequence,
                tx.now.saturating_add(BROKEN_RETRY),
                e.id,
            )?;
            tracing::debug!(sequence = %e.sequence, enrollment = %e.id, "the sequence file has a mistake; the enrollment waits for it to load");
            return Ok(());
        }
        finish(
            tx,
            e,
            EnrollmentStatus::Exited,
            Some("the sequence file is gone"),
        )?;
        return Ok(());
    };
    let Some(before) = tx.lead(e.lead_id)? else {
        return Ok(());
    };
    let mut lead = before.clone();
    if let Some(why) = exit_reason(tx, &seq, &lead, &e)? {
        finish(tx, e, EnrollmentStatus::Exited, Some(why.as_str()))?;
        return Ok(());
    }
    let steps = &seq.def.steps;
    let mut ran = 0;
    let outcome: Option<(EnrollmentStatus, Option<String>)> = loop {
        let Some(step) = steps.get(e.step as usize) else {
            break Some((EnrollmentStatus::Completed, None));
        };
        if ran == MAX_STEPS_PER_RUN {
            break Some((
                EnrollmentStatus::Exited,
                Some(format!(
                    "{MAX_STEPS_PER_RUN} steps ran without a wait; check the sequence for a loop"
                )),
            ));
        }
        ran += 1;
        e.steps_run += 1;
        let number = e.step + 1;
        let mut data = json!({"sequence": e.sequence, "enrollment_id": e.id, "step": number, "kind": step.kind()});
        let mut next = e.step + 1;
        let mut wait_until = None;
        match step {
            Step::Wait(ms) => wait_until = Some(tx.now.saturating_add(*ms)),
            Step::WaitBusinessHour => {
                let team = match lead.owner_id {
                    Some(o) => tx.user(o)?.and_then(|u| u.team),
                    None => None,
                };
                let at = plugins
                    .business_hours(team.as_deref())
                    .map_or(tx.now, |h| h.add_working(tx.now, 1) - 1);
                if at > tx.now {
                    wait_until = Some(at);
                }
            }
            Step::Email(template) => {
                if lead.flags.do_not_contact {
                    break Some((
                        EnrollmentStatus::Exited,
                        Some(ExitCondition::Unsubscribed.as_str().into()),
                    ));
                }
                match queue_mail(tx, plugins, &lead, template, Some(e.id), true)? {
                    Ok(mail) => data["mail_id"] = json!(mail.id),
                    Err(why) => data["skipped"] = json!(why),
                }
            }
            Step::Webhook(event) => {
                data["event"] = json!(format!("sequence.{event}"));
                let payload = json!({"sequence": e.sequence, "step": number, "enrollment_id": e.id, "event": event});
                tx.emit_sequence_event(event, e.id, &lead, payload)?;
            }
            Step::Task { title, due_in } => match owner_task(tx, &lead, title, *due_in)? {
                Some(task) => data["task_id"] = json!(task),
                None => data["skipped"] = json!("the lead has no owner"),
            },
            Step::Set(fields) => {
                let changed = set_fields(&mut lead, fields);
                data["fields"] = json!(changed);
            }
            Step::Branch { goto, .. } => {
                let stats = tx.lead_stats(lead.id)?;
                let taken = match plugins.condition(&seq, e.step as usize, &lead, &stats, tx.now) {
                    Ok(b) => b,
                    Err(m) => {
                        tracing::warn!(sequence = %e.sequence, error = %m, "a sequence condition failed; taken as false");
                        data["error"] = json!(m);
                        false
                    }
                };
                data["taken"] = json!(taken);
                if taken {
                    next = u32::try_from(*goto).unwrap_or(u32::MAX);
                }
            }
        }
        tx.event(lead.id, "sequence_step", None, data)?;
        e.step = next.min(u32::try_from(steps.len()).unwrap_or(u32::MAX));
        if let Some(at) = wait_until {
            tx.add_timer(TimerKind::Sequence, at, e.id)?;
            e.next_at = Some(at);
            break None;
        }
    };
    if lead != before {
        // A `set` step changed the lead: its score follows, as after any change.
        super::scoring::settle_change(tx, plugins, &mut lead)?;
    }
    match outcome {
        None => {
            e.updated_at = tx.now;
            e.version += 1;
            tx.put_enrollment(&e)?;
            tx.change(Entity::Enrollment, e.id, Op::Update, Some(&lead))?;
        }
        Some((status, reason)) => {
            let name = e.sequence.clone();
            finish(tx, e, status, reason.as_deref())?;
            if status == EnrollmentStatus::Completed {
                on_event(
                    tx,
                    plugins,
                    &mut lead,
                    LeadEventIn {
                        kind: "sequence.completed".into(),
                        sequence: Some(name),
                        ..Default::default()
                    },
                )?;
            }
        }
    }
    write_lead(tx, &before, &mut lead)?;
    Ok(())
}

/// Applies a `set` step; returns the fields it changed.
fn set_fields(lead: &mut Lead, fields: &std::collections::BTreeMap<String, Value>) -> Vec<String> {
    let mut changed = Vec::new();
    for (name, value) in fields {
        if set_field(lead, name, value) {
            changed.push(name.clone());
        } else {
            tracing::warn!(field = %name, value = %value, "a sequence `set` value does not fit the field; skipped");
        }
    }
    changed
}

/// Sets one field as a `set` step or action does: `status`, `stage`, `tags` (adds the tag)
/// or `fields.<name>`. Returns false when the value does not fit the field.
fn set_field(lead: &mut Lead, name: &str, value: &Value) -> bool {
    if !crate::domain::sequence::set_value_fits(name, value) {
        return false;
    }
    let done = match (name, value) {
        ("status", Value::String(s)) => Status::parse(s).map(|st| lead.status = st),
        ("stage", Value::String(s)) => Stage::parse(s).map(|st| lead.stage = st),
        ("tags", Value::String(t)) => {
            let t = t.trim().to_owned();
            if !lead.tags.contains(&t) {
                lead.tags.push(t);
            }
            Some(())
        }
        (f, v) => f.strip_prefix("fields.").map(|key| {
            let mut obj = serde_json::from_str::<serde_json::Map<String, Value>>(&lead.fields)
                .unwrap_or_default();
            obj.insert(key.to_owned(), v.clone());
            lead.fields = Value::Object(obj).to_string();
        }),
    };
    done.is_some()
}

/// A fresh secret for a message's links: the time in hex, then 24 random bytes, URL-safe.
/// The random part is the secret; the time in front makes new tokens sort after older ones,
/// so each new token lands on the token index's last page instead of a random one, which the
/// durable commit would otherwise rewrite for every message.
fn new_token(now: Millis) -> R<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Storage(format!("no randomness for a mail token: {e}")))?;
    Ok(format!(
        "{:012x}{}",
        now.clamp(0, (1 << 48) - 1),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// What a template sees of a lead and its owner.
fn template_context(tx: &Tx<'_>, lead: &Lead, links: &Value) -> R<Value> {
    let owner = match lead.owner_id {
        Some(o) => tx
            .user(o)?
            .map(|u| json!({"name": u.name, "email": u.email})),
        None => None,
    };
    let fields: Value = serde_json::from_str(&lead.fields).unwrap_or(json!({}));
    Ok(json!({
        "lead": {
            "id": lead.id, "name": lead.name, "email": lead.email, "phone": lead.phone,
            "company": lead.company, "title": lead.title, "industry": lead.industry,
            "region": lead.region, "country": lead.country, "source": lead.source,
            "channel": lead.channel, "stage": lead.stage.as_str(), "status": lead.status.as_str(),
            "score": lead.score.total, "tags": lead.tags, "fields": fields,
        },
        "owner": owner,
        "unsubscribe_url": links["unsubscribe"],
    }))
}

/// Renders `template` for `lead` and puts it in the outbox (the sender picks it up after the
/// commit). `Ok(Err(why))`: nothing to send (no email address, no such template).
pub(crate) fn queue_mail(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &Lead,
    template: &str,
    enrollment: Option<Uuid>,
    marketing: bool,
) -> R<Result<OutMail, String>> {
    let Some(to) = lead.email.clone().filter(|_| !lead.flags.invalid_email) else {
        return Ok(Err("the lead has no usable email address".into()));
    };
    let Some(source) = plugins.current().template(template) else {
        return Ok(Err(format!(
            "no template `{template}` in plugins/templates"
        )));
    };
    let token = new_token(tx.now)?;
    let base = plugins.public_url().trim_end_matches('/').to_owned();
    let links = json!({
        "unsubscribe": format!("{base}/u/{token}"),
        "open": format!("{base}/o/{token}"),
        "click": format!("{base}/c/{token}"),
    });
    let context = template_context(tx, lead, &links)?;
    let rendered = match render(&source, &context) {
        Ok(r) => r,
        Err(m) => return Ok(Err(m)),
    };
    let unsubscribe = links["unsubscribe"].as_str().unwrap_or_default();
    let mut text = rendered.text;
    if marketing && !text.contains(unsubscribe) {
        text.push_str(&format!("\n\n--\nUnsubscribe: {unsubscribe}\n"));
    }
    let (html, targets) = match rendered.html {
        Some(h) => {
            let mut h = h;
            let escaped = unsubscribe.replace('/', "&#x2f;");
            if marketing && !h.contains(unsubscribe) && !h.contains(&escaped) {
                let footer = format!(
                    "<p style=\"font-size:12px;color:#888\"><a href=\"{unsubscribe}\">Unsubscribe</a></p>"
                );
                match h.rfind("</body>") {
                    Some(i) => h.insert_str(i, &footer),
                    None => h.push_str(&footer),
                }
            }
            let (mut tracked, targets) = track_links(
                &h,
                links["click"].as_str().unwrap_or_default(),
                &format!("{base}/u/"),
            );
            let pixel = format!(
                "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\">",
                links["open"].as_str().unwrap_or_default()
            );
            match tracked.rfind("</body>") {
                Some(i) => tracked.insert_str(i, &pixel),
                None => tracked.push_str(&pixel),
            }
            (Some(tracked), targets)
        }
        None => (None, Vec::new()),
    };
    let mail = OutMail {
        id: tx.new_id(),
        lead_id: lead.id,
        enrollment_id: enrollment,
        template: template.to_owned(),
        to,
        subject: rendered.subject,
        text,
        html,
        marketing,
        token,
        links: targets,
        status: MailStatus::Unsent,
        attempts: 0,
        next_attempt_at: tx.now,
        created_at: tx.now,
        sent_at: None,
        last_error: None,
    };
    tx.put_mail(None, &mail)?;
    tx.change(Entity::Mail, mail.id, Op::Create, Some(lead))?;
    Ok(Ok(mail))
}

/// The lead asked to hear nothing more: `do_not_contact`, every open enrollment ends and
/// unsent marketing mail is suppressed.
pub(crate) fn unsubscribe(tx: &mut Tx<'_>, plugins: &Plugins, lead_id: Uuid, via: &str) -> R<bool> {
    let Some(before) = tx.lead(lead_id)? else {
        return Ok(false);
    };
    let mut lead = before.clone();
    if !lead.flags.do_not_contact {
        lead.flags.do_not_contact = true;
        tx.event(lead.id, "unsubscribed", None, json!({"via": via}))?;
    }
    exit_on(tx, plugins, lead.id, ExitCondition::Unsubscribed)?;
    suppress_unsent(tx, &lead)?;
    write_lead(tx, &before, &mut lead)?;
    Ok(true)
}

/// What a person's edit of a lead means for its nurture: a stage set to SQL or beyond, or
/// `do_not_contact` set, ends the sequences that exit on it (and stops unsent marketing mail).
pub(crate) fn after_patch(tx: &mut Tx<'_>, plugins: &Plugins, before: &Lead, lead: &Lead) -> R<()> {
    let advanced = |s: Stage| matches!(s, Stage::Sql | Stage::Opportunity | Stage::Customer);
    let newly_barred = (advanced(lead.stage) && !advanced(before.stage))
        || (lead.flags.do_not_contact && !before.flags.do_not_contact);
    if newly_barred {
        end_what_the_lead_bars(tx, plugins, lead)?;
    }
    Ok(())
}

/// Ends every open enrollment the lead's present state bars (SQL or later, converted, do not
/// contact), whenever it came to be so: after a merge, enrollments moved from the other lead
/// meet the survivor's state, which no transition announces.
pub(crate) fn end_what_the_lead_bars(tx: &mut Tx<'_>, plugins: &Plugins, lead: &Lead) -> R<()> {
    if lead.stage == Stage::Sql {
        exit_on(tx, plugins, lead.id, ExitCondition::Sql)?;
    } else if matches!(lead.stage, Stage::Opportunity | Stage::Customer)
        || lead.status == Status::Converted
    {
        exit_on(tx, plugins, lead.id, ExitCondition::Converted)?;
    }
    if lead.flags.do_not_contact {
        exit_on(tx, plugins, lead.id, ExitCondition::Unsubscribed)?;
        suppress_unsent(tx, lead)?;
    }
    Ok(())
}

/// Marks a lead's unsent marketing mail suppressed.
pub(crate) fn suppress_unsent(tx: &mut Tx<'_>, lead: &Lead) -> R<()> {
    for m in tx.unsent_mail_of(lead.id)? {
        if m.marketing {
            let mut s = m.clone();
            s.status = MailStatus::Suppressed;
            s.last_error = Some("the lead may not be contacted".into());
            tx.put_mail(Some(&m), &s)?;
            tx.change(Entity::Mail, s.id, Op::Update, Some(lead))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::new_token;

    #[test]
    fn mail_tokens_are_unguessable_and_sort_by_time() {
        let earlier = new_token(1_700_000_000_000).unwrap();
        let same_time = new_token(1_700_000_000_000).unwrap();
        let later = new_token(1_700_000_000_001).unwrap();
        assert_ne!(earlier, same_time, "the random part differs");
        assert!(earlier < later && same_time < later);
        assert_eq!(later.len(), 12 + 32);
        assert!(
            later
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{later} is URL-safe"
        );
    }
}
