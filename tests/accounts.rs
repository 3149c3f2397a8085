//! Signing in (issue 4): app-password and browser login flows, saved accounts, logout,
//! a revoked app password during a mount, and names the server forbids.

mod common;

use common::*;
use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// `nuage` with its account store in `cfg` and no keyring.
fn nuage_in(cfg: &Path) -> Command {
    let mut c = nuage();
    c.env("NUAGE_CONFIG_DIR", cfg)
        .env("NUAGE_KEYRING", "off")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    c
}

/// Runs `cmd` with `input` on standard input; answers (exit code, stdout, stderr).
fn run_input(mut cmd: Command, input: &str) -> (i32, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(input.as_bytes());
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => {
            let out = out.expect("output");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("nuage login did not finish within 60 s");
        }
    }
}

/// `nuage unmount` of `mp`, which must succeed.
fn nuage_unmount(cfg: &Path, mp: &Path) {
    let out = nuage_in(cfg)
        .arg("unmount")
        .arg(mp)
        .output()
        .expect("unmount");
    assert_succeeded(&out);
}

fn login_app_password(cfg: &Path, url: &str, user: &str, secret: &str) -> (i32, String, String) {
    login_as(nuage_in(cfg), "work", url, user, secret)
}

/// `nuage login URL --app-password --user USER --name NAME` run as `c`, the app password
/// typed at its prompt.
fn login_as(
    mut c: Command,
    name: &str,
    url: &str,
    user: &str,
    secret: &str,
) -> (i32, String, String) {
    c.args([
        "login",
        url,
        "--app-password",
        "--user",
        user,
        "--name",
        name,
    ]);
    run_input(c, &format!("{secret}\n"))
}

/// `nuage logout work` run as `c` succeeds and `app` is no longer valid on the server.
fn logout_revokes(mut c: Command, cloud: &Cloud, app: &str) {
    let out = c.args(["logout", "work"]).output().expect("logout");
    assert_succeeded(&out);
    assert!(
        !cloud.server.app_passwords().iter().any(|(t, _)| t == app),
        "still valid on the server"
    );
}

fn saved_secret(cfg: &Path, name: &str) -> Option<String> {
    let s = std::fs::read_to_string(cfg.join("secrets.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&s).ok()?;
    v.get(name).and_then(|x| x.as_str()).map(str::to_string)
}

#[test]
fn app_password_login_saves_the_account_privately_and_mounts_by_name() {
    let cloud = Cloud::start();
    let cfg = tempfile::tempdir().expect("tmp");
    let app = cloud.server.create_app_password("Settings > Security");
    let (code, out, err) = login_app_password(cfg.path(), &cloud.url(), USER, &app);
    assert_eq!(code, 0, "login failed: {out}{err}");
    assert!(!out.contains(&app) && !err.contains(&app), "secret printed");
    // The secret is in a 0600 file, the settings file holds none, the folder is private.
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&cfg.path().join("secrets.json")), 0o600);
    assert_eq!(mode(cfg.path()), 0o700);
    assert_eq!(
        saved_secret(cfg.path(), "work").as_deref(),
        Some(app.as_str())
    );
    let settings = std::fs::read_to_string(cfg.path().join("accounts.json")).expect("accounts");
    assert!(!settings.contains(&app));
    let acc: serde_json::Value = serde_json::from_str(&settings).expect("json");
    assert_eq!(
        acc["accounts"][0]["user_id"], USER_ID,
        "user id found at login"
    );
    assert_eq!(acc["accounts"][0]["login"], USER);
    // `nuage accounts` lists it without the secret.
    let out = nuage_in(cfg.path())
        .arg("accounts")
        .output()
        .expect("accounts");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("work") && text.contains(USER));
    assert!(!text.contains(&app));
    // Mount by name: reads and writes work.
    std::fs::write(cloud.files().join("hello.txt"), "bonjour").expect("seed");
    let m = Mount::new(MountSpec::account("work", cfg.path()).args(&["--upload-delay", "0.2"]));
    assert_eq!(
        std::fs::read_to_string(m.path("hello.txt")).expect("read"),
        "bonjour"
    );
    std::fs::write(m.path("new.txt"), "written").expect("write");
    m.wait_drained();
    assert_eq!(
        std::fs::read_to_string(cloud.files().join("new.txt")).expect("server"),
        "written"
    );
    assert!(!m.log_text().contains(&app), "the secret reached the log");
    // The cache holds copies of the account's files (and what waits to be uploaded): only
    // its owner may look inside.
    assert_eq!(mode(&m.cache), 0o700, "the cache folder is private");
    // A second account beside the first, signed in with an address copied from the
    // browser's address bar on the Files app: the server's address is saved.
    let app2 = cloud.server.create_app_password("second device");
    let page = format!("{}/index.php/apps/files/?dir=/Cours&fileid=3", cloud.url());
    let (code, _, err) = login_as(nuage_in(cfg.path()), "other", &page, USER, &app2);
    assert_eq!(code, 0, "{err}");
    let out = nuage_in(cfg.path())
        .args(["accounts", "--json"])
        .output()
        .expect("accounts");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v.as_array().map(|a| a.len()), Some(2), "{v}");
    let servers: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["server"].as_str())
        .collect();
    assert_eq!(servers.len(), 2, "{v}");
    assert!(
        servers
            .iter()
            .all(|s| s.trim_end_matches('/') == cloud.url()),
        "{v}"
    );
    m.unmount();
}

