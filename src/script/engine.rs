//! The Rhai engine plugins run in: every limit set in one place ([`harden`]), no I/O, no
//! `eval`, no modules, no wall clock; and what scripts see — the lead and its activity stats as
//! read-only typed objects, and a few helpers.

use crate::domain::lead::Lead;
use crate::domain::score::{WordSet, contains_any as text_contains_any, days_between};
use crate::domain::stats::ActivityStats;
use crate::domain::time::Millis;
use rhai::{Array, Dynamic, Engine, ImmutableString};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every limit a hook call runs under.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Limits {
    /// Wall-clock cutoff of one call, in milliseconds.
    #[serde(rename = "timeout_ms", serialize_with = "as_millis")]
    #[schema(value_type = u64)]
    pub timeout: Duration,
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_bytes: usize,
    pub max_array_len: usize,
    pub max_map_len: usize,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The highest `max_call_levels` and `max_expr_depth` a server accepts. Each level of a
/// script's recursion or nesting takes the running thread's stack; deeper than this, a script
/// could overflow a 2 MiB thread stack, which aborts the process instead of failing the call.
pub const MAX_CALL_LEVELS: usize = 128;
pub const MAX_EXPR_DEPTH: usize = 128;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(50),
            max_operations: 1_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_bytes: 1024 * 1024,
            max_array_len: 10_000,
            max_map_len: 10_000,
        }
    }
}

thread_local! {
    /// When the hook call running on this thread must stop.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// "Now" for the hook call running on this thread (from the injected clock).
    static NOW: Cell<Millis> = const { Cell::new(0) };
}

/// Checking the clock costs more than an operation, so only every this many operations.
const CLOCK_CHECK_EVERY: u64 = 256;

/// Sets the deadline and "now" of the calls made on this thread until it is dropped.
pub(crate) struct CallWindow {
    previous: (Option<Instant>, Millis),
}

impl CallWindow {
    pub(crate) fn open(timeout: Duration, now: Millis) -> CallWindow {
        let previous = (DEADLINE.get(), NOW.get());
        DEADLINE.set(Some(Instant::now() + timeout));
        NOW.set(now);
        CallWindow { previous }
    }
}

impl Drop for CallWindow {
    fn drop(&mut self) {
        DEADLINE.set(self.previous.0);
        NOW.set(self.previous.1);
    }
}

/// The message a call stopped by the wall-clock cutoff ends with.
pub const TIMED_OUT: &str = "timed out";

/// Sets every Rhai limit from `limits` (they are all off by default), the wall-clock cutoff,
/// and closes the doors a script could leave by: `eval`, modules (file access), and
/// `print`/`debug` to stdout (they go to the log instead).
pub fn harden(engine: &mut Engine, limits: &Limits) {
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_bytes)
        .set_max_array_size(limits.max_array_len)
        .set_max_map_size(limits.max_map_len)
        .set_max_modules(0)
        .set_max_variables(1_000)
        .set_max_functions(1_000);
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.disable_symbol("eval");
    engine.on_progress(|ops| {
        if ops % CLOCK_CHECK_EVERY == 0 && DEADLINE.get().is_some_and(|d| Instant::now() >= d) {
            Some(Dynamic::from(TIMED_OUT))
        } else {
            None
        }
    });
    engine.on_print(|s| tracing::info!(target: "leadline::plugins", "{s}"));
    engine.on_debug(|s, src, pos| {
        tracing::debug!(target: "leadline::plugins", source = src.unwrap_or(""), line = pos.line(), "{s}")
    });
}

/// A hardened engine with the lead, stats and helpers registered.
pub fn build(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    harden(&mut engine, limits);
    register_lead(&mut engine);
    register_stats(&mut engine);
    register_helpers(&mut engine);
    super::routing::register_roster(&mut engine);
    super::nurture::register_actions(&mut engine);
    engine
}

/// The lead as scripts see it: read-only getters over a shared record (no map is built).
#[derive(Debug, Clone)]
pub struct LeadObj(pub Arc<Lead>);

