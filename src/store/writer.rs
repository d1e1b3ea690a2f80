//! The single writer: drains queued jobs into one write transaction, commits it once, and
//! answers every job in it when that commit is durable (group commit). The commit's sync runs
//! behind the next batch (see `fsync`), so the disk flushes while the writer applies. Runs on
//! its own OS thread because redb is blocking; a panicking job rolls back its batch and the
//! writer goes on. Background jobs (a rescore's shares) wait while ordinary jobs are queued,
//! and end their share early once one is (see `Tx::writes_waiting`).

use super::fsync::Syncs;
use super::tx::{IdGen, Tx};
use super::{Job, Queued, Reply, StoreError, StoreResult, WaitingWrites};
use crate::clock::Clock;
use redb::{Database, Durability};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, watch};

/// Tuning of the group commit.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Most jobs applied in one transaction.
    pub max_batch: usize,
    /// Jobs that may wait in the queue before senders wait (backpressure).
    pub queue: usize,
    /// redb's page cache, in bytes: the store's main memory use.
    pub cache_bytes: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch: 1024,
            queue: 16 * 1024,
            cache_bytes: 256 * 1024 * 1024,
        }
    }
}

pub(super) fn spawn(
    db: Arc<Database>,
    syncs: Arc<Syncs>,
    waiting: Arc<WaitingWrites>,
    clock: Arc<dyn Clock>,
    cfg: WriterConfig,
    last_seq: u64,
    (auth_epoch, timer_added, mail_added): (
        Arc<AtomicU64>,
        Arc<tokio::sync::Notify>,
        Arc<tokio::sync::Notify>,
    ),
) -> StoreResult<(
    mpsc::Sender<Queued>,
    watch::Receiver<u64>,
    std::thread::JoinHandle<()>,
)> {
    let (jobs_tx, mut jobs_rx) = mpsc::channel::<Queued>(cfg.queue.max(1));
    let (seq_tx, seq_rx) = watch::channel(last_seq);
    let signals = Arc::new(Signals {
        seq: seq_tx,
        auth_epoch,
        timer_added,
        mail_added,
    });
    let handle = std::thread::Builder::new()
        .name("leadline-writer".into())
        .spawn(move || {
            let mut ids = IdGen::new();
            let mut next_seq = last_seq + 1;
            let mut incoming: Vec<Queued> = Vec::with_capacity(cfg.max_batch);
            // Background jobs held back while ordinary ones go first.
            let mut held = Held::default();
            loop {
                if held.jobs.is_empty() {
                    match jobs_rx.blocking_recv() {
                        Some(first) => incoming.push(first),
                        None => break,
                    }
                }
                drain(&mut jobs_rx, &mut incoming, cfg.max_batch);
                let jobs = next_batch(&mut incoming, &mut held, cfg.max_batch);
                let now = clock.now_ms();
                let batch = Batch {
                    db: &db,
                    syncs: &syncs,
                    signals: &signals,
                    waiting: &waiting,
                };
                match batch.run(jobs, now, next_seq, &mut ids) {
                    Ok(seq_after) => next_seq = seq_after,
                    Err(e) => tracing::error!(error = %e, "write batch failed; its requests were answered with an error"),
                }
            }
            tracing::debug!("writer stopped: every store handle is closed");
        })
        .map_err(|e| StoreError::Storage(format!("cannot start the writer thread: {e}")))?;
    Ok((jobs_tx, seq_rx, handle))
}

