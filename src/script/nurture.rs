//! Nurture rules: the sequences of `plugins/sequences/*.toml` (with their `if` conditions
//! compiled), the email templates of `plugins/templates/`, and the `on_event` hook that enrolls
//! leads — with the built-in rules of DESIGN.md when no script defines it.

use super::engine::{CallWindow, LeadObj, StatsObj};
use super::hooks::type_name;
use super::{CompileFailure, Hook, Loaded, Plugins};
use crate::domain::lead::Lead;
use crate::domain::sequence::{Sequence, Step};
use crate::domain::stats::ActivityStats;
use crate::domain::time::Millis;
use rhai::{AST, Array, Dynamic, Engine, Map, Scope};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// A sequence ready to run: its steps and the compiled condition of each `if` step.
#[derive(Debug)]
pub struct SequenceRt {
    pub def: Sequence,
    pub file: String,
    conditions: BTreeMap<usize, AST>,
}

/// One email template: subject, text part and optional HTML part, each a minijinja template,
/// compiled once when loaded.
#[derive(Debug, Clone)]
pub struct TemplateSource {
    pub name: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    compiled: Arc<minijinja::Environment<'static>>,
}

impl TemplateSource {
    /// Compiles the parts. The HTML part escapes what it inserts; the others do not.
    pub fn new(
        name: &str,
        subject: String,
        text: String,
        html: Option<String>,
    ) -> Result<TemplateSource, String> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        env.set_auto_escape_callback(|part| {
            if part == "html" {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        let parts = [
            ("subject", Some(&subject)),
            ("text", Some(&text)),
            ("html", html.as_ref()),
        ];
        for (part, src) in parts {
            if let Some(src) = src {
                env.add_template_owned(part, src.clone())
                    .map_err(|e| format!("{name}.{}: {e}", ext(part)))?;
            }
        }
        Ok(TemplateSource {
            name: name.to_owned(),
            subject,
            text,
            html,
            compiled: Arc::new(env),
        })
    }
}

fn ext(part: &str) -> &str {
    if part == "text" { "txt" } else { part }
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// What `plugins/sequences` and `plugins/templates` hold now.
#[derive(Default)]
pub struct Library {
    pub sequences: BTreeMap<String, Arc<SequenceRt>>,
    pub templates: BTreeMap<String, Arc<TemplateSource>>,
    /// Files that could not be used, and why.
    pub errors: Vec<CompileFailure>,
    /// Sequences whose file is there but has a mistake, with no good version to run instead
    /// (the server started with it broken).
    pub broken: BTreeSet<String>,
}

/// Something `on_event` asks the server to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Enroll(String),
    Unenroll(String),
    /// A task for the lead's owner, due this long (ms) from now if given.
    Task {
        title: String,
        due_in: Option<i64>,
    },
    /// A notification to the lead's owner.
    Notify(String),
    /// One field of the lead set to a value, as a sequence's `set` step sets it: `status`,
    /// `stage`, `tags` (adds one) or `fields.<name>`.
    Set {
        field: String,
        value: serde_json::Value,
    },
    /// Another action, carried out this long (ms) from now on the lead as it is then.
    Later {
        after: i64,
        action: Box<Action>,
    },
}

impl Action {
    /// The action as the map its function builds (`#{ enroll: "welcome" }`), in JSON: how a
    /// `later` action is kept until it is due.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Action::Enroll(name) => json!({ "enroll": name }),
            Action::Unenroll(name) => json!({ "unenroll": name }),
            Action::Task {
                title,
                due_in: None,
            } => json!({ "task": title }),
            Action::Task {
                title,
                due_in: Some(ms),
            } => json!({ "task": title, "due_in_hours": ms / 3_600_000 }),
            Action::Notify(message) => json!({ "notify": message }),
            Action::Set { field, value } => json!({ "set": field, "value": value }),
            Action::Later { after, action } => {
                let after = if after % 3_600_000 == 0 {
                    json!(after / 3_600_000)
                } else {
                    json!(format!("{}m", after / 60_000))
                };
                json!({ "later": after, "action": action.to_json() })
            }
        }
    }

