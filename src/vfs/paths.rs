//! The core seen by path, for OS adapters whose calls name files by path and keep a handle
//! per open (WinFsp on Windows), instead of inode numbers (FUSE).
//!
//! Every call blocks its thread until the core answers: such adapters call from their own
//! dispatcher threads, never from the runtime's. What Windows asks differently from POSIX is
//! decided here, so that it is tested on Linux: names are exact, and a name that differs
//! from one entry of its folder only in letter case is that entry (Windows programs change
//! the case of names they were given); a file opened for writing downloads nothing until the
//! first write (Explorer opens files for writing just to look at them); a deletion is asked
//! for on an open handle and made when it closes.

use super::{Attr, DirEntry, Fh, FileKind, Ino, StatFs, Vfs};
use crate::error::{Error, ErrorKind, Result};
use bytes::Bytes;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// The core, by path. Cheap to share between dispatcher threads.
pub struct PathFs {
    vfs: Arc<Vfs>,
    rt: tokio::runtime::Handle,
}

/// An open file or folder.
#[derive(Debug)]
pub struct Handle {
    /// Inode of what was opened.
    pub ino: Ino,
    /// File or folder.
    pub kind: FileKind,
    state: Mutex<HandleState>,
}

#[derive(Debug, Default)]
struct HandleState {
    /// The path as the server spells it (`/` separated, from the mount's root).
    path: String,
    /// Read-only core handle (files opened without write access, or before the first write).
    reader: Option<Fh>,
    /// Writing core handle, taken at the first change.
    writer: Option<Fh>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `\a\b` or `/a/b/` → `/a/b`; the root is `/`.
pub fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|s| !s.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// The folder and the last name of a normalized path; `None` for the root.
fn split(path: &str) -> Option<(&str, &str)> {
    let (parent, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

fn joined(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Where a write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAt {
    /// At this offset; the file grows as needed.
    Offset(u64),
    /// At the end of the file (an append).
    End,
    /// At this offset, but only within the file's current size (Windows' paging I/O, which
    /// never extends a file): what lies past the end is not written.
    Within(u64),
}

impl Handle {
    fn new(attr: &Attr, path: String, reader: Option<Fh>, writer: Option<Fh>) -> Self {
        Handle {
            ino: attr.ino,
            kind: attr.kind,
            state: Mutex::new(HandleState {
                path,
                reader,
                writer,
            }),
        }
    }

    /// True for a folder.
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }
}

impl PathFs {
    /// Wraps the core; `rt` is the runtime the core's tasks run on.
    pub fn new(vfs: Arc<Vfs>, rt: tokio::runtime::Handle) -> Self {
        PathFs { vfs, rt }
    }

    /// The core behind.
    pub fn vfs(&self) -> &Arc<Vfs> {
        &self.vfs
    }

    /// Attributes and server spelling of `path`.
    fn walk(&self, path: &str) -> Result<(Attr, String)> {
        let path = normalize(path);
        self.rt.block_on(async {
            let mut attr = self.vfs.getattr(Ino::ROOT).await?;
            let mut real = String::from("/");
            for name in path.split('/').filter(|s| !s.is_empty()) {
                if attr.kind != FileKind::Dir {
                    return Err(Error::new(
                        ErrorKind::NotADirectory,
                        format!("{real} is not a folder"),
                    ));
                }
                let (a, spelled) = match self.vfs.lookup(attr.ino, name).await {
                    Ok(a) => (a, name.to_string()),
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        self.by_other_case(attr.ino, name).await?.ok_or(e)?
                    }
                    Err(e) => return Err(e),
                };
                real = joined(&real, &spelled);
                attr = a;
            }
            Ok((attr, real))
        })
    }

    /// The one entry of folder `dir` whose name is `name` but for letter case.
    async fn by_other_case(&self, dir: Ino, name: &str) -> Result<Option<(Attr, String)>> {
        let (_, entries) = self.vfs.readdir(dir).await?;
        let lower = name.to_lowercase();
        let mut found = entries
            .into_iter()
            .filter(|e| e.name.to_lowercase() == lower);
        match (found.next(), found.next()) {
            (Some(e), None) => Ok(Some((e.attr, e.name))),
            _ => Ok(None),
        }
    }

    /// Attributes of `path`.
    pub fn stat(&self, path: &str) -> Result<Attr> {
        Ok(self.walk(path)?.0)
    }

    /// Opens a file or folder. Nothing is downloaded, also for `write`: the file becomes a
    /// local change only when written to.
    pub fn open(&self, path: &str) -> Result<(Handle, Attr)> {
        let (attr, real) = self.walk(path)?;
        let reader = match attr.kind {
            FileKind::Dir => None,
            FileKind::File => Some(self.rt.block_on(self.vfs.open(attr.ino, false, false))?.fh),
        };
        Ok((Handle::new(&attr, real, reader, None), attr))
    }

    /// Creates a file (open for writing) or a folder at `path`.
    pub fn create(&self, path: &str, dir: bool) -> Result<(Handle, Attr)> {
        let path = normalize(path);
        let (parent, name) = split(&path).ok_or_else(|| {
            Error::new(ErrorKind::AlreadyExists, "the root folder exists already")
        })?;
        let (pattr, preal) = self.walk(parent)?;
        if pattr.kind != FileKind::Dir {
            return Err(Error::new(
                ErrorKind::NotADirectory,
                format!("{preal} is not a folder"),
            ));
        }
        let (attr, writer) = if dir {
            (self.rt.block_on(self.vfs.mkdir(pattr.ino, name))?, None)
        } else {
            let (a, o) = self.rt.block_on(self.vfs.create(pattr.ino, name, false))?;
            (a, Some(o.fh))
        };
        Ok((Handle::new(&attr, joined(&preal, name), None, writer), attr))
    }

    /// The handle's writing core handle, taken now if it has none.
    fn writer(&self, h: &Handle) -> Result<Fh> {
        if h.is_dir() {
            return Err(Error::new(
                ErrorKind::IsADirectory,
                "a folder has no content",
            ));
        }
        let mut st = guard(&h.state);
        if let Some(w) = st.writer {
            return Ok(w);
        }
        let w = self.rt.block_on(self.vfs.open(h.ino, true, false))?.fh;
        st.writer = Some(w);
        Ok(w)
    }

    /// Current attributes of an open file or folder (a writer's size included).
    pub fn attr(&self, h: &Handle) -> Result<Attr> {
        self.rt.block_on(self.vfs.getattr(h.ino))
    }

    /// Reads up to `size` bytes at `offset`; empty at or past the end.
    pub fn read(&self, h: &Handle, offset: u64, size: u32) -> Result<Bytes> {
        let fh = {
            let st = guard(&h.state);
            st.writer.or(st.reader)
        };
        let fh = fh.ok_or_else(|| Error::new(ErrorKind::IsADirectory, "a folder is not read"))?;
        self.rt.block_on(self.vfs.read(fh, offset, size))
    }

    /// Writes `data` where `at` says; answers the bytes written.
    pub fn write(&self, h: &Handle, at: WriteAt, data: &[u8]) -> Result<u32> {
        let (offset, data) = match at {
            WriteAt::Offset(o) => (o, data),
            WriteAt::End => (self.attr(h)?.size, data),
            WriteAt::Within(o) => {
                let size = self.attr(h)?.size;
                let room = usize::try_from(size.saturating_sub(o)).unwrap_or(usize::MAX);
                (o, &data[..data.len().min(room)])
            }
        };
        if data.is_empty() {
            return Ok(0);
        }
        let fh = self.writer(h)?;
        self.vfs.write_blocking(fh, offset, data)
    }

    /// Cuts or extends the file to `size` bytes.
    pub fn set_size(&self, h: &Handle, size: u64) -> Result<Attr> {
        self.rt
            .block_on(self.vfs.setattr(h.ino, Some(size), None, None))
    }

    /// Windows' allocation size: it matters only when it is below the file's size, which it
    /// then cuts.
    pub fn set_allocation(&self, h: &Handle, size: u64) -> Result<Attr> {
        let now = self.attr(h)?;
        if size < now.size {
            self.set_size(h, size)
        } else {
            Ok(now)
        }
    }

    /// Sets the modification time.
    pub fn set_mtime(&self, h: &Handle, mtime: SystemTime) -> Result<Attr> {
        self.rt
            .block_on(self.vfs.setattr(h.ino, None, Some(mtime), None))
    }

    /// Entries of an open folder, sorted by name.
    pub fn list(&self, h: &Handle) -> Result<Vec<DirEntry>> {
        if !h.is_dir() {
            return Err(Error::new(ErrorKind::NotADirectory, "not a folder"));
        }
        let (_, mut entries) = self.rt.block_on(self.vfs.readdir(h.ino))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Where the handle's file or folder is now: renames made through other handles (or by
    /// other programs) are followed.
    pub fn path(&self, h: &Handle) -> String {
        let mut st = guard(&h.state);
        if let Some(p) = self.vfs.path_of(h.ino) {
            st.path = p;
        }
        st.path.clone()
    }

    /// Whether the open file or folder may be deleted when closed (a folder must be empty).
    pub fn can_delete(&self, h: &Handle) -> Result<()> {
        if self.vfs.config().read_only {
            return Err(Error::new(ErrorKind::ReadOnly, "the mount is read-only"));
        }
        if h.is_dir() && !self.list(h)?.is_empty() {
            return Err(Error::new(
                ErrorKind::NotEmpty,
                format!("{} is not empty", self.path(h)),
            ));
        }
        Ok(())
    }

    /// Deletes what the handle names (asked for earlier, made when the last user lets go).
    pub fn delete(&self, h: &Handle) -> Result<()> {
        let path = self.path(h);
        let (parent, name) = split(&path)
            .ok_or_else(|| Error::new(ErrorKind::PermissionDenied, "the root is not deleted"))?;
        let pattr = self.stat(parent)?;
        if h.is_dir() {
            self.rt.block_on(self.vfs.rmdir(pattr.ino, name))
        } else {
            self.rt.block_on(self.vfs.unlink(pattr.ino, name))
        }
    }

    /// Renames what the handle names to `to`; fails with `AlreadyExists` when `to` exists
    /// and `replace` is false.
    pub fn rename(&self, h: &Handle, to: &str, replace: bool) -> Result<()> {
        let from = self.path(h);
        let to = normalize(to);
        let ((fparent, fname), (tparent, tname)) = match (split(&from), split(&to)) {
            (Some(f), Some(t)) => (f, t),
            _ => {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    "the root is not renamed",
                ))
            }
        };
        let fdir = self.stat(fparent)?;
        let (tdir, treal) = self.walk(tparent)?;
        self.rt
            .block_on(self.vfs.rename(fdir.ino, fname, tdir.ino, tname, !replace))?;
        guard(&h.state).path = joined(&treal, tname);
        Ok(())
    }

    /// Makes what was written through the handle durable on this disk.
    pub fn flush(&self, h: &Handle) -> Result<()> {
        match guard(&h.state).writer {
            Some(w) => self.vfs.fsync_blocking(w),
            None => Ok(()),
        }
    }

    /// Closes the handle: what was written through it is scheduled for upload.
    pub fn close(&self, h: &Handle) -> Result<()> {
        let (reader, writer) = {
            let mut st = guard(&h.state);
            (st.reader.take(), st.writer.take())
        };
        if let Some(r) = reader {
            self.vfs.release_blocking(r)?;
        }
        match writer {
            Some(w) => self.vfs.release_blocking(w),
            None => Ok(()),
        }
    }

    /// Size and free space of the volume (the account's quota).
    pub fn statfs(&self) -> Result<StatFs> {
        self.rt.block_on(self.vfs.statfs())
    }
}
