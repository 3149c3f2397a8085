//! The mount lifecycle: password, daemonizing, discovery, mounting, waiting, unmounting.
//!
//! `--daemon` re-executes the same command as a child in its own process group, hands it the
//! password over a pipe (never in arguments or the environment), and waits for one status line
//! on the child's standard output: `READY` once the mount answers `ls`, or `ERROR <message>`.
//! The parent exits 0 only after `READY`; a failed mount leaves nothing mounted.

use super::{CommonMountArgs, MountArgs, Platform, PlatformMountOptions};
use crate::auth::{Account, AccountStore};
use crate::cache::{BlockCache, DEFAULT_BLOCK_SIZE};
use crate::vfs::{Vfs, VfsConfig};
use crate::webdav::{self, Credentials, DavClient, DavConfig, Secret};
use crate::writeback::WriteBackConfig;
use anyhow::{anyhow, bail, Context};
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Set in the environment of the background child of `--daemon`.
const DAEMON_CHILD_ENV: &str = "NUAGE_DAEMON_CHILD";

/// Everything needed to mount once the password is known.
pub(super) struct MountPlan {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub mountpoint: PathBuf,
    pub common: CommonMountArgs,
    pub dav: DavConfig,
    /// The saved account mounted, when the mount names one.
    pub account: Option<(AccountStore, Account)>,
}

/// Is this process the background child of `--daemon`?
pub(super) fn is_daemon_child() -> bool {
    std::env::var_os(DAEMON_CHILD_ENV).is_some()
}

/// `https://` + `target` when `target` is a server's name without its scheme
/// (`cloud.example.org`, `cloud.example.org/nextcloud`): a dot, no `@` (saved accounts are
/// named `login@server`), no space.
fn bare_server_address(target: &str) -> Option<String> {
    let t = target.trim();
    if t.contains("://") || t.contains('@') || t.contains(char::is_whitespace) || !t.contains('.') {
        return None;
    }
    let u = reqwest::Url::parse(&format!("https://{t}")).ok()?;
    u.host_str()?;
    Some(u.to_string())
}

/// The saved account named by `target`, when it is not a URL.
fn account_of(target: &str) -> anyhow::Result<Option<(AccountStore, Account)>> {
    if target.contains("://") {
        return Ok(None);
    }
    let store = AccountStore::open_default()?;
    match store.get(target) {
        Ok(acc) => Ok(Some((store, acc))),
        Err(crate::auth::AuthError::NoAccount(_)) => Err(anyhow!(
            "invalid URL or account {target:?}: no saved account has that name (see: nuage accounts), and a server address starts with https:// (example: https://cloud.example.org)"
        )),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn mount_command(platform: &dyn Platform, mut a: MountArgs) -> anyhow::Result<ExitCode> {
    let child = is_daemon_child();
    if let Ok(u) = reqwest::Url::parse(a.url.trim()) {
        // Before any prompt for a password.
        super::reject_url_credentials(&u)?;
    }
    let account = match account_of(&a.url) {
        Ok(account) => account,
        Err(e) => match bare_server_address(&a.url) {
            // `cloud-aca.ac-besancon.fr`, as the academy's guide writes it: https:// is meant.
            Some(u) => {
                a.url = u;
                None
            }
            None => return Err(e),
        },
    };
    if let Some((store, acc)) = &account {
        a.url = acc.server.clone();
        a.user = Some(acc.login.clone());
        a.common.read_only |= acc.options.read_only;
        if a.common.cache_dir.is_none() {
            a.common.cache_dir = acc.options.cache_dir.clone();
        }
        if let (Some(size), true) = (&acc.options.cache_size, a.common.cache_size == 10 << 30) {
            a.common.cache_size = super::parse_size(size).map_err(|e| anyhow!("{e}"))?;
        }
        if !child {
            let secret = store.secret(acc)?;
            if a.common.daemon {
                return daemonize(Some(&secret));
            }
        }
    }
    let password = if child {
        read_password_from_parent()?
    } else if let Some((store, acc)) = &account {
        Some(store.secret(acc)?)
    } else {
        obtain_password(a.user.as_deref(), a.password_file.as_deref())?
    };
    if a.common.daemon && !child {
        return daemonize(password.as_ref());
    }
    let plan = MountPlan {
        url: a.url.clone(),
        user: a.user.clone(),
        password,
        mountpoint: a.mountpoint.clone(),
        common: a.common.clone(),
        dav: DavConfig {
            insecure: a.insecure,
            ca_cert: a.ca_cert.clone(),
            read_timeout: Duration::from_secs(a.timeout.max(1)),
            request_timeout: Duration::from_secs(a.timeout.max(1) * 2),
            connect_timeout: Duration::from_secs(a.timeout.clamp(1, 10)),
        },
        account,
    };
    let rt = runtime()?;
    report(run_mount(platform, &rt, plan))
}

/// In the daemon child, tells the parent how the mount went; elsewhere passes the result on.
pub(super) fn report(res: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    if is_daemon_child() {
        if let Err(e) = &res {
            let line = super::one_line(e);
            let mut out = std::io::stdout();
            let _ = writeln!(out, "ERROR {line}");
            let _ = out.flush();
            tracing::error!("{line}");
            return Ok(ExitCode::FAILURE);
        }
    }
    res
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .thread_name("nuage-rt")
        .build()
        .context("cannot start the async runtime")
}

/// The password from `--password-file`, `$NUAGE_PASSWORD`, or a prompt without echo.
pub(super) fn obtain_password(
    user: Option<&str>,
    file: Option<&Path>,
) -> anyhow::Result<Option<Secret>> {
    if let Some(f) = file {
        let s = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the password file {}", f.display()))?;
        let line = s.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            bail!("the password file {} is empty", f.display());
        }
        return Ok(Some(Secret::new(line)));
    }
    if let Ok(p) = std::env::var("NUAGE_PASSWORD") {
        return Ok(Some(Secret::new(p)));
    }
    let Some(user) = user else {
        return Ok(None);
    };
    if !std::io::stdin().is_terminal() {
        bail!("no password for {user}: use --password-file FILE or set NUAGE_PASSWORD");
    }
    let p = rpassword::prompt_password(format!("Password (or app password) for {user}: "))
        .context("cannot read the password from the terminal")?;
    Ok(Some(Secret::new(p)))
}

fn read_password_from_parent() -> anyhow::Result<Option<Secret>> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from the parent process")?;
    let line = line.trim_end_matches(['\n', '\r']);
    Ok(line.strip_prefix('P').map(Secret::new))
}

