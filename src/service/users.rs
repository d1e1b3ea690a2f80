//! Users: create, read, list, update and delete, with the rules on who may do which.

use super::auth::hash_password;
use super::{Idempotency, Precondition, Render, Service, ServiceError, ServiceResult, Written};
use crate::domain::user::{NewUser, Principal, Role, User, ValidUserPatch};
use crate::store::{Entity, Op, StoreError, Tx};
use uuid::Uuid;

fn require_admin(p: &Principal) -> ServiceResult<()> {
    if p.is_admin() {
        Ok(())
    } else {
        Err(ServiceError::Forbidden("only an admin may do this".into()))
    }
}

fn check_unique(tx: &Tx<'_>, user: &User) -> Result<ServiceResult<()>, StoreError> {
    if tx
        .user_id_by_name(&user.name)?
        .is_some_and(|id| id != user.id)
    {
        return Ok(Err(ServiceError::Conflict(format!(
            "a user named `{}` already exists",
            user.name
        ))));
    }
    if let Some(e) = &user.email
        && tx.user_id_by_email(e)?.is_some_and(|id| id != user.id)
    {
        return Ok(Err(ServiceError::Conflict(format!(
            "a user with email `{e}` already exists"
        ))));
    }
    if let Some(m) = user.manager_id {
        if m == user.id {
            return Ok(Err(ServiceError::invalid(
                "manager_id",
                "a user cannot manage themselves",
            )));
        }
        if tx.user(m)?.is_none() {
            return Ok(Err(ServiceError::invalid("manager_id", "no such user")));
        }
    }
    Ok(Ok(()))
}

async fn hash_off_thread(password: Option<String>) -> ServiceResult<Option<String>> {
    match password {
        None => Ok(None),
        Some(pw) => tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|e| ServiceError::Store(StoreError::Storage(e.to_string())))?
            .map(Some),
    }
}

impl Service {
    /// Creates a user; `p` is the calling admin (`None` for the CLI working on the data
    /// directory, which acts as the operator).
    pub async fn create_user(
        &self,
        p: Option<&Principal>,
        new: NewUser,
        idem: Option<(Idempotency, Render<User>)>,
    ) -> ServiceResult<Written<User>> {
        if let Some(p) = p {
            require_admin(p)?;
        }
        let hash = hash_off_thread(new.password.clone()).await?;
        let caller = p.map(Principal::id).unwrap_or_default();
        self.write_idempotent(caller, idem, move |tx| {
            let id = tx.new_id();
            let user = new.into_user(id, tx.now, hash);
            if let Err(e) = check_unique(tx, &user)? {
                return Ok(Err(e));
            }
            tx.put_user(None, &user)?;
            tx.change(Entity::User, id, Op::Create, None)?;
            Ok(Ok(user))
        })
        .await
    }

    pub fn get_user(&self, p: &Principal, id: Uuid) -> ServiceResult<User> {
        match self.store.read()?.user(id)? {
            Some(u) if p.can_see_user(&u) => Ok(u),
            _ => Err(ServiceError::NotFound("user")),
        }
    }

    pub fn find_user_by_name(&self, name: &str) -> ServiceResult<Option<User>> {
        Ok(self.store.read()?.user_by_name(name)?)
    }

    /// Users the caller may see, ordered by id (creation order).
    pub fn list_users(&self, p: &Principal) -> ServiceResult<Vec<User>> {
        Ok(self
            .store
            .read()?
            .users()?
            .into_iter()
            .filter(|u| p.can_see_user(u))
            .collect())
    }

    /// Admins change anything; others may change only their own name, email and password.
    pub async fn patch_user(
        &self,
        p: &Principal,
        id: Uuid,
        pre: Precondition,
        patch: ValidUserPatch,
    ) -> ServiceResult<User> {
        let is_self = p.id() == id;
        if !p.is_admin() {
            if !is_self {
                return match self.get_user(p, id) {
                    Ok(_) => Err(ServiceError::Forbidden(
                        "only an admin may change other users".into(),
                    )),
                    Err(e) => Err(e),
                };
            }
            let privileged = patch.role.is_some()
                || patch.team.is_some()
                || patch.manager_id.is_some()
                || patch.territories.is_some()
                || patch.product_lines.is_some()
                || patch.capacity.is_some()
                || patch.active.is_some()
                || patch.senior.is_some();
            if privileged {
                return Err(ServiceError::Forbidden(
                    "only an admin may change roles, teams, territories, capacity or activity"
                        .into(),
                ));
            }
        }
        let new_hash = match &patch.password {
            Some(pw) => Some(hash_off_thread(pw.clone()).await?),
            None => None,
        };
        let caller = p.id();
        self.store
            .write(move |tx| {
                let Some(before) = tx.user(id)? else {
                    return Ok(Err(ServiceError::NotFound("user")));
                };
                if let Err(e) = pre.check(before.version) {
                    return Ok(Err(e));
                }
                let mut user = before.clone();
                patch.apply(&mut user);
                if let Some(h) = new_hash {
                    user.password_hash = h;
                }
                if caller == id
                    && (user.role != Role::Admin || !user.active)
                    && before.role == Role::Admin
                {
                    return Ok(Err(ServiceError::Conflict(
                        "you cannot demote or deactivate yourself; ask another admin".into(),
                    )));
                }
                if user == before {
                    return Ok(Ok(before));
                }
                if let Err(e) = check_unique(tx, &user)? {
                    return Ok(Err(e));
                }
                user.version += 1;
                user.updated_at = tx.now;
                tx.put_user(Some(&before), &user)?;
                tx.change(Entity::User, id, Op::Update, None)?;
                Ok(Ok(user))
            })
            .await?
    }

    /// Deletes a user who owns no leads (reassign them, or deactivate the user, first).
    pub async fn delete_user(
        &self,
        p: &Principal,
        id: Uuid,
        pre: Precondition,
    ) -> ServiceResult<()> {
        require_admin(p)?;
        let caller = p.id();
        self.store
            .write(move |tx| {
                let Some(user) = tx.user(id)? else {
                    return Ok(Err(ServiceError::NotFound("user")));
                };
                if let Err(e) = pre.check(user.version) {
                    return Ok(Err(e));
                }
                if id == caller {
                    return Ok(Err(ServiceError::Conflict(
                        "you cannot delete yourself".into(),
                    )));
                }
                if tx.owns_leads(id)? {
                    return Ok(Err(ServiceError::Conflict(
                        "this user still owns leads; reassign them or set active=false instead"
                            .into(),
                    )));
                }
                if tx.has_open_tasks(id)? {
                    return Ok(Err(ServiceError::Conflict(
                        "this user still has open tasks; reassign or finish them, or set \
                         active=false instead"
                            .into(),
                    )));
                }
                tx.delete_user(&user)?;
                tx.change(Entity::User, id, Op::Delete, None)?;
                Ok(Ok(()))
            })
            .await?
    }
}
