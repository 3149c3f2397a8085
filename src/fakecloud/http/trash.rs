//! The trash bin (nextcloud-protocol.md §13): a DELETE through DAV moves the item into a
//! folder beside the user's files, named `<name>.d<deletion time>`; `PROPFIND Depth: 1` of
//! `remote.php/dav/trashbin/<uid>/trash` lists the items with `nc:trashbin-filename`,
//! `nc:trashbin-original-location` and `nc:trashbin-deletion-time`; `MOVE` of an item to
//! `…/restore/<entry>` puts it back where it was (in the user's root when that folder is
//! gone; a name taken meanwhile gets " (restored)" before its extension).

use super::{multistatus, resp, sabre_error, xml_escape, Resp, Shared};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use std::path::PathBuf;

/// One item in the trash bin.
#[derive(Debug, Clone)]
pub(crate) struct Trashed {
    entry: String,
    name: String,
    location: String,
    deleted: u64,
}

impl Shared {
    fn trash_dir(&self) -> PathBuf {
        PathBuf::from(format!("{}.trashbin", self.cfg.root.display()))
    }

    /// Moves `local` (at `location`, from the user's root) into the trash bin.
    pub(super) fn trash(&self, local: &std::path::Path, location: &str) -> std::io::Result<()> {
        let dir = self.trash_dir();
        std::fs::create_dir_all(&dir)?;
        let name = location.rsplit('/').next().unwrap_or(location).to_string();
        let mut deleted = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut list = self.trashed.lock().unwrap_or_else(|p| p.into_inner());
        // Two items of one name deleted in the same second: the later one a second on.
        while dir.join(format!("{name}.d{deleted}")).exists() {
            deleted += 1;
        }
        let entry = format!("{name}.d{deleted}");
        std::fs::rename(local, dir.join(&entry))?;
        list.push(Trashed {
            entry,
            name,
            location: location.trim_matches('/').to_string(),
            deleted,
        });
        Ok(())
    }
}

fn entry_of(rest: &str) -> Option<String> {
    let e = percent_encoding::percent_decode_str(rest.trim_matches('/'))
        .decode_utf8()
        .ok()?
        .into_owned();
    (!e.is_empty() && !e.contains('/') && e != "." && e != "..").then_some(e)
}

/// `remote.php/dav/trashbin/<uid>/<rest>`.
pub(super) fn handle(shared: &Shared, req: &Request<Incoming>, prefix: &str, rest: &str) -> Resp {
    let method = req.method().as_str();
    let Some(rest) = rest.strip_prefix("/trash") else {
        return sabre_error(StatusCode::NOT_FOUND, "NotFound", "no such trash bin node");
    };
    match method {
        "PROPFIND" => {
            let list = shared.trashed.lock().unwrap_or_else(|p| p.into_inner());
            let one = entry_of(rest);
            let mut out = String::from(
                "<?xml version=\"1.0\"?>\n<d:multistatus xmlns:d=\"DAV:\" xmlns:nc=\"http://nextcloud.org/ns\">",
            );
            if one.is_none() {
                out.push_str(&format!(
                    "<d:response><d:href>{prefix}/trash/</d:href><d:propstat><d:prop>\
                     <d:resourcetype><d:collection/></d:resourcetype></d:prop>\
                     <d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
                ));
            }
            let depth = super::header(req.headers(), "depth").unwrap_or("1");
            let mut found = false;
            for t in list.iter() {
                if one.as_ref().is_some_and(|e| e != &t.entry) || (one.is_none() && depth == "0") {
                    continue;
                }
                found = true;
                let local = shared.trash_dir().join(&t.entry);
                let md = std::fs::metadata(&local).ok();
                let dir = md.as_ref().is_some_and(|m| m.is_dir());
                let size = if dir {
                    String::new()
                } else {
                    format!(
                        "<d:getcontentlength>{}</d:getcontentlength>",
                        md.as_ref().map_or(0, |m| m.len())
                    )
                };
                out.push_str(&format!(
                    "<d:response><d:href>{prefix}/trash/{}{}</d:href><d:propstat><d:prop>\
                     <d:resourcetype>{}</d:resourcetype>{size}\
                     <nc:trashbin-filename>{}</nc:trashbin-filename>\
                     <nc:trashbin-original-location>{}</nc:trashbin-original-location>\
                     <nc:trashbin-deletion-time>{}</nc:trashbin-deletion-time>\
                     </d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>",
                    crate::webdav::path::encode_segment(&t.entry),
                    if dir { "/" } else { "" },
                    if dir { "<d:collection/>" } else { "" },
                    xml_escape(&t.name),
                    xml_escape(&t.location),
                    t.deleted
                ));
            }
            if one.is_some() && !found {
                return sabre_error(StatusCode::NOT_FOUND, "NotFound", "File not found in trash");
            }
            out.push_str("</d:multistatus>");
            multistatus(out)
        }
        "MOVE" => {
            let Some(entry) = entry_of(rest) else {
                return sabre_error(StatusCode::FORBIDDEN, "Forbidden", "cannot move the trash");
            };
            let dest = super::header(req.headers(), "destination").unwrap_or("");
            if !dest.contains(&format!("{prefix}/restore/")) {
                return sabre_error(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "items of the trash bin can only be moved to restore/",
                );
            }
            let mut list = shared.trashed.lock().unwrap_or_else(|p| p.into_inner());
            let Some(i) = list.iter().position(|t| t.entry == entry) else {
                return sabre_error(StatusCode::NOT_FOUND, "NotFound", "File not found in trash");
            };
            let t = list[i].clone();
            // Back where it was; in the user's root when that folder is gone.
            let mut location = t.location.clone();
            if let Some((parent, _)) = location.rsplit_once('/') {
                if !shared.file_path(parent).is_dir() {
                    location = t.name.clone();
                }
            }
            if shared.file_path(&location).exists() {
                let (stem, ext) = match t.name.rsplit_once('.') {
                    Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
                    _ => (t.name.clone(), String::new()),
                };
                let renamed = format!("{stem} (restored){ext}");
                location = match location.rsplit_once('/') {
                    Some((parent, _)) => format!("{parent}/{renamed}"),
                    None => renamed,
                };
            }
            if std::fs::rename(
                shared.trash_dir().join(&t.entry),
                shared.file_path(&location),
            )
            .is_err()
            {
                return sabre_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Exception",
                    "restore failed",
                );
            }
            list.remove(i);
            drop(list);
            shared.record(
                &shared.cfg.user_id,
                "file_restored",
                &format!("/{location}"),
                None,
                0,
            );
            resp(StatusCode::CREATED, "")
        }
        _ => sabre_error(StatusCode::NOT_IMPLEMENTED, "NotImplemented", "not here"),
    }
}
