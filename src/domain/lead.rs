//! The lead: what is stored, what a client may send to create or patch one, how a duplicate
//! capture fills an existing lead, and how a lead is shown.

use super::email::Email;
use super::phone::Phone;
use super::time::{Millis, opt_rfc3339, parse_rfc3339, to_rfc3339};
use super::{FieldError, Problems, clean_text, patch_field, patch_required};
use phonenumber::country::Id as Region;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a lead stands in the funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Lead,
    Mql,
    Sql,
    Opportunity,
    Customer,
    Disqualified,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Lead,
        Stage::Mql,
        Stage::Sql,
        Stage::Opportunity,
        Stage::Customer,
        Stage::Disqualified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Lead => "lead",
            Stage::Mql => "mql",
            Stage::Sql => "sql",
            Stage::Opportunity => "opportunity",
            Stage::Customer => "customer",
            Stage::Disqualified => "disqualified",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Where the work on a lead stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    New,
    Attempting,
    Connected,
    Nurturing,
    Unqualified,
    Converted,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::New,
        Status::Attempting,
        Status::Connected,
        Status::Nurturing,
        Status::Unqualified,
        Status::Converted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Attempting => "attempting",
            Status::Connected => "connected",
            Status::Nurturing => "nurturing",
            Status::Unqualified => "unqualified",
            Status::Converted => "converted",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// The marketing channels a lead can be attributed to.
pub const CHANNELS: &[&str] = &[
    "paid_search",
    "organic_search",
    "social",
    "referral",
    "event",
    "email",
    "direct",
    "other",
];

/// UTM parameters exactly as captured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Utm {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub term: Option<String>,
    pub content: Option<String>,
}

/// The parts of a lead's score. Computed by the scoring hook; never set by clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    pub total: i32,
    pub profile: i32,
    pub engagement: i32,
    pub source: i32,
    pub interaction: i32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Flags {
    pub personal_email: bool,
    pub invalid_email: bool,
    pub do_not_contact: bool,
}

/// A lead as stored. Field order is part of the postcard format: change it only with a new
/// format version and a migration (see `store::codec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    pub id: Uuid,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: u64,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub industry: Option<String>,
    pub company_size: Option<u32>,
    pub region: Option<String>,
    pub country: Option<String>,
    pub source: Option<String>,
    pub channel: Option<String>,
    pub utm: Utm,
    pub campaign_id: Option<Uuid>,
    pub stage: Stage,
    pub status: Status,
    pub owner_id: Option<Uuid>,
    pub pool_id: Option<Uuid>,
    pub score: Score,
    pub tags: Vec<String>,
    /// Custom fields as JSON object text (postcard cannot carry a self-describing value).
    pub fields: String,
    pub flags: Flags,
    pub first_touch_at: Option<Millis>,
    pub last_activity_at: Option<Millis>,
    pub next_follow_up_at: Option<Millis>,
}

/// What normalization needs from configuration.
#[derive(Debug, Clone)]
pub struct NormalizeRules {
    pub default_region: Region,
    pub personal_domains: Vec<String>,
    /// UTM/referrer → channel rules (`domain::channel`).
    pub channels: Vec<super::channel::ChannelRule>,
}

impl NormalizeRules {
    pub fn is_personal(&self, email: &Email) -> bool {
        let domain = email.domain();
        self.personal_domains.iter().any(|d| d == domain)
    }
}

const MAX_TEXT: usize = 500;
const MAX_TAGS: usize = 50;
const MAX_TAG_CHARS: usize = 64;
const MAX_FIELDS_BYTES: usize = 16 * 1024;

/// The body of `POST /v1/leads`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadInput {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub industry: Option<String>,
    pub company_size: Option<u32>,
    pub region: Option<String>,
    pub country: Option<String>,
    pub source: Option<String>,
    /// One of paid_search, organic_search, social, referral, event, email, direct, other.
    pub channel: Option<String>,
    pub utm: Option<Utm>,
    pub campaign_id: Option<Uuid>,
    pub stage: Option<Stage>,
    pub status: Option<Status>,
    pub owner_id: Option<Uuid>,
    pub pool_id: Option<Uuid>,
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Object)]
    pub fields: Option<Map<String, Value>>,
    pub flags: Option<FlagsInput>,
    pub next_follow_up_at: Option<String>,
    /// The `/t.js` visitor id of this person: their anonymous page views move onto the lead.
    pub visitor_id: Option<String>,
}

