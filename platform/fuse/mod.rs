//! The FUSE adapter (Linux, macOS): each callback converts its arguments, calls one `Vfs`
//! method on the runtime, and replies or maps the error. Callbacks that may wait on the network
//! are spawned onto the tokio runtime with their reply object, so the single FUSE session
//! thread never blocks and slow requests do not hold up fast ones.

mod errno;

use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, MountOption, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow,
};
use nuage::cli::{MountedFs, Platform, PlatformMountOptions};
use nuage::vfs::{Attr, Fh, FileKind, Ino, Invalidation, Vfs};
use nuage::Error;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The FUSE platform.
pub struct FusePlatform;

struct NuageFs {
    vfs: Arc<Vfs>,
    rt: tokio::runtime::Handle,
    ttl: Duration,
    /// Backing files registered with the kernel (passthrough).
    backing: Arc<std::sync::Mutex<Backings>>,
}

/// The kernel wants one backing file per inode for all its passthrough opens: one registration
/// per inode, shared by its handles, closed (dropped) with the last of them.
#[derive(Default)]
struct Backings {
    /// Inode to (content version, registration, open handles).
    by_ino: std::collections::HashMap<u64, (i64, fuser::BackingId, u32)>,
    /// Handle to inode.
    by_fh: std::collections::HashMap<u64, u64>,
}

impl Backings {
    fn release(&mut self, fh: u64) {
        if let Some(ino) = self.by_fh.remove(&fh) {
            let gone = match self.by_ino.get_mut(&ino) {
                Some(e) => {
                    e.2 -= 1;
                    e.2 == 0
                }
                None => false,
            };
            if gone {
                self.by_ino.remove(&ino);
            }
        }
    }
}

/// Tells the kernel what changed remotely.
fn tell(notifier: &fuser::Notifier, inv: &Invalidation) {
    let res = match inv {
        Invalidation::Inode(ino) => notifier.inval_inode(ino.0, 0, 0),
        // A negative offset: the attributes only.
        Invalidation::Attributes(ino) => notifier.inval_inode(ino.0, -1, 0),
        Invalidation::Pages { ino, offset, len } => notifier.inval_inode(
            ino.0,
            i64::try_from(*offset).unwrap_or(i64::MAX),
            i64::try_from(*len).unwrap_or(i64::MAX),
        ),
        Invalidation::Entry { parent, name } => notifier.inval_entry(parent.0, OsStr::new(name)),
    };
    // ENOENT: the kernel did not know it, nothing to forget.
    if let Err(e) = res {
        tracing::debug!(?inv, error = %e, "kernel invalidation");
    }
}

struct FuseMount {
    session: fuser::BackgroundSession,
}

impl MountedFs for FuseMount {
    fn is_alive(&self) -> bool {
        !self.session.guard.is_finished()
    }
    fn unmount(self: Box<Self>) {
        if self.session.guard.is_finished() {
            // Unmounted from outside (`fusermount3 -u`, `umount`): dropping the session would
            // unmount the mount point by path once more (fuser 0.16 takes the closed device
            // for a live mount), and that could be another filesystem mounted there since.
            // The process is about to exit: let it go without unmounting anything.
            std::mem::forget(self.session);
            return;
        }
        // Dropping the session unmounts; the session thread then ends on its own.
        drop(self.session);
    }
}

