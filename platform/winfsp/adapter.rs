//! The WinFsp adapter: Windows file system calls translated into calls of the core's path
//! face ([`PathFs`]), which decides everything Windows asks differently (letter case, opening
//! for writing, deleting on close) and is tested on Linux. What remains here is translation:
//! UTF-16 names, `FileInfo` records, NTSTATUS codes, the volume and its dispatcher.
//!
//! Type-checked on Linux by `scripts/check-windows.sh` (WinFsp's own pre-generated bindings);
//! not run here: these machines have no Windows.

use super::info::{self, FILE_DIRECTORY_FILE};
use super::ntstatus::{
    ntstatus, STATUS_BUFFER_OVERFLOW, STATUS_END_OF_FILE, STATUS_OBJECT_NAME_INVALID,
};
use nuage::cli::{MountTarget, MountedFs, Platform, PlatformMountOptions};
use nuage::vfs::paths::{Handle, PathFs, WriteAt};
use nuage::vfs::{Attr, Ino, Vfs};
use std::ffi::c_void;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use winfsp::filesystem::{
    DirBuffer, DirInfo, DirMarker, FileInfo, FileSecurity, FileSystemContext, OpenFileInfo,
    VolumeInfo, WideNameInfo,
};
use winfsp::host::{FileSystemHost, VolumeParams};
use winfsp::{FspError, U16CStr};

/// FspCleanupDelete: the cleanup completes a deletion.
const CLEANUP_DELETE: u32 = 0x1;
/// Full access for SYSTEM, administrators and everyone: who may do what is the server's
/// decision (`oc:permissions`), not Windows'.
const SDDL: &str = "O:BAG:BAD:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;WD)";

/// The Windows adapter.
pub struct WinFspPlatform;

/// One open file or folder, as WinFsp holds it.
pub struct FileContext {
    handle: Handle,
    dir_buffer: DirBuffer,
}

struct NuageWinFs {
    fs: PathFs,
    /// The one security descriptor every file has (self-relative).
    security: Vec<u8>,
}

fn failed(op: &str, e: &nuage::Error) -> FspError {
    e.log(op);
    FspError::NTSTATUS(ntstatus(e.kind))
}

impl FileContext {
    fn new(handle: Handle) -> Self {
        FileContext {
            handle,
            dir_buffer: DirBuffer::new(),
        }
    }
}

fn path_of(name: &U16CStr) -> winfsp::Result<String> {
    name.to_string()
        .map_err(|_| FspError::NTSTATUS(STATUS_OBJECT_NAME_INVALID))
}

fn fill(out: &mut FileInfo, a: &Attr) {
    let t = info::filetime(a.mtime);
    out.file_attributes = info::attributes(a);
    out.reparse_tag = 0;
    out.file_size = a.size;
    out.allocation_size = info::allocation(a.size);
    out.creation_time = t;
    out.last_access_time = t;
    out.last_write_time = t;
    out.change_time = t;
    out.index_number = a.ino.0;
    out.hard_links = 0;
    out.ea_size = 0;
}

/// The self-relative security descriptor of [`SDDL`].
fn security_descriptor() -> anyhow::Result<Vec<u8>> {
    use windows::core::HSTRING;
    use windows::Win32::Foundation::{LocalFree, HLOCAL};
    use windows::Win32::Security::Authorization::{
        ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
    };
    use windows::Win32::Security::PSECURITY_DESCRIPTOR;
    let mut psd = PSECURITY_DESCRIPTOR::default();
    let mut len: u32 = 0;
    // SAFETY: the string is a valid NUL-terminated UTF-16 string for the call's duration;
    // psd and len are valid out-pointers.
    unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            &HSTRING::from(SDDL),
            SDDL_REVISION_1,
            &mut psd,
            Some(&mut len),
        )
    }
    .map_err(|e| anyhow::anyhow!("cannot build the security descriptor: {e}"))?;
    // SAFETY: on success psd points to `len` bytes allocated by the call, freed just after.
    let bytes = unsafe { std::slice::from_raw_parts(psd.0 as *const u8, len as usize) }.to_vec();
    // SAFETY: psd was allocated with LocalAlloc by the call above and is not used after.
    unsafe {
        let _ = LocalFree(Some(HLOCAL(psd.0)));
    }
    Ok(bytes)
}

