//! Nextcloud services asked of the mount by `nuage share` and `nuage trash`: the mount holds
//! the account's credentials, so the commands ask it through extended attributes, never
//! listed (so that `cp -a` and file managers never ask for them).
//!
//! Public links (nextcloud-protocol.md §12), `user.nuage.link` of a file or folder:
//! * reading it answers the file's public links, one address per line, oldest first
//!   (nothing when it has none);
//! * setting it creates a read-only public link; the value is empty, or a [`LinkRequest`] in
//!   JSON (a password, an expiry date);
//! * removing it deletes the file's public links.
//!
//! Shares with other users of the server (§12, share type 0), `user.nuage.share` of a file
//! or folder:
//! * reading it answers one line per user it is shared with: the user, a tab, and `edit` or
//!   `read`;
//! * setting it to a [`ShareRequest`] in JSON shares the item with one user (or changes what
//!   they may do), or ends that user's share.
//!
//! The trash bin (§13), on any node of the mount:
//! * `user.nuage.trash` reads the items deleted from the mounted folder, newest first, as a
//!   JSON list of [`TrashItem`](crate::webdav::nextcloud::TrashItem) (locations relative to
//!   the mount's root; as many as fit in 60 KiB);
//! * setting `user.nuage.restore` to an item's `entry` puts it back where it was.
//!
//! A file's earlier versions (§13), on the file:
//! * `user.nuage.versions` reads them, newest first, as a JSON list of
//!   [`FileVersion`](crate::webdav::nextcloud::FileVersion);
//! * setting `user.nuage.restore-version` to a version's `entry` makes it the file's content
//!   again (what it replaces becomes a version).
//!
//! Only on a Nextcloud (elsewhere: `ENOTSUP`).

use super::{Ino, Vfs};
use crate::error::{Error, ErrorKind, Result};
use crate::webdav::Secret;
use serde::Deserialize;

/// The extended attribute that reads, creates and removes a file's public links.
pub const XATTR_LINK: &str = "user.nuage.link";
/// The extended attribute that reads, creates and ends shares with other users.
pub const XATTR_SHARE: &str = "user.nuage.share";
/// The extended attribute that lists the trash bin.
pub const XATTR_TRASH: &str = "user.nuage.trash";
/// The extended attribute that restores an item of the trash bin.
pub const XATTR_RESTORE: &str = "user.nuage.restore";
/// The extended attribute that lists a file's earlier versions.
pub const XATTR_VERSIONS: &str = "user.nuage.versions";
/// The extended attribute that restores an earlier version of a file.
pub const XATTR_RESTORE_VERSION: &str = "user.nuage.restore-version";

/// How long a link waits for the upload of what it shares.
const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The largest trash listing answered (extended attribute values stop at 64 KiB).
const TRASH_LISTING_MAX: usize = 60 << 10;

/// What the mount needs for these services.
#[derive(Debug)]
pub struct ServerApi {
    /// The account's services.
    pub api: crate::webdav::nextcloud::Services,
    /// Where the mount's root is in the account (`""` for the whole account).
    pub root_in_account: String,
}

/// A share with one user, as `nuage share --with` sends it (JSON in the attribute's value).
#[derive(Debug, Deserialize)]
pub struct ShareRequest {
    /// The user's login on the server.
    pub with: String,
    /// They may change it (a folder: also add and delete in it); else they may read it.
    #[serde(default)]
    pub edit: bool,
    /// End their share instead.
    #[serde(default)]
    pub remove: bool,
}

/// Permissions of a share (§12): read; or read, update, and for a folder create and delete.
fn share_permissions(edit: bool, dir: bool) -> u32 {
    match (edit, dir) {
        (false, _) => 1,
        (true, false) => 1 | 2,
        (true, true) => 1 | 2 | 4 | 8,
    }
}

/// Options of a new link, as `nuage share` sends them (JSON in the attribute's value).
#[derive(Debug, Default, Deserialize)]
pub struct LinkRequest {
    /// A password people must type to open the link.
    #[serde(default)]
    pub password: Option<String>,
    /// The last day the link works, `YYYY-MM-DD`.
    #[serde(default)]
    pub expire: Option<String>,
}

