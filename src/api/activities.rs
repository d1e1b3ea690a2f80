//! Activities: `POST /v1/activities`, `GET|POST /v1/leads/{id}/activities`, and the timeline.

use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, JsonBody, Params, idempotency, path_id};
use super::leads::json_with;
use super::{AppState, replay};
use crate::domain::activity::{ActivityInput, ActivityView, TimelineItem};
use crate::service::{ActivityCreated, Written};
use crate::store::IdempotentResponse;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_activity))
        .routes(routes!(create_lead_activity, list_lead_activities))
        .routes(routes!(timeline))
}

/// An activity, and whether its lead was created for it.
#[derive(Serialize, ToSchema)]
pub struct ActivityCreatedView {
    #[serde(flatten)]
    pub activity: ActivityView,
    pub lead_created: bool,
}

async fn create(
    state: AppState,
    p: crate::domain::user::Principal,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: JsonBody<ActivityInput>,
    lead: Option<Uuid>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, &method, &path, &body.raw)?;
    let new = body.value.validate(lead).map_err(ApiError::validation)?;
    let idem = idem.map(|i| {
        let render: crate::service::Render<ActivityCreated> = Box::new(|o, now| {
            (
                IdempotentResponse {
                    fingerprint: Vec::new(),
                    status: 201,
                    location: Some(format!("/v1/leads/{}/activities", o.activity.lead_id)),
                    etag: None,
                    body: serde_json::to_vec(&view(o)).unwrap_or_default(),
                    created_at: now,
                },
                vec![o.activity.lead_id],
            )
        });
        (i, render)
    });
    match state.service.create_activity(&p, new, idem).await? {
        Written::Fresh(o) => Ok(json_with(
            StatusCode::CREATED,
            &view(&o),
            None,
            Some(format!("/v1/leads/{}/activities", o.activity.lead_id)),
        )),
        Written::Replayed(r) => Ok(replay(r)),
    }
}

fn view(o: &ActivityCreated) -> ActivityCreatedView {
    ActivityCreatedView {
        activity: ActivityView::from(&o.activity),
        lead_created: o.lead_created,
    }
}

/// Record an activity for a lead given by `lead_id` or `email` (an unknown email creates the lead).
#[utoipa::path(post, path = "/v1/activities", tag = "activities",
    request_body = ActivityInput,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = ActivityCreatedView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_activity(
    State(state): State<AppState>,
    Auth(p): Auth,
    method: Method,
    headers: HeaderMap,
    body: JsonBody<ActivityInput>,
) -> ApiResult<Response> {
    create(
        state,
        p,
        method,
        "/v1/activities".into(),
        headers,
        body,
        None,
    )
    .await
}

/// Record an activity for this lead.
#[utoipa::path(post, path = "/v1/leads/{id}/activities", tag = "activities",
    request_body = ActivityInput,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = ActivityCreatedView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_lead_activity(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: JsonBody<ActivityInput>,
) -> ApiResult<Response> {
    let lead = path_id(&id, "lead")?;
    create(
        state,
        p,
        method,
        format!("/v1/leads/{lead}/activities"),
        headers,
        body,
        Some(lead),
    )
    .await
}

#[derive(Serialize, ToSchema)]
pub struct ActivityPage {
    pub items: Vec<ActivityView>,
    pub next_cursor: Option<String>,
}

/// A lead's activities, newest first.
#[utoipa::path(get, path = "/v1/leads/{id}/activities", tag = "activities",
    params(("id" = Uuid, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = ActivityPage), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_lead_activities(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    mut q: Params,
) -> ApiResult<Response> {
    let lead = path_id(&id, "lead")?;
    let limit = q.limit(state.config.http.max_page_size)?;
    let after = q.cursor()?;
    let tag = q.finish()?;
    let (items, next) = state.service.list_activities(&p, lead, after, limit)?;
    Ok(Json(ActivityPage {
        items: items.iter().map(ActivityView::from).collect(),
        next_cursor: next.map(|pos| tag.cursor(pos)),
    })
    .into_response())
}

#[derive(Serialize, ToSchema)]
pub struct TimelineView {
    pub items: Vec<TimelineItem>,
    pub next_cursor: Option<String>,
}

/// Activities and system events (created, merged, updated, stage changed, assigned), newest first.
#[utoipa::path(get, path = "/v1/leads/{id}/timeline", tag = "activities",
    params(("id" = Uuid, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = TimelineView), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn timeline(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    mut q: Params,
) -> ApiResult<Response> {
    let lead = path_id(&id, "lead")?;
    let limit = q.limit(state.config.http.max_page_size)?;
    let after = q.cursor()?;
    let tag = q.finish()?;
    let page = state.service.timeline(&p, lead, after, limit)?;
    Ok(Json(TimelineView {
        items: page.items.into_iter().map(|(_, _, item)| item).collect(),
        next_cursor: page.next.map(|pos| tag.cursor(pos)),
    })
    .into_response())
}
