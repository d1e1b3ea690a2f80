//! `leadline bench search`: builds a realistic data set and measures full-text search on it.
//!
//! 1. Generates a messy lead file and imports it into a fresh data directory, as
//!    `leadline bench import` does.
//! 2. Adds note activities with varied Chinese and English text, spread unevenly over the
//!    leads, written straight through the store in large jobs (several in flight).
//! 3. Starts the server on that directory; its empty index is rebuilt from the store, and
//!    `/readyz` is polled until the index has caught up (`search_lag == 0`).
//! 4. Sends `GET /v1/search` requests over keep-alive HTTP/1.1 from concurrent clients,
//!    cycling through one- and two-term queries with filters, and reports the latency
//!    distribution and throughput.
//! 5. Reports the index size on disk and the peak RSS of the process, then stops the server.

use crate::cli_transfer::{generate, import_generated, peak_rss_bytes};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::domain::activity::Activity;
use crate::domain::lead::Lead;
use crate::startup::{Application, open_service};
use crate::store::{Entity, Op, Store, StoreResult, Tx};
use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, HOST, HeaderValue};
use hyper::{Request, StatusCode};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

/// Activities written by one store job.
const JOB_SIZE: usize = 5_000;
/// Store jobs queued at once, so the writer always has the next one ready.
const JOBS_IN_FLIGHT: usize = 4;
/// Leads read per page when collecting their ids.
const LEAD_PAGE: usize = 10_000;
/// How often `/readyz` is asked whether the index has caught up.
const READY_POLL: Duration = Duration::from_millis(50);
/// How often a line is printed while waiting for the index.
const READY_REPORT: Duration = Duration::from_secs(15);
/// Upper bound for one request; also the histogram's upper bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of the first failed response body is printed.
const FAILURE_BODY_LIMIT: usize = 512;

/// Runs `leadline bench search` (see the module documentation).
pub async fn bench_search(
    leads: usize,
    activities: usize,
    clients: usize,
    queries: usize,
    dir: Option<PathBuf>,
    keep: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    init_logging();
    if leads == 0 {
        bail!("--leads must be at least 1");
    }
    // The temporary directory lives until the end; a kept one is left in place.
    let (_tmp, base) = match keep {
        Some(k) => {
            std::fs::create_dir_all(&k).with_context(|| format!("creating {}", k.display()))?;
            (None, k)
        }
        None => {
            let tmp = match dir {
                Some(d) => tempfile::tempdir_in(d),
                None => tempfile::tempdir(),
            }
            .context("creating a temporary directory")?;
            let path = tmp.path().to_path_buf();
            (Some(tmp), path)
        }
    };
    let data_dir = base.join("data");
    let config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.clone(),
        plugins_dir: base.join("plugins"),
        ..Config::default()
    };
    let marker = base.join(READY_MARKER);
    let written = match std::fs::read_to_string(&marker) {
        Ok(n) => {
            let written = n
                .trim()
                .parse::<usize>()
                .with_context(|| format!("{} should hold the number of notes", marker.display()))?;
            println!(
                "bench search: reusing the data set in {} ({written} notes)",
                base.display()
            );
            written
        }
        Err(_) => {
            let written = build_data_set(&base, &config, leads, activities).await?;
            std::fs::write(&marker, written.to_string())
                .with_context(|| format!("writing {}", marker.display()))?;
            written
        }
    };

    // 3. The server, whose empty index is rebuilt from the store.
    let started = Instant::now();
    let app = Application::build(config, Arc::new(SystemClock)).await?;
    // A kept data set was started before: its admin token was saved then.
    let token_file = base.join(TOKEN_FILE);
    let token = match app.admin_token() {
        Some(t) => {
            std::fs::write(&token_file, t)
                .with_context(|| format!("writing {}", token_file.display()))?;
            t.to_owned()
        }
        None => std::fs::read_to_string(&token_file)
            .map(|t| t.trim().to_owned())
            .with_context(|| format!("reading the admin token from {}", token_file.display()))?,
    };
    let addr = app.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop_rx.await;
    }));
    let measured = async {
        let ready = wait_for_readiness(addr, &server, started, |v| {
            v["search_lag"].as_u64() == Some(0)
        })
        .await?;
        let indexed_leads = ready["leads"]
            .as_u64()
            .context("/readyz answer without `leads`")?;
        let secs = started.elapsed().as_secs_f64();
        let docs = indexed_leads + written as u64;
        println!(
            "index: {docs} documents ({indexed_leads} leads, {written} activities) searchable after {secs:.1} s, {:.0} docs/s",
            docs as f64 / secs.max(1e-9)
        );
        // Queries are measured on the index as it settles after a bulk load, with its
        // segments merged, not while the merge takes one of the two cores.
        let merging_since = Instant::now();
        let settled = wait_for_readiness(addr, &server, started, |v| {
            v["search_lag"].as_u64() == Some(0) && v["search_compacted"] == true
        })
        .await?;
        println!(
            "index: {} segment(s) after {:.1} s more (merged once idle for search.compact_after_idle_secs)",
            settled["search_segments"],
            merging_since.elapsed().as_secs_f64()
        );

        // 4. Queries.
        let report = drive_queries(addr, &token, clients, queries).await?;
        report.print();

        // 5. Index size and memory.
        println!(
            "index size on disk: {:.1} MiB; peak RSS {}",
            dir_size(&crate::search::index_dir(&data_dir)) as f64 / 1048576.0,
            peak_rss_bytes().map_or_else(
                || "unknown".to_owned(),
                |b| format!("{:.0} MiB", b as f64 / 1048576.0)
            )
        );
        anyhow::Ok(report.failed)
    }
    .await;

    // 6. Stop the server, whatever happened above.
    let _ = stop_tx.send(());
    let served = server.await.context("server task").and_then(|r| r);
    let failed = match (measured, served) {
        (Ok(failed), Ok(())) => failed,
        (Err(e), Ok(())) | (Ok(_), Err(e)) => return Err(e),
        (Err(e), Err(s)) => return Err(e.context(format!("the server failed too: {s:#}"))),
    };
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Written into a kept directory once its data set is complete: the number of notes.
const READY_MARKER: &str = "bench-search.ready";
/// The admin token the first start of a data set printed, for later runs on it.
const TOKEN_FILE: &str = "bench-search.token";

