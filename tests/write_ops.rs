//! Writes through real FUSE mounts: each operation, orderings, holes, crash safety, conflicts,
//! quota, server outages and chunked uploads. The server's files are compared byte for byte.

mod common;

use common::*;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Files sent to the server: single PUTs plus files of bulk uploads.
fn puts(cloud: &Cloud) -> u64 {
    let st = cloud.server.stats();
    st.file_puts.load(Ordering::SeqCst) + st.bulk_files.load(Ordering::SeqCst)
}

#[test]
fn each_operation_reaches_the_server() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    std::fs::write(srv.join("existing.txt"), b"0123456789").expect("w");
    std::fs::create_dir(srv.join("full")).expect("mkdir");
    std::fs::write(srv.join("full/x"), b"x").expect("w");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));

    // create + write + close: close returns before the upload; the server gets exact bytes.
    std::fs::write(m.path("new.txt"), b"hello world").expect("create");
    assert_eq!(
        std::fs::read(m.path("new.txt")).expect("read back"),
        b"hello world"
    );
    wait_server(&srv, "new.txt", b"hello world");

    // append, overwrite in place, O_TRUNC
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("existing.txt"))
        .expect("append");
    f.write_all(b"abc").expect("w");
    drop(f);
    wait_server(&srv, "existing.txt", b"0123456789abc");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("existing.txt"))
        .expect("rw");
    f.write_all_at(b"XY", 2).expect("w");
    drop(f);
    wait_server(&srv, "existing.txt", b"01XY456789abc");
    std::fs::write(m.path("existing.txt"), b"short").expect("trunc");
    wait_server(&srv, "existing.txt", b"short");

    // truncate(path) while pending and after upload
    std::fs::write(m.path("t.txt"), b"0123456789").expect("w");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("t.txt"))
        .expect("o");
    f.set_len(4).expect("truncate while pending");
    drop(f);
    wait_server(&srv, "t.txt", b"0123");
    std::process::Command::new("truncate")
        .args(["-s", "6"])
        .arg(m.path("t.txt"))
        .status()
        .expect("truncate");
    wait_server(&srv, "t.txt", b"0123\0\0");

    // mtime is kept (X-OC-Mtime on Nextcloud)
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    std::fs::write(m.path("dated.txt"), b"d").expect("w");
    let f = std::fs::File::options()
        .write(true)
        .open(m.path("dated.txt"))
        .expect("o");
    f.set_modified(when).expect("utimens");
    drop(f);
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::fs::metadata(srv.join("dated.txt"))
                .and_then(|md| md.modified())
                .ok()
                == Some(when)
        }),
        "server mtime not set"
    );

    // mkdir, rmdir, rmdir of a non-empty folder
    std::fs::create_dir(m.path("folder")).expect("mkdir");
    assert!(
        srv.join("folder").is_dir(),
        "mkdir is on the server at once"
    );
    let e = std::fs::create_dir(m.path("folder")).expect_err("exists");
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    let e = std::fs::remove_dir(m.path("full")).expect_err("not empty");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    std::fs::remove_dir(m.path("folder")).expect("rmdir");
    assert!(!srv.join("folder").exists());

    // rename: plain, across folders, onto an existing file, folder onto non-empty folder
    std::fs::create_dir(m.path("a")).expect("mkdir");
    std::fs::create_dir(m.path("b")).expect("mkdir");
    std::fs::rename(m.path("new.txt"), m.path("a/renamed.txt")).expect("rename");
    assert!(!srv.join("new.txt").exists() && server_file_is(&srv, "a/renamed.txt", b"hello world"));
    std::fs::rename(m.path("a/renamed.txt"), m.path("b/moved.txt")).expect("rename across");
    assert!(server_file_is(&srv, "b/moved.txt", b"hello world"));
    std::fs::write(m.path("b/target.txt"), b"old target").expect("w");
    wait_server(&srv, "b/target.txt", b"old target");
    std::fs::rename(m.path("b/moved.txt"), m.path("b/target.txt")).expect("replace");
    assert!(server_file_is(&srv, "b/target.txt", b"hello world"));
    assert!(!srv.join("b/moved.txt").exists());
    let e = std::fs::rename(m.path("a"), m.path("full")).expect_err("non-empty target");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    assert!(
        server_file_is(&srv, "full/x", b"x"),
        "the non-empty target must survive"
    );
    std::fs::rename(m.path("a"), m.path("b/a2")).expect("move folder");
    assert!(srv.join("b/a2").is_dir() && !srv.join("a").exists());

    // unlink
    std::fs::remove_file(m.path("b/target.txt")).expect("unlink");
    assert!(!srv.join("b/target.txt").exists());
    assert_eq!(
        std::fs::metadata(m.path("b/target.txt"))
            .expect_err("gone")
            .raw_os_error(),
        Some(libc::ENOENT)
    );

    // fsync returns once durable; the file is then uploaded
    let mut f = std::fs::File::create(m.path("synced.bin")).expect("create");
    f.write_all(&pattern(100_000, 1)).expect("w");
    f.sync_all().expect("fsync");
    drop(f);
    wait_server(&srv, "synced.bin", &pattern(100_000, 1));
    m.wait_drained();
    m.unmount();
}

#[test]
fn orderings_end_right_without_needless_transfers() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&[
        "--upload-delay",
        "1.5",
        "--attr-ttl",
        "1",
        "--dir-ttl",
        "1",
    ]));
    let before = puts(&cloud);

    // written then renamed (before upload): only the final name is uploaded, once.
    std::fs::write(m.path("draft.txt"), b"draft").expect("w");
    std::fs::rename(m.path("draft.txt"), m.path("final.txt")).expect("rename");
    // written then deleted: never uploaded.
    std::fs::write(m.path("tmp.txt"), b"temporary").expect("w");
    std::fs::remove_file(m.path("tmp.txt")).expect("rm");
    // a folder renamed while files inside are pending
    std::fs::create_dir(m.path("dir")).expect("mkdir");
    for i in 0..5 {
        std::fs::write(m.path(&format!("dir/f{i}")), format!("file {i}")).expect("w");
    }
    std::fs::rename(m.path("dir"), m.path("dir2")).expect("rename dir");
    // a path that changes type: file, then folder, then file again
    std::fs::write(m.path("shape"), b"file").expect("w");
    std::fs::remove_file(m.path("shape")).expect("rm");
    std::fs::create_dir(m.path("shape")).expect("mkdir");
    std::fs::remove_dir(m.path("shape")).expect("rmdir");
    std::fs::write(m.path("shape"), b"file again").expect("w");

    m.wait_drained();
    assert!(server_file_is(&srv, "final.txt", b"draft"));
    assert!(!srv.join("draft.txt").exists());
    assert!(!srv.join("tmp.txt").exists());
    for i in 0..5 {
        assert!(server_file_is(
            &srv,
            &format!("dir2/f{i}"),
            format!("file {i}").as_bytes()
        ));
    }
    assert!(!srv.join("dir").exists());
    assert!(server_file_is(&srv, "shape", b"file again"));
    assert_eq!(
        puts(&cloud) - before,
        7,
        "one upload per surviving file, nothing else"
    );
    assert_same_tree(&srv, &m.mp);
    m.unmount();
}

#[test]
fn a_partial_write_into_an_uncached_large_file_never_uploads_holes() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    write_big(&srv.join("big.bin"), 30 << 20, 21);
    let mut expected = std::fs::read(srv.join("big.bin")).expect("read");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("big.bin"))
        .expect("open rw");
    f.write_all_at(b"PATCHED", 15 << 20).expect("write");
    drop(f);
    expected[15 << 20..(15 << 20) + 7].copy_from_slice(b"PATCHED");
    m.wait_drained();
    assert!(
        std::fs::read(srv.join("big.bin")).expect("read") == expected,
        "server copy has holes or wrong bytes"
    );
    assert!(std::fs::read(m.path("big.bin")).expect("read") == expected);
    m.unmount();
}

/// A file deleted while a program still has it open (written before and after, then closed)
/// never comes back: it is not uploaded, and nothing of it waits in the journal for the next
/// mount to upload.
#[test]
fn a_descriptor_on_a_file_replaced_by_a_rename_keeps_reading_the_file_it_opened() {
    use std::io::Read;
    let cloud = Cloud::start();
    let srv = cloud.files();
    let old = pattern(3 << 20, 31);
    std::fs::write(srv.join("plan.odt"), &old).expect("seed");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    // Opened before any of it is read: read through the mount, not from a cache file.
    let reader = std::fs::File::open(m.path("plan.odt")).expect("open");
    let mut first = vec![0u8; 4096];
    (&reader).read_exact(&mut first).expect("first bytes");
    // An editor saves: a new file written beside it, renamed over it.
    let new = b"the new plan, saved by an editor\n".repeat(100);
    std::fs::write(m.path(".plan.odt.tmp"), &new).expect("write the new file");
    std::fs::rename(m.path(".plan.odt.tmp"), m.path("plan.odt")).expect("rename over");
    // The descriptor keeps the file it opened, as with a local file: its bytes and size.
    let mut all = first;
    (&reader).read_to_end(&mut all).expect("read on");
    assert!(all == old, "the open descriptor reads the replaced file");
    assert_eq!(reader.metadata().expect("fstat").len(), old.len() as u64);
    // The name gives the new file, here and on the server.
    assert!(std::fs::read(m.path("plan.odt")).expect("read the name") == new);
    m.wait_drained();
    wait_server(&srv, "plan.odt", &new);
    drop(reader);
    m.unmount();
}

