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
