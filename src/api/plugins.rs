//! Scores and plugins: `GET /v1/leads/{id}/score`, and the admin's plugin tools —
//! `GET /v1/admin/plugins`, `POST /v1/admin/plugins/reload`, `POST /v1/admin/plugins/dry-run`
//! and `POST /v1/admin/rescore` (a bulk route: it may run longer than the request timeout).

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{AdminAuth, Auth, JsonBody, Params, path_id};
use crate::domain::lead::LeadInput;
use crate::script::{DryRun, Hook, PluginsReport, ReloadReport, StatsInput};
use crate::service::{RescoreReport, ScoreView};
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(lead_score))
        .routes(routes!(plugins_report))
        .routes(routes!(reload))
        .routes(routes!(dry_run))
}

/// Routes that may outlast the request timeout.
pub fn bulk_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(rescore))
}

/// A lead's score: total, parts, the rules that fired and the recent history.
#[utoipa::path(get, path = "/v1/leads/{id}/score", tag = "leads",
    params(("id" = String, Path)),
    responses((status = 200, body = ScoreView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn lead_score(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ScoreView>> {
    let id = path_id(&id, "lead")?;
    Ok(Json(state.service.lead_score(&p, id)?))
}

/// The loaded scripts: their hooks, calls, errors (with the last one), mean time per call,
/// compile errors, which file answers each hook, and the limits.
#[utoipa::path(get, path = "/v1/admin/plugins", tag = "admin",
    responses((status = 200, body = PluginsReport), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn plugins_report(
    State(state): State<AppState>,
    AdminAuth(_p): AdminAuth,
) -> ApiResult<Json<PluginsReport>> {
    Ok(Json(state.service.plugins().report()))
}

/// Compiles what changed in the plugins directory now. A file that fails to compile keeps
/// its last good version running.
#[utoipa::path(post, path = "/v1/admin/plugins/reload", tag = "admin",
    responses((status = 200, body = ReloadReport), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn reload(
    State(state): State<AppState>,
    AdminAuth(_p): AdminAuth,
) -> ApiResult<Json<ReloadReport>> {
    let plugins = state.service.plugins().clone();
    let now = state.service.now();
    let report = tokio::task::spawn_blocking(move || plugins.reload(now))
        .await
        .map_err(|e| ApiError::Internal(format!("plugin reload panicked: {e}")))?;
    Ok(Json(report))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// classify, enrich, score, route, sla, on_event or stage_gate.
    #[schema(pattern = "^(classify|enrich|score|route|sla|on_event|stage_gate)$")]
    pub hook: String,
    /// A made-up lead (fields as in `POST /v1/leads`)...
    pub lead: Option<LeadInput>,
    /// ...or a stored one, with its real activity.
    pub lead_id: Option<Uuid>,
    /// Activity for a made-up lead.
    pub stats: Option<StatsInput>,
    /// The other arguments of route, on_event and stage_gate, in order.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub args: Vec<serde_json::Value>,
}

/// Runs one hook on a lead without storing anything, and shows what it answered (or why the
/// built-in rule answered instead).
#[utoipa::path(post, path = "/v1/admin/plugins/dry-run", tag = "admin", request_body = DryRunRequest,
    responses((status = 200, body = DryRun), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn dry_run(
    State(state): State<AppState>,
    AdminAuth(p): AdminAuth,
    body: JsonBody<DryRunRequest>,
) -> ApiResult<Json<DryRun>> {
    let req = body.value;
    let hook = Hook::parse(&req.hook).ok_or_else(|| {
        ApiError::field(
            "hook",
            "must be classify, enrich, score, route, sla, on_event or stage_gate",
        )
    })?;
    crate::script::check_dry_run_args(hook, &req.args).map_err(|m| ApiError::field("args", m))?;
    let now = state.service.now();
    let (lead, stats) = match (req.lead, req.lead_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "lead_id",
                "give `lead` or `lead_id`, not both",
            ));
        }
        (None, None) => return Err(ApiError::field("lead", "give `lead` or `lead_id`")),
        (None, Some(id)) => {
            if req.stats.is_some() {
                return Err(ApiError::field(
                    "stats",
                    "a stored lead is scored with its own activity",
                ));
            }
            state.service.lead_with_stats(&p, id)?
        }
        (Some(input), None) => {
            let (mut new, cap) = crate::service::api_capture(input, state.service.rules())
                .map_err(ApiError::validation)?;
            // The channel the built-in rules give it, as a capture would.
            state.service.built_in_channel(&mut new, &cap);
            let stats = req.stats.unwrap_or_default();
            (stats.lead_of(new, now), stats.into_stats(now))
        }
    };
    let plugins = state.service.plugins().clone();
    let out =
        tokio::task::spawn_blocking(move || plugins.dry_run(hook, &lead, &stats, req.args, now))
            .await
            .map_err(|e| ApiError::Internal(format!("dry run panicked: {e}")))?;
    Ok(Json(out))
}

/// Scores every lead with the rules in force. With `dry_run=true`, only counts how many leads
/// would change score and stage, with examples; otherwise applies the changes in small
/// batches that other writes interleave with.
#[utoipa::path(post, path = "/v1/admin/rescore", tag = "admin",
    params(("dry_run" = Option<bool>, Query, description = "Only report (default false)")),
    responses((status = 200, body = RescoreReport), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn rescore(
    State(state): State<AppState>,
    AdminAuth(_p): AdminAuth,
    mut q: Params,
) -> ApiResult<Json<RescoreReport>> {
    let dry_run = q.flag("dry_run")?;
    q.finish()?;
    let report = state.service.rescore(dry_run, |_, _| {}).await?;
    Ok(Json(report))
}
