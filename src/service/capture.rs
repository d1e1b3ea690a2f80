//! Capture: a lead arriving from any channel (API, web form, import) is normalized, given a
//! channel, deduplicated, recorded with the raw values it arrived with as its activity, and
//! stitched to the anonymous visitor it was; page views from the tracker; lead-to-lead merge.

use super::leads::{BatchItem, CreateOutcome, apply_create_or_merge};
use super::scoring::settle_change;
use super::{Service, ServiceError, ServiceResult};
use crate::domain::FieldError;
use crate::domain::activity::Activity;
use crate::domain::channel::channel_for;
use crate::domain::form::valid_visitor_id;
use crate::domain::lead::{Lead, LeadInput, NewLead, NormalizeRules};
use crate::domain::sequence::EnrollmentStatus;
use crate::domain::user::Principal;
use crate::domain::visitor::{MAX_VIEWS_PER_VISITOR, PageView, Visitor, VisitorView};
use crate::script::Plugins;
use crate::script::nurture::LeadEventIn;
use crate::store::{Entity, Op, StoreError, Tx};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The way a lead arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Api,
    Form,
    Import,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::Form => "form",
            Via::Import => "import",
        }
    }
}

/// Everything about a capture besides the lead fields.
#[derive(Debug, Clone)]
pub struct Capture {
    pub via: Via,
    /// The activity the capture records (`capture`, `form_submit`, `import`, …).
    pub activity_kind: String,
    /// The values exactly as submitted.
    pub raw: Map<String, Value>,
    /// Free text for the activity (an import's notes column).
    pub text: Option<String>,
    /// More properties for the activity (form key, page, file and line …).
    pub properties: Map<String, Value>,
    pub visitor_id: Option<String>,
    /// The referrer that brought the visitor, for the channel.
    pub referrer: Option<String>,
    /// An import row's `id`: the lead it was exported from, if that lead is here.
    pub exported_id: Option<Uuid>,
    /// The activity's properties as JSON text, rendered by [`Capture::seal`] before the
    /// capture reaches the writer, so the one writer thread does not spend its time on it.
    sealed: Option<String>,
}

impl Capture {
    pub fn new(via: Via, activity_kind: &str, raw: Map<String, Value>) -> Capture {
        Capture {
            via,
            activity_kind: activity_kind.to_owned(),
            raw,
            text: None,
            properties: Map::new(),
            visitor_id: None,
            referrer: None,
            exported_id: None,
            sealed: None,
        }
    }

    /// Renders the activity's properties (`properties` with `via`, `raw` and `referrer`) now;
    /// only `merged` is left for the writer, which alone knows it. Takes `raw` and
    /// `properties`, so sealing again keeps the first rendering.
    pub fn seal(&mut self) {
        if self.sealed.is_none() {
            self.sealed = Some(self.render_properties());
        }
    }

    fn render_properties(&mut self) -> String {
        let mut properties = std::mem::take(&mut self.properties);
        properties.insert("via".into(), json!(self.via.as_str()));
        properties.insert("raw".into(), Value::Object(std::mem::take(&mut self.raw)));
        if let Some(r) = &self.referrer {
            properties.insert("referrer".into(), json!(r));
        }
        Value::Object(properties).to_string()
    }

    /// The activity's properties as JSON text, with `merged` when the capture merged.
    fn activity_properties(&mut self, merged: bool) -> String {
        let mut text = match self.sealed.take() {
            Some(text) => text,
            None => self.render_properties(),
        };
        if merged {
            // The sealed text is a JSON object without a `merged` member.
            text.pop();
            if text.len() > 1 {
                text.push(',');
            }
            text.push_str("\"merged\":true}");
        }
        text
    }
}

/// Reads an API create: the lead, and the capture that records what was sent.
pub fn api_capture(
    input: LeadInput,
    rules: &NormalizeRules,
) -> Result<(NewLead, Capture), Vec<FieldError>> {
    let raw = input.raw_values();
    let (new, visitor_id) = validate_with_visitor(input, |i| i.validate(rules))?;
    let mut cap = Capture::new(Via::Api, "capture", raw);
    cap.visitor_id = visitor_id;
    Ok((new, cap))
}

