//! Running one hook on given input without storing anything: the admin's dry run and the
//! `leadline plugins check` / `plugins test` tools.

use super::engine::LeadObj;
use super::hooks::Source;
use super::{Hook, HookFailure, Plugins};
use crate::domain::lead::Lead;
use crate::domain::score::DAY_MS;
use crate::domain::stats::ActivityStats;
use crate::domain::time::Millis;
use rhai::Dynamic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;

/// What a hook answered for a dry run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DryRun {
    pub hook: String,
    /// The script file that answered, or `built-in`.
    pub answered_by: String,
    /// The answer, as the server would use it.
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
    /// Why the script's answer was not used (the built-in rule's answer is in `result`).
    pub error: Option<HookFailure>,
}

impl Plugins {
    /// Runs `hook` on `lead` (and `stats`, for `score`); hooks this build does not call yet
    /// take their other arguments from `args`, in order, as JSON.
    pub fn dry_run(
        &self,
        hook: Hook,
        lead: &Lead,
        stats: &ActivityStats,
        args: Vec<serde_json::Value>,
        now: Millis,
    ) -> DryRun {
        // The caller waits for the answer, so a failure's line is found before it returns.
        let _inline = super::locate::Inline::on();
        let loaded = self.current();
        let by = |script: Option<&Arc<super::Script>>| {
            script.map_or_else(|| "built-in".to_owned(), |s| s.file.clone())
        };
        let answered_by = by(loaded.script_for(hook));
        let mut out = DryRun {
            hook: hook.name().to_owned(),
            answered_by,
            result: serde_json::Value::Null,
            error: None,
        };
        match hook {
            Hook::Score => {
                let (card, source) = self.score(
                    &loaded,
                    &Arc::new(lead.clone()),
                    &Arc::new(stats.clone()),
                    now,
                );
                if let Source::Fallback(_, failure) = source {
                    out.error = Some(failure);
                    out.answered_by = "built-in".into();
                }
                let s = card.score();
                out.result = serde_json::json!({
                    "total": s.total,
                    "parts": {"profile": s.profile, "engagement": s.engagement,
                              "source": s.source, "interaction": s.interaction},
                    "reasons": card.reasons,
                    "review_at": card.review_at.map(crate::domain::time::to_rfc3339),
                    "stage": crate::domain::score::stage_after(
                        lead.stage, lead.score.total, s.total, loaded.thresholds,
                        crate::domain::score::Trigger::Change),
                });
            }
            Hook::Classify => {
                let obj = LeadObj(Arc::new(lead.clone()));
                self.raw(&mut out, &loaded, hook, (obj,), now, |d| {
                    super::hooks::channel(d.clone()).map(|_| ())
                });
                if out.error.is_some() || out.result.is_null() {
                    out.result = serde_json::json!(lead.channel);
                }
            }
            Hook::Enrich => {
                let obj = LeadObj(Arc::new(lead.clone()));
                let mut new = crate::domain::lead::NewLead::from_lead(lead);
                self.raw(&mut out, &loaded, hook, (obj,), now, |d| {
                    super::apply_enrichment(&mut new, d.clone()).map(|_| ())
                });
                // The built-in rule changes nothing.
                if out.error.is_some() || out.result.is_null() {
                    out.result = serde_json::json!({});
                }
            }
            Hook::Sla => {
                let obj = LeadObj(Arc::new(lead.clone()));
                let mut policy = Some(crate::domain::sla::SlaPolicy::default());
                self.raw(&mut out, &loaded, hook, (obj,), now, |d| {
                    policy = super::routing::sla_policy(d.clone())?;
                    Ok(())
                });
                // The policy in force, defaults filled in (`false`: no SLA for this lead).
                out.result = match policy {
                    Some(p) => serde_json::to_value(p).unwrap_or_default(),
                    None => serde_json::Value::Bool(false),
                };
            }
            Hook::Route => {
                let (roster, trigger, pools) = match route_args(&args, lead.owner_id) {
                    Ok(a) => a,
                    Err(m) => {
                        out.error = Some(HookFailure {
                            hook: "route".into(),
                            message: m,
                            line: None,
                            at: now,
                        });
                        return out;
                    }
                };
                let routed = self.route(&loaded, lead, roster, &pools, trigger, now);
                if let Source::Fallback(_, failure) = routed.source {
                    out.error = Some(failure);
                }
                out.result = match routed.decision {
                    crate::domain::routing::Decision::Owner(id) => {
                        serde_json::json!({"owner_id": id})
                    }
                    crate::domain::routing::Decision::Pool(p) => serde_json::json!({"pool": p}),
                    crate::domain::routing::Decision::Keep => {
                        serde_json::json!({"keep": lead.owner_id})
                    }
                };
            }
            Hook::OnEvent | Hook::StageGate => {
                let mut dyn_args: Vec<Dynamic> = args
                    .into_iter()
                    .map(|v| rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT))
                    .collect();
                let obj = Dynamic::from(LeadObj(Arc::new(lead.clone())));
                if hook == Hook::OnEvent {
                    dyn_args.insert(1.min(dyn_args.len()), obj);
                }
                dyn_args.resize(hook.arity(), Dynamic::UNIT);
                // An answer the server would not carry out is shown as the error it is.
                self.raw(&mut out, &loaded, hook, dyn_args, now, |d| match hook {
                    Hook::OnEvent => super::nurture::actions(d.clone()).map(|_| ()),
                    _ => Ok(()),
                });
                // The built-in `on_event` takes no action. (No built-in `stage_gate` answers
                // yet: this build does not call it.)
                if hook == Hook::OnEvent && (out.error.is_some() || out.result.is_null()) {
                    out.result = serde_json::json!([]);
                }
            }
        }
        if out.error.is_some() {
            out.answered_by = "built-in".into();
        }
        out
    }

    fn raw(
        &self,
        out: &mut DryRun,
        loaded: &super::Loaded,
        hook: Hook,
        args: impl super::HookArgs,
        now: Millis,
        check: impl FnOnce(&Dynamic) -> Result<(), String>,
    ) {
        let Some((script, result)) = self.call(loaded, hook, args, now) else {
            out.result = serde_json::Value::Null;
            return;
        };
        match self.checked(&script, hook, result, |d| check(&d).map(|()| d), now) {
            Ok(d) => {
                out.result = rhai::serde::from_dynamic::<serde_json::Value>(&d)
                    .unwrap_or_else(|_| serde_json::Value::String(d.to_string()));
            }
            Err(e) => out.error = Some(e),
        }
    }
}

