//! The server itself: routing, DAV methods, OCS endpoints.

use base64::Engine;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
mod shares;
mod trash;
mod versions;
use percent_encoding::percent_decode_str;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

use super::auth::{Accounts, Auth};

/// Server settings.
#[derive(Debug, Clone)]
pub struct FakeCloudConfig {
    /// Folder whose content is the user's files.
    pub root: PathBuf,
    /// Login name (what the user types).
    pub login: String,
    /// User id (what DAV paths use).
    pub user_id: String,
    /// Accepted passwords (account password and app passwords).
    pub passwords: Vec<String>,
    /// Quota in bytes; `None` is unlimited (`-3`).
    pub quota: Option<u64>,
    /// Names the server refuses (advertised in the capabilities, enforced on writes).
    pub names: NamingRules,
    /// Offer notify_push (a WebSocket at `/push/ws`, §9.2).
    pub notify_push: bool,
    /// Offer bulk upload (`dav.bulkupload`, §5.6).
    pub bulk_upload: bool,
}

/// The server's file name rules (nextcloud-protocol.md §10), as in the `files.forbidden_*`
/// capabilities.
#[derive(Debug, Clone)]
pub struct NamingRules {
    /// Whole names refused (case-insensitive).
    pub names: Vec<String>,
    /// Name parts before the first dot refused (case-insensitive).
    pub basenames: Vec<String>,
    /// Characters refused anywhere in a name.
    pub characters: Vec<String>,
    /// Name endings refused (case-insensitive).
    pub extensions: Vec<String>,
}

impl Default for NamingRules {
    /// The defaults of Nextcloud 30.
    fn default() -> Self {
        NamingRules {
            names: vec![".htaccess".into()],
            basenames: vec![],
            characters: vec!["\\".into(), "/".into()],
            extensions: vec![".filepart".into(), ".part".into()],
        }
    }
}

impl NamingRules {
    /// Adds the Windows-compatible rules (`occ files:windows-compatible-filenames --enable`).
    pub fn windows_compatible() -> Self {
        let mut r = NamingRules::default();
        for b in ["con", "prn", "aux", "nul"] {
            r.basenames.push(b.into());
        }
        for i in 0..10 {
            r.basenames.push(format!("com{i}"));
            r.basenames.push(format!("lpt{i}"));
        }
        for c in ["<", ">", ":", "\"", "|", "?", "*"] {
            r.characters.push(c.into());
        }
        r.extensions.push(" ".into());
        r.extensions.push(".".into());
        r
    }

    /// Why `name` is refused, if it is.
    fn problem(&self, name: &str) -> Option<String> {
        let lower = name.to_lowercase();
        let trimmed = name.trim();
        if trimmed.is_empty() || trimmed == "." || trimmed == ".." {
            return Some(format!("{name:?} is not a valid name"));
        }
        if name.len() > 250 {
            return Some("the name is longer than 250 bytes".into());
        }
        if name.chars().any(|c| (c as u32) < 32) {
            return Some("the name contains a control character".into());
        }
        if let Some(c) = self.characters.iter().find(|c| name.contains(c.as_str())) {
            return Some(format!("\"{c}\" is not allowed inside a filename"));
        }
        if self.names.iter().any(|n| n.to_lowercase() == lower) {
            return Some(format!("\"{name}\" is a forbidden file or folder name"));
        }
        if !name.starts_with('.') {
            let base = lower.split('.').next().unwrap_or("");
            if self.basenames.iter().any(|b| b.to_lowercase() == base) {
                return Some(format!("\"{base}\" is a reserved name"));
            }
        }
        if let Some(e) = self
            .extensions
            .iter()
            .find(|e| lower.ends_with(&e.to_lowercase()))
        {
            return Some(format!("\"{e}\" is a forbidden file type"));
        }
        None
    }
}

/// What the server counted.
#[derive(Debug, Default)]
pub struct Stats {
    /// Body bytes sent in GET responses.
    pub get_body_bytes: AtomicU64,
    /// PROPFIND requests with `Depth: infinity`.
    pub propfind_infinity: AtomicU64,
    /// Requests per method.
    pub methods: Mutex<HashMap<String, u64>>,
    /// Requests that failed authentication.
    pub unauthorized: AtomicU64,
    /// DAV requests whose Basic credentials were checked (no live session cookie).
    pub credential_checks: AtomicU64,
    /// DAV requests let in by their session cookie alone.
    pub session_requests: AtomicU64,
    /// Chunks received by chunked uploads.
    pub chunk_puts: AtomicU64,
    /// Chunk PUTs being received right now.
    pub chunk_puts_in_flight: AtomicU64,
    /// The most chunk PUTs received at the same time.
    pub chunk_puts_max_in_flight: AtomicU64,
    /// Chunks stored completely (the whole body received and written).
    pub chunks_stored: AtomicU64,
    /// Chunked uploads assembled.
    pub chunk_assemblies: AtomicU64,
    /// Plain PUT requests of whole files.
    pub file_puts: AtomicU64,
    /// Plain PUTs being answered right now (from their arrival, before any delay).
    pub file_puts_in_flight: AtomicU64,
    /// The most plain PUTs answered at the same time.
    pub file_puts_max_in_flight: AtomicU64,
    /// notify_push clients connected and authenticated now.
    pub push_clients: AtomicU64,
    /// Bulk upload requests.
    pub bulk_requests: AtomicU64,
    /// Files stored by bulk uploads.
    pub bulk_files: AtomicU64,
}