#[test]
fn a_file_replaced_by_a_rename_while_a_writer_has_it_open_keeps_its_bytes_to_that_writer() {
    use std::io::{Read, Seek, SeekFrom};
    let cloud = Cloud::start();
    let srv = cloud.files();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    let mut w = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(m.path("notes.txt"))
        .expect("create");
    w.write_all(b"draft one").expect("write");
    w.sync_all().expect("fsync");
    // Another program saves over it by a rename while the writer still has it open.
    std::fs::write(m.path("notes.new"), b"the saved notes").expect("write the new file");
    std::fs::rename(m.path("notes.new"), m.path("notes.txt")).expect("rename over");
    // The writer's descriptor keeps its own file, as on a local disk.
    w.write_all(b", and more").expect("write after the rename");
    let mut back = String::new();
    w.seek(SeekFrom::Start(0)).expect("seek");
    w.read_to_string(&mut back).expect("read back");
    assert_eq!(back, "draft one, and more");
    assert_eq!(w.metadata().expect("fstat").len(), 19);
    drop(w);
    // The name is the saved file, here and on the server; the replaced one goes nowhere.
    m.wait_drained();
    wait_server(&srv, "notes.txt", b"the saved notes");
    assert_eq!(
        std::fs::read(m.path("notes.txt")).expect("read the name"),
        b"the saved notes"
    );
    m.unmount();
}

#[test]
fn a_file_deleted_while_open_never_comes_back() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let cache = tempfile::tempdir().expect("tmp");
    let spec = || MountSpec::new(&cloud.url()).cache(cache.path()).args(FAST);
    let m = Mount::new(spec());
    let mut f = std::fs::File::create(m.path("gone.txt")).expect("create");
    f.write_all(b"first").expect("write");
    // Durable before the delete: its journal row is written.
    f.sync_all().expect("fsync");
    std::fs::remove_file(m.path("gone.txt")).expect("unlink while open");
    f.write_all(b" and more, after the delete")
        .expect("write after the delete");
    drop(f);
    std::fs::write(m.path("kept.txt"), b"kept").expect("write");
    m.wait_drained();
    wait_server(&srv, "kept.txt", b"kept");
    assert!(
        !srv.join("gone.txt").exists(),
        "a deleted file was uploaded"
    );
    assert!(!m.path("gone.txt").exists());
    m.unmount();
    // The next mount of the same cache has nothing of it to resume.
    let m = Mount::new(spec());
    m.wait_drained();
    assert!(
        !m.log_text().contains("resuming a pending upload"),
        "{}",
        m.log_text()
    );
    assert!(!srv.join("gone.txt").exists(), "a deleted file came back");
    assert!(!m.path("gone.txt").exists());
    m.unmount();
}

/// The scratch file pattern (`tmpfile()`, `sort`, many programs): made, deleted at once, then
/// written, read back, sized through its descriptor; it stays whole until closed, and nothing
/// of it reaches the server.
#[test]
fn a_scratch_file_deleted_at_once_keeps_what_is_written_until_closed() {
    use std::io::Read;
    let cloud = Cloud::start();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(m.path("scratch.tmp"))
        .expect("create");
    std::fs::remove_file(m.path("scratch.tmp")).expect("unlink at once");
    let data = pattern(3 << 20, 21);
    f.write_all(&data).expect("write");
    // Past the attribute lifetime: the size asked again must still be the handle's.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(f.metadata().expect("fstat").len(), data.len() as u64);
    f.seek(SeekFrom::Start(0)).expect("seek");
    let mut back = Vec::new();
    f.read_to_end(&mut back).expect("read back");
    assert!(
        back == data,
        "read back {} bytes, not what was written",
        back.len()
    );
    f.write_all_at(b"hello", 10).expect("pwrite");
    let mut five = [0u8; 5];
    f.read_exact_at(&mut five, 10).expect("pread");
    assert_eq!(&five, b"hello");
    f.set_len(1000).expect("ftruncate");
    assert_eq!(f.metadata().expect("fstat").len(), 1000);
    f.seek(SeekFrom::Start(0)).expect("seek");
    back.clear();
    f.read_to_end(&mut back).expect("read back");
    assert_eq!(back.len(), 1000);
    assert_eq!(&back[10..15], b"hello");
    drop(f);
    std::fs::write(m.path("kept.txt"), b"kept").expect("write");
    m.wait_drained();
    wait_server(&cloud.files(), "kept.txt", b"kept");
    assert!(!cloud.files().join("scratch.tmp").exists());
    assert!(!m.path("scratch.tmp").exists());
    m.unmount();
}

/// A program that reads a cached file while another writes it (`rsync --inplace` reads the
/// old file as it writes it; `tail -f` of a log being written). While the kernel reads the
/// cache file itself (passthrough) it accepts no other kind of open, so the writer takes
/// that file over as its change: the open goes through at once, every reader sees each
/// write (also past the old end), and the upload does not wait for the readers.
#[test]
fn a_file_read_from_the_cache_can_be_written_at_once_and_its_readers_see_it() {
    let cloud = Cloud::start();
    let data = pattern(2 << 20, 31);
    std::fs::write(cloud.files().join("base.bin"), &data).expect("seed");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    let p = m.path("base.bin");
    assert!(std::fs::read(&p).expect("read through") == data);
    let reader = std::fs::File::open(&p).expect("open for reading");
    let mut head = [0u8; 16];
    reader.read_exact_at(&mut head, 0).expect("read");
    assert_eq!(&head[..], &data[..16]);
    // A writer that changes nothing gives the file back to the cache, and the next one
    // takes it over again.
    let idle = std::fs::OpenOptions::new().write(true).open(&p);
    drop(idle.expect("a writer beside a reader opens at once"));
    let writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .expect("a second writer beside the reader opens at once");
    writer.write_all_at(b"XYZ", 1000).expect("write");
    let mut three = [0u8; 3];
    reader.read_exact_at(&mut three, 1000).expect("read");
    assert_eq!(&three, b"XYZ", "the reader sees the write");
    writer
        .write_all_at(b"TAIL", data.len() as u64)
        .expect("append");
    assert_eq!(
        std::fs::metadata(&p).expect("stat").len(),
        data.len() as u64 + 4,
        "the size grows with a write past the end"
    );
    let mut tail = [0u8; 4];
    reader
        .read_exact_at(&mut tail, data.len() as u64)
        .expect("read past the old end");
    assert_eq!(&tail, b"TAIL");
    // A third program opening it now reads the same.
    let mut want = data;
    want[1000..1003].copy_from_slice(b"XYZ");
    want.extend_from_slice(b"TAIL");
    assert!(std::fs::read(&p).expect("read again") == want);
    drop(writer);
    // The reader is still open: the upload goes on without it.
    wait_server(&cloud.files(), "base.bin", &want);
    reader.read_exact_at(&mut three, 1000).expect("read");
    assert_eq!(&three, b"XYZ");
    drop(reader);
    m.wait_drained();
    assert!(std::fs::read(&p).expect("read after") == want);
    m.unmount();
}

/// Opens `p` for reading, then with `writer` beside that reader: at once, though the kernel
/// reads the cached file itself for the reader (see above).
fn beside_a_reader(
    p: &std::path::Path,
    writer: &std::fs::OpenOptions,
) -> (std::fs::File, std::fs::File) {
    let reader = std::fs::File::open(p).expect("open for reading");
    let w = writer
        .open(p)
        .expect("a writer beside a reader opens at once");
    (reader, w)
}

