//! Building and running the server: open the store, create the first admin, bind, serve until
//! a shutdown signal, then finish in-flight requests. Tests start it on port 0.

use crate::api::{self, AppState};
use crate::clock::Clock;
use crate::config::Config;
use crate::search::Search;
use crate::service::{Service, ServiceConfig};
use crate::store::{Store, WriterConfig};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    service: Service,
    search: Search,
    config: Arc<Config>,
    admin_token: Option<String>,
    plugin_watch: Option<crate::script::PluginWatch>,
    /// The SMTP sender; `None`: email waits in the outbox, unsent.
    mailer: Option<crate::service::Mailer>,
    test_clock: Option<Arc<crate::clock::ManualClock>>,
}

impl Application {
    /// Opens the store in `config.data_dir` and binds `config.listen` (port 0 picks a free one).
    pub async fn build(mut config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        let addr = config.listen_addr()?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        if config.public_url.is_empty() {
            if !config.email.smtp_host.is_empty() {
                tracing::warn!(
                    "public_url is not set: unsubscribe, open and click links in email will point at http://{addr}, which recipients may not reach"
                );
            }
            // Links in email must name the port actually bound (port 0 picks one).
            config.public_url = format!("http://{addr}");
        }
        let mailer = crate::service::Mailer::from_config(&config.email, &config.public_base_url())
            .map_err(|m| anyhow::anyhow!("email: {m}"))?;
        let service = open_service(&config, clock)?;
        service
            .ensure_default_pool()
            .await
            .context("creating the default pool")?;
        let plugin_watch = if config.plugins.watch {
            let watch = crate::script::PluginWatch::start(service.plugins());
            // An edit made between the first load and the watch starting is picked up here.
            service.plugins().reload(service.now());
            watch
        } else {
            None
        };
        let search = Search::start(
            &config.data_dir,
            service.store().clone(),
            std::time::Duration::from_secs(config.search.compact_after_idle_secs),
        )
        .context("opening the search index")?;
        // Last: its one-time token is printed once the server is built, so a start that
        // fails before that must not have created the admin already.
        let admin_token = service
            .bootstrap_admin()
            .await
            .context("creating the first admin user")?;
        Ok(Application {
            listener,
            addr,
            service,
            search,
            config: Arc::new(config),
            admin_token,
            plugin_watch,
            mailer,
            test_clock: None,
        })
    }

    /// Lets `POST /v1/admin/clock` move `clock` (which must be the clock this was built with):
    /// the documented way for black-box tests of the binary to make time pass.
    pub fn with_test_clock(mut self, clock: Arc<crate::clock::ManualClock>) -> Self {
        self.test_clock = Some(clock);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin token created on this start, if the store was empty.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let search = self.search.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut background = Vec::new();
        if let Some(watch) = self.plugin_watch {
            background.push(tokio::spawn(
                watch.run(self.service.clock(), stop.clone().cancelled_owned()),
            ));
        }
        background.push(tokio::spawn(crate::service::run_scheduler(
            self.service.clone(),
            stop.clone().cancelled_owned(),
        )));
        match self.mailer {
            Some(mailer) => background.push(tokio::spawn(crate::service::run_mailer(
                self.service.clone(),
                mailer,
                stop.clone().cancelled_owned(),
            ))),
            None => tracing::info!(
                "no SMTP server configured ([email] smtp_host): email waits in the outbox, unsent"
            ),
        }
        background.push(tokio::spawn(crate::service::run_delivery(
            self.service.clone(),
            stop.clone().cancelled_owned(),
        )));
        background.push(tokio::spawn(crate::service::run_score_reviews(
            self.service.clone(),
            SCORE_REVIEW_TICK,
            stop.clone().cancelled_owned(),
        )));
        // Open `/v1/events` streams end when shutdown starts, or it would wait for them.
        let closing = self.service.clone();
        let shutdown = async move {
            shutdown.await;
            closing.close_event_streams();
        };
        let state = AppState::new(self.service, self.config, self.search, self.test_clock);
        let app = api::app(state).into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("HTTP server failed");
        // The indexer holds the store open; it stops before this returns so the data directory
        // is free for the next start.
        search.shutdown().await;
        stop.cancel();
        for task in background {
            let _ = task.await;
        }
        served
    }
}

/// Opens the store and the service on top of it (also used by CLI commands).
pub fn open_service(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Service> {
    let plugins = load_plugins(config, clock.now_ms());
    open_service_with(config, clock, plugins)
}

/// Compiles the plugins directory, logging what did not load and settings no script reads.
pub fn load_plugins(config: &Config, now: crate::domain::time::Millis) -> crate::script::Plugins {
    let plugins = crate::script::Plugins::load(config.plugin_settings(), now);
    let report = plugins.report();
    for failure in &report.not_loaded {
        tracing::error!(file = %failure.file, line = failure.line, error = %failure.message, "plugin not loaded");
    }
    // A script's settings under a name no script has are a typo its script never sees.
    let files: Vec<&str> = report
        .scripts
        .iter()
        .map(|s| s.file.as_str())
        .chain(report.not_loaded.iter().map(|f| f.file.as_str()))
        .collect();
    for name in config.plugins.config.keys() {
        let file = format!("{name}.rhai");
        if !files.contains(&file.as_str()) {
            tracing::warn!(
                "[plugins.config.{name}] names no script: there is no {file} in {}",
                config.plugins_dir.display()
            );
        }
    }
    tracing::info!(dir = %config.plugins_dir.display(), scripts = report.scripts.len(), hooks = ?report.hooks, "plugins");
    plugins
}

/// [`open_service`] with plugins already loaded.
pub fn open_service_with(
    config: &Config,
    clock: Arc<dyn Clock>,
    plugins: crate::script::Plugins,
) -> anyhow::Result<Service> {
    let writer = WriterConfig {
        max_batch: usize::try_from(config.store.max_batch).unwrap_or(1024),
        cache_bytes: usize::try_from(config.store.cache_mib.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX),
        ..WriterConfig::default()
    };
    let store = Store::open(&config.data_dir, clock.clone(), writer)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    Ok(Service::new(
        store,
        clock,
        config.normalize_rules(),
        ServiceConfig {
            session_ttl_ms: i64::try_from(config.auth.session_ttl_hours)
                .unwrap_or(24)
                .saturating_mul(3_600_000),
            list_scan_budget: usize::try_from(config.store.list_scan_budget).unwrap_or(20_000),
        },
    )
    .with_plugins(plugins)
    .with_webhooks(crate::service::WebhookSettings::from(&config.webhooks)))
}

/// How often the score reviewer looks at the clock for leads due a decay review.
const SCORE_REVIEW_TICK: std::time::Duration = std::time::Duration::from_millis(200);

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so a signal that arrives as soon as the server answers is not lost
/// (axum polls the shutdown future from a task of its own).
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for a shutdown signal");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = wait(interrupt) => {},
            _ = wait(terminate) => {},
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}