#[test]
fn an_account_password_is_exchanged_for_an_app_password() {
    let cloud = Cloud::start();
    let cfg = tempfile::tempdir().expect("tmp");
    let (code, _, err) = login_app_password(cfg.path(), &cloud.url(), USER, PASSWORD);
    assert_eq!(code, 0, "{err}");
    let stored = saved_secret(cfg.path(), "work").expect("stored");
    assert_ne!(stored, PASSWORD, "the account password itself was stored");
    let apps = cloud.server.app_passwords();
    assert!(
        apps.iter()
            .any(|(t, client)| *t == stored && client.starts_with("nuage")),
        "stored secret is an app password named after nuage: {:?}",
        apps.iter().map(|(_, c)| c).collect::<Vec<_>>()
    );
}

#[test]
fn login_errors_have_distinct_messages_and_exit_codes_and_save_nothing() {
    let cloud = Cloud::start();
    let cfg = tempfile::tempdir().expect("tmp");
    let nothing_saved = |cfg: &Path| {
        assert!(
            !cfg.join("accounts.json").exists() && !cfg.join("secrets.json").exists(),
            "something was saved"
        )
    };
    // Wrong password.
    let (code, _, err) = login_app_password(cfg.path(), &cloud.url(), USER, "wrong");
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("wrong login or app password"), "{err}");
    nothing_saved(cfg.path());
    // Unreachable server.
    let dead = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    });
    let (code, _, err) = login_app_password(cfg.path(), &dead, USER, "x");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    // Not a Nextcloud (Apache mod_dav).
    let apache = Apache::start();
    let (code, _, err) = login_app_password(cfg.path(), &apache.url(), USER, "x");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("not a Nextcloud server"), "{err}");
    // TLS failure (self-signed certificate).
    let tls = Apache::start_opts(true);
    let (code, _, err) = login_app_password(cfg.path(), &tls.url(), USER, "x");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("TLS"), "{err}");
    // Maintenance.
    cloud
        .server
        .knobs()
        .maintenance
        .store(true, Ordering::SeqCst);
    let (code, _, err) = login_app_password(cfg.path(), &cloud.url(), USER, PASSWORD);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("maintenance"), "{err}");
    cloud
        .server
        .knobs()
        .maintenance
        .store(false, Ordering::SeqCst);
    // Two-factor: the account password is refused, an app password is required.
    cloud
        .server
        .knobs()
        .two_factor
        .store(true, Ordering::SeqCst);
    let (code, _, err) = login_app_password(cfg.path(), &cloud.url(), USER, PASSWORD);
    assert_eq!(code, 9, "{err}");
    assert!(err.contains("requires an app password"), "{err}");
    cloud
        .server
        .knobs()
        .two_factor
        .store(false, Ordering::SeqCst);
    // Brute-force throttling.
    cloud.server.reset_throttle();
    cloud
        .server
        .knobs()
        .bruteforce_max
        .store(2, Ordering::SeqCst);
    for _ in 0..2 {
        let (code, _, _) = login_app_password(cfg.path(), &cloud.url(), USER, "bad");
        assert_eq!(code, 7);
    }
    let (code, _, err) = login_app_password(cfg.path(), &cloud.url(), USER, PASSWORD);
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("throttles"), "{err}");
    nothing_saved(cfg.path());
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one readable line: {err}");
}

