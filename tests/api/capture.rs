//! Capture from the public side: hosted forms (success, redirect, errors, spam, rate limits,
//! CORS, double submits), the tracker and stitching, channels, likely duplicates and merge,
//! and erasure of everything a capture left behind.

use crate::helpers::*;
use leadline::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

const START: i64 = 1_795_000_000_000;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn make_form(app: &TestApp, extra: Value) -> Value {
    let mut body = json!({
        "name": "Free trial",
        "fields": [
            {"name": "name", "label": "Name", "required": true},
            {"name": "email", "label": "Email", "required": true},
            {"name": "company", "label": "Company"},
            {"name": "budget", "label": "Budget"}
        ]
    });
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    expect_json(
        app.post("/v1/forms", &app.admin, &body).await,
        StatusCode::CREATED,
    )
    .await
}

fn key_of(form: &Value) -> String {
    form["key"].as_str().expect("key").to_owned()
}

/// Every lead the admin sees, newest first.
async fn leads(app: &TestApp) -> Vec<Value> {
    let page = expect_json(
        app.get("/v1/leads?limit=500", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    page["items"].as_array().expect("items").clone()
}

async fn post_form(
    app: &TestApp,
    client: &reqwest::Client,
    key: &str,
    pairs: &[(&str, &str)],
) -> reqwest::Response {
    client
        .post(app.url(&format!("/f/{key}")))
        .form(pairs)
        .send()
        .await
        .expect("form post")
}

/// The `_ts` render token of a hosted page.
fn render_token(html: &str) -> String {
    let at = html.find("name=\"_ts\"").expect("a _ts input");
    let rest = &html[at..];
    let v = rest.find("value=\"").expect("value") + 7;
    let end = rest[v..].find('"').expect("end");
    rest[v..v + end].to_owned()
}

#[tokio::test]
async fn forms_are_managed_by_admins_only() {
    let app = spawn_app().await;
    let form = make_form(&app, json!({"key": "trial-2026", "language": "zh-CN"})).await;
    assert_fields(
        &form,
        json!({"key": "trial-2026", "url": "/f/trial-2026", "language": "zh-CN",
               "source": "web_form", "activity_kind": "form_submit", "version": 1}),
    );
    let id = form["id"].as_str().unwrap();
    let again = app
        .post(
            "/v1/forms",
            &app.admin,
            &json!({"name": "x", "key": "trial-2026", "fields": [{"name": "email", "label": "E"}]}),
        )
        .await;
    assert_problem(again, StatusCode::CONFLICT).await;
    assert_invalid(
        app.post("/v1/forms", &app.admin, &json!({"name": "x", "fields": []}))
            .await,
        "fields",
    )
    .await;
    assert_invalid(
        app.post(
            "/v1/forms",
            &app.admin,
            &json!({"name": "x", "fields": [{"name": "email", "label": "E"}], "allowed_origins": ["https://a.example/path"]}),
        )
        .await,
        "allowed_origins[0]",
    )
    .await;

    let patched = expect_json(
        app.patch(
            &format!("/v1/forms/{id}"),
            &app.admin,
            &json!({"redirect_url": "https://example.com/thanks"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_fields(
        &patched,
        json!({"version": 2, "redirect_url": "https://example.com/thanks", "key": "trial-2026"}),
    );
    // null clears what may be empty and is refused on what may not.
    let cleared = expect_json(
        app.patch(
            &format!("/v1/forms/{id}"),
            &app.admin,
            &json!({"redirect_url": null}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_fields(&cleared, json!({"version": 3, "redirect_url": null}));
    for member in ["name", "fields", "key"] {
        let res = app
            .patch(
                &format!("/v1/forms/{id}"),
                &app.admin,
                &json!({member: null}),
            )
            .await;
        assert_invalid(res, member).await;
    }
    let list = expect_json(app.get("/v1/forms", &app.admin).await, StatusCode::OK).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let (_, rep) = app.rep("r", None).await;
    assert_problem(app.get("/v1/forms", &rep).await, StatusCode::FORBIDDEN).await;
    assert_problem(
        app.post(
            "/v1/forms",
            &rep,
            &json!({"name": "x", "fields": [{"name": "email", "label": "E"}]}),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let res = app.delete(&format!("/v1/forms/{id}"), &app.admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .client
        .get(app.url("/f/trial-2026"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_hosted_page_is_in_the_forms_language_and_carries_its_utm() {
    let app = spawn_app().await;
    let form = make_form(
        &app,
        json!({"language": "zh-CN", "fields": [
            {"name": "name", "label": "姓名", "required": true},
            {"name": "email", "label": "邮箱", "required": true},
            {"name": "company", "label": "公司"}]}),
    )
    .await;
    let res = app
        .client
        .get(app.url(&format!(
            "/f/{}?utm_source=expo&utm_medium=qr",
            key_of(&form)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = res.text().await.unwrap();
    for needle in [
        "lang=\"zh-CN\"",
        "姓名",
        "邮箱",
        "公司",
        "提交",
        "name=\"_hp\"",
        "name=\"utm_source\"",
        "value=\"expo\"",
        "viewport",
    ] {
        assert!(html.contains(needle), "{needle} missing from the page");
    }
    assert!(!render_token(&html).is_empty());
}

#[tokio::test]
async fn a_browser_submit_redirects_and_captures_the_lead_with_its_raw_values() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let form = make_form(&app, json!({"redirect_url": "https://example.com/thanks"})).await;
    let key = key_of(&form);
    let page = app
        .client
        .get(app.url(&format!("/f/{key}?utm_source=baidu&utm_medium=cpc")))
        .send()
        .await
        .unwrap();
    let token = render_token(&page.text().await.unwrap());
    clock.advance(5_000);
    let res = post_form(
        &app,
        &no_redirects(),
        &key,
        &[
            ("name", " Wang  Wei "),
            ("email", " Wang.Wei@Example-Corp.CN "),
            ("company", "Example  Corp "),
            ("budget", "50k"),
            ("utm_source", "baidu"),
            ("utm_medium", "cpc"),
            ("_ts", &token),
            ("_hp", ""),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "https://example.com/thanks");

    let all = leads(&app).await;
    assert_eq!(all.len(), 1);
    assert_fields(
        &all[0],
        json!({"name": "Wang Wei", "email": "wang.wei@example-corp.cn", "company": "Example Corp",
               "source": "web_form", "channel": "paid_search", "utm.source": "baidu",
               "fields.budget": "50k", "owner_id": null}),
    );
    let acts = activities(&app, all[0]["id"].as_str().unwrap()).await;
    assert_eq!(acts.len(), 1);
    assert_fields(
        &acts[0],
        json!({"kind": "form_submit", "actor_id": null, "properties.via": "form",
               "properties.form_key": key, "properties.raw.email": " Wang.Wei@Example-Corp.CN ",
               "properties.raw.name": " Wang  Wei "}),
    );
    assert!(all[0]["last_activity_at"].is_string());
}

#[tokio::test]
async fn json_submits_answer_201_or_422_and_bad_ones_store_nothing() {
    let app = spawn_app().await;
    let key = key_of(&make_form(&app, json!({})).await);
    let url = app.url(&format!("/f/{key}"));
    let res = app
        .client
        .post(&url)
        .json(&json!({"name": "Ann", "email": "ann@acme.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_json(res, StatusCode::CREATED).await,
        json!({"status": "received"})
    );

    let res = app
        .client
        .post(&url)
        .json(&json!({"email": "bob@acme.com"}))
        .send()
        .await
        .unwrap();
    assert_invalid(res, "name").await;
    let res = app
        .client
        .post(&url)
        .json(&json!({"name": "Bob", "email": "not-an-email"}))
        .send()
        .await
        .unwrap();
    assert_invalid(res, "email").await;
    let res = app
        .client
        .post(&url)
        .json(&json!({"name": ["x"], "email": "b@acme.com"}))
        .send()
        .await
        .unwrap();
    assert_invalid(res, "name").await;
    let res = app
        .client
        .post(&url)
        .body("name=x")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let res = app
        .client
        .post(app.url("/f/nope"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::NOT_FOUND).await;
    assert_eq!(leads(&app).await.len(), 1);
}

#[tokio::test]
async fn a_browser_submit_with_errors_gets_the_page_back_with_what_was_typed() {
    let app = spawn_app().await;
    let key = key_of(&make_form(&app, json!({"language": "zh-CN"})).await);
    let res = post_form(
        &app,
        &app.client,
        &key,
        &[("name", "王小明"), ("email", "wang@")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("value=\"王小明\""),
        "typed values kept: {html}"
    );
    assert!(html.contains("aria-invalid=\"true\""));
    assert!(
        !render_token(&html).is_empty(),
        "a fresh token for the retry"
    );
    let res = post_form(&app, &app.client, &key, &[("email", "wang@example.com")]).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(leads(&app).await.is_empty());
}

#[tokio::test]
async fn bots_get_a_normal_answer_and_store_nothing() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let key = key_of(&make_form(&app, json!({"redirect_url": "https://example.com/thanks"})).await);
    let client = no_redirects();
    let html = app
        .client
        .get(app.url(&format!("/f/{key}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = render_token(&html);

    // the honeypot
    let res = post_form(
        &app,
        &client,
        &key,
        &[
            ("name", "Bot"),
            ("email", "bot1@spam.example"),
            ("_hp", "http://spam"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // faster than a person fills a form
    clock.advance(1_000);
    let res = post_form(
        &app,
        &client,
        &key,
        &[
            ("name", "Bot"),
            ("email", "bot2@spam.example"),
            ("_ts", &token),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // a token we never issued
    let forged = format!("{}.0123456789abcdef0123456789abcdef", START - 60_000);
    let res = post_form(
        &app,
        &client,
        &key,
        &[
            ("name", "Bot"),
            ("email", "bot3@spam.example"),
            ("_ts", &forged),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(leads(&app).await.is_empty());

    // the same token after a human's pause works
    clock.advance(2_000);
    let res = post_form(
        &app,
        &client,
        &key,
        &[("name", "Ann"), ("email", "ann@acme.com"), ("_ts", &token)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(leads(&app).await.len(), 1);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |c| {
        c.capture.form_submits_per_ip_per_minute = 2;
        c.capture.page_views_per_ip_per_minute = 1;
    })
    .await;
    let key = key_of(&make_form(&app, json!({})).await);
    let url = app.url(&format!("/f/{key}"));
    for n in 0..2 {
        let res = app
            .client
            .post(&url)
            .json(&json!({"name": "A", "email": format!("a{n}@acme.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let res = app
        .client
        .post(&url)
        .json(&json!({"name": "A", "email": "a9@acme.com"}))
        .send()
        .await
        .unwrap();
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(leads(&app).await.len(), 2);

    let view = json!({"visitor_id": "v0123456789abcdef", "url": "https://site.example/"});
    let res = app
        .client
        .post(app.url("/t"))
        .body(view.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .client
        .post(app.url("/t"))
        .body(view.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // the next minute is a new window
    clock.advance(60_000);
    let res = app
        .client
        .post(&url)
        .json(&json!({"name": "A", "email": "a9@acme.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_form_s_own_limit_holds_across_clients_and_leaves_other_forms_alone() {
    let app = spawn_app_with(|c| {
        c.capture.form_submits_per_form_per_minute = 3;
        // The test's client is the proxy: X-Forwarded-For names each "client".
        c.capture.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let busy = key_of(&make_form(&app, json!({})).await);
    let quiet = key_of(&make_form(&app, json!({})).await);
    let submit = async |key: &str, n: u32| {
        app.client
            .post(app.url(&format!("/f/{key}")))
            .header("x-forwarded-for", format!("203.0.113.{n}"))
            .json(&json!({"name": "A", "email": format!("a{n}@acme.com")}))
            .send()
            .await
            .unwrap()
    };
    for n in 1..=3 {
        assert_eq!(submit(&busy, n).await.status(), StatusCode::CREATED);
    }
    let res = submit(&busy, 4).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(submit(&quiet, 5).await.status(), StatusCode::CREATED);
    assert_eq!(leads(&app).await.len(), 4);
}

#[tokio::test]
async fn an_anonymous_visitor_keeps_its_newest_200_page_views() {
    let app = spawn_app().await;
    let vid = "v0123456789abcdefcap";
    for n in 1..=205 {
        let view = json!({"visitor_id": vid, "url": format!("https://site.example/p{n}")});
        let res = app
            .client
            .post(app.url("/t"))
            .body(view.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
    let v = expect_json(
        app.get(&format!("/v1/visitors/{vid}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    let views = v["page_views"].as_array().unwrap();
    assert_eq!(views.len(), 200);
    assert_eq!(
        views[0]["url"], "https://site.example/p6",
        "the oldest five went"
    );
    assert_eq!(views[199]["url"], "https://site.example/p205");
}

#[tokio::test]
async fn cors_is_granted_only_to_the_forms_origins() {
    let app = spawn_app().await;
    let key = key_of(
        &make_form(
            &app,
            json!({"allowed_origins": ["https://www.acme.example"]}),
        )
        .await,
    );
    let url = app.url(&format!("/f/{key}"));

    let res = app
        .client
        .post(&url)
        .header("origin", "https://www.acme.example")
        .json(&json!({"name": "Ann", "email": "ann@acme.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://www.acme.example"
    );

    let res = app
        .client
        .post(&url)
        .header("origin", "https://evil.example")
        .json(&json!({"name": "Eve", "email": "eve@evil.example"}))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert_problem(res, StatusCode::FORBIDDEN).await;
    // A sandboxed frame on any site sends `Origin: null`.
    let res = app
        .client
        .post(&url)
        .header("origin", "null")
        .json(&json!({"name": "Nul", "email": "nul@evil.example"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::FORBIDDEN).await;

    let pre = app
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://www.acme.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://www.acme.example"
    );
    let pre = app
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), StatusCode::FORBIDDEN);
    assert!(pre.headers().get("access-control-allow-origin").is_none());

    // the hosted page posting to itself is not cross-origin
    let own = format!("http://{}", app.addr);
    let res = app
        .client
        .post(&url)
        .header("origin", own)
        .json(&json!({"name": "Bo", "email": "bo@acme.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let emails: Vec<String> = leads(&app)
        .await
        .iter()
        .map(|l| l["email"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(emails, vec!["bo@acme.com", "ann@acme.com"]);
}

#[tokio::test]
async fn a_double_submit_makes_one_lead_and_one_activity() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let key = key_of(&make_form(&app, json!({})).await);
    let client = no_redirects();
    // no email or phone: only the double-submit memory can tell these apart
    let form = make_form(
        &app,
        json!({"fields": [{"name": "name", "label": "Name", "required": true}]}),
    )
    .await;
    let name_only = key_of(&form);
    for _ in 0..2 {
        let res = post_form(&app, &client, &name_only, &[("name", "Ann Onymous")]).await;
        assert_eq!(res.status(), StatusCode::OK, "thank-you page");
        let res = post_form(
            &app,
            &client,
            &key,
            &[("name", "Ann"), ("email", "ann@acme.com")],
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        clock.advance(10_000);
    }
    let all = leads(&app).await;
    assert_eq!(all.len(), 2);
    for l in &all {
        assert_eq!(activities(&app, l["id"].as_str().unwrap()).await.len(), 1);
    }
    // a minute later the same values are a new submission (merged into the same lead by email)
    clock.advance(60_000);
    post_form(
        &app,
        &client,
        &key,
        &[("name", "Ann"), ("email", "ann@acme.com")],
    )
    .await;
    let ann = leads(&app)
        .await
        .into_iter()
        .find(|l| l["email"] == "ann@acme.com")
        .unwrap();
    assert_eq!(activities(&app, ann["id"].as_str().unwrap()).await.len(), 2);
}

#[tokio::test]
async fn submits_sent_all_at_once_make_one_lead_and_one_activity() {
    let app = spawn_app().await;
    let client = no_redirects();
    let name_only = key_of(
        &make_form(
            &app,
            json!({"fields": [{"name": "name", "label": "Name", "required": true}]}),
        )
        .await,
    );
    let with_email = key_of(&make_form(&app, json!({})).await);
    // A double click, five times over: every request is in flight before any is written.
    let sends = (0..5).flat_map(|_| {
        [
            post_form(&app, &client, &name_only, &[("name", "Ann Onymous")]),
            post_form(
                &app,
                &client,
                &with_email,
                &[("name", "Bo"), ("email", "bo@acme.com")],
            ),
        ]
    });
    for res in futures_util::future::join_all(sends).await {
        assert_eq!(res.status(), StatusCode::OK, "each gets the thank-you page");
    }
    let all = leads(&app).await;
    assert_eq!(all.len(), 2, "{all:?}");
    for l in &all {
        assert_eq!(activities(&app, l["id"].as_str().unwrap()).await.len(), 1);
    }
}

#[tokio::test]
async fn page_views_become_the_leads_activities_in_order_and_later_ones_land_on_it() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let vid = "0123456789abcdef0123456789abcdef";
    for (path, referrer) in [
        ("/", "https://www.google.com/"),
        ("/pricing", ""),
        ("/case-studies?utm_source=newsletter", ""),
    ] {
        let body = json!({"visitor_id": vid, "url": format!("https://www.acme.example{path}"), "referrer": referrer, "title": "Acme"});
        let res = app
            .client
            .post(app.url("/t"))
            .header("content-type", "text/plain")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
        clock.advance(1_000);
    }
    let v = expect_json(
        app.get(&format!("/v1/visitors/{vid}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(v["page_views"].as_array().unwrap().len(), 3);
    assert_eq!(v["lead_id"], Value::Null);
    let (_, rep) = app.rep("r", None).await;
    assert_problem(
        app.get(&format!("/v1/visitors/{vid}"), &rep).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let lead = app
        .create_lead(
            &app.admin,
            json!({"email": "v@acme.com", "visitor_id": vid}),
        )
        .await;
    let id = lead["id"].as_str().unwrap().to_owned();
    clock.advance(1_000);
    let body = json!({"visitor_id": vid, "url": "https://www.acme.example/contact"});
    app.client
        .post(app.url("/t"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();

    let mut acts = activities(&app, &id).await;
    acts.reverse();
    let paths: Vec<&str> = acts
        .iter()
        .map(|a| {
            a["properties"]["path"]
                .as_str()
                .unwrap_or(a["kind"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        paths,
        vec!["/", "/pricing", "/case-studies", "capture", "/contact"]
    );
    assert_eq!(acts[0]["properties"]["referrer"], "https://www.google.com/");
    assert_eq!(acts[2]["properties"]["utm"]["source"], "newsletter");
    let v = expect_json(
        app.get(&format!("/v1/visitors/{vid}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(v["lead_id"], id.as_str());
    assert_eq!(v["page_views"], json!([]));

    assert_invalid(
        app.post(
            "/v1/leads",
            &app.admin,
            &json!({"email": "x@acme.com", "visitor_id": "no"}),
        )
        .await,
        "visitor_id",
    )
    .await;
    let res = app
        .client
        .post(app.url("/t"))
        .body(json!({"visitor_id": vid, "url": "javascript:alert(1)"}).to_string())
        .send()
        .await
        .unwrap();
    assert_invalid(res, "url").await;

    // the person's export holds the visitor and the page views (now activities)
    let export = expect_json(
        app.get(&format!("/v1/leads/{id}/export"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(export["visitors"][0]["visitor_id"], vid);
    let kinds: Vec<&str> = export["activities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "page_view").count(), 4);

    // erasure takes the visitor and what was tracked with it
    let res = app.delete(&format!("/v1/leads/{id}"), &app.admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.get(&format!("/v1/visitors/{vid}"), &app.admin).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn the_channel_comes_from_utm_and_referrer_by_a_table_the_config_can_replace() {
    let app = spawn_app_with(|c| {
        c.capture.channel_rules = vec!["source=wechat -> event".into(), "source=* -> other".into()];
    })
    .await;
    let l = app
        .create_lead(
            &app.admin,
            json!({"email": "a@acme.com", "utm": {"source": "WeChat", "medium": "cpc"}}),
        )
        .await;
    assert_eq!(l["channel"], "event");
    assert_eq!(l["utm"]["source"], "WeChat", "raw UTM kept");
    let l = app
        .create_lead(&app.admin, json!({"email": "b@acme.com"}))
        .await;
    assert_eq!(
        l["channel"],
        Value::Null,
        "no signal, no channel for an API capture"
    );
    let l = app
        .create_lead(
            &app.admin,
            json!({"email": "c@acme.com", "channel": "referral", "utm": {"source": "wechat"}}),
        )
        .await;
    assert_eq!(l["channel"], "referral", "a given channel wins");
    // Without UTM or referrer, a partner or event source names the channel, and scores so.
    let l = app
        .create_lead(
            &app.admin,
            json!({"email": "d@acme.com", "source": "partner"}),
        )
        .await;
    assert_eq!(l["channel"], "referral");
    assert_eq!(l["score"]["parts"]["source"], 20, "{l}");
    let l = app
        .create_lead(&app.admin, json!({"email": "e@acme.com", "source": "expo"}))
        .await;
    assert_eq!(l["channel"], "event");

    let app = spawn_app().await;
    for (utm, channel) in [
        (json!({"source": "google", "medium": "cpc"}), "paid_search"),
        (json!({"source": "newsletter", "medium": "email"}), "email"),
        (json!({"source": "linkedin"}), "social"),
        (
            json!({"source": "partner_x", "medium": "referral"}),
            "referral",
        ),
        (json!({"source": "expo", "medium": "event"}), "event"),
    ] {
        let l = app
            .create_lead(&app.admin, json!({"name": channel, "utm": utm}))
            .await;
        assert_eq!(l["channel"], channel, "{utm}");
    }
}

#[tokio::test]
async fn a_referrer_from_the_business_s_own_site_does_not_make_a_referral() {
    let app = spawn_app().await;
    let key = key_of(
        &make_form(
            &app,
            json!({"allowed_origins": ["https://shop.acme.example"]}),
        )
        .await,
    );
    let url = app.url(&format!("/f/{key}"));
    for (email, referrer, channel) in [
        // From the home page to the signup page of the same site: nobody referred them.
        ("own@acme.com", "https://acme.example/", "direct"),
        // From a site the form is embedded in, too.
        ("shop@acme.com", "https://shop.acme.example/cart", "direct"),
        (
            "partner@acme.com",
            "https://partner.example/deals",
            "referral",
        ),
    ] {
        let res = app
            .client
            .post(&url)
            .json(&json!({"name": "N", "email": email,
                "_page": "https://www.acme.example/signup", "_ref": referrer}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let lead = leads(&app)
            .await
            .into_iter()
            .find(|l| l["email"] == email)
            .unwrap();
        assert_eq!(lead["channel"], channel, "{referrer}");
        let acts = activities(&app, lead["id"].as_str().unwrap()).await;
        assert_eq!(
            acts[0]["properties"]["referrer"], referrer,
            "kept all the same"
        );
    }
}

#[tokio::test]
async fn likely_duplicates_are_listed_and_merged_with_a_pointer_left_behind() {
    let app = spawn_app().await;
    // The only rep who can take leads gets all of them; another rep sees none.
    let (o_id, owner) = app.rep("o", None).await;
    let a = app.create_lead(&app.admin, json!({"name": "Li Lei", "company": "Acme Ltd", "email": "lilei@acme.com", "title": "CTO"})).await;
    let b = app
        .create_lead(
            &app.admin,
            json!({"name": "li  lei", "company": "ACME", "phone": "13812345678"}),
        )
        .await;
    let c = app
        .create_lead(
            &app.admin,
            json!({"name": "Li Lei", "email": "l.lei@acme.com"}),
        )
        .await;
    app.create_lead(
        &app.admin,
        json!({"name": "Li Lei", "email": "lilei@gmail.com"}),
    )
    .await;
    let (a_id, b_id, c_id) = (
        a["id"].as_str().unwrap(),
        b["id"].as_str().unwrap(),
        c["id"].as_str().unwrap(),
    );
    app.post(
        &format!("/v1/leads/{b_id}/activities"),
        &app.admin,
        &json!({"kind": "note", "text": "met at expo"}),
    )
    .await;

    let d = expect_json(
        app.get("/v1/leads/duplicates", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    let groups: Vec<(String, Vec<String>)> = d["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut ids: Vec<String> = g["leads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            (g["reason"].as_str().unwrap().to_owned(), ids)
        })
        .collect();
    let mut ab = vec![a_id.to_owned(), b_id.to_owned()];
    ab.sort();
    let mut ac = vec![a_id.to_owned(), c_id.to_owned()];
    ac.sort();
    assert!(
        groups.contains(&("same_name_and_company".into(), ab)),
        "{groups:?}"
    );
    assert!(
        groups.contains(&("same_email_domain_and_name".into(), ac)),
        "{groups:?}"
    );
    assert_eq!(
        groups.len(),
        2,
        "a personal address is no company domain: {groups:?}"
    );
    for l in [&a, &b, &c] {
        assert_eq!(l["owner_id"], o_id.as_str());
    }
    let d = expect_json(
        app.get("/v1/leads/duplicates", &owner).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(d["items"].as_array().unwrap().len(), 2, "{d}");
    let (_, rep) = app.rep("r", None).await;
    let d = expect_json(app.get("/v1/leads/duplicates", &rep).await, StatusCode::OK).await;
    assert_eq!(d["items"], json!([]));

    // A stale If-Match on the survivor is a 412 and merges nothing.
    let res = app
        .req(
            reqwest::Method::POST,
            &format!("/v1/leads/{a_id}/merge"),
            &app.admin,
        )
        .header("if-match", "\"99\"")
        .json(&json!({"other_id": b_id}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
    let still = app.get(&format!("/v1/leads/{b_id}"), &app.admin).await;
    assert_eq!(
        still.status(),
        StatusCode::OK,
        "the other lead is still there"
    );

    let merged = expect_json(
        app.post(
            &format!("/v1/leads/{a_id}/merge"),
            &app.admin,
            &json!({"other_id": b_id}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_fields(
        &merged,
        json!({"id": a_id, "phone": "+8613812345678", "title": "CTO", "email": "lilei@acme.com", "version": 2}),
    );
    let kinds: Vec<String> = activities(&app, a_id)
        .await
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "capture").count(), 2);
    assert!(kinds.contains(&"note".to_owned()));
    let tl = expect_json(
        app.get(&format!("/v1/leads/{a_id}/timeline"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    let ev = tl["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "merged")
        .unwrap()
        .clone();
    assert_fields(
        &ev,
        json!({"data.merged_id": b_id, "data.survivor_id": a_id}),
    );

    let res = no_redirects()
        .get(app.url(&format!("/v1/leads/{b_id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        format!("/v1/leads/{a_id}")
    );
    assert_eq!(res.json::<Value>().await.unwrap()["merged_into"], a_id);

    // the merged-away phone still finds the survivor
    let again = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"phone": "+86 138 1234 5678"}),
        )
        .await;
    assert_eq!(expect_json(again, StatusCode::OK).await["id"], a_id);
    let d = expect_json(
        app.get("/v1/leads/duplicates", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(d["items"].as_array().unwrap().len(), 1);

    assert_invalid(
        app.post(
            &format!("/v1/leads/{a_id}/merge"),
            &app.admin,
            &json!({"other_id": a_id}),
        )
        .await,
        "other_id",
    )
    .await;
    assert_problem(
        app.post(
            &format!("/v1/leads/{a_id}/merge"),
            &app.admin,
            &json!({"other_id": b_id}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        app.post(
            &format!("/v1/leads/{a_id}/merge"),
            &rep,
            &json!({"other_id": c_id}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn an_embedded_form_gets_a_render_token_so_too_fast_submits_are_dropped_there_too() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let site = "https://www.acme.example";
    let key = key_of(&make_form(&app, json!({"allowed_origins": [site]})).await);
    let token_url = app.url(&format!("/f/{key}/ts"));
    let fetch_token = async |origin: &str| {
        app.client
            .get(&token_url)
            .header("origin", origin)
            .send()
            .await
            .unwrap()
    };
    let res = fetch_token(site).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["access-control-allow-origin"], site);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let token = expect_json(res, StatusCode::OK).await["_ts"]
        .as_str()
        .expect("_ts")
        .to_owned();
    // Other sites get no token, and an unknown form none either.
    let res = fetch_token("https://evil.example").await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = app.client.get(app.url("/f/nope/ts")).send().await.unwrap();
    assert_problem(res, StatusCode::NOT_FOUND).await;

    let submit = async |email: &str, ts: &str| {
        app.client
            .post(app.url(&format!("/f/{key}")))
            .header("origin", site)
            .json(&json!({"name": "Ann", "email": email, "_ts": ts}))
            .send()
            .await
            .unwrap()
    };
    // Sent a second after the page loaded: a normal answer, nothing stored.
    clock.advance(1_000);
    assert_eq!(
        submit("bot@acme.com", &token).await.status(),
        StatusCode::CREATED
    );
    assert!(leads(&app).await.is_empty());
    // A forged token is dropped the same way.
    let forged = format!("{}.{}", START - 60_000, "0".repeat(64));
    assert_eq!(
        submit("forger@acme.com", &forged).await.status(),
        StatusCode::CREATED
    );
    assert!(leads(&app).await.is_empty());
    // A person takes longer.
    clock.advance(9_000);
    assert_eq!(
        submit("ann@acme.com", &token).await.status(),
        StatusCode::CREATED
    );
    let all = leads(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["email"], "ann@acme.com");
}
