//! End to end in a real browser: headless Chromium, driven through ChromeDriver's W3C
//! WebDriver HTTP API, visits a small website of our own that embeds `/t.js`, views two
//! pages and submits a plain HTML form to `/f/{key}`. The server must then hold both page
//! views under the snippet's visitor id, stitch that visitor to the lead the form created,
//! credit the lead to the first touch's UTM, and show views and submission in order on the
//! lead's timeline. The snippet also fetches the form a render token, so a submit sooner than
//! a person could type is answered as usual and stores nothing.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`.ci/run` installs them); without
//! them the test fails rather than skipping, so a CI image that lost them cannot go green.

use crate::helpers::*;
use axum::Router;
use axum::response::Html;
use axum::routing::get;
use leadline::clock::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How WebDriver names an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Polls `f` every 50 ms until it gives `Some`, for at most 15 s; panics naming `what`.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// A `chromedriver` child process, killed when dropped (a panicking test included).
struct ChromeDriver {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl ChromeDriver {
    fn spawn() -> Self {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the browser test needs Chromium and ChromeDriver; \
                 .ci/run installs them (apt-get install chromium chromium-driver)"
            );
        }
        // ChromeDriver wants a port number up front: take a free one from the OS.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
        ChromeDriver { child, port, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session on a headless Chromium.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: Option<String>,
    // Declared last: dropped after `Drop for Browser` has ended the session.
    driver: ChromeDriver,
}

impl Browser {
    async fn launch() -> Self {
        let mut driver = ChromeDriver::spawn();
        let base = format!("http://127.0.0.1:{}", driver.port);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited with {status} before it was ready:\n{}",
                    driver.log_tail()
                );
            }
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(res) => res
                    .json::<Value>()
                    .await
                    .ok()
                    .map(|v| v["value"]["ready"] == true),
                Err(_) => None,
            };
            if ready == Some(true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver on port {} not ready after 20 s:\n{}",
                driver.port,
                driver.log_tail()
            );
            sleep(Duration::from_millis(50)).await;
        }
        let mut browser = Browser {
            http,
            base,
            session: None,
            driver,
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync"],
            },
        }}});
        let created = browser.cmd(Method::POST, "/session", Some(caps)).await;
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {created}"));
        browser.session = Some(id.to_owned());
        browser
    }

    /// Sends one WebDriver command and returns its `value`, panicking on a WebDriver error.
    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = match (&self.session, path.starts_with("/session")) {
            (Some(s), false) => format!("{}/session/{s}{path}", self.base),
            _ => format!("{}{path}", self.base),
        };
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = res.status();
        let v: Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON: {e}"));
        assert!(
            status.is_success(),
            "WebDriver {method} {path} → {status}: {}\nchromedriver log:\n{}",
            v["value"],
            self.driver.log_tail()
        );
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn current_url(&self) -> String {
        let v = self.cmd(Method::GET, "/url", None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    async fn source(&self) -> String {
        let v = self.cmd(Method::GET, "/source", None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    async fn execute(&self, script: &str) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element for {css}: {v}"))
            .to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd(
            Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd(
            Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Ends the session, closing Chromium.
    async fn quit(mut self) {
        if let Some(s) = self.session.take() {
            self.cmd(Method::DELETE, &format!("/session/{s}"), None)
                .await;
        }
    }
}

impl Drop for Browser {
    /// After a panic there is no runtime to await on: end the session with a blocking
    /// request so ChromeDriver closes Chromium before the driver itself is killed.
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let addr = ("127.0.0.1", self.driver.port);
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.driver.port
            );
            // ChromeDriver answers once Chromium is closed; it may keep the connection
            // open, so the first bytes of the answer are the signal, not end of stream.
            let _ = s.read(&mut [0; 512]);
        }
    }
}

/// The test's own website on a random port: two pages with the snippet, one with a form
/// posting to Leadline, and the thank-you page the form redirects to.
async fn serve_site(listener: tokio::net::TcpListener, leadline: &str, form_key: &str) {
    let head = |title: &str| {
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
             <script src=\"{leadline}/t.js\"></script></head>"
        )
    };
    let pricing = format!("{}<body><h1>Pricing</h1></body></html>", head("Pricing"));
    let signup = format!(
        "{}<body><h1>Sign up</h1>\
         <form action=\"{leadline}/f/{form_key}\" method=\"post\">\
         <input name=\"name\"><input name=\"email\" type=\"email\"><input name=\"company\">\
         <button type=\"submit\">Start trial</button></form></body></html>",
        head("Sign up")
    );
    let thanks = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Thanks</title>\
                  </head><body><p>Thanks!</p></body></html>";
    let app = Router::new()
        .route("/pricing", get(move || async move { Html(pricing) }))
        .route("/signup", get(move || async move { Html(signup) }))
        .route("/thanks", get(move || async move { Html(thanks) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
}

/// The visitor's record once it has at least `n` page views; exactly `n` is asserted.
async fn visitor_with_views(app: &TestApp, visitor: &str, n: usize) -> Value {
    let path = format!("/v1/visitors/{visitor}");
    let v = eventually(
        &format!("{n} page view(s) of visitor {visitor}"),
        async || {
            let res = app.get(&path, &app.admin).await;
            if res.status() == StatusCode::NOT_FOUND {
                return None;
            }
            let v = expect_json(res, StatusCode::OK).await;
            let views = v["page_views"].as_array().map_or(0, Vec::len);
            (views >= n).then_some(v)
        },
    )
    .await;
    assert_eq!(v["page_views"].as_array().unwrap().len(), n, "{v}");
    v
}

#[tokio::test]
async fn a_visitor_tracked_by_the_snippet_becomes_a_lead_through_a_form() {
    // The server's clock stands still unless the test moves it, so "too fast" is decided by
    // the test, not by how quickly the browser types.
    let clock = Arc::new(ManualClock::new(1_795_420_800_000));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let leadline = app.base.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("site port");
    let site = format!("http://{}", listener.local_addr().unwrap());

    // 1. a form that sends people back to the site, accepting posts from its pages
    let form = expect_json(
        app.post(
            "/v1/forms",
            &app.admin,
            &json!({
                "name": "Trial",
                "fields": [
                    {"name": "name", "label": "Name", "required": true},
                    {"name": "email", "label": "Email", "required": true},
                    {"name": "company", "label": "Company", "required": false},
                ],
                "redirect_url": format!("{site}/thanks"),
                "allowed_origins": [site],
            }),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let key = form["key"]
        .as_str()
        .unwrap_or_else(|| panic!("key in {form}"));
    assert!(form["id"].is_string(), "{form}");
    serve_site(listener, &leadline, key).await;

    let browser = Browser::launch().await;

    // 2. an ad click lands on /pricing: the snippet names the visitor and sends a view
    browser
        .goto(&format!("{site}/pricing?utm_source=google&utm_medium=cpc"))
        .await;
    let visitor = eventually("window.leadline.visitorId", async || {
        let v = browser
            .execute("return window.leadline ? window.leadline.visitorId : null;")
            .await;
        v.as_str().map(str::to_owned)
    })
    .await;
    assert!(
        visitor.len() == 32
            && visitor
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "visitor id {visitor:?} is 32 lowercase hex digits"
    );
    assert_eq!(
        browser
            .execute("return window.leadline.pageViewSent;")
            .await,
        true
    );
    let v = visitor_with_views(&app, &visitor, 1).await;
    assert_eq!(v["visitor_id"], visitor.as_str(), "{v}");
    assert_eq!(v["lead_id"], Value::Null, "not a lead yet: {v}");
    let first = &v["page_views"][0];
    assert_eq!(first["path"], "/pricing", "{v}");
    assert_eq!(first["title"], "Pricing", "{v}");
    assert_eq!(first["utm"]["source"], "google", "{v}");
    assert_eq!(first["utm"]["medium"], "cpc", "{v}");
    clock.advance(60_000);

    // 3. the same visitor (same id) moves on to the sign-up page
    browser.goto(&format!("{site}/signup")).await;
    let v = visitor_with_views(&app, &visitor, 2).await;
    let paths: Vec<&Value> = v["page_views"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["path"])
        .collect();
    assert!(paths.contains(&&json!("/signup")), "{v}");
    let same = browser.execute("return window.leadline.visitorId;").await;
    assert_eq!(same, visitor.as_str(), "the id survives a page change");

    // The snippet fetched the form a render token: a bot submitting at once gets the usual
    // redirect, and nothing is stored.
    let render_token = async || {
        browser
            .execute(
                "var t = document.querySelector('input[name=_ts]'); return t ? t.value : null;",
            )
            .await
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    eventually("the form's render token", render_token).await;
    browser.type_into("input[name=name]", "Bot").await;
    browser
        .type_into("input[name=email]", "bot@example-corp.cn")
        .await;
    browser.click("button[type=submit]").await;
    let thanks = format!("{site}/thanks");
    eventually("the bot's redirect", async || {
        (browser.current_url().await == thanks).then_some(())
    })
    .await;
    let all = expect_json(app.get("/v1/leads", &app.admin).await, StatusCode::OK).await;
    assert_eq!(all["items"], json!([]), "a too-fast submit stores nothing");
    browser.goto(&format!("{site}/signup")).await;
    eventually("the form's render token", render_token).await;
    clock.advance(30_000);

    // 4. they sign up; Leadline redirects them to the site's thank-you page
    browser.type_into("input[name=name]", "王小明").await;
    browser
        .type_into("input[name=email]", "wang@example-corp.cn")
        .await;
    browser.type_into("input[name=company]", "示例科技").await;
    browser.click("button[type=submit]").await;
    let landed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if browser.current_url().await == thanks {
                break;
            }
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if landed.is_err() {
        panic!(
            "timed out waiting for the redirect to {thanks}; the browser is at {}:\n{}",
            browser.current_url().await,
            browser.source().await
        );
    }
    browser.quit().await;

    // 5. the visitor is stitched to the new lead, credited to the first touch
    let lead_id = eventually("the visitor's lead_id", async || {
        let res = app
            .get(&format!("/v1/visitors/{visitor}"), &app.admin)
            .await;
        let v = expect_json(res, StatusCode::OK).await;
        v["lead_id"].as_str().map(str::to_owned)
    })
    .await;
    let lead = expect_json(
        app.get(&format!("/v1/leads/{lead_id}"), &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_fields(
        &lead,
        json!({
            "email": "wang@example-corp.cn",
            "name": "王小明",
            "company": "示例科技",
            "channel": "paid_search",
            "utm.source": "google",
            "utm.medium": "cpc",
        }),
    );

    // newest first on the wire; read it oldest first
    let tl = expect_json(
        app.get(
            &format!("/v1/leads/{lead_id}/timeline?limit=500"),
            &app.admin,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let mut items = tl["items"].as_array().expect("items").clone();
    items.reverse();
    // an activity's properties appear as the timeline item's `data`
    let at = |kind: &str, path: Option<&str>| {
        items
            .iter()
            .position(|i| {
                i["type"] == "activity"
                    && i["kind"] == kind
                    && path.is_none_or(|p| i["data"]["path"] == p)
            })
            .unwrap_or_else(|| panic!("no {kind} {path:?} on the timeline: {tl}"))
    };
    let pricing = at("page_view", Some("/pricing"));
    let signup = at("page_view", Some("/signup"));
    let submit = at("form_submit", None);
    assert!(
        pricing < signup && signup < submit,
        "want /pricing view, /signup view, then form_submit: {tl}"
    );
}