/// Starts `nuage login URL` (browser flow) and answers the child and the login URL it printed.
fn start_browser_login(cfg: &Path, url: &str) -> (std::process::Child, String) {
    let mut c = nuage_in(cfg);
    c.args(["login", url, "--no-browser", "--name", "web"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.trim().starts_with("http") {
                let _ = tx.send(line.trim().to_string());
            }
            line.clear();
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("nuage printed no login address");
    (child, url)
}

fn curl(args: &[&str]) -> String {
    let out = run_bounded(
        {
            let mut c = Command::new("curl");
            c.args(["-s", "--max-time", "10"]).args(args);
            c
        },
        Duration::from_secs(20),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Plays the browser: opens the login page and posts one of its forms.
fn approve(login_url: &str, action: &str, user: &str, password: &str) -> String {
    let page = curl(&[login_url]);
    let token = page
        .split("name=\"stateToken\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("state token on the login page")
        .to_string();
    let base = login_url.split("/login/").next().expect("base");
    curl(&[
        "--data-urlencode",
        &format!("stateToken={token}"),
        "--data-urlencode",
        &format!("user={user}"),
        "--data-urlencode",
        &format!("password={password}"),
        &format!("{base}/login/v2/{action}"),
    ])
}

fn wait_exit(child: &mut std::process::Child) -> i32 {
    let ok = wait_until(Duration::from_secs(30), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !ok {
        let _ = child.kill();
        let _ = child.wait();
        panic!("nuage login did not finish after the approval");
    }
    child.wait().ok().and_then(|s| s.code()).unwrap_or(-1)
}

#[test]
fn browser_login_flow_end_to_end() {
    let cloud = Cloud::start();
    let cfg = tempfile::tempdir().expect("tmp");
    let (mut child, url) = start_browser_login(cfg.path(), &cloud.url());
    assert!(url.contains("/login/v2/flow/"), "{url}");
    // Nothing is saved before the approval.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!cfg.path().join("accounts.json").exists());
    let page = approve(&url, "grant", USER, PASSWORD);
    assert!(page.contains("Account connected"), "{page}");
    assert_eq!(wait_exit(&mut child), 0);
    let stored = saved_secret(cfg.path(), "web").expect("stored");
    assert!(
        cloud
            .server
            .app_passwords()
            .iter()
            .any(|(t, _)| *t == stored),
        "the flow's app password was stored"
    );
    let m = Mount::new(MountSpec::account("web", cfg.path()));
    assert!(std::fs::read_dir(&m.mp).is_ok());
    m.unmount();

    // The "alternative log in using app password" form hands over an existing app password.
    let existing = cloud.server.create_app_password("made by hand");
    let cfg2 = tempfile::tempdir().expect("tmp");
    let (mut child, url) = start_browser_login(cfg2.path(), &cloud.url());
    let page = approve(&url, "apptoken", USER, "not-an-app-password");
    assert!(page.contains("Invalid app password"), "{page}");
    let page = approve(&url, "apptoken", USER, &existing);
    assert!(page.contains("Account connected"), "{page}");
    assert_eq!(wait_exit(&mut child), 0);
    assert_eq!(
        saved_secret(cfg2.path(), "web").as_deref(),
        Some(existing.as_str())
    );
}

#[test]
fn browser_login_can_be_cancelled() {
    let cloud = Cloud::start();
    let cfg = tempfile::tempdir().expect("tmp");
    let (mut child, _url) = start_browser_login(cfg.path(), &cloud.url());
    // SAFETY: kill(2) with SIGINT (Ctrl-C) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    assert_eq!(wait_exit(&mut child), 10);
    assert!(!cfg.path().join("accounts.json").exists());
}

#[test]
fn a_revoked_app_password_stops_the_mount_clearly_until_a_new_login() {
    let cloud = Cloud::start();
    let cfg = tempfile::tempdir().expect("tmp");
    let app = cloud.server.create_app_password("laptop");
    let (code, _, err) = login_app_password(cfg.path(), &cloud.url(), USER, &app);
    assert_eq!(code, 0, "{err}");
    std::fs::create_dir(cloud.files().join("d")).expect("mkdir");
    let m = Mount::new(MountSpec::account("work", cfg.path()).args(&[
        "--upload-delay",
        "0.2",
        "--attr-ttl",
        "0",
        "--dir-ttl",
        "0",
    ]));
    assert!(cloud.server.revoke_app_password(&app));
    // Programs get EACCES, not EIO, and the status says why.
    let e = std::fs::read_dir(m.path("d")).expect_err("listing with a revoked password");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    std::fs::write(m.path("kept.txt"), "not lost").expect("write goes to the journal");
    let st = m.status();
    let msg = st["auth_error"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("refused") && msg.contains("nuage login"),
        "{st}"
    );
    assert!(
        m.log_text().contains("refused the login"),
        "one log line says so"
    );
    // It stops asking: no stream of failed logins feeding the brute-force throttle.
    let before = cloud.server.stats().unauthorized.load(Ordering::SeqCst);
    let _ = std::fs::read_dir(m.path("d"));
    std::thread::sleep(Duration::from_secs(3));
    let after = cloud.server.stats().unauthorized.load(Ordering::SeqCst);
    assert_eq!(
        after, before,
        "requests kept hitting the server with a revoked password"
    );
    assert!(!cloud.files().join("kept.txt").exists());
    // Signing in again under the same name resumes the mount and its pending upload.
    let app2 = cloud.server.create_app_password("laptop again");
    let (code, _, err) = login_app_password(cfg.path(), &cloud.url(), USER, &app2);
    assert_eq!(code, 0, "{err}");
    m.wait_drained();
    assert_eq!(
        std::fs::read_to_string(cloud.files().join("kept.txt")).expect("uploaded"),
        "not lost"
    );
    assert!(std::fs::read_dir(m.path("d")).is_ok());
    assert!(m.status()["auth_error"].is_null());
    m.unmount();
}

#[test]
fn logout_revokes_on_the_server_and_works_offline() {
    let mut cloud = Cloud::start();
    let cfg = tempfile::tempdir().expect("tmp");
    let app = cloud.server.create_app_password("to revoke");
    assert_eq!(
        login_app_password(cfg.path(), &cloud.url(), USER, &app).0,
        0
    );
    logout_revokes(nuage_in(cfg.path()), &cloud, &app);
    assert!(saved_secret(cfg.path(), "work").is_none());
    let out = nuage_in(cfg.path())
        .arg("accounts")
        .output()
        .expect("accounts");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("work"));
    // With the server gone: local removal and a warning.
    let app = cloud.server.create_app_password("offline");
    assert_eq!(
        login_app_password(cfg.path(), &cloud.url(), USER, &app).0,
        0
    );
    cloud.stop();
    let out = nuage_in(cfg.path())
        .args(["logout", "work"])
        .output()
        .expect("logout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("Settings > Security"),
        "{err}"
    );
    assert!(saved_secret(cfg.path(), "work").is_none());
}

#[test]
fn names_the_server_forbids_are_refused_locally() {
    let cloud = Cloud::start_names(NamingRules::windows_compatible());
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "0.2"]));
    let sent = || {
        let st = cloud.server.stats();
        st.file_puts.load(Ordering::SeqCst) + st.bulk_files.load(Ordering::SeqCst)
    };
    let puts_before = sent();
    for bad in ["a:b.txt", "CON.txt", ".htaccess", "trailing ", "why?"] {
        let e = std::fs::write(m.path(bad), "x").expect_err(bad);
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{bad}: {e}");
    }
    let e = std::fs::create_dir(m.path("aux")).expect_err("mkdir aux");
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    std::fs::write(m.path("ok.txt"), "fine").expect("ok");
    let e = std::fs::rename(m.path("ok.txt"), m.path("no|pipe.txt")).expect_err("rename");
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    // Longer than the server keeps (250 bytes, here 251 in 125 two-byte letters and one
    // more), though the kernel would take up to 255: too long, not invalid.
    let long = format!("{}a", "é".repeat(125));
    assert_eq!(long.len(), 251);
    let e = std::fs::write(m.path(&long), "x").expect_err("251 bytes");
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "{e}");
    let e = std::fs::create_dir(m.path(&long)).expect_err("mkdir 251 bytes");
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "{e}");
    let longest = "é".repeat(125);
    std::fs::write(m.path(&longest), "longest").expect("250 bytes");
    // A partial download may be created (it stays local) and renamed to a real name.
    std::fs::write(m.path("film.mkv.part"), "partial").expect("part file");
    std::fs::rename(m.path("film.mkv.part"), m.path("film.mkv")).expect("rename part");
    m.wait_drained();
    assert_eq!(
        std::fs::read_to_string(cloud.files().join("film.mkv")).expect("server"),
        "partial"
    );
    assert!(cloud.files().join("ok.txt").exists());
    assert_eq!(
        std::fs::read_to_string(cloud.files().join(&longest)).expect("250 bytes on the server"),
        "longest"
    );
    assert!(!cloud.files().join("film.mkv.part").exists());
    let puts = sent() - puts_before;
    assert_eq!(puts, 3, "only the three allowed files were sent");
    m.unmount();
}

