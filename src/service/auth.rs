//! Tokens, passwords, the first-start admin, and turning a bearer token into a `Principal`.

use super::{Service, ServiceError, ServiceResult};
use crate::domain::user::{NewUser, Principal, Role, Token, TokenKind, User, is_team_member};
use crate::store::{Entity, Op};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A fresh bearer token: `ll_` and 64 hex digits of OS randomness.
pub fn new_token() -> Result<String, ServiceError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        ServiceError::Store(crate::store::StoreError::Storage(format!(
            "no randomness: {e}"
        )))
    })?;
    Ok(format!("ll_{}", hex::encode(bytes)))
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Hashes a password with argon2id (slow on purpose: call from a blocking thread).
pub fn hash_password(password: &str) -> ServiceResult<String> {
    let mut salt_bytes = [0u8; 16];
    getrandom::fill(&mut salt_bytes).map_err(|e| {
        ServiceError::Store(crate::store::StoreError::Storage(format!(
            "no randomness: {e}"
        )))
    })?;
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| ServiceError::Store(crate::store::StoreError::Storage(e.to_string())))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Store(crate::store::StoreError::Storage(e.to_string())))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Principals by token hash, valid while no user or token has changed since they were read.
#[derive(Default)]
pub(crate) struct PrincipalCache {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], CachedPrincipal>>,
}

struct CachedPrincipal {
    epoch: u64,
    expires_at: Option<i64>,
    principal: Principal,
}

/// Enough for every active token of a small business; past it the cache starts over.
const PRINCIPAL_CACHE_MAX: usize = 10_000;

impl PrincipalCache {
    fn get(&self, hash: &[u8; 32], epoch: u64, now: i64) -> Option<Principal> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(hash)?;
        (e.epoch == epoch && e.expires_at.is_none_or(|x| x > now)).then(|| e.principal.clone())
    }

    fn put(&self, hash: [u8; 32], epoch: u64, expires_at: Option<i64>, principal: &Principal) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= PRINCIPAL_CACHE_MAX {
                entries.clear();
            }
            entries.insert(
                hash,
                CachedPrincipal {
                    epoch,
                    expires_at,
                    principal: principal.clone(),
                },
            );
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub token: String,
    pub expires_at: i64,
}

impl Service {
    /// Resolves a bearer token. Unknown, expired, or belonging to an inactive user → 401.
    pub fn authenticate(&self, token: &str) -> ServiceResult<Principal> {
        let hash = hash_token(token);
        // Read the epoch before the snapshot: an entry cached from a snapshot older than a
        // user/token change then carries an old epoch and is never served.
        let epoch = self.store.auth_epoch();
        if let Some(p) = self.principals.get(&hash, epoch, self.now()) {
            return Ok(p);
        }
        let snap = self.store.read()?;
        let bad = || ServiceError::Unauthorized("invalid or expired token".into());
        let t = snap.token(&hash)?.ok_or_else(bad)?;
        if t.expires_at.is_some_and(|e| e <= self.now()) {
            return Err(bad());
        }
        let user = snap.user(t.user_id)?.ok_or_else(bad)?;
        if !user.active {
            return Err(ServiceError::Unauthorized(
                "this user is deactivated".into(),
            ));
        }
        let team_member_ids = if user.role == Role::Manager {
            snap.users()?
                .iter()
                .filter(|u| is_team_member(&user, u))
                .map(|u| u.id)
                .collect()
        } else {
            Vec::new()
        };
        let principal = Principal {
            user,
            team_member_ids,
            token_hash: hash,
        };
        self.principals.put(hash, epoch, t.expires_at, &principal);
        Ok(principal)
    }

    /// On an empty store, creates user `admin` with a long-lived token and returns the token.
    pub async fn bootstrap_admin(&self) -> ServiceResult<Option<String>> {
        if self.store.read()?.user_count()? > 0 {
            return Ok(None);
        }
        let token = new_token()?;
        let hash = hash_token(&token);
        let created = self
            .store
            .write(move |tx| {
                if !tx.users()?.is_empty() {
                    return Ok(false);
                }
                let id = tx.new_id();
                let admin = NewUser {
                    name: "admin".into(),
                    email: None,
                    role: Role::Admin,
                    team: None,
                    manager_id: None,
                    territories: vec![],
                    product_lines: vec![],
                    capacity: 0,
                    active: true,
                    senior: false,
                    password: None,
                }
                .into_user(id, tx.now, None);
                tx.put_user(None, &admin)?;
                tx.change(Entity::User, id, Op::Create, None)?;
                let t = Token {
                    user_id: id,
                    kind: TokenKind::Api,
                    created_at: tx.now,
                    expires_at: None,
                };
                tx.put_token(&hash, &t)?;
                Ok(true)
            })
            .await?;
        Ok(created.then_some(token))
    }

    /// Issues a long-lived API token for a user (CLI `token create`, `POST /v1/users/{id}/tokens`).
    pub async fn issue_token(&self, user_id: Uuid) -> ServiceResult<String> {
        let token = new_token()?;
        let hash = hash_token(&token);
        self.store
            .write(move |tx| {
                if tx.user(user_id)?.is_none() {
                    return Ok(Err(ServiceError::NotFound("user")));
                }
                let t = Token {
                    user_id,
                    kind: TokenKind::Api,
                    created_at: tx.now,
                    expires_at: None,
                };
                tx.put_token(&hash, &t)?;
                Ok(Ok(()))
            })
            .await??;
        Ok(token)
    }

    /// Email and password → a session token that expires.
    pub async fn login(&self, email: &str, password: &str) -> ServiceResult<LoginOutcome> {
        let email = email.trim().to_lowercase();
        let user: Option<User> = self.store.read()?.user_by_email(&email)?;
        let phc = user.as_ref().and_then(|u| u.password_hash.clone());
        let pw = password.to_owned();
        // Verify even for unknown users so response time does not reveal which emails exist.
        let ok = tokio::task::spawn_blocking(move || match phc {
            Some(phc) => verify_password(&pw, &phc),
            None => {
                let _ = verify_password(&pw, DUMMY_HASH);
                false
            }
        })
        .await
        .unwrap_or(false);
        let user = match user {
            Some(u) if ok && u.active => u,
            _ => return Err(ServiceError::Unauthorized("wrong email or password".into())),
        };
        let token = new_token()?;
        let hash = hash_token(&token);
        let ttl = self.cfg.session_ttl_ms;
        let expires_at = self
            .store
            .write(move |tx| {
                let expires_at = tx.now + ttl;
                tx.put_token(
                    &hash,
                    &Token {
                        user_id: user.id,
                        kind: TokenKind::Session,
                        created_at: tx.now,
                        expires_at: Some(expires_at),
                    },
                )?;
                Ok(expires_at)
            })
            .await?;
        Ok(LoginOutcome { token, expires_at })
    }

    /// Revokes the token the caller used.
    pub async fn logout(&self, p: &Principal) -> ServiceResult<()> {
        let hash = p.token_hash;
        self.store.write(move |tx| tx.delete_token(&hash)).await?;
        Ok(())
    }
}

/// A valid argon2id hash of a random string, verified against when the user is unknown.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0mBGJzCqMEJ2a1Lzr0QqRk1Gz7tEhl1sWm0yD3aVQ5M";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("ll_") && a.len() == 67);
        assert_eq!(hash_token(&a), hash_token(&a));
    }

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
        // The dummy must be a real hash, or unknown emails would answer measurably faster.
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify_password("x", DUMMY_HASH));
    }
}
