//! HTTP and XML only: the WebDAV client.
//!
//! `webdav` knows nothing about inodes or blocks. It turns [`RemotePath`]s into requests against
//! one DAV root (a Nextcloud `remote.php/dav/files/<uid>/` folder or any WebDAV collection), and
//! answers with [`Entry`]s or response bodies. Every request has bounded connect and read
//! timeouts so a dead server never hangs a caller. Credentials are only ever placed in the
//! `Authorization` header; [`Secret`] never prints its value.

mod digest;
pub mod nextcloud;
pub mod path;
mod rawget;
mod write;
pub mod xml;

pub use path::RemotePath;
pub use write::{strong_etag, BulkItem, PutOptions, PutResult};

use crate::error::{Error, ErrorKind};
use reqwest::{header, Method, StatusCode, Url};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

/// A password or app password. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// User name and password for HTTP Basic authentication.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The login name.
    pub user: String,
    /// The (app) password.
    pub password: Secret,
}

/// The credentials of a mount, shared by every clone of its [`DavClient`], and whether the
/// server refused them. Once refused (a revoked or changed app password), requests fail at
/// once without reaching the server: repeating a refused login only feeds the server's
/// brute-force throttling (nextcloud-protocol.md §7.6). New credentials reopen the gate.
#[derive(Debug, Default)]
pub struct AuthGate {
    refused: std::sync::atomic::AtomicBool,
    creds: std::sync::RwLock<Option<Credentials>>,
    /// The server's Digest challenge, once it asked for Digest instead of Basic.
    digest: std::sync::RwLock<Option<std::sync::Arc<digest::Challenge>>>,
    /// The server asked for Basic (over TLS, Basic is sent from the first request).
    basic: std::sync::atomic::AtomicBool,
}

/// The credentials a request carried.
#[derive(Debug, PartialEq)]
enum Sent {
    Nothing,
    Basic,
    /// Digest, with this nonce.
    Digest(String),
}

/// What a `401` answer means for the request that got it.
#[derive(Debug, PartialEq)]
enum Challenged {
    /// The server asks for Digest (or for a fresh nonce): send the request again.
    Retry,
    /// The credentials are wrong.
    Refused,
    /// The server asks only for schemes this client does not speak (NTLM, Negotiate...).
    Unsupported(String),
}

impl AuthGate {
    /// A gate holding `creds`.
    pub fn new(creds: Option<Credentials>) -> Self {
        AuthGate {
            refused: Default::default(),
            creds: std::sync::RwLock::new(creds),
            digest: Default::default(),
            basic: Default::default(),
        }
    }

    /// True once the server refused the credentials.
    pub fn is_refused(&self) -> bool {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Puts new credentials in place and lets requests through again.
    pub fn replace(&self, creds: Credentials) {
        if let Ok(mut c) = self.creds.write() {
            *c = Some(creds);
        }
        self.refused
            .store(false, std::sync::atomic::Ordering::SeqCst);
        tracing::info!("new credentials in place: talking to the server again");
    }

    /// The password in use, to compare with a stored one.
    pub fn password(&self) -> Option<Secret> {
        self.creds
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.password.clone()))
    }

    /// The `Authorization` value for `method` on `target` (path and query, as on the request
    /// line) and what it is. Digest once the server asked for it; Basic once the server asked
    /// for it, or from the first request over TLS; nothing on a first request in clear text,
    /// so that a password never travels readable to a server that wants a Digest of it.
    fn authorization(&self, method: &str, target: &str, tls: bool) -> Option<(String, Sent)> {
        let c = self.creds.read().ok().and_then(|c| c.clone())?;
        let digest = self.digest.read().ok().and_then(|d| d.clone());
        if let Some(d) = digest {
            let v = d.authorization(&c.user, c.password.expose(), method, target);
            return Some((v, Sent::Digest(d.nonce.clone())));
        }
        if !tls && !self.basic.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        use base64::Engine;
        let pair = format!("{}:{}", c.user, c.password.expose());
        let v = base64::engine::general_purpose::STANDARD.encode(pair);
        Some((format!("Basic {v}"), Sent::Basic))
    }

    /// True once the way to send the credentials is known (or there are none).
    fn settled(&self) -> bool {
        let none = self.creds.read().map(|c| c.is_none()).unwrap_or(false);
        let digest = self.digest.read().map(|d| d.is_some()).unwrap_or(false);
        none || digest || self.basic.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Puts the `Authorization` header on `req`; answers what it sent.
    fn authorize(&self, req: &mut reqwest::Request) -> Sent {
        let url = req.url();
        let target = request_target(url);
        let tls = url.scheme() == "https";
        let Some((value, sent)) = self.authorization(req.method().as_str(), &target, tls) else {
            return Sent::Nothing;
        };
        if let Ok(mut v) = header::HeaderValue::from_bytes(value.as_bytes()) {
            v.set_sensitive(true);
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        sent
    }

    /// Reads a `401`'s challenges for a request sent with `sent`. A first request without
    /// credentials learns the scheme the server asks for; a Basic one learns that the server
    /// wants Digest instead; a Digest one whose nonce expired (`stale`) gets a fresh nonce:
    /// the request may go again. Anything else means wrong credentials.
    fn challenged(&self, headers: &header::HeaderMap, sent: &Sent) -> Challenged {
        let values: Vec<&str> = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let has_creds = self.creds.read().map(|c| c.is_some()).unwrap_or(false);
        if !has_creds {
            return Challenged::Refused;
        }
        let Some(c) = digest::Challenge::pick(values.iter().copied()) else {
            let schemes = digest::schemes(values.iter().copied());
            let basic = schemes.iter().any(|s| s.eq_ignore_ascii_case("basic"));
            // Without any challenge, Basic is the one thing left to try.
            if *sent == Sent::Nothing && (basic || schemes.is_empty()) {
                self.basic.store(true, std::sync::atomic::Ordering::Relaxed);
                return Challenged::Retry;
            }
            if !basic && !schemes.is_empty() {
                return Challenged::Unsupported(schemes.join(", "));
            }
            return Challenged::Refused;
        };
        match sent {
            Sent::Digest(_) if !c.stale => return Challenged::Refused,
            Sent::Digest(_) => {}
            Sent::Nothing | Sent::Basic => {
                tracing::info!(realm = %c.realm, "the server asks for Digest authentication")
            }
        }
        if let Ok(mut d) = self.digest.write() {
            *d = Some(std::sync::Arc::new(c));
        }
        Challenged::Retry
    }

    fn refuse(&self) {
        if !self.refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let user = self
                .creds
                .read()
                .ok()
                .and_then(|c| c.as_ref().map(|c| c.user.clone()))
                .unwrap_or_default();
            tracing::error!(
                "the server refused the login of {user:?} (HTTP 401: a wrong password, or an app \
                 password revoked or changed); nothing more is sent with it, pending changes stay \
                 in the journal"
            );
        }
    }
}

/// Whether the server can be reached, shared by every clone of a [`DavClient`].
///
/// A connection failure or a timeout marks the server out of reach; from then on requests fail
/// at once (no operation waits for a dead server) except [`DavClient::probe`], which a
/// background task calls every few seconds and which marks the server reachable again.
#[derive(Debug, Default)]
pub struct Reach {
    offline_since: std::sync::Mutex<Option<SystemTime>>,
    /// What took the server out of reach, for `nuage status`.
    offline_why: std::sync::Mutex<Option<String>>,
    changed: tokio::sync::Notify,
    /// The server is being asked whether it answers at all ([`DavClient::check_reach`]).
    checking: std::sync::atomic::AtomicBool,
    /// That question was answered.
    checked: tokio::sync::Notify,
    /// ... at once, on a new connection (see [`DavClient::check_reach`]).
    answered_at_once: std::sync::atomic::AtomicBool,
}