/// The one flag a client may set; the others are derived.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagsInput {
    pub do_not_contact: Option<bool>,
}

/// A create request after parsing and normalization: every value is valid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewLead {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub industry: Option<String>,
    pub company_size: Option<u32>,
    pub region: Option<String>,
    pub country: Option<String>,
    pub source: Option<String>,
    pub channel: Option<String>,
    pub utm: Utm,
    pub campaign_id: Option<Uuid>,
    pub stage: Option<Stage>,
    pub status: Option<Status>,
    pub owner_id: Option<Uuid>,
    pub pool_id: Option<Uuid>,
    pub tags: Vec<String>,
    pub fields: Map<String, Value>,
    pub flags: Flags,
    pub next_follow_up_at: Option<Millis>,
}

fn clean_email(p: &mut Problems, field: &str, raw: Option<String>) -> Option<Email> {
    let raw = raw?;
    if raw.trim().is_empty() {
        return None;
    }
    match Email::parse(&raw) {
        Ok(e) => Some(e),
        Err(m) => {
            p.push(field, m);
            None
        }
    }
}

fn clean_phone(
    p: &mut Problems,
    field: &str,
    raw: Option<String>,
    region: Region,
) -> Option<Phone> {
    let raw = raw?;
    if raw.trim().is_empty() {
        return None;
    }
    match Phone::parse(&raw, region) {
        Ok(ph) => Some(ph),
        Err(m) => {
            p.push(field, m);
            None
        }
    }
}

fn clean_channel(p: &mut Problems, raw: Option<String>) -> Option<String> {
    let raw = raw?.trim().to_lowercase();
    if raw.is_empty() {
        return None;
    }
    if CHANNELS.contains(&raw.as_str()) {
        Some(raw)
    } else {
        p.push("channel", format!("must be one of {}", CHANNELS.join(", ")));
        None
    }
}

/// What separates tags in one CSV cell; a tag may not contain them, or an export would not
/// import back as the same tags.
pub const TAG_SEPARATORS: [char; 5] = [';', ',', '，', '；', '|'];

/// What is wrong with a (trimmed, lowercased, non-empty) tag, if anything.
fn tag_problem(t: &str) -> Option<String> {
    if t.chars().count() > MAX_TAG_CHARS || t.chars().any(char::is_control) {
        return Some(format!("must be 1 to {MAX_TAG_CHARS} printable characters"));
    }
    if t.contains(TAG_SEPARATORS) {
        return Some("may not contain ; , | ， or ； (they separate tags in a CSV file)".into());
    }
    None
}

/// Tags as stored: trimmed, lowercased, blanks dropped, each once, at most [`MAX_TAGS`]; what
/// breaks a rule is reported under `tags[i]` (or `tags`, for too many).
pub fn clean_tags(p: &mut Problems, raw: Vec<String>) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let t = t.trim().to_lowercase();
        if t.is_empty() {
            continue;
        }
        if let Some(problem) = tag_problem(&t) {
            p.push(format!("tags[{i}]"), problem);
            continue;
        }
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if tags.len() > MAX_TAGS {
        p.push("tags", format!("at most {MAX_TAGS} tags"));
    }
    tags
}

fn clean_fields(p: &mut Problems, fields: Map<String, Value>) -> Map<String, Value> {
    match serde_json::to_vec(&fields) {
        Ok(bytes) if bytes.len() <= MAX_FIELDS_BYTES => {}
        _ => p.push(
            "fields",
            format!("must encode to at most {MAX_FIELDS_BYTES} bytes of JSON"),
        ),
    }
    if fields.keys().any(|k| k.is_empty() || k.len() > 64) {
        p.push("fields", "keys must be 1 to 64 bytes");
    }
    fields
}

fn clean_utm(p: &mut Problems, utm: Utm) -> Utm {
    Utm {
        source: clean_text(p, "utm.source", utm.source, MAX_TEXT),
        medium: clean_text(p, "utm.medium", utm.medium, MAX_TEXT),
        campaign: clean_text(p, "utm.campaign", utm.campaign, MAX_TEXT),
        term: clean_text(p, "utm.term", utm.term, MAX_TEXT),
        content: clean_text(p, "utm.content", utm.content, MAX_TEXT),
    }
}

