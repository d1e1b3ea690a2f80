//! `/v1/leads`: create (single, batch), list, read, patch, erase, export.

use super::error::{ApiError, ApiResult, Problem};
use super::extract::{
    Auth, IfMatch, JsonBody, Params, etag, idempotency, parse_json, parse_owner, parse_uuid,
    path_id,
};
use super::{AppState, replay};
use crate::domain::FieldError;
use crate::domain::activity::{ActivityView, LeadEvent, TimelineItem};
use crate::domain::lead::{LeadInput, LeadPatch, LeadView, Stage, Status};
use crate::domain::time::parse_rfc3339;
use crate::domain::visitor::VisitorView;
use crate::service::{BatchItem, CreateOutcome, ListParams, ServiceError, Written, api_capture};
use crate::store::IdempotentResponse;
use crate::store::lead_index::SortKey;
use crate::store::query::{LeadFilter, Position};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_lead, list_leads))
        .routes(routes!(create_leads_batch))
        .routes(routes!(get_lead, patch_lead, delete_lead))
        .routes(routes!(export_lead))
}

/// A lead with whether this create merged into an existing one.
#[derive(Serialize, ToSchema)]
pub struct LeadCreated {
    #[serde(flatten)]
    pub lead: LeadView,
    /// True when the email or phone matched an existing lead, which absorbed this one.
    pub merged: bool,
}

fn lead_location(id: Uuid) -> String {
    format!("/v1/leads/{id}")
}

/// A JSON response with `ETag` and, optionally, `Location`.
pub(super) fn json_with(
    status: StatusCode,
    body: &impl Serialize,
    version: Option<u64>,
    location: Option<String>,
) -> Response {
    let mut res = (status, Json(body)).into_response();
    if let Some(v) = version
        && let Ok(h) = HeaderValue::from_str(&etag(v))
    {
        res.headers_mut().insert(header::ETAG, h);
    }
    if let Some(l) = location
        && let Ok(h) = HeaderValue::from_str(&l)
    {
        res.headers_mut().insert(header::LOCATION, h);
    }
    res
}

/// A 200 JSON response for a resource that keeps no version number (a message in the outbox,
/// a webhook delivery, a sequence file): its `ETag` is a digest of the body, which changes
/// whenever the resource does.
pub(super) fn json_digest_tagged(body: &impl Serialize) -> Response {
    use sha2::{Digest, Sha256};
    let bytes = match serde_json::to_vec(body) {
        Ok(b) => b,
        Err(e) => {
            return super::error::ApiError::Internal(format!("cannot write the body: {e}"))
                .into_response();
        }
    };
    let digest = Sha256::digest(&bytes);
    let tag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let mut res = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response();
    if let Ok(h) = HeaderValue::from_str(&format!("\"{tag}\"")) {
        res.headers_mut().insert(header::ETAG, h);
    }
    res
}

fn created_response(o: &CreateOutcome) -> (StatusCode, LeadCreated) {
    let status = if o.merged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (
        status,
        LeadCreated {
            lead: LeadView::from(&o.lead),
            merged: o.merged,
        },
    )
}

/// Create a lead, or merge it into the lead with the same email or phone.
#[utoipa::path(post, path = "/v1/leads", tag = "leads",
    request_body = LeadInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 201, description = "Created", body = LeadCreated),
        (status = 200, description = "Merged into an existing lead", body = LeadCreated),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, description = "Matches a lead the caller may not see", body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_lead(
    State(state): State<AppState>,
    Auth(p): Auth,
    method: Method,
    headers: HeaderMap,
    body: JsonBody<LeadInput>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, &method, "/v1/leads", &body.raw)?;
    let (new, cap) =
        api_capture(body.value, state.service.rules()).map_err(ApiError::validation)?;
    let idem = idem.map(|i| {
        let render: crate::service::Render<CreateOutcome> = Box::new(|o, now| {
            let (status, view) = created_response(o);
            (
                IdempotentResponse {
                    fingerprint: Vec::new(),
                    status: status.as_u16(),
                    location: Some(lead_location(o.lead.id)),
                    etag: Some(etag(o.lead.version)),
                    body: serde_json::to_vec(&view).unwrap_or_default(),
                    created_at: now,
                },
                vec![o.lead.id],
            )
        });
        (i, render)
    });
    match state.service.create_lead(&p, new, cap, idem).await? {
        Written::Fresh(o) => {
            let (status, view) = created_response(&o);
            Ok(json_with(
                status,
                &view,
                Some(o.lead.version),
                Some(lead_location(o.lead.id)),
            ))
        }
        Written::Replayed(r) => Ok(replay(r)),
    }
}

