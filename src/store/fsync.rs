//! The file under redb, and when its writes are durable.
//!
//! redb syncs the file once per durable commit. Here that sync runs on a syncer thread: a commit
//! returns once its pages and header are written, and the writer applies the next batch while
//! the disk flushes. The order of what reaches the disk does not change, because no write (or
//! resize) reaches the file until every sync asked for before it has finished, so the file goes
//! through exactly the states it would with the sync inline and redb's crash recovery holds as
//! before. Whatever depends on durability waits for it here: the writer answers a batch only
//! once the sync of its commit is done ([`Syncs::after_durable`]), and a read snapshot is handed
//! out only once everything it can see is durable ([`Syncs::wait_durable`]), so nothing that can
//! be lost in a crash is ever answered, shown or followed.
//!
//! A failed sync leaves the file in a state nobody can vouch for: every later write and sync of
//! this handle, every reply waiting on it and every read snapshot fails, and the server must be
//! restarted (redb then recovers the last commit that was durable).

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// What runs once a commit is durable (`None`), or once its sync has failed (`Some(why)`).
pub type Completion = Box<dyn FnOnce(Option<&str>) + Send>;

/// Sync requests and their progress, shared by the backend, the syncer thread, the writer and
/// the readers.
pub struct Syncs {
    state: Mutex<SyncState>,
    changed: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Syncs asked for so far; a commit's sync is the number it made this.
    requested: u64,
    /// Syncs finished: every write issued before sync `done` was asked for is durable.
    done: u64,
    /// Why a sync failed. Once set, nothing is durable any more.
    failed: Option<String>,
    /// Work waiting for a sync, in the order it was asked for.
    waiting: VecDeque<(u64, Completion)>,
    /// The backend is closed: the syncer stops once nothing is left to sync.
    closed: bool,
}

impl Syncs {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sync that makes everything written so far durable (asked for by the last commit).
    pub fn requested(&self) -> u64 {
        self.lock().requested
    }

    /// Why a sync failed, if one has: from then on nothing can be written until a restart.
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Runs `then` once sync `sync` is done, on the syncer thread, or now if it already is.
    pub fn after_durable(&self, sync: u64, then: Completion) {
        let mut state = self.lock();
        if let Some(why) = state.failed.clone() {
            drop(state);
            then(Some(&why));
        } else if state.done >= sync {
            drop(state);
            then(None);
        } else {
            state.waiting.push_back((sync, then));
        }
    }