impl Reach {
    /// Since when the server is out of reach; `None` while it answers.
    pub fn offline_since(&self) -> Option<SystemTime> {
        *self.offline_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What took the server out of reach (the error that did), while it is.
    pub fn offline_reason(&self) -> Option<String> {
        self.offline_why
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True while the server answers.
    pub fn is_online(&self) -> bool {
        self.offline_since().is_none()
    }

    /// Waits until the state changes (either way).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Waits until the server is out of reach (at once when it is already).
    pub async fn until_offline(&self) {
        while self.is_online() {
            self.changed().await;
        }
    }

    fn went_offline(&self, why: &DavError) {
        let mut g = self.offline_since.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(SystemTime::now());
            drop(g);
            *self.offline_why.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
            tracing::warn!(error = %why, "server out of reach: working offline from the cache; changes wait in the journal");
            self.changed.notify_waiters();
        }
    }

    fn back_online(&self) {
        let mut g = self.offline_since.lock().unwrap_or_else(|p| p.into_inner());
        if g.take().is_some() {
            drop(g);
            *self.offline_why.lock().unwrap_or_else(|p| p.into_inner()) = None;
            tracing::info!("server reachable again: back online");
            self.changed.notify_waiters();
        }
    }
}

/// Errors of the WebDAV layer.
#[derive(Debug, thiserror::Error)]
pub enum DavError {
    /// The server could not be reached (DNS, refused, reset).
    #[error("cannot reach {0}")]
    Connect(String),
    /// The server did not answer in time.
    #[error("{0} did not answer in time")]
    Timeout(String),
    /// The TLS handshake failed, usually an untrusted certificate.
    #[error("TLS failure talking to {0}")]
    Tls(String),
    /// 401: wrong user name or password, or a revoked app password.
    #[error("the server refused the login (HTTP 401): check the user name and the (app) password")]
    Unauthorized,
    /// 403.
    #[error("forbidden by the server (HTTP 403): {0}")]
    Forbidden(String),
    /// 404.
    #[error("not found on the server: {0}")]
    NotFound(String),
    /// 412: the resource changed (etag mismatch) or exists.
    #[error("the file changed on the server: {0}")]
    PreconditionFailed(String),
    /// 423.
    #[error("locked on the server: {0}")]
    Locked(String),
    /// 507.
    #[error("the account is out of quota (HTTP 507)")]
    InsufficientStorage,
    /// 413: the server takes no request body this large (a plain server's upload limit).
    #[error("the server refuses a file this large (HTTP 413, its upload size limit): {0}")]
    TooLarge(String),
    /// The address answers, but not as a Nextcloud server.
    #[error("{0} is not a Nextcloud server (it has no status.php): check the address")]
    NotNextcloud(String),
    /// 401 with the `password login forbidden` hint: the account needs an app password.
    #[error("this account requires an app password (two-factor authentication or token login is enforced): create one in the web interface under Settings > Security > Devices & sessions")]
    AppPasswordRequired,
    /// 429: brute-force throttling.
    #[error(
        "the server throttles this client (HTTP 429, too many failed logins); wait before retrying"
    )]
    TooManyRequests,
    /// 503 (maintenance or overload), or 502 and 504 from a gateway in front of the server
    /// that cannot reach it: the status.
    #[error("the server is unavailable (HTTP {0}: maintenance, overload, or a gateway in front of it cannot reach it)")]
    Unavailable(u16),
    /// Any other unexpected status.
    #[error("unexpected HTTP {status} for {method} {what}")]
    Status {
        /// The status code.
        status: u16,
        /// The method.
        method: String,
        /// The decoded path or URL.
        what: String,
    },
    /// A body that does not make sense (not XML, wrong Content-Range...).
    #[error("the server answered nonsense: {0}")]
    BadResponse(String),
    /// A web page answered a WebDAV request in the server's place: a network's login page
    /// (a hotel's or a train's Wi-Fi, a "captive portal"), a proxy's page, or an address
    /// that is no WebDAV folder. Counts as the server out of reach.
    #[error("{0}")]
    NotTheServer(String),
    /// Bad configuration (URL, certificate file).
    #[error("{0}")]
    Config(String),
}

impl DavError {
    /// True when the same request may succeed later (network, 5xx, 423, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DavError::Connect(_)
                | DavError::Timeout(_)
                | DavError::Locked(_)
                | DavError::Unavailable(_)
                | DavError::NotTheServer(_)
                | DavError::TooManyRequests
        ) || matches!(self, DavError::Status { status, .. } if *status >= 500)
    }

    /// Classifies a reqwest transport error, walking its source chain to tell TLS apart.
    pub fn from_reqwest(e: &reqwest::Error, what: &str) -> Self {
        let mut chain = String::new();
        let mut src: Option<&dyn std::error::Error> = Some(e);
        while let Some(s) = src {
            chain.push_str(&s.to_string());
            chain.push_str(": ");
            src = s.source();
        }
        let lower = chain.to_lowercase();
        // A connection that broke (rustls says a peer closed it "without sending TLS
        // close_notify") is no TLS failure.
        let broke = lower.contains("close_notify") || lower.contains("unexpected eof");
        if !broke
            && ["certificate", "tls", "handshake", "unknownissuer"]
                .iter()
                .any(|w| lower.contains(w))
        {
            let hint = if lower.contains("causedasendentity") {
                "the server's certificate is marked as a certificate authority (CA:TRUE, what `openssl req -x509` makes by default), which TLS refuses as a server's own certificate: give the server one with CA:FALSE (or use --insecure for a test server)"
            } else if lower.contains("unknownissuer") {
                "the certificate is not signed by an authority this system trusts (to trust a private authority, add it to the system's certificates or give it with --ca-cert FILE)"
            } else if lower.contains("notvalidforname") {
                "the certificate was issued for another name than the one in the URL"
            } else if lower.contains("expired") {
                "the certificate has expired"
            } else if lower.contains("corrupt") || lower.contains("invalidcontenttype") {
                "the server does not speak TLS on this port (try http://)"
            } else {
                "the secure connection could not be established"
            };
            return DavError::Tls(format!("{what}: {hint}"));
        }
        if e.is_timeout() {
            return DavError::Timeout(what.to_string());
        }
        let reason = chain
            .split(": ")
            .filter(|p| !p.is_empty())
            .last()
            .unwrap_or("connection failed")
            .to_string();
        DavError::Connect(format!("{what} ({reason})"))
    }

    /// Maps a non-success status to an error.
    pub fn from_status(status: StatusCode, method: &Method, what: &str) -> Self {
        match status.as_u16() {
            401 => DavError::Unauthorized,
            403 => DavError::Forbidden(what.to_string()),
            404 | 410 => DavError::NotFound(what.to_string()),
            412 => DavError::PreconditionFailed(what.to_string()),
            413 => DavError::TooLarge(what.to_string()),
            423 => DavError::Locked(what.to_string()),
            429 => DavError::TooManyRequests,
            s @ 502..=504 => DavError::Unavailable(s),
            507 => DavError::InsufficientStorage,
            s => DavError::Status {
                status: s,
                method: method.to_string(),
                what: what.to_string(),
            },
        }
    }
}

/// The one place where DAV failures become portable filesystem error kinds.
impl From<DavError> for Error {
    fn from(e: DavError) -> Self {
        let kind = match &e {
            DavError::Connect(_) | DavError::NotTheServer(_) => ErrorKind::Offline,
            DavError::Timeout(_) => ErrorKind::TimedOut,
            DavError::Tls(_) => ErrorKind::Io,
            DavError::Unauthorized | DavError::AppPasswordRequired => ErrorKind::PermissionDenied,
            DavError::Forbidden(_) => ErrorKind::PermissionDenied,
            DavError::NotFound(_) => ErrorKind::NotFound,
            DavError::PreconditionFailed(_) => ErrorKind::Stale,
            DavError::Locked(_) => ErrorKind::Busy,
            DavError::InsufficientStorage | DavError::TooLarge(_) => ErrorKind::NoSpace,
            DavError::TooManyRequests | DavError::Unavailable(_) => ErrorKind::Io,
            DavError::Status { status, .. } if *status == 409 => ErrorKind::NotFound,
            DavError::Status { status, .. } if *status == 405 => ErrorKind::AlreadyExists,
            DavError::Status { .. }
            | DavError::BadResponse(_)
            | DavError::Config(_)
            | DavError::NotNextcloud(_) => ErrorKind::Io,
        };
        Error::new(kind, e.to_string())
    }
}

/// PROPFIND depth. `infinity` is deliberately not offered (§2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The resource only.
    Zero,
    /// The resource and its direct children.
    One,
}

/// One file or folder as the server describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Path below the DAV root.
    pub path: RemotePath,
    /// True for a collection.
    pub is_dir: bool,
    /// Size in bytes (content length for files, `oc:size` for folders when given).
    pub size: u64,
    /// Last modification time (epoch when the server gives none).
    pub mtime: SystemTime,
    /// The etag as sent by the server, quotes included.
    pub etag: Option<String>,
    /// Nextcloud file id.
    pub fileid: Option<u64>,
    /// Nextcloud permission letters.
    pub permissions: Option<String>,
    /// Quota used (folders, when the server gives it).
    pub quota_used: Option<i64>,
    /// Quota available (folders; negative = unknown or unlimited).
    pub quota_available: Option<i64>,
}