fn clean_time(p: &mut Problems, field: &str, raw: Option<String>) -> Option<Millis> {
    match parse_rfc3339(&raw?) {
        Ok(ms) => Some(ms),
        Err(m) => {
            p.push(field, m);
            None
        }
    }
}

/// What to do with an email that is not an address: refuse the capture (API, forms) or keep it
/// flagged `invalid_email` (imports, where one bad cell should not lose the row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadEmail {
    Refuse,
    Flag,
}

/// A lead is with one owner or waits in one pool, never both.
const OWNER_OR_POOL: &str =
    "a lead has an owner or sits in a pool, not both; send one of owner_id and pool_id";

impl LeadInput {
    /// Parses and normalizes a create request; every problem is reported at once.
    pub fn validate(self, rules: &NormalizeRules) -> Result<NewLead, Vec<FieldError>> {
        self.validate_with(rules, BadEmail::Refuse)
    }

    /// The values as submitted, before normalization, for the capture's first activity.
    pub fn raw_values(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in [
            ("name", &self.name),
            ("email", &self.email),
            ("phone", &self.phone),
            ("company", &self.company),
            ("title", &self.title),
        ] {
            if let Some(v) = v {
                m.insert(k.to_owned(), Value::String(v.clone()));
            }
        }
        m
    }

    pub fn validate_with(
        self,
        rules: &NormalizeRules,
        bad_email: BadEmail,
    ) -> Result<NewLead, Vec<FieldError>> {
        let mut p = Problems::default();
        let mut invalid_email = None;
        let email = match (bad_email, self.email) {
            (BadEmail::Flag, Some(raw)) if Email::parse(&raw).is_err() => {
                let kept = raw.trim().to_lowercase();
                if !kept.is_empty()
                    && kept.chars().count() <= MAX_TEXT
                    && !kept.chars().any(char::is_control)
                {
                    invalid_email = Some(kept);
                }
                None
            }
            (_, raw) => clean_email(&mut p, "email", raw),
        };
        let phone = clean_phone(&mut p, "phone", self.phone, rules.default_region);
        let flags = Flags {
            personal_email: email.as_ref().is_some_and(|e| rules.is_personal(e)),
            invalid_email: invalid_email.is_some(),
            do_not_contact: self.flags.and_then(|f| f.do_not_contact).unwrap_or(false),
        };
        let lead = NewLead {
            name: clean_text(&mut p, "name", self.name, MAX_TEXT),
            email: email.map(Email::into_inner).or(invalid_email),
            phone: phone.map(Phone::into_inner),
            company: clean_text(&mut p, "company", self.company, MAX_TEXT),
            title: clean_text(&mut p, "title", self.title, MAX_TEXT),
            industry: clean_text(&mut p, "industry", self.industry, MAX_TEXT),
            company_size: self.company_size,
            region: clean_text(&mut p, "region", self.region, MAX_TEXT),
            country: clean_text(&mut p, "country", self.country, MAX_TEXT),
            source: clean_text(&mut p, "source", self.source, MAX_TEXT).map(|s| s.to_lowercase()),
            channel: clean_channel(&mut p, self.channel),
            utm: clean_utm(&mut p, self.utm.unwrap_or_default()),
            campaign_id: self.campaign_id,
            stage: self.stage,
            status: self.status,
            owner_id: self.owner_id,
            pool_id: self.pool_id,
            tags: clean_tags(&mut p, self.tags.unwrap_or_default()),
            fields: clean_fields(&mut p, self.fields.unwrap_or_default()),
            flags,
            next_follow_up_at: clean_time(&mut p, "next_follow_up_at", self.next_follow_up_at),
        };
        if p.is_empty() && lead.name.is_none() && lead.email.is_none() && lead.phone.is_none() {
            p.push("email", "a lead needs at least a name, an email or a phone");
        }
        if lead.owner_id.is_some() && lead.pool_id.is_some() {
            p.push("pool_id", OWNER_OR_POOL);
        }
        p.finish(lead)
    }
}

