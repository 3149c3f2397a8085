//! The on-disk block store.
//!
//! ## What it owns
//! Blocks of remote files, stored at their own offset in one sparse data file per *file
//! version* under `<cache dir>/blocks/`, and an SQLite index (`<cache dir>/index.sqlite`) of
//! which blocks are present. A file version is identified by `(identity, etag)`, where the
//! identity names the remote file (server root + path). A file that changed on the server has
//! a new etag, hence a new version id, hence no blocks: old bytes can never be served for it.
//! The old version's blocks are dropped as soon as a newer version is registered.
//!
//! ## Invariants
//! * A block listed in the SQLite index has its bytes on disk: rows are committed only after
//!   the data file was `fdatasync`ed ([`BlockCache::flush`]). A crash loses at most the index
//!   rows of recently written blocks, which are simply downloaded again.
//! * The total size of clean blocks stays at or under the limit; least recently used blocks go
//!   first. Eviction punches holes in the data files so disk use really shrinks.
//! * `cache` stores; it never fetches.
//!
//! ## Concurrency
//! Lock order: `gate` (RwLock) → `state` → `db`; `fds` is a leaf lock. Readers and writers of
//! block bytes hold `gate` shared; eviction holds it exclusively while it re-checks that a
//! victim is still absent and punches its hole, so a block written again meanwhile is never
//! zeroed. All methods do blocking disk I/O: call them from `spawn_blocking` in async code.

use lru::LruCache;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Default block size: 1 MiB.
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;

/// Bytes of recently written or read blocks also kept in memory, so that the reads right after
/// a download are answered without touching the disk (and without copying: a read inside one
/// block is a slice of it).
pub const HOT_BYTES: u64 = 24 << 20;

/// Recently used blocks in memory, bounded by bytes.
struct Hot {
    blocks: LruCache<BlockKey, bytes::Bytes>,
    bytes: u64,
    /// Blocks kept in memory whose disk copy is still being written.
    unwritten: std::collections::HashSet<BlockKey>,
    /// Those of them already pushed out of `blocks`: they stay readable until on disk
    /// (at most as many as the downloader lets wait for the disk).
    parked: HashMap<BlockKey, bytes::Bytes>,
}

impl Hot {
    fn get(&self, key: &BlockKey) -> Option<&bytes::Bytes> {
        self.blocks.peek(key).or_else(|| self.parked.get(key))
    }
}

/// Whether an SQLite error says the database file itself is damaged (not a database, or
/// corrupt), as opposed to a disk, permission or locking failure that leaves the file as it is.
pub fn is_damaged(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Moves a damaged SQLite database `x.sqlite` (and its `-wal` and `-shm` files) aside as
/// `x.sqlite.damaged` (replacing an earlier one), so that a new one can be made in its place
/// and the old one can still be looked at. Returns the new name.
pub fn set_aside(db: &Path) -> std::io::Result<PathBuf> {
    let mut aside = db.as_os_str().to_owned();
    aside.push(".damaged");
    let aside = PathBuf::from(aside);
    for suffix in ["-wal", "-shm"] {
        let with = |p: &Path| {
            let mut s = p.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        };
        match std::fs::rename(with(db), with(&aside)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // None beside the damaged file: no older one may pass for its own.
                let _ = std::fs::remove_file(with(&aside));
            }
            r => r?,
        }
    }
    std::fs::rename(db, &aside)?;
    Ok(aside)
}

/// Opens a database with `open`; when that finds the file `db` damaged, sets it aside
/// ([`set_aside`]), logs what starting afresh loses (`lost`), and opens a new one. For the
/// databases whose content can be lost (never the write-back journal).
pub fn open_or_start_afresh<T, E: std::fmt::Display>(
    db: &Path,
    lost: &str,
    damaged: impl Fn(&E) -> bool,
    io: impl FnOnce(std::io::Error) -> E,
    open: impl Fn() -> Result<T, E>,
) -> Result<T, E> {
    match open() {
        Err(e) if damaged(&e) => {
            let aside = set_aside(db).map_err(io)?;
            tracing::warn!(
                "{} was damaged ({e}): set aside as {}; {lost}",
                db.display(),
                aside.display()
            );
            open()
        }
        r => r,
    }
}

/// Errors of the block store.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A local I/O failure on the cache directory.
    #[error("cache I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The index database failed.
    #[error("cache index error: {0}")]
    Db(#[from] rusqlite::Error),
}

impl CacheError {
    /// The disk holding the cache is full (or the user's quota on it used up).
    pub fn is_disk_full(&self) -> bool {
        match self {
            CacheError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            CacheError::Db(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            CacheError::Db(_) => false,
        }
    }
}

impl From<CacheError> for crate::error::Error {
    fn from(e: CacheError) -> Self {
        use crate::error::ErrorKind;
        let kind = if e.is_disk_full() {
            ErrorKind::NoSpace
        } else {
            ErrorKind::Io
        };
        crate::error::Error::new(kind, e.to_string())
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Id of one version of one remote file in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionId(pub i64);

/// Index of a block within a file (offset / block size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockIdx(pub u64);

/// A block of a file version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// The file version.
    pub version: VersionId,
    /// The block.
    pub idx: BlockIdx,
}

struct State {
    /// Present blocks and their lengths.
    blocks: HashMap<BlockKey, u32>,
    /// Recency order of present blocks (unbounded; eviction is by bytes).
    lru: LruCache<BlockKey, ()>,
    /// Present blocks and their bytes per version: a data file is deleted when it empties,
    /// and pinned bytes are summed from here.
    per_version: HashMap<VersionId, VersionUse>,
    /// Bytes of present blocks.
    total: u64,
    /// Blocks written but not yet in the index.
    pending: Vec<(BlockKey, u32)>,
    /// Blocks used since the index last recorded recency (see [`BlockCache::flush`]).
    touched: std::collections::HashSet<BlockKey>,
    /// The index's recency clock: `last_used` of the blocks touched before the last flush.
    clock: i64,
    /// `(identity, etag)` to version id.
    versions: HashMap<(String, String), VersionId>,
    /// Version id to `(identity, etag)`.
    identity_of: HashMap<VersionId, (String, String)>,
    /// Identity to its versions (usually one), ordered so that everything below a folder is
    /// one range: a new version drops the older ones, a rename moves a whole folder.
    by_identity: std::collections::BTreeMap<String, Vec<VersionId>>,
    limit: u64,
    /// Versions handed out without an index row so far (see [`EPHEMERAL_BASE`]).
    ephemeral: i64,
    /// Versions of pinned files: never evicted, not counted against the limit.
    pinned: std::collections::HashSet<VersionId>,
    /// Versions whose data file the kernel reads directly (FUSE passthrough), with the number
    /// of open files: never evicted while held (a punched hole would read as zeros).
    held: HashMap<VersionId, u32>,
}

#[derive(Debug, Default, Clone, Copy)]
struct VersionUse {
    blocks: u64,
    bytes: u64,
    /// One past the highest block index ever added: dropping the version looks up these
    /// indices instead of scanning every block of the cache.
    end: u64,
}

impl State {
    fn protected(&self, v: &VersionId) -> bool {
        self.pinned.contains(v) || self.held.contains_key(v)
    }

