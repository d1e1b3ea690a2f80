//! Users (admins, managers, reps), their API tokens, and who may see which lead.

use super::email::Email;
use super::lead::Lead;
use super::time::{Millis, to_rfc3339};
use super::{FieldError, Problems, clean_text, patch_field, patch_required};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Manager,
    Rep,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Rep => "rep",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_lowercase().as_str() {
            "admin" => Some(Role::Admin),
            "manager" => Some(Role::Manager),
            "rep" => Some(Role::Rep),
            _ => None,
        }
    }
}

/// A user as stored. Field order is part of the stored format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: u64,
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    pub team: Option<String>,
    pub manager_id: Option<Uuid>,
    pub territories: Vec<String>,
    pub product_lines: Vec<String>,
    pub capacity: u32,
    pub active: bool,
    pub senior: bool,
    /// An argon2id PHC string; `None` means the user signs in with tokens only.
    pub password_hash: Option<String>,
}

/// Whether a token came from `token create` (long-lived) or from a login (expires).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenKind {
    Api,
    Session,
}

/// A bearer token as stored: only its SHA-256 is kept, as the table key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub user_id: Uuid,
    pub kind: TokenKind,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
}

/// The caller of a request, as resolved from its token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    /// Users whose leads this caller sees besides their own (a manager's team).
    pub team_member_ids: Vec<Uuid>,
    /// The SHA-256 of the presented token, so logout can revoke exactly it.
    pub token_hash: [u8; 32],
}

impl Principal {
    /// The server itself, acting on a public capture (a form, the tracker): sees every lead so
    /// a submission merges into its person, and is recorded as no actor.
    pub fn system() -> Principal {
        Principal {
            user: User {
                id: Uuid::nil(),
                created_at: 0,
                updated_at: 0,
                version: 0,
                name: "system".into(),
                email: None,
                role: Role::Admin,
                team: None,
                manager_id: None,
                territories: Vec::new(),
                product_lines: Vec::new(),
                capacity: 0,
                active: true,
                senior: false,
                password_hash: None,
            },
            team_member_ids: Vec::new(),
            token_hash: [0; 32],
        }
    }

    pub fn id(&self) -> Uuid {
        self.user.id
    }

    /// Who to record as the actor of a change: nobody for the system.
    pub fn actor(&self) -> Option<Uuid> {
        (!self.user.id.is_nil()).then_some(self.user.id)
    }

    pub fn role(&self) -> Role {
        self.user.role
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// The owners whose leads this caller may see; `None` means every lead (admin).
    pub fn visible_owners(&self) -> Option<Vec<Uuid>> {
        match self.user.role {
            Role::Admin => None,
            Role::Manager => {
                let mut v = vec![self.user.id];
                v.extend(
                    self.team_member_ids
                        .iter()
                        .copied()
                        .filter(|id| *id != self.user.id),
                );
                Some(v)
            }
            Role::Rep => Some(vec![self.user.id]),
        }
    }

    /// The visibility rule of API.md: admins see every lead; managers their own, their team's
    /// and pooled leads; reps their own and pooled leads.
    pub fn can_see(&self, owner_id: Option<Uuid>, pool_id: Option<Uuid>) -> bool {
        match self.visible_owners() {
            None => true,
            Some(owners) => match owner_id {
                Some(owner) => owners.contains(&owner),
                None => pool_id.is_some(),
            },
        }
    }

    pub fn can_see_lead(&self, lead: &Lead) -> bool {
        self.can_see(lead.owner_id, lead.pool_id)
    }

    /// Whether this caller may edit, merge or erase a lead it can see. A rep sees the pools'
    /// leads to claim them, but changes only the leads it owns.
    pub fn can_change_lead(&self, lead: &Lead) -> bool {
        match self.user.role {
            Role::Admin | Role::Manager => self.can_see_lead(lead),
            Role::Rep => lead.owner_id == Some(self.user.id),
        }
    }

    /// Whether this caller may see another user's record.
    pub fn can_see_user(&self, other: &User) -> bool {
        match self.user.role {
            Role::Admin => true,
            Role::Manager => other.id == self.user.id || self.team_member_ids.contains(&other.id),
            Role::Rep => other.id == self.user.id,
        }
    }
}

/// Whether `member` is on the team `manager` leads: same team name, or reports to them.
pub fn is_team_member(manager: &User, member: &User) -> bool {
    member.id != manager.id
        && (member.manager_id == Some(manager.id)
            || (manager.team.is_some() && member.team == manager.team))
}

const MIN_PASSWORD: usize = 8;
const DEFAULT_CAPACITY: u32 = 50;

/// The body of `POST /v1/users`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    pub team: Option<String>,
    pub manager_id: Option<Uuid>,
    pub territories: Option<Vec<String>>,
    pub product_lines: Option<Vec<String>>,
    /// Most open leads this user may own (default 50).
    pub capacity: Option<u32>,
    pub active: Option<bool>,
    pub senior: Option<bool>,
    /// At least 8 characters; stored only as an argon2id hash.
    pub password: Option<String>,
}

