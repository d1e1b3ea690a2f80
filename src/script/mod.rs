//! The plugin runtime: compiles every `plugins/*.rhai` once, finds hooks by name, calls them
//! under the limits of [`engine::harden`], checks the shape of what they return, and falls back
//! to the built-in rule whenever a hook is missing, fails or answers nonsense — counting and
//! logging each failure so `GET /v1/admin/plugins` can show it. A reload swaps in newly
//! compiled scripts; a script that no longer compiles keeps its last good version running.

mod dry_run;
pub mod engine;
pub mod hooks;
pub mod locate;
pub mod nurture;
pub mod routing;
mod watch;

pub use dry_run::{DryRun, StatsInput, check_dry_run_args};
pub use engine::{LeadObj, Limits, StatsObj};
pub use hooks::{EnrichOutcome, Source, apply_enrichment};
pub use locate::{HookArgs, Inline as LocateInline};
pub use watch::PluginWatch;

use crate::domain::score::{DefaultRules, Thresholds};
use crate::domain::time::Millis;
use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Scope};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use utoipa::ToSchema;

/// The hooks a script may define, by function name.
pub const HOOKS: &[Hook] = &[
    Hook::Classify,
    Hook::Enrich,
    Hook::Score,
    Hook::Route,
    Hook::Sla,
    Hook::OnEvent,
    Hook::StageGate,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Classify,
    Enrich,
    Score,
    Route,
    Sla,
    OnEvent,
    StageGate,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Classify => "classify",
            Hook::Enrich => "enrich",
            Hook::Score => "score",
            Hook::Route => "route",
            Hook::Sla => "sla",
            Hook::OnEvent => "on_event",
            Hook::StageGate => "stage_gate",
        }
    }

    pub fn parse(s: &str) -> Option<Hook> {
        HOOKS.iter().copied().find(|h| h.name() == s)
    }

    /// How many arguments the hook takes (a function of another arity is not this hook).
    pub fn arity(self) -> usize {
        match self {
            Hook::Classify | Hook::Enrich | Hook::Sla => 1,
            Hook::Score | Hook::OnEvent | Hook::StageGate => 2,
            Hook::Route => 3,
        }
    }
}

/// Plugin settings (the `[plugins]` section of the config).
#[derive(Debug, Clone, Default)]
pub struct PluginSettings {
    pub dir: PathBuf,
    pub limits: Limits,
    /// Each script's own settings, by file stem; a script sees its table as `config`.
    pub config: BTreeMap<String, serde_json::Value>,
    /// Working hours by team name (`default`: teams without their own); SLA clocks count
    /// only these hours.
    pub business_hours: BTreeMap<String, crate::domain::hours::BusinessHours>,
    /// The server's address as recipients reach it: the base of the unsubscribe, open and
    /// click links in email.
    pub public_url: String,
}

/// Why a hook call did not produce a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HookFailure {
    pub hook: String,
    pub message: String,
    /// Line in the script, when the error has one.
    pub line: Option<usize>,
    /// When it happened, by the server clock.
    #[serde(serialize_with = "crate::domain::time::serialize_rfc3339")]
    #[schema(value_type = String)]
    pub at: Millis,
}

#[derive(Debug, Default)]
struct Metrics {
    calls: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
    last_error: Mutex<Option<HookFailure>>,
    /// A failure of this version is being located (one at a time).
    locating: AtomicBool,
    /// The line each error (hook, message) was located at in this version (`None`: its
    /// second run did not fail, so it is not looked for again).
    located: Mutex<BTreeMap<(Hook, String), Option<usize>>>,
}

/// One compiled script.
pub struct Script {
    pub file: String,
    path: PathBuf,
    source: String,
    ast: AST,
    hooks: Vec<Hook>,
    /// Constants the script's top level defined, plus `config`; every call sees them.
    scope: Scope<'static>,
    /// Scopes ready for reuse, so a call does not clone the constants.
    spare: Mutex<Vec<Scope<'static>>>,
    metrics: Metrics,
    loaded_at: Millis,
}

impl Script {
    /// The line where `hook`'s function starts: where an answer of the wrong shape comes from.
    pub(crate) fn hook_line(&self, hook: Hook) -> Option<usize> {
        self.ast
            .iter_fn_def()
            .find(|f| f.name == hook.name() && f.params.len() == hook.arity())
            .and_then(|f| f.body.start_position().line())
    }

