//! Reloads plugins when a file in the plugins directory changes, so an edit takes effect
//! within a couple of seconds without a restart.

use super::Plugins;
use crate::clock::Clock;
use notify::{RecursiveMode, Watcher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Edits often arrive as several events (write, rename, chmod); wait this long for quiet.
const SETTLE: Duration = Duration::from_millis(300);

/// A watch on the plugins directory. Events are queued from the moment it starts, so an edit
/// made before [`PluginWatch::run`] is first polled is not lost.
pub struct PluginWatch {
    plugins: Plugins,
    events: mpsc::UnboundedReceiver<()>,
    _watcher: notify::RecommendedWatcher,
}

impl PluginWatch {
    /// Starts watching. A directory that does not exist (or a platform without file events)
    /// is logged and gives `None`: reloads are then on demand only.
    pub fn start(plugins: &Plugins) -> Option<PluginWatch> {
        let (tx, events) = mpsc::unbounded_channel::<()>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .and_then(|mut w| w.watch(plugins.dir(), RecursiveMode::Recursive).map(|()| w));
        match watcher {
            Ok(w) => Some(PluginWatch {
                plugins: plugins.clone(),
                events,
                _watcher: w,
            }),
            Err(e) => {
                tracing::info!(dir = %plugins.dir().display(), error = %e, "not watching the plugins directory; reload with POST /v1/admin/plugins/reload");
                None
            }
        }
    }

    /// Reloads after each burst of changes until `stop` resolves.
    pub async fn run(mut self, clock: Arc<dyn Clock>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                got = self.events.recv() => {
                    if got.is_none() {
                        return;
                    }
                    // Let the burst of events of one save pass, then reload once.
                    tokio::time::sleep(SETTLE).await;
                    while self.events.try_recv().is_ok() {}
                    let p = self.plugins.clone();
                    let now = clock.now_ms();
                    match tokio::task::spawn_blocking(move || p.reload(now)).await {
                        Ok(report) => tracing::info!(compiled = ?report.compiled, failed = report.failed.len(), removed = ?report.removed, "plugins reloaded after a file change"),
                        Err(e) => tracing::error!(error = %e, "plugin reload panicked"),
                    }
                }
            }
        }
    }
}
