//! `leadline bench score`: evaluations per second of the scoring hook on one core, and the
//! time to rescore a large store after a rule change.

use crate::clock::SystemClock;
use crate::config::Config;
use crate::domain::lead::{Lead, NewLead};
use crate::domain::score::DAY_MS;
use crate::domain::stats::ActivityStats;
use crate::script::{PluginSettings, Plugins};
use crate::startup::open_service;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

const TITLES: [&str; 8] = [
    "CTO",
    "Engineer",
    "VP Sales",
    "总经理",
    "Founder",
    "Product Manager",
    "Intern",
    "采购经理",
];
const CHANNELS: [&str; 5] = [
    "paid_search",
    "organic_search",
    "referral",
    "event",
    "social",
];
const KINDS: [&str; 6] = [
    "page_view",
    "demo_request",
    "email_open",
    "email_click",
    "inquiry",
    "chat",
];

/// Timed rounds of evaluations.
const ROUNDS: usize = 5;

/// Varied leads with varied activity, so every rule is exercised.
fn samples(n: usize, now: i64) -> Vec<(Arc<Lead>, Arc<ActivityStats>)> {
    (0..n)
        .map(|i| {
            let lead = NewLead {
                name: Some(format!("Lead {i}")),
                email: Some(format!("l{i}@acme{}.example", i % 97)),
                title: Some(TITLES[i % TITLES.len()].into()),
                company_size: Some((i % 900) as u32),
                industry: Some(["Retail", "Banking", "manufacturing"][i % 3].into()),
                channel: Some(CHANNELS[i % CHANNELS.len()].into()),
                flags: crate::domain::lead::Flags {
                    personal_email: i % 7 == 0,
                    ..Default::default()
                },
                ..Default::default()
            }
            .into_lead(Uuid::nil(), now - 200 * DAY_MS);
            let mut stats = ActivityStats::default();
            for k in 0..(i % 9) {
                let at = now - ((i * 13 + k) % 150) as i64 * DAY_MS;
                let path =
                    (k % 3 == 0).then_some(["/pricing", "/blog/x", "/solutions/retail"][i % 3]);
                stats.record_parts(KINDS[(i + k) % KINDS.len()], path, at);
            }
            (Arc::new(lead), Arc::new(stats))
        })
        .collect()
}

fn eval_rate(
    plugins: &Plugins,
    data: &[(Arc<Lead>, Arc<ActivityStats>)],
    evals: usize,
    now: i64,
) -> (f64, i64) {
    let loaded = plugins.current();
    let mut checksum = 0i64;
    let started = Instant::now();
    for i in 0..evals {
        let (lead, stats) = &data[i % data.len()];
        let (card, _) = plugins.score(&loaded, lead, stats, now);
        checksum += i64::from(card.score().total);
    }
    (evals as f64 / started.elapsed().as_secs_f64(), checksum)
}

pub async fn bench_score(
    evals: usize,
    rescore_leads: usize,
    plugins_dir: PathBuf,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let script = plugins_dir.join("scoring.rhai");
    let source = std::fs::read_to_string(&script)
        .with_context(|| format!("reading {} (pass --plugins-dir)", script.display()))?;
    let now = chrono::Utc::now().timestamp_millis();
    let plugins = Plugins::load(
        PluginSettings {
            dir: plugins_dir.clone(),
            ..PluginSettings::default()
        },
        now,
    );
    if plugins
        .current()
        .script_for(crate::script::Hook::Score)
        .is_none()
    {
        bail!("{} does not define a usable score hook", script.display());
    }
    let data = samples(4096, now);
    // Warm up, then measure on this one thread.
    eval_rate(&plugins, &data, 10_000.min(evals), now);
    // Several rounds, because a shared VM's neighbours make any one round noisy: the median
    // is the figure, the spread says how much to trust it.
    let mut rates = Vec::with_capacity(ROUNDS);
    let mut sum = 0;
    for _ in 0..ROUNDS {
        let (rate, s) = eval_rate(&plugins, &data, evals.div_ceil(ROUNDS), now);
        rates.push(rate);
        sum += s;
    }
    rates.sort_by(f64::total_cmp);
    let rate = rates[ROUNDS / 2];
    let errors: u64 = plugins.report().scripts.iter().map(|s| s.errors).sum();
    println!(
        "bench score: {evals} evaluations of {} on one core in {ROUNDS} rounds: median {rate:.0}/s ({:.2} µs each; rounds {:.0}–{:.0}/s; {errors} errors; checksum {sum})",
        script.display(),
        1e6 / rate,
        rates[0],
        rates[ROUNDS - 1],
    );
    let builtin = Plugins::builtin();
    let (rate, _) = eval_rate(&builtin, &data, evals, now);
    println!("  the built-in table, for comparison: {rate:.0}/s");
    if rescore_leads == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    rescore_bench(rescore_leads, &source, dir).await?;
    Ok(ExitCode::SUCCESS)
}