    /// Bytes of pinned and held versions (never evicted, outside the limit).
    fn pinned_bytes(&self) -> u64 {
        let held = self.held.keys().filter(|v| !self.pinned.contains(v));
        self.pinned
            .iter()
            .chain(held)
            .filter_map(|v| self.per_version.get(v))
            .map(|u| u.bytes)
            .sum()
    }

    /// Records a present block (replacing an older copy of it) as most recently used.
    fn add_block(&mut self, key: BlockKey, len: u32) {
        let use_ = self.per_version.entry(key.version).or_default();
        match self.blocks.insert(key, len) {
            Some(old) => {
                use_.bytes -= old as u64;
                self.total -= old as u64;
            }
            None => use_.blocks += 1,
        }
        use_.end = use_.end.max(key.idx.0 + 1);
        use_.bytes += len as u64;
        self.total += len as u64;
        self.lru.put(key, ());
        self.touched.insert(key);
    }

    /// Marks a present block as just used.
    fn touch(&mut self, key: BlockKey) {
        if self.lru.get(&key).is_some() {
            self.touched.insert(key);
        }
    }

    /// Forgets a block (not its LRU entry); answers its length and whether its version has no
    /// block left.
    fn remove_block(&mut self, key: &BlockKey) -> Option<(u32, bool)> {
        let len = self.blocks.remove(key)?;
        self.total -= len as u64;
        let mut emptied = false;
        if let Some(u) = self.per_version.get_mut(&key.version) {
            u.blocks -= 1;
            u.bytes -= len as u64;
            if u.blocks == 0 {
                self.per_version.remove(&key.version);
                emptied = true;
            }
        }
        Some((len, emptied))
    }

    fn blocks_of(&self, v: &VersionId) -> u64 {
        self.per_version.get(v).map_or(0, |u| u.blocks)
    }

    /// The present blocks of `v`.
    fn blocks_of_version(&self, v: VersionId) -> Vec<BlockKey> {
        match self.per_version.get(&v) {
            Some(u) if u.end <= self.blocks.len() as u64 => (0..u.end)
                .map(|i| BlockKey {
                    version: v,
                    idx: BlockIdx(i),
                })
                .filter(|k| self.blocks.contains_key(k))
                .collect(),
            Some(_) => self
                .blocks
                .keys()
                .filter(|k| k.version == v)
                .copied()
                .collect(),
            None => Vec::new(),
        }
    }

    /// Records a version registered in the index under `(identity, etag)`.
    fn register(&mut self, v: VersionId, identity: &str, etag: &str) {
        self.unregister(v);
        self.versions
            .insert((identity.to_string(), etag.to_string()), v);
        self.identity_of
            .insert(v, (identity.to_string(), etag.to_string()));
        self.by_identity
            .entry(identity.to_string())
            .or_default()
            .push(v);
    }

    /// Forgets the names of a registered version; answers its `(identity, etag)`.
    fn unregister(&mut self, v: VersionId) -> Option<(String, String)> {
        let (identity, etag) = self.identity_of.remove(&v)?;
        let key = (identity, etag);
        if self.versions.get(&key) == Some(&v) {
            self.versions.remove(&key);
        }
        if let Some(list) = self.by_identity.get_mut(&key.0) {
            list.retain(|o| *o != v);
            if list.is_empty() {
                self.by_identity.remove(&key.0);
            }
        }
        Some(key)
    }
}

/// Usage figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUsage {
    /// Bytes of cached blocks.
    pub bytes: u64,
    /// Number of cached blocks.
    pub blocks: u64,
    /// The configured limit.
    pub limit: u64,
    /// Bytes of blocks of pinned files (never evicted, outside the limit).
    pub pinned_bytes: u64,
}

/// The block store. See the module documentation.
pub struct BlockCache {
    dir: PathBuf,
    block_size: u64,
    gate: RwLock<()>,
    /// One block write at a time: parallel writes into one file contend for its inode lock
    /// in the kernel (which spins), and one writer keeps up with the network anyway.
    writer: Mutex<()>,
    state: Mutex<State>,
    db: Mutex<Connection>,
    fds: Mutex<LruCache<VersionId, Arc<File>>>,
    hot: Mutex<Hot>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere already; the data it guards stays consistent
    // because every critical section here only does infallible map updates.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BlockCache {
    /// Opens (or creates) the cache in `dir`, keeping at most `limit` bytes of blocks.
    ///
    /// A damaged index (a crash of the disk, a file overwritten) is set aside as
    /// `index.sqlite.damaged` and the cache starts empty: its blocks are only copies of what
    /// the server holds, and without the index none of them can be trusted (they go).
    pub fn open(dir: &Path, block_size: u64, limit: u64) -> Result<Self, CacheError> {
        let db = dir.join("index.sqlite");
        open_or_start_afresh(
            &db,
            "the cache starts empty (what it held is downloaded again when read)",
            |e| matches!(e, CacheError::Db(e) if is_damaged(e)),
            io_err(&db),
            || Self::open_index(dir, block_size, limit),
        )
    }

