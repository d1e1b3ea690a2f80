//! Working hours for SLA clocks: which weekdays a team works, its daily opening hours in its
//! own time zone, and its holidays; and the arithmetic that turns "2 working hours after
//! capture" into an instant (and back). Pure: no clock reads.

use super::time::Millis;
use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::collections::BTreeSet;

/// How many local days the working-time walk looks ahead before it gives up on finding working
/// hours and counts the rest as plain wall-clock time. Ten years is beyond any real SLA, and the
/// bound keeps a calendar made only of holidays from looping for ever.
const MAX_DAYS: u64 = 3660;

const MINUTES_PER_DAY: u32 = 24 * 60;
const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;

const DAY_NAMES: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

/// When a team works: weekdays, daily opening hours, an IANA time zone and holidays.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    /// Monday first, as `Weekday::num_days_from_monday` counts.
    days: [bool; 7],
    /// Minutes since local midnight; `open < close`, and `close` may be 1440 ("24:00") so a
    /// team can work until the end of the day.
    open: u32,
    close: u32,
    tz: Tz,
    /// Local dates on which nobody works, whatever the weekday.
    holidays: BTreeSet<NaiveDate>,
}

impl BusinessHours {
    /// days: names like "mon","tue",.. (also full "monday", case-insensitive) — at least one;
    /// open/close: "HH:MM" 24h, open < close ("24:00" is allowed as a closing time);
    /// timezone: IANA name e.g. "Asia/Shanghai"; holidays: "YYYY-MM-DD" local dates.
    /// The error names what is wrong in words a config user understands.
    pub fn parse(
        days: &[String],
        open: &str,
        close: &str,
        timezone: &str,
        holidays: &[String],
    ) -> Result<BusinessHours, String> {
        if days.is_empty() {
            return Err("at least one working day is required".to_owned());
        }
        let mut day_set = [false; 7];
        for name in days {
            let wanted = name.trim().to_ascii_lowercase();
            let index = DAY_NAMES
                .iter()
                .position(|(short, long)| wanted == *short || wanted == *long)
                .ok_or_else(|| {
                    format!("unknown day {name:?}; use mon, tue, wed, thu, fri, sat or sun")
                })?;
            day_set[index] = true;
        }

        let open_min = parse_clock(open, false).ok_or_else(|| {
            format!("opening time {open:?} must be HH:MM in 24-hour form, e.g. 09:00")
        })?;
        let close_min = parse_clock(close, true).ok_or_else(|| {
            format!("closing time {close:?} must be HH:MM in 24-hour form, e.g. 18:00")
        })?;
        if open_min >= close_min {
            return Err("opening time must be before closing time".to_owned());
        }

        let tz: Tz = timezone
            .trim()
            .parse()
            .map_err(|_| format!("unknown time zone {timezone:?}"))?;

        let mut holiday_set = BTreeSet::new();
        for h in holidays {
            let date = NaiveDate::parse_from_str(h.trim(), "%Y-%m-%d")
                .map_err(|_| format!("holiday {h:?} is not a date in YYYY-MM-DD form"))?;
            holiday_set.insert(date);
        }

        Ok(BusinessHours {
            days: day_set,
            open: open_min,
            close: close_min,
            tz,
            holidays: holiday_set,
        })
    }

    /// The instant `working_ms` of working time after `start` (if `start` is outside working
    /// hours, counting begins at the next opening). `working_ms <= 0` returns `start` unchanged.
    /// Past the look-ahead horizon (about ten years) time counts as wall-clock time, and the
    /// result saturates at `Millis::MAX`.
    pub fn add_working(&self, start: Millis, working_ms: i64) -> Millis {
        if working_ms <= 0 {
            return start;
        }
        let mut remaining = working_ms;
        for (from, to) in self.windows(start) {
            let available = to - from;
            if remaining <= available {
                return from + remaining;
            }
            remaining -= available;
        }
        // The last window runs to Millis::MAX, so only an overflowing request gets here.
        Millis::MAX
    }

    /// Working time between `a` and `b` (0 if b <= a); the inverse of [`Self::add_working`].
    pub fn working_between(&self, a: Millis, b: Millis) -> i64 {
        if b <= a {
            return 0;
        }
        let mut total: i64 = 0;
        for (from, to) in self.windows(a) {
            if from >= b {
                break;
            }
            total = total.saturating_add(to.min(b) - from);
        }
        total
    }

