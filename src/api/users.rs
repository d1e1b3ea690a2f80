//! `/v1/users`, `/v1/me`, `/v1/auth/login` and `/v1/auth/logout`.

use super::error::{ApiError, ApiResult, Problem};
use super::extract::{
    AdminAuth, Auth, IfMatch, JsonBody, Params, etag, idempotency, page_of, path_id,
};
use super::leads::json_with;
use super::{AppState, replay};
use crate::domain::time::to_rfc3339;
use crate::domain::user::User;
use crate::domain::user::{UserInput, UserPatch, UserView};
use crate::service::{Render, Written};
use crate::store::IdempotentResponse;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, patch_user, delete_user))
        .routes(routes!(create_user_token))
        .routes(routes!(me))
        .routes(routes!(login))
        .routes(routes!(logout))
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<UserView>,
    pub next_cursor: Option<String>,
}

/// Users the caller may see: admins all, managers their team, reps themselves.
#[utoipa::path(get, path = "/v1/users", tag = "users",
    params(("limit" = Option<u32>, Query, description = "Default 50"), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = UserList), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_users(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut q: Params,
) -> ApiResult<Response> {
    let users = state.service.list_users(&p)?;
    let (users, next_cursor) = page_of(
        users,
        |u| u.id.as_u128(),
        &mut q,
        state.config.http.max_page_size,
    )?;
    q.finish()?;
    Ok(Json(UserList {
        items: users.iter().map(UserView::from).collect(),
        next_cursor,
    })
    .into_response())
}

/// Create a user (admin only).
#[utoipa::path(post, path = "/v1/users", tag = "users",
    request_body = UserInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_user(
    State(state): State<AppState>,
    AdminAuth(p): AdminAuth,
    method: Method,
    headers: HeaderMap,
    body: JsonBody<UserInput>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, &method, "/v1/users", &body.raw)?;
    let new = body.value.validate().map_err(ApiError::validation)?;
    let idem = idem.map(|i| {
        let render: Render<User> = Box::new(|u, now| {
            (
                IdempotentResponse {
                    fingerprint: Vec::new(),
                    status: StatusCode::CREATED.as_u16(),
                    location: Some(format!("/v1/users/{}", u.id)),
                    etag: Some(etag(u.version)),
                    body: serde_json::to_vec(&UserView::from(u)).unwrap_or_default(),
                    created_at: now,
                },
                Vec::new(),
            )
        });
        (i, render)
    });
    match state.service.create_user(Some(&p), new, idem).await? {
        Written::Fresh(user) => Ok(json_with(
            StatusCode::CREATED,
            &UserView::from(&user),
            Some(user.version),
            Some(format!("/v1/users/{}", user.id)),
        )),
        Written::Replayed(r) => Ok(replay(r)),
    }
}

/// Read a user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = UserView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_user(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let user = state.service.get_user(&p, path_id(&id, "user")?)?;
    Ok(json_with(
        StatusCode::OK,
        &UserView::from(&user),
        Some(user.version),
        None,
    ))
}

/// Update a user (admins: anything; others: their own name, email and password).
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    request_body(content = UserPatch, content_type = "application/merge-patch+json"),
    responses((status = 200, body = UserView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn patch_user(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
    body: JsonBody<UserPatch>,
) -> ApiResult<Response> {
    let id = path_id(&id, "user")?;
    let patch = body.value.validate().map_err(ApiError::validation)?;
    let user = state.service.patch_user(&p, id, pre, patch).await?;
    Ok(json_with(
        StatusCode::OK,
        &UserView::from(&user),
        Some(user.version),
        None,
    ))
}

/// Delete a user who owns no leads (admin only).
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 412, body = Problem)),
    security(("bearer" = [])))]
async fn delete_user(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
) -> ApiResult<StatusCode> {
    state
        .service
        .delete_user(&p, path_id(&id, "user")?, pre)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct TokenView {
    /// Shown once; only its hash is stored.
    pub token: String,
    pub user_id: Uuid,
}

/// A body that takes no fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// Issue a long-lived API token for a user (admin only).
#[utoipa::path(post, path = "/v1/users/{id}/tokens", tag = "users",
    params(("id" = Uuid, Path)),
    responses((status = 201, body = TokenView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn create_user_token(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    if !p.is_admin() {
        return Err(ApiError::Forbidden("only an admin may issue tokens".into()));
    }
    // The body may be absent; if sent, it is `{}`, since an unknown field is refused everywhere.
    let body = axum::body::to_bytes(request.into_body(), 4096)
        .await
        .map_err(|_| ApiError::Malformed("the body must be empty or `{}`".into()))?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        super::extract::parse_json::<NoFields>(&body)?;
    }
    let user_id = path_id(&id, "user")?;
    let token = state.service.issue_token(user_id).await?;
    Ok((StatusCode::CREATED, Json(TokenView { token, user_id })).into_response())
}

/// The caller.
#[utoipa::path(get, path = "/v1/me", tag = "users",
    responses((status = 200, body = UserView), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn me(Auth(p): Auth) -> Response {
    json_with(
        StatusCode::OK,
        &UserView::from(&p.user),
        Some(p.user.version),
        None,
    )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginView {
    pub token: String,
    pub expires_at: String,
}

/// Exchange an email and password for a session token.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth",
    request_body = LoginInput,
    responses((status = 200, body = LoginView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 422, body = Problem)))]
async fn login(
    State(state): State<AppState>,
    body: JsonBody<LoginInput>,
) -> ApiResult<Json<LoginView>> {
    let out = state
        .service
        .login(&body.value.email, &body.value.password)
        .await?;
    Ok(Json(LoginView {
        token: out.token,
        expires_at: to_rfc3339(out.expires_at),
    }))
}

/// Revoke the token this request carries.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn logout(State(state): State<AppState>, Auth(p): Auth) -> ApiResult<StatusCode> {
    state.service.logout(&p).await?;
    Ok(StatusCode::NO_CONTENT)
}
