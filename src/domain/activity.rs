//! Activities (what a lead did or what was done with a lead) and the system events that,
//! together with activities, make up a lead's timeline.

use super::email::Email;
use super::time::{Millis, parse_rfc3339, to_rfc3339};
use super::{FieldError, Problems, clean_text};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// Activity kinds that count as the owner touching the lead (first touch and follow-ups).
pub const TOUCH_KINDS: &[&str] = &["call", "email_sent", "meeting"];

/// The longest text an activity (or an imported row's note) may carry, in characters.
pub const MAX_TEXT: usize = 20_000;
const MAX_PROPERTIES_BYTES: usize = 16 * 1024;

/// An activity as stored. Field order is part of the stored format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub kind: String,
    pub occurred_at: Millis,
    pub recorded_at: Millis,
    pub actor_id: Option<Uuid>,
    pub campaign_id: Option<Uuid>,
    pub text: Option<String>,
    /// Properties as JSON object text.
    pub properties: String,
}

/// The body of `POST /v1/activities` and `POST /v1/leads/{id}/activities`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityInput {
    /// The lead; or give `email` instead.
    pub lead_id: Option<Uuid>,
    /// Finds the lead by email, creating it if none exists.
    pub email: Option<String>,
    #[schema(pattern = "^[a-z0-9_.]{1,40}$")]
    pub kind: String,
    pub occurred_at: Option<String>,
    pub campaign_id: Option<Uuid>,
    pub text: Option<String>,
    #[schema(value_type = Object)]
    pub properties: Option<Map<String, Value>>,
}

/// Which lead an activity is for.
#[derive(Debug, Clone, PartialEq)]
pub enum LeadRef {
    Id(Uuid),
    Email(String),
}

/// A valid activity not yet attached to a stored lead.
#[derive(Debug, Clone, PartialEq)]
pub struct NewActivity {
    pub lead: LeadRef,
    pub kind: String,
    pub occurred_at: Option<Millis>,
    pub campaign_id: Option<Uuid>,
    pub text: Option<String>,
    pub properties: Map<String, Value>,
}

pub fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 40
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

impl ActivityInput {
    /// `path_lead` is the lead named in the URL, if any. A body that names another lead, or
    /// names it by email besides, is refused rather than half read.
    pub fn validate(self, path_lead: Option<Uuid>) -> Result<NewActivity, Vec<FieldError>> {
        let mut p = Problems::default();
        match (path_lead, self.lead_id, &self.email) {
            (Some(path), Some(body), _) if path != body => p.push(
                "lead_id",
                "names another lead than the URL; leave it out of the body",
            ),
            (Some(_), None, Some(_)) => p.push(
                "email",
                "the lead is the one in the URL; leave email out of the body",
            ),
            (None, Some(_), Some(_)) => p.push("email", "give lead_id or email, not both"),
            _ => {}
        }
        let lead = match (path_lead.or(self.lead_id), self.email) {
            (Some(id), _) => Some(LeadRef::Id(id)),
            (None, Some(e)) => match Email::parse(&e) {
                Ok(e) => Some(LeadRef::Email(e.into_inner())),
                Err(m) => {
                    p.push("email", m);
                    None
                }
            },
            (None, None) => {
                p.push("lead_id", "give lead_id or email");
                None
            }
        };
        let kind = self.kind.trim().to_lowercase();
        if !valid_kind(&kind) {
            p.push(
                "kind",
                "must be 1 to 40 characters of a-z, 0-9, _ or . (e.g. page_view, call, note)",
            );
        }
        let occurred_at = match self.occurred_at.map(|s| parse_rfc3339(&s)) {
            Some(Ok(ms)) => Some(ms),
            Some(Err(m)) => {
                p.push("occurred_at", m);
                None
            }
            None => None,
        };
        let properties = self.properties.unwrap_or_default();
        if serde_json::to_vec(&properties).map_or(true, |b| b.len() > MAX_PROPERTIES_BYTES) {
            p.push(
                "properties",
                format!("must encode to at most {MAX_PROPERTIES_BYTES} bytes of JSON"),
            );
        }
        let text = clean_multiline(&mut p, self.text);
        match lead {
            Some(lead) if p.is_empty() => Ok(NewActivity {
                lead,
                kind,
                occurred_at,
                campaign_id: self.campaign_id,
                text,
                properties,
            }),
            _ => Err(p.0),
        }
    }
}

