//! The command line: `nuage mount`, `unmount`, `status`, `login`, `accounts`, `logout`,
//! `autostart`, `demo`...
//!
//! The CLI owns the tokio runtime and the mount lifecycle. It mounts through the [`Platform`]
//! trait, which the binary (`platform/main.rs`) implements with FUSE or WinFsp, so nothing here
//! depends on an OS filesystem API. Errors reach people as one line: `error: <what>: <why>`.

mod autostart;
mod demo;
mod login;
mod mount;
mod status;

use crate::vfs::Vfs;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Options the platform adapter needs at mount time.
#[derive(Debug, Clone)]
pub struct PlatformMountOptions {
    /// Name shown as the mount's source (`df`, `mount`).
    pub fsname: String,
    /// Mount read-only.
    pub read_only: bool,
    /// Let other users see the mount.
    pub allow_other: bool,
}

/// A live mount.
pub trait MountedFs: Send {
    /// False once the OS ended the mount (`fusermount3 -u`, `nuage unmount`).
    fn is_alive(&self) -> bool;
    /// Unmounts (if still mounted) and waits for the adapter to stop.
    fn unmount(self: Box<Self>);
}

/// What an OS mounts a filesystem on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountTarget {
    /// An existing folder (FUSE).
    ExistingFolder,
    /// A drive letter not in use (`N:`) or a folder that does not exist yet (WinFsp makes it).
    DriveOrNewFolder,
}

/// What an OS adapter provides.
pub trait Platform: Sync {
    /// What this OS mounts on.
    fn mounts_on(&self) -> MountTarget {
        MountTarget::ExistingFolder
    }
    /// False when only the process that serves a mount can end it (WinFsp): `nuage unmount`
    /// then asks that process to end, as `--ask` does.
    fn unmounts_from_outside(&self) -> bool {
        true
    }
    /// Mounts `vfs` on `mountpoint`; the adapter calls into `vfs` on `rt`.
    fn mount(
        &self,
        vfs: Arc<Vfs>,
        rt: tokio::runtime::Handle,
        mountpoint: &Path,
        opts: &PlatformMountOptions,
    ) -> anyhow::Result<Box<dyn MountedFs>>;
    /// Unmounts a mount point made by another process (`nuage unmount`).
    fn unmount(&self, mountpoint: &Path) -> anyhow::Result<()>;
    /// True when something is already mounted on `mountpoint`.
    fn is_mounted(&self, mountpoint: &Path) -> bool;
    /// Removes a nuage mount on `mountpoint` whose process died (killed, crashed): the OS
    /// keeps such a mount point until it is unmounted, and answers every access to it with an
    /// error. True when there was one and it is gone.
    fn clear_dead_mount(&self, _mountpoint: &Path) -> bool {
        false
    }
}

/// nuage: mount a Nextcloud or WebDAV folder as a local folder.
#[derive(Debug, Parser)]
#[command(name = "nuage", version, about)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mount a Nextcloud server or a WebDAV folder.
    Mount(MountArgs),
    /// Unmount a mount point (waiting for pending uploads first).
    Unmount(UnmountArgs),
    /// Show pending uploads, conflicts and cache use of a mount.
    Status(StatusArgs),
    /// Show what happened to the account's files lately (Nextcloud's Activity feed).
    Activity(ActivityArgs),
    /// Serve a demo cloud with sample files on 127.0.0.1 and mount it (no account needed).
    Demo(DemoArgs),
    /// Sign in to a Nextcloud (browser login, or --app-password) and save the account.
    #[command(
        after_help = "Exit status: 0 saved; 3 server unreachable; 4 TLS failure; \
        5 not a Nextcloud server; 6 maintenance mode; 7 wrong login or password; \
        8 throttled after too many failed logins; 9 the account requires an app password; \
        10 browser login expired or cancelled; 1 other errors."
    )]
    Login(LoginArgs),
    /// List the saved accounts (never their secrets).
    Accounts(AccountsArgs),
    /// Revoke an account's app password on the server and forget the account here.
    Logout(LogoutArgs),
    /// Mount a saved account at every login of the desktop session, or stop it (--remove).
    Autostart(AutostartArgs),
    /// Give a public link to a file or folder of a Nextcloud mount (read-only), or list or
    /// remove its links.
    Share(ShareArgs),
    /// List what was deleted from a Nextcloud mount (the server's trash bin), or put an item
    /// back.
    Trash(TrashArgs),
    /// List the earlier versions the server keeps of a file of a Nextcloud mount, or make one
    /// its content again.
    Versions(VersionsArgs),
    /// Keep files or folders of a mount always available offline.
    Pin(PinArgs),
    /// Let pinned files or folders be evicted from the cache again.
    Unpin(PinArgs),
    /// Cache maintenance.
    Cache(CacheArgs),
}

