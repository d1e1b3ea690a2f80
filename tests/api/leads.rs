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

/// Tokens the server never issued: one shaped like a real token, one not.
const BOGUS_TOKENS: [&str; 2] = ["ll_not_a_real_token", "bogus"];

// ----- local helpers -----

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

fn lead_path(id: &str) -> String {
    format!("/v1/leads/{id}")
}

fn header(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn assert_etag(res: &Response, version: u64) {
    assert_eq!(header(res, "etag"), Some(format!("\"{version}\"")));
}

async fn json_of(res: Response) -> Value {
    res.json().await.expect("json body")
}

/// The id of the `default` pool, where a lead nobody can take waits.
async fn default_pool_id(app: &TestApp) -> String {
    let pools = expect_json(app.get("/v1/pools", &app.admin).await, StatusCode::OK).await;
    page_items(&pools)
        .iter()
        .find(|p| p["name"] == "default")
        .map(id_of)
        .expect("the default pool always exists")
}

/// Creates a pool named `name` as admin and returns its id.
async fn create_pool(app: &TestApp, name: &str) -> String {
    let res = app
        .post("/v1/pools", &app.admin, &json!({ "name": name }))
        .await;
    id_of(&expect_json(res, StatusCode::CREATED).await)
}

/// Creates a lead as admin, asserting 201.
async fn create(app: &TestApp, body: Value) -> Value {
    app.create_lead(&app.admin, body).await
}

/// Creates a lead as admin, asserting 201, and returns its id.
async fn create_id(app: &TestApp, body: Value) -> String {
    id_of(&create(app, body).await)
}

/// `POST /v1/leads` as admin, whatever comes of it.
async fn capture(app: &TestApp, body: &Value) -> Response {
    app.post("/v1/leads", &app.admin, body).await
}

/// Asserts that a capture merged into lead `id`: 200, its Location, `merged: true`.
async fn assert_merged_into(res: Response, id: &str) -> Value {
    let location = header(&res, "location");
    let merged = expect_json(res, StatusCode::OK).await;
    assert_eq!(location, Some(lead_path(id)), "{merged}");
    assert_eq!(merged["merged"], true, "{merged}");
    assert_eq!(id_of(&merged), id);
    merged
}

/// `POST /v1/leads/batch` as admin with `leads`, asserting 200; returns the items.
async fn batch(app: &TestApp, leads: Value) -> Vec<Value> {
    let res = app
        .post("/v1/leads/batch", &app.admin, &json!({ "leads": leads }))
        .await;
    page_items(&expect_json(res, StatusCode::OK).await).to_vec()
}

fn statuses(items: &[Value]) -> Vec<u64> {
    items
        .iter()
        .map(|i| i["status"].as_u64().expect("status"))
        .collect()
}

/// Sends `raw` as the body with the given content type, as admin.
async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: &str,
    raw: impl Into<reqwest::Body>,
) -> Response {
    app.req(method, path, &app.admin)
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

/// `GET /v1/leads/{id}` as admin, asserting 200.
async fn read_lead(app: &TestApp, id: &str) -> Value {
    expect_json(app.get(&lead_path(id), &app.admin).await, StatusCode::OK).await
}

/// Merge-patches lead `id` as admin, whatever comes of it.
async fn patch_lead(app: &TestApp, id: &str, body: &Value) -> Response {
    app.patch(&lead_path(id), &app.admin, body).await
}

/// Merge-patches lead `id` as admin, asserting 200; returns the patched lead.
async fn patch_ok(app: &TestApp, id: &str, body: Value) -> Value {
    expect_json(patch_lead(app, id, &body).await, StatusCode::OK).await
}

async fn patch_if_match(app: &TestApp, id: &str, etag: &str, body: &Value) -> Response {
    app.req(Method::PATCH, &lead_path(id), &app.admin)
        .header("content-type", "application/merge-patch+json")
        .header("if-match", etag)
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

async fn delete_if_match(app: &TestApp, id: &str, etag: &str) -> Response {
    app.req(Method::DELETE, &lead_path(id), &app.admin)
        .header("if-match", etag)
        .send()
        .await
        .expect("request")
}

/// Erases lead `id` as admin, asserting an empty 204.
async fn delete_ok(app: &TestApp, id: &str) {
    let res = app.delete(&lead_path(id), &app.admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.bytes().await.expect("body").is_empty());
}

/// Records an activity on lead `id` as admin, asserting 201; returns it.
async fn add_activity(app: &TestApp, id: &str, kind: &str, text: &str) -> Value {
    let res = app
        .post(
            &format!("{}/activities", lead_path(id)),
            &app.admin,
            &json!({"kind": kind, "text": text}),
        )
        .await;
    expect_json(res, StatusCode::CREATED).await
}

/// Sends each body to `path` (POST, or a merge-patch for PATCH) as admin, asserting a 422
/// whose first error names the field given with it; returns the problems.
async fn assert_each_rejected(
    app: &TestApp,
    method: Method,
    path: &str,
    cases: &[(Value, &str)],
) -> Vec<Value> {
    let mut problems = Vec::new();
    for (body, field) in cases {
        let res = if method == Method::PATCH {
            app.patch(path, &app.admin, body).await
        } else {
            app.post(path, &app.admin, body).await
        };
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&problem), *field, "{body} → {problem}");
        problems.push(problem);
    }
    problems
}

/// `base` with each of `fields` set, one at a time, paired with that field.
fn with_each_field_set(base: &Value, fields: &[&'static str]) -> Vec<(Value, &'static str)> {
    fields
        .iter()
        .map(|&field| {
            let mut body = base.clone();
            body[field] = json!(1);
            (body, field)
        })
        .collect()
}

/// Ids no lead has: unknown, nil and malformed ones.
fn unknown_ids() -> Vec<String> {
    let mut out = vec![Uuid::now_v7().to_string(), Uuid::nil().to_string()];
    out.extend(["not-a-uuid", "123", "nope", "zzz", "x"].map(str::to_owned));
    out
}

/// Asserts that every endpoint of lead `id` is a 404 problem: read, activities, timeline,
/// export, patch (with and without `If-Match`) and erase.
async fn assert_not_found_everywhere(app: &TestApp, id: &str) {
    let path = lead_path(id);
    for sub in ["", "/activities", "/timeline", "/export"] {
        let res = app.get(&format!("{path}{sub}"), &app.admin).await;
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
    let title = json!({"title": "x"});
    let res = app.patch(&path, &app.admin, &title).await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
    let res = patch_if_match(app, id, "\"1\"", &title).await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
    let res = app.delete(&path, &app.admin).await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
}

/// Asserts that `method path` is a 401 problem with no token, with tokens the server never
/// issued, and with the admin's own token under another scheme.
async fn assert_needs_token(app: &TestApp, method: Method, path: &str, body: Option<&Value>) {
    let content_type = if method == Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let bare = || {
        let req = app.client.request(method.clone(), app.url(path));
        match body {
            Some(b) => req.header("content-type", content_type).body(b.to_string()),
            None => req,
        }
    };
    let mut attempts = vec![
        bare(),
        bare().header("authorization", format!("Basic {}", app.admin)),
    ];
    attempts.extend(BOGUS_TOKENS.map(|t| bare().bearer_auth(t)));
    for req in attempts {
        let res = req.send().await.expect("request");
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }
}

/// `GET /v1/leads` with query parameters, as admin, asserting 200.
async fn list(app: &TestApp, query: &[(&str, &str)]) -> Value {
    list_as(app, &app.admin, query).await
}

async fn list_as(app: &TestApp, token: &str, query: &[(&str, &str)]) -> Value {
    let res = list_response(app, token, query).await;
    let status = res.status();
    let body = json_of(res).await;
    assert_eq!(status, StatusCode::OK, "GET /v1/leads {query:?}: {body}");
    body
}

/// `GET /v1/leads` with query parameters as `token`, whatever comes of it.
async fn list_response(app: &TestApp, token: &str, query: &[(&str, &str)]) -> Response {
    app.req(Method::GET, "/v1/leads", token)
        .query(query)
        .send()
        .await
        .expect("request")
}

/// The `items` of a list or timeline page.
fn page_items(page: &Value) -> &[Value] {
    page["items"].as_array().expect("items")
}

fn ids(page: &Value) -> Vec<String> {
    page_items(page).iter().map(id_of).collect()
}

fn names(page: &Value) -> Vec<String> {
    let name = |l: &Value| l["name"].as_str().unwrap_or("").to_owned();
    page_items(page).iter().map(name).collect()
}

/// The string `key` of each object in the array `list`.
fn strings_of<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    let string = |e: &'a Value| e[key].as_str().expect("string");
    list.as_array().expect("array").iter().map(string).collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// `n` leads named `{prefix}0`, `{prefix}1`, …
fn named_leads(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"name": format!("{prefix}{i}")}))
        .collect()
}

/// Every lead id the admin can list (one page of up to 500).
async fn all_ids(app: &TestApp) -> Vec<String> {
    let page = list(app, &[("limit", "500")]).await;
    assert!(page["next_cursor"].is_null());
    ids(&page)
}

