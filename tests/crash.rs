//! Crash safety of the real binary: 16 clients create leads concurrently, the server is
//! SIGKILLed mid-load, restarted on the same data directory, and every lead whose create was
//! acknowledged must be there, intact. Five rounds on one data directory.
//!
//! The search index after a crash: a large import is SIGKILLed while the index trails it, and
//! after the restart the index must hold exactly the stored leads, each once, erased ones never.

use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const ROUNDS: usize = 5;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts the binary; on the first start also returns the admin token it prints.
async fn start(dir: &std::path::Path) -> (Server, Option<String>) {
    start_with(dir, &[]).await
}

async fn start_with(dir: &std::path::Path, extra: &[&str]) -> (Server, Option<String>) {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_leadline"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .arg("--plugins-dir")
        .arg(dir.join("plugins"))
        .env("LEADLINE_LOG", "warn")
        // The search checks compare exact totals with the store: count every match.
        .env("LEADLINE_SEARCH_COUNT_LIMIT", "1000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start leadline");
    let stdout = child.stdout.take().expect("stdout");
    let token = Arc::new(Mutex::new(None));
    let token_w = token.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(t) = line.strip_prefix("LEADLINE_ADMIN_TOKEN=") {
                *token_w.lock().expect("lock") = Some(t.to_owned());
            }
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let server = Server { child, base };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = token.lock().expect("lock").clone();
    (server, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut server, token) = start(dir.path()).await;
    let token = token.expect("first start prints the admin token");
    // email → (id, name) of every acknowledged create
    let acked: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();

    for round in 0..ROUNDS {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (client, base, token, acked) = (
                client.clone(),
                server.base.clone(),
                token.clone(),
                acked.clone(),
            );
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let email = format!("r{round}-c{c}-{i}@crash.example.com");
                    let name = format!("Crash {round}/{c}/{i} 王");
                    let res = client
                        .post(format!("{base}/v1/leads"))
                        .bearer_auth(&token)
                        .json(&json!({"email": email, "name": name, "company": "Crash Co", "tags": ["crash"]}))
                        .send()
                        .await;
                    let Ok(res) = res else { break };
                    if res.status() != reqwest::StatusCode::CREATED {
                        break;
                    }
                    let Ok(body) = res.json::<Value>().await else { break };
                    let id = body["id"].as_str().expect("id").to_owned();
                    acked.lock().expect("lock").insert(email, (id, name));
                }
            }));
        }
        // Let the load build up, then kill without warning.
        let before = acked.lock().expect("lock").len();
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().expect("lock").len() < before + 200 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.child.kill().expect("SIGKILL");
        server.child.wait().expect("reap");
        for t in tasks {
            t.await.expect("client task");
        }
        let (restarted, again) = start(dir.path()).await;
        assert!(again.is_none(), "a restart must not create another admin");
        server = restarted;

        let acked_now = acked.lock().expect("lock").clone();
        assert!(
            acked_now.len() >= before + 200,
            "round {round}: too few creates acknowledged"
        );
        let client = reqwest::Client::new();
        for (email, (id, name)) in &acked_now {
            let res = client
                .get(format!("{}/v1/leads/{id}", server.base))
                .bearer_auth(&token)
                .send()
                .await
                .expect("get");
            assert_eq!(
                res.status(),
                reqwest::StatusCode::OK,
                "round {round}: acknowledged lead {email} lost"
            );
            let lead: Value = res.json().await.expect("json");
            assert_eq!(lead["email"], email.as_str());
            assert_eq!(lead["name"], name.as_str());
            assert_eq!(lead["company"], "Crash Co");
        }
        // Nothing half-written: every stored lead is whole and the tag index agrees with it.
        let listed = list_all(
            &client,
            &server.base,
            &token,
            "/v1/leads?tag=crash&limit=500",
        )
        .await;
        for l in &listed {
            assert_eq!(l["company"], "Crash Co");
            assert!(
                l["email"]
                    .as_str()
                    .is_some_and(|e| e.ends_with("@crash.example.com"))
            );
        }
        let seen = listed.len();
        assert!(
            seen >= acked_now.len(),
            "round {round}: list shows {seen} of {} acknowledged",
            acked_now.len()
        );
    }
}