/// Marks the answer to a request sent twice ([`DavClient::execute`]): the server may have
/// done what the first asked, its answer lost.
#[derive(Debug, Clone, Copy)]
pub struct Resent;

/// Whether a request with `method` only reads: sent again as it is when its connection broke
/// before the answer came.
pub(crate) fn only_reads(method: &reqwest::Method) -> bool {
    matches!(method.as_str(), "GET" | "HEAD" | "PROPFIND")
}

/// Whether `resp` is a web page given as `200 OK` (`text/html`): what a network's login page
/// answers to everything, and no WebDAV server to `PROPFIND`, `MKCOL`, `MOVE`... (Apache
/// sends a page with its `201 Created`: only a `200` counts.)
pub(crate) fn is_web_page(resp: &reqwest::Response) -> bool {
    resp.status() == StatusCode::OK
        && resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"))
}

/// The error for a web page that answered `method` to `what` in the server's place.
pub(crate) fn not_the_server(method: &str, what: &str) -> DavError {
    DavError::NotTheServer(format!(
        "{method} {what} was answered with a web page, not by a WebDAV server: not a WebDAV \
         folder, or a network login page (Wi-Fi) answers in the server's place"
    ))
}

/// Whether `resp` answers a request sent twice ([`Resent`]).
pub fn was_resent(resp: &reqwest::Response) -> bool {
    resp.extensions().get::<Resent>().is_some()
}

/// The JSON body of `resp`, an answer to `what`. One cut short (its connection broke, or it
/// ended early) is a broken connection, not nonsense: it says so, and the callers that send
/// again on broken connections do.
pub async fn json_answer(
    resp: reqwest::Response,
    what: &str,
) -> Result<serde_json::Value, DavError> {
    let url = resp.url().to_string();
    let body = resp
        .bytes()
        .await
        .map_err(|e| DavError::from_reqwest(&e, &url))?;
    serde_json::from_slice(&body).map_err(|e| {
        if e.is_eof() && !body.is_empty() {
            DavError::Connect(format!("{url} (the answer to {what} was cut short)"))
        } else {
            DavError::BadResponse(format!("{what} answer is not JSON: {e}"))
        }
    })
}

/// Whole seconds since the epoch (0 before it).
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What tells one server version of a file from another: its etag, or, from a server that
/// gives none, its modification time (seconds) and size.
pub fn version_validator(etag: Option<&str>, mtime: SystemTime, size: u64) -> String {
    match etag {
        Some(e) => e.to_string(),
        None => format!("mtime:{}:size:{size}", unix_secs(mtime)),
    }
}

impl Entry {
    /// The modification time in whole seconds (what `getlastmodified` can tell).
    pub fn mtime_secs(&self) -> i64 {
        unix_secs(self.mtime)
    }

    /// See [`version_validator`].
    pub fn validator(&self) -> String {
        version_validator(self.etag.as_deref(), self.mtime, self.size)
    }

    /// Whether this entry is still the server version described by `etag`, `size` and
    /// `mtime` (seconds). With etags on both sides they decide; a server that gives no etag
    /// is judged by size and modification time (a change within the same second that keeps
    /// the size cannot be seen).
    pub fn is_version(&self, etag: Option<&str>, size: u64, mtime: Option<i64>) -> bool {
        match (&self.etag, etag) {
            (Some(now), Some(was)) => strong_etag(now) == strong_etag(was),
            _ => !self.is_dir && self.size == size && mtime.is_none_or(|m| m == self.mtime_secs()),
        }
    }
}

/// How long a program waits for the server before the mount looks for another way: where it
/// has an answer of its own (the last listing of a folder, the attributes known, the last
/// quota: see `Vfs`), that answer; in any case the server is asked whether it answers at all
/// ([`DavClient::check_reach`]), and when it does not the mount works offline at once, not
/// after the request timeout. The read timeout when shorter ([`DavClient::patience`]).
pub const PATIENCE: Duration = Duration::from_secs(3);

/// Transport settings.
#[derive(Debug, Clone)]
pub struct DavConfig {
    /// Accept any TLS certificate. Only when the user explicitly asks.
    pub insecure: bool,
    /// An extra PEM CA certificate to trust.
    pub ca_cert: Option<std::path::PathBuf>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub read_timeout: Duration,
    /// Total time for small requests (PROPFIND, OCS).
    pub request_timeout: Duration,
}