/// Asserts that listing with `sort` gives exactly the ids `want`, in that order.
async fn assert_sorted(app: &TestApp, sort: &str, want: &[String]) {
    assert_eq!(ids(&list(app, &[("sort", sort)]).await), want, "{sort}");
}

fn reversed(ids: &[String]) -> Vec<String> {
    ids.iter().rev().cloned().collect()
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

/// The events of `kind` on lead `id`'s timeline, newest first.
async fn events(app: &TestApp, id: &str, kind: &str) -> Vec<Value> {
    let res = app
        .get(&format!("{}/timeline", lead_path(id)), &app.admin)
        .await;
    let timeline = expect_json(res, StatusCode::OK).await;
    page_items(&timeline)
        .iter()
        .filter(|i| i["type"] == "event" && i["kind"] == kind)
        .cloned()
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

// ----- every endpoint -----

#[tokio::test]
async fn every_lead_endpoint_without_a_valid_token_is_401() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"name": "N"})).await;
    let erased = create_id(&app, json!({"name": "E"})).await;
    delete_ok(&app, &erased).await;
    let one = json!({"email": "a@acme.com"});
    let many = json!({"leads": [{"name": "A"}]});
    let title = json!({"title": "x"});
    let mut cases = vec![
        (Method::POST, "/v1/leads".to_owned(), Some(&one)),
        (Method::POST, "/v1/leads/batch".to_owned(), Some(&many)),
        (Method::GET, "/v1/leads".to_owned(), None),
    ];
    // the token is checked before the lead is looked up
    for path in [lead_path(&id), lead_path(&erased)] {
        cases.push((Method::GET, path.clone(), None));
        cases.push((Method::PATCH, path.clone(), Some(&title)));
        cases.push((Method::DELETE, path.clone(), None));
        cases.push((Method::GET, format!("{path}/export"), None));
    }
    for (method, path, body) in cases {
        assert_needs_token(&app, method, &path, body).await;
    }
    // nothing was created, changed or erased
    assert_eq!(all_ids(&app).await, vec![id.clone()]);
    assert_eq!(read_lead(&app, &id).await["version"], 1);
}

#[tokio::test]
async fn unknown_malformed_or_erased_lead_ids_are_404_everywhere() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"name": "x"})).await;
    for unknown in unknown_ids() {
        assert_not_found_everywhere(&app, &unknown).await;
    }
    delete_ok(&app, &id).await;
    assert_not_found_everywhere(&app, &id).await;
}

