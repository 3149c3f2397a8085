//! What the mount remembers between runs besides blocks: folder listings (so that a mount
//! started while the server is out of reach still shows what it knew), the pinned paths, and
//! the modification times a plain WebDAV server cannot store. SQLite (`meta.sqlite` in the
//! cache folder); listings are written by a background thread so that no filesystem call
//! waits for the disk.

use crate::webdav::{Entry, RemotePath};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Serialize, Deserialize)]
struct Stored {
    n: String,
    d: bool,
    s: u64,
    m: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
}

fn to_stored(name: &str, e: &Entry) -> Stored {
    Stored {
        n: name.to_string(),
        d: e.is_dir,
        s: e.size,
        m: e.mtime
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        e: e.etag.clone(),
        f: e.fileid,
        p: e.permissions.clone(),
    }
}

fn from_stored(path: RemotePath, s: Stored) -> Entry {
    Entry {
        path,
        is_dir: s.d,
        size: s.s,
        mtime: UNIX_EPOCH + Duration::from_secs(s.m.max(0) as u64),
        etag: s.e,
        fileid: s.f,
        permissions: s.p,
        quota_used: None,
        quota_available: None,
    }
}

enum Job {
    Listing(RemotePath, Entry, Vec<Entry>),
    Flush(mpsc::Sender<()>),
}

/// The store.
pub struct MetaStore {
    db: Arc<Mutex<Connection>>,
    tx: Mutex<mpsc::Sender<Job>>,
}

/// Activities kept in `meta.sqlite`.
pub const ACTIVITY_KEPT: i64 = 500;

