//! Load generators for `leadline bench`: drive a running server over keep-alive HTTP and measure throughput and latency.
//!
//! The generator is deliberately lean because the server under test usually runs in the
//! same process (and on a small machine): one tokio task per client connection, one
//! pre-built set of header values shared by all clients, one small `format!` per request
//! body, and a per-client latency histogram that is merged only once at the end.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};

/// Upper bound for a single TCP connect (plus HTTP/1.1 handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for one request, from sending to the end of the response body. Matches the
/// histogram's upper bound; a request that takes longer is counted as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Histogram bounds, in microseconds: 1 µs .. 60 s, 3 significant digits.
const HIST_LOW_US: u64 = 1;
const HIST_HIGH_US: u64 = 60_000_000;
const HIST_SIGFIG: u8 = 3;
/// How much of a failed response body is kept for the log line.
const FAILURE_BODY_LIMIT: usize = 512;
/// Job titles the generated leads cycle through.
const TITLES: [&str; 8] = [
    "CTO",
    "Engineer",
    "VP Sales",
    "Head of Marketing",
    "Founder",
    "Product Manager",
    "Operations Lead",
    "Procurement Manager",
];

/// What `leadline bench ingest` should do.
#[derive(Clone)]
pub struct IngestOptions {
    /// Address of the running leadline server.
    pub addr: SocketAddr,
    /// API token sent as `authorization: Bearer <token>`.
    pub token: String,
    /// Number of concurrent keep-alive connections (at least 1; never more than `leads`).
    pub clients: usize,
    /// Total number of leads to POST.
    pub leads: usize,
    /// Distinguishes this run's leads from earlier runs (it is part of every email).
    pub run_id: String,
}

impl fmt::Debug for IngestOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestOptions")
            .field("addr", &self.addr)
            .field("token", &"<redacted>")
            .field("clients", &self.clients)
            .field("leads", &self.leads)
            .field("run_id", &self.run_id)
            .finish()
    }
}

/// Outcome of [`drive_ingest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestReport {
    /// Requests attempted (`created + failed`).
    pub sent: usize,
    /// Requests answered with `201 Created`.
    pub created: usize,
    /// Requests answered with any other status, or lost to a connection error or timeout.
    pub failed: usize,
    /// Wall time from the first request to the last response.
    pub elapsed: Duration,
    /// Latency percentiles over all answered requests (send → whole body read).
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl IngestReport {
    /// Successfully created leads per second of wall time (0 if nothing was timed).
    pub fn leads_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.created as f64 / secs
        } else {
            0.0
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for IngestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} leads in {:.2}s: {:.0} leads/s, {} created, {} failed; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.leads_per_sec(),
            self.created,
            self.failed,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
        )
    }
}

/// Drive `opts.leads` `POST /v1/leads` requests over `opts.clients` keep-alive HTTP/1.1
/// connections and report throughput and latency.
///
/// Non-201 answers are counted as failures (the first one is logged with `tracing::warn!`)
/// and do not stop the run. A broken connection is replaced by a new one; only if that
/// reconnect fails does the whole run return an error.
pub async fn drive_ingest(opts: IngestOptions) -> anyhow::Result<IngestReport> {
    let IngestOptions {
        addr,
        token,
        clients,
        leads,
        run_id,
    } = opts;
    if leads == 0 {
        return Ok(IngestReport {
            sent: 0,
            created: 0,
            failed: 0,
            elapsed: Duration::ZERO,
            p50: Duration::ZERO,
            p90: Duration::ZERO,
            p99: Duration::ZERO,
            max: Duration::ZERO,
        });
    }
    // Idle connections would only cost the server memory, so never open more than `leads`.
    let clients = clients.clamp(1, leads);

    let mut auth = HeaderValue::try_from(format!("Bearer {token}"))
        .context("bench token is not a valid HTTP header value")?;
    auth.set_sensitive(true);
    let shared = Arc::new(Shared {
        addr,
        host: HeaderValue::try_from(addr.to_string())
            .context("server address is not a valid host header")?,
        auth,
        content_type: HeaderValue::from_static("application/json"),
        run_id: sanitize_run_id(&run_id),
        leads,
        next: AtomicUsize::new(0),
        warned: AtomicBool::new(false),
    });

    // Connect everything before the clock starts so that `elapsed` measures requests only.
    let mut conns = Vec::with_capacity(clients);
    for c in 0..clients {
        conns.push(
            connect(addr)
                .await
                .with_context(|| format!("opening bench connection {}/{clients}", c + 1))?,
        );
    }

    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (id, conn) in conns.into_iter().enumerate() {
        tasks.spawn(run_client(id, conn, Arc::clone(&shared)));
    }

    let mut hist = new_histogram()?;
    let (mut created, mut failed) = (0usize, 0usize);
    let mut last_response: Option<Instant> = None;
    // On an early return the JoinSet is dropped, which aborts the remaining clients.
    while let Some(joined) = tasks.join_next().await {
        let stats = joined.context("bench client task panicked or was cancelled")??;
        hist.add(&stats.hist)
            .context("merging latency histograms")?;
        created += stats.created;
        failed += stats.failed;
        last_response = last_response.max(stats.last_response);
    }
    let elapsed = last_response.map_or_else(|| start.elapsed(), |t| t.duration_since(start));

    let quantile = |q: f64| Duration::from_micros(hist.value_at_quantile(q));
    Ok(IngestReport {
        sent: created + failed,
        created,
        failed,
        elapsed,
        p50: quantile(0.50),
        p90: quantile(0.90),
        p99: quantile(0.99),
        max: Duration::from_micros(hist.max()),
    })
}

