//! Test fixtures: real servers on 127.0.0.1 and real FUSE mounts of the `nuage` binary, each
//! ended by its guard's `Drop` (also when a test fails), with every wait bounded.
#![allow(dead_code)]

pub use nuage::fakecloud::NamingRules;
use nuage::fakecloud::{FakeCloud, FakeCloudConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "alice@example.org";
pub const USER_ID: &str = "alice";
pub const PASSWORD: &str = "app-pass-1234-abcd";
/// Mount options for write tests: uploads 0.2 s after close, 1 s attribute and listing lifetimes.
pub const FAST: &[&str] = &["--upload-delay", "0.2", "--attr-ttl", "1", "--dir-ttl", "1"];

/// Fails loudly when FUSE is unavailable: FUSE tests must never skip silently.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the FUSE tests need it (run scripts/test.sh as root)"
    );
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Polls `cond` until it holds or `limit` passes.
/// Whether the server's folder `root` holds `rel` with exactly these bytes.
pub fn server_file_is(root: &Path, rel: &str, want: &[u8]) -> bool {
    std::fs::read(root.join(rel))
        .map(|b| b == want)
        .unwrap_or(false)
}

/// Waits (bounded) until the server's folder `root` holds `rel` with exactly these bytes.
pub fn wait_server(root: &Path, rel: &str, want: &[u8]) {
    let ok = wait_until(Duration::from_secs(20), || server_file_is(root, rel, want));
    let got = std::fs::read(root.join(rel))
        .map(|b| b.len() as i64)
        .unwrap_or(-1);
    assert!(
        ok,
        "server never got {rel} ({} bytes wanted, has {got})",
        want.len()
    );
}

pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

pub fn is_mounted(mp: &Path) -> bool {
    let want = std::fs::canonicalize(mp).unwrap_or_else(|_| mp.to_path_buf());
    let want = want.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Writes a large pseudo-random file without holding it all in memory.
/// Sets the modification time of the file at `path` (as `touch -d` does).
pub fn set_mtime(path: &Path, t: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("set the time of {}: {e}", path.display()));
}

pub fn write_big(path: &Path, len: u64, seed: u64) {
    let mut f = std::fs::File::create(path).expect("create big file");
    let chunk = 4 << 20;
    let mut done = 0u64;
    let mut i = 0;
    while done < len {
        let n = chunk.min((len - done) as usize);
        f.write_all(&pattern(n, seed + i)).expect("write big file");
        done += n as u64;
        i += 1;
    }
}

/// The FakeNextcloud server, with its own runtime.
pub struct Cloud {
    pub server: FakeCloud,
    pub dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    quota: Option<u64>,
    names: NamingRules,
    push: bool,
}

impl Cloud {
    pub fn start() -> Cloud {
        Self::start_with(None)
    }

    pub fn start_with(quota: Option<u64>) -> Cloud {
        Self::start_full(quota, NamingRules::default(), false)
    }

    /// A server with its own file name rules.
    pub fn start_names(names: NamingRules) -> Cloud {
        Self::start_full(None, names, false)
    }

    /// A server that offers notify_push.
    pub fn start_push() -> Cloud {
        Self::start_full(None, NamingRules::default(), true)
    }