impl NuageWinFs {
    fn copy_security(&self, out: Option<&mut [c_void]>) -> winfsp::Result<u64> {
        if let Some(buf) = out {
            if buf.len() < self.security.len() {
                return Err(FspError::NTSTATUS(STATUS_BUFFER_OVERFLOW));
            }
            // SAFETY: `buf` holds at least `security.len()` bytes (checked above) and does not
            // overlap our own vector.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.security.as_ptr(),
                    buf.as_mut_ptr().cast::<u8>(),
                    self.security.len(),
                );
            }
        }
        Ok(self.security.len() as u64)
    }

    fn refill(&self, ctx: &FileContext, out: &mut FileInfo) -> winfsp::Result<()> {
        let a = self
            .fs
            .attr(&ctx.handle)
            .map_err(|e| failed("getattr", &e))?;
        fill(out, &a);
        Ok(())
    }
}

impl FileSystemContext for NuageWinFs {
    type FileContext = FileContext;

    fn get_security_by_name(
        &self,
        file_name: &U16CStr,
        security_descriptor: Option<&mut [c_void]>,
        _reparse_point_resolver: impl FnOnce(&U16CStr) -> Option<FileSecurity>,
    ) -> winfsp::Result<FileSecurity> {
        let a = self
            .fs
            .stat(&path_of(file_name)?)
            .map_err(|e| failed("lookup", &e))?;
        let size = self.copy_security(security_descriptor)?;
        Ok(FileSecurity {
            reparse: false,
            sz_security_descriptor: size,
            attributes: info::attributes(&a),
        })
    }

    fn open(
        &self,
        file_name: &U16CStr,
        _create_options: u32,
        _granted_access: u32,
        file_info: &mut OpenFileInfo,
    ) -> winfsp::Result<FileContext> {
        let (handle, a) = self
            .fs
            .open(&path_of(file_name)?)
            .map_err(|e| failed("open", &e))?;
        fill(file_info.as_mut(), &a);
        Ok(FileContext::new(handle))
    }

    fn close(&self, context: FileContext) {
        if let Err(e) = self.fs.close(&context.handle) {
            e.log("close");
        }
    }

    fn create(
        &self,
        file_name: &U16CStr,
        create_options: u32,
        _granted_access: u32,
        _file_attributes: u32,
        _security_descriptor: Option<&[c_void]>,
        _allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        _extra_buffer_is_reparse_point: bool,
        file_info: &mut OpenFileInfo,
    ) -> winfsp::Result<FileContext> {
        let dir = create_options & FILE_DIRECTORY_FILE != 0;
        let (handle, a) = self
            .fs
            .create(&path_of(file_name)?, dir)
            .map_err(|e| failed("create", &e))?;
        fill(file_info.as_mut(), &a);
        Ok(FileContext::new(handle))
    }

    fn cleanup(&self, context: &FileContext, _file_name: Option<&U16CStr>, flags: u32) {
        if flags & CLEANUP_DELETE != 0 {
            if let Err(e) = self.fs.delete(&context.handle) {
                e.log("delete");
            }
        }
    }

    fn flush(&self, context: Option<&FileContext>, file_info: &mut FileInfo) -> winfsp::Result<()> {
        let Some(ctx) = context else {
            return Ok(());
        };
        self.fs
            .flush(&ctx.handle)
            .map_err(|e| failed("flush", &e))?;
        self.refill(ctx, file_info)
    }

    fn get_file_info(&self, context: &FileContext, file_info: &mut FileInfo) -> winfsp::Result<()> {
        self.refill(context, file_info)
    }

    fn get_security(
        &self,
        _context: &FileContext,
        security_descriptor: Option<&mut [c_void]>,
    ) -> winfsp::Result<u64> {
        self.copy_security(security_descriptor)
    }