/// Validates `input` with `validate`, and its tracker `visitor_id` (set aside for stitching)
/// besides, reporting the errors of both together.
pub(super) fn validate_with_visitor(
    mut input: LeadInput,
    validate: impl FnOnce(LeadInput) -> Result<NewLead, Vec<FieldError>>,
) -> Result<(NewLead, Option<String>), Vec<FieldError>> {
    let visitor_id = input.visitor_id.take();
    let bad_visitor = visitor_id.as_deref().is_some_and(|v| !valid_visitor_id(v));
    match validate(input) {
        Ok(new) if !bad_visitor => Ok((new, visitor_id)),
        Ok(_) => Err(vec![FieldError::new("visitor_id", VISITOR_ID_RULE)]),
        Err(mut errors) => {
            if bad_visitor {
                errors.push(FieldError::new("visitor_id", VISITOR_ID_RULE));
            }
            Err(errors)
        }
    }
}

const VISITOR_ID_RULE: &str = "must be 8 to 64 of a-z, A-Z, 0-9, - and _ (the id /t.js keeps)";

/// Derives the channel a client did not give. A form always has one ("direct" without any
/// signal); an API or import capture only when it carries UTM values or a referrer, since a
/// lead typed in by a rep came through no marketing channel at all.
pub fn derive_channel(rules: &NormalizeRules, new: &mut NewLead, cap: &Capture) {
    if new.channel.is_some() {
        return;
    }
    let signal = new.utm.source.is_some() || new.utm.medium.is_some() || cap.referrer.is_some();
    if cap.via == Via::Form || signal {
        new.channel = channel_for(&rules.channels, &new.utm, cap.referrer.as_deref());
    } else if let Some(source) = &new.source {
        new.channel = channel_of_source(source).map(str::to_owned);
    }
}

/// The channel a lead's own `source` names when nothing else tells: DESIGN's source rules speak
/// of partners and referrals, and of events and trade shows, which a rep types in as a source.
fn channel_of_source(source: &str) -> Option<&'static str> {
    let s = source.trim().to_lowercase();
    match s.as_str() {
        "partner" | "referral" | "referred" | "合作伙伴" | "渠道" | "转介绍" => {
            Some("referral")
        }
        "event" | "expo" | "trade show" | "tradeshow" | "exhibition" | "展会" | "会展" | "活动" => {
            Some("event")
        }
        _ => None,
    }
}

/// Creates or merges the lead, then records the capture activity on it and stitches its
/// visitor. Runs in the writer. Its changelog rows show the lead where it ends up: a new
/// lead's create is seen by the rep or pool that routing gives it.
pub(crate) fn apply_capture(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    p: &Principal,
    new: NewLead,
    cap: Capture,
) -> Result<ServiceResult<CreateOutcome>, StoreError> {
    tx.hold_changes();
    let outcome = capture(tx, plugins, p, new, cap);
    match &outcome {
        Ok(Ok(o)) => tx.release_changes(Some(&o.lead))?,
        _ => tx.release_changes(None)?,
    }
    outcome
}

