//! Real FUSE mounts of the `nuage` binary against the FakeNextcloud server on 127.0.0.1.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn sample_tree(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("docs/sub")).expect("mkdir");
    std::fs::create_dir_all(root.join("empty folder")).expect("mkdir");
    std::fs::write(root.join("docs/a.txt"), b"hello from the cloud\n").expect("w");
    std::fs::write(
        root.join("docs/sub/b.bin"),
        pattern(3 * 1024 * 1024 + 123, 7),
    )
    .expect("w");
    std::fs::write(root.join("empty.txt"), b"").expect("w");
    write_big(&root.join("twenty.bin"), 20 << 20, 3);
}

#[test]
fn listing_stat_and_reads_match_the_server() {
    let cloud = Cloud::start();
    sample_tree(&cloud.files());
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--read-only"]));
    assert_same_tree(&cloud.files(), &m.mp);

    // Stat: sizes, types and mtimes (whole seconds, as DAV gives them).
    let sm = std::fs::metadata(cloud.files().join("docs/sub/b.bin")).expect("md");
    let mm = std::fs::metadata(m.path("docs/sub/b.bin")).expect("md");
    assert_eq!(mm.len(), sm.len());
    assert_eq!(mm.mtime(), sm.mtime());
    assert!(std::fs::metadata(m.path("empty folder"))
        .expect("md")
        .is_dir());
    assert_eq!(
        mm.mode() & 0o777,
        0o444,
        "read-only mount shows read-only files"
    );

    // Inode numbers are stable while mounted.
    let ino1 = std::fs::metadata(m.path("docs/a.txt")).expect("md").ino();
    std::thread::sleep(Duration::from_millis(50));
    let _ = std::fs::read_dir(m.path("docs")).expect("ls").count();
    assert_eq!(
        std::fs::metadata(m.path("docs/a.txt")).expect("md").ino(),
        ino1
    );

    // Ranged reads at awkward offsets, byte for byte.
    let src = std::fs::read(cloud.files().join("twenty.bin")).expect("read");
    for (off, len) in [
        (0u64, 1usize),
        (4095, 2),
        (1 << 20, 4096),
        ((1 << 20) - 7, 100),
        (19 << 20, 1 << 20),
        ((20 << 20) - 10, 100),
    ] {
        let got = read_at(&m.path("twenty.bin"), off, len);
        let end = (off as usize + len).min(src.len());
        assert_eq!(got, src[off as usize..end], "range {off}+{len}");
    }
    // Reading past the end answers nothing.
    assert!(read_at(&m.path("twenty.bin"), 21 << 20, 10).is_empty());
    assert_eq!(
        cloud
            .server
            .stats()
            .propfind_infinity
            .load(Ordering::SeqCst),
        0,
        "never Depth: infinity"
    );
    m.unmount();
}

#[test]
fn opening_downloads_nothing_and_a_sparse_read_downloads_little() {
    let cloud = Cloud::start();
    write_big(&cloud.files().join("big.bin"), 200 << 20, 11);
    let m = Mount::new(MountSpec::new(&cloud.url()));
    let before = cloud.get_bytes();
    let gets_before = cloud.server.stats().count("GET");
    let f = std::fs::File::open(m.path("big.bin")).expect("open");
    assert_eq!(cloud.get_bytes(), before, "open must not download");
    assert_eq!(cloud.server.stats().count("GET"), gets_before);
    let mut buf = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 100 << 20).expect("read");
    let sent = cloud.get_bytes() - before;
    assert!(
        sent <= 8 << 20,
        "a 4 KiB read at 100 MiB made the server send {sent} bytes"
    );
    assert!(sent >= 4096, "the bytes must come from the server");
    let expected = read_at(&cloud.files().join("big.bin"), 100 << 20, 4096);
    assert_eq!(buf, expected);
    drop(f);
    m.unmount();
}

#[test]
fn concurrent_readers_download_each_block_once() {
    let cloud = Cloud::start();
    write_big(&cloud.files().join("shared.bin"), 16 << 20, 5);
    let m = Mount::new(MountSpec::new(&cloud.url()));
    let expected = std::fs::read(cloud.files().join("shared.bin")).expect("read");
    let before = cloud.get_bytes();
    let path = m.path("shared.bin");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let p = path.clone();
            std::thread::spawn(move || std::fs::read(p).expect("read"))
        })
        .collect();
    for t in threads {
        assert!(
            t.join().expect("join") == expected,
            "a reader got different bytes"
        );
    }
    let sent = cloud.get_bytes() - before;
    assert!(
        sent <= (16 << 20) + (1 << 20),
        "4 readers of 16 MiB made the server send {sent} bytes"
    );
    m.unmount();
}

#[test]
fn awkward_names_round_trip() {
    let cloud = Cloud::start();
    let names = awkward_names();
    std::fs::create_dir(cloud.files().join("dir #1 & ?")).expect("mkdir");
    for n in &names {
        std::fs::write(cloud.files().join(n), n.as_bytes()).expect("w");
        std::fs::write(cloud.files().join("dir #1 & ?").join(n), n.as_bytes()).expect("w");
    }
    let m = Mount::new(MountSpec::new(&cloud.url()));
    let mut listed: Vec<String> = std::fs::read_dir(m.path("dir #1 & ?"))
        .expect("ls")
        .map(|e| e.expect("e").file_name().into_string().expect("utf8"))
        .collect();
    listed.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(
        listed, want,
        "names must round-trip byte for byte (NFC and NFD distinct)"
    );
    for n in &names {
        assert_eq!(std::fs::read(m.path(n)).expect("read"), n.as_bytes(), "{n}");
    }
    assert_same_tree(&cloud.files(), &m.mp);
    m.unmount();
}

#[test]
fn a_file_changed_on_the_server_is_seen_after_the_ttl() {
    let cloud = Cloud::start();
    std::fs::write(cloud.files().join("notes.txt"), b"version one").expect("w");
    std::fs::create_dir(cloud.files().join("d")).expect("mkdir");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--attr-ttl", "1", "--dir-ttl", "1"]));
    assert_eq!(
        std::fs::read(m.path("notes.txt")).expect("read"),
        b"version one"
    );
    // Same size, new content; then a size change; then a new file and a deleted one.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(cloud.files().join("notes.txt"), b"version two").expect("w");
    std::fs::write(cloud.files().join("d/new.txt"), b"new").expect("w");
    let seen = wait_until(Duration::from_secs(5), || {
        std::fs::read(m.path("notes.txt")).ok().as_deref() == Some(&b"version two"[..])
    });
    assert!(seen, "new content not seen after the TTL");
    std::fs::write(
        cloud.files().join("notes.txt"),
        b"third, and longer than before",
    )
    .expect("w");
    let seen = wait_until(Duration::from_secs(5), || {
        std::fs::read(m.path("notes.txt")).ok().as_deref()
            == Some(&b"third, and longer than before"[..])
    });
    assert!(seen, "size change not seen after the TTL");
    assert!(
        wait_until(Duration::from_secs(5), || m.path("d/new.txt").exists()),
        "new file not listed"
    );
    std::fs::remove_file(cloud.files().join("notes.txt")).expect("rm");
    assert!(
        wait_until(Duration::from_secs(5), || !m.path("notes.txt").exists()),
        "deleted file still there"
    );
    let err = std::fs::File::open(m.path("notes.txt")).expect_err("gone");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    m.unmount();
}