impl NewLead {
    /// The values of a stored lead as a capture, so a merge can fill blanks from it.
    pub fn from_lead(l: &Lead) -> NewLead {
        NewLead {
            name: l.name.clone(),
            email: l.email.clone(),
            phone: l.phone.clone(),
            company: l.company.clone(),
            title: l.title.clone(),
            industry: l.industry.clone(),
            company_size: l.company_size,
            region: l.region.clone(),
            country: l.country.clone(),
            source: l.source.clone(),
            channel: l.channel.clone(),
            utm: l.utm.clone(),
            campaign_id: l.campaign_id,
            stage: Some(l.stage),
            status: Some(l.status),
            owner_id: l.owner_id,
            pool_id: l.pool_id,
            tags: l.tags.clone(),
            fields: l.fields_map(),
            flags: l.flags,
            next_follow_up_at: l.next_follow_up_at,
        }
    }

    /// A fresh lead from this input.
    pub fn into_lead(self, id: Uuid, now: Millis) -> Lead {
        Lead {
            id,
            created_at: now,
            updated_at: now,
            version: 1,
            name: self.name,
            email: self.email,
            phone: self.phone,
            company: self.company,
            title: self.title,
            industry: self.industry,
            company_size: self.company_size,
            region: self.region,
            country: self.country,
            source: self.source,
            channel: self.channel,
            utm: self.utm,
            campaign_id: self.campaign_id,
            stage: self.stage.unwrap_or_default(),
            status: self.status.unwrap_or_default(),
            owner_id: self.owner_id,
            pool_id: self.pool_id,
            score: Score::default(),
            tags: self.tags,
            fields: Value::Object(self.fields).to_string(),
            flags: self.flags,
            first_touch_at: None,
            last_activity_at: None,
            next_follow_up_at: self.next_follow_up_at,
        }
    }
}

/// What a duplicate capture did to the lead it was merged into.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MergeReport {
    /// Fields that were blank and are now filled.
    pub filled: Vec<String>,
    /// Fields where the capture offered a different value, which was not applied.
    pub conflicts: Vec<Conflict>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub field: String,
    pub kept: String,
    pub offered: String,
}

fn fill<T: Clone + PartialEq + ToString>(
    report: &mut MergeReport,
    field: &str,
    slot: &mut Option<T>,
    offered: Option<T>,
) {
    match (slot.as_ref(), offered) {
        (None, Some(v)) => {
            *slot = Some(v);
            report.filled.push(field.to_owned());
        }
        (Some(kept), Some(v)) if *kept != v => report.conflicts.push(Conflict {
            field: field.to_owned(),
            kept: kept.to_string(),
            offered: v.to_string(),
        }),
        _ => {}
    }
}

impl Lead {
    /// Merges a duplicate capture into this lead: blanks are filled, nothing is overwritten,
    /// and every value that differed is reported so the timeline can show it.
    pub fn absorb(&mut self, new: NewLead) -> MergeReport {
        let mut r = MergeReport::default();
        fill(&mut r, "name", &mut self.name, new.name);
        fill(&mut r, "email", &mut self.email, new.email);
        fill(&mut r, "phone", &mut self.phone, new.phone);
        fill(&mut r, "company", &mut self.company, new.company);
        fill(&mut r, "title", &mut self.title, new.title);
        fill(&mut r, "industry", &mut self.industry, new.industry);
        fill(
            &mut r,
            "company_size",
            &mut self.company_size,
            new.company_size,
        );
        fill(&mut r, "region", &mut self.region, new.region);
        fill(&mut r, "country", &mut self.country, new.country);
        fill(&mut r, "source", &mut self.source, new.source);
        fill(&mut r, "channel", &mut self.channel, new.channel);
        fill(&mut r, "utm.source", &mut self.utm.source, new.utm.source);
        fill(&mut r, "utm.medium", &mut self.utm.medium, new.utm.medium);
        fill(
            &mut r,
            "utm.campaign",
            &mut self.utm.campaign,
            new.utm.campaign,
        );
        fill(&mut r, "utm.term", &mut self.utm.term, new.utm.term);
        fill(
            &mut r,
            "utm.content",
            &mut self.utm.content,
            new.utm.content,
        );
        fill(
            &mut r,
            "campaign_id",
            &mut self.campaign_id,
            new.campaign_id,
        );
        fill(&mut r, "pool_id", &mut self.pool_id, new.pool_id);
        fill(
            &mut r,
            "next_follow_up_at",
            &mut self.next_follow_up_at,
            new.next_follow_up_at,
        );
        if self.owner_id.is_none() && new.owner_id.is_some() {
            self.owner_id = new.owner_id;
            r.filled.push("owner_id".into());
        }
        for tag in new.tags {
            if !self.tags.contains(&tag) && self.tags.len() < MAX_TAGS {
                self.tags.push(tag);
                r.filled.push(format!("tags[{}]", self.tags.len() - 1));
            }
        }
        let mut fields = self.fields_map();
        let mut fields_changed = false;
        for (k, v) in new.fields {
            match fields.get(&k) {
                None => {
                    r.filled.push(format!("fields.{k}"));
                    fields.insert(k, v);
                    fields_changed = true;
                }
                Some(kept) if *kept != v => r.conflicts.push(Conflict {
                    field: format!("fields.{k}"),
                    kept: kept.to_string(),
                    offered: v.to_string(),
                }),
                Some(_) => {}
            }
        }
        if fields_changed {
            self.fields = Value::Object(fields).to_string();
        }
        if new.flags.do_not_contact && !self.flags.do_not_contact {
            // Someone asking not to be contacted always wins.
            self.flags.do_not_contact = true;
            r.filled.push("flags.do_not_contact".into());
        }
        if r.filled.iter().any(|f| f == "email") {
            self.flags.personal_email = new.flags.personal_email;
        }
        r
    }

