//! `leadline bench webhooks`: a store with N subscriptions and an outbox of many pending
//! deliveries (written as changelog rows are, in the transactions of their changes), then the
//! real delivery worker POSTing them to a receiver in this process — deliveries per second,
//! end to end (read, sign, POST, record).

use crate::clock::SystemClock;
use crate::config::Config;
use crate::domain::user::Principal;
use crate::domain::webhook::{Destination, NewWebhook};
use crate::startup::open_service;
use crate::store::{ChangeEntry, Entity, Op};
use anyhow::{Context, anyhow};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Changes written per transaction while filling the outbox.
const FILL_CHUNK: usize = 2_000;
/// Changes per lead: each lead's deliveries to one webhook go out in order, one at a time.
const EVENTS_PER_LEAD: usize = 2;

/// What `bench webhooks` does.
#[derive(Debug, Clone)]
pub struct WebhookBench {
    pub deliveries: usize,
    pub webhooks: usize,
    pub concurrency: usize,
    pub dir: Option<PathBuf>,
}

/// A receiver that answers 204 to everything and counts the requests.
async fn receiver() -> anyhow::Result<(std::net::SocketAddr, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the receiver")?;
    let addr = listener.local_addr()?;
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let app = axum::Router::new().fallback(axum::routing::post(move || {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::Relaxed);
            axum::http::StatusCode::NO_CONTENT
        }
    }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "bench receiver stopped");
        }
    });
    Ok((addr, count))
}

pub async fn bench_webhooks(opts: WebhookBench) -> anyhow::Result<ExitCode> {
    let WebhookBench {
        deliveries,
        webhooks,
        concurrency,
        dir,
    } = opts;
    let webhooks = webhooks.max(1);
    let base = match dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let mut config = Config {
        data_dir: base.path().join("data"),
        plugins_dir: PathBuf::new(),
        ..Config::default()
    };
    config.webhooks.allow_private_destinations = true;
    config.webhooks.max_concurrency = concurrency.max(1) as u64;
    let service = open_service(&config, Arc::new(SystemClock))?;
    let (addr, received) = receiver().await?;
    let system = Principal::system();
    for _ in 0..webhooks {
        let url = Destination::parse(&format!("http://{addr}/hook")).map_err(|e| anyhow!(e))?;
        service
            .create_webhook(
                &system,
                NewWebhook {
                    url,
                    events: vec!["lead.*".into()],
                    secret: None,
                    active: true,
                },
                None,
            )
            .await
            .map_err(|e| anyhow!("creating a webhook: {e}"))?;
    }
    let changes = deliveries.div_ceil(webhooks);
    let leads: Vec<Uuid> = (0..changes.div_ceil(EVENTS_PER_LEAD))
        .map(|_| Uuid::now_v7())
        .collect();
    let filled = Instant::now();
    let mut written = 0;
    while written < changes {
        let n = FILL_CHUNK.min(changes - written);
        let from = written;
        let leads = leads.clone();
        service
            .store()
            .write(move |tx| {
                for i in from..from + n {
                    let lead = leads[i % leads.len()];
                    tx.change_entry(ChangeEntry {
                        entity: Entity::Lead,
                        id: lead,
                        op: if i < leads.len() {
                            Op::Create
                        } else {
                            Op::Update
                        },
                        at: tx.now,
                        lead_id: Some(lead),
                        owner_id: None,
                        pool_id: None,
                    })?;
                }
                Ok(())
            })
            .await
            .context("writing changes")?;
        written += n;
    }
    let pending = service.store().read()?.pending_deliveries()?;
    println!(
        "bench webhooks: {changes} changes about {} leads × {webhooks} webhooks = {pending} deliveries written to the outbox in {:.1} s",
        leads.len(),
        filled.elapsed().as_secs_f64()
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(crate::service::run_delivery(
        service.clone(),
        stop.clone().cancelled_owned(),
    ));
    let deadline = started + Duration::from_secs(600);
    let mut last_report = Instant::now();
    let left = loop {
        let left = service.store().read()?.pending_deliveries()?;
        if left == 0 || Instant::now() > deadline {
            break left;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            println!(
                "  {} delivered, {left} pending",
                pending.saturating_sub(left)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = worker.await;
    let done = pending.saturating_sub(left);
    println!(
        "delivered {done} of {pending} in {secs:.2} s: {:.0} deliveries/s ({} requests received, {concurrency} attempts in flight at most){}",
        done as f64 / secs,
        received.load(Ordering::Relaxed),
        if left > 0 {
            " — stopped after 600 s"
        } else {
            ""
        }
    );
    Ok(if left == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
