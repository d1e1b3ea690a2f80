//! Lead lists: turns filters, sort and visibility into range scans of `lead_index` (merging a
//! few when the caller sees several owners' leads), checks each candidate against the whole
//! filter, and pages with a cursor that is simply the last position seen.

use super::lead_index::{self, Field, SortKey, position, prefix};
use super::tables::{ACTIVITY_BY_LEAD, LEAD_INDEX, LEADS};
use super::{Snapshot, StoreError, StoreResult, get_record};
use crate::domain::activity::Activity;
use crate::domain::lead::{Lead, Stage, Status};
use crate::domain::time::Millis;
use std::collections::BinaryHeap;
use std::ops::Bound;
use uuid::Uuid;

/// Every filter of `GET /v1/leads`. All given filters must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadFilter {
    pub stage: Option<Stage>,
    pub status: Option<Status>,
    /// `Some(None)` asks for unowned leads.
    pub owner: Option<Option<Uuid>>,
    pub pool_id: Option<Uuid>,
    pub source: Option<String>,
    pub channel: Option<String>,
    pub campaign_id: Option<Uuid>,
    pub tag: Option<String>,
    pub min_score: Option<i32>,
    pub max_score: Option<i32>,
    pub created_after: Option<Millis>,
    pub created_before: Option<Millis>,
    pub updated_after: Option<Millis>,
}

impl LeadFilter {
    pub fn matches(&self, l: &Lead) -> bool {
        self.stage.is_none_or(|s| l.stage == s)
            && self.status.is_none_or(|s| l.status == s)
            && self.owner.is_none_or(|o| l.owner_id == o)
            && self.pool_id.is_none_or(|p| l.pool_id == Some(p))
            && self
                .source
                .as_ref()
                .is_none_or(|s| l.source.as_ref() == Some(s))
            && self
                .channel
                .as_ref()
                .is_none_or(|c| l.channel.as_ref() == Some(c))
            && self.campaign_id.is_none_or(|c| l.campaign_id == Some(c))
            && self.tag.as_ref().is_none_or(|t| l.tags.contains(t))
            && self.min_score.is_none_or(|m| l.score.total >= m)
            && self.max_score.is_none_or(|m| l.score.total <= m)
            && self.created_after.is_none_or(|t| l.created_at > t)
            && self.created_before.is_none_or(|t| l.created_at < t)
            && self.updated_after.is_none_or(|t| l.updated_at > t)
    }
}

/// Who is asking, as far as lists care.
#[derive(Debug, Clone, PartialEq)]
pub enum Visibility {
    All,
    /// Leads owned by one of these, plus unowned leads in a pool.
    Owners(Vec<Uuid>),
}

impl Visibility {
    pub fn allows(&self, l: &Lead) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Owners(o) => match l.owner_id {
                Some(owner) => o.contains(&owner),
                None => l.pool_id.is_some(),
            },
        }
    }
}

/// Where a list stands. Positions order a list: by sort value, then `tie`, then id. `tie` is
/// the creation time in a list by score that reads the stage-score rows (whose ties are in
/// creation order), and 0 in every other list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub sort: i64,
    pub tie: i64,
    pub id: u128,
}

impl Position {
    pub fn new(sort: i64, id: u128) -> Position {
        Position { sort, tie: 0, id }
    }

    /// 32 bytes, for a cursor.
    pub fn to_bytes(self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&self.sort.to_be_bytes());
        b[8..16].copy_from_slice(&self.tie.to_be_bytes());
        b[16..].copy_from_slice(&self.id.to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Position> {
        if b.len() != 32 {
            return None;
        }
        Some(Position {
            sort: i64::from_be_bytes(b[..8].try_into().ok()?),
            tie: i64::from_be_bytes(b[8..16].try_into().ok()?),
            id: u128::from_be_bytes(b[16..].try_into().ok()?),
        })
    }
}

#[derive(Debug, Clone)]
pub struct LeadQuery {
    pub filter: LeadFilter,
    pub sort: SortKey,
    pub descending: bool,
    pub limit: usize,
    /// Resume after this position.
    pub after: Option<Position>,
    pub visibility: Visibility,
    /// Most index entries examined for one page; a page that hits it ends early with a cursor.
    pub scan_budget: usize,
}

#[derive(Debug, Clone)]
pub struct LeadPage {
    pub items: Vec<Lead>,
    pub next: Option<Position>,
}

/// Most (stage, score) ranges a score range in creation order merges; a wider spread (a custom
/// rule set with very many point values) falls back to the per-stage ranges and the scan
/// budget.
const MAX_SCORE_RANGES: usize = 1_000;

/// Which index ranges a list reads; their union (before the residual check) holds every
/// matching lead.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// These prefixes, merged; a row's position is its sort value and id.
    Prefixes(Vec<Vec<u8>>),
    /// The stage-score rows of these stages with a score in `min..=max`, found by seeking
    /// from one score that some lead has to the next.
    Scores { stages: Vec<u8>, min: i32, max: i32 },
}

