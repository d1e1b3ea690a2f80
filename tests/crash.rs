//! Crash safety of the real binary: 16 clients create leads concurrently, the server is
//! SIGKILLed mid-load, restarted on the same data directory, and every lead whose create was
//! acknowledged must be there, intact. Five rounds on one data directory.

use serde_json::{Value, json};
use std::collections::HashMap;
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
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_leadline"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .arg("--plugins-dir")
        .arg(dir.join("plugins"))
        .env("LEADLINE_LOG", "warn")
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
        let mut seen = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/leads?tag=crash&limit=500", server.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = client
                .get(url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            for l in page["items"].as_array().expect("items") {
                assert_eq!(l["company"], "Crash Co");
                assert!(
                    l["email"]
                        .as_str()
                        .is_some_and(|e| e.ends_with("@crash.example.com"))
                );
                seen += 1;
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert!(
            seen >= acked_now.len(),
            "round {round}: list shows {seen} of {} acknowledged",
            acked_now.len()
        );
    }
}