/// A valid user input; the password is still plain and is hashed off the request path.
#[derive(Clone)]
pub struct NewUser {
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    pub team: Option<String>,
    pub manager_id: Option<Uuid>,
    pub territories: Vec<String>,
    pub product_lines: Vec<String>,
    pub capacity: u32,
    pub active: bool,
    pub senior: bool,
    pub password: Option<String>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

fn clean_list(p: &mut Problems, field: &str, list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, v) in list.into_iter().enumerate() {
        match clean_text(p, &format!("{field}[{i}]"), Some(v), 100) {
            Some(v) if !out.contains(&v) => out.push(v),
            _ => {}
        }
    }
    if out.len() > 200 {
        p.push(field, "at most 200 entries");
    }
    out
}

fn clean_user_email(p: &mut Problems, raw: Option<String>) -> Option<String> {
    let raw = raw?;
    if raw.trim().is_empty() {
        return None;
    }
    match Email::parse(&raw) {
        Ok(e) => Some(e.into_inner()),
        Err(m) => {
            p.push("email", m);
            None
        }
    }
}

fn check_password(p: &mut Problems, pw: &Option<String>) {
    if let Some(pw) = pw
        && (pw.chars().count() < MIN_PASSWORD || pw.len() > 1024)
    {
        p.push(
            "password",
            format!("must be {MIN_PASSWORD} to 1024 characters"),
        );
    }
}

impl UserInput {
    pub fn validate(self) -> Result<NewUser, Vec<FieldError>> {
        let mut p = Problems::default();
        let name = clean_text(&mut p, "name", Some(self.name), 100);
        if name.is_none() && p.is_empty() {
            p.push("name", "is required");
        }
        check_password(&mut p, &self.password);
        let user = NewUser {
            name: name.unwrap_or_default(),
            email: clean_user_email(&mut p, self.email),
            role: self.role,
            team: clean_text(&mut p, "team", self.team, 100),
            manager_id: self.manager_id,
            territories: clean_list(&mut p, "territories", self.territories.unwrap_or_default()),
            product_lines: clean_list(
                &mut p,
                "product_lines",
                self.product_lines.unwrap_or_default(),
            ),
            capacity: self.capacity.unwrap_or(DEFAULT_CAPACITY),
            active: self.active.unwrap_or(true),
            senior: self.senior.unwrap_or(false),
            password: self.password,
        };
        p.finish(user)
    }
}

impl NewUser {
    pub fn into_user(self, id: Uuid, now: Millis, password_hash: Option<String>) -> User {
        User {
            id,
            created_at: now,
            updated_at: now,
            version: 1,
            name: self.name,
            email: self.email,
            role: self.role,
            team: self.team,
            manager_id: self.manager_id,
            territories: self.territories,
            product_lines: self.product_lines,
            capacity: self.capacity,
            active: self.active,
            senior: self.senior,
            password_hash,
        }
    }
}

/// A merge patch of a user.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub role: Option<Role>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub team: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Uuid>)]
    pub manager_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub territories: Option<Vec<String>>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub product_lines: Option<Vec<String>>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub capacity: Option<u32>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "patch_required")]
    #[schema(nullable = false)]
    pub senior: Option<bool>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    pub password: Option<Option<String>>,
}

/// A validated user patch; `password` is still plain here.
#[derive(Clone, Default)]
pub struct ValidUserPatch {
    pub name: Option<String>,
    pub email: Option<Option<String>>,
    pub role: Option<Role>,
    pub team: Option<Option<String>>,
    pub manager_id: Option<Option<Uuid>>,
    pub territories: Option<Vec<String>>,
    pub product_lines: Option<Vec<String>>,
    pub capacity: Option<u32>,
    pub active: Option<bool>,
    pub senior: Option<bool>,
    pub password: Option<Option<String>>,
}