/// Every stage's rows for `sort`: every lead has exactly one stage, so their merge is all leads.
fn every_stage(sort: SortKey) -> Vec<Vec<u8>> {
    Stage::ALL
        .iter()
        .map(|s| prefix(Field::Stage, &[*s as u8], sort))
        .collect()
}

pub fn plan(q: &LeadQuery) -> Plan {
    let f = &q.filter;
    let sort = q.sort;
    let owner_prefix = |o: Option<Uuid>| prefix(Field::Owner, &lead_index::uuid_value(o), sort);
    // Of the unowned leads, a restricted caller sees only pooled ones: scan just those.
    let pooled = || prefix(Field::Pooled, &[], sort);
    let prefixes = match (&f.owner, &q.visibility) {
        (Some(Some(o)), Visibility::Owners(list)) if !list.contains(o) => vec![],
        (Some(None), Visibility::Owners(_)) => vec![pooled()],
        // Unowned: the leads placed nowhere and the pooled ones (which have no owner rows).
        (Some(None), Visibility::All) => vec![owner_prefix(None), pooled()],
        (Some(o), _) => vec![owner_prefix(*o)],
        (None, Visibility::Owners(list)) => {
            let mut v: Vec<Vec<u8>> = list.iter().map(|o| owner_prefix(Some(*o))).collect();
            v.push(pooled());
            v
        }
        (None, Visibility::All) => {
            let scores = || Plan::Scores {
                stages: match f.stage {
                    Some(s) => vec![s as u8],
                    None => Stage::ALL.iter().map(|s| *s as u8).collect(),
                },
                min: f.min_score.unwrap_or(i32::MIN),
                max: f.max_score.unwrap_or(i32::MAX),
            };
            let eq: Option<(Field, Vec<u8>)> = match sort {
                SortKey::Created => {
                    let specific = f
                        .campaign_id
                        .map(|c| (Field::Campaign, c.as_bytes().to_vec()))
                        .or_else(|| f.tag.as_ref().map(|t| (Field::Tag, t.as_bytes().to_vec())))
                        .or_else(|| f.pool_id.map(|p| (Field::Pool, p.as_bytes().to_vec())))
                        .or_else(|| {
                            f.source
                                .as_ref()
                                .map(|s| (Field::Source, s.as_bytes().to_vec()))
                        })
                        .or_else(|| {
                            f.channel
                                .as_ref()
                                .map(|c| (Field::Channel, c.as_bytes().to_vec()))
                        });
                    // A score bound is what such a list is about ("hot leads"); it narrows
                    // more than a status, which few values share among all leads.
                    if specific.is_none() && (f.min_score.is_some() || f.max_score.is_some()) {
                        return scores();
                    }
                    specific
                        .or_else(|| f.status.map(|s| (Field::Status, vec![s as u8])))
                        .or_else(|| f.stage.map(|s| (Field::Stage, vec![s as u8])))
                }
                SortKey::Score => return scores(),
                SortKey::Updated => f.stage.map(|s| (Field::Stage, vec![s as u8])),
            };
            match eq {
                Some((field, value)) => vec![prefix(field, &value, sort)],
                None => every_stage(sort),
            }
        }
    };
    Plan::Prefixes(prefixes)
}

/// The sort-value range implied by the filters: `[lo, hi]`, inclusive.
fn sort_bounds(q: &LeadQuery) -> (i64, i64) {
    let f = &q.filter;
    match q.sort {
        SortKey::Created => created_bounds(f),
        SortKey::Score => (
            f.min_score.map_or(i64::MIN, i64::from),
            f.max_score.map_or(i64::MAX, i64::from),
        ),
        SortKey::Updated => (
            f.updated_after.map_or(i64::MIN, |t| t.saturating_add(1)),
            i64::MAX,
        ),
    }
}