    /// Reads back what [`Action::to_json`] wrote.
    pub fn from_json(v: &serde_json::Value) -> Result<Action, String> {
        let d: Dynamic = rhai::serde::to_dynamic(v).map_err(|e| e.to_string())?;
        match d.try_cast::<Map>() {
            Some(m) => action(&m),
            None => Err(format!("{v} is not an action")),
        }
    }
}

/// The longest task title or notification an `on_event` action may carry.
const MAX_ACTION_TEXT: usize = 500;
/// The furthest ahead an `on_event` task may be due: a year.
const MAX_DUE_IN_HOURS: i64 = 24 * 366;

/// What happened to a lead, as `on_event` sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeadEventIn {
    /// `lead.created`, `lead.scored`, `activity.created`, `sequence.completed`.
    pub kind: String,
    /// For `lead.scored`: the score before and after.
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// For `activity.created`: its kind and page path.
    pub activity: Option<String>,
    pub path: Option<String>,
    /// For `sequence.completed`: which.
    pub sequence: Option<String>,
    /// Every sequence the lead has ever been enrolled in.
    pub sequences: Vec<String>,
}

impl LeadEventIn {
    pub fn of(kind: &str) -> Self {
        LeadEventIn {
            kind: kind.to_owned(),
            ..Default::default()
        }
    }

    fn to_map(&self) -> Map {
        let mut m = Map::new();
        let s = |v: &Option<String>| v.clone().map_or(Dynamic::UNIT, Dynamic::from);
        let i = |v: Option<i64>| v.map_or(Dynamic::UNIT, Dynamic::from_int);
        m.insert("kind".into(), Dynamic::from(self.kind.clone()));
        m.insert("from".into(), i(self.from));
        m.insert("to".into(), i(self.to));
        m.insert("activity".into(), s(&self.activity));
        m.insert("path".into(), s(&self.path));
        m.insert("sequence".into(), s(&self.sequence));
        let seqs: Array = self.sequences.iter().cloned().map(Dynamic::from).collect();
        m.insert("sequences".into(), Dynamic::from(seqs));
        m
    }
}

pub(super) fn register_actions(engine: &mut Engine) {
    engine
        .register_fn("enroll", |name: &str| -> Map {
            let mut m = Map::new();
            m.insert("enroll".into(), Dynamic::from(name.to_owned()));
            m
        })
        .register_fn("unenroll", |name: &str| -> Map {
            let mut m = Map::new();
            m.insert("unenroll".into(), Dynamic::from(name.to_owned()));
            m
        })
        .register_fn("task", |title: &str| -> Map {
            let mut m = Map::new();
            m.insert("task".into(), Dynamic::from(title.to_owned()));
            m
        })
        .register_fn("task", |title: &str, due_in_hours: i64| -> Map {
            let mut m = Map::new();
            m.insert("task".into(), Dynamic::from(title.to_owned()));
            m.insert("due_in_hours".into(), Dynamic::from_int(due_in_hours));
            m
        })
        .register_fn("notify", |message: &str| -> Map {
            let mut m = Map::new();
            m.insert("notify".into(), Dynamic::from(message.to_owned()));
            m
        })
        .register_fn("later", |after: i64, action: Map| -> Map {
            let mut m = Map::new();
            m.insert("later".into(), Dynamic::from_int(after));
            m.insert("action".into(), Dynamic::from_map(action));
            m
        })
        .register_fn("later", |after: &str, action: Map| -> Map {
            let mut m = Map::new();
            m.insert("later".into(), Dynamic::from(after.to_owned()));
            m.insert("action".into(), Dynamic::from_map(action));
            m
        })
        .register_fn("set", |field: &str, value: Dynamic| -> Map {
            let mut m = Map::new();
            m.insert("set".into(), Dynamic::from(field.to_owned()));
            m.insert("value".into(), value);
            m
        });
}

const ACTION_SHAPES: &str = "an action is enroll(\"name\"), unenroll(\"name\"), \
     task(\"title\"), task(\"title\", due_in_hours), notify(\"message\"), \
     set(\"field\", value) or later(hours or \"duration\", action)";

