//! Scoring in the write path: every write that changes a lead or its activity settles the
//! lead's score (and the stage it earns) in the same transaction, so no read sees a stale
//! score. Also: the score view, rescoring every lead after a rule change, and the review of
//! leads whose score changes by time alone (decay).

use super::{Service, ServiceError, ServiceResult};
use crate::domain::lead::{Lead, Score, Stage};
use crate::domain::score::{
    Reason, ScoreCard, ScoreChange, ScoreDetails, Thresholds, Trigger, stage_after,
};
use crate::domain::sequence::ExitCondition;
use crate::domain::stats::ActivityStats;
use crate::domain::time::{Millis, to_rfc3339};
use crate::domain::user::Principal;
use crate::script::hooks::Source;
use crate::script::{Loaded, Plugins};
use crate::store::{Entity, Op, StoreError, Tx};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;

/// Whether a settle may move the stage. A write in which a person set the stage leaves the
/// stage to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StageRule {
    Follow,
    Keep,
}

/// Scores `lead` from its stored activity stats and applies the result to it (score and
/// stage) and to its score details. The caller writes the lead.
pub(crate) fn settle(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
    trigger: Trigger,
    stage_rule: StageRule,
) -> Result<(), StoreError> {
    let loaded = plugins.current();
    let stats = Arc::new(tx.lead_stats(lead.id)?);
    let (card, _) = plugins.score(&loaded, &Arc::new(lead.clone()), &stats, tx.now);
    apply_and_follow(
        tx,
        plugins,
        lead,
        card,
        loaded.thresholds,
        trigger,
        stage_rule,
    )
}

/// [`apply_card`], then what a new score sets off: the SQL hand-off, and `on_event` with
/// `lead.scored` when the total moved.
fn apply_and_follow(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
    card: ScoreCard,
    thresholds: Thresholds,
    trigger: Trigger,
    stage_rule: StageRule,
) -> Result<(), StoreError> {
    let (stage, from) = (lead.stage, lead.score.total);
    let rescored = apply_card(tx, lead, card, thresholds, trigger, stage_rule)?;
    hand_off_at_sql(tx, plugins, lead, stage)?;
    if rescored {
        let event = crate::script::nurture::LeadEventIn {
            kind: "lead.scored".into(),
            from: Some(i64::from(from)),
            to: Some(i64::from(lead.score.total)),
            ..Default::default()
        };
        super::nurture::on_event(tx, plugins, lead, event)?;
    }
    Ok(())
}

/// Routes a lead again when its score carries it to SQL (the hand-off from marketing to
/// sales). A lead nobody has placed yet is routed by its capture instead.
pub(crate) fn hand_off_at_sql(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
    stage_before: Stage,
) -> Result<(), StoreError> {
    let placed = lead.owner_id.is_some() || lead.pool_id.is_some();
    let reached_sql = matches!(stage_before, Stage::Lead | Stage::Mql) && lead.stage == Stage::Sql;
    if placed && reached_sql {
        super::work::route(tx, plugins, lead, crate::domain::routing::RouteTrigger::Sql)?;
    }
    if reached_sql {
        super::nurture::exit_on(tx, plugins, lead.id, ExitCondition::Sql)?;
    }
    Ok(())
}

/// [`settle`] after an ordinary change (new activity, merge, edit): the stage follows the score.
pub(crate) fn settle_change(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
) -> Result<(), StoreError> {
    settle(tx, plugins, lead, Trigger::Change, StageRule::Follow)
}

/// Applies a computed score to `lead`: score, stage (with a `stage_changed` event), a
/// `scored` event when the total moved, and the stored reasons and history. Returns whether
/// it wrote that event (a scored lead whose total changed).
pub(crate) fn apply_card(
    tx: &mut Tx<'_>,
    lead: &mut Lead,
    card: ScoreCard,
    thresholds: Thresholds,
    trigger: Trigger,
    stage_rule: StageRule,
) -> Result<bool, StoreError> {
    let old = tx.score_details(lead.id)?;
    let score = card.score();
    let mut details = old.clone().unwrap_or_default();
    if old.is_none() || score != lead.score {
        details.push_history(ScoreChange {
            at: tx.now,
            score,
            trigger: trigger.as_str().to_owned(),
        });
    }
    let rescored = old.is_some() && score.total != lead.score.total;
    if rescored {
        tx.event(
            lead.id,
            "scored",
            None,
            json!({"from": lead.score.total, "to": score.total, "trigger": trigger.as_str()}),
        )?;
    }
    details.reasons = card.reasons;
    details.review_at = card.review_at;
    if old.as_ref() != Some(&details) {
        tx.put_score_details(lead.id, old.as_ref(), &details)?;
    }
    let old_total = lead.score.total;
    lead.score = score;
    if stage_rule == StageRule::Follow {
        let stage = stage_after(lead.stage, old_total, score.total, thresholds, trigger);
        if stage != lead.stage {
            tx.event(
                lead.id,
                "stage_changed",
                None,
                json!({"from": lead.stage, "to": stage, "score": score.total, "by": trigger.as_str()}),
            )?;
            lead.stage = stage;
        }
    }
    Ok(rescored)
}

