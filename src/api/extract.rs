//! Request extractors whose rejections are `ApiError`s: JSON bodies that name the bad field,
//! query parameters, the authenticated caller, `If-Match` and `Idempotency-Key`.

use super::AppState;
use super::error::ApiError;
use crate::domain::user::Principal;
use crate::service::{Idempotency, Precondition};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Fields clients may see but never send.
const READ_ONLY: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "version",
    "score",
    "first_touch_at",
    "last_activity_at",
    "merged",
    "has_password",
];

/// A JSON body parsed into `T`, with the raw bytes kept for idempotency fingerprints.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

/// The body's media type, lowercased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|mime| {
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    })
}

/// A `PATCH` is a JSON merge patch; another patch format (a JSON Patch's
/// `application/json-patch+json`) means something else and must not be applied as one.
fn is_merge_patch(headers: &HeaderMap) -> bool {
    media_type(headers)
        .is_some_and(|mime| mime == "application/json" || mime == "application/merge-patch+json")
}

/// Parses JSON bytes into `T`, turning serde's error into a 400 (not JSON) or a 422 naming
/// the field.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    // Every body is an object: serde would read an array into a struct by position, which
    // slips past the field names (unknown, read-only and repeated members alike).
    let first = raw.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(raw).is_ok() {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(raw);
    match serde_path_to_error::deserialize::<_, T>(super::objects_only::ObjectsOnly(&mut *de)) {
        // Anything after the value (a second document, stray text) makes the body malformed.
        Ok(v) => match de.end() {
            Ok(()) => {
                reject_duplicate_members(raw)?;
                Ok(v)
            }
            Err(e) => Err(ApiError::Malformed(format!(
                "the body is not valid JSON: {e}"
            ))),
        },
        Err(e) => {
            let inner = e.inner();
            use serde_json::error::Category;
            match inner.classify() {
                Category::Syntax | Category::Eof | Category::Io => Err(ApiError::Malformed(
                    format!("the body is not valid JSON: {inner}"),
                )),
                Category::Data if serde_json::from_slice::<serde::de::IgnoredAny>(raw).is_err() => {
                    // serde stops at the first wrong field; a body that is not even JSON is a 400.
                    Err(ApiError::Malformed("the body is not valid JSON".to_owned()))
                }
                Category::Data => {
                    let path = e.path().to_string();
                    let path = if path == "." { String::new() } else { path };
                    let msg = inner.to_string();
                    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
                    let named = msg.split('`').nth(1).map(str::to_owned);
                    let join = |name: &str| {
                        if path == name || path.ends_with(&format!(".{name}")) {
                            path.clone()
                        } else if path.is_empty() {
                            name.to_owned()
                        } else {
                            format!("{path}.{name}")
                        }
                    };
                    let (field, message) = match named {
                        Some(name) if msg.starts_with("unknown field") => {
                            if READ_ONLY.contains(&name.as_str()) && join(&name) == name {
                                (name.clone(), "is read-only".to_owned())
                            } else {
                                (join(&name), "unknown field".to_owned())
                            }
                        }
                        Some(name) if msg.starts_with("missing field") => {
                            (join(&name), "is required".to_owned())
                        }
                        Some(name) if msg.starts_with("duplicate field") => {
                            (join(&name), "is given more than once".to_owned())
                        }
                        _ => (
                            if path.is_empty() {
                                "body".to_owned()
                            } else {
                                path
                            },
                            msg,
                        ),
                    };
                    Err(ApiError::field(&field, message))
                }
            }
        }
    }
}

/// A member given twice anywhere in a body, free-form objects such as `fields` included, is a
/// 422 naming it. Typed structs refuse their own duplicates, but a free-form map would quietly
/// keep the last value, so which one the client meant would be a guess.
fn reject_duplicate_members(raw: &[u8]) -> Result<(), ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(raw);
    match serde_path_to_error::deserialize::<_, UniqueMembers>(de) {
        Ok(UniqueMembers) => Ok(()),
        Err(e) => {
            let path = e.path().to_string();
            let msg = e.inner().to_string();
            let name = msg.split('`').nth(1).unwrap_or_default();
            let field = match path.as_str() {
                "." | "" => name.to_owned(),
                path => format!("{path}.{name}"),
            };
            Err(ApiError::field(&field, "is given more than once"))
        }
    }
}

/// Walks any JSON value and fails on the first object that names a member twice.
struct UniqueMembers;

impl<'de> serde::Deserialize<'de> for UniqueMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueMembersVisitor)
    }
}