impl LinkRequest {
    fn parse(value: &[u8]) -> Result<LinkRequest> {
        if value.iter().all(u8::is_ascii_whitespace) {
            return Ok(LinkRequest::default());
        }
        // The value may hold a password: never repeated in a message.
        let r: LinkRequest = serde_json::from_slice(value).map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                "user.nuage.link takes nothing or {\"password\": ..., \"expire\": \"YYYY-MM-DD\"}",
            )
        })?;
        if let Some(e) = &r.expire {
            let ok = e.len() == 10
                && e.bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                });
            if !ok {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("the expiry date {e:?} is not YYYY-MM-DD"),
                ));
            }
        }
        Ok(r)
    }
}

impl Vfs {
    /// Lets the mount create public links (a Nextcloud account).
    pub fn set_server_api(&self, s: ServerApi) {
        let _ = self.server_api_slot.set(s);
    }

    fn server_api(&self) -> Result<&ServerApi> {
        self.server_api_slot.get().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "public links need a Nextcloud server",
            )
        })
    }

    /// The item's path as the sharing API wants it: from the account's root, with a leading
    /// `/`, under its server name while a rename made offline waits.
    fn account_path(&self, s: &ServerApi, ino: Ino) -> Result<String> {
        let path = self.wb.server_path(&self.node(ino)?.path);
        let mut out = String::from("/");
        out.push_str(s.root_in_account.trim_matches('/'));
        if !path.is_root() {
            if out.len() > 1 {
                out.push('/');
            }
            out.push_str(path.as_str().trim_start_matches('/'));
        }
        Ok(out)
    }

    /// The public links of the item at `path` (from the account's root).
    async fn links_at(
        &self,
        s: &ServerApi,
        path: &str,
    ) -> Result<Vec<crate::webdav::nextcloud::PublicLink>> {
        Ok(crate::webdav::nextcloud::public_links(&s.api, path).await?)
    }

    /// The public links of an item, one address per line (`user.nuage.link`).
    pub async fn public_links(&self, ino: Ino) -> Result<Vec<u8>> {
        let s = self.server_api()?;
        let path = self.account_path(s, ino)?;
        let links = self.links_at(s, &path).await?;
        let mut out = String::new();
        for l in links {
            out.push_str(&l.url);
            out.push('\n');
        }
        Ok(out.into_bytes())
    }

    /// Waits (bounded) until what was written to an item here is on the server: a file saved
    /// a moment ago can be shared at once.
    async fn uploaded(&self, ino: Ino) -> Result<()> {
        let p = self.node(ino)?.path;
        let deadline = std::time::Instant::now() + UPLOAD_WAIT;
        while self.wb.get(&p).is_some() || self.wb.is_folder_pending(&p) {
            if !self.reach().is_online() {
                return Err(Error::new(
                    ErrorKind::Offline,
                    format!("{p} is not on the server yet, and the server cannot be reached"),
                ));
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{p} is not on the server yet (its upload is still waiting)"),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Creates a read-only public link to an item (`user.nuage.link` set), once what was
    /// written to it here is on the server.
    pub async fn create_public_link(&self, ino: Ino, value: &[u8]) -> Result<()> {
        let s = self.server_api()?;
        let req = LinkRequest::parse(value)?;
        self.uploaded(ino).await?;
        let path = self.account_path(s, ino)?;
        let password = req.password.map(Secret::new);
        let link = crate::webdav::nextcloud::create_public_link(
            &s.api,
            &path,
            password.as_ref(),
            req.expire.as_deref(),
        )
        .await
        .map_err(|e| {
            tracing::info!(%path, error = %e, "public link refused");
            match e {
                // A date the server does not take (in the past, beyond its limit).
                crate::webdav::DavError::Status { status: 400, .. } => {
                    Error::new(ErrorKind::InvalidArgument, e.to_string())
                }
                e => e.into(),
            }
        })?;
        tracing::info!(%path, id = %link.id, "public link created");
        Ok(())
    }

    /// The users an item is shared with, one per line: login, tab, `edit` or `read`
    /// (`user.nuage.share`).
    pub async fn people_shares(&self, ino: Ino) -> Result<Vec<u8>> {
        let s = self.server_api()?;
        let path = self.account_path(s, ino)?;
        let mut out = String::new();
        for sh in crate::webdav::nextcloud::user_shares(&s.api, &path).await? {
            let may = if sh.permissions & 2 != 0 {
                "edit"
            } else {
                "read"
            };
            out.push_str(&format!("{}\t{may}\n", sh.with));
        }
        Ok(out.into_bytes())
    }

    /// Shares an item with one user, changes what they may do, or ends their share
    /// (`user.nuage.share` set), once what was written to it here is on the server.
    pub async fn share_with(&self, ino: Ino, value: &[u8]) -> Result<()> {
        let s = self.server_api()?;
        let req: ShareRequest = serde_json::from_slice(value)
            .ok()
            .filter(|r: &ShareRequest| !r.with.trim().is_empty())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    "user.nuage.share takes {\"with\": LOGIN, \"edit\": true|false, \"remove\": true|false}",
                )
            })?;
        let who = req.with.trim();
        let dir = self.node(ino)?.entry.is_dir;
        if !req.remove {
            self.uploaded(ino).await?;
        }
        let path = self.account_path(s, ino)?;
        let api = &s.api;
        let theirs: Vec<_> = crate::webdav::nextcloud::user_shares(api, &path)
            .await?
            .into_iter()
            .filter(|sh| sh.with == who)
            .collect();
        if req.remove {
            for sh in theirs {
                crate::webdav::nextcloud::delete_share(api, &sh.id).await?;
                tracing::info!(%path, with = %who, "share ended");
            }
            return Ok(());
        }
        let want = share_permissions(req.edit, dir);
        match theirs.first() {
            Some(sh) if sh.permissions == want => Ok(()),
            Some(sh) => {
                crate::webdav::nextcloud::set_share_permissions(api, &sh.id, want).await?;
                tracing::info!(%path, with = %who, permissions = want, "share changed");
                Ok(())
            }
            None => {
                crate::webdav::nextcloud::share_with_user(api, &path, who, want)
                    .await
                    .map_err(|e| {
                        tracing::info!(%path, with = %who, error = %e, "share refused");
                        match e {
                            crate::webdav::DavError::NotFound(_) => Error::new(
                                ErrorKind::NotFound,
                                format!("the server has no user {who:?}"),
                            ),
                            e => e.into(),
                        }
                    })?;
                tracing::info!(%path, with = %who, permissions = want, "shared");
                Ok(())
            }
        }
    }

    /// Deletes every public link of an item (`user.nuage.link` removed).
    pub async fn remove_public_links(&self, ino: Ino) -> Result<()> {
        let s = self.server_api()?;
        let path = self.account_path(s, ino)?;
        for l in self.links_at(s, &path).await? {
            crate::webdav::nextcloud::delete_share(&s.api, &l.id).await?;
            tracing::info!(%path, id = %l.id, "public link deleted");
        }
        Ok(())
    }
}

