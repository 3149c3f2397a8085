//! The read path: serve blocks from the cache, or download them with ranged GETs.
//!
//! ## Design
//! A read asks [`Fetcher::ensure`] for the blocks it touches (`need`) and, when the handle sees
//! a sequential pattern, for a read-ahead window after them (`ahead`). Missing blocks that are
//! not already being downloaded are grouped into runs of contiguous blocks (at most
//! `max_run` blocks, so a large window becomes several GETs in parallel) and each run is one
//! `GET` with `Range` and `If-Match: <etag>`, streamed block by block into the cache. Every block
//! being downloaded has one entry in `inflight`: a second reader of the same block waits on it
//! instead of asking the server again. The reader only waits for `need`; read-ahead continues
//! in the background.
//!
//! The number of concurrent GETs is bounded by a semaphore. A response that stops short, or
//! whose `Content-Range` does not match, fails the blocks it should have carried; a `412` means
//! the file changed on the server and fails them with [`ErrorKind::Stale`].
//!
//! ## Concurrency
//! `inflight` is a short `std::sync::Mutex` section; a block is made readable (kept in the
//! cache's memory tier, then written to disk in the background) *before* it is removed from
//! `inflight`, so a reader that finds neither the block nor an in-flight entry can safely
//! start a download.

use crate::cache::{BlockCache, BlockIdx, BlockKey, VersionId};
use crate::error::{Error, ErrorKind, Result};
use crate::webdav::{DavClient, RemotePath};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// One version of one remote file, as a reader sees it.
#[derive(Debug, Clone)]
pub struct FileVersion {
    /// Remote path.
    pub path: RemotePath,
    /// Etag the bytes must match (sent as `If-Match` when strong).
    pub etag: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Cache version id.
    pub version: VersionId,
}

type Done = Option<std::result::Result<(), Error>>;

/// Downloaded blocks that may wait in memory for the disk writer.
const DISK_WRITES: usize = 16;

/// A download that broke off (a reset connection, a body cut short, a 5xx answer) is asked
/// again after these pauses, from its first missing block, while the server counts as
/// reachable. Not after a timeout: a silent server would multiply the wait.
const RETRY_AFTER: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(200),
    std::time::Duration::from_millis(1000),
];

/// Why a download run failed, and whether asking again may help.
struct RunError {
    retry: bool,
    err: Error,
}

impl RunError {
    fn fatal(err: Error) -> Self {
        RunError { retry: false, err }
    }
}

impl From<crate::webdav::DavError> for RunError {
    fn from(e: crate::webdav::DavError) -> Self {
        let retry = e.is_retryable() && !matches!(e, crate::webdav::DavError::Timeout(_));
        RunError {
            retry,
            err: e.into(),
        }
    }
}

/// The bytes `[offset, end)` out of consecutive blocks starting at file offset `start`: a
/// slice, without copying, when they lie in one block; else one copy. `None` when the blocks
/// are too short.
fn join_range(blocks: &[bytes::Bytes], start: u64, offset: u64, end: u64) -> Option<bytes::Bytes> {
    let from = (offset - start) as usize;
    let to = (end - start) as usize;
    let total: usize = blocks.iter().map(|b| b.len()).sum();
    if to > total {
        return None;
    }
    if let [one] = blocks {
        return Some(one.slice(from..to));
    }
    let mut out = Vec::with_capacity(to - from);
    let mut pos = 0usize;
    for b in blocks {
        let (lo, hi) = (pos, pos + b.len());
        if hi > from && lo < to {
            out.extend_from_slice(&b[from.max(lo) - lo..to.min(hi) - lo]);
        }
        pos = hi;
    }
    Some(bytes::Bytes::from(out))
}

/// Block-sized buffers, reused: for downloaded full-size blocks, and for reads served from
/// the cache files. A large read would otherwise have the allocator hand fresh pages from the
/// kernel (a page fault and a zeroed page each) for every block, and give them back soon
/// after. Every buffer is one block long and was zeroed once, when it was made: it is filled
/// in place, never cleared again. Holds at most `max` idle buffers ([`POOL_BYTES`]). A file's
/// short last block gets a buffer of its own size instead (a small file's block must not hold
/// a whole block's memory while it sits in the memory tier).
struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    /// The length of every pooled buffer: one block.
    size: usize,
    max: usize,
}

