//! Routing: who may receive a lead (active, under capacity), the built-in strategies a `route`
//! script combines (territory, product line, seniority, team, least-loaded, round-robin) and
//! the default rule of DESIGN.md built from them. Pure: the roster is read by the caller.

use super::lead::Lead;
use super::user::{Role, User};
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Score from which a lead is "strategic" and goes to the senior team.
pub const STRATEGIC_SCORE: i32 = 80;
/// The pool every lead no rep can take lands in; it always exists.
pub const DEFAULT_POOL: &str = "default";
/// The round-robin key of the built-in rule (everyone available, in turn).
pub const ROUND_ROBIN_ALL: &str = "*";

/// Why a lead is being routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteTrigger {
    /// A new lead was captured.
    Capture,
    /// The lead reached SQL: the hand-off from marketing to sales.
    Sql,
    /// Its owner missed the SLA and the lead was taken back.
    Reclaim,
}

impl RouteTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteTrigger::Capture => "capture",
            RouteTrigger::Sql => "sql",
            RouteTrigger::Reclaim => "reclaim",
        }
    }
}

/// A user as routing sees them: their profile and how many open leads they hold now.
#[derive(Debug, Clone, PartialEq)]
pub struct Rep {
    pub id: Uuid,
    pub team: Option<String>,
    pub territories: Vec<String>,
    pub product_lines: Vec<String>,
    pub capacity: u32,
    pub load: u64,
    pub active: bool,
    pub senior: bool,
    pub manager_id: Option<Uuid>,
}

impl Rep {
    /// Routing hands leads to reps only (DESIGN: "round-robin among active reps"); managers
    /// hold leads given to them by hand, and the admin account is not a seller.
    pub fn from_user(u: &User, load: u64) -> Option<Rep> {
        (u.role == Role::Rep).then(|| Rep {
            id: u.id,
            team: u.team.clone(),
            territories: u.territories.clone(),
            product_lines: u.product_lines.clone(),
            capacity: u.capacity,
            load,
            active: u.active,
            senior: u.senior,
            manager_id: u.manager_id,
        })
    }

    /// Whether one more lead may go to this rep.
    pub fn can_take(&self) -> bool {
        self.active && self.load < u64::from(self.capacity)
    }
}

/// Whether territory `t` covers `place`: equal, or a prefix ending at a `-` boundary
/// (`CN-31` covers `CN-31-05`, not `CN-310`). Case-insensitive.
pub fn covers(t: &str, place: &str) -> bool {
    let (t, place) = (t.trim(), place.trim());
    if t.is_empty() || place.len() < t.len() {
        return false;
    }
    let (head, rest) = place.split_at_checked(t.len()).unwrap_or(("", "x"));
    head.eq_ignore_ascii_case(t) && (rest.is_empty() || rest.starts_with('-'))
}

/// Whether any of the rep's territories covers the lead's region or country.
pub fn in_territory(rep: &Rep, lead: &Lead) -> bool {
    let places = [lead.region.as_deref(), lead.country.as_deref()];
    rep.territories
        .iter()
        .any(|t| places.iter().flatten().any(|p| covers(t, p)))
}

/// The product line a lead is about: its `product_line` (or `product`) custom field.
pub fn product_line_of(lead: &Lead) -> Option<String> {
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&lead.fields).ok()?;
    ["product_line", "product"].iter().find_map(|k| {
        fields
            .get(*k)
            .and_then(|v| v.as_str())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
}

/// Whether the rep sells `line`. A rep without product lines sells every line, and a lead
/// without one fits every rep.
pub fn sells(rep: &Rep, line: Option<&str>) -> bool {
    match line {
        None => true,
        Some(line) => {
            rep.product_lines.is_empty()
                || rep
                    .product_lines
                    .iter()
                    .any(|p| p.trim().eq_ignore_ascii_case(line))
        }
    }
}

/// The reps a lead may go to, the round-robin positions and the strategies over them.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    /// Sorted by id, so every strategy is deterministic.
    reps: Vec<Rep>,
    /// Round-robin key → the rep who got the last lead under it.
    last_turn: BTreeMap<String, Uuid>,
    /// A rep who must not get the lead back (the owner it was reclaimed from).
    excluded: Option<Uuid>,
    /// Round-robin turns taken during this decision.
    turns: BTreeMap<String, Uuid>,
}

