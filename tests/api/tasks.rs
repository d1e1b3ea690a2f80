//! Tasks: CRUD with ETag and If-Match, who sees and assigns which, validation, overdue lists per
//! rep and per team under a manual clock, and the reminder an hour before a task is due.

use crate::helpers::*;
use leadline::clock::ManualClock;
use leadline::domain::time::to_rfc3339;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const START: i64 = 1_795_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn at(ms: i64) -> String {
    to_rfc3339(ms)
}

async fn create_task(app: &TestApp, token: &str, body: Value) -> Value {
    expect_json(
        app.post("/v1/tasks", token, &body).await,
        StatusCode::CREATED,
    )
    .await
}

fn titles(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["title"].as_str().expect("title"))
        .collect()
}

async fn list(app: &TestApp, token: &str, query: &str) -> Value {
    expect_json(
        app.get(&format!("/v1/tasks{query}"), token).await,
        StatusCode::OK,
    )
    .await
}

#[tokio::test]
async fn task_lifecycle_with_etag_if_match_and_idempotency() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let (rep, token) = app.rep("ana", None).await;
    let lead = app
        .create_lead(&token, json!({"name": "Lead", "email": "lead@acme.com"}))
        .await;
    let lead_id = lead["id"].as_str().unwrap();

    let body = json!({"title": " Call back ", "lead_id": lead_id, "due_at": at(START + 3 * HOUR)});
    let res = app
        .req(Method::POST, "/v1/tasks", &token)
        .header("idempotency-key", "task-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let task: Value = res.json().await.unwrap();
    let id = task["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/tasks/{id}"));
    assert_fields(
        &task,
        json!({"title": "Call back", "owner_id": rep, "lead_id": lead_id, "version": 1,
            "due_at": at(START + 3 * HOUR), "done": false, "done_at": null, "overdue": false,
            "created_at": at(START), "updated_at": at(START)}),
    );

    // The same key and body answers with the first task and creates nothing.
    let again = app
        .req(Method::POST, "/v1/tasks", &token)
        .header("idempotency-key", "task-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], task["id"]);
    assert_eq!(
        list(&app, &token, "").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let res = app.get(&location, &token).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    assert_eq!(expect_json(res, StatusCode::OK).await, task);

    let stale = app
        .req(Method::PATCH, &location, &token)
        .header("if-match", "\"7\"")
        .json(&json!({"done": true}))
        .send()
        .await
        .unwrap();
    assert_problem(stale, StatusCode::PRECONDITION_FAILED).await;

    clock.advance(MIN);
    let res = app
        .req(Method::PATCH, &location, &token)
        .header("if-match", "\"1\"")
        .header("content-type", "application/merge-patch+json")
        .body(json!({"done": true, "title": "Called"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let done: Value = res.json().await.unwrap();
    assert_fields(
        &done,
        json!({"title": "Called", "done": true, "done_at": at(START + MIN), "version": 2,
            "updated_at": at(START + MIN), "created_at": at(START)}),
    );

    // Clearing the due time and the lead, re-opening.
    let reopened = expect_json(
        app.patch(
            &location,
            &token,
            &json!({"done": false, "due_at": null, "lead_id": null}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_fields(
        &reopened,
        json!({"done": false, "done_at": null, "due_at": null, "lead_id": null, "version": 3}),
    );
    // A patch that changes nothing keeps the version.
    let same = expect_json(
        app.patch(&location, &token, &json!({"done": false})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(same["version"], 3);

    assert_invalid(
        app.patch(&location, &token, &json!({"colour": "red"}))
            .await,
        "colour",
    )
    .await;
    assert_invalid(
        app.patch(&location, &token, &json!({"id": "x"})).await,
        "id",
    )
    .await;

    let res = app
        .req(Method::DELETE, &location, &token)
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::PRECONDITION_FAILED).await;
    let res = app
        .req(Method::DELETE, &location, &token)
        .header("if-match", "\"3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get(&location, &token).await, StatusCode::NOT_FOUND).await;
    assert_problem(app.delete(&location, &token).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn reps_see_their_own_tasks_and_managers_their_teams() {
    let app = spawn_app().await;
    let (manager, boss) = app
        .create_user(json!({"name": "mia", "role": "manager", "team": "east"}))
        .await;
    let (ana, ana_t) = app.rep("ana", Some("east")).await;
    let (bob, bob_t) = app.rep("bob", Some("west")).await;

    let task = create_task(&app, &ana_t, json!({"title": "Ana's"})).await;
    assert_eq!(task["owner_id"], ana.as_str());
    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());

    // Another rep: not found, whatever they try.
    assert_problem(app.get(&path, &bob_t).await, StatusCode::NOT_FOUND).await;
    assert_problem(
        app.patch(&path, &bob_t, &json!({"done": true})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(app.delete(&path, &bob_t).await, StatusCode::NOT_FOUND).await;
    assert!(titles(&list(&app, &bob_t, "").await).is_empty());
    assert!(titles(&list(&app, &bob_t, &format!("?owner_id={ana}")).await).is_empty());
    // Nor may they create for, or hand a task to, someone else.
    assert_problem(
        app.post("/v1/tasks", &bob_t, &json!({"title": "x", "owner_id": ana}))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let bobs = create_task(&app, &bob_t, json!({"title": "Bob's", "owner_id": bob})).await;
    let bobs_path = format!("/v1/tasks/{}", bobs["id"].as_str().unwrap());
    assert_problem(
        app.patch(&bobs_path, &bob_t, &json!({"owner_id": ana}))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // The manager of Ana's team sees and works her task, and may give her tasks, not Bob.
    expect_json(app.get(&path, &boss).await, StatusCode::OK).await;
    let for_ana = create_task(&app, &boss, json!({"title": "From Mia", "owner_id": ana})).await;
    assert_eq!(for_ana["owner_id"], ana.as_str());
    assert_problem(
        app.post("/v1/tasks", &boss, &json!({"title": "x", "owner_id": bob}))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_problem(app.get(&bobs_path, &boss).await, StatusCode::NOT_FOUND).await;
    let mine = create_task(&app, &boss, json!({"title": "Mia's"})).await;
    assert_eq!(mine["owner_id"], manager.as_str());
    let mut seen = titles(&list(&app, &boss, "").await)
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    seen.sort();
    assert_eq!(seen, ["Ana's", "From Mia", "Mia's"]);
    let handed = expect_json(
        app.patch(&path, &boss, &json!({"owner_id": manager})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(handed["owner_id"], manager.as_str());
    // Now it is the manager's, Ana no longer sees it.
    assert_problem(app.get(&path, &ana_t).await, StatusCode::NOT_FOUND).await;

    // Admins see everything.
    assert_eq!(
        list(&app, &app.admin, "").await["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        titles(&list(&app, &app.admin, &format!("?owner_id={bob}")).await),
        ["Bob's"]
    );
}

#[tokio::test]
async fn invalid_tasks_name_the_field() {
    let app = spawn_app().await;
    let (_, ana_t) = app.rep("ana", None).await;
    let (_, bob_t) = app.rep("bob", None).await;
    let bobs_lead = app
        .create_lead(&bob_t, json!({"name": "B", "email": "b@acme.com"}))
        .await;

    for (body, field) in [
        (json!({"title": "  "}), "title"),
        (json!({}), "title"),
        (json!({"title": "x", "due_at": "tomorrow"}), "due_at"),
        (json!({"title": "x", "owner_id": "nope"}), "owner_id"),
        (
            json!({"title": "x", "lead_id": "0190f0f0-0000-7000-8000-000000000000"}),
            "lead_id",
        ),
        (json!({"title": "x", "lead_id": bobs_lead["id"]}), "lead_id"),
        (json!({"title": "x", "priority": 1}), "priority"),
    ] {
        assert_invalid(app.post("/v1/tasks", &ana_t, &body).await, field).await;
    }
    // An admin may give a task to anyone, as long as they exist.
    assert_invalid(
        app.post(
            "/v1/tasks",
            &app.admin,
            &json!({"title": "x", "owner_id": "0190f0f0-0000-7000-8000-000000000000"}),
        )
        .await,
        "owner_id",
    )
    .await;

    let task = create_task(&app, &ana_t, json!({"title": "ok"})).await;
    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    for (body, field) in [
        (json!({"title": null}), "title"),
        (json!({"title": ""}), "title"),
        (json!({"done": null}), "done"),
        (json!({"due_at": "soon"}), "due_at"),
        (json!({"lead_id": bobs_lead["id"]}), "lead_id"),
    ] {
        assert_invalid(app.patch(&path, &ana_t, &body).await, field).await;
    }
    for q in [
        "?done=maybe",
        "?limit=0",
        "?cursor=zz",
        "?owner_id=x",
        "?colour=red",
    ] {
        assert_problem(
            app.get(&format!("/v1/tasks{q}"), &ana_t).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
}

#[tokio::test]
async fn overdue_lists_per_rep_and_per_team() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let (_, boss) = app
        .create_user(json!({"name": "mia", "role": "manager", "team": "east"}))
        .await;
    let (_, ana_t) = app.rep("ana", Some("east")).await;
    let (_, ben_t) = app.rep("ben", Some("east")).await;
    let (_, cy_t) = app.rep("cy", Some("west")).await;

    for (token, title, due) in [
        (&ana_t, "ana +3h", Some(3 * HOUR)),
        (&ana_t, "ana +1h", Some(HOUR)),
        (&ana_t, "ana undated", None),
        (&ben_t, "ben +2h", Some(2 * HOUR)),
        (&cy_t, "cy +1h", Some(HOUR)),
    ] {
        create_task(
            &app,
            token,
            json!({"title": title, "due_at": due.map(|d| at(START + d))}),
        )
        .await;
    }
    create_task(
        &app,
        &ana_t,
        json!({"title": "ana done", "due_at": at(START + HOUR), "done": true}),
    )
    .await;

    // By due time, undated last; nothing overdue yet.
    let all = list(&app, &ana_t, "").await;
    assert_eq!(
        titles(&all),
        ["ana +1h", "ana done", "ana +3h", "ana undated"]
    );
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["overdue"] == false)
    );
    assert!(titles(&list(&app, &ana_t, "?overdue=true").await).is_empty());

    clock.advance(2 * HOUR + MIN);
    let overdue = list(&app, &ana_t, "?overdue=true").await;
    assert_eq!(titles(&overdue), ["ana +1h"]);
    assert_eq!(overdue["items"][0]["overdue"], true);
    assert_eq!(
        titles(&list(&app, &ana_t, "?done=true").await),
        ["ana done"]
    );
    assert_eq!(
        titles(&list(&app, &ana_t, "?done=false").await),
        ["ana +1h", "ana +3h", "ana undated"]
    );

    let team = list(&app, &boss, "?team=east&overdue=true").await;
    assert_eq!(titles(&team), ["ana +1h", "ben +2h"]);
    assert_eq!(
        titles(&list(&app, &app.admin, "?team=west&overdue=true").await),
        ["cy +1h"]
    );
    // Across owners too, ties broken by id (creation order).
    assert_eq!(
        titles(&list(&app, &app.admin, "?overdue=true").await),
        ["ana +1h", "cy +1h", "ben +2h"]
    );
    // The manager's team is theirs to see; another team's tasks are not.
    assert!(titles(&list(&app, &boss, "?team=west").await).is_empty());
    assert_problem(
        app.get("/v1/tasks?team=east", &ana_t).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // Pages of one follow the same order.
    let mut cursor: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let q = match &cursor {
            Some(c) => format!("?team=east&limit=1&cursor={c}"),
            None => "?team=east&limit=1".to_owned(),
        };
        let page = list(&app, &boss, &q).await;
        paged.extend(titles(&page).into_iter().map(str::to_owned));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        paged,
        ["ana +1h", "ana done", "ben +2h", "ana +3h", "ana undated"]
    );
}

/// Polls the caller's notifications until one of `kind` about `task` shows up.
async fn wait_for_task_note(app: &TestApp, token: &str, task: &str) -> Option<Value> {
    for _ in 0..100 {
        let notes = expect_json(app.get("/v1/notifications", token).await, StatusCode::OK).await;
        let found = notes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["kind"] == "task.due" && n["task_id"] == task)
            .cloned();
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn task_notes(app: &TestApp, token: &str) -> Vec<Value> {
    let notes = expect_json(app.get("/v1/notifications", token).await, StatusCode::OK).await;
    notes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["kind"] == "task.due")
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_reminder_comes_an_hour_before_and_not_for_done_tasks() {
    let clock = Arc::new(ManualClock::new(START));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let (_, token) = app.rep("ana", None).await;
    let due = at(START + 3 * HOUR);
    let open = create_task(&app, &token, json!({"title": "open", "due_at": due})).await;
    let done = create_task(&app, &token, json!({"title": "done", "due_at": due})).await;
    let moved = create_task(&app, &token, json!({"title": "moved", "due_at": due})).await;
    let deleted = create_task(&app, &token, json!({"title": "deleted", "due_at": due})).await;
    expect_json(
        app.patch(
            &format!("/v1/tasks/{}", done["id"].as_str().unwrap()),
            &token,
            &json!({"done": true}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_json(
        app.patch(
            &format!("/v1/tasks/{}", moved["id"].as_str().unwrap()),
            &token,
            &json!({"due_at": at(START + 10 * HOUR)}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let res = app
        .delete(
            &format!("/v1/tasks/{}", deleted["id"].as_str().unwrap()),
            &token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // An hour and a half before: nothing yet.
    clock.advance(HOUR + 30 * MIN);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(task_notes(&app, &token).await.is_empty());

    clock.advance(30 * MIN + MIN);
    let note = wait_for_task_note(&app, &token, open["id"].as_str().unwrap())
        .await
        .expect("a task.due notification within 5 s");
    assert_eq!(note["data"]["due_at"], due);
    // The done, moved and deleted tasks were due at the same time and left nothing.
    let notes = task_notes(&app, &token).await;
    assert_eq!(notes.len(), 1, "{notes:?}");

    // The moved one reminds an hour before its new time.
    clock.advance(7 * HOUR);
    wait_for_task_note(&app, &token, moved["id"].as_str().unwrap())
        .await
        .expect("the moved task's reminder");

    // Now START + 9 h 1 min: a task due within the hour reminds at once.
    let soon = create_task(
        &app,
        &token,
        json!({"title": "soon", "due_at": at(START + 9 * HOUR + 30 * MIN)}),
    )
    .await;
    wait_for_task_note(&app, &token, soon["id"].as_str().unwrap())
        .await
        .expect("an immediate reminder");
}

#[tokio::test]
async fn erasing_a_lead_erases_its_tasks_and_their_owners_feed_says_so() {
    let app = spawn_app().await;
    let (_, rep) = app.rep("r", None).await;
    let lead = app.create_lead(&rep, json!({"name": "Gone"})).await;
    let lead_id = lead["id"].as_str().unwrap();
    let task = create_task(&app, &rep, json!({"title": "call", "lead_id": lead_id})).await;
    let task_id = task["id"].as_str().unwrap();
    let res = app.delete(&format!("/v1/leads/{lead_id}"), &rep).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.get(&format!("/v1/tasks/{task_id}"), &rep).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let feed = expect_json(app.get("/v1/changes?since=0", &rep).await, StatusCode::OK).await;
    assert!(
        feed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["entity"] == "task" && c["id"] == task_id && c["op"] == "delete"),
        "{feed}"
    );
}