    fn open_index(dir: &Path, block_size: u64, limit: u64) -> Result<Self, CacheError> {
        let blocks_dir = dir.join("blocks");
        std::fs::create_dir_all(&blocks_dir).map_err(io_err(&blocks_dir))?;
        let db_path = dir.join("index.sqlite");
        let db = Connection::open(&db_path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints (which sync the disk) are made by `flush`, in the background, never by
        // a small insert that an `open` makes in the filesystem's own thread.
        db.pragma_update(None, "wal_autocheckpoint", 0)?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS versions (
                 id INTEGER PRIMARY KEY AUTOINCREMENT, identity TEXT NOT NULL, etag TEXT NOT NULL,
                 UNIQUE(identity, etag));
             CREATE TABLE IF NOT EXISTS blocks (
                 version INTEGER NOT NULL, idx INTEGER NOT NULL, len INTEGER NOT NULL,
                 last_used INTEGER NOT NULL, PRIMARY KEY (version, idx));",
        )?;
        let stored_bs: Option<String> = db
            .query_row("SELECT value FROM meta WHERE key='block_size'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if stored_bs.as_deref() != Some(&block_size.to_string()) {
            // A different block size makes every stored block unusable: start afresh.
            db.execute_batch("DELETE FROM blocks; DELETE FROM versions;")?;
            if let Ok(rd) = std::fs::read_dir(&blocks_dir) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('block_size', ?1)",
                params![block_size.to_string()],
            )?;
        }
        let mut state = State {
            blocks: HashMap::new(),
            lru: LruCache::unbounded(),
            per_version: HashMap::new(),
            total: 0,
            pending: Vec::new(),
            touched: Default::default(),
            clock: 0,
            versions: HashMap::new(),
            identity_of: HashMap::new(),
            by_identity: std::collections::BTreeMap::new(),
            limit,
            ephemeral: 0,
            pinned: Default::default(),
            held: HashMap::new(),
        };
        {
            let mut st = db.prepare("SELECT id, identity, etag FROM versions")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (id, identity, etag) = row?;
                state.register(VersionId(id), &identity, &etag);
            }
            let mut st =
                db.prepare("SELECT version, idx, len FROM blocks ORDER BY last_used ASC")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (v, idx, len) = row?;
                let key = BlockKey {
                    version: VersionId(v),
                    idx: BlockIdx(idx as u64),
                };
                state.add_block(key, len as u32);
            }
            state.touched.clear();
            // Data files of versions the index does not know: left by a crash between a
            // version's removal from the index and the removal of its file. Only this mount
            // uses the folder (the cache lock).
            if let Ok(rd) = std::fs::read_dir(&blocks_dir) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(id) = name.strip_suffix(".data") {
                        let known = id
                            .parse::<i64>()
                            .is_ok_and(|id| state.identity_of.contains_key(&VersionId(id)));
                        if !known {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
            }
            state.clock =
                db.query_row("SELECT COALESCE(MAX(last_used), 0) FROM blocks", [], |r| {
                    r.get(0)
                })?;
        }
        let cache = BlockCache {
            dir: dir.to_path_buf(),
            block_size,
            gate: RwLock::new(()),
            writer: Mutex::new(()),
            state: Mutex::new(state),
            db: Mutex::new(db),
            // 128 open data files at most.
            fds: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(128).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            hot: Mutex::new(Hot {
                blocks: LruCache::unbounded(),
                bytes: 0,
                unwritten: Default::default(),
                parked: HashMap::new(),
            }),
        };
        cache.evict_if_needed()?;
        if let Err(e) = make_ballast(&cache.ballast_path()) {
            tracing::debug!(error = %e, "could not set aside room for a full disk");
        }
        Ok(cache)
    }

    fn ballast_path(&self) -> PathBuf {
        self.dir.join(BALLAST_NAME)
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Changes the byte limit and evicts down to it.
    pub fn set_limit(&self, limit: u64) -> Result<(), CacheError> {
        lock(&self.state).limit = limit;
        self.evict_if_needed()
    }

    /// The version id of `(identity, etag)` when it is already registered (no disk work).
    pub fn known_version(&self, identity: &str, etag: &str) -> Option<VersionId> {
        lock(&self.state)
            .versions
            .get(&(identity.to_string(), etag.to_string()))
            .copied()
    }

    /// [`Self::version`] when that is quick: the version is known, or it is the first one of
    /// its file (nothing to drop) and the index is not busy (one small insert). `None`: call
    /// [`Self::version`] where waiting for the disk is allowed.
    pub fn try_version(&self, identity: &str, etag: &str) -> Option<VersionId> {
        if let Some(v) = self.known_version(identity, etag) {
            return Some(v);
        }
        if lock(&self.state).by_identity.contains_key(identity) {
            return None;
        }
        let db = self.db.try_lock().ok()?;
        let id = register_version(&db, identity, etag).ok()?;
        drop(db);
        let v = VersionId(id);
        let mut st = lock(&self.state);
        if st.by_identity.contains_key(identity) {
            // Another version of the file came meanwhile: `version` (off this thread) sorts
            // them out; the row just added is found there again.
            return None;
        }
        st.register(v, identity, etag);
        Some(v)
    }

    /// The version id of `(identity, etag)`, registering it (and dropping the blocks of every
    /// other version of the same identity) when it is new.
    pub fn version(&self, identity: &str, etag: &str) -> Result<VersionId, CacheError> {
        let key = (identity.to_string(), etag.to_string());
        if let Some(v) = lock(&self.state).versions.get(&key) {
            return Ok(*v);
        }
        let registered = register_version(&lock(&self.db), identity, etag);
        let id = match registered {
            Ok(id) => id,
            Err(e) => {
                // The index cannot grow (a full disk): the file is still read, from the
                // server and memory, with nothing kept on disk. The version is known here
                // only, so no block of it is ever written (see `write_block`).
                tracing::warn!(error = %e, "cache index full: reading without caching on disk");
                let mut st = lock(&self.state);
                st.ephemeral += 1;
                let v = VersionId(EPHEMERAL_BASE - st.ephemeral);
                st.versions.insert(key, v);
                return Ok(v);
            }
        };
        let v = VersionId(id);
        let older: Vec<VersionId> = {
            let mut st = lock(&self.state);
            st.register(v, identity, etag);
            st.by_identity
                .get(identity)
                .map(|l| l.iter().filter(|o| **o != v).copied().collect())
                .unwrap_or_default()
        };
        for o in older {
            self.drop_version(o)?;
        }
        Ok(v)
    }

    /// The cached versions of `from` (a file, or a folder and everything below it) become
    /// those of `to`, after a rename: what was downloaded stays readable under the new name.
    /// Versions known under the new names (of files that were there before) are dropped.
    pub fn rename_identity(&self, from: &str, to: &str) -> Result<(), CacheError> {
        let below = format!("{from}/");
        let renamed = |ident: &str| -> Option<String> {
            if ident == from {
                Some(to.to_string())
            } else {
                ident
                    .strip_prefix(below.as_str())
                    .map(|rest| format!("{to}/{rest}"))
            }
        };
        let (moving, replaced): (Vec<(VersionId, String)>, Vec<VersionId>) = {
            let st = lock(&self.state);
            let exact = st.by_identity.get_key_value(from).into_iter();
            let below_it = st
                .by_identity
                .range::<str, _>((
                    std::ops::Bound::Included(below.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(i, _)| i.starts_with(below.as_str()));
            let moving: Vec<(VersionId, String)> = exact
                .chain(below_it)
                .filter_map(|(i, l)| renamed(i).map(|n| (l.clone(), n)))
                .flat_map(|(l, n)| l.into_iter().map(move |v| (v, n.clone())))
                .collect();
            let targets: std::collections::BTreeSet<&str> =
                moving.iter().map(|(_, n)| n.as_str()).collect();
            let replaced = targets
                .iter()
                .filter(|n| renamed(n).is_none())
                .filter_map(|n| st.by_identity.get(*n))
                .flatten()
                .copied()
                .collect();
            (moving, replaced)
        };
        for v in replaced {
            self.drop_version(v)?;
        }
        {
            let db = lock(&self.db);
            for (v, new) in &moving {
                db.execute(
                    "UPDATE versions SET identity=?2 WHERE id=?1",
                    params![v.0, new],
                )?;
            }
        }
        let mut st = lock(&self.state);
        for (v, new) in moving {
            if let Some((_, etag)) = st.unregister(v) {
                st.register(v, &new, &etag);
            }
        }
        Ok(())
    }

    /// Forgets a version and all its blocks.
    fn drop_version(&self, v: VersionId) -> Result<(), CacheError> {
        self.forget_version(v, None)
    }

    /// Gives the data file of version `v`, complete, away to `to` (a rename, so whoever has
    /// it open goes on reading the same file) and forgets the version: its content becomes
    /// the start of a local change (see `WriteBack::take_content`). Fails, changing nothing,
    /// when the version is not complete on disk.
    pub fn surrender(&self, v: VersionId, size: u64, to: &Path) -> Result<(), CacheError> {
        {
            let st = lock(&self.state);
            if st.blocks_of(&v) < size.div_ceil(self.block_size) {
                return Err(CacheError::Io {
                    path: self.data_path(v),
                    source: std::io::Error::other("not completely cached"),
                });
            }
        }
        self.forget_version(v, Some(to))
    }

    /// Which file on disk holds version `v` (device and inode), if any.
    pub fn file_id(&self, v: VersionId) -> Option<(u64, u64)> {
        file_id(&self.data_path(v))
    }

    /// Forgets a version and all its blocks; its data file is moved to `keep` if given,
    /// else deleted.
    fn forget_version(&self, v: VersionId, keep: Option<&Path>) -> Result<(), CacheError> {
        let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        {
            let mut st = lock(&self.state);
            for k in st.blocks_of_version(v) {
                st.remove_block(&k);
                st.lru.pop(&k);
            }
            st.pending.retain(|(k, _)| k.version != v);
            st.unregister(v);
        }
        lock(&self.fds).pop(&v);
        {
            let mut h = lock(&self.hot);
            let keys: Vec<BlockKey> = h
                .blocks
                .iter()
                .filter(|(k, _)| k.version == v)
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                if let Some(b) = h.blocks.pop(&k) {
                    h.bytes -= b.len() as u64;
                }
            }
        }
        {
            let db = lock(&self.db);
            db.execute("DELETE FROM blocks WHERE version=?1", params![v.0])?;
            db.execute("DELETE FROM versions WHERE id=?1", params![v.0])?;
        }
        let from = self.data_path(v);
        if let Some(to) = keep {
            if let Err(e) = std::fs::rename(&from, to) {
                let _ = std::fs::remove_file(&from);
                return Err(io_err(&from)(e));
            }
            return Ok(());
        }
        let _ = std::fs::remove_file(from);
        Ok(())
    }

    fn data_path(&self, v: VersionId) -> PathBuf {
        self.dir.join("blocks").join(format!("{}.data", v.0))
    }

    fn file(&self, v: VersionId) -> Result<Arc<File>, CacheError> {
        if let Some(f) = lock(&self.fds).get(&v) {
            return Ok(f.clone());
        }
        let p = self.data_path(v);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .map_err(io_err(&p))?;
        let f = Arc::new(f);
        lock(&self.fds).put(v, f.clone());
        Ok(f)
    }

    /// True when the block is present.
    pub fn has(&self, key: BlockKey) -> bool {
        lock(&self.state).blocks.contains_key(&key)
    }

    /// The blocks `first..=last` of a version that are in memory (`None` for the others).
    /// Block contents never change (a new etag is a new version, and version ids are never
    /// reused), so a hot block is valid even after its disk copy was evicted. Reading does not
    /// refresh a block's place in memory: blocks leave memory in download order, so a
    /// read-ahead window smaller than [`HOT_BYTES`] is still in memory when the reader gets to
    /// it.
    pub fn hot_blocks(&self, v: VersionId, first: u64, last: u64) -> Vec<Option<bytes::Bytes>> {
        let h = lock(&self.hot);
        let out: Vec<Option<bytes::Bytes>> = (first..=last)
            .map(|idx| {
                h.get(&BlockKey {
                    version: v,
                    idx: BlockIdx(idx),
                })
                .cloned()
            })
            .collect();
        drop(h);
        let mut st = lock(&self.state);
        for idx in first..=last {
            st.touch(BlockKey {
                version: v,
                idx: BlockIdx(idx),
            });
        }
        out
    }

    /// True while the version is registered (not dropped because its file changed).
    pub fn is_registered(&self, v: VersionId) -> bool {
        lock(&self.state).identity_of.contains_key(&v)
    }

    /// True when the block is in memory.
    pub fn is_hot(&self, key: BlockKey) -> bool {
        lock(&self.hot).get(&key).is_some()
    }

    /// Keeps a block in memory (the disk copy is written separately with [`Self::insert`]).
    pub fn keep_hot(&self, key: BlockKey, data: bytes::Bytes) {
        if !lock(&self.state).identity_of.contains_key(&key.version) {
            return;
        }
        let mut h = lock(&self.hot);
        h.bytes += data.len() as u64;
        h.unwritten.insert(key);
        if let Some(old) = h.blocks.put(key, data) {
            h.bytes -= old.len() as u64;
        }
        while h.bytes > HOT_BYTES {
            match h.blocks.pop_lru() {
                Some((k, b)) => {
                    h.bytes -= b.len() as u64;
                    if h.unwritten.contains(&k) {
                        h.parked.insert(k, b);
                    }
                }
                None => break,
            }
        }
    }

    /// Stores a block (its full length, or the tail of the file for the last block). A block
    /// kept in memory by [`Self::keep_hot`] may leave memory from now on.
    pub fn insert(&self, key: BlockKey, data: &[u8]) -> Result<(), CacheError> {
        let res = self.write_block(key, data);
        let mut h = lock(&self.hot);
        h.unwritten.remove(&key);
        h.parked.remove(&key);
        res
    }

    fn write_block(&self, key: BlockKey, data: &[u8]) -> Result<(), CacheError> {
        {
            let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
            if !lock(&self.state).identity_of.contains_key(&key.version) {
                // The version was dropped (the file changed) while this block was on its way.
                return Ok(());
            }
            let f = self.file(key.version)?;
            {
                let _one = lock(&self.writer);
                write_block_at(&f, data, key.idx.0 * self.block_size)
                    .map_err(io_err(&self.data_path(key.version)))?;
            }
            let mut st = lock(&self.state);
            let len = data.len() as u32;
            st.add_block(key, len);
            st.pending.push((key, len));
        }
        self.evict_if_needed()
    }

    /// Takes `src`, a complete local copy of version `v` (a file the mount just uploaded), as
    /// the blocks of `v`: the file is moved into place, nothing is copied or downloaded.
    pub fn adopt(&self, v: VersionId, src: &Path, size: u64) -> Result<(), CacheError> {
        {
            let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
            {
                let st = lock(&self.state);
                if !st.identity_of.contains_key(&v) || st.per_version.contains_key(&v) {
                    return Ok(());
                }
            }
            lock(&self.fds).pop(&v);
            let dst = self.data_path(v);
            std::fs::rename(src, &dst).map_err(io_err(&dst))?;
            let mut st = lock(&self.state);
            let n = size.div_ceil(self.block_size);
            for idx in 0..n {
                let len = (size - idx * self.block_size).min(self.block_size) as u32;
                let key = BlockKey {
                    version: v,
                    idx: BlockIdx(idx),
                };
                st.add_block(key, len);
                st.pending.push((key, len));
            }
        }
        self.evict_if_needed()
    }

    /// Reads from a present block into `buf`, starting `offset` bytes into the block.
    /// Answers `Ok(false)` when the block is not (or no longer) present.
    pub fn read(&self, key: BlockKey, offset: u64, buf: &mut [u8]) -> Result<bool, CacheError> {
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        {
            let mut st = lock(&self.state);
            match st.blocks.get(&key) {
                Some(len) if offset + buf.len() as u64 <= *len as u64 => {}
                _ => return Ok(false),
            }
            st.touch(key);
        }
        let f = self.file(key.version)?;
        read_exact_at(&f, buf, key.idx.0 * self.block_size + offset)
            .map_err(io_err(&self.data_path(key.version)))?;
        Ok(true)
    }

    /// Makes recently written blocks durable: syncs their data files, then records them in the
    /// index, along with the current recency order.
    pub fn flush(&self) -> Result<(), CacheError> {
        let (pending, touched, clock) = {
            let mut st = lock(&self.state);
            let p = std::mem::take(&mut st.pending);
            let t = std::mem::take(&mut st.touched);
            if !t.is_empty() {
                st.clock += 1;
            }
            (p, t, st.clock)
        };
        if pending.is_empty() && touched.is_empty() {
            // Versions registered or dropped since: their log goes into the index too.
            lock(&self.db).query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            return Ok(());
        }
        let mut versions: Vec<VersionId> = pending.iter().map(|(k, _)| k.version).collect();
        versions.sort();
        versions.dedup();
        // Many small files (say, a folder that was just uploaded): one sync of the cache's
        // filesystem instead of opening and syncing each.
        if !versions.is_empty()
            && (versions.len() <= SYNC_FILES_MAX || sync_filesystem(&self.dir).is_err())
        {
            for v in versions {
                if let Ok(f) = self.file(v) {
                    f.sync_data().map_err(io_err(&self.data_path(v)))?;
                }
            }
        }
        let pending: Vec<(BlockKey, u32)> =
            pending.into_iter().filter(|(k, _)| self.has(*k)).collect();
        let mut db = lock(&self.db);
        let tx = db.transaction()?;
        {
            // Recency: only the blocks used since the last flush move up (to `clock`); a
            // large cache is not rewritten every few seconds.
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO blocks(version, idx, len, last_used) VALUES (?1,?2,?3,?4)",
            )?;
            for (k, len) in &pending {
                ins.execute(params![k.version.0, k.idx.0 as i64, *len as i64, clock])?;
            }
            let mut upd =
                tx.prepare_cached("UPDATE blocks SET last_used=?3 WHERE version=?1 AND idx=?2")?;
            let inserted: std::collections::HashSet<BlockKey> =
                pending.iter().map(|(k, _)| *k).collect();
            for k in touched.difference(&inserted) {
                upd.execute(params![k.version.0, k.idx.0 as i64, clock])?;
            }
        }
        tx.commit()?;
        // The write-ahead log back into the index (not waiting for readers: the next flush
        // finishes what this one could not).
        db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Current usage.
    pub fn usage(&self) -> CacheUsage {
        let st = lock(&self.state);
        CacheUsage {
            bytes: st.total,
            blocks: st.blocks.len() as u64,
            limit: st.limit,
            pinned_bytes: st.pinned_bytes(),
        }
    }

    /// The data file of a completely cached version, opened read-only, for the kernel to read
    /// directly; the version is kept (never evicted) until [`Self::unhold`]. `None` when some
    /// block is missing.
    pub fn hold_complete(&self, v: VersionId, size: u64) -> Option<File> {
        let mut st = lock(&self.state);
        let need = size.div_ceil(self.block_size);
        if size == 0 || st.blocks_of(&v) < need {
            return None;
        }
        let f = File::open(self.data_path(v)).ok()?;
        if f.metadata().ok()?.len() < size {
            return None;
        }
        *st.held.entry(v).or_default() += 1;
        Some(f)
    }

    /// Ends one [`Self::hold_complete`].
    pub fn unhold(&self, v: VersionId) {
        let mut st = lock(&self.state);
        if let Some(n) = st.held.get_mut(&v) {
            *n -= 1;
            if *n == 0 {
                st.held.remove(&v);
            }
        }
    }

    /// Number of cached blocks of version `v`.
    pub fn cached_blocks(&self, v: VersionId) -> u64 {
        lock(&self.state).blocks_of(&v)
    }

    /// Replaces the set of pinned versions (kept whatever the limit), then evicts what the
    /// limit no longer allows.
    pub fn set_pinned(
        &self,
        pinned: std::collections::HashSet<VersionId>,
    ) -> Result<(), CacheError> {
        lock(&self.state).pinned = pinned;
        self.evict_if_needed()
    }

    /// Frees every block that may be freed (neither pinned nor in use by the hot tier);
    /// answers the bytes freed.
    pub fn clean(&self) -> Result<u64, CacheError> {
        let before = self.usage().bytes;
        let limit = {
            let mut st = lock(&self.state);
            std::mem::replace(&mut st.limit, 0)
        };
        let res = self.evict_if_needed();
        lock(&self.state).limit = limit;
        res?;
        Ok(before.saturating_sub(self.usage().bytes))
    }

    /// Evicts least recently used blocks until the total is within the limit and the
    /// filesystem keeps its reserve.
    fn evict_if_needed(&self) -> Result<(), CacheError> {
        self.free_up(0)
    }

    /// The most the cache may hold now: its limit, and less when its filesystem runs short,
    /// so that it always leaves [`reserve`] (plus `need`) free there for the journal, its
    /// databases and everything else on that disk.
    fn room_for(&self, total: u64, limit: u64, need: u64) -> u64 {
        match fs_space(&self.dir) {
            Some((free, size)) => {
                limit.min((total + free).saturating_sub(reserve(size).saturating_add(need)))
            }
            None => limit,
        }
    }

    /// Evicts blocks (least recently used first, never pinned ones) so that the cache is
    /// within its limit and `need` more bytes fit on its filesystem besides its reserve
    /// (`need` > 0: for a write that found the disk full).
    pub fn free_up(&self, need: u64) -> Result<(), CacheError> {
        let (total, limit) = {
            let st = lock(&self.state);
            (st.total, st.limit)
        };
        match self.evict_to(self.room_for(total, limit, need)) {
            // The index could not record the eviction: the disk is full to the last byte
            // (local changes or another program filled it). The room set aside lets it, then
            // is set aside again from what the eviction freed.
            Err(e) if e.is_disk_full() => {
                if std::fs::remove_file(self.ballast_path()).is_err() {
                    return Err(e);
                }
                let total = lock(&self.state).total;
                let res = self.evict_to(self.room_for(total, limit, need + BALLAST));
                if let Err(e) = make_ballast(&self.ballast_path()) {
                    tracing::debug!(error = %e, "could not set aside room for a full disk again");
                }
                res
            }
            other => other,
        }
    }

    /// Evicts until the blocks that are not pinned take at most `limit` bytes.
    fn evict_to(&self, limit: u64) -> Result<(), CacheError> {
        {
            let st = lock(&self.state);
            if st.total <= limit || st.total - st.pinned_bytes() <= limit {
                return Ok(());
            }
        }
        let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let mut victims = Vec::new();
        let mut emptied = Vec::new();
        {
            let mut st = lock(&self.state);
            // The victims, least recently used first, are chosen and their index rows deleted
            // before anything changes here: when the index cannot record it (a full disk),
            // nothing is evicted and nothing is lost track of.
            let pinned_bytes = st.pinned_bytes();
            let mut over = (st.total - pinned_bytes).saturating_sub(limit);
            for (k, ()) in st.lru.iter().rev() {
                if over == 0 {
                    break;
                }
                if st.protected(&k.version) {
                    continue;
                }
                if let Some(len) = st.blocks.get(k) {
                    victims.push((*k, *len));
                    over = over.saturating_sub(*len as u64);
                }
            }
            {
                let mut db = lock(&self.db);
                let tx = db.transaction()?;
                {
                    let mut del =
                        tx.prepare_cached("DELETE FROM blocks WHERE version=?1 AND idx=?2")?;
                    for (k, _) in &victims {
                        del.execute(params![k.version.0, k.idx.0 as i64])?;
                    }
                }
                tx.commit()?;
            }
            for (k, _) in &victims {
                st.lru.pop(k);
                if let Some((_, true)) = st.remove_block(k) {
                    emptied.push(k.version);
                }
            }
            let st = &mut *st;
            let blocks = &st.blocks;
            st.pending.retain(|(k, _)| blocks.contains_key(k));
        }
        for v in &emptied {
            lock(&self.fds).pop(v);
            let _ = std::fs::remove_file(self.data_path(*v));
        }
        for (k, len) in victims {
            if emptied.contains(&k.version) {
                continue;
            }
            if let Ok(f) = self.file(k.version) {
                punch_hole(&f, k.idx.0 * self.block_size, len as u64);
            }
        }
        tracing::debug!(usage = ?self.usage(), "cache eviction done");
        Ok(())
    }
}

/// Room set aside in the cache folder (a file of this size) and given up when local changes
/// filled its disk to the last byte: SQLite must write to record an eviction before the
/// eviction frees anything.
const BALLAST: u64 = 2 << 20;
const BALLAST_NAME: &str = "room.reserved";

/// Creates the file holding [`BALLAST`] bytes of allocated disk space (not a sparse file).
fn make_ballast(path: &Path) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == BALLAST) {
        return Ok(());
    }
    let f = File::create(path)?;
    let res = allocate(&f, BALLAST);
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

