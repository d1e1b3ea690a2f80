//! Reports: speed-to-lead over leads touched at known clock offsets, as JSON and CSV, counting
//! only leads the caller may see.

use crate::helpers::*;
use leadline::clock::ManualClock;
use leadline::domain::time::to_rfc3339;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

const START: i64 = 1_795_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

async fn lead(app: &TestApp, token: &str, email: &str, channel: Option<&str>) -> String {
    let l = app
        .create_lead(
            token,
            json!({"name": email, "email": email, "channel": channel}),
        )
        .await;
    l["id"].as_str().expect("id").to_owned()
}

async fn touch(app: &TestApp, token: &str, id: &str) {
    let res = app
        .post(&format!("/v1/leads/{id}/touch"), token, &json!({}))
        .await;
    expect_json(res, StatusCode::OK).await;
}

async fn report(app: &TestApp, token: &str, query: &str) -> Value {
    expect_json(
        app.get(&format!("/v1/reports/speed-to-lead{query}"), token)
            .await,
        StatusCode::OK,
    )
    .await
}

#[tokio::test]
async fn speed_to_lead_measures_first_touches_and_sla_compliance() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let (ana, ana_t) = app.rep("ana", None).await;
    let (bob, bob_t) = app.rep("bob", None).await;

    // Ana's leads, all captured at START with the default 2-hour first-touch SLA.
    let fast = lead(&app, &ana_t, "l1@acme.com", Some("paid_search")).await;
    let half_hour = lead(&app, &ana_t, "l2@acme.com", Some("paid_search")).await;
    let late = lead(&app, &ana_t, "l3@acme.com", Some("event")).await;
    lead(&app, &ana_t, "l4@acme.com", None).await;
    lead(&app, &bob_t, "b1@acme.com", Some("event")).await;

    clock.advance(MIN);
    touch(&app, &ana_t, &fast).await; // 60 s: within 5 min, SLA met
    clock.advance(29 * MIN);
    touch(&app, &ana_t, &half_hour).await; // 1800 s: within 1 h, met
    clock.advance(150 * MIN);
    touch(&app, &ana_t, &late).await; // 10800 s: within 24 h, breached
    // Captured now: untouched, its deadline still ahead.
    lead(&app, &ana_t, "l5@acme.com", Some("email")).await;

    let r = report(&app, &ana_t, "").await;
    assert_eq!(r["from"], Value::Null);
    assert_eq!(r["to"], Value::Null);
    let expected_overall = json!({
        "leads": 5, "touched": 3, "never_touched": 2,
        "p50_seconds": 1800.0, "p90_seconds": 10800.0,
        "within_5m": 0.2, "within_1h": 0.4, "within_24h": 0.6, "never": 0.4,
        "sla": {"with_sla": 5, "met": 2, "breached": 2, "pending": 1, "compliance": 0.5}
    });
    assert_eq!(r["overall"], expected_overall);
    // Bob's lead is not Ana's to see.
    assert_eq!(r["by_rep"].as_object().unwrap().len(), 1);
    assert_eq!(r["by_rep"][&ana], expected_overall);
    let channels: Vec<&str> = r["by_channel"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(channels, ["email", "event", "paid_search", "unknown"]);
    assert_fields(
        &r["by_channel"]["paid_search"],
        json!({"leads": 2, "touched": 2, "p50_seconds": 60.0, "p90_seconds": 1800.0,
            "within_5m": 0.5, "within_1h": 1.0, "sla.met": 2, "sla.compliance": 1.0}),
    );
    assert_fields(
        &r["by_channel"]["event"],
        json!({"leads": 1, "within_1h": 0.0, "within_24h": 1.0, "sla.breached": 1,
            "sla.compliance": 0.0}),
    );
    assert_fields(
        &r["by_channel"]["unknown"],
        json!({"leads": 1, "never": 1.0, "p50_seconds": null, "sla.breached": 1}),
    );
    assert_fields(
        &r["by_channel"]["email"],
        json!({"leads": 1, "sla.pending": 1, "sla.compliance": null}),
    );

    // An admin sees Bob's untouched, overdue lead too.
    let all = report(&app, &app.admin, "").await;
    assert_fields(
        &all["overall"],
        json!({"leads": 6, "touched": 3, "never_touched": 3, "sla.breached": 3,
            "sla.compliance": 0.4}),
    );
    assert_fields(
        &all["by_rep"][&bob],
        json!({"leads": 1, "never": 1.0, "sla.breached": 1}),
    );
    assert_eq!(report(&app, &bob_t, "").await["overall"]["leads"], 1);

    // The range is on capture time: [from, to).
    let from = to_rfc3339(START + HOUR);
    let later = report(&app, &ana_t, &format!("?from={from}")).await;
    assert_eq!(later["from"], from.as_str());
    assert_fields(
        &later["overall"],
        json!({"leads": 1, "touched": 0, "sla.pending": 1, "sla.compliance": null}),
    );
    let earlier = report(&app, &ana_t, &format!("?to={from}")).await;
    assert_eq!(earlier["to"], from.as_str());
    assert_eq!(earlier["overall"]["leads"], 4);
}

