//! Real FUSE mounts against Apache httpd with mod_dav (a WebDAV server nobody here wrote).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn apache_listing_reads_and_names() {
    let apache = Apache::start();
    let d = apache.data();
    std::fs::create_dir_all(d.join("Cours/Semaine 1")).expect("mkdir");
    std::fs::write(d.join("Cours/Semaine 1/plan.txt"), b"plan du cours\n").expect("w");
    std::fs::write(d.join("Cours/slides.bin"), pattern(5 * 1024 * 1024 + 17, 2)).expect("w");
    for n in awkward_names() {
        std::fs::write(d.join(&n), n.as_bytes()).expect("w");
    }
    apache.fix_owner();
    let m = Mount::new(MountSpec::new(&apache.url()));
    assert_same_tree(&d, &m.mp);
    let src = std::fs::read(d.join("Cours/slides.bin")).expect("read");
    for (off, len) in [
        (0u64, 10usize),
        ((1 << 20) - 3, 10),
        (5 << 20, 17),
        (3 << 20, 1 << 20),
    ] {
        let got = read_at(&m.path("Cours/slides.bin"), off, len);
        let end = (off as usize + len).min(src.len());
        assert_eq!(got, src[off as usize..end], "range {off}+{len}");
    }
    m.unmount();
}

/// Apache asking for Digest authentication (`mod_auth_digest`) with nonces good for one
/// second: listing, reads, a large save and a rename go through, each request after a nonce
/// expired is answered with a fresh one (`stale=true`), and the password never travels.
#[test]
fn apache_with_digest_authentication_and_expiring_nonces() {
    let apache = Apache::start_digest(1);
    let d = apache.data();
    std::fs::create_dir_all(d.join("Cours")).expect("mkdir");
    std::fs::write(d.join("Cours/plan.txt"), b"plan du cours\n").expect("w");
    let slides = pattern(3 * 1024 * 1024 + 5, 4);
    std::fs::write(d.join("Cours/slides.bin"), &slides).expect("w");
    apache.fix_owner();
    let m = Mount::new(MountSpec::new(&apache.url()).args(FAST));
    assert_same_tree(&d, &m.mp);
    assert_eq!(
        read_at(&m.path("Cours/slides.bin"), 2_000_000, 10_000),
        slides[2_000_000..2_010_000]
    );
    // Past the nonce's lifetime: the next requests are refused as stale and sent again.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        std::fs::read(m.path("Cours/slides.bin")).expect("read"),
        slides
    );
    let big = pattern(24 * 1024 * 1024 + 3, 9);
    std::fs::write(m.path("Cours/cours.bin"), &big).expect("save");
    std::thread::sleep(Duration::from_millis(2100));
    std::fs::rename(m.path("Cours/plan.txt"), m.path("Cours/plan 2.txt")).expect("rename");
    m.wait_drained();
    wait_server(&d, "Cours/cours.bin", &big);
    wait_server(&d, "Cours/plan 2.txt", b"plan du cours\n");
    assert!(!d.join("Cours/plan.txt").exists());
    let log = std::fs::read_to_string(apache.dir.path().join("access.log")).expect("log");
    assert!(
        log.lines().filter(|l| l.contains(" 401 ")).count() >= 2,
        "the server never asked for Digest, or no nonce expired: {log}"
    );
    // What each request carried (the test server logs the header): never the password.
    let sent = std::fs::read_to_string(apache.dir.path().join("auth.log")).expect("log");
    assert!(
        sent.lines().any(|l| l.starts_with("Digest username=")),
        "{sent}"
    );
    assert!(
        sent.lines().all(|l| l == "-" || l.starts_with("Digest ")),
        "{sent}"
    );
    assert!(
        !m.log_text().contains(PASSWORD),
        "the password showed in the log"
    );
    assert!(
        std::fs::read_to_string(apache.dir.path().join("error.log"))
            .unwrap_or_default()
            .lines()
            .all(|l| !l.contains("auth_digest") || l.contains("stale")),
        "Apache refused a digest: {}",
        apache.error_log()
    );
    m.unmount();
}

#[test]
fn apache_sparse_read_counted_by_the_server() {
    let apache = Apache::start();
    write_big(&apache.data().join("big.bin"), 200 << 20, 4);
    apache.fix_owner();
    let m = Mount::new(MountSpec::new(&apache.url()));
    let before = apache.get_bytes();
    let got = read_at(&m.path("big.bin"), 100 << 20, 4096);
    assert_eq!(
        got,
        read_at(&apache.data().join("big.bin"), 100 << 20, 4096)
    );
    // Apache writes its access log line after the response; give it a moment (bounded).
    wait_until(Duration::from_secs(5), || apache.get_bytes() > before);
    let sent = apache.get_bytes() - before;
    assert!(sent > 4096, "the server must have sent the block ({sent})");
    assert!(
        sent <= 8 << 20,
        "a 4 KiB read at 100 MiB made Apache send {sent} bytes"
    );
    m.unmount();
}