#[cfg(target_os = "linux")]
fn allocate(f: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor, owned by `f` for the duration of the call.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len as libc::off_t) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn allocate(f: &File, len: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut w = f;
    w.write_all(&vec![0x5a; len as usize])?;
    w.sync_all()
}

/// Versions that could not be registered in the index (a full disk) get ids below this one:
/// never in the index, never written to disk.
const EPHEMERAL_BASE: i64 = -(1 << 40);

/// The index row of `(identity, etag)`, added when missing: its id.
fn register_version(db: &Connection, identity: &str, etag: &str) -> rusqlite::Result<i64> {
    db.prepare_cached("INSERT OR IGNORE INTO versions(identity, etag) VALUES (?1, ?2)")?
        .execute(params![identity, etag])?;
    db.prepare_cached("SELECT id FROM versions WHERE identity=?1 AND etag=?2")?
        .query_row(params![identity, etag], |r| r.get::<_, i64>(0))
}

/// Space the cache leaves free on its filesystem: a fiftieth of it, at least 16 MiB and at
/// most 256 MiB (but never more than half of a tiny filesystem).
fn reserve(fs_size: u64) -> u64 {
    (fs_size / 50).clamp(16 << 20, 256 << 20).min(fs_size / 2)
}

/// Free bytes (for unprivileged users) and size of the filesystem holding `dir`.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // the field types differ between Unix systems
fn fs_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable memory of the
    // struct's size; statvfs(3) only writes into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize as u64;
    Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