/// The body of `POST /v1/leads/batch`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// At most 1000 leads, each as for `POST /v1/leads`.
    #[schema(value_type = Vec<LeadInput>, min_items = 1, max_items = 1000)]
    pub leads: Vec<serde_json::Value>,
}

/// One result of a batch create, in request order.
#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    pub index: usize,
    /// 201 created, 200 merged, or the error status of this item.
    pub status: u16,
    pub id: Option<Uuid>,
    pub merged: bool,
    pub lead: Option<LeadView>,
    pub error: Option<Problem>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResponse {
    pub items: Vec<BatchResult>,
}

pub const MAX_BATCH: usize = 1000;

fn batch_response(items: &[BatchItem]) -> BatchResponse {
    BatchResponse {
        items: items
            .iter()
            .enumerate()
            .map(|(index, item)| match item {
                BatchItem::Done(o) => BatchResult {
                    index,
                    status: if o.merged { 200 } else { 201 },
                    id: Some(o.lead.id),
                    merged: o.merged,
                    lead: Some(LeadView::from(&o.lead)),
                    error: None,
                },
                BatchItem::Failed(e) => {
                    let e = match e {
                        ServiceError::Invalid(errors) => {
                            ServiceError::Invalid(item_errors(index, errors))
                        }
                        other => other.clone(),
                    };
                    let problem = ApiError::from(e).to_problem();
                    BatchResult {
                        index,
                        status: problem.status,
                        id: None,
                        merged: false,
                        lead: None,
                        error: Some(problem),
                    }
                }
            })
            .collect(),
    }
}

/// Names each invalid field of a batch item by its place in the request (`leads[3].email`),
/// whether parsing, validation or the store found it.
fn item_errors(index: usize, errors: &[FieldError]) -> Vec<FieldError> {
    errors
        .iter()
        .map(|e| {
            let field = match e.field.as_str() {
                "" | "body" => format!("leads[{index}]"),
                f => format!("leads[{index}].{f}"),
            };
            FieldError::new(field, e.message.clone())
        })
        .collect()
}

/// Create up to 1000 leads in one durable transaction; each item succeeds or fails alone.
#[utoipa::path(post, path = "/v1/leads/batch", tag = "leads",
    request_body = BatchInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 200, body = BatchResponse), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_leads_batch(
    State(state): State<AppState>,
    Auth(p): Auth,
    method: Method,
    headers: HeaderMap,
    body: JsonBody<BatchInput>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, &method, "/v1/leads/batch", &body.raw)?;
    let leads = body.value.leads;
    if leads.is_empty() || leads.len() > MAX_BATCH {
        return Err(ApiError::field(
            "leads",
            format!("must hold 1 to {MAX_BATCH} leads"),
        ));
    }
    let rules = state.service.rules().clone();
    let items = leads
        .into_iter()
        .map(|v| {
            let raw = serde_json::to_vec(&v).unwrap_or_default();
            match parse_json::<LeadInput>(&raw) {
                Ok(input) => api_capture(input, &rules),
                Err(ApiError::Validation { errors, .. }) => Err(errors),
                Err(other) => Err(vec![FieldError::new("", other.to_string())]),
            }
        })
        .collect();
    let idem = idem.map(|i| {
        let render: crate::service::Render<Vec<BatchItem>> = Box::new(|items, now| {
            let ids = items
                .iter()
                .filter_map(|i| match i {
                    BatchItem::Done(o) => Some(o.lead.id),
                    BatchItem::Failed(_) => None,
                })
                .collect();
            (
                IdempotentResponse {
                    fingerprint: Vec::new(),
                    status: 200,
                    location: None,
                    etag: None,
                    body: serde_json::to_vec(&batch_response(items)).unwrap_or_default(),
                    created_at: now,
                },
                ids,
            )
        });
        (i, render)
    });
    match state.service.create_leads_batch(&p, items, idem).await? {
        Written::Fresh(items) => Ok(json_with(
            StatusCode::OK,
            &batch_response(&items),
            None,
            None,
        )),
        Written::Replayed(r) => Ok(replay(r)),
    }
}

