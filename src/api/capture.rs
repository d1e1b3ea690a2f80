//! Capture over HTTP: admin form management (`/v1/forms`), the public hosted form (`/f/{key}`),
//! the tracking script and beacon (`/t.js`, `/t`), visitors, likely duplicates and lead merge.
//! Public endpoints apply CORS per form, rate limits per client and form, and spam checks that
//! answer like a success so bots learn nothing.

use super::error::{ApiError, ApiResult, Problem};
use super::extract::{AdminAuth, Auth, IfMatch, JsonBody, Params, etag, path_id};
use super::form_page::{FieldKind, FieldView, FormPage, UiText, render_form, render_thank_you};
use super::leads::json_with;
use super::limits::Claim;
use super::{AppState, CaptureGuards};
use crate::domain::FieldError;
use crate::domain::form::{Form, FormInput, FormView, HONEYPOT, RENDER_TOKEN, normalize_origin};
use crate::domain::lead::LeadView;
use crate::domain::visitor::{PageViewInput, VisitorView};
use crate::service::FillTime;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_forms, create_form))
        .routes(routes!(get_form, patch_form, delete_form))
        .routes(routes!(form_page, submit_form, form_preflight))
        .routes(routes!(form_render_token))
        .routes(routes!(tracker_script))
        .routes(routes!(track, track_preflight))
        .routes(routes!(get_visitor))
        .routes(routes!(list_duplicates))
        .routes(routes!(merge_lead))
}

// ----- admin: forms -----

#[derive(Serialize, ToSchema)]
pub struct FormList {
    pub items: Vec<FormView>,
    /// Always null: every form fits one page.
    pub next_cursor: Option<String>,
}

fn form_response(status: StatusCode, form: &Form) -> Response {
    json_with(
        status,
        &FormView::from(form),
        Some(form.version),
        Some(format!("/v1/forms/{}", form.id)),
    )
}

