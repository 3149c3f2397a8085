//! Ranged GETs over plain `http://`, with the body read from the socket straight into the
//! caller's buffers.
//!
//! Through reqwest, each received byte is copied twice in user space: from the socket into
//! hyper's read buffer, then from there into the block buffer the cache keeps. For a block
//! download over plain HTTP that second copy is most of what nuage itself spends per byte, so
//! the simplest case, a `206 Partial Content` with a `Content-Length` body, is read here
//! directly into the block buffer. An error status is taken as it is (a 412 is a changed file,
//! a 401 a refused password...). Everything else (a `200`, a chunked or compressed body, a
//! redirect, a proxy, TLS) is left to reqwest: [`RawGets::get`] answers [`Answer::Other`]
//! and the caller sends the request through reqwest.
//!
//! Connections are kept alive and reused; a reused connection that the server closed
//! meanwhile is replaced once, as reqwest does for idempotent requests, and so is one that
//! stays silent for [`REUSED_SILENT`] (it may lead nowhere any more: a laptop that moved to
//! another network or woke up). Every connect and every read has a time limit.

use bytes::BufMut;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections kept for reuse.
const IDLE_MAX: usize = 32;
/// Idle connections older than this are closed rather than reused (servers close theirs
/// after 5 to 75 seconds).
const IDLE_FOR: Duration = Duration::from_secs(30);
/// A reused connection whose answer has not begun after this long is given up for a new one
/// (the request is sent again there; a slow server then answers on the new connection).
const REUSED_SILENT: Duration = Duration::from_secs(3);
/// Largest response head read.
const HEAD_MAX: usize = 64 << 10;

/// What came of a raw GET.
pub(crate) enum Answer {
    /// A `206` for the asked range: its body.
    Body(RawBody),
    /// An error status (4xx, 5xx), taken as it is.
    Refused(u16),
    /// Anything else (a `200`, a redirect, a chunked or compressed body, not HTTP): to be
    /// asked again through reqwest.
    Other,
}

/// Why a raw GET failed before the server answered it (the caller maps these).
#[derive(Debug)]
pub(crate) enum RawError {
    /// No connection could be made (the reason).
    Connect(String),
    /// The server stayed silent longer than the read time limit.
    Timeout,
}

/// Plain-HTTP ranged GETs to one server.
pub(crate) struct RawGets {
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    connect_timeout: Duration,
    read_timeout: Duration,
    idle: Mutex<Vec<(TcpStream, Instant)>>,
}

