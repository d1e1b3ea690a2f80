//! The speed-to-lead report arithmetic: how fast leads got their first touch, overall, per rep
//! and per channel, and how often first-touch SLAs were met. Pure: the caller feeds samples and
//! says what "now" is.

use super::time::Millis;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

const FIVE_MINUTES_MS: i64 = 5 * 60_000;
const ONE_HOUR_MS: i64 = 60 * 60_000;
const ONE_DAY_MS: i64 = 24 * ONE_HOUR_MS;

/// Group key for leads nobody owns.
pub const UNASSIGNED: &str = "unassigned";
/// Group key for leads without a channel.
pub const UNKNOWN_CHANNEL: &str = "unknown";

/// One lead, as the speed-to-lead report sees it.
#[derive(Debug, Clone)]
pub struct SpeedSample {
    /// The rep it counts for (see `service::reports`); `None` = unowned.
    pub rep: Option<uuid::Uuid>,
    pub channel: Option<String>,
    pub captured_at: Millis,
    pub first_touch_at: Option<Millis>,
    /// The first-touch deadline its SLA set, if it had one.
    pub sla_due: Option<Millis>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct SpeedStats {
    pub leads: u64,
    pub touched: u64,
    pub never_touched: u64,
    /// Seconds from capture to first touch over touched leads; None when none was touched.
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    /// Shares of all leads in the group (0.0..=1.0; 0.0 when the group is empty).
    pub within_5m: f64,
    pub within_1h: f64,
    pub within_24h: f64,
    pub never: f64,
    pub sla: SlaStats,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct SlaStats {
    /// Leads that had a first-touch deadline.
    pub with_sla: u64,
    /// Touched at or before the deadline.
    pub met: u64,
    /// Touched after it, or untouched and the deadline has passed.
    pub breached: u64,
    /// Untouched, deadline still ahead.
    pub pending: u64,
    /// met / (met + breached); None when both are 0.
    pub compliance: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SpeedReport {
    pub overall: SpeedStats,
    /// Keyed by rep id string, "unassigned" for None. BTreeMap for a stable order.
    pub by_rep: BTreeMap<String, SpeedStats>,
    /// Keyed by channel, "unknown" for None.
    pub by_channel: BTreeMap<String, SpeedStats>,
}

/// Accumulates samples into a [`SpeedReport`]. Percentiles are exact (nearest rank), so each
/// group keeps its touched leads' delays until `finish`: memory is O(touched leads).
#[derive(Debug, Default)]
pub struct SpeedBuilder {
    now: Millis,
    overall: Group,
    by_rep: BTreeMap<String, Group>,
    by_channel: BTreeMap<String, Group>,
}

impl SpeedBuilder {
    /// `now` decides whether an untouched lead's deadline has passed (breached) or not (pending).
    pub fn new(now: Millis) -> Self {
        Self {
            now,
            ..Self::default()
        }
    }

    pub fn add(&mut self, s: &SpeedSample) {
        let rep = s
            .rep
            .map_or_else(|| UNASSIGNED.to_owned(), |r| r.to_string());
        let channel = s
            .channel
            .clone()
            .unwrap_or_else(|| UNKNOWN_CHANNEL.to_owned());
        self.overall.add(s, self.now);
        self.by_rep.entry(rep).or_default().add(s, self.now);
        self.by_channel.entry(channel).or_default().add(s, self.now);
    }

    pub fn finish(self) -> SpeedReport {
        SpeedReport {
            overall: self.overall.finish(),
            by_rep: finish_all(self.by_rep),
            by_channel: finish_all(self.by_channel),
        }
    }
}

fn finish_all(groups: BTreeMap<String, Group>) -> BTreeMap<String, SpeedStats> {
    groups.into_iter().map(|(k, g)| (k, g.finish())).collect()
}

/// Running counts for one group of leads.
#[derive(Debug, Default)]
struct Group {
    leads: u64,
    within_5m: u64,
    within_1h: u64,
    within_24h: u64,
    /// Capture-to-first-touch delays in ms, sorted only at `finish`.
    delays: Vec<i64>,
    sla: SlaStats,
}

impl Group {
    fn add(&mut self, s: &SpeedSample, now: Millis) {
        self.leads += 1;
        if let Some(touch) = s.first_touch_at {
            // A touch logged before capture (clock skew, back-dated imports) counts as instant.
            let delay = touch.saturating_sub(s.captured_at).max(0);
            self.delays.push(delay);
            self.within_5m += u64::from(delay <= FIVE_MINUTES_MS);
            self.within_1h += u64::from(delay <= ONE_HOUR_MS);
            self.within_24h += u64::from(delay <= ONE_DAY_MS);
        }
        if let Some(due) = s.sla_due {
            self.sla.with_sla += 1;
            match s.first_touch_at {
                Some(touch) if touch <= due => self.sla.met += 1,
                Some(_) => self.sla.breached += 1,
                None if now > due => self.sla.breached += 1,
                None => self.sla.pending += 1,
            }
        }
    }

    fn finish(mut self) -> SpeedStats {
        self.delays.sort_unstable();
        let touched = self.delays.len() as u64;
        let never_touched = self.leads - touched;
        let share = |count: u64| {
            if self.leads == 0 {
                0.0
            } else {
                count as f64 / self.leads as f64
            }
        };
        let decided = self.sla.met + self.sla.breached;
        let compliance = (decided > 0).then(|| self.sla.met as f64 / decided as f64);
        SpeedStats {
            leads: self.leads,
            touched,
            never_touched,
            p50_seconds: percentile_seconds(&self.delays, 50),
            p90_seconds: percentile_seconds(&self.delays, 90),
            within_5m: share(self.within_5m),
            within_1h: share(self.within_1h),
            within_24h: share(self.within_24h),
            never: share(never_touched),
            sla: SlaStats {
                compliance,
                ..self.sla
            },
        }
    }
}

/// Nearest-rank percentile of sorted delays, in seconds: the value at 1-based rank
/// ceil(p/100 * n).
fn percentile_seconds(sorted: &[i64], p: usize) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (p * n).div_ceil(100).clamp(1, n);
    Some(sorted[rank - 1] as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const MIN: i64 = 60_000;
    const NOW: Millis = 1_000_000_000_000;

    fn sample(captured_at: Millis, delay: Option<i64>) -> SpeedSample {
        SpeedSample {
            rep: None,
            channel: None,
            captured_at,
            first_touch_at: delay.map(|d| captured_at + d),
            sla_due: None,
        }
    }

    fn report(samples: &[SpeedSample]) -> SpeedReport {
        let mut b = SpeedBuilder::new(NOW);
        for s in samples {
            b.add(s);
        }
        b.finish()
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        // Delays 1..=10 seconds, given out of order.
        let samples: Vec<_> = [7, 3, 10, 1, 5, 2, 9, 4, 8, 6]
            .iter()
            .map(|s| sample(NOW - 100_000, Some(s * 1000)))
            .collect();
        let r = report(&samples);
        assert_eq!(r.overall.p50_seconds, Some(5.0));
        assert_eq!(r.overall.p90_seconds, Some(9.0));

        // n = 3: p50 at rank 2, p90 at rank ceil(2.7) = 3.
        let r = report(&[
            sample(0, Some(1000)),
            sample(0, Some(60_000)),
            sample(0, Some(2500)),
        ]);
        assert_eq!(r.overall.p50_seconds, Some(2.5));
        assert_eq!(r.overall.p90_seconds, Some(60.0));

        // One touched lead is every percentile.
        let r = report(&[sample(0, Some(1500))]);
        assert_eq!(r.overall.p50_seconds, Some(1.5));
        assert_eq!(r.overall.p90_seconds, Some(1.5));
    }

    #[test]
    fn shares_are_inclusive_and_over_all_leads() {
        let r = report(&[
            sample(0, Some(5 * MIN)),       // exactly 5 minutes: within all three
            sample(0, Some(5 * MIN + 1)),   // within 1h and 24h
            sample(0, Some(60 * MIN)),      // exactly 1h
            sample(0, Some(24 * 60 * MIN)), // exactly 24h
            sample(0, Some(24 * 60 * MIN + 1)),
            sample(0, Some(-10 * MIN)), // touched before capture: 0 delay
            sample(0, None),
            sample(0, None),
        ]);
        let o = &r.overall;
        assert_eq!((o.leads, o.touched, o.never_touched), (8, 6, 2));
        assert_eq!(o.within_5m, 2.0 / 8.0);
        assert_eq!(o.within_1h, 4.0 / 8.0);
        assert_eq!(o.within_24h, 5.0 / 8.0);
        assert_eq!(o.never, 2.0 / 8.0);
        // Sorted delays: 0, 5m, 5m+1ms, 1h, 24h, 24h+1ms; p50 at rank 3.
        assert_eq!(o.p50_seconds, Some(300.001));
    }

    #[test]
    fn never_touched_group_has_no_percentiles() {
        let r = report(&[sample(0, None), sample(10, None)]);
        let o = &r.overall;
        assert_eq!((o.leads, o.touched, o.never_touched), (2, 0, 2));
        assert_eq!(o.p50_seconds, None);
        assert_eq!(o.p90_seconds, None);
        assert_eq!(o.never, 1.0);
        assert_eq!(o.within_24h, 0.0);
    }

    #[test]
    fn sla_met_breached_pending_and_compliance() {
        let due = |captured: Millis, touch: Option<Millis>, due: Millis| SpeedSample {
            sla_due: Some(due),
            first_touch_at: touch,
            ..sample(captured, None)
        };
        let r = report(&[
            due(0, Some(100), 100),       // touched right at the deadline: met
            due(0, Some(50), 100),        // met
            due(0, Some(101), 100),       // late: breached
            due(0, None, NOW - 1),        // untouched, deadline passed: breached
            due(0, None, NOW),            // untouched, deadline is now: still pending
            due(0, None, NOW + 60 * MIN), // pending
            sample(0, Some(10)),          // no SLA
        ]);
        let sla = &r.overall.sla;
        assert_eq!(sla.with_sla, 6);
        assert_eq!((sla.met, sla.breached, sla.pending), (2, 2, 2));
        assert_eq!(sla.compliance, Some(0.5));

        let r = report(&[due(0, None, NOW + 1), sample(0, Some(10))]);
        assert_eq!(r.overall.sla.pending, 1);
        assert_eq!(r.overall.sla.compliance, None);
    }

    #[test]
    fn groups_by_rep_and_channel_with_fallback_keys() {
        let alice = Uuid::from_u128(0xa11ce);
        let bob = Uuid::from_u128(0xb0b);
        let lead = |rep: Option<Uuid>, channel: Option<&str>, delay: Option<i64>| SpeedSample {
            rep,
            channel: channel.map(str::to_owned),
            ..sample(0, delay)
        };
        let r = report(&[
            lead(Some(alice), Some("web"), Some(MIN)),
            lead(Some(alice), Some("ads"), Some(2 * 60 * MIN)),
            lead(Some(bob), Some("web"), None),
            lead(None, None, Some(10 * MIN)),
        ]);
        assert_eq!(r.overall.leads, 4);

        let reps: Vec<_> = r.by_rep.keys().cloned().collect();
        let mut expected = vec![alice.to_string(), bob.to_string(), UNASSIGNED.to_owned()];
        expected.sort();
        assert_eq!(reps, expected);
        let a = &r.by_rep[&alice.to_string()];
        assert_eq!((a.leads, a.touched), (2, 2));
        assert_eq!(a.within_5m, 0.5);
        assert_eq!(a.p50_seconds, Some(60.0));
        assert_eq!(a.p90_seconds, Some(7200.0));
        assert_eq!(r.by_rep[&bob.to_string()].never, 1.0);
        assert_eq!(r.by_rep["unassigned"].p50_seconds, Some(600.0));

        let channels: Vec<_> = r.by_channel.keys().map(String::as_str).collect();
        assert_eq!(channels, ["ads", "unknown", "web"]);
        let web = &r.by_channel["web"];
        assert_eq!((web.leads, web.touched, web.never_touched), (2, 1, 1));
        assert_eq!(r.by_channel["unknown"].leads, 1);
    }

    #[test]
    fn empty_report() {
        let r = SpeedBuilder::new(NOW).finish();
        assert_eq!(r.overall, SpeedStats::default());
        assert_eq!(r.overall.within_5m, 0.0);
        assert_eq!(r.overall.never, 0.0);
        assert_eq!(r.overall.sla.compliance, None);
        assert!(r.by_rep.is_empty());
        assert!(r.by_channel.is_empty());
    }

    #[test]
    fn serializes_with_field_names() {
        let r = report(&[sample(0, Some(1000))]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["overall"]["p50_seconds"], 1.0);
        assert_eq!(
            v["by_channel"]["unknown"]["sla"]["compliance"],
            serde_json::Value::Null
        );
    }
}