/// A file taken over by a writer beside its reader (see above), then renamed while both
/// are open, arrives under its new name with what was written before and after; another,
/// deleted while both are open, keeps what is written through them and never reaches the
/// server.
#[test]
fn a_file_taken_over_from_its_readers_follows_renames_and_deletes() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let a = pattern(3 << 20, 41);
    let b = pattern(2 << 20, 42);
    std::fs::write(srv.join("a.bin"), &a).expect("seed");
    std::fs::write(srv.join("b.bin"), &b).expect("seed");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    for name in ["a.bin", "b.bin"] {
        assert!(!std::fs::read(m.path(name))
            .expect("read through")
            .is_empty());
    }
    let (reader, writer) =
        beside_a_reader(&m.path("a.bin"), std::fs::OpenOptions::new().write(true));
    writer.write_all_at(b"HELLO", 10).expect("write");
    std::fs::rename(m.path("a.bin"), m.path("moved.bin")).expect("rename");
    writer
        .write_all_at(b"AFTER", 20)
        .expect("write after the rename");
    let mut got = [0u8; 5];
    reader.read_exact_at(&mut got, 20).expect("read");
    assert_eq!(&got, b"AFTER");
    drop((reader, writer));
    let mut want = a;
    want[10..15].copy_from_slice(b"HELLO");
    want[20..25].copy_from_slice(b"AFTER");
    wait_server(&srv, "moved.bin", &want);
    assert!(!srv.join("a.bin").exists());

    let (reader, writer) =
        beside_a_reader(&m.path("b.bin"), std::fs::OpenOptions::new().write(true));
    std::fs::remove_file(m.path("b.bin")).expect("unlink");
    writer
        .write_all_at(b"GONE!", 30)
        .expect("write after the unlink");
    reader.read_exact_at(&mut got, 30).expect("read");
    assert_eq!(&got, b"GONE!");
    drop((reader, writer));
    m.wait_drained();
    assert!(
        !srv.join("b.bin").exists(),
        "a deleted file never comes back"
    );
    assert!(!m.path("b.bin").exists());
    m.unmount();
}

/// A log written by one program line by line (each line an open, an append and a close) and
/// followed by another (`tail -f`): each writer takes the file over in turn, also after the
/// line before was uploaded, and the follower reads every line as it comes.
#[test]
fn a_log_appended_line_by_line_is_followed_by_a_reader_that_stays_open() {
    let cloud = Cloud::start();
    follow_a_log_appended_line_by_line(&cloud.url(), &cloud.files(), || {});
}

/// The same take-over, emptied by the writer (`O_TRUNC`), then the mount killed before the
/// upload: what was written and closed is in the journal and reaches the server from the
/// next mount.
#[test]
fn a_file_rewritten_while_read_from_the_cache_survives_kill_9() {
    let cloud = Cloud::start();
    let cache = tempfile::tempdir().expect("tmp");
    let data = pattern(3 << 20, 7);
    std::fs::write(cloud.files().join("doc.bin"), &data).expect("seed");
    let m = Mount::new(MountSpec::new(&cloud.url()).cache(cache.path()).args(&[
        "--upload-delay",
        "600",
        "--attr-ttl",
        "1",
        "--dir-ttl",
        "1",
    ]));
    let p = m.path("doc.bin");
    assert!(std::fs::read(&p).expect("read through") == data);
    let new = pattern(100_000, 8);
    let (reader, mut w) =
        beside_a_reader(&p, std::fs::OpenOptions::new().write(true).truncate(true));
    assert_eq!(reader.metadata().expect("fstat").len(), 0, "emptied");
    w.write_all(&new).expect("write");
    drop(w);
    let mut back = vec![0u8; new.len()];
    reader.read_exact_at(&mut back, 0).expect("read");
    assert!(back == new, "the reader sees the new content");
    drop(reader);
    assert_eq!(m.pending(), 1);
    m.kill9();
    assert!(
        server_file_is(&cloud.files(), "doc.bin", &data),
        "not uploaded yet"
    );
    let m = Mount::new(MountSpec::new(&cloud.url()).cache(cache.path()).args(FAST));
    m.wait_drained();
    wait_server(&cloud.files(), "doc.bin", &new);
    assert!(std::fs::read(m.path("doc.bin")).expect("read") == new);
    m.unmount();
}

#[test]
fn kill_9_with_pending_uploads_then_remount_finishes_them() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let cache = tempfile::tempdir().expect("tmp");
    let m = Mount::new(
        MountSpec::new(&cloud.url())
            .cache(cache.path())
            .args(&["--upload-delay", "600"]),
    );
    std::fs::create_dir(m.path("docs")).expect("mkdir");
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            (
                format!("docs/file{i}.bin"),
                pattern(1000 + i * 5000, i as u64),
            )
        })
        .collect();
    for (p, d) in &files {
        std::fs::write(m.path(p), d).expect("write");
    }
    assert_eq!(m.pending(), 20);
    // A file still being written when the mount dies: nothing was promised for it, and its
    // local copy must not stay in the cache folder forever.
    let mut unclosed = std::fs::File::create(m.path("docs/unclosed.bin")).expect("create");
    unclosed
        .write_all(&pattern(300_000, 99))
        .expect("write, not closed");
    m.kill9();
    drop(unclosed);
    for (p, _) in &files {
        assert!(
            !srv.join(p).exists(),
            "nothing was uploaded before the crash"
        );
    }
    // A power cut may also lose file data that was written but never synced: that is the
    // case of small files, whose content is kept in their journal row instead. Emptying their
    // data files stands for it; the remount must restore them from the journal.
    let mut emptied = 0;
    for e in std::fs::read_dir(cache.path().join("dirty")).expect("dirty dir") {
        let p = e.expect("entry").path();
        let len = std::fs::metadata(&p).expect("stat").len();
        if len > 0 && len <= 64 * 1024 {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_len(0))
                .expect("empty a data file");
            emptied += 1;
        }
    }
    assert!(emptied >= 10, "small files were pending: {emptied}");
    // The next mount of the same account resumes and finishes every pending upload.
    let m = Mount::new(MountSpec::new(&cloud.url()).cache(cache.path()).args(FAST));
    m.wait_drained();
    for (p, d) in &files {
        assert!(server_file_is(&srv, p, d), "{p} lost");
    }
    let left: Vec<_> = std::fs::read_dir(cache.path().join("dirty"))
        .expect("dirty dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "local copies left behind: {left:?}");
    m.unmount();
}

/// A killed mount leaves its mount point dead ("Transport endpoint is not connected") until
/// someone unmounts it. Mounting there again clears it (only a dead nuage mount) and takes
/// over what the killed one had not uploaded.
#[test]
fn mounting_again_over_a_killed_mount_clears_it_and_resumes() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let cache = tempfile::tempdir().expect("tmp");
    let mut first = Mount::new(
        MountSpec::new(&cloud.url())
            .cache(cache.path())
            .args(&["--upload-delay", "600"]),
    );
    std::fs::write(first.path("notes.txt"), b"written before the crash").expect("write");
    assert_eq!(first.pending(), 1);
    first.crash();
    let e = std::fs::read_dir(&first.mp).expect_err("a dead mount point");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    let again = Mount::new(
        MountSpec::new(&cloud.url())
            .cache(cache.path())
            .at(&first.mp)
            .args(FAST),
    );
    assert_eq!(
        std::fs::read(again.path("notes.txt")).expect("read"),
        b"written before the crash"
    );
    again.wait_drained();
    assert!(server_file_is(
        &srv,
        "notes.txt",
        b"written before the crash"
    ));
    assert!(
        again
            .log_text()
            .contains("an earlier nuage mount here had died"),
        "{}",
        again.log_text()
    );
    again.unmount();
    drop(first);
}

#[test]
fn an_upload_the_server_already_holds_is_not_a_conflict() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "2"]));
    let body = pattern(30_000, 7);
    std::fs::write(m.path("same.bin"), &body).expect("write");
    // The same bytes reach the server another way first (or our earlier upload did, and its
    // confirmation was lost): the conditional create is refused, yet nothing conflicts.
    std::fs::write(srv.join("same.bin"), &body).expect("w");
    std::fs::write(m.path("other.bin"), b"ours").expect("write");
    std::fs::write(srv.join("other.bin"), b"theirs").expect("w");
    m.wait_drained();
    assert!(server_file_is(&srv, "same.bin", &body));
    let names: Vec<String> = std::fs::read_dir(&srv)
        .expect("ls")
        .map(|e| e.expect("e").file_name().into_string().expect("utf8"))
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("same (conflicted copy ")),
        "identical bytes made a conflict: {names:?}"
    );
    // Different bytes still do.
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("other (conflicted copy ")),
        "{names:?}"
    );
    m.unmount();
}

