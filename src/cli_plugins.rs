//! `leadline plugins check`, `leadline plugins test` and `leadline rescore`: the admin's tools
//! for changing rules safely.

use crate::cli::{ConfigArgs, load};
use crate::clock::SystemClock;
use crate::config::{Config, Overrides};
use crate::domain::lead::{Lead, LeadInput, NewLead};
use crate::domain::score::DAY_MS;
use crate::domain::stats::ActivityStats;
use crate::domain::time::{Millis, parse_rfc3339};
use crate::script::{DryRun, HOOKS, Hook, Plugins, StatsInput};
use anyhow::{Context, anyhow};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Plugins directory (default ./plugins; also LEADLINE_PLUGINS_DIR).
    #[arg(long, value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RescoreArgs {
    #[command(flatten)]
    pub plugins: PluginArgs,
    /// Only report how many leads would change score and stage, with examples.
    #[arg(long)]
    pub dry_run: bool,
}

fn config(args: &PluginArgs) -> anyhow::Result<Config> {
    load(
        &args.config,
        Overrides {
            plugins_dir: args.plugins_dir.clone(),
            ..Overrides::default()
        },
    )
}

fn now() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// Leads that exercise the usual branches of a rule: empty, Chinese, English, personal mail.
fn sample_leads(now: Millis) -> Vec<(String, Lead, ActivityStats)> {
    let mk = |f: &dyn Fn(&mut NewLead)| {
        let mut n = NewLead::default();
        f(&mut n);
        n.into_lead(Uuid::nil(), now - 10 * DAY_MS)
    };
    vec![
        (
            "an empty lead".into(),
            mk(&|_| {}),
            ActivityStats::default(),
        ),
        (
            "王总, 总经理 at a retailer, from a trade show, with a demo request".into(),
            mk(&|n| {
                n.name = Some("王总".into());
                n.title = Some("总经理".into());
                n.company = Some("纷享销客".into());
                n.industry = Some("retail".into());
                n.company_size = Some(120);
                n.channel = Some("event".into());
                n.email = Some("wang@example.cn".into());
            }),
            ActivityStats::from_counts(
                [("demo_request", 1), ("page_view", 6)],
                [("/pricing", 2)],
                now - DAY_MS,
            ),
        ),
        (
            "a quiet engineer with a personal email".into(),
            mk(&|n| {
                n.title = Some("Engineer".into());
                n.email = Some("someone@gmail.com".into());
                n.flags.personal_email = true;
                n.utm.source = Some("google".into());
                n.utm.medium = Some("organic".into());
                n.channel = Some("organic_search".into());
            }),
            ActivityStats::from_counts([("email_open", 1)], [], now - 200 * DAY_MS),
        ),
    ]
}

fn sample_args(hook: Hook) -> Vec<Value> {
    match hook {
        Hook::Route => vec![json!([
            {"id": "0190a000-0000-7000-8000-000000000001", "team": "East", "territories": ["CN-31"], "senior": true},
            {"id": "0190a000-0000-7000-8000-000000000002", "team": "East", "territories": ["CN-31"]},
            {"id": "0190a000-0000-7000-8000-000000000003", "team": "West", "territories": ["CN-44"]}
        ])],
        Hook::OnEvent => vec![json!({"kind": "lead.created"})],
        Hook::StageGate => vec![
            json!({"stage": "discovery", "fields": {}}),
            json!("proposal"),
        ],
        _ => Vec::new(),
    }
}

