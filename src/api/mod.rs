//! The HTTP layer: thin axum handlers that parse, authorize, call the service and render.
//! Every error leaves as RFC 9457 problem+json, including the ones axum and tower produce.

pub mod activities;
mod body_deadline;
pub mod capture;
pub mod error;
pub mod extract;
pub mod form_page;
pub mod leads;
pub mod limits;
pub mod metrics;
pub mod nurture;
mod objects_only;
pub mod ops;
pub mod plugins;
pub mod reports;
pub mod search;
pub mod tasks;
pub mod transfer;
pub mod users;
pub mod work;

pub mod events;
pub mod webhooks;

use crate::config::Config;
use crate::service::Service;
use crate::store::IdempotentResponse;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Response as HttpResponse, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use error::{ApiError, PROBLEM_JSON};
use std::sync::Arc;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

/// What every handler gets: one shared [`AppParts`], so a clone (axum makes one per
/// extractor of every request) is one reference count, not one for each of the service's
/// parts.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

/// The parts of [`AppState`].
pub struct AppParts {
    pub service: Service,
    pub config: Arc<Config>,
    pub guards: Arc<CaptureGuards>,
    pub search: crate::search::Search,
    /// The clock of a server started with `--test-clock`, which `/v1/admin/clock` moves.
    pub test_clock: Option<Arc<crate::clock::ManualClock>>,
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

impl AppState {
    pub fn new(
        service: Service,
        config: Arc<Config>,
        search: crate::search::Search,
        test_clock: Option<Arc<crate::clock::ManualClock>>,
    ) -> Self {
        let guards = Arc::new(capture::guards(&config));
        AppState(Arc::new(AppParts {
            service,
            config,
            guards,
            search,
            test_clock,
        }))
    }
}

/// The in-memory protections of the public capture endpoints.
#[derive(Debug)]
pub struct CaptureGuards {
    pub form_per_ip: limits::RateLimiter,
    pub form_per_form: limits::RateLimiter,
    pub views_per_ip: limits::RateLimiter,
    pub recent: limits::RecentSubmissions,
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Leadline", description = "The Leadline lead server REST API (v1)."),
    modifiers(&BearerAuth),
    tags(
        (name = "leads"), (name = "activities"), (name = "capture"), (name = "users"), (name = "auth"),
        (name = "integration"), (name = "search"), (name = "ops"), (name = "work"), (name = "reports"), (name = "nurture")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and the OpenAPI document generated from them: the ordinary routes, and the bulk
/// transfer routes, which stream and so get neither the request timeout nor the JSON body limit.
pub fn routes() -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    let (bulk, bulk_doc) = OpenApiRouter::new()
        .merge(transfer::router())
        .merge(plugins::bulk_router())
        .split_for_parts();
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(leads::router())
        .merge(activities::router())
        .merge(capture::router())
        .merge(users::router())
        .merge(ops::router())
        .merge(search::router())
        .merge(plugins::router())
        .merge(work::router())
        .merge(tasks::router())
        .merge(reports::router())
        .merge(nurture::router())
        .merge(webhooks::router())
        .merge(events::router())
        .merge(OpenApiRouter::new().routes(utoipa_axum::routes!(metrics::metrics)))
        .split_for_parts();
    // The ordinary routes' layers: a body's deadline and the request timeout.
    declare_layer_answers(
        &mut doc,
        &LayerAnswers {
            all: &[("503", "The request took longer than the request timeout")],
            bodies: &[("408", "The request body did not arrive in time")],
            queries: &[],
            secured: &[],
        },
    );
    doc.merge(bulk_doc);
    declare_layer_answers(
        &mut doc,
        &LayerAnswers {
            all: &[],
            bodies: &[
                (
                    "400",
                    "The body is not what the content type says (not JSON, not CSV)",
                ),
                ("413", "The body is larger than the limit"),
                (
                    "415",
                    "The body's content type is not one this operation takes",
                ),
                ("422", "A field is invalid; `errors` names it"),
            ],
            queries: &[(
                "422",
                "A query parameter is invalid or unknown; `errors` names it",
            )],
            secured: &[("401", "No valid token")],
        },
    );
    problems_as_problem_json(&mut doc);
    (router, bulk, doc)
}

/// Every operation of the document, whatever its method.
fn operations_mut(
    doc: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
}

/// A list's `limit` runs from 1 to the configured page size unless its operation says less.
fn declare_page_limits(doc: &mut utoipa::openapi::OpenApi, max_page_size: u64) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{RefOr, Schema};
    let max = usize::try_from(max_page_size).unwrap_or(usize::MAX);
    for op in operations_mut(doc) {
        for p in op.parameters.iter_mut().flatten() {
            let RefOr::T(p) = p else { continue };
            if p.name != "limit" || p.parameter_in != ParameterIn::Query {
                continue;
            }
            if let Some(RefOr::T(Schema::Object(o))) = &mut p.schema {
                o.minimum = Some(utoipa::Number::UInt(1));
                o.maximum.get_or_insert(utoipa::Number::UInt(max));
            }
        }
    }
}

/// Every error answer carries a problem+json body ([`error::ApiError`]); utoipa declares a
/// `body = Problem` as `application/json`, so the document says what is really sent.
fn problems_as_problem_json(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Ref, RefOr};
    let problem = Ref::from_schema_name("Problem").ref_location;
    for op in operations_mut(doc) {
        for response in op.responses.responses.values_mut() {
            let RefOr::T(response) = response else {
                continue;
            };
            let is_problem = response.content.get("application/json").is_some_and(|c| {
                matches!(c, RefOr::T(c)
                    if matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location == problem))
            });
            if is_problem && let Some(c) = response.content.shift_remove("application/json") {
                response.content.insert(PROBLEM_JSON.to_owned(), c);
            }
        }
    }
}

