//! Bulk upload (nextcloud-protocol.md §5.6): `POST /remote.php/dav/bulk` with a
//! `multipart/related` body. Each part carries `X-File-Path` (from the user's root; parents
//! must exist), `Content-Length`, `OC-Checksum: SHA1:…` and/or `X-File-MD5`, and optionally
//! `X-OC-Mtime`/`X-File-Mtime`. The answer is 200 with a JSON object keyed by path, each entry
//! `{"error":false,"etag":…}` or `{"error":true,"message":…}`.

use std::collections::HashMap;
use std::path::Path;

/// One part of the body.
pub(super) struct Part {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Splits a `multipart/related` body. `None` when it is malformed.
pub(super) fn parse(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut pos = find(body, delim.as_bytes(), 0)?;
    loop {
        pos += delim.len();
        if body.get(pos..pos + 2) == Some(b"--") {
            return Some(parts);
        }
        // CRLF after the delimiter.
        pos = skip_crlf(body, pos)?;
        let head_end = find(body, b"\r\n\r\n", pos)?;
        let head = std::str::from_utf8(&body[pos..head_end]).ok()?;
        let mut headers = HashMap::new();
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':')?;
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let start = head_end + 4;
        let len: usize = headers.get("content-length")?.parse().ok()?;
        let end = start.checked_add(len)?;
        let data = body.get(start..end)?.to_vec();
        parts.push(Part {
            headers,
            body: data,
        });
        pos = skip_crlf(body, end)?;
        if body.get(pos..pos + delim.len()) != Some(delim.as_bytes()) {
            return None;
        }
    }
}

fn skip_crlf(b: &[u8], pos: usize) -> Option<usize> {
    (b.get(pos..pos + 2) == Some(b"\r\n")).then_some(pos + 2)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Why a part's content does not match its checksums, if it does not.
pub(super) fn checksum_problem(p: &Part) -> Option<String> {
    let sha1 = p
        .headers
        .get("oc-checksum")
        .and_then(|v| v.strip_prefix("SHA1:").map(str::to_ascii_lowercase));
    let md5 = p.headers.get("x-file-md5").map(|v| v.to_ascii_lowercase());
    if sha1.is_none() && md5.is_none() {
        return Some("no checksum given".into());
    }
    if let Some(s) = sha1 {
        if sha1_smol::Sha1::from(&p.body).digest().to_string() != s {
            return Some("the SHA1 checksum does not match the content".into());
        }
    }
    if let Some(m) = md5 {
        if format!("{:x}", md5::compute(&p.body)) != m {
            return Some("the MD5 checksum does not match the content".into());
        }
    }
    None
}

/// Writes one part's file under `root`; answers the message of the failure.
pub(super) fn store(root: &Path, rel: &[String], p: &Part) -> Result<(), String> {
    let mut target = root.to_path_buf();
    for s in rel {
        target.push(s);
    }
    let parent = target.parent().ok_or_else(|| "invalid path".to_string())?;
    if !parent.is_dir() {
        return Err("the parent folder does not exist".into());
    }
    if target.is_dir() {
        return Err("a folder has that name".into());
    }
    // Named like the server's other temporary files (tests skip `.fake-upload-*`).
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = parent.join(format!(
        ".fake-upload-bulk-{}",
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&tmp, &p.body).map_err(|e| e.to_string())?;
    let mtime = p
        .headers
        .get("x-oc-mtime")
        .or_else(|| p.headers.get("x-file-mtime"))
        .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
        .filter(|s| *s > 86400);
    if let Some(secs) = mtime {
        if let Ok(f) = std::fs::File::options().write(true).open(&tmp) {
            let _ = f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        }
    }
    std::fs::rename(&tmp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts_and_checks_sums() {
        let body = b"--b1\r\nX-File-Path: /a.txt\r\nContent-Length: 3\r\nOC-Checksum: SHA1:a9993e364706816aba3e25717850c26c9cd0d89d\r\n\r\nabc\r\n--b1\r\nX-File-Path: /b.txt\r\nContent-Length: 0\r\nX-File-MD5: d41d8cd98f00b204e9800998ecf8427e\r\n\r\n\r\n--b1--\r\n";
        let parts = parse(body, "b1").expect("parse");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, b"abc");
        assert!(checksum_problem(&parts[0]).is_none());
        assert!(checksum_problem(&parts[1]).is_none());
        assert!(parse(b"--b1\r\nContent-Length: 9\r\n\r\nabc\r\n--b1--", "b1").is_none());
    }
}
