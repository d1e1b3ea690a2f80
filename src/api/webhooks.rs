//! Webhook subscriptions and their delivery log over HTTP (admins only): `/v1/webhooks`,
//! `/v1/webhooks/{id}`, `/v1/webhooks/{id}/deliveries` and the replay of one delivery.

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{AdminAuth, Auth, IfMatch, JsonBody, Params, idempotency, page_of, path_id};
use super::leads::json_with;
use super::{created_once, replay};
use crate::domain::time::{opt_rfc3339, to_rfc3339};
use crate::domain::webhook::{Delivery, DeliveryStatus, Webhook, WebhookInput, WebhookPatch};
use crate::service::Written;
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
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, patch_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(replay_delivery))
}

/// A subscription. `secret` appears only in the answer to its create.
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    /// The signing secret: shown once, when the webhook is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
}

impl WebhookView {
    fn of(w: &Webhook, with_secret: bool) -> Self {
        WebhookView {
            id: w.id,
            url: w.url.clone(),
            events: w.events.clone(),
            active: w.active,
            secret: with_secret.then(|| w.secret.clone()),
            created_at: to_rfc3339(w.created_at),
            updated_at: to_rfc3339(w.updated_at),
            version: w.version,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
    pub next_cursor: Option<String>,
}

/// One event for one webhook, and how its delivery went.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event: String,
    pub seq: u64,
    /// When the change happened.
    pub at: String,
    pub entity: String,
    pub entity_id: Uuid,
    pub lead_id: Option<Uuid>,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// Attempts since it was created or last replayed.
    pub attempts: u32,
    pub replays: u32,
    pub first_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    /// When it will be tried (null while an earlier delivery of its lead is pending, or the
    /// webhook is paused).
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    pub created_at: String,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        DeliveryView {
            id: d.id,
            webhook_id: d.webhook_id,
            event: d.event.clone(),
            seq: d.seq,
            at: to_rfc3339(d.at),
            entity: d.entity.clone(),
            entity_id: d.entity_id,
            lead_id: d.lead_id,
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            replays: d.replays,
            first_attempt_at: opt_rfc3339(d.first_attempt_at),
            last_attempt_at: opt_rfc3339(d.last_attempt_at),
            next_attempt_at: opt_rfc3339(d.next_attempt_at),
            last_status_code: d.last_status_code,
            last_error: d.last_error.clone(),
            delivered_at: opt_rfc3339(d.delivered_at),
            created_at: to_rfc3339(d.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPageView {
    pub items: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

fn webhook_response(status: StatusCode, w: &Webhook, with_secret: bool) -> Response {
    json_with(
        status,
        &WebhookView::of(w, with_secret),
        Some(w.version),
        (status == StatusCode::CREATED).then(|| format!("/v1/webhooks/{}", w.id)),
    )
}

/// List webhook subscriptions (admins).
#[utoipa::path(get, path = "/v1/webhooks", tag = "integration",
    params(("limit" = Option<u32>, Query, description = "Default 50"), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = WebhookList), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_webhooks(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut q: Params,
) -> ApiResult<Json<WebhookList>> {
    let hooks = state.service.webhooks(&p)?;
    let (hooks, next_cursor) = page_of(
        hooks,
        |w| w.id.as_u128(),
        &mut q,
        state.config.http.max_page_size,
    )?;
    q.finish()?;
    Ok(Json(WebhookList {
        items: hooks.iter().map(|w| WebhookView::of(w, false)).collect(),
        next_cursor,
    }))
}

/// Subscribe a URL to events (admins). The answer holds the signing secret, the only time it
/// is shown; one is generated when none is given. URLs on private, loopback and other
/// non-public addresses are refused unless the server allows them.
#[utoipa::path(post, path = "/v1/webhooks", tag = "integration", request_body = WebhookInput,
    responses((status = 201, body = WebhookView), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_webhook(
    State(state): State<AppState>,
    AdminAuth(p): AdminAuth,
    method: Method,
    headers: HeaderMap,
    body: JsonBody<WebhookInput>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, &method, "/v1/webhooks", &body.raw)?;
    let input = body.value.validate().map_err(ApiError::validation)?;
    let idem = idem.map(|i| {
        let answer = created_once(|w: &Webhook| {
            let body = serde_json::to_vec(&WebhookView::of(w, true)).unwrap_or_default();
            (
                body,
                w.version,
                format!("/v1/webhooks/{}", w.id),
                Vec::new(),
            )
        });
        (i, answer)
    });
    match state.service.create_webhook(&p, input, idem).await? {
        Written::Fresh(w) => Ok(webhook_response(StatusCode::CREATED, &w, true)),
        Written::Replayed(r) => Ok(replay(r)),
    }
}

/// One webhook subscription (its secret is not shown).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "integration", params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_webhook(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = path_id(&id, "webhook")?;
    let w = state.service.webhook(&p, id)?;
    Ok(webhook_response(StatusCode::OK, &w, false))
}

/// Change a webhook (merge patch): its URL, events, secret (rotation; not shown back) or
/// `active` (false pauses it: nothing is queued for it or attempted until it is resumed).
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "integration", request_body = WebhookPatch,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn patch_webhook(
    State(state): State<AppState>,
    AdminAuth(p): AdminAuth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
    body: JsonBody<WebhookPatch>,
) -> ApiResult<Response> {
    let id = path_id(&id, "webhook")?;
    let patch = body.value.validate().map_err(ApiError::validation)?;
    let w = state.service.update_webhook(&p, id, patch, pre).await?;
    Ok(webhook_response(StatusCode::OK, &w, false))
}

/// Delete a webhook and its delivery log; pending deliveries are dropped.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "integration", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("bearer" = [])))]
async fn delete_webhook(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
) -> ApiResult<StatusCode> {
    let id = path_id(&id, "webhook")?;
    state.service.delete_webhook(&p, id, pre).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's delivery log, newest first: attempts, last status code and error, next attempt.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "integration",
    params(("id" = Uuid, Path), ("status" = Option<String>, Query, description = "pending, delivered or dead",
            pattern = "^(pending|delivered|dead)$"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = DeliveryPageView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_deliveries(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    mut q: Params,
) -> ApiResult<Json<DeliveryPageView>> {
    let id = path_id(&id, "webhook")?;
    let status = q.parse("status", |s| {
        DeliveryStatus::parse(s).ok_or_else(|| "must be pending, delivered or dead".to_owned())
    })?;
    let limit = q.limit(state.config.http.max_page_size)?;
    let before = q.id_cursor()?;
    let tag = q.finish()?;
    let (items, next) = state.service.deliveries(&p, id, status, before, limit)?;
    Ok(Json(DeliveryPageView {
        items: items.iter().map(DeliveryView::from).collect(),
        next_cursor: next.map(|n| tag.id_cursor(n)),
    }))
}

/// One delivery of a webhook.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries/{delivery_id}", tag = "integration",
    params(("id" = Uuid, Path), ("delivery_id" = Uuid, Path)),
    responses((status = 200, body = DeliveryView, headers(("ETag" = String))), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_delivery(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((id, delivery)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = path_id(&id, "webhook")?;
    let delivery = path_id(&delivery, "delivery")?;
    let d = state
        .service
        .delivery(&p, id, delivery)?
        .ok_or(ApiError::NotFound("delivery"))?;
    Ok(super::leads::json_digest_tagged(&DeliveryView::from(&d)))
}

/// Queue a delivery again, whatever its status (dead and delivered ones too), with a fresh
/// retry window. It keeps its delivery id, so receivers can recognise a repeat.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/replay", tag = "integration",
    params(("id" = Uuid, Path), ("delivery_id" = Uuid, Path)),
    responses((status = 202, body = DeliveryView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn replay_delivery(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((id, delivery)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = path_id(&id, "webhook")?;
    let delivery = path_id(&delivery, "delivery")?;
    let d = state.service.replay_delivery(&p, id, delivery).await?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryView::from(&d))).into_response())
}