/// Starts the background child and waits for its status line.
pub(super) fn daemonize(password: Option<&Secret>) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the nuage executable")?;
    let args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--daemon")
        .collect();
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(DAEMON_CHILD_ENV, "1")
        .env_remove("NUAGE_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .context("cannot start the background mount process")?;
    if let Some(mut stdin) = child.stdin.take() {
        let line = match password {
            Some(p) => format!("P{}\n", p.expose()),
            None => "N\n".to_string(),
        };
        stdin
            .write_all(line.as_bytes())
            .context("cannot hand the password to the background process")?;
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no status pipe from the background process"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(line) if line.trim() == "READY" => Ok(ExitCode::SUCCESS),
        Ok(line) if line.starts_with("ERROR ") => {
            let _ = child.wait();
            bail!("{}", line.trim_end().trim_start_matches("ERROR "))
        }
        Ok(_) => {
            let status = child.wait().ok();
            bail!("the background mount process ended unexpectedly ({status:?})")
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the mount did not come up within 120 s; nothing was left mounted")
        }
    }
}

fn init_logging(common: &CommonMountArgs, default_file: Option<PathBuf>) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("NUAGE_LOG").unwrap_or_else(|_| EnvFilter::new("nuage=info,warn"));
    let file = common.log_file.clone().or(default_file);
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let res = match file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    }) {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    let _ = res;
}

/// `$XDG_CACHE_HOME/nuage`.
pub(super) fn cache_base() -> anyhow::Result<PathBuf> {
    let base = directories::BaseDirs::new()
        .ok_or_else(|| anyhow!("cannot find the home folder; give --cache-dir"))?;
    Ok(base.cache_dir().join("nuage"))
}

/// The default cache folder's name for `user` at `url`: readable, and one per folder mounted.
/// Where the readable form loses something (a space, an accent, a `_` that a `/` would also
/// give, a long path cut), a digest of the whole address keeps two folders apart: they must
/// not share a cache, whose journal would then upload one's changes into the other.
fn account_dir_name(user: Option<&str>, url: &reqwest::Url) -> String {
    // The folder a browser's address showed (`?dir=`) is the one mounted (see `web_page`).
    let folder = webdav::nextcloud::web_page(url)
        .and_then(|p| p.folder)
        .map(|f| format!("/{f}"))
        .unwrap_or_default();
    let path = format!("{}{folder}", url.path());
    let raw = format!(
        "{}@{}{}{path}",
        user.unwrap_or("anonymous"),
        url.host_str().unwrap_or("host"),
        url.port().map(|p| format!("_{p}")).unwrap_or_default(),
    );
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '-');
    let mut s: String = raw.chars().map(|c| if safe(c) { c } else { '_' }).collect();
    let lossy = s.len() > 100 || !path.chars().all(|c| safe(c) || c == '/');
    s.truncate(100);
    let mut s = s.trim_end_matches('_').to_string();
    if lossy {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(raw.as_bytes());
        s.push('-');
        for b in &d[..4] {
            s.push_str(&format!("{b:02x}"));
        }
    }
    s
}

/// Makes a folder of nuage's readable by its owner only (the cache holds copies of the
/// account's files, the journal what waits to be uploaded); a failure is logged.
fn make_private(dir: &Path) {
    if let Err(e) = crate::auth::make_private(dir) {
        tracing::warn!(folder = %dir.display(), error = %e, "could not make the folder private");
    }
}

