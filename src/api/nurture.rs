//! Nurture over HTTP: the sequences (`/v1/sequences`), a lead's enrollments and their pause,
//! resume and unenroll, the mail outbox (`/v1/emails`), and the public links every message
//! carries: unsubscribe (`/u/{token}`), the open pixel (`/o/{token}`) and clicks
//! (`/c/{token}/{n}`).

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, IfMatch, JsonBody, Params, idempotency, page_of, parse_uuid, path_id};
use super::leads::{json_digest_tagged, json_with};
use super::{created_once, replay};
use crate::domain::mail::{MailStatus, OutMail};
use crate::domain::sequence::{Enrollment, EnrollmentStatus, ExitCondition, Step};
use crate::domain::time::{opt_rfc3339, to_rfc3339};
use crate::script::nurture::SequenceRt;
use crate::service::{EnrollmentChange, Precondition, Tracked, Written};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sequences))
        .routes(routes!(get_sequence))
        .routes(routes!(list_enrollments, create_enrollment))
        .routes(routes!(pause_enrollment))
        .routes(routes!(resume_enrollment))
        .routes(routes!(get_enrollment, delete_enrollment))
        .routes(routes!(list_emails))
        .routes(routes!(get_email))
        .routes(routes!(unsubscribe_page, unsubscribe))
        .routes(routes!(open_pixel))
        .routes(routes!(click))
}

// ----- sequences -----

