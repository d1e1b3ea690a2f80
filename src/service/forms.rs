//! Web forms: admin management of form definitions, the signed render token that lets a hosted
//! page tell a bot's instant submit from a person's, and turning a public submission into a
//! capture.

use super::capture::{Capture, Via, apply_capture};
use super::leads::CreateOutcome;
use super::{Precondition, Service, ServiceError, ServiceResult};
use crate::domain::channel::is_own_site;
use crate::domain::form::{Form, FormInput, Submission};
use crate::domain::time::Millis;
use crate::domain::user::Principal;
use crate::store::{Entity, Op};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;

/// What a render token says about the time since its page was rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillTime {
    /// No token (a form posted from another site or by a script): nothing to judge.
    Unknown,
    /// Rendered this many milliseconds ago.
    Elapsed(i64),
    /// Not a token we made.
    Forged,
}

fn admin_only(p: &Principal) -> ServiceResult<()> {
    if p.is_admin() {
        Ok(())
    } else {
        Err(ServiceError::Forbidden("only admins manage forms".into()))
    }
}

/// A short random public key for a form.
fn fresh_key() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = Uuid::now_v7().as_u128().to_le_bytes()[..8]
            .try_into()
            .unwrap_or([7; 8]);
    }
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

impl Service {
    fn token_mac(&self, form_key: &str, rendered_at: Millis) -> ServiceResult<String> {
        let secret = match self.form_secret.get() {
            Some(s) => s,
            None => {
                let s = self.store.read()?.secret("form_token")?;
                self.form_secret.get_or_init(|| s)
            }
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|e| ServiceError::Store(crate::store::StoreError::Storage(e.to_string())))?;
        mac.update(format!("{form_key}.{rendered_at}").as_bytes());
        Ok(hex::encode(&mac.finalize().into_bytes()[..16]))
    }

    /// A token the hosted page carries: when it was rendered, signed for this form.
    pub fn render_token(&self, form_key: &str) -> ServiceResult<String> {
        let now = self.now();
        Ok(format!("{now}.{}", self.token_mac(form_key, now)?))
    }

    /// How long ago the page carrying `token` was rendered.
    pub fn fill_time(&self, form_key: &str, token: Option<&str>) -> ServiceResult<FillTime> {
        let Some(token) = token else {
            return Ok(FillTime::Unknown);
        };
        let Some((at, mac)) = token.split_once('.') else {
            return Ok(FillTime::Forged);
        };
        let Ok(at) = at.parse::<Millis>() else {
            return Ok(FillTime::Forged);
        };
        if self.token_mac(form_key, at)? != mac {
            return Ok(FillTime::Forged);
        }
        Ok(FillTime::Elapsed(self.now() - at))
    }

    pub async fn create_form(&self, p: &Principal, input: FormInput) -> ServiceResult<Form> {
        admin_only(p)?;
        let key = fresh_key();
        self.store
            .write(move |tx| {
                let id = tx.new_id();
                let form = match input.apply(None, id, &key, tx.now) {
                    Ok(f) => f,
                    Err(errors) => return Ok(Err(ServiceError::Invalid(errors))),
                };
                if tx.form_id_by_key(&form.key)?.is_some() {
                    return Ok(Err(ServiceError::Conflict(format!(
                        "another form already has the key {}",
                        form.key
                    ))));
                }
                tx.put_form(None, &form)?;
                tx.change(Entity::Form, form.id, Op::Create, None)?;
                Ok(Ok(form))
            })
            .await?
    }

    pub fn forms(&self, p: &Principal) -> ServiceResult<Vec<Form>> {
        admin_only(p)?;
        Ok(self.store.read()?.forms()?)
    }

    pub fn form(&self, p: &Principal, id: Uuid) -> ServiceResult<Form> {
        admin_only(p)?;
        self.store
            .read()?
            .form(id)?
            .ok_or(ServiceError::NotFound("form"))
    }

    /// The form behind a public key.
    pub fn public_form(&self, key: &str) -> ServiceResult<Form> {
        self.store
            .read()?
            .form_by_key(key)?
            .ok_or(ServiceError::NotFound("form"))
    }

    pub async fn patch_form(
        &self,
        p: &Principal,
        id: Uuid,
        pre: Precondition,
        patch: FormInput,
    ) -> ServiceResult<Form> {
        admin_only(p)?;
        self.store
            .write(move |tx| {
                let Some(before) = tx.form(id)? else {
                    return Ok(Err(ServiceError::NotFound("form")));
                };
                if let Err(e) = pre.check(before.version) {
                    return Ok(Err(e));
                }
                let form = match patch.apply(Some(&before), id, &before.key, tx.now) {
                    Ok(f) => f,
                    Err(errors) => return Ok(Err(ServiceError::Invalid(errors))),
                };
                if form.key != before.key && tx.form_id_by_key(&form.key)?.is_some() {
                    return Ok(Err(ServiceError::Conflict(format!(
                        "another form already has the key {}",
                        form.key
                    ))));
                }
                tx.put_form(Some(&before), &form)?;
                tx.change(Entity::Form, id, Op::Update, None)?;
                Ok(Ok(form))
            })
            .await?
    }

    /// Deletes a form definition; the leads and activities it captured stay.
    pub async fn delete_form(
        &self,
        p: &Principal,
        id: Uuid,
        pre: Precondition,
    ) -> ServiceResult<()> {
        admin_only(p)?;
        self.store
            .write(move |tx| {
                let Some(form) = tx.form(id)? else {
                    return Ok(Err(ServiceError::NotFound("form")));
                };
                if let Err(e) = pre.check(form.version) {
                    return Ok(Err(e));
                }
                tx.delete_form(&form)?;
                tx.change(Entity::Form, id, Op::Delete, None)?;
                Ok(Ok(()))
            })
            .await?
    }

    /// Captures a valid public submission of `form` as a lead (created or merged), with the
    /// submitted values on its form activity and the visitor's page views stitched to it.
    pub async fn submit_form(&self, form: &Form, sub: Submission) -> ServiceResult<CreateOutcome> {
        let Submission {
            lead,
            raw,
            visitor_id,
            page,
            referrer,
            ..
        } = sub;
        let mut new = lead.validate(&self.rules).map_err(ServiceError::Invalid)?;
        let mut cap = Capture::new(Via::Form, &form.activity_kind, raw);
        cap.properties.insert("form_id".into(), json!(form.id));
        cap.properties.insert("form_key".into(), json!(form.key));
        cap.properties.insert("form_name".into(), json!(form.name));
        if let Some(page) = &page {
            cap.properties.insert("page".into(), json!(page));
        }
        cap.visitor_id = visitor_id;
        match referrer {
            // Kept on the capture, but no signal of the channel.
            Some(r) if is_own_site(&r, page.as_deref(), &form.allowed_origins) => {
                cap.properties.insert("referrer".into(), json!(r));
            }
            r => cap.referrer = r,
        }
        self.prepare_capture(&mut new, &mut cap);
        let system = Principal::system();
        let plugins = self.plugins.clone();
        self.store
            .write(move |tx| apply_capture(tx, &plugins, &system, new, cap))
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_keys_are_short_and_url_safe() {
        let k = fresh_key();
        assert_eq!(k.len(), 8);
        assert!(
            k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(fresh_key(), k);
    }
}