/// The creation window of the filters: `[lo, hi]`, inclusive.
fn created_bounds(f: &LeadFilter) -> (i64, i64) {
    (
        f.created_after.map_or(i64::MIN, |t| t.saturating_add(1)),
        f.created_before.map_or(i64::MAX, |t| t.saturating_sub(1)),
    )
}

type IndexTable = redb::ReadOnlyTable<&'static [u8], ()>;
type IndexRange<'a> = redb::Range<'a, &'static [u8], ()>;
/// A position, and whether it is a lead's: a walk by score also passes scores none of whose
/// leads is in the creation window, and each such score counts against the scan budget (a
/// rule set with very many distinct scores must not make one page seek through them all).
type Step = (Position, bool);
type PosIter<'a> = Box<dyn Iterator<Item = StoreResult<Step>> + 'a>;

/// The score some lead of `stage` has that comes first from `from` on, going up (or down, for
/// `descending`), within `bound`.
fn next_score(
    index: &IndexTable,
    stage: u8,
    from: i32,
    bound: i32,
    descending: bool,
) -> StoreResult<Option<i32>> {
    let row = if descending {
        index
            .range::<&[u8]>(..lead_index::stage_score_end(stage, from).as_slice())?
            .next_back()
    } else {
        index
            .range::<&[u8]>(lead_index::stage_score_prefix(stage, from).as_slice()..)?
            .next()
    };
    let Some(row) = row else { return Ok(None) };
    let found = match lead_index::stage_score_of(row?.0.value()) {
        Some((s, score)) if s == stage => score,
        _ => return Ok(None),
    };
    let within = if descending {
        found >= bound
    } else {
        found <= bound
    };
    Ok(within.then_some(found))
}

/// The scores in `min..=max` that some lead of `stage` has, lowest first; `None` when there
/// are more than `cap`.
fn scores_of_stage(
    index: &IndexTable,
    stage: u8,
    min: i32,
    max: i32,
    cap: usize,
) -> StoreResult<Option<Vec<i32>>> {
    let mut found = Vec::new();
    let mut from = min;
    while let Some(score) = next_score(index, stage, from, max, false)? {
        if found.len() == cap {
            return Ok(None);
        }
        found.push(score);
        match score.checked_add(1) {
            Some(n) => from = n,
            None => break,
        }
    }
    Ok(Some(found))
}

/// The keys of one prefix with sort values from `lo` to `hi` (inclusive; creation times for a
/// stage-score prefix), after `resume` `(sort value, id)` if given, in the list's direction.
fn prefix_range<'a>(
    index: &'a IndexTable,
    prefix: &[u8],
    (lo, hi): (i64, i64),
    resume: Option<(i64, u128)>,
    descending: bool,
) -> StoreResult<Option<IndexRange<'a>>> {
    let lo_key = lead_index::key(prefix, lo, 0);
    let hi_key = lead_index::key(prefix, hi, u128::MAX);
    let (start, end) = match (resume, descending) {
        (Some((s, id)), true) => (
            Bound::Included(lo_key),
            Bound::Excluded(lead_index::key(prefix, s, id)),
        ),
        (Some((s, id)), false) => (
            Bound::Excluded(lead_index::key(prefix, s, id)),
            Bound::Included(hi_key),
        ),
        (None, _) => (Bound::Included(lo_key), Bound::Included(hi_key)),
    };
    if !bounds_nonempty(&start, &end) {
        return Ok(None);
    }
    Ok(Some(index.range::<&[u8]>((
        start.as_ref().map(Vec::as_slice),
        end.as_ref().map(Vec::as_slice),
    ))?))
}

fn tail_of(
    row: Result<
        (
            redb::AccessGuard<'_, &'static [u8]>,
            redb::AccessGuard<'_, ()>,
        ),
        redb::StorageError,
    >,
) -> StoreResult<(i64, u128)> {
    let (k, _) = row?;
    position(k.value()).ok_or_else(|| StoreError::Storage("malformed lead index key".into()))
}