#[test]
fn a_saved_account_mounts_as_a_daemon_without_a_password_anywhere() {
    let cloud = Cloud::start();
    let cfg = tempfile::tempdir().expect("tmp");
    let app = cloud.server.create_app_password("daemon");
    assert_eq!(
        login_app_password(cfg.path(), &cloud.url(), USER, &app).0,
        0
    );
    std::fs::write(cloud.files().join("x.txt"), "x").expect("seed");
    let tmp = tempfile::tempdir().expect("tmp");
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    let mut c = nuage_in(cfg.path());
    c.arg("mount")
        .arg("work")
        .arg(&mp)
        .arg("--daemon")
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .stdin(Stdio::null());
    let out = run_bounded(c, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // Unmounted whatever happens below.
    let _g = unmount_on_drop(&mp);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        std::fs::read_to_string(mp.join("x.txt")).expect("read"),
        "x"
    );
    // The daemon's command line holds no secret.
    let pids = Command::new("pgrep")
        .args(["-f", "nuage mount work"])
        .output()
        .expect("pgrep");
    let pids = String::from_utf8_lossy(&pids.stdout).into_owned();
    assert!(!pids.trim().is_empty(), "the daemon process was not found");
    for pid in pids.split_whitespace() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&app),
            "secret in argv"
        );
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&environ).contains(&app),
            "secret in the environment"
        );
    }
    nuage_unmount(cfg.path(), &mp);
    assert!(!is_mounted(&mp));
}

