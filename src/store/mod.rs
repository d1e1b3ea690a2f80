//! The redb store: typed tables, the single writer task that batches every mutation into one
//! durable transaction (group commit), read snapshots, and the changelog that followers read.
//! It knows nothing of HTTP; the lifecycle rules that run inside a write live in `service`.

pub mod codec;
mod fsync;
pub mod lead_index;
pub mod query;
pub mod tables;
mod tx;
mod tx_nurture;
mod tx_outbox;
mod tx_work;
mod writer;

pub use tx::Tx;
pub use tx_outbox::DeliveryPage;
pub use tx_work::open_owner;
pub use writer::WriterConfig;

use crate::clock::Clock;
use crate::domain::time::Millis;
use codec::{CodecError, Record, decode};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tables::*;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

/// Why a storage operation failed. Cloneable: one failed transaction fails every request in it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Disk, I/O or redb failure; the transaction did not commit.
    #[error("storage failure: {0}")]
    Storage(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The writer task is gone (shutting down, or it failed to start).
    #[error("the store is shutting down")]
    WriterGone,
    /// Another process has the database open.
    #[error(
        "the database {0} is in use by another process (is `leadline serve` running on this data directory?)"
    )]
    Locked(PathBuf),
    #[error(
        "the database was written by a newer release (format {found}, this release reads up to {supported})"
    )]
    FormatTooNew { found: u64, supported: u64 },
    /// A job on the writer panicked; its transaction was rolled back.
    #[error("internal error while applying a change: {0}")]
    Panicked(String),
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);

pub type StoreResult<T> = Result<T, StoreError>;

/// What kind of record a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    Lead,
    Activity,
    User,
    Form,
    Pool,
    Task,
    Notification,
    Enrollment,
    Mail,
}

impl Entity {
    /// Whether the feed shows a row of this entity to those who may see its lead, by the
    /// owner and pool the row records (tasks and notifications go to their assignee or
    /// recipient instead).
    pub fn visible_by_lead(self) -> bool {
        matches!(
            self,
            Entity::Lead | Entity::Activity | Entity::Enrollment | Entity::Mail
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Create,
    Update,
    Delete,
    Merge,
}

/// One changelog row. The owner and pool of the lead at the time of the change are kept so the
/// feed can be filtered by visibility even after the lead is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEntry {
    pub entity: Entity,
    pub id: Uuid,
    pub op: Op,
    pub at: Millis,
    pub lead_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub pool_id: Option<Uuid>,
}

/// The first response to a create made with an `Idempotency-Key`, replayed to retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotentResponse {
    /// SHA-256 of method, path and body: a retry must send the same request.
    pub fingerprint: Vec<u8>,
    pub status: u16,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub body: Vec<u8>,
    pub created_at: Millis,
}

