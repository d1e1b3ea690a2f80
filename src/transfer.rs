//! The file formats of lead import and export: CSV and NDJSON rows ↔ leads.
//!
//! Owns format detection ([`Format`]), how source columns map to lead fields ([`Mapping`],
//! with English and Chinese header aliases), streaming rows out of a file ([`RowReader`], flat
//! memory however large the file) and writing leads out ([`ExportWriter`], [`CSV_COLUMNS`]).
//! A CSV export re-imports into the same lead input. No storage and no validation beyond the
//! shape of each value: [`Row::input`] still goes through `LeadInput::validate`.
//!
//! Per-row problems (a bad cell, a bad JSON line) are [`Row::input`] errors and reading goes on;
//! [`TransferError`] is only for what stops reading (I/O, a CSV without a header row).

use crate::domain::lead::{
    FlagsInput, Lead, LeadInput, LeadView, Stage, Status, TAG_SEPARATORS, Utm,
};
use crate::domain::time::{opt_rfc3339, to_rfc3339};
use crate::domain::{FieldError, Problems};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use uuid::Uuid;

/// A file format for import and export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    /// By file extension: .csv → Csv; .ndjson, .jsonl, .json → Ndjson.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "ndjson" | "jsonl" | "json" => Some(Format::Ndjson),
            _ => None,
        }
    }

    /// "csv" | "ndjson" (also "jsonl"), case-insensitive.
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }

    /// From an HTTP Content-Type (parameters such as `; charset=utf-8` are ignored).
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let essence = ct.split(';').next()?.trim().to_ascii_lowercase();
        match essence.as_str() {
            "text/csv" | "application/csv" => Some(Format::Csv),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonl"
            | "application/jsonlines"
            | "application/x-jsonlines"
            | "application/json-seq" => Some(Format::Ndjson),
            _ => None,
        }
    }
}

/// What stops reading or writing a file. Problems with single rows are not here: they are
/// [`Row::input`] errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error("reading or writing the file failed: {0}")]
    Io(#[from] io::Error),
    /// The CSV file as a whole is unusable: no header row, a header that is not UTF-8.
    #[error("{0}")]
    Csv(String),
    /// A lead could not be encoded as JSON.
    #[error("encoding a lead as JSON failed: {0}")]
    Encode(String),
}

fn from_csv_error(e: csv::Error) -> TransferError {
    let message = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(io) => TransferError::Io(io),
        _ => TransferError::Csv(format!("the CSV file could not be read: {message}")),
    }
}

fn from_json_error(e: serde_json::Error) -> TransferError {
    if e.is_io() {
        TransferError::Io(e.into())
    } else {
        TransferError::Encode(e.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Mapping
// ---------------------------------------------------------------------------------------------

/// Where one source column goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Name,
    Email,
    Phone,
    Company,
    Title,
    Industry,
    CompanySize,
    Region,
    Country,
    Source,
    Channel,
    /// A whole UTM object (NDJSON `utm`, or JSON object text in a CSV cell).
    Utm,
    UtmSource,
    UtmMedium,
    UtmCampaign,
    UtmTerm,
    UtmContent,
    CampaignId,
    Stage,
    Status,
    OwnerId,
    PoolId,
    Tags,
    NextFollowUpAt,
    /// The `/t.js` visitor id, so the person's anonymous page views move onto the lead.
    VisitorId,
    /// The exporter's lead id: a row without email or phone is known again by it. A value that
    /// is not a UUID (another system's row number) is ignored.
    Id,
    /// A flags object (NDJSON `flags`): only `do_not_contact` is an input.
    Flags,
    DoNotContact,
    /// A JSON object of custom fields (the exporter's `fields` column).
    Fields,
    /// One custom field, by key.
    Custom(String),
    /// Free text for a note, kept out of custom fields.
    Note,
    Ignore,
}

impl Target {
    /// The name shown in `--dry-run` reports; the same path field errors use.
    fn label(&self) -> String {
        let s = match self {
            Target::Name => "name",
            Target::Email => "email",
            Target::Phone => "phone",
            Target::Company => "company",
            Target::Title => "title",
            Target::Industry => "industry",
            Target::CompanySize => "company_size",
            Target::Region => "region",
            Target::Country => "country",
            Target::Source => "source",
            Target::Channel => "channel",
            Target::Utm => "utm",
            Target::UtmSource => "utm.source",
            Target::UtmMedium => "utm.medium",
            Target::UtmCampaign => "utm.campaign",
            Target::UtmTerm => "utm.term",
            Target::UtmContent => "utm.content",
            Target::CampaignId => "campaign_id",
            Target::Stage => "stage",
            Target::Status => "status",
            Target::OwnerId => "owner_id",
            Target::PoolId => "pool_id",
            Target::Tags => "tags",
            Target::NextFollowUpAt => "next_follow_up_at",
            Target::VisitorId => "visitor_id",
            Target::Id => "id",
            Target::Flags => "flags",
            Target::DoNotContact => "flags.do_not_contact",
            Target::Fields => "fields",
            Target::Custom(key) => return format!("fields.{key}"),
            Target::Note => "note",
            Target::Ignore => "ignored",
        };
        s.to_owned()
    }

    /// A lead field by its own name (normalized as by [`normalize`]).
    fn by_field_name(key: &str) -> Option<Target> {
        Some(match key {
            "name" => Target::Name,
            "email" => Target::Email,
            "phone" => Target::Phone,
            "company" => Target::Company,
            "title" => Target::Title,
            "industry" => Target::Industry,
            "company_size" => Target::CompanySize,
            "region" => Target::Region,
            "country" => Target::Country,
            "source" => Target::Source,
            "channel" => Target::Channel,
            "utm" => Target::Utm,
            "utm_source" => Target::UtmSource,
            "utm_medium" => Target::UtmMedium,
            "utm_campaign" => Target::UtmCampaign,
            "utm_term" => Target::UtmTerm,
            "utm_content" => Target::UtmContent,
            "campaign_id" => Target::CampaignId,
            "stage" => Target::Stage,
            "status" => Target::Status,
            "owner_id" => Target::OwnerId,
            "pool_id" => Target::PoolId,
            "tags" => Target::Tags,
            "next_follow_up_at" => Target::NextFollowUpAt,
            "visitor_id" => Target::VisitorId,
            "id" => Target::Id,
            "flags" => Target::Flags,
            "do_not_contact" | "flags_do_not_contact" => Target::DoNotContact,
            "fields" => Target::Fields,
            _ => return None,
        })
    }

    /// The default for a source column with no `--map` override.
    fn for_column(column: &str) -> Target {
        let trimmed = column.trim();
        if trimmed.is_empty() {
            return Target::Ignore;
        }
        if let Some(key) = custom_key(trimmed) {
            return Target::Custom(key.to_owned());
        }
        let key = normalize(trimmed);
        if let Some(t) = Target::by_field_name(&key) {
            return t;
        }
        match key.as_str() {
            // Written by the exporter, derived or assigned by the server: never inputs.
            "created_at" | "updated_at" | "version" | "score" | "personal_email"
            | "invalid_email" | "first_touch_at" | "last_activity_at" => Target::Ignore,
            "full_name" | "contact" | "contact_name" | "姓名" | "名字" | "联系人" => {
                Target::Name
            }
            "e_mail" | "email_address" | "mail" | "邮箱" | "电子邮件" | "邮件" => {
                Target::Email
            }
            "mobile" | "tel" | "telephone" | "phone_number" | "cell" | "手机" | "手机号"
            | "电话" | "联系电话" => Target::Phone,
            "company_name" | "organization" | "organisation" | "org" | "account" | "公司"
            | "公司名称" | "单位" => Target::Company,
            "job_title" | "position" | "role" | "职位" | "职务" | "头衔" => Target::Title,
            "行业" => Target::Industry,
            "employees" | "size" | "公司规模" | "人数" => Target::CompanySize,
            "province" | "state" | "地区" | "省份" | "区域" => Target::Region,
            "国家" => Target::Country,
            "来源" | "lead_source" => Target::Source,
            "渠道" => Target::Channel,
            "标签" | "labels" => Target::Tags,
            "notes" | "note" | "comment" | "comments" | "remark" | "remarks" | "备注" | "留言" => {
                Target::Note
            }
            _ => Target::Custom(trimmed.to_owned()),
        }
    }

    /// The target named on the right of `--map column=field`.
    fn parse_map_target(field: &str) -> Option<Target> {
        let field = field.trim();
        if let Some(key) = custom_key(field) {
            return Some(Target::Custom(key.to_owned()));
        }
        let key = normalize(field);
        match key.as_str() {
            "-" | "ignore" | "ignored" => Some(Target::Ignore),
            "note" | "notes" => Some(Target::Note),
            _ => Target::by_field_name(&key),
        }
    }
}

/// `fields.<key>` (case-insensitive prefix) → `<key>`, trimmed and non-empty.
fn custom_key(s: &str) -> Option<&str> {
    let prefix = s.get(..7)?;
    if !prefix.eq_ignore_ascii_case("fields.") {
        return None;
    }
    let key = s[7..].trim();
    (!key.is_empty()).then_some(key)
}

/// Trimmed, lowercased, with runs of whitespace, `-`, `.` and `_` turned into one `_`.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars().flat_map(char::to_lowercase) {
        let c = if c.is_whitespace() || c == '-' || c == '.' {
            '_'
        } else {
            c
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    // A lone "-" is the ignore marker in `--map`; keep it recognizable.
    if out == "_" && s.trim() == "-" {
        return "-".to_owned();
    }
    out
}

const MAP_FIELDS: &str = "name, email, phone, company, title, industry, company_size, region, \
     country, source, channel, utm_source, utm_medium, utm_campaign, utm_term, utm_content, \
     campaign_id, stage, status, owner_id, pool_id, tags, next_follow_up_at, do_not_contact, \
     visitor_id, note, fields (a JSON object), fields.<key> for a custom field, and - or \
     ignore to drop the column";

/// How source columns (CSV headers or NDJSON keys) map to lead fields: explicit overrides on
/// top of the default matching by name and alias.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// (column trimmed and lowercased, target).
    overrides: Vec<(String, Target)>,
}

impl Mapping {
    /// From `--map column=field` pairs. `field` is a lead field name, `fields.<key>` for a
    /// custom field, `note`, or `-` / `ignore` to drop the column. The column is compared with
    /// source columns case-insensitively after trimming; a column may contain `=` (the pair is
    /// split at the last one).
    pub fn from_pairs(pairs: &[String]) -> Result<Mapping, String> {
        let mut overrides: Vec<(String, Target)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let Some((column, field)) = pair.rsplit_once('=') else {
                return Err(format!("--map {pair}: expected column=field"));
            };
            let column = column.trim().to_lowercase();
            if column.is_empty() {
                return Err(format!("--map {pair}: the column name is empty"));
            }
            let Some(target) = Target::parse_map_target(field) else {
                return Err(format!(
                    "--map {pair}: unknown field `{}`; valid fields are {MAP_FIELDS}",
                    field.trim()
                ));
            };
            if overrides.iter().any(|(c, _)| *c == column) {
                return Err(format!("--map {pair}: that column is already mapped"));
            }
            overrides.push((column, target));
        }
        Ok(Mapping { overrides })
    }

    /// The first mapped column that none of `headers` is.
    fn unmatched(&self, headers: &[String]) -> Option<&str> {
        self.overrides
            .iter()
            .map(|(c, _)| c.as_str())
            .find(|c| !headers.iter().any(|h| h.trim().to_lowercase() == *c))
    }

    fn target(&self, column: &str) -> Target {
        let wanted = column.trim().to_lowercase();
        self.overrides
            .iter()
            .find(|(c, _)| *c == wanted)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| Target::for_column(column))
    }
}