    fn constant_i32(&self, name: &str) -> Option<i32> {
        self.scope
            .get_value::<i64>(name)
            .and_then(|v| i32::try_from(v).ok())
    }
}

/// A failed compile of one file.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompileFailure {
    pub file: String,
    pub message: String,
    pub line: Option<usize>,
    #[serde(serialize_with = "crate::domain::time::serialize_rfc3339")]
    #[schema(value_type = String)]
    pub at: Millis,
}

/// The scripts in force, and which script answers each hook.
pub struct Loaded {
    scripts: Vec<Arc<Script>>,
    by_hook: BTreeMap<Hook, Arc<Script>>,
    compile_errors: Vec<CompileFailure>,
    /// Hooks defined by more than one script: the first file (by name) wins.
    conflicts: Vec<String>,
    pub thresholds: Thresholds,
    /// Sequences and email templates.
    library: nurture::Library,
}

/// The plugin runtime; cheap to clone.
#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Inner>,
}

struct Inner {
    settings: PluginSettings,
    engine: Engine,
    /// Runs a failed call again, stepping, to find its line ([`locate`]).
    locator: Engine,
    current: RwLock<Arc<Loaded>>,
    defaults: DefaultRules,
    /// Serializes reloads (file watch and the admin endpoint may race).
    reloading: Mutex<()>,
}

/// What a reload did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadReport {
    /// Files compiled anew.
    pub compiled: Vec<String>,
    /// Files unchanged since the last load.
    pub unchanged: Vec<String>,
    /// Files that failed to compile (their last good version, if any, stays in force).
    pub failed: Vec<CompileFailure>,
    /// Files no longer present.
    pub removed: Vec<String>,
}

impl Plugins {
    /// Loads every script in `settings.dir` (a missing directory means no scripts). A script
    /// that fails to compile is reported, not fatal.
    pub fn load(settings: PluginSettings, now: Millis) -> Plugins {
        let engine = engine::build(&settings.limits);
        let locator = locate::locator(&settings.limits);
        let plugins = Plugins {
            inner: Arc::new(Inner {
                settings,
                engine,
                locator,
                current: RwLock::new(Arc::new(Loaded {
                    scripts: Vec::new(),
                    by_hook: BTreeMap::new(),
                    compile_errors: Vec::new(),
                    conflicts: Vec::new(),
                    thresholds: Thresholds::default(),
                    library: nurture::Library::default(),
                })),
                defaults: DefaultRules::default(),
                reloading: Mutex::new(()),
            }),
        };
        plugins.reload(now);
        plugins
    }

    /// No scripts at all: every hook is the built-in rule.
    pub fn builtin() -> Plugins {
        Plugins::load(PluginSettings::default(), 0)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.settings.dir
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.settings.limits
    }

