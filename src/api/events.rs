//! Live events over Server-Sent Events: `GET /v1/events` streams the caller's visible changes
//! and notifications as they commit, resumable with `Last-Event-ID` (or `?since=`).

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Params};
use crate::service::{LiveEvent, Service, past_newest};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Events read from the changelog per step.
const STEP: usize = 200;
/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The bearer token of the request (the `Auth` extractor has checked it already).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn parse_seq(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| "must be a changelog seq (a whole number ≥ 0)".to_owned())
}

/// One open stream: where it is in the changelog and what it has read but not yet sent.
struct Feed {
    service: Service,
    token: String,
    since: u64,
    buf: VecDeque<LiveEvent>,
    seq: watch::Receiver<u64>,
    closing: CancellationToken,
}

impl Feed {
    /// The next event, waiting for a commit when there is none; `None` ends the stream (the
    /// server is stopping, or the caller's token stopped working).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Some(
                    Event::default()
                        .id(e.seq.to_string())
                        .event(e.event)
                        .data(e.data.to_string()),
                );
            }
            if self.closing.is_cancelled() {
                return None;
            }
            // Marked before reading, so a commit after the read wakes the wait below.
            self.seq.borrow_and_update();
            // Checked again each step: a deactivated user's stream ends, a manager's team
            // follows its changes.
            let p = self.service.authenticate(&self.token).ok()?;
            match self.service.live_events(&p, self.since, STEP) {
                Ok((events, next)) => {
                    let advanced = next > self.since;
                    self.since = next;
                    self.buf.extend(events);
                    if advanced {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading live events failed; retrying");
                    tokio::select! {
                        _ = self.closing.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = self.closing.cancelled() => return None,
                changed = self.seq.changed() => changed.ok()?,
            }
        }
    }
}

/// One event of the stream, as its fields arrive.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the stream's frames for `/openapi.json`; axum's `Event` writes them.
struct StreamEvent {
    /// The changelog seq; send it back as `Last-Event-ID` to resume.
    id: String,
    /// `lead.created`, `task.updated`, a notification's kind such as `lead.assigned`, …
    event: String,
    /// A JSON object: `seq`, `at`, `entity`, `id`, `op`, `event`, `lead_id` and the event's `data`.
    data: String,
}

/// The caller's visible changes and notifications as Server-Sent Events, as they commit: `id`
/// is the changelog seq, `event` the event name webhooks use (`lead.created`, `task.updated`,
/// a notification's kind such as `lead.assigned`), `data` a JSON object. Resume with
/// `Last-Event-ID` (or `?since=SEQ`); without either the stream starts at the newest change.
/// A comment is sent every 15 s while nothing happens.
#[utoipa::path(get, path = "/v1/events", tag = "integration",
    params(("since" = Option<u64>, Query, description = "Start after this seq (Last-Event-ID wins)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "The last event id received")),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = StreamEvent),
        (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn events(
    State(state): State<AppState>,
    Auth(_p): Auth,
    headers: HeaderMap,
    mut q: Params,
) -> ApiResult<Response> {
    let query_since = q.parse("since", parse_seq)?;
    q.finish()?;
    let header_since = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| "must be ASCII".to_owned())
                .and_then(parse_seq)
                .map_err(|m| ApiError::field("Last-Event-ID", m))?,
        ),
    };
    let service = state.service.clone();
    let given = header_since
        .map(|s| (s, "Last-Event-ID"))
        .or(query_since.map(|s| (s, "since")));
    let since = match given {
        None => service.head_seq()?,
        Some((since, field)) => {
            if let Some(m) = past_newest(since, service.newest_seq()?) {
                return Err(ApiError::field(field, m));
            }
            since
        }
    };
    let token = bearer(&headers)
        .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <token>".into()))?;
    let feed = Feed {
        seq: service.store().committed_seq(),
        closing: service.events_closing(),
        service,
        token,
        since,
        buf: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let e = feed.next().await?;
        Some((Ok::<Event, Infallible>(e), feed))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response())
}