#[tokio::test]
async fn malformed_json_is_400_and_other_content_types_are_415() {
    let app = spawn_app().await;
    let body = json!({"email": "a@acme.com"}).to_string();
    let body = body.as_str();
    let mistyped = [
        ("text/plain", body),
        ("application/x-www-form-urlencoded", body),
        ("multipart/form-data; boundary=x", body),
        ("application/xml", body),
        ("text/csv", "name\nA\n"),
    ];
    let malformed = [
        ("/v1/leads", "{\"name\": "),
        ("/v1/leads", "not json"),
        ("/v1/leads", "{\"name\": \"a\",}"),
        ("/v1/leads", ""),
        ("/v1/leads/batch", "{\"leads\": ["),
        // truncated JSON whose first field is unknown: still malformed, not a 422
        ("/v1/leads", "{\"leads\": ["),
        ("/v1/leads/batch", "{\"nope\": 1"),
    ];
    for (path, raw) in malformed {
        let res = send_raw(&app, Method::POST, path, "application/json", raw).await;
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    for path in ["/v1/leads", "/v1/leads/batch"] {
        for (content_type, raw) in mistyped {
            let res = send_raw(&app, Method::POST, path, content_type, raw.to_owned()).await;
            assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        }
    }
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn a_patch_is_a_merge_patch_and_other_patch_formats_are_415() {
    let app = spawn_app().await;
    let lead = app.create_lead(&app.admin, json!({"name": "Patchy"})).await;
    let path = format!("/v1/leads/{}", lead["id"].as_str().unwrap());
    let json_patch = json!([{"op": "replace", "path": "/name", "value": "X"}]).to_string();
    for ct in [
        "application/json-patch+json",
        "application/vnd.api+json",
        "text/plain",
    ] {
        let res = send_raw(&app, Method::PATCH, &path, ct, json_patch.clone()).await;
        assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    let rename = json!({"title": "CTO"}).to_string();
    for ct in [
        "application/merge-patch+json",
        "application/json; charset=utf-8",
    ] {
        let res = send_raw(&app, Method::PATCH, &path, ct, rename.clone()).await;
        assert_eq!(res.status(), StatusCode::OK, "{ct}");
    }
    let res = app.get(&path, &app.admin).await;
    let now: Value = res.json().await.unwrap();
    assert_eq!(now["name"], "Patchy");
    assert_eq!(now["title"], "CTO");
}

#[tokio::test]
async fn a_key_given_twice_is_422_naming_it() {
    let app = spawn_app().await;
    let raw = r#"{"name": "A", "email": "a@acme.com", "email": "b@acme.com"}"#;
    let res = send_raw(
        &app,
        Method::POST,
        "/v1/leads",
        "application/json",
        raw.to_owned(),
    )
    .await;
    let p = assert_invalid(res, "email").await;
    assert!(p.to_string().contains("more than once"), "{p}");
    // Inside a free-form object too: which value was meant would be a guess.
    let raw = r#"{"name": "A", "fields": {"budget": "10k", "budget": "50k"}}"#;
    let res = send_raw(
        &app,
        Method::POST,
        "/v1/leads",
        "application/json",
        raw.to_owned(),
    )
    .await;
    let p = assert_invalid(res, "fields.budget").await;
    assert!(p.to_string().contains("more than once"), "{p}");
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_an_object_is_422() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"name": "Keep"})).await;
    let path = lead_path(&id);
    // An array would otherwise be read field by field in declaration order.
    for (method, path, body) in [
        (Method::PATCH, path.as_str(), r#"["Renamed"]"#),
        (Method::POST, "/v1/leads", r#"["New"]"#),
        (Method::POST, "/v1/users", r#"["u", null, "admin"]"#),
        (Method::POST, "/v1/leads", "\"text\""),
    ] {
        let res = send_raw(&app, method, path, "application/json", body.to_owned()).await;
        assert_invalid(res, "body").await;
    }
    // The same holds inside the body: a nested object given as an array is refused too.
    for (method, path, body, field) in [
        (
            Method::PATCH,
            path.as_str(),
            json!({"utm": ["google"]}),
            "utm",
        ),
        (
            Method::POST,
            "/v1/leads",
            json!({"name": "New", "utm": ["google", "cpc"]}),
            "utm",
        ),
        (
            Method::POST,
            "/v1/forms",
            json!({"name": "f", "fields": [["email", "E"]]}),
            "fields[0]",
        ),
    ] {
        let res = send_raw(&app, method, path, "application/json", body.to_string()).await;
        let p = assert_invalid(res, field).await;
        assert!(p.to_string().contains("sequence"), "{p}");
    }
    let lead = expect_json(app.get(&path, &app.admin).await, StatusCode::OK).await;
    assert_eq!(lead["name"], "Keep");
    assert_eq!(lead["version"], 1);
    assert!(
        lead["utm"].is_null() || lead["utm"]["source"].is_null(),
        "{lead}"
    );
    assert_eq!(all_ids(&app).await.len(), 1);
}

#[tokio::test]
async fn unsupported_methods_are_405() {
    let app = spawn_app().await;
    let lead = lead_path(&create_id(&app, json!({"name": "N"})).await);
    let lead = lead.as_str();
    for (method, path) in [
        (Method::PUT, lead),
        (Method::POST, lead),
        (Method::DELETE, "/v1/leads"),
        (Method::GET, "/v1/leads/batch"),
    ] {
        let res = app
            .req(method, path, &app.admin)
            .json(&json!({}))
            .send()
            .await
            .expect("request");
        assert_problem(res, StatusCode::METHOD_NOT_ALLOWED).await;
    }
}

// ----- POST /v1/leads -----

#[tokio::test]
async fn create_returns_201_with_location_etag_and_normalized_lead() {
    let app = spawn_app().await;
    let default_pool = default_pool_id(&app).await;
    let res = capture(
        &app,
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
    assert_etag(&res, 1);
    let lead = json_of(res).await;
    let id = id_of(&lead);
    assert_eq!(location, lead_path(&id));
    assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    assert_fields(
        &lead,
        json!({
            "merged": false,
            "version": 1,
            "name": "李 雷",
            "email": "li.lei@example.com",
            "phone": "+8613812345678",
            "channel": "paid_search",
            "source": "web",
            "tags": ["vip"],
            "fields": {"budget": 100},
            "utm.source": "baidu",
            "utm.medium": null,
            "stage": "lead",
            "status": "new",
            // no rep can take it, so it waits in the default pool
            "owner_id": null,
            "pool_id": default_pool,
            // the built-in scoring table: +10 for paid search
            "score.total": 10,
            "flags.do_not_contact": true,
            "flags.personal_email": false,
            "created_at": lead["updated_at"]
        }),
    );
    assert!(lead["created_at"].as_str().unwrap().ends_with('Z'));

    // The Location is where the lead lives.
    let read = expect_json(app.get(&location, &app.admin).await, StatusCode::OK).await;
    assert_eq!(read["email"], "li.lei@example.com");
    assert!(
        read.get("merged").is_none(),
        "merged belongs to the create only"
    );
}

#[tokio::test]
async fn create_flags_personal_email_domains() {
    let app = spawn_app().await;
    let lead = create(&app, json!({"email": "someone@QQ.com"})).await;
    assert_eq!(lead["flags"]["personal_email"], true);
}

#[tokio::test]
async fn create_with_body_over_1mib_is_413() {
    let app = spawn_app().await;
    let big = json!({"name": "x", "fields": {"blob": "a".repeat(ONE_MIB)}}).to_string();
    assert!(big.len() > ONE_MIB);
    let res = send_raw(&app, Method::POST, "/v1/leads", "application/json", big).await;
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
    let res = send_raw(&app, Method::POST, "/v1/leads", "application/json", raw).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn create_content_type_may_be_any_case_with_parameters_but_not_missing() {
    let app = spawn_app().await;
    let body = json!({"email": "a@acme.com"}).to_string();
    let res = app
        .req(Method::POST, "/v1/leads", &app.admin)
        .body(body.clone())
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let json_ct = "Application/JSON; charset=utf-8";
    let res = send_raw(&app, Method::POST, "/v1/leads", json_ct, body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn create_with_an_invalid_value_is_422_naming_the_field() {
    let app = spawn_app().await;
    let named = |mut body: Value| {
        body["name"] = json!("A");
        body
    };
    let mut cases = vec![
        (named(json!({"channel": "tv"})), "channel"),
        (named(json!({"stage": "won"})), "stage"),
        (named(json!({"status": "busy"})), "status"),
        (named(json!({"company_size": -3})), "company_size"),
        (named(json!({"owner_id": "not-a-uuid"})), "owner_id"),
        (named(json!({"owner_id": Uuid::now_v7()})), "owner_id"),
        (
            named(json!({"next_follow_up_at": "tomorrow"})),
            "next_follow_up_at",
        ),
        (named(json!({"tags": "vip"})), "tags"),
        (json!({"name": 42}), "name"),
        (
            json!({"email": "a@acme.com", "utm": {"sauce": "x"}}),
            "utm.sauce",
        ),
        (
            json!({"email": "a@acme.com", "flags": {"personal_email": true}}),
            "flags.personal_email",
        ),
    ];
    for bad in ["nope", "a@b", "a b@acme.com", "@acme.com"] {
        cases.push((json!({ "email": bad }), "email"));
    }
    for bad in ["12", "abc", "138-1234-567", "tel:13812345678"] {
        cases.push((named(json!({ "phone": bad })), "phone"));
    }
    assert_each_rejected(&app, Method::POST, "/v1/leads", &cases).await;

    let res = capture(
        &app,
        &json!({"email": "a@acme.com", "favourite_colour": "red"}),
    )
    .await;
    let p = assert_invalid(res, "favourite_colour").await;
    assert_eq!(p["errors"][0]["message"], "unknown field");
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn create_reports_every_invalid_field_at_once() {
    let app = spawn_app().await;
    let res = capture(
        &app,
        &json!({"email": "nope", "phone": "12", "channel": "tv"}),
    )
    .await;
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        strings_of(&p["errors"], "field"),
        ["email", "phone", "channel"]
    );
}

#[tokio::test]
async fn create_with_read_only_field_is_422() {
    let app = spawn_app().await;
    let cases = with_each_field_set(
        &json!({"email": "a@acme.com"}),
        &[
            "id",
            "score",
            "version",
            "created_at",
            "updated_at",
            "first_touch_at",
            "last_activity_at",
            "merged",
        ],
    );
    for p in assert_each_rejected(&app, Method::POST, "/v1/leads", &cases).await {
        assert_eq!(p["errors"][0]["message"], "is read-only", "{p}");
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
        let p = assert_problem(capture(&app, &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(!p["errors"].as_array().unwrap().is_empty(), "{body}");
    }
    for body in [json!([]), json!("lead"), json!(null)] {
        assert_problem(capture(&app, &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    assert!(all_ids(&app).await.is_empty());
}

// ----- dedupe -----

#[tokio::test]
async fn duplicate_email_in_other_case_and_spacing_merges_into_the_existing_lead() {
    let app = spawn_app().await;
    let first = json!({"email": "zhang@acme.cn", "title": "CTO", "tags": ["a"]});
    let id = create_id(&app, first).await;
    let res = capture(
        &app,
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
    assert_etag(&res, 2);
    let merged = assert_merged_into(res, &id).await;
    // blanks filled, existing values kept
    let expected = json!({
        "version": 2,
        "company": "Acme",
        "name": "张三",
        "fields": {"budget": 5},
        "tags": ["a", "b"],
        "title": "CTO",
        "email": "zhang@acme.cn"
    });
    assert_fields(&merged, expected);

    // stored so, and still one lead
    assert_fields(
        &read_lead(&app, &id).await,
        json!({"title": "CTO", "company": "Acme"}),
    );
    assert_eq!(all_ids(&app).await, vec![id.clone()]);

    // the timeline shows the merge and the value that was not applied
    let merges = events(&app, &id, "merged").await;
    assert_eq!(merges.len(), 1, "{merges:?}");
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
    assert_eq!(data["conflicts"].as_array().unwrap().len(), 1, "{data}");
    assert_fields(
        &data["conflicts"][0],
        json!({"field": "title", "kept": "CTO", "offered": "CEO"}),
    );
    assert_eq!(events(&app, &id, "created").await.len(), 1);
}

#[tokio::test]
async fn identical_capture_merges_without_bumping_the_version() {
    let app = spawn_app().await;
    let body = json!({"email": "same@acme.com", "name": "S"});
    let first = create(&app, body.clone()).await;
    let res = capture(&app, &body).await;
    assert_etag(&res, 1);
    let merged = assert_merged_into(res, &id_of(&first)).await;
    assert_eq!(merged["version"], 1);
    assert_eq!(merged["updated_at"], first["updated_at"]);
    assert_eq!(events(&app, &id_of(&first), "merged").await.len(), 1);
}

#[tokio::test]
async fn phone_in_three_spellings_is_one_lead() {
    let app = spawn_app().await;
    let first = create(&app, json!({"name": "王总", "phone": "13812345678"})).await;
    let id = id_of(&first);
    assert_eq!(first["phone"], "+8613812345678");
    for (spelling, company) in [("+86 138 1234 5678", "Acme"), ("86-13812345678", "Other")] {
        let res = capture(&app, &json!({"phone": spelling, "company": company})).await;
        let merged = assert_merged_into(res, &id).await;
        // the first company offered fills the blank; the second does not overwrite it
        assert_fields(
            &merged,
            json!({"phone": "+8613812345678", "company": "Acme"}),
        );
    }
    assert_eq!(all_ids(&app).await, vec![id.clone()]);
    let merges = events(&app, &id, "merged").await;
    assert_eq!(merges.len(), 2);
    assert!(merges.iter().all(|m| m["data"]["reason"] == "phone"));
}

#[tokio::test]
async fn merge_by_phone_fills_a_blank_email_which_then_dedupes() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"phone": "13900001111"})).await;
    let body = json!({"phone": "+86 139 0000 1111", "email": "new@acme.com"});
    let merged = assert_merged_into(capture(&app, &body).await, &id).await;
    assert_eq!(merged["email"], "new@acme.com");
    // the filled email is now indexed too
    assert_merged_into(capture(&app, &json!({"email": "NEW@acme.com"})).await, &id).await;
    assert_eq!(all_ids(&app).await.len(), 1);
}

#[tokio::test]
async fn different_email_and_phone_create_separate_leads() {
    let app = spawn_app().await;
    let a = create_id(&app, json!({"email": "a@acme.com", "phone": "13800000001"})).await;
    let b = create_id(&app, json!({"email": "b@acme.com", "phone": "13800000002"})).await;
    assert_ne!(a, b);
    // same name is not a duplicate
    let c = create_id(&app, json!({"name": "Same"})).await;
    let d = create_id(&app, json!({"name": "Same"})).await;
    assert_ne!(c, d);
    assert_eq!(all_ids(&app).await.len(), 4);
}

#[tokio::test]
async fn capture_matching_one_lead_by_email_and_another_by_phone_does_not_steal_the_phone() {
    let app = spawn_app().await;
    let by_email = create_id(&app, json!({"email": "e@acme.com"})).await;
    let by_phone = create_id(&app, json!({"phone": "13800000005"})).await;
    let res = capture(
        &app,
        &json!({"email": "e@acme.com", "phone": "13800000005"}),
    )
    .await;
    let merged = assert_merged_into(res, &by_email).await;
    assert!(merged["phone"].is_null(), "{merged}");
    let merges = events(&app, &by_email, "merged").await;
    assert_fields(
        &merges[0]["data"]["not_applied"][0],
        json!({"field": "phone", "value": "+8613800000005", "belongs_to": by_phone}),
    );
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
        capture(&app, &bodies[0]),
        capture(&app, &bodies[1]),
        capture(&app, &bodies[2])
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
    assert_fields(
        &read_lead(&app, &id).await,
        json!({"name": "A", "title": "T", "company": "C"}),
    );
    assert_eq!(all_ids(&app).await, vec![id]);
}

// ----- Idempotency-Key -----

#[tokio::test]
async fn idempotent_retry_replays_the_first_response_and_creates_nothing() {
    let app = spawn_app().await;
    let body = json!({"email": "retry@acme.com", "name": "R"});
    let first = post_with_key(&app, "/v1/leads", "key-1", &body).await;
    let (location, etag) = (header(&first, "location"), header(&first, "etag"));
    let first_body = expect_json(first, StatusCode::CREATED).await;

    for _ in 0..2 {
        let again = post_with_key(&app, "/v1/leads", "key-1", &body).await;
        assert_eq!(header(&again, "location"), location);
        assert_eq!(header(&again, "etag"), etag);
        assert!(
            header(&again, "content-type")
                .unwrap()
                .starts_with("application/json")
        );
        assert_eq!(expect_json(again, StatusCode::CREATED).await, first_body);
    }
    // The same JSON spaced and ordered otherwise is the same request.
    let again = app
        .client
        .post(app.url("/v1/leads"))
        .bearer_auth(&app.admin)
        .header("idempotency-key", "key-1")
        .header("content-type", "application/json")
        .body("{ \"name\" : \"R\",\n  \"email\": \"retry@acme.com\" }")
        .send()
        .await
        .unwrap();
    assert_eq!(expect_json(again, StatusCode::CREATED).await, first_body);
    let id = id_of(&first_body);
    assert_eq!(all_ids(&app).await, vec![id.clone()]);
    // no merge happened either
    assert!(events(&app, &id, "merged").await.is_empty());
}

#[tokio::test]
async fn every_create_replays_its_first_answer_to_a_retry() {
    let app = spawn_app().await;
    for (path, body, list) in [
        (
            "/v1/webhooks".to_owned(),
            json!({"url": "https://example.com/hook", "events": ["lead.*"]}),
            "/v1/webhooks".to_owned(),
        ),
        (
            "/v1/pools".to_owned(),
            json!({"name": "trade show"}),
            "/v1/pools".to_owned(),
        ),
    ] {
        let listed = |v: Value| v["items"].as_array().expect("items").len();
        let before = listed(expect_json(app.get(&list, &app.admin).await, StatusCode::OK).await);
        // A key is the caller's, across paths: one each.
        let key = format!("once {path}");
        let first = post_with_key(&app, &path, &key, &body).await;
        let (location, etag) = (header(&first, "location"), header(&first, "etag"));
        let first = expect_json(first, StatusCode::CREATED).await;
        assert!(location.is_some(), "{path}");
        let again = post_with_key(&app, &path, &key, &body).await;
        assert_eq!(
            header(&again, "idempotent-replayed").as_deref(),
            Some("true"),
            "{path}"
        );
        assert_eq!(header(&again, "location"), location, "{path}");
        assert_eq!(header(&again, "etag"), etag, "{path}");
        assert_eq!(
            expect_json(again, StatusCode::CREATED).await,
            first,
            "{path}"
        );
        let after = listed(expect_json(app.get(&list, &app.admin).await, StatusCode::OK).await);
        assert_eq!(after, before + 1, "{path}: one created, not two");
    }
}

#[tokio::test]
async fn idempotent_retry_of_a_merge_replays_200() {
    let app = spawn_app().await;
    let existing = create_id(&app, json!({"email": "m@acme.com"})).await;
    let body = json!({"email": "M@acme.com", "company": "Acme"});
    let res = post_with_key(&app, "/v1/leads", "merge-key", &body).await;
    let first = assert_merged_into(res, &existing).await;
    let res = post_with_key(&app, "/v1/leads", "merge-key", &body).await;
    assert_eq!(assert_merged_into(res, &existing).await, first);
    assert_eq!(events(&app, &existing, "merged").await.len(), 1);
}

#[tokio::test]
async fn idempotency_key_reused_with_a_different_body_is_422() {
    let app = spawn_app().await;
    let res = post_with_key(&app, "/v1/leads", "k", &json!({"email": "one@acme.com"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = post_with_key(&app, "/v1/leads", "k", &json!({"email": "two@acme.com"})).await;
    assert_invalid(res, "Idempotency-Key").await;
    assert_eq!(all_ids(&app).await.len(), 1);
    // the same body on another path is another request too
    let one = json!({"leads": [{"email": "one@acme.com"}]});
    let res = post_with_key(&app, "/v1/leads/batch", "k", &one).await;
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
    let a = expect_json(a, StatusCode::CREATED).await;
    let b = expect_json(b, StatusCode::CREATED).await;
    assert_eq!(a, b);
    assert_eq!(all_ids(&app).await, vec![id_of(&a)]);
}

#[tokio::test]
async fn invalid_idempotency_key_is_422() {
    let app = spawn_app().await;
    let key = "k".repeat(256);
    let res = post_with_key(&app, "/v1/leads", &key, &json!({"email": "a@acme.com"})).await;
    assert_invalid(res, "Idempotency-Key").await;
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn idempotent_batch_retry_replays_and_creates_nothing() {
    let app = spawn_app().await;
    let body =
        json!({"leads": [{"email": "b1@acme.com"}, {"email": "b2@acme.com"}, {"email": "bad"}]});
    let first = post_with_key(&app, "/v1/leads/batch", "batch-1", &body).await;
    let first_body = expect_json(first, StatusCode::OK).await;
    let before = all_ids(&app).await;
    assert_eq!(before.len(), 2);

    let again = post_with_key(&app, "/v1/leads/batch", "batch-1", &body).await;
    assert_eq!(expect_json(again, StatusCode::OK).await, first_body);
    assert_eq!(all_ids(&app).await, before);

    let other = json!({"leads": [{"email": "b3@acme.com"}]});
    let res = post_with_key(&app, "/v1/leads/batch", "batch-1", &other).await;
    assert_invalid(res, "Idempotency-Key").await;
    assert_eq!(all_ids(&app).await, before);
}

// ----- POST /v1/leads/batch -----

#[tokio::test]
async fn batch_reports_each_item_in_order() {
    let app = spawn_app().await;
    let existing = create_id(&app, json!({"email": "old@acme.com"})).await;
    let items = batch(
        &app,
        json!([
            {"email": "a@acme.com", "name": "A"},
            {"email": "OLD@acme.com", "company": "Acme"},
            {"email": "not-an-email"},
            {"name": "B", "bogus": 1},
            {"phone": "13800000009"},
            {},
            {"name": "C", "id": "x"}
        ]),
    )
    .await;
    assert_eq!(items.len(), 7);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["index"], i);
    }
    assert_eq!(statuses(&items), [201, 200, 422, 422, 201, 422, 422]);
    let expected = [
        json!({"merged": false, "lead.name": "A", "id": items[0]["lead"]["id"], "error": null}),
        json!({"merged": true, "id": existing, "lead.company": "Acme"}),
        json!({"id": null, "lead": null, "error.status": 422,
               "error.errors.0.field": "leads[2].email"}),
        json!({"error.errors.0.field": "leads[3].bogus"}),
        json!({"lead.phone": "+8613800000009"}),
        json!({}),
        json!({"error.errors.0.field": "leads[6].id", "error.errors.0.message": "is read-only"}),
    ];
    for (item, expected) in items.iter().zip(expected) {
        assert_fields(item, expected);
    }
    assert!(
        items[5]["error"]["errors"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("leads[5]")
    );

    let created = vec![existing, id_of(&items[0]), id_of(&items[4])];
    assert_eq!(sorted(all_ids(&app).await), sorted(created));
}

#[tokio::test]
async fn batch_dedupes_within_itself() {
    let app = spawn_app().await;
    let items = batch(
        &app,
        json!([
            {"email": "dup@acme.com", "title": "CTO"},
            {"email": " Dup@ACME.com", "title": "CEO", "company": "Acme"},
            {"phone": "13812345678", "name": "P"},
            {"phone": "+86 138 1234 5678", "email": "p@acme.com"}
        ]),
    )
    .await;
    assert_eq!(statuses(&items), [201, 200, 201, 200]);
    assert_eq!(items[0]["id"], items[1]["id"]);
    assert_eq!(items[2]["id"], items[3]["id"]);
    assert_ne!(items[0]["id"], items[2]["id"]);
    assert_fields(
        &items[1]["lead"],
        json!({"title": "CTO", "company": "Acme"}),
    );
    assert_eq!(items[3]["lead"]["email"], "p@acme.com");
    assert_eq!(all_ids(&app).await.len(), 2);
}

#[tokio::test]
async fn batch_of_zero_or_over_1000_leads_is_422() {
    let app = spawn_app().await;
    let cases = [
        (json!({"leads": []}), "leads"),
        (json!({"leads": named_leads("n", 1001)}), "leads"),
        (json!({}), "leads"),
        (json!({"leads": [{"name": "a"}], "extra": true}), "extra"),
    ];
    assert_each_rejected(&app, Method::POST, "/v1/leads/batch", &cases).await;
    assert!(all_ids(&app).await.is_empty());
}

#[tokio::test]
async fn batch_of_exactly_1000_leads_creates_them_all() {
    let app = spawn_app().await;
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({"email": format!("p{i}@acme.com")}))
        .collect();
    let items = batch(&app, json!(many)).await;
    assert_eq!(items.len(), 1000);
    assert!(items.iter().all(|i| i["status"] == 201));
    assert_eq!(items[999]["lead"]["email"], "p999@acme.com");
    let (walked, _) = walk(&app, &app.admin, &[], 500).await;
    assert_eq!(walked.len(), 1000);
}

#[tokio::test]
async fn batch_item_errors_name_the_item_whoever_finds_them() {
    // Regression: errors found while storing (an unknown owner) were not prefixed with
    // `leads[i].` like the errors found while parsing, and a non-object item was `body`.
    let app = spawn_app().await;
    let items = batch(
        &app,
        json!([{"name": "a", "owner_id": Uuid::now_v7()}, 1, {"name": "ok"}]),
    )
    .await;
    assert_eq!(statuses(&items), [422, 422, 201]);
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

/// Four leads that differ in every filterable field, created in order a, b, c, d: `a` is the
/// rep's, `b` is in the `expo` pool, and `c` and `d` wait in the default pool (the rep takes
/// no routed leads).
struct Fixture {
    rep: String,
    pool: String,
    default_pool: String,
    campaign: String,
}

async fn filter_fixture(app: &TestApp) -> Fixture {
    let (rep, _) = app
        .create_user(json!({"name": "li", "role": "rep", "capacity": 1}))
        .await;
    let pool = create_pool(app, "expo").await;
    let default_pool = default_pool_id(app).await;
    let campaign = Uuid::now_v7().to_string();
    for lead in [
        json!({"name": "a", "stage": "mql", "status": "attempting", "owner_id": rep,
               "source": "Web", "channel": "social", "tags": ["vip"], "campaign_id": campaign}),
        json!({"name": "b", "pool_id": pool, "source": "expo", "channel": "event",
               "tags": ["cold", "VIP"]}),
        json!({"name": "c", "stage": "sql", "status": "connected", "source": "web",
               "channel": "paid_search", "tags": ["cold"]}),
        json!({"name": "d", "stage": "disqualified", "status": "unqualified"}),
    ] {
        create(app, lead).await;
    }
    Fixture {
        rep,
        pool,
        default_pool,
        campaign,
    }
}

/// A list query and the names of the leads it must list.
type ListCase<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

/// Asserts that each query lists exactly the leads it names, in each sort's order.
async fn assert_each_lists(app: &TestApp, cases: &[ListCase<'_>]) {
    for (query, expected) in cases {
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
}

#[tokio::test]
async fn list_filters_by_stage_and_status() {
    let app = spawn_app().await;
    filter_fixture(&app).await;
    assert_each_lists(
        &app,
        &[
            (&[("stage", "mql")], &["a"]),
            (&[("stage", "lead")], &["b"]),
            (&[("stage", "sql")], &["c"]),
            (&[("stage", "disqualified")], &["d"]),
            (&[("stage", "customer")], &[]),
            (&[("status", "attempting")], &["a"]),
            (&[("status", "new")], &["b"]),
            (&[("status", "connected")], &["c"]),
            (&[("status", "unqualified")], &["d"]),
            (&[("status", "converted")], &[]),
            (&[("stage", "mql"), ("status", "new")], &[]),
        ],
    )
    .await;
}

#[tokio::test]
async fn list_filters_by_owner_pool_campaign_source_channel_and_tag() {
    let app = spawn_app().await;
    let f = filter_fixture(&app).await;
    let other = Uuid::now_v7().to_string();
    assert_each_lists(
        &app,
        &[
            (&[("owner_id", f.rep.as_str())], &["a"]),
            (&[("owner_id", "none")], &["b", "c", "d"]),
            (&[("owner_id", "none"), ("stage", "sql")], &["c"]),
            (&[("owner_id", other.as_str())], &[]),
            (&[("pool_id", f.pool.as_str())], &["b"]),
            (&[("pool_id", f.default_pool.as_str())], &["c", "d"]),
            (
                &[("pool_id", f.default_pool.as_str()), ("stage", "sql")],
                &["c"],
            ),
            (&[("campaign_id", f.campaign.as_str())], &["a"]),
            (&[("source", "web")], &["a", "c"]),
            (&[("source", "WEB")], &["a", "c"]),
            (&[("source", "expo")], &["b"]),
            (&[("channel", "event")], &["b"]),
            (&[("channel", "paid_search")], &["c"]),
            (&[("channel", "email")], &[]),
            (&[("tag", "vip")], &["a", "b"]),
            (&[("tag", "VIP")], &["a", "b"]),
            (&[("tag", "cold")], &["b", "c"]),
            (&[("tag", "vi")], &[]),
            (&[("tag", "cold"), ("source", "web")], &["c"]),
            (&[("tag", "vip"), ("stage", "lead")], &["b"]),
            (&[("source", "web"), ("channel", "social")], &["a"]),
            (&[("pool_id", other.as_str())], &[]),
            (&[("campaign_id", other.as_str())], &[]),
        ],
    )
    .await;
}

#[tokio::test]
async fn list_filters_by_score_range() {
    // The built-in scoring table gives b 15 (event) and c 10 (paid search); a and d score 0.
    let app = spawn_app().await;
    filter_fixture(&app).await;
    let all = &["a", "b", "c", "d"];
    assert_each_lists(
        &app,
        &[
            (&[("min_score", "0")], all),
            (&[("max_score", "0")], &["a", "d"]),
            (&[("min_score", "10"), ("max_score", "15")], &["b", "c"]),
            (&[("min_score", "11")], &["b"]),
            (&[("min_score", "-100"), ("max_score", "100")], all),
            (&[("max_score", "-1")], &[]),
            (&[("min_score", "16")], &[]),
            (&[("min_score", "1"), ("max_score", "0")], &[]),
            (&[("min_score", "0"), ("stage", "mql")], &["a"]),
        ],
    )
    .await;
}

#[tokio::test]
async fn hot_leads_newest_first_are_not_cut_short_by_the_scan_budget() {
    // A page may examine 10 candidates; 3 paid-search leads (score 10) hide among 60.
    let app = spawn_app_with(|c| c.store.list_scan_budget = 10).await;
    let leads: Vec<Value> = (0..60)
        .map(|i| match i {
            5 | 30 | 55 => json!({"name": format!("hot{i}"), "channel": "paid_search"}),
            _ => json!({"name": format!("cold{i}")}),
        })
        .collect();
    let created: Vec<String> = batch(&app, json!(leads))
        .await
        .iter()
        .map(|item| id_of(&item["lead"]))
        .collect();
    // In creation order a score range reads the rows of the scores in it: one page, the end.
    for sort in ["-created_at", "created_at"] {
        let (all, _) = walk(&app, &app.admin, &[("sort", sort)], 10).await;
        let hot: Vec<String> = all
            .into_iter()
            .filter(|id| [5, 30, 55].iter().any(|i| *id == created[*i]))
            .collect();
        let page = list(&app, &[("min_score", "10"), ("sort", sort)]).await;
        assert_eq!(ids(&page), hot, "{sort}");
        assert!(page["next_cursor"].is_null(), "{sort}: {page}");
    }
    // Sorted by update time the score is checked per candidate: a page stops at the budget
    // with what it found and a cursor, and walking on finds the rest.
    let first = list(&app, &[("min_score", "10"), ("sort", "-updated_at")]).await;
    assert!(names(&first).len() < 3, "{first}");
    assert!(first["next_cursor"].is_string(), "{first}");
    let (walked, pages) = walk(
        &app,
        &app.admin,
        &[("min_score", "10"), ("sort", "-updated_at")],
        50,
    )
    .await;
    assert_eq!(walked.len(), 3);
    assert!(pages >= 6, "60 candidates, 10 a page: {pages}");
}

#[tokio::test]
async fn list_filters_by_created_window() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for name in ["t1", "t2", "t3"] {
        let lead = create(&app, json!({ "name": name })).await;
        created.push(lead["created_at"].as_str().unwrap().to_owned());
        next_millisecond().await;
    }
    let (t1, t2, t3) = (
        created[0].as_str(),
        created[1].as_str(),
        created[2].as_str(),
    );
    assert!(t1 < t2 && t2 < t3, "{created:?}");
    // any offset names the same instant
    let ms = leadline::domain::time::parse_rfc3339(t1).unwrap();
    let shifted = chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    assert!(shifted.ends_with("+08:00"));
    // both bounds are exclusive
    assert_each_lists(
        &app,
        &[
            (&[("created_after", t1)], &["t2", "t3"]),
            (&[("created_before", t3)], &["t1", "t2"]),
            (&[("created_after", t1), ("created_before", t3)], &["t2"]),
            (&[("created_after", t3)], &[]),
            (&[("created_before", t1)], &[]),
            (
                &[("created_after", "2000-01-01T00:00:00Z")],
                &["t1", "t2", "t3"],
            ),
            (&[("created_after", shifted.as_str())], &["t2", "t3"]),
        ],
    )
    .await;
}

#[tokio::test]
async fn list_filters_by_updated_after() {
    let app = spawn_app().await;
    let one = create_id(&app, json!({"name": "one"})).await;
    let two = create(&app, json!({"name": "two"})).await;
    next_millisecond().await;
    patch_ok(&app, &one, json!({"title": "CEO"})).await;
    let since = two["updated_at"].as_str().unwrap();
    assert_each_lists(
        &app,
        &[
            (&[("updated_after", since)], &["one"]),
            (
                &[("updated_after", "2000-01-01T00:00:00Z")],
                &["one", "two"],
            ),
            (&[("updated_after", "2999-01-01T00:00:00Z")], &[]),
        ],
    )
    .await;
}

// ----- GET /v1/leads: sorts and paging -----

/// Creates `n` leads one by one, a millisecond apart; returns their ids in creation order.
async fn create_spaced(app: &TestApp, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(create_id(app, json!({"name": format!("s{i}")})).await);
        next_millisecond().await;
    }
    out
}

#[tokio::test]
async fn list_sorts_by_created_at_both_ways_newest_first_by_default() {
    let app = spawn_app().await;
    let created = create_spaced(&app, 4).await;
    let newest_first = reversed(&created);
    assert_eq!(ids(&list(&app, &[]).await), newest_first);
    assert_sorted(&app, "-created_at", &newest_first).await;
    assert_sorted(&app, "created_at", &created).await;
}

#[tokio::test]
async fn list_sorts_by_score_with_id_as_tie_break() {
    let app = spawn_app().await;
    let created = create_spaced(&app, 4).await;
    // all scores are equal, so the id decides, and ids grow with creation
    assert_sorted(&app, "score", &created).await;
    assert_sorted(&app, "-score", &reversed(&created)).await;
}

#[tokio::test]
async fn list_sorts_by_updated_at_both_ways() {
    let app = spawn_app().await;
    let created = create_spaced(&app, 3).await;
    patch_ok(&app, &created[0], json!({"title": "touched"})).await;
    let asc = vec![created[1].clone(), created[2].clone(), created[0].clone()];
    assert_sorted(&app, "updated_at", &asc).await;
    assert_sorted(&app, "-updated_at", &reversed(&asc)).await;
    // created order is unaffected by the update
    assert_sorted(&app, "created_at", &created).await;
}

#[tokio::test]
async fn list_order_is_stable_when_timestamps_tie() {
    let app = spawn_app().await;
    // one batch is one transaction: every lead gets the same created_at and updated_at
    let items = batch(&app, json!(named_leads("tie", 6))).await;
    let created: Vec<String> = items.iter().map(id_of).collect();
    let stamps: HashSet<&str> = items
        .iter()
        .map(|i| i["lead"]["created_at"].as_str().unwrap())
        .collect();
    assert_eq!(stamps.len(), 1);
    let desc = reversed(&created);
    for (sort, want) in [
        ("created_at", &created),
        ("-created_at", &desc),
        ("score", &created),
        ("-score", &desc),
        ("updated_at", &created),
        ("-updated_at", &desc),
    ] {
        for _ in 0..2 {
            assert_sorted(&app, sort, want).await;
        }
    }
}

#[tokio::test]
async fn cursor_paging_visits_every_lead_once_in_every_sort() {
    let app = spawn_app().await;
    // some leads share a timestamp (one batch), the rest are created one by one
    batch(&app, json!(named_leads("b", 10))).await;
    for i in 0..15 {
        create(&app, json!({"name": format!("s{i}")})).await;
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
async fn a_list_of_every_lead_merges_the_stages_in_order_a_page_at_a_time() {
    let app = spawn_app().await;
    let stages = [
        "lead",
        "mql",
        "sql",
        "opportunity",
        "customer",
        "disqualified",
    ];
    let mut created = Vec::new();
    for i in 0..14 {
        let stage = stages[(i * 5) % stages.len()];
        created.push(create_id(&app, json!({"name": format!("m{i}"), "stage": stage})).await);
        next_millisecond().await;
    }
    let listed = list(&app, &[("limit", "100")]).await;
    let held: HashSet<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["stage"].as_str().unwrap())
        .collect();
    assert_eq!(held.len(), stages.len(), "{listed}");
    // Touched out of creation order, across stages.
    let mut touched = created.clone();
    for id in [&created[9], &created[2], &created[11]] {
        patch_ok(&app, id, json!({"title": "touched"})).await;
        next_millisecond().await;
        touched.retain(|t| t != id);
        touched.push(id.clone());
    }
    for (sort, want) in [
        ("created_at", created.clone()),
        ("-created_at", reversed(&created)),
        ("updated_at", touched.clone()),
        ("-updated_at", reversed(&touched)),
    ] {
        assert_sorted(&app, sort, &want).await;
        let (walked, pages) = walk(&app, &app.admin, &[("sort", sort)], 4).await;
        assert_eq!(pages, 4, "{sort}: 4 + 4 + 4 + 2");
        assert_eq!(walked, want, "{sort}: paging keeps the merged order");
    }
    for sort in ["score", "-score"] {
        let (walked, _) = walk(&app, &app.admin, &[("sort", sort)], 4).await;
        let unique: HashSet<&String> = walked.iter().collect();
        assert_eq!(
            unique.len(),
            14,
            "{sort}: every lead once, whatever its stage"
        );
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
    batch(&app, json!(leads)).await;
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
async fn a_cursor_only_pages_the_list_sort_and_filter_it_came_from() {
    let app = spawn_app().await;
    batch(&app, json!(named_leads("c", 6))).await;
    let first = list(&app, &[("sort", "score"), ("limit", "2")]).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    // The same list, with its parameters in another order and another page size, goes on.
    let next = list(
        &app,
        &[("limit", "3"), ("cursor", &cursor), ("sort", "score")],
    )
    .await;
    assert_eq!(page_items(&next).len(), 3);
    for other in [
        vec![("sort", "-created_at")],
        vec![],
        vec![("sort", "score"), ("stage", "lead")],
    ] {
        let mut q = other.clone();
        q.push(("cursor", &cursor));
        let res = list_response(&app, &app.admin, &q).await;
        let p = assert_invalid(res, "cursor").await;
        assert!(p.to_string().contains("another list"), "{p}");
    }
    let res = app
        .get(&format!("/v1/tasks?cursor={cursor}"), &app.admin)
        .await;
    assert_invalid(res, "cursor").await;
}

#[tokio::test]
async fn cursor_paging_as_a_rep_walks_own_and_pool_leads_once() {
    let app = spawn_app().await;
    let (rep_id, rep) = app.rep("wang", None).await;
    let (other_id, _) = app.rep("zhao", None).await;
    let pool = create_pool(&app, "expo").await;
    let mut visible = HashSet::new();
    for i in 0..24 {
        let body = match i % 3 {
            0 => json!({"name": format!("own{i}"), "owner_id": rep_id}),
            1 => json!({"name": format!("pool{i}"), "pool_id": pool}),
            _ => json!({"name": format!("hidden{i}"), "owner_id": other_id}),
        };
        let id = create_id(&app, body).await;
        if i % 3 != 2 {
            visible.insert(id);
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
    batch(&app, json!(named_leads("n", 60))).await;
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
    create(&app, json!({"name": "x"})).await;
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
        let res = list_response(&app, &app.admin, &[(name, value)]).await;
        assert_invalid(res, name).await;
    }
    let res = list_response(&app, &app.admin, &[("colour", "red")]).await;
    let p = assert_invalid(res, "colour").await;
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown")
    );
    let res = list_response(&app, &app.admin, &[("stage", "MQL")]).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
}

// ----- GET /v1/leads/{id} -----

#[tokio::test]
async fn get_returns_the_lead_with_its_etag() {
    let app = spawn_app().await;
    let lead = create(&app, json!({"email": "get@acme.com", "name": "G"})).await;
    let res = app.get(&lead_path(&id_of(&lead)), &app.admin).await;
    assert_etag(&res, 1);
    let read = expect_json(res, StatusCode::OK).await;
    let mut expected = lead;
    expected.as_object_mut().unwrap().remove("merged");
    assert_eq!(read, expected);
}

// ----- PATCH /v1/leads/{id} -----

#[tokio::test]
async fn patch_is_a_merge_patch() {
    let app = spawn_app().await;
    let lead = create(
        &app,
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
    let res = patch_lead(
        &app,
        &id,
        &json!({
            "title": "CEO",
            "company": null,
            "fields": {"a": null, "b": 2, "nested": {"x": null, "z": 3}},
            "utm": {"medium": null, "campaign": "spring"}
        }),
    )
    .await;
    assert_etag(&res, 2);
    let patched = expect_json(res, StatusCode::OK).await;
    // absent fields are left alone
    let expected = json!({
        "version": 2,
        "title": "CEO",
        "company": null,
        "name": "Old",
        "phone": "+8613812345678",
        "tags": ["a", "b"],
        "fields": {"keep": true, "b": 2, "nested": {"y": 2, "z": 3}},
        "utm": {"source": "baidu", "medium": null, "campaign": "spring", "term": null, "content": null},
        "created_at": lead["created_at"]
    });
    assert_fields(&patched, expected);
    assert!(patched["updated_at"].as_str() >= lead["updated_at"].as_str());
    // and stored so
    assert_eq!(read_lead(&app, &id).await, patched);
}

#[tokio::test]
async fn patch_null_clears_whole_objects_and_lists() {
    let app = spawn_app().await;
    let lead = create(
        &app,
        json!({"name": "N", "tags": ["a"], "fields": {"a": 1}, "utm": {"source": "s"},
               "company_size": 50}),
    )
    .await;
    // Set by a patch: placing a new lead (routing, pooling) sets its follow-up time itself.
    let lead = patch_ok(
        &app,
        &id_of(&lead),
        json!({"next_follow_up_at": "2030-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(lead["next_follow_up_at"], "2030-01-01T00:00:00.000Z");
    let cleared = json!({"tags": null, "fields": null, "utm": null, "company_size": null,
                         "next_follow_up_at": null});
    let patched = patch_ok(&app, &id_of(&lead), cleared).await;
    assert_fields(
        &patched,
        json!({"tags": [], "fields": {}, "utm.source": null, "company_size": null,
               "next_follow_up_at": null}),
    );
}

#[tokio::test]
async fn patch_null_on_a_member_that_cannot_be_empty_is_422() {
    let app = spawn_app().await;
    let lead = id_of(&create(&app, json!({"name": "N"})).await);
    for field in ["stage", "status", "flags"] {
        let res = patch_lead(&app, &lead, &json!({ field: null })).await;
        assert_invalid(res, field).await;
    }
    assert_eq!(
        read_lead(&app, &lead).await["version"],
        1,
        "nothing changed"
    );
    let (user, _) = app.rep("nully", None).await;
    for field in ["name", "role", "capacity", "active"] {
        let res = app
            .patch(
                &format!("/v1/users/{user}"),
                &app.admin,
                &json!({ field: null }),
            )
            .await;
        assert_invalid(res, field).await;
    }
    let res = app
        .post(
            "/v1/webhooks",
            &app.admin,
            &json!({"url": "https://example.com/hook", "events": ["lead.*"]}),
        )
        .await;
    let hook = id_of(&expect_json(res, StatusCode::CREATED).await);
    for field in ["url", "events", "active"] {
        let res = app
            .patch(
                &format!("/v1/webhooks/{hook}"),
                &app.admin,
                &json!({ field: null }),
            )
            .await;
        assert_invalid(res, field).await;
    }
}

#[tokio::test]
async fn patch_replaces_tags_and_normalizes_values() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"name": "N", "tags": ["a"]})).await;
    let p = patch_ok(
        &app,
        &id,
        json!({"tags": ["X", "y", "x"], "email": " Mixed@Case.COM ", "phone": "+86 139 0000 2222",
               "channel": "EMAIL", "source": "Expo", "stage": "sql", "status": "connected",
               "flags": {"do_not_contact": true}}),
    )
    .await;
    assert_fields(
        &p,
        json!({"tags": ["x", "y"], "email": "mixed@case.com", "phone": "+8613900002222",
               "channel": "email", "source": "expo", "stage": "sql", "status": "connected",
               "flags.do_not_contact": true}),
    );
    // the new email dedupes now
    let res = capture(&app, &json!({"email": "MIXED@case.com"})).await;
    assert_merged_into(res, &id).await;
}

#[tokio::test]
async fn patch_accepts_application_json_too() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"name": "N"})).await;
    let path = lead_path(&id);
    let vp = json!({"title": "VP"}).to_string();
    let res = send_raw(&app, Method::PATCH, &path, "application/json", vp).await;
    assert_eq!(expect_json(res, StatusCode::OK).await["title"], "VP");
    let ceo = json!({"title": "CEO"}).to_string();
    let res = send_raw(&app, Method::PATCH, &path, "text/plain", ceo).await;
    assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let truncated = "{\"title\":";
    let res = send_raw(
        &app,
        Method::PATCH,
        &path,
        "application/merge-patch+json",
        truncated,
    )
    .await;
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    assert_fields(
        &read_lead(&app, &id).await,
        json!({"title": "VP", "version": 2}),
    );
}

#[tokio::test]
async fn patch_bumps_the_etag_each_time() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"name": "N"})).await;
    for v in 2..=4 {
        let res = patch_lead(&app, &id, &json!({"title": format!("t{v}")})).await;
        assert_etag(&res, v);
        assert_eq!(expect_json(res, StatusCode::OK).await["version"], v);
        assert_etag(&app.get(&lead_path(&id), &app.admin).await, v);
    }
}

#[tokio::test]
async fn patch_with_current_if_match_succeeds_and_stale_is_412() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"name": "N"})).await;
    let res = patch_if_match(&app, &id, "\"1\"", &json!({"title": "A"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_etag(&res, 2);

    // an unquoted or non-numeric tag never names the current version either
    for stale in ["\"1\"", "\"3\"", "W/\"1\"", "\"abc\"", "1", ""] {
        let res = patch_if_match(&app, &id, stale, &json!({"title": "B"})).await;
        assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
    }
    // nor does one that is not ASCII (RFC 9110: a tag that cannot be read never matches)
    let res = app
        .req(Method::PATCH, &lead_path(&id), &app.admin)
        .header(
            "if-match",
            reqwest::header::HeaderValue::from_bytes("\"é\"".as_bytes()).unwrap(),
        )
        .json(&json!({"title": "B"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
    assert_fields(
        &read_lead(&app, &id).await,
        json!({"title": "A", "version": 2}),
    );

    // a list of tags matches if any does; `*` matches any version
    let res = patch_if_match(&app, &id, "\"1\", \"2\"", &json!({"title": "C"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = patch_if_match(&app, &id, "*", &json!({"title": "D"})).await;
    assert_eq!(expect_json(res, StatusCode::OK).await["version"], 4);
}

#[tokio::test]
async fn concurrent_patches_with_one_if_match_let_exactly_one_win() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"name": "N"})).await;
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
        assert_fields(
            &read_lead(&app, &id).await,
            json!({"version": version + 1, "title": won["title"]}),
        );
    }
}

#[tokio::test]
async fn many_concurrent_conditional_patches_yield_one_winner() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"name": "N"})).await;
    let url = app.url(&lead_path(&id));
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
    assert_eq!(read_lead(&app, &id).await["version"], 2);
}

#[tokio::test]
async fn patch_that_changes_nothing_keeps_the_version() {
    let app = spawn_app().await;
    let lead = create(
        &app,
        json!({"name": "N", "email": "same@acme.com", "title": "CTO", "fields": {"a": 1}}),
    )
    .await;
    let id = id_of(&lead);
    for noop in [
        json!({}),
        json!({"title": "CTO"}),
        json!({"email": "SAME@acme.com "}),
        json!({"fields": {"a": 1}}),
        json!({"company": null}),
        json!({"stage": "lead", "status": "new"}),
    ] {
        let res = patch_lead(&app, &id, &noop).await;
        assert_eq!(res.status(), StatusCode::OK, "{noop}");
        assert_eq!(header(&res, "etag").as_deref(), Some("\"1\""), "{noop}");
        let body = json_of(res).await;
        assert_eq!(body["version"], 1, "{noop}");
        assert_eq!(body["updated_at"], lead["updated_at"], "{noop}");
    }
    assert!(events(&app, &id, "updated").await.is_empty());
    // a no-op still honours If-Match
    let res = patch_if_match(&app, &id, "\"7\"", &json!({})).await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
}

#[tokio::test]
async fn patch_to_another_leads_email_or_phone_is_409() {
    let app = spawn_app().await;
    create(
        &app,
        json!({"email": "taken@acme.com", "phone": "13800000001"}),
    )
    .await;
    let mine = create_id(&app, json!({"email": "mine@acme.com"})).await;
    for body in [
        json!({"email": "taken@acme.com"}),
        json!({"email": " TAKEN@Acme.com"}),
        json!({"phone": "+86 138 0000 0001"}),
        json!({"title": "x", "phone": "8613800000001"}),
    ] {
        assert_problem(patch_lead(&app, &mine, &body).await, StatusCode::CONFLICT).await;
    }
    assert_fields(
        &read_lead(&app, &mine).await,
        json!({"email": "mine@acme.com", "phone": null, "title": null, "version": 1}),
    );
}

#[tokio::test]
async fn patch_moves_the_dedupe_keys() {
    let app = spawn_app().await;
    let id = create_id(
        &app,
        json!({"email": "old@acme.com", "phone": "13800000011"}),
    )
    .await;
    patch_ok(&app, &id, json!({"email": "new@acme.com", "phone": null})).await;
    // the old email and the cleared phone are free for other leads
    assert_ne!(create_id(&app, json!({"email": "old@acme.com"})).await, id);
    assert_ne!(create_id(&app, json!({"phone": "13800000011"})).await, id);
    // the new email dedupes to the patched lead
    assert_merged_into(capture(&app, &json!({"email": "NEW@acme.com"})).await, &id).await;
    // and the freed email, now another lead's, is a conflict for the first
    let res = patch_lead(&app, &id, &json!({"email": "old@acme.com"})).await;
    assert_problem(res, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn patch_stage_change_writes_a_timeline_event() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"name": "N"})).await;
    for body in [
        json!({"stage": "mql"}),
        json!({"stage": "sql", "title": "x"}),
        json!({"title": "y"}),
    ] {
        patch_ok(&app, &id, body).await;
    }

    let changes = events(&app, &id, "stage_changed").await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    // newest first
    assert_eq!(changes[0]["data"], json!({"from": "mql", "to": "sql"}));
    assert_eq!(changes[1]["data"], json!({"from": "lead", "to": "mql"}));
    assert!(changes.iter().all(|c| c["actor_id"].is_string()));
    assert_eq!(events(&app, &id, "updated").await.len(), 3);
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
    let id = create_id(&app, json!({"email": "only@acme.com"})).await;
    let path = lead_path(&id);
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
        // A separator would split the tag when an export is imported again.
        (json!({"tags": ["ok", "north;south"]}), "tags[1]"),
        (json!({"tags": ["a，b"]}), "tags[0]"),
        (json!({"name": "n".repeat(501)}), "name"),
        (json!({"email": null}), "email"),
    ];
    assert_each_rejected(&app, Method::PATCH, &path, &cases).await;
    let read_only = with_each_field_set(
        &json!({"title": "x"}),
        &["id", "score", "version", "created_at", "merged"],
    );
    for p in assert_each_rejected(&app, Method::PATCH, &path, &read_only).await {
        assert_eq!(p["errors"][0]["message"], "is read-only", "{p}");
    }
    assert_fields(
        &read_lead(&app, &id).await,
        json!({"version": 1, "email": "only@acme.com"}),
    );
}

