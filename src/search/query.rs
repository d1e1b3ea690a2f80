//! Searching: a user's words become a tantivy query (exact terms, CJK bigrams, type-ahead
//! prefixes and one-typo matches ranked after exact ones, emails and phones); the filters and the
//! caller's visibility are checked on fast fields; results are ranked by relevance, with the lead
//! score as tie-break when few documents match, with capped counts, facets and highlighted
//! snippets.
//!
//! Why the counts are capped: a query's cost must not grow with the number of its matches, or
//! a common word ("pricing" in a million call notes) takes tens of milliseconds. Matches are
//! counted, with their facets, up to [`COUNT_LIMIT`]. Up to there the ranking is exhaustive and
//! exact. Past it the count stops, and the page comes from a top-k pass whose block-max pruning
//! skips whatever cannot reach the page, so equally relevant documents keep index order.

use super::index::{SearchIndex, SearchResult, visibility_key};
use super::tokenizer::{self, QueryGroup};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::Arc;
use tantivy::columnar::{ColumnValues, StrColumn};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, DisjunctionMaxQuery, EmptyQuery,
    EnableScoring, FuzzyTermQuery, Occur, Query, TermQuery, TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{
    DocAddress, DocId, DocSet, Score, Searcher, SegmentReader, TERMINATED, TantivyDocument, Term,
};
use uuid::Uuid;

/// Matches are counted (with their facets) up to this many unless the request says otherwise
/// (`search.count_limit`); past it `total` stops there and is flagged inexact, and the ranking
/// no longer visits every match.
pub const COUNT_LIMIT: usize = 1_000;
/// Latin words at least this long also match with one typo.
const FUZZY_MIN_CHARS: usize = 5;
/// Dictionary words a prefix or a typo expands to, at most per field (the most frequent).
const MAX_EXPANSIONS: usize = 32;
/// Combinations of the words' alternatives (fields, typos) ranked one by one at most; past
/// it, one query that is not pruned.
const MAX_COMBINATIONS: usize = 16;
/// Relevance this close (relative) to the page's last counts as a tie while pruning.
const TIE_TOLERANCE: Score = 1e-6;
/// Terms one union holds at most; more are ranked one by one.
const MAX_UNION_TERMS: usize = 8;
/// Terms one conjunction holds at most (a long CJK run has many bigrams).
const MAX_CONJUNCTION_TERMS: usize = 24;
/// A keyword filter narrows the documents visited (as a posting list intersected with the
/// text's) only when fewer than one document in this many passes it.
const SELECTIVE_FILTER: u64 = 8;
/// Dictionary words looked at per segment and field while expanding.
const EXPANSION_SCAN: usize = 4_096;

/// What to look for and among what.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub q: String,
    /// "lead", "activity", or None for both.
    pub doc_type: Option<&'static str>,
    pub stage: Option<String>,
    pub status: Option<String>,
    pub channel: Option<String>,
    /// Some(None): unowned.
    pub owner: Option<Option<Uuid>>,
    pub pool: Option<Uuid>,
    pub min_score: Option<i64>,
    pub max_score: Option<i64>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    /// The owners whose leads the caller sees (pooled leads too); None: everything.
    pub visible_owners: Option<Vec<Uuid>>,
    pub offset: usize,
    pub limit: usize,
    /// Matches counted at most; None: [`COUNT_LIMIT`].
    pub count_limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub doc_type: String,
    pub id: String,
    pub lead_id: String,
    pub relevance: Score,
    pub lead_score: i64,
    /// HTML: what matched in `<b>`, with a few words around; escaped.
    pub snippet: String,
}

#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub hits: Vec<Hit>,
    /// All matches, beyond this page; at most [`COUNT_LIMIT`] unless `total_exact`.
    pub total: usize,
    /// False when more than [`COUNT_LIMIT`] documents match: `total` is then a lower bound and
    /// the facets count only the first [`COUNT_LIMIT`] matches in index order.
    pub total_exact: bool,
    pub facets: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub next_offset: Option<usize>,
}

type Counts = BTreeMap<String, u64>;

fn fuzzy_eligible(w: &str) -> bool {
    w.chars().count() >= FUZZY_MIN_CHARS && w.chars().all(|c| c.is_ascii_alphabetic())
}

fn boxed(q: impl Query + 'static) -> Box<dyn Query> {
    Box::new(q)
}

/// A term of a query and the weight of its BM25 score.
#[derive(Debug, Clone)]
struct WeightedTerm {
    term: Term,
    boost: Score,
    /// Its inverse document frequency; None when it was not looked up (an expansion).
    idf: Option<Score>,
}

/// Terms that must all occur in one field: one word, or the bigrams of a CJK word.
#[derive(Debug, Clone)]
struct Alt {
    terms: Vec<WeightedTerm>,
}

impl Alt {
    fn one(term: Term, boost: Score, idf: Option<Score>) -> Alt {
        Alt {
            terms: vec![WeightedTerm { term, boost, idf }],
        }
    }

    /// The bigrams of a CJK word, with their idfs.
    fn all(terms: Vec<(Term, Score)>, boost: Score) -> Alt {
        Alt {
            terms: terms
                .into_iter()
                .map(|(term, idf)| WeightedTerm {
                    term,
                    boost,
                    idf: Some(idf),
                })
                .collect(),
        }
    }
}

/// Each term, scored and boosted. Frequencies are read so that a union or an intersection of
/// plain terms can use block-max pruning.
fn term_queries<'a>(
    terms: impl IntoIterator<Item = &'a WeightedTerm>,
) -> Vec<(Score, Box<dyn Query>)> {
    terms
        .into_iter()
        .map(|t| {
            let q = TermQuery::new(t.term.clone(), IndexRecordOption::WithFreqs);
            (t.boost, boxed(BoostQuery::new(boxed(q), t.boost)))
        })
        .collect()
}

/// Documents in the index, deleted ones included, as BM25 counts them.
fn total_docs(searcher: &Searcher) -> u64 {
    searcher
        .segment_readers()
        .iter()
        .map(|s| u64::from(s.max_doc()))
        .sum()
}

/// BM25's inverse document frequency, as tantivy computes it.
fn idf(doc_freq: u64, total_docs: u64) -> Score {
    let x = (total_docs.saturating_sub(doc_freq) as Score + 0.5) / (doc_freq as Score + 0.5);
    (1.0 + x).ln()
}

