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
//! ## Concurrency
//! `table` and `handles` are `std::sync::Mutex`es held for map updates only, never across an
//! `.await`; they are never held together. Listing fetches of one folder are serialized by a
//! per-folder async lock so that concurrent lookups cause one PROPFIND.

use crate::cache::{BlockCache, BlockIdx, BlockKey};
use crate::error::{Error, ErrorKind, Result};
use crate::fetch::{Fetcher, FileVersion};
use crate::meta::{InodeTable, Node};
use crate::webdav::{DavClient, DavError, Depth, Entry, RemotePath};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

pub use crate::meta::Ino;

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
}

/// What `open` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The handle.
    pub fh: Fh,
    /// True when the kernel may keep the pages it cached for this file: the etag they came
    /// from is still current.
    pub keep_cache: bool,
}

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
}

impl Default for VfsConfig {
    fn default() -> Self {
        VfsConfig {
            attr_ttl: Duration::from_secs(10),
            dir_ttl: Duration::from_secs(10),
            read_only: true,
            uid: 0,
            gid: 0,
            max_readahead: 64 << 20,
            cache_identity: String::new(),
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
    file: FileVersion,
    /// Where the last read ended.
    next_offset: u64,
    /// Current read-ahead window in blocks.
    window: u64,
}

/// The platform-independent filesystem.
pub struct Vfs {
    dav: DavClient,
    fetcher: Arc<Fetcher>,
    cfg: VfsConfig,
    table: Mutex<InodeTable>,
    handles: Mutex<HashMap<Fh, Handle>>,
    dir_handles: Mutex<HashMap<Fh, DirHandle>>,
    listing_locks: Mutex<HashMap<Ino, Arc<tokio::sync::Mutex<()>>>>,
    next_fh: AtomicU64,
    quota: Mutex<Option<(Instant, StatFs)>>,
}

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
    /// Connects the core: checks that the root answers PROPFIND and builds the tables.
    pub async fn new(dav: DavClient, cache: Arc<BlockCache>, cfg: VfsConfig) -> Result<Self> {
        let mut root = dav.propfind(&RemotePath::root(), Depth::Zero).await?;
        let root = root.drain(..).find(|e| e.path.is_root()).ok_or_else(|| {
            Error::new(ErrorKind::Io, "the server did not describe the root folder")
        })?;
        if !root.is_dir {
            return Err(Error::new(
                ErrorKind::NotADirectory,
                "the URL names a file, not a WebDAV folder",
            ));
        }
        let fetcher = Arc::new(Fetcher::new(dav.clone(), cache, 8, 8));
        Ok(Vfs {
            dav,
            fetcher,
            cfg,
            table: Mutex::new(InodeTable::new(root)),
            handles: Mutex::new(HashMap::new()),
            dir_handles: Mutex::new(HashMap::new()),
            listing_locks: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            quota: Mutex::new(None),
        })
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
        let perm = match (e.is_dir, writable) {
            (true, true) => 0o755,
            (true, false) => 0o555,
            (false, true) => 0o644,
            (false, false) => 0o444,
        };
        Attr {
            ino,
            kind: kind_of(e),
            size: if e.is_dir { 0 } else { e.size },
            mtime: e.mtime,
            perm,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    fn node(&self, ino: Ino) -> Result<Node> {
        lock(&self.table)
            .get(ino)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("unknown inode {}", ino.0)))
    }

    /// Makes sure folder `dir` has a listing younger than `dir_ttl`.
    async fn fresh_listing(&self, dir: Ino) -> Result<()> {
        let is_fresh = |t: &InodeTable| {
            t.get(dir)
                .and_then(|n| n.listing.as_ref())
                .map(|l| l.fetched.elapsed() < self.cfg.dir_ttl)
                .unwrap_or(false)
        };
        if is_fresh(&lock(&self.table)) {
            return Ok(());
        }
        let gate = lock(&self.listing_locks).entry(dir).or_default().clone();
        let _g = gate.lock().await;
        if is_fresh(&lock(&self.table)) {
            return Ok(());
        }
        let node = self.node(dir)?;
        if !node.entry.is_dir {
            return Err(Error::new(
                ErrorKind::NotADirectory,
                format!("{} is a file", node.path),
            ));
        }
        match self.dav.propfind(&node.path, Depth::One).await {
            Ok(entries) => {
                lock(&self.table).apply_listing(dir, entries, Instant::now());
                Ok(())
            }
            Err(DavError::NotFound(_)) => {
                let mut t = lock(&self.table);
                t.remove_child(node.parent, node.path.name());
                Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{} no longer exists", node.path),
                ))
            }
            Err(e) => {
                let e: Error = e.into();
                tracing::warn!(path = %node.path, error = %e, "listing failed");
                Err(e)
            }
        }
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

    /// Re-reads one node's attributes from the server when they are older than `attr_ttl`.
    async fn revalidate(&self, ino: Ino) -> Result<Node> {
        let node = self.node(ino)?;
        if node.confirmed.elapsed() < self.cfg.attr_ttl {
            return Ok(node);
        }
        match self.dav.propfind(&node.path, Depth::Zero).await {
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
                t.upsert(node.parent, e, Instant::now());
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
            Err(e) => Err(e.into()),
        }
    }

