//! Writing requests: PUT (streamed from a local file), MKCOL, DELETE, MOVE, and Nextcloud
//! chunked upload (nextcloud-protocol.md §4, §5, §6).
//!
//! Every write that replaces or creates content is conditional: `If-Match: <etag>` when it
//! replaces a known version, `If-None-Match: *` when it creates, so a newer server copy is never
//! overwritten silently (the caller turns the 412 into a conflict copy).

use super::{path, xml, DavClient, DavError, RemotePath};
use bytes::Bytes;
use futures_core::Stream;
use reqwest::{header, Method, StatusCode, Url};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Preconditions and metadata of an upload.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Replace only this version (`If-Match`).
    pub if_match: Option<String>,
    /// Create only (`If-None-Match: *`).
    pub create_only: bool,
    /// Modification time to keep (`X-OC-Mtime`, Nextcloud).
    pub mtime: Option<SystemTime>,
}

/// What the server says about the uploaded file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutResult {
    /// The new etag, when the response carries one (`OC-ETag` first, then `ETag`).
    pub etag: Option<String>,
    /// The file's id, when the response carries one (Nextcloud's `OC-FileId`).
    pub fileid: Option<u64>,
}

/// A body stream that counts the bytes handed to the connection.
struct Counted<S> {
    inner: S,
    sent: Arc<AtomicU64>,
}

impl<S> Stream for Counted<S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    type Item = std::io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let p = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(b))) = &p {
            self.sent.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        p
    }
}

/// Bytes read ahead of the network by an upload.
const READ_PIECE: usize = 1 << 20;

/// Bodies up to this size are read whole before they are sent.
const SMALL_BODY: u64 = 256 << 10;

/// The body of an upload: `len` bytes of `file` from `offset`, read ahead on a blocking thread
/// (a few pieces of 1 MiB) while the previous ones are being sent.
async fn file_body(
    file: &Path,
    offset: u64,
    len: u64,
    sent: Arc<AtomicU64>,
) -> Result<reqwest::Body, DavError> {
    let f = std::fs::File::open(file)
        .map_err(|e| DavError::Config(format!("cannot read {}: {e}", file.display())))?;
    if len <= SMALL_BODY {
        // Read at once, from the page cache, and sent as one body: a stream, a thread
        // reading ahead and `O_DIRECT` only cost time for so few bytes.
        let body = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len as usize];
            crate::cache::read_exact_at(&f, &mut buf, offset).map(|()| buf)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| DavError::Config(format!("cannot read {}: {e}", file.display())))?;
        sent.fetch_add(len, Ordering::Relaxed);
        return Ok(reqwest::Body::from(body));
    }
    let mut direct = open_direct(file);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut pos = 0u64;
        while pos < len {
            let n = (len - pos).min(READ_PIECE as u64) as usize;
            let at = offset + pos;
            let buffered = || {
                let mut buf = vec![0u8; n];
                crate::cache::read_exact_at(&f, &mut buf, at).map(|()| Bytes::from(buf))
            };
            let piece = match direct.as_ref().filter(|_| at.is_multiple_of(ALIGN as u64)) {
                Some(d) => match read_direct(d, at, n) {
                    // The filesystem took O_DIRECT at open but not these reads: read normally.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                        direct = None;
                        buffered()
                    }
                    other => other,
                },
                None => buffered(),
            }
            .inspect(|_| pos += n as u64);
            let failed = piece.is_err();
            // The receiver is gone when the request ended early: stop reading.
            if tx.blocking_send(piece).is_err() || failed {
                break;
            }
        }
    });
    Ok(reqwest::Body::wrap_stream(Counted {
        inner: tokio_stream_of(rx),
        sent,
    }))
}

/// Alignment of memory, offset and length for `O_DIRECT` reads.
const ALIGN: usize = 4096;

/// A descriptor on `file` that reads around the page cache (Linux `O_DIRECT`), when the
/// filesystem allows it. An upload reads its data once: going around the page cache, it takes
/// no memory for it, and a large file that was dropped from memory after its sync (see
/// `writeback::drop_pages`) is not read back into it.
#[cfg(target_os = "linux")]
fn open_direct(file: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(file)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_file: &Path) -> Option<std::fs::File> {
    None
}

