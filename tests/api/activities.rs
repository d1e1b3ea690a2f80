//! Activities: recording them by lead id or by email, listing them a page at a time, the
//! timeline they make up with system events, and what they do to the lead.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("json body")
}

/// Posts an activity, asserting 201; returns its JSON.
async fn record(app: &TestApp, token: &str, path: &str, activity: Value) -> Value {
    let res = app.post(path, token, &activity).await;
    let status = res.status();
    let json = body(res).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    json
}

async fn lead(app: &TestApp, token: &str, id: &str) -> Value {
    let res = app.get(&format!("/v1/leads/{id}"), token).await;
    assert_eq!(res.status(), StatusCode::OK);
    body(res).await
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[tokio::test]
async fn activity_by_lead_id_attaches_to_that_lead() {
    let app = spawn_app().await;
    let (rep_id, rep) = app.rep("r", None).await;
    let l = app.create_lead(&rep, json!({"email": "a@acme.com"})).await;
    let id = str_of(&l, "id");

    let res = app
        .post(
            "/v1/activities",
            &rep,
            &json!({"lead_id": id, "kind": " Page_View ", "occurred_at": "2026-03-01T10:00:00+08:00",
                "text": "看了定价\n然后离开", "properties": {"url": "https://acme.com/pricing", "path": "/pricing"}}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        format!("/v1/leads/{id}/activities")
    );
    let a = body(res).await;
    assert_eq!(a["lead_id"], id);
    assert_eq!(a["lead_created"], false);
    assert_eq!(a["kind"], "page_view");
    assert_eq!(a["occurred_at"], "2026-03-01T02:00:00.000Z");
    assert_eq!(a["actor_id"], rep_id.as_str());
    assert_eq!(a["text"], "看了定价\n然后离开");
    assert_eq!(a["properties"]["path"], "/pricing");

    // the body may name the path's lead again, not another one
    let other = app.create_lead(&rep, json!({"email": "b@acme.com"})).await;
    let res = app
        .post(
            &format!("/v1/leads/{id}/activities"),
            &rep,
            &json!({"lead_id": other["id"], "kind": "note"}),
        )
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    let b = record(
        &app,
        &rep,
        &format!("/v1/leads/{id}/activities"),
        json!({"lead_id": id, "kind": "custom.kind_2"}),
    )
    .await;
    assert_eq!(b["lead_id"], id);
    assert_eq!(b["kind"], "custom.kind_2");

    let list = body(app.get(&format!("/v1/leads/{id}/activities"), &rep).await).await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| str_of(i, "id"))
        .collect();
    // newest first: b (now), the lead's capture (now, earlier), a (in March)
    assert_eq!(ids.len(), 3);
    assert_eq!([ids[0], ids[2]], [str_of(&b, "id"), str_of(&a, "id")]);
    assert_eq!(list["items"][1]["kind"], "capture");
    assert_eq!(list["next_cursor"], Value::Null);
    let empty = body(
        app.get(
            &format!("/v1/leads/{}/activities", str_of(&other, "id")),
            &rep,
        )
        .await,
    )
    .await;
    // the other lead holds only its own capture
    assert_eq!(empty["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(empty["items"][0]["kind"], "capture");
}

#[tokio::test]
async fn activity_by_email_creates_the_lead_once_then_attaches() {
    let app = spawn_app().await;
    let (rep_id, rep) = app.rep("r", None).await;
    let first = record(
        &app,
        &rep,
        "/v1/activities",
        json!({"email": " New.Person@Acme.com ", "kind": "form_submit"}),
    )
    .await;
    assert_eq!(first["lead_created"], true);
    let id = str_of(&first, "lead_id").to_owned();
    let l = lead(&app, &rep, &id).await;
    assert_eq!(l["email"], "new.person@acme.com");
    assert_eq!(l["flags"]["personal_email"], false);
    assert_eq!(l["owner_id"], rep_id.as_str(), "a rep's new lead is theirs");
    assert_eq!(l["last_activity_at"], first["occurred_at"]);

    let second = record(
        &app,
        &rep,
        "/v1/activities",
        json!({"email": "new.person@acme.com", "kind": "email_open"}),
    )
    .await;
    assert_eq!(second["lead_created"], false);
    assert_eq!(second["lead_id"], id.as_str());
    let leads = body(app.get("/v1/leads", &app.admin).await).await;
    assert_eq!(leads["items"].as_array().unwrap().len(), 1);

    // an existing lead found by email attaches too
    let known = app
        .create_lead(&app.admin, json!({"email": "known@acme.com"}))
        .await;
    let third = record(
        &app,
        &app.admin,
        "/v1/activities",
        json!({"email": "KNOWN@acme.com", "kind": "chat"}),
    )
    .await;
    assert_eq!(third["lead_created"], false);
    assert_eq!(third["lead_id"], known["id"]);
    let tl = body(app.get(&format!("/v1/leads/{id}/timeline"), &rep).await).await;
    let kinds: Vec<&str> = tl["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| str_of(i, "kind"))
        .collect();
    // the lead made for the first activity became the rep's in the same write
    assert_eq!(
        kinds,
        vec!["email_open", "assigned", "form_submit", "created"]
    );
    assert_fields(
        &tl["items"][1],
        json!({"data.owner_id": rep_id, "data.from": null, "data.how": "create"}),
    );
}

#[tokio::test]
async fn activities_list_newest_first_a_page_at_a_time() {
    let app = spawn_app().await;
    let l = app
        .create_lead(&app.admin, json!({"email": "p@acme.com"}))
        .await;
    let id = str_of(&l, "id");
    let path = format!("/v1/leads/{id}/activities");
    // the capture itself is the lead's first activity, recorded now (newer than the notes)
    let first = body(app.get(&path, &app.admin).await).await;
    assert_eq!(first["items"][0]["kind"], "capture");
    assert_eq!(
        first["items"][0]["properties"]["raw"]["email"],
        "p@acme.com"
    );
    let capture_id = str_of(&first["items"][0], "id").to_owned();
    // recorded out of order; two share a timestamp (the id breaks the tie)
    let times = [
        "2026-01-03T00:00:00Z",
        "2026-01-01T00:00:00Z",
        "2026-01-05T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-04T00:00:00Z",
        "2025-12-31T23:59:59.999Z",
    ];
    let mut made = Vec::new();
    for (i, t) in times.iter().enumerate() {
        let a = record(
            &app,
            &app.admin,
            &path,
            json!({"kind": "note", "text": format!("n{i}"), "occurred_at": t}),
        )
        .await;
        made.push((
            str_of(&a, "occurred_at").to_owned(),
            str_of(&a, "id").to_owned(),
        ));
    }
    made.sort();
    made.reverse();
    let want: Vec<String> = std::iter::once(capture_id)
        .chain(made.into_iter().map(|(_, id)| id))
        .collect();

    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=3&cursor={c}"),
            None => format!("{path}?limit=3"),
        };
        let res = app.get(&url, &app.admin).await;
        assert_eq!(res.status(), StatusCode::OK);
        let page = body(res).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        got.extend(items.iter().map(|i| str_of(i, "id").to_owned()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(got, want);
    // a page that ends exactly at the end has no cursor
    let res = app.get(&format!("{path}?limit=8"), &app.admin).await;
    let all = body(res).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 8);
    assert_eq!(all["next_cursor"], Value::Null);

    // last_activity_at is the newest occurrence, not the last recorded
    assert_eq!(
        lead(&app, &app.admin, id).await["last_activity_at"],
        "2026-01-05T00:00:00.000Z"
    );

    for bad in [
        "limit=0",
        "limit=501",
        "limit=x",
        "cursor=garbage",
        "sort=asc",
    ] {
        let res = app.get(&format!("{path}?{bad}"), &app.admin).await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

#[tokio::test]
async fn timeline_mixes_activities_and_events_newest_first() {
    let app = spawn_app().await;
    let (rep_id, rep) = app.rep("r", None).await;
    let l = app
        .create_lead(&rep, json!({"email": "t@acme.com", "name": "T"}))
        .await;
    let id = str_of(&l, "id");
    record(
        &app,
        &rep,
        &format!("/v1/leads/{id}/activities"),
        json!({"kind": "page_view", "properties": {"url": "https://acme.com/"}}),
    )
    .await;
    let res = app
        .patch(
            &format!("/v1/leads/{id}"),
            &rep,
            &json!({"title": "CTO", "stage": "mql"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .post(
            "/v1/leads",
            &rep,
            &json!({"email": "T@acme.com", "company": "Acme"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["merged"], true);
    record(
        &app,
        &rep,
        "/v1/activities",
        json!({"email": "t@acme.com", "kind": "note", "text": "last"}),
    )
    .await;

    let res = app.get(&format!("/v1/leads/{id}/timeline"), &rep).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tl = body(res).await;
    let items = tl["items"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = items
        .iter()
        .map(|i| (str_of(i, "type"), str_of(i, "kind")))
        .collect();
    let updated_pos = seen
        .iter()
        .position(|k| *k == ("event", "updated"))
        .expect("updated");
    let stage_pos = seen
        .iter()
        .position(|k| *k == ("event", "stage_changed"))
        .expect("stage_changed");
    assert_eq!(seen[0], ("activity", "note"));
    // the duplicate capture lands on the lead as an activity, beside the merge it caused
    assert_eq!(seen[1], ("activity", "capture"));
    assert_eq!(seen[2], ("event", "merged"));
    assert_eq!(
        {
            let mut p = [updated_pos, stage_pos];
            p.sort();
            p
        },
        [3, 4]
    );
    // the new title scored in the same write, before the update was recorded
    assert_eq!(seen[5], ("event", "scored"));
    assert_eq!(seen[6], ("activity", "page_view"));
    // the capture made the rep the owner in the same write, right after the lead and its capture
    assert_eq!(seen[7], ("event", "assigned"));
    assert_eq!(seen[8], ("activity", "capture"));
    assert_eq!(seen[9], ("event", "created"));
    assert_eq!(seen.len(), 10);
    let ats: Vec<&str> = items.iter().map(|i| str_of(i, "at")).collect();
    let mut sorted = ats.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ats, sorted, "newest first");
    assert_eq!(items[2]["data"]["reason"], "email");
    assert_eq!(items[2]["data"]["filled"], json!(["company"]));
    assert_eq!(items[7]["data"]["owner_id"], rep_id.as_str());
    assert_eq!(items[7]["data"]["how"], "create");
    assert_eq!(items[7]["at"], l["created_at"]);
    assert_eq!(items[9]["id"], id);
    assert_eq!(items[9]["at"], l["created_at"]);
    assert_eq!(items[0]["text"], "last");

    // pages of two, joined, are the whole timeline
    let mut joined = Vec::new();
    let mut url = format!("/v1/leads/{id}/timeline?limit=2");
    loop {
        let page = body(app.get(&url, &rep).await).await;
        joined.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("/v1/leads/{id}/timeline?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(&joined, items);
}

/// The `touched` events on a lead's timeline, newest first.
async fn touches(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let res = app.get(&format!("/v1/leads/{id}/timeline"), token).await;
    assert_eq!(res.status(), StatusCode::OK);
    body(res).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "touched")
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_call_by_the_owner_is_the_first_touch() {
    let app = spawn_app().await;
    let (rep_id, rep) = app.rep("r", None).await;
    let l = app.create_lead(&rep, json!({"email": "c@acme.com"})).await;
    let id = str_of(&l, "id");
    assert_eq!(l["first_touch_at"], Value::Null);
    assert_eq!(l["last_activity_at"], Value::Null);
    assert_eq!(l["status"], "new");
    let path = format!("/v1/leads/{id}/activities");

    // not a touch: someone else's call, or the owner's note
    record(
        &app,
        &app.admin,
        &path,
        json!({"kind": "call", "occurred_at": "2026-02-01T09:00:00Z"}),
    )
    .await;
    record(
        &app,
        &rep,
        &path,
        json!({"kind": "note", "occurred_at": "2026-02-01T09:30:00Z"}),
    )
    .await;
    let now = lead(&app, &rep, id).await;
    assert_eq!(now["first_touch_at"], Value::Null);
    assert_eq!(now["status"], "new");
    assert_eq!(now["last_activity_at"], "2026-02-01T09:30:00.000Z");
    assert_eq!(now["version"], 3);
    assert!(touches(&app, &rep, id).await.is_empty());

    // The owner's call is the first touch, timed by the server when it is recorded (a
    // back-dated occurred_at does not make the lead look worked earlier than it was).
    record(
        &app,
        &rep,
        &path,
        json!({"kind": "call", "occurred_at": "2026-02-01T10:00:00Z"}),
    )
    .await;
    let now = lead(&app, &rep, id).await;
    let first = now["first_touch_at"].clone();
    assert!(first.is_string(), "{now}");
    assert_eq!(
        first, now["updated_at"],
        "set by the write that recorded the call"
    );
    assert!(first.as_str() >= l["created_at"].as_str());
    assert_eq!(now["status"], "attempting");
    assert_eq!(now["last_activity_at"], "2026-02-01T10:00:00.000Z");
    let t = touches(&app, &rep, id).await;
    assert_eq!(t.len(), 1);
    assert_fields(
        &t[0],
        json!({"actor_id": rep_id, "at": first, "data.kind": "call", "data.first": true}),
    );
    let sla = body(app.get(&format!("/v1/leads/{id}/sla"), &rep).await).await;
    assert_eq!(sla["first_touch_at"], first);

    // a later meeting is a follow-up, not the first touch
    record(
        &app,
        &rep,
        &path,
        json!({"kind": "meeting", "occurred_at": "2026-02-02T10:00:00Z"}),
    )
    .await;
    let now = lead(&app, &rep, id).await;
    assert_eq!(now["first_touch_at"], first);
    assert_eq!(now["status"], "attempting");
    assert_eq!(now["last_activity_at"], "2026-02-02T10:00:00.000Z");
    let t = touches(&app, &rep, id).await;
    assert_eq!(t.len(), 2);
    assert_fields(&t[0], json!({"data.kind": "meeting", "data.first": false}));
    // an older activity does not move last_activity_at back
    record(
        &app,
        &rep,
        &path,
        json!({"kind": "note", "occurred_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(
        lead(&app, &rep, id).await["last_activity_at"],
        "2026-02-02T10:00:00.000Z"
    );
}

#[tokio::test]
async fn invalid_activities_are_422_naming_the_field() {
    let app = spawn_app().await;
    let l = app
        .create_lead(&app.admin, json!({"email": "v@acme.com"}))
        .await;
    let id = str_of(&l, "id");
    let cases = [
        (json!({"lead_id": id, "kind": "page view!"}), "kind"),
        (json!({"lead_id": id, "kind": ""}), "kind"),
        (json!({"lead_id": id, "kind": "x".repeat(41)}), "kind"),
        (json!({"lead_id": id}), "kind"),
        (json!({"kind": "note"}), "lead_id"),
        (
            json!({"lead_id": id, "kind": "note", "occurred_at": "yesterday"}),
            "occurred_at",
        ),
        (
            json!({"lead_id": id, "kind": "note", "occurred_at": "2026-13-01T00:00:00Z"}),
            "occurred_at",
        ),
        (json!({"email": "not an email", "kind": "note"}), "email"),
        // The lead named twice is refused, not half read.
        (
            json!({"lead_id": id, "email": "zz@q.com", "kind": "note"}),
            "email",
        ),
        (json!({"lead_id": "nope", "kind": "note"}), "lead_id"),
        (json!({"lead_id": id, "kind": "note", "extra": 1}), "extra"),
        (
            json!({"lead_id": id, "kind": "note", "properties": [1]}),
            "properties",
        ),
        (
            json!({"lead_id": id, "kind": "note", "properties": {"blob": "x".repeat(17 * 1024)}}),
            "properties",
        ),
    ];
    for (input, field) in cases {
        let res = app.post("/v1/activities", &app.admin, &input).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(first_field(&problem), field, "{input} → {problem}");
    }
    for (input, field) in [
        (json!({"kind": "bad kind"}), "kind"),
        (json!({"kind": "note", "email": "v@acme.com"}), "email"),
    ] {
        let res = app
            .post(&format!("/v1/leads/{id}/activities"), &app.admin, &input)
            .await;
        assert_eq!(
            first_field(&assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await),
            field,
            "{input}"
        );
    }
    let list = body(
        app.get(&format!("/v1/leads/{id}/activities"), &app.admin)
            .await,
    )
    .await;
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| str_of(i, "kind"))
        .collect();
    assert_eq!(
        kinds,
        vec!["capture"],
        "nothing recorded besides the capture"
    );
    let leads = body(app.get("/v1/leads", &app.admin).await).await;
    assert_eq!(leads["items"].as_array().unwrap().len(), 1, "no lead made");
}

#[tokio::test]
async fn unknown_leads_are_404() {
    let app = spawn_app().await;
    let ghost = "01900000-0000-7000-8000-000000000000";
    let res = app
        .post(
            "/v1/activities",
            &app.admin,
            &json!({"lead_id": ghost, "kind": "note"}),
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
    for lead in [ghost, "not-a-uuid"] {
        let res = app
            .post(
                &format!("/v1/leads/{lead}/activities"),
                &app.admin,
                &json!({"kind": "note"}),
            )
            .await;
        assert_problem(res, StatusCode::NOT_FOUND).await;
        for tail in ["activities", "timeline"] {
            let res = app
                .get(&format!("/v1/leads/{lead}/{tail}"), &app.admin)
                .await;
            assert_problem(res, StatusCode::NOT_FOUND).await;
        }
    }
    // an erased lead's activities go with it
    let l = app
        .create_lead(&app.admin, json!({"email": "gone@acme.com"}))
        .await;
    let id = str_of(&l, "id");
    record(
        &app,
        &app.admin,
        &format!("/v1/leads/{id}/activities"),
        json!({"kind": "note"}),
    )
    .await;
    assert_eq!(
        app.delete(&format!("/v1/leads/{id}"), &app.admin)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let res = app
        .get(&format!("/v1/leads/{id}/activities"), &app.admin)
        .await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
    // recording by email afterwards starts a fresh lead
    let again = record(
        &app,
        &app.admin,
        "/v1/activities",
        json!({"email": "gone@acme.com", "kind": "note"}),
    )
    .await;
    assert_eq!(again["lead_created"], true);
    assert_ne!(again["lead_id"], id);
}

#[tokio::test]
async fn idempotency_key_makes_activity_retries_safe() {
    let app = spawn_app().await;
    let (_, rep) = app.rep("r", None).await;
    let send = |path: &str, key: &str, body: Value| {
        app.req(reqwest::Method::POST, path, &rep)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let input = json!({"email": "idem@acme.com", "kind": "demo_request"});
    let res = send("/v1/activities", "k1", input.clone()).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(res.headers().get("idempotent-replayed").is_none());
    let first = body(res).await;
    assert_eq!(first["lead_created"], true);

    let res = send("/v1/activities", "k1", input.clone()).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    let lead_id = str_of(&first, "lead_id").to_owned();
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        format!("/v1/leads/{lead_id}/activities")
    );
    let replay = body(res).await;
    assert_eq!(replay, first, "the first answer, lead_created and all");

    let res = send(
        "/v1/activities",
        "k1",
        json!({"email": "idem@acme.com", "kind": "call"}),
    )
    .await
    .unwrap();
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&problem), "Idempotency-Key");

    // per-lead route: a key is tied to its path too
    let path = format!("/v1/leads/{lead_id}/activities");
    let note = json!({"kind": "note", "text": "once"});
    let a = send(&path, "k2", note.clone()).await.unwrap();
    assert_eq!(a.status(), StatusCode::CREATED);
    let a = body(a).await;
    let b = send(&path, "k2", note.clone()).await.unwrap();
    assert_eq!(b.status(), StatusCode::CREATED);
    assert_eq!(body(b).await["id"], a["id"]);
    // the same key with another caller is another request
    let other = app
        .req(reqwest::Method::POST, &path, &app.admin)
        .header("idempotency-key", "k2")
        .json(&note)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
    assert!(other.headers().get("idempotent-replayed").is_none());
    assert_ne!(body(other).await["id"], a["id"]);

    let list = body(app.get(&path, &rep).await).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    let leads = body(app.get("/v1/leads", &app.admin).await).await;
    assert_eq!(leads["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_lead_created_by_an_activity_is_flagged_like_any_capture() {
    let app = spawn_app().await;
    let a = record(
        &app,
        &app.admin,
        "/v1/activities",
        json!({"email": "someone@QQ.com", "kind": "page_view"}),
    )
    .await;
    assert_eq!(a["lead_created"], true);
    let l = lead(&app, &app.admin, str_of(&a, "lead_id")).await;
    assert_eq!(l["flags"]["personal_email"], true);
}

#[tokio::test]
async fn an_activity_dated_far_in_the_future_is_refused() {
    let app = spawn_app().await;
    let id = app
        .create_lead(&app.admin, json!({"email": "f@acme.com"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/leads/{id}/activities");
    let res = app
        .post(
            &path,
            &app.admin,
            &json!({"kind": "note", "occurred_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_invalid(res, "occurred_at").await;
    assert_eq!(
        lead(&app, &app.admin, &id).await["last_activity_at"],
        Value::Null
    );
    // Within a day ahead (clock skew) is fine.
    let soon = chrono::Utc::now() + chrono::Duration::hours(2);
    record(
        &app,
        &app.admin,
        &path,
        json!({"kind": "note", "occurred_at": soon.to_rfc3339()}),
    )
    .await;
}
