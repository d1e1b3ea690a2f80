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
                let (card, source) = self.score(&loaded, lead, stats, now);
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
            }
            Hook::Sla => {
                let obj = LeadObj(Arc::new(lead.clone()));
                self.raw(&mut out, &loaded, hook, (obj,), now, |_| Ok(()));
            }
            Hook::Route | Hook::OnEvent | Hook::StageGate => {
                let mut dyn_args: Vec<Dynamic> = args
                    .into_iter()
                    .map(|v| rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT))
                    .collect();
                let obj = Dynamic::from(LeadObj(Arc::new(lead.clone())));
                match hook {
                    Hook::Route => dyn_args.insert(0, obj),
                    Hook::OnEvent => dyn_args.insert(1.min(dyn_args.len()), obj),
                    _ => {}
                }
                dyn_args.resize(hook.arity(), Dynamic::UNIT);
                self.raw(&mut out, &loaded, hook, dyn_args, now, |_| Ok(()));
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
        args: impl rhai::FuncArgs,
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
    pub fn into_stats(self, now: Millis) -> ActivityStats {
        let last = now - (self.days_since_last_activity.max(0.0) * DAY_MS as f64) as i64;
        ActivityStats::from_counts(
            self.kinds.iter().map(|(k, n)| (k.as_str(), *n)),
            self.pages.iter().map(|(k, n)| (k.as_str(), *n)),
            last,
        )
    }
}