/// A mount made by a user other than root has no passthrough (the kernel needs
/// CAP_SYS_ADMIN for it): a file read through is then read again from the kernel's page
/// cache, as a local file would be, not through nuage from the block cache.
#[test]
fn apache_without_passthrough_a_reread_comes_from_the_kernel() {
    let apache = Apache::start();
    let data = pattern(64 << 20, 21);
    std::fs::write(apache.data().join("film.bin"), &data).expect("seed");
    apache.fix_owner();
    let m = Mount::new(
        MountSpec::new(&apache.url())
            .env("NUAGE_PASSTHROUGH", "off")
            .args(&["--attr-ttl", "60", "--dir-ttl", "60"]),
    );
    assert!(std::fs::read(m.path("film.bin")).expect("first read") == data);
    let before = m.bytes_read();
    assert!(std::fs::read(m.path("film.bin")).expect("second read") == data);
    let read = m.bytes_read() - before;
    assert!(
        read < 8 << 20,
        "nuage read {read} bytes again for a 64 MiB file the kernel had just read"
    );
    m.unmount();
}

/// Public links are a Nextcloud service: on a plain WebDAV server `nuage share` says so in
/// one line.
#[test]
fn apache_share_says_links_need_nextcloud() {
    let apache = Apache::start();
    std::fs::write(apache.data().join("a.txt"), "a").expect("seed");
    apache.fix_owner();
    let m = Mount::new(MountSpec::new(&apache.url()));
    let out = nuage()
        .arg("share")
        .arg(m.path("a.txt"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("nuage share");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("public links need a nuage mount of a Nextcloud server"),
        "{err}"
    );
    // A file outside any mount.
    let elsewhere = tempfile::NamedTempFile::new().expect("tmp");
    let out = nuage()
        .arg("versions")
        .arg(elsewhere.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("nuage versions");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not inside a nuage mount"),
        "{err}"
    );
    m.unmount();
}

#[test]
fn apache_change_on_the_server_is_seen() {
    let apache = Apache::start();
    std::fs::write(apache.data().join("f.txt"), b"before").expect("w");
    apache.fix_owner();
    let m = Mount::new(MountSpec::new(&apache.url()).args(&["--attr-ttl", "1", "--dir-ttl", "1"]));
    assert_eq!(std::fs::read(m.path("f.txt")).expect("read"), b"before");
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(apache.data().join("f.txt"), b"after, longer").expect("w");
    std::fs::write(apache.data().join("g.txt"), b"new").expect("w");
    apache.fix_owner();
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read(m.path("f.txt"))
            .ok()
            .as_deref()
            == Some(&b"after, longer"[..])),
        "change not seen"
    );
    assert!(wait_until(Duration::from_secs(5), || m
        .path("g.txt")
        .exists()));
    m.unmount();
}