impl Stats {
    /// Number of requests seen with `method`.
    pub fn count(&self, method: &str) -> u64 {
        self.methods
            .lock()
            .map(|m| m.get(method).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Fault injection.
#[derive(Debug, Default)]
pub struct Knobs {
    /// Answer 503 to this many next DAV requests.
    pub fail_next: AtomicU32,
    /// Break off this many next GET bodies halfway (the connection is closed).
    pub cut_next_gets: AtomicU32,
    /// Answer every DAV request with 503 and `status.php` with maintenance.
    pub maintenance: AtomicBool,
    /// Refuse request bodies larger than this many bytes with 413 and an HTML page, as a
    /// proxy in front of the server does (nginx's `client_max_body_size`, §14.4); 0: none.
    pub max_body: AtomicU64,
    /// Seconds asked in a `Retry-After` header of those 503 answers (0: none), as
    /// Nextcloud's main entry point and many gateways send (nextcloud-protocol.md §14.5).
    pub maintenance_retry_after: AtomicU64,
    /// Delay before answering each DAV request, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Two-factor authentication enforced: the account password is refused (§7.1).
    pub two_factor: AtomicBool,
    /// Failed logins after which requests answer 429 (0: never).
    pub bruteforce_max: AtomicU32,
    /// Life of a login flow in milliseconds (0: the real 1200 s).
    pub flow_lifetime_ms: AtomicU64,
    /// Give no etag for files (no `getetag` in listings, no `ETag` header), as some WebDAV
    /// servers do; conditions on requests are still honoured.
    pub no_file_etags: AtomicBool,
    /// Answer a MOVE of these files with 423, as for files locked on the server (being edited
    /// online; nextcloud-protocol.md §4.3, §15). Paths relative to the user's root
    /// (`/docs/a.txt`).
    pub locked_for_moves: Mutex<std::collections::HashSet<String>>,
    /// Public links need a password ("Enforce password protection", §12).
    pub links_need_password: AtomicBool,
    /// Answer every PUT with 200 and a web page (with its own etag), storing nothing: a proxy
    /// or network portal answering in the server's place.
    pub swallow_puts: AtomicBool,
    /// Keep only half of the next chunks of chunked uploads (answered 201 all the same): a
    /// storage that lost data; the assembly then answers 400 (§5.2, sizes do not add up).
    pub truncate_next_chunks: AtomicU32,
    /// Answer 401 ("CSRF check not passed.", §7.6) to every DAV request that carries a
    /// session cookie: a server behind something that takes sessions for a browser's.
    pub refuse_sessions: AtomicBool,
}

/// Counts a request in a number of requests being answered, and the most seen at once,
/// until dropped.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(now: &'a AtomicU64, max: &AtomicU64) -> Self {
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(n, Ordering::SeqCst);
        InFlight(now)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) struct Shared {
    pub(super) push: tokio::sync::broadcast::Sender<String>,
    accounts: Mutex<Accounts>,
    cfg: FakeCloudConfig,
    pub(super) stats: Arc<Stats>,
    pub(super) knobs: Arc<Knobs>,
    addr: SocketAddr,
    activity: Mutex<super::activity::ActivityLog>,
    shares: Mutex<shares::Shares>,
    trashed: Mutex<Vec<trash::Trashed>>,
    /// Folders and files other users shared with this one: where they appear (relative to
    /// the user's root) and the permissions they were shared with (OCS bitmask).
    received: Mutex<Vec<(Vec<String>, u32)>>,
}

/// A running server on `127.0.0.1`. Dropping it stops it and closes every connection.
pub struct FakeCloud {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCloud {
    /// Starts a server on `127.0.0.1:port` (0 picks a free port).
    pub async fn start(cfg: FakeCloudConfig, port: u16) -> std::io::Result<FakeCloud> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let knobs = Knobs::default();
        knobs.bruteforce_max.store(10, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            push: tokio::sync::broadcast::channel(64).0,
            accounts: Mutex::new(Accounts::new(&cfg.login, &cfg.user_id, &cfg.passwords)),
            cfg,
            stats: Arc::new(Stats::default()),
            knobs: Arc::new(knobs),
            addr,
            activity: Mutex::new(Default::default()),
            shares: Mutex::new(Default::default()),
            trashed: Mutex::new(Vec::new()),
            received: Mutex::new(Vec::new()),
        });
        let s2 = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let s3 = s2.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s4 = s3.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(s4, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(FakeCloud { shared, task })
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The user's DAV root URL.
    pub fn dav_url(&self) -> String {
        format!(
            "{}/remote.php/dav/files/{}/",
            self.base_url(),
            crate::webdav::path::encode_segment(&self.shared.cfg.user_id)
        )
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    /// The fault knobs.
    pub fn knobs(&self) -> &Arc<Knobs> {
        &self.shared.knobs
    }

    /// The folder served.
    pub fn root(&self) -> &Path {
        &self.shared.cfg.root
    }

    /// Creates an app password as Settings > Security does.
    pub fn create_app_password(&self, client: &str) -> String {
        self.shared.accounts().new_app_password(client)
    }

    /// Revokes an app password as Settings > Security does; false when unknown.
    pub fn revoke_app_password(&self, app_password: &str) -> bool {
        self.shared.accounts().revoke(app_password)
    }

    /// Live app passwords and the client names they were created for.
    pub fn app_passwords(&self) -> Vec<(String, String)> {
        self.shared.accounts().app_passwords()
    }

    /// Sends a notify_push message (`notify_file`...) to every connected client, as the push
    /// daemon does when files change behind this server's DAV API.
    pub fn push(&self, msg: &str) {
        let _ = self.shared.push.send(msg.to_string());
    }

    /// Records an activity by `actor` (a colleague's user id, or the user's own) on `path`
    /// (relative to the user's root, `/Cours/plan.odt`): `file_created`, `file_changed`,
    /// `file_deleted`, `file_restored` or `shared` (§9.3).
    pub fn record_activity(&self, actor: &str, kind: &str, path: &str) {
        let fileid = std::fs::metadata(self.shared.file_path(path))
            .map(|m| m.ino())
            .unwrap_or(0);
        self.shared.record(actor, kind, path, None, fileid);
    }

    /// The public links of `path` (relative to the user's root): token, expiry date, whether
    /// a password protects it.
    pub fn public_links(&self, path: &str) -> Vec<(String, Option<String>, bool)> {
        self.shared.links_of(path)
    }

    /// The users `path` (relative to the user's root) is shared with, and each share's
    /// permissions (1 read, 2 update, 4 create, 8 delete, 16 share).
    pub fn user_shares(&self, path: &str) -> Vec<(String, u32)> {
        self.shared.user_shares_of(path)
    }

    /// Makes `path` (relative to the user's root, existing) a share received from another
    /// user with `permissions` (1 read, 2 update, 4 create, 8 delete, 16 share): listed with
    /// the matching `oc:permissions` letters, and changes it does not allow are refused with
    /// 403, as Nextcloud does.
    pub fn receive_share(&self, path: &str, permissions: u32) {
        let rel: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        self.shared
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((rel, permissions));
    }

    /// Forgets failed logins (`occ security:bruteforce:reset`).
    pub fn reset_throttle(&self) {
        self.shared.accounts().reset_throttle();
    }
}

impl Shared {
    /// The `oc:permissions` letters of the node at `rel` (protocol reference §2.3): all of
    /// them in the user's own files; inside a received share, those its permissions give.
    /// The root of a received share may always be moved, renamed or deleted (that unshares
    /// it).
    fn dav_permissions(&self, rel: &[String], is_dir: bool) -> String {
        let share = {
            let r = self.received.lock().unwrap_or_else(|p| p.into_inner());
            r.iter()
                .filter(|(root, _)| rel.starts_with(root))
                .max_by_key(|(root, _)| root.len())
                .map(|(root, perms)| (*perms, root.len() == rel.len()))
        };
        let Some((perms, root)) = share else {
            return if is_dir { "RGDNVCK" } else { "RGDNVW" }.to_string();
        };
        let mut s = String::from("S");
        if perms & 16 != 0 {
            s.push('R');
        }
        s.push('G');
        if root || perms & 8 != 0 {
            s.push('D');
        }
        if root || perms & 2 != 0 {
            s.push_str("NV");
        }
        if !is_dir && perms & 2 != 0 {
            s.push('W');
        }
        if is_dir && perms & 4 != 0 {
            s.push_str("CK");
        }
        s
    }

    /// The local file or folder behind `rel`.
    fn local(&self, rel: &[String]) -> PathBuf {
        let mut p = self.cfg.root.clone();
        p.extend(rel);
        p
    }

    /// True when the node at `rel` has the permission `letter`, or does not exist (what
    /// the request then gets is not a matter of permissions: 404, 409...).
    fn permits(&self, rel: &[String], letter: char) -> bool {
        match std::fs::metadata(self.local(rel)) {
            Ok(m) => self.dav_permissions(rel, m.is_dir()).contains(letter),
            Err(_) => true,
        }
    }

    /// Why a change of `rel` (to `dest` for a move or copy) is refused by the permissions,
    /// if it is: what Nextcloud answers 403 for.
    fn refused(&self, method: &str, rel: &[String], dest: Option<&[String]>) -> Option<Resp> {
        let parent = |r: &[String]| r[..r.len().saturating_sub(1)].to_vec();
        // Writing at `r`: replacing a folder (D) or a file's content (W) when it exists, else
        // a new file (C) or folder (K) in its folder.
        let may_write = |r: &[String], dir: bool| match std::fs::metadata(self.local(r)) {
            Ok(m) => {
                self.dav_permissions(r, m.is_dir())
                    .contains(if m.is_dir() { 'D' } else { 'W' })
            }
            Err(_) => self.permits(&parent(r), if dir { 'K' } else { 'C' }),
        };
        let ok = match (method, dest) {
            ("PUT", _) => may_write(rel, false),
            ("MKCOL", _) => self.permits(&parent(rel), 'K'),
            ("DELETE", _) => self.permits(rel, 'D'),
            ("MOVE", Some(d)) | ("COPY", Some(d)) => {
                let dir = self.local(rel).is_dir();
                let source = method == "COPY"
                    || (self.permits(rel, 'N')
                        && (parent(rel) == parent(d) || self.permits(rel, 'V')));
                source && may_write(d, dir)
            }
            _ => true,
        };
        (!ok).then(|| sabre_error(StatusCode::FORBIDDEN, "Forbidden", "Permission denied"))
    }

    /// The local file behind `path` (relative to the user's root).
    fn file_path(&self, path: &str) -> std::path::PathBuf {
        let mut p = self.cfg.root.clone();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            p.push(seg);
        }
        p
    }

    fn record(&self, actor: &str, kind: &str, path: &str, from: Option<&str>, fileid: u64) {
        self.activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(&self.cfg.user_id, actor, kind, path, from, fileid);
    }

    /// What a successful DAV write (`status`) did, as the Activity app records it.
    fn record_write(
        &self,
        method: &str,
        status: StatusCode,
        rel: &[String],
        dest: Option<&[String]>,
    ) {
        let path = |r: &[String]| format!("/{}", r.join("/"));
        let (kind, at, from) = match (method, dest) {
            ("PUT", _) if status == StatusCode::CREATED => ("file_created", path(rel), None),
            ("PUT", _) => ("file_changed", path(rel), None),
            ("MKCOL", _) => ("file_created", path(rel), None),
            ("DELETE", _) => ("file_deleted", path(rel), None),
            ("MOVE", Some(d)) => ("file_changed", path(d), Some(path(rel))),
            ("COPY", Some(d)) => ("file_created", path(d), None),
            _ => return,
        };
        let fileid = std::fs::metadata(self.file_path(&at))
            .map(|m| m.ino())
            .unwrap_or(0);
        let me = self.cfg.user_id.clone();
        self.record(&me, kind, &at, from.as_deref(), fileid);
    }

    pub(super) fn accounts(&self) -> std::sync::MutexGuard<'_, Accounts> {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flow_lifetime(&self) -> Duration {
        match self.knobs.flow_lifetime_ms.load(Ordering::Relaxed) {
            0 => Duration::from_secs(1200),
            ms => Duration::from_millis(ms),
        }
    }
}

/// Response body: a whole buffer or a stream of chunks, counting bytes as hyper takes them.
pub enum FakeBody {
    /// A complete body.
    Full(Option<Bytes>),
    /// Chunks from a reader task.
    Stream(mpsc::Receiver<std::io::Result<Bytes>>, Arc<Stats>),
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            FakeBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            FakeBody::Stream(rx, stats) => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    stats
                        .get_body_bytes
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FakeBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            FakeBody::Full(None) => SizeHint::with_exact(0),
            FakeBody::Stream(..) => SizeHint::default(),
        }
    }
}

type Resp = Response<FakeBody>;

fn resp(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(FakeBody::Full(Some(body.into())));
    *r.status_mut() = status;
    r
}

fn sabre_error(status: StatusCode, exception: &str, message: &str) -> Resp {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error xmlns:d=\"DAV:\" xmlns:s=\"http://sabredav.org/ns\">\
         <s:exception>Sabre\\DAV\\Exception\\{exception}</s:exception><s:message>{}</s:message></d:error>",
        xml_escape(message)
    );
    let mut r = resp(status, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    r
}