/// Steps 1 and 2: the leads and the notes, in `config.data_dir`; returns the notes written.
async fn build_data_set(
    base: &Path,
    config: &Config,
    leads: usize,
    activities: usize,
) -> anyhow::Result<usize> {
    // 1. Leads, imported as `bench import` does.
    let file = base.join("bench-search.csv");
    let started = Instant::now();
    generate(&file, leads).context("generating the lead file")?;
    println!(
        "bench search: generated {leads} lead rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let service = open_service(config, Arc::new(SystemClock))?;
    let started = Instant::now();
    let s = import_generated(&service, &file).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "import: {} rows in {secs:.1} s, {:.0} rows/s; {} created, {} merged, {} rejected",
        s.rows,
        s.rows as f64 / secs,
        s.created,
        s.merged,
        s.rejected
    );

    // 2. Note activities, straight through the store.
    let store = service.store().clone();
    let lead_ids = lead_ids(&store).await?;
    if lead_ids.is_empty() {
        bail!("the import created no leads");
    }
    let started = Instant::now();
    let written = add_notes(&store, Arc::new(lead_ids), activities).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "activities: {written} notes in {secs:.1} s, {:.0} activities/s (jobs of {JOB_SIZE}, {JOBS_IN_FLIGHT} in flight)",
        written as f64 / secs.max(1e-9)
    );
    // The server opens the store itself: close this handle first (dropping the last handle
    // joins the writer thread, so do it off the async workers).
    tokio::task::spawn_blocking(move || {
        drop(store);
        drop(service);
    })
    .await
    .context("closing the store")?;
    let _ = std::fs::remove_file(&file);
    Ok(written)
}

/// Warnings and errors (such as a failing indexer) on stderr; `LEADLINE_LOG` overrides. The
/// request log is off: it would report every 503 from `/readyz` while the index catches up,
/// and failed searches are counted and shown by the bench itself.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LEADLINE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,tower_http::trace=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

// ----- data -----

/// The ids of every lead, in creation order.
async fn lead_ids(store: &Store) -> anyhow::Result<Vec<Uuid>> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Uuid>> {
        let snap = store.read().context("reading the store")?;
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = snap
                .leads_after(after, LEAD_PAGE)
                .context("listing the leads")?;
            let Some(last) = page.last() else {
                return Ok(ids);
            };
            after = Some(last.id);
            ids.extend(page.iter().map(|l| l.id));
        }
    })
    .await
    .context("lead listing task")?
}