    pub fn fields_map(&self) -> Map<String, Value> {
        match serde_json::from_str(&self.fields) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }
}

/// A JSON merge patch (RFC 7396) of a lead: absent leaves a field alone, `null` clears it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadPatch {
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub company: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub industry: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<u32>)]
    pub company_size: Option<Option<u32>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub region: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub country: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub source: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub channel: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Object>)]
    pub utm: Option<Option<Map<String, Value>>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Uuid>)]
    pub campaign_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub stage: Option<Stage>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub status: Option<Status>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Uuid>)]
    pub owner_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Uuid>)]
    pub pool_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Vec<String>>)]
    pub tags: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Object>)]
    pub fields: Option<Option<Map<String, Value>>>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub flags: Option<FlagsInput>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub next_follow_up_at: Option<Option<String>>,
}

/// A patch after validation. `None` leaves a field alone; `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidPatch {
    pub name: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub personal_email: Option<bool>,
    pub phone: Option<Option<String>>,
    pub company: Option<Option<String>>,
    pub title: Option<Option<String>>,
    pub industry: Option<Option<String>>,
    pub company_size: Option<Option<u32>>,
    pub region: Option<Option<String>>,
    pub country: Option<Option<String>>,
    pub source: Option<Option<String>>,
    pub channel: Option<Option<String>>,
    /// A merge patch applied to the UTM object.
    pub utm: Option<Option<Map<String, Value>>>,
    pub campaign_id: Option<Option<Uuid>>,
    pub stage: Option<Stage>,
    pub status: Option<Status>,
    pub owner_id: Option<Option<Uuid>>,
    pub pool_id: Option<Option<Uuid>>,
    pub tags: Option<Vec<String>>,
    /// A merge patch applied to the custom fields object.
    pub fields: Option<Option<Map<String, Value>>>,
    pub do_not_contact: Option<bool>,
    pub next_follow_up_at: Option<Option<Millis>>,
}

fn patch_text(p: &mut Problems, field: &str, v: Option<Option<String>>) -> Option<Option<String>> {
    v.map(|inner| clean_text(p, field, inner, MAX_TEXT))
}