#[cfg(not(unix))]
fn fs_space(_dir: &Path) -> Option<(u64, u64)> {
    None
}

/// Above this many data files to sync at once, [`BlockCache::flush`] syncs the filesystem.
const SYNC_FILES_MAX: usize = 8;

/// Syncs the whole filesystem holding `dir`.
#[cfg(target_os = "linux")]
fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir)?;
    // SAFETY: a valid descriptor, owned by `d` for the duration of the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Not available here: the caller syncs file by file.
#[cfg(not(target_os = "linux"))]
fn sync_filesystem(_dir: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Writes all of `data` at `off` (positioned write, no shared cursor), in pieces of
/// [`JOURNAL_PIECE`]: for the journal's data files.
#[cfg(unix)]
pub(crate) fn write_all_at(f: &File, data: &[u8], off: u64) -> std::io::Result<()> {
    write_in_pieces(f, data, off, JOURNAL_PIECE)
}

/// Writes a downloaded block at `off`, in pieces of [`BLOCK_PIECE`].
#[cfg(unix)]
fn write_block_at(f: &File, data: &[u8], off: u64) -> std::io::Result<()> {
    write_in_pieces(f, data, off, BLOCK_PIECE)
}

// Why pieces, measured on the 2-core VM this project is benchmarked on: the larger each write,
// the slower the copy into new page-cache memory, which `perf` shows as most of a cold read's
// cost (`dd` of 1 GiB into a new file: ~500 MB/s with 1 MiB writes, 1.6-2.8 GB/s with 256
// KiB, 1.5-3.8 GB/s with 64 KiB). Most likely cause: the kernel sizes the folios it allocates
// after the write, and large ones come from the high-order free blocks that this VM hands
// back to its host (free page reporting), so each of their pages costs a host fault to fill.
// A plain `curl -o file` of a 1 GiB file runs at 440-810 MiB/s there.
#[cfg(unix)]
fn write_in_pieces(f: &File, data: &[u8], off: u64, piece: usize) -> std::io::Result<()> {
    for (i, p) in data.chunks(piece).enumerate() {
        std::os::unix::fs::FileExt::write_all_at(f, p, off + (i * piece) as u64)?;
    }
    Ok(())
}

/// Largest single write of a downloaded block into its cache file. A cold 1 GiB read through
/// nuage, interleaved runs: ~860 MiB/s with 256 KiB pieces, ~1200 with 64 KiB, ~990 with 32
/// and ~940 with 16 (where the write calls start to cost).
#[cfg(unix)]
const BLOCK_PIECE: usize = 64 << 10;

/// Largest single write into a journal data file. There the bytes come from FUSE writes of
/// up to 1 MiB, and 64 KiB pieces made the close of a 1 GiB copy ~10% slower than 256 KiB
/// (interleaved runs, 0.72-0.80 s against 0.64-0.73 s).
#[cfg(unix)]
const JOURNAL_PIECE: usize = 256 << 10;

/// A file's device and inode numbers: whether two paths name the same file.
#[cfg(unix)]
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A file's identity: not known on this system.
#[cfg(not(unix))]
pub fn file_id(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// Fills `buf` from `off` (positioned read, no shared cursor).
#[cfg(unix)]
pub(crate) fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, off)
}