fn opt_str(v: &Option<String>) -> Dynamic {
    match v {
        Some(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        None => Dynamic::UNIT,
    }
}

fn opt_ms(v: Option<Millis>) -> Dynamic {
    v.map_or(Dynamic::UNIT, Dynamic::from_int)
}

fn register_lead(engine: &mut Engine) {
    engine.register_type_with_name::<LeadObj>("Lead");
    engine
        .register_get("id", |l: &mut LeadObj| l.0.id.to_string())
        .register_get("name", |l: &mut LeadObj| opt_str(&l.0.name))
        .register_get("email", |l: &mut LeadObj| opt_str(&l.0.email))
        .register_get("email_domain", |l: &mut LeadObj| {
            let domain =
                l.0.email
                    .as_deref()
                    .and_then(|e| e.rsplit_once('@'))
                    .map(|(_, d)| d.to_owned());
            opt_str(&domain)
        })
        .register_get("phone", |l: &mut LeadObj| opt_str(&l.0.phone))
        .register_get("company", |l: &mut LeadObj| opt_str(&l.0.company))
        .register_get("title", |l: &mut LeadObj| opt_str(&l.0.title))
        .register_get("industry", |l: &mut LeadObj| opt_str(&l.0.industry))
        .register_get("company_size", |l: &mut LeadObj| {
            l.0.company_size
                .map_or(Dynamic::UNIT, |n| Dynamic::from_int(i64::from(n)))
        })
        .register_get("region", |l: &mut LeadObj| opt_str(&l.0.region))
        .register_get("country", |l: &mut LeadObj| opt_str(&l.0.country))
        .register_get("source", |l: &mut LeadObj| opt_str(&l.0.source))
        .register_get("channel", |l: &mut LeadObj| opt_str(&l.0.channel))
        .register_get("utm_source", |l: &mut LeadObj| opt_str(&l.0.utm.source))
        .register_get("utm_medium", |l: &mut LeadObj| opt_str(&l.0.utm.medium))
        .register_get("utm_campaign", |l: &mut LeadObj| opt_str(&l.0.utm.campaign))
        .register_get("utm_term", |l: &mut LeadObj| opt_str(&l.0.utm.term))
        .register_get("utm_content", |l: &mut LeadObj| opt_str(&l.0.utm.content))
        .register_get("stage", |l: &mut LeadObj| l.0.stage.as_str())
        .register_get("status", |l: &mut LeadObj| l.0.status.as_str())
        .register_get("owner_id", |l: &mut LeadObj| {
            l.0.owner_id
                .map_or(Dynamic::UNIT, |id| Dynamic::from(id.to_string()))
        })
        .register_get("score", |l: &mut LeadObj| i64::from(l.0.score.total))
        .register_get("tags", |l: &mut LeadObj| {
            l.0.tags
                .iter()
                .map(|t| Dynamic::from(t.clone()))
                .collect::<Array>()
        })
        .register_get("personal_email", |l: &mut LeadObj| l.0.flags.personal_email)
        .register_get("do_not_contact", |l: &mut LeadObj| l.0.flags.do_not_contact)
        .register_get("created_at", |l: &mut LeadObj| l.0.created_at)
        .register_get("last_activity_at", |l: &mut LeadObj| {
            opt_ms(l.0.last_activity_at)
        })
        .register_fn("field", |l: &mut LeadObj, name: &str| -> Dynamic {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&l.0.fields)
                .ok()
                .and_then(|m| m.get(name).cloned())
                .and_then(|v| rhai::serde::to_dynamic(v).ok())
                .unwrap_or(Dynamic::UNIT)
        })
        .register_fn("has_tag", |l: &mut LeadObj, tag: &str| {
            l.0.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
        });
}

/// A list of words prepared once (`words([...])` at a script's top level) for fast
/// `contains_any` calls.
#[derive(Debug, Clone)]
pub struct Words(pub Arc<WordSet>);

/// A lead's activity summary as scripts see it, read at one "now".
#[derive(Debug, Clone)]
pub struct StatsObj {
    pub stats: Arc<ActivityStats>,
    /// When the lead was created: "last activity" when it has none.
    pub created_at: Millis,
    pub now: Millis,
}

impl StatsObj {
    fn last_activity(&self) -> Millis {
        self.stats
            .last_at
            .unwrap_or(self.created_at)
            .max(self.created_at)
    }
}