/// Notes keep their line breaks, unlike one-line fields.
fn clean_multiline(p: &mut Problems, text: Option<String>) -> Option<String> {
    let text = text?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    if trimmed.chars().count() > MAX_TEXT {
        p.push("text", format!("must be at most {MAX_TEXT} characters"));
        return None;
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return clean_text(p, "text", Some(trimmed.to_owned()), MAX_TEXT);
    }
    Some(trimmed.to_owned())
}

impl NewActivity {
    pub fn into_activity(
        self,
        id: Uuid,
        lead_id: Uuid,
        actor_id: Option<Uuid>,
        now: Millis,
    ) -> Activity {
        Activity {
            id,
            lead_id,
            kind: self.kind,
            occurred_at: self.occurred_at.unwrap_or(now),
            recorded_at: now,
            actor_id,
            campaign_id: self.campaign_id,
            text: self.text,
            properties: Value::Object(self.properties).to_string(),
        }
    }
}

fn json_object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// An activity as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivityView {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub kind: String,
    pub occurred_at: String,
    pub actor_id: Option<Uuid>,
    pub campaign_id: Option<Uuid>,
    pub text: Option<String>,
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
}

impl From<&Activity> for ActivityView {
    fn from(a: &Activity) -> Self {
        ActivityView {
            id: a.id,
            lead_id: a.lead_id,
            kind: a.kind.clone(),
            occurred_at: to_rfc3339(a.occurred_at),
            actor_id: a.actor_id,
            campaign_id: a.campaign_id,
            text: a.text.clone(),
            properties: json_object(&a.properties),
        }
    }
}

/// A system event on a lead's timeline (created, merged, updated, stage_changed …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadEvent {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub at: Millis,
    pub kind: String,
    pub actor_id: Option<Uuid>,
    /// Details as JSON object text.
    pub data: String,
}

/// One entry of `GET /v1/leads/{id}/timeline`: an activity or a system event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TimelineItem {
    /// `activity` or `event`.
    #[serde(rename = "type")]
    pub item_type: &'static str,
    pub id: Uuid,
    pub kind: String,
    pub at: String,
    pub actor_id: Option<Uuid>,
    pub text: Option<String>,
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
}

impl TimelineItem {
    pub fn from_activity(a: &Activity) -> Self {
        TimelineItem {
            item_type: "activity",
            id: a.id,
            kind: a.kind.clone(),
            at: to_rfc3339(a.occurred_at),
            actor_id: a.actor_id,
            text: a.text.clone(),
            data: json_object(&a.properties),
        }
    }

    pub fn from_event(e: &LeadEvent) -> Self {
        TimelineItem {
            item_type: "event",
            id: e.id,
            kind: e.kind.clone(),
            at: to_rfc3339(e.at),
            actor_id: e.actor_id,
            text: None,
            data: json_object(&e.data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lead_wins_and_kind_is_normalized() {
        let id = Uuid::now_v7();
        let a = ActivityInput {
            kind: " Call ".into(),
            text: Some("客户关注智能制造\n和MES系统".into()),
            ..Default::default()
        }
        .validate(Some(id))
        .unwrap();
        assert_eq!(a.lead, LeadRef::Id(id));
        assert_eq!(a.kind, "call");
        assert!(a.text.unwrap().contains('\n'));
    }

    #[test]
    fn needs_a_lead_and_a_sane_kind() {
        let errs = ActivityInput {
            kind: "page view!".into(),
            ..Default::default()
        }
        .validate(None)
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["lead_id", "kind"]);
    }

    #[test]
    fn email_reference_is_normalized() {
        let a = ActivityInput {
            email: Some("A@Acme.com".into()),
            kind: "note".into(),
            ..Default::default()
        }
        .validate(None)
        .unwrap();
        assert_eq!(a.lead, LeadRef::Email("a@acme.com".into()));
    }
}
