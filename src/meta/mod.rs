//! The inode table and directory cache.
//!
//! Inode numbers are handed out per remote path on first sight and never reused while mounted,
//! so they are stable for the life of a mount. A path whose type changes (file to folder or back)
//! gets a new inode. Each folder remembers its last listing and when it was fetched; each node
//! remembers when its attributes were last confirmed by the server. Freshness decisions (TTL)
//! are the caller's (`vfs`); this module only stores.

use crate::webdav::{Entry, RemotePath};
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Inode number. The root is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl Ino {
    /// The root folder.
    pub const ROOT: Ino = Ino(1);
}

/// A folder's last listing.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Children by name. Shared, copied on change: a node is cloned for most operations, and
    /// a folder of 10,000 files must not copy its whole listing each time (a `tar x` of such
    /// a folder spent most of its time there).
    pub children: std::sync::Arc<BTreeMap<String, Ino>>,
    /// When the server answered it.
    pub fetched: Instant,
}

/// What the mount knows of one file or folder.
#[derive(Debug, Clone)]
pub struct Node {
    /// Remote path.
    pub path: RemotePath,
    /// Parent folder (the root is its own parent).
    pub parent: Ino,
    /// The server's description.
    pub entry: Entry,
    /// When `entry` was last confirmed by the server.
    pub confirmed: Instant,
    /// The folder's listing, when one was fetched.
    pub listing: Option<Listing>,
    /// The etag whose content the kernel may still hold in its page cache.
    pub kernel_etag: Option<String>,
    /// Its path leads to it. False once it was deleted, replaced (by a rename, a type change)
    /// or renumbered: it then lives on only for the handles open on it, and what is at its
    /// path now (on the server, in the write-back) is another file.
    pub linked: bool,
}

/// All known nodes.
#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<Ino, Node>,
    /// Sorted, so that what is below a folder is one range (see [`Self::below`]): a delete or
    /// rename in a folder of 20,000 files scanned every known path before.
    by_path: BTreeMap<RemotePath, Ino>,
    next: u64,
    /// Per folder, bumped by every local change of its children: a listing fetched while it
    /// moved must not be applied (it could bring back what was just deleted).
    changes: HashMap<Ino, u64>,
}

impl InodeTable {
    /// A table holding only the root.
    pub fn new(root: Entry) -> Self {
        let mut t = InodeTable {
            nodes: HashMap::new(),
            by_path: BTreeMap::new(),
            next: 2,
            changes: HashMap::new(),
        };
        let path = RemotePath::root();
        t.by_path.insert(path.clone(), Ino::ROOT);
        t.nodes.insert(
            Ino::ROOT,
            Node {
                path,
                parent: Ino::ROOT,
                entry: Entry {
                    is_dir: true,
                    ..root
                },
                confirmed: Instant::now(),
                listing: None,
                kernel_etag: None,
                linked: true,
            },
        );
        t
    }

    /// The node of `ino`.
    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The node of `ino`, mutable.
    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The inode of a path, if known.
    pub fn by_path(&self, p: &RemotePath) -> Option<Ino> {
        self.by_path.get(p).copied()
    }

    /// The known paths strictly below folder `p`, with their inodes.
    fn below(&self, p: &RemotePath) -> Vec<(RemotePath, Ino)> {
        if p.is_root() {
            return self
                .by_path
                .iter()
                .filter(|(k, _)| !k.is_root())
                .map(|(k, i)| (k.clone(), *i))
                .collect();
        }
        let bound = p.below_bound();
        self.by_path
            .range(&bound..)
            .take_while(|(k, _)| k.as_str().starts_with(bound.as_str()))
            .map(|(k, i)| (k.clone(), *i))
            .collect()
    }

