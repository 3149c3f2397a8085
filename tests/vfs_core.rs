//! The core (`Vfs`) in-process against the FakeNextcloud server: request deduplication,
//! read-ahead and the cost of opening, measured by the server's own counters.

mod common;

use common::*;
use nuage::cache::BlockCache;
use nuage::vfs::{Ino, Vfs, VfsConfig};
use nuage::webdav::{Credentials, DavClient, DavConfig, Secret};
use std::sync::Arc;

fn vfs_for(cloud: &Cloud, cache_dir: &std::path::Path) -> Arc<Vfs> {
    vfs_with(cloud, cache_dir, VfsConfig::default())
}

fn vfs_with(cloud: &Cloud, cache_dir: &std::path::Path, vcfg: VfsConfig) -> Arc<Vfs> {
    let cfg = DavConfig::default();
    let http = nuage::webdav::http_client(&cfg).expect("client");
    let root = reqwest::Url::parse(&cloud.server.dav_url()).expect("url");
    let dav = DavClient::new(
        http,
        root,
        Some(Credentials {
            user: USER.into(),
            password: Secret::new(PASSWORD),
        }),
        &cfg,
    );
    let cache = Arc::new(BlockCache::open(cache_dir, 1 << 20, 1 << 30).expect("cache"));
    let wb = nuage::writeback::WriteBackConfig {
        dir: cache_dir.to_path_buf(),
        upload_delay: std::time::Duration::from_millis(100),
        parallel: 2,
        chunk_threshold: 10 << 20,
        chunk_size: 10 << 20,
        chunk_parallel: 3,
        identity: cloud.server.dav_url(),
    };
    cloud
        .runtime()
        .block_on(Vfs::new(dav, cache, vcfg, wb, false))
        .expect("vfs")
}

#[test]
fn two_readers_of_one_block_cause_one_request() {
    let cloud = Cloud::start();
    write_big(&cloud.files().join("f.bin"), 4 << 20, 1);
    let tmp = tempfile::tempdir().expect("tmp");
    let vfs = vfs_for(&cloud, tmp.path());
    let rt = cloud.runtime();
    let attr = rt.block_on(vfs.lookup(Ino::ROOT, "f.bin")).expect("lookup");
    let gets = cloud.server.stats().count("GET");
    let before = cloud.get_bytes();
    // Open downloads nothing.
    let a = rt.block_on(vfs.open(attr.ino, false, false)).expect("open");
    let b = rt.block_on(vfs.open(attr.ino, false, false)).expect("open");
    assert_eq!(cloud.server.stats().count("GET"), gets);
    // Two random (non-sequential) reads of the same block, at the same time.
    let (v1, v2) = (vfs.clone(), vfs.clone());
    let (r1, r2) = rt.block_on(async move {
        tokio::join!(
            v1.read(a.fh, (2 << 20) + 100, 4096),
            v2.read(b.fh, (2 << 20) + 5000, 4096)
        )
    });
    let src = std::fs::read(cloud.files().join("f.bin")).expect("read");
    assert_eq!(r1.expect("r1")[..], src[(2 << 20) + 100..(2 << 20) + 4196]);
    assert_eq!(r2.expect("r2")[..], src[(2 << 20) + 5000..(2 << 20) + 9096]);
    assert_eq!(
        cloud.server.stats().count("GET") - gets,
        1,
        "one GET for one block"
    );
    assert_eq!(
        cloud.get_bytes() - before,
        1 << 20,
        "exactly one block sent"
    );
}

