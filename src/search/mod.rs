//! Full-text search over leads and activities: a tantivy index derived from redb. The indexer
//! follows the changelog in order, commits at most twice a second with the last applied seq in
//! the commit's payload, resumes from that seq after a restart, and rebuilds the index from the
//! store when it is missing, unreadable or of another schema. When it has had nothing to index
//! for a while, it merges the index's small segments (see [`index::compaction`]).

pub mod index;
pub mod query;
pub mod tokenizer;

pub use index::{SearchError, SearchIndex, SearchResult};
pub use query::{Hit, SearchPage, SearchRequest};

use crate::store::{Entity, Store};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Commits are at least this far apart, so the index is never committed per document. Half a
/// second, not a whole one: a change must be searchable within a second of its acknowledgement,
/// and applying and committing on a busy machine take part of that second.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// Changelog rows applied per step.
const STEP: usize = 20_000;
/// How long the indexer waits before retrying after a failure, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The search index directory inside the data directory.
pub fn index_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("search")
}

/// The running search: the index and how far it has applied the changelog.
#[derive(Clone)]
pub struct Search {
    index: Arc<SearchIndex>,
    /// Runs queries, one thread per core.
    queries: Arc<rayon::ThreadPool>,
    indexed: Arc<AtomicU64>,
    /// An idle compaction is running.
    merging: Arc<AtomicBool>,
    compact_after_idle: Duration,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    follower: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Search {
    /// Opens the index and starts the indexer task on the current runtime. A missing or unusable
    /// index is rebuilt in that task, so the server answers (and `/readyz` shows the lag) while
    /// it catches up.
    pub fn start(
        data_dir: &Path,
        store: Store,
        compact_after_idle: Duration,
    ) -> SearchResult<Search> {
        let (index, seq, fresh) = SearchIndex::open(&index_dir(data_dir))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let queries = rayon::ThreadPoolBuilder::new()
            .num_threads(cores)
            .thread_name(|i| format!("search-{i}"))
            // A query's panic is caught where it runs; this only keeps rayon from aborting.
            .panic_handler(|_| tracing::error!("a search thread panicked"))
            .build()
            .map_err(|e| SearchError::Query(format!("starting the search threads: {e}")))?;
        let search = Search {
            index: Arc::new(index),
            queries: Arc::new(queries),
            indexed: Arc::new(AtomicU64::new(seq)),
            merging: Arc::default(),
            compact_after_idle,
            stop: Arc::new(stop),
            follower: Arc::default(),
        };
        let me = search.clone();
        let handle = tokio::spawn(async move { me.follow(store, fresh, stopped).await });
        if let Ok(mut f) = search.follower.lock() {
            *f = Some(handle);
        }
        Ok(search)
    }

    /// Stops the indexer after its current step and waits for it, so the store can close.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let handle = self.follower.lock().ok().and_then(|mut f| f.take());
        if let Some(h) = handle {
            let _ = h.await;
        }
    }

    /// The last changelog seq the searchable index reflects.
    pub fn indexed_seq(&self) -> u64 {
        self.indexed.load(Ordering::SeqCst)
    }