#[test]
fn the_cache_is_reused_after_a_remount_only_while_the_etag_matches() {
    let cloud = Cloud::start();
    write_big(&cloud.files().join("movie.bin"), 8 << 20, 9);
    let cache = tempfile::tempdir().expect("tmp");
    let expected = std::fs::read(cloud.files().join("movie.bin")).expect("read");

    let m = Mount::new(MountSpec::new(&cloud.url()).cache(cache.path()));
    assert!(std::fs::read(m.path("movie.bin")).expect("read") == expected);
    m.unmount();

    let before = cloud.get_bytes();
    let m = Mount::new(MountSpec::new(&cloud.url()).cache(cache.path()));
    assert!(std::fs::read(m.path("movie.bin")).expect("read") == expected);
    assert_eq!(
        cloud.get_bytes(),
        before,
        "a remount must serve cached blocks without downloading"
    );
    m.unmount();

    // Changed on the server while unmounted: the old bytes must never be served.
    let changed = pattern(8 << 20, 10);
    std::fs::write(cloud.files().join("movie.bin"), &changed).expect("w");
    let m = Mount::new(MountSpec::new(&cloud.url()).cache(cache.path()));
    assert!(
        std::fs::read(m.path("movie.bin")).expect("read") == changed,
        "stale bytes served"
    );
    m.unmount();
}

#[test]
fn statfs_reports_the_quota() {
    let cloud = Cloud::start_with(Some(5 << 30));
    std::fs::write(cloud.files().join("f"), vec![1u8; 1 << 20]).expect("w");
    let m = Mount::new(MountSpec::new(&cloud.url()));
    let st = statvfs(&m.mp).expect("statvfs");
    let total = st.f_blocks * st.f_frsize;
    let free = st.f_bavail * st.f_frsize;
    assert_eq!(total, 5 << 30, "total is the quota");
    assert_eq!(free, (5 << 30) - (1 << 20), "free is quota minus used");
    // Nextcloud keeps names of at most 250 bytes (reference §10), and says so to programs.
    assert_eq!(st.f_namemax, 250);
    m.unmount();
}

#[test]
fn errors_reach_programs_as_errno() {
    let cloud = Cloud::start();
    std::fs::write(cloud.files().join("f.txt"), b"x").expect("w");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&[
        "--read-only",
        "--timeout",
        "2",
        "--attr-ttl",
        "1",
        "--dir-ttl",
        "1",
    ]));
    let e = std::fs::metadata(m.path("missing")).expect_err("missing");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("f.txt"))
        .expect_err("ro");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = std::fs::File::create(m.path("new.txt")).expect_err("ro");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));

    // A server that stops answering: what is known still answers, content never downloaded
    // fails with ETIMEDOUT (or ENETUNREACH once the mount knows it is offline), bounded.
    std::thread::sleep(Duration::from_millis(1100));
    cloud.server.knobs().delay_ms.store(6000, Ordering::SeqCst);
    let t = std::time::Instant::now();
    let md = std::fs::metadata(m.path("f.txt")).expect("cached attributes while the server hangs");
    assert_eq!(md.len(), 1);
    let e = std::fs::read(m.path("f.txt")).expect_err("slow server");
    assert!(
        matches!(
            e.raw_os_error(),
            Some(libc::ETIMEDOUT) | Some(libc::ENETUNREACH)
        ),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "took {:?}",
        t.elapsed()
    );
    cloud.server.knobs().delay_ms.store(0, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(20), || m.status()["online"] == true),
        "the mount never came back online"
    );

    // A server that keeps failing (503; a download is asked for three times): EIO for
    // content, and a log line.
    std::thread::sleep(Duration::from_millis(1100));
    cloud.server.knobs().fail_next.store(100, Ordering::SeqCst);
    let e = std::fs::read(m.path("f.txt")).expect_err("503");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    cloud.server.knobs().fail_next.store(0, Ordering::SeqCst);
    assert!(m.log_text().contains("HTTP 503"), "the failure is logged");
    m.unmount();
}

/// `nuage mount` in the foreground on `dir/mnt` (the password in `dir/pw`).
fn foreground_mount(
    cloud: &Cloud,
    dir: &std::path::Path,
) -> (std::process::Child, std::path::PathBuf) {
    let mp = dir.join("mnt");
    let _ = std::fs::create_dir(&mp);
    let pw = dir.join("pw");
    std::fs::write(&pw, PASSWORD).expect("pw");
    let child = nuage()
        .args(["mount", &cloud.url()])
        .arg(&mp)
        .args(["--user", USER, "--password-file"])
        .arg(&pw)
        .arg("--cache-dir")
        .arg(dir.join("c"))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    (child, mp)
}

#[test]
fn sigterm_unmounts_cleanly() {
    let cloud = Cloud::start();
    std::fs::write(cloud.files().join("f.txt"), b"x").expect("w");
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut child, mp) = foreground_mount(&cloud, tmp.path());
    let _guard = unmount_on_drop(&mp);
    assert!(
        wait_until(Duration::from_secs(30), || is_mounted(&mp)),
        "not mounted"
    );
    assert_eq!(std::fs::read(mp.join("f.txt")).expect("read"), b"x");
    let status =
        terminate(&mut child, &mp, Duration::from_secs(15)).expect("nuage did not exit on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!is_mounted(&mp), "SIGTERM left the mount behind");
}

#[test]
fn sigterm_as_soon_as_the_mount_appears_still_unmounts_cleanly() {
    let cloud = Cloud::start();
    let tmp = tempfile::tempdir().expect("tmp");
    for round in 0..5 {
        let (mut child, mp) = foreground_mount(&cloud, tmp.path());
        let _guard = unmount_on_drop(&mp);
        // Watched closely: the signal goes the moment the mount is listed.
        let t = std::time::Instant::now();
        while !is_mounted(&mp) && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_micros(200));
        }
        let status = terminate(&mut child, &mp, Duration::from_secs(15));
        assert!(
            status.is_some(),
            "round {round}: nuage did not exit on SIGTERM"
        );
        assert!(
            status.is_some_and(|s| s.success()),
            "round {round}: {status:?}"
        );
        assert!(
            !is_mounted(&mp),
            "round {round}: SIGTERM left the mount behind"
        );
    }
}