/// `nuage share`.
#[derive(Debug, Clone, Args)]
pub struct ShareArgs {
    /// A file or folder inside a mount of a Nextcloud.
    pub path: PathBuf,
    /// Ask people for a password to open the link (typed at a prompt, or one line on
    /// standard input; never an argument).
    #[arg(long, conflicts_with_all = ["list", "remove"])]
    pub password: bool,
    /// The last day the link works (YYYY-MM-DD).
    #[arg(long, value_name = "YYYY-MM-DD", conflicts_with_all = ["list", "remove"])]
    pub expire: Option<String>,
    /// Print the existing links only.
    #[arg(long, conflicts_with = "remove")]
    pub list: bool,
    /// Delete every public link of the file or folder (with --with: end that user's share).
    #[arg(long)]
    pub remove: bool,
    /// Share with this user of the server (their login), instead of a public link.
    #[arg(long, value_name = "LOGIN", conflicts_with_all = ["password", "expire", "list"])]
    pub with: Option<String>,
    /// With --with: they may change it (and, in a folder, add and delete); else read only.
    #[arg(long, requires = "with", conflicts_with = "remove")]
    pub edit: bool,
}

/// `nuage trash`.
#[derive(Debug, Clone, Args)]
pub struct TrashArgs {
    /// The mount point.
    pub mountpoint: PathBuf,
    /// Put back the most recently deleted item that was at this path (relative to the mount
    /// point, or inside it), or the item with this trash bin name.
    #[arg(long, value_name = "PATH")]
    pub restore: Option<PathBuf>,
    /// The items as JSON.
    #[arg(long, conflicts_with = "restore")]
    pub json: bool,
}

/// `nuage versions`.
#[derive(Debug, Clone, Args)]
pub struct VersionsArgs {
    /// A file inside a mount of a Nextcloud.
    pub path: PathBuf,
    /// Make this version the file's content again: its number in the list (1 is the newest)
    /// or its name on the server.
    #[arg(long, value_name = "N")]
    pub restore: Option<String>,
    /// The versions as JSON.
    #[arg(long, conflicts_with = "restore")]
    pub json: bool,
}

/// `nuage pin` / `nuage unpin`.
#[derive(Debug, Clone, Args)]
pub struct PinArgs {
    /// Files or folders inside a mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// `nuage cache`.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    cmd: CacheCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum CacheCommand {
    /// Free every cached block that may be freed (not pinned, not waiting for upload).
    Clean {
        /// The mount point.
        mountpoint: PathBuf,
    },
}

/// `nuage login`.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// Nextcloud server address (https://cloud.example.org).
    pub server: String,
    /// Type a login name and an app password (Settings > Security) instead of the browser flow;
    /// the app password is read without echo, or from standard input when it is not a terminal.
    #[arg(long)]
    pub app_password: bool,
    /// Login name (with --app-password; asked when missing).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Name of the saved account (default: login@host).
    #[arg(long)]
    pub name: Option<String>,
    /// Do not open a browser; only print the address.
    #[arg(long)]
    pub no_browser: bool,
    /// Remember: mount this account read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Remember: cache size for this account (e.g. 5G).
    #[arg(long, value_name = "SIZE")]
    pub cache_size: Option<String>,
    /// Remember: cache folder for this account.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Trust this extra CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Do not verify the server's TLS certificate (dangerous; only for test servers).
    #[arg(long)]
    pub insecure: bool,
}

