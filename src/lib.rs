//! # nuage: a Nextcloud or WebDAV folder as a local filesystem
//!
//! Files appear at once, only the blocks a program reads are downloaded, and downloaded
//! blocks stay on disk for later (and offline) use.
//!
//! ## Architecture map (top to bottom)
//! ```text
//! platform/ (binary)   FUSE adapter (Linux, macOS), WinFsp adapter (Windows): thin translation
//!        |
//! cli      clap commands; mounts through the `cli::Platform` trait the binary injects
//! auth     saved accounts: settings file, app passwords in the keyring or a 0600 file
//! poll     follows the server: root-etag polling, notify_push, probes while offline
//! notify   desktop notifications: conflicts, quota full, a login refused
//! vfs      the API adapters call: lookup, getattr, readdir, open, read, write, xattrs, pins
//! meta     inode table and directory cache; meta.sqlite remembers listings and pins
//! fetch    read path: cache hit or ranged GET, read-ahead, request deduplication
//! cache    on-disk block store with an SQLite index and LRU eviction
//! writeback durable journal of local changes, background uploads, conflicts
//! webdav   HTTP + XML: PROPFIND, ranged GET, uploads, Nextcloud endpoints, reachability
//! error    the portable error type adapters map to errno / NTSTATUS
//! ```
//! `fakecloud` is a Nextcloud-compatible test server used by the tests and by `nuage demo`.
//!
//! ## Layering rules
//! * `platform/*` uses only `vfs`, `cli`, `error` (checked by `scripts/check-layering.sh`).
//! * `webdav` knows nothing of inodes or blocks; `cache` stores and never fetches.
//! * Nothing in `src/` names the FUSE or WinFsp crates or an errno constant.

pub mod auth;
pub mod cache;
pub mod cli;
pub mod error;
#[cfg(unix)]
pub mod fakecloud;
pub mod fetch;
pub mod meta;
pub mod notify;
pub mod poll;
pub mod status;
pub mod vfs;
pub mod webdav;
pub mod writeback;

pub use error::{Error, ErrorKind, Result};
