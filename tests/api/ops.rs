//! Operational endpoints, the OpenAPI document, routing errors, the change feed, and the shape
//! every client error takes.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("json body")
}

/// Every route the server serves, as (path, method).
const ROUTES: &[(&str, &str)] = &[
    ("/v1/leads", "get"),
    ("/v1/leads", "post"),
    ("/v1/leads/batch", "post"),
    ("/v1/leads/{id}", "get"),
    ("/v1/leads/{id}", "patch"),
    ("/v1/leads/{id}", "delete"),
    ("/v1/leads/{id}/export", "get"),
    ("/v1/leads/{id}/activities", "get"),
    ("/v1/leads/{id}/activities", "post"),
    ("/v1/leads/{id}/timeline", "get"),
    ("/v1/activities", "post"),
    ("/v1/users", "get"),
    ("/v1/users", "post"),
    ("/v1/users/{id}", "get"),
    ("/v1/users/{id}", "patch"),
    ("/v1/users/{id}", "delete"),
    ("/v1/users/{id}/tokens", "post"),
    ("/v1/me", "get"),
    ("/v1/auth/login", "post"),
    ("/v1/auth/logout", "post"),
    ("/v1/changes", "get"),
    ("/v1/pools", "get"),
    ("/v1/pools", "post"),
    ("/v1/pools/{id}", "get"),
    ("/v1/pools/{id}/leads", "get"),
    ("/v1/leads/{id}/assign", "post"),
    ("/v1/leads/{id}/claim", "post"),
    ("/v1/leads/{id}/release", "post"),
    ("/v1/leads/{id}/touch", "post"),
    ("/v1/leads/{id}/sla", "get"),
    ("/v1/notifications", "get"),
    ("/v1/notifications/{id}/read", "post"),
    ("/v1/admin/clock", "get"),
    ("/v1/admin/clock", "post"),
    ("/v1/tasks", "get"),
    ("/v1/tasks", "post"),
    ("/v1/tasks/{id}", "get"),
    ("/v1/tasks/{id}", "patch"),
    ("/v1/tasks/{id}", "delete"),
    ("/v1/reports/speed-to-lead", "get"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
];

#[tokio::test]
async fn healthz_and_readyz_need_no_token() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["status"], "ok");

    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ready = body(res).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["storage"], "ok");
    assert_eq!(ready["leads"], 0);
    let seq0 = ready["changelog_seq"].as_u64().expect("changelog_seq");

    // Once a write is answered, readiness reports its change as durable (no lag).
    for n in 1..=5u64 {
        app.create_lead(&app.admin, json!({"email": format!("r{n}@acme.com")}))
            .await;
        let ready = body(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
        assert_eq!(ready["leads"], n);
        // the lead and its capture activity
        assert_eq!(ready["changelog_seq"].as_u64().unwrap(), seq0 + 2 * n);
    }
    let feed = body(app.get("/v1/changes?limit=500", &app.admin).await).await;
    assert_eq!(feed["next"].as_u64().unwrap(), seq0 + 10);
}