#[test]
fn status_answers_as_soon_as_the_mount_appears() {
    let cloud = Cloud::start();
    std::fs::write(cloud.files().join("hello.txt"), b"hi").expect("w");
    let tmp = tempfile::tempdir().expect("tmp");
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    let mut child = nuage()
        .args(["mount", &cloud.url()])
        .arg(&mp)
        .args(["--user", USER, "--cache-dir"])
        .arg(tmp.path().join("c"))
        .env("NUAGE_PASSWORD", PASSWORD)
        .env("XDG_CACHE_HOME", tmp.path().join("xdg"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn nuage");
    let guard = unmount_on_drop(&mp);
    // Watched closely: a script may ask for the status the moment the folder is mounted, so
    // the mount must be registered (in nuage's folder of the user's cache) by then.
    let registry = tmp.path().join("xdg/nuage/mounts");
    let registered = || std::fs::read_dir(&registry).is_ok_and(|d| d.count() > 0);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !is_mounted(&mp)
        && std::time::Instant::now() < end
        && matches!(child.try_wait(), Ok(None))
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mounted = is_mounted(&mp);
    let registered_then = registered();
    let mut cmd = nuage();
    cmd.arg("status")
        .arg(&mp)
        .arg("--json")
        .env("XDG_CACHE_HOME", tmp.path().join("xdg"));
    let out = run_bounded(cmd, Duration::from_secs(30));
    let ended = terminate(&mut child, &mp, Duration::from_secs(15));
    drop(guard);
    assert!(mounted, "the mount never appeared");
    assert!(registered_then, "mounted before being registered");
    assert!(
        out.status.success(),
        "status right after the mount appeared: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(st["pending_uploads"].as_u64(), Some(0));
    assert!(ended.is_some_and(|s| s.success()), "{ended:?}");
}

#[test]
fn daemon_mode_returns_once_the_mount_is_live() {
    let cloud = Cloud::start();
    std::fs::write(cloud.files().join("hello.txt"), b"hi").expect("w");
    let tmp = tempfile::tempdir().expect("tmp");
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    let mut cmd = nuage();
    cmd.args(["mount", &cloud.url()])
        .arg(&mp)
        .args(["--daemon", "--user", USER, "--cache-dir"])
        .arg(tmp.path().join("c"))
        .env("NUAGE_PASSWORD", PASSWORD)
        .stdin(std::process::Stdio::null());
    let out = run_bounded(cmd, Duration::from_secs(60));
    let guard = unmount_on_drop(&mp);
    assert_succeeded(&out);
    // Live at once: no waiting allowed here.
    assert_eq!(std::fs::read(mp.join("hello.txt")).expect("read"), b"hi");
    let out = nuage().arg("unmount").arg(&mp).output().expect("unmount");
    assert!(out.status.success());
    assert!(!is_mounted(&mp));
    drop(guard);
}

/// `nuage unmount --ask` (what Windows uses: only the process serving a WinFsp mount can end
/// it): the mount process unmounts and ends by itself, after what was closed is uploaded.
#[test]
fn unmount_by_asking_the_mount_process_to_end() {
    let cloud = Cloud::start();
    let mut m = Mount::new(MountSpec::new(&cloud.url()));
    std::fs::write(m.path("late.txt"), b"written just before").expect("write");
    let mut cmd = nuage();
    cmd.args(["unmount", "--ask", "--wait", "30"]).arg(&m.mp);
    let out = run_bounded(cmd, Duration::from_secs(60));
    assert_succeeded(&out);
    assert!(!is_mounted(&m.mp), "unmounted once the command returns");
    m.wait_exit();
    assert!(server_file_is(
        &cloud.files(),
        "late.txt",
        b"written just before"
    ));
    // Nothing registered there any more: asking again says so.
    let mut cmd = nuage();
    cmd.args(["unmount", "--ask"]).arg(&m.mp);
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no nuage mount is registered"), "{err}");
    // A request left behind (its process killed before it saw it) does not end the next mount.
    let cache = tempfile::tempdir().expect("tmp");
    std::fs::write(cache.path().join("unmount.request"), b"").expect("stale request");
    let m2 = Mount::new(MountSpec::new(&cloud.url()).cache(cache.path()));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        is_mounted(&m2.mp),
        "a stale request does not end a new mount"
    );
    assert!(!cache.path().join("unmount.request").exists());
    m2.unmount_now();
}

#[test]
fn closing_a_file_that_was_only_read_asks_nuage_nothing() {
    let cloud = Cloud::start();
    std::fs::create_dir(cloud.files().join("notes")).expect("mkdir");
    for i in 0..20 {
        std::fs::write(
            cloud.files().join(format!("notes/n{i}.txt")),
            format!("note {i}"),
        )
        .expect("seed");
    }
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--attr-ttl", "60"]));
    // Read twice: cold (the server is asked), then warm (opened without waiting).
    for _ in 0..2 {
        for i in 0..20 {
            let got = std::fs::read_to_string(m.path(&format!("notes/n{i}.txt"))).expect("read");
            assert_eq!(got, format!("note {i}"));
        }
    }
    let flushes = |log: &str| log.lines().filter(|l| l.contains(" flush ")).count();
    assert_eq!(flushes(&m.log_text()), 0, "a reader's close sent a FLUSH");
    // A writer's close still reaches nuage, which makes its data durable before returning.
    std::fs::write(m.path("notes/new.txt"), b"written").expect("write");
    assert!(
        flushes(&m.log_text()) >= 1,
        "a writer's close sent no FLUSH"
    );
    wait_server(&cloud.files(), "notes/new.txt", b"written");
}

#[test]
fn cached_files_are_read_by_the_kernel_directly_and_writers_still_open_them() {
    let cloud = Cloud::start();
    let data = pattern(5 << 20, 3);
    std::fs::write(cloud.files().join("cours.pdf"), &data).expect("seed");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "0.3"]));
    let f = m.path("cours.pdf");
    assert_eq!(std::fs::read(&f).expect("cold read"), data);
    // Completely cached now: the next opens may be served from the cache file itself.
    let reader = std::fs::File::open(&f).expect("open");
    assert_eq!(std::fs::read(&f).expect("warm read"), data);
    let log = m.log_text();
    if log.contains("passthrough=true") {
        assert!(
            log.contains("opened in passthrough mode"),
            "no passthrough open"
        );
    }
    // A writer waits (bounded) for direct readers to finish: the kernel allows no other
    // open of a file read that way.
    let t = std::time::Instant::now();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        drop(reader);
    });
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .and_then(|mut w| {
            use std::io::{Seek, SeekFrom, Write};
            w.seek(SeekFrom::Start(0))?;
            w.write_all(b"CHANGED")
        })
        .expect("writer opens once the reader closed");
    closer.join().expect("closer");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let mut want = data.clone();
    want[..7].copy_from_slice(b"CHANGED");
    assert_eq!(std::fs::read(&f).expect("read after write"), want);
    m.wait_drained();
    assert_eq!(
        std::fs::read(cloud.files().join("cours.pdf")).expect("server"),
        want
    );
    assert_eq!(std::fs::read(&f).expect("read after upload"), want);
    m.unmount();
}

#[test]
fn a_file_changed_on_the_server_while_read_from_the_cache_opens_at_once_as_a_new_file() {
    use std::io::{Read, Write};
    let cloud = Cloud::start();
    let server = cloud.files().join("plan.odt");
    let v1 = pattern(3 << 20, 5);
    std::fs::write(&server, &v1).expect("seed");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&[
        "--attr-ttl",
        "1",
        "--dir-ttl",
        "1",
        "--upload-delay",
        "0.3",
    ]));
    let f = m.path("plan.odt");
    assert_eq!(std::fs::read(&f).expect("cold read"), v1);
    // Completely cached: a reader that stays open is served from the cache file by the
    // kernel itself (passthrough), which then accepts no open of another file for it.
    let reader = std::fs::File::open(&f).expect("open");
    let old_ino = reader.metadata().expect("fstat").ino();
    // Without passthrough (a mount not made by root, a kernel before 6.9) nothing is
    // renumbered: the reader is served by nuage, which keeps its version anyway.
    let direct = m.log_text().contains("passthrough=true");
    assert!(
        !direct || m.log_text().contains("opened in passthrough mode"),
        "no passthrough open"
    );
    // A colleague saves a longer version. Once the mount sees it, opening the name gives
    // it at once, as a new file (inode), while the reader keeps reading the old one.
    let v2 = pattern(4 << 20, 6);
    std::fs::write(&server, &v2).expect("colleague saves");
    let seen = wait_until(Duration::from_secs(10), || {
        std::fs::metadata(&f).map(|a| a.len()).ok() == Some(v2.len() as u64)
    });
    assert!(seen, "new size not seen");
    assert_eq!(std::fs::read(&f).expect("the new version opens"), v2);
    let new_ino = std::fs::metadata(&f).expect("stat").ino();
    if direct {
        assert_ne!(new_ino, old_ino, "the new version is a new file");
    }
    let mut old = Vec::new();
    (&reader).read_to_end(&mut old).expect("old reader");
    if direct {
        assert!(
            old == v1,
            "the reader open before the change reads the old version"
        );
    } else {
        // One inode, one page cache: the reader sees the file as overwritten in place,
        // whole.
        assert!(old == v1 || old == v2, "a mix of two versions");
    }
    if direct {
        assert!(
            wait_until(Duration::from_secs(5), || {
                reader.metadata().map(|a| a.len()).ok() == Some(v1.len() as u64)
            }),
            "the reader's fstat describes the old version"
        );
    }
    // The same for a writer: the new version read completely and held open by a reader,
    // then changed on the server again; appending to the name opens at once and goes up.
    let reader2 = std::fs::File::open(&f).expect("open v2");
    let v3 = pattern(2 << 20, 7);
    std::fs::write(&server, &v3).expect("colleague saves again");
    let seen = wait_until(Duration::from_secs(10), || {
        std::fs::metadata(&f).map(|a| a.len()).ok() == Some(v3.len() as u64)
    });
    assert!(seen, "third version not seen");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .and_then(|mut w| w.write_all(b"appended"))
        .expect("a writer of the new version opens");
    let mut want = v3.clone();
    want.extend_from_slice(b"appended");
    m.wait_drained();
    assert!(
        std::fs::read(&server).expect("server") == want,
        "server copy differs"
    );
    if direct {
        let mut old2 = Vec::new();
        (&reader2).read_to_end(&mut old2).expect("second reader");
        assert!(old2 == v2, "the second reader reads the version it opened");
        assert_ne!(std::fs::metadata(&f).expect("stat").ino(), new_ino);
    }
    drop((reader, reader2));
    assert!(std::fs::read(&f).expect("after the readers closed") == want);
    m.unmount();
}