/// Settles a stored lead and writes it if anything changed. `None`: no such lead.
fn resettle(
    tx: &mut Tx<'_>,
    id: Uuid,
    card: Option<(u64, ScoreCard, Thresholds)>,
    plugins: &Plugins,
    trigger: Trigger,
) -> Result<Option<bool>, StoreError> {
    let Some(before) = tx.lead(id)? else {
        return Ok(None);
    };
    let mut lead = before.clone();
    match card {
        // Scored from a snapshot at this very version: no need to score again.
        Some((version, card, thresholds)) if version == before.version => apply_and_follow(
            tx,
            plugins,
            &mut lead,
            card,
            thresholds,
            trigger,
            StageRule::Follow,
        )?,
        _ => settle(tx, plugins, &mut lead, trigger, StageRule::Follow)?,
    }
    if lead == before {
        return Ok(Some(false));
    }
    lead.version += 1;
    lead.updated_at = tx.now;
    tx.put_lead(Some(&before), &lead)?;
    tx.change(Entity::Lead, id, Op::Update, Some(&lead))?;
    Ok(Some(true))
}

/// `GET /v1/leads/{id}/score`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScoreView {
    pub lead_id: Uuid,
    pub total: i32,
    pub parts: crate::domain::lead::ScoreParts,
    pub stage: Stage,
    pub reasons: Vec<Reason>,
    /// Oldest first; the most recent changes only.
    pub history: Vec<ScoreHistoryView>,
    /// When time alone may next change the score (the decay rule).
    pub review_at: Option<String>,
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScoreHistoryView {
    pub at: String,
    pub total: i32,
    pub parts: crate::domain::lead::ScoreParts,
    pub trigger: String,
}

fn parts(s: &Score) -> crate::domain::lead::ScoreParts {
    crate::domain::lead::ScoreParts {
        profile: s.profile,
        engagement: s.engagement,
        source: s.source,
        interaction: s.interaction,
    }
}

/// One lead whose score or stage a rescore changes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RescoreExample {
    pub lead_id: Uuid,
    pub name: Option<String>,
    pub score_before: i32,
    pub score_after: i32,
    pub stage_before: Stage,
    pub stage_after: Stage,
}

/// What a rescore found (and, without dry run, did).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct RescoreReport {
    pub dry_run: bool,
    pub leads: u64,
    pub score_changed: u64,
    pub stage_changed: u64,
    /// Up to 20 of the changes.
    pub examples: Vec<RescoreExample>,
    /// Leads the score script failed on, so the built-in rule scored them (0 with no script).
    pub script_failures: u64,
    /// The first such failure: the file, line and message.
    pub first_failure: Option<String>,
    pub seconds: f64,
}

/// Leads a rescore reads and scores at a time.
const RESCORE_CHUNK: usize = 256;

/// How long one rescore job may hold the writer while other writes wait.
const WRITE_SLICE: std::time::Duration = std::time::Duration::from_millis(4);

/// How long one rescore job works at most: an ordinary write that comes meanwhile waits for
/// the job's commit too, and that grows with the job.
const JOB_MOST: std::time::Duration = std::time::Duration::from_millis(50);

/// Leads a rescore job applies between writing their rows out (about a millisecond's work).
const FLUSH_EVERY: usize = 64;

/// Scored chunks a rescore keeps ready ahead of the writer.
const RESCORE_AHEAD: usize = 4;

/// Rescore writes queued at the writer at once.
const WRITES_IN_FLIGHT: usize = 2;

/// Scored changes a rescore holds while both its writes are in flight; past this it stops
/// taking chunks, so a slow writer bounds the memory a rescore holds.
const RESCORE_PENDING_MAX: usize = 16 * RESCORE_CHUNK;
const EXAMPLES: usize = 20;