    /// Attributes of `ino`.
    pub async fn getattr(&self, ino: Ino) -> Result<Attr> {
        let n = self.revalidate(ino).await?;
        Ok(self.attr_of(ino, &n))
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
            for (name, c) in &l.children {
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

    /// Opens a file for reading. `write` asks for write access.
    pub async fn open(&self, ino: Ino, write: bool) -> Result<Opened> {
        if write && self.cfg.read_only {
            return Err(Error::new(ErrorKind::ReadOnly, "the mount is read-only"));
        }
        if write {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                "writing is not supported yet; the mount is read-only",
            ));
        }
        let node = self.revalidate(ino).await?;
        if node.entry.is_dir {
            return Err(Error::new(
                ErrorKind::IsADirectory,
                format!("{} is a folder", node.path),
            ));
        }
        // A file version is (path, etag); without an etag, mtime and size stand in for it.
        let validator = node.entry.etag.clone().unwrap_or_else(|| {
            let secs = node
                .entry
                .mtime
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            format!("mtime:{secs}:size:{}", node.entry.size)
        });
        let identity = format!("{}\n{}", self.cfg.cache_identity, node.path.as_str());
        let cache = self.cache().clone();
        let v = validator.clone();
        let version = tokio::task::spawn_blocking(move || cache.version(&identity, &v))
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("cache task failed: {e}")))??;
        let keep_cache = {
            let mut t = lock(&self.table);
            let n = t
                .get_mut(ino)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, "vanished"))?;
            let keep = n.kernel_etag.as_deref() == Some(validator.as_str());
            n.kernel_etag = Some(validator);
            keep
        };
        let fh = Fh(self.next_fh.fetch_add(1, Ordering::Relaxed));
        lock(&self.handles).insert(
            fh,
            Handle {
                ino,
                file: FileVersion {
                    path: node.path.clone(),
                    etag: node.entry.etag.clone(),
                    size: node.entry.size,
                    version,
                },
                next_offset: 0,
                window: 0,
            },
        );
        Ok(Opened { fh, keep_cache })
    }

    /// Reads up to `size` bytes at `offset`.
    pub async fn read(&self, fh: Fh, offset: u64, size: u32) -> Result<Bytes> {
        tracing::trace!(fh = fh.0, offset, size, "read");
        let bs = self.cache().block_size();
        let (file, ahead) = {
            let mut hs = lock(&self.handles);
            let h = hs
                .get_mut(&fh)
                .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "bad file handle"))?;
            let end = (offset + size as u64).min(h.file.size);
            // Sequential (allowing the kernel's slight reordering of parallel reads)?
            let near = offset + 2 * bs >= h.next_offset && offset <= h.next_offset + 2 * bs;
            let max_blocks = (self.cfg.max_readahead / bs).max(1);
            h.window = if near && (h.next_offset > 0 || offset == 0) {
                (h.window * 2).clamp(4, max_blocks)
            } else {
                0
            };
            h.next_offset = h.next_offset.max(end);
            if !near {
                h.next_offset = end;
            }
            (h.file.clone(), h.window)
        };
        if offset >= file.size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + size as u64).min(file.size);
        let first = offset / bs;
        let last = (end - 1) / bs;
        // A block can be evicted between download and copy when the cache is tiny; retry.
        for attempt in 0..4 {
            self.fetcher
                .ensure(&file, first..last + 1, last + 1..last + 1 + ahead)
                .await?;
            // Inside one block that is still in memory: a slice of it, no copy, no disk.
            if first == last {
                let key = BlockKey {
                    version: file.version,
                    idx: BlockIdx(first),
                };
                if let Some(b) = self.cache().hot(key) {
                    let from = (offset - first * bs) as usize;
                    let to = (end - first * bs) as usize;
                    if to <= b.len() {
                        return Ok(b.slice(from..to));
                    }
                }
            }
            let cache = self.cache().clone();
            let version = file.version;
            let res = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; (end - offset) as usize];
                let mut pos = offset;
                while pos < end {
                    let idx = pos / bs;
                    let in_block = pos - idx * bs;
                    let n = (bs - in_block).min(end - pos) as usize;
                    let dst = &mut buf[(pos - offset) as usize..(pos - offset) as usize + n];
                    let key = BlockKey {
                        version,
                        idx: BlockIdx(idx),
                    };
                    if !cache.read(key, in_block, dst)? {
                        return Ok(None);
                    }
                    pos += n as u64;
                }
                Ok::<_, crate::cache::CacheError>(Some(Bytes::from(buf)))
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("cache task failed: {e}")))??;
            if let Some(b) = res {
                return Ok(b);
            }
            tracing::debug!(attempt, path = %file.path, "block evicted before it was read, retrying");
        }
        Err(Error::new(
            ErrorKind::NoSpace,
            format!(
                "the cache is too small to hold the blocks of one read of {}",
                file.path
            ),
        ))
    }

    /// Closes a handle.
    pub fn release(&self, fh: Fh) {
        lock(&self.handles).remove(&fh);
    }

    /// The inode behind a handle.
    pub fn handle_ino(&self, fh: Fh) -> Option<Ino> {
        lock(&self.handles).get(&fh).map(|h| h.ino)
    }

    /// Usage figures: the Nextcloud quota when the server gives one (§11), else a large
    /// synthetic size so that programs do not refuse to work.
    pub async fn statfs(&self) -> Result<StatFs> {
        if let Some((at, s)) = *lock(&self.quota) {
            if at.elapsed() < Duration::from_secs(30) {
                return Ok(s);
            }
        }
        const SYNTHETIC_FREE: u64 = 1 << 40;
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
            }
        } else {
            StatFs {
                total: used + SYNTHETIC_FREE,
                free: SYNTHETIC_FREE,
                bsize: 4096,
            }
        };
        *lock(&self.quota) = Some((Instant::now(), s));
        Ok(s)
    }

    /// Resolves a `/`-separated path from the root (for path-based adapters such as WinFsp).
    pub async fn resolve(&self, path: &str) -> Result<Attr> {
        let mut attr = self.getattr(Ino::ROOT).await?;
        for name in path.split(['/', '\\']).filter(|s| !s.is_empty()) {
            attr = self.lookup(attr.ino, name).await?;
        }
        Ok(attr)
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