/// Compiles every script and runs each hook it defines on sample leads.
pub fn check(args: PluginArgs) -> anyhow::Result<ExitCode> {
    let config = config(&args)?;
    // Checking a directory that is not there would pass, which says nothing.
    if !config.plugins_dir.is_dir() {
        anyhow::bail!(
            "there is no plugins directory {} (check --plugins-dir)",
            config.plugins_dir.display()
        );
    }
    let now = now();
    let plugins = Plugins::load(config.plugin_settings(), now);
    let report = plugins.report();
    println!("plugins in {}", plugins.dir().display());
    let mut failed = false;
    for f in &report.not_loaded {
        failed = true;
        println!("  FAIL {}: does not compile: {}", f.file, f.message);
    }
    for c in &report.conflicts {
        println!("  note: {c}");
    }
    if report.scripts.is_empty() && report.not_loaded.is_empty() {
        println!("  no scripts: every hook uses its built-in rule");
    }
    for script in &report.scripts {
        let hooks: Vec<Hook> = script.hooks.iter().filter_map(|h| Hook::parse(h)).collect();
        println!("  {}: hooks {}", script.file, script.hooks.join(", "));
        for hook in hooks {
            if report.hooks.get(hook.name()) != Some(&script.file) {
                continue;
            }
            for (what, lead, stats) in sample_leads(now) {
                let out = plugins.dry_run(hook, &lead, &stats, sample_args(hook), now);
                match &out.error {
                    None => println!("    ok   {}({what}) = {}", hook.name(), short(&out)),
                    Some(e) => {
                        failed = true;
                        let line = e.line.map(|l| format!(" (line {l})")).unwrap_or_default();
                        println!("    FAIL {}({what}){line}: {}", hook.name(), e.message);
                    }
                }
            }
        }
    }
    let loaded = plugins.current();
    let library = loaded.library();
    if !library.sequences.is_empty() {
        let names: Vec<&str> = library.sequences.keys().map(String::as_str).collect();
        println!("  sequences/: {}", names.join(", "));
    }
    // Each template renders for a sample lead and owner, so a mistake shows before a send.
    let sample = serde_json::json!({
        "lead": {"name": "王总", "email": "wang@example.cn", "company": "纷享销客",
                 "title": "总经理", "score": 55, "stage": "mql", "fields": {}},
        "owner": {"name": "li.lei", "email": "li.lei@example.cn"},
        "unsubscribe_url": "https://leads.example/u/sample",
    });
    for (name, t) in &library.templates {
        match crate::script::nurture::render(t, &sample) {
            Ok(r) => println!("    ok   template {name}: {}", r.subject),
            Err(e) => {
                failed = true;
                println!("    FAIL template {name}: {e}");
            }
        }
    }
    let unused: Vec<&str> = HOOKS
        .iter()
        .filter(|h| report.hooks.get(h.name()).is_some_and(|s| s == "built-in"))
        .map(|h| h.name())
        .collect();
    if !unused.is_empty() {
        println!("  built-in rules for: {}", unused.join(", "));
    }
    Ok(if failed {
        println!("plugins check failed");
        ExitCode::FAILURE
    } else {
        println!("plugins check passed");
        ExitCode::SUCCESS
    })
}

fn short(out: &DryRun) -> String {
    match out.result.get("total") {
        Some(total) => format!(
            "{total} ({} reasons)",
            out.result["reasons"].as_array().map_or(0, Vec::len)
        ),
        None => {
            let s = out.result.to_string();
            if s.chars().count() > 80 {
                format!("{}…", s.chars().take(80).collect::<String>())
            } else {
                s
            }
        }
    }
}

/// One case in `plugins/tests/*.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    description: Option<String>,
    hook: Option<String>,
    now: Option<String>,
    lead: toml::Table,
    #[serde(default)]
    stats: Option<toml::Table>,
    /// The hook's other arguments, as the dry run takes them (`on_event`: the event).
    args: Option<Vec<toml::Value>>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    total: Option<i64>,
    parts: Option<toml::Table>,
    reasons: Option<Vec<String>>,
    stage: Option<String>,
    /// The whole answer, as the dry run shows it; for any hook.
    result: Option<toml::Value>,
}

impl Expect {
    /// The score-only expectations this case sets, by name.
    fn score_fields(&self) -> Vec<&'static str> {
        [
            ("total", self.total.is_some()),
            ("parts", self.parts.is_some()),
            ("reasons", self.reasons.is_some()),
            ("stage", self.stage.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// Where `got` differs from `want`, one line per difference, named by its path.
fn json_diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    Some(gv) => json_diff(&p, wv, gv, out),
                    None => out.push(format!("{p}: expected {wv}, missing")),
                }
            }
            for (k, gv) in g.iter().filter(|(k, _)| !w.contains_key(*k)) {
                out.push(format!("{path}.{k}: not expected, got {gv}"));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                json_diff(&format!("{path}[{i}]"), wv, gv, out);
            }
            if w.len() != g.len() {
                out.push(format!(
                    "{path}: expected {} items, got {}{}",
                    w.len(),
                    g.len(),
                    match g.get(w.len()..) {
                        Some(extra) if !extra.is_empty() =>
                            format!(" (also {})", Value::from(extra)),
                        _ => String::new(),
                    }
                ));
            }
        }
        (w, g) if w == g => {}
        (w, g) => out.push(format!("{path}: expected {w}, got {g}")),
    }
}