impl std::fmt::Debug for RawGets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawGets")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// True when a proxy variable is set: reqwest would use it, so the raw path must not.
fn proxy_configured() -> bool {
    ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

impl RawGets {
    /// Raw GETs for the server of `root`, when it is plain HTTP without a proxy.
    pub(crate) fn for_root(
        root: &reqwest::Url,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Option<RawGets> {
        if root.scheme() != "http" || proxy_configured() {
            return None;
        }
        let host = root.host_str()?.to_string();
        let port = root.port_or_known_default()?;
        let authority = match root.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        // An IPv6 literal is written in brackets in URLs, without them for connect().
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Some(RawGets {
            host,
            port,
            authority,
            connect_timeout,
            read_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The most recently used idle connection; older ones are closed.
    fn take_idle(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(_, since)| since.elapsed() < IDLE_FOR);
        idle.pop().map(|(s, _)| s)
    }

    /// Closes every idle connection: the next requests open new ones.
    pub(crate) fn forget_idle(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn give_back(&self, s: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_MAX {
            idle.push((s, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<TcpStream, RawError> {
        let what = format!("{}:{}", self.host, self.port);
        let s = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| RawError::Timeout)?
        .map_err(|e| RawError::Connect(format!("{what}: {e}")))?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }

    /// Sends `GET target` for `len` bytes at `start` (with `If-Match: etag` and the given
    /// `Authorization` and `Cookie`) and reads the response head.
    pub(crate) async fn get(
        self: &std::sync::Arc<Self>,
        target: &str,
        (start, len, size): (u64, u64, Option<u64>),
        etag: Option<&str>,
        (authorization, cookie): (Option<&str>, Option<&str>),
    ) -> Result<Answer, RawError> {
        let mut req = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nuage/{}\r\nAccept: */*\r\n\
             Accept-Encoding: identity\r\nRange: bytes={}-{}\r\n",
            self.authority,
            env!("CARGO_PKG_VERSION"),
            start,
            start + len.saturating_sub(1)
        );
        if let Some(tag) = etag {
            req.push_str(&format!("If-Match: {tag}\r\n"));
        }
        if let Some(a) = authorization {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        if let Some(c) = cookie {
            req.push_str(&format!("Cookie: {c}\r\n"));
        }
        req.push_str("\r\n");
        // A reused connection may have been closed by the server meanwhile, or lead nowhere:
        // when it fails or stays silent before any byte of an answer, the request goes once
        // more on a new connection.
        if let Some(s) = self.take_idle() {
            let silent_for = REUSED_SILENT.min(self.read_timeout);
            match self
                .exchange(s, req.as_bytes(), (start, len, size), silent_for)
                .await
            {
                Ok(r) => return Ok(r),
                Err(Failure::Early) => {}
                Err(Failure::Late(e)) => return Err(e),
            }
        }
        let s = self.connect().await?;
        match self
            .exchange(s, req.as_bytes(), (start, len, size), self.read_timeout)
            .await
        {
            Ok(r) => Ok(r),
            Err(Failure::Early) => Err(RawError::Connect(format!(
                "{}:{}: the connection closed before an answer",
                self.host, self.port
            ))),
            Err(Failure::Late(e)) => Err(e),
        }
    }

    /// Sends `req` on `s` and reads the answer's head; silence before its first byte longer
    /// than `silent_for` is an early failure when shorter than the read timeout.
    async fn exchange(
        self: &std::sync::Arc<Self>,
        mut s: TcpStream,
        req: &[u8],
        (start, len, size): (u64, u64, Option<u64>),
        silent_for: Duration,
    ) -> Result<Answer, Failure> {
        if s.write_all(req).await.is_err() {
            return Err(Failure::Early);
        }
        let mut head: Vec<u8> = Vec::with_capacity(8 << 10);
        loop {
            let first = head.is_empty() && silent_for < self.read_timeout;
            let limit = if first { silent_for } else { self.read_timeout };
            let n = match tokio::time::timeout(limit, s.read_buf(&mut head)).await {
                Ok(n) => n,
                Err(_) if first => return Err(Failure::Early),
                Err(_) => return Err(Failure::Late(RawError::Timeout)),
            };
            match n {
                Ok(0) | Err(_) if head.is_empty() => return Err(Failure::Early),
                Ok(0) | Err(_) => {
                    return Err(Failure::Late(RawError::Connect(format!(
                        "{}:{}: the connection closed in the middle of an answer",
                        self.host, self.port
                    ))))
                }
                Ok(_) => {}
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&head) {
                Ok(httparse::Status::Complete(used)) => {
                    if let Some(code) = resp.code.filter(|c| *c >= 400) {
                        // The connection is dropped with the unread error body.
                        return Ok(Answer::Refused(code));
                    }
                    let Some((length, keep_alive)) = plan_body(&resp, start, len, size) else {
                        return Ok(Answer::Other);
                    };
                    let etag = header(&resp, "etag").map(str::to_string);
                    let rest = head.split_off(used);
                    return Ok(Answer::Body(RawBody {
                        etag,
                        stream: Some(s),
                        rest,
                        rest_pos: 0,
                        remaining: length,
                        keep_alive,
                        read_timeout: self.read_timeout,
                        owner: self.clone(),
                    }));
                }
                Ok(httparse::Status::Partial) if head.len() < HEAD_MAX => {}
                // Not HTTP as reqwest would accept it either way: let it say so.
                _ => return Ok(Answer::Other),
            }
        }
    }
}

/// A failed exchange: before any byte of an answer (a closed reused connection), or later.
enum Failure {
    Early,
    Late(RawError),
}

/// The value of the answer's header `name`, trimmed.
fn header<'a>(resp: &httparse::Response<'_, 'a>, name: &str) -> Option<&'a str> {
    resp.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

/// The body length and whether the connection may be reused, when the answer is a `206` with
/// exactly the requested range (of a file of `size` bytes, when given) and a plain
/// `Content-Length` body.
fn plan_body(
    resp: &httparse::Response<'_, '_>,
    start: u64,
    len: u64,
    size: Option<u64>,
) -> Option<(u64, bool)> {
    if resp.code != Some(206) {
        return None;
    }
    let header = |name: &str| header(resp, name);
    if header("transfer-encoding").is_some()
        || header("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return None;
    }
    let length: u64 = header("content-length")?.parse().ok()?;
    // The range asked for (the last block may end earlier), of a file of the size expected.
    let (first, last, total) = super::parse_content_range(header("content-range")?)?;
    if super::other_size(total, size).is_some() {
        return None;
    }
    if first != start || last < first || last - first + 1 != length || length > len {
        return None;
    }
    let close = header("connection")
        .is_some_and(|c| c.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
    Some((length, !close && resp.version == Some(1)))
}

/// The body of a raw `206` answer, read into the caller's buffers. The connection goes back
/// to the idle set once the whole body was read.
pub(crate) struct RawBody {
    /// The answer's `ETag` header.
    pub(crate) etag: Option<String>,
    stream: Option<TcpStream>,
    /// Body bytes that arrived with the head.
    rest: Vec<u8>,
    rest_pos: usize,
    /// Body bytes not yet handed out.
    remaining: u64,
    keep_alive: bool,
    read_timeout: Duration,
    owner: std::sync::Arc<RawGets>,
}

impl RawBody {
    /// Puts at most `max` bytes of the body into `buf` (straight from the socket into its
    /// free space, which the caller makes large enough: a `Vec` with spare capacity, or a
    /// slice). `Ok(0)` at the end of the body; an error when the connection ends before it.
    pub(crate) async fn read_into<B: BufMut>(
        &mut self,
        buf: &mut B,
        max: usize,
    ) -> std::io::Result<usize> {
        let want = (max as u64).min(self.remaining) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = if self.rest_pos < self.rest.len() {
            let n = want.min(self.rest.len() - self.rest_pos);
            buf.put_slice(&self.rest[self.rest_pos..self.rest_pos + n]);
            self.rest_pos += n;
            n
        } else {
            let s = self
                .stream
                .as_mut()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
            let mut limited = (&mut *buf).limit(want);
            let n = tokio::time::timeout(self.read_timeout, s.read_buf(&mut limited))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if n == 0 {
                self.stream = None;
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            n
        };
        self.remaining -= n as u64;
        if self.remaining == 0 && self.rest_pos >= self.rest.len() && self.keep_alive {
            if let Some(s) = self.stream.take() {
                self.owner.give_back(s);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::plan_body;

    fn plan(head: &str, start: u64, len: u64) -> Option<(u64, bool)> {
        plan_of(head, start, len, 1000)
    }

    fn plan_of(head: &str, start: u64, len: u64, size: u64) -> Option<(u64, bool)> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp.parse(head.as_bytes()).expect("parse").is_complete());
        plan_body(&resp, start, len, Some(size))
    }

    #[test]
    fn only_a_plain_partial_answer_for_the_asked_range_is_read_raw() {
        let ok = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-199/1000\r\nContent-Length: 100\r\n\r\n";
        assert_eq!(plan(ok, 100, 100), Some((100, true)));
        // The end of the file: fewer bytes than asked.
        let tail = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 900-999/1000\r\nContent-Length: 100\r\n\r\n";
        assert_eq!(plan(tail, 900, 4096), Some((100, true)));
        let close = "HTTP/1.1 206 Partial Content\r\nConnection: close\r\nContent-Range: bytes 0-9/10\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(plan_of(close, 0, 10, 10), Some((10, false)));
        let http10 = "HTTP/1.0 206 Partial Content\r\nContent-Range: bytes 0-9/10\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(plan_of(http10, 0, 10, 10), Some((10, false)));
        // A server that does not know the length yet.
        let unknown = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/*\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(plan_of(unknown, 0, 10, 10), Some((10, true)));
        for other in [
            // The whole file, a changed file, a refused login, a redirect.
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            "HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
            // Another range, a length that does not match it, no length, chunked, gzip.
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-99/1000\r\nContent-Length: 100\r\n\r\n",
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-199/1000\r\nContent-Length: 50\r\n\r\n",
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-199/1000\r\n\r\n",
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-199/1000\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-199/1000\r\nContent-Length: 100\r\nContent-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-299/1000\r\nContent-Length: 200\r\n\r\n",
            // A file of another size now (it changed on the server).
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-199/2000\r\nContent-Length: 100\r\n\r\n",
        ] {
            assert_eq!(plan(other, 100, 100), None, "{other}");
        }
        // Not checked against a size (a conditional request: the etag tells a change).
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let other_size = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-199/2000\r\nContent-Length: 100\r\n\r\n";
        assert!(resp
            .parse(other_size.as_bytes())
            .expect("parse")
            .is_complete());
        assert_eq!(plan_body(&resp, 100, 100, None), Some((100, true)));
    }
}
