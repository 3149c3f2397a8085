//! Real FUSE mounts against nginx's WebDAV modules: a server nobody here wrote whose listings
//! carry no etag and which ignores `If-Match` and `If-None-Match` on PUT and DELETE. Nothing
//! someone else wrote there may be overwritten or deleted silently all the same.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Long lifetimes: the mount keeps what it saw, so the server changes below happen behind
/// its back, as a colleague's would.
const SLOW_TTL: &[&str] = &[
    "--upload-delay",
    "0.2",
    "--attr-ttl",
    "60",
    "--dir-ttl",
    "60",
];

fn conflict_copies(root: &Path, stem: &str) -> Vec<String> {
    let prefix = format!("{stem} (conflicted copy ");
    let mut v: Vec<String> = std::fs::read_dir(root)
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

/// Writes `bytes` as someone else would, straight into the server's folder.
fn server_write(n: &WebDavServer, rel: &str, bytes: &[u8]) {
    std::fs::write(n.data().join(rel), bytes).expect("server write");
    n.fix_owner();
}

#[test]
fn nginx_listing_reads_and_writes() {
    let n = WebDavServer::nginx();
    let d = n.data();
    std::fs::create_dir_all(d.join("Cours/Semaine 1")).expect("mkdir");
    std::fs::write(d.join("Cours/Semaine 1/plan.txt"), b"plan du cours\n").expect("w");
    std::fs::write(d.join("Cours/slides.bin"), pattern(3 * 1024 * 1024 + 5, 7)).expect("w");
    n.fix_owner();
    let m = Mount::new(MountSpec::new(&n.url()).args(FAST));
    assert_same_tree(&d, &m.mp);

    std::fs::write(m.path("new.txt"), b"hello nginx").expect("create");
    std::fs::create_dir(m.path("Dossier")).expect("mkdir");
    std::fs::write(m.path("Dossier/a.bin"), pattern(200_000, 3)).expect("create");
    std::fs::rename(m.path("new.txt"), m.path("Dossier/renamed.txt")).expect("rename");
    std::fs::remove_file(m.path("Cours/Semaine 1/plan.txt")).expect("unlink");
    std::fs::remove_dir(m.path("Cours/Semaine 1")).expect("rmdir");
    m.wait_drained();
    wait_server(&d, "Dossier/renamed.txt", b"hello nginx");
    wait_server(&d, "Dossier/a.bin", &pattern(200_000, 3));
    assert!(!d.join("new.txt").exists());
    assert!(!d.join("Cours/Semaine 1").exists());
    assert!(
        conflict_copies(&d.join("Dossier"), "renamed").is_empty(),
        "no conflict where nobody else wrote"
    );
    m.unmount();
}

/// nginx lists no etags: an uploaded file is known by its time and size, and kept in the
/// cache under them, so the next writer beside a follower takes it over as on Nextcloud.
#[test]
fn nginx_a_log_appended_line_by_line_is_followed_by_a_reader_that_stays_open() {
    let n = WebDavServer::nginx();
    follow_a_log_appended_line_by_line(&n.url(), &n.data(), || n.fix_owner());
}

#[test]
fn nginx_saves_never_overwrite_a_newer_server_copy() {
    let n = WebDavServer::nginx();
    let d = n.data();
    let m = Mount::new(MountSpec::new(&n.url()).args(SLOW_TTL));

    // Saving the same file again and again (an editor) is no conflict: after each upload the
    // mount knows the version it put there.
    for i in 0..4 {
        let body = format!("version {i} of the lesson plan{}", ".".repeat(i));
        std::fs::write(m.path("plan.txt"), body.as_bytes()).expect("save");
        wait_server(&d, "plan.txt", body.as_bytes());
    }
    assert_eq!(conflict_copies(&d, "plan"), Vec::<String>::new());

    // A colleague changes the file while we have it open: theirs stays, ours goes beside it.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("plan.txt"))
        .expect("open");
    server_write(&n, "plan.txt", b"the colleague's version, longer than ours");
    f.write_all(b"our version").expect("write");
    drop(f);
    let copies = wait_until(Duration::from_secs(20), || {
        conflict_copies(&d, "plan").len() == 1
    });
    assert!(
        copies,
        "one conflicted copy: {:?}",
        conflict_copies(&d, "plan")
    );
    assert_eq!(
        std::fs::read(d.join("plan.txt")).expect("read"),
        b"the colleague's version, longer than ours"
    );
    let copy = &conflict_copies(&d, "plan")[0];
    wait_server(&d, copy, b"our version");

    // A new file whose name a colleague took meanwhile: theirs stays.
    let mut f = std::fs::File::create(m.path("notes.txt")).expect("create");
    server_write(&n, "notes.txt", b"their notes");
    f.write_all(b"our notes").expect("write");
    drop(f);
    let copies = wait_until(Duration::from_secs(20), || {
        conflict_copies(&d, "notes").len() == 1
    });
    assert!(copies, "one conflicted copy of notes.txt");
    assert_eq!(
        std::fs::read(d.join("notes.txt")).expect("read"),
        b"their notes"
    );
    wait_server(&d, &conflict_copies(&d, "notes")[0], b"our notes");
    m.unmount();
}

#[test]
fn nginx_deleting_a_file_changed_on_the_server_keeps_it() {
    let n = WebDavServer::nginx();
    let d = n.data();
    server_write(&n, "old.txt", b"as the mount first sees it");
    server_write(&n, "gone.txt", b"nobody changes this one");
    let m = Mount::new(MountSpec::new(&n.url()).args(SLOW_TTL));
    assert_eq!(
        std::fs::read(m.path("old.txt")).expect("read"),
        b"as the mount first sees it"
    );
    server_write(&n, "old.txt", b"a colleague rewrote it meanwhile");
    // The program sees its delete done; the server keeps the newer copy.
    std::fs::remove_file(m.path("old.txt")).expect("unlink");
    std::fs::remove_file(m.path("gone.txt")).expect("unlink");
    assert!(!d.join("gone.txt").exists(), "an unchanged file is deleted");
    assert_eq!(
        std::fs::read(d.join("old.txt")).expect("kept"),
        b"a colleague rewrote it meanwhile"
    );
    m.unmount();
}

#[test]
fn nginx_upload_size_limit_is_reported_and_not_hammered() {
    // nginx's default configuration takes request bodies up to 1 MiB.
    let n = WebDavServer::nginx_limited("1m");
    let d = n.data();
    // In a desktop session, where the refusal is also told as a notification.
    let watch = NotificationWatch::start();
    let m = Mount::new(
        MountSpec::new(&n.url())
            .args(FAST)
            .env("DBUS_SESSION_BUS_ADDRESS", &watch.bus.address),
    );
    let big = pattern(3 << 20, 9);
    std::fs::write(m.path("film.bin"), &big).expect("a save is local first");
    std::fs::write(m.path("note.txt"), b"small enough").expect("save");
    wait_server(&d, "note.txt", b"small enough");
    let refused = wait_until(Duration::from_secs(20), || {
        m.first_upload_error()
            .is_some_and(|e| e.contains("HTTP 413"))
    });
    assert!(refused, "status must tell the size limit: {}", m.status());
    // Kept in the journal, and not sent again and again.
    std::thread::sleep(Duration::from_secs(3));
    let st = m.status();
    assert_eq!(st["pending_uploads"], 1, "{st}");
    assert_eq!(st["uploads"][0]["attempts"], 1, "{st}");
    assert_eq!(st["uploads"][0]["refused"], true, "{st}");
    assert!(!d.join("film.bin").exists());
    assert!(
        watch.wait_for("nuage: a file cannot be saved"),
        "no notification; the bus saw:\n{}",
        watch.seen()
    );
    let seen = watch.seen();
    assert!(
        seen.contains(&m.path("film.bin").display().to_string()) && seen.contains("413"),
        "names the file and why: {seen}"
    );
    assert_eq!(watch.count(), 1, "told once: {seen}");
    assert_eq!(
        std::fs::read(m.path("film.bin")).expect("still readable"),
        big
    );
    // Unmounting says what stays in the journal.
    let said = m.unmount_now();
    assert!(
        said.contains("still pending") && said.contains("film.bin"),
        "unmount must tell what remains: {said}"
    );
}

#[test]
fn nginx_dot_files_stay_although_its_listings_leave_them_out() {
    // nginx's dav_ext module leaves names starting with a dot out of folder listings.
    let n = WebDavServer::nginx();
    let d = n.data();
    let m = Mount::new(MountSpec::new(&n.url()).args(FAST));
    std::fs::create_dir_all(m.path("projet/.git/objects")).expect("mkdir");
    std::fs::write(m.path("projet/.git/objects/ab12"), b"object").expect("w");
    std::fs::write(m.path("projet/.gitignore"), b"target\n").expect("w");
    std::fs::write(m.path("projet/main.rs"), b"fn main() {}\n").expect("w");
    m.wait_drained();
    wait_server(&d, "projet/.git/objects/ab12", b"object");
    wait_server(&d, "projet/.gitignore", b"target\n");
    // Listings older than their 1 s lifetime are asked for again: the dot entries stay.
    std::thread::sleep(Duration::from_millis(1500));
    let mut names: Vec<String> = std::fs::read_dir(m.path("projet"))
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    assert_eq!(names, [".git", ".gitignore", "main.rs"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        std::fs::read(m.path("projet/.git/objects/ab12")).expect("read"),
        b"object"
    );
    assert_eq!(
        std::fs::read(m.path("projet/.gitignore")).expect("read"),
        b"target\n"
    );
    m.unmount();
}

/// A server that ignores `Range` (nginx with `max_ranges 0`, as some servers and proxies do)
/// answers every ranged GET with the whole file. Reading a file through costs about one
/// transfer of it, not the beginning of the file again for every read-ahead run (which grows
/// with the square of the size), and the bytes are right; with a cache too small to keep the
/// whole file, a read far into it is still right.
#[test]
fn nginx_without_ranges_reads_a_file_through_in_one_transfer() {
    let n = WebDavServer::nginx_without_ranges();
    let size = 40usize << 20;
    let data = pattern(size, 11);
    server_write(&n, "film.bin", &data);
    server_write(&n, "autre.bin", &pattern(size, 12));
    let m = Mount::new(MountSpec::new(&n.url()).args(FAST));
    assert!(
        std::fs::read(m.path("film.bin")).expect("read") == data,
        "the bytes read differ from the server's"
    );
    // nginx logs a request once it has sent its answer (bounded wait).
    wait_until(Duration::from_secs(5), || {
        n.nginx_get_bytes() >= size as u64
    });
    let sent = n.nginx_get_bytes();
    assert!(
        sent <= 2 * size as u64,
        "reading {size} bytes through made the server send {sent}"
    );
    // Read again by another program (a new open): from the cache.
    let f = std::fs::File::open(m.path("film.bin")).expect("open");
    let mut tail = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut tail, (size - 4096) as u64)
        .expect("read the end");
    assert_eq!(tail, data[size - 4096..]);
    drop(f);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(n.nginx_get_bytes(), sent, "downloaded again");
    m.unmount();

    // A cache of 32 MiB keeps no 40 MiB file whole: the answer is read up to the blocks asked.
    let m = Mount::new(
        MountSpec::new(&n.url())
            .args(FAST)
            .args(&["--cache-size", "32M"]),
    );
    let want = pattern(size, 12);
    for off in [30usize << 20, 1 << 20, 39 << 20] {
        let got = read_at(&m.path("autre.bin"), off as u64, 8192);
        assert!(got == want[off..off + 8192], "wrong bytes at {off}");
    }
    m.unmount();
}

/// A file of 32 MiB read at its start, then replaced on the server by `new` (saved `later`
/// when given): a read in the middle fails with `ESTALE` instead of mixing old and new
/// bytes, the next stat asks the server, and the next open reads the new file.
fn replaced_under_a_reader_is_not_mixed(new: &[u8], later: Option<std::time::SystemTime>) {
    let n = WebDavServer::nginx();
    let old = pattern(32 << 20, 21);
    server_write(&n, "cours.bin", &old);
    let m = Mount::new(MountSpec::new(&n.url()).args(SLOW_TTL));
    let p = m.path("cours.bin");
    assert_eq!(read_at(&p, 0, 4096), old[..4096]);
    server_write(&n, "cours.bin", new);
    if let Some(t) = later {
        set_mtime(&n.data().join("cours.bin"), t);
    }
    // Within the attribute lifetime the mount still knows the old size: the bytes at 20 MiB
    // were never downloaded.
    let f = std::fs::File::open(&p).expect("open");
    let mut buf = vec![0u8; 4096];
    let err = std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 20 << 20)
        .expect_err("a read of a replaced file must fail, not mix versions");
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    drop(f);
    assert_eq!(
        std::fs::metadata(&p).expect("stat").len(),
        new.len() as u64,
        "the next stat asks the server"
    );
    assert!(
        std::fs::read(&p).expect("read again") == new,
        "the new file is read"
    );
    m.unmount();
}

/// nginx lists no etags, so a read cannot be made conditional on the version it started
/// from. A file replaced on the server by one of another size is still noticed in the
/// middle of a read (the answer's `Content-Range` names the new size).
#[test]
fn nginx_a_file_replaced_under_a_reader_is_not_mixed() {
    replaced_under_a_reader_is_not_mixed(&pattern(33 << 20, 22), None);
}

/// The same with a file of the same size: nginx's answers carry an etag (`"mtime-size"`),
/// which the next downloads of that version send as `If-Match`.
#[test]
fn nginx_a_file_replaced_by_one_of_the_same_size_under_a_reader_is_not_mixed() {
    // Saved later than the first (nginx's etag holds the second of the modification).
    let later = std::time::SystemTime::now() + Duration::from_secs(10);
    replaced_under_a_reader_is_not_mixed(&pattern(32 << 20, 24), Some(later));
}
