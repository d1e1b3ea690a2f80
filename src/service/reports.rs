//! Reports computed from a read snapshot: the speed-to-lead report (how fast the leads a caller
//! may see got their first touch, and how often first-touch SLAs were met). The arithmetic is
//! `domain::speed`'s; this module picks the leads and builds the samples.

use super::{Service, ServiceError, ServiceResult};
use crate::domain::lead::Lead;
use crate::domain::speed::{SpeedBuilder, SpeedReport, SpeedSample};
use crate::domain::time::Millis;
use crate::domain::user::Principal;
use crate::store::{Snapshot, StoreError, StoreResult};

/// Leads read from the snapshot per page.
const PAGE: usize = 1024;

/// The sample one lead contributes: who touched it first (else its owner), its channel, and
/// the first-touch deadline its SLA set, when it had one.
fn sample(snap: &Snapshot, lead: &Lead) -> StoreResult<SpeedSample> {
    let sla = snap.sla_state(lead.id)?;
    Ok(SpeedSample {
        rep: match &sla {
            Some(s) => s.first_touch_by.or(lead.owner_id),
            None => lead.owner_id,
        },
        channel: lead.channel.clone(),
        captured_at: lead.created_at,
        first_touch_at: lead.first_touch_at,
        sla_due: sla.map(|s| s.original_due),
    })
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
        let mut builder = SpeedBuilder::new(self.now());
        let in_range = |at: Millis| from.is_none_or(|f| at >= f) && to.is_none_or(|t| at < t);
        let mut after = None;
        loop {
            let page = snap.leads_after(after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for lead in &page {
                if in_range(lead.created_at) && p.can_see_lead(lead) {
                    builder.add(&sample(&snap, lead)?);
                }
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok(builder.finish())
    }
}