impl Platform for FusePlatform {
    fn mount(
        &self,
        vfs: Arc<Vfs>,
        rt: tokio::runtime::Handle,
        mountpoint: &Path,
        opts: &PlatformMountOptions,
    ) -> anyhow::Result<Box<dyn MountedFs>> {
        let ttl = vfs.config().attr_ttl;
        let mut options = vec![
            MountOption::FSName(opts.fsname.clone()),
            MountOption::Subtype("nuage".into()),
            MountOption::DefaultPermissions,
            MountOption::NoAtime,
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        if opts.read_only {
            options.push(MountOption::RO);
        }
        if opts.allow_other {
            options.push(MountOption::AllowOther);
        }
        let session = fuser::spawn_mount2(
            NuageFs {
                vfs: vfs.clone(),
                rt,
                ttl,
                backing: Default::default(),
            },
            mountpoint,
            &options,
        )
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied && !fuse_device_usable() {
                anyhow::anyhow!(
                    "{FUSE_DEVICE} cannot be opened by this user (a usual install of fuse3 \
                     lets every user open it: ask an administrator to run chmod 666 {FUSE_DEVICE})"
                )
            } else {
                e.into()
            }
        })?;
        raise_readahead(mountpoint);
        // Remote changes reach the kernel from a thread of their own: a notification may wait
        // for the kernel, which may be waiting for a callback.
        let notifier = session.notifier();
        let at_once = notifier.clone();
        let (tx, rx) = std::sync::mpsc::channel::<Invalidation>();
        std::thread::Builder::new()
            .name("nuage-notify".into())
            .spawn(move || {
                for inv in rx {
                    tell(&notifier, &inv);
                }
            })?;
        let tx = std::sync::Mutex::new(tx);
        vfs.set_invalidator(Arc::new(move |inv| {
            if let Invalidation::Attributes(_) = inv {
                // No page is involved: told before the read that asked is answered, so that
                // the kernel cannot stop at the old size first.
                tell(&at_once, &inv);
            } else if let Ok(t) = tx.lock() {
                let _ = t.send(inv);
            }
        }));
        Ok(Box::new(FuseMount { session }))
    }

    fn unmount(&self, mountpoint: &Path) -> anyhow::Result<()> {
        let out = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(mountpoint)
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            other => {
                // Without fusermount3 (or for root), umount(8) does the same.
                let um = std::process::Command::new("umount")
                    .arg(mountpoint)
                    .output();
                match um {
                    Ok(o) if o.status.success() => Ok(()),
                    _ => {
                        let why = match other {
                            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                            Err(e) => e.to_string(),
                        };
                        let hint = if why.contains("busy") {
                            format!(
                                " (a program still has a file or folder open there, or a shell is in it: close it and try again; `fuser -vm {}` names it)",
                                mountpoint.display()
                            )
                        } else {
                            String::new()
                        };
                        anyhow::bail!("cannot unmount {}: {why}{hint}", mountpoint.display())
                    }
                }
            }
        }
    }

    fn clear_dead_mount(&self, mountpoint: &Path) -> bool {
        let Ok(abs) = std::path::absolute(mountpoint) else {
            return false;
        };
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return false;
        };
        if !nuage_mount_at(&info, &abs) {
            return false;
        }
        // Lazily: a program may still hold a file of the dead mount open.
        let done = |prog: &str, args: &[&str]| {
            std::process::Command::new(prog)
                .args(args)
                .arg(&abs)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        done("fusermount3", &["-u", "-z"]) || done("umount", &["-l"])
    }

    fn is_mounted(&self, mountpoint: &Path) -> bool {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return false;
        };
        let want = mountpoint.to_string_lossy();
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|mp| unescape_mountinfo(mp) == want)
    }
}

const FUSE_DEVICE: &str = "/dev/fuse";

/// `close()` of this handle sends no `FLUSH` (Linux 5.19, protocol 7.35; older kernels ignore
/// the bit): a reader has nothing to make durable, and the round trip is a large part of
/// opening and closing a small file. Not in fuser's constants.
const FOPEN_NOFLUSH: u32 = 1 << 5;

/// True when this process may open the FUSE device for reading and writing.
fn fuse_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(FUSE_DEVICE)
        .is_ok()
}

