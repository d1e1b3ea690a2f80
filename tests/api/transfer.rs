//! Bulk import and export over HTTP: normalization of messy rows, dedupe within a file and
//! across imports, rejected rows with their line numbers, re-imports that create nothing,
//! dry runs, NDJSON, and exports with the list filters that re-import cleanly.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A messy file: every sample phone format, a repeat inside the file, Chinese headers, a bad
/// row and a bad email. Line numbers count the header as line 1; the quoted note spans two.
const MESSY: &str = "姓名,E-mail,手机,公司,人数,备注,utm_source,utm_medium\n\
王总,wang@example-corp.cn,13812345678,示例科技有限公司,120,\"展会认识\n对MES感兴趣\",expo,event\n\
Li Lei,LILEI@ACME.COM ,+86 139 1234 5678,Acme  Ltd,50-200,,baidu,cpc\n\
Ann,ann@@broken,86-13712345678,Initech,,,,\n\
Bo,bo@acme.com,(136) 1234-5678,Acme,lots,,,\n\
Sam,sam@acme.com,+1 415 555 0100,Globex,,,,\n\
Wang again,  Wang@Example-Corp.cn ,138-1234-5678,,,,,\n\
Cy,cy@acme.com, 135 1234 5678 ,Acme,,,,\n";

async fn import(
    app: &TestApp,
    token: &str,
    body: &str,
    query: &str,
    ct: &str,
) -> reqwest::Response {
    app.req(
        reqwest::Method::POST,
        &format!("/v1/leads/import{query}"),
        token,
    )
    .header("content-type", ct)
    .body(body.to_owned())
    .send()
    .await
    .expect("import request")
}