#[test]
fn sequential_reads_prefetch_and_random_reads_do_not() {
    let cloud = Cloud::start();
    write_big(&cloud.files().join("seq.bin"), 64 << 20, 2);
    write_big(&cloud.files().join("rnd.bin"), 64 << 20, 3);
    let tmp = tempfile::tempdir().expect("tmp");
    let vfs = vfs_for(&cloud, tmp.path());
    let rt = cloud.runtime();

    let attr = rt
        .block_on(vfs.lookup(Ino::ROOT, "rnd.bin"))
        .expect("lookup");
    let h = rt.block_on(vfs.open(attr.ino, false, false)).expect("open");
    let before = cloud.get_bytes();
    for i in [50u64, 3, 40, 17, 29, 8, 61, 22] {
        rt.block_on(vfs.read(h.fh, i << 20, 4096)).expect("read");
    }
    assert_eq!(
        cloud.get_bytes() - before,
        8 << 20,
        "random reads fetch only their blocks"
    );

    let attr = rt
        .block_on(vfs.lookup(Ino::ROOT, "seq.bin"))
        .expect("lookup");
    let h = rt.block_on(vfs.open(attr.ino, false, false)).expect("open");
    let before = cloud.get_bytes();
    let mut off = 0u64;
    while off < 4 << 20 {
        let d = rt.block_on(vfs.read(h.fh, off, 128 * 1024)).expect("read");
        assert_eq!(d.len(), 128 * 1024);
        off += d.len() as u64;
    }
    // The read-ahead runs in the background; wait (bounded) for it to land.
    let grown = wait_until(std::time::Duration::from_secs(10), || {
        cloud.get_bytes() - before > 4 << 20
    });
    assert!(
        grown,
        "sequential reads must read ahead ({} bytes)",
        cloud.get_bytes() - before
    );
}

#[test]
fn block_index_survives_a_restart_only_for_flushed_blocks() {
    let cloud = Cloud::start();
    std::fs::write(cloud.files().join("a.txt"), b"abc").expect("w");
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let vfs = vfs_for(&cloud, tmp.path());
        let rt = cloud.runtime();
        let attr = rt.block_on(vfs.lookup(Ino::ROOT, "a.txt")).expect("lookup");
        let h = rt.block_on(vfs.open(attr.ino, false, false)).expect("open");
        assert_eq!(
            &rt.block_on(vfs.read(h.fh, 0, 10)).expect("read")[..],
            b"abc"
        );
        rt.block_on(vfs.flush_cache()).expect("flush");
    }
    let vfs = vfs_for(&cloud, tmp.path());
    let rt = cloud.runtime();
    let before = cloud.get_bytes();
    let attr = rt.block_on(vfs.lookup(Ino::ROOT, "a.txt")).expect("lookup");
    let h = rt.block_on(vfs.open(attr.ino, false, false)).expect("open");
    assert_eq!(
        &rt.block_on(vfs.read(h.fh, 0, 10)).expect("read")[..],
        b"abc"
    );
    assert_eq!(cloud.get_bytes(), before, "served from the reopened cache");
}

#[test]
fn reads_that_find_their_blocks_in_memory_are_answered_at_once() {
    let cloud = Cloud::start();
    write_big(&cloud.files().join("film.bin"), 48 << 20, 5);
    let expected = std::fs::read(cloud.files().join("film.bin")).expect("read");
    let tmp = tempfile::tempdir().expect("tmp");
    let vfs = vfs_for(&cloud, tmp.path());
    let rt = cloud.runtime();
    let attr = rt
        .block_on(vfs.lookup(Ino::ROOT, "film.bin"))
        .expect("lookup");
    let h = rt.block_on(vfs.open(attr.ino, false, false)).expect("open");
    let _in_runtime = rt.enter();
    // Nothing downloaded yet: not answerable at once, and asking starts nothing.
    assert!(vfs.read_ready(h.fh, 0, 1 << 20).is_none());
    assert_eq!(cloud.get_bytes(), 0);
    let (mut got, mut at_once) = (Vec::with_capacity(expected.len()), 0);
    let chunk = 1u32 << 20;
    while got.len() < expected.len() {
        let off = got.len() as u64;
        let d = match vfs.read_ready(h.fh, off, chunk) {
            Some(d) => {
                at_once += 1;
                d
            }
            None => rt.block_on(vfs.read(h.fh, off, chunk)).expect("read"),
        };
        assert!(!d.is_empty(), "short read at {off}");
        got.extend_from_slice(&d);
        if at_once == 0 {
            // Let the first read-ahead land so that the next reads find their blocks.
            wait_until(std::time::Duration::from_secs(10), || {
                vfs.read_ready(h.fh, got.len() as u64, 1).is_some()
            });
        }
    }
    assert!(got == expected, "bytes differ");
    assert!(
        at_once > 8,
        "only {at_once} reads were answered from memory"
    );
    // Quick answers and waiting ones together downloaded each byte once.
    assert_eq!(cloud.get_bytes(), expected.len() as u64);
}