/// Rounds of the search test: each imports in the background and is SIGKILLed mid-import.
const SEARCH_ROUNDS: usize = 2;
/// Rows of each background import (the kill comes long before its end).
const BULK_ROWS: usize = 20_000;
/// Every probe lead's name holds this word.
const PROBE: &str = "crashprobe";

/// A probe lead's name and email. `tag` is a letter, digits and `q` of a fixed width, so it is
/// one token, never a prefix of another tag and never a one-typo neighbour (it has digits):
/// searching the whole name finds that lead alone.
fn probe_row(tag: &str) -> (String, String) {
    (
        format!("Crashprobe Person {tag}"),
        format!("{tag}@probe.example.com"),
    )
}

fn probe_csv(prefix: &str, rows: usize) -> String {
    let mut csv = String::from("name,email\n");
    for i in 0..rows {
        let (name, email) = probe_row(&format!("{prefix}{i:06}q"));
        csv.push_str(&format!("{name},{email}\n"));
    }
    csv
}

/// `/readyz`: its status and its body (JSON when 200, the problem otherwise).
async fn readyz(client: &reqwest::Client, base: &str) -> Option<(u16, String)> {
    let res = client.get(format!("{base}/readyz")).send().await.ok()?;
    let status = res.status().as_u16();
    Some((status, res.text().await.ok()?))
}

/// Waits (60 s at most) until the index has applied every change; returns that `/readyz`.
async fn wait_indexed(client: &reqwest::Client, base: &str, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        if let Some((200, body)) = readyz(client, base).await {
            let ready: Value = serde_json::from_str(&body).expect("readyz json");
            if ready["search_lag"] == 0 {
                return ready;
            }
            last = Some(ready);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the search index did not catch up in 60 s; last /readyz: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn import_csv(client: &reqwest::Client, base: &str, token: &str, csv: String) -> Value {
    let res = client
        .post(format!("{base}/v1/leads/import"))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("import");
    assert_eq!(res.status(), reqwest::StatusCode::OK, "import");
    res.json().await.expect("import json")
}

/// Every item of a cursor-paged list, page after page; None when a request fails (the server
/// may be restarting).
async fn try_list_all(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    path_and_query: &str,
) -> Option<Vec<Value>> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}{path_and_query}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let res = client.get(url).bearer_auth(token).send().await.ok()?;
        let page: Value = res.json().await.ok()?;
        items.extend(page["items"].as_array()?.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Some(items),
        }
    }
}

/// Every item of a cursor-paged list; the server must answer.
async fn list_all(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    path_and_query: &str,
) -> Vec<Value> {
    try_list_all(client, base, token, path_and_query)
        .await
        .unwrap_or_else(|| panic!("listing {path_and_query}"))
}

/// Every stored lead: id → name.
async fn stored_leads(
    client: &reqwest::Client,
    base: &str,
    token: &str,
) -> HashMap<String, String> {
    let mut leads = HashMap::new();
    for l in list_all(client, base, token, "/v1/leads?limit=500").await {
        let id = l["id"].as_str().expect("id").to_owned();
        let name = l["name"].as_str().unwrap_or_default().to_owned();
        assert!(
            leads.insert(id.clone(), name).is_none(),
            "lead {id} listed twice"
        );
    }
    leads
}

/// Every lead hit of a search, page by page (100 a page), and the total the first page gave.
async fn search_leads(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    q: &str,
) -> (u64, Vec<String>) {
    let mut hits = Vec::new();
    let mut total = None;
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("q", q), ("type", "lead"), ("limit", "100")];
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let res = client
            .get(format!("{base}/v1/search"))
            .query(&query)
            .bearer_auth(token)
            .send()
            .await
            .expect("search");
        assert_eq!(res.status(), reqwest::StatusCode::OK, "search {q:?}");
        let page: Value = res.json().await.expect("search json");
        let page_total = page["total"].as_u64().expect("total");
        assert_eq!(
            *total.get_or_insert(page_total),
            page_total,
            "search {q:?}: the total changed between pages"
        );
        for item in page["items"].as_array().expect("items") {
            assert_eq!(item["type"], "lead");
            hits.push(item["lead_id"].as_str().expect("lead_id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (total.unwrap_or(0), hits),
        }
    }
}