struct UniqueMembersVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueMembersVisitor {
    type Value = UniqueMembers;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_unit<E>(self) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<UniqueMembers, A::Error> {
        while seq.next_element::<UniqueMembers>()?.is_some() {}
        Ok(UniqueMembers)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<UniqueMembers, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate member `{key}`"
                )));
            }
            map.next_value::<UniqueMembers>()?;
        }
        Ok(UniqueMembers)
    }
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if req.method() == Method::PATCH {
            if !is_merge_patch(req.headers()) {
                return Err(ApiError::UnsupportedMediaType(
                    "send a JSON merge patch as application/merge-patch+json or application/json"
                        .into(),
                ));
            }
        } else if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as application/json".into(),
            ));
        }
        let raw = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(state.config.http.max_body_bytes)
            } else {
                ApiError::Malformed(format!("could not read the body: {rej}"))
            }
        })?;
        Ok(JsonBody {
            value: parse_json(&raw)?,
            raw,
        })
    }
}

/// Query parameters, taken one by one so each error names its parameter and unknown ones
/// are refused rather than ignored.
pub struct Params {
    pairs: Vec<(String, String)>,
    tag: CursorTag,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::Malformed(format!("malformed query string: {e}")))?;
        Ok(Params::of(parts.uri.path(), pairs))
    }
}

/// What a list's cursor is bound to: the path and every query parameter but `cursor` and
/// `limit`. A cursor used with another sort, filter or list would start at a position that
/// means something else there, so it is refused instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorTag([u8; 4]);

impl CursorTag {
    fn of(path: &str, pairs: &[(String, String)]) -> CursorTag {
        let mut bound: Vec<&(String, String)> = pairs
            .iter()
            .filter(|(k, _)| k != "cursor" && k != "limit")
            .collect();
        bound.sort();
        let mut h = Sha256::new();
        h.update(path.as_bytes());
        for (k, v) in bound {
            h.update([0]);
            h.update(k.as_bytes());
            h.update([1]);
            h.update(v.as_bytes());
        }
        let digest = h.finalize();
        CursorTag([digest[0], digest[1], digest[2], digest[3]])
    }

    /// The cursor for the page after `pos` (sort value, id) of this list.
    pub fn cursor(self, pos: (i64, u128)) -> String {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&pos.0.to_be_bytes());
        b.extend_from_slice(&pos.1.to_be_bytes());
        self.key_cursor(&b)
    }

    /// The cursor for the page after the item with this id (lists in id order).
    pub fn id_cursor(self, id: Uuid) -> String {
        self.cursor((0, id.as_u128()))
    }

    /// The cursor for the page after `key`, a list's own position.
    pub fn key_cursor(self, key: &[u8]) -> String {
        use base64::Engine;
        let mut b = Vec::with_capacity(key.len() + 4);
        b.extend_from_slice(key);
        b.extend_from_slice(&self.0);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn decode_key(self, s: &str) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let mut b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .filter(|b| b.len() >= 4)
            .ok_or_else(not_a_cursor)?;
        if b[b.len() - 4..] != self.0 {
            return Err(
                "belongs to another list, sort or filter; leave it out to start again \
                 from the first page"
                    .to_owned(),
            );
        }
        b.truncate(b.len() - 4);
        Ok(b)
    }

    fn decode(self, s: &str) -> Result<(i64, u128), String> {
        let b = self.decode_key(s)?;
        let sort: [u8; 8] = b
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(not_a_cursor)?;
        let id: [u8; 16] = b
            .get(8..)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(not_a_cursor)?;
        Ok((i64::from_be_bytes(sort), u128::from_be_bytes(id)))
    }
}

fn not_a_cursor() -> String {
    "is not a cursor issued by this server".to_owned()
}

impl Params {
    fn of(path: &str, pairs: Vec<(String, String)>) -> Params {
        let tag = CursorTag::of(path, &pairs);
        Params { pairs, tag }
    }

