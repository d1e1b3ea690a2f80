//! The lead endpoints as a frontend uses them: create (single, batch, dedupe, idempotent
//! retries), list (every filter, every sort, cursor paging), read, merge-patch with
//! `If-Match`, erase and export — each success path and each error status.

use crate::helpers::*;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const ONE_MIB: usize = 1024 * 1024;

const SORTS: [&str; 6] = [
    "created_at",
    "-created_at",
    "score",
    "-score",
    "updated_at",
    "-updated_at",
];

// ----- local helpers -----

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

fn header(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn json_of(res: Response) -> Value {
    res.json().await.expect("json body")
}

/// Sends `raw` as the body with the given content type.
async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    content_type: &str,
    raw: impl Into<reqwest::Body>,
) -> Response {
    app.req(method, path, token)
        .header("content-type", content_type)
        .body(raw)
        .send()
        .await
        .expect("request")
}

async fn post_with_key(app: &TestApp, path: &str, key: &str, body: &Value) -> Response {
    app.req(Method::POST, path, &app.admin)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn patch_if_match(app: &TestApp, id: &str, etag: &str, body: &Value) -> Response {
    app.req(Method::PATCH, &format!("/v1/leads/{id}"), &app.admin)
        .header("content-type", "application/merge-patch+json")
        .header("if-match", etag)
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

/// `GET /v1/leads` with query parameters, as admin, asserting 200.
async fn list(app: &TestApp, query: &[(&str, &str)]) -> Value {
    list_as(app, &app.admin, query).await
}

async fn list_as(app: &TestApp, token: &str, query: &[(&str, &str)]) -> Value {
    let res = app
        .req(Method::GET, "/v1/leads", token)
        .query(query)
        .send()
        .await
        .expect("request");
    let status = res.status();
    let body = json_of(res).await;
    assert_eq!(status, StatusCode::OK, "GET /v1/leads {query:?}: {body}");
    body
}

async fn list_status(app: &TestApp, query: &[(&str, &str)]) -> Response {
    app.req(Method::GET, "/v1/leads", &app.admin)
        .query(query)
        .send()
        .await
        .expect("request")
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(id_of)
        .collect()
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|l| l["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Every lead id the admin can list (one page of up to 500).
async fn all_ids(app: &TestApp) -> Vec<String> {
    let page = list(app, &[("limit", "500")]).await;
    assert!(page["next_cursor"].is_null());
    ids(&page)
}

/// Follows `next_cursor` from the first page to the last; returns the ids in order and how
/// many pages it took.
async fn walk(
    app: &TestApp,
    token: &str,
    query: &[(&str, &str)],
    limit: usize,
) -> (Vec<String>, usize) {
    let limit_s = limit.to_string();
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("limit", &limit_s));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let page = list_as(app, token, &q).await;
        pages += 1;
        let items = ids(&page);
        assert!(items.len() <= limit, "page larger than limit");
        out.extend(items);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages <= 100, "paging does not end");
    }
    (out, pages)
}

async fn timeline(app: &TestApp, id: &str) -> Vec<Value> {
    let res = app
        .get(&format!("/v1/leads/{id}/timeline"), &app.admin)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    json_of(res).await["items"]
        .as_array()
        .expect("items")
        .clone()
}

fn events_of_kind<'a>(items: &'a [Value], kind: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|i| i["type"] == "event" && i["kind"] == kind)
        .collect()
}

/// Lets the wall clock move on so the next write gets a later millisecond timestamp.
async fn next_millisecond() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

/// Sends a hand-written HTTP/1.1 request with a chunked body and returns (status, body).
async fn raw_chunked(app: &TestApp, head: &str, body: &[u8]) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let mut out = Vec::with_capacity(body.len() + 1024);
    out.extend_from_slice(head.as_bytes());
    for chunk in body.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    // The server may answer before it has read everything; a failed write is fine then.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&out).await;
        let _ = wr.flush().await;
        wr
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if response_complete(&buf) {
            break;
        }
    }
    drop(writer.await);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Whether `buf` holds a whole response with a `content-length` body.
fn response_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    len.is_some_and(|n| body.len() >= n)
}

// ----- POST /v1/leads -----

#[tokio::test]
async fn create_returns_201_with_location_etag_and_normalized_lead() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({
                "name": "  李  雷 ",
                "email": " Li.Lei@Example.COM ",
                "phone": "138 1234 5678",
                "company": "Acme",
                "channel": "Paid_Search",
                "source": "Web",
                "tags": ["VIP", "vip", " "],
                "fields": {"budget": 100},
                "utm": {"source": "baidu"},
                "flags": {"do_not_contact": true}
            }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = header(&res, "location").expect("Location");
    assert_eq!(header(&res, "etag").as_deref(), Some("\"1\""));
    let lead = json_of(res).await;
    let id = id_of(&lead);
    assert_eq!(location, format!("/v1/leads/{id}"));
    assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    assert_eq!(lead["merged"], false);
    assert_eq!(lead["version"], 1);
    assert_eq!(lead["name"], "李 雷");
    assert_eq!(lead["email"], "li.lei@example.com");
    assert_eq!(lead["phone"], "+8613812345678");
    assert_eq!(lead["channel"], "paid_search");
    assert_eq!(lead["source"], "web");
    assert_eq!(lead["tags"], json!(["vip"]));
    assert_eq!(lead["fields"], json!({"budget": 100}));
    assert_eq!(lead["utm"]["source"], "baidu");
    assert!(lead["utm"]["medium"].is_null());
    assert_eq!(lead["stage"], "lead");
    assert_eq!(lead["status"], "new");
    assert!(lead["owner_id"].is_null());
    assert!(lead["pool_id"].is_null());
    assert_eq!(lead["score"]["total"], 0);
    assert_eq!(lead["flags"]["do_not_contact"], true);
    assert_eq!(lead["flags"]["personal_email"], false);
    assert_eq!(lead["created_at"], lead["updated_at"]);
    assert!(lead["created_at"].as_str().unwrap().ends_with('Z'));

    // The Location is where the lead lives.
    let res = app.get(&location, &app.admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    let read = json_of(res).await;
    assert_eq!(read["email"], "li.lei@example.com");
    assert!(
        read.get("merged").is_none(),
        "merged belongs to the create only"
    );
}

#[tokio::test]
async fn create_flags_personal_email_domains() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(&app.admin, json!({"email": "someone@QQ.com"}))
        .await;
    assert_eq!(lead["flags"]["personal_email"], true);
}

#[tokio::test]
async fn create_with_malformed_json_is_400() {
    let app = spawn_app().await;
    for raw in ["{\"name\": ", "not json", "{\"name\": \"a\",}", ""] {
        let res = send_raw(
            &app,
            Method::POST,
            "/v1/leads",
            &app.admin,
            "application/json",
            raw,
        )
        .await;
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn create_without_a_valid_token_is_401() {
    let app = spawn_app().await;
    let body = json!({"email": "a@acme.com"});
    let res = app
        .client
        .post(app.url("/v1/leads"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let res = app.post("/v1/leads", "ll_not_a_real_token", &body).await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let res = app
        .client
        .post(app.url("/v1/leads"))
        .header("authorization", format!("Basic {}", app.admin))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn create_with_body_over_1mib_is_413() {
    let app = spawn_app().await;
    let big = json!({"name": "x", "fields": {"blob": "a".repeat(ONE_MIB)}}).to_string();
    assert!(big.len() > ONE_MIB);
    let res = send_raw(
        &app,
        Method::POST,
        "/v1/leads",
        &app.admin,
        "application/json",
        big,
    )
    .await;
    let problem = assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("1048576"),
        "the detail names the limit: {problem}"
    );
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn create_with_chunked_body_over_1mib_is_413() {
    let app = spawn_app().await;
    let big = json!({"name": "x", "fields": {"blob": "a".repeat(ONE_MIB)}}).to_string();
    let head = format!(
        "POST /v1/leads HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        app.addr, app.admin
    );
    let (status, body) = raw_chunked(&app, &head, big.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    let problem: Value = serde_json::from_str(&body).expect("problem json");
    assert_eq!(problem["status"], 413);
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn create_with_body_just_under_1mib_is_accepted() {
    let app = spawn_app().await;
    // fields are capped at 16 KiB, so pad with insignificant whitespace instead
    let lead = json!({"name": "padded"}).to_string();
    let raw = format!("{}{lead}", " ".repeat(ONE_MIB - lead.len()));
    assert_eq!(raw.len(), ONE_MIB);
    let res = send_raw(
        &app,
        Method::POST,
        "/v1/leads",
        &app.admin,
        "application/json",
        raw,
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn create_with_wrong_content_type_is_415() {
    let app = spawn_app().await;
    let body = json!({"email": "a@acme.com"}).to_string();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        let res = send_raw(
            &app,
            Method::POST,
            "/v1/leads",
            &app.admin,
            ct,
            body.clone(),
        )
        .await;
        assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    // no content type at all
    let res = app
        .req(Method::POST, "/v1/leads", &app.admin)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // parameters and case do not matter for JSON
    let res = send_raw(
        &app,
        Method::POST,
        "/v1/leads",
        &app.admin,
        "Application/JSON; charset=utf-8",
        body,
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn create_with_unknown_field_is_422_naming_it() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"email": "a@acme.com", "favourite_colour": "red"}),
        )
        .await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "favourite_colour");
    assert_eq!(p["errors"][0]["message"], "unknown field");

    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"email": "a@acme.com", "utm": {"sauce": "x"}}),
        )
        .await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "utm.sauce");

    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"email": "a@acme.com", "flags": {"personal_email": true}}),
        )
        .await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "flags.personal_email");
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn create_with_invalid_email_is_422() {
    let app = spawn_app().await;
    for bad in ["nope", "a@b", "a b@acme.com", "@acme.com"] {
        let res = app
            .post("/v1/leads", &app.admin, &json!({"email": bad}))
            .await;
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&p), "email", "{bad}");
    }
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn create_with_invalid_phone_is_422() {
    let app = spawn_app().await;
    for bad in ["12", "abc", "138-1234-567", "tel:13812345678"] {
        let res = app
            .post("/v1/leads", &app.admin, &json!({"name": "A", "phone": bad}))
            .await;
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&p), "phone", "{bad}");
    }
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn create_with_bad_channel_or_enum_is_422() {
    let app = spawn_app().await;
    let cases = [
        (json!({"name": "A", "channel": "tv"}), "channel"),
        (json!({"name": "A", "stage": "won"}), "stage"),
        (json!({"name": "A", "status": "busy"}), "status"),
        (json!({"name": "A", "company_size": -3}), "company_size"),
        (json!({"name": "A", "owner_id": "not-a-uuid"}), "owner_id"),
        (
            json!({"name": "A", "next_follow_up_at": "tomorrow"}),
            "next_follow_up_at",
        ),
        (json!({"name": 42}), "name"),
        (json!({"name": "A", "tags": "vip"}), "tags"),
    ];
    for (body, field) in cases {
        let res = app.post("/v1/leads", &app.admin, &body).await;
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&p), field, "{body}");
    }
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn create_reports_every_invalid_field_at_once() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"email": "nope", "phone": "12", "channel": "tv"}),
        )
        .await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "phone", "channel"]);
}

