//! Full-text search as a frontend uses it: Chinese and English, emails, phones, prefixes and
//! typos, filters and facets, visibility per role, freshness and erasure.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Searches until `check` holds (the index commits about once a second), returning the answer.
async fn search_until(
    app: &TestApp,
    token: &str,
    query: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let v = search(app, token, query).await;
        if check(&v) {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "search {query} never matched: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The answer to `GET /v1/search?{query}`, which must succeed.
async fn search(app: &TestApp, token: &str, query: &str) -> Value {
    expect_json(
        app.get(&format!("/v1/search?{query}"), token).await,
        StatusCode::OK,
    )
    .await
}

/// The lead ids found by `query` once the index has caught up with every write so far.
async fn found(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    caught_up(app).await;
    search(app, token, query).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["lead_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn caught_up(app: &TestApp) {
    let started = Instant::now();
    loop {
        let r = body_of(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
        if r["search_lag"] == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "index never caught up: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn body_of(res: reqwest::Response) -> Value {
    res.json().await.unwrap()
}

fn q(s: &str) -> String {
    format!("q={}", urlencode(s))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn chinese_and_english_text_is_found_by_parts_prefixes_and_typos() {
    let app = spawn_app().await;
    let a = app
        .create_lead(
            &app.admin,
            json!({"name": "王小明", "company": "纷享销客", "title": "总经理"}),
        )
        .await;
    let b = app.create_lead(&app.admin, json!({"name": "Wang Wei", "company": "Acme Manufacturing", "email": "wei@acme-mfg.com"})).await;
    let c = app
        .create_lead(
            &app.admin,
            json!({"name": "José Müller", "company": "Globex"}),
        )
        .await;
    let (a, b, c) = (
        a["id"].as_str().unwrap(),
        b["id"].as_str().unwrap(),
        c["id"].as_str().unwrap(),
    );
    let note = app
        .post(
            &format!("/v1/leads/{c}/activities"),
            &app.admin,
            &json!({"kind": "call", "text": "客户关注智能制造和MES系统"}),
        )
        .await;
    assert_eq!(note.status(), StatusCode::CREATED);

    for (query, want) in [
        ("纷享", a),
        ("销客", a),
        ("纷享销客", a),
        ("小明", a),
        ("经理", a),
        ("智能制造", c),
        ("MES", c),
        ("mes", c),
        ("wan", b),
        ("acm", b),
        ("manufacturing", b),
        ("manufactring", b),
        ("jose", c),
        ("muller", c),
        ("Müller", c),
    ] {
        let ids = found(&app, &app.admin, &q(query)).await;
        assert!(
            ids.contains(&want.to_owned()),
            "{query} should find {want}: {ids:?}"
        );
    }
    assert!(
        found(&app, &app.admin, &q("制造智能")).await.is_empty(),
        "characters out of order"
    );

    // an exact match ranks above a one-typo match
    let d = app
        .create_lead(&app.admin, json!({"name": "Manufactring Typo"}))
        .await;
    let ids = found(
        &app,
        &app.admin,
        &format!("{}&type=lead", q("manufactring")),
    )
    .await;
    assert_eq!(ids[0], d["id"].as_str().unwrap());
    assert!(ids.contains(&b.to_owned()));

    // an activity is found as itself, with a highlighted snippet
    let v = search(
        &app,
        &app.admin,
        &format!("{}&type=activity", q("智能制造")),
    )
    .await;
    assert_eq!(v["items"][0]["type"], "activity");
    assert_eq!(v["items"][0]["lead_id"], c);
    let snippet = v["items"][0]["snippet"].as_str().unwrap();
    assert!(snippet.contains("<b>"), "{snippet}");

    // Prefix and one-typo hits mark the word they matched, too.
    for (query, marked) in [
        ("acm", "<b>Acme</b>"),
        ("manufactring", "<b>Manufacturing</b>"),
    ] {
        let v = search(&app, &app.admin, &format!("{}&type=lead", q(query))).await;
        let hit = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == b)
            .unwrap_or_else(|| panic!("{query}: {v}"));
        let snippet = hit["snippet"].as_str().unwrap();
        assert!(snippet.contains(marked), "{query}: {snippet}");
    }
}

#[tokio::test]
async fn emails_and_phones_are_found_in_every_form() {
    let app = spawn_app().await;
    let l = app
        .create_lead(
            &app.admin,
            json!({"name": "Li", "email": "li.lei@example-corp.cn", "phone": "13812345678"}),
        )
        .await;
    let id = l["id"].as_str().unwrap().to_owned();
    for query in [
        "li.lei@example-corp.cn",
        "LI.LEI@Example-Corp.cn",
        "li.lei",
        "example-corp.cn",
        "13812345678",
        "+86 138 1234 5678",
        "86-13812345678",
        "138-1234-5678",
        "(138) 1234-5678",
        "5678",
        "12345678",
    ] {
        let ids = found(&app, &app.admin, &q(query)).await;
        assert_eq!(ids.first(), Some(&id), "{query}: {ids:?}");
    }
    assert!(found(&app, &app.admin, &q("99999")).await.is_empty());
}

#[tokio::test]
async fn filters_facets_and_pages() {
    let app = spawn_app().await;
    for (n, stage, channel) in [
        (1, "lead", "event"),
        (2, "mql", "event"),
        (3, "mql", "paid_search"),
        (4, "sql", "email"),
    ] {
        app.create_lead(&app.admin, json!({"name": format!("Acme buyer {n}"), "company": "Acme", "stage": stage, "channel": channel})).await;
    }
    caught_up(&app).await;
    let v = search(&app, &app.admin, &q("acme")).await;
    assert_eq!(v["total"], 4);
    assert_eq!(v["facets"]["stage"], json!({"lead": 1, "mql": 2, "sql": 1}));
    assert_eq!(
        v["facets"]["channel"],
        json!({"email": 1, "event": 2, "paid_search": 1})
    );
    let v = search(&app, &app.admin, &format!("{}&stage=mql", q("acme"))).await;
    assert_eq!(v["total"], 2);
    assert_eq!(
        v["facets"]["channel"],
        json!({"event": 1, "paid_search": 1})
    );
    let v = search(
        &app,
        &app.admin,
        &format!("{}&channel=event&type=lead", q("acme")),
    )
    .await;
    assert_eq!(v["total"], 2);

    // pages of two, then the end
    let first = search(&app, &app.admin, &format!("{}&limit=2", q("acme"))).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = search(
        &app,
        &app.admin,
        &format!("{}&limit=2&cursor={cursor}", q("acme")),
    )
    .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert_eq!(second["next_cursor"], Value::Null);
    // A cursor altered to point far past the end (or before the start) is no page, not a
    // crash: the offset is only a position in the list.
    {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut raw = b64.decode(&cursor).unwrap();
        for (offset, status) in [
            (10_000_000_000_000_i64, StatusCode::OK),
            (i64::MAX, StatusCode::OK),
            (-1, StatusCode::UNPROCESSABLE_ENTITY),
        ] {
            raw[..8].copy_from_slice(&offset.to_be_bytes());
            let forged = b64.encode(&raw);
            let res = app
                .get(
                    &format!("/v1/search?{}&limit=2&cursor={forged}", q("acme")),
                    &app.admin,
                )
                .await;
            assert_eq!(res.status(), status, "{offset}");
            if status == StatusCode::OK {
                let page: Value = res.json().await.unwrap();
                assert_eq!(page["items"], json!([]), "{page}");
                assert_eq!(page["next_cursor"], Value::Null);
            }
        }
    }
    // The cursor is a position in this search only: with another query it is a 422.
    assert_invalid(
        app.get(
            &format!("/v1/search?{}&limit=2&cursor={cursor}", q("initech")),
            &app.admin,
        )
        .await,
        "cursor",
    )
    .await;
    let mut all: Vec<Value> = first["items"].as_array().unwrap().clone();
    all.extend(second["items"].as_array().unwrap().clone());
    let mut ids: Vec<&str> = all.iter().map(|i| i["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);

    for bad in [
        "stage=nope",
        "type=x",
        "limit=0",
        "cursor=zzz",
        "min_score=x",
        "owner_id=x",
        "bogus=1",
    ] {
        assert_problem(
            app.get(&format!("/v1/search?q=a&{bad}"), &app.admin).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
}

#[tokio::test]
async fn counting_stops_at_the_limit_and_pages_still_reach_every_match() {
    let app = spawn_app_with(|c| c.search.count_limit = 3).await;
    for n in 1..=7 {
        let stage = if n % 2 == 0 { "mql" } else { "lead" };
        app.create_lead(
            &app.admin,
            json!({"name": format!("Initech buyer {n}"), "company": "Initech", "stage": stage}),
        )
        .await;
    }
    app.create_lead(
        &app.admin,
        json!({"name": "Lone Umbrella", "company": "Umbrella"}),
    )
    .await;
    caught_up(&app).await;

    let v = search(&app, &app.admin, &format!("{}&limit=2", q("initech"))).await;
    // Seven match: the count stops at three and says so, and the facets count those three.
    assert_eq!(v["total"], 3);
    assert_eq!(v["total_exact"], false);
    let facet_sum: u64 = v["facets"]["stage"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(facet_sum, 3);

    // Following the cursors still reaches all seven, each once.
    let mut ids = Vec::new();
    let mut page = v;
    loop {
        for item in page["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        page = search(
            &app,
            &app.admin,
            &format!("{}&limit=2&cursor={cursor}", q("initech")),
        )
        .await;
        assert!(ids.len() <= 8, "pages never end: {ids:?}");
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 7, "{ids:?}");
    assert_eq!(ids.len(), 7, "{ids:?}");

    // Filters apply past the limit too.
    let v = search(
        &app,
        &app.admin,
        &format!("{}&stage=mql&limit=10", q("initech")),
    )
    .await;
    assert_eq!(v["total"], 3);
    assert_eq!(v["total_exact"], true);
    assert_eq!(v["items"].as_array().unwrap().len(), 3);

    // Under the limit the count is exact.
    let v = search(&app, &app.admin, &q("umbrella")).await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["total_exact"], true);
}

#[tokio::test]
async fn each_role_finds_and_counts_only_what_it_may_see() {
    let app = spawn_app().await;
    let (_, alice) = app.rep("alice", Some("east")).await;
    let (_, bob) = app.rep("bob", Some("east")).await;
    let (_, carol) = app.rep("carol", Some("west")).await;
    let (_, boss) = app
        .create_user(json!({"name": "boss", "role": "manager", "team": "east"}))
        .await;
    app.create_lead(&alice, json!({"name": "Zeta Alice Lead"}))
        .await;
    app.create_lead(&bob, json!({"name": "Zeta Bob Lead"}))
        .await;
    app.create_lead(&carol, json!({"name": "Zeta Carol Lead"}))
        .await;
    caught_up(&app).await;
    let total = |token: String| {
        let app = &app;
        async move {
            let v = search(app, &token, &q("zeta")).await;
            (
                v["total"].as_u64().unwrap(),
                v["facets"]["stage"]["lead"].as_u64().unwrap_or(0),
            )
        }
    };
    assert_eq!(total(app.admin.clone()).await, (3, 3));
    assert_eq!(total(alice.clone()).await, (1, 1));
    assert_eq!(total(carol.clone()).await, (1, 1));
    assert_eq!(total(boss.clone()).await, (2, 2));
}

#[tokio::test]
async fn a_new_lead_is_searchable_within_a_second_and_an_erased_one_leaves() {
    let app = spawn_app().await;
    caught_up(&app).await;
    let l = app
        .create_lead(&app.admin, json!({"name": "Freshness Probe"}))
        .await;
    let id = l["id"].as_str().unwrap().to_owned();
    let acked = Instant::now();
    search_until(&app, &app.admin, &q("freshness"), |v| v["total"] == 1).await;
    assert!(
        acked.elapsed() <= Duration::from_secs(1),
        "searchable after {:?}",
        acked.elapsed()
    );

    // merged away and deleted leads leave the index
    let other = app
        .create_lead(&app.admin, json!({"name": "Freshness Twin"}))
        .await;
    let res = app
        .post(
            &format!("/v1/leads/{id}/merge"),
            &app.admin,
            &json!({"other_id": other["id"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let ids = found(&app, &app.admin, &format!("{}&type=lead", q("freshness"))).await;
    assert_eq!(ids, vec![id.clone()]);
    assert_eq!(
        app.delete(&format!("/v1/leads/{id}"), &app.admin)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert!(found(&app, &app.admin, &q("freshness")).await.is_empty());
}

#[tokio::test]
async fn the_index_survives_a_restart_and_is_rebuilt_when_lost() {
    let mut app = spawn_app().await;
    app.create_lead(&app.admin, json!({"name": "Persistent Person"}))
        .await;
    caught_up(&app).await;
    app.restart().await;
    assert_eq!(found(&app, &app.admin, &q("persistent")).await.len(), 1);
    app.stop().await;
    std::fs::remove_dir_all(app.dir.path().join("search")).unwrap();
    std::fs::create_dir_all(app.dir.path().join("search")).unwrap();
    std::fs::write(app.dir.path().join("search/meta.json"), "garbage").unwrap();
    app.restart().await;
    assert_eq!(found(&app, &app.admin, &q("persistent")).await.len(), 1);
}

#[tokio::test]
async fn an_idle_index_merges_its_segments_and_still_finds_what_it_should() {
    let app = spawn_app_with(|c| c.search.compact_after_idle_secs = 1).await;
    caught_up(&app).await;
    // One commit each: three segments.
    let mut ids = Vec::new();
    for name in ["Segment Alpha", "Segment Beta", "Segment Gamma"] {
        let l = app.create_lead(&app.admin, json!({ "name": name })).await;
        ids.push(l["id"].as_str().unwrap().to_owned());
        caught_up(&app).await;
    }
    assert_eq!(
        app.delete(&format!("/v1/leads/{}", ids[1]), &app.admin)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    caught_up(&app).await;
    let before = body_of(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert!(before["search_segments"].as_u64().unwrap() >= 2, "{before}");

    let started = Instant::now();
    let ready = loop {
        let r = body_of(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
        if r["search_compacted"] == true && r["search_segments"] == 1 {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the index was never merged: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready["search_lag"], 0);

    let mut found_ids = found(&app, &app.admin, &format!("{}&type=lead", q("segment"))).await;
    found_ids.sort();
    let mut want = vec![ids[0].clone(), ids[2].clone()];
    want.sort();
    assert_eq!(
        found_ids, want,
        "the merged index holds the live leads only"
    );
}

#[tokio::test]
async fn matches_under_the_count_limit_are_ranked_by_relevance_then_lead_score() {
    let app = spawn_app().await;
    let long = app
        .create_lead(
            &app.admin,
            json!({"name": "Orchid Vantage of the Northern Coastal Trading Company"}),
        )
        .await;
    let plain = app
        .create_lead(&app.admin, json!({"name": "Orchid Vantage"}))
        .await;
    // Same name, so equally relevant; a chief executive scores higher as a lead.
    let chief = app
        .create_lead(
            &app.admin,
            json!({"name": "Orchid Vantage", "title": "CEO"}),
        )
        .await;
    assert!(
        chief["score"]["total"].as_i64().unwrap_or(0) > 0,
        "{}",
        chief["score"]
    );
    let ids = found(
        &app,
        &app.admin,
        &format!("{}&type=lead", q("orchid vantage")),
    )
    .await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    assert_eq!(ids, vec![id(&chief), id(&plain), id(&long)]);
}