/// A `207 Multi-Status` answer.
fn multistatus(body: String) -> Resp {
    let mut r = resp(StatusCode::MULTI_STATUS, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, v: serde_json::Value) -> Resp {
    let mut r = resp(status, v.to_string());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The login and password of a Basic `Authorization` header.
fn basic_credentials(h: &HeaderMap) -> Option<(String, String)> {
    let raw = header(h, "authorization")?.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (u, p) = raw.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn authorized(shared: &Shared, h: &HeaderMap) -> Auth {
    let (user, pw) = basic_credentials(h).unwrap_or_default();
    let res = shared.accounts().check(
        &user,
        &pw,
        shared.knobs.two_factor.load(Ordering::Relaxed),
        shared.knobs.bruteforce_max.load(Ordering::Relaxed),
    );
    if !matches!(res, Auth::Account | Auth::App(_)) {
        shared.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
    }
    res
}

/// The DAV answer to a failed authentication (§7.6, §7.7).
fn unauthorized(auth: &Auth) -> Resp {
    let (status, exception, message, hint) = match auth {
        Auth::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests",
            Some("too many requests"),
        ),
        Auth::PasswordForbidden => (
            StatusCode::UNAUTHORIZED,
            "NotAuthenticated",
            "Cannot authenticate over ajax calls",
            Some("password login forbidden"),
        ),
        Auth::CsrfFailed => (
            StatusCode::UNAUTHORIZED,
            "NotAuthenticated",
            "CSRF check not passed.",
            None,
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            "NotAuthenticated",
            "No public access to this resource., Username or password was incorrect",
            None,
        ),
    };
    let hint = hint
        .map(|h| format!("<o:hint xmlns:o=\"http://owncloud.org/ns\">{h}</o:hint>"))
        .unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error xmlns:d=\"DAV:\" xmlns:s=\"http://sabredav.org/ns\">\
         <s:exception>Sabre\\DAV\\Exception\\{exception}</s:exception><s:message>{message}</s:message>{hint}</d:error>"
    );
    let mut r = resp(status, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            "WWW-Authenticate",
            HeaderValue::from_static("Basic realm=\"Nextcloud\", charset=\"UTF-8\""),
        );
    }
    r
}

fn is_ok(a: &Auth) -> bool {
    matches!(a, Auth::Account | Auth::App(_))
}

/// Reads a small form body (`application/x-www-form-urlencoded`).
async fn form(req: Request<Incoming>) -> HashMap<String, String> {
    use http_body_util::BodyExt;
    let body = match http_body_util::Limited::new(req.into_body(), 64 << 10)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return HashMap::new(),
    };
    decoded_pairs(&String::from_utf8_lossy(&body))
}

/// `k=v&k2=v2` (a query string or a form body), decoded (`%xx`, `+` for a space).
pub(crate) fn decoded_pairs(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |x: &str| {
                percent_decode_str(&x.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (!k.is_empty()).then(|| (dec(k), dec(v)))
        })
        .collect()
}