/// A colleague saves `report.odt` on the server between our write and its upload: the server
/// copy must be kept and ours must arrive beside it, once. Answers the mount and that copy.
fn colleague_saves_before_our_upload(cloud: &Cloud) -> (Mount, String) {
    let srv = cloud.files();
    std::fs::write(srv.join("report.odt"), b"original").expect("w");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&[
        "--upload-delay",
        "2",
        "--attr-ttl",
        "1",
        "--dir-ttl",
        "1",
    ]));
    assert_eq!(
        std::fs::read(m.path("report.odt")).expect("read"),
        b"original"
    );
    std::fs::write(m.path("report.odt"), b"ours").expect("write");
    // Someone else saves on the server before our upload.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(srv.join("report.odt"), b"theirs, newer").expect("w");
    m.wait_drained();
    assert!(
        server_file_is(&srv, "report.odt", b"theirs, newer"),
        "the server copy must be kept"
    );
    let copies: Vec<String> = std::fs::read_dir(&srv)
        .expect("ls")
        .map(|e| e.expect("e").file_name().into_string().expect("utf8"))
        .filter(|n| n.starts_with("report (conflicted copy ") && n.ends_with(").odt"))
        .collect();
    assert_eq!(copies.len(), 1, "one conflicted copy: {copies:?}");
    assert!(server_file_is(&srv, &copies[0], b"ours"));
    let copy = copies[0].clone();
    (m, copy)
}

#[test]
fn a_conflict_keeps_both_copies() {
    let cloud = Cloud::start();
    let (m, copy) = colleague_saves_before_our_upload(&cloud);
    let out = nuage().arg("status").arg(&m.mp).output().expect("status");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("conflicted copy"),
        "conflict reported"
    );
    assert!(
        wait_until(Duration::from_secs(5), || m.path(&copy).exists()),
        "copy visible in the mount"
    );
    m.unmount();
}

#[test]
fn status_right_after_a_save_shows_it_waiting() {
    let cloud = Cloud::start();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "30"]));
    // Let a few snapshots go by, then save and ask at once: one plain `nuage status` call.
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(m.path("lesson.odt"), b"draft").expect("write");
    let out = nuage().arg("status").arg(&m.mp).output().expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pending uploads: 1") && text.contains("/lesson.odt"),
        "the save is not in the status:\n{text}"
    );
    m.kill9();
}

/// `nuage status` without a mount point: this mount's line (other tests' mounts may be
/// listed too).
fn status_line_of(mp: &std::path::Path) -> (Option<String>, String) {
    let text = nuage_ok(&["status"]);
    let start = format!("{}: ", mp.display());
    (
        text.lines()
            .find(|l| l.starts_with(&start))
            .map(str::to_string),
        text,
    )
}

#[test]
fn status_lists_the_mounts_and_a_stopped_one_whose_changes_wait() {
    let cloud = Cloud::start();
    let cache = tempfile::tempdir().expect("tmp");
    let spec = |delay: &str| {
        MountSpec::new(&cloud.url())
            .cache(cache.path())
            .args(&["--upload-delay", delay])
    };
    let m = Mount::new(spec("30"));
    let mp = m.mp.clone();
    std::fs::write(m.path("lesson.odt"), b"draft").expect("write");
    let (line, text) = status_line_of(&mp);
    let line = line.unwrap_or_else(|| panic!("the mount is not listed:\n{text}"));
    assert!(
        line.contains("online") && line.contains("1 change waiting"),
        "{line}"
    );
    // Killed right after one more save, before the uploads: listed as stopped, both changes
    // counted (read from its journal: its last snapshot is older than the second save).
    std::fs::write(m.path("notes.txt"), b"to do").expect("write");
    m.kill9();
    let (line, text) = status_line_of(&mp);
    let line = line.unwrap_or_else(|| panic!("the stopped mount is not listed:\n{text}"));
    assert!(
        line.contains("STOPPED") && line.contains("2 changes waiting"),
        "{line}"
    );
    assert!(text.contains("go up when it is mounted again"), "{text}");
    // Mounted again with its cache (elsewhere): the change goes up, and the stopped mount's
    // line is gone (its cache belongs to the new mount).
    let again = Mount::new(spec("0"));
    again.wait_drained();
    assert!(server_file_is(&cloud.files(), "lesson.odt", b"draft"));
    assert!(server_file_is(&cloud.files(), "notes.txt", b"to do"));
    let (line, _) = status_line_of(&mp);
    assert!(line.is_none(), "{line:?}");
    let (line, text) = status_line_of(&again.mp);
    let line = line.unwrap_or_else(|| panic!("the new mount is not listed:\n{text}"));
    assert!(line.contains("no change waiting"), "{line}");
    again.unmount();
}

#[test]
fn unmount_right_after_a_save_waits_for_its_upload() {
    let cloud = Cloud::start();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "1"]));
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(m.path("minutes.txt"), b"meeting notes").expect("write");
    // `nuage unmount` at once: it must see the save and wait for its upload.
    m.unmount();
    assert!(
        server_file_is(&cloud.files(), "minutes.txt", b"meeting notes"),
        "unmount did not wait for the upload of a file saved just before"
    );
}

#[test]
fn quota_refusal_keeps_the_data_and_fsync_reports_it() {
    let cloud = Cloud::start_with(Some(1 << 20));
    let srv = cloud.files();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    let data = pattern(2 << 20, 3);
    std::fs::write(m.path("too-big.bin"), &data).expect("write lands locally");
    let refused = wait_until(Duration::from_secs(20), || {
        let st = m.status();
        st["uploads"][0]["out_of_quota"] == true
            && st["uploads"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("quota"))
    });
    assert!(refused, "the 507 must be reported in the status");
    assert!(!srv.join("too-big.bin").exists());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("too-big.bin"))
        .expect("reopen");
    let e = f.sync_all().expect_err("fsync must report the quota");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    drop(f);
    assert_eq!(m.pending(), 1, "kept in the journal");
    assert!(
        std::fs::read(m.path("too-big.bin")).expect("read") == data,
        "still readable locally"
    );
    m.kill9();
}

#[test]
fn uploads_survive_a_server_outage() {
    let mut cloud = Cloud::start();
    let srv = cloud.files();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    std::fs::create_dir(m.path("d")).expect("mkdir");
    let port = cloud.port();
    cloud.stop();
    for i in 0..5 {
        std::fs::write(
            m.path(&format!("d/{i}.txt")),
            format!("written offline {i}"),
        )
        .expect("write while down");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(m.pending() == 5, "kept while the server is down");
    cloud.restart(port);
    m.wait_drained();
    for i in 0..5 {
        assert!(server_file_is(
            &srv,
            &format!("d/{i}.txt"),
            format!("written offline {i}").as_bytes()
        ));
    }
    m.unmount();
}

/// A server that lost part of a chunk it acknowledged refuses the assembly (400: the sizes do
/// not add up): the upload starts again with a new session at once (that session would be
/// refused again), and the file arrives whole.
#[test]
fn a_chunked_upload_whose_assembly_is_refused_starts_again() {
    let cloud = Cloud::start();
    let data = pattern(25 << 20, 9);
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    cloud
        .server
        .knobs()
        .truncate_next_chunks
        .store(1, Ordering::SeqCst);
    std::fs::write(m.path("film.mp4"), &data).expect("write");
    let stats = cloud.server.stats().clone();
    // Within the backoff of a second attempt (2 s), not the ten minutes of a refusal.
    assert!(
        wait_until(Duration::from_secs(30), || server_file_is(
            &cloud.files(),
            "film.mp4",
            &data
        )),
        "the file never arrived whole ({} assemblies)",
        stats.chunk_assemblies.load(Ordering::SeqCst)
    );
    m.wait_drained();
    assert_eq!(stats.chunk_assemblies.load(Ordering::SeqCst), 1);
    assert_eq!(
        cloud
            .server
            .knobs()
            .truncate_next_chunks
            .load(Ordering::SeqCst),
        0
    );
    m.unmount();
}

#[test]
fn large_files_use_chunked_upload_and_resume_after_a_kill() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let cache = tempfile::tempdir().expect("tmp");
    let data = pattern(45 << 20, 8);
    let m = Mount::new(MountSpec::new(&cloud.url()).cache(cache.path()).args(FAST));
    // Slow the server down so the upload is still running when we kill the mount.
    cloud.server.knobs().delay_ms.store(700, Ordering::SeqCst);
    let mut f = std::fs::File::create(m.path("video.mp4")).expect("create");
    f.write_all(&data).expect("write");
    f.seek(SeekFrom::Start(0)).expect("seek");
    drop(f);
    let stats = cloud.server.stats().clone();
    assert!(
        wait_until(Duration::from_secs(30), || stats
            .chunks_stored
            .load(Ordering::SeqCst)
            >= 2),
        "chunked upload did not start"
    );
    m.kill9();
    let sent_before = stats.chunk_puts.load(Ordering::SeqCst);
    let stored_before = stats.chunks_stored.load(Ordering::SeqCst);
    let chunks = (data.len() as u64).div_ceil(10 << 20);
    assert!(
        !srv.join("video.mp4").exists(),
        "not assembled before the kill"
    );
    cloud.server.knobs().delay_ms.store(0, Ordering::SeqCst);
    let m = Mount::new(MountSpec::new(&cloud.url()).cache(cache.path()).args(FAST));
    m.wait_drained();
    assert!(
        server_file_is(&srv, "video.mp4", &data),
        "assembled content differs"
    );
    let total = stats.chunk_puts.load(Ordering::SeqCst);
    assert!(
        total - sent_before <= chunks - stored_before,
        "resumed: only the missing chunks are sent ({} after the kill, {} of {chunks} stored before)",
        total - sent_before,
        stored_before
    );
    assert_eq!(stats.chunk_assemblies.load(Ordering::SeqCst), 1);
    assert_eq!(
        cloud.server.stats().file_puts.load(Ordering::SeqCst),
        0,
        "no plain PUT for a large file"
    );
    let parallel = stats.chunk_puts_max_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&parallel),
        "several chunks go up at once, as many as allowed: {parallel}"
    );
    m.unmount();
}

