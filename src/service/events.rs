//! Live events (`GET /v1/events`): the change feed as named events, with the visibility rule
//! of `/v1/changes` (a notification is seen by its recipient and admins), read from the
//! changelog after a seq so a client can resume where it stopped.

use super::{Service, ServiceResult};
use crate::domain::time::to_rfc3339;
use crate::domain::user::Principal;
use crate::domain::webhook::{change_event, notification_data};
use crate::store::Entity;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    /// The changelog seq: the SSE `id`, which `Last-Event-ID` resumes after.
    pub seq: u64,
    /// The event name, as webhooks name it (`lead.created`, `lead.assigned` …).
    pub event: String,
    pub data: Value,
}

/// A serde unit variant's name (`Entity::Lead` → `lead`).
fn variant_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::from("unknown"),
    }
}

impl Service {
    /// The newest committed seq: where a stream without `Last-Event-ID` starts.
    pub fn head_seq(&self) -> ServiceResult<u64> {
        Ok(*self.store.committed_seq().borrow())
    }

    /// Cancelled when the server stops.
    pub fn events_closing(&self) -> CancellationToken {
        self.hooks.closing.clone()
    }

    /// Up to `limit` events the caller may see after `since`, and the seq to continue after
    /// (the last one examined, visible or not). A notification erased since is left out.
    pub fn live_events(
        &self,
        p: &Principal,
        since: u64,
        limit: usize,
    ) -> ServiceResult<(Vec<LiveEvent>, u64)> {
        let page = self.changes(p, since, limit)?;
        let snap = self.store.read()?;
        let mut out = Vec::with_capacity(page.items.len());
        for (seq, entry) in page.items {
            let entity = variant_name(&entry.entity);
            let op = variant_name(&entry.op);
            let mut data = json!({
                "seq": seq,
                "entity": entity,
                "id": entry.id,
                "op": op,
                "at": to_rfc3339(entry.at),
                "lead_id": entry.lead_id,
            });
            let notification = match entry.entity {
                Entity::Notification => snap.notification_by_id(entry.id)?,
                _ => None,
            };
            let event = match notification {
                Some(n) => {
                    data["data"] = notification_data(&n);
                    n.kind
                }
                // Any other change, and a notification gone since (its lead was erased): the
                // change itself, so a replay holds every seq `/v1/changes` lists.
                None => {
                    data["data"] = json!({"owner_id": entry.owner_id, "pool_id": entry.pool_id});
                    change_event(&entity, &op)
                }
            };
            data["event"] = json!(event);
            out.push(LiveEvent { seq, event, data });
        }
        Ok((out, page.next))
    }
}