    fn start_full(quota: Option<u64>, names: NamingRules, push: bool) -> Cloud {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("files")).expect("mkdir");
        let server = rt
            .block_on(FakeCloud::start(
                FakeCloudConfig {
                    root: dir.path().join("files"),
                    login: USER.into(),
                    user_id: USER_ID.into(),
                    passwords: vec![PASSWORD.into()],
                    quota,
                    names: names.clone(),
                    notify_push: push,
                    bulk_upload: true,
                },
                0,
            ))
            .expect("start fake cloud");
        Cloud {
            server,
            dir,
            rt,
            quota,
            names,
            push,
        }
    }

    fn config(&self) -> FakeCloudConfig {
        FakeCloudConfig {
            root: self.files(),
            login: USER.into(),
            user_id: USER_ID.into(),
            passwords: vec![PASSWORD.into()],
            quota: self.quota,
            names: self.names.clone(),
            notify_push: self.push,
            bulk_upload: true,
        }
    }

    pub fn port(&self) -> u16 {
        self.url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// Stops the server: its port refuses connections and open connections close.
    pub fn stop(&mut self) {
        let cfg = self.config();
        // Park a placeholder server on another port so `server` stays valid.
        let placeholder = self
            .rt
            .block_on(FakeCloud::start(cfg, 0))
            .expect("placeholder");
        let old = std::mem::replace(&mut self.server, placeholder);
        drop(old);
    }

    /// Starts the server again on `port`, with the same files.
    pub fn restart(&mut self, port: u16) {
        let cfg = self.config();
        let mut last = None;
        for _ in 0..50 {
            match self.rt.block_on(FakeCloud::start(cfg.clone(), port)) {
                Ok(s) => {
                    self.server = s;
                    return;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cannot restart the server on port {port}: {last:?}");
    }

    pub fn files(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    pub fn url(&self) -> String {
        self.server.base_url()
    }

    pub fn get_bytes(&self) -> u64 {
        self.server
            .stats()
            .get_body_bytes
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }
}

/// Apache httpd with mod_dav serving a folder under `/dav/`, with Basic authentication.
pub struct Apache {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls: bool,
    child: Child,
    /// Ended by [`Apache::stop`] (its pid may be reused: not signalled again).
    stopped: bool,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Apache {
    pub fn start() -> Apache {
        Self::start_opts(false)
    }

    pub fn start_opts(tls: bool) -> Apache {
        Self::start_cert(tls.then_some("CA:FALSE"))
    }

    /// Plain HTTP with Digest authentication (`mod_auth_digest`, MD5, `qop=auth`) instead of
    /// Basic, its nonces good for `nonce_secs` seconds only.
    pub fn start_digest(nonce_secs: u32) -> Apache {
        Self::start_with(None, Some(nonce_secs))
    }

    /// Over TLS, with a self-signed certificate marked as a certificate authority (CA:TRUE,
    /// what `openssl req -x509` makes by default).
    pub fn start_tls_ca_certificate() -> Apache {
        Self::start_cert(Some("CA:TRUE"))
    }

    /// Plain HTTP, or TLS with a self-signed certificate with these basic constraints.
    fn start_cert(constraints: Option<&str>) -> Apache {
        Self::start_with(constraints, None)
    }

    fn start_with(constraints: Option<&str>, digest_nonce_secs: Option<u32>) -> Apache {
        let tls = constraints.is_some();
        assert!(
            Path::new("/usr/sbin/apache2").exists(),
            "apache2 is missing: run scripts/test.sh, which installs it"
        );
        let dir = server_folder(&["data", "run"]);
        let d = dir.path();
        let port = free_port();
        let m = "/usr/lib/apache2/modules";
        let mut conf = format!(
            r#"ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {d}/run/httpd.pid
DefaultRuntimeDir {d}/run
Mutex file:{d}/run default
ErrorLog {d}/error.log
LogFormat "%h %u \"%r\" %>s %O" dav
CustomLog {d}/access.log dav
User www-data
Group www-data
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule authz_user_module {m}/mod_authz_user.so
LoadModule authn_core_module {m}/mod_authn_core.so
LoadModule authn_file_module {m}/mod_authn_file.so
LoadModule auth_basic_module {m}/mod_auth_basic.so
LoadModule alias_module {m}/mod_alias.so
LoadModule dav_module {m}/mod_dav.so
LoadModule dav_fs_module {m}/mod_dav_fs.so
DavLockDB {d}/run/davlock
Alias /dav {d}/data
<Directory {d}/data>
  Dav On
  {auth}
  AuthName "nuage test"
  Require valid-user
  AllowOverride None
</Directory>
"#,
            d = d.display(),
            auth = match digest_nonce_secs {
                None => format!("AuthType Basic\n  AuthUserFile {}/htpasswd", d.display()),
                Some(secs) => format!(
                    "AuthType Digest\n  AuthDigestProvider file\n  AuthUserFile {}/htdigest\n  \
                     AuthDigestDomain /dav/\n  AuthDigestNonceLifetime {secs}",
                    d.display()
                ),
            },
        );
        if digest_nonce_secs.is_some() {
            conf.push_str(&format!(
                "LoadModule auth_digest_module {m}/mod_auth_digest.so\n\
                 CustomLog {d}/auth.log \"%{{Authorization}}i\"\n",
                d = d.display()
            ));
            // user:realm:MD5(user:realm:password), what `htdigest` writes.
            let ha1 = md5::compute(format!("{USER}:nuage test:{PASSWORD}"));
            std::fs::write(d.join("htdigest"), format!("{USER}:nuage test:{ha1:x}\n"))
                .expect("htdigest");
        }
        if tls {
            let ok = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-addext",
                    &format!(
                        "basicConstraints=critical,{}",
                        constraints.unwrap_or("CA:FALSE")
                    ),
                ])
                .arg("-keyout")
                .arg(d.join("key.pem"))
                .arg("-out")
                .arg(d.join("cert.pem"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl");
            assert!(ok.success(), "openssl req failed");
            conf.push_str(&format!(
                "LoadModule ssl_module {m}/mod_ssl.so\nLoadModule socache_shmcb_module {m}/mod_socache_shmcb.so\n\
                 SSLEngine on\nSSLCertificateFile {d}/cert.pem\nSSLCertificateKeyFile {d}/key.pem\n",
                d = d.display()
            ));
        }
        std::fs::write(d.join("httpd.conf"), conf).expect("conf");
        chown_www(&d.join("data"));
        chown_www(&d.join("run"));
        let child = Command::new("/usr/sbin/apache2")
            .arg("-f")
            .arg(d.join("httpd.conf"))
            .arg("-DFOREGROUND")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start apache2");
        let a = Apache {
            dir,
            port,
            tls,
            child,
            stopped: false,
        };
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "apache did not start: {}", a.error_log());
        a
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/dav/", self.port)
    }

    /// Makes files written by the test readable and writable by Apache.
    pub fn fix_owner(&self) {
        chown_www(&self.data());
    }

    /// Ends the server (as a backend that went down).
    pub fn stop(&mut self) {
        if !self.stopped {
            end_child(&mut self.child);
            self.stopped = true;
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Sum of response bytes (`%O`) of GET requests in the access log.
    pub fn get_bytes(&self) -> u64 {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET "))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// A private D-Bus session bus, as a desktop session has one; ended on drop.
pub struct SessionBus {
    child: Child,
    /// Its address, for `DBUS_SESSION_BUS_ADDRESS`.
    pub address: String,
}

impl SessionBus {
    pub fn start() -> SessionBus {
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (run scripts/test.sh, which installs it)");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
            let _ = tx.send(line);
        });
        let address = rx
            .recv_timeout(Duration::from_secs(10))
            .map(|l| l.trim().to_string())
            .unwrap_or_default();
        if address.is_empty() {
            end_child(&mut child);
            panic!("dbus-daemon gave no address");
        }
        SessionBus { child, address }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        end_child(&mut self.child);
    }
}

/// A private session bus with `dbus-monitor` recording the desktop notifications sent on it
/// (as the freedesktop notification service receives them); both end on drop.
pub struct NotificationWatch {
    monitor: Child,
    seen: PathBuf,
    _dir: tempfile::TempDir,
    /// Ended after the monitor (fields drop in order).
    pub bus: SessionBus,
}

impl NotificationWatch {
    pub fn start() -> NotificationWatch {
        let bus = SessionBus::start();
        let dir = tempfile::tempdir().expect("tmp");
        let seen = dir.path().join("monitor.txt");
        let monitor = Command::new("dbus-monitor")
            .arg("--address")
            .arg(&bus.address)
            .arg("interface='org.freedesktop.Notifications'")
            .stdout(std::fs::File::create(&seen).expect("monitor output"))
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-monitor (run scripts/test.sh, which installs it)");
        let w = NotificationWatch {
            monitor,
            seen,
            _dir: dir,
            bus,
        };
        assert!(
            wait_until(Duration::from_secs(10), || w
                .seen()
                .contains("NameAcquired")),
            "dbus-monitor never joined the bus"
        );
        w
    }

    /// What the monitor recorded so far.
    pub fn seen(&self) -> String {
        std::fs::read_to_string(&self.seen).unwrap_or_default()
    }

    /// Waits (bounded) for a notification whose title is `summary`.
    pub fn wait_for(&self, summary: &str) -> bool {
        let line = format!("string \"{summary}\"");
        wait_until(Duration::from_secs(20), || self.seen().contains(&line))
    }

    /// How many notifications were sent.
    pub fn count(&self) -> usize {
        self.seen().matches("member=Notify").count()
    }
}

impl Drop for NotificationWatch {
    fn drop(&mut self) {
        end_child(&mut self.monitor);
    }
}

/// Where Debian's `php-sabre-dav` puts SabreDAV's class loader.
const SABRE_AUTOLOAD: &str = "/usr/share/php/Sabre/autoload.php";

/// A password file (`htpasswd`, MD5) holding USER with PASSWORD.
fn write_htpasswd(file: &Path) {
    let mut hp = Command::new("htpasswd")
        .args(["-cim", &file.to_string_lossy(), USER])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("htpasswd");
    hp.stdin
        .take()
        .expect("stdin")
        .write_all(PASSWORD.as_bytes())
        .expect("write");
    assert!(hp.wait().expect("wait").success(), "htpasswd failed");
}

/// Ends a server we started: SIGTERM, then SIGKILL after 10 s.
pub fn end_child(child: &mut Child) {
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A WebDAV server nobody here wrote, started for one test in a folder of its own (its files
/// in `data/`, Basic authentication from an `htpasswd` file), ended on drop.
pub struct WebDavServer {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
    /// The path the files are served under (`/dav/` or `/`).
    url_path: &'static str,
    /// Its error log, relative to its folder.
    log: &'static str,
}

/// A folder for a server: `subs` inside it, readable by the server's user, and the password
/// file for USER.
fn server_folder(subs: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    for sub in subs {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
    }
    let mut perms = std::fs::metadata(dir.path()).expect("md").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.path(), perms).expect("chmod");
    write_htpasswd(&dir.path().join("htpasswd"));
    dir
}

impl WebDavServer {
    /// Starts `cmd` and waits (bounded) until it listens on `port`.
    fn spawn(
        dir: tempfile::TempDir,
        port: u16,
        mut cmd: Command,
        url_path: &'static str,
        log: &'static str,
    ) -> WebDavServer {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        let s = WebDavServer {
            dir,
            port,
            child,
            url_path,
            log,
        };
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "the server did not start: {}", s.error_log());
        s
    }

    /// nginx with its WebDAV modules (`dav` and `dav_ext`) serving `/dav/`: a server whose
    /// listings carry no etag and which ignores `If-Match` and `If-None-Match` on writes.
    pub fn nginx() -> WebDavServer {
        Self::nginx_conf("client_max_body_size 0;")
    }

    /// nginx with `client_max_body_size` set to `limit` (`"0"`: none; nginx's own default is
    /// 1m).
    pub fn nginx_limited(limit: &str) -> WebDavServer {
        Self::nginx_conf(&format!("client_max_body_size {limit};"))
    }

    /// nginx with byte ranges turned off (`max_ranges 0`): a `GET` with `Range` is answered
    /// `200` with the whole file.
    pub fn nginx_without_ranges() -> WebDavServer {
        Self::nginx_conf("client_max_body_size 0;\n  max_ranges 0;")
    }

    /// nginx as a gateway (reverse proxy) in front of the WebDAV server at
    /// `http://127.0.0.1:backend/dav/`, as institutions put one in front of their cloud:
    /// when the backend is down it answers `502 Bad Gateway`.
    pub fn nginx_gateway(backend: u16) -> WebDavServer {
        Self::nginx_with(
            "client_max_body_size 0;",
            &format!(
                "proxy_pass http://127.0.0.1:{backend}/dav/;\n      \
                 proxy_request_buffering off;\n      proxy_buffering off;"
            ),
        )
    }

    /// nginx with these directives added to its `http` block.
    fn nginx_conf(http_extra: &str) -> WebDavServer {
        Self::nginx_with(
            http_extra,
            "dav_methods PUT DELETE MKCOL COPY MOVE;
      dav_ext_methods PROPFIND OPTIONS;
      create_full_put_path on;
      dav_access user:rw group:rw all:r;
      auth_basic \"nuage test\";
      auth_basic_user_file {d}/htpasswd;",
        )
    }

    /// nginx with these directives in its `http` block and in its `/dav/` location (where
    /// `{d}` stands for its folder).
    fn nginx_with(http_extra: &str, location: &str) -> WebDavServer {
        let module = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so";
        assert!(
            Path::new("/usr/sbin/nginx").exists() && Path::new(module).exists(),
            "nginx or its dav_ext module is missing: run scripts/test.sh, which installs them"
        );
        let dir = server_folder(&["data", "tmp", "logs"]);
        let d = dir.path();
        let port = free_port();
        let conf = format!(
            r#"load_module {module};
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
user www-data;
events {{}}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/tmp;
  {http_extra}
  server {{
    listen 127.0.0.1:{port};
    location /dav/ {{
      alias {d}/data/;
      {location}
    }}
  }}
}}
"#,
            d = d.display(),
            location = location.replace("{d}", &d.display().to_string())
        );
        std::fs::write(d.join("nginx.conf"), conf).expect("conf");
        chown_www(&d.join("data"));
        chown_www(&d.join("tmp"));
        let mut cmd = Command::new("/usr/sbin/nginx");
        cmd.arg("-p")
            .arg(d)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(d.join("nginx.conf"));
        Self::spawn(dir, port, cmd, "/dav/", "error.log")
    }

    /// lighttpd with `mod_webdav` (its listings carry etags; it keeps properties and locks
    /// in its own SQLite database), serving `/`.
    pub fn lighttpd() -> WebDavServer {
        Self::lighttpd_auth(
            "auth.backend = \"htpasswd\"\nauth.backend.htpasswd.userfile = \"{d}/htpasswd\"\n\
             auth.require = (\"/\" => (\"method\" => \"basic\", \"realm\" => \"nuage test\", \
             \"require\" => \"valid-user\"))",
        )
    }

    /// lighttpd asking for Digest authentication with SHA-256 (RFC 7616), its passwords in a
    /// plain file (its `htdigest` backend holds MD5 hashes only).
    pub fn lighttpd_digest_sha256() -> WebDavServer {
        Self::lighttpd_auth(
            "auth.backend = \"plain\"\nauth.backend.plain.userfile = \"{d}/plain\"\n\
             auth.require = (\"/\" => (\"method\" => \"digest\", \"algorithm\" => \"SHA-256\", \
             \"realm\" => \"nuage test\", \"require\" => \"valid-user\"))",
        )
    }

    /// lighttpd with `auth`, its authentication lines (`{d}` stands for its folder).
    fn lighttpd_auth(auth: &str) -> WebDavServer {
        assert!(
            Path::new("/usr/sbin/lighttpd").exists()
                && Path::new("/usr/lib/lighttpd/mod_webdav.so").exists(),
            "lighttpd or its mod_webdav is missing: run scripts/test.sh, which installs them"
        );
        let dir = server_folder(&["data", "tmp", "lock", "logs"]);
        let d = dir.path();
        let port = free_port();
        let conf = format!(
            r#"server.document-root = "{d}/data"
server.bind = "127.0.0.1"
server.port = {port}
server.username = "www-data"
server.groupname = "www-data"
server.errorlog = "{d}/logs/error.log"
server.upload-dirs = ("{d}/tmp")
server.modules = ("mod_webdav", "mod_auth", "mod_authn_file")
webdav.activate = "enable"
webdav.is-readonly = "disable"
webdav.sqlite-db-name = "{d}/lock/webdav.db"
{auth}
"#,
            d = d.display(),
            auth = auth.replace("{d}", &d.display().to_string()),
        );
        std::fs::write(d.join("lighttpd.conf"), conf).expect("conf");
        std::fs::write(d.join("plain"), format!("{USER}:{PASSWORD}\n")).expect("plain");
        // lighttpd opens its log after giving up root.
        for sub in ["data", "tmp", "lock", "logs"] {
            chown_www(&d.join(sub));
        }
        let mut cmd = Command::new("/usr/sbin/lighttpd");
        cmd.arg("-D").arg("-f").arg(d.join("lighttpd.conf"));
        Self::spawn(dir, port, cmd, "/", "logs/error.log")
    }

    /// `rclone serve webdav` (Go's `x/net/webdav`), serving `/`.
    pub fn rclone_serve() -> WebDavServer {
        assert!(
            Path::new("/usr/bin/rclone").exists(),
            "rclone is missing: run scripts/test.sh, which installs it"
        );
        let dir = server_folder(&["data"]);
        let d = dir.path();
        let port = free_port();
        let mut cmd = Command::new("/usr/bin/rclone");
        cmd.args(["serve", "webdav", "--config", "/dev/null"])
            .arg(d.join("data"))
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--htpasswd")
            .arg(d.join("htpasswd"))
            .arg("--log-file")
            .arg(d.join("rclone.log"));
        Self::spawn(dir, port, cmd, "/", "rclone.log")
    }

    /// GNOME's phodav (`chezdav`, the server behind gnome-user-share) serving `/` with Digest
    /// authentication: absolute hrefs, folders without a trailing `/`, ISO 8601 modification
    /// dates.
    pub fn chezdav() -> WebDavServer {
        assert!(
            Path::new("/usr/bin/chezdav").exists(),
            "chezdav is missing: run scripts/test.sh, which installs it"
        );
        let dir = server_folder(&["data"]);
        let d = dir.path();
        let port = free_port();
        let ha1 = md5::compute(format!("{USER}:nuage test:{PASSWORD}"));
        std::fs::write(d.join("htdigest"), format!("{USER}:nuage test:{ha1:x}\n"))
            .expect("htdigest");
        // Its messages go to a log file; `exec` keeps the server's pid the child's.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "exec /usr/bin/chezdav --local --no-mdns -p \"$0\" -P \"$1\" -d \"$2\" \
             --realm 'nuage test' >\"$3\" 2>&1",
        ])
        .arg(port.to_string())
        .arg(d.join("data"))
        .arg(d.join("htdigest"))
        .arg(d.join("chezdav.log"));
        Self::spawn(dir, port, cmd, "/", "chezdav.log")
    }

    /// WsgiDAV (Python, from PyPI; installed by scripts/test.sh into target/test-wsgidav)
    /// serving `/` with Basic authentication: its listings carry etags, it keeps dead
    /// properties and locks in memory.
    pub fn wsgidav() -> WebDavServer {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-wsgidav/bin/wsgidav");
        assert!(
            bin.exists(),
            "WsgiDAV is missing: run scripts/test.sh, which installs it into target/test-wsgidav"
        );
        let dir = server_folder(&["data"]);
        let d = dir.path();
        let port = free_port();
        let cfg = d.join("wsgidav.yaml");
        std::fs::write(
            &cfg,
            format!(
                "host: 127.0.0.1\nport: {port}\nverbose: 2\n\
                 provider_mapping:\n  \"/\": \"{data}\"\n\
                 http_authenticator:\n  domain_controller: null\n  accept_basic: true\n  \
                 accept_digest: false\n  default_to_digest: false\n\
                 simple_dc:\n  user_mapping:\n    \"*\":\n      \"{USER}\":\n        \
                 password: \"{PASSWORD}\"\n\
                 lock_storage: true\n",
                data = d.join("data").display(),
            ),
        )
        .expect("write the WsgiDAV configuration");
        // Its messages go to a log file; `exec` keeps the server's pid the child's.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec \"$0\" -c \"$1\" >\"$2\" 2>&1"])
            .arg(&bin)
            .arg(&cfg)
            .arg(d.join("wsgidav.log"));
        Self::spawn(dir, port, cmd, "/", "wsgidav.log")
    }

    /// SabreDAV 1.8 (PHP, Debian's `php-sabre-dav`: the library Nextcloud's WebDAV is built
    /// on, in an older version) serving `/dav/` from PHP's built-in server, one request at a
    /// time: Basic authentication, its `FSExt` file tree (etags from the content, dead
    /// properties in `.sabredav` files it hides), the locks plugin.
    pub fn sabredav() -> WebDavServer {
        assert!(
            Path::new("/usr/bin/php").exists() && Path::new(SABRE_AUTOLOAD).exists(),
            "PHP or SabreDAV is missing: run scripts/test.sh, which installs them"
        );
        let dir = server_folder(&["data", "locks"]);
        let d = dir.path();
        let port = free_port();
        // The credentials reach the script through its environment (no quoting to get right).
        let script = r#"<?php
require_once 'AUTOLOAD';
class Pw extends \Sabre\DAV\Auth\Backend\AbstractBasic {
    protected function validateUserPass($u, $p) {
        return $u === getenv('NUAGE_TEST_USER') && $p === getenv('NUAGE_TEST_PASSWORD');
    }
}
$server = new \Sabre\DAV\Server(new \Sabre\DAV\FSExt\Directory(__DIR__ . '/data'));
$server->setBaseUri('/dav/');
$server->addPlugin(new \Sabre\DAV\Auth\Plugin(new Pw(), 'nuage test'));
$locks = new \Sabre\DAV\Locks\Backend\File(__DIR__ . '/locks/locksdb');
$server->addPlugin(new \Sabre\DAV\Locks\Plugin($locks));
$server->exec();
"#;
        std::fs::write(
            d.join("server.php"),
            script.replace("AUTOLOAD", SABRE_AUTOLOAD),
        )
        .expect("write the SabreDAV script");
        // Its messages go to a log file; `exec` keeps the server's pid the child's. Without
        // PHP_CLI_SERVER_WORKERS it is one process (its workers would outlive a SIGTERM).
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "exec /usr/bin/php -S \"127.0.0.1:$0\" \"$1\" >\"$2\" 2>&1",
        ])
        .arg(port.to_string())
        .arg(d.join("server.php"))
        .arg(d.join("php.log"))
        .env("NUAGE_TEST_USER", USER)
        .env("NUAGE_TEST_PASSWORD", PASSWORD)
        .env_remove("PHP_CLI_SERVER_WORKERS")
        .current_dir(d);
        Self::spawn(dir, port, cmd, "/dav/", "php.log")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.url_path)
    }

    /// Makes files written by the test readable and writable by the server's user.
    pub fn fix_owner(&self) {
        chown_www(&self.data());
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(self.log)).unwrap_or_default()
    }

    /// nginx only: the sum of the body bytes of GET answers, from its access log (`combined`
    /// format: `"GET /path HTTP/1.1" status bytes ...`).
    pub fn nginx_get_bytes(&self) -> u64 {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once("\"GET ")?;
                let (_, after) = rest.split_once('"')?;
                after.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .sum()
    }
}