    /// Blocks until every sync asked for so far is done: what a snapshot taken before this call
    /// can see is then durable. Waits at most for the sync in flight and the one queued behind it.
    pub fn wait_durable(&self) -> Result<(), String> {
        let mut state = self.lock();
        let target = state.requested;
        while state.done < target && state.failed.is_none() {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match &state.failed {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// Blocks until no sync is pending, so the next write cannot overtake one.
    fn wait_synced(&self) -> io::Result<()> {
        self.wait_durable().map_err(io::Error::other)
    }

    fn request(&self) -> io::Result<()> {
        let mut state = self.lock();
        if let Some(why) = &state.failed {
            return Err(io::Error::other(why.clone()));
        }
        state.requested += 1;
        drop(state);
        self.changed.notify_all();
        Ok(())
    }
}

impl std::fmt::Debug for Syncs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Syncs")
            .field("requested", &state.requested)
            .field("done", &state.done)
            .field("failed", &state.failed)
            .finish()
    }
}

/// The syncer: takes every sync asked for since the last one, makes them durable with one
/// `fdatasync`, then runs what was waiting for them.
fn run_syncer(file: Arc<FileBackend>, syncs: Arc<Syncs>) {
    loop {
        let target = {
            let mut state = syncs.lock();
            while state.requested == state.done && !state.closed {
                state = syncs
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.requested == state.done {
                return;
            }
            state.requested
        };
        let result = file.sync_data();
        let (ready, failed) = {
            let mut state = syncs.lock();
            match result {
                Ok(()) => {
                    state.done = target;
                    let n = state
                        .waiting
                        .iter()
                        .take_while(|(s, _)| *s <= target)
                        .count();
                    (state.waiting.drain(..n).collect::<Vec<_>>(), None)
                }
                Err(e) => {
                    let why = format!("the database file could not be made durable: {e}");
                    tracing::error!(error = %why, "sync failed: nothing is written until the server is restarted");
                    state.failed = Some(why.clone());
                    (state.waiting.drain(..).collect(), Some(why))
                }
            }
        };
        syncs.changed.notify_all();
        for (_, then) in ready {
            then(failed.as_deref());
        }
        if failed.is_some() {
            return;
        }
    }
}

/// redb's file backend with its sync moved to the syncer thread (see the module doc).
#[derive(Debug)]
pub struct SyncBehindFile {
    file: Arc<FileBackend>,
    syncs: Arc<Syncs>,
}

impl SyncBehindFile {
    /// Opens (or creates) the file at `path` and starts its syncer thread.
    pub fn open(path: &std::path::Path) -> io::Result<(SyncBehindFile, Arc<Syncs>)> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        SyncBehindFile::new(file)
    }

    /// Wraps `file` and starts its syncer thread.
    fn new(file: File) -> io::Result<(SyncBehindFile, Arc<Syncs>)> {
        let file = Arc::new(FileBackend::new(file).map_err(io::Error::other)?);
        let syncs = Arc::new(Syncs {
            state: Mutex::new(SyncState::default()),
            changed: Condvar::new(),
        });
        let (f, s) = (file.clone(), syncs.clone());
        std::thread::Builder::new()
            .name("leadline-fsync".into())
            .spawn(move || run_syncer(f, s))?;
        Ok((
            SyncBehindFile {
                file,
                syncs: syncs.clone(),
            },
            syncs,
        ))
    }

    fn close_syncer(&self) {
        self.syncs.lock().closed = true;
        self.syncs.changed.notify_all();
    }
}

impl Drop for SyncBehindFile {
    fn drop(&mut self) {
        self.close_syncer();
    }
}

impl StorageBackend for SyncBehindFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.syncs.wait_synced()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.syncs.request()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.syncs.wait_synced()?;
        self.file.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        // Whatever redb wrote last is durable before the file is let go.
        let synced = self.syncs.wait_synced();
        self.close_syncer();
        synced?;
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// Opens (or creates) the redb file at `path` on a [`SyncBehindFile`].
pub fn create_database(
    path: &std::path::Path,
    cache_bytes: usize,
) -> Result<(redb::Database, Arc<Syncs>), redb::DatabaseError> {
    let (backend, syncs) = SyncBehindFile::open(path)?;
    let db = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create_with_backend(backend)?;
    Ok((db, syncs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn backend() -> (tempfile::TempDir, SyncBehindFile, Arc<Syncs>) {
        let dir = tempfile::tempdir().unwrap();
        let (backend, syncs) = SyncBehindFile::open(&dir.path().join("f")).unwrap();
        (dir, backend, syncs)
    }

    #[test]
    fn a_sync_returns_at_once_and_its_completion_runs_when_it_is_done() {
        let (_dir, file, syncs) = backend();
        file.write(0, b"hello").unwrap();
        file.sync_data().unwrap();
        let sync = syncs.requested();
        assert_eq!(sync, 1);
        let (tx, rx) = mpsc::channel();
        syncs.after_durable(
            sync,
            Box::new(move |failed| tx.send(failed.map(str::to_owned)).unwrap()),
        );
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), None);
        assert!(syncs.lock().done >= sync);
        // Asked for after the sync is done, a completion runs on the caller's thread.
        let (tx, rx) = mpsc::channel();
        syncs.after_durable(
            sync,
            Box::new(move |failed| tx.send(failed.is_none()).unwrap()),
        );
        assert!(rx.try_recv().unwrap());
    }

    #[test]
    fn no_write_overtakes_a_sync_asked_for_before_it() {
        let (_dir, file, syncs) = backend();
        for round in 0..50u64 {
            file.write(round * 8, &round.to_le_bytes()).unwrap();
            file.sync_data().unwrap();
            let asked = syncs.requested();
            file.write(round * 8 + 4, b"next").unwrap();
            assert!(syncs.lock().done >= asked, "round {round}");
        }
        let mut out = [0u8; 8];
        file.read(49 * 8, &mut out).unwrap();
        assert_eq!(&out[4..], b"next");
    }

    #[test]
    fn a_snapshot_waits_for_the_syncs_asked_before_it_and_close_syncs_the_rest() {
        let (_dir, file, syncs) = backend();
        file.write(0, b"a").unwrap();
        file.sync_data().unwrap();
        let asked = syncs.requested();
        syncs.wait_durable().unwrap();
        assert!(syncs.lock().done >= asked);
        file.write(1, b"b").unwrap();
        file.sync_data().unwrap();
        file.close().unwrap();
        let state = syncs.lock();
        assert_eq!(state.done, state.requested);
        assert!(state.closed);
    }

    #[test]
    fn after_a_failed_sync_everything_fails_and_says_why() {
        let (_dir, file, syncs) = backend();
        syncs.lock().failed = Some("the disk went away".into());
        let err = file.write(0, b"x").unwrap_err();
        assert!(err.to_string().contains("the disk went away"));
        assert!(file.sync_data().is_err());
        assert_eq!(syncs.wait_durable().unwrap_err(), "the disk went away");
        assert_eq!(syncs.failure().as_deref(), Some("the disk went away"));
        let (tx, rx) = mpsc::channel();
        syncs.after_durable(
            1,
            Box::new(move |failed| tx.send(failed.map(str::to_owned)).unwrap()),
        );
        assert_eq!(
            rx.try_recv().unwrap().as_deref(),
            Some("the disk went away")
        );
    }
}