/// Writes `total` notes over `leads`, returning how many were written.
async fn add_notes(store: &Store, leads: Arc<Vec<Uuid>>, total: usize) -> anyhow::Result<usize> {
    let mut rng = Rng(0x5eed_1ead);
    let mut jobs: JoinSet<StoreResult<usize>> = JoinSet::new();
    let mut written = 0;
    let mut queued = 0;
    while queued < total {
        let n = JOB_SIZE.min(total - queued);
        queued += n;
        let mut items: Vec<(Uuid, String)> = (0..n)
            .map(|_| (leads[pick_lead(&mut rng, leads.len())], note(&mut rng)))
            .collect();
        // In lead order: each lead is read once per job and the index rows go in sequentially.
        items.sort_by_key(|(lead, _)| *lead);
        while jobs.len() >= JOBS_IN_FLIGHT {
            written += joined(jobs.join_next().await)?;
        }
        let store = store.clone();
        jobs.spawn(async move { store.write(move |tx| write_notes(tx, items)).await });
    }
    while let Some(done) = jobs.join_next().await {
        written += joined(Some(done))?;
    }
    Ok(written)
}

fn joined(
    done: Option<Result<StoreResult<usize>, tokio::task::JoinError>>,
) -> anyhow::Result<usize> {
    match done {
        Some(r) => Ok(r
            .context("activity write task")?
            .context("writing activities")?),
        None => Ok(0),
    }
}

/// One store job: the notes, each with its changelog row (which carries the lead's owner and
/// pool). A lead that no longer exists is skipped.
fn write_notes(tx: &mut Tx<'_>, items: Vec<(Uuid, String)>) -> StoreResult<usize> {
    let mut lead: Option<Lead> = None;
    let mut written = 0;
    for (lead_id, text) in items {
        if lead.as_ref().map(|l| l.id) != Some(lead_id) {
            lead = tx.lead(lead_id)?;
        }
        let Some(l) = lead.as_ref() else { continue };
        let a = Activity {
            id: tx.new_id(),
            lead_id,
            kind: "note".into(),
            occurred_at: tx.now,
            recorded_at: tx.now,
            actor_id: None,
            campaign_id: None,
            text: Some(text),
            properties: "{}".into(),
        };
        tx.put_activity(&a)?;
        tx.change(Entity::Activity, a.id, Op::Create, Some(l))?;
        written += 1;
    }
    Ok(written)
}

/// SplitMix64: small, fast and reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (which must not be 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn of<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words.get(self.below(words.len())).copied().unwrap_or("")
    }
}

/// A quarter of the notes go to the first tenth of the leads (busy accounts); the rest are
/// spread evenly.
fn pick_lead(rng: &mut Rng, n: usize) -> usize {
    if rng.below(4) == 0 {
        rng.below((n / 10).max(1))
    } else {
        rng.below(n)
    }
}

const ZH_WHO: &[&str] = &[
    "客户",
    "王总",
    "李经理",
    "张工",
    "陈总监",
    "采购部",
    "IT负责人",
    "刘总",
    "黄经理",
    "周工",
];
const ZH_TOPICS: &[&str] = &[
    "智能制造",
    "数字化转型",
    "供应链协同",
    "质量追溯",
    "设备联网",
    "仓储管理",
    "成本控制",
    "数据中台",
    "移动审批",
    "售后服务",
    "能耗管理",
    "排产优化",
];
const ZH_PRODUCTS: &[&str] = &[
    "MES系统",
    "ERP",
    "WMS",
    "CRM",
    "BI报表",
    "IoT平台",
    "SaaS版",
    "私有化部署",
    "小程序",
    "APS排程",
];
const ZH_CITIES: &[&str] = &[
    "上海", "深圳", "北京", "杭州", "广州", "成都", "苏州", "武汉", "南京", "天津",
];
const EN_NAMES: &[&str] = &[
    "Mr. Wang",
    "Anna",
    "Lucas",
    "Sofia",
    "Chen Li",
    "the CFO",
    "their IT lead",
    "Olivia",
    "James Smith",
    "Ms. Tanaka",
];
const EN_MODULES: &[&str] = &[
    "warehouse",
    "inventory",
    "billing",
    "scheduling",
    "quality",
    "maintenance",
    "procurement",
    "reporting",
];
const EN_PRODUCTS: &[&str] = &[
    "MES",
    "ERP",
    "WMS",
    "CRM",
    "analytics",
    "IoT gateway",
    "mobile app",
    "open API",
];
const EN_CITIES: &[&str] = &[
    "Berlin",
    "Munich",
    "London",
    "Singapore",
    "Tokyo",
    "Austin",
    "Shanghai",
    "Shenzhen",
    "Rotterdam",
    "Milan",
];
const EN_TOPICS: &[&str] = &[
    "smart manufacturing",
    "predictive maintenance",
    "supply chain visibility",
    "cost reduction",
    "digital transformation",
    "traceability",
    "energy monitoring",
];
const EN_DOCS: &[&str] = &[
    "proposal",
    "case study",
    "white paper",
    "quote",
    "contract draft",
    "security questionnaire",
];
const EN_SYSTEMS: &[&str] = &[
    "SAP",
    "Salesforce",
    "Oracle",
    "Kingdee",
    "Yonyou",
    "HubSpot",
];