/// The terms of a conjunction reweighted so that, in each field, the rarest term carries the
/// weight of all of them (its boost becomes the sum of their boost × idf over its own idf) and
/// the others only have to be there (boost 0).
///
/// Why: common words come together (采购经理's bigrams are in 100,000 job titles, 上海 and MES
/// in 15,000 notes), and when each scores, block-max pruning of their intersection is loose: a
/// block's best 经理 is a shorter title than its best 采购经理, a block's best MES a shorter
/// English note. Every match is then visited (2–3 ms). Scored through one term, the bound is
/// that term's own block maximum, which is exact, and whole blocks are skipped.
///
/// What it costs: where each term occurs once in the document, which in names, titles and
/// notes is nearly always, the score is exactly BM25's sum, because BM25's length and
/// frequency factor is shared by the terms of one field and the weights add up their idfs.
/// Where a term other than the rarest occurs more than once, that repetition adds nothing.
/// Terms in different fields, and expansions (whose idf is not looked up), are left as they
/// are.
fn scored_through_rarest(mut terms: Vec<WeightedTerm>) -> Vec<WeightedTerm> {
    let mut fields: Vec<u32> = terms
        .iter()
        .filter(|t| t.idf.is_some())
        .map(|t| t.term.field().field_id())
        .collect();
    fields.sort_unstable();
    fields.dedup();
    for field in fields {
        let members: Vec<(usize, Score)> = terms
            .iter()
            .enumerate()
            .filter(|(_, t)| t.term.field().field_id() == field)
            .filter_map(|(i, t)| t.idf.map(|idf| (i, idf)))
            .collect();
        let Some(&(rarest, rarest_idf)) = members.iter().max_by(|a, b| a.1.total_cmp(&b.1)) else {
            continue;
        };
        if members.len() < 2 || rarest_idf <= 0.0 {
            continue;
        }
        let mass: Score = members.iter().map(|&(i, idf)| terms[i].boost * idf).sum();
        for &(i, _) in &members {
            terms[i].boost = if i == rarest { mass / rarest_idf } else { 0.0 };
        }
    }
    terms
}

/// Any of `queries`: a union. A lone clause gets a partner that matches nothing, because
/// tantivy turns a lone should clause into a must clause, and a lone must term is not pruned.
fn union(mut queries: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    if queries.len() == 1 {
        queries.push(boxed(EmptyQuery));
    }
    boxed(BooleanQuery::new(
        queries.into_iter().map(|q| (Occur::Should, q)).collect(),
    ))
}

/// All of `alts`' terms, scored through the rarest of each field ([`scored_through_rarest`]).
/// Past [`MAX_CONJUNCTION_TERMS`] the unscored terms go first: the scored ones carry the
/// ranking.
fn conjunction(alts: &[&Alt]) -> Box<dyn Query> {
    let weighted = scored_through_rarest(alts.iter().flat_map(|a| a.terms.clone()).collect());
    let mut terms = term_queries(&weighted);
    if terms.len() > MAX_CONJUNCTION_TERMS {
        terms.sort_by_key(|(weight, _)| *weight == 0.0);
        terms.truncate(MAX_CONJUNCTION_TERMS);
    }
    if terms.len() == 1 {
        union(terms.into_iter().map(|(_, q)| q).collect())
    } else {
        // Plain terms only: tantivy ranks it with its block-max intersection.
        boxed(BooleanQuery::new(
            terms.into_iter().map(|(_, q)| (Occur::Must, q)).collect(),
        ))
    }
}

/// Any of `alts`' terms, each scored with its own weight.
fn union_of(alts: &[&Alt]) -> Box<dyn Query> {
    union(
        term_queries(alts.iter().flat_map(|a| &a.terms))
            .into_iter()
            .map(|(_, q)| q)
            .collect(),
    )
}

/// How the user's words are looked for.
enum Plan {
    /// Nothing in the index can match.
    Nothing,
    /// One query: a union of plain terms (their scores add up) or one conjunction; tantivy
    /// prunes either with block-max.
    Single(Box<dyn Query>),
    /// The best of several conjunctions: a document is as relevant as the best one it matches.
    /// Each conjunction is pruned on its own and their best pages are merged, which gives
    /// exactly the best page of the whole.
    BestOf(Vec<Box<dyn Query>>),
}

impl Plan {
    /// Every group matches (in one of its alternatives), or one of the `whole` alternatives
    /// does (the input as an email or a phone number). `activity` is the one text field that
    /// only activities have.
    fn of(groups: &[Vec<Alt>], whole: &[Alt], activity: Field) -> Plan {
        let groups_can_match = !groups.is_empty() && groups.iter().all(|g| !g.is_empty());
        let single_terms = |alts: &[Alt]| alts.iter().all(|a| a.terms.len() == 1);
        if groups.len() <= 1 && single_terms(whole) {
            let mut terms: Vec<&Alt> = whole.iter().collect();
            if groups_can_match && single_terms(&groups[0]) {
                terms.extend(&groups[0]);
            } else if groups_can_match {
                // One CJK word in several fields: the best of the fields and the whole.
                let mut best: Vec<Box<dyn Query>> =
                    groups[0].iter().map(|a| conjunction(&[a])).collect();
                best.extend(whole.iter().map(|a| conjunction(&[a])));
                return Plan::best_of(best);
            }
            if terms.len() > MAX_UNION_TERMS {
                // Many words (a prefix or a typo expanded), mostly in different documents: a
                // union of them prunes badly, each alone prunes well.
                return Plan::best_of(terms.into_iter().map(|a| conjunction(&[a])).collect());
            }
            if terms.is_empty() {
                return Plan::Nothing;
            }
            let (in_activities, in_leads): (Vec<&Alt>, Vec<&Alt>) = terms
                .iter()
                .partition(|a| a.terms.iter().all(|t| t.term.field() == activity));
            if !in_activities.is_empty() && !in_leads.is_empty() {
                // A lead and an activity are different documents, so each document of the
                // union matches one side only and the union's best page is the better of the
                // two sides' pages. Apart, each side is pruned by skipping whole blocks; as
                // one union, tantivy decodes every block of both to step between them.
                return Plan::best_of(vec![union_of(&in_leads), union_of(&in_activities)]);
            }
            return Plan::Single(union_of(&terms));
        }
        let mut best: Vec<Box<dyn Query>> = Vec::new();
        if groups_can_match {
            let combinations: usize = groups.iter().map(Vec::len).product();
            if combinations > MAX_COMBINATIONS {
                // Words in many fields each: one nested query, not pruned.
                let all: Vec<(Occur, Box<dyn Query>)> = groups
                    .iter()
                    .map(|g| {
                        let alts: Vec<Box<dyn Query>> =
                            g.iter().map(|a| conjunction(&[a])).collect();
                        (Occur::Must, boxed(DisjunctionMaxQuery::new(alts)))
                    })
                    .collect();
                best.push(boxed(BooleanQuery::new(all)));
            } else {
                // One alternative per group, in every combination.
                let mut picks: Vec<Vec<&Alt>> = vec![Vec::new()];
                for g in groups {
                    picks = picks
                        .into_iter()
                        .flat_map(|p| {
                            g.iter().map(move |a| {
                                let mut p = p.clone();
                                p.push(a);
                                p
                            })
                        })
                        .collect();
                }
                best.extend(picks.iter().map(|p| conjunction(p)));
            }
        }
        best.extend(whole.iter().map(|a| conjunction(&[a])));
        Plan::best_of(best)
    }