/// Reads a `later` action: how long from now (whole hours, or a duration such as `"30m"` or
/// `"2d"`, at least a minute when given as one) and the action to carry out then.
fn later_action(after: &Dynamic, inner: Option<&Dynamic>) -> Result<Action, String> {
    const USAGE: &str = "later: give hours or a duration, then an action, as in \
         later(24, enroll(\"pricing_roi\")) or later(\"30m\", notify(\"…\"))";
    let max = MAX_DUE_IN_HOURS * 3_600_000;
    let after = if let Ok(hours) = after.as_int() {
        if !(0..=MAX_DUE_IN_HOURS).contains(&hours) {
            return Err(format!(
                "later: a whole number of hours from 0 to {MAX_DUE_IN_HOURS}, not {hours}"
            ));
        }
        hours * 3_600_000
    } else if let Ok(text) = after.clone().into_immutable_string() {
        match crate::domain::sequence::parse_duration(&text) {
            Ok(ms) if (60_000..=max).contains(&ms) => ms,
            Ok(_) => return Err(format!("later: `{text}` is not from a minute to a year")),
            Err(e) => return Err(format!("later: `{text}` {e}")),
        }
    } else {
        return Err(USAGE.into());
    };
    let Some(inner) = inner.and_then(|d| d.clone().try_cast::<Map>()) else {
        return Err(USAGE.into());
    };
    match action(&inner)? {
        Action::Later { .. } => Err("later: the action to carry out later cannot be another \
             later(…); add the hours up"
            .into()),
        a => Ok(Action::Later {
            after,
            action: Box::new(a),
        }),
    }
}

/// Checks what a `set` action would write: a field it may set, with a value that field takes.
fn set_action(field: String, value: Option<&Dynamic>) -> Result<Action, String> {
    if !crate::domain::sequence::settable(&field) {
        return Err(format!(
            "set: `{field}` cannot be set (use status, stage, tags or fields.<name>)"
        ));
    }
    let Some(value) = value else {
        return Err(format!(
            "set: give `{field}` a value, as in set(\"{field}\", value)"
        ));
    };
    let value: serde_json::Value =
        rhai::serde::from_dynamic(value).map_err(|e| format!("set: {field}: {e}"))?;
    if !crate::domain::sequence::set_value_fits(&field, &value) {
        return Err(format!(
            "set: {value} is not a value `{field}` takes ({})",
            match field.as_str() {
                "status" => "a status such as \"nurturing\"",
                "stage" => "a stage such as \"mql\"",
                _ => "a tag of 1 to 100 characters",
            }
        ));
    }
    Ok(Action::Set { field, value })
}

/// One action map, as the action functions build it.
fn action(m: &Map) -> Result<Action, String> {
    let text = |k: &str| -> Option<Result<String, String>> {
        let v = m.get(k)?;
        Some(match v.clone().into_immutable_string() {
            Ok(s) if s.trim().is_empty() => Err(format!("{k}: must not be empty")),
            Ok(s) if s.chars().count() > MAX_ACTION_TEXT => {
                Err(format!("{k}: at most {MAX_ACTION_TEXT} characters"))
            }
            Ok(s) => Ok(s.trim().to_owned()),
            Err(t) => Err(format!("{k}: a string, not {t}")),
        })
    };
    let only = |keys: &[&str]| m.keys().all(|k| keys.contains(&k.as_str()));
    if let Some(name) = text("enroll").filter(|_| only(&["enroll"])) {
        return name.map(Action::Enroll);
    }
    if let Some(name) = text("unenroll").filter(|_| only(&["unenroll"])) {
        return name.map(Action::Unenroll);
    }
    if let Some(message) = text("notify").filter(|_| only(&["notify"])) {
        return message.map(Action::Notify);
    }
    if let Some(after) = m.get("later").filter(|_| only(&["later", "action"])) {
        return later_action(after, m.get("action"));
    }
    if let Some(field) = text("set").filter(|_| only(&["set", "value"])) {
        return set_action(field?, m.get("value"));
    }
    if let Some(title) = text("task").filter(|_| only(&["task", "due_in_hours"])) {
        let due_in = match m.get("due_in_hours") {
            None => None,
            Some(h) => match h.as_int() {
                Ok(h) if (0..=MAX_DUE_IN_HOURS).contains(&h) => Some(h * 3_600_000),
                _ => {
                    return Err(format!(
                        "due_in_hours: a whole number of hours from 0 to {MAX_DUE_IN_HOURS}"
                    ));
                }
            },
        };
        return title.map(|title| Action::Task { title, due_in });
    }
    Err(ACTION_SHAPES.into())
}