fn register_stats(engine: &mut Engine) {
    engine.register_type_with_name::<StatsObj>("Stats");
    engine
        .register_fn("count", |s: &mut StatsObj, kind: &str| {
            i64::from(s.stats.count(kind))
        })
        // Two and three names at once: a rule such as "requested a demo or a trial" is one
        // call instead of several, which is most of what a scoring call costs.
        .register_fn("count", |s: &mut StatsObj, a: &str, b: &str| {
            i64::from(s.stats.count(a)) + i64::from(s.stats.count(b))
        })
        .register_fn("count", |s: &mut StatsObj, a: &str, b: &str, c: &str| {
            i64::from(s.stats.count(a)) + i64::from(s.stats.count(b)) + i64::from(s.stats.count(c))
        })
        .register_fn("visited", |s: &mut StatsObj, path: &str| {
            s.stats.visits(path) > 0
        })
        .register_fn("visited", |s: &mut StatsObj, a: &str, b: &str| {
            s.stats.visits(a) > 0 || s.stats.visits(b) > 0
        })
        .register_fn("visited", |s: &mut StatsObj, a: &str, b: &str, c: &str| {
            s.stats.visits(a) > 0 || s.stats.visits(b) > 0 || s.stats.visits(c) > 0
        })
        .register_fn("visits", |s: &mut StatsObj, path: &str| {
            i64::from(s.stats.visits(path))
        })
        .register_fn("days_since", |s: &mut StatsObj, kind: &str| -> Dynamic {
            s.stats.last(kind).map_or(Dynamic::UNIT, |at| {
                Dynamic::from_float(days_between(at, s.now))
            })
        })
        .register_fn("last_at", |s: &mut StatsObj, kind: &str| -> Dynamic {
            opt_ms(s.stats.last(kind))
        })
        .register_fn("last_visit_at", |s: &mut StatsObj, path: &str| -> Dynamic {
            opt_ms(s.stats.last_visit(path))
        })
        .register_fn(
            "days_since_visit",
            |s: &mut StatsObj, path: &str| -> Dynamic {
                s.stats.last_visit(path).map_or(Dynamic::UNIT, |at| {
                    Dynamic::from_float(days_between(at, s.now))
                })
            },
        )
        .register_get("days_since_last_activity", |s: &mut StatsObj| {
            days_between(s.last_activity(), s.now)
        })
        .register_get("last_activity_at", |s: &mut StatsObj| s.last_activity())
        .register_get("total", |s: &mut StatsObj| {
            s.stats
                .kinds
                .iter()
                .map(|t| i64::from(t.count))
                .sum::<i64>()
        });
}

fn strings(arr: &Array) -> Vec<ImmutableString> {
    arr.iter()
        .filter_map(|d| d.clone().into_immutable_string().ok())
        .collect()
}

fn register_helpers(engine: &mut Engine) {
    engine.register_type_with_name::<Words>("Words");
    engine
        .register_fn("words", |needles: Array| {
            Words(Arc::new(WordSet::new(&strings(&needles))))
        })
        .register_fn("contains_any", |text: &str, needles: Words| {
            needles.0.found_in(text)
        })
        .register_fn("contains_any", |_: (), _: Words| false)
        .register_fn("equals_any", |text: &str, needles: Words| {
            needles.0.equals_any(text)
        })
        .register_fn("equals_any", |_: (), _: Words| false)
        .register_fn("equals_any", |text: &str, needles: Array| {
            WordSet::new(&strings(&needles)).equals_any(text)
        })
        .register_fn("equals_any", |_: (), _: Array| false);
    engine
        .register_fn("contains_any", |text: &str, needles: Array| {
            text_contains_any(text, &strings(&needles))
        })
        .register_fn("contains_any", |_: (), _: Array| false)
        .register_fn("lower", |s: &str| s.to_lowercase())
        .register_fn("lower", |_: ()| String::new())
        .register_fn("days_since", |at: i64| days_between(at, NOW.get()))
        .register_fn("days_since", |_: ()| Dynamic::UNIT)
        .register_fn("now_ms", || NOW.get());
}
