//! Users CRUD, `/v1/me`, tokens, login and logout, and how bad credentials are refused.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("json body")
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn create_user_returns_the_user_with_location_and_etag() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/users",
            &app.admin,
            &json!({"name": " Li  Lei ", "email": "Li.Lei@Acme.com", "role": "manager",
                "team": "east", "territories": ["华东", "CN-31", "华东"], "product_lines": ["A"],
                "capacity": 30, "password": "a long password"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(res.headers()["etag"], "\"1\"");
    let user = body(res).await;
    let id = user["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/users/{id}"));
    assert_eq!(user["name"], "Li Lei");
    assert_eq!(user["email"], "li.lei@acme.com");
    assert_eq!(user["role"], "manager");
    assert_eq!(user["team"], "east");
    assert_eq!(user["territories"], json!(["华东", "CN-31"]));
    assert_eq!(user["capacity"], 30);
    assert_eq!(user["active"], true);
    assert_eq!(user["senior"], false);
    assert_eq!(user["has_password"], true);
    assert_eq!(user["version"], 1);
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());
    assert!(!user.to_string().contains("a long password"));

    let res = app.get(&location, &app.admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let again = body(res).await;
    assert_eq!(again, user);

    let defaults = app
        .post(
            "/v1/users",
            &app.admin,
            &json!({"name": "r", "role": "rep"}),
        )
        .await;
    assert_eq!(defaults.status(), StatusCode::CREATED);
    let d = body(defaults).await;
    assert_eq!(d["capacity"], 50);
    assert_eq!(d["has_password"], false);
    assert_eq!(d["email"], Value::Null);
}

#[tokio::test]
async fn duplicate_names_and_emails_conflict() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/users",
            &app.admin,
            &json!({"name": "Wang", "email": "wang@acme.com", "role": "rep"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let first = body(res).await;
    for dup in [
        json!({"name": "Wang", "role": "rep"}),
        json!({"name": "WANG", "role": "manager"}),
        json!({"name": "admin", "role": "rep"}),
        json!({"name": "Other", "email": "WANG@acme.com", "role": "rep"}),
    ] {
        let res = app.post("/v1/users", &app.admin, &dup).await;
        assert_problem(res, StatusCode::CONFLICT).await;
    }
    let res = app
        .post(
            "/v1/users",
            &app.admin,
            &json!({"name": "Zhao", "email": "zhao@acme.com", "role": "rep"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let zhao = body(res).await;
    // renaming or re-emailing onto someone else conflicts too
    let path = format!("/v1/users/{}", zhao["id"].as_str().unwrap());
    for patch in [json!({"name": "wang"}), json!({"email": "wang@acme.com"})] {
        let res = app.patch(&path, &app.admin, &patch).await;
        assert_problem(res, StatusCode::CONFLICT).await;
    }
    let users = body(app.get("/v1/users", &app.admin).await).await;
    assert_eq!(users["items"].as_array().unwrap().len(), 3);
    let wang = body(
        app.get(
            &format!("/v1/users/{}", first["id"].as_str().unwrap()),
            &app.admin,
        )
        .await,
    )
    .await;
    assert_eq!(wang, first);
}

#[tokio::test]
async fn invalid_users_are_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"name": "x", "role": "boss"}), "role"),
        (json!({"name": "x"}), "role"),
        (json!({"role": "rep"}), "name"),
        (json!({"name": "   ", "role": "rep"}), "name"),
        (
            json!({"name": "x", "role": "rep", "email": "not-an-email"}),
            "email",
        ),
        (
            json!({"name": "x", "role": "rep", "password": "short"}),
            "password",
        ),
        (
            json!({"name": "x", "role": "rep", "colour": "red"}),
            "colour",
        ),
        (json!({"name": "x", "role": "rep", "id": "x"}), "id"),
        (
            json!({"name": "x", "role": "rep", "manager_id": "01900000-0000-7000-8000-000000000000"}),
            "manager_id",
        ),
        (
            json!({"name": "x", "role": "rep", "capacity": -1}),
            "capacity",
        ),
    ];
    for (input, field) in cases {
        let res = app.post("/v1/users", &app.admin, &input).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&problem), field, "{input} → {problem}");
    }
    let users = body(app.get("/v1/users", &app.admin).await).await;
    assert_eq!(users["items"].as_array().unwrap().len(), 1, "only admin");
    let (id, _) = app.rep("r", None).await;
    let path = format!("/v1/users/{id}");
    for (patch, field) in [
        (json!({"password": "short"}), "password"),
        (json!({"email": "nope"}), "email"),
        (json!({"role": "boss"}), "role"),
        (json!({"name": ""}), "name"),
    ] {
        let res = app.patch(&path, &app.admin, &patch).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&problem), field, "{patch} → {problem}");
    }
}