fn html(status: StatusCode, body: String) -> Resp {
    let mut r = resp(status, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// Login Flow v2 (§7.2, §7.3). `None` when `path` is not one of its URLs.
async fn login_flow(shared: &Shared, req: Request<Incoming>, path: &str) -> Option<Resp> {
    let p = path.strip_prefix("/index.php").unwrap_or(path);
    let base = format!("http://{}", shared.addr);
    let life = shared.flow_lifetime();
    let method = req.method().clone();
    if p == "/login/v2" && method == hyper::Method::POST {
        let client = header(req.headers(), "user-agent")
            .unwrap_or("unknown client")
            .to_string();
        let (poll, login) = shared.accounts().start_flow(&client);
        return Some(json(
            StatusCode::OK,
            serde_json::json!({"poll":{"token":poll,"endpoint":format!("{base}/login/v2/poll")},
                "login":format!("{base}/login/v2/flow/{login}")}),
        ));
    }
    if p == "/login/v2/poll" && method == hyper::Method::POST {
        let f = form(req).await;
        let token = f.get("token").cloned().unwrap_or_default();
        let res = shared.accounts().poll(&token, life);
        return Some(match res {
            Some((login, app)) => json(
                StatusCode::OK,
                serde_json::json!({"server": base, "loginName": login, "appPassword": app}),
            ),
            None => json(StatusCode::NOT_FOUND, serde_json::json!([])),
        });
    }
    if let Some(t) = p.strip_prefix("/login/v2/flow/") {
        if !shared.accounts().flow_open(t, life) {
            return Some(html(
                StatusCode::FORBIDDEN,
                "<p>The login token is invalid or has expired.</p>".into(),
            ));
        }
        let page = format!(
            "<!DOCTYPE html><html><body><h1>Connect to your account</h1>\
             <form method=\"post\" action=\"/login/v2/grant\">\
             <input type=\"hidden\" name=\"stateToken\" value=\"{t}\">\
             <input name=\"user\"><input type=\"password\" name=\"password\">\
             <button>Grant access</button></form>\
             <form method=\"post\" action=\"/login/v2/apptoken\">\
             <input type=\"hidden\" name=\"stateToken\" value=\"{t}\">\
             <input name=\"user\"><input type=\"password\" name=\"password\">\
             <button>Alternative log in using app password</button></form></body></html>"
        );
        return Some(html(StatusCode::OK, page));
    }
    if (p == "/login/v2/grant" || p == "/login/v2/apptoken") && method == hyper::Method::POST {
        let grant = p.ends_with("grant");
        let f = form(req).await;
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        let (t, user, pw) = (get("stateToken"), get("user"), get("password"));
        let res = if grant {
            shared.accounts().grant(&t, &user, &pw, life)
        } else {
            shared.accounts().apptoken(&t, &user, &pw, life)
        };
        return Some(match res {
            Ok(()) => html(
                StatusCode::OK,
                "<p>Account connected. You can close this window.</p>".into(),
            ),
            Err(msg) => html(StatusCode::FORBIDDEN, format!("<p>{msg}</p>")),
        });
    }
    None
}

/// The cookie naming a session (Nextcloud names it `oc` and its instance id).
const SESSION_COOKIE: &str = "ocfakeinstance";

/// The value of cookie `name` in a request's `Cookie` headers.
fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Authenticates a DAV request (§14.3): a live session cookie lets it in without checking
/// credentials, except for a `POST`, whose CSRF check a session fails (the session is
/// logged out and the credentials are checked instead); otherwise the Basic credentials
/// are checked and, when right, a session is opened: its id is answered, for the
/// `Set-Cookie` of the answer.
fn dav_authorized(
    shared: &Shared,
    h: &HeaderMap,
    method: &hyper::Method,
) -> (Auth, Option<String>) {
    if let Some(id) = cookie(h, SESSION_COOKIE) {
        if shared.knobs.refuse_sessions.load(Ordering::Relaxed) {
            shared.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            return (Auth::CsrfFailed, None);
        }
        let mut accounts = shared.accounts();
        if let Some(who) = accounts.session(id) {
            if method != hyper::Method::POST {
                shared
                    .stats
                    .session_requests
                    .fetch_add(1, Ordering::Relaxed);
                return (who, None);
            }
            accounts.end_session(id);
        }
    }
    shared
        .stats
        .credential_checks
        .fetch_add(1, Ordering::Relaxed);
    let a = authorized(shared, h);
    let session = is_ok(&a).then(|| shared.accounts().open_session(&a));
    (a, session)
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let mut session = None;
    let mut r = route(shared, req, &mut session).await;
    if let Some(id) = session {
        // As Nextcloud's: the session id and a passphrase, for the whole server.
        for c in [
            format!("{SESSION_COOKIE}={id}; path=/; HttpOnly; SameSite=Lax"),
            format!(
                "oc_sessionPassphrase={}; path=/; HttpOnly; SameSite=Lax",
                super::auth::token(40)
            ),
        ] {
            if let Ok(v) = HeaderValue::from_str(&c) {
                r.headers_mut().append(hyper::header::SET_COOKIE, v);
            }
        }
    }
    r
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>, session: &mut Option<String>) -> Resp {
    let method = req.method().clone();
    if let Ok(mut m) = shared.stats.methods.lock() {
        *m.entry(method.to_string()).or_default() += 1;
    }
    let path = req.uri().path().to_string();
    tracing::debug!(%method, %path, "fake cloud request");
    let max_body = shared.knobs.max_body.load(Ordering::Relaxed);
    let length = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if max_body > 0 && length.is_some_and(|l| l > max_body) {
        // Read and dropped first, as nginx's lingering close does, so that the client sees
        // the answer rather than a connection reset in the middle of its body.
        {
            use http_body_util::BodyExt;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
        }
        let mut r = resp(
            StatusCode::PAYLOAD_TOO_LARGE,
            "<html><head><title>413 Request Entity Too Large</title></head><body>\
             <center><h1>413 Request Entity Too Large</h1></center></body></html>"
                .to_string(),
        );
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html"),
        );
        return r;
    }
    if path == "/status.php" {
        let maint = shared.knobs.maintenance.load(Ordering::Relaxed);
        return json(
            StatusCode::OK,
            serde_json::json!({"installed": true, "maintenance": maint, "needsDbUpgrade": false,
                "version": "30.0.4.1", "versionstring": "30.0.4", "edition": "",
                "productname": "Nextcloud", "extendedSupport": false}),
        );
    }
    if let Some(rest) = path.strip_prefix("/ocs/v2.php/apps/files_sharing/api/v1/shares") {
        return shares::handle(&shared, req, rest).await;
    }
    if path.starts_with("/ocs/") {
        return ocs(&shared, &req, &path);
    }
    if path == "/push/ws" && shared.cfg.notify_push {
        return super::push::upgrade(shared.clone(), req);
    }
    if path.starts_with("/login/") || path.starts_with("/index.php/login/") {
        let p = path.clone();
        return match login_flow(&shared, req, &p).await {
            Some(r) => r,
            None => resp(StatusCode::NOT_FOUND, "not found"),
        };
    }
    if let Some(rest) = path.strip_prefix("/public.php/dav/files/") {
        let rest = rest.to_string();
        return public_link(&shared, req, &rest).await;
    }
    if path.starts_with("/remote.php/") {
        // Sabre authenticates before it resolves the path.
        if shared.knobs.maintenance.load(Ordering::Relaxed) {
            let mut r = sabre_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "System is in maintenance mode.",
            );
            match shared.knobs.maintenance_retry_after.load(Ordering::Relaxed) {
                0 => {}
                secs => {
                    r.headers_mut()
                        .insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
                }
            }
            return r;
        }
        let (a, opened) = dav_authorized(&shared, req.headers(), &method);
        if !is_ok(&a) {
            return unauthorized(&a);
        }
        *session = opened;
    }
    if path == "/remote.php/dav/bulk" {
        return if shared.cfg.bulk_upload && method == hyper::Method::POST {
            bulk_upload(&shared, req).await
        } else {
            sabre_error(StatusCode::NOT_FOUND, "NotFound", "no bulk upload here")
        };
    }
    let trash_prefix = format!(
        "/remote.php/dav/trashbin/{}",
        crate::webdav::path::encode_segment(&shared.cfg.user_id)
    );
    if let Some(rest) = path.strip_prefix(&trash_prefix) {
        return trash::handle(&shared, &req, &trash_prefix, rest);
    }
    let versions_prefix = format!(
        "/remote.php/dav/versions/{}",
        crate::webdav::path::encode_segment(&shared.cfg.user_id)
    );
    if let Some(rest) = path.strip_prefix(&versions_prefix) {
        return versions::handle(&shared, &req, &versions_prefix, rest);
    }
    let uploads_prefix = format!(
        "/remote.php/dav/uploads/{}",
        crate::webdav::path::encode_segment(&shared.cfg.user_id)
    );
    if let Some(rest) = path.strip_prefix(&uploads_prefix) {
        let Some(rel) = decode_rel(rest) else {
            return sabre_error(StatusCode::BAD_REQUEST, "BadRequest", "invalid path");
        };
        let up = Uploads {
            shared: shared.clone(),
            prefix: uploads_prefix,
        };
        return up.handle(req, rel).await;
    }
    let prefix = format!(
        "/remote.php/dav/files/{}",
        crate::webdav::path::encode_segment(&shared.cfg.user_id)
    );
    let rest = if let Some(r) = path.strip_prefix(&prefix) {
        r.to_string()
    } else if let Some(r) =
        path.strip_prefix(&format!("/remote.php/dav/files/{}", shared.cfg.user_id))
    {
        r.to_string()
    } else if let Some(r) = path.strip_prefix("/remote.php/webdav") {
        r.to_string()
    } else {
        return resp(StatusCode::NOT_FOUND, "not found");
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return resp(StatusCode::NOT_FOUND, "not found");
    }
    let stats = shared.stats.clone();
    let _put = (req.method() == hyper::Method::PUT)
        .then(|| InFlight::enter(&stats.file_puts_in_flight, &stats.file_puts_max_in_flight));
    let delay = shared.knobs.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if shared
        .knobs
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return sabre_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "injected failure",
        );
    }
    let Some(rel) = decode_rel(&rest) else {
        return sabre_error(StatusCode::BAD_REQUEST, "BadRequest", "invalid path");
    };
    let dav = Dav {
        shared: shared.clone(),
        prefix,
        link: None,
    };
    let writes = matches!(
        method.as_str(),
        "PUT" | "MKCOL" | "DELETE" | "MOVE" | "COPY"
    );
    let dest = if matches!(method.as_str(), "MOVE" | "COPY") {
        dav.dest_rel(&req).ok()
    } else {
        None
    };
    if writes {
        if let Some(r) = shared.refused(method.as_str(), &rel, dest.as_deref()) {
            return r;
        }
    }
    if method.as_str() == "PUT" && shared.knobs.swallow_puts.load(Ordering::Relaxed) {
        let mut r = resp(
            StatusCode::OK,
            "<html><body>Please sign in to the network.</body></html>",
        );
        r.headers_mut()
            .insert("Content-Type", HeaderValue::from_static("text/html"));
        // As a static page's server adds.
        r.headers_mut()
            .insert("ETag", HeaderValue::from_static("\"portal-page-1\""));
        return r;
    }
    let r = match method.as_str() {
        "PROPFIND" => dav.propfind(req, &rel).await,
        "GET" => dav.get(&req, &rel, true).await,
        "HEAD" => dav.get(&req, &rel, false).await,
        "PUT" => {
            shared.stats.file_puts.fetch_add(1, Ordering::Relaxed);
            dav.put(req, &rel).await
        }
        "MKCOL" => dav.mkcol(&rel),
        "DELETE" => dav.delete(&req, &rel),
        "MOVE"
            if shared
                .knobs
                .locked_for_moves
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&format!("/{}", rel.join("/"))) =>
        {
            sabre_error(StatusCode::LOCKED, "FileLocked", "file is locked")
        }
        "MOVE" => dav.move_copy(&req, &rel, true),
        "COPY" => dav.move_copy(&req, &rel, false),
        "OPTIONS" => {
            let mut r = resp(StatusCode::OK, "");
            r.headers_mut()
                .insert("DAV", HeaderValue::from_static("1, 3, extended-mkcol"));
            r
        }
        _ => sabre_error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "method not supported by the fake server",
        ),
    };
    let mut r = r;
    if shared.knobs.no_file_etags.load(Ordering::Relaxed) && method.as_str() != "PROPFIND" {
        r.headers_mut().remove("ETag");
        r.headers_mut().remove("OC-ETag");
    }
    if writes && r.status().is_success() {
        shared.record_write(method.as_str(), r.status(), &rel, dest.as_deref());
        let _ = shared.push.send("notify_file".to_string());
    }
    r
}

async fn bulk_upload(shared: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    use http_body_util::BodyExt;
    shared.stats.bulk_requests.fetch_add(1, Ordering::Relaxed);
    let boundary = header(req.headers(), "content-type")
        .filter(|ct| ct.starts_with("multipart/related"))
        .and_then(|ct| {
            ct.split(';')
                .filter_map(|p| p.trim().strip_prefix("boundary="))
                .next()
                .map(|b| b.trim_matches('"').to_string())
        });
    let Some(boundary) = boundary else {
        return sabre_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "multipart/related expected",
        );
    };
    let body = match http_body_util::Limited::new(req.into_body(), 512 << 20)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return sabre_error(StatusCode::BAD_REQUEST, "BadRequest", "body"),
    };
    let Some(parts) = super::bulk::parse(&body, &boundary) else {
        return sabre_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "malformed multipart body",
        );
    };
    let mut out = serde_json::Map::new();
    let mut stored = false;
    for p in parts {
        let Some(path) = p.headers.get("x-file-path").cloned() else {
            return sabre_error(StatusCode::BAD_REQUEST, "BadRequest", "X-File-Path missing");
        };
        let rel: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let result = if rel.is_empty() || rel.iter().any(|s| s == "." || s == "..") {
            Err("invalid path".to_string())
        } else if let Some(why) = rel.last().and_then(|n| shared.cfg.names.problem(n)) {
            Err(why)
        } else if let Some(why) = super::bulk::checksum_problem(&p) {
            Err(why)
        } else if shared.refused("PUT", &rel, None).is_some() {
            Err("Permission denied".to_string())
        } else {
            super::bulk::store(&shared.cfg.root, &rel, &p)
        };
        let entry = match result {
            Ok(()) => {
                stored = true;
                shared.stats.bulk_files.fetch_add(1, Ordering::Relaxed);
                let md = std::fs::metadata(shared.local(&rel)).ok();
                serde_json::json!({"error": false,
                    "etag": md.as_ref().map(file_etag).unwrap_or_default(),
                    "fileid": md.as_ref().map(|m| m.ino().to_string()).unwrap_or_default(),
                    "permissions": shared.dav_permissions(&rel, false)})
            }
            Err(message) => serde_json::json!({"error": true, "message": message}),
        };
        out.insert(path, entry);
    }
    if stored {
        let _ = shared.push.send("notify_file".to_string());
    }
    json(StatusCode::OK, serde_json::Value::Object(out))
}

/// A plain response (for the push module).
pub(super) fn plain(status: StatusCode, body: &'static str) -> Resp {
    resp(status, body)
}

/// Decodes `/a%20b/c` into `["a b", "c"]`, refusing `.`/`..` segments.
fn decode_rel(rest: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for seg in rest.split('/').filter(|s| !s.is_empty()) {
        let d = percent_decode_str(seg).decode_utf8().ok()?.into_owned();
        if d == "." || d == ".." || d.contains('/') || d.contains('\0') {
            return None;
        }
        out.push(d);
    }
    Some(out)
}