// ---------------------------------------------------------------------------------------------
// Rows → lead input
// ---------------------------------------------------------------------------------------------

/// One source row after mapping.
#[derive(Debug, Clone)]
pub struct Row {
    /// 1-based physical line where the record starts in the file (the CSV header is line 1;
    /// multi-line quoted cells count all their lines).
    pub line: u64,
    /// The row as submitted: column → value. CSV: every cell as a JSON string (cells beyond
    /// the header, and repeated header names, are keyed `_col<N>`, 1-based). NDJSON: the
    /// object as parsed, or `{"_line": "<raw text>"}` when the line is not a JSON object.
    pub raw: Map<String, Value>,
    /// Free text for a note (notes/note/comment/remarks/备注/留言 columns, joined by newlines).
    pub note: Option<String>,
    /// The lead id the row carries when it is an export of this server's lead.
    pub id: Option<Uuid>,
    /// The lead input, or every mapping problem of this row. Errors name the lead field
    /// (`company_size`, `utm.source`, `flags.do_not_contact`), never the source column; problems
    /// with the row as a whole (wrong number of cells, bad JSON, not UTF-8) are on `row`.
    pub input: Result<LeadInput, Vec<FieldError>>,
}

const STAGE_VALUES: &str = "lead, mql, sql, opportunity, customer, disqualified";
const STATUS_VALUES: &str = "new, attempting, connected, nurturing, unqualified, converted";

/// Builds one [`LeadInput`] from (target, value) pairs. Where two columns feed the same
/// field, the first non-empty value wins (tags from all columns are kept, notes are joined).
#[derive(Default)]
struct Builder {
    input: LeadInput,
    utm: Utm,
    tags: Vec<String>,
    fields: Map<String, Value>,
    do_not_contact: Option<bool>,
    note: Option<String>,
    id: Option<Uuid>,
    problems: Problems,
}

fn set_first<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// Text from a cell: trimmed, empty or null is absent; numbers are written out.
fn text(p: &mut Problems, field: &str, v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(_) | Value::Array(_) | Value::Object(_) => {
            p.push(field, "must be text");
            None
        }
    }
}

fn uuid(p: &mut Problems, field: &str, v: &Value) -> Option<Uuid> {
    let s = text(p, field, v)?;
    match Uuid::parse_str(&s) {
        Ok(id) => Some(id),
        Err(_) => {
            p.push(field, "must be a UUID");
            None
        }
    }
}

fn boolean(p: &mut Problems, field: &str, v: &Value) -> Option<bool> {
    let parsed = match v {
        Value::Null => return None,
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_lowercase().as_str() {
            "" => return None,
            "true" | "yes" | "1" | "是" => Some(true),
            "false" | "no" | "0" | "否" => Some(false),
            _ => None,
        },
        Value::Array(_) | Value::Object(_) => None,
    };
    if parsed.is_none() {
        p.push(field, "must be true or false (also yes/no, 1/0, 是/否)");
    }
    parsed
}

/// A JSON object, given as one or as JSON object text in a cell.
fn object(p: &mut Problems, field: &str, v: &Value) -> Option<Map<String, Value>> {
    match v {
        Value::Null => None,
        Value::Object(m) => Some(m.clone()),
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => match serde_json::from_str(s) {
            Ok(Value::Object(m)) => Some(m),
            _ => {
                p.push(field, "must be a JSON object");
                None
            }
        },
        _ => {
            p.push(field, "must be a JSON object");
            None
        }
    }
}

/// `120`, `1,200` (thousands separators) or `50-200` (a range: the lower bound).
fn parse_company_size(s: &str) -> Option<u32> {
    fn count(s: &str) -> Option<u32> {
        let s = s.trim();
        let digits = |g: &str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit());
        if digits(s) {
            return s.parse().ok();
        }
        let mut groups = s.split(',');
        let first = groups.next()?;
        if !digits(first) || first.len() > 3 {
            return None;
        }
        let mut all = first.to_owned();
        for g in groups {
            if g.len() != 3 || !digits(g) {
                return None;
            }
            all.push_str(g);
        }
        all.parse().ok()
    }
    if let Some(n) = count(s) {
        return Some(n);
    }
    let (low, high) = s.split_once(['-', '~', '～', '–', '—'])?;
    let (low, high) = (count(low)?, count(high)?);
    (low <= high).then_some(low)
}

fn company_size(p: &mut Problems, v: &Value) -> Option<u32> {
    let parsed = match v {
        Value::Null => return None,
        Value::String(s) if s.trim().is_empty() => return None,
        Value::String(s) => parse_company_size(s),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    };
    if parsed.is_none() {
        p.push(
            "company_size",
            "must be a whole number of employees, such as 120, 1,200 or 50-200",
        );
    }
    parsed
}