    fn best_of(mut queries: Vec<Box<dyn Query>>) -> Plan {
        match queries.len() {
            0 => Plan::Nothing,
            1 => Plan::Single(queries.remove(0)),
            _ => Plan::BestOf(queries),
        }
    }

    /// The whole plan as one query, for counting and snippets; it scores as the plan ranks.
    fn query(&self) -> Option<Box<dyn Query>> {
        match self {
            Plan::Nothing => None,
            Plan::Single(q) => Some(q.box_clone()),
            Plan::BestOf(qs) => Some(boxed(DisjunctionMaxQuery::new(
                qs.iter().map(|q| q.box_clone()).collect(),
            ))),
        }
    }

    /// The queries whose best pages make the plan's best page.
    fn parts(&self) -> Vec<&dyn Query> {
        match self {
            Plan::Nothing => Vec::new(),
            Plan::Single(q) => vec![q.as_ref()],
            Plan::BestOf(qs) => qs.iter().map(|q| q.as_ref()).collect(),
        }
    }
}

/// A filter on a keyword fast field: the values a document may have.
struct KeywordFilter {
    field: &'static str,
    values: Vec<String>,
}

/// The filters of a request, checked per document on fast fields.
struct Filters {
    keywords: Vec<KeywordFilter>,
    ranges: Vec<(&'static str, i64, i64)>,
}

impl Filters {
    fn of(r: &SearchRequest) -> Filters {
        let mut keywords = Vec::new();
        let mut one = |field: &'static str, v: String| {
            keywords.push(KeywordFilter {
                field,
                values: vec![v],
            })
        };
        if let Some(t) = r.doc_type {
            one("doc_type", t.to_owned());
        }
        if let Some(s) = &r.stage {
            one("stage", s.clone());
        }
        if let Some(s) = &r.status {
            one("status", s.clone());
        }
        if let Some(c) = &r.channel {
            one("channel", c.clone());
        }
        if let Some(o) = &r.owner {
            one(
                "owner",
                o.map_or_else(|| "none".to_owned(), |o| o.to_string()),
            );
        }
        if let Some(p) = &r.pool {
            one("pool", p.to_string());
        }
        if let Some(owners) = &r.visible_owners {
            // Visibility is a filter like the others, so counts and facets never include the
            // unseen.
            keywords.push(KeywordFilter {
                field: "visibility",
                values: owners
                    .iter()
                    .map(|o| visibility_key(Some(*o), None))
                    .chain(std::iter::once("pooled".to_owned()))
                    .collect(),
            });
        }
        let mut ranges = Vec::new();
        if r.min_score.is_some() || r.max_score.is_some() {
            ranges.push((
                "score",
                r.min_score.unwrap_or(i64::MIN),
                r.max_score.unwrap_or(i64::MAX),
            ));
        }
        if r.created_after.is_some() || r.created_before.is_some() {
            ranges.push((
                "created_at",
                r.created_after.unwrap_or(i64::MIN),
                r.created_before.unwrap_or(i64::MAX),
            ));
        }
        Filters { keywords, ranges }
    }

    /// The keyword filters as query clauses, so that a selective filter narrows the documents
    /// visited (its posting list is intersected with the text's). They score nothing.
    ///
    /// Only selective ones: a filter most documents pass (`type=activity`, a rep who sees most
    /// leads) would cost a seek in its long posting list for every match and narrow nothing, so
    /// it is only checked on its column, as every filter is.
    fn clauses(
        &self,
        fields: &super::index::Fields,
        searcher: &Searcher,
    ) -> SearchResult<Vec<(Occur, Box<dyn Query>)>> {
        let total = total_docs(searcher);
        let mut clauses = Vec::new();
        for k in &self.keywords {
            let Some(field) = fields.keyword_filter(k.field) else {
                continue;
            };
            let mut passing = 0u64;
            for v in &k.values {
                passing += searcher.doc_freq(&Term::from_field_text(field, v))?;
            }
            if passing.saturating_mul(SELECTIVE_FILTER) > total {
                continue;
            }
            clauses.push(k.clause(field));
        }
        Ok(clauses)
    }
}

impl KeywordFilter {
    /// The filter as a query clause on `field`, scoring nothing.
    fn clause(&self, field: Field) -> (Occur, Box<dyn Query>) {
        let q: Box<dyn Query> = match self.values.as_slice() {
            [one] => boxed(TermQuery::new(
                Term::from_field_text(field, one),
                IndexRecordOption::Basic,
            )),
            many => boxed(TermSetQuery::new(
                many.iter().map(|v| Term::from_field_text(field, v)),
            )),
        };
        (Occur::Must, boxed(ConstScoreQuery::new(q, 0.0)))
    }
}

/// What a search reads of one segment's columns: the filters, bound to it, and lead scores.
struct SegmentColumns<'a> {
    segment: &'a SegmentReader,
    lead_scores: Arc<dyn ColumnValues<i64>>,
    /// A column and the ordinals of the values allowed in it.
    keywords: Vec<(StrColumn, Vec<u64>)>,
    ranges: Vec<(Arc<dyn ColumnValues<i64>>, i64, i64)>,
}

