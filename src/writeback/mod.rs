//! Write-back: local changes land in files under `<cache dir>/dirty/` at disk speed, are
//! recorded in a durable journal, and are uploaded in the background.
//!
//! ## Model
//! Each changed file is a [`DirtyFile`], keyed by its current remote path: a local data file
//! holding the new content, plus the server version it is based on (`base`: etag and size, or
//! none for a new file). A write into an existing file that is not fully cached does not
//! download it first: the byte ranges held locally are tracked (`present`), reads of the other
//! ranges come from the base version, and before upload every missing range is fetched from the
//! base version (conditional on its etag), so a file with holes is never uploaded.
//!
//! ## Durability
//! `persist` (called by `flush`/`fsync`, hence before `close()` returns) syncs the data file and
//! then writes the journal row (`synchronous=FULL`); a small file's content goes into the row
//! instead, so one sync makes both durable. After `kill -9` or a power cut the next
//! mount finds the rows and uploads them. Nothing is removed from the journal before the server
//! confirmed the upload.
//!
//! ## Uploads
//! A background actor uploads files whose last writer closed them at least `upload_delay` ago
//! (so a file created and deleted within seconds is never sent), several at once. Every upload
//! is conditional: `If-Match: <base etag>` to replace, `If-None-Match: *` to create. A 412 means
//! someone changed the server copy: it is kept, and ours is uploaded beside it as
//! `name (conflicted copy YYYY-MM-DD HHMMSS).ext` (UTC). 507 keeps the data and reports the
//! quota; 423, 5xx and network errors retry with capped exponential backoff, forever. Large
//! files use Nextcloud chunked upload when the server offers it, resumable after a restart.
//!
//! ## Concurrency
//! `files` (the registry) and each file's `st` are `std::sync::Mutex`es held for short
//! updates; lock order `files` → `st` → `journal`. Each file's `upload_lock` (async) is held for
//! a whole upload; renames and deletions take it too, so they wait for an upload in flight
//! instead of racing it (the server then holds a consistent state to rename or delete).

pub mod journal;
pub mod ranges;

use crate::cache::{read_exact_at, write_all_at, VersionId};
use crate::error::{Error, ErrorKind, Result};
use crate::fetch::{Fetcher, FileVersion};
use crate::webdav::{strong_etag, DavClient, DavError, Depth, PutOptions, RemotePath};
use journal::{ChunkSession, Journal, Row};
use ranges::RangeSet;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

pub use journal::Conflict;

/// A fresh chunked-upload id for the journal row `id`.
fn upload_id_for(id: i64) -> String {
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|x| x.as_nanos())
        .unwrap_or(0);
    format!("nuage-{id}-{nonce:x}")
}

/// Written bytes after which the disk is asked to start writing a file out.
const START_WRITEOUT: u64 = 16 << 20;

/// Starts (without waiting for it) the write-out of a file's dirty pages.
#[cfg(target_os = "linux")]
fn start_writeout(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; the call only schedules I/O on it.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeout(_f: &File) {}

/// Once a large file's data is on disk and its last writer closed it, its upload reads it
/// once: the kernel need not keep it in memory meanwhile (see [`drop_pages`]).
const DROP_BEHIND_MIN: u64 = 64 << 20;

/// Lets the kernel drop the (synced, so clean) cached pages of `f`: a 1 GiB save does not
/// hold 1 GiB of memory until its upload ends, and that memory is free again for whatever
/// comes next (the server receiving the upload, on a machine that hosts it).
#[cfg(target_os = "linux")]
fn drop_pages(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; the call is only advice about its cached pages.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

#[cfg(not(target_os = "linux"))]
fn drop_pages(_f: &File) {}

/// After a refused conditional upload or a lost answer, files up to this size are compared
/// with the server's copy (read as it arrives, up to the first difference) before a conflict
/// is declared or the upload sent again: a download of this size at worst, against a
/// conflicted copy of it in the account.
const IDENTICAL_CHECK_MAX: u64 = 256 << 20;

/// Files up to this size are made durable by their journal row alone (the content is in it).
const INLINE_MAX: u64 = 64 << 10;

/// The smallest chunk uploads go in after 413s (Nextcloud on an object store wants 5 MiB
/// or more; elsewhere any size goes).
const MIN_CHUNK: u64 = 1 << 20;

/// A small file's whole content, when all of it is local: saved in its journal row, so that one
/// sync of the journal makes both the row and the data durable.
fn inline_content(d: &DirtyFile, st: &DirtyState) -> Option<Vec<u8>> {
    if st.size > INLINE_MAX || !st.present.missing(0, st.size).is_empty() {
        return None;
    }
    let mut buf = vec![0u8; st.size as usize];
    read_exact_at(&*d.file_once().ok()?, &mut buf, 0).ok()?;
    Some(buf)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent; recover from poisoning.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// ENOSPC / EDQUOT from the file system, SQLITE_FULL from the journal.
fn is_no_space(e: &impl std::fmt::Display) -> bool {
    let s = e.to_string();
    ["No space left", "quota exceeded", "disk is full"]
        .iter()
        .any(|m| s.contains(m))
}

fn io(what: &str, e: impl std::fmt::Display) -> Error {
    let kind = if is_no_space(&e) {
        ErrorKind::NoSpace
    } else {
        ErrorKind::Io
    };
    Error::new(kind, format!("{what}: {e}"))
}

/// A journal that cannot be opened or read. A damaged one is never set aside or made anew
/// (it may hold the only record of changes not yet on the server): the mount refuses, saying
/// where it is and what to do.
fn journal_err(dir: &Path, what: &str, e: rusqlite::Error) -> Error {
    if crate::cache::is_damaged(&e) {
        return Error::new(
            ErrorKind::Io,
            format!(
                "the write-back journal {} is damaged ({e}); it may list changes not yet on the \
                 server, whose bytes are in {}: copy them somewhere safe, then move the journal \
                 away to mount without them",
                dir.join("journal.sqlite").display(),
                dir.join("dirty").display()
            ),
        );
    }
    io(&format!("cannot {what} the journal"), e)
}

/// Write-back settings.
#[derive(Debug, Clone)]
pub struct WriteBackConfig {
    /// Folder holding `journal.sqlite` and `dirty/`.
    pub dir: PathBuf,
    /// Time between the last close and the upload.
    pub upload_delay: Duration,
    /// Uploads at once; files larger than [`SMALL_UPLOAD`] take at most half of them (as the
    /// desktop client lets more small transfers than large ones run at once: on a distant
    /// server, small files wait on round trips, large ones share the bandwidth).
    pub parallel: usize,
    /// Files larger than this use chunked upload (when the server offers it).
    pub chunk_threshold: u64,
    /// Chunk size.
    pub chunk_size: u64,
    /// Chunks of one file sent at once.
    pub chunk_parallel: usize,
    /// Cache identity prefix (server root URL), to keep uploaded content as cached blocks.
    pub identity: String,
}

/// The server version a change is based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// Its etag, when the server gives one.
    pub etag: Option<String>,
    /// Its size.
    pub size: u64,
    /// Its id in the block cache.
    pub version: VersionId,
    /// Its server modification time in seconds, when known: it tells the version from a
    /// newer one on servers that give no etag.
    pub mtime: Option<i64>,
}

impl Base {
    /// Whether the server entry `e` is still this version.
    pub fn is(&self, e: &crate::webdav::Entry) -> bool {
        e.is_version(self.etag.as_deref(), self.size, self.mtime)
    }
}

/// DELETE conditional on `known` (its etag). A 412 is double-checked: Apache refuses
/// `If-Match` for a file changed within the last second (its etag is weak then) although it
/// is still the version we know; only a server copy with another etag is really newer. On a
/// server that ignores conditions, the server copy is looked at first (what is left is the
/// short time between this look and the DELETE).
pub async fn delete_if_unchanged(
    dav: &DavClient,
    path: &RemotePath,
    dir: bool,
    known: &Base,
) -> std::result::Result<(), DavError> {
    let still = |v: Vec<crate::webdav::Entry>| still_base(v.first(), Some(known));
    if !dir
        && !server_enforces(dav, Some(known)).await
        && !still(dav.propfind(path, Depth::Zero).await?)
    {
        return Err(DavError::PreconditionFailed(format!(
            "{path} changed on the server"
        )));
    }
    match dav.delete(path, dir, known.etag.as_deref()).await {
        Err(DavError::PreconditionFailed(m)) => {
            if known.etag.is_some() && still(dav.propfind(path, Depth::Zero).await?) {
                dav.delete(path, dir, None).await
            } else {
                Err(DavError::PreconditionFailed(m))
            }
        }
        other => other,
    }
}

/// Whether what the server holds now (`None`: nothing) is what a change is based on
/// (`None`: nothing, a new file).
pub fn still_base(now: Option<&crate::webdav::Entry>, base: Option<&Base>) -> bool {
    match (now, base) {
        (None, None) => true,
        (Some(e), Some(b)) => b.is(e),
        _ => false,
    }
}

/// Whether the server itself refuses a PUT or DELETE conditional on `base` (`If-Match`, or
/// `If-None-Match: *` for a new file) once the condition fails. Not when it ignores
/// conditions, nor for a base without an etag (`If-Match` cannot name it): the caller must
/// then look at the server copy first.
pub async fn server_enforces(dav: &DavClient, base: Option<&Base>) -> bool {
    match base {
        Some(b) if b.etag.is_none() => false,
        _ => dav.honours_conditions().await,
    }
}

/// The etag of file `to` just moved there, given by the MOVE answer (`given`) or else asked
/// for: a server that does not say it (Apache) may still have changed it, and later
/// conditional requests must use the right one. `None` for a folder or when unknown.
pub async fn etag_after_move(
    dav: &DavClient,
    to: &RemotePath,
    given: Option<String>,
    is_dir: bool,
) -> Option<String> {
    match (given, is_dir) {
        (None, false) => dav
            .propfind(to, crate::webdav::Depth::Zero)
            .await
            .ok()
            .and_then(|v| v.into_iter().next())
            .and_then(|e| e.etag),
        (e, _) => e,
    }
}

/// Mutable state of a changed file.
#[derive(Debug, Clone)]
pub struct DirtyState {
    /// Current remote path.
    pub path: RemotePath,
    /// Current size.
    pub size: u64,
    /// Current modification time.
    pub mtime: SystemTime,
    /// The server version this change replaces (`None`: a new file).
    pub base: Option<Base>,
    base_len: u64,
    present: RangeSet,
    /// Bumped by every change of content, size or mtime.
    pub generation: u64,
    persisted: u64,
    /// Handles open for writing.
    pub open_writers: u32,
    /// Editor lock and swap files: never uploaded, never journaled.
    pub local_only: bool,
    /// Upload attempts that failed.
    pub attempts: u32,
    /// The last upload error.
    pub last_error: Option<String>,
    /// The server refused the last upload for quota (507).
    pub quota_error: bool,
    /// The server refused the last upload for what it is (its name or place, its size):
    /// sending it again as it is will not help.
    pub refused: bool,
    next_attempt: Option<Instant>,
    uploading: bool,
    /// Upload it alone, with its conditions, not in bulk: a file of that name appeared on the
    /// server, or a bulk request refused it.
    one_by_one: bool,
}

/// One changed file. See the module documentation.
pub struct DirtyFile {
    id: i64,
    data_path: PathBuf,
    /// The open data file while programs write it (see [`DirtyFile::file`]).
    file: Mutex<Option<Arc<File>>>,
    st: Mutex<DirtyState>,
    upload_lock: Arc<tokio::sync::Mutex<()>>,
    /// Serializes journal writes of this file: a row computed earlier must never be saved
    /// after a newer one.
    persist_lock: Mutex<()>,
    /// Bytes sent by the upload in progress.
    pub sent: Arc<AtomicU64>,
    /// Bytes written since the disk was last asked to start writing this file out.
    unstarted: AtomicU64,
    /// The kernel writes the data file directly (passthrough, see
    /// [`WriteBack::take_content`]): its size and time are read from it
    /// ([`DirtyFile::fresh_st`]).
    external: AtomicBool,
    /// The data file's size and modification time when last absorbed.
    seen: Mutex<Option<(u64, SystemTime)>>,
}

impl DirtyFile {
    /// The data file, kept open from the first write until the last writer closes it
    /// ([`WriteBack::release`]). A pending change holds no descriptor otherwise: thousands
    /// of files waiting for a slow server (`tar x`, `git clone`) must not exhaust them.
    fn file(&self) -> std::io::Result<Arc<File>> {
        let mut g = lock(&self.file);
        if let Some(f) = g.as_ref() {
            return Ok(f.clone());
        }
        let f = Arc::new(self.open_data()?);
        *g = Some(f.clone());
        Ok(f)
    }

    /// The data file for one read or sync: the one kept open if any, else opened for this
    /// use only.
    fn file_once(&self) -> std::io::Result<Arc<File>> {
        if let Some(f) = lock(&self.file).as_ref() {
            return Ok(f.clone());
        }
        Ok(Arc::new(self.open_data()?))
    }

    fn open_data(&self) -> std::io::Result<File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.data_path)
    }

    /// Closes the kept descriptor (users of a clone keep theirs until they are done).
    fn close_file(&self) {
        lock(&self.file).take();
    }

    /// A snapshot of the state.
    pub fn state(&self) -> DirtyState {
        self.fresh_st().clone()
    }

    /// The state, with what the kernel wrote into the data file directly (see
    /// [`WriteBack::take_content`]) read in first: its size and time, as one more
    /// generation. One `fstat` for such a file, nothing for the others.
    fn fresh_st(&self) -> MutexGuard<'_, DirtyState> {
        let mut st = lock(&self.st);
        if self.is_external() {
            match self.file_once().and_then(|f| f.metadata()) {
                Ok(md) => {
                    let now = (
                        md.len(),
                        md.modified().unwrap_or_else(|_| SystemTime::now()),
                    );
                    let mut seen = lock(&self.seen);
                    if *seen != Some(now) {
                        *seen = Some(now);
                        st.present = RangeSet::new();
                        st.present.insert(0, now.0);
                        st.size = now.0;
                        st.mtime = now.1;
                        st.generation += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %st.path, error = %e, "cannot read a local file in the cache")
                }
            }
        }
        st
    }

    /// The data file, opened for reading, for the kernel to use as a passthrough backing
    /// file (see [`WriteBack::take_content`]).
    pub fn backing_file(&self) -> std::io::Result<File> {
        File::open(&self.data_path)
    }

    /// Which file on disk holds the data (device and inode), if any.
    pub fn file_id(&self) -> Option<(u64, u64)> {
        crate::cache::file_id(&self.data_path)
    }

    /// True when the kernel may write the data file directly (see [`DirtyFile::fresh_st`]).
    pub fn is_external(&self) -> bool {
        self.external.load(Ordering::Relaxed)
    }

    /// A validator for the kernel page cache: changes whenever the local content does.
    pub fn validator(&self) -> String {
        format!("local:{}", self.id)
    }
}