#[tokio::test]
async fn create_with_read_only_field_is_422() {
    let app = spawn_app().await;
    for field in [
        "id",
        "score",
        "version",
        "created_at",
        "updated_at",
        "first_touch_at",
        "last_activity_at",
        "merged",
    ] {
        let mut body = json!({"email": "a@acme.com"});
        body[field] = json!(1);
        let res = app.post("/v1/leads", &app.admin, &body).await;
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&p), field);
        assert_eq!(p["errors"][0]["message"], "is read-only", "{field}");
    }
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn create_of_an_empty_lead_is_422() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({"company": "Acme", "title": "CEO"}),
        json!({"email": "   ", "name": ""}),
    ] {
        let res = app.post("/v1/leads", &app.admin, &body).await;
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(!p["errors"].as_array().unwrap().is_empty(), "{body}");
    }
    for body in [json!([]), json!("lead"), json!(null)] {
        let res = app.post("/v1/leads", &app.admin, &body).await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn create_with_unknown_owner_is_422() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"name": "A", "owner_id": Uuid::now_v7()}),
        )
        .await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "owner_id");
}

// ----- dedupe -----

#[tokio::test]
async fn duplicate_email_in_other_case_and_spacing_merges_into_the_existing_lead() {
    let app = spawn_app().await;
    let first = app
        .create_lead(
            &app.admin,
            json!({"email": "zhang@acme.cn", "title": "CTO", "tags": ["a"]}),
        )
        .await;
    let id = id_of(&first);

    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({
                "email": "  ZHANG@Acme.CN ",
                "title": "CEO",
                "company": "Acme",
                "name": "张三",
                "tags": ["b"],
                "fields": {"budget": 5}
            }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, "location").as_deref(),
        Some(format!("/v1/leads/{id}").as_str())
    );
    assert_eq!(header(&res, "etag").as_deref(), Some("\"2\""));
    let merged = json_of(res).await;
    assert_eq!(merged["merged"], true);
    assert_eq!(id_of(&merged), id);
    assert_eq!(merged["version"], 2);
    // blanks filled
    assert_eq!(merged["company"], "Acme");
    assert_eq!(merged["name"], "张三");
    assert_eq!(merged["fields"], json!({"budget": 5}));
    assert_eq!(merged["tags"], json!(["a", "b"]));
    // existing values kept
    assert_eq!(merged["title"], "CTO");
    assert_eq!(merged["email"], "zhang@acme.cn");

    // stored so, and still one lead
    let read = json_of(app.get(&format!("/v1/leads/{id}"), &app.admin).await).await;
    assert_eq!(read["title"], "CTO");
    assert_eq!(read["company"], "Acme");
    assert_eq!(all_ids(&app).await, vec![id.clone()]);

    // the timeline shows the merge and the value that was not applied
    let items = timeline(&app, &id).await;
    let merges = events_of_kind(&items, "merged");
    assert_eq!(merges.len(), 1, "{items:?}");
    let data = &merges[0]["data"];
    assert_eq!(data["reason"], "email");
    let filled: Vec<&str> = data["filled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        filled.contains(&"company") && filled.contains(&"name"),
        "{data}"
    );
    assert!(!filled.contains(&"title"), "{data}");
    let conflicts = data["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{data}");
    assert_eq!(conflicts[0]["field"], "title");
    assert_eq!(conflicts[0]["kept"], "CTO");
    assert_eq!(conflicts[0]["offered"], "CEO");
    assert_eq!(events_of_kind(&items, "created").len(), 1);
}

#[tokio::test]
async fn identical_capture_merges_without_bumping_the_version() {
    let app = spawn_app().await;
    let first = app
        .create_lead(&app.admin, json!({"email": "same@acme.com", "name": "S"}))
        .await;
    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"email": "same@acme.com", "name": "S"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "etag").as_deref(), Some("\"1\""));
    let merged = json_of(res).await;
    assert_eq!(merged["merged"], true);
    assert_eq!(merged["version"], 1);
    assert_eq!(merged["updated_at"], first["updated_at"]);
    let items = timeline(&app, &id_of(&first)).await;
    assert_eq!(events_of_kind(&items, "merged").len(), 1);
}