impl<'a> SegmentColumns<'a> {
    /// None when no document of the segment can pass (a wanted value is not in it at all).
    fn bind(segment: &'a SegmentReader, filters: &Filters) -> SearchResult<Option<Self>> {
        let fast = segment.fast_fields();
        let mut keywords = Vec::with_capacity(filters.keywords.len());
        for k in &filters.keywords {
            let Some(column) = fast.str(k.field)? else {
                return Ok(None);
            };
            let mut ords = Vec::with_capacity(k.values.len());
            for v in &k.values {
                if let Some(ord) = column.dictionary().term_ord(v)? {
                    ords.push(ord);
                }
            }
            if ords.is_empty() {
                return Ok(None);
            }
            ords.sort_unstable();
            keywords.push((column, ords));
        }
        let mut ranges = Vec::with_capacity(filters.ranges.len());
        for (field, lo, hi) in &filters.ranges {
            let column = fast.i64(field)?.first_or_default_col(i64::MIN);
            ranges.push((column, *lo, *hi));
        }
        Ok(Some(SegmentColumns {
            segment,
            lead_scores: fast.i64("score")?.first_or_default_col(0),
            keywords,
            ranges,
        }))
    }

    fn accepts(&self, doc: DocId) -> bool {
        if self
            .segment
            .alive_bitset()
            .is_some_and(|alive| !alive.is_alive(doc))
        {
            return false;
        }
        let keywords_pass = self.keywords.iter().all(|(column, ords)| {
            column
                .ords()
                .first(doc)
                .is_some_and(|o| ords.binary_search(&o).is_ok())
        });
        keywords_pass
            && self.ranges.iter().all(|(column, lo, hi)| {
                let v = column.get_val(doc);
                *lo <= v && v <= *hi
            })
    }
}

/// Stage and channel counts of one segment, by ordinal.
struct SegmentFacets {
    stage: Option<(StrColumn, Vec<u64>)>,
    channel: Option<(StrColumn, Vec<u64>)>,
}

impl SegmentFacets {
    fn new(segment: &SegmentReader) -> SearchResult<SegmentFacets> {
        let column = |name: &str| -> SearchResult<Option<(StrColumn, Vec<u64>)>> {
            Ok(segment.fast_fields().str(name)?.map(|c| {
                let n = c.num_terms();
                (c, vec![0; n])
            }))
        };
        Ok(SegmentFacets {
            stage: column("stage")?,
            channel: column("channel")?,
        })
    }

    fn add(&mut self, doc: DocId) {
        for (column, counts) in [&mut self.stage, &mut self.channel].into_iter().flatten() {
            if let Some(slot) = column
                .ords()
                .first(doc)
                .and_then(|o| counts.get_mut(usize::try_from(o).ok()?))
            {
                *slot += 1;
            }
        }
    }

    fn flush(self, stages: &mut Counts, channels: &mut Counts) -> SearchResult<()> {
        for (facet, into) in [(self.stage, stages), (self.channel, channels)] {
            let Some((column, counts)) = facet else {
                continue;
            };
            let mut name = String::new();
            for (ord, n) in counts.into_iter().enumerate() {
                if n > 0 && column.ord_to_str(ord as u64, &mut name)? {
                    *into.entry(name.clone()).or_default() += n;
                }
            }
        }
        Ok(())
    }
}

/// A candidate for the page. Better is greater: more relevant, then (when `tie_break` holds the
/// lead score) the better lead, then the earlier document.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    relevance: Score,
    tie_break: i64,
    lead_score: i64,
    /// The part of the plan that found it (earlier wins a tie).
    part: u32,
    addr: DocAddress,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.relevance
            .total_cmp(&other.relevance)
            .then(self.tie_break.cmp(&other.tie_break))
            .then(other.part.cmp(&self.part))
            .then(other.addr.cmp(&self.addr))
    }
}

/// The best `k` candidates seen.
struct TopK {
    k: usize,
    worst_first: BinaryHeap<Reverse<Candidate>>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            // Grown as candidates come: `k` is as deep as a cursor asks, not what matches.
            worst_first: BinaryHeap::with_capacity(k.min(1024) + 1),
        }
    }

    fn offer(&mut self, c: Candidate) {
        if self.k == 0 {
            return;
        }
        if self.worst_first.len() < self.k {
            self.worst_first.push(Reverse(c));
        } else if self.worst_first.peek().is_some_and(|w| c > w.0) {
            self.worst_first.pop();
            self.worst_first.push(Reverse(c));
        }
    }

    fn into_sorted(self) -> Vec<Candidate> {
        let mut v: Vec<Candidate> = self.worst_first.into_iter().map(|r| r.0).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }
}

/// The best `k` distinct documents seen, when one document may be offered more than once (by
/// several parts of a plan): it keeps its best offer.
struct DistinctTopK {
    k: usize,
    ranked: std::collections::BTreeSet<Candidate>,
    by_addr: std::collections::HashMap<DocAddress, Candidate>,
}

impl DistinctTopK {
    fn new(k: usize) -> DistinctTopK {
        DistinctTopK {
            k,
            ranked: Default::default(),
            by_addr: Default::default(),
        }
    }

    fn offer(&mut self, c: Candidate) {
        if let Some(held) = self.by_addr.get(&c.addr).copied() {
            if c > held {
                self.ranked.remove(&held);
                self.ranked.insert(c);
                self.by_addr.insert(c.addr, c);
            }
            return;
        }
        if self.k == 0 {
            return;
        }
        if self.ranked.len() >= self.k {
            match self.ranked.first().copied() {
                Some(worst) if c > worst => {
                    self.ranked.remove(&worst);
                    self.by_addr.remove(&worst.addr);
                }
                _ => return,
            }
        }
        self.ranked.insert(c);
        self.by_addr.insert(c.addr, c);
    }

    /// The relevance a document must exceed to enter.
    fn threshold(&self) -> Score {
        match self.ranked.first() {
            Some(w) if self.ranked.len() >= self.k => w.relevance,
            _ => Score::MIN,
        }
    }

    /// The threshold handed to tantivy's pruning: a hair above [`Self::threshold`]. Block-max
    /// bounds are sums of floats, and summed in another order they come out a rounding error
    /// above the very scores they bound; with many equally relevant documents (a common word
    /// in short notes) that error alone would make every block look worth scoring. A document
    /// within a millionth of the threshold counts as tied, and ties keep the earlier document.
    fn pruning(&self) -> Score {
        let t = self.threshold();
        if t == Score::MIN {
            t
        } else {
            t + t.abs() * TIE_TOLERANCE
        }
    }

