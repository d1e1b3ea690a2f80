//! The change feed (`GET /v1/changes`): the changelog filtered by what the caller may see.

use super::{Service, ServiceError, ServiceResult};
use crate::domain::user::Principal;
use crate::store::{ChangeEntry, Entity};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct ChangesPage {
    pub items: Vec<(u64, ChangeEntry)>,
    /// Pass as `since` to continue: the last seq examined, visible or not.
    pub next: u64,
}

/// Why `since` cannot be followed, when it is past the newest change: a seq from before a
/// restore, or from another server, would skip every change up to it without a word.
pub fn past_newest(since: u64, newest: u64) -> Option<String> {
    (since > newest).then(|| {
        format!("is past the newest change ({newest}); start again from {newest} or lower")
    })
}

/// Changelog rows examined per request at most, so a rep's feed over a busy log stays fast.
const SCAN: usize = 10_000;

impl Service {
    /// The newest change's seq: a client's `since` may not be past it.
    pub fn newest_seq(&self) -> ServiceResult<u64> {
        Ok(self.store.read()?.last_seq()?)
    }

    pub fn changes(&self, p: &Principal, since: u64, limit: usize) -> ServiceResult<ChangesPage> {
        let snap = self.store.read()?;
        if let Some(m) = past_newest(since, snap.last_seq()?) {
            return Err(ServiceError::invalid("since", m));
        }
        let rows = snap.changes_after(since, SCAN)?;
        let mut items = Vec::new();
        let mut next = since;
        // Whether the caller may see each lead now, looked up once per lead per page.
        let mut sees_lead: HashMap<Uuid, bool> = HashMap::new();
        for (seq, entry) in rows {
            if items.len() >= limit {
                break;
            }
            next = seq;
            let visible = match entry.entity {
                // A lead's rows show to whoever may see the lead now, as its reads and lists
                // do: a rep who lost a lead no longer sees its history either. An erased
                // lead's rows go by the owner and pool they record.
                e if e.visible_by_lead() => {
                    let lead = match e {
                        Entity::Lead => Some(entry.id),
                        _ => entry.lead_id,
                    };
                    match lead {
                        _ if p.is_admin() => true,
                        Some(id) => match sees_lead.get(&id) {
                            Some(sees) => *sees,
                            None => {
                                let sees = match snap.lead(id)? {
                                    Some(lead) => p.can_see_lead(&lead),
                                    None => p.can_see(entry.owner_id, entry.pool_id),
                                };
                                sees_lead.insert(id, sees);
                                sees
                            }
                        },
                        None => p.can_see(entry.owner_id, entry.pool_id),
                    }
                }
                Entity::User => p.is_admin() || entry.id == p.id(),
                Entity::Form => p.is_admin(),
                Entity::Pool => true,
                Entity::Task => p.can_see(entry.owner_id, None),
                Entity::Notification => p.is_admin() || entry.owner_id == Some(p.id()),
                // The lead's records, taken by the first arm.
                Entity::Lead | Entity::Activity | Entity::Enrollment | Entity::Mail => false,
            };
            if visible {
                items.push((seq, entry));
            }
        }
        Ok(ChangesPage { items, next })
    }
}