/// Runs the cases in `plugins/tests/` and prints a readable difference for each failure.
pub fn test(args: PluginArgs) -> anyhow::Result<ExitCode> {
    let config = config(&args)?;
    let plugins = Plugins::load(config.plugin_settings(), now());
    let report = plugins.report();
    let broken: Vec<_> = report
        .not_loaded
        .iter()
        .chain(
            report
                .scripts
                .iter()
                .filter_map(|s| s.compile_error.as_ref()),
        )
        .collect();
    if !broken.is_empty() {
        for f in broken {
            println!("FAIL {}: does not compile: {}", f.file, f.message);
        }
        return Ok(ExitCode::FAILURE);
    }
    let dir = plugins.dir().join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let rules = config.normalize_rules();
    let (mut passed, mut failed) = (0, 0);
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match run_case(&plugins, &rules, path) {
            Ok((description, diffs)) if diffs.is_empty() => {
                passed += 1;
                println!("ok   {name} — {description}");
            }
            Ok((description, diffs)) => {
                failed += 1;
                println!("FAIL {name} — {description}");
                for d in diffs {
                    println!("     {d}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {name}: {e:#}");
            }
        }
    }
    println!(
        "{passed} passed, {failed} failed ({} cases in {})",
        files.len(),
        dir.display()
    );
    Ok(if failed == 0 && !files.is_empty() {
        ExitCode::SUCCESS
    } else {
        if files.is_empty() {
            println!("no cases found: add *.toml files to {}", dir.display());
        }
        ExitCode::FAILURE
    })
}