fn check_mountpoint(
    platform: &dyn Platform,
    mp: &Path,
    allow_non_empty: bool,
) -> anyhow::Result<PathBuf> {
    if platform.mounts_on() == super::MountTarget::DriveOrNewFolder {
        return check_drive_or_new_folder(platform, mp);
    }
    let mut md = std::fs::metadata(mp);
    if let Err(e) = &md {
        // A nuage mount whose process was killed: what it had not uploaded is in the journal,
        // and this mount takes it over; the dead mount point only stands in the way.
        if e.kind() == std::io::ErrorKind::NotConnected && platform.clear_dead_mount(mp) {
            tracing::warn!(
                mountpoint = %mp.display(),
                "an earlier nuage mount here had died; cleared it"
            );
            md = std::fs::metadata(mp);
        }
    }
    let md = match md {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "mount point {} does not exist (create it with: mkdir -p {})",
            mp.display(),
            mp.display()
        ),
        Err(e) => bail!(
            "mount point {} is not usable ({e}); if a mount died there, run: nuage unmount {}",
            mp.display(),
            mp.display()
        ),
    };
    if !md.is_dir() {
        bail!("mount point {} is not a folder", mp.display());
    }
    let abs = std::fs::canonicalize(mp)
        .with_context(|| format!("cannot resolve the mount point {}", mp.display()))?;
    if platform.is_mounted(&abs) {
        bail!(
            "mount point {} is busy: something is already mounted there (unmount it with: nuage unmount {})",
            abs.display(),
            abs.display()
        );
    }
    // Files in the folder would be hidden while mounted: someone who typed the wrong folder
    // (~/Documents for ~/cloud) would see their own files vanish.
    if !allow_non_empty {
        let first = std::fs::read_dir(&abs)
            .with_context(|| format!("cannot read the mount point {}", abs.display()))?
            .flatten()
            .next();
        if let Some(e) = first {
            bail!(
                "mount point {} is not empty (it holds {:?}...): its files would be hidden while \
                 mounted; choose an empty folder, or add --allow-non-empty",
                abs.display(),
                e.file_name()
            );
        }
    }
    Ok(abs)
}

/// The drive `p` names as `N:` when it is a drive letter (`n:`, `N:\\`), as Windows mounts
/// and registers it.
pub(super) fn drive_letter(p: &Path) -> Option<PathBuf> {
    let s = p.to_string_lossy();
    let b = s.as_bytes();
    let tail_ok = match b.len() {
        2 => true,
        3 => b[2] == b'\\' || b[2] == b'/',
        _ => false,
    };
    (tail_ok && b[0].is_ascii_alphabetic() && b[1] == b':')
        .then(|| PathBuf::from(s[..2].to_ascii_uppercase()))
}

/// WinFsp's mount points: a drive letter not in use, or a folder that does not exist yet
/// inside one that does (WinFsp makes it, and removes it at unmount).
fn check_drive_or_new_folder(platform: &dyn Platform, mp: &Path) -> anyhow::Result<PathBuf> {
    if let Some(drive) = drive_letter(mp) {
        if platform.is_mounted(&drive) {
            bail!(
                "drive {} is already in use; pick a free letter (for example N:)",
                drive.display()
            );
        }
        return Ok(drive);
    }
    if mp.exists() {
        bail!(
            "mount point {} exists already: name a free drive letter (N:) or a folder that does not exist yet",
            mp.display()
        );
    }
    let abs = std::path::absolute(mp)
        .with_context(|| format!("cannot resolve the mount point {}", mp.display()))?;
    match abs.parent() {
        Some(parent) if parent.is_dir() => Ok(abs),
        Some(parent) => bail!(
            "folder {} does not exist (the mount point goes inside an existing folder)",
            parent.display()
        ),
        None => bail!("mount point {} is not usable", mp.display()),
    }
}

/// `p` made absolute with its symbolic links followed, also when its last parts do not
/// exist yet (a cache folder made at mount time) or cannot be looked at (a dead mount).
pub(super) fn resolved(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut out) = std::fs::canonicalize(existing) {
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return abs,
        }
    }
}

/// A mount's hold on its cache folder. Two mounts sharing one would write over each other's
/// pending files (journal rows and local copies are numbered by each process), so a second
/// mount of the same folder is refused while the first runs; the system lets go of the lock
/// when the process ends, also when it is killed.
struct CacheLock {
    _file: std::fs::File,
}