    fn overwrite(
        &self,
        context: &FileContext,
        _file_attributes: u32,
        _replace_file_attributes: bool,
        _allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        file_info: &mut FileInfo,
    ) -> winfsp::Result<()> {
        let a = self
            .fs
            .set_size(&context.handle, 0)
            .map_err(|e| failed("overwrite", &e))?;
        fill(file_info, &a);
        Ok(())
    }

    fn read_directory(
        &self,
        context: &FileContext,
        _pattern: Option<&U16CStr>,
        marker: DirMarker,
        buffer: &mut [u8],
    ) -> winfsp::Result<u32> {
        // The listing is taken when a listing starts (no marker) and paged from the buffer.
        if let Ok(lock) = context.dir_buffer.acquire(marker.is_none(), None) {
            let entries = self
                .fs
                .list(&context.handle)
                .map_err(|e| failed("readdir", &e))?;
            let here = self
                .fs
                .attr(&context.handle)
                .map_err(|e| failed("readdir", &e))?;
            let mut dots = Vec::new();
            if context.handle.ino != Ino::ROOT {
                dots.push((".".to_string(), here));
                dots.push(("..".to_string(), here));
            }
            let all = dots
                .into_iter()
                .chain(entries.into_iter().map(|e| (e.name, e.attr)));
            for (name, a) in all {
                let mut di: DirInfo = DirInfo::new();
                if di.set_name(&name).is_err() {
                    tracing::debug!(name, "name too long for Windows, not listed");
                    continue;
                }
                fill(di.file_info_mut(), &a);
                lock.write(&mut di)?;
            }
        }
        Ok(context.dir_buffer.read(marker, buffer))
    }

    fn rename(
        &self,
        context: &FileContext,
        _file_name: &U16CStr,
        new_file_name: &U16CStr,
        replace_if_exists: bool,
    ) -> winfsp::Result<()> {
        self.fs
            .rename(&context.handle, &path_of(new_file_name)?, replace_if_exists)
            .map_err(|e| failed("rename", &e))
    }

    fn set_basic_info(
        &self,
        context: &FileContext,
        _file_attributes: u32,
        _creation_time: u64,
        _last_access_time: u64,
        last_write_time: u64,
        _last_change_time: u64,
        file_info: &mut FileInfo,
    ) -> winfsp::Result<()> {
        if let Some(t) = info::system_time(last_write_time) {
            self.fs
                .set_mtime(&context.handle, t)
                .map_err(|e| failed("setattr", &e))?;
        }
        self.refill(context, file_info)
    }

    fn set_delete(
        &self,
        context: &FileContext,
        _file_name: &U16CStr,
        delete_file: bool,
    ) -> winfsp::Result<()> {
        if delete_file {
            self.fs
                .can_delete(&context.handle)
                .map_err(|e| failed("delete", &e))?;
        }
        Ok(())
    }

    fn set_file_size(
        &self,
        context: &FileContext,
        new_size: u64,
        set_allocation_size: bool,
        file_info: &mut FileInfo,
    ) -> winfsp::Result<()> {
        let a = if set_allocation_size {
            self.fs.set_allocation(&context.handle, new_size)
        } else {
            self.fs.set_size(&context.handle, new_size)
        }
        .map_err(|e| failed("truncate", &e))?;
        fill(file_info, &a);
        Ok(())
    }

    fn read(&self, context: &FileContext, buffer: &mut [u8], offset: u64) -> winfsp::Result<u32> {
        let want = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
        let data = self
            .fs
            .read(&context.handle, offset, want)
            .map_err(|e| failed("read", &e))?;
        if data.is_empty() && want > 0 {
            return Err(FspError::NTSTATUS(STATUS_END_OF_FILE));
        }
        buffer[..data.len()].copy_from_slice(&data);
        Ok(data.len() as u32)
    }

    fn write(
        &self,
        context: &FileContext,
        buffer: &[u8],
        offset: u64,
        write_to_eof: bool,
        constrained_io: bool,
        file_info: &mut FileInfo,
    ) -> winfsp::Result<u32> {
        let at = match (write_to_eof, constrained_io) {
            (true, _) => WriteAt::End,
            (false, true) => WriteAt::Within(offset),
            (false, false) => WriteAt::Offset(offset),
        };
        let n = self
            .fs
            .write(&context.handle, at, buffer)
            .map_err(|e| failed("write", &e))?;
        self.refill(context, file_info)?;
        Ok(n)
    }