#[test]
fn editor_lock_and_swap_files_stay_local() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    for n in [
        ".~lock.report.odt#",
        "~$report.docx",
        ".notes.txt.swp",
        "notes.txt~",
    ] {
        std::fs::write(m.path(n), b"lock").expect("w");
    }
    std::fs::write(m.path("real.txt"), b"real").expect("w");
    wait_server(&srv, "real.txt", b"real");
    m.wait_drained();
    for n in [
        ".~lock.report.odt#",
        "~$report.docx",
        ".notes.txt.swp",
        "notes.txt~",
    ] {
        assert!(m.path(n).exists(), "{n} visible locally");
        assert!(!srv.join(n).exists(), "{n} must not be uploaded");
    }
    m.unmount();
}

#[test]
fn a_bulk_upload_pass_lists_the_target_folder_once() {
    let cloud = Cloud::start();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "2"]));
    std::fs::create_dir(m.path("class")).expect("mkdir");
    // More files than one bulk request carries, all closed within the upload delay.
    for i in 0..250 {
        std::fs::write(m.path(&format!("class/c{i:03}.txt")), pattern(64, i)).expect("write");
    }
    let stats = cloud.server.stats().clone();
    let propfinds = || {
        stats
            .methods
            .lock()
            .map(|m| m.get("PROPFIND").copied().unwrap_or(0))
            .unwrap_or(0)
    };
    let (listed_before, bulk_before) = (propfinds(), stats.bulk_requests.load(Ordering::SeqCst));
    m.wait_drained();
    let bulk = stats.bulk_requests.load(Ordering::SeqCst) - bulk_before;
    let listings = propfinds() - listed_before;
    assert_eq!(stats.bulk_files.load(Ordering::SeqCst), 250);
    assert!(bulk >= 3, "{bulk} bulk requests for 250 files");
    assert!(
        listings < bulk,
        "{listings} listings for {bulk} bulk requests: the folder is listed once per pass"
    );
    for i in [0u64, 99, 100, 249] {
        assert!(
            server_file_is(
                &cloud.files(),
                &format!("class/c{i:03}.txt"),
                &pattern(64, i)
            ),
            "c{i:03}.txt differs on the server"
        );
    }
    m.unmount();
}

#[test]
fn many_small_new_files_go_up_in_bulk_requests() {
    let cloud = Cloud::start();
    // The pause that starts uploads is longer than any the loop below may take between two
    // files on a loaded machine (0.5 s once sent its first file alone, in a full `cargo test`).
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "2"]));
    std::fs::create_dir(m.path("notes")).expect("mkdir");
    for i in 0..60 {
        std::fs::write(
            m.path(&format!("notes/n{i:02}.txt")),
            pattern(100 + i * 50, i as u64),
        )
        .expect("write");
    }
    let stats = cloud.server.stats().clone();
    let puts_before = stats.file_puts.load(Ordering::SeqCst);
    m.wait_drained();
    for i in 0..60 {
        assert!(
            server_file_is(
                &cloud.files(),
                &format!("notes/n{i:02}.txt"),
                &pattern(100 + i * 50, i as u64)
            ),
            "n{i:02}.txt differs on the server"
        );
    }
    let bulk = stats.bulk_requests.load(Ordering::SeqCst);
    assert!((1..=4).contains(&bulk), "{bulk} bulk requests for 60 files");
    assert_eq!(stats.bulk_files.load(Ordering::SeqCst), 60);
    assert_eq!(
        stats.file_puts.load(Ordering::SeqCst),
        puts_before,
        "no single PUTs"
    );
    // The modification time travelled with each file.
    let local = std::fs::metadata(m.path("notes/n07.txt"))
        .expect("local")
        .modified()
        .expect("mtime");
    let server = std::fs::metadata(cloud.files().join("notes/n07.txt"))
        .expect("server")
        .modified()
        .expect("mtime");
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    assert_eq!(secs(local), secs(server));
    m.unmount();
}

/// On a distant server each upload waits on round trips: many small files go up 8 at once,
/// large ones (which share the bandwidth) at most 4 at once.
#[test]
fn on_a_slow_server_small_files_go_up_eight_at_once_and_large_ones_four() {
    let cloud = Cloud::start();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "0"]));
    std::fs::create_dir(m.path("leçons")).expect("mkdir");
    m.wait_drained();
    let stats = cloud.server.stats().clone();
    // Every request waits 300 ms at the server, as over a long link.
    cloud.server.knobs().delay_ms.store(300, Ordering::SeqCst);
    // Writes the files, waits until all are on the server, and answers the most PUTs the
    // server was answering at once meanwhile.
    let most_at_once = |files: Vec<(String, Vec<u8>)>| {
        stats.file_puts_max_in_flight.store(0, Ordering::SeqCst);
        for (name, data) in &files {
            std::fs::write(m.path(name), data).expect("write");
        }
        m.wait_drained();
        for (name, data) in &files {
            assert!(server_file_is(&cloud.files(), name, data), "{name} differs");
        }
        stats.file_puts_max_in_flight.load(Ordering::SeqCst)
    };
    // Accented names: not for bulk upload, one PUT each.
    let small = (0..24)
        .map(|i| {
            (
                format!("leçons/séance {i:02}.txt"),
                pattern(2000 + i, i as u64),
            )
        })
        .collect();
    let at_once = most_at_once(small);
    assert!(
        (6..=8).contains(&at_once),
        "{at_once} small-file PUTs at once (want up to 8)"
    );
    // Files over 1 MiB (below the chunked-upload size: one PUT each).
    let large = (0..6)
        .map(|i| {
            (
                format!("leçons/vidéo {i}.bin"),
                pattern(1_500_000 + i, 50 + i as u64),
            )
        })
        .collect();
    let at_once = most_at_once(large);
    assert!(
        (2..=4).contains(&at_once),
        "{at_once} large-file PUTs at once (want at most 4)"
    );
    cloud.server.knobs().delay_ms.store(0, Ordering::SeqCst);
    m.unmount();
}

/// A proxy or network portal answering 200 in the server's place (no etag, nothing stored):
/// the file is not taken as uploaded, stays in the journal with the reason, and reaches the
/// server once the real one answers again.
#[test]
fn an_answer_from_a_portal_in_the_servers_place_does_not_count_as_uploaded() {
    let cloud = Cloud::start();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "0"]));
    cloud
        .server
        .knobs()
        .swallow_puts
        .store(true, Ordering::SeqCst);
    let name = "bulletin élève.txt";
    std::fs::write(m.path(name), b"notes du trimestre").expect("write");
    let told = wait_until(Duration::from_secs(20), || {
        m.first_upload_error()
            .is_some_and(|e| e.contains("does not list it"))
    });
    assert!(told, "status must tell why: {}", m.status());
    assert_eq!(m.pending(), 1, "forgotten by the journal");
    assert!(!cloud.files().join(name).exists());
    assert!(
        !m.log_text().contains(&format!("uploaded path=/{name}")),
        "taken as uploaded"
    );
    assert_eq!(
        std::fs::read(m.path(name)).expect("still readable here"),
        b"notes du trimestre"
    );
    cloud
        .server
        .knobs()
        .swallow_puts
        .store(false, Ordering::SeqCst);
    m.wait_drained();
    assert!(server_file_is(&cloud.files(), name, b"notes du trimestre"));
    m.unmount();
}

#[test]
fn uploads_wait_while_a_program_keeps_writing_then_all_go_up() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "0"]));
    std::fs::create_dir(m.path("burst")).expect("mkdir");
    let puts = cloud.server.stats().count("PUT");
    // A program writing a file every 20 ms for about a second: uploads yield to it.
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            (
                format!("burst/f{i:02}.txt"),
                pattern(2000 + i * 10, i as u64),
            )
        })
        .collect();
    for (p, d) in &files {
        std::fs::write(m.path(p), d).expect("write");
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = cloud.server.stats().count("PUT") - puts;
    // (A write stalled past the quiet time by a slow disk may let one through.)
    assert!(
        during <= 2,
        "{during} uploads competed with the writing program"
    );
    // Once it pauses, everything goes up.
    m.wait_drained();
    for (p, d) in &files {
        assert!(server_file_is(&srv, p, d), "{p}");
    }
    m.unmount();
}