impl Roster {
    pub fn new(
        mut reps: Vec<Rep>,
        last_turn: BTreeMap<String, Uuid>,
        excluded: Option<Uuid>,
    ) -> Roster {
        reps.sort_by_key(|r| r.id);
        Roster {
            reps,
            last_turn,
            excluded,
            turns: BTreeMap::new(),
        }
    }

    pub fn rep(&self, id: Uuid) -> Option<&Rep> {
        self.reps
            .binary_search_by_key(&id, |r| r.id)
            .ok()
            .map(|i| &self.reps[i])
    }

    /// Whether the lead may go to `id` now.
    pub fn eligible(&self, id: Uuid) -> bool {
        Some(id) != self.excluded && self.rep(id).is_some_and(Rep::can_take)
    }

    /// Every rep the lead may go to now, by id.
    pub fn available(&self) -> Vec<Uuid> {
        self.reps
            .iter()
            .filter(|r| self.eligible(r.id))
            .map(|r| r.id)
            .collect()
    }

    /// The reps of `among` for which `keep` holds.
    pub fn filter(&self, among: &[Uuid], keep: impl Fn(&Rep) -> bool) -> Vec<Uuid> {
        among
            .iter()
            .filter(|id| self.eligible(**id) && self.rep(**id).is_some_and(&keep))
            .copied()
            .collect()
    }

    pub fn seniors(&self, among: &[Uuid]) -> Vec<Uuid> {
        self.filter(among, |r| r.senior)
    }

    pub fn team(&self, among: &[Uuid], team: &str) -> Vec<Uuid> {
        self.filter(among, |r| {
            r.team
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(team))
        })
    }

    pub fn territory(&self, among: &[Uuid], lead: &Lead) -> Vec<Uuid> {
        self.filter(among, |r| in_territory(r, lead))
    }

    pub fn product_line(&self, among: &[Uuid], lead: &Lead) -> Vec<Uuid> {
        let line = product_line_of(lead);
        self.filter(among, |r| sells(r, line.as_deref()))
    }

    /// The rep of `among` holding the fewest open leads (ties: the lowest id).
    pub fn least_loaded(&self, among: &[Uuid]) -> Option<Uuid> {
        among
            .iter()
            .filter(|id| self.eligible(**id))
            .filter_map(|id| self.rep(*id))
            .min_by_key(|r| (r.load, r.id))
            .map(|r| r.id)
    }

    /// The next rep of `among` after the one who got the last lead under `key` (wrapping), so
    /// reps take turns even as people join, leave or fill up.
    pub fn round_robin(&mut self, among: &[Uuid], key: &str) -> Option<Uuid> {
        let mut ids: Vec<Uuid> = among
            .iter()
            .filter(|id| self.eligible(**id))
            .copied()
            .collect();
        ids.sort();
        ids.dedup();
        let last = self
            .turns
            .get(key)
            .or_else(|| self.last_turn.get(key))
            .copied();
        let next = match last {
            Some(last) => ids.iter().find(|id| **id > last).or(ids.first()).copied(),
            None => ids.first().copied(),
        }?;
        self.turns.insert(key.to_owned(), next);
        Some(next)
    }

    /// The round-robin turns this decision took, to store with the assignment.
    pub fn take_turns(&mut self) -> BTreeMap<String, Uuid> {
        std::mem::take(&mut self.turns)
    }
}

/// Where a lead goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Owner(Uuid),
    /// Leave the lead with the owner it has.
    Keep,
    /// A pool, by name.
    Pool(String),
}