// ----- DELETE /v1/leads/{id} -----

#[tokio::test]
async fn delete_erases_the_lead_its_activities_and_its_dedupe_keys() {
    let app = spawn_app().await;
    let id = create_id(
        &app,
        json!({"email": "gone@acme.com", "phone": "13800000077", "name": "Gone"}),
    )
    .await;
    add_activity(&app, &id, "note", "called, no answer").await;
    let keep = create_id(&app, json!({"name": "Keep"})).await;

    delete_ok(&app, &id).await;
    assert_not_found_everywhere(&app, &id).await;
    assert_eq!(all_ids(&app).await, vec![keep]);
    assert!(
        ids(&list(&app, &[("owner_id", "none"), ("sort", "score")]).await)
            .iter()
            .all(|i| *i != id)
    );

    // neither email nor phone dedupes any more
    let again = create(&app, json!({"email": "GONE@acme.com"})).await;
    assert_ne!(id_of(&again), id);
    assert!(
        again["name"].is_null(),
        "nothing of the erased lead came back"
    );
    let by_phone = create_id(&app, json!({"phone": "13800000077"})).await;
    assert_ne!(by_phone, id);
    assert_ne!(by_phone, id_of(&again));
}

#[tokio::test]
async fn delete_forgets_idempotent_responses_holding_the_lead() {
    let app = spawn_app().await;
    let body = json!({"email": "idem-gone@acme.com", "name": "Secret Name"});
    let first = id_of(&json_of(post_with_key(&app, "/v1/leads", "erase-me", &body).await).await);
    delete_ok(&app, &first).await;
    // a retry must not replay the erased person's data
    let res = post_with_key(&app, "/v1/leads", "erase-me", &body).await;
    assert_ne!(header(&res, "idempotent-replayed").as_deref(), Some("true"));
    assert_ne!(id_of(&expect_json(res, StatusCode::CREATED).await), first);
}