    fn into_sorted(self) -> Vec<Candidate> {
        self.ranked.into_iter().rev().collect()
    }
}

/// What one query found: the best `k` in order, the count and the facets.
struct Found {
    top: Vec<Candidate>,
    total: usize,
    exact: bool,
    stages: Counts,
    channels: Counts,
}

impl Found {
    fn none() -> Found {
        Found {
            top: Vec::new(),
            total: 0,
            exact: true,
            stages: Counts::new(),
            channels: Counts::new(),
        }
    }
}

impl SearchIndex {
    /// The text fields of a document type (both when None), with their weights.
    fn text_fields(&self, doc_type: Option<&str>) -> Vec<(Field, Score)> {
        let f = &self.fields;
        let lead = [
            (f.name, 3.0),
            (f.company, 2.0),
            (f.title, 1.5),
            (f.body, 1.0),
        ];
        let activity = [(f.notes, 1.0)];
        match doc_type {
            Some("lead") => lead.to_vec(),
            Some("activity") => activity.to_vec(),
            _ => lead.into_iter().chain(activity).collect(),
        }
    }

    /// The exact alternatives of one group of the user's words: each field where all its terms
    /// occur. A field where they do not is left out, so a query of plain words stays a plain
    /// union or intersection of terms.
    fn exact_alts(
        &self,
        searcher: &Searcher,
        group: &QueryGroup,
        doc_type: Option<&str>,
    ) -> SearchResult<Vec<Alt>> {
        let total_docs = total_docs(searcher);
        // The term's idf, or None when no document has it.
        let idf_of = |t: &Term| -> SearchResult<Option<Score>> {
            let df = searcher.doc_freq(t)?;
            Ok((df > 0).then(|| idf(df, total_docs)))
        };
        let mut alts = Vec::new();
        for (field, weight) in self.text_fields(doc_type) {
            let boost = weight * 2.0;
            match group {
                QueryGroup::Word(w) => {
                    let t = Term::from_field_text(field, w);
                    if let Some(idf) = idf_of(&t)? {
                        alts.push(Alt::one(t, boost, Some(idf)));
                    }
                }
                QueryGroup::Cjk(grams) => {
                    let mut terms = Vec::with_capacity(grams.len());
                    for g in grams {
                        let t = Term::from_field_text(field, g);
                        let Some(idf) = idf_of(&t)? else {
                            break;
                        };
                        terms.push((t, idf));
                    }
                    if !grams.is_empty() && terms.len() == grams.len() {
                        alts.push(Alt::all(terms, boost));
                    }
                }
            }
        }
        if let (QueryGroup::Word(w), false) = (group, doc_type == Some("activity")) {
            // A word may be an email's local part or domain.
            let t = Term::from_field_text(self.fields.email, w);
            if let Some(idf) = idf_of(&t)? {
                alts.push(Alt::one(t, 4.0, Some(idf)));
            }
        }
        Ok(alts)
    }

    /// The prefix and one-typo alternatives of a group: type-ahead on the last word (or on a
    /// lone CJK character, any bigram it starts), and one typo in longer Latin words. They are
    /// worth less than exact words, and the exact words themselves are not repeated.
    fn expanded_alts(
        &self,
        searcher: &Searcher,
        group: &QueryGroup,
        last: bool,
        doc_type: Option<&str>,
    ) -> SearchResult<Vec<Alt>> {
        let mut alts = Vec::new();
        let (word, prefix, fuzzy) = match group {
            QueryGroup::Word(w) => (w.as_str(), last, fuzzy_eligible(w)),
            QueryGroup::Cjk(grams) => match grams.as_slice() {
                [one] if one.chars().count() == 1 => (one.as_str(), true, false),
                _ => return Ok(alts),
            },
        };
        for (field, weight) in self.text_fields(doc_type) {
            let mut seen: HashSet<Vec<u8>> = HashSet::from([word.as_bytes().to_vec()]);
            // A text term, not a bytes term: the same word in the index, but snippets only
            // mark the text terms of a query.
            let text_term = |t: &[u8]| {
                std::str::from_utf8(t)
                    .ok()
                    .map(|w| Term::from_field_text(field, w))
            };
            if prefix {
                for t in expand(searcher, field, word, Expansion::Prefix)? {
                    if seen.insert(t.clone())
                        && let Some(term) = text_term(&t)
                    {
                        alts.push(Alt::one(term, weight, None));
                    }
                }
            }
            if fuzzy {
                for t in expand(searcher, field, word, Expansion::OneTypo)? {
                    if seen.insert(t.clone())
                        && let Some(term) = text_term(&t)
                    {
                        alts.push(Alt::one(term, weight * 0.3, None));
                    }
                }
            }
        }
        Ok(alts)
    }

    /// The whole input as an email address (or its local part or domain) or a phone number.
    fn whole_alts(
        &self,
        searcher: &Searcher,
        q: &str,
        doc_type: Option<&str>,
    ) -> SearchResult<Vec<Alt>> {
        let mut candidates = Vec::new();
        if doc_type == Some("activity") {
            // Emails and phones are a lead's.
            return Ok(Vec::new());
        }
        let whole = q.trim().to_lowercase();
        if !whole.is_empty() {
            candidates.push(Term::from_field_text(self.fields.email, &whole));
        }
        if let Some(digits) = tokenizer::phone_query(q) {
            candidates.push(Term::from_field_text(self.fields.phone, &digits));
        }
        let mut alts = Vec::new();
        let total_docs = total_docs(searcher);
        for t in candidates {
            let df = searcher.doc_freq(&t)?;
            if df > 0 {
                alts.push(Alt::one(t, 8.0, Some(idf(df, total_docs))));
            }
        }
        Ok(alts)
    }