/// The value of the sample `line_start` (metric name with its labels) in a Prometheus text.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_are_served_for_prometheus_without_a_token() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(&app.admin, json!({"email": "m@acme.com"}))
        .await;
    let id = lead["id"].as_str().unwrap();
    let res = app.get(&format!("/v1/leads/{id}"), &app.admin).await;
    assert_eq!(res.status(), StatusCode::OK);

    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = res.text().await.unwrap();
    // This server's state.
    assert_eq!(sample(&text, "leadline_leads "), Some(1.0), "{text}");
    let ready = body(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    let seq = ready["changelog_seq"].as_f64().unwrap();
    assert_eq!(sample(&text, "leadline_changelog_seq "), Some(seq));
    assert_eq!(sample(&text, "leadline_writer_up "), Some(1.0));
    // Requests by route template, never by id (the suite's servers share these counters).
    let by_route =
        "leadline_http_requests_total{method=\"GET\",route=\"/v1/leads/{id}\",status=\"200\"}";
    assert!(sample(&text, by_route).is_some_and(|n| n >= 1.0), "{text}");
    assert!(!text.contains(id), "a lead id became a label");
    assert!(text.contains("leadline_http_request_duration_seconds_bucket"));
    assert!(
        sample(&text, "leadline_write_batches_total{outcome=\"committed\"}")
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[tokio::test]
async fn the_test_clock_moves_forward_within_reason_only() {
    let start = 1_795_420_800_000; // 2026-11-23T08:00:00Z
    let clock = std::sync::Arc::new(leadline::clock::ManualClock::new(start));
    let app = spawn_app_with_clock(clock, |_| {}).await;
    let post = async |body: Value| app.post("/v1/admin/clock", &app.admin, &body).await;
    for (body, field) in [
        (
            json!({"advance_seconds": 99_999_999_999_999i64}),
            "advance_seconds",
        ),
        (json!({"advance_seconds": -5}), "advance_seconds"),
        (json!({"set": "2020-01-01T00:00:00Z"}), "set"),
        (json!({"set": "9000-01-01T00:00:00Z"}), "set"),
        (json!({}), "advance_seconds"),
    ] {
        assert_invalid(post(body).await, field).await;
    }
    let moved = expect_json(post(json!({"advance_seconds": 60})).await, StatusCode::OK).await;
    assert_eq!(moved["now"], "2026-11-23T08:01:00.000Z");
    let set = json!({"set": "2027-01-01T00:00:00Z"});
    let moved = expect_json(post(set).await, StatusCode::OK).await;
    assert_eq!(moved["now"], "2027-01-01T00:00:00.000Z");
    // On a test server the clock is an admin's tool: others get 403, not a missing route.
    let (_, manager) = app
        .create_user(json!({"name": "m", "role": "manager"}))
        .await;
    let res = app.get("/v1/admin/clock", &manager).await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = app
        .post("/v1/admin/clock", &manager, &json!({"advance_seconds": 1}))
        .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let now = expect_json(app.get("/v1/admin/clock", &app.admin).await, StatusCode::OK).await;
    assert_eq!(now["now"], "2027-01-01T00:00:00.000Z");
}

#[tokio::test]
async fn openapi_is_3_1_and_lists_every_route() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1"), "openapi {version}");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in ROUTES {
        let op = paths
            .get(*path)
            .and_then(|p| p.get(*method))
            .unwrap_or_else(|| panic!("{method} {path} is not in /openapi.json"));
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} documents no responses"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn openapi_declares_problem_bodies_and_the_configured_page_size() {
    let app = spawn_app_with(|c| c.http.max_page_size = 200).await;
    let doc = app.openapi().await;
    let list = &doc["paths"]["/v1/leads"]["get"];
    let limit = list["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
        .expect("GET /v1/leads takes a limit");
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 200, "the configured page size");
    let search_limit = doc["paths"]["/v1/search"]["get"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
        .expect("search takes a limit");
    assert_eq!(search_limit["schema"]["maximum"], 100, "search's own bound");
    let unprocessable = &list["responses"]["422"]["content"];
    assert!(
        unprocessable["application/problem+json"].is_object()
            && unprocessable.get("application/json").is_none(),
        "a 422 is problem+json: {unprocessable}"
    );
    let stage = list["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "stage"))
        .expect("GET /v1/leads filters by stage");
    assert_eq!(stage["schema"]["$ref"], "#/components/schemas/Stage");
}

/// A well-formed body for an operation that takes one (`{}` where any will do), so the probe
/// reaches the handler rather than stopping at validation.
fn probe_body(method: &Method, path: &str) -> Value {
    match (method.as_str(), path) {
        ("POST", "/v1/pools") => json!({"name": "probe"}),
        ("POST", "/v1/leads/{id}/assign") => {
            json!({"pool_id": "01900000-0000-7000-8000-000000000000"})
        }
        ("POST", "/v1/leads/{id}/release") => json!({"reason": "probe"}),
        ("POST", "/v1/admin/clock") => json!({"advance_seconds": 60}),
        ("POST", "/v1/tasks") => json!({"title": "probe"}),
        ("PATCH", "/v1/tasks/{id}") => json!({"done": true}),
        _ => json!({}),
    }
}

/// Operations that exist only on a server started with `--test-clock`: elsewhere they answer
/// 404, as if they were not there.
const TEST_CLOCK_ONLY: &[&str] = &["/v1/admin/clock"];

/// The other direction: each documented operation is really routed (not 404 "route", not 405).
#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let (_, spare) = app
        .create_user(json!({"name": "prober", "role": "admin"}))
        .await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let Ok(m) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            if !["GET", "POST", "PATCH", "PUT", "DELETE"].contains(&m.as_str()) {
                continue;
            }
            let url = path.replace("{id}", "01900000-0000-7000-8000-000000000000");
            // logout revokes the token it carries: use one we can lose
            let token = if path == "/v1/auth/logout" {
                &spare
            } else {
                &app.admin
            };
            let mut req = app.req(m.clone(), &url, token);
            if m != Method::GET && m != Method::DELETE {
                req = req.json(&probe_body(&m, path));
            }
            let res = req.send().await.unwrap();
            let status = res.status();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
            assert!(!status.is_server_error(), "{m} {path} → {status}");
            let declared = &item[method.as_str()]["responses"];
            if !TEST_CLOCK_ONLY.contains(&path.as_str()) {
                assert!(
                    declared.get(status.as_str()).is_some(),
                    "{m} {path} answered {status}, which /openapi.json does not list"
                );
            }
            // A body of a type it does not take, and JSON that is not, get listed answers too.
            if item[method.as_str()].get("requestBody").is_some() {
                for (ct, body) in [("application/pdf", "%PDF"), ("application/json", "{nope")] {
                    let res = app
                        .req(m.clone(), &url, token)
                        .header("content-type", ct)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let status = res.status();
                    assert!(
                        declared.get(status.as_str()).is_some()
                            || TEST_CLOCK_ONLY.contains(&path.as_str()),
                        "{m} {path} with {ct} answered {status}, which /openapi.json does not list"
                    );
                }
            }
            if TEST_CLOCK_ONLY.contains(&path.as_str()) {
                assert_problem(res, StatusCode::NOT_FOUND).await;
            } else if status == StatusCode::NOT_FOUND {
                let p = body(res).await;
                assert_ne!(p["detail"], "route not found", "{m} {path} is not routed");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= ROUTES.len(),
        "only {checked} operations documented"
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let app = spawn_app().await;
    for path in ["/v1/nope", "/nope", "/v1/leads/x/y/z", "/v2/leads"] {
        let res = app.get(path, &app.admin).await;
        assert_problem(res, StatusCode::NOT_FOUND).await;
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
    for (m, path) in [
        (Method::PUT, "/v1/leads"),
        (Method::DELETE, "/v1/leads"),
        (
            Method::PUT,
            "/v1/leads/01900000-0000-7000-8000-000000000000",
        ),
        (Method::GET, "/v1/auth/login"),
        (Method::DELETE, "/v1/users"),
        (Method::POST, "/v1/me"),
        (Method::POST, "/healthz"),
        (Method::POST, "/v1/changes"),
    ] {
        let res = app.req(m.clone(), path, &app.admin).send().await.unwrap();
        let p = assert_problem(res, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(
            p["type"],
            "https://leadline.dev/problems/method-not-allowed"
        );
    }
    let all = body(app.get("/v1/leads", &app.admin).await).await;
    assert_eq!(all["items"], json!([]));
}

/// (seq, entity, op, id) of each change item.
fn changes_of(page: &Value) -> Vec<(u64, String, String, String)> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["seq"].as_u64().expect("seq"),
                i["entity"].as_str().expect("entity").to_owned(),
                i["op"].as_str().expect("op").to_owned(),
                i["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn changes_are_seq_ordered_and_page_without_gaps() {
    let app = spawn_app().await;
    let admin_id = body(app.get("/v1/me", &app.admin).await).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pools = body(app.get("/v1/pools", &app.admin).await).await;
    assert_eq!(pools["items"][0]["name"], "default");
    let default_pool = pools["items"][0]["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for n in 0..3 {
        let l = app
            .create_lead(&app.admin, json!({"email": format!("c{n}@acme.com")}))
            .await;
        ids.push(l["id"].as_str().unwrap().to_owned());
    }
    let res = app
        .patch(
            &format!("/v1/leads/{}", ids[0]),
            &app.admin,
            &json!({"title": "VP"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .post(
            &format!("/v1/leads/{}/activities", ids[1]),
            &app.admin,
            &json!({"kind": "note"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let activity = body(res).await["id"].as_str().unwrap().to_owned();
    let res = app
        .delete(&format!("/v1/leads/{}", ids[2]), &app.admin)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let res = app.get("/v1/changes", &app.admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    let all = body(res).await;
    let got = changes_of(&all);
    let s = |v: &str| v.to_owned();
    // With no rep to route them to, the leads wait in the default pool: no notifications.
    let want: Vec<(String, String, String)> = vec![
        // both made on the first start, before any lead needs them; the admin last, once
        // nothing else on the way up can fail (its token is shown only once)
        (s("pool"), s("create"), default_pool.clone()),
        (s("user"), s("create"), admin_id.clone()),
        (s("lead"), s("create"), ids[0].clone()),
        (s("lead"), s("create"), ids[1].clone()),
        (s("lead"), s("create"), ids[2].clone()),
        (s("lead"), s("update"), ids[0].clone()),
        (s("activity"), s("create"), activity.clone()),
        (s("lead"), s("update"), ids[1].clone()),
        (s("lead"), s("delete"), ids[2].clone()),
    ];
    // each create also recorded its capture activity, right after the lead
    let captures = got
        .iter()
        .filter(|(_, e, _, i)| e == "activity" && *i != activity)
        .count();
    assert_eq!(captures, 3);
    assert_eq!(
        got.iter()
            .filter(|(_, e, _, i)| e != "activity" || *i == activity)
            .map(|(_, e, o, i)| (e.clone(), o.clone(), i.clone()))
            .collect::<Vec<_>>(),
        want
    );
    let seqs: Vec<u64> = got.iter().map(|c| c.0).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<u64>>(), "consecutive seqs");
    assert_eq!(all["next"], 12);
    for item in all["items"].as_array().unwrap() {
        let at = item["at"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    }

    // paging with since=next continues exactly where the last page ended
    let mut paged = Vec::new();
    let mut since = 0;
    let mut pages = 0;
    loop {
        let page = body(
            app.get(&format!("/v1/changes?since={since}&limit=3"), &app.admin)
                .await,
        )
        .await;
        let items = changes_of(&page);
        let next = page["next"].as_u64().expect("next");
        if items.is_empty() {
            assert_eq!(next, since, "an empty page stays put");
            break;
        }
        assert!(items.len() <= 3);
        assert_eq!(next, items.last().unwrap().0);
        paged.extend(items);
        since = next;
        pages += 1;
        assert!(pages < 10);
    }
    assert_eq!(pages, 4);
    assert_eq!(paged, got);

    // a later change shows up after the last `next`
    app.create_lead(&app.admin, json!({"email": "late@acme.com"}))
        .await;
    let page = body(app.get("/v1/changes?since=12", &app.admin).await).await;
    let items = changes_of(&page);
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].0, 13);
    assert_eq!(page["next"], 14);

    // a rep's feed skips what they may not see but still moves `next` past it
    let (rep_id, rep) = app.rep("r", None).await;
    let (other_id, other) = app.rep("o", None).await;
    let mine = app
        .create_lead(&rep, json!({"email": "mine@acme.com"}))
        .await;
    let theirs = app
        .create_lead(&other, json!({"email": "theirs@acme.com"}))
        .await;
    let page = body(app.get("/v1/changes?since=0", &rep).await).await;
    let items = changes_of(&page);
    let seen: Vec<(String, String)> = items
        .iter()
        .map(|(_, e, _, i)| (e.clone(), i.clone()))
        .collect();
    assert!(
        seen.contains(&(s("pool"), default_pool.clone())),
        "{seen:?}"
    );
    for hidden in [
        (s("user"), admin_id.clone()),
        (s("user"), other_id.clone()),
        (s("lead"), theirs["id"].as_str().unwrap().to_owned()),
    ] {
        assert!(!seen.contains(&hidden), "{hidden:?} in {seen:?}");
    }
    // from the rep's own creation on: only the rep and their lead with its capture
    let start = seen
        .iter()
        .position(|c| *c == (s("user"), rep_id.clone()))
        .expect("the rep's own user row");
    assert_eq!(
        seen[start + 1],
        (s("lead"), mine["id"].as_str().unwrap().to_owned())
    );
    assert_eq!(
        seen[start + 2].0,
        "activity",
        "the capture of the rep's lead"
    );
    assert_eq!(seen.len(), start + 3, "{seen:?}");
    let admin_page = body(app.get("/v1/changes?since=0&limit=500", &app.admin).await).await;
    assert_eq!(page["next"], admin_page["next"]);
}

#[tokio::test]
async fn bad_change_parameters_are_422() {
    let app = spawn_app().await;
    for (query, field) in [
        ("since=abc", "since"),
        ("since=-1", "since"),
        ("since=1.5", "since"),
        ("since=99999999999999999999999", "since"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("after=1", "after"),
    ] {
        let res = app.get(&format!("/v1/changes?{query}"), &app.admin).await;
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&p), field, "{query}");
    }
    // At the newest change: nothing yet, and `next` stays. Past it: a 422, since following
    // it would skip every change up to it.
    let head = body(app.get("/v1/changes?since=0&limit=500", &app.admin).await).await["next"]
        .as_u64()
        .unwrap();
    let page = body(
        app.get(&format!("/v1/changes?since={head}"), &app.admin)
            .await,
    )
    .await;
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["next"], head);
    let res = app
        .get(&format!("/v1/changes?since={}", head + 1), &app.admin)
        .await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "since");
}

/// Each kind of client error, on a handful of routes, is an RFC 9457 problem.
#[tokio::test]
async fn every_client_error_is_problem_json() {
    let app = spawn_app_with(|c| c.http.max_body_bytes = 4096).await;
    let (_, rep) = app.rep("r", None).await;
    let (other, _) = app.rep("o", None).await;
    // another rep's lead, which `rep` may not see
    let lead = app
        .create_lead(
            &app.admin,
            json!({"email": "e@acme.com", "owner_id": other}),
        )
        .await;
    let lead_path = format!("/v1/leads/{}", lead["id"].as_str().unwrap());
    let big = json!({"email": "big@acme.com", "company": "x".repeat(8000)}).to_string();

    let cases: Vec<(StatusCode, &str, reqwest::RequestBuilder)> = vec![
        (
            StatusCode::BAD_REQUEST,
            "malformed",
            app.req(Method::POST, "/v1/leads", &app.admin)
                .header("content-type", "application/json")
                .body("{\"email\": "),
        ),
        (
            StatusCode::BAD_REQUEST,
            "malformed",
            app.req(Method::POST, "/v1/users", &app.admin)
                .header("content-type", "application/json")
                .body("not json"),
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            app.client.get(app.url("/v1/leads")),
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            app.client
                .post(app.url("/v1/auth/login"))
                .json(&json!({"email": "x@acme.com", "password": "nope nope"})),
        ),
        (
            StatusCode::FORBIDDEN,
            "forbidden",
            app.req(Method::POST, "/v1/users", &rep)
                .json(&json!({"name": "x", "role": "rep"})),
        ),
        (
            StatusCode::NOT_FOUND,
            "not-found",
            app.req(Method::GET, &lead_path, &rep),
        ),
        (
            StatusCode::NOT_FOUND,
            "not-found",
            app.req(Method::GET, "/v1/unknown", &app.admin),
        ),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            app.req(Method::PUT, &lead_path, &app.admin),
        ),
        (
            StatusCode::CONFLICT,
            "conflict",
            app.req(Method::POST, "/v1/users", &app.admin)
                .json(&json!({"name": "r", "role": "rep"})),
        ),
        (
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            app.req(Method::PATCH, &lead_path, &app.admin)
                .header("if-match", "\"99\"")
                .json(&json!({"title": "x"})),
        ),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            app.req(Method::POST, "/v1/leads", &app.admin)
                .header("content-type", "application/json")
                .body(big),
        ),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            app.req(Method::POST, "/v1/leads", &app.admin)
                .header("content-type", "text/plain")
                .body("email=x@acme.com"),
        ),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            app.req(Method::POST, "/v1/activities", &app.admin)
                .body("{}"),
        ),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            app.req(Method::POST, "/v1/leads", &app.admin)
                .json(&json!({"email": "not an email"})),
        ),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            app.req(Method::GET, "/v1/leads?limit=0", &app.admin),
        ),
    ];
    for (status, slug, req) in cases {
        let req = req.build().unwrap();
        let what = format!("{} {}", req.method(), req.url().path());
        let res = app.client.execute(req).await.unwrap();
        assert_eq!(res.status(), status, "{what}");
        let p = assert_problem(res, status).await;
        assert_eq!(
            p["type"],
            format!("https://leadline.dev/problems/{slug}"),
            "{what}"
        );
        assert_eq!(
            p["title"],
            status.canonical_reason().unwrap(),
            "{what}: title is the status's reason phrase"
        );
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{what}");
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            assert!(!first_field(&p).is_empty(), "{what}: 422 names a field");
        }
    }
    // none of the failed writes wrote anything
    let all = body(app.get("/v1/leads", &app.admin).await).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_problem_and_nothing_is_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.http.request_timeout_secs = 1).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // Announce a body, send half of it, then stall: the server must not wait forever.
    let head = format!(
        "POST /v1/leads HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":",
        app.admin
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never answered a stalled request");
    let text = String::from_utf8_lossy(&response);
    // The client stalled, not the server: a 4xx, not the request timeout's 503.
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(text.contains("did not arrive"), "{text}");
    let list = expect_json(app.get("/v1/leads", &app.admin).await, StatusCode::OK).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn a_write_that_outlasts_the_request_timeout_says_it_may_still_complete() {
    // A score hook that spends its whole 50 ms budget on every lead: 40 leads hold the writer
    // for 2 s, past the 1 s request timeout.
    let app = spawn_app_with(|c| {
        c.http.request_timeout_secs = 1;
        std::fs::create_dir_all(&c.plugins_dir).expect("plugins dir");
        std::fs::write(
            c.plugins_dir.join("slow.rhai"),
            r#"fn score(lead, stats) { let t = "a"; t.pad(100000, "a"); loop { let u = t.to_upper(); } }"#,
        )
        .expect("write plugin");
    })
    .await;
    let leads: Vec<Value> = (0..40)
        .map(|i| json!({"email": format!("slow{i}@acme.com")}))
        .collect();
    let send = || {
        app.req(Method::POST, "/v1/leads/batch", &app.admin)
            .header("idempotency-key", "slow-batch")
            .json(&json!({"leads": leads}))
            .send()
    };
    let p = assert_problem(send().await.unwrap(), StatusCode::SERVICE_UNAVAILABLE).await;
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("may still complete"), "{detail}");
    assert!(detail.contains("Idempotency-Key"), "{detail}");
    // It did complete; the retry with the same key gets its answer and creates nothing more.
    let mut created = 0;
    for _ in 0..100 {
        let all = body(app.get("/v1/leads?limit=100", &app.admin).await).await;
        created = all["items"].as_array().unwrap().len();
        if created == 40 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(created, 40);
    let retry = send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let all = body(app.get("/v1/leads?limit=100", &app.admin).await).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 40);
}