impl Default for DavConfig {
    fn default() -> Self {
        DavConfig {
            insecure: false,
            ca_cert: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Builds the shared HTTP client (rustls, verified TLS unless `insecure`).
pub fn http_client(cfg: &DavConfig) -> Result<reqwest::Client, DavError> {
    client_keeping(cfg, 32, None)
}

/// The session cookies one account's server sets (nextcloud-protocol.md §14.3): sent back,
/// they spare Nextcloud the check of the app password on every request, its costliest step.
/// Every request still carries the credentials, so a session the server ended costs
/// nothing but that check. A refusal (401) forgets them all, and a request refused with a
/// session goes once more without any cookie: when it then passes, the server refuses its
/// own sessions, and none are kept any more.
#[derive(Default)]
struct SessionCookies {
    jar: std::sync::RwLock<std::sync::Arc<reqwest::cookie::Jar>>,
    /// The server refused its own sessions: none is kept any more.
    off: std::sync::atomic::AtomicBool,
}

impl SessionCookies {
    fn jar(&self) -> std::sync::Arc<reqwest::cookie::Jar> {
        self.jar.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn forget(&self) {
        *self.jar.write().unwrap_or_else(|p| p.into_inner()) = Default::default();
    }

    /// Whether a request to `url` carries cookies now.
    fn held(&self, url: &Url) -> bool {
        reqwest::cookie::CookieStore::cookies(self, url).is_some()
    }

    /// Keeps no cookie (`off`) or keeps them again.
    fn keep(&self, on: bool) {
        self.off.store(!on, std::sync::atomic::Ordering::Relaxed);
        if !on {
            self.forget();
        }
    }
}

impl reqwest::cookie::CookieStore for SessionCookies {
    fn set_cookies(&self, headers: &mut dyn Iterator<Item = &header::HeaderValue>, url: &Url) {
        if !self.off.load(std::sync::atomic::Ordering::Relaxed) {
            self.jar().set_cookies(headers, url)
        }
    }

    fn cookies(&self, url: &Url) -> Option<header::HeaderValue> {
        self.jar().cookies(url)
    }
}

impl std::fmt::Debug for SessionCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the cookies themselves: they are as good as a password while they live.
        f.write_str("SessionCookies")
    }
}

/// An HTTP client as [`http_client`] that keeps up to `idle` connections per host, and
/// keeps the session cookies in `cookies` when given.
fn client_keeping(
    cfg: &DavConfig,
    idle: usize,
    cookies: Option<std::sync::Arc<SessionCookies>>,
) -> Result<reqwest::Client, DavError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("nuage/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(cfg.connect_timeout)
        .read_timeout(cfg.read_timeout)
        .pool_max_idle_per_host(idle)
        .tcp_nodelay(true);
    if let Some(c) = cookies {
        b = b.cookie_provider(c);
    }
    if cfg.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    if let Some(path) = &cfg.ca_cert {
        let pem = std::fs::read(path).map_err(|e| {
            DavError::Config(format!(
                "cannot read CA certificate {}: {e}",
                path.display()
            ))
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            DavError::Config(format!("{} is not a PEM certificate: {e}", path.display()))
        })?;
        b = b.add_root_certificate(cert);
    }
    b.build()
        .map_err(|e| DavError::Config(format!("cannot build the HTTP client: {e}")))
}

/// A WebDAV client bound to one root collection.
#[derive(Debug, Clone)]
pub struct DavClient {
    /// Replaced by a new one (with no connection kept alive) by [`Self::check_reach`].
    http: std::sync::Arc<std::sync::RwLock<reqwest::Client>>,
    settings: DavConfig,
    /// For the questions whether the server answers at all: a new connection each time, so
    /// that the answer is the server's, not that of a kept-alive connection that leads
    /// nowhere any more (a laptop that moved to another network, or woke up).
    fresh: reqwest::Client,
    root: Url,
    root_path: String,
    auth: std::sync::Arc<AuthGate>,
    reach: std::sync::Arc<Reach>,
    request_timeout: Duration,
    /// Longest silence while reading a response ([`DavConfig::read_timeout`]).
    read_timeout: Duration,
    uploads: Option<Url>,
    /// Bulk upload endpoint and the mount root's path below the user's root.
    bulk: Option<(Url, String)>,
    /// The server answered without any ownCloud property (a plain WebDAV server): folder
    /// listings ask for the DAV ones only ([`xml::PROPFIND_LISTING_PLAIN`]).
    plain: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Whether the server honours `If-Match` and `If-None-Match` on writes (known once asked,
    /// see [`DavClient::honours_conditions`]).
    conditions: std::sync::Arc<tokio::sync::OnceCell<bool>>,
    /// Block downloads over plain HTTP read straight into their buffers (see [`rawget`]).
    raw: Option<std::sync::Arc<rawget::RawGets>>,
    /// Listings ask for `d:displayname` too (the server left hrefs out).
    names: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// This account's session cookies, kept across renewed connections.
    cookies: std::sync::Arc<SessionCookies>,
    /// Until when the server asked not to be sent work (a 503 or 429 with `Retry-After`).
    not_before: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

/// The longest wait a `Retry-After` is taken for (a longer one is asked again then).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(15 * 60);

/// How long a `Retry-After` value asks to wait (nextcloud-protocol.md §14.5): seconds, or an
/// HTTP date; `None` when it is neither, and zero for a date already past. Capped at
/// [`RETRY_AFTER_MAX`].
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(d.min(RETRY_AFTER_MAX))
}

impl DavClient {
    /// A client for the collection at `root` (a trailing `/` is added if missing). Its
    /// requests go through a client built from `cfg` with a cookie store of its own (one
    /// per account, §14.3); `http` only stands in when that cannot be built.
    pub fn new(
        http: reqwest::Client,
        mut root: Url,
        creds: Option<Credentials>,
        cfg: &DavConfig,
    ) -> Self {
        if !root.path().ends_with('/') {
            let p = format!("{}/", root.path());
            root.set_path(&p);
        }
        let root_path = path::decode(root.path());
        let raw = rawget::RawGets::for_root(&root, cfg.connect_timeout, cfg.read_timeout)
            .map(std::sync::Arc::new);
        // Built as `http` was, from the same settings; requests keep this account's session
        // cookies, the questions whether the server answers do not.
        let fresh = client_keeping(cfg, 0, None).unwrap_or_else(|_| http.clone());
        let cookies = std::sync::Arc::new(SessionCookies::default());
        let http = client_keeping(cfg, 32, Some(cookies.clone())).unwrap_or(http);
        DavClient {
            http: std::sync::Arc::new(std::sync::RwLock::new(http)),
            settings: cfg.clone(),
            fresh,
            root,
            root_path,
            auth: std::sync::Arc::new(AuthGate::new(creds)),
            reach: Default::default(),
            request_timeout: cfg.request_timeout,
            read_timeout: cfg.read_timeout,
            uploads: None,
            bulk: None,
            plain: Default::default(),
            conditions: Default::default(),
            raw,
            names: Default::default(),
            cookies,
            not_before: Default::default(),
        }
    }

    /// How much longer the server asked not to be sent work (the `Retry-After` of its last
    /// 503 or 429), if it did.
    pub fn asked_to_wait(&self) -> Option<Duration> {
        let until = (*self.not_before.lock().ok()?)?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Remembers the wait a 503 or 429 answer asks for.
    fn note_retry_after(&self, resp: &reqwest::Response) {
        if !matches!(resp.status().as_u16(), 429 | 503) {
            return;
        }
        let Some(wait) = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()))
        else {
            return;
        };
        tracing::info!(
            seconds = wait.as_secs(),
            "the server asks not to be sent work for a while (Retry-After)"
        );
        if let Ok(mut nb) = self.not_before.lock() {
            *nb = Some(Instant::now() + wait);
        }
    }

    /// Marks the server as one that takes HTTP Basic (Nextcloud does, nextcloud-protocol.md
    /// §7.1): the credentials go from the first request, also over plain `http://`.
    pub fn with_basic_auth(self) -> Self {
        self.auth
            .basic
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Marks the server as one that honours conditional requests without asking it
    /// (Nextcloud does, nextcloud-protocol.md §4.1).
    pub fn with_trusted_conditions(self) -> Self {
        let _ = self.conditions.set(true);
        self
    }

    /// Whether the server honours `If-Match`/`If-None-Match` on PUT and DELETE. Some WebDAV
    /// servers ignore them (nginx, `rclone serve webdav`): an upload conditional on a version
    /// would then silently replace a newer one, so callers check the server copy first. Asked
    /// once, with a PUT conditional on an etag no file has, at a name no file has: a server
    /// that honours it answers 412 and creates nothing; one that ignores it creates an empty
    /// file, which is deleted at once. Not remembered when the server could not be reached.
    pub async fn honours_conditions(&self) -> bool {
        let asked = self
            .conditions
            .get_or_try_init(|| async {
                let nonce = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let probe = RemotePath::root().join(&format!(".nuage-probe-{nonce:x}"));
                let rb = self
                    .request(Method::PUT, self.url(&probe, false))
                    .header(reqwest::header::CONTENT_LENGTH, 0)
                    .header(reqwest::header::IF_MATCH, "\"nuage-probe\"")
                    .body(Vec::<u8>::new());
                let st = self.send(rb).await?.status();
                if st == StatusCode::PRECONDITION_FAILED {
                    return Ok::<bool, DavError>(true);
                }
                if st == StatusCode::UNAUTHORIZED || st.is_server_error() {
                    // Not an answer about conditions: ask again next time.
                    return Err(DavError::from_status(st, &Method::PUT, "probe"));
                }
                if st.is_success() {
                    let _ = self.delete(&probe, false, None).await;
                }
                tracing::info!(status = st.as_u16(), "the server ignores If-Match: each upload and deletion checks the server copy first");
                Ok(false)
            })
            .await;
        match asked {
            Ok(v) => *v,
            Err(_) => false,
        }
    }

    /// Enables bulk upload (nextcloud-protocol.md §5.6) at `url` (`BASE/remote.php/dav/bulk`);
    /// `root_in_user_root` is the mount root's path below the user's root (`""` for the root).
    pub fn with_bulk(mut self, url: Url, root_in_user_root: &str) -> Self {
        self.bulk = Some((url, root_in_user_root.trim_matches('/').to_string()));
        self
    }

    /// True when bulk upload is enabled.
    pub fn has_bulk(&self) -> bool {
        self.bulk.is_some()
    }

    /// Enables Nextcloud chunked upload through the upload area at `uploads` (a trailing `/`
    /// is added).
    pub fn with_uploads(mut self, mut uploads: Url) -> Self {
        if !uploads.path().ends_with('/') {
            let p = format!("{}/", uploads.path());
            uploads.set_path(&p);
        }
        self.uploads = Some(uploads);
        self
    }

    /// The root URL.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The URL of `p` (with a trailing `/` for folders).
    pub fn url(&self, p: &RemotePath, dir: bool) -> Url {
        let mut s = self.root.as_str().to_string();
        if !p.is_root() {
            s.push_str(&p.encoded());
            if dir {
                s.push('/');
            }
        }
        // The root is a valid URL and the encoded path only holds URL-safe characters.
        Url::parse(&s).unwrap_or_else(|_| self.root.clone())
    }

    /// A request to `url`; [`Self::send`] adds the credentials.
    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.http().request(method, url)
    }

    /// The credentials gate shared by the clones of this client.
    pub fn auth(&self) -> &std::sync::Arc<AuthGate> {
        &self.auth
    }

    /// Whether the server can be reached.
    pub fn reach(&self) -> &std::sync::Arc<Reach> {
        &self.reach
    }

    /// Sends a request built by [`Self::request`]: not at all once the server refused the
    /// credentials or is known to be out of reach; notes refusals (401) and lost connections.
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, DavError> {
        self.gate().await?;
        self.send_anyway(rb, &self.http()).await
    }

    /// Refuses at once to send anything once the server refused the credentials or while it
    /// is known to be out of reach. While the server is being asked whether it answers at all
    /// (a request waited long, see [`Self::check_reach`]), waits for that answer first.
    async fn gate(&self) -> Result<(), DavError> {
        if self.checking_reach() {
            self.check_reach().await;
        }
        if self.auth.is_refused() {
            return Err(DavError::Unauthorized);
        }
        if let Some(since) = self.reach.offline_since() {
            let secs = since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
            return Err(DavError::Connect(format!(
                "{} (offline for {secs} s; retrying in the background)",
                self.root
            )));
        }
        Ok(())
    }

    /// A request could not be sent or was not answered: when the server does not answer
    /// anything else either, it is out of reach.
    async fn transport_failed(&self, e: &DavError) {
        // A TLS failure with a server that had a valid certificate: most often a network's
        // login page answering in its place (a hotel's Wi-Fi): out of reach, as it is.
        if matches!(
            e,
            DavError::Connect(_) | DavError::Timeout(_) | DavError::Tls(_)
        ) {
            self.check_reach().await;
        }
    }

    /// Asks whether the server answers anything at all, on a new connection, within the
    /// read timeout (ten seconds at most, as the probe that brings a mount back online), for
    /// a request that failed or has been waiting long: when it does not, the server is out
    /// of reach from now on (requests fail at once, the mount works from its cache) rather
    /// than after that request's timeout.
    ///
    /// True when the server answered at once: the request that waited is most likely stuck
    /// on a kept-alive connection that leads nowhere, so every kept-alive connection is
    /// dropped (new requests open new ones) and the caller may ask again. One check at a
    /// time: it counts as under way from this call on, and a call meanwhile waits for its
    /// answer.
    pub fn check_reach(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        use std::sync::atomic::Ordering;
        let me = self.clone();
        let owner = me.reach.is_online() && !me.reach.checking.swap(true, Ordering::AcqRel);
        // Run by a task of its own: a caller that stops waiting (its request answered
        // meanwhile) does not leave the check unfinished and every later caller waiting.
        let run = match (owner, tokio::runtime::Handle::try_current()) {
            (true, Ok(rt)) => {
                let me = me.clone();
                Some(rt.spawn(async move { me.run_check().await }))
            }
            _ => None,
        };
        async move {
            if let Some(run) = run {
                return run.await.unwrap_or(false);
            }
            if owner {
                return me.run_check().await;
            }
            let r = &me.reach;
            if !r.is_online() {
                return false;
            }
            // Woken by the end of that check even if it ends before this is polled.
            let ended = r.checked.notified();
            if r.checking.load(Ordering::Acquire) {
                ended.await;
            }
            r.answered_at_once.load(Ordering::Acquire)
        }
    }

    /// The check of [`Self::check_reach`], by the caller that started it.
    async fn run_check(&self) -> bool {
        use std::sync::atomic::Ordering;
        /// Ends the check however `run_check` ends (also dropped before its end).
        struct Done<'a>(&'a Reach);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.checking.store(false, Ordering::Release);
                self.0.checked.notify_waiters();
            }
        }
        let r = &self.reach;
        let _done = Done(r);
        let limit = self.read_timeout.min(Duration::from_secs(10));
        let asked = std::time::Instant::now();
        let answered = self.answers(limit).await;
        let at_once = answered && asked.elapsed() < Duration::from_secs(1);
        if !answered {
            r.went_offline(&DavError::Timeout(self.root.to_string()));
        } else if at_once {
            self.renew_connections();
        }
        r.answered_at_once.store(at_once, Ordering::Release);
        at_once
    }

    /// The client for requests (with the connections it keeps alive).
    fn http(&self) -> reqwest::Client {
        self.http.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Drops every kept-alive connection (those of requests under way end with them).
    fn renew_connections(&self) {
        if let Ok(c) = client_keeping(&self.settings, 32, Some(self.cookies.clone())) {
            *self.http.write().unwrap_or_else(|p| p.into_inner()) = c;
            tracing::debug!("kept-alive connections dropped: new requests open new ones");
        }
        if let Some(raw) = &self.raw {
            raw.forget_idle();
        }
    }

    /// [`PATIENCE`], or the read timeout when shorter.
    pub fn patience(&self) -> Duration {
        self.read_timeout.min(PATIENCE)
    }

    /// True while the server is being asked whether it answers at all.
    pub fn checking_reach(&self) -> bool {
        self.reach
            .checking
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sends a request (with credentials, answering the server's challenges) over `http`.
    async fn send_anyway(
        &self,
        rb: reqwest::RequestBuilder,
        http: &reqwest::Client,
    ) -> Result<reqwest::Response, DavError> {
        let mut req = rb
            .build()
            .map_err(|e| DavError::Config(format!("cannot build the request: {e}")))?;
        // A server asking for another scheme (or for a new nonce) gets the request once
        // more, when its body can be sent again; a streamed one cannot: its caller retries.
        let mut first = true;
        let mut without_session = false;
        loop {
            let sent = self.auth.authorize(&mut req);
            let spare = if first { req.try_clone() } else { None };
            first = false;
            let with_session = self.cookies.held(req.url());
            let resp = self.execute(req, http).await?;
            self.note_retry_after(&resp);
            if resp.status() != StatusCode::UNAUTHORIZED {
                if without_session {
                    tracing::info!(
                        "the server refuses its own session cookies: none are kept any more"
                    );
                }
                return Ok(resp);
            }
            // Whatever session there was is not worth keeping (§14.3).
            self.cookies.forget();
            if without_session {
                // Refused without a session too: the credentials were refused, not the
                // session; sessions are kept again for when new ones come.
                self.cookies.keep(true);
            }
            match (self.auth.challenged(resp.headers(), &sent), spare) {
                (Challenged::Retry, Some(again)) => req = again,
                (Challenged::Retry, None) => return Ok(resp),
                // The session may be what the server refused, not the credentials: once
                // more with no cookie at all (none is kept meanwhile, also from the answers
                // to other requests).
                (Challenged::Refused, Some(again)) if with_session => {
                    self.cookies.keep(false);
                    without_session = true;
                    req = again;
                }
                (Challenged::Refused, _) => {
                    self.auth.refuse();
                    return Ok(resp);
                }
                (Challenged::Unsupported(s), _) => return Err(unsupported_auth(&s)),
            }
        }
    }

    /// Sends `req`. A request whose connection broke before its answer came (a pooled
    /// connection the server closed meanwhile, a network that dropped it) goes once more on
    /// a new one: one that reads (`GET`, `HEAD`, `PROPFIND`) or sets a property, and one that
    /// changes names (`MOVE`, `DELETE`, `MKCOL`), whose server may have done it with
    /// the answer lost: its answer then carries [`Resent`], and the caller takes "not there
    /// any more" or "there already" for done. Uploads are left to their callers, which check
    /// what the server holds before sending them again.
    async fn execute(
        &self,
        req: reqwest::Request,
        http: &reqwest::Client,
    ) -> Result<reqwest::Response, DavError> {
        let resendable = only_reads(req.method())
            || matches!(
                req.method().as_str(),
                "PROPPATCH" | "MOVE" | "DELETE" | "MKCOL"
            );
        let spare = if resendable { req.try_clone() } else { None };
        let method = req.method().clone();
        // An upload's answer comes after its body: not watched (its time says nothing).
        let watched = !matches!(req.method().as_str(), "PUT" | "POST");
        let Some(mut res) = self.unless_unreachable(http.execute(req), watched).await else {
            return Err(DavError::Timeout(self.root.to_string()));
        };
        if let (Err(e), Some(again)) = (&res, spare) {
            // Not after a timeout: a silent server would double the wait.
            if !e.is_timeout() {
                tracing::debug!(method = %again.method(), error = %e, "connection broke: sent again on a new one");
                // On a connection of its own: another kept-alive one may be as dead.
                let Some(r) = self
                    .unless_unreachable(self.fresh.execute(again), true)
                    .await
                else {
                    return Err(DavError::Timeout(self.root.to_string()));
                };
                res = r.map(|mut r| {
                    r.extensions_mut().insert(Resent);
                    r
                });
            }
        }
        match res {
            // A web page answering a WebDAV method: someone else answers (a network's login
            // page): out of reach until the server itself answers again. (`GET` may give a
            // web page, `PUT` and `POST` answers are checked by what they must carry.)
            Ok(r)
                if is_web_page(&r)
                    && !matches!(method.as_str(), "GET" | "HEAD" | "PUT" | "POST") =>
            {
                let e = not_the_server(method.as_str(), r.url().path());
                self.reach.went_offline(&e);
                self.renew_connections();
                Err(e)
            }
            Ok(r) => Ok(r),
            Err(e) => {
                let e = DavError::from_reqwest(&e, self.root.as_str());
                self.transport_failed(&e).await;
                Err(e)
            }
        }
    }

    /// Runs `request` (up to its answer's head), unless the server is found out of reach
    /// meanwhile (`None`): when it has not answered within [`Self::patience`],
    /// and `watched`, the server is asked whether it answers at all ([`Self::check_reach`]),
    /// so a request to a server that answers nothing ends after that check (13 s with the
    /// default timeout), not after its own timeout. Not while out of reach already (the
    /// probe that finds the server back has its own limit).
    async fn unless_unreachable<T>(
        &self,
        request: impl std::future::Future<Output = T>,
        watched: bool,
    ) -> Option<T> {
        let patience = self.patience();
        let gone = async {
            if !watched || !self.reach.is_online() {
                return std::future::pending::<()>().await;
            }
            tokio::time::sleep(patience).await;
            self.check_reach().await;
            self.reach.until_offline().await;
        };
        tokio::select! {
            r = request => Some(r),
            _ = gone => None,
        }
    }

    /// True when the server answers anything at all within `limit`.
    async fn answers(&self, limit: Duration) -> bool {
        let Ok(method) = Method::from_bytes(b"PROPFIND") else {
            return false;
        };
        // With the credentials, as the request that failed: a server may refuse a stranger
        // at once while the requests it would serve hang.
        let Ok(mut req) = self
            .request(method, self.root.clone())
            .header("Depth", "0")
            .timeout(limit)
            .build()
        else {
            return false;
        };
        self.auth.authorize(&mut req);
        // A web page in the server's place (a network's login page) is no answer of it.
        matches!(self.fresh.execute(req).await, Ok(r) if !is_web_page(&r))
    }

    /// Asks the server for the root folder even while it is known to be out of reach (then
    /// on a new connection), and marks it reachable when it answers. Answers the root's etag.
    pub async fn probe(&self) -> Result<Option<String>, DavError> {
        let method =
            Method::from_bytes(b"PROPFIND").map_err(|e| DavError::Config(e.to_string()))?;
        let rb = self
            .request(method.clone(), self.root.clone())
            .header("Depth", "0")
            .header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
            .timeout(self.request_timeout.min(Duration::from_secs(10)))
            .body(xml::PROPFIND_BODY);
        let online = self.reach.is_online();
        let http = if online {
            self.http()
        } else {
            self.fresh.clone()
        };
        let resp = self.send_anyway(rb, &http).await?;
        let status = resp.status();
        if status != StatusCode::MULTI_STATUS {
            return Err(DavError::from_status(status, &method, "/"));
        }
        if !online {
            // The connections kept from before may lead elsewhere (to a network's login
            // page that answered in the server's place): new requests open new ones.
            self.renew_connections();
        }
        self.reach.back_online();
        let body = resp
            .text()
            .await
            .map_err(|e| DavError::from_reqwest(&e, self.root.as_str()))?;
        let raw = xml::parse_multistatus(&body)?;
        Ok(raw.into_iter().next().and_then(|r| r.etag))
    }

    /// The responses of one PROPFIND.
    async fn propfind_raw(
        &self,
        p: &RemotePath,
        depth: Depth,
    ) -> Result<Vec<xml::PropResponse>, DavError> {
        let method =
            Method::from_bytes(b"PROPFIND").map_err(|e| DavError::Config(e.to_string()))?;
        let what = p.to_string();
        let plain = self.plain.load(std::sync::atomic::Ordering::Relaxed);
        let body = match depth {
            Depth::One if plain => xml::PROPFIND_LISTING_PLAIN,
            _ => xml::PROPFIND_BODY,
        };
        let body = if self.names.load(std::sync::atomic::Ordering::Relaxed) {
            body.replace("</d:prop>", "<d:displayname/></d:prop>")
        } else {
            body.to_string()
        };
        let resp = self
            // No trailing slash: a file with one is a 404 on Apache; folders answer either way.
            .request(method.clone(), self.url(p, false))
            .header(
                "Depth",
                match depth {
                    Depth::Zero => "0",
                    Depth::One => "1",
                },
            )
            .header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
            .header("Prefer", "return=minimal")
            .timeout(self.request_timeout)
            .body(body);
        let resp = self.send(resp).await?;
        let status = resp.status();
        if status != StatusCode::MULTI_STATUS {
            if status.is_success() {
                return Err(DavError::BadResponse(format!(
                    "PROPFIND {what} answered HTTP {} instead of 207 Multi-Status: not a WebDAV folder",
                    status.as_u16()
                )));
            }
            if matches!(status.as_u16(), 405 | 501) {
                return Err(DavError::BadResponse(format!(
                    "PROPFIND {what} answered HTTP {}: the server does not speak WebDAV here, not a WebDAV folder",
                    status.as_u16()
                )));
            }
            return Err(DavError::from_status(status, &method, &what));
        }
        match depth {
            Depth::Zero => {
                let body = resp
                    .text()
                    .await
                    .map_err(|e| DavError::from_reqwest(&e, self.root.as_str()))?;
                xml::parse_multistatus(&body)
            }
            // A folder listing can be megabytes: parsed while it arrives.
            Depth::One => self.parse_streamed(resp).await,
        }
    }

    /// PROPFIND with the given depth. With `Depth::One` the first entry is the folder itself.
    pub async fn propfind(&self, p: &RemotePath, depth: Depth) -> Result<Vec<Entry>, DavError> {
        let mut raw = match self.propfind_raw(p, depth).await {
            // The answer broke off (its head came, its body did not): asked once more.
            Err(DavError::Connect(e)) if self.reach.is_online() => {
                tracing::debug!(path = %p, error = %e, "listing cut short: asked again");
                self.propfind_raw(p, depth).await?
            }
            r => r?,
        };
        let unnamed = raw
            .iter()
            .any(|r| r.href.is_empty() && r.display_name.is_none());
        if unnamed && !self.names.swap(true, std::sync::atomic::Ordering::Relaxed) {
            // A server that leaves hrefs out (phodav, for names with `%`): from now on
            // listings ask for display names too, to place such answers.
            tracing::info!("the server sent answers without an href: asking for display names");
            raw = self.propfind_raw(p, depth).await?;
        }
        let plain = self.plain.load(std::sync::atomic::Ordering::Relaxed);
        if !plain
            && !raw.is_empty()
            && raw
                .iter()
                .all(|r| r.fileid.is_none() && r.permissions.is_none())
        {
            tracing::debug!("no ownCloud properties: listings ask for the DAV ones only");
            self.plain.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut out = Vec::with_capacity(raw.len());
        let has_self = raw
            .iter()
            .any(|r| !r.href.is_empty() && self.relative(&r.href).as_ref() == Some(p));
        for r in raw {
            let at = if r.href.is_empty() {
                // A response without an href (phodav cannot write one for a name with `%`):
                // placed by its display name, under the folder asked or as the folder itself.
                let name = r.display_name.as_deref().unwrap_or("");
                match depth {
                    _ if name.is_empty() => None,
                    Depth::Zero => Some(p.clone()),
                    Depth::One if !has_self && r.is_dir && name == p.name() => Some(p.clone()),
                    Depth::One => Some(p.join(name)),
                }
            } else {
                self.relative(&r.href)
            };
            match at {
                Some(rel) => out.push(Entry {
                    path: rel,
                    is_dir: r.is_dir,
                    size: if r.is_dir {
                        r.oc_size.unwrap_or(0)
                    } else {
                        r.content_length.or(r.oc_size).unwrap_or(0)
                    },
                    mtime: r.mtime.unwrap_or(SystemTime::UNIX_EPOCH),
                    etag: r.etag,
                    fileid: r.fileid,
                    permissions: r.permissions,
                    quota_used: r.quota_used,
                    quota_available: r.quota_available,
                }),
                None => {
                    tracing::warn!(href = %r.href, "PROPFIND answer outside the mount root, ignored")
                }
            }
        }
        Ok(out)
    }

    /// Parses a multistatus body on a blocking thread while its chunks arrive.
    async fn parse_streamed(
        &self,
        mut resp: reqwest::Response,
    ) -> Result<Vec<xml::PropResponse>, DavError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let parser = tokio::task::spawn_blocking(move || {
            xml::parse_multistatus_from(ChunkReader {
                rx,
                cur: bytes::Bytes::new(),
                pos: 0,
            })
        });
        let mut net = None;
        loop {
            match resp.chunk().await {
                // A parser that stopped (bad XML) dropped its end: its error is the answer.
                Ok(Some(c)) => {
                    if tx.send(c).is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    net = Some(DavError::from_reqwest(&e, self.root.as_str()));
                    break;
                }
            }
        }
        drop(tx);
        let parsed = parser
            .await
            .map_err(|e| DavError::BadResponse(format!("multistatus parser failed: {e}")))?;
        match net {
            Some(e) => Err(e),
            None => parsed,
        }
    }

    /// Maps a decoded absolute href to a path below the root.
    fn relative(&self, href: &str) -> Option<RemotePath> {
        let root = self.root_path.trim_end_matches('/');
        let href_t = href.trim_end_matches('/');
        if href_t == root {
            return Some(RemotePath::root());
        }
        href_t
            .strip_prefix(root)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(RemotePath::new)
    }

    /// Starts a ranged GET of `len` bytes at `start` of a file of `size` bytes, conditional on
    /// `etag` when it is strong. Answers the response (status 206, or 200 when the server
    /// ignored the range and sends the whole file) so the caller can stream the body. Without
    /// a strong etag, an answer for a file of another size (a server without etags whose file
    /// changed) fails with [`DavError::PreconditionFailed`], as a changed etag would; with
    /// one, `If-Match` tells a change, and a size that differs is the server's listing being
    /// off (the reference, §3: it may fix its cached size during the GET), not checked.
    pub async fn get_range(
        &self,
        p: &RemotePath,
        (start, len): (u64, u64),
        size: u64,
        etag: Option<&str>,
    ) -> Result<RangeBody, DavError> {
        let what = p.to_string();
        let etag = etag.filter(|t| !t.starts_with("W/"));
        let size = etag.is_none().then_some(size);
        let url = self.url(p, false);
        // Not before the server said how it wants the credentials: reqwest's path learns it.
        let raw = self.raw.as_ref().filter(|_| self.auth.settled());
        if let Some(raw) = raw {
            self.gate().await?;
            let target = request_target(&url);
            let auth = self
                .auth
                .authorization("GET", &target, false)
                .map(|(v, _)| v);
            let cookies = reqwest::cookie::CookieStore::cookies(&*self.cookies, &url);
            let cookies = cookies.as_ref().and_then(|v| v.to_str().ok());
            let asked = raw.get(
                &target,
                (start, len, size),
                etag,
                (auth.as_deref(), cookies),
            );
            let Some(answer) = self.unless_unreachable(asked, true).await else {
                return Err(DavError::Timeout(self.root.to_string()));
            };
            match answer {
                Ok(rawget::Answer::Body(body)) => {
                    return Ok(RangeBody {
                        src: Source::Raw(body),
                        back: None,
                        what,
                        host: self.root.to_string(),
                    })
                }
                // A refused login, or a Digest nonce that expired: reqwest's path tells which.
                Ok(rawget::Answer::Refused(401)) => {}
                Ok(rawget::Answer::Refused(code)) => {
                    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
                    return Err(DavError::from_status(status, &Method::GET, &what));
                }
                // Any other answer: asked again through reqwest, which tells what it means.
                Ok(rawget::Answer::Other) => {}
                Err(rawget::RawError::Timeout) => {
                    let e = DavError::Timeout(self.root.to_string());
                    self.transport_failed(&e).await;
                    return Err(e);
                }
                // reqwest tries too, and says why it cannot connect.
                Err(rawget::RawError::Connect(why)) => {
                    tracing::debug!(%why, "plain HTTP GET could not connect");
                }
            }
        }
        let mut rb = self.request(Method::GET, url).header(
            header::RANGE,
            format!("bytes={}-{}", start, start + len.saturating_sub(1)),
        );
        if let Some(tag) = etag {
            rb = rb.header(header::IF_MATCH, tag);
        }
        let resp = self.send(rb).await?;
        let status = resp.status();
        let changed = |now: u64, was: u64| {
            DavError::PreconditionFailed(format!(
                "{what} changed on the server ({now} bytes, not {was})"
            ))
        };
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let cr = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let (got, _, total) = parse_content_range(cr).ok_or_else(|| {
                    DavError::BadResponse(format!("GET {what}: bad Content-Range {cr:?}"))
                })?;
                if let Some((now, was)) = other_size(total, size) {
                    return Err(changed(now, was));
                }
                if got != start {
                    return Err(DavError::BadResponse(format!(
                        "GET {what}: asked for offset {start}, got {got}"
                    )));
                }
                Ok(RangeBody {
                    src: Source::Http {
                        resp,
                        skip: 0,
                        whole: false,
                    },
                    back: None,
                    what,
                    host: self.root.to_string(),
                })
            }
            StatusCode::OK => {
                // A web page that no file server sent (neither an etag nor a modification
                // time): a network's login page answering in the server's place, whose bytes
                // must not pass for the file's.
                let h = resp.headers();
                if is_web_page(&resp)
                    && !h.contains_key(header::ETAG)
                    && !h.contains_key(header::LAST_MODIFIED)
                {
                    let e = not_the_server("GET", &what);
                    self.reach.went_offline(&e);
                    self.renew_connections();
                    return Err(e);
                }
                if let Some((now, was)) = other_size(resp.content_length(), size) {
                    return Err(changed(now, was));
                }
                Ok(RangeBody {
                    src: Source::Http {
                        resp,
                        skip: start,
                        whole: true,
                    },
                    back: None,
                    what,
                    host: self.root.to_string(),
                })
            }
            s => Err(DavError::from_status(s, &Method::GET, &what)),
        }
    }
}

