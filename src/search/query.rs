//! Searching: a user's words become a tantivy query (exact terms, CJK phrases, type-ahead
//! prefixes, one-typo matches ranked lower, emails and phones), with the caller's visibility and
//! the filters as required clauses; results are ranked by relevance with the lead score as
//! tie-break, with facet counts and highlighted snippets.

use super::index::{SearchIndex, SearchResult, visibility_key};
use super::tokenizer::{self, QueryGroup};
use std::collections::BTreeMap;
use tantivy::collector::{FacetCollector, TopDocs};
use tantivy::query::{
    BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, PhraseQuery, Query, RangeQuery, TermQuery,
    TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Score, TantivyDocument, Term};
use uuid::Uuid;

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
    /// All matches, beyond this page.
    pub total: usize,
    pub facets: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub next_offset: Option<usize>,
}

/// Latin words at least this long also match with one typo.
const FUZZY_MIN_CHARS: usize = 5;

type Ranked = Vec<((Score, i64), DocAddress)>;
type Counts = BTreeMap<String, u64>;

fn fuzzy_eligible(w: &str) -> bool {
    w.chars().count() >= FUZZY_MIN_CHARS && w.chars().all(|c| c.is_ascii_alphabetic())
}

fn boxed(q: impl Query + 'static) -> Box<dyn Query> {
    Box::new(q)
}

fn boost(q: Box<dyn Query>, by: Score) -> Box<dyn Query> {
    Box::new(BoostQuery::new(q, by))
}

fn any_of(clauses: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    Box::new(BooleanQuery::new(
        clauses.into_iter().map(|q| (Occur::Should, q)).collect(),
    ))
}

impl SearchIndex {
    fn text_fields(&self) -> [(Field, Score); 4] {
        let f = &self.fields;
        [
            (f.name, 3.0),
            (f.company, 2.0),
            (f.title, 1.5),
            (f.body, 1.0),
        ]
    }

