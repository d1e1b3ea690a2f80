//! Nurture over HTTP with the shipped plugins, a real SMTP server on localhost and the
//! controllable clock: the welcome sequence's four weekly emails and its exit at SQL, the
//! pricing email a day later, the high-intent task, unsubscribe, open and click tracking, the
//! unsent outbox without SMTP, and the enrollment API.

use crate::helpers::*;
use crate::smtp_sink::{Received, SmtpSink};
use leadline::clock::ManualClock;
use leadline::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DAY: i64 = 86_400_000;
/// Monday 2026-11-23 08:00 UTC.
const START: i64 = 1_795_420_800_000;

/// Copies the shipped `plugins/` (scripts, sequences, templates) into the test's directory.
fn shipped_plugins(c: &mut Config) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("plugins dir");
        for entry in std::fs::read_dir(from).expect("read plugins") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if name != "tests" {
                    copy(&path, &to.join(name));
                }
            } else {
                std::fs::copy(&path, to.join(name)).expect("copy plugin");
            }
        }
    }
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins"),
        &c.plugins_dir,
    );
}

async fn nurture_app(clock: Arc<ManualClock>, smtp: Option<&SmtpSink>) -> TestApp {
    let port = smtp.map(|s| s.port);
    spawn_app_with_clock(clock, move |c| {
        shipped_plugins(c);
        c.plugins.watch = false;
        if let Some(port) = port {
            c.email.smtp_host = "127.0.0.1".into();
            c.email.smtp_port = port;
            c.email.security = "none".into();
            c.email.from = "Acme <sales@acme.example>".into();
        }
    })
    .await
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn enrollments(app: &TestApp, lead: &str) -> Vec<Value> {
    let v = expect_json(
        app.get(&format!("/v1/leads/{lead}/enrollments"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    v["items"].as_array().expect("items").clone()
}

async fn emails(app: &TestApp, lead: &str) -> Vec<Value> {
    let v = expect_json(
        app.get(&format!("/v1/emails?lead_id={lead}"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    v["items"].as_array().expect("items").clone()
}

async fn lead(app: &TestApp, body: Value) -> String {
    app.create_lead(&app.admin, body).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// The stored message a received one is (by its X-Leadline-Mail-Id header), once the sender
/// has recorded it as sent: the SMTP server has the message a moment before that write.
async fn stored(app: &TestApp, m: &Received) -> Value {
    let id = m.header("X-Leadline-Mail-Id").expect("mail id header");
    eventually("the message recorded as sent", async || {
        let res = app.get(&format!("/v1/emails/{id}"), &app.admin).await;
        let v = expect_json(res, StatusCode::OK).await;
        (v["status"] != "unsent").then_some(())
    })
    .await;
    let res = app.get(&format!("/v1/emails/{id}"), &app.admin).await;
    let tag = res.headers().get("etag").cloned();
    let again = app.get(&format!("/v1/emails/{id}"), &app.admin).await;
    assert!(tag.is_some(), "a message has an ETag");
    assert_eq!(
        again.headers().get("etag"),
        tag.as_ref(),
        "the same until it changes"
    );
    expect_json(res, StatusCode::OK).await
}

/// The mail client's one-click unsubscribe POST (RFC 8058) to a message's `/u/` link.
async fn one_click_unsubscribe(app: &TestApp, token: &str) {
    let res = app
        .client
        .post(app.url(&format!("/u/{token}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

fn link_token(text: &str, prefix: &str) -> String {
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix} in {text}"))
        + prefix.len();
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test]
async fn a_sequence_file_broken_at_start_up_holds_its_enrollments_until_it_is_mended() {
    let clock = Arc::new(ManualClock::new(START));
    let mut app = nurture_app(clock.clone(), None).await;
    let id = lead(&app, json!({"name": "Sue", "email": "sue@example.cn"})).await;
    eventually("welcome_1 in the outbox", async || {
        (emails(&app, &id).await.len() == 1).then_some(())
    })
    .await;
    // A typo is saved, then the server restarts: there is no good version to fall back on.
    let file = app.dir.path().join("plugins/sequences/welcome.toml");
    let good = std::fs::read_to_string(&file).expect("welcome.toml");
    std::fs::write(&file, format!("{good}\n[[step]]\nwait = \"7 days\"\n")).expect("write");
    app.restart_with_clock(clock.clone(), |c| c.plugins.watch = false)
        .await;
    let plugins = expect_json(
        app.get("/v1/admin/plugins", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert!(
        plugins.to_string().contains("sequences/welcome.toml"),
        "{plugins}"
    );
    assert_problem(
        app.get("/v1/sequences/welcome", &app.admin).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // The week's wait ends while the file is broken: the enrollment waits, it does not end.
    // A reminder due a minute after the wait shows when the scheduler has got past it.
    let task = expect_json(
        app.post(
            "/v1/tasks",
            &app.admin,
            &json!({"title": "marker", "due_at": "2026-11-30T09:01:00Z"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    clock.advance(7 * DAY + 60_000);
    eventually("the marker's reminder", async || {
        let notes = expect_json(
            app.get("/v1/notifications", &app.admin).await,
            StatusCode::OK,
        )
        .await;
        notes["items"]
            .as_array()?
            .iter()
            .any(|n| n["kind"] == "task.due" && n["task_id"] == task["id"])
            .then_some(())
    })
    .await;
    let e = enrollments(&app, &id).await;
    assert_eq!(e[0]["status"], "active", "{e:?}");
    assert_eq!(emails(&app, &id).await.len(), 1);
    // Mended and reloaded: within the retry interval it goes on where it stood.
    std::fs::write(&file, good).expect("write");
    app.post("/v1/admin/plugins/reload", &app.admin, &json!({}))
        .await;
    clock.advance(5 * 60 * 1000);
    eventually("welcome_2 in the outbox", async || {
        (emails(&app, &id).await.len() == 2).then_some(())
    })
    .await;
    let e = enrollments(&app, &id).await;
    assert_eq!(e[0]["status"], "active", "{e:?}");
}

#[tokio::test]
async fn a_rule_that_re_enrolls_on_completion_is_stopped_and_shown() {
    let clock = Arc::new(ManualClock::new(START));
    let app = nurture_app(clock.clone(), None).await;
    let plugins = app.dir.path().join("plugins");
    std::fs::write(
        plugins.join("sequences/spin.toml"),
        "[[step]]\nif = 'true'\ngoto = \"end\"\n",
    )
    .expect("spin.toml");
    std::fs::write(
        plugins.join("nurture.rhai"),
        r#"fn on_event(event, lead) {
            if event.kind == "lead.created" || (event.kind == "sequence.completed" && event.sequence == "spin") {
                return enroll("spin");
            }
            ()
        }"#,
    )
    .expect("nurture.rhai");
    expect_json(
        app.post("/v1/admin/plugins/reload", &app.admin, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    let id = lead(&app, json!({"name": "Spin"})).await;
    let report = eventually("the loop to be refused", async || {
        let r = expect_json(
            app.get("/v1/admin/plugins", &app.admin).await,
            StatusCode::OK,
        )
        .await;
        r.to_string().contains("a loop?").then_some(r)
    })
    .await;
    let script = report["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["file"] == "nurture.rhai")
        .expect("nurture.rhai");
    assert!(script["errors"].as_u64().unwrap() >= 1, "{script}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = enrollments(&app, &id).await;
    assert_eq!(e.len(), 5, "{e:?}");
    assert!(e.iter().all(|e| e["status"] == "completed"), "{e:?}");
    // A day later the lead may loop through it again, five more times.
    clock.advance(DAY + 1);
    expect_json(
        app.post(
            &format!("/v1/leads/{id}/enrollments"),
            &app.admin,
            &json!({"sequence": "spin"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    eventually("five more enrollments the next day", async || {
        (enrollments(&app, &id).await.len() == 10).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_welcome_sequence_sends_four_weekly_emails_and_stops_at_sql() {
    let clock = Arc::new(ManualClock::new(START));
    let smtp = SmtpSink::start().await;
    let app = nurture_app(clock.clone(), Some(&smtp)).await;
    let stays = lead(&app, json!({"name": "Stays", "email": "stays@example.cn"})).await;
    let leaves = lead(
        &app,
        json!({"name": "Leaves", "email": "leaves@example.cn"}),
    )
    .await;

    for week in 1..=3 {
        if week > 1 {
            clock.advance(7 * DAY);
        }
        for to in ["stays@example.cn", "leaves@example.cn"] {
            let got = smtp.wait_for(to, week).await;
            assert_eq!(got.len(), week, "week {week}: {to}");
        }
    }
    // After three emails the second lead reaches SQL: its sequence ends, the other goes on.
    expect_json(
        app.patch(
            &format!("/v1/leads/{leaves}"),
            &app.admin,
            &json!({"stage": "sql"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    clock.advance(7 * DAY);
    let four = smtp.wait_for("stays@example.cn", 4).await;
    assert_eq!(four.len(), 4);
    let subjects: Vec<String> = four.iter().filter_map(|m| m.header("Subject")).collect();
    assert_eq!(subjects[0], "Welcome, Stays");
    eventually("the welcome sequence to end at SQL", async || {
        let e = enrollments(&app, &leaves).await;
        (e[0]["status"] == "exited").then_some(())
    })
    .await;
    let e = enrollments(&app, &leaves).await;
    assert_eq!(e[0]["reason"], "sql", "{e:?}");
    // More weeks pass: nothing more for either (the other finished its four).
    clock.advance(7 * DAY);
    clock.advance(7 * DAY);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.wait_for("leaves@example.cn", 0).await.len(), 3);
    let e = enrollments(&app, &stays).await;
    assert_eq!(e[0]["sequence"], "welcome");
    assert_eq!(e[0]["status"], "completed", "{e:?}");
    // Its end enrolled it in long-term nurture (an email every 15 days).
    assert_eq!(e[1]["sequence"], "long_term", "{e:?}");
    // Every email was marketing: an unsubscribe link and the one-click header.
    for m in &four {
        assert_eq!(m.from, "sales@acme.example");
        let url = m.header("List-Unsubscribe").expect("List-Unsubscribe");
        assert!(url.contains("/u/"), "{url}");
        assert_eq!(
            m.header("List-Unsubscribe-Post").as_deref(),
            Some("List-Unsubscribe=One-Click")
        );
        let s = stored(&app, m).await;
        assert_eq!(s["status"], "sent");
        assert!(s["text"].as_str().unwrap().contains("/u/"), "{s}");
    }
    // Each step is on the timeline.
    let tl = expect_json(
        app.get(&format!("/v1/leads/{stays}/timeline?limit=500"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    let steps = tl["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "sequence_step" && i["data"]["sequence"] == "welcome")
        .count();
    assert_eq!(steps, 7, "{tl}");
}

#[tokio::test]
async fn a_pricing_visit_without_a_trial_gets_the_roi_email_a_day_later() {
    let clock = Arc::new(ManualClock::new(START));
    let smtp = SmtpSink::start().await;
    let app = nurture_app(clock.clone(), Some(&smtp)).await;
    let looker = lead(&app, json!({"email": "looker@example.cn"})).await;
    let trier = lead(&app, json!({"email": "trier@example.cn"})).await;
    for l in [&looker, &trier] {
        app.add_activity(
            &app.admin,
            json!({"lead_id": l, "kind": "page_view", "properties": {"path": "/pricing"}}),
        )
        .await;
    }
    // One of them asks for a trial within the day.
    app.add_activity(
        &app.admin,
        json!({"lead_id": trier, "kind": "trial_request"}),
    )
    .await;
    smtp.wait_for("looker@example.cn", 1).await; // welcome_1
    clock.advance(DAY - 60_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let roi = |msgs: Vec<Received>| {
        msgs.into_iter()
            .filter(|m| {
                m.header("Subject")
                    .is_some_and(|s| s.contains("investment"))
            })
            .count()
    };
    assert_eq!(
        roi(smtp.wait_for("looker@example.cn", 1).await),
        0,
        "not before 24 h"
    );
    clock.advance(60_000);
    let got = smtp.wait_for("looker@example.cn", 2).await;
    assert_eq!(roi(got), 1);
    eventually("the trier's pricing sequence to finish", async || {
        let e = enrollments(&app, &trier).await;
        e.iter()
            .find(|e| e["sequence"] == "pricing_roi" && e["status"] == "completed")
            .map(|_| ())
    })
    .await;
    assert_eq!(roi(smtp.wait_for("trier@example.cn", 0).await), 0);
}

#[tokio::test]
async fn crossing_60_gives_the_owner_a_high_intent_task() {
    let clock = Arc::new(ManualClock::new(START));
    let app = nurture_app(clock.clone(), None).await;
    let (rep, rep_token) = app.rep("li", None).await;
    // A decision maker from a partner: 40 points.
    let id = lead(
        &app,
        json!({"email": "ceo@acme.cn", "title": "CEO", "channel": "referral", "owner_id": rep}),
    )
    .await;
    let path = format!("/v1/tasks?lead_id={id}");
    let none = expect_json(app.get(&path, &rep_token).await, StatusCode::OK).await;
    assert_eq!(none["items"], json!([]));
    // A demo request: +30, across 60.
    app.add_activity(&app.admin, json!({"lead_id": id, "kind": "demo_request"}))
        .await;
    let task = eventually("the high-intent task", async || {
        let t = expect_json(app.get(&path, &rep_token).await, StatusCode::OK).await;
        t["items"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert!(
        task["title"].as_str().unwrap().contains("High intent"),
        "{task}"
    );
    assert_eq!(task["owner_id"], rep.as_str());
    assert_eq!(task["due_at"], "2026-11-23T12:00:00.000Z");
}

#[tokio::test]
async fn unsubscribing_stops_everything() {
    let clock = Arc::new(ManualClock::new(START));
    let smtp = SmtpSink::start().await;
    let app = nurture_app(clock.clone(), Some(&smtp)).await;
    let id = lead(&app, json!({"email": "bye@example.cn"})).await;
    let first = smtp.wait_for("bye@example.cn", 1).await;
    let header = first[0].header("List-Unsubscribe").expect("header");
    let token = link_token(&header, "/u/");
    // The link shows a confirmation page; following it unsubscribes nobody.
    let page = app
        .client
        .get(app.url(&format!("/u/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("<form"));
    assert_eq!(
        expect_json(
            app.get(&format!("/v1/leads/{id}"), &app.admin).await,
            StatusCode::OK
        )
        .await["flags"]["do_not_contact"],
        false
    );
    // The mail client's one-click POST.
    one_click_unsubscribe(&app, &token).await;
    let l = expect_json(
        app.get(&format!("/v1/leads/{id}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(l["flags"]["do_not_contact"], true);
    let e = enrollments(&app, &id).await;
    assert_eq!(e[0]["status"], "exited");
    assert_eq!(e[0]["reason"], "unsubscribed");
    for _ in 0..4 {
        clock.advance(7 * DAY);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        smtp.wait_for("bye@example.cn", 0).await.len(),
        1,
        "nothing after"
    );
    // Nor can anyone enroll it again.
    let res = app
        .post(
            &format!("/v1/leads/{id}/enrollments"),
            &app.admin,
            &json!({"sequence": "long_term"}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT).await;
    // An unknown token is a 404.
    let res = app.client.post(app.url("/u/nope")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn opens_and_clicks_become_activities_that_score() {
    let clock = Arc::new(ManualClock::new(START));
    let smtp = SmtpSink::start().await;
    let app = nurture_app(clock.clone(), Some(&smtp)).await;
    let id = lead(&app, json!({"email": "reader@example.cn"})).await;
    let got = smtp.wait_for("reader@example.cn", 1).await;
    let mail = stored(&app, &got[0]).await;
    let html = mail["html"].as_str().expect("html part");
    let before = expect_json(
        app.get(&format!("/v1/leads/{id}"), &app.admin).await,
        StatusCode::OK,
    )
    .await["score"]["total"]
        .as_i64()
        .unwrap();

    let token = link_token(html, "/o/");
    let pixel = app
        .client
        .get(app.url(&format!("/o/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pixel.status(), StatusCode::OK);
    assert_eq!(pixel.headers()["content-type"], "image/gif");

    assert!(
        !html.contains("https://example.com/getting-started"),
        "links are rewritten"
    );
    // The template's own unsubscribe link is the only one, and it is not a tracked click.
    assert_eq!(html.matches("Unsubscribe</a>").count(), 1, "{html}");
    assert_eq!(html.matches(&format!("/c/{token}/")).count(), 1, "{html}");
    let click_path = format!("/c/{token}/0");
    assert!(html.contains(&click_path), "{html}");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirects.get(app.url(&click_path)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers()["location"],
        "https://example.com/getting-started"
    );
    // A link number the message never had is no redirect anywhere.
    let res = no_redirects
        .get(app.url(&format!("/c/{token}/99")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let after = expect_json(
        app.get(&format!("/v1/leads/{id}"), &app.admin).await,
        StatusCode::OK,
    )
    .await["score"]["total"]
        .as_i64()
        .unwrap();
    assert_eq!(
        after,
        before + 5,
        "opened and clicked a marketing email: +5"
    );
    let acts = expect_json(
        app.get(&format!("/v1/leads/{id}/activities"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    let kinds: Vec<&str> = acts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"email_open") && kinds.contains(&"email_click"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn without_smtp_mail_waits_in_the_outbox_marked_unsent() {
    let clock = Arc::new(ManualClock::new(START));
    let app = nurture_app(clock.clone(), None).await;
    let id = lead(&app, json!({"email": "later@example.cn"})).await;
    let mail = eventually("the first welcome email in the outbox", async || {
        emails(&app, &id).await.first().cloned()
    })
    .await;
    assert_eq!(mail["status"], "unsent");
    assert!(
        mail["waiting"].as_str().unwrap().contains("no SMTP"),
        "{mail}"
    );
    assert_eq!(mail["to"], "later@example.cn");
    let unsent = expect_json(
        app.get("/v1/emails?status=unsent", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(unsent["items"].as_array().unwrap().len(), 1);
    // The lead reaches SQL: its sequence ends and the unsent welcome is not sent later.
    expect_json(
        app.patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"stage": "sql"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let mail = &emails(&app, &id).await[0];
    assert_eq!(mail["status"], "suppressed", "{mail}");
    assert!(
        mail["last_error"].as_str().unwrap().contains("sql"),
        "{mail}"
    );
    assert_invalid(
        app.get("/v1/emails?status=lost", &app.admin).await,
        "status",
    )
    .await;
    // Others list the mail of one lead they see.
    let (_, rep) = app.rep("r", None).await;
    assert_invalid(app.get("/v1/emails", &rep).await, "lead_id").await;
}

#[tokio::test]
async fn enrollments_pause_resume_and_end_and_one_is_open_per_sequence() {
    let clock = Arc::new(ManualClock::new(START));
    let app = nurture_app(clock.clone(), None).await;
    let (holder, _) = app.rep("holder", None).await;
    // Scored 40+: not enrolled in welcome by the rules.
    let id = lead(
        &app,
        json!({"email": "vip@acme.cn", "title": "CEO", "channel": "referral", "owner_id": holder}),
    )
    .await;
    assert!(enrollments(&app, &id).await.is_empty());
    let seqs = expect_json(app.get("/v1/sequences", &app.admin).await, StatusCode::OK).await;
    let names: Vec<&str> = seqs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["high_intent", "long_term", "pricing_roi", "welcome"]
    );
    let welcome = expect_json(
        app.get("/v1/sequences/welcome", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        welcome["steps"][1],
        json!({"number": 2, "kind": "wait", "wait_seconds": 604800,
        "template": null, "event": null, "title": null, "due_in_seconds": null, "set": null,
        "condition": null, "goto": null})
    );

    let path = format!("/v1/leads/{id}/enrollments");
    let enroll_once = || {
        app.req(reqwest::Method::POST, &path, &app.admin)
            .header("idempotency-key", "enroll-1")
            .json(&json!({"sequence": "welcome"}))
            .send()
    };
    let e = expect_json(enroll_once().await.unwrap(), StatusCode::CREATED).await;
    // A retry of the same request gets the same answer, not a 409.
    let retry = enroll_once().await.unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(expect_json(retry, StatusCode::CREATED).await, e);
    assert_eq!(e["status"], "active");
    assert!(e["enrolled_by"].is_string(), "{e}");
    let again = app
        .post(&path, &app.admin, &json!({"sequence": "welcome"}))
        .await;
    assert_problem(again, StatusCode::CONFLICT).await;
    assert_invalid(
        app.post(&path, &app.admin, &json!({"sequence": "nope"}))
            .await,
        "sequence",
    )
    .await;
    let eid = e["id"].as_str().unwrap();
    // (Before the SLA reclaims it into the pool, where every rep sees it.) A rep who cannot see the lead cannot see or change its enrollments.
    let (_, rep) = app.rep("outsider", None).await;
    assert_problem(app.get(&path, &rep).await, StatusCode::NOT_FOUND).await;
    let res = app
        .post(&format!("/v1/enrollments/{eid}/pause"), &rep, &json!({}))
        .await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
    eventually("the first email", async || {
        (emails(&app, &id).await.len() == 1).then_some(())
    })
    .await;
    let paused = expect_json(
        app.post(
            &format!("/v1/enrollments/{eid}/pause"),
            &app.admin,
            &json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(paused["status"], "paused");
    clock.advance(14 * DAY);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(emails(&app, &id).await.len(), 1, "nothing while paused");
    let resumed = expect_json(
        app.post(
            &format!("/v1/enrollments/{eid}/resume"),
            &app.admin,
            &json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(resumed["status"], "active");
    // The week it waited for has passed: the next step runs at once.
    eventually("the second email after resuming", async || {
        (emails(&app, &id).await.len() == 2).then_some(())
    })
    .await;
    // A single enrollment carries its version as its ETag; a stale If-Match is a 412.
    let one = app.get(&format!("/v1/enrollments/{eid}"), &app.admin).await;
    let tag = one.headers()["etag"].to_str().unwrap().to_owned();
    let one = expect_json(one, StatusCode::OK).await;
    assert_eq!(tag, format!("\"{}\"", one["version"]));
    assert_eq!(one["status"], "active");
    assert!(one["version"].as_u64().unwrap() > resumed["version"].as_u64().unwrap());
    let stale = format!("\"{}\"", resumed["version"]);
    for res in [
        app.req(
            Method::DELETE,
            &format!("/v1/enrollments/{eid}"),
            &app.admin,
        )
        .header("if-match", &stale)
        .send()
        .await
        .unwrap(),
        app.req(
            Method::POST,
            &format!("/v1/enrollments/{eid}/pause"),
            &app.admin,
        )
        .header("if-match", &stale)
        .send()
        .await
        .unwrap(),
    ] {
        assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
    }
    assert_eq!(enrollments(&app, &id).await[0]["status"], "active");
    let res = app
        .req(
            Method::DELETE,
            &format!("/v1/enrollments/{eid}"),
            &app.admin,
        )
        .header("if-match", &tag)
        .send()
        .await
        .unwrap();
    let new_tag = res.headers()["etag"].to_str().unwrap().to_owned();
    let ended = expect_json(res, StatusCode::OK).await;
    assert_eq!(new_tag, format!("\"{}\"", ended["version"]));
    assert_eq!(ended["status"], "exited");
    assert_eq!(ended["reason"], "unenrolled");
    let res = app
        .post(
            &format!("/v1/enrollments/{eid}/resume"),
            &app.admin,
            &json!({}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn a_refused_send_is_retried_with_backoff() {
    let clock = Arc::new(ManualClock::new(START));
    let smtp = SmtpSink::start().await;
    smtp.refuse(true);
    let app = nurture_app(clock.clone(), Some(&smtp)).await;
    let id = lead(&app, json!({"email": "retry@example.cn"})).await;
    let failed = eventually("a failed attempt", async || {
        emails(&app, &id)
            .await
            .into_iter()
            .find(|m| m["attempts"] == 1)
    })
    .await;
    assert_eq!(failed["status"], "unsent");
    assert!(
        failed["last_error"].as_str().unwrap().contains("451"),
        "{failed}"
    );
    assert!(
        failed["waiting"].as_str().unwrap().contains("retrying"),
        "{failed}"
    );
    smtp.refuse(false);
    // The first retry waits a minute.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(smtp.wait_for("retry@example.cn", 0).await.is_empty());
    clock.advance(60_000);
    assert_eq!(smtp.wait_for("retry@example.cn", 1).await.len(), 1);
    let sent = eventually("the message marked sent", async || {
        emails(&app, &id)
            .await
            .into_iter()
            .find(|m| m["status"] == "sent")
    })
    .await;
    assert_eq!(sent["attempts"], 2);
}

#[tokio::test]
async fn a_webhook_step_reaches_its_subscribers_and_set_and_if_steps_apply() {
    let clock = Arc::new(ManualClock::new(START));
    let receiver = crate::webhooks::Receiver::start().await;
    let app = spawn_app_with_clock(clock.clone(), |c| {
        shipped_plugins(c);
        c.plugins.watch = false;
        c.webhooks.allow_private_destinations = true;
        std::fs::write(
            c.plugins_dir.join("sequences/handoff.toml"),
            r#"
description = "mark, check, tell the CRM"
[[step]]
set = { status = "nurturing", "fields.segment" = "warm", tags = "nurtured" }
[[step]]
if = 'lead.score >= 1000'
goto = "end"
[[step]]
webhook = "handoff.ready"
"#,
        )
        .expect("write sequence");
    })
    .await;
    expect_json(
        app.post(
            "/v1/webhooks",
            &app.admin,
            &json!({"url": receiver.url(), "events": ["sequence.handoff.ready"], "secret": "s3cret-0123456789abcdef"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let (holder, _) = app.rep("holder", None).await;
    let id = lead(
        &app,
        json!({"email": "crm@acme.cn", "title": "CEO", "channel": "referral", "owner_id": holder}),
    )
    .await;
    expect_json(
        app.post(
            &format!("/v1/leads/{id}/enrollments"),
            &app.admin,
            &json!({"sequence": "handoff"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let got = eventually("the step's webhook", async || {
        let got = receiver.got();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(got[0].event, "sequence.handoff.ready");
    assert_eq!(got[0].json["lead_id"], id.as_str());
    assert_eq!(got[0].json["data"]["sequence"], "handoff");
    assert_eq!(got[0].json["data"]["step"], 3);
    let l = expect_json(
        app.get(&format!("/v1/leads/{id}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(l["status"], "nurturing");
    assert_eq!(l["fields"]["segment"], "warm");
    assert!(
        l["tags"].as_array().unwrap().contains(&json!("nurtured")),
        "{l}"
    );
    let e = enrollments(&app, &id).await;
    assert_eq!(e[0]["status"], "completed");
    // An event name no sequence could emit is refused.
    let res = app
        .post(
            "/v1/webhooks",
            &app.admin,
            &json!({"url": receiver.url(), "events": ["sequence.bad name"]}),
        )
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn erasing_a_lead_erases_its_enrollments_mail_and_webhook_deliveries() {
    let clock = Arc::new(ManualClock::new(START));
    let receiver = crate::webhooks::Receiver::start().await;
    receiver.answer(500);
    let app = spawn_app_with_clock(clock.clone(), |c| {
        shipped_plugins(c);
        c.plugins.watch = false;
        c.webhooks.allow_private_destinations = true;
    })
    .await;
    let hook = expect_json(
        app.post(
            "/v1/webhooks",
            &app.admin,
            &json!({"url": receiver.url(), "events": ["*"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let hook = hook["id"].as_str().unwrap().to_owned();
    let gone = lead(&app, json!({"email": "gone@example.cn", "name": "Gone"})).await;
    let kept = lead(&app, json!({"email": "kept@example.cn"})).await;
    eventually("both welcome emails in the outbox", async || {
        (emails(&app, &gone).await.len() == 1 && emails(&app, &kept).await.len() == 1).then_some(())
    })
    .await;
    let about = |v: &Value, id: &str| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["lead_id"] == id)
            .count()
    };
    let log = format!("/v1/webhooks/{hook}/deliveries?limit=500");
    let before = expect_json(app.get(&log, &app.admin).await, StatusCode::OK).await;
    assert!(about(&before, &gone) > 0, "{before}");
    let res = app.delete(&format!("/v1/leads/{gone}"), &app.admin).await;
    assert!(res.status().is_success(), "{}", res.status());
    // What is left about it is the news of its erasure (ids only), for integrations to act on.
    let after = expect_json(app.get(&log, &app.admin).await, StatusCode::OK).await;
    let left: Vec<&Value> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["lead_id"] == gone.as_str())
        .collect();
    assert_eq!(left.len(), 1, "{after}");
    assert_eq!(left[0]["event"], "lead.deleted");
    assert!(about(&after, &kept) > 0);
    let all = expect_json(
        app.get("/v1/emails?limit=500", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(about(&all, &gone), 0, "{all}");
    // Its sequence's timers went with it: weeks pass, nothing is sent for it.
    for week in 2..=4 {
        clock.advance(7 * DAY);
        eventually("the kept lead's next welcome email", async || {
            (emails(&app, &kept).await.len() >= week).then_some(())
        })
        .await;
    }
    let all = expect_json(
        app.get("/v1/emails?limit=500", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(about(&all, &gone), 0);
}

#[tokio::test]
async fn the_owner_taking_over_ends_nurture_with_or_without_an_sla() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |c| {
        shipped_plugins(c);
        c.plugins.watch = false;
        std::fs::write(
            c.plugins_dir.join("sla.rhai"),
            r#"fn sla(lead) { if lead.has_tag("self-serve") { false } else { () } }"#,
        )
        .expect("write sla.rhai");
    })
    .await;
    let (rep, rep_token) = app.rep("owner", None).await;
    let with_sla = lead(&app, json!({"email": "a@example.cn", "owner_id": rep})).await;
    let without = lead(
        &app,
        json!({"email": "b@example.cn", "owner_id": rep, "tags": ["self-serve"]}),
    )
    .await;
    for id in [&with_sla, &without] {
        eventually("the welcome enrollment", async || {
            let e = enrollments(&app, id).await;
            (e.first()?["status"] == "active").then_some(())
        })
        .await;
        expect_json(
            app.post(&format!("/v1/leads/{id}/touch"), &rep_token, &json!({}))
                .await,
            StatusCode::OK,
        )
        .await;
        let e = enrollments(&app, id).await;
        assert_eq!(e[0]["status"], "exited", "{id}: {e:?}");
        assert_eq!(e[0]["reason"], "owner_took_over", "{id}: {e:?}");
    }
}

#[tokio::test]
async fn a_merge_moves_sequences_mail_and_tasks_to_the_survivor() {
    let clock = Arc::new(ManualClock::new(START));
    let smtp = SmtpSink::start().await;
    let port = smtp.port;
    let app = spawn_app_with_clock(clock.clone(), move |c| {
        shipped_plugins(c);
        c.plugins.watch = false;
        c.email.smtp_host = "127.0.0.1".into();
        c.email.smtp_port = port;
        c.email.security = "none".into();
        c.email.from = "Acme <sales@acme.example>".into();
        c.webhooks.allow_private_destinations = true;
    })
    .await;
    // A receiver that is down: every delivery stays pending, so the log shows them all.
    let hook = expect_json(
        app.post(
            "/v1/webhooks",
            &app.admin,
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["*"], "secret": "s3cret-s3cret-s3cret"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let create_gone = || {
        app.req(reqwest::Method::POST, "/v1/leads", &app.admin)
            .header("idempotency-key", "wang-1")
            .json(&json!({"name": "Wang", "email": "wang@acme-corp.cn"}))
            .send()
    };
    let first = expect_json(create_gone().await.unwrap(), StatusCode::CREATED).await;
    let gone = first["id"].as_str().unwrap().to_owned();
    let keep = lead(
        &app,
        json!({"name": "Wang Wei", "email": "wei@acme-corp.cn"}),
    )
    .await;
    let sent = smtp.wait_for("wang@acme-corp.cn", 1).await;
    let token = link_token(&sent[0].header("List-Unsubscribe").expect("header"), "/u/");
    let mail = stored(&app, &sent[0]).await;
    let task = expect_json(
        app.post(
            "/v1/tasks",
            &app.admin,
            &json!({"title": "call Wang back", "lead_id": gone}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let mut since = 0;
    loop {
        let page = expect_json(
            app.get(&format!("/v1/changes?since={since}"), &app.admin)
                .await,
            StatusCode::OK,
        )
        .await;
        if page["items"].as_array().unwrap().is_empty() {
            break;
        }
        since = page["next"].as_u64().unwrap();
    }
    expect_json(
        app.post(
            &format!("/v1/leads/{keep}/merge"),
            &app.admin,
            &json!({"other_id": gone}),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    // The task and the mail are the survivor's now, and say so in the feed.
    let task_now = expect_json(
        app.get(
            &format!("/v1/tasks/{}", task["id"].as_str().unwrap()),
            &app.admin,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(task_now["lead_id"], keep.as_str());
    let mail_now = expect_json(
        app.get(
            &format!("/v1/emails/{}", mail["id"].as_str().unwrap()),
            &app.admin,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(mail_now["lead_id"], keep.as_str());
    let changes = expect_json(
        app.get(&format!("/v1/changes?since={since}"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    for (entity, id) in [("task", &task["id"]), ("mail", &mail["id"])] {
        assert!(
            changes["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["entity"] == entity && c["id"] == *id && c["op"] == "update"),
            "{entity} in {changes}"
        );
    }
    // Both were in the welcome sequence: the survivor's goes on, the other ended.
    let e = enrollments(&app, &keep).await;
    assert_eq!(e.len(), 2, "{e:?}");
    let ended: Vec<&Value> = e.iter().filter(|e| e["status"] == "exited").collect();
    assert_eq!(ended.len(), 1, "{e:?}");
    assert_eq!(ended[0]["reason"], "merged into another lead");
    let timeline = expect_json(
        app.get(&format!("/v1/leads/{keep}/timeline?limit=500"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(
        timeline["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "sequence_exited"),
        "{timeline}"
    );
    // A merge is not an erasure: a retried create still gets its first answer, and webhook
    // deliveries about the other lead (its create, the merge's own changes) still go out.
    let retry = create_gone().await.unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(expect_json(retry, StatusCode::CREATED).await, first);
    let log = expect_json(
        app.get(
            &format!(
                "/v1/webhooks/{}/deliveries?limit=500",
                hook["id"].as_str().unwrap()
            ),
            &app.admin,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let events: Vec<(String, String)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["event"].as_str().unwrap().to_owned(),
                d["entity_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for want in [
        ("lead.created".to_owned(), gone.clone()),
        ("lead.merged".to_owned(), gone.clone()),
        (
            "mail.updated".to_owned(),
            mail["id"].as_str().unwrap().to_owned(),
        ),
    ] {
        assert!(events.contains(&want), "{want:?} in {events:?}");
    }
    // The unsubscribe link of mail already sent still works, for the person it reached.
    one_click_unsubscribe(&app, &token).await;
    let survivor = expect_json(
        app.get(&format!("/v1/leads/{keep}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(survivor["flags"]["do_not_contact"], true);
    // Erasing the person forgets every delivery about either lead, the ones filed under the
    // survivor by the merge included; only the erasure's own rows are left to go out.
    let res = app.delete(&format!("/v1/leads/{keep}"), &app.admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let log = expect_json(
        app.get(
            &format!(
                "/v1/webhooks/{}/deliveries?limit=500",
                hook["id"].as_str().unwrap()
            ),
            &app.admin,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let about: Vec<&Value> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["lead_id"] == gone.as_str() || d["lead_id"] == keep.as_str())
        .collect();
    let mut left: Vec<&str> = about.iter().map(|d| d["event"].as_str().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["lead.deleted", "task.deleted"], "{about:?}");
}

#[tokio::test]
async fn a_rep_enrolls_and_changes_enrollments_only_of_their_own_leads() {
    let clock = Arc::new(ManualClock::new(START));
    let app = nurture_app(clock.clone(), None).await;
    let pools = expect_json(app.get("/v1/pools", &app.admin).await, StatusCode::OK).await;
    let pool = pools["items"][0]["id"].as_str().unwrap().to_owned();
    let id = lead(&app, json!({"email": "pooled@example.cn", "pool_id": pool})).await;
    let e = expect_json(
        app.post(
            &format!("/v1/leads/{id}/enrollments"),
            &app.admin,
            &json!({"sequence": "long_term"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let eid = e["id"].as_str().unwrap();
    // A rep sees the pooled lead's enrollments, but enrolling it or changing one is a change
    // of the lead: theirs to make once they have claimed it.
    let (_, rep) = app.rep("r", None).await;
    expect_json(
        app.get(&format!("/v1/leads/{id}/enrollments"), &rep).await,
        StatusCode::OK,
    )
    .await;
    let res = app
        .post(
            &format!("/v1/leads/{id}/enrollments"),
            &rep,
            &json!({"sequence": "pricing_roi"}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    for (method, path) in [
        (
            reqwest::Method::POST,
            format!("/v1/enrollments/{eid}/pause"),
        ),
        (reqwest::Method::DELETE, format!("/v1/enrollments/{eid}")),
    ] {
        let res = app
            .req(method, &path, &rep)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_problem(res, StatusCode::FORBIDDEN).await;
    }
    let now = enrollments(&app, &id).await;
    assert!(
        now.iter().all(|e| e["sequence"] != "pricing_roi"),
        "{now:?}"
    );
    // A list like every other: pages, and unknown parameters refused.
    let path = format!("/v1/leads/{id}/enrollments");
    let first = expect_json(
        app.get(&format!("{path}?limit=1"), &rep).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = expect_json(
        app.get(&format!("{path}?limit=1&cursor={cursor}"), &rep)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(second["items"][0]["id"], now[1]["id"]);
    assert_invalid(app.get(&format!("{path}?bogus=1"), &rep).await, "bogus").await;
    let mine = now.iter().find(|e| e["id"] == eid).unwrap();
    assert_eq!(mine["status"], "active");
    expect_json(
        app.post(&format!("/v1/leads/{id}/claim"), &rep, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    let res = app
        .post(&format!("/v1/enrollments/{eid}/pause"), &rep, &json!({}))
        .await;
    assert_eq!(expect_json(res, StatusCode::OK).await["status"], "paused");
}

#[tokio::test]
async fn merging_in_a_do_not_contact_lead_stops_the_survivors_marketing_mail() {
    let clock = Arc::new(ManualClock::new(START));
    let app = nurture_app(clock.clone(), None).await;
    let keep = lead(&app, json!({"email": "keep@example.cn"})).await;
    let unsent = eventually("the welcome email in the outbox", async || {
        emails(&app, &keep).await.first().cloned()
    })
    .await;
    assert_eq!(unsent["status"], "unsent");
    let quiet = lead(
        &app,
        json!({"email": "quiet@example.cn", "flags": {"do_not_contact": true}}),
    )
    .await;
    expect_json(
        app.post(
            &format!("/v1/leads/{keep}/merge"),
            &app.admin,
            &json!({"other_id": quiet}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let e = enrollments(&app, &keep).await;
    let welcome = e.iter().find(|e| e["sequence"] == "welcome").unwrap();
    assert_eq!(welcome["status"], "exited", "{e:?}");
    assert_eq!(welcome["reason"], "unsubscribed");
    let mail = expect_json(
        app.get(
            &format!("/v1/emails/{}", unsent["id"].as_str().unwrap()),
            &app.admin,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(mail["status"], "suppressed", "{mail}");
}

#[tokio::test]
async fn a_set_step_rescores_the_lead_it_changes() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |c| {
        c.plugins.watch = false;
        std::fs::create_dir_all(c.plugins_dir.join("sequences")).expect("dir");
        std::fs::write(
            c.plugins_dir.join("scoring.rhai"),
            r#"fn score(lead, stats) {
                if lead.has_tag("vip") { [#{rule: "a VIP", points: 50, part: "profile"}] } else { [] }
            }"#,
        )
        .expect("write scoring");
        std::fs::write(
            c.plugins_dir.join("sequences/crown.toml"),
            "description = \"make a VIP\"\n[[step]]\nset = { tags = \"vip\" }\n",
        )
        .expect("write sequence");
    })
    .await;
    let id = lead(&app, json!({"email": "king@acme.com"})).await;
    expect_json(
        app.post(
            &format!("/v1/leads/{id}/enrollments"),
            &app.admin,
            &json!({"sequence": "crown"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let l = eventually("the set step", async || {
        let l = expect_json(
            app.get(&format!("/v1/leads/{id}"), &app.admin).await,
            StatusCode::OK,
        )
        .await;
        l["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("vip")))
            .then_some(l)
    })
    .await;
    assert_eq!(
        l["score"]["total"], 50,
        "scored with the tag it was given: {l}"
    );
    assert_eq!(l["stage"], "mql");
}
