//! Lead scoring as data: the reasons a score is made of, how a score moves the lifecycle
//! stage, the stored score details (reasons and a bounded history), and the built-in scoring
//! table of DESIGN.md, used whenever no plugin defines the `score` hook or the plugin fails.

use super::lead::{Lead, Score, Stage};
use super::stats::ActivityStats;
use super::time::Millis;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const DAY_MS: i64 = 86_400_000;
/// Most score changes kept per lead.
pub const HISTORY_LEN: usize = 50;
/// The soonest a time-based rule is looked at again, so a rule that keeps asking for "now"
/// cannot keep the reviewer busy.
pub const MIN_RECHECK_MS: i64 = 60_000;

/// Which part of the score a rule adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Profile,
    Engagement,
    Source,
    Interaction,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Profile => "profile",
            Part::Engagement => "engagement",
            Part::Source => "source",
            Part::Interaction => "interaction",
        }
    }

    pub fn parse(s: &str) -> Option<Part> {
        Some(match s {
            "profile" => Part::Profile,
            "engagement" => Part::Engagement,
            "source" => Part::Source,
            "interaction" => Part::Interaction,
            _ => return None,
        })
    }
}

/// One rule that fired: `"+20 title is a decision maker"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reason {
    pub rule: String,
    pub points: i32,
    pub part: Part,
}

/// What the `score` hook decided for a lead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScoreCard {
    pub reasons: Vec<Reason>,
    /// When the score may change by time alone (a decay rule), so it is looked at again then.
    pub review_at: Option<Millis>,
}

impl ScoreCard {
    /// Parts and total are sums of the reasons, so the two can never disagree.
    pub fn score(&self) -> Score {
        let mut s = Score::default();
        for r in &self.reasons {
            match r.part {
                Part::Profile => s.profile += r.points,
                Part::Engagement => s.engagement += r.points,
                Part::Source => s.source += r.points,
                Part::Interaction => s.interaction += r.points,
            }
        }
        s.total = s.profile + s.engagement + s.source + s.interaction;
        s
    }
}

/// The scores at which a lead becomes an MQL and an SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Thresholds {
    pub mql: i32,
    pub sql: i32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { mql: 40, sql: 60 }
    }
}

/// Why a score was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The lead or its activity changed.
    Change,
    /// An admin asked for every lead to be scored again.
    Rescore,
    /// Time passed (the decay rule).
    Review,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Change => "change",
            Trigger::Rescore => "rescore",
            Trigger::Review => "decay",
        }
    }
}

/// The stage a score earns.
pub fn earned_stage(total: i32, t: Thresholds) -> Stage {
    if total >= t.sql {
        Stage::Sql
    } else if total >= t.mql {
        Stage::Mql
    } else {
        Stage::Lead
    }
}

/// The stage a lead moves to when its score goes from `old_total` to `total`. Scores move
/// stages up (`lead → mql → sql`); only a time-based review (the decay rule) may move an MQL
/// or SQL back down, and only a stage the old score had earned (a stage a person set stays).
/// Later stages and disqualification are human acts the score never touches.
pub fn stage_after(
    stage: Stage,
    old_total: i32,
    total: i32,
    t: Thresholds,
    trigger: Trigger,
) -> Stage {
    let earned = earned_stage(total, t);
    let may_fall = trigger == Trigger::Review && earned_stage(old_total, t) == stage;
    let rank = |s: Stage| match s {
        Stage::Lead => 0,
        Stage::Mql => 1,
        Stage::Sql => 2,
        _ => 3,
    };
    match stage {
        Stage::Lead | Stage::Mql | Stage::Sql => {
            if rank(earned) > rank(stage) || (may_fall && earned != stage) {
                earned
            } else {
                stage
            }
        }
        other => other,
    }
}

/// One entry of a lead's score history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreChange {
    pub at: Millis,
    pub score: Score,
    pub trigger: String,
}

/// What is stored about a lead's score beyond the number on the lead. Field order is part of
/// the stored format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreDetails {
    pub reasons: Vec<Reason>,
    /// Oldest first, at most [`HISTORY_LEN`].
    pub history: Vec<ScoreChange>,
    pub review_at: Option<Millis>,
}

impl ScoreDetails {
    pub fn push_history(&mut self, change: ScoreChange) {
        self.history.push(change);
        if self.history.len() > HISTORY_LEN {
            let extra = self.history.len() - HISTORY_LEN;
            self.history.drain(..extra);
        }
    }
}

