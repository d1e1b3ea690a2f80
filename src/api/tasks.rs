//! `/v1/tasks`: create, list, read, patch and delete tasks, and the task view (with `overdue`
//! computed from the service clock).

use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, IfMatch, JsonBody, Params, etag, idempotency, parse_uuid, path_id};
use super::leads::json_with;
use super::{AppState, replay};
use crate::domain::time::{Millis, opt_rfc3339, to_rfc3339};
use crate::domain::work::{Task, TaskInput, check_due, check_title};
use crate::domain::{Problems, patch_field};
use crate::service::{Render, TaskChanges, TaskFilter, Written, is_overdue};
use crate::store::IdempotentResponse;
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
        .routes(routes!(create_task, list_tasks))
        .routes(routes!(get_task, patch_task, delete_task))
}

/// A task as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
    pub lead_id: Option<Uuid>,
    pub owner_id: Uuid,
    pub title: String,
    pub due_at: Option<String>,
    pub done: bool,
    pub done_at: Option<String>,
    /// Open and past its due time (by the server's clock).
    pub overdue: bool,
}

impl TaskView {
    pub fn new(t: &Task, now: Millis) -> Self {
        TaskView {
            id: t.id,
            created_at: to_rfc3339(t.created_at),
            updated_at: to_rfc3339(t.updated_at),
            version: t.version,
            lead_id: t.lead_id,
            owner_id: t.owner_id,
            title: t.title.clone(),
            due_at: opt_rfc3339(t.due_at),
            done: t.done,
            done_at: opt_rfc3339(t.done_at),
            overdue: is_overdue(t, now),
        }
    }
}

/// A page of tasks.
#[derive(Serialize, ToSchema)]
pub struct TaskPageView {
    pub items: Vec<TaskView>,
    pub next_cursor: Option<String>,
}

/// A JSON merge patch of a task.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub title: Option<Option<String>>,
    /// RFC 3339; `null` clears it.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub due_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<bool>)]
    pub done: Option<Option<bool>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Uuid>)]
    pub owner_id: Option<Option<Uuid>>,
    /// `null` detaches the task from its lead.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Uuid>)]
    pub lead_id: Option<Option<Uuid>>,
}

impl TaskPatch {
    pub fn validate(self) -> Result<TaskChanges, Vec<crate::domain::FieldError>> {
        let mut p = Problems::default();
        let mut required = |field: &str| p.push(field, "cannot be null");
        let title = match self.title {
            Some(None) => {
                required("title");
                None
            }
            other => other.flatten(),
        };
        let done = match self.done {
            Some(None) => {
                required("done");
                None
            }
            other => other.flatten(),
        };
        let owner_id = match self.owner_id {
            Some(None) => {
                required("owner_id");
                None
            }
            other => other.flatten(),
        };
        let title = title.and_then(|t| check_title(&t).map_err(|e| p.0.push(e)).ok());
        let due_at = match self.due_at {
            None => None,
            Some(None) => Some(None),
            Some(Some(d)) => check_due("due_at", Some(&d)).map_err(|e| p.0.push(e)).ok(),
        };
        p.finish(TaskChanges {
            title,
            due_at,
            done,
            owner_id,
            lead_id: self.lead_id,
        })
    }
}

fn task_location(id: Uuid) -> String {
    format!("/v1/tasks/{id}")
}

/// Create a task, for the caller unless `owner_id` names someone they may assign to.
#[utoipa::path(post, path = "/v1/tasks", tag = "work",
    request_body = TaskInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = TaskView, headers(("ETag" = String), ("Location" = String))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_task(
    State(state): State<AppState>,
    Auth(p): Auth,
    method: Method,
    headers: HeaderMap,
    body: JsonBody<TaskInput>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, &method, "/v1/tasks", &body.raw)?;
    let new = body.value.validate().map_err(ApiError::validation)?;
    let idem = idem.map(|i| {
        let render: Render<Task> = Box::new(|t, now| {
            (
                IdempotentResponse {
                    fingerprint: Vec::new(),
                    status: StatusCode::CREATED.as_u16(),
                    location: Some(task_location(t.id)),
                    etag: Some(etag(t.version)),
                    body: serde_json::to_vec(&TaskView::new(t, now)).unwrap_or_default(),
                    created_at: now,
                },
                t.lead_id.into_iter().collect(),
            )
        });
        (i, render)
    });
    match state.service.create_task(&p, new, idem).await? {
        Written::Fresh(t) => Ok(json_with(
            StatusCode::CREATED,
            &TaskView::new(&t, state.service.now()),
            Some(t.version),
            Some(task_location(t.id)),
        )),
        Written::Replayed(r) => Ok(replay(r)),
    }
}

/// List tasks the caller may see (admins all, managers their team's, reps their own), by due
/// time with undated tasks last.
#[utoipa::path(get, path = "/v1/tasks", tag = "work",
    params(
        ("owner_id" = Option<Uuid>, Query),
        ("team" = Option<String>, Query, description = "Tasks of every user on this team (managers and admins)"),
        ("lead_id" = Option<Uuid>, Query),
        ("done" = Option<bool>, Query),
        ("overdue" = Option<bool>, Query, description = "true: only open tasks past their due time"),
        ("limit" = Option<u32>, Query, description = "Default 50"), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = TaskPageView), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_tasks(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut q: Params,
) -> ApiResult<Response> {
    let filter = TaskFilter {
        owner_id: q.parse("owner_id", parse_uuid)?,
        team: q.take("team").map(|t| t.trim().to_owned()),
        lead_id: q.parse("lead_id", parse_uuid)?,
        done: q.parse("done", parse_bool)?,
        overdue: q.flag("overdue")?,
    };
    let limit = q.limit(state.config.http.max_page_size)?;
    let after = q.cursor()?;
    let tag = q.finish()?;
    let page = state.service.list_tasks(&p, &filter, limit, after)?;
    let now = state.service.now();
    Ok(Json(TaskPageView {
        items: page.items.iter().map(|t| TaskView::new(t, now)).collect(),
        next_cursor: page.next.map(|pos| tag.cursor(pos)),
    })
    .into_response())
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("must be true or false".to_owned()),
    }
}

/// Read one task.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "work",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = TaskView, headers(("ETag" = String))),
        (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_task(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = state.service.get_task(&p, path_id(&id, "task")?)?;
    Ok(json_with(
        StatusCode::OK,
        &TaskView::new(&t, state.service.now()),
        Some(t.version),
        None,
    ))
}

/// Update a task with a JSON merge patch (RFC 7396). Honours `If-Match`. Marking it done
/// cancels its reminder; a new due time or re-opening schedules it again.
#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "work",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "The ETag you last saw")),
    request_body(content = TaskPatch, content_type = "application/merge-patch+json"),
    responses((status = 200, body = TaskView, headers(("ETag" = String))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 415, body = Problem),
        (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn patch_task(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
    body: JsonBody<TaskPatch>,
) -> ApiResult<Response> {
    let id = path_id(&id, "task")?;
    let changes = body.value.validate().map_err(ApiError::validation)?;
    let t = state.service.patch_task(&p, id, pre, changes).await?;
    Ok(json_with(
        StatusCode::OK,
        &TaskView::new(&t, state.service.now()),
        Some(t.version),
        None,
    ))
}

/// Delete a task and its pending reminder. Honours `If-Match`.
#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "work",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("bearer" = [])))]
async fn delete_task(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
) -> ApiResult<StatusCode> {
    state
        .service
        .delete_task(&p, path_id(&id, "task")?, pre)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