#[tokio::test]
async fn a_breach_counts_against_whoever_held_the_lead_at_its_deadline() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let (ana, ana_t) = app.rep("ana", None).await;
    let (bob, bob_t) = app.rep("bob", None).await;
    let missed = lead(&app, &bob_t, "missed@acme.com", Some("event")).await;
    // Bob never touches it: past the 2-hour deadline, then reclaimed at 8 hours.
    clock.advance(8 * HOUR + MIN);
    let path = format!("/v1/leads/{missed}");
    let mut reclaimed = false;
    for _ in 0..200 {
        let l = expect_json(app.get(&path, &app.admin).await, StatusCode::OK).await;
        if l["owner_id"] != bob.as_str() {
            reclaimed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(reclaimed, "the SLA reclaims the lead from bob");
    // Ana gets it now and touches it at once; the breach was still Bob's.
    expect_json(
        app.post(
            &format!("{path}/assign"),
            &app.admin,
            &json!({"owner_id": ana}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    touch(&app, &ana_t, &missed).await;
    let r = report(&app, &app.admin, "").await;
    assert_fields(
        &r["by_rep"][&bob],
        json!({"leads": 1, "touched": 1, "sla.with_sla": 1, "sla.breached": 1, "sla.met": 0}),
    );
    assert!(r["by_rep"].get(&ana).is_none(), "{r}");
}

#[tokio::test]
async fn speed_to_lead_as_csv() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let (ana, ana_t) = app.rep("ana", None).await;
    let first = lead(&app, &ana_t, "l1@acme.com", Some("paid_search")).await;
    lead(&app, &ana_t, "l2@acme.com", None).await;
    clock.advance(2 * MIN);
    touch(&app, &ana_t, &first).await;

    let res = app
        .get("/v1/reports/speed-to-lead?format=csv", &ana_t)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let body = res.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines,
        [
            "group,key,leads,touched,never_touched,p50_seconds,p90_seconds,within_5m,within_1h,\
             within_24h,never,sla_with,sla_met,sla_breached,sla_pending,sla_compliance",
            "overall,all,2,1,1,120,120,0.5,0.5,0.5,0.5,2,1,0,1,1",
            &format!("rep,{ana},2,1,1,120,120,0.5,0.5,0.5,0.5,2,1,0,1,1"),
            "channel,paid_search,1,1,0,120,120,1,1,1,0,1,1,0,0,1",
            "channel,unknown,1,0,1,,,0,0,0,1,1,0,0,1,",
        ]
    );
}

#[tokio::test]
async fn speed_to_lead_refuses_bad_parameters() {
    let app = spawn_app().await;
    for (q, field) in [
        ("?format=xml", "format"),
        ("?from=yesterday", "from"),
        ("?to=soon", "to"),
        ("?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("?group_by=rep", "group_by"),
    ] {
        assert_invalid(
            app.get(&format!("/v1/reports/speed-to-lead{q}"), &app.admin)
                .await,
            field,
        )
        .await;
    }
    let res = app
        .client
        .get(app.url("/v1/reports/speed-to-lead"))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    // An empty store is an empty report, not an error.
    let r = report(&app, &app.admin, "").await;
    assert_eq!(r["overall"]["leads"], 0);
    assert_eq!(r["overall"]["p50_seconds"], Value::Null);
}

#[tokio::test]
async fn task_and_report_routes_are_documented() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let paths = &doc["paths"];
    for (path, method, tag) in [
        ("/v1/tasks", "get", "work"),
        ("/v1/tasks", "post", "work"),
        ("/v1/tasks/{id}", "get", "work"),
        ("/v1/tasks/{id}", "patch", "work"),
        ("/v1/tasks/{id}", "delete", "work"),
        ("/v1/reports/speed-to-lead", "get", "reports"),
    ] {
        assert_eq!(paths[path][method]["tags"][0], tag, "{method} {path}");
    }
    let csv = &paths["/v1/reports/speed-to-lead"]["get"]["responses"]["200"]["content"];
    assert!(csv["text/csv"].is_object() && csv["application/json"].is_object());
}