async fn get_name(app: &TestApp, id: &str) -> String {
    let lead = expect_json(
        app.get(&format!("/v1/leads/{id}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    lead["name"].as_str().unwrap_or_default().to_owned()
}

/// A lead's timeline, and its `merged` events.
async fn merged_events(app: &TestApp, id: &str) -> (Value, Vec<Value>) {
    let timeline = expect_json(
        app.get(&format!("/v1/leads/{id}/timeline"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    let merged = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "merged")
        .cloned()
        .collect();
    (timeline, merged)
}

async fn all_leads(app: &TestApp, token: &str) -> Vec<Value> {
    let page = expect_json(app.get("/v1/leads?limit=500", token).await, StatusCode::OK).await;
    page["items"].as_array().expect("items").clone()
}

fn by_email<'a>(leads: &'a [Value], email: &str) -> &'a Value {
    leads
        .iter()
        .find(|l| l["email"] == email)
        .unwrap_or_else(|| panic!("no lead {email}"))
}

#[tokio::test]
async fn a_messy_csv_is_cleaned_deduped_and_its_bad_rows_named_by_line() {
    let app = spawn_app().await;
    let res = import(&app, &app.admin, MESSY, "", "text/csv").await;
    let r = expect_json(res, StatusCode::OK).await;
    assert_fields(
        &r,
        json!({"dry_run": false, "rows": 7, "created": 5, "merged": 1, "unchanged": 0, "rejected": 1}),
    );
    assert_eq!(
        r["rejects"],
        json!([{"line": 6, "errors": [{"field": "company_size", "message": r["rejects"][0]["errors"][0]["message"]}]}])
    );

    let leads = all_leads(&app, &app.admin).await;
    assert_eq!(leads.len(), 5);
    let wang = by_email(&leads, "wang@example-corp.cn");
    assert_fields(
        wang,
        json!({"name": "王总", "phone": "+8613812345678", "company": "示例科技有限公司",
               "company_size": 120, "channel": "event", "utm.source": "expo"}),
    );
    assert_fields(
        by_email(&leads, "lilei@acme.com"),
        json!({"phone": "+8613912345678", "company": "Acme Ltd", "company_size": 50, "channel": "paid_search"}),
    );
    assert_fields(
        by_email(&leads, "ann@@broken"),
        json!({"phone": "+8613712345678", "flags.invalid_email": true}),
    );
    assert_eq!(by_email(&leads, "sam@acme.com")["phone"], "+14155550100");
    assert_eq!(by_email(&leads, "cy@acme.com")["phone"], "+8613512345678");

    // the first activity keeps the row as it came, and the note
    let id = wang["id"].as_str().unwrap();
    let acts = expect_json(
        app.get(&format!("/v1/leads/{id}/activities"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    let acts = acts["items"].as_array().unwrap();
    // The repeat on line 8 only offered a different name: an import never overwrites, but the
    // row and the name it offered are on the timeline, not dropped silently.
    assert_eq!(acts.len(), 2);
    assert_eq!(acts[0]["properties"]["line"], 8);
    assert_eq!(acts[0]["properties"]["raw"]["姓名"], "Wang again");
    let (timeline, merged) = merged_events(&app, id).await;
    assert_eq!(merged.len(), 1, "{timeline}");
    assert_eq!(
        merged[0]["data"]["conflicts"],
        json!([{"field": "name", "kept": "王总", "offered": "Wang again"}]),
        "{timeline}"
    );
    assert_eq!(get_name(&app, id).await, "王总");
    let first = &acts[1];
    assert_eq!(first["properties"]["line"], 2);
    assert_fields(
        first,
        json!({"kind": "import", "text": "展会认识\n对MES感兴趣", "properties.raw.手机": "13812345678",
               "properties.raw.E-mail": "wang@example-corp.cn", "properties.via": "import"}),
    );
}

#[tokio::test]
async fn importing_the_same_file_again_creates_nothing() {
    let app = spawn_app().await;
    let first = expect_json(
        import(&app, &app.admin, MESSY, "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    let changes = expect_json(
        app.get("/v1/changes?limit=500", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    let again = expect_json(
        import(&app, &app.admin, MESSY, "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_fields(
        &again,
        json!({"created": 0, "merged": 0, "unchanged": 6, "rejected": 1}),
    );
    assert_eq!(again["rejects"], first["rejects"]);
    let after = expect_json(
        app.get("/v1/changes?limit=500", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(after["next"], changes["next"], "not one change written");

    // a row without email or phone is known again by its content
    let nameless = "name,company\nNo Contact,Acme\n";
    let r = expect_json(
        import(&app, &app.admin, nameless, "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(r["created"], 1);
    let r = expect_json(
        import(&app, &app.admin, nameless, "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_fields(&r, json!({"created": 0, "unchanged": 1}));
    let r = expect_json(
        import(&app, &app.admin, nameless, "?dry_run=true", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_fields(&r, json!({"created": 0, "unchanged": 1}));

    // A row that fills a blank and offers a differing value: merged once, then unchanged.
    let fills_and_differs = "email,company,region\nsam@acme.com,Other Co,华东\n";
    for (query, want) in [
        ("?dry_run=true", "merged"),
        ("", "merged"),
        ("", "unchanged"),
        ("?dry_run=true", "unchanged"),
    ] {
        let r = expect_json(
            import(&app, &app.admin, fills_and_differs, query, "text/csv").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(r[want], 1, "{query}: {r}");
    }

    // A known person with a new note: the note is kept, once.
    let noted = "email,notes\nsam@acme.com,called back; wants an ERP quote\n";
    let nameless_noted = "name,company,notes\nNo Contact,Acme,met at the expo\n";
    for (file, email) in [(noted, Some("sam@acme.com")), (nameless_noted, None)] {
        let dry = expect_json(
            import(&app, &app.admin, file, "?dry_run=true", "text/csv").await,
            StatusCode::OK,
        )
        .await;
        assert_fields(&dry, json!({"created": 0, "merged": 1}));
        let r = expect_json(
            import(&app, &app.admin, file, "", "text/csv").await,
            StatusCode::OK,
        )
        .await;
        assert_fields(&r, json!({"created": 0, "merged": 1}));
        let r = expect_json(
            import(&app, &app.admin, file, "", "text/csv").await,
            StatusCode::OK,
        )
        .await;
        assert_fields(&r, json!({"created": 0, "unchanged": 1}));
        let leads = all_leads(&app, &app.admin).await;
        let lead = match email {
            Some(e) => by_email(&leads, e),
            None => leads
                .iter()
                .find(|l| l["name"] == "No Contact")
                .expect("the nameless lead"),
        };
        let id = lead["id"].as_str().unwrap();
        let acts = expect_json(
            app.get(&format!("/v1/leads/{id}/activities?limit=500"), &app.admin)
                .await,
            StatusCode::OK,
        )
        .await;
        let note = file.lines().nth(1).unwrap().rsplit(',').next().unwrap();
        let with_note = acts["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["text"] == note)
            .count();
        assert_eq!(with_note, 1, "{acts}");
    }

    // a later file with the same people fills blanks and merges, across imports
    let later = "email,title,phone\nsam@acme.com,CFO,\n,Buyer,+86 135 1234 5678\n";
    let r = expect_json(
        import(&app, &app.admin, later, "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_fields(&r, json!({"rows": 2, "created": 0, "merged": 2}));
    let leads = all_leads(&app, &app.admin).await;
    assert_eq!(by_email(&leads, "sam@acme.com")["title"], "CFO");
    assert_eq!(by_email(&leads, "cy@acme.com")["title"], "Buyer");
}

#[tokio::test]
async fn a_dry_run_reports_and_writes_nothing() {
    let app = spawn_app().await;
    let r = expect_json(
        import(&app, &app.admin, MESSY, "?dry_run=true", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_fields(
        &r,
        json!({"dry_run": true, "rows": 7, "created": 5, "merged": 1, "rejected": 1, "rejects.0.line": 6}),
    );
    assert!(all_leads(&app, &app.admin).await.is_empty());
}

#[tokio::test]
async fn a_dry_run_says_what_the_import_then_does() {
    let app = spawn_app().await;
    app.create_lead(&app.admin, json!({"name": "Cy", "email": "cy@acme.com"}))
        .await;
    // Repeats that add nothing, rows that add to an earlier row or to a stored lead, and
    // notes given once and again.
    let file = "name,email,company,note\n\
        Ann,ann@acme.com,,\n\
        Ann,ann@acme.com,,\n\
        Ann,ANN@acme.com,Acme,\n\
        Bo,bo@acme.com,,hello\n\
        Bo,bo@acme.com,,hello\n\
        Bo,bo@acme.com,,again\n\
        Cy,cy@acme.com,Initech,\n\
        Cy,cy@acme.com,Initech,\n\
        Cy,cy@acme.com,Globex,\n";
    let counts =
        |r: &Value| ["rows", "created", "merged", "unchanged", "rejected"].map(|k| r[k].as_u64());
    let dry = expect_json(
        import(&app, &app.admin, file, "?dry_run=true", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    let done = expect_json(
        import(&app, &app.admin, file, "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(counts(&dry), counts(&done), "dry run {dry}\nimport {done}");
    assert_fields(
        &done,
        json!({"rows": 9, "created": 2, "merged": 4, "unchanged": 3}),
    );
}

#[tokio::test]
async fn ndjson_imports_with_a_column_map_and_bad_lines_are_rejected_alone() {
    let app = spawn_app().await;
    let body = "{\"Full\": \"Ann\", \"mail\": \"ann@acme.com\", \"tags\": [\"expo\"], \"utm\": {\"source\": \"linkedin\"}, \"Secret\": \"s\", \"Budget\": \"100\"}\n\
                not json\n\
                \n\
                {\"Full\": \"Bo\", \"mail\": \"bo@acme.com\", \"stage\": \"nope\"}\n";
    let res = import(
        &app,
        &app.admin,
        body,
        "?map=Full=name&map=Secret=ignore&map=Budget=fields.budget",
        "application/x-ndjson",
    )
    .await;
    let r = expect_json(res, StatusCode::OK).await;
    assert_fields(
        &r,
        json!({"rows": 3, "created": 1, "rejected": 2, "rejects.0.line": 2, "rejects.1.line": 4,
        "rejects.1.errors.0.field": "stage"}),
    );
    let leads = all_leads(&app, &app.admin).await;
    assert_fields(
        &leads[0],
        json!({"name": "Ann", "tags": ["expo"], "channel": "social"}),
    );
    // Every `map` applies, not only the last.
    assert_eq!(leads[0]["fields"], json!({"budget": "100"}));

    assert_problem(
        import(&app, &app.admin, body, "", "application/pdf").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert_invalid(
        import(
            &app,
            &app.admin,
            body,
            "?map=Full=nonsense",
            "application/x-ndjson",
        )
        .await,
        "map",
    )
    .await;
    assert_problem(
        import(&app, &app.admin, "", "", "text/csv").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn an_imported_row_with_a_visitor_id_takes_that_visitor_s_page_views() {
    let app = spawn_app().await;
    let vid = "0123456789abcdef0123456789abcdef";
    let view =
        json!({"visitor_id": vid, "url": "https://www.acme.example/pricing", "referrer": ""});
    let res = app
        .client
        .post(app.url("/t"))
        .header("content-type", "text/plain")
        .body(view.to_string())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let body = format!(
        "{{\"email\": \"seen@acme.com\", \"visitor_id\": \"{vid}\"}}\n\
         {{\"email\": \"bad@acme.com\", \"visitor_id\": \"no spaces allowed\"}}\n"
    );
    let r = expect_json(
        import(&app, &app.admin, &body, "", "application/x-ndjson").await,
        StatusCode::OK,
    )
    .await;
    assert_fields(
        &r,
        json!({"created": 1, "rejected": 1, "rejects.0.line": 2,
            "rejects.0.errors.0.field": "visitor_id"}),
    );
    let lead = &all_leads(&app, &app.admin).await[0];
    let acts = activities(&app, lead["id"].as_str().unwrap()).await;
    let kinds: Vec<&str> = acts.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"page_view"), "{kinds:?}");
}

#[tokio::test]
async fn a_reps_import_is_theirs() {
    let app = spawn_app().await;
    let (rep_id, rep) = app.rep("r", None).await;
    let r = expect_json(
        import(&app, &rep, "email\nx@acme.com\n", "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(r["created"], 1);
    assert_eq!(all_leads(&app, &rep).await[0]["owner_id"], rep_id.as_str());
}

#[tokio::test]
async fn leads_without_email_or_phone_re_import_from_their_export_by_id() {
    let app = spawn_app().await;
    let (_, rep) = app.rep("r", None).await;
    let (_, other) = app.rep("o", None).await;
    let theirs = app
        .create_lead(&other, json!({"name": "Walk-in", "company": "Kiosk"}))
        .await;
    let mine = app
        .create_lead(
            &rep,
            json!({"name": "Booth visitor", "company": "Expo", "title": "Visitor"}),
        )
        .await;
    // Edited after the export, so its content no longer matches what was exported.
    let export = app
        .get("/v1/leads/export", &app.admin)
        .await
        .text()
        .await
        .unwrap();
    let res = app
        .patch(
            &format!("/v1/leads/{}", mine["id"].as_str().unwrap()),
            &rep,
            &json!({"title": "Buyer"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // The exported title differs from today's: recorded once, as for a match by email, and
    // nothing overwritten.
    for (query, merged) in [("?dry_run=true", 1), ("", 1), ("", 0), ("?dry_run=true", 0)] {
        let r = expect_json(
            import(&app, &app.admin, &export, query, "text/csv").await,
            StatusCode::OK,
        )
        .await;
        assert_fields(
            &r,
            json!({"rows": 2, "created": 0, "merged": merged, "unchanged": 2 - merged}),
        );
    }
    assert_eq!(all_leads(&app, &app.admin).await.len(), 2);
    let mine_id = mine["id"].as_str().unwrap();
    let now = expect_json(
        app.get(&format!("/v1/leads/{mine_id}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(now["title"], "Buyer");
    let (timeline, merged) = merged_events(&app, mine_id).await;
    assert_eq!(merged.len(), 1, "{timeline}");
    assert_eq!(merged[0]["data"]["reason"], "id", "{}", merged[0]);
    assert_eq!(
        merged[0]["data"]["conflicts"][0]["field"], "title",
        "{}",
        merged[0]
    );
    // A rep re-importing a row that is another rep's lead is told so, in the dry run too, and
    // changes nothing.
    for query in ["?dry_run=true", ""] {
        let r = expect_json(
            import(&app, &rep, &export, query, "text/csv").await,
            StatusCode::OK,
        )
        .await;
        assert_fields(&r, json!({"created": 0, "unchanged": 1, "rejected": 1}));
    }
    assert_eq!(all_leads(&app, &app.admin).await.len(), 2);
    assert_eq!(all_leads(&app, &other).await[0]["id"], theirs["id"]);
    // Released to a pool since the export, which named its owner and follow-up date: the
    // dry run, like the import, hands the pooled lead back to nobody.
    let res = app
        .post(
            &format!("/v1/leads/{mine_id}/release"),
            &rep,
            &json!({"reason": "not mine"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let counts =
        |r: &Value| ["created", "merged", "unchanged", "rejected"].map(|k| r[k].as_u64().unwrap());
    let dry = expect_json(
        import(&app, &app.admin, &export, "?dry_run=true", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    let real = expect_json(
        import(&app, &app.admin, &export, "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(counts(&dry), counts(&real), "{dry} / {real}");
    assert_eq!(counts(&real), [0, 0, 2, 0], "{real}");
    let now = expect_json(
        app.get(&format!("/v1/leads/{mine_id}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(now["owner_id"], Value::Null, "{now}");
    // An id that is not this server's, or not a UUID, does not stop the row.
    let foreign = "id,name,company\n01900000-0000-7000-8000-000000000000,New,Co\n42,Other,Co\n";
    let r = expect_json(
        import(&app, &app.admin, foreign, "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_fields(&r, json!({"created": 2, "rejected": 0}));
}

#[tokio::test]
async fn exports_stream_with_filters_and_re_import_cleanly() {
    let app = spawn_app().await;
    expect_json(
        import(&app, &app.admin, MESSY, "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    let res = app.get("/v1/leads/export?channel=event", &app.admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,created_at,"), "{}", lines[0]);
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].contains("wang@example-corp.cn"));

    let res = app
        .get("/v1/leads/export?format=ndjson&sort=created_at", &app.admin)
        .await;
    let text = res.text().await.unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["email"], "wang@example-corp.cn");

    let all = app
        .get("/v1/leads/export", &app.admin)
        .await
        .text()
        .await
        .unwrap();
    let other = spawn_app().await;
    let r = expect_json(
        import(&other, &other.admin, &all, "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_fields(&r, json!({"rows": 5, "created": 5, "rejected": 0}));
    let mut a: Vec<(Value, Value, Value)> = all_leads(&app, &app.admin)
        .await
        .iter()
        .map(|l| (l["email"].clone(), l["phone"].clone(), l["company"].clone()))
        .collect();
    let mut b: Vec<(Value, Value, Value)> = all_leads(&other, &other.admin)
        .await
        .iter()
        .map(|l| (l["email"].clone(), l["phone"].clone(), l["company"].clone()))
        .collect();
    a.sort_by_key(|t| t.0.to_string());
    b.sort_by_key(|t| t.0.to_string());
    assert_eq!(a, b);

    // Imported with no rep to take them, all five wait in the default pool, where every rep
    // sees them; one handed to another rep drops out of this rep's export.
    let (other_rep, _) = app.rep("o", None).await;
    let (_, rep) = app.rep("r", None).await;
    let wang = by_email(&all_leads(&app, &app.admin).await, "wang@example-corp.cn")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .post(
            &format!("/v1/leads/{wang}/assign"),
            &app.admin,
            &json!({ "owner_id": other_rep }),
        )
        .await;
    assert_eq!(
        expect_json(res, StatusCode::OK).await["owner_id"],
        other_rep
    );
    let mine = app
        .get("/v1/leads/export", &rep)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(mine.lines().count(), 5, "a rep exports only what they see");
    assert!(!mine.contains("wang@example-corp.cn"), "{mine}");
    assert!(mine.contains("lilei@acme.com"), "{mine}");
    assert_invalid(
        app.get("/v1/leads/export?format=xml", &app.admin).await,
        "format",
    )
    .await;
    assert_invalid(
        app.get("/v1/leads/export?stage=nope", &app.admin).await,
        "stage",
    )
    .await;

    // Wang now has an owner who does not exist on a third server: the row is imported and
    // routed there (to its default pool), not rejected.
    let owned = app
        .get("/v1/leads/export", &app.admin)
        .await
        .text()
        .await
        .unwrap();
    assert!(owned.contains(other_rep.as_str()), "{owned}");
    let third = spawn_app().await;
    let r = expect_json(
        import(&third, &third.admin, &owned, "", "text/csv").await,
        StatusCode::OK,
    )
    .await;
    assert_fields(&r, json!({"rows": 5, "created": 5, "rejected": 0}));
    let third_leads = all_leads(&third, &third.admin).await;
    let moved = by_email(&third_leads, "wang@example-corp.cn");
    assert_eq!(moved["owner_id"], Value::Null, "{moved}");
    assert!(moved["pool_id"].is_string(), "{moved}");
    // A manager's import of it as well: the unknown owner is dropped before any right is
    // checked, so the lead is the manager's own, as a row naming nobody would be.
    let fourth = spawn_app().await;
    let (boss_id, boss) = fourth
        .create_user(json!({"name": "boss", "role": "manager", "team": "east"}))
        .await;
    for (query, created) in [("?dry_run=true", 5), ("", 5)] {
        let r = expect_json(
            import(&fourth, &boss, &owned, query, "text/csv").await,
            StatusCode::OK,
        )
        .await;
        assert_fields(&r, json!({"created": created, "rejected": 0}));
    }
    let theirs = all_leads(&fourth, &boss).await;
    assert_eq!(theirs.len(), 5);
    assert!(theirs.iter().all(|l| l["owner_id"] == boss_id.as_str()));
}