/// The chunks of a response body, read by a blocking parser as they arrive (end of input
/// when the sender is dropped).
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<bytes::Bytes>,
    cur: bytes::Bytes,
    /// Bytes of `cur` already consumed (an index: the parser consumes a few bytes at a time,
    /// and splitting the `Bytes` each time costs two atomic reference count updates).
    pos: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let avail = std::io::BufRead::fill_buf(self)?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl std::io::BufRead for ChunkReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(c) => (self.cur, self.pos) = (c, 0),
                Err(_) => break,
            }
        }
        Ok(&self.cur[self.pos.min(self.cur.len())..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.cur.len());
    }
}

/// A GET body positioned at the requested start offset.
pub struct RangeBody {
    src: Source,
    /// A piece given back with [`RangeBody::push_back`], returned first.
    back: Option<bytes::Bytes>,
    what: String,
    host: String,
}

/// Where a body's bytes come from.
enum Source {
    /// reqwest, skipping `skip` bytes first (a server that sent the whole file).
    Http {
        resp: reqwest::Response,
        skip: u64,
        /// The server ignored the range and sends the whole file (`200`).
        whole: bool,
    },
    /// The socket itself (plain HTTP, see [`rawget`]).
    Raw(rawget::RawBody),
}

/// Pieces of a raw body handed out by [`RangeBody::chunk`].
const RAW_CHUNK: usize = 256 << 10;

