//! Offline pins, per-file states and the extended attributes that show them.
//!
//! A pinned folder or file is downloaded completely in the background by the hydrator, kept
//! complete when the server changes (the poller wakes the hydrator), and never evicted (its
//! cache versions are pinned in the block cache). Pins are stored in the meta store, so they
//! survive a remount.
//!
//! Extended attributes (answered from memory, never from the server):
//! * `user.nuage.status`: `online-only`, `partial`, `cached`, `pinned`, `pending-upload` or
//!   `conflict`;
//! * `user.nuage.pinned`: `1` or `0`; setting it pins or unpins (what `nuage pin` does);
//! * `user.nuage.clean` (set on any node): frees every cache block that may be freed (what
//!   `nuage cache clean` does).

use super::{lock, Vfs};
use crate::cache::VersionId;
use crate::error::{Error, ErrorKind, Result};
use crate::fetch::FileVersion;
use crate::meta::Ino;
use crate::webdav::RemotePath;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Extended attribute: the file's state.
pub const XATTR_STATUS: &str = "user.nuage.status";
/// Extended attribute: pinned for offline use.
pub const XATTR_PINNED: &str = "user.nuage.pinned";
/// Extended attribute: writing it frees what the cache may free.
pub const XATTR_CLEAN: &str = "user.nuage.clean";

/// Download progress of one pin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinProgress {
    /// The pinned path (below the mount root).
    pub path: String,
    /// Files below it.
    pub files: u64,
    /// Of which completely downloaded.
    pub files_cached: u64,
    /// Bytes below it.
    pub bytes: u64,
    /// Of which downloaded.
    pub bytes_cached: u64,
    /// The last error, when a file could not be downloaded.
    #[serde(default)]
    pub error: Option<String>,
}

impl Vfs {
    /// True when `path` or one of its folders is pinned.
    pub fn is_pinned(&self, path: &RemotePath) -> bool {
        lock(&self.pins).iter().any(|p| path.is_within(p))
    }

    /// Pins or unpins a file or folder.
    pub fn set_pinned(&self, ino: Ino, pinned: bool) -> Result<()> {
        let node = self.node(ino)?;
        let path = node.path;
        self.meta
            .set_pin(&path, pinned, node.entry.fileid)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot record the pin: {e}")))?;
        {
            let mut pins = lock(&self.pins);
            if pinned {
                pins.insert(path.clone());
            } else {
                pins.remove(&path);
            }
        }
        tracing::info!(%path, pinned, "pin changed");
        self.wake_hydrator();
        Ok(())
    }

    /// Pins at or below `from` follow it to `to` (a rename here): what was kept offline stays
    /// kept offline under its new name.
    pub(super) fn move_pins(&self, from: &RemotePath, to: &RemotePath) {
        let moved: Vec<(RemotePath, RemotePath)> = lock(&self.pins)
            .iter()
            .filter(|_| !from.is_root())
            .filter_map(|p| Some((p.clone(), p.rebased(from, to)?)))
            .collect();
        if moved.is_empty() {
            return;
        }
        for (old, new) in moved {
            let fileid = self.meta.pin_fileid(&old);
            let res = self
                .meta
                .set_pin(&old, false, None)
                .and_then(|()| self.meta.set_pin(&new, true, fileid));
            if let Err(e) = res {
                tracing::warn!(from = %old, to = %new, error = %e, "the pin did not follow the rename");
                continue;
            }
            let mut pins = lock(&self.pins);
            pins.remove(&old);
            pins.insert(new);
        }
        // Its progress is reported under the new name, and what the rename changed on the
        // server (a new etag) is downloaded again.
        self.wake_hydrator();
    }

    /// Where the pinned `pin`, gone from its path, is now: a known item with its file id.
    fn renamed_on_server(&self, pin: &RemotePath) -> Option<RemotePath> {
        let fileid = self.meta.pin_fileid(pin)?;
        lock(&self.table).path_of_fileid(fileid, pin)
    }

    /// Asks the hydrator to walk the pins again.
    pub fn wake_hydrator(&self) {
        self.hydrate.notify_one();
    }

    /// Download progress of every pin.
    pub fn pin_progress(&self) -> Vec<PinProgress> {
        lock(&self.pin_progress).clone()
    }