impl Builder {
    fn apply(&mut self, target: &Target, v: &Value) {
        let p = &mut self.problems;
        let i = &mut self.input;
        match target {
            Target::Name => set_first(&mut i.name, text(p, "name", v)),
            Target::Email => set_first(&mut i.email, text(p, "email", v)),
            Target::Phone => set_first(&mut i.phone, text(p, "phone", v)),
            Target::Company => set_first(&mut i.company, text(p, "company", v)),
            Target::Title => set_first(&mut i.title, text(p, "title", v)),
            Target::Industry => set_first(&mut i.industry, text(p, "industry", v)),
            Target::CompanySize => set_first(&mut i.company_size, company_size(p, v)),
            Target::Region => set_first(&mut i.region, text(p, "region", v)),
            Target::Country => set_first(&mut i.country, text(p, "country", v)),
            Target::Source => set_first(&mut i.source, text(p, "source", v)),
            Target::Channel => set_first(&mut i.channel, text(p, "channel", v)),
            Target::UtmSource => set_first(&mut self.utm.source, text(p, "utm.source", v)),
            Target::UtmMedium => set_first(&mut self.utm.medium, text(p, "utm.medium", v)),
            Target::UtmCampaign => {
                set_first(&mut self.utm.campaign, text(p, "utm.campaign", v));
            }
            Target::UtmTerm => set_first(&mut self.utm.term, text(p, "utm.term", v)),
            Target::UtmContent => {
                set_first(&mut self.utm.content, text(p, "utm.content", v));
            }
            Target::Utm => {
                for (key, value) in object(p, "utm", v).unwrap_or_default() {
                    let slot = match key.as_str() {
                        "source" => &mut self.utm.source,
                        "medium" => &mut self.utm.medium,
                        "campaign" => &mut self.utm.campaign,
                        "term" => &mut self.utm.term,
                        "content" => &mut self.utm.content,
                        _ => {
                            p.push(
                                format!("utm.{key}"),
                                "is not a UTM parameter (source, medium, campaign, term, content)",
                            );
                            continue;
                        }
                    };
                    set_first(slot, text(p, &format!("utm.{key}"), &value));
                }
            }
            Target::CampaignId => set_first(&mut i.campaign_id, uuid(p, "campaign_id", v)),
            Target::OwnerId => set_first(&mut i.owner_id, uuid(p, "owner_id", v)),
            Target::PoolId => set_first(&mut i.pool_id, uuid(p, "pool_id", v)),
            Target::Stage => {
                if let Some(s) = text(p, "stage", v) {
                    match Stage::parse(&s.to_lowercase()) {
                        Some(stage) => set_first(&mut i.stage, Some(stage)),
                        None => p.push("stage", format!("must be one of {STAGE_VALUES}")),
                    }
                }
            }
            Target::Status => {
                if let Some(s) = text(p, "status", v) {
                    match Status::parse(&s.to_lowercase()) {
                        Some(status) => set_first(&mut i.status, Some(status)),
                        None => p.push("status", format!("must be one of {STATUS_VALUES}")),
                    }
                }
            }
            Target::Tags => match v {
                Value::Null => {}
                Value::String(s) => self.tags.extend(
                    s.split(TAG_SEPARATORS)
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                ),
                Value::Array(items) => {
                    for item in items {
                        match item {
                            Value::String(s) if !s.trim().is_empty() => {
                                self.tags.push(s.trim().to_owned());
                            }
                            Value::String(_) | Value::Null => {}
                            Value::Number(n) => self.tags.push(n.to_string()),
                            _ => {
                                p.push("tags", "must be a list of strings");
                                break;
                            }
                        }
                    }
                }
                _ => p.push("tags", "must be a list of strings"),
            },
            Target::NextFollowUpAt => {
                set_first(&mut i.next_follow_up_at, text(p, "next_follow_up_at", v));
            }
            Target::VisitorId => set_first(&mut i.visitor_id, text(p, "visitor_id", v)),
            Target::Id => {
                let id = match v {
                    Value::String(s) => Uuid::parse_str(s.trim()).ok(),
                    _ => None,
                };
                set_first(&mut self.id, id);
            }
            Target::DoNotContact => set_first(
                &mut self.do_not_contact,
                boolean(p, "flags.do_not_contact", v),
            ),
            Target::Flags => {
                let flags = object(p, "flags", v).unwrap_or_default();
                // The exporter's other flags (personal_email, invalid_email) are derived.
                if let Some(dnc) = flags.get("do_not_contact") {
                    set_first(
                        &mut self.do_not_contact,
                        boolean(p, "flags.do_not_contact", dnc),
                    );
                }
            }
            Target::Fields => {
                for (key, value) in object(p, "fields", v).unwrap_or_default() {
                    if !value.is_null() {
                        self.fields.entry(key).or_insert(value);
                    }
                }
            }
            Target::Custom(key) => {
                let value = match v {
                    Value::Null => return,
                    Value::String(s) if s.trim().is_empty() => return,
                    Value::String(s) => Value::String(s.trim().to_owned()),
                    other => other.clone(),
                };
                self.fields.entry(key.clone()).or_insert(value);
            }
            Target::Note => {
                if let Some(t) = text(p, "note", v) {
                    match &mut self.note {
                        Some(note) => {
                            note.push('\n');
                            note.push_str(&t);
                        }
                        None => self.note = Some(t),
                    }
                }
            }
            Target::Ignore => {}
        }
    }

    fn finish(self, line: u64, raw: Map<String, Value>) -> Row {
        let mut input = self.input;
        if self.utm != Utm::default() {
            input.utm = Some(self.utm);
        }
        if !self.tags.is_empty() {
            input.tags = Some(self.tags);
        }
        if !self.fields.is_empty() {
            input.fields = Some(self.fields);
        }
        if let Some(dnc) = self.do_not_contact {
            input.flags = Some(FlagsInput {
                do_not_contact: Some(dnc),
            });
        }
        let mut problems = self.problems;
        if let Some(note) = &self.note
            && note.chars().count() > crate::domain::activity::MAX_TEXT
        {
            let max = crate::domain::activity::MAX_TEXT;
            problems.push("note", format!("must be at most {max} characters"));
        }
        Row {
            line,
            raw,
            note: self.note,
            id: self.id,
            input: problems.finish(input),
        }
    }
}