impl Drop for WebDavServer {
    fn drop(&mut self) {
        end_child(&mut self.child);
    }
}

fn chown_www(p: &Path) {
    let st = Command::new("chown")
        .arg("-R")
        .arg("www-data:www-data")
        .arg(p)
        .status()
        .expect("chown");
    assert!(st.success());
}

impl Drop for Apache {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asserts that a command succeeded, showing what it printed on its standard error if not.
pub fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts a mount point on drop (made by a command, not by [`Mount`]), in case an assertion
/// failed first.
pub struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).status();
        }
    }
}

/// An [`Unmounter`] of `p`.
pub fn unmount_on_drop(p: &Path) -> Unmounter {
    Unmounter(p.to_path_buf())
}

/// A mount made by the real `nuage` binary, in the foreground, ended by `Drop`.
pub struct Mount {
    pub mp: PathBuf,
    pub cache: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

/// The `nuage` binary under test. Its own folders (mount registrations, its log, default
/// cache folders, saved accounts) go under `target/tmp`, not into the folders of the user
/// running the tests; a test that sets `XDG_CACHE_HOME`, `XDG_CONFIG_HOME` or `HOME`
/// itself overrides this.
pub fn nuage() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nuage"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    c.env("XDG_CACHE_HOME", tmp.join("xdg-cache"))
        .env("XDG_CONFIG_HOME", tmp.join("xdg-config"))
        // Never the desktop session of whoever runs the tests (its keyring, its
        // notifications): a test that wants a session starts its own.
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    c
}