/// Whole days (fractional) from `from` to `now`.
pub fn days_between(from: Millis, now: Millis) -> f64 {
    (now - from) as f64 / DAY_MS as f64
}

/// Whether `text` mentions any of `needles`, ignoring case. A needle of ASCII letters and
/// digits must match a whole word (`cto` is not found in `director`); any other needle (such
/// as `总经理`) matches anywhere.
pub fn contains_any<S: AsRef<str>>(text: &str, needles: &[S]) -> bool {
    WordSet::new(needles).found_in(text)
}

/// Needles prepared once for [`contains_any`]: lowercased and sorted into whole words, phrases
/// and substrings, so matching a text does no per-needle work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WordSet {
    words: Vec<String>,
    phrases: Vec<Vec<String>>,
    substrings: Vec<String>,
    /// Every needle whole, for [`WordSet::equals_any`].
    whole: Vec<String>,
}

impl WordSet {
    pub fn new<S: AsRef<str>>(needles: &[S]) -> WordSet {
        let mut set = WordSet::default();
        for n in needles {
            let n = n.as_ref().trim().to_lowercase();
            if n.is_empty() {
                continue;
            }
            set.whole.push(n.clone());
            if n.chars().all(|c| c.is_ascii_alphanumeric()) {
                set.words.push(n);
            } else if n.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ') {
                // A phrase: its words, in order, next to each other.
                set.phrases.push(
                    n.split(' ')
                        .filter(|w| !w.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            } else {
                set.substrings.push(n);
            }
        }
        set
    }

    /// Whether `text`, trimmed, is one of the needles, ignoring case.
    pub fn equals_any(&self, text: &str) -> bool {
        let text = text.trim();
        if text.is_empty() {
            return false;
        }
        if text.is_ascii() {
            self.whole.iter().any(|n| n.eq_ignore_ascii_case(text))
        } else {
            let lower = text.to_lowercase();
            self.whole.contains(&lower)
        }
    }

    pub fn found_in(&self, text: &str) -> bool {
        if text.is_empty() {
            return false;
        }
        if text.is_ascii() {
            return self.found_in_ascii(text);
        }
        let lower = text.to_lowercase();
        if self.substrings.iter().any(|n| lower.contains(n.as_str())) {
            return true;
        }
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        words.iter().any(|w| self.words.iter().any(|n| n == w))
            || self
                .phrases
                .iter()
                .any(|p| words.windows(p.len()).any(|w| w == p.as_slice()))
    }

    /// [`WordSet::found_in`] without lowercasing a copy: scoring asks this of every title.
    fn found_in_ascii(&self, text: &str) -> bool {
        let t = text.as_bytes();
        let has = |n: &str| {
            n.is_ascii()
                && t.windows(n.len())
                    .any(|w| w.eq_ignore_ascii_case(n.as_bytes()))
        };
        if self.substrings.iter().any(|n| has(n)) {
            return true;
        }
        let words = || {
            text.split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
        };
        if words().any(|w| self.words.iter().any(|n| n.eq_ignore_ascii_case(w))) {
            return true;
        }
        if self.phrases.is_empty() {
            return false;
        }
        let words: Vec<&str> = words().collect();
        self.phrases.iter().any(|p| {
            words
                .windows(p.len())
                .any(|w| w.iter().zip(p).all(|(a, b)| a.eq_ignore_ascii_case(b)))
        })
    }
}

/// The built-in rules: the scoring table of DESIGN.md. `plugins/scoring.rhai` ships the same
/// table as a script; a test holds the two to the same answers.
#[derive(Debug, Clone)]
pub struct DefaultRules {
    pub decision_makers: Vec<String>,
    pub influencers: Vec<String>,
    pub target_industries: Vec<String>,
    pub decay_days: i64,
}

impl Default for DefaultRules {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect();
        DefaultRules {
            decision_makers: s(&[
                "ceo",
                "cto",
                "cfo",
                "coo",
                "vp",
                "vice president",
                "founder",
                "co-founder",
                "owner",
                "president",
                "总经理",
                "总监",
                "总裁",
                "董事长",
            ]),
            influencers: s(&["manager", "engineer", "lead", "经理", "工程师"]),
            target_industries: s(&["manufacturing", "retail"]),
            decay_days: 90,
        }
    }
}

