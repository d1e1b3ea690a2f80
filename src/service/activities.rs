//! Activities: recording what happened with a lead (creating the lead when an activity names
//! an unknown email), listing them, and the timeline of activities and system events.

use super::leads::apply_create;
use super::{Idempotency, Render, Service, ServiceError, ServiceResult, Written};
use crate::domain::activity::{Activity, LeadRef, NewActivity, TOUCH_KINDS, TimelineItem};
use crate::domain::email::Email;
use crate::domain::lead::{Flags, NewLead};
use crate::domain::user::Principal;
use crate::store::query;
use crate::store::{Entity, Op};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct ActivityCreated {
    pub activity: Activity,
    /// Whether the lead was created for this activity (it named an unknown email).
    pub lead_created: bool,
}

#[derive(Debug, Clone)]
pub struct TimelinePage {
    pub items: Vec<(i64, Uuid, TimelineItem)>,
    pub next: Option<(i64, u128)>,
}

/// Most timeline entries gathered per lead before paging; older ones are reached by paging
/// activities.
const TIMELINE_WINDOW: usize = 10_000;

/// How far ahead of the server clock an activity may be dated (clock skew, time zones).
const MAX_FUTURE_MS: i64 = 24 * 3600 * 1000;

impl Service {
    pub async fn create_activity(
        &self,
        p: &Principal,
        new: NewActivity,
        idem: Option<(Idempotency, Render<ActivityCreated>)>,
    ) -> ServiceResult<Written<ActivityCreated>> {
        // An activity is something that happened: one dated far ahead would stand as the
        // lead's latest activity until then and hold off the inactivity decay.
        if new
            .occurred_at
            .is_some_and(|at| at > self.now() + MAX_FUTURE_MS)
        {
            return Err(ServiceError::invalid(
                "occurred_at",
                "may not be more than a day in the future",
            ));
        }
        let principal = p.clone();
        // A lead created for this activity gets the same flags as any other capture.
        let personal_email = match &new.lead {
            LeadRef::Email(e) => Email::parse(e).is_ok_and(|e| self.rules.is_personal(&e)),
            LeadRef::Id(_) => false,
        };
        let plugins = self.plugins.clone();
        self.write_idempotent(p.id(), idem, move |tx| {
            let p = &principal;
            // A lead made here is routed below; its create row waits to show where it went.
            tx.hold_changes();
            let (mut lead, lead_created) = match &new.lead {
                LeadRef::Id(id) => match tx.lead(*id)? {
                    Some(l) if p.can_see_lead(&l) => (l, false),
                    _ => return Ok(Err(ServiceError::NotFound("lead"))),
                },
                LeadRef::Email(email) => match tx.lead_id_by_email(email)? {
                    Some(id) => match tx.lead(id)? {
                        Some(l) if p.can_see_lead(&l) => (l, false),
                        _ => return Ok(Err(ServiceError::NotFound("lead"))),
                    },
                    None => {
                        let fresh = NewLead {
                            email: Some(email.clone()),
                            flags: Flags {
                                personal_email,
                                ..Flags::default()
                            },
                            ..Default::default()
                        };
                        match apply_create(tx, p, fresh, false)? {
                            Ok(o) => (o.lead, true),
                            Err(e) => return Ok(Err(e)),
                        }
                    }
                },
            };
            let id = tx.new_id();
            let activity = new.into_activity(id, lead.id, Some(p.id()), tx.now);
            tx.put_activity(&activity)?;
            tx.change(Entity::Activity, id, Op::Create, Some(&lead))?;
            let before = lead.clone();
            if lead
                .last_activity_at
                .is_none_or(|t| t < activity.occurred_at)
            {
                lead.last_activity_at = Some(activity.occurred_at);
            }
            if TOUCH_KINDS.contains(&activity.kind.as_str()) {
                super::work::touch(tx, &plugins, &mut lead, p.id(), &activity.kind)?;
            }
            super::scoring::settle_change(tx, &plugins, &mut lead)?;
            if lead_created {
                super::work::place_new(tx, &plugins, &mut lead, p.actor())?;
                super::nurture::on_event(
                    tx,
                    &plugins,
                    &mut lead,
                    crate::script::nurture::LeadEventIn::of("lead.created"),
                )?;
            }
            super::nurture::on_activity(tx, &plugins, &mut lead, &activity)?;
            if lead != before {
                lead.version += 1;
                lead.updated_at = tx.now;
                tx.put_lead(Some(&before), &lead)?;
                tx.change(Entity::Lead, lead.id, Op::Update, Some(&lead))?;
            }
            tx.release_changes(Some(&lead))?;
            Ok(Ok(ActivityCreated {
                activity,
                lead_created,
            }))
        })
        .await
    }

    /// A page of a lead's activities, newest first.
    pub fn list_activities(
        &self,
        p: &Principal,
        lead: Uuid,
        after: Option<(i64, u128)>,
        limit: usize,
    ) -> ServiceResult<query::ActivityPage> {
        let snap = self.store.read()?;
        match snap.lead(lead)? {
            Some(l) if p.can_see_lead(&l) => {}
            _ => return Err(ServiceError::NotFound("lead")),
        }
        Ok(query::activities_page(&snap, lead, after, limit)?)
    }

    /// Activities and system events, newest first, including the lead's creation.
    pub fn timeline(
        &self,
        p: &Principal,
        lead_id: Uuid,
        after: Option<(i64, u128)>,
        limit: usize,
    ) -> ServiceResult<TimelinePage> {
        let snap = self.store.read()?;
        let lead = match snap.lead(lead_id)? {
            Some(l) if p.can_see_lead(&l) => l,
            _ => return Err(ServiceError::NotFound("lead")),
        };
        let (activities, _) = query::activities_page(&snap, lead_id, None, TIMELINE_WINDOW)?;
        let mut all: Vec<(i64, Uuid, TimelineItem)> = activities
            .iter()
            .map(|a| (a.occurred_at, a.id, TimelineItem::from_activity(a)))
            .collect();
        all.extend(
            snap.events_of(lead_id)?
                .iter()
                .map(|e| (e.at, e.id, TimelineItem::from_event(e))),
        );
        all.push((
            lead.created_at,
            lead.id,
            TimelineItem {
                item_type: "event",
                id: lead.id,
                kind: "created".into(),
                at: crate::domain::time::to_rfc3339(lead.created_at),
                actor_id: None,
                text: None,
                data: serde_json::Map::new(),
            },
        ));
        all.sort_by_key(|(t, id, _)| std::cmp::Reverse((*t, *id)));
        let mut items: Vec<_> = all
            .into_iter()
            .filter(|(t, id, _)| after.is_none_or(|(at, aid)| (*t, id.as_u128()) < (at, aid)))
            .take(limit + 1)
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|(t, id, _)| (*t, id.as_u128()))
        } else {
            None
        };
        Ok(TimelinePage { items, next })
    }
}
