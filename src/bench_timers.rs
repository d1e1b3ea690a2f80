//! `leadline bench timers`: a store holding many pending timers (task reminders, each with its
//! task) — the memory and start-up time of a server opening it, and how many timers per second
//! the scheduler fires once they all fall due.

use crate::clock::ManualClock;
use crate::config::Config;
use crate::domain::work::{TASK_REMINDER_MS, Task, TimerKind};
use crate::startup::open_service;
use crate::store::{ChangeEntry, Entity, Op};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Tasks (and timers) written per transaction while filling the store.
const FILL_CHUNK: usize = 20_000;
const START: i64 = 1_795_420_800_000;

/// Resident memory of this process, from /proc (Linux); None elsewhere.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub async fn bench_timers(timers: usize, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let base = match dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let config = Config {
        data_dir: base.path().join("data"),
        plugins_dir: PathBuf::new(),
        ..Config::default()
    };
    let clock = Arc::new(ManualClock::new(START));
    let owners: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    {
        let service = open_service(&config, clock.clone())?;
        let started = Instant::now();
        let mut written = 0;
        while written < timers {
            let n = FILL_CHUNK.min(timers - written);
            let owners = owners.clone();
            let from = written;
            service
                .store()
                .write(move |tx| {
                    for i in from..from + n {
                        let due = START + 3_600_000 + (i as i64 % 86_400) * 1_000;
                        let t = Task {
                            id: tx.new_id(),
                            created_at: tx.now,
                            updated_at: tx.now,
                            version: 1,
                            lead_id: None,
                            owner_id: owners[i % owners.len()],
                            title: format!("Call back #{i}"),
                            due_at: Some(due),
                            done: false,
                            done_at: None,
                            created_by: None,
                        };
                        tx.put_task(None, &t)?;
                        tx.change_entry(ChangeEntry {
                            entity: Entity::Task,
                            id: t.id,
                            op: Op::Create,
                            at: tx.now,
                            lead_id: None,
                            owner_id: Some(t.owner_id),
                            pool_id: None,
                        })?;
                        tx.add_timer(TimerKind::TaskReminder, due - TASK_REMINDER_MS, t.id)?;
                    }
                    Ok(())
                })
                .await
                .context("writing timers")?;
            written += n;
        }
        println!(
            "bench timers: wrote {timers} tasks with pending reminders in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let rss_before = rss_mib();
    let opened = Instant::now();
    let service = open_service(&config, clock.clone())?;
    let pending = service.store().read()?.timer_count()?;
    let (_, next) = service.store().read()?.timers_due(START, 1)?;
    let startup = opened.elapsed();
    let rss_after = rss_mib();
    println!(
        "start-up with {pending} pending timers: {:.0} ms to open the store and find the earliest (due {})",
        startup.as_secs_f64() * 1000.0,
        next.map(crate::domain::time::to_rfc3339)
            .unwrap_or_default()
    );
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        println!(
            "memory: {b:.0} MiB resident after opening ({:+.0} MiB for the open store)",
            b - a
        );
    }
    clock.advance(2 * 86_400_000);
    let fired_at = Instant::now();
    let mut fired = 0usize;
    loop {
        let (n, _) = service.fire_due_timers(1024).await?;
        if n == 0 {
            break;
        }
        fired += n;
    }
    let secs = fired_at.elapsed().as_secs_f64();
    println!(
        "fired {fired} timers in {secs:.1} s: {:.0} timers/s (each a task.due notification with its changelog row)",
        fired as f64 / secs
    );
    Ok(ExitCode::SUCCESS)
}
