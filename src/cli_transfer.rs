//! The bulk commands: `leadline import` (progress bar, reject file, summary), `leadline export`
//! and `leadline bench import`, which generates a messy file and measures a full import.

use crate::api::extract::Params;
use crate::api::leads::filter_and_sort;
use crate::cli::{ConfigArgs, ExportArgs, ImportArgs, load, require_plugins, require_store};
use crate::clock::SystemClock;
use crate::config::{Config, Overrides};
use crate::domain::user::Principal;
use crate::service::{ImportOptions, ImportSummary, Rejection, Service};
use crate::startup::{open_service, open_service_with};
use crate::transfer::{ExportWriter, Format, Mapping};
use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counts the bytes read, for the progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Rejected rows as CSV: line, the problems, and the row as it was. Opened before the import
/// starts, so a path that cannot be written stops it before any row is committed; removed at
/// the end if no row was rejected, so no stale file from an earlier run is left to mislead.
struct RejectFile {
    path: PathBuf,
    out: csv::Writer<File>,
    rows: u64,
    failed: Option<String>,
}

impl RejectFile {
    fn create(path: PathBuf, input: &Path) -> anyhow::Result<RejectFile> {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same(&path, input) {
            bail!(
                "the reject file {} is the file being imported; pass another --rejects",
                path.display()
            );
        }
        let mut out = csv::Writer::from_path(&path)
            .with_context(|| format!("creating the reject file {}", path.display()))?;
        out.write_record(["line", "errors", "row"])?;
        Ok(RejectFile {
            path,
            out,
            rows: 0,
            failed: None,
        })
    }

    fn add(&mut self, r: &Rejection) {
        if self.failed.is_some() {
            return;
        }
        let errors = r
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let raw = serde_json::Value::Object(r.raw.clone()).to_string();
        match self.out.write_record([r.line.to_string(), errors, raw]) {
            Ok(()) => self.rows += 1,
            Err(e) => self.failed = Some(format!("{e:#}")),
        }
    }

    fn finish(mut self) -> anyhow::Result<Option<PathBuf>> {
        if let Some(e) = self.failed {
            return Err(anyhow!(
                "writing the reject file {}: {e}",
                self.path.display()
            ));
        }
        self.out
            .flush()
            .with_context(|| format!("writing the reject file {}", self.path.display()))?;
        if self.rows == 0 {
            drop(self.out);
            std::fs::remove_file(&self.path)
                .with_context(|| format!("removing the empty {}", self.path.display()))?;
            return Ok(None);
        }
        Ok(Some(self.path))
    }
}

fn rejects_path(file: &Path) -> PathBuf {
    let mut name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".rejects.csv");
    file.with_file_name(name)
}

/// Runs an import of `file` into `service`, with a progress bar on stderr.
pub(crate) async fn run_import(
    service: &Service,
    file: &Path,
    opts: ImportOptions,
    rejects: PathBuf,
    show_progress: bool,
) -> anyhow::Result<(ImportSummary, Option<PathBuf>)> {
    let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let read = Arc::new(AtomicU64::new(0));
    let reader = Counting {
        inner: std::io::BufReader::with_capacity(256 * 1024, f),
        read: read.clone(),
    };
    let bar = if show_progress {
        ProgressBar::new(size)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut reject_file = RejectFile::create(rejects, file)?;
    let result = service
        .import(
            &Principal::system(),
            reader,
            opts,
            |s| {
                bar.set_position(read.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "{} rows: {} created, {} merged, {} unchanged, {} rejected",
                    s.rows, s.created, s.merged, s.unchanged, s.rejected
                ));
            },
            |r| reject_file.add(r),
        )
        .await;
    bar.finish_and_clear();
    // The rows rejected before a failure are kept (the rows written before it stay too); an
    // empty reject file is not.
    let rejects = reject_file.finish();
    let summary = result.map_err(|e| anyhow!("import stopped: {e}"))?;
    Ok((summary, rejects?))
}

