//! Reports computed from a read snapshot: the speed-to-lead report (how fast the leads a caller
//! may see got their first touch, and how often first-touch SLAs were met). The arithmetic is
//! `domain::speed`'s; this module picks the leads and builds the samples.

use super::{Service, ServiceError, ServiceResult};
use crate::domain::lead::Lead;
use crate::domain::speed::{SpeedBuilder, SpeedReport, SpeedSample};
use crate::domain::time::Millis;
use crate::domain::user::Principal;
use crate::store::{Snapshot, StoreError, StoreResult};
use uuid::Uuid;

/// Leads read from the snapshot per page.
const PAGE: usize = 1024;

/// The sample one lead contributes: its channel, the first-touch deadline its SLA set (when
/// it had one), and the rep it counts for. A lead whose first deadline passed untouched counts
/// against whoever held it at that deadline, though it was reclaimed or reassigned since; a
/// lead touched in time counts for whoever touched it; any other for its owner.
fn sample(snap: &Snapshot, lead: &Lead, now: Millis) -> StoreResult<SpeedSample> {
    let sla = snap.sla_state(lead.id)?;
    let rep = match &sla {
        None => lead.owner_id,
        Some(s) => {
            let breached = match lead.first_touch_at {
                Some(t) => t > s.original_due,
                None => now > s.original_due,
            };
            if breached {
                // The clock in force began before the deadline: its owner held the lead then.
                if lead.owner_id == Some(s.owner_id) && s.assigned_at <= s.original_due {
                    Some(s.owner_id)
                } else {
                    owner_at(snap, lead.id, s.original_due)?
                }
            } else {
                s.first_touch_by.or(lead.owner_id)
            }
        }
    };
    Ok(SpeedSample {
        rep,
        channel: lead.channel.clone(),
        captured_at: lead.created_at,
        first_touch_at: lead.first_touch_at,
        sla_due: sla.map(|s| s.original_due),
    })
}

/// Who owned the lead at `at`, by its assignment events (None: it was in a pool).
fn owner_at(snap: &Snapshot, lead: Uuid, at: Millis) -> StoreResult<Option<Uuid>> {
    let mut owner = None;
    for e in snap.events_of(lead)? {
        if e.at > at {
            break;
        }
        match e.kind.as_str() {
            "assigned" => {
                owner = serde_json::from_str::<serde_json::Value>(&e.data)
                    .ok()
                    .and_then(|d| d.get("owner_id")?.as_str()?.parse().ok());
            }
            "reclaimed" | "released" | "pooled" => owner = None,
            _ => {}
        }
    }
    Ok(owner)
}

impl Service {
    /// The speed-to-lead report over leads `p` may see created in `[from, to)` (either end
    /// open when `None`). Reads one snapshot off the async workers.
    pub async fn speed_to_lead(
        &self,
        p: &Principal,
        from: Option<Millis>,
        to: Option<Millis>,
    ) -> ServiceResult<SpeedReport> {
        let me = self.clone();
        let p = p.clone();
        tokio::task::spawn_blocking(move || me.speed_to_lead_blocking(&p, from, to))
            .await
            .map_err(|e| ServiceError::Store(StoreError::Storage(e.to_string())))?
    }

    fn speed_to_lead_blocking(
        &self,
        p: &Principal,
        from: Option<Millis>,
        to: Option<Millis>,
    ) -> ServiceResult<SpeedReport> {
        let snap = self.store.read()?;
        let now = self.now();
        let mut builder = SpeedBuilder::new(now);
        let in_range = |at: Millis| from.is_none_or(|f| at >= f) && to.is_none_or(|t| at < t);
        let mut after = None;
        loop {
            let page = snap.leads_after(after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for lead in &page {
                if in_range(lead.created_at) && p.can_see_lead(lead) {
                    builder.add(&sample(&snap, lead, now)?);
                }
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok(builder.finish())
    }
}