impl LeadPatch {
    pub fn validate(self, rules: &NormalizeRules) -> Result<ValidPatch, Vec<FieldError>> {
        let mut p = Problems::default();
        let email = self.email.map(|inner| clean_email(&mut p, "email", inner));
        let personal_email = email
            .as_ref()
            .map(|e| e.as_ref().is_some_and(|e| rules.is_personal(e)));
        let utm = match self.utm {
            Some(Some(m)) => {
                for (k, v) in &m {
                    if !["source", "medium", "campaign", "term", "content"].contains(&k.as_str()) {
                        p.push(format!("utm.{k}"), "unknown field");
                    } else if !(v.is_null() || v.is_string()) {
                        p.push(format!("utm.{k}"), "must be a string or null");
                    }
                }
                Some(Some(m))
            }
            other => other,
        };
        let patch = ValidPatch {
            name: patch_text(&mut p, "name", self.name),
            personal_email,
            email: email.map(|e| e.map(Email::into_inner)),
            phone: self.phone.map(|inner| {
                clean_phone(&mut p, "phone", inner, rules.default_region).map(Phone::into_inner)
            }),
            company: patch_text(&mut p, "company", self.company),
            title: patch_text(&mut p, "title", self.title),
            industry: patch_text(&mut p, "industry", self.industry),
            company_size: self.company_size,
            region: patch_text(&mut p, "region", self.region),
            country: patch_text(&mut p, "country", self.country),
            source: patch_text(&mut p, "source", self.source).map(|s| s.map(|s| s.to_lowercase())),
            channel: self.channel.map(|inner| clean_channel(&mut p, inner)),
            utm,
            campaign_id: self.campaign_id,
            stage: self.stage,
            status: self.status,
            owner_id: self.owner_id,
            pool_id: self.pool_id,
            tags: self.tags.map(|t| clean_tags(&mut p, t.unwrap_or_default())),
            fields: match self.fields {
                Some(Some(m)) => Some(Some(clean_fields(&mut p, m))),
                other => other,
            },
            do_not_contact: self.flags.and_then(|f| f.do_not_contact),
            next_follow_up_at: self
                .next_follow_up_at
                .map(|inner| inner.and_then(|s| clean_time(&mut p, "next_follow_up_at", Some(s)))),
        };
        if matches!(patch.owner_id, Some(Some(_))) && matches!(patch.pool_id, Some(Some(_))) {
            p.push("pool_id", OWNER_OR_POOL);
        }
        p.finish(patch)
    }
}

impl ValidPatch {
    /// Applies this patch to `lead`, returning the names of the fields that changed. The caller
    /// bumps the version and timestamps; a patch that changes nothing changes nothing.
    pub fn apply(&self, lead: &mut Lead) -> Result<Vec<&'static str>, Vec<FieldError>> {
        let before = lead.clone();
        macro_rules! set {
            ($f:ident) => {
                if let Some(v) = &self.$f {
                    lead.$f = v.clone();
                }
            };
        }
        set!(name);
        set!(email);
        set!(phone);
        set!(company);
        set!(title);
        set!(industry);
        set!(company_size);
        set!(region);
        set!(country);
        set!(source);
        set!(channel);
        set!(campaign_id);
        set!(owner_id);
        set!(pool_id);
        set!(next_follow_up_at);
        if let Some(pe) = self.personal_email {
            lead.flags.personal_email = pe;
            lead.flags.invalid_email = false;
        }
        if let Some(s) = self.stage {
            lead.stage = s;
        }
        if let Some(s) = self.status {
            lead.status = s;
        }
        if let Some(t) = &self.tags {
            lead.tags = t.clone();
        }
        if let Some(dnc) = self.do_not_contact {
            lead.flags.do_not_contact = dnc;
        }
        if let Some(utm_patch) = &self.utm {
            let mut current = serde_json::to_value(&lead.utm).unwrap_or(Value::Null);
            let patch = utm_patch.clone().map(Value::Object).unwrap_or(Value::Null);
            json_patch::merge(&mut current, &patch);
            if current.is_null() {
                current = Value::Object(Map::new());
            }
            lead.utm = serde_json::from_value(current)
                .map_err(|e| vec![FieldError::new("utm", e.to_string())])?;
            let mut p = Problems::default();
            lead.utm = clean_utm(&mut p, std::mem::take(&mut lead.utm));
            if !p.is_empty() {
                return Err(p.0);
            }
        }
        if let Some(fields_patch) = &self.fields {
            let mut current = Value::Object(lead.fields_map());
            let patch = fields_patch
                .clone()
                .map(Value::Object)
                .unwrap_or(Value::Null);
            json_patch::merge(&mut current, &patch);
            let map = match current {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            let mut p = Problems::default();
            let map = clean_fields(&mut p, map);
            if !p.is_empty() {
                return Err(p.0);
            }
            lead.fields = Value::Object(map).to_string();
        }
        if lead.name.is_none() && lead.email.is_none() && lead.phone.is_none() {
            return Err(vec![FieldError::new(
                "email",
                "a lead needs at least a name, an email or a phone",
            )]);
        }
        Ok(changed_fields(&before, lead))
    }
}

