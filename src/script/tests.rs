//! The runtime against real scripts: the shipped scoring plugin agrees with the built-in
//! table, and hostile scripts get the built-in rule quickly without harming the caller.

use super::*;
use crate::domain::lead::{Lead, NewLead};
use crate::domain::score::{DAY_MS, ScoreCard, default_score};
use crate::domain::stats::ActivityStats;
use std::time::Duration;

const NOW: Millis = 1_800_000_000_000;

fn shipped() -> Plugins {
    Plugins::load(
        PluginSettings {
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins"),
            ..PluginSettings::default()
        },
        NOW,
    )
}

fn with_script(src: &str) -> (tempfile::TempDir, Plugins) {
    with_file("scoring.rhai", src, Limits::default())
}

/// Plugins from one script file, `file`, under `limits`.
fn with_file(file: &str, src: &str, limits: Limits) -> (tempfile::TempDir, Plugins) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(file), src).unwrap();
    let p = Plugins::load(
        PluginSettings {
            dir: dir.path().to_owned(),
            limits,
            ..PluginSettings::default()
        },
        NOW,
    );
    (dir, p)
}

fn lead(f: impl FnOnce(&mut NewLead)) -> Lead {
    let mut n = NewLead::default();
    f(&mut n);
    n.into_lead(uuid::Uuid::nil(), NOW - 10 * DAY_MS)
}

/// Leads and activity that, together, fire every rule of the table.
fn samples() -> Vec<(Lead, ActivityStats)> {
    let titles = [
        None,
        Some("CEO"),
        Some("华东区总经理"),
        Some("Sales Manager"),
        Some("Director"),
        Some("Vice President, Sales"),
        Some("Co-Founder"),
    ];
    let channels = [
        None,
        Some("referral"),
        Some("paid_search"),
        Some("organic_search"),
        Some("event"),
        Some("social"),
    ];
    let kinds: [&[&str]; 8] = [
        &[],
        &["demo_request"],
        &["case_study_download", "email_open", "email_click"],
        &["page_view"; 5],
        &["webinar_question"],
        &["chat", "support", "chat"],
        &["inquiry", "trial_request"],
        &["email_open"],
    ];
    let mut out = Vec::new();
    for (i, t) in titles.iter().enumerate() {
        for (j, c) in channels.iter().enumerate() {
            for (k, ks) in kinds.iter().enumerate() {
                let l = lead(|n| {
                    n.title = t.map(Into::into);
                    n.channel = c.map(Into::into);
                    n.company_size = [None, Some(50), Some(500), Some(501)][(i + k) % 4];
                    n.industry = [
                        None,
                        Some("Retail"),
                        Some("banking"),
                        Some(" Manufacturing "),
                    ][(j + k) % 4]
                        .map(Into::into);
                    n.flags.personal_email = (i + j + k) % 2 == 0;
                });
                let mut s = ActivityStats::default();
                let at = if (i + j + k) % 3 == 0 {
                    NOW - 100 * DAY_MS
                } else {
                    NOW - DAY_MS
                };
                for kind in *ks {
                    s.record_parts(kind, None, at);
                }
                let page = ["/pricing/team", "/Solutions/retail", "/solution", "/blog"][i % 4];
                if (j + k) % 4 == 0 {
                    s.record_parts("page_view", Some(page), at);
                }
                if (i + k) % 5 == 0 {
                    s.record_parts("white_paper_download", None, at);
                }
                out.push((l, s));
            }
        }
    }
    out
}

#[test]
fn the_shipped_scoring_plugin_agrees_with_the_built_in_table() {
    let plugins = shipped();
    let loaded = plugins.current();
    assert!(
        loaded.script_for(Hook::Score).is_some(),
        "{:?}",
        plugins.report().not_loaded
    );
    assert_eq!(loaded.thresholds, Thresholds { mql: 40, sql: 60 });
    for (l, s) in samples() {
        let (card, source) = score_of(&plugins, &l, &s);
        assert_eq!(source, hooks::Source::Script("scoring.rhai".into()));
        let builtin = default_score(plugins.defaults(), &l, &s, NOW);
        assert_eq!(card.reasons, builtin.reasons, "lead {l:?} stats {s:?}");
        assert_eq!(card.review_at.is_some(), builtin.review_at.is_some());
    }
    let report = plugins.report();
    assert_eq!(
        report.scripts[0].errors, 0,
        "{:?}",
        report.scripts[0].last_error
    );
}

