//! The `route` and `sla` hooks: the roster object a routing script combines strategies on,
//! typed calls with their shape checks, and the built-in rules they fall back to.

use super::engine::LeadObj;
use super::hooks::{Source, type_name};
use super::{Hook, Loaded, Plugins};
use crate::domain::lead::Lead;
use crate::domain::routing::{Decision, Roster, RouteTrigger, default_route};
use crate::domain::sla::SlaPolicy;
use crate::domain::time::Millis;
use rhai::{Array, Dynamic, Engine, Map};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

/// The reps a lead may go to, as a routing script sees them (`reps` in `route(lead, reps,
/// pools)`). Every list it hands out holds only reps who may take the lead now.
#[derive(Debug, Clone)]
pub struct RosterObj {
    roster: Arc<Mutex<Roster>>,
    trigger: RouteTrigger,
    previous_owner: Option<Uuid>,
}

impl RosterObj {
    fn lock(&self) -> MutexGuard<'_, Roster> {
        self.roster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A roster of its own with the same reps (a clone shares the roster, as a script's
    /// copies of `reps` must).
    pub(super) fn deep_copy(&self) -> RosterObj {
        RosterObj {
            roster: Arc::new(Mutex::new(self.lock().clone())),
            trigger: self.trigger,
            previous_owner: self.previous_owner,
        }
    }
}

fn ids(a: &Array) -> Vec<Uuid> {
    a.iter()
        .filter_map(|d| d.clone().into_immutable_string().ok())
        .filter_map(|s| Uuid::parse_str(&s).ok())
        .collect()
}

fn array(ids: Vec<Uuid>) -> Array {
    ids.into_iter()
        .map(|id| Dynamic::from(id.to_string()))
        .collect()
}

fn one(id: Option<Uuid>) -> Dynamic {
    id.map_or(Dynamic::UNIT, |id| Dynamic::from(id.to_string()))
}

pub(super) fn register_roster(engine: &mut Engine) {
    engine.register_type_with_name::<RosterObj>("Reps");
    engine
        .register_get("trigger", |r: &mut RosterObj| r.trigger.as_str())
        .register_get("previous_owner", |r: &mut RosterObj| one(r.previous_owner))
        .register_fn("available", |r: &mut RosterObj| array(r.lock().available()))
        .register_fn("seniors", |r: &mut RosterObj| {
            let g = r.lock();
            array(g.seniors(&g.available()))
        })
        .register_fn("seniors", |r: &mut RosterObj, among: Array| {
            array(r.lock().seniors(&ids(&among)))
        })
        .register_fn("team", |r: &mut RosterObj, team: &str| {
            let g = r.lock();
            array(g.team(&g.available(), team))
        })
        .register_fn("team", |r: &mut RosterObj, among: Array, team: &str| {
            array(r.lock().team(&ids(&among), team))
        })
        .register_fn("territory", |r: &mut RosterObj, lead: LeadObj| {
            let g = r.lock();
            array(g.territory(&g.available(), &lead.0))
        })
        .register_fn(
            "territory",
            |r: &mut RosterObj, among: Array, lead: LeadObj| {
                array(r.lock().territory(&ids(&among), &lead.0))
            },
        )
        .register_fn("product_line", |r: &mut RosterObj, lead: LeadObj| {
            let g = r.lock();
            array(g.product_line(&g.available(), &lead.0))
        })
        .register_fn(
            "product_line",
            |r: &mut RosterObj, among: Array, lead: LeadObj| {
                array(r.lock().product_line(&ids(&among), &lead.0))
            },
        )
        .register_fn("least_loaded", |r: &mut RosterObj, among: Array| {
            one(r.lock().least_loaded(&ids(&among)))
        })
        .register_fn(
            "round_robin",
            |r: &mut RosterObj, among: Array, key: &str| {
                one(r.lock().round_robin(&ids(&among), key))
            },
        )
        .register_fn("load", |r: &mut RosterObj, id: &str| -> i64 {
            Uuid::parse_str(id)
                .ok()
                .and_then(|id| r.lock().rep(id).map(|rep| rep.load))
                .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX))
        });
}

/// What routing decided, and the round-robin turns to store with it.
#[derive(Debug, Clone)]
pub struct Routed {
    pub decision: Decision,
    pub turns: BTreeMap<String, Uuid>,
    pub source: Source,
}

