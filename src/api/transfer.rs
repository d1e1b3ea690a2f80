//! Bulk transfer over HTTP: `POST /v1/leads/import` streams a CSV or NDJSON body into captures,
//! `GET /v1/leads/export` streams the caller's leads out with the list filters. Both run
//! outside the request timeout and the JSON body limit (see `api::app`).

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Params};
use super::leads::{LeadFilterParams, filter_and_sort};
use crate::domain::FieldError;
use crate::service::{ImportError, ImportOptions, ImportSummary};
use crate::transfer::{ExportWriter, Format, Mapping};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use serde::Serialize;
use std::io::Write;
use tokio_util::io::{StreamReader, SyncIoBridge};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(import_leads))
        .routes(routes!(export_leads))
}

/// Rejected rows listed in an import's answer at most; the counts cover all of them.
const MAX_LISTED_REJECTS: usize = 1000;

#[derive(Serialize, ToSchema)]
pub struct RejectView {
    /// The row's line in the file (the CSV header is line 1).
    pub line: u64,
    #[schema(value_type = Vec<super::error::FieldErrorDoc>)]
    pub errors: Vec<FieldError>,
}

#[derive(Serialize, ToSchema)]
pub struct ImportResult {
    pub dry_run: bool,
    pub rows: u64,
    pub created: u64,
    pub merged: u64,
    /// Matched a lead and had nothing new: nothing written (a re-import).
    pub unchanged: u64,
    pub rejected: u64,
    /// The first 1000 rejected rows.
    pub rejects: Vec<RejectView>,
}

/// Import leads from a CSV (`text/csv`) or NDJSON (`application/x-ndjson`) body, streamed.
/// Rows dedupe against the store and each other; a bad row is listed with its line and the
/// rest go on; importing the same file again creates nothing.
#[utoipa::path(post, path = "/v1/leads/import", tag = "leads",
    params(("dry_run" = Option<bool>, Query, description = "Report what would happen; write nothing"),
        ("map" = Option<String>, Query, description = "column=field, repeatable (e.g. map=E-mail=email)"),
        ("format" = Option<String>, Query, description = "csv or ndjson (default: from Content-Type)",
            pattern = "^(csv|ndjson)$")),
    request_body(content((String = "text/csv"), (String = "application/x-ndjson"))),
    responses((status = 200, body = ImportResult), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn import_leads(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut q: Params,
    request: Request,
) -> ApiResult<Response> {
    let dry_run = q.flag("dry_run")?;
    let pairs = q.take_all("map");
    let mapping = Mapping::from_pairs(&pairs).map_err(|m| ApiError::field("map", m))?;
    let from_query = q.parse("format", |s| {
        Format::parse(s).ok_or_else(|| "must be csv or ndjson".to_owned())
    })?;
    q.finish()?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = from_query
        .or_else(|| Format::from_content_type(content_type))
        .ok_or_else(|| {
            ApiError::UnsupportedMediaType(
                "send text/csv or application/x-ndjson (or give ?format=)".into(),
            )
        })?;
    let stream = request
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    let mut rejects = Vec::new();
    let summary = state
        .service
        .import(
            &p,
            reader,
            ImportOptions {
                format,
                mapping,
                dry_run,
                origin: "http".into(),
            },
            |_: &ImportSummary| {},
            |r| {
                if rejects.len() < MAX_LISTED_REJECTS {
                    rejects.push(RejectView {
                        line: r.line,
                        errors: r.errors.clone(),
                    });
                }
            },
        )
        .await
        .map_err(|e| match e {
            ImportError::Input(e) => ApiError::Malformed(e.to_string()),
            ImportError::Service(e) => e.into(),
        })?;
    Ok(axum::Json(ImportResult {
        dry_run,
        rows: summary.rows,
        created: summary.created,
        merged: summary.merged,
        unchanged: summary.unchanged,
        rejected: summary.rejected,
        rejects,
    })
    .into_response())
}

/// A `Write` that hands what is written to a response body in 64 KiB pieces.
struct BodyWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// Export the caller's leads as CSV or NDJSON, streamed, with the filters and sort of
/// `GET /v1/leads`, from one consistent snapshot.
#[utoipa::path(get, path = "/v1/leads/export", tag = "leads",
    params(("format" = Option<String>, Query, description = "csv (default) or ndjson",
            pattern = "^(csv|ndjson)$"),
        LeadFilterParams),
    responses((status = 200, description = "The leads",
            content((String = "text/csv"), (String = "application/x-ndjson"))),
        (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn export_leads(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut q: Params,
) -> ApiResult<Response> {
    let format = q
        .parse("format", |s| {
            Format::parse(s).ok_or_else(|| "must be csv or ndjson".to_owned())
        })?
        .unwrap_or(Format::Csv);
    let (filter, sort, descending) = filter_and_sort(&mut q)?;
    q.finish()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let service = state.service.clone();
    tokio::task::spawn_blocking(move || {
        let sink = BodyWriter {
            buf: Vec::new(),
            tx: tx.clone(),
        };
        let result = ExportWriter::new(sink, format)
            .map_err(|e| e.to_string())
            .and_then(|mut out| {
                service
                    .export_leads(&p, filter, sort, descending, &mut out)
                    .map_err(|e| e.to_string())?;
                out.finish().map_err(|e| e.to_string())
            })
            .and_then(|mut sink| sink.flush().map_err(|e| e.to_string()));
        if let Err(e) = result {
            // The status line is gone; cutting the body short is how a stream reports failure.
            tracing::warn!(error = %e, "lead export stopped early");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut res = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let (ct, name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "leads.csv"),
        Format::Ndjson => ("application/x-ndjson", "leads.ndjson"),
    };
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}