    /// The IANA name of the zone the hours are kept in.
    pub fn timezone(&self) -> &str {
        self.tz.name()
    }

    /// The working windows from `start` on, as disjoint, increasing UTC intervals, walking
    /// whole local days so long spans cost one step per day. After `MAX_DAYS` days (or when the
    /// calendar runs out of representable dates) one final window runs to `Millis::MAX`, so
    /// both `add_working` and `working_between` treat the far future identically as 24/7.
    fn windows(&self, start: Millis) -> impl Iterator<Item = (Millis, Millis)> + '_ {
        let first_day = DateTime::<Utc>::from_timestamp_millis(start)
            .map(|t| t.with_timezone(&self.tz).date_naive());
        let horizon = first_day
            .and_then(|d| d.checked_add_days(chrono::Days::new(MAX_DAYS)))
            .and_then(|d| self.local_to_utc(d, 0));
        let mut day = first_day;
        let mut days_left = MAX_DAYS;
        let mut cursor = start;
        let mut tail_done = false;
        std::iter::from_fn(move || {
            while days_left > 0 {
                let Some(d) = day else { break };
                days_left -= 1;
                day = d.succ_opt();
                if !self.works_on(d) {
                    continue;
                }
                let Some((open, close)) = self.window_on(d) else {
                    day = None;
                    break;
                };
                let from = open.max(cursor);
                let to = horizon.map_or(close, |h| close.min(h));
                if to > from {
                    cursor = to;
                    return Some((from, to));
                }
            }
            if tail_done {
                return None;
            }
            tail_done = true;
            // Cut short by the calendar's edge rather than the horizon: continue from where
            // the walk stopped, so no time is skipped.
            let from = horizon
                .filter(|_| days_left == 0)
                .map_or(cursor, |h| h.max(cursor));
            (from < Millis::MAX).then_some((from, Millis::MAX))
        })
    }

    fn works_on(&self, date: NaiveDate) -> bool {
        self.days[date.weekday().num_days_from_monday() as usize] && !self.holidays.contains(&date)
    }

    /// The opening and closing instants of `date` (whether or not it is a working day); `None`
    /// only at the edge of the representable calendar.
    fn window_on(&self, date: NaiveDate) -> Option<(Millis, Millis)> {
        Some((
            self.local_to_utc(date, self.open)?,
            self.local_to_utc(date, self.close)?,
        ))
    }

    /// The UTC instant of a local wall-clock time. An ambiguous time (autumn fall-back) takes the
    /// earlier instant; a time that does not exist (spring-forward gap) takes the first instant
    /// after it, i.e. the transition itself, so a window opening in the gap opens when the
    /// clocks jump.
    fn local_to_utc(&self, date: NaiveDate, minutes: u32) -> Option<Millis> {
        let (date, minutes) = if minutes >= MINUTES_PER_DAY {
            (date.succ_opt()?, minutes - MINUTES_PER_DAY)
        } else {
            (date, minutes)
        };
        let local = date.and_hms_opt(minutes / 60, minutes % 60, 0)?;
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t.timestamp_millis()),
            LocalResult::Ambiguous(a, b) => Some(a.min(b).timestamp_millis()),
            LocalResult::None => self.first_instant_at_or_after(local),
        }
    }

    /// Binary search for the first instant whose local time is at or after `local`. UTC offsets
    /// stay within ±14 h and no gap lasts longer than a day, so ±27 h around the naive reading
    /// brackets the answer.
    fn first_instant_at_or_after(&self, local: NaiveDateTime) -> Option<Millis> {
        let naive = local.and_utc().timestamp_millis();
        let reaches = |t: Millis| {
            DateTime::<Utc>::from_timestamp_millis(t)
                .is_some_and(|u| u.with_timezone(&self.tz).naive_local() >= local)
        };
        let mut lo = naive.checked_sub(27 * MS_PER_HOUR)?;
        let mut hi = naive.checked_add(27 * MS_PER_HOUR)?;
        if reaches(lo) || !reaches(hi) {
            return None;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if reaches(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }
}

/// `add_working` with no business hours means plain wall-clock time (24/7).
pub fn deadline(hours: Option<&BusinessHours>, start: Millis, working_ms: i64) -> Millis {
    match hours {
        Some(h) => h.add_working(start, working_ms),
        None if working_ms <= 0 => start,
        None => start.saturating_add(working_ms),
    }
}

/// Minutes since midnight for "HH:MM" (one- or two-digit hour). "24:00" is accepted only when
/// `allow_end_of_day`, for a closing time at midnight.
fn parse_clock(s: &str, allow_end_of_day: bool) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || h.len() > 2 || !digits(m) || m.len() != 2 {
        return None;
    }
    let hour: u32 = h.parse().ok()?;
    let minute: u32 = m.parse().ok()?;
    if hour == 24 && minute == 0 && allow_end_of_day {
        return Some(MINUTES_PER_DAY);
    }
    (hour < 24 && minute < 60).then_some(hour * 60 + minute)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn weekdays() -> Vec<String> {
        strings(&["mon", "tue", "wed", "thu", "fri"])
    }

    fn hours(tz: &str, open: &str, close: &str, holidays: &[&str]) -> BusinessHours {
        BusinessHours::parse(&weekdays(), open, close, tz, &strings(holidays)).unwrap()
    }

    fn shanghai() -> BusinessHours {
        hours("Asia/Shanghai", "09:00", "18:00", &[])
    }

    /// An instant from a local wall-clock time in `tz` ("YYYY-MM-DD HH:MM"), taking the earlier
    /// instant when ambiguous.
    fn local(tz: &str, s: &str) -> Millis {
        let tz: Tz = tz.parse().unwrap();
        let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        tz.from_local_datetime(&naive)
            .earliest()
            .unwrap()
            .timestamp_millis()
    }

    fn utc(s: &str) -> Millis {
        local("UTC", s)
    }

    fn sh(s: &str) -> Millis {
        local("Asia/Shanghai", s)
    }

    const H: i64 = MS_PER_HOUR;
    const M: i64 = MS_PER_MINUTE;

    #[test]
    fn friday_evening_lead_is_due_monday_morning() {
        // 2026-11-20 is a Friday; 17:30 leaves 30 minutes, 90 more on Monday from 09:00.
        let due = shanghai().add_working(sh("2026-11-20 17:30"), 2 * H);
        assert_eq!(due, sh("2026-11-23 10:30"));
        assert_eq!(due, utc("2026-11-23 02:30"));
    }

    #[test]
    fn within_the_same_day() {
        let h = shanghai();
        assert_eq!(
            h.add_working(sh("2026-11-18 10:15"), 2 * H + 5 * M),
            sh("2026-11-18 12:20")
        );
        // Exactly reaching closing time stays on the same day.
        assert_eq!(
            h.add_working(sh("2026-11-18 16:00"), 2 * H),
            sh("2026-11-18 18:00")
        );
    }

    #[test]
    fn before_opening_starts_at_opening() {
        assert_eq!(
            shanghai().add_working(sh("2026-11-18 06:45"), 30 * M),
            sh("2026-11-18 09:30")
        );
    }

    #[test]
    fn weekend_start_waits_for_monday() {
        let h = shanghai();
        assert_eq!(
            h.add_working(sh("2026-11-21 11:00"), H),
            sh("2026-11-23 10:00")
        );
        assert_eq!(
            h.add_working(sh("2026-11-22 23:59"), H),
            sh("2026-11-23 10:00")
        );
        // After closing on Friday, too.
        assert_eq!(
            h.add_working(sh("2026-11-20 19:00"), H),
            sh("2026-11-23 10:00")
        );
    }

    #[test]
    fn monday_holiday_pushes_to_tuesday() {
        let h = hours("Asia/Shanghai", "09:00", "18:00", &["2026-11-23"]);
        let due = h.add_working(sh("2026-11-20 17:30"), 2 * H);
        assert_eq!(due, sh("2026-11-24 10:30"));
    }

    #[test]
    fn multi_day_durations() {
        let h = shanghai();
        // Three working days of nine hours from Wednesday noon end Monday noon.
        assert_eq!(
            h.add_working(sh("2026-11-18 12:00"), 27 * H),
            sh("2026-11-23 12:00")
        );
        // Thirty working days (six weeks) from Monday opening end on a Friday at closing.
        assert_eq!(
            h.add_working(sh("2026-11-02 09:00"), 30 * 9 * H),
            sh("2026-12-11 18:00")
        );
    }

    #[test]
    fn non_positive_duration_returns_start() {
        let h = shanghai();
        let start = sh("2026-11-21 11:00");
        assert_eq!(h.add_working(start, 0), start);
        assert_eq!(h.add_working(start, -5 * H), start);
    }

    #[test]
    fn working_between_inverts_add_working() {
        let h = hours(
            "Asia/Shanghai",
            "09:00",
            "18:00",
            &["2026-11-23", "2026-12-25"],
        );
        let starts = [
            sh("2026-11-20 17:30"),
            sh("2026-11-18 06:45"),
            sh("2026-11-21 11:00"),
            sh("2026-12-24 12:34"),
            sh("2026-11-18 10:15"),
        ];
        let durations = [1, M, 2 * H, 9 * H, 27 * H + 17 * M, 300 * H];
        for &start in &starts {
            for &w in &durations {
                let end = h.add_working(start, w);
                assert_eq!(h.working_between(start, end), w, "start {start} w {w}");
            }
        }
        assert_eq!(
            h.working_between(sh("2026-11-20 17:30"), sh("2026-11-24 10:30")),
            2 * H
        );
        assert_eq!(
            h.working_between(sh("2026-11-21 10:00"), sh("2026-11-22 10:00")),
            0
        );
        assert_eq!(
            h.working_between(sh("2026-11-18 12:00"), sh("2026-11-18 11:00")),
            0
        );
    }

    #[test]
    fn new_york_across_spring_forward() {
        let ny = "America/New_York";
        let h = hours(ny, "09:00", "17:00", &[]);
        // Friday 2026-03-06 is EST (-5); Monday 2026-03-09 is EDT (-4).
        let due = h.add_working(local(ny, "2026-03-06 16:00"), 2 * H);
        assert_eq!(due, local(ny, "2026-03-09 10:00"));
        assert_eq!(due, utc("2026-03-09 14:00"));
        assert_eq!(h.working_between(local(ny, "2026-03-06 16:00"), due), 2 * H);
    }

    #[test]
    fn opening_inside_the_gap_opens_when_clocks_jump() {
        let ny = "America/New_York";
        let every_day = strings(&["mon", "tue", "wed", "thu", "fri", "sat", "sun"]);
        // 02:30 does not exist on 2026-03-08; the clocks jump from 02:00 EST to 03:00 EDT (07:00Z).
        let h = BusinessHours::parse(&every_day, "02:30", "04:00", ny, &[]).unwrap();
        let start = utc("2026-03-08 00:00");
        assert_eq!(h.add_working(start, 30 * M), utc("2026-03-08 07:30"));
        // That day has one working hour (03:00–04:00 EDT), not one and a half.
        assert_eq!(h.working_between(start, utc("2026-03-08 12:00")), H);
    }

    #[test]
    fn ambiguous_times_take_the_earlier_instant() {
        let ny = "America/New_York";
        let every_day = strings(&["mon", "tue", "wed", "thu", "fri", "sat", "sun"]);
        // 01:30 happens twice on 2026-11-01: first in EDT (05:30Z), then in EST (06:30Z).
        let h = BusinessHours::parse(&every_day, "01:30", "03:00", ny, &[]).unwrap();
        let start = utc("2026-11-01 00:00");
        assert_eq!(h.add_working(start, M), utc("2026-11-01 05:31"));
        // 01:30 EDT to 03:00 EST is two and a half real hours.
        assert_eq!(
            h.working_between(start, utc("2026-11-01 12:00")),
            2 * H + 30 * M
        );
    }

    #[test]
    fn a_skipped_calendar_day_has_no_working_time() {
        // Samoa skipped 2011-12-30 entirely, moving from UTC-10 to UTC+14.
        let apia = "Pacific/Apia";
        let every_day = strings(&["mon", "tue", "wed", "thu", "fri", "sat", "sun"]);
        let h = BusinessHours::parse(&every_day, "09:00", "17:00", apia, &[]).unwrap();
        let start = local(apia, "2011-12-29 16:00");
        let due = h.add_working(start, 2 * H);
        assert_eq!(due, local(apia, "2011-12-31 10:00"));
        assert_eq!(due, utc("2011-12-30 20:00"));
        assert_eq!(h.working_between(start, due), 2 * H);
    }

    #[test]
    fn whole_day_hours_and_midnight_close() {
        let every_day = strings(&["Monday", "TUE", "wed", "thu", "fri", "sat", "sun"]);
        let h = BusinessHours::parse(&every_day, "00:00", "24:00", "UTC", &[]).unwrap();
        let start = utc("2026-11-20 17:30");
        assert_eq!(h.add_working(start, 50 * H), start + 50 * H);
        assert_eq!(h.working_between(start, start + 50 * H), 50 * H);
    }

    #[test]
    fn all_holidays_cannot_loop_for_ever() {
        let mondays: Vec<String> = (0..600)
            .map(|w| {
                let d = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap() + chrono::Days::new(7 * w);
                d.format("%Y-%m-%d").to_string()
            })
            .collect();
        let h =
            BusinessHours::parse(&strings(&["mon"]), "09:00", "17:00", "UTC", &mondays).unwrap();
        let start = utc("2026-11-20 17:30");
        // Beyond the look-ahead horizon time counts as wall-clock time: finite and consistent.
        let due = h.add_working(start, H);
        assert!(due > start + 3000 * 24 * H);
        assert_eq!(h.working_between(start, due), H);
        // Huge requests saturate rather than overflow.
        assert_eq!(h.add_working(start, i64::MAX), Millis::MAX);
        // Instants beyond the calendar fall back to wall-clock time.
        assert_eq!(h.add_working(Millis::MAX - 10, 5), Millis::MAX - 5);
    }

    #[test]
    fn deadline_without_hours_is_wall_clock() {
        let start = sh("2026-11-20 17:30");
        assert_eq!(deadline(None, start, 2 * H), start + 2 * H);
        assert_eq!(deadline(None, start, -1), start);
        assert_eq!(deadline(None, Millis::MAX - 1, 2 * H), Millis::MAX);
        assert_eq!(
            deadline(Some(&shanghai()), start, 2 * H),
            sh("2026-11-23 10:30")
        );
    }

    #[test]
    fn timezone_name_round_trips() {
        assert_eq!(shanghai().timezone(), "Asia/Shanghai");
    }

    #[test]
    fn parse_errors_read_like_config_advice() {
        let ok_days = weekdays();
        let parse = |days: &[String], open: &str, close: &str, tz: &str, hol: &[&str]| {
            BusinessHours::parse(days, open, close, tz, &strings(hol)).unwrap_err()
        };
        assert_eq!(
            parse(&ok_days, "09:00", "18:00", "Asia/Shangai", &[]),
            "unknown time zone \"Asia/Shangai\""
        );
        assert!(parse(&ok_days, "9am", "18:00", "UTC", &[]).contains("opening time \"9am\""));
        assert!(parse(&ok_days, "09:00", "25:00", "UTC", &[]).contains("closing time"));
        assert!(parse(&ok_days, "09:60", "18:00", "UTC", &[]).contains("opening time"));
        assert!(parse(&ok_days, "24:00", "24:00", "UTC", &[]).contains("opening time"));
        assert_eq!(
            parse(&ok_days, "18:00", "09:00", "UTC", &[]),
            "opening time must be before closing time"
        );
        assert_eq!(
            parse(&ok_days, "09:00", "09:00", "UTC", &[]),
            "opening time must be before closing time"
        );
        assert!(parse(&[], "09:00", "18:00", "UTC", &[]).contains("at least one working day"));
        assert!(
            parse(&ok_days, "09:00", "18:00", "UTC", &["2026-02-30"]).contains("\"2026-02-30\"")
        );
        assert!(parse(&ok_days, "09:00", "18:00", "UTC", &["next tuesday"]).contains("holiday"));
        assert!(
            parse(&strings(&["mon", "funday"]), "09:00", "18:00", "UTC", &[])
                .contains("unknown day \"funday\"")
        );
    }

    #[test]
    fn parse_accepts_flexible_spelling() {
        let h = BusinessHours::parse(
            &strings(&[" Monday ", "FRI", "fri"]),
            " 9:00 ",
            "17:30",
            " Europe/Berlin ",
            &strings(&[" 2026-12-25 "]),
        )
        .unwrap();
        assert_eq!(h.timezone(), "Europe/Berlin");
        assert_eq!(h.days, [true, false, false, false, true, false, false]);
        assert_eq!((h.open, h.close), (9 * 60, 17 * 60 + 30));
        assert!(
            h.holidays
                .contains(&NaiveDate::from_ymd_opt(2026, 12, 25).unwrap())
        );
    }
}
