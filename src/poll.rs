//! The poller: follows the server while mounted.
//!
//! Every `interval` it asks the server what changed ([`Vfs::check_remote_changes`]: one
//! Depth 0 PROPFIND of the root when nothing changed) and lets the kernel forget what is
//! stale. While the server is out of reach it probes every `offline_probe` instead, so the
//! mount goes back online by itself within seconds of the server answering again. After
//! changes it wakes the pin hydrator so pinned folders stay complete.

use crate::vfs::Vfs;
use std::sync::Arc;
use std::time::Duration;

/// Poller settings.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Time between two checks while online.
    pub interval: Duration,
    /// Time between two probes while offline.
    pub offline_probe: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            interval: Duration::from_secs(30),
            offline_probe: Duration::from_secs(2),
        }
    }
}

/// Starts the poller on the current runtime; it ends with the runtime.
pub fn start(vfs: Arc<Vfs>, cfg: PollConfig) {
    tokio::spawn(async move {
        let reach = vfs.reach();
        loop {
            let wait = if reach.is_online() {
                cfg.interval
            } else {
                cfg.offline_probe
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // Went offline meanwhile: start probing at the short interval.
                _ = reach.changed(), if reach.is_online() => continue,
            }
            let was_online = reach.is_online();
            match vfs.check_remote_changes().await {
                Ok(c) => {
                    if !was_online || !c.changed_files.is_empty() {
                        vfs.wake_hydrator();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "change check failed"),
            }
        }
    });
}