/// List forms (admin).
#[utoipa::path(get, path = "/v1/forms", tag = "capture",
    responses((status = 200, body = FormList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn list_forms(State(state): State<AppState>, Auth(p): Auth) -> ApiResult<Response> {
    let items = state
        .service
        .forms(&p)?
        .iter()
        .map(FormView::from)
        .collect();
    Ok(axum::Json(FormList {
        items,
        next_cursor: None,
    })
    .into_response())
}

/// Create a form (admin). Its hosted page is `/f/{key}`.
#[utoipa::path(post, path = "/v1/forms", tag = "capture", request_body = FormInput,
    responses((status = 201, body = FormView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, description = "Key taken", body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_form(
    State(state): State<AppState>,
    AdminAuth(p): AdminAuth,
    body: JsonBody<FormInput>,
) -> ApiResult<Response> {
    let form = state.service.create_form(&p, body.value).await?;
    Ok(form_response(StatusCode::CREATED, &form))
}

/// Get a form (admin).
#[utoipa::path(get, path = "/v1/forms/{id}", tag = "capture", params(("id" = Uuid, Path)),
    responses((status = 200, body = FormView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_form(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let form = state.service.form(&p, path_id(&id, "form")?)?;
    Ok(form_response(StatusCode::OK, &form))
}

/// Change a form (admin): any field of the create body; absent fields stay. Honours `If-Match`.
#[utoipa::path(patch, path = "/v1/forms/{id}", tag = "capture",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)), request_body = FormInput,
    responses((status = 200, body = FormView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn patch_form(
    State(state): State<AppState>,
    AdminAuth(p): AdminAuth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
    body: JsonBody<FormInput>,
) -> ApiResult<Response> {
    let form = state
        .service
        .patch_form(&p, path_id(&id, "form")?, pre, body.value)
        .await?;
    Ok(form_response(StatusCode::OK, &form))
}

/// Delete a form (admin). Leads it captured stay.
#[utoipa::path(delete, path = "/v1/forms/{id}", tag = "capture",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("bearer" = [])))]
async fn delete_form(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
) -> ApiResult<StatusCode> {
    state
        .service
        .delete_form(&p, path_id(&id, "form")?, pre)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- public: client address, CORS -----

/// The client's address: the TCP peer, or the `X-Forwarded-For` client when the peer is one of
/// the configured trusted proxies.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        if !state.guards.trusted_proxies.contains(&peer) {
            return Ok(ClientIp(peer));
        }
        // The rightmost address the trusted proxy did not add itself is the client.
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .rfind(|ip| !state.guards.trusted_proxies.contains(ip));
        Ok(ClientIp(forwarded.unwrap_or(peer)))
    }
}

/// The `Origin` of a browser request, if it sent one.
fn origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
        .map(str::to_owned)
}

/// Whether `origin` is this server itself (the hosted page posting to itself).
fn same_host(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    host.is_some() && origin_host.is_some_and(|o| Some(o) == host)
}

/// The origin CORS may echo for `form`, or an error when a browser posts from elsewhere.
fn check_origin(form: &Form, headers: &HeaderMap) -> ApiResult<Option<String>> {
    // Sandboxed frames and file or data pages send `null`: any site can make one, so it
    // cannot be on the list.
    if headers.get(header::ORIGIN).is_some_and(|o| o == "null") {
        return Err(ApiError::Forbidden(
            "a page without an origin (Origin: null) may not post this form".into(),
        ));
    }
    let Some(origin) = origin(headers) else {
        return Ok(None);
    };
    if same_host(&origin, headers) {
        return Ok(None);
    }
    match normalize_origin(&origin) {
        Some(o) if form.allowed_origins.contains(&o) => Ok(Some(origin)),
        _ => Err(ApiError::Forbidden(format!(
            "pages on {origin} may not post this form; add the origin to the form's allowed_origins"
        ))),
    }
}

fn with_cors(mut res: Response, origin: Option<&str>) -> Response {
    if let Some(o) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    res
}

// ----- public: hosted form -----

fn page_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    // The page carries a render token; a cached copy would carry a stale one.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// Renders `form` with `values` and `errors`, in the form's language.
fn render_page(
    form: &Form,
    values: &BTreeMap<String, String>,
    hidden: &[(String, String)],
    errors: &[FieldError],
    status: StatusCode,
) -> ApiResult<Response> {
    let ui = UiText::for_language(&form.language);
    let message = |f: &str| {
        errors.iter().find(|e| e.field == f).map(|e| {
            if e.message == "required" {
                ui.field_required
            } else if f == "email" {
                ui.invalid_email
            } else if f == "phone" {
                ui.invalid_phone
            } else {
                e.message.as_str()
            }
        })
    };
    let action = format!("/f/{}", form.key);
    let page = FormPage {
        title: &form.name,
        language: &form.language,
        action: &action,
        fields: form
            .fields
            .iter()
            .map(|f| FieldView {
                name: &f.name,
                label: &f.label,
                required: f.required,
                kind: FieldKind::for_field(&f.name),
                value: values.get(&f.name).map_or("", String::as_str),
                error: message(&f.name),
            })
            .collect(),
        hidden: hidden
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        error: (!errors.is_empty()).then_some(ui.fix_errors),
    };
    let html = render_form(&page).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(page_headers((status, Html(html)).into_response()))
}

/// The hosted page of a form: mobile-friendly HTML in the form's language.
#[utoipa::path(get, path = "/f/{key}", tag = "capture", params(("key" = String, Path)),
    responses((status = 200, description = "The form page", content_type = "text/html"), (status = 404, body = Problem)))]
async fn form_page(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult<Response> {
    let form = state.service.public_form(&key)?;
    let mut hidden = vec![(
        RENDER_TOKEN.to_owned(),
        state.service.render_token(&form.key)?,
    )];
    // The page's own UTM parameters (a QR code's URL) and the page that linked here travel
    // with the submit.
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    for (k, v) in query {
        if k.starts_with("utm_") && k.len() <= 20 && !v.is_empty() {
            hidden.push((k, v.chars().take(200).collect()));
        }
    }
    if let Some(r) = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .filter(|r| !r.is_empty())
    {
        hidden.push(("_ref".into(), r.chars().take(2048).collect()));
    }
    render_page(&form, &BTreeMap::new(), &hidden, &[], StatusCode::OK)
}

/// A render token for a form embedded in a page of the business's own site.
#[derive(Serialize, ToSchema)]
pub struct RenderToken {
    /// Send it back as the `_ts` field of the submit: a submit sooner than
    /// `capture.min_fill_secs` after the token was issued is taken for a bot.
    #[serde(rename = "_ts")]
    pub ts: String,
}

/// A fresh render token for `/f/{key}`, for a form embedded elsewhere (`/t.js` fetches one
/// when the page loads), so the too-fast check covers it as it covers the hosted page.
#[utoipa::path(get, path = "/f/{key}/ts", tag = "capture", params(("key" = String, Path)),
    responses((status = 200, body = RenderToken), (status = 403, description = "Origin not allowed", body = Problem),
        (status = 404, body = Problem)))]
async fn form_render_token(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let form = state.service.public_form(&key)?;
    let allowed = check_origin(&form, &headers)?;
    let token = RenderToken {
        ts: state.service.render_token(&form.key)?,
    };
    let mut res = axum::Json(token).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(with_cors(res, allowed.as_deref()))
}

/// Reads a urlencoded or JSON body into name → value.
fn submitted_values(
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<(BTreeMap<String, String>, bool)> {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| ApiError::Malformed(format!("malformed form data: {e}")))?;
            Ok((pairs.into_iter().collect(), false))
        }
        "application/json" => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::Malformed(format!("malformed JSON: {e}")))?;
            let Value::Object(map) = v else {
                return Err(ApiError::Malformed("the body must be a JSON object".into()));
            };
            let mut out = BTreeMap::new();
            for (k, v) in map {
                let s = match v {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => continue,
                    _ => return Err(ApiError::field(&k, "must be a string, number or boolean")),
                };
                out.insert(k, s);
            }
            Ok((out, true))
        }
        _ => Err(ApiError::UnsupportedMediaType(
            "send application/x-www-form-urlencoded or application/json".into(),
        )),
    }
}

