//! Real programs on the mount end with identical bytes on the server: git clone and fsck,
//! tar x of 2,000 small files, rsync -a, cp -a, the save pattern of office programs, and an
//! SQLite database in WAL mode.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn run(cmd: &mut Command) {
    let out = run_bounded(
        {
            let mut c = Command::new(cmd.get_program());
            c.args(cmd.get_args());
            if let Some(d) = cmd.get_current_dir() {
                c.current_dir(d);
            }
            for (k, v) in cmd.get_envs() {
                if let Some(v) = v {
                    c.env(k, v);
                }
            }
            c
        },
        Duration::from_secs(240),
    );
    assert!(
        out.status.success(),
        "{:?} failed ({:?}): {}\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mount of `cloud` with short lifetimes and upload delay.
fn spec(cloud: &Cloud) -> MountSpec {
    MountSpec::new(&cloud.url()).args(&[
        "--upload-delay",
        "0.3",
        "--attr-ttl",
        "2",
        "--dir-ttl",
        "2",
    ])
}

fn mount(cloud: &Cloud) -> Mount {
    Mount::new(spec(cloud))
}

fn drained(m: &Mount, srv: &Path, local: &Path) {
    m.wait_drained();
    let ok = wait_until(Duration::from_secs(30), || trees_equal(local, srv));
    assert!(ok, "the server never matched {}", local.display());
}

fn trees_equal(a: &Path, b: &Path) -> bool {
    std::panic::catch_unwind(|| assert_same_tree(a, b)).is_ok()
}

#[test]
fn git_clone_then_fsck() {
    let cloud = Cloud::start();
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    let git = |args: &[&str], dir: &Path| {
        run(Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org"));
    };
    git(&["init", "-q", "-b", "main"], &src);
    for i in 0..30 {
        std::fs::write(
            src.join(format!("f{i}.txt")),
            format!("line {i}\n").repeat(i + 1),
        )
        .expect("w");
        if i % 10 == 9 {
            git(&["add", "."], &src);
            git(&["commit", "-q", "-m", &format!("commit {i}")], &src);
        }
    }
    let m = mount(&cloud);
    git(
        &[
            "clone",
            "-q",
            "--no-hardlinks",
            &src.to_string_lossy(),
            &m.path("repo").to_string_lossy(),
        ],
        work.path(),
    );
    git(&["fsck", "--full"], &m.path("repo"));
    git(&["status", "--porcelain"], &m.path("repo"));
    drained(&m, &cloud.files().join("repo"), &m.path("repo"));
    // The server's copy is a valid repository too.
    let check = work.path().join("check");
    std::fs::create_dir(&check).expect("mkdir");
    git(
        &[
            "clone",
            "-q",
            &cloud.files().join("repo").to_string_lossy(),
            "c",
        ],
        &check,
    );
    git(&["fsck", "--full"], &check.join("c"));
    m.unmount();
}

#[test]
fn tar_rsync_cp_and_office_saves() {
    let cloud = Cloud::start();
    let work = tempfile::tempdir().expect("tmp");
    // 2,000 small files in a tar archive.
    let tree = work.path().join("tree");
    for d in 0..20 {
        std::fs::create_dir_all(tree.join(format!("dir{d}"))).expect("mkdir");
        for f in 0..100 {
            std::fs::write(
                tree.join(format!("dir{d}/file{f}.txt")),
                pattern(50 + f * 13, (d * 100 + f) as u64),
            )
            .expect("w");
        }
    }
    let tarball = work.path().join("t.tar");
    run(Command::new("tar")
        .arg("cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&tree)
        .arg("."));
    let m = mount(&cloud);
    std::fs::create_dir(m.path("untarred")).expect("mkdir");
    run(Command::new("tar")
        .arg("xf")
        .arg(&tarball)
        .arg("-C")
        .arg(m.path("untarred")));
    assert_same_tree(&tree, &m.path("untarred"));

    // rsync -a and cp -a of a tree with a larger file.
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("big.bin"), pattern(3 << 20, 5)).expect("w");
    std::fs::write(src.join("sub/small.txt"), b"small").expect("w");
    run(Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", src.display()))
        .arg(m.path("rsynced")));
    run(Command::new("cp").arg("-a").arg(&src).arg(m.path("copied")));
    assert_same_tree(&src, &m.path("rsynced"));
    assert_same_tree(&src, &m.path("copied"));

    // An office program saving: lock file, temporary file, fsync, rename over the original.
    std::fs::write(m.path("rapport.odt"), b"version 1").expect("w");
    for v in 2..5 {
        let lock = m.path(".~lock.rapport.odt#");
        std::fs::write(&lock, b"user,host").expect("lock");
        let tmp = m.path(format!("lu{v}.tmp").as_str());
        let mut f = std::fs::File::create(&tmp).expect("tmp");
        std::io::Write::write_all(&mut f, format!("version {v}").as_bytes()).expect("w");
        f.sync_all().expect("fsync");
        drop(f);
        std::fs::rename(&tmp, m.path("rapport.odt")).expect("rename over");
        std::fs::remove_file(&lock).expect("unlock");
    }
    assert_eq!(
        std::fs::read(m.path("rapport.odt")).expect("read"),
        b"version 4"
    );

    let srv = cloud.files();
    drained(&m, &srv.join("untarred"), &tree);
    drained(&m, &srv.join("rsynced"), &src);
    drained(&m, &srv.join("copied"), &src);
    assert!(wait_until(Duration::from_secs(30), || std::fs::read(
        srv.join("rapport.odt")
    )
    .ok()
    .as_deref()
        == Some(&b"version 4"[..])));
    assert!(
        !srv.join(".~lock.rapport.odt#").exists(),
        "lock files stay local"
    );
    let stray: Vec<_> = std::fs::read_dir(&srv)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.contains("conflicted"))
        .collect();
    assert!(
        stray.is_empty(),
        "no temporary or conflict files on the server: {stray:?}"
    );
    m.unmount();
}

/// A LibreOffice started for a test, in its own process group (the `soffice` script starts
/// `oosplash`, which starts `soffice.bin`): the whole group is killed when it is dropped.
struct Office {
    child: std::process::Child,
    port: u16,
    _profile: tempfile::TempDir,
    /// LibreOffice's pipes in `/tmp` before it started: it leaves its own there when killed.
    pipes_before: Vec<std::ffi::OsString>,
}

/// LibreOffice's single-instance pipes (`/tmp/OSL_PIPE_<uid>_SingleOfficeIPC_<hash>`).
fn office_pipes() -> Vec<std::ffi::OsString> {
    std::fs::read_dir("/tmp")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().starts_with("OSL_PIPE_"))
                .collect()
        })
        .unwrap_or_default()
}