fn lock_cache(dir: &Path, mountpoint: &Path) -> anyhow::Result<CacheLock> {
    use std::io::{Read, Write};
    let path = dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            // Where this mount is, for the message a second one gives.
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", mountpoint.display());
            Ok(CacheLock { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut held = String::new();
            let _ = file.read_to_string(&mut held);
            let at = held
                .lines()
                .next()
                .filter(|l| !l.is_empty())
                .map(|l| format!(" on {l}"))
                .unwrap_or_default();
            bail!(
                "the cache folder {} is used by another nuage mount{at}: unmount it first, or \
                 give this mount a cache folder of its own with --cache-dir",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock the cache folder {}", dir.display()))
        }
    }
}

/// Mounts and serves until unmounted or signalled.
pub(super) fn run_mount(
    platform: &dyn Platform,
    rt: &tokio::runtime::Runtime,
    plan: MountPlan,
) -> anyhow::Result<ExitCode> {
    let url = reqwest::Url::parse(plan.url.trim()).map_err(|e| {
        anyhow!(
            "invalid URL {:?}: {e} (example: https://cloud.example.org)",
            plan.url
        )
    })?;
    if url.scheme() != "https" && url.scheme() != "http" {
        bail!(
            "invalid URL {}: it must start with https:// or http://",
            plan.url
        );
    }
    let cache_dir = match &plan.common.cache_dir {
        Some(d) => d.clone(),
        None => cache_base()?.join(account_dir_name(plan.user.as_deref(), &url)),
    };
    // Never inside the mount point (a cache folder given there is refused below): a file
    // made there would be hidden by the mount, and make the folder not empty.
    let default_log = if is_daemon_child() {
        cache_dir
            .parent()
            .map(|p| p.join("nuage.log"))
            .filter(|log| !resolved(log).starts_with(resolved(&plan.mountpoint)))
    } else {
        None
    };
    if let Some(parent) = default_log.as_ref().and_then(|p| p.parent()) {
        // The log names the files worked on; nuage's own folder is made private (not the
        // folder around a cache folder given with --cache-dir).
        if std::fs::create_dir_all(parent).is_ok() && plan.common.cache_dir.is_none() {
            make_private(parent);
        }
    }
    init_logging(&plan.common, default_log);
    let mountpoint = check_mountpoint(platform, &plan.mountpoint, plan.common.allow_non_empty)?;
    if resolved(&cache_dir).starts_with(&mountpoint) {
        bail!(
            "the cache folder {} is inside the mount point {}: nuage would keep its cache in \
             the mount itself; give it a folder outside with --cache-dir",
            cache_dir.display(),
            mountpoint.display()
        );
    }
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("cannot create the cache folder {}", cache_dir.display()))?;
    make_private(&cache_dir);
    // Held until this mount ends.
    let _cache_lock = lock_cache(&cache_dir, &mountpoint)?;

    let http = webdav::http_client(&plan.dav)?;
    let creds = match (&plan.user, &plan.password) {
        (Some(u), Some(p)) => Some(Credentials {
            user: u.clone(),
            password: p.clone(),
        }),
        (Some(u), None) => {
            bail!("no password for {u}: use --password-file FILE or set NUAGE_PASSWORD")
        }
        (None, _) => None,
    };
    let what = format!("cannot mount {}", url);
    // The folder this cache held until now, if it held one.
    let earlier = remembered_endpoint(&cache_dir);
    let endpoint = match &plan.account {
        // A saved account knows its user id: no discovery round trips.
        Some((_, acc)) => webdav::nextcloud::Endpoint {
            dav_root: reqwest::Url::parse(&format!(
                "{}/remote.php/dav/files/{}/",
                acc.server.trim_end_matches('/'),
                webdav::path::encode_segment(&acc.user_id)
            ))
            .map_err(|e| anyhow!("{what}: bad saved server address: {e}"))?,
            nextcloud_base: Some(url.clone()),
            user_id: Some(acc.user_id.clone()),
        },
        None => match rt.block_on(webdav::nextcloud::discover(
            &http,
            &url,
            plan.user.as_deref(),
            plan.password.as_ref(),
        )) {
            Ok(ep) => ep,
            // Out of reach: a cache that mounted this URL before knows where the files are.
            Err(
                e @ (webdav::DavError::Connect(_)
                | webdav::DavError::Timeout(_)
                | webdav::DavError::NotTheServer(_)),
            ) => match remembered_endpoint(&cache_dir) {
                Some(ep) => {
                    tracing::warn!(error = %e, "server out of reach: starting offline from the cache");
                    ep
                }
                None => bail!("{what}: {e}"),
            },
            Err(e) => bail!("{what}: {e}"),
        },
    };
    if let Some(old) = earlier.filter(|old| cache_identity(old) != cache_identity(&endpoint)) {
        bail!(
            "{what}: the cache folder {} holds the files of {} (another folder than {}): \
             sharing it would mix their files, and send changes waiting for one into the \
             other; give another --cache-dir",
            cache_dir.display(),
            old.dav_root,
            endpoint.dav_root
        );
    }
    remember_endpoint(&cache_dir, &endpoint);
    tracing::info!(root = %endpoint.dav_root, nextcloud = endpoint.nextcloud_base.is_some(), "server found");
    // A folder shared by a public link: its password alone, as the login `anonymous` (§1.1).
    let public_link = webdav::nextcloud::is_public_link(&endpoint.dav_root);
    let creds = match (creds, &plan.password) {
        (None, Some(p)) if public_link => Some(Credentials {
            user: "anonymous".into(),
            password: p.clone(),
        }),
        (creds, _) => creds,
    };
    let mut dav = DavClient::new(http.clone(), endpoint.dav_root.clone(), creds, &plan.dav);
    if endpoint.nextcloud_base.is_some() {
        dav = dav.with_trusted_conditions().with_basic_auth();
    }
    let mut caps = webdav::nextcloud::Capabilities::default();
    if let (Some(base), Some(user), Some(pw)) =
        (&endpoint.nextcloud_base, &plan.user, &plan.password)
    {
        // Read once per mount (§8.2): chunking, name rules, notify_push.
        match rt.block_on(webdav::nextcloud::capabilities(&http, base, user, pw)) {
            Ok(c) => caps = webdav::nextcloud::Capabilities::from_json(&c),
            Err(webdav::DavError::Unauthorized) => {
                bail!("{what}: {}", webdav::DavError::Unauthorized)
            }
            Err(e) => tracing::warn!(error = %e, "could not read the server capabilities"),
        }
        match (
            caps.chunking,
            webdav::nextcloud::uploads_url(&endpoint.dav_root),
        ) {
            (true, Some(up)) => dav = dav.with_uploads(up),
            _ => caps.chunking = false,
        }
    }
    if caps.bulkupload {
        if let (Some(base), Some(prefix)) = (
            &endpoint.nextcloud_base,
            webdav::nextcloud::root_in_user_root(&endpoint.dav_root),
        ) {
            if let Ok(url) = reqwest::Url::parse(&format!(
                "{}/remote.php/dav/bulk",
                base.as_str().trim_end_matches('/')
            )) {
                dav = dav.with_bulk(url, &prefix);
            }
        }
    }
    let chunking = caps.chunking;
    let gate = dav.auth().clone();

    let cache = Arc::new(
        BlockCache::open(&cache_dir, DEFAULT_BLOCK_SIZE, plan.common.cache_size)
            .with_context(|| format!("cannot open the cache in {}", cache_dir.display()))?,
    );
    let cfg = VfsConfig {
        attr_ttl: Duration::from_secs(plan.common.attr_ttl),
        dir_ttl: Duration::from_secs(plan.common.dir_ttl),
        read_only: plan.common.read_only,
        uid: current_uid(),
        gid: current_gid(),
        max_readahead: crate::vfs::DEFAULT_READAHEAD,
        cache_identity: endpoint.dav_root.to_string(),
        nextcloud: endpoint.nextcloud_base.is_some(),
        names: endpoint.nextcloud_base.as_ref().map(|_| caps.names.clone()),
    };
    let wb_cfg = WriteBackConfig {
        dir: cache_dir.clone(),
        upload_delay: Duration::from_secs_f64(plan.common.upload_delay.max(0.0)),
        // 8 transfers at once, at most 4 of them of files over 1 MiB.
        parallel: 8,
        chunk_threshold: 10 << 20,
        // 10 MiB chunks, smaller when the server asks for it (files.chunked_upload.max_size).
        chunk_size: caps
            .chunk_max_size
            .filter(|m| *m >= 1 << 20)
            .map_or(10 << 20, |m| m.min(10 << 20)),
        // Several chunks of a large file at once, as many as the server says it takes
        // (files.chunked_upload.max_parallel_count), at most 4.
        chunk_parallel: caps.chunk_parallel.map_or(3, |n| n.clamp(1, 4) as usize),
        identity: endpoint.dav_root.to_string(),
    };
    let vfs = rt
        .block_on(Vfs::new(dav, cache, cfg, wb_cfg, chunking))
        .map_err(|e| match gate.is_refused() {
            // A public link's password is all it asks for.
            true if public_link => {
                let how = if plan.password.is_some() {
                    "the link's password is not this one"
                } else {
                    "the link is protected by a password: give it with --password-file FILE or NUAGE_PASSWORD"
                };
                anyhow!("{what}: {how}")
            }
            _ => anyhow!("{what}: {e}"),
        })?;
    // The account's services beside WebDAV: public links, trash bin, versions, activity. Set
    // (and the mount registered for `nuage status`) before the mount appears, so that a
    // command run as soon as it answers finds everything.
    let mut activity = None;
    if let (Some(base), Some(login), Some(pw), Some(uid)) = (
        &endpoint.nextcloud_base,
        &plan.user,
        &plan.password,
        endpoint
            .user_id
            .clone()
            .or_else(|| webdav::nextcloud::user_id_in(&endpoint.dav_root)),
    ) {
        let api = webdav::nextcloud::Services {
            http: http.clone(),
            base: base.clone(),
            login: login.clone(),
            password: pw.clone(),
            user_id: uid,
        };
        if caps.activity {
            activity = Some(crate::poll::ActivityConfig {
                api: api.clone(),
                interval: Duration::from_secs_f64(plan.common.poll_interval.clamp(1.0, 60.0)),
            });
        }
        vfs.set_server_api(crate::vfs::ServerApi {
            api,
            root_in_account: webdav::nextcloud::root_in_user_root(&endpoint.dav_root)
                .unwrap_or_default(),
        });
    }
    let reg_path = crate::status::registry_path(&cache_base()?, &mountpoint);
    let reg = crate::status::Registration {
        pid: std::process::id(),
        cache_dir: cache_dir.clone(),
    };
    let registered = match reg_path.parent() {
        Some(dir) => std::fs::create_dir_all(dir),
        None => Ok(()),
    };
    if let Err(e) = registered.and_then(|()| crate::status::write_json(&reg_path, &reg)) {
        tracing::warn!(error = %e, "cannot register the mount for nuage status");
    }
    let registered = Registered(reg_path);
    let info = SnapshotInfo {
        mountpoint: mountpoint.to_string_lossy().into_owned(),
        url: url.to_string(),
        dir: cache_dir.clone(),
        gate,
        account: plan.account.clone(),
        root_in_account: webdav::nextcloud::root_in_user_root(&endpoint.dav_root),
        alerts: Default::default(),
        desktop: crate::notify::Desktop::of_session(),
    };
    write_snapshot(&vfs, &info);
    let opts = PlatformMountOptions {
        fsname: format!("nuage:{}", url.host_str().unwrap_or("webdav")),
        read_only: plan.common.read_only,
        allow_other: plan.common.allow_other,
    };
    // Listened to from just before the mount exists: a signal that comes as soon as the mount
    // is visible unmounts cleanly instead of ending the process with the mount left behind.
    // (Before this point a signal still ends a mount that is being set up, as it should.)
    let mut signals = EndSignals::listen(rt);
    let mounted = platform
        .mount(vfs.clone(), rt.handle().clone(), &mountpoint, &opts)
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;

    // The mount is live only when it answers a listing.
    let (tx, rx) = std::sync::mpsc::channel();
    let mp2 = mountpoint.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_dir(&mp2).map(|rd| rd.count()));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(_)) => {}
        other => {
            mounted.unmount();
            bail!(
                "the mount on {} did not answer a listing: {other:?}",
                mountpoint.display()
            );
        }
    }
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    if is_daemon_child() {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "READY");
        let _ = out.flush();
    } else {
        eprintln!(
            "mounted {} on {} (Ctrl-C to unmount)",
            url,
            mountpoint.display()
        );
    }

    let _in_runtime = rt.enter();
    let push = match (&caps.notify_push, &plan.user, &plan.password) {
        (Some(url), Some(login), Some(pw)) if plan.dav.ca_cert.is_none() && !plan.dav.insecure => {
            Some(crate::poll::PushConfig {
                url: url.clone(),
                login: login.clone(),
                password: pw.clone(),
            })
        }
        (Some(_), _, _) => {
            tracing::info!("notify_push offered, but not used with --ca-cert/--insecure: polling");
            None
        }
        _ => None,
    };
    crate::poll::start(
        vfs.clone(),
        crate::poll::PollConfig {
            interval: Duration::from_secs_f64(plan.common.poll_interval.max(0.2)),
            offline_probe: Duration::from_secs(2),
        },
        push,
    );
    vfs.start_hydrator(Duration::from_secs(300));
    if let Some(a) = activity {
        crate::poll::follow_activity(vfs.clone(), a);
    }
    rt.block_on(wait_for_end(&*mounted, &vfs, &info, &mut signals));
    mounted.unmount();
    write_snapshot(&vfs, &info);
    drop(registered);
    vfs.flush_meta();
    if let Err(e) = rt.block_on(vfs.flush_cache()) {
        tracing::warn!(error = %e, "cache index flush failed at unmount");
    }
    tracing::info!(mountpoint = %mountpoint.display(), "unmounted");
    Ok(ExitCode::SUCCESS)
}

