//! The API that platform adapters call: inode operations, handles, and the read path.
//!
//! Adapters translate OS calls into these methods and map [`Error`]s with their own table.
//! The core owns every type here ([`Attr`], [`DirEntry`], [`Fh`]); no adapter type leaks in.
//!
//! ## Freshness
//! A folder's listing is reused for `dir_ttl`, a node's attributes for `attr_ttl`; after that the
//! server is asked again (Depth 1 for listings, Depth 0 for one node). `open` revalidates a node
//! whose attributes are older than `attr_ttl`, so a file changed on the server is read with its
//! new content after that lifetime. The kernel may keep its page cache for a file only while
//! the etag it was filled from is unchanged ([`Opened::keep_cache`]).
//!
//! ## Reads
//! Each handle tracks where the last read ended; reads that continue it grow a read-ahead
//! window (doubling up to `max_readahead`), random reads reset it, so a sparse read downloads
//! only the blocks it touches.
//!
//! ## Writes
//! File content changes go to the write-back queue ([`crate::writeback`]): `write` lands in a
//! local file at disk speed, `flush`/`fsync` make it durable in the journal, and the upload
//! happens in the background. Namespace changes (mkdir, unlink, rmdir, rename) are sent to the
//! server at once, in order, so the server's tree follows the programs' order of operations; a
//! file that was never uploaded is renamed or deleted locally without any transfer. Folder
//! listings merge the server's answer with the files still waiting for their first upload.
//!
//! ## Concurrency
//! `table` and `handles` are `std::sync::Mutex`es held for map updates only, never across an
//! `.await`; they are never held together. Listing fetches of one folder are serialized by a
//! per-folder async lock so that concurrent lookups cause one PROPFIND.

use crate::cache::BlockCache;
use crate::error::{Error, ErrorKind, Result};
use crate::fetch::{Fetcher, FileVersion};
use crate::meta::store::MetaStore;
use crate::meta::{InodeTable, Node};
use crate::webdav::{strong_etag, DavClient, DavError, Depth, Entry, RemotePath};
use crate::writeback::{Base, DirtyFile, Event, WriteBack, WriteBackConfig};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use crate::meta::Ino;
pub use pins::{PinProgress, XATTR_CLEAN, XATTR_PINNED, XATTR_STATUS};
pub use remote::{Invalidation, Invalidator, RemoteChanges};
pub use server::{
    LinkRequest, ServerApi, ShareRequest, XATTR_LINK, XATTR_RESTORE, XATTR_RESTORE_VERSION,
    XATTR_SHARE, XATTR_TRASH, XATTR_VERSIONS,
};

pub mod paths;
mod pins;
mod remote;
mod server;

/// File handle number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fh(pub u64);

/// File or folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A folder.
    Dir,
}

/// Attributes of a node, in core terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// File or folder.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: SystemTime,
    /// Permission bits (`0o644`, `0o755`...).
    pub perm: u16,
    /// Owner user id (the mounting user).
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

/// One entry of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub ino: Ino,
    /// File or folder.
    pub kind: FileKind,
    /// Name, exactly as the server has it.
    pub name: String,
    /// The entry's attributes, as of the listing.
    pub attr: Attr,
}

/// Filesystem usage for `statfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Total bytes.
    pub total: u64,
    /// Free bytes.
    pub free: u64,
    /// Block size reported.
    pub bsize: u32,
    /// The longest name the server takes, in bytes.
    pub name_max: u32,
}

/// What `open` answers.
#[derive(Debug)]
pub struct Opened {
    /// The handle.
    pub fh: Fh,
    /// True when the kernel may keep the pages it cached for this file: the etag they came
    /// from is still current.
    pub keep_cache: bool,
    /// A read-only file holding the whole content (a completely cached version): the kernel
    /// may read it directly (FUSE passthrough). If the adapter cannot use it, it calls
    /// [`Vfs::passthrough_refused`].
    pub backing: Option<std::fs::File>,
    /// Which content `backing` holds (the kernel needs one backing file per inode at a time).
    pub backing_version: i64,
}

/// Default largest read-ahead window: enough to keep two 8 MiB GETs going, and smaller than
/// the cache's memory tier ([`crate::cache::HOT_BYTES`]), so the blocks read ahead are still in
/// memory when the reader gets to them (no disk read, and a read inside one block is not
/// copied at all).
pub const DEFAULT_READAHEAD: u64 = 16 << 20;

pub use crate::webdav::PATIENCE;

/// Mount behaviour settings.
#[derive(Debug, Clone)]
pub struct VfsConfig {
    /// How long attributes are trusted (also handed to the kernel).
    pub attr_ttl: Duration,
    /// How long a folder listing is trusted.
    pub dir_ttl: Duration,
    /// Refuse every write.
    pub read_only: bool,
    /// Owner reported for every node.
    pub uid: u32,
    /// Group reported for every node.
    pub gid: u32,
    /// Largest read-ahead window in bytes.
    pub max_readahead: u64,
    /// Identity prefix of cache entries (the server root URL).
    pub cache_identity: String,
    /// The server is a Nextcloud (mtime can be set with PROPPATCH).
    pub nextcloud: bool,
    /// Names the server refuses (Nextcloud capabilities), checked at create and rename.
    pub names: Option<crate::webdav::nextcloud::NameRules>,
}

impl Default for VfsConfig {
    fn default() -> Self {
        VfsConfig {
            attr_ttl: Duration::from_secs(10),
            dir_ttl: Duration::from_secs(10),
            read_only: true,
            uid: 0,
            gid: 0,
            max_readahead: DEFAULT_READAHEAD,
            cache_identity: String::new(),
            nextcloud: false,
            names: None,
        }
    }
}

/// A folder listing snapshot taken at `opendir`, paged by `readdir`.
struct DirHandle {
    parent: Ino,
    entries: Arc<Vec<DirEntry>>,
}

struct Handle {
    ino: Ino,
    /// The changed file this handle writes to (opened for writing).
    dirty: Option<Arc<DirtyFile>>,
    /// Opened while the file had local changes: `file` is not the server version.
    from_local: bool,
    /// Opened while the file had local changes: reads follow the newest server version.
    follows_local: bool,
    file: FileVersion,
    /// Where the last read ended.
    next_offset: u64,
    /// Current read-ahead window in blocks.
    window: u64,
    /// The cache version the kernel reads directly through this handle (passthrough).
    passthrough: Option<crate::cache::VersionId>,
    /// The kernel's page cache of this file was dropped up to here (see [`DROP_BEHIND`]).
    dropped_to: u64,
    /// Bytes of `file` were answered through this handle.
    served: bool,
    /// The kernel held none of the file's pages when this handle was opened (it dropped
    /// them: no `keep_cache`), and which open of the file it was (`Vfs::opens`): while no
    /// bytes were answered through it and nobody opened the file since, the kernel holds no
    /// page of `file`, and the handle may follow a newer server version (`follow_new`).
    clean_open: Option<u64>,
}

/// A cache file the kernel reads directly (passthrough) that a writer took over (see
/// [`Vfs::share_backing`]).
struct Taken {
    /// The version the kernel's backing file was registered for.
    version: crate::cache::VersionId,
    /// The change now held in that file.
    change: Arc<DirtyFile>,
    /// That file (device and inode): once the change is uploaded, the cache keeps it as the
    /// new version's, and the next writer may take it over again.
    file: (u64, u64),
    /// That file, open: wherever it is now, for the adapter's next handles of it.
    open: std::fs::File,
}

/// Where the kernel can read cached files directly (passthrough), a large file read
/// sequentially has the kernel's page cache dropped this far behind the reader, a slice at a
/// time: its data stays in the block cache (and the next open reads it from there through
/// passthrough), the kernel does not hold it twice, and that next open has no gigabyte of
/// pages to drop first. Without passthrough (a mount made by a user other than root) the
/// kernel's copy is kept: the next open is served from it, as a local file's would be, where
/// reading the block cache through nuage would be 3-4 times slower.
const DROP_BEHIND: u64 = 4 << 20;
/// ...in slices of this size.
const DROP_SLICE: u64 = 16 << 20;

/// What a `fallocate()` asks of a range (see [`Vfs::allocate_blocking`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocate {
    /// The file is made at least as long as the range's end (the new bytes read as zeros).
    Extend,
    /// Room is to be reserved, the size kept: nothing a program can see changes.
    KeepSize,
    /// The range reads as zeros (a punched hole, a zeroed range); with `keep_size`, only up
    /// to the end of the file.
    Zero {
        /// Nothing past the end of the file.
        keep_size: bool,
    },
}

/// A handle's sequential state after one read (see [`Vfs::sequence`]).
struct Step {
    window: u64,
    next_offset: u64,
    /// Drop the kernel's page cache of the file up to here.
    drop_to: Option<u64>,
}

impl Step {
    /// Records the step in the handle; the page cache range to drop, if any.
    fn apply(self, h: &mut Handle) -> Option<Invalidation> {
        h.window = self.window;
        h.next_offset = self.next_offset;
        let to = self.drop_to?;
        let from = std::mem::replace(&mut h.dropped_to, to);
        Some(Invalidation::Pages {
            ino: h.ino,
            offset: from,
            len: to - from,
        })
    }
}

/// The platform-independent filesystem.
pub struct Vfs {
    dav: DavClient,
    fetcher: Arc<Fetcher>,
    cfg: VfsConfig,
    table: Arc<Mutex<InodeTable>>,
    wb: Arc<WriteBack>,
    /// Modification times a plain WebDAV server cannot store (set on a clean file, or of an
    /// uploaded file), by path, each valid while the server etag is the one recorded; kept
    /// in the meta store across mounts.
    mtimes: Arc<Mutex<HashMap<RemotePath, (String, SystemTime)>>>,
    /// Files made executable here (kept on this device: no server stores modes).
    execs: Mutex<std::collections::HashSet<RemotePath>>,
    handles: Mutex<HashMap<Fh, Handle>>,
    /// Files deleted while a program still has them open (a scratch file made with `tmpfile()`,
    /// say): their changes, read, written and sized through those handles until the last one
    /// closes. Nothing of them reaches the server or the journal. A leaf lock.
    orphans: Mutex<HashMap<Ino, Arc<DirtyFile>>>,
    /// Files a writer had to wait for passthrough readers of: not opened in passthrough
    /// mode again (for this mount). A leaf lock.
    no_passthrough: Mutex<std::collections::HashSet<Ino>>,
    /// How many times each file was opened (see `Handle::clean_open`). Locked only under
    /// `handles`.
    opens: Mutex<HashMap<Ino, u64>>,
    /// Files whose cache file, read by the kernel directly (passthrough), a writer took over
    /// as its change while they were read ([`Vfs::share_backing`]): the version the
    /// kernel's backing file was registered for, and the change. Until their last handle
    /// closes. Taken under `handles`.
    taken: Mutex<HashMap<Ino, Taken>>,
    dir_handles: Mutex<HashMap<Fh, DirHandle>>,
    listing_locks: Mutex<HashMap<Ino, Arc<tokio::sync::Mutex<()>>>>,
    next_fh: AtomicU64,
    quota: Mutex<Option<(Instant, StatFs)>>,
    invalidator: Mutex<Option<remote::Invalidator>>,
    last_root_etag: Mutex<Option<String>>,
    passthrough: std::sync::atomic::AtomicBool,
    meta: Arc<MetaStore>,
    pins: Mutex<std::collections::BTreeSet<RemotePath>>,
    hydrate: tokio::sync::Notify,
    pin_progress: Mutex<Vec<pins::PinProgress>>,
    pinned_versions: Mutex<std::collections::HashSet<crate::cache::VersionId>>,
    remembered: Mutex<HashMap<Ino, u64>>,
    server_api_slot: std::sync::OnceLock<server::ServerApi>,
    /// Folders whose subfolders are being opened one after the other (see [`Vfs::walked`]).
    walks: Mutex<Walks>,
    /// Per folder, its files opened for reading lately (see [`Vfs::read_in_turn`]).
    file_runs: Mutex<HashMap<Ino, FileRun>>,
    /// This core, for the background work it starts itself, and the runtime that work runs
    /// on (it may be started from a thread outside it).
    me: std::sync::Weak<Vfs>,
    rt: tokio::runtime::Handle,
}

/// Files of one folder opened for reading one after the other in name order: the last one,
/// how many in a row, when, and the last name fetched ahead.
struct FileRun {
    name: String,
    run: u32,
    last: Instant,
    ahead_to: String,
}

/// Files fetched ahead of a program reading a folder's files in turn (their first block).
const FILES_AHEAD: usize = 8;

/// What the walk detection remembers: the parents of the folders opened lately (and when),
/// and per folder, its subfolders opened lately.
#[derive(Default)]
struct Walks {
    recent: std::collections::VecDeque<(Ino, Instant)>,
    folders: HashMap<Ino, Walk>,
}

/// Folders opened lately that the walk detection remembers.
const WALK_RECENT: usize = 64;

/// Subfolders of one folder opened for listing in a short time: a program walking the tree
/// (`find`, `du`, a backup tool, a file manager counting what each folder holds).
struct Walk {
    opened: u32,
    last: Instant,
    ahead: bool,
}

/// Opened subfolders of one folder, each within this time of the one before, that make a walk.
const WALK_AFTER: u32 = 2;
const WALK_GAP: Duration = Duration::from_secs(5);
/// Listings asked for at once ahead of a walk, and at most this many in all per walk.
const WALK_PARALLEL: usize = 4;
const WALK_MAX: usize = 512;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections only update maps and cannot leave them half-changed; recover from a
    // poisoned lock instead of panicking in a filesystem callback.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn kind_of(e: &Entry) -> FileKind {
    if e.is_dir {
        FileKind::Dir
    } else {
        FileKind::File
    }
}