impl RangeBody {
    /// The next piece of the body, `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, DavError> {
        if let Some(b) = self.back.take() {
            return Ok(Some(b));
        }
        let (resp, skip) = match &mut self.src {
            Source::Http { resp, skip, .. } => (resp, skip),
            Source::Raw(r) => {
                let mut buf = Vec::with_capacity(RAW_CHUNK);
                let n = r
                    .read_into(&mut buf, RAW_CHUNK)
                    .await
                    .map_err(|e| raw_error(e, &self.host))?;
                return Ok((n > 0).then(|| bytes::Bytes::from(buf)));
            }
        };
        loop {
            let c = resp
                .chunk()
                .await
                .map_err(|e| DavError::from_reqwest(&e, &self.host))?;
            match c {
                None => return Ok(None),
                Some(mut b) => {
                    if *skip > 0 {
                        let n = (*skip as usize).min(b.len());
                        *skip -= n as u64;
                        let _ = b.split_to(n);
                        if b.is_empty() {
                            continue;
                        }
                    }
                    return Ok(Some(b));
                }
            }
        }
    }

    /// Fills `buf` with the next body bytes; the number of bytes put there, less than its
    /// length only when the body ended first. A raw body is read straight into `buf`.
    pub async fn fill(&mut self, buf: &mut [u8]) -> Result<usize, DavError> {
        let mut filled = 0;
        while filled < buf.len() {
            if self.back.is_none() {
                if let Source::Raw(r) = &mut self.src {
                    let mut dst = &mut buf[filled..];
                    let want = dst.len();
                    let n = r
                        .read_into(&mut dst, want)
                        .await
                        .map_err(|e| raw_error(e, &self.host))?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                    continue;
                }
            }
            match self.chunk().await? {
                Some(c) => {
                    // A piece may hold the start of what comes next: kept for that.
                    let take = c.len().min(buf.len() - filled);
                    buf[filled..filled + take].copy_from_slice(&c[..take]);
                    filled += take;
                    if take < c.len() {
                        self.push_back(c.slice(take..));
                    }
                }
                None => break,
            }
        }
        Ok(filled)
    }

    /// True when the server ignored the range and sends the whole file: the body is from
    /// then on read from the file's first byte (nothing skipped any more). To be asked before
    /// reading the body.
    pub fn whole_file(&mut self) -> bool {
        match &mut self.src {
            Source::Http { skip, whole, .. } if *whole && self.back.is_none() => {
                *skip = 0;
                *whole = false;
                true
            }
            _ => false,
        }
    }

    /// Gives back the unused end of the last piece: the next [`RangeBody::chunk`] returns it.
    pub fn push_back(&mut self, rest: bytes::Bytes) {
        debug_assert!(self.back.is_none());
        self.back = Some(rest);
    }

    /// The decoded path being downloaded (for messages).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// True when the body is read straight from the socket (plain HTTP, see [`rawget`]).
    pub fn is_direct(&self) -> bool {
        matches!(self.src, Source::Raw(_))
    }

    /// The answer's `ETag` header, when strong: what the bytes are a version of.
    pub fn etag(&self) -> Option<String> {
        let tag = match &self.src {
            Source::Http { resp, .. } => resp
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string()),
            Source::Raw(body) => body.etag.clone(),
        };
        tag.filter(|t| t.starts_with('"'))
    }
}

