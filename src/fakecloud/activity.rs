//! The Activity app's OCS API v2 (nextcloud-protocol.md §9.3): what happened to the user's
//! files, newest first or since a known id. Operations through this server's DAV API are
//! recorded as the user's own; tests record what colleagues did with
//! [`super::FakeCloud::record_activity`]. Changes made behind the server's back (in its folder
//! directly) leave no activity, as on a real server with external storage.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Activities so far, oldest first; ids grow from 1.
#[derive(Default)]
pub(super) struct ActivityLog {
    items: Vec<serde_json::Value>,
}

/// What a query answers: the page, and whether more follow it.
pub(super) struct Page {
    pub items: Vec<serde_json::Value>,
    pub more: bool,
}

/// ISO 8601 in UTC, as the API gives `datetime`.
fn iso8601(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d, hh, mm, ss) = crate::writeback::civil_utc(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}+00:00")
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl ActivityLog {
    /// Records that `actor` did `kind` (`file_created`, `file_changed`, `file_deleted`,
    /// `file_restored`, `shared`) to `path` (relative to the user's root, `/a/b.txt`), as
    /// the user `viewer` sees it. `renamed_from` makes a `file_changed` a rename.
    pub fn record(
        &mut self,
        viewer: &str,
        actor: &str,
        kind: &str,
        path: &str,
        renamed_from: Option<&str>,
        fileid: u64,
    ) {
        let me = actor == viewer;
        let who = if me {
            "You".to_string()
        } else {
            actor.to_string()
        };
        let n = name_of(path);
        let subject = match (kind, renamed_from) {
            ("file_changed", Some(old)) => format!("{who} renamed {} to {n}", name_of(old)),
            ("file_created", _) => format!("{who} created {n}"),
            ("file_changed", _) => format!("{who} changed {n}"),
            ("file_deleted", _) => format!("{who} deleted {n}"),
            ("file_restored", _) => format!("{who} restored {n}"),
            ("shared", _) if me => format!("You shared {n}"),
            ("shared", _) => format!("{actor} shared {n} with you"),
            _ => format!("{who}: {kind} {n}"),
        };
        let app = if kind == "shared" {
            "files_sharing"
        } else {
            "files"
        };
        let id = self.items.len() as i64 + 1;
        self.items.push(serde_json::json!({
            "activity_id": id,
            "app": app,
            "type": kind,
            "user": actor,
            "affecteduser": viewer,
            "subject": subject,
            "message": "",
            "object_type": "files",
            "object_id": fileid,
            "object_name": path,
            "link": "",
            "icon": "",
            "datetime": iso8601(SystemTime::now()),
        }));
    }

    /// One page for `filter` (`all`, `self`, `by`, `files`, `files_sharing`; `None` for an
    /// unknown filter) as seen by `viewer`: with `asc`, the activities after `since`, oldest
    /// first; else those before `since` (or the newest), newest first. At most `limit`.
    pub fn query(
        &self,
        viewer: &str,
        filter: &str,
        since: Option<i64>,
        asc: bool,
        limit: usize,
    ) -> Option<Page> {
        let keep = |a: &&serde_json::Value| {
            let user = a["user"].as_str().unwrap_or("");
            match filter {
                "all" => true,
                "self" => user == viewer,
                "by" => user != viewer,
                "files" | "files_sharing" => a["app"] == filter,
                _ => false,
            }
        };
        if !["all", "self", "by", "files", "files_sharing"].contains(&filter) {
            return None;
        }
        let id = |a: &serde_json::Value| a["activity_id"].as_i64().unwrap_or(0);
        let matching: Vec<&serde_json::Value> = if asc {
            self.items
                .iter()
                .filter(keep)
                .filter(|a| since.is_none_or(|s| id(a) > s))
                .collect()
        } else {
            self.items
                .iter()
                .rev()
                .filter(keep)
                .filter(|a| since.is_none_or(|s| id(a) < s))
                .collect()
        };
        Some(Page {
            more: matching.len() > limit,
            items: matching.into_iter().take(limit).cloned().collect(),
        })
    }
}

/// The query parameters of a request.
pub(super) fn query_params(q: Option<&str>) -> HashMap<String, String> {
    super::http::decoded_pairs(q.unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::ActivityLog;

    fn ids(p: &super::Page) -> Vec<i64> {
        p.items
            .iter()
            .map(|a| a["activity_id"].as_i64().unwrap_or(0))
            .collect()
    }

    #[test]
    fn pages_follow_the_reference_order_and_filters() {
        let mut log = ActivityLog::default();
        for i in 0..5 {
            let actor = if i % 2 == 0 { "me" } else { "alice" };
            log.record(
                "me",
                actor,
                "file_created",
                &format!("/d/f{i}.txt"),
                None,
                7,
            );
        }
        let newest = log.query("me", "all", None, false, 2).expect("all");
        assert_eq!(ids(&newest), [5, 4]);
        assert!(newest.more);
        let older = log.query("me", "all", Some(4), false, 10).expect("all");
        assert_eq!(ids(&older), [3, 2, 1]);
        assert!(!older.more);
        let after = log.query("me", "all", Some(3), true, 10).expect("all");
        assert_eq!(ids(&after), [4, 5]);
        assert!(log
            .query("me", "all", Some(5), true, 10)
            .expect("all")
            .items
            .is_empty());
        assert_eq!(
            ids(&log.query("me", "by", None, true, 10).expect("by")),
            [2, 4]
        );
        assert_eq!(
            log.query("me", "by", None, true, 10).expect("by").items[0]["subject"],
            "alice created f1.txt"
        );
        assert_eq!(
            log.query("me", "self", None, true, 10).expect("self").items[0]["subject"],
            "You created f0.txt"
        );
        assert!(log.query("me", "nonsense", None, true, 10).is_none());
    }
}