    fn get_volume_info(&self, out_volume_info: &mut VolumeInfo) -> winfsp::Result<()> {
        let s = self.fs.statfs().map_err(|e| failed("statfs", &e))?;
        out_volume_info.total_size = s.total;
        out_volume_info.free_size = s.free;
        out_volume_info.set_volume_label("nuage");
        Ok(())
    }
}

/// A live WinFsp mount: its host lives on a thread of its own (WinFsp's host is not `Send`),
/// which unmounts and stops the dispatcher when told to.
struct WinMount {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    alive: Arc<AtomicBool>,
}

impl MountedFs for WinMount {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn unmount(mut self: Box<Self>) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Platform for WinFspPlatform {
    fn mounts_on(&self) -> MountTarget {
        MountTarget::DriveOrNewFolder
    }

    fn unmounts_from_outside(&self) -> bool {
        false
    }

    fn mount(
        &self,
        vfs: Arc<Vfs>,
        rt: tokio::runtime::Handle,
        mountpoint: &Path,
        opts: &PlatformMountOptions,
    ) -> anyhow::Result<Box<dyn MountedFs>> {
        winfsp::winfsp_init().map_err(|_| {
            anyhow::anyhow!("WinFsp is not installed; install it from https://winfsp.dev/rel/")
        })?;
        let ttl_ms = u32::try_from(vfs.config().attr_ttl.as_millis()).unwrap_or(u32::MAX);
        let mut params = VolumeParams::new();
        params
            .filesystem_name("nuage")
            .sector_size(4096)
            .sectors_per_allocation_unit(1)
            .max_component_length(255)
            .case_sensitive_search(true)
            .case_preserved_names(true)
            .unicode_on_disk(true)
            .persistent_acls(false)
            .post_cleanup_when_modified_only(true)
            .file_info_timeout(ttl_ms)
            .read_only_volume(opts.read_only);
        let context = NuageWinFs {
            fs: PathFs::new(vfs, rt),
            security: security_descriptor()?,
        };
        let target = mountpoint.as_os_str().to_os_string();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let alive = Arc::new(AtomicBool::new(false));
        let alive2 = alive.clone();
        let thread = std::thread::Builder::new()
            .name("nuage-winfsp".into())
            .spawn(move || {
                let started = FileSystemHost::new(params, context)
                    .map_err(|e| anyhow::anyhow!("cannot create the WinFsp volume: {e:?}"))
                    .and_then(|mut host| {
                        host.mount(&target).map_err(|e| {
                            anyhow::anyhow!("cannot mount on {}: {e:?}", target.to_string_lossy())
                        })?;
                        if let Err(e) = host.start() {
                            host.unmount();
                            anyhow::bail!("cannot start the WinFsp dispatcher: {e:?}");
                        }
                        Ok(host)
                    });
                match started {
                    Ok(mut host) => {
                        alive2.store(true, Ordering::SeqCst);
                        let _ = ready_tx.send(Ok(()));
                        let _ = stop_rx.recv();
                        host.stop();
                        host.unmount();
                        alive2.store(false, Ordering::SeqCst);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Box::new(WinMount {
                stop: stop_tx,
                thread: Some(thread),
                alive,
            })),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the WinFsp thread ended before mounting")
            }
        }
    }

    fn unmount(&self, mountpoint: &Path) -> anyhow::Result<()> {
        // Not called: `unmounts_from_outside` is false, `nuage unmount` asks the process.
        anyhow::bail!(
            "a WinFsp mount ends with the nuage process that serves it (mount point {})",
            mountpoint.display()
        )
    }

    fn is_mounted(&self, mountpoint: &Path) -> bool {
        let s = mountpoint.to_string_lossy();
        if s.len() == 2 && s.ends_with(':') {
            return Path::new(&format!("{s}\\")).exists();
        }
        mountpoint.exists()
    }
}
