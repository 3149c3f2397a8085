//! Real programs on the mount end with identical bytes on the server: git clone and fsck,
//! tar x of 2,000 small files, rsync -a, cp -a, and the save pattern of office programs.

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

fn mount(cloud: &Cloud) -> Mount {
    Mount::new(MountSpec::new(&cloud.url()).args(&[
        "--upload-delay",
        "0.3",
        "--attr-ttl",
        "2",
        "--dir-ttl",
        "2",
    ]))
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