/// A raw body's transport error, as reqwest's would be classified.
fn raw_error(e: std::io::Error, host: &str) -> DavError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        DavError::Timeout(host.to_string())
    } else {
        DavError::Connect(format!("{host} ({e})"))
    }
}

/// The first and last byte and the file's total length (`None` for `*`) of a
/// `Content-Range` (`bytes first-last/total`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total))
}

/// What a request line names of `url`: its path and query.
fn request_target(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// A server that asks only for authentication schemes nuage does not speak.
fn unsupported_auth(schemes: &str) -> DavError {
    DavError::Config(format!(
        "the server asks for {schemes} authentication, which nuage does not speak (it speaks \
         Basic, and Digest with MD5 or SHA-256)"
    ))
}

/// The length an answer gives for the file and the one expected, when both are known and
/// differ: the file changed (a server without etags), see [`DavClient::get_range`].
fn other_size(answered: Option<u64>, expected: Option<u64>) -> Option<(u64, u64)> {
    match (answered, expected) {
        (Some(now), Some(was)) if now != was => Some((now, was)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_cookies_are_kept_per_server_and_forgotten_at_once() {
        use reqwest::cookie::CookieStore;
        let c = SessionCookies::default();
        let url = Url::parse("https://cloud.example.org/remote.php/dav/files/u/").expect("url");
        let set = [
            header::HeaderValue::from_static("ocabc=s3ss10n; path=/; HttpOnly"),
            header::HeaderValue::from_static("oc_sessionPassphrase=p4ss; path=/; HttpOnly"),
        ];
        c.set_cookies(&mut set.iter(), &url);
        let sent = c.cookies(&url).expect("cookies sent back");
        let sent = sent.to_str().expect("ascii");
        assert!(sent.contains("ocabc=s3ss10n") && sent.contains("oc_sessionPassphrase=p4ss"));
        let other = Url::parse("https://elsewhere.example.org/").expect("url");
        assert!(c.cookies(&other).is_none(), "sent to another server");
        assert!(
            !format!("{c:?}").contains("s3ss10n"),
            "a session in a log line"
        );
        c.forget();
        assert!(c.cookies(&url).is_none());
    }

    #[test]
    fn a_json_answer_cut_short_is_a_broken_connection_not_nonsense() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let answer = |body: &'static str| {
            let r = hyper::Response::builder()
                .status(200)
                .body(body)
                .expect("response");
            rt.block_on(super::json_answer(reqwest::Response::from(r), "cloud/user"))
        };
        let whole = answer(r#"{"ocs":{"data":{"id":"alice"}}}"#).expect("whole");
        assert_eq!(
            whole.pointer("/ocs/data/id"),
            Some(&serde_json::json!("alice"))
        );
        let cut = answer(r#"{"ocs":{"data":{"i"#);
        assert!(matches!(cut, Err(super::DavError::Connect(_))), "{cut:?}");
        assert!(cut.is_err_and(|e| e.to_string().contains("cut short")));
        let html = answer("<html>portal</html>");
        assert!(
            matches!(html, Err(super::DavError::BadResponse(_))),
            "{html:?}"
        );
        let empty = answer("");
        assert!(
            matches!(empty, Err(super::DavError::BadResponse(_))),
            "{empty:?}"
        );
    }

    #[test]
    fn a_version_is_told_by_etag_else_by_size_and_time() {
        let at = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let e = |etag: Option<&str>, size: u64, secs: u64| super::Entry {
            path: super::RemotePath::new("/a.txt"),
            is_dir: false,
            size,
            mtime: at(secs),
            etag: etag.map(str::to_string),
            fileid: None,
            permissions: None,
            quota_used: None,
            quota_available: None,
        };
        // Etags decide when both sides have one (a weak and a strong form are the same).
        assert!(e(Some("W/\"x\""), 5, 100).is_version(Some("\"x\""), 9, Some(1)));
        assert!(!e(Some("\"y\""), 5, 100).is_version(Some("\"x\""), 5, Some(100)));
        // Without an etag: size and modification time (seconds).
        assert!(e(None, 5, 100).is_version(None, 5, Some(100)));
        assert!(!e(None, 6, 100).is_version(None, 5, Some(100)));
        assert!(!e(None, 5, 101).is_version(None, 5, Some(100)));
        assert!(!e(None, 5, 100).is_version(Some("\"x\""), 5, Some(101)));
        // No time recorded (a journal row from before it was): the size alone.
        assert!(e(None, 5, 100).is_version(None, 5, None));
        // A folder is never the file version it replaced.
        let mut d = e(None, 5, 100);
        d.is_dir = true;
        assert!(!d.is_version(None, 5, Some(100)));
    }

    #[test]
    fn chunk_reader_yields_the_chunks_in_order_then_ends() {
        use std::io::Read;
        let (tx, rx) = std::sync::mpsc::channel();
        for c in ["ab", "", "cde", "f"] {
            tx.send(bytes::Bytes::from(c)).expect("send");
        }
        drop(tx);
        let mut r = ChunkReader {
            rx,
            cur: bytes::Bytes::new(),
            pos: 0,
        };
        let mut out = String::new();
        r.read_to_string(&mut out).expect("read");
        assert_eq!(out, "abcdef");
    }

    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, 199, Some(1000)))
        );
        assert_eq!(
            parse_content_range("bytes 100-199/*"),
            Some((100, 199, None))
        );
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("bytes 0-9/ten"), None);
        assert_eq!(parse_content_range("nonsense"), None);
    }

    #[test]
    fn secret_is_redacted() {
        let c = Credentials {
            user: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn relative_paths_and_urls() {
        let root = Url::parse("http://127.0.0.1:1/remote.php/dav/files/al%20ice").expect("url");
        let c = DavClient::new(reqwest::Client::new(), root, None, &DavConfig::default());
        assert_eq!(
            c.relative("/remote.php/dav/files/al ice/"),
            Some(RemotePath::root())
        );
        assert_eq!(
            c.relative("/remote.php/dav/files/al ice/a b/c"),
            Some(RemotePath::new("a b/c"))
        );
        assert_eq!(c.relative("/elsewhere/x"), None);
        assert_eq!(
            c.url(&RemotePath::new("a b/#"), false).as_str(),
            "http://127.0.0.1:1/remote.php/dav/files/al%20ice/a%20b/%23"
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after("86400", now), Some(RETRY_AFTER_MAX));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn retryable_and_kinds() {
        assert!(DavError::Unavailable(503).is_retryable());
        assert!(!DavError::Unauthorized.is_retryable());
        assert_eq!(
            Error::from(DavError::InsufficientStorage).kind,
            ErrorKind::NoSpace
        );
        assert_eq!(
            Error::from(DavError::NotFound("x".into())).kind,
            ErrorKind::NotFound
        );
    }
}