/// Reads `on_event`'s answer: `()`, one action, or an array of them.
pub(crate) fn actions(d: Dynamic) -> Result<Vec<Action>, String> {
    if d.is_unit() {
        return Ok(Vec::new());
    }
    let items: Vec<Dynamic> = if d.is_array() {
        d.cast::<Array>()
    } else {
        vec![d]
    };
    items
        .into_iter()
        .filter(|d| !d.is_unit())
        .map(|d| {
            if !d.is_map() {
                return Err(format!(
                    "{}, not an action like enroll(\"welcome\")",
                    type_name(&d)
                ));
            }
            action(&d.cast::<Map>())
        })
        .collect()
}

/// The built-in nurture rules (DESIGN.md); `plugins/nurture.rhai` says the same.
/// (A trial or demo request within the day is checked by the `pricing_roi` sequence itself.)
pub fn default_actions(event: &LeadEventIn, lead: &Lead) -> Vec<Action> {
    let mut out = Vec::new();
    let ever = |s: &str| event.sequences.iter().any(|x| x == s);
    match event.kind.as_str() {
        "lead.created" if lead.score.total < 40 => out.push(Action::Enroll("welcome".into())),
        "activity.created"
            if event.activity.as_deref() == Some("page_view")
                && event.path.as_deref().is_some_and(|p| p.contains("pricing"))
                && !ever("pricing_roi") =>
        {
            out.push(Action::Enroll("pricing_roi".into()))
        }
        "lead.scored"
            if event.from.is_some_and(|f| f < 60) && event.to.is_some_and(|t| t >= 60) =>
        {
            out.push(Action::Enroll("high_intent".into()))
        }
        "sequence.completed" if event.sequence.as_deref() == Some("welcome") => {
            out.push(Action::Enroll("long_term".into()))
        }
        _ => {}
    }
    out
}

impl Plugins {
    /// What to do about `event` on `lead`: the `on_event` hook, or the built-in rules.
    pub fn on_event(
        &self,
        loaded: &Loaded,
        event: &LeadEventIn,
        lead: &Lead,
        now: Millis,
    ) -> Vec<Action> {
        // No script: the built-in rule, without copying the lead for a call never made.
        if loaded.script_for(Hook::OnEvent).is_none() {
            return default_actions(event, lead);
        }
        let args = (
            Dynamic::from(event.to_map()),
            LeadObj(Arc::new(lead.clone())),
        );
        match self.call(loaded, Hook::OnEvent, args, now) {
            None => default_actions(event, lead),
            Some((script, result)) => self
                .checked(&script, Hook::OnEvent, result, actions, now)
                .unwrap_or_else(|_| default_actions(event, lead)),
        }
    }

    /// Evaluates the condition of `seq`'s `if` step `index` on the lead. A condition that
    /// fails (or is not a bool) counts as false, with the failure logged.
    pub fn condition(
        &self,
        seq: &SequenceRt,
        index: usize,
        lead: &Lead,
        stats: &ActivityStats,
        now: Millis,
    ) -> Result<bool, String> {
        let Some(ast) = seq.conditions.get(&index) else {
            return Err(format!("step {} has no condition", index + 1));
        };
        let mut scope = Scope::new();
        scope.push_constant("lead", LeadObj(Arc::new(lead.clone())));
        scope.push_constant(
            "stats",
            StatsObj {
                stats: Arc::new(stats.clone()),
                created_at: lead.created_at,
                now,
            },
        );
        let _window = CallWindow::open(self.limits().timeout, now);
        let value = self
            .engine()
            .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
            .map_err(|e| format!("{}: step {}: {e}", seq.file, index + 1))?;
        value.as_bool().map_err(|t| {
            format!(
                "{}: step {}: the condition gave {t}, not true or false",
                seq.file,
                index + 1
            )
        })
    }
}

impl Loaded {
    pub fn sequence(&self, name: &str) -> Option<Arc<SequenceRt>> {
        self.library.sequences.get(name).cloned()
    }