impl Plugins {
    /// Routes a lead: the `route` hook, or the built-in rule when there is none, it fails, or
    /// it names a rep who cannot take the lead or a pool that does not exist.
    pub fn route(
        &self,
        loaded: &Loaded,
        lead: &Lead,
        roster: Roster,
        pools: &[String],
        trigger: RouteTrigger,
        now: Millis,
    ) -> Routed {
        let previous_owner = (trigger == RouteTrigger::Reclaim)
            .then_some(lead.owner_id)
            .flatten();
        let shared = Arc::new(Mutex::new(roster));
        let obj = RosterObj {
            roster: shared.clone(),
            trigger,
            previous_owner,
        };
        let pool_names: Array = pools.iter().map(|p| Dynamic::from(p.clone())).collect();
        let answer = self.call(
            loaded,
            Hook::Route,
            (LeadObj(Arc::new(lead.clone())), obj, pool_names),
            now,
        );
        let mut roster = match Arc::try_unwrap(shared) {
            Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
            Err(arc) => arc.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        let source = match answer {
            None => Source::BuiltIn,
            Some((script, result)) => {
                let checked = self.checked(
                    &script,
                    Hook::Route,
                    result,
                    |d| {
                        decision(
                            d,
                            &roster,
                            pools,
                            lead.owner_id.filter(|o| Some(*o) != previous_owner),
                        )
                    },
                    now,
                );
                match checked {
                    Ok(decision) => {
                        return Routed {
                            decision,
                            turns: roster.take_turns(),
                            source: Source::Script(script.file.clone()),
                        };
                    }
                    Err(f) => Source::Fallback(script.file.clone(), f),
                }
            }
        };
        // The script's turns do not count when its answer is not used.
        roster.take_turns();
        let decision = default_route(lead, &mut roster, trigger);
        Routed {
            decision,
            turns: roster.take_turns(),
            source,
        }
    }

    /// The SLA policy of a lead: the `sla` hook, or the defaults. `None`: no SLA for it.
    pub fn sla(&self, loaded: &Loaded, lead: &Lead, now: Millis) -> Option<SlaPolicy> {
        if loaded.script_for(Hook::Sla).is_none() {
            return Some(SlaPolicy::default());
        }
        let Some((script, result)) =
            self.call(loaded, Hook::Sla, (LeadObj(Arc::new(lead.clone())),), now)
        else {
            return Some(SlaPolicy::default());
        };
        self.checked(&script, Hook::Sla, result, sla_policy, now)
            .unwrap_or(Some(SlaPolicy::default()))
    }
}

/// Reads the `route` hook's answer: a rep id, `#{owner: id}`, `#{pool: "name"}`, or `()` for
/// the default pool. Naming the current owner keeps the lead with them.
pub(crate) fn decision(
    d: Dynamic,
    roster: &Roster,
    pools: &[String],
    current: Option<Uuid>,
) -> Result<Decision, String> {
    let owner = |s: &str| -> Result<Decision, String> {
        let id = Uuid::parse_str(s.trim()).map_err(|_| format!("`{s}` is not a user id"))?;
        if Some(id) == current && roster.rep(id).is_some_and(|r| r.active) {
            Ok(Decision::Keep)
        } else if roster.eligible(id) {
            Ok(Decision::Owner(id))
        } else {
            Err(format!(
                "rep {id} cannot take this lead (unknown, inactive, at capacity or excluded)"
            ))
        }
    };
    if d.is_unit() {
        return Ok(Decision::Pool(crate::domain::routing::DEFAULT_POOL.into()));
    }
    if d.is_string() {
        return owner(&d.into_immutable_string().unwrap_or_default());
    }
    if !d.is_map() {
        return Err(format!(
            "{}, not a rep id, #{{owner: id}}, #{{pool: name}} or ()",
            type_name(&d)
        ));
    }
    let m = d.cast::<Map>();
    if let Some(k) = m.keys().find(|k| !matches!(k.as_str(), "owner" | "pool")) {
        return Err(format!("unknown key `{k}` (use `owner` or `pool`)"));
    }
    match (m.get("owner"), m.get("pool")) {
        (Some(o), None) if o.is_string() => {
            owner(&o.clone().into_immutable_string().unwrap_or_default())
        }
        (None, Some(p)) if p.is_string() => {
            let name = p.clone().into_immutable_string().unwrap_or_default();
            pools
                .iter()
                .find(|n| n.eq_ignore_ascii_case(name.trim()))
                .map(|n| Decision::Pool(n.clone()))
                .ok_or_else(|| format!("no pool named `{name}`"))
        }
        (Some(_), Some(_)) => Err("both `owner` and `pool`; give one".into()),
        _ => Err("`owner` or `pool` must be a string".into()),
    }
}

/// Reads the `sla` hook's answer: `()` for the defaults, `false` for no SLA, or a map that
/// overrides some of `first_touch_minutes`, `remind_minutes`, `escalate_minutes`,
/// `reclaim_minutes`, `follow_up_minutes`.
pub(crate) fn sla_policy(d: Dynamic) -> Result<Option<SlaPolicy>, String> {
    if d.is_unit() {
        return Ok(Some(SlaPolicy::default()));
    }
    if d.as_bool() == Ok(false) {
        return Ok(None);
    }
    if !d.is_map() {
        return Err(format!("{}, not a map, false or ()", type_name(&d)));
    }
    let mut p = SlaPolicy::default();
    for (k, v) in d.cast::<Map>() {
        let slot = match k.as_str() {
            "first_touch_minutes" => &mut p.first_touch_minutes,
            "remind_minutes" => &mut p.remind_minutes,
            "escalate_minutes" => &mut p.escalate_minutes,
            "reclaim_minutes" => &mut p.reclaim_minutes,
            "follow_up_minutes" => &mut p.follow_up_minutes,
            other => return Err(format!("unknown key `{other}`")),
        };
        *slot = v
            .as_int()
            .map_err(|_| format!("`{k}` must be an integer, not {}", type_name(&v)))?;
    }
    p.validate()?;
    Ok(Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::routing::Rep;

    fn roster() -> Roster {
        let rep = |n: u128, active: bool| Rep {
            id: Uuid::from_u128(n),
            team: None,
            territories: Vec::new(),
            product_lines: Vec::new(),
            capacity: 5,
            load: 0,
            active,
            senior: false,
            manager_id: None,
        };
        Roster::new(vec![rep(1, true), rep(2, false)], BTreeMap::new(), None)
    }

    #[test]
    fn a_copy_for_a_second_run_has_a_roster_of_its_own() {
        let obj = RosterObj {
            roster: Arc::new(Mutex::new(roster())),
            trigger: RouteTrigger::Capture,
            previous_owner: None,
        };
        let copy = obj.deep_copy();
        assert!(!Arc::ptr_eq(&obj.roster, &copy.roster));
        assert_eq!(copy.lock().available(), obj.lock().available());
        // A script's own copies of `reps` still share one roster.
        assert!(Arc::ptr_eq(&obj.roster, &obj.clone().roster));
    }

    #[test]
    fn route_answers_are_checked() {
        let pools = vec!["default".to_owned(), "East".to_owned()];
        let r = roster();
        let one = Uuid::from_u128(1).to_string();
        assert_eq!(
            decision(Dynamic::from(one.clone()), &r, &pools, None),
            Ok(Decision::Owner(Uuid::from_u128(1)))
        );
        let mut m = Map::new();
        m.insert("pool".into(), Dynamic::from("east"));
        assert_eq!(
            decision(Dynamic::from(m), &r, &pools, None),
            Ok(Decision::Pool("East".into()))
        );
        assert_eq!(
            decision(Dynamic::UNIT, &r, &pools, None),
            Ok(Decision::Pool("default".into()))
        );
        let inactive = Uuid::from_u128(2).to_string();
        assert!(
            decision(Dynamic::from(inactive), &r, &pools, None)
                .unwrap_err()
                .contains("cannot take")
        );
        let mut m = Map::new();
        m.insert("pool".into(), Dynamic::from("West"));
        assert!(decision(Dynamic::from(m), &r, &pools, None).is_err());
        assert!(decision(Dynamic::from(5_i64), &r, &pools, None).is_err());
    }

    #[test]
    fn sla_answers_override_the_defaults() {
        assert_eq!(sla_policy(Dynamic::UNIT), Ok(Some(SlaPolicy::default())));
        assert_eq!(sla_policy(Dynamic::from(false)), Ok(None));
        let mut m = Map::new();
        m.insert("first_touch_minutes".into(), Dynamic::from(30_i64));
        let p = sla_policy(Dynamic::from(m)).unwrap().unwrap();
        assert_eq!(p.first_touch_minutes, 30);
        assert_eq!(p.reclaim_minutes, SlaPolicy::default().reclaim_minutes);
        let mut bad = Map::new();
        bad.insert("first_touch".into(), Dynamic::from(30_i64));
        assert!(sla_policy(Dynamic::from(bad)).is_err());
        let mut neg = Map::new();
        neg.insert("remind_minutes".into(), Dynamic::from(-5_i64));
        assert!(sla_policy(Dynamic::from(neg)).is_err());
    }
}