/// What the write-back tells the filesystem layer.
#[derive(Debug, Clone)]
pub enum Event {
    /// `path` is on the server with this etag, size and mtime.
    Uploaded {
        /// The path.
        path: RemotePath,
        /// New etag.
        etag: Option<String>,
        /// Size uploaded.
        size: u64,
        /// Mtime uploaded.
        mtime: SystemTime,
        /// The server's own modification time, when it gives no etag (the version is then
        /// told by size and this time, so it must be the server's, not ours).
        server_mtime: Option<SystemTime>,
        /// The file's id on the server, when the upload's answer gave it.
        fileid: Option<u64>,
    },
    /// The server copy of `path` changed; ours now lives at `conflict_path`.
    Conflict {
        /// The path whose server copy was kept.
        path: RemotePath,
        /// Where our copy goes.
        conflict_path: RemotePath,
    },
}

/// One pending upload, for `nuage status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingInfo {
    /// Path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Bytes sent by the upload in progress.
    pub bytes_sent: u64,
    /// Failed attempts.
    pub attempts: u32,
    /// The last error.
    pub last_error: Option<String>,
    /// Being uploaded now.
    pub uploading: bool,
    /// The server refused its last upload for quota (507).
    #[serde(default)]
    pub out_of_quota: bool,
    /// The server refused its last upload for what it is (name, place, size): it waits for
    /// someone to act.
    #[serde(default)]
    pub refused: bool,
}

type Listener = Box<dyn Fn(Event) + Send + Sync>;

/// Upload locks of pending files, held across a server-side rename.
pub struct Held(Vec<(Arc<DirtyFile>, tokio::sync::OwnedMutexGuard<()>)>);

/// The write-back queue and its upload actor.
pub struct WriteBack {
    cfg: WriteBackConfig,
    dav: DavClient,
    fetcher: Arc<Fetcher>,
    journal: Mutex<Journal>,
    files: Mutex<HashMap<RemotePath, Arc<DirtyFile>>>,
    next_id: AtomicU64,
    wake: Notify,
    /// Bounds the looks at the server that confirm uploads answered without an etag (made
    /// after their upload slot is given back).
    confirming: tokio::sync::Semaphore,
    listener: Mutex<Option<Listener>>,
    chunking: bool,
    /// The smallest request body the server (or a proxy in front of it) refused as too
    /// large (413); `u64::MAX` while none was. Uploads then go in chunks below it.
    refused_body: AtomicU64,
    /// Cleared when the server turns out not to accept bulk uploads after all.
    bulk: std::sync::atomic::AtomicBool,
    /// Where conflicted copies went (the journal's list, kept in memory for file states).
    conflict_copies: Mutex<std::collections::HashSet<RemotePath>>,
    /// When a program last created or wrote a file here.
    last_write: Mutex<Instant>,
    /// Folders made while the server was out of reach, to be made on the server (in the
    /// journal too); ordered so that a folder comes before its subfolders.
    folders: Mutex<std::collections::BTreeSet<RemotePath>>,
    /// Held while those folders are made on the server, or renamed here: a folder is either
    /// made under its old name and then moved there, or renamed here and made under its new
    /// name, never both.
    folder_work: tokio::sync::Mutex<()>,
    /// Held while what was done offline is sent ([`Self::send_offline_work`]), so that two
    /// callers do not send the same thing twice.
    offline_work: tokio::sync::Mutex<()>,
    /// Files deleted while the server was out of reach, with the server version deleted, to
    /// be deleted there (if still that version) once it answers; in the journal too.
    deletes: Mutex<std::collections::BTreeMap<RemotePath, Base>>,
    /// Server files renamed while the server was out of reach, in the order they were
    /// renamed, to be renamed there once it answers; in the journal too.
    moves: Mutex<Vec<PendingMove>>,
    /// Server folders removed while the server was out of reach, to be removed there once it
    /// answers (if still empty there); in the journal too.
    rmdirs: Mutex<std::collections::BTreeSet<RemotePath>>,
}

/// A server file renamed here while the server was out of reach.
#[derive(Debug, Clone)]
pub struct PendingMove {
    /// Where it is on the server.
    pub from: RemotePath,
    /// Its name here.
    pub to: RemotePath,
    /// The server version renamed.
    pub base: Base,
    /// A folder (with everything in it).
    pub is_dir: bool,
}

/// Uploads yield to a program that is busy writing: they start once it paused this long...
const QUIET: Duration = Duration::from_millis(150);
/// ...or once they waited this long past their time anyway.
const MAX_YIELD: Duration = Duration::from_secs(2);

/// Files up to this size may use every upload slot (see [`WriteBackConfig::parallel`]).
const SMALL_UPLOAD: u64 = 1 << 20;

/// New files up to this size may go up together in one bulk upload.
const BULK_MAX_FILE: u64 = 1 << 20;
/// At most this many files per bulk upload.
const BULK_MAX_FILES: usize = 100;

/// The `(new, old)` name pairs of waiting renames, in order (see
/// [`RemotePath::before_moves`]).
fn redirects_of(moves: &[PendingMove]) -> Vec<(RemotePath, RemotePath)> {
    moves
        .iter()
        .map(|m| (m.to.clone(), m.from.clone()))
        .collect()
}

/// Whether an upload that failed with `e` may have reached the server all the same: its
/// connection broke, or its answer did not come, came cut short, or came from a gateway.
fn outcome_unknown(e: &DavError) -> bool {
    matches!(
        e,
        DavError::Connect(_)
            | DavError::Timeout(_)
            | DavError::BadResponse(_)
            // A gateway that gave up waiting for the server (which may have finished).
            | DavError::Unavailable(502 | 504)
    )
}

/// Whether the server's `e` is the upload of `snap` done already: same size, same
/// modification time (sent as `X-OC-Mtime`), and not the version it was based on.
fn assembled_as(snap: &DirtyState, e: &crate::webdav::Entry) -> bool {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok();
    let same_base = match (&snap.base, &e.etag) {
        (Some(b), Some(now)) => b.etag.as_deref().map(strong_etag) == Some(strong_etag(now)),
        _ => false,
    };
    !e.is_dir && e.size == snap.size && secs(e.mtime) == secs(snap.mtime) && !same_base
}

/// The names of those of `paths` directly inside folder `dir`.
fn names_in<'a, C: FromIterator<String>>(
    paths: impl Iterator<Item = &'a RemotePath>,
    dir: &RemotePath,
) -> C {
    paths
        .filter(|p| p.parent().as_ref() == Some(dir))
        .map(|p| p.name().to_string())
        .collect()
}

/// Editor lock and swap files stay local (like the Nextcloud client's exclude list).
pub fn is_excluded(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    // Partial downloads: the server refuses these endings (nextcloud-protocol.md §10).
    lower.ends_with(".part")
        || lower.ends_with(".filepart")
        || (name.starts_with(".~lock.") && name.ends_with('#'))
        || name.starts_with("~$")
        || (name.starts_with('.')
            && (name.ends_with(".swp") || name.ends_with(".swx") || name.ends_with(".swo")))
        || name.ends_with('~')
}