fn ocs(shared: &Shared, req: &Request<Incoming>, path: &str) -> Resp {
    let v2 = path.starts_with("/ocs/v2.php/");
    let a = authorized(shared, req.headers());
    if a == Auth::Throttled {
        return json(
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({"ocs":{"meta":{"status":"failure","statuscode":429,
                "message":"Reached maximum delay"},"data":[]}}),
        );
    }
    if !is_ok(&a) {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"ocs":{"meta":{"status":"failure","statuscode":997,
                "message":"Current user is not logged in"},"data":[]}}),
        );
    }
    let forbidden = |msg: &str| {
        json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"ocs":{"meta":{"status":"failure","statuscode":403,
                "message":msg},"data":[]}}),
        )
    };
    let ok_code = if v2 { 200 } else { 100 };
    let meta = serde_json::json!({"status":"ok","statuscode":ok_code,"message":"OK"});
    let endpoint = path
        .trim_start_matches("/ocs/v2.php")
        .trim_start_matches("/ocs/v1.php");
    let names = &shared.cfg.names;
    let push_caps = if shared.cfg.notify_push {
        serde_json::json!({"type":["files","activities","notifications"],
            "endpoints":{"websocket":format!("ws://{}/push/ws", shared.addr),
                "pre_auth":format!("http://{}/index.php/apps/notify_push/pre_auth", shared.addr)}})
    } else {
        serde_json::Value::Null
    };
    if let Some(filter) = endpoint.strip_prefix("/apps/activity/api/v2/activity") {
        return activity(shared, req, filter, meta);
    }
    match endpoint {
        "/core/getapppassword" if req.method() == hyper::Method::GET => match a {
            Auth::Account => {
                let client = header(req.headers(), "user-agent").unwrap_or("unknown client");
                let t = shared.accounts().new_app_password(client);
                json(
                    StatusCode::OK,
                    serde_json::json!({"ocs":{"meta":meta,"data":{"apppassword":t}}}),
                )
            }
            _ => forbidden("You cannot request an new apppassword with an apppassword"),
        },
        "/core/apppassword" if req.method() == hyper::Method::DELETE => match a {
            Auth::App(t) => {
                shared.accounts().revoke(&t);
                json(
                    StatusCode::OK,
                    serde_json::json!({"ocs":{"meta":meta,"data":[]}}),
                )
            }
            _ => forbidden("no app password in use"),
        },
        "/cloud/user" => {
            let used = tree_size(&shared.cfg.root);
            let (quota, free) = match shared.cfg.quota {
                Some(q) => (q as i64, q.saturating_sub(used) as i64),
                None => (-3, 1 << 40),
            };
            json(
                StatusCode::OK,
                serde_json::json!({"ocs":{"meta":meta,"data":{
                    "id": shared.cfg.user_id, "display-name": shared.cfg.login,
                    "email": null,
                    "quota":{"free":free,"used":used,"total":used as i64 + free,
                             "relative":0.0,"quota":quota}}}}),
            )
        }
        "/cloud/capabilities" => json(
            StatusCode::OK,
            without_nulls(serde_json::json!({"ocs":{"meta":meta,"data":{
                "version":{"major":30,"minor":0,"micro":4,"string":"30.0.4","edition":""},
                "capabilities":{
                    "core":{"pollinterval":60,"webdav-root":"remote.php/webdav"},
                    "activity":{"apiv2":["filters","previews","rich-strings"]},
                    "files_sharing":{"api_enabled":true,"public":{"enabled":true,
                        "password":{"enforced":shared.knobs.links_need_password.load(Ordering::Relaxed)},
                        "expire_date":{"enabled":false}}},
                    "notify_push": push_caps,
                    "bruteforce":{"delay":0},
                    "dav": if shared.cfg.bulk_upload {
                        serde_json::json!({"chunking":"1.0","bulkupload":"1.0"})
                    } else {
                        serde_json::json!({"chunking":"1.0"})
                    },
                    "files":{"bigfilechunking":true,"undelete":true,"versioning":true,
                        "blacklisted_files":names.names,
                        "forbidden_filenames":names.names,
                        "forbidden_filename_basenames":names.basenames,
                        "forbidden_filename_characters":names.characters,
                        "forbidden_filename_extensions":names.extensions}}}}})),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"ocs":{"meta":{"status":"failure","statuscode":998,
                "message":"Invalid query"},"data":[]}}),
        ),
    }
}

/// `GET …/apps/activity/api/v2/activity[/<filter>]` (§9.3): a page of activities, 304 when
/// there are none (more), `X-Activity-Last-Given` and a `Link` to the next page.
fn activity(
    shared: &Shared,
    req: &Request<Incoming>,
    filter: &str,
    meta: serde_json::Value,
) -> Resp {
    let filter = match filter.trim_start_matches('/') {
        "" => "all",
        f => f,
    };
    let q = super::activity::query_params(req.uri().query());
    let since = q.get("since").and_then(|s| s.parse::<i64>().ok());
    let limit = q
        .get("limit")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 200);
    let asc = q.get("sort").is_some_and(|s| s == "asc");
    let page = shared
        .activity
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .query(&shared.cfg.user_id, filter, since, asc, limit);
    let Some(page) = page else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"ocs":{"meta":{"status":"failure","statuscode":404,
                "message":"Filter not found"},"data":[]}}),
        );
    };
    let id = |a: &serde_json::Value| a["activity_id"].as_i64().unwrap_or(0);
    let (Some(first), Some(last)) = (page.items.first().map(id), page.items.last().map(id)) else {
        return resp(StatusCode::NOT_MODIFIED, "");
    };
    let mut r = json(
        StatusCode::OK,
        serde_json::json!({"ocs":{"meta":meta,"data":page.items}}),
    );
    let h = r.headers_mut();
    h.insert("X-Activity-Last-Given", hv(&last.to_string()));
    if since.is_none() {
        h.insert("X-Activity-First-Known", hv(&first.to_string()));
    }
    if page.more {
        let next = format!(
            "<http://{}/ocs/v2.php/apps/activity/api/v2/activity/{filter}?format=json&since={last}&limit={limit}&sort={}>; rel=\"next\"",
            shared.addr,
            if asc { "asc" } else { "desc" }
        );
        h.insert("Link", hv(&next));
    }
    r
}

/// The capabilities without the keys of apps that are not installed (null values).
fn without_nulls(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(caps) = v
        .pointer_mut("/ocs/data/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        caps.retain(|_, x| !x.is_null());
    }
    v
}

fn tree_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += tree_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

const UPLOAD_PREFIX: &str = ".fake-upload-";

fn mtime_nanos(m: &std::fs::Metadata) -> u128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Etag of a file: changes with every write, like Nextcloud's. The change time (in
/// nanoseconds) moves on every write, rename and mtime change, even when size and mtime end up
/// the same as before.
fn file_etag(m: &std::fs::Metadata) -> String {
    format!(
        "\"{:x}{:x}{:x}{:x}\"",
        mtime_nanos(m),
        m.len(),
        m.ctime() as u64 * 1_000_000_000 + m.ctime_nsec() as u64,
        m.ino()
    )
}

