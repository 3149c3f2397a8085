//! `FakeNextcloud`: a small Nextcloud-compatible WebDAV server over a local folder.
//!
//! Built from `nextcloud-protocol.md`, not from what nuage sends: it serves `status.php`
//! (§8.1), the OCS user and capabilities endpoints (§1.3, §8.2), and under
//! `/remote.php/dav/files/<uid>/` the DAV methods a filesystem client needs — PROPFIND with
//! Depth 0/1/infinity and the Nextcloud properties (§2.2), GET/HEAD with a single `Range` and
//! `If-Match`/`If-None-Match` (§3), PUT with `If-Match`, `If-None-Match: *`, `X-OC-Mtime` and the
//! quota (§4), MKCOL, DELETE, MOVE and COPY with `Overwrite` (§6), and the Activity API (§9.3)
//! for what was done through it or recorded by a test, and the sharing API's public links
//! (§12, with password enforcement as a knob). A DELETE moves the item into a trash bin beside
//! the user's files, which `remote.php/dav/trashbin/<uid>/trash` lists and restores (§13); a
//! PUT over a file keeps its id (as Nextcloud does) and what it replaced as a version, which
//! `remote.php/dav/versions/<uid>/versions/<fileid>` lists and restores (§13). Authentication is Basic with
//! a login name that may differ from the user id (§1.3); a wrong password answers 401.
//!
//! It exists for tests and for `nuage demo`. It counts what it does ([`Stats`]: requests per
//! method, body bytes sent, Depth-infinity PROPFINDs) and has fault knobs ([`Knobs`]).
//! Folder etags are derived from the whole subtree, so a change anywhere below a folder
//! changes its etag as Nextcloud's propagation does (§2.5). File ids are inode numbers, so they
//! survive renames.

mod activity;
mod auth;
mod bulk;
mod http;
mod push;

pub use http::{FakeCloud, FakeCloudConfig, Knobs, NamingRules, Stats};
