//! Secondary-index keys for leads. Every list filter is an index: a key is
//! `field | value | sort | sort value | id`, so a filtered, sorted list is a range scan of one
//! prefix (or a merge of a few), never a scan of every lead. The rows of a lead are a pure
//! function of the lead, so an update deletes the rows that changed and inserts the new ones.
//!
//! There are no all-leads rows: a list of every lead merges the six per-stage ranges. Such rows
//! would be a third more rows to move on every score or update change, for lists that a merge of
//! six ranges serves as well.
//!
//! Score order goes through `Field::StageScore`: one row per lead under its stage and score,
//! sorted by creation. A list by score walks the scores some lead has, one range each (so
//! ties are in creation order); a score range in creation order ("hot leads, newest first")
//! merges the ranges of the scores in it. Either way only leads with a score in the range are
//! read, whatever the creation window.

use crate::domain::lead::Lead;
use uuid::Uuid;

/// Which lead field an index row is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    /// Format 1's all-leads rows; opening such a store removes them (see `store::init_schema`).
    AllBeforeFormat2 = 0,
    Stage = 1,
    Owner = 2,
    Status = 3,
    Pool = 4,
    Source = 5,
    Channel = 6,
    Campaign = 7,
    Tag = 8,
    /// Unowned leads waiting in a pool: what reps and managers see besides their own. Such a
    /// lead has these rows instead of `Owner` rows (since format 4), so the unowned leads are
    /// the `Owner` rows with no owner (leads not placed anywhere) and these, merged.
    Pooled = 9,
    /// Stage and score total (`stage_score`), sorted by creation only. Since format 3; it
    /// replaced the stage rows sorted by score.
    StageScore = 10,
}

/// The order an index row sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SortKey {
    Created = 0,
    Score = 1,
    Updated = 2,
}

impl SortKey {
    pub fn value_of(self, lead: &Lead) -> i64 {
        match self {
            SortKey::Created => lead.created_at,
            SortKey::Score => i64::from(lead.score.total),
            SortKey::Updated => lead.updated_at,
        }
    }
}

/// Maps an i64 to bytes whose lexicographic order is numeric order.
pub fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_ordered_i64(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// A `Field::StageScore` value: the stage, then the score total in bytes whose order is
/// numeric order.
pub fn stage_score(stage: u8, total: i32) -> [u8; 5] {
    let [a, b, c, d] = ((total as u32) ^ (1 << 31)).to_be_bytes();
    [stage, a, b, c, d]
}

/// The prefix of one stage's rows with one score.
pub fn stage_score_prefix(stage: u8, total: i32) -> Vec<u8> {
    prefix(
        Field::StageScore,
        &stage_score(stage, total),
        SortKey::Created,
    )
}

/// A key above every row of `stage_score_prefix(stage, total)` and below the next score's.
pub fn stage_score_end(stage: u8, total: i32) -> Vec<u8> {
    prefix_end(&stage_score_prefix(stage, total))
}

/// A key above every row of `prefix` and below any row that does not start with it: a
/// prefix ends with its sort byte, so the same prefix with the next sort byte bounds it.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    if let Some(sort) = k.last_mut() {
        *sort += 1;
    }
    k
}

/// Stage and score total of a `Field::StageScore` row or prefix, if `key` is one.
pub fn stage_score_of(key: &[u8]) -> Option<(u8, i32)> {
    if key.first() != Some(&(Field::StageScore as u8)) || key.get(1..3) != Some(&[0, 5]) {
        return None;
    }
    let stage = *key.get(3)?;
    let b: [u8; 4] = key.get(4..8)?.try_into().ok()?;
    Some((stage, (u32::from_be_bytes(b) ^ (1 << 31)) as i32))
}

/// `field | len(value) | value | sort`: the prefix every row of one (field, value, sort) shares.
pub fn prefix(field: Field, value: &[u8], sort: SortKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + value.len() + 24);
    push_prefix(&mut k, field, value, sort);
    k
}

fn push_prefix(k: &mut Vec<u8>, field: Field, value: &[u8], sort: SortKey) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    k.push(field as u8);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(&value[..usize::from(len)]);
    k.push(sort as u8);
}

/// A full key: prefix, then the position `(sort value, id)`.
pub fn key(prefix: &[u8], sort_value: i64, id: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 24);
    k.extend_from_slice(prefix);
    push_position(&mut k, sort_value, id);
    k
}

