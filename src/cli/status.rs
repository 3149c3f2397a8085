//! `nuage status` and `nuage unmount`.

use super::{
    ActivityArgs, PinArgs, Platform, ShareArgs, StatusArgs, TrashArgs, UnmountArgs, VersionsArgs,
};
use crate::status::{human, read_json, registry_path, Registration, Status};
use anyhow::{anyhow, Context};
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn find(mountpoint: &Path) -> anyhow::Result<(PathBuf, Registration)> {
    let mp = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let base = super::mount::cache_base()?;
    // Mounts register the path they were given as checked: resolved (an existing folder), or
    // as WinFsp takes it (a drive letter, a new folder made absolute).
    let mut keys = vec![mp.clone()];
    if let Some(drive) = super::mount::drive_letter(mountpoint) {
        keys.push(drive);
    } else if let Ok(abs) = std::path::absolute(mountpoint) {
        keys.push(abs);
    }
    for key in keys {
        if let Ok(reg) = read_json::<Registration>(&registry_path(&base, &key)) {
            return Ok((key, reg));
        }
    }
    Err(anyhow!("no nuage mount is registered at {}", mp.display()))
}

fn snapshot(reg: &Registration) -> anyhow::Result<Status> {
    read_json(&reg.cache_dir.join("status.json")).with_context(|| {
        format!(
            "cannot read the status of the mount in {}",
            reg.cache_dir.display()
        )
    })
}

/// The mount's status as of now: the daemon writes a snapshot twice a second, so wait (up to
/// 2 s) for one taken after this command started, and a change made just before it (a file
/// saved) is in it. A snapshot of a daemon that is gone is shown as it is.
fn current_snapshot(reg: &Registration) -> anyhow::Result<Status> {
    let (since, deadline) = snapshot_wait();
    snapshot_after(reg, since, deadline)
}

/// Now (Unix milliseconds), and how long to wait for snapshots taken after it.
fn snapshot_wait() -> (u64, Instant) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    (since, Instant::now() + Duration::from_secs(2))
}