#[test]
fn plugin_config_reaches_the_script() {
    let mut config = BTreeMap::new();
    config.insert(
        "scoring".to_owned(),
        serde_json::json!({"target_industries": ["banking"]}),
    );
    let plugins = Plugins::load(
        PluginSettings {
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins"),
            config,
            ..PluginSettings::default()
        },
        NOW,
    );
    let l = lead(|n| n.industry = Some("Banking".into()));
    let (card, _) = score_of(&plugins, &l, &ActivityStats::default());
    assert_eq!(card.score().profile, 10);
}

fn assert_falls_back(src: &str, expect_in_error: &str) {
    let (_dir, plugins) = with_script(src);
    let l = lead(|n| n.title = Some("CTO".into()));
    let started = std::time::Instant::now();
    let (card, source) = score_of(&plugins, &l, &ActivityStats::default());
    let took = started.elapsed();
    assert!(took < Duration::from_millis(100), "{src}: took {took:?}");
    assert_eq!(card.score().total, 20, "the built-in table answered");
    match source {
        hooks::Source::Fallback(file, failure) => {
            assert_eq!(file, "scoring.rhai");
            assert!(
                failure.message.contains(expect_in_error),
                "{src}: {}",
                failure.message
            );
        }
        other => panic!("{src}: expected a fallback, got {other:?}"),
    }
    let report = plugins.report();
    assert_eq!(report.scripts[0].errors, 1);
    assert!(report.scripts[0].last_error.is_some());
}

