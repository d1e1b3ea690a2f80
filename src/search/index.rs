//! The tantivy index: its schema, the documents a lead and its activities become, opening (and
//! rebuilding when missing, corrupt or of another schema), and applying changes with the last
//! applied changelog seq in each commit's payload.

use super::tokenizer::{self, KEYWORD, TEXT};
use crate::domain::activity::Activity;
use crate::domain::lead::Lead;
use crate::store::{Snapshot, StoreError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tantivy::index::SegmentId;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{
    FutureResult, Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, SegmentMeta,
    TantivyDocument, Term,
};
use uuid::Uuid;

/// Bumped whenever the schema or the analysis changes: an index of another version is rebuilt.
pub const SCHEMA_VERSION: u32 = 3;
/// Memory the index writer may buffer before it flushes a segment.
const WRITER_HEAP: usize = 64 * 1024 * 1024;
/// Bytes of stored documents compressed together. A hit's snippet decompresses its whole
/// block, so blocks are kept small: tantivy's 16 KiB cost a quarter of a query's time.
const DOCSTORE_BLOCK: usize = 4096;
/// Leads read per step while rebuilding.
const REBUILD_PAGE: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("search index: {0}")]
    Query(String),
}

pub type SearchResult<T> = Result<T, SearchError>;

/// What a commit records about itself.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Payload {
    schema: u32,
    seq: u64,
}

/// The fields of the schema, by role.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub doc_type: Field,
    pub id: Field,
    pub lead_id: Field,
    pub name: Field,
    pub company: Field,
    pub title: Field,
    /// A lead's other words: industry, region, country, tags, custom fields.
    pub body: Field,
    /// An activity's words. Apart from `body`, so a search of one document type reads only its
    /// own posting lists.
    pub notes: Field,
    pub email: Field,
    pub phone: Field,
    pub visibility: Field,
    pub stage: Field,
    pub status: Field,
    pub channel: Field,
    pub owner: Field,
    pub pool: Field,
    pub score: Field,
    pub created_at: Field,
}

impl Fields {
    /// The keyword field a search filter names (its fast-field name).
    pub fn keyword_filter(&self, name: &str) -> Option<Field> {
        Some(match name {
            "doc_type" => self.doc_type,
            "visibility" => self.visibility,
            "stage" => self.stage,
            "status" => self.status,
            "channel" => self.channel,
            "owner" => self.owner,
            "pool" => self.pool,
            _ => return None,
        })
    }
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TEXT)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let keyword = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(KEYWORD)
            // Frequencies let a word that is also an email part join a pruned union of terms.
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        // Filters and facets are read from fast fields while matches are collected.
        doc_type: b.add_text_field("doc_type", STRING | STORED | FAST),
        id: b.add_text_field("id", STRING | STORED),
        lead_id: b.add_text_field("lead_id", STRING | STORED),
        name: b.add_text_field("name", text.clone()),
        company: b.add_text_field("company", text.clone()),
        title: b.add_text_field("title", text.clone()),
        body: b.add_text_field("body", text.clone()),
        notes: b.add_text_field("notes", text),
        email: b.add_text_field("email", keyword.clone()),
        phone: b.add_text_field("phone", keyword),
        visibility: b.add_text_field("visibility", STRING | FAST),
        stage: b.add_text_field("stage", STRING | FAST),
        status: b.add_text_field("status", STRING | FAST),
        channel: b.add_text_field("channel", STRING | FAST),
        owner: b.add_text_field("owner", STRING | FAST),
        pool: b.add_text_field("pool", STRING | FAST),
        score: b.add_i64_field("score", INDEXED | FAST | STORED),
        created_at: b.add_i64_field("created_at", INDEXED | FAST),
    };
    (b.build(), fields)
}

/// The visibility keys of a lead, matching `Principal::can_see`: its owner, or "pooled" for an
/// unowned lead in a pool, or "none".
pub fn visibility_key(owner: Option<Uuid>, pool: Option<Uuid>) -> String {
    match (owner, pool) {
        (Some(o), _) => format!("o:{o}"),
        (None, Some(_)) => "pooled".into(),
        (None, None) => "none".into(),
    }
}

/// The index in the data directory.
pub struct SearchIndex {
    pub(super) reader: IndexReader,
    pub(super) writer: std::sync::Mutex<IndexWriter>,
    pub(super) fields: Fields,
}

impl SearchIndex {
    /// Opens the index in `dir`. `None` when there is none, it cannot be opened, or it was made
    /// with another schema: the caller rebuilds.
    fn try_open(dir: &Path) -> Option<(Index, u64)> {
        let index = Index::open_in_dir(dir).ok()?;
        let payload: Payload =
            serde_json::from_str(index.load_metas().ok()?.payload.as_deref()?).ok()?;
        (payload.schema == SCHEMA_VERSION).then_some((index, payload.seq))
    }