#[tokio::test]
async fn phone_in_three_spellings_is_one_lead() {
    let app = spawn_app().await;
    let first = app
        .create_lead(&app.admin, json!({"name": "王总", "phone": "13812345678"}))
        .await;
    let id = id_of(&first);
    assert_eq!(first["phone"], "+8613812345678");
    for (spelling, company) in [("+86 138 1234 5678", "Acme"), ("86-13812345678", "Other")] {
        let res = app
            .post(
                "/v1/leads",
                &app.admin,
                &json!({"phone": spelling, "company": company}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK, "{spelling}");
        let merged = json_of(res).await;
        assert_eq!(merged["merged"], true);
        assert_eq!(id_of(&merged), id);
        assert_eq!(merged["phone"], "+8613812345678");
        // the first company offered fills the blank; the second does not overwrite it
        assert_eq!(merged["company"], "Acme");
    }
    assert_eq!(all_ids(&app).await, vec![id.clone()]);
    let items = timeline(&app, &id).await;
    let merges = events_of_kind(&items, "merged");
    assert_eq!(merges.len(), 2);
    assert!(merges.iter().all(|m| m["data"]["reason"] == "phone"));
}

#[tokio::test]
async fn merge_by_phone_fills_a_blank_email_which_then_dedupes() {
    let app = spawn_app().await;
    let first = app
        .create_lead(&app.admin, json!({"phone": "13900001111"}))
        .await;
    let id = id_of(&first);
    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"phone": "+86 139 0000 1111", "email": "new@acme.com"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await["email"], "new@acme.com");
    // the filled email is now indexed too
    let res = app
        .post("/v1/leads", &app.admin, &json!({"email": "NEW@acme.com"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(id_of(&json_of(res).await), id);
    assert_eq!(all_ids(&app).await.len(), 1);
}

#[tokio::test]
async fn different_email_and_phone_create_separate_leads() {
    let app = spawn_app().await;
    let a = app
        .create_lead(
            &app.admin,
            json!({"email": "a@acme.com", "phone": "13800000001"}),
        )
        .await;
    let b = app
        .create_lead(
            &app.admin,
            json!({"email": "b@acme.com", "phone": "13800000002"}),
        )
        .await;
    assert_ne!(id_of(&a), id_of(&b));
    // same name is not a duplicate
    let c = app.create_lead(&app.admin, json!({"name": "Same"})).await;
    let d = app.create_lead(&app.admin, json!({"name": "Same"})).await;
    assert_ne!(id_of(&c), id_of(&d));
    assert_eq!(all_ids(&app).await.len(), 4);
}

#[tokio::test]
async fn capture_matching_one_lead_by_email_and_another_by_phone_does_not_steal_the_phone() {
    let app = spawn_app().await;
    let by_email = app
        .create_lead(&app.admin, json!({"email": "e@acme.com"}))
        .await;
    let by_phone = app
        .create_lead(&app.admin, json!({"phone": "13800000005"}))
        .await;
    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"email": "e@acme.com", "phone": "13800000005"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let merged = json_of(res).await;
    assert_eq!(merged["id"], by_email["id"]);
    assert!(merged["phone"].is_null(), "{merged}");
    let items = timeline(&app, &id_of(&by_email)).await;
    let data = &events_of_kind(&items, "merged")[0]["data"];
    assert_eq!(data["not_applied"][0]["field"], "phone");
    assert_eq!(data["not_applied"][0]["value"], "+8613800000005");
    assert_eq!(data["not_applied"][0]["belongs_to"], by_phone["id"]);
    assert_eq!(all_ids(&app).await.len(), 2);
}

#[tokio::test]
async fn concurrent_creates_of_one_email_make_one_lead() {
    let app = spawn_app().await;
    let bodies = [
        json!({"email": "same@acme.com", "name": "A"}),
        json!({"email": "same@acme.com", "title": "T"}),
        json!({"email": "Same@acme.com", "company": "C"}),
    ];
    let (a, b, c) = tokio::join!(
        app.post("/v1/leads", &app.admin, &bodies[0]),
        app.post("/v1/leads", &app.admin, &bodies[1]),
        app.post("/v1/leads", &app.admin, &bodies[2])
    );
    let mut statuses = [
        a.status().as_u16(),
        b.status().as_u16(),
        c.status().as_u16(),
    ];
    statuses.sort();
    assert_eq!(statuses, [200, 200, 201]);
    let ids_seen: HashSet<String> = [json_of(a).await, json_of(b).await, json_of(c).await]
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids_seen.len(), 1);
    let id = ids_seen.into_iter().next().unwrap();
    let lead = json_of(app.get(&format!("/v1/leads/{id}"), &app.admin).await).await;
    assert_eq!(
        (
            lead["name"].as_str(),
            lead["title"].as_str(),
            lead["company"].as_str()
        ),
        (Some("A"), Some("T"), Some("C"))
    );
    assert_eq!(all_ids(&app).await, vec![id]);
}

// ----- Idempotency-Key -----

#[tokio::test]
async fn idempotent_retry_replays_the_first_response_and_creates_nothing() {
    let app = spawn_app().await;
    let body = json!({"email": "retry@acme.com", "name": "R"});
    let first = post_with_key(&app, "/v1/leads", "key-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let location = header(&first, "location");
    let etag = header(&first, "etag");
    let first_body = json_of(first).await;

    for _ in 0..2 {
        let again = post_with_key(&app, "/v1/leads", "key-1", &body).await;
        assert_eq!(again.status(), StatusCode::CREATED);
        assert_eq!(header(&again, "location"), location);
        assert_eq!(header(&again, "etag"), etag);
        assert!(
            header(&again, "content-type")
                .unwrap()
                .starts_with("application/json")
        );
        assert_eq!(json_of(again).await, first_body);
    }
    assert_eq!(all_ids(&app).await, vec![id_of(&first_body)]);
    // no merge happened either
    let items = timeline(&app, &id_of(&first_body)).await;
    assert!(events_of_kind(&items, "merged").is_empty());
}

#[tokio::test]
async fn idempotent_retry_of_a_merge_replays_200() {
    let app = spawn_app().await;
    let existing = app
        .create_lead(&app.admin, json!({"email": "m@acme.com"}))
        .await;
    let body = json!({"email": "M@acme.com", "company": "Acme"});
    let first = post_with_key(&app, "/v1/leads", "merge-key", &body).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first_body = json_of(first).await;
    assert_eq!(first_body["merged"], true);
    let again = post_with_key(&app, "/v1/leads", "merge-key", &body).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        header(&again, "location"),
        Some(format!("/v1/leads/{}", id_of(&existing)))
    );
    assert_eq!(json_of(again).await, first_body);
    let items = timeline(&app, &id_of(&existing)).await;
    assert_eq!(events_of_kind(&items, "merged").len(), 1);
}

#[tokio::test]
async fn idempotency_key_reused_with_a_different_body_is_422() {
    let app = spawn_app().await;
    let res = post_with_key(&app, "/v1/leads", "k", &json!({"email": "one@acme.com"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = post_with_key(&app, "/v1/leads", "k", &json!({"email": "two@acme.com"})).await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "Idempotency-Key");
    assert_eq!(all_ids(&app).await.len(), 1);
    // the same body on another path is another request too
    let res = post_with_key(
        &app,
        "/v1/leads/batch",
        "k",
        &json!({"leads": [{"email": "one@acme.com"}]}),
    )
    .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_create_one_lead() {
    let app = spawn_app().await;
    let body = json!({"email": "race@acme.com"});
    let (a, b) = tokio::join!(
        post_with_key(&app, "/v1/leads", "race", &body),
        post_with_key(&app, "/v1/leads", "race", &body)
    );
    assert_eq!(a.status(), StatusCode::CREATED);
    assert_eq!(b.status(), StatusCode::CREATED);
    let (a, b) = (json_of(a).await, json_of(b).await);
    assert_eq!(a, b);
    assert_eq!(all_ids(&app).await, vec![id_of(&a)]);
}

#[tokio::test]
async fn invalid_idempotency_key_is_422() {
    let app = spawn_app().await;
    let res = post_with_key(
        &app,
        "/v1/leads",
        &"k".repeat(256),
        &json!({"email": "a@acme.com"}),
    )
    .await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "Idempotency-Key");
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn idempotent_batch_retry_replays_and_creates_nothing() {
    let app = spawn_app().await;
    let body =
        json!({"leads": [{"email": "b1@acme.com"}, {"email": "b2@acme.com"}, {"email": "bad"}]});
    let first = post_with_key(&app, "/v1/leads/batch", "batch-1", &body).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first_body = json_of(first).await;
    let before = all_ids(&app).await;
    assert_eq!(before.len(), 2);

    let again = post_with_key(&app, "/v1/leads/batch", "batch-1", &body).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(json_of(again).await, first_body);
    assert_eq!(all_ids(&app).await, before);

    let other = json!({"leads": [{"email": "b3@acme.com"}]});
    let res = post_with_key(&app, "/v1/leads/batch", "batch-1", &other).await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "Idempotency-Key");
    assert_eq!(all_ids(&app).await, before);
}

// ----- POST /v1/leads/batch -----

#[tokio::test]
async fn batch_reports_each_item_in_order() {
    let app = spawn_app().await;
    let existing = app
        .create_lead(&app.admin, json!({"email": "old@acme.com"}))
        .await;
    let res = app
        .post(
            "/v1/leads/batch",
            &app.admin,
            &json!({"leads": [
                {"email": "a@acme.com", "name": "A"},
                {"email": "OLD@acme.com", "company": "Acme"},
                {"email": "not-an-email"},
                {"name": "B", "bogus": 1},
                {"phone": "13800000009"},
                {},
                {"name": "C", "id": "x"}
            ]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_of(res).await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["index"], i);
    }
    let statuses: Vec<u64> = items
        .iter()
        .map(|i| i["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 200, 422, 422, 201, 422, 422]);

    assert_eq!(items[0]["merged"], false);
    assert_eq!(items[0]["lead"]["name"], "A");
    assert_eq!(items[0]["id"], items[0]["lead"]["id"]);
    assert!(items[0]["error"].is_null());

    assert_eq!(items[1]["merged"], true);
    assert_eq!(items[1]["id"], existing["id"]);
    assert_eq!(items[1]["lead"]["company"], "Acme");

    assert!(items[2]["id"].is_null() && items[2]["lead"].is_null());
    assert_eq!(items[2]["error"]["status"], 422);
    assert_eq!(items[2]["error"]["errors"][0]["field"], "leads[2].email");
    assert_eq!(items[3]["error"]["errors"][0]["field"], "leads[3].bogus");
    assert_eq!(items[4]["lead"]["phone"], "+8613800000009");
    assert!(
        items[5]["error"]["errors"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("leads[5]")
    );
    assert_eq!(items[6]["error"]["errors"][0]["field"], "leads[6].id");
    assert_eq!(items[6]["error"]["errors"][0]["message"], "is read-only");

    let mut listed = all_ids(&app).await;
    listed.sort();
    let mut expected = vec![
        id_of(&existing),
        items[0]["id"].as_str().unwrap().to_owned(),
        items[4]["id"].as_str().unwrap().to_owned(),
    ];
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn batch_dedupes_within_itself() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/leads/batch",
            &app.admin,
            &json!({"leads": [
                {"email": "dup@acme.com", "title": "CTO"},
                {"email": " Dup@ACME.com", "title": "CEO", "company": "Acme"},
                {"phone": "13812345678", "name": "P"},
                {"phone": "+86 138 1234 5678", "email": "p@acme.com"}
            ]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_of(res).await;
    let items = body["items"].as_array().unwrap();
    let statuses: Vec<u64> = items
        .iter()
        .map(|i| i["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 200, 201, 200]);
    assert_eq!(items[0]["id"], items[1]["id"]);
    assert_eq!(items[2]["id"], items[3]["id"]);
    assert_ne!(items[0]["id"], items[2]["id"]);
    assert_eq!(items[1]["lead"]["title"], "CTO");
    assert_eq!(items[1]["lead"]["company"], "Acme");
    assert_eq!(items[3]["lead"]["email"], "p@acme.com");
    assert_eq!(all_ids(&app).await.len(), 2);
}

#[tokio::test]
async fn batch_of_zero_or_over_1000_leads_is_422() {
    let app = spawn_app().await;
    let res = app
        .post("/v1/leads/batch", &app.admin, &json!({"leads": []}))
        .await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "leads");

    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"name": format!("n{i}")}))
        .collect();
    let res = app
        .post("/v1/leads/batch", &app.admin, &json!({"leads": many}))
        .await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "leads");

    let res = app.post("/v1/leads/batch", &app.admin, &json!({})).await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "leads");

    let res = app
        .post(
            "/v1/leads/batch",
            &app.admin,
            &json!({"leads": [{"name": "a"}], "extra": true}),
        )
        .await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "extra");
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn batch_of_exactly_1000_leads_creates_them_all() {
    let app = spawn_app().await;
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({"email": format!("p{i}@acme.com")}))
        .collect();
    let res = app
        .post("/v1/leads/batch", &app.admin, &json!({"leads": many}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_of(res).await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1000);
    assert!(items.iter().all(|i| i["status"] == 201));
    assert_eq!(items[999]["lead"]["email"], "p999@acme.com");
    let (walked, _) = walk(&app, &app.admin, &[], 500).await;
    assert_eq!(walked.len(), 1000);
}

#[tokio::test]
async fn batch_error_statuses() {
    let app = spawn_app().await;
    let res = send_raw(
        &app,
        Method::POST,
        "/v1/leads/batch",
        &app.admin,
        "application/json",
        "{\"leads\": [",
    )
    .await;
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    let res = send_raw(
        &app,
        Method::POST,
        "/v1/leads/batch",
        &app.admin,
        "text/csv",
        "name\nA\n",
    )
    .await;
    assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let res = app
        .client
        .post(app.url("/v1/leads/batch"))
        .json(&json!({"leads": [{"name": "A"}]}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn batch_item_errors_name_the_item_whoever_finds_them() {
    // Regression: errors found while storing (an unknown owner) were not prefixed with
    // `leads[i].` like the errors found while parsing, and a non-object item was `body`.
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/leads/batch",
            &app.admin,
            &json!({"leads": [
                {"name": "a", "owner_id": Uuid::now_v7()},
                1,
                {"name": "ok"}
            ]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_of(res).await;
    let items = body["items"].as_array().unwrap();
    let statuses: Vec<u64> = items
        .iter()
        .map(|i| i["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [422, 422, 201]);
    assert_eq!(items[0]["error"]["errors"][0]["field"], "leads[0].owner_id");
    assert!(
        items[0]["error"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("leads[0].owner_id")
    );
    assert_eq!(items[1]["error"]["errors"][0]["field"], "leads[1]");
    assert_eq!(all_ids(&app).await.len(), 1);
}

// ----- GET /v1/leads: filters -----

/// Four leads that differ in every filterable field, created in order a, b, c, d.
struct Fixture {
    rep: String,
    pool: String,
    campaign: String,
}

async fn filter_fixture(app: &TestApp) -> Fixture {
    let (rep, _) = app.rep("li", None).await;
    let pool = Uuid::now_v7().to_string();
    let campaign = Uuid::now_v7().to_string();
    app.create_lead(
        &app.admin,
        json!({"name": "a", "stage": "mql", "status": "attempting", "owner_id": rep,
               "source": "Web", "channel": "social", "tags": ["vip"], "campaign_id": campaign}),
    )
    .await;
    app.create_lead(
        &app.admin,
        json!({"name": "b", "pool_id": pool, "source": "expo", "channel": "event",
               "tags": ["cold", "VIP"]}),
    )
    .await;
    app.create_lead(
        &app.admin,
        json!({"name": "c", "stage": "sql", "status": "connected", "source": "web",
               "channel": "paid_search", "tags": ["cold"]}),
    )
    .await;
    app.create_lead(
        &app.admin,
        json!({"name": "d", "stage": "disqualified", "status": "unqualified"}),
    )
    .await;
    Fixture {
        rep,
        pool,
        campaign,
    }
}

/// Asserts that `query` lists exactly the leads named `expected`, in each sort's order.
async fn assert_lists(app: &TestApp, query: &[(&str, &str)], expected: &[&str]) {
    for sort in SORTS {
        let everything = names(&list(app, &[("sort", sort)]).await);
        let want: Vec<String> = everything
            .into_iter()
            .filter(|n| expected.contains(&n.as_str()))
            .collect();
        assert_eq!(
            want.len(),
            expected.len(),
            "fixture lacks one of {expected:?}"
        );
        let mut q = query.to_vec();
        q.push(("sort", sort));
        let got = names(&list(app, &q).await);
        assert_eq!(got, want, "{q:?}");
    }
}

#[tokio::test]
async fn list_filters_by_stage_and_status() {
    let app = spawn_app().await;
    filter_fixture(&app).await;
    assert_lists(&app, &[("stage", "mql")], &["a"]).await;
    assert_lists(&app, &[("stage", "lead")], &["b"]).await;
    assert_lists(&app, &[("stage", "sql")], &["c"]).await;
    assert_lists(&app, &[("stage", "disqualified")], &["d"]).await;
    assert_lists(&app, &[("stage", "customer")], &[]).await;
    assert_lists(&app, &[("status", "attempting")], &["a"]).await;
    assert_lists(&app, &[("status", "new")], &["b"]).await;
    assert_lists(&app, &[("status", "connected")], &["c"]).await;
    assert_lists(&app, &[("status", "unqualified")], &["d"]).await;
    assert_lists(&app, &[("status", "converted")], &[]).await;
    assert_lists(&app, &[("stage", "mql"), ("status", "new")], &[]).await;
}

#[tokio::test]
async fn list_filters_by_owner_including_none() {
    let app = spawn_app().await;
    let f = filter_fixture(&app).await;
    assert_lists(&app, &[("owner_id", &f.rep)], &["a"]).await;
    assert_lists(&app, &[("owner_id", "none")], &["b", "c", "d"]).await;
    assert_lists(&app, &[("owner_id", "none"), ("stage", "sql")], &["c"]).await;
    let stranger = Uuid::now_v7().to_string();
    assert_lists(&app, &[("owner_id", &stranger)], &[]).await;
}

#[tokio::test]
async fn list_filters_by_pool_campaign_source_channel_and_tag() {
    let app = spawn_app().await;
    let f = filter_fixture(&app).await;
    assert_lists(&app, &[("pool_id", &f.pool)], &["b"]).await;
    assert_lists(&app, &[("campaign_id", &f.campaign)], &["a"]).await;
    assert_lists(&app, &[("source", "web")], &["a", "c"]).await;
    assert_lists(&app, &[("source", "WEB")], &["a", "c"]).await;
    assert_lists(&app, &[("source", "expo")], &["b"]).await;
    assert_lists(&app, &[("channel", "event")], &["b"]).await;
    assert_lists(&app, &[("channel", "paid_search")], &["c"]).await;
    assert_lists(&app, &[("channel", "email")], &[]).await;
    assert_lists(&app, &[("tag", "vip")], &["a", "b"]).await;
    assert_lists(&app, &[("tag", "VIP")], &["a", "b"]).await;
    assert_lists(&app, &[("tag", "cold")], &["b", "c"]).await;
    assert_lists(&app, &[("tag", "vi")], &[]).await;
    assert_lists(&app, &[("tag", "cold"), ("source", "web")], &["c"]).await;
    assert_lists(&app, &[("tag", "vip"), ("stage", "lead")], &["b"]).await;
    assert_lists(&app, &[("source", "web"), ("channel", "social")], &["a"]).await;
    let other = Uuid::now_v7().to_string();
    assert_lists(&app, &[("pool_id", &other)], &[]).await;
    assert_lists(&app, &[("campaign_id", &other)], &[]).await;
}

#[tokio::test]
async fn list_filters_by_score_range() {
    // Every score is 0 until scoring lands: [0, ∞) holds all, (-∞, -1] none.
    let app = spawn_app().await;
    filter_fixture(&app).await;
    let all = ["a", "b", "c", "d"];
    assert_lists(&app, &[("min_score", "0")], &all).await;
    assert_lists(&app, &[("max_score", "0")], &all).await;
    assert_lists(&app, &[("min_score", "0"), ("max_score", "0")], &all).await;
    assert_lists(&app, &[("min_score", "-100"), ("max_score", "100")], &all).await;
    assert_lists(&app, &[("max_score", "-1")], &[]).await;
    assert_lists(&app, &[("min_score", "1")], &[]).await;
    assert_lists(&app, &[("min_score", "1"), ("max_score", "0")], &[]).await;
    assert_lists(&app, &[("min_score", "0"), ("stage", "mql")], &["a"]).await;
}

#[tokio::test]
async fn list_filters_by_created_window() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for name in ["t1", "t2", "t3"] {
        let lead = app.create_lead(&app.admin, json!({"name": name})).await;
        created.push(lead["created_at"].as_str().unwrap().to_owned());
        next_millisecond().await;
    }
    let (t1, t2, t3) = (&created[0], &created[1], &created[2]);
    assert!(t1 < t2 && t2 < t3, "{created:?}");
    // both bounds are exclusive
    assert_lists(&app, &[("created_after", t1)], &["t2", "t3"]).await;
    assert_lists(&app, &[("created_before", t3)], &["t1", "t2"]).await;
    assert_lists(
        &app,
        &[("created_after", t1), ("created_before", t3)],
        &["t2"],
    )
    .await;
    assert_lists(&app, &[("created_after", t3)], &[]).await;
    assert_lists(&app, &[("created_before", t1)], &[]).await;
    assert_lists(
        &app,
        &[("created_after", "2000-01-01T00:00:00Z")],
        &["t1", "t2", "t3"],
    )
    .await;
    // any offset names the same instant
    let ms = leadline::domain::time::parse_rfc3339(t1).unwrap();
    let shifted = chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    assert!(shifted.ends_with("+08:00"));
    assert_lists(&app, &[("created_after", &shifted)], &["t2", "t3"]).await;
}

#[tokio::test]
async fn list_filters_by_updated_after() {
    let app = spawn_app().await;
    let one = app.create_lead(&app.admin, json!({"name": "one"})).await;
    let two = app.create_lead(&app.admin, json!({"name": "two"})).await;
    next_millisecond().await;
    let res = app
        .patch(
            &format!("/v1/leads/{}", id_of(&one)),
            &app.admin,
            &json!({"title": "CEO"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let since = two["updated_at"].as_str().unwrap();
    assert_lists(&app, &[("updated_after", since)], &["one"]).await;
    assert_lists(
        &app,
        &[("updated_after", "2000-01-01T00:00:00Z")],
        &["one", "two"],
    )
    .await;
    assert_lists(&app, &[("updated_after", "2999-01-01T00:00:00Z")], &[]).await;
}

// ----- GET /v1/leads: sorts and paging -----

/// Creates `n` leads one by one, a millisecond apart; returns their ids in creation order.
async fn create_spaced(app: &TestApp, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let lead = app
            .create_lead(&app.admin, json!({"name": format!("s{i}")}))
            .await;
        out.push(id_of(&lead));
        next_millisecond().await;
    }
    out
}

#[tokio::test]
async fn list_sorts_by_created_at_both_ways_newest_first_by_default() {
    let app = spawn_app().await;
    let created = create_spaced(&app, 4).await;
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(ids(&list(&app, &[]).await), newest_first);
    assert_eq!(
        ids(&list(&app, &[("sort", "-created_at")]).await),
        newest_first
    );
    assert_eq!(ids(&list(&app, &[("sort", "created_at")]).await), created);
}

#[tokio::test]
async fn list_sorts_by_score_with_id_as_tie_break() {
    let app = spawn_app().await;
    let created = create_spaced(&app, 4).await;
    let mut desc = created.clone();
    desc.reverse();
    // all scores are equal, so the id decides, and ids grow with creation
    assert_eq!(ids(&list(&app, &[("sort", "score")]).await), created);
    assert_eq!(ids(&list(&app, &[("sort", "-score")]).await), desc);
}

#[tokio::test]
async fn list_sorts_by_updated_at_both_ways() {
    let app = spawn_app().await;
    let created = create_spaced(&app, 3).await;
    let res = app
        .patch(
            &format!("/v1/leads/{}", created[0]),
            &app.admin,
            &json!({"title": "touched"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let asc = vec![created[1].clone(), created[2].clone(), created[0].clone()];
    let desc: Vec<String> = asc.iter().rev().cloned().collect();
    assert_eq!(ids(&list(&app, &[("sort", "updated_at")]).await), asc);
    assert_eq!(ids(&list(&app, &[("sort", "-updated_at")]).await), desc);
    // created order is unaffected by the update
    assert_eq!(ids(&list(&app, &[("sort", "created_at")]).await), created);
}

#[tokio::test]
async fn list_order_is_stable_when_timestamps_tie() {
    let app = spawn_app().await;
    // one batch is one transaction: every lead gets the same created_at and updated_at
    let leads: Vec<Value> = (0..6).map(|i| json!({"name": format!("tie{i}")})).collect();
    let res = app
        .post("/v1/leads/batch", &app.admin, &json!({"leads": leads}))
        .await;
    let body = json_of(res).await;
    let created: Vec<String> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    let stamps: HashSet<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["lead"]["created_at"].as_str().unwrap())
        .collect();
    assert_eq!(stamps.len(), 1);
    let mut desc = created.clone();
    desc.reverse();
    for (sort, want) in [
        ("created_at", &created),
        ("-created_at", &desc),
        ("score", &created),
        ("-score", &desc),
        ("updated_at", &created),
        ("-updated_at", &desc),
    ] {
        for _ in 0..2 {
            assert_eq!(&ids(&list(&app, &[("sort", sort)]).await), want, "{sort}");
        }
    }
}

#[tokio::test]
async fn cursor_paging_visits_every_lead_once_in_every_sort() {
    let app = spawn_app().await;
    // some leads share a timestamp (one batch), the rest are created one by one
    let batch: Vec<Value> = (0..10).map(|i| json!({"name": format!("b{i}")})).collect();
    let res = app
        .post("/v1/leads/batch", &app.admin, &json!({"leads": batch}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    for i in 0..15 {
        app.create_lead(&app.admin, json!({"name": format!("s{i}")}))
            .await;
    }
    for sort in SORTS {
        let full = ids(&list(&app, &[("sort", sort), ("limit", "500")]).await);
        assert_eq!(full.len(), 25);
        let (walked, pages) = walk(&app, &app.admin, &[("sort", sort)], 7).await;
        assert_eq!(pages, 4, "{sort}: 7 + 7 + 7 + 4");
        let unique: HashSet<&String> = walked.iter().collect();
        assert_eq!(unique.len(), walked.len(), "{sort}: duplicates");
        assert_eq!(walked, full, "{sort}: same order as one page");
    }
}

#[tokio::test]
async fn cursor_paging_respects_filters() {
    let app = spawn_app().await;
    let leads: Vec<Value> = (0..25)
        .map(|i| {
            let tag = if i % 2 == 0 { "even" } else { "odd" };
            json!({"name": format!("n{i}"), "tags": [tag], "stage": if i % 3 == 0 { "mql" } else { "lead" }})
        })
        .collect();
    let res = app
        .post("/v1/leads/batch", &app.admin, &json!({"leads": leads}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    for sort in SORTS {
        for (q, n) in [
            (vec![("tag", "even")], 13),
            (vec![("stage", "mql")], 9),
            (vec![("tag", "odd"), ("stage", "mql")], 4),
            (vec![("min_score", "0"), ("max_score", "0")], 25),
            (
                vec![
                    ("created_after", "2000-01-01T00:00:00Z"),
                    ("created_before", "2999-01-01T00:00:00Z"),
                    ("updated_after", "2000-01-01T00:00:00Z"),
                ],
                25,
            ),
            (vec![("owner_id", "none"), ("tag", "even")], 13),
        ] {
            let mut q = q.clone();
            q.push(("sort", sort));
            let full = ids(&list(&app, &q).await);
            assert_eq!(full.len(), n, "{q:?}");
            let (walked, _) = walk(&app, &app.admin, &q, 3).await;
            assert_eq!(walked, full, "{q:?}");
        }
    }
}

#[tokio::test]
async fn cursor_paging_as_a_rep_walks_own_and_pool_leads_once() {
    let app = spawn_app().await;
    let (rep_id, rep) = app.rep("wang", None).await;
    let pool = Uuid::now_v7().to_string();
    let mut visible = HashSet::new();
    for i in 0..24 {
        let body = match i % 3 {
            0 => json!({"name": format!("own{i}"), "owner_id": rep_id}),
            1 => json!({"name": format!("pool{i}"), "pool_id": pool}),
            _ => json!({"name": format!("hidden{i}")}),
        };
        let lead = app.create_lead(&app.admin, body).await;
        if i % 3 != 2 {
            visible.insert(id_of(&lead));
        }
    }
    for sort in SORTS {
        let (walked, _) = walk(&app, &rep, &[("sort", sort)], 5).await;
        assert_eq!(walked.len(), visible.len(), "{sort}");
        let got: HashSet<String> = walked.into_iter().collect();
        assert_eq!(got, visible, "{sort}");
    }
}

#[tokio::test]
async fn list_of_nothing_is_an_empty_page() {
    let app = spawn_app().await;
    let page = list(&app, &[]).await;
    assert_eq!(page["items"], json!([]));
    assert!(page["next_cursor"].is_null());
}

#[tokio::test]
async fn list_default_limit_is_50_and_max_is_500() {
    let app = spawn_app().await;
    let leads: Vec<Value> = (0..60).map(|i| json!({"name": format!("n{i}")})).collect();
    app.post("/v1/leads/batch", &app.admin, &json!({"leads": leads}))
        .await;
    let page = list(&app, &[]).await;
    assert_eq!(ids(&page).len(), 50);
    assert!(page["next_cursor"].is_string());
    let page = list(&app, &[("limit", "500")]).await;
    assert_eq!(ids(&page).len(), 60);
    assert!(page["next_cursor"].is_null());
}

#[tokio::test]
async fn list_rejects_bad_parameters_with_422() {
    let app = spawn_app().await;
    app.create_lead(&app.admin, json!({"name": "x"})).await;
    let cases: [(&str, &str); 18] = [
        ("limit", "0"),
        ("limit", "501"),
        ("limit", "-1"),
        ("limit", "ten"),
        ("cursor", "garbage!"),
        ("cursor", "AAAA"),
        ("stage", "won"),
        ("status", "busy"),
        ("sort", "name"),
        ("sort", "+score"),
        ("owner_id", "nobody"),
        ("pool_id", "x"),
        ("campaign_id", "x"),
        ("min_score", "high"),
        ("max_score", "1.5"),
        ("created_after", "yesterday"),
        ("created_before", "2026-13-01T00:00:00Z"),
        ("updated_after", "1700000000"),
    ];
    for (name, value) in cases {
        let res = list_status(&app, &[(name, value)]).await;
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&p), name, "{name}={value}");
    }
    let res = list_status(&app, &[("colour", "red")]).await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&p), "colour");
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown")
    );
    let res = list_status(&app, &[("stage", "MQL")]).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn list_without_a_valid_token_is_401() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/v1/leads")).send().await.unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let res = app.get("/v1/leads", "wrong").await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

// ----- GET /v1/leads/{id} -----

#[tokio::test]
async fn get_returns_the_lead_with_its_etag() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(&app.admin, json!({"email": "get@acme.com", "name": "G"}))
        .await;
    let id = id_of(&lead);
    let res = app.get(&format!("/v1/leads/{id}"), &app.admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "etag").as_deref(), Some("\"1\""));
    let read = json_of(res).await;
    let mut expected = lead.clone();
    expected.as_object_mut().unwrap().remove("merged");
    assert_eq!(read, expected);
}

#[tokio::test]
async fn get_unknown_or_malformed_id_is_404() {
    let app = spawn_app().await;
    app.create_lead(&app.admin, json!({"name": "x"})).await;
    for id in [
        Uuid::now_v7().to_string(),
        Uuid::nil().to_string(),
        "not-a-uuid".to_owned(),
        "123".to_owned(),
    ] {
        let res = app.get(&format!("/v1/leads/{id}"), &app.admin).await;
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn get_without_a_valid_token_is_401() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "x"})).await;
    let res = app
        .client
        .get(app.url(&format!("/v1/leads/{}", id_of(&lead))))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

// ----- PATCH /v1/leads/{id} -----

#[tokio::test]
async fn patch_is_a_merge_patch() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(
            &app.admin,
            json!({
                "name": "Old",
                "company": "Acme",
                "title": "CTO",
                "phone": "13812345678",
                "tags": ["a", "b"],
                "fields": {"a": 1, "keep": true, "nested": {"x": 1, "y": 2}},
                "utm": {"source": "baidu", "medium": "cpc"}
            }),
        )
        .await;
    let id = id_of(&lead);
    let res = app
        .patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({
                "title": "CEO",
                "company": null,
                "fields": {"a": null, "b": 2, "nested": {"x": null, "z": 3}},
                "utm": {"medium": null, "campaign": "spring"}
            }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "etag").as_deref(), Some("\"2\""));
    let patched = json_of(res).await;
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["title"], "CEO");
    assert!(patched["company"].is_null());
    // absent fields are left alone
    assert_eq!(patched["name"], "Old");
    assert_eq!(patched["phone"], "+8613812345678");
    assert_eq!(patched["tags"], json!(["a", "b"]));
    assert_eq!(
        patched["fields"],
        json!({"keep": true, "b": 2, "nested": {"y": 2, "z": 3}})
    );
    assert_eq!(
        patched["utm"],
        json!({"source": "baidu", "medium": null, "campaign": "spring", "term": null, "content": null})
    );
    assert!(patched["updated_at"].as_str() >= lead["updated_at"].as_str());
    assert_eq!(patched["created_at"], lead["created_at"]);
    // and stored so
    let read = json_of(app.get(&format!("/v1/leads/{id}"), &app.admin).await).await;
    assert_eq!(read, patched);
}

#[tokio::test]
async fn patch_null_clears_whole_objects_and_lists() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(
            &app.admin,
            json!({"name": "N", "tags": ["a"], "fields": {"a": 1}, "utm": {"source": "s"},
                   "company_size": 50, "next_follow_up_at": "2030-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(lead["next_follow_up_at"], "2030-01-01T00:00:00.000Z");
    let res = app
        .patch(
            &format!("/v1/leads/{}", id_of(&lead)),
            &app.admin,
            &json!({"tags": null, "fields": null, "utm": null, "company_size": null,
                    "next_follow_up_at": null}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let patched = json_of(res).await;
    assert_eq!(patched["tags"], json!([]));
    assert_eq!(patched["fields"], json!({}));
    assert!(patched["utm"]["source"].is_null());
    assert!(patched["company_size"].is_null());
    assert!(patched["next_follow_up_at"].is_null());
}

#[tokio::test]
async fn patch_replaces_tags_and_normalizes_values() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(&app.admin, json!({"name": "N", "tags": ["a"]}))
        .await;
    let res = app
        .patch(
            &format!("/v1/leads/{}", id_of(&lead)),
            &app.admin,
            &json!({"tags": ["X", "y", "x"], "email": " Mixed@Case.COM ", "phone": "+86 139 0000 2222",
                    "channel": "EMAIL", "source": "Expo", "stage": "sql", "status": "connected",
                    "flags": {"do_not_contact": true}}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let p = json_of(res).await;
    assert_eq!(p["tags"], json!(["x", "y"]));
    assert_eq!(p["email"], "mixed@case.com");
    assert_eq!(p["phone"], "+8613900002222");
    assert_eq!(p["channel"], "email");
    assert_eq!(p["source"], "expo");
    assert_eq!(p["stage"], "sql");
    assert_eq!(p["status"], "connected");
    assert_eq!(p["flags"]["do_not_contact"], true);
    // the new email dedupes now
    let res = app
        .post("/v1/leads", &app.admin, &json!({"email": "MIXED@case.com"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await["id"], lead["id"]);
}

#[tokio::test]
async fn patch_accepts_application_json_too() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "N"})).await;
    let path = format!("/v1/leads/{}", id_of(&lead));
    let res = send_raw(
        &app,
        Method::PATCH,
        &path,
        &app.admin,
        "application/json",
        json!({"title": "VP"}).to_string(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await["title"], "VP");
    let res = send_raw(
        &app,
        Method::PATCH,
        &path,
        &app.admin,
        "text/plain",
        json!({"title": "CEO"}).to_string(),
    )
    .await;
    assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let res = send_raw(
        &app,
        Method::PATCH,
        &path,
        &app.admin,
        "application/merge-patch+json",
        "{\"title\":",
    )
    .await;
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    let read = json_of(app.get(&path, &app.admin).await).await;
    assert_eq!(read["title"], "VP");
    assert_eq!(read["version"], 2);
}

#[tokio::test]
async fn patch_bumps_the_etag_each_time() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "N"})).await;
    let path = format!("/v1/leads/{}", id_of(&lead));
    for v in 2..=4 {
        let res = app
            .patch(&path, &app.admin, &json!({"title": format!("t{v}")}))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "etag"), Some(format!("\"{v}\"")));
        assert_eq!(json_of(res).await["version"], v);
        let res = app.get(&path, &app.admin).await;
        assert_eq!(header(&res, "etag"), Some(format!("\"{v}\"")));
    }
}

#[tokio::test]
async fn patch_with_current_if_match_succeeds_and_stale_is_412() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "N"})).await;
    let id = id_of(&lead);
    let res = patch_if_match(&app, &id, "\"1\"", &json!({"title": "A"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "etag").as_deref(), Some("\"2\""));

    // an unquoted or non-numeric tag never names the current version either
    for stale in ["\"1\"", "\"3\"", "W/\"1\"", "\"abc\"", "1", ""] {
        let res = patch_if_match(&app, &id, stale, &json!({"title": "B"})).await;
        assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
    }
    let read = json_of(app.get(&format!("/v1/leads/{id}"), &app.admin).await).await;
    assert_eq!(read["title"], "A");
    assert_eq!(read["version"], 2);

    // a list of tags matches if any does; `*` matches any version
    let res = patch_if_match(&app, &id, "\"1\", \"2\"", &json!({"title": "C"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = patch_if_match(&app, &id, "*", &json!({"title": "D"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await["version"], 4);
}

#[tokio::test]
async fn concurrent_patches_with_one_if_match_let_exactly_one_win() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "N"})).await;
    let id = id_of(&lead);
    for round in 0..8u64 {
        let version = round + 1;
        let etag = format!("\"{version}\"");
        let (body_a, body_b) = (
            json!({"title": format!("a{round}")}),
            json!({"title": format!("b{round}")}),
        );
        let (a, b) = tokio::join!(
            patch_if_match(&app, &id, &etag, &body_a),
            patch_if_match(&app, &id, &etag, &body_b)
        );
        let (sa, sb) = (a.status(), b.status());
        let mut statuses = [sa.as_u16(), sb.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [200, 412], "round {round}");
        let winner = if sa == StatusCode::OK { a } else { b };
        let won = json_of(winner).await;
        assert_eq!(won["version"], version + 1);
        let read = json_of(app.get(&format!("/v1/leads/{id}"), &app.admin).await).await;
        assert_eq!(read["version"], version + 1);
        assert_eq!(read["title"], won["title"]);
    }
}

#[tokio::test]
async fn many_concurrent_conditional_patches_yield_one_winner() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "N"})).await;
    let url = app.url(&format!("/v1/leads/{}", id_of(&lead)));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let client = app.client.clone();
        let url = url.clone();
        let token = app.admin.clone();
        tasks.push(tokio::spawn(async move {
            client
                .patch(url)
                .bearer_auth(token)
                .header("content-type", "application/merge-patch+json")
                .header("if-match", "\"1\"")
                .body(json!({"title": format!("t{i}")}).to_string())
                .send()
                .await
                .expect("request")
                .status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::PRECONDITION_FAILED => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1);
    let read = json_of(app.get(&url[app.base.len()..], &app.admin).await).await;
    assert_eq!(read["version"], 2);
}

#[tokio::test]
async fn patch_that_changes_nothing_keeps_the_version() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(
            &app.admin,
            json!({"name": "N", "email": "same@acme.com", "title": "CTO", "fields": {"a": 1}}),
        )
        .await;
    let path = format!("/v1/leads/{}", id_of(&lead));
    for noop in [
        json!({}),
        json!({"title": "CTO"}),
        json!({"email": "SAME@acme.com "}),
        json!({"fields": {"a": 1}}),
        json!({"company": null}),
        json!({"stage": "lead", "status": "new"}),
    ] {
        let res = app.patch(&path, &app.admin, &noop).await;
        assert_eq!(res.status(), StatusCode::OK, "{noop}");
        assert_eq!(header(&res, "etag").as_deref(), Some("\"1\""), "{noop}");
        let body = json_of(res).await;
        assert_eq!(body["version"], 1, "{noop}");
        assert_eq!(body["updated_at"], lead["updated_at"], "{noop}");
    }
    let items = timeline(&app, &id_of(&lead)).await;
    assert!(events_of_kind(&items, "updated").is_empty());
    // a no-op still honours If-Match
    let res = patch_if_match(&app, &id_of(&lead), "\"7\"", &json!({})).await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
}

#[tokio::test]
async fn patch_to_another_leads_email_or_phone_is_409() {
    let app = spawn_app().await;
    app.create_lead(
        &app.admin,
        json!({"email": "taken@acme.com", "phone": "13800000001"}),
    )
    .await;
    let mine = app
        .create_lead(&app.admin, json!({"email": "mine@acme.com"}))
        .await;
    let path = format!("/v1/leads/{}", id_of(&mine));
    for body in [
        json!({"email": "taken@acme.com"}),
        json!({"email": " TAKEN@Acme.com"}),
        json!({"phone": "+86 138 0000 0001"}),
        json!({"title": "x", "phone": "8613800000001"}),
    ] {
        let res = app.patch(&path, &app.admin, &body).await;
        assert_problem(res, StatusCode::CONFLICT).await;
    }
    let read = json_of(app.get(&path, &app.admin).await).await;
    assert_eq!(read["email"], "mine@acme.com");
    assert!(read["phone"].is_null());
    assert!(read["title"].is_null());
    assert_eq!(read["version"], 1);
}

#[tokio::test]
async fn patch_moves_the_dedupe_keys() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(
            &app.admin,
            json!({"email": "old@acme.com", "phone": "13800000011"}),
        )
        .await;
    let id = id_of(&lead);
    let res = app
        .patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"email": "new@acme.com", "phone": null}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // the old email and the cleared phone are free for other leads
    let by_old_email = app
        .create_lead(&app.admin, json!({"email": "old@acme.com"}))
        .await;
    assert_ne!(id_of(&by_old_email), id);
    let by_phone = app
        .create_lead(&app.admin, json!({"phone": "13800000011"}))
        .await;
    assert_ne!(id_of(&by_phone), id);
    // the new email dedupes to the patched lead
    let res = app
        .post("/v1/leads", &app.admin, &json!({"email": "NEW@acme.com"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(id_of(&json_of(res).await), id);
    // and the freed email, now another lead's, is a conflict for the first
    let res = app
        .patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"email": "old@acme.com"}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn patch_stage_change_writes_a_timeline_event() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "N"})).await;
    let id = id_of(&lead);
    let res = app
        .patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"stage": "mql"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"stage": "sql", "title": "x"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"title": "y"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    let items = timeline(&app, &id).await;
    let changes = events_of_kind(&items, "stage_changed");
    assert_eq!(changes.len(), 2, "{items:?}");
    // newest first
    assert_eq!(changes[0]["data"], json!({"from": "mql", "to": "sql"}));
    assert_eq!(changes[1]["data"], json!({"from": "lead", "to": "mql"}));
    assert!(changes.iter().all(|c| c["actor_id"].is_string()));
    assert_eq!(events_of_kind(&items, "updated").len(), 3);
    // the list sees the new stage
    assert_eq!(
        ids(&list(&app, &[("stage", "sql")]).await),
        vec![id.clone()]
    );
    assert!(ids(&list(&app, &[("stage", "lead")]).await).is_empty());
}

#[tokio::test]
async fn patch_with_invalid_values_is_422_naming_the_field() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(&app.admin, json!({"email": "only@acme.com"}))
        .await;
    let path = format!("/v1/leads/{}", id_of(&lead));
    let cases = [
        (json!({"email": "bad"}), "email"),
        (json!({"phone": "12"}), "phone"),
        (json!({"channel": "tv"}), "channel"),
        (json!({"stage": "won"}), "stage"),
        (json!({"status": "busy"}), "status"),
        (json!({"company_size": -1}), "company_size"),
        (
            json!({"next_follow_up_at": "tomorrow"}),
            "next_follow_up_at",
        ),
        (json!({"owner_id": "nobody"}), "owner_id"),
        (json!({"owner_id": Uuid::now_v7()}), "owner_id"),
        (json!({"colour": "red"}), "colour"),
        (json!({"utm": {"bogus": "x"}}), "utm.bogus"),
        (json!({"utm": {"source": 5}}), "utm.source"),
        (json!({"tags": ["ok", "x".repeat(65)]}), "tags[1]"),
        (json!({"name": "n".repeat(501)}), "name"),
        (json!({"email": null}), "email"),
    ];
    for (body, field) in cases {
        let res = app.patch(&path, &app.admin, &body).await;
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&p), field, "{body}");
    }
    for field in ["id", "score", "version", "created_at", "merged"] {
        let mut body = json!({"title": "x"});
        body[field] = json!(1);
        let res = app.patch(&path, &app.admin, &body).await;
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&p), field);
        assert_eq!(p["errors"][0]["message"], "is read-only");
    }
    let read = json_of(app.get(&path, &app.admin).await).await;
    assert_eq!(read["version"], 1);
    assert_eq!(read["email"], "only@acme.com");
}