    /// Runs a search on the search threads, one per core, in the order requests come.
    ///
    /// Why not tokio's blocking pool: it starts a thread per waiting query, so eight clients
    /// on two cores meant eight searches sharing them in time slices, each slower for the
    /// others. A core apiece, a query runs to its end and the next starts at once (10-20 %
    /// more queries a second, p99 about halved in `bench search`).
    pub async fn run(&self, request: SearchRequest) -> SearchResult<SearchPage> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let index = self.index.clone();
        self.queries.spawn(move || {
            let page =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| index.search(&request)))
                    .unwrap_or_else(|_| {
                        Err(SearchError::Query("the search failed unexpectedly".into()))
                    });
            let _ = tx.send(page);
        });
        rx.await
            .unwrap_or_else(|_| Err(SearchError::Query("the search was dropped".into())))
    }

    /// Searchable segments of the index.
    pub fn segment_count(&self) -> usize {
        self.index.segment_count()
    }

    /// The index is as compact as idle compaction makes it: no merge is running and none is
    /// due.
    pub fn compacted(&self) -> bool {
        !self.merging.load(Ordering::SeqCst) && self.index.compaction_plan().is_empty()
    }

    /// Starts merging the small segments in the background, unless a merge is running or none
    /// is due. The indexer goes on meanwhile; searches see the merged segment once it is done.
    fn start_compaction(&self) {
        if self.merging.load(Ordering::SeqCst) {
            return;
        }
        // Searches see segments as of the last commit; tantivy's own merges may have replaced
        // some since, and a merge of a segment that is gone fails.
        if let Err(e) = self.index.reload() {
            tracing::warn!(error = %e, "reloading the search index failed; will retry when idle");
            return;
        }
        let plan = self.index.compaction_plan();
        if plan.is_empty() || self.merging.swap(true, Ordering::SeqCst) {
            return;
        }
        let merge = self.index.merge(&plan);
        let me = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let merged = match merge.await {
                Ok(_) => me.index.reload(),
                Err(e) => Err(e.into()),
            };
            match merged {
                Ok(()) => tracing::info!(
                    segments = plan.len(),
                    secs = started.elapsed().as_secs_f64(),
                    "search index segments merged"
                ),
                // One of them is in a merge of tantivy's own: the next idle check tries again.
                Err(SearchError::Tantivy(tantivy::TantivyError::InvalidArgument(e))) => {
                    tracing::debug!(error = %e, "search index segments are busy; will merge them when idle");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "merging search index segments failed; will retry when idle")
                }
            }
            me.merging.store(false, Ordering::SeqCst);
        });
    }

    async fn follow(
        self,
        store: Store,
        mut rebuild: bool,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut committed = store.committed_seq();
        let mut last_commit: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stopped.borrow() {
                return;
            }
            let target = *committed.borrow_and_update();
            if rebuild || target > self.indexed_seq() {
                // Apply now; commit no sooner than a second after the last commit.
                let wait = last_commit
                    .map(|t| COMMIT_INTERVAL.saturating_sub(t.elapsed()))
                    .unwrap_or_default();
                let me = self.clone();
                let s = store.clone();
                let full = rebuild;
                let applied = tokio::task::spawn_blocking(move || me.apply(&s, full)).await;
                let step = match applied {
                    Ok(Ok(seq)) => {
                        // The wait is here, not in the blocking task, so a shutdown cuts it short.
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stopped.changed() => {}
                        }
                        let me = self.clone();
                        tokio::task::spawn_blocking(move || me.commit(seq)).await
                    }
                    other => other.map(|r| r.map(|_| ())),
                };
                match step {
                    Ok(Ok(())) => {
                        rebuild = false;
                        last_commit = Some(Instant::now());
                        backoff = Duration::from_millis(100);
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "search indexing failed; will retry");
                        let _ = self.index.rollback();
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stopped.changed() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "search indexing task stopped; will retry");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stopped.changed() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            }
            // Checked again every idle period while it is due: a merge may be running (ours or
            // tantivy's) or have failed.
            let compaction_due = !self.compacted();
            tokio::select! {
                changed = committed.changed() => {
                    if changed.is_err() {
                        tracing::debug!("search indexer stopped: the store closed");
                        return;
                    }
                }
                _ = stopped.changed() => return,
                _ = tokio::time::sleep(self.compact_after_idle), if compaction_due => {
                    self.start_compaction();
                }
            }
        }
    }

    /// Applies everything (a rebuild) or the changes after the indexed seq, uncommitted, and
    /// returns the seq they reach.
    fn apply(&self, store: &Store, rebuild: bool) -> SearchResult<u64> {
        let snap = store.read()?;
        let mut seq = self.indexed_seq();
        if rebuild {
            let started = Instant::now();
            let total = snap.lead_count()?;
            tracing::info!(leads = total, "rebuilding the search index");
            let mut last_log = Instant::now();
            self.index.index_all(&snap, |done| {
                if last_log.elapsed() > Duration::from_secs(5) {
                    tracing::info!(done, total, "rebuilding the search index");
                    last_log = Instant::now();
                }
            })?;
            seq = snap.last_seq()?;
            tracing::info!(
                leads = total,
                secs = started.elapsed().as_secs_f64(),
                "search index rebuilt"
            );
        } else {
            let last = snap.last_seq()?;
            while seq < last {
                let rows = snap.changes_after(seq, STEP)?;
                let Some((end, _)) = rows.last() else { break };
                let end = *end;
                let leads: BTreeSet<Uuid> = rows
                    .iter()
                    .filter_map(|(_, c)| match c.entity {
                        Entity::Lead => Some(c.id),
                        Entity::Activity => c.lead_id,
                        _ => None,
                    })
                    .collect();
                for id in leads {
                    self.index.refresh_lead(&snap, id)?;
                }
                seq = end;
            }
        }
        Ok(seq)
    }

    fn commit(&self, seq: u64) -> SearchResult<()> {
        self.index.commit(seq)?;
        self.indexed.store(seq, Ordering::SeqCst);
        Ok(())
    }
}

/// Rebuilds the index of a stopped server's data directory into a new directory and swaps it
/// in, reporting leads done out of the total.
pub fn reindex(
    data_dir: &Path,
    store: &Store,
    mut progress: impl FnMut(u64, u64),
) -> SearchResult<u64> {
    let live = index_dir(data_dir);
    let fresh = data_dir.join("search.new");
    let old = data_dir.join("search.old");
    for leftover in [&fresh, &old] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover)?;
        }
    }
    let snap = store.read()?;
    let total = snap.lead_count()?;
    let seq = snap.last_seq()?;
    {
        let (index, _, _) = SearchIndex::open(&fresh)?;
        index.index_all(&snap, |done| progress(done, total))?;
        index.commit(seq)?;
    }
    // Two renames: a crash between them leaves `search` missing, which the next start rebuilds.
    if live.exists() {
        std::fs::rename(&live, &old)?;
    }
    std::fs::rename(&fresh, &live)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(total)
}