fn push_position(k: &mut Vec<u8>, sort_value: i64, id: u128) {
    k.extend_from_slice(&ordered_i64(sort_value));
    k.extend_from_slice(&id.to_be_bytes());
}

/// `key(&prefix(field, value, sort), sort_value, id)` in one allocation: a lead's rows are
/// built on every write of it.
fn row(field: Field, value: &[u8], sort: SortKey, sort_value: i64, id: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + value.len() + 24);
    push_prefix(&mut k, field, value, sort);
    push_position(&mut k, sort_value, id);
    k
}

/// The position `(sort value, id)` at the end of a key.
pub fn position(key: &[u8]) -> Option<(i64, u128)> {
    let n = key.len();
    if n < 24 {
        return None;
    }
    let sort: [u8; 8] = key[n - 24..n - 16].try_into().ok()?;
    let id: [u8; 16] = key[n - 16..].try_into().ok()?;
    Some((from_ordered_i64(sort), u128::from_be_bytes(id)))
}

pub fn uuid_value(id: Option<Uuid>) -> Vec<u8> {
    id.map(|u| u.as_bytes().to_vec()).unwrap_or_default()
}

/// Whether `lead` waits in a pool with no owner: it has `Field::Pooled` rows instead of
/// `Field::Owner` ones (since format 4).
pub fn is_pooled(lead: &Lead) -> bool {
    lead.owner_id.is_none() && lead.pool_id.is_some()
}

/// Every index row a lead has.
pub fn rows(lead: &Lead) -> Vec<Vec<u8>> {
    let id = lead.id.as_u128();
    let mut out = Vec::with_capacity(16);
    let all_sorts = [SortKey::Created, SortKey::Score, SortKey::Updated];
    let stage = [lead.stage as u8];
    let owner = uuid_value(lead.owner_id);
    for sort in all_sorts {
        let v = sort.value_of(lead);
        if sort != SortKey::Score {
            out.push(row(Field::Stage, &stage, sort, v, id));
        }
        // An unowned lead in a pool is listed under the pool's rows only: the unowned list
        // merges them with the unplaced leads' owner rows (see `store::query::plan`).
        if is_pooled(lead) {
            out.push(row(Field::Pooled, &[], sort, v, id));
        } else {
            out.push(row(Field::Owner, &owner, sort, v, id));
        }
    }
    let created = lead.created_at;
    let mut created_row = |field: Field, value: &[u8]| {
        out.push(row(field, value, SortKey::Created, created, id));
    };
    created_row(Field::Status, &[lead.status as u8]);
    created_row(
        Field::StageScore,
        &stage_score(lead.stage as u8, lead.score.total),
    );
    if let Some(pool) = lead.pool_id {
        created_row(Field::Pool, pool.as_bytes());
    }
    if let Some(source) = &lead.source {
        created_row(Field::Source, source.as_bytes());
    }
    if let Some(channel) = &lead.channel {
        created_row(Field::Channel, channel.as_bytes());
    }
    if let Some(campaign) = lead.campaign_id {
        created_row(Field::Campaign, campaign.as_bytes());
    }
    for tag in &lead.tags {
        created_row(Field::Tag, tag.as_bytes());
    }
    out
}