/// What a form submission answers on success, and to spam, alike.
fn accepted(form: &Form, json: bool) -> ApiResult<Response> {
    if json {
        return Ok((
            StatusCode::CREATED,
            axum::Json(serde_json::json!({"status": "received"})),
        )
            .into_response());
    }
    match &form.redirect_url {
        Some(url) => Ok(Redirect::to(url).into_response()),
        None => {
            let html = render_thank_you(&form.name, &form.language)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(page_headers(Html(html).into_response()))
        }
    }
}

/// Submit a form (public). `application/x-www-form-urlencoded` answers like a browser expects
/// (303 to the redirect URL, a thank-you page, or the form again with errors); JSON answers 201
/// or 422. A filled `_hp` honeypot, a submit sooner than `capture.min_fill_secs` after its
/// `_ts` render token was issued (with the hosted page, or by `/f/{key}/ts` to `/t.js` for a
/// form embedded in a site), or a repeat within `capture.double_submit_secs` stores nothing
/// but answers the same.
#[utoipa::path(post, path = "/f/{key}", tag = "capture", params(("key" = String, Path)),
    request_body(content = Object, content_type = "application/x-www-form-urlencoded"),
    responses((status = 201, description = "Received (JSON)"), (status = 303, description = "Received; go to the redirect URL"),
        (status = 200, description = "Received; thank-you page", content_type = "text/html"),
        (status = 400, body = Problem), (status = 403, description = "Origin not allowed", body = Problem),
        (status = 404, body = Problem), (status = 415, body = Problem),
        (status = 422, description = "Invalid (JSON: problem; form data: the page with errors)", body = Problem),
        (status = 429, body = Problem)))]
async fn submit_form(
    State(state): State<AppState>,
    Path(key): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cors = origin(&headers);
    let result = submit(&state, &key, ip, &headers, &body).await;
    let allowed = match &result {
        Err(ApiError::Forbidden(_)) => None,
        _ => cors.as_deref(),
    };
    match result {
        Ok(res) => with_cors(res, allowed),
        Err(e) => with_cors(e.into_response(), allowed),
    }
}