#[tokio::test]
async fn patch_and_delete_honour_if_match() {
    let app = spawn_app().await;
    let (id, token) = app.rep("r", None).await;
    let path = format!("/v1/users/{id}");

    let res = app
        .req(reqwest::Method::PATCH, &path, &app.admin)
        .header("content-type", "application/merge-patch+json")
        .header("if-match", "\"7\"")
        .body(json!({"capacity": 10}).to_string())
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(body(app.get(&path, &app.admin).await).await["capacity"], 50);

    let res = app
        .req(reqwest::Method::PATCH, &path, &app.admin)
        .header("content-type", "application/json")
        .header("if-match", "\"1\"")
        .body(json!({"capacity": 10, "senior": true, "team": "east"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let u = body(res).await;
    assert_eq!(u["version"], 2);
    assert_eq!(u["capacity"], 10);
    assert_eq!(u["senior"], true);
    assert_eq!(u["team"], "east");
    // a merge patch with null clears
    let res = app.patch(&path, &app.admin, &json!({"team": null})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["team"], Value::Null);

    let res = app
        .req(reqwest::Method::DELETE, &path, &app.admin)
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(app.get(&path, &app.admin).await.status(), StatusCode::OK);
    let res = app
        .req(reqwest::Method::DELETE, &path, &app.admin)
        .header("if-match", "\"3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get(&path, &app.admin).await, StatusCode::NOT_FOUND).await;
    assert_problem(app.delete(&path, &app.admin).await, StatusCode::NOT_FOUND).await;
    // the deleted user's tokens died with them
    assert_problem(app.get("/v1/me", &token).await, StatusCode::UNAUTHORIZED).await;
    // and the name is free again
    let res = app
        .post(
            "/v1/users",
            &app.admin,
            &json!({"name": "r", "role": "rep"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // unknown ids
    for bad in ["01900000-0000-7000-8000-000000000000", "not-a-uuid"] {
        let p = format!("/v1/users/{bad}");
        assert_problem(app.get(&p, &app.admin).await, StatusCode::NOT_FOUND).await;
        assert_problem(
            app.patch(&p, &app.admin, &json!({"name": "z"})).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
}

#[tokio::test]
async fn deleting_a_lead_owner_or_yourself_conflicts() {
    let app = spawn_app().await;
    let (id, token) = app.rep("owner", None).await;
    let lead = app
        .create_lead(&token, json!({"email": "o@acme.com"}))
        .await;
    let path = format!("/v1/users/{id}");
    assert_problem(app.delete(&path, &app.admin).await, StatusCode::CONFLICT).await;
    assert_eq!(app.get(&path, &app.admin).await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/me", &token).await.status(), StatusCode::OK);

    let lead_path = format!("/v1/leads/{}", lead["id"].as_str().unwrap());
    let res = app
        .patch(&lead_path, &app.admin, &json!({"owner_id": null}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // An open task of theirs would be listed for nobody: finish or reassign it first.
    let task = expect_json(
        app.post(
            "/v1/tasks",
            &app.admin,
            &json!({"title": "call", "owner_id": id}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let p = assert_problem(app.delete(&path, &app.admin).await, StatusCode::CONFLICT).await;
    assert!(p["detail"].as_str().unwrap().contains("task"), "{p}");
    let res = app
        .patch(
            &format!("/v1/tasks/{}", task["id"].as_str().unwrap()),
            &app.admin,
            &json!({"done": true}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.delete(&path, &app.admin).await.status(),
        StatusCode::NO_CONTENT
    );

    // `/v1/me` is the caller's own record, with its ETag like `/v1/users/{id}`.
    let me_res = app.get("/v1/me", &app.admin).await;
    let tag = me_res.headers()["etag"].to_str().unwrap().to_owned();
    let admin = body(me_res).await;
    assert_eq!(tag, format!("\"{}\"", admin["version"]));
    let me = format!("/v1/users/{}", admin["id"].as_str().unwrap());
    assert_problem(app.delete(&me, &app.admin).await, StatusCode::CONFLICT).await;
    for demote in [json!({"role": "rep"}), json!({"active": false})] {
        let res = app.patch(&me, &app.admin, &demote).await;
        assert_problem(res, StatusCode::CONFLICT).await;
    }
    let admin_now = body(app.get("/v1/me", &app.admin).await).await;
    assert_eq!(admin_now["role"], "admin");
    assert_eq!(admin_now["active"], true);
}

#[tokio::test]
async fn a_deactivated_users_token_is_refused_until_reactivated() {
    let app = spawn_app().await;
    let (id, token) = app.rep("r", None).await;
    let path = format!("/v1/users/{id}");
    let res = app
        .patch(&path, &app.admin, &json!({"active": false}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["active"], false);
    assert_problem(app.get("/v1/me", &token).await, StatusCode::UNAUTHORIZED).await;
    assert_problem(
        app.post("/v1/leads", &token, &json!({"email": "x@acme.com"}))
            .await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // nobody may be given a lead while deactivated
    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"email": "x@acme.com", "owner_id": id}),
        )
        .await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&problem), "owner_id");

    let res = app.patch(&path, &app.admin, &json!({"active": true})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/me", &token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn me_and_issued_tokens_identify_the_caller() {
    let app = spawn_app().await;
    let res = app.get("/v1/me", &app.admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    let admin = body(res).await;
    assert_eq!(admin["name"], "admin");
    assert_eq!(admin["role"], "admin");

    let (id, token) = app
        .create_user(json!({"name": "Chen", "role": "rep", "team": "south"}))
        .await;
    let me = body(app.get("/v1/me", &token).await).await;
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["name"], "Chen");
    assert_eq!(me["role"], "rep");
    assert_eq!(me["team"], "south");

    // a second token works alongside the first
    let res = app
        .post(&format!("/v1/users/{id}/tokens"), &app.admin, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let t = body(res).await;
    assert_eq!(t["user_id"], id.as_str());
    let second = t["token"].as_str().unwrap();
    assert_ne!(second, token);
    assert_eq!(
        body(app.get("/v1/me", second).await).await["id"],
        id.as_str()
    );
    assert_eq!(app.get("/v1/me", &token).await.status(), StatusCode::OK);

    let res = app
        .post(
            "/v1/users/01900000-0000-7000-8000-000000000000/tokens",
            &app.admin,
            &json!({}),
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn login_gives_an_expiring_token_and_logout_revokes_it() {
    let app = spawn_app().await;
    let (id, api_token) = app
        .create_user(
            json!({"name": "Sun", "email": "sun@acme.com", "role": "rep",
            "password": "correct horse"}),
        )
        .await;

    let res = login(&app, " SUN@acme.com ", "correct horse").await;
    assert_eq!(res.status(), StatusCode::OK);
    let session = body(res).await;
    let token = session["token"].as_str().unwrap().to_owned();
    assert_ne!(token, api_token);
    let expires = chrono::DateTime::parse_from_rfc3339(session["expires_at"].as_str().unwrap())
        .expect("expires_at is RFC 3339");
    let ahead = expires.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::hours(24 * 7 - 1) && ahead <= chrono::Duration::hours(24 * 7),
        "expires in {ahead}"
    );
    assert_eq!(
        body(app.get("/v1/me", &token).await).await["id"],
        id.as_str()
    );

    for (email, pw) in [
        ("sun@acme.com", "wrong horse"),
        ("sun@acme.com", ""),
        ("nobody@acme.com", "correct horse"),
    ] {
        let problem = assert_problem(login(&app, email, pw).await, StatusCode::UNAUTHORIZED).await;
        assert_eq!(problem["detail"], "wrong email or password");
    }
    let res = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "sun@acme.com"}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&problem), "password");

    let res = app.post("/v1/auth/logout", &token, &json!({})).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get("/v1/me", &token).await, StatusCode::UNAUTHORIZED).await;
    assert_problem(
        app.post("/v1/auth/logout", &token, &json!({})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // only that session ended
    assert_eq!(app.get("/v1/me", &api_token).await.status(), StatusCode::OK);

    // a deactivated user cannot log in
    let res = app
        .patch(
            &format!("/v1/users/{id}"),
            &app.admin,
            &json!({"active": false}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_problem(
        login(&app, "sun@acme.com", "correct horse").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn a_user_without_a_password_cannot_log_in() {
    let app = spawn_app().await;
    app.create_user(json!({"name": "Tok", "email": "tok@acme.com", "role": "rep"}))
        .await;
    assert_problem(
        login(&app, "tok@acme.com", "").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_problem(
        login(&app, "tok@acme.com", "anything at all").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn missing_or_garbage_authorization_is_401_problem_json() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/v1/me")).send().await.unwrap();
    let problem = assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        problem["type"],
        "https://leadline.dev/problems/unauthorized"
    );
    for header in [
        "Bearer garbage",
        "Bearer ",
        "Bearer",
        "Basic YWRtaW46YWRtaW4=",
        "garbage",
        "Bearer ll_0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        for path in ["/v1/me", "/v1/leads", "/v1/users", "/v1/changes"] {
            let res = app
                .client
                .get(app.url(path))
                .header("authorization", header)
                .send()
                .await
                .unwrap();
            assert_problem(res, StatusCode::UNAUTHORIZED).await;
        }
    }
    // a write without a token creates nothing
    let res = app
        .client
        .post(app.url("/v1/users"))
        .json(&json!({"name": "x", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let users = body(app.get("/v1/users", &app.admin).await).await;
    assert_eq!(users["items"].as_array().unwrap().len(), 1);
    // the scheme is case-insensitive (RFC 9110 §11.1)
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let res = app
            .client
            .get(app.url("/v1/me"))
            .header("authorization", format!("{scheme} {}", app.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{scheme}");
    }
}

#[tokio::test]
async fn a_session_token_stops_working_when_it_expires() {
    let start = 1_780_000_000_000; // 2026-05-28T20:26:40Z
    let clock = std::sync::Arc::new(leadline::clock::ManualClock::new(start));
    let app = spawn_app_with_clock(clock.clone(), |c| c.auth.session_ttl_hours = 2).await;
    let (_, api_token) = app
        .create_user(json!({"name": "Ma", "email": "ma@acme.com", "role": "rep",
            "password": "correct horse"}))
        .await;
    let res = login(&app, "ma@acme.com", "correct horse").await;
    assert_eq!(res.status(), StatusCode::OK);
    let session = body(res).await;
    assert_eq!(session["expires_at"], "2026-05-28T22:26:40.000Z");
    let token = session["token"].as_str().unwrap();

    clock.advance(2 * 3_600_000 - 1);
    assert_eq!(app.get("/v1/me", token).await.status(), StatusCode::OK);
    clock.advance(1);
    assert_problem(app.get("/v1/me", token).await, StatusCode::UNAUTHORIZED).await;
    // API tokens do not expire
    clock.advance(365 * 24 * 3_600_000);
    assert_eq!(app.get("/v1/me", &api_token).await.status(), StatusCode::OK);
    // and a fresh login works again
    let res = login(&app, "ma@acme.com", "correct horse").await;
    assert_eq!(res.status(), StatusCode::OK);
    let fresh = body(res).await;
    let t = fresh["token"].as_str().unwrap();
    assert_eq!(app.get("/v1/me", t).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn short_lists_page_with_limit_and_cursor_like_every_list() {
    let app = spawn_app().await;
    for name in ["a", "b", "c"] {
        app.rep(name, None).await;
        let res = app
            .post(
                "/v1/pools",
                &app.admin,
                &json!({ "name": format!("pool {name}") }),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    for list in ["/v1/users", "/v1/pools"] {
        let all = body(app.get(list, &app.admin).await).await;
        let all: Vec<Value> = all["items"].as_array().unwrap().clone();
        assert!(all.len() >= 4, "{list}");
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("{list}?limit=2&cursor={c}"),
                None => format!("{list}?limit=2"),
            };
            let page = body(app.get(&path, &app.admin).await).await;
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 2);
            seen.extend(items.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, all, "{list}: every item once, in order");
        for bad in ["limit=0", "limit=501", "cursor=nope", "bogus=1"] {
            let res = app.get(&format!("{list}?{bad}"), &app.admin).await;
            assert_eq!(
                res.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{list}?{bad}"
            );
        }
    }
}

#[tokio::test]
async fn a_token_request_takes_no_fields() {
    let app = spawn_app().await;
    let (id, _) = app.rep("t", None).await;
    let path = format!("/v1/users/{id}/tokens");
    let res = app.post(&path, &app.admin, &json!({"bogus": 1})).await;
    assert_invalid(res, "bogus").await;
    let res = app.post(&path, &app.admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .req(reqwest::Method::POST, &path, &app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "no body at all");
}