#[test]
fn a_large_sequential_read_drops_the_kernel_copy_behind_it_and_rereads_from_the_cache() {
    let cloud = Cloud::start();
    write_big(&cloud.files().join("film.bin"), 160 << 20, 21);
    let m = Mount::new(MountSpec::new(&cloud.url()));
    let expected = std::fs::read(cloud.files().join("film.bin")).expect("read");
    // Read while it stays open: the pages behind the reader leave the kernel's page cache
    // (the data stays in the block cache)...
    let f = std::fs::File::open(m.path("film.bin")).expect("open");
    let mut all = Vec::with_capacity(expected.len());
    {
        use std::io::Read;
        (&f).read_to_end(&mut all).expect("read");
    }
    assert!(all == expected, "sequential read differs");
    let resident = resident_pages(&f, expected.len());
    let pages = |a: usize, b: usize| resident[a / 4096..b / 4096].iter().filter(|r| **r).count();
    assert_eq!(
        pages(0, 32 << 20),
        0,
        "the start is still in the kernel's page cache"
    );
    assert!(
        pages(150 << 20, 160 << 20) > 0,
        "the end should still be in the kernel's page cache"
    );
    let sent = cloud.get_bytes();
    // ...so reading the start again through the same handle asks nuage, which answers from
    // its cache, byte for byte, without the server.
    let mut again = vec![0u8; 8 << 20];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut again, 10 << 20).expect("reread");
    assert!(again[..] == expected[10 << 20..18 << 20], "re-read differs");
    assert_eq!(cloud.get_bytes(), sent, "a re-read must not download again");
    drop(f);
    // A new open reads the complete file from the cache too.
    assert!(std::fs::read(m.path("film.bin")).expect("read") == expected);
    assert_eq!(cloud.get_bytes(), sent);
    m.unmount();
}

#[test]
fn write_only_handles_bypass_the_page_cache_and_readers_see_their_bytes() {
    let cloud = Cloud::start();
    write_big(&cloud.files().join("notes.bin"), 8 << 20, 9);
    let m = Mount::new(MountSpec::new(&cloud.url()));
    let mut want = std::fs::read(cloud.files().join("notes.bin")).expect("read");
    // A reader holding the start of the file in the kernel's page cache...
    let reader = std::fs::File::open(m.path("notes.bin")).expect("open");
    let mut head = vec![0u8; 64 << 10];
    std::os::unix::fs::FileExt::read_exact_at(&reader, &mut head, 0).expect("read");
    assert!(head[..] == want[..64 << 10]);
    // ...sees what a write-only handle writes there, at once.
    {
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(m.path("notes.bin"))
            .expect("open for writing");
        std::os::unix::fs::FileExt::write_all_at(&w, b"XYZ", 2).expect("write");
        want[2..5].copy_from_slice(b"XYZ");
        std::os::unix::fs::FileExt::read_exact_at(&reader, &mut head, 0).expect("reread");
        assert!(head[..] == want[..64 << 10], "the reader kept stale pages");
    }
    drop(reader);
    // A file written through a write-only handle leaves nothing in the page cache.
    let data = pattern(16 << 20, 4);
    std::fs::write(m.path("copy.bin"), &data).expect("write");
    let f = std::fs::File::open(m.path("copy.bin")).expect("open");
    let cached = resident_pages(&f, data.len())
        .iter()
        .filter(|r| **r)
        .count();
    assert_eq!(
        cached, 0,
        "written pages are held in the kernel's page cache"
    );
    assert!(std::fs::read(m.path("copy.bin")).expect("read") == data);
    drop(f);
    m.wait_drained();
    assert!(std::fs::read(cloud.files().join("notes.bin")).expect("server") == want);
    assert!(std::fs::read(cloud.files().join("copy.bin")).expect("server") == data);
    m.unmount();
}

/// Which 4 KiB pages of the open file are in the kernel's page cache (`mincore` on a mapping).
fn resident_pages(f: &std::fs::File, len: usize) -> Vec<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: a read-only shared mapping of an open file, unmapped before returning; mincore
    // writes one byte per page into a vector of that length.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        let mut v = vec![0u8; len.div_ceil(4096)];
        let r = libc::mincore(p, len, v.as_mut_ptr());
        libc::munmap(p, len);
        assert_eq!(r, 0, "mincore");
        v.into_iter().map(|b| b & 1 == 1).collect()
    }
}

#[test]
fn a_mount_unmounted_from_outside_leaves_a_new_mount_at_the_same_place_alone() {
    let cloud = Cloud::start();
    std::fs::write(cloud.files().join("hello.txt"), b"hello").expect("seed");
    for round in 0..3 {
        let first = Mount::new(MountSpec::new(&cloud.url()));
        let mp = first.mp.clone();
        assert!(mp.join("hello.txt").exists());
        // Someone unmounts it, and mounts nuage there again at once. (Asked again while
        // busy: a child another test forks meanwhile holds this thread's files until its
        // exec.)
        let unmounted = wait_until(Duration::from_secs(5), || {
            std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(&mp)
                .status()
                .expect("fusermount3")
                .success()
        });
        assert!(unmounted, "fusermount3 -u failed");
        let cache = tempfile::tempdir().expect("tmp");
        let pw = cache.path().join("pw");
        std::fs::write(&pw, PASSWORD).expect("pw");
        let mut cmd = nuage();
        cmd.arg("mount")
            .arg(cloud.url())
            .arg(&mp)
            .arg("--daemon")
            .arg("--user")
            .arg(USER)
            .arg("--password-file")
            .arg(&pw)
            .arg("--cache-dir")
            .arg(cache.path().join("c"));
        let out = run_bounded(cmd, Duration::from_secs(30));
        assert!(out.status.success(), "second mount failed");
        // The first process ends; the second mount must survive it.
        assert!(
            wait_until(Duration::from_secs(15), || first
                .log_text()
                .contains("unmounted")),
            "the first mount process did not end"
        );
        std::thread::sleep(Duration::from_millis(300));
        let alive = is_mounted(&mp)
            && std::fs::read(mp.join("hello.txt")).ok().as_deref() == Some(&b"hello"[..]);
        let out = nuage().arg("unmount").arg(&mp).output().expect("unmount");
        assert!(
            alive,
            "round {round}: the first process unmounted the second mount ({})",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success());
        assert!(wait_until(Duration::from_secs(10), || !is_mounted(&mp)));
    }
}