/// Which folder of which account a cache holds, whatever address reaches it (a server that
/// moved to another address keeps its cache): the Nextcloud user and the folder below its
/// root, or the WebDAV folder's path.
fn cache_identity(ep: &webdav::nextcloud::Endpoint) -> String {
    let root = &ep.dav_root;
    match (
        webdav::nextcloud::user_id_in(root),
        webdav::nextcloud::root_in_user_root(root),
    ) {
        (Some(uid), Some(below)) => format!("nextcloud {uid}/{below}"),
        _ => format!(
            "webdav {}",
            webdav::path::decode(root.path()).trim_matches('/')
        ),
    }
}

/// Remembers where a URL's files are, for a later start while the server is out of reach.
fn remember_endpoint(cache_dir: &Path, ep: &webdav::nextcloud::Endpoint) {
    let v = serde_json::json!({
        "dav_root": ep.dav_root.as_str(),
        "nextcloud_base": ep.nextcloud_base.as_ref().map(|u| u.as_str()),
        "user_id": ep.user_id,
    });
    let _ = std::fs::create_dir_all(cache_dir);
    let _ = crate::status::write_json(&cache_dir.join("endpoint.json"), &v);
}

fn remembered_endpoint(cache_dir: &Path) -> Option<webdav::nextcloud::Endpoint> {
    let v: serde_json::Value = crate::status::read_json(&cache_dir.join("endpoint.json")).ok()?;
    Some(webdav::nextcloud::Endpoint {
        dav_root: reqwest::Url::parse(v.get("dav_root")?.as_str()?).ok()?,
        nextcloud_base: v
            .get("nextcloud_base")
            .and_then(|b| b.as_str())
            .and_then(|b| reqwest::Url::parse(b).ok()),
        user_id: v
            .get("user_id")
            .and_then(|u| u.as_str())
            .map(str::to_string),
    })
}