    /// Frees every cache block that may be freed; answers the bytes freed.
    pub fn clean_cache(&self) -> Result<u64> {
        let freed = self
            .cache()
            .clean()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot clean the cache: {e}")))?;
        tracing::info!(freed, "cache cleaned");
        Ok(freed)
    }

    /// The state shown in `user.nuage.status`.
    pub fn state_of(&self, ino: Ino) -> Result<&'static str> {
        let node = self.node(ino)?;
        let path = &node.path;
        if self.wb.is_conflict_copy(path) {
            return Ok("conflict");
        }
        if node.entry.is_dir {
            if (self.wb.has_below(path) || self.wb.is_folder_pending(path)) && !path.is_root() {
                return Ok("pending-upload");
            }
            if self.is_pinned(path) {
                return Ok("pinned");
            }
            return Ok(if node.listing.is_some() {
                "cached"
            } else {
                "online-only"
            });
        }
        if self.wb.get(path).is_some() || self.wb.moved_from(path).is_some() {
            return Ok("pending-upload");
        }
        if self.is_pinned(path) {
            return Ok("pinned");
        }
        let v = self.version_of(&node)?;
        let need = self.fetcher.block_count(node.entry.size);
        let mut have = self.cache().cached_blocks(v);
        if have < need {
            // Blocks just read may still be on their way to the disk.
            have = self.blocks_here(v, need);
        }
        Ok(if have >= need {
            "cached"
        } else if have == 0 {
            "online-only"
        } else {
            "partial"
        })
    }

    fn version_of(&self, node: &crate::meta::Node) -> Result<VersionId> {
        let (identity, validator) = self.version_key(node);
        self.cache()
            .version(&identity, &validator)
            .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))
    }

    /// Reads an extended attribute.
    pub fn xattr_get(&self, ino: Ino, name: &str) -> Result<Vec<u8>> {
        if !name.starts_with("user.") {
            // `security.*`, `system.posix_acl_*`...: not supported here. "Unsupported" (not
            // "no such attribute") lets `ls -l` and friends stop asking for every file.
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("no {name} on this filesystem"),
            ));
        }
        match name {
            XATTR_STATUS => Ok(self.state_of(ino)?.as_bytes().to_vec()),
            XATTR_PINNED => {
                let path = self.node(ino)?.path;
                Ok(if self.is_pinned(&path) { b"1" } else { b"0" }.to_vec())
            }
            _ => Err(Error::new(
                ErrorKind::NoAttribute,
                format!("no attribute {name}"),
            )),
        }
    }

    /// Sets an extended attribute: `user.nuage.pinned` (`1`/`0`) and `user.nuage.clean`.
    pub fn xattr_set(&self, ino: Ino, name: &str, value: &[u8]) -> Result<()> {
        match name {
            XATTR_PINNED => {
                let v = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
                let on = match v.as_str() {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" | "" => false,
                    _ => {
                        return Err(Error::new(
                            ErrorKind::InvalidArgument,
                            "user.nuage.pinned takes 1 or 0",
                        ))
                    }
                };
                self.set_pinned(ino, on)
            }
            XATTR_CLEAN => self.clean_cache().map(|_| ()),
            XATTR_STATUS => Err(Error::new(
                ErrorKind::PermissionDenied,
                "user.nuage.status is read-only",
            )),
            _ => Err(Error::new(
                ErrorKind::Unsupported,
                "only user.nuage.pinned can be set here",
            )),
        }
    }

    /// Removes an extended attribute (`user.nuage.pinned` unpins).
    pub fn xattr_remove(&self, ino: Ino, name: &str) -> Result<()> {
        match name {
            XATTR_PINNED => self.set_pinned(ino, false),
            _ => Err(Error::new(
                ErrorKind::NoAttribute,
                format!("no attribute {name}"),
            )),
        }
    }

    /// Starts the hydrator: downloads pinned content whenever woken and every `every`.
    pub fn start_hydrator(self: &Arc<Self>, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.hydrate_once().await;
                tokio::select! {
                    _ = me.hydrate.notified() => {}
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// One walk over every pin: lists pinned folders, pins the cache versions of every file
    /// below them (so that nothing downloaded is evicted meanwhile), then downloads every
    /// missing block.
    pub async fn hydrate_once(&self) {
        let pins: Vec<RemotePath> = lock(&self.pins).iter().cloned().collect();
        tracing::debug!(pins = pins.len(), "hydrator walk");
        // 1. The files of each pin.
        let mut walks: Vec<(PinProgress, Vec<FileVersion>)> = Vec::new();
        for pin in pins {
            let mut p = PinProgress {
                path: format!("/{}", pin.as_str()),
                ..Default::default()
            };
            let mut files = Vec::new();
            let mut found = self.resolve_path(&pin).await;
            if found.is_none() {
                // Renamed or moved on the server (by a colleague, say): the same file id
                // under another name, when the mount has seen it there.
                if let Some(to) = self.renamed_on_server(&pin) {
                    tracing::info!(from = %pin, %to, "pinned item renamed on the server: the pin follows it");
                    self.move_pins(&pin, &to);
                    p.path = format!("/{}", to.as_str());
                    found = self.resolve_path(&to).await;
                }
            }
            let Some(ino) = found else {
                p.error = Some("not found on the server".into());
                walks.push((p, files));
                continue;
            };
            let mut stack = vec![ino];
            while let Some(ino) = stack.pop() {
                let Ok(node) = self.node(ino) else { continue };
                if node.entry.is_dir {
                    if let Err(e) = self.fresh_listing(ino).await {
                        p.error = Some(e.to_string());
                        continue;
                    }
                    let t = lock(&self.table);
                    if let Some(l) = t.get(ino).and_then(|n| n.listing.as_ref()) {
                        stack.extend(l.children.values().copied());
                    }
                } else if self.wb.get(&node.path).is_some() {
                    // Local changes: the journal holds them, nothing to download.
                    p.files += 1;
                    p.files_cached += 1;
                } else if let Ok(base) = self.base_of(&node).await {
                    files.push(Self::server_file(&node, base.version));
                }
            }
            walks.push((p, files));
        }
        // 2. Protected before any download: the new versions and, until the end of this walk,
        // the ones protected so far.
        let keep: HashSet<VersionId> = walks
            .iter()
            .flat_map(|(_, f)| f.iter().map(|fv| fv.version))
            .collect();
        let during: HashSet<VersionId> =
            keep.union(&lock(&self.pinned_versions)).copied().collect();
        let _ = self.cache().set_pinned(during);
        // 3. Downloads.
        let mut progress = Vec::new();
        for (mut p, files) in walks {
            for fv in files {
                let blocks = self.fetcher.block_count(fv.size);
                let mut failed = None;
                let mut i = 0;
                while i < blocks {
                    let end = (i + 8).min(blocks);
                    if let Err(e) = self.fetcher.ensure(&fv, i..end, end..end).await {
                        failed = Some(e);
                        break;
                    }
                    i = end;
                }
                // Downloaded blocks reach the disk in the background: count them once there.
                self.fetcher.drain_disk_writes().await;
                p.files += 1;
                p.bytes += fv.size;
                let have = self.cache().cached_blocks(fv.version);
                if have >= blocks {
                    p.files_cached += 1;
                    p.bytes_cached += fv.size;
                } else {
                    p.bytes_cached += (have * self.cache().block_size()).min(fv.size);
                }
                if let Some(e) = failed {
                    tracing::debug!(path = %fv.path, error = %e, "pinned file not downloaded yet");
                    p.error = Some(e.to_string());
                }
            }
            progress.push(p);
        }
        tracing::debug!(?progress, "hydrator walk done");
        // Exactly the versions still pinned stay protected.
        let _ = self.cache().set_pinned(keep.clone());
        *lock(&self.pinned_versions) = keep;
        *lock(&self.pin_progress) = progress;
    }

    /// The inode of `path`, listing folders on the way as needed.
    async fn resolve_path(&self, path: &RemotePath) -> Option<Ino> {
        let mut ino = Ino::ROOT;
        if path.is_root() {
            return Some(ino);
        }
        for seg in path.as_str().split('/') {
            self.fresh_listing(ino).await.ok()?;
            ino = self.child(ino, seg)?.0;
        }
        Some(ino)
    }
}