#[test]
fn a_saved_account_mounts_while_its_server_is_unreachable() {
    let mut cloud = Cloud::start();
    let cfg = tempfile::tempdir().expect("tmp");
    let cache = tempfile::tempdir().expect("tmp");
    let app = cloud.server.create_app_password("offline start");
    assert_eq!(
        login_app_password(cfg.path(), &cloud.url(), USER, &app).0,
        0
    );
    std::fs::write(cloud.files().join("cached.txt"), "read before").expect("seed");
    let m = Mount::new(MountSpec::account("work", cfg.path()).cache(cache.path()));
    assert_eq!(
        std::fs::read_to_string(m.path("cached.txt")).expect("read"),
        "read before"
    );
    m.unmount();
    cloud.stop();
    let m = Mount::new(MountSpec::account("work", cfg.path()).cache(cache.path()));
    assert_eq!(
        std::fs::read_to_string(m.path("cached.txt")).expect("offline read"),
        "read before"
    );
    assert_eq!(m.status()["online"], false);
    m.unmount();
}

#[test]
fn a_listing_into_a_closed_pipe_ends_quietly() {
    // `nuage accounts | head -0`: the reader is gone before anything is written.
    let cfg = tempfile::tempdir().expect("tmp");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = nuage_in(cfg.path())
        .arg("accounts")
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let ended = wait_until(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    assert!(ended, "nuage accounts did not end");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
    // Ended as `ls` does in that case: by SIGPIPE, or successfully.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}",
        out.status
    );
}