#[test]
fn hostile_scripts_get_the_built_in_rule() {
    assert_falls_back("fn score(lead, stats) { loop {} }", "");
    assert_falls_back("fn f(n) { f(n + 1) } fn score(lead, stats) { f(0) }", "");
    assert_falls_back(
        r#"fn score(lead, stats) { let s = "x"; s.pad(100_000_000, 'x'); s }"#,
        "",
    );
    assert_falls_back(
        "fn score(lead, stats) { no_such_function(lead) }",
        "no_such_function",
    );
    assert_falls_back(r#"fn score(lead, stats) { 1 + "a" - lead }"#, "");
    assert_falls_back(r#"fn score(lead, stats) { "very high" }"#, "wrong shape");
}

#[test]
fn scripts_read_when_a_kind_happened_and_a_page_was_last_seen() {
    let (_dir, plugins) = with_script(
        r#"fn score(lead, stats) {
            let r = [];
            if stats.days_since_visit("/pricing") == 2.0 { r += #{rule: "a", points: 1, part: "engagement"}; }
            if stats.last_visit_at("/pricing") == stats.last_at("page_view") { r += #{rule: "b", points: 2, part: "engagement"}; }
            if stats.last_visit_at("/nowhere") == () && stats.days_since_visit("/x") == () && stats.last_at("chat") == () {
                r += #{rule: "c", points: 4, part: "engagement"};
            }
            r
        }"#,
    );
    let mut stats = ActivityStats::default();
    stats.record_parts("page_view", Some("/pricing/team"), NOW - 2 * DAY_MS);
    stats.record_parts("page_view", Some("/blog"), NOW - 3 * DAY_MS);
    let (card, source) = score_of(&plugins, &lead(|_| {}), &stats);
    assert!(matches!(source, hooks::Source::Script(_)), "{source:?}");
    assert_eq!(card.score().total, 7);
}

#[test]
fn a_wrong_shape_is_reported_at_the_line_of_its_hook() {
    let (_dir, plugins) = with_script(
        "const X = 1;\n\nfn helper() { 2 }\nfn score(lead, stats) {\n  \"very high\"\n}",
    );
    match score_of(&plugins, &lead(|_| {}), &ActivityStats::default()).1 {
        hooks::Source::Fallback(_, f) => {
            assert!(f.message.contains("wrong shape"), "{}", f.message);
            assert_eq!(f.line, Some(4));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_busy_loop_is_cut_off_by_the_wall_clock_too() {
    let limits = Limits {
        max_operations: u64::MAX,
        timeout: Duration::from_millis(20),
        ..Limits::default()
    };
    let (_dir, plugins) = with_file("s.rhai", "fn score(lead, stats) { loop {} }", limits);
    let (_, source) = score_of(&plugins, &lead(|_| {}), &ActivityStats::default());
    match source {
        hooks::Source::Fallback(_, f) => assert!(f.message.contains("timed out"), "{}", f.message),
        other => panic!("{other:?}"),
    }
}

/// Scripts that hit a limit, with the line each stops at. Rhai reports these errors with no
/// line of their own.
const RUNAWAYS: [(&str, &str, usize); 4] = [
    (
        "too many operations",
        "fn score(lead, stats) {\n  let n = 0;\n  loop {\n    n += 1;\n  }\n}",
        4,
    ),
    (
        "unbounded recursion",
        "fn down(n) {\n  let m = n + 1;\n  down(m)\n}\nfn score(lead, stats) {\n  down(0)\n}",
        3,
    ),
    (
        "a string too large",
        "fn score(lead, stats) {\n  let s = \"x\";\n  s.pad(100_000_000, 'x');\n  []\n}",
        3,
    ),
    (
        "an array too large",
        "fn score(lead, stats) {\n  let a = [];\n  for i in 0..100000 {\n    a.push(i);\n  }\n  a\n}",
        4,
    ),
];

/// Limits whose wall clock leaves room for the others even on a loaded machine, so a
/// runaway always stops at the same limit.
fn unhurried() -> Limits {
    Limits {
        timeout: Duration::from_secs(20),
        ..Limits::default()
    }
}

/// A dry run of `score` on `lead` with no activity.
fn dry_score(plugins: &Plugins, lead: &Lead) -> dry_run::DryRun {
    plugins.dry_run(
        Hook::Score,
        lead,
        &ActivityStats::default(),
        Vec::new(),
        NOW,
    )
}

fn last_line(plugins: &Plugins) -> Option<usize> {
    plugins.report().scripts[0]
        .last_error
        .as_ref()
        .and_then(|e| e.line)
}

#[test]
fn a_limit_error_is_located_on_another_thread_and_later_ones_at_once() {
    for (what, src, line) in RUNAWAYS {
        let (_dir, plugins) = with_file("scoring.rhai", src, unhurried());
        let l = lead(|_| {});
        let s = ActivityStats::default();
        // The caller does not wait for the second run: the failure comes back without a line.
        let (_, first) = score_of(&plugins, &l, &s);
        let hooks::Source::Fallback(_, first) = first else {
            panic!("{what}: {first:?}")
        };
        assert_eq!(first.line, None, "{what}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while last_line(&plugins).is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: never located"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(last_line(&plugins), Some(line), "{what}: {}", first.message);
        match score_of(&plugins, &l, &s).1 {
            hooks::Source::Fallback(_, again) => {
                assert_eq!(again.line, Some(line), "{what}: the same error, known line");
                assert_eq!(again.message, first.message);
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn a_dry_run_locates_a_limit_error_before_it_answers() {
    for (what, src, line) in RUNAWAYS {
        let (_dir, plugins) = with_file("scoring.rhai", src, unhurried());
        let out = dry_score(&plugins, &lead(|_| {}));
        let error = out.error.unwrap_or_else(|| panic!("{what}: no error"));
        assert_eq!(error.line, Some(line), "{what}: {}", error.message);
        assert_eq!(out.answered_by, "built-in");
    }
}

#[test]
fn each_dry_run_finds_where_its_own_call_ran_away() {
    // One error, two places: which one depends on the lead.
    let (_dir, plugins) = with_script(
        "fn score(lead, stats) {\n  if lead.title == () {\n    loop { }\n  }\n  let n = 0;\n  loop { n += 1; }\n}",
    );
    let run = |l: &Lead| dry_score(&plugins, l).error.and_then(|e| e.line);
    assert_eq!(run(&lead(|_| {})), Some(3));
    assert_eq!(run(&lead(|n| n.title = Some("CTO".into()))), Some(6));
    assert_eq!(run(&lead(|_| {})), Some(3), "not the line found last");
}

#[test]
fn a_rescore_locates_its_first_failure_afresh_and_the_rest_from_it() {
    let (_dir, plugins) = with_file(
        "scoring.rhai",
        "fn score(lead, stats) {\n  if lead.title == () {\n    loop { }\n  }\n  let n = 0;\n  loop { n += 1; }\n}",
        unhurried(),
    );
    let _first = LocateInline::sharing(std::sync::Arc::new(1.into()));
    let with_title = lead(|n| n.title = Some("CTO".into()));
    let line = |l: &Lead| match score_of(&plugins, l, &ActivityStats::default()).1 {
        hooks::Source::Fallback(_, f) => f.line,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        line(&with_title),
        Some(6),
        "the first, found by its own run"
    );
    assert_eq!(
        line(&lead(|_| {})),
        Some(6),
        "later ones: the line found for the same error, without a run"
    );
}

#[test]
fn a_wall_clock_cutoff_is_located_too() {
    let limits = Limits {
        max_operations: u64::MAX,
        timeout: Duration::from_millis(20),
        ..Limits::default()
    };
    let (_dir, plugins) = with_file(
        "s.rhai",
        "fn score(lead, stats) {\n  let n = 0;\n  while true {\n    n = n + 1;\n  }\n}",
        limits,
    );
    let out = dry_score(&plugins, &lead(|_| {}));
    let error = out.error.expect("timed out");
    assert!(error.message.contains("timed out"), "{}", error.message);
    // Cut off while evaluating the loop's condition or its body.
    assert!(matches!(error.line, Some(3 | 4)), "{error:?}");
}

#[test]
fn a_route_that_runs_away_is_located_on_its_own_copy_of_the_roster() {
    let (_dir, plugins) = with_file(
        "routing.rhai",
        "fn route(lead, reps, pools) {\n  let n = 0;\n  loop {\n    n += 1;\n  }\n}",
        Limits::default(),
    );
    let routed = plugins.route(
        &plugins.current(),
        &lead(|_| {}),
        crate::domain::routing::Roster::default(),
        &["inbound".to_owned()],
        crate::domain::routing::RouteTrigger::Capture,
        NOW,
    );
    assert!(matches!(routed.source, hooks::Source::Fallback(..)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while last_line(&plugins).is_none() {
        assert!(std::time::Instant::now() < deadline, "never located");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(last_line(&plugins), Some(4));
}

#[test]
fn a_broken_edit_keeps_the_last_good_version() {
    let (dir, plugins) =
        with_script(r#"fn score(lead, stats) { [#{rule: "v1", points: 1, part: "profile"}] }"#);
    let l = lead(|_| {});
    let s = ActivityStats::default();
    assert_eq!(score_of(&plugins, &l, &s).0.score().total, 1);
    std::fs::write(
        dir.path().join("scoring.rhai"),
        "fn score(lead, stats) { [ }",
    )
    .unwrap();
    let report = plugins.reload(NOW);
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].line.is_some());
    assert_eq!(score_of(&plugins, &l, &s).0.score().total, 1);
    assert!(plugins.report().scripts[0].compile_error.is_some());
    std::fs::write(
        dir.path().join("scoring.rhai"),
        r#"fn score(lead, stats) { [#{rule: "v2", points: 2, part: "profile"}] }"#,
    )
    .unwrap();
    plugins.reload(NOW);
    assert_eq!(score_of(&plugins, &l, &s).0.score().total, 2);
    assert!(plugins.report().scripts[0].compile_error.is_none());
}

#[test]
fn scripts_cannot_reach_outside() {
    for src in [
        r#"fn score(lead, stats) { eval("1") }"#,
        r#"import "x" as y; fn score(lead, stats) { [] }"#,
    ] {
        let (_dir, plugins) = with_script(src);
        let (card, source) = score_of(&plugins, &lead(|_| {}), &ActivityStats::default());
        assert_eq!(card.score().total, 0);
        assert!(!matches!(source, hooks::Source::Script(_)), "{src}");
    }
}

#[test]
fn classify_and_enrich_apply_when_defined() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("capture.rhai"),
        r#"
        fn classify(lead) { if lead.utm_source == "partnerx" { "referral" } }
        fn enrich(lead) { if lead.email_domain == "acme.example" { #{ company: "Acme" } } }
        "#,
    )
    .unwrap();
    let plugins = Plugins::load(
        PluginSettings {
            dir: dir.path().to_owned(),
            ..Default::default()
        },
        NOW,
    );
    let loaded = plugins.current();
    let l = lead(|n| n.utm.source = Some("partnerx".into()));
    assert_eq!(
        plugins.classify(&loaded, &l, NOW).as_deref(),
        Some("referral")
    );
    assert_eq!(plugins.classify(&loaded, &lead(|_| {}), NOW), None);
    let mut n = NewLead {
        email: Some("a@acme.example".into()),
        ..Default::default()
    };
    assert_eq!(plugins.enrich(&loaded, &mut n, NOW).fields, vec!["company"]);
    assert_eq!(n.company.as_deref(), Some("Acme"));
}

#[test]
fn enriched_tags_are_held_to_the_rules_of_tags() {
    let engine = rhai::Engine::new();
    let answer = |src: &str| -> Result<NewLead, String> {
        let d: rhai::Dynamic = engine.eval(src).map_err(|e| e.to_string())?;
        let mut n = NewLead::default();
        crate::script::apply_enrichment(&mut n, d)?;
        Ok(n)
    };
    let n = answer(r#"#{ tags: [" VIP ", "vip", "expo"] }"#).unwrap();
    assert_eq!(n.tags, vec!["vip", "expo"]);
    assert!(answer(r#"#{ tags: ["north;south"] }"#).is_err());
}

mod routing {
    use super::*;
    use crate::domain::routing::{Decision, Rep, Roster, RouteTrigger, default_route};

    fn rep(n: u128, f: impl FnOnce(&mut Rep)) -> Rep {
        let mut r = Rep {
            id: uuid::Uuid::from_u128(n),
            team: Some("East".into()),
            territories: Vec::new(),
            product_lines: Vec::new(),
            capacity: 10,
            load: 0,
            active: true,
            senior: false,
            manager_id: None,
        };
        f(&mut r);
        r
    }

    fn id(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    fn floor() -> Vec<Rep> {
        vec![
            rep(1, |r| r.senior = true),
            rep(2, |r| {
                r.territories = vec!["CN-31".into()];
                r.product_lines = vec!["A".into()];
            }),
            rep(3, |r| {
                r.territories = vec!["CN-31".into()];
                r.product_lines = vec!["B".into()];
                r.load = 3;
            }),
            rep(4, |r| {
                r.territories = vec!["CN-31".into()];
                r.product_lines = vec!["B".into()];
            }),
            rep(5, |r| r.territories = vec!["CN-44".into()]),
        ]
    }

    fn routed(p: &Plugins, lead: &Lead, reps: Vec<Rep>, trigger: RouteTrigger) -> Decision {
        let pools = vec!["default".to_owned()];
        let r = p.route(
            &p.current(),
            lead,
            Roster::new(reps, BTreeMap::new(), None),
            &pools,
            trigger,
            NOW,
        );
        assert!(
            matches!(r.source, hooks::Source::Script(_)),
            "the shipped script answered: {:?}",
            r.source
        );
        r.decision
    }

    fn scored(region: Option<&str>, line: Option<&str>, score: i32) -> Lead {
        let mut l = lead(|n| n.region = region.map(str::to_owned));
        l.score.total = score;
        if let Some(line) = line {
            l.fields = serde_json::json!({ "product_line": line }).to_string();
        }
        l
    }

    #[test]
    fn the_shipped_routing_script_applies_each_strategy_and_their_combination() {
        let p = shipped();
        // Strategic: the senior.
        let strategic = scored(Some("CN-31"), Some("B"), 85);
        assert_eq!(
            routed(&p, &strategic, floor(), RouteTrigger::Capture),
            Decision::Owner(id(1))
        );
        // Territory and product line together, least loaded of the two that fit.
        let local = scored(Some("CN-31-05"), Some("B"), 10);
        assert_eq!(
            routed(&p, &local, floor(), RouteTrigger::Capture),
            Decision::Owner(id(4))
        );
        // Territory alone (no product line on the lead): least loaded in the territory.
        let west = scored(Some("CN-44-01"), None, 10);
        assert_eq!(
            routed(&p, &west, floor(), RouteTrigger::Capture),
            Decision::Owner(id(5))
        );
        // Outside every territory: round robin over everyone, from the first.
        let far = scored(Some("US-CA"), None, 10);
        assert_eq!(
            routed(&p, &far, floor(), RouteTrigger::Capture),
            Decision::Owner(id(1))
        );
        // Nobody can take it: the default pool.
        let full: Vec<Rep> = floor()
            .into_iter()
            .map(|mut r| {
                r.load = u64::from(r.capacity);
                r
            })
            .collect();
        assert_eq!(
            routed(&p, &far, full, RouteTrigger::Capture),
            Decision::Pool("default".into())
        );
        // No senior free: a strategic lead falls through to its territory.
        let no_senior: Vec<Rep> = floor().into_iter().filter(|r| !r.senior).collect();
        assert_eq!(
            routed(&p, &strategic, no_senior, RouteTrigger::Capture),
            Decision::Owner(id(4))
        );
        // At the SQL hand-off an owner keeps a non-strategic lead.
        let mut owned = scored(Some("CN-44"), None, 65);
        owned.owner_id = Some(id(5));
        assert_eq!(
            routed(&p, &owned, floor(), RouteTrigger::Sql),
            Decision::Keep
        );
    }

    #[test]
    fn the_shipped_script_and_the_built_in_rule_agree() {
        let p = shipped();
        for region in [
            None,
            Some("CN-31"),
            Some("CN-31-07"),
            Some("CN-44"),
            Some("JP"),
        ] {
            for line in [None, Some("A"), Some("B"), Some("C")] {
                for score in [0, 45, 79, 80, 120] {
                    let l = scored(region, line, score);
                    let script = routed(&p, &l, floor(), RouteTrigger::Capture);
                    let mut roster = Roster::new(floor(), BTreeMap::new(), None);
                    let built_in = default_route(&l, &mut roster, RouteTrigger::Capture);
                    assert_eq!(script, built_in, "{region:?} {line:?} {score}");
                }
            }
        }
    }

    #[test]
    fn at_the_sql_hand_off_the_shipped_script_and_the_built_in_rule_agree() {
        let p = shipped();
        // 1 is the senior, 3 is not, 6 has left; seniors free or not.
        let mut gone = rep(6, |r| r.territories = vec!["CN-31".into()]);
        gone.active = false;
        let with_gone = |mut reps: Vec<Rep>| {
            reps.push(gone.clone());
            reps
        };
        let no_senior: Vec<Rep> = floor().into_iter().filter(|r| !r.senior).collect();
        for reps in [with_gone(floor()), with_gone(no_senior)] {
            for owner in [None, Some(id(1)), Some(id(3)), Some(id(6))] {
                for score in [65, 79, 80, 95] {
                    let mut l = scored(Some("CN-31"), Some("B"), score);
                    l.owner_id = owner;
                    let pools = vec!["default".to_owned()];
                    let roster = || Roster::new(reps.clone(), BTreeMap::new(), None);
                    let script = p
                        .route(&p.current(), &l, roster(), &pools, RouteTrigger::Sql, NOW)
                        .decision;
                    let built_in = default_route(&l, &mut roster(), RouteTrigger::Sql);
                    assert_eq!(script, built_in, "{owner:?} {score} {}", reps.len());
                    if owner == Some(id(6)) {
                        assert!(
                            !matches!(built_in, Decision::Keep),
                            "an owner who left does not keep the lead"
                        );
                    }
                }
            }
        }
    }
}

mod dry_runs {
    use super::*;
    use crate::domain::routing::RouteTrigger;

    #[test]
    fn an_sla_answer_the_server_would_refuse_is_shown_as_an_error() {
        let (_dir, p) = with_script("fn sla(lead) { #{ first_touch: 30 } }");
        let out = p.dry_run(
            Hook::Sla,
            &lead(|_| {}),
            &ActivityStats::default(),
            Vec::new(),
            NOW,
        );
        let err = out.error.expect("a misspelt field is refused");
        assert!(err.message.contains("first_touch"), "{}", err.message);
        assert_eq!(out.answered_by, "built-in");

        let (_dir, p) = with_script("fn sla(lead) { #{ first_touch_minutes: 30 } }");
        let out = p.dry_run(
            Hook::Sla,
            &lead(|_| {}),
            &ActivityStats::default(),
            Vec::new(),
            NOW,
        );
        assert!(out.error.is_none(), "{:?}", out.error);
    }

    #[test]
    fn a_reclaim_dry_run_leaves_the_owner_out_as_the_server_does() {
        let (_dir, p) = with_script("fn route(lead, reps, pools) { reps.available() [0] }");
        let a = uuid::Uuid::from_u128(1);
        let b = uuid::Uuid::from_u128(2);
        let mut l = lead(|_| {});
        l.owner_id = Some(a);
        let reps = serde_json::json!([{ "id": a }, { "id": b }]);
        let run = |trigger: RouteTrigger| {
            p.dry_run(
                Hook::Route,
                &l,
                &ActivityStats::default(),
                vec![reps.clone(), serde_json::json!(trigger.as_str())],
                NOW,
            )
        };
        assert_eq!(run(RouteTrigger::Capture).result["keep"], a.to_string());
        let out = run(RouteTrigger::Reclaim);
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.result["owner_id"], b.to_string());
    }
}

mod nurture_files {
    use super::*;

    #[test]
    fn a_broken_sequence_or_template_keeps_its_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let (seqs, tpls) = (dir.path().join("sequences"), dir.path().join("templates"));
        std::fs::create_dir_all(&seqs).unwrap();
        std::fs::create_dir_all(&tpls).unwrap();
        std::fs::write(tpls.join("hi.subject"), "Hi {{ lead.name }}").unwrap();
        std::fs::write(tpls.join("hi.txt"), "Hello").unwrap();
        std::fs::write(seqs.join("s.toml"), "[[step]]\nemail = \"hi\"\n").unwrap();
        let p = Plugins::load(
            PluginSettings {
                dir: dir.path().to_owned(),
                ..PluginSettings::default()
            },
            NOW,
        );
        assert!(p.current().sequence("s").is_some());
        std::fs::write(seqs.join("s.toml"), "[[step]]\nemial = \"hi\"\n").unwrap();
        std::fs::write(tpls.join("hi.subject"), "Hi {{ lead.name").unwrap();
        let report = p.reload(NOW);
        let failed: Vec<&str> = report.failed.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(failed, ["templates/hi", "sequences/s.toml"]);
        assert_eq!(report.failed[1].line, Some(2), "{:?}", report.failed[1]);
        let loaded = p.current();
        assert_eq!(loaded.sequence("s").unwrap().def.steps.len(), 1);
        assert!(!loaded.sequence_is_broken("s"));
        // Started with the mistake, there is no good version: the sequence is broken, not gone.
        let fresh = Plugins::load(
            PluginSettings {
                dir: dir.path().to_owned(),
                ..PluginSettings::default()
            },
            NOW,
        );
        assert!(fresh.current().sequence("s").is_none());
        assert!(fresh.current().sequence_is_broken("s"));
        assert!(!fresh.current().sequence_is_broken("other"));
        let t = loaded.template("hi").unwrap();
        let r = nurture::render(&t, &serde_json::json!({"lead": {"name": null}})).unwrap();
        assert_eq!(
            r.subject, "Hi",
            "the old subject, and no `none` for a missing name"
        );
    }
}

/// `Plugins::score` with the rules in force, for leads and stats the test owns.
fn score_of(plugins: &Plugins, lead: &Lead, stats: &ActivityStats) -> (ScoreCard, hooks::Source) {
    plugins.score(
        &plugins.current(),
        &std::sync::Arc::new(lead.clone()),
        &std::sync::Arc::new(stats.clone()),
        NOW,
    )
}

#[test]
fn a_parameter_named_like_a_constant_is_still_the_parameter() {
    // The hooks get the top level's constants inlined; a parameter of the same name must
    // not be replaced by the constant.
    let (_dir, plugins) = with_script(
        r#"
        const lead = "not the lead";
        const POINTS = 7;
        fn score(lead, stats) {
            let reasons = [];
            let who = lead;
            if who.title == "CTO" {
                reasons += #{ rule: "cto", points: POINTS, part: "profile" };
            }
            reasons
        }
        "#,
    );
    let l = lead(|n| n.title = Some("CTO".into()));
    let (card, source) = score_of(&plugins, &l, &ActivityStats::default());
    assert_eq!(source, hooks::Source::Script("scoring.rhai".into()));
    assert_eq!(card.score().total, 7);
}

/// Raised limits must not let a script overflow the stack of the thread running it (2 MiB, as
/// tokio's blocking threads and the writer have): that aborts the whole process.
#[test]
fn the_highest_limits_allowed_cannot_overflow_a_threads_stack() {
    let limits = Limits {
        max_call_levels: engine::MAX_CALL_LEVELS,
        max_expr_depth: engine::MAX_EXPR_DEPTH,
        max_operations: 100_000_000,
        timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let nested = format!(
        "{}1{}",
        "(".repeat(engine::MAX_EXPR_DEPTH + 8),
        ")".repeat(engine::MAX_EXPR_DEPTH + 8)
    );
    let scripts = [
        "fn f(n) { f(n + 1) } fn score(lead, stats) { f(0) }".to_owned(),
        "fn f(n) { let a = [n, #{x: n}]; if n % 2 == 0 { f(n + 1) + a.len() } else { 1 + f(n + 1) } } fn score(lead, stats) { f(0) }".to_owned(),
        "fn f(n) { g(n) } fn g(n) { for i in 0..1 { f(n + 1) } } fn score(lead, stats) { f(0) }".to_owned(),
        format!("fn score(lead, stats) {{ {nested} }}"),
    ];
    for src in scripts {
        let limits = limits.clone();
        let outcome = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join("scoring.rhai"), &src).unwrap();
                let p = Plugins::load(
                    PluginSettings {
                        dir: dir.path().to_owned(),
                        limits,
                        ..PluginSettings::default()
                    },
                    NOW,
                );
                let (_, source) = score_of(&p, &lead(|_| {}), &ActivityStats::default());
                source
            })
            .unwrap()
            .join()
            .expect("the call returns instead of overflowing the stack");
        // A call too deep fails (the built-in rule answers); nesting too deep does not compile.
        assert!(!matches!(outcome, hooks::Source::Script(_)), "{outcome:?}");
    }
}

#[test]
fn thresholds_out_of_range_or_crossed_do_not_load() {
    let ok = "const MQL = 30; const SQL = 70; fn score(lead, stats) { #{ total: 1, reasons: [] } }";
    let (_dir, p) = with_script(ok);
    assert_eq!(p.current().thresholds, Thresholds { mql: 30, sql: 70 });
    for (src, want) in [
        (
            "const MQL = 70; const SQL = 3000000000;",
            "SQL must be a whole number",
        ),
        ("const SQL = 99999999999;", "SQL must be a whole number"),
        ("const MQL = 40.5;", "MQL must be a whole number"),
        (
            "const MQL = 70; const SQL = 60;",
            "MQL must not be above SQL",
        ),
    ] {
        let src = format!("{src} fn score(lead, stats) {{ #{{ total: 1, reasons: [] }} }}");
        let (_dir, p) = with_script(&src);
        let report = p.report();
        let failure = report
            .not_loaded
            .first()
            .unwrap_or_else(|| panic!("{src}: loaded"));
        assert!(failure.message.contains(want), "{src}: {}", failure.message);
        assert_eq!(p.current().thresholds, Thresholds::default(), "{src}");
    }
}
