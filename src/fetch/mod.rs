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

/// The bytes `[offset, end)` out of consecutive blocks (with their run ids, see
/// [`BlockCache::keep_hot`]) starting at file offset `start`: a slice, without copying, when
/// they lie in one block or in consecutive blocks of one download run; else one copy. `None`
/// when the blocks are too short.
fn join_range(
    blocks: &[(bytes::Bytes, u64)],
    start: u64,
    offset: u64,
    end: u64,
) -> Option<bytes::Bytes> {
    let from = (offset - start) as usize;
    let to = (end - start) as usize;
    let total: usize = blocks.iter().map(|(b, _)| b.len()).sum();
    if to > total {
        return None;
    }
    if let [(one, _)] = blocks {
        return Some(one.slice(from..to));
    }
    let one_run = blocks.windows(2).all(|w| {
        let ((a, ra), (b, rb)) = (&w[0], &w[1]);
        *ra != 0 && ra == rb && a.as_ptr().wrapping_add(a.len()) == b.as_ptr()
    });
    if one_run {
        return Some(bytes::Bytes::from_owner(Span {
            ptr: blocks[0].0.as_ptr().wrapping_add(from),
            len: to - from,
            _parts: blocks.iter().map(|(b, _)| b.clone()).collect(),
        }));
    }
    let mut out = Vec::with_capacity(to - from);
    let mut pos = 0usize;
    for (b, _) in blocks {
        let (lo, hi) = (pos, pos + b.len());
        if hi > from && lo < to {
            out.extend_from_slice(&b[from.max(lo) - lo..to.min(hi) - lo]);
        }
        pos = hi;
    }
    Some(bytes::Bytes::from(out))
}

/// Bytes that span consecutive blocks of one download run, answered without a copy.
struct Span {
    ptr: *const u8,
    len: usize,
    /// The blocks, keeping their shared buffer alive.
    _parts: Vec<bytes::Bytes>,
}

// SAFETY: a `Span` only reads memory that its `_parts` (which are `Send + Sync`) keep alive
// and that nobody writes any more.
unsafe impl Send for Span {}
// SAFETY: as for `Send`: shared access is read-only.
unsafe impl Sync for Span {}

