//! The deadline for a request body to arrive. A client that announces a body and then stalls
//! is at fault, so it gets a 408 — not the 503 the request timeout gives when the server is
//! the one that took too long.

use super::error::ApiError;
use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How the body read ended, when it failed for a reason the client must hear about.
const READ_WHOLE: u8 = 0;
const DEADLINE_PASSED: u8 = 1;
const TOO_LARGE: u8 = 2;

/// Why a body read stopped: its deadline passed.
#[derive(Debug)]
struct BodyDeadlinePassed;

impl std::fmt::Display for BodyDeadlinePassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyDeadlinePassed {}

/// Gives the body `within` from now to arrive whole. When it does not, whatever the handler
/// answered (it saw a failed body read) becomes a 408; a body over the size limit (which
/// extractors can no longer tell apart once the body is rewrapped) stays a 413.
pub async fn limit(within: Duration, max_body_bytes: u64, req: Request, next: Next) -> Response {
    if req.body().size_hint().exact() == Some(0) {
        return next.run(req).await;
    }
    let deadline = Instant::now() + within;
    let outcome = Arc::new(AtomicU8::new(READ_WHOLE));
    let (parts, body) = req.into_parts();
    let seen = outcome.clone();
    let frames = futures_util::stream::unfold(
        (body.into_data_stream(), false),
        move |(mut frames, done)| {
            let seen = seen.clone();
            async move {
                if done {
                    return None;
                }
                match tokio::time::timeout_at(deadline, frames.next()).await {
                    Ok(Some(Ok(bytes))) => Some((Ok(bytes), (frames, false))),
                    Ok(Some(Err(e))) => {
                        let e = innermost(e);
                        if e.is::<http_body_util::LengthLimitError>() {
                            seen.store(TOO_LARGE, Ordering::Relaxed);
                        }
                        Some((Err(e), (frames, true)))
                    }
                    Ok(None) => None,
                    Err(_) => {
                        seen.store(DEADLINE_PASSED, Ordering::Relaxed);
                        Some((Err(BodyDeadlinePassed.into()), (frames, true)))
                    }
                }
            }
        },
    );
    let res = next
        .run(Request::from_parts(parts, Body::from_stream(frames)))
        .await;
    match outcome.load(Ordering::Relaxed) {
        DEADLINE_PASSED => ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s; send it whole, promptly",
            within.as_secs_f64()
        ))
        .into_response(),
        TOO_LARGE => ApiError::PayloadTooLarge(max_body_bytes).into_response(),
        _ => res,
    }
}

/// The error under axum's wrappers.
fn innermost(e: axum::Error) -> axum::BoxError {
    let mut inner = e.into_inner();
    loop {
        match inner.downcast::<axum::Error>() {
            Ok(wrapped) => inner = wrapped.into_inner(),
            Err(other) => return other,
        }
    }
}
