//! Webhooks over HTTP against a real receiver on localhost: signed deliveries, a receiver that
//! is down and then up (every event delivered, in order per lead), dead-lettering after a day
//! of failures and replay, SSRF refusals, and the subscription endpoints' errors.

use crate::helpers::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use hmac::{Hmac, Mac};
use leadline::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Monday 2026-11-23 08:00 UTC.
const START: i64 = 1_795_420_800_000;
const HOUR: i64 = 3_600_000;
const SECRET: &str = "s3cret-0123456789abcdef";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub delivery: String,
    pub event: String,
    pub signature: String,
    pub body: Vec<u8>,
    pub json: Value,
}

#[derive(Clone)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Got>>>,
    status: Arc<AtomicU16>,
}

/// A webhook receiver on localhost that records every request and answers `status`.
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.got.lock().unwrap().push(Got {
        delivery: h("x-leadline-delivery"),
        event: h("x-leadline-event"),
        signature: h("x-leadline-signature"),
        body: body.to_vec(),
        json,
    });
    AxumStatus::from_u16(s.status.load(Ordering::SeqCst)).unwrap_or(AxumStatus::OK)
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    pub async fn on(listener: tokio::net::TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let state = ReceiverState {
            got: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
        };
        let (got, status) = (state.got.clone(), state.status.clone());
        let app = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            got,
            status,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn webhook(app: &TestApp, body: Value) -> Value {
    expect_json(
        app.post("/v1/webhooks", &app.admin, &body).await,
        StatusCode::CREATED,
    )
    .await
}

/// Every delivery of a webhook (all pages), newest first.
async fn deliveries(app: &TestApp, hook: &str, status: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/webhooks/{hook}/deliveries?limit=500");
        if let Some(s) = status {
            path.push_str(&format!("&status={s}"));
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = expect_json(app.get(&path, &app.admin).await, StatusCode::OK).await;
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Waits (10 s at most) until `check` holds of the webhook's deliveries; returns them.
async fn until(
    app: &TestApp,
    hook: &str,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = deliveries(app, hook, None).await;
        if check(&all) {
            return all;
        }
        assert!(Instant::now() < deadline, "{what}: {all:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn clock_app(clock: &Arc<ManualClock>) -> TestApp {
    spawn_app_with_clock(clock.clone(), |c| {
        c.webhooks.allow_private_destinations = true;
    })
    .await
}

#[tokio::test]
async fn deliveries_are_signed_and_name_their_event_and_delivery() {
    let clock = Arc::new(ManualClock::new(START));
    let app = clock_app(&clock).await;
    let rx = Receiver::start().await;
    let hook = webhook(
        &app,
        json!({"url": rx.url(), "events": ["lead.*"], "secret": SECRET}),
    )
    .await;
    assert_eq!(hook["secret"], SECRET);
    assert_eq!(hook["active"], true);
    let id = hook["id"].as_str().unwrap();
    // The secret is shown once, on create.
    let shown = expect_json(
        app.get(&format!("/v1/webhooks/{id}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert!(shown.get("secret").is_none(), "{shown}");
    let listed = expect_json(app.get("/v1/webhooks", &app.admin).await, StatusCode::OK).await;
    assert!(listed["items"][0].get("secret").is_none());

    let lead = app
        .create_lead(
            &app.admin,
            json!({"email": "signed@example.com", "name": "王总"}),
        )
        .await;
    let lead_id = lead["id"].as_str().unwrap();
    let all = until(&app, id, "the lead.created delivery", |d| {
        d.iter()
            .any(|d| d["event"] == "lead.created" && d["status"] == "delivered")
    })
    .await;
    let d = all.iter().find(|d| d["event"] == "lead.created").unwrap();
    assert_fields(
        d,
        json!({"attempts": 1, "last_status_code": 200, "last_error": null, "entity": "lead",
               "entity_id": lead_id, "lead_id": lead_id, "next_attempt_at": null}),
    );
    assert!(d["delivered_at"].is_string());
    // Only lead.* events: the capture's activity.created is not for this webhook.
    assert!(
        all.iter()
            .all(|d| d["event"].as_str().unwrap().starts_with("lead.")),
        "{all:#?}"
    );

    let got = rx.got();
    let g = got
        .iter()
        .find(|g| g.delivery == d["id"].as_str().unwrap())
        .expect("the receiver got it");
    assert_eq!(g.signature, hmac_hex(SECRET, &g.body));
    assert_ne!(g.signature, hmac_hex("another-secret-0123456", &g.body));
    assert_eq!(g.event, "lead.created");
    assert_fields(
        &g.json,
        json!({"delivery_id": d["id"], "event": "lead.created", "entity": "lead", "id": lead_id,
               "lead_id": lead_id, "seq": d["seq"], "data.op": "create"}),
    );
    assert!(
        g.json["at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-23T08:00:00")
    );
    // No personal data in the payload.
    let text = String::from_utf8_lossy(&g.body);
    assert!(
        !text.contains("signed@example.com") && !text.contains("王总"),
        "{text}"
    );

    // A generated secret when none is given; it signs too.
    let other = webhook(
        &app,
        json!({"url": rx.url(), "events": ["activity.created"]}),
    )
    .await;
    let secret = other["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 30,
        "{secret}"
    );
    app.post(
        &format!("/v1/leads/{lead_id}/activities"),
        &app.admin,
        &json!({"kind": "note", "text": "called"}),
    )
    .await;
    let oid = other["id"].as_str().unwrap();
    until(&app, oid, "the activity delivery", |d| {
        d.iter().any(|d| d["status"] == "delivered")
    })
    .await;
    let got = rx.got();
    let g = got.iter().find(|g| g.event == "activity.created").unwrap();
    assert_eq!(g.signature, hmac_hex(&secret, &g.body));
}

/// For each lead, the seqs of its deliveries in the order the receiver first got them.
fn first_arrivals(got: &[Got]) -> BTreeMap<String, Vec<u64>> {
    let mut seen = HashSet::new();
    let mut per_lead: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for g in got {
        if !seen.insert(g.delivery.clone()) {
            continue;
        }
        if let Some(l) = g.json["lead_id"].as_str() {
            per_lead
                .entry(l.to_owned())
                .or_default()
                .push(g.json["seq"].as_u64().unwrap());
        }
    }
    per_lead
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_every_event_in_order_per_lead_once_it_is_up() {
    let clock = Arc::new(ManualClock::new(START));
    let app = clock_app(&clock).await;
    // A port with nothing listening yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let hook = webhook(
        &app,
        json!({"url": format!("http://{addr}/hook"), "events": ["*"], "secret": SECRET}),
    )
    .await;
    let id = hook["id"].as_str().unwrap().to_owned();
    let mut leads = Vec::new();
    for i in 0..4 {
        let l = app
            .create_lead(&app.admin, json!({"email": format!("down{i}@example.com")}))
            .await;
        let lid = l["id"].as_str().unwrap().to_owned();
        for n in 0..2 {
            let res = app
                .patch(
                    &format!("/v1/leads/{lid}"),
                    &app.admin,
                    &json!({"company": format!("Co {n}")}),
                )
                .await;
            assert_eq!(res.status(), StatusCode::OK);
        }
        leads.push(lid);
    }
    // Each lead's first delivery is tried and fails; the rest wait behind it.
    let all = until(&app, &id, "first attempts fail", |d| {
        let heads: Vec<&Value> = d.iter().filter(|d| d["attempts"] == 1).collect();
        heads.len() >= leads.len()
            && heads
                .iter()
                .all(|d| d["last_error"].is_string() && d["status"] == "pending")
    })
    .await;
    let per_lead_pending = |lead: &str| all.iter().filter(|d| d["lead_id"] == lead).count();
    for l in &leads {
        assert!(per_lead_pending(l) >= 4, "lead {l}: {all:#?}");
        let waiting: Vec<&Value> = all
            .iter()
            .filter(|d| d["lead_id"] == l.as_str() && d["attempts"] == 0)
            .collect();
        assert!(
            waiting.iter().all(|d| d["next_attempt_at"].is_null()),
            "{waiting:#?}"
        );
    }
    // Ten seconds later they are due again; still down: the second failure.
    clock.advance(10_000);
    until(&app, &id, "second attempts fail", |d| {
        d.iter().filter(|d| d["attempts"] == 2).count() >= leads.len()
    })
    .await;
    // Up again; the next retry (20 s later) goes through and the chains drain.
    let rx = Receiver::on(tokio::net::TcpListener::bind(addr).await.unwrap()).await;
    clock.advance(20_000);
    let all = until(&app, &id, "everything delivered", |d| {
        d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    let got = rx.got();
    let received: HashSet<&str> = got.iter().map(|g| g.delivery.as_str()).collect();
    for d in &all {
        assert!(
            received.contains(d["id"].as_str().unwrap()),
            "never received: {d}"
        );
    }
    for (lead, seqs) in first_arrivals(&got) {
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(seqs, sorted, "lead {lead}: out of order");
    }
    for g in &got {
        assert_eq!(g.signature, hmac_hex(SECRET, &g.body));
    }
}

#[tokio::test]
async fn failing_deliveries_are_dead_after_a_day_and_can_be_replayed() {
    let clock = Arc::new(ManualClock::new(START));
    let app = clock_app(&clock).await;
    let rx = Receiver::start().await;
    rx.answer(500);
    let hook = webhook(
        &app,
        json!({"url": rx.url(), "events": ["lead.created"], "secret": SECRET}),
    )
    .await;
    let id = hook["id"].as_str().unwrap().to_owned();
    app.create_lead(&app.admin, json!({"email": "dead@example.com"}))
        .await;
    let all = until(&app, &id, "the first attempt", |d| {
        d.len() == 1 && d[0]["attempts"] == 1
    })
    .await;
    assert_fields(
        &all[0],
        json!({"status": "pending", "last_status_code": 500, "last_error": "HTTP 500"}),
    );
    assert!(
        all[0]["next_attempt_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-23T08:00:10")
    );
    let delivery = all[0]["id"].as_str().unwrap().to_owned();
    // An hour at a time: one attempt per step, until a day has passed since the first.
    let mut attempts = 1;
    for step in 1..=24 {
        clock.advance(HOUR);
        let d = until(&app, &id, &format!("attempt after {step} h"), |d| {
            d[0]["attempts"].as_u64().unwrap() > attempts
        })
        .await;
        attempts = d[0]["attempts"].as_u64().unwrap();
        let want = if step < 24 { "pending" } else { "dead" };
        assert_eq!(d[0]["status"], want, "after {step} h: {}", d[0]);
    }
    let dead = deliveries(&app, &id, Some("dead")).await;
    assert_eq!(dead.len(), 1);
    assert_fields(
        &dead[0],
        json!({"next_attempt_at": null, "last_status_code": 500}),
    );
    assert!(deliveries(&app, &id, Some("pending")).await.is_empty());
    // Nothing more is tried.
    let tried = rx.got().len();
    clock.advance(10 * HOUR);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.got().len(), tried);

    // Replay once the receiver is fixed: the same delivery id arrives, and is delivered.
    rx.answer(200);
    let res = app
        .post(
            &format!("/v1/webhooks/{id}/deliveries/{delivery}/replay"),
            &app.admin,
            &json!({}),
        )
        .await;
    let replayed = expect_json(res, StatusCode::ACCEPTED).await;
    assert_fields(
        &replayed,
        json!({"status": "pending", "attempts": 0, "replays": 1}),
    );
    until(&app, &id, "the replay", |d| d[0]["status"] == "delivered").await;
    assert_eq!(rx.got().last().unwrap().delivery, delivery);
    // A delivered one can be replayed too.
    let res = app
        .post(
            &format!("/v1/webhooks/{id}/deliveries/{delivery}/replay"),
            &app.admin,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    until(&app, &id, "the second replay", |d| {
        d[0]["status"] == "delivered" && d[0]["replays"] == 2
    })
    .await;
    let copies = rx.got().iter().filter(|g| g.delivery == delivery).count();
    assert_eq!(copies, tried + 2, "every failed attempt and both replays");
    let one = app
        .get(
            &format!("/v1/webhooks/{id}/deliveries/{delivery}"),
            &app.admin,
        )
        .await;
    assert!(one.headers().contains_key("etag"), "a delivery has an ETag");
    let one = expect_json(one, StatusCode::OK).await;
    assert_eq!(one["status"], "delivered");
    let res = app
        .post(
            &format!(
                "/v1/webhooks/{id}/deliveries/{}/replay",
                uuid::Uuid::now_v7()
            ),
            &app.admin,
            &json!({}),
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_paused_webhook_gets_nothing_until_it_is_resumed() {
    let clock = Arc::new(ManualClock::new(START));
    let app = clock_app(&clock).await;
    let rx = Receiver::start().await;
    let hook = webhook(&app, json!({"url": rx.url(), "events": ["lead.created"]})).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    let res = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            &app.admin,
            &json!({"active": false}),
        )
        .await;
    let paused = expect_json(res, StatusCode::OK).await;
    assert_fields(&paused, json!({"active": false, "version": 2}));
    app.create_lead(&app.admin, json!({"email": "paused@example.com"}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.got().is_empty());
    // A paused webhook subscribes to nothing: no delivery was even written.
    assert!(deliveries(&app, &id, None).await.is_empty());
    let res = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            &app.admin,
            &json!({"active": true}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    app.create_lead(&app.admin, json!({"email": "resumed@example.com"}))
        .await;
    until(&app, &id, "delivered after resuming", |d| {
        d.len() == 1 && d[0]["status"] == "delivered"
    })
    .await;
    // Stale If-Match; then delete.
    let res = app
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{id}"),
            &app.admin,
        )
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
    let res = app.delete(&format!("/v1/webhooks/{id}"), &app.admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .get(&format!("/v1/webhooks/{id}/deliveries"), &app.admin)
        .await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn private_destinations_are_refused_without_the_setting() {
    let app = spawn_app().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        "http://10.0.0.1/".to_owned(),
        "http://[::1]/".to_owned(),
        "http://192.168.1.20:8080/x".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://[fd00::1]/".to_owned(),
        format!("http://localhost:{port}/"),
    ] {
        let res = app
            .post(
                "/v1/webhooks",
                &app.admin,
                &json!({"url": url, "events": ["*"]}),
            )
            .await;
        let p = assert_invalid(res, "url").await;
        assert!(
            p["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("allow_private_destinations")
                || p["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("this machine"),
            "{url}: {p}"
        );
    }
    // A paused webhook to a public address (never contacted), then moved to a private one.
    let hook = expect_json(
        app.post(
            "/v1/webhooks",
            &app.admin,
            &json!({"url": "http://93.184.216.34/hook", "events": ["lead.created"], "active": false}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = hook["id"].as_str().unwrap();
    let res = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            &app.admin,
            &json!({"url": "http://10.1.2.3/"}),
        )
        .await;
    assert_invalid(res, "url").await;
}

#[tokio::test]
async fn subscription_input_is_checked_and_admins_only() {
    let app = spawn_app().await;
    let url = "http://93.184.216.34/hook";
    let post = |body: Value| {
        let app = &app;
        async move { app.post("/v1/webhooks", &app.admin, &body).await }
    };
    assert_invalid(
        post(json!({"url": url, "events": ["lead.create"], "active": false})).await,
        "events[0]",
    )
    .await;
    assert_invalid(
        post(json!({"url": url, "events": ["lead.created", "nope.*"], "active": false})).await,
        "events[1]",
    )
    .await;
    assert_invalid(
        post(json!({"url": url, "events": [], "active": false})).await,
        "events",
    )
    .await;
    assert_invalid(
        post(json!({"url": "ftp://x.example/", "events": ["*"], "active": false})).await,
        "url",
    )
    .await;
    assert_invalid(
        post(json!({"url": url, "events": ["*"], "secret": "short", "active": false})).await,
        "secret",
    )
    .await;
    assert_invalid(
        post(json!({"url": url, "events": ["*"], "active": false, "colour": "red"})).await,
        "colour",
    )
    .await;
    assert_invalid(post(json!({"events": ["*"]})).await, "url").await;
    let ok = expect_json(
        post(json!({"url": url, "events": ["*", "lead.*", "sla.escalated", "task.due"], "active": false})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = ok["id"].as_str().unwrap();
    let res = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            &app.admin,
            &json!({"events": ["lead.exploded"]}),
        )
        .await;
    assert_invalid(res, "events[0]").await;
    let (_, rep) = app.rep("hook-rep", None).await;
    assert_problem(app.get("/v1/webhooks", &rep).await, StatusCode::FORBIDDEN).await;
    let res = app
        .post(
            "/v1/webhooks",
            &rep,
            &json!({"url": url, "events": ["*"], "active": false}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    assert_problem(
        app.get(&format!("/v1/webhooks/{id}/deliveries"), &rep)
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let res = app
        .get(
            &format!("/v1/webhooks/{id}/deliveries?status=lost"),
            &app.admin,
        )
        .await;
    assert_invalid(res, "status").await;
    let res = app
        .get(
            &format!("/v1/webhooks/{}", uuid::Uuid::now_v7()),
            &app.admin,
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
}