/// The mount's entry for `nuage status`, removed when the mount ends (or fails to start).
struct Registered(PathBuf);

impl Drop for Registered {
    fn drop(&mut self) {
        crate::status::unregister(&self.0, std::process::id());
    }
}

struct SnapshotInfo {
    mountpoint: String,
    url: String,
    dir: PathBuf,
    gate: Arc<webdav::AuthGate>,
    account: Option<(AccountStore, Account)>,
    root_in_account: Option<String>,
    /// What the snapshots before told the desktop.
    alerts: std::sync::Mutex<crate::notify::Alerts>,
    desktop: Option<crate::notify::Desktop>,
}

impl SnapshotInfo {
    fn auth_error(&self) -> Option<String> {
        self.gate.is_refused().then(|| match &self.account {
            Some((_, acc)) => format!(
                "the server refused the app password of {} (revoked or changed); nothing is sent until you sign in again with: nuage login {} --name {} (pending changes stay in the journal)",
                acc.name, acc.server, acc.name
            ),
            None => "the server refused the password (revoked or changed); unmount and mount again with the new password (pending changes stay in the journal)".to_string(),
        })
    }

    /// After a refusal, picks up a new app password saved by `nuage login` for the account.
    fn reload_credentials(&self) {
        let Some((store, acc)) = &self.account else {
            return;
        };
        if !self.gate.is_refused() {
            return;
        }
        let Ok(fresh) = store.get(&acc.name) else {
            return;
        };
        if let Ok(secret) = store.secret(&fresh) {
            if Some(&secret) != self.gate.password().as_ref() {
                self.gate.replace(Credentials {
                    user: fresh.login,
                    password: secret,
                });
            }
        }
    }
}