/// The list filters and sort of `GET /v1/leads`, shared by the export.
pub fn filter_and_sort(q: &mut Params) -> ApiResult<(LeadFilter, SortKey, bool)> {
    let filter = LeadFilter {
        stage: q.parse("stage", parse_stage)?,
        status: q.parse("status", parse_status)?,
        owner: q.parse("owner_id", parse_owner)?,
        pool_id: q.parse("pool_id", parse_uuid)?,
        source: q.take("source").map(|s| s.trim().to_lowercase()),
        channel: q.take("channel").map(|s| s.trim().to_lowercase()),
        campaign_id: q.parse("campaign_id", parse_uuid)?,
        tag: q.take("tag").map(|s| s.trim().to_lowercase()),
        min_score: q.parse("min_score", parse_score)?,
        max_score: q.parse("max_score", parse_score)?,
        created_after: q.parse("created_after", parse_rfc3339)?,
        created_before: q.parse("created_before", parse_rfc3339)?,
        updated_after: q.parse("updated_after", parse_rfc3339)?,
    };
    let (sort, descending) = q
        .parse("sort", |s| match s {
            "created_at" => Ok((SortKey::Created, false)),
            "-created_at" => Ok((SortKey::Created, true)),
            "score" => Ok((SortKey::Score, false)),
            "-score" => Ok((SortKey::Score, true)),
            "updated_at" => Ok((SortKey::Updated, false)),
            "-updated_at" => Ok((SortKey::Updated, true)),
            _ => Err(
                "must be created_at, -created_at, score, -score, updated_at or -updated_at"
                    .to_owned(),
            ),
        })?
        .unwrap_or((SortKey::Created, true));
    Ok((filter, sort, descending))
}

fn parse_stage(s: &str) -> Result<Stage, String> {
    Stage::parse(s)
        .ok_or_else(|| "must be lead, mql, sql, opportunity, customer or disqualified".into())
}

fn parse_status(s: &str) -> Result<Status, String> {
    Status::parse(s).ok_or_else(|| {
        "must be new, attempting, connected, nurturing, unqualified or converted".into()
    })
}

fn parse_score(s: &str) -> Result<i32, String> {
    s.parse().map_err(|_| "must be a whole number".into())
}

/// The filters and sort of a lead list, as `/openapi.json` shows them (the handlers read them
/// with [`Params`], which also refuses any parameter not listed here). All given filters hold.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Describes the query for the document; never built.
pub(super) struct LeadFilterParams {
    stage: Option<Stage>,
    status: Option<Status>,
    /// A user id, or `none` for unowned leads.
    #[param(pattern = "^(none|[0-9a-fA-F-]{32,36})$")]
    owner_id: Option<String>,
    pool_id: Option<Uuid>,
    source: Option<String>,
    channel: Option<String>,
    campaign_id: Option<Uuid>,
    tag: Option<String>,
    min_score: Option<i32>,
    max_score: Option<i32>,
    /// RFC 3339: created after this moment.
    #[param(format = DateTime)]
    created_after: Option<String>,
    /// RFC 3339: created before this moment.
    #[param(format = DateTime)]
    created_before: Option<String>,
    /// RFC 3339: changed after this moment.
    #[param(format = DateTime)]
    updated_after: Option<String>,
    /// `created_at`, `score` or `updated_at`, descending with a leading `-` (default
    /// `-created_at`).
    #[param(pattern = "^-?(created_at|score|updated_at)$")]
    sort: Option<String>,
}

/// List leads the caller may see, filtered and sorted, a page at a time.
#[utoipa::path(get, path = "/v1/leads", tag = "leads",
    params(LeadFilterParams,
        ("limit" = Option<u32>, Query, description = "Default 50"), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = LeadPage), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_leads(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut q: Params,
) -> ApiResult<Response> {
    let (filter, sort, descending) = filter_and_sort(&mut q)?;
    let limit = q.limit(state.config.http.max_page_size)?;
    let after = q.cursor_as(Position::from_bytes)?;
    let tag = q.finish()?;
    let page = state.service.list_leads(
        &p,
        ListParams {
            filter,
            sort,
            descending,
            limit,
            after,
        },
    )?;
    Ok(Json(LeadPage {
        items: page.items.iter().map(LeadView::from).collect::<Vec<_>>(),
        next_cursor: page.next.map(|pos| tag.key_cursor(&pos.to_bytes())),
    })
    .into_response())
}

/// A page of leads.
#[derive(Serialize, ToSchema)]
pub struct LeadPage {
    pub items: Vec<LeadView>,
    pub next_cursor: Option<String>,
}