#[test]
fn apache_a_file_a_colleague_saved_just_after_the_listing_opens_with_the_new_content() {
    let apache = Apache::start();
    let d = apache.data();
    std::fs::write(d.join("notes.txt"), b"short").expect("w");
    std::fs::write(d.join("rapport.odt"), pattern(3 << 20, 1)).expect("w");
    std::fs::write(d.join("photo.jpg"), pattern((2 << 20) + 100, 2)).expect("w");
    std::fs::write(d.join("tableau.ods"), pattern(50_000, 3)).expect("w");
    let film = pattern(16 << 20, 4);
    std::fs::write(d.join("film.mkv"), &film).expect("w");
    apache.fix_owner();
    // Strong etags (Apache gives weak ones within a second of a change).
    std::thread::sleep(Duration::from_millis(1100));
    // Attributes trusted for a minute: the listing below describes the old versions
    // throughout the test.
    let m =
        Mount::new(MountSpec::new(&apache.url()).args(&["--attr-ttl", "60", "--dir-ttl", "60"]));
    let listed: Vec<(String, u64)> = ["notes.txt", "rapport.odt", "photo.jpg", "tableau.ods"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::metadata(m.path(n)).expect("stat").len(),
            )
        })
        .collect();
    assert_eq!(listed[0].1, 5);
    // A colleague saves new versions: longer, across more blocks, shorter, same size.
    let notes = b"a longer second version of the notes".to_vec();
    let rapport = pattern(5 << 20, 11);
    let photo = pattern(100_000, 12);
    let tableau = pattern(50_000, 13);
    std::fs::write(d.join("notes.txt"), &notes).expect("w");
    std::fs::write(d.join("rapport.odt"), &rapport).expect("w");
    std::fs::write(d.join("photo.jpg"), &photo).expect("w");
    std::fs::write(d.join("tableau.ods"), &tableau).expect("w");
    apache.fix_owner();
    // Opened before the mount knows: nothing of the old versions was read through the
    // kernel, so each reads the new version whole, without an error and without a byte of
    // the old one.
    assert_eq!(std::fs::read(m.path("notes.txt")).expect("notes"), notes);
    assert!(std::fs::read(m.path("rapport.odt")).expect("rapport") == rapport);
    assert!(std::fs::read(m.path("photo.jpg")).expect("photo") == photo);
    assert!(std::fs::read(m.path("tableau.ods")).expect("tableau") == tableau);
    assert_eq!(
        std::fs::metadata(m.path("rapport.odt"))
            .expect("stat")
            .len(),
        rapport.len() as u64
    );
    assert_eq!(
        std::fs::metadata(m.path("photo.jpg")).expect("stat").len(),
        photo.len() as u64
    );
    // A reader that already read bytes of a version (not cached whole) fails on a later
    // change (ESTALE) rather than mixing two versions.
    let f = std::fs::File::open(m.path("film.mkv")).expect("open");
    let mut first = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut first, 0).expect("first bytes");
    assert!(first[..] == film[..4096]);
    std::fs::write(d.join("film.mkv"), pattern(16 << 20, 21)).expect("w");
    apache.fix_owner();
    let mut later = vec![0u8; 4096];
    let err = std::os::unix::fs::FileExt::read_exact_at(&f, &mut later, 12 << 20)
        .expect_err("a later block of another version");
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE));
    drop(f);
    m.unmount();
}

#[test]
fn apache_writes_renames_and_deletes() {
    let apache = Apache::start();
    std::fs::create_dir(apache.data().join("docs")).expect("mkdir");
    std::fs::write(apache.data().join("docs/old.txt"), b"old").expect("w");
    apache.fix_owner();
    let m = Mount::new(MountSpec::new(&apache.url()).args(FAST));
    // Large enough to be dropped from memory after its sync and read around the page cache
    // for the upload, and not a whole number of pages.
    let data = pattern((72 << 20) + 4097, 77);
    std::fs::write(m.path("docs/big.bin"), &data).expect("write");
    std::fs::write(m.path("docs/old.txt"), b"replaced").expect("overwrite");
    std::fs::create_dir(m.path("new folder")).expect("mkdir");
    std::fs::write(m.path("new folder/n.txt"), b"n").expect("w");
    std::fs::rename(m.path("new folder"), m.path("renamed folder")).expect("rename");
    let d = apache.data();
    let ok = wait_until(Duration::from_secs(30), || {
        std::fs::read(d.join("docs/big.bin"))
            .map(|b| b == data)
            .unwrap_or(false)
            && std::fs::read(d.join("docs/old.txt")).ok().as_deref() == Some(&b"replaced"[..])
            && std::fs::read(d.join("renamed folder/n.txt"))
                .ok()
                .as_deref()
                == Some(&b"n"[..])
    });
    assert!(ok, "Apache never got the writes; log:\n{}", m.log_text());
    assert!(!d.join("new folder").exists());
    std::fs::remove_file(m.path("docs/old.txt")).expect("unlink");
    assert!(!d.join("docs/old.txt").exists());
    std::fs::remove_file(m.path("renamed folder/n.txt")).expect("unlink");
    std::fs::remove_dir(m.path("renamed folder")).expect("rmdir");
    assert!(!d.join("renamed folder").exists());
    m.unmount();
}

/// A file saved again right after its upload: Apache gives it a weak etag for a second,
/// which never passes `If-Match`. The server copy is still the one the change is based on,
/// so the next saves go up at once, with no failed attempt and no conflicted copy.
#[test]
fn apache_a_file_saved_again_within_a_second_goes_up_at_once() {
    let apache = Apache::start();
    let m = Mount::new(MountSpec::new(&apache.url()).args(FAST));
    let d = apache.data();
    for i in 0..4 {
        let body = format!("version {i}\n");
        std::fs::write(m.path("notes.txt"), &body).expect("save");
        wait_server(&d, "notes.txt", body.as_bytes());
    }
    m.wait_drained();
    let log = m.log_text();
    assert!(!log.contains("upload failed"), "{log}");
    let names: Vec<String> = std::fs::read_dir(&d)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["notes.txt".to_string()], "no conflicted copy");
    m.unmount();
}

