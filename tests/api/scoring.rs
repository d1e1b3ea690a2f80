//! Scoring through the shipped `plugins/scoring.rhai`: one test per row of the scoring table,
//! thresholds and stage events, decay under the controllable clock, rescoring; and the plugin
//! runtime seen from outside: hostile scripts, reload, file watch, the admin endpoints.

use crate::helpers::*;
use leadline::clock::ManualClock;
use leadline::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DAY_MS: i64 = 86_400_000;
const SHIPPED: &str = include_str!("../../plugins/scoring.rhai");

fn with_plugin(file: &'static str, src: &'static str) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        std::fs::create_dir_all(&c.plugins_dir).expect("plugins dir");
        std::fs::write(c.plugins_dir.join(file), src).expect("write plugin");
    }
}

async fn shipped_app() -> TestApp {
    spawn_app_with(with_plugin("scoring.rhai", SHIPPED)).await
}

/// The shipped rules with the file watcher off: a rule the test edits applies when the test
/// reloads it ([`edit_shipped_rule`]), not whenever the watcher notices the file.
async fn shipped_app_without_watcher() -> TestApp {
    spawn_app_with(|c| {
        c.plugins.watch = false;
        with_plugin("scoring.rhai", SHIPPED)(c)
    })
    .await
}

async fn record(app: &TestApp, lead: &str, kind: &str, props: Value) {
    let res = app
        .post(
            &format!("/v1/leads/{lead}/activities"),
            &app.admin,
            &json!({"kind": kind, "properties": props}),
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

/// Rewrites one rule of the shipped scoring script on disk and reloads the plugins.
async fn edit_shipped_rule(app: &TestApp, from: &str, to: &str) {
    let edited = SHIPPED.replace(from, to);
    assert_ne!(edited, SHIPPED, "the shipped script has no `{from}`");
    std::fs::write(app.dir.path().join("plugins/scoring.rhai"), edited).unwrap();
    app.post("/v1/admin/plugins/reload", &app.admin, &json!({}))
        .await;
}

async fn score_of(app: &TestApp, lead: &str) -> Value {
    expect_json(
        app.get(&format!("/v1/leads/{lead}/score"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

/// Creates the lead, records the activities, and checks that exactly `rule` fired with
/// `points` in `part` (besides nothing else).
async fn check_row(lead: Value, activities: &[(&str, Value)], rule: &str, points: i64, part: &str) {
    let app = shipped_app().await;
    let l = app.create_lead(&app.admin, lead).await;
    let id = id_of(&l);
    for (kind, props) in activities {
        record(&app, &id, kind, props.clone()).await;
    }
    let s = score_of(&app, &id).await;
    let reasons = s["reasons"].as_array().expect("reasons");
    assert_eq!(reasons.len(), 1, "only `{rule}` should fire: {reasons:?}");
    assert_eq!(reasons[0]["rule"], rule);
    assert_eq!(reasons[0]["points"], points);
    assert_eq!(reasons[0]["part"], part);
    assert_eq!(s["total"], points);
    assert_eq!(s["parts"][part], points);
    let got = expect_json(
        app.get(&format!("/v1/leads/{id}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["score"]["total"], points, "the lead carries its score");
}

macro_rules! row {
    ($name:ident, $lead:expr, [$($kind:expr => $props:expr),*], $rule:expr, $points:expr, $part:expr) => {
        #[tokio::test]
        async fn $name() {
            check_row($lead, &[$(($kind, $props)),*], $rule, $points, $part).await;
        }
    };
}

row!(
    row_decision_maker_title,
    json!({"email": "a@acme.com", "title": "CTO"}),
    [],
    "title is a decision maker",
    20,
    "profile"
);
row!(
    row_decision_maker_title_in_chinese,
    json!({"email": "a@acme.com", "title": "华东区总经理"}),
    [],
    "title is a decision maker",
    20,
    "profile"
);
row!(
    row_user_or_influencer_title,
    json!({"email": "a@acme.com", "title": "QA Engineer"}),
    [],
    "title is a user or influencer",
    10,
    "profile"
);
row!(
    row_company_size,
    json!({"email": "a@acme.com", "company_size": 120}),
    [],
    "company size 50–500",
    15,
    "profile"
);
row!(
    row_target_industry,
    json!({"email": "a@acme.com", "industry": "Manufacturing"}),
    [],
    "industry is a target industry",
    10,
    "profile"
);
row!(
    row_personal_email,
    json!({"email": "someone@gmail.com"}),
    [],
    "free or personal email domain",
    -10,
    "profile"
);
row!(row_pricing_page, json!({"email": "a@acme.com"}),
    ["page_view" => json!({"url": "https://acme.example/pricing"})],
    "visited a pricing or solution page", 15, "engagement");
row!(row_demo_or_trial, json!({"email": "a@acme.com"}), ["demo_request" => json!({})],
    "requested a demo or trial", 30, "engagement");
row!(row_high_value_content, json!({"email": "a@acme.com"}), ["white_paper_download" => json!({})],
    "downloaded high-value content", 10, "engagement");
row!(row_five_site_visits, json!({"email": "a@acme.com"}),
    ["page_view" => json!({"path": "/a"}), "page_view" => json!({"path": "/b"}),
     "page_view" => json!({"path": "/c"}), "page_view" => json!({"path": "/d"}),
     "page_view" => json!({"path": "/e"})],
    "5 or more site visits", 8, "engagement");
row!(row_opened_and_clicked_email, json!({"email": "a@acme.com"}),
    ["email_open" => json!({}), "email_click" => json!({})],
    "opened and clicked a marketing email", 5, "engagement");
row!(
    row_partner_or_referral,
    json!({"email": "a@acme.com", "utm": {"source": "partner", "medium": "referral"}}),
    [],
    "partner or referral",
    20,
    "source"
);
row!(
    row_paid_search,
    json!({"email": "a@acme.com", "utm": {"source": "baidu", "medium": "cpc"}}),
    [],
    "paid search",
    10,
    "source"
);
row!(
    row_organic_search,
    json!({"email": "a@acme.com", "utm": {"source": "google", "medium": "organic"}}),
    [],
    "organic search",
    8,
    "source"
);
row!(
    row_offline_event,
    json!({"email": "a@acme.com", "utm": {"source": "expo", "medium": "event"}}),
    [],
    "offline event / trade show",
    15,
    "source"
);
row!(row_webinar_question, json!({"email": "a@acme.com"}), ["webinar_question" => json!({})],
    "attended a webinar and asked a question", 15, "interaction");
row!(row_deep_conversation, json!({"email": "a@acme.com"}),
    ["chat" => json!({}), "support" => json!({}), "chat" => json!({})],
    "deep conversation with chat or support", 10, "interaction");
row!(row_requirements_inquiry, json!({"email": "a@acme.com"}), ["inquiry" => json!({})],
    "submitted a specific requirements inquiry", 25, "interaction");

async fn timeline_kinds(app: &TestApp, id: &str) -> Vec<Value> {
    let tl = expect_json(
        app.get(&format!("/v1/leads/{id}/timeline?limit=100"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    tl["items"].as_array().cloned().unwrap_or_default()
}

fn events_of<'a>(items: &'a [Value], kind: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|i| i["type"] == "event" && i["kind"] == kind)
        .collect()
}

#[tokio::test]
async fn crossing_thresholds_moves_the_stage_up_with_events() {
    let app = shipped_app().await;
    // 20 (CTO): still a lead.
    let l = app
        .create_lead(&app.admin, json!({"email": "cto@acme.com", "title": "CTO"}))
        .await;
    assert_eq!(l["stage"], "lead");
    assert_eq!(
        l["score"]["total"], 20,
        "the create response carries the score"
    );
    let id = id_of(&l);
    // +30 demo request = 50: MQL.
    record(&app, &id, "demo_request", json!({})).await;
    let s = score_of(&app, &id).await;
    assert_eq!(
        (s["total"].as_i64(), s["stage"].as_str()),
        (Some(50), Some("mql"))
    );
    // +25 inquiry = 75: SQL.
    record(&app, &id, "inquiry", json!({})).await;
    let s = score_of(&app, &id).await;
    assert_eq!(
        (s["total"].as_i64(), s["stage"].as_str()),
        (Some(75), Some("sql"))
    );
    assert_eq!(s["thresholds"], json!({"mql": 40, "sql": 60}));
    let history: Vec<i64> = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["total"].as_i64().unwrap())
        .collect();
    assert_eq!(history, vec![20, 50, 75]);
    let items = timeline_kinds(&app, &id).await;
    let stages: Vec<(String, String)> = events_of(&items, "stage_changed")
        .iter()
        .map(|e| {
            (
                e["data"]["from"].as_str().unwrap().to_owned(),
                e["data"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        vec![("mql".into(), "sql".into()), ("lead".into(), "mql".into())],
        "newest first"
    );
    assert_eq!(events_of(&items, "scored").len(), 2);
    // A lower score never moves the stage down by itself: a person sets the title to nothing.
    let res = app
        .patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"title": null}),
        )
        .await;
    let after = expect_json(res, StatusCode::OK).await;
    assert_eq!(after["score"]["total"], 55);
    assert_eq!(after["stage"], "sql");
    // A stage a person sets is theirs, even below what the score earns.
    let res = app
        .patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"stage": "lead"}),
        )
        .await;
    assert_eq!(expect_json(res, StatusCode::OK).await["stage"], "lead");
}

#[tokio::test]
async fn ninety_quiet_days_decay_the_score_on_time() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let app = spawn_app_with_clock(clock.clone(), with_plugin("scoring.rhai", SHIPPED)).await;
    let l = app
        .create_lead(
            &app.admin,
            json!({"email": "vp@acme.com", "title": "VP Sales", "utm": {"source": "baidu", "medium": "cpc"}}),
        )
        .await;
    let id = id_of(&l);
    record(&app, &id, "demo_request", json!({})).await;
    let s = score_of(&app, &id).await;
    assert_eq!(
        (s["total"].as_i64(), s["stage"].as_str()),
        (Some(60), Some("sql"))
    );
    assert!(s["review_at"].is_string(), "{s}");

    clock.advance(89 * DAY_MS);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(score_of(&app, &id).await["total"], 60, "not yet");

    clock.advance(2 * DAY_MS);
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = score_of(&app, &id).await;
        if s["total"] == 40 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(s["total"], 40, "{s}");
    assert!(
        s["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "no interaction for more than 90 days"),
        "{s}"
    );
    assert_eq!(
        s["stage"], "mql",
        "the decay review may move the stage back"
    );
    assert_eq!(
        s["history"].as_array().unwrap().last().unwrap()["trigger"],
        "decay"
    );
    let items = timeline_kinds(&app, &id).await;
    assert_eq!(events_of(&items, "stage_changed")[0]["data"]["by"], "decay");

    // New activity brings it back, and stages move up again.
    record(&app, &id, "webinar_question", json!({})).await;
    let s = score_of(&app, &id).await;
    assert_eq!(
        (s["total"].as_i64(), s["stage"].as_str()),
        (Some(75), Some("sql"))
    );
}

/// The median time of a few lead creates.
async fn create_time(app: &TestApp, tag: &str) -> (Duration, Vec<Value>) {
    let mut times = Vec::new();
    let mut leads = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let res = app
            .post(
                "/v1/leads",
                &app.admin,
                &json!({"email": format!("{tag}{i}@acme.com"), "title": "CTO"}),
            )
            .await;
        times.push(started.elapsed());
        leads.push(expect_json(res, StatusCode::CREATED).await);
    }
    times.sort();
    (times[1], leads)
}

#[tokio::test]
async fn hostile_plugins_get_the_built_in_rule_and_the_server_stays_healthy() {
    let normal_app = spawn_app().await;
    let (warm, _) = create_time(&normal_app, "warm").await;
    let (normal, _) = create_time(&normal_app, "n").await;
    let normal = normal.max(warm);
    let cases: [(&str, &'static str); 6] = [
        ("infinite loop", "fn score(lead, stats) { loop { } }"),
        (
            "unbounded recursion",
            "fn down(n) { down(n + 1) } fn score(lead, stats) { down(0) }",
        ),
        (
            "a 100 MB string",
            r#"fn score(lead, stats) { let s = ""; s.pad(100_000_000, 'x'); [] }"#,
        ),
        (
            "an undefined function",
            "fn score(lead, stats) { no_such_helper(lead) }",
        ),
        (
            "a type error",
            r#"fn score(lead, stats) { lead.title + 5 * "x" }"#,
        ),
        (
            "the wrong shape",
            r#"fn score(lead, stats) { #{ total: 99 } }"#,
        ),
    ];
    for (what, src) in cases {
        let app = spawn_app_with(with_plugin("scoring.rhai", src)).await;
        let (took, leads) = create_time(&app, "h").await;
        assert!(
            took <= normal + Duration::from_millis(100),
            "{what}: a create took {took:?}, normally {normal:?}"
        );
        for l in &leads {
            assert_eq!(
                l["score"]["total"], 20,
                "{what}: the built-in table scored it"
            );
        }
        let report = expect_json(
            app.get("/v1/admin/plugins", &app.admin).await,
            StatusCode::OK,
        )
        .await;
        let script = &report["scripts"][0];
        assert_eq!(script["file"], "scoring.rhai", "{what}");
        assert!(script["errors"].as_u64().unwrap() >= 3, "{what}: {report}");
        assert!(
            script["last_error"]["message"].is_string(),
            "{what}: {report}"
        );
        assert_eq!(script["last_error"]["hook"], "score", "{what}");
        // Times are RFC 3339, as everywhere in the API.
        for at in [&script["last_error"]["at"], &script["loaded_at"]] {
            let at = at.as_str().unwrap_or_else(|| panic!("{what}: {report}"));
            assert!(at.ends_with('Z') && at.contains('T'), "{at}");
        }
        assert_eq!(report["hooks"]["score"], "scoring.rhai");
        // Every failure has a line (a wrong shape the hook's own). A limit error's is found by
        // a second run on another thread, so it may come a moment later.
        wait_for(
            &format!("{what}: the line of the error"),
            async || {
                let report = expect_json(
                    app.get("/v1/admin/plugins", &app.admin).await,
                    StatusCode::OK,
                )
                .await;
                report["scripts"][0]["last_error"]["line"] == 1
            },
            Duration::from_secs(10),
        )
        .await;
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK, "{what}");
    }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool, within: Duration) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reload_takes_a_good_edit_and_keeps_the_old_rules_on_a_broken_one() {
    let app = spawn_app_with(|c| {
        c.plugins.watch = false;
        with_plugin(
            "scoring.rhai",
            r#"fn score(lead, stats) { [#{rule: "v1", points: 1, part: "profile"}] }"#,
        )(c)
    })
    .await;
    let plugin = app.dir.path().join("plugins/scoring.rhai");
    let l = app
        .create_lead(&app.admin, json!({"email": "a@acme.com"}))
        .await;
    assert_eq!(l["score"]["total"], 1);

    std::fs::write(
        &plugin,
        r#"fn score(lead, stats) { [#{rule: "v2", points: 2, part: "profile"}] }"#,
    )
    .unwrap();
    let r = expect_json(
        app.post("/v1/admin/plugins/reload", &app.admin, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(r["compiled"], json!(["scoring.rhai"]));
    let l = app
        .create_lead(&app.admin, json!({"email": "b@acme.com"}))
        .await;
    assert_eq!(l["score"]["total"], 2);

    std::fs::write(&plugin, "fn score(lead, stats) { [ }").unwrap();
    let r = expect_json(
        app.post("/v1/admin/plugins/reload", &app.admin, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(r["failed"][0]["file"], "scoring.rhai");
    assert!(r["failed"][0]["line"].is_u64(), "{r}");
    let l = app
        .create_lead(&app.admin, json!({"email": "c@acme.com"}))
        .await;
    assert_eq!(l["score"]["total"], 2, "the last good version still runs");
    let report = expect_json(
        app.get("/v1/admin/plugins", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert!(
        report["scripts"][0]["compile_error"]["message"].is_string(),
        "{report}"
    );

    // Only an admin manages plugins.
    let (_, rep) = app.rep("r", None).await;
    assert_problem(
        app.get("/v1/admin/plugins", &rep).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_problem(
        app.post("/v1/admin/plugins/reload", &rep, &json!({})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
}

#[tokio::test]
async fn saving_a_plugin_reloads_it_within_two_seconds() {
    let app = spawn_app_with(with_plugin(
        "scoring.rhai",
        r#"fn score(lead, stats) { [#{rule: "v1", points: 1, part: "profile"}] }"#,
    ))
    .await;
    let plugin = app.dir.path().join("plugins/scoring.rhai");
    std::fs::write(
        &plugin,
        r#"fn score(lead, stats) { [#{rule: "v2", points: 7, part: "profile"}] }"#,
    )
    .unwrap();
    let saved = Instant::now();
    let mut n = 0;
    wait_for(
        "a reload after saving",
        async || {
            n += 1;
            let l = app
                .create_lead(&app.admin, json!({"email": format!("w{n}@acme.com")}))
                .await;
            l["score"]["total"] == 7
        },
        Duration::from_secs(2),
    )
    .await;
    assert!(saved.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn dry_run_shows_what_a_hook_answers_without_storing() {
    let app = shipped_app().await;
    let res = app
        .post(
            "/v1/admin/plugins/dry-run",
            &app.admin,
            &json!({"hook": "score", "lead": {"email": "x@acme.com", "title": "CTO"},
                    "stats": {"kinds": {"demo_request": 1}, "pages": {"/pricing": 2}}}),
        )
        .await;
    let d = expect_json(res, StatusCode::OK).await;
    assert_eq!(d["answered_by"], "scoring.rhai");
    assert_eq!(d["result"]["total"], 65);
    assert_eq!(d["result"]["stage"], "sql");
    assert!(d["error"].is_null());
    let list = expect_json(app.get("/v1/leads", &app.admin).await, StatusCode::OK).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "nothing stored");
    // The same lead gone quiet for 120 days: the decay rule fires, as `plugins test` has it.
    let d = expect_json(
        app.post(
            "/v1/admin/plugins/dry-run",
            &app.admin,
            &json!({"hook": "score", "lead": {"email": "x@acme.com", "title": "CTO"},
                    "stats": {"kinds": {"demo_request": 1}, "pages": {"/pricing": 2},
                              "days_since_last_activity": 120}}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(d["result"]["total"], 45, "{d}");
    assert!(
        d["result"]["reasons"]
            .to_string()
            .contains("more than 90 days"),
        "{d}"
    );

    // A stored lead, with its own activity.
    let l = app
        .create_lead(
            &app.admin,
            json!({"email": "y@acme.com", "title": "Engineer"}),
        )
        .await;
    record(&app, &id_of(&l), "inquiry", json!({})).await;
    let d = expect_json(
        app.post(
            "/v1/admin/plugins/dry-run",
            &app.admin,
            &json!({"hook": "score", "lead_id": id_of(&l)}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(d["result"]["total"], 35);

    // A hook nobody defines is the built-in rule.
    let d = expect_json(
        app.post(
            "/v1/admin/plugins/dry-run",
            &app.admin,
            &json!({"hook": "classify", "lead": {"email": "z@acme.com", "utm": {"medium": "cpc"}}}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(d["answered_by"], "built-in");
    assert_eq!(d["result"], "paid_search");
    let bad = app
        .post(
            "/v1/admin/plugins/dry-run",
            &app.admin,
            &json!({"hook": "guess", "lead": {}}),
        )
        .await;
    assert_eq!(
        first_field(&assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await),
        "hook"
    );
    // Arguments the hook does not take, or of the wrong shape, are the request's fault.
    for (hook, args) in [
        ("score", json!([1])),
        ("route", json!(["not reps"])),
        ("route", json!([[], "later"])),
        ("route", json!([[], 5])),
        ("on_event", json!([{"kind": "x"}, 2])),
    ] {
        let bad = app
            .post(
                "/v1/admin/plugins/dry-run",
                &app.admin,
                &json!({"hook": hook, "lead": {"email": "z@acme.com"}, "args": args}),
            )
            .await;
        assert_invalid(bad, "args").await;
    }
}

#[tokio::test]
async fn a_dry_run_that_falls_back_shows_the_built_in_answer() {
    let app = spawn_app_with(with_plugin(
        "bad.rhai",
        r#"
        fn sla(lead) { #{ first_touch_minutes: "soon" } }
        fn enrich(lead) { 42 }
        fn on_event(event, lead) { throw "no" }
        "#,
    ))
    .await;
    let app = &app;
    let dry = |hook: &str, args: Value| {
        let body = json!({"hook": hook, "lead": {"email": "a@acme.com"}, "args": args});
        async move {
            expect_json(
                app.post("/v1/admin/plugins/dry-run", &app.admin, &body)
                    .await,
                StatusCode::OK,
            )
            .await
        }
    };
    for (hook, args, built_in) in [
        (
            "sla",
            json!([]),
            json!({"first_touch_minutes": 120, "remind_minutes": 120, "escalate_minutes": 240,
                   "reclaim_minutes": 480, "follow_up_minutes": 4320}),
        ),
        ("enrich", json!([]), json!({})),
        ("on_event", json!([{"kind": "lead.created"}]), json!([])),
    ] {
        let d = dry(hook, args).await;
        assert_eq!(d["answered_by"], "built-in", "{d}");
        assert!(d["error"].is_object(), "{d}");
        assert_eq!(d["result"], built_in, "{hook}: {d}");
    }
}

#[tokio::test]
async fn rescore_reports_first_then_applies_an_edited_rule() {
    let app = shipped_app_without_watcher().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let l = app
            .create_lead(
                &app.admin,
                json!({"email": format!("d{i}@acme.com"), "title": "CTO"}),
            )
            .await;
        ids.push(id_of(&l));
    }
    let other = app
        .create_lead(&app.admin, json!({"email": "plain@acme.com"}))
        .await;
    for id in &ids[..3] {
        record(&app, id, "demo_request", json!({})).await;
    }
    // Now 50 (MQL) for three leads; raise the demo rule to 45 points: 65, SQL.
    edit_shipped_rule(
        &app,
        r#"rule: "requested a demo or trial", points: 30"#,
        r#"rule: "requested a demo or trial", points: 45"#,
    )
    .await;

    let dry = expect_json(
        app.post("/v1/admin/rescore?dry_run=true", &app.admin, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["leads"], 6);
    assert_eq!(dry["score_changed"], 3);
    assert_eq!(dry["stage_changed"], 3);
    assert_eq!(dry["examples"].as_array().unwrap().len(), 3);
    assert_eq!(dry["examples"][0]["score_before"], 50);
    assert_eq!(dry["examples"][0]["score_after"], 65);
    assert_eq!(
        score_of(&app, &ids[0]).await["total"],
        50,
        "a dry run changes nothing"
    );

    let done = expect_json(
        app.post("/v1/admin/rescore", &app.admin, &json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(done["score_changed"], 3);
    let s = score_of(&app, &ids[0]).await;
    assert_eq!(
        (s["total"].as_i64(), s["stage"].as_str()),
        (Some(65), Some("sql"))
    );
    assert_eq!(
        s["history"].as_array().unwrap().last().unwrap()["trigger"],
        "rescore"
    );
    assert_eq!(score_of(&app, &ids[4]).await["total"], 20);
    assert_eq!(score_of(&app, &id_of(&other)).await["total"], 0);
    let again = expect_json(
        app.post("/v1/admin/rescore?dry_run=true", &app.admin, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(again["score_changed"], 0, "{again}");
    assert_eq!(again["script_failures"], 0, "{again}");

    // A rule that fails on some leads: the report says so, and which line.
    let file = app.dir.path().join("plugins/scoring.rhai");
    let src = std::fs::read_to_string(&file).unwrap();
    let (head, body) = src
        .split_once("fn score(lead, stats) {")
        .expect("score hook");
    std::fs::write(
        &file,
        format!(
            "{head}fn score(lead, stats) {{\n    if lead.email == \"plain@acme.com\" {{ throw \"broken rule\"; }}{body}"
        ),
    )
    .unwrap();
    app.post("/v1/admin/plugins/reload", &app.admin, &json!({}))
        .await;
    let failing = expect_json(
        app.post("/v1/admin/rescore?dry_run=true", &app.admin, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(failing["script_failures"], 1, "{failing}");
    let first = failing["first_failure"].as_str().unwrap();
    assert!(
        first.starts_with("scoring.rhai:") && first.contains("broken rule"),
        "{first}"
    );

    // A rule that runs away on some leads: Rhai gives a limit error no line; the report
    // still names it.
    // The `while` is on the hook's third line.
    let line = head.lines().count() + 3;
    std::fs::write(
        &file,
        format!(
            "{head}fn score(lead, stats) {{\n    let n = 0;\n    while lead.email == \"plain@acme.com\" {{ n += 1; }}{body}"
        ),
    )
    .unwrap();
    app.post("/v1/admin/plugins/reload", &app.admin, &json!({}))
        .await;
    let runaway = expect_json(
        app.post("/v1/admin/rescore?dry_run=true", &app.admin, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(runaway["script_failures"], 1, "{runaway}");
    // Too many operations, or (in a debug build) the wall clock first.
    let first = runaway["first_failure"].as_str().unwrap();
    assert!(
        first.starts_with(&format!("scoring.rhai:{line}: ")),
        "{runaway}"
    );
}

#[tokio::test]
async fn an_applied_rescore_over_many_chunks_writes_every_change_while_other_writes_land() {
    let app = shipped_app_without_watcher().await;
    // More leads than several rescore chunks and writes: 1,500 decision makers.
    for batch in 0..3 {
        let leads: Vec<Value> = (0..500)
            .map(|i| json!({"email": format!("cto{batch}-{i}@acme.com"), "title": "CTO"}))
            .collect();
        let res = app
            .post("/v1/leads/batch", &app.admin, &json!({"leads": leads}))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    edit_shipped_rule(
        &app,
        r#"rule: "title is a decision maker", points: 20"#,
        r#"rule: "title is a decision maker", points: 25"#,
    )
    .await;

    let no_body = json!({});
    let rescore = app.post("/v1/admin/rescore", &app.admin, &no_body);
    // A second applied rescore meanwhile is refused (409) or, if the first has finished,
    // finds nothing left: never the same changes counted twice.
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        app.post("/v1/admin/rescore", &app.admin, &no_body).await
    };
    let during = async {
        let mut ids = Vec::new();
        for i in 0..10 {
            let l = app
                .create_lead(&app.admin, json!({"email": format!("new{i}@acme.com")}))
                .await;
            ids.push(id_of(&l));
        }
        ids
    };
    let (done, second, created) = tokio::join!(rescore, second, during);
    let done = expect_json(done, StatusCode::OK).await;
    assert_eq!(done["score_changed"], 1500, "{done}");
    match second.status() {
        StatusCode::CONFLICT => {
            assert_problem(second, StatusCode::CONFLICT).await;
        }
        _ => {
            let second = expect_json(second, StatusCode::OK).await;
            assert_eq!(second["score_changed"], 0, "{second}");
        }
    }
    assert_eq!(created.len(), 10);
    let page = expect_json(
        app.get("/v1/leads?sort=score&limit=200", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    let items = page["items"].as_array().unwrap();
    assert!(items.len() >= 100);
    for lead in items {
        if lead["title"] == "CTO" {
            assert_eq!(lead["score"]["total"], 25, "{lead}");
        }
    }
    let again = expect_json(
        app.post("/v1/admin/rescore?dry_run=true", &app.admin, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        again["score_changed"], 0,
        "every change was written: {again}"
    );
}

#[tokio::test]
async fn a_merging_capture_that_changes_the_score_is_one_new_version() {
    let app = shipped_app().await;
    let first = app
        .create_lead(&app.admin, json!({"email": "wang@example.cn"}))
        .await;
    assert_eq!(first["version"], 1);
    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"email": "Wang@Example.cn", "title": "总经理"}),
        )
        .await;
    let merged = expect_json(res, StatusCode::OK).await;
    assert_eq!(merged["merged"], true);
    assert_eq!(merged["version"], 2, "one write, one version");
    assert_eq!(merged["score"]["total"], 20);
    let changes = expect_json(
        app.get("/v1/changes?since=0&limit=100", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    let updates = changes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["entity"] == "lead" && c["op"] == "update")
        .count();
    assert_eq!(updates, 1);
}

/// `on_event`'s answer for a new CTO, by the dry run.
async fn dry_run_cto_created(app: &TestApp) -> Value {
    expect_json(
        app.post(
            "/v1/admin/plugins/dry-run",
            &app.admin,
            &json!({"hook": "on_event", "lead": {"email": "x@acme.com", "title": "CTO"},
                    "args": [{"kind": "lead.created"}]}),
        )
        .await,
        StatusCode::OK,
    )
    .await
}

#[tokio::test]
async fn on_event_can_give_the_owner_a_task_and_a_notification() {
    let app = spawn_app_with(with_plugin(
        "nurture.rhai",
        r#"fn on_event(event, lead) {
            if event.kind == "lead.created" && lead.title == "CTO" {
                [task("Call the CTO", 2), notify("A CTO just came in")]
            }
        }"#,
    ))
    .await;
    let (rep_id, rep) = app.rep("ana", None).await;
    let lead = app
        .create_lead(&rep, json!({"email": "cto@acme.com", "title": "CTO"}))
        .await;
    assert_eq!(lead["owner_id"], rep_id.as_str(), "{lead}");
    let other = app
        .create_lead(&rep, json!({"email": "dev@acme.com", "title": "Dev"}))
        .await;
    let tasks = expect_json(app.get("/v1/tasks", &rep).await, StatusCode::OK).await;
    let tasks = tasks["items"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["title"], "Call the CTO");
    assert_eq!(tasks[0]["lead_id"], lead["id"]);
    let due = tasks[0]["due_at"].as_str().expect("due");
    let created = lead["created_at"].as_str().unwrap();
    let hours = |t: &str| leadline::domain::time::parse_rfc3339(t).unwrap() / 3_600_000;
    assert_eq!(hours(due) - hours(created), 2, "{due} vs {created}");
    let notes = expect_json(app.get("/v1/notifications", &rep).await, StatusCode::OK).await;
    let rule: Vec<&Value> = notes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "rule")
        .collect();
    assert_eq!(rule.len(), 1, "{notes}");
    assert_eq!(rule[0]["lead_id"], lead["id"]);
    assert_eq!(rule[0]["data"]["message"], "A CTO just came in", "{notes}");
    assert_ne!(rule[0]["lead_id"], other["id"]);
    // A dry run shows the answer as actions.
    let d = dry_run_cto_created(&app).await;
    assert!(d["error"].is_null(), "{d}");
    assert_eq!(
        d["result"],
        json!([{"task": "Call the CTO", "due_in_hours": 2}, {"notify": "A CTO just came in"}])
    );
}

#[tokio::test]
async fn on_event_can_set_fields_which_rescore_the_lead_in_the_same_write() {
    // One file holds both hooks: tagging a CTO "vip" is worth 50 points, which the same
    // write scores, and a loop (a rule that sets a field every time the score moves) stops.
    let app = spawn_app_with(with_plugin(
        "rules.rhai",
        r#"fn score(lead, stats) {
            let reasons = [];
            if lead.has_tag("vip") { reasons.push(#{ rule: "vip", points: 50, part: "profile" }); }
            if lead.has_tag("loop") { reasons.push(#{ rule: "loop", points: lead.tags.len(), part: "profile" }); }
            reasons
        }
        fn on_event(event, lead) {
            if event.kind == "lead.created" && lead.title == "CTO" {
                [set("tags", "vip"), set("status", "nurturing"), set("fields.persona", "exec")]
            } else if event.kind == "lead.created" && lead.title == "loop" {
                set("tags", "loop")
            } else if event.kind == "lead.scored" && lead.has_tag("loop") {
                set("tags", "loop" + lead.tags.len())
            }
        }"#,
    ))
    .await;
    let lead = app
        .create_lead(&app.admin, json!({"email": "cto@acme.com", "title": "CTO"}))
        .await;
    assert_eq!(lead["tags"], json!(["vip"]), "{lead}");
    assert_eq!(lead["status"], "nurturing");
    assert_eq!(lead["fields"]["persona"], "exec");
    assert_eq!(
        lead["score"]["total"], 50,
        "scored in the write that set the tag"
    );
    assert_eq!(lead["stage"], "mql");
    assert_eq!(lead["version"], 1, "one write");
    let id = lead["id"].as_str().unwrap();
    let items = timeline_kinds(&app, id).await;
    let sets = events_of(&items, "rule_set");
    assert_eq!(sets.len(), 3, "{items:?}");
    assert_eq!(
        sets.iter().filter(|e| e["data"]["field"] == "tags").count(),
        1
    );
    assert!(sets.iter().all(|e| e["data"]["event"] == "lead.created"));
    // The loop: each set adds a tag, which moves the score, which runs the rule again.
    let looped = app
        .create_lead(&app.admin, json!({"email": "l@acme.com", "title": "loop"}))
        .await;
    let tags = looped["tags"].as_array().unwrap().len();
    assert!((2..=6).contains(&tags), "the loop stopped: {looped}");
    let report = expect_json(
        app.get("/v1/admin/plugins", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    let script = &report["scripts"][0];
    assert_eq!(script["last_error"]["hook"], "on_event", "{report}");
    assert!(
        script["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("a loop?")),
        "{report}"
    );
    // A dry run shows the answer as actions.
    let d = dry_run_cto_created(&app).await;
    assert!(d["error"].is_null(), "{d}");
    assert_eq!(
        d["result"],
        json!([{"set": "tags", "value": "vip"}, {"set": "status", "value": "nurturing"},
               {"set": "fields.persona", "value": "exec"}])
    );
}

#[tokio::test]
async fn on_event_can_put_an_action_off_until_later_and_it_survives_a_merge() {
    const HOUR: i64 = 3_600_000;
    let clock = Arc::new(ManualClock::new(1_795_420_800_000));
    let app = spawn_app_with_clock(
        clock.clone(),
        with_plugin(
            "nurture.rhai",
            r#"fn on_event(event, lead) {
                if event.kind == "lead.created" && lead.title == "CTO" {
                    [later(24, set("tags", "followed_up")), later("30m", task("Call the CTO"))]
                }
            }"#,
        ),
    )
    .await;
    let (_, rep) = app.rep("ana", None).await;
    let cto = app
        .create_lead(&rep, json!({"email": "cto@acme.com", "title": "CTO"}))
        .await;
    let id = cto["id"].as_str().unwrap().to_owned();
    assert_eq!(cto["tags"], json!([]), "nothing yet: {cto}");
    let items = timeline_kinds(&app, &id).await;
    let later = events_of(&items, "rule_later");
    assert_eq!(later.len(), 2, "{items:?}");
    assert_eq!(later[0]["data"]["event"], "lead.created");
    // The SLA view shows only the SLA's timers.
    let sla = expect_json(
        app.get(&format!("/v1/leads/{id}/sla"), &rep).await,
        StatusCode::OK,
    )
    .await;
    assert!(
        sla["timers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["kind"] != "rule.later"),
        "{sla}"
    );
    let tasks = async || {
        let t = expect_json(app.get("/v1/tasks", &rep).await, StatusCode::OK).await;
        t["items"].as_array().cloned().unwrap_or_default()
    };
    assert!(tasks().await.is_empty());

    // Half an hour on: the task, on the lead as it is then.
    clock.advance(31 * 60_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tasks().await.is_empty() {
        assert!(Instant::now() < deadline, "the later task never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = tasks().await;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["title"], "Call the CTO");
    assert_eq!(t[0]["lead_id"], id.as_str());

    // Merged into another lead before the day is out: the survivor gets the tag.
    let other = app
        .create_lead(&app.admin, json!({"email": "other@acme.com"}))
        .await;
    let survivor = other["id"].as_str().unwrap().to_owned();
    expect_json(
        app.post(
            &format!("/v1/leads/{survivor}/merge"),
            &app.admin,
            &json!({"other_id": id}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    clock.advance(24 * HOUR);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lead = expect_json(
            app.get(&format!("/v1/leads/{survivor}"), &app.admin).await,
            StatusCode::OK,
        )
        .await;
        if lead["tags"] == json!(["followed_up"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the later set never came: {lead}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let items = timeline_kinds(&app, &survivor).await;
    let set = events_of(&items, "rule_set");
    assert_eq!(set.len(), 1, "{items:?}");
    assert_eq!(set[0]["data"]["event"], "lead.created");
    // It fires once.
    assert_eq!(tasks().await.len(), 1);
}

#[tokio::test]
async fn an_erased_lead_takes_its_later_actions_with_it() {
    let clock = Arc::new(ManualClock::new(1_795_420_800_000));
    let app = spawn_app_with_clock(
        clock.clone(),
        with_plugin(
            "nurture.rhai",
            r#"fn on_event(event, lead) {
                if event.kind == "lead.created" { later(1, notify("an hour on")) }
            }"#,
        ),
    )
    .await;
    let (_, rep) = app.rep("ana", None).await;
    let gone = app
        .create_lead(&rep, json!({"email": "gone@acme.com"}))
        .await;
    let kept = app
        .create_lead(&rep, json!({"email": "kept@acme.com"}))
        .await;
    let res = app
        .delete(
            &format!("/v1/leads/{}", gone["id"].as_str().unwrap()),
            &app.admin,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    clock.advance(2 * 3_600_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    let rule_notes = loop {
        let notes = expect_json(app.get("/v1/notifications", &rep).await, StatusCode::OK).await;
        let rule: Vec<Value> = notes["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["kind"] == "rule")
            .cloned()
            .collect();
        if !rule.is_empty() {
            break rule;
        }
        assert!(
            Instant::now() < deadline,
            "the kept lead's notification never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rule_notes.len(), 1, "{rule_notes:?}");
    assert_eq!(rule_notes[0]["lead_id"], kept["id"]);
    assert_eq!(rule_notes[0]["data"]["message"], "an hour on");
}
