//! Live events (`GET /v1/events`, Server-Sent Events): resuming with `Last-Event-ID` gets
//! exactly the events missed, and a rep's stream never shows another rep's leads.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// One parsed SSE event.
#[derive(Debug, Clone)]
struct Sse {
    id: u64,
    event: String,
    data: Value,
}

/// An open event stream, parsed as it arrives.
struct Stream {
    res: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(app: &TestApp, token: &str, last_event_id: Option<u64>) -> Stream {
        let mut req = app.req(reqwest::Method::GET, "/v1/events", token);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let res = req.send().await.expect("events");
        assert_eq!(res.status(), StatusCode::OK);
        let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Stream {
            res,
            buf: String::new(),
        }
    }

    /// The next event (comments skipped), or None if none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                match id {
                    Some(id) => {
                        return Some(Sse {
                            id,
                            event,
                            data: serde_json::from_str(&data).expect("data is JSON"),
                        });
                    }
                    None => continue,
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Events until one satisfies `stop` (included); panics after 10 s.
    async fn until(&mut self, stop: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let mut out = Vec::new();
        loop {
            let e = self
                .next(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("no matching event; got {out:#?}"));
            let done = stop(&e);
            out.push(e);
            if done {
                return out;
            }
        }
    }
}

/// The seqs `/v1/changes` shows `token` after `since`.
async fn change_seqs(app: &TestApp, token: &str, since: u64) -> Vec<u64> {
    let page = expect_json(
        app.get(&format!("/v1/changes?since={since}&limit=500"), token)
            .await,
        StatusCode::OK,
    )
    .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn resuming_with_last_event_id_gets_exactly_the_missed_events() {
    let app = spawn_app().await;
    let mut s = Stream::open(&app, &app.admin, None).await;
    let a = app
        .create_lead(&app.admin, json!({"email": "live-a@example.com"}))
        .await;
    let seen = s
        .until(|e| e.event == "lead.created" && e.data["id"] == a["id"])
        .await;
    let last = seen.last().unwrap().clone();
    assert_eq!(last.data["event"], "lead.created");
    assert_eq!(last.data["seq"], last.id);
    assert_eq!(last.data["lead_id"], a["id"]);
    // Started at the head: nothing from before the stream opened.
    let first = seen.first().unwrap().id;
    assert_eq!(change_seqs(&app, &app.admin, first - 1).await[0], first);
    drop(s);

    // Missed while disconnected: a lead, a note, an update, a task.
    let b = app
        .create_lead(&app.admin, json!({"email": "live-b@example.com"}))
        .await;
    let bid = b["id"].as_str().unwrap();
    app.post(
        &format!("/v1/leads/{bid}/activities"),
        &app.admin,
        &json!({"kind": "note", "text": "missed"}),
    )
    .await;
    app.patch(
        &format!("/v1/leads/{bid}"),
        &app.admin,
        &json!({"company": "Missed Co"}),
    )
    .await;
    let task = expect_json(
        app.post(
            "/v1/tasks",
            &app.admin,
            &json!({"title": "call", "lead_id": bid}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let missed = change_seqs(&app, &app.admin, last.id).await;
    assert!(missed.len() >= 5, "{missed:?}");

    let mut s = Stream::open(&app, &app.admin, Some(last.id)).await;
    let mut got = Vec::new();
    for _ in 0..missed.len() {
        got.push(
            s.next(Duration::from_secs(10))
                .await
                .expect("a missed event"),
        );
    }
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), missed);
    let names: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
    for want in [
        "lead.created",
        "activity.created",
        "lead.updated",
        "task.created",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let t = got.iter().find(|e| e.event == "task.created").unwrap();
    assert_eq!(t.data["id"], task["id"]);
    // Nothing more until something happens; then it arrives live.
    assert!(s.next(Duration::from_millis(300)).await.is_none());
    let c = app
        .create_lead(&app.admin, json!({"email": "live-c@example.com"}))
        .await;
    let live = s
        .until(|e| e.event == "lead.created" && e.data["id"] == c["id"])
        .await;
    assert!(live[0].id > *missed.last().unwrap());

    // ?since= works like Last-Event-ID; a bad one is a 422 naming it.
    let res = app.get("/v1/events?since=x", &app.admin).await;
    assert_invalid(res, "since").await;
    let res = app
        .req(reqwest::Method::GET, "/v1/events", &app.admin)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_invalid(res, "Last-Event-ID").await;
    let res = app.client.get(app.url("/v1/events")).send().await.unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    // A seq past the newest change (from before a restore, say) would hide every change up
    // to it: a 422, on the feed and on the stream alike.
    let head = live.last().unwrap().id;
    let far = head + 100_000;
    let res = app
        .get(&format!("/v1/changes?since={far}"), &app.admin)
        .await;
    let p = assert_invalid(res, "since").await;
    assert!(p.to_string().contains("newest change"), "{p}");
    let res = app
        .req(reqwest::Method::GET, "/v1/events", &app.admin)
        .header("last-event-id", far.to_string())
        .send()
        .await
        .unwrap();
    assert_invalid(res, "Last-Event-ID").await;
    assert_invalid(
        app.get(&format!("/v1/events?since={far}"), &app.admin)
            .await,
        "since",
    )
    .await;
}

#[tokio::test]
async fn a_replay_holds_every_seq_the_feed_lists_even_for_an_erased_leads_notification() {
    let app = spawn_app().await;
    let (r1, _) = app.rep("erase-r1", None).await;
    let (r2, _) = app.rep("erase-r2", None).await;
    let lead = app
        .create_lead(
            &app.admin,
            json!({"email": "erased@example.com", "owner_id": r1}),
        )
        .await;
    let id = lead["id"].as_str().unwrap();
    let before = change_seqs(&app, &app.admin, 0).await;
    let since = *before.last().unwrap();
    // Reassigning notifies the new owner; erasing the lead then removes that notification.
    expect_json(
        app.post(
            &format!("/v1/leads/{id}/assign"),
            &app.admin,
            &json!({"owner_id": r2}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let res = app.delete(&format!("/v1/leads/{id}"), &app.admin).await;
    assert!(res.status().is_success(), "{}", res.status());
    let listed = change_seqs(&app, &app.admin, since).await;
    let mut s = Stream::open(&app, &app.admin, Some(since)).await;
    let mut got = Vec::new();
    for _ in 0..listed.len() {
        got.push(
            s.next(Duration::from_secs(10))
                .await
                .expect("a replayed event"),
        );
    }
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), listed);
    assert!(
        got.iter().any(|e| e.data["entity"] == "notification"),
        "{got:#?}"
    );
}

#[tokio::test]
async fn a_reps_stream_never_shows_another_reps_leads() {
    let app = spawn_app().await;
    let (r1, t1) = app.rep("live-r1", None).await;
    let (r2, t2) = app.rep("live-r2", None).await;
    let mut s1 = Stream::open(&app, &t1, Some(0)).await;
    let mut s2 = Stream::open(&app, &t2, None).await;
    let mut theirs = Vec::new();
    for i in 0..3 {
        let l = app
            .create_lead(
                &app.admin,
                json!({"email": format!("other{i}@example.com"), "owner_id": r2}),
            )
            .await;
        theirs.push(l["id"].as_str().unwrap().to_owned());
        app.post(
            &format!("/v1/leads/{}/activities", theirs[i]),
            &app.admin,
            &json!({"kind": "note", "text": "not for r1"}),
        )
        .await;
    }
    let mine = app
        .create_lead(
            &app.admin,
            json!({"email": "mine@example.com", "owner_id": r1}),
        )
        .await;
    // r1 reads everything from the start of the log up to their own lead.
    let seen = s1
        .until(|e| e.event == "lead.created" && e.data["id"] == mine["id"])
        .await;
    for e in &seen {
        for other in &theirs {
            assert_ne!(e.data["lead_id"].as_str(), Some(other.as_str()), "{e:#?}");
            assert_ne!(e.data["id"].as_str(), Some(other.as_str()), "{e:#?}");
        }
        if e.event.starts_with("user.") {
            assert_eq!(e.data["id"].as_str(), Some(r1.as_str()), "{e:#?}");
        }
    }
    // The assignment notification is r1's alone.
    let notes: Vec<&Sse> = seen
        .iter()
        .filter(|e| e.data["entity"] == "notification")
        .collect();
    for n in &notes {
        assert_eq!(
            n.data["data"]["recipient_id"].as_str(),
            Some(r1.as_str()),
            "{n:#?}"
        );
    }
    // r2 sees their own leads.
    let theirs_seen = s2
        .until(|e| {
            e.event == "lead.created" && e.data["id"].as_str() == theirs.last().map(String::as_str)
        })
        .await;
    assert!(theirs_seen.iter().all(|e| e.data["lead_id"] != mine["id"]));
}