impl RescoreReport {
    /// Counts what rescoring `lead` to `card` changes (score, stage, an example); returns
    /// whether its score or stage changes.
    fn count(&mut self, lead: &Lead, card: &ScoreCard, thresholds: Thresholds) -> bool {
        let score = card.score();
        let stage = stage_after(
            lead.stage,
            lead.score.total,
            score.total,
            thresholds,
            Trigger::Rescore,
        );
        if score == lead.score && stage == lead.stage {
            return false;
        }
        if score.total != lead.score.total {
            self.score_changed += 1;
        }
        if stage != lead.stage {
            self.stage_changed += 1;
        }
        if self.examples.len() < EXAMPLES {
            self.examples.push(RescoreExample {
                lead_id: lead.id,
                name: lead.name.clone(),
                score_before: lead.score.total,
                score_after: score.total,
                stage_before: lead.stage,
                stage_after: stage,
            });
        }
        true
    }
}

impl Service {
    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    /// A lead the caller may see, with its activity summary.
    pub fn lead_with_stats(&self, p: &Principal, id: Uuid) -> ServiceResult<(Lead, ActivityStats)> {
        let snap = self.store.read()?;
        match snap.lead(id)? {
            Some(l) if p.can_see_lead(&l) => {
                let stats = snap.lead_stats(id)?;
                Ok((l, stats))
            }
            _ => Err(ServiceError::NotFound("lead")),
        }
    }

    pub fn lead_score(&self, p: &Principal, id: Uuid) -> ServiceResult<ScoreView> {
        let snap = self.store.read()?;
        let lead = match snap.lead(id)? {
            Some(l) if p.can_see_lead(&l) => l,
            _ => return Err(ServiceError::NotFound("lead")),
        };
        self.score_view(&snap, &lead)
    }

    /// `lead`'s score as `GET /v1/leads/{id}/score` shows it, read from `snap`.
    pub(crate) fn score_view(
        &self,
        snap: &crate::store::Snapshot,
        lead: &Lead,
    ) -> ServiceResult<ScoreView> {
        let id = lead.id;
        let details = snap.score_details(id)?.unwrap_or_default();
        Ok(ScoreView {
            lead_id: id,
            total: lead.score.total,
            parts: parts(&lead.score),
            stage: lead.stage,
            reasons: details.reasons,
            history: details
                .history
                .iter()
                .map(|h| ScoreHistoryView {
                    at: to_rfc3339(h.at),
                    total: h.score.total,
                    parts: parts(&h.score),
                    trigger: h.trigger.clone(),
                })
                .collect(),
            review_at: details.review_at.map(to_rfc3339),
            thresholds: self.plugins.current().thresholds,
        })
    }