/// Idle block buffers kept for reuse: every block a sequential read holds at once (the
/// memory tier, a read-ahead window in flight, the blocks waiting for the disk), so that a
/// long read reuses the same buffers instead of freeing and faulting in new ones.
const POOL_BYTES: u64 = crate::cache::HOT_BYTES
    + crate::vfs::DEFAULT_READAHEAD
    + DISK_WRITES as u64 * crate::cache::DEFAULT_BLOCK_SIZE;

impl BufPool {
    /// A block-sized buffer (its contents are whatever it held last).
    fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        reused.unwrap_or_else(|| vec![0; self.size])
    }

    /// `buf`, filled by the caller, as `len` bytes that go back to the pool when the last
    /// `Bytes` of them is dropped.
    fn share(self: &Arc<Self>, buf: Vec<u8>, len: usize) -> bytes::Bytes {
        bytes::Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
        .slice(..len)
    }
}

/// A downloaded block's bytes; the buffer goes back to its pool when the last `Bytes` of it
/// is dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.pool.max && self.buf.len() == self.pool.size {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Downloads blocks into the cache, deduplicating concurrent requests.
pub struct Fetcher {
    dav: DavClient,
    cache: Arc<BlockCache>,
    inflight: Mutex<HashMap<BlockKey, watch::Receiver<Done>>>,
    gets: Arc<Semaphore>,
    disk_writes: Arc<Semaphore>,
    max_run: u64,
    buffers: Arc<BufPool>,
    /// Renames made here that wait to be made on the server (`(new, old)` names, in order):
    /// the bytes of what they renamed are still asked for under the server names.
    redirects: Mutex<Vec<(RemotePath, RemotePath)>>,
    /// For versions listed without an etag (nginx): the strong `ETag` the first download's
    /// answer gave, sent as `If-Match` with the next ones, so that a file replaced on the
    /// server while it is read (even by one of the same size) is told, not mixed.
    /// The time is when the server said it changed (`412`): see [`Fetcher::learned`].
    learned: Mutex<HashMap<VersionId, (String, Option<Instant>)>>,
}

/// At most this many learned etags are kept (forgotten all at once beyond: they are learned
/// again at the next download).
const LEARNED_MAX: usize = 4096;
/// A version the server said changed fails every download for this long, then is learned
/// again (its listing is asked again meanwhile: a changed file is a new version then).
const CHANGED_FOR: Duration = Duration::from_secs(10);

impl Fetcher {
    /// A fetcher with at most `parallel` concurrent GETs of at most `max_run` blocks each.
    pub fn new(dav: DavClient, cache: Arc<BlockCache>, parallel: usize, max_run: u64) -> Self {
        let bs = cache.block_size().max(1);
        let buffers = Arc::new(BufPool {
            free: Mutex::new(Vec::new()),
            size: bs as usize,
            max: (POOL_BYTES / bs) as usize,
        });
        Fetcher {
            dav,
            cache,
            inflight: Mutex::new(HashMap::new()),
            gets: Arc::new(Semaphore::new(parallel.max(1))),
            disk_writes: Arc::new(Semaphore::new(DISK_WRITES)),
            max_run: max_run.max(1),
            buffers,
            redirects: Mutex::new(Vec::new()),
            learned: Mutex::new(HashMap::new()),
        }
    }

    /// The block cache.
    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    /// Where a read of `size` bytes at `offset` ends (at most the end of the file) and the
    /// first and last blocks it touches; `None` when it reads nothing.
    fn span(&self, file: &FileVersion, offset: u64, size: u32) -> Option<(u64, u64, u64)> {
        if offset >= file.size || size == 0 {
            return None;
        }
        let bs = self.cache.block_size();
        let end = (offset + size as u64).min(file.size);
        Some((end, offset / bs, (end - 1) / bs))
    }

    /// Number of blocks of a file of `size` bytes.
    pub fn block_count(&self, size: u64) -> u64 {
        size.div_ceil(self.cache.block_size())
    }