type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Job = Box<dyn FnOnce(&mut Tx<'_>) -> (Result<(), StoreError>, Reply) + Send>;

/// A job as sent to the writer.
struct Queued {
    job: Job,
    /// A share of long background work: the writer runs the ordinary jobs queued with it first,
    /// in a batch of their own.
    background: bool,
}

/// Counts the ordinary writes sent to the writer and not yet started: what a long background
/// job yields to (see [`Tx::writes_waiting`]). Background jobs are not counted, so two of a
/// rescore's own writes never make each other stop early.
#[derive(Debug, Default)]
pub(crate) struct WaitingWrites(AtomicUsize);

impl WaitingWrites {
    pub(crate) fn any(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

/// One counted write: it leaves the count when it starts, or when it is dropped unrun (a
/// cancelled request, a failed batch, a stopped writer).
struct Counted(Arc<WaitingWrites>);

impl Counted {
    fn new(waiting: &Arc<WaitingWrites>) -> Counted {
        waiting.0.fetch_add(1, Ordering::AcqRel);
        Counted(waiting.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `job`, counted in `waiting` until it starts.
fn counted(job: Job, waiting: &Arc<WaitingWrites>) -> Job {
    let mark = Counted::new(waiting);
    Box::new(move |tx| {
        drop(mark);
        job(tx)
    })
}

struct Inner {
    db: Arc<Database>,
    syncs: Arc<fsync::Syncs>,
    jobs: Option<mpsc::Sender<Queued>>,
    waiting: Arc<WaitingWrites>,
    committed_seq: watch::Receiver<u64>,
    writer: Option<std::thread::JoinHandle<()>>,
    auth_epoch: Arc<std::sync::atomic::AtomicU64>,
    timer_added: Arc<tokio::sync::Notify>,
    mail_added: Arc<tokio::sync::Notify>,
}

impl Drop for Inner {
    /// Closes the queue and waits for the writer to commit what it holds, so the database file
    /// is closed (and its lock released) when the last handle is gone.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The redb file a data directory holds.
pub const DATA_FILE: &str = "leadline.redb";

/// A handle to the open store. Cheap to clone; the writer stops when the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (or creates) [`DATA_FILE`] in `dir` and starts the writer thread.
    pub fn open(dir: &Path, clock: Arc<dyn Clock>, cfg: WriterConfig) -> StoreResult<Store> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Storage(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(DATA_FILE);
        let (db, syncs) = match fsync::create_database(&path, cfg.cache_bytes) {
            Ok(opened) => opened,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked(path)),
            Err(e) => {
                return Err(StoreError::Storage(format!(
                    "cannot open {}: {e}",
                    path.display()
                )));
            }
        };
        let db = Arc::new(db);
        let last_seq = init_schema(&db)?;
        let auth_epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let timer_added = Arc::new(tokio::sync::Notify::new());
        let mail_added = Arc::new(tokio::sync::Notify::new());
        let waiting = Arc::new(WaitingWrites::default());
        let (jobs, committed_seq, writer) = writer::spawn(
            db.clone(),
            syncs.clone(),
            waiting.clone(),
            clock,
            cfg,
            last_seq,
            (auth_epoch.clone(), timer_added.clone(), mail_added.clone()),
        )?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                syncs,
                jobs: Some(jobs),
                waiting,
                committed_seq,
                writer: Some(writer),
                auth_epoch,
                timer_added,
                mail_added,
            }),
        })
    }

    /// Runs `f` inside the next group-commit transaction and returns its result once that
    /// transaction is durable. An `Err` from `f` rolls back the whole batch it ran in, so `f`
    /// returns domain outcomes (conflict, not found …) inside `Ok`.
    pub async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> StoreResult<R> + Send + 'static,
    {
        let (job, reply_rx) = make_job(f);
        let job = counted(job, &self.inner.waiting);
        self.send(
            Queued {
                job,
                background: false,
            },
            reply_rx,
        )
        .await
    }

    /// [`Store::write`] for a share of long background work (a rescore): it does not count as
    /// a write waiting, so it never makes another background job end its share early, and
    /// ordinary writes queued with it go first, in their own batch.
    pub async fn write_background<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> StoreResult<R> + Send + 'static,
    {
        let (job, reply_rx) = make_job(f);
        let background = true;
        self.send(Queued { job, background }, reply_rx).await
    }

    async fn send<R>(
        &self,
        job: Queued,
        reply_rx: oneshot::Receiver<StoreResult<R>>,
    ) -> StoreResult<R> {
        let jobs = self.inner.jobs.as_ref().ok_or(StoreError::WriterGone)?;
        jobs.send(job).await.map_err(|_| StoreError::WriterGone)?;
        reply_rx.await.map_err(|_| {
            StoreError::Storage(
                "the write batch this request was part of failed; nothing was saved".into(),
            )
        })?
    }

    /// A consistent read snapshot of durable data. A commit is visible to redb's readers a
    /// moment before its sync is done (see `fsync`); the snapshot is handed out once it is, so a
    /// read never shows what a crash could still take back.
    pub fn read(&self) -> StoreResult<Snapshot> {
        let txn = self.inner.db.begin_read()?;
        self.inner
            .syncs
            .wait_durable()
            .map_err(StoreError::Storage)?;
        Ok(Snapshot { txn })
    }

    /// The seq of the newest durable change (followers wait on this).
    pub fn committed_seq(&self) -> watch::Receiver<u64> {
        self.inner.committed_seq.clone()
    }

    /// Changes whenever a committed transaction touched users or tokens.
    pub fn auth_epoch(&self) -> u64 {
        self.inner
            .auth_epoch
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Signalled after a commit that added a timer, so the scheduler looks again at the
    /// earliest due time.
    pub fn timer_added(&self) -> Arc<tokio::sync::Notify> {
        self.inner.timer_added.clone()
    }

    /// Signalled after a commit that queued mail, so the sender looks at its queue again.
    pub fn mail_added(&self) -> Arc<tokio::sync::Notify> {
        self.inner.mail_added.clone()
    }

    /// Whether the writer is still running.
    pub fn writer_alive(&self) -> bool {
        self.inner.jobs.as_ref().is_some_and(|j| !j.is_closed())
    }

    /// Why the data file failed to sync, if it has: every write fails from then on, until the
    /// server is restarted and redb recovers the file.
    pub fn sync_failure(&self) -> Option<String> {
        self.inner.syncs.failure()
    }
}

/// Wraps `f` as a writer job whose reply arrives on the returned channel once the batch it ran
/// in has committed (or failed).
fn make_job<R, F>(f: F) -> (Job, oneshot::Receiver<StoreResult<R>>)
where
    R: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> StoreResult<R> + Send + 'static,
{
    let (reply_tx, reply_rx) = oneshot::channel::<StoreResult<R>>();
    let job: Job = Box::new(move |tx| match f(tx) {
        Ok(value) => (
            Ok(()),
            Box::new(move |failure: Option<&StoreError>| {
                let _ = reply_tx.send(match failure {
                    None => Ok(value),
                    Some(e) => Err(e.clone()),
                });
            }),
        ),
        Err(e) => {
            let reply_err = e.clone();
            (
                Err(e),
                Box::new(move |_: Option<&StoreError>| {
                    let _ = reply_tx.send(Err(reply_err));
                }),
            )
        }
    });
    (job, reply_rx)
}

/// Format 1 → 2: removes the all-leads rows of `lead_index` (field byte 0), which format 2
/// serves by merging the per-stage rows. One pass over a third of the index, once.
fn drop_all_leads_rows(txn: &redb::WriteTransaction) -> StoreResult<()> {
    let started = std::time::Instant::now();
    let mut index = txn.open_table(LEAD_INDEX)?;
    let field = [lead_index::Field::AllBeforeFormat2 as u8];
    let next = [field[0] + 1];
    let mut removed = 0u64;
    index.retain_in::<&[u8], _>(field.as_slice()..next.as_slice(), |_, _| {
        removed += 1;
        false
    })?;
    tracing::info!(
        removed,
        ms = started.elapsed().as_millis() as u64,
        "upgraded the store from format 1 to 2: removed the all-leads index rows"
    );
    Ok(())
}

/// Format 2 → 3: the stage rows sorted by score give way to one stage-score row per lead
/// (sorted by creation within each score, so score ranges in creation order are index ranges
/// too). One pass over the leads, once.
fn add_stage_score_rows(txn: &redb::WriteTransaction) -> StoreResult<()> {
    let started = std::time::Instant::now();
    let leads = txn.open_table(LEADS)?;
    let mut index = txn.open_table(LEAD_INDEX)?;
    for stage in crate::domain::lead::Stage::ALL {
        let from = lead_index::prefix(
            lead_index::Field::Stage,
            &[stage as u8],
            lead_index::SortKey::Score,
        );
        let to = lead_index::prefix_end(&from);
        index.retain_in::<&[u8], _>(from.as_slice()..to.as_slice(), |_, _| false)?;
    }
    let mut added = 0u64;
    for row in leads.iter()? {
        let (_, value) = row?;
        let lead: crate::domain::lead::Lead = decode(value.value())?;
        let prefix = lead_index::stage_score_prefix(lead.stage as u8, lead.score.total);
        index.insert(
            lead_index::key(&prefix, lead.created_at, lead.id.as_u128()).as_slice(),
            (),
        )?;
        added += 1;
        if added.is_multiple_of(100_000) {
            tracing::info!(added, "upgrading the store from format 2 to 3");
        }
    }
    tracing::info!(
        added,
        ms = started.elapsed().as_millis() as u64,
        "upgraded the store from format 2 to 3: leads sorted by score within their stage and score"
    );
    Ok(())
}

/// Format 3 → 4: an unowned lead in a pool keeps its pool rows and loses its owner rows with
/// no owner, which said the same (a rescore or an update moved both). The pool rows name the
/// leads, so no lead is read.
fn drop_pooled_owner_rows(txn: &redb::WriteTransaction) -> StoreResult<()> {
    use lead_index::{Field, SortKey};
    let started = std::time::Instant::now();
    let mut index = txn.open_table(LEAD_INDEX)?;
    let mut removed = 0u64;
    for sort in [SortKey::Created, SortKey::Score, SortKey::Updated] {
        let pooled = lead_index::prefix(Field::Pooled, &[], sort);
        let unowned = lead_index::prefix(Field::Owner, &[], sort);
        // One sort's positions at a time: 24 bytes a pooled lead.
        let end = lead_index::prefix_end(&pooled);
        let positions = index
            .range::<&[u8]>(pooled.as_slice()..end.as_slice())?
            .map(|row| row.map(|(k, _)| lead_index::position(k.value())))
            .collect::<Result<Vec<_>, _>>()?;
        for (sort_value, id) in positions.into_iter().flatten() {
            let key = lead_index::key(&unowned, sort_value, id);
            if index.remove(key.as_slice())?.is_some() {
                removed += 1;
                if removed.is_multiple_of(100_000) {
                    tracing::info!(removed, "upgrading the store from format 3 to 4");
                }
            }
        }
    }
    tracing::info!(
        removed,
        ms = started.elapsed().as_millis() as u64,
        "upgraded the store from format 3 to 4: pooled leads are listed by their pool rows only"
    );
    Ok(())
}

/// Creates every table and checks the format version (upgrading an older one); returns the
/// last changelog seq.
fn init_schema(db: &Database) -> StoreResult<u64> {
    let txn = db.begin_write()?;
    let last_seq;
    {
        let mut meta = txn.open_table(META)?;
        let found = meta.get("format_version")?.map(|v| v.value());
        match found {
            None => {
                meta.insert("format_version", FORMAT_VERSION)?;
            }
            Some(v) if v > FORMAT_VERSION => {
                return Err(StoreError::FormatTooNew {
                    found: v,
                    supported: FORMAT_VERSION,
                });
            }
            Some(v @ 1..=3) => {
                if v == 1 {
                    drop_all_leads_rows(&txn)?;
                }
                if v <= 2 {
                    add_stage_score_rows(&txn)?;
                }
                drop_pooled_owner_rows(&txn)?;
                meta.insert("format_version", FORMAT_VERSION)?;
            }
            Some(_) => {}
        }
        txn.open_table(LEADS)?;
        txn.open_table(LEAD_INDEX)?;
        txn.open_table(LEAD_BY_EMAIL)?;
        txn.open_table(LEAD_BY_PHONE)?;
        txn.open_table(ACTIVITIES)?;
        txn.open_table(ACTIVITY_BY_LEAD)?;
        txn.open_table(LEAD_EVENTS)?;
        txn.open_table(USERS)?;
        txn.open_table(USER_BY_NAME)?;
        txn.open_table(USER_BY_EMAIL)?;
        txn.open_table(TOKENS)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(IDEMPOTENCY_BY_LEAD)?;
        txn.open_table(ALT_KEYS)?;
        txn.open_table(ALT_KEYS_BY_LEAD)?;
        txn.open_table(DUPLICATE_KEYS)?;
        txn.open_table(FORMS)?;
        txn.open_table(FORM_BY_KEY)?;
        txn.open_table(VISITORS)?;
        txn.open_table(PAGE_VIEWS)?;
        txn.open_table(LEAD_VISITORS)?;
        txn.open_table(LEAD_STATS)?;
        txn.open_table(SCORE_DETAILS)?;
        txn.open_table(SCORE_REVIEW)?;
        txn.open_table(POOLS)?;
        txn.open_table(POOL_BY_NAME)?;
        txn.open_table(POOL_CLAIMS)?;
        txn.open_table(CLAIM_BY_LEAD)?;
        txn.open_table(ROUND_ROBIN)?;
        txn.open_table(TIMERS)?;
        txn.open_table(TIMERS_BY_SUBJECT)?;
        txn.open_table(LEAD_SLA)?;
        txn.open_table(TASKS)?;
        txn.open_table(TASK_BY_OWNER)?;
        txn.open_table(TASK_BY_LEAD)?;
        txn.open_table(NOTIFICATIONS)?;
        txn.open_table(NOTIFICATION_BY_RECIPIENT)?;
        txn.open_table(NOTIFICATION_BY_LEAD)?;
        txn.open_table(ENROLLMENTS)?;
        txn.open_table(ENROLLMENT_BY_LEAD)?;
        txn.open_table(OPEN_ENROLLMENT)?;
        txn.open_table(MAILS)?;
        txn.open_table(MAIL_QUEUE)?;
        txn.open_table(MAIL_BY_LEAD)?;
        txn.open_table(MAIL_TOKENS)?;
        tx_outbox::create_tables(&txn)?;
        count_owner_loads(&txn, &mut meta)?;
        let mut secrets = txn.open_table(SECRETS)?;
        for name in SECRET_NAMES {
            if secrets.get(name)?.is_none() {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes)
                    .map_err(|e| StoreError::Storage(format!("no randomness for a secret: {e}")))?;
                secrets.insert(name, bytes.as_slice())?;
            }
        }
        let changelog = txn.open_table(CHANGELOG)?;
        last_seq = changelog.last()?.map(|(k, _)| k.value()).unwrap_or(0);
    }
    txn.commit()?;
    Ok(last_seq)
}

/// Counts every user's open leads into `owner_load` once, for stores written before the
/// table existed; later writes keep it current.
fn count_owner_loads(
    txn: &redb::WriteTransaction,
    meta: &mut redb::Table<'_, &'static str, u64>,
) -> StoreResult<()> {
    const DONE: &str = "owner_load_counted";
    if meta.get(DONE)?.is_some() {
        return Ok(());
    }
    let leads = txn.open_table(LEADS)?;
    let mut load = txn.open_table(OWNER_LOAD)?;
    let mut counts: std::collections::HashMap<u128, u64> = std::collections::HashMap::new();
    for row in leads.iter()? {
        let (_, v) = row?;
        let lead: crate::domain::lead::Lead = decode(v.value())?;
        if let Some(o) = open_owner(&lead) {
            *counts.entry(o.as_u128()).or_default() += 1;
        }
    }
    for (owner, n) in counts {
        load.insert(owner, n)?;
    }
    meta.insert(DONE, 1)?;
    Ok(())
}

/// The lead an email or phone (`value`) finds: the lead that has it, or else the lead that
/// absorbed a lead that had it (its alt key `prefix` + `value`). Shared by writes and reads so
/// both find the same lead.
pub(crate) fn lead_by_key<D, A>(
    direct: &D,
    alt: &A,
    prefix: &str,
    value: &str,
) -> StoreResult<Option<Uuid>>
where
    D: ReadableTable<&'static str, u128>,
    A: ReadableTable<&'static str, u128>,
{
    if let Some(v) = direct.get(value)? {
        return Ok(Some(Uuid::from_u128(v.value())));
    }
    Ok(alt
        .get(format!("{prefix}{value}").as_str())?
        .map(|v| Uuid::from_u128(v.value())))
}

pub(crate) fn get_record<T, Tbl>(table: &Tbl, id: u128) -> StoreResult<Option<T>>
where
    T: Record,
    Tbl: ReadableTable<u128, &'static [u8]>,
{
    match table.get(id)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

/// How many of a lead's latest activities [`has_activity_text`] looks through, so a lead with a
/// long history cannot hold the writer.
pub const ACTIVITY_TEXT_SCAN: usize = 1000;

/// Whether one of `lead`'s latest [`ACTIVITY_TEXT_SCAN`] activities is a `kind` with this text
/// (an imported note already there). Shared by the writer and read snapshots (a dry run).
pub(crate) fn has_activity_text<I, A>(
    by_lead: &I,
    activities: &A,
    lead: Uuid,
    kind: &str,
    text: &str,
) -> StoreResult<bool>
where
    I: ReadableTable<(u128, i64, u128), ()>,
    A: ReadableTable<u128, &'static [u8]>,
{
    let l = lead.as_u128();
    let rows = by_lead
        .range((l, i64::MIN, 0)..=(l, i64::MAX, u128::MAX))?
        .rev()
        .take(ACTIVITY_TEXT_SCAN);
    for row in rows {
        let (_, _, id) = row?.0.value();
        if let Some(a) = get_record::<crate::domain::activity::Activity, _>(activities, id)?
            && a.kind == kind
            && a.text.as_deref() == Some(text)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads the records of a range of ids in step with a list of ids in the same order: a
/// merge, instead of one lookup from the root per id.
struct RowsInOrder<'a> {
    rows: std::iter::Peekable<redb::Range<'a, u128, &'static [u8]>>,
}

impl<'a> RowsInOrder<'a> {
    fn new(rows: redb::Range<'a, u128, &'static [u8]>) -> Self {
        RowsInOrder {
            rows: rows.peekable(),
        }
    }

    /// The record stored under `id`, if any; ids must be asked for in ascending order.
    fn take<T: Record>(&mut self, id: u128) -> StoreResult<Option<T>> {
        // Rows before `id` belong to no one asked for; a read error is taken and returned.
        while let Some(row) = self
            .rows
            .next_if(|row| row.as_ref().map_or(true, |(k, _)| k.value() <= id))
        {
            let (k, v) = row?;
            if k.value() == id {
                return Ok(Some(decode(v.value())?));
            }
        }
        Ok(None)
    }
}

/// The secrets `init_schema` makes (see `tables::SECRETS`).
pub const SECRET_NAMES: &[&str] = &["form_token"];

/// A likely-duplicate key and the ids of the leads that share it.
pub type DuplicateGroupIds = (String, Vec<Uuid>);

/// A page of a rep's tasks and the `(due, id)` key to continue from, if there is more.
pub type TaskPage = (Vec<crate::domain::work::Task>, Option<(i64, u128)>);

/// A read-only, consistent view of the store.
pub struct Snapshot {
    txn: ReadTransaction,
}

impl Snapshot {
    pub fn txn(&self) -> &ReadTransaction {
        &self.txn
    }

    pub fn lead(&self, id: Uuid) -> StoreResult<Option<crate::domain::lead::Lead>> {
        get_record(&self.txn.open_table(LEADS)?, id.as_u128())
    }

    pub fn user(&self, id: Uuid) -> StoreResult<Option<crate::domain::user::User>> {
        get_record(&self.txn.open_table(USERS)?, id.as_u128())
    }

    pub fn user_by_name(&self, name: &str) -> StoreResult<Option<crate::domain::user::User>> {
        let id = self
            .txn
            .open_table(USER_BY_NAME)?
            .get(name.to_lowercase().as_str())?
            .map(|v| v.value());
        match id {
            Some(id) => get_record(&self.txn.open_table(USERS)?, id),
            None => Ok(None),
        }
    }

    pub fn user_by_email(&self, email: &str) -> StoreResult<Option<crate::domain::user::User>> {
        let id = self
            .txn
            .open_table(USER_BY_EMAIL)?
            .get(email)?
            .map(|v| v.value());
        match id {
            Some(id) => get_record(&self.txn.open_table(USERS)?, id),
            None => Ok(None),
        }
    }

    pub fn users(&self) -> StoreResult<Vec<crate::domain::user::User>> {
        let table = self.txn.open_table(USERS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    pub fn user_count(&self) -> StoreResult<u64> {
        Ok(self.txn.open_table(USERS)?.len()?)
    }

    pub fn token(&self, hash: &[u8; 32]) -> StoreResult<Option<crate::domain::user::Token>> {
        match self.txn.open_table(TOKENS)?.get(hash.as_slice())? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// A lead's activity summary (empty when it has no activity).
    pub fn lead_stats(&self, id: Uuid) -> StoreResult<crate::domain::stats::ActivityStats> {
        Ok(get_record(&self.txn.open_table(LEAD_STATS)?, id.as_u128())?.unwrap_or_default())
    }

    /// The activity stats and score details of `leads`, which must be in id order (as
    /// [`Snapshot::leads_after`] returns them): both tables are read as one range each.
    pub fn scoring_inputs(
        &self,
        leads: &[crate::domain::lead::Lead],
    ) -> StoreResult<
        Vec<(
            crate::domain::stats::ActivityStats,
            Option<crate::domain::score::ScoreDetails>,
        )>,
    > {
        let (Some(first), Some(last)) = (leads.first(), leads.last()) else {
            return Ok(Vec::new());
        };
        if !leads.is_sorted_by_key(|l| l.id) {
            return Err(StoreError::Storage(
                "scoring inputs must be asked for in id order".into(),
            ));
        }
        let span = first.id.as_u128()..=last.id.as_u128();
        let stats = self.txn.open_table(LEAD_STATS)?;
        let details = self.txn.open_table(SCORE_DETAILS)?;
        let mut stats = RowsInOrder::new(stats.range(span.clone())?);
        let mut details = RowsInOrder::new(details.range(span)?);
        leads
            .iter()
            .map(|l| {
                let id = l.id.as_u128();
                Ok((stats.take(id)?.unwrap_or_default(), details.take(id)?))
            })
            .collect()
    }

    pub fn score_details(
        &self,
        id: Uuid,
    ) -> StoreResult<Option<crate::domain::score::ScoreDetails>> {
        get_record(&self.txn.open_table(SCORE_DETAILS)?, id.as_u128())
    }

    /// Up to `limit` leads whose score is due for a time-based review at or before `now`,
    /// soonest first; and the due time of the next one after those.
    pub fn score_reviews_due(
        &self,
        now: Millis,
        limit: usize,
    ) -> StoreResult<(Vec<Uuid>, Option<Millis>)> {
        let table = self.txn.open_table(SCORE_REVIEW)?;
        let mut due = Vec::new();
        for row in table.iter()? {
            let (k, _) = row?;
            let (at, id) = k.value();
            if at > now || due.len() >= limit {
                return Ok((due, Some(at)));
            }
            due.push(Uuid::from_u128(id));
        }
        Ok((due, None))
    }

    /// Up to `limit` timers due at or before `now`, earliest first; and the due time of the
    /// next timer after those (what the scheduler sleeps until).
    pub fn timers_due(
        &self,
        now: Millis,
        limit: usize,
    ) -> StoreResult<(Vec<crate::domain::work::Timer>, Option<Millis>)> {
        let table = self.txn.open_table(TIMERS)?;
        let mut due = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let (at, _) = k.value();
            if at > now || due.len() >= limit {
                return Ok((due, Some(at)));
            }
            due.push(decode(v.value())?);
        }
        Ok((due, None))
    }

    /// How many timers are pending.
    pub fn timer_count(&self) -> StoreResult<u64> {
        Ok(self.txn.open_table(TIMERS)?.len()?)
    }

    pub fn timers_of(&self, subject: Uuid) -> StoreResult<Vec<crate::domain::work::Timer>> {
        let by_subject = self.txn.open_table(TIMERS_BY_SUBJECT)?;
        let timers = self.txn.open_table(TIMERS)?;
        let s = subject.as_u128();
        let mut out = Vec::new();
        for row in by_subject.range((s, 0)..=(s, u128::MAX))? {
            let (k, v) = row?;
            if let Some(t) = timers.get((v.value(), k.value().1))? {
                out.push(decode(t.value())?);
            }
        }
        out.sort_by_key(|t: &crate::domain::work::Timer| t.due);
        Ok(out)
    }

    pub fn sla_state(&self, lead: Uuid) -> StoreResult<Option<crate::domain::sla::SlaState>> {
        get_record(&self.txn.open_table(LEAD_SLA)?, lead.as_u128())
    }

    pub fn pool(&self, id: Uuid) -> StoreResult<Option<crate::domain::work::Pool>> {
        get_record(&self.txn.open_table(POOLS)?, id.as_u128())
    }

    pub fn pools(&self) -> StoreResult<Vec<crate::domain::work::Pool>> {
        let table = self.txn.open_table(POOLS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Open leads a user holds now.
    pub fn load_of(&self, user: Uuid) -> StoreResult<u64> {
        Ok(self
            .txn
            .open_table(OWNER_LOAD)?
            .get(user.as_u128())?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    pub fn task(&self, id: Uuid) -> StoreResult<Option<crate::domain::work::Task>> {
        get_record(&self.txn.open_table(TASKS)?, id.as_u128())
    }

    /// Tasks of `owner` by due time from `from` (inclusive, `(due, id)`), with their done flag
    /// from the index, until `keep` has taken `limit` or `scan` rows were examined. Returns the
    /// tasks and the key to continue from, if any.
    pub fn tasks_of_owner(
        &self,
        owner: Uuid,
        from: (i64, u128),
        upto_due: i64,
        limit: usize,
        scan: usize,
        keep: impl Fn(bool) -> bool,
    ) -> StoreResult<TaskPage> {
        let index = self.txn.open_table(TASK_BY_OWNER)?;
        let tasks = self.txn.open_table(TASKS)?;
        let o = owner.as_u128();
        let mut out = Vec::new();
        let rows = index.range((o, from.0, from.1)..=(o, upto_due, u128::MAX))?;
        for (seen, row) in rows.enumerate() {
            let (k, done) = row?;
            let (_, due, id) = k.value();
            if out.len() >= limit || seen >= scan {
                return Ok((out, Some((due, id))));
            }
            if keep(done.value())
                && let Some(t) = get_record(&tasks, id)?
            {
                out.push(t);
            }
        }
        Ok((out, None))
    }

    pub fn tasks_of_lead(&self, lead: Uuid) -> StoreResult<Vec<crate::domain::work::Task>> {
        self.records_of_lead(TASK_BY_LEAD, TASKS, lead)
    }

    /// The records of `table` that `index` files under `lead`, in id order (oldest first).
    pub(crate) fn records_of_lead<T: Record>(
        &self,
        index: redb::TableDefinition<(u128, u128), ()>,
        table: redb::TableDefinition<u128, &[u8]>,
        lead: Uuid,
    ) -> StoreResult<Vec<T>> {
        let index = self.txn.open_table(index)?;
        let table = self.txn.open_table(table)?;
        let l = lead.as_u128();
        let mut out = Vec::new();
        for row in index.range((l, 0)..=(l, u128::MAX))? {
            if let Some(r) = get_record(&table, row?.0.value().1)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Notifications about `lead`, oldest first.
    pub fn notifications_of_lead(
        &self,
        lead: Uuid,
    ) -> StoreResult<Vec<crate::domain::work::Notification>> {
        self.records_of_lead(NOTIFICATION_BY_LEAD, NOTIFICATIONS, lead)
    }

    /// Webhook deliveries about `lead`, oldest first.
    pub fn deliveries_of_lead(
        &self,
        lead: Uuid,
    ) -> StoreResult<Vec<crate::domain::webhook::Delivery>> {
        self.records_of_lead(DELIVERY_BY_LEAD, DELIVERIES, lead)
    }

    /// A user's notifications, newest first, starting below `before` (an id).
    pub fn notifications_of(
        &self,
        recipient: Uuid,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<crate::domain::work::Notification>> {
        let index = self.txn.open_table(NOTIFICATION_BY_RECIPIENT)?;
        let notes = self.txn.open_table(NOTIFICATIONS)?;
        let r = recipient.as_u128();
        let hi = before.map_or(u128::MAX, |b| b.as_u128().saturating_sub(1));
        let mut out = Vec::new();
        for row in index.range((r, 0)..=(r, hi))?.rev() {
            let (k, _) = row?;
            if out.len() >= limit {
                break;
            }
            if let Some(n) = get_record(&notes, k.value().1)? {
                out.push(n);
            }
        }
        Ok(out)
    }

    pub fn activity(&self, id: Uuid) -> StoreResult<Option<crate::domain::activity::Activity>> {
        get_record(&self.txn.open_table(ACTIVITIES)?, id.as_u128())
    }

    /// See [`has_activity_text`].
    pub fn has_activity_text(&self, lead: Uuid, kind: &str, text: &str) -> StoreResult<bool> {
        let by_lead = self.txn.open_table(ACTIVITY_BY_LEAD)?;
        let activities = self.txn.open_table(ACTIVITIES)?;
        has_activity_text(&by_lead, &activities, lead, kind, text)
    }

    /// A lead's activities in order of occurrence (oldest first).
    pub fn activities_of(&self, lead: Uuid) -> StoreResult<Vec<crate::domain::activity::Activity>> {
        let index = self.txn.open_table(ACTIVITY_BY_LEAD)?;
        let table = self.txn.open_table(ACTIVITIES)?;
        let l = lead.as_u128();
        let mut out = Vec::new();
        for row in index.range((l, i64::MIN, 0)..=(l, i64::MAX, u128::MAX))? {
            let (k, _) = row?;
            let (_, _, id) = k.value();
            if let Some(a) = get_record(&table, id)? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// The lead with this email, or the lead that absorbed a lead with it.
    pub fn lead_id_by_email(&self, email: &str) -> StoreResult<Option<Uuid>> {
        let (direct, alt) = (
            self.txn.open_table(LEAD_BY_EMAIL)?,
            self.txn.open_table(ALT_KEYS)?,
        );
        lead_by_key(&direct, &alt, "e:", email)
    }

    /// The lead with this phone, or the lead that absorbed a lead with it.
    pub fn lead_id_by_phone(&self, phone: &str) -> StoreResult<Option<Uuid>> {
        let (direct, alt) = (
            self.txn.open_table(LEAD_BY_PHONE)?,
            self.txn.open_table(ALT_KEYS)?,
        );
        lead_by_key(&direct, &alt, "p:", phone)
    }

    /// Up to `n` leads in id (creation) order after `after`, for walking every lead in pages.
    pub fn leads_after(
        &self,
        after: Option<Uuid>,
        n: usize,
    ) -> StoreResult<Vec<crate::domain::lead::Lead>> {
        let table = self.txn.open_table(LEADS)?;
        let start = after.map_or(0, |a| a.as_u128().saturating_add(1));
        let mut out = Vec::with_capacity(n.min(4096));
        if after.is_some_and(|a| a.as_u128() == u128::MAX) {
            return Ok(out);
        }
        for row in table.range(start..)?.take(n) {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// The seq of the newest change in this snapshot (0 if none).
    pub fn last_seq(&self) -> StoreResult<u64> {
        Ok(self
            .txn
            .open_table(CHANGELOG)?
            .last()?
            .map_or(0, |(k, _)| k.value()))
    }

    /// A secret made on first start (one of `SECRET_NAMES`).
    pub fn secret(&self, name: &str) -> StoreResult<Vec<u8>> {
        match self.txn.open_table(SECRETS)?.get(name)? {
            Some(v) => Ok(v.value().to_vec()),
            None => Err(StoreError::Storage(format!("secret {name} is missing"))),
        }
    }

    /// The lead an alt key (`e:`, `p:`, `m:`, `r:`; see `tables::ALT_KEYS`) points at.
    pub fn alt_key(&self, key: &str) -> StoreResult<Option<Uuid>> {
        Ok(self
            .txn
            .open_table(ALT_KEYS)?
            .get(key)?
            .map(|v| Uuid::from_u128(v.value())))
    }

    pub fn form(&self, id: Uuid) -> StoreResult<Option<crate::domain::form::Form>> {
        get_record(&self.txn.open_table(FORMS)?, id.as_u128())
    }

    pub fn form_by_key(&self, key: &str) -> StoreResult<Option<crate::domain::form::Form>> {
        match self.txn.open_table(FORM_BY_KEY)?.get(key)? {
            Some(id) => self.form(Uuid::from_u128(id.value())),
            None => Ok(None),
        }
    }

    /// Every form, oldest first.
    pub fn forms(&self) -> StoreResult<Vec<crate::domain::form::Form>> {
        let table = self.txn.open_table(FORMS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    pub fn visitor(&self, id: &str) -> StoreResult<Option<crate::domain::visitor::Visitor>> {
        match self.txn.open_table(VISITORS)?.get(id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// A visitor's anonymous page views, oldest first.
    pub fn page_views(&self, visitor: &str) -> StoreResult<Vec<crate::domain::visitor::PageView>> {
        let table = self.txn.open_table(PAGE_VIEWS)?;
        let mut out = Vec::new();
        for row in table.range((visitor, 0)..=(visitor, u128::MAX))? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// The visitor ids stitched to a lead.
    pub fn visitors_of(&self, lead: Uuid) -> StoreResult<Vec<String>> {
        let l = lead.as_u128();
        let table = self.txn.open_table(LEAD_VISITORS)?;
        let mut out = Vec::new();
        for row in table.range((l, "")..=(l, "\u{10FFFF}"))? {
            out.push(row?.0.value().1.to_owned());
        }
        Ok(out)
    }

    /// The alt keys of a lead (emails, phones and ids of leads merged into it).
    pub fn alt_keys_of(&self, lead: Uuid) -> StoreResult<Vec<String>> {
        let l = lead.as_u128();
        let table = self.txn.open_table(ALT_KEYS_BY_LEAD)?;
        let mut out = Vec::new();
        for row in table.range((l, "")..=(l, "\u{10FFFF}"))? {
            out.push(row?.0.value().1.to_owned());
        }
        Ok(out)
    }

    /// Groups of leads sharing a likely-duplicate key, in key order after `after`, examining at
    /// most `scan` index rows. Returns the groups (key, lead ids) and the last key examined.
    pub fn duplicate_groups(
        &self,
        after: Option<&str>,
        scan: usize,
    ) -> StoreResult<(Vec<DuplicateGroupIds>, Option<String>)> {
        let table = self.txn.open_table(DUPLICATE_KEYS)?;
        let mut groups: Vec<(String, Vec<Uuid>)> = Vec::new();
        let mut last: Option<String> = None;
        let range = match after {
            // Every row of the key `after` sorts below (after, MAX); start past them.
            Some(a) => table.range((a, u128::MAX)..)?,
            None => table.range::<(&str, u128)>(..)?,
        };
        let mut examined = 0;
        for row in range {
            let (k, _) = row?;
            let (key, id) = k.value();
            if after == Some(key) {
                continue;
            }
            if last.as_deref() != Some(key) {
                // Stop only between keys, so a group is never split across pages.
                if examined >= scan {
                    groups.retain(|g| g.1.len() > 1);
                    return Ok((groups, last));
                }
                last = Some(key.to_owned());
                groups.push((key.to_owned(), Vec::new()));
            }
            examined += 1;
            if let Some(g) = groups.last_mut() {
                g.1.push(Uuid::from_u128(id));
            }
        }
        groups.retain(|g| g.1.len() > 1);
        Ok((groups, None))
    }

    /// A lead's system events, oldest first.
    pub fn events_of(&self, lead: Uuid) -> StoreResult<Vec<crate::domain::activity::LeadEvent>> {
        let table = self.txn.open_table(LEAD_EVENTS)?;
        let l = lead.as_u128();
        let mut out = Vec::new();
        for row in table.range((l, 0)..=(l, u128::MAX))? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Changelog rows after `since`, at most `scan` of them.
    pub fn changes_after(&self, since: u64, scan: usize) -> StoreResult<Vec<(u64, ChangeEntry)>> {
        let table = self.txn.open_table(CHANGELOG)?;
        let mut out = Vec::new();
        for row in table.range(since.saturating_add(1)..)?.take(scan) {
            let (k, v) = row?;
            out.push((k.value(), decode(v.value())?));
        }
        Ok(out)
    }

    pub fn lead_count(&self) -> StoreResult<u64> {
        Ok(self.txn.open_table(LEADS)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stats::ActivityStats;

    #[test]
    fn rows_in_order_find_each_id_and_skip_the_gaps() {
        let db = in_memory();
        let stats_of = |n: u32| ActivityStats::from_counts([("page_view", n)], [], 0);
        let w = db.begin_write().expect("a write transaction");
        {
            let mut t = w.open_table(LEAD_STATS).expect("the table");
            for id in [2u128, 4, 6, 9] {
                t.insert(id, codec::encode(&stats_of(id as u32)).as_slice())
                    .expect("an insert");
            }
        }
        w.commit().expect("a commit");
        let r = db.begin_read().expect("a read transaction");
        let t = r.open_table(LEAD_STATS).expect("the table");
        // The range starts inside the table and ends before its last row, as a chunk does.
        let mut rows = RowsInOrder::new(t.range(1..=7).expect("a range"));
        let found: Vec<Option<u32>> = (1..=7u128)
            .map(|id| {
                rows.take::<ActivityStats>(id)
                    .expect("a read")
                    .map(|s| s.count("page_view"))
            })
            .collect();
        assert_eq!(
            found,
            vec![None, Some(2), None, Some(4), None, Some(6), None]
        );
    }

    fn in_memory() -> Database {
        Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory database")
    }

    fn format_version(db: &Database) -> Option<u64> {
        let r = db.begin_read().expect("a read transaction");
        let meta = r.open_table(META).expect("the meta table");
        meta.get("format_version")
            .expect("a read")
            .map(|v| v.value())
    }

    fn index_rows(db: &Database) -> Vec<Vec<u8>> {
        let r = db.begin_read().expect("a read transaction");
        let t = r.open_table(LEAD_INDEX).expect("the index");
        t.iter()
            .expect("an iterator")
            .map(|row| row.expect("a row").0.value().to_vec())
            .collect()
    }

    #[test]
    fn a_format_1_store_loses_its_all_leads_rows_and_keeps_the_rest() {
        let db = in_memory();
        init_schema(&db).expect("a fresh schema");
        assert_eq!(format_version(&db), Some(FORMAT_VERSION));
        let kept = lead_index::key(
            &lead_index::prefix(lead_index::Field::Stage, &[0], lead_index::SortKey::Created),
            5,
            7,
        );
        let w = db.begin_write().expect("a write transaction");
        {
            let mut meta = w.open_table(META).expect("the meta table");
            meta.insert("format_version", 1).expect("an insert");
            let mut index = w.open_table(LEAD_INDEX).expect("the index");
            for sort in [
                lead_index::SortKey::Created,
                lead_index::SortKey::Score,
                lead_index::SortKey::Updated,
            ] {
                let all = lead_index::prefix(lead_index::Field::AllBeforeFormat2, &[], sort);
                for id in 0..300u128 {
                    index
                        .insert(lead_index::key(&all, 5, id).as_slice(), ())
                        .expect("an insert");
                }
            }
            index.insert(kept.as_slice(), ()).expect("an insert");
        }
        w.commit().expect("a commit");

        init_schema(&db).expect("the upgrade");
        assert_eq!(format_version(&db), Some(FORMAT_VERSION));
        assert_eq!(index_rows(&db), vec![kept.clone()]);
        // Opening again changes nothing.
        init_schema(&db).expect("a second open");
        assert_eq!(index_rows(&db), vec![kept]);
    }

    #[test]
    fn a_format_2_store_trades_its_stage_rows_by_score_for_stage_score_rows() {
        let db = in_memory();
        init_schema(&db).expect("a fresh schema");
        let leads: Vec<crate::domain::lead::Lead> = [(1u128, 0), (2, 45), (3, -20)]
            .into_iter()
            .map(|(id, score)| {
                let mut lead = crate::domain::lead::NewLead::default()
                    .into_lead(Uuid::from_u128(id), 1_000 + id as i64);
                lead.score.total = score;
                lead
            })
            .collect();
        let w = db.begin_write().expect("a write transaction");
        {
            w.open_table(META)
                .expect("the meta table")
                .insert("format_version", 2)
                .expect("an insert");
            let mut table = w.open_table(LEADS).expect("leads");
            let mut index = w.open_table(LEAD_INDEX).expect("the index");
            for lead in &leads {
                table
                    .insert(lead.id.as_u128(), codec::encode(lead).as_slice())
                    .expect("a lead");
                // Format 2 sorted each stage's rows by score, with no stage-score rows.
                for row in lead_index::rows(lead) {
                    if lead_index::stage_score_of(&row).is_none() {
                        index.insert(row.as_slice(), ()).expect("a row");
                    }
                }
                let by_score = lead_index::prefix(
                    lead_index::Field::Stage,
                    &[lead.stage as u8],
                    lead_index::SortKey::Score,
                );
                let row =
                    lead_index::key(&by_score, i64::from(lead.score.total), lead.id.as_u128());
                index.insert(row.as_slice(), ()).expect("a row");
            }
        }
        w.commit().expect("a commit");

        init_schema(&db).expect("the upgrade");
        assert_eq!(format_version(&db), Some(FORMAT_VERSION));
        let mut want: Vec<Vec<u8>> = leads.iter().flat_map(lead_index::rows).collect();
        want.sort();
        assert_eq!(index_rows(&db), want, "every row a format 3 lead has");
        init_schema(&db).expect("a second open");
        assert_eq!(index_rows(&db), want, "opening again adds nothing");
    }

    #[test]
    fn a_format_3_store_drops_the_owner_rows_of_pooled_leads() {
        let db = in_memory();
        init_schema(&db).expect("a fresh schema");
        let (pool, rep) = (Uuid::from_u128(77), Uuid::from_u128(88));
        // Pooled, placed nowhere, owned, and owned while still naming a pool.
        let placements = [
            (1u128, None, Some(pool)),
            (2, None, None),
            (3, Some(rep), None),
            (4, Some(rep), Some(pool)),
            (5, None, Some(pool)),
        ];
        let leads: Vec<crate::domain::lead::Lead> = placements
            .into_iter()
            .map(|(id, owner, pool)| {
                let mut lead = crate::domain::lead::NewLead::default()
                    .into_lead(Uuid::from_u128(id), 1_000 + id as i64);
                lead.owner_id = owner;
                lead.pool_id = pool;
                lead.score.total = 10 * id as i32;
                lead.updated_at = 5_000 - id as i64;
                lead
            })
            .collect();
        let w = db.begin_write().expect("a write transaction");
        {
            w.open_table(META)
                .expect("the meta table")
                .insert("format_version", 3)
                .expect("an insert");
            let mut table = w.open_table(LEADS).expect("leads");
            let mut index = w.open_table(LEAD_INDEX).expect("the index");
            for lead in &leads {
                table
                    .insert(lead.id.as_u128(), codec::encode(lead).as_slice())
                    .expect("a lead");
                for row in lead_index::rows(lead) {
                    index.insert(row.as_slice(), ()).expect("a row");
                }
                // Format 3 gave a pooled lead owner rows with no owner as well.
                if lead_index::is_pooled(lead) {
                    for sort in [
                        lead_index::SortKey::Created,
                        lead_index::SortKey::Score,
                        lead_index::SortKey::Updated,
                    ] {
                        let unowned = lead_index::prefix(lead_index::Field::Owner, &[], sort);
                        let row = lead_index::key(&unowned, sort.value_of(lead), lead.id.as_u128());
                        index.insert(row.as_slice(), ()).expect("a row");
                    }
                }
            }
        }
        w.commit().expect("a commit");
        let before = index_rows(&db).len();

        init_schema(&db).expect("the upgrade");
        assert_eq!(format_version(&db), Some(FORMAT_VERSION));
        let mut want: Vec<Vec<u8>> = leads.iter().flat_map(lead_index::rows).collect();
        want.sort();
        assert_eq!(index_rows(&db), want, "every row a format 4 lead has");
        assert_eq!(
            before - want.len(),
            6,
            "three rows for each of the two pooled leads"
        );
        init_schema(&db).expect("a second open");
        assert_eq!(index_rows(&db), want, "opening again changes nothing");
    }

    #[test]
    fn a_store_from_a_newer_release_is_refused() {
        let db = in_memory();
        init_schema(&db).expect("a fresh schema");
        let w = db.begin_write().expect("a write transaction");
        w.open_table(META)
            .expect("the meta table")
            .insert("format_version", FORMAT_VERSION + 1)
            .expect("an insert");
        w.commit().expect("a commit");
        assert!(matches!(
            init_schema(&db),
            Err(StoreError::FormatTooNew { found, supported })
                if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION
        ));
    }
}