    /// Scores every lead with the rules in force. A dry run only counts; otherwise changes
    /// are written in writer jobs that yield to other writes every few milliseconds, each
    /// re-checking that the lead did not change since it was scored. `progress(done, total)`
    /// after each chunk scored (dry run) or written.
    ///
    /// Reading and scoring run ahead on blocking threads while the writer applies the
    /// chunks before, so an applied rescore costs about what its writes cost.
    pub async fn rescore(
        &self,
        dry_run: bool,
        progress: impl Fn(u64, u64) + Send,
    ) -> ServiceResult<RescoreReport> {
        // Two applied rescores at once would each count (and write) the same changes.
        let _only = match dry_run {
            true => None,
            false => Some(self.rescoring.try_lock().map_err(|_| {
                ServiceError::Conflict("a rescore is already running; wait for it to finish".into())
            })?),
        };
        let started = std::time::Instant::now();
        let loaded = self.plugins.current();
        let now = self.now();
        let snap = self.store.read()?;
        let total = snap.lead_count()?;
        let mut report = RescoreReport {
            dry_run,
            ..RescoreReport::default()
        };
        let (chunks, mut scored_chunks) = tokio::sync::mpsc::channel(RESCORE_AHEAD);
        let plugins = self.plugins.clone();
        let rules = loaded.clone();
        // One thread reads chunks, the others score them: reading a chunk is about as long
        // as scoring it, and on a store bigger than the page cache it waits on the disk.
        let scorer = tokio::task::spawn_blocking(move || {
            std::thread::scope(|s| {
                let (read, inputs) = std::sync::mpsc::sync_channel(2);
                s.spawn(move || {
                    let mut after: Option<Uuid> = None;
                    loop {
                        let chunk = read_chunk(&snap, after);
                        if let Ok(Some(inputs)) = &chunk {
                            after = inputs.last().map(|(lead, ..)| lead.id);
                        }
                        let stop = !matches!(chunk, Ok(Some(_)));
                        // A closed channel: the scorer stopped; so do we.
                        if read.send(chunk).is_err() || stop {
                            return;
                        }
                    }
                });
                // The report names the first failure, with its line: one found in place.
                let locate = Arc::new(std::sync::atomic::AtomicU32::new(1));
                for chunk in inputs {
                    let scored = match chunk {
                        Ok(None) => return,
                        Ok(Some(inputs)) => score_chunk(&plugins, &rules, inputs, &locate, now),
                        Err(e) => Err(e),
                    };
                    let failed = scored.is_err();
                    // A closed channel: the rescore stopped (it failed to write); so do we.
                    if chunks.blocking_send(scored).is_err() || failed {
                        return;
                    }
                }
            })
        });
        // Changes scored but not yet handed to the writer, and how many leads they cover.
        let mut pending: Vec<(Uuid, u64, ScoreCard)> = Vec::new();
        let mut pending_leads = 0u64;
        let mut written_leads = 0u64;
        let mut scoring_done = false;
        // Up to two writes in flight: the writer applies one while the other's commit syncs.
        // Changes that arrive meanwhile gather into the next write, so a write covers many
        // chunks and touches each index page once for all of them.
        let mut writes = futures_util::stream::FuturesUnordered::new();
        loop {
            while writes.len() < WRITES_IN_FLIGHT && pending_leads > 0 {
                let changes = std::mem::take(&mut pending);
                let leads = std::mem::take(&mut pending_leads);
                let write = self.apply_scores(changes, loaded.clone(), Trigger::Rescore);
                writes.push(async move { write.await.map(|_| leads) });
            }
            if scoring_done && writes.is_empty() {
                break;
            }
            tokio::select! {
                scored = scored_chunks.recv(), if !scoring_done && pending.len() < RESCORE_PENDING_MAX => {
                    let Some(scored) = scored else {
                        scoring_done = true;
                        continue;
                    };
                    let scored = scored?;
                    report.leads += scored.len() as u64;
                    if !dry_run {
                        pending_leads += scored.len() as u64;
                    }
                    for (lead, card, details_differ, failure) in scored {
                        if let Some(failure) = failure {
                            report.script_failures += 1;
                            report.first_failure.get_or_insert(failure);
                        }
                        let changed = report.count(&lead, &card, loaded.thresholds);
                        // Reasons and review dates may change without the number: write those too.
                        if !dry_run && (changed || details_differ) {
                            pending.push((lead.id, lead.version, card));
                        }
                    }
                    if dry_run {
                        progress(report.leads, total);
                    }
                }
                Some(done) = futures_util::StreamExt::next(&mut writes) => {
                    written_leads += done?;
                    progress(written_leads, total);
                }
            }
        }
        scorer
            .await
            .map_err(|e| StoreError::Storage(format!("the rescore's scoring task failed: {e}")))?;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Writes scored changes in background writer jobs; a job that has worked for
    /// [`WRITE_SLICE`] stops as soon as an ordinary write is waiting, so that write waits a few
    /// milliseconds at most. The rescore's own jobs do not stop each other, so a job covers
    /// up to [`JOB_MOST`] of work (~2,000 leads) and the rescore pays for few commits.
    async fn apply_scores(
        &self,
        changes: Vec<(Uuid, u64, ScoreCard)>,
        loaded: Arc<Loaded>,
        trigger: Trigger,
    ) -> ServiceResult<usize> {
        let thresholds = loaded.thresholds;
        let mut rest = changes;
        let mut written = 0;
        while !rest.is_empty() {
            let plugins = self.plugins.clone();
            let (n, left) = self
                .store
                .write_background(move |tx| {
                    // Elapsed work, not the domain's time: how long this job holds the writer.
                    let started = std::time::Instant::now();
                    let mut n = 0;
                    let mut changes = rest.into_iter();
                    let mut unflushed = 0;
                    for (id, version, card) in changes.by_ref() {
                        let card = Some((version, card, thresholds));
                        if resettle(tx, id, card, &plugins, trigger)? == Some(true) {
                            n += 1;
                        }
                        // The leads' rows are written every few leads, so the time counted is
                        // the time the job holds the writer. In id order either way, this
                        // costs nothing.
                        unflushed += 1;
                        if unflushed == FLUSH_EVERY {
                            tx.flush_leads()?;
                            unflushed = 0;
                            let worked = started.elapsed();
                            if worked >= JOB_MOST || (worked >= WRITE_SLICE && tx.writes_waiting())
                            {
                                break;
                            }
                        }
                    }
                    Ok((n, changes.collect::<Vec<_>>()))
                })
                .await?;
            written += n;
            rest = left;
        }
        Ok(written)
    }

    /// Settles the leads whose score is due for a time-based review. Returns how many were
    /// reviewed and when the next review falls due.
    pub async fn review_scores(&self, limit: usize) -> ServiceResult<(usize, Option<Millis>)> {
        let now = self.now();
        let (due, next) = self.store.read()?.score_reviews_due(now, limit)?;
        if due.is_empty() {
            return Ok((0, next));
        }
        let n = due.len();
        // Scored from a snapshot, off the writer, and applied like a rescore: in shares that
        // let other writes through, a lead changed since being scored here scored again in
        // the write. A slow script must not hold the writer for a whole batch of reviews.
        let loaded = self.plugins.current();
        let (plugins, store, rules) = (self.plugins.clone(), self.store.clone(), loaded.clone());
        let cards = tokio::task::spawn_blocking(move || -> ServiceResult<_> {
            let snap = store.read()?;
            let mut leads = Vec::with_capacity(due.len());
            for id in due {
                // A lead erased since is simply skipped (erasure removes its review too).
                if let Some(lead) = snap.lead(id)? {
                    leads.push(lead);
                }
            }
            leads.sort_by_key(|l| l.id);
            let inputs = snap.scoring_inputs(&leads)?;
            Ok(leads
                .into_iter()
                .zip(inputs)
                .map(|(lead, (stats, _))| {
                    let lead = Arc::new(lead);
                    let (card, _) = plugins.score(&rules, &lead, &Arc::new(stats), now);
                    (lead.id, lead.version, card)
                })
                .collect::<Vec<_>>())
        })
        .await
        .map_err(|e| ServiceError::Store(StoreError::Storage(format!("score review: {e}"))))??;
        self.apply_scores(cards, loaded, Trigger::Review).await?;
        Ok((n, next))
    }
}

/// A chunk of leads to score, each with its activity stats and stored score details.
type ChunkInputs = Vec<(Arc<Lead>, Arc<ActivityStats>, Option<ScoreDetails>)>;

/// The next chunk of leads after `after`, in id order, with what scoring them needs; `None`
/// past the last lead.
fn read_chunk(
    snap: &crate::store::Snapshot,
    after: Option<Uuid>,
) -> Result<Option<ChunkInputs>, StoreError> {
    let leads = snap.leads_after(after, RESCORE_CHUNK)?;
    if leads.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        snap.scoring_inputs(&leads)?
            .into_iter()
            .zip(leads)
            .map(|((stats, details), lead)| (Arc::new(lead), Arc::new(stats), details))
            .collect(),
    ))
}

