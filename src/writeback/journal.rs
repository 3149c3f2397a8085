//! The durable write-back journal (SQLite, `journal.sqlite` beside the cache).
//!
//! One row per changed file with everything needed to finish its upload after a crash: path,
//! size, mtime, the server version it was based on, which byte ranges are held locally, and the
//! chunked-upload session in progress. Rows are written with `synchronous=FULL` after the data
//! file was synced, so what `close()`/`fsync()` reported durable survives `kill -9` and power
//! loss. A small file's whole content goes into its row instead (`content`): one sync of the
//! journal then makes both durable, and a restart writes the data file again from the row.

use super::ranges::RangeSet;
use crate::webdav::{unix_secs, RemotePath};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A journal row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Row id (also names the data file).
    pub id: i64,
    /// Current path.
    pub path: RemotePath,
    /// Size.
    pub size: u64,
    /// Modification time.
    pub mtime: SystemTime,
    /// Etag of the server version this change is based on (`None`: a new file).
    pub base_etag: Option<String>,
    /// Whether a server version exists at all.
    pub has_base: bool,
    /// Size of the base version.
    pub base_size: u64,
    /// Server modification time of the base version (seconds), to tell it from a newer one
    /// on servers that give no etag.
    pub base_mtime: Option<i64>,
    /// Leading bytes that may still come from the base version.
    pub base_len: u64,
    /// Ranges held locally.
    pub present: RangeSet,
    /// Content generation this row describes (matches a chunk session's).
    pub generation: i64,
    /// The whole content, for a small file kept in the row (its data file was not synced).
    pub content: Option<Vec<u8>>,
}

/// A chunked upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSession {
    /// Upload id on the server.
    pub upload_id: String,
    /// Chunk size used.
    pub chunk_size: u64,
    /// Total size being uploaded.
    pub total: u64,
    /// Content generation the session uploads.
    pub generation: i64,
}

/// A conflict that was resolved by keeping both copies.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Conflict {
    /// The path whose server copy was kept.
    pub path: String,
    /// Where our copy went.
    pub conflict_path: String,
    /// Unix time.
    pub at: u64,
}

/// The journal database.
pub struct Journal {
    db: Connection,
    /// Rows were forgotten without a sync (see [`Journal::forget_uploaded`]).
    unsynced: std::cell::Cell<bool>,
}