/// A small filesystem (tmpfs) for a cache, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallDisk {
    fn new(mib: u64) -> SmallDisk {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("disk");
        std::fs::create_dir(&path).expect("mkdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount");
        assert!(ok.success(), "cannot mount a tmpfs (root needed)");
        SmallDisk { path, _tmp: tmp }
    }

    fn free(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.path)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }

    /// Fills what is left with a file of its own (as another program would).
    fn fill(&self) -> std::path::PathBuf {
        let p = self.path.join("filler");
        let mut f = std::fs::File::create(&p).expect("filler");
        let chunk = vec![1u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..4096]).is_ok() {}
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_small_or_full_cache_disk_keeps_reads_and_writes_working() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let big = pattern(96 << 20, 5);
    std::fs::write(srv.join("big.bin"), &big).expect("w");
    std::fs::write(srv.join("second.bin"), pattern(12 << 20, 6)).expect("w");
    let disk = SmallDisk::new(48);
    let m = Mount::new(
        MountSpec::new(&cloud.url())
            .args(FAST)
            .cache(&disk.path.join("cache")),
    );
    // A file twice the size of the cache's disk reads whole, and the cache leaves room.
    assert!(std::fs::read(m.path("big.bin")).expect("read") == big);
    assert!(
        disk.free() >= 8 << 20,
        "the cache filled its disk: {} bytes left",
        disk.free()
    );
    // A save as large as most of what is left fits: cached copies make room.
    let w = pattern(24 << 20, 7);
    std::fs::write(m.path("saved.bin"), &w).expect("a save must find room");
    wait_server(&srv, "saved.bin", &w);
    // Another program fills the disk: reads go on (server and memory), a save still fits.
    let filler = disk.fill();
    assert!(
        std::fs::read(m.path("second.bin")).expect("read with a full disk") == pattern(12 << 20, 6)
    );
    std::fs::write(m.path("note.txt"), b"saved on a full disk").expect("save on a full disk");
    wait_server(&srv, "note.txt", b"saved on a full disk");
    std::fs::remove_file(filler).expect("rm filler");
    m.unmount();
}

/// The same once the cache's index has recorded the downloaded blocks (it does every two
/// seconds): then recording their eviction needs room on the disk, which a save filled to
/// the last byte. The room the cache sets aside for this lets it.
#[test]
fn a_save_that_fills_the_cache_disk_evicts_blocks_recorded_in_the_index() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let film = pattern(40 << 20, 8);
    std::fs::write(srv.join("film.bin"), &film).expect("w");
    let disk = SmallDisk::new(48);
    let m = Mount::new(
        MountSpec::new(&cloud.url())
            .args(FAST)
            .cache(&disk.path.join("cache")),
    );
    assert!(std::fs::read(m.path("film.bin")).expect("read") == film);
    // Two flushes of the cache's index.
    std::thread::sleep(Duration::from_millis(4500));
    let w = pattern(26 << 20, 9);
    std::fs::write(m.path("copie.bin"), &w).expect("a save must find room");
    wait_server(&srv, "copie.bin", &w);
    m.unmount();
}

#[test]
fn many_pending_files_hold_no_descriptors() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let cache = tempfile::tempdir().expect("tmp");
    // Uploads wait: every file stays pending, as behind a slow server.
    let m = Mount::new(
        MountSpec::new(&cloud.url())
            .args(&["--upload-delay", "600"])
            .cache(cache.path()),
    );
    let before = m.open_fds();
    std::fs::create_dir(m.path("many")).expect("mkdir");
    let n = 600;
    for i in 0..n {
        std::fs::write(m.path(&format!("many/f{i}.txt")), format!("file {i}")).expect("w");
    }
    for i in (0..n).step_by(7) {
        assert_eq!(
            std::fs::read(m.path(&format!("many/f{i}.txt"))).expect("r"),
            format!("file {i}").as_bytes()
        );
    }
    let held = m.open_fds();
    assert!(
        held < before + 100,
        "{n} pending files hold {} descriptors (from {before})",
        held
    );
    m.unmount_now();
    // The next mount resumes them without opening them all, and uploads them.
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST).cache(cache.path()));
    let at_start = m.open_fds();
    assert!(
        at_start < before + 100,
        "resuming opened {at_start} descriptors"
    );
    m.wait_drained();
    for i in 0..n {
        wait_server(
            &srv,
            &format!("many/f{i}.txt"),
            format!("file {i}").as_bytes(),
        );
    }
    m.unmount();
}

#[test]
fn a_file_whose_folder_was_deleted_on_the_server_meanwhile_still_arrives() {
    let cloud = Cloud::start();
    std::fs::create_dir_all(cloud.files().join("Partage/Cours")).expect("mkdir");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&["--upload-delay", "1.5"]));
    let small = b"devoir a rendre".to_vec();
    let large = pattern(200_000, 12);
    std::fs::write(m.path("Partage/Cours/devoir.txt"), &small).expect("write");
    std::fs::write(m.path("Partage/Cours/annexe.bin"), &large).expect("write");
    // A colleague deletes the whole folder before the uploads start.
    std::fs::remove_dir_all(cloud.files().join("Partage")).expect("rm");
    // The folders are made again and both files arrive (the small one after a refused bulk
    // upload, the other through its own PUT).
    wait_server(&cloud.files(), "Partage/Cours/devoir.txt", &small);
    wait_server(&cloud.files(), "Partage/Cours/annexe.bin", &large);
    m.wait_drained();
    m.unmount();
}

#[test]
fn without_file_etags_a_colleagues_newer_copy_is_still_kept() {
    // A server that gives no etag for files: an upload cannot be made conditional on the
    // version it replaces, so nuage looks at the server copy (size, time) first.
    let cloud = Cloud::start();
    cloud
        .server
        .knobs()
        .no_file_etags
        .store(true, Ordering::SeqCst);
    let (m, _) = colleague_saves_before_our_upload(&cloud);
    let srv = cloud.files();
    // An unchanged server copy is simply replaced.
    std::fs::write(m.path("notes.txt"), b"v1").expect("write");
    m.wait_drained();
    std::fs::write(m.path("notes.txt"), b"v2, longer").expect("write");
    m.wait_drained();
    assert!(server_file_is(&srv, "notes.txt", b"v2, longer"));
    assert_eq!(
        std::fs::read_dir(&srv)
            .expect("ls")
            .filter(|e| e
                .as_ref()
                .map(|e| e.file_name().to_string_lossy().starts_with("notes ("))
                .unwrap_or(false))
            .count(),
        0,
        "a conflict where there was none"
    );
    m.unmount();
}