/// The kernel caps FUSE read-ahead at the device's `read_ahead_kb` (128 KiB), whatever the
/// filesystem asks in `init`; raising it to 1 MiB makes sequential reads arrive as 1 MiB requests
/// (8 times fewer round trips). Needs root; without it reads stay at 128 KiB.
#[cfg(target_os = "linux")]
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = md.dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    if let Err(e) = std::fs::write(&path, "1024") {
        tracing::debug!(%path, error = %e, "could not raise the read-ahead");
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_readahead(_mountpoint: &Path) {}

/// True when `mountinfo` lists a nuage FUSE mount on `mountpoint`: type `fuse.nuage`, or type
/// `fuse` with a source named `nuage:...` (mounted by root, the kernel keeps no subtype).
fn nuage_mount_at(mountinfo: &str, mountpoint: &Path) -> bool {
    let want = mountpoint.to_string_lossy();
    mountinfo.lines().any(|l| {
        let mut halves = l.splitn(2, " - ");
        let (Some(head), Some(tail)) = (halves.next(), halves.next()) else {
            return false;
        };
        head.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(&*want)
            && match tail.split(' ').take(2).collect::<Vec<_>>()[..] {
                ["fuse.nuage", _] => true,
                ["fuse", source] => source.starts_with("nuage:"),
                _ => false,
            }
    })
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The preferred I/O size reported to programs (`st_blksize`): the cache's block size, so that
/// `cat`, `cp` and friends read and write in 1 MiB pieces rather than 128 KiB ones.
const BLKSIZE: u32 = 1 << 20;

fn file_attr(a: &Attr) -> FileAttr {
    let (kind, nlink) = match a.kind {
        FileKind::Dir => (FileType::Directory, 2),
        FileKind::File => (FileType::RegularFile, 1),
    };
    FileAttr {
        ino: a.ino.0,
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind,
        perm: a.perm,
        nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// An extended attribute reply: its size when asked for it (`size` 0), ERANGE when it does not
/// fit, else the bytes.
fn reply_xattr(reply: ReplyXattr, size: u32, v: &[u8]) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(libc::ERANGE);
    } else {
        reply.data(v);
    }
}

fn fail(op: &str, e: &Error) -> i32 {
    e.log(op);
    errno::errno(e.kind)
}

/// True when a program creates a file with an x bit in its mode (after its umask): a
/// compiler's output, `cp` of a script.
fn asks_exec(mode: u32, umask: u32) -> bool {
    mode & !umask & 0o111 != 0
}

/// What a `fallocate()` mode asks; `None` for what cannot be done here (moving bytes:
/// collapse, insert).
fn allocate_mode(mode: i32) -> Option<nuage::vfs::Allocate> {
    use nuage::vfs::Allocate;
    const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
    match mode {
        0 => Some(Allocate::Extend),
        KEEP => Some(Allocate::KeepSize),
        m if m == libc::FALLOC_FL_PUNCH_HOLE | KEEP => Some(Allocate::Zero { keep_size: true }),
        m if m == libc::FALLOC_FL_ZERO_RANGE => Some(Allocate::Zero { keep_size: false }),
        m if m == libc::FALLOC_FL_ZERO_RANGE | KEEP => Some(Allocate::Zero { keep_size: true }),
        _ => None,
    }
}

/// Open flags for a handle: a write-only one gains nothing from the page cache, so its writes
/// go straight to nuage (one copy and one page cache fill less per byte written; nothing is
/// read through it, and the kernel drops the pages it overwrites from other handles' cache).
/// Handles that also read keep the page cache and the kernel's read-ahead.
fn write_only_flags(flags: i32) -> u32 {
    if flags & libc::O_ACCMODE == libc::O_WRONLY {
        fuser::consts::FOPEN_DIRECT_IO
    } else {
        0
    }
}

/// Answers an `open`: with the kernel reading the cache file itself (passthrough) when the
/// core offers a backing file and the kernel takes it, else through nuage.
fn reply_open(
    vfs: &Vfs,
    backing: &std::sync::Mutex<Backings>,
    ino: u64,
    write_only: u32,
    read_only: bool,
    res: nuage::Result<nuage::vfs::Opened>,
    reply: ReplyOpen,
) {
    let o = match res {
        Ok(o) => o,
        Err(e) => return reply.error(fail("open", &e)),
    };
    let f = write_only
        | if read_only { FOPEN_NOFLUSH } else { 0 }
        | if o.keep_cache {
            fuser::consts::FOPEN_KEEP_CACHE
        } else {
            0
        };
    if let Some(file) = &o.backing {
        let mut b = match backing.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        let usable = match b.by_ino.get_mut(&ino) {
            Some((v, _, n)) if *v == o.backing_version => {
                *n += 1;
                true
            }
            Some(_) => false,
            None => match reply.open_backing(file) {
                Ok(id) => {
                    b.by_ino.insert(ino, (o.backing_version, id, 1));
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, "passthrough refused by the kernel");
                    false
                }
            },
        };
        if usable {
            b.by_fh.insert(o.fh.0, ino);
            if let Some((_, id, _)) = b.by_ino.get(&ino) {
                // The kernel refuses page-cache flags on a passthrough open.
                let f = if read_only { FOPEN_NOFLUSH } else { 0 };
                reply.opened_passthrough(o.fh.0, f, id);
                tracing::debug!(ino, fh = o.fh.0, "opened in passthrough mode");
                return;
            }
        }
        vfs.passthrough_refused(o.fh);
    }
    reply.opened(o.fh.0, f)
}

fn name_str(name: &OsStr) -> Option<String> {
    name.to_str().map(str::to_string)
}

impl NuageFs {
    /// Answers a `flush` or `release` of `fh` with `step`: here when it has nothing to wait
    /// for (a reader, or data already durable), else on a thread that may block on the disk.
    fn closing(
        &self,
        fh: u64,
        what: &'static str,
        step: fn(&Vfs, Fh) -> nuage::Result<()>,
        reply: ReplyEmpty,
    ) {
        let vfs = self.vfs.clone();
        let done = move |res: nuage::Result<()>| match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail(what, &e)),
        };
        if vfs.release_is_quick(Fh(fh)) {
            done(step(&vfs, Fh(fh)));
        } else {
            self.rt.spawn_blocking(move || done(step(&vfs, Fh(fh))));
        }
    }
}

