//! The redb tables: one definition each, in one place, so the schema can be read at a glance.

use redb::TableDefinition;

/// `format_version` and other single values.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Lead id → encoded `Lead`.
pub const LEADS: TableDefinition<u128, &[u8]> = TableDefinition::new("leads");
/// Composite keys built by `lead_index` (filter field, value, sort key, id) → ().
pub const LEAD_INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("lead_index");
/// Normalized email → lead id.
pub const LEAD_BY_EMAIL: TableDefinition<&str, u128> = TableDefinition::new("lead_by_email");
/// E.164 phone → lead id.
pub const LEAD_BY_PHONE: TableDefinition<&str, u128> = TableDefinition::new("lead_by_phone");
/// Activity id → encoded `Activity`.
pub const ACTIVITIES: TableDefinition<u128, &[u8]> = TableDefinition::new("activities");
/// (lead id, occurred_at, activity id) → ().
pub const ACTIVITY_BY_LEAD: TableDefinition<(u128, i64, u128), ()> =
    TableDefinition::new("activity_by_lead");
/// (lead id, event id) → encoded `LeadEvent`.
pub const LEAD_EVENTS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("lead_events");
/// User id → encoded `User`.
pub const USERS: TableDefinition<u128, &[u8]> = TableDefinition::new("users");
/// Lowercased user name → user id.
pub const USER_BY_NAME: TableDefinition<&str, u128> = TableDefinition::new("user_by_name");
/// Normalized user email → user id.
pub const USER_BY_EMAIL: TableDefinition<&str, u128> = TableDefinition::new("user_by_email");
/// SHA-256 of a bearer token → encoded `Token`.
pub const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tokens");
/// Changelog seq → encoded `ChangeEntry`.
pub const CHANGELOG: TableDefinition<u64, &[u8]> = TableDefinition::new("changelog");
/// (caller id, Idempotency-Key) → encoded `IdempotentResponse`.
pub const IDEMPOTENCY: TableDefinition<(u128, &str), &[u8]> = TableDefinition::new("idempotency");
/// (lead id, caller id, Idempotency-Key) → (): lets erasure drop stored responses naming a lead.
pub const IDEMPOTENCY_BY_LEAD: TableDefinition<(u128, u128, &str), ()> =
    TableDefinition::new("idempotency_by_lead");

/// Other keys that find a lead, each `kind:value` → lead id: `e:` an email and `p:` a phone of a
/// lead merged into this one, `m:` the id of a lead merged into this one, `r:` the hash of an
/// imported row without email or phone (so re-importing it creates nothing), `c:` the hash of
/// differing values an import recorded on the lead (so a re-import records them once).
pub const ALT_KEYS: TableDefinition<&str, u128> = TableDefinition::new("alt_keys");
/// (lead id, alt key) → (): what erasure must remove from `ALT_KEYS`.
pub const ALT_KEYS_BY_LEAD: TableDefinition<(u128, &str), ()> =
    TableDefinition::new("alt_keys_by_lead");
/// (likely-duplicate key, lead id) → (); see `domain::dedupe`.
pub const DUPLICATE_KEYS: TableDefinition<(&str, u128), ()> =
    TableDefinition::new("duplicate_keys");
/// Form id → encoded `Form`.
pub const FORMS: TableDefinition<u128, &[u8]> = TableDefinition::new("forms");
/// Form key → form id.
pub const FORM_BY_KEY: TableDefinition<&str, u128> = TableDefinition::new("form_by_key");
/// Visitor id → encoded `Visitor`.
pub const VISITORS: TableDefinition<&str, &[u8]> = TableDefinition::new("visitors");
/// (visitor id, page view id) → encoded `PageView`: anonymous views, in time order.
pub const PAGE_VIEWS: TableDefinition<(&str, u128), &[u8]> = TableDefinition::new("page_views");
/// (lead id, visitor id) → (): the visitors stitched to a lead, for erasure and export.
pub const LEAD_VISITORS: TableDefinition<(u128, &str), ()> = TableDefinition::new("lead_visitors");

/// Webhook id → encoded `Webhook` (subscriptions; see `tx_outbox`).
pub const WEBHOOKS: TableDefinition<u128, &[u8]> = TableDefinition::new("webhooks");
/// Delivery id → encoded `Delivery`: the webhook outbox and its delivery log.
pub const DELIVERIES: TableDefinition<u128, &[u8]> = TableDefinition::new("deliveries");
/// (next attempt, delivery id) → (): the deliveries the worker may attempt, earliest first —
/// each the head of its chain, of an active webhook.
pub const DELIVERY_QUEUE: TableDefinition<(i64, u128), ()> = TableDefinition::new("delivery_queue");
/// (webhook, chain key, chain position) → delivery id: pending deliveries of one webhook about
/// one lead (or other subject), in the order they must go out.
pub const DELIVERY_CHAINS: TableDefinition<(u128, u128, u128), u128> =
    TableDefinition::new("delivery_chains");
/// (webhook, delivery id) → (): a webhook's delivery log, oldest first.
pub const DELIVERY_BY_WEBHOOK: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("delivery_by_webhook");
/// (webhook, status code, delivery id) → (): the log filtered by status.
pub const DELIVERY_BY_STATUS: TableDefinition<(u128, u8, u128), ()> =
    TableDefinition::new("delivery_by_status");