impl Journal {
    /// Opens or creates the journal in `dir`.
    pub fn open(dir: &Path) -> rusqlite::Result<Journal> {
        let db = Connection::open(dir.join("journal.sqlite"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(Duration::from_secs(10))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS dirty (
                 id INTEGER PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL,
                 mtime INTEGER NOT NULL, base_etag TEXT, has_base INTEGER NOT NULL,
                 base_size INTEGER NOT NULL, base_len INTEGER NOT NULL, present TEXT NOT NULL,
                 generation INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS chunk_sessions (
                 dirty_id INTEGER PRIMARY KEY, upload_id TEXT NOT NULL, chunk_size INTEGER NOT NULL,
                 total INTEGER NOT NULL, generation INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS conflicts (
                 id INTEGER PRIMARY KEY, path TEXT NOT NULL, conflict_path TEXT NOT NULL,
                 at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS folders (path TEXT PRIMARY KEY);
             CREATE TABLE IF NOT EXISTS deletes (
                 path TEXT PRIMARY KEY, etag TEXT, size INTEGER NOT NULL, mtime INTEGER);
             CREATE TABLE IF NOT EXISTS moves (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, from_path TEXT NOT NULL,
                 to_path TEXT NOT NULL UNIQUE, etag TEXT, size INTEGER NOT NULL, mtime INTEGER,
                 is_dir INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS rmdirs (path TEXT PRIMARY KEY);",
        )?;
        // Journals written before the generation column existed get it (0: unknown).
        if db.prepare("SELECT generation FROM dirty LIMIT 0").is_err() {
            db.execute_batch(
                "ALTER TABLE dirty ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;",
            )?;
        }
        if db.prepare("SELECT content FROM dirty LIMIT 0").is_err() {
            db.execute_batch("ALTER TABLE dirty ADD COLUMN content BLOB;")?;
        }
        if db.prepare("SELECT is_dir FROM moves LIMIT 0").is_err() {
            db.execute_batch("ALTER TABLE moves ADD COLUMN is_dir INTEGER NOT NULL DEFAULT 0;")?;
        }
        if db.prepare("SELECT base_mtime FROM dirty LIMIT 0").is_err() {
            db.execute_batch("ALTER TABLE dirty ADD COLUMN base_mtime INTEGER;")?;
        }
        Ok(Journal {
            db,
            unsynced: std::cell::Cell::new(false),
        })
    }

    /// All pending rows.
    pub fn rows(&self) -> rusqlite::Result<Vec<Row>> {
        let mut st = self.db.prepare(
            "SELECT id, path, size, mtime, base_etag, has_base, base_size, base_len, present,
                    generation, content, base_mtime FROM dirty ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Row {
                id: r.get(0)?,
                path: RemotePath::new(&r.get::<_, String>(1)?),
                size: r.get::<_, i64>(2)? as u64,
                mtime: UNIX_EPOCH + Duration::from_secs(r.get::<_, i64>(3)?.max(0) as u64),
                base_etag: r.get(4)?,
                has_base: r.get::<_, i64>(5)? != 0,
                base_size: r.get::<_, i64>(6)? as u64,
                base_len: r.get::<_, i64>(7)? as u64,
                present: RangeSet::decode(&r.get::<_, String>(8)?),
                generation: r.get(9)?,
                content: r.get(10)?,
                base_mtime: r.get(11)?,
            })
        })?;
        rows.collect()
    }

    /// How many changes wait in the journal in `dir` (files to upload, folders to make or
    /// remove, deletes, renames), read by another process (`nuage status`) without writing.
    pub fn waiting_in(dir: &Path) -> rusqlite::Result<usize> {
        let db = Connection::open_with_flags(
            dir.join("journal.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        db.query_row(
            "SELECT (SELECT COUNT(*) FROM dirty) + (SELECT COUNT(*) FROM folders)
                  + (SELECT COUNT(*) FROM deletes) + (SELECT COUNT(*) FROM moves)
                  + (SELECT COUNT(*) FROM rmdirs)",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n.max(0) as usize)
    }

    /// The largest row id in use.
    pub fn max_id(&self) -> rusqlite::Result<i64> {
        self.db
            .query_row("SELECT COALESCE(MAX(id), 0) FROM dirty", [], |r| r.get(0))
    }

    /// Writes (inserts or replaces) a row.
    pub fn save(&self, r: &Row) -> rusqlite::Result<()> {
        self.db.prepare_cached(
            "INSERT OR REPLACE INTO dirty (id, path, size, mtime, base_etag, has_base, base_size,
                 base_len, present, generation, content, base_mtime)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
                r.id,
                r.path.as_str(),
                r.size as i64,
                unix_secs(r.mtime),
                r.base_etag,
                r.has_base as i64,
                r.base_size as i64,
                r.base_len as i64,
                r.present.encode(),
                r.generation,
                r.content,
                r.base_mtime
            ])?;
        Ok(())
    }

    /// Forgets a row and its chunk session.
    pub fn delete(&self, id: i64) -> rusqlite::Result<()> {
        let tx = self.db.unchecked_transaction()?;
        tx.prepare_cached("DELETE FROM dirty WHERE id=?1")?
            .execute(params![id])?;
        tx.prepare_cached("DELETE FROM chunk_sessions WHERE dirty_id=?1")?
            .execute(params![id])?;
        tx.commit()
    }

    /// Forgets the row of a file the server confirmed, without waiting for the disk: the next
    /// synced write or [`Journal::sync`] (within a second) makes it durable. A power cut in
    /// between only means the upload is made again.
    pub fn forget_uploaded(&self, id: i64) -> rusqlite::Result<()> {
        // (Not a cached statement: this pragma takes effect when it is compiled.)
        self.db.pragma_update(None, "synchronous", "NORMAL")?;
        let res = self.delete(id);
        self.db.pragma_update(None, "synchronous", "FULL")?;
        self.unsynced.set(true);
        res
    }

    /// Makes the rows forgotten by [`Journal::forget_uploaded`] durable.
    pub fn sync(&self) -> rusqlite::Result<()> {
        if self.unsynced.replace(false) {
            // A checkpoint syncs the write-ahead log first.
            self.db
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        }
        Ok(())
    }

    /// Updates the path of a row.
    pub fn set_path(&self, id: i64, p: &RemotePath) -> rusqlite::Result<()> {
        self.db.execute(
            "UPDATE dirty SET path=?2 WHERE id=?1",
            params![id, p.as_str()],
        )?;
        Ok(())
    }

    /// The chunk session of a row.
    pub fn session(&self, id: i64) -> rusqlite::Result<Option<ChunkSession>> {
        self.db
            .query_row(
                "SELECT upload_id, chunk_size, total, generation FROM chunk_sessions WHERE dirty_id=?1",
                params![id],
                |r| {
                    Ok(ChunkSession {
                        upload_id: r.get(0)?,
                        chunk_size: r.get::<_, i64>(1)? as u64,
                        total: r.get::<_, i64>(2)? as u64,
                        generation: r.get(3)?,
                    })
                },
            )
            .optional()
    }

    /// Records the chunk session of a row.
    pub fn save_session(&self, id: i64, s: &ChunkSession) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT OR REPLACE INTO chunk_sessions (dirty_id, upload_id, chunk_size, total, generation)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, s.upload_id, s.chunk_size as i64, s.total as i64, s.generation],
        )?;
        Ok(())
    }

