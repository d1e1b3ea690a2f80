//! Typed calls of the hooks this build uses — `score`, `classify`, `enrich` — each with its
//! shape check and its built-in rule.

use super::engine::{LeadObj, StatsObj};
use super::{Hook, HookFailure, Loaded, Plugins, Script};
use crate::domain::lead::{CHANNELS, Lead, NewLead};
use crate::domain::score::{DAY_MS, MIN_RECHECK_MS, Part, Reason, ScoreCard, default_score};
use crate::domain::stats::ActivityStats;
use crate::domain::time::Millis;
use rhai::{Array, Dynamic, Map};
use std::sync::Arc;

const MAX_REASONS: usize = 100;
const MAX_POINTS: i64 = 1_000;
const MAX_TEXT: usize = 200;

/// Where an answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The script of this file answered.
    Script(String),
    /// No script defines the hook.
    BuiltIn,
    /// The script failed; the built-in rule answered.
    Fallback(String, HookFailure),
}

impl Plugins {
    /// Scores a lead: the `score` hook, or the built-in table when there is none or it fails.
    /// The lead and stats are shared with the script, not copied for it.
    pub fn score(
        &self,
        loaded: &Loaded,
        lead: &Arc<Lead>,
        stats: &Arc<ActivityStats>,
        now: Millis,
    ) -> (ScoreCard, Source) {
        let obj = LeadObj(lead.clone());
        let st = StatsObj {
            stats: stats.clone(),
            created_at: lead.created_at,
            now,
        };
        match self.call(loaded, Hook::Score, (obj, st), now) {
            None => (
                default_score(self.defaults(), lead, stats, now),
                Source::BuiltIn,
            ),
            Some((script, result)) => {
                match self.checked(&script, Hook::Score, result, |d| score_card(d, now), now) {
                    Ok(card) => (card, Source::Script(script.file.clone())),
                    Err(failure) => (
                        default_score(self.defaults(), lead, stats, now),
                        Source::Fallback(script.file.clone(), failure),
                    ),
                }
            }
        }
    }

    /// The channel the `classify` hook gives a lead, if a script defines it and answers with
    /// one; `None` keeps the channel the built-in rules chose.
    pub fn classify(&self, loaded: &Loaded, lead: &Lead, now: Millis) -> Option<String> {
        let (script, result) = self.call(
            loaded,
            Hook::Classify,
            (LeadObj(Arc::new(lead.clone())),),
            now,
        )?;
        self.checked(&script, Hook::Classify, result, channel, now)
            .ok()
            .flatten()
    }

    /// Applies the `enrich` hook's answer to `new`. The built-in rule changes nothing.
    pub fn enrich(&self, loaded: &Loaded, new: &mut NewLead, now: Millis) -> EnrichOutcome {
        if loaded.script_for(Hook::Enrich).is_none() {
            return EnrichOutcome::default();
        }
        let lead = new.clone().into_lead(uuid::Uuid::nil(), now);
        let Some((script, result)) =
            self.call(loaded, Hook::Enrich, (LeadObj(Arc::new(lead)),), now)
        else {
            return EnrichOutcome::default();
        };
        let applied = self.checked(
            &script,
            Hook::Enrich,
            result,
            |d| {
                let mut copy = new.clone();
                apply_enrichment(&mut copy, d).map(|fields| (copy, fields))
            },
            now,
        );
        match applied {
            Ok((enriched, fields)) => {
                *new = enriched;
                EnrichOutcome { fields }
            }
            Err(_) => EnrichOutcome::default(),
        }
    }
}

impl Plugins {
    /// Reads a hook's answer with `parse`; a wrong shape is counted and logged like an error.
    pub(crate) fn checked<T>(
        &self,
        script: &Script,
        hook: Hook,
        result: Result<Dynamic, HookFailure>,
        parse: impl FnOnce(Dynamic) -> Result<T, String>,
        now: Millis,
    ) -> Result<T, HookFailure> {
        parse(result?).map_err(|m| {
            let failure = shape(hook, m, script.hook_line(hook), now);
            self.record_failure(script, failure.clone());
            failure
        })
    }
}

/// Which fields `enrich` set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnrichOutcome {
    pub fields: Vec<String>,
}

/// An answer of the wrong shape, at the line of the hook that gave it (the answer itself has
/// no line: it may have been built anywhere in the function).
fn shape(hook: Hook, message: String, line: Option<usize>, now: Millis) -> HookFailure {
    HookFailure {
        hook: hook.name().to_owned(),
        message: format!("returned the wrong shape: {message}"),
        line,
        at: now,
    }
}

