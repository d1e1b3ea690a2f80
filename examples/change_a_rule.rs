//! Changing a scoring rule, end to end, without a server: `cargo run --example change_a_rule`.
//!
//! It copies the shipped `plugins/scoring.rhai` into a temporary plugins directory, scores two
//! sample leads, raises the "requested a demo or trial" rule from 30 to 35 points in the copy,
//! reloads (what the server does by itself within about two seconds of a save, or on
//! `POST /v1/admin/plugins/reload`), and scores the same leads again. The shipped file is
//! never touched. See plugins/README.md, "Changing a rule".

use leadline::domain::lead::{Lead, NewLead, Stage};
use leadline::domain::score::{ScoreCard, Trigger, stage_after};
use leadline::domain::stats::ActivityStats;
use leadline::script::{PluginSettings, Plugins};
use std::path::Path;
use std::sync::Arc;

/// 2026-11-23T00:00:00Z, in milliseconds since the epoch: the example's fixed "now".
const NOW: i64 = 1_795_392_000_000;
const HOUR_MS: i64 = 3_600_000;

const OLD_RULE: &str =
    r#"reasons += #{ rule: "requested a demo or trial", points: 30, part: "engagement" };"#;
const NEW_RULE: &str =
    r#"reasons += #{ rule: "requested a demo or trial", points: 35, part: "engagement" };"#;

struct Sample {
    what: &'static str,
    lead: Lead,
    stats: ActivityStats,
}

fn samples() -> Vec<Sample> {
    // A CTO from paid search who requested a demo an hour ago.
    let cto = NewLead {
        name: Some("Dana Li".into()),
        email: Some("dana@acme.example".into()),
        company: Some("Acme".into()),
        title: Some("CTO".into()),
        channel: Some("paid_search".into()),
        ..NewLead::default()
    };
    let mut cto_stats = ActivityStats::default();
    cto_stats.record_parts("demo_request", None, NOW - HOUR_MS);

    // Someone from organic search with no title who asked for a trial: just under the MQL line
    // before the change, over it after.
    let visitor = NewLead {
        name: Some("Sam Park".into()),
        channel: Some("organic_search".into()),
        ..NewLead::default()
    };
    let mut visitor_stats = ActivityStats::default();
    visitor_stats.record_parts("trial_request", None, NOW - HOUR_MS);

    vec![
        Sample {
            what: "a CTO who requested a demo",
            lead: cto.into_lead(uuid::Uuid::nil(), NOW - 2 * HOUR_MS),
            stats: cto_stats,
        },
        Sample {
            what: "an organic-search visitor who asked for a trial",
            lead: visitor.into_lead(uuid::Uuid::nil(), NOW - 2 * HOUR_MS),
            stats: visitor_stats,
        },
    ]
}

/// Scores every sample with the scripts in force now; prints and returns the cards.
fn score_all(plugins: &Plugins, samples: &[Sample]) -> Vec<ScoreCard> {
    let loaded = plugins.current();
    samples
        .iter()
        .map(|s| {
            let (lead, stats) = (Arc::new(s.lead.clone()), Arc::new(s.stats.clone()));
            let (card, answered_by) = plugins.score(&loaded, &lead, &stats, NOW);
            // Anything but the script answering means the edit broke it and the built-in
            // table answered instead: that would make this example meaningless.
            let by = format!("{answered_by:?}");
            assert!(
                by.starts_with("Script("),
                "the scoring script did not answer: {by}"
            );
            let score = card.score();
            // What a new lead with this score becomes (stages only ever move up on a change).
            let stage = stage_after(
                Stage::Lead,
                0,
                score.total,
                loaded.thresholds,
                Trigger::Change,
            );
            println!(
                "  {}: total {} → stage {}",
                s.what,
                score.total,
                stage.as_str()
            );
            for r in &card.reasons {
                println!("      {:+4}  {:<12} {}", r.points, r.part.as_str(), r.rule);
            }
            card
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/scoring.rhai");
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("scoring.rhai");
    std::fs::copy(&shipped, &copy)?;
    println!(
        "plugins directory: {} (a copy of {})",
        dir.path().display(),
        shipped.display()
    );

    let plugins = Plugins::load(
        PluginSettings {
            dir: dir.path().to_owned(),
            ..PluginSettings::default()
        },
        NOW,
    );
    let report = plugins.report();
    anyhow::ensure!(
        report.not_loaded.is_empty(),
        "the shipped script did not compile: {:?}",
        report.not_loaded
    );
    let t = plugins.current().thresholds;
    println!("thresholds from the script: MQL {}, SQL {}", t.mql, t.sql);

    let samples = samples();
    println!("\nbefore: demo or trial request = 30 points");
    let before = score_all(&plugins, &samples);

    // The edit an admin makes in an editor.
    let source = std::fs::read_to_string(&copy)?;
    anyhow::ensure!(
        source.matches(OLD_RULE).count() == 1,
        "the demo rule in plugins/scoring.rhai no longer reads `{OLD_RULE}`; update this example"
    );
    std::fs::write(&copy, source.replace(OLD_RULE, NEW_RULE))?;

    // The server does this by itself after a save (file watch) or on
    // POST /v1/admin/plugins/reload.
    let reload = plugins.reload(NOW);
    println!(
        "\nreloaded: compiled {:?}, failed {:?}",
        reload.compiled, reload.failed
    );
    anyhow::ensure!(
        reload.failed.is_empty(),
        "the edited script failed to compile"
    );
    anyhow::ensure!(
        reload.compiled == ["scoring.rhai"],
        "the edit was not picked up"
    );

    println!("\nafter: demo or trial request = 35 points");
    let after = score_all(&plugins, &samples);

    for ((s, b), a) in samples.iter().zip(&before).zip(&after) {
        let (b, a) = (b.score().total, a.score().total);
        assert_eq!(a, b + 5, "{}: {b} → {a}, expected 5 more", s.what);
    }
    println!(
        "\nboth totals are 5 higher. Next, on a server: `leadline plugins test`, save the file, \
         then `POST /v1/admin/rescore?dry_run=true` and `POST /v1/admin/rescore`."
    );
    Ok(())
}