/// One stage's leads by score, each score's in creation order: the stage-score ranges of the
/// scores its leads have, one after the other, found as the list reaches them.
struct ScoreWalk<'a> {
    index: &'a IndexTable,
    stage: u8,
    descending: bool,
    /// The next score to look for, if any may be left.
    from: Option<i32>,
    /// The last score in the list's direction.
    bound: i32,
    created: (i64, i64),
    /// The cursor: within its score the walk starts after it.
    resume: Option<Position>,
    /// The score being read, its range, and whether it has given a lead yet.
    current: Option<(i32, IndexRange<'a>, bool)>,
}

impl ScoreWalk<'_> {
    /// Past every row of `score`, in the list's direction: where a score with no lead in the
    /// creation window leaves the walk.
    fn past(&self, score: i32) -> Position {
        let (tie, id) = if self.descending {
            (i64::MIN, 0)
        } else {
            (i64::MAX, u128::MAX)
        };
        Position {
            sort: i64::from(score),
            tie,
            id,
        }
    }

    fn step(&mut self) -> StoreResult<Option<Step>> {
        loop {
            if let Some((score, range, yielded)) = &mut self.current {
                let row = if self.descending {
                    range.next_back()
                } else {
                    range.next()
                };
                match row {
                    Some(row) => {
                        *yielded = true;
                        let (created, id) = tail_of(row)?;
                        let pos = Position {
                            sort: i64::from(*score),
                            tie: created,
                            id,
                        };
                        return Ok(Some((pos, true)));
                    }
                    None => {
                        let (score, yielded) = (*score, *yielded);
                        self.current = None;
                        if !yielded {
                            return Ok(Some((self.past(score), false)));
                        }
                    }
                }
            }
            let Some(from) = self.from else {
                return Ok(None);
            };
            let Some(score) =
                next_score(self.index, self.stage, from, self.bound, self.descending)?
            else {
                self.from = None;
                return Ok(None);
            };
            self.from = if self.descending {
                score.checked_sub(1)
            } else {
                score.checked_add(1)
            };
            let resume = self
                .resume
                .filter(|r| r.sort == i64::from(score))
                .map(|r| (r.tie, r.id));
            let p = lead_index::stage_score_prefix(self.stage, score);
            match prefix_range(self.index, &p, self.created, resume, self.descending)? {
                Some(range) => self.current = Some((score, range, false)),
                None => return Ok(Some((self.past(score), false))),
            }
        }
    }
}

impl Iterator for ScoreWalk<'_> {
    type Item = StoreResult<Step>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step().transpose()
    }
}

