//! `leadline bench nurture`: many leads through a four-step sequence (email, wait a day,
//! email, set a field) on the durable scheduler, without SMTP — how many steps per second the
//! server runs, each recorded with its email, timeline event and next timer.

use crate::clock::ManualClock;
use crate::config::Config;
use crate::domain::lead::NewLead;
use crate::startup::open_service;
use crate::store::{Entity, Op};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

const START: i64 = 1_795_420_800_000;
const DAY: i64 = 86_400_000;
/// Leads (and enrollments) written per transaction while filling the store.
const FILL_CHUNK: usize = 5_000;

const SEQUENCE: &str = r#"
description = "bench: email, wait a day, email, set a field"
[[step]]
email = "bench"
[[step]]
wait = "1d"
[[step]]
email = "bench"
[[step]]
set = { "fields.nurtured" = true }
"#;

pub async fn bench_nurture(leads: usize, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let base = match dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let plugins = base.path().join("plugins");
    std::fs::create_dir_all(plugins.join("sequences"))?;
    std::fs::create_dir_all(plugins.join("templates"))?;
    std::fs::write(plugins.join("sequences/bench.toml"), SEQUENCE)?;
    std::fs::write(
        plugins.join("templates/bench.subject"),
        "News for {{ lead.company or 'you' }}",
    )?;
    std::fs::write(
        plugins.join("templates/bench.txt"),
        "Hello {{ lead.name }},\n\nRead more: https://example.com/news\n\nUnsubscribe: {{ unsubscribe_url }}\n",
    )?;
    std::fs::write(
        plugins.join("templates/bench.html"),
        "<p>Hello {{ lead.name }},</p><p><a href=\"https://example.com/news\">Read more</a></p>",
    )?;
    let config = Config {
        data_dir: base.path().join("data"),
        plugins_dir: plugins,
        public_url: "https://leads.example".into(),
        ..Config::default()
    };
    let clock = Arc::new(ManualClock::new(START));
    let service = open_service(&config, clock.clone())?;
    let started = Instant::now();
    let mut written = 0;
    while written < leads {
        let n = FILL_CHUNK.min(leads - written);
        let from = written;
        let plugins = service.plugins().clone();
        service
            .store()
            .write(move |tx| {
                for i in from..from + n {
                    let lead = NewLead {
                        name: Some(format!("Lead {i}")),
                        email: Some(format!("lead{i}@example.com")),
                        company: Some(format!("Company {}", i % 997)),
                        ..Default::default()
                    }
                    .into_lead(tx.new_id(), tx.now);
                    tx.put_lead(None, &lead)?;
                    tx.change(Entity::Lead, lead.id, Op::Create, Some(&lead))?;
                    if let Err(e) =
                        crate::service::nurture::enroll(tx, &plugins, &lead, "bench", None)?
                    {
                        return Err(crate::store::StoreError::Storage(e.to_string()));
                    }
                }
                Ok(())
            })
            .await
            .context("writing leads and enrollments")?;
        written += n;
    }
    println!(
        "bench nurture: {leads} leads enrolled in a 4-step sequence in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let run = async |label: &str| -> anyhow::Result<(usize, f64)> {
        let t = Instant::now();
        let mut fired = 0;
        loop {
            let (n, _) = service.fire_due_timers(1024).await?;
            if n == 0 {
                break;
            }
            fired += n;
        }
        let secs = t.elapsed().as_secs_f64();
        println!("  {label}: {fired} enrollment runs in {secs:.1} s");
        Ok((fired, secs))
    };
    let (_, first) = run("day 0 (email, wait)").await?;
    clock.advance(DAY);
    let (_, second) = run("day 1 (email, set)").await?;
    let steps = leads * 4;
    let secs = first + second;
    let snap = service.store().read()?;
    let unsent = snap
        .mails(
            None,
            Some(crate::domain::mail::MailStatus::Unsent),
            None,
            1,
            1,
        )?
        .0
        .len();
    println!(
        "ran {steps} steps in {secs:.1} s: {:.0} steps/s ({} emails rendered into the outbox, unsent: no SMTP){}",
        steps as f64 / secs,
        leads * 2,
        if unsent == 0 {
            " — but the outbox is empty!"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}