fn changed_fields(a: &Lead, b: &Lead) -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! cmp {
        ($($f:ident),*) => { $( if a.$f != b.$f { out.push(stringify!($f)); } )* };
    }
    cmp!(
        name,
        email,
        phone,
        company,
        title,
        industry,
        company_size,
        region,
        country,
        source,
        channel,
        utm,
        campaign_id,
        stage,
        status,
        owner_id,
        pool_id,
        tags,
        fields,
        flags,
        next_follow_up_at
    );
    out
}

/// The score as shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScoreView {
    pub total: i32,
    pub parts: ScoreParts,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScoreParts {
    pub profile: i32,
    pub engagement: i32,
    pub source: i32,
    pub interaction: i32,
}

/// A lead as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LeadView {
    pub id: Uuid,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub industry: Option<String>,
    pub company_size: Option<u32>,
    pub region: Option<String>,
    pub country: Option<String>,
    pub source: Option<String>,
    pub channel: Option<String>,
    pub utm: Utm,
    pub campaign_id: Option<Uuid>,
    pub stage: Stage,
    pub status: Status,
    pub owner_id: Option<Uuid>,
    pub pool_id: Option<Uuid>,
    pub score: ScoreView,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    pub flags: Flags,
    pub first_touch_at: Option<String>,
    pub last_activity_at: Option<String>,
    pub next_follow_up_at: Option<String>,
}

