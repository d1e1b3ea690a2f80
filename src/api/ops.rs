//! The change feed and operational endpoints: `/v1/changes`, `/healthz`, `/readyz`.

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Params};
use crate::domain::time::to_rfc3339;
use crate::store::{Entity, Op};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(changes))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Serialize, ToSchema)]
pub struct ChangeView {
    pub seq: u64,
    pub entity: Entity,
    pub id: Uuid,
    pub op: Op,
    pub at: String,
    /// The lead the changed record belongs to (the lead itself for a lead), if any.
    pub lead_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct ChangesView {
    pub items: Vec<ChangeView>,
    /// Pass as `since` next time.
    pub next: u64,
}

/// Changes after `since`, limited to what the caller may see.
#[utoipa::path(get, path = "/v1/changes", tag = "integration",
    params(("since" = Option<u64>, Query, description = "Last seq you have seen (default 0)"),
        ("limit" = Option<u32>, Query, description = "Default 50")),
    responses((status = 200, body = ChangesView), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn changes(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut q: Params,
) -> ApiResult<Json<ChangesView>> {
    let since = q
        .parse("since", |s| {
            s.parse::<u64>()
                .map_err(|_| "must be a whole number".to_owned())
        })?
        .unwrap_or(0);
    let limit = q.limit(state.config.http.max_page_size)?;
    q.finish()?;
    let page = state.service.changes(&p, since, limit)?;
    Ok(Json(ChangesView {
        items: page
            .items
            .into_iter()
            .map(|(seq, e)| ChangeView {
                seq,
                entity: e.entity,
                id: e.id,
                op: e.op,
                at: to_rfc3339(e.at),
                lead_id: e.lead_id,
            })
            .collect(),
        next: page.next,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub storage: &'static str,
    /// Seq of the newest durable change.
    pub changelog_seq: u64,
    pub leads: u64,
    /// Seq of the newest change the search index reflects.
    pub search_indexed_seq: u64,
    /// Changes not yet searchable.
    pub search_lag: u64,
    /// Segments of the search index; a query visits each.
    pub search_segments: u64,
    /// No merge of the index's segments is running or due (they are merged after the indexer
    /// has been idle for `search.compact_after_idle_secs`).
    pub search_compacted: bool,
}

/// The search index may trail the changelog by this many changes and still count as ready.
const READY_SEARCH_LAG: u64 = 1000;

/// Storage is open and its last sync succeeded, the writer is running and the search index
/// has caught up (within 1000 changes; `search_lag` says how far behind it is).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Problem)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<Response> {
    let store = state.service.store();
    if !store.writer_alive() {
        return Err(ApiError::Unavailable(
            "the storage writer is not running".into(),
        ));
    }
    if let Some(why) = store.sync_failure() {
        return Err(ApiError::Unavailable(format!(
            "the data file failed to sync ({why}); writes fail until the server is restarted"
        )));
    }
    let snap = store.read()?;
    let changelog_seq = *store.committed_seq().borrow();
    let search_indexed_seq = state.search.indexed_seq();
    let search_lag = changelog_seq.saturating_sub(search_indexed_seq);
    if search_lag > READY_SEARCH_LAG {
        return Err(ApiError::Unavailable(format!(
            "the search index is catching up: {search_lag} changes behind"
        )));
    }
    let body = Readiness {
        status: "ready",
        storage: "ok",
        changelog_seq,
        leads: snap.lead_count()?,
        search_indexed_seq,
        search_lag,
        search_segments: state.search.segment_count() as u64,
        search_compacted: state.search.compacted(),
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}