pub async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let format = match &args.format {
        Some(f) => Format::parse(f).ok_or_else(|| anyhow!("--format must be csv or ndjson"))?,
        None => Format::from_path(&args.file).ok_or_else(|| {
            anyhow!(
                "cannot tell the format of {} from its extension; pass --format csv or --format ndjson",
                args.file.display()
            )
        })?,
    };
    let mapping = Mapping::from_pairs(&args.map).map_err(|m| anyhow!("--map: {m}"))?;
    let config = load(&args.config, Overrides::default())?;
    let plugins = require_plugins(&config)?;
    let service = open_service_with(&config, Arc::new(SystemClock), plugins)?;
    let rejects = args
        .rejects
        .clone()
        .unwrap_or_else(|| rejects_path(&args.file));
    let opts = ImportOptions {
        format,
        mapping,
        dry_run: args.dry_run,
        origin: args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let started = Instant::now();
    let (s, reject_file) = run_import(&service, &args.file, opts, rejects, true).await?;
    let verb = if args.dry_run { "would be" } else { "were" };
    println!(
        "{} rows in {:.1} s: {} {verb} created, {} merged, {} unchanged, {} rejected",
        s.rows,
        started.elapsed().as_secs_f64(),
        s.created,
        s.merged,
        s.unchanged,
        s.rejected
    );
    if let Some(path) = reject_file {
        println!("rejected rows, with their line numbers: {}", path.display());
    }
    if args.dry_run {
        println!("dry run: nothing was written");
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar counting leads.
pub(crate) fn leads_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} leads ({eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub async fn reindex(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args, Overrides::default())?;
    require_store(&config, "reindex")?;
    let service = open_service(&config, Arc::new(SystemClock))?;
    let bar = leads_bar();
    let started = Instant::now();
    let data_dir = config.data_dir.clone();
    let store = service.store().clone();
    let progress = bar.clone();
    let total = tokio::task::spawn_blocking(move || {
        crate::search::reindex(&data_dir, &store, |done, total| {
            progress.set_length(total);
            progress.set_position(done);
        })
    })
    .await
    .context("reindex task")??;
    bar.finish_and_clear();
    println!(
        "reindexed {total} leads in {:.1} s into {}",
        started.elapsed().as_secs_f64(),
        crate::search::index_dir(&config.data_dir).display()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let format =
        Format::parse(&args.format).ok_or_else(|| anyhow!("--format must be csv or ndjson"))?;
    let mut pairs = Vec::new();
    for f in &args.filter {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("--filter {f}: write it as NAME=VALUE, e.g. stage=mql"))?;
        pairs.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut params = Params::from_pairs(pairs);
    let (filter, sort, descending) =
        filter_and_sort(&mut params).map_err(|e| anyhow!("--filter: {e}"))?;
    params.finish().map_err(|e| anyhow!("--filter: {e}"))?;
    let config = load(&args.config, Overrides::default())?;
    require_store(&config, "export")?;
    let service = open_service(&config, Arc::new(SystemClock))?;
    let reader_gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let out: Box<dyn Write + Send> = match &args.out {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(PipeEnd {
            inner: std::io::stdout(),
            closed: reader_gone.clone(),
        })),
    };
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut w = ExportWriter::new(out, format)?;
        let n = service.export_leads(&Principal::system(), filter, sort, descending, &mut w)?;
        w.finish()?.flush()?;
        Ok(n)
    })
    .await
    .context("export task")?;
    match result {
        Ok(n) => eprintln!("exported {n} leads"),
        // `leadline export | head`: the reader had what it wanted; nothing failed.
        Err(_) if reader_gone.load(Ordering::Relaxed) => {}
        Err(e) => return Err(e),
    }
    Ok(ExitCode::SUCCESS)
}