#[test]
fn a_download_that_breaks_off_or_meets_a_503_is_asked_again() {
    let cloud = Cloud::start();
    write_big(&cloud.files().join("f.bin"), 4 << 20, 8);
    let src = std::fs::read(cloud.files().join("f.bin")).expect("read");
    let tmp = tempfile::tempdir().expect("tmp");
    let vfs = vfs_for(&cloud, tmp.path());
    let rt = cloud.runtime();
    let attr = rt.block_on(vfs.lookup(Ino::ROOT, "f.bin")).expect("lookup");
    let o = rt.block_on(vfs.open(attr.ino, false, false)).expect("open");
    let knobs = cloud.server.knobs().clone();
    let gets = || cloud.server.stats().count("GET");
    use std::sync::atomic::Ordering::SeqCst;

    // The body of the first GET stops halfway and its connection closes: the read still
    // gets all its bytes, from a second GET.
    knobs.cut_next_gets.store(1, SeqCst);
    let before = gets();
    let got = rt
        .block_on(vfs.read(o.fh, (1 << 20) + 10, 100_000))
        .expect("read after a cut");
    assert!(got[..] == src[(1 << 20) + 10..(1 << 20) + 100_010]);
    assert_eq!(knobs.cut_next_gets.load(SeqCst), 0, "no GET was cut");
    assert!(gets() - before >= 2, "not asked again");

    // 503 once: asked again.
    knobs.fail_next.store(1, SeqCst);
    let got = rt
        .block_on(vfs.read(o.fh, (3 << 20) + 7, 5000))
        .expect("read after a 503");
    assert!(got[..] == src[(3 << 20) + 7..(3 << 20) + 5007]);
    assert_eq!(knobs.fail_next.load(SeqCst), 0);

    // A server that keeps failing: an error, after three attempts (a new handle, whose
    // first read is a lone block: one GET each time).
    let o2 = rt.block_on(vfs.open(attr.ino, false, false)).expect("open");
    knobs.fail_next.store(100, SeqCst);
    let t = std::time::Instant::now();
    let e = rt
        .block_on(vfs.read(o2.fh, (2 << 20) + 5, 4096))
        .expect_err("a failing server");
    assert!(e.to_string().contains("503"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(100 - knobs.fail_next.load(SeqCst), 3, "attempts");
    knobs.fail_next.store(0, SeqCst);
}

#[test]
fn a_file_opened_again_while_fresh_is_opened_without_waiting() {
    let cloud = Cloud::start();
    let path = cloud.files().join("small.txt");
    std::fs::write(&path, b"first content").expect("seed");
    let tmp = tempfile::tempdir().expect("tmp");
    let ttl = std::time::Duration::from_millis(400);
    let vcfg = VfsConfig {
        attr_ttl: ttl,
        dir_ttl: ttl,
        ..VfsConfig::default()
    };
    let vfs = vfs_with(&cloud, tmp.path(), vcfg);
    let rt = cloud.runtime();
    let attr = rt
        .block_on(vfs.lookup(Ino::ROOT, "small.txt"))
        .expect("lookup");
    // Listed a moment ago, never opened: its content version is registered on the spot.
    let gets = cloud.server.stats().count("GET");
    let o = vfs
        .open_quick(attr.ino, false, false)
        .expect("a fresh file is opened without waiting")
        .expect("opened");
    let data = rt.block_on(vfs.read(o.fh, 0, 100)).expect("read");
    assert_eq!(&data[..], b"first content");
    assert_eq!(cloud.server.stats().count("GET") - gets, 1);
    vfs.release_blocking(o.fh).expect("release");
    // Opened again while its attributes are fresh: answered at once, and it reads right.
    let q = vfs
        .open_quick(attr.ino, false, false)
        .expect("answered without waiting")
        .expect("opened");
    let data = rt.block_on(vfs.read(q.fh, 0, 100)).expect("read");
    assert_eq!(&data[..], b"first content");
    assert!(q.keep_cache, "same content: the kernel may keep its pages");
    vfs.release_blocking(q.fh).expect("release");
    // A writer always goes to the task (it may have to wait for the disk).
    assert!(vfs.open_quick(attr.ino, true, false).is_none());
    assert!(vfs.open_quick(attr.ino, false, true).is_none());
    // Changed on the server: once the attributes are stale the quick path steps aside, and
    // the open that asks the server reads the new content.
    std::fs::write(&path, b"second, longer content").expect("change");
    std::thread::sleep(ttl + std::time::Duration::from_millis(100));
    assert!(vfs.open_quick(attr.ino, false, false).is_none());
    let o = rt.block_on(vfs.open(attr.ino, false, false)).expect("open");
    let data = rt.block_on(vfs.read(o.fh, 0, 100)).expect("read");
    assert_eq!(&data[..], b"second, longer content");
    assert!(!o.keep_cache, "new content: the kernel's pages must go");
    vfs.release_blocking(o.fh).expect("release");
}

/// The path-based face of the core (what the WinFsp adapter calls), against the fake
/// Nextcloud: names in another letter case, opening for writing without writing, appends,
/// renames with and without replacing, deletion only of empty folders.
#[test]
fn by_path_files_are_opened_written_renamed_and_deleted() {
    use nuage::vfs::paths::{PathFs, WriteAt};
    use nuage::ErrorKind;
    use std::time::Duration;
    let cloud = Cloud::start();
    let files = cloud.files();
    std::fs::create_dir_all(files.join("Docs")).expect("mkdir");
    let report = pattern(300_000, 7);
    std::fs::write(files.join("Docs/Report.odt"), &report).expect("write");
    std::fs::write(files.join("Docs/a.txt"), b"old").expect("write");
    std::fs::write(files.join("Docs/Same.txt"), b"1").expect("write");
    std::fs::write(files.join("Docs/same.txt"), b"2").expect("write");
    let tmp = tempfile::tempdir().expect("tmp");
    let writable = VfsConfig {
        read_only: false,
        ..VfsConfig::default()
    };
    let vfs = vfs_with(&cloud, tmp.path(), writable);
    let fs = PathFs::new(vfs, cloud.runtime().handle().clone());
    let stats = cloud.server.stats().clone();

    // Windows spelling, another letter case: the one entry it can mean.
    assert_eq!(fs.stat("\\Docs\\Report.odt").expect("stat").size, 300_000);
    let (h, attr) = fs.open("\\docs\\REPORT.odt").expect("open by other case");
    assert_eq!(fs.path(&h), "/Docs/Report.odt");
    assert_eq!(attr.size, 300_000);
    assert_eq!(
        &fs.read(&h, 1000, 5000).expect("read")[..],
        &report[1000..6000]
    );
    assert!(fs.read(&h, 300_000, 10).expect("read at end").is_empty());
    fs.close(&h).expect("close");
    // Two entries differ only in case: neither is guessed.
    assert_eq!(
        fs.stat("/Docs/SAME.txt").expect_err("ambiguous").kind,
        ErrorKind::NotFound
    );
    assert_eq!(fs.stat("/Docs/same.txt").expect("exact").size, 1);

    // Opened (as Explorer does, with write access) and closed without writing: nothing sent.
    let puts = stats.count("PUT");
    let (h, _) = fs.open("/Docs/a.txt").expect("open");
    fs.close(&h).expect("close");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        stats.count("PUT"),
        puts,
        "an unchanged file is not uploaded"
    );

    // Appends (offset None) and a write at an offset reach the server.
    let (h, _) = fs.create("\\Docs\\new.txt", false).expect("create");
    assert_eq!(fs.write(&h, WriteAt::End, b"hello").expect("write"), 5);
    assert_eq!(fs.write(&h, WriteAt::End, b" world").expect("append"), 6);
    assert_eq!(fs.attr(&h).expect("attr").size, 11);
    // Paging writes stay within the file; an allocation size only ever cuts.
    assert_eq!(
        fs.write(&h, WriteAt::Within(9), b"LDXX").expect("within"),
        2
    );
    assert_eq!(
        fs.write(&h, WriteAt::Within(11), b"past")
            .expect("past end"),
        0
    );
    assert_eq!(fs.set_allocation(&h, 4096).expect("alloc").size, 11);
    assert_eq!(&fs.read(&h, 0, 64).expect("read")[..], b"hello worLD");
    fs.write(&h, WriteAt::Offset(9), b"ld").expect("write");
    fs.flush(&h).expect("flush");
    fs.close(&h).expect("close");
    wait_server(&files, "Docs/new.txt", b"hello world");
    let (h, _) = fs.open("/Docs/a.txt").expect("open");
    fs.write(&h, WriteAt::Offset(1), b"NE").expect("write");
    assert_eq!(&fs.read(&h, 0, 10).expect("read own write")[..], b"oNE");
    assert_eq!(
        fs.set_allocation(&h, 2)
            .expect("a smaller allocation cuts")
            .size,
        2
    );
    fs.close(&h).expect("close");
    wait_server(&files, "Docs/a.txt", b"oN");

    // Replaced whole (Windows' overwrite: cut to 0, then written), dated as the copy's source.
    let (h, _) = fs.open("/Docs/Same.txt").expect("open");
    fs.set_size(&h, 0).expect("overwrite");
    fs.write(&h, WriteAt::Offset(0), b"replaced")
        .expect("write");
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_577_934_245);
    assert_eq!(fs.set_mtime(&h, when).expect("mtime").mtime, when);
    fs.close(&h).expect("close");
    wait_server(&files, "Docs/Same.txt", b"replaced");
    assert_eq!(fs.stat("/Docs/Same.txt").expect("stat").mtime, when);
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::metadata(
            files.join("Docs/Same.txt")
        )
        .and_then(|m| m.modified())
        .is_ok_and(|t| t == when)),
        "the server keeps the date"
    );

    // Renames: refused over an existing name unless asked to replace; the handle follows.
    let (h, _) = fs.open("/Docs/new.txt").expect("open");
    assert_eq!(
        fs.rename(&h, "\\Docs\\a.txt", false)
            .expect_err("exists")
            .kind,
        ErrorKind::AlreadyExists
    );
    fs.rename(&h, "\\Docs\\a.txt", true).expect("replace");
    assert_eq!(fs.path(&h), "/Docs/a.txt");
    fs.close(&h).expect("close");
    wait_server(&files, "Docs/a.txt", b"hello world");
    assert!(wait_until(Duration::from_secs(20), || !files
        .join("Docs/new.txt")
        .exists()));

    // A handle follows a rename made through another one (or by another program).
    let (held, _) = fs.open("/Docs/a.txt").expect("open");
    let (mover, _) = fs.open("/Docs/a.txt").expect("open");
    fs.rename(&mover, "/Docs/moved.txt", false).expect("rename");
    fs.close(&mover).expect("close");
    assert_eq!(fs.path(&held), "/Docs/moved.txt");
    fs.can_delete(&held).expect("a file may go");
    fs.delete(&held).expect("delete where it is now");
    fs.close(&held).expect("close");
    assert!(wait_until(Duration::from_secs(20), || !files
        .join("Docs/moved.txt")
        .exists()));
    assert_eq!(
        fs.stat("/Docs/a.txt").expect_err("gone").kind,
        ErrorKind::NotFound
    );

    // A folder is deleted only once empty; deletions reach the server.
    let (d, _) = fs.create("/Sub", true).expect("mkdir");
    let (f, _) = fs.create("/Sub/x.bin", false).expect("create");
    fs.write(&f, WriteAt::Offset(0), b"x").expect("write");
    fs.close(&f).expect("close");
    assert_eq!(
        fs.can_delete(&d).expect_err("not empty").kind,
        ErrorKind::NotEmpty
    );
    let names: Vec<String> = fs
        .list(&d)
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["x.bin"]);
    let (f, _) = fs.open("/Sub/x.bin").expect("open");
    fs.can_delete(&f).expect("a file may go");
    fs.delete(&f).expect("delete file");
    fs.close(&f).expect("close");
    fs.can_delete(&d).expect("empty now");
    fs.delete(&d).expect("delete folder");
    fs.close(&d).expect("close");
    assert!(wait_until(Duration::from_secs(20), || !files
        .join("Sub")
        .exists()));
    assert_eq!(fs.stat("/Sub").expect_err("gone").kind, ErrorKind::NotFound);
    let (root, _) = fs.open("\\").expect("open root");
    let names: Vec<String> = fs
        .list(&root)
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["Docs"]);
}