    pub fn public_url(&self) -> &str {
        &self.inner.settings.public_url
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The working hours SLA clocks of `team` count (its own, else `default`); `None`: 24/7.
    pub fn business_hours(
        &self,
        team: Option<&str>,
    ) -> Option<&crate::domain::hours::BusinessHours> {
        // Team names match as `reps.team(..)` matches them: ignoring case.
        let hours = &self.inner.settings.business_hours;
        let named = |name: &str| {
            hours
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name.trim()))
                .map(|(_, h)| h)
        };
        team.and_then(named).or_else(|| named("default"))
    }

    /// The scripts in force now. Hold the result for one decision, not longer: a reload
    /// replaces it.
    pub fn current(&self) -> Arc<Loaded> {
        match self.inner.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Compiles what changed in the plugins directory and swaps it in.
    pub fn reload(&self, now: Millis) -> ReloadReport {
        let _serial = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let old = self.current();
        let mut report = ReloadReport {
            compiled: Vec::new(),
            unchanged: Vec::new(),
            failed: Vec::new(),
            removed: Vec::new(),
        };
        // No directory configured: nothing to load (the built-in rules answer every hook).
        let dir = &self.inner.settings.dir;
        let files = match if dir.as_os_str().is_empty() {
            Ok(Vec::new())
        } else {
            script_files(dir)
        } {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(dir = %self.inner.settings.dir.display(), error = %e, "cannot read the plugins directory; keeping the scripts loaded before");
                return report;
            }
        };
        let mut scripts: Vec<Arc<Script>> = Vec::new();
        for path in &files {
            let file = file_name(path);
            let previous = old.scripts.iter().find(|s| s.path == *path).cloned();
            let source = match std::fs::read_to_string(path) {
                Ok(s) => s,
                Err(e) => {
                    report.failed.push(CompileFailure {
                        file: file.clone(),
                        message: format!("cannot read the file: {e}"),
                        line: None,
                        at: now,
                    });
                    scripts.extend(previous);
                    continue;
                }
            };
            if let Some(prev) = &previous
                && prev.source == source
            {
                report.unchanged.push(file);
                scripts.push(prev.clone());
                continue;
            }
            match self.compile(path, source, now) {
                Ok(script) => {
                    tracing::info!(file = %file, hooks = ?script.hooks.iter().map(|h| h.name()).collect::<Vec<_>>(), "plugin loaded");
                    report.compiled.push(file);
                    scripts.push(Arc::new(script));
                }
                Err(failure) => {
                    tracing::error!(file = %failure.file, line = failure.line, error = %failure.message, "plugin failed to compile; its last good version (if any) stays in force");
                    report.failed.push(failure);
                    scripts.extend(previous);
                }
            }
        }
        for s in &old.scripts {
            if !files.contains(&s.path) {
                report.removed.push(s.file.clone());
            }
        }
        let mut by_hook: BTreeMap<Hook, Arc<Script>> = BTreeMap::new();
        let mut conflicts = Vec::new();
        for s in &scripts {
            for h in &s.hooks {
                match by_hook.get(h) {
                    Some(first) => conflicts.push(format!(
                        "{} is defined in {} and {}; {} is used",
                        h.name(),
                        first.file,
                        s.file,
                        first.file
                    )),
                    None => {
                        by_hook.insert(*h, s.clone());
                    }
                }
            }
        }
        let defaults = Thresholds::default();
        let thresholds = by_hook.get(&Hook::Score).map_or(defaults, |s| Thresholds {
            mql: s.constant_i32("MQL").unwrap_or(defaults.mql),
            sql: s.constant_i32("SQL").unwrap_or(defaults.sql),
        });
        let library = nurture::load_library(&self.inner.engine, dir, now, &old.library);
        report.failed.extend(library.errors.iter().cloned());
        let loaded = Loaded {
            scripts,
            by_hook,
            compile_errors: report.failed.clone(),
            conflicts,
            thresholds,
            library,
        };
        match self.inner.current.write() {
            Ok(mut g) => *g = Arc::new(loaded),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(loaded),
        }
        report
    }

    fn compile(&self, path: &Path, source: String, now: Millis) -> Result<Script, CompileFailure> {
        let file = file_name(path);
        let fail = |message: String, line: Option<usize>| CompileFailure {
            file: file.clone(),
            message,
            line,
            at: now,
        };
        let engine = &self.inner.engine;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let config = self
            .inner
            .settings
            .config
            .get(&stem)
            .cloned()
            .unwrap_or(serde_json::Value::Object(Default::default()));
        let config = rhai::serde::to_dynamic(config).map_err(|e| fail(e.to_string(), None))?;
        let mut scope = Scope::new();
        scope.push_constant("config", config);
        let mut ast = engine
            .compile_with_scope(&scope, &source)
            .map_err(|e| fail(e.to_string(), e.1.line()))?;
        ast.set_source(file.as_str());
        {
            // The top level runs once, here, under the same limits as a call: it defines the
            // constants the hooks use.
            let _window = engine::CallWindow::open(self.inner.settings.limits.timeout, now);
            engine.run_ast_with_scope(&mut scope, &ast).map_err(|e| {
                fail(
                    format!("while running the top level: {e}"),
                    e.position().line(),
                )
            })?;
        }
        // Hooks see the top level's names as constants: no call can change what the next sees.
        let mut frozen = Scope::new();
        for (name, _, value) in scope.iter() {
            frozen.push_constant_dynamic(name.to_owned(), value);
        }
        let mut hooks = Vec::new();
        for f in ast.iter_functions() {
            if let Some(h) = Hook::parse(f.name) {
                if f.params.len() == h.arity() {
                    hooks.push(h);
                } else {
                    return Err(fail(
                        format!(
                            "hook {} takes {} argument(s), not {}",
                            h.name(),
                            h.arity(),
                            f.params.len()
                        ),
                        None,
                    ));
                }
            }
        }
        hooks.sort();
        hooks.dedup();
        if hooks.contains(&Hook::Score) {
            let int = |name: &str| -> Result<Option<i64>, CompileFailure> {
                let whole = |v: &Dynamic| v.as_int().ok().filter(|n| i32::try_from(*n).is_ok());
                match scope.get(name) {
                    None => Ok(None),
                    // A score is a 32-bit number: a threshold beyond it could never be met, and
                    // would silently give way to the default.
                    Some(v) => whole(v).map(Some).ok_or_else(|| {
                        fail(
                            format!("{name} must be a whole number of points, at most 2147483647 either way"),
                            None,
                        )
                    }),
                }
            };
            let d = Thresholds::default();
            let (mql, sql) = (int("MQL")?, int("SQL")?);
            if mql.unwrap_or(i64::from(d.mql)) > sql.unwrap_or(i64::from(d.sql)) {
                return Err(fail("MQL must not be above SQL".into(), None));
            }
        }
        ast.clear_statements();
        let mut ast = engine.optimize_ast(
            &inlinable_constants(&frozen, &ast),
            ast,
            engine.optimization_level(),
        );
        ast.set_source(file.as_str());
        Ok(Script {
            file,
            path: path.to_owned(),
            source,
            ast,
            hooks,
            scope: frozen,
            spare: Mutex::new(Vec::new()),
            metrics: Metrics::default(),
            loaded_at: now,
        })
    }

    /// Calls `hook` of the script that defines it. `None`: no script defines it (use the
    /// built-in rule). `Some(Err)`: it failed; the failure is already counted and logged.
    pub fn call(
        &self,
        loaded: &Loaded,
        hook: Hook,
        args: impl HookArgs,
        now: Millis,
    ) -> Option<(Arc<Script>, Result<Dynamic, HookFailure>)> {
        let script = loaded.by_hook.get(&hook)?.clone();
        let result = self.call_script(&script, hook, args, now);
        Some((script, result))
    }

    fn call_script(
        &self,
        script: &Arc<Script>,
        hook: Hook,
        args: impl HookArgs,
        now: Millis,
    ) -> Result<Dynamic, HookFailure> {
        // Kept for a second run that finds the line of a failure Rhai gives none.
        let copy = args.detached();
        let started = Instant::now();
        let result = self.run(
            (&self.inner.engine, self.limits().timeout),
            script,
            hook,
            args,
            now,
        );
        let elapsed = started.elapsed();
        let m = &script.metrics;
        m.calls.fetch_add(1, Ordering::Relaxed);
        m.nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        result.map_err(|e| {
            let failure = runtime_failure(hook, &e, self.limits(), now);
            self.record_located(script, hook, failure, copy)
        })
    }

    /// Calls `hook` of `script` on `engine` under the limits, with a scope of the script's
    /// constants.
    fn run(
        &self,
        (engine, timeout): (&Engine, std::time::Duration),
        script: &Script,
        hook: Hook,
        args: impl HookArgs,
        now: Millis,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let mut scope = script
            .spare
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_else(|| script.scope.clone());
        let result = {
            let _window = engine::CallWindow::open(timeout, now);
            engine.call_fn_with_options::<Dynamic>(
                CallFnOptions::new().eval_ast(false).rewind_scope(true),
                &mut scope,
                &script.ast,
                hook.name(),
                args,
            )
        };
        if let Ok(mut spare) = script.spare.lock()
            && spare.len() < 8
        {
            spare.push(scope);
        }
        result
    }

    /// Counts and logs a failed call with its line. Rhai gives limit errors none: the line is
    /// found now for a dry run ([`locate::Inline`]), or known already for this error of this
    /// script version, or else found on another thread, which fills it in to the failure
    /// shown and logs it.
    fn record_located(
        &self,
        script: &Arc<Script>,
        hook: Hook,
        mut failure: HookFailure,
        args: impl HookArgs,
    ) -> HookFailure {
        let mut later = None;
        if failure.line.is_none() {
            let key = (hook, failure.message.clone());
            if locate::take_inline() {
                failure.line = self.stopped_at(script, hook, &failure, args);
                remember_line(script, key, failure.line);
            } else {
                match script
                    .metrics
                    .located
                    .lock()
                    .ok()
                    .and_then(|l| l.get(&key).copied())
                {
                    Some(line) => failure.line = line,
                    None => later = Some((key, args)),
                }
            }
        }
        // Recorded before any search starts, so the line found has a failure to go to.
        self.record_failure(script, failure.clone());
        if let Some((key, args)) = later {
            self.locate_later(script, key, &failure, args);
        }
        failure
    }

    /// Finds the line of `failure` on another thread, one search per script at a time.
    fn locate_later(
        &self,
        script: &Arc<Script>,
        key: (Hook, String),
        failure: &HookFailure,
        args: impl HookArgs,
    ) {
        if script.metrics.locating.swap(true, Ordering::AcqRel) {
            return;
        }
        let (plugins, script_ref, failure) = (self.clone(), script.clone(), failure.clone());
        let hook = key.0;
        let spawned = std::thread::Builder::new()
            .name("leadline-locate".into())
            // Room for the deepest recursion the limits allow, plus the debugger's frames.
            .stack_size(8 * 1024 * 1024)
            .spawn(move || {
                let line = plugins.stopped_at(&script_ref, hook, &failure, args);
                plugins.located(&script_ref, key, &failure, line);
                script_ref.metrics.locating.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start a thread to find a plugin failure's line");
            script.metrics.locating.store(false, Ordering::Release);
        }
    }

    /// Where a second run of the call that failed with `failure` stops, stepping on the
    /// locating engine, if it stops with the same error.
    fn stopped_at(
        &self,
        script: &Script,
        hook: Hook,
        failure: &HookFailure,
        args: impl HookArgs,
    ) -> Option<usize> {
        // Stepping is slower: given the same time, a run that hit another limit could be cut
        // off by the clock first. A run the clock cut off gets the same time,
        // to stop about where the first was stopped.
        let timed_out = failure.message.starts_with(engine::TIMED_OUT);
        let timeout = match timed_out {
            true => self.limits().timeout,
            false => (self.limits().timeout * locate::SLOWER_BY).max(locate::AT_LEAST),
        };
        locate::start();
        match self.run(
            (&self.inner.locator, timeout),
            script,
            hook,
            args,
            failure.at,
        ) {
            Err(e)
                if runtime_failure(hook, &e, self.limits(), failure.at).message
                    == failure.message =>
            {
                e.position().line().or_else(locate::stopped_at)
            }
            // Passed, or stopped by something else (a wall-clock cutoff on a busy machine, or
            // before a limit the first run hit later): its line is not this failure's.
            _ => None,
        }
    }

    /// Records the line a failure was located at: for later failures with the same error,
    /// and in the failure shown if it is still this error without a line.
    fn located(
        &self,
        script: &Script,
        key: (Hook, String),
        failure: &HookFailure,
        line: Option<usize>,
    ) {
        remember_line(script, key, line);
        let Some(line) = line else {
            tracing::debug!(file = %script.file, hook = %failure.hook, error = %failure.message,
                "a second run of a failed plugin hook did not fail; its line stays unknown");
            return;
        };
        tracing::warn!(
            file = %script.file,
            line,
            hook = %failure.hook,
            error = %failure.message,
            "plugin hook failure located"
        );
        if let Ok(mut last) = script.metrics.last_error.lock()
            && let Some(last) = last.as_mut()
            && last.line.is_none()
            && last.hook == failure.hook
            && last.message == failure.message
        {
            last.line = Some(line);
        }
    }

    /// Counts and logs a failure found after the call (a wrong shape).
    pub fn record_failure(&self, script: &Script, failure: HookFailure) {
        let m = &script.metrics;
        m.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            file = %script.file,
            line = failure.line,
            hook = %failure.hook,
            error = %failure.message,
            "plugin hook failed; the built-in rule was used"
        );
        if let Ok(mut last) = m.last_error.lock() {
            *last = Some(failure);
        }
    }

    /// Counts and logs, against the script answering `hook`, an answer the server would not
    /// carry out (such as a runaway of enrollments).
    pub fn refuse_answer(&self, loaded: &Loaded, hook: Hook, message: String, now: Millis) {
        match loaded.by_hook.get(&hook) {
            Some(script) => self.record_failure(
                script,
                HookFailure {
                    hook: hook.name().to_owned(),
                    message,
                    line: None,
                    at: now,
                },
            ),
            None => {
                tracing::warn!(hook = hook.name(), error = %message, "a built-in rule's answer was not carried out")
            }
        }
    }

    pub fn defaults(&self) -> &DefaultRules {
        &self.inner.defaults
    }

    /// What `GET /v1/admin/plugins` shows.
    pub fn report(&self) -> PluginsReport {
        let loaded = self.current();
        let scripts = loaded
            .scripts
            .iter()
            .map(|s| {
                let calls = s.metrics.calls.load(Ordering::Relaxed);
                let nanos = s.metrics.nanos.load(Ordering::Relaxed);
                ScriptReport {
                    file: s.file.clone(),
                    hooks: s.hooks.iter().map(|h| h.name().to_owned()).collect(),
                    calls,
                    errors: s.metrics.errors.load(Ordering::Relaxed),
                    last_error: s.metrics.last_error.lock().ok().and_then(|g| g.clone()),
                    mean_time_us: if calls == 0 {
                        0.0
                    } else {
                        nanos as f64 / calls as f64 / 1000.0
                    },
                    loaded_at: s.loaded_at,
                    compile_error: loaded
                        .compile_errors
                        .iter()
                        .find(|c| c.file == s.file)
                        .cloned(),
                }
            })
            .collect::<Vec<_>>();
        let hooks = HOOKS
            .iter()
            .map(|h| {
                (
                    h.name().to_owned(),
                    loaded
                        .by_hook
                        .get(h)
                        .map_or_else(|| "built-in".to_owned(), |s| s.file.clone()),
                )
            })
            .collect();
        let failed_without_version = loaded
            .compile_errors
            .iter()
            .filter(|c| !loaded.scripts.iter().any(|s| s.file == c.file))
            .cloned()
            .collect();
        PluginsReport {
            dir: self.dir().display().to_string(),
            scripts,
            not_loaded: failed_without_version,
            hooks,
            conflicts: loaded.conflicts.clone(),
            thresholds: loaded.thresholds,
            limits: self.limits().clone(),
        }
    }
}