fn row_error(line: u64, raw: Map<String, Value>, message: impl Into<String>) -> Row {
    Row {
        line,
        raw,
        note: None,
        id: None,
        input: Err(vec![FieldError::new("row", message)]),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// The input as the parsers want it: a leading UTF-8 BOM removed, and a final `\n` added when
/// the file does not end with one (so every CSV record ends with a line break, which keeps
/// line numbers exact).
struct Prepared<R> {
    inner: R,
    head: [u8; 3],
    head_pos: usize,
    head_len: usize,
    started: bool,
    last: Option<u8>,
    eof: bool,
    /// Bytes handed to the parser so far.
    emitted: u64,
    /// Where the bytes handed out leave CSV quoting, so a quote still open at the end of the
    /// input is known (the record it opens then swallows the final line break).
    quoting: Quoting,
}

/// CSV quoting as the `csv` reader applies it (`,` between cells, `\n` ending records, `""` a
/// quote inside a quoted cell, a quote in the middle of a bare cell taken literally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    CellStart,
    Bare,
    Quoted,
    QuoteInQuoted,
}

impl Quoting {
    fn after(self, b: u8) -> Quoting {
        match (self, b) {
            (Quoting::CellStart, b'"') => Quoting::Quoted,
            (Quoting::Quoted, b'"') => Quoting::QuoteInQuoted,
            (Quoting::Quoted, _) => Quoting::Quoted,
            (Quoting::QuoteInQuoted, b'"') => Quoting::Quoted,
            (_, b',' | b'\n') => Quoting::CellStart,
            _ => Quoting::Bare,
        }
    }
}

impl<R> Prepared<R> {
    fn new(inner: R) -> Self {
        Prepared {
            inner,
            head: [0; 3],
            head_pos: 0,
            head_len: 0,
            started: false,
            last: None,
            eof: false,
            emitted: 0,
            quoting: Quoting::CellStart,
        }
    }

    fn hand_out(&mut self, bytes: &[u8]) -> usize {
        self.last = bytes.last().copied().or(self.last);
        self.emitted += bytes.len() as u64;
        self.quoting = bytes.iter().fold(self.quoting, |q, &b| q.after(b));
        bytes.len()
    }

    /// Whether the whole input has been handed out and ended inside a quoted cell.
    fn ended_in_open_quote(&self) -> bool {
        self.eof && self.quoting == Quoting::Quoted
    }
}

/// Whether the record just read is the last one and a quote in it was never closed: it ran to
/// the end of the input, its final line break included.
fn ran_open_to_the_end<R: Read>(reader: &csv::Reader<Prepared<R>>) -> bool {
    let source = reader.get_ref();
    source.ended_in_open_quote() && reader.position().byte() == source.emitted
}

impl<R: Read> Read for Prepared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.started {
            let mut n = 0;
            while n < self.head.len() {
                match self.inner.read(&mut self.head[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.started = true;
            self.head_len = n;
            self.head_pos = if self.head[..n] == BOM[..] { n } else { 0 };
        }
        if self.head_pos < self.head_len {
            let k = buf.len().min(self.head_len - self.head_pos);
            buf[..k].copy_from_slice(&self.head[self.head_pos..self.head_pos + k]);
            self.head_pos += k;
            return Ok(self.hand_out(&buf[..k]));
        }
        if self.eof {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.eof = true;
            if self.last.is_some_and(|b| b != b'\n') {
                buf[0] = b'\n';
                return Ok(self.hand_out(&buf[..1]));
            }
            return Ok(0);
        }
        Ok(self.hand_out(&buf[..n]))
    }
}

/// NDJSON lines and CSV records longer than this are row errors (the rest of an NDJSON line
/// is skipped unread into memory), so one runaway row cannot exhaust memory or the store.
const MAX_LINE_BYTES: usize = 1 << 20;
/// How many distinct NDJSON keys `columns()` remembers.
const MAX_SEEN_COLUMNS: usize = 4096;

struct CsvSource<R> {
    reader: csv::Reader<Prepared<R>>,
    /// Header cells as written (BOM and a trailing `\r` removed).
    headers: Vec<String>,
    /// The `raw` key of each column: the header, or `_col<N>` for a repeated header.
    keys: Vec<String>,
    targets: Vec<Target>,
    record: csv::ByteRecord,
}

struct NdjsonSource<R> {
    reader: BufReader<Prepared<R>>,
    line: u64,
    buf: Vec<u8>,
    seen: HashMap<String, Target>,
    order: Vec<String>,
}

enum Source<R> {
    Csv(Box<CsvSource<R>>),
    Ndjson(NdjsonSource<R>),
}

/// Streams [`Row`]s from a CSV or NDJSON file, one record in memory at a time.
pub struct RowReader<R: Read> {
    source: Source<R>,
    mapping: Mapping,
    done: bool,
}

impl<R: Read> RowReader<R> {
    /// Starts reading. For CSV this reads the header row (a UTF-8 BOM is skipped); a file
    /// without one is an error.
    pub fn new(reader: R, format: Format, mapping: Mapping) -> Result<Self, TransferError> {
        let source = match format {
            Format::Csv => Source::Csv(Box::new(CsvSource::new(reader, &mapping)?)),
            Format::Ndjson => Source::Ndjson(NdjsonSource {
                reader: BufReader::new(Prepared::new(reader)),
                line: 0,
                buf: Vec::new(),
                seen: HashMap::new(),
                order: Vec::new(),
            }),
        };
        Ok(RowReader {
            source,
            mapping,
            done: false,
        })
    }

    /// The target chosen for each source column, for `--dry-run` reports: (column, target or
    /// "ignored"). For NDJSON, the keys seen so far, in order of first appearance.
    pub fn columns(&self) -> Vec<(String, String)> {
        match &self.source {
            Source::Csv(csv) => csv
                .headers
                .iter()
                .zip(&csv.targets)
                .map(|(h, t)| (h.trim().to_owned(), t.label()))
                .collect(),
            Source::Ndjson(nd) => nd
                .order
                .iter()
                .map(|k| {
                    let label = nd.seen.get(k).map_or_else(String::new, Target::label);
                    (k.clone(), label)
                })
                .collect(),
        }
    }
}

impl<R: Read> Iterator for RowReader<R> {
    type Item = Result<Row, TransferError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = match &mut self.source {
            Source::Csv(csv) => csv.next_row(),
            Source::Ndjson(nd) => nd.next_row(&self.mapping),
        };
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next
    }
}

fn strip_cr(mut s: String) -> String {
    if s.ends_with('\r') {
        s.pop();
    }
    s
}

impl<R: Read> CsvSource<R> {
    fn new(reader: R, mapping: &Mapping) -> Result<Self, TransferError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            // Only `\n` ends a record, so the reader consumes each record's own line break
            // and line numbers stay exact; a `\r` before it is removed from the last cell.
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(Prepared::new(reader));
        let mut record = csv::ByteRecord::new();
        if !reader
            .read_byte_record(&mut record)
            .map_err(from_csv_error)?
        {
            return Err(TransferError::Csv(
                "the CSV file is empty; it needs a header row".into(),
            ));
        }
        let mut headers = Vec::with_capacity(record.len());
        for cell in record.iter() {
            let Ok(h) = std::str::from_utf8(cell) else {
                return Err(TransferError::Csv(
                    "the CSV header row is not UTF-8 text; save the file as \"CSV UTF-8\"".into(),
                ));
            };
            headers.push(h.to_owned());
        }
        if let Some(last) = headers.pop() {
            headers.push(strip_cr(last));
        }
        if headers.iter().all(|h| h.trim().is_empty()) {
            return Err(TransferError::Csv(
                "the first line of the CSV file must be a header row naming the columns".into(),
            ));
        }
        if ran_open_to_the_end(&reader) {
            return Err(TransferError::Csv(
                "a quote opened in the header row is never closed, so the whole file was read \
                 as the header; close the quote and import again"
                    .into(),
            ));
        }
        let mut keys: Vec<String> = Vec::with_capacity(headers.len());
        for (i, h) in headers.iter().enumerate() {
            if keys.contains(h) {
                keys.push(format!("_col{}", i + 1));
            } else {
                keys.push(h.clone());
            }
        }
        // A `--map` (or `?map=`) column the file does not have is a typo, and its data would
        // otherwise land somewhere nobody asked for.
        if let Some(column) = mapping.unmatched(&headers) {
            return Err(TransferError::Csv(format!(
                "map: the file has no column `{column}`; its columns are {}",
                headers
                    .iter()
                    .map(|h| format!("`{}`", h.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let targets = headers.iter().map(|h| mapping.target(h)).collect();
        Ok(CsvSource {
            reader,
            headers,
            keys,
            targets,
            record,
        })
    }

    fn next_row(&mut self) -> Option<Result<Row, TransferError>> {
        loop {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(from_csv_error(e))),
            }
            // Every record ends with `\n` (see `Prepared`), so the reader now stands on the
            // line after the record; count back over line breaks inside quoted cells.
            let after = self.reader.position().line();
            let inside = self
                .record
                .as_slice()
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            // A quote left open runs to the end of the input and takes the last line break in
            // with it, so no line break after the record ended it.
            let open_to_the_end = ran_open_to_the_end(&self.reader);
            let line = after
                .saturating_sub(u64::from(!open_to_the_end) + inside)
                .max(1);
            if self.record.as_slice().len() > MAX_LINE_BYTES {
                // Kept whole, it would be stored twice (note and raw row) and echoed back.
                return Some(Ok(row_error(
                    line,
                    Map::new(),
                    format!("is longer than {} MiB", MAX_LINE_BYTES >> 20),
                )));
            }

            let mut utf8 = true;
            let mut cells: Vec<String> = self
                .record
                .iter()
                .map(|c| match std::str::from_utf8(c) {
                    Ok(s) => s.to_owned(),
                    Err(_) => {
                        utf8 = false;
                        String::from_utf8_lossy(c).into_owned()
                    }
                })
                .collect();
            if let Some(last) = cells.pop() {
                cells.push(strip_cr(last));
            }
            if cells.iter().all(|c| c.trim().is_empty()) {
                continue; // a blank line, or a row of empty cells
            }
            let mut row = self.row(line, cells, utf8);
            if open_to_the_end {
                // Every line after it was read into this row's last cell: say so, rather
                // than import those rows as one lead's text.
                row.input = Err(vec![FieldError::new(
                    "row",
                    "a quote opened on this line is never closed, so the rest of the file \
                     was read as part of this row; close the quote and import again",
                )]);
            }
            return Some(Ok(row));
        }
    }

    fn row(&self, line: u64, cells: Vec<String>, utf8: bool) -> Row {
        let count = cells.len();
        let values: Vec<Value> = cells.into_iter().map(Value::String).collect();
        let key = |i: usize| {
            self.keys
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("_col{}", i + 1))
        };
        if count != self.headers.len() {
            let raw = values.into_iter().enumerate().map(|(i, v)| (key(i), v));
            return row_error(
                line,
                raw.collect(),
                format!(
                    "has {count} cells but the header has {} columns",
                    self.headers.len()
                ),
            );
        }
        if !utf8 {
            let raw = values.into_iter().enumerate().map(|(i, v)| (key(i), v));
            return row_error(
                line,
                raw.collect(),
                "is not UTF-8 text; save the file as \"CSV UTF-8\"",
            );
        }
        let mut b = Builder::default();
        for (target, value) in self.targets.iter().zip(&values) {
            b.apply(target, value);
        }
        let raw = values.into_iter().enumerate().map(|(i, v)| (key(i), v));
        b.finish(line, raw.collect())
    }
}

/// Reads one line (without its `\n`) into `buf`, keeping at most `max` bytes. `None` at the
/// end of input; otherwise whether the line was longer than `max`.
fn read_capped_line<B: BufRead>(
    r: &mut B,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    let mut any = false;
    let mut over = false;
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(any.then_some(over));
        }
        any = true;
        let (chunk, used, end) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            over = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        r.consume(used);
        if end {
            return Ok(Some(over));
        }
    }
}

fn raw_line(text: &[u8]) -> Map<String, Value> {
    let mut raw = Map::new();
    raw.insert(
        "_line".into(),
        Value::String(String::from_utf8_lossy(text).into_owned()),
    );
    raw
}

impl<R: Read> NdjsonSource<R> {
    fn next_row(&mut self, mapping: &Mapping) -> Option<Result<Row, TransferError>> {
        loop {
            self.buf.clear();
            let over = match read_capped_line(&mut self.reader, &mut self.buf, MAX_LINE_BYTES) {
                Ok(Some(over)) => over,
                Ok(None) => return None,
                Err(e) => return Some(Err(e.into())),
            };
            self.line += 1;
            let line = self.line;
            if over {
                let prefix = &self.buf[..self.buf.len().min(1024)];
                return Some(Ok(row_error(
                    line,
                    raw_line(prefix),
                    format!("is longer than {MAX_LINE_BYTES} bytes"),
                )));
            }
            // Also accept application/json-seq, where each record starts with RS (0x1E).
            let text = self.buf.trim_ascii();
            let text = text.strip_prefix(b"\x1e").unwrap_or(text).trim_ascii();
            if text.is_empty() {
                continue;
            }
            let object = match serde_json::from_slice::<Value>(text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Some(Ok(row_error(line, raw_line(text), "must be a JSON object")));
                }
                Err(e) => {
                    return Some(Ok(row_error(
                        line,
                        raw_line(text),
                        format!("is not valid JSON: {e}"),
                    )));
                }
            };
            let mut b = Builder::default();
            for (key, value) in &object {
                let target = self.target(mapping, key);
                b.apply(&target, value);
            }
            return Some(Ok(b.finish(line, object)));
        }
    }

    fn target(&mut self, mapping: &Mapping, key: &str) -> Target {
        if let Some(t) = self.seen.get(key) {
            return t.clone();
        }
        let t = mapping.target(key);
        if self.seen.len() < MAX_SEEN_COLUMNS {
            self.seen.insert(key.to_owned(), t.clone());
            self.order.push(key.to_owned());
        }
        t
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// The columns of a CSV export, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "name",
    "email",
    "phone",
    "company",
    "title",
    "industry",
    "company_size",
    "region",
    "country",
    "source",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "campaign_id",
    "stage",
    "status",
    "owner_id",
    "pool_id",
    "score",
    "tags",
    "personal_email",
    "invalid_email",
    "do_not_contact",
    "first_touch_at",
    "last_activity_at",
    "next_follow_up_at",
    "fields",
];

/// One CSV export row, in the order of [`CSV_COLUMNS`].
fn csv_row(l: &Lead) -> Vec<String> {
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    let id = |u: Option<Uuid>| u.map(|u| u.to_string()).unwrap_or_default();
    let fields = l.fields_map();
    vec![
        l.id.to_string(),
        to_rfc3339(l.created_at),
        to_rfc3339(l.updated_at),
        opt(&l.name),
        opt(&l.email),
        opt(&l.phone),
        opt(&l.company),
        opt(&l.title),
        opt(&l.industry),
        l.company_size.map(|n| n.to_string()).unwrap_or_default(),
        opt(&l.region),
        opt(&l.country),
        opt(&l.source),
        opt(&l.channel),
        opt(&l.utm.source),
        opt(&l.utm.medium),
        opt(&l.utm.campaign),
        opt(&l.utm.term),
        opt(&l.utm.content),
        id(l.campaign_id),
        l.stage.as_str().to_owned(),
        l.status.as_str().to_owned(),
        id(l.owner_id),
        id(l.pool_id),
        l.score.total.to_string(),
        l.tags.join(";"),
        l.flags.personal_email.to_string(),
        l.flags.invalid_email.to_string(),
        l.flags.do_not_contact.to_string(),
        opt_rfc3339(l.first_touch_at).unwrap_or_default(),
        opt_rfc3339(l.last_activity_at).unwrap_or_default(),
        opt_rfc3339(l.next_follow_up_at).unwrap_or_default(),
        if fields.is_empty() {
            String::new()
        } else {
            Value::Object(fields).to_string()
        },
    ]
}

enum Sink<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Ndjson(BufWriter<W>),
}