fn write_snapshot(vfs: &Vfs, info: &SnapshotInfo) {
    let wb = vfs.writeback();
    let usage = vfs.cache().usage();
    let uploads = wb.pending();
    let pending_bytes = uploads.iter().map(|u| u.size).sum();
    let offline_since = vfs.reach().offline_since();
    let st = crate::status::Status {
        pid: std::process::id(),
        mountpoint: info.mountpoint.clone(),
        url: info.url.clone(),
        pending_uploads: wb.pending_count(),
        uploads,
        pending_folders: wb.pending_folders().iter().map(|p| p.to_string()).collect(),
        pending_deletes: wb.pending_deletes().iter().map(|p| p.to_string()).collect(),
        pending_folder_deletes: wb.pending_rmdirs().iter().map(|p| p.to_string()).collect(),
        pending_renames: wb
            .pending_moves()
            .into_iter()
            .map(|m| [m.from.to_string(), m.to.to_string()])
            .collect(),
        conflicts: wb.conflicts().into_iter().map(Into::into).collect(),
        cache: crate::status::CacheInfo {
            bytes: usage.bytes,
            limit: usage.limit,
            blocks: usage.blocks,
            pinned_bytes: usage.pinned_bytes,
            pending_bytes,
        },
        updated: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        updated_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        auth_error: info.auth_error(),
        online: offline_since.is_none(),
        offline_reason: vfs.reach().offline_reason(),
        offline_since: offline_since.map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        }),
        pins: vfs.pin_progress(),
        root_in_account: info.root_in_account.clone(),
    };
    if let Err(e) = crate::status::write_json(&info.dir.join("status.json"), &st) {
        tracing::debug!(error = %e, "cannot write the status snapshot");
    }
    if let Some(desktop) = info.desktop {
        let told = info.alerts.lock().map(|mut a| a.after(&st));
        desktop.show_in_background(told.unwrap_or_default());
    }
}

/// The signals that end a mount: SIGTERM and SIGINT (Ctrl-C; Ctrl-C elsewhere).
struct EndSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl EndSignals {
    /// Starts listening (the default action, ending the process, is replaced from now on).
    fn listen(rt: &tokio::runtime::Runtime) -> Self {
        let _in_runtime = rt.enter();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            EndSignals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        EndSignals {}
    }

    /// Waits for one; says which.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.term) => "terminated",
                _ = recv(&mut self.int) => "interrupted",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "interrupted"
        }
    }
}

async fn wait_for_end(
    mounted: &dyn super::MountedFs,
    vfs: &Vfs,
    info: &SnapshotInfo,
    signals: &mut EndSignals,
) {
    let request = info.dir.join(crate::status::UNMOUNT_REQUEST);
    // A request left by a mount process that was killed before it saw it is not this one's.
    let _ = std::fs::remove_file(&request);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            why = signals.next() => { tracing::info!("{why}, unmounting"); return; }
            _ = tick.tick() => {
                if !mounted.is_alive() {
                    return;
                }
                if request.exists() {
                    let _ = std::fs::remove_file(&request);
                    tracing::info!("asked to unmount (nuage unmount), unmounting");
                    return;
                }
                n += 1;
                if n.is_multiple_of(2) {
                    write_snapshot(vfs, info);
                }
                if n.is_multiple_of(20) {
                    info.reload_credentials();
                    vfs.remember_listings();
                    drop(tokio::task::spawn_blocking(give_back_free_memory));
                }
                if n.is_multiple_of(8) {
                    if let Err(e) = vfs.flush_cache().await {
                        tracing::warn!(error = %e, "cache index flush failed");
                    }
                }
            }
        }
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(unix)]
fn current_gid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

#[cfg(not(unix))]
fn current_uid() -> u32 {
    0
}

#[cfg(not(unix))]
fn current_gid() -> u32 {
    0
}