/// Rows to delete and rows to insert when a lead changes from `old` to `new`.
pub fn diff(old: Option<&Lead>, new: Option<&Lead>) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let old_rows = old.map(rows).unwrap_or_default();
    let new_rows = new.map(rows).unwrap_or_default();
    let removed = old_rows
        .iter()
        .filter(|r| !new_rows.contains(r))
        .cloned()
        .collect();
    let added = new_rows
        .iter()
        .filter(|r| !old_rows.contains(r))
        .cloned()
        .collect();
    (removed, added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lead::{NewLead, Stage};

    fn lead() -> Lead {
        NewLead {
            name: Some("a".into()),
            source: Some("web".into()),
            tags: vec!["x".into(), "y".into()],
            ..Default::default()
        }
        .into_lead(Uuid::now_v7(), 1_700_000_000_000)
    }

    #[test]
    fn ordered_i64_sorts_numerically() {
        let vals = [i64::MIN, -5, -1, 0, 1, 80, i64::MAX];
        for w in vals.windows(2) {
            assert!(ordered_i64(w[0]) < ordered_i64(w[1]));
            assert_eq!(from_ordered_i64(ordered_i64(w[0])), w[0]);
        }
    }

    #[test]
    fn a_row_is_its_prefix_then_its_position() {
        let value = Uuid::from_u128(9);
        assert_eq!(
            row(Field::Owner, value.as_bytes(), SortKey::Score, 42, 7),
            key(
                &prefix(Field::Owner, value.as_bytes(), SortKey::Score),
                42,
                7
            )
        );
    }

    #[test]
    fn position_round_trips() {
        let p = prefix(Field::Tag, b"vip", SortKey::Created);
        let k = key(&p, -42, 7);
        assert!(k.starts_with(&p));
        assert_eq!(position(&k), Some((-42, 7)));
    }

    #[test]
    fn rows_cover_every_filter_and_diff_is_minimal() {
        let a = lead();
        let r = rows(&a);
        // 3 sorts × owner + 2 sorts × stage + stage-score + status + source + 2 tags
        assert_eq!(r.len(), 3 + 2 + 1 + 1 + 1 + 2);
        assert!(
            r.iter().all(|row| row[0] != Field::AllBeforeFormat2 as u8),
            "no all-leads rows"
        );
        let mut pooled = a.clone();
        pooled.pool_id = Some(Uuid::now_v7());
        // 3 sorts × pooled instead of owner, + the pool itself
        let pooled_rows = rows(&pooled);
        assert_eq!(pooled_rows.len(), r.len() + 1);
        assert!(
            pooled_rows.iter().all(|row| row[0] != Field::Owner as u8),
            "a pooled lead is listed by its pool rows, not as unowned twice"
        );
        let mut owned = pooled.clone();
        owned.owner_id = Some(Uuid::now_v7());
        let (removed, added) = diff(Some(&pooled), Some(&owned));
        assert!(removed.iter().all(|row| row[0] == Field::Pooled as u8));
        assert!(added.iter().all(|row| row[0] == Field::Owner as u8));
        assert_eq!(
            (removed.len(), added.len()),
            (3, 3),
            "claimed: pool rows become owner rows"
        );
        let mut b = a.clone();
        b.stage = Stage::Mql;
        let (removed, added) = diff(Some(&a), Some(&b));
        assert_eq!(removed.len(), 3);
        assert_eq!(added.len(), 3);
        let (removed, added) = diff(Some(&a), None);
        assert_eq!((removed.len(), added.len()), (r.len(), 0));
    }

    #[test]
    fn stage_scores_sort_numerically_and_read_back() {
        let vals = [i32::MIN, -20, -1, 0, 1, 40, i32::MAX];
        for w in vals.windows(2) {
            assert!(stage_score(1, w[0]) < stage_score(1, w[1]));
            assert!(stage_score_end(1, w[0]) <= stage_score_prefix(1, w[1]));
        }
        assert!(stage_score(1, i32::MAX) < stage_score(2, i32::MIN));
        for v in vals {
            let p = stage_score_prefix(3, v);
            assert_eq!(stage_score_of(&p), Some((3, v)));
            let k = key(&p, 5, 7);
            assert_eq!(stage_score_of(&k), Some((3, v)));
            assert!(p.as_slice() < k.as_slice() && k < stage_score_end(3, v));
        }
        assert_eq!(
            stage_score_of(&prefix(Field::Tag, b"abcde", SortKey::Created)),
            None
        );
        assert_eq!(stage_score_of(&[Field::StageScore as u8, 0]), None);
    }

    #[test]
    fn a_score_change_moves_the_rows_sorted_by_score() {
        let a = lead();
        let mut b = a.clone();
        b.score.total = 45;
        let (removed, added) = diff(Some(&a), Some(&b));
        // the owner row sorted by score, and the stage-score row
        assert_eq!((removed.len(), added.len()), (2, 2));
        assert!(added.contains(&key(
            &stage_score_prefix(a.stage as u8, 45),
            a.created_at,
            a.id.as_u128()
        )));
    }

    #[test]
    fn prefixes_of_different_values_do_not_overlap() {
        // A value that is a prefix of another must not make its rows a prefix of the other's.
        let short = prefix(Field::Tag, b"ab", SortKey::Created);
        let long = prefix(Field::Tag, b"abc", SortKey::Created);
        assert!(!long.starts_with(&short));
    }
}