async fn submit(
    state: &AppState,
    key: &str,
    ip: IpAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let service = &state.service;
    let form = service.public_form(key)?;
    check_origin(&form, headers)?;
    let now = service.now();
    let guards = &state.guards;
    guards
        .form_per_ip
        .hit(&ip.to_string(), now)
        .map_err(ApiError::TooManyRequests)?;
    guards
        .form_per_form
        .hit(&form.id.to_string(), now)
        .map_err(ApiError::TooManyRequests)?;
    let (values, json) = submitted_values(headers, body)?;
    let shown: BTreeMap<String, String> = values.clone();
    let invalid = |errors: Vec<FieldError>| -> ApiResult<Response> {
        if json {
            return Err(ApiError::validation(errors));
        }
        // The page again, with what was typed and a fresh token for the next try.
        let hidden: Vec<(String, String)> = shown
            .iter()
            .filter(|(k, _)| k.starts_with('_') || k.starts_with("utm_"))
            .filter(|(k, _)| *k != HONEYPOT && *k != RENDER_TOKEN)
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(std::iter::once((
                RENDER_TOKEN.to_owned(),
                service.render_token(&form.key)?,
            )))
            .collect();
        render_page(
            &form,
            &shown,
            &hidden,
            &errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let fingerprint = {
        let mut h = Sha256::new();
        h.update(form.id.as_bytes());
        for (k, v) in &values {
            if !k.starts_with('_') {
                h.update(k.as_bytes());
                h.update([0]);
                h.update(v.trim().as_bytes());
                h.update([0]);
            }
        }
        <[u8; 32]>::from(h.finalize())
    };
    let sub = match form.read_submission(values) {
        Ok(s) => s,
        Err(errors) => return invalid(errors),
    };
    let min_fill_ms = i64::try_from(state.config.capture.min_fill_secs * 1000).unwrap_or(0);
    let spam = if sub.honeypot {
        Some("honeypot filled")
    } else {
        match service.fill_time(&form.key, sub.render_token.as_deref())? {
            FillTime::Forged => Some("render token not ours"),
            FillTime::Elapsed(ms) if ms < min_fill_ms => Some("submitted too fast"),
            _ => None,
        }
    };
    if let Some(reason) = spam {
        tracing::info!(form = %form.key, %ip, reason, "form submission dropped as spam");
        return accepted(&form, json);
    }
    let first = match guards.recent.claim(fingerprint, now).await {
        Claim::First(first) => first,
        Claim::Repeat => {
            tracing::debug!(form = %form.key, "repeated form submission answered without a write");
            return accepted(&form, json);
        }
    };
    match service.submit_form(&form, sub).await {
        Ok(_) => {
            first.stored();
            accepted(&form, json)
        }
        Err(crate::service::ServiceError::Invalid(errors)) => invalid(errors),
        Err(e) => Err(e.into()),
    }
}

/// CORS preflight for posting a form from an allowed origin.
#[utoipa::path(options, path = "/f/{key}", tag = "capture", params(("key" = String, Path)),
    responses((status = 204, description = "Allowed"), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn form_preflight(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let form = state.service.public_form(&key)?;
    let allowed = check_origin(&form, &headers)?;
    Ok(with_cors(preflight_answer(), allowed.as_deref()))
}

/// The answer to a CORS preflight for a POST with a content type, cached for ten minutes.
fn preflight_answer() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    res
}

// ----- public: tracking -----

const TRACKER: &str = include_str!("../../assets/t.js");

/// The tracking script a site includes with one tag.
#[utoipa::path(get, path = "/t.js", tag = "capture",
    responses((status = 200, description = "JavaScript", content_type = "application/javascript")))]
async fn tracker_script() -> Response {
    let mut res = TRACKER.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}

fn any_origin(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}

