//! Routing, pools and SLAs over HTTP: round-robin fairness that survives a restart, capacity
//! and inactive reps, the claim race, release with a reason, the SLA chain and the follow-up
//! rule under the controllable clock, and business hours.

use crate::helpers::*;
use leadline::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOUR: i64 = 3_600_000;
/// Monday 2026-11-23 08:00 UTC.
const START: i64 = 1_795_420_800_000;

async fn user(app: &TestApp, body: Value) -> (String, String) {
    app.create_user(body).await
}

/// Creates a lead as admin and returns it (201).
async fn lead(app: &TestApp, email: &str) -> Value {
    app.create_lead(&app.admin, json!({"email": email, "name": "L"}))
        .await
}

async fn default_pool(app: &TestApp) -> String {
    let pools = expect_json(app.get("/v1/pools", &app.admin).await, StatusCode::OK).await;
    pools["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "default")
        .expect("the default pool")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The caller's notifications of `kind` for `lead`, waiting up to 5 s for `want` of them.
async fn notes(app: &TestApp, token: &str, kind: &str, lead: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = expect_json(
            app.get("/v1/notifications?limit=500", token).await,
            StatusCode::OK,
        )
        .await;
        let found: Vec<Value> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["kind"] == kind && n["lead_id"] == lead)
            .cloned()
            .collect();
        if found.len() >= want || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the scheduler has nothing due (so a negative check is meaningful).
async fn settled(app: &TestApp, lead: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    let now_of = |v: &Value| v.clone();
    loop {
        let sla = expect_json(
            app.get(&format!("/v1/leads/{lead}/sla"), &app.admin).await,
            StatusCode::OK,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = expect_json(
            app.get(&format!("/v1/leads/{lead}/sla"), &app.admin).await,
            StatusCode::OK,
        )
        .await;
        if sla == again || Instant::now() > deadline {
            return now_of(&again);
        }
    }
}

async fn get_lead(app: &TestApp, id: &str) -> Value {
    expect_json(
        app.get(&format!("/v1/leads/{id}"), &app.admin).await,
        StatusCode::OK,
    )
    .await
}

async fn timeline_kinds(app: &TestApp, id: &str) -> Vec<(String, Value)> {
    let t = expect_json(
        app.get(&format!("/v1/leads/{id}/timeline?limit=500"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    t["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap_or("").to_owned(),
                i["data"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn round_robin_is_fair_and_its_position_survives_a_restart() {
    let mut app = spawn_app().await;
    let mut reps = Vec::new();
    for i in 0..5 {
        let (id, _) = user(
            &app,
            json!({"name": format!("rr{i}"), "role": "rep", "capacity": 1000}),
        )
        .await;
        reps.push(id);
    }
    reps.sort();
    let leads: Vec<Value> = (0..1000)
        .map(|i| json!({"email": format!("rr{i}@example.com")}))
        .collect();
    let res = expect_json(
        app.post("/v1/leads/batch", &app.admin, &json!({"leads": leads}))
            .await,
        StatusCode::OK,
    )
    .await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for item in res["items"].as_array().unwrap() {
        let owner = item["lead"]["owner_id"]
            .as_str()
            .unwrap_or_else(|| panic!("routed: {item}"))
            .to_owned();
        *counts.entry(owner).or_default() += 1;
    }
    let (min, max) = (
        counts.values().min().copied().unwrap_or(0),
        counts.values().max().copied().unwrap_or(0),
    );
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(max - min <= 1, "{counts:?}");
    // 1000 leads took whole turns; the next two go to the first and second rep (by id).
    for (i, email) in ["next1@example.com", "next2@example.com"]
        .iter()
        .enumerate()
    {
        assert_eq!(lead(&app, email).await["owner_id"], reps[i]);
    }
    app.restart().await;
    // A reset position would start over at the first rep.
    assert_eq!(lead(&app, "after@example.com").await["owner_id"], reps[2]);
}

#[tokio::test]
async fn nobody_gets_a_lead_over_capacity_or_while_inactive() {
    let app = spawn_app().await;
    let (small, _) = user(&app, json!({"name": "small", "role": "rep", "capacity": 1})).await;
    user(&app, json!({"name": "off", "role": "rep", "active": false})).await;
    let pool = default_pool(&app).await;
    let first = lead(&app, "c1@example.com").await;
    assert_eq!(first["owner_id"], small);
    for email in ["c2@example.com", "c3@example.com"] {
        let l = lead(&app, email).await;
        assert_eq!(l["owner_id"], Value::Null, "{l}");
        assert_eq!(l["pool_id"], pool, "never unassigned without a pool");
    }
    // A manual assignment over capacity is refused too.
    let second = lead(&app, "c4@example.com").await;
    let res = app
        .post(
            &format!("/v1/leads/{}/assign", second["id"].as_str().unwrap()),
            &app.admin,
            &json!({"owner_id": small}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT).await;
    // So is naming them as the owner of a new lead, or in a PATCH.
    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"email": "c5@example.com", "owner_id": small}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT).await;
    let res = app
        .patch(
            &format!("/v1/leads/{}", second["id"].as_str().unwrap()),
            &app.admin,
            &json!({"owner_id": small}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT).await;
    assert_eq!(
        get_lead(&app, second["id"].as_str().unwrap()).await["owner_id"],
        Value::Null
    );
    // Taking a lead oneself is no one else's capacity, by PATCH as on a create (the
    // bootstrap admin's capacity is 0: routing never gives it leads).
    let me = expect_json(app.get("/v1/me", &app.admin).await, StatusCode::OK).await;
    let res = app
        .patch(
            &format!("/v1/leads/{}", second["id"].as_str().unwrap()),
            &app.admin,
            &json!({"owner_id": me["id"]}),
        )
        .await;
    assert_eq!(expect_json(res, StatusCode::OK).await["owner_id"], me["id"]);
}

#[tokio::test]
async fn two_reps_claiming_one_lead_at_once_one_wins_and_release_keeps_the_reason() {
    let app = spawn_app().await;
    // Leads made before any rep exists wait in the default pool.
    let mut pooled = Vec::new();
    for i in 0..5 {
        pooled.push(lead(&app, &format!("p{i}@example.com")).await);
    }
    let (a, a_tok) = app.rep("ana", None).await;
    let (b, b_tok) = app.rep("bo", None).await;
    for l in &pooled {
        let id = l["id"].as_str().unwrap();
        let path = format!("/v1/leads/{id}/claim");
        let (ra, rb) = tokio::join!(
            app.req(reqwest::Method::POST, &path, &a_tok).send(),
            app.req(reqwest::Method::POST, &path, &b_tok).send(),
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let mut statuses = [ra.status(), rb.status()];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
        let owner = get_lead(&app, id).await["owner_id"].clone();
        assert!(owner == a || owner == b);
        assert_eq!(get_lead(&app, id).await["pool_id"], Value::Null);
        // The loser, who saw it in the pool, still hears it was claimed.
        let loser = if owner == a { &b_tok } else { &a_tok };
        assert_problem(
            app.post(&path, loser, &json!({})).await,
            StatusCode::CONFLICT,
        )
        .await;
    }
    // A lead that was never in a pool is as unknown to another rep as any invisible lead.
    let theirs = app
        .create_lead(&app.admin, json!({"name": "T", "owner_id": a}))
        .await;
    let res = app
        .post(
            &format!("/v1/leads/{}/claim", theirs["id"].as_str().unwrap()),
            &b_tok,
            &json!({}),
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
    // Release with a reason: back to the pool, the reason on the timeline.
    let id = pooled[0]["id"].as_str().unwrap();
    let owner_tok = if get_lead(&app, id).await["owner_id"] == a {
        &a_tok
    } else {
        &b_tok
    };
    let res = app
        .post(
            &format!("/v1/leads/{id}/release"),
            owner_tok,
            &json!({"reason": " "}),
        )
        .await;
    assert_invalid(res, "reason").await;
    let released = expect_json(
        app.post(
            &format!("/v1/leads/{id}/release"),
            owner_tok,
            &json!({"reason": "wrong country"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(released["owner_id"], Value::Null);
    assert_eq!(released["pool_id"], default_pool(&app).await);
    // The released owner's clock stopped: a pooled lead has none running.
    let sla = expect_json(
        app.get(&format!("/v1/leads/{id}/sla"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(sla["state"], Value::Null, "{sla}");
    assert_eq!(sla["steps"], json!([]), "{sla}");
    assert_eq!(sla["timers"], json!([]), "{sla}");
    let events = timeline_kinds(&app, id).await;
    assert!(
        events
            .iter()
            .any(|(k, d)| k == "released" && d["reason"] == "wrong country"),
        "{events:?}"
    );
    // The pool's list shows it again.
    let pool = default_pool(&app).await;
    let listed = expect_json(
        app.get(&format!("/v1/pools/{pool}/leads"), &a_tok).await,
        StatusCode::OK,
    )
    .await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == id)
    );
}

#[tokio::test]
async fn a_pools_claim_limit_holds() {
    let app = spawn_app().await;
    let pool = expect_json(
        app.post(
            "/v1/pools",
            &app.admin,
            &json!({"name": "Trade show", "max_claims_per_rep": 1}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let dup = app
        .post("/v1/pools", &app.admin, &json!({"name": "trade show"}))
        .await;
    assert_problem(dup, StatusCode::CONFLICT).await;
    let pid = pool["id"].as_str().unwrap();
    // Where the create said it is, for every role.
    let (_, reader) = app.rep("reader", None).await;
    let res = app.get(&format!("/v1/pools/{pid}"), &reader).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    assert_eq!(expect_json(res, StatusCode::OK).await, pool);
    assert_problem(
        app.get("/v1/pools/01900000-0000-7000-8000-000000000000", &reader)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let l = app
            .create_lead(
                &app.admin,
                json!({"email": format!("t{i}@example.com"), "pool_id": pid}),
            )
            .await;
        assert_eq!(l["pool_id"], pid);
        ids.push(l["id"].as_str().unwrap().to_owned());
    }
    let (_, tok) = app.rep("claimer", None).await;
    expect_json(
        app.post(&format!("/v1/leads/{}/claim", ids[0]), &tok, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    let res = app
        .post(&format!("/v1/leads/{}/claim", ids[1]), &tok, &json!({}))
        .await;
    let p = assert_problem(res, StatusCode::CONFLICT).await;
    assert!(p["detail"].as_str().unwrap().contains("limit"), "{p}");
}

/// A server on a manual clock with two reps (a first, b second by id) and a manager.
async fn floor(clock: Arc<ManualClock>) -> (TestApp, [(String, String); 3]) {
    let app = spawn_app_with_clock(clock, |_| {}).await;
    let (m, m_tok) = user(
        &app,
        json!({"name": "boss", "role": "manager", "team": "East", "capacity": 0}),
    )
    .await;
    let (a, a_tok) = user(
        &app,
        json!({"name": "ana", "role": "rep", "team": "East", "manager_id": m}),
    )
    .await;
    let (b, b_tok) = user(
        &app,
        json!({"name": "bo", "role": "rep", "team": "East", "manager_id": m}),
    )
    .await;
    (app, [(a, a_tok), (b, b_tok), (m, m_tok)])
}

#[tokio::test]
async fn the_sla_chain_reminds_escalates_and_reclaims_unless_touched() {
    let clock = Arc::new(ManualClock::new(START));
    let (app, [(a, a_tok), (b, _b_tok), (_m, m_tok)]) = floor(clock.clone()).await;
    let touched = lead(&app, "touched@example.com").await;
    let ignored = lead(&app, "ignored@example.com").await;
    let (t_id, i_id) = (
        touched["id"].as_str().unwrap().to_owned(),
        ignored["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(touched["owner_id"], a);
    // Round robin gives the second to b; hand it to a so both start with a.
    expect_json(
        app.post(
            &format!("/v1/leads/{i_id}/assign"),
            &app.admin,
            &json!({"owner_id": a}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let got = notes(&app, &a_tok, "lead.assigned", &i_id, 1).await;
    assert_eq!(got.len(), 1);
    // The whole plan is shown; only its next step has a timer.
    let sla = settled(&app, &i_id).await;
    let steps = sla["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(names, ["remind", "escalate", "reclaim"], "{sla}");
    assert!(steps.iter().all(|s| s["taken"] == false), "{sla}");
    assert_eq!(
        sla["timers"],
        json!([{"kind": "sla.remind", "due_at": steps[0]["due_at"]}]),
        "{sla}"
    );

    clock.advance(HOUR);
    let t = expect_json(
        app.post(&format!("/v1/leads/{t_id}/touch"), &a_tok, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(t["first_touch_at"].is_string());
    assert_eq!(t["status"], "attempting");
    // Only the owner touches.
    let res = app
        .post(&format!("/v1/leads/{t_id}/touch"), &app.admin, &json!({}))
        .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;

    clock.advance(HOUR + 1_000); // 2 h
    assert_eq!(notes(&app, &a_tok, "sla.reminder", &i_id, 1).await.len(), 1);
    clock.advance(2 * HOUR); // 4 h
    assert_eq!(
        notes(&app, &m_tok, "sla.escalated", &i_id, 1).await.len(),
        1
    );
    let sla = settled(&app, &i_id).await;
    assert_eq!(sla["steps_taken"], json!(["remind", "escalate"]), "{sla}");
    assert_eq!(
        sla["timers"],
        json!([{"kind": "sla.reclaim", "due_at": sla["steps"][2]["due_at"]}]),
        "{sla}"
    );
    clock.advance(4 * HOUR); // 8 h
    let back = notes(&app, &a_tok, "lead.reclaimed", &i_id, 1).await;
    assert_eq!(back.len(), 1);
    // A notification cursor pages its own list only: with another `kind` it is a 422.
    let first = expect_json(
        app.get("/v1/notifications?limit=1", &a_tok).await,
        StatusCode::OK,
    )
    .await;
    let cursor = first["next_cursor"].as_str().expect("more than one");
    let next = expect_json(
        app.get(
            &format!("/v1/notifications?limit=2&cursor={cursor}"),
            &a_tok,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_ne!(next["items"][0]["id"], first["items"][0]["id"]);
    assert_invalid(
        app.get(
            &format!("/v1/notifications?limit=1&kind=lead.assigned&cursor={cursor}"),
            &a_tok,
        )
        .await,
        "cursor",
    )
    .await;
    settled(&app, &i_id).await;
    let reassigned = get_lead(&app, &i_id).await;
    assert_eq!(reassigned["owner_id"], b, "reassigned to someone else");
    let kinds: Vec<String> = timeline_kinds(&app, &i_id)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for k in ["sla_breach", "sla_escalated", "reclaimed", "assigned"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }

    // The lead touched at 1 h had no breach, no escalation, no reclaim.
    settled(&app, &t_id).await;
    assert!(
        notes(&app, &a_tok, "sla.reminder", &t_id, 0)
            .await
            .is_empty()
    );
    assert!(
        notes(&app, &m_tok, "sla.escalated", &t_id, 0)
            .await
            .is_empty()
    );
    assert_eq!(get_lead(&app, &t_id).await["owner_id"], a);
}

#[tokio::test]
async fn no_follow_up_for_three_days_sends_the_lead_back_to_the_pool() {
    let clock = Arc::new(ManualClock::new(START));
    let (app, [(a, a_tok), _, _]) = floor(clock.clone()).await;
    let l = lead(&app, "slow@example.com").await;
    let id = l["id"].as_str().unwrap().to_owned();
    assert_eq!(l["owner_id"], a);
    // A call by the owner is a touch too.
    app.add_activity(
        &a_tok,
        json!({"lead_id": id, "kind": "call", "text": "left a message"}),
    )
    .await;
    let sla = settled(&app, &id).await;
    assert!(sla["first_touch_at"].is_string(), "{sla}");
    clock.advance(2 * 24 * HOUR);
    expect_json(
        app.post(&format!("/v1/leads/{id}/touch"), &a_tok, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    // Three days after the last touch, not the first.
    clock.advance(2 * 24 * HOUR);
    settled(&app, &id).await;
    assert_eq!(get_lead(&app, &id).await["owner_id"], a);
    clock.advance(24 * HOUR + 1_000);
    assert_eq!(notes(&app, &a_tok, "lead.reclaimed", &id, 1).await.len(), 1);
    settled(&app, &id).await;
    let back = get_lead(&app, &id).await;
    assert_eq!(back["owner_id"], Value::Null);
    assert_eq!(back["pool_id"], default_pool(&app).await);
}

#[tokio::test]
async fn business_hours_stretch_the_first_touch_deadline_over_the_weekend() {
    // Friday 2026-11-27 17:30 in Shanghai.
    let friday = leadline::domain::time::parse_rfc3339("2026-11-27T09:30:00Z").unwrap();
    let clock = Arc::new(ManualClock::new(friday));
    let app = spawn_app_with_clock(clock, |c| {
        c.sla.business_hours.insert(
            "East".into(),
            leadline::config::BusinessHoursConfig {
                days: ["mon", "tue", "wed", "thu", "fri"]
                    .map(String::from)
                    .to_vec(),
                open: "09:00".into(),
                close: "18:00".into(),
                timezone: "Asia/Shanghai".into(),
                holidays: Vec::new(),
            },
        );
    })
    .await;
    user(&app, json!({"name": "ana", "role": "rep", "team": "East"})).await;
    let l = lead(&app, "weekend@example.com").await;
    let sla = expect_json(
        app.get(
            &format!("/v1/leads/{}/sla", l["id"].as_str().unwrap()),
            &app.admin,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    // Monday 10:30 in Shanghai.
    assert_eq!(sla["first_touch_due"], "2026-11-30T02:30:00.000Z", "{sla}");
    assert_eq!(l["next_follow_up_at"], "2026-11-30T02:30:00.000Z");
}

#[tokio::test]
async fn reaching_sql_hands_a_strategic_lead_to_the_seniors() {
    let app = spawn_app().await;
    let (junior, _) = app.rep("junior", None).await;
    let l = lead(&app, "rising@example.com").await;
    assert_eq!(l["owner_id"], junior);
    let (senior, _) = user(
        &app,
        json!({"name": "senior", "role": "rep", "senior": true}),
    )
    .await;
    let id = l["id"].as_str().unwrap();
    app.add_activity(&app.admin, json!({"lead_id": id, "kind": "demo_request"}))
        .await;
    // One edit carries the score from below SQL to strategic.
    let patched = expect_json(
        app.patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"title": "CEO", "company_size": 200, "industry": "manufacturing", "channel": "referral"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert!(
        patched["score"]["total"].as_i64().unwrap() >= 80,
        "{patched}"
    );
    assert_eq!(patched["stage"], "sql");
    assert_eq!(patched["owner_id"], senior);
}

#[tokio::test]
async fn an_owner_without_an_sla_does_not_inherit_the_last_owners_clock() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |c| {
        std::fs::create_dir_all(&c.plugins_dir).expect("plugins dir");
        // Leads tagged "self-serve" have no SLA once they are with the self-serve desk.
        std::fs::write(
            c.plugins_dir.join("sla.rhai"),
            r#"fn sla(lead) { if lead.has_tag("self-serve") { false } else { () } }"#,
        )
        .expect("write plugin");
    })
    .await;
    let (a, _) = user(&app, json!({"name": "ana", "role": "rep"})).await;
    let (b, b_tok) = user(&app, json!({"name": "bo", "role": "rep"})).await;
    let l = app
        .create_lead(
            &app.admin,
            json!({"email": "desk@example.com", "owner_id": a}),
        )
        .await;
    let id = l["id"].as_str().unwrap().to_owned();
    let sla = settled(&app, &id).await;
    assert_eq!(sla["owner_id"], a, "{sla}");
    assert_eq!(sla["timers"].as_array().unwrap().len(), 1, "{sla}");

    expect_json(
        app.patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"tags": ["self-serve"]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_json(
        app.post(
            &format!("/v1/leads/{id}/assign"),
            &app.admin,
            &json!({"owner_id": b}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let sla = settled(&app, &id).await;
    assert_eq!(sla["owner_id"], Value::Null, "no clock: {sla}");
    assert_eq!(sla["timers"], json!([]), "{sla}");
    assert_eq!(get_lead(&app, &id).await["next_follow_up_at"], Value::Null);

    // b's touch is a touch, judged against no deadline, and nothing fires later.
    let t = expect_json(
        app.post(&format!("/v1/leads/{id}/touch"), &b_tok, &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(t["first_touch_at"].is_string());
    let touched = timeline_kinds(&app, &id)
        .await
        .into_iter()
        .find(|(k, _)| k == "touched")
        .expect("a touched event");
    assert_eq!(touched.1["sla_met"], Value::Null, "{touched:?}");
    clock.advance(10 * 24 * HOUR);
    settled(&app, &id).await;
    assert_eq!(get_lead(&app, &id).await["owner_id"], b);
}