    /// Collects the best `k` matches of `plan` (every document when None) that pass the
    /// filters, leaving out `excluded`, counting up to `count_limit`.
    fn find(
        &self,
        searcher: &Searcher,
        plan: Option<&Plan>,
        filters: &Filters,
        k: usize,
        count_limit: usize,
        excluded: &HashSet<DocAddress>,
    ) -> SearchResult<Found> {
        let mut clauses = filters.clauses(&self.fields, searcher)?;
        let whole = match plan {
            None => boxed(AllQuery),
            Some(p) => match p.query() {
                Some(q) => q,
                None => return Ok(Found::none()),
            },
        };
        clauses.push((Occur::Must, whole));
        let query = BooleanQuery::new(clauses);
        // A list without words counts (and ranks) every match as it goes, by a constant
        // relevance. With words, most searches match more than they count: the counting pass
        // reads no frequencies or lengths, and the matches are ranked afterwards only if it
        // did not stop at the limit.
        let rank_while_counting = plan.is_none();
        let weight = query.weight(if rank_while_counting {
            EnableScoring::enabled_from_searcher(searcher)
        } else {
            EnableScoring::disabled_from_searcher(searcher)
        })?;
        let mut top = TopK::new(k);
        let mut matched: Vec<DocAddress> = Vec::new();
        let (mut stages, mut channels) = (Counts::new(), Counts::new());
        let mut total = 0usize;
        let mut capped = false;

        // Every match, until there are too many to count.
        let mut columns = Vec::with_capacity(searcher.segment_readers().len());
        for segment in searcher.segment_readers() {
            columns.push(SegmentColumns::bind(segment, filters)?);
        }
        'segments: for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let Some(filter) = &columns[ord] else {
                continue;
            };
            let mut facets = SegmentFacets::new(segment)?;
            let mut scorer = weight.scorer(segment, 1.0)?;
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                let addr = DocAddress::new(ord as u32, doc);
                if filter.accepts(doc) && !excluded.contains(&addr) {
                    if total == count_limit {
                        capped = true;
                        facets.flush(&mut stages, &mut channels)?;
                        break 'segments;
                    }
                    total += 1;
                    facets.add(doc);
                    if rank_while_counting {
                        let lead_score = filter.lead_scores.get_val(doc);
                        top.offer(Candidate {
                            relevance: scorer.score(),
                            tie_break: lead_score,
                            lead_score,
                            part: 0,
                            addr,
                        });
                    } else {
                        matched.push(addr);
                    }
                }
                doc = scorer.advance();
            }
            facets.flush(&mut stages, &mut channels)?;
        }
        if !capped {
            if !rank_while_counting {
                // Few enough to rank them all, exactly.
                let weight = query.weight(EnableScoring::enabled_from_searcher(searcher))?;
                for docs in matched.chunk_by(|a, b| a.segment_ord == b.segment_ord) {
                    let Some(ord) = docs.first().map(|a| a.segment_ord as usize) else {
                        continue;
                    };
                    let (Some(Some(filter)), Some(segment)) =
                        (columns.get(ord), searcher.segment_readers().get(ord))
                    else {
                        continue;
                    };
                    let mut scorer = weight.scorer(segment, 1.0)?;
                    for addr in docs {
                        if scorer.seek(addr.doc_id) != addr.doc_id {
                            continue;
                        }
                        let lead_score = filter.lead_scores.get_val(addr.doc_id);
                        top.offer(Candidate {
                            relevance: scorer.score(),
                            tie_break: lead_score,
                            lead_score,
                            part: 0,
                            addr: *addr,
                        });
                    }
                }
            }
            return Ok(Found {
                top: top.into_sorted(),
                total,
                exact: true,
                stages,
                channels,
            });
        }

        // Too many to visit: the best k by relevance alone, each part of the plan pruned with
        // block-max, the filters checked on each document that could enter.
        // (A list without words counts every match, so it never gets here.)
        let parts = plan.map(Plan::parts).unwrap_or_default();
        // A document two parts find counts once, with its best relevance; every part starts
        // from the threshold the earlier parts reached.
        let mut top = DistinctTopK::new(k);
        for (part, query) in parts.into_iter().enumerate() {
            let weight = query.weight(EnableScoring::enabled_from_searcher(searcher))?;
            for (ord, segment) in searcher.segment_readers().iter().enumerate() {
                let Some(filter) = &columns[ord] else {
                    continue;
                };
                weight.for_each_pruning(top.pruning(), segment, &mut |doc, relevance| {
                    let addr = DocAddress::new(ord as u32, doc);
                    if filter.accepts(doc) && !excluded.contains(&addr) {
                        top.offer(Candidate {
                            relevance,
                            tie_break: 0,
                            lead_score: filter.lead_scores.get_val(doc),
                            part: part as u32,
                            addr,
                        });
                    }
                    top.pruning()
                })?;
            }
        }
        Ok(Found {
            top: top.into_sorted(),
            total,
            exact: false,
            stages,
            channels,
        })
    }

    /// Runs a search. An empty `q` lists what the filters allow, best lead score first, and
    /// counts every match. The exact words are looked for first; prefixes of the last word
    /// (type-ahead) and one-typo matches are added only when the exact matches do not fill the
    /// page, and come after them.
    pub fn search(&self, r: &SearchRequest) -> SearchResult<SearchPage> {
        let searcher = self.reader.searcher();
        let filters = Filters::of(r);
        // No page lies past the last document, however deep a (forged) cursor points.
        let docs = usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX);
        let k = r.offset.saturating_add(r.limit).min(docs);
        let none = HashSet::new();
        if r.q.trim().is_empty() {
            let found = self.find(&searcher, None, &filters, k, usize::MAX, &none)?;
            return self.page(&searcher, r, found, None);
        }
        let groups = tokenizer::query_groups(&r.q);
        let whole = self.whole_alts(&searcher, &r.q, r.doc_type)?;

        let mut exact_groups = Vec::with_capacity(groups.len());
        for g in &groups {
            exact_groups.push(self.exact_alts(&searcher, g, r.doc_type)?);
        }
        let exact = Plan::of(&exact_groups, &whole, self.fields.notes);
        let count_limit = r.count_limit.unwrap_or(COUNT_LIMIT).max(1);
        let mut found = self.find(&searcher, Some(&exact), &filters, k, count_limit, &none)?;
        if !(found.exact && found.total < k) {
            return self.page(&searcher, r, found, exact.query());
        }

        // Too few exact matches: add prefixes and typos, ranked after every exact match.
        let n = groups.len();
        let mut any_expansion = false;
        let mut wider_groups = exact_groups;
        for (i, g) in groups.iter().enumerate() {
            let more = self.expanded_alts(&searcher, g, i + 1 == n, r.doc_type)?;
            any_expansion |= !more.is_empty();
            wider_groups[i].extend(more);
        }
        if !any_expansion {
            return self.page(&searcher, r, found, exact.query());
        }
        let wider = Plan::of(&wider_groups, &whole, self.fields.notes);
        let excluded: HashSet<DocAddress> = found.top.iter().map(|c| c.addr).collect();
        let more = self.find(
            &searcher,
            Some(&wider),
            &filters,
            k - found.total,
            count_limit - found.total,
            &excluded,
        )?;
        found.top.extend(more.top);
        found.total += more.total;
        found.exact = more.exact;
        for (from, into) in [
            (more.stages, &mut found.stages),
            (more.channels, &mut found.channels),
        ] {
            for (name, n) in from {
                *into.entry(name).or_default() += n;
            }
        }
        self.page(&searcher, r, found, wider.query())
    }

    /// The requested page of what was found, with snippets for the words of `text`.
    fn page(
        &self,
        searcher: &Searcher,
        r: &SearchRequest,
        found: Found,
        text: Option<Box<dyn Query>>,
    ) -> SearchResult<SearchPage> {
        let generators: Vec<SnippetGenerator> = match &text {
            Some(t) => self
                .text_fields(None)
                .iter()
                .filter_map(|(field, _)| {
                    let mut g = SnippetGenerator::create(searcher, t.as_ref(), *field).ok()?;
                    g.set_max_num_chars(120);
                    Some(g)
                })
                .collect(),
            None => Vec::new(),
        };
        let mut hits = Vec::with_capacity(r.limit);
        for c in found.top.iter().skip(r.offset).take(r.limit) {
            hits.push(self.hit(searcher, c, &generators)?);
        }
        let end = r.offset + hits.len();
        let more = if found.exact {
            end < found.total
        } else {
            hits.len() == r.limit
        };
        let mut facets = BTreeMap::new();
        facets.insert("stage", found.stages);
        facets.insert("channel", found.channels);
        Ok(SearchPage {
            next_offset: (more && !hits.is_empty()).then_some(end),
            hits,
            total: found.total,
            total_exact: found.exact,
            facets,
        })
    }

    fn hit(
        &self,
        searcher: &Searcher,
        c: &Candidate,
        generators: &[SnippetGenerator],
    ) -> SearchResult<Hit> {
        let doc: TantivyDocument = searcher.doc(c.addr)?;
        let f = &self.fields;
        let text_of = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let mut snippet = String::new();
        for g in generators {
            let s = g.snippet_from_doc(&doc);
            if !s.is_empty() {
                snippet = s.to_html();
                break;
            }
        }
        if snippet.is_empty() {
            // Matched by email or phone, or no words: show who it is.
            let mut fallback = text_of(f.name);
            for field in [f.body, f.notes] {
                if fallback.is_empty() {
                    fallback = text_of(field).chars().take(120).collect();
                }
            }
            snippet = html_escape(&fallback);
        }
        Ok(Hit {
            doc_type: text_of(f.doc_type),
            id: text_of(f.id),
            lead_id: text_of(f.lead_id),
            relevance: c.relevance,
            lead_score: c.lead_score,
            snippet,
        })
    }
}

