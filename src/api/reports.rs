//! `/v1/reports/*`: the speed-to-lead report, as JSON or CSV.

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Params};
use crate::domain::speed::{SpeedReport, SpeedStats};
use crate::domain::time::{parse_rfc3339, to_rfc3339};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(speed_to_lead))
}

/// The speed-to-lead report with the range it covers.
#[derive(Serialize, ToSchema)]
pub struct SpeedToLeadView {
    /// The start of the lead-creation range (inclusive), or null for all time.
    pub from: Option<String>,
    /// The end of the range (exclusive), or null for up to now.
    pub to: Option<String>,
    #[serde(flatten)]
    pub report: SpeedReport,
}

/// How a report is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "json" => Ok(Format::Json),
        "csv" => Ok(Format::Csv),
        _ => Err("must be json or csv".to_owned()),
    }
}

/// How fast leads got their first touch (p50/p90, shares within 5 min, 1 h, 24 h, never) and
/// first-touch SLA compliance, overall, per rep and per channel, over the leads the caller may
/// see whose `created_at` is in `[from, to)`.
#[utoipa::path(get, path = "/v1/reports/speed-to-lead", tag = "reports",
    params(
        ("from" = Option<String>, Query, format = DateTime,
            description = "RFC 3339; leads created at or after (default: all time)"),
        ("to" = Option<String>, Query, format = DateTime,
            description = "RFC 3339; leads created before (default: now)"),
        ("format" = Option<String>, Query, description = "json (default) or csv",
            pattern = "^(json|csv)$")),
    responses(
        (status = 200, content((SpeedToLeadView = "application/json"), (String = "text/csv"))),
        (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn speed_to_lead(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut q: Params,
) -> ApiResult<Response> {
    let from = q.parse("from", parse_rfc3339)?;
    let to = q.parse("to", parse_rfc3339)?;
    let format = q.parse("format", parse_format)?.unwrap_or(Format::Json);
    q.finish()?;
    if let (Some(f), Some(t)) = (from, to)
        && t < f
    {
        return Err(ApiError::field("to", "must not be before from"));
    }
    let report = state.service.speed_to_lead(&p, from, to).await?;
    match format {
        Format::Json => Ok(Json(SpeedToLeadView {
            from: from.map(to_rfc3339),
            to: to.map(to_rfc3339),
            report,
        })
        .into_response()),
        Format::Csv => csv_response(speed_csv(&report)?, "speed-to-lead.csv"),
    }
}

const SPEED_HEADER: [&str; 16] = [
    "group",
    "key",
    "leads",
    "touched",
    "never_touched",
    "p50_seconds",
    "p90_seconds",
    "within_5m",
    "within_1h",
    "within_24h",
    "never",
    "sla_with",
    "sla_met",
    "sla_breached",
    "sla_pending",
    "sla_compliance",
];

fn opt(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn speed_row(group: &str, key: &str, s: &SpeedStats) -> [String; 16] {
    [
        group.to_owned(),
        key.to_owned(),
        s.leads.to_string(),
        s.touched.to_string(),
        s.never_touched.to_string(),
        opt(s.p50_seconds),
        opt(s.p90_seconds),
        s.within_5m.to_string(),
        s.within_1h.to_string(),
        s.within_24h.to_string(),
        s.never.to_string(),
        s.sla.with_sla.to_string(),
        s.sla.met.to_string(),
        s.sla.breached.to_string(),
        s.sla.pending.to_string(),
        opt(s.sla.compliance),
    ]
}

/// The report as CSV: a header, then the overall row, each rep, each channel.
fn speed_csv(r: &SpeedReport) -> ApiResult<Vec<u8>> {
    let fail = |e: csv::Error| ApiError::Internal(format!("writing the report CSV: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(SPEED_HEADER).map_err(fail)?;
    w.write_record(speed_row("overall", "all", &r.overall))
        .map_err(fail)?;
    for (rep, s) in &r.by_rep {
        w.write_record(speed_row("rep", rep, s)).map_err(fail)?;
    }
    for (channel, s) in &r.by_channel {
        w.write_record(speed_row("channel", channel, s))
            .map_err(fail)?;
    }
    w.into_inner()
        .map_err(|e| ApiError::Internal(format!("writing the report CSV: {e}")))
}

fn csv_response(body: Vec<u8>, name: &str) -> ApiResult<Response> {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::speed::{SpeedBuilder, SpeedSample};

    #[test]
    fn csv_has_a_header_and_a_row_per_group() {
        let mut b = SpeedBuilder::new(1_000_000);
        b.add(&SpeedSample {
            rep: None,
            channel: Some("web".into()),
            captured_at: 0,
            first_touch_at: Some(60_000),
            sla_due: None,
        });
        let csv = String::from_utf8(speed_csv(&b.finish()).unwrap()).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], SPEED_HEADER.join(","));
        assert_eq!(lines[1], "overall,all,1,1,0,60,60,1,1,1,0,0,0,0,0,");
        assert_eq!(lines[2], "rep,unassigned,1,1,0,60,60,1,1,1,0,0,0,0,0,");
        assert_eq!(lines[3], "channel,web,1,1,0,60,60,1,1,1,0,0,0,0,0,");
        assert_eq!(lines.len(), 4);
    }
}