/// Writes all of `data` at `off` (positioned write, no shared cursor).
#[cfg(windows)]
pub(crate) fn write_all_at(f: &File, mut data: &[u8], mut off: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !data.is_empty() {
        let n = f.seek_write(data, off)?;
        data = &data[n..];
        off += n as u64;
    }
    Ok(())
}

/// Writes a downloaded block at `off`.
#[cfg(windows)]
fn write_block_at(f: &File, data: &[u8], off: u64) -> std::io::Result<()> {
    write_all_at(f, data, off)
}

/// Fills `buf` from `off` (positioned read, no shared cursor).
#[cfg(windows)]
pub(crate) fn read_exact_at(f: &File, mut buf: &mut [u8], mut off: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = f.seek_read(buf, off)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        off += n as u64;
    }
    Ok(())
}

/// Frees the disk space of a byte range, keeping the file size.
#[cfg(target_os = "linux")]
fn punch_hole(f: &File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate only reads its integer arguments; the fd is valid for the life of `f`.
    let rc = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc != 0 {
        tracing::debug!(err = %std::io::Error::last_os_error(), "punching a cache hole failed");
    }
}

/// Other platforms: the space is reclaimed when the whole version is dropped.
#[cfg(not(target_os = "linux"))]
fn punch_hole(_f: &File, _off: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_index_is_set_aside_and_the_cache_starts_empty() {
        let d = tempfile::tempdir().expect("tmp");
        {
            let c = BlockCache::open(d.path(), 4096, 1 << 20).expect("open");
            let v = c.version("id", "\"e1\"").expect("version");
            c.insert(key(v, 0), &[7u8; 4096]).expect("put");
            c.flush().expect("flush");
        }
        let db = d.path().join("index.sqlite");
        std::fs::write(&db, b"not a database, not at all").expect("damage");
        // A log left from an earlier damaged index must not pass for this one's.
        std::fs::write(d.path().join("index.sqlite.damaged-shm"), b"older").expect("old shm");
        let c = BlockCache::open(d.path(), 4096, 1 << 20).expect("opens afresh");
        assert_eq!(c.usage().blocks, 0);
        let aside = |n: &str| std::fs::read(d.path().join(n)).ok();
        assert_eq!(
            aside("index.sqlite.damaged").as_deref(),
            Some(&b"not a database, not at all"[..])
        );
        assert_eq!(aside("index.sqlite.damaged-shm"), None);
        // Its data files went with it.
        let files = std::fs::read_dir(d.path().join("blocks"))
            .expect("blocks")
            .count();
        assert_eq!(files, 0);
    }

    fn key(v: VersionId, i: u64) -> BlockKey {
        BlockKey {
            version: v,
            idx: BlockIdx(i),
        }
    }

    #[test]
    fn store_read_and_survive_reopen() {
        let d = tempfile::tempdir().expect("tmp");
        let c = BlockCache::open(d.path(), 16, 1 << 20).expect("open");
        let v = c.version("f", "\"e1\"").expect("v");
        c.insert(key(v, 0), &[1u8; 16]).expect("ins");
        c.insert(key(v, 2), &[3u8; 5]).expect("ins");
        let mut buf = [0u8; 4];
        assert!(c.read(key(v, 2), 1, &mut buf).expect("read"));
        assert_eq!(buf, [3u8; 4]);
        assert!(
            !c.read(key(v, 1), 0, &mut buf).expect("read"),
            "absent block"
        );
        assert!(
            !c.read(key(v, 2), 3, &mut buf).expect("read"),
            "past block end"
        );
        c.flush().expect("flush");
        drop(c);
        // A data file the index does not know (a crash after the version left the index)
        // is removed; the known one stays.
        let stray = d.path().join("blocks").join("987654.data");
        std::fs::write(&stray, [7u8; 16]).expect("stray");
        let c = BlockCache::open(d.path(), 16, 1 << 20).expect("reopen");
        let v2 = c.version("f", "\"e1\"").expect("v");
        assert_eq!(v, v2);
        assert!(c.has(key(v, 0)) && c.has(key(v, 2)));
        assert_eq!(c.usage().bytes, 21);
        assert!(!stray.exists(), "stray data file removed");
        assert!(
            c.read(key(v, 2), 1, &mut buf).expect("read"),
            "known one kept"
        );
    }

    #[test]
    fn a_block_stays_in_memory_until_it_is_on_disk() {
        let d = tempfile::tempdir().expect("tmp");
        let bs = 1 << 20;
        let c = BlockCache::open(d.path(), bs, 1 << 30).expect("open");
        let v = c.version("f", "e").expect("v");
        let n = HOT_BYTES / bs + 4;
        // More blocks than the memory tier holds, none written to disk yet (a slow disk).
        for i in 0..n {
            c.keep_hot(key(v, i), bytes::Bytes::from(vec![i as u8; bs as usize]));
        }
        let blocks = c.hot_blocks(v, 0, n - 1);
        assert!(
            blocks.iter().all(Option::is_some),
            "a block left memory before reaching the disk"
        );
        assert_eq!(blocks[0].as_deref(), Some(&vec![0u8; bs as usize][..]));
        // Once written, the oldest may leave memory: they are read from the disk.
        c.insert(key(v, 0), &vec![0u8; bs as usize]).expect("ins");
        assert!(c.hot_blocks(v, 0, 0)[0].is_none());
        assert!(c.is_hot(key(v, n - 1)));
        let mut b = [9u8; 4];
        assert!(c.read(key(v, 0), 0, &mut b).expect("read"));
        assert_eq!(b, [0u8; 4]);
    }

    #[test]
    fn unflushed_blocks_are_not_trusted_after_reopen() {
        let d = tempfile::tempdir().expect("tmp");
        let c = BlockCache::open(d.path(), 16, 1 << 20).expect("open");
        let v = c.version("f", "e").expect("v");
        c.insert(key(v, 0), &[1u8; 16]).expect("ins");
        drop(c);
        let c = BlockCache::open(d.path(), 16, 1 << 20).expect("reopen");
        assert!(!c.has(key(v, 0)));
    }

    #[test]
    fn new_etag_drops_old_blocks() {
        let d = tempfile::tempdir().expect("tmp");
        let c = BlockCache::open(d.path(), 16, 1 << 20).expect("open");
        let v1 = c.version("f", "a").expect("v");
        c.insert(key(v1, 0), &[1u8; 16]).expect("ins");
        let v2 = c.version("f", "b").expect("v");
        assert_ne!(v1, v2);
        assert!(!c.has(key(v1, 0)));
        assert!(!c.has(key(v2, 0)));
        assert_eq!(c.usage().bytes, 0);
        let other = c.version("g", "a").expect("v");
        c.insert(key(other, 0), &[2u8; 16]).expect("ins");
        c.version("f", "c").expect("v");
        assert!(c.has(key(other, 0)), "other files keep their blocks");
    }

    #[test]
    fn try_version_registers_first_versions_and_leaves_replacements_to_version() {
        let d = tempfile::tempdir().expect("tmp");
        let c = BlockCache::open(d.path(), 16, 1 << 20).expect("open");
        let v1 = c.try_version("f", "a").expect("first version of f");
        assert_eq!(c.try_version("f", "a"), Some(v1), "known");
        c.insert(key(v1, 0), &[1u8; 16]).expect("ins");
        // A new etag must drop the old blocks first: not done on the quick path.
        assert_eq!(c.try_version("f", "b"), None);
        assert!(c.has(key(v1, 0)));
        let v2 = c.version("f", "b").expect("v");
        assert!(!c.has(key(v1, 0)));
        assert_eq!(c.try_version("f", "b"), Some(v2));
        // Registered in the index like any version: kept across a restart.
        c.flush().expect("flush");
        drop(c);
        let c = BlockCache::open(d.path(), 16, 1 << 20).expect("reopen");
        assert_eq!(c.known_version("f", "b"), Some(v2));
        assert_eq!(c.known_version("f", "a"), None);
    }

    #[test]
    fn renames_move_files_and_folders_and_replace_what_was_there() {
        let d = tempfile::tempdir().expect("tmp");
        let c = BlockCache::open(d.path(), 16, 1 << 20).expect("open");
        let a = c.version("r\n/d/a", "e1").expect("v");
        let b = c.version("r\n/d/sub/b", "e2").expect("v");
        let near = c.version("r\n/d2", "e3").expect("v"); // not below /d
        let old = c.version("r\n/x/a", "e4").expect("v"); // replaced by the move
        for (v, i) in [(a, 0), (b, 3), (near, 0), (old, 0)] {
            c.insert(key(v, i), &[7u8; 16]).expect("ins");
        }
        c.rename_identity("r\n/d", "r\n/x").expect("rename");
        assert_eq!(c.known_version("r\n/x/a", "e1"), Some(a));
        assert_eq!(c.known_version("r\n/x/sub/b", "e2"), Some(b));
        assert_eq!(c.known_version("r\n/d/a", "e1"), None);
        assert_eq!(c.known_version("r\n/d2", "e3"), Some(near));
        assert!(c.has(key(a, 0)) && c.has(key(b, 3)) && c.has(key(near, 0)));
        assert!(!c.has(key(old, 0)), "the file the move replaced is gone");
        // A new version of a moved file drops the moved one, found under its new name.
        let a2 = c.version("r\n/x/a", "e5").expect("v");
        assert!(!c.has(key(a, 0)));
        assert_ne!(a, a2);
        // One file renamed; the index keeps the names across a restart.
        c.rename_identity("r\n/x/sub/b", "r\n/y").expect("rename");
        c.flush().expect("flush");
        drop(c);
        let c = BlockCache::open(d.path(), 16, 1 << 20).expect("reopen");
        assert_eq!(c.known_version("r\n/y", "e2"), Some(b));
        assert!(c.has(key(b, 3)));
        assert_eq!(c.version("r\n/d2", "e3").expect("v"), near);
    }

    #[test]
    fn lru_eviction_keeps_within_limit() {
        let d = tempfile::tempdir().expect("tmp");
        let c = BlockCache::open(d.path(), 16, 48).expect("open");
        let v = c.version("f", "e").expect("v");
        for i in 0..3 {
            c.insert(key(v, i), &[i as u8; 16]).expect("ins");
        }
        let mut b = [0u8; 1];
        assert!(c.read(key(v, 0), 0, &mut b).expect("read")); // 0 becomes most recent
        c.insert(key(v, 3), &[3u8; 16]).expect("ins");
        assert!(c.usage().bytes <= 48);
        assert!(c.has(key(v, 0)), "recently read block kept");
        assert!(!c.has(key(v, 1)), "least recently used block evicted");
        assert!(c.has(key(v, 3)));
        // The evicted range reads back as a hole, the kept ones intact.
        assert!(c.read(key(v, 2), 0, &mut b).expect("read"));
        assert_eq!(b, [2u8]);
        c.set_limit(16).expect("limit");
        assert_eq!(c.usage().blocks, 1);
    }

    #[test]
    fn an_eviction_the_index_cannot_record_changes_nothing() {
        let d = tempfile::tempdir().expect("tmp");
        let c = BlockCache::open(d.path(), 16, 1 << 20).expect("open");
        let v = c.version("f", "e").expect("v");
        for i in 0..3 {
            c.insert(key(v, i), &[i as u8 + 1; 16]).expect("ins");
        }
        c.flush().expect("flush");
        // The index refuses writes (as a full disk makes it): nothing is evicted, nothing is
        // lost track of.
        lock(&c.db)
            .pragma_update(None, "query_only", true)
            .expect("pragma");
        assert!(c.set_limit(16).is_err());
        assert_eq!(c.usage().blocks, 3);
        let mut b = [0u8; 16];
        for i in 0..3 {
            assert!(c.read(key(v, i), 0, &mut b).expect("read"), "block {i}");
            assert_eq!(b, [i as u8 + 1; 16]);
        }
        // Once it can, the eviction happens (and the evicted blocks' bytes are gone).
        lock(&c.db)
            .pragma_update(None, "query_only", false)
            .expect("pragma");
        c.set_limit(16).expect("limit");
        assert_eq!(c.usage().blocks, 1);
        assert!(c.has(key(v, 2)), "the most recent block kept");
        let f = std::fs::read(c.data_path(v)).expect("data file");
        assert!(f[..32].iter().all(|x| *x == 0), "evicted blocks punched");
    }

    #[test]
    fn recency_survives_a_restart_and_only_used_blocks_are_rewritten() {
        let d = tempfile::tempdir().expect("tmp");
        {
            let c = BlockCache::open(d.path(), 16, 1 << 20).expect("open");
            let v = c.version("f", "e").expect("v");
            for i in 0..3 {
                c.insert(key(v, i), &[i as u8; 16]).expect("ins");
            }
            c.flush().expect("flush");
            // Only block 0 is used after that flush.
            let mut b = [0u8; 1];
            assert!(c.read(key(v, 0), 0, &mut b).expect("read"));
            assert_eq!(lock(&c.state).touched.len(), 1, "one block to rewrite");
            c.flush().expect("flush");
        }
        // After a restart, with room for two blocks: block 0 was used last, so block 1 (the
        // oldest of the others) goes first.
        let c = BlockCache::open(d.path(), 16, 32).expect("reopen");
        let v = c.version("f", "e").expect("v");
        c.evict_if_needed().expect("evict");
        assert!(c.has(key(v, 0)), "the block used last was evicted");
        assert_eq!(c.usage().blocks, 2);
    }

    #[test]
    fn block_size_change_wipes() {
        let d = tempfile::tempdir().expect("tmp");
        let c = BlockCache::open(d.path(), 16, 1 << 20).expect("open");
        let v = c.version("f", "e").expect("v");
        c.insert(key(v, 0), &[1u8; 16]).expect("ins");
        c.flush().expect("flush");
        drop(c);
        let c = BlockCache::open(d.path(), 32, 1 << 20).expect("reopen");
        assert_eq!(c.usage().blocks, 0);
    }
}