/// Hands the allocator's free memory back to the system when the process holds much more
/// than it uses. glibc keeps what is freed between chunks still in use (only the top of a heap
/// shrinks by itself): refreshing a folder of 50,000 files again and again left the process
/// holding 110 MiB for 45 MiB in use. Checked every few seconds: the resident size beyond the
/// bytes in use, against what it was right after the last trim. The trim walks the free chunks
/// of each arena under its lock (20-35 ms measured for a heap of that size, in a blocking
/// thread: an allocation meanwhile waits), so it is made only after such growth.
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        /// Resident bytes beyond those in use, right after the last trim.
        static BASE: AtomicUsize = AtomicUsize::new(0);
        /// Growth worth a trim.
        const WORTH: usize = 16 << 20;
        let overhead = || -> Option<usize> {
            let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
            let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
            // SAFETY: mallinfo2(3) only reads the allocator's own state, under its locks.
            let used = unsafe { libc::mallinfo2() }.uordblks;
            // SAFETY: sysconf(3) reads a constant of the system.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
            Some((pages * page).saturating_sub(used))
        };
        let Some(now) = overhead() else {
            return;
        };
        let base = BASE.load(Ordering::Relaxed);
        if now < base {
            BASE.store(now, Ordering::Relaxed);
        } else if now - base >= WORTH {
            let t = std::time::Instant::now();
            // SAFETY: malloc_trim(3) only gives the allocator's free pages back, under its
            // locks; it takes no pointer from us.
            unsafe { libc::malloc_trim(0) };
            let after = overhead().unwrap_or(now);
            BASE.store(after, Ordering::Relaxed);
            tracing::debug!(before = now, after, took = ?t.elapsed(), "free memory given back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WinFsp's rules, checked with a platform that has `M:` in use.
    struct Drives;
    impl Platform for Drives {
        fn mounts_on(&self) -> super::super::MountTarget {
            super::super::MountTarget::DriveOrNewFolder
        }
        fn mount(
            &self,
            _vfs: Arc<Vfs>,
            _rt: tokio::runtime::Handle,
            _mountpoint: &Path,
            _opts: &super::super::PlatformMountOptions,
        ) -> anyhow::Result<Box<dyn super::super::MountedFs>> {
            bail!("not in this test")
        }
        fn unmount(&self, _mountpoint: &Path) -> anyhow::Result<()> {
            Ok(())
        }
        fn is_mounted(&self, mountpoint: &Path) -> bool {
            mountpoint == Path::new("M:")
        }
    }

    #[test]
    fn drive_letters_and_new_folders_are_windows_mount_points() {
        assert_eq!(
            check_mountpoint(&Drives, Path::new("n:"), false).expect("n:"),
            PathBuf::from("N:")
        );
        assert_eq!(
            check_mountpoint(&Drives, Path::new("N:\\"), false).expect("N:\\"),
            PathBuf::from("N:")
        );
        let busy = check_mountpoint(&Drives, Path::new("m:"), false).expect_err("in use");
        assert!(busy.to_string().contains("already in use"), "{busy}");
        let tmp = tempfile::tempdir().expect("tmp");
        let new = tmp.path().join("Nextcloud");
        assert_eq!(
            check_mountpoint(&Drives, &new, false).expect("new folder"),
            new
        );
        let exists = check_mountpoint(&Drives, tmp.path(), false).expect_err("exists");
        assert!(exists.to_string().contains("exists already"), "{exists}");
        let orphan =
            check_mountpoint(&Drives, &tmp.path().join("no/such"), false).expect_err("no parent");
        assert!(orphan.to_string().contains("does not exist"), "{orphan}");
        for not_a_drive in ["NN:", "1:", "N", "N:x"] {
            assert_eq!(drive_letter(Path::new(not_a_drive)), None, "{not_a_drive}");
        }
    }

    #[test]
    fn server_names_without_scheme_mean_https() {
        assert_eq!(
            bare_server_address("cloud-aca.ac-besancon.fr").as_deref(),
            Some("https://cloud-aca.ac-besancon.fr/")
        );
        assert_eq!(
            bare_server_address(" h.example.org:8443/nc ").as_deref(),
            Some("https://h.example.org:8443/nc")
        );
        for not in [
            "prenom.nom@cloud-aca.ac-besancon.fr",
            "work",
            "http://h.org",
            "a b.org",
        ] {
            assert_eq!(bare_server_address(not), None, "{not}");
        }
    }

    #[test]
    fn account_dirs_are_safe_names() {
        let u = reqwest::Url::parse("https://cloud-aca.ac-besancon.fr/remote.php/dav/files/a b/")
            .expect("url");
        let n = account_dir_name(Some("jean.dupont@ac-besancon.fr"), &u);
        assert!(!n.contains('/') && !n.contains(' '), "{n}");
        assert!(n.starts_with("jean.dupont@ac-besancon.fr@cloud-aca.ac-besancon.fr"));
        let name = |s: &str| account_dir_name(Some("u"), &reqwest::Url::parse(s).expect("url"));
        // Plain addresses keep their readable name.
        assert_eq!(name("https://h/"), "u@h");
        assert_eq!(
            name("http://127.0.0.1:8080/remote.php/dav/files/u/"),
            "u@127.0.0.1_8080_remote.php_dav_files_u"
        );
        // Folders that the readable form would mix up get their own.
        let apart = [
            "https://h/dav/a b/",
            "https://h/dav/a_b/",
            "https://h/dav/a/b/",
            "https://h/dav/%C3%89l%C3%A8ves/",
            "https://h/dav/%C3%A8l%C3%A9ves/",
            "https://h/index.php/apps/files/?dir=/Cours",
            "https://h/index.php/apps/files/?dir=/Devoirs",
            &format!("https://h/{}/x/", "d".repeat(120)),
            &format!("https://h/{}/y/", "d".repeat(120)),
        ];
        let names: std::collections::BTreeSet<String> = apart.iter().map(|u| name(u)).collect();
        assert_eq!(names.len(), apart.len(), "{names:?}");
        assert!(
            names.iter().all(|n| n.len() <= 109 && !n.contains('/')),
            "{names:?}"
        );
    }
}