    /// Reads `size` bytes at `offset` of `file` (less at its end): cached blocks are served
    /// from memory or disk, missing ones downloaded first, with `ahead` blocks of read-ahead.
    /// A read inside one block still in memory is a slice of it (no copy, no disk).
    pub async fn read(
        self: &Arc<Self>,
        file: &FileVersion,
        offset: u64,
        size: u32,
        ahead: u64,
    ) -> Result<bytes::Bytes> {
        let bs = self.cache.block_size();
        let Some((end, first, last)) = self.span(file, offset, size) else {
            return Ok(bytes::Bytes::new());
        };
        tracing::trace!(offset, size, first, last, "read");
        // A block can be evicted between download and copy when the cache is tiny; retry.
        for attempt in 0..4 {
            self.ensure(file, first..last + 1, last + 1..last + 1 + ahead)
                .await?;
            // Blocks in memory are used as they are; the others are read from the disk.
            let hot = self.cache.hot_blocks(file.version, first, last);
            if hot.iter().all(Option::is_some) {
                let blocks: Vec<bytes::Bytes> = hot.iter().flatten().cloned().collect();
                if let Some(b) = join_range(&blocks, first * bs, offset, end) {
                    return Ok(b);
                }
            }
            tracing::trace!(offset, "read from disk");
            let cache = self.cache.clone();
            let version = file.version;
            let buffers = self.buffers.clone();
            let res = tokio::task::spawn_blocking(move || {
                let len = (end - offset) as usize;
                let mut buf = if len <= buffers.size {
                    buffers.take()
                } else {
                    vec![0; len]
                };
                let mut pos = offset;
                while pos < end {
                    let idx = pos / bs;
                    let in_block = pos - idx * bs;
                    let n = (bs - in_block).min(end - pos) as usize;
                    let dst = &mut buf[(pos - offset) as usize..(pos - offset) as usize + n];
                    match &hot[(idx - first) as usize] {
                        Some(b) if b.len() >= in_block as usize + n => {
                            dst.copy_from_slice(&b[in_block as usize..in_block as usize + n]);
                        }
                        _ => {
                            let key = BlockKey {
                                version,
                                idx: BlockIdx(idx),
                            };
                            if !cache.read(key, in_block, dst)? {
                                return Ok(None);
                            }
                        }
                    }
                    pos += n as u64;
                }
                Ok::<_, crate::cache::CacheError>(Some(buffers.share(buf, len)))
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("cache task failed: {e}")))??;
            if let Some(b) = res {
                return Ok(b);
            }
            if !self.cache.is_registered(file.version) {
                // This version was superseded while the handle was open: read it directly.
                return self.fetch_direct(file, offset, end - offset).await;
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

    /// The bytes of a read when they are all in memory, starting `ahead` blocks of read-ahead
    /// after them without waiting; `None` otherwise (nothing started). Must run inside the
    /// runtime.
    pub fn read_ready(
        self: &Arc<Self>,
        file: &FileVersion,
        offset: u64,
        size: u32,
        ahead: u64,
    ) -> Option<bytes::Bytes> {
        let Some((end, first, last)) = self.span(file, offset, size) else {
            return Some(bytes::Bytes::new());
        };
        let bs = self.cache.block_size();
        let hot = self.cache.hot_blocks(file.version, first, last);
        let blocks: Option<Vec<bytes::Bytes>> = hot.into_iter().collect();
        let data = join_range(&blocks?, first * bs, offset, end)?;
        let after = last + 1;
        // Nothing to wait for: every needed block is here.
        let _ = self.start(file, after..after, after..after + ahead);
        Some(data)
    }

    /// The renames made here that wait to be made on the server (`(new, old)` names, in
    /// order): downloads go to the server names meanwhile.
    pub fn set_redirects(&self, moves: Vec<(RemotePath, RemotePath)>) {
        *self.redirects.lock().unwrap_or_else(|p| p.into_inner()) = moves;
    }

    fn lock_learned(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<VersionId, (String, Option<Instant>)>> {
        self.learned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The etag learned for version `v`; fails at once while the server says it changed.
    fn learned(&self, v: VersionId) -> std::result::Result<Option<String>, RunError> {
        let mut l = self.lock_learned();
        match l.get(&v) {
            None => Ok(None),
            Some((tag, None)) => Ok(Some(tag.clone())),
            Some((_, Some(t))) if t.elapsed() < CHANGED_FOR => Err(RunError::fatal(Error::new(
                ErrorKind::Stale,
                "the file changed on the server while it was read",
            ))),
            Some(_) => {
                l.remove(&v);
                Ok(None)
            }
        }
    }

    /// Waits for a GET slot and starts a ranged GET.
    async fn get(
        &self,
        f: &FileVersion,
        start: u64,
        len: u64,
    ) -> std::result::Result<(tokio::sync::SemaphorePermit<'_>, crate::webdav::RangeBody), RunError>
    {
        let permit = self
            .gets
            .acquire()
            .await
            .map_err(|_| RunError::fatal(Error::new(ErrorKind::Io, "shutting down")))?;
        let redirected = {
            let r = self.redirects.lock().unwrap_or_else(|p| p.into_inner());
            (!r.is_empty()).then(|| f.path.before_moves(&r))
        };
        let path = redirected.as_ref().unwrap_or(&f.path);
        let learned = match &f.etag {
            Some(_) => None,
            None => self.learned(f.version)?,
        };
        let etag = f.etag.as_deref().or(learned.as_deref());
        let body = match self.dav.get_range(path, (start, len), f.size, etag).await {
            Ok(b) => b,
            Err(e) => {
                if learned.is_some() && matches!(e, crate::webdav::DavError::PreconditionFailed(_))
                {
                    // Every download of this version fails alike for a while (a concurrent
                    // one must not fetch the new file's bytes as this version's).
                    if let Some(l) = self.lock_learned().get_mut(&f.version) {
                        l.1 = Some(Instant::now());
                    }
                }
                return Err(e.into());
            }
        };
        if f.etag.is_none() && learned.is_none() {
            if let Some(tag) = body.etag() {
                let mut l = self.lock_learned();
                if l.len() >= LEARNED_MAX {
                    l.clear();
                }
                l.insert(f.version, (tag, None));
            }
        }
        Ok((permit, body))
    }

    /// Makes sure the `need` blocks are cached (waiting for them) and starts downloading the
    /// `ahead` blocks without waiting. A download that ended without delivering a block it
    /// had taken over (see `download_whole`) makes the block looked at, and asked for, again.
    pub async fn ensure(
        self: &Arc<Self>,
        f: &FileVersion,
        need: Range<u64>,
        ahead: Range<u64>,
    ) -> Result<()> {
        let mut waits = self.start(f, need.clone(), ahead);
        for _ in 0..4 {
            if waits.is_empty() {
                break;
            }
            for mut rx in waits {
                let res = rx
                    .wait_for(|d| d.is_some())
                    .await
                    .map_err(|_| Error::new(ErrorKind::Io, "download task ended unexpectedly"))?
                    .clone();
                if let Some(Err(e)) = res {
                    return Err(e);
                }
            }
            waits = self.start(f, need.clone(), 0..0);
        }
        Ok(())
    }

    /// Starts downloading the missing blocks of `need` and `ahead`; what to wait on for the
    /// `need` ones.
    fn start(
        self: &Arc<Self>,
        f: &FileVersion,
        need: Range<u64>,
        ahead: Range<u64>,
    ) -> Vec<watch::Receiver<Done>> {
        let last = self.block_count(f.size);
        let need = need.start.min(last)..need.end.min(last);
        let ahead = ahead.start.min(last)..ahead.end.min(last);
        let mut waits = Vec::new();
        let mut starts: Vec<(u64, watch::Sender<Done>)> = Vec::new();
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            let mut missing = Vec::new();
            for idx in need.clone().chain(ahead.clone()) {
                let key = BlockKey {
                    version: f.version,
                    idx: BlockIdx(idx),
                };
                let needed = need.contains(&idx);
                if self.cache.has(key) || self.cache.is_hot(key) {
                    continue;
                }
                if let Some(rx) = inflight.get(&key) {
                    if needed {
                        waits.push(rx.clone());
                    }
                    continue;
                }
                missing.push((idx, key, needed));
            }
            // Read-ahead tops the window up by at least half of it at a time (one large GET)
            // rather than by the block or two each sequential read moves it, unless the
            // reader is about to need the next block.
            let ahead_missing = missing.iter().filter(|m| !m.2).count() as u64;
            let next_missing = missing.iter().any(|m| m.0 == ahead.start);
            if !next_missing && ahead_missing * 2 < ahead.end - ahead.start {
                missing.retain(|m| m.2);
            }
            for (idx, key, needed) in missing {
                let (tx, rx) = watch::channel(None);
                inflight.insert(key, rx.clone());
                if needed {
                    waits.push(rx);
                }
                starts.push((idx, tx));
            }
        }
        // Group into runs of contiguous blocks.
        let mut run: Vec<(u64, watch::Sender<Done>)> = Vec::new();
        for (idx, tx) in starts {
            let contiguous = run.last().map(|(l, _)| *l + 1 == idx).unwrap_or(true);
            if !contiguous || run.len() as u64 >= self.max_run {
                self.spawn_run(f, std::mem::take(&mut run));
            }
            run.push((idx, tx));
        }
        if !run.is_empty() {
            self.spawn_run(f, run);
        }
        waits
    }

    fn spawn_run(self: &Arc<Self>, f: &FileVersion, run: Vec<(u64, watch::Sender<Done>)>) {
        if run.is_empty() {
            return;
        }
        let me = self.clone();
        let f = f.clone();
        tokio::spawn(async move {
            let first = run[0].0;
            let senders = run.into_iter().map(|(_, tx)| tx).collect::<Vec<_>>();
            let n = senders.len() as u64;
            let mut attempt = 0;
            let err = loop {
                // The blocks not delivered yet: all of the run, or what a broken GET left.
                let done = senders
                    .iter()
                    .position(|tx| tx.borrow().is_none())
                    .unwrap_or(senders.len());
                if done == senders.len() {
                    return;
                }
                let from = first + done as u64;
                match me
                    .download_run(&f, from, first + n - from, &senders[done..])
                    .await
                {
                    Ok(()) => {
                        break Error::new(
                            ErrorKind::Io,
                            format!("download of {} ended early", f.path),
                        )
                    }
                    Err(e)
                        if e.retry && attempt < RETRY_AFTER.len() && {
                            if e.err.kind == ErrorKind::TimedOut {
                                // Not asked again of a server that answers nothing at all.
                                me.dav.check_reach().await;
                            }
                            me.dav.reach().is_online()
                        } =>
                    {
                        tracing::info!(path = %f.path, error = %e.err, "download broke off, asking again");
                        tokio::time::sleep(RETRY_AFTER[attempt]).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        if e.err.kind == ErrorKind::Stale {
                            // The reader may follow the new version (`Vfs`), or says so.
                            tracing::debug!(path = %f.path, error = %e.err, "download of an older version");
                        } else {
                            tracing::warn!(path = %f.path, error = %e.err, "download failed");
                        }
                        break e.err;
                    }
                }
            };
            // Whatever did not complete fails with the run's error.
            for (i, tx) in senders.iter().enumerate() {
                if tx.borrow().is_none() {
                    me.finish(&f, first + i as u64, tx, Err(err.clone()));
                }
            }
        });
    }

    fn finish(
        &self,
        f: &FileVersion,
        idx: u64,
        tx: &watch::Sender<Done>,
        res: std::result::Result<(), Error>,
    ) {
        let key = BlockKey {
            version: f.version,
            idx: BlockIdx(idx),
        };
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        tx.send_replace(Some(res));
    }

    /// Downloads `n` blocks from `first` with one GET, each made readable as it arrives.
    async fn download_run(
        &self,
        f: &FileVersion,
        first: u64,
        n: u64,
        senders: &[watch::Sender<Done>],
    ) -> std::result::Result<(), RunError> {
        let bs = self.cache.block_size();
        let start = first * bs;
        let end = ((first + n) * bs).min(f.size);
        let (_permit, mut body) = self.get(f, start, end - start).await?;
        if body.whole_file() {
            return self.download_whole(f, first, n, senders, body).await;
        }
        for idx in first..first + n {
            let block = self.next_block(f, &mut body, idx, end).await?;
            self.store(f, idx, block).await.map_err(RunError::fatal)?;
            self.finish(f, idx, &senders[(idx - first) as usize], Ok(()));
        }
        Ok(())
    }

    /// A server that ignored `Range` sends the whole file from its first byte. Every block
    /// the answer carries that nobody has or is downloading is kept too (taken over in
    /// `inflight` first), not only the run's: reading such a file through then costs one
    /// transfer instead of the whole beginning of the file again for every run. Past the run
    /// it reads on to the end of the file when the file takes at most a quarter of the cache
    /// (as a client that downloads whole files would), else it stops after the run.
    async fn download_whole(
        &self,
        f: &FileVersion,
        first: u64,
        n: u64,
        senders: &[watch::Sender<Done>],
        mut body: crate::webdav::RangeBody,
    ) -> std::result::Result<(), RunError> {
        let run = first..first + n;
        let to = if f.size <= self.cache.usage().limit / 4 {
            self.block_count(f.size)
        } else {
            run.end
        };
        tracing::debug!(path = %f.path, "the server ignored the range and sends the whole file");
        let taken = self.take_over(f, (0..run.start).chain(run.end..to));
        let last = taken.last().map_or(run.end, |(i, _)| run.end.max(i + 1));
        let res = async {
            let mut next = taken.iter().peekable();
            for idx in 0..last {
                let block = self.next_block(f, &mut body, idx, f.size).await?;
                let tx = if run.contains(&idx) {
                    &senders[(idx - first) as usize]
                } else if let Some((_, tx)) = next.next_if(|(i, _)| *i == idx) {
                    tx
                } else {
                    // Someone has it or is downloading it.
                    continue;
                };
                self.store(f, idx, block).await.map_err(RunError::fatal)?;
                self.finish(f, idx, tx, Ok(()));
            }
            Ok(())
        }
        .await;
        // Blocks taken over but not delivered are given up: a reader waiting for one looks
        // again and asks for it itself (see `ensure`).
        for (idx, tx) in &taken {
            if tx.borrow().is_none() {
                self.finish(f, *idx, tx, Ok(()));
            }
        }
        res
    }

    /// Marks the blocks `idxs` of `f` that are neither cached nor being downloaded as being
    /// downloaded; what to report their end to.
    fn take_over(
        &self,
        f: &FileVersion,
        idxs: impl Iterator<Item = u64>,
    ) -> Vec<(u64, watch::Sender<Done>)> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        idxs.filter_map(|idx| {
            let key = BlockKey {
                version: f.version,
                idx: BlockIdx(idx),
            };
            if self.cache.has(key) || self.cache.is_hot(key) || inflight.contains_key(&key) {
                return None;
            }
            let (tx, rx) = watch::channel(None);
            inflight.insert(key, rx);
            Some((idx, tx))
        })
        .collect()
    }

    /// The next block of a body positioned at block `idx`, which ends at file offset
    /// `body_end`.
    async fn next_block(
        &self,
        f: &FileVersion,
        body: &mut crate::webdav::RangeBody,
        idx: u64,
        body_end: u64,
    ) -> std::result::Result<bytes::Bytes, RunError> {
        let bs = self.cache.block_size();
        let len = (f.size - idx * bs).min(bs) as usize;
        let full = len as u64 == bs;
        let mut buf = if full {
            self.buffers.take()
        } else {
            vec![0; len]
        };
        let got = body.fill(&mut buf[..len]).await?;
        if got < len {
            return Err(RunError {
                retry: true,
                err: Error::new(
                    ErrorKind::Io,
                    format!(
                        "the server sent a short body for {} ({} bytes missing)",
                        f.path,
                        body_end - (idx * bs + got as u64)
                    ),
                ),
            });
        }
        Ok(if full {
            self.buffers.share(buf, len)
        } else {
            bytes::Bytes::from(buf)
        })
    }

    /// Downloads `[offset, offset + len)` of `f` into memory without caching it: for a reader of
    /// a version the cache no longer keeps (the file changed after the handle was opened).
    pub async fn fetch_direct(
        &self,
        f: &FileVersion,
        offset: u64,
        len: u64,
    ) -> Result<bytes::Bytes> {
        let (_permit, mut body) = self.get(f, offset, len).await.map_err(|e| e.err)?;
        let mut out = Vec::with_capacity(len as usize);
        while (out.len() as u64) < len {
            match body.chunk().await? {
                Some(c) => {
                    let n = c.len().min(len as usize - out.len());
                    out.extend_from_slice(&c[..n]);
                }
                None => break,
            }
        }
        Ok(bytes::Bytes::from(out))
    }

    /// Makes a downloaded block readable at once (in memory) and writes it to disk in the
    /// background; at most `DISK_WRITES` blocks wait for the disk, which slows the download
    /// down when the disk is slower than the network.
    async fn store(&self, f: &FileVersion, idx: u64, data: bytes::Bytes) -> Result<()> {
        let key = BlockKey {
            version: f.version,
            idx: BlockIdx(idx),
        };
        let permit = self
            .disk_writes
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::new(ErrorKind::Io, "shutting down"))?;
        self.cache.keep_hot(key, data.clone());
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = cache.insert(key, &data) {
                tracing::warn!(error = %e, "could not write a downloaded block to the cache");
            }
            drop(permit);
        });
        Ok(())
    }

    /// Waits until every block handed to the disk writer is written.
    pub async fn drain_disk_writes(&self) {
        if let Ok(all) = self.disk_writes.acquire_many(DISK_WRITES as u32).await {
            drop(all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{join_range, BufPool, Pooled};
    use bytes::Bytes;
    use std::sync::{Arc, Mutex};

    #[test]
    fn join_range_slices_one_block_and_copies_across_blocks() {
        let a = Bytes::from((0u8..10).collect::<Vec<_>>());
        let b = Bytes::from((10u8..20).collect::<Vec<_>>());
        let c = Bytes::from((20u8..25).collect::<Vec<_>>());
        // Inside one block (file offset 100 = block start): a slice of it.
        let one = join_range(std::slice::from_ref(&b), 100, 102, 105).expect("in block");
        assert_eq!(&one[..], &[12, 13, 14]);
        assert_eq!(one.as_ptr(), b[2..].as_ptr(), "no copy inside one block");
        // Across three blocks, ending inside the short last block.
        let all = [a, b, c];
        let span = join_range(&all, 0, 8, 23).expect("across");
        assert_eq!(&span[..], &(8u8..23).collect::<Vec<_>>()[..]);
        // Past the end of what the blocks hold: not answered from memory.
        assert!(join_range(&all, 0, 20, 26).is_none());
    }

    #[test]
    fn block_buffers_are_reused_and_bounded() {
        let pool = Arc::new(BufPool {
            free: Mutex::new(Vec::new()),
            size: 8,
            max: 1,
        });
        let mut v = pool.take();
        assert_eq!(v.len(), 8, "a pooled buffer is one block long");
        v.copy_from_slice(b"abcdefgh");
        let ptr = v.as_ptr();
        let one = pool.share(v, 6);
        assert_eq!(&one[..], b"abcdef", "shared as the length filled");
        let part = one.slice(2..4);
        drop(one);
        assert_eq!(&part[..], b"cd", "a slice keeps the buffer alive");
        assert!(pool.free.lock().expect("pool").is_empty());
        drop(part);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the buffer came back to the pool");
        assert_eq!(again.len(), 8, "its full length, not cleared");
        // A buffer smaller than a block is not kept; beyond `max` idle buffers, none is.
        for len in [4, 8, 8] {
            drop(Bytes::from_owner(Pooled {
                buf: vec![0; len],
                pool: pool.clone(),
            }));
        }
        let free = pool.free.lock().expect("pool");
        assert_eq!(free.len(), 1);
        assert_eq!(free[0].len(), 8, "a short buffer was kept");
    }
}