    /// Parameters given some other way (the CLI's `--filter`).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Params {
        Params::of("", pairs)
    }

    /// What this request's next-page cursor is bound to.
    pub fn cursor_tag(&self) -> CursorTag {
        self.tag
    }

    /// The value of `name`, if given (the last one wins); an empty value counts as absent.
    pub fn take(&mut self, name: &str) -> Option<String> {
        let mut found = None;
        self.pairs.retain(|(k, v)| {
            if k == name {
                found = Some(v.clone());
                false
            } else {
                true
            }
        });
        found.filter(|v| !v.is_empty())
    }

    /// Every non-empty value of a repeatable parameter, in the order given.
    pub fn take_all(&mut self, name: &str) -> Vec<String> {
        let mut found = Vec::new();
        self.pairs.retain(|(k, v)| {
            if k == name {
                if !v.is_empty() {
                    found.push(v.clone());
                }
                false
            } else {
                true
            }
        });
        found
    }

    pub fn parse<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => parse(&v).map(Some).map_err(|m| ApiError::field(name, m)),
        }
    }

    /// A `true`/`false` (or `1`/`0`) switch, off when absent.
    pub fn flag(&mut self, name: &str) -> Result<bool, ApiError> {
        Ok(self
            .parse(name, |s| match s {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err("must be true or false".to_owned()),
            })?
            .unwrap_or(false))
    }

    /// Refuses parameters nobody took; gives what a next-page cursor is bound to.
    pub fn finish(self) -> Result<CursorTag, ApiError> {
        match self.pairs.first() {
            None => Ok(self.tag),
            Some((k, _)) => Err(ApiError::field(k, "unknown query parameter")),
        }
    }

    /// `limit`, 1..=max, default 50.
    pub fn limit(&mut self, max: u64) -> Result<usize, ApiError> {
        self.limit_or(50, max)
    }

    /// `limit`, 1..=max, default `default`.
    pub fn limit_or(&mut self, default: u64, max: u64) -> Result<usize, ApiError> {
        let limit = self.parse("limit", |s| {
            s.parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| format!("must be a whole number from 1 to {max}"))
        })?;
        Ok(usize::try_from(limit.unwrap_or(default)).unwrap_or(usize::MAX))
    }

    /// `cursor`, as issued by an earlier page.
    pub fn cursor(&mut self) -> Result<Option<(i64, u128)>, ApiError> {
        let tag = self.tag;
        self.parse("cursor", |s| tag.decode(s))
    }

    /// `cursor` of a list in id order, as issued by [`CursorTag::id_cursor`].
    pub fn id_cursor(&mut self) -> Result<Option<Uuid>, ApiError> {
        Ok(self.cursor()?.map(|(_, id)| Uuid::from_u128(id)))
    }

    /// `cursor` of a list with its own positions, as issued by [`CursorTag::key_cursor`].
    pub fn key_cursor(&mut self) -> Result<Option<Vec<u8>>, ApiError> {
        let tag = self.tag;
        self.parse("cursor", |s| tag.decode_key(s))
    }

    /// [`Params::key_cursor`], read into a position by `read` (`None`: not one of ours).
    pub fn cursor_as<T>(
        &mut self,
        read: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        let tag = self.tag;
        self.parse("cursor", |s| {
            read(&tag.decode_key(s)?).ok_or_else(not_a_cursor)
        })
    }
}

/// One page of a short list held whole in its stable order (users, pools, sequences,
/// webhooks), with `limit` (at most `max`, the configured page size) and `cursor` as every
/// list takes them. The cursor names the last
/// item shown by position and key, so the next page starts after it, or where it stood if it
/// has since been removed.
pub fn page_of<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> u128,
    q: &mut Params,
    max: u64,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = q.limit(max)?;
    let start = match q.cursor()? {
        None => 0,
        Some((pos, last)) => match items.iter().position(|i| key(i) == last) {
            Some(at) => at + 1,
            None => usize::try_from(pos).unwrap_or(0).min(items.len()),
        },
    };
    let end = start.saturating_add(limit).min(items.len());
    let next = (end < items.len() && end > start).then(|| {
        let last = &items[end - 1];
        q.cursor_tag()
            .cursor((i64::try_from(end - 1).unwrap_or(i64::MAX), key(last)))
    });
    let page = items.into_iter().skip(start).take(end - start).collect();
    Ok((page, next))
}

/// The authenticated caller.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <token>".into()))?;
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <token>".into()))?;
        Ok(Auth(state.service.authenticate(token)?))
    }
}

/// The caller, who must be an admin. Checked before the body is read, so a caller without
/// the right hears 403 whatever they sent, not what was wrong with it.
pub struct AdminAuth(pub Principal);

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Auth(p) = Auth::from_request_parts(parts, state).await?;
        if !p.is_admin() {
            return Err(ApiError::Forbidden("this is for admins only".into()));
        }
        Ok(AdminAuth(p))
    }
}

/// The `If-Match` precondition.
pub struct IfMatch(pub Precondition);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(Precondition::None));
        };
        // A tag that is not even ASCII is no version of ours either: it never matches.
        let Ok(v) = v.to_str().map(str::trim) else {
            return Ok(IfMatch(Precondition::Versions(Vec::new())));
        };
        if v == "*" {
            return Ok(IfMatch(Precondition::Any));
        }
        // Unparseable tags simply never match, as RFC 9110 says: the answer is 412.
        let versions = v
            .split(',')
            .filter_map(|t| {
                t.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        Ok(IfMatch(Precondition::Versions(versions)))
    }
}

pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// The `Idempotency-Key` header, with the fingerprint of the request it came with.
pub fn idempotency(
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Option<Idempotency>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::field(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })?;
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    match serde_json::from_slice::<serde_json::Value>(body) {
        // The same JSON is the same request, however it is spaced or its members ordered.
        Ok(v) => hash_canonical(&mut h, &v),
        Err(_) => h.update(body),
    }
    Ok(Some(Idempotency {
        key: key.to_owned(),
        fingerprint: h.finalize().into(),
    }))
}

/// Feeds `v` to `h` as compact JSON with every object's members in key order.
fn hash_canonical(h: &mut Sha256, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut members: Vec<_> = m.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            h.update(b"{");
            for (k, v) in members {
                h.update(Value::String(k.clone()).to_string().as_bytes());
                h.update(b":");
                hash_canonical(h, v);
                h.update(b",");
            }
            h.update(b"}");
        }
        Value::Array(items) => {
            h.update(b"[");
            for v in items {
                hash_canonical(h, v);
                h.update(b",");
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}

/// Parses an id from the path; a malformed id is just an unknown one.
pub fn path_id(raw: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(what))
}

pub fn parse_uuid(s: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s).map_err(|_| "must be a UUID".to_owned())
}

/// An `owner_id` filter: a user id, or `none` for unowned leads.
pub fn parse_owner(s: &str) -> Result<Option<Uuid>, String> {
    if s == "none" {
        Ok(None)
    } else {
        parse_uuid(s).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: u32,
        b: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        c: String,
    }

    fn field_of(r: Result<T, ApiError>) -> String {
        match r {
            Err(ApiError::Validation { errors, .. }) => errors[0].field.clone(),
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Free {
        fields: std::collections::BTreeMap<String, serde_json::Value>,
        #[serde(default)]
        items: Vec<serde_json::Value>,
    }

    #[test]
    fn a_member_given_twice_inside_a_free_form_object_is_named() {
        let field = |body: &[u8]| match parse_json::<Free>(body) {
            Err(ApiError::Validation { errors, .. }) => {
                (errors[0].field.clone(), errors[0].message.clone())
            }
            other => panic!("expected 422, got {other:?}"),
        };
        assert_eq!(
            field(br#"{"fields":{"a":1,"b":2,"a":3}}"#),
            ("fields.a".to_owned(), "is given more than once".to_owned())
        );
        assert_eq!(
            field(br#"{"fields":{"x":{"deep":1,"deep":2}}}"#).0,
            "fields.x.deep"
        );
        assert_eq!(
            field(br#"{"fields":{},"items":[{"k":1},{"k":1,"k":2}]}"#).0,
            "items[1].k"
        );
        // The same name in different objects, or escaped differently but distinct, is fine.
        assert!(parse_json::<Free>(br#"{"fields":{"a":{"a":1},"b":{"a":2}}}"#).is_ok());
        assert!(parse_json::<Free>(br#"{"fields":{"a":1,"\u0061b":2}}"#).is_ok());
        // Escapes are decoded before comparing: "\u0061" is "a".
        assert_eq!(field(br#"{"fields":{"a":1,"\u0061":2}}"#).0, "fields.a");
    }

    #[test]
    fn json_errors_name_the_field() {
        assert!(matches!(parse_json::<T>(b"{"), Err(ApiError::Malformed(_))));
        assert!(matches!(
            parse_json::<T>(br#"{"zz": ["#),
            Err(ApiError::Malformed(_))
        ));
        assert_eq!(field_of(parse_json(br#"{"a":"x"}"#)), "a");
        assert_eq!(field_of(parse_json(br#"{"a":1,"zz":2}"#)), "zz");
        assert_eq!(field_of(parse_json(br#"{"a":1,"b":{"c":1}}"#)), "b.c");
        assert_eq!(
            field_of(parse_json(br#"{"a":1,"b":{"d":"x","c":"y"}}"#)),
            "b.d"
        );
        assert_eq!(field_of(parse_json(br#"{}"#)), "a");
        for not_an_object in [&b"[1, null]"[..], b" []", b"\"a\"", b"1", b"null"] {
            assert_eq!(field_of(parse_json(not_an_object)), "body");
        }
        assert!(matches!(
            parse_json::<T>(b"[1,"),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(parse_json::<T>(b""), Err(ApiError::Malformed(_))));
        let whole = br#"{"a":1,"b":{"c":"x"}}"#;
        assert!(parse_json::<T>(whole).is_ok());
        assert!(parse_json::<T>(&[&whole[..], b" \n"].concat()).is_ok());
        for tail in [&b" this is not json"[..], br#"{"a":2,"b":{"c":"y"}}"#, b"]"] {
            assert!(
                matches!(
                    parse_json::<T>(&[&whole[..], tail].concat()),
                    Err(ApiError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(tail)
            );
        }
        match parse_json::<T>(br#"{"a":1,"id":"x"}"#) {
            Err(ApiError::Validation { errors, .. }) => {
                assert_eq!(errors[0].message, "is read-only")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_repeated_parameter_keeps_every_value_in_order() {
        let pairs = [
            ("map", "a=email"),
            ("x", "1"),
            ("map", ""),
            ("map", "b=ignore"),
        ];
        let mut q = Params::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        assert_eq!(q.take_all("map"), ["a=email", "b=ignore"]);
        assert_eq!(q.take_all("map"), Vec::<String>::new());
        assert_eq!(q.take("x").as_deref(), Some("1"));
    }

    #[test]
    fn a_short_list_pages_by_its_last_item() {
        let query = |pairs: &[(&str, String)]| {
            Params::from_pairs(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            )
        };
        let items: Vec<u128> = (10..15).collect();
        let (page, next) = page_of(
            items.clone(),
            |i| *i,
            &mut query(&[("limit", "2".into())]),
            500,
        )
        .unwrap();
        assert_eq!(page, [10, 11]);
        let next = next.expect("more to come");
        let (page, next) = page_of(
            items.clone(),
            |i| *i,
            &mut query(&[("limit", "2".into()), ("cursor", next)]),
            500,
        )
        .unwrap();
        assert_eq!(page, [12, 13]);
        // The last item shown was removed meanwhile: go on from where it stood.
        let without: Vec<u128> = items.iter().copied().filter(|i| *i != 13).collect();
        let (page, next) = page_of(
            without,
            |i| *i,
            &mut query(&[("limit", "2".into()), ("cursor", next.unwrap())]),
            500,
        )
        .unwrap();
        assert_eq!(page, [14]);
        assert_eq!(next, None);
        let (page, next) = page_of(items, |i| *i, &mut query(&[]), 500).unwrap();
        assert_eq!((page.len(), next), (5, None));
        assert!(
            page_of(
                vec![1u128],
                |i| *i,
                &mut query(&[("limit", "0".into())]),
                500
            )
            .is_err()
        );
        // The configured page size bounds a short list as it does every other.
        assert!(
            page_of(
                vec![1u128],
                |i| *i,
                &mut query(&[("limit", "20".into())]),
                10
            )
            .is_err()
        );
        assert!(
            page_of(
                vec![1u128],
                |i| *i,
                &mut query(&[("cursor", "x".into())]),
                500
            )
            .is_err()
        );
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let pairs = |sort: &str| vec![("sort".to_owned(), sort.to_owned())];
        let tag = CursorTag::of("/v1/leads", &pairs("score"));
        let c = tag.cursor((-5, 42));
        assert_eq!(tag.decode(&c), Ok((-5, 42)));
        assert!(tag.decode("nope!").is_err());
        assert!(tag.decode("AAAA").is_err());
        // The same list asked again (another limit, parameters in another order) takes it.
        let mut again = pairs("score");
        again.insert(0, ("limit".into(), "7".into()));
        again.push(("cursor".into(), c.clone()));
        assert_eq!(CursorTag::of("/v1/leads", &again), tag);
        // Another sort, filter or list does not.
        for other in [
            CursorTag::of("/v1/leads", &pairs("-score")),
            CursorTag::of("/v1/leads", &[]),
            CursorTag::of("/v1/tasks", &pairs("score")),
        ] {
            let e = other.decode(&c).unwrap_err();
            assert!(e.contains("another list"), "{e}");
            let e = other.decode_key(&tag.key_cursor(b"k")).unwrap_err();
            assert!(e.contains("another list"), "{e}");
        }
        // A list's own keys, of any length, the empty one included.
        for key in [&b""[..], b"dup:acme|wang", &[0xff; 40]] {
            assert_eq!(tag.decode_key(&tag.key_cursor(key)).as_deref(), Ok(key));
        }
        assert!(tag.decode(&tag.key_cursor(b"short")).is_err());
        let id = Uuid::now_v7();
        assert_eq!(tag.decode(&tag.id_cursor(id)), Ok((0, id.as_u128())));
    }
}