/// Writes leads as CSV ([`CSV_COLUMNS`]) or NDJSON (one `LeadView` object a line).
pub struct ExportWriter<W: Write> {
    sink: Sink<W>,
}

impl<W: Write> ExportWriter<W> {
    /// Starts an export; CSV writes its header row at once.
    pub fn new(writer: W, format: Format) -> Result<Self, TransferError> {
        let sink = match format {
            Format::Csv => {
                let mut w = csv::Writer::from_writer(writer);
                w.write_record(CSV_COLUMNS).map_err(from_csv_error)?;
                Sink::Csv(Box::new(w))
            }
            Format::Ndjson => Sink::Ndjson(BufWriter::new(writer)),
        };
        Ok(ExportWriter { sink })
    }

    pub fn write(&mut self, lead: &Lead) -> Result<(), TransferError> {
        match &mut self.sink {
            Sink::Csv(w) => w.write_record(csv_row(lead)).map_err(from_csv_error),
            Sink::Ndjson(w) => {
                serde_json::to_writer(&mut *w, &LeadView::from(lead)).map_err(from_json_error)?;
                w.write_all(b"\n")?;
                Ok(())
            }
        }
    }

    /// Flushes and returns the writer.
    pub fn finish(self) -> Result<W, TransferError> {
        match self.sink {
            Sink::Csv(w) => w.into_inner().map_err(|e| e.into_error().into()),
            Sink::Ndjson(w) => w.into_inner().map_err(|e| e.into_error().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lead::NormalizeRules;
    use crate::domain::phone::parse_region;

    fn read(format: Format, text: &str, map: &[&str]) -> Vec<Row> {
        let pairs: Vec<String> = map.iter().map(|s| s.to_string()).collect();
        let mapping = Mapping::from_pairs(&pairs).unwrap();
        RowReader::new(text.as_bytes(), format, mapping)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn csv(text: &str) -> Vec<Row> {
        read(Format::Csv, text, &[])
    }

    fn ok(row: &Row) -> &LeadInput {
        row.input.as_ref().unwrap()
    }

    fn err_fields(row: &Row) -> Vec<&str> {
        row.input
            .as_ref()
            .unwrap_err()
            .iter()
            .map(|e| e.field.as_str())
            .collect()
    }

    #[test]
    fn csv_with_bom_and_chinese_headers_and_values() {
        let rows = csv("\u{feff}姓名,手机号,公司名称,职位,邮箱,省份,行业,人数\n\
             王总,138 1234 5678,纷享销客,CTO,wang@fxiaoke.com,北京,软件,\"1,200\"\n");
        assert_eq!(rows.len(), 1);
        let i = ok(&rows[0]);
        assert_eq!(i.name.as_deref(), Some("王总"));
        assert_eq!(i.phone.as_deref(), Some("138 1234 5678"));
        assert_eq!(i.company.as_deref(), Some("纷享销客"));
        assert_eq!(i.title.as_deref(), Some("CTO"));
        assert_eq!(i.email.as_deref(), Some("wang@fxiaoke.com"));
        assert_eq!(i.region.as_deref(), Some("北京"));
        assert_eq!(i.industry.as_deref(), Some("软件"));
        assert_eq!(i.company_size, Some(1200));
        assert!(i.fields.is_none());
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].raw["姓名"], Value::from("王总"));
    }

    #[test]
    fn quoted_multi_line_cells_keep_later_line_numbers_right() {
        let text = "name,备注\n\
                    A,\"first line\nsecond line\nthird\"\n\
                    B,plain\n\
                    \n\
                    C,\"x\"\n";
        let rows = csv(text);
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 5, 7]);
        assert_eq!(
            rows[0].note.as_deref(),
            Some("first line\nsecond line\nthird")
        );
        assert!(ok(&rows[0]).fields.is_none());
    }

