//! In-memory guards of the public capture endpoints: fixed-window rate limits per key (client
//! IP, form) and the memory of recent submissions that keeps a double submit from making a
//! second lead. Both read time from the injected clock and forget old entries as they go.

use crate::domain::time::Millis;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

const WINDOW_MS: Millis = 60_000;
/// Entries kept before stale ones are swept, so a flood of distinct keys cannot grow memory.
const SWEEP_AT: usize = 100_000;

/// At most `per_minute` hits per key in each clock minute.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<String, (Millis, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a hit for `key`; `Err(seconds)` says how long until the key may try again.
    pub fn hit(&self, key: &str, now: Millis) -> Result<(), u64> {
        let window = now - now.rem_euclid(WINDOW_MS);
        let mut map = match self.windows.lock() {
            Ok(m) => m,
            // A panic elsewhere while holding the lock leaves plain counters; keep using them.
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.len() >= SWEEP_AT {
            map.retain(|_, (w, _)| *w == window);
        }
        let entry = map.entry(key.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.per_minute {
            let wait_ms = window + WINDOW_MS - now;
            return Err(u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// Remembers what was submitted lately, so the same submission within the window is
/// recognized and answered without a second write, also while the first is still being
/// written (a double click sends both at once).
#[derive(Debug)]
pub struct RecentSubmissions {
    window_ms: Millis,
    seen: Mutex<HashMap<[u8; 32], Seen>>,
}

#[derive(Debug)]
struct Seen {
    at: Millis,
    /// `None` while the first is being written; then whether it was stored.
    stored: watch::Receiver<Option<bool>>,
}

/// What to do with a submission.
#[derive(Debug)]
pub enum Claim {
    /// The first within the window: write it, then say how that went.
    First(FirstSubmission),
    /// A repeat of one stored within the window: answer without a write.
    Repeat,
}

/// The claim on writing a submission. Dropped without [`FirstSubmission::stored`] (the write
/// failed, or the request went away), it lets the next repeat write instead.
#[derive(Debug)]
pub struct FirstSubmission {
    outcome: watch::Sender<Option<bool>>,
    done: bool,
}

impl FirstSubmission {
    pub fn stored(mut self) {
        self.done = true;
        self.outcome.send_replace(Some(true));
    }
}

impl Drop for FirstSubmission {
    fn drop(&mut self) {
        if !self.done {
            self.outcome.send_replace(Some(false));
        }
    }
}

impl RecentSubmissions {
    pub fn new(window_secs: u64) -> Self {
        RecentSubmissions {
            window_ms: i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Claims writing `fingerprint` at `now`. A repeat of a submission still being written
    /// waits for that write: stored, it is a repeat; failed, this one writes.
    pub async fn claim(&self, fingerprint: [u8; 32], now: Millis) -> Claim {
        loop {
            let mut pending = {
                let mut map = match self.seen.lock() {
                    Ok(m) => m,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if map.len() >= SWEEP_AT {
                    let window = self.window_ms;
                    map.retain(|_, s| now - s.at < window);
                }
                match map.get(&fingerprint) {
                    Some(s) if now - s.at < self.window_ms && *s.stored.borrow() != Some(false) => {
                        s.stored.clone()
                    }
                    _ => {
                        let (outcome, stored) = watch::channel(None);
                        map.insert(fingerprint, Seen { at: now, stored });
                        return Claim::First(FirstSubmission {
                            outcome,
                            done: false,
                        });
                    }
                }
            };
            match pending.wait_for(Option::is_some).await.map(|s| *s) {
                Ok(Some(true)) => return Claim::Repeat,
                // Failed or given up: the next try claims it afresh.
                _ => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_quota_per_minute_and_hears_when_to_retry() {
        let l = RateLimiter::new(2);
        let t = 10 * WINDOW_MS + 15_000;
        assert!(l.hit("a", t).is_ok());
        assert!(l.hit("a", t).is_ok());
        assert_eq!(l.hit("a", t), Err(45));
        assert!(l.hit("b", t).is_ok(), "keys are separate");
        assert!(l.hit("a", 11 * WINDOW_MS).is_ok(), "a new minute resets");
    }

    #[tokio::test]
    async fn a_submission_repeats_only_within_its_window_once_stored() {
        let r = RecentSubmissions::new(60);
        let f = [1u8; 32];
        let Claim::First(first) = r.claim(f, 0).await else {
            panic!("the first")
        };
        first.stored();
        assert!(matches!(r.claim(f, 59_999).await, Claim::Repeat));
        assert!(matches!(r.claim(f, 60_000).await, Claim::First(_)));
        assert!(matches!(r.claim([2u8; 32], 1).await, Claim::First(_)));
    }

    #[tokio::test]
    async fn a_repeat_waits_for_the_first_write_and_takes_over_if_it_fails() {
        let r = std::sync::Arc::new(RecentSubmissions::new(60));
        let f = [3u8; 32];
        let Claim::First(first) = r.claim(f, 0).await else {
            panic!("the first")
        };
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { matches!(r.claim(f, 10).await, Claim::Repeat) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "waits while the first is written");
        first.stored();
        assert!(waiting.await.unwrap(), "a repeat once the first is stored");

        let g = [4u8; 32];
        let Claim::First(failing) = r.claim(g, 0).await else {
            panic!("the first")
        };
        let retry = tokio::spawn({
            let r = r.clone();
            async move { r.claim(g, 10).await }
        });
        tokio::task::yield_now().await;
        drop(failing);
        assert!(
            matches!(retry.await.unwrap(), Claim::First(_)),
            "a failed first leaves the write to the repeat"
        );
    }
}