#[test]
fn the_demo_serves_its_sample_files_and_a_colleagues_activity() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    let mut cmd = nuage();
    cmd.arg("demo")
        .arg(&mp)
        .arg("--daemon")
        .arg("--data-dir")
        .arg(tmp.path().join("srv"))
        .arg("--cache-dir")
        .arg(tmp.path().join("c"))
        .stdin(std::process::Stdio::null());
    let out = run_bounded(cmd, Duration::from_secs(120));
    let guard = unmount_on_drop(&mp);
    assert_succeeded(&out);
    let mut top: Vec<String> = std::fs::read_dir(&mp)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["Documents", "Images", "Vidéos"]);
    let welcome = std::fs::read_to_string(mp.join("Documents/Bienvenue.txt")).expect("read");
    assert!(welcome.contains("nuage"), "{welcome}");
    assert_eq!(
        std::fs::metadata(mp.join("Vidéos/Grand fichier (200 Mo).bin"))
            .expect("stat")
            .len(),
        200 << 20
    );
    let mut text = String::new();
    let shown = wait_until(Duration::from_secs(30), || {
        let out = nuage().arg("activity").arg(&mp).output().expect("activity");
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("claire.martin changed Emploi du temps.csv")
            && text.contains("paul.durand shared Images with you")
    });
    assert!(shown, "{text}");
    let out = nuage().arg("unmount").arg(&mp).output().expect("unmount");
    assert!(out.status.success());
    assert!(!is_mounted(&mp));
    drop(guard);
}

/// Runs `nuage COMMAND ARGS` with `input` on standard input: (success, stdout, stderr).
fn nuage_cmd(command: &str, args: &[&std::ffi::OsStr], input: &str) -> (bool, String, String) {
    let mut c = nuage();
    c.arg(command).args(args);
    let out = run_bounded_input(c, Some(input), Duration::from_secs(60));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `nuage share ARGS`, `input` on standard input.
fn share(args: &[&std::ffi::OsStr], input: &str) -> (bool, String, String) {
    nuage_cmd("share", args, input)
}

/// `nuage share --with`: a folder shared with a colleague (read only, then with the right to
/// change it), a file written a moment ago shared once uploaded, the shares listed, one ended;
/// an unknown login and sharing with oneself get one line each.
#[test]
fn share_with_a_colleague_from_the_mount() {
    let cloud = Cloud::start();
    std::fs::create_dir_all(cloud.files().join("Classe 4B")).expect("mkdir");
    std::fs::write(cloud.files().join("Classe 4B/notes.ods"), "notes").expect("seed");
    let m = Mount::new(MountSpec::new(&cloud.url()));
    let folder = m.path("Classe 4B");
    let f = folder.as_os_str();

    let (ok, out, err) = share(&[f, "--with".as_ref(), "bob".as_ref()], "");
    assert!(ok, "{err}");
    assert!(out.contains("shared with bob (read only)"), "{out}");
    assert_eq!(
        cloud.server.user_shares("/Classe 4B"),
        vec![("bob".into(), 1)]
    );
    // Asked again with --edit: the same share, now read, update, create, delete.
    let (ok, out, err) = share(
        &[f, "--with".as_ref(), "bob".as_ref(), "--edit".as_ref()],
        "",
    );
    assert!(ok, "{err}");
    assert!(out.contains("(can edit)"), "{out}");
    assert_eq!(
        cloud.server.user_shares("/Classe 4B"),
        vec![("bob".into(), 15)]
    );
    let (ok, _, err) = share(&[f, "--with".as_ref(), "carol".as_ref()], "");
    assert!(ok, "{err}");
    let (ok, listed, err) = share(&[f, "--list".as_ref()], "");
    assert!(ok, "{err}");
    assert!(
        listed.contains("shared with bob (can edit)")
            && listed.contains("shared with carol (read only)"),
        "{listed}"
    );
    // A file saved a moment ago: shared once its upload is done, editable as a file is.
    std::fs::write(m.path("Classe 4B/sujet.odt"), "sujet").expect("write");
    let (ok, _, err) = share(
        &[
            m.path("Classe 4B/sujet.odt").as_os_str(),
            "--with".as_ref(),
            "carol".as_ref(),
            "--edit".as_ref(),
        ],
        "",
    );
    assert!(ok, "{err}");
    assert!(server_file_is(
        &cloud.files(),
        "Classe 4B/sujet.odt",
        b"sujet"
    ));
    assert_eq!(
        cloud.server.user_shares("/Classe 4B/sujet.odt"),
        vec![("carol".into(), 3)]
    );
    // Ended for one colleague only; public links are a separate matter.
    let (ok, out, err) = share(
        &[f, "--with".as_ref(), "bob".as_ref(), "--remove".as_ref()],
        "",
    );
    assert!(ok, "{err}");
    assert!(out.contains("no longer shared with bob"), "{out}");
    assert_eq!(
        cloud.server.user_shares("/Classe 4B"),
        vec![("carol".into(), 1)]
    );
    assert!(cloud.server.public_links("/Classe 4B").is_empty());
    // Nobody of that name, and oneself: one line each, nothing shared.
    let (ok, _, err) = share(&[f, "--with".as_ref(), "nobody".as_ref()], "");
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no such user"), "{err}");
    let (ok, _, err) = share(&[f, "--with".as_ref(), USER_ID.as_ref()], "");
    assert!(!ok);
    assert!(err.contains("refused"), "{err}");
    assert_eq!(cloud.server.user_shares("/Classe 4B").len(), 1);
}

/// `nuage share`: public links made through the mount (which holds the credentials), as a
/// teacher sends a document or a folder to parents. The same link comes back when asked
/// again; a password and an expiry date reach the server (the password nowhere else);
/// a server that enforces passwords, and a bad date, get one line saying what to do;
/// `--remove` deletes the links.
#[test]
fn share_gives_public_links_from_the_mount() {
    let cloud = Cloud::start();
    std::fs::create_dir_all(cloud.files().join("Cours")).expect("mkdir");
    std::fs::write(cloud.files().join("Cours/plan.odt"), "plan").expect("seed");
    std::fs::write(cloud.files().join("Cours/notes.txt"), "notes").expect("seed");
    let m = Mount::new(MountSpec::new(&cloud.url()));
    let plan = m.path("Cours/plan.odt");
    let plan_arg = plan.as_os_str();

    let (ok, out, err) = share(&[plan_arg], "");
    assert!(ok, "{err}");
    let url = out.trim().to_string();
    let links = cloud.server.public_links("/Cours/plan.odt");
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(
        url.contains("/s/") && url.ends_with(&links[0].0),
        "{url} is not the link of token {}",
        links[0].0
    );
    // Asked again: the same link, not a second one.
    let (ok, again, err) = share(&[plan_arg], "");
    assert!(ok, "{err}");
    assert_eq!(again.trim(), url);
    assert_eq!(cloud.server.public_links("/Cours/plan.odt").len(), 1);

    // With a password (read from standard input) and an expiry date: a new link.
    let (ok, out, err) = share(
        &[
            plan_arg,
            "--password".as_ref(),
            "--expire".as_ref(),
            "2099-12-31".as_ref(),
        ],
        "motdepasse-des-parents\n",
    );
    assert!(ok, "{err}");
    let protected = out.trim().to_string();
    assert_ne!(protected, url);
    let links = cloud.server.public_links("/Cours/plan.odt");
    assert_eq!(links.len(), 2);
    assert!(
        links
            .iter()
            .any(|(t, exp, pw)| protected.ends_with(t.as_str())
                && exp.as_deref() == Some("2099-12-31")
                && *pw),
        "{links:?}"
    );
    assert!(
        !m.log_text().contains("motdepasse-des-parents"),
        "the link's password was logged"
    );
    let (ok, listed, err) = share(&[plan_arg, "--list".as_ref()], "");
    assert!(ok, "{err}");
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        vec![url.as_str(), protected.as_str()]
    );

    // A folder, and a name with a space, '#', '+', '&' and accents.
    let (ok, out, err) = share(&[m.path("Cours").as_os_str()], "");
    assert!(ok && out.contains("/s/"), "{err}");
    assert_eq!(cloud.server.public_links("/Cours").len(), 1);
    let awkward = "Cours/sortie #2 + été & co.pdf";
    // Written through the mount a moment ago: shared once uploaded.
    std::fs::write(m.path(awkward), "pdf").expect("write");
    assert_eq!(m.pending(), 1);
    let (ok, out, err) = share(&[m.path(awkward).as_os_str()], "");
    assert!(ok && out.contains("/s/"), "{err}");
    assert_eq!(cloud.server.public_links(&format!("/{awkward}")).len(), 1);

    // A date that is not one: refused before anything is sent.
    let (ok, _, err) = share(&[plan_arg, "--expire".as_ref(), "31/12/2099".as_ref()], "");
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("YYYY-MM-DD"), "{err}");
    // A date the server refuses (in the past): one line too.
    let (ok, _, err) = share(&[plan_arg, "--expire".as_ref(), "2001-01-01".as_ref()], "");
    assert!(!ok);
    assert!(err.contains("refused the options"), "{err}");
    // A server that enforces passwords: one line naming the way out.
    cloud
        .server
        .knobs()
        .links_need_password
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, _, err) = share(&[m.path("Cours/notes.txt").as_os_str()], "");
    assert!(!ok);
    assert!(
        err.starts_with("error: cannot create a link to") && err.contains("--password"),
        "{err}"
    );
    assert!(cloud.server.public_links("/Cours/notes.txt").is_empty());

    // Removed: the server holds none, and --list says so.
    let (ok, out, err) = share(&[plan_arg, "--remove".as_ref()], "");
    assert!(ok && out.contains("removed"), "{err}");
    assert!(cloud.server.public_links("/Cours/plan.odt").is_empty());
    let (ok, out, _) = share(&[plan_arg, "--list".as_ref()], "");
    assert!(ok && out.contains("has no public link"), "{out}");
    m.unmount();
}