pub(crate) fn type_name(d: &Dynamic) -> &'static str {
    if d.is_unit() {
        "()"
    } else if d.is_string() {
        "a string"
    } else if d.is_int() {
        "an integer"
    } else if d.is_float() {
        "a float"
    } else if d.is_bool() {
        "a boolean"
    } else if d.is_array() {
        "an array"
    } else if d.is_map() {
        "a map"
    } else {
        "an object"
    }
}

/// The string `d` holds. The error completes a sentence that starts with what the value is.
fn string(d: Dynamic) -> Result<rhai::ImmutableString, String> {
    if !d.is_string() {
        return Err(format!("must be a string, not {}", type_name(&d)));
    }
    Ok(d.into_immutable_string().unwrap_or_default())
}

/// A non-blank string of at most [`MAX_TEXT`] characters, trimmed. The error completes a
/// sentence that starts with what the value is.
fn text(d: Dynamic) -> Result<String, String> {
    let s = string(d)?;
    let s = s.trim();
    if s.is_empty() || (s.len() > MAX_TEXT && s.chars().count() > MAX_TEXT) {
        return Err(format!("must be 1–{MAX_TEXT} characters"));
    }
    Ok(s.to_owned())
}

/// Reads the `score` hook's answer: a map `#{ reasons: [...], recheck_in_days: n }` or just
/// the array of reasons; each reason `#{ rule, points, part }`.
pub(crate) fn score_card(d: Dynamic, now: Millis) -> Result<ScoreCard, String> {
    let (reasons, recheck): (Array, Option<Dynamic>) = if d.is_array() {
        (d.cast::<Array>(), None)
    } else if d.is_map() {
        let mut m = d.cast::<Map>();
        let reasons = m.remove("reasons").ok_or("a map without `reasons`")?;
        if !reasons.is_array() {
            return Err(format!(
                "`reasons` is {}, not an array",
                type_name(&reasons)
            ));
        }
        (reasons.cast::<Array>(), m.remove("recheck_in_days"))
    } else {
        return Err(format!(
            "{}, not a map with `reasons` or an array of reasons",
            type_name(&d)
        ));
    };
    if reasons.len() > MAX_REASONS {
        return Err(format!("more than {MAX_REASONS} reasons"));
    }
    let mut out = Vec::with_capacity(reasons.len());
    for (i, r) in reasons.into_iter().enumerate() {
        if !r.is_map() {
            return Err(format!("reason {i} is {}, not a map", type_name(&r)));
        }
        let (mut rule, mut points, mut part) = (Dynamic::UNIT, Dynamic::UNIT, Dynamic::UNIT);
        for (k, v) in r.cast::<Map>() {
            match k.as_str() {
                "rule" => rule = v,
                "points" => points = v,
                "part" => part = v,
                _ => {}
            }
        }
        let rule = text(rule).map_err(|e| format!("reason {i} `rule` {e}"))?;
        let points = points
            .as_int()
            .map_err(|_| format!("reason {i} `points` must be an integer"))?;
        if points.abs() > MAX_POINTS {
            return Err(format!("reason {i} `points` is beyond ±{MAX_POINTS}"));
        }
        let part = string(part).map_err(|e| format!("reason {i} `part` {e}"))?;
        let part = Part::parse(part.trim()).ok_or_else(|| {
            format!("reason {i} `part` must be profile, engagement, source or interaction")
        })?;
        out.push(Reason {
            rule,
            points: points as i32,
            part,
        });
    }
    let review_at = match recheck {
        None => None,
        Some(d) if d.is_unit() => None,
        Some(d) => {
            let days = d
                .as_float()
                .or_else(|_| d.as_int().map(|i| i as f64))
                .map_err(|_| "`recheck_in_days` must be a number".to_owned())?;
            if !days.is_finite() || days < 0.0 {
                return Err("`recheck_in_days` must be a number of days ≥ 0".into());
            }
            let ms = (days * DAY_MS as f64).min(36_500.0 * DAY_MS as f64) as i64;
            Some(now + ms.max(MIN_RECHECK_MS))
        }
    };
    Ok(ScoreCard {
        reasons: out,
        review_at,
    })
}

pub(super) fn channel(d: Dynamic) -> Result<Option<String>, String> {
    if d.is_unit() {
        return Ok(None);
    }
    known_channel(&text(d).map_err(|e| format!("the channel {e}"))?).map(Some)
}

fn known_channel(c: &str) -> Result<String, String> {
    let c = c.to_lowercase();
    if CHANNELS.contains(&c.as_str()) {
        Ok(c)
    } else {
        Err(format!(
            "channel {c:?} is not one of {}",
            CHANNELS.join(", ")
        ))
    }
}