/// The newest `limit` activities in a `meta.sqlite`, oldest first.
pub fn read_activities(db: &Connection, limit: u32) -> rusqlite::Result<Vec<serde_json::Value>> {
    let mut st = db.prepare("SELECT json FROM activity ORDER BY id DESC LIMIT ?1")?;
    let rows = st.query_map(params![limit], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        if let Ok(v) = serde_json::from_str(&r?) {
            out.push(v);
        }
    }
    out.reverse();
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MetaStore {
    /// Opens (or creates) `meta.sqlite` in `dir`.
    ///
    /// A damaged store is set aside as `meta.sqlite.damaged` and a new one made: what it
    /// kept (listings for offline use, pins, modification times a server cannot store,
    /// execute bits, the activity seen) is lost, which the log says, but the mount goes on.
    pub fn open(dir: &Path) -> rusqlite::Result<MetaStore> {
        crate::cache::open_or_start_afresh(
            &dir.join("meta.sqlite"),
            "listings kept for offline use, offline pins (pin your folders again), kept \
             modification times and execute bits are lost",
            crate::cache::is_damaged,
            |io| rusqlite::Error::ToSqlConversionFailure(Box::new(io)),
            || Self::open_db(dir),
        )
    }

    fn open_db(dir: &Path) -> rusqlite::Result<MetaStore> {
        let db = Connection::open(dir.join("meta.sqlite"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(Duration::from_secs(10))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS listings (path TEXT PRIMARY KEY, dir TEXT NOT NULL,
                 entries TEXT NOT NULL, saved INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS pins (path TEXT PRIMARY KEY);
             CREATE TABLE IF NOT EXISTS mtimes (path TEXT PRIMARY KEY, etag TEXT NOT NULL,
                 secs INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS activity (id INTEGER PRIMARY KEY, json TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS execs (path TEXT PRIMARY KEY);
",
        )?;
        // Stores written before pins knew their file id get the column (NULL: unknown).
        if db.prepare("SELECT fileid FROM pins LIMIT 0").is_err() {
            db.execute_batch("ALTER TABLE pins ADD COLUMN fileid INTEGER;")?;
        }
        let db = Arc::new(Mutex::new(db));
        let (tx, rx) = mpsc::channel::<Job>();
        let db2 = db.clone();
        std::thread::Builder::new()
            .name("nuage-meta".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Listing(path, dir, entries) => {
                            if let Err(e) = save_listing(&lock(&db2), &path, &dir, &entries) {
                                tracing::debug!(error = %e, "cannot remember a listing");
                            }
                        }
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(MetaStore {
            db,
            tx: Mutex::new(tx),
        })
    }

    /// Remembers a folder's listing (in the background).
    pub fn remember_listing(&self, dir: &Entry, entries: &[Entry]) {
        let children: Vec<Entry> = entries
            .iter()
            .filter(|e| e.path != dir.path)
            .cloned()
            .collect();
        let _ = lock(&self.tx).send(Job::Listing(dir.path.clone(), dir.clone(), children));
    }

    /// Remembers activities of the server's feed (keyed by `activity_id`), keeping the newest
    /// [`ACTIVITY_KEPT`].
    pub fn add_activities(&self, items: &[serde_json::Value]) -> rusqlite::Result<()> {
        let db = lock(&self.db);
        let tx = db.unchecked_transaction()?;
        for a in items {
            if let Some(id) = a.get("activity_id").and_then(|v| v.as_i64()) {
                tx.execute(
                    "INSERT OR REPLACE INTO activity (id, json) VALUES (?1, ?2)",
                    params![id, a.to_string()],
                )?;
            }
        }
        tx.execute(
            "DELETE FROM activity WHERE id NOT IN (SELECT id FROM activity ORDER BY id DESC LIMIT ?1)",
            params![ACTIVITY_KEPT],
        )?;
        tx.commit()
    }

    /// The newest activity id remembered.
    pub fn last_activity_id(&self) -> Option<i64> {
        lock(&self.db)
            .query_row("SELECT MAX(id) FROM activity", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .ok()
            .flatten()
    }

    /// Waits until every listing sent so far is written.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if lock(&self.tx).send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// The remembered listing of `path`: the folder itself and its children.
    pub fn listing(&self, path: &RemotePath) -> Option<(Entry, Vec<Entry>)> {
        let row: Option<(String, String)> = lock(&self.db)
            .query_row(
                "SELECT dir, entries FROM listings WHERE path=?1",
                params![path.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ok()
            .flatten();
        let (dir, entries) = row?;
        let dir: Stored = serde_json::from_str(&dir).ok()?;
        let entries: Vec<Stored> = serde_json::from_str(&entries).ok()?;
        Some((
            from_stored(path.clone(), dir),
            entries
                .into_iter()
                .map(|s| {
                    let p = path.join(&s.n);
                    from_stored(p, s)
                })
                .collect(),
        ))
    }

    /// The pinned paths.
    pub fn pins(&self) -> Vec<RemotePath> {
        let db = lock(&self.db);
        let Ok(mut st) = db.prepare("SELECT path FROM pins ORDER BY path") else {
            return Vec::new();
        };
        st.query_map([], |r| r.get::<_, String>(0))
            .map(|rows| rows.flatten().map(|s| RemotePath::new(&s)).collect())
            .unwrap_or_default()
    }

    /// Pins or unpins `path`; `fileid` is the server's id of what is pinned (Nextcloud), which
    /// finds it again after a rename on the server.
    pub fn set_pin(
        &self,
        path: &RemotePath,
        pinned: bool,
        fileid: Option<u64>,
    ) -> rusqlite::Result<()> {
        let db = lock(&self.db);
        if pinned {
            db.execute(
                "INSERT OR REPLACE INTO pins(path, fileid) VALUES (?1, ?2)",
                params![path.as_str(), fileid.map(|f| f as i64)],
            )?;
        } else {
            db.execute("DELETE FROM pins WHERE path=?1", params![path.as_str()])?;
        }
        Ok(())
    }

    /// The server's id of the pinned `path`, when known.
    pub fn pin_fileid(&self, path: &RemotePath) -> Option<u64> {
        lock(&self.db)
            .query_row(
                "SELECT fileid FROM pins WHERE path=?1",
                params![path.as_str()],
                |r| r.get::<_, Option<i64>>(0),
            )
            .ok()
            .flatten()
            .map(|f| f as u64)
    }

    /// Modification times kept here for a server that cannot store them (plain WebDAV), each
    /// valid while the server's etag of the file is the one recorded with it.
    pub fn mtimes(&self) -> Vec<(RemotePath, String, SystemTime)> {
        let db = lock(&self.db);
        let Ok(mut st) = db.prepare("SELECT path, etag, secs FROM mtimes") else {
            return Vec::new();
        };
        st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map(|rows| {
            rows.flatten()
                .map(|(p, e, s)| {
                    (
                        RemotePath::new(&p),
                        e,
                        UNIX_EPOCH + Duration::from_secs(s.max(0) as u64),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// Records the modification time of `path` at server version `etag`.
    pub fn set_mtime(&self, path: &RemotePath, etag: &str, t: SystemTime) {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let _ = lock(&self.db).execute(
            "INSERT OR REPLACE INTO mtimes(path, etag, secs) VALUES (?1, ?2, ?3)",
            params![path.as_str(), etag, secs],
        );
    }

    /// Files made executable here (`chmod +x`): no WebDAV server stores modes, so the mark
    /// is kept on this device.
    pub fn execs(&self) -> Vec<RemotePath> {
        let db = lock(&self.db);
        let Ok(mut st) = db.prepare("SELECT path FROM execs") else {
            return Vec::new();
        };
        st.query_map([], |r| r.get::<_, String>(0))
            .map(|rows| rows.flatten().map(|p| RemotePath::new(&p)).collect())
            .unwrap_or_default()
    }

    /// Marks `path` executable, or not.
    pub fn set_exec(&self, path: &RemotePath, on: bool) {
        let db = lock(&self.db);
        let _ = if on {
            db.execute(
                "INSERT OR IGNORE INTO execs(path) VALUES (?1)",
                params![path.as_str()],
            )
        } else {
            db.execute("DELETE FROM execs WHERE path = ?1", params![path.as_str()])
        };
    }

    /// Moves the executable marks of `from` and everything below it to `to`.
    pub fn rename_execs(&self, from: &RemotePath, to: &RemotePath) {
        self.rename_rows("execs", from, to);
    }

    /// Moves the recorded modification times of `from` and everything below it to `to`.
    pub fn rename_mtimes(&self, from: &RemotePath, to: &RemotePath) {
        self.rename_rows("mtimes", from, to);
    }

    /// Moves the rows of `table` (one of ours, keyed by `path`) for `from` and everything
    /// below it to `to`.
    fn rename_rows(&self, table: &'static str, from: &RemotePath, to: &RemotePath) {
        let _ = lock(&self.db).execute(
            &format!(
                "UPDATE OR REPLACE {table} SET path = ?2 || substr(path, length(?1) + 1)
                 WHERE path = ?1 OR substr(path, 1, length(?1) + 1) = ?1 || '/'"
            ),
            params![from.as_str(), to.as_str()],
        );
    }
}

fn save_listing(
    db: &Connection,
    path: &RemotePath,
    dir: &Entry,
    entries: &[Entry],
) -> rusqlite::Result<()> {
    let dir_json = serde_json::to_string(&to_stored("", dir)).unwrap_or_default();
    let list: Vec<Stored> = entries
        .iter()
        .map(|e| to_stored(e.path.name(), e))
        .collect();
    let list_json = serde_json::to_string(&list).unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    db.execute(
        "INSERT OR REPLACE INTO listings(path, dir, entries, saved) VALUES (?1, ?2, ?3, ?4)",
        params![path.as_str(), dir_json, list_json, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &str, dir: bool) -> Entry {
        Entry {
            path: RemotePath::new(p),
            is_dir: dir,
            size: 7,
            mtime: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            etag: Some("\"e\"".into()),
            fileid: Some(3),
            permissions: Some("RGDNVW".into()),
            quota_used: None,
            quota_available: None,
        }
    }

    #[test]
    fn listings_and_pins_survive_a_reopen() {
        let d = tempfile::tempdir().expect("tmp");
        {
            let s = MetaStore::open(d.path()).expect("open");
            s.remember_listing(
                &entry("/a", true),
                &[entry("/a", true), entry("/a/f.txt", false)],
            );
            s.set_pin(&RemotePath::new("/a"), true, Some(42))
                .expect("pin");
            s.flush();
        }
        let s = MetaStore::open(d.path()).expect("reopen");
        let (dir, children) = s.listing(&RemotePath::new("/a")).expect("listing");
        assert!(dir.is_dir);
        assert_eq!(children.len(), 1);
        assert_eq!(children[0], entry("/a/f.txt", false));
        assert_eq!(s.pins(), vec![RemotePath::new("/a")]);
        assert_eq!(s.pin_fileid(&RemotePath::new("/a")), Some(42));
    }

    #[test]
    fn the_activity_feed_keeps_the_newest_in_order() {
        let d = tempfile::tempdir().expect("tmp");
        let s = MetaStore::open(d.path()).expect("open");
        let items: Vec<serde_json::Value> = (1..=ACTIVITY_KEPT + 20)
            .rev()
            .map(|id| serde_json::json!({"activity_id": id, "subject": format!("n{id}")}))
            .collect();
        s.add_activities(&items).expect("add");
        // Seen again (a page asked twice): no duplicate.
        s.add_activities(&items[..3]).expect("add again");
        assert_eq!(s.last_activity_id(), Some(ACTIVITY_KEPT + 20));
        let all = read_activities(&lock(&s.db), 10_000).expect("read");
        assert_eq!(all.len(), ACTIVITY_KEPT as usize);
        assert_eq!(all[0]["activity_id"], 21, "oldest kept first");
        let last3 = read_activities(&lock(&s.db), 3).expect("read");
        let ids: Vec<i64> = last3
            .iter()
            .filter_map(|a| a["activity_id"].as_i64())
            .collect();
        assert_eq!(
            ids,
            [ACTIVITY_KEPT + 18, ACTIVITY_KEPT + 19, ACTIVITY_KEPT + 20]
        );
    }

    #[test]
    fn mtimes_follow_renames() {
        let d = tempfile::tempdir().expect("tmp");
        let s = MetaStore::open(d.path()).expect("open");
        let t = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        s.set_mtime(&RemotePath::new("a/b.txt"), "\"e1\"", t);
        s.set_mtime(&RemotePath::new("ab.txt"), "\"e2\"", t);
        s.rename_mtimes(&RemotePath::new("a"), &RemotePath::new("z/a"));
        let mut m: Vec<String> = s
            .mtimes()
            .into_iter()
            .map(|(p, _, _)| p.as_str().to_string())
            .collect();
        m.sort();
        assert_eq!(m, vec!["ab.txt".to_string(), "z/a/b.txt".to_string()]);
    }

    #[test]
    fn executable_marks_follow_renames_and_survive_a_reopen() {
        let d = tempfile::tempdir().expect("tmp");
        let s = MetaStore::open(d.path()).expect("open");
        s.set_exec(&RemotePath::new("a/b.sh"), true);
        s.set_exec(&RemotePath::new("ab.sh"), true);
        s.set_exec(&RemotePath::new("c.sh"), true);
        s.set_exec(&RemotePath::new("c.sh"), false);
        s.rename_execs(&RemotePath::new("a"), &RemotePath::new("z/a"));
        drop(s);
        let s = MetaStore::open(d.path()).expect("reopen");
        let mut x: Vec<String> = s.execs().iter().map(|p| p.as_str().to_string()).collect();
        x.sort();
        assert_eq!(x, vec!["ab.sh".to_string(), "z/a/b.sh".to_string()]);
    }
}