/// The answer of the fake server to one WebDAV request of the test user (through curl, the
/// password on its standard input): status code and body.
fn dav_request(cloud: &Cloud, method: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let url = format!(
        "{}/remote.php/dav/files/{USER_ID}/{}",
        cloud.url(),
        path.replace(' ', "%20")
    );
    let mut c = std::process::Command::new("curl");
    c.args([
        "-s",
        "--max-time",
        "10",
        "-K",
        "-",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ])
    .args(extra)
    .arg(&url);
    let out = run_bounded_input(
        c,
        Some(&format!("user = \"{USER}:{PASSWORD}\"\n")),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl printed a status");
    (code.trim().parse().expect("status code"), body.to_string())
}

#[test]
fn a_share_received_read_only_refuses_changes_at_once_and_an_editable_one_takes_them() {
    use std::os::unix::fs::PermissionsExt;
    let cloud = Cloud::start();
    let srv = cloud.files();
    std::fs::create_dir_all(srv.join("De Paul/sub")).expect("mkdir");
    std::fs::write(srv.join("De Paul/cours.odt"), b"cours v1").expect("w");
    std::fs::create_dir(srv.join("Avec Claire")).expect("mkdir");
    std::fs::write(srv.join("Avec Claire/notes.txt"), b"notes v1").expect("w");
    cloud.server.receive_share("/De Paul", 1);
    cloud.server.receive_share("/Avec Claire", 15);

    // The server, asked directly, lists and refuses as the protocol reference says (§2.3,
    // 403 without the letter).
    let (code, body) = dav_request(&cloud, "PROPFIND", "De Paul/", &["-H", "Depth: 1"]);
    assert_eq!(code, 207);
    assert!(
        body.contains("<oc:permissions>SGDNV</oc:permissions>"),
        "{body}"
    );
    assert!(
        body.contains("<oc:permissions>SG</oc:permissions>"),
        "{body}"
    );
    for (method, path) in [
        ("PUT", "De Paul/new.txt"),
        ("PUT", "De Paul/cours.odt"),
        ("DELETE", "De Paul/cours.odt"),
        ("MKCOL", "De Paul/dir"),
    ] {
        assert_eq!(
            dav_request(&cloud, method, path, &[]).0,
            403,
            "{method} {path}"
        );
    }
    assert_eq!(
        dav_request(&cloud, "PUT", "Avec Claire/direct.txt", &[]).0,
        201
    );
    std::fs::remove_file(srv.join("Avec Claire/direct.txt")).expect("rm");

    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    let mode = |p: &str| {
        std::fs::metadata(m.path(p))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("De Paul"), 0o555);
    assert_eq!(mode("De Paul/cours.odt"), 0o444);
    assert_eq!(mode("Avec Claire/notes.txt"), 0o644);

    // Refused at once with EACCES, even for root (whom the kernel lets past the modes): a
    // change accepted here would only be refused at upload.
    let refused = |what: &str, r: std::io::Result<()>| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{what}: {e}");
    };
    refused(
        "write",
        std::fs::OpenOptions::new()
            .write(true)
            .open(m.path("De Paul/cours.odt"))
            .map(drop),
    );
    refused(
        "truncate",
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.path("De Paul/cours.odt"))
            .map(drop),
    );
    refused("create", std::fs::write(m.path("De Paul/new.txt"), b"x"));
    refused("mkdir", std::fs::create_dir(m.path("De Paul/dir")));
    refused("unlink", std::fs::remove_file(m.path("De Paul/cours.odt")));
    refused("rmdir", std::fs::remove_dir(m.path("De Paul/sub")));
    refused(
        "rename",
        std::fs::rename(m.path("De Paul/cours.odt"), m.path("De Paul/autre.odt")),
    );
    refused(
        "move out",
        std::fs::rename(m.path("De Paul/cours.odt"), m.path("cours.odt")),
    );
    refused(
        "move in",
        std::fs::rename(m.path("Avec Claire/notes.txt"), m.path("De Paul/notes.txt")),
    );
    assert_eq!(
        std::fs::read(m.path("De Paul/cours.odt")).expect("read"),
        b"cours v1"
    );
    // An office suite's lock file stays here: allowed, as it never goes to the server.
    let lock = m.path("De Paul/.~lock.cours.odt#");
    std::fs::write(&lock, b"me,here").expect("lock file in a read-only share");
    std::fs::remove_file(&lock).expect("lock file removed");
    assert_eq!(
        m.pending(),
        0,
        "nothing waits for an upload the server would refuse"
    );

    // The editable share takes changes, new files and renames.
    std::fs::write(m.path("Avec Claire/notes.txt"), b"notes v2").expect("write");
    std::fs::write(m.path("Avec Claire/ajout.txt"), b"ajout").expect("create");
    std::fs::create_dir(m.path("Avec Claire/dossier")).expect("mkdir");
    std::fs::rename(
        m.path("Avec Claire/ajout.txt"),
        m.path("Avec Claire/dossier/ajout.txt"),
    )
    .expect("rename");
    wait_server(&srv, "Avec Claire/notes.txt", b"notes v2");
    wait_server(&srv, "Avec Claire/dossier/ajout.txt", b"ajout");
    m.wait_drained();
    assert!(server_file_is(&srv, "De Paul/cours.odt", b"cours v1"));
    assert!(!srv.join("De Paul/new.txt").exists());
    assert!(!srv.join("De Paul/dir").exists());
    m.unmount();
}

#[test]
fn chmod_x_is_kept_on_this_device_so_a_script_runs_from_the_mount() {
    use std::os::unix::fs::PermissionsExt;
    let cloud = Cloud::start();
    let cache = tempfile::tempdir().expect("tmp");
    let spec = || MountSpec::new(&cloud.url()).args(FAST).cache(cache.path());
    let m = Mount::new(spec());
    let script = m.path("outils/bonjour.sh");
    std::fs::create_dir(m.path("outils")).expect("mkdir");
    std::fs::write(&script, "#!/bin/sh\necho bonjour depuis le cloud\n").expect("write");
    let run = |p: &std::path::Path| {
        std::process::Command::new(p)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&script), 0o644);
    let e = run(&script).expect_err("not executable yet");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod +x");
    assert_eq!(mode(&script), 0o755);
    assert_eq!(run(&script).expect("run"), "bonjour depuis le cloud\n");
    // It follows renames of the file and of its folder, and survives a remount.
    std::fs::rename(&script, m.path("outils/salut.sh")).expect("rename");
    std::fs::rename(m.path("outils"), m.path("scripts")).expect("rename folder");
    m.wait_drained();
    m.unmount();
    let m = Mount::new(spec());
    let script = m.path("scripts/salut.sh");
    assert_eq!(mode(&script), 0o755);
    assert_eq!(
        run(&script).expect("run after remount"),
        "bonjour depuis le cloud\n"
    );
    // The server has the content (no server stores modes).
    wait_server(
        &cloud.files(),
        "scripts/salut.sh",
        b"#!/bin/sh\necho bonjour depuis le cloud\n",
    );
    // chmod -x takes it away; a new file of a deleted one's name does not inherit it.
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod -x");
    assert_eq!(mode(&script), 0o644);
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).expect("chmod +x");
    std::fs::remove_file(&script).expect("rm");
    std::fs::write(&script, "#!/bin/sh\necho autre\n").expect("write again");
    assert_eq!(mode(&script), 0o644);
    // A program that creates its file executable (a compiler, `cp` of a script) needs no chmod.
    let made = m.path("scripts/compile.sh");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&made)
            .expect("create 0755");
        f.write_all(b"#!/bin/sh\necho compile\n").expect("write");
    }
    assert_eq!(mode(&made), 0o755);
    assert_eq!(run(&made).expect("run a file made executable"), "compile\n");
    m.unmount();
}

/// `mknod` makes regular files (Python's `os.mknod`, some archivers); pipes, sockets and
/// devices have no place on a WebDAV server and are refused with `EPERM`, not "function not
/// implemented".
#[test]
fn mknod_makes_regular_files_and_refuses_pipes() {
    use std::os::unix::ffi::OsStrExt;
    let cloud = Cloud::start();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    let mknod = |name: &str, mode: libc::mode_t| {
        let p = std::ffi::CString::new(m.path(name).as_os_str().as_bytes()).expect("path");
        // SAFETY: mknod(2) with a valid NUL-terminated path.
        let rc = unsafe { libc::mknod(p.as_ptr(), mode, 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error())
        }
    };
    assert_eq!(mknod("vide.txt", libc::S_IFREG | 0o644), Ok(()));
    let md = std::fs::metadata(m.path("vide.txt")).expect("stat");
    assert!(md.is_file() && md.len() == 0, "{md:?}");
    for (name, kind) in [("tube", libc::S_IFIFO), ("prise", libc::S_IFSOCK)] {
        assert_eq!(mknod(name, kind | 0o644), Err(Some(libc::EPERM)), "{name}");
        assert!(!m.path(name).exists(), "{name}");
    }
    wait_server(&cloud.files(), "vide.txt", b"");
    m.unmount();
}

/// `fallocate()`: the server reserves no room ahead, so what a program can see is done (a
/// file made longer reads zeros there; a punched hole or a zeroed range reads zeros); modes
/// that move bytes are refused with `EOPNOTSUPP`. util-linux's `fallocate -l` works too (it
/// got "Operation not supported" and left an empty file).
#[test]
fn fallocate_extends_zeroes_and_punches_what_programs_see() {
    use std::os::fd::AsRawFd;
    let apache = Apache::start();
    let m = Mount::new(MountSpec::new(&apache.url()).args(FAST));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("réservé.bin"))
        .expect("create");
    f.write_all_at(&[7u8; 10_000], 0).expect("write");
    let falloc = |mode: i32, off: i64, len: i64| {
        // SAFETY: fallocate(2) on a descriptor owned by `f`, alive for the call.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error())
        }
    };
    let mut want = vec![7u8; 10_000];
    // Longer: zeros after the old end.
    assert_eq!(falloc(0, 5_000, 15_000), Ok(()));
    want.resize(20_000, 0);
    // Room reserved past the end, size kept.
    assert_eq!(falloc(libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 20), Ok(()));
    // A hole punched in the middle.
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    assert_eq!(falloc(punch, 1_000, 2_000), Ok(()));
    want[1_000..3_000].fill(0);
    // A zeroed range past the end makes the file longer.
    assert_eq!(falloc(libc::FALLOC_FL_ZERO_RANGE, 8_000, 14_000), Ok(()));
    want[8_000..10_000].fill(0);
    want.resize(22_000, 0);
    assert_eq!(
        falloc(libc::FALLOC_FL_COLLAPSE_RANGE, 0, 4096),
        Err(Some(libc::EOPNOTSUPP))
    );
    assert_eq!(f.metadata().expect("stat").len(), 22_000);
    let mut got = vec![0u8; 22_000];
    f.read_exact_at(&mut got, 0).expect("read back");
    assert!(got == want, "the file reads wrong after fallocate");
    drop(f);
    let out = std::process::Command::new("fallocate")
        .args(["-l", "3M"])
        .arg(m.path("image.bin"))
        .output()
        .expect("fallocate");
    assert_succeeded(&out);
    assert_eq!(
        std::fs::metadata(m.path("image.bin")).expect("stat").len(),
        3 << 20
    );
    wait_server(&apache.data(), "réservé.bin", &want);
    wait_server(&apache.data(), "image.bin", &vec![0u8; 3 << 20]);
    m.unmount();
}