/// `nuage accounts`.
#[derive(Debug, Clone, Args)]
pub struct AccountsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `nuage autostart`.
#[derive(Debug, Clone, Args)]
pub struct AutostartArgs {
    /// A saved account (see `nuage accounts`); without it, list what is mounted at login.
    pub account: Option<String>,
    /// Where to mount it at each login (made if missing).
    pub mountpoint: Option<PathBuf>,
    /// Stop mounting the account at login.
    #[arg(long)]
    pub remove: bool,
    /// List the accounts mounted at login.
    #[arg(long)]
    pub list: bool,
}

/// `nuage logout`.
#[derive(Debug, Clone, Args)]
pub struct LogoutArgs {
    /// The saved account (see `nuage accounts`).
    pub account: String,
    /// Trust this extra CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Do not verify the server's TLS certificate.
    #[arg(long)]
    pub insecure: bool,
}

/// Options shared by `mount` and `demo`.
#[derive(Debug, Clone, Args)]
pub struct CommonMountArgs {
    /// Cache folder (default: $XDG_CACHE_HOME/nuage/<account>).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Largest size of downloaded blocks kept in the cache (e.g. 500M, 10G).
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    pub cache_size: u64,
    /// Return once the mount is live and keep serving it in the background.
    #[arg(long)]
    pub daemon: bool,
    /// Mount read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Seconds for which file attributes are trusted before asking the server again.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub attr_ttl: u64,
    /// Seconds for which a folder listing is trusted before asking the server again.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub dir_ttl: u64,
    /// Seconds between the last close of a changed file and its upload.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    pub upload_delay: f64,
    /// Seconds between two checks for changes on the server.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub poll_interval: f64,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Mount on a folder that holds files (they are hidden, not lost, while mounted).
    #[arg(long)]
    pub allow_non_empty: bool,
    /// Write the log to this file (daemon default: <cache dir>/../nuage.log).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

/// `nuage mount`.
#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// A saved account (see `nuage accounts`), a Nextcloud server address
    /// (https://cloud.example.org) or the URL of a WebDAV folder.
    pub url: String,
    /// Where to mount (an existing empty folder).
    pub mountpoint: PathBuf,
    /// Login name.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// File holding the password on its first line (else $NUAGE_PASSWORD, else a prompt).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Trust this extra CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Do not verify the server's TLS certificate (dangerous; only for test servers).
    #[arg(long)]
    pub insecure: bool,
    /// Seconds of silence from the server after which a request fails (ETIMEDOUT).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    /// Options shared by the mounting commands.
    #[command(flatten)]
    pub common: CommonMountArgs,
}

/// `nuage unmount`.
#[derive(Debug, Clone, Args)]
pub struct UnmountArgs {
    /// The mount point.
    pub mountpoint: PathBuf,
    /// Seconds to wait for pending uploads before unmounting.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub wait: u64,
    /// Ask the mount process to unmount and end, as Ctrl-C in its terminal would (the only
    /// way on Windows), instead of unmounting from here.
    #[arg(long)]
    pub ask: bool,
}

/// `nuage status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The mount point; without it, one line for each mount of this user (and each stopped
    /// mount whose changes still wait in its journal).
    pub mountpoint: Option<PathBuf>,
    /// Print JSON (with at least `pending_uploads`).
    #[arg(long)]
    pub json: bool,
}

/// `nuage activity`.
#[derive(Debug, Clone, Args)]
pub struct ActivityArgs {
    /// The mount point.
    pub mountpoint: PathBuf,
    /// How many of the latest activities to show.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: u32,
    /// Print JSON (the server's fields, plus `local_path` inside the mount).
    #[arg(long, conflicts_with = "follow")]
    pub json: bool,
    /// Keep printing new activities as the mount reads them (until Ctrl-C or the unmount).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// `nuage demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where to mount the demo cloud.
    pub mountpoint: PathBuf,
    /// Folder for the demo server's files (default: $XDG_CACHE_HOME/nuage/demo-server).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Options shared by the mounting commands.
    #[command(flatten)]
    pub common: CommonMountArgs,
}

