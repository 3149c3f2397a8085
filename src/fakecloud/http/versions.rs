//! File versions (nextcloud-protocol.md §13): a PUT that replaces a file keeps the content it
//! replaces, named by its modification time, in a folder beside the user's files;
//! `PROPFIND Depth: 1` of `remote.php/dav/versions/<uid>/versions/<fileid>` lists them
//! (`d:getcontentlength`, `d:getlastmodified`, `nc:version-label`, `nc:version-author`), and
//! `MOVE` of one to `…/restore/target` makes it the file's content again (the content it
//! replaces becoming a version). Versions are kept by path here (a real server keeps them by
//! file id, through renames).

use super::{multistatus, resp, sabre_error, xml_escape, Resp, Shared};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

impl Shared {
    fn versions_dir(&self, rel: &str) -> PathBuf {
        let key: String = rel
            .trim_matches('/')
            .chars()
            .map(|c| if c == '/' { '\u{1f}' } else { c })
            .collect();
        PathBuf::from(format!("{}.versions", self.cfg.root.display())).join(key)
    }

    /// Keeps the current content of `local` (the file at `rel`) as a version.
    pub(super) fn keep_version(&self, rel: &str, local: &Path) {
        let Ok(m) = std::fs::metadata(local) else {
            return;
        };
        if !m.is_file() {
            return;
        }
        let secs = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let dir = self.versions_dir(rel);
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let mut name = secs;
        while dir.join(name.to_string()).exists() {
            name += 1;
        }
        let _ = std::fs::copy(local, dir.join(name.to_string()));
    }

    /// The path (from the user's root) of the file whose id is `fileid`.
    fn path_of_fileid(&self, fileid: u64) -> Option<String> {
        fn walk(dir: &Path, rel: &str, want: u64) -> Option<String> {
            for e in std::fs::read_dir(dir).ok()?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let r = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                let m = e.metadata().ok()?;
                if m.ino() == want && m.is_file() {
                    return Some(r);
                }
                if m.is_dir() {
                    if let Some(found) = walk(&e.path(), &r, want) {
                        return Some(found);
                    }
                }
            }
            None
        }
        walk(&self.cfg.root, "", fileid)
    }
}

/// `remote.php/dav/versions/<uid>/<rest>`.
pub(super) fn handle(shared: &Shared, req: &Request<Incoming>, prefix: &str, rest: &str) -> Resp {
    let Some(rest) = rest.strip_prefix("/versions/") else {
        return sabre_error(StatusCode::NOT_FOUND, "NotFound", "no such versions node");
    };
    let mut parts = rest.trim_matches('/').splitn(2, '/');
    let Some(fileid) = parts.next().and_then(|f| f.parse::<u64>().ok()) else {
        return sabre_error(StatusCode::NOT_FOUND, "NotFound", "no such file id");
    };
    let entry = parts.next().filter(|e| !e.is_empty()).map(str::to_string);
    let Some(rel) = shared.path_of_fileid(fileid) else {
        return sabre_error(StatusCode::NOT_FOUND, "NotFound", "no file with this id");
    };
    let dir = shared.versions_dir(&rel);
    match req.method().as_str() {
        "PROPFIND" => {
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            let mut out = format!(
                "<?xml version=\"1.0\"?>\n<d:multistatus xmlns:d=\"DAV:\" xmlns:nc=\"http://nextcloud.org/ns\">\
                 <d:response><d:href>{prefix}/versions/{fileid}/</d:href><d:propstat><d:prop>\
                 <d:resourcetype><d:collection/></d:resourcetype></d:prop>\
                 <d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
            );
            for n in names {
                let len = std::fs::metadata(dir.join(&n)).map_or(0, |m| m.len());
                let secs: u64 = n.parse().unwrap_or(0);
                let date =
                    httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
                out.push_str(&format!(
                    "<d:response><d:href>{prefix}/versions/{fileid}/{n}</d:href><d:propstat><d:prop>\
                     <d:getcontentlength>{len}</d:getcontentlength>\
                     <d:getlastmodified>{date}</d:getlastmodified>\
                     <nc:version-label></nc:version-label>\
                     <nc:version-author>{}</nc:version-author>\
                     </d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>",
                    xml_escape(&shared.cfg.user_id)
                ));
            }
            out.push_str("</d:multistatus>");
            multistatus(out)
        }
        "MOVE" => {
            let Some(entry) = entry.filter(|e| !e.contains('/')) else {
                return sabre_error(StatusCode::FORBIDDEN, "Forbidden", "move a version");
            };
            let dest = super::header(req.headers(), "destination").unwrap_or("");
            if !dest
                .trim_end_matches('/')
                .ends_with(&format!("{prefix}/restore/target"))
            {
                return sabre_error(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "versions can only be moved to restore/target",
                );
            }
            let version = dir.join(&entry);
            if !version.is_file() {
                return sabre_error(StatusCode::NOT_FOUND, "NotFound", "no such version");
            }
            let local = shared.file_path(&rel);
            let Ok(old) = std::fs::read(&version) else {
                return sabre_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Exception",
                    "restore failed",
                );
            };
            shared.keep_version(&rel, &local);
            let _ = std::fs::remove_file(&version);
            // In place: the file keeps its id.
            if std::fs::write(&local, old).is_err() {
                return sabre_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Exception",
                    "restore failed",
                );
            }
            resp(StatusCode::NO_CONTENT, "")
        }
        _ => sabre_error(StatusCode::NOT_IMPLEMENTED, "NotImplemented", "not here"),
    }
}