impl UserPatch {
    pub fn validate(self) -> Result<ValidUserPatch, Vec<FieldError>> {
        let mut p = Problems::default();
        let name = match self.name {
            Some(n) => match clean_text(&mut p, "name", Some(n), 100) {
                Some(n) => Some(n),
                None => {
                    if p.is_empty() {
                        p.push("name", "must not be empty");
                    }
                    None
                }
            },
            None => None,
        };
        if let Some(Some(pw)) = &self.password {
            check_password(&mut p, &Some(pw.clone()));
        }
        let patch = ValidUserPatch {
            name,
            email: self.email.map(|e| clean_user_email(&mut p, e)),
            role: self.role,
            team: self.team.map(|t| clean_text(&mut p, "team", t, 100)),
            manager_id: self.manager_id,
            territories: self
                .territories
                .map(|t| clean_list(&mut p, "territories", t)),
            product_lines: self
                .product_lines
                .map(|t| clean_list(&mut p, "product_lines", t)),
            capacity: self.capacity,
            active: self.active,
            senior: self.senior,
            password: self.password,
        };
        p.finish(patch)
    }
}

impl ValidUserPatch {
    /// Applies everything but the password (hashed by the caller, off the writer thread).
    pub fn apply(&self, user: &mut User) {
        if let Some(v) = &self.name {
            user.name = v.clone();
        }
        if let Some(v) = &self.email {
            user.email = v.clone();
        }
        if let Some(v) = self.role {
            user.role = v;
        }
        if let Some(v) = &self.team {
            user.team = v.clone();
        }
        if let Some(v) = self.manager_id {
            user.manager_id = v;
        }
        if let Some(v) = &self.territories {
            user.territories = v.clone();
        }
        if let Some(v) = &self.product_lines {
            user.product_lines = v.clone();
        }
        if let Some(v) = self.capacity {
            user.capacity = v;
        }
        if let Some(v) = self.active {
            user.active = v;
        }
        if let Some(v) = self.senior {
            user.senior = v;
        }
    }
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    pub team: Option<String>,
    pub manager_id: Option<Uuid>,
    pub territories: Vec<String>,
    pub product_lines: Vec<String>,
    pub capacity: u32,
    pub active: bool,
    pub senior: bool,
    pub has_password: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id,
            created_at: to_rfc3339(u.created_at),
            updated_at: to_rfc3339(u.updated_at),
            version: u.version,
            name: u.name.clone(),
            email: u.email.clone(),
            role: u.role,
            team: u.team.clone(),
            manager_id: u.manager_id,
            territories: u.territories.clone(),
            product_lines: u.product_lines.clone(),
            capacity: u.capacity,
            active: u.active,
            senior: u.senior,
            has_password: u.password_hash.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, team: Option<&str>) -> User {
        NewUser {
            name: "u".into(),
            email: None,
            role,
            team: team.map(str::to_owned),
            manager_id: None,
            territories: vec![],
            product_lines: vec![],
            capacity: 50,
            active: true,
            senior: false,
            password: None,
        }
        .into_user(Uuid::now_v7(), 0, None)
    }

    #[test]
    fn visibility_by_role() {
        let rep = user(Role::Rep, Some("east"));
        let other = user(Role::Rep, Some("east"));
        let mgr = user(Role::Manager, Some("east"));
        let p = |u: &User, team: Vec<Uuid>| Principal {
            user: u.clone(),
            team_member_ids: team,
            token_hash: [0; 32],
        };
        let rep_p = p(&rep, vec![]);
        assert!(rep_p.can_see(Some(rep.id), None));
        assert!(!rep_p.can_see(Some(other.id), None));
        assert!(rep_p.can_see(None, Some(Uuid::nil())));
        assert!(!rep_p.can_see(None, None));
        let mgr_p = p(&mgr, vec![rep.id]);
        assert!(mgr_p.can_see(Some(rep.id), None));
        assert!(!mgr_p.can_see(Some(other.id), None));
        assert!(is_team_member(&mgr, &other));
        let admin = p(&user(Role::Admin, None), vec![]);
        assert!(admin.can_see(None, None));
    }

    #[test]
    fn password_rules_and_redacted_debug() {
        let input: UserInput =
            serde_json::from_str(r#"{"name":"Li","role":"rep","password":"short"}"#).unwrap();
        assert_eq!(input.validate().unwrap_err()[0].field, "password");
        let input: UserInput =
            serde_json::from_str(r#"{"name":"Li","role":"rep","password":"long enough"}"#).unwrap();
        let u = input.validate().unwrap();
        assert!(!format!("{u:?}").contains("long enough"));
    }
}