/// (lead, delivery id) → (): the deliveries about a lead, so its erasure removes them.
pub const DELIVERY_BY_LEAD: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("delivery_by_lead");

/// Named random secrets made on first start (e.g. `form_token`, which signs hosted-form render
/// times); kept so pages rendered before a restart still validate after it.
pub const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");

/// The on-disk layout version; bumped with a migration when tables change shape.
/// 2: `lead_index` has no all-leads rows (format 1's are removed on open).
/// 3: `lead_index` has a creation-sorted row per lead under its score (added on open).
/// 4: an unowned lead in a pool has only its pool rows, not owner rows with no owner too
///    (those are removed on open).
pub const FORMAT_VERSION: u64 = 4;
/// Lead id → encoded `ActivityStats`: counts and last times per activity kind and page path,
/// kept current by every activity write (what the score hook reads).
pub const LEAD_STATS: TableDefinition<u128, &[u8]> = TableDefinition::new("lead_stats");
/// Lead id → encoded `ScoreDetails`: the reasons behind the current score and its history.
pub const SCORE_DETAILS: TableDefinition<u128, &[u8]> = TableDefinition::new("score_details");
/// (due time, lead id) → (): when a lead's score may change by time alone (decay), so it is
/// looked at again then without scanning every lead.
pub const SCORE_REVIEW: TableDefinition<(i64, u128), ()> = TableDefinition::new("score_review");

/// Pool id → encoded `Pool`.
pub const POOLS: TableDefinition<u128, &[u8]> = TableDefinition::new("pools");
/// Lowercased pool name → pool id.
pub const POOL_BY_NAME: TableDefinition<&str, u128> = TableDefinition::new("pool_by_name");
/// (pool, rep, lead) → claimed at: the leads a rep holds from a pool (the claim limit).
pub const POOL_CLAIMS: TableDefinition<(u128, u128, u128), i64> =
    TableDefinition::new("pool_claims");
/// Lead id → (pool, rep) of its live claim, so an owner change can drop it.
pub const CLAIM_BY_LEAD: TableDefinition<u128, (u128, u128)> =
    TableDefinition::new("claim_by_lead");
/// User id → how many open leads they own (capacity checks without counting).
pub const OWNER_LOAD: TableDefinition<u128, u64> = TableDefinition::new("owner_load");
/// Round-robin key (usually a team) → the rep who got the last lead under it.
pub const ROUND_ROBIN: TableDefinition<&str, u128> = TableDefinition::new("round_robin");
/// (due, timer id) → encoded `Timer`: the scheduler's queue, earliest first.
pub const TIMERS: TableDefinition<(i64, u128), &[u8]> = TableDefinition::new("timers");
/// (subject, timer id) → due: a lead's or task's timers, to cancel them.
pub const TIMERS_BY_SUBJECT: TableDefinition<(u128, u128), i64> =
    TableDefinition::new("timers_by_subject");
/// Lead id → encoded `SlaState`.
pub const LEAD_SLA: TableDefinition<u128, &[u8]> = TableDefinition::new("lead_sla");
/// Task id → encoded `Task`.
pub const TASKS: TableDefinition<u128, &[u8]> = TableDefinition::new("tasks");
/// (owner, due or i64::MAX, task id) → done: a person's tasks by due time (overdue lists).
pub const TASK_BY_OWNER: TableDefinition<(u128, i64, u128), bool> =
    TableDefinition::new("task_by_owner");
/// (lead, task id) → (): a lead's tasks, for its page and its erasure.
pub const TASK_BY_LEAD: TableDefinition<(u128, u128), ()> = TableDefinition::new("task_by_lead");
/// Notification id → encoded `Notification`.
pub const NOTIFICATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("notifications");
/// (recipient, notification id) → (): a person's notifications, newest last.
pub const NOTIFICATION_BY_RECIPIENT: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("notification_by_recipient");
/// (lead, notification id) → (): what erasure of a lead removes.
pub const NOTIFICATION_BY_LEAD: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("notification_by_lead");

/// Enrollment id → encoded `Enrollment`.
pub const ENROLLMENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("enrollments");
/// (lead, enrollment id) → (): a lead's enrollments, newest last.
pub const ENROLLMENT_BY_LEAD: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("enrollment_by_lead");
/// (lead, sequence) → enrollment id, while it is active or paused: one open enrollment per
/// lead and sequence.
pub const OPEN_ENROLLMENT: TableDefinition<(u128, &str), u128> =
    TableDefinition::new("open_enrollment");
/// Mail id → encoded `OutMail`.
pub const MAILS: TableDefinition<u128, &[u8]> = TableDefinition::new("mails");
/// (next attempt, mail id) → (): unsent mail, soonest first (the sender's queue).
pub const MAIL_QUEUE: TableDefinition<(i64, u128), ()> = TableDefinition::new("mail_queue");
/// (lead, mail id) → (): a lead's mail, for its page and its erasure.
pub const MAIL_BY_LEAD: TableDefinition<(u128, u128), ()> = TableDefinition::new("mail_by_lead");
/// The secret of a mail's unsubscribe, open and click links → mail id.
pub const MAIL_TOKENS: TableDefinition<&str, u128> = TableDefinition::new("mail_tokens");