/// The arguments of a desktop entry's `Exec` value, read as the desktop session reads them
/// (Desktop Entry Specification: string escapes first, then double-quoted arguments in
/// which `\` escapes `"`, `` ` ``, `$` and `\`; `%%` is a literal `%`).
fn exec_arguments(value: &str) -> Vec<String> {
    let mut unescaped = String::new();
    let mut it = value.chars();
    while let Some(c) = it.next() {
        match (c, c == '\\') {
            (_, true) => match it.next() {
                Some('s') => unescaped.push(' '),
                Some('n') => unescaped.push('\n'),
                Some(o) => unescaped.push(o),
                None => {}
            },
            (c, false) => unescaped.push(c),
        }
    }
    let (mut args, mut cur, mut quoted, mut in_arg) = (Vec::new(), String::new(), false, false);
    let mut it = unescaped.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_arg = true;
            }
            '\\' if quoted => cur.extend(it.next()),
            '%' => {
                assert_eq!(it.next(), Some('%'), "a field code in {value:?}");
                cur.push('%');
                in_arg = true;
            }
            ' ' if !quoted => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                }
                in_arg = false;
            }
            c => {
                cur.push(c);
                in_arg = true;
            }
        }
    }
    if in_arg {
        args.push(cur);
    }
    args
}