/// Checks a dry run's `args` against what `hook` takes besides the lead, so a mistyped
/// request is refused instead of answered with an error the script never made.
pub fn check_dry_run_args(hook: Hook, args: &[serde_json::Value]) -> Result<(), String> {
    let takes = match hook {
        Hook::Classify | Hook::Enrich | Hook::Sla | Hook::Score => 0,
        Hook::OnEvent => 1,
        Hook::StageGate => 2,
        Hook::Route => 3,
    };
    if args.len() > takes {
        return Err(match takes {
            0 => format!("{} takes only the lead; leave `args` out", hook.name()),
            1 => format!(
                "{} takes one argument besides the lead: the event",
                hook.name()
            ),
            2 => format!(
                "{} takes two arguments: the opportunity and the stage",
                hook.name()
            ),
            _ => format!("{} takes at most reps, trigger and pool names", hook.name()),
        });
    }
    if hook == Hook::Route {
        route_args(args, None)?;
    }
    Ok(())
}

/// A made-up rep for a routing dry run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepInput {
    id: uuid::Uuid,
    team: Option<String>,
    #[serde(default)]
    territories: Vec<String>,
    #[serde(default)]
    product_lines: Vec<String>,
    #[serde(default = "default_capacity")]
    capacity: u32,
    #[serde(default)]
    load: u64,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    senior: bool,
}

fn default_capacity() -> u32 {
    50
}

fn yes() -> bool {
    true
}

/// The `route` dry run's arguments: reps (array of rep objects), then the trigger
/// (`capture`, `sql`, `reclaim`), then pool names (the default pool is always there).
fn route_args(
    args: &[serde_json::Value],
    owner: Option<uuid::Uuid>,
) -> Result<
    (
        crate::domain::routing::Roster,
        crate::domain::routing::RouteTrigger,
        Vec<String>,
    ),
    String,
> {
    use crate::domain::routing::{DEFAULT_POOL, Rep, Roster, RouteTrigger};
    let reps: Vec<RepInput> = match args.first() {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("args[0] must be an array of reps ({{\"id\", \"team\", \"territories\", \"product_lines\", \"capacity\", \"load\", \"active\", \"senior\"}}): {e}"))?,
    };
    let trigger = match args.get(1) {
        None | Some(serde_json::Value::Null) => RouteTrigger::Capture,
        Some(v) => match v.as_str() {
            Some("capture") => RouteTrigger::Capture,
            Some("sql") => RouteTrigger::Sql,
            Some("reclaim") => RouteTrigger::Reclaim,
            _ => {
                return Err(format!(
                    "args[1] {v} must be \"capture\", \"sql\" or \"reclaim\""
                ));
            }
        },
    };
    let mut pools: Vec<String> = match args.get(2) {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("args[2] must be an array of pool names: {e}"))?,
    };
    if !pools.iter().any(|p| p.eq_ignore_ascii_case(DEFAULT_POOL)) {
        pools.push(DEFAULT_POOL.into());
    }
    let reps = reps
        .into_iter()
        .map(|r| Rep {
            id: r.id,
            team: r.team,
            territories: r.territories,
            product_lines: r.product_lines,
            capacity: r.capacity,
            load: r.load,
            active: r.active,
            senior: r.senior,
            manager_id: None,
        })
        .collect();
    // As on the server: a reclaimed lead never goes back to the rep it was taken from.
    let excluded = (trigger == RouteTrigger::Reclaim)
        .then_some(owner)
        .flatten();
    Ok((Roster::new(reps, BTreeMap::new(), excluded), trigger, pools))
}

/// Activity to score a made-up lead with.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsInput {
    /// Activity kind → how many.
    #[serde(default)]
    pub kinds: BTreeMap<String, u32>,
    /// Page path → views.
    #[serde(default)]
    pub pages: BTreeMap<String, u32>,
    /// Days since the newest of those activities (default 0).
    #[serde(default)]
    pub days_since_last_activity: f64,
}

impl StatsInput {
    /// When the newest of the activities happened.
    fn last_activity_at(&self, now: Millis) -> Millis {
        now.saturating_sub((self.days_since_last_activity.max(0.0) * DAY_MS as f64) as i64)
    }

    /// `new` as the lead of a dry run or test case: as old as its newest activity, so "days
    /// since last activity" is what the input says whether or not it lists any activity.
    pub fn lead_of(&self, new: crate::domain::lead::NewLead, now: Millis) -> Lead {
        new.into_lead(uuid::Uuid::nil(), self.last_activity_at(now))
    }

    pub fn into_stats(self, now: Millis) -> ActivityStats {
        let last = self.last_activity_at(now);
        ActivityStats::from_counts(
            self.kinds.iter().map(|(k, n)| (k.as_str(), *n)),
            self.pages.iter().map(|(k, n)| (k.as_str(), *n)),
            last,
        )
    }
}