    /// Records a server description of a path under `parent`, asked for at `now`; answers its
    /// inode. A node updated locally after `now` keeps its newer description.
    pub fn upsert(&mut self, parent: Ino, entry: Entry, now: Instant) -> Ino {
        let path = entry.path.clone();
        if let Some(ino) = self.by_path.get(&path).copied() {
            if let Some(n) = self.nodes.get_mut(&ino) {
                if n.confirmed > now {
                    // Updated locally after this answer was asked for: the answer is older.
                    n.parent = parent;
                    return ino;
                }
                if n.entry.is_dir == entry.is_dir || ino == Ino::ROOT {
                    let is_dir = n.entry.is_dir;
                    n.entry = entry;
                    n.entry.is_dir = is_dir;
                    n.confirmed = now;
                    n.parent = parent;
                    return ino;
                }
            }
        }
        let ino = Ino(self.next);
        self.next += 1;
        if let Some(old) = self.by_path.insert(path.clone(), ino) {
            // Another type now: the old inode is another file's.
            self.unlinked(old);
        }
        self.nodes.insert(
            ino,
            Node {
                path,
                parent,
                entry,
                confirmed: now,
                listing: None,
                kernel_etag: None,
                linked: true,
            },
        );
        ino
    }

    /// Applies a Depth-1 listing of folder `dir`: the folder's own entry and its children.
    /// Children that disappeared are unlinked from the path map (their inodes stay valid for
    /// open handles).
    pub fn apply_listing(&mut self, dir: Ino, entries: Vec<Entry>, now: Instant) {
        let Some(dir_path) = self.nodes.get(&dir).map(|n| n.path.clone()) else {
            return;
        };
        let mut children = BTreeMap::new();
        for e in entries {
            if e.path == dir_path {
                if let Some(n) = self.nodes.get_mut(&dir) {
                    n.entry = Entry { is_dir: true, ..e };
                    n.confirmed = now;
                }
                continue;
            }
            if e.path.parent().as_ref() != Some(&dir_path) || e.path.name().is_empty() {
                tracing::debug!(path = %e.path, "entry outside the listed folder, ignored");
                continue;
            }
            let name = e.path.name().to_string();
            let ino = self.upsert(dir, e, now);
            children.insert(name, ino);
        }
        let children = std::sync::Arc::new(children);
        let old = self.nodes.get_mut(&dir).and_then(|n| {
            n.listing.replace(Listing {
                children: children.clone(),
                fetched: now,
            })
        });
        if let Some(old) = old {
            for (name, &ino) in old.children.iter() {
                if children.get(name) != Some(&ino) {
                    tracing::debug!(dir = %dir_path, %name, "listing: child gone or replaced");
                    self.forget_path(&dir_path.join(name), ino);
                }
            }
        }
    }

    /// Removes a path (and everything known below it) from the path map.
    pub fn forget_path(&mut self, p: &RemotePath, ino: Ino) {
        if self.by_path.get(p) == Some(&ino) {
            self.by_path.remove(p);
            self.unlinked(ino);
        }
        for (k, _) in self.below(p) {
            if let Some(i) = self.by_path.remove(&k) {
                self.unlinked(i);
            }
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.listing = None;
        }
    }

