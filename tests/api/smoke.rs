use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn create_read_list_patch_delete_round_trip() {
    let app = spawn_app().await;
    let lead = app
        .create_lead(
            &app.admin,
            json!({"name": "王总", "email": "Wang@Acme.cn", "company": "Acme"}),
        )
        .await;
    let id = lead["id"].as_str().unwrap();
    assert_eq!(lead["email"], "wang@acme.cn");
    assert_eq!(lead["merged"], false);

    let res = app.get(&format!("/v1/leads/{id}"), &app.admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"1\"");

    let list: Value = app.get("/v1/leads", &app.admin).await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let res = app
        .patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"title": "CEO"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let patched: Value = res.json().await.unwrap();
    assert_eq!(patched["title"], "CEO");
    assert_eq!(patched["version"], 2);

    let res = app.delete(&format!("/v1/leads/{id}"), &app.admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.get(&format!("/v1/leads/{id}"), &app.admin).await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn restart_keeps_everything() {
    let mut app = spawn_app().await;
    let lead = app
        .create_lead(&app.admin, json!({"email": "keep@acme.com"}))
        .await;
    app.restart().await;
    let res = app
        .get(
            &format!("/v1/leads/{}", lead["id"].as_str().unwrap()),
            &app.admin,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["email"], "keep@acme.com");
}

#[tokio::test]
async fn user_create_honours_idempotency_key() {
    let app = spawn_app().await;
    let body = json!({"name": "Idem Rep", "role": "rep", "email": "idem@example.com"});
    let send = |b: Value| {
        app.req(reqwest::Method::POST, "/v1/users", &app.admin)
            .header("idempotency-key", "user-1")
            .json(&b)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    let retry = send(body.clone()).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["location"].to_str().unwrap(), location);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);
    let users: Value = app.get("/v1/users", &app.admin).await.json().await.unwrap();
    assert_eq!(
        users["items"].as_array().unwrap().len(),
        2,
        "admin and one rep"
    );
    let other = send(json!({"name": "Someone Else", "role": "rep"}))
        .await
        .unwrap();
    let problem = assert_problem(other, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&problem), "Idempotency-Key");
}