/// Read one lead.
#[utoipa::path(get, path = "/v1/leads/{id}", tag = "leads",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = LeadView, headers(("ETag" = String))),
        (status = 301, description = "Merged into another lead, named by Location and `merged_into`"),
        (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_lead(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = path_id(&id, "lead")?;
    let lead = match state.service.get_lead(&p, id) {
        Err(ServiceError::NotFound(_)) => {
            // A lead merged into another answers with where it went.
            if let Some(survivor) = state.service.merged_into(&p, id)? {
                let mut res = (
                    StatusCode::MOVED_PERMANENTLY,
                    Json(serde_json::json!({"merged_into": survivor})),
                )
                    .into_response();
                if let Ok(v) = HeaderValue::from_str(&lead_location(survivor)) {
                    res.headers_mut().insert(header::LOCATION, v);
                }
                return Ok(res);
            }
            return Err(ApiError::NotFound("lead"));
        }
        other => other?,
    };
    Ok(json_with(
        StatusCode::OK,
        &LeadView::from(&lead),
        Some(lead.version),
        None,
    ))
}

/// Update a lead with a JSON merge patch (RFC 7396). Honours `If-Match`.
#[utoipa::path(patch, path = "/v1/leads/{id}", tag = "leads",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "The ETag you last saw")),
    request_body(content = LeadPatch, content_type = "application/merge-patch+json"),
    responses((status = 200, body = LeadView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 412, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn patch_lead(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
    body: JsonBody<LeadPatch>,
) -> ApiResult<Response> {
    let id = path_id(&id, "lead")?;
    let patch = body
        .value
        .validate(state.service.rules())
        .map_err(ApiError::validation)?;
    let lead = state.service.patch_lead(&p, id, pre, patch).await?;
    Ok(json_with(
        StatusCode::OK,
        &LeadView::from(&lead),
        Some(lead.version),
        None,
    ))
}

/// Erase a lead with its activities and index entries (GDPR erasure). Honours `If-Match`.
#[utoipa::path(delete, path = "/v1/leads/{id}", tag = "leads",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Erased"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("bearer" = [])))]
async fn delete_lead(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
) -> ApiResult<StatusCode> {
    state
        .service
        .delete_lead(&p, path_id(&id, "lead")?, pre)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Everything held about the person behind a lead.
#[derive(Serialize, ToSchema)]
pub struct LeadExportView {
    pub lead: LeadView,
    /// Every activity, form payloads and page views included.
    pub activities: Vec<ActivityView>,
    pub events: Vec<TimelineItem>,
    /// The tracker visitors stitched to this person.
    pub visitors: Vec<VisitorView>,
    /// Other keys that find this person: `e:` emails and `p:` phones of leads merged into
    /// this one, `m:` their ids, `r:` fingerprints of imported rows.
    pub other_keys: Vec<String>,
    /// The score with its reasons and history, as `GET /v1/leads/{id}/score` shows it.
    pub score: crate::service::ScoreView,
    /// The SLA clock, as `GET /v1/leads/{id}/sla` shows it.
    pub sla: super::work::SlaClockView,
    pub tasks: Vec<super::tasks::TaskView>,
    pub notifications: Vec<super::work::NotificationView>,
    pub enrollments: Vec<super::nurture::EnrollmentView>,
    /// Every email to the person, sent or not, with its text.
    pub emails: Vec<super::nurture::EmailView>,
    /// Webhook deliveries about the person, with their payloads: for admins; `null` for
    /// others, who do not see webhooks.
    pub webhook_deliveries: Option<Vec<super::webhooks::DeliveryView>>,
}

/// Export all data held about a lead (GDPR access).
#[utoipa::path(get, path = "/v1/leads/{id}/export", tag = "leads",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = LeadExportView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn export_lead(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = path_id(&id, "lead")?;
    let e = state.service.export_lead(&p, id)?;
    let now = state.service.now();
    let smtp = !state.config.email.smtp_host.is_empty();
    let view = LeadExportView {
        score: e.score,
        sla: super::work::sla_clock_view(&e.sla),
        tasks: e
            .tasks
            .iter()
            .map(|t| super::tasks::TaskView::new(t, now))
            .collect(),
        notifications: e
            .notifications
            .iter()
            .map(super::work::NotificationView::from)
            .collect(),
        enrollments: e
            .enrollments
            .iter()
            .map(super::nurture::EnrollmentView::from)
            .collect(),
        emails: e
            .emails
            .iter()
            .map(|m| super::nurture::email_view(m, smtp))
            .collect(),
        webhook_deliveries: e
            .deliveries
            .as_ref()
            .map(|ds| ds.iter().map(super::webhooks::DeliveryView::from).collect()),
        lead: LeadView::from(&e.lead),
        activities: e.activities.iter().map(ActivityView::from).collect(),
        events: e
            .events
            .iter()
            .map(|ev: &LeadEvent| TimelineItem::from_event(ev))
            .collect(),
        visitors: e
            .visitors
            .iter()
            .map(|(v, views)| VisitorView::new(v, views))
            .collect(),
        other_keys: e.other_keys.clone(),
    };
    let mut res = Json(view).into_response();
    res.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"lead-export.json\""),
    );
    Ok(res)
}