/// A lead scored by a rescore: its new card, whether its stored reasons or review date
/// differ, and the script's failure when the built-in rule had to answer.
type ScoredLead = (Arc<Lead>, ScoreCard, bool, Option<String>);

/// Scores a chunk of leads on every core; `locate` is how many of its failures are to be
/// located in place (see [`crate::script::LocateInline`]).
fn score_chunk(
    plugins: &Plugins,
    loaded: &Arc<Loaded>,
    inputs: ChunkInputs,
    locate: &Arc<std::sync::atomic::AtomicU32>,
    now: Millis,
) -> Result<Vec<ScoredLead>, StoreError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = inputs.len().div_ceil(threads).max(1);
    let mut out = Vec::with_capacity(inputs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    let _inline = crate::script::LocateInline::sharing(locate.clone());
                    part.iter()
                        .map(|(lead, stats, details)| {
                            let (card, source) = plugins.score(loaded, lead, stats, now);
                            let differ = details.as_ref().is_none_or(|d: &ScoreDetails| {
                                d.reasons != card.reasons || d.review_at != card.review_at
                            });
                            let failure = match source {
                                Source::Fallback(file, f) => Some(match f.line {
                                    Some(line) => format!("{file}:{line}: {}", f.message),
                                    None => format!("{file}: {}", f.message),
                                }),
                                _ => None,
                            };
                            (Arc::clone(lead), card, differ, failure)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                Err(_) => return Err(StoreError::Storage("a scoring thread panicked".into())),
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Reviews due scores until `stop` resolves: wakes when the next review falls due (by the
/// injected clock, checked every `tick`), and keeps going after errors.
pub async fn run_score_reviews(
    service: Service,
    tick: std::time::Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut backoff = tick;
    loop {
        let wait = match service.review_scores(500).await {
            Ok((n, _)) if n > 0 => std::time::Duration::ZERO,
            Ok(_) => {
                backoff = tick;
                tick
            }
            Err(e) => {
                tracing::warn!(error = %e, "score review failed; retrying");
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                backoff
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