fn drain(rx: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// Background jobs waiting for a batch.
#[derive(Default)]
struct Held {
    jobs: VecDeque<Job>,
    /// They were held back from the batch before, for ordinary jobs.
    passed_over: bool,
}

/// The jobs of the next batch: the ordinary ones received, if any, so that no ordinary write
/// waits for a background job's share and its commit; otherwise the background jobs held.
/// Background jobs are passed over once at most: under steady traffic they join the next
/// batch after its ordinary jobs (and, as those keep coming, end their share early).
fn next_batch(incoming: &mut Vec<Queued>, held: &mut Held, max: usize) -> Vec<Job> {
    let mut ordinary = Vec::with_capacity(incoming.len());
    for queued in incoming.drain(..) {
        match queued.background {
            true => held.jobs.push_back(queued.job),
            false => ordinary.push(queued.job),
        }
    }
    let room = match (ordinary.is_empty(), held.passed_over) {
        (true, _) => max,
        (false, true) => max.saturating_sub(ordinary.len()),
        (false, false) => 0,
    };
    let mut jobs = ordinary;
    jobs.extend(held.jobs.drain(..held.jobs.len().min(room)));
    held.passed_over = !held.jobs.is_empty() && room == 0;
    jobs
}

/// What the writer tells the rest of the server after a commit.
struct Signals {
    /// The last committed changelog seq.
    seq: watch::Sender<u64>,
    /// Bumped when a batch changed users or tokens.
    auth_epoch: Arc<AtomicU64>,
    /// Woken when a batch added a timer.
    timer_added: Arc<tokio::sync::Notify>,
    /// Woken when a batch queued mail.
    mail_added: Arc<tokio::sync::Notify>,
}

/// Where a batch is written and who hears of it.
struct Batch<'a> {
    db: &'a Database,
    syncs: &'a Syncs,
    signals: &'a Arc<Signals>,
    /// The ordinary writes not yet started (see `Tx::writes_waiting`).
    waiting: &'a WaitingWrites,
}

impl Batch<'_> {
    /// Applies `jobs` in one transaction and commits it; once the commit is durable, publishes
    /// the new seq and answers each job. Returns the next free seq on commit.
    fn run(&self, jobs: Vec<Job>, now: i64, next_seq: u64, ids: &mut IdGen) -> StoreResult<u64> {
        let waiting = || self.waiting.any();
        let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len());
        let mut failure: Option<StoreError> = None;
        let jobs_in_batch = jobs.len();
        let started = std::time::Instant::now();
        let mut applied_at = started;
        let outcome = (|| -> StoreResult<(u64, Changed)> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            let seq_after;
            let changed;
            {
                let mut tx = Tx::open(&txn, now, next_seq, ids, &waiting)?;
                let mut jobs = jobs.into_iter();
                for job in jobs.by_ref() {
                    // A job's leads reach their tables before the next job runs (see `put_lead`).
                    let applied = catch_unwind(AssertUnwindSafe(|| {
                        let (result, reply) = job(&mut tx);
                        // Held changelog rows never outlive their job, whatever it returned.
                        let ended = tx.release_changes(None).and_then(|()| tx.flush_leads());
                        (result.and(ended), reply)
                    }));
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
                // Jobs after a failure never run: dropping them closes their reply channels,
                // which `Store::write` reports as a failed batch.
                drop(jobs);
                seq_after = tx.next_seq;
                changed = Changed {
                    auth: tx.auth_changed,
                    timers: tx.earliest_timer.is_some(),
                    mail: tx.earliest_mail.is_some(),
                };
            }
            if let Some(e) = &failure {
                txn.abort()?;
                return Err(e.clone());
            }
            applied_at = std::time::Instant::now();
            txn.commit()?;
            Ok((seq_after, changed))
        })();
        let committed_at = std::time::Instant::now();
        metrics::counter!("leadline_write_batches_total",
            "outcome" => if outcome.is_ok() { "committed" } else { "failed" })
        .increment(1);
        metrics::histogram!("leadline_write_batch_jobs").record(jobs_in_batch as f64);
        metrics::histogram!("leadline_write_batch_apply_seconds")
            .record((applied_at - started).as_secs_f64());
        metrics::histogram!("leadline_write_batch_commit_seconds")
            .record((committed_at - applied_at).as_secs_f64());
        tracing::trace!(
            jobs = jobs_in_batch,
            apply_us = (applied_at - started).as_micros() as u64,
            commit_us = (committed_at - applied_at).as_micros() as u64,
            "write batch"
        );
        match outcome {
            Ok((seq_after, changed)) => {
                let signals = self.signals.clone();
                let first_seq = next_seq;
                // The sync this commit asked for; it runs while the next batch is applied.
                let sync = self.syncs.requested();
                self.syncs.after_durable(
                    sync,
                    Box::new(move |failed| match failed {
                        None => {
                            tracing::trace!(
                                durable_us = committed_at.elapsed().as_micros() as u64,
                                "write batch durable"
                            );
                            signals.publish(&changed, first_seq, seq_after);
                            replies.into_iter().for_each(|r| r(None));
                        }
                        Some(why) => {
                            let e = StoreError::Storage(why.to_owned());
                            replies.into_iter().for_each(|r| r(Some(&e)));
                        }
                    }),
                );
                Ok(seq_after)
            }
            Err(e) => {
                let e = failure.unwrap_or(e);
                replies.into_iter().for_each(|r| r(Some(&e)));
                Err(e)
            }
        }
    }
}