pub fn list_leads(snap: &Snapshot, q: &LeadQuery) -> StoreResult<LeadPage> {
    let index = snap.txn().open_table(LEAD_INDEX)?;
    let leads = snap.txn().open_table(LEADS)?;
    let mut streams: Vec<PosIter<'_>> = Vec::new();
    let prefixes = match plan(q) {
        Plan::Prefixes(p) => p,
        Plan::Scores { stages, min, max } if q.sort == SortKey::Score => {
            // Score order: walk each stage's scores, from the cursor's if it has one.
            let (first, bound) = if q.descending { (max, min) } else { (min, max) };
            let first = q
                .after
                .and_then(|a| i32::try_from(a.sort).ok())
                .filter(|s| {
                    if q.descending {
                        *s <= first
                    } else {
                        *s >= first
                    }
                })
                .unwrap_or(first);
            if min <= max {
                for stage in stages {
                    streams.push(Box::new(ScoreWalk {
                        index: &index,
                        stage,
                        descending: q.descending,
                        from: Some(first),
                        bound,
                        created: created_bounds(&q.filter),
                        resume: q.after,
                        current: None,
                    }));
                }
            }
            vec![]
        }
        Plan::Scores { stages, min, max } => {
            let mut found = Vec::new();
            for stage in &stages {
                let cap = MAX_SCORE_RANGES.saturating_sub(found.len());
                match scores_of_stage(&index, *stage, min, max, cap)? {
                    Some(scores) => found.extend(
                        scores
                            .into_iter()
                            .map(|s| lead_index::stage_score_prefix(*stage, s)),
                    ),
                    None => {
                        found = match stages.as_slice() {
                            [one] => vec![prefix(Field::Stage, &[*one], SortKey::Created)],
                            _ => every_stage(SortKey::Created),
                        };
                        break;
                    }
                }
            }
            found
        }
    };
    let bounds = sort_bounds(q);
    let resume = q.after.map(|a| (a.sort, a.id));
    for p in prefixes {
        if let Some(range) = prefix_range(&index, &p, bounds, resume, q.descending)? {
            let to_pos = |row| tail_of(row).map(|(sort, id)| (Position::new(sort, id), true));
            if q.descending {
                streams.push(Box::new(range.rev().map(to_pos)));
            } else {
                streams.push(Box::new(range.map(to_pos)));
            }
        }
    }
    // The next position of every stream, in a heap that pops the one the list shows next: a
    // score range may merge hundreds of streams.
    let mut heads = BinaryHeap::with_capacity(streams.len());
    for (stream, s) in streams.iter_mut().enumerate() {
        if let Some(step) = s.next().transpose()? {
            heads.push(Head::new(step, stream, q.descending));
        }
    }
    let mut items = Vec::new();
    let mut examined = 0usize;
    let mut last_seen: Option<Position> = None;
    while let Some(head) = heads.peek() {
        if items.len() >= q.limit || examined >= q.scan_budget {
            return Ok(LeadPage {
                items,
                next: last_seen,
            });
        }
        let (pos, is_lead, stream) = (head.pos, head.is_lead, head.stream);
        heads.pop();
        if let Some(next) = streams[stream].next().transpose()? {
            heads.push(Head::new(next, stream, q.descending));
        }
        examined += 1;
        last_seen = Some(pos);
        if is_lead
            && let Some(lead) = get_record::<Lead, _>(&leads, pos.id)?
            && q.filter.matches(&lead)
            && q.visibility.allows(&lead)
        {
            items.push(lead);
        }
    }
    Ok(LeadPage { items, next: None })
}

/// One stream's next position in a list's merge.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    pos: Position,
    is_lead: bool,
    descending: bool,
    stream: usize,
}

impl Head {
    fn new((pos, is_lead): Step, stream: usize, descending: bool) -> Head {
        Head {
            pos,
            is_lead,
            descending,
            stream,
        }
    }
}