impl Vfs {
    /// Connects the core: checks that the root answers PROPFIND, builds the tables, and opens
    /// the write-back journal (resuming what a previous run left pending).
    pub async fn new(
        dav: DavClient,
        cache: Arc<BlockCache>,
        cfg: VfsConfig,
        wb_cfg: WriteBackConfig,
        chunking: bool,
    ) -> Result<Arc<Self>> {
        let meta = {
            let dir = wb_cfg.dir.clone();
            tokio::task::spawn_blocking(move || MetaStore::open(&dir))
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("meta store task failed: {e}")))?
                .map_err(|e| {
                    Error::new(ErrorKind::Io, format!("cannot open the meta store: {e}"))
                })?
        };
        let root = match dav.propfind(&RemotePath::root(), Depth::Zero).await {
            Ok(mut root) => root.drain(..).find(|e| e.path.is_root()).ok_or_else(|| {
                Error::new(ErrorKind::Io, "the server did not describe the root folder")
            })?,
            Err(e) if cut_off(&e) => match meta.listing(&RemotePath::root()) {
                // Out of reach, but this cache knows the folder: start offline.
                Some((root, _)) => {
                    tracing::warn!(error = %e, "server out of reach: mounting offline with what the cache holds");
                    root
                }
                None => {
                    return Err(Error::new(
                        ErrorKind::Offline,
                        format!("{e} (and this cache holds nothing of it yet)"),
                    ))
                }
            },
            Err(e) => return Err(e.into()),
        };
        if !root.is_dir {
            return Err(Error::new(
                ErrorKind::NotADirectory,
                "the URL names a file, not a WebDAV folder",
            ));
        }
        let fetcher = Arc::new(Fetcher::new(dav.clone(), cache, 8, 8));
        let wb = {
            let (dav, fetcher) = (dav.clone(), fetcher.clone());
            tokio::task::spawn_blocking(move || WriteBack::open(wb_cfg, dav, fetcher, chunking))
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("journal task failed: {e}")))??
        };
        let table = Arc::new(Mutex::new(InodeTable::new(root)));
        let meta = Arc::new(meta);
        let mtimes: Arc<Mutex<HashMap<RemotePath, (String, SystemTime)>>> = Arc::new(Mutex::new(
            meta.mtimes()
                .into_iter()
                .map(|(p, e, t)| (p, (e, t)))
                .collect(),
        ));
        let (t2, m2, meta2, keep) = (table.clone(), mtimes.clone(), meta.clone(), !cfg.nextcloud);
        wb.set_listener(move |ev| {
            if let (
                true,
                Event::Uploaded {
                    path,
                    etag: Some(etag),
                    mtime,
                    ..
                },
            ) = (keep, &ev)
            {
                // The server stamps the upload time; the file's own time is kept here.
                let etag = strong_etag(etag).to_string();
                meta2.set_mtime(path, &etag, *mtime);
                lock(&m2).insert(path.clone(), (etag, *mtime));
            }
            apply_event(&t2, ev)
        });
        wb.start();
        Ok(Arc::new_cyclic(|me| Vfs {
            dav,
            fetcher,
            cfg,
            table,
            wb,
            mtimes,
            handles: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashMap::new()),
            no_passthrough: Mutex::new(std::collections::HashSet::new()),
            opens: Mutex::new(HashMap::new()),
            taken: Mutex::new(HashMap::new()),
            dir_handles: Mutex::new(HashMap::new()),
            listing_locks: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            quota: Mutex::new(None),
            invalidator: Mutex::new(None),
            last_root_etag: Mutex::new(None),
            passthrough: std::sync::atomic::AtomicBool::new(false),
            pins: Mutex::new(meta.pins().into_iter().collect()),
            execs: Mutex::new(meta.execs().into_iter().collect()),
            meta,
            hydrate: tokio::sync::Notify::new(),
            pin_progress: Mutex::new(Vec::new()),
            pinned_versions: Mutex::new(Default::default()),
            remembered: Mutex::new(HashMap::new()),
            server_api_slot: std::sync::OnceLock::new(),
            walks: Mutex::new(Walks::default()),
            file_runs: Mutex::new(HashMap::new()),
            me: me.clone(),
            rt: tokio::runtime::Handle::current(),
        }))
    }

    /// What the mount remembers between runs (listings, pins, the Activity feed).
    pub fn meta(&self) -> &Arc<MetaStore> {
        &self.meta
    }

    /// Whether the server can be reached.
    pub fn reach(&self) -> Arc<crate::webdav::Reach> {
        self.dav.reach().clone()
    }

    /// Waits until the remembered listings are on disk.
    pub fn flush_meta(&self) {
        self.remember_listings();
        self.meta.flush();
    }

    /// Remembers (in the background) every folder listing that changed since it was last
    /// remembered, local changes and finished uploads included, so that a mount started
    /// offline later shows what this one knew.
    pub fn remember_listings(&self) {
        use std::hash::{Hash, Hasher};
        let mut out = Vec::new();
        {
            let t = lock(&self.table);
            let mut seen = lock(&self.remembered);
            for (ino, node) in t.nodes() {
                let Some(l) = node.listing.as_ref() else {
                    continue;
                };
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for (name, c) in l.children.iter() {
                    if let Some(cn) = t.get(*c) {
                        name.hash(&mut h);
                        cn.entry.etag.hash(&mut h);
                        cn.entry.size.hash(&mut h);
                        cn.entry.is_dir.hash(&mut h);
                    }
                }
                let sig = h.finish();
                if seen.get(ino) != Some(&sig) {
                    seen.insert(*ino, sig);
                    // Copied only when changed: every listing is looked at every few seconds
                    // (copying a folder of 50,000 entries each time held the table 50 ms).
                    let children: Vec<Entry> = l
                        .children
                        .values()
                        .filter_map(|c| t.get(*c).map(|cn| cn.entry.clone()))
                        .collect();
                    out.push((node.entry.clone(), children));
                }
            }
        }
        for (dir, children) in out {
            self.meta.remember_listing(&dir, &children);
        }
    }

    /// The write-back queue.
    pub fn writeback(&self) -> &Arc<WriteBack> {
        &self.wb
    }

    /// The settings.
    pub fn config(&self) -> &VfsConfig {
        &self.cfg
    }

    /// The block cache.
    pub fn cache(&self) -> &Arc<BlockCache> {
        self.fetcher.cache()
    }

    fn attr_of(&self, ino: Ino, n: &Node) -> Attr {
        let e = &n.entry;
        let writable = !self.cfg.read_only
            && e.permissions
                .as_deref()
                .map(|p| {
                    if e.is_dir {
                        p.contains('C')
                    } else {
                        p.contains('W')
                    }
                })
                .unwrap_or(true);
        let exec = !e.is_dir && lock(&self.execs).contains(&n.path);
        let perm = match (e.is_dir || exec, writable) {
            (true, true) => 0o755,
            (true, false) => 0o555,
            (false, true) => 0o644,
            (false, false) => 0o444,
        };
        let mut a = Attr {
            ino,
            kind: kind_of(e),
            size: if e.is_dir { 0 } else { e.size },
            mtime: e.mtime,
            perm,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        };
        if !e.is_dir {
            if let Some(d) = self.own_change(ino, &n.path, n.linked) {
                let st = d.state();
                a.size = st.size;
                a.mtime = st.mtime;
            } else if let Some((etag, t)) = lock(&self.mtimes).get(&n.path) {
                // Apache calls an etag weak within a second of a change: compare the values.
                if e.etag.as_deref().map(strong_etag) == Some(etag.as_str()) {
                    a.mtime = *t;
                }
            }
        }
        a
    }

    fn node(&self, ino: Ino) -> Result<Node> {
        lock(&self.table)
            .get(ino)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("unknown inode {}", ino.0)))
    }

    /// Some servers leave names starting with a dot out of folder listings although the
    /// files are there (nginx's dav_ext module): a known dot entry missing from a new listing
    /// is asked about on its own (Depth 0) before it counts as deleted, so a `.git` folder
    /// written through the mount does not vanish from it.
    async fn keep_hidden(&self, dir: &RemotePath, known: Vec<String>, entries: &mut Vec<Entry>) {
        const MAX: usize = 64;
        let listed: std::collections::HashSet<String> =
            entries.iter().map(|e| e.path.name().to_string()).collect();
        for name in known.into_iter().filter(|n| !listed.contains(n)).take(MAX) {
            if let Ok(v) = self.dav.propfind(&dir.join(&name), Depth::Zero).await {
                if let Some(e) = v.into_iter().next() {
                    tracing::debug!(path = %e.path, "kept: the server leaves it out of listings");
                    entries.push(e);
                }
            }
        }
    }

    /// Makes sure folder `dir` has a listing younger than `dir_ttl`.
    async fn fresh_listing(&self, dir: Ino) -> Result<()> {
        self.refresh_listing(dir, false).await
    }

    /// Lists folder `dir` again when its listing is older than `dir_ttl`, or always with
    /// `force` (then a listing fetched by someone else meanwhile also counts). A folder listed
    /// before is answered from that listing when the server takes longer than [`PATIENCE`]
    /// (its new listing still lands when it comes).
    async fn refresh_listing(&self, dir: Ino, force: bool) -> Result<()> {
        let since = Instant::now();
        if self.listing_is_fresh(dir, force, since) {
            return Ok(());
        }
        let gate = lock(&self.listing_locks).entry(dir).or_default().clone();
        let listed_before = lock(&self.table)
            .get(dir)
            .is_some_and(|n| n.listing.is_some());
        let (true, false, Some(me)) = (listed_before, force, self.me.upgrade()) else {
            return self.list_now(dir, force, since, &gate).await;
        };
        if !self.reach().is_online() && gate.try_lock().is_err() {
            // Out of reach, and an earlier listing of it still waits for the server.
            return Ok(());
        }
        let listed = self.within_patience(move || {
            let (me, gate) = (me.clone(), gate.clone());
            async move { me.list_now(dir, force, since, &gate).await }
        });
        match listed.await {
            Some(r) => r,
            None => {
                tracing::debug!(
                    dir = dir.0,
                    "the server is slow: answering from the last listing"
                );
                Ok(())
            }
        }
    }

    /// Runs `work()` (a request with an answer to fall back on) to its end in the background
    /// and waits for it [`PATIENCE`] at most: `None` when it takes longer (or failed to run),
    /// and then the server is asked whether it answers at all; when it answers at once on a
    /// new connection, `work` was most likely stuck on one that leads nowhere and starts
    /// again. While that is being asked, `None` at once, and `work` is not started (it would
    /// most likely wait as well).
    async fn within_patience<T, F>(&self, work: impl Fn() -> F + Send + 'static) -> Option<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        if self.dav.checking_reach() {
            return None;
        }
        let task = self.rt.spawn(work());
        let stuck = task.abort_handle();
        let reach = self.reach();
        let gone = async {
            if !reach.is_online() {
                // Out of reach already: `work` fails at once or answers from the cache.
                std::future::pending::<()>().await;
            }
            // Found out of reach meanwhile (by the check another wait started, say).
            reach.until_offline().await;
        };
        tokio::select! {
            done = task => match done {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(error = %e, "a request to the server ended abnormally");
                    None
                }
            },
            _ = tokio::time::sleep(self.dav.patience()) => {
                let (check, rt) = (self.dav.check_reach(), self.rt.clone());
                self.rt.spawn(async move {
                    if check.await && !stuck.is_finished() {
                        tracing::debug!("a request stuck on a kept-alive connection: asked again");
                        stuck.abort();
                        rt.spawn(work());
                    }
                });
                None
            }
            _ = gone => None,
        }
    }

    /// True when folder `dir` was listed within `dir_ttl` (with `force`: since `since`).
    fn listing_is_fresh(&self, dir: Ino, force: bool, since: Instant) -> bool {
        lock(&self.table)
            .get(dir)
            .and_then(|n| n.listing.as_ref())
            .is_some_and(|l| {
                if force {
                    l.fetched >= since
                } else {
                    l.fetched.elapsed() < self.cfg.dir_ttl
                }
            })
    }

    /// Lists folder `dir` (see [`Vfs::refresh_listing`]), one listing of it at a time (`gate`).
    async fn list_now(
        &self,
        dir: Ino,
        force: bool,
        since: Instant,
        gate: &tokio::sync::Mutex<()>,
    ) -> Result<()> {
        let _g = gate.lock().await;
        if self.listing_is_fresh(dir, force, since) {
            return Ok(());
        }
        let node = self.node(dir)?;
        if !node.entry.is_dir {
            return Err(Error::new(
                ErrorKind::NotADirectory,
                format!("{} is a file", node.path),
            ));
        }
        if self.wb.is_folder_pending(&node.path) {
            // Made offline, not on the server yet: what is in it is what was made here.
            let mut entries = vec![node.entry.clone()];
            self.merge_pending(&node.path, &mut entries);
            lock(&self.table).apply_listing(dir, entries, Instant::now());
            return Ok(());
        }
        for _attempt in 0..3 {
            let gen = lock(&self.table).dir_gen(dir);
            // Taken before asking the server: a file whose first upload ends meanwhile is in
            // one of the two answers.
            let local = self.wb.children_of(&node.path);
            let dotted: Vec<String> = lock(&self.table)
                .get(dir)
                .and_then(|n| n.listing.as_ref())
                .map(|l| {
                    l.children
                        .keys()
                        .filter(|k| k.starts_with('.'))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let asked = Instant::now();
            // Renamed offline (it or a folder above), not yet there: listed under the server
            // name.
            let on_server = self.wb.server_path(&node.path);
            let listed = self.dav.propfind(&on_server, Depth::One).await;
            match listed.map(|v| rebase_entries(v, &on_server, &node.path)) {
                Ok(mut entries) => {
                    self.keep_hidden(&node.path, dotted, &mut entries).await;
                    self.overlay(&node.path, &mut entries, local);
                    let mut t = lock(&self.table);
                    if t.dir_gen(dir) != gen {
                        // Changed locally while the server answered: ask again.
                        continue;
                    }
                    // Remembered on disk by `remember_listings` (every few seconds and at
                    // unmount), once per change.
                    t.apply_listing(dir, entries, asked);
                    return Ok(());
                }
                Err(DavError::NotFound(_)) => {
                    let mut t = lock(&self.table);
                    t.remove_child(node.parent, node.path.name());
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("{} no longer exists", node.path),
                    ));
                }
                Err(e) => {
                    let cut = cut_off(&e);
                    let e: Error = e.into();
                    if cut
                        && lock(&self.table)
                            .get(dir)
                            .is_some_and(|n| n.listing.is_some())
                    {
                        // Server out of reach: the last listing is better than nothing.
                        tracing::debug!(path = %node.path, error = %e, "server out of reach: using the cached listing");
                        return Ok(());
                    }
                    if cut {
                        let remembered = self.meta.listing(&node.path).or_else(|| {
                            let on_server = self.wb.server_path(&node.path);
                            (on_server != node.path)
                                .then(|| self.meta.listing(&on_server))
                                .flatten()
                                .map(|(d, v)| (d, rebase_entries(v, &on_server, &node.path)))
                        });
                        if let Some((_, mut entries)) = remembered {
                            // Not listed since the mount started: the listing of an earlier run.
                            self.merge_pending(&node.path, &mut entries);
                            entries.insert(0, node.entry.clone());
                            tracing::debug!(path = %node.path, "server out of reach: using the listing remembered from an earlier run");
                            lock(&self.table).apply_listing(dir, entries, Instant::now());
                            return Ok(());
                        }
                    }
                    tracing::warn!(path = %node.path, error = %e, "listing failed");
                    return Err(e);
                }
            }
        }
        Err(Error::new(
            ErrorKind::Busy,
            format!("{} keeps changing; try again", node.path),
        ))
    }

    /// Answers `lookup` from memory when the folder's listing is fresh; `None` when the server
    /// must be asked (then call [`Vfs::lookup`]).
    pub fn lookup_cached(&self, parent: Ino, name: &str) -> Option<Result<Attr>> {
        let t = lock(&self.table);
        let l = t.get(parent)?.listing.as_ref()?;
        if l.fetched.elapsed() >= self.cfg.dir_ttl {
            return None;
        }
        Some(
            match l
                .children
                .get(name)
                .and_then(|c| t.get(*c).map(|n| (*c, n)))
            {
                Some((c, n)) => Ok(self.attr_of(c, n)),
                None => Err(Error::new(ErrorKind::NotFound, format!("no {name:?} here"))),
            },
        )
    }

    /// Answers `getattr` from memory when the attributes are fresh; `None` otherwise.
    pub fn getattr_cached(&self, ino: Ino) -> Option<Attr> {
        let t = lock(&self.table);
        let n = t.get(ino)?;
        (n.confirmed.elapsed() < self.cfg.attr_ttl).then(|| self.attr_of(ino, n))
    }

    /// Finds `name` in folder `parent`.
    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Attr> {
        self.fresh_listing(parent).await?;
        let t = lock(&self.table);
        let child = t
            .get(parent)
            .and_then(|n| n.listing.as_ref())
            .and_then(|l| l.children.get(name).copied());
        match child.and_then(|c| t.get(c).map(|n| (c, n))) {
            Some((c, n)) => Ok(self.attr_of(c, n)),
            None => Err(Error::new(ErrorKind::NotFound, format!("no {name:?} here"))),
        }
    }

    /// Re-reads one node's attributes from the server when they are older than `attr_ttl`;
    /// the ones known when the server takes longer than [`PATIENCE`] (its answer still lands).
    async fn revalidate(&self, ino: Ino) -> Result<Node> {
        let node = self.node(ino)?;
        if node.confirmed.elapsed() < self.cfg.attr_ttl || lock(&self.orphans).contains_key(&ino) {
            return Ok(node);
        }
        if !node.linked {
            // Unlinked (deleted, or replaced by a new inode) but still open somewhere: the
            // server's file at that path is another one.
            return Ok(node);
        }
        if let Some(d) = self.wb.get(&node.path) {
            if d.state().base.is_none() {
                // Not on the server yet: the local state is the truth.
                return Ok(node);
            }
        }
        if self.wb.is_folder_pending(&node.path) {
            // Made offline, not on the server yet.
            return Ok(node);
        }
        let Some(me) = self.me.upgrade() else {
            return self.revalidate_now(ino, node).await;
        };
        let known = node.clone();
        match self
            .within_patience(move || {
                let (me, node) = (me.clone(), node.clone());
                async move { me.revalidate_now(ino, node).await }
            })
            .await
        {
            Some(r) => r,
            None => {
                tracing::debug!(path = %known.path, "the server is slow: using the attributes known");
                Ok(known)
            }
        }
    }

    /// Asks the server for one node's attributes (see [`Vfs::revalidate`]).
    async fn revalidate_now(&self, ino: Ino, node: Node) -> Result<Node> {
        let asked = Instant::now();
        let on_server = self.wb.server_path(&node.path);
        let asked_for = self.dav.propfind(&on_server, Depth::Zero).await;
        match asked_for.map(|v| rebase_entries(v, &on_server, &node.path)) {
            Ok(mut entries) => {
                let Some(e) = entries.drain(..).find(|e| e.path == node.path) else {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("no answer for {}", node.path),
                    ));
                };
                let mut t = lock(&self.table);
                if e.is_dir != node.entry.is_dir {
                    t.remove_child(node.parent, node.path.name());
                    return Err(Error::new(
                        ErrorKind::Stale,
                        format!("{} changed type", node.path),
                    ));
                }
                t.upsert(node.parent, e, asked);
                t.get(ino)
                    .cloned()
                    .ok_or_else(|| Error::new(ErrorKind::NotFound, "vanished"))
            }
            Err(DavError::NotFound(_)) => {
                lock(&self.table).remove_child(node.parent, node.path.name());
                Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{} no longer exists", node.path),
                ))
            }
            Err(e) if cut_off(&e) => {
                // Server out of reach: the last known attributes are better than an error.
                tracing::debug!(path = %node.path, error = %e, "server out of reach: using cached attributes");
                Ok(node)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Attributes of `ino`.
    pub async fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.revalidate(ino).await?;
        // Under the table lock (see `open`): the node and the local overlay agree.
        let t = lock(&self.table);
        let n = t
            .get(ino)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("unknown inode {}", ino.0)))?;
        Ok(self.attr_of(ino, n))
    }

    /// The entries of folder `ino` (without `.` and `..`), plus the parent's inode.
    pub async fn readdir(&self, ino: Ino) -> Result<(Ino, Vec<DirEntry>)> {
        self.fresh_listing(ino).await?;
        let t = lock(&self.table);
        let n = t
            .get(ino)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "folder vanished"))?;
        let mut out = Vec::new();
        if let Some(l) = &n.listing {
            for (name, c) in l.children.iter() {
                if let Some(cn) = t.get(*c) {
                    out.push(DirEntry {
                        ino: *c,
                        kind: kind_of(&cn.entry),
                        name: name.clone(),
                        attr: self.attr_of(*c, cn),
                    });
                }
            }
        }
        Ok((n.parent, out))
    }

    /// Opens a folder: takes a snapshot of its listing that `readdir_handle` pages through.
    pub async fn opendir(&self, ino: Ino) -> Result<Fh> {
        let (parent, entries) = self.readdir(ino).await?;
        if parent != ino {
            self.walked(parent);
        }
        let fh = Fh(self.next_fh.fetch_add(1, Ordering::Relaxed));
        lock(&self.dir_handles).insert(
            fh,
            DirHandle {
                parent,
                entries: Arc::new(entries),
            },
        );
        Ok(fh)
    }

    /// Notes that a folder in `parent` was opened for listing. Once [`WALK_AFTER`]
    /// subfolders of one folder were, each soon after the one before, the tree is being
    /// walked: the listings of the other subfolders are asked for ahead of the walker,
    /// [`WALK_PARALLEL`] at a time, so that it finds them ready instead of waiting for the
    /// server once per folder (on a distant server, most of the time such a walk takes).
    /// When the walker was also seen going further down (`find`, `du`, a backup), the
    /// folders below them are listed ahead too, level by level, at most [`WALK_MAX`] in all;
    /// a file manager counting what each subfolder holds goes one level down only, and gets
    /// that level only. Only what the walker opens counts: listings asked for ahead start no
    /// walk of their own.
    fn walked(&self, parent: Ino) {
        let now = Instant::now();
        let parents: Vec<Ino> = {
            let mut w = lock(&self.walks);
            w.recent.retain(|(_, at)| at.elapsed() < WALK_GAP);
            w.recent.push_back((parent, now));
            if w.recent.len() > WALK_RECENT {
                w.recent.pop_front();
            }
            w.folders.retain(|_, x| x.last.elapsed() < WALK_GAP);
            let x = w.folders.entry(parent).or_insert(Walk {
                opened: 0,
                last: now,
                ahead: false,
            });
            x.opened += 1;
            x.last = now;
            let start = x.opened >= WALK_AFTER && !x.ahead;
            x.ahead |= start;
            if !start {
                return;
            }
            w.recent.iter().map(|(p, _)| *p).collect()
        };
        if !self.reach().is_online() {
            return;
        }
        // Seen below a subfolder of `parent`: a folder opened lately whose own parent is in
        // `parent`.
        let deeper = {
            let t = lock(&self.table);
            parents
                .iter()
                .any(|p| *p != parent && t.get(*p).is_some_and(|n| n.parent == parent))
        };
        let mut folders = self.subfolders(parent, false);
        if deeper {
            // Below the subfolders the walker opened already, too.
            for c in self.subfolders(parent, true) {
                folders.extend(self.subfolders(c, false));
            }
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        if folders.is_empty() {
            return;
        }
        tracing::debug!(
            parent = parent.0,
            folders = folders.len(),
            deeper,
            "walk: listing ahead"
        );
        self.rt.spawn(async move {
            let mut queue: std::collections::VecDeque<Ino> = folders.into();
            let mut budget = WALK_MAX;
            let mut tasks = tokio::task::JoinSet::new();
            loop {
                while tasks.len() < WALK_PARALLEL && budget > 0 {
                    let Some(dir) = queue.pop_front() else {
                        break;
                    };
                    budget -= 1;
                    let me = me.clone();
                    tasks.spawn(async move {
                        if let Err(e) = me.fresh_listing(dir).await {
                            tracing::debug!(dir = dir.0, error = %e, "walk: listing ahead failed");
                            return Vec::new();
                        }
                        if deeper {
                            me.subfolders(dir, false)
                        } else {
                            Vec::new()
                        }
                    });
                }
                match tasks.join_next().await {
                    Some(Ok(below)) => queue.extend(below),
                    Some(Err(_)) => {}
                    None => break,
                }
            }
        });
    }

    /// The subfolders of `dir` with (`listed`) or without a listing younger than `dir_ttl`.
    fn subfolders(&self, dir: Ino, listed: bool) -> Vec<Ino> {
        let t = lock(&self.table);
        let Some(listing) = t.get(dir).and_then(|n| n.listing.as_ref()) else {
            return Vec::new();
        };
        listing
            .children
            .values()
            .filter(|c| {
                t.get(**c).is_some_and(|n| {
                    n.entry.is_dir
                        && !self.wb.is_folder_pending(&n.path)
                        && listed
                            == n.listing
                                .as_ref()
                                .is_some_and(|l| l.fetched.elapsed() < self.cfg.dir_ttl)
                })
            })
            .copied()
            .collect()
    }

    /// The snapshot of an open folder: its parent's inode and its entries.
    pub fn readdir_handle(&self, fh: Fh) -> Result<(Ino, Arc<Vec<DirEntry>>)> {
        lock(&self.dir_handles)
            .get(&fh)
            .map(|d| (d.parent, d.entries.clone()))
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "bad folder handle"))
    }

    /// Closes a folder handle.
    pub fn releasedir(&self, fh: Fh) {
        lock(&self.dir_handles).remove(&fh);
    }

    /// Opens a file. `write` asks for write access; `truncate` empties it (`O_TRUNC`).
    pub async fn open(&self, ino: Ino, write: bool, truncate: bool) -> Result<Opened> {
        if (write || truncate) && self.cfg.read_only {
            return Err(Error::new(ErrorKind::ReadOnly, "the mount is read-only"));
        }
        let node = self.revalidate(ino).await?;
        if node.entry.is_dir {
            return Err(Error::new(
                ErrorKind::IsADirectory,
                format!("{} is a folder", node.path),
            ));
        }
        if write || truncate {
            Self::permitted(&node, 'W', "changing this file")?;
        }
        // Snapshot the node and the local state together, under the table lock: an upload
        // that finishes updates the table before it forgets the local change, so a node read
        // here is never older than the absence of a local change.
        let (node, local) = {
            let t = lock(&self.table);
            let n = t
                .get(ino)
                .cloned()
                .ok_or_else(|| Error::new(ErrorKind::NotFound, "vanished"))?;
            let local = if write || truncate {
                self.wb.acquire(&n.path)
            } else {
                self.wb.get(&n.path)
            };
            (n, local)
        };
        let base_version = match self.base_of(&node).await {
            Ok(b) => b,
            Err(e) => {
                if let (true, Some(d)) = (write || truncate, &local) {
                    self.wb.release(d);
                }
                return Err(e);
            }
        };
        let from_local = local.is_some();
        let mut dirty = None;
        if write || truncate {
            let d = match local.clone() {
                Some(d) => {
                    if truncate {
                        let (wb, d2) = (self.wb.clone(), d.clone());
                        blocking(move || wb.truncate(&d2, 0)).await?;
                    }
                    d
                }
                None => {
                    let (wb, p, b) = (self.wb.clone(), node.path.clone(), base_version.clone());
                    let mtime = node.entry.mtime;
                    blocking(move || wb.open_existing(&p, b, truncate, mtime)).await?
                }
            };
            dirty = Some(d);
        }
        let validator = match dirty.as_ref().or(local.as_ref()) {
            Some(d) => d.validator(),
            None => node.entry.validator(),
        };
        let reader = dirty.is_none() && local.is_none();
        if reader && self.last_blocks_in_flight(base_version.version, node.entry.size) {
            let t = Instant::now();
            self.fetcher.drain_disk_writes().await;
            tracing::debug!(waited = ?t.elapsed(), "last blocks of a complete read written");
        }
        let mut waited = Duration::ZERO;
        loop {
            if let Some(o) = self.register_open(
                ino,
                &node,
                &base_version,
                from_local,
                &mut dirty,
                validator.clone(),
            ) {
                return Ok(o);
            }
            if self.renumber_under_readers(ino, &base_version) {
                // The new version is a new file (inode) for the kernel: this open fails with
                // ESTALE, on which the kernel looks the name up again and opens that one.
                if let Some(d) = &dirty {
                    self.wb.release(d);
                }
                tracing::debug!(path = %node.path, "new version opened beside readers of the old one: new inode");
                return Err(Error::new(
                    ErrorKind::Replaced,
                    format!("{} changed on the server; look it up again", node.path),
                ));
            }
            if waited.is_zero() {
                // Held by readers of the cache file (passthrough) that this open cannot
                // share (a local change other than theirs: see `share_backing`; another
                // server version was renumbered above). Later opens of this file are
                // not given to the kernel that way, so that the next attempt goes through.
                lock(&self.no_passthrough).insert(ino);
            }
            if waited >= Duration::from_secs(5) {
                if let Some(d) = &dirty {
                    self.wb.release(d);
                }
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("{} is being read by another program; try again", node.path),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
    }

    /// Counts an open of `ino` (called under the `handles` lock); answers which one it is.
    fn count_open(&self, ino: Ino) -> u64 {
        let mut opens = lock(&self.opens);
        let n = opens.entry(ino).or_default();
        *n += 1;
        *n
    }

    /// An open of another version of `ino` than the one the kernel reads directly from the
    /// cache for other handles (passthrough: the kernel then accepts only opens on that same
    /// file). The name gets a new inode for the new version, as a local file replaced by a
    /// new one: the readers keep theirs and read the old version to its end, later opens
    /// find the new inode. True when renumbered (or already renumbered by another open).
    fn renumber_under_readers(&self, ino: Ino, base: &Base) -> bool {
        if !self.passthrough.load(Ordering::Relaxed) || lock(&self.taken).contains_key(&ino) {
            return false;
        }
        // The version the readers read, as they opened it.
        let read = {
            let hs = lock(&self.handles);
            let direct: Vec<&FileVersion> = hs
                .values()
                .filter(|h| h.ino == ino && h.passthrough.is_some())
                .map(|h| &h.file)
                .collect();
            match direct.first() {
                Some(f) if direct.iter().all(|g| g.version == f.version) => (*f).clone(),
                _ => return false,
            }
        };
        if read.version == base.version {
            return false;
        }
        let mut t = lock(&self.table);
        match t.get(ino).map(|n| n.linked) {
            None => false,
            // Renumbered already by another open, or replaced or deleted meanwhile: either
            // way the name is to be looked up again.
            Some(false) => true,
            Some(true) => {
                if t.renumber(ino).is_none() {
                    return false;
                }
                // The old inode describes what its readers read.
                if let Some(n) = t.get_mut(ino) {
                    n.entry.size = read.size;
                    n.entry.etag = read.etag;
                }
                true
            }
        }
    }

    /// Opens a file for reading without waiting for anything, when that is possible: its
    /// attributes are fresh, its content version is known or quickly registered, and nothing
    /// else must finish first. `None` means: call [`Vfs::open`] (on a task that may wait).
    pub fn open_quick(&self, ino: Ino, write: bool, truncate: bool) -> Option<Result<Opened>> {
        if write || truncate {
            return None;
        }
        let (node, local) = {
            let t = lock(&self.table);
            let n = t.get(ino)?;
            if n.entry.is_dir || n.confirmed.elapsed() >= self.cfg.attr_ttl {
                return None;
            }
            (n.clone(), self.wb.get(&n.path))
        };
        let (identity, validator) = self.version_key(&node);
        let base = Base {
            version: self.cache().try_version(&identity, &validator)?,
            ..seen(&node)
        };
        let validator = match &local {
            Some(d) => d.validator(),
            None => validator,
        };
        if local.is_none() && self.last_blocks_in_flight(base.version, node.entry.size) {
            return None;
        }
        self.register_open(ino, &node, &base, local.is_some(), &mut None, validator)
            .map(Ok)
    }

    /// Only a file read completely just now has its last blocks on their way to the disk (in
    /// the memory tier); a passthrough open must wait for them. A partly cached file is not
    /// scanned block by block.
    fn last_blocks_in_flight(&self, v: crate::cache::VersionId, size: u64) -> bool {
        if !self.passthrough.load(Ordering::Relaxed) {
            return false;
        }
        let need = self.fetcher.block_count(size);
        let have = self.cache().cached_blocks(v);
        let in_memory = crate::cache::HOT_BYTES / self.cache().block_size();
        have < need && need - have <= in_memory && self.blocks_here(v, need) >= need
    }

    /// Records a new handle of `ino` unless it must wait (`None`): a clean, completely cached
    /// file opened for reading may be read by the kernel from the cache file itself
    /// (passthrough), unless it is open in the page cache mode. While it is read that way the
    /// kernel accepts only more passthrough opens of the same content, so any other open
    /// shares the file, waits, or (another server version) is renumbered by the caller (see
    /// `share_backing`). Decided and recorded under one lock: two opens of the same file
    /// never both think they are alone. `validator` is what the content opened comes from
    /// (the kernel's cached pages of an older one are dropped).
    fn register_open(
        &self,
        ino: Ino,
        node: &Node,
        base: &Base,
        from_local: bool,
        dirty: &mut Option<Arc<DirtyFile>>,
        validator: String,
    ) -> Option<Opened> {
        let reader = dirty.is_none() && !from_local;
        let (mut backing, mut passthrough) = (None, None);
        let mut backing_version = base.version;
        let seq;
        let fh = {
            let mut hs = lock(&self.handles);
            let mut direct = Vec::new();
            let mut cached = false;
            for h in hs.values().filter(|h| h.ino == ino) {
                match h.passthrough {
                    Some(v) => direct.push(v),
                    None => cached = true,
                }
            }
            let compatible = direct.iter().all(|v| *v == base.version)
                && reader
                && !lock(&self.taken).contains_key(&ino)
                && self.cache().cached_blocks(base.version)
                    >= self.fetcher.block_count(node.entry.size);
            if !(direct.is_empty() || compatible) {
                let (f, v) = self.share_backing(ino, node, base, &direct, dirty.as_ref())?;
                backing = Some(f);
                passthrough = Some(v);
                backing_version = v;
            } else {
                let allowed = !lock(&self.no_passthrough).contains(&ino);
                if self.passthrough.load(Ordering::Relaxed) && reader && !cached && allowed {
                    if let Some(f) = self.cache().hold_complete(base.version, node.entry.size) {
                        backing = Some(f);
                        passthrough = Some(base.version);
                    }
                }
            }
            let fh = Fh(self.next_fh.fetch_add(1, Ordering::Relaxed));
            seq = self.count_open(ino);
            hs.insert(
                fh,
                Handle {
                    ino,
                    dirty: dirty.take(),
                    from_local,
                    follows_local: from_local,
                    file: Self::server_file(node, base.version),
                    next_offset: 0,
                    window: 0,
                    passthrough,
                    dropped_to: 0,
                    served: false,
                    clean_open: None,
                },
            );
            fh
        };
        if reader {
            self.read_in_turn(node);
        }
        let keep_cache = {
            let mut t = lock(&self.table);
            match t.get_mut(ino) {
                Some(n) => {
                    let keep = n.kernel_etag.as_deref() == Some(validator.as_str());
                    n.kernel_etag = Some(validator);
                    keep
                }
                None => false,
            }
        };
        if reader && !keep_cache && passthrough.is_none() {
            if let Some(h) = lock(&self.handles).get_mut(&fh) {
                h.clean_open = Some(seq);
            }
        }
        Some(Opened {
            fh,
            keep_cache,
            backing,
            backing_version: backing_version.0,
        })
    }

    /// An open of `ino` while the kernel reads its cache file directly for other handles
    /// (passthrough, version in `direct`): the kernel then accepts only passthrough opens
    /// on that same file. A writer takes the file over: the cache gives it up as the
    /// start of the writer's change (no copy, no download), and the kernel's readers see
    /// every byte written from then on, as in any local file. Later opens, readers or
    /// writers of that change, share it. Anything else waits (`None`): a writer joining
    /// another change, readers of another version (which `Vfs::open` then gives a new
    /// inode: see `renumber_under_readers`). Called under
    /// the `handles` lock, so two opens never both take the file over.
    fn share_backing(
        &self,
        ino: Ino,
        node: &Node,
        base: &Base,
        direct: &[crate::cache::VersionId],
        dirty: Option<&Arc<DirtyFile>>,
    ) -> Option<(std::fs::File, crate::cache::VersionId)> {
        let v = *direct.first()?;
        if direct.iter().any(|x| *x != v) {
            return None;
        }
        let mut taken = lock(&self.taken);
        // What this open takes over (`Some`), shares as it is (`None`), or waits for
        // (`return None`).
        let give = match (taken.get(&ino), dirty) {
            (Some(t), _) if t.version != v => return None,
            // A writer of the change the file holds, or a reader: they share it. A reader of
            // the server file reads what the kernel's other readers read; a reader of a
            // local change must read that one.
            (Some(t), Some(d)) if Arc::ptr_eq(d, &t.change) => None,
            (Some(t), None)
                if self
                    .wb
                    .get(&node.path)
                    .is_none_or(|c| Arc::ptr_eq(&c, &t.change)) =>
            {
                None
            }
            (Some(_), None) => return None,
            // A new change after the last one was uploaded: the cache kept that same file
            // as the new version, which this writer takes over in turn.
            (Some(t), Some(d)) => {
                if self.cache().file_id(base.version) != Some(t.file) {
                    tracing::debug!(path = %node.path, "a writer of another change waits for the readers");
                    return None;
                }
                Some((d, base.version))
            }
            (None, None) => return None,
            (None, Some(d)) => {
                if v != base.version {
                    tracing::debug!(path = %node.path, "a writer of another version waits for the readers");
                    return None;
                }
                Some((d, v))
            }
        };
        if let Some((d, from)) = give {
            let cache = self.cache().clone();
            let size = node.entry.size;
            let moved = self.wb.take_content(d, from, |to| {
                cache
                    .surrender(from, size, to)
                    .map_err(std::io::Error::other)
            });
            match moved {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(path = %node.path, "a writer joining a change waits for the readers");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(path = %node.path, error = %e, "could not hand a file being read to its writer");
                    return None;
                }
            }
            tracing::debug!(path = %node.path, "writer took over the cache file its readers read");
            let open = d.backing_file().ok()?;
            let file = d.file_id()?;
            taken.insert(
                ino,
                Taken {
                    version: v,
                    change: d.clone(),
                    file,
                    open,
                },
            );
        }
        let t = taken.get(&ino)?;
        t.open.try_clone().ok().map(|f| (f, v))
    }

    /// Notes that `node` was opened for reading. When files of one folder are opened one
    /// after the other in name order, as `grep -r`, `cp -r`, `tar` or a file manager making
    /// previews do, the first block of each of the next [`FILES_AHEAD`] files is fetched
    /// ahead, so that the program finds them here instead of waiting for the server once per
    /// file. Cheap enough for the thread answering the kernel: the downloads run on a task.
    fn read_in_turn(&self, node: &Node) {
        use std::ops::Bound::{Excluded, Unbounded};
        let name = node.path.name();
        let now = Instant::now();
        let after = {
            let mut runs = lock(&self.file_runs);
            runs.retain(|_, r| r.last.elapsed() < WALK_GAP);
            let r = runs.entry(node.parent).or_insert(FileRun {
                name: String::new(),
                run: 0,
                last: now,
                ahead_to: String::new(),
            });
            if name > r.name.as_str() {
                r.run += 1;
            } else if name < r.name.as_str() {
                r.run = 1;
                r.ahead_to.clear();
            }
            r.name = name.to_string();
            r.last = now;
            if r.run < 2 || !self.reach().is_online() {
                return;
            }
            r.ahead_to.clone()
        };
        let picks: Vec<Node> = {
            let t = lock(&self.table);
            let Some(l) = t.get(node.parent).and_then(|n| n.listing.as_ref()) else {
                return;
            };
            l.children
                .range::<str, _>((Excluded(name), Unbounded))
                .filter_map(|(_, c)| t.get(*c))
                .filter(|n| !n.entry.is_dir)
                .take(FILES_AHEAD)
                .filter(|n| n.path.name() > after.as_str())
                .cloned()
                .collect()
        };
        let Some(last) = picks.last() else {
            return;
        };
        if let Some(r) = lock(&self.file_runs).get_mut(&node.parent) {
            r.ahead_to = last.path.name().to_string();
        }
        // Not those already here (a folder read again): no task, no disk, for them.
        let here = |n: &Node| {
            let (identity, validator) = self.version_key(n);
            self.cache()
                .known_version(&identity, &validator)
                .is_some_and(|version| {
                    self.cache().has(crate::cache::BlockKey {
                        version,
                        idx: crate::cache::BlockIdx(0),
                    })
                })
        };
        let picks: Vec<Node> = picks
            .into_iter()
            .filter(|n| {
                n.entry.size > 0
                    && n.entry.etag.is_some()
                    && self.wb.get(&n.path).is_none()
                    && !here(n)
            })
            .collect();
        if picks.is_empty() {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        self.rt.spawn(async move {
            for n in picks {
                let Ok(base) = me.base_of(&n).await else {
                    continue;
                };
                let f = Self::server_file(&n, base.version);
                if let Err(e) = me.fetcher.ensure(&f, 0..0, 0..1).await {
                    tracing::debug!(path = %n.path, error = %e, "fetching ahead failed");
                }
            }
        });
    }

    /// Marks a file executable or not (`chmod`), here and in the meta store.
    async fn set_exec(&self, path: &RemotePath, on: bool) -> Result<()> {
        let changed = {
            let mut x = lock(&self.execs);
            if on {
                x.insert(path.clone())
            } else {
                x.remove(path)
            }
        };
        if changed {
            let (meta, p) = (self.meta.clone(), path.clone());
            blocking(move || {
                meta.set_exec(&p, on);
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Executable marks follow a rename (of a file or of a whole folder).
    fn move_execs(&self, from: &RemotePath, to: &RemotePath) {
        let mut x = lock(&self.execs);
        // A file replaced by the rename loses its mark with its content.
        let replaced = x.remove(to);
        let moved: Vec<RemotePath> = x.iter().filter(|p| p.is_within(from)).cloned().collect();
        if replaced {
            self.meta.set_exec(to, false);
        }
        if moved.is_empty() {
            return;
        }
        for p in moved {
            x.remove(&p);
            if let Some(q) = p.rebased(from, to) {
                x.insert(q);
            }
        }
        drop(x);
        self.meta.rename_execs(from, to);
    }

    /// What is kept of files on this device only (modification times a server cannot store,
    /// executable marks) follows a rename.
    fn move_local_marks(&self, from: &RemotePath, to: &RemotePath) {
        self.move_mtimes(from, to);
        self.move_execs(from, to);
    }

    /// Recorded modification times follow a rename (of a file or of a whole folder).
    fn move_mtimes(&self, from: &RemotePath, to: &RemotePath) {
        if self.cfg.nextcloud {
            return;
        }
        let mut m = lock(&self.mtimes);
        let moved: Vec<RemotePath> = m.keys().filter(|p| p.is_within(from)).cloned().collect();
        for p in moved {
            if let (Some(v), Some(q)) = (m.remove(&p), p.rebased(from, to)) {
                m.insert(q, v);
            }
        }
        drop(m);
        self.meta.rename_mtimes(from, to);
    }

    /// Adds what exists only here to a listing of `dir`: files waiting for their first upload
    /// and folders made offline; leaves out the files deleted here that wait to be deleted on
    /// the server.
    fn merge_pending(&self, dir: &RemotePath, entries: &mut Vec<Entry>) {
        self.overlay(dir, entries, self.wb.children_of(dir));
    }

    /// [`Self::merge_pending`] with `local`, the pending files of `dir` taken earlier.
    fn overlay(
        &self,
        dir: &RemotePath,
        entries: &mut Vec<Entry>,
        local: Vec<(String, crate::writeback::DirtyState)>,
    ) {
        if self.wb.has_moves() {
            // Renamed here, not yet there: gone from the old name, present under the new.
            let (gone, came) = self.wb.moves_in(dir);
            entries.retain(|e| e.path == *dir || !gone.contains(e.path.name()));
            for m in came {
                if !entries.iter().any(|e| e.path == m.to) {
                    entries.push(Entry {
                        etag: m.base.etag.clone(),
                        is_dir: m.is_dir,
                        ..local_entry(
                            &m.to,
                            m.base.size,
                            m.base.mtime.map_or(SystemTime::now(), |t| {
                                UNIX_EPOCH + Duration::from_secs(t.max(0) as u64)
                            }),
                        )
                    });
                }
            }
        }
        merge_local(entries, local);
        merge_folders(entries, dir, self.wb.folders_in(dir));
        let removed = self.wb.rmdirs_in(dir);
        if !removed.is_empty() {
            // Unless made again here since.
            entries.retain(|e| !e.is_dir || !removed.contains(e.path.name()));
        }
        // Deletes are recorded under server names (they are made before the renames).
        let deleted = self.wb.deletes_in(&self.wb.server_path(dir));
        if !deleted.is_empty() {
            // Unless made again here since.
            entries.retain(|e| {
                e.is_dir
                    || !deleted.contains(e.path.name())
                    || self.wb.get(&e.path).is_some()
                    || self.wb.moved_from(&e.path).is_some()
            });
        }
    }

    /// Blocks of version `v` (of `need`) on disk or in memory.
    fn blocks_here(&self, v: crate::cache::VersionId, need: u64) -> u64 {
        (0..need)
            .filter(|i| {
                let key = crate::cache::BlockKey {
                    version: v,
                    idx: crate::cache::BlockIdx(*i),
                };
                self.cache().has(key) || self.cache().is_hot(key)
            })
            .count() as u64
    }

    /// The OS adapter can read cached files directly (FUSE passthrough): `open` may offer a
    /// backing file.
    pub fn set_passthrough(&self, available: bool) {
        self.passthrough.store(available, Ordering::Relaxed);
    }

    /// The adapter could not use the backing file `open` offered for `fh`.
    pub fn passthrough_refused(&self, fh: Fh) {
        let v = lock(&self.handles)
            .get_mut(&fh)
            .and_then(|h| h.passthrough.take());
        if let Some(v) = v {
            self.cache().unhold(v);
        }
    }

    /// The cache version of a node's server content.
    async fn base_of(&self, node: &Node) -> Result<Base> {
        let (identity, validator) = self.version_key(node);
        let cache = self.cache().clone();
        let version = blocking(move || Ok(cache.version(&identity, &validator)?)).await?;
        Ok(Base {
            version,
            ..seen(node)
        })
    }

    /// A node's server content, as cache version `version`.
    fn server_file(node: &Node, version: crate::cache::VersionId) -> FileVersion {
        FileVersion {
            path: node.path.clone(),
            etag: node.entry.etag.clone(),
            size: node.entry.size,
            version,
        }
    }

    /// The block cache's key of a node's server content: (identity, validator).
    fn version_key(&self, node: &Node) -> (String, String) {
        (
            format!("{}\n{}", self.cfg.cache_identity, node.path.as_str()),
            node.entry.validator(),
        )
    }

    /// Reads up to `size` bytes at `offset`.
    pub async fn read(&self, fh: Fh, offset: u64, size: u32) -> Result<Bytes> {
        tracing::trace!(fh = fh.0, offset, size, "read");
        let (ino, own) = {
            let hs = lock(&self.handles);
            let h = hs
                .get(&fh)
                .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "bad file handle"))?;
            (h.ino, h.dirty.clone())
        };
        let dirty = match own {
            Some(d) => Some(d),
            None => {
                let at = lock(&self.table)
                    .get(ino)
                    .map(|n| (n.path.clone(), n.linked));
                at.and_then(|(path, linked)| self.own_change(ino, &path, linked))
            }
        };
        match dirty {
            Some(d) => self.read_dirty(&d, offset, size).await,
            None => self.read_clean(fh, offset, size).await,
        }
    }

    /// Reads a changed file: local bytes, with ranges still on the server fetched from its
    /// base version first.
    async fn read_dirty(&self, d: &Arc<DirtyFile>, offset: u64, size: u32) -> Result<Bytes> {
        let end = offset + size as u64;
        let missing = self.wb.missing(d, offset, end);
        if !missing.is_empty() {
            let st = d.state();
            if let Some(base) = st.base {
                let fv = FileVersion {
                    path: st.path.clone(),
                    etag: base.etag.clone(),
                    size: base.size,
                    version: base.version,
                };
                for (a, b) in missing {
                    let data = self.read_version(&fv, a, (b - a) as u32, 0).await?;
                    let (wb, d2) = (self.wb.clone(), d.clone());
                    blocking(move || wb.fill(&d2, a, &data)).await?;
                }
            }
        }
        let (wb, d2) = (self.wb.clone(), d.clone());
        let v = blocking(move || wb.read_local(&d2, offset, size as usize)).await?;
        Ok(Bytes::from(v))
    }

    async fn read_clean(&self, fh: Fh, offset: u64, size: u32) -> Result<Bytes> {
        // A handle opened while the file had local changes reads what is now on the server.
        let stale = lock(&self.handles)
            .get(&fh)
            .map(|h| h.from_local.then_some(h.ino))
            .unwrap_or(None);
        if let Some(ino) = stale {
            let node = self.node(ino)?;
            let base = self.base_of(&node).await?;
            if let Some(h) = lock(&self.handles).get_mut(&fh) {
                h.file = FileVersion {
                    path: node.path.clone(),
                    etag: node.entry.etag.clone(),
                    size: node.entry.size,
                    version: base.version,
                };
                h.from_local = false;
            }
        }
        let (file, ahead, drop) = {
            let mut hs = lock(&self.handles);
            let h = hs
                .get_mut(&fh)
                .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "bad file handle"))?;
            let step = self.sequence(h, offset, size);
            let drop = step.apply(h);
            (h.file.clone(), h.window, drop)
        };
        if let Some(d) = drop {
            self.invalidate(vec![d]);
        }
        let mut file = file;
        let mut read = self.read_version(&file, offset, size, ahead).await;
        // Each turn follows a newer version; a server that keeps changing (or keeps failing
        // the etag check) ends the read after a few.
        for _ in 0..4 {
            let newer = match read {
                Ok(data) => match self.answered_from(fh, &file) {
                    None => return Ok(data),
                    Some(newer) => newer,
                },
                Err(e) if e.kind == ErrorKind::Stale => {
                    let newer = if self.follows_local(fh) {
                        self.follow_local(fh).await?
                    } else {
                        self.follow_new(fh, &file).await
                    };
                    match newer {
                        Some(newer) => newer,
                        None => return Err(self.stale(fh, e)),
                    }
                }
                Err(e) => return Err(e),
            };
            file = newer;
            read = self.read_version(&file, offset, size, 0).await;
        }
        read.map_err(|e| self.stale(fh, e))
    }

    /// A read of `file` through `fh` is answered, unless the handle followed a newer
    /// version meanwhile (`follow_new`, for another read of it): then that one (`Some`) is
    /// read instead.
    fn answered_from(&self, fh: Fh, file: &FileVersion) -> Option<FileVersion> {
        let mut hs = lock(&self.handles);
        let h = hs.get_mut(&fh)?;
        if h.file.version != file.version {
            return Some(h.file.clone());
        }
        h.served = true;
        None
    }

    /// A handle opened while the file had local changes, which became a newer server version
    /// meanwhile (a later upload), follows it instead of failing.
    async fn follow_local(&self, fh: Fh) -> Result<Option<FileVersion>> {
        let Some(ino) = lock(&self.handles).get(&fh).map(|h| h.ino) else {
            return Ok(None);
        };
        let (_, file) = self.server_version_now(ino).await?;
        if let Some(h) = lock(&self.handles).get_mut(&fh) {
            h.file = file.clone();
        }
        Ok(Some(file))
    }

    /// The version of file `ino` on the server now (its attributes asked for again), with
    /// its node: what a handle that met a change follows.
    async fn server_version_now(&self, ino: Ino) -> Result<(Node, FileVersion)> {
        self.unconfirm(ino);
        let node = self.revalidate(ino).await?;
        let base = self.base_of(&node).await?;
        let file = Self::server_file(&node, base.version);
        Ok((node, file))
    }

    /// A handle whose reads answered nothing yet, opened when the kernel held no page of the
    /// file and nobody opened it since (`Handle::clean_open`), follows a newer server version
    /// instead of failing: no program saw a byte of the older one through it, so it sees the
    /// new one from its start (a program opening a file a colleague saved a moment after
    /// the folder was listed). The kernel still has the older size: a shorter version shows
    /// in the short answers; for a longer one the kernel is told to ask for the size again,
    /// so that it does not stop at the old end. `None`: the read fails.
    async fn follow_new(&self, fh: Fh, old: &FileVersion) -> Option<FileVersion> {
        let eligible = |hs: &HashMap<Fh, Handle>| -> Option<Ino> {
            let h = hs.get(&fh)?;
            let seq = h.clean_open?;
            let alone = hs.iter().all(|(k, o)| *k == fh || o.ino != h.ino);
            let latest = lock(&self.opens).get(&h.ino).copied() == Some(seq);
            (!h.served && alone && latest).then_some(h.ino)
        };
        let ino = {
            let hs = lock(&self.handles);
            match hs.get(&fh) {
                // Another read of this handle followed the newer version already.
                Some(h) if h.file.version != old.version => return Some(h.file.clone()),
                _ => eligible(&hs)?,
            }
        };
        let (node, newer) = self.server_version_now(ino).await.ok()?;
        if newer.version == old.version {
            return None;
        }
        {
            let mut hs = lock(&self.handles);
            if let Some(h) = hs.get(&fh).filter(|h| h.file.version != old.version) {
                return Some(h.file.clone());
            }
            eligible(&hs)?;
            hs.get_mut(&fh)?.file = newer.clone();
        }
        tracing::debug!(path = %node.path, "changed on the server before the first bytes were read: reading the new version");
        if newer.size > old.size {
            self.invalidate(vec![Invalidation::Attributes(ino)]);
        }
        Some(newer)
    }

    /// A read that meets a change on the server fails (`ESTALE`) rather than mix versions;
    /// the next open or stat asks the server again at once.
    fn stale(&self, fh: Fh, e: Error) -> Error {
        if e.kind == ErrorKind::Stale {
            if let Some(ino) = lock(&self.handles).get(&fh).map(|h| h.ino) {
                self.unconfirm(ino);
                self.invalidate(vec![Invalidation::Inode(ino)]);
            }
        }
        e
    }

    /// The local change of file `ino` at `path`: the one of a file deleted while open (see
    /// `orphans`), else the one pending at its path while the path still leads to it
    /// (`Node::linked`). An unlinked file (replaced by a rename, renumbered) has none of its
    /// own: what is pending at its old path is another file's, and its descriptors keep
    /// reading the version they opened, as a local file's do.
    fn own_change(&self, ino: Ino, path: &RemotePath, linked: bool) -> Option<Arc<DirtyFile>> {
        let orphan = lock(&self.orphans).get(&ino).cloned();
        orphan.or_else(|| linked.then(|| self.wb.get(path)).flatten())
    }

    /// Makes the next use of `ino`'s attributes ask the server first.
    fn unconfirm(&self, ino: Ino) {
        if let Some(n) = lock(&self.table).get_mut(ino) {
            let stale = self.cfg.attr_ttl + Duration::from_secs(1);
            n.confirmed = Instant::now().checked_sub(stale).unwrap_or(n.confirmed);
        }
    }

    fn follows_local(&self, fh: Fh) -> bool {
        lock(&self.handles)
            .get(&fh)
            .map(|h| h.follows_local)
            .unwrap_or(false)
    }

    /// What a read of `size` bytes at `offset` changes in a handle's sequential state: the
    /// read-ahead window doubles (from 4 blocks up to the configured read-ahead) while reads
    /// continue where the last ones ended (from the second read on), allowing the kernel's
    /// slight reordering; the page cache behind a sequential reader is dropped (see
    /// [`DROP_BEHIND`]).
    fn sequence(&self, h: &Handle, offset: u64, size: u32) -> Step {
        let bs = self.cache().block_size();
        let end = (offset + size as u64).min(h.file.size);
        let near = offset + 2 * bs >= h.next_offset && offset <= h.next_offset + 2 * bs;
        let max_blocks = (self.cfg.max_readahead / bs).max(1);
        // A first read is no pattern yet (a file manager sniffing the first bytes of every
        // file, `file`, a thumbnailer): read-ahead starts with the read that continues it.
        let window = if near && h.next_offset > 0 {
            (h.window * 2).clamp(4, max_blocks)
        } else {
            0
        };
        let next_offset = if near { h.next_offset.max(end) } else { end };
        let behind = end.saturating_sub(DROP_BEHIND);
        // Without passthrough the next open reads what the kernel kept: nothing is dropped.
        let drop_to = (near
            && behind >= h.dropped_to + DROP_SLICE
            && (self.passthrough.load(Ordering::Relaxed)))
        .then_some(behind);
        Step {
            window,
            next_offset,
            drop_to,
        }
    }

    /// Answers a read at once when its bytes are in memory (a read-ahead that arrived in
    /// time): no task, no waiting, the read-ahead kept going. `None` when [`Self::read`] must
    /// do the work (also for files with local changes). Must run inside the runtime (it may
    /// start downloads).
    pub fn read_ready(&self, fh: Fh, offset: u64, size: u32) -> Option<Bytes> {
        let ino = lock(&self.handles).get(&fh)?.ino;
        // Changed locally since it was opened (another handle wrote): the slow path reads the
        // local bytes.
        let path = lock(&self.table).get(ino)?.path.clone();
        if self.wb.get(&path).is_some() {
            return None;
        }
        let mut hs = lock(&self.handles);
        let h = hs.get_mut(&fh)?;
        if h.dirty.is_some() || h.from_local || h.passthrough.is_some() {
            return None;
        }
        let step = self.sequence(h, offset, size);
        let data = self
            .fetcher
            .read_ready(&h.file, offset, size, step.window)?;
        h.served = true;
        let behind = step.apply(h);
        drop(hs);
        if let Some(d) = behind {
            self.invalidate(vec![d]);
        }
        Some(data)
    }

    /// Reads from one server version through the block cache, with `ahead` blocks of
    /// read-ahead.
    async fn read_version(
        &self,
        file: &FileVersion,
        offset: u64,
        size: u32,
        ahead: u64,
    ) -> Result<Bytes> {
        self.fetcher.read(file, offset, size, ahead).await
    }

    /// True when closing `fh` needs no disk work (a reader, or a writer whose data `flush`
    /// already made durable): [`Self::release_blocking`] then returns at once.
    pub fn release_is_quick(&self, fh: Fh) -> bool {
        match lock(&self.handles).get(&fh) {
            Some(h) => h
                .dirty
                .as_ref()
                .is_none_or(|d| !d.is_external() && self.wb.is_persisted(d)),
            None => true,
        }
    }

    /// Closes a handle: a writer's changes are made durable and scheduled for upload. On a
    /// thread that may block on the disk (unless [`Self::release_is_quick`]).
    pub fn release_blocking(&self, fh: Fh) -> Result<()> {
        match self.take_handle(fh) {
            Some(d) => {
                let res = self.wb.persist(&d);
                self.closed(&d, res)
            }
            None => Ok(()),
        }
    }

    /// Forgets a handle; answers its pending change when it was a writer.
    fn take_handle(&self, fh: Fh) -> Option<Arc<DirtyFile>> {
        let (h, last) = {
            let mut hs = lock(&self.handles);
            let h = hs.remove(&fh)?;
            let last = !hs.values().any(|o| o.ino == h.ino);
            (h, last)
        };
        if last {
            lock(&self.orphans).remove(&h.ino);
            lock(&self.taken).remove(&h.ino);
        }
        if let Some(v) = h.passthrough {
            self.cache().unhold(v);
        }
        h.dirty
    }

    /// A writer closed: its upload may be scheduled. `persisted` is the outcome of making it
    /// durable (a quota refusal is reported by `fsync`, not here).
    fn closed(&self, d: &DirtyFile, persisted: Result<()>) -> Result<()> {
        self.wb.release(d);
        match persisted {
            Err(e) if e.kind != ErrorKind::NoSpace => {
                tracing::error!(error = %e, "could not make a closed file durable");
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// `fsync()`, and `close()` of one descriptor: returns once the handle's data is durable
    /// locally; fails with `NoSpace` when the server already refused the file for quota. On a
    /// thread that may block on the disk.
    pub fn fsync_blocking(&self, fh: Fh) -> Result<()> {
        let dirty = lock(&self.handles).get(&fh).and_then(|h| h.dirty.clone());
        match dirty {
            Some(d) => self.wb.persist(&d),
            None => Ok(()),
        }
    }

    fn writer(&self, fh: Fh) -> Result<Arc<DirtyFile>> {
        lock(&self.handles)
            .get(&fh)
            .and_then(|h| h.dirty.clone())
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "file not open for writing"))
    }

    /// Writes `data` at `offset` through a handle opened for writing, on a thread that may
    /// block on the disk.
    pub fn write_blocking(&self, fh: Fh, offset: u64, data: &[u8]) -> Result<u32> {
        let d = self.writer(fh)?;
        self.wb.write(&d, offset, data)?;
        Ok(data.len() as u32)
    }

    /// `fallocate()` of `len` bytes at `offset` through a handle opened for writing, on a
    /// thread that may block on the disk. The server reserves no room ahead, so what remains
    /// is what a program can see: the size (`Extend`) and zeros (`Zero`).
    pub fn allocate_blocking(&self, fh: Fh, offset: u64, len: u64, how: Allocate) -> Result<()> {
        let d = self.writer(fh)?;
        let end = offset.checked_add(len).ok_or_else(|| {
            Error::new(ErrorKind::InvalidArgument, "the range ends past any size")
        })?;
        let size = self.wb.size(&d);
        match how {
            Allocate::KeepSize => Ok(()),
            Allocate::Extend if end > size => self.wb.truncate(&d, end),
            Allocate::Extend => Ok(()),
            Allocate::Zero { keep_size } => {
                // Zeros written over what the file holds; past its end, a longer file reads
                // zeros anyway.
                let to = end.min(size);
                let zeros = vec![0u8; to.saturating_sub(offset).min(1 << 20) as usize];
                let mut pos = offset;
                while pos < to {
                    let n = (to - pos).min(zeros.len() as u64) as usize;
                    self.wb.write(&d, pos, &zeros[..n])?;
                    pos += n as u64;
                }
                if !keep_size && end > size {
                    self.wb.truncate(&d, end)?;
                }
                Ok(())
            }
        }
    }

    /// Changes size and/or modification time.
    pub async fn setattr(
        &self,
        ino: Ino,
        size: Option<u64>,
        mtime: Option<SystemTime>,
        mode: Option<u32>,
    ) -> Result<Attr> {
        let node = self.revalidate(ino).await?;
        if node.entry.is_dir {
            if size.is_some() {
                return Err(Error::new(ErrorKind::IsADirectory, "a folder has no size"));
            }
            return Ok(self.attr_of(ino, &node));
        }
        if self.cfg.read_only && (size.is_some() || mtime.is_some() || mode.is_some()) {
            return Err(Error::new(ErrorKind::ReadOnly, "the mount is read-only"));
        }
        let orphan = lock(&self.orphans).get(&ino).cloned();
        if let Some(d) = orphan {
            // Deleted, still open: its local copy only.
            if let Some(sz) = size {
                let (wb, d2) = (self.wb.clone(), d.clone());
                blocking(move || wb.truncate(&d2, sz)).await?;
            }
            if let Some(t) = mtime {
                self.wb.set_mtime(&d, t);
            }
            return Ok(self.attr_of(ino, &node));
        }
        if let Some(m) = mode {
            // Only "executable or not" is kept (on this device); other bits are fixed.
            self.set_exec(&node.path, m & 0o111 != 0).await?;
        }
        if size.is_some() {
            Self::permitted(&node, 'W', "changing this file")?;
        }
        if let Some(sz) = size {
            let d = match self.wb.acquire(&node.path) {
                Some(d) => d,
                None => {
                    let base = self.base_of(&node).await?;
                    let (wb, p) = (self.wb.clone(), node.path.clone());
                    let mt = node.entry.mtime;
                    blocking(move || wb.open_existing(&p, base, false, mt)).await?
                }
            };
            let (wb, d2) = (self.wb.clone(), d.clone());
            let res = blocking(move || {
                wb.truncate(&d2, sz)?;
                wb.persist(&d2)
            })
            .await;
            self.wb.release(&d);
            res?;
        }
        if let Some(t) = mtime {
            match self.wb.get(&node.path) {
                Some(d) => {
                    self.wb.set_mtime(&d, t);
                    let wb = self.wb.clone();
                    blocking(move || wb.persist(&d)).await?;
                }
                None => {
                    if self.cfg.nextcloud {
                        if let Err(e) = self.dav.set_mtime(&node.path, t).await {
                            tracing::debug!(path = %node.path, error = %e, "server did not take the mtime");
                        }
                        if let Some(n) = lock(&self.table).get_mut(ino) {
                            n.entry.mtime = t;
                        }
                    } else if let Some(etag) = node.entry.etag.as_deref().map(strong_etag) {
                        self.meta.set_mtime(&node.path, etag, t);
                        lock(&self.mtimes).insert(node.path.clone(), (etag.to_string(), t));
                    }
                }
            }
        }
        let n = self.node(ino)?;
        Ok(self.attr_of(ino, &n))
    }

    fn child(&self, parent: Ino, name: &str) -> Option<(Ino, Node)> {
        let t = lock(&self.table);
        let c = t
            .get(parent)?
            .listing
            .as_ref()?
            .children
            .get(name)
            .copied()?;
        t.get(c).map(|n| (c, n.clone()))
    }

    /// Refuses here what the server's permissions for a node (its `oc:permissions` letter
    /// `letter`) do not allow, a share received read-only say, rather than accept a change
    /// the server refuses at upload. A node without permissions (a plain WebDAV server, a
    /// file made here and not uploaded yet) allows everything.
    fn permitted(node: &Node, letter: char, doing: &str) -> Result<()> {
        match node.entry.permissions.as_deref() {
            Some(p) if !p.contains(letter) => Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{}: {doing} is not allowed by the server (a share received read-only?)",
                    node.path
                ),
            )),
            _ => Ok(()),
        }
    }

    fn writable(&self) -> Result<()> {
        if self.cfg.read_only {
            Err(Error::new(ErrorKind::ReadOnly, "the mount is read-only"))
        } else {
            Ok(())
        }
    }

    /// The path of a new entry `name` in `parent`: the mount is writable, the name valid and
    /// free.
    async fn new_child_path(&self, parent: Ino, name: &str, is_dir: bool) -> Result<RemotePath> {
        self.writable()?;
        self.check_server_name(name, is_dir)?;
        self.fresh_listing(parent).await?;
        if self.child(parent, name).is_some() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{name:?} exists"),
            ));
        }
        let folder = self.node(parent)?;
        if is_dir {
            Self::permitted(&folder, 'K', "making a folder")?;
        } else if !crate::writeback::is_excluded(name) {
            // An editor's lock or swap file never goes to the server: allowed anywhere.
            Self::permitted(&folder, 'C', "adding a file")?;
        }
        Ok(folder.path.join(name))
    }

    /// Creates and opens a new file. It exists locally at once and on the server after its
    /// upload. `exec`: the program created it executable (a mode with an x bit, as a compiler
    /// writing a program or `cp` copying a script does); kept on this device, like `chmod +x`.
    pub async fn create(&self, parent: Ino, name: &str, exec: bool) -> Result<(Attr, Opened)> {
        let path = self.new_child_path(parent, name, false).await?;
        // A mark left by a file of that name deleted elsewhere does not pass to a new one.
        self.set_exec(&path, exec).await?;
        tracing::debug!(%path, "create");
        let (wb, p) = (self.wb.clone(), path.clone());
        let d = blocking(move || wb.create(&p)).await?;
        let st = d.state();
        let ino = {
            let mut t = lock(&self.table);
            let ino = t.upsert(parent, local_entry(&path, 0, st.mtime), Instant::now());
            t.add_child(parent, name, ino);
            if let Some(n) = t.get_mut(ino) {
                n.kernel_etag = Some(d.validator());
            }
            ino
        };
        let fh = Fh(self.next_fh.fetch_add(1, Ordering::Relaxed));
        let mut hs = lock(&self.handles);
        self.count_open(ino);
        hs.insert(
            fh,
            Handle {
                ino,
                dirty: Some(d),
                from_local: true,
                follows_local: true,
                file: FileVersion {
                    path: path.clone(),
                    etag: None,
                    size: 0,
                    version: crate::cache::VersionId(-1),
                },
                next_offset: 0,
                window: 0,
                passthrough: None,
                dropped_to: 0,
                served: true,
                clean_open: None,
            },
        );
        drop(hs);
        let n = self.node(ino)?;
        Ok((
            self.attr_of(ino, &n),
            Opened {
                fh,
                keep_cache: true,
                backing: None,
                backing_version: -1,
            },
        ))
    }

    /// Creates a folder on the server.
    pub async fn mkdir(&self, parent: Ino, name: &str) -> Result<Attr> {
        let path = self.new_child_path(parent, name, true).await?;
        tracing::debug!(%path, "mkdir");
        self.send_earlier_changes().await;
        let mut made = self.dav.mkcol(&path).await;
        if matches!(&made, Err(e) if cut_off(e)) && self.dav.is_folder(&path).await {
            // Made with its answer lost.
            made = Ok(());
        }
        let made_here = match made {
            Ok(()) => false,
            Err(DavError::Status { status: 405, .. }) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("{path} exists on the server"),
                ))
            }
            // Also when its parent was made offline and is not on the server yet.
            Err(e)
                if cut_off(&e)
                    || (matches!(e, DavError::Status { status: 409, .. })
                        && path.parent().is_some_and(|p| self.wb.is_folder_pending(&p))) =>
            {
                let (wb, p) = (self.wb.clone(), path.clone());
                blocking(move || wb.add_folder(&p)).await?;
                tracing::info!(%path, "folder made here while the server is out of reach; made there once it is back");
                true
            }
            Err(e) => return Err(e.into()),
        };
        let entry = if made_here {
            None
        } else {
            match self.dav.propfind(&path, Depth::Zero).await {
                Ok(v) => v.into_iter().find(|e| e.path == path),
                Err(_) => None,
            }
        }
        .unwrap_or_else(|| Entry {
            is_dir: true,
            ..local_entry(&path, 0, SystemTime::now())
        });
        let mut t = lock(&self.table);
        let ino = t.upsert(parent, entry, Instant::now());
        t.add_child(parent, name, ino);
        if let Some(n) = t.get_mut(ino) {
            // A new folder is empty: no need to ask the server for its listing.
            n.listing = Some(crate::meta::Listing {
                children: Default::default(),
                fetched: Instant::now(),
            });
        }
        let n = t
            .get(ino)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::Io, "vanished"))?;
        drop(t);
        Ok(self.attr_of(ino, &n))
    }

    /// Drops the local change of file `ino` at `path` (deleted, or replaced by a rename);
    /// answers its state. A writer that still has it open keeps it for its descriptors,
    /// which keep its data file open (what they write and read is theirs, and goes nowhere).
    async fn drop_change(
        &self,
        ino: Ino,
        path: &RemotePath,
    ) -> Option<crate::writeback::DirtyState> {
        let (d, st) = self.wb.remove(path).await?;
        if lock(&self.handles)
            .values()
            .any(|h| h.ino == ino && h.dirty.is_some())
        {
            lock(&self.orphans).insert(ino, d);
        }
        Some(st)
    }

    /// Deletes a file: a file never uploaded is dropped locally, otherwise the server copy is
    /// deleted (only if it is still the version we know: a newer server copy is kept).
    pub async fn unlink(&self, parent: Ino, name: &str) -> Result<()> {
        self.writable()?;
        self.fresh_listing(parent).await?;
        let (ino, node) = self
            .child(parent, name)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no {name:?} here")))?;
        if node.entry.is_dir {
            return Err(Error::new(
                ErrorKind::IsADirectory,
                format!("{} is a folder", node.path),
            ));
        }
        Self::permitted(&node, 'D', "deleting")?;
        tracing::debug!(path = %node.path, "unlink");
        let dropped = self.drop_change(ino, &node.path).await;
        // Read the etag after the removal: an upload that finished meanwhile changed it.
        let on_server = match &dropped {
            Some(st) => st.base.clone(),
            None => Some(seen(&self.node(ino).unwrap_or(node.clone()))),
        };
        // Renamed here while the server was out of reach, not there yet: deleted there under
        // its server name, and not renamed at all.
        let server_path = if self.wb.has_moves() {
            let (wb, p) = (self.wb.clone(), node.path.clone());
            blocking(move || {
                Ok(match wb.cancel_move(&p)? {
                    Some(m) => m.from,
                    // Inside a folder renamed offline: deleted before that rename is made.
                    None => wb.server_path(&p),
                })
            })
            .await?
        } else {
            node.path.clone()
        };
        if let Some(b) = on_server {
            match crate::writeback::delete_if_unchanged(&self.dav, &server_path, false, &b).await {
                Ok(()) | Err(DavError::NotFound(_)) => {}
                Err(DavError::PreconditionFailed(_)) => {
                    tracing::warn!(path = %node.path, "not deleted on the server: it changed there meanwhile");
                    lock(&self.table).invalidate_listing(parent);
                    return Ok(());
                }
                Err(e) if cut_off(&e) => {
                    // Deleted here now, there once it answers (if it is still this version).
                    let (wb, p) = (self.wb.clone(), server_path.clone());
                    blocking(move || wb.add_delete(&p, b)).await?;
                    tracing::info!(path = %node.path, "deleted here while the server is out of reach; deleted there once it is back");
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.set_exec(&node.path, false).await?;
        let mut t = lock(&self.table);
        t.remove_child(parent, name);
        if let Some(n) = t.get_mut(ino) {
            n.kernel_etag = None;
        }
        Ok(())
    }

    /// Deletes an empty folder (`NotEmpty` otherwise, checked on the server too, since a
    /// DELETE of a folder is recursive there).
    pub async fn rmdir(&self, parent: Ino, name: &str) -> Result<()> {
        self.writable()?;
        self.fresh_listing(parent).await?;
        let (ino, node) = self
            .child(parent, name)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no {name:?} here")))?;
        if !node.entry.is_dir {
            return Err(Error::new(
                ErrorKind::NotADirectory,
                format!("{} is a file", node.path),
            ));
        }
        Self::permitted(&node, 'D', "deleting")?;
        self.ensure_empty(ino, &node.path).await?;
        tracing::debug!(path = %node.path, "rmdir");
        if self.wb.is_folder_pending(&node.path) {
            // Made offline and never on the server: gone here is gone.
            let (wb, p) = (self.wb.clone(), node.path.clone());
            blocking(move || {
                wb.forget_folder(&p);
                Ok(())
            })
            .await?;
            lock(&self.table).remove_child(parent, name);
            return Ok(());
        }
        match self.dav.delete(&node.path, true, None).await {
            Ok(()) | Err(DavError::NotFound(_)) => {}
            Err(e) if cut_off(&e) => {
                // Removed here now, there once it answers (if still empty there).
                let (wb, p) = (self.wb.clone(), node.path.clone());
                blocking(move || wb.add_rmdir(&p)).await?;
                tracing::info!(path = %node.path, "folder removed here while the server is out of reach; removed there once it is back");
            }
            Err(e) => return Err(e.into()),
        }
        lock(&self.table).remove_child(parent, name);
        Ok(())
    }

    async fn ensure_empty(&self, ino: Ino, path: &RemotePath) -> Result<()> {
        if self.wb.has_below(path) {
            return Err(Error::new(
                ErrorKind::NotEmpty,
                format!("{path} is not empty"),
            ));
        }
        // Asked again (a DELETE of a folder is recursive on the server); while the server is
        // out of reach, the listing known here.
        self.refresh_listing(ino, true).await?;
        let empty = lock(&self.table)
            .get(ino)
            .and_then(|n| n.listing.as_ref().map(|l| l.children.is_empty()))
            .unwrap_or(false);
        if empty {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::NotEmpty,
                format!("{path} is not empty"),
            ))
        }
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a file there (POSIX rules: a
    /// folder only replaces an empty folder). `no_replace` fails if the target exists.
    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        self.writable()?;
        let is_dir = self
            .child(parent, name)
            .and_then(|(i, _)| self.node(i).ok())
            .map(|n| n.entry.is_dir)
            .unwrap_or(false);
        self.check_server_name(new_name, is_dir)?;
        self.fresh_listing(parent).await?;
        self.fresh_listing(new_parent).await?;
        let (ino, src) = self
            .child(parent, name)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no {name:?} here")))?;
        let to = self.node(new_parent)?.path.join(new_name);
        if to == src.path {
            return Ok(());
        }
        if src.entry.is_dir && to.as_str().starts_with(&format!("{}/", src.path.as_str())) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "cannot move a folder into itself",
            ));
        }
        let target = self.child(new_parent, new_name);
        Self::permitted(&src, 'N', "renaming")?;
        if new_parent != parent {
            Self::permitted(&src, 'V', "moving")?;
            let dest = self.node(new_parent)?;
            Self::permitted(&dest, if src.entry.is_dir { 'K' } else { 'C' }, "adding")?;
        }
        if let Some((_, tnode)) = &target {
            let replace = if tnode.entry.is_dir { 'D' } else { 'W' };
            Self::permitted(tnode, replace, "replacing")?;
        }
        if let Some((tino, tnode)) = &target {
            if no_replace {
                return Err(Error::new(ErrorKind::AlreadyExists, format!("{to} exists")));
            }
            match (src.entry.is_dir, tnode.entry.is_dir) {
                (true, false) => {
                    return Err(Error::new(
                        ErrorKind::NotADirectory,
                        format!("{to} is a file"),
                    ))
                }
                (false, true) => {
                    return Err(Error::new(
                        ErrorKind::IsADirectory,
                        format!("{to} is a folder"),
                    ))
                }
                (true, true) => self.ensure_empty(*tino, &to).await?,
                (false, false) => {}
            }
        }
        tracing::debug!(from = %src.path, %to, replaces = target.is_some(), "rename");

        // What the target was on the server (to replace it conditionally).
        let target_dropped = match &target {
            Some((tino, t)) if !t.entry.is_dir => self.drop_change(*tino, &to).await,
            _ => None,
        };
        let target_on_server: Option<Base> = match (&target, &target_dropped) {
            (Some(_), Some(st)) => st.base.clone(),
            (Some((tino, t)), None) => Some(seen(&self.node(*tino).unwrap_or(t.clone()))),
            (None, _) => None,
        };
        // Decide only once no upload of the source is in flight: one that just finished put
        // the file on the server.
        let held = self.wb.hold(&src.path).await;
        let work = self.wb.folder_work().await;
        if src.entry.is_dir && target.is_none() && self.wb.is_folder_pending(&src.path) {
            // Made offline, not on the server yet: renamed here, made there under its new
            // name (also while the server is out of reach).
            self.wb.move_waiting_folders(&src.path, &to)?;
            self.move_local_marks(&src.path, &to);
            let mut t = lock(&self.table);
            self.wb.rename(held, &src.path, &to, None);
            t.move_node(ino, new_parent, new_name);
            return Ok(());
        }
        drop(work);
        let src_local_only = self
            .wb
            .get(&src.path)
            .map(|d| d.state().base.is_none())
            .unwrap_or(false);
        if src_local_only {
            // Never uploaded: rename locally; if it replaces a server file, the upload will
            // replace that version (conditionally on its etag).
            let rebase = match (target_on_server, &target) {
                (Some(b), Some((_, t))) => Some(Base {
                    version: self.base_of(t).await?.version,
                    ..b
                }),
                _ => None,
            };
            self.move_local_marks(&src.path, &to);
            // The table and the write-back move together: nobody sees one without the other.
            let mut t = lock(&self.table);
            self.wb.rename(held, &src.path, &to, None);
            if let (Some(b), Some(d)) = (rebase, self.wb.get(&to)) {
                self.wb.rebase(&d, b);
            }
            t.move_node(ino, new_parent, new_name);
        } else {
            // Files renamed offline (this one, say) get their new names there first, a folder
            // removed here leaves the name there before something else takes it. One the
            // server refuses for now (locked there) does not hold this rename up.
            self.send_earlier_changes().await;
            // A server file replaced while the server is out of reach: deleted there (if
            // still this version) once it answers, before the rename is made.
            let mut replaced_offline: Option<Base> = None;
            let mut target_gone = target_on_server.is_none();
            if let (Some(b), Some((_, t))) = (&target_on_server, &target) {
                let on_server = self.wb.server_path(&to);
                match crate::writeback::delete_if_unchanged(
                    &self.dav,
                    &on_server,
                    t.entry.is_dir,
                    b,
                )
                .await
                {
                    Ok(()) | Err(DavError::NotFound(_)) => target_gone = true,
                    Err(DavError::PreconditionFailed(_)) => {
                        lock(&self.table).invalidate_listing(new_parent);
                        return Err(Error::new(
                            ErrorKind::Busy,
                            format!("{to} changed on the server; not replaced"),
                        ));
                    }
                    Err(e) if cut_off(&e) && !t.entry.is_dir => replaced_offline = Some(b.clone()),
                    Err(e) => return Err(e.into()),
                }
            }
            // Renamed there later only when nothing stands in the way there.
            let offline_ok = target_gone || replaced_offline.is_some();
            // A file or folder whose rename still waits (the server is out of reach), or one
            // renamed while it is: renamed here now, there once it answers.
            let waiting = self.wb.moved_from(&src.path).is_some();
            let sent = if waiting {
                None
            } else {
                Some(self.move_on_server(&src.path, &to, src.entry.is_dir).await)
            };
            let etag = match sent {
                Some(Ok(etag)) => etag,
                Some(Err(e)) if !(cut_off(&e) && offline_ok) => {
                    return Err(match e {
                        DavError::PreconditionFailed(_) => Error::new(
                            ErrorKind::AlreadyExists,
                            format!("{to} exists on the server"),
                        ),
                        e => e.into(),
                    })
                }
                _ => {
                    let is_dir = src.entry.is_dir;
                    let (wb, from, dest, base) =
                        (self.wb.clone(), src.path.clone(), to.clone(), seen(&src));
                    blocking(move || {
                        if let Some(b) = replaced_offline {
                            wb.add_delete(&wb.server_path(&dest), b)?;
                        }
                        wb.add_move(&from, &dest, base, is_dir)
                    })
                    .await?;
                    if is_dir {
                        // Folders made offline inside it are made under the new name.
                        let _work = self.wb.folder_work().await;
                        self.wb.move_waiting_folders(&src.path, &to)?;
                    }
                    tracing::info!(from = %src.path, %to, "renamed here while the server is out of reach; renamed there once it is back");
                    self.renamed_here(&src.path, &to);
                    let mut t = lock(&self.table);
                    self.wb.rename(held, &src.path, &to, None);
                    t.move_node(ino, new_parent, new_name);
                    return Ok(());
                }
            };
            let etag =
                crate::writeback::etag_after_move(&self.dav, &to, etag, src.entry.is_dir).await;
            self.renamed_here(&src.path, &to);
            let mut t = lock(&self.table);
            self.wb.rename(held, &src.path, &to, etag.clone());
            if let (Some(e), Some(n)) = (etag, t.get_mut(ino)) {
                n.entry.etag = Some(e);
            }
            t.move_node(ino, new_parent, new_name);
        }
        Ok(())
    }

    /// Sends first what was done here and not there yet (the server was out of reach, or a
    /// request's answer was lost): a name taken there by a folder removed or a file renamed
    /// here would otherwise stand in the way of what comes now.
    async fn send_earlier_changes(&self) {
        if self.wb.has_offline_work() && self.dav.reach().is_online() {
            if let Err(e) = self.wb.send_offline_work().await {
                tracing::debug!(error = %e, "earlier changes not made on the server yet");
            }
        }
    }

    /// MOVE on the server, after the folders made offline it needs.
    async fn move_on_server(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        is_dir: bool,
    ) -> std::result::Result<Option<String>, DavError> {
        if self.wb.has_folders() {
            // A folder made offline (this one, or where it goes) must exist there first.
            self.wb.make_folders().await?;
        }
        self.dav.move_to(from, to, is_dir, false).await
    }

    /// What a rename changes here besides the names: modification times kept for the
    /// server, pins, and the cached content, which stays readable under the new name.
    fn renamed_here(&self, from: &RemotePath, to: &RemotePath) {
        self.move_local_marks(from, to);
        self.move_pins(from, to);
        let ident = |p: &RemotePath| format!("{}\n{}", self.cfg.cache_identity, p.as_str());
        if let Err(e) = self.cache().rename_identity(&ident(from), &ident(to)) {
            tracing::warn!(%from, %to, error = %e, "cached content not kept under the new name");
        }
    }

    /// Usage figures: the Nextcloud quota when the server gives one (§11), else a large
    /// synthetic size so that programs do not refuse to work. Never an error: the last
    /// figures known while the server is out of reach or slower than [`PATIENCE`].
    pub async fn statfs(&self) -> Result<StatFs> {
        let known = *lock(&self.quota);
        if let Some((at, s)) = known {
            if at.elapsed() < self.cfg.attr_ttl {
                return Ok(s);
            }
        }
        let asked = match self.me.upgrade() {
            Some(me) => {
                self.within_patience(move || {
                    let me = me.clone();
                    async move { me.ask_quota().await }
                })
                .await
            }
            None => Some(self.ask_quota().await),
        };
        match asked {
            Some(Ok(s)) => Ok(s),
            other => {
                // Slow, out of reach or refusing: programs (file managers, `df`) still get
                // an answer, the last one known or the one for a server without quotas.
                if let Some(Err(e)) = other {
                    tracing::debug!(error = %e, "quota not known now");
                }
                Ok(known.map_or_else(|| self.no_quota(0), |(_, s)| s))
            }
        }
    }

    /// Asks the server for the quota (see [`Vfs::statfs`]) and keeps it.
    async fn ask_quota(&self) -> Result<StatFs> {
        let root = self.dav.propfind(&RemotePath::root(), Depth::Zero).await?;
        let r = root.into_iter().find(|e| e.path.is_root());
        let used = r
            .as_ref()
            .and_then(|e| e.quota_used)
            .filter(|u| *u >= 0)
            .unwrap_or(0) as u64;
        let avail = r.as_ref().and_then(|e| e.quota_available).unwrap_or(-2);
        let s = if avail >= 0 {
            StatFs {
                total: used + avail as u64,
                free: avail as u64,
                bsize: 4096,
                name_max: self.name_max(),
            }
        } else {
            self.no_quota(used)
        };
        *lock(&self.quota) = Some((Instant::now(), s));
        Ok(s)
    }

    /// What `statfs` tells of a server without a quota: plenty of room.
    fn no_quota(&self, used: u64) -> StatFs {
        const SYNTHETIC_FREE: u64 = 1 << 40;
        StatFs {
            total: used + SYNTHETIC_FREE,
            free: SYNTHETIC_FREE,
            bsize: 4096,
            name_max: self.name_max(),
        }
    }

    /// The longest name the server takes: Nextcloud's limit when its naming rules are known,
    /// else the usual 255 bytes.
    fn name_max(&self) -> u32 {
        match self.cfg.names {
            Some(_) => crate::webdav::nextcloud::MAX_NAME_BYTES as u32,
            None => 255,
        }
    }

    /// Where inode `ino` is now (`/a/b`, `/` for the root), after renames made by anyone;
    /// `None` once it is gone.
    pub fn path_of(&self, ino: Ino) -> Option<String> {
        lock(&self.table).get(ino).map(|n| n.path.to_string())
    }

    /// Writes the cache index to disk (called periodically and at unmount).
    pub async fn flush_cache(&self) -> Result<()> {
        self.fetcher.drain_disk_writes().await;
        let cache = self.cache().clone();
        tokio::task::spawn_blocking(move || cache.flush())
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("cache task failed: {e}")))??;
        Ok(())
    }
}