/// `nuage trash ARGS`.
fn trash(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    nuage_cmd("trash", args, "")
}

/// `nuage trash`: what was deleted through the mount is listed from the server's trash bin
/// (newest first, where it was in the mount), and `--restore` puts an item back where it was,
/// in the mount at once. A mount of a subfolder lists only what was deleted from there.
#[test]
fn trash_lists_and_restores_what_was_deleted() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    std::fs::create_dir_all(srv.join("Cours/Ancien")).expect("mkdir");
    std::fs::create_dir_all(srv.join("Photos")).expect("mkdir");
    std::fs::write(srv.join("Cours/plan.odt"), "le plan").expect("seed");
    std::fs::write(srv.join("Cours/Ancien/a.txt"), "a").expect("seed");
    std::fs::write(srv.join("Photos/sortie.jpg"), "jpeg").expect("seed");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "0.2"]));
    std::fs::remove_file(m.path("Photos/sortie.jpg")).expect("rm");
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::remove_file(m.path("Cours/plan.odt")).expect("rm");
    std::fs::remove_dir_all(m.path("Cours/Ancien")).expect("rm -r");
    m.wait_drained();
    assert!(wait_until(Duration::from_secs(20), || !srv
        .join("Cours/plan.odt")
        .exists()
        && !srv.join("Cours/Ancien").exists()));

    let mp = m.mp.as_os_str();
    let (ok, out, err) = trash(&[mp]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.iter().any(|l| l.ends_with("  Cours/plan.odt (7 B)")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("  Cours/Ancien/")),
        "{out}"
    );
    // Newest first: the photo went a second before the others.
    assert!(
        lines
            .last()
            .is_some_and(|l| l.ends_with("Photos/sortie.jpg (4 B)")),
        "{out}"
    );
    let (ok, json, err) = trash(&[mp, "--json".as_ref()]);
    assert!(ok, "{err}");
    let items: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert!(items
        .as_array()
        .expect("list")
        .iter()
        .any(|i| i["location"] == "Cours/plan.odt" && i["dir"] == false && i["size"] == 7));

    // Restored by its path in the mount: on the server and in the mount at once.
    let (ok, out, err) = trash(&[
        mp,
        "--restore".as_ref(),
        m.path("Cours/plan.odt").as_os_str(),
    ]);
    assert!(ok && out.starts_with("restored "), "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(srv.join("Cours/plan.odt")).expect("on the server"),
        "le plan"
    );
    assert_eq!(
        std::fs::read_to_string(m.path("Cours/plan.odt")).expect("in the mount"),
        "le plan"
    );
    // Restored by its path relative to the mount point.
    let (ok, _, err) = trash(&[mp, "--restore".as_ref(), "Photos/sortie.jpg".as_ref()]);
    assert!(ok, "{err}");
    assert!(names_in_dir(&m.path("Photos")).contains(&"sortie.jpg".to_string()));
    let (ok, out, _) = trash(&[mp]);
    assert!(
        ok && !out.contains("plan.odt") && !out.contains("sortie.jpg"),
        "{out}"
    );
    // Nothing of that name: one line.
    let (ok, _, err) = trash(&[mp, "--restore".as_ref(), "Cours/rien.odt".as_ref()]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("nothing deleted from"), "{err}");
    m.unmount();

    // A mount of "Cours" lists what was deleted from it, relative to it.
    let sub = Mount::new(MountSpec::new(&format!(
        "{}/remote.php/dav/files/{USER_ID}/Cours/",
        cloud.url()
    )));
    let (ok, out, err) = trash(&[sub.mp.as_os_str()]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.ends_with("  Ancien/")), "{out}");
    assert!(!out.contains("Photos"), "{out}");
    sub.unmount();
}

