//! `GET /v1/search`: full-text search over the leads and activities the caller may see.

use super::AppState;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Params, parse_owner, parse_uuid};
use crate::domain::lead::{CHANNELS, Stage, Status};
use crate::domain::time::parse_rfc3339;
use crate::search::SearchRequest;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

/// Results a page holds at most.
const MAX_LIMIT: u64 = 100;

#[derive(Serialize, ToSchema)]
pub struct SearchItem {
    /// `lead` or `activity`.
    #[serde(rename = "type")]
    pub item_type: String,
    pub id: String,
    pub lead_id: String,
    /// Relevance (higher is better).
    pub score: f32,
    /// The lead's score, the tie-break between equally relevant results.
    pub lead_score: i64,
    /// What matched, in `<b>`, with a few words around; HTML-escaped.
    pub snippet: String,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    pub items: Vec<SearchItem>,
    /// Matches in all, beyond this page. Counting stops at `search.count_limit` (1,000):
    /// past it, `total` is that limit and `total_exact` is false.
    pub total: usize,
    /// False when more documents match than `search.count_limit`: `total` is a lower bound,
    /// the facets count the first matches up to the limit (in index order), and equally
    /// relevant results come in index order instead of by lead score.
    pub total_exact: bool,
    /// Counts per stage and per channel over the matches the caller may see (see
    /// `total_exact`).
    #[schema(value_type = Object)]
    pub facets: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub next_cursor: Option<String>,
}

/// Search leads and activities. Finds any two or more consecutive characters of Chinese text,
/// English words (ASCII-folded, prefixes for type-ahead, one typo in words of 5+ letters),
/// emails by address, local part or domain, and phones in any format or by their last 4+
/// digits. Results and facets include only what the caller may see.
#[utoipa::path(get, path = "/v1/search", tag = "search",
    params(("q" = Option<String>, Query, description = "The words; empty lists by the filters"),
        ("type" = Option<String>, Query, description = "lead, activity or all (default)",
            pattern = "^(lead|activity|all)$"),
        ("stage" = Option<Stage>, Query), ("status" = Option<Status>, Query), ("channel" = Option<String>, Query),
        ("owner_id" = Option<String>, Query, description = "A user id, or `none`",
            pattern = "^(none|[0-9a-fA-F-]{32,36})$"),
        ("pool_id" = Option<uuid::Uuid>, Query),
        ("min_score" = Option<i64>, Query), ("max_score" = Option<i64>, Query),
        ("created_after" = Option<String>, Query, format = DateTime),
        ("created_before" = Option<String>, Query, format = DateTime),
        ("limit" = Option<u32>, Query, description = "Default 20", maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = SearchResults), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn search(
    State(state): State<AppState>,
    Auth(p): Auth,
    mut q: Params,
) -> ApiResult<Json<SearchResults>> {
    let score = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| "must be a whole number".to_owned())
    };
    let text = q.take("q").unwrap_or_default();
    if text.chars().count() > 200 {
        return Err(ApiError::field("q", "must be at most 200 characters"));
    }
    let request = SearchRequest {
        doc_type: q
            .parse("type", |s| match s {
                "lead" => Ok(Some("lead")),
                "activity" => Ok(Some("activity")),
                "all" => Ok(None),
                _ => Err("must be lead, activity or all".to_owned()),
            })?
            .flatten(),
        stage: q.parse("stage", |s| {
            Stage::parse(s)
                .map(|st| st.as_str().to_owned())
                .ok_or_else(|| "not a stage".to_owned())
        })?,
        status: q.parse("status", |s| {
            Status::parse(s)
                .map(|st| st.as_str().to_owned())
                .ok_or_else(|| "not a status".to_owned())
        })?,
        channel: q.parse("channel", |s| {
            let s = s.trim().to_lowercase();
            if CHANNELS.contains(&s.as_str()) || s == "none" {
                Ok(s)
            } else {
                Err(format!("must be one of {} or none", CHANNELS.join(", ")))
            }
        })?,
        owner: q.parse("owner_id", parse_owner)?,
        pool: q.parse("pool_id", parse_uuid)?,
        min_score: q.parse("min_score", score)?,
        max_score: q.parse("max_score", score)?,
        created_after: q.parse("created_after", parse_rfc3339)?,
        created_before: q.parse("created_before", parse_rfc3339)?,
        visible_owners: p.visible_owners(),
        count_limit: usize::try_from(state.config.search.count_limit).ok(),
        limit: q.limit_or(20, MAX_LIMIT)?,
        offset: match q.cursor()? {
            None => 0,
            Some((offset, _)) => usize::try_from(offset)
                .map_err(|_| ApiError::field("cursor", "is not a cursor issued by this server"))?,
        },
        q: text,
    };
    let tag = q.finish()?;
    let page = state
        .search
        .run(request)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(SearchResults {
        items: page
            .hits
            .into_iter()
            .map(|h| SearchItem {
                item_type: h.doc_type,
                id: h.id,
                lead_id: h.lead_id,
                score: h.relevance,
                lead_score: h.lead_score,
                snippet: h.snippet,
            })
            .collect(),
        total: page.total,
        total_exact: page.total_exact,
        facets: page.facets,
        next_cursor: page
            .next_offset
            .map(|o| tag.cursor((i64::try_from(o).unwrap_or(i64::MAX), 0))),
    }))
}
