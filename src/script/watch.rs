//! Reloads plugins when a file in the plugins directory changes, so an edit takes effect
//! within a couple of seconds without a restart.

use super::Plugins;
use crate::clock::Clock;
use notify::{RecursiveMode, Watcher};
use std::sync::Arc;
use std::time::Duration;

/// Edits often arrive as several events (write, rename, chmod); wait this long for quiet.
const SETTLE: Duration = Duration::from_millis(300);

/// Watches the plugins directory until `stop` resolves. A directory that does not exist (or a
/// platform without file events) is logged; reloads are then on demand only.
pub async fn watch(plugins: Plugins, clock: Arc<dyn Clock>, stop: impl Future<Output = ()>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let dir = plugins.dir().to_owned();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let _watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::info!(dir = %plugins.dir().display(), error = %e, "not watching the plugins directory; reload with POST /v1/admin/plugins/reload");
            stop.await;
            return;
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            got = rx.recv() => {
                if got.is_none() {
                    return;
                }
                // Let the burst of events of one save pass, then reload once.
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
                let p = plugins.clone();
                let now = clock.now_ms();
                match tokio::task::spawn_blocking(move || p.reload(now)).await {
                    Ok(report) => tracing::info!(compiled = ?report.compiled, failed = report.failed.len(), removed = ?report.removed, "plugins reloaded after a file change"),
                    Err(e) => tracing::error!(error = %e, "plugin reload panicked"),
                }
            }
        }
    }
}