/// Runs blocking disk work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("disk task failed: {e}")))?
}

/// What the filesystem last saw of a node's server version (to delete or replace it only
/// while the server still holds that version).
fn seen(n: &Node) -> Base {
    Base {
        etag: n.entry.etag.clone(),
        size: n.entry.size,
        version: crate::cache::VersionId(-1),
        mtime: Some(n.entry.mtime_secs()),
    }
}

/// Folders made offline (not on the server yet) are folders in their parent's listing.
fn merge_folders(entries: &mut Vec<Entry>, dir: &RemotePath, names: Vec<String>) {
    for name in names {
        if !entries
            .iter()
            .any(|e| e.path.name() == name && e.path != *dir)
        {
            entries.push(Entry {
                is_dir: true,
                ..local_entry(&dir.join(&name), 0, SystemTime::now())
            });
        }
    }
}

/// A file with local changes is a file in a listing, whatever the server says (it is not
/// uploaded yet, or its upload will settle the difference).
fn merge_local(entries: &mut Vec<Entry>, local: Vec<(String, crate::writeback::DirtyState)>) {
    for (name, st) in local {
        match entries.iter().position(|e| e.path.name() == name) {
            Some(i) if !entries[i].is_dir => {}
            Some(i) => entries[i] = local_entry(&st.path, st.size, st.mtime),
            None => entries.push(local_entry(&st.path, st.size, st.mtime)),
        }
    }
}