/// Applies an `enrich` answer (a map of field → value, `()` for no change) to `new`; returns
/// the fields it set. Unknown fields and wrong types are errors, and then nothing is applied.
pub fn apply_enrichment(new: &mut NewLead, d: Dynamic) -> Result<Vec<String>, String> {
    if d.is_unit() {
        return Ok(Vec::new());
    }
    if !d.is_map() {
        return Err(format!("{}, not a map of fields", type_name(&d)));
    }
    let mut set = Vec::new();
    for (k, v) in d.cast::<Map>() {
        if k.as_str() == "channel" && !v.is_unit() {
            new.channel = Some(known_channel(
                &text(v).map_err(|e| format!("`channel` {e}"))?,
            )?);
            set.push("channel".to_owned());
            continue;
        }
        if v.is_unit() {
            continue;
        }
        let key = k.as_str();
        let slot = match key {
            "name" => &mut new.name,
            "company" => &mut new.company,
            "title" => &mut new.title,
            "industry" => &mut new.industry,
            "region" => &mut new.region,
            "country" => &mut new.country,
            "source" => &mut new.source,
            "channel" => &mut new.channel,
            "company_size" => {
                let n = v
                    .as_int()
                    .ok()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or("`company_size` must be a non-negative integer")?;
                new.company_size = Some(n);
                set.push(key.to_owned());
                continue;
            }
            "tags" => {
                if !v.is_array() {
                    return Err("`tags` must be an array of strings".into());
                }
                let mut raw = Vec::new();
                for t in v.cast::<Array>() {
                    raw.push(text(t).map_err(|e| format!("a tag {e}"))?);
                }
                // Held to the rules of tags given over the API.
                let mut problems = crate::domain::Problems::default();
                let tags = crate::domain::lead::clean_tags(&mut problems, raw);
                if let Some(e) = problems.0.first() {
                    return Err(format!("{} {}", e.field, e.message));
                }
                new.tags = tags;
                set.push(key.to_owned());
                continue;
            }
            other => {
                return Err(format!(
                    "enrich may set name, company, title, industry, company_size, region, \
                     country, source, channel or tags; not {other:?}"
                ));
            }
        };
        *slot = Some(text(v).map_err(|e| format!("`{key}` {e}"))?);
        set.push(key.to_owned());
    }
    set.sort();
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::Engine;

    fn eval(src: &str) -> Dynamic {
        Engine::new().eval::<Dynamic>(src).unwrap()
    }

    #[test]
    fn a_score_is_a_map_of_reasons_or_the_array_itself() {
        let card = score_card(
            eval(r#"#{ reasons: [#{rule: "cto", points: 20, part: "profile"}], recheck_in_days: 2 }"#),
            0,
        )
        .unwrap();
        assert_eq!(card.score().total, 20);
        assert_eq!(card.review_at, Some(2 * DAY_MS));
        let card = score_card(eval(r#"[#{rule: "x", points: -5, part: "source"}]"#), 0).unwrap();
        assert_eq!(card.score().source, -5);
    }

    #[test]
    fn wrong_shapes_are_named() {
        for (src, expect) in [
            (r#""high""#, "a string"),
            (r#"#{ total: 5 }"#, "without `reasons`"),
            (
                r#"[#{rule: "x", points: "5", part: "profile"}]"#,
                "`points`",
            ),
            (r#"[#{rule: "x", points: 5, part: "vibes"}]"#, "`part`"),
            (r#"[#{rule: "", points: 5, part: "profile"}]"#, "`rule`"),
            (r#"[#{rule: "x", points: 5000, part: "profile"}]"#, "beyond"),
            (r#"[1]"#, "reason 0 is an integer"),
        ] {
            let err = score_card(eval(src), 0).unwrap_err();
            assert!(err.contains(expect), "{src}: {err}");
        }
    }

    #[test]
    fn enrichment_sets_known_fields_and_refuses_others() {
        let mut n = NewLead::default();
        let set = apply_enrichment(
            &mut n,
            eval(r#"#{ company: " Acme ", company_size: 120, tags: ["vip"], title: () }"#),
        )
        .unwrap();
        assert_eq!(set, vec!["company", "company_size", "tags"]);
        assert_eq!(n.company.as_deref(), Some("Acme"));
        assert_eq!(n.company_size, Some(120));
        assert!(apply_enrichment(&mut n, eval(r#"#{ email: "x@y.z" }"#)).is_err());
        assert!(apply_enrichment(&mut n, eval(r#"#{ company_size: -1 }"#)).is_err());
        assert!(apply_enrichment(&mut n, eval("42")).is_err());
    }

    #[test]
    fn a_channel_is_a_short_name_or_nothing() {
        assert_eq!(
            channel(eval(r#""Referral""#)).unwrap().as_deref(),
            Some("referral")
        );
        assert!(
            channel(eval(r#""partner""#)).is_err(),
            "not a known channel"
        );
        assert_eq!(channel(eval("()")).unwrap(), None);
        assert!(channel(eval(r#""no spaces please""#)).is_err());
        assert!(channel(eval("5")).is_err());
    }
}