impl Filesystem for NuageFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        // Large reads (1 MiB) keep the request count low on sequential reads.
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_write(1 << 20);
        let _ = config.add_capabilities(
            fuser::consts::FUSE_PARALLEL_DIROPS
                | fuser::consts::FUSE_AUTO_INVAL_DATA
                | fuser::consts::FUSE_DO_READDIRPLUS,
        );
        // Completely cached files are read by the kernel from the cache file itself (Linux
        // 6.9+, and only for root: registering a backing file needs CAP_SYS_ADMIN), unless
        // NUAGE_PASSTHROUGH=off asks for the way a mount made by another user works.
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let wanted = std::env::var("NUAGE_PASSTHROUGH").map_or(true, |v| v != "off");
        let passthrough = root
            && wanted
            && config.set_max_stack_depth(1).is_ok()
            && config
                .add_capabilities(fuser::consts::FUSE_PASSTHROUGH)
                .is_ok();
        if !passthrough {
            let _ = config.set_max_stack_depth(0);
        }
        tracing::debug!(passthrough, "kernel passthrough for cached files");
        self.vfs.set_passthrough(passthrough);
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name_str(name) else {
            return reply.error(libc::ENOENT);
        };
        match self.vfs.lookup_cached(Ino(parent), &name) {
            Some(Ok(a)) => return reply.entry(&self.ttl, &file_attr(&a), 0),
            Some(Err(e)) => return reply.error(fail("lookup", &e)),
            None => {}
        }
        let (vfs, ttl) = (self.vfs.clone(), self.ttl);
        self.rt.spawn(async move {
            match vfs.lookup(Ino(parent), &name).await {
                Ok(a) => reply.entry(&ttl, &file_attr(&a), 0),
                Err(e) => reply.error(fail("lookup", &e)),
            }
        });
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        if let Some(a) = self.vfs.getattr_cached(Ino(ino)) {
            return reply.attr(&self.ttl, &file_attr(&a));
        }
        let (vfs, ttl) = (self.vfs.clone(), self.ttl);
        self.rt.spawn(async move {
            match vfs.getattr(Ino(ino)).await {
                Ok(a) => reply.attr(&ttl, &file_attr(&a)),
                Err(e) => reply.error(fail("getattr", &e)),
            }
        });
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let write_only = write_only_flags(flags);
        let truncate = flags & libc::O_TRUNC != 0;
        if let Some(res) = self.vfs.open_quick(Ino(ino), write, truncate) {
            // Nothing to wait for: answered here, without a thread hop.
            return reply_open(
                &self.vfs,
                &self.backing,
                ino,
                write_only,
                !write,
                res,
                reply,
            );
        }
        let (vfs, backing) = (self.vfs.clone(), self.backing.clone());
        self.rt.spawn(async move {
            let res = vfs.open(Ino(ino), write, truncate).await;
            reply_open(
                &vfs,
                &backing,
                ino,
                write_only,
                !write && !truncate,
                res,
                reply,
            );
        });
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(libc::EINVAL);
        };
        {
            // Read-ahead that arrived in time is answered here, without a task.
            let _rt = self.rt.enter();
            if let Some(data) = self.vfs.read_ready(Fh(fh), offset, size) {
                return reply.data(&data);
            }
        }
        let vfs = self.vfs.clone();
        self.rt.spawn(async move {
            match vfs.read(Fh(fh), offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(fail("read", &e)),
            }
        });
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut b) = self.backing.lock() {
            b.release(fh);
        }
        self.closing(fh, "release", Vfs::release_blocking, reply);
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        tracing::debug!(fh, "flush");
        self.closing(fh, "flush", Vfs::fsync_blocking, reply);
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let vfs = self.vfs.clone();
        self.rt
            .spawn_blocking(move || match vfs.fsync_blocking(Fh(fh)) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("fsync", &e)),
            });
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(libc::EINVAL);
        };
        let (vfs, data) = (self.vfs.clone(), data.to_vec());
        self.rt
            .spawn_blocking(move || match vfs.write_blocking(Fh(fh), offset, &data) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(fail("write", &e)),
            });
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = name_str(name) else {
            return reply.error(libc::EINVAL);
        };
        let (vfs, ttl) = (self.vfs.clone(), self.ttl);
        let open_flags = write_only_flags(flags);
        let exec = asks_exec(mode, umask);
        self.rt.spawn(async move {
            match vfs.create(Ino(parent), &name, exec).await {
                Ok((a, o)) => reply.created(&ttl, &file_attr(&a), 0, o.fh.0, open_flags),
                Err(e) => reply.error(fail("create", &e)),
            }
        });
    }

    /// `mknod` of a regular file (some programs make files this way) creates it; no server
    /// stores pipes, sockets or devices: those are refused with `EPERM`, as on FAT.
    fn mknod(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(libc::EPERM);
        }
        let Some(name) = name_str(name) else {
            return reply.error(libc::EINVAL);
        };
        let (vfs, ttl) = (self.vfs.clone(), self.ttl);
        let exec = asks_exec(mode, umask);
        self.rt.spawn(async move {
            let (attr, opened) = match vfs.create(Ino(parent), &name, exec).await {
                Ok(made) => made,
                Err(e) => return reply.error(fail("mknod", &e)),
            };
            // The new file stays empty and closed: it is made durable and scheduled for upload.
            match tokio::task::spawn_blocking(move || vfs.release_blocking(opened.fh)).await {
                Ok(Ok(())) => reply.entry(&ttl, &file_attr(&attr), 0),
                Ok(Err(e)) => reply.error(fail("mknod", &e)),
                Err(_) => reply.error(libc::EIO),
            }
        });
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = name_str(name) else {
            return reply.error(libc::EINVAL);
        };
        let (vfs, ttl) = (self.vfs.clone(), self.ttl);
        self.rt.spawn(async move {
            match vfs.mkdir(Ino(parent), &name).await {
                Ok(a) => reply.entry(&ttl, &file_attr(&a), 0),
                Err(e) => reply.error(fail("mkdir", &e)),
            }
        });
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_str(name) else {
            return reply.error(libc::ENOENT);
        };
        let vfs = self.vfs.clone();
        self.rt.spawn(async move {
            match vfs.unlink(Ino(parent), &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("unlink", &e)),
            }
        });
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_str(name) else {
            return reply.error(libc::ENOENT);
        };
        let vfs = self.vfs.clone();
        self.rt.spawn(async move {
            match vfs.rmdir(Ino(parent), &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("rmdir", &e)),
            }
        });
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let (Some(name), Some(newname)) = (name_str(name), name_str(newname)) else {
            return reply.error(libc::EINVAL);
        };
        // RENAME_EXCHANGE cannot be done atomically over WebDAV: refused deliberately.
        if flags & libc::RENAME_EXCHANGE != 0 {
            return reply.error(libc::EINVAL);
        }
        let no_replace = flags & libc::RENAME_NOREPLACE != 0;
        let vfs = self.vfs.clone();
        self.rt.spawn(async move {
            match vfs
                .rename(Ino(parent), &name, Ino(newparent), &newname, no_replace)
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("rename", &e)),
            }
        });
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        // Modes and owners cannot be stored on the server: owners are accepted and ignored,
        // so that cp -a, rsync -a and tar work; of a mode, "executable or not" is kept on
        // this device (the other bits are fixed).
        let mtime = mtime.map(|t| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => std::time::SystemTime::now(),
        });
        let (vfs, ttl) = (self.vfs.clone(), self.ttl);
        self.rt.spawn(async move {
            match vfs.setattr(Ino(ino), size, mtime, mode).await {
                Ok(a) => reply.attr(&ttl, &file_attr(&a)),
                Err(e) => reply.error(fail("setattr", &e)),
            }
        });
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let how = match allocate_mode(mode) {
            Some(h) => h,
            None => return reply.error(libc::EOPNOTSUPP),
        };
        let (Ok(offset), Ok(length)) = (u64::try_from(offset), u64::try_from(length)) else {
            return reply.error(libc::EINVAL);
        };
        let vfs = self.vfs.clone();
        self.rt.spawn_blocking(
            move || match vfs.allocate_blocking(Fh(fh), offset, length, how) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("fallocate", &e)),
            },
        );
    }

    // Links cannot be represented over WebDAV: refused deliberately.
    fn symlink(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(libc::EPERM);
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _newparent: u64,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(libc::EPERM);
    }

    // Extended attributes: only nuage's own (`user.nuage.status`, `user.nuage.pinned`), answered
    // from memory; other `user.` names are ENODATA and other namespaces (`security.selinux`,
    // POSIX ACLs) ENOTSUP, which `ls -l` remembers per filesystem instead of asking per file.

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let asks_server = [
            nuage::vfs::XATTR_LINK,
            nuage::vfs::XATTR_SHARE,
            nuage::vfs::XATTR_TRASH,
            nuage::vfs::XATTR_VERSIONS,
        ];
        if let Some(which) = asks_server.into_iter().find(|n| name == *n) {
            // Asks the server: answered from a task.
            let vfs = self.vfs.clone();
            self.rt.spawn(async move {
                let got = match which {
                    nuage::vfs::XATTR_TRASH => vfs.trash_listing().await,
                    nuage::vfs::XATTR_VERSIONS => vfs.versions(Ino(ino)).await,
                    nuage::vfs::XATTR_SHARE => vfs.people_shares(Ino(ino)).await,
                    _ => vfs.public_links(Ino(ino)).await,
                };
                match got {
                    Ok(v) => reply_xattr(reply, size, &v),
                    Err(e) => reply.error(fail("getxattr", &e)),
                }
            });
            return;
        }
        match self.vfs.xattr_get(Ino(ino), &name.to_string_lossy()) {
            Ok(v) => reply_xattr(reply, size, &v),
            Err(e) => reply.error(fail("getxattr", &e)),
        }
    }

    fn listxattr(&mut self, _req: &Request<'_>, _ino: u64, size: u32, reply: ReplyXattr) {
        // nuage's attributes are virtual: answered by name, never listed, so that `cp -a`,
        // `rsync -X` and `tar --xattrs` do not copy them onto other files.
        reply_xattr(reply, size, &[]);
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (vfs, name, value) = (
            self.vfs.clone(),
            name.to_string_lossy().into_owned(),
            value.to_vec(),
        );
        let asks_server = [
            nuage::vfs::XATTR_LINK,
            nuage::vfs::XATTR_SHARE,
            nuage::vfs::XATTR_RESTORE,
            nuage::vfs::XATTR_RESTORE_VERSION,
        ];
        if asks_server.contains(&name.as_str()) {
            self.rt.spawn(async move {
                let done = match name.as_str() {
                    nuage::vfs::XATTR_RESTORE => vfs.restore_from_trash(&value).await,
                    nuage::vfs::XATTR_RESTORE_VERSION => {
                        vfs.restore_version(Ino(ino), &value).await
                    }
                    nuage::vfs::XATTR_SHARE => vfs.share_with(Ino(ino), &value).await,
                    _ => vfs.create_public_link(Ino(ino), &value).await,
                };
                match done {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(fail("setxattr", &e)),
                }
            });
            return;
        }
        self.rt
            .spawn_blocking(move || match vfs.xattr_set(Ino(ino), &name, &value) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("setxattr", &e)),
            });
    }

    fn removexattr(&mut self, _req: &Request<'_>, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        if name == nuage::vfs::XATTR_LINK {
            let vfs = self.vfs.clone();
            self.rt.spawn(async move {
                match vfs.remove_public_links(Ino(ino)).await {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(fail("removexattr", &e)),
                }
            });
            return;
        }
        match self.vfs.xattr_remove(Ino(ino), &name.to_string_lossy()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail("removexattr", &e)),
        }
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let vfs = self.vfs.clone();
        self.rt.spawn(async move {
            match vfs.opendir(Ino(ino)).await {
                Ok(fh) => reply.opened(fh.0, 0),
                Err(e) => reply.error(fail("opendir", &e)),
            }
        });
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let (parent, entries) = match self.vfs.readdir_handle(Fh(fh)) {
            Ok(x) => x,
            Err(e) => return reply.error(fail("readdir", &e)),
        };
        let dots = [
            (ino, FileType::Directory, "."),
            (parent.0, FileType::Directory, ".."),
        ];
        let all = dots.into_iter().chain(entries.iter().map(|e| {
            let t = match e.kind {
                FileKind::Dir => FileType::Directory,
                FileKind::File => FileType::RegularFile,
            };
            (e.ino.0, t, e.name.as_str())
        }));
        for (i, (ino, kind, name)) in all.enumerate().skip(offset.max(0) as usize) {
            if reply.add(ino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let (_parent, entries) = match self.vfs.readdir_handle(Fh(fh)) {
            Ok(x) => x,
            Err(e) => return reply.error(fail("readdirplus", &e)),
        };
        // The kernel makes no dentries for "." and "..": their attributes are not used.
        let dot = entries
            .first()
            .map(|e| file_attr(&e.attr))
            .unwrap_or_else(|| {
                let mut a = file_attr(&Attr {
                    ino: Ino(ino),
                    kind: FileKind::Dir,
                    size: 0,
                    mtime: std::time::UNIX_EPOCH,
                    perm: 0o555,
                    uid: 0,
                    gid: 0,
                });
                a.ino = ino;
                a
            });
        let start = offset.max(0) as usize;
        for i in start..entries.len() + 2 {
            let full = match i {
                0 => reply.add(ino, 1, ".", &self.ttl, &dot, 0),
                1 => reply.add(ino, 2, "..", &self.ttl, &dot, 0),
                _ => {
                    let e = &entries[i - 2];
                    reply.add(
                        e.ino.0,
                        (i + 1) as i64,
                        &e.name,
                        &self.ttl,
                        &file_attr(&e.attr),
                        0,
                    )
                }
            };
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        self.vfs.releasedir(Fh(fh));
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let vfs = self.vfs.clone();
        self.rt.spawn(async move {
            match vfs.statfs().await {
                Ok(s) => {
                    let bs = s.bsize as u64;
                    reply.statfs(
                        s.total / bs,
                        s.free / bs,
                        s.free / bs,
                        0,
                        0,
                        s.bsize,
                        s.name_max,
                        s.bsize,
                    )
                }
                Err(e) => reply.error(fail("statfs", &e)),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nuage_mounts_are_taken_for_dead_ones() {
        let info = "36 25 0:45 / /tmp/a\\040b rw,nosuid,nodev shared:1 - fuse.nuage nuage:x rw,user_id=0\n\
                    37 25 0:46 / /tmp/other rw shared:2 - fuse.sshfs host:/ rw,user_id=0\n\
                    38 25 0:47 / /tmp/root rw - fuse nuage:127.0.0.1 rw,user_id=0\n\
                    39 25 0:48 / /tmp/sshfs rw - fuse host:/ rw,user_id=0\n";
        assert!(nuage_mount_at(info, Path::new("/tmp/a b")));
        assert!(nuage_mount_at(info, Path::new("/tmp/root")));
        assert!(!nuage_mount_at(info, Path::new("/tmp/other")));
        assert!(!nuage_mount_at(info, Path::new("/tmp/sshfs")));
        assert!(!nuage_mount_at(info, Path::new("/tmp/a")));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
