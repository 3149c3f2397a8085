//! Every way a mount can fail: one readable line, a non-zero status, nothing left mounted.

mod common;

use common::*;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A folder to mount on, unmounted when dropped if a mount that should have failed did not
/// (so that a failing test leaves nothing mounted).
struct Place {
    _unmount: Unmounter,
    dir: tempfile::TempDir,
}

impl Place {
    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

fn mountpoint() -> (Place, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tmp");
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    (
        Place {
            _unmount: unmount_on_drop(&mp),
            dir,
        },
        mp,
    )
}

fn assert_failed(stderr: &str, code: i32, mp: &std::path::Path, needle: &str) {
    assert_ne!(code, 0, "must fail; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one readable line, got: {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "expected {needle:?} in {stderr:?}"
    );
    assert!(
        !stderr.contains(PASSWORD),
        "the password leaked into the message"
    );
    assert!(!is_mounted(mp), "a failed mount left something mounted");
}

/// A plain HTTP server that answers every request with `status` and an HTML body.
fn not_dav(status: &'static str) -> TinyHttp {
    TinyHttp::start(move |_| {
        let body = "<html><body>It works!</body></html>";
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    })
}

/// A server that wants Windows authentication (IIS, SharePoint): said, not called a wrong
/// password.
#[test]
fn a_server_asking_only_for_ntlm_says_so() {
    let (_t, mp) = mountpoint();
    let ntlm = TinyHttp::start(|_| {
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate\r\nWWW-Authenticate: NTLM\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
            .to_string()
    });
    let (err, code) = failed_mount(
        &format!("http://127.0.0.1:{}/dav/", ntlm.port),
        &mp,
        Some(USER),
        Some(PASSWORD),
        &[],
    );
    assert_failed(&err, code, &mp, "asks for Negotiate, NTLM authentication");
}

#[test]
fn unreachable_server() {
    let (_t, mp) = mountpoint();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (err, code) = failed_mount(
        &format!("http://127.0.0.1:{port}/dav/"),
        &mp,
        Some(USER),
        Some(PASSWORD),
        &[],
    );
    assert_failed(&err, code, &mp, "cannot reach");
}

#[test]
fn invalid_urls() {
    let (_t, mp) = mountpoint();
    let (err, code) = failed_mount("ftp://example.org/files", &mp, None, None, &[]);
    assert_failed(&err, code, &mp, "must start with https://");
    let (err, code) = failed_mount("not a url", &mp, None, None, &[]);
    assert_failed(&err, code, &mp, "invalid URL");
}

#[test]
fn wrong_password_on_nextcloud_and_apache() {
    let (_t, mp) = mountpoint();
    let cloud = Cloud::start();
    let (err, code) = failed_mount(&cloud.url(), &mp, Some(USER), Some("wrong"), &[]);
    assert_failed(&err, code, &mp, "refused the login");
    let apache = Apache::start();
    let (err, code) = failed_mount(&apache.url(), &mp, Some(USER), Some("wrong"), &[]);
    assert_failed(&err, code, &mp, "refused the login");
    // A server asking for Digest: the password is answered with a hash, and refused.
    let digest = Apache::start_digest(300);
    let (err, code) = failed_mount(&digest.url(), &mp, Some(USER), Some("wrong"), &[]);
    assert_failed(&err, code, &mp, "refused the login");
    assert!(!err.contains("wrong"), "{err}");
}

#[test]
fn not_a_webdav_server() {
    let (_t, mp) = mountpoint();
    let ok = not_dav("200 OK");
    let (err, code) = failed_mount(
        &format!("http://127.0.0.1:{}/", ok.port),
        &mp,
        None,
        None,
        &[],
    );
    assert_failed(&err, code, &mp, "not a WebDAV folder");
    let refused = not_dav("405 Method Not Allowed");
    let (err, code) = failed_mount(
        &format!("http://127.0.0.1:{}/", refused.port),
        &mp,
        None,
        None,
        &[],
    );
    assert_failed(&err, code, &mp, "not a WebDAV folder");
}

#[test]
fn tls_certificate_is_verified() {
    let (_t, mp) = mountpoint();
    let apache = Apache::start_opts(true);
    std::fs::write(apache.data().join("secret.txt"), b"tls ok").expect("w");
    apache.fix_owner();
    let (err, code) = failed_mount(&apache.url(), &mp, Some(USER), Some(PASSWORD), &[]);
    assert_failed(&err, code, &mp, "TLS");
    assert!(
        err.contains("not signed by an authority this system trusts"),
        "{err}"
    );
    // Trusting the certificate explicitly makes it work.
    let cert = apache.dir.path().join("cert.pem");
    let m = Mount::new(MountSpec::new(&apache.url()).args(&["--ca-cert", &cert.to_string_lossy()]));
    assert_eq!(
        std::fs::read(m.path("secret.txt")).expect("read"),
        b"tls ok"
    );
    m.unmount();
    // So does the system's trust (here its store as OpenSSL reads it from SSL_CERT_FILE, as
    // a school's own authority added with update-ca-certificates would be).
    let m = Mount::new(
        MountSpec::new(&apache.url()).env("SSL_CERT_FILE", cert.to_str().expect("utf-8 path")),
    );
    assert_eq!(
        std::fs::read(m.path("secret.txt")).expect("read"),
        b"tls ok"
    );
    m.unmount();
    // The server's name without a scheme means https://.
    let bare = apache.url().trim_start_matches("https://").to_string();
    let m = Mount::new(MountSpec::new(&bare).args(&["--ca-cert", &cert.to_string_lossy()]));
    assert_eq!(
        std::fs::read(m.path("secret.txt")).expect("read"),
        b"tls ok"
    );
    m.unmount();
    // A self-signed certificate that says it is an authority: trusted or not, refused, and
    // the message says why.
    let ca = Apache::start_tls_ca_certificate();
    for trust in [false, true] {
        let cert = ca.dir.path().join("cert.pem");
        let extra: Vec<&str> = if trust {
            vec!["--ca-cert", cert.to_str().expect("utf-8 path")]
        } else {
            vec![]
        };
        let (err, code) = failed_mount(&ca.url(), &mp, Some(USER), Some(PASSWORD), &extra);
        assert_failed(&err, code, &mp, "TLS");
        assert!(err.contains("marked as a certificate authority"), "{err}");
    }
}

#[test]
fn mount_point_missing_not_a_folder_or_busy() {
    let cloud = Cloud::start();
    let (t, mp) = mountpoint();
    let missing = t.path().join("nope");
    let (err, code) = failed_mount(&cloud.url(), &missing, Some(USER), Some(PASSWORD), &[]);
    assert_failed(&err, code, &missing, "does not exist");
    let file = t.path().join("file");
    std::fs::write(&file, b"").expect("w");
    let (err, code) = failed_mount(&cloud.url(), &file, Some(USER), Some(PASSWORD), &[]);
    assert_failed(&err, code, &file, "not a folder");
    // A folder holding files (the wrong folder typed, ~/Documents for ~/cloud): they would
    // vanish from view while mounted. Refused unless asked for.
    let full = t.path().join("Documents");
    std::fs::create_dir(&full).expect("mkdir");
    std::fs::write(full.join("mes notes.txt"), b"precious").expect("w");
    let (err, code) = failed_mount(&cloud.url(), &full, Some(USER), Some(PASSWORD), &[]);
    assert_failed(&err, code, &full, "not empty");
    assert!(err.contains("--allow-non-empty"), "{err}");
    assert!(err.contains("mes notes.txt"), "names what it holds: {err}");
    let m = Mount::new(
        MountSpec::new(&cloud.url())
            .at(&full)
            .args(&["--allow-non-empty"]),
    );
    assert!(!m.path("mes notes.txt").exists(), "the mount is what shows");
    m.unmount();
    assert_eq!(
        std::fs::read(full.join("mes notes.txt")).expect("back"),
        b"precious"
    );

    let m = Mount::new(MountSpec::new(&cloud.url()));
    let (err, code) = failed_mount(&cloud.url(), &m.mp, Some(USER), Some(PASSWORD), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("busy"), "{err}");
    assert!(is_mounted(&m.mp), "the first mount must survive");
    // A file held open: `nuage unmount` fails with one line that says what to do.
    std::fs::write(m.path("ouvert.txt"), b"x").expect("w");
    let held = std::fs::File::open(m.path("ouvert.txt")).expect("open");
    let out = nuage()
        .args(["unmount", "--wait", "0"])
        .arg(&m.mp)
        .output()
        .expect("unmount");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("still has a file or folder open"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(is_mounted(&m.mp));
    drop(held);
    m.unmount();
    let _ = mp;
}

#[test]
fn maintenance_mode() {
    let (_t, mp) = mountpoint();
    let cloud = Cloud::start();
    cloud
        .server
        .knobs()
        .maintenance
        .store(true, Ordering::SeqCst);
    let (err, code) = failed_mount(&cloud.url(), &mp, Some(USER), Some(PASSWORD), &[]);
    assert_failed(&err, code, &mp, "maintenance");
}

#[test]
fn nextcloud_needs_a_login_and_a_password() {
    let (_t, mp) = mountpoint();
    let cloud = Cloud::start();
    let (err, code) = failed_mount(&cloud.url(), &mp, None, None, &[]);
    assert_failed(&err, code, &mp, "--user");
    let (err, code) = failed_mount(&cloud.url(), &mp, Some(USER), None, &[]);
    assert_failed(&err, code, &mp, "NUAGE_PASSWORD");
}

#[test]
fn an_address_with_a_password_or_user_name_is_refused_without_echoing_it() {
    let (_t, mp) = mountpoint();
    let url = format!("http://alice:{PASSWORD}@127.0.0.1:9/dav/");
    let (err, code) = failed_mount(&url, &mp, None, None, &[]);
    assert_failed(&err, code, &mp, "contains a password");
    let (err, code) = failed_mount(
        "http://alice@127.0.0.1:9/dav/",
        &mp,
        None,
        Some(PASSWORD),
        &[],
    );
    assert_failed(&err, code, &mp, "--user alice");
    // nuage login too.
    let cfg = tempfile::tempdir().expect("tmp");
    let out = run_bounded(
        {
            let mut c = nuage();
            c.env("NUAGE_CONFIG_DIR", cfg.path())
                .env("NUAGE_KEYRING", "off")
                .args(["login", &url])
                .stdin(std::process::Stdio::null());
            c
        },
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("contains a password"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

#[test]
fn sigterm_while_a_mount_is_being_set_up_ends_it_at_once() {
    // A server that takes connections and never answers: setting up waits for its timeout.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    let (_t, mp) = mountpoint();
    let mut child = nuage()
        .args(["mount", &format!("http://127.0.0.1:{port}/dav/")])
        .arg(&mp)
        .args(["--user", USER, "--timeout", "60"])
        .env("NUAGE_PASSWORD", PASSWORD)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(700));
    let ended = terminate(&mut child, &mp, Duration::from_secs(5));
    assert!(ended.is_some(), "SIGTERM during the set-up was not obeyed");
    assert!(!is_mounted(&mp), "something was left mounted");
}

/// A user who may not open `/dev/fuse` (some systems leave it 0600) is told so in one line,
/// not "Permission denied". Where every user may open it, the same user's mount works.
#[test]
fn a_user_without_access_to_the_fuse_device_is_told_so() {
    use std::os::unix::fs::{chown, PermissionsExt};
    require_fuse();
    let cloud = Cloud::start();
    let (tmp, mp) = mountpoint();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    const NOBODY: u32 = 65534;
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, PASSWORD).expect("pw");
    for p in [&mp, &home, &pw] {
        chown(p, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_nuage"))
        .arg("mount")
        .arg(cloud.url())
        .arg(&mp)
        .args(["--daemon", "--user", USER, "--password-file"])
        .arg(&pw)
        .env("HOME", &home)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .stdin(std::process::Stdio::null());
    let out = run_bounded(cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let others_may_open = std::fs::metadata("/dev/fuse")
        .expect("/dev/fuse")
        .permissions()
        .mode()
        & 0o006
        == 0o006;
    if others_may_open {
        assert!(out.status.success(), "mount as another user: {stderr}");
        assert!(is_mounted(&mp));
        let _ = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&mp)
            .status();
        assert!(wait_until(Duration::from_secs(10), || !is_mounted(&mp)));
    } else {
        assert_failed(
            &stderr,
            out.status.code().unwrap_or(-1),
            &mp,
            "/dev/fuse cannot be opened by this user",
        );
    }
}

/// `nuage mount --daemon` of `url` on `mp` with the cache in `cache`: (stderr, exit code).
fn mount_with_cache(url: &str, mp: &std::path::Path, cache: &std::path::Path) -> (String, i32) {
    mount_daemon(url, mp, Some(USER), Some(PASSWORD), Some(cache), &[])
}

/// A cache folder inside the mount point would have nuage write its cache into its own
/// mount (and hang there): refused before anything is made, also through a symbolic link.
#[test]
fn a_cache_folder_inside_the_mount_point_is_refused() {
    let cloud = Cloud::start();
    let (t, mp) = mountpoint();
    let inside = mp.join("cache");
    let (err, code) = mount_with_cache(&cloud.url(), &mp, &inside);
    assert_failed(&err, code, &mp, "inside the mount point");
    assert!(!inside.exists(), "made a folder under the mount point");
    let left: Vec<_> = std::fs::read_dir(&mp).expect("ls").flatten().collect();
    assert!(left.is_empty(), "left in the mount point: {left:?}");
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&mp, &link).expect("symlink");
    let (err, code) = mount_with_cache(&cloud.url(), &mp, &link.join("nuage/cache"));
    assert_failed(&err, code, &mp, "inside the mount point");
    // Beside it, the same mount works.
    let (err, code) = mount_with_cache(&cloud.url(), &mp, &t.path().join("cache"));
    assert_eq!(code, 0, "{err}");
    assert!(is_mounted(&mp));
    let out = nuage().arg("unmount").arg(&mp).output().expect("unmount");
    assert_succeeded(&out);
}

/// Two mounts sharing one cache folder would write over each other's pending files: the
/// second is refused, naming the first, which goes on working; once it is gone the folder
/// is free again.
#[test]
fn a_cache_folder_used_by_another_mount_is_refused() {
    let cloud = Cloud::start();
    let t = tempfile::tempdir().expect("tmp");
    let cache = t.path().join("cache");
    let m = Mount::new(MountSpec::new(&cloud.url()).cache(&cache));
    let (_t2, mp) = mountpoint();
    let (err, code) = mount_with_cache(&cloud.url(), &mp, &cache);
    assert_failed(&err, code, &mp, "used by another nuage mount");
    assert!(
        err.contains(&m.mp.display().to_string()),
        "names the other mount: {err}"
    );
    // The first mount is untouched and still saves.
    assert!(is_mounted(&m.mp));
    std::fs::write(m.path("bilan.txt"), b"premier trimestre").expect("write");
    m.wait_drained();
    assert!(server_file_is(
        &cloud.files(),
        "bilan.txt",
        b"premier trimestre"
    ));
    m.unmount();
    let m2 = Mount::new(MountSpec::new(&cloud.url()).cache(&cache).at(&mp));
    assert_eq!(
        std::fs::read(m2.path("bilan.txt")).expect("read"),
        b"premier trimestre"
    );
    m2.unmount();
}

/// A cache folder holds one folder's files and the changes waiting for it: mounting another
/// folder on it is refused (its pending changes would go up into that folder), the folder
/// it holds still mounts on it, whatever address reaches it.
#[test]
fn a_cache_folder_of_another_folder_is_refused() {
    let cloud = Cloud::start();
    std::fs::create_dir(cloud.files().join("Cours")).expect("mkdir");
    std::fs::write(cloud.files().join("Cours/plan.txt"), b"plan").expect("seed");
    let t = tempfile::tempdir().expect("tmp");
    let cache = t.path().join("cache");
    let m = Mount::new(MountSpec::new(&cloud.url()).cache(&cache));
    assert!(m.path("Cours/plan.txt").exists());
    m.unmount();
    let (_t2, mp) = mountpoint();
    let cours = format!("{}/remote.php/dav/files/{USER_ID}/Cours/", cloud.url());
    let (err, code) = mount_with_cache(&cours, &mp, &cache);
    assert_failed(&err, code, &mp, "holds the files of");
    assert!(err.contains("another --cache-dir"), "{err}");
    // The account's root, by its DAV address this time: the same folder, mounted.
    let root = format!("{}/remote.php/dav/files/{USER_ID}/", cloud.url());
    let m = Mount::new(MountSpec::new(&root).cache(&cache).at(&mp));
    assert_eq!(
        std::fs::read(m.path("Cours/plan.txt")).expect("read"),
        b"plan"
    );
    m.unmount();
}

#[test]
fn unmounting_a_folder_where_nothing_is_mounted_says_so() {
    let (_t, mp) = mountpoint();
    let out = nuage().arg("unmount").arg(&mp).output().expect("unmount");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("nothing is mounted on"), "{err}");
}

/// A cache whose databases were damaged (a disk failure, a file overwritten by mistake): a
/// damaged block index or folder store is set aside (kept for a look, as `.damaged`) and the
/// mount works, downloading again what it needs; a damaged write-back journal, which may be
/// the only record of changes not yet on the server, is never replaced: the mount is refused
/// in one line saying where their bytes are, and the journal stays as it was.
#[test]
fn damaged_cache_databases_are_set_aside_but_a_damaged_journal_is_refused() {
    let cloud = Cloud::start();
    let want = pattern(3 << 20, 5);
    std::fs::write(cloud.files().join("cours.bin"), &want).expect("seed");
    let t = tempfile::tempdir().expect("tmp");
    let cache = t.path().join("cache");
    let m = Mount::new(MountSpec::new(&cloud.url()).cache(&cache));
    assert_eq!(std::fs::read(m.path("cours.bin")).expect("read"), want);
    m.unmount();

    let garbage = pattern(64 << 10, 9);
    for db in ["index.sqlite", "meta.sqlite"] {
        std::fs::write(cache.join(db), &garbage).expect("damage");
        // Without its write-ahead log either (its pages would stand in for the damaged ones).
        for side in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(cache.join(format!("{db}{side}")));
        }
    }
    let m = Mount::new(MountSpec::new(&cloud.url()).cache(&cache));
    assert_eq!(std::fs::read(m.path("cours.bin")).expect("read"), want);
    for db in ["index.sqlite", "meta.sqlite"] {
        assert_eq!(
            std::fs::read(cache.join(format!("{db}.damaged"))).expect("set aside"),
            garbage,
            "{db} is set aside as it was"
        );
    }
    std::fs::write(m.path("notes.txt"), b"conseil de classe").expect("write");
    m.wait_drained();
    assert!(server_file_is(
        &cloud.files(),
        "notes.txt",
        b"conseil de classe"
    ));
    m.unmount();

    std::fs::write(cache.join("journal.sqlite"), &garbage).expect("damage");
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(cache.join(format!("journal.sqlite{side}")));
    }
    let (_t2, mp) = mountpoint();
    let (err, code) = mount_with_cache(&cloud.url(), &mp, &cache);
    assert_failed(&err, code, &mp, "journal");
    assert!(err.contains("is damaged"), "{err}");
    assert!(
        err.contains(&cache.join("dirty").display().to_string()),
        "says where the unsent bytes are: {err}"
    );
    assert_eq!(
        std::fs::read(cache.join("journal.sqlite")).expect("journal"),
        garbage,
        "the journal is left as it was"
    );
}

/// A mount started with nobody to read its error (at login from an autostart entry: no
/// terminal) tells the desktop why it failed, in a notification.
#[test]
fn a_mount_failing_without_a_terminal_tells_the_desktop() {
    let cloud = Cloud::start();
    let watch = NotificationWatch::start();
    let (_t, mp) = mountpoint();
    let (mut cmd, _tmp) = mount_daemon_command(
        &cloud.url(),
        &mp,
        Some(USER),
        Some("not-the-app-password"),
        None,
        &[],
    );
    cmd.env("DBUS_SESSION_BUS_ADDRESS", &watch.bus.address);
    let out = run_bounded(cmd, Duration::from_secs(60));
    assert!(!out.status.success());
    assert!(!is_mounted(&mp));
    let title = format!("nuage: {} is not mounted", mp.display());
    assert!(
        watch.wait_for(&title),
        "no notification; the bus saw:\n{}",
        watch.seen()
    );
    assert!(
        watch.seen().contains("refused the login"),
        "{}",
        watch.seen()
    );
    assert!(!watch.seen().contains("not-the-app-password"));
    assert_eq!(watch.count(), 1, "{}", watch.seen());
}
