//! Desktop notifications for what a person must know without looking at `nuage status`: a
//! conflict (both copies kept), an account out of quota (saves wait on this computer), a file
//! the server refuses (its name, place or size), a login the server refuses; and a mount that
//! fails with no terminal to print its error to (`cli` tells that one itself).
//!
//! The mount hands each status snapshot to [`Alerts::after`], which compares it with the one
//! before and says what is new; [`Desktop`] shows it through the session's notification
//! service (on Linux the freedesktop `org.freedesktop.Notifications` D-Bus service, when the
//! mount runs in a desktop session; elsewhere nothing yet). `NUAGE_NOTIFY=off` turns them off.
//! What they say is in the log too, where the event itself is logged.

use crate::status::Status;
use std::collections::HashSet;

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Its title.
    pub summary: String,
    /// Its text.
    pub body: String,
}

/// What the snapshots before showed, so that each event is told once.
#[derive(Debug, Default)]
pub struct Alerts {
    started: bool,
    /// Conflicted copies already told (or there before the mount started).
    conflicts: HashSet<String>,
    out_of_quota: bool,
    /// Uploads the server refused for what they are, already told.
    refused_files: HashSet<String>,
    refused: bool,
}

/// `path` (a path in the mounted folder, `/a/b`) as it appears under the mount point.
fn in_mount(mountpoint: &str, path: &str) -> String {
    format!(
        "{}/{}",
        mountpoint.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

impl Alerts {
    /// What `st` shows that the snapshots before did not. Conflicted copies listed by the
    /// first snapshot come from earlier mounts and were told then.
    pub fn after(&mut self, st: &Status) -> Vec<Alert> {
        let first = !std::mem::replace(&mut self.started, true);
        let mut out = Vec::new();
        for c in &st.conflicts {
            if self.conflicts.insert(c.conflict_path.clone()) && !first {
                out.push(Alert {
                    summary: "nuage: both copies kept".into(),
                    body: format!(
                        "{} was changed here and on the server at the same time: it now holds \
                         the server's version, yours is {}",
                        in_mount(&st.mountpoint, &c.path),
                        in_mount(&st.mountpoint, &c.conflict_path)
                    ),
                });
            }
        }
        let waiting = st.uploads.iter().filter(|u| u.out_of_quota).count();
        if waiting > 0 && !self.out_of_quota {
            out.push(Alert {
                summary: "nuage: the cloud is full".into(),
                body: format!(
                    "{waiting} file{} could not be saved to {}: the account is out of quota. \
                     They stay on this computer and go up once there is room (nuage status {})",
                    if waiting == 1 { "" } else { "s" },
                    st.url,
                    st.mountpoint
                ),
            });
        }
        self.out_of_quota = waiting > 0;
        let refused: Vec<_> = st.uploads.iter().filter(|u| u.refused).collect();
        let new: Vec<_> = refused
            .iter()
            .filter(|u| !self.refused_files.contains(&u.path))
            .collect();
        if let Some(first) = new.first() {
            let why = first
                .last_error
                .as_deref()
                .unwrap_or("refused by the server");
            let body = match new.len() {
                1 => format!(
                    "{} cannot be saved to the server: {why}. It stays on this computer \
                     (nuage status {})",
                    in_mount(&st.mountpoint, &first.path),
                    st.mountpoint
                ),
                n => format!(
                    "{n} files cannot be saved to the server, {} among them: {why}. They stay \
                     on this computer (nuage status {})",
                    in_mount(&st.mountpoint, &first.path),
                    st.mountpoint
                ),
            };
            out.push(Alert {
                summary: "nuage: a file cannot be saved".into(),
                body,
            });
        }
        self.refused_files = refused.iter().map(|u| u.path.clone()).collect();
        match &st.auth_error {
            Some(why) if !self.refused => out.push(Alert {
                summary: "nuage: sign in again".into(),
                body: why.clone(),
            }),
            _ => {}
        }
        self.refused = st.auth_error.is_some();
        out
    }
}

/// The desktop's notification service.
#[derive(Debug, Clone, Copy)]
pub struct Desktop(());

impl Desktop {
    /// The service of the desktop session the mount runs in; `None` outside one (no session
    /// bus named in the environment: nothing is started to find one) or with
    /// `NUAGE_NOTIFY=off`.
    pub fn of_session() -> Option<Desktop> {
        if std::env::var("NUAGE_NOTIFY").is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
            return None;
        }
        if cfg!(target_os = "linux") && std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
            return Some(Desktop(()));
        }
        None
    }

    /// Shows `alerts`, logging each outcome (a blocking D-Bus call of at most a few seconds
    /// each: call it off the mount's threads, see [`Desktop::show_in_background`]).
    pub fn show(&self, alerts: &[Alert]) {
        for a in alerts {
            match show(a) {
                Ok(()) => tracing::info!(summary = %a.summary, "desktop notification shown"),
                Err(e) => tracing::debug!(error = %e, "cannot show a desktop notification"),
            }
        }
    }

    /// [`Desktop::show`] on a thread of its own.
    pub fn show_in_background(self, alerts: Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        let started = std::thread::Builder::new()
            .name("nuage-notify".into())
            .spawn(move || self.show(&alerts));
        if let Err(e) = started {
            tracing::debug!(error = %e, "cannot start the notification thread");
        }
    }
}