/// The mount's first snapshot taken after `since`, or its latest at `deadline` (or once its
/// daemon is gone).
fn snapshot_after(reg: &Registration, since: u64, deadline: Instant) -> anyhow::Result<Status> {
    loop {
        let st = snapshot(reg)?;
        if st.updated_ms > since || !pid_alive(st.pid) || Instant::now() >= deadline {
            return Ok(st);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// True while the process runs (a zombie waiting for its parent counts as ended).
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .map(|state| state != "Z" && state != "X")
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Where an Activity feed path (relative to the account's root) is in the mount, when it is
/// inside the mounted folder.
fn local_path(mp: &Path, root_in_account: &str, object_name: &str) -> Option<PathBuf> {
    let root = root_in_account.trim_matches('/');
    let rest = if root.is_empty() {
        object_name
    } else {
        let r = object_name.strip_prefix('/')?.strip_prefix(root)?;
        if !(r.is_empty() || r.starts_with('/')) {
            return None;
        }
        r
    };
    let rest = rest.trim_start_matches('/');
    Some(if rest.is_empty() {
        mp.to_path_buf()
    } else {
        mp.join(rest)
    })
}

/// `2026-11-29T14:05:07+00:00` -> `2026-11-29 14:05`.
fn short_time(iso: &str) -> String {
    iso.get(..16).unwrap_or(iso).replacen('T', " ", 1)
}

/// `nuage activity`: the latest activities of the account, as the mount last read them.
pub(super) fn activity_command(a: ActivityArgs) -> anyhow::Result<ExitCode> {
    let (mp, reg) = find(&a.mountpoint)?;
    let st = snapshot(&reg).ok();
    let root = st.as_ref().and_then(|s| s.root_in_account.clone());
    let db_path = reg.cache_dir.join("meta.sqlite");
    let read = |limit: u32| {
        rusqlite::Connection::open_with_flags(
            &db_path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|db| crate::meta::store::read_activities(&db, limit))
        .unwrap_or_default()
    };
    let place = |items: Vec<serde_json::Value>| -> Vec<(serde_json::Value, Option<PathBuf>)> {
        items
            .into_iter()
            .map(|v| {
                let local = match (&root, v.get("object_name").and_then(|o| o.as_str())) {
                    (Some(r), Some(o)) if !o.is_empty() => local_path(&mp, r, o),
                    _ => None,
                };
                (v, local)
            })
            .collect()
    };
    let with_local = place(read(a.limit));
    if a.json {
        let out: Vec<serde_json::Value> = with_local
            .into_iter()
            .map(|(mut v, local)| {
                if let Some(obj) = v.as_object_mut() {
                    obj.insert(
                        "local_path".into(),
                        local.map_or(serde_json::Value::Null, |p| {
                            serde_json::Value::String(p.to_string_lossy().into_owned())
                        }),
                    );
                }
                v
            })
            .collect();
        println!("{}", serde_json::Value::Array(out));
        return Ok(ExitCode::SUCCESS);
    }
    if with_local.is_empty() && !a.follow {
        println!(
            "{}",
            if root.is_some() {
                "no activity seen yet (the feed is read while the mount is online; the server may also have its Activity app turned off)"
            } else {
                "no activity feed: the server of this mount is not a Nextcloud"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let id = |v: &serde_json::Value| v.get("activity_id").and_then(|i| i.as_i64()).unwrap_or(0);
    let mut last = with_local.iter().map(|(v, _)| id(v)).max().unwrap_or(0);
    print_activities(with_local);
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Until the mount ends (its registry entry goes) or the reader is interrupted.
    while find(&a.mountpoint).is_ok_and(|(_, r)| r.pid == reg.pid) {
        std::thread::sleep(Duration::from_millis(500));
        let new: Vec<serde_json::Value> = read(crate::meta::store::ACTIVITY_KEPT as u32)
            .into_iter()
            .filter(|v| id(v) > last)
            .collect();
        last = new.iter().map(id).max().unwrap_or(last);
        print_activities(place(new));
        let _ = std::io::stdout().flush();
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per activity: when, the server's sentence, the place in the mount.
fn print_activities(items: Vec<(serde_json::Value, Option<PathBuf>)>) {
    for (v, local) in items {
        let when = short_time(v.get("datetime").and_then(|d| d.as_str()).unwrap_or(""));
        let subject = v.get("subject").and_then(|s| s.as_str()).unwrap_or("");
        match local {
            Some(p) => println!("{when}  {subject}  ({})", p.display()),
            None => println!("{when}  {subject}"),
        }
    }
}

/// The mounts registered in `base`: their mount points and registrations.
fn registered_mounts(base: &Path) -> Vec<(PathBuf, Registration)> {
    let Ok(dir) = std::fs::read_dir(base.join("mounts")) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, Registration)> = dir
        .filter_map(|e| {
            let path = e.ok()?.path();
            let mp = mountpoint_of_registry(&path)?;
            Some((mp, read_json::<Registration>(&path).ok()?))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// The mount point a registry file is named after (see [`registry_path`]).
fn mountpoint_of_registry(file: &Path) -> Option<PathBuf> {
    let hex = file.file_name()?.to_str()?.strip_suffix(".json")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()))
}

/// `nuage status` without a mount point: a line for each running mount, and for each
/// stopped one whose journal still holds changes (they go up at its next mount).
fn all_mounts(json: bool) -> anyhow::Result<ExitCode> {
    let base = super::mount::cache_base()?;
    let mut shown = Vec::new();
    // One wait for all: each running mount writes a snapshot twice a second.
    let (since, deadline) = snapshot_wait();
    for (mp, reg) in registered_mounts(&base) {
        let Ok(st) = snapshot_after(&reg, since, deadline) else {
            continue;
        };
        if st.pid != reg.pid {
            // Its cache folder was mounted again since, elsewhere: that registration shows it.
            continue;
        }
        let running = pid_alive(st.pid);
        let snapshot_waiting = st.pending_uploads
            + st.pending_folders.len()
            + st.pending_deletes.len()
            + st.pending_renames.len()
            + st.pending_folder_deletes.len();
        // A stopped mount's journal is read itself: its last snapshot may be older than
        // the last change (a mount killed right after a save).
        let waiting = if running {
            snapshot_waiting
        } else {
            crate::writeback::journal::Journal::waiting_in(&reg.cache_dir)
                .unwrap_or(snapshot_waiting)
        };
        if running || waiting > 0 {
            shown.push((mp, st, running, waiting));
        }
    }
    if json {
        let list: Vec<serde_json::Value> = shown
            .into_iter()
            .map(|(_, st, running, waiting)| {
                let mut v = serde_json::to_value(&st).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("running".into(), running.into());
                    o.insert("changes_waiting".into(), waiting.into());
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if shown.is_empty() {
        println!("no nuage mount is running");
    }
    let stopped = shown.iter().any(|(_, _, running, _)| !running);
    for (mp, st, running, waiting) in shown {
        let state = if !running {
            "STOPPED".to_string()
        } else if st.auth_error.is_some() {
            "LOGIN REFUSED".to_string()
        } else if st.online {
            "online".to_string()
        } else {
            match st.offline_since {
                Some(t) => format!("OFFLINE for {}", crate::status::ago(t)),
                None => "OFFLINE".to_string(),
            }
        };
        let changes = match waiting {
            0 => "no change waiting".to_string(),
            1 => "1 change waiting".to_string(),
            n => format!("{n} changes waiting"),
        };
        println!(
            "{}: {} ({state}, {changes}, cache {} of {})",
            mp.display(),
            st.url,
            human(st.cache.bytes),
            human(st.cache.limit)
        );
    }
    if stopped {
        println!("the changes of a STOPPED mount go up when it is mounted again (same address and cache folder)");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn status_command(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let Some(mountpoint) = &a.mountpoint else {
        return all_mounts(a.json);
    };
    let (mp, reg) = find(mountpoint)?;
    let st = current_snapshot(&reg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(ExitCode::SUCCESS);
    }
    let alive = pid_alive(st.pid);
    println!(
        "{} on {}{}",
        st.url,
        mp.display(),
        if alive { "" } else { " (process gone)" }
    );
    if let Some(e) = &st.auth_error {
        println!("LOGIN REFUSED: {e}");
    }
    match (st.online, st.offline_since) {
        (true, _) => println!("server: online"),
        (false, Some(t)) => println!(
            "server: OFFLINE since {} ({} ago{}); cached files stay readable, changes wait in the journal",
            crate::status::utc(t),
            crate::status::ago(t),
            st.offline_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        (false, None) => println!("server: OFFLINE"),
    }
    println!(
        "cache: {} of {} ({} blocks)",
        human(st.cache.bytes),
        human(st.cache.limit),
        st.cache.blocks
    );
    if st.cache.pinned_bytes + st.cache.pending_bytes > st.cache.limit {
        println!(
            "note: pinned files ({}) and changes waiting for upload ({}) alone exceed the cache size limit; they are kept anyway",
            human(st.cache.pinned_bytes),
            human(st.cache.pending_bytes)
        );
    }
    for p in &st.pins {
        println!(
            "pinned {}: {} of {} files, {} of {} downloaded{}",
            p.path,
            p.files_cached,
            p.files,
            human(p.bytes_cached),
            human(p.bytes),
            p.error
                .as_ref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        );
    }
    if !st.pending_folders.is_empty() {
        println!(
            "folders made offline, to be made on the server: {}",
            st.pending_folders.join(", ")
        );
    }
    if !st.pending_deletes.is_empty() {
        println!(
            "deleted offline, to be deleted on the server: {}",
            st.pending_deletes.join(", ")
        );
    }
    if !st.pending_folder_deletes.is_empty() {
        println!(
            "folders removed offline, to be removed on the server: {}",
            st.pending_folder_deletes.join(", ")
        );
    }
    for [from, to] in &st.pending_renames {
        println!("renamed offline, to be renamed on the server: {from} -> {to}");
    }
    if st.uploads.is_empty() {
        println!("pending uploads: none");
    } else {
        println!("pending uploads: {}", st.pending_uploads);
        for u in &st.uploads {
            let state = match (&u.last_error, u.uploading) {
                (_, true) => format!("uploading, {} sent", human(u.bytes_sent)),
                (Some(e), false) => format!("{} failed attempt(s): {e}", u.attempts),
                (None, false) => "waiting".to_string(),
            };
            println!("  {} ({}): {state}", u.path, human(u.size));
        }
    }
    if !st.conflicts.is_empty() {
        println!("conflicts (the server copy was kept, ours saved beside it):");
        for c in &st.conflicts {
            println!("  {} -> {}", c.path, c.conflict_path);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn unmount_command(platform: &dyn Platform, a: UnmountArgs) -> anyhow::Result<ExitCode> {
    let found = find(&a.mountpoint).ok();
    if let Some((_, reg)) = &found {
        let end = Instant::now() + Duration::from_secs(a.wait);
        let mut last = usize::MAX;
        while Instant::now() < end && pid_alive(reg.pid) {
            // A snapshot from before this command could miss a file saved just before it.
            match current_snapshot(reg) {
                Ok(s) if s.pending_uploads == 0 => break,
                Ok(s) => {
                    if s.pending_uploads != last {
                        eprintln!("waiting for {} pending upload(s)...", s.pending_uploads);
                        last = s.pending_uploads;
                    }
                }
                Err(_) => break,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if a.ask || !platform.unmounts_from_outside() {
        let Some((key, reg)) = &found else {
            anyhow::bail!("no nuage mount is registered at {}", a.mountpoint.display());
        };
        ask_to_end(key, reg)?;
    } else {
        // Mount tables hold resolved paths.
        if found.is_none() && !platform.is_mounted(&super::mount::resolved(&a.mountpoint)) {
            anyhow::bail!("nothing is mounted on {}", a.mountpoint.display());
        }
        platform.unmount(&a.mountpoint)?;
    }
    if let Some((_, reg)) = found {
        // Let the mount process write its last snapshot and exit (bounded).
        let end = Instant::now() + Duration::from_secs(10);
        while pid_alive(reg.pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(s) = snapshot(&reg) {
            if s.pending_uploads > 0 {
                eprintln!(
                    "{} upload(s) still pending in the journal (in {}); they resume at the next mount:",
                    s.pending_uploads,
                    reg.cache_dir.display()
                );
                for u in s.uploads {
                    eprintln!("  {}", u.path);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the mount process to unmount and end (`UNMOUNT_REQUEST`), and waits (bounded) until
/// it has: its registration is gone (it removes it as it ends; this works where process ids
/// cannot be looked at, on Windows).
fn ask_to_end(key: &Path, reg: &Registration) -> anyhow::Result<()> {
    // Where process ids can be looked at, a process that is gone is said at once.
    let gone = || {
        anyhow!(
            "the mount process ({}) is not running (killed?); its journal is taken over by the next mount",
            reg.pid
        )
    };
    if Path::new("/proc/self").exists() && !pid_alive(reg.pid) {
        return Err(gone());
    }
    let registered = registry_path(&super::mount::cache_base()?, key);
    let request = reg.cache_dir.join(crate::status::UNMOUNT_REQUEST);
    std::fs::write(&request, b"")
        .with_context(|| format!("cannot ask the mount to end ({})", request.display()))?;
    let end = Instant::now() + Duration::from_secs(20);
    while registered.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    if registered.exists() {
        let seen = !request.exists();
        let _ = std::fs::remove_file(&request);
        if seen {
            anyhow::bail!(
                "the mount process ({}) did not end within 20 s; its log says why",
                reg.pid
            );
        }
        return Err(gone());
    }
    Ok(())
}

/// Sets an extended attribute: the running mount acts on it (pins, cache cleaning).
#[cfg(unix)]
fn set_xattr(path: &Path, name: &str, value: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path contains a NUL byte"))?;
    let n = std::ffi::CString::new(name).map_err(|_| std::io::Error::other("bad name"))?;
    // SAFETY: both strings are valid NUL-terminated C strings and the value pointer/length
    // describe a live byte slice for the duration of the call.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn set_xattr(_path: &Path, _name: &str, _value: &str) -> std::io::Result<()> {
    Err(std::io::Error::other("not supported on this system yet"))
}

/// Reads an extended attribute (at most 64 KiB), asked of the running mount.
#[cfg(unix)]
fn get_xattr(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path contains a NUL byte"))?;
    let n = std::ffi::CString::new(name).map_err(|_| std::io::Error::other("bad name"))?;
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: valid C strings; the buffer pointer/length describe a live, writable slice.
    let rc = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(rc as usize);
    Ok(buf)
}

/// Removes an extended attribute of a file in a mount.
#[cfg(unix)]
fn remove_xattr(path: &Path, name: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path contains a NUL byte"))?;
    let n = std::ffi::CString::new(name).map_err(|_| std::io::Error::other("bad name"))?;
    // SAFETY: both are valid NUL-terminated C strings.
    let rc = unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn get_xattr(_path: &Path, _name: &str) -> std::io::Result<Vec<u8>> {
    Err(std::io::Error::other("not supported on this system yet"))
}

#[cfg(not(unix))]
fn remove_xattr(_path: &Path, _name: &str) -> std::io::Result<()> {
    Err(std::io::Error::other("not supported on this system yet"))
}

/// What a Nextcloud service command says of a failure (the error the mount answered).
struct Sentences {
    /// What the service needs: "public links", "the trash bin", "versions".
    service: &'static str,
    /// For `ENOENT`.
    not_found: &'static str,
    /// For `EACCES`.
    refused: &'static str,
    /// For `EINVAL`.
    invalid: &'static str,
}

/// One readable line for a failed request to a Nextcloud service through the mount.
fn service_failure(s: &Sentences, what: &str, path: &Path, e: &std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind as K;
    let why = match e.kind() {
        K::Unsupported => format!("{} need a nuage mount of a Nextcloud server", s.service),
        K::PermissionDenied => s.refused.into(),
        K::NotFound => s.not_found.into(),
        K::NetworkUnreachable | K::TimedOut => "the server cannot be reached".into(),
        K::InvalidInput => s.invalid.into(),
        K::IsADirectory => "it is a folder: the server keeps versions of files".into(),
        _ => e.to_string(),
    };
    anyhow!("cannot {what} {}: {why}", path.display())
}

const LINKS: Sentences = Sentences {
    service: "public links",
    not_found: "not found on the server (or its upload is still waiting)",
    refused: "the server refused it (it may require a password (--password) or an expiry \
        date (--expire YYYY-MM-DD), or not allow public links; the mount's log has its words)",
    invalid: "the server or nuage refused the options (--expire YYYY-MM-DD)",
};

fn link_failure(what: &str, path: &Path, e: &std::io::Error) -> anyhow::Error {
    service_failure(&LINKS, what, path, e)
}

/// Refuses a path that is not in a nuage mount (every item of one answers
/// `user.nuage.status`).
fn in_a_mount(p: &Path) -> anyhow::Result<()> {
    if !p.exists() {
        anyhow::bail!("{} does not exist", p.display());
    }
    if get_xattr(p, crate::vfs::XATTR_STATUS).is_err() {
        anyhow::bail!("{} is not inside a nuage mount", p.display());
    }
    Ok(())
}

const PEOPLE: Sentences = Sentences {
    service: "shares with users",
    not_found: "the server has no such user (give their login), or not this item yet",
    refused: "the server refused it (sharing with yourself, or sharing not allowed; the \
        mount's log has its words)",
    invalid: "nuage refused the request",
};

/// The users `p` is shared with: (login, "edit" or "read").
fn people(p: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let v = get_xattr(p, crate::vfs::XATTR_SHARE)
        .map_err(|e| service_failure(&PEOPLE, "read the shares of", p, &e))?;
    Ok(String::from_utf8_lossy(&v)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(w, m)| (w.to_string(), m.to_string()))
        .collect())
}

/// `nuage share PATH --with LOGIN [--edit | --remove]`.
fn share_with_command(p: &Path, who: &str, edit: bool, remove: bool) -> anyhow::Result<ExitCode> {
    if remove && !people(p)?.iter().any(|(w, _)| w == who) {
        println!("{} is not shared with {who}", p.display());
        return Ok(ExitCode::SUCCESS);
    }
    let value = serde_json::json!({"with": who, "edit": edit, "remove": remove}).to_string();
    let what = if remove { "end the share of" } else { "share" };
    set_xattr(p, crate::vfs::XATTR_SHARE, &value)
        .map_err(|e| service_failure(&PEOPLE, what, p, &e))?;
    if remove {
        println!("{} is no longer shared with {who}", p.display());
    } else {
        let may = if edit { "can edit" } else { "read only" };
        println!("{} is shared with {who} ({may})", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn share_command(a: ShareArgs) -> anyhow::Result<ExitCode> {
    let p = &a.path;
    in_a_mount(p)?;
    if let Some(who) = &a.with {
        return share_with_command(p, who.trim(), a.edit, a.remove);
    }
    let name = crate::vfs::XATTR_LINK;
    let links = || -> anyhow::Result<Vec<String>> {
        match get_xattr(p, name) {
            Ok(v) => Ok(String::from_utf8_lossy(&v)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()),
            Err(e) => Err(link_failure("read the links of", p, &e)),
        }
    };
    let existing = links()?;
    if a.remove {
        if existing.is_empty() {
            println!("{} has no public link", p.display());
        } else {
            remove_xattr(p, name).map_err(|e| link_failure("remove the links of", p, &e))?;
            println!("removed the public links of {}", p.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.list {
        if existing.is_empty() {
            println!("{} has no public link", p.display());
        }
        for l in existing {
            println!("{l}");
        }
        for (who, may) in people(p)? {
            let may = if may == "edit" {
                "can edit"
            } else {
                "read only"
            };
            println!("shared with {who} ({may})");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A plain `nuage share` gives the link there already is rather than one more.
    if !a.password && a.expire.is_none() {
        if let Some(l) = existing.first() {
            println!("{l}");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let mut req = serde_json::Map::new();
    if a.password {
        let pw = if std::io::stdin().is_terminal() {
            rpassword::prompt_password("Password for the link: ")
                .context("cannot read the password")?
        } else {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read standard input")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        };
        if pw.is_empty() {
            anyhow::bail!("no password given for the link");
        }
        req.insert("password".into(), pw.into());
    }
    if let Some(e) = &a.expire {
        req.insert("expire".into(), e.clone().into());
    }
    let value = if req.is_empty() {
        String::new()
    } else {
        serde_json::Value::Object(req).to_string()
    };
    set_xattr(p, name, &value).map_err(|e| link_failure("create a link to", p, &e))?;
    let after = links()?;
    match after
        .iter()
        .find(|l| !existing.contains(l))
        .or(after.last())
    {
        Some(l) => println!("{l}"),
        None => {
            anyhow::bail!("the server made the link but does not list it; see the web interface")
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn trash_command(a: TrashArgs) -> anyhow::Result<ExitCode> {
    use crate::webdav::nextcloud::TrashItem;
    let (mp, _reg) = find(&a.mountpoint)?;
    let raw = get_xattr(&mp, crate::vfs::XATTR_TRASH)
        .map_err(|e| service_failure(&TRASH, "read the trash bin of", &mp, &e))?;
    let items: Vec<TrashItem> = serde_json::from_slice(&raw)
        .map_err(|e| anyhow!("the mount answered an unreadable trash listing: {e}"))?;
    if let Some(want) = &a.restore {
        // A path given inside the mount (absolute or relative to here) or relative to it.
        let rel = std::path::absolute(want)
            .ok()
            .and_then(|abs| abs.strip_prefix(&mp).ok().map(Path::to_path_buf))
            .unwrap_or_else(|| want.clone());
        let rel = rel.to_string_lossy().trim_matches('/').to_string();
        let Some(item) = items
            .iter()
            .find(|i| i.location == rel)
            .or_else(|| items.iter().find(|i| i.entry == rel))
        else {
            anyhow::bail!(
                "nothing deleted from {} is in the trash bin under {rel:?} (see: nuage trash {})",
                mp.display(),
                mp.display()
            );
        };
        set_xattr(&mp, crate::vfs::XATTR_RESTORE, &item.entry)
            .map_err(|e| service_failure(&TRASH, "restore", Path::new(&item.location), &e))?;
        println!("restored {}", mp.join(&item.location).display());
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(ExitCode::SUCCESS);
    }
    if items.is_empty() {
        println!("the trash bin holds nothing deleted from {}", mp.display());
    }
    for i in &items {
        let what = if i.dir {
            format!("{}/", i.location)
        } else {
            format!("{} ({})", i.location, human(i.size))
        };
        println!("{}  {what}", crate::status::utc_minute(i.deleted));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn versions_command(a: VersionsArgs) -> anyhow::Result<ExitCode> {
    use crate::webdav::nextcloud::FileVersion;
    let p = &a.path;
    in_a_mount(p)?;
    let fail = |what: &str, e: &std::io::Error| service_failure(&VERSIONS, what, p, e);
    let raw =
        get_xattr(p, crate::vfs::XATTR_VERSIONS).map_err(|e| fail("list the versions of", &e))?;
    let versions: Vec<FileVersion> = serde_json::from_slice(&raw)
        .map_err(|e| anyhow!("the mount answered an unreadable list of versions: {e}"))?;
    if let Some(want) = &a.restore {
        let v = match want.parse::<usize>() {
            Ok(n)
                if n >= 1 && n <= versions.len() && !versions.iter().any(|v| &v.entry == want) =>
            {
                &versions[n - 1]
            }
            _ => versions.iter().find(|v| &v.entry == want).ok_or_else(|| {
                anyhow!(
                    "{} has no version {want} (see: nuage versions {})",
                    p.display(),
                    p.display()
                )
            })?,
        };
        set_xattr(p, crate::vfs::XATTR_RESTORE_VERSION, &v.entry)
            .map_err(|e| fail("restore a version of", &e))?;
        println!(
            "{} is back to its version of {} UTC",
            p.display(),
            crate::status::utc_minute(v.modified)
        );
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(ExitCode::SUCCESS);
    }
    if versions.is_empty() {
        println!("the server keeps no earlier version of {}", p.display());
    }
    for (i, v) in versions.iter().enumerate() {
        let mut line = format!(
            "{:>3}  {} UTC  {:>10}",
            i + 1,
            crate::status::utc_minute(v.modified),
            human(v.size)
        );
        if let Some(l) = &v.label {
            line.push_str(&format!("  \"{l}\""));
        }
        if let Some(a) = &v.author {
            line.push_str(&format!("  by {a}"));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

const TRASH: Sentences = Sentences {
    service: "the trash bin and versions",
    not_found: "the server has no such item in its trash bin (or no trash bin)",
    refused: "the server refused it",
    invalid: "the mount refused the item's name",
};

const VERSIONS: Sentences = Sentences {
    service: "versions",
    not_found: "not on the server yet, or no such version",
    refused: "the server refused it",
    invalid: "the mount refused the version's name",
};

pub(super) fn pin_command(a: PinArgs, pin: bool) -> anyhow::Result<ExitCode> {
    let value = if pin { "1" } else { "0" };
    for p in &a.paths {
        if !p.exists() {
            anyhow::bail!("{} does not exist", p.display());
        }
        set_xattr(p, crate::vfs::XATTR_PINNED, value).map_err(|e| {
            anyhow!(
                "cannot {} {}: {e} (is it inside a nuage mount?)",
                if pin { "pin" } else { "unpin" },
                p.display()
            )
        })?;
        println!(
            "{} {}",
            if pin { "pinned" } else { "unpinned" },
            p.display()
        );
    }
    if pin {
        println!("downloading in the background; progress: nuage status <mount point>");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn cache_clean_command(mountpoint: &Path) -> anyhow::Result<ExitCode> {
    let (mp, reg) = find(mountpoint)?;
    let before = snapshot(&reg).map(|s| s.cache.bytes).unwrap_or(0);
    set_xattr(&mp, crate::vfs::XATTR_CLEAN, "1")
        .map_err(|e| anyhow!("cannot clean the cache of {}: {e}", mp.display()))?;
    // The next snapshot tells what remains.
    std::thread::sleep(Duration::from_millis(700));
    let after = snapshot(&reg).map(|s| s.cache.bytes).unwrap_or(0);
    println!(
        "cache of {}: {} freed, {} kept (pinned files and blocks in use)",
        mp.display(),
        human(before.saturating_sub(after)),
        human(after)
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{local_path, mountpoint_of_registry, short_time};
    use std::path::Path;

    #[test]
    fn registry_files_name_their_mount_point() {
        for mp in ["/home/prof/Nextcloud", "/mnt/Été 2026", "Z:"] {
            let file = crate::status::registry_path(Path::new("/base"), Path::new(mp));
            assert_eq!(
                mountpoint_of_registry(&file).as_deref(),
                Some(Path::new(mp))
            );
        }
        assert_eq!(
            mountpoint_of_registry(Path::new("/base/mounts/abc.json")),
            None
        );
        assert_eq!(
            mountpoint_of_registry(Path::new("/base/mounts/zz.json")),
            None
        );
        assert_eq!(
            mountpoint_of_registry(Path::new("/base/mounts/2f.tmp")),
            None
        );
    }

    #[test]
    fn activity_paths_map_into_the_mounted_folder_only() {
        let mp = Path::new("/home/prof/cloud");
        assert_eq!(
            local_path(mp, "", "/Cours/plan.odt").as_deref(),
            Some(Path::new("/home/prof/cloud/Cours/plan.odt"))
        );
        // A mount of the account's "Cours" folder.
        assert_eq!(
            local_path(mp, "Cours", "/Cours/plan.odt").as_deref(),
            Some(Path::new("/home/prof/cloud/plan.odt"))
        );
        assert_eq!(local_path(mp, "Cours", "/Cours").as_deref(), Some(mp));
        assert_eq!(local_path(mp, "Cours", "/Cours 2/plan.odt"), None);
        assert_eq!(local_path(mp, "Cours", "/Photos/a.jpg"), None);
        assert_eq!(short_time("2026-11-29T14:05:07+00:00"), "2026-11-29 14:05");
        assert_eq!(short_time(""), "");
    }
}
