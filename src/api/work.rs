//! The sales floor over HTTP: pools, the lead actions (assign, claim, release, touch), a
//! lead's SLA clock, the caller's notifications, and the test clock of a server started with
//! `--test-clock`.

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{AdminAuth, Auth, JsonBody, Params, idempotency, page_of, path_id};
use super::leads::{LeadPage, json_with};
use super::{created_once, replay};
use crate::domain::lead::LeadView;
use crate::domain::sla::{SlaPolicy, SlaStep};
use crate::domain::time::{opt_rfc3339, parse_rfc3339, to_rfc3339};
use crate::domain::work::{Notification, Pool, PoolInput, Timer};
use crate::service::{ListParams, Target, Written};
use crate::store::lead_index::SortKey;
use crate::store::query::{LeadFilter, Position};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pools, create_pool))
        .routes(routes!(get_pool))
        .routes(routes!(pool_leads))
        .routes(routes!(assign))
        .routes(routes!(claim))
        .routes(routes!(release))
        .routes(routes!(touch))
        .routes(routes!(lead_sla))
        .routes(routes!(notifications))
        .routes(routes!(read_notification))
        .routes(routes!(get_clock, move_clock))
}

#[derive(Serialize, ToSchema)]
pub struct PoolView {
    pub id: Uuid,
    pub name: String,
    pub max_claims_per_rep: u32,
    pub created_at: String,
}