/// The search index against the store: every stored lead found exactly once by the word all
/// their names share, and no erased lead found at all.
async fn check_index(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    erased: &[(String, String)],
    what: &str,
) -> usize {
    let stored = stored_leads(client, base, token).await;
    for (id, name) in &stored {
        assert!(
            name.to_lowercase().contains(PROBE),
            "{what}: stored lead {id} is not a probe: {name:?}"
        );
    }
    for (id, name) in erased {
        assert!(
            !stored.contains_key(id),
            "{what}: erased lead {id} ({name}) is stored again"
        );
    }
    let (total, hits) = search_leads(client, base, token, PROBE).await;
    let mut seen = HashSet::new();
    let twice: Vec<&String> = hits.iter().filter(|id| !seen.insert(*id)).collect();
    assert!(
        twice.is_empty(),
        "{what}: {} leads found more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    let found_erased: Vec<&(String, String)> =
        erased.iter().filter(|(id, _)| seen.contains(id)).collect();
    assert!(
        found_erased.is_empty(),
        "{what}: erased leads found by {PROBE:?}: {found_erased:?}"
    );
    let missing: Vec<&String> = stored.keys().filter(|id| !seen.contains(id)).collect();
    let unknown: Vec<&String> = seen
        .iter()
        .filter(|id| !stored.contains_key(**id))
        .copied()
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{what}: {} stored leads not found (e.g. {:?}), {} hits not stored (e.g. {:?})",
        missing.len(),
        &missing[..missing.len().min(5)],
        unknown.len(),
        &unknown[..unknown.len().min(5)]
    );
    assert_eq!(
        total,
        stored.len() as u64,
        "{what}: search total vs stored leads"
    );
    assert_eq!(
        hits.len(),
        stored.len(),
        "{what}: hits paged vs stored leads"
    );
    for (id, name) in erased {
        let (total, hits) = search_leads(client, base, token, name).await;
        assert!(
            total == 0 && hits.is_empty(),
            "{what}: erased lead {id} found by its name {name:?}: total {total}, hits {hits:?}"
        );
    }
    stored.len()
}

/// A probe lead of the first import, by number: its id and name, checked to find it alone.
async fn first_probe(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    by_name: &HashMap<String, String>,
    i: usize,
) -> (String, String) {
    let (name, _) = probe_row(&format!("k{i:06}q"));
    let id = by_name[&name].clone();
    let (total, hits) = search_leads(client, base, token, &name).await;
    assert_eq!((total, &hits), (1, &vec![id.clone()]), "search {name:?}");
    (id, name)
}