/// Entries listed under `server` (a name on the server) as they are named here, under
/// `local` (the two differ while a rename made offline waits).
fn rebase_entries(mut entries: Vec<Entry>, server: &RemotePath, local: &RemotePath) -> Vec<Entry> {
    if server != local {
        for e in &mut entries {
            if let Some(p) = e.path.rebased(server, local) {
                e.path = p;
            }
        }
    }
    entries
}

/// The entry of a file that exists only locally so far.
fn local_entry(path: &RemotePath, size: u64, mtime: SystemTime) -> Entry {
    Entry {
        path: path.clone(),
        is_dir: false,
        size,
        mtime,
        etag: None,
        fileid: None,
        permissions: None,
        quota_used: None,
        quota_available: None,
    }
}

/// Names no server accepts.
impl Vfs {
    /// Refuses, before anything is sent, a name the server would refuse (its `files.forbidden_*`
    /// capabilities, nextcloud-protocol.md §10). Files that stay local-only (editor lock files,
    /// `.part` downloads) may have any name: they never reach the server.
    fn check_server_name(&self, name: &str, is_dir: bool) -> Result<()> {
        check_name(name)?;
        if !is_dir && crate::writeback::is_excluded(name) {
            return Ok(());
        }
        if let Some(why) = self.cfg.names.as_ref().and_then(|r| r.problem(name)) {
            tracing::info!(name, "refused a name the server does not allow: {why}");
            let kind = if name.len() > crate::webdav::nextcloud::MAX_NAME_BYTES {
                ErrorKind::NameTooLong
            } else {
                ErrorKind::InvalidName
            };
            return Err(Error::new(kind, why));
        }
        Ok(())
    }
}