impl From<&Pool> for PoolView {
    fn from(p: &Pool) -> Self {
        PoolView {
            id: p.id,
            name: p.name.clone(),
            max_claims_per_rep: p.max_claims_per_rep,
            created_at: to_rfc3339(p.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PoolList {
    pub items: Vec<PoolView>,
    pub next_cursor: Option<String>,
}

/// List pools (every role: reps claim from them).
#[utoipa::path(get, path = "/v1/pools", tag = "work",
    params(("limit" = Option<u32>, Query, description = "Default 50"), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = PoolList), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_pools(
    State(state): State<AppState>,
    Auth(_p): Auth,
    mut q: Params,
) -> ApiResult<Json<PoolList>> {
    let pools = state.service.pools()?;
    let (pools, next_cursor) = page_of(
        pools,
        |p| p.id.as_u128(),
        &mut q,
        state.config.http.max_page_size,
    )?;
    q.finish()?;
    Ok(Json(PoolList {
        items: pools.iter().map(PoolView::from).collect(),
        next_cursor,
    }))
}

/// One pool (every role: reps claim from it).
#[utoipa::path(get, path = "/v1/pools/{id}", tag = "work", params(("id" = Uuid, Path)),
    responses((status = 200, body = PoolView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_pool(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let pool = state.service.pool(path_id(&id, "pool")?)?;
    Ok(json_with(
        StatusCode::OK,
        &PoolView::from(&pool),
        Some(pool.version),
        None,
    ))
}

/// Create a pool (admins).
#[utoipa::path(post, path = "/v1/pools", tag = "work", request_body = PoolInput,
    responses((status = 201, body = PoolView), (status = 403, body = Problem),
        (status = 409, description = "A pool of that name exists", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_pool(
    State(state): State<AppState>,
    AdminAuth(p): AdminAuth,
    method: Method,
    headers: HeaderMap,
    body: JsonBody<PoolInput>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, &method, "/v1/pools", &body.raw)?.map(|i| {
        let answer = created_once(|pool: &Pool| {
            let body = serde_json::to_vec(&PoolView::from(pool)).unwrap_or_default();
            (
                body,
                pool.version,
                format!("/v1/pools/{}", pool.id),
                Vec::new(),
            )
        });
        (i, answer)
    });
    match state.service.create_pool(&p, body.value, idem).await? {
        Written::Fresh(pool) => Ok(json_with(
            StatusCode::CREATED,
            &PoolView::from(&pool),
            Some(pool.version),
            Some(format!("/v1/pools/{}", pool.id)),
        )),
        Written::Replayed(r) => Ok(replay(r)),
    }
}

/// The leads waiting in a pool, newest first.
#[utoipa::path(get, path = "/v1/pools/{id}/leads", tag = "work",
    params(("id" = Uuid, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = LeadPage), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn pool_leads(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    mut q: Params,
) -> ApiResult<Response> {
    let id = path_id(&id, "pool")?;
    state.service.pool(id)?;
    let limit = q.limit(state.config.http.max_page_size)?;
    let after = q.cursor_as(Position::from_bytes)?;
    let tag = q.finish()?;
    let page = state.service.list_leads(
        &p,
        ListParams {
            filter: LeadFilter {
                pool_id: Some(id),
                owner: Some(None),
                ..LeadFilter::default()
            },
            sort: SortKey::Created,
            descending: true,
            limit,
            after,
        },
    )?;
    Ok(Json(LeadPage {
        items: page.items.iter().map(LeadView::from).collect(),
        next_cursor: page.next.map(|pos| tag.key_cursor(&pos.to_bytes())),
    })
    .into_response())
}

/// Give a lead to a rep (`owner_id`) or move it to a pool (`pool_id`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignInput {
    pub owner_id: Option<Uuid>,
    pub pool_id: Option<Uuid>,
}

fn lead_response(lead: &crate::domain::lead::Lead) -> Response {
    json_with(
        StatusCode::OK,
        &LeadView::from(lead),
        Some(lead.version),
        None,
    )
}

/// Assign a lead to a rep or move it to a pool (managers and admins).
#[utoipa::path(post, path = "/v1/leads/{id}/assign", tag = "work", request_body = AssignInput,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = LeadView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "The rep is at capacity", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn assign(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: JsonBody<AssignInput>,
) -> ApiResult<Response> {
    let id = path_id(&id, "lead")?;
    let target = match (body.value.owner_id, body.value.pool_id) {
        (Some(o), None) => Target::Owner(o),
        (None, Some(pool)) => Target::Pool(pool),
        _ => {
            return Err(ApiError::field(
                "owner_id",
                "give exactly one of owner_id and pool_id",
            ));
        }
    };
    Ok(lead_response(&state.service.assign(&p, id, target).await?))
}

/// Claim a lead from its pool. Of two reps claiming at once, one gets 200 and the other 409.
#[utoipa::path(post, path = "/v1/leads/{id}/claim", tag = "work", params(("id" = Uuid, Path)),
    responses((status = 200, body = LeadView), (status = 404, body = Problem),
        (status = 409, description = "Already claimed, not in a pool, or a limit reached", body = Problem)),
    security(("bearer" = [])))]
async fn claim(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = path_id(&id, "lead")?;
    Ok(lead_response(&state.service.claim(&p, id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseInput {
    /// Why the lead goes back (kept on its timeline).
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    pub reason: String,
}

/// Return a lead to its pool with a reason.
#[utoipa::path(post, path = "/v1/leads/{id}/release", tag = "work", request_body = ReleaseInput,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = LeadView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn release(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: JsonBody<ReleaseInput>,
) -> ApiResult<Response> {
    let id = path_id(&id, "lead")?;
    Ok(lead_response(
        &state.service.release(&p, id, &body.value.reason).await?,
    ))
}

/// Record a touch by the lead's owner (first touch or follow-up).
#[utoipa::path(post, path = "/v1/leads/{id}/touch", tag = "work", params(("id" = Uuid, Path)),
    responses((status = 200, body = LeadView), (status = 403, description = "Not the owner", body = Problem),
        (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn touch(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = path_id(&id, "lead")?;
    Ok(lead_response(&state.service.touch(&p, id).await?))
}

#[derive(Serialize, ToSchema)]
pub struct TimerView {
    pub kind: String,
    pub due_at: String,
}

impl From<&Timer> for TimerView {
    fn from(t: &Timer) -> Self {
        TimerView {
            kind: t.kind.as_str().to_owned(),
            due_at: to_rfc3339(t.due),
        }
    }
}

/// One step of a late first touch.
#[derive(Serialize, ToSchema)]
pub struct SlaStepView {
    pub step: SlaStep,
    pub due_at: String,
    pub taken: bool,
}

/// A lead's SLA clock.
#[derive(Serialize, ToSchema)]
pub struct SlaClockView {
    pub owner_id: Option<Uuid>,
    pub policy: Option<SlaPolicy>,
    pub assigned_at: Option<String>,
    pub first_touch_due: Option<String>,
    pub first_touch_at: Option<String>,
    pub follow_up_due: Option<String>,
    pub steps_taken: Vec<SlaStep>,
    /// What happens if the first touch stays late, and when, under this owner.
    pub steps: Vec<SlaStepView>,
    /// Pending timers of this lead, soonest first.
    pub timers: Vec<TimerView>,
}

/// A lead's SLA clock and pending timers.
#[utoipa::path(get, path = "/v1/leads/{id}/sla", tag = "work", params(("id" = Uuid, Path)),
    responses((status = 200, body = SlaClockView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn lead_sla(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<SlaClockView>> {
    let id = path_id(&id, "lead")?;
    Ok(Json(sla_clock_view(&state.service.lead_sla(&p, id)?)))
}

pub(super) fn sla_clock_view(v: &crate::service::SlaView) -> SlaClockView {
    let s = v.state.as_ref();
    SlaClockView {
        owner_id: s.map(|s| s.owner_id),
        policy: s.map(|s| s.policy),
        assigned_at: s.map(|s| to_rfc3339(s.assigned_at)),
        first_touch_due: s.map(|s| to_rfc3339(s.first_touch_due)),
        first_touch_at: opt_rfc3339(s.and_then(|s| s.first_touch_at)),
        follow_up_due: opt_rfc3339(s.and_then(|s| s.follow_up_due)),
        steps_taken: s.map(|s| s.steps_taken.clone()).unwrap_or_default(),
        steps: v
            .steps
            .iter()
            .map(|&(step, at)| SlaStepView {
                step,
                due_at: to_rfc3339(at),
                taken: s.is_some_and(|s| s.steps_taken.contains(&step)),
            })
            .collect(),
        timers: v.timers.iter().map(TimerView::from).collect(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct NotificationView {
    pub id: Uuid,
    pub at: String,
    pub kind: String,
    pub recipient_id: Uuid,
    pub lead_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub read_at: Option<String>,
}

impl From<&Notification> for NotificationView {
    fn from(n: &Notification) -> Self {
        NotificationView {
            id: n.id,
            at: to_rfc3339(n.at),
            kind: n.kind.clone(),
            recipient_id: n.recipient_id,
            lead_id: n.lead_id,
            task_id: n.task_id,
            data: serde_json::from_str(&n.data).unwrap_or(serde_json::Value::Null),
            read_at: opt_rfc3339(n.read_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationView>,
    pub next_cursor: Option<String>,
}

/// The caller's notifications (lead.assigned, lead.claimed, lead.released, lead.reclaimed,
/// sla.reminder, sla.escalated, task.due), newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "work",
    params(("kind" = Option<String>, Query), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = NotificationPage), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn notifications(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut q: Params,
) -> ApiResult<Json<NotificationPage>> {
    let kind = q.take("kind");
    let limit = q.limit(state.config.http.max_page_size)?;
    let before = q.id_cursor()?;
    let tag = q.finish()?;
    let items = state.service.notifications(&p, before, limit)?;
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|n| tag.id_cursor(n.id)))
        .flatten();
    Ok(Json(NotificationPage {
        items: items
            .iter()
            .filter(|n| kind.as_deref().is_none_or(|k| n.kind == k))
            .map(NotificationView::from)
            .collect(),
        next_cursor,
    }))
}

/// Mark one of the caller's notifications read.
#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "work", params(("id" = Uuid, Path)),
    responses((status = 200, body = NotificationView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn read_notification(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<NotificationView>> {
    let id = path_id(&id, "notification")?;
    let n = state.service.read_notification(&p, id).await?;
    Ok(Json(NotificationView::from(&n)))
}

#[derive(Serialize, ToSchema)]
pub struct ClockView {
    pub now: String,
}

/// The server's clock (only on a server started with `--test-clock`).
#[utoipa::path(get, path = "/v1/admin/clock", tag = "ops",
    responses((status = 200, body = ClockView), (status = 403, body = Problem), (status = 404, description = "Not a test server", body = Problem)),
    security(("bearer" = [])))]
async fn get_clock(State(state): State<AppState>, Auth(p): Auth) -> ApiResult<Json<ClockView>> {
    test_clock(&state, &p)?;
    Ok(Json(ClockView {
        now: to_rfc3339(state.service.now()),
    }))
}

/// The test clock, for an admin: a server without one has no such route (404); on a test
/// server it is an admin's tool like any other (403 for the rest).
fn test_clock<'s>(
    state: &'s AppState,
    p: &crate::domain::user::Principal,
) -> ApiResult<&'s std::sync::Arc<crate::clock::ManualClock>> {
    let clock = state
        .test_clock
        .as_ref()
        .ok_or(ApiError::NotFound("route"))?;
    if !p.is_admin() {
        return Err(ApiError::Forbidden(
            "only an admin may read or move the clock".into(),
        ));
    }
    Ok(clock)
}

/// The furthest one move of the test clock goes: 100 years.
const MAX_ADVANCE_SECONDS: i64 = 100 * 366 * 24 * 3600;
/// 9999-12-31T23:59:59.999Z, the last time RFC 3339 can write.
const LAST_RFC3339_MS: i64 = 253_402_300_799_999;

/// Move the test clock: `{"advance_seconds": n}` or `{"set": "RFC 3339"}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockInput {
    pub advance_seconds: Option<i64>,
    pub set: Option<String>,
}

/// Move the clock of a server started with `--test-clock` (for black-box tests; such a server
/// is not for production use). Timers due by the new time fire.
#[utoipa::path(post, path = "/v1/admin/clock", tag = "ops", request_body = ClockInput,
    responses((status = 200, body = ClockView), (status = 403, body = Problem), (status = 404, description = "Not a test server", body = Problem),
        (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn move_clock(
    State(state): State<AppState>,
    Auth(p): Auth,
    body: JsonBody<ClockInput>,
) -> ApiResult<Json<ClockView>> {
    let clock = test_clock(&state, &p)?;
    let now = state.service.now();
    let (field, to) = match (body.value.advance_seconds, body.value.set.as_deref()) {
        (Some(s), None) => (
            "advance_seconds",
            now.saturating_add(s.saturating_mul(1000)),
        ),
        (None, Some(t)) => (
            "set",
            parse_rfc3339(t).map_err(|m| ApiError::field("set", m))?,
        ),
        _ => {
            return Err(ApiError::field(
                "advance_seconds",
                "give a number of seconds ≥ 0, or `set` to a time",
            ));
        }
    };
    // Timers, ids and the changelog assume time does not run backwards, and a time past year
    // 9999 has no RFC 3339 form. One move fires at most 100 years of timers.
    if to < now {
        return Err(ApiError::field(field, "the clock only moves forward"));
    }
    if to - now > MAX_ADVANCE_SECONDS * 1000 {
        return Err(ApiError::field(
            field,
            "would move the clock more than 100 years at once",
        ));
    }
    if to > LAST_RFC3339_MS {
        return Err(ApiError::field(
            field,
            "would move the clock past year 9999",
        ));
    }
    clock.set(to);
    Ok(Json(ClockView {
        now: to_rfc3339(state.service.now()),
    }))
}