    /// Whether `name`'s file is there but cannot run until its mistake is mended.
    pub fn sequence_is_broken(&self, name: &str) -> bool {
        self.library.broken.contains(name)
    }

    pub fn template(&self, name: &str) -> Option<Arc<TemplateSource>> {
        self.library.templates.get(name).cloned()
    }

    pub fn library(&self) -> &Library {
        &self.library
    }
}

/// Renders a template with `context` (the lead, its owner, links). Undefined names render
/// empty rather than failing, so a template may mention a field a lead lacks.
pub fn render(t: &TemplateSource, context: &serde_json::Value) -> Result<Rendered, String> {
    // A field the lead lacks is absent, not null, so it renders empty rather than "none".
    // Converted once for all three parts: the conversion costs more than a short render.
    let context = minijinja::Value::from_serialize(without_nulls(context.clone()));
    let part = |name: &str| -> Result<Option<String>, String> {
        match t.compiled.get_template(name) {
            Ok(tpl) => tpl
                .render(&context)
                .map(Some)
                .map_err(|e| format!("template {}.{}: {e}", t.name, ext(name))),
            Err(_) => Ok(None),
        }
    };
    let subject = part("subject")?
        .unwrap_or_default()
        .replace(['\r', '\n'], " ")
        .trim()
        .to_owned();
    Ok(Rendered {
        subject,
        text: part("text")?.unwrap_or_default(),
        html: part("html")?,
    })
}

fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Loads `dir/sequences/*.toml` and `dir/templates/*.{subject,txt,html}`. Problems are
/// reported per file; the rest loads, and a file that fails keeps its last good version from
/// `previous` (a typo saved mid-edit must not end every enrollment in that sequence).
pub(super) fn load_library(
    engine: &Engine,
    dir: &Path,
    now: Millis,
    previous: &Library,
) -> Library {
    let mut lib = Library::default();
    if dir.as_os_str().is_empty() {
        return lib;
    }
    let fail = |file: String, message: String| CompileFailure {
        file,
        // TOML's own errors say where: "TOML parse error at line 26, column 1".
        line: message
            .strip_prefix("TOML parse error at line ")
            .and_then(|rest| rest.split(',').next()?.parse().ok()),
        message,
        at: now,
    };
    // Templates first, so sequences can be checked against them.
    let tdir = dir.join("templates");
    // Per template: its subject, text and HTML files, as found.
    let mut parts: BTreeMap<String, [Option<String>; 3]> = BTreeMap::new();
    for (path, name) in files(&tdir, &mut lib.errors, now) {
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        let slot = match ext {
            "subject" => 0,
            "txt" => 1,
            "html" => 2,
            _ => continue,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                parts.entry(stem.to_owned()).or_default()[slot] = Some(text);
            }
            Err(e) => lib
                .errors
                .push(fail(format!("templates/{name}"), e.to_string())),
        }
    }
    for (name, [subject, text, html]) in parts {
        let file = format!("templates/{name}");
        // A syntax error shows now, not when the first email is due.
        let made = match (subject, text) {
            (Some(subject), Some(text)) => TemplateSource::new(&name, subject, text, html),
            _ => Err("a template needs NAME.subject and NAME.txt (NAME.html is optional)".into()),
        };
        match made {
            Ok(t) => {
                lib.templates.insert(name, Arc::new(t));
            }
            Err(e) => {
                lib.errors.push(fail(file, e));
                if let Some(last_good) = previous.templates.get(&name) {
                    lib.templates.insert(name, last_good.clone());
                }
            }
        }
    }
    for (path, name) in files(&dir.join("sequences"), &mut lib.errors, now) {
        let Some(stem) = name.strip_suffix(".toml") else {
            continue;
        };
        let file = format!("sequences/{name}");
        let loaded = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| Sequence::parse(stem, &text))
            .and_then(|def| compile_sequence(engine, def, &file, &lib));
        match loaded {
            Ok(rt) => {
                lib.sequences.insert(stem.to_owned(), Arc::new(rt));
            }
            Err(m) => {
                lib.errors.push(fail(file, m));
                match previous.sequences.get(stem) {
                    Some(last_good) => {
                        lib.sequences.insert(stem.to_owned(), last_good.clone());
                    }
                    None => {
                        lib.broken.insert(stem.to_owned());
                    }
                }
            }
        }
    }
    for e in &lib.errors {
        tracing::error!(file = %e.file, error = %e.message, "nurture file not loaded");
    }
    lib
}