#[test]
fn apache_keeps_modification_times_it_cannot_store() {
    let apache = Apache::start();
    apache.fix_owner();
    let cache = tempfile::tempdir().expect("tmp");
    let spec = || MountSpec::new(&apache.url()).cache(cache.path()).args(FAST);
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    let m = Mount::new(spec());
    std::fs::create_dir(m.path("d")).expect("mkdir");
    // A new file with an old date (cp -a, rsync -a, tar x do this).
    let f = std::fs::File::create(m.path("d/old.txt")).expect("create");
    std::io::Write::write_all(&mut &f, b"from 2017").expect("write");
    f.set_modified(when).expect("set mtime");
    drop(f);
    m.wait_drained();
    std::thread::sleep(Duration::from_millis(1200)); // listings are asked again
    let mtime = |p: &std::path::Path| {
        std::fs::metadata(p)
            .expect("stat")
            .modified()
            .expect("mtime")
    };
    assert_eq!(mtime(&m.path("d/old.txt")), when, "after the upload");
    // A clean file's date set later, and a rename of its folder.
    set_mtime(&m.path("d/old.txt"), when + Duration::from_secs(60));
    std::fs::rename(m.path("d"), m.path("e")).expect("rename");
    std::thread::sleep(Duration::from_millis(1200));
    m.unmount();
    let m = Mount::new(spec());
    assert_eq!(
        mtime(&m.path("e/old.txt")),
        when + Duration::from_secs(60),
        "kept across a rename and a remount"
    );
    // Changed on the server by someone else: the server's date counts again.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(apache.data().join("e/old.txt"), "changed elsewhere").expect("server write");
    std::thread::sleep(Duration::from_millis(1200));
    assert_ne!(mtime(&m.path("e/old.txt")), when + Duration::from_secs(60));
    m.unmount();
}

#[test]
fn apache_a_file_whose_folder_was_deleted_meanwhile_still_arrives() {
    let apache = Apache::start();
    std::fs::create_dir_all(apache.data().join("Partage/Cours")).expect("mkdir");
    apache.fix_owner();
    let m = Mount::new(MountSpec::new(&apache.url()).args(&["--upload-delay", "1.5"]));
    let data = pattern(70_000, 13);
    std::fs::write(m.path("Partage/Cours/devoir.bin"), &data).expect("write");
    std::fs::remove_dir_all(apache.data().join("Partage")).expect("rm");
    wait_server(&apache.data(), "Partage/Cours/devoir.bin", &data);
    m.wait_drained();
    m.unmount();
}

#[test]
fn apache_a_renamed_file_keeps_what_was_downloaded_of_it() {
    let apache = Apache::start();
    let d = apache.data();
    std::fs::create_dir(d.join("cours")).expect("mkdir");
    let data = pattern(2_500_000, 7);
    std::fs::write(d.join("cours/vidéo.bin"), &data).expect("seed");
    std::fs::write(d.join("cours/notes.txt"), b"notes").expect("seed");
    apache.fix_owner();
    let cache = tempfile::tempdir().expect("tmp");
    let spec = || MountSpec::new(&apache.url()).cache(cache.path()).args(FAST);
    // Both files, read whole through a mount, under the given names.
    let read_both = |m: &Mount, video: &str, notes: &str| {
        assert_eq!(std::fs::read(m.path(video)).expect(video), data);
        assert_eq!(std::fs::read(m.path(notes)).expect(notes), b"notes");
    };
    let m = Mount::new(spec());
    read_both(&m, "cours/vidéo.bin", "cours/notes.txt");
    std::fs::rename(m.path("cours/vidéo.bin"), m.path("cours/séance 1.bin")).expect("mv file");
    std::fs::rename(m.path("cours"), m.path("cours 2026")).expect("mv folder");
    assert!(d.join("cours 2026/séance 1.bin").exists());
    // Read again on a fresh mount (nothing in the kernel's cache): from the block cache,
    // since Apache keeps a file's etag across a rename.
    m.unmount();
    let m = Mount::new(spec());
    wait_until(Duration::from_secs(5), || {
        apache.get_bytes() >= data.len() as u64
    });
    let before = apache.get_bytes();
    read_both(&m, "cours 2026/séance 1.bin", "cours 2026/notes.txt");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        apache.get_bytes(),
        before,
        "downloaded again after a rename"
    );
    m.unmount();
}