/// A note in Chinese (half), English (two fifths) or both.
fn note(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=4 => zh_note(rng),
        5..=8 => en_note(rng),
        _ => format!("{}; {}", zh_note(rng), en_note(rng)),
    }
}

fn zh_note(rng: &mut Rng) -> String {
    let who = rng.of(ZH_WHO);
    let topic = rng.of(ZH_TOPICS);
    let product = rng.of(ZH_PRODUCTS);
    let city = rng.of(ZH_CITIES);
    match rng.below(6) {
        0 => format!("{who}关注{topic}和{product}"),
        1 => format!("在{city}展会上交流了{topic}，对{product}感兴趣"),
        2 => format!("{who}询问{product}的报价，预算{}万", 10 + rng.below(20) * 5),
        3 => format!("电话回访{who}，{city}工厂计划下季度上线{product}"),
        4 => format!("发送了{product}方案，{who}下周在{city}安排演示"),
        _ => format!("{who}反馈{topic}是今年重点，需要对接{product}"),
    }
}

fn en_note(rng: &mut Rng) -> String {
    let name = rng.of(EN_NAMES);
    let product = rng.of(EN_PRODUCTS);
    let city = rng.of(EN_CITIES);
    match rng.below(6) {
        0 => format!(
            "{name} asked about pricing for the {} module",
            rng.of(EN_MODULES)
        ),
        1 => format!("call with {name} about the {product} rollout in {city}"),
        2 => format!(
            "sent the {} for {product}, follow up next week",
            rng.of(EN_DOCS)
        ),
        3 => format!(
            "demo scheduled in {city}: {} with {product}",
            rng.of(EN_TOPICS)
        ),
        4 => format!(
            "{name} wants {product} integrated with {} before signing",
            rng.of(EN_SYSTEMS)
        ),
        _ => format!(
            "met at the {city} trade show, interested in {}",
            rng.of(EN_TOPICS)
        ),
    }
}

/// The queries the clients cycle through: one and two terms, Chinese and English, prefixes,
/// a typo, an email domain and phone digits, each with a filter or none.
const QUERIES: &[(&str, &[(&str, &str)])] = &[
    ("智能制造", &[("stage", "lead")]),
    ("pricing", &[("type", "activity")]),
    ("acme", &[("channel", "paid_search")]),
    ("王", &[("type", "lead")]),
    ("上海 MES", &[("type", "activity")]),
    ("wang", &[("min_score", "0")]),
    ("warehouse module", &[("type", "activity")]),
    ("深圳 演示", &[("type", "activity")]),
    ("demo", &[("channel", "event")]),
    ("Berlin", &[("type", "activity"), ("stage", "lead")]),
    ("预算", &[("type", "activity")]),
    ("globex", &[("type", "lead")]),
    ("Kingdee", &[]),
    ("mainten", &[("type", "activity")]),
    ("procurment", &[("type", "activity")]),
    ("采购经理", &[("type", "lead")]),
    ("example7.com", &[("type", "lead")]),
    ("0007", &[("type", "lead")]),
    ("供应链 协同", &[("min_score", "0")]),
    ("数字化转型 ERP", &[]),
];