#[derive(Clone, Copy)]
enum Expansion {
    Prefix,
    OneTypo,
}

/// The dictionary words of `field` that `word` expands to, most frequent first, at most
/// [`MAX_EXPANSIONS`].
fn expand(
    searcher: &Searcher,
    field: Field,
    word: &str,
    how: Expansion,
) -> SearchResult<Vec<Vec<u8>>> {
    let mut freq: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for segment in searcher.segment_readers() {
        let inverted = segment.inverted_index(field)?;
        let dict = inverted.terms();
        let mut take = |key: &[u8], doc_freq: u32| {
            *freq.entry(key.to_vec()).or_default() += u64::from(doc_freq);
        };
        match how {
            Expansion::Prefix => {
                let mut stream = dict.range().ge(word.as_bytes()).into_stream()?;
                let mut scanned = 0;
                while scanned < EXPANSION_SCAN && stream.advance() {
                    if !stream.key().starts_with(word.as_bytes()) {
                        break;
                    }
                    take(stream.key(), stream.value().doc_freq);
                    scanned += 1;
                }
            }
            Expansion::OneTypo => {
                let automaton =
                    FuzzyTermQuery::new(Term::from_field_text(field, word), 1, true).automaton()?;
                let mut stream = dict.search(automaton).into_stream()?;
                let mut scanned = 0;
                while scanned < EXPANSION_SCAN && stream.advance() {
                    take(stream.key(), stream.value().doc_freq);
                    scanned += 1;
                }
            }
        }
    }
    let mut ranked: Vec<(Vec<u8>, u64)> = freq.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(MAX_EXPANSIONS);
    Ok(ranked.into_iter().map(|(t, _)| t).collect())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(relevance: Score, tie_break: i64, doc: DocId) -> Candidate {
        Candidate {
            relevance,
            tie_break,
            lead_score: tie_break,
            part: 0,
            addr: DocAddress::new(0, doc),
        }
    }

    fn doc_ids(sorted: Vec<Candidate>) -> Vec<DocId> {
        sorted.iter().map(|c| c.addr.doc_id).collect()
    }

    #[test]
    fn top_k_keeps_the_best_in_order() {
        let mut top = TopK::new(3);
        for (i, rel) in [1.0, 5.0, 3.0, 5.0, 2.0, 4.0].into_iter().enumerate() {
            top.offer(candidate(rel, 0, i as DocId));
        }
        let docs = doc_ids(top.into_sorted());
        // Equal relevance: the earlier document first.
        assert_eq!(docs, vec![1, 3, 5]);
    }

    #[test]
    fn lead_score_breaks_ties_when_asked() {
        let mut top = TopK::new(2);
        top.offer(candidate(2.0, 10, 0));
        top.offer(candidate(2.0, 90, 1));
        top.offer(candidate(2.0, 50, 2));
        let docs = doc_ids(top.into_sorted());
        assert_eq!(docs, vec![1, 2]);
    }

    #[test]
    fn threshold_is_open_until_full_and_ties_do_not_enter() {
        let mut top = DistinctTopK::new(2);
        assert_eq!(top.threshold(), Score::MIN);
        top.offer(candidate(3.0, 0, 0));
        assert_eq!(top.threshold(), Score::MIN);
        top.offer(candidate(1.0, 0, 1));
        assert_eq!(top.threshold(), 1.0);
        assert!(top.pruning() > 1.0 && top.pruning() < 1.0001);
        // A tie with the worst does not enter: it comes later in index order.
        top.offer(candidate(1.0, 0, 2));
        let docs = doc_ids(top.into_sorted());
        assert_eq!(docs, vec![0, 1]);
    }

    #[test]
    fn a_document_found_twice_counts_once_with_its_best() {
        let mut top = DistinctTopK::new(3);
        top.offer(candidate(1.0, 0, 7));
        top.offer(candidate(2.0, 0, 8));
        top.offer(candidate(5.0, 0, 7));
        top.offer(candidate(0.5, 0, 8));
        let found: Vec<(DocId, Score)> = top
            .into_sorted()
            .iter()
            .map(|c| (c.addr.doc_id, c.relevance))
            .collect();
        assert_eq!(found, vec![(7, 5.0), (8, 2.0)]);
    }

    #[test]
    fn an_earlier_part_wins_a_tie() {
        let mut top = DistinctTopK::new(1);
        top.offer(Candidate {
            part: 1,
            ..candidate(2.0, 0, 1)
        });
        top.offer(Candidate {
            part: 0,
            ..candidate(2.0, 0, 9)
        });
        let docs = doc_ids(top.into_sorted());
        assert_eq!(docs, vec![9]);
    }

    fn alt(field: u32, words: &[&str]) -> Alt {
        Alt {
            terms: words
                .iter()
                .map(|w| weighted(field, w, 1.0, None))
                .collect(),
        }
    }

    fn weighted(field: u32, word: &str, boost: Score, idf: Option<Score>) -> WeightedTerm {
        WeightedTerm {
            term: Term::from_field_text(Field::from_field_id(field), word),
            boost,
            idf,
        }
    }

    #[test]
    fn the_rarest_term_of_a_field_carries_the_weight_of_all() {
        let terms = scored_through_rarest(vec![
            weighted(0, "经理", 2.0, Some(1.0)),
            weighted(0, "采购", 2.0, Some(3.0)),
            weighted(0, "mes", 1.0, Some(2.0)),
            weighted(1, "acme", 5.0, Some(4.0)),
            weighted(0, "mes*", 1.0, None),
        ]);
        let boosts: Vec<Score> = terms.iter().map(|t| t.boost).collect();
        // Field 0: 2·1 + 2·3 + 1·2 = 10, carried by 采购 (idf 3): once each, the sum is kept.
        assert_eq!(boosts[0], 0.0);
        assert!((boosts[1] * 3.0 - 10.0).abs() < 1e-5, "{boosts:?}");
        assert_eq!(boosts[2], 0.0);
        // Alone in its field, and an expansion without an idf: as they were.
        assert_eq!(boosts[3], 5.0);
        assert_eq!(boosts[4], 1.0);
    }

    #[test]
    fn a_long_conjunction_keeps_its_scored_terms() {
        let field = Field::from_field_id(0);
        let grams: Vec<(Term, Score)> = (0..MAX_CONJUNCTION_TERMS + 5)
            .map(|i| (Term::from_field_text(field, &format!("g{i}")), 1.0))
            .collect();
        let rarest = grams.len() - 1;
        let mut grams_with_idf = grams.clone();
        grams_with_idf[rarest].1 = 9.0;
        let word = Alt::all(grams_with_idf, 1.0);
        let mut kept = Vec::new();
        conjunction(&[&word]).query_terms(&mut |t, _| kept.push(t.clone()));
        assert_eq!(kept.len(), MAX_CONJUNCTION_TERMS);
        assert!(kept.contains(&grams[rarest].0), "the scored bigram is kept");
    }

    const NOTES: Field = Field::from_field_id(9);

    #[test]
    fn a_word_in_leads_and_in_activities_is_ranked_per_side() {
        let plan = Plan::of(
            &[vec![alt(0, &["a"]), alt(9, &["a"])]],
            &[alt(2, &["a@b"])],
            NOTES,
        );
        assert_eq!(shape(&plan), ("best of", 2));
        let plan = Plan::of(&[vec![alt(9, &["a"])]], &[], NOTES);
        assert_eq!(shape(&plan), ("single", 1));
    }

    fn shape(plan: &Plan) -> (&'static str, usize) {
        match plan {
            Plan::Nothing => ("nothing", 0),
            Plan::Single(_) => ("single", 1),
            Plan::BestOf(parts) => ("best of", parts.len()),
        }
    }

    #[test]
    fn an_empty_group_matches_nothing_but_the_whole_input_may() {
        let word = alt(0, &["a"]);
        assert_eq!(
            shape(&Plan::of(&[vec![word.clone()], vec![]], &[], NOTES)).0,
            "nothing"
        );
        assert_eq!(
            shape(&Plan::of(&[vec![word.clone()], vec![]], &[word], NOTES)).0,
            "single"
        );
        assert_eq!(shape(&Plan::of(&[], &[], NOTES)).0, "nothing");
    }

    #[test]
    fn words_in_one_field_each_are_one_conjunction() {
        let plan = Plan::of(
            &[vec![alt(0, &["a"])], vec![alt(0, &["b", "c"])]],
            &[],
            NOTES,
        );
        assert_eq!(shape(&plan), ("single", 1));
    }

    #[test]
    fn one_word_in_several_fields_is_one_union() {
        let plan = Plan::of(
            &[vec![alt(0, &["a"]), alt(1, &["a"])]],
            &[alt(2, &["a@b"])],
            NOTES,
        );
        assert_eq!(shape(&plan), ("single", 1));
    }

    #[test]
    fn words_in_several_fields_are_ranked_per_combination() {
        let plan = Plan::of(
            &[
                vec![alt(0, &["a"]), alt(1, &["a"])],
                vec![alt(0, &["b"]), alt(1, &["b"]), alt(2, &["b"])],
            ],
            &[alt(3, &["a b"])],
            NOTES,
        );
        assert_eq!(shape(&plan), ("best of", 2 * 3 + 1));
        let many: Vec<Alt> = (0..5).map(|f| alt(f, &["x"])).collect();
        let plan = Plan::of(&[many.clone(), many], &[], NOTES);
        // 25 combinations: one nested query instead.
        assert_eq!(shape(&plan), ("single", 1));
    }
}
