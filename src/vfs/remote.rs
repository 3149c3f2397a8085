//! Following the server: cheap change detection and kernel cache invalidation.
//!
//! Nextcloud propagates etags up the tree (nextcloud-protocol.md §2.5, §9.1): one Depth 0
//! PROPFIND of the root tells whether anything changed anywhere; then only folders whose etag
//! changed are listed again. A plain WebDAV server does not propagate, so every folder the
//! mount has listed is listed again instead. Every difference (a file changed, added, deleted,
//! renamed) becomes an [`Invalidation`] that the OS adapter forwards to the kernel, so `ls` and
//! `cat` show the new state at once.

use super::{lock, Vfs};
use crate::error::Result;
use crate::meta::Ino;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the kernel must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A file's cached data and attributes.
    Inode(Ino),
    /// A file's attributes only: the kernel asks for them again before it relies on them
    /// (its size at the end of a read). Touches no page, so it may be told at once, also
    /// while the kernel waits for a read of that file.
    Attributes(Ino),
    /// A range of a file's pages in the kernel's page cache (its data is still in the block
    /// cache).
    Pages {
        /// The file.
        ino: Ino,
        /// First byte.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// A name in a folder (added, deleted, renamed, replaced).
    Entry {
        /// The folder.
        parent: Ino,
        /// The name.
        name: String,
    },
}

/// Receives invalidations (the OS adapter's notifier).
pub type Invalidator = Arc<dyn Fn(Invalidation) + Send + Sync>;

/// What one check found.
#[derive(Debug, Default, Clone)]
pub struct RemoteChanges {
    /// Paths of files whose content changed or that appeared.
    pub changed_files: Vec<crate::webdav::RemotePath>,
    /// Names appeared or went away (also folders: created, deleted, renamed).
    pub names_changed: bool,
}

type Snapshot = BTreeMap<String, (Ino, Option<String>, bool)>;

impl Vfs {
    /// Registers the receiver of kernel invalidations.
    pub fn set_invalidator(&self, f: Invalidator) {
        *lock(&self.invalidator) = Some(f);
    }

    pub(super) fn invalidate(&self, items: Vec<Invalidation>) {
        let f = lock(&self.invalidator).clone();
        if let Some(f) = f {
            for i in items {
                f(i);
            }
        }
    }

    fn snapshot(&self, dir: Ino) -> Option<Snapshot> {
        let t = lock(&self.table);
        let l = t.get(dir)?.listing.as_ref()?;
        Some(
            l.children
                .iter()
                .filter_map(|(name, ino)| {
                    t.get(*ino)
                        .map(|n| (name.clone(), (*ino, n.entry.etag.clone(), n.entry.is_dir)))
                })
                .collect(),
        )
    }

    /// Asks the server what changed since the last check and tells the kernel. Also serves
    /// as the reachability probe: it fails while the server is out of reach.
    pub async fn check_remote_changes(&self) -> Result<RemoteChanges> {
        let root_etag = self.dav.probe().await?;
        let propagates = self.cfg.nextcloud;
        if propagates && root_etag.is_some() && *lock(&self.last_root_etag) == root_etag {
            return Ok(RemoteChanges::default());
        }
        let mut out = RemoteChanges::default();
        let mut inval = Vec::new();
        let mut queue = vec![Ino::ROOT];
        while let Some(dir) = queue.pop() {
            let Some(old) = self.snapshot(dir) else {
                continue; // never listed: the kernel knows nothing of it
            };
            match self.refresh_listing(dir, true).await {
                Ok(()) => {}
                // A folder that vanished meanwhile is its parent's change, seen there.
                Err(e) if dir != Ino::ROOT && e.kind == crate::error::ErrorKind::NotFound => {
                    continue
                }
                Err(e) => return Err(e),
            }
            let new = self.snapshot(dir).unwrap_or_default();
            let Ok(dir_path) = self.node(dir).map(|n| n.path) else {
                continue;
            };
            for (name, (ino, etag, is_dir)) in &old {
                match new.get(name) {
                    None => {
                        out.names_changed = true;
                        inval.push(Invalidation::Entry {
                            parent: dir,
                            name: name.clone(),
                        })
                    }
                    Some((nino, netag, nis_dir)) => {
                        if nino != ino || nis_dir != is_dir {
                            inval.push(Invalidation::Entry {
                                parent: dir,
                                name: name.clone(),
                            });
                        } else if *is_dir {
                            if netag != etag || !propagates {
                                queue.push(*ino);
                            }
                        } else if netag != etag {
                            inval.push(Invalidation::Inode(*ino));
                            out.changed_files.push(dir_path.join(name));
                        }
                    }
                }
            }
            for (name, (_, _, is_dir)) in &new {
                if !old.contains_key(name) {
                    out.names_changed = true;
                    inval.push(Invalidation::Entry {
                        parent: dir,
                        name: name.clone(),
                    });
                    if !is_dir {
                        out.changed_files.push(dir_path.join(name));
                    }
                }
            }
        }
        *lock(&self.last_root_etag) = root_etag;
        if !inval.is_empty() {
            tracing::info!(
                changes = inval.len(),
                "changes on the server: kernel caches invalidated"
            );
        }
        self.invalidate(inval);
        Ok(out)
    }
}