/// Large files go up in chunks; through connections that break 20 ms to 1.5 s after they
/// open (a chunk cut short, an answer lost, the assembly's answer lost), each file still
/// arrives whole, once, with no conflict copy. (A 10 MiB chunk must fit in a connection's
/// life: with 300 ms it did not on a slow run of the relay.)
#[test]
fn large_files_arrive_whole_through_connections_that_keep_breaking() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let relay = Relay::start(cloud.port());
    let m = Mount::new(MountSpec::new(&relay.url()).args(FAST));
    relay.set(RelayMode::Breaking {
        seed: 20261207,
        span_ms: 1500,
    });
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("film-{i}.mp4"),
                pattern((25 << 20) + i * 4099, 40 + i as u64),
            )
        })
        .collect();
    for (name, data) in &files {
        std::fs::write(m.path(name), data).expect("write");
    }
    // Written again while its first upload may be under way.
    let (name, data) = &files[0];
    let mut again = data.clone();
    again[7 << 20..(7 << 20) + 5].copy_from_slice(b"again");
    std::fs::write(m.path(name), &again).expect("rewrite");
    m.wait_drained();
    eprintln!("{} connections cut", relay.cuts());
    assert!(relay.cuts() > 0, "no connection was cut");
    assert_eq!(std::fs::read(srv.join(name)).expect("on the server"), again);
    for (name, data) in &files[1..] {
        assert!(
            std::fs::read(srv.join(name)).expect("on the server") == *data,
            "{name} differs on the server"
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(&srv)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".fake-upload-"))
        .collect();
    names.sort();
    assert_eq!(names, ["film-0.mp4", "film-1.mp4", "film-2.mp4"]);
    m.unmount();
}

/// Someone cleans up the cache folder under a live mount (`rm -rf ~/.cache/nuage`): what is
/// on the server still reads, a new save is refused (`EIO`, nothing is promised that could
/// not be kept) with a log line that says what happened and what to do, the mount does not
/// make the folder again behind the user's back, and the next mount works as usual.
#[test]
fn a_cache_folder_removed_under_the_mount_refuses_new_saves_clearly() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    std::fs::write(srv.join("cours.txt"), b"sur le serveur").expect("seed");
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("cache");
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST).cache(&cache));
    assert!(m.path("cours.txt").exists());
    std::fs::remove_dir_all(&cache).expect("rm -rf the cache");
    assert_eq!(
        std::fs::read(m.path("cours.txt")).expect("read"),
        b"sur le serveur"
    );
    let e = std::fs::write(m.path("nouveau.txt"), b"x").expect_err("a save without a journal");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(
        wait_until(Duration::from_secs(5), || m
            .log_text()
            .contains("was removed while mounted (unmount and mount again)")),
        "{}",
        m.log_text()
    );
    // Its snapshots (every second) do not bring the folder back.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !cache.exists(),
        "the mount made its removed cache folder again"
    );
    m.unmount();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST).cache(&cache));
    std::fs::write(m.path("nouveau.txt"), b"x").expect("save after a new mount");
    wait_server(&srv, "nouveau.txt", b"x");
    m.unmount();
}

/// In a desktop session, what a person must know without looking shows as a desktop
/// notification, each once: saves the server refuses for quota, and a conflict (both copies
/// kept). Seen on a private session bus by `dbus-monitor`, as the freedesktop notification
/// service receives it.
#[test]
fn the_desktop_is_told_once_of_a_full_cloud_and_of_a_conflict() {
    let watch = NotificationWatch::start();
    let told = || watch.seen();
    let cloud = Cloud::start_with(Some(1 << 20));
    let srv = cloud.files();
    std::fs::write(srv.join("report.odt"), b"original").expect("w");
    let m = Mount::new(
        MountSpec::new(&cloud.url())
            .args(&["--upload-delay", "1", "--attr-ttl", "1", "--dir-ttl", "1"])
            .env("DBUS_SESSION_BUS_ADDRESS", &watch.bus.address),
    );
    std::fs::write(m.path("too-big.bin"), pattern(2 << 20, 3)).expect("write lands locally");
    assert!(
        watch.wait_for("nuage: the cloud is full"),
        "no notification of the quota; the bus saw:\n{}",
        told()
    );
    assert!(told().contains("string \"1 file could not be saved to "));

    // A colleague saves the document on the server while our save of it waits.
    assert_eq!(
        std::fs::read(m.path("report.odt")).expect("read"),
        b"original"
    );
    std::fs::write(m.path("report.odt"), b"ours").expect("write");
    std::fs::write(srv.join("report.odt"), b"theirs, newer").expect("w");
    let ours = m.path("report.odt").display().to_string();
    assert!(
        watch.wait_for("nuage: both copies kept"),
        "no notification of the conflict; the bus saw:\n{}",
        told()
    );
    assert!(told().contains(&ours), "names the file: {}", told());
    assert!(told().contains("conflicted copy"), "{}", told());

    // Told once each, though the quota refusal goes on.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(watch.count(), 2, "{}", told());
    m.kill9();
}

/// A server in maintenance that says when to come back (`Retry-After`, as Nextcloud's main
/// entry point and gateways send, nextcloud-protocol.md §14.5): a save is not sent again
/// before then (it would be after 2 s otherwise), and arrives once the server is back.
#[test]
fn a_server_asking_to_be_left_alone_a_while_is() {
    let cloud = Cloud::start();
    let knobs = cloud.server.knobs();
    let stats = cloud.server.stats().clone();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    knobs.maintenance_retry_after.store(6, Ordering::SeqCst);
    knobs.maintenance.store(true, Ordering::SeqCst);
    let sends = || stats.count("PUT") + stats.count("POST");
    let before = sends();
    std::fs::write(m.path("bulletin.odt"), b"notes du trimestre").expect("write");
    assert!(
        wait_until(Duration::from_secs(10), || sends() > before),
        "the save was never tried"
    );
    let refused_at = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        sends(),
        before + 1,
        "sent again before the 6 s the server asked for"
    );
    knobs.maintenance.store(false, Ordering::SeqCst);
    m.wait_drained();
    assert!(server_file_is(
        &cloud.files(),
        "bulletin.odt",
        b"notes du trimestre"
    ));
    assert!(
        refused_at.elapsed() >= Duration::from_secs(5),
        "sent again after {:?}",
        refused_at.elapsed()
    );
    m.unmount();
}

/// A proxy in front of the server that refuses large request bodies (413 and an HTML page;
/// nginx's default limit is 1 MiB, nextcloud-protocol.md §14.4): saves go up in smaller
/// chunks instead of waiting for the server's configuration to change.
#[test]
fn saves_a_proxy_refuses_as_too_large_go_up_in_smaller_chunks() {
    let cloud = Cloud::start();
    cloud
        .server
        .knobs()
        .max_body
        .store(3 << 20, Ordering::SeqCst);
    let m = Mount::new(MountSpec::new(&cloud.url()).args(FAST));
    // Chunked (10 MiB chunks), and one PUT: both refused at first.
    let big = pattern(12 << 20, 4);
    let mid = pattern(5 << 20, 6);
    std::fs::write(m.path("film.mkv"), &big).expect("write");
    std::fs::write(m.path("diaporama.odp"), &mid).expect("write");
    // Small new files, sent together in a bulk request larger than the limit.
    std::fs::create_dir(m.path("photos")).expect("mkdir");
    let photo = |i: u8| pattern(200 << 10, u64::from(i));
    for i in 0..30u8 {
        std::fs::write(m.path(&format!("photos/{i}.jpg")), photo(i)).expect("write");
    }
    m.wait_drained();
    assert!(server_file_is(&cloud.files(), "film.mkv", &big));
    assert!(server_file_is(&cloud.files(), "diaporama.odp", &mid));
    for i in 0..30u8 {
        assert!(server_file_is(
            &cloud.files(),
            &format!("photos/{i}.jpg"),
            &photo(i)
        ));
    }
    m.unmount();
}