    /// Forgets the chunk session of a row.
    pub fn delete_session(&self, id: i64) -> rusqlite::Result<()> {
        self.db
            .execute("DELETE FROM chunk_sessions WHERE dirty_id=?1", params![id])?;
        Ok(())
    }

    /// Records a conflict.
    pub fn add_conflict(&self, path: &RemotePath, conflict: &RemotePath) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT INTO conflicts (path, conflict_path, at) VALUES (?1, ?2, ?3)",
            params![
                path.as_str(),
                conflict.as_str(),
                unix_secs(SystemTime::now())
            ],
        )?;
        Ok(())
    }

    /// Records a folder made while the server was out of reach (durable on return).
    pub fn add_folder(&self, path: &RemotePath) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT OR IGNORE INTO folders (path) VALUES (?1)",
            params![path.as_str()],
        )?;
        Ok(())
    }

    /// Forgets a folder made on the server (or removed before it was).
    pub fn remove_folder(&self, path: &RemotePath) -> rusqlite::Result<()> {
        self.db.execute(
            "DELETE FROM folders WHERE path = ?1",
            params![path.as_str()],
        )?;
        Ok(())
    }

    /// Records a server folder removed while the server was out of reach.
    pub fn add_rmdir(&self, path: &RemotePath) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT OR IGNORE INTO rmdirs (path) VALUES (?1)",
            params![path.as_str()],
        )?;
        Ok(())
    }

    /// Forgets a recorded folder removal (done on the server, or not to be done).
    pub fn remove_rmdir(&self, path: &RemotePath) -> rusqlite::Result<()> {
        self.db
            .execute("DELETE FROM rmdirs WHERE path = ?1", params![path.as_str()])?;
        Ok(())
    }

    /// Server folders removed here, still to be removed there.
    pub fn rmdirs(&self) -> rusqlite::Result<Vec<RemotePath>> {
        let mut st = self.db.prepare("SELECT path FROM rmdirs")?;
        let rows = st.query_map([], |r| Ok(RemotePath::new(&r.get::<_, String>(0)?)))?;
        rows.collect()
    }

    /// Renames recorded folders (`(old, new)` pairs), all or none.
    pub fn rename_folders(&self, moves: &[(RemotePath, RemotePath)]) -> rusqlite::Result<()> {
        self.rename_paths("folders", moves)
    }

    /// Renames the paths of `table` (a table of this module with one `path` column), all or
    /// none.
    fn rename_paths(
        &self,
        table: &'static str,
        moves: &[(RemotePath, RemotePath)],
    ) -> rusqlite::Result<()> {
        let tx = self.db.unchecked_transaction()?;
        for (old, new) in moves {
            tx.execute(
                &format!("DELETE FROM {table} WHERE path = ?1"),
                params![old.as_str()],
            )?;
            tx.execute(
                &format!("INSERT OR IGNORE INTO {table} (path) VALUES (?1)"),
                params![new.as_str()],
            )?;
        }
        tx.commit()
    }

    /// Records a file deleted while the server was out of reach: its path and the server
    /// version deleted (etag, size, modification time).
    pub fn add_delete(
        &self,
        path: &RemotePath,
        etag: Option<&str>,
        size: u64,
        mtime: Option<i64>,
    ) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT OR REPLACE INTO deletes (path, etag, size, mtime) VALUES (?1, ?2, ?3, ?4)",
            params![path.as_str(), etag, size as i64, mtime],
        )?;
        Ok(())
    }

    /// Forgets a recorded delete (done on the server, or not to be done).
    pub fn remove_delete(&self, path: &RemotePath) -> rusqlite::Result<()> {
        self.db.execute(
            "DELETE FROM deletes WHERE path = ?1",
            params![path.as_str()],
        )?;
        Ok(())
    }

    /// Records a file or folder renamed while the server was out of reach: where it is on
    /// the server, its new name, and the server version it is (etag, size, modification
    /// time).
    pub fn add_move(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        etag: Option<&str>,
        size: u64,
        mtime: Option<i64>,
        is_dir: bool,
    ) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT OR REPLACE INTO moves (from_path, to_path, etag, size, mtime, is_dir)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![from.as_str(), to.as_str(), etag, size as i64, mtime, is_dir],
        )?;
        Ok(())
    }

    /// Recorded renames rewritten: each `(to, new_from, new_to)` makes the one to `to` read
    /// `new_from` -> `new_to`; all or none.
    pub fn rewrite_moves(
        &self,
        rows: &[(RemotePath, RemotePath, RemotePath)],
    ) -> rusqlite::Result<()> {
        let tx = self.db.unchecked_transaction()?;
        for (to, new_from, new_to) in rows {
            tx.execute(
                "UPDATE moves SET from_path = ?2, to_path = ?3 WHERE to_path = ?1",
                params![to.as_str(), new_from.as_str(), new_to.as_str()],
            )?;
        }
        tx.commit()
    }

    /// Forgets the recorded rename to `to` (done on the server, or not to be done).
    pub fn remove_move(&self, to: &RemotePath) -> rusqlite::Result<()> {
        self.db
            .execute("DELETE FROM moves WHERE to_path = ?1", params![to.as_str()])?;
        Ok(())
    }

    /// Renames still to be made on the server, in the order they were made here:
    /// (from, to, etag, size, mtime, is_dir).
    #[allow(clippy::type_complexity)]
    pub fn moves(
        &self,
    ) -> rusqlite::Result<
        Vec<(
            RemotePath,
            RemotePath,
            Option<String>,
            u64,
            Option<i64>,
            bool,
        )>,
    > {
        let mut st = self.db.prepare(
            "SELECT from_path, to_path, etag, size, mtime, is_dir FROM moves ORDER BY seq",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                RemotePath::new(&r.get::<_, String>(0)?),
                RemotePath::new(&r.get::<_, String>(1)?),
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, bool>(5)?,
            ))
        })?;
        rows.collect()
    }

    /// Renames recorded folder removals below `from` to below `to` (a folder renamed here).
    pub fn rebase_rmdirs(&self, moves: &[(RemotePath, RemotePath)]) -> rusqlite::Result<()> {
        self.rename_paths("rmdirs", moves)
    }

    /// Deletes still to be made on the server: (path, etag, size, mtime).
    #[allow(clippy::type_complexity)]
    pub fn deletes(&self) -> rusqlite::Result<Vec<(RemotePath, Option<String>, u64, Option<i64>)>> {
        let mut st = self
            .db
            .prepare("SELECT path, etag, size, mtime FROM deletes")?;
        let rows = st.query_map([], |r| {
            Ok((
                RemotePath::new(&r.get::<_, String>(0)?),
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        rows.collect()
    }

    /// Folders still to be made on the server.
    pub fn folders(&self) -> rusqlite::Result<Vec<RemotePath>> {
        let mut st = self.db.prepare("SELECT path FROM folders")?;
        let rows = st.query_map([], |r| Ok(RemotePath::new(&r.get::<_, String>(0)?)))?;
        rows.collect()
    }

    /// Recorded conflicts, newest first.
    pub fn conflicts(&self) -> rusqlite::Result<Vec<Conflict>> {
        let mut st = self
            .db
            .prepare("SELECT path, conflict_path, at FROM conflicts ORDER BY id DESC LIMIT 100")?;
        let rows = st.query_map([], |r| {
            Ok(Conflict {
                path: r.get(0)?,
                conflict_path: r.get(1)?,
                at: r.get::<_, i64>(2)? as u64,
            })
        })?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_old_journals_are_upgraded() {
        let d = tempfile::tempdir().expect("tmp");
        {
            let db = Connection::open(d.path().join("journal.sqlite")).expect("db");
            db.execute_batch(
                "CREATE TABLE dirty (id INTEGER PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL,
                 mtime INTEGER NOT NULL, base_etag TEXT, has_base INTEGER NOT NULL,
                 base_size INTEGER NOT NULL, base_len INTEGER NOT NULL, present TEXT NOT NULL);
                 INSERT INTO dirty VALUES (7, 'a/b', 3, 100000, NULL, 0, 0, 0, '0-3');",
            )
            .expect("old schema");
        }
        let j = Journal::open(d.path()).expect("open upgrades");
        let rows = j.rows().expect("rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].path, RemotePath::new("a/b"));
        assert_eq!(rows[0].generation, 0);
        assert_eq!(rows[0].content, None);
        let mut r = rows[0].clone();
        r.generation = 5;
        r.size = 9;
        r.content = Some(b"123456789".to_vec());
        j.save(&r).expect("save");
        let back = &j.rows().expect("rows")[0];
        assert_eq!(back.size, 9);
        assert_eq!(back.content.as_deref(), Some(&b"123456789"[..]));
        j.delete(7).expect("delete");
        assert!(j.rows().expect("rows").is_empty());
    }
}