#[tokio::test]
async fn delete_with_stale_if_match_is_412_and_current_succeeds() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"name": "N"})).await;
    patch_ok(&app, &id, json!({"title": "x"})).await;
    let res = delete_if_match(&app, &id, "\"1\"").await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
    read_lead(&app, &id).await; // still there
    let res = delete_if_match(&app, &id, "\"2\"").await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.get(&lead_path(&id), &app.admin).await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
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
    let pool = create_pool(&app, "erase").await;
    let res = post_with_key(
        &app,
        "/v1/leads",
        "erase-key",
        &json!({"email": "erase@acme.com", "phone": "13800000099", "tags": ["t"],
                "source": "web", "channel": "event", "pool_id": pool}),
    )
    .await;
    let id = id_of(&expect_json(res, StatusCode::CREATED).await);
    let activity = id_of(&add_activity(&app, &id, "note", "private").await);
    patch_ok(&app, &id, json!({"stage": "mql"})).await;
    delete_ok(&app, &id).await;
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

// ----- GET /v1/leads/{id}/export -----

#[tokio::test]
async fn export_holds_the_lead_its_activities_and_events() {
    let app = spawn_app().await;
    let id = create_id(&app, json!({"email": "me@acme.com", "title": "CTO"})).await;
    for (kind, text) in [("note", "likes MES"), ("call", "follow up Friday")] {
        add_activity(&app, &id, kind, text).await;
    }
    patch_ok(&app, &id, json!({"stage": "mql"})).await;
    let res = capture(&app, &json!({"email": "ME@acme.com", "title": "CEO"})).await;
    assert_merged_into(res, &id).await;
    let other = create_id(&app, json!({"email": "other@acme.com"})).await;
    add_activity(&app, &other, "note", "someone else").await;

    let res = app
        .get(&format!("{}/export", lead_path(&id)), &app.admin)
        .await;
    assert!(
        header(&res, "content-disposition")
            .unwrap()
            .starts_with("attachment")
    );
    let export = expect_json(res, StatusCode::OK).await;
    assert_fields(
        &export,
        json!({"lead.id": id, "lead.email": "me@acme.com", "lead.stage": "mql"}),
    );
    let acts = export["activities"].as_array().unwrap();
    let mut texts: Vec<&str> = acts.iter().filter_map(|a| a["text"].as_str()).collect();
    texts.sort();
    assert_eq!(texts, ["follow up Friday", "likes MES"]);
    // both captures (the create and the duplicate) are there with what they sent
    let captures: Vec<&Value> = acts.iter().filter(|a| a["kind"] == "capture").collect();
    assert_eq!(captures.len(), 2);
    let lead_ids = strings_of(&export["activities"], "lead_id");
    assert!(lead_ids.iter().all(|l| *l == id), "{lead_ids:?}");
    let events = export["events"].as_array().unwrap();
    let kinds: HashSet<&str> = strings_of(&export["events"], "kind").into_iter().collect();
    for k in ["updated", "stage_changed", "merged"] {
        assert!(kinds.contains(k), "missing {k} in {kinds:?}");
    }
    let merged = events.iter().find(|e| e["kind"] == "merged").unwrap();
    assert_eq!(merged["data"]["conflicts"][0]["offered"], "CEO");
}