/// What a committed batch changed that others wait on.
struct Changed {
    auth: bool,
    timers: bool,
    mail: bool,
}

impl Signals {
    /// Tells the rest of the server about a durable batch that used seqs `first..after`. Runs
    /// before the batch's replies, so a caller who got its reply sees all of it.
    fn publish(&self, changed: &Changed, first: u64, after: u64) {
        if changed.auth {
            // An authentication cached from an older snapshot is then never used again (see
            // `Service::authenticate`).
            self.auth_epoch.fetch_add(1, Ordering::SeqCst);
        }
        if changed.timers {
            // The scheduler re-reads the earliest due time; a permit is kept if it is busy.
            self.timer_added.notify_one();
        }
        if changed.mail {
            self.mail_added.notify_one();
        }
        if after != first {
            self.seq.send_replace(after - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lead::{Lead, NewLead};
    use crate::store::{Entity, Op, Queued, counted, init_schema, make_job};
    use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

    fn lead_job(email: &str) -> (Job, tokio::sync::oneshot::Receiver<StoreResult<uuid::Uuid>>) {
        let email = email.to_owned();
        make_job(move |tx| {
            let id = tx.new_id();
            let lead = NewLead {
                email: Some(email),
                ..Default::default()
            }
            .into_lead(id, tx.now);
            tx.put_lead(None, &lead)?;
            tx.change(Entity::Lead, id, Op::Create, Some(&lead))?;
            Ok(id)
        })
    }

    /// A fresh database with every table, in a directory that lives as long as it is used.
    fn fresh_db() -> (tempfile::TempDir, Database, Arc<Syncs>) {
        let dir = tempfile::tempdir().unwrap();
        let (db, syncs) =
            crate::store::fsync::create_database(&dir.path().join("t.redb"), 1 << 20).unwrap();
        init_schema(&db).unwrap();
        (dir, db, syncs)
    }

    fn run(db: &Database, syncs: &Syncs, jobs: Vec<Job>) -> StoreResult<u64> {
        run_counted(db, syncs, jobs, &WaitingWrites::default())
    }

    /// [`run`], with `waiting` counting the ordinary writes not yet started.
    fn run_counted(
        db: &Database,
        syncs: &Syncs,
        jobs: Vec<Job>,
        waiting: &WaitingWrites,
    ) -> StoreResult<u64> {
        let mut ids = IdGen::new();
        let signals = Arc::new(Signals {
            seq: watch::channel(0).0,
            auth_epoch: Arc::new(AtomicU64::new(0)),
            timer_added: Arc::new(tokio::sync::Notify::new()),
            mail_added: Arc::new(tokio::sync::Notify::new()),
        });
        let batch = Batch {
            db,
            syncs,
            signals: &signals,
            waiting,
        };
        batch.run(jobs, 1_000, 1, &mut ids)
    }

    #[test]
    fn a_job_sees_the_ordinary_writes_not_yet_started_but_not_background_ones() {
        let (_dir, db, syncs) = fresh_db();
        let waiting = Arc::new(WaitingWrites::default());
        let w = waiting.clone();
        let (job, reply) = make_job(move |tx| {
            let before = tx.writes_waiting();
            let background = make_job(|_| Ok(())).0;
            let with_background = tx.writes_waiting();
            let ordinary = counted(make_job(|_| Ok(())).0, &w);
            let with_ordinary = tx.writes_waiting();
            drop((background, ordinary));
            Ok((before, with_background, with_ordinary, tx.writes_waiting()))
        });
        run_counted(&db, &syncs, vec![job], &waiting).unwrap();
        assert_eq!(
            reply.blocking_recv().unwrap().unwrap(),
            (false, false, true, false)
        );
    }

    /// A job that records its name when it runs.
    fn named(name: &'static str, ran: &Arc<std::sync::Mutex<Vec<&'static str>>>) -> Job {
        let ran = ran.clone();
        make_job(move |_| {
            ran.lock().unwrap().push(name);
            Ok(())
        })
        .0
    }

    #[test]
    fn ordinary_jobs_go_first_in_a_batch_of_their_own_and_background_ones_wait_in_order() {
        let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
        let queued = |name, background| Queued {
            job: named(name, &ran),
            background,
        };
        let mut incoming = vec![
            queued("rescore 1", true),
            queued("create", false),
            queued("rescore 2", true),
            queued("edit", false),
        ];
        let mut held = Held::default();
        let (_dir, db, syncs) = fresh_db();
        let mut batches = Vec::new();
        loop {
            let jobs = next_batch(&mut incoming, &mut held, 1024);
            if jobs.is_empty() {
                break;
            }
            batches.push(jobs.len());
            run(&db, &syncs, jobs).unwrap();
        }
        assert_eq!(batches, vec![2, 2]);
        assert_eq!(
            *ran.lock().unwrap(),
            vec!["create", "edit", "rescore 1", "rescore 2"]
        );
        // Held jobs run at most a batch's worth at a time.
        held.jobs.extend((0..5).map(|_| named("more", &ran)));
        assert_eq!(next_batch(&mut Vec::new(), &mut held, 3).len(), 3);
        assert_eq!(held.jobs.len(), 2);
    }

    #[test]
    fn steady_ordinary_traffic_passes_a_background_job_over_once_only() {
        let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
        let queued = |name, background| Queued {
            job: named(name, &ran),
            background,
        };
        let (_dir, db, syncs) = fresh_db();
        let mut held = Held::default();
        let mut incoming = vec![queued("rescore", true), queued("create 1", false)];
        let first = next_batch(&mut incoming, &mut held, 1024);
        assert_eq!(first.len(), 1);
        run(&db, &syncs, first).unwrap();
        incoming.push(queued("create 2", false));
        let second = next_batch(&mut incoming, &mut held, 1024);
        assert_eq!(second.len(), 2);
        run(&db, &syncs, second).unwrap();
        assert_eq!(
            *ran.lock().unwrap(),
            vec!["create 1", "create 2", "rescore"]
        );
        assert!(held.jobs.is_empty() && !held.passed_over);
    }

    #[test]
    fn an_ordinary_write_behind_a_job_in_the_same_batch_counts_until_it_starts() {
        let (_dir, db, syncs) = fresh_db();
        let waiting = Arc::new(WaitingWrites::default());
        let (first, first_reply) = make_job(|tx| Ok(tx.writes_waiting()));
        let (second, second_reply) = make_job(|tx| Ok(tx.writes_waiting()));
        let second = counted(second, &waiting);
        run_counted(&db, &syncs, vec![first, second], &waiting).unwrap();
        assert!(first_reply.blocking_recv().unwrap().unwrap());
        assert!(!second_reply.blocking_recv().unwrap().unwrap());
        assert!(!waiting.any());
    }

    fn rows(db: &Database, table: redb::TableDefinition<'_, u64, &[u8]>) -> u64 {
        db.begin_read()
            .unwrap()
            .open_table(table)
            .unwrap()
            .len()
            .unwrap()
    }

    fn leads(db: &Database) -> u64 {
        let read = db.begin_read().unwrap();
        read.open_table(crate::store::tables::LEADS)
            .unwrap()
            .len()
            .unwrap()
    }

    #[test]
    fn one_failing_job_fails_its_whole_batch_and_nothing_is_written() {
        let (_dir, db, syncs) = fresh_db();
        let (a, a_rx) = lead_job("a@example.com");
        let (b, b_rx) = make_job::<(), _>(|_| Err(StoreError::Storage("disk on fire".into())));
        let (c, c_rx) = lead_job("c@example.com");
        let result = run(&db, &syncs, vec![a, b, c]);
        assert!(result.is_err());
        for rx in [
            a_rx.blocking_recv().unwrap().map(|_| ()),
            b_rx.blocking_recv().unwrap(),
        ] {
            assert!(matches!(rx, Err(StoreError::Storage(m)) if m == "disk on fire"));
        }
        // The job after the failure never ran: its channel closes, which `Store::write` reports.
        assert!(c_rx.blocking_recv().is_err());
        assert_eq!(leads(&db), 0);
        assert_eq!(rows(&db, crate::store::tables::CHANGELOG), 0);
    }

    #[test]
    fn a_committed_batch_answers_every_job_and_advances_the_seq() {
        let (_dir, db, syncs) = fresh_db();
        let (a, a_rx) = lead_job("a@example.com");
        let (b, b_rx) = lead_job("b@example.com");
        assert_eq!(run(&db, &syncs, vec![a, b]).unwrap(), 3);
        assert!(a_rx.blocking_recv().unwrap().is_ok());
        assert!(b_rx.blocking_recv().unwrap().is_ok());
        assert_eq!(leads(&db), 2);
        assert_eq!(rows(&db, crate::store::tables::CHANGELOG), 2);
    }

    #[test]
    fn a_lead_written_several_times_in_a_job_lands_once_as_its_last_version() {
        use crate::domain::lead::Stage;
        use crate::store::lead_index;
        let (_dir, db, syncs) = fresh_db();
        let owner = uuid::Uuid::now_v7();
        let (job, reply) = make_job(move |tx| {
            let id = tx.new_id();
            let v1 = NewLead {
                email: Some("first@example.com".into()),
                ..Default::default()
            }
            .into_lead(id, tx.now);
            tx.put_lead(None, &v1)?;
            let mut v2 = v1.clone();
            v2.owner_id = Some(owner);
            v2.email = Some("second@example.com".into());
            tx.put_lead(Some(&v1), &v2)?;
            let mut v3 = v2.clone();
            v3.stage = Stage::Mql;
            v3.score.total = 45;
            v3.updated_at += 5;
            tx.put_lead(Some(&v2), &v3)?;
            // Meanwhile the job reads its latest version, and the lookups see it too.
            let seen = tx.lead(id)?;
            let by_new = tx.lead_id_by_email("second@example.com")?;
            let by_old = tx.lead_id_by_email("first@example.com")?;
            Ok((v3, seen, by_new, by_old))
        });
        run(&db, &syncs, vec![job]).unwrap();
        let (v3, seen, by_new, by_old) = reply.blocking_recv().unwrap().unwrap();
        assert_eq!(seen.as_ref(), Some(&v3));
        assert_eq!(by_new, Some(v3.id));
        assert_eq!(by_old, None);

        let read = db.begin_read().unwrap();
        let leads = read.open_table(crate::store::tables::LEADS).unwrap();
        let stored: Lead =
            crate::store::codec::decode(leads.get(v3.id.as_u128()).unwrap().unwrap().value())
                .unwrap();
        assert_eq!(stored, v3);
        let index = read.open_table(crate::store::tables::LEAD_INDEX).unwrap();
        let mut rows: Vec<Vec<u8>> = index
            .iter()
            .unwrap()
            .map(|r| r.unwrap().0.value().to_vec())
            .collect();
        let mut expected = lead_index::rows(&v3);
        rows.sort();
        expected.sort();
        assert_eq!(rows, expected, "only the last version's index rows remain");
    }

    #[test]
    fn a_panicking_job_rolls_back_and_the_error_says_so() {
        let (_dir, db, syncs) = fresh_db();
        let (a, a_rx) = lead_job("a@example.com");
        let (p, _p_rx) = make_job::<(), _>(|_| panic!("boom"));
        assert!(matches!(
            run(&db, &syncs, vec![a, p]),
            Err(StoreError::Panicked(m)) if m == "boom"
        ));
        assert!(matches!(
            a_rx.blocking_recv().unwrap(),
            Err(StoreError::Panicked(_))
        ));
    }
}