/// Year, month, day, hours, minutes, seconds (UTC) of a Unix time (H. Hinnant's civil-date
/// algorithm).
pub fn civil_utc(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let (days, rem) = (secs / 86400, secs % 86400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `name (conflicted copy YYYY-MM-DD HHMMSS).ext`, in UTC.
pub fn conflict_name(name: &str, now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d, hh, mm, ss) = civil_utc(secs);
    let stamp = format!("{y:04}-{m:02}-{d:02} {hh:02}{mm:02}{ss:02}");
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    format!("{stem} (conflicted copy {stamp}){ext}")
}

impl WriteBack {
    /// Opens the journal in `cfg.dir` and reloads every pending change.
    pub fn open(
        cfg: WriteBackConfig,
        dav: DavClient,
        fetcher: Arc<Fetcher>,
        chunking: bool,
    ) -> Result<Arc<WriteBack>> {
        let dirty_dir = cfg.dir.join("dirty");
        std::fs::create_dir_all(&dirty_dir)
            .map_err(|e| io("cannot create the journal folder", e))?;
        let journal = Journal::open(&cfg.dir).map_err(|e| journal_err(&cfg.dir, "open", e))?;
        let conflict_copies = journal
            .conflicts()
            .unwrap_or_default()
            .into_iter()
            .map(|c| RemotePath::new(&c.conflict_path))
            .collect();
        let rows = journal
            .rows()
            .map_err(|e| journal_err(&cfg.dir, "read", e))?;
        let max = journal
            .max_id()
            .map_err(|e| journal_err(&cfg.dir, "read", e))?;
        let folders = journal
            .folders()
            .map_err(|e| journal_err(&cfg.dir, "read", e))?
            .into_iter()
            .collect();
        let deletes = journal
            .deletes()
            .map_err(|e| journal_err(&cfg.dir, "read", e))?
            .into_iter()
            .map(|(p, etag, size, mtime)| {
                let base = Base {
                    etag,
                    size,
                    // Not needed to delete it; the cache has its own record.
                    version: VersionId(-1),
                    mtime,
                };
                (p, base)
            })
            .collect();
        let moves: Vec<PendingMove> = journal
            .moves()
            .map_err(|e| journal_err(&cfg.dir, "read", e))?
            .into_iter()
            .map(|(from, to, etag, size, mtime, is_dir)| PendingMove {
                from,
                to,
                base: Base {
                    etag,
                    size,
                    version: VersionId(-1),
                    mtime,
                },
                is_dir,
            })
            .collect();
        fetcher.set_redirects(redirects_of(&moves));
        let rmdirs = journal
            .rmdirs()
            .map_err(|e| journal_err(&cfg.dir, "read", e))?
            .into_iter()
            .collect();
        let parallel = cfg.parallel.max(1);
        let wb = WriteBack {
            cfg,
            dav,
            fetcher,
            journal: Mutex::new(journal),
            files: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(max as u64 + 1),
            wake: Notify::new(),
            confirming: tokio::sync::Semaphore::new(parallel),
            listener: Mutex::new(None),
            chunking,
            refused_body: AtomicU64::new(u64::MAX),
            bulk: std::sync::atomic::AtomicBool::new(true),
            conflict_copies: Mutex::new(conflict_copies),
            last_write: Mutex::new(Instant::now()),
            folders: Mutex::new(folders),
            folder_work: tokio::sync::Mutex::new(()),
            offline_work: tokio::sync::Mutex::new(()),
            deletes: Mutex::new(deletes),
            moves: Mutex::new(moves),
            rmdirs: Mutex::new(rmdirs),
        };
        let now = Instant::now();
        // Data files no journal row names: a file a killed mount had open and never closed
        // (nothing was promised for it), or one whose row was just forgotten. Only this mount
        // uses the folder (the cache lock), so they are nobody's.
        let known: std::collections::HashSet<String> =
            rows.iter().map(|r| format!("{}.data", r.id)).collect();
        if let Ok(rd) = std::fs::read_dir(&dirty_dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".data") && !known.contains(&name) {
                    tracing::debug!(file = %name, "data file without a journal entry removed");
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for r in rows {
            let data_path = wb.data_path(r.id);
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(r.content.is_some())
                .truncate(false)
                .open(&data_path)
                .and_then(|f| {
                    // A small file's content is in its row: the data file may not have
                    // reached the disk before a power cut, so it is written again.
                    if let Some(c) = &r.content {
                        f.set_len(c.len() as u64)?;
                        write_all_at(&f, c, 0)?;
                        f.sync_data()?;
                    }
                    Ok(f)
                }) {
                // Closed again: it is opened when needed.
                Ok(f) => drop(f),
                Err(e) => {
                    tracing::error!(path = %r.path, error = %e, "journal entry without its data file; it cannot be uploaded");
                    continue;
                }
            };
            tracing::info!(path = %r.path, size = r.size, "resuming a pending upload from the journal");
            let base = r.has_base.then(|| Base {
                etag: r.base_etag.clone(),
                size: r.base_size,
                version: VersionId(-1),
                mtime: r.base_mtime,
            });
            let df = DirtyFile {
                id: r.id,
                data_path,
                file: Mutex::new(None),
                st: Mutex::new(DirtyState {
                    path: r.path.clone(),
                    size: r.size,
                    mtime: r.mtime,
                    base,
                    base_len: r.base_len,
                    present: r.present,
                    generation: r.generation.max(1) as u64,
                    persisted: r.generation.max(1) as u64,
                    open_writers: 0,
                    local_only: false,
                    attempts: 0,
                    last_error: None,
                    quota_error: false,
                    refused: false,
                    next_attempt: Some(now),
                    uploading: false,
                    one_by_one: false,
                }),
                upload_lock: Arc::new(tokio::sync::Mutex::new(())),
                persist_lock: Mutex::new(()),
                sent: Arc::new(AtomicU64::new(0)),
                unstarted: AtomicU64::new(0),
                external: AtomicBool::new(false),
                seen: Mutex::new(None),
            };
            lock(&wb.files).insert(r.path, Arc::new(df));
        }
        let wb = Arc::new(wb);
        // Base versions of resumed entries need cache ids for hole filling.
        for d in wb.all() {
            let mut st = lock(&d.st);
            let path = st.path.clone();
            if let Some(b) = st.base.as_mut() {
                let ident = wb.identity(&path);
                let etag = b.etag.clone().unwrap_or_else(|| format!("size:{}", b.size));
                if let Ok(v) = wb.fetcher.cache().version(&ident, &etag) {
                    b.version = v;
                }
            }
        }
        Ok(wb)
    }

    /// Registers the function that receives [`Event`]s.
    pub fn set_listener(&self, f: impl Fn(Event) + Send + Sync + 'static) {
        *lock(&self.listener) = Some(Box::new(f));
    }

    fn emit(&self, e: Event) {
        if let Some(f) = lock(&self.listener).as_ref() {
            f(e);
        }
    }

    fn identity(&self, p: &RemotePath) -> String {
        format!("{}\n{}", self.cfg.identity, p.as_str())
    }

    fn data_path(&self, id: i64) -> PathBuf {
        self.cfg.dir.join("dirty").join(format!("{id}.data"))
    }

    /// Every changed file.
    pub fn all(&self) -> Vec<Arc<DirtyFile>> {
        lock(&self.files).values().cloned().collect()
    }

    /// The changed file at `p`.
    pub fn get(&self, p: &RemotePath) -> Option<Arc<DirtyFile>> {
        lock(&self.files).get(p).cloned()
    }

    /// Changed files directly inside folder `dir`.
    pub fn children_of(&self, dir: &RemotePath) -> Vec<(String, DirtyState)> {
        lock(&self.files)
            .iter()
            .filter(|(p, _)| p.parent().as_ref() == Some(dir))
            .map(|(p, d)| (p.name().to_string(), d.state()))
            .collect()
    }

    /// Runs `f` on the journal and syncs it: durable when this returns. Blocks on the disk.
    fn journal_write(
        &self,
        what: &str,
        f: impl FnOnce(&Journal) -> rusqlite::Result<()>,
    ) -> Result<()> {
        let j = lock(&self.journal);
        f(&j).and_then(|()| j.sync()).map_err(|e| io(what, e))
    }

    /// Forgets a folder made offline or a delete made offline, in memory and in the journal
    /// (done on the server, or given up).
    fn forget_offline_work(&self, p: &RemotePath) {
        let folder = lock(&self.folders).remove(p);
        let delete = lock(&self.deletes).remove(p).is_some();
        let res = self.journal_write("cannot update the journal", |j| {
            if folder {
                j.remove_folder(p)?;
            }
            if delete {
                j.remove_delete(p)?;
            }
            Ok(())
        });
        if let Err(e) = res {
            tracing::warn!(path = %p, error = %e, "journal not updated");
        }
    }

    /// Records folder `p`, made while the server is out of reach, to be made there later;
    /// durable when this returns. Blocks on the disk.
    pub fn add_folder(&self, p: &RemotePath) -> Result<()> {
        if lock(&self.rmdirs).contains(p) {
            // Removed here, then made again: it stays on the server as it is (empty).
            self.journal_write("cannot update the journal", |j| j.remove_rmdir(p))?;
            lock(&self.rmdirs).remove(p);
            return Ok(());
        }
        self.journal_write("cannot record the new folder in the journal", |j| {
            j.add_folder(p)
        })?;
        lock(&self.folders).insert(p.clone());
        self.wake.notify_one();
        Ok(())
    }

    /// True when folder `p` is waiting to be made on the server.
    pub fn is_folder_pending(&self, p: &RemotePath) -> bool {
        lock(&self.folders).contains(p)
    }

    /// The folders waiting to be made on the server.
    pub fn pending_folders(&self) -> Vec<RemotePath> {
        lock(&self.folders).iter().cloned().collect()
    }

    /// Keeps the folders made offline from being made on the server until the guard is
    /// dropped (see [`Self::move_waiting_folders`]).
    pub async fn folder_work(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.folder_work.lock().await
    }

    /// Renames folder `from`, made offline and not on the server yet, and the waiting folders
    /// below it, to `to` (the pending files below it move with [`Self::rename`]). Call with
    /// [`Self::folder_work`] held. Blocks on the disk (briefly).
    pub fn move_waiting_folders(&self, from: &RemotePath, to: &RemotePath) -> Result<()> {
        let prefix = format!("{}/", from.as_str());
        let moves: Vec<(RemotePath, RemotePath)> = lock(&self.folders)
            .iter()
            .filter_map(|p| {
                if p == from {
                    Some((p.clone(), to.clone()))
                } else {
                    p.as_str().strip_prefix(&prefix).map(|rest| {
                        (
                            p.clone(),
                            RemotePath::new(&format!("{}/{rest}", to.as_str())),
                        )
                    })
                }
            })
            .collect();
        self.journal_write("cannot record the renamed folder in the journal", |j| {
            j.rename_folders(&moves)
        })?;
        let mut set = lock(&self.folders);
        for (old, new) in moves {
            set.remove(&old);
            set.insert(new);
        }
        Ok(())
    }

    /// Records that file `p`, server version `base`, was deleted while the server is out of
    /// reach: it is deleted there once it answers, if it is still that version. Durable when
    /// this returns. Blocks on the disk.
    pub fn add_delete(&self, p: &RemotePath, base: Base) -> Result<()> {
        self.journal_write("cannot record the delete in the journal", |j| {
            j.add_delete(p, base.etag.as_deref(), base.size, base.mtime)
        })?;
        lock(&self.deletes).insert(p.clone(), base);
        self.wake.notify_one();
        Ok(())
    }

    /// The files deleted here that wait to be deleted on the server.
    pub fn pending_deletes(&self) -> Vec<RemotePath> {
        lock(&self.deletes).keys().cloned().collect()
    }

    /// Names of the files in `dir` deleted here that wait to be deleted on the server.
    pub fn deletes_in(&self, dir: &RemotePath) -> std::collections::HashSet<String> {
        names_in(lock(&self.deletes).keys(), dir)
    }

    /// Deletes on the server the files deleted here while it was out of reach, each only if
    /// it is still the version that was deleted (a newer one is kept, and shows again). Stops
    /// at the first failure to reach the server.
    pub async fn send_deletes(&self) -> std::result::Result<(), DavError> {
        let todo: Vec<(RemotePath, Base)> = lock(&self.deletes)
            .iter()
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect();
        for (p, base) in todo {
            match delete_if_unchanged(&self.dav, &p, false, &base).await {
                Ok(()) | Err(DavError::NotFound(_)) => {
                    tracing::info!(path = %p, "deleted on the server");
                }
                Err(DavError::PreconditionFailed(_)) => {
                    tracing::warn!(path = %p, "not deleted on the server: it changed there meanwhile, and is kept");
                }
                Err(e) if e.is_retryable() || matches!(e, DavError::Unauthorized) => return Err(e),
                Err(e) => {
                    tracing::warn!(path = %p, error = %e, "the server refused to delete it; it is kept there");
                }
            }
            self.forget_offline_work(&p);
        }
        Ok(())
    }

    /// Records that server file `from` (version `base`) was renamed to `to` while the server
    /// is out of reach: renamed there once it answers. A file renamed again just gets its
    /// new name (and none at all when it is back under its server name). Durable when this
    /// returns. Blocks on the disk.
    pub fn add_move(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        base: Base,
        is_dir: bool,
    ) -> Result<()> {
        let mut moves = lock(&self.moves);
        match moves.iter().position(|m| m.to == *from) {
            Some(i) if moves[i].from == *to => {
                self.journal_write("cannot update the journal", |j| j.remove_move(from))?;
                moves.remove(i);
            }
            Some(i) => {
                // Renames made later inside a folder renamed again name it by the name it
                // had then: they follow it to the new one.
                let mut rows = vec![(from.clone(), moves[i].from.clone(), to.clone())];
                rows.extend(
                    moves[i + 1..]
                        .iter()
                        .filter(|m| m.from.is_within(from) || m.to.is_within(from))
                        .map(|m| {
                            let f = m.from.rebased(from, to).unwrap_or_else(|| m.from.clone());
                            let t = m.to.rebased(from, to).unwrap_or_else(|| m.to.clone());
                            (m.to.clone(), f, t)
                        }),
                );
                self.journal_write("cannot record the rename in the journal", |j| {
                    j.rewrite_moves(&rows)
                })?;
                for (old_to, f, t) in rows {
                    if let Some(m) = moves.iter_mut().skip(i).find(|m| m.to == old_to) {
                        m.from = f;
                        m.to = t;
                    }
                }
            }
            None => {
                self.journal_write("cannot record the rename in the journal", |j| {
                    j.add_move(
                        from,
                        to,
                        base.etag.as_deref(),
                        base.size,
                        base.mtime,
                        is_dir,
                    )
                })?;
                moves.push(PendingMove {
                    from: from.clone(),
                    to: to.clone(),
                    base,
                    is_dir,
                });
            }
        }
        self.fetcher.set_redirects(redirects_of(&moves));
        drop(moves);
        if is_dir {
            // Folder removals waiting below it are made under its new name.
            self.rebase_rmdirs(from, to)?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Waiting folder removals below `from` go below `to`.
    fn rebase_rmdirs(&self, from: &RemotePath, to: &RemotePath) -> Result<()> {
        let moved: Vec<(RemotePath, RemotePath)> = lock(&self.rmdirs)
            .iter()
            .filter_map(|p| p.rebased(from, to).map(|n| (p.clone(), n)))
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        self.journal_write("cannot update the journal", |j| j.rebase_rmdirs(&moved))?;
        let mut set = lock(&self.rmdirs);
        for (old, new) in moved {
            set.remove(&old);
            set.insert(new);
        }
        Ok(())
    }

    /// Where `p` (a name here) is on the server now: its own path, unless a rename of it,
    /// or of a folder above it, waits to be made there.
    pub fn server_path(&self, p: &RemotePath) -> RemotePath {
        let moves = lock(&self.moves);
        if moves.is_empty() {
            return p.clone();
        }
        p.before_moves(&redirects_of(&moves))
    }

    /// True when `p` is, or is below, the new name of a rename that waits to be made on the
    /// server.
    pub fn under_pending_move(&self, p: &RemotePath) -> bool {
        lock(&self.moves).iter().any(|m| p.is_within(&m.to))
    }

    /// Where the file named `to` here is on the server, while its rename waits to be made
    /// there.
    pub fn moved_from(&self, to: &RemotePath) -> Option<RemotePath> {
        lock(&self.moves)
            .iter()
            .find(|m| m.to == *to)
            .map(|m| m.from.clone())
    }

    /// Gives up the waiting rename of the file named `to` here (it is deleted here): where
    /// it is on the server and its version. Durable when this returns. Blocks on the disk.
    pub fn cancel_move(&self, to: &RemotePath) -> Result<Option<PendingMove>> {
        let mut moves = lock(&self.moves);
        let Some(i) = moves.iter().position(|m| m.to == *to) else {
            return Ok(None);
        };
        self.journal_write("cannot update the journal", |j| j.remove_move(to))?;
        let m = moves.remove(i);
        self.fetcher.set_redirects(redirects_of(&moves));
        Ok(Some(m))
    }

    /// The renames waiting to be made on the server.
    pub fn pending_moves(&self) -> Vec<PendingMove> {
        lock(&self.moves).clone()
    }

    /// True when renames wait to be made on the server.
    pub fn has_moves(&self) -> bool {
        !lock(&self.moves).is_empty()
    }

    /// What the waiting renames change in a listing of `dir`: the names that left it, and
    /// the files and folders that came in (new name, server version).
    pub fn moves_in(
        &self,
        dir: &RemotePath,
    ) -> (std::collections::HashSet<String>, Vec<PendingMove>) {
        let moves = lock(&self.moves);
        let gone = moves
            .iter()
            .filter(|m| m.from.parent().as_ref() == Some(dir))
            .map(|m| m.from.name().to_string())
            .collect();
        let came = moves
            .iter()
            .filter(|m| m.to.parent().as_ref() == Some(dir))
            .cloned()
            .collect();
        (gone, came)
    }

    /// Makes on the server the renames made here while it was out of reach, in order. A file
    /// deleted there meanwhile, or a name taken there meanwhile, leaves the rename undone
    /// (the file keeps its server name; nothing is lost). Stops at the first failure to reach
    /// the server.
    pub async fn send_moves(&self) -> std::result::Result<(), DavError> {
        let todo = self.pending_moves();
        for m in todo {
            match self.dav.move_to(&m.from, &m.to, m.is_dir, false).await {
                Ok(etag) => {
                    // Only a change waiting to go up needs the moved file's etag.
                    if let Some(d) = self.get(&m.to) {
                        if let Some(e) = etag_after_move(&self.dav, &m.to, etag, m.is_dir).await {
                            let mut st = lock(&d.st);
                            if let Some(b) = st.base.as_mut().filter(|b| b.etag == m.base.etag) {
                                b.etag = Some(e);
                            }
                        }
                    }
                    tracing::info!(from = %m.from, to = %m.to, "renamed on the server");
                }
                Err(e) if e.is_retryable() || matches!(e, DavError::Unauthorized) => return Err(e),
                Err(DavError::NotFound(_)) => {
                    tracing::warn!(from = %m.from, to = %m.to, "not renamed on the server: it was deleted there meanwhile");
                }
                Err(DavError::PreconditionFailed(_)) => {
                    tracing::warn!(from = %m.from, to = %m.to, "not renamed on the server: the new name was taken there meanwhile; it keeps its old name");
                }
                Err(e) => {
                    tracing::warn!(from = %m.from, to = %m.to, error = %e, "the server refused the rename; it keeps its old name");
                }
            }
            if let Err(e) = self.cancel_move(&m.to) {
                tracing::warn!(path = %m.to, error = %e, "journal not updated");
            }
        }
        Ok(())
    }

    /// Records that server folder `p`, empty here, was removed while the server is out of
    /// reach: removed there once it answers, if it is still empty there. Durable when this
    /// returns. Blocks on the disk.
    pub fn add_rmdir(&self, p: &RemotePath) -> Result<()> {
        self.journal_write("cannot record the folder removal in the journal", |j| {
            j.add_rmdir(p)
        })?;
        lock(&self.rmdirs).insert(p.clone());
        self.wake.notify_one();
        Ok(())
    }

    /// The server folders removed here that wait to be removed there.
    pub fn pending_rmdirs(&self) -> Vec<RemotePath> {
        lock(&self.rmdirs).iter().cloned().collect()
    }

    /// Names of the folders in `dir` removed here that wait to be removed on the server.
    pub fn rmdirs_in(&self, dir: &RemotePath) -> std::collections::HashSet<String> {
        names_in(lock(&self.rmdirs).iter(), dir)
    }

    /// Removes on the server the folders removed here while it was out of reach, deepest
    /// first, each only if it is still empty there (a folder into which a colleague put a
    /// file meanwhile is kept, and shows again). Stops at the first failure to reach the
    /// server.
    pub async fn send_rmdirs(&self) -> std::result::Result<(), DavError> {
        let mut todo = self.pending_rmdirs();
        todo.sort_by_key(|p| std::cmp::Reverse(p.as_str().matches('/').count()));
        for p in todo {
            let listed = self.dav.propfind(&p, crate::webdav::Depth::One).await;
            let res = match listed {
                Ok(entries) if entries.iter().any(|e| e.path != p) => {
                    tracing::warn!(path = %p, "not removed on the server: something was put in it there meanwhile; it is kept");
                    Ok(())
                }
                // Unconditional: some servers refuse `If-Match` with a folder's weak etag.
                Ok(_) => self.dav.delete(&p, true, None).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(()) | Err(DavError::NotFound(_)) => {
                    tracing::info!(path = %p, "folder removed on the server")
                }
                Err(DavError::PreconditionFailed(_)) => {
                    tracing::warn!(path = %p, "not removed on the server: it changed there meanwhile; it is kept");
                }
                Err(e) if e.is_retryable() || matches!(e, DavError::Unauthorized) => return Err(e),
                Err(e) => {
                    tracing::warn!(path = %p, error = %e, "the server refused to remove the folder; it is kept there");
                }
            }
            self.journal_write("cannot update the journal", |j| j.remove_rmdir(&p))
                .unwrap_or_else(|e| tracing::warn!(path = %p, error = %e, "journal not updated"));
            lock(&self.rmdirs).remove(&p);
        }
        Ok(())
    }

    /// True when something done here besides file contents waits to be done on the server
    /// (folders made, files deleted, renames, folders removed).
    pub fn has_offline_work(&self) -> bool {
        self.has_folders()
            || self.has_moves()
            || !lock(&self.deletes).is_empty()
            || !lock(&self.rmdirs).is_empty()
    }

    /// True when folders wait to be made on the server.
    pub fn has_folders(&self) -> bool {
        !lock(&self.folders).is_empty()
    }

    /// Sends what was done offline besides file contents: the folders made (parents first,
    /// and before the files in them go up), then the files deleted (before a new file of the
    /// same name goes up, or another file is renamed to it), then the files renamed (before
    /// their changes go up), then the folders removed (emptied by the deletes and renames
    /// before). Stops at the first failure to reach the server.
    pub async fn send_offline_work(&self) -> std::result::Result<(), DavError> {
        let _one = self.offline_work.lock().await;
        if self.has_folders() {
            self.make_folders().await?;
        }
        if !lock(&self.deletes).is_empty() {
            self.send_deletes().await?;
        }
        if self.has_moves() {
            self.send_moves().await?;
            if self.has_folders() {
                // Those made offline inside a folder renamed offline.
                self.make_folders().await?;
            }
        }
        if !lock(&self.rmdirs).is_empty() {
            self.send_rmdirs().await?;
        }
        Ok(())
    }

    /// Names of the folders in `dir` waiting to be made on the server.
    pub fn folders_in(&self, dir: &RemotePath) -> Vec<String> {
        names_in(lock(&self.folders).iter(), dir)
    }

    /// Forgets folder `p` (removed before it was made on the server). Blocks on the disk.
    pub fn forget_folder(&self, p: &RemotePath) {
        if self.is_folder_pending(p) {
            self.forget_offline_work(p);
        }
    }

    /// Makes the waiting folders on the server, parents first. Stops at the first failure
    /// (the server out of reach again, say), which the caller reports.
    pub async fn make_folders(&self) -> std::result::Result<(), DavError> {
        let _work = self.folder_work.lock().await;
        let todo: Vec<RemotePath> = lock(&self.folders)
            .iter()
            // Inside a folder renamed offline: made once that rename is (else the new name
            // would exist there first and the rename could not be made).
            .filter(|p| !self.under_pending_move(p))
            .cloned()
            .collect();
        for p in todo {
            // Its parents too: one of them may be waiting, or deleted on the server since.
            self.dav.make_parents(&p.join("-")).await?;
            tracing::info!(path = %p, "folder made on the server");
            self.forget_offline_work(&p);
        }
        Ok(())
    }

    /// True when something below folder `dir` is pending (a file, a folder made offline, or a
    /// rename from or to it).
    pub fn has_below(&self, dir: &RemotePath) -> bool {
        let prefix = format!("{}/", dir.as_str());
        let below = |p: &RemotePath| dir.is_root() || p.as_str().starts_with(&prefix);
        lock(&self.files).keys().any(below)
            || lock(&self.folders).iter().any(below)
            // A file renamed out of it offline is still there on the server.
            || lock(&self.moves).iter().any(|m| below(&m.from) || below(&m.to))
    }

    fn new_file(&self, st: DirtyState, size_hint: u64) -> Result<Arc<DirtyFile>> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) as i64;
        let data_path = self.data_path(id);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&data_path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound && !self.cfg.dir.exists() {
                    // Someone cleaned up the cache folder under a live mount: nothing new
                    // can be kept safely until the mount makes its journal again.
                    return io(
                        &format!(
                            "the cache folder {} was removed while mounted (unmount and mount again)",
                            self.cfg.dir.display()
                        ),
                        e,
                    );
                }
                io("cannot create a local file in the cache", e)
            })?;
        // Only a size to give: ext4 takes a truncation to 0, even of an empty file, as a file
        // being rewritten and writes it out at its close (`auto_da_alloc`), a disk write per
        // new file for nothing (a small file's content is in its journal row).
        if size_hint > 0 {
            file.set_len(size_hint)
                .map_err(|e| io("cannot size a local file in the cache", e))?;
        }
        Ok(Arc::new(DirtyFile {
            id,
            data_path,
            file: Mutex::new(Some(Arc::new(file))),
            st: Mutex::new(st),
            upload_lock: Arc::new(tokio::sync::Mutex::new(())),
            persist_lock: Mutex::new(()),
            sent: Arc::new(AtomicU64::new(0)),
            unstarted: AtomicU64::new(0),
            external: AtomicBool::new(false),
            seen: Mutex::new(None),
        }))
    }

    /// A new, empty file at `p` (not on the server yet), opened for writing.
    pub fn create(&self, p: &RemotePath) -> Result<Arc<DirtyFile>> {
        self.busy();
        let local_only = is_excluded(p.name());
        let st = DirtyState {
            path: p.clone(),
            size: 0,
            mtime: SystemTime::now(),
            base: None,
            base_len: 0,
            present: RangeSet::new(),
            generation: 1,
            persisted: 0,
            open_writers: 1,
            local_only,
            attempts: 0,
            last_error: None,
            quota_error: false,
            refused: false,
            next_attempt: None,
            uploading: false,
            one_by_one: false,
        };
        let d = self.new_file(st, 0)?;
        let replaced = lock(&self.files).insert(p.clone(), d.clone());
        if let Some(old) = replaced {
            // A pending change at this path was replaced by a new file of the same name.
            let _ = lock(&self.journal).delete(old.id);
            let _ = std::fs::remove_file(&old.data_path);
        }
        Ok(d)
    }

    /// Opens the existing file `p` (server version `base`) for writing; `truncate` empties it.
    pub fn open_existing(
        &self,
        p: &RemotePath,
        base: Base,
        truncate: bool,
        mtime: SystemTime,
    ) -> Result<Arc<DirtyFile>> {
        if let Some(d) = self.get(p) {
            lock(&d.st).open_writers += 1;
            if truncate {
                self.truncate(&d, 0)?;
            }
            return Ok(d);
        }
        let size = if truncate { 0 } else { base.size };
        let st = DirtyState {
            path: p.clone(),
            size,
            mtime,
            base_len: size,
            base: Some(base),
            present: RangeSet::new(),
            generation: if truncate { 1 } else { 0 },
            persisted: 0,
            open_writers: 1,
            local_only: is_excluded(p.name()),
            attempts: 0,
            last_error: None,
            quota_error: false,
            refused: false,
            next_attempt: None,
            uploading: false,
            one_by_one: false,
        };
        let d = self.new_file(st, size)?;
        let mut files = lock(&self.files);
        if let Some(other) = files.get(p).cloned() {
            // Another writer registered a change meanwhile: join it.
            drop(files);
            let _ = std::fs::remove_file(&d.data_path);
            let mut st = lock(&other.st);
            st.open_writers += 1;
            st.next_attempt = None;
            drop(st);
            if truncate {
                self.truncate(&other, 0)?;
            }
            return Ok(other);
        }
        files.insert(p.clone(), d.clone());
        Ok(d)
    }

    /// One more writer on the changed file at `p`, if there is one. Done under the registry
    /// lock, so a file whose upload just finished is either still registered (and kept, since
    /// it now has a writer) or already gone (and the caller starts a new change).
    pub fn acquire(&self, p: &RemotePath) -> Option<Arc<DirtyFile>> {
        let files = lock(&self.files);
        let d = files.get(p)?.clone();
        let mut st = lock(&d.st);
        st.open_writers += 1;
        st.next_attempt = None;
        drop(st);
        Some(d)
    }

    /// Writes `data` at `off`; answers the new size.
    pub fn write(&self, d: &DirtyFile, off: u64, data: &[u8]) -> Result<u64> {
        self.busy();
        self.room_retry(data.len() as u64, || {
            d.file().and_then(|f| write_all_at(&f, data, off))
        })
        .map_err(|e| io("cannot write to the cache", e))?;
        // A large write: let the disk start on it now, so that the sync at close() finds
        // little left to do.
        let pending =
            d.unstarted.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
        if pending >= START_WRITEOUT {
            d.unstarted.store(0, Ordering::Relaxed);
            if let Ok(f) = d.file_once() {
                start_writeout(&f);
            }
        }
        let mut st = lock(&d.st);
        let end = off + data.len() as u64;
        if off > st.size {
            let s = st.size;
            st.present.insert(s, off);
        }
        st.present.insert(off, end);
        st.size = st.size.max(end);
        st.mtime = SystemTime::now();
        st.generation += 1;
        Ok(st.size)
    }

    /// Runs `f`; when the disk is full, drops cached blocks of server files (they can be
    /// downloaded again) to make room for `need` bytes and a margin, and runs it once more.
    /// Local changes always come before cached copies.
    fn room_retry<T, E: std::fmt::Display>(
        &self,
        need: u64,
        mut f: impl FnMut() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        match f() {
            Err(e) if is_no_space(&e) => match self.fetcher.cache().free_up(need) {
                Ok(()) => {
                    tracing::info!("the cache disk was full: dropped cached blocks to make room for local changes");
                    f()
                }
                Err(fe) => {
                    tracing::warn!(error = %fe, "the cache disk is full and no cached block could be dropped");
                    Err(e)
                }
            },
            other => other,
        }
    }

    /// Gives a change just opened on server version `base` the complete content of that
    /// version instead of fetching it: `move_in` puts the cache's file of it at the data
    /// file's place (a rename: programs reading that file through the kernel go on reading
    /// it, now with every change made to it). From then on the kernel may write the data
    /// file directly ([`DirtyFile::fresh_st`] reads what it did). `false` when the change is not
    /// fresh (written, or joined by another writer): nothing is done.
    pub fn take_content(
        &self,
        d: &DirtyFile,
        base: VersionId,
        move_in: impl FnOnce(&std::path::Path) -> std::io::Result<()>,
    ) -> Result<bool> {
        let mut st = lock(&d.st);
        let fresh = st.present == RangeSet::new()
            && st.persisted == 0
            && st.open_writers == 1
            && st.base.as_ref().map(|b| b.version) == Some(base);
        if !fresh {
            return Ok(false);
        }
        move_in(&d.data_path).map_err(|e| io("cannot take over the cached file", e))?;
        let f = d
            .open_data()
            .map_err(|e| io("cannot open the taken-over file", e))?;
        if f.metadata().map(|m| m.len()).ok() != Some(st.size) {
            f.set_len(st.size)
                .map_err(|e| io("cannot size the taken-over file", e))?;
        }
        let md = f
            .metadata()
            .map_err(|e| io("cannot read the taken-over file", e))?;
        *lock(&d.file) = Some(Arc::new(f));
        let size = st.size;
        st.present = RangeSet::new();
        st.present.insert(0, size);
        *lock(&d.seen) = Some((md.len(), md.modified().unwrap_or(st.mtime)));
        d.external.store(true, Ordering::Relaxed);
        Ok(true)
    }

    /// Sets the size.
    pub fn truncate(&self, d: &DirtyFile, size: u64) -> Result<()> {
        let mut st = lock(&d.st);
        d.file()
            .and_then(|f| f.set_len(size))
            .map_err(|e| io("cannot truncate in the cache", e))?;
        if size < st.size {
            st.present.truncate(size);
            st.base_len = st.base_len.min(size);
        } else {
            let s = st.size;
            st.present.insert(s, size);
        }
        st.size = size;
        st.mtime = SystemTime::now();
        st.generation += 1;
        Ok(())
    }

    /// The changed file's current size.
    pub fn size(&self, d: &DirtyFile) -> u64 {
        lock(&d.st).size
    }

    /// Sets the modification time (sent as `X-OC-Mtime` with the upload).
    pub fn set_mtime(&self, d: &DirtyFile, t: SystemTime) {
        // What the kernel wrote directly comes first: a time set now must stay.
        let mut st = d.fresh_st();
        st.mtime = t;
        st.generation += 1;
    }

    /// The ranges of `[a, b)` that must still come from the base version.
    pub fn missing(&self, d: &DirtyFile, a: u64, b: u64) -> Vec<(u64, u64)> {
        let st = lock(&d.st);
        let limit = st.base_len.min(st.size);
        if a >= limit {
            return Vec::new();
        }
        st.present.missing(a, b.min(limit))
    }

    /// Stores base-version bytes at `off`, only where nothing newer was written meanwhile.
    pub fn fill(&self, d: &DirtyFile, off: u64, data: &[u8]) -> Result<()> {
        let mut st = lock(&d.st);
        let end = (off + data.len() as u64).min(st.base_len.min(st.size));
        if end <= off {
            return Ok(());
        }
        for (a, b) in st.present.missing(off, end) {
            let from = (a - off) as usize;
            let to = (b - off) as usize;
            d.file_once()
                .and_then(|f| write_all_at(&f, &data[from..to], a))
                .map_err(|e| io("cannot write to the cache", e))?;
            st.present.insert(a, b);
        }
        Ok(())
    }

    /// Reads local bytes (the caller filled missing ranges first).
    pub fn read_local(&self, d: &DirtyFile, off: u64, len: usize) -> Result<Vec<u8>> {
        let size = lock(&d.st).size;
        if off >= size {
            return Ok(Vec::new());
        }
        let n = (len as u64).min(size - off) as usize;
        let mut buf = vec![0u8; n];
        d.file_once()
            .and_then(|f| read_exact_at(&f, &mut buf, off))
            .map_err(|e| io("cannot read the cache", e))?;
        Ok(buf)
    }

    /// True when the file's current state is already durable (or is local-only and never
    /// journaled), and the server did not refuse it for quota.
    pub fn is_persisted(&self, d: &DirtyFile) -> bool {
        let st = lock(&d.st);
        (st.local_only || st.persisted == st.generation) && !st.quota_error
    }

    /// Makes the file's current state durable: data synced, then the journal row written.
    /// Fails with `NoSpace` when the server already refused it for quota.
    pub fn persist(&self, d: &DirtyFile) -> Result<()> {
        let _serial = lock(&d.persist_lock);
        let row = {
            let st = d.fresh_st();
            if st.local_only || st.persisted == st.generation {
                None
            } else {
                Some((st.generation, self.row_of(d, &st)))
            }
        };
        if let Some((generation, row)) = row {
            if row.content.is_none() {
                d.file_once()
                    .and_then(|f| f.sync_data())
                    .map_err(|e| io("cannot sync the cache", e))?;
            }
            self.room_retry(0, || lock(&self.journal).save(&row))
                .map_err(|e| io("cannot write the journal", e))?;
            tracing::debug!(path = %row.path, size = row.size, generation, "journal row saved");
            let mut st = lock(&d.st);
            st.persisted = st.persisted.max(generation);
        }
        if lock(&d.st).quota_error {
            return Err(Error::new(
                ErrorKind::NoSpace,
                "the server refused this file: the account is out of quota (it stays in the journal)",
            ));
        }
        Ok(())
    }

    fn row_of(&self, d: &DirtyFile, st: &DirtyState) -> Row {
        Row {
            id: d.id,
            path: st.path.clone(),
            size: st.size,
            mtime: st.mtime,
            base_etag: st.base.as_ref().and_then(|b| b.etag.clone()),
            has_base: st.base.is_some(),
            base_size: st.base.as_ref().map(|b| b.size).unwrap_or(0),
            base_mtime: st.base.as_ref().and_then(|b| b.mtime),
            base_len: st.base_len,
            present: st.present.clone(),
            generation: st.generation as i64,
            content: inline_content(d, st),
        }
    }

    /// Notes that a program is writing now (see [`QUIET`]).
    fn busy(&self) {
        *lock(&self.last_write) = Instant::now();
    }

    /// A writer closed the file: once nobody writes, the upload is scheduled. (A close is not
    /// "busy": after a large file's close, which waits for the disk, its upload starts at once.)
    pub fn release(&self, d: &DirtyFile) {
        // Under the registry lock, as in `acquire`: a writer joining this change at this
        // moment is either counted before it is found unused, or finds it gone and starts
        // its own; it never writes into a change that was just forgotten.
        let files = lock(&self.files);
        let mut st = lock(&d.st);
        st.open_writers = st.open_writers.saturating_sub(1);
        if st.open_writers > 0 {
            return;
        }
        if st.local_only {
            drop((st, files));
            d.close_file();
            return;
        }
        if st.generation == 0 {
            // Opened for writing but never changed: nothing to upload.
            let (p, base) = (st.path.clone(), st.base.clone());
            drop(st);
            self.discard(d, files, &p, base);
            return;
        }
        drop(files);
        st.next_attempt = Some(Instant::now() + self.cfg.upload_delay);
        // Only once the last writer is gone: a program that keeps a large file open and
        // syncs it often (a database) keeps its pages.
        let synced_large = st.size >= DROP_BEHIND_MIN && st.persisted == st.generation;
        drop(st);
        if synced_large {
            if let Ok(f) = d.file_once() {
                drop_pages(&f);
            }
        }
        d.close_file();
        self.wake.notify_one();
    }

    /// Forgets a change that was never modified (opened for writing, closed untouched).
    /// Called with the registry (`files`) locked, where `d` was found without writers.
    fn discard(
        &self,
        d: &DirtyFile,
        mut files: MutexGuard<'_, HashMap<RemotePath, Arc<DirtyFile>>>,
        p: &RemotePath,
        base: Option<Base>,
    ) {
        if files.get(p).map(|x| x.id == d.id).unwrap_or(false) {
            files.remove(p);
            drop(files);
            let _ = lock(&self.journal).delete(d.id);
            if d.is_external() {
                // The cache's own file of the server version, taken over by a writer that
                // changed nothing: it goes back to the cache.
                self.give_back(d, p, base);
            }
            let _ = std::fs::remove_file(&d.data_path);
        }
    }

    /// Hands an unchanged copy of server version `base` back to the cache as that version's
    /// blocks (see [`Self::take_content`]).
    fn give_back(&self, d: &DirtyFile, p: &RemotePath, base: Option<Base>) {
        let Some(b) = base.filter(|b| b.etag.is_some() || b.mtime.is_some()) else {
            return;
        };
        let size = b.size;
        let mtime = UNIX_EPOCH + Duration::from_secs(b.mtime.unwrap_or(0).max(0) as u64);
        let validator = crate::webdav::version_validator(b.etag.as_deref(), mtime, size);
        let cache = self.fetcher.cache();
        match cache.version(&self.identity(p), &validator) {
            Ok(v) if v.0 >= 0 && size > 0 => {
                if let Err(e) = cache.adopt(v, &d.data_path, size) {
                    tracing::debug!(path = %p, error = %e, "an unchanged file could not go back to the cache");
                }
            }
            _ => {}
        }
    }

    /// Drops the pending change at `p` (unlink, or replaced by a rename); waits for an upload
    /// in flight to end first. Answers the dropped change and its state.
    pub async fn remove(&self, p: &RemotePath) -> Option<(Arc<DirtyFile>, DirtyState)> {
        let d = self.get(p)?;
        let _g = d.upload_lock.lock().await;
        let mut files = lock(&self.files);
        if files.get(p).map(|x| x.id != d.id).unwrap_or(true) {
            return None;
        }
        files.remove(p);
        drop(files);
        let st = d.state();
        {
            // A program may still hold it open (deleted while open, or its release not there
            // yet: SQLite deletes its `-shm` file right after closing it): what that handle
            // writes or closes from now on belongs to no name, and must neither come back in
            // the journal (it would be uploaded again at the next mount) nor go up.
            let _serial = lock(&d.persist_lock);
            lock(&d.st).local_only = true;
            let _ = lock(&self.journal).delete(d.id);
        }
        let _ = std::fs::remove_file(&d.data_path);
        drop(_g);
        Some((d, st))
    }

    /// Waits for the uploads in flight of every pending file at or below `p` and keeps new ones
    /// from starting until the returned [`Held`] is given to [`WriteBack::rename`] or dropped.
    pub async fn hold(&self, p: &RemotePath) -> Held {
        let prefix = format!("{}/", p.as_str());
        let affected: Vec<Arc<DirtyFile>> = lock(&self.files)
            .iter()
            .filter(|(q, _)| *q == p || p.is_root() || q.as_str().starts_with(&prefix))
            .map(|(_, d)| d.clone())
            .collect();
        let mut held = Vec::with_capacity(affected.len());
        for d in affected {
            let g = d.upload_lock.clone().lock_owned().await;
            held.push((d, g));
        }
        Held(held)
    }

    /// Moves the held pending changes from below `from` to below `to` (after the server-side
    /// MOVE, or for a file that is not on the server yet). `moved_etag` is the etag the server
    /// gave the moved file, which becomes its new base etag.
    pub fn rename(
        &self,
        held: Held,
        from: &RemotePath,
        to: &RemotePath,
        moved_etag: Option<String>,
    ) {
        let prefix = format!("{}/", from.as_str());
        for (d, _guard) in held.0 {
            let mut files = lock(&self.files);
            let mut st = lock(&d.st);
            let old = st.path.clone();
            if files.get(&old).map(|x| x.id != d.id).unwrap_or(true) {
                // Uploaded and forgotten (or replaced) while we waited: nothing to move.
                continue;
            }
            let new = if old == *from {
                to.clone()
            } else if let Some(rest) = old.as_str().strip_prefix(&prefix) {
                RemotePath::new(&format!("{}/{}", to.as_str(), rest))
            } else {
                continue;
            };
            if files.get(&old).map(|x| x.id == d.id).unwrap_or(false) {
                files.remove(&old);
            }
            st.path = new.clone();
            if old == *from {
                if let (Some(b), Some(e)) = (st.base.as_mut(), moved_etag.clone()) {
                    b.etag = Some(e);
                }
            }
            let was_local = st.local_only;
            st.local_only = is_excluded(new.name()) && st.base.is_none();
            if was_local && !st.local_only {
                // Renamed from a lock/swap name to a real one: journal and upload it.
                st.persisted = 0;
                if st.open_writers == 0 {
                    st.next_attempt = Some(Instant::now() + self.cfg.upload_delay);
                }
            }
            let row = self.row_of(&d, &st);
            let journaled = !st.local_only;
            let persisted_now = st.persisted == st.generation;
            drop(st);
            if let Some(old) = files.insert(new, d.clone()).filter(|o| o.id != d.id) {
                // The destination's pending change is replaced by the renamed file.
                let _ = lock(&self.journal).delete(old.id);
                let _ = std::fs::remove_file(&old.data_path);
            }
            drop(files);
            if journaled && (persisted_now || was_local) {
                if was_local && row.content.is_none() {
                    let _ = d.file_once().and_then(|f| f.sync_data());
                }
                if lock(&self.journal).save(&row).is_ok() {
                    let mut st = lock(&d.st);
                    if was_local {
                        st.persisted = st.generation;
                    }
                }
            }
        }
        self.wake.notify_one();
    }

    /// Makes a pending new file replace the server version `base` when it is uploaded (a file
    /// renamed over an existing one).
    pub fn rebase(&self, d: &DirtyFile, base: Base) {
        let row = {
            let mut st = lock(&d.st);
            st.base = Some(base);
            st.base_len = 0;
            st.generation += 1;
            (!st.local_only && st.open_writers == 0).then(|| (st.generation, self.row_of(d, &st)))
        };
        if let Some((generation, row)) = row {
            if lock(&self.journal).save(&row).is_ok() {
                let mut st = lock(&d.st);
                st.persisted = st.persisted.max(generation);
            }
        }
    }

    /// Number of changes waiting for upload (lock and swap files excluded).
    pub fn pending_count(&self) -> usize {
        lock(&self.files)
            .values()
            .filter(|d| !lock(&d.st).local_only)
            .count()
    }

    /// Pending uploads for `nuage status`.
    pub fn pending(&self) -> Vec<PendingInfo> {
        let mut v: Vec<PendingInfo> = lock(&self.files)
            .values()
            .filter_map(|d| {
                let st = lock(&d.st);
                (!st.local_only).then(|| PendingInfo {
                    path: st.path.to_string(),
                    size: st.size,
                    bytes_sent: d.sent.load(Ordering::Relaxed),
                    attempts: st.attempts,
                    last_error: st.last_error.clone(),
                    uploading: st.uploading,
                    out_of_quota: st.quota_error,
                    refused: st.refused,
                })
            })
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    /// Conflicts recorded so far.
    pub fn conflicts(&self) -> Vec<Conflict> {
        lock(&self.journal).conflicts().unwrap_or_default()
    }

    /// True when `p` is where a conflicted copy was saved (no journal read).
    pub fn is_conflict_copy(&self, p: &RemotePath) -> bool {
        lock(&self.conflict_copies).contains(p)
    }

    /// Runs the upload actor until the runtime ends.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.run().await });
        // Rows of uploaded files are forgotten without a sync each; one sync a second.
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let me = me.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = lock(&me.journal).sync() {
                        tracing::warn!(error = %e, "cannot sync the journal");
                    }
                })
                .await;
            }
        });
    }

    async fn run(self: Arc<Self>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.cfg.parallel.max(1)));
        let large_slots = Arc::new(tokio::sync::Semaphore::new((self.cfg.parallel / 2).max(1)));
        let mut was_cut_off = false;
        let mut yielding_since: Option<Instant> = None;
        // When to try again to send what was done offline, after a failure.
        let mut offline_work_at: Option<Instant> = None;
        loop {
            if self.dav.auth().is_refused() || !self.dav.reach().is_online() {
                // Login refused or server out of reach: nothing can go up until that changes.
                was_cut_off = true;
                tokio::select! {
                    _ = self.dav.reach().changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                continue;
            }
            if was_cut_off {
                // Back: everything waiting goes now, whatever its backoff said.
                was_cut_off = false;
                offline_work_at = None;
                for d in self.all() {
                    let mut st = lock(&d.st);
                    if st.next_attempt.is_some() {
                        st.next_attempt = Some(Instant::now());
                    }
                }
            }
            // A program writing files right now (say, a copy of a folder) goes first: uploads
            // start when it pauses, or every MAX_YIELD while it goes on; they then go in
            // larger groups too.
            let quiet_at = *lock(&self.last_write) + QUIET;
            let now = Instant::now();
            if quiet_at > now {
                let since = *yielding_since.get_or_insert(now);
                if now < since + MAX_YIELD {
                    tokio::time::sleep((quiet_at - now).min(since + MAX_YIELD - now)).await;
                    continue;
                }
            }
            yielding_since = None;
            // Folders made and files deleted offline first: uploads may depend on them.
            if offline_work_at.is_none_or(|t| t <= Instant::now()) {
                if let Err(e) = self.send_offline_work().await {
                    tracing::warn!(error = %e, "cannot send what was done offline yet; trying again in 30 s");
                    offline_work_at = Some(Instant::now() + Duration::from_secs(30));
                }
            }
            let mut next: Option<Instant> = offline_work_at;
            let now = Instant::now();
            let mut due = Vec::new();
            // Only as many files as the free upload slots can take (a bulk request carries
            // up to BULK_MAX_FILES): looking at every pending file after each upload made a
            // copy of 10,000 small files quadratic. Each upload that ends wakes this loop.
            let free = slots.available_permits();
            let want = if self.dav.has_bulk() && self.bulk.load(Ordering::Relaxed) {
                free * BULK_MAX_FILES
            } else {
                free
            };
            let moves = self.has_moves();
            // The server asked to be left alone for a while (503 or 429 with `Retry-After`,
            // nextcloud-protocol.md §14.5): nothing is sent before then.
            let held = self.dav.asked_to_wait();
            if let Some(w) = held {
                next = Some(next.map_or(now + w, |n| n.max(now + w)));
            }
            let pending = if want > 0 && held.is_none() {
                self.all()
            } else {
                Vec::new()
            };
            for d in pending {
                if due.len() >= want {
                    break;
                }
                let st = lock(&d.st);
                if st.uploading || st.local_only || st.open_writers > 0 {
                    continue;
                }
                if moves && self.under_pending_move(&st.path) {
                    // Goes up once the rename is made there (`send_offline_work`).
                    continue;
                }
                match st.next_attempt {
                    Some(t) if t <= now => due.push(d.clone()),
                    Some(t) => next = Some(next.map_or(t, |n: Instant| n.min(t))),
                    None => {}
                }
            }
            if due.len() >= want {
                // Not every file was looked at: the next one due may be sooner than `next`.
                let soon = now + Duration::from_secs(1);
                next = Some(next.map_or(soon, |n| n.min(soon)));
            }

            // Many small new files: one bulk request where the server offers it. Files that
            // become due within half an upload delay join the request (a program writing many
            // files closes them a few milliseconds apart).
            let (mut bulk, due): (Vec<_>, Vec<_>) =
                due.into_iter().partition(|d| self.bulk_eligible(d));
            if !bulk.is_empty() {
                let soon = now + self.cfg.upload_delay / 2;
                for d in self.all() {
                    let joins = {
                        let st = lock(&d.st);
                        !st.uploading
                            && !st.local_only
                            && st.open_writers == 0
                            && matches!(st.next_attempt, Some(t) if t > now && t <= soon)
                    };
                    if joins && self.bulk_eligible(&d) {
                        bulk.push(d);
                    }
                }
            }
            let (bulk, due) = if bulk.len() >= 2 {
                (bulk, due)
            } else {
                let mut all = due;
                all.extend(bulk);
                (Vec::new(), all)
            };
            if !bulk.is_empty() {
                // One task for the whole pass: it lists the folders once, then sends the
                // groups as upload slots free up.
                for d in &bulk {
                    lock(&d.st).uploading = true;
                }
                let (me, slots) = (self.clone(), slots.clone());
                tokio::spawn(async move { me.upload_bulk_pass(bulk, slots).await });
            }
            for d in due {
                let large = if lock(&d.st).size > SMALL_UPLOAD {
                    match large_slots.clone().try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            // Smaller files behind it may still go.
                            next = Some(Instant::now() + Duration::from_millis(100));
                            continue;
                        }
                    }
                } else {
                    None
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    next = Some(Instant::now() + Duration::from_millis(100));
                    break;
                };
                lock(&d.st).uploading = true;
                let me = self.clone();
                tokio::spawn(async move {
                    let mut slot = Some(permit);
                    me.upload(&d, &mut slot).await;
                    lock(&d.st).uploading = false;
                    drop((slot, large));
                    me.wake.notify_one();
                });
            }
            let sleep = next
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    fn bulk_eligible(&self, d: &Arc<DirtyFile>) -> bool {
        if !self.dav.has_bulk() || !self.bulk.load(Ordering::Relaxed) {
            return false;
        }
        let st = lock(&d.st);
        // New files only, small, and with a plain-ASCII path (it travels in a header).
        st.base.is_none()
            && !st.one_by_one
            && st.size <= BULK_MAX_FILE
            && st.path.as_str().bytes().all(|b| (0x20..0x7f).contains(&b))
    }

    /// Sends small new files in bulk requests of at most [`BULK_MAX_FILES`], each when an
    /// upload slot is free. A bulk request has no If-None-Match, so their folders are listed
    /// first, once for the whole pass: a file someone else created meanwhile under one of
    /// these names goes by a conditional PUT instead (which keeps both copies). Only a file
    /// created between that listing and the request could still be replaced.
    async fn upload_bulk_pass(
        self: &Arc<Self>,
        files: Vec<Arc<DirtyFile>>,
        slots: Arc<tokio::sync::Semaphore>,
    ) {
        let Some(taken) = self.names_on_server(&files).await else {
            // Cannot tell: send these one by one, with their conditions.
            for d in &files {
                let mut st = lock(&d.st);
                st.one_by_one = true;
                st.next_attempt = Some(Instant::now());
                st.uploading = false;
            }
            self.wake.notify_one();
            return;
        };
        let taken = Arc::new(taken);
        let mut sent = tokio::task::JoinSet::new();
        let mut started = 0;
        for group in files.chunks(BULK_MAX_FILES) {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            started += group.len();
            let (me, group, taken) = (self.clone(), group.to_vec(), taken.clone());
            sent.spawn(async move {
                me.upload_bulk(&group, &taken).await;
                for d in &group {
                    lock(&d.st).uploading = false;
                }
                drop(permit);
                me.wake.notify_one();
            });
        }
        while sent.join_next().await.is_some() {}
        // Groups not sent (shutting down) are free for a next pass.
        for d in &files[started..] {
            lock(&d.st).uploading = false;
        }
    }

    /// Uploads several small new files in one request and applies each outcome; `taken`
    /// holds the paths that exist on the server (see [`Self::upload_bulk_pass`]).
    async fn upload_bulk(
        &self,
        group: &[Arc<DirtyFile>],
        taken: &std::collections::HashSet<RemotePath>,
    ) {
        let mut guards = Vec::new();
        let mut items = Vec::new();
        for d in group {
            {
                let mut st = lock(&d.st);
                if taken.contains(&st.path) {
                    st.one_by_one = true;
                    st.next_attempt = Some(Instant::now());
                    continue;
                }
            }
            let Ok(g) = d.upload_lock.clone().try_lock_owned() else {
                continue;
            };
            let snap = {
                let files = lock(&self.files);
                let mut st = lock(&d.st);
                let registered = files.get(&st.path).map(|x| x.id == d.id).unwrap_or(false);
                if !registered || st.open_writers > 0 || st.local_only || st.base.is_some() {
                    st.next_attempt = None;
                    continue;
                }
                st.clone()
            };
            // Off the async threads: this is disk I/O.
            let d2 = d.clone();
            let len = snap.size as usize;
            let read = tokio::task::spawn_blocking(move || {
                let mut data = vec![0u8; len];
                d2.file_once()
                    .and_then(|f| crate::cache::read_exact_at(&f, &mut data, 0))
                    .map(|()| data)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            let data = match read {
                Ok(data) => data,
                Err(e) => {
                    self.failed(d, UploadError::Local(io("cannot read the local copy", e)));
                    continue;
                }
            };
            items.push((
                d.clone(),
                snap.clone(),
                crate::webdav::BulkItem {
                    path: snap.path.clone(),
                    data,
                    mtime: snap.mtime,
                },
            ));
            guards.push(g);
        }
        if items.is_empty() {
            return;
        }
        let req: Vec<_> = items.iter().map(|(_, _, it)| it.clone()).collect();
        tracing::debug!(files = req.len(), "bulk upload");
        match self.dav.bulk_upload(&req).await {
            Ok(results) => {
                for ((d, snap, it), res) in items.iter().zip(results) {
                    match res {
                        Ok(put) => {
                            d.sent.store(it.data.len() as u64, Ordering::Relaxed);
                            self.uploaded(d, snap, put.etag, put.fileid).await;
                        }
                        Err(msg) => {
                            // Next time alone: a single upload tells why (say, a 409 for a
                            // folder deleted meanwhile, which it then makes again).
                            lock(&d.st).one_by_one = true;
                            self.failed(
                                d,
                                UploadError::Dav(DavError::BadResponse(format!(
                                    "the server refused {}: {msg}",
                                    snap.path
                                ))),
                            )
                        }
                    }
                }
            }
            Err(e @ DavError::NotFound(_))
            | Err(
                e @ (DavError::Status {
                    status: 405 | 501, ..
                }
                | DavError::TooLarge(_)),
            ) => {
                // 413: a proxy's body limit in front of the server.
                tracing::info!(error = %e, "the server does not take bulk uploads: sending files one by one");
                self.bulk.store(false, Ordering::Relaxed);
                for (d, _, _) in &items {
                    lock(&d.st).next_attempt = Some(Instant::now());
                }
            }
            Err(e) => {
                let retry = e.is_retryable();
                let unknown = outcome_unknown(&e);
                let msg = e.to_string();
                for (d, snap, _) in &items {
                    if unknown {
                        if let Some(etag) = self.landed(d, snap).await {
                            tracing::info!(path = %snap.path, "the answer was lost, but the server holds the file: uploaded");
                            self.uploaded(d, snap, etag, None).await;
                            continue;
                        }
                    }
                    let err = match &e {
                        _ if retry => DavError::Connect(msg.clone()),
                        DavError::BadResponse(m) => DavError::BadResponse(m.clone()),
                        _ => DavError::BadResponse(msg.clone()),
                    };
                    self.failed(d, UploadError::Dav(err));
                }
            }
        }
        drop(guards);
    }

    /// Uploads one file and applies the outcome. Its upload slot `slot` is given back as
    /// soon as the server answered, before a look at the server that may confirm the answer.
    async fn upload(
        &self,
        d: &Arc<DirtyFile>,
        slot: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let _g = d.upload_lock.lock().await;
        let snap = {
            let files = lock(&self.files);
            let mut st = lock(&d.st);
            let registered = files.get(&st.path).map(|x| x.id == d.id).unwrap_or(false);
            if !registered || st.open_writers > 0 || st.local_only {
                // Dropped, being written, or local: not due any more (release reschedules).
                st.next_attempt = None;
                return;
            }
            st.clone()
        };
        d.sent.store(0, Ordering::Relaxed);
        let mut res = self.try_upload(d, &snap, true).await;
        if let Err(UploadError::Dav(DavError::Status { status: 409, .. })) = &res {
            // Its folder is gone from the server (deleted by someone else while this file
            // waited): made again, as the desktop client does, so the file is not lost.
            match self.dav.make_parents(&snap.path).await {
                Ok(0) => {}
                Ok(made) => {
                    tracing::info!(path = %snap.path, folders = made, "its folder had been deleted on the server: made again");
                    d.sent.store(0, Ordering::Relaxed);
                    res = self.try_upload(d, &snap, true).await;
                }
                Err(e) => {
                    tracing::warn!(path = %snap.path, error = %e, "cannot make its folder again")
                }
            }
        }
        match res {
            Ok(put) => {
                if put.etag.is_none() && slot.take().is_some() {
                    // Its confirmation is one more request and a round trip: the next
                    // upload goes meanwhile.
                    self.wake.notify_one();
                }
                self.uploaded(d, &snap, put.etag, put.fileid).await
            }
            Err(UploadError::Dav(DavError::PreconditionFailed(m))) => {
                if let Some(etag) = self.identical_on_server(d, &snap).await {
                    // Already there, byte for byte: an upload whose confirmation was lost (a
                    // power cut before the journal forgot it), or the same file saved twice.
                    tracing::info!(path = %snap.path, "the server already holds these bytes");
                    self.uploaded(d, &snap, etag, None).await
                } else if self.really_changed(&snap).await {
                    self.conflict(d, &snap)
                } else {
                    // The server copy is still the base, yet the condition failed: Apache
                    // gives a file changed within the last second a weak etag, which never
                    // passes `If-Match` (a strong comparison, RFC 9110 §13.1.1); some
                    // servers give only weak ones. Sent again without the condition, right
                    // after looking at the server copy once more.
                    tracing::debug!(path = %snap.path, refused = %m, "condition refused for the version we know: sent after a look instead");
                    d.sent.store(0, Ordering::Relaxed);
                    match self.try_upload(d, &snap, false).await {
                        Ok(put) => self.uploaded(d, &snap, put.etag, put.fileid).await,
                        Err(e) => self.failed(d, e),
                    }
                }
            }
            Err(UploadError::Dav(e)) if outcome_unknown(&e) => {
                // Before anything else happens to the file here (a rename or a delete waits
                // for this upload to end): did it arrive?
                match self.landed(d, &snap).await {
                    Some(etag) => {
                        tracing::info!(path = %snap.path, "the answer was lost, but the server holds the file: uploaded");
                        self.uploaded(d, &snap, etag, None).await
                    }
                    None => self.failed(d, UploadError::Dav(e)),
                }
            }
            Err(e) => self.failed(d, e),
        }
    }

    /// After an upload whose answer was lost: the server's etag when it holds this change
    /// (the size and modification time it was sent with, or, for a small file, the same
    /// bytes), `None` when it does not or cannot be asked.
    async fn landed(&self, d: &DirtyFile, snap: &DirtyState) -> Option<Option<String>> {
        // One look at the server for both questions.
        let e = self.server_entry(&snap.path).await?;
        if assembled_as(snap, &e) {
            return Some(e.etag);
        }
        self.same_bytes(d, snap, e).await
    }

    /// Uploads the change; `conditional`: the server checks the base version itself
    /// where it can (`If-Match`), else the server copy is looked at first.
    async fn try_upload(
        &self,
        d: &Arc<DirtyFile>,
        snap: &DirtyState,
        conditional: bool,
    ) -> std::result::Result<crate::webdav::PutResult, UploadError> {
        // 1. Never upload holes: fetch what is still missing from the base version.
        let mut filled = false;
        if let Some(base) = &snap.base {
            let missing = self.missing(d, 0, snap.size);
            if !missing.is_empty() {
                filled = true;
                let fv = FileVersion {
                    path: snap.path.clone(),
                    etag: base.etag.clone(),
                    size: base.size,
                    version: base.version,
                };
                for (a, b) in missing {
                    self.fill_from_base(d, &fv, a, b).await?;
                }
            }
        }
        // The bytes filled in, or a close whose journal row could not be written, are made
        // durable before the upload (a journal row written meanwhile may say they are here).
        // A closed file's bytes already are: synced at its close, or held in its row.
        if filled || snap.persisted < snap.generation {
            let file = d
                .file_once()
                .map_err(|e| UploadError::Local(io("cache", e)))?;
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(|e| UploadError::Local(io("cache", e)))?
                .map_err(|e| UploadError::Local(io("cannot sync the cache", e)))?;
        }
        // 2. Send it, conditional on the base version; where the server would not enforce
        // that, only after checking that it still holds that version (or, new, nothing).
        if !conditional || !server_enforces(&self.dav, snap.base.as_ref()).await {
            self.check_unchanged(snap).await?;
        }
        let opts = PutOptions {
            if_match: snap
                .base
                .as_ref()
                .and_then(|b| b.etag.clone())
                .filter(|_| conditional),
            create_only: snap.base.is_none(),
            mtime: Some(snap.mtime),
        };
        let chunked = self.chunking
            && (snap.size > self.cfg.chunk_threshold
                || snap.size >= self.refused_body.load(Ordering::Relaxed));
        let put = if chunked {
            self.upload_chunked(d, snap, &opts).await?
        } else {
            self.dav
                .put_file(
                    &snap.path,
                    &d.data_path,
                    0,
                    snap.size,
                    &opts,
                    d.sent.clone(),
                )
                .await
                .inspect_err(|e| {
                    if matches!(e, DavError::TooLarge(_)) {
                        self.body_refused(snap.size);
                    }
                })?
        };
        Ok(put)
    }

    /// The size of chunks for a new chunked upload: the configured one, below any request
    /// body refused as too large (half of it, nextcloud-protocol.md §5.5: reduce on 413).
    fn chunk_size(&self) -> u64 {
        let refused = self.refused_body.load(Ordering::Relaxed);
        match refused {
            u64::MAX => self.cfg.chunk_size,
            r => self.cfg.chunk_size.min((r / 2) & !0xffff).max(MIN_CHUNK),
        }
    }

    /// A request body of `size` bytes was refused as too large (413): later uploads go in
    /// chunks below it, where the server takes chunked uploads.
    fn body_refused(&self, size: u64) {
        let before = self.refused_body.fetch_min(size, Ordering::Relaxed);
        if size < before && self.chunking {
            tracing::info!(
                refused = size,
                chunk = self.chunk_size(),
                "the server (or a proxy before it) refuses request bodies this large: uploads go in smaller chunks"
            );
        }
    }

    /// Whether a 413 can be got round by smaller chunks: the server takes chunked uploads and
    /// the refused size is still above the smallest chunk.
    fn smaller_chunks_may_pass(&self) -> bool {
        self.chunking && self.refused_body.load(Ordering::Relaxed) > MIN_CHUNK
    }

    async fn fill_from_base(
        &self,
        d: &DirtyFile,
        fv: &FileVersion,
        a: u64,
        b: u64,
    ) -> std::result::Result<(), UploadError> {
        // In pieces of 8 MiB, each read ahead of the next.
        const PIECE: u64 = 8 << 20;
        let ahead = PIECE / self.fetcher.cache().block_size();
        let mut pos = a;
        while pos < b.min(fv.size) {
            let n = (b.min(fv.size) - pos).min(PIECE);
            let data = self
                .fetcher
                .read(fv, pos, n as u32, ahead)
                .await
                .map_err(|e| {
                    if e.kind == ErrorKind::Stale {
                        UploadError::BaseChanged
                    } else {
                        UploadError::Local(e)
                    }
                })?;
            if data.is_empty() {
                break;
            }
            self.fill(d, pos, &data).map_err(UploadError::Local)?;
            pos += data.len() as u64;
        }
        Ok(())
    }

    async fn upload_chunked(
        &self,
        d: &Arc<DirtyFile>,
        snap: &DirtyState,
        opts: &PutOptions,
    ) -> std::result::Result<crate::webdav::PutResult, UploadError> {
        let total = snap.size;
        let gen = snap.generation as i64;
        let saved = lock(&self.journal).session(d.id).ok().flatten();
        let mut session = match saved {
            // A session whose chunks were refused as too large starts over in smaller ones.
            Some(s)
                if s.total == total
                    && s.generation == gen
                    && s.chunk_size < self.refused_body.load(Ordering::Relaxed) =>
            {
                s
            }
            other => {
                if let Some(old) = other {
                    let _ = self.dav.chunk_abort(&old.upload_id).await;
                }
                ChunkSession {
                    upload_id: upload_id_for(d.id),
                    chunk_size: self.chunk_size(),
                    total,
                    generation: gen,
                }
            }
        };
        let done = match self.dav.chunk_list(&session.upload_id).await? {
            Some(chunks) => chunks,
            None => {
                if lock(&self.journal).session(d.id).ok().flatten().is_some() {
                    // The session is gone: either it expired, or its final MOVE was done by
                    // the server after we stopped waiting (a crash). In the second case the
                    // file is there with our size and our mtime: nothing to send again.
                    if let Some(etag) = self.already_assembled(snap).await {
                        tracing::info!(path = %snap.path, "chunked upload was assembled before the restart");
                        let _ = lock(&self.journal).delete_session(d.id);
                        return Ok(crate::webdav::PutResult { etag, fileid: None });
                    }
                    tracing::info!(path = %snap.path, "chunked upload session expired on the server, starting over");
                    session.upload_id = upload_id_for(d.id);
                }
                self.dav
                    .chunk_start(&session.upload_id, &snap.path, total)
                    .await?;
                let _ = lock(&self.journal).save_session(d.id, &session);
                Vec::new()
            }
        };
        let cs = session.chunk_size;
        let count = total.div_ceil(cs).max(1) as u32;
        // Keep every chunk already there with the right size (several go up at once, so the
        // ones a restart finds need not be the first ones).
        let expected = |n: u32| (total - (n as u64 - 1) * cs).min(cs);
        let have: std::collections::HashSet<u32> = done
            .iter()
            .filter(|(n, len)| (1..=count).contains(n) && *len == expected(*n))
            .map(|(n, _)| *n)
            .collect();
        if !have.is_empty() {
            let kept: u64 = have.iter().map(|n| expected(*n)).sum();
            d.sent.fetch_add(kept, Ordering::Relaxed);
            tracing::info!(path = %snap.path, chunks = have.len(), "resuming chunked upload");
        }
        let missing: Vec<u32> = (1..=count).filter(|n| !have.contains(n)).collect();
        let upload_id = session.upload_id.clone();
        let puts = futures_util::stream::iter(missing.into_iter().map(|n| {
            let off = (n as u64 - 1) * cs;
            let len = expected(n);
            let (upload_id, sent) = (upload_id.clone(), d.sent.clone());
            async move {
                self.dav
                    .chunk_put(
                        &upload_id,
                        n,
                        &snap.path,
                        total,
                        &d.data_path,
                        off,
                        len,
                        sent,
                    )
                    .await
                    .inspect_err(|e| {
                        if matches!(e, DavError::TooLarge(_)) {
                            self.body_refused(len);
                        }
                    })
            }
        }));
        let puts = futures_util::StreamExt::buffer_unordered(puts, self.cfg.chunk_parallel.max(1));
        futures_util::pin_mut!(puts);
        while let Some(res) = futures_util::StreamExt::next(&mut puts).await {
            res?;
        }
        let res = self
            .dav
            .chunk_finish(
                &session.upload_id,
                &snap.path,
                total,
                opts.mtime,
                opts.if_match.as_deref(),
            )
            .await;
        // A refused assembly (400: the chunks the server holds do not add up) would be
        // refused again from the same session: the next attempt starts a new one.
        let refused = matches!(res, Err(DavError::Status { status: 400, .. }));
        if res.is_ok() || refused || matches!(res, Err(DavError::PreconditionFailed(_))) {
            let _ = lock(&self.journal).delete_session(d.id);
            if res.is_err() {
                let _ = self.dav.chunk_abort(&session.upload_id).await;
            }
        }
        if refused {
            return Err(UploadError::Dav(DavError::BadResponse(format!(
                "the server refused to assemble the upload of {} (HTTP 400); it starts again",
                snap.path
            ))));
        }
        Ok(res?)
    }

    /// Where the server would not enforce the upload's condition: a 412 of our own when it
    /// no longer holds the version `snap` is based on (or holds a file where `snap` is new).
    /// What is left is the short time between this check and the upload.
    async fn check_unchanged(&self, snap: &DirtyState) -> std::result::Result<(), UploadError> {
        let now = match self.dav.propfind(&snap.path, Depth::Zero).await {
            Ok(v) => v.into_iter().next(),
            Err(DavError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if still_base(now.as_ref(), snap.base.as_ref()) {
            Ok(())
        } else {
            Err(UploadError::Dav(DavError::PreconditionFailed(format!(
                "{} changed on the server",
                snap.path
            ))))
        }
    }

    /// What the server has at `p` now, if it answers.
    async fn server_entry(&self, p: &RemotePath) -> Option<crate::webdav::Entry> {
        self.dav
            .propfind(p, Depth::Zero)
            .await
            .ok()?
            .into_iter()
            .next()
    }

    /// [`Self::server_entry`] for the confirmation of an upload, at most
    /// [`WriteBackConfig::parallel`] at once.
    async fn confirming_entry(&self, p: &RemotePath) -> Option<crate::webdav::Entry> {
        let _slot = self.confirming.acquire().await;
        self.server_entry(p).await
    }

    /// The server's etag of `snap.path` when it already holds exactly this upload: same size,
    /// same modification time (sent as `X-OC-Mtime`), and not the version it was based on.
    async fn already_assembled(&self, snap: &DirtyState) -> Option<Option<String>> {
        let e = self.server_entry(&snap.path).await?;
        assembled_as(snap, &e).then_some(e.etag)
    }

    /// Which of these files' paths exist on the server now (one Depth-1 listing per folder);
    /// `None` when a folder cannot be listed.
    async fn names_on_server(
        &self,
        group: &[Arc<DirtyFile>],
    ) -> Option<std::collections::HashSet<RemotePath>> {
        let mut parents: Vec<RemotePath> = group
            .iter()
            .map(|d| lock(&d.st).path.parent().unwrap_or_default())
            .collect();
        parents.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        parents.dedup();
        let mut taken = std::collections::HashSet::new();
        for p in parents {
            match self.dav.propfind(&p, Depth::One).await {
                Ok(entries) => taken.extend(entries.into_iter().map(|e| e.path)),
                // The folder itself is not there (yet): none of its files can be.
                Err(DavError::NotFound(_)) => {}
                Err(e) => {
                    tracing::debug!(folder = %p, error = %e, "cannot list before a bulk upload");
                    return None;
                }
            }
        }
        Some(taken)
    }

    /// The server's etag when it holds exactly the bytes of this change (up to
    /// [`IDENTICAL_CHECK_MAX`]), compared as they arrive.
    async fn identical_on_server(
        &self,
        d: &DirtyFile,
        snap: &DirtyState,
    ) -> Option<Option<String>> {
        let e = self.server_entry(&snap.path).await?;
        self.same_bytes(d, snap, e).await
    }

    /// [`Self::identical_on_server`] with `e`, how the server lists the file now. The local
    /// copy is read off the async threads, from one open descriptor.
    async fn same_bytes(
        &self,
        d: &DirtyFile,
        snap: &DirtyState,
        e: crate::webdav::Entry,
    ) -> Option<Option<String>> {
        let whole = snap.present.missing(0, snap.size).is_empty();
        if !whole || snap.size > IDENTICAL_CHECK_MAX || e.is_dir || e.size != snap.size {
            return None;
        }
        let local = d.file_once().ok()?;
        let mut body = self
            .dav
            .get_range(&snap.path, (0, snap.size), e.size, e.etag.as_deref())
            .await
            .ok()?;
        let mut at = 0u64;
        while let Some(theirs) = body.chunk().await.ok()? {
            if at + theirs.len() as u64 > snap.size {
                return None;
            }
            let (f, len) = (local.clone(), theirs.len());
            let ours = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; len];
                crate::cache::read_exact_at(&f, &mut buf, at).map(|()| buf)
            })
            .await
            .ok()?
            .ok()?;
            if ours != theirs {
                return None;
            }
            at += theirs.len() as u64;
        }
        (at == snap.size).then_some(e.etag)
    }

    /// After a 412: does the server hold another version than the one this change is based
    /// on (or, for a new file, any file at all)?
    async fn really_changed(&self, snap: &DirtyState) -> bool {
        let now = match self.dav.propfind(&snap.path, Depth::Zero).await {
            Ok(v) => v.into_iter().next(),
            Err(DavError::NotFound(_)) => None,
            Err(_) => return true,
        };
        tracing::debug!(path = %snap.path, now = ?now.as_ref().map(|e| &e.etag), was = ?snap.base.as_ref().map(|b| &b.etag), "412: comparing versions");
        !still_base(now.as_ref(), snap.base.as_ref())
    }

    async fn uploaded(
        &self,
        d: &Arc<DirtyFile>,
        snap: &DirtyState,
        etag: Option<String>,
        fileid: Option<u64>,
    ) {
        let (etag, server_mtime) = match etag {
            Some(e) => (Some(e), None),
            // An answer without an etag: the server must then list the file as sent before
            // the journal lets it go. A proxy or portal answering 200 in the server's place
            // (or an answer lost with the listing) keeps it, to be sent again.
            None => match self.confirming_entry(&snap.path).await {
                Some(e) if !e.is_dir && e.size == snap.size => match e.etag {
                    Some(tag) => (Some(tag), None),
                    None => (None, Some(e.mtime)),
                },
                listed => {
                    let what = match listed {
                        Some(e) if e.is_dir => "lists a folder there".to_string(),
                        Some(e) => format!("lists it with {} bytes", e.size),
                        None => "does not list it".to_string(),
                    };
                    return self.failed(
                        d,
                        UploadError::Unconfirmed(format!(
                            "the server accepted {} ({} bytes) but {what}",
                            snap.path, snap.size
                        )),
                    );
                }
            },
        };
        tracing::info!(path = %snap.path, size = snap.size, "uploaded");
        // The filesystem learns the new server state before the local change is forgotten,
        // so that nobody sees the old server attributes in between.
        self.emit(Event::Uploaded {
            path: snap.path.clone(),
            etag: etag.clone(),
            size: snap.size,
            mtime: snap.mtime,
            server_mtime,
            fileid,
        });
        // The new server version, as the filesystem will know it (see `Event::Uploaded`).
        let validator = match (&etag, server_mtime) {
            (None, None) => None,
            (e, t) => Some(crate::webdav::version_validator(
                e.as_deref(),
                t.unwrap_or(snap.mtime),
                snap.size,
            )),
        };
        let version = self
            .fetcher
            .cache()
            .version(
                &self.identity(&snap.path),
                validator.as_deref().unwrap_or("unknown"),
            )
            .unwrap_or(VersionId(-1));
        let unchanged = {
            let mut files = lock(&self.files);
            let mut st = lock(&d.st);
            st.attempts = 0;
            st.last_error = None;
            st.quota_error = false;
            st.refused = false;
            if st.generation == snap.generation && st.open_writers == 0 {
                if files.get(&snap.path).map(|x| x.id == d.id).unwrap_or(false) {
                    files.remove(&snap.path);
                }
                true
            } else {
                // Changed again meanwhile: the next upload is based on what we just sent.
                st.base = Some(Base {
                    etag: etag.clone(),
                    size: snap.size,
                    version,
                    mtime: server_mtime.map(crate::webdav::unix_secs),
                });
                st.base_len = st.base_len.min(snap.size);
                if st.open_writers == 0 {
                    st.next_attempt = Some(Instant::now() + self.cfg.upload_delay);
                }
                false
            }
        };
        if unchanged {
            let _ = lock(&self.journal).forget_uploaded(d.id);
            // What was just uploaded is the new server version: keep it as cached blocks, so
            // the file stays readable (also offline) without downloading it back.
            let adopted = match (&validator, version) {
                (Some(_), v) if v.0 >= 0 && snap.size > 0 => self
                    .fetcher
                    .cache()
                    .adopt(v, &d.data_path, snap.size)
                    .map_err(|e| tracing::debug!(error = %e, "uploaded copy not kept in the cache"))
                    .is_ok(),
                _ => false,
            };
            if !adopted {
                let _ = std::fs::remove_file(&d.data_path);
            }
        } else {
            let st = d.state();
            let _ = lock(&self.journal).save(&self.row_of(d, &st));
        }
    }

    fn conflict(&self, d: &Arc<DirtyFile>, snap: &DirtyState) {
        let parent = snap.path.parent().unwrap_or_default();
        let cpath = parent.join(&conflict_name(snap.path.name(), SystemTime::now()));
        tracing::warn!(path = %snap.path, conflict = %cpath, "the server copy changed meanwhile: kept it, uploading ours beside it");
        {
            let mut files = lock(&self.files);
            let mut st = lock(&d.st);
            if files.get(&snap.path).map(|x| x.id == d.id).unwrap_or(false) {
                files.remove(&snap.path);
            }
            st.path = cpath.clone();
            st.base = None;
            st.base_len = 0;
            st.next_attempt = Some(Instant::now());
            st.generation += 1;
            let row = self.row_of(d, &st);
            drop(st);
            files.insert(cpath.clone(), d.clone());
            drop(files);
            let j = lock(&self.journal);
            let _ = j.save(&row);
            let _ = j.delete_session(d.id);
            let _ = j.add_conflict(&snap.path, &cpath);
            lock(&self.conflict_copies).insert(cpath.clone());
        }
        self.emit(Event::Conflict {
            path: snap.path.clone(),
            conflict_path: cpath,
        });
    }

    fn failed(&self, d: &Arc<DirtyFile>, e: UploadError) {
        let mut st = lock(&d.st);
        st.attempts += 1;
        let backoff = Duration::from_secs((1u64 << st.attempts.min(6)).min(60));
        st.refused = matches!(
            e,
            UploadError::Dav(
                DavError::Forbidden(_)
                    | DavError::Status { status: 400, .. }
                    | DavError::TooLarge(_)
            )
        );
        let (msg, wait) = match &e {
            UploadError::Dav(DavError::InsufficientStorage) => {
                st.quota_error = true;
                (e.to_string(), Duration::from_secs(60))
            }
            UploadError::Dav(DavError::Unauthorized) => (e.to_string(), Duration::from_secs(2)),
            UploadError::Dav(DavError::Forbidden(_))
            | UploadError::Dav(DavError::Status { status: 400, .. }) => (
                format!("{e} (the server refuses this name or place)"),
                Duration::from_secs(600),
            ),
            UploadError::BaseChanged => (e.to_string(), Duration::from_secs(300)),
            // Smaller chunks, at once, where the server takes them.
            UploadError::Dav(DavError::TooLarge(_)) if self.smaller_chunks_may_pass() => {
                st.refused = false;
                (
                    format!("{e} (sent again in smaller chunks)"),
                    Duration::from_secs(1),
                )
            }
            // Only the server's configuration changes that: ask again now and then.
            UploadError::Dav(DavError::TooLarge(_)) => (e.to_string(), Duration::from_secs(600)),
            _ => (e.to_string(), backoff),
        };
        tracing::warn!(path = %st.path, attempts = st.attempts, retry_in = ?wait, error = %msg, "upload failed; kept in the journal");
        st.last_error = Some(msg);
        st.next_attempt = Some(Instant::now() + wait);
    }
}

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error("{0}")]
    Dav(#[from] DavError),
    #[error("{0}")]
    Local(Error),
    #[error("the server copy changed before the rest of the file could be downloaded; the local part stays in the journal")]
    BaseChanged,
    #[error("{0}; kept to be sent again")]
    Unconfirmed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions() {
        for n in [
            ".~lock.report.odt#",
            "~$report.docx",
            ".notes.txt.swp",
            "notes.txt~",
        ] {
            assert!(is_excluded(n), "{n}");
        }
        for n in ["report.odt", "lock", ".bashrc", "a~b"] {
            assert!(!is_excluded(n), "{n}");
        }
    }

    #[test]
    fn conflict_names() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000); // 2026-11-18 11:06:40 UTC
        assert_eq!(
            conflict_name("report.odt", t),
            "report (conflicted copy 2026-11-18 110640).odt"
        );
        assert_eq!(
            conflict_name("Makefile", t),
            "Makefile (conflicted copy 2026-11-18 110640)"
        );
        assert_eq!(
            conflict_name(".bashrc", t),
            ".bashrc (conflicted copy 2026-11-18 110640)"
        );
        assert_eq!(
            conflict_name("a.tar.gz", t),
            "a.tar (conflicted copy 2026-11-18 110640).gz"
        );
    }
}
