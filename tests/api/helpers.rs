//! Starts the real server in-process on a random port with its own temporary data directory,
//! and gives tests typed helpers to talk HTTP to it as a frontend would.

use leadline::clock::SystemClock;
use leadline::config::Config;
use leadline::startup::Application;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

static TRACING: Once = Once::new();

/// Logs only when TEST_LOG is set.
fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_test_writer()
                .try_init();
        }
    });
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    /// The admin token printed on first start.
    pub admin: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn config_for(dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        plugins_dir: PathBuf::from(dir).join("plugins"),
        ..Config::default()
    }
}

async fn start(
    config: Config,
) -> (
    SocketAddr,
    Option<String>,
    oneshot::Sender<()>,
    JoinHandle<anyhow::Result<()>>,
) {
    let app = Application::build(config, Arc::new(SystemClock))
        .await
        .expect("server builds");
    let addr = app.local_addr();
    let token = app.admin_token().map(str::to_owned);
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    (addr, token, tx, handle)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server after letting the test adjust its configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config_for(dir.path());
    adjust(&mut config);
    let (addr, token, stop, server) = start(config).await;
    TestApp {
        addr,
        base: format!("http://{addr}"),
        admin: token.expect("a fresh store prints an admin token"),
        client: reqwest::Client::new(),
        dir,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    /// The server's `/openapi.json` (no token needed), after checking it is served.
    pub async fn openapi(&self) -> Value {
        let res = self
            .client
            .get(self.url("/openapi.json"))
            .send()
            .await
            .expect("GET /openapi.json");
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.expect("/openapi.json is JSON")
    }

    /// Stops the server gracefully and starts it again on the same data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (addr, token, stop, server) = start(config_for(self.dir.path())).await;
        assert!(
            token.is_none(),
            "a restarted store must not create another admin"
        );
        self.addr = addr;
        self.base = format!("http://{addr}");
        self.stop = Some(stop);
        self.server = Some(server);
    }

    /// Stops the server and starts it again on the same data directory and the test's
    /// clock, after letting the test adjust its configuration.
    pub async fn restart_with_clock(
        &mut self,
        clock: Arc<leadline::clock::ManualClock>,
        adjust: impl FnOnce(&mut Config),
    ) {
        self.stop().await;
        let mut config = config_for(self.dir.path());
        adjust(&mut config);
        let app = Application::build(config, clock.clone())
            .await
            .expect("server builds")
            .with_test_clock(clock);
        assert!(
            app.admin_token().is_none(),
            "a restarted store must not create another admin"
        );
        self.addr = app.local_addr();
        self.base = format!("http://{}", self.addr);
        let (stop, rx) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.server = Some(tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        })));
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.expect("server task").expect("server ran cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.req(Method::GET, path, token)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.req(Method::POST, path, token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> Response {
        self.req(Method::PATCH, path, token)
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.req(Method::DELETE, path, token)
            .send()
            .await
            .expect("request")
    }

    /// Creates a lead as `token`, asserting 201, and returns its JSON.
    pub async fn create_lead(&self, token: &str, body: Value) -> Value {
        let res = self.post("/v1/leads", token, &body).await;
        let status = res.status();
        let json: Value = res.json().await.expect("json");
        assert_eq!(status, StatusCode::CREATED, "{json}");
        json
    }

    /// Records an activity as `token`, asserting 201, and returns its JSON.
    pub async fn add_activity(&self, token: &str, body: Value) -> Value {
        expect_json(
            self.post("/v1/activities", token, &body).await,
            StatusCode::CREATED,
        )
        .await
    }

    /// Creates a user (as admin) and a token for them; returns (id, token).
    pub async fn create_user(&self, body: Value) -> (String, String) {
        let res = self.post("/v1/users", &self.admin, &body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let user: Value = res.json().await.expect("json");
        let id = user["id"].as_str().expect("id").to_owned();
        let res = self
            .post(&format!("/v1/users/{id}/tokens"), &self.admin, &json!({}))
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let t: Value = res.json().await.expect("json");
        (id, t["token"].as_str().expect("token").to_owned())
    }

    /// A rep (optionally on a team) with a token.
    pub async fn rep(&self, name: &str, team: Option<&str>) -> (String, String) {
        self.create_user(json!({"name": name, "role": "rep", "team": team}))
            .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Asserts a problem+json response with `status`, returning its body.
pub async fn assert_problem(res: Response, status: StatusCode) -> Value {
    assert_eq!(res.status(), status, "unexpected status");
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        ct.starts_with("application/problem+json"),
        "content-type was {ct}"
    );
    let body: Value = res.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string() && body["type"].is_string() && body["detail"].is_string());
    body
}

/// The field named first in a 422 problem.
pub fn first_field(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or("")
}

/// Starts a server on a clock the test moves (`clock.advance(ms)`), after letting the test
/// adjust its configuration. `restart` brings it back on the system clock.
pub async fn spawn_app_with_clock(
    clock: Arc<leadline::clock::ManualClock>,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config_for(dir.path());
    adjust(&mut config);
    let app = Application::build(config, clock.clone())
        .await
        .expect("server builds")
        .with_test_clock(clock);
    let addr = app.local_addr();
    let admin = app
        .admin_token()
        .expect("a fresh store prints an admin token")
        .to_owned();
    let (stop, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        admin,
        client: reqwest::Client::new(),
        dir,
        stop: Some(stop),
        server: Some(server),
    }
}

/// Asserts `res` has `status`, returning its JSON body (shown when the status is wrong).
/// A lead's activities as the admin sees them, newest first (the first page).
pub async fn activities(app: &TestApp, lead: &str) -> Vec<Value> {
    let page = expect_json(
        app.get(&format!("/v1/leads/{lead}/activities"), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    page["items"].as_array().expect("items").clone()
}

pub async fn expect_json(res: Response, status: StatusCode) -> Value {
    let got = res.status();
    let body: Value = res.json().await.expect("json body");
    assert_eq!(got, status, "{body}");
    body
}

/// Asserts a 422 problem whose first error names `field`, returning the problem.
pub async fn assert_invalid(res: Response, field: &str) -> Value {
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(first_field(&problem), field, "{problem}");
    problem
}

/// Asserts that `v` holds each entry of the object `expected`. A key may be a dotted path
/// (`utm.source`, `errors.0.field`); a missing value counts as `null`.
pub fn assert_fields(v: &Value, expected: Value) {
    for (path, want) in expected.as_object().expect("an object of expected fields") {
        let got = path.split('.').fold(v, |v, k| match k.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[k],
        });
        assert_eq!(got, want, "{path} in {v}");
    }
}
