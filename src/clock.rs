//! Time, injected. Domain and service code never read the wall clock; they ask a `Clock`, which
//! tests (and the binary, when started with a manual clock) can set and advance.

use crate::domain::time::Millis;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A future a clock returns from [`Clock::wait_until`].
pub type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Longest a real-time wait sleeps before the caller looks again: the wall clock can jump.
const MAX_REAL_WAIT_MS: i64 = 60_000;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;

    /// Resolves when this clock reaches `at`, or earlier (callers check the time again and
    /// wait anew); never much later.
    fn wait_until(self: Arc<Self>, at: Millis) -> Wait {
        let ms = (at - self.now_ms()).clamp(0, MAX_REAL_WAIT_MS);
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(
            u64::try_from(ms).unwrap_or(0),
        )))
    }
}

/// The real time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to; waits on it end when it is moved far enough.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    moved: tokio::sync::Notify,
}

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        ManualClock {
            now: AtomicI64::new(start),
            moved: tokio::sync::Notify::new(),
        }
    }

    pub fn set(&self, ms: Millis) {
        self.now.store(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }

    fn wait_until(self: Arc<Self>, at: Millis) -> Wait {
        Box::pin(async move {
            loop {
                let moved = self.moved.notified();
                if self.now_ms() >= at {
                    return;
                }
                moved.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(500);
        assert_eq!(c.now_ms(), 1_500);
        c.set(10);
        assert_eq!(c.now_ms(), 10);
        assert!(SystemClock.now_ms() > 1_600_000_000_000);
    }

    #[tokio::test]
    async fn a_wait_on_the_manual_clock_ends_when_it_is_moved_far_enough() {
        let c = Arc::new(ManualClock::new(0));
        let wait = tokio::spawn(c.clone().wait_until(1_000));
        c.advance(500);
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        c.advance(500);
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .unwrap()
            .unwrap();
    }
}