/// Etag of a folder: a hash of its whole subtree (names, types, mtimes, sizes), so that any
/// change below changes it, as Nextcloud's etag propagation does.
fn dir_etag(p: &Path) -> String {
    fn walk(p: &Path, h: &mut std::collections::hash_map::DefaultHasher) {
        let mut names: Vec<_> = std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        for n in names {
            if let Ok(m) = std::fs::symlink_metadata(&n) {
                n.file_name().hash(h);
                m.is_dir().hash(h);
                if m.is_dir() {
                    walk(&n, h);
                } else {
                    mtime_nanos(&m).hash(h);
                    m.len().hash(h);
                }
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    walk(p, &mut h);
    format!("\"d{:016x}\"", h.finish())
}

struct Dav {
    shared: Arc<Shared>,
    prefix: String,
    /// For a public link's WebDAV (`/public.php/dav/files/<token>`, §1.1): the shared
    /// folder's path below the user's root. Its links are read-only here.
    link: Option<Vec<String>>,
}

/// A public link's WebDAV (`BASE/public.php/dav/files/<token>/...`, §1.1): the shared
/// folder, read-only (the links this server makes are); a link with a password wants it as
/// Basic authentication (user `anonymous`).
async fn public_link(shared: &Arc<Shared>, req: Request<Incoming>, rest: &str) -> Resp {
    let (token, inner) = rest.split_once('/').unwrap_or((rest, ""));
    let Some((path, password)) = shared.link(token) else {
        return sabre_error(StatusCode::NOT_FOUND, "NotFound", "no such share");
    };
    if let Some(want) = password {
        let given = basic_credentials(req.headers()).map(|(_, p)| p);
        if given.as_deref() != Some(want.as_str()) {
            return unauthorized(&Auth::Failed);
        }
    }
    let Some(rel) = decode_rel(&format!("/{inner}")) else {
        return sabre_error(StatusCode::BAD_REQUEST, "BadRequest", "invalid path");
    };
    let dav = Dav {
        shared: shared.clone(),
        prefix: format!("/public.php/dav/files/{token}"),
        link: Some(
            path.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ),
    };
    match req.method().as_str() {
        "PROPFIND" => dav.propfind(req, &rel).await,
        "GET" => dav.get(&req, &rel, true).await,
        "HEAD" => dav.get(&req, &rel, false).await,
        _ => sabre_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "this share is read-only",
        ),
    }
}

impl Dav {
    /// A 400 `InvalidPath` when the new name breaks the server's naming rules (§10).
    fn refuse_name(&self, rel: &[String]) -> Option<Resp> {
        let name = rel.last()?;
        self.shared
            .cfg
            .names
            .problem(name)
            .map(|why| sabre_error(StatusCode::BAD_REQUEST, "InvalidPath", &why))
    }

    fn local(&self, rel: &[String]) -> PathBuf {
        match &self.link {
            Some(base) => self.shared.local(&[base.as_slice(), rel].concat()),
            None => self.shared.local(rel),
        }
    }

    fn href(&self, rel: &[String], dir: bool) -> String {
        let mut s = self.prefix.clone();
        for seg in rel {
            s.push('/');
            s.push_str(&crate::webdav::path::encode_segment(seg));
        }
        if dir || rel.is_empty() {
            s.push('/');
        }
        s
    }

    fn etag_of(&self, p: &Path, m: &std::fs::Metadata) -> String {
        if m.is_dir() {
            dir_etag(p)
        } else {
            file_etag(m)
        }
    }

    fn prop_response(&self, rel: &[String], p: &Path, m: &std::fs::Metadata) -> String {
        let mtime = m.modified().unwrap_or(UNIX_EPOCH);
        let mut props = String::new();
        if m.is_dir() {
            props.push_str("<d:resourcetype><d:collection/></d:resourcetype>");
        } else {
            props.push_str("<d:resourcetype/>");
        }
        if m.is_dir() || !self.shared.knobs.no_file_etags.load(Ordering::Relaxed) {
            props.push_str(&format!(
                "<d:getetag>{}</d:getetag>",
                xml_escape(&self.etag_of(p, m))
            ));
        }
        props.push_str(&format!(
            "<d:getlastmodified>{}</d:getlastmodified>",
            httpdate::fmt_http_date(mtime)
        ));
        let size = if m.is_dir() { tree_size(p) } else { m.len() };
        if !m.is_dir() {
            props.push_str(&format!(
                "<d:getcontentlength>{}</d:getcontentlength><d:getcontenttype>application/octet-stream</d:getcontenttype>",
                m.len()
            ));
        }
        let perms = match &self.link {
            // Read-only link.
            Some(_) => "G".to_string(),
            None => self.shared.dav_permissions(rel, m.is_dir()),
        };
        props.push_str(&format!(
            "<oc:fileid>{}</oc:fileid><oc:id>{:08}ocfake</oc:id><oc:permissions>{perms}</oc:permissions><oc:size>{size}</oc:size>",
            m.ino(),
            m.ino()
        ));
        if m.is_dir() {
            let used = tree_size(&self.shared.cfg.root);
            let avail: i64 = match self.shared.cfg.quota {
                Some(q) => q.saturating_sub(used) as i64,
                None => -3,
            };
            props.push_str(&format!(
                "<d:quota-used-bytes>{used}</d:quota-used-bytes><d:quota-available-bytes>{avail}</d:quota-available-bytes>"
            ));
        }
        format!(
            "<d:response><d:href>{}</d:href><d:propstat><d:prop>{props}</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>",
            xml_escape(&self.href(rel, m.is_dir()))
        )
    }

    /// Answers a `PROPFIND` once its body is read (as Sabre does, to know the properties
    /// asked for): answering first and closing a connection with a body still arriving
    /// would reset it, losing the answer on its way.
    async fn propfind(&self, req: Request<Incoming>, rel: &[String]) -> Resp {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        if body.collect().await.is_err() {
            return sabre_error(StatusCode::BAD_REQUEST, "BadRequest", "body");
        }
        let req = &parts;
        let depth = header(&req.headers, "depth")
            .unwrap_or("1")
            .to_ascii_lowercase();
        let p = self.local(rel);
        let Ok(m) = std::fs::metadata(&p) else {
            return sabre_error(StatusCode::NOT_FOUND, "NotFound", "File not found");
        };
        let mut out = String::from(
            "<?xml version=\"1.0\"?>\n<d:multistatus xmlns:d=\"DAV:\" xmlns:s=\"http://sabredav.org/ns\" xmlns:oc=\"http://owncloud.org/ns\" xmlns:nc=\"http://nextcloud.org/ns\">",
        );
        out.push_str(&self.prop_response(rel, &p, &m));
        let levels = match depth.as_str() {
            "0" => 0,
            "infinity" => {
                self.shared
                    .stats
                    .propfind_infinity
                    .fetch_add(1, Ordering::Relaxed);
                u32::MAX
            }
            _ => 1,
        };
        if m.is_dir() && levels > 0 {
            self.list_into(&mut out, rel, &p, levels);
        }
        out.push_str("</d:multistatus>");
        multistatus(out)
    }

    fn list_into(&self, out: &mut String, rel: &[String], p: &Path, levels: u32) {
        let mut names: Vec<String> = std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with(UPLOAD_PREFIX))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for n in names {
            let cp = p.join(&n);
            if let Ok(cm) = std::fs::metadata(&cp) {
                let mut crel = rel.to_vec();
                crel.push(n);
                out.push_str(&self.prop_response(&crel, &cp, &cm));
                if cm.is_dir() && levels > 1 {
                    self.list_into(out, &crel, &cp, levels - 1);
                }
            }
        }
    }

    async fn get(&self, req: &Request<Incoming>, rel: &[String], body: bool) -> Resp {
        let p = self.local(rel);
        let Ok(m) = std::fs::metadata(&p) else {
            return sabre_error(StatusCode::NOT_FOUND, "NotFound", "File not found");
        };
        if m.is_dir() {
            return resp(
                StatusCode::OK,
                "This is the WebDAV interface. It can only be accessed by WebDAV clients.",
            );
        }
        let etag = file_etag(&m);
        if let Some(im) = header(req.headers(), "if-match") {
            if im.trim() != "*" && !im.split(',').any(|t| t.trim() == etag) {
                let mut r = sabre_error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "An If-Match header was specified, but none of the specified ETags matched.",
                );
                r.headers_mut().insert("ETag", hv(&etag));
                return r;
            }
        }
        if let Some(inm) = header(req.headers(), "if-none-match") {
            if inm.split(',').any(|t| t.trim() == etag || t.trim() == "*") {
                let mut r = resp(StatusCode::NOT_MODIFIED, "");
                r.headers_mut().insert("ETag", hv(&etag));
                return r;
            }
        }
        let size = m.len();
        let range = header(req.headers(), "range").and_then(|r| parse_range(r, size));
        let (status, start, len) = match range {
            Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
            Some(Err(())) => {
                let mut r = resp(StatusCode::RANGE_NOT_SATISFIABLE, "");
                r.headers_mut()
                    .insert("Content-Range", hv(&format!("bytes */{size}")));
                return r;
            }
            None => (StatusCode::OK, 0, size),
        };
        let mut r = if body && len > 0 {
            let (tx, rx) = mpsc::channel(8);
            let path = p.clone();
            let cut = self
                .shared
                .knobs
                .cut_next_gets
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let send = if cut { len / 2 } else { len };
            tokio::task::spawn_blocking(move || {
                if stream_file(&path, start, send, &tx) && cut {
                    // Fewer bytes than announced: the body ends in an error, which closes
                    // the connection.
                    let _ = tx.blocking_send(Err(std::io::Error::other("body cut off")));
                }
            });
            let mut r = Response::new(FakeBody::Stream(rx, self.shared.stats.clone()));
            *r.status_mut() = status;
            r
        } else {
            let mut r = Response::new(FakeBody::Full(None));
            *r.status_mut() = status;
            r
        };
        let h = r.headers_mut();
        h.insert("Content-Length", hv(&len.to_string()));
        h.insert("Accept-Ranges", HeaderValue::from_static("bytes"));
        h.insert("ETag", hv(&etag));
        h.insert("OC-ETag", hv(&etag));
        h.insert(
            "Last-Modified",
            hv(&httpdate::fmt_http_date(m.modified().unwrap_or(UNIX_EPOCH))),
        );
        h.insert(
            "Content-Type",
            HeaderValue::from_static("application/octet-stream"),
        );
        if status == StatusCode::PARTIAL_CONTENT {
            h.insert(
                "Content-Range",
                hv(&format!("bytes {}-{}/{}", start, start + len - 1, size)),
            );
        }
        r
    }

    async fn put(&self, req: Request<Incoming>, rel: &[String]) -> Resp {
        if rel.is_empty() {
            return sabre_error(
                StatusCode::CONFLICT,
                "Conflict",
                "PUT is not allowed on non-files.",
            );
        }
        if let Some(r) = self.refuse_name(rel) {
            return r;
        }
        let p = self.local(rel);
        let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
        if !parent.is_dir() {
            return sabre_error(
                StatusCode::CONFLICT,
                "Conflict",
                "Parent folder does not exist",
            );
        }
        let existing = std::fs::metadata(&p).ok();
        if existing.as_ref().map(|m| m.is_dir()).unwrap_or(false) {
            return sabre_error(
                StatusCode::CONFLICT,
                "Conflict",
                "PUT is not allowed on non-files.",
            );
        }
        let h = req.headers().clone();
        if let Some(im) = header(&h, "if-match") {
            let cur = existing.as_ref().map(file_etag);
            if im.trim() != "*" && cur.as_deref() != Some(im.trim()) || existing.is_none() {
                return sabre_error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "An If-Match header was specified, but none of the specified ETags matched.",
                );
            }
        }
        if header(&h, "if-none-match")
            .map(|v| v.trim() == "*")
            .unwrap_or(false)
            && existing.is_some()
        {
            return sabre_error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "An If-None-Match header was specified, but the file exists.",
            );
        }
        let expected: Option<u64> = header(&h, "content-length").and_then(|v| v.parse().ok());
        if let (Some(q), Some(len)) = (self.shared.cfg.quota, expected) {
            let used =
                tree_size(&self.shared.cfg.root) - existing.as_ref().map(|m| m.len()).unwrap_or(0);
            if used + len > q {
                return sabre_error(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "InsufficientStorage",
                    "Insufficient space",
                );
            }
        }
        let tmp = parent.join(format!(
            "{UPLOAD_PREFIX}{}",
            std::process::id() as u64 * 1_000_000 + rand_suffix()
        ));
        let Ok(mut f) = std::fs::File::create(&tmp) else {
            return sabre_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Exception",
                "cannot create part file",
            );
        };
        let mut body = req.into_body();
        let mut written = 0u64;
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        written += data.len() as u64;
                        if f.write_all(&data).is_err() {
                            let _ = std::fs::remove_file(&tmp);
                            return sabre_error(
                                StatusCode::INSUFFICIENT_STORAGE,
                                "InsufficientStorage",
                                "write failed",
                            );
                        }
                    }
                }
                Some(Err(_)) => {
                    let _ = std::fs::remove_file(&tmp);
                    return sabre_error(StatusCode::BAD_REQUEST, "BadRequest", "body read failed");
                }
                None => break,
            }
        }
        if let Some(exp) = expected {
            if exp != written {
                let _ = std::fs::remove_file(&tmp);
                return sabre_error(StatusCode::BAD_REQUEST, "BadRequest", &format!("Expected filesize of {exp} bytes but read (from Nextcloud client) and wrote (to Nextcloud storage) {written} bytes. Could either be a network problem on the sending side or a problem writing to the storage on the server side."));
            }
        }
        let mtime_ok = header(&h, "x-oc-mtime")
            .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
            .filter(|s| *s > 86400);
        if let Some(secs) = mtime_ok {
            let _ = f.set_modified(UNIX_EPOCH + Duration::from_secs(secs));
        }
        let _ = f.sync_all();
        drop(f);
        if existing.is_some() {
            // The content replaced stays as a version (§13).
            self.shared.keep_version(&rel.join("/"), &p);
        }
        // A file replaced keeps its id (its inode here), as on Nextcloud: its content is
        // copied in; a new file is renamed into place.
        let placed = if existing.is_some() {
            let mtime = std::fs::metadata(&tmp).and_then(|m| m.modified());
            let copied = std::fs::copy(&tmp, &p).is_ok();
            if let (true, Ok(t)) = (copied, mtime) {
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) {
                    let _ = f.set_modified(t);
                }
            }
            let _ = std::fs::remove_file(&tmp);
            copied
        } else {
            std::fs::rename(&tmp, &p).is_ok()
        };
        if !placed {
            let _ = std::fs::remove_file(&tmp);
            return sabre_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Exception",
                "rename failed",
            );
        }
        let m = match std::fs::metadata(&p) {
            Ok(m) => m,
            Err(_) => {
                return sabre_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Exception",
                    "stat failed",
                )
            }
        };
        let mut r = resp(
            if existing.is_some() {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::CREATED
            },
            "",
        );
        let etag = file_etag(&m);
        let hm = r.headers_mut();
        hm.insert("ETag", hv(&etag));
        hm.insert("OC-ETag", hv(&etag));
        hm.insert("OC-FileId", hv(&format!("{:08}ocfake", m.ino())));
        if mtime_ok.is_some() {
            hm.insert("X-OC-MTime", HeaderValue::from_static("accepted"));
        }
        r
    }

    fn mkcol(&self, rel: &[String]) -> Resp {
        if let Some(r) = self.refuse_name(rel) {
            return r;
        }
        let p = self.local(rel);
        if p.exists() {
            return sabre_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The resource you tried to create already exists",
            );
        }
        if !p.parent().map(Path::is_dir).unwrap_or(false) {
            return sabre_error(
                StatusCode::CONFLICT,
                "Conflict",
                "Parent node does not exist",
            );
        }
        match std::fs::create_dir(&p) {
            Ok(()) => resp(StatusCode::CREATED, ""),
            Err(_) => sabre_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Exception",
                "mkdir failed",
            ),
        }
    }

    fn delete(&self, req: &Request<Incoming>, rel: &[String]) -> Resp {
        if rel.is_empty() {
            return sabre_error(StatusCode::FORBIDDEN, "Forbidden", "cannot delete the root");
        }
        let p = self.local(rel);
        let Ok(m) = std::fs::metadata(&p) else {
            return sabre_error(StatusCode::NOT_FOUND, "NotFound", "File not found");
        };
        if let Some(im) = header(req.headers(), "if-match") {
            if im.trim() != self.etag_of(&p, &m) && im.trim() != "*" {
                return sabre_error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "etag mismatch",
                );
            }
        }
        // Into the trash bin (§13), as Nextcloud does with its files_trashbin app.
        let r = self.shared.trash(&p, &rel.join("/")).or_else(|_| {
            if m.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            }
        });
        match r {
            Ok(()) => resp(StatusCode::NO_CONTENT, ""),
            Err(_) => sabre_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Exception",
                "delete failed",
            ),
        }
    }

    /// The `Destination` of a MOVE or COPY, relative to the user's root; else the answer.
    fn dest_rel(&self, req: &Request<Incoming>) -> Result<Vec<String>, Box<Resp>> {
        let Some(dest) = header(req.headers(), "destination") else {
            return Err(Box::new(sabre_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The destination header was not supplied",
            )));
        };
        let dest_path = match dest.find("://") {
            Some(i) => dest[i + 3..]
                .find('/')
                .map(|j| &dest[i + 3 + j..])
                .unwrap_or("/"),
            None => dest,
        };
        let Some(drest) = dest_path.strip_prefix(&self.prefix) else {
            return Err(Box::new(sabre_error(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                "destination outside this server's files",
            )));
        };
        decode_rel(drest).ok_or_else(|| {
            Box::new(sabre_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "invalid destination",
            ))
        })
    }

    fn move_copy(&self, req: &Request<Incoming>, rel: &[String], is_move: bool) -> Resp {
        let drel = match self.dest_rel(req) {
            Ok(d) => d,
            Err(r) => return *r,
        };
        if rel.is_empty() || drel.is_empty() {
            return sabre_error(StatusCode::FORBIDDEN, "Forbidden", "cannot move the root");
        }
        if let Some(r) = self.refuse_name(&drel) {
            return r;
        }
        let src = self.local(rel);
        let dst = self.local(&drel);
        let Ok(sm) = std::fs::metadata(&src) else {
            return sabre_error(StatusCode::NOT_FOUND, "NotFound", "source not found");
        };
        if !dst.parent().map(Path::is_dir).unwrap_or(false) {
            return sabre_error(
                StatusCode::CONFLICT,
                "Conflict",
                "destination parent missing",
            );
        }
        if drel.starts_with(rel) && sm.is_dir() {
            return sabre_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "cannot move a folder into itself",
            );
        }
        let overwrite = header(req.headers(), "overwrite")
            .map(|v| !v.trim().eq_ignore_ascii_case("F"))
            .unwrap_or(true);
        let existed = std::fs::symlink_metadata(&dst).ok();
        if let Some(dm) = &existed {
            if !overwrite {
                return sabre_error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "destination exists",
                );
            }
            let r = if dm.is_dir() {
                std::fs::remove_dir_all(&dst)
            } else {
                std::fs::remove_file(&dst)
            };
            if r.is_err() {
                return sabre_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Exception",
                    "cannot replace destination",
                );
            }
        }
        let r = if is_move {
            std::fs::rename(&src, &dst)
        } else {
            copy_tree(&src, &dst)
        };
        match r {
            Ok(()) => {
                let mut r = resp(
                    if existed.is_some() {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::CREATED
                    },
                    "",
                );
                // The destination's etag after a MOVE/COPY of a file (§6.3).
                if let Ok(m) = std::fs::metadata(&dst) {
                    if m.is_file() {
                        let etag = file_etag(&m);
                        r.headers_mut().insert("ETag", hv(&etag));
                        r.headers_mut().insert("OC-ETag", hv(&etag));
                    }
                }
                r
            }
            Err(_) => sabre_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Exception",
                "move failed",
            ),
        }
    }
}