    fn unlinked(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.linked = false;
        }
    }

    /// The change counter of folder `dir` (see `changes`).
    pub fn dir_gen(&self, dir: Ino) -> u64 {
        self.changes.get(&dir).copied().unwrap_or(0)
    }

    /// Every known node.
    pub fn nodes(&self) -> impl Iterator<Item = (&Ino, &Node)> {
        self.nodes.iter()
    }

    fn bump(&mut self, dir: Ino) {
        *self.changes.entry(dir).or_default() += 1;
    }

    /// Adds (or replaces) a child in a folder's listing, when the folder has one.
    pub fn add_child(&mut self, dir: Ino, name: &str, ino: Ino) {
        self.bump(dir);
        let Some(dp) = self.nodes.get(&dir).map(|n| n.path.clone()) else {
            return;
        };
        let old = self
            .nodes
            .get_mut(&dir)
            .and_then(|n| n.listing.as_mut())
            .and_then(|l| std::sync::Arc::make_mut(&mut l.children).insert(name.to_string(), ino));
        if let Some(old) = old.filter(|o| *o != ino) {
            self.forget_path(&dp.join(name), old);
            self.by_path.insert(dp.join(name), ino);
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.linked = true;
            }
        }
    }

    /// The path of a known, still linked item with file id `fileid`, other than `not`.
    pub fn path_of_fileid(&self, fileid: u64, not: &RemotePath) -> Option<RemotePath> {
        self.by_path
            .iter()
            .find(|(p, ino)| {
                *p != not
                    && self
                        .nodes
                        .get(ino)
                        .is_some_and(|n| n.entry.fileid == Some(fileid))
            })
            .map(|(p, _)| p.clone())
    }

    /// Forgets every folder's listing: the next access to any folder lists it again.
    pub fn invalidate_all_listings(&mut self) {
        let dirs: Vec<Ino> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.listing.is_some())
            .map(|(i, _)| *i)
            .collect();
        for d in dirs {
            self.invalidate_listing(d);
        }
    }

    /// Forgets a folder's listing so that the next access lists it again.
    pub fn invalidate_listing(&mut self, dir: Ino) {
        self.bump(dir);
        if let Some(n) = self.nodes.get_mut(&dir) {
            n.listing = None;
        }
    }

    /// Moves node `ino` to `new_parent/new_name`, with everything known below it. A node that
    /// was at the destination is unlinked first.
    pub fn move_node(&mut self, ino: Ino, new_parent: Ino, new_name: &str) {
        let Some(node) = self.nodes.get(&ino).cloned() else {
            return;
        };
        let Some(np_path) = self.nodes.get(&new_parent).map(|n| n.path.clone()) else {
            return;
        };
        let from = node.path.clone();
        let to = np_path.join(new_name);
        self.bump(node.parent);
        self.bump(new_parent);
        // Unlink from the old parent's listing.
        if let Some(l) = self
            .nodes
            .get_mut(&node.parent)
            .and_then(|n| n.listing.as_mut())
        {
            if l.children.get(from.name()) == Some(&ino) {
                std::sync::Arc::make_mut(&mut l.children).remove(from.name());
            }
        }
        // Whatever was at the destination goes away.
        if let Some(victim) = self.by_path.get(&to).copied().filter(|v| *v != ino) {
            self.forget_path(&to, victim);
            if let Some(l) = self
                .nodes
                .get_mut(&new_parent)
                .and_then(|n| n.listing.as_mut())
            {
                std::sync::Arc::make_mut(&mut l.children).remove(new_name);
            }
        }
        // Re-key this node and its descendants.
        let prefix_len = from.below_bound().as_str().len();
        let mut moved = self.below(&from);
        if let Some(i) = self.by_path.get(&from) {
            moved.push((from.clone(), *i));
        }
        for (p, i) in moved {
            self.by_path.remove(&p);
            let np = if p == from {
                to.clone()
            } else {
                RemotePath::new(&format!("{}/{}", to.as_str(), &p.as_str()[prefix_len..]))
            };
            if let Some(n) = self.nodes.get_mut(&i) {
                n.path = np.clone();
                n.entry.path = np.clone();
            }
            self.by_path.insert(np, i);
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.parent = new_parent;
        }
        if let Some(l) = self
            .nodes
            .get_mut(&new_parent)
            .and_then(|n| n.listing.as_mut())
        {
            std::sync::Arc::make_mut(&mut l.children).insert(new_name.to_string(), ino);
        }
    }

    /// Gives the file at `ino`'s path a new inode, as if it had been replaced by a new file
    /// of the same name: later lookups find the new inode (a copy of the node), while `ino`
    /// stays valid, unlinked, for the handles open on it. Answers the new inode, or `None`
    /// when `ino` is a folder or no longer the inode of its path.
    pub fn renumber(&mut self, ino: Ino) -> Option<Ino> {
        let node = self.nodes.get(&ino)?.clone();
        if node.entry.is_dir || !node.linked {
            return None;
        }
        let new = Ino(self.next);
        self.next += 1;
        self.by_path.insert(node.path.clone(), new);
        if let Some(l) = self
            .nodes
            .get_mut(&node.parent)
            .and_then(|n| n.listing.as_mut())
        {
            if l.children.get(node.path.name()) == Some(&ino) {
                std::sync::Arc::make_mut(&mut l.children).insert(node.path.name().to_string(), new);
            }
        }
        self.unlinked(ino);
        self.nodes.insert(
            new,
            Node {
                kernel_etag: None,
                linked: true,
                ..node
            },
        );
        Some(new)
    }

    /// Removes a child from its parent's listing (the server said it is gone).
    pub fn remove_child(&mut self, parent: Ino, name: &str) {
        self.bump(parent);
        let Some(pp) = self.nodes.get(&parent).map(|n| n.path.clone()) else {
            return;
        };
        let ino = self
            .nodes
            .get_mut(&parent)
            .and_then(|n| n.listing.as_mut())
            .and_then(|l| std::sync::Arc::make_mut(&mut l.children).remove(name));
        if let Some(ino) = ino {
            self.forget_path(&pp.join(name), ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn e(p: &str, dir: bool) -> Entry {
        Entry {
            path: RemotePath::new(p),
            is_dir: dir,
            size: 1,
            mtime: SystemTime::UNIX_EPOCH,
            etag: None,
            fileid: None,
            permissions: None,
            quota_used: None,
            quota_available: None,
        }
    }

    /// A table whose root was listed with `children` (path, is a folder), at `now`.
    fn listed_root(children: &[(&str, bool)], now: Instant) -> InodeTable {
        let mut t = InodeTable::new(e("", true));
        let mut entries = vec![e("", true)];
        entries.extend(children.iter().map(|(p, dir)| e(p, *dir)));
        t.apply_listing(Ino::ROOT, entries, now);
        t
    }

    /// The inode of path `p`, if known.
    fn at(t: &InodeTable, p: &str) -> Option<Ino> {
        t.by_path(&RemotePath::new(p))
    }

    #[test]
    fn stable_inodes_and_type_change() {
        let now = Instant::now();
        let mut t = listed_root(&[("a", false), ("b", true)], now);
        let a = t.by_path(&RemotePath::new("a")).expect("a");
        t.apply_listing(
            Ino::ROOT,
            vec![e("", true), e("a", false), e("b", true)],
            now,
        );
        assert_eq!(
            t.by_path(&RemotePath::new("a")),
            Some(a),
            "same inode on relisting"
        );
        t.apply_listing(Ino::ROOT, vec![e("", true), e("a", true)], now);
        let a2 = t.by_path(&RemotePath::new("a")).expect("a");
        assert_ne!(a, a2, "file became folder: new inode");
        assert_eq!(t.by_path(&RemotePath::new("b")), None, "b is gone");
        assert!(t.get(a).is_some(), "old inode still valid for open handles");
        assert_eq!(t.get(a).map(|n| n.linked), Some(false), "a's file replaced");
        assert_eq!(t.get(a2).map(|n| n.linked), Some(true));
    }

    #[test]
    fn move_node_rekeys_descendants() {
        let now = Instant::now();
        let mut t = listed_root(&[("d", true), ("x", false)], now);
        let d = t.by_path(&RemotePath::new("d")).expect("d");
        t.apply_listing(d, vec![e("d", true), e("d/f", false)], now);
        let f = t.by_path(&RemotePath::new("d/f")).expect("f");
        let x = t.by_path(&RemotePath::new("x")).expect("x");
        t.move_node(d, Ino::ROOT, "x");
        assert_eq!(t.by_path(&RemotePath::new("x")), Some(d));
        assert_eq!(t.by_path(&RemotePath::new("x/f")), Some(f));
        assert_eq!(
            t.get(f).map(|n| n.path.clone()),
            Some(RemotePath::new("x/f"))
        );
        assert_eq!(t.by_path(&RemotePath::new("d/f")), None);
        assert!(t.get(x).is_some());
        let root = t
            .get(Ino::ROOT)
            .and_then(|n| n.listing.clone())
            .expect("listing");
        assert_eq!(root.children.get("x"), Some(&d));
        assert_eq!(root.children.get("d"), None);
    }

    /// Siblings whose names sort between `d` and `d/` (a space, `-`, `.` come before `/`)
    /// are neither moved nor forgotten with folder `d`; everything below it, at any depth, is.
    #[test]
    fn a_folder_moved_or_forgotten_takes_all_below_it_and_no_sibling() {
        let now = Instant::now();
        let siblings = ["d c", "d-x", "d.txt", "d0", "dd"];
        let mut t = listed_root(
            &[
                ("d", true),
                ("d c", false),
                ("d-x", false),
                ("d.txt", false),
                ("d0", false),
                ("dd", true),
            ],
            now,
        );
        let of_siblings =
            |t: &InodeTable| -> Vec<Option<Ino>> { siblings.iter().map(|n| at(t, n)).collect() };
        let d = at(&t, "d").expect("d");
        t.apply_listing(d, vec![e("d", true), e("d/f", false), e("d/s", true)], now);
        let s = at(&t, "d/s").expect("d/s");
        t.apply_listing(s, vec![e("d/s", true), e("d/s/g", false)], now);
        let g = at(&t, "d/s/g").expect("g");
        let before = of_siblings(&t);
        t.move_node(d, Ino::ROOT, "e");
        assert_eq!(at(&t, "e/s/g"), Some(g));
        assert!(at(&t, "e/f").is_some());
        assert_eq!(at(&t, "d/s/g"), None);
        let after = of_siblings(&t);
        assert_eq!(before, after, "siblings untouched by the move");
        assert!(after.iter().all(Option::is_some));
        t.remove_child(Ino::ROOT, "e");
        assert_eq!(at(&t, "e"), None);
        assert_eq!(at(&t, "e/f"), None);
        assert_eq!(at(&t, "e/s/g"), None);
        assert_eq!(t.get(g).map(|n| n.linked), Some(false));
        assert_eq!(before, of_siblings(&t), "siblings untouched by the delete");
    }

    #[test]
    fn renumber_gives_the_path_a_new_inode_and_keeps_the_old_one() {
        let now = Instant::now();
        let mut t = listed_root(&[("f", false), ("d", true)], now);
        let f = t.by_path(&RemotePath::new("f")).expect("f");
        let d = t.by_path(&RemotePath::new("d")).expect("d");
        let g = t.renumber(f).expect("renumbered");
        assert_ne!(f, g);
        assert_eq!(t.by_path(&RemotePath::new("f")), Some(g));
        let root = t
            .get(Ino::ROOT)
            .and_then(|n| n.listing.clone())
            .expect("listing");
        assert_eq!(
            root.children.get("f"),
            Some(&g),
            "the listing names the new inode"
        );
        assert_eq!(t.get(f).map(|n| n.path.clone()), Some(RemotePath::new("f")));
        assert_eq!(t.get(f).map(|n| n.linked), Some(false));
        assert_eq!(t.get(g).map(|n| n.linked), Some(true));
        assert_eq!(t.renumber(f), None, "the old inode is no longer the path's");
        assert_eq!(t.renumber(d), None, "folders keep their inode");
        t.apply_listing(
            Ino::ROOT,
            vec![e("", true), e("f", false), e("d", true)],
            now,
        );
        assert_eq!(
            t.by_path(&RemotePath::new("f")),
            Some(g),
            "stable from then on"
        );
    }
}