impl Office {
    fn start() -> Office {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().expect("tmp");
        let pipes_before = office_pipes();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("soffice")
            .args(["--headless", "--invisible", "--norestore", "--nologo"])
            .arg(format!(
                "-env:UserInstallation=file://{}",
                profile.path().display()
            ))
            .arg(format!("--accept=socket,host=127.0.0.1,port={port};urp;"))
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("soffice (libreoffice-writer-nogui) is installed by scripts/test.sh");
        Office {
            child,
            port,
            _profile: profile,
            pipes_before,
        }
    }
}

impl Drop for Office {
    fn drop(&mut self) {
        // SAFETY: killpg(2) on the process group this test created for LibreOffice.
        unsafe {
            libc::killpg(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
        for p in office_pipes() {
            if !self.pipes_before.contains(&p) {
                let _ = std::fs::remove_file(Path::new("/tmp").join(p));
            }
        }
    }
}

/// One file of an OpenDocument archive, read with Python's zipfile (installed with
/// LibreOffice's Python bridge).
fn odf_part(doc: &Path, part: &str) -> String {
    let out = run_bounded(
        {
            let mut c = Command::new("/usr/bin/python3");
            c.args([
                "-c",
                "import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]).decode())",
            ])
            .arg(doc)
            .arg(part);
            c
        },
        Duration::from_secs(30),
    );
    assert_succeeded(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// LibreOffice itself, the program teachers open their documents with: it saves a new
/// document into the mount, opens it again (its lock file appears beside it), saves two edits
/// in place and exports a PDF. The server ends with the last saved document and the PDF, byte
/// for byte what the mount shows, and never receives the lock file.
#[test]
fn libreoffice_saves_edits_and_exports_on_the_mount() {
    let cloud = Cloud::start();
    let m = mount(&cloud);
    std::fs::create_dir(m.path("Conseils")).expect("mkdir");
    let office = Office::start();
    let doc = m.path("Conseils/compte-rendu.odt");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libreoffice_edit.py");
    let out = run_bounded(
        {
            let mut c = Command::new("/usr/bin/python3");
            c.arg(&script)
                .arg(office.port.to_string())
                .arg(&doc)
                .args(["premier-ajout", "second-ajout"]);
            c
        },
        Duration::from_secs(180),
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "LibreOffice script failed ({}): {said}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("open, locks: ['.~lock.compte-rendu.odt#']"),
        "LibreOffice's lock file beside the open document: {said}"
    );
    assert!(said.contains("closed, locks: []"), "{said}");
    drop(office);

    let local = std::fs::read(&doc).expect("read the saved document");
    let text = odf_part(&doc, "content.xml");
    assert!(
        text.contains("Compte rendu du conseil de classe.")
            && text.contains("premier-ajout")
            && text.contains("second-ajout"),
        "{text}"
    );
    let srv = cloud.files().join("Conseils");
    m.wait_drained();
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read(
            srv.join("compte-rendu.odt")
        )
        .ok()
            == Some(local.clone())),
        "the server never got the saved document"
    );
    let pdf = std::fs::read(srv.join("compte-rendu.pdf")).expect("the PDF on the server");
    assert!(pdf.starts_with(b"%PDF"), "not a PDF");
    assert_eq!(
        pdf,
        std::fs::read(m.path("Conseils/compte-rendu.pdf")).expect("pdf")
    );
    let names: Vec<String> = std::fs::read_dir(&srv)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut want = vec![
        "compte-rendu.odt".to_string(),
        "compte-rendu.pdf".to_string(),
    ];
    let mut got = names.clone();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "no lock, temporary or conflict file on the server"
    );
    m.unmount();
}

/// SQLite in WAL mode (where many programs keep their data: Firefox, Thunderbird, Zotero,
/// Anki, Python's `sqlite3`) on the mount: its `-wal` and `-shm` files, mapped in memory and
/// deleted at the last close, never reach the server and do not come back at the next mount
/// (a `-shm` deleted before its release reached the mount was uploaded there, once as a
/// conflicted copy); the database arrives whole.
#[test]
fn sqlite_in_wal_mode_leaves_only_its_database() {
    let cloud = Cloud::start();
    let srv = cloud.files();
    let cache = tempfile::tempdir().expect("tmp");
    let m = Mount::new(spec(&cloud).cache(cache.path()));
    let script = "import sqlite3, sys\n\
        for _ in range(5):\n\
        \x20   c = sqlite3.connect(sys.argv[1])\n\
        \x20   c.execute('pragma journal_mode=wal')\n\
        \x20   c.execute('create table if not exists t(a integer, b text)')\n\
        \x20   c.executemany('insert into t values(?, ?)', [(i, 'x' * 100) for i in range(300)])\n\
        \x20   c.commit()\n\
        \x20   assert c.execute('pragma integrity_check').fetchone()[0] == 'ok'\n\
        \x20   c.close()\n";
    run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(m.path("notes.db")));
    let local = std::fs::read(m.path("notes.db")).expect("read");
    m.wait_drained();
    wait_server(&srv, "notes.db", &local);
    m.unmount();
    // The next mount of the same cache resumes nothing.
    let m = Mount::new(spec(&cloud).cache(cache.path()));
    m.wait_drained();
    std::thread::sleep(Duration::from_millis(500));
    let names: Vec<String> = std::fs::read_dir(&srv)
        .expect("server folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["notes.db"], "{}", m.log_text());
    let count = run_bounded(
        {
            let mut c = Command::new("python3");
            c.arg("-c")
                .arg("import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from t').fetchone()[0])")
                .arg(srv.join("notes.db"));
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "1500");
    m.unmount();
}