impl Loaded {
    /// The script that answers `hook`, if any.
    pub fn script_for(&self, hook: Hook) -> Option<&Arc<Script>> {
        self.by_hook.get(&hook)
    }
}

/// Keeps where an error of `script` was located, for its later failures.
fn remember_line(script: &Script, key: (Hook, String), line: Option<usize>) {
    if let Ok(mut located) = script.metrics.located.lock() {
        located.insert(key, line);
    }
}

fn runtime_failure(hook: Hook, e: &EvalAltResult, limits: &Limits, now: Millis) -> HookFailure {
    let message = match e {
        EvalAltResult::ErrorTerminated(token, _)
            if token.clone().into_immutable_string().ok().as_deref() == Some(engine::TIMED_OUT) =>
        {
            format!(
                "timed out: still running after {} ms",
                limits.timeout.as_millis()
            )
        }
        other => other.to_string(),
    };
    HookFailure {
        hook: hook.name().to_owned(),
        message,
        line: e.position().line(),
        at: now,
    }
}

fn script_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "rhai") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScriptReport {
    pub file: String,
    pub hooks: Vec<String>,
    pub calls: u64,
    pub errors: u64,
    pub last_error: Option<HookFailure>,
    pub mean_time_us: f64,
    #[serde(serialize_with = "crate::domain::time::serialize_rfc3339")]
    #[schema(value_type = String)]
    pub loaded_at: Millis,
    /// The newest edit failed to compile: this older version is what runs.
    pub compile_error: Option<CompileFailure>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginsReport {
    pub dir: String,
    pub scripts: Vec<ScriptReport>,
    /// Files that never compiled, so nothing of theirs runs.
    pub not_loaded: Vec<CompileFailure>,
    /// Hook name → the file that answers it, or `built-in`.
    pub hooks: BTreeMap<String, String>,
    pub conflicts: Vec<String>,
    pub thresholds: Thresholds,
    pub limits: Limits,
}

/// The top level's constants that the hooks may have inlined: a constant is otherwise found
/// by name in the scope on every use. Names that a function parameter shadows are left out,
/// because Rhai's optimizer does not see parameters and would replace them.
fn inlinable_constants(constants: &Scope<'static>, ast: &AST) -> Scope<'static> {
    let params: std::collections::HashSet<String> = ast
        .iter_functions()
        .flat_map(|f| f.params.into_iter().map(str::to_owned))
        .collect();
    let mut inline = Scope::new();
    for (name, _, value) in constants.iter() {
        if !params.contains(name) {
            inline.push_constant_dynamic(name.to_owned(), value);
        }
    }
    inline
}

#[cfg(test)]
mod tests;
