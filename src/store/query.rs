//! Lead lists: turns filters, sort and visibility into range scans of `lead_index` (merging a
//! few when the caller sees several owners' leads), checks each candidate against the whole
//! filter, and pages with a cursor that is simply the last position seen.

use super::lead_index::{self, Field, SortKey, position, prefix};
use super::tables::{ACTIVITY_BY_LEAD, LEAD_INDEX, LEADS};
use super::{Snapshot, StoreError, StoreResult, get_record};
use crate::domain::activity::Activity;
use crate::domain::lead::{Lead, Stage, Status};
use crate::domain::time::Millis;
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

#[derive(Debug, Clone)]
pub struct LeadQuery {
    pub filter: LeadFilter,
    pub sort: SortKey,
    pub descending: bool,
    pub limit: usize,
    /// Resume after this position `(sort value, id)`.
    pub after: Option<(i64, u128)>,
    pub visibility: Visibility,
    /// Most index entries examined for one page; a page that hits it ends early with a cursor.
    pub scan_budget: usize,
}

#[derive(Debug, Clone)]
pub struct LeadPage {
    pub items: Vec<Lead>,
    pub next: Option<(i64, u128)>,
}

/// The index prefixes whose union (before the residual check) holds every matching lead.
pub fn plan(q: &LeadQuery) -> Vec<Vec<u8>> {
    let f = &q.filter;
    let sort = q.sort;
    let owner_prefix = |o: Option<Uuid>| prefix(Field::Owner, &lead_index::uuid_value(o), sort);
    // Of the unowned leads, a restricted caller sees only pooled ones: scan just those.
    let pooled = || prefix(Field::Pooled, &[], sort);
    match (&f.owner, &q.visibility) {
        (Some(Some(o)), Visibility::Owners(list)) if !list.contains(o) => vec![],
        (Some(None), Visibility::Owners(_)) => vec![pooled()],
        (Some(o), _) => vec![owner_prefix(*o)],
        (None, Visibility::Owners(list)) => {
            let mut v: Vec<Vec<u8>> = list.iter().map(|o| owner_prefix(Some(*o))).collect();
            v.push(pooled());
            v
        }
        (None, Visibility::All) => {
            let stage = f.stage.map(|s| [s as u8]);
            let eq: Option<(Field, Vec<u8>)> = match sort {
                SortKey::Created => f
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
                    })
                    .or_else(|| f.status.map(|s| (Field::Status, vec![s as u8])))
                    .or_else(|| stage.map(|s| (Field::Stage, s.to_vec()))),
                SortKey::Score | SortKey::Updated => stage.map(|s| (Field::Stage, s.to_vec())),
            };
            match eq {
                Some((field, value)) => vec![prefix(field, &value, sort)],
                // Every lead has exactly one stage: all leads are the merge of the six.
                None => Stage::ALL
                    .iter()
                    .map(|s| prefix(Field::Stage, &[*s as u8], sort))
                    .collect(),
            }
        }
    }
}

/// The sort-value range implied by the filters: `[lo, hi]`, inclusive.
fn sort_bounds(q: &LeadQuery) -> (i64, i64) {
    let f = &q.filter;
    match q.sort {
        SortKey::Created => (
            f.created_after.map_or(i64::MIN, |t| t.saturating_add(1)),
            f.created_before.map_or(i64::MAX, |t| t.saturating_sub(1)),
        ),
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

type PosIter<'a> = Box<dyn Iterator<Item = StoreResult<(i64, u128)>> + 'a>;

pub fn list_leads(snap: &Snapshot, q: &LeadQuery) -> StoreResult<LeadPage> {
    let index = snap.txn().open_table(LEAD_INDEX)?;
    let leads = snap.txn().open_table(LEADS)?;
    let (lo, hi) = sort_bounds(q);
    let mut streams: Vec<PosIter<'_>> = Vec::new();
    for p in plan(q) {
        let lo_key = lead_index::key(&p, lo, 0);
        let hi_key = lead_index::key(&p, hi, u128::MAX);
        let (start, end) = match (q.after, q.descending) {
            (Some((s, id)), true) => (
                Bound::Included(lo_key),
                Bound::Excluded(lead_index::key(&p, s, id)),
            ),
            (Some((s, id)), false) => (
                Bound::Excluded(lead_index::key(&p, s, id)),
                Bound::Included(hi_key),
            ),
            (None, _) => (Bound::Included(lo_key), Bound::Included(hi_key)),
        };
        if !bounds_nonempty(&start, &end) {
            continue;
        }
        let range = index.range::<&[u8]>((
            start.as_ref().map(Vec::as_slice),
            end.as_ref().map(Vec::as_slice),
        ))?;
        let to_pos = |r: Result<
            (
                redb::AccessGuard<'_, &'static [u8]>,
                redb::AccessGuard<'_, ()>,
            ),
            redb::StorageError,
        >|
         -> StoreResult<(i64, u128)> {
            let (k, _) = r?;
            position(k.value())
                .ok_or_else(|| StoreError::Storage("malformed lead index key".into()))
        };
        if q.descending {
            streams.push(Box::new(range.rev().map(to_pos)));
        } else {
            streams.push(Box::new(range.map(to_pos)));
        }
    }
    let mut heads: Vec<Option<(i64, u128)>> = Vec::with_capacity(streams.len());
    for s in streams.iter_mut() {
        heads.push(s.next().transpose()?);
    }
    let mut items = Vec::new();
    let mut examined = 0usize;
    let mut last_seen: Option<(i64, u128)> = None;
    loop {
        let pick = heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.map(|p| (i, p)))
            .reduce(|a, b| {
                let better = if q.descending { b.1 > a.1 } else { b.1 < a.1 };
                if better { b } else { a }
            });
        let Some((i, pos)) = pick else {
            return Ok(LeadPage { items, next: None });
        };
        if items.len() >= q.limit {
            return Ok(LeadPage {
                items,
                next: last_seen,
            });
        }
        if examined >= q.scan_budget {
            return Ok(LeadPage {
                items,
                next: last_seen,
            });
        }
        heads[i] = streams[i].next().transpose()?;
        examined += 1;
        last_seen = Some(pos);
        if let Some(lead) = get_record::<Lead, _>(&leads, pos.1)?
            && q.filter.matches(&lead)
            && q.visibility.allows(&lead)
        {
            items.push(lead);
        }
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
        assert_eq!(p, vec![prefix(Field::Tag, b"vip", SortKey::Created)]);
        let p = plan(&q(f, SortKey::Score, Visibility::All));
        assert_eq!(
            p,
            vec![prefix(Field::Stage, &[Stage::Mql as u8], SortKey::Score)]
        );
        let p = plan(&q(LeadFilter::default(), SortKey::Updated, Visibility::All));
        let stages: Vec<Vec<u8>> = Stage::ALL
            .iter()
            .map(|s| prefix(Field::Stage, &[*s as u8], SortKey::Updated))
            .collect();
        assert_eq!(p, stages, "all leads: every stage's rows, merged");
    }

    #[test]
    fn restricted_callers_scan_only_their_owners_and_the_pool() {
        let me = Uuid::now_v7();
        let other = Uuid::now_v7();
        let vis = Visibility::Owners(vec![me]);
        assert_eq!(
            plan(&q(LeadFilter::default(), SortKey::Created, vis.clone())).len(),
            2
        );
        let f = LeadFilter {
            owner: Some(Some(other)),
            ..Default::default()
        };
        assert!(plan(&q(f, SortKey::Created, vis)).is_empty());
    }
}
