//! Public links from the mount (`nuage share`, nextcloud-protocol.md §12). The mount holds the
//! account's credentials, so the command asks it through an extended attribute of the file,
//! `user.nuage.link`, never listed (so that `cp -a` and file managers never ask for it):
//! * reading it answers the file's public links, one address per line, oldest first
//!   (`ENODATA` when it has none);
//! * setting it creates a read-only public link; the value is empty, or a [`LinkRequest`] in
//!   JSON (a password, an expiry date);
//! * removing it deletes the file's public links.
//!
//! Only on a Nextcloud (elsewhere: `ENOTSUP`).

use super::{Ino, Vfs};
use crate::error::{Error, ErrorKind, Result};
use crate::webdav::Secret;
use serde::Deserialize;

/// The extended attribute that reads, creates and removes a file's public links.
pub const XATTR_LINK: &str = "user.nuage.link";

/// What the mount needs to use the sharing API.
#[derive(Debug)]
pub struct Sharing {
    /// The HTTP client (the mount's, with its TLS settings).
    pub http: reqwest::Client,
    /// The server's base URL.
    pub base: reqwest::Url,
    /// Login name.
    pub login: String,
    /// App password.
    pub password: Secret,
    /// Where the mount's root is in the account (`""` for the whole account).
    pub root_in_account: String,
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
    pub fn set_sharing(&self, s: Sharing) {
        let _ = self.sharing.set(s);
    }

    fn sharing(&self) -> Result<&Sharing> {
        self.sharing.get().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "public links need a Nextcloud server",
            )
        })
    }

    /// The item's path as the sharing API wants it: from the account's root, with a leading
    /// `/`, under its server name while a rename made offline waits.
    fn account_path(&self, s: &Sharing, ino: Ino) -> Result<String> {
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

    /// The public links of an item, one address per line (`user.nuage.link`).
    pub async fn public_links(&self, ino: Ino) -> Result<Vec<u8>> {
        let s = self.sharing()?;
        let path = self.account_path(s, ino)?;
        let links =
            crate::webdav::nextcloud::public_links(&s.http, &s.base, &s.login, &s.password, &path)
                .await?;
        if links.is_empty() {
            return Err(Error::new(
                ErrorKind::NoAttribute,
                format!("{path} has no public link"),
            ));
        }
        let mut out = String::new();
        for l in links {
            out.push_str(&l.url);
            out.push('\n');
        }
        Ok(out.into_bytes())
    }

    /// Creates a read-only public link to an item (`user.nuage.link` set).
    pub async fn create_public_link(&self, ino: Ino, value: &[u8]) -> Result<()> {
        let s = self.sharing()?;
        let req = LinkRequest::parse(value)?;
        let path = self.account_path(s, ino)?;
        let password = req.password.map(Secret::new);
        let link = crate::webdav::nextcloud::create_public_link(
            &s.http,
            &s.base,
            &s.login,
            &s.password,
            &path,
            password.as_ref(),
            req.expire.as_deref(),
        )
        .await
        .inspect_err(|e| tracing::info!(%path, error = %e, "public link refused"))?;
        tracing::info!(%path, id = %link.id, "public link created");
        Ok(())
    }

    /// Deletes every public link of an item (`user.nuage.link` removed).
    pub async fn remove_public_links(&self, ino: Ino) -> Result<()> {
        let s = self.sharing()?;
        let path = self.account_path(s, ino)?;
        let links =
            crate::webdav::nextcloud::public_links(&s.http, &s.base, &s.login, &s.password, &path)
                .await?;
        if links.is_empty() {
            return Err(Error::new(
                ErrorKind::NoAttribute,
                format!("{path} has no public link"),
            ));
        }
        for l in links {
            crate::webdav::nextcloud::delete_share(&s.http, &s.base, &s.login, &s.password, &l.id)
                .await?;
            tracing::info!(%path, id = %l.id, "public link deleted");
        }
        Ok(())
    }
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