fn names_in_dir(p: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(p)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// `nuage versions`: the server keeps what each save replaced; the command lists a file's
/// earlier versions, newest first, and `--restore N` makes one its content again, which the
/// mount shows at once (the content it replaced becomes a version in turn).
#[test]
fn versions_lists_and_restores_earlier_contents() {
    let cloud = Cloud::start();
    std::fs::write(cloud.files().join("bulletin.odt"), "premier jet").expect("seed");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "0.2"]));
    let doc = m.path("bulletin.odt");
    for text in ["deuxième jet", "version finale"] {
        std::fs::write(&doc, text).expect("save");
        m.wait_drained();
    }
    assert_eq!(
        std::fs::read_to_string(cloud.files().join("bulletin.odt")).expect("server"),
        "version finale"
    );
    let (ok, out, err) = nuage_cmd("versions", &[doc.as_os_str()], "");
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].trim_start().starts_with("1  ") && lines[1].trim_start().starts_with("2  "),
        "{out}"
    );
    let (ok, json, err) = nuage_cmd("versions", &[doc.as_os_str(), "--json".as_ref()], "");
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let sizes: Vec<u64> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|x| x["size"].as_u64().expect("size"))
        .collect();
    assert_eq!(
        sizes,
        vec!["deuxième jet".len() as u64, "premier jet".len() as u64]
    );

    // The oldest one back: on the server, and read through the mount at once.
    let (ok, out, err) = nuage_cmd(
        "versions",
        &[doc.as_os_str(), "--restore".as_ref(), "2".as_ref()],
        "",
    );
    assert!(
        ok && out.contains("is back to its version of"),
        "{out}{err}"
    );
    assert_eq!(
        std::fs::read_to_string(cloud.files().join("bulletin.odt")).expect("server"),
        "premier jet"
    );
    assert_eq!(std::fs::read_to_string(&doc).expect("mount"), "premier jet");
    let (ok, json, _) = nuage_cmd("versions", &[doc.as_os_str(), "--json".as_ref()], "");
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert!(
        v.as_array()
            .expect("list")
            .iter()
            .any(|x| x["size"].as_u64() == Some("version finale".len() as u64)),
        "the replaced content is a version now: {json}"
    );
    // A file saved a moment ago (its upload waits): answered once it is on the server.
    std::fs::write(m.path("nouveau.odt"), "tout neuf").expect("write");
    let (ok, out, err) = nuage_cmd("versions", &[m.path("nouveau.odt").as_os_str()], "");
    assert!(ok, "{err}");
    assert!(out.contains("keeps no earlier version"), "{out}");
    // No such version, and a folder: one line each.
    let (ok, _, err) = nuage_cmd(
        "versions",
        &[doc.as_os_str(), "--restore".as_ref(), "9".as_ref()],
        "",
    );
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("has no version 9"),
        "{err}"
    );
    let (ok, _, err) = nuage_cmd("versions", &[m.mp.as_os_str()], "");
    assert!(!ok && err.contains("folder"), "{err}");
    m.unmount();
}

/// Answers every request with a permanent redirect to the same path under `to`.
fn redirector(to: &str) -> TinyHttp {
    let to = to.trim_end_matches('/').to_string();
    TinyHttp::start(move |head| {
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        format!(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: {to}{path}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    })
}

#[test]
fn an_address_that_redirects_is_followed_once_and_never_sent_the_password() {
    let cloud = Cloud::start();
    std::fs::write(cloud.files().join("cours.txt"), b"le cours").expect("seed");
    // As an http:// address of an https:// server: everything moved permanently.
    let redirector = redirector(&cloud.url());
    let m = Mount::new(MountSpec::new(&format!(
        "http://127.0.0.1:{}/",
        redirector.port
    )));
    assert_eq!(
        std::fs::read(m.path("cours.txt")).expect("read through the mount"),
        b"le cours"
    );
    std::fs::write(m.path("devoir.txt"), b"rendu").expect("write");
    wait_server(&cloud.files(), "devoir.txt", b"rendu");
    m.unmount();
    let heads = redirector.heads();
    assert!(!heads.is_empty(), "the redirecting address was never asked");
    assert!(
        heads
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("authorization")),
        "the password went to the redirecting address: {heads:?}"
    );
    assert!(
        heads
            .iter()
            .all(|h| h.starts_with("GET ") && h.contains("status.php")),
        "more than the public status was asked there: {heads:?}"
    );
}

#[test]
fn an_address_copied_from_the_files_app_mounts_the_folder_it_showed() {
    let cloud = Cloud::start();
    let shown = cloud.files().join("Mes cours/Première");
    std::fs::create_dir_all(&shown).expect("mkdir");
    std::fs::write(shown.join("plan.txt"), b"le plan").expect("seed");
    std::fs::write(cloud.files().join("racine.txt"), b"r").expect("seed");
    // As a browser's address bar shows it in the Files app.
    let m = Mount::new(MountSpec::new(&format!(
        "{}/index.php/apps/files/?dir=/Mes%20cours/Premi%C3%A8re&fileid=12",
        cloud.url()
    )));
    assert_eq!(std::fs::read(m.path("plan.txt")).expect("read"), b"le plan");
    assert!(
        !m.path("racine.txt").exists(),
        "the account's root was mounted"
    );
    std::fs::write(m.path("devoir.txt"), b"rendu").expect("write");
    wait_server(&shown, "devoir.txt", b"rendu");
    m.unmount();
}

/// A folder shared by a public link (`.../s/<token>`, as a colleague sends it) mounts from
/// the link alone, through the server's public WebDAV (§1.1): its files read, nothing else
/// of the account shows, and it is read-only as the link. A link with a password wants it
/// (`--password-file` or `NUAGE_PASSWORD`, no login).
#[test]
fn a_folder_shared_by_a_public_link_mounts_from_the_link() {
    let cloud = Cloud::start();
    std::fs::create_dir_all(cloud.files().join("Sortie/photos")).expect("mkdir");
    std::fs::write(cloud.files().join("Sortie/programme.txt"), b"programme").expect("seed");
    let photo = pattern(300_000, 3);
    std::fs::write(cloud.files().join("Sortie/photos/1.jpg"), &photo).expect("seed");
    std::fs::write(cloud.files().join("privé.txt"), b"x").expect("seed");
    let m = Mount::new(MountSpec::new(&cloud.url()));
    let folder = m.path("Sortie");
    let (ok, open_link, err) = share(&[folder.as_os_str()], "");
    assert!(ok, "{err}");
    let (ok, guarded, err) = share(
        &[folder.as_os_str(), "--password".as_ref()],
        "mot de passe\n",
    );
    assert!(ok, "{err}");
    m.unmount();

    let mut spec = MountSpec::new(open_link.trim());
    (spec.user, spec.password) = (None, None);
    let link = Mount::new(spec);
    let mut listed = names_in_dir(&link.mp);
    listed.sort();
    assert_eq!(listed, ["photos", "programme.txt"]);
    assert_eq!(
        std::fs::read(link.path("programme.txt")).expect("read"),
        b"programme"
    );
    assert!(std::fs::read(link.path("photos/1.jpg")).expect("read") == photo);
    let e = std::fs::write(link.path("ajout.txt"), b"x").expect_err("read-only link");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EROFS)),
        "{e}"
    );
    link.unmount();

    // With a password: refused without it (one line, nothing mounted), mounted with it.
    let tmp = tempfile::tempdir().expect("tmp");
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    let _guard = unmount_on_drop(&mp);
    let (err, code) = failed_mount(guarded.trim(), &mp, None, None, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("protected by a password"), "{err}");
    assert!(!is_mounted(&mp));
    let (err, code) = failed_mount(guarded.trim(), &mp, None, Some("pas le bon"), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("password is not this one"), "{err}");
    assert!(
        !err.contains("pas le bon"),
        "the password was printed: {err}"
    );
    assert!(!is_mounted(&mp));
    let mut spec = MountSpec::new(guarded.trim());
    (spec.user, spec.password) = (None, Some("mot de passe".into()));
    let link = Mount::new(spec);
    assert_eq!(
        std::fs::read(link.path("programme.txt")).expect("read"),
        b"programme"
    );
    link.unmount();
}