fn run_case(
    plugins: &Plugins,
    rules: &crate::domain::lead::NormalizeRules,
    path: &Path,
) -> anyhow::Result<(String, Vec<String>)> {
    let text = std::fs::read_to_string(path)?;
    let case: TestCase = toml::from_str(&text).map_err(|e| anyhow!("{e}"))?;
    let hook_name = case.hook.as_deref().unwrap_or("score");
    let hook = Hook::parse(hook_name).ok_or_else(|| {
        anyhow!(
            "hook {hook_name:?}: not a hook (one of {})",
            HOOKS
                .iter()
                .map(|h| h.name())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    if hook != Hook::Score && !case.expect.score_fields().is_empty() {
        return Err(anyhow!(
            "[expect] {}: only for score cases; for {hook_name}, give `result`",
            case.expect.score_fields().join(", ")
        ));
    }
    if hook != Hook::Score && case.expect.result.is_none() {
        return Err(anyhow!(
            "[expect]: give the `result` {hook_name} should answer"
        ));
    }
    let args: Vec<Value> = match &case.args {
        Some(a) => serde_json::to_value(a)?
            .as_array()
            .cloned()
            .unwrap_or_default(),
        None => Vec::new(),
    };
    crate::script::check_dry_run_args(hook, &args).map_err(|e| anyhow!("args: {e}"))?;
    let now = match &case.now {
        Some(s) => parse_rfc3339(s).map_err(|_| anyhow!("now: not an RFC 3339 time"))?,
        None => now(),
    };
    let input: LeadInput = serde_json::from_value(serde_json::to_value(&case.lead)?)
        .map_err(|e| anyhow!("[lead]: {e}"))?;
    let (mut new, cap) = crate::service::api_capture(input, rules).map_err(|errs| {
        anyhow!(
            "[lead]: {}",
            errs.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    crate::service::derive_channel(rules, &mut new, &cap);
    let stats: StatsInput = match case.stats {
        Some(t) => {
            serde_json::from_value(serde_json::to_value(t)?).map_err(|e| anyhow!("[stats]: {e}"))?
        }
        None => StatsInput::default(),
    };
    let lead = stats.lead_of(new, now);
    let stats = stats.into_stats(now);
    let out = plugins.dry_run(hook, &lead, &stats, args, now);
    let mut diffs = Vec::new();
    if let Some(e) = &out.error {
        let line = e.line.map(|l| format!(" at line {l}")).unwrap_or_default();
        diffs.push(format!(
            "the {hook_name} hook failed{line}: {} (the built-in rule answered)",
            e.message
        ));
    }
    let r = &out.result;
    let expect = case.expect;
    if let Some(want) = &expect.result {
        let want = serde_json::to_value(want)?;
        // One action or an array of them: `on_event` means the same by both.
        let got = match (hook, r) {
            (Hook::OnEvent, Value::Object(_)) => json!([r]),
            (Hook::OnEvent, Value::Null) => json!([]),
            (Hook::OnEvent, Value::Array(a)) => {
                Value::Array(a.iter().filter(|x| !x.is_null()).cloned().collect())
            }
            _ => r.clone(),
        };
        json_diff("result", &want, &got, &mut diffs);
    }
    if let Some(t) = expect.total
        && r["total"].as_i64() != Some(t)
    {
        diffs.push(format!("total: expected {t}, got {}", r["total"]));
    }
    if let Some(parts) = &expect.parts {
        for (part, want) in parts {
            let got = &r["parts"][part.as_str()];
            if got.as_i64() != want.as_integer() {
                diffs.push(format!("parts.{part}: expected {want}, got {got}"));
            }
        }
    }
    if let Some(want) = &expect.reasons {
        let got: BTreeSet<String> = r["reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["rule"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let want: BTreeSet<String> = want.iter().cloned().collect();
        for missing in want.difference(&got) {
            diffs.push(format!("reasons: expected {missing:?} to fire; it did not"));
        }
        for extra in got.difference(&want) {
            let points = r["reasons"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["rule"] == extra.as_str()))
                .map(|x| x["points"].to_string())
                .unwrap_or_default();
            diffs.push(format!("reasons: {extra:?} ({points}) fired; not expected"));
        }
    }
    if let Some(stage) = &expect.stage
        && r["stage"].as_str() != Some(stage.as_str())
    {
        diffs.push(format!("stage: expected {stage}, got {}", r["stage"]));
    }
    Ok((case.description.unwrap_or_default(), diffs))
}

/// Scores every lead in the data directory with the rules in force (the server must be
/// stopped; while it runs, use `POST /v1/admin/rescore`).
pub async fn rescore(args: RescoreArgs) -> anyhow::Result<ExitCode> {
    let config = config(&args.plugins)?;
    crate::cli::require_store(&config, "rescore")?;
    let plugins = crate::cli::require_plugins(&config)?;
    let service = crate::startup::open_service_with(&config, Arc::new(SystemClock), plugins)?;
    let bar = crate::cli_transfer::leads_bar();
    let progress = bar.clone();
    let report = service
        .rescore(args.dry_run, move |done, total| {
            progress.set_length(total);
            progress.set_position(done);
        })
        .await?;
    bar.finish_and_clear();
    let verb = if args.dry_run {
        "would change"
    } else {
        "changed"
    };
    println!(
        "{} leads scored in {:.1} s: {verb} the score of {} and the stage of {}",
        report.leads, report.seconds, report.score_changed, report.stage_changed
    );
    for e in &report.examples {
        println!(
            "  {} {}: {} → {}, {} → {}",
            e.lead_id,
            e.name.as_deref().unwrap_or(""),
            e.score_before,
            e.score_after,
            e.stage_before.as_str(),
            e.stage_after.as_str()
        );
    }
    if args.dry_run {
        println!("dry run: nothing was written");
    }
    if report.script_failures > 0 {
        // The built-in rule stood in: say so, and fail, so a script notices the rule it wrote
        // did not score everything.
        eprintln!(
            "error: the score hook failed on {} leads, so the built-in rule scored them{}; first: {}",
            report.script_failures,
            if args.dry_run {
                ""
            } else {
                " (and those scores were written)"
            },
            report.first_failure.as_deref().unwrap_or("")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