impl AsRef<[u8]> for Span {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `join_range` builds a `Span` only over blocks of one download run (same
        // non-zero run id), which `download_run` splits off one buffer allocated once for the
        // whole run and never grown, so they lie end to end inside that one allocation; the
        // range is within them, `_parts` keeps the allocation alive, and the frozen blocks
        // are never written again.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
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
    /// Ids of download runs (0 is never used).
    runs: std::sync::atomic::AtomicU64,
}

impl Fetcher {
    /// A fetcher with at most `parallel` concurrent GETs of at most `max_run` blocks each.
    pub fn new(dav: DavClient, cache: Arc<BlockCache>, parallel: usize, max_run: u64) -> Self {
        Fetcher {
            dav,
            cache,
            inflight: Mutex::new(HashMap::new()),
            gets: Arc::new(Semaphore::new(parallel.max(1))),
            disk_writes: Arc::new(Semaphore::new(DISK_WRITES)),
            max_run: max_run.max(1),
            runs: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The block cache.
    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
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
        if offset >= file.size || size == 0 {
            return Ok(bytes::Bytes::new());
        }
        let end = (offset + size as u64).min(file.size);
        let first = offset / bs;
        let last = (end - 1) / bs;
        tracing::trace!(offset, size, first, last, "read");
        // A block can be evicted between download and copy when the cache is tiny; retry.
        for attempt in 0..4 {
            self.ensure(file, first..last + 1, last + 1..last + 1 + ahead)
                .await?;
            if let Some(blocks) = self.cache.hot_run(file.version, first, last) {
                if let Some(b) = join_range(&blocks, first * bs, offset, end) {
                    return Ok(b);
                }
            }
            tracing::trace!(offset, "read from disk");
            let cache = self.cache.clone();
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
                Ok::<_, crate::cache::CacheError>(Some(bytes::Bytes::from(buf)))
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

    /// Waits for a GET slot and starts a ranged GET.
    async fn get(
        &self,
        f: &FileVersion,
        start: u64,
        len: u64,
    ) -> Result<(tokio::sync::SemaphorePermit<'_>, crate::webdav::RangeBody)> {
        let permit = self
            .gets
            .acquire()
            .await
            .map_err(|_| Error::new(ErrorKind::Io, "shutting down"))?;
        let body = self
            .dav
            .get_range(&f.path, start, len, f.etag.as_deref())
            .await?;
        Ok((permit, body))
    }

    /// Makes sure the `need` blocks are cached (waiting for them) and starts downloading the
    /// `ahead` blocks without waiting.
    pub async fn ensure(
        self: &Arc<Self>,
        f: &FileVersion,
        need: Range<u64>,
        ahead: Range<u64>,
    ) -> Result<()> {
        let last = self.block_count(f.size);
        let need = need.start.min(last)..need.end.min(last);
        let ahead = ahead.start.min(last)..ahead.end.min(last);
        let mut waits = Vec::new();
        let mut starts: Vec<(u64, watch::Sender<Done>)> = Vec::new();
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
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
        Ok(())
    }

    fn spawn_run(self: &Arc<Self>, f: &FileVersion, run: Vec<(u64, watch::Sender<Done>)>) {
        if run.is_empty() {
            return;
        }
        let me = self.clone();
        let f = f.clone();
        tokio::spawn(async move {
            let first = run[0].0;
            let mut senders = run.into_iter().map(|(_, tx)| tx).collect::<Vec<_>>();
            let n = senders.len() as u64;
            let res = me.download_run(&f, first, n, &mut senders).await;
            // Whatever did not complete fails with the run's error.
            let err = match res {
                Ok(()) => Error::new(ErrorKind::Io, format!("download of {} ended early", f.path)),
                Err(e) => {
                    tracing::warn!(path = %f.path, error = %e, "download failed");
                    e
                }
            };
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

    async fn download_run(
        &self,
        f: &FileVersion,
        first: u64,
        n: u64,
        senders: &mut [watch::Sender<Done>],
    ) -> Result<()> {
        let bs = self.cache.block_size();
        let start = first * bs;
        let end = ((first + n) * bs).min(f.size);
        let (_permit, mut body) = self.get(f, start, end - start).await?;
        // One buffer for the whole run, never grown: its blocks are split off it and stay end
        // to end, so a read across two of them needs no copy (see `join_range`).
        let total = (end - start) as usize;
        let mut run = bytes::BytesMut::with_capacity(total);
        let mut received = 0usize;
        let run_id = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let block_len = |idx: u64| (f.size - idx * bs).min(bs) as usize;
        let mut idx = first;
        while idx < first + n {
            while run.len() < block_len(idx) {
                match body.chunk().await? {
                    Some(c) => {
                        let take = c.len().min(total - received);
                        run.extend_from_slice(&c[..take]);
                        received += take;
                    }
                    None => {
                        return Err(Error::new(
                            ErrorKind::Io,
                            format!(
                                "the server sent a short body for {} ({} bytes missing)",
                                f.path,
                                total - received
                            ),
                        ))
                    }
                }
            }
            while idx < first + n && run.len() >= block_len(idx) {
                let block = run.split_to(block_len(idx)).freeze();
                self.store(f, idx, block, run_id).await?;
                self.finish(f, idx, &senders[(idx - first) as usize], Ok(()));
                idx += 1;
            }
        }
        Ok(())
    }

    /// Downloads `[offset, offset + len)` of `f` into memory without caching it: for a reader of
    /// a version the cache no longer keeps (the file changed after the handle was opened).
    pub async fn fetch_direct(
        &self,
        f: &FileVersion,
        offset: u64,
        len: u64,
    ) -> Result<bytes::Bytes> {
        let (_permit, mut body) = self.get(f, offset, len).await?;
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
    async fn store(&self, f: &FileVersion, idx: u64, data: bytes::Bytes, run: u64) -> Result<()> {
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
        self.cache.keep_hot(key, data.clone(), run);
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
    use super::join_range;
    use bytes::Bytes;

    #[test]
    fn join_range_slices_one_block_and_copies_across_blocks() {
        let a = Bytes::from((0u8..10).collect::<Vec<_>>());
        let b = Bytes::from((10u8..20).collect::<Vec<_>>());
        let c = Bytes::from((20u8..25).collect::<Vec<_>>());
        // Inside one block (file offset 100 = block start): a slice of it.
        let one = join_range(&[(b.clone(), 0)], 100, 102, 105).expect("in block");
        assert_eq!(&one[..], &[12, 13, 14]);
        assert_eq!(one.as_ptr(), b[2..].as_ptr(), "no copy inside one block");
        // Across three blocks of no common run, ending inside the short last block.
        let all = [(a, 0), (b, 0), (c, 0)];
        let span = join_range(&all, 0, 8, 23).expect("across");
        assert_eq!(&span[..], &(8u8..23).collect::<Vec<_>>()[..]);
        // Past the end of what the blocks hold: not answered from memory.
        assert!(join_range(&all, 0, 20, 26).is_none());
    }

    #[test]
    fn blocks_of_one_run_are_joined_without_copying() {
        // As `download_run` makes them: split off one buffer.
        let mut run = bytes::BytesMut::with_capacity(30);
        run.extend_from_slice(&(0u8..30).collect::<Vec<_>>());
        let x = run.split_to(10).freeze();
        let y = run.split_to(10).freeze();
        let z = run.split_to(10).freeze();
        let blocks = [(x.clone(), 7), (y.clone(), 7), (z, 7)];
        let span = join_range(&blocks, 0, 5, 25).expect("across");
        assert_eq!(&span[..], &(5u8..25).collect::<Vec<_>>()[..]);
        assert_eq!(span.as_ptr(), x[5..].as_ptr(), "no copy within one run");
        // The same bytes claimed by two different runs are copied, never joined.
        let mixed = [(x, 7), (y, 8)];
        let copied = join_range(&mixed, 0, 5, 15).expect("across");
        assert_eq!(&copied[..], &(5u8..15).collect::<Vec<_>>()[..]);
        assert_ne!(copied.as_ptr(), mixed[0].0[5..].as_ptr());
    }
}