async fn rescore_bench(leads: usize, source: &str, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let tmp = match dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("creating a temporary directory")?;
    let plugins_dir = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins_dir)?;
    std::fs::write(plugins_dir.join("scoring.rhai"), source)?;
    let file = tmp.path().join("bench-score.csv");
    crate::cli_transfer::generate(&file, rows_for_leads(leads))?;
    let config = Config {
        data_dir: tmp.path().join("data"),
        plugins_dir: plugins_dir.clone(),
        ..Config::default()
    };
    let service = open_service(&config, Arc::new(SystemClock))?;
    let started = Instant::now();
    let s = crate::cli_transfer::import_generated(&service, &file).await?;
    println!(
        "  rescore: imported {} leads in {:.1} s (scored as they came in)",
        s.created,
        started.elapsed().as_secs_f64()
    );
    // The admin edits a rule: decision makers are worth 25 points, not 20.
    let edited = edit_rule(source)?;
    std::fs::write(plugins_dir.join("scoring.rhai"), edited)?;
    let report = service.plugins().reload(service.now());
    if !report.failed.is_empty() {
        bail!("the edited script does not compile: {:?}", report.failed);
    }
    let dry = service.rescore(true, |_, _| {}).await?;
    println!(
        "  rescore --dry-run: {} leads in {:.1} s ({:.0}/s): {} would change score, {} stage",
        dry.leads,
        dry.seconds,
        dry.leads as f64 / dry.seconds,
        dry.score_changed,
        dry.stage_changed
    );
    let done = service.rescore(false, |_, _| {}).await?;
    println!(
        "  rescore: {} leads in {:.1} s ({:.0}/s): changed {} scores and {} stages",
        done.leads,
        done.seconds,
        done.leads as f64 / done.seconds,
        done.score_changed,
        done.stage_changed
    );
    // The rule edited back and applied again, now with another write every 5 ms, timed from
    // send to durable: how long the rescore makes other writers wait.
    std::fs::write(plugins_dir.join("scoring.rhai"), source)?;
    let report = service.plugins().reload(service.now());
    if !report.failed.is_empty() {
        bail!("the original script does not compile: {:?}", report.failed);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (service, stop) = (service.clone(), stop.clone());
        tokio::spawn(async move {
            let mut waited = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = Instant::now();
                service.store().write(|_| Ok(())).await?;
                waited.push(sent.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Ok::<_, crate::store::StoreError>(waited)
        })
    };
    let back = service.rescore(false, |_, _| {}).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut waited = probe.await.context("the write probe stopped")??;
    let back = back?;
    waited.sort_by(f64::total_cmp);
    if let Some(&max) = waited.last() {
        let at = |q: f64| waited[((waited.len() - 1) as f64 * q) as usize];
        println!(
            "  rescore back with another write every 5 ms: {:.1} s; those writes, send to durable: {} of them, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            back.seconds,
            waited.len(),
            at(0.5),
            at(0.99),
            max
        );
    }
    Ok(())
}

/// The generated rows that hold `leads` distinct people: every twentieth row repeats one.
fn rows_for_leads(leads: usize) -> usize {
    let people = |rows: usize| rows - (rows + 1) / 20;
    let mut rows = leads + leads / 19;
    while people(rows) < leads {
        rows += 1;
    }
    rows
}

fn edit_rule(source: &str) -> anyhow::Result<String> {
    let from = r#"rule: "title is a decision maker", points: 20"#;
    if !source.contains(from) {
        bail!("the scoring script has no `{from}` to edit");
    }
    Ok(source.replace(from, r#"rule: "title is a decision maker", points: 25"#))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rows_generated_hold_exactly_the_leads_asked_for() {
        for leads in [1, 19, 20, 950_000, 1_000_000] {
            let rows = super::rows_for_leads(leads);
            assert_eq!(rows - (rows + 1) / 20, leads, "{leads}");
        }
        assert_eq!(super::rows_for_leads(1_000_000), 1_052_631);
    }
}
