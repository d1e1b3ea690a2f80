//! The durable scheduler: one task that sleeps until the earliest timer row falls due (woken
//! early when a commit adds a timer, or when a manual clock moves), then fires the due timers
//! in order, each in the same transaction as its effect.

use super::{Service, ServiceResult};
use crate::domain::time::Millis;
use crate::domain::work::Timer;
use std::future::Future;
use std::time::Duration;

/// Timers fired per transaction.
const FIRE_BATCH: usize = 1024;

impl Service {
    /// Fires up to `limit` timers due now. Returns how many fired and when the next falls due.
    pub async fn fire_due_timers(&self, limit: usize) -> ServiceResult<(usize, Option<Millis>)> {
        let now = self.now();
        let (due, next) = self.store.read()?.timers_due(now, limit)?;
        if due.is_empty() {
            return Ok((0, next));
        }
        let n = due.len();
        if let Err(e) = self.fire(due.clone()).await {
            // One bad timer must not hold back the others: fire them one by one, and drop
            // (with an error in the log) a timer whose effect cannot be applied on its own.
            tracing::warn!(error = %e, timers = n, "firing a batch of timers failed; retrying one by one");
            for t in due {
                if let Err(e) = self.fire(vec![t.clone()]).await {
                    tracing::error!(error = %e, timer = %t.id, kind = t.kind.as_str(), subject = %t.subject, "a timer could not fire; it is dropped");
                    let dropped = t.clone();
                    self.store
                        .write(move |tx| tx.remove_timer(&dropped).map(|_| ()))
                        .await?;
                }
            }
        }
        Ok((n, next))
    }

    async fn fire(&self, timers: Vec<Timer>) -> ServiceResult<()> {
        let plugins = self.plugins.clone();
        self.store
            .write(move |tx| {
                for t in &timers {
                    super::work::fire(tx, &plugins, t)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
}

/// Runs the scheduler until `stop` resolves. Timers that fell due while the server was down
/// fire at once on start.
pub async fn run_scheduler(service: Service, stop: impl Future<Output = ()>) {
    let added = service.store().timer_added();
    let clock = service.clock();
    run_due_queue("scheduler", added, clock, stop, || {
        service.fire_due_timers(FIRE_BATCH)
    })
    .await
}

/// Drives a queue of work keyed by due time until `stop` resolves: `round` handles what is due
/// and says how many items it took and when the next falls due. While it takes items it runs
/// again at once; otherwise it sleeps until that time (by `clock`, so a manual clock moving
/// wakes it) or until `added` is signalled. A failing round is logged and retried with
/// backoff.
pub(crate) async fn run_due_queue<F, R>(
    name: &str,
    added: std::sync::Arc<tokio::sync::Notify>,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    stop: impl Future<Output = ()>,
    mut round: R,
) where
    R: FnMut() -> F,
    F: Future<Output = ServiceResult<(usize, Option<Millis>)>>,
{
    tokio::pin!(stop);
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let next = match round().await {
            Ok((n, _)) if n > 0 => {
                backoff = FIRST_BACKOFF;
                tokio::select! {
                    biased;
                    _ = &mut stop => return,
                    _ = tokio::task::yield_now() => continue,
                }
            }
            Ok((_, next)) => {
                backoff = FIRST_BACKOFF;
                next
            }
            Err(e) => {
                tracing::warn!(error = %e, worker = name, "background worker failed; retrying");
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let due = async {
            match next {
                Some(at) => clock.clone().wait_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = added.notified() => {}
            _ = due => {}
        }
    }
}