#[tokio::test]
async fn export_holds_the_persons_score_work_nurture_and_webhook_deliveries() {
    let app = spawn_app_with(|c| c.webhooks.allow_private_destinations = true).await;
    // Nothing listens there: deliveries stay pending, and are held all the same.
    let hook = app
        .post(
            "/v1/webhooks",
            &app.admin,
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["lead.*"]}),
        )
        .await;
    assert_eq!(hook.status(), StatusCode::CREATED);
    let (_, rep) = app.rep("ana", None).await;
    let lead = app
        .create_lead(&rep, json!({"email": "me@acme.com", "title": "CTO"}))
        .await;
    let id = id_of(&lead);
    let task = app
        .post(
            "/v1/tasks",
            &rep,
            &json!({"title": "Call back", "lead_id": id, "due_at": "2030-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(task.status(), StatusCode::CREATED);

    let export_as = async |token: &str| {
        expect_json(
            app.get(&format!("{}/export", lead_path(&id)), token).await,
            StatusCode::OK,
        )
        .await
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let export = loop {
        let e = export_as(&app.admin).await;
        if e["webhook_deliveries"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
        {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "no delivery: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deliveries = export["webhook_deliveries"].as_array().unwrap();
    assert!(
        deliveries.iter().all(|d| d["lead_id"] == id.as_str()),
        "{deliveries:?}"
    );
    assert_eq!(export["score"]["total"], 20, "{export}");
    assert_eq!(
        export["score"]["reasons"][0]["rule"],
        "title is a decision maker"
    );
    assert_eq!(strings_of(&export["tasks"], "title"), ["Call back"]);
    assert!(export["sla"].is_object(), "{export}");
    for list in ["notifications", "enrollments", "emails"] {
        assert!(export[list].is_array(), "{list}: {export}");
    }
    // A rep sees the person's data, not the webhooks'.
    let by_rep = export_as(&rep).await;
    assert!(by_rep["webhook_deliveries"].is_null(), "{by_rep}");
    assert_eq!(strings_of(&by_rep["tasks"], "title"), ["Call back"]);
}