/// The chunked-upload area (`/remote.php/dav/uploads/<uid>/<upload-id>/<chunk>`, §5.2).
struct Uploads {
    shared: Arc<Shared>,
    prefix: String,
}

impl Uploads {
    fn area(&self) -> PathBuf {
        let mut p = self.shared.cfg.root.clone().into_os_string();
        p.push(".uploads");
        PathBuf::from(p)
    }

    fn files_prefix(&self) -> String {
        format!(
            "/remote.php/dav/files/{}",
            crate::webdav::path::encode_segment(&self.shared.cfg.user_id)
        )
    }

    fn destination(&self, h: &HeaderMap) -> Option<Vec<String>> {
        let dest = header(h, "destination")?;
        let p = match dest.find("://") {
            Some(i) => dest[i + 3..]
                .find('/')
                .map(|j| &dest[i + 3 + j..])
                .unwrap_or("/"),
            None => dest,
        };
        decode_rel(p.strip_prefix(&self.files_prefix())?)
    }

    async fn handle(&self, req: Request<Incoming>, rel: Vec<String>) -> Resp {
        let method = req.method().as_str().to_string();
        match (method.as_str(), rel.len()) {
            ("MKCOL", 1) => {
                let d = self.area().join(&rel[0]);
                if d.exists() {
                    return sabre_error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "MethodNotAllowed",
                        "exists",
                    );
                }
                match std::fs::create_dir_all(&d) {
                    Ok(()) => resp(StatusCode::CREATED, ""),
                    Err(_) => sabre_error(StatusCode::INTERNAL_SERVER_ERROR, "Exception", "mkdir"),
                }
            }
            ("PUT", 2) => {
                let d = self.area().join(&rel[0]);
                if !d.is_dir() {
                    return sabre_error(StatusCode::NOT_FOUND, "NotFound", "no such upload");
                }
                if let (Some(q), Some(total)) = (
                    self.shared.cfg.quota,
                    header(req.headers(), "oc-total-length").and_then(|v| v.parse::<u64>().ok()),
                ) {
                    if tree_size(&self.shared.cfg.root) + total > q {
                        return sabre_error(
                            StatusCode::INSUFFICIENT_STORAGE,
                            "InsufficientStorage",
                            "Insufficient space",
                        );
                    }
                }
                self.shared.stats.chunk_puts.fetch_add(1, Ordering::Relaxed);
                let stats = &self.shared.stats;
                let _in_flight =
                    InFlight::enter(&stats.chunk_puts_in_flight, &stats.chunk_puts_max_in_flight);
                let target = d.join(&rel[1]);
                let mut body = req.into_body();
                let mut data = Vec::new();
                loop {
                    match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                        Some(Ok(frame)) => {
                            if let Ok(b) = frame.into_data() {
                                data.extend_from_slice(&b);
                            }
                        }
                        Some(Err(_)) => {
                            return sabre_error(StatusCode::BAD_REQUEST, "BadRequest", "body")
                        }
                        None => break,
                    }
                }
                if self
                    .shared
                    .knobs
                    .truncate_next_chunks
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    data.truncate(data.len() / 2);
                }
                match std::fs::write(&target, &data) {
                    Ok(()) => {
                        self.shared
                            .stats
                            .chunks_stored
                            .fetch_add(1, Ordering::Relaxed);
                        resp(StatusCode::CREATED, "")
                    }
                    Err(_) => sabre_error(StatusCode::INTERNAL_SERVER_ERROR, "Exception", "write"),
                }
            }
            ("PROPFIND", 1) => {
                let d = self.area().join(&rel[0]);
                let Ok(rd) = std::fs::read_dir(&d) else {
                    return sabre_error(StatusCode::NOT_FOUND, "NotFound", "no such upload");
                };
                let mut out =
                    String::from("<?xml version=\"1.0\"?>\n<d:multistatus xmlns:d=\"DAV:\">");
                out.push_str(&format!(
                    "<d:response><d:href>{}/{}/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>",
                    self.prefix,
                    crate::webdav::path::encode_segment(&rel[0])
                ));
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push_str(&format!(
                        "<d:response><d:href>{}/{}/{}</d:href><d:propstat><d:prop><d:resourcetype/><d:getcontentlength>{len}</d:getcontentlength></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>",
                        self.prefix,
                        crate::webdav::path::encode_segment(&rel[0]),
                        crate::webdav::path::encode_segment(&name)
                    ));
                }
                out.push_str("</d:multistatus>");
                resp(StatusCode::MULTI_STATUS, out)
            }
            ("MOVE", 2) if rel[1] == ".file" => self.assemble(&req, &rel[0]),
            ("DELETE", 1) => {
                let _ = std::fs::remove_dir_all(self.area().join(&rel[0]));
                resp(StatusCode::NO_CONTENT, "")
            }
            _ => sabre_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not in the upload area",
            ),
        }
    }

    fn assemble(&self, req: &Request<Incoming>, id: &str) -> Resp {
        let d = self.area().join(id);
        let Some(dest_rel) = self.destination(req.headers()) else {
            return sabre_error(StatusCode::BAD_REQUEST, "BadRequest", "bad Destination");
        };
        if let Some(why) = dest_rel
            .last()
            .and_then(|n| self.shared.cfg.names.problem(n))
        {
            return sabre_error(StatusCode::BAD_REQUEST, "InvalidPath", &why);
        }
        if let Some(r) = self.shared.refused("PUT", &dest_rel, None) {
            return r;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            return sabre_error(StatusCode::NOT_FOUND, "NotFound", "no such upload");
        };
        let mut chunks: Vec<(u64, PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().parse::<u64>().ok()?;
                Some((n, e.path()))
            })
            .collect();
        chunks.sort();
        let total: u64 = chunks
            .iter()
            .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        if let Some(expected) =
            header(req.headers(), "oc-total-length").and_then(|v| v.parse::<u64>().ok())
        {
            if expected != total {
                return sabre_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Chunks on server do not sum up to the expected size",
                );
            }
        }
        let dest = self.shared.local(&dest_rel);
        let existing = std::fs::metadata(&dest).ok();
        // The overwrite guard: `If: <dest> (["etag"])` (§5.2).
        if let Some(ifh) = header(req.headers(), "if") {
            let want = ifh
                .split("([")
                .nth(1)
                .and_then(|r| r.split("])").next())
                .map(str::trim);
            let cur = existing.as_ref().map(file_etag);
            if want.is_some() && want != cur.as_deref() {
                return sabre_error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "destination changed",
                );
            }
        }
        if !dest.parent().map(Path::is_dir).unwrap_or(false) {
            return sabre_error(StatusCode::CONFLICT, "Conflict", "parent missing");
        }
        let tmp = dest.with_file_name(format!("{UPLOAD_PREFIX}{}", rand_suffix()));
        let res = (|| -> std::io::Result<()> {
            let mut out = std::fs::File::create(&tmp)?;
            for (_, p) in &chunks {
                let mut f = std::fs::File::open(p)?;
                std::io::copy(&mut f, &mut out)?;
            }
            if let Some(secs) = header(req.headers(), "x-oc-mtime")
                .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
                .filter(|s| *s > 86400)
            {
                out.set_modified(UNIX_EPOCH + Duration::from_secs(secs))?;
            }
            out.sync_all()?;
            std::fs::rename(&tmp, &dest)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return sabre_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Exception",
                "assembly failed",
            );
        }
        let _ = std::fs::remove_dir_all(&d);
        self.shared
            .stats
            .chunk_assemblies
            .fetch_add(1, Ordering::Relaxed);
        let m = match std::fs::metadata(&dest) {
            Ok(m) => m,
            Err(_) => return sabre_error(StatusCode::INTERNAL_SERVER_ERROR, "Exception", "stat"),
        };
        let mut r = resp(
            if existing.is_some() {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::CREATED
            },
            "",
        );
        let etag = file_etag(&m);
        r.headers_mut().insert("ETag", hv(&etag));
        r.headers_mut().insert("OC-ETag", hv(&etag));
        r.headers_mut()
            .insert("OC-FileId", hv(&format!("{:08}ocfake", m.ino())));
        r
    }
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    if src.is_dir() {
        std::fs::create_dir(dst)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(src, dst).map(|_| ())
    }
}