/// The built-in rule of DESIGN.md: strategic leads (score ≥ 80) to the least-loaded senior;
/// else the least-loaded rep whose territory covers the lead and who sells its product line;
/// else everyone available in turn; else the default pool. At the SQL hand-off a lead that has
/// an owner keeps them unless it is strategic.
pub fn default_route(lead: &Lead, roster: &mut Roster, trigger: RouteTrigger) -> Decision {
    let all = roster.available();
    let seniors = roster.seniors(&all);
    // At the SQL hand-off an active owner keeps the lead, unless it is strategic and a senior
    // other than them can take it. An inactive owner's lead is routed afresh.
    if trigger == RouteTrigger::Sql
        && let Some(owner) = lead
            .owner_id
            .filter(|o| roster.rep(*o).is_some_and(|r| r.active))
    {
        let strategic = lead.score.total >= STRATEGIC_SCORE;
        if !strategic || seniors.is_empty() || seniors.contains(&owner) {
            return Decision::Keep;
        }
    }
    if lead.score.total >= STRATEGIC_SCORE
        && let Some(id) = roster.least_loaded(&seniors)
    {
        return Decision::Owner(id);
    }
    let local = roster.product_line(&roster.territory(&all, lead), lead);
    if let Some(id) = roster.least_loaded(&local) {
        return Decision::Owner(id);
    }
    match roster.round_robin(&all, ROUND_ROBIN_ALL) {
        Some(id) => Decision::Owner(id),
        None => Decision::Pool(DEFAULT_POOL.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lead::NewLead;

    fn rep(n: u128) -> Rep {
        Rep {
            id: Uuid::from_u128(n),
            team: Some("sales".into()),
            territories: Vec::new(),
            product_lines: Vec::new(),
            capacity: 10,
            load: 0,
            active: true,
            senior: false,
            manager_id: None,
        }
    }

    fn lead(region: Option<&str>, score: i32, fields: &str) -> Lead {
        let mut l = NewLead {
            region: region.map(str::to_owned),
            ..Default::default()
        }
        .into_lead(Uuid::from_u128(999), 0);
        l.score.total = score;
        l.fields = fields.to_owned();
        l
    }

    #[test]
    fn territories_cover_by_prefix_at_a_dash() {
        assert!(covers("CN-31", "CN-31"));
        assert!(covers("CN-31", "cn-31-05"));
        assert!(covers("CN", "CN-44"));
        assert!(!covers("CN-31", "CN-310"));
        assert!(!covers("CN-31", "CN-3"));
        assert!(covers("华东", "华东"));
        assert!(!covers("华东", "华南"));
        assert!(!covers("", "CN"));
    }

    #[test]
    fn inactive_and_full_reps_get_nothing() {
        let mut full = rep(1);
        full.load = 10;
        let mut off = rep(2);
        off.active = false;
        let mut r = Roster::new(vec![full, off, rep(3)], BTreeMap::new(), None);
        assert_eq!(r.available(), vec![Uuid::from_u128(3)]);
        assert_eq!(
            default_route(&lead(None, 0, "{}"), &mut r, RouteTrigger::Capture),
            Decision::Owner(Uuid::from_u128(3))
        );
        let mut none = Roster::new(vec![rep_with(|r| r.capacity = 0)], BTreeMap::new(), None);
        assert_eq!(
            default_route(&lead(None, 0, "{}"), &mut none, RouteTrigger::Capture),
            Decision::Pool(DEFAULT_POOL.into())
        );
    }

    fn rep_with(f: impl FnOnce(&mut Rep)) -> Rep {
        let mut r = rep(50);
        f(&mut r);
        r
    }

    #[test]
    fn round_robin_takes_turns_and_resumes_from_the_stored_position() {
        let reps: Vec<Rep> = (1..=5).map(rep).collect();
        let mut counts = BTreeMap::new();
        let mut last = BTreeMap::new();
        for _ in 0..1_000 {
            // A fresh roster each time, as each capture reads the stored position anew.
            let mut r = Roster::new(reps.clone(), last.clone(), None);
            let all = r.available();
            let id = r.round_robin(&all, "sales").unwrap();
            *counts.entry(id).or_insert(0) += 1;
            last.extend(r.take_turns());
        }
        assert!(counts.values().all(|c| *c == 200), "{counts:?}");
    }

    #[test]
    fn strategic_leads_go_to_seniors_and_local_leads_to_their_territory() {
        let mut senior = rep(1);
        senior.senior = true;
        let mut east = rep(2);
        east.territories = vec!["CN-31".into()];
        east.product_lines = vec!["A".into()];
        let mut east_b = rep(3);
        east_b.territories = vec!["CN-31".into()];
        east_b.product_lines = vec!["B".into()];
        let reps = vec![senior, east, east_b, rep(4)];
        let mut r = Roster::new(reps.clone(), BTreeMap::new(), None);
        assert_eq!(
            default_route(
                &lead(Some("CN-31-05"), 85, "{}"),
                &mut r,
                RouteTrigger::Capture
            ),
            Decision::Owner(Uuid::from_u128(1))
        );
        let mut r = Roster::new(reps.clone(), BTreeMap::new(), None);
        assert_eq!(
            default_route(
                &lead(Some("CN-31-05"), 10, r#"{"product_line":"B"}"#),
                &mut r,
                RouteTrigger::Capture
            ),
            Decision::Owner(Uuid::from_u128(3))
        );
        // Outside every territory: in turn among everyone.
        let mut r = Roster::new(reps, BTreeMap::new(), None);
        assert_eq!(
            default_route(
                &lead(Some("US-CA"), 10, "{}"),
                &mut r,
                RouteTrigger::Capture
            ),
            Decision::Owner(Uuid::from_u128(1))
        );
    }

    #[test]
    fn at_the_sql_hand_off_an_owner_keeps_the_lead_unless_it_is_strategic() {
        let mut senior = rep(1);
        senior.senior = true;
        let reps = vec![senior, rep(2)];
        let mut owned = lead(None, 65, "{}");
        owned.owner_id = Some(Uuid::from_u128(2));
        let mut r = Roster::new(reps.clone(), BTreeMap::new(), None);
        assert_eq!(
            default_route(&owned, &mut r, RouteTrigger::Sql),
            Decision::Keep
        );
        owned.score.total = 85;
        let mut r = Roster::new(reps.clone(), BTreeMap::new(), None);
        assert_eq!(
            default_route(&owned, &mut r, RouteTrigger::Sql),
            Decision::Owner(Uuid::from_u128(1))
        );
        // A senior owner keeps a strategic lead.
        owned.owner_id = Some(Uuid::from_u128(1));
        let mut r = Roster::new(reps.clone(), BTreeMap::new(), None);
        assert_eq!(
            default_route(&owned, &mut r, RouteTrigger::Sql),
            Decision::Keep
        );
        // An owner who left does not: the lead is routed as if new.
        let mut gone = rep(3);
        gone.active = false;
        let mut reps = reps;
        reps.push(gone);
        owned.owner_id = Some(Uuid::from_u128(3));
        owned.score.total = 65;
        let mut r = Roster::new(reps, BTreeMap::new(), None);
        assert_eq!(
            default_route(&owned, &mut r, RouteTrigger::Sql),
            Decision::Owner(Uuid::from_u128(1))
        );
    }

    #[test]
    fn least_loaded_prefers_the_emptiest_and_the_excluded_rep_is_skipped() {
        let mut busy = rep(1);
        busy.load = 5;
        let reps = vec![busy, rep(2), rep(3)];
        let r = Roster::new(reps.clone(), BTreeMap::new(), Some(Uuid::from_u128(2)));
        assert_eq!(r.least_loaded(&r.available()), Some(Uuid::from_u128(3)));
        assert!(!r.eligible(Uuid::from_u128(2)));
    }
}