/// Standard output that notes when whoever reads it has gone (a closed pipe).
struct PipeEnd<W> {
    inner: W,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl<W: Write> PipeEnd<W> {
    fn noting<T>(&self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            self.closed.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<W: Write> Write for PipeEnd<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.noting(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.noting(r)
    }
}

const SURNAMES: &[&str] = &["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴"];
const GIVEN: &[&str] = &["伟", "芳", "娜", "敏", "静", "磊", "强", "洋", "艳", "杰"];
const FIRST: &[&str] = &[
    "James", "Mary", "Wei", "Anna", "Lucas", "Sofia", "Chen", "Olivia",
];
const LAST: &[&str] = &[
    "Smith", "Garcia", "Wang", "Müller", "Brown", "Li", "Tanaka", "Khan",
];
const COMPANIES: &[&str] = &[
    "纷享销客",
    "示例科技有限公司",
    "Acme Ltd",
    "  Globex   Corp ",
    "华东制造股份有限公司",
    "Initech",
    "上海零售集团",
    "Umbrella GmbH",
];
const TITLES: &[&str] = &[
    "总经理",
    "CTO",
    "采购经理",
    "Engineer",
    "VP Sales",
    "工程师",
    "Founder",
];
const NOTES: &[&str] = &[
    "在展会上交换了名片，对MES感兴趣",
    "Asked for pricing, wants a demo next week",
    "王总介绍，预算五十万",
    "Downloaded the white paper",
    "",
];

/// Writes `n` messy rows: mixed case and padded emails, phones in every format, 5% repeats.
pub(crate) fn generate(path: &Path, n: usize) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(BufWriter::new(File::create(path)?));
    w.write_record([
        "姓名",
        "E-mail",
        "手机",
        "公司",
        "职位",
        "备注",
        "utm_source",
        "utm_medium",
    ])?;
    for i in 0..n {
        // Every twentieth row repeats the person ten rows up (never itself a repeat), written
        // differently.
        let person = if i % 20 == 19 { i - 10 } else { i };
        let name = if person % 2 == 0 {
            format!("{}{}", SURNAMES[person % 10], GIVEN[(person / 10) % 10])
        } else {
            format!("{} {}", FIRST[person % 8], LAST[(person / 8) % 8])
        };
        let email = match (person % 3, i == person) {
            (0, true) => format!("lead{person}@example{}.com", person % 50),
            (0, false) => format!("  LEAD{person}@Example{}.COM ", person % 50),
            (1, _) => format!("lead{person}@qq.com"),
            _ => String::new(),
        };
        let digits = format!("{:08}", person % 100_000_000);
        let phone = match (person % 3, person % 4) {
            (0, _) => String::new(),
            (_, 0) => format!("139{digits}"),
            (_, 1) => format!("+86 139 {} {}", &digits[..4], &digits[4..]),
            (_, 2) => format!("86-139{digits}"),
            _ => format!("(139) {}-{}", &digits[..4], &digits[4..]),
        };
        let (source, medium) = match person % 5 {
            0 => ("baidu", "cpc"),
            1 => ("expo", "event"),
            2 => ("newsletter", "email"),
            _ => ("", ""),
        };
        w.write_record([
            name.as_str(),
            email.as_str(),
            phone.as_str(),
            COMPANIES[person % COMPANIES.len()],
            TITLES[person % TITLES.len()],
            NOTES[person % NOTES.len()],
            source,
            medium,
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Peak resident memory of this process so far, from /proc (Linux).
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time this process has used so far, user and system, in seconds, from /proc (Linux).
pub(crate) fn cpu_seconds() -> Option<(f64, f64)> {
    cpu_seconds_of(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User and system seconds of a `/proc/<pid>/stat` line.
fn cpu_seconds_of(stat: &str) -> Option<(f64, f64)> {
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis
    // start with field 3, so utime and stime (fields 14 and 15) are the 12th and 13th.
    let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let user: f64 = rest.nth(11)?.parse().ok()?;
    let system: f64 = rest.next()?.parse().ok()?;
    // /proc counts in USER_HZ ticks, 100 a second on every Linux target this runs on.
    Some((user / 100.0, system / 100.0))
}

/// Imports a generated CSV file (see [`generate`]) quietly, as the benchmarks do.
pub(crate) async fn import_generated(
    service: &Service,
    file: &Path,
) -> anyhow::Result<ImportSummary> {
    let opts = ImportOptions {
        format: Format::Csv,
        mapping: Mapping::default(),
        dry_run: false,
        origin: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let rejects = file.with_extension("rejects.csv");
    Ok(run_import(service, file, opts, rejects, false).await?.0)
}

pub async fn bench_import(leads: usize, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let tmp = match dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("creating a temporary directory")?;
    let file = tmp.path().join("bench-import.csv");
    let started = Instant::now();
    generate(&file, leads)?;
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "bench import: generated {leads} rows ({:.1} MiB) in {:.1} s at {}",
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64(),
        file.display()
    );
    let config = Config {
        data_dir: tmp.path().join("data"),
        ..Config::default()
    };
    let service = open_service(&config, Arc::new(SystemClock))?;
    let started = Instant::now();
    let s = import_generated(&service, &file).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} rows in {secs:.1} s: {:.0} rows/s end to end; {} created, {} merged, {} unchanged, {} rejected; peak RSS {}",
        s.rows,
        s.rows as f64 / secs,
        s.created,
        s.merged,
        s.unchanged,
        s.rejected,
        peak_rss_bytes().map_or_else(
            || "unknown".to_owned(),
            |b| format!("{:.0} MiB", b as f64 / 1048576.0)
        )
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::cpu_seconds_of;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        let line =
            "4242 (lead line (x)) R 1 4242 4242 0 -1 4194560 900 0 0 0 1534 287 0 0 20 0 9 0";
        assert_eq!(cpu_seconds_of(line), Some((15.34, 2.87)));
        assert_eq!(cpu_seconds_of("4242 (cut short) R 1 2"), None);
        assert_eq!(cpu_seconds_of("no parenthesis at all"), None);
    }
}
