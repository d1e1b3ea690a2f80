//! The role matrix over HTTP: admins see everything, managers their team's leads, reps their
//! own and pooled ones; a lead a caller may not see is a 404 everywhere, never a 403.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("json body")
}

/// The `id`s of a list response's items.
fn item_ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Lead ids listed as `token` sees them (with an optional query string).
async fn listed(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    let res = app.get(&format!("/v1/leads{query}"), token).await;
    assert_eq!(res.status(), StatusCode::OK);
    item_ids(&body(res).await)
}

/// Every id in `token`'s change feed from the start.
async fn change_ids(app: &TestApp, token: &str) -> Vec<String> {
    let res = app.get("/v1/changes?since=0&limit=500", token).await;
    assert_eq!(res.status(), StatusCode::OK);
    item_ids(&body(res).await)
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_rep_cannot_reach_another_reps_lead_anywhere() {
    let app = spawn_app().await;
    let (a_id, a) = app.rep("alice", None).await;
    let (b_id, b) = app.rep("bob", None).await;
    let lead_a = app
        .create_lead(&a, json!({"name": "甲", "email": "jia@acme.cn"}))
        .await;
    let la = id_of(&lead_a);
    assert_eq!(lead_a["owner_id"], a_id.as_str());
    let res = app
        .post(
            &format!("/v1/leads/{la}/activities"),
            &a,
            &json!({"kind": "note", "text": "first"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let act_a = id_of(&body(res).await);
    let lead_b = app.create_lead(&b, json!({"email": "yi@acme.cn"})).await;
    let lb = id_of(&lead_b);
    assert_eq!(lead_b["owner_id"], b_id.as_str());

    // Bob: every route says "no such lead".
    let path = format!("/v1/leads/{la}");
    let attempts = [
        (Method::GET, path.clone(), None),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"title": "hacked"})),
        ),
        (Method::PATCH, path.clone(), Some(json!({"owner_id": b_id}))),
        (Method::DELETE, path.clone(), None),
        (Method::GET, format!("{path}/export"), None),
        (Method::GET, format!("{path}/activities"), None),
        (
            Method::POST,
            format!("{path}/activities"),
            Some(json!({"kind": "note", "text": "sneaky"})),
        ),
        (
            Method::POST,
            "/v1/activities".to_owned(),
            Some(json!({"lead_id": la, "kind": "call"})),
        ),
        (
            Method::POST,
            "/v1/activities".to_owned(),
            Some(json!({"email": "JIA@acme.cn", "kind": "call"})),
        ),
        (Method::GET, format!("{path}/timeline"), None),
    ];
    for (method, url, payload) in attempts {
        let res = match (&method, payload) {
            (&Method::PATCH, Some(p)) => app.patch(&url, &b, &p).await,
            (_, Some(p)) => app
                .req(method.clone(), &url, &b)
                .json(&p)
                .send()
                .await
                .unwrap(),
            (_, None) => app.req(method.clone(), &url, &b).send().await.unwrap(),
        };
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{method} {url}");
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
    assert_eq!(listed(&app, &b, "").await, vec![lb.clone()]);
    assert!(
        listed(&app, &b, &format!("?owner_id={a_id}"))
            .await
            .is_empty()
    );
    assert!(listed(&app, &b, "?owner_id=none").await.is_empty());
    let feed = change_ids(&app, &b).await;
    assert!(feed.contains(&lb), "{feed:?}");
    assert!(!feed.contains(&la), "bob's feed shows alice's lead");
    assert!(!feed.contains(&act_a), "bob's feed shows alice's activity");

    // Nothing Bob tried changed Alice's lead.
    let res = app.get(&path, &a).await;
    assert_eq!(res.status(), StatusCode::OK);
    let now = body(res).await;
    assert_eq!(now["version"], lead_a["version"].as_u64().unwrap() + 1); // her own note
    assert_eq!(now["title"], Value::Null);
    assert_eq!(now["owner_id"], a_id.as_str());
    assert_eq!(now["first_touch_at"], Value::Null);
    let acts = body(app.get(&format!("{path}/activities"), &a).await).await;
    assert_eq!(item_ids(&acts)[0], act_a);
    assert_eq!(acts["items"][1]["kind"], "capture");
    assert_eq!(acts["items"].as_array().map(Vec::len), Some(2));

    // Alice can do all of it.
    assert_eq!(listed(&app, &a, "").await, vec![la.clone()]);
    assert_eq!(
        listed(&app, &a, &format!("?owner_id={a_id}")).await,
        vec![la.clone()]
    );
    assert!(
        listed(&app, &a, &format!("?owner_id={b_id}"))
            .await
            .is_empty()
    );
    let res = app.patch(&path, &a, &json!({"title": "CTO"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["title"], "CTO");
    let res = app.get(&format!("{path}/export"), &a).await;
    assert_eq!(res.status(), StatusCode::OK);
    let export = body(res).await;
    assert_eq!(export["lead"]["id"], la.as_str());
    let exported: Vec<&str> = export["activities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(exported.contains(&act_a.as_str()), "{exported:?}");
    let res = app
        .post(
            "/v1/activities",
            &a,
            &json!({"email": "JIA@acme.cn", "kind": "call"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let call = body(res).await;
    assert_eq!(call["lead_id"], la.as_str());
    assert_eq!(call["lead_created"], false);
    let res = app.get(&format!("{path}/timeline"), &a).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!body(res).await["items"].as_array().unwrap().is_empty());
    let feed = change_ids(&app, &a).await;
    assert!(feed.contains(&la) && feed.contains(&act_a), "{feed:?}");
    assert!(!feed.contains(&lb), "alice's feed shows bob's lead");
    assert_eq!(app.delete(&path, &a).await.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get(&path, &a).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_reps_lead_is_theirs_and_they_cannot_hand_it_to_anyone() {
    let app = spawn_app().await;
    let (a_id, a) = app.rep("alice", None).await;
    let (b_id, _) = app.rep("bob", None).await;

    let lead = app.create_lead(&a, json!({"email": "one@acme.com"})).await;
    assert_eq!(lead["owner_id"], a_id.as_str());
    let mine = app
        .create_lead(&a, json!({"email": "two@acme.com", "owner_id": a_id}))
        .await;
    assert_eq!(mine["owner_id"], a_id.as_str());

    let res = app
        .post(
            "/v1/leads",
            &a,
            &json!({"email": "three@acme.com", "owner_id": b_id}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let all = body(app.get("/v1/leads", &app.admin).await).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "nothing created");

    let path = format!("/v1/leads/{}", id_of(&lead));
    for patch in [
        json!({"owner_id": b_id}),
        json!({"owner_id": null}),
        json!({"pool_id": "01900000-0000-7000-8000-000000000000"}),
    ] {
        let res = app.patch(&path, &a, &patch).await;
        assert_problem(res, StatusCode::FORBIDDEN).await;
    }
    let now = body(app.get(&path, &a).await).await;
    assert_eq!(now["owner_id"], a_id.as_str());
    assert_eq!(now["version"], 1);
    assert_eq!(now["pool_id"], Value::Null);
}

/// The id of the pool every lead nobody can take lands in.
async fn default_pool(app: &TestApp) -> String {
    let pools = body(app.get("/v1/pools", &app.admin).await).await;
    let pool = pools["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["name"] == "default")
        .expect("the default pool always exists");
    id_of(pool)
}

#[tokio::test]
async fn a_rep_sees_pooled_leads_but_not_another_reps() {
    let app = spawn_app().await;
    let default = default_pool(&app).await;
    // Nobody can take a lead yet: it waits in the default pool.
    let waiting = app
        .create_lead(&app.admin, json!({"email": "w@acme.com"}))
        .await;
    assert_eq!(waiting["owner_id"], Value::Null);
    assert_eq!(waiting["pool_id"], default.as_str());
    let (_, rep) = app.rep("alice", None).await;
    let (b_id, b) = app.rep("bob", None).await;
    let res = app
        .post("/v1/pools", &app.admin, &json!({"name": "expo"}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let expo = id_of(&body(res).await);
    // A lead put in a pool on purpose stays there, unowned, though reps are available.
    let pooled = app
        .create_lead(&app.admin, json!({"email": "p@acme.com", "pool_id": expo}))
        .await;
    assert_eq!(pooled["owner_id"], Value::Null);
    assert_eq!(pooled["pool_id"], expo.as_str());
    // Bob's leads: one he captured, one the admin gave him.
    let bobs = app.create_lead(&b, json!({"email": "b@acme.com"})).await;
    let given = app
        .create_lead(&app.admin, json!({"email": "g@acme.com", "owner_id": b_id}))
        .await;
    for l in [&bobs, &given] {
        assert_eq!(l["owner_id"], b_id.as_str());
        assert_eq!(l["pool_id"], Value::Null);
    }

    let (w, p) = (id_of(&waiting), id_of(&pooled));
    for id in [&w, &p] {
        let res = app.get(&format!("/v1/leads/{id}"), &rep).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    for l in [&bobs, &given] {
        let path = format!("/v1/leads/{}", id_of(l));
        assert_problem(app.get(&path, &rep).await, StatusCode::NOT_FOUND).await;
        assert_eq!(app.get(&path, &b).await.status(), StatusCode::OK);
    }
    let mut pooled_ids = vec![w.clone(), p.clone()];
    pooled_ids.sort();
    let mut seen = listed(&app, &rep, "").await;
    seen.sort();
    assert_eq!(seen, pooled_ids);
    let mut unowned = listed(&app, &rep, "?owner_id=none").await;
    unowned.sort();
    assert_eq!(unowned, pooled_ids);
    assert!(
        listed(&app, &rep, &format!("?owner_id={b_id}"))
            .await
            .is_empty()
    );
    assert_eq!(
        listed(&app, &rep, &format!("?pool_id={expo}")).await,
        vec![p.clone()]
    );
    let in_default = body(app.get(&format!("/v1/pools/{default}/leads"), &rep).await).await;
    assert_eq!(item_ids(&in_default), vec![w.clone()]);
    let feed = change_ids(&app, &rep).await;
    // The lead routing sent to the pool shows in the feed as well as the one put there.
    assert!(feed.contains(&p), "{feed:?}");
    assert!(feed.contains(&w), "{feed:?}");
    for l in [&bobs, &given] {
        assert!(!feed.contains(&id_of(l)), "{feed:?}");
    }

    // A pooled lead is there to claim, not to edit or erase.
    let path = format!("/v1/leads/{w}");
    let res = app
        .patch(&path, &rep, &json!({"company": "Mine now"}))
        .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    assert_problem(app.delete(&path, &rep).await, StatusCode::FORBIDDEN).await;
    let res = app
        .post(
            &format!("/v1/leads/{w}/merge"),
            &rep,
            &json!({"other_id": p}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let still = body(app.get(&path, &rep).await).await;
    assert_eq!(still["version"], waiting["version"]);
    let res = app
        .post(&format!("/v1/leads/{w}/claim"), &rep, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .patch(&path, &rep, &json!({"company": "Mine now"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_routed_leads_create_is_in_the_feed_of_the_rep_it_went_to() {
    let app = spawn_app().await;
    let (a_id, a) = app.rep("alice", None).await;
    let lead = app
        .create_lead(&app.admin, json!({"email": "routed@acme.com"}))
        .await;
    assert_eq!(lead["owner_id"], a_id.as_str(), "routed to the only rep");
    let id = id_of(&lead);
    let res = app.get("/v1/changes?since=0&limit=500", &a).await;
    let feed = body(res).await;
    let rows: Vec<(&str, &str)> = feed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|c| c["id"] == id.as_str() || c["lead_id"] == id.as_str())
        .map(|c| (c["entity"].as_str().unwrap(), c["op"].as_str().unwrap()))
        .collect();
    assert!(rows.contains(&("lead", "create")), "{rows:?}");
    assert!(rows.contains(&("activity", "create")), "{rows:?}");

    // The same through an activity that makes its lead.
    let res = app
        .post(
            "/v1/activities",
            &app.admin,
            &json!({"email": "by-activity@acme.com", "kind": "note", "text": "hi"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let made = body(res).await;
    let lead_id = made["lead_id"].as_str().expect("lead_id").to_owned();
    let lead = body(app.get(&format!("/v1/leads/{lead_id}"), &a).await).await;
    assert_eq!(lead["owner_id"], a_id.as_str());
    assert!(change_ids(&app, &a).await.contains(&lead_id));
}

#[tokio::test]
async fn a_lead_cannot_be_created_in_a_pool_that_does_not_exist() {
    let app = spawn_app().await;
    let ghost = "01900000-0000-7000-8000-000000000000";
    let res = app
        .post(
            "/v1/leads",
            &app.admin,
            &json!({"name": "Ghost", "pool_id": ghost}),
        )
        .await;
    assert_invalid(res, "pool_id").await;
    let res = app
        .post(
            "/v1/leads/batch",
            &app.admin,
            &json!({"leads": [{"name": "Ghost", "pool_id": ghost}]}),
        )
        .await;
    let batch = body(res).await;
    assert_eq!(batch["items"][0]["status"], 422, "{batch}");
    assert!(listed(&app, &app.admin, "").await.is_empty());
}

#[tokio::test]
async fn a_lead_is_given_an_owner_or_a_pool_not_both() {
    let app = spawn_app().await;
    let pool = expect_json(
        app.post("/v1/pools", &app.admin, &json!({"name": "Expo"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let pid = pool["id"].as_str().unwrap();
    let (rep_id, _) = app.rep("both", None).await;
    let both = json!({"name": "Both", "owner_id": rep_id, "pool_id": pid});
    let res = app.post("/v1/leads", &app.admin, &both).await;
    assert_invalid(res, "pool_id").await;
    assert!(listed(&app, &app.admin, "").await.is_empty());
    let lead = app
        .create_lead(&app.admin, json!({"name": "One", "pool_id": pid}))
        .await;
    let id = lead["id"].as_str().unwrap();
    let res = app
        .patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"owner_id": rep_id, "pool_id": pid}),
        )
        .await;
    assert_invalid(res, "pool_id").await;
    // Naming the owner alone takes the lead out of its pool.
    let moved = expect_json(
        app.patch(
            &format!("/v1/leads/{id}"),
            &app.admin,
            &json!({"owner_id": rep_id}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(moved["owner_id"], rep_id);
    assert_eq!(moved["pool_id"], Value::Null);
    // A duplicate naming a pool does not put an owned lead in it as well.
    let owned = app
        .create_lead(
            &app.admin,
            json!({"email": "o@acme.com", "owner_id": rep_id}),
        )
        .await;
    let again = expect_json(
        app.post(
            "/v1/leads",
            &app.admin,
            &json!({"email": "o@acme.com", "pool_id": pid}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(again["merged"], true);
    assert_eq!(again["id"], owned["id"]);
    assert_eq!(again["owner_id"], rep_id);
    assert_eq!(again["pool_id"], Value::Null);
}

#[tokio::test]
async fn a_manager_sees_and_reassigns_within_the_team_only() {
    let app = spawn_app().await;
    let (m_id, m) = app
        .create_user(json!({"name": "boss", "role": "manager", "team": "east"}))
        .await;
    let (e1_id, e1) = app.rep("east1", Some("east")).await;
    let (e2_id, e2) = app
        .create_user(json!({"name": "direct", "role": "rep", "manager_id": m_id}))
        .await;
    let (w_id, w) = app.rep("west1", Some("west")).await;
    let l1 = id_of(&app.create_lead(&e1, json!({"email": "e1@acme.com"})).await);
    let l2 = id_of(&app.create_lead(&e2, json!({"email": "e2@acme.com"})).await);
    let lw = id_of(&app.create_lead(&w, json!({"email": "w@acme.com"})).await);
    let lm = id_of(&app.create_lead(&m, json!({"email": "m@acme.com"})).await);

    let mut seen = listed(&app, &m, "").await;
    seen.sort();
    let mut want = vec![l1.clone(), l2.clone(), lm.clone()];
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(
        listed(&app, &m, &format!("?owner_id={e2_id}")).await,
        vec![l2.clone()]
    );
    assert!(
        listed(&app, &m, &format!("?owner_id={w_id}"))
            .await
            .is_empty()
    );
    for id in [&l1, &l2, &lm] {
        let res = app.get(&format!("/v1/leads/{id}"), &m).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let west = format!("/v1/leads/{lw}");
    assert_problem(app.get(&west, &m).await, StatusCode::NOT_FOUND).await;
    assert_problem(
        app.patch(&west, &m, &json!({"owner_id": e1_id})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(app.delete(&west, &m).await, StatusCode::NOT_FOUND).await;
    let feed = change_ids(&app, &m).await;
    assert!(feed.contains(&l1) && feed.contains(&l2) && !feed.contains(&lw));

    // Reassign inside the team: fine, and the timeline says so.
    let path = format!("/v1/leads/{l1}");
    let res = app.patch(&path, &m, &json!({"owner_id": e2_id})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["owner_id"], e2_id.as_str());
    let tl = body(app.get(&format!("{path}/timeline"), &m).await).await;
    let assigned = tl["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "assigned" && i["data"]["how"] == "assign")
        .expect("an assigned event")
        .clone();
    assert_eq!(assigned["actor_id"], m_id.as_str());
    assert_eq!(assigned["data"]["from"], e1_id.as_str());
    assert_eq!(assigned["data"]["owner_id"], e2_id.as_str());
    assert_eq!(assigned["data"]["how"], "assign");
    // e1 no longer sees it, e2 does, and hears about it.
    assert_problem(app.get(&path, &e1).await, StatusCode::NOT_FOUND).await;
    assert_eq!(app.get(&path, &e2).await.status(), StatusCode::OK);
    let notes = body(app.get("/v1/notifications", &e2).await).await;
    assert!(
        notes["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["kind"] == "lead.assigned" && n["lead_id"] == l1.as_str()),
        "{notes}"
    );

    // Outside the team: 403, and nothing moved.
    let res = app.patch(&path, &m, &json!({"owner_id": w_id})).await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = app
        .post(
            "/v1/leads",
            &m,
            &json!({"email": "new@acme.com", "owner_id": w_id}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = app
        .post(
            "/v1/leads",
            &m,
            &json!({"email": "new@acme.com", "owner_id": e1_id}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(body(res).await["owner_id"], e1_id.as_str());
    assert_eq!(
        body(app.get(&path, &app.admin).await).await["owner_id"],
        e2_id.as_str()
    );

    // The admin sees everything and may assign anywhere.
    let all = listed(&app, &app.admin, "").await;
    for id in [&l1, &l2, &lw, &lm] {
        assert!(all.contains(id));
        let res = app.get(&format!("/v1/leads/{id}"), &app.admin).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app
        .patch(&path, &app.admin, &json!({"owner_id": w_id}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_problem(app.get(&path, &m).await, StatusCode::NOT_FOUND).await;
    assert_eq!(app.get(&path, &w).await.status(), StatusCode::OK);
    let feed = change_ids(&app, &app.admin).await;
    for id in [&l1, &l2, &lw, &lm] {
        assert!(feed.contains(id));
    }
}

#[tokio::test]
async fn creating_a_lead_with_another_reps_email_is_a_conflict_that_leaks_nothing() {
    let app = spawn_app().await;
    let (a_id, a) = app.rep("alice", None).await;
    let (_, b) = app.rep("bob", None).await;
    let lead = app
        .create_lead(
            &a,
            json!({"name": "Secret Person", "email": "vip@acme.com", "company": "Acme"}),
        )
        .await;
    let id = id_of(&lead);

    let res = app
        .post(
            "/v1/leads",
            &b,
            &json!({"name": "Bob's guess", "email": "VIP@acme.com", "title": "CEO"}),
        )
        .await;
    assert!(res.headers().get("location").is_none());
    let problem = assert_problem(res, StatusCode::CONFLICT).await;
    let text = problem.to_string();
    assert!(!text.contains(&id), "{text}");
    assert!(!text.contains("Secret"), "{text}");

    let res = app
        .post(
            "/v1/leads/batch",
            &b,
            &json!({"leads": [{"email": "vip@acme.com", "title": "CFO"}]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let batch = body(res).await;
    assert_eq!(batch["items"][0]["status"], 409);
    assert_eq!(batch["items"][0]["lead"], Value::Null);
    assert_eq!(batch["items"][0]["id"], Value::Null);

    // Alice's lead is untouched and has no merge on its timeline.
    let now = body(app.get(&format!("/v1/leads/{id}"), &a).await).await;
    assert_eq!(now["version"], 1);
    assert_eq!(now["name"], "Secret Person");
    assert_eq!(now["title"], Value::Null);
    let tl = body(app.get(&format!("/v1/leads/{id}/timeline"), &a).await).await;
    let kinds: Vec<&str> = tl["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["assigned", "capture", "created"]);
    assert_fields(
        &tl["items"][0],
        json!({"data.owner_id": a_id, "data.from": null, "data.how": "create"}),
    );
    assert!(listed(&app, &b, "").await.is_empty());
    assert_eq!(listed(&app, &app.admin, "").await, vec![id]);
}

#[tokio::test]
async fn users_are_visible_and_writable_by_role() {
    let app = spawn_app().await;
    let (m_id, m) = app
        .create_user(json!({"name": "boss", "role": "manager", "team": "east"}))
        .await;
    let (r_id, r) = app
        .create_user(json!({"name": "rita", "role": "rep", "team": "east",
            "email": "rita@acme.com", "password": "first password"}))
        .await;
    let (o_id, _) = app.rep("other", Some("west")).await;
    let admin_id = id_of(&body(app.get("/v1/me", &app.admin).await).await);

    // Reads: a rep sees only themselves; a manager their team.
    assert_eq!(
        item_ids(&body(app.get("/v1/users", &r).await).await),
        vec![r_id.clone()]
    );
    for other in [&m_id, &o_id, &admin_id] {
        let res = app.get(&format!("/v1/users/{other}"), &r).await;
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
    let res = app.get(&format!("/v1/users/{r_id}"), &r).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut team = item_ids(&body(app.get("/v1/users", &m).await).await);
    team.sort();
    let mut want = vec![m_id.clone(), r_id.clone()];
    want.sort();
    assert_eq!(team, want);
    assert_problem(
        app.get(&format!("/v1/users/{o_id}"), &m).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        item_ids(&body(app.get("/v1/users", &app.admin).await).await).len(),
        4
    );

    // Only an admin creates, deletes and issues tokens.
    for t in [&r, &m] {
        let res = app
            .post("/v1/users", t, &json!({"name": "x", "role": "rep"}))
            .await;
        assert_problem(res, StatusCode::FORBIDDEN).await;
        let res = app.delete(&format!("/v1/users/{o_id}"), t).await;
        assert_problem(res, StatusCode::FORBIDDEN).await;
        let res = app
            .post(&format!("/v1/users/{r_id}/tokens"), t, &json!({}))
            .await;
        assert_problem(res, StatusCode::FORBIDDEN).await;
    }
    let users = body(app.get("/v1/users", &app.admin).await).await;
    assert_eq!(
        users["items"].as_array().unwrap().len(),
        4,
        "nobody created"
    );
    assert_eq!(
        app.get(&format!("/v1/users/{o_id}"), &app.admin)
            .await
            .status(),
        StatusCode::OK,
        "nobody deleted"
    );

    // Patching: own name and password yes; own role or team no; others no.
    let me = format!("/v1/users/{r_id}");
    for patch in [
        json!({"role": "admin"}),
        json!({"role": "manager"}),
        json!({"team": "west"}),
        json!({"active": false}),
        json!({"capacity": 1000}),
    ] {
        let res = app.patch(&me, &r, &patch).await;
        assert_problem(res, StatusCode::FORBIDDEN).await;
    }
    let res = app.patch(&me, &r, &json!({"name": "Rita Li"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let patched = body(res).await;
    assert_eq!(patched["name"], "Rita Li");
    assert_eq!(patched["role"], "rep");
    let res = app
        .patch(&me, &r, &json!({"password": "second password"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let login = |pw: &'static str| {
        app.client
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": "rita@acme.com", "password": pw}))
            .send()
    };
    assert_problem(
        login("first password").await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        login("second password").await.unwrap().status(),
        StatusCode::OK
    );
    let res = app
        .patch(&format!("/v1/users/{o_id}"), &r, &json!({"name": "pwned"}))
        .await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
    let res = app
        .patch(
            &format!("/v1/users/{r_id}"),
            &m,
            &json!({"name": "renamed"}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = app
        .patch(&format!("/v1/users/{m_id}"), &m, &json!({"role": "admin"}))
        .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let me_now = body(app.get("/v1/me", &r).await).await;
    assert_eq!(me_now["name"], "Rita Li");
    assert_eq!(me_now["role"], "rep");
    assert_eq!(me_now["team"], "east");
}

#[tokio::test]
async fn re_submitting_a_pooled_lead_does_not_claim_it() {
    let app = spawn_app().await;
    let (a_id, a) = app.rep("alice", None).await;
    let (_, m) = app
        .create_user(json!({"name": "boss", "role": "manager"}))
        .await;
    let res = app
        .post("/v1/pools", &app.admin, &json!({"name": "expo"}))
        .await;
    let pool = id_of(&body(res).await);
    let pool = pool.as_str();
    let pooled = app
        .create_lead(&app.admin, json!({"email": "p@acme.com", "pool_id": pool}))
        .await;
    let id = id_of(&pooled);
    for (token, input) in [
        (&a, json!({"email": "P@acme.com", "name": "Pat"})),
        (
            &a,
            json!({"email": "p@acme.com", "owner_id": a_id, "title": "CTO"}),
        ),
        (&m, json!({"email": "p@acme.com", "company": "Acme"})),
    ] {
        let res = app.post("/v1/leads", token, &input).await;
        assert_eq!(res.status(), StatusCode::OK);
        let merged = body(res).await;
        assert_eq!(merged["merged"], true);
        assert_eq!(merged["id"], id.as_str());
        assert_eq!(merged["owner_id"], Value::Null, "{input} claimed the lead");
        assert_eq!(merged["pool_id"], pool);
    }
    let now = body(app.get(&format!("/v1/leads/{id}"), &app.admin).await).await;
    assert_eq!(now["owner_id"], Value::Null);
    assert_eq!(now["name"], "Pat");
    assert_eq!(now["title"], "CTO");
    assert_eq!(now["company"], "Acme");
    // still in the pool for every rep to see
    let (_, b) = app.rep("bob", None).await;
    assert_eq!(listed(&app, &b, "").await, vec![id]);
}

#[tokio::test]
async fn admin_only_creates_are_403_for_others_whatever_the_body() {
    let app = spawn_app().await;
    let (_, rep) = app.rep("r", None).await;
    let (_, manager) = app
        .create_user(json!({"name": "m", "role": "manager"}))
        .await;
    for token in [&rep, &manager] {
        for path in [
            "/v1/users",
            "/v1/forms",
            "/v1/webhooks",
            "/v1/pools",
            "/v1/admin/plugins/dry-run",
        ] {
            // Incomplete, with an unknown field: a 422 for an admin, a 403 for anyone else.
            let res = app.post(path, token, &json!({"bogus": 1})).await;
            assert_problem(res, StatusCode::FORBIDDEN).await;
        }
    }
    let res = app
        .post("/v1/users", &app.admin, &json!({"bogus": 1}))
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn a_rep_who_loses_a_lead_no_longer_sees_it_in_the_change_feed() {
    let app = spawn_app().await;
    let (_, a) = app.rep("alice", None).await;
    let (b_id, b) = app.rep("bob", None).await;
    let lead = app
        .create_lead(&a, json!({"email": "moved@acme.com", "name": "Moved"}))
        .await;
    let id = id_of(&lead);
    app.add_activity(&a, json!({"lead_id": id, "kind": "call"}))
        .await;
    assert!(change_ids(&app, &a).await.contains(&id), "alice's own lead");
    let res = app
        .post(
            &format!("/v1/leads/{id}/assign"),
            &app.admin,
            &json!({"owner_id": b_id}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // As reads and lists: a 404 for alice, everywhere, its history included.
    assert_eq!(
        app.get(&format!("/v1/leads/{id}"), &a).await.status(),
        StatusCode::NOT_FOUND
    );
    let feed = body(app.get("/v1/changes?since=0&limit=500", &a).await).await;
    let about: Vec<&Value> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == id.as_str() || c["lead_id"] == id.as_str())
        .collect();
    assert!(about.is_empty(), "{about:?}");
    // Bob sees all of it, the rows from before he had it too.
    let feed = body(app.get("/v1/changes?since=0&limit=500", &b).await).await;
    let about = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == id.as_str() || c["lead_id"] == id.as_str())
        .count();
    assert!(
        about >= 3,
        "the create, the call and the assignment: {feed}"
    );
}