impl Vfs {
    /// The trash bin's items that were deleted from the mounted folder, newest first, with
    /// their locations relative to the mount's root (`user.nuage.trash`).
    pub async fn trash_listing(&self) -> Result<Vec<u8>> {
        let s = self.server_api()?;
        let items = crate::webdav::nextcloud::trash_list(&s.api).await?;
        let root = s.root_in_account.trim_matches('/');
        let mut out: Vec<crate::webdav::nextcloud::TrashItem> = Vec::new();
        let mut size = 2;
        for mut it in items {
            let local = if root.is_empty() {
                Some(it.location.clone())
            } else {
                it.location
                    .strip_prefix(root)
                    .and_then(|r| r.strip_prefix('/'))
                    .map(str::to_string)
            };
            let Some(local) = local else { continue };
            it.location = local;
            let len = serde_json::to_vec(&it).map(|v| v.len() + 1).unwrap_or(0);
            if size + len > TRASH_LISTING_MAX {
                break;
            }
            size += len;
            out.push(it);
        }
        serde_json::to_vec(&out).map_err(|e| Error::new(ErrorKind::Io, e.to_string()))
    }

    /// Restores an item of the trash bin (`user.nuage.restore` set to its entry name); the
    /// folder it comes back to is listed again at once.
    pub async fn restore_from_trash(&self, value: &[u8]) -> Result<()> {
        let s = self.server_api()?;
        let entry = entry_name(value, XATTR_RESTORE)?;
        crate::webdav::nextcloud::trash_restore(&s.api, entry).await?;
        tracing::info!(entry, "restored from the trash bin");
        // Whatever folder it went back to: the next look at any folder asks the server.
        super::lock(&self.table).invalidate_all_listings();
        Ok(())
    }
}