/// State shared by all client tasks of one run.
struct Shared {
    addr: SocketAddr,
    host: HeaderValue,
    auth: HeaderValue,
    content_type: HeaderValue,
    run_id: String,
    leads: usize,
    /// Index of the next lead to send.
    next: AtomicUsize,
    /// Whether the first failure has been logged already.
    warned: AtomicBool,
}

impl Shared {
    fn request(&self, i: usize) -> anyhow::Result<Request<Full<Bytes>>> {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/leads")
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, self.content_type.clone())
            .body(Full::new(Bytes::from(lead_body(&self.run_id, i))))
            .context("building bench request")
    }

    /// Log only the first failure of the run, so a failing server does not flood the log.
    fn warn_once(&self, what: impl FnOnce()) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            what();
        }
    }
}

/// The JSON body of the distinct lead number `i`. The email contains both the run id and
/// `i`, so no two leads of a run (nor of two runs with different ids) are duplicates.
fn lead_body(run_id: &str, i: usize) -> String {
    // In bounds: `i % TITLES.len()` < `TITLES.len()`, and TITLES is non-empty.
    let title = TITLES[i % TITLES.len()];
    let domain = i % 97;
    let company = i % 5000;
    format!(
        r#"{{"name":"Bench Lead {i}","email":"bench-{run_id}-{i}@example{domain}.com","phone":null,"company":"Company {company}","title":"{title}","source":"bench","tags":["bench"]}}"#
    )
}

/// Keep the run id safe to paste into both a JSON string and an email local part.
fn sanitize_run_id(run_id: &str) -> String {
    let cleaned: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "run".to_owned()
    } else {
        cleaned
    }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(HIST_LOW_US, HIST_HIGH_US, HIST_SIGFIG)
        .context("creating latency histogram")
}

/// One keep-alive HTTP/1.1 connection sending bodies of type `B`, and the task driving it.
pub(crate) struct Conn<B = Full<Bytes>> {
    pub(crate) sender: SendRequest<B>,
    driver: JoinHandle<()>,
}

impl<B> Drop for Conn<B> {
    fn drop(&mut self) {
        // The connection is either finished (all responses read) or deemed broken; either
        // way nothing is waiting on it any more, so stop its driver and close the socket.
        self.driver.abort();
    }
}

pub(crate) async fn connect<B>(addr: SocketAddr) -> anyhow::Result<Conn<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let setup = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        let driver = tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "bench connection ended with an error");
            }
        });
        anyhow::Ok(Conn { sender, driver })
    };
    tokio::time::timeout(CONNECT_TIMEOUT, setup)
        .await
        .map_err(|_| anyhow!("connecting to {addr} timed out after {CONNECT_TIMEOUT:?}"))?
}

/// What one client task measured.
struct ClientStats {
    hist: Histogram<u64>,
    created: usize,
    failed: usize,
    last_response: Option<Instant>,
}

/// A request that did not produce a complete response: the connection is unusable.
struct SendFailure {
    error: anyhow::Error,
    /// The request, if hyper never started writing it (safe to retry elsewhere).
    unsent: Option<Box<Request<Full<Bytes>>>>,
}