async fn erase_lead(client: &reqwest::Client, base: &str, token: &str, id: &str) {
    let res = client
        .delete(format!("{base}/v1/leads/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), reqwest::StatusCode::NO_CONTENT, "delete {id}");
}

/// Whether the changelog holds a change with a seq of at least `seq`.
async fn changelog_reached(client: &reqwest::Client, base: &str, token: &str, seq: u64) -> bool {
    let res = client
        .get(format!("{base}/v1/changes?since={}&limit=1", seq - 1))
        .bearer_auth(token)
        .send()
        .await
        .expect("changes");
    // A since past the newest change is a 422: not reached yet.
    if res.status() == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
        return false;
    }
    assert_eq!(res.status(), reqwest::StatusCode::OK, "changes");
    let page: Value = res.json().await.expect("changes json");
    !page["items"].as_array().expect("items").is_empty()
}

/// Regression guard for the search index's crash recovery: the index commits at most twice a
/// second and resumes from the seq in its last commit, so a SIGKILL mid-import leaves it
/// behind the store; after a restart it must catch up to exactly the store: each lead once,
/// erased leads never. Each round erases a few leads while the import runs, just before the
/// kill, so their erasure is most likely not yet in the index when it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_index_survives_sigkill_during_a_batch_import() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut server, token) = start(dir.path()).await;
    let token = token.expect("first start prints the admin token");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    let first = import_csv(&client, &server.base, &token, probe_csv("k", 200)).await;
    assert_eq!(first["created"], 200, "first import: {first}");
    wait_indexed(&client, &server.base, "first import").await;
    let by_name: HashMap<String, String> = stored_leads(&client, &server.base, &token)
        .await
        .into_iter()
        .map(|(id, name)| (name, id))
        .collect();
    assert_eq!(by_name.len(), 200);
    // Erase every tenth.
    let mut erased: Vec<(String, String)> = Vec::new();
    for i in (0..200).step_by(10) {
        let (id, name) = first_probe(&client, &server.base, &token, &by_name, i).await;
        erase_lead(&client, &server.base, &token, &id).await;
        erased.push((id, name));
    }

    for round in 0..SEARCH_ROUNDS {
        let what = format!("round {round}");
        let before = wait_indexed(&client, &server.base, &what).await;
        let base_seq = before["changelog_seq"].as_u64().expect("changelog_seq");
        // Kill at a different depth each round (every imported lead is two changes).
        let kill_at = base_seq + 4000 + 6000 * round as u64;
        let mut late = Vec::new();
        for j in 0..5 {
            let i = 5 + 10 * (5 * round + j);
            late.push(first_probe(&client, &server.base, &token, &by_name, i).await);
        }

        let import = tokio::spawn({
            let (client, base, token) = (client.clone(), server.base.clone(), token.clone());
            let csv = probe_csv(&format!("b{round}"), BULK_ROWS);
            async move {
                client
                    .post(format!("{base}/v1/leads/import"))
                    .bearer_auth(&token)
                    .header("content-type", "text/csv")
                    .body(csv)
                    .send()
                    .await
            }
        });
        // Wait until the changelog is that deep into the import (or the import is over).
        let deadline = Instant::now() + Duration::from_secs(30);
        let why = loop {
            if import.is_finished() {
                break "the import finished first";
            }
            if changelog_reached(&client, &server.base, &token, kill_at).await {
                break "mid-import";
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the changelog did not reach seq {kill_at} (from {base_seq}) within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // All at once: each waits for the writer, which is busy with the import.
        let erasing: Vec<_> = late
            .iter()
            .map(|(id, _)| {
                let (client, base, token, id) = (
                    client.clone(),
                    server.base.clone(),
                    token.clone(),
                    id.clone(),
                );
                tokio::spawn(async move { erase_lead(&client, &base, &token, &id).await })
            })
            .collect();
        for e in erasing {
            e.await.expect("erase task");
        }
        erased.extend(late);
        let last = readyz(&client, &server.base).await;
        server.child.kill().expect("SIGKILL");
        server.child.wait().expect("reap");
        let import = import.await.expect("import task");
        eprintln!(
            "{what}: changelog from {base_seq}, SIGKILL at {:?} ({why}, seq {kill_at} reached); \
             /readyz just before: {last:?}; import answered: {}",
            started.elapsed(),
            import.is_ok()
        );

        let (restarted, again) = start(dir.path()).await;
        assert!(again.is_none(), "a restart must not create another admin");
        server = restarted;
        let caught_up = wait_indexed(&client, &server.base, &what).await;
        let stored = check_index(&client, &server.base, &token, &erased, &what).await;
        eprintln!(
            "{what}: after restart /readyz {caught_up}; {stored} leads, each found once; \
             {} erased, none found; at {:?}",
            erased.len(),
            started.elapsed()
        );
        assert!(
            stored > by_name.len() - erased.len(),
            "{what}: no row of the killed import was stored"
        );
    }
}

/// Every reminder, escalation and reclaim of `leads` SLA timers, counted per lead and kind.
async fn sla_notes(
    c: &reqwest::Client,
    base: &str,
    tokens: &[String],
) -> HashMap<(String, String), usize> {
    let mut counts = HashMap::new();
    for t in tokens {
        let page: Value = c
            .get(format!("{base}/v1/notifications?limit=500"))
            .bearer_auth(t)
            .send()
            .await
            .expect("notifications")
            .json()
            .await
            .expect("json");
        for n in page["items"].as_array().expect("items") {
            let key = (
                n["lead_id"].as_str().unwrap_or("").to_owned(),
                n["kind"].as_str().unwrap_or("").to_owned(),
            );
            *counts.entry(key).or_default() += 1;
        }
    }
    counts
}

/// Pending SLA timers survive SIGKILL: after a restart past their due time each fires exactly
/// once — also when the server is killed again while it is firing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_timers_fire_exactly_once_across_sigkill() {
    const LEADS: usize = 60;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = reqwest::Client::new();
    let (server, admin) = start_with(dir.path(), &["--test-clock", "2026-11-23T08:00:00Z"]).await;
    let admin = admin.expect("admin token");
    let base = server.base.clone();
    let post = |path: &str, token: &str, body: Value| {
        c.post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let manager: Value = post(
        "/v1/users",
        &admin,
        json!({"name": "m", "role": "manager", "capacity": 0}),
    )
    .await
    .expect("manager")
    .json()
    .await
    .expect("json");
    let mut tokens = Vec::new();
    for who in ["m", "a", "b"] {
        let id = if who == "m" {
            manager["id"].as_str().expect("id").to_owned()
        } else {
            let u: Value = post(
                "/v1/users",
                &admin,
                json!({"name": who, "role": "rep", "manager_id": manager["id"]}),
            )
            .await
            .expect("rep")
            .json()
            .await
            .expect("json");
            u["id"].as_str().expect("id").to_owned()
        };
        let t: Value = post(&format!("/v1/users/{id}/tokens"), &admin, json!({}))
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        tokens.push(t["token"].as_str().expect("token").to_owned());
    }
    let mut leads = Vec::new();
    for i in 0..LEADS {
        let l: Value = post(
            "/v1/leads",
            &admin,
            json!({"email": format!("k{i}@example.com")}),
        )
        .await
        .expect("lead")
        .json()
        .await
        .expect("json");
        assert!(l["owner_id"].is_string(), "{l}");
        leads.push(l["id"].as_str().expect("id").to_owned());
    }
    // Kill with every timer pending; the server was down when they fell due.
    drop(server);
    let (server, _) = start_with(dir.path(), &["--test-clock", "2026-11-23T17:00:00Z"]).await;
    // Kill again while it fires them (it starts firing as soon as it is up).
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(server);
    let (server, _) = start_with(dir.path(), &["--test-clock", "2026-11-23T17:00:00Z"]).await;
    let base = server.base.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = sla_notes(&c, &base, &tokens).await;
        let done = leads.iter().all(|l| {
            ["sla.reminder", "sla.escalated", "lead.reclaimed"]
                .iter()
                .all(|k| counts.contains_key(&(l.clone(), (*k).to_owned())))
        });
        if done || Instant::now() > deadline {
            for l in &leads {
                for k in ["sla.reminder", "sla.escalated", "lead.reclaimed"] {
                    assert_eq!(
                        counts.get(&(l.clone(), k.to_owned())).copied().unwrap_or(0),
                        1,
                        "{k} for {l}"
                    );
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing fires twice later either.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = sla_notes(&c, &base, &tokens).await;
    let sla_kinds = ["sla.reminder", "sla.escalated", "lead.reclaimed"];
    assert!(
        counts
            .iter()
            .filter(|((_, k), _)| sla_kinds.contains(&k.as_str()))
            .all(|(_, n)| *n == 1),
        "each SLA step once per lead"
    );
}

/// What the crash test's webhook receiver got: each delivery's id, lead and seq, in arrival
/// order (recorded as each request arrives, before it is answered).
type Arrivals = Arc<Mutex<Vec<(String, String, u64)>>>;

/// A slow webhook receiver on localhost (each answer takes 20 ms), so a kill finds attempts
/// in flight.
async fn slow_receiver() -> (String, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    let app = axum::Router::new().fallback(axum::routing::post(move |body: axum::body::Bytes| {
        let seen = seen.clone();
        async move {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen.lock().expect("lock").push((
                v["delivery_id"].as_str().unwrap_or("").to_owned(),
                v["lead_id"].as_str().unwrap_or("").to_owned(),
                v["seq"].as_u64().unwrap_or(0),
            ));
            tokio::time::sleep(Duration::from_millis(20)).await;
            axum::http::StatusCode::NO_CONTENT
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, arrivals)
}

/// Every delivery of a webhook: id → (lead, seq, status).
async fn all_deliveries(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    hook: &str,
) -> HashMap<String, (String, u64, String)> {
    let path = format!("/v1/webhooks/{hook}/deliveries?limit=500");
    list_all(c, base, token, &path)
        .await
        .into_iter()
        .map(|d| {
            (
                d["id"].as_str().expect("id").to_owned(),
                (
                    d["lead_id"].as_str().unwrap_or("").to_owned(),
                    d["seq"].as_u64().expect("seq"),
                    d["status"].as_str().expect("status").to_owned(),
                ),
            )
        })
        .collect()
}

/// Webhook deliveries survive SIGKILL mid-delivery: after a restart every delivery written
/// before the kill reaches the receiver at least once (the same delivery id), and each lead's
/// deliveries are first received in the order of their changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_survive_sigkill_mid_delivery() {
    const LEADS: usize = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("leadline.toml");
    std::fs::write(&config, "[webhooks]\nallow_private_destinations = true\n").expect("config");
    let config = config.to_str().expect("utf-8 path").to_owned();
    let args = ["--test-clock", "2026-11-23T08:00:00Z", "--config", &config];
    let (url, arrivals) = slow_receiver().await;
    let c = reqwest::Client::new();
    let (server, admin) = start_with(dir.path(), &args).await;
    let admin = admin.expect("admin token");
    let hook: Value = c
        .post(format!("{}/v1/webhooks", server.base))
        .bearer_auth(&admin)
        .json(&json!({"url": url, "events": ["lead.*", "activity.*"]}))
        .send()
        .await
        .expect("webhook")
        .json()
        .await
        .expect("json");
    let hook = hook["id"].as_str().expect("webhook id").to_owned();
    // Every lead: created (with its capture activity), then two updates.
    let mut writers = Vec::new();
    for w in 0..4 {
        let (c, base, admin) = (c.clone(), server.base.clone(), admin.clone());
        writers.push(tokio::spawn(async move {
            for i in (w..LEADS).step_by(4) {
                let l: Value = c
                    .post(format!("{base}/v1/leads"))
                    .bearer_auth(&admin)
                    .json(&json!({"email": format!("hook{i}@example.com")}))
                    .send()
                    .await
                    .expect("lead")
                    .json()
                    .await
                    .expect("json");
                let id = l["id"].as_str().expect("lead id").to_owned();
                for n in 0..2 {
                    let res = c
                        .patch(format!("{base}/v1/leads/{id}"))
                        .bearer_auth(&admin)
                        .header("content-type", "application/merge-patch+json")
                        .body(json!({"company": format!("Co {n}")}).to_string())
                        .send()
                        .await
                        .expect("patch");
                    assert_eq!(res.status(), reqwest::StatusCode::OK);
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let written = all_deliveries(&c, &server.base, &admin, &hook).await;
    assert!(written.len() >= LEADS * 4, "{} deliveries", written.len());
    // Kill while the worker is busy delivering.
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().expect("lock").len() < 20 {
        assert!(Instant::now() < deadline, "nothing was delivered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(server);
    let before_restart = arrivals.lock().expect("lock").len();
    let (server, _) = start_with(dir.path(), &args).await;
    // Attempts cut short by the kill are made again at once; move the clock too, in case one
    // failed and waits for its retry.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = all_deliveries(&c, &server.base, &admin, &hook).await;
        if all.values().all(|(_, _, s)| s == "delivered") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries still pending after 60 s"
        );
        c.post(format!("{}/v1/admin/clock", server.base))
            .bearer_auth(&admin)
            .json(&json!({"advance_seconds": 3600}))
            .send()
            .await
            .expect("clock");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = arrivals.lock().expect("lock").clone();
    let received: HashSet<&str> = got.iter().map(|(d, _, _)| d.as_str()).collect();
    for (id, (lead, seq, _)) in &written {
        assert!(
            received.contains(id.as_str()),
            "delivery {id} (lead {lead}, seq {seq}) never received"
        );
    }
    // Per lead, first arrivals in change order: nothing of a lead before an earlier change
    // of it was received.
    let mut first_seen = HashSet::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for (d, lead, seq) in &got {
        if !first_seen.insert(d.clone()) {
            continue;
        }
        let prev = last_seq.insert(lead.clone(), *seq).unwrap_or(0);
        assert!(prev < *seq, "lead {lead}: seq {seq} arrived after {prev}");
    }
    eprintln!(
        "webhook crash test: {} deliveries, {before_restart} arrivals before the kill, {} in all ({} repeats)",
        written.len(),
        got.len(),
        got.len() - received.len()
    );
}

/// Copies the shipped `plugins/` (scripts, sequences, templates) into `to`.
fn copy_shipped_plugins(to: &std::path::Path) {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).expect("plugins dir");
        for entry in std::fs::read_dir(from).expect("read plugins") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if path.is_dir() {
                if entry.file_name() != "tests" {
                    copy(&path, &to.join(entry.file_name()));
                }
            } else {
                std::fs::copy(&path, to.join(entry.file_name())).expect("copy plugin");
            }
        }
    }
    copy(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins"),
        to,
    );
}

/// (lead, template) → how many messages the outbox holds (none while the server is away).
async fn outbox(
    c: &reqwest::Client,
    base: &str,
    token: &str,
) -> std::collections::HashMap<(String, String), usize> {
    let mut counts = std::collections::HashMap::new();
    let mails = try_list_all(c, base, token, "/v1/emails?limit=500").await;
    for m in mails.into_iter().flatten() {
        let key = (
            m["lead_id"].as_str().unwrap_or("").to_owned(),
            m["template"].as_str().unwrap_or("").to_owned(),
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Waits until every lead has one message of each of `templates` (or the deadline), then
/// asserts exactly one each.
async fn expect_each_once(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    leads: &[String],
    templates: &[&str],
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = outbox(c, base, token).await;
        let all = leads.iter().all(|l| {
            templates
                .iter()
                .all(|t| counts.contains_key(&(l.clone(), (*t).to_owned())))
        });
        if all || Instant::now() > deadline {
            for l in leads {
                for t in templates {
                    assert_eq!(
                        counts
                            .get(&(l.clone(), (*t).to_owned()))
                            .copied()
                            .unwrap_or(0),
                        1,
                        "{t} for {l}"
                    );
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sequence_steps_run_once_across_sigkill() {
    const LEADS: usize = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    copy_shipped_plugins(&dir.path().join("plugins"));
    let c = reqwest::Client::new();
    let (server, admin) = start_with(dir.path(), &["--test-clock", "2026-11-23T08:00:00Z"]).await;
    let admin = admin.expect("admin token");
    let mut leads = Vec::new();
    for i in 0..LEADS {
        let l: Value = c
            .post(format!("{}/v1/leads", server.base))
            .bearer_auth(&admin)
            .json(&json!({"email": format!("n{i}@example.com")}))
            .send()
            .await
            .expect("lead")
            .json()
            .await
            .expect("json");
        leads.push(l["id"].as_str().expect("id").to_owned());
    }
    // Killed while the first step runs for some leads and not yet for others.
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(server);
    let weeks = [
        ("2026-11-23T08:00:00Z", "welcome_1"),
        ("2026-11-30T08:00:10Z", "welcome_2"),
        ("2026-12-07T08:00:20Z", "welcome_3"),
        ("2026-12-14T08:00:30Z", "welcome_4"),
    ];
    let mut sent = Vec::new();
    for (at, template) in weeks {
        sent.push(template);
        // Start when the step is due: it runs at once; kill it mid-way, start again.
        let (server, _) = start_with(dir.path(), &["--test-clock", at]).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(server);
        let (server, _) = start_with(dir.path(), &["--test-clock", at]).await;
        expect_each_once(&c, &server.base, &admin, &leads, &sent).await;
        drop(server);
    }
    // Every step is on each timeline once: 4 emails and 3 waits.
    let (server, _) = start_with(dir.path(), &["--test-clock", "2026-12-14T08:00:30Z"]).await;
    for l in &leads {
        let tl: Value = c
            .get(format!("{}/v1/leads/{l}/timeline?limit=500", server.base))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("timeline")
            .json()
            .await
            .expect("json");
        let steps: Vec<i64> = tl["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|i| i["kind"] == "sequence_step" && i["data"]["sequence"] == "welcome")
            .map(|i| i["data"]["step"].as_i64().unwrap_or(0))
            .collect();
        let mut sorted = steps.clone();
        sorted.sort();
        assert_eq!(sorted, [1, 2, 3, 4, 5, 6, 7], "{l}: {steps:?}");
    }
}