/// Record a page view (sent by `/t.js` as text/plain JSON so no preflight is needed).
#[utoipa::path(post, path = "/t", tag = "capture", request_body = PageViewInput,
    responses((status = 204, description = "Recorded"), (status = 400, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn track(State(state): State<AppState>, ClientIp(ip): ClientIp, body: Bytes) -> Response {
    let result = async {
        let now = state.service.now();
        state
            .guards
            .views_per_ip
            .hit(&ip.to_string(), now)
            .map_err(ApiError::TooManyRequests)?;
        let input: PageViewInput = super::extract::parse_json(&body)?;
        let (visitor, view) = input.validate(now).map_err(ApiError::validation)?;
        state.service.track_page_view(visitor, view).await?;
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    any_origin(result.unwrap_or_else(IntoResponse::into_response))
}

/// CORS preflight for `/t` (only needed when a page sends it as application/json).
#[utoipa::path(options, path = "/t", tag = "capture", responses((status = 204, description = "Allowed")))]
async fn track_preflight() -> Response {
    any_origin(preflight_answer())
}

/// A tracked visitor and their anonymous page views (admins; others for visitors who became a
/// lead they can see).
#[utoipa::path(get, path = "/v1/visitors/{id}", tag = "capture", params(("id" = String, Path)),
    responses((status = 200, body = VisitorView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_visitor(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(axum::Json(state.service.visitor(&p, &id)?).into_response())
}

// ----- duplicates and merge -----

#[derive(Serialize, ToSchema)]
pub struct DuplicateGroupView {
    /// `same_name_and_company` or `same_email_domain_and_name`.
    pub reason: String,
    pub leads: Vec<LeadView>,
}

#[derive(Serialize, ToSchema)]
pub struct DuplicateList {
    pub items: Vec<DuplicateGroupView>,
    pub next_cursor: Option<String>,
}

/// Groups of leads that are probably the same person but did not match exactly, with why.
#[utoipa::path(get, path = "/v1/leads/duplicates", tag = "leads",
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = DuplicateList), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_duplicates(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut params: Params,
) -> ApiResult<Response> {
    let limit = params.limit(state.config.http.max_page_size)?;
    let after = params
        .key_cursor()?
        .map(|k| {
            String::from_utf8(k)
                .map_err(|_| ApiError::field("cursor", "is not a cursor issued by this server"))
        })
        .transpose()?;
    let tag = params.finish()?;
    let page = state.service.duplicates(&p, after.as_deref(), limit)?;
    Ok(axum::Json(DuplicateList {
        items: page
            .groups
            .iter()
            .map(|g| DuplicateGroupView {
                reason: g.reason.to_owned(),
                leads: g.leads.iter().map(LeadView::from).collect(),
            })
            .collect(),
        next_cursor: page.next.map(|k| tag.key_cursor(k.as_bytes())),
    })
    .into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeInput {
    /// The lead merged into this one and removed; its id then points here.
    pub other_id: Uuid,
}

/// Merge another lead into this one: activities move, blanks are filled, both ids are recorded,
/// and `GET` of the other id answers 301 with this lead's location.
#[utoipa::path(post, path = "/v1/leads/{id}/merge", tag = "leads", params(("id" = Uuid, Path)),
    request_body = MergeInput,
    params(("If-Match" = Option<String>, Header, description = "The surviving lead's ETag")),
    responses((status = 200, body = LeadView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn merge_lead(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
    body: JsonBody<MergeInput>,
) -> ApiResult<Response> {
    let lead = state
        .service
        .merge_leads(&p, path_id(&id, "lead")?, body.value.other_id, pre)
        .await?;
    let mut res = json_with(
        StatusCode::OK,
        &LeadView::from(&lead),
        Some(lead.version),
        None,
    );
    if let Ok(v) = HeaderValue::from_str(&etag(lead.version)) {
        res.headers_mut().insert(header::ETAG, v);
    }
    Ok(res)
}

/// Rate limiters and submission memory, built once from the config.
pub fn guards(config: &crate::config::Config) -> CaptureGuards {
    use super::limits::{RateLimiter, RecentSubmissions};
    let c = &config.capture;
    CaptureGuards {
        form_per_ip: RateLimiter::new(c.form_submits_per_ip_per_minute),
        form_per_form: RateLimiter::new(c.form_submits_per_form_per_minute),
        views_per_ip: RateLimiter::new(c.page_views_per_ip_per_minute),
        recent: RecentSubmissions::new(c.double_submit_secs),
        trusted_proxies: c
            .trusted_proxies
            .iter()
            .filter_map(|p| p.trim().parse().ok())
            .collect(),
    }
}