pub struct MountSpec {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub extra: Vec<String>,
    pub cache: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// The mount point, when not a new folder of the mount's own.
    pub at: Option<PathBuf>,
}

impl MountSpec {
    pub fn new(url: &str) -> MountSpec {
        MountSpec {
            url: url.into(),
            user: Some(USER.into()),
            password: Some(PASSWORD.into()),
            extra: Vec::new(),
            cache: None,
            env: Vec::new(),
            at: None,
        }
    }
    /// Mounts a saved account (no --user, no password file).
    pub fn account(name: &str, config_dir: &Path) -> Self {
        let mut s = MountSpec::new(name);
        s.user = None;
        s.password = None;
        s.env("NUAGE_CONFIG_DIR", config_dir.to_str().expect("utf-8 path"))
            .env("NUAGE_KEYRING", "off")
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn args(mut self, a: &[&str]) -> Self {
        self.extra.extend(a.iter().map(|s| s.to_string()));
        self
    }
    pub fn cache(mut self, p: &Path) -> Self {
        self.cache = Some(p.to_path_buf());
        self
    }
    /// Mounts on `mp` (an existing folder, or a dead mount) instead of a new folder.
    pub fn at(mut self, mp: &Path) -> Self {
        self.at = Some(mp.to_path_buf());
        self
    }
}

impl Mount {
    /// Mounts and waits (bounded) until the mount answers a listing.
    pub fn new(spec: MountSpec) -> Mount {
        require_fuse();
        let tmp = tempfile::tempdir().expect("tmp");
        let mp = match &spec.at {
            Some(at) => at.clone(),
            None => {
                let mp = tmp.path().join("mnt");
                std::fs::create_dir(&mp).expect("mkdir");
                mp
            }
        };
        let cache = spec
            .cache
            .clone()
            .unwrap_or_else(|| tmp.path().join("cache"));
        let log = tmp.path().join("nuage.log");
        let mut cmd = nuage();
        cmd.arg("mount")
            .arg(&spec.url)
            .arg(&mp)
            .arg("--cache-dir")
            .arg(&cache);
        if let Some(u) = &spec.user {
            cmd.arg("--user").arg(u);
        }
        if let Some(p) = &spec.password {
            let pf = tmp.path().join("password");
            std::fs::write(&pf, p).expect("pw file");
            cmd.arg("--password-file").arg(pf);
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        cmd.args(&spec.extra)
            .env("NUAGE_LOG", "nuage=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        // Over a dead mount (listed until the new process clears it), the mount is up once
        // the new process says so; the kernel's mount ids are reused, so they cannot tell.
        let over_dead = is_mounted(&mp);
        let mut child = cmd.spawn().expect("spawn nuage");
        let ok = wait_until(Duration::from_secs(30), || {
            let up = if over_dead {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("(Ctrl-C to unmount)")
            } else {
                is_mounted(&mp)
            };
            up || matches!(child.try_wait(), Ok(Some(_)))
        });
        let m = Mount {
            mp: mp.clone(),
            cache,
            log: log.clone(),
            child: Some(child),
            _tmp: Some(tmp),
        };
        assert!(
            ok && is_mounted(&mp),
            "mount did not come up; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            wait_until(Duration::from_secs(20), || std::fs::read_dir(&mp).is_ok()),
            "mount does not answer"
        );
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }

    /// The number of file descriptors the mount process holds open.
    pub fn open_fds(&self) -> usize {
        let pid = self.child.as_ref().expect("running").id();
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("proc fd")
            .count()
    }

    /// `nuage unmount --wait 0`: unmounts at once, leaving pending uploads in the journal;
    /// answers what the command printed.
    pub fn unmount_now(mut self) -> String {
        let mut cmd = nuage();
        cmd.args(["unmount", "--wait", "0"]).arg(&self.mp);
        let out = run_bounded(cmd, Duration::from_secs(30));
        assert!(out.status.success(), "unmount failed");
        self.wait_exit();
        assert!(!is_mounted(&self.mp), "still mounted after unmount");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Waits (bounded) for the mount process to end after an unmount.
    pub fn wait_exit(&mut self) {
        let mut child = self.child.take().expect("child");
        let exited = wait_until(Duration::from_secs(15), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nuage did not exit after unmount");
        }
    }

    /// Bytes the mount process has read so far (`rchar` of `/proc/PID/io`: files, sockets and
    /// `/dev/fuse` alike).
    pub fn bytes_read(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("rchar")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `nuage status --json`, from a snapshot taken after everything the test did so far.
    pub fn status(&self) -> serde_json::Value {
        let since = now_ms();
        let mut last = serde_json::Value::Null;
        let fresh = wait_until(Duration::from_secs(10), || {
            let out = nuage()
                .arg("status")
                .arg(&self.mp)
                .arg("--json")
                .output()
                .expect("status");
            assert_succeeded(&out);
            last = serde_json::from_slice(&out.stdout).expect("json");
            last["updated_ms"].as_u64().unwrap_or(0) > since
        });
        assert!(fresh, "no fresh status snapshot");
        last
    }

    /// Number of pending uploads, from a fresh snapshot.
    pub fn pending(&self) -> u64 {
        self.status()["pending_uploads"]
            .as_u64()
            .expect("pending_uploads is a number")
    }

    /// The reason the first pending upload last failed, as `nuage status` tells it.
    pub fn first_upload_error(&self) -> Option<String> {
        self.status()["uploads"]
            .as_array()
            .and_then(|u| u.first().cloned())
            .and_then(|u| u["last_error"].as_str().map(str::to_string))
    }

    /// Waits (bounded) until every upload is done.
    pub fn wait_drained(&self) {
        assert!(
            wait_until(Duration::from_secs(60), || self.pending() == 0),
            "uploads never drained; log:\n{}",
            self.log_text()
        );
    }

    /// Kills the mount process with SIGKILL (a crash) and leaves its dead mount point as a
    /// crash does ("Transport endpoint is not connected"); `Drop` still cleans it up.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the mount process with SIGKILL (a crash) and cleans the dead mount up.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // For a later failure of the same test (the mount's folder goes away): the end of
        // its log in the test's output, which is shown only when the test fails.
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "end of the killed mount's log:\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mp)
            .status();
        assert!(
            wait_until(Duration::from_secs(10), || !is_mounted(&self.mp)),
            "dead mount not cleaned up"
        );
    }

    /// Unmounts with `nuage unmount` and waits (bounded) for the process to exit 0.
    pub fn unmount(mut self) {
        let out = nuage()
            .arg("unmount")
            .arg(&self.mp)
            .output()
            .expect("unmount");
        assert!(
            out.status.success(),
            "unmount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_exit();
        assert!(!is_mounted(&self.mp), "still mounted after unmount");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The mount's own log is the first thing to read when a test fails; keep its tail.
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(200).collect();
            eprintln!(
                "--- last lines of the nuage log ({}) ---",
                self.log.display()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if is_mounted(&self.mp) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mp)
                .status();
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) with the pid of a child we own and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let exited = wait_until(Duration::from_secs(10), || {
                matches!(c.try_wait(), Ok(Some(_)))
            });
            if !exited {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if is_mounted(&self.mp) {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
    }
}

/// Runs `nuage mount --daemon` expecting failure; answers (stderr, exit code).
pub fn failed_mount(
    url: &str,
    mp: &Path,
    user: Option<&str>,
    password: Option<&str>,
    extra: &[&str],
) -> (String, i32) {
    mount_daemon(url, mp, user, password, None, extra)
}

/// `nuage mount --daemon`, its cache in `cache` (else a folder of its own): (stderr, exit
/// code).
pub fn mount_daemon(
    url: &str,
    mp: &Path,
    user: Option<&str>,
    password: Option<&str>,
    cache: Option<&Path>,
    extra: &[&str],
) -> (String, i32) {
    let (cmd, _tmp) = mount_daemon_command(url, mp, user, password, cache, extra);
    let out = run_bounded(cmd, Duration::from_secs(60));
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// The command [`mount_daemon`] runs, and the folder of its password file (and cache when
/// none is given), to keep until it has run.
pub fn mount_daemon_command(
    url: &str,
    mp: &Path,
    user: Option<&str>,
    password: Option<&str>,
    cache: Option<&Path>,
    extra: &[&str],
) -> (Command, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cmd = nuage();
    cmd.arg("mount")
        .arg(url)
        .arg(mp)
        .arg("--daemon")
        .arg("--cache-dir")
        .arg(cache.map_or_else(|| tmp.path().join("c"), Path::to_path_buf));
    if let Some(u) = user {
        cmd.arg("--user").arg(u);
    }
    if let Some(p) = password {
        let pf = tmp.path().join("pw");
        std::fs::write(&pf, p).expect("pw");
        cmd.arg("--password-file").arg(pf);
    }
    cmd.args(extra).stdin(Stdio::null());
    (cmd, tmp)
}

/// Runs `nuage ARGS` (bounded to 60 s), asserts that it succeeded and answers its output.
pub fn nuage_ok(args: &[&str]) -> String {
    let out = run_bounded(
        {
            let mut c = nuage();
            c.args(args);
            c
        },
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "nuage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command with a time bound; kills it when the bound passes.
pub fn run_bounded(cmd: Command, limit: Duration) -> std::process::Output {
    run_bounded_input(cmd, None, limit)
}

/// [`run_bounded`], with `input` written to the command's standard input.
pub fn run_bounded_input(
    mut cmd: Command,
    input: Option<&str>,
    limit: Duration,
) -> std::process::Output {
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        let _ = stdin.write_all(text.as_bytes());
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of the child we spawned; worst case it already exited.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("command did not finish within {limit:?}");
        }
    }
}

/// Sends SIGTERM and waits (at most `within`) for the end: the exit status, `None` when the
/// process did not end (it is killed then, and what it left mounted on `mp` unmounted).
pub fn terminate(
    child: &mut std::process::Child,
    mp: &Path,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let exited = wait_until(within, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        let _ = Command::new("fusermount3").arg("-uz").arg(mp).status();
        return None;
    }
    child.wait().ok()
}

/// Reads `len` bytes at `off` of a file.
pub fn read_at(p: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(p).expect("open");
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f
            .read_at(&mut buf[done..], off + done as u64)
            .expect("read_at");
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    buf
}

/// Compares two trees: same names, types, sizes and bytes.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let mut e: Vec<_> = std::fs::read_dir(expected)
        .expect("read expected")
        .map(|d| d.expect("entry").file_name())
        .collect();
    let mut a: Vec<_> = std::fs::read_dir(actual)
        .expect("read actual")
        .map(|d| d.expect("entry").file_name())
        .collect();
    e.sort();
    a.sort();
    assert_eq!(e, a, "names differ in {}", actual.display());
    for n in e {
        let (ep, ap) = (expected.join(&n), actual.join(&n));
        let (em, am) = (
            std::fs::metadata(&ep).expect("md"),
            std::fs::metadata(&ap).expect("md"),
        );
        assert_eq!(em.is_dir(), am.is_dir(), "type of {}", ap.display());
        if em.is_dir() {
            assert_same_tree(&ep, &ap);
        } else {
            assert_eq!(em.len(), am.len(), "size of {}", ap.display());
            assert!(
                std::fs::read(&ep).expect("read") == std::fs::read(&ap).expect("read"),
                "content of {}",
                ap.display()
            );
        }
    }
}

/// The awkward names every server must round-trip.
pub fn awkward_names() -> Vec<String> {
    vec![
        "with space.txt".into(),
        "hash#tag.txt".into(),
        "100% sure.txt".into(),
        "what?.txt".into(),
        "a&b=c;d.txt".into(),
        "it's \"quoted\".txt".into(),
        "emoji 😀🎉.txt".into(),
        "Élève — été.txt".into(),
        "caf\u{e9} nfc.txt".into(),
        "cafe\u{301} nfd.txt".into(),
        "+plus+ [brackets] {braces}.txt".into(),
    ]
}

/// A plain HTTP/1.1 server on 127.0.0.1 that answers each request (one per connection) with
/// what `answer` makes of its head (request line and headers), and keeps the heads it saw.
/// Ended, and its thread joined, on drop.
pub struct TinyHttp {
    pub port: u16,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TinyHttp {
    pub fn start(answer: impl Fn(&str) -> String + Send + 'static) -> TinyHttp {
        use std::io::BufRead;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, stopped) = (heads.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(sock) = conn else { continue };
                let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
                let mut r = std::io::BufReader::new(sock);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => head.push_str(&line),
                    }
                }
                let reply = answer(&head);
                if let Ok(mut h) = seen.lock() {
                    h.push(head);
                }
                let _ = r.get_mut().write_all(reply.as_bytes());
            }
        });
        TinyHttp {
            port,
            heads,
            stop,
            thread: Some(thread),
        }
    }

    /// The request heads seen so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

impl Drop for TinyHttp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accepting thread, which then sees the stop flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A log written by one program line by line (each line an open, an append and a close) and
/// followed by another that keeps it open (`tail -f`), on the server at `url` whose files are
/// in `root` (`fix` makes a file written there readable by the server). When the kernel
/// reads the cached file itself (passthrough), each writer takes the file over in turn,
/// also after the line before was uploaded; the follower reads every line as it comes.
pub fn follow_a_log_appended_line_by_line(url: &str, root: &Path, fix: impl Fn()) {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    std::fs::write(root.join("app.log"), b"start\n").expect("seed");
    fix();
    let m = Mount::new(MountSpec::new(url).args(FAST));
    let p = m.path("app.log");
    assert_eq!(std::fs::read(&p).expect("read through"), b"start\n");
    let follower = std::fs::File::open(&p).expect("open for reading");
    // A writer that changes nothing gives the file back to the cache, where the next one
    // finds it.
    let idle = std::fs::OpenOptions::new().append(true).open(&p);
    drop(idle.expect("a writer beside the follower opens at once"));
    let mut want = b"start\n".to_vec();
    for i in 0..4 {
        let line = format!("line {i}\n");
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .expect("a writer beside the follower opens at once");
        w.write_all(line.as_bytes()).expect("append");
        drop(w);
        let from = want.len();
        want.extend_from_slice(line.as_bytes());
        let mut got = vec![0u8; line.len()];
        follower
            .read_exact_at(&mut got, from as u64)
            .expect("the follower reads the new line");
        assert_eq!(got, line.as_bytes());
        // Every other line waits until the one before is on the server (uploaded, the file is
        // the cache's again before the next writer takes it).
        if i % 2 == 1 {
            wait_server(root, "app.log", &want);
        }
    }
    drop(follower);
    m.wait_drained();
    wait_server(root, "app.log", &want);
    assert!(std::fs::read(&p).expect("read after") == want);
    m.unmount();
}

/// How a [`Relay`] passes traffic on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Both ways, as it comes.
    Through,
    /// Nothing either way, and no connection closed: a server that hangs, or a network that
    /// drops every packet. Connections that lost bytes are closed when it works again.
    Silent,
    /// Each request's first bytes are held back this long: a slow server.
    Slow(Duration),
    /// Both ways, but every connection breaks 20 ms to `span_ms` after this mode was set or
    /// it was opened, at a time drawn for each direction: what passes then is cut short
    /// (from before a request's or an answer's first byte to its middle: a request lost, or
    /// done by the server with its answer lost), and a connection idle then is closed. The
    /// times come from `seed` and the connection's number, so that a failing run can be
    /// repeated as far as the timing allows.
    Breaking { seed: u64, span_ms: u64 },
    /// The next answer's first bytes close its connection instead of passing (the server
    /// did the request; the program never hears of it), then [`RelayMode::Through`].
    LoseAnswer,
    /// [`RelayMode::LoseAnswer`] for the next success (2xx) answering a request with this
    /// method: the server did it.
    LoseAnswerTo(&'static str),
    /// A captive portal (a hotel's or a train's Wi-Fi before its terms are accepted): every
    /// request on a new connection is answered `200 OK` with a web page (chunked, without
    /// etag or date), by the relay, and the connections open before are closed. The server
    /// hears nothing.
    Portal,
    /// Both ways, but what passes is cut into pieces of 1 to 64 bytes sent apart (sizes
    /// from `seed`), as a network of small packets would deliver it: every parser meets
    /// requests, answers and bodies cut at every place.
    Sliced { seed: u64 },
    /// New connections go to this other port (another server answers in the server's place,
    /// as a network's login page answers a TLS connection with its own certificate), and the
    /// connections open before are closed.
    Elsewhere(u16),
}

/// What [`RelayMode::Portal`] answers to every request.
pub const PORTAL_PAGE: &str = "<!DOCTYPE html><html><head><title>Wi-Fi</title></head>\
<body><form action=\"/accept\"><p>Accept the terms to use the Internet.</p>\
<button>OK</button></form></body></html>";

/// A TCP relay on 127.0.0.1 in front of a server, whose traffic a test can stop or slow down
/// without the server knowing. Its threads end within 0.1 s of its drop.
pub struct Relay {
    pub port: u16,
    mode: std::sync::Arc<std::sync::Mutex<RelayMode>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connections made before the last [`Relay::strand`] carry nothing any more.
    strands: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Connections cut by [`RelayMode::Breaking`].
    cuts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    pub fn start(backend: u16) -> Relay {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let mode = Arc::new(Mutex::new(RelayMode::Through));
        let stop = Arc::new(AtomicBool::new(false));
        let strands = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let cuts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (m, s, strand, cut) = (mode.clone(), stop.clone(), strands.clone(), cuts.clone());
        let accept = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        n += 1;
                        let (m, s, strand, cut) =
                            (m.clone(), s.clone(), strand.clone(), cut.clone());
                        std::thread::spawn(move || {
                            relay_connection(c, backend, &m, &s, &strand, (n, &cut))
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Relay {
            port,
            mode,
            stop,
            strands,
            cuts,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, m: RelayMode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = m;
    }

    /// The connections open now carry nothing any more, and are never closed (a laptop that
    /// moved to another network: its kept-alive connections lead nowhere); new ones work.
    pub fn strand(&self) {
        self.strands
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many connections [`RelayMode::Breaking`] broke so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// How long connection number `conn` lives (towards the server, towards the program) under
/// [`RelayMode::Breaking`], and which share of what passes then still passes (/ 1000).
fn relay_lifetimes(seed: u64, conn: u64, span_ms: u64) -> (Duration, Duration, u64) {
    // splitmix64 of the seed and the connection's number.
    let mut x = seed ^ conn.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut ms = || Duration::from_millis(20 + next() % span_ms.saturating_sub(20).max(1));
    let (up, down) = (ms(), ms());
    (up, down, next() % 1000)
}

/// The length (1 to 64 bytes) of piece number `piece` of connection `conn` under
/// [`RelayMode::Sliced`].
fn slice_len(seed: u64, conn: u64, piece: u64) -> usize {
    let mut z = (seed ^ conn.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_add(piece);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    1 + ((z ^ (z >> 31)) % 64) as usize
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// The method of `request` when it starts with a request line (`PUT /dav/a HTTP/1.1`),
/// packed; `None` for anything else (say, a piece of an upload's body: its first bytes tell
/// at once, the line end is looked for only after a method and a space).
fn request_method(request: &[u8]) -> Option<u64> {
    let space = request.iter().take(9).position(|&b| b == b' ')?;
    let word = &request[..space];
    if word.is_empty() || !word.iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    let end = request
        .windows(2)
        .take(8 << 10)
        .position(|w| w == b"\r\n")?;
    let line = &request[..end];
    (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")).then(|| method_code(word))
}

fn method_code(word: &[u8]) -> u64 {
    word.iter().fold(0, |acc, &b| acc << 8 | u64::from(b))
}

/// True (once) when the mode is [`RelayMode::LoseAnswer`], or [`RelayMode::LoseAnswerTo`] the
/// method of `last` (the connection's last request) and `answer` starts a success; the mode
/// then becomes `Through`.
fn lose_answer(m: &std::sync::Mutex<RelayMode>, last: u64, answer: &[u8]) -> bool {
    let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
    let lose = match *g {
        RelayMode::LoseAnswer => true,
        RelayMode::LoseAnswerTo(method) => {
            method_code(method.as_bytes()) == last
                && (answer.starts_with(b"HTTP/1.1 2") || answer.starts_with(b"HTTP/1.0 2"))
        }
        _ => false,
    };
    if lose {
        *g = RelayMode::Through;
    }
    lose
}

fn relay_mode(m: &std::sync::Mutex<RelayMode>) -> RelayMode {
    *m.lock().unwrap_or_else(|p| p.into_inner())
}

fn relay_connection(
    client: std::net::TcpStream,
    backend: u16,
    mode: &std::sync::Arc<std::sync::Mutex<RelayMode>>,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    strands: &std::sync::Arc<std::sync::atomic::AtomicU64>,
    (conn, cuts): (u64, &std::sync::Arc<std::sync::atomic::AtomicU64>),
) {
    use std::sync::atomic::Ordering;
    let born = strands.load(Ordering::SeqCst);
    let _ = client.set_nonblocking(false);
    // Taken while silent: held unanswered, closed once the relay works again.
    while relay_mode(mode) == RelayMode::Silent {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (target, elsewhere) = match relay_mode(mode) {
        RelayMode::Portal => return portal_answers(client, mode, stop),
        RelayMode::Elsewhere(port) => (port, true),
        _ => (backend, false),
    };
    let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    let tick = Some(Duration::from_millis(100));
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    for s in [&client, &server] {
        let _ = s.set_read_timeout(tick);
    }
    let (m, st, strand, cut) = (mode.clone(), stop.clone(), strands.clone(), cuts.clone());
    // The method of the last request sent on this connection.
    let method = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let meth = method.clone();
    let up = std::thread::spawn(move || {
        relay_pump(
            c2,
            s2,
            &m,
            &st,
            (born, &strand),
            (true, conn, &cut, &meth),
            elsewhere,
        )
    });
    relay_pump(
        server,
        client,
        mode,
        stop,
        (born, strands),
        (false, conn, cuts, &method),
        elsewhere,
    );
    let _ = up.join();
}

/// Answers every request on `client` with [`PORTAL_PAGE`] (its body, when it has one, read
/// and dropped) until the program closes the connection, 5 s pass idle, or the portal is
/// gone (the connection is closed then).
fn portal_answers(
    mut client: std::net::TcpStream,
    mode: &std::sync::Mutex<RelayMode>,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::Read;
    let _ = client.set_read_timeout(Some(Duration::from_millis(100)));
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut idle_since = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::SeqCst)
        && idle_since.elapsed() < Duration::from_secs(5)
        && relay_mode(mode) == RelayMode::Portal
    {
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                idle_since = Instant::now();
                pending.extend_from_slice(&buf[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        // Each whole request (head, and a body of Content-Length bytes) gets the page.
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            let body: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if pending.len() < end + 4 + body {
                break;
            }
            pending.drain(..end + 4 + body);
            // Sent in chunks, as made on the fly: no length tells it apart from a file.
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{PORTAL_PAGE}\r\n0\r\n\r\n",
                PORTAL_PAGE.len()
            );
            if client.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// Copies `from` to `to` as the mode says, until either side closes or the relay stops (a
/// connection to the server ends when [`RelayMode::Elsewhere`] begins, one to the other
/// server when it ends).
fn relay_pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    mode: &std::sync::Mutex<RelayMode>,
    stop: &std::sync::atomic::AtomicBool,
    (born, strands): (u64, &std::sync::atomic::AtomicU64),
    (upstream, conn, cuts, method): (
        bool,
        u64,
        &std::sync::atomic::AtomicU64,
        &std::sync::atomic::AtomicU64,
    ),
    elsewhere: bool,
) {
    // When this direction breaks, once the mode is Breaking.
    let mut ends: Option<Instant> = None;
    let mut share = 0;
    use std::io::Read;
    let close = |a: &std::net::TcpStream, b: &std::net::TcpStream| {
        let _ = a.shutdown(std::net::Shutdown::Both);
        let _ = b.shutdown(std::net::Shutdown::Both);
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut lost = false;
    let mut last = Instant::now() - Duration::from_secs(1);
    loop {
        let m = relay_mode(mode);
        if stop.load(std::sync::atomic::Ordering::SeqCst)
            || (lost && m != RelayMode::Silent)
            || m == RelayMode::Portal
            || (matches!(m, RelayMode::Elsewhere(_)) != elsewhere)
        {
            return close(&from, &to);
        }
        let broken = match m {
            RelayMode::Breaking { seed, span_ms } => {
                let (up, down, part) = relay_lifetimes(seed, conn, span_ms);
                share = part;
                *ends.get_or_insert_with(|| Instant::now() + if upstream { up } else { down })
                    <= Instant::now()
            }
            _ => false,
        };
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => {
                if strands.load(std::sync::atomic::Ordering::SeqCst) > born {
                    continue;
                }
                // What came in while the portal or the other server took over (the mode
                // changed during this read) passes no more.
                let now = relay_mode(mode);
                if now == RelayMode::Portal || matches!(now, RelayMode::Elsewhere(_)) != elsewhere {
                    return close(&from, &to);
                }
                match relay_mode(mode) {
                    RelayMode::Silent => {
                        lost = true;
                        continue;
                    }
                    RelayMode::Slow(d)
                        if upstream && last.elapsed() > Duration::from_millis(200) =>
                    {
                        std::thread::sleep(d)
                    }
                    _ => {}
                }
                last = Instant::now();
                if upstream {
                    if let Some(m) = request_method(&buf[..n]) {
                        method.store(m, std::sync::atomic::Ordering::SeqCst);
                    }
                } else if lose_answer(
                    mode,
                    method.load(std::sync::atomic::Ordering::SeqCst),
                    &buf[..n],
                ) {
                    cuts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return close(&from, &to);
                }
                if broken {
                    let _ = to.write_all(&buf[..n * share as usize / 1000]);
                    cuts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return close(&from, &to);
                }
                if let RelayMode::Sliced { seed } = relay_mode(mode) {
                    let _ = to.set_nodelay(true);
                    let mut rest = &buf[..n];
                    let mut piece = 0u64;
                    while !rest.is_empty() {
                        piece += 1;
                        let len = slice_len(seed, conn, piece).min(rest.len());
                        if to.write_all(&rest[..len]).is_err() {
                            return close(&from, &to);
                        }
                        rest = &rest[len..];
                        if piece.is_multiple_of(8) {
                            std::thread::sleep(Duration::from_micros(100));
                        }
                    }
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    return close(&from, &to);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if broken {
                    cuts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return close(&from, &to);
                }
            }
            Err(_) => return close(&from, &to),
        }
    }
}

/// `statvfs(2)` of `p`, as `df` and file managers ask it.
pub fn statvfs(p: &Path) -> std::io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}
