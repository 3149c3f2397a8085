//! Real FUSE mounts against more WebDAV servers nobody here wrote: lighttpd's `mod_webdav`
//! (its listings carry etags; it keeps properties and locks in its own SQLite database) and
//! `rclone serve webdav` (Go's `x/net/webdav`), WsgiDAV (Python), and GNOME's phodav
//! (`chezdav`, Digest authentication), and SabreDAV (PHP).

mod common;

use common::*;
use std::time::Duration;

/// The same round on every server: listing, whole and ranged reads, awkward names, writes,
/// renames of a file and of a folder, deletes; then the server's folder is checked.
fn round_of_operations(l: &WebDavServer, hello: &[u8]) {
    let d = l.data();
    let awkward = "Été #1 + 50% & 'c'est ça' 🎉.txt";
    std::fs::create_dir_all(d.join("Cours/Semaine 1")).expect("mkdir");
    std::fs::write(d.join("Cours/Semaine 1/plan.txt"), b"plan du cours\n").expect("w");
    std::fs::write(d.join("Cours").join(awkward), b"accents").expect("w");
    std::fs::write(d.join("Cours/slides.bin"), pattern(3 * 1024 * 1024 + 5, 7)).expect("w");
    l.fix_owner();
    let m = Mount::new(MountSpec::new(&l.url()).args(FAST));
    assert_same_tree(&d, &m.mp);
    assert_eq!(
        std::fs::read(m.path(&format!("Cours/{awkward}"))).expect("read"),
        b"accents"
    );
    // A ranged read in the middle, compared byte for byte.
    let want = pattern(3 * 1024 * 1024 + 5, 7);
    assert_eq!(
        read_at(&m.path("Cours/slides.bin"), 2_000_000, 10_000),
        want[2_000_000..2_010_000]
    );

    std::fs::write(m.path("new.txt"), hello).expect("create");
    std::fs::create_dir(m.path("Dossier")).expect("mkdir");
    std::fs::write(m.path("Dossier/a.bin"), pattern(200_000, 3)).expect("create");
    std::fs::rename(m.path("new.txt"), m.path("Dossier/renamed.txt")).expect("rename");
    std::fs::rename(m.path("Cours"), m.path("Cours 2026")).expect("rename folder");
    std::fs::remove_file(m.path("Cours 2026/Semaine 1/plan.txt")).expect("unlink");
    std::fs::remove_dir(m.path("Cours 2026/Semaine 1")).expect("rmdir");
    m.wait_drained();
    wait_server(&d, "Dossier/renamed.txt", hello);
    wait_server(&d, "Dossier/a.bin", &pattern(200_000, 3));
    wait_server(&d, &format!("Cours 2026/{awkward}"), b"accents");
    assert!(!d.join("new.txt").exists());
    assert!(!d.join("Cours").exists());
    assert!(!d.join("Cours 2026/Semaine 1").exists());
    m.unmount();
}

#[test]
fn lighttpd_listing_reads_writes_and_awkward_names() {
    round_of_operations(&WebDavServer::lighttpd(), b"hello lighttpd");
}

/// lighttpd asking for Digest with SHA-256: the same round; a wrong password is refused in
/// one line.
#[test]
fn lighttpd_digest_sha256_round_and_wrong_password() {
    let l = WebDavServer::lighttpd_digest_sha256();
    let tmp = tempfile::tempdir().expect("tmp");
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    let (err, code) = failed_mount(&l.url(), &mp, Some(USER), Some("wrong"), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("refused the login"), "{err}");
    assert!(!is_mounted(&mp));
    round_of_operations(&l, b"hello lighttpd digest");
}

/// A colleague's change on the server is seen through the mount once the lifetimes pass.
fn change_on_the_server_is_seen(w: &WebDavServer) {
    let d = w.data();
    std::fs::write(d.join("emploi.csv"), b"lundi").expect("w");
    w.fix_owner();
    let m = Mount::new(MountSpec::new(&w.url()).args(FAST));
    assert_eq!(std::fs::read(m.path("emploi.csv")).expect("read"), b"lundi");
    // A colleague saves a longer version (new etag, new size).
    std::fs::write(d.join("emploi.csv"), b"lundi, mardi et mercredi").expect("w");
    w.fix_owner();
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read(m.path("emploi.csv")).ok().as_deref()
                == Some(&b"lundi, mardi et mercredi"[..])
        }),
        "the new content never showed"
    );
    m.unmount();
}

#[test]
fn lighttpd_change_on_the_server_is_seen_after_the_lifetimes() {
    change_on_the_server_is_seen(&WebDavServer::lighttpd());
}

/// `rclone serve webdav`, a fourth server nobody here wrote (Go's `x/net/webdav`): the same
/// round.
#[test]
fn rclone_serve_listing_reads_writes_and_renames() {
    round_of_operations(&WebDavServer::rclone_serve(), b"hello rclone");
}

/// GNOME's phodav (`chezdav`), a sixth server nobody here wrote (C, libsoup), which asks
/// for Digest authentication and sends ISO 8601 modification dates: the same round, and
/// the dates read right.
#[test]
fn chezdav_digest_listing_reads_writes_and_dates() {
    let s = WebDavServer::chezdav();
    let d = s.data();
    std::fs::write(d.join("dated.txt"), b"dated").expect("w");
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    set_mtime(&d.join("dated.txt"), when);
    {
        let m = Mount::new(MountSpec::new(&s.url()).args(FAST));
        let got = std::fs::metadata(m.path("dated.txt"))
            .and_then(|md| md.modified())
            .expect("stat");
        assert_eq!(got, when, "the modification date read from an ISO 8601 one");
        m.unmount();
    }
    std::fs::remove_file(d.join("dated.txt")).expect("rm");
    round_of_operations(&s, b"hello chezdav");
}

/// WsgiDAV, a fifth server nobody here wrote (Python): the same round.
#[test]
fn wsgidav_listing_reads_writes_and_renames() {
    round_of_operations(&WebDavServer::wsgidav(), b"hello wsgidav");
}

#[test]
fn wsgidav_change_on_the_server_is_seen_after_the_lifetimes() {
    change_on_the_server_is_seen(&WebDavServer::wsgidav());
}

/// SabreDAV (PHP), a seventh server nobody here wrote, the library Nextcloud's WebDAV is
/// built on (Debian's version 1.8): the same round.
#[test]
fn sabredav_listing_reads_writes_and_renames() {
    round_of_operations(&WebDavServer::sabredav(), b"hello sabredav");
}

#[test]
fn sabredav_change_on_the_server_is_seen_after_the_lifetimes() {
    change_on_the_server_is_seen(&WebDavServer::sabredav());
}
