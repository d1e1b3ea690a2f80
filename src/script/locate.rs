//! Finding the line of a hook failure that Rhai reports without one.
//!
//! Rhai gives the limit errors (too many operations, stack overflow, a string, array or map
//! too large, the wall-clock cutoff) the position of the outermost call, and a hook's
//! outermost call has none. So a call that failed without a line is run a second time, on
//! copies of its arguments, by a second engine that steps through the script with Rhai's
//! debugger and notes where each statement and expression starts. Where that run stopped is
//! the line. Only the second engine steps; the one every call runs on pays only the check
//! Rhai's `debugging` feature adds to each statement.
//!
//! A line counts only if the second run fails with the same error as the first: a run that
//! steps is slower, so against the wall clock it may stop somewhere else.
//!
//! In the server the second run happens off the caller's thread (a writer must not wait twice
//! for a runaway script), once per script version and error; later failures with the same
//! error take the line found. A dry run ([`Inline`]) runs it in place for each failure and a
//! rescore for its first, because their callers want the answer for the very call.

use super::engine::{self, LeadObj, Limits, StatsObj};
use super::routing::RosterObj;
use rhai::debugger::{DebuggerCommand, DebuggerEvent};
use rhai::{Array, Dynamic, Engine, FuncArgs, Position};
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

thread_local! {
    /// Where the script running on this thread under the locating engine last was.
    static LAST: Cell<Position> = const { Cell::new(Position::NONE) };
    /// How many more failures of calls on this thread are located before the call returns
    /// (`None`: none, they are located on another thread).
    static INLINE: RefCell<Option<Arc<AtomicU32>>> = const { RefCell::new(None) };
}

/// The wall clock a second run gets to reach a limit other than the clock that the first run
/// hit: at least this, or five times a call's. Stepping measured from about twice as slow
/// (a loop counting) to thirteen times (a loop growing an array, which Rhai measures at each
/// step).
pub(super) const AT_LEAST: std::time::Duration = std::time::Duration::from_secs(2);
pub(super) const SLOWER_BY: u32 = 5;

/// The locating engine: the same limits and API as the one calls run on, plus a debugger
/// that records the position of every step.
pub(super) fn locator(limits: &Limits) -> Engine {
    let mut engine = engine::build(limits);
    // The debugger API is marked volatile, not deprecated.
    #[allow(deprecated)]
    engine.register_debugger(
        |_, debugger| debugger,
        |_, event, _, _, pos| {
            // Leaving a function (with its error, too) reports the function's end: not a step.
            if matches!(event, DebuggerEvent::Step) && !pos.is_none() {
                LAST.set(pos);
            }
            Ok(DebuggerCommand::StepInto)
        },
    );
    engine
}

/// Starts a run on the locating engine; [`stopped_at`] reads where it got to.
pub(super) fn start() {
    LAST.set(Position::NONE);
}

/// The line the last run on this thread's locating engine stopped at.
pub(super) fn stopped_at() -> Option<usize> {
    LAST.get().line()
}

/// While alive, failures of calls on this thread are located before the call returns, each
/// by a run of its own, as many as its budget allows.
pub struct Inline {
    previous: Option<Arc<AtomicU32>>,
}

impl Inline {
    /// Every failure (a dry run, `plugins check`): the caller wants each one's line.
    pub fn on() -> Inline {
        Inline::sharing(Arc::new(AtomicU32::new(u32::MAX)))
    }

    /// As many failures, on every thread that shares `budget`, as it holds (a rescore reports
    /// its first failure: later ones take the line found for the same error, so a script
    /// failing on every lead is not run twice for each).
    pub fn sharing(budget: Arc<AtomicU32>) -> Inline {
        Inline {
            previous: INLINE.replace(Some(budget)),
        }
    }
}

impl Drop for Inline {
    fn drop(&mut self) {
        INLINE.set(self.previous.take());
    }
}

/// Whether the failure at hand is located in place; counts it against the budget.
pub(super) fn take_inline() -> bool {
    INLINE.with_borrow(|budget| {
        budget.as_ref().is_some_and(|b| {
            b.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match n {
                0 => None,
                u32::MAX => Some(n),
                n => Some(n - 1),
            })
            .is_ok()
        })
    })
}

/// Hook arguments that can be copied for a second run: the copy shares nothing the first
/// run may change.
pub trait HookArgs: FuncArgs + Send + 'static {
    fn detached(&self) -> Self;
}

/// One argument of a hook call; see [`HookArgs`]. A clone will do for all but the roster:
/// scripts only read the lead and stats, and without closures (`no_closure`) a value shares
/// nothing with its copy.
pub trait HookArg: Clone {
    fn detached(&self) -> Self {
        self.clone()
    }
}

impl HookArg for LeadObj {}
impl HookArg for StatsObj {}
impl HookArg for Dynamic {}
impl HookArg for Array {}

impl HookArg for RosterObj {
    fn detached(&self) -> Self {
        // `route` takes reps from the roster, which the caller reads back afterwards.
        self.deep_copy()
    }
}

impl<A: HookArg + rhai::Variant> HookArgs for (A,) {
    fn detached(&self) -> Self {
        (self.0.detached(),)
    }
}

impl<A, B> HookArgs for (A, B)
where
    A: HookArg + rhai::Variant,
    B: HookArg + rhai::Variant,
{
    fn detached(&self) -> Self {
        (self.0.detached(), self.1.detached())
    }
}

impl<A, B, C> HookArgs for (A, B, C)
where
    A: HookArg + rhai::Variant,
    B: HookArg + rhai::Variant,
    C: HookArg + rhai::Variant,
{
    fn detached(&self) -> Self {
        (self.0.detached(), self.1.detached(), self.2.detached())
    }
}

impl HookArgs for Vec<Dynamic> {
    fn detached(&self) -> Self {
        self.clone()
    }
}