    /// One group of the user's words, matched in any text field.
    fn group_query(&self, group: &QueryGroup, last: bool, expand: bool) -> Box<dyn Query> {
        let mut clauses: Vec<Box<dyn Query>> = Vec::new();
        for (field, weight) in self.text_fields() {
            match group {
                QueryGroup::Word(w) => {
                    let term = Term::from_field_text(field, w);
                    clauses.push(boost(
                        boxed(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                        weight * 2.0,
                    ));
                    if expand && last {
                        // Type-ahead: the word being typed is a prefix.
                        clauses.push(boost(
                            boxed(FuzzyTermQuery::new_prefix(term.clone(), 0, false)),
                            weight,
                        ));
                    }
                    if expand && fuzzy_eligible(w) {
                        clauses.push(boost(
                            boxed(FuzzyTermQuery::new(term, 1, true)),
                            weight * 0.3,
                        ));
                    }
                }
                QueryGroup::Cjk(grams) => match grams.as_slice() {
                    [] => {}
                    [one] if one.chars().count() == 1 => {
                        let term = Term::from_field_text(field, one);
                        clauses.push(boost(
                            boxed(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                            weight * 2.0,
                        ));
                        if expand {
                            // One character: any bigram starting with it.
                            clauses.push(boost(
                                boxed(FuzzyTermQuery::new_prefix(term, 0, false)),
                                weight,
                            ));
                        }
                    }
                    [one] => clauses.push(boost(
                        boxed(TermQuery::new(
                            Term::from_field_text(field, one),
                            IndexRecordOption::WithFreqs,
                        )),
                        weight * 2.0,
                    )),
                    many => clauses.push(boost(
                        boxed(PhraseQuery::new(
                            many.iter()
                                .map(|g| Term::from_field_text(field, g))
                                .collect(),
                        )),
                        weight * 2.0,
                    )),
                },
            }
        }
        if let QueryGroup::Word(w) = group {
            // A word may be an email's local part or domain.
            clauses.push(boost(
                boxed(TermQuery::new(
                    Term::from_field_text(self.fields.email, w),
                    IndexRecordOption::Basic,
                )),
                4.0,
            ));
        }
        any_of(clauses)
    }

    /// The user's words: every group must match somewhere; or the whole input as an email or
    /// a phone number.
    fn text_query(&self, q: &str, expand: bool) -> Option<Box<dyn Query>> {
        let groups = tokenizer::query_groups(q);
        let mut alternatives: Vec<Box<dyn Query>> = Vec::new();
        if !groups.is_empty() {
            let n = groups.len();
            let all: Vec<(Occur, Box<dyn Query>)> = groups
                .iter()
                .enumerate()
                .map(|(i, g)| (Occur::Must, self.group_query(g, i + 1 == n, expand)))
                .collect();
            alternatives.push(Box::new(BooleanQuery::new(all)));
        }
        let whole = q.trim().to_lowercase();
        // The whole input may be an address, its local part or its domain.
        if !whole.is_empty() {
            alternatives.push(boost(
                boxed(TermQuery::new(
                    Term::from_field_text(self.fields.email, &whole),
                    IndexRecordOption::Basic,
                )),
                8.0,
            ));
        }
        if let Some(digits) = tokenizer::phone_query(q) {
            alternatives.push(boost(
                boxed(TermQuery::new(
                    Term::from_field_text(self.fields.phone, &digits),
                    IndexRecordOption::Basic,
                )),
                8.0,
            ));
        }
        (!alternatives.is_empty()).then(|| any_of(alternatives))
    }

    fn filters(&self, r: &SearchRequest) -> Vec<(Occur, Box<dyn Query>)> {
        let f = &self.fields;
        let term = |field: Field, v: &str| -> Box<dyn Query> {
            boxed(TermQuery::new(
                Term::from_field_text(field, v),
                IndexRecordOption::Basic,
            ))
        };
        let mut out: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(t) = r.doc_type {
            out.push((Occur::Must, term(f.doc_type, t)));
        }
        if let Some(s) = &r.stage {
            out.push((Occur::Must, term(f.stage, s)));
        }
        if let Some(s) = &r.status {
            out.push((Occur::Must, term(f.status, s)));
        }
        if let Some(c) = &r.channel {
            out.push((Occur::Must, term(f.channel, c)));
        }
        if let Some(o) = &r.owner {
            let v = o.map_or_else(|| "none".to_owned(), |o| o.to_string());
            out.push((Occur::Must, term(f.owner, &v)));
        }
        if let Some(p) = &r.pool {
            out.push((Occur::Must, term(f.pool, &p.to_string())));
        }
        if r.min_score.is_some() || r.max_score.is_some() {
            out.push((
                Occur::Must,
                boxed(RangeQuery::new(
                    bound(f.score, r.min_score),
                    bound(f.score, r.max_score),
                )),
            ));
        }
        if r.created_after.is_some() || r.created_before.is_some() {
            out.push((
                Occur::Must,
                boxed(RangeQuery::new(
                    bound(f.created_at, r.created_after),
                    bound(f.created_at, r.created_before),
                )),
            ));
        }
        if let Some(owners) = &r.visible_owners {
            // Visibility is part of the query, so counts and facets never include the unseen.
            let keys = owners
                .iter()
                .map(|o| visibility_key(Some(*o), None))
                .chain(std::iter::once("pooled".to_owned()))
                .map(|k| Term::from_field_text(f.visibility, &k));
            out.push((Occur::Must, boxed(TermSetQuery::new(keys))));
        }
        out
    }

    /// Runs one query with the filters: the page, and the facet counts over every match.
    fn run(
        &self,
        searcher: &tantivy::Searcher,
        text: Option<&dyn Query>,
        r: &SearchRequest,
    ) -> SearchResult<(Ranked, usize, Counts, Counts)> {
        let mut clauses = self.filters(r);
        if let Some(t) = text {
            clauses.push((Occur::Must, t.box_clone()));
        }
        if clauses.is_empty() || text.is_none() {
            clauses.push((Occur::Must, boxed(tantivy::query::AllQuery)));
        }
        let query = BooleanQuery::new(clauses);
        let score_field = "score";
        let top = TopDocs::with_limit(r.limit.max(1))
            .and_offset(r.offset)
            .tweak_score(move |segment: &tantivy::SegmentReader| {
                let scores = segment
                    .fast_fields()
                    .i64(score_field)
                    .ok()
                    .map(|c| c.first_or_default_col(0));
                move |doc: tantivy::DocId, relevance: Score| {
                    let lead_score = scores.as_ref().map_or(0, |c| c.get_val(doc));
                    (relevance, lead_score)
                }
            });
        let mut stage_facets = FacetCollector::for_field("facet_stage");
        stage_facets.add_facet("/");
        let mut channel_facets = FacetCollector::for_field("facet_channel");
        channel_facets.add_facet("/");
        let (top, stages, channels) =
            searcher.search(&query, &(top, stage_facets, channel_facets))?;
        let counts = |c: tantivy::collector::FacetCounts| -> Counts {
            c.get("/")
                .map(|(facet, n)| {
                    let name = facet
                        .to_path()
                        .last()
                        .map_or_else(String::new, |s| (*s).to_owned());
                    (name, n)
                })
                .collect()
        };
        let stages = counts(stages);
        // Every document has exactly one stage, so the stage counts add up to the matches.
        let total = usize::try_from(stages.values().sum::<u64>()).unwrap_or(usize::MAX);
        Ok((top, total, stages, counts(channels)))
    }

    /// Runs a search. An empty `q` lists what the filters allow, best lead score first. The
    /// exact words are looked for first; prefixes of the last word (type-ahead) and one-typo
    /// matches are added only when the exact matches do not fill the page. So they rank below
    /// exact matches, and a broad query that already fills its page does not pay for expanding
    /// its words over the whole term dictionary.
    pub fn search(&self, r: &SearchRequest) -> SearchResult<SearchPage> {
        let searcher = self.reader.searcher();
        let mut text = self.text_query(&r.q, false);
        let (mut top, mut total, mut stages, mut channels) =
            self.run(&searcher, text.as_deref(), r)?;
        let expandable = tokenizer::query_groups(&r.q).iter().any(|g| match g {
            QueryGroup::Word(_) => true,
            QueryGroup::Cjk(grams) => grams.len() == 1 && grams[0].chars().count() == 1,
        });
        if expandable && total < r.offset + r.limit {
            text = self.text_query(&r.q, true);
            (top, total, stages, channels) = self.run(&searcher, text.as_deref(), r)?;
        }

        let generators: Vec<SnippetGenerator> = match &text {
            Some(t) => self
                .text_fields()
                .iter()
                .filter_map(|(field, _)| {
                    let mut g = SnippetGenerator::create(&searcher, t.as_ref(), *field).ok()?;
                    g.set_max_num_chars(120);
                    Some(g)
                })
                .collect(),
            None => Vec::new(),
        };
        let mut hits = Vec::with_capacity(top.len());
        for ((relevance, lead_score), addr) in top {
            hits.push(self.hit(&searcher, addr, relevance, lead_score, &generators)?);
        }
        let mut facets = BTreeMap::new();
        facets.insert("stage", stages);
        facets.insert("channel", channels);
        let end = r.offset + hits.len();
        Ok(SearchPage {
            next_offset: (end < total).then_some(end),
            hits,
            total,
            facets,
        })
    }

    fn hit(
        &self,
        searcher: &tantivy::Searcher,
        addr: DocAddress,
        relevance: Score,
        lead_score: i64,
        generators: &[SnippetGenerator],
    ) -> SearchResult<Hit> {
        let doc: TantivyDocument = searcher.doc(addr)?;
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
            if fallback.is_empty() {
                fallback = text_of(f.body).chars().take(120).collect();
            }
            snippet = html_escape(&fallback);
        }
        Ok(Hit {
            doc_type: text_of(f.doc_type),
            id: text_of(f.id),
            lead_id: text_of(f.lead_id),
            relevance,
            lead_score,
            snippet,
        })
    }
}

/// An inclusive bound, or none.
fn bound(field: Field, v: Option<i64>) -> std::ops::Bound<Term> {
    match v {
        Some(v) => std::ops::Bound::Included(Term::from_field_i64(field, v)),
        None => std::ops::Bound::Unbounded,
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