fn capture(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    p: &Principal,
    new: NewLead,
    mut cap: Capture,
) -> Result<ServiceResult<CreateOutcome>, StoreError> {
    let campaign_id = new.campaign_id;
    let import = cap.via == Via::Import;
    // A row without email or phone is known again by the id it was exported with, else by its
    // content, so importing the same file (or an export of this server) again creates nothing.
    let row_key = (import && new.email.is_none() && new.phone.is_none()).then(|| row_key(&new));
    let exported = match (&row_key, cap.exported_id) {
        (Some(_), Some(id)) => match tx.lead(id)? {
            Some(lead) => Some(lead),
            // Merged away since the export: the survivor is that person now.
            None => match tx.alt_key(&format!("m:{id}"))? {
                Some(survivor) => tx.lead(survivor)?,
                None => None,
            },
        },
        _ => None,
    };
    let known = match (exported, &row_key) {
        (Some(lead), _) => Some((lead, "id")),
        (None, Some(key)) => match tx.alt_key(key)? {
            Some(id) => tx.lead(id)?.map(|lead| (lead, "content")),
            None => None,
        },
        (None, None) => None,
    };
    if known.as_ref().is_some_and(|(l, _)| !p.can_see_lead(l)) {
        return Ok(Err(ServiceError::Conflict(ROW_OF_SOMEONE_ELSE.into())));
    }
    // A known lead takes what the row offers as a duplicate by email would: blanks filled,
    // differing values recorded once, nothing overwritten.
    let known = known.map(|(lead, reason)| (lead.id, reason));
    let mut outcome = match apply_create_or_merge(tx, p, new, import, known)? {
        Ok(o) => o,
        Err(e) => return Ok(Err(e)),
    };
    if !outcome.merged
        && let Some(key) = &row_key
    {
        tx.put_alt_key(outcome.lead.id, key)?;
    }
    // An imported note is kept once per lead: a row that matches its lead and changes nothing
    // still adds a note the lead does not have, and importing the file again adds none.
    let new_note = match (&cap.text, import) {
        (Some(text), true) if outcome.merged => {
            !tx.has_activity_text(outcome.lead.id, &cap.activity_kind, text)?
        }
        _ => false,
    };
    if import && !outcome.changed && !new_note && !outcome.conflicts_recorded {
        return Ok(Ok(outcome));
    }
    let properties = cap.activity_properties(outcome.merged);
    let activity = Activity {
        id: tx.new_id(),
        lead_id: outcome.lead.id,
        kind: cap.activity_kind,
        occurred_at: tx.now,
        recorded_at: tx.now,
        actor_id: p.actor(),
        campaign_id,
        text: cap.text,
        properties,
    };
    tx.put_activity(&activity)?;
    tx.change(
        Entity::Activity,
        activity.id,
        Op::Create,
        Some(&outcome.lead),
    )?;
    let before = outcome.lead.clone();
    if cap.via == Via::Form {
        outcome.lead.last_activity_at = Some(tx.now);
    }
    if let Some(vid) = &cap.visitor_id {
        stitch_visitor(tx, plugins, &mut outcome.lead, vid)?;
    }
    settle_change(tx, plugins, &mut outcome.lead)?;
    if !outcome.merged {
        super::work::place_new(tx, plugins, &mut outcome.lead, p.actor())?;
        super::nurture::on_event(
            tx,
            plugins,
            &mut outcome.lead,
            LeadEventIn::of("lead.created"),
        )?;
    } else {
        super::nurture::on_activity(tx, plugins, &mut outcome.lead, &activity)?;
    }
    if outcome.lead != before {
        if outcome.merged && outcome.changed {
            // The merge already made this write's new version and its change entry.
            tx.put_lead(Some(&before), &outcome.lead)?;
        } else if outcome.merged {
            outcome.lead.version += 1;
            outcome.lead.updated_at = tx.now;
            outcome.changed = true;
            tx.put_lead(Some(&before), &outcome.lead)?;
            tx.change(
                Entity::Lead,
                outcome.lead.id,
                Op::Update,
                Some(&outcome.lead),
            )?;
        } else {
            // Still the lead this job created: one create to followers, version 1.
            tx.put_lead(Some(&before), &outcome.lead)?;
        }
    }
    // Counted as merged, not unchanged: the lead gained a note or a record of what differed.
    outcome.changed |= new_note || outcome.conflicts_recorded;
    Ok(Ok(outcome))
}

/// Why an import row that is (or matches) a lead its importer cannot see is rejected.
pub(crate) const ROW_OF_SOMEONE_ELSE: &str =
    "this row matches a lead that belongs to someone else; ask its owner or a manager";