#[test]
fn walking_a_tree_lists_the_next_folders_ahead_and_opening_one_does_not() {
    let cloud = Cloud::start();
    let classes = cloud.files().join("Classes");
    for i in 0..12 {
        let d = classes.join(format!("classe-{i:02}"));
        std::fs::create_dir_all(d.join("devoirs")).expect("mkdir");
        std::fs::write(d.join("liste.txt"), format!("classe {i}\n")).expect("w");
    }
    for i in 0..8 {
        let d = cloud.files().join(format!("Eleves/eleve-{i}/travaux"));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("copie.txt"), b"copie").expect("w");
    }
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--dir-ttl", "60", "--attr-ttl", "60"]));
    assert_eq!(names_in_dir(&m.path("")).len(), 2);
    let propfinds = || cloud.server.stats().count("PROPFIND");
    let names = |rel: &str| {
        let mut v = names_in_dir(&m.path(rel));
        v.sort();
        v
    };
    assert_eq!(names("Classes").len(), 12);

    // One subfolder opened (a person clicking into it): that folder only.
    let before = propfinds();
    assert_eq!(names("Classes/classe-00"), ["devoirs", "liste.txt"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(propfinds(), before + 1, "one folder opened, one listing");

    // A second one soon after: a walk. The other ten are listed ahead, and nothing below
    // them (what the walker has not reached starts no walk of its own).
    assert_eq!(names("Classes/classe-01"), ["devoirs", "liste.txt"]);
    assert!(
        wait_until(Duration::from_secs(20), || propfinds() >= before + 12),
        "the other folders were not listed ahead: {} listings",
        propfinds() - before
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        propfinds(),
        before + 12,
        "listed ahead: the ten siblings only"
    );
    for i in 2..12 {
        assert_eq!(
            names(&format!("Classes/classe-{i:02}")),
            ["devoirs", "liste.txt"]
        );
    }
    assert_eq!(
        propfinds(),
        before + 12,
        "the walker found the listings ready"
    );

    // A walker that goes down as well (find, du): the levels below are listed ahead too.
    let before = propfinds();
    assert_eq!(names("Eleves/eleve-0"), ["travaux"]);
    assert_eq!(names("Eleves/eleve-0/travaux"), ["copie.txt"]);
    assert_eq!(names("Eleves/eleve-1"), ["travaux"]);
    assert!(
        wait_until(Duration::from_secs(20), || propfinds() >= before + 17),
        "the folders below were not listed ahead: {} listings",
        propfinds() - before
    );
    std::thread::sleep(Duration::from_millis(500));
    let listed = propfinds();
    // Eleves and the three folders opened, the six other pupils and the seven other
    // `travaux` listed ahead.
    assert_eq!(listed, before + 17, "listed ahead: what the walk has left");
    for i in 1..8 {
        assert_eq!(names(&format!("Eleves/eleve-{i}/travaux")), ["copie.txt"]);
        assert_eq!(names(&format!("Eleves/eleve-{i}")), ["travaux"]);
    }
    assert_eq!(propfinds(), listed, "the walker found the listings ready");
    m.unmount();
}

#[test]
fn reading_a_folders_files_in_turn_fetches_the_next_ones_ahead() {
    let cloud = Cloud::start();
    let dir = cloud.files().join("Copies");
    std::fs::create_dir(&dir).expect("mkdir");
    let body = |i: usize| pattern(10_000 + i, i as u64);
    for i in 0..20 {
        std::fs::write(dir.join(format!("copie-{i:02}.txt")), body(i)).expect("w");
    }
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--dir-ttl", "60", "--attr-ttl", "60"]));
    let gets = || cloud.server.stats().count("GET");
    let read = |i: usize| std::fs::read(m.path(&format!("Copies/copie-{i:02}.txt"))).expect("read");
    assert_eq!(names_in_dir(&m.path("Copies")).len(), 20);

    // One file read: that file only.
    let before = gets();
    assert_eq!(read(0), body(0));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(gets(), before + 1, "one file read, one download");

    // The next one in name order: the eight after it are fetched ahead.
    assert_eq!(read(1), body(1));
    assert!(
        wait_until(Duration::from_secs(20), || gets() >= before + 10),
        "nothing fetched ahead: {} downloads",
        gets() - before
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gets(), before + 10, "the eight next files, once each");
    // They are here: read while the server refuses everything.
    cloud.server.knobs().fail_next.store(1000, Ordering::SeqCst);
    for i in 2..10 {
        assert_eq!(read(i), body(i), "copie-{i:02} was not fetched ahead");
    }
    cloud.server.knobs().fail_next.store(0, Ordering::SeqCst);
    m.unmount();
}

/// Nextcloud's session cookies go back to it (nextcloud-protocol.md §14.3): once a session is
/// open the server lets the mount's requests in by it, without checking the app password on
/// each one (its costliest step on a real server). Uploads still arrive (new small files may
/// go up in one bulk `POST`, whose CSRF check logs the session out), and so does what is read.
#[test]
fn session_cookies_spare_the_server_a_password_check_per_request() {
    let cloud = Cloud::start();
    for i in 0..20 {
        let d = cloud.files().join(format!("classe {i}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("notes.txt"), format!("notes {i}")).expect("w");
    }
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    let st = cloud.server.stats();
    let checks_before = st.credential_checks.load(Ordering::SeqCst);
    let by_session_before = st.session_requests.load(Ordering::SeqCst);
    for i in 0..20 {
        let d = m.path(&format!("classe {i}"));
        assert_eq!(std::fs::read_dir(&d).expect("ls").count(), 1);
        assert_eq!(
            std::fs::read_to_string(d.join("notes.txt")).expect("read"),
            format!("notes {i}")
        );
    }
    let checks = st.credential_checks.load(Ordering::SeqCst) - checks_before;
    let by_session = st.session_requests.load(Ordering::SeqCst) - by_session_before;
    assert!(
        by_session >= 20,
        "only {by_session} requests came in by their session ({checks} password checks)"
    );
    assert!(
        checks <= 2,
        "{checks} password checks for 20 folders listed and read ({by_session} by session)"
    );
    for i in 0..5 {
        std::fs::write(
            m.path(&format!("classe {i}/devoir.txt")),
            format!("devoir {i}"),
        )
        .expect("save");
    }
    for i in 0..5 {
        wait_server(
            &cloud.files(),
            &format!("classe {i}/devoir.txt"),
            format!("devoir {i}").as_bytes(),
        );
    }
    m.unmount();
}

/// A server that refuses its own session cookies (401 "CSRF check not passed.", as Nextcloud
/// answers a session it does not take, §7.6): the refusal is not taken for a revoked app
/// password. The request goes once more without cookies, and once that works no cookie is
/// kept any more: the mount reads and saves on the credentials alone.
#[test]
fn a_server_refusing_its_session_cookies_is_not_taken_for_a_wrong_password() {
    let cloud = Cloud::start();
    std::fs::create_dir_all(cloud.files().join("docs")).expect("mkdir");
    std::fs::write(cloud.files().join("docs/a.txt"), b"bonjour").expect("w");
    cloud
        .server
        .knobs()
        .refuse_sessions
        .store(true, Ordering::SeqCst);
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    for _ in 0..3 {
        assert_eq!(std::fs::read_dir(m.path("docs")).expect("ls").count(), 1);
        assert_eq!(
            std::fs::read(m.path("docs/a.txt")).expect("read"),
            b"bonjour"
        );
        std::thread::sleep(Duration::from_millis(1100));
    }
    std::fs::write(m.path("docs/b.txt"), b"enregistre").expect("save");
    wait_server(&cloud.files(), "docs/b.txt", b"enregistre");
    assert!(m.status()["auth_error"].is_null(), "{}", m.status());
    let refused = cloud.server.stats().unauthorized.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&refused),
        "{refused} requests refused: the session should have been tried, then left"
    );
    assert!(
        m.log_text()
            .contains("the server refuses its own session cookies"),
        "{}",
        m.log_text()
    );
    m.unmount();
}