/// A file manager sniffing the first bytes of every file of a folder (its type, a
/// thumbnail), or `file *`: a first read is no sequential pattern yet, so each file costs
/// the one block the read touches, not a read-ahead window as well (it cost 5 MiB a file).
/// A read that goes on from there still gets its read-ahead.
#[test]
fn apache_first_bytes_of_many_files_cost_one_block_each() {
    let apache = Apache::start();
    let d = apache.data();
    for i in 0..8 {
        write_big(&d.join(format!("vidéo {i}.bin")), 12 << 20, i);
    }
    apache.fix_owner();
    let m = Mount::new(MountSpec::new(&apache.url()));
    let before = apache.get_bytes();
    for i in 0..8 {
        let p = m.path(&format!("vidéo {i}.bin"));
        let got = read_at(&p, 0, 4096);
        assert_eq!(got, read_at(&d.join(format!("vidéo {i}.bin")), 0, 4096));
    }
    wait_until(Duration::from_secs(5), || {
        apache.get_bytes() >= before + (8 << 20)
    });
    std::thread::sleep(Duration::from_millis(300));
    let sent = apache.get_bytes() - before;
    assert!(
        sent <= 8 * ((1 << 20) + (64 << 10)),
        "8 reads of 4 KiB at the start of 8 files made Apache send {sent} bytes"
    );
    // Reading one through afterwards is right (and read ahead).
    let whole = std::fs::read(m.path("vidéo 3.bin")).expect("read");
    assert!(whole == std::fs::read(d.join("vidéo 3.bin")).expect("server file"));
    m.unmount();
}

/// Reads through connections that break 20 to 300 ms after they open (block downloads cut in
/// the middle, answers lost): every byte read is the file's, whole-file and random reads
/// alike; the blocks that broke off are asked again.
#[test]
fn apache_reads_through_connections_that_keep_breaking_give_the_files_bytes() {
    let apache = Apache::start();
    for i in 0..3u64 {
        write_big(
            &apache.data().join(format!("big-{i}.bin")),
            24 << 20,
            60 + i,
        );
    }
    apache.fix_owner();
    let relay = Relay::start(apache.port);
    let m = Mount::new(MountSpec::new(&format!("{}/dav/", relay.url())));
    relay.set(RelayMode::Breaking {
        seed: 7,
        span_ms: 300,
    });
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..3u64 {
        let name = format!("big-{i}.bin");
        let want = std::fs::read(apache.data().join(&name)).expect("server copy");
        // Random reads first (cold blocks), then the whole file.
        for _ in 0..20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = x % (want.len() as u64 - 70_000);
            let len = 1 + (x >> 40) as usize % 65_536;
            let got = read_at(&m.path(&name), off, len);
            assert!(
                got[..] == want[off as usize..off as usize + len],
                "{name}: {len} bytes at {off} differ"
            );
        }
        let got = std::fs::read(m.path(&name)).expect("read");
        assert!(got == want, "{name} differs when read whole");
    }
    assert!(relay.cuts() > 0, "no connection was cut");
    m.unmount();
}

/// An upload whose answer is lost (Apache stored the file, the connection closed before the
/// answer came): the file counts as uploaded once the server is seen to hold its bytes (read
/// back as they arrive, for a 12 MiB file as for a small one), and is not sent again as a
/// conflicted copy, neither new nor when it replaced a version the mount knew.
#[test]
fn apache_an_upload_whose_answer_was_lost_is_not_taken_for_a_conflict() {
    let apache = Apache::start();
    let relay = Relay::start(apache.port);
    let m = Mount::new(MountSpec::new(&format!("{}/dav/", relay.url())).args(FAST));
    let names = || {
        let mut v: Vec<String> = std::fs::read_dir(apache.data())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    for (round, seed) in [(1, 77), (2, 78)] {
        let data = pattern(12 << 20, seed);
        relay.set(RelayMode::LoseAnswerTo("PUT"));
        std::fs::write(m.path("rapport.pdf"), &data).expect("write");
        // A date of its own (Apache keeps the time of the upload): only the bytes tell.
        set_mtime(
            &m.path("rapport.pdf"),
            std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000 + round),
        );
        m.wait_drained();
        assert_eq!(relay.cuts(), round, "round {round}: no PUT answer was lost");
        assert!(
            std::fs::read(apache.data().join("rapport.pdf")).expect("on the server") == data,
            "round {round}: the server's copy differs"
        );
        assert_eq!(names(), ["rapport.pdf"], "round {round}");
        assert!(std::fs::read(m.path("rapport.pdf")).expect("read") == data);
    }
    m.unmount();
}
