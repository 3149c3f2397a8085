//! What a running mount tells `nuage status` and `nuage unmount`.
//!
//! The mount process writes a snapshot (`status.json` in its cache folder) every second and a
//! registry entry (`<cache base>/mounts/<mount point>.json`) pointing from the mount point to
//! that folder. Both are plain files: `nuage status` works without talking to the daemon, and
//! still shows the journal's pending uploads when the daemon is gone.

use crate::writeback::{Conflict, PendingInfo};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Cache usage.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CacheInfo {
    /// Bytes of cached blocks.
    pub bytes: u64,
    /// The limit.
    pub limit: u64,
    /// Number of cached blocks.
    pub blocks: u64,
    /// Bytes of pinned files (never evicted, outside the limit).
    #[serde(default)]
    pub pinned_bytes: u64,
    /// Bytes of changes waiting for upload (never evicted, outside the limit).
    #[serde(default)]
    pub pending_bytes: u64,
}

/// One pending upload as shown (the write-back queue's own description).
pub type UploadInfo = PendingInfo;

/// One recorded conflict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConflictInfo {
    /// The path whose server copy was kept.
    pub path: String,
    /// Where the local copy went.
    pub conflict_path: String,
    /// Unix time.
    pub at: u64,
}

impl From<Conflict> for ConflictInfo {
    fn from(c: Conflict) -> Self {
        ConflictInfo {
            path: c.path,
            conflict_path: c.conflict_path,
            at: c.at,
        }
    }
}

/// The snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Process id of the mount.
    pub pid: u32,
    /// Mount point.
    pub mountpoint: String,
    /// Server URL.
    pub url: String,
    /// Number of pending uploads.
    pub pending_uploads: usize,
    /// Pending uploads.
    pub uploads: Vec<UploadInfo>,
    /// Conflicts, newest first.
    pub conflicts: Vec<ConflictInfo>,
    /// Cache usage.
    pub cache: CacheInfo,
    /// Unix time of the snapshot.
    pub updated: u64,
    /// Unix time of the snapshot in milliseconds.
    pub updated_ms: u64,
    /// Set when the server refused the login (revoked app password): what to do about it.
    #[serde(default)]
    pub auth_error: Option<String>,
    /// False while the server is out of reach.
    #[serde(default = "yes")]
    pub online: bool,
    /// Unix time since which the server is out of reach.
    #[serde(default)]
    pub offline_since: Option<u64>,
    /// What took it out of reach (the error that did).
    #[serde(default)]
    pub offline_reason: Option<String>,
    /// Pinned paths and their download progress.
    #[serde(default)]
    pub pins: Vec<crate::vfs::PinProgress>,
    /// Folders made offline, still to be made on the server.
    #[serde(default)]
    pub pending_folders: Vec<String>,
    /// Files deleted offline, still to be deleted on the server.
    #[serde(default)]
    pub pending_deletes: Vec<String>,
    /// Files renamed offline, still to be renamed on the server: `[old name, new name]`.
    #[serde(default)]
    pub pending_renames: Vec<[String; 2]>,
    /// Folders removed offline, still to be removed on the server.
    #[serde(default)]
    pub pending_folder_deletes: Vec<String>,
    /// Where the mounted folder is in the Nextcloud account (`/` for the whole account;
    /// `None` for a plain WebDAV server): maps the Activity feed's paths to the mount.
    #[serde(default)]
    pub root_in_account: Option<String>,
}

fn yes() -> bool {
    true
}

/// Registry entry of a mount point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// Process id of the mount.
    pub pid: u32,
    /// Its cache folder.
    pub cache_dir: PathBuf,
}

/// A file `nuage unmount --ask` puts in a mount's cache folder: the mount process removes it,
/// unmounts and ends.
pub const UNMOUNT_REQUEST: &str = "unmount.request";

/// Registry file of a mount point under `base`.
pub fn registry_path(base: &Path, mountpoint: &Path) -> PathBuf {
    let key: String = mountpoint
        .to_string_lossy()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    base.join("mounts").join(format!("{key}.json"))
}

/// Writes `v` as JSON atomically (temporary file, then rename), into a folder that exists:
/// a mount's last snapshot, written as it ends, must not make its cache folder again after it
/// was removed.
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec_pretty(v).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Reads a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<T> {
    let data = std::fs::read(path)?;
    serde_json::from_slice(&data).map_err(std::io::Error::other)
}

/// Removes the registry entry at `reg_path` if it is still the one of process `pid`: after
/// an unmount a new mount at the same place may have registered already, and its entry stays.
pub fn unregister(reg_path: &Path, pid: u32) {
    let ours = read_json::<Registration>(reg_path)
        .map(|r| r.pid == pid)
        .unwrap_or(false);
    if ours {
        let _ = std::fs::remove_file(reg_path);
    }
}

/// Human-readable sizes.
pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time.
pub fn utc(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = crate::writeback::civil_utc(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// `YYYY-MM-DD HH:MM` of a Unix time, in UTC.
pub fn utc_minute(secs: u64) -> String {
    let (y, m, d, hh, mm, _) = crate::writeback::civil_utc(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

/// How long ago a Unix time was, roughly (`42 s`, `5 min`, `3 h`).
pub fn ago(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(secs);
    let d = now.saturating_sub(secs);
    match d {
        0..=119 => format!("{d} s"),
        120..=7199 => format!("{} min", d / 60),
        _ => format!("{} h", d / 3600),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unregister_leaves_the_entry_of_a_newer_mount() {
        let dir = tempfile::tempdir().expect("tmp");
        let reg = dir.path().join("mounts").join("x.json");
        let entry = |pid| super::Registration {
            pid,
            cache_dir: dir.path().join("cache"),
        };
        // Writing makes no folder: the last snapshot of a mount whose cache folder was
        // removed must not bring it back.
        assert!(super::write_json(&reg, &entry(200)).is_err());
        assert!(!dir.path().join("mounts").exists());
        std::fs::create_dir(dir.path().join("mounts")).expect("mkdir");
        super::write_json(&reg, &entry(200)).expect("write");
        // The daemon that mounted here before (pid 100) ends after the new one registered.
        super::unregister(&reg, 100);
        assert!(reg.exists(), "the new mount's entry must stay");
        super::unregister(&reg, 200);
        assert!(!reg.exists(), "a daemon removes its own entry");
    }

    use super::*;

    #[test]
    fn registry_keys_and_sizes() {
        let a = registry_path(Path::new("/b"), Path::new("/mnt/a b"));
        let b = registry_path(Path::new("/b"), Path::new("/mnt/a_b"));
        assert_ne!(a, b);
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
    }
}