/// The content key of an imported row without email or phone (see `tables::ALT_KEYS`).
pub(crate) fn row_key(new: &NewLead) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for v in [
        &new.name,
        &new.company,
        &new.title,
        &new.industry,
        &new.region,
        &new.country,
        &new.source,
    ] {
        h.update(v.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
    }
    h.update(
        serde_json::Value::Object(new.fields.clone())
            .to_string()
            .as_bytes(),
    );
    format!("r:{}", hex::encode(&h.finalize()[..16]))
}

/// The alt key saying that an import already recorded these differing values on `lead` (in
/// a `merged` event), so a re-import does not record them again.
pub(crate) fn conflicts_key(lead: Uuid, conflicts: &[crate::domain::lead::Conflict]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(lead.as_bytes());
    for c in conflicts {
        for part in [&c.field, &c.offered] {
            h.update(part.as_bytes());
            h.update([0]);
        }
    }
    format!("c:{}", hex::encode(&h.finalize()[..16]))
}

/// Links `visitor` to `lead` and moves the visitor's anonymous page views onto the lead as
/// `page_view` activities, in the order they happened. A visitor already linked to another
/// lead (a shared computer) stays with that lead.
fn stitch_visitor(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
    vid: &str,
) -> Result<(), StoreError> {
    let mut visitor = match tx.visitor(vid)? {
        Some(v) if v.lead_id.is_some_and(|l| l != lead.id) => return Ok(()),
        Some(v) => v,
        None => Visitor {
            id: vid.to_owned(),
            first_seen: tx.now,
            last_seen: tx.now,
            lead_id: None,
            views: 0,
        },
    };
    let views = tx.take_page_views(vid)?;
    for view in &views {
        record_page_view(tx, plugins, lead, view)?;
    }
    visitor.lead_id = Some(lead.id);
    visitor.views = 0;
    tx.put_visitor(&visitor)?;
    tx.link_visitor(lead.id, vid)?;
    Ok(())
}

/// A page view of a known lead becomes its activity.
fn record_page_view(
    tx: &mut Tx<'_>,
    plugins: &Plugins,
    lead: &mut Lead,
    view: &PageView,
) -> Result<(), StoreError> {
    let activity = Activity {
        id: tx.new_id(),
        lead_id: lead.id,
        kind: "page_view".into(),
        occurred_at: view.at,
        recorded_at: tx.now,
        actor_id: None,
        campaign_id: None,
        text: view.title.clone(),
        properties: Value::Object(view.properties()).to_string(),
    };
    tx.put_activity(&activity)?;
    tx.change(Entity::Activity, activity.id, Op::Create, Some(lead))?;
    if lead.last_activity_at.is_none_or(|t| t < view.at) {
        lead.last_activity_at = Some(view.at);
    }
    super::nurture::on_activity(tx, plugins, lead, &activity)
}

/// A likely-duplicate group as listed by `GET /v1/leads/duplicates`.
#[derive(Debug, Clone)]
pub struct DuplicateGroup {
    pub reason: &'static str,
    pub leads: Vec<Lead>,
}

#[derive(Debug, Clone)]
pub struct DuplicatesPage {
    pub groups: Vec<DuplicateGroup>,
    pub next: Option<String>,
}

impl Service {
    /// What happens to a capture before it reaches the writer: the `enrich` hook fills or
    /// fixes fields, the built-in rules pick a channel, then the `classify` hook may pick
    /// another.
    /// The channel the configured UTM/referrer rules give a capture (no hooks).
    pub fn built_in_channel(&self, new: &mut NewLead, cap: &Capture) {
        derive_channel(&self.rules, new, cap);
    }

    /// What a capture needs before the writer, done on the caller's thread: enrichment, the
    /// channel, and the activity's properties rendered.
    pub(crate) fn prepare_capture(&self, new: &mut NewLead, cap: &mut Capture) {
        let loaded = self.plugins.current();
        let now = self.now();
        self.plugins.enrich(&loaded, new, now);
        derive_channel(&self.rules, new, cap);
        if loaded.script_for(crate::script::Hook::Classify).is_some() {
            let lead = new.clone().into_lead(Uuid::nil(), now);
            if let Some(channel) = self.plugins.classify(&loaded, &lead, now) {
                new.channel = Some(channel);
            }
        }
        cap.seal();
    }
}