    /// Opens (or makes, empty) the index in `dir`, returning it with the seq it has applied
    /// up to, and whether it must be rebuilt from the store.
    pub fn open(dir: &Path) -> SearchResult<(SearchIndex, u64, bool)> {
        let (schema, fields) = schema();
        let (index, seq, fresh) = match Self::try_open(dir) {
            Some((index, seq)) if index.schema() == schema => (index, seq, false),
            other => {
                if other.is_some() || dir.exists() {
                    tracing::warn!(dir = %dir.display(), "search index missing, unreadable or of another schema; rebuilding it from the store");
                    std::fs::remove_dir_all(dir)?;
                }
                std::fs::create_dir_all(dir)?;
                let settings = IndexSettings {
                    docstore_blocksize: DOCSTORE_BLOCK,
                    ..IndexSettings::default()
                };
                let index = Index::builder()
                    .schema(schema)
                    .settings(settings)
                    .create_in_dir(dir)?;
                (index, 0, true)
            }
        };
        tokenizer::register(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let writer = index.writer(WRITER_HEAP)?;
        Ok((
            SearchIndex {
                reader,
                writer: std::sync::Mutex::new(writer),
                fields,
            },
            seq,
            fresh,
        ))
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        match self.writer.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn lead_doc(&self, l: &Lead) -> TantivyDocument {
        let f = &self.fields;
        let mut d = TantivyDocument::default();
        d.add_text(f.doc_type, "lead");
        d.add_text(f.id, l.id.to_string());
        self.common(&mut d, l);
        for (field, v) in [
            (f.name, &l.name),
            (f.company, &l.company),
            (f.title, &l.title),
        ] {
            if let Some(v) = v {
                d.add_text(field, v);
            }
        }
        let mut body: Vec<String> = Vec::new();
        body.extend(l.industry.iter().cloned());
        body.extend(l.region.iter().cloned());
        body.extend(l.country.iter().cloned());
        body.extend(l.tags.iter().cloned());
        for (_, v) in l.fields_map() {
            if let serde_json::Value::String(s) = v {
                body.push(s);
            }
        }
        for b in body {
            d.add_text(f.body, b);
        }
        if let Some(e) = &l.email {
            for t in tokenizer::email_tokens(e) {
                d.add_text(f.email, t);
            }
        }
        if let Some(p) = &l.phone {
            for t in tokenizer::phone_tokens(p) {
                d.add_text(f.phone, t);
            }
        }
        d
    }

    fn activity_doc(&self, l: &Lead, a: &Activity) -> TantivyDocument {
        let f = &self.fields;
        let mut d = TantivyDocument::default();
        d.add_text(f.doc_type, "activity");
        d.add_text(f.id, a.id.to_string());
        self.common(&mut d, l);
        if let Some(t) = &a.text {
            d.add_text(f.notes, t);
        }
        // Page paths, form answers and raw captured values are searchable too.
        if let Ok(serde_json::Value::Object(props)) = serde_json::from_str(&a.properties) {
            if let Some(serde_json::Value::String(path)) = props.get("path") {
                d.add_text(f.notes, path);
            }
            // A form's own answers (a message, a budget) are searchable on its activity; the
            // raw values of lead fields are the lead's, found on the lead itself.
            let from_form = props.get("via").and_then(|v| v.as_str()) == Some("form");
            if from_form && let Some(serde_json::Value::Object(raw)) = props.get("raw") {
                for (k, v) in raw {
                    if let serde_json::Value::String(s) = v
                        && !crate::domain::form::LEAD_FIELDS.contains(&k.as_str())
                    {
                        d.add_text(f.notes, s);
                    }
                }
            }
        }
        d
    }

    /// What lead and activity documents share: the lead's filter values and visibility.
    fn common(&self, d: &mut TantivyDocument, l: &Lead) {
        let f = &self.fields;
        d.add_text(f.lead_id, l.id.to_string());
        d.add_text(f.visibility, visibility_key(l.owner_id, l.pool_id));
        d.add_text(f.stage, l.stage.as_str());
        d.add_text(f.status, l.status.as_str());
        d.add_text(f.channel, l.channel.as_deref().unwrap_or("none"));
        d.add_text(
            f.owner,
            l.owner_id
                .map_or_else(|| "none".to_owned(), |o| o.to_string()),
        );
        d.add_text(
            f.pool,
            l.pool_id
                .map_or_else(|| "none".to_owned(), |p| p.to_string()),
        );
        d.add_i64(f.score, i64::from(l.score.total));
        d.add_i64(f.created_at, l.created_at);
    }

    /// Makes the index hold exactly what `snap` says about `lead_id`: its documents are removed
    /// and, if the lead still exists, added again with all its activities.
    pub fn refresh_lead(&self, snap: &Snapshot, lead_id: Uuid) -> SearchResult<()> {
        let writer = self.writer();
        writer.delete_term(Term::from_field_text(
            self.fields.lead_id,
            &lead_id.to_string(),
        ));
        if let Some(lead) = snap.lead(lead_id)? {
            writer.add_document(self.lead_doc(&lead))?;
            for a in snap.activities_of(lead_id)? {
                writer.add_document(self.activity_doc(&lead, &a))?;
            }
        }
        Ok(())
    }

    /// Indexes every lead in `snap` (into an empty index), reporting leads done.
    pub fn index_all(&self, snap: &Snapshot, mut progress: impl FnMut(u64)) -> SearchResult<()> {
        let mut after = None;
        let mut done = 0;
        loop {
            let leads = snap.leads_after(after, REBUILD_PAGE)?;
            let Some(last) = leads.last() else {
                return Ok(());
            };
            after = Some(last.id);
            let writer = self.writer();
            for lead in &leads {
                writer.add_document(self.lead_doc(lead))?;
                for a in snap.activities_of(lead.id)? {
                    writer.add_document(self.activity_doc(lead, &a))?;
                }
            }
            drop(writer);
            done += leads.len() as u64;
            progress(done);
        }
    }

    /// Commits what was applied, recording `seq`, and makes it visible to searches.
    pub fn commit(&self, seq: u64) -> SearchResult<()> {
        let payload = serde_json::to_string(&Payload {
            schema: SCHEMA_VERSION,
            seq,
        })
        .map_err(|e| SearchError::Query(e.to_string()))?;
        {
            let mut writer = self.writer();
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
        }
        self.reader.reload()?;
        Ok(())
    }

    /// Searchable segments.
    pub fn segment_count(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    /// The searchable segments an idle compaction merges (see [`compaction`]); empty when
    /// there is nothing worth merging.
    pub fn compaction_plan(&self) -> Vec<SegmentId> {
        let searcher = self.reader.searcher();
        let segments = searcher.segment_readers();
        let sizes: Vec<u64> = segments.iter().map(|s| u64::from(s.num_docs())).collect();
        compaction(&sizes)
            .into_iter()
            .map(|i| segments[i].segment_id())
            .collect()
    }

    /// Starts merging `segments` in tantivy's merge threads; the result resolves when the
    /// merged segment is committed (call [`Self::reload`] then to search it).
    pub fn merge(&self, segments: &[SegmentId]) -> FutureResult<Option<SegmentMeta>> {
        self.writer().merge(segments)
    }

    /// Makes searches see the latest committed segments.
    pub fn reload(&self) -> SearchResult<()> {
        self.reader.reload()?;
        Ok(())
    }

    /// Drops what was applied since the last commit (after a failure mid-cycle).
    pub fn rollback(&self) -> SearchResult<()> {
        self.writer().rollback()?;
        Ok(())
    }
}

/// Which segments to merge, given their sizes, when the indexer has nothing else to do: going
/// from the largest down, a segment is kept while it holds more than twice the documents of
/// all smaller ones together, and the rest are merged into one. Returns their positions in
/// `sizes`; empty when fewer than two would be merged.
///
/// After a bulk load (many segments of similar sizes) that is all of them, so the index ends up
/// in one segment and every query looks up its terms once instead of once per segment. In
/// steady use only the small recent segments are merged, and each document is rewritten about
/// once per doubling of the segment it lands in, not on every idle moment.
pub fn compaction(sizes: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut smaller: u64 = sizes.iter().sum();
    for (at, &i) in order.iter().enumerate() {
        smaller -= sizes[i];
        if sizes[i] <= smaller.saturating_mul(2) {
            let rest = order[at..].to_vec();
            return if rest.len() >= 2 { rest } else { Vec::new() };
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::compaction;

    fn merged(sizes: &[u64]) -> Vec<u64> {
        let mut m: Vec<u64> = compaction(sizes).into_iter().map(|i| sizes[i]).collect();
        m.sort_unstable();
        m
    }

    #[test]
    fn a_bulk_load_is_merged_into_one_segment() {
        // The segments `bench search` left after importing 1,000,000 leads and 5,000,000 notes.
        let after_import = [
            4_475_110, 524_456, 524_456, 524_428, 522_911, 65_557, 65_557, 65_557, 65_557, 65_557,
            854,
        ];
        assert_eq!(compaction(&after_import).len(), after_import.len());
        // A largest segment over twice the rest stays; the rest still become one.
        let after_growth = [4_475_110, 524_456, 524_456, 524_428, 65_557, 854];
        assert_eq!(compaction(&after_growth).len(), after_growth.len() - 1);
    }

    #[test]
    fn only_the_small_recent_segments_are_merged() {
        assert_eq!(merged(&[6_000_000, 1_000, 1_000]), vec![1_000, 1_000]);
        assert_eq!(
            merged(&[6_000_000, 900_000, 300, 200, 100]),
            vec![100, 200, 300]
        );
    }

    #[test]
    fn a_settled_index_is_left_alone() {
        assert!(compaction(&[]).is_empty());
        assert!(compaction(&[5]).is_empty());
        assert!(compaction(&[6_000_000, 1_000]).is_empty());
        assert!(compaction(&[6_000_000, 900_000, 100]).is_empty());
    }
}