/// Scores `lead` by the built-in table.
pub fn default_score(
    rules: &DefaultRules,
    lead: &Lead,
    stats: &ActivityStats,
    now: Millis,
) -> ScoreCard {
    let mut reasons = Vec::new();
    let mut add = |part: Part, points: i32, rule: &str| {
        reasons.push(Reason {
            rule: rule.to_owned(),
            points,
            part,
        })
    };
    let title = lead.title.as_deref().unwrap_or("");
    if contains_any(title, &rules.decision_makers) {
        add(Part::Profile, 20, "title is a decision maker");
    } else if contains_any(title, &rules.influencers) {
        add(Part::Profile, 10, "title is a user or influencer");
    }
    if lead.company_size.is_some_and(|n| (50..=500).contains(&n)) {
        add(Part::Profile, 15, "company size 50–500");
    }
    if let Some(industry) = &lead.industry
        && rules
            .target_industries
            .iter()
            .any(|t| t.eq_ignore_ascii_case(industry.trim()))
    {
        add(Part::Profile, 10, "industry is a target industry");
    }
    if lead.flags.personal_email {
        add(Part::Profile, -10, "free or personal email domain");
    }

    if stats.visits("/pricing") + stats.visits("/solution") + stats.visits("/solutions") > 0 {
        add(Part::Engagement, 15, "visited a pricing or solution page");
    }
    if stats.count("demo_request") + stats.count("trial_request") > 0 {
        add(Part::Engagement, 30, "requested a demo or trial");
    }
    if stats.count("case_study_download") + stats.count("white_paper_download") > 0 {
        add(Part::Engagement, 10, "downloaded high-value content");
    }
    if stats.count("page_view") >= 5 {
        add(Part::Engagement, 8, "5 or more site visits");
    }
    if stats.count("email_open") > 0 && stats.count("email_click") > 0 {
        add(Part::Engagement, 5, "opened and clicked a marketing email");
    }
    let last = stats
        .last_at
        .unwrap_or(lead.created_at)
        .max(lead.created_at);
    let decay_ms = rules.decay_days * DAY_MS;
    let mut review_at = None;
    if now - last > decay_ms {
        add(
            Part::Engagement,
            -20,
            "no interaction for more than 90 days",
        );
    } else {
        review_at = Some((last + decay_ms + 1).max(now + MIN_RECHECK_MS));
    }

    match lead.channel.as_deref() {
        Some("referral") => add(Part::Source, 20, "partner or referral"),
        Some("paid_search") => add(Part::Source, 10, "paid search"),
        Some("organic_search") => add(Part::Source, 8, "organic search"),
        Some("event") => add(Part::Source, 15, "offline event / trade show"),
        _ => {}
    }

    if stats.count("webinar_question") > 0 {
        add(
            Part::Interaction,
            15,
            "attended a webinar and asked a question",
        );
    }
    if stats.count("chat") + stats.count("support") >= 3 {
        add(
            Part::Interaction,
            10,
            "deep conversation with chat or support",
        );
    }
    if stats.count("inquiry") > 0 {
        add(
            Part::Interaction,
            25,
            "submitted a specific requirements inquiry",
        );
    }
    ScoreCard { reasons, review_at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lead::NewLead;
    use uuid::Uuid;

    const NOW: Millis = 1_800_000_000_000;

    /// The lowercasing path, which the ASCII fast path must agree with.
    fn found_by_lowercasing(set: &WordSet, text: &str) -> bool {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        set.substrings.iter().any(|n| lower.contains(n.as_str()))
            || words.iter().any(|w| set.words.contains(&w.to_string()))
            || set
                .phrases
                .iter()
                .any(|p| words.windows(p.len()).any(|w| w == p.as_slice()))
    }

    #[test]
    fn ascii_titles_match_as_if_lowercased() {
        let set = WordSet::new(&["CEO", "vice president", "co-founder", "总经理", "vp"]);
        for (text, expected) in [
            ("ceo", true),
            ("Acting CEO/Founder", true),
            ("CEOs", false),
            ("Vice  President of Sales", true),
            ("vice-president", true),
            ("Vice", false),
            ("CO-FOUNDER", true),
            ("cofounder", false),
            ("SVP", false),
            ("VP, Sales", true),
            ("", false),
            ("华东区总经理", true),
            ("Ceo 总经理", true),
        ] {
            assert_eq!(set.found_in(text), expected, "{text:?}");
            assert_eq!(found_by_lowercasing(&set, text), expected, "{text:?}");
        }
    }

    #[test]
    fn equals_any_ignores_case_and_surrounding_space() {
        let set = WordSet::new(&["Manufacturing", "retail", "制造业"]);
        assert!(set.equals_any(" manufacturing "));
        assert!(set.equals_any("RETAIL"));
        assert!(set.equals_any("制造业"));
        assert!(!set.equals_any("retailer"));
        assert!(!set.equals_any(""));
        assert!(!set.equals_any("   "));
    }

    fn lead(f: impl FnOnce(&mut NewLead)) -> Lead {
        let mut n = NewLead::default();
        f(&mut n);
        n.into_lead(Uuid::nil(), NOW)
    }

    fn score(l: &Lead, s: &ActivityStats) -> i32 {
        default_score(&DefaultRules::default(), l, s, NOW)
            .score()
            .total
    }

    #[test]
    fn words_match_whole_and_cjk_anywhere() {
        assert!(contains_any("CTO & Co-Founder", &["cto"]));
        assert!(!contains_any("Director of Sales", &["cto"]));
        assert!(contains_any("华东区总经理", &["总经理"]));
        assert!(contains_any(
            "Senior Vice President, Sales",
            &["vice president"]
        ));
        assert!(!contains_any("", &["cto"]));
    }

    #[test]
    fn each_profile_rule() {
        let none = ActivityStats::default();
        assert_eq!(score(&lead(|n| n.title = Some("CEO".into())), &none), 20);
        assert_eq!(score(&lead(|n| n.title = Some("总经理".into())), &none), 20);
        assert_eq!(
            score(&lead(|n| n.title = Some("Sales Manager".into())), &none),
            10
        );
        assert_eq!(score(&lead(|n| n.company_size = Some(50)), &none), 15);
        assert_eq!(score(&lead(|n| n.company_size = Some(501)), &none), 0);
        assert_eq!(
            score(&lead(|n| n.industry = Some("Retail".into())), &none),
            10
        );
        assert_eq!(score(&lead(|n| n.flags.personal_email = true), &none), -10);
    }

    #[test]
    fn parts_and_total_are_sums_of_reasons() {
        let mut s = ActivityStats::default();
        s.record_parts("demo_request", None, NOW);
        let l = lead(|n| {
            n.title = Some("CTO".into());
            n.channel = Some("paid_search".into());
        });
        let card = default_score(&DefaultRules::default(), &l, &s, NOW);
        let sc = card.score();
        assert_eq!((sc.profile, sc.engagement, sc.source), (20, 30, 10));
        assert_eq!(sc.total, 60);
        assert_eq!(card.reasons.len(), 3);
    }

    #[test]
    fn decay_after_ninety_quiet_days_and_a_review_date_before() {
        let rules = DefaultRules::default();
        let l = lead(|_| {});
        let fresh = default_score(&rules, &l, &ActivityStats::default(), NOW);
        assert_eq!(fresh.score().total, 0);
        assert_eq!(fresh.review_at, Some(NOW + 90 * DAY_MS + 1));
        let later = default_score(&rules, &l, &ActivityStats::default(), NOW + 90 * DAY_MS + 1);
        assert_eq!(later.score().total, -20);
        assert_eq!(later.review_at, None);
    }

    #[test]
    fn stages_move_up_with_the_score_and_down_only_on_review() {
        let t = Thresholds::default();
        assert_eq!(
            stage_after(Stage::Lead, 0, 40, t, Trigger::Change),
            Stage::Mql
        );
        assert_eq!(
            stage_after(Stage::Lead, 0, 75, t, Trigger::Change),
            Stage::Sql
        );
        assert_eq!(
            stage_after(Stage::Sql, 70, 10, t, Trigger::Change),
            Stage::Sql
        );
        assert_eq!(
            stage_after(Stage::Sql, 70, 10, t, Trigger::Rescore),
            Stage::Sql
        );
        assert_eq!(
            stage_after(Stage::Sql, 65, 45, t, Trigger::Review),
            Stage::Mql
        );
        // A person made it an SQL at 10 points: decay does not undo that.
        assert_eq!(
            stage_after(Stage::Sql, 10, 0, t, Trigger::Review),
            Stage::Sql
        );
        assert_eq!(
            stage_after(Stage::Disqualified, 0, 90, t, Trigger::Change),
            Stage::Disqualified
        );
        assert_eq!(
            stage_after(Stage::Opportunity, 70, 0, t, Trigger::Review),
            Stage::Opportunity
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut d = ScoreDetails::default();
        for i in 0..(HISTORY_LEN as i64 + 5) {
            d.push_history(ScoreChange {
                at: i,
                score: Score::default(),
                trigger: "change".into(),
            });
        }
        assert_eq!(d.history.len(), HISTORY_LEN);
        assert_eq!(d.history[0].at, 5);
    }
}
