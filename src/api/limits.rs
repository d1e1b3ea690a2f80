//! In-memory guards of the public capture endpoints: fixed-window rate limits per key (client
//! IP, form) and the memory of recent submissions that keeps a double submit from making a
//! second lead. Both read time from the injected clock and forget old entries as they go.

use crate::domain::time::Millis;
use std::collections::HashMap;
use std::sync::Mutex;

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
/// recognized and answered without a second write.
#[derive(Debug)]
pub struct RecentSubmissions {
    window_ms: Millis,
    seen: Mutex<HashMap<[u8; 32], Millis>>,
}

impl RecentSubmissions {
    pub fn new(window_secs: u64) -> Self {
        RecentSubmissions {
            window_ms: i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `fingerprint` was recorded within the window before `now`.
    pub fn is_repeat(&self, fingerprint: &[u8; 32], now: Millis) -> bool {
        let map = match self.seen.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.get(fingerprint)
            .is_some_and(|at| now - *at < self.window_ms)
    }

    pub fn record(&self, fingerprint: [u8; 32], now: Millis) {
        let mut map = match self.seen.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.len() >= SWEEP_AT {
            let window = self.window_ms;
            map.retain(|_, at| now - *at < window);
        }
        map.insert(fingerprint, now);
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

    #[test]
    fn a_submission_repeats_only_within_its_window() {
        let r = RecentSubmissions::new(60);
        let f = [1u8; 32];
        assert!(!r.is_repeat(&f, 0));
        r.record(f, 0);
        assert!(r.is_repeat(&f, 59_999));
        assert!(!r.is_repeat(&f, 60_000));
        assert!(!r.is_repeat(&[2u8; 32], 1));
    }
}
