//! `GET /metrics`: Prometheus text exposition. Counters and histograms recorded through the
//! `metrics` facade (HTTP requests, write batches) come from one process-wide recorder; the
//! state of this server (changelog position, leads, search lag, plugin calls and errors) is
//! read when scraped.

use super::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Upper bounds of the latency histograms, in seconds: from a cached read to a slow import.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the jobs-per-write-batch histogram.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// How often histograms are drained into their buckets between scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// The process-wide recorder, installed on first use. A process runs one server, except the
/// test suite, whose servers then share the recorded counters.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("leadline_write_batch_jobs".into()),
                    BATCH_BUCKETS,
                )
            });
        let recorder = match builder {
            Ok(b) => b.build_recorder(),
            // The bucket lists are constants and not empty; should that change, summaries do.
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was installed already; /metrics shows only this server's state"
            );
        }
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("leadline-metrics".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no metrics upkeep thread; histograms drain on scrape only");
        }
        handle
    })
}

/// The HELP lines of the recorded metrics.
fn describe() {
    metrics::describe_counter!(
        "leadline_http_requests_total",
        "HTTP requests answered, by method, route template and status."
    );
    metrics::describe_histogram!(
        "leadline_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer an HTTP request (to its first byte), by method and route template."
    );
    metrics::describe_counter!(
        "leadline_write_batches_total",
        "Write transactions (group commits) the writer ran, by outcome."
    );
    metrics::describe_histogram!(
        "leadline_write_batch_jobs",
        "Writes applied together in one transaction."
    );
    metrics::describe_histogram!(
        "leadline_write_batch_apply_seconds",
        metrics::Unit::Seconds,
        "Time the writer spent applying a batch's writes."
    );
    metrics::describe_histogram!(
        "leadline_write_batch_commit_seconds",
        metrics::Unit::Seconds,
        "Time to commit a batch (its sync runs behind the next batch)."
    );
}

/// Counts every request by method, route template and status, and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    // The route template (`/v1/leads/{id}`), not the path, so ids do not become labels.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("leadline_http_requests_total",
        "method" => method.clone(), "route" => route.clone(), "status" => status)
    .increment(1);
    metrics::histogram!("leadline_http_request_duration_seconds",
        "method" => method, "route" => route)
    .record(started.elapsed().as_secs_f64());
    response
}

/// Prometheus metrics: request counts and latencies, write batches, and this server's state.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let handle = handle();
    handle.run_upkeep();
    let mut out = handle.render();
    out.push_str(&server_state(&state));
    let mut res = (StatusCode::OK, out).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// Gauges and counters read from this server when scraped.
fn server_state(state: &AppState) -> String {
    let store = state.service.store();
    let seq = *store.committed_seq().borrow();
    let indexed = state.search.indexed_seq();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "leadline_changelog_seq",
        "The last committed change's sequence number.",
        seq as f64,
    );
    gauge(
        "leadline_search_indexed_seq",
        "The last change the search index holds.",
        indexed as f64,
    );
    gauge(
        "leadline_search_lag",
        "Changes committed but not yet searchable.",
        seq.saturating_sub(indexed) as f64,
    );
    gauge(
        "leadline_writer_up",
        "1 while the storage writer runs.",
        if store.writer_alive() { 1.0 } else { 0.0 },
    );
    gauge(
        "leadline_storage_sync_ok",
        "0 once a sync of the data file has failed.",
        if store.sync_failure().is_none() {
            1.0
        } else {
            0.0
        },
    );
    match store.read().and_then(|snap| snap.lead_count()) {
        Ok(leads) => gauge("leadline_leads", "Leads in the store.", leads as f64),
        Err(e) => tracing::warn!(error = %e, "metrics: counting leads failed"),
    }
    let report = state.service.plugins().report();
    let scripts: Vec<(String, u64, u64)> = report
        .scripts
        .iter()
        .map(|s| {
            let file = s.file.replace('\\', "\\\\").replace('"', "\\\"");
            (file, s.calls, s.errors)
        })
        .collect();
    let _ = writeln!(
        out,
        "# HELP leadline_plugin_calls_total Calls of a plugin script's hooks since it was loaded.\n\
         # TYPE leadline_plugin_calls_total counter"
    );
    for (file, calls, _) in &scripts {
        let _ = writeln!(
            out,
            "leadline_plugin_calls_total{{file=\"{file}\"}} {calls}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP leadline_plugin_errors_total Failed hook calls (the built-in rule was used) since \
         the script was loaded.\n# TYPE leadline_plugin_errors_total counter"
    );
    for (file, _, errors) in &scripts {
        let _ = writeln!(
            out,
            "leadline_plugin_errors_total{{file=\"{file}\"}} {errors}"
        );
    }
    out
}