/// The answers an operation gives from layers and extractors rather than its handler.
struct LayerAnswers<'a> {
    /// Every operation.
    all: &'a [(&'a str, &'a str)],
    /// Those that take a body.
    bodies: &'a [(&'a str, &'a str)],
    /// Those that take query parameters.
    queries: &'a [(&'a str, &'a str)],
    /// Those that need a token.
    secured: &'a [(&'a str, &'a str)],
}

/// Declares each operation's [`LayerAnswers`], so `/openapi.json` lists every status an
/// operation can give.
fn declare_layer_answers(doc: &mut utoipa::openapi::OpenApi, answers: &LayerAnswers<'_>) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let problem = |what: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(what)
                .content(
                    PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    for op in operations_mut(doc) {
        let body = op.request_body.is_some();
        let query = op
            .parameters
            .iter()
            .flatten()
            .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query));
        let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
        let declared = answers
            .all
            .iter()
            .chain(answers.bodies.iter().filter(|_| body))
            .chain(answers.queries.iter().filter(|_| query))
            .chain(answers.secured.iter().filter(|_| secured));
        for (code, what) in declared {
            op.responses
                .responses
                .entry((*code).to_owned())
                .or_insert_with(|| problem(what));
        }
    }
}

/// The complete application: routes, `/openapi.json`, fallbacks and middleware.
pub fn app(state: AppState) -> Router {
    // Installed before the first request, so nothing recorded before a scrape is lost.
    metrics::handle();
    let (router, bulk, mut doc) = routes();
    declare_page_limits(&mut doc, state.config.http.max_page_size);
    let doc = Arc::new(doc);
    let max_body_bytes = state.config.http.max_body_bytes;
    let max_body = usize::try_from(max_body_bytes).unwrap_or(usize::MAX);
    let max_import = usize::try_from(state.config.http.max_import_bytes).unwrap_or(usize::MAX);
    let timeout = Duration::from_secs(state.config.http.request_timeout_secs);
    let bulk = bulk
        .with_state(state.clone())
        .layer(RequestBodyLimitLayer::new(max_import));
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        // Half the request time is the client's, to send its body; a stall there is a 408.
        .layer(axum::middleware::from_fn(move |req, next| {
            body_deadline::limit(timeout / 2, max_body_bytes, req, next)
        }))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .merge(bulk)
        .layer(axum::middleware::from_fn(metrics::track))
        // Outside the layers above, so their bare 413/503 answers get a problem body too.
        .layer(axum::middleware::map_response(
            move |method: axum::http::Method, res: Response| {
                problem_for_bare_errors(res, max_body_bytes, method)
            },
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .layer(TraceLayer::new_for_http())
}

/// Gives error responses made outside our handlers (body limit, timeout) a problem body.
async fn problem_for_bare_errors(
    res: Response,
    max_body_bytes: u64,
    method: axum::http::Method,
) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    // Our own error answers are problem+json already, or an HTML page meant for a person
    // (a hosted form shown again with its errors).
    let ours = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes() == PROBLEM_JSON.as_bytes() || v.as_bytes().starts_with(b"text/html")
    });
    if ours {
        return res;
    }
    let err = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(max_body_bytes),
        StatusCode::REQUEST_TIMEOUT => {
            ApiError::Unavailable("the request body took too long to arrive".into())
        }
        // A write may already be with the writer, which finishes it even though nobody waits
        // for the answer any more: the client must not take this as "nothing happened".
        StatusCode::SERVICE_UNAVAILABLE if !method.is_safe() => ApiError::Unavailable(
            "the request took too long to answer; it may still complete. Retry with the same \
             Idempotency-Key to get its result without applying it twice, or check before \
             sending it again"
                .into(),
        ),
        StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::Unavailable("the request took too long".into())
        }
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::NOT_FOUND => ApiError::NotFound("route"),
        s if s.is_client_error() => {
            ApiError::Malformed(s.canonical_reason().unwrap_or("bad request").into())
        }
        _ => ApiError::Internal(format!("bare {status} response")),
    };
    let mut out = err.into_response();
    // keep the status the layer chose (e.g. 408)
    *out.status_mut() = status;
    out
}

/// What a retry of a `201 Created` answer gets under `Idempotency-Key`: the same body,
/// `Location` and `ETag`. `answer` gives the body, version, location and the leads it names
/// (so erasing one of them forgets the stored answer too).
pub(crate) fn created_once<T: 'static>(
    answer: impl FnOnce(&T) -> (Vec<u8>, u64, String, Vec<Uuid>) + Send + 'static,
) -> crate::service::Render<T> {
    Box::new(move |outcome, now| {
        let (body, version, location, leads) = answer(outcome);
        (
            IdempotentResponse {
                fingerprint: Vec::new(),
                status: StatusCode::CREATED.as_u16(),
                location: Some(location),
                etag: Some(extract::etag(version)),
                body,
                created_at: now,
            },
            leads,
        )
    })
}

/// Rebuilds the stored first response to an idempotent create.
pub(crate) fn replay(r: IdempotentResponse) -> Response {
    let mut res = HttpResponse::new(Body::from(r.body));
    *res.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    if let Some(l) = r.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LOCATION, l);
    }
    if let Some(e) = r.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, e);
    }
    res
}