    #[test]
    fn crlf_files_and_a_missing_final_newline_keep_line_numbers_right() {
        let rows = csv("name,email\r\nA,\"a@x.com\"\r\n\r\nB,\"multi\r\nline\"\r\nC,c@x.com");
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 4, 6]);
        assert_eq!(ok(&rows[0]).email.as_deref(), Some("a@x.com"));
        assert_eq!(rows[0].raw["email"], Value::from("a@x.com"));
        assert_eq!(ok(&rows[2]).email.as_deref(), Some("c@x.com"));
    }

    #[test]
    fn header_aliases_map_to_lead_fields() {
        let rows = csv(
            "Full Name, E-mail ,Mobile,Organization,Job Title,Employees,State,Lead Source,\
             UTM.Source,utm-medium,Labels,Do Not Contact,Notes,ID,Score,Visitor ID\n\
             Ann,ann@acme.com,555,Acme,CEO,50-200,CA,Web,google,cpc,a|b,yes,call her,x,9,v-1\n",
        );
        let i = ok(&rows[0]);
        assert_eq!(i.name.as_deref(), Some("Ann"));
        assert_eq!(i.email.as_deref(), Some("ann@acme.com"));
        assert_eq!(i.phone.as_deref(), Some("555"));
        assert_eq!(i.company.as_deref(), Some("Acme"));
        assert_eq!(i.title.as_deref(), Some("CEO"));
        assert_eq!(i.company_size, Some(50));
        assert_eq!(i.region.as_deref(), Some("CA"));
        assert_eq!(i.source.as_deref(), Some("Web"));
        let utm = i.utm.as_ref().unwrap();
        assert_eq!(utm.source.as_deref(), Some("google"));
        assert_eq!(utm.medium.as_deref(), Some("cpc"));
        assert_eq!(i.tags, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(i.flags.as_ref().unwrap().do_not_contact, Some(true));
        assert_eq!(rows[0].note.as_deref(), Some("call her"));
        assert_eq!(i.visitor_id.as_deref(), Some("v-1"));
        assert!(i.fields.is_none(), "id and score are ignored");
    }

    #[test]
    fn columns_report_the_chosen_targets() {
        let mapping = Mapping::from_pairs(&["Owner=-".into()]).unwrap();
        let r = RowReader::new(
            "邮箱,Budget,owner,fields.Plan,\n".as_bytes(),
            Format::Csv,
            mapping,
        )
        .unwrap();
        let cols = r.columns();
        assert_eq!(
            cols,
            vec![
                ("邮箱".to_owned(), "email".to_owned()),
                ("Budget".to_owned(), "fields.Budget".to_owned()),
                ("owner".to_owned(), "ignored".to_owned()),
                ("fields.Plan".to_owned(), "fields.Plan".to_owned()),
                ("".to_owned(), "ignored".to_owned()),
            ]
        );
    }

    #[test]
    fn map_overrides_win_and_ignore_drops_a_column() {
        let rows = read(
            Format::Csv,
            "Contact,Cell,Mobile,跟进记录,Budget,Notes\n\
             A,13800000000,ignored-number,回访过,10k,n\n",
            &[
                " contact = company ",
                "CELL=phone",
                "mobile=ignore",
                "跟进记录=note",
                "budget=fields.预算",
                "notes=-",
            ],
        );
        let i = ok(&rows[0]);
        assert_eq!(i.company.as_deref(), Some("A"));
        assert_eq!(i.name, None);
        assert_eq!(i.phone.as_deref(), Some("13800000000"));
        assert_eq!(rows[0].note.as_deref(), Some("回访过"));
        let fields = i.fields.as_ref().unwrap();
        assert_eq!(fields["预算"], Value::from("10k"));
        assert_eq!(fields.len(), 1);
    }

    #[test]
    fn map_rejects_bad_pairs() {
        let bad = |p: &str| Mapping::from_pairs(&[p.to_owned()]).unwrap_err();
        let e = bad("Budget=budget");
        assert!(
            e.contains("Budget=budget") && e.contains("company_size"),
            "{e}"
        );
        assert!(bad("no-equals").contains("column=field"));
        assert!(bad(" =name").contains("empty"));
        assert!(bad("x=fields.").contains("unknown field"));
        let twice = Mapping::from_pairs(&["A=name".into(), "a=email".into()]);
        assert!(twice.is_err());
        assert!(Mapping::from_pairs(&["a=b=utm.source".into(), "c=do_not_contact".into()]).is_ok());
    }

    #[test]
    fn unknown_columns_become_custom_fields() {
        let rows = csv("name,Budget ,Fields,来源渠道\nA,10k,\"{\"\"plan\"\":\"\"pro\"\"}\",展会\n");
        let fields = ok(&rows[0]).fields.as_ref().unwrap();
        assert_eq!(fields["Budget"], Value::from("10k"));
        assert_eq!(fields["plan"], Value::from("pro"));
        assert_eq!(fields["来源渠道"], Value::from("展会"));
        assert_eq!(fields.len(), 3);
    }

    #[test]
    fn a_quote_left_open_is_reported_on_the_line_it_opens() {
        for text in [
            "name,company\nA,Acme\n\"B,Globex\nC,Initech\n",
            "name,company\nA,Acme\n\"B,Globex\nC,Initech",
            "name,company\r\nA,Acme\r\n\"B,Globex\r\nC,Initech\r\n",
            "\u{feff}name,company\nA,Acme\n\"B,Globex\nC,Initech\n",
            // Quotes that close, or sit inside a bare cell, open nothing.
            "name,company\nA,\"Ac\"\"me\"\n\"B,Globex\nC,Initech",
            "name,company\nA,Ac\"me\n\"B,Globex\nC,Initech",
        ] {
            let rows = csv(text);
            assert_eq!(rows.len(), 2, "{text:?}");
            assert_eq!(rows[0].line, 2);
            assert_eq!(rows[1].line, 3, "{text:?}");
        }
        // After skipped blank lines, too.
        for text in [
            "name,company\nA,Acme\n\n\n\"B,Globex\nC,Initech\n",
            "name,company\nA,Acme\n\n\n\"B,Globex\nC,Initech",
        ] {
            let rows = csv(text);
            assert_eq!(rows.len(), 2, "{text:?}");
            assert_eq!(rows[1].line, 5, "{text:?}");
        }
        // The open row is rejected for it, not imported with the rest of the file as its text.
        let rows = csv("name,email,notes\nA,a@example.com,\"unclosed\nB,b@example.com,x\n");
        assert_eq!(rows.len(), 1);
        let errors = rows[0].input.as_ref().unwrap_err();
        assert!(errors[0].message.contains("never closed"), "{errors:?}");
        // A closed quoted cell that ends the file with a line break inside is no open quote.
        let rows = csv("name,notes\nA,\"two\nlines\n\"\nB,x\n");
        assert_eq!((rows[0].line, rows[1].line), (2, 5));
        assert!(rows.iter().all(|r| r.input.is_ok()));
        let rows = csv("name,notes\nA,x\n\n\"B,\"\"line\n\"\n");
        assert_eq!(rows[1].line, 4);
    }

    #[test]
    fn row_errors_carry_the_right_line_numbers() {
        let text = "name,company_size,stage,status\n\
                    A,lots,lead,new\n\
                    \"B\nB\",10,SQL,nope\n\
                    C,10\n\
                    D,5,mql,new\n";
        let rows = csv(text);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].line, 2);
        assert_eq!(err_fields(&rows[0]), vec!["company_size"]);
        assert_eq!(rows[1].line, 3);
        assert_eq!(err_fields(&rows[1]), vec!["status"]);
        assert_eq!(rows[2].line, 5);
        assert_eq!(err_fields(&rows[2]), vec!["row"]);
        assert_eq!(rows[2].raw["company_size"], Value::from("10"));
        assert_eq!(rows[3].line, 6);
        assert_eq!(ok(&rows[3]).stage, Some(Stage::Mql));
        let bad_stage = csv("name,stage\nA,won\n");
        assert_eq!(err_fields(&bad_stage[0]), vec!["stage"]);
        let too_many = csv("name\nA,B\n");
        assert_eq!(too_many[0].raw["_col2"], Value::from("B"));
    }

    #[test]
    fn bad_values_name_the_lead_field_not_the_column() {
        let rows = csv("人数,负责人,Campaign ID,DNC\n很多,x,not-a-uuid,maybe\n");
        assert_eq!(err_fields(&rows[0]), vec!["company_size", "campaign_id"]);
        let rows = read(
            Format::Csv,
            "owner,dnc\nnope,maybe\n",
            &["owner=owner_id", "dnc=do_not_contact"],
        );
        assert_eq!(
            err_fields(&rows[0]),
            vec!["owner_id", "flags.do_not_contact"]
        );
    }

    #[test]
    fn empty_cells_are_absent() {
        let rows = csv(
            "name,email,phone,tags,company_size,stage,Budget,do_not_contact\n\
                        A,, ,,,,,\n\
                        ,,,,,,,\n",
        );
        assert_eq!(rows.len(), 1, "a row of empty cells is skipped");
        let i = ok(&rows[0]);
        assert_eq!(i.name.as_deref(), Some("A"));
        assert_eq!(i.email, None);
        assert_eq!(i.phone, None);
        assert_eq!(i.tags, None);
        assert_eq!(i.company_size, None);
        assert_eq!(i.stage, None);
        assert!(i.fields.is_none());
        assert!(i.flags.is_none());
        assert!(i.utm.is_none());
    }

    #[test]
    fn tags_split_on_every_separator() {
        let rows = csv("name,标签\nA,\"vip; hot,cold，展会；2024|  \"\n");
        assert_eq!(
            ok(&rows[0]).tags.as_deref(),
            Some(&["vip", "hot", "cold", "展会", "2024"].map(String::from)[..])
        );
    }

    #[test]
    fn company_size_formats() {
        assert_eq!(parse_company_size("120"), Some(120));
        assert_eq!(parse_company_size("1,200"), Some(1200));
        assert_eq!(parse_company_size("12,000,000"), Some(12_000_000));
        assert_eq!(parse_company_size("50-200"), Some(50));
        assert_eq!(parse_company_size("1,000 ~ 5,000"), Some(1000));
        for bad in ["1,2", "-5", "200-50", "50+", "abc", "1.5", "99999999999"] {
            assert_eq!(parse_company_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn do_not_contact_accepts_yes_no_and_chinese() {
        let rows = csv("name,do_not_contact\nA,是\nB,否\nC,1\nD,FALSE\n");
        let dnc: Vec<Option<bool>> = rows
            .iter()
            .map(|r| ok(r).flags.as_ref().and_then(|f| f.do_not_contact))
            .collect();
        assert_eq!(dnc, vec![Some(true), Some(false), Some(true), Some(false)]);
    }

    #[test]
    fn ndjson_good_bad_and_empty_lines() {
        let text = "\u{feff}{\"name\":\"A\",\"company_size\":120,\"tags\":[\"x\",\"y\"]}\n\
                    \n   \n\
                    {\"name\": \"B\", oops}\r\n\
                    [1,2]\n\
                    {\"email\":\"c@x.com\",\"company_size\":\"50-200\",\"tags\":\"p;q\",\"do_not_contact\":true,\"备注\":\"hi\",\"extra\":7,\"phone\":13800000000}";
        let rows = read(Format::Ndjson, text, &[]);
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![1, 4, 5, 6]);
        let a = ok(&rows[0]);
        assert_eq!(a.name.as_deref(), Some("A"));
        assert_eq!(a.company_size, Some(120));
        assert_eq!(a.tags, Some(vec!["x".into(), "y".into()]));
        assert_eq!(err_fields(&rows[1]), vec!["row"]);
        assert_eq!(rows[1].raw["_line"], Value::from("{\"name\": \"B\", oops}"));
        assert_eq!(err_fields(&rows[2]), vec!["row"]);
        let c = ok(&rows[3]);
        assert_eq!(c.company_size, Some(50));
        assert_eq!(c.tags, Some(vec!["p".into(), "q".into()]));
        assert_eq!(c.flags.as_ref().unwrap().do_not_contact, Some(true));
        assert_eq!(c.phone.as_deref(), Some("13800000000"));
        assert_eq!(rows[3].note.as_deref(), Some("hi"));
        assert_eq!(c.fields.as_ref().unwrap()["extra"], Value::from(7));
        assert_eq!(rows[3].raw["extra"], Value::from(7));
    }

    #[test]
    fn ndjson_utm_object_fields_object_and_null() {
        let text = r#"{"email":"a@x.com","utm":{"source":"google","campaign":"q4"},"utm_medium":"cpc","fields":{"plan":"pro"},"title":null,"stage":"Customer"}
{"email":"b@x.com","utm":{"source":"x","bogus":"y"},"company_size":1.5,"tags":[{"a":1}]}
"#;
        let rows = read(Format::Ndjson, text, &[]);
        let a = ok(&rows[0]);
        let utm = a.utm.as_ref().unwrap();
        assert_eq!(utm.source.as_deref(), Some("google"));
        assert_eq!(utm.campaign.as_deref(), Some("q4"));
        assert_eq!(utm.medium.as_deref(), Some("cpc"));
        assert_eq!(a.fields.as_ref().unwrap()["plan"], Value::from("pro"));
        assert_eq!(a.title, None);
        assert_eq!(a.stage, Some(Stage::Customer));
        let mut errs = err_fields(&rows[1]);
        errs.sort_unstable();
        assert_eq!(errs, vec!["company_size", "tags", "utm.bogus"]);
    }

    #[test]
    fn ndjson_overlong_line_is_a_row_error_and_reading_goes_on() {
        let long = format!("{{\"name\":\"{}\"}}\n", "x".repeat(MAX_LINE_BYTES));
        let text = format!("{long}{{\"name\":\"B\"}}\n");
        let rows = read(Format::Ndjson, &text, &[]);
        assert_eq!(rows.len(), 2);
        assert_eq!(err_fields(&rows[0]), vec!["row"]);
        assert_eq!(rows[1].line, 2);
        assert_eq!(ok(&rows[1]).name.as_deref(), Some("B"));
    }

    #[test]
    fn csv_overlong_record_and_overlong_note_are_row_errors() {
        let text = format!(
            "name,notes\nA,\"{}\"\nB,\"{}\"\nC,ok\n",
            "x".repeat(MAX_LINE_BYTES),
            "y".repeat(crate::domain::activity::MAX_TEXT + 1)
        );
        let rows = read(Format::Csv, &text, &[]);
        assert_eq!(rows.len(), 3);
        assert_eq!(err_fields(&rows[0]), vec!["row"]);
        assert!(rows[0].raw.is_empty(), "an overlong row is not kept");
        assert_eq!(err_fields(&rows[1]), vec!["note"]);
        assert_eq!(rows[2].line, 4);
        assert_eq!(rows[2].note.as_deref(), Some("ok"));
    }

    #[test]
    fn ndjson_columns_are_those_seen_so_far() {
        let mut r = RowReader::new(
            "{\"邮箱\":\"a@x.com\",\"id\":1}\n{\"Budget\":3}\n".as_bytes(),
            Format::Ndjson,
            Mapping::default(),
        )
        .unwrap();
        assert!(r.columns().is_empty());
        r.next();
        assert_eq!(r.columns().len(), 2);
        r.next();
        assert!(
            r.columns()
                .contains(&("Budget".to_owned(), "fields.Budget".to_owned()))
        );
    }

    #[test]
    fn csv_without_a_header_is_fatal() {
        let err = RowReader::new(&b""[..], Format::Csv, Mapping::default())
            .err()
            .unwrap();
        assert!(matches!(err, TransferError::Csv(_)));
        assert!(RowReader::new(&b"\xEF\xBB\xBF"[..], Format::Csv, Mapping::default()).is_err());
        let gbk_header = b"\xd0\xd5\xc3\xfb,email\n";
        assert!(RowReader::new(&gbk_header[..], Format::Csv, Mapping::default()).is_err());
        let rows: Vec<Row> = RowReader::new(
            &b"name,company\n\xff,ok\n"[..],
            Format::Csv,
            Mapping::default(),
        )
        .unwrap()
        .map(Result::unwrap)
        .collect();
        assert_eq!(err_fields(&rows[0]), vec!["row"]);
        assert_eq!(rows[0].raw["company"], Value::from("ok"));
    }

    #[test]
    fn a_quote_left_open_in_the_header_is_fatal() {
        let text = &b"name,\"notes\nA,x\nB,y\n"[..];
        match RowReader::new(text, Format::Csv, Mapping::default()).err() {
            Some(TransferError::Csv(m)) => assert!(m.contains("header"), "{m}"),
            other => panic!("expected a CSV error, got {other:?}"),
        }
        let closed = &b"name,\"no\ntes\"\nA,x\n"[..];
        assert!(RowReader::new(closed, Format::Csv, Mapping::default()).is_ok());
    }

    #[test]
    fn a_mapped_column_the_csv_lacks_is_fatal() {
        let typo = Mapping::from_pairs(&["Mail Adr=email".into()]).unwrap();
        let text = &b"Full Name,Mail Addr
Amy,amy@example.com
"[..];
        match RowReader::new(text, Format::Csv, typo).err() {
            Some(TransferError::Csv(m)) => assert!(m.contains("`mail adr`"), "{m}"),
            other => panic!("expected a CSV error, got {other:?}"),
        }
        let right = Mapping::from_pairs(&[" mail addr =email".into()]).unwrap();
        assert!(RowReader::new(text, Format::Csv, right).is_ok());
    }

    /// An endless CSV: reading must hand out rows without reaching the end.
    struct Endless {
        next: u64,
        pending: Vec<u8>,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pending.is_empty() {
                self.pending = if self.next == 0 {
                    b"name,email\n".to_vec()
                } else {
                    format!("n{0},n{0}@x.com\n", self.next).into_bytes()
                };
                self.next += 1;
            }
            let n = self.pending.len().min(buf.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn reading_streams() {
        let rows: Vec<Row> = RowReader::new(
            Endless {
                next: 0,
                pending: Vec::new(),
            },
            Format::Csv,
            Mapping::default(),
        )
        .unwrap()
        .take(3)
        .map(Result::unwrap)
        .collect();
        assert_eq!(rows[2].line, 4);
        assert_eq!(ok(&rows[2]).email.as_deref(), Some("n3@x.com"));
    }

    /// Hands out one byte per read, as a slow pipe might.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((&first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn a_bom_split_across_reads_is_still_stripped() {
        for format in [Format::Csv, Format::Ndjson] {
            let text: &[u8] = match format {
                Format::Csv => "\u{feff}email\n\"a\n\"\nb@x.com".as_bytes(),
                Format::Ndjson => "\u{feff}{\"email\":\"a\"}\n\n{\"email\":\"b@x.com\"}".as_bytes(),
            };
            let rows: Vec<Row> = RowReader::new(Trickle(text), format, Mapping::default())
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(rows.len(), 2, "{format:?}");
            assert_eq!(
                rows[1].line,
                4 - u64::from(format == Format::Ndjson),
                "{format:?}"
            );
            assert_eq!(ok(&rows[1]).email.as_deref(), Some("b@x.com"));
            assert!(ok(&rows[0]).email.is_some());
        }
    }

    fn rules() -> NormalizeRules {
        NormalizeRules {
            default_region: parse_region("CN").unwrap(),
            personal_domains: vec!["qq.com".into()],
            channels: Vec::new(),
        }
    }

    fn sample_lead() -> Lead {
        let mut fields = Map::new();
        fields.insert("plan".into(), Value::from("pro"));
        fields.insert("seats".into(), Value::from(12));
        fields.insert("备注".into(), Value::from("a,\"b\"\nc"));
        let input = LeadInput {
            name: Some("王总".into()),
            email: Some("wang@qq.com".into()),
            phone: Some("138 1234 5678".into()),
            company: Some("Acme, \"Ltd\"".into()),
            title: Some("CTO".into()),
            industry: Some("软件".into()),
            company_size: Some(1200),
            region: Some("北京".into()),
            country: Some("CN".into()),
            source: Some("web".into()),
            channel: Some("event".into()),
            utm: Some(Utm {
                source: Some("google".into()),
                medium: Some("cpc".into()),
                campaign: Some("q4".into()),
                term: Some("crm".into()),
                content: Some("ad-1".into()),
            }),
            campaign_id: Some(Uuid::from_u128(1)),
            stage: Some(Stage::Sql),
            status: Some(Status::Connected),
            owner_id: Some(Uuid::from_u128(2)),
            tags: Some(vec!["vip".into(), "展会".into()]),
            fields: Some(fields),
            flags: Some(FlagsInput {
                do_not_contact: Some(true),
            }),
            next_follow_up_at: Some("2026-11-23T16:00:00+08:00".into()),
            ..Default::default()
        };
        input
            .validate(&rules())
            .unwrap()
            .into_lead(Uuid::from_u128(9), 1_700_000_000_123)
    }

    fn minimal_lead() -> Lead {
        LeadInput {
            email: Some("a@acme.com".into()),
            ..Default::default()
        }
        .validate(&rules())
        .unwrap()
        .into_lead(Uuid::from_u128(10), 1_700_000_000_000)
    }

    fn round_trip(format: Format) {
        let leads = [sample_lead(), minimal_lead()];
        let mut w = ExportWriter::new(Vec::new(), format).unwrap();
        for l in &leads {
            w.write(l).unwrap();
        }
        let bytes = w.finish().unwrap();
        let rows: Vec<Row> = RowReader::new(&bytes[..], format, Mapping::default())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2);
        for (row, lead) in rows.iter().zip(&leads) {
            let again = row
                .input
                .clone()
                .unwrap()
                .validate(&rules())
                .unwrap()
                .into_lead(lead.id, lead.created_at);
            assert_eq!(&again, lead, "{format:?}");
            assert_eq!(row.id, Some(lead.id), "{format:?}");
            assert!(row.note.is_none());
        }
    }

    #[test]
    fn csv_export_round_trips_through_the_reader() {
        round_trip(Format::Csv);
        let mut w = ExportWriter::new(Vec::new(), Format::Csv).unwrap();
        w.write(&sample_lead()).unwrap();
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        let header = text.lines().next().unwrap();
        assert_eq!(header, CSV_COLUMNS.join(","));
        assert_eq!(csv_row(&sample_lead()).len(), CSV_COLUMNS.len());
        assert!(text.contains(",vip;展会,"));
        assert!(text.contains(",2026-11-23T08:00:00.000Z,"));
        assert!(text.contains(",sql,connected,"));
        // Every exported input column maps back to its own field.
        let r = RowReader::new(header.as_bytes(), Format::Csv, Mapping::default()).unwrap();
        assert!(r.columns().iter().all(|(_, t)| !t.starts_with("fields.")));
        // Empty custom fields export as an empty cell.
        let mut w = ExportWriter::new(Vec::new(), Format::Csv).unwrap();
        w.write(&minimal_lead()).unwrap();
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        assert!(text.trim_end().ends_with(",false,,,,"));
    }

    #[test]
    fn ndjson_export_is_one_lead_view_a_line_and_round_trips() {
        round_trip(Format::Ndjson);
        let mut w = ExportWriter::new(Vec::new(), Format::Ndjson).unwrap();
        w.write(&sample_lead()).unwrap();
        w.write(&minimal_lead()).unwrap();
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(text.ends_with('\n'));
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["id"], Value::from(Uuid::from_u128(9).to_string()));
        assert_eq!(v["utm"]["source"], Value::from("google"));
        assert_eq!(v["flags"]["do_not_contact"], Value::from(true));
        assert_eq!(v["fields"]["seats"], Value::from(12));
        assert_eq!(v["score"]["total"], Value::from(0));
        assert_eq!(
            v["next_follow_up_at"],
            Value::from("2026-11-23T08:00:00.000Z")
        );
    }

    #[test]
    fn format_detection() {
        assert_eq!(Format::from_path(Path::new("a/b.CSV")), Some(Format::Csv));
        for p in ["x.ndjson", "x.jsonl", "x.json"] {
            assert_eq!(Format::from_path(Path::new(p)), Some(Format::Ndjson));
        }
        assert_eq!(Format::from_path(Path::new("x.xlsx")), None);
        assert_eq!(Format::from_path(Path::new("csv")), None);
        assert_eq!(Format::parse(" CSV "), Some(Format::Csv));
        assert_eq!(Format::parse("JSONL"), Some(Format::Ndjson));
        assert_eq!(Format::parse("ndjson"), Some(Format::Ndjson));
        assert_eq!(Format::parse("xml"), None);
        assert_eq!(
            Format::from_content_type("text/csv; charset=utf-8"),
            Some(Format::Csv)
        );
        for ct in [
            "application/x-ndjson",
            "application/jsonl",
            "Application/NDJSON",
            "application/json-seq",
        ] {
            assert_eq!(Format::from_content_type(ct), Some(Format::Ndjson), "{ct}");
        }
        assert_eq!(Format::from_content_type("application/json"), None);
    }
}