#[test]
fn autostart_mounts_a_saved_account_at_login_from_a_desktop_entry() {
    let cloud = Cloud::start();
    let cfg = tempfile::tempdir().expect("tmp");
    let home = tempfile::tempdir().expect("tmp");
    let xdg = home.path().join("config");
    let app = cloud.server.create_app_password("autostart");
    assert_eq!(
        login_app_password(cfg.path(), &cloud.url(), USER, &app).0,
        0
    );
    std::fs::write(cloud.files().join("cours.txt"), "cours").expect("seed");
    let session = |c: &mut Command| {
        c.env("XDG_CONFIG_HOME", &xdg)
            .env("XDG_CACHE_HOME", home.path().join("cache"));
    };
    let autostart = |args: &[&std::ffi::OsStr]| {
        let mut c = nuage_in(cfg.path());
        session(&mut c);
        c.arg("autostart").args(args);
        let out = run_bounded(c, Duration::from_secs(30));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A mount point with characters the entry must quote; made by the command.
    let mp = home.path().join("Mon cloud \"$HOME\" 100%");
    let (ok, out, err) = autostart(&["work".as_ref(), mp.as_os_str()]);
    assert!(ok, "{err}");
    assert!(out.contains("at each login"), "{out}");
    assert!(mp.is_dir(), "the mount point was not made");
    let (ok, _, err) = autostart(&["nobody".as_ref(), mp.as_os_str()]);
    assert!(!ok && err.contains("no saved account named"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let entry = std::fs::read_to_string(xdg.join("autostart/nuage-work.desktop")).expect("entry");
    assert!(entry.starts_with("[Desktop Entry]\n"), "{entry}");
    assert!(entry.contains("\nType=Application\n"), "{entry}");
    assert!(!entry.contains(&app), "the app password is in the entry");
    let exec = entry
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .expect("Exec line");
    let args = exec_arguments(exec);
    assert_eq!(args[1..4], ["mount", "--daemon", "work"], "{exec}");
    assert_eq!(args[4], mp.to_str().expect("utf-8"), "{exec}");

    // What the session does at login: run the entry's command.
    let mut c = Command::new(&args[0]);
    c.args(&args[1..])
        .env("NUAGE_CONFIG_DIR", cfg.path())
        .env("NUAGE_KEYRING", "off")
        .stdin(Stdio::null());
    session(&mut c);
    let out = run_bounded(c, Duration::from_secs(60));
    let _g = unmount_on_drop(&mp);
    assert_succeeded(&out);
    assert_eq!(
        std::fs::read_to_string(mp.join("cours.txt")).expect("read"),
        "cours"
    );
    // In the same session: `nuage unmount` finds the mount's registration there and waits
    // until the daemon has ended, before this test removes its folders.
    let mut c = nuage_in(cfg.path());
    session(&mut c);
    assert_succeeded(&run_bounded(
        {
            c.arg("unmount").arg(&mp);
            c
        },
        Duration::from_secs(60),
    ));
    let registered = std::fs::read_dir(home.path().join("cache/nuage/mounts"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        registered, 0,
        "the daemon ended and took its registration away"
    );

    let (ok, out, _) = autostart(&["--list".as_ref()]);
    assert!(ok);
    assert_eq!(out.trim(), format!("work\t{}", mp.display()));
    let (ok, out, err) = autostart(&["work".as_ref(), "--remove".as_ref()]);
    assert!(ok, "{err}");
    assert!(out.contains("no longer"), "{out}");
    assert!(!xdg.join("autostart/nuage-work.desktop").exists());
    let (_, out, _) = autostart(&[]);
    assert!(out.contains("no account is mounted at login"), "{out}");
}

/// A private D-Bus session with GNOME's keyring answering the Secret Service on it, as in a
/// desktop session; both processes end with it.
struct DesktopKeyring {
    keyring: std::process::Child,
    /// Ended after the keyring (fields drop in order).
    bus: SessionBus,
    _home: tempfile::TempDir,
}

impl DesktopKeyring {
    fn start() -> DesktopKeyring {
        for tool in [
            "dbus-daemon",
            "dbus-send",
            "gnome-keyring-daemon",
            "secret-tool",
        ] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                "{tool} is missing: run scripts/test.sh, which installs it"
            );
        }
        let home = tempfile::tempdir().expect("tmp");
        let bus = SessionBus::start();
        // The login keyring is made (and unlocked) with the password given on stdin.
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .env("HOME", home.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon");
        if let Some(mut i) = keyring.stdin.take() {
            let _ = i.write_all(b"keyring-test-password\n");
        }
        let k = DesktopKeyring {
            keyring,
            bus,
            _home: home,
        };
        let answers = wait_until(Duration::from_secs(15), || {
            let out = k
                .command("dbus-send")
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .output();
            out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
        });
        assert!(answers, "the keyring never answered on the session bus");
        k
    }

    /// `program` run inside the session.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DBUS_SESSION_BUS_ADDRESS", &self.bus.address);
        c
    }

    /// What the keyring holds for nuage's account `name`, asked with libsecret's own tool.
    fn lookup(&self, name: &str) -> Option<String> {
        let out = self
            .command("secret-tool")
            .args(["lookup", "service", "nuage", "username", name])
            .output()
            .expect("secret-tool");
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    }
}

impl Drop for DesktopKeyring {
    fn drop(&mut self) {
        end_child(&mut self.keyring);
    }
}

#[test]
fn in_a_desktop_session_the_app_password_lives_in_the_keyring() {
    let cloud = Cloud::start();
    let cfg = tempfile::tempdir().expect("tmp");
    let k = DesktopKeyring::start();
    // nuage as run from the desktop: the session bus known, the keyring not turned off.
    let nuage_desktop = || {
        let mut c = nuage();
        c.env("NUAGE_CONFIG_DIR", cfg.path())
            .env("DBUS_SESSION_BUS_ADDRESS", &k.bus.address)
            .env_remove("NUAGE_KEYRING");
        c
    };
    let app = cloud.server.create_app_password("desktop");
    let (code, out, err) = login_as(nuage_desktop(), "work", &cloud.url(), USER, &app);
    assert_eq!(code, 0, "login failed: {out}{err}");
    assert!(out.contains("desktop keyring"), "{out}");
    assert!(!out.contains(&app) && !err.contains(&app), "secret printed");
    // In the keyring (as libsecret reads it), and in no file of nuage's.
    assert_eq!(k.lookup("work").as_deref(), Some(app.as_str()));
    assert!(!cfg.path().join("secrets.json").exists());
    for f in std::fs::read_dir(cfg.path()).expect("ls").flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        assert!(
            !text.contains(&app),
            "{} holds the secret",
            f.path().display()
        );
    }
    let out = nuage_desktop().arg("accounts").output().expect("accounts");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("work") && listed.contains("keyring"),
        "{listed}"
    );
    // A mount by name reads the secret from the keyring.
    std::fs::write(cloud.files().join("hello.txt"), "bonjour").expect("seed");
    let mut spec = MountSpec::new("work");
    spec.user = None;
    spec.password = None;
    let spec = spec
        .env("NUAGE_CONFIG_DIR", cfg.path().to_str().expect("utf-8 path"))
        .env("NUAGE_KEYRING", "on")
        .env("DBUS_SESSION_BUS_ADDRESS", &k.bus.address);
    let m = Mount::new(spec);
    assert_eq!(
        std::fs::read_to_string(m.path("hello.txt")).expect("read"),
        "bonjour"
    );
    assert!(!m.log_text().contains(&app), "the secret reached the log");
    m.unmount();
    // Logging out revokes it on the server and removes it from the keyring.
    logout_revokes(nuage_desktop(), &cloud, &app);
    assert_eq!(k.lookup("work"), None, "still in the keyring");
}