impl Vfs {
    /// A file's id on the server (versions are kept by id).
    fn fileid_of(&self, ino: Ino) -> Result<u64> {
        let node = self.node(ino)?;
        if node.entry.is_dir {
            return Err(Error::new(
                ErrorKind::IsADirectory,
                format!("{} is a folder: versions are kept for files", node.path),
            ));
        }
        node.entry.fileid.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("{} has no file id from the server yet", node.path),
            )
        })
    }

    /// The file's id once what was written to it here is on the server (a file uploaded
    /// just now learns its id from a new listing of its folder).
    async fn uploaded_fileid(&self, ino: Ino) -> Result<u64> {
        self.uploaded(ino).await?;
        match self.fileid_of(ino) {
            Err(e) if e.kind == ErrorKind::NotFound => {
                let path = self.node(ino)?.path;
                let dir = path
                    .parent()
                    .and_then(|p| super::lock(&self.table).by_path(&p));
                if let Some(dir) = dir {
                    self.refresh_listing(dir, true).await?;
                }
                self.fileid_of(ino)
            }
            other => other,
        }
    }

    /// A file's earlier versions, newest first (`user.nuage.versions`).
    pub async fn versions(&self, ino: Ino) -> Result<Vec<u8>> {
        let s = self.server_api()?;
        let fileid = self.uploaded_fileid(ino).await?;
        let v = crate::webdav::nextcloud::versions_list(&s.api, fileid).await?;
        serde_json::to_vec(&v).map_err(|e| Error::new(ErrorKind::Io, e.to_string()))
    }

    /// Makes an earlier version the file's content again (`user.nuage.restore-version` set to
    /// its entry), once what was written to it here is on the server; the mount then shows
    /// the restored content at once.
    pub async fn restore_version(&self, ino: Ino, value: &[u8]) -> Result<()> {
        let s = self.server_api()?;
        let entry = entry_name(value, XATTR_RESTORE_VERSION)?;
        let fileid = self.uploaded_fileid(ino).await?;
        crate::webdav::nextcloud::version_restore(&s.api, fileid, entry).await?;
        let path = self.node(ino)?.path;
        tracing::info!(%path, entry, "earlier version restored");
        // The new etag, and the kernel's copy dropped, before the command returns.
        let parent = path
            .parent()
            .and_then(|p| super::lock(&self.table).by_path(&p));
        if let Some(dir) = parent {
            self.refresh_listing(dir, true).await?;
        }
        Ok(())
    }
}

/// The entry name (of a trash bin item, of a version) given as the value of `attr`.
fn entry_name<'a>(value: &'a [u8], attr: &str) -> Result<&'a str> {
    std::str::from_utf8(value)
        .map(str::trim)
        .ok()
        .filter(|e| !e.is_empty() && !e.contains('/'))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("{attr} takes the name of an entry on the server"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::LinkRequest;

    #[test]
    fn link_requests_are_checked() {
        let r = LinkRequest::parse(b"").expect("empty");
        assert!(r.password.is_none() && r.expire.is_none());
        let r =
            LinkRequest::parse(br#"{"password":"s3cret!","expire":"2027-06-30"}"#).expect("full");
        assert_eq!(r.password.as_deref(), Some("s3cret!"));
        assert_eq!(r.expire.as_deref(), Some("2027-06-30"));
        let e = LinkRequest::parse(br#"{"expire":"30/06/2027"}"#).expect_err("date");
        assert!(e.msg.contains("YYYY-MM-DD"));
        let e = LinkRequest::parse(br#"{"password":"s3cret!""#).expect_err("broken");
        assert!(!e.msg.contains("s3cret"), "{}", e.msg);
    }
}