/// Index rows one duplicates page examines at most.
const DUPLICATE_SCAN: usize = 20_000;

impl Service {
    /// Captures one lead (created, or merged into the lead with its email or phone).
    pub async fn create_lead(
        &self,
        p: &Principal,
        mut new: NewLead,
        mut cap: Capture,
        idem: Option<(super::Idempotency, super::Render<CreateOutcome>)>,
    ) -> ServiceResult<super::Written<CreateOutcome>> {
        self.prepare_capture(&mut new, &mut cap);
        let principal = p.clone();
        let plugins = self.plugins.clone();
        self.write_idempotent(p.id(), idem, move |tx| {
            apply_capture(tx, &plugins, &principal, new, cap)
        })
        .await
    }

    /// Captures every valid item in one transaction, in order (so items dedupe against each
    /// other too); invalid items are reported and skipped.
    pub async fn create_leads_batch(
        &self,
        p: &Principal,
        mut items: Vec<Result<(NewLead, Capture), Vec<FieldError>>>,
        idem: Option<(super::Idempotency, super::Render<Vec<BatchItem>>)>,
    ) -> ServiceResult<super::Written<Vec<BatchItem>>> {
        let principal = p.clone();
        for (new, cap) in items.iter_mut().flatten() {
            self.prepare_capture(new, cap);
        }
        let plugins = self.plugins.clone();
        self.write_idempotent(p.id(), idem, move |tx| {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(match item {
                    Err(errors) => BatchItem::Failed(ServiceError::Invalid(errors)),
                    Ok((new, cap)) => match apply_capture(tx, &plugins, &principal, new, cap)? {
                        Ok(o) => BatchItem::Done(Box::new(o)),
                        Err(e) => BatchItem::Failed(e),
                    },
                });
            }
            Ok(Ok(out))
        })
        .await
    }

    /// Records a tracker page view: on the lead if the visitor became one, else kept with the
    /// visitor (bounded).
    pub async fn track_page_view(&self, visitor_id: String, view: PageView) -> ServiceResult<()> {
        let plugins = self.plugins.clone();
        self.store
            .write(move |tx| {
                let mut visitor = tx.visitor(&visitor_id)?.unwrap_or(Visitor {
                    id: visitor_id.clone(),
                    first_seen: view.at,
                    last_seen: view.at,
                    lead_id: None,
                    views: 0,
                });
                visitor.last_seen = view.at;
                match visitor.lead_id.map(|id| tx.lead(id)).transpose()?.flatten() {
                    Some(mut lead) => {
                        let before = lead.clone();
                        record_page_view(tx, &plugins, &mut lead, &view)?;
                        settle_change(tx, &plugins, &mut lead)?;
                        if lead != before {
                            lead.version += 1;
                            lead.updated_at = tx.now;
                            tx.put_lead(Some(&before), &lead)?;
                            tx.change(Entity::Lead, lead.id, Op::Update, Some(&lead))?;
                        }
                    }
                    None => {
                        visitor.lead_id = None;
                        visitor.views =
                            tx.add_page_view(&visitor_id, &view, MAX_VIEWS_PER_VISITOR)?;
                    }
                }
                tx.put_visitor(&visitor)?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// A visitor and their anonymous page views. Admins see any; others only a visitor who
    /// became a lead they can see.
    pub fn visitor(&self, p: &Principal, id: &str) -> ServiceResult<VisitorView> {
        let snap = self.store.read()?;
        let Some(v) = snap.visitor(id)? else {
            return Err(ServiceError::NotFound("visitor"));
        };
        let visible = p.is_admin()
            || match v.lead_id {
                Some(l) => snap.lead(l)?.is_some_and(|l| p.can_see_lead(&l)),
                None => false,
            };
        if !visible {
            return Err(ServiceError::NotFound("visitor"));
        }
        Ok(VisitorView::new(&v, &snap.page_views(id)?))
    }

    /// Where a merged-away lead went, if it was merged (and the survivor is visible).
    pub fn merged_into(&self, p: &Principal, id: Uuid) -> ServiceResult<Option<Uuid>> {
        let snap = self.store.read()?;
        let Some(survivor) = snap.alt_key(&format!("m:{id}"))? else {
            return Ok(None);
        };
        Ok(snap
            .lead(survivor)?
            .filter(|l| p.can_see_lead(l))
            .map(|l| l.id))
    }

    /// Merges lead `other` into `survivor`: activities, events, visitors and dedupe keys move,
    /// blank fields are filled from `other`, `other` is removed and its id answers with a
    /// pointer to the survivor from then on.
    pub async fn merge_leads(
        &self,
        p: &Principal,
        survivor: Uuid,
        other: Uuid,
        pre: super::Precondition,
    ) -> ServiceResult<Lead> {
        if survivor == other {
            return Err(ServiceError::invalid(
                "other_id",
                "a lead cannot merge with itself",
            ));
        }
        let principal = p.clone();
        let plugins = self.plugins.clone();
        self.store
            .write(move |tx| {
                let p = &principal;
                let (Some(mut lead), Some(gone)) = (tx.lead(survivor)?, tx.lead(other)?) else {
                    return Ok(Err(ServiceError::NotFound("lead")));
                };
                if !p.can_see_lead(&lead) || !p.can_see_lead(&gone) {
                    return Ok(Err(ServiceError::NotFound("lead")));
                }
                if !p.can_change_lead(&lead) || !p.can_change_lead(&gone) {
                    return Ok(Err(super::leads::not_yours()));
                }
                if let Err(e) = pre.check(lead.version) {
                    return Ok(Err(e));
                }
                let before = lead.clone();
                let moved = tx.move_activities(other, survivor)?;
                tx.move_alt_keys(other, survivor)?;
                // A merge is not an erasure: the person's tasks, notifications, sequences and
                // mail (whose unsubscribe links must keep working) go to the survivor. Where
                // both are in one sequence, the survivor's enrollment goes on alone.
                for e in tx.enrollments_of(other)? {
                    if e.status.is_open() && tx.open_enrollment(survivor, &e.sequence)?.is_some() {
                        super::nurture::finish(
                            tx,
                            e,
                            EnrollmentStatus::Exited,
                            Some("merged into another lead"),
                        )?;
                    }
                }
                let (enrollments, mails) = tx.move_lead_nurture(other, survivor)?;
                let tasks = tx.move_lead_work(other, survivor)?;
                tx.retire_merged_lead(&gone, survivor)?;
                let report = lead.absorb(NewLead::from_lead(&gone));
                // Keys the survivor could not take over still find it.
                if let Some(e) = &gone.email
                    && lead.email.as_deref() != Some(e.as_str())
                {
                    tx.put_alt_key(survivor, &format!("e:{e}"))?;
                }
                if let Some(ph) = &gone.phone
                    && lead.phone.as_deref() != Some(ph.as_str())
                {
                    tx.put_alt_key(survivor, &format!("p:{ph}"))?;
                }
                tx.put_alt_key(survivor, &format!("m:{other}"))?;
                if gone.created_at < lead.created_at {
                    lead.first_touch_at = lead.first_touch_at.or(gone.first_touch_at);
                }
                lead.last_activity_at = lead.last_activity_at.max(gone.last_activity_at);
                settle_change(tx, &plugins, &mut lead)?;
                lead.version += 1;
                lead.updated_at = tx.now;
                tx.put_lead(Some(&before), &lead)?;
                // The survivor's state may bar sequences (its own, or those moved here): a
                // do-not-contact flag, whichever lead brought it, stops marketing mail at once.
                super::nurture::end_what_the_lead_bars(tx, &plugins, &lead)?;
                tx.change(Entity::Lead, other, Op::Merge, Some(&gone))?;
                tx.change(Entity::Lead, survivor, Op::Update, Some(&lead))?;
                for id in &enrollments {
                    tx.change(Entity::Enrollment, *id, Op::Update, Some(&lead))?;
                }
                for id in &mails {
                    tx.change(Entity::Mail, *id, Op::Update, Some(&lead))?;
                }
                for t in &tasks {
                    super::tasks::log_task(tx, t, Op::Update)?;
                }
                tx.event(
                    survivor,
                    "merged",
                    p.actor(),
                    json!({
                        "reason": "manual",
                        "merged_id": other,
                        "survivor_id": survivor,
                        "activities_moved": moved,
                        "tasks_moved": tasks.len(),
                        "enrollments_moved": enrollments.len(),
                        "emails_moved": mails.len(),
                        "filled": report.filled,
                        "conflicts": report.conflicts,
                    }),
                )?;
                Ok(Ok(lead))
            })
            .await?
    }

    /// Groups of leads that are probably the same person, with the reason.
    pub fn duplicates(
        &self,
        p: &Principal,
        after: Option<&str>,
        limit: usize,
    ) -> ServiceResult<DuplicatesPage> {
        let snap = self.store.read()?;
        let (groups, scan_stop) = snap.duplicate_groups(after, DUPLICATE_SCAN)?;
        let mut out: Vec<DuplicateGroup> = Vec::new();
        let mut last_key = None;
        let mut full = false;
        for (key, ids) in groups {
            let mut leads = Vec::new();
            for id in ids {
                if let Some(l) = snap.lead(id)?.filter(|l| p.can_see_lead(l)) {
                    leads.push(l);
                }
            }
            if leads.len() < 2 {
                continue;
            }
            if out.len() == limit {
                full = true;
                break;
            }
            let reason = crate::domain::dedupe::DuplicateReason::of_key(&key)
                .map_or("unknown", |r| r.as_str());
            last_key = Some(key);
            out.push(DuplicateGroup { reason, leads });
        }
        let next = if full { last_key } else { scan_stop };
        Ok(DuplicatesPage { groups: out, next })
    }
}

#[cfg(test)]
mod tests {
    use super::{Capture, Via, channel_of_source};
    use serde_json::{Map, Value, json};

    fn form_capture() -> Capture {
        let mut raw = Map::new();
        raw.insert("email".into(), json!("wang@example.cn"));
        let mut cap = Capture::new(Via::Form, "form_submit", raw);
        cap.properties.insert("form_key".into(), json!("demo"));
        cap.referrer = Some("https://www.baidu.com/".into());
        cap
    }

    #[test]
    fn sealed_properties_are_the_ones_the_writer_would_render() {
        let expected = json!({
            "form_key": "demo",
            "via": "form",
            "raw": {"email": "wang@example.cn"},
            "referrer": "https://www.baidu.com/",
        });
        for merged in [false, true] {
            let mut sealed = form_capture();
            sealed.seal();
            let mut unsealed = form_capture();
            let mut want = expected.clone();
            if merged {
                want["merged"] = json!(true);
            }
            for (what, text) in [
                ("sealed", sealed.activity_properties(merged)),
                ("unsealed", unsealed.activity_properties(merged)),
            ] {
                let got: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(got, want, "{what}, merged {merged}: {text}");
            }
        }
    }

    #[test]
    fn a_merge_mark_fits_an_object_with_no_other_member() {
        let mut cap = Capture::new(Via::Api, "capture", Map::new());
        cap.sealed = Some("{}".into());
        assert_eq!(cap.activity_properties(true), r#"{"merged":true}"#);
    }

    #[test]
    fn a_partner_or_event_source_names_its_channel() {
        for s in ["partner", " Partner ", "referral", "转介绍"] {
            assert_eq!(channel_of_source(s), Some("referral"), "{s}");
        }
        for s in ["expo", "Trade Show", "展会"] {
            assert_eq!(channel_of_source(s), Some("event"), "{s}");
        }
        for s in ["web", "cold call", ""] {
            assert_eq!(channel_of_source(s), None, "{s}");
        }
    }
}