fn compile_sequence(
    engine: &Engine,
    def: Sequence,
    file: &str,
    lib: &Library,
) -> Result<SequenceRt, String> {
    if let Some(t) = def.templates().find(|t| !lib.templates.contains_key(*t)) {
        return Err(format!("no template `{t}` in plugins/templates"));
    }
    let mut conditions = BTreeMap::new();
    for (i, s) in def.steps.iter().enumerate() {
        if let Step::Branch { condition, .. } = s {
            let ast = engine
                .compile_expression(condition)
                .map_err(|e| format!("step {}: if: {e}", i + 1))?;
            conditions.insert(i, ast);
        }
    }
    Ok(SequenceRt {
        def,
        file: file.to_owned(),
        conditions,
    })
}

fn files(
    dir: &Path,
    errors: &mut Vec<CompileFailure>,
    now: Millis,
) -> Vec<(std::path::PathBuf, String)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(CompileFailure {
                file: dir.display().to_string(),
                message: e.to_string(),
                line: None,
                at: now,
            });
            return Vec::new();
        }
    };
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((p, name))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lead::NewLead;

    #[test]
    fn an_answer_reads_as_actions_and_a_bad_one_says_what_an_action_is() {
        let engine = crate::script::engine::build(&crate::script::Limits::default());
        let answer = |src: &str| actions(engine.eval::<Dynamic>(src).expect(src));
        assert_eq!(
            answer(
                r#"[enroll("welcome"), task(" Call back "), task("Demo", 2), notify("Hot lead")]"#
            ),
            Ok(vec![
                Action::Enroll("welcome".into()),
                Action::Task {
                    title: "Call back".into(),
                    due_in: None
                },
                Action::Task {
                    title: "Demo".into(),
                    due_in: Some(2 * 3_600_000)
                },
                Action::Notify("Hot lead".into()),
            ])
        );
        assert_eq!(answer("()"), Ok(Vec::new()));
        assert_eq!(
            answer(
                r#"[set("stage", "sql"), set("fields.budget", #{ amount: 5000 }), set("tags", "vip")]"#
            ),
            Ok(vec![
                Action::Set {
                    field: "stage".into(),
                    value: serde_json::json!("sql")
                },
                Action::Set {
                    field: "fields.budget".into(),
                    value: serde_json::json!({"amount": 5000})
                },
                Action::Set {
                    field: "tags".into(),
                    value: serde_json::json!("vip")
                },
            ])
        );
        for bad in [
            r#"task("")"#,
            r#"task("x", -1)"#,
            r#"task("x", 100000)"#,
            r#"#{ task: "x", owner: "me" }"#,
            r#"#{ notify: 5 }"#,
            r#"#{ set: "stage" }"#,
            r#"set("owner_id", "x")"#,
            r#"set("stage", "won")"#,
            r#"set("status", 5)"#,
            r#"set("tags", "  ")"#,
            r#"#{ set: "tags", value: "a", notify: "b" }"#,
            r#""enroll""#,
        ] {
            assert!(answer(bad).is_err(), "{bad}");
        }
        assert!(
            answer(r#"#{ remind: 1 }"#)
                .unwrap_err()
                .contains("notify(\"message\")")
        );
    }

    #[test]
    fn later_takes_hours_or_a_duration_and_any_other_action_and_keeps_as_json() {
        let engine = crate::script::engine::build(&crate::script::Limits::default());
        let answer = |src: &str| actions(engine.eval::<Dynamic>(src).expect(src));
        let got = answer(
            r#"[later(24, enroll("pricing_roi")), later("90m", set("fields.stage_hint", 3)),
                later(0, task("Now", 2))]"#,
        )
        .expect("actions");
        assert_eq!(
            got,
            vec![
                Action::Later {
                    after: 24 * 3_600_000,
                    action: Box::new(Action::Enroll("pricing_roi".into()))
                },
                Action::Later {
                    after: 90 * 60_000,
                    action: Box::new(Action::Set {
                        field: "fields.stage_hint".into(),
                        value: serde_json::json!(3)
                    })
                },
                Action::Later {
                    after: 0,
                    action: Box::new(Action::Task {
                        title: "Now".into(),
                        due_in: Some(2 * 3_600_000)
                    })
                },
            ]
        );
        for a in &got {
            let Action::Later { action, .. } = a else {
                unreachable!()
            };
            assert_eq!(Action::from_json(&action.to_json()).as_ref(), Ok(&**action));
            assert_eq!(Action::from_json(&a.to_json()).as_ref(), Ok(a));
        }
        for (bad, says) in [
            (r#"later(-1, notify("x"))"#, "hours from 0"),
            (r#"later("30s", notify("x"))"#, "a minute to a year"),
            (r#"later("soon", notify("x"))"#, "later: `soon`"),
            (r#"later(1, later(1, notify("x")))"#, "another"),
            (r#"later(1, notify(""))"#, "must not be empty"),
            (r#"#{ later: 1 }"#, "then an action"),
            (r#"#{ later: 1, action: "notify" }"#, "then an action"),
        ] {
            let e = answer(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    fn lead(score: i32) -> Lead {
        let mut l = NewLead::default().into_lead(uuid::Uuid::nil(), 0);
        l.score.total = score;
        l
    }

    #[test]
    fn the_built_in_rules_enroll_as_design_md_says() {
        let created = LeadEventIn {
            kind: "lead.created".into(),
            ..Default::default()
        };
        assert_eq!(
            default_actions(&created, &lead(10)),
            [Action::Enroll("welcome".into())]
        );
        assert!(default_actions(&created, &lead(45)).is_empty());
        let pricing = LeadEventIn {
            kind: "activity.created".into(),
            activity: Some("page_view".into()),
            path: Some("/pricing".into()),
            ..Default::default()
        };
        assert_eq!(
            default_actions(&pricing, &lead(10)),
            [Action::Enroll("pricing_roi".into())]
        );
        let again = LeadEventIn {
            sequences: vec!["pricing_roi".into()],
            ..pricing.clone()
        };
        assert!(default_actions(&again, &lead(10)).is_empty());
        let crossed = LeadEventIn {
            kind: "lead.scored".into(),
            from: Some(55),
            to: Some(62),
            ..Default::default()
        };
        assert_eq!(
            default_actions(&crossed, &lead(62)),
            [Action::Enroll("high_intent".into())]
        );
        let done = LeadEventIn {
            kind: "sequence.completed".into(),
            sequence: Some("welcome".into()),
            ..Default::default()
        };
        assert_eq!(
            default_actions(&done, &lead(10)),
            [Action::Enroll("long_term".into())]
        );
    }

    #[test]
    fn on_event_answers_are_checked() {
        let mut m = Map::new();
        m.insert("enroll".into(), Dynamic::from("welcome"));
        assert_eq!(
            actions(Dynamic::from(m.clone())),
            Ok(vec![Action::Enroll("welcome".into())])
        );
        let arr: Array = vec![Dynamic::from(m), Dynamic::UNIT];
        assert_eq!(actions(Dynamic::from(arr)).map(|a| a.len()), Ok(1));
        assert_eq!(actions(Dynamic::UNIT), Ok(vec![]));
        assert!(actions(Dynamic::from(3_i64)).is_err());
    }

    #[test]
    fn templates_render_the_lead_and_escape_html() {
        let t = TemplateSource::new(
            "t",
            "Hello {{ lead.name }}\n".into(),
            "Hi {{ lead.name }}, {{ lead.missing }}!".into(),
            Some("<p>{{ lead.name }}</p>".into()),
        )
        .unwrap();
        let r = render(
            &t,
            &serde_json::json!({"lead": {"name": "<王总>", "missing": null}}),
        )
        .unwrap();
        assert_eq!(r.subject, "Hello <王总>");
        assert_eq!(r.text, "Hi <王总>, !");
        assert_eq!(r.html.as_deref(), Some("<p>&lt;王总&gt;</p>"));
    }
}