#[cfg(target_os = "linux")]
fn show(a: &Alert) -> Result<(), String> {
    use dbus::blocking::Connection;
    let conn = Connection::new_session().map_err(|e| e.to_string())?;
    let proxy = conn.with_proxy(
        "org.freedesktop.Notifications",
        "/org/freedesktop/Notifications",
        std::time::Duration::from_secs(5),
    );
    let hints = dbus::arg::PropMap::new();
    let (_id,): (u32,) = proxy
        .method_call(
            "org.freedesktop.Notifications",
            "Notify",
            (
                "nuage",
                0u32,
                "folder-remote",
                a.summary.as_str(),
                a.body.as_str(),
                Vec::<String>::new(),
                hints,
                -1i32,
            ),
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn show(_a: &Alert) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{CacheInfo, ConflictInfo, Status};
    use crate::writeback::PendingInfo;

    fn status() -> Status {
        Status {
            pid: 1,
            mountpoint: "/home/prof/cloud".into(),
            url: "https://cloud.example.org/".into(),
            pending_uploads: 0,
            uploads: vec![],
            conflicts: vec![],
            cache: CacheInfo {
                bytes: 0,
                limit: 0,
                blocks: 0,
                pinned_bytes: 0,
                pending_bytes: 0,
            },
            updated: 0,
            updated_ms: 0,
            auth_error: None,
            online: true,
            offline_since: None,
            offline_reason: None,
            pins: vec![],
            pending_folders: vec![],
            pending_deletes: vec![],
            pending_renames: vec![],
            pending_folder_deletes: vec![],
            root_in_account: None,
        }
    }

    fn upload(path: &str, out_of_quota: bool) -> PendingInfo {
        PendingInfo {
            path: path.into(),
            size: 10,
            bytes_sent: 0,
            attempts: 1,
            last_error: None,
            uploading: false,
            out_of_quota,
            refused: false,
        }
    }

    fn refused(path: &str) -> PendingInfo {
        PendingInfo {
            refused: true,
            last_error: Some("HTTP 413: too large for the server".into()),
            ..upload(path, false)
        }
    }

    fn conflict(path: &str, copy: &str) -> ConflictInfo {
        ConflictInfo {
            path: path.into(),
            conflict_path: copy.into(),
            at: 0,
        }
    }

    #[test]
    fn each_event_is_told_once_and_old_conflicts_not_at_all() {
        let mut a = Alerts::default();
        let mut st = status();
        st.conflicts = vec![conflict("/old.odt", "/old (conflicted copy).odt")];
        assert_eq!(a.after(&st), vec![], "a conflict from an earlier mount");

        st.conflicts
            .push(conflict("/Cours/plan.odt", "/Cours/plan (c).odt"));
        let told = a.after(&st);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].summary, "nuage: both copies kept");
        assert!(
            told[0].body.contains("/home/prof/cloud/Cours/plan.odt")
                && told[0].body.contains("/home/prof/cloud/Cours/plan (c).odt"),
            "{}",
            told[0].body
        );
        assert_eq!(a.after(&st), vec![], "told once");

        st.uploads = vec![upload("/a.odt", true), upload("/b.odt", true)];
        let told = a.after(&st);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].summary, "nuage: the cloud is full");
        assert!(told[0].body.starts_with("2 files could not be saved"));
        st.uploads.push(upload("/c.odt", true));
        assert_eq!(a.after(&st), vec![], "still full: not told again");
        st.uploads.clear();
        assert_eq!(a.after(&st), vec![]);
        st.uploads = vec![upload("/d.odt", true)];
        assert!(
            a.after(&st)[0].body.starts_with("1 file could not"),
            "full again"
        );

        st.auth_error = Some("the server refused the app password".into());
        let told = a.after(&st);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].summary, "nuage: sign in again");
        assert_eq!(a.after(&st), vec![]);
    }

    #[test]
    fn files_the_server_refuses_are_told_once_while_refused() {
        let mut a = Alerts::default();
        let mut st = status();
        st.uploads = vec![refused("/Vidéos/film.mkv")];
        let told = a.after(&st);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].summary, "nuage: a file cannot be saved");
        assert_eq!(
            told[0].body,
            "/home/prof/cloud/Vidéos/film.mkv cannot be saved to the server: HTTP 413: too \
             large for the server. It stays on this computer (nuage status /home/prof/cloud)"
        );
        assert_eq!(a.after(&st), vec![]);
        st.uploads.push(refused("/a.bin"));
        st.uploads.push(refused("/b.bin"));
        let told = a.after(&st);
        assert!(
            told[0].body.starts_with("2 files cannot be saved"),
            "{told:?}"
        );
        st.uploads.clear();
        assert_eq!(a.after(&st), vec![]);
        st.uploads = vec![refused("/a.bin")];
        assert_eq!(a.after(&st).len(), 1, "refused again after it was not");
    }

    #[test]
    fn a_refusal_at_the_first_snapshot_is_told() {
        let mut a = Alerts::default();
        let mut st = status();
        st.auth_error = Some("refused".into());
        assert_eq!(a.after(&st).len(), 1);
    }
}
