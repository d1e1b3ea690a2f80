//! The single writer: drains queued jobs into one write transaction, commits it durably once,
//! then answers every job in it (group commit). Runs on its own OS thread because redb is
//! blocking; a panicking job rolls back its batch and the writer goes on.

use super::tx::{IdGen, Tx};
use super::{Job, Reply, StoreError, StoreResult};
use crate::clock::Clock;
use redb::{Database, Durability};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Tuning of the group commit.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Most jobs applied in one transaction.
    pub max_batch: usize,
    /// Jobs that may wait in the queue before senders wait (backpressure).
    pub queue: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch: 1024,
            queue: 16 * 1024,
        }
    }
}

pub(super) fn spawn(
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
    cfg: WriterConfig,
    last_seq: u64,
) -> StoreResult<(
    mpsc::Sender<Job>,
    watch::Receiver<u64>,
    std::thread::JoinHandle<()>,
)> {
    let (jobs_tx, mut jobs_rx) = mpsc::channel::<Job>(cfg.queue.max(1));
    let (seq_tx, seq_rx) = watch::channel(last_seq);
    let handle = std::thread::Builder::new()
        .name("leadline-writer".into())
        .spawn(move || {
            let mut ids = IdGen::new();
            let mut next_seq = last_seq + 1;
            let mut batch: Vec<Job> = Vec::with_capacity(cfg.max_batch);
            while let Some(first) = jobs_rx.blocking_recv() {
                batch.push(first);
                while batch.len() < cfg.max_batch {
                    match jobs_rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let now = clock.now_ms();
                let jobs = std::mem::take(&mut batch);
                match run_batch(&db, jobs, now, next_seq, &mut ids) {
                    Ok(seq_after) => {
                        if seq_after != next_seq {
                            next_seq = seq_after;
                            seq_tx.send_replace(seq_after - 1);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "write batch failed; its requests were answered with an error"),
                }
            }
            tracing::debug!("writer stopped: every store handle is closed");
        })
        .map_err(|e| StoreError::Storage(format!("cannot start the writer thread: {e}")))?;
    Ok((jobs_tx, seq_rx, handle))
}

/// Applies `jobs` in one transaction and answers each. Returns the next free seq on commit.
fn run_batch(
    db: &Database,
    jobs: Vec<Job>,
    now: i64,
    next_seq: u64,
    ids: &mut IdGen,
) -> StoreResult<u64> {
    let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len());
    let mut failure: Option<StoreError> = None;
    let jobs_in_batch = jobs.len();
    let started = std::time::Instant::now();
    let mut applied_at = started;
    let outcome = (|| -> StoreResult<u64> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let seq_after;
        {
            let mut tx = Tx::open(&txn, now, next_seq, ids)?;
            let mut jobs = jobs.into_iter();
            for job in jobs.by_ref() {
                let applied = catch_unwind(AssertUnwindSafe(|| job(&mut tx)));
                match applied {
                    Ok((Ok(()), reply)) => replies.push(reply),
                    Ok((Err(e), reply)) => {
                        replies.push(reply);
                        failure = Some(e);
                        break;
                    }
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a write job panicked".to_owned());
                        failure = Some(StoreError::Panicked(msg));
                        break;
                    }
                }
            }
            // Jobs after a failure never run: dropping them closes their reply channels, which
            // `Store::write` reports as a failed batch.
            drop(jobs);
            seq_after = tx.next_seq;
        }
        if let Some(e) = &failure {
            txn.abort()?;
            return Err(e.clone());
        }
        applied_at = std::time::Instant::now();
        txn.commit()?;
        Ok(seq_after)
    })();
    tracing::trace!(
        jobs = jobs_in_batch,
        apply_us = (applied_at - started).as_micros() as u64,
        commit_us = applied_at.elapsed().as_micros() as u64,
        "write batch"
    );
    match &outcome {
        Ok(_) => replies.into_iter().for_each(|r| r(None)),
        Err(e) => {
            let e = failure.as_ref().unwrap_or(e).clone();
            replies.into_iter().for_each(|r| r(Some(&e)));
        }
    }
    outcome
}