/// `n` bytes at `off` (aligned) through an `O_DIRECT` descriptor, into an aligned buffer.
#[cfg(unix)]
fn read_direct(f: &std::fs::File, off: u64, n: usize) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let want = n.div_ceil(ALIGN) * ALIGN;
    let mut buf = vec![0u8; want + ALIGN];
    let pad = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
    let mut got = 0;
    while got < n {
        // Offsets and lengths stay aligned: `got` only falls short of a multiple of ALIGN at
        // the end of the file.
        let k = f.read_at(&mut buf[pad + got..pad + want], off + got as u64)?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += k;
        if got % ALIGN != 0 && got < n {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(Bytes::from(buf).slice(pad..pad + n))
}

#[cfg(not(unix))]
fn read_direct(_f: &std::fs::File, _off: u64, _n: usize) -> std::io::Result<Bytes> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// A stream over a channel's messages.
fn tokio_stream_of<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Unpin + Send + 'static
where
    T: Send + 'static,
{
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn mtime_header(t: SystemTime) -> Option<String> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    // Nextcloud rejects values at or below 86400 (§4.1).
    (secs > 86400).then(|| secs.to_string())
}

/// The strong form of an etag (without `W/`). Apache marks the etag of a file changed within
/// the last second as weak and later reports the same value as strong; a weak etag never
/// matches in `If-Match` (RFC 9110 §13.1.1), so the strong form is sent and compared. A server
/// whose weak etags mean something else answers 412, which becomes a conflict copy: nothing is
/// lost.
pub fn strong_etag(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// `Ok` for a 2xx answer, else the error its status means.
fn success(resp: &reqwest::Response, method: &Method, what: &str) -> Result<(), DavError> {
    let st = resp.status();
    if st.is_success() {
        Ok(())
    } else {
        Err(DavError::from_status(st, method, what))
    }
}

/// The numeric file id in `OC-FileId` (`00000123ocinstanceid`: the digits before the
/// instance id).
fn fileid_of(resp: &reqwest::Response) -> Option<u64> {
    fileid_in(resp.headers())
}

fn fileid_in(h: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = h.get("OC-FileId")?.to_str().ok()?;
    let digits: String = v.trim().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What a successful answer to a write of a whole file tells. WebDAV servers answer 201
/// (created) or 204 (replaced); a 200 is also what a proxy or network portal answering in
/// the server's place gives, with the etag of its own page perhaps: such an answer's etag
/// and file id are not taken, and the caller then looks for the file in the server's listing.
fn written(resp: &reqwest::Response) -> PutResult {
    if resp.status() == StatusCode::OK {
        return PutResult {
            etag: None,
            fileid: None,
        };
    }
    PutResult {
        etag: etag_of(resp),
        fileid: fileid_of(resp),
    }
}

fn etag_of(resp: &reqwest::Response) -> Option<String> {
    let h = resp.headers();
    h.get("OC-ETag")
        .or_else(|| h.get(header::ETAG))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl DavClient {
    fn method(name: &str) -> Result<Method, DavError> {
        Method::from_bytes(name.as_bytes()).map_err(|e| DavError::Config(e.to_string()))
    }

    /// Uploads `len` bytes of `file` from `offset` as the content of `p`.
    pub async fn put_file(
        &self,
        p: &RemotePath,
        file: &Path,
        offset: u64,
        len: u64,
        opts: &PutOptions,
        sent: Arc<AtomicU64>,
    ) -> Result<PutResult, DavError> {
        let what = p.to_string();
        let mut rb = self
            .request(Method::PUT, self.url(p, false))
            .header(header::CONTENT_LENGTH, len)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(file_body(file, offset, len, sent).await?);
        if let Some(tag) = &opts.if_match {
            rb = rb.header(header::IF_MATCH, strong_etag(tag));
        }
        if opts.create_only {
            rb = rb.header(header::IF_NONE_MATCH, "*");
        }
        if let Some(m) = opts.mtime.and_then(mtime_header) {
            rb = rb.header("X-OC-Mtime", m);
        }
        let resp = self.send(rb).await?;
        let st = resp.status();
        if !st.is_success() {
            return Err(DavError::from_status(st, &Method::PUT, &what));
        }
        Ok(written(&resp))
    }

    /// Creates a folder. 405 (exists) answers `Status { 405 }`.
    pub async fn mkcol(&self, p: &RemotePath) -> Result<(), DavError> {
        let m = Self::method("MKCOL")?;
        let resp = self
            .send(self.request(m.clone(), self.url(p, true)))
            .await?;
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED
            && super::was_resent(&resp)
            && self.is_folder(p).await
        {
            // There already: made by the first request, whose answer was lost.
            return Ok(());
        }
        success(&resp, &m, &p.to_string())
    }

    /// Creates the folders above `p` that the server lacks (say, a colleague deleted the folder
    /// while `p` waited for its upload), from the top down. Answers how many were created.
    pub async fn make_parents(&self, p: &RemotePath) -> Result<usize, DavError> {
        let mut chain = Vec::new();
        let mut cur = p.parent();
        while let Some(d) = cur.filter(|d| !d.is_root()) {
            cur = d.parent();
            chain.push(d);
        }
        let mut made = 0;
        for d in chain.into_iter().rev() {
            match self.mkcol(&d).await {
                Ok(()) => made += 1,
                // There already.
                Err(DavError::Status { status: 405, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(made)
    }

    /// Deletes a file or folder (a folder recursively on the server: check emptiness first).
    pub async fn delete(
        &self,
        p: &RemotePath,
        dir: bool,
        if_match: Option<&str>,
    ) -> Result<(), DavError> {
        let mut rb = self.request(Method::DELETE, self.url(p, dir));
        if let Some(tag) = if_match {
            rb = rb.header(header::IF_MATCH, strong_etag(tag));
        }
        let resp = self.send(rb).await?;
        if resp.status() == StatusCode::NOT_FOUND && super::was_resent(&resp) {
            // Deleted by the first request, whose answer was lost.
            return Ok(());
        }
        success(&resp, &Method::DELETE, &p.to_string())
    }

    /// Moves `from` to `to`. With `overwrite == false` an existing target answers 412.
    pub async fn move_to(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        dir: bool,
        overwrite: bool,
    ) -> Result<Option<String>, DavError> {
        let m = Self::method("MOVE")?;
        let rb = self
            .request(m.clone(), self.url(from, dir))
            .header("Destination", self.url(to, dir).as_str())
            .header("Overwrite", if overwrite { "T" } else { "F" });
        let resp = self.send(rb).await?;
        let st = resp.status();
        if st.is_success() {
            return Ok(etag_of(&resp));
        }
        let done_before = matches!(st, StatusCode::NOT_FOUND | StatusCode::PRECONDITION_FAILED)
            && super::was_resent(&resp)
            && self.moved(from, to).await;
        if done_before {
            // Moved by the first request, whose answer was lost.
            return Ok(None);
        }
        Err(DavError::from_status(st, &m, &from.to_string()))
    }

    /// Whether the server lists `p` as a folder.
    pub async fn is_folder(&self, p: &RemotePath) -> bool {
        self.propfind(p, super::Depth::Zero)
            .await
            .is_ok_and(|v| v.iter().any(|e| e.path == *p && e.is_dir))
    }

    /// Whether `from` is gone and `to` is there.
    async fn moved(&self, from: &RemotePath, to: &RemotePath) -> bool {
        matches!(
            self.propfind(from, super::Depth::Zero).await,
            Err(DavError::NotFound(_))
        ) && self.propfind(to, super::Depth::Zero).await.is_ok()
    }

    /// Sets the modification time with PROPPATCH `d:lastmodified` (Nextcloud, §6.4).
    pub async fn set_mtime(&self, p: &RemotePath, t: SystemTime) -> Result<(), DavError> {
        let Some(secs) = mtime_header(t) else {
            return Ok(());
        };
        let m = Self::method("PROPPATCH")?;
        let body = format!(
            "<?xml version=\"1.0\"?>\n<d:propertyupdate xmlns:d=\"DAV:\"><d:set><d:prop>\
             <d:lastmodified>{secs}</d:lastmodified></d:prop></d:set></d:propertyupdate>"
        );
        let resp = self
            .send(
                self.request(m.clone(), self.url(p, false))
                    .header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
                    .body(body),
            )
            .await?;
        success(&resp, &m, &p.to_string())
    }

    /// The Nextcloud upload area (`…/remote.php/dav/uploads/<uid>/`), when known.
    pub fn uploads_root(&self) -> Option<&Url> {
        self.uploads.as_ref()
    }

    fn upload_url(&self, id: &str, chunk: Option<&str>) -> Result<Url, DavError> {
        let root = self
            .uploads
            .as_ref()
            .ok_or_else(|| DavError::Config("this server has no chunked upload area".into()))?;
        let mut s = format!("{}{}/", root.as_str(), path::encode_segment(id));
        if let Some(c) = chunk {
            s.push_str(&path::encode_segment(c));
        }
        Url::parse(&s).map_err(|e| DavError::Config(e.to_string()))
    }

    /// Starts a chunked upload session `id` for destination `dest` (§5.2 step 1).
    pub async fn chunk_start(
        &self,
        id: &str,
        dest: &RemotePath,
        total: u64,
    ) -> Result<(), DavError> {
        let m = Self::method("MKCOL")?;
        let rb = self
            .request(m.clone(), self.upload_url(id, None)?)
            .header("Destination", self.url(dest, false).as_str())
            .header("OC-Total-Length", total);
        let resp = self.send(rb).await?;
        let st = resp.status();
        if st.is_success() || st == StatusCode::METHOD_NOT_ALLOWED {
            Ok(())
        } else {
            Err(DavError::from_status(st, &m, "upload session"))
        }
    }

    /// The chunks already on the server for session `id` (number, size); `None` when the
    /// session does not exist (expired or never created).
    pub async fn chunk_list(&self, id: &str) -> Result<Option<Vec<(u32, u64)>>, DavError> {
        let m = Self::method("PROPFIND")?;
        let resp = self
            .send(
                self.request(m.clone(), self.upload_url(id, None)?)
                    .header("Depth", "1")
                    .header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
                    .body(xml::PROPFIND_BODY),
            )
            .await?;
        let st = resp.status();
        if st == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if st != StatusCode::MULTI_STATUS {
            return Err(DavError::from_status(st, &m, "upload session"));
        }
        let body = resp
            .text()
            .await
            .map_err(|e| DavError::from_reqwest(&e, self.root.as_str()))?;
        let mut out = Vec::new();
        for r in xml::parse_multistatus(&body)? {
            if r.is_dir {
                continue;
            }
            let name = r
                .href
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("");
            if let Ok(n) = name.parse::<u32>() {
                out.push((n, r.content_length.unwrap_or(0)));
            }
        }
        out.sort();
        Ok(Some(out))
    }

    /// Uploads chunk number `n` (from 1) of session `id` (§5.2 step 2).
    #[allow(clippy::too_many_arguments)]
    pub async fn chunk_put(
        &self,
        id: &str,
        n: u32,
        dest: &RemotePath,
        total: u64,
        file: &Path,
        offset: u64,
        len: u64,
        sent: Arc<AtomicU64>,
    ) -> Result<(), DavError> {
        let rb = self
            .request(Method::PUT, self.upload_url(id, Some(&format!("{n:05}")))?)
            .header("Destination", self.url(dest, false).as_str())
            .header("OC-Total-Length", total)
            .header(header::CONTENT_LENGTH, len)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(file_body(file, offset, len, sent).await?);
        let resp = self.send(rb).await?;
        success(&resp, &Method::PUT, "upload chunk")
    }

    /// Assembles session `id` into `dest` (§5.2 step 3). `if_match` guards the destination
    /// with an RFC 4918 `If` header, as the desktop client does.
    pub async fn chunk_finish(
        &self,
        id: &str,
        dest: &RemotePath,
        total: u64,
        mtime: Option<SystemTime>,
        if_match: Option<&str>,
    ) -> Result<PutResult, DavError> {
        let m = Self::method("MOVE")?;
        let dest_url = self.url(dest, false);
        let mut rb = self
            .request(m.clone(), self.upload_url(id, Some(".file"))?)
            .header("Destination", dest_url.as_str())
            .header("OC-Total-Length", total)
            // Assembly of large files takes time on the server (§5.2: ~3 min per GB).
            .timeout(Duration::from_secs(180 + total / (1 << 30) * 180));
        if let Some(t) = mtime.and_then(mtime_header) {
            rb = rb.header("X-OC-Mtime", t);
        }
        if let Some(tag) = if_match {
            rb = rb.header(
                "If",
                format!("<{}> ([{}])", dest_url.as_str(), strong_etag(tag)),
            );
        }
        let resp = self.send(rb).await?;
        let st = resp.status();
        let refusal = matches!(st.as_u16(), 401 | 403 | 412 | 413);
        if st.is_client_error() && !refusal && super::was_resent(&resp) {
            // Sent again after its connection broke: the first request may have assembled
            // the file (the session is gone: 404), or may be assembling it still (the
            // session half gone or locked: 400, 409, 423). The caller looks at what the
            // server holds.
            return Err(DavError::Connect(format!(
                "{dest}: the answer to the assembly of its upload was lost (then HTTP {})",
                st.as_u16()
            )));
        }
        if !st.is_success() {
            return Err(DavError::from_status(st, &m, &dest.to_string()));
        }
        Ok(written(&resp))
    }

    /// Abandons session `id`.
    pub async fn chunk_abort(&self, id: &str) -> Result<(), DavError> {
        let resp = self
            .send(self.request(Method::DELETE, self.upload_url(id, None)?))
            .await?;
        let st = resp.status();
        if st.is_success() || st == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(DavError::from_status(st, &Method::DELETE, "upload session"))
        }
    }
}

/// One file of a bulk upload.
#[derive(Debug, Clone)]
pub struct BulkItem {
    /// Where it goes.
    pub path: RemotePath,
    /// Its whole content.
    pub data: Vec<u8>,
    /// Its modification time.
    pub mtime: SystemTime,
}

impl DavClient {
    /// Uploads several new files in one `POST .../dav/bulk` (§5.6). Answers, per path, the new
    /// etag or the server's message for that file; `Err` when the request as a whole failed
    /// (`NotFound` when the server has no bulk endpoint).
    pub async fn bulk_upload(
        &self,
        items: &[BulkItem],
    ) -> Result<Vec<Result<PutResult, String>>, DavError> {
        let (url, prefix) = self
            .bulk
            .clone()
            .ok_or_else(|| DavError::Config("bulk upload is not enabled".into()))?;
        let boundary = format!(
            "nuage-bulk-{:x}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let full = |p: &RemotePath| {
            if prefix.is_empty() {
                format!("/{}", p.as_str())
            } else {
                format!("/{}/{}", prefix, p.as_str())
            }
        };
        let mut body = Vec::new();
        for it in items {
            let secs = it
                .mtime
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nX-File-Path: {}\r\nContent-Length: {}\r\nOC-Checksum: SHA1:{}\r\nX-File-MD5: {:x}\r\nX-OC-Mtime: {secs}\r\nX-File-Mtime: {secs}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    full(&it.path),
                    it.data.len(),
                    sha1_smol::Sha1::from(&it.data).digest(),
                    md5::compute(&it.data),
                )
                .as_bytes(),
            );
            body.extend_from_slice(&it.data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let rb = self
            .request(Method::POST, url)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/related; boundary={boundary}"),
            )
            .timeout(self.request_timeout.max(Duration::from_secs(60)))
            .body(body);
        let resp = self.send(rb).await?;
        let st = resp.status();
        if !st.is_success() {
            return Err(DavError::from_status(st, &Method::POST, "bulk upload"));
        }
        let v = super::json_answer(resp, "bulk upload").await?;
        Ok(items
            .iter()
            .map(|it| match v.get(full(&it.path)) {
                Some(e) if e.get("error").and_then(|x| x.as_bool()) == Some(false) => {
                    Ok(PutResult {
                        etag: e
                            .get("etag")
                            .and_then(|x| x.as_str())
                            .filter(|x| !x.is_empty())
                            .map(str::to_string),
                        // A string in the reference's example (§5.6); a number also taken.
                        fileid: e.get("fileid").and_then(|x| match x {
                            serde_json::Value::String(s) => s.parse().ok(),
                            other => other.as_u64(),
                        }),
                    })
                }
                Some(e) => Err(e
                    .get("message")
                    .and_then(|x| x.as_str())
                    .unwrap_or("refused by the server")
                    .to_string()),
                None => Err("the bulk upload answer does not mention this file".to_string()),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::fileid_in;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn the_file_id_is_the_digits_before_the_instance_id() {
        let mut h = HeaderMap::new();
        assert_eq!(fileid_in(&h), None);
        h.insert("OC-FileId", HeaderValue::from_static("00000123oc9a8b7c6d"));
        assert_eq!(fileid_in(&h), Some(123));
        h.insert("OC-FileId", HeaderValue::from_static("ocnodigits"));
        assert_eq!(fileid_in(&h), None);
    }
}
