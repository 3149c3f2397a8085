//! The poller: follows the server while mounted.
//!
//! Every `interval` it asks the server what changed ([`Vfs::check_remote_changes`]: one
//! Depth 0 PROPFIND of the root when nothing changed) and lets the kernel forget what is
//! stale. While the server is out of reach it probes every `offline_probe` instead, so the
//! mount goes back online by itself within seconds of the server answering again. After
//! changes it wakes the pin hydrator so pinned folders stay complete.
//!
//! When the server offers notify_push (nextcloud-protocol.md §9.2), a WebSocket connection
//! tells about changes as they happen: each `notify_file` triggers a check at once, and the
//! periodic check slows down to a safety net (every 5 minutes at least). After a (re)connect
//! everything counts as possibly changed. Three refusals of the credentials end the push
//! connection (polling goes on); other failures reconnect with capped backoff.

use crate::vfs::Vfs;
use crate::webdav::Secret;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

/// Where and as whom to listen for notify_push messages.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The WebSocket URL from the capabilities (`wss://host/push/ws`).
    pub url: String,
    /// Login name.
    pub login: String,
    /// App password.
    pub password: Secret,
}

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

/// Starts the poller (and the notify_push listener when `push` is given) on the current
/// runtime; they end with the runtime.
pub fn start(vfs: Arc<Vfs>, cfg: PollConfig, push: Option<PushConfig>) {
    let trigger = Arc::new(Notify::new());
    let connected = Arc::new(AtomicBool::new(false));
    if let Some(p) = push {
        tokio::spawn(push_loop(p, trigger.clone(), connected.clone()));
    }
    tokio::spawn(async move {
        let reach = vfs.reach();
        loop {
            let wait = if !reach.is_online() {
                cfg.offline_probe
            } else if connected.load(Ordering::SeqCst) {
                cfg.interval.max(Duration::from_secs(300))
            } else {
                cfg.interval
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = trigger.notified() => {}
                // Went offline meanwhile: start probing at the short interval.
                _ = reach.changed(), if reach.is_online() => continue,
            }
            let was_online = reach.is_online();
            match vfs.check_remote_changes().await {
                Ok(c) => {
                    if !was_online || !c.changed_files.is_empty() || c.names_changed {
                        vfs.wake_hydrator();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "change check failed"),
            }
        }
    });
}

/// Where and as whom to read the Activity feed (nextcloud-protocol.md §9.3).
#[derive(Debug, Clone)]
pub struct ActivityConfig {
    /// The account's services (the Activity API among them).
    pub api: crate::webdav::nextcloud::Services,
    /// Time between two reads while online.
    pub interval: Duration,
}

/// Activities asked for at once; the server gives at most 200.
const ACTIVITY_PAGE: u32 = 100;

/// Follows the server's Activity feed while mounted: the newest activities once, then
/// every `interval` (while online) what came after the last one seen (`sort=asc&since=`,
/// cheap: 304 when nothing is new), page after page. Remembered in `meta.sqlite`, where
/// `nuage activity` reads them (also while the server is out of reach, or after the mount
/// ended).
pub fn follow_activity(vfs: Arc<Vfs>, cfg: ActivityConfig) {
    tokio::spawn(async move {
        let reach = vfs.reach();
        // The newest id seen, in the store from an earlier run; then kept here.
        let meta = vfs.meta().clone();
        let mut since = tokio::task::spawn_blocking(move || meta.last_activity_id())
            .await
            .ok()
            .flatten();
        loop {
            if reach.is_online() {
                if let Err(e) = read_activity(&vfs, &cfg, &mut since).await {
                    tracing::debug!(error = %e, "activity feed not read");
                }
            }
            tokio::time::sleep(cfg.interval).await;
        }
    });
}

async fn read_activity(
    vfs: &Arc<Vfs>,
    cfg: &ActivityConfig,
    since: &mut Option<i64>,
) -> Result<(), crate::webdav::DavError> {
    let meta = vfs.meta().clone();
    // A few pages per round at most: a long backlog comes over the next rounds.
    for _ in 0..5 {
        let asked = crate::webdav::nextcloud::activities(&cfg.api, *since, ACTIVITY_PAGE).await;
        let page = match asked {
            // The id seen belongs to another user (a cache folder reused for another
            // account): start again from the newest.
            Err(crate::webdav::DavError::Forbidden(_)) if since.is_some() => {
                *since = None;
                continue;
            }
            other => other?,
        };
        let newest = page
            .items
            .iter()
            .filter_map(|a| a.get("activity_id").and_then(|v| v.as_i64()))
            .max();
        if page.items.is_empty() {
            return Ok(());
        }
        for a in &page.items {
            tracing::debug!(subject = a["subject"].as_str().unwrap_or(""), "activity");
        }
        let m = meta.clone();
        let more = page.more && since.is_some();
        tokio::task::spawn_blocking(move || m.add_activities(&page.items))
            .await
            .map_err(|e| crate::webdav::DavError::BadResponse(e.to_string()))?
            .map_err(|e| {
                crate::webdav::DavError::BadResponse(format!(
                    "cannot remember the activity feed: {e}"
                ))
            })?;
        *since = newest.max(*since);
        if !more {
            return Ok(());
        }
    }
    Ok(())
}

enum PushEnd {
    Refused(String),
    Failed(String),
}

async fn push_loop(cfg: PushConfig, trigger: Arc<Notify>, connected: Arc<AtomicBool>) {
    let mut backoff = Duration::from_secs(2);
    let mut refusals = 0;
    loop {
        let res = push_once(&cfg, &trigger, &connected).await;
        let was_connected = connected.swap(false, Ordering::SeqCst);
        match res {
            PushEnd::Refused(why) => {
                refusals += 1;
                tracing::warn!(%why, "notify_push refused the login");
                if refusals >= 3 {
                    tracing::warn!("notify_push gave up after three refusals; polling only");
                    return;
                }
            }
            PushEnd::Failed(why) => {
                tracing::debug!(%why, "notify_push connection ended");
                if was_connected {
                    backoff = Duration::from_secs(2);
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

async fn push_once(cfg: &PushConfig, trigger: &Notify, connected: &AtomicBool) -> PushEnd {
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(cfg.url.as_str()),
    )
    .await;
    let mut ws = match conn {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return PushEnd::Failed(e.to_string()),
        Err(_) => return PushEnd::Failed("connection timed out".into()),
    };
    for m in [cfg.login.as_str(), cfg.password.expose()] {
        if let Err(e) = ws.send(Message::text(m)).await {
            return PushEnd::Failed(e.to_string());
        }
    }
    match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "authenticated" => {}
        Ok(Some(Ok(Message::Text(t)))) if t.as_str().starts_with("err:") => {
            return PushEnd::Refused(t.as_str().to_string())
        }
        other => return PushEnd::Failed(format!("no authentication answer ({other:?})")),
    }
    connected.store(true, Ordering::SeqCst);
    tracing::info!("notify_push connected: server changes arrive as they happen");
    // Anything may have changed while not connected.
    trigger.notify_one();
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if t.as_str().starts_with("notify_file") {
                        trigger.notify_one();
                    }
                }
                Some(Ok(Message::Close(_))) | None => return PushEnd::Failed("closed by the server".into()),
                Some(Err(e)) => return PushEnd::Failed(e.to_string()),
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep(Duration::from_secs(30)) => {
                if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                    return PushEnd::Failed(e.to_string());
                }
            }
        }
    }
}