#[tokio::test]
async fn patch_unknown_or_malformed_id_is_404() {
    let app = spawn_app().await;
    for id in [Uuid::now_v7().to_string(), "nope".to_owned()] {
        let res = app
            .patch(
                &format!("/v1/leads/{id}"),
                &app.admin,
                &json!({"title": "x"}),
            )
            .await;
        assert_problem(res, StatusCode::NOT_FOUND).await;
        let res = patch_if_match(&app, &id, "\"1\"", &json!({"title": "x"})).await;
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn patch_without_a_valid_token_is_401() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "N"})).await;
    let res = app
        .patch(
            &format!("/v1/leads/{}", id_of(&lead)),
            "bogus",
            &json!({"title": "x"}),
        )
        .await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

// ----- DELETE /v1/leads/{id} -----

#[tokio::test]
async fn delete_erases_the_lead_its_activities_and_its_dedupe_keys() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(
            &app.admin,
            json!({"email": "gone@acme.com", "phone": "13800000077", "name": "Gone"}),
        )
        .await;
    let id = id_of(&lead);
    let res = app
        .post(
            &format!("/v1/leads/{id}/activities"),
            &app.admin,
            &json!({"kind": "note", "text": "called, no answer"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let keep = app.create_lead(&app.admin, json!({"name": "Keep"})).await;

    let res = app.delete(&format!("/v1/leads/{id}"), &app.admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.bytes().await.unwrap().is_empty());

    for sub in ["", "/activities", "/timeline", "/export"] {
        let res = app.get(&format!("/v1/leads/{id}{sub}"), &app.admin).await;
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
    assert_eq!(all_ids(&app).await, vec![id_of(&keep)]);
    assert!(
        ids(&list(&app, &[("owner_id", "none"), ("sort", "score")]).await)
            .iter()
            .all(|i| *i != id)
    );

    // neither email nor phone dedupes any more
    let again = app
        .create_lead(&app.admin, json!({"email": "GONE@acme.com"}))
        .await;
    assert_ne!(id_of(&again), id);
    assert!(
        again["name"].is_null(),
        "nothing of the erased lead came back"
    );
    let by_phone = app
        .create_lead(&app.admin, json!({"phone": "13800000077"}))
        .await;
    assert_ne!(id_of(&by_phone), id);
    assert_ne!(id_of(&by_phone), id_of(&again));
}

#[tokio::test]
async fn delete_forgets_idempotent_responses_holding_the_lead() {
    let app = spawn_app().await;
    let body = json!({"email": "idem-gone@acme.com", "name": "Secret Name"});
    let first = post_with_key(&app, "/v1/leads", "erase-me", &body).await;
    let first = json_of(first).await;
    let res = app
        .delete(&format!("/v1/leads/{}", id_of(&first)), &app.admin)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // a retry must not replay the erased person's data
    let res = post_with_key(&app, "/v1/leads", "erase-me", &body).await;
    assert_ne!(header(&res, "idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_ne!(id_of(&json_of(res).await), id_of(&first));
}

#[tokio::test]
async fn delete_with_stale_if_match_is_412_and_current_succeeds() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "N"})).await;
    let id = id_of(&lead);
    let path = format!("/v1/leads/{id}");
    app.patch(&path, &app.admin, &json!({"title": "x"})).await;
    let res = app
        .req(Method::DELETE, &path, &app.admin)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(app.get(&path, &app.admin).await.status(), StatusCode::OK);
    let res = app
        .req(Method::DELETE, &path, &app.admin)
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get(&path, &app.admin).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn delete_unknown_or_already_deleted_is_404() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "N"})).await;
    let path = format!("/v1/leads/{}", id_of(&lead));
    assert_eq!(
        app.delete(&path, &app.admin).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(app.delete(&path, &app.admin).await, StatusCode::NOT_FOUND).await;
    for id in [Uuid::now_v7().to_string(), "zzz".to_owned()] {
        let res = app.delete(&format!("/v1/leads/{id}"), &app.admin).await;
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
    let res = app.delete(&path, "bogus").await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

// ----- GET /v1/leads/{id}/export -----

#[tokio::test]
async fn export_holds_the_lead_its_activities_and_events() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(&app.admin, json!({"email": "me@acme.com", "title": "CTO"}))
        .await;
    let id = id_of(&lead);
    for (kind, text) in [("note", "likes MES"), ("call", "follow up Friday")] {
        let res = app
            .post(
                &format!("/v1/leads/{id}/activities"),
                &app.admin,
                &json!({"kind": kind, "text": text}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    app.patch(
        &format!("/v1/leads/{id}"),
        &app.admin,
        &json!({"stage": "mql"}),
    )
    .await;
    app.post(
        "/v1/leads",
        &app.admin,
        &json!({"email": "ME@acme.com", "title": "CEO"}),
    )
    .await;
    let other = app
        .create_lead(&app.admin, json!({"email": "other@acme.com"}))
        .await;
    app.post(
        &format!("/v1/leads/{}/activities", id_of(&other)),
        &app.admin,
        &json!({"kind": "note", "text": "someone else"}),
    )
    .await;

    let res = app.get(&format!("/v1/leads/{id}/export"), &app.admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        header(&res, "content-disposition")
            .unwrap()
            .starts_with("attachment")
    );
    let export = json_of(res).await;
    assert_eq!(export["lead"]["id"], id.as_str());
    assert_eq!(export["lead"]["email"], "me@acme.com");
    assert_eq!(export["lead"]["stage"], "mql");
    let activities = export["activities"].as_array().unwrap();
    let mut texts: Vec<&str> = activities
        .iter()
        .map(|a| a["text"].as_str().unwrap())
        .collect();
    texts.sort();
    assert_eq!(texts, ["follow up Friday", "likes MES"]);
    assert!(activities.iter().all(|a| a["lead_id"] == id.as_str()));
    let events = export["events"].as_array().unwrap();
    let kinds: HashSet<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in ["updated", "stage_changed", "merged"] {
        assert!(kinds.contains(k), "missing {k} in {kinds:?}");
    }
    let merged = events.iter().find(|e| e["kind"] == "merged").unwrap();
    assert_eq!(merged["data"]["conflicts"][0]["offered"], "CEO");
}

#[tokio::test]
async fn export_of_unknown_lead_is_404() {
    let app = spawn_app().await;
    for id in [Uuid::now_v7().to_string(), "x".to_owned()] {
        let res = app.get(&format!("/v1/leads/{id}/export"), &app.admin).await;
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
    let lead = app.create_lead(&app.admin, json!({"name": "N"})).await;
    let res = app
        .get(&format!("/v1/leads/{}/export", id_of(&lead)), "bogus")
        .await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn unsupported_methods_are_405() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "N"})).await;
    for (method, path) in [
        (Method::PUT, format!("/v1/leads/{}", id_of(&lead))),
        (Method::POST, format!("/v1/leads/{}", id_of(&lead))),
        (Method::DELETE, "/v1/leads".to_owned()),
        (Method::GET, "/v1/leads/batch".to_owned()),
    ] {
        let res = app
            .req(method.clone(), &path, &app.admin)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_problem(res, StatusCode::METHOD_NOT_ALLOWED).await;
    }
}

/// The one look past HTTP: erasure must leave no record, index row or dedupe key of the
/// person in the database file, even where no endpoint would show it.
#[tokio::test]
async fn delete_leaves_nothing_of_the_lead_in_the_store() {
    use leadline::store::lead_index::position;
    use leadline::store::tables::{
        IDEMPOTENCY, IDEMPOTENCY_BY_LEAD, LEAD_BY_EMAIL, LEAD_BY_PHONE, LEAD_INDEX,
    };
    use redb::{ReadableTable, ReadableTableMetadata};

    let mut app = spawn_app().await;
    let res = post_with_key(
        &app,
        "/v1/leads",
        "erase-key",
        &json!({"email": "erase@acme.com", "phone": "13800000099", "tags": ["t"],
                "source": "web", "channel": "event", "pool_id": Uuid::now_v7()}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = id_of(&json_of(res).await);
    let res = app
        .post(
            &format!("/v1/leads/{id}/activities"),
            &app.admin,
            &json!({"kind": "note", "text": "private"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let activity = id_of(&json_of(res).await);
    app.patch(
        &format!("/v1/leads/{id}"),
        &app.admin,
        &json!({"stage": "mql"}),
    )
    .await;
    let res = app.delete(&format!("/v1/leads/{id}"), &app.admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.stop().await;

    let store = leadline::store::Store::open(
        app.dir.path(),
        std::sync::Arc::new(leadline::clock::SystemClock),
        leadline::store::WriterConfig::default(),
    )
    .expect("store opens");
    let snap = store.read().unwrap();
    let lead = Uuid::parse_str(&id).unwrap();
    assert!(snap.lead(lead).unwrap().is_none());
    assert!(
        snap.activity(Uuid::parse_str(&activity).unwrap())
            .unwrap()
            .is_none()
    );
    assert!(snap.activities_of(lead).unwrap().is_empty());
    assert!(snap.events_of(lead).unwrap().is_empty());
    let txn = snap.txn();
    let index = txn.open_table(LEAD_INDEX).unwrap();
    for row in index.iter().unwrap() {
        let (k, _) = row.unwrap();
        assert_ne!(position(k.value()).unwrap().1, lead.as_u128());
    }
    let emails = txn.open_table(LEAD_BY_EMAIL).unwrap();
    assert!(emails.get("erase@acme.com").unwrap().is_none());
    let phones = txn.open_table(LEAD_BY_PHONE).unwrap();
    assert!(phones.get("+8613800000099").unwrap().is_none());
    assert_eq!(txn.open_table(IDEMPOTENCY).unwrap().len().unwrap(), 0);
    assert_eq!(
        txn.open_table(IDEMPOTENCY_BY_LEAD).unwrap().len().unwrap(),
        0
    );
}