/// True when an error means the server is out of reach (down, unreachable, in maintenance,
/// behind a network's login page, whose certificate fails, or refusing our login) rather
/// than saying something about the file.
fn cut_off(e: &DavError) -> bool {
    matches!(
        e,
        DavError::Connect(_)
            | DavError::Timeout(_)
            | DavError::Unavailable(_)
            | DavError::NotTheServer(_)
            | DavError::Tls(_)
            | DavError::Unauthorized
    )
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!("{name:?} is not a valid name"),
        ));
    }
    Ok(())
}

/// Applies a write-back event to the inode table.
fn apply_event(table: &Mutex<InodeTable>, ev: Event) {
    let mut t = lock(table);
    match ev {
        Event::Uploaded {
            path,
            etag,
            size,
            mtime,
            server_mtime,
            fileid,
        } => match t.by_path(&path) {
            Some(ino) => {
                if let Some(n) = t.get_mut(ino) {
                    n.entry.etag = etag;
                    n.entry.size = size;
                    // A new file's id (kept across saves by the server, so an earlier one
                    // stays when the answer gives none).
                    if fileid.is_some() {
                        n.entry.fileid = fileid;
                    }
                    // Without an etag the version is told by the server's time: keep that.
                    n.entry.mtime = server_mtime.unwrap_or(mtime);
                    n.confirmed = Instant::now();
                }
            }
            None => tracing::debug!(%path, "uploaded file not in the table"),
        },
        Event::Conflict {
            path,
            conflict_path,
        } => {
            for p in [path, conflict_path] {
                if let Some(dir) = p.parent().and_then(|d| t.by_path(&d)) {
                    t.invalidate_listing(dir);
                }
                if let Some(ino) = t.by_path(&p) {
                    if let Some(n) = t.get_mut(ino) {
                        let day = Duration::from_secs(3600 * 24);
                        n.confirmed = Instant::now().checked_sub(day).unwrap_or(n.confirmed);
                        n.kernel_etag = None;
                    }
                }
            }
        }
    }
}