/// The request path and query string of each entry of `QUERIES`.
fn query_uris() -> Vec<String> {
    QUERIES
        .iter()
        .map(|(q, filters)| {
            let mut s = url::form_urlencoded::Serializer::new(String::new());
            s.append_pair("q", q);
            for (k, v) in *filters {
                s.append_pair(k, v);
            }
            format!("/v1/search?{}", s.finish())
        })
        .collect()
}

/// Bytes under `path`, recursively (0 if it cannot be read).
fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

// ----- HTTP -----

/// One keep-alive connection sending empty bodies.
type Conn = crate::bench::Conn<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
    crate::bench::connect(addr).await
}

/// Headers every request carries.
struct Headers {
    host: HeaderValue,
    auth: Option<HeaderValue>,
}

impl Headers {
    fn new(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<Headers> {
        let auth = match token {
            Some(t) => {
                let mut v = HeaderValue::try_from(format!("Bearer {t}"))
                    .context("the token is not a valid header value")?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Headers {
            host: HeaderValue::try_from(addr.to_string())
                .context("the server address is not a valid host header")?,
            auth,
        })
    }
}

/// GETs `uri` on `conn` and reads the whole answer.
async fn get(conn: &mut Conn, headers: &Headers, uri: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut req = Request::get(uri).header(HOST, headers.host.clone());
    if let Some(auth) = &headers.auth {
        req = req.header(AUTHORIZATION, auth.clone());
    }
    let req = req.body(Empty::new()).context("building a request")?;
    let exchange = async {
        conn.sender.ready().await.context("connection not ready")?;
        let res = conn
            .sender
            .send_request(req)
            .await
            .context("sending the request")?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .context("reading the response body")?
            .to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no complete response within {REQUEST_TIMEOUT:?}"))?
}

/// Polls `/readyz` until `settled` holds for its answer, which it returns.
async fn wait_for_readiness(
    addr: SocketAddr,
    server: &JoinHandle<anyhow::Result<()>>,
    started: Instant,
    settled: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let headers = Headers::new(addr, None)?;
    let mut conn = connect(addr).await?;
    let mut last_report = Instant::now();
    loop {
        if server.is_finished() {
            bail!("the server stopped before the index settled");
        }
        match get(&mut conn, &headers, "/readyz").await {
            Ok((StatusCode::OK, body)) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&body).context("reading the /readyz answer")?;
                if settled(&v) {
                    return Ok(v);
                }
            }
            Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {}
            Ok((status, body)) => bail!(
                "/readyz answered {status}: {}",
                String::from_utf8_lossy(&body)
            ),
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "readyz poll failed; reconnecting");
                conn = connect(addr).await?;
            }
        }
        if last_report.elapsed() >= READY_REPORT {
            println!(
                "index: still settling after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// What the query run measured.
struct QueryReport {
    sent: usize,
    failed: usize,
    elapsed: Duration,
    hist: Histogram<u64>,
    first_failure: Option<String>,
}

impl QueryReport {
    fn print(&self) {
        let ms = |us: u64| us as f64 / 1000.0;
        let secs = self.elapsed.as_secs_f64();
        println!(
            "search: {} queries in {secs:.2} s, {:.0} queries/s, {} failed; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.sent,
            if secs > 0.0 {
                self.sent as f64 / secs
            } else {
                0.0
            },
            self.failed,
            ms(self.hist.value_at_quantile(0.50)),
            ms(self.hist.value_at_quantile(0.90)),
            ms(self.hist.value_at_quantile(0.99)),
            ms(self.hist.max()),
        );
        if let Some(f) = &self.first_failure {
            println!("first failure: {f}");
        }
    }
}

/// State shared by the query clients.
struct Shared {
    addr: SocketAddr,
    headers: Headers,
    uris: Vec<String>,
    total: usize,
    next: AtomicUsize,
    first_failure: OnceLock<String>,
}

/// Runs each query once (printing its match count), then `total` queries from `clients`
/// keep-alive connections.
async fn drive_queries(
    addr: SocketAddr,
    token: &str,
    clients: usize,
    total: usize,
) -> anyhow::Result<QueryReport> {
    let headers = Headers::new(addr, Some(token))?;
    let uris = query_uris();
    let mut conn = connect(addr).await?;
    println!("matches per query (one cold run each):");
    for uri in &uris {
        let started = Instant::now();
        let (status, body) = get(&mut conn, &headers, uri).await?;
        let took = started.elapsed();
        if status != StatusCode::OK {
            bail!(
                "GET {uri} answered {status}: {}",
                String::from_utf8_lossy(body.get(..FAILURE_BODY_LIMIT).unwrap_or(&body))
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("reading the answer to GET {uri}"))?;
        let total = v["total"].as_u64().unwrap_or(0);
        // Past the count limit the total is a lower bound.
        let more = if v["total_exact"] == false { "+" } else { " " };
        println!(
            "  {:>9}{more} in {:>7.2} ms  {}",
            total,
            took.as_secs_f64() * 1000.0,
            url_decode(uri)
        );
    }
    drop(conn);

    let clients = clients.clamp(1, total.max(1));
    let shared = Arc::new(Shared {
        addr,
        headers,
        uris,
        total,
        next: AtomicUsize::new(0),
        first_failure: OnceLock::new(),
    });
    let mut conns = Vec::with_capacity(clients);
    for c in 0..clients {
        conns.push(
            connect(addr)
                .await
                .with_context(|| format!("opening query connection {}/{clients}", c + 1))?,
        );
    }
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for conn in conns {
        tasks.spawn(query_client(conn, Arc::clone(&shared)));
    }
    let mut hist = new_histogram()?;
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        let (h, f) = done.context("query client task")??;
        hist.add(&h).context("merging latency histograms")?;
        failed += f;
    }
    let elapsed = started.elapsed();
    Ok(QueryReport {
        sent: shared.next.load(Ordering::Relaxed).min(total),
        failed,
        elapsed,
        hist,
        first_failure: shared.first_failure.get().cloned(),
    })
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    let high = u64::try_from(REQUEST_TIMEOUT.as_micros()).unwrap_or(u64::MAX);
    Histogram::new_with_bounds(1, high, 3).context("creating a latency histogram")
}

/// One client: takes the next query number until all are sent; returns its latencies and
/// failure count. A broken connection counts as a failure and is replaced.
async fn query_client(
    mut conn: Conn,
    shared: Arc<Shared>,
) -> anyhow::Result<(Histogram<u64>, usize)> {
    let mut hist = new_histogram()?;
    let mut failed = 0;
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.total {
            return Ok((hist, failed));
        }
        let Some(uri) = shared.uris.get(i % shared.uris.len().max(1)) else {
            bail!("no queries to send");
        };
        let sent_at = Instant::now();
        match get(&mut conn, &shared.headers, uri).await {
            Ok((status, body)) => {
                let us = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                hist.saturating_record(us.max(1));
                if status != StatusCode::OK {
                    failed += 1;
                    let shown = body.get(..FAILURE_BODY_LIMIT).unwrap_or(&body);
                    let _ = shared.first_failure.set(format!(
                        "GET {} answered {status}: {}",
                        url_decode(uri),
                        String::from_utf8_lossy(shown)
                    ));
                }
            }
            Err(e) => {
                failed += 1;
                let _ = shared
                    .first_failure
                    .set(format!("GET {}: {e:#}", url_decode(uri)));
                conn = connect(shared.addr)
                    .await
                    .with_context(|| format!("reconnecting after: {e:#}"))?;
            }
        }
    }
}

/// The URI with its query string decoded, for display.
fn url_decode(uri: &str) -> String {
    match uri.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_uris_round_trip() {
        let uris = query_uris();
        assert_eq!(uris.len(), QUERIES.len());
        assert_eq!(uris[4], "/v1/search?q=%E4%B8%8A%E6%B5%B7+MES&type=activity");
        assert_eq!(url_decode(&uris[4]), "/v1/search?q=上海 MES&type=activity");
    }

    #[test]
    fn notes_are_varied_and_reproducible() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        let notes: Vec<String> = (0..200).map(|_| note(&mut a)).collect();
        let again: Vec<String> = (0..200).map(|_| note(&mut b)).collect();
        assert_eq!(notes, again);
        assert!(notes.iter().any(|n| n.contains("智能制造")));
        assert!(notes.iter().any(|n| n.contains("pricing")));
        let distinct: std::collections::HashSet<_> = notes.iter().collect();
        assert!(distinct.len() > 150, "{}", distinct.len());
    }

    #[test]
    fn picked_leads_are_in_range() {
        let mut rng = Rng(1);
        for n in [1, 2, 9, 10, 1000] {
            for _ in 0..1000 {
                assert!(pick_lead(&mut rng, n) < n);
            }
        }
    }
}