/// One step as the file defines it.
#[derive(Serialize, ToSchema)]
pub struct StepView {
    /// 1-based.
    pub number: usize,
    /// wait, email, webhook, task, set or branch.
    pub kind: &'static str,
    /// For a wait: how long in seconds (absent: until the next business hour).
    pub wait_seconds: Option<i64>,
    pub template: Option<String>,
    pub event: Option<String>,
    pub title: Option<String>,
    pub due_in_seconds: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub set: Option<serde_json::Value>,
    /// For a branch: the Rhai condition and the step it jumps to when true (null: the end).
    pub condition: Option<String>,
    pub goto: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct SequenceView {
    pub name: String,
    pub description: String,
    /// The file it was loaded from, under the plugins directory.
    pub file: String,
    pub exit_on: Vec<ExitCondition>,
    pub steps: Vec<StepView>,
}

impl From<&SequenceRt> for SequenceView {
    fn from(s: &SequenceRt) -> Self {
        let steps = s
            .def
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let mut v = StepView {
                    number: i + 1,
                    kind: step.kind(),
                    wait_seconds: None,
                    template: None,
                    event: None,
                    title: None,
                    due_in_seconds: None,
                    set: None,
                    condition: None,
                    goto: None,
                };
                match step {
                    Step::Wait(ms) => v.wait_seconds = Some(ms / 1000),
                    Step::WaitBusinessHour => {}
                    Step::Email(t) => v.template = Some(t.clone()),
                    Step::Webhook(e) => v.event = Some(e.clone()),
                    Step::Task { title, due_in } => {
                        v.title = Some(title.clone());
                        v.due_in_seconds = due_in.map(|d| d / 1000);
                    }
                    Step::Set(fields) => v.set = serde_json::to_value(fields).ok(),
                    Step::Branch { condition, goto } => {
                        v.condition = Some(condition.clone());
                        v.goto = (*goto < s.def.steps.len()).then(|| goto + 1);
                    }
                }
                v
            })
            .collect();
        SequenceView {
            name: s.def.name.clone(),
            description: s.def.description.clone(),
            file: s.file.clone(),
            exit_on: s.def.exit_on.clone(),
            steps,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SequenceList {
    pub items: Vec<SequenceView>,
    pub next_cursor: Option<String>,
}

/// The sequences loaded from `plugins/sequences/*.toml` (edit the files to change them; the
/// server reloads on save).
#[utoipa::path(get, path = "/v1/sequences", tag = "nurture",
    params(("limit" = Option<u32>, Query, description = "Default 50"), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = SequenceList), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_sequences(
    State(state): State<AppState>,
    Auth(_p): Auth,
    mut q: Params,
) -> ApiResult<Json<SequenceList>> {
    let (sequences, next_cursor) = page_of(
        state.service.sequences(),
        |s| name_key(&s.def.name),
        &mut q,
        state.config.http.max_page_size,
    )?;
    q.finish()?;
    Ok(Json(SequenceList {
        items: sequences
            .iter()
            .map(|s| SequenceView::from(s.as_ref()))
            .collect(),
        next_cursor,
    }))
}

/// A sequence's place in a cursor: its name is its identity.
fn name_key(name: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

#[utoipa::path(get, path = "/v1/sequences/{name}", tag = "nurture", params(("name" = String, Path)),
    responses((status = 200, body = SequenceView, headers(("ETag" = String))), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_sequence(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(json_digest_tagged(&SequenceView::from(
        state.service.sequence(&name)?.as_ref(),
    )))
}

// ----- enrollments -----

#[derive(Serialize, ToSchema)]
pub struct EnrollmentView {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub sequence: String,
    pub status: EnrollmentStatus,
    /// The next step to run (1-based).
    pub next_step: u32,
    pub steps_run: u32,
    pub enrolled_at: String,
    pub updated_at: String,
    /// When the next step runs (while paused: when it was due; it runs then, or at once, on
    /// resume). Null once ended.
    pub next_at: Option<String>,
    /// Why it ended early: an exit condition, `unenrolled`, or what went wrong.
    pub reason: Option<String>,
    /// Who enrolled the lead (null: a rule).
    pub enrolled_by: Option<Uuid>,
    /// Grows with every change; the `ETag`.
    pub version: u64,
}

impl From<&Enrollment> for EnrollmentView {
    fn from(e: &Enrollment) -> Self {
        EnrollmentView {
            id: e.id,
            lead_id: e.lead_id,
            sequence: e.sequence.clone(),
            status: e.status,
            next_step: e.step + 1,
            steps_run: e.steps_run,
            enrolled_at: to_rfc3339(e.enrolled_at),
            updated_at: to_rfc3339(e.updated_at),
            next_at: opt_rfc3339(e.next_at),
            reason: e.reason.clone(),
            enrolled_by: e.enrolled_by,
            version: e.version,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EnrollmentList {
    pub items: Vec<EnrollmentView>,
    pub next_cursor: Option<String>,
}

/// A lead's enrollments, oldest first.
#[utoipa::path(get, path = "/v1/leads/{id}/enrollments", tag = "nurture",
    params(("id" = Uuid, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = EnrollmentList), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_enrollments(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    mut q: Params,
) -> ApiResult<Json<EnrollmentList>> {
    let id = path_id(&id, "lead")?;
    let items = state.service.enrollments(&p, id)?;
    let (items, next_cursor) = page_of(
        items,
        |e| e.id.as_u128(),
        &mut q,
        state.config.http.max_page_size,
    )?;
    q.finish()?;
    Ok(Json(EnrollmentList {
        items: items.iter().map(EnrollmentView::from).collect(),
        next_cursor,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollInput {
    /// The sequence's name (its file's stem).
    pub sequence: String,
}

/// Enroll a lead in a sequence by hand. Its first step runs at once.
#[utoipa::path(post, path = "/v1/leads/{id}/enrollments", tag = "nurture", params(("id" = Uuid, Path)),
    request_body = EnrollInput,
    responses((status = 201, body = EnrollmentView), (status = 404, body = Problem),
        (status = 409, description = "Already in the sequence, or may not be contacted", body = Problem),
        (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_enrollment(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: JsonBody<EnrollInput>,
) -> ApiResult<Response> {
    let id = path_id(&id, "lead")?;
    let location = format!("/v1/leads/{id}/enrollments");
    let idem = idempotency(&headers, &method, &location, &body.raw)?.map(|i| {
        let answer = created_once(|e: &Enrollment| {
            let body = serde_json::to_vec(&EnrollmentView::from(e)).unwrap_or_default();
            let location = format!("/v1/leads/{}/enrollments", e.lead_id);
            (body, e.version, location, vec![e.lead_id])
        });
        (i, answer)
    });
    match state
        .service
        .enroll_lead(&p, id, body.value.sequence.trim().to_owned(), idem)
        .await?
    {
        Written::Fresh(e) => Ok(json_with(
            StatusCode::CREATED,
            &EnrollmentView::from(&e),
            Some(e.version),
            Some(location),
        )),
        Written::Replayed(r) => Ok(replay(r)),
    }
}

async fn change(
    state: AppState,
    p: crate::domain::user::Principal,
    id: String,
    pre: Precondition,
    what: EnrollmentChange,
) -> ApiResult<Response> {
    let id = path_id(&id, "enrollment")?;
    let e = state.service.change_enrollment(&p, id, pre, what).await?;
    Ok(enrollment_ok(&e))
}

/// An enrollment as a 200 with its version as the ETag.
fn enrollment_ok(e: &Enrollment) -> Response {
    json_with(
        StatusCode::OK,
        &EnrollmentView::from(e),
        Some(e.version),
        None,
    )
}

/// One enrollment.
#[utoipa::path(get, path = "/v1/enrollments/{id}", tag = "nurture", params(("id" = Uuid, Path)),
    responses((status = 200, body = EnrollmentView, headers(("ETag" = String))), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_enrollment(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let e = state.service.enrollment(&p, path_id(&id, "enrollment")?)?;
    Ok(enrollment_ok(&e))
}

/// Pause an enrollment: no step runs until it is resumed. Honours `If-Match`.
#[utoipa::path(post, path = "/v1/enrollments/{id}/pause", tag = "nurture",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = EnrollmentView, headers(("ETag" = String))), (status = 404, body = Problem),
        (status = 409, description = "It has ended", body = Problem), (status = 412, body = Problem)),
    security(("bearer" = [])))]
async fn pause_enrollment(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
) -> ApiResult<Response> {
    change(state, p, id, pre, EnrollmentChange::Pause).await
}

/// Resume a paused enrollment: the step it stopped at runs now. Honours `If-Match`.
#[utoipa::path(post, path = "/v1/enrollments/{id}/resume", tag = "nurture",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = EnrollmentView, headers(("ETag" = String))), (status = 404, body = Problem),
        (status = 409, description = "It has ended", body = Problem), (status = 412, body = Problem)),
    security(("bearer" = [])))]
async fn resume_enrollment(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
) -> ApiResult<Response> {
    change(state, p, id, pre, EnrollmentChange::Resume).await
}

/// Unenroll: the enrollment ends (kept, with reason `unenrolled`). Honours `If-Match`.
#[utoipa::path(delete, path = "/v1/enrollments/{id}", tag = "nurture",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = EnrollmentView, headers(("ETag" = String))), (status = 404, body = Problem),
        (status = 409, description = "It has ended", body = Problem), (status = 412, body = Problem)),
    security(("bearer" = [])))]
async fn delete_enrollment(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    IfMatch(pre): IfMatch,
) -> ApiResult<Response> {
    change(state, p, id, pre, EnrollmentChange::Unenroll).await
}

// ----- the outbox -----

#[derive(Serialize, ToSchema)]
pub struct EmailView {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub enrollment_id: Option<Uuid>,
    pub template: String,
    pub to: String,
    pub subject: String,
    /// unsent, sent, failed or suppressed.
    pub status: MailStatus,
    /// Why an unsent message has not gone yet, in words.
    pub waiting: Option<String>,
    pub marketing: bool,
    pub attempts: u32,
    /// When the sender tries next, while unsent.
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub last_error: Option<String>,
    pub text: String,
    pub html: Option<String>,
}

pub(super) fn email_view(m: &OutMail, smtp: bool) -> EmailView {
    let unsent = m.status == MailStatus::Unsent;
    EmailView {
        id: m.id,
        lead_id: m.lead_id,
        enrollment_id: m.enrollment_id,
        template: m.template.clone(),
        to: m.to.clone(),
        subject: m.subject.clone(),
        status: m.status,
        waiting: match (unsent, smtp) {
            (false, _) => None,
            (true, false) => {
                Some("not sent: no SMTP server is configured ([email] smtp_host)".into())
            }
            (true, true) if m.attempts == 0 => Some("queued for sending".into()),
            (true, true) => Some(format!("retrying after {} failed attempt(s)", m.attempts)),
        },
        marketing: m.marketing,
        attempts: m.attempts,
        next_attempt_at: unsent.then(|| to_rfc3339(m.next_attempt_at)),
        created_at: to_rfc3339(m.created_at),
        sent_at: opt_rfc3339(m.sent_at),
        last_error: m.last_error.clone(),
        text: m.text.clone(),
        html: m.html.clone(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct EmailPage {
    pub items: Vec<EmailView>,
    pub next_cursor: Option<String>,
}

fn parse_status(s: &str) -> Result<MailStatus, String> {
    match s {
        "unsent" => Ok(MailStatus::Unsent),
        "sent" => Ok(MailStatus::Sent),
        "failed" => Ok(MailStatus::Failed),
        "suppressed" => Ok(MailStatus::Suppressed),
        _ => Err("must be unsent, sent, failed or suppressed".into()),
    }
}

/// The mail outbox, newest first: admins may list every message, others must name a lead they
/// see. Without SMTP configured, messages stay here with status `unsent`. A page examines at
/// most `store.list_scan_budget` messages, so with a `status` filter it may hold fewer than
/// `limit` while `next_cursor` says more may follow.
#[utoipa::path(get, path = "/v1/emails", tag = "nurture",
    params(("lead_id" = Option<Uuid>, Query), ("status" = Option<MailStatus>, Query),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = EmailPage), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_emails(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut q: Params,
) -> ApiResult<Json<EmailPage>> {
    let lead = q.parse("lead_id", parse_uuid)?;
    let status = q.parse("status", parse_status)?;
    let limit = q.limit(state.config.http.max_page_size)?;
    let before = q.id_cursor()?;
    let tag = q.finish()?;
    let (items, next) = state.service.mails(&p, lead, status, before, limit)?;
    let smtp = !state.config.email.smtp_host.is_empty();
    let next_cursor = next.map(|id| tag.id_cursor(id));
    Ok(Json(EmailPage {
        items: items.iter().map(|m| email_view(m, smtp)).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/emails/{id}", tag = "nurture", params(("id" = Uuid, Path)),
    responses((status = 200, body = EmailView, headers(("ETag" = String))), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_email(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = path_id(&id, "email")?;
    let m = state.service.mail(&p, id)?;
    Ok(json_digest_tagged(&email_view(
        &m,
        !state.config.email.smtp_host.is_empty(),
    )))
}

// ----- public links -----

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{title}</title></head><body style=\"font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem\">{body}</body></html>"
    ))
}

/// The unsubscribe page of a message: a button that confirms (so a link scanner that follows
/// the URL unsubscribes nobody).
#[utoipa::path(get, path = "/u/{token}", tag = "nurture", params(("token" = String, Path)),
    responses((status = 200, description = "The confirmation page", content_type = "text/html"), (status = 404, body = Problem)))]
async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<Html<String>> {
    state.service.mail_by_token(&token)?;
    Ok(page(
        "Unsubscribe",
        "<h1>Unsubscribe</h1><p>Stop all marketing email to this address?</p><form method=\"post\"><button type=\"submit\">Unsubscribe</button></form>",
    ))
}

/// Unsubscribe (the page's button, or a mail client's RFC 8058 one-click POST): the lead is
/// marked `do_not_contact`, every sequence it is in ends, and unsent marketing mail is
/// suppressed.
#[utoipa::path(post, path = "/u/{token}", tag = "nurture", params(("token" = String, Path)),
    responses((status = 200, description = "Unsubscribed", content_type = "text/html"), (status = 404, body = Problem)))]
async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<Html<String>> {
    state.service.unsubscribe_token(token).await?;
    Ok(page(
        "Unsubscribed",
        "<h1>Unsubscribed</h1><p>You will receive no more marketing email from us.</p>",
    ))
}

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The open pixel: an `email_open` activity on the message's lead. Always answers the image,
/// so a mail client shows nothing broken even for an unknown token.
#[utoipa::path(get, path = "/o/{token}", tag = "nurture", params(("token" = String, Path)),
    responses((status = 200, description = "A 1×1 GIF", content_type = "image/gif")))]
async fn open_pixel(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    if let Err(e) = state.service.track_mail(token, Tracked::Open).await {
        tracing::debug!(error = %e, "open pixel not recorded");
    }
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, max-age=0"),
        ],
        PIXEL,
    )
        .into_response()
}

/// A tracked link: an `email_click` activity, then a redirect to the link's original target
/// (only targets stored with the message: this is no open redirect).
#[utoipa::path(get, path = "/c/{token}/{n}", tag = "nurture",
    params(("token" = String, Path), ("n" = usize, Path)),
    responses((status = 303, description = "To the original link"), (status = 404, body = Problem)))]
async fn click(
    State(state): State<AppState>,
    Path((token, n)): Path<(String, String)>,
) -> ApiResult<Response> {
    let n: usize = n.parse().map_err(|_| ApiError::NotFound("link"))?;
    match state.service.track_mail(token, Tracked::Click(n)).await? {
        Some(url) => Ok(Redirect::to(&url).into_response()),
        None => Err(ApiError::NotFound("link")),
    }
}