async fn send_one(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), SendFailure> {
    if let Err(error) = sender.ready().await {
        return Err(SendFailure {
            error: error.into(),
            unsent: Some(Box::new(req)),
        });
    }
    let res = match sender.try_send_request(req).await {
        Ok(res) => res,
        Err(mut e) => {
            let unsent = e.take_message().map(Box::new);
            return Err(SendFailure {
                error: e.into_error().into(),
                unsent,
            });
        }
    };
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|error| SendFailure {
            error: anyhow::Error::from(error).context("reading response body"),
            unsent: None,
        })?
        .to_bytes();
    Ok((status, body))
}

async fn run_client(id: usize, mut conn: Conn, shared: Arc<Shared>) -> anyhow::Result<ClientStats> {
    let mut stats = ClientStats {
        hist: new_histogram()?,
        created: 0,
        failed: 0,
        last_response: None,
    };
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.leads {
            break;
        }
        let mut req = shared.request(i)?;
        let mut retried = false;
        loop {
            let sent_at = Instant::now();
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, send_one(&mut conn.sender, req))
                .await
                .unwrap_or_else(|_| {
                    Err(SendFailure {
                        error: anyhow!("no complete response within {REQUEST_TIMEOUT:?}"),
                        unsent: None,
                    })
                });
            match outcome {
                Ok((status, body)) => {
                    let now = Instant::now();
                    let us =
                        u64::try_from(now.duration_since(sent_at).as_micros()).unwrap_or(u64::MAX);
                    stats.hist.saturating_record(us.max(HIST_LOW_US));
                    stats.last_response = Some(now);
                    if status == StatusCode::CREATED {
                        stats.created += 1;
                    } else {
                        stats.failed += 1;
                        shared.warn_once(|| {
                            let shown = body.get(..FAILURE_BODY_LIMIT).unwrap_or(&body);
                            tracing::warn!(
                                lead = i,
                                status = status.as_u16(),
                                body = %String::from_utf8_lossy(shown),
                                "bench ingest: first failed request (later failures are only counted)"
                            );
                        });
                    }
                    break;
                }
                Err(failure) => {
                    tracing::debug!(client = id, lead = i, error = %failure.error, "bench connection failed; reconnecting");
                    // Replacing `conn` drops (and thereby closes) the broken connection.
                    conn = connect(shared.addr).await.with_context(|| {
                        format!(
                            "bench client {id}: reconnect failed after connection error: {:#}",
                            failure.error
                        )
                    })?;
                    match failure.unsent {
                        // Never written to the old connection: send it again on the new one.
                        Some(unsent) if !retried => {
                            retried = true;
                            req = *unsent;
                        }
                        _ => {
                            stats.failed += 1;
                            shared.warn_once(|| {
                                tracing::warn!(
                                    lead = i,
                                    error = %format!("{:#}", failure.error),
                                    "bench ingest: first failed request (later failures are only counted)"
                                );
                            });
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::http::header::CONNECTION;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::Value;

    const TOKEN: &str = "s3cret-bench-token";

    #[derive(Clone, Default)]
    struct TestServer {
        emails: Arc<Mutex<HashSet<String>>>,
        requests: Arc<AtomicUsize>,
        /// Answer with `connection: close`, forcing the client to reconnect for every lead.
        close_each: bool,
    }

    async fn create_lead(
        State(st): State<TestServer>,
        headers: HeaderMap,
        Json(lead): Json<Value>,
    ) -> Response {
        st.requests.fetch_add(1, Ordering::Relaxed);
        let expected = format!("Bearer {TOKEN}");
        if headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, "bad token").into_response();
        }
        let well_formed = lead["name"].is_string()
            && lead["phone"].is_null()
            && lead["company"].is_string()
            && lead["title"].is_string()
            && lead["source"] == "bench"
            && lead["tags"] == serde_json::json!(["bench"]);
        let Some(email) = lead["email"].as_str().filter(|_| well_formed) else {
            return (StatusCode::UNPROCESSABLE_ENTITY, "malformed lead").into_response();
        };
        let fresh = match st.emails.lock() {
            Ok(mut set) => set.insert(email.to_owned()),
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
        if !fresh {
            return (StatusCode::CONFLICT, "duplicate").into_response();
        }
        let body = Json(serde_json::json!({ "email": email }));
        if st.close_each {
            (StatusCode::CREATED, [(CONNECTION, "close")], body).into_response()
        } else {
            (StatusCode::CREATED, body).into_response()
        }
    }

    async fn start(server: TestServer) -> anyhow::Result<SocketAddr> {
        let app = Router::new()
            .route("/v1/leads", post(create_lead))
            .with_state(server);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(addr)
    }

    fn options(addr: SocketAddr, token: &str, clients: usize, leads: usize) -> IngestOptions {
        IngestOptions {
            addr,
            token: token.to_owned(),
            clients,
            leads,
            run_id: "Test Run/1".to_owned(),
        }
    }

    fn distinct_emails(server: &TestServer) -> usize {
        server.emails.lock().map(|s| s.len()).unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ingests_500_distinct_leads_over_8_clients() -> anyhow::Result<()> {
        let server = TestServer::default();
        let addr = start(server.clone()).await?;
        let report = drive_ingest(options(addr, TOKEN, 8, 500)).await?;
        assert_eq!(report.sent, 500);
        assert_eq!(report.created, 500);
        assert_eq!(report.failed, 0);
        assert_eq!(distinct_emails(&server), 500);
        assert_eq!(server.requests.load(Ordering::Relaxed), 500);
        assert!(report.elapsed > Duration::ZERO);
        assert!(report.leads_per_sec() > 0.0);
        assert!(report.p50 <= report.p90 && report.p90 <= report.p99 && report.p99 <= report.max);
        assert!(report.max > Duration::ZERO);
        let summary = report.to_string();
        assert!(
            summary.contains("leads/s") && summary.contains("p99"),
            "{summary}"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_token_counts_failures_without_aborting() -> anyhow::Result<()> {
        let server = TestServer::default();
        let addr = start(server.clone()).await?;
        let report = drive_ingest(options(addr, "wrong", 4, 100)).await?;
        assert_eq!((report.sent, report.created, report.failed), (100, 0, 100));
        assert_eq!(distinct_emails(&server), 0);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconnects_when_the_server_closes_connections() -> anyhow::Result<()> {
        let server = TestServer {
            close_each: true,
            ..TestServer::default()
        };
        let addr = start(server.clone()).await?;
        let report = drive_ingest(options(addr, TOKEN, 4, 200)).await?;
        assert_eq!((report.sent, report.created, report.failed), (200, 200, 0));
        assert_eq!(distinct_emails(&server), 200);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_reconnect_is_an_error() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            // Accept the single bench connection, stop listening, then hang up: the client's
            // request fails and its reconnect is refused.
            if let Ok((stream, _)) = listener.accept().await {
                drop(listener);
                drop(stream);
            }
        });
        let err = match drive_ingest(options(addr, TOKEN, 1, 5)).await {
            Ok(report) => anyhow::bail!("expected an error, got {report}"),
            Err(err) => err,
        };
        assert!(format!("{err:#}").contains("reconnect failed"), "{err:#}");
        Ok(())
    }

    #[tokio::test]
    async fn unreachable_server_is_an_error() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        drop(listener);
        assert!(drive_ingest(options(addr, TOKEN, 2, 10)).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn zero_leads_is_an_empty_report() -> anyhow::Result<()> {
        // Nothing listens on port 9 of the test net: no connection must be attempted.
        let addr: SocketAddr = "192.0.2.1:9".parse()?;
        let report = drive_ingest(options(addr, TOKEN, 64, 0)).await?;
        assert_eq!((report.sent, report.created, report.failed), (0, 0, 0));
        assert_eq!(report.leads_per_sec(), 0.0);
        Ok(())
    }

    #[test]
    fn lead_bodies_are_valid_distinct_json() -> anyhow::Result<()> {
        let run_id = sanitize_run_id("Nightly \"run\"#7");
        assert_eq!(run_id, "nightly--run--7");
        let mut emails = HashSet::new();
        for i in 0..1000 {
            let lead: Value = serde_json::from_str(&lead_body(&run_id, i))?;
            let email = lead["email"].as_str().context("email missing")?.to_owned();
            assert!(email.starts_with("bench-nightly--run--7-"), "{email}");
            assert!(emails.insert(email));
        }
        assert_eq!(sanitize_run_id(""), "run");
        Ok(())
    }
}