fn rand_suffix() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
        + SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0)
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Parses one `bytes=` range against `size`. `None`: no usable Range header (serve all);
/// `Some(Err)`: unsatisfiable (416). Multi-range is ignored like sabre does (§3).
fn parse_range(v: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        return Some(Ok((size.saturating_sub(n), size - 1)));
    }
    let start: u64 = a.parse().ok()?;
    if start >= size {
        return Some(Err(()));
    }
    let end = if b.is_empty() {
        size - 1
    } else {
        b.parse::<u64>().ok()?.min(size - 1)
    };
    if end < start {
        return None;
    }
    Some(Ok((start, end)))
}

/// Sends `len` bytes of the file from `start`; false when it stopped early (an error sent).
fn stream_file(
    path: &Path,
    start: u64,
    len: u64,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> bool {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return false;
        }
    };
    if let Err(e) = f.seek(SeekFrom::Start(start)) {
        let _ = tx.blocking_send(Err(e));
        return false;
    }
    let mut left = len;
    while left > 0 {
        let n = left.min(256 * 1024) as usize;
        let mut buf = vec![0u8; n];
        match f.read_exact(&mut buf) {
            Ok(()) => {
                left -= n as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return false;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=95-200", 100), Some(Ok((95, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-9", 100), None);
    }

    #[test]
    fn rel_paths() {
        assert_eq!(
            decode_rel("/a%20b/c"),
            Some(vec!["a b".to_string(), "c".to_string()])
        );
        assert_eq!(decode_rel("/a/../b"), None);
        assert_eq!(decode_rel("/"), Some(vec![]));
    }
}
