//! The `leadline` command line: `serve`, `token create`, `user create`, `import`, `export`,
//! `bench ingest`, `bench import`.

use crate::bench::{IngestOptions, drive_ingest};
use crate::clock::SystemClock;
use crate::config::{Config, LogFormat, Overrides};
use crate::domain::user::{NewUser, Role, User};
use crate::service::Written;
use crate::startup::{Application, open_service, shutdown_signal};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Leadline: a lead server in one binary.
#[derive(Debug, Parser)]
#[command(name = "leadline", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (with no configuration: 127.0.0.1:8080, data in ./data).
    Serve(ServeArgs),
    /// Manage API tokens (works on a stopped server's data directory).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage users (works on a stopped server's data directory).
    #[command(subcommand)]
    User(UserCommand),
    /// Import leads from a CSV or NDJSON file (works on a stopped server's data directory;
    /// while it runs, use POST /v1/leads/import).
    Import(ImportArgs),
    /// Export leads as CSV or NDJSON (works on a stopped server's data directory; while it
    /// runs, use GET /v1/leads/export).
    Export(ExportArgs),
    /// Rebuild the search index from the store, with a progress bar, into a new directory that
    /// then replaces the old one (works on a stopped server's data directory).
    Reindex {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Check and test the Rhai plugins (no server or data directory needed).
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Score every lead with the rules in force, in batches with a progress bar (works on a
    /// stopped server's data directory; while it runs, use POST /v1/admin/rescore).
    Rescore(crate::cli_plugins::RescoreArgs),
    /// Measure performance.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Compile every script and run each hook it defines on sample leads.
    Check(crate::cli_plugins::PluginArgs),
    /// Run the cases in plugins/tests/*.toml and show what differs.
    Test(crate::cli_plugins::PluginArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The file: .csv, or .ndjson/.jsonl (one JSON object per line).
    pub file: PathBuf,
    /// csv or ndjson (default: from the file's extension).
    #[arg(long)]
    pub format: Option<String>,
    /// Map a column to a lead field: `--map "E-mail=email"`, `--map "Notes=note"`,
    /// `--map "Budget=fields.budget"`, `--map "Internal=ignore"`. Repeatable.
    #[arg(long = "map", value_name = "COLUMN=FIELD")]
    pub map: Vec<String>,
    /// Report what would be created, merged and rejected; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where rejected rows go, with their line numbers (default: FILE.rejects.csv).
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// csv (default) or ndjson.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// Write here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// A list filter as in GET /v1/leads: `--filter stage=mql --filter channel=event`.
    #[arg(long = "filter", value_name = "NAME=VALUE")]
    pub filter: Vec<String>,
}

/// Where the configuration comes from.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// Config file (default: ./leadline.toml if it exists; also LEADLINE_CONFIG).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (default ./data; also LEADLINE_DATA_DIR).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Address to listen on (default 127.0.0.1:8080; also LEADLINE_LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Plugins directory (default ./plugins; also LEADLINE_PLUGINS_DIR).
    #[arg(long, value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Log format (default pretty; also LEADLINE_LOG_FORMAT). Filter with LEADLINE_LOG=debug.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// FOR TESTS ONLY: run on a clock that starts at this RFC 3339 time and moves only when an
    /// admin calls `POST /v1/admin/clock`, so black-box tests make SLA time pass at once.
    #[arg(long, value_name = "RFC3339")]
    pub test_clock: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user and print it (the only time it is shown).
    Create {
        #[command(flatten)]
        config: ConfigArgs,
        /// The user's name.
        #[arg(long)]
        user: String,
        /// Create the user with this role if they do not exist (admin, manager, rep).
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        name: String,
        /// admin, manager or rep.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// Read a password (for `POST /v1/auth/login`) from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Durable single-lead POSTs over keep-alive HTTP against a fresh server.
    Ingest {
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Leads to create.
        #[arg(long, default_value_t = 200_000)]
        leads: usize,
        /// Where to put the temporary data directory (default: the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugins each lead is scored with (a missing directory means the built-in rules).
        #[arg(long, default_value = "plugins")]
        plugins_dir: PathBuf,
    },
    /// Generates a messy lead file (Chinese and English, 5% duplicates) and imports it into a
    /// fresh store, printing rows/s and peak memory.
    Import {
        /// Rows to generate.
        #[arg(long, default_value_t = 1_000_000)]
        leads: usize,
        /// Where to put the file and the temporary data directory (default: the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Imports generated leads, adds note activities in Chinese and English, starts a server
    /// that indexes them, then measures GET /v1/search over keep-alive HTTP (latency
    /// percentiles, queries/s, index time and size, peak memory).
    Search {
        /// Leads to generate and import.
        #[arg(long, default_value_t = 1_000_000)]
        leads: usize,
        /// Note activities to add, spread over the leads.
        #[arg(long, default_value_t = 5_000_000)]
        activities: usize,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Search requests to send.
        #[arg(long, default_value_t = 20_000)]
        queries: usize,
        /// Where to put the file and the temporary data directory (default: the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the data set in this directory and reuse it on the next run: a directory that
        /// already holds one skips generating, importing and adding notes (`--leads` and
        /// `--activities` are then ignored).
        #[arg(long, conflicts_with = "dir")]
        keep: Option<PathBuf>,
    },
    /// Fills a store with pending timers (task reminders), then times opening it and firing
    /// them all.
    Timers {
        /// Pending timers to create.
        #[arg(long, default_value_t = 1_000_000)]
        timers: usize,
        /// Where to put the temporary data directory (default: the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Enrolls many leads in a four-step sequence (email, wait, email, set) and times the
    /// scheduler running every step, without SMTP.
    Nurture {
        /// Leads to enroll.
        #[arg(long, default_value_t = 100_000)]
        leads: usize,
        /// Where to put the temporary data directory (default: the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Fills the webhook outbox of a fresh store (N subscriptions, many pending deliveries),
    /// then times the delivery worker POSTing them to a receiver in this process.
    Webhooks {
        /// Deliveries to make.
        #[arg(long, default_value_t = 100_000)]
        deliveries: usize,
        /// Subscriptions (each gets every lead event).
        #[arg(long, default_value_t = 10)]
        webhooks: usize,
        /// Attempts in flight at once (`webhooks.max_concurrency`).
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
        /// Where to put the temporary data directory (default: the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Evaluations per second of the scoring hook on one core; then imports generated leads
    /// and times a rescore after a rule edit.
    Score {
        /// Evaluations to time.
        #[arg(long, default_value_t = 1_000_000)]
        evals: usize,
        /// Leads to import and rescore (0 skips the rescore); the file generated for them has
        /// 5 % more rows, the repeats.
        #[arg(long, default_value_t = 1_000_000)]
        rescore_leads: usize,
        /// Where scoring.rhai is.
        #[arg(long, default_value = "plugins")]
        plugins_dir: PathBuf,
        /// Where to put the file and the temporary data directory (default: the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "must be admin, manager or rep".into())
}

fn env_map() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("LEADLINE_"))
        .collect()
}

pub(crate) fn load(args: &ConfigArgs, extra: Overrides) -> anyhow::Result<Config> {
    let (config, warnings) = load_with_warnings(args, extra)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    Ok(config)
}

/// The config, and what the operator should be told about it once logging is set up (so a
/// server logging JSON says it in JSON).
fn load_with_warnings(
    args: &ConfigArgs,
    extra: Overrides,
) -> anyhow::Result<(Config, Vec<String>)> {
    let overrides = Overrides {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        ..extra
    };
    let loaded = Config::load(&overrides, &env_map())?;
    Ok((loaded.config, loaded.warnings))
}

fn init_logging(format: LogFormat) {
    init_logging_at(format, "info");
}

fn init_logging_at(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("LEADLINE_LOG") {
        Err(_) => EnvFilter::new(default),
        Ok(spec) => {
            for warning in log_spec_warnings(&spec) {
                eprintln!("warning: LEADLINE_LOG: {warning}");
            }
            EnvFilter::try_new(&spec).unwrap_or_else(|e| {
                eprintln!(
                    "warning: LEADLINE_LOG `{spec}` is not a filter ({e}); logging at {default}"
                );
                EnvFilter::new(default)
            })
        }
    };
    // Colour only for a person at a terminal, not in a file or the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// What in a `LEADLINE_LOG` value is likely a mistake though it parses: a bare word close to
/// a level but not one is taken for a module name, which silences everything else (`degub`).
fn log_spec_warnings(spec: &str) -> Vec<String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    spec.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains('=') && !d.contains("::"))
        .map(|d| (d, d.to_ascii_lowercase()))
        .filter(|(_, l)| !LEVELS.contains(&l.as_str()))
        .filter(|(_, l)| {
            LEVELS
                .iter()
                .any(|level| crate::config::edit_distance(l, level) <= 2)
        })
        .map(|(d, _)| {
            format!(
                "`{d}` is not a level ({}); as a module name it shows only that module's logs",
                LEVELS.join(", ")
            )
        })
        .collect()
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The tools say what went wrong (a plugin that did not compile) without the server's
    // running commentary; `LEADLINE_LOG` shows more.
    if matches!(
        cli.command,
        Command::Token(_)
            | Command::User(_)
            | Command::Import(_)
            | Command::Export(_)
            | Command::Reindex { .. }
            | Command::Plugins(_)
            | Command::Rescore(_)
    ) {
        init_logging_at(LogFormat::Pretty, "warn");
    }
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Token(TokenCommand::Create { config, user, role }) => {
                token_create(config, user, role).await
            }
            Command::User(UserCommand::Create {
                config,
                name,
                role,
                email,
                team,
                password_stdin,
            }) => user_create(config, name, role, email, team, password_stdin).await,
            Command::Import(args) => crate::cli_transfer::import(args).await,
            Command::Export(args) => crate::cli_transfer::export(args).await,
            Command::Reindex { config } => crate::cli_transfer::reindex(config).await,
            Command::Plugins(PluginsCommand::Check(args)) => crate::cli_plugins::check(args),
            Command::Plugins(PluginsCommand::Test(args)) => crate::cli_plugins::test(args),
            Command::Rescore(args) => crate::cli_plugins::rescore(args).await,
            Command::Bench(BenchCommand::Nurture { leads, dir }) => {
                crate::bench_nurture::bench_nurture(leads, dir).await
            }
            Command::Bench(BenchCommand::Webhooks {
                deliveries,
                webhooks,
                concurrency,
                dir,
            }) => {
                crate::bench_webhooks::bench_webhooks(crate::bench_webhooks::WebhookBench {
                    deliveries,
                    webhooks,
                    concurrency,
                    dir,
                })
                .await
            }
            Command::Bench(BenchCommand::Timers { timers, dir }) => {
                crate::bench_timers::bench_timers(timers, dir).await
            }
            Command::Bench(BenchCommand::Score {
                evals,
                rescore_leads,
                plugins_dir,
                dir,
            }) => crate::bench_score::bench_score(evals, rescore_leads, plugins_dir, dir).await,
            Command::Bench(BenchCommand::Ingest {
                clients,
                leads,
                dir,
                plugins_dir,
            }) => bench_ingest(clients, leads, dir, plugins_dir).await,
            Command::Bench(BenchCommand::Import { leads, dir }) => {
                crate::cli_transfer::bench_import(leads, dir).await
            }
            Command::Bench(BenchCommand::Search {
                leads,
                activities,
                clients,
                queries,
                dir,
                keep,
            }) => {
                crate::bench_search::bench_search(leads, activities, clients, queries, dir, keep)
                    .await
            }
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (config, warnings) = load_with_warnings(
        &args.config,
        Overrides {
            listen: args.listen,
            plugins_dir: args.plugins_dir,
            log_format: args.log_format,
            ..Overrides::default()
        },
    )?;
    init_logging(config.log_format);
    for w in &warnings {
        // A log filtered above warnings (LEADLINE_LOG=error) must not hide a misspelling.
        match tracing::enabled!(tracing::Level::WARN) {
            true => tracing::warn!("{w}"),
            false => eprintln!("warning: {w}"),
        }
    }
    let app = match &args.test_clock {
        None => Application::build(config.clone(), Arc::new(SystemClock)).await?,
        Some(start) => {
            let start = crate::domain::time::parse_rfc3339(start)
                .map_err(|m| anyhow::anyhow!("--test-clock: {m}"))?;
            let clock = Arc::new(crate::clock::ManualClock::new(start));
            tracing::warn!(
                "running on a test clock that moves only through POST /v1/admin/clock; not for production"
            );
            Application::build(config.clone(), clock.clone())
                .await?
                .with_test_clock(clock)
        }
    };
    if let Some(token) = app.admin_token() {
        println!("Created user `admin`. Its API token is shown only this once:");
        println!("LEADLINE_ADMIN_TOKEN={token}");
    }
    tracing::info!(addr = %app.local_addr(), data_dir = %config.data_dir.display(), "leadline is listening");
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn token_create(
    args: ConfigArgs,
    user: String,
    role: Option<Role>,
) -> anyhow::Result<ExitCode> {
    // Names are stored trimmed, as `user create` and the API store them.
    let user = user.trim().to_owned();
    let config = load(&args, Overrides::default())?;
    let service = open_service(&config, Arc::new(SystemClock))?;
    let user_id = match service.find_user_by_name(&user)? {
        Some(u) => {
            if let Some(r) = role
                && r != u.role
            {
                bail!(
                    "user `{user}` exists with role {}, not {}",
                    u.role.as_str(),
                    r.as_str()
                );
            }
            u.id
        }
        None => {
            let Some(role) = role else {
                bail!("there is no user `{user}`; pass --role to create one");
            };
            let new = validated_user(user.clone(), role, None, None, None)
                .map_err(|e| anyhow::anyhow!("--user: {e}"))?;
            created(service.create_user(None, new, None).await?)?.id
        }
    };
    let token = service.issue_token(user_id).await?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// Refuses to go on with a data directory that holds no store: opening one creates it, so a
/// mistyped `--data-dir` would quietly work on an empty store and leave it behind.
pub(crate) fn require_store(config: &Config, what: &str) -> anyhow::Result<()> {
    let file = config.data_dir.join(crate::store::DATA_FILE);
    if !file.exists() {
        bail!(
            "there is no store at {}: nothing to {what} (check --data-dir)",
            file.display()
        );
    }
    Ok(())
}

/// The plugins, refused when a script did not compile: the built-in rule would stand in for
/// it, and an import or rescore would write scores and owners by rules nobody chose. Loaded
/// before the store is opened (pass them to [`crate::startup::open_service_with`]), so a
/// refused run leaves no new store behind.
pub(crate) fn require_plugins(config: &Config) -> anyhow::Result<crate::script::Plugins> {
    let plugins = crate::startup::load_plugins(config, crate::clock::Clock::now_ms(&SystemClock));
    let report = plugins.report();
    if report.not_loaded.is_empty() {
        return Ok(plugins);
    }
    let files: Vec<&str> = report.not_loaded.iter().map(|f| f.file.as_str()).collect();
    bail!(
        "not running with plugins that did not load: {} (errors above; see `leadline plugins check`)",
        files.join(", ")
    )
}

/// The user a create without an idempotency key made.
fn created(w: Written<User>) -> anyhow::Result<User> {
    match w {
        Written::Fresh(u) => Ok(u),
        Written::Replayed(_) => bail!("unexpected replay of an earlier create"),
    }
}

/// A new user from the command line, checked as `POST /v1/users` checks one.
fn validated_user(
    name: String,
    role: Role,
    email: Option<String>,
    team: Option<String>,
    password: Option<String>,
) -> anyhow::Result<NewUser> {
    let input = crate::domain::user::UserInput {
        name,
        email,
        role,
        team,
        manager_id: None,
        territories: None,
        product_lines: None,
        capacity: None,
        active: None,
        senior: None,
        password,
    };
    input.validate().map_err(|errs| {
        anyhow::anyhow!(
            "{}",
            errs.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

async fn user_create(
    args: ConfigArgs,
    name: String,
    role: Role,
    email: Option<String>,
    team: Option<String>,
    password_stdin: bool,
) -> anyhow::Result<ExitCode> {
    let password = if password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        Some(s.trim_end_matches(['\n', '\r']).to_owned())
    } else {
        None
    };
    let new = validated_user(name, role, email, team, password)?;
    let config = load(&args, Overrides::default())?;
    let service = open_service(&config, Arc::new(SystemClock))?;
    let user = created(service.create_user(None, new, None).await?)?;
    println!("{}", user.id);
    Ok(ExitCode::SUCCESS)
}

async fn bench_ingest(
    clients: usize,
    leads: usize,
    dir: Option<PathBuf>,
    plugins_dir: PathBuf,
) -> anyhow::Result<ExitCode> {
    init_logging(LogFormat::Pretty);
    let tmp = match dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("creating a temporary data directory")?;
    let config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: tmp.path().to_path_buf(),
        plugins_dir,
        ..Config::default()
    };
    let app = Application::build(config, Arc::new(SystemClock)).await?;
    let scored_by = app.service().plugins().report().hooks.get("score").cloned();
    println!(
        "bench ingest: scoring with {}",
        scored_by.as_deref().unwrap_or("built-in")
    );
    let token = app
        .admin_token()
        .map(str::to_owned)
        .context("a fresh store should have created an admin token")?;
    // Every lead is routed in its capture's transaction: five reps take turns.
    for i in 0..5 {
        let rep = NewUser {
            name: format!("bench-rep-{i}"),
            email: None,
            role: Role::Rep,
            team: Some("bench".into()),
            manager_id: None,
            territories: vec![],
            product_lines: vec![],
            capacity: u32::MAX,
            active: true,
            senior: false,
            password: None,
        };
        created(app.service().create_user(None, rep, None).await?)?;
    }
    let routed_by = app.service().plugins().report().hooks.get("route").cloned();
    println!(
        "bench ingest: routing to 5 reps with {}",
        routed_by.as_deref().unwrap_or("built-in")
    );
    let addr = app.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop_rx.await;
    }));
    println!(
        "bench ingest: {leads} leads, {clients} clients, durable POST /v1/leads to {addr} (data in {})",
        tmp.path().display()
    );
    let cpu_before = crate::cli_transfer::cpu_seconds();
    let report = drive_ingest(IngestOptions {
        addr,
        token,
        clients,
        leads,
        run_id: "bench".into(),
    })
    .await?;
    println!("{report}");
    // Server, clients and every background thread share this process: its CPU time is what a
    // created lead costs the machine in all.
    if let (Some((u0, s0)), Some((u1, s1))) = (cpu_before, crate::cli_transfer::cpu_seconds()) {
        let (user, system) = (u1 - u0, s1 - s0);
        let secs = report.elapsed.as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "bench ingest: CPU {:.1} s (user {user:.1}, system {system:.1}), {:.0} µs a request, {:.2} of {cores} cores",
            user + system,
            (user + system) * 1e6 / report.sent.max(1) as f64,
            if secs > 0.0 {
                (user + system) / secs
            } else {
                0.0
            },
        );
    }
    let _ = stop_tx.send(());
    server.await.context("server task")??;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::log_spec_warnings;

    #[test]
    fn a_log_level_typo_is_warned_about() {
        assert_eq!(log_spec_warnings("degub").len(), 1);
        assert_eq!(log_spec_warnings("wran,leadline=debug").len(), 1);
        assert!(log_spec_warnings("degub")[0].contains("`degub`"));
        for fine in [
            "debug",
            "WARN",
            "leadline=debug,tower_http=info",
            "leadline::store::writer=trace",
            "leadline",
            "hyper",
            "tower_http",
            "",
        ] {
            assert!(log_spec_warnings(fine).is_empty(), "{fine}");
        }
    }
}