impl Ord for Head {
    /// The max-heap pops the position the list shows next: the highest in a descending list,
    /// the lowest in an ascending one; on a tie, the first stream.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let by_pos = self.pos.cmp(&other.pos);
        let by_pos = if self.descending {
            by_pos
        } else {
            by_pos.reverse()
        };
        by_pos.then(other.stream.cmp(&self.stream))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn bounds_nonempty(start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    match (start, end) {
        (Bound::Included(a), Bound::Included(b)) => a <= b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => a < b,
        _ => true,
    }
}

/// Activities, and where the next page starts.
pub type ActivityPage = (Vec<Activity>, Option<(i64, u128)>);

/// A page of one lead's activities, newest first; `after` is the last `(occurred_at, id)` seen.
pub fn activities_page(
    snap: &Snapshot,
    lead: Uuid,
    after: Option<(i64, u128)>,
    limit: usize,
) -> StoreResult<ActivityPage> {
    let index = snap.txn().open_table(ACTIVITY_BY_LEAD)?;
    let table = snap.txn().open_table(super::tables::ACTIVITIES)?;
    let l = lead.as_u128();
    let lo = (l, i64::MIN, 0u128);
    let range = match after {
        Some((t, id)) => index.range(lo..(l, t, id))?,
        None => index.range(lo..=(l, i64::MAX, u128::MAX))?,
    };
    let mut out: Vec<Activity> = Vec::new();
    for row in range.rev() {
        let (k, _) = row?;
        if out.len() >= limit {
            let next = out.last().map(|a| (a.occurred_at, a.id.as_u128()));
            return Ok((out, next));
        }
        if let Some(a) = get_record(&table, k.value().2)? {
            out.push(a);
        }
    }
    Ok((out, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(filter: LeadFilter, sort: SortKey, vis: Visibility) -> LeadQuery {
        LeadQuery {
            filter,
            sort,
            descending: true,
            limit: 50,
            after: None,
            visibility: vis,
            scan_budget: 1000,
        }
    }

    #[test]
    fn admin_uses_the_most_selective_index_for_the_sort() {
        let f = LeadFilter {
            stage: Some(Stage::Mql),
            tag: Some("vip".into()),
            ..Default::default()
        };
        let p = plan(&q(f.clone(), SortKey::Created, Visibility::All));
        assert_eq!(
            p,
            Plan::Prefixes(vec![prefix(Field::Tag, b"vip", SortKey::Created)])
        );
        let p = plan(&q(f, SortKey::Score, Visibility::All));
        assert_eq!(
            p,
            Plan::Scores {
                stages: vec![Stage::Mql as u8],
                min: i32::MIN,
                max: i32::MAX
            }
        );
        let p = plan(&q(LeadFilter::default(), SortKey::Updated, Visibility::All));
        let stages: Vec<Vec<u8>> = Stage::ALL
            .iter()
            .map(|s| prefix(Field::Stage, &[*s as u8], SortKey::Updated))
            .collect();
        assert_eq!(
            p,
            Plan::Prefixes(stages),
            "all leads: every stage's rows, merged"
        );
    }

    #[test]
    fn a_score_range_in_creation_order_reads_the_score_rows() {
        let hot = LeadFilter {
            min_score: Some(60),
            stage: Some(Stage::Sql),
            ..Default::default()
        };
        assert_eq!(
            plan(&q(hot.clone(), SortKey::Created, Visibility::All)),
            Plan::Scores {
                stages: vec![Stage::Sql as u8],
                min: 60,
                max: i32::MAX
            }
        );
        let cold = LeadFilter {
            max_score: Some(0),
            ..Default::default()
        };
        assert_eq!(
            plan(&q(cold, SortKey::Created, Visibility::All)),
            Plan::Scores {
                stages: Stage::ALL.iter().map(|s| *s as u8).collect(),
                min: i32::MIN,
                max: 0
            }
        );
        // A value few leads share still goes first.
        let tagged = LeadFilter {
            tag: Some("vip".into()),
            ..hot.clone()
        };
        assert_eq!(
            plan(&q(tagged, SortKey::Created, Visibility::All)),
            Plan::Prefixes(vec![prefix(Field::Tag, b"vip", SortKey::Created)])
        );
        // Sorted by score, the same rows, walked score by score.
        assert_eq!(
            plan(&q(hot.clone(), SortKey::Score, Visibility::All)),
            plan(&q(hot.clone(), SortKey::Created, Visibility::All))
        );
        // A rep's list reads their own and the pool's rows.
        let me = Uuid::now_v7();
        let Plan::Prefixes(p) = plan(&q(hot, SortKey::Created, Visibility::Owners(vec![me])))
        else {
            panic!("a rep's list reads owner rows");
        };
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn restricted_callers_scan_only_their_owners_and_the_pool() {
        let me = Uuid::now_v7();
        let other = Uuid::now_v7();
        let vis = Visibility::Owners(vec![me]);
        assert_eq!(
            plan(&q(LeadFilter::default(), SortKey::Created, vis.clone())),
            Plan::Prefixes(vec![
                prefix(Field::Owner, me.as_bytes(), SortKey::Created),
                prefix(Field::Pooled, &[], SortKey::Created)
            ])
        );
        let f = LeadFilter {
            owner: Some(Some(other)),
            ..Default::default()
        };
        assert_eq!(plan(&q(f, SortKey::Created, vis)), Plan::Prefixes(vec![]));
    }

    /// A store holding leads with these scores, created one millisecond apart in this order.
    fn store_with_scores(scores: &[i32]) -> (redb::Database, Vec<Lead>) {
        let leads: Vec<Lead> = scores
            .iter()
            .enumerate()
            .map(|(i, score)| {
                let mut lead = crate::domain::lead::NewLead::default()
                    .into_lead(Uuid::from_u128(1000 + i as u128), 1_000 + i as i64);
                lead.score.total = *score;
                lead
            })
            .collect();
        (store_with(&leads), leads)
    }

    /// A store holding `leads` with their index rows.
    fn store_with(leads: &[Lead]) -> redb::Database {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory database");
        super::super::init_schema(&db).expect("a schema");
        let w = db.begin_write().expect("a write transaction");
        {
            let mut table = w.open_table(LEADS).expect("leads");
            let mut index = w.open_table(LEAD_INDEX).expect("the index");
            for lead in leads {
                table
                    .insert(
                        lead.id.as_u128(),
                        super::super::codec::encode(lead).as_slice(),
                    )
                    .expect("a lead");
                for row in lead_index::rows(lead) {
                    index.insert(row.as_slice(), ()).expect("a row");
                }
            }
        }
        w.commit().expect("a commit");
        db
    }

    #[test]
    fn the_unowned_are_the_leads_placed_nowhere_and_the_pooled_ones() {
        let (rep, pool) = (Uuid::from_u128(1), Uuid::from_u128(2));
        // Pooled, owned, placed nowhere, in turn; scores and update times out of creation order.
        let leads: Vec<Lead> = (0..30u128)
            .map(|i| {
                let mut lead = crate::domain::lead::NewLead::default()
                    .into_lead(Uuid::from_u128(1000 + i), 1_000 + i as i64);
                match i % 3 {
                    0 => lead.pool_id = Some(pool),
                    1 => lead.owner_id = Some(rep),
                    _ => {}
                }
                lead.score.total = (i * 7 % 11) as i32;
                lead.updated_at = 9_000 - (i * 13 % 17) as i64;
                lead
            })
            .collect();
        let db = store_with(&leads);
        let snap = snapshot(&db);
        let unowned = LeadFilter {
            owner: Some(None),
            ..Default::default()
        };
        assert_eq!(
            plan(&q(unowned.clone(), SortKey::Created, Visibility::All)),
            Plan::Prefixes(vec![
                prefix(Field::Owner, &[], SortKey::Created),
                prefix(Field::Pooled, &[], SortKey::Created)
            ])
        );
        for sort in [SortKey::Created, SortKey::Score, SortKey::Updated] {
            for (vis, kinds) in [
                (Visibility::All, [0u128, 2].as_slice()),
                (Visibility::Owners(vec![rep]), [0].as_slice()),
            ] {
                let mut want: Vec<&Lead> = leads
                    .iter()
                    .filter(|l| kinds.contains(&((l.id.as_u128() - 1000) % 3)))
                    .collect();
                want.sort_by_key(|l| (sort.value_of(l), l.id));
                want.reverse();
                let want: Vec<Uuid> = want.iter().map(|l| l.id).collect();
                let mut query = q(unowned.clone(), sort, vis.clone());
                query.limit = 4;
                assert_eq!(walk(&snap, query, |_| {}), want, "{sort:?} for {vis:?}");
            }
        }
    }

    fn snapshot(db: &redb::Database) -> Snapshot {
        use redb::ReadableDatabase;
        Snapshot {
            txn: db.begin_read().expect("a read transaction"),
        }
    }

    /// The ids of every page of `query` from where it starts, in order; `each` sees each page.
    fn walk(snap: &Snapshot, mut query: LeadQuery, mut each: impl FnMut(&LeadPage)) -> Vec<Uuid> {
        let mut walked = Vec::new();
        loop {
            let page = list_leads(snap, &query).expect("a page");
            each(&page);
            walked.extend(page.items.iter().map(|l| l.id));
            match page.next {
                Some(after) => query.after = Some(after),
                None => return walked,
            }
        }
    }

    #[test]
    fn hot_leads_newest_first_come_from_the_score_rows_not_a_scan() {
        // 2,000 cold leads and a few hot ones spread among them.
        let scores: Vec<i32> = (0..2_000)
            .map(|i| match i % 400 {
                7 => 75,
                99 => 60,
                300 => 61,
                _ => i % 3 * 5,
            })
            .collect();
        let (db, leads) = store_with_scores(&scores);
        let snap = snapshot(&db);
        let hot: Vec<Uuid> = leads
            .iter()
            .rev()
            .filter(|l| l.score.total >= 60)
            .map(|l| l.id)
            .collect();
        assert_eq!(hot.len(), 15);
        let mut query = q(
            LeadFilter {
                min_score: Some(60),
                ..Default::default()
            },
            SortKey::Created,
            Visibility::All,
        );
        // A budget far below the 2,000 leads: only the 15 hot ones are examined.
        query.scan_budget = 20;
        let page = list_leads(&snap, &query).expect("a page");
        let ids: Vec<Uuid> = page.items.iter().map(|l| l.id).collect();
        assert_eq!(ids, hot);
        assert_eq!(page.next, None);

        // Paged two at a time, oldest first, within a creation window and a closed range.
        query.descending = false;
        query.limit = 2;
        query.filter.max_score = Some(61);
        query.filter.created_after = Some(1_100);
        let want: Vec<Uuid> = leads
            .iter()
            .filter(|l| (60..=61).contains(&l.score.total) && l.created_at > 1_100)
            .map(|l| l.id)
            .collect();
        assert_eq!(walk(&snap, query, |_| {}), want);
    }

    #[test]
    fn score_ranges_are_found_by_seeking_and_capped() {
        let (db, _) = store_with_scores(&[-5, 0, 0, 10, 10, 10, 45, i32::MAX]);
        let snap = snapshot(&db);
        let index = snap.txn().open_table(LEAD_INDEX).expect("the index");
        let lead = Stage::Lead as u8;
        let scores = |min, max, cap| scores_of_stage(&index, lead, min, max, cap).expect("a read");
        assert_eq!(
            scores(i32::MIN, i32::MAX, 10),
            Some(vec![-5, 0, 10, 45, i32::MAX])
        );
        assert_eq!(scores(1, 45, 10), Some(vec![10, 45]));
        assert_eq!(scores(46, 100, 10), Some(vec![]));
        assert_eq!(scores(i32::MIN, i32::MAX, 4), None, "five scores, cap four");
        let other = scores_of_stage(&index, Stage::Mql as u8, i32::MIN, i32::MAX, 10);
        assert_eq!(other.expect("a read"), Some(vec![]), "no mql lead");
        let down = |from, bound| next_score(&index, lead, from, bound, true).expect("a read");
        assert_eq!(down(i32::MAX, i32::MIN), Some(i32::MAX));
        assert_eq!(down(44, i32::MIN), Some(10));
        assert_eq!(down(44, 11), None);
        assert_eq!(down(-6, i32::MIN), None);
    }

    #[test]
    fn by_score_ties_come_in_creation_order_and_a_creation_window_bounds_the_walk() {
        let scores: Vec<i32> = (0..300).map(|i| [0, 5, 10, 60][i % 4]).collect();
        let (db, leads) = store_with_scores(&scores);
        let snap = snapshot(&db);
        let mut query = q(
            LeadFilter {
                created_after: Some(1_000 + 199),
                ..Default::default()
            },
            SortKey::Score,
            Visibility::All,
        );
        query.scan_budget = 120;
        query.limit = 7;
        for descending in [true, false] {
            query.descending = descending;
            query.after = None;
            let mut want: Vec<&Lead> = leads.iter().filter(|l| l.created_at > 1_199).collect();
            want.sort_by_key(|l| (l.score.total, l.created_at, l.id));
            if descending {
                want.reverse();
            }
            let want: Vec<Uuid> = want.iter().map(|l| l.id).collect();
            // Only the window's 100 leads are read: every page is full but the last.
            let walked = walk(&snap, query.clone(), |page| {
                assert!(page.items.len() == 7 || page.next.is_none());
            });
            assert_eq!(walked, want, "descending: {descending}");
        }
    }

    #[test]
    fn scores_with_no_lead_in_the_window_count_against_the_budget_and_paging_goes_on() {
        // 300 distinct scores; only the 9 newest leads are in the window.
        let scores: Vec<i32> = (0..300).map(|i| 1_000 - i).collect();
        let (db, leads) = store_with_scores(&scores);
        let snap = snapshot(&db);
        let mut query = q(
            LeadFilter {
                created_after: Some(1_000 + 290),
                ..Default::default()
            },
            SortKey::Score,
            Visibility::All,
        );
        query.scan_budget = 20;
        let want: Vec<Uuid> = leads[291..].iter().map(|l| l.id).collect();
        let mut pages = 0;
        let walked = walk(&snap, query, |_| pages += 1);
        // Descending score is ascending age here: the newest leads have the lowest scores.
        assert_eq!(walked, want);
        assert!(pages >= 291 / 20, "the budget holds each page: {pages}");
    }

    #[test]
    fn a_position_round_trips_through_its_bytes() {
        let p = Position {
            sort: -3,
            tie: i64::MAX,
            id: 7,
        };
        assert_eq!(Position::from_bytes(&p.to_bytes()), Some(p));
        assert_eq!(Position::from_bytes(&p.to_bytes()[1..]), None);
    }
}