impl From<&Lead> for LeadView {
    fn from(l: &Lead) -> Self {
        LeadView {
            id: l.id,
            created_at: to_rfc3339(l.created_at),
            updated_at: to_rfc3339(l.updated_at),
            version: l.version,
            name: l.name.clone(),
            email: l.email.clone(),
            phone: l.phone.clone(),
            company: l.company.clone(),
            title: l.title.clone(),
            industry: l.industry.clone(),
            company_size: l.company_size,
            region: l.region.clone(),
            country: l.country.clone(),
            source: l.source.clone(),
            channel: l.channel.clone(),
            utm: l.utm.clone(),
            campaign_id: l.campaign_id,
            stage: l.stage,
            status: l.status,
            owner_id: l.owner_id,
            pool_id: l.pool_id,
            score: ScoreView {
                total: l.score.total,
                parts: ScoreParts {
                    profile: l.score.profile,
                    engagement: l.score.engagement,
                    source: l.score.source,
                    interaction: l.score.interaction,
                },
            },
            tags: l.tags.clone(),
            fields: l.fields_map(),
            flags: l.flags,
            first_touch_at: opt_rfc3339(l.first_touch_at),
            last_activity_at: opt_rfc3339(l.last_activity_at),
            next_follow_up_at: opt_rfc3339(l.next_follow_up_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::phone::parse_region;

    fn rules() -> NormalizeRules {
        NormalizeRules {
            default_region: parse_region("CN").unwrap(),
            personal_domains: vec!["qq.com".into(), "gmail.com".into()],
            channels: Vec::new(),
        }
    }

    #[test]
    fn every_sample_phone_format_normalizes() {
        let r = rules();
        for (raw, e164) in [
            ("13812345678", "+8613812345678"),
            ("+86 138 1234 5678", "+8613812345678"),
            ("86-13812345678", "+8613812345678"),
            ("(138) 1234-5678", "+8613812345678"),
            ("+1 415 555 0100", "+14155550100"),
            ("138-1234-5678", "+8613812345678"),
            (" 138 1234 5678 ", "+8613812345678"),
        ] {
            let lead = LeadInput {
                phone: Some(raw.into()),
                ..Default::default()
            }
            .validate(&r)
            .unwrap_or_else(|e| panic!("{raw}: {e:?}"));
            assert_eq!(lead.phone.as_deref(), Some(e164), "{raw}");
        }
    }

    #[test]
    fn an_import_keeps_a_bad_email_flagged_and_an_api_capture_refuses_it() {
        let input = || LeadInput {
            name: Some("Ann".into()),
            email: Some(" Ann@@Example ".into()),
            ..Default::default()
        };
        let kept = input().validate_with(&rules(), BadEmail::Flag).unwrap();
        assert_eq!(kept.email.as_deref(), Some("ann@@example"));
        assert!(kept.flags.invalid_email);
        assert!(!kept.flags.personal_email);
        let refused = input().validate(&rules()).unwrap_err();
        assert_eq!(refused[0].field, "email");
    }

    #[test]
    fn create_normalizes_and_flags_personal_email() {
        let input = LeadInput {
            name: Some(" 王总 ".into()),
            email: Some(" WANG@QQ.com".into()),
            phone: Some("138 1234 5678".into()),
            company: Some("纷享销客  科技".into()),
            tags: Some(vec!["VIP".into(), "vip".into(), " ".into()]),
            ..Default::default()
        };
        let lead = input.validate(&rules()).unwrap();
        assert_eq!(lead.name.as_deref(), Some("王总"));
        assert_eq!(lead.email.as_deref(), Some("wang@qq.com"));
        assert_eq!(lead.phone.as_deref(), Some("+8613812345678"));
        assert_eq!(lead.company.as_deref(), Some("纷享销客 科技"));
        assert_eq!(lead.tags, vec!["vip"]);
        assert!(lead.flags.personal_email);
    }

    #[test]
    fn create_reports_every_bad_field() {
        let input = LeadInput {
            email: Some("nope".into()),
            phone: Some("12".into()),
            channel: Some("tv".into()),
            ..Default::default()
        };
        let errs = input.validate(&rules()).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["email", "phone", "channel"]);
    }

    #[test]
    fn empty_lead_is_rejected() {
        assert!(LeadInput::default().validate(&rules()).is_err());
    }

    #[test]
    fn absorb_fills_blanks_and_reports_conflicts() {
        let mut lead = LeadInput {
            email: Some("a@acme.com".into()),
            title: Some("CTO".into()),
            ..Default::default()
        }
        .validate(&rules())
        .unwrap()
        .into_lead(Uuid::nil(), 0);
        let dup = LeadInput {
            email: Some("a@acme.com".into()),
            title: Some("CEO".into()),
            company: Some("Acme".into()),
            ..Default::default()
        }
        .validate(&rules())
        .unwrap();
        let r = lead.absorb(dup);
        assert_eq!(lead.title.as_deref(), Some("CTO"));
        assert_eq!(lead.company.as_deref(), Some("Acme"));
        assert_eq!(r.filled, vec!["company"]);
        assert_eq!(r.conflicts[0].field, "title");
    }

    #[test]
    fn patch_distinguishes_null_from_absent_and_merges_fields() {
        let mut lead = LeadInput {
            name: Some("A".into()),
            email: Some("a@acme.com".into()),
            company: Some("Acme".into()),
            fields: Some(serde_json::from_str(r#"{"x":1,"y":2}"#).unwrap()),
            ..Default::default()
        }
        .validate(&rules())
        .unwrap()
        .into_lead(Uuid::nil(), 0);
        let patch: LeadPatch =
            serde_json::from_str(r#"{"company":null,"fields":{"x":null,"z":3},"stage":"mql"}"#)
                .unwrap();
        let changed = patch.validate(&rules()).unwrap().apply(&mut lead).unwrap();
        assert_eq!(lead.company, None);
        assert_eq!(lead.name.as_deref(), Some("A"));
        assert_eq!(lead.fields_map().get("z"), Some(&Value::from(3)));
        assert!(lead.fields_map().get("x").is_none());
        assert_eq!(lead.stage, Stage::Mql);
        assert_eq!(changed, vec!["company", "stage", "fields"]);
    }

    #[test]
    fn patch_cannot_empty_a_lead() {
        let mut lead = LeadInput {
            email: Some("a@acme.com".into()),
            ..Default::default()
        }
        .validate(&rules())
        .unwrap()
        .into_lead(Uuid::nil(), 0);
        let patch: LeadPatch = serde_json::from_str(r#"{"email":null}"#).unwrap();
        assert!(patch.validate(&rules()).unwrap().apply(&mut lead).is_err());
    }
}