/// Parses `500M`, `10G`, `1.5GiB`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 500M, 10G)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
    };
    Ok((n * mult as f64) as u64)
}

/// Refuses a server address that carries a password or a user name: an address is visible
/// to every user of the computer (`ps`) and is written in logs and messages, and nuage takes
/// the password only from a file, the environment or a prompt.
pub(crate) fn reject_url_credentials(u: &reqwest::Url) -> anyhow::Result<()> {
    if u.password().is_some() {
        anyhow::bail!(
            "the address contains a password: remove it from the address and give the password \
             with --password-file FILE, NUAGE_PASSWORD or at the prompt (an address is visible \
             to every user of this computer)"
        );
    }
    if !u.username().is_empty() {
        anyhow::bail!(
            "the address contains a user name: remove it from the address and give it with --user {}",
            crate::webdav::path::decode(u.username())
        );
    }
    Ok(())
}

/// Runs the command line with the given platform adapter.
pub fn run(platform: &dyn Platform) -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Command::Mount(_) | Command::Demo(_)) {
        quiet_broken_pipe();
    }
    let res = match cli.cmd {
        Command::Mount(a) => {
            let mp = a.mountpoint.clone();
            mount::mount_command(platform, a).inspect_err(|e| tell_desktop_mount_failed(&mp, e))
        }
        Command::Demo(a) => demo::demo_command(platform, a),
        Command::Unmount(a) => status::unmount_command(platform, a),
        Command::Status(a) => status::status_command(a),
        Command::Activity(a) => status::activity_command(a),
        Command::Login(a) => login::login_command(a),
        Command::Accounts(a) => login::accounts_command(a),
        Command::Logout(a) => login::logout_command(a),
        Command::Autostart(a) => autostart::autostart_command(a),
        Command::Share(a) => status::share_command(a),
        Command::Trash(a) => status::trash_command(a),
        Command::Versions(a) => status::versions_command(a),
        Command::Pin(a) => status::pin_command(a, true),
        Command::Unpin(a) => status::pin_command(a, false),
        Command::Cache(a) => match a.cmd {
            CacheCommand::Clean { mountpoint } => status::cache_clean_command(&mountpoint),
        },
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            match e.downcast_ref::<login::LoginFailure>() {
                Some(f) => ExitCode::from(f.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// Commands that only print end quietly when their reader goes away (`nuage status | head`),
/// as command-line tools do, instead of panicking on the failed write. (A mount keeps
/// `SIGPIPE` ignored: a closed connection is an error it handles.)
#[cfg(unix)]
fn quiet_broken_pipe() {
    // SAFETY: restores the default action of one signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn quiet_broken_pipe() {}

/// A mount that fails with nobody to read its error (started at login from an autostart entry,
/// or by a script: no terminal) tells the desktop, when there is one; the background process
/// of `--daemon` leaves that to the command that started it.
fn tell_desktop_mount_failed(mountpoint: &Path, e: &anyhow::Error) {
    use std::io::IsTerminal;
    if mount::is_daemon_child() || std::io::stderr().is_terminal() {
        return;
    }
    if let Some(desktop) = crate::notify::Desktop::of_session() {
        desktop.show(&[crate::notify::Alert {
            summary: format!("nuage: {} is not mounted", mountpoint.display()),
            body: one_line(e),
        }]);
    }
}

/// An error and its causes on one line, each cause after a `: `, leaving out a cause whose
/// text the line already holds (errors that print their source in their own message).
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
    }

    #[test]
    fn an_error_line_says_each_cause_once() {
        let io = std::io::Error::other("disk on fire");
        // An error that prints its source in its own message, as thiserror's `{0}` does.
        #[derive(Debug, thiserror::Error)]
        #[error("cache index error: {0}")]
        struct Wraps(#[source] std::io::Error);
        let e = anyhow::Error::new(Wraps(io)).context("cannot open the cache in /c");
        assert_eq!(
            one_line(&e),
            "cannot open the cache in /c: cache index error: disk on fire"
        );
        let plain = anyhow::anyhow!("first\nline").context("outer");
        assert_eq!(one_line(&plain), "outer: first line");
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
