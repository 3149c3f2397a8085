//! Randomized operations: the same sequence applied to the mount and to a plain local folder,
//! compared after every operation (results and errno) and regularly as whole trees; then the
//! server is compared with the local folder once the upload queue drained.
//!
//! `NUAGE_RANDOM_OPS` sets the number of operations (default 10000), `NUAGE_RANDOM_SEED` the
//! seed (default: from the clock). The seed is printed in every failure message.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const DIRS: [&str; 5] = ["", "a", "b", "a/c", "b/d"];
const NAMES: [&str; 6] = ["f0", "f1", "f2.txt", "g", "a", "b"];

fn random_path(r: &mut Rng) -> String {
    let d = DIRS[r.below(DIRS.len() as u64) as usize];
    let n = NAMES[r.below(NAMES.len() as u64) as usize];
    if d.is_empty() {
        n.to_string()
    } else {
        format!("{d}/{n}")
    }
}

/// Outcome of an operation: Ok with optional data, or the errno.
type Outcome = Result<Option<Vec<u8>>, i32>;

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        path: String,
        off: u64,
        data: Vec<u8>,
    },
    Truncate {
        path: String,
        len: u64,
    },
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Read {
        path: String,
    },
}

fn gen(r: &mut Rng) -> Op {
    match r.below(100) {
        0..=34 => {
            let len = r.below(3) as usize * 4000 + r.below(3000) as usize;
            let seed = r.next();
            Op::Write {
                path: random_path(r),
                off: r.below(3) * 5000 + r.below(100),
                data: pattern(len, seed),
            }
        }
        35..=44 => Op::Truncate {
            path: random_path(r),
            len: r.below(12000),
        },
        45..=59 => Op::Rename {
            from: random_path(r),
            to: random_path(r),
        },
        60..=69 => Op::Unlink {
            path: random_path(r),
        },
        70..=79 => Op::Mkdir {
            path: random_path(r),
        },
        80..=84 => Op::Rmdir {
            path: random_path(r),
        },
        _ => Op::Read {
            path: random_path(r),
        },
    }
}

fn apply(root: &Path, op: &Op) -> Outcome {
    let p = |s: &str| root.join(s);
    match op {
        Op::Write { path, off, data } => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(p(path))
                .map_err(errno)?;
            f.write_all_at(data, *off).map_err(errno)?;
            let mut f = f;
            f.flush().map_err(errno)?;
            Ok(None)
        }
        Op::Truncate { path, len } => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p(path))
                .map_err(errno)?;
            f.set_len(*len).map_err(errno)?;
            Ok(None)
        }
        Op::Rename { from, to } => std::fs::rename(p(from), p(to)).map(|_| None).map_err(errno),
        Op::Unlink { path } => std::fs::remove_file(p(path)).map(|_| None).map_err(errno),
        Op::Mkdir { path } => std::fs::create_dir(p(path)).map(|_| None).map_err(errno),
        Op::Rmdir { path } => std::fs::remove_dir(p(path)).map(|_| None).map_err(errno),
        Op::Read { path } => std::fs::read(p(path)).map(Some).map_err(errno),
    }
}

fn tree(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| rd.map(|e| e.expect("entry").path()).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            let rel = e
                .strip_prefix(base)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            if rel.starts_with(".fake-upload-") {
                continue;
            }
            if e.is_dir() {
                out.push((rel, None));
                walk(base, &e, out);
            } else {
                match std::fs::read(&e) {
                    Ok(data) => out.push((rel, Some(data))),
                    // Renamed or deleted while this walk runs (the server is still busy):
                    // the caller compares again later.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => out.push((rel, None)),
                    Err(err) => panic!("read {}: {err}", e.display()),
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn summary(t: &[(String, Option<Vec<u8>>)]) -> Vec<String> {
    t.iter()
        .map(|(p, d)| match d {
            None => format!("{p}/"),
            Some(d) => format!("{p} ({} bytes)", d.len()),
        })
        .collect()
}

/// `NUAGE_RANDOM_OPS` or `default`.
fn op_count(default: usize) -> usize {
    std::env::var("NUAGE_RANDOM_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `NUAGE_RANDOM_SEED` or one from the clock.
fn seed() -> u64 {
    std::env::var("NUAGE_RANDOM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        })
}

/// Applies `count` random operations from `seed` to mount `m` of the server whose files are
/// in folder `srv` and to a local folder, comparing each result and, every 1000 operations,
/// the whole trees. Answers the local folder's final tree, which the mount has too.
fn mount_matches_a_local_folder(
    srv: &Path,
    m: &Mount,
    count: usize,
    seed: u64,
) -> Vec<(String, Option<Vec<u8>>)> {
    let local = tempfile::tempdir().expect("tmp");
    mount_matches(srv, m, local.path(), count, seed)
}

/// [`mount_matches_a_local_folder`] with the local folder `local`, which may hold the result
/// of earlier operations (the mount must then hold them too).
fn mount_matches(
    srv: &Path,
    m: &Mount,
    local: &Path,
    count: usize,
    seed: u64,
) -> Vec<(String, Option<Vec<u8>>)> {
    let mut r = Rng(seed);
    let mut log: Vec<Op> = Vec::new();
    for i in 0..count {
        let op = gen(&mut r);
        let want = apply(local, &op);
        let got = apply(&m.mp, &op);
        log.push(op.clone());
        if want != got {
            let srv_note = match (&op, &want, &got) {
                (Op::Read { path }, Ok(Some(w)), Ok(Some(g))) => {
                    let srv = std::fs::read(srv.join(path)).ok();
                    format!(
                        "first differing byte {:?}; server equals local: {}, server equals mount: {}",
                        w.iter().zip(g.iter()).position(|(u, v)| u != v),
                        srv.as_ref() == Some(w),
                        srv.as_ref() == Some(g)
                    )
                }
                _ => String::new(),
            };
            eprintln!("{srv_note}");
            let _ = std::fs::write("/tmp/nuage-random-ops-failure.log", m.log_text());
            let tail: Vec<String> = log
                .iter()
                .rev()
                .take(8)
                .map(|o| format!("{o:?}").chars().take(120).collect())
                .collect();
            let warnings: Vec<String> = m
                .log_text()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .map(|l| l.chars().take(300).collect())
                .collect();
            panic!(
                "seed {seed}: op #{i} {:?} gave {:?} on the mount, {:?} locally; last ops (newest first): {tail:#?}\nwarnings: {warnings:#?}",
                format!("{op:?}").chars().take(200).collect::<String>(),
                got.as_ref().map(|d| d.as_ref().map(|v| v.len())),
                want.as_ref().map(|d| d.as_ref().map(|v| v.len())),
            );
        }
        if i % 1000 == 999 {
            let (a, b) = (tree(local), tree(&m.mp));
            if a != b {
                let diff: Vec<String> = a
                    .iter()
                    .zip(b.iter())
                    .filter(|(x, y)| x != y)
                    .map(|((p, x), (_, y))| {
                        let first = match (x, y) {
                            (Some(x), Some(y)) => x.iter().zip(y.iter()).position(|(u, v)| u != v),
                            _ => None,
                        };
                        let srv = std::fs::read(srv.join(p)).ok();
                        format!(
                            "{p}: first differing byte {first:?}; server equals local: {}, server equals mount: {}",
                            srv.as_ref() == x.as_ref(),
                            srv.as_ref() == y.as_ref()
                        )
                    })
                    .collect();
                let _ = std::fs::write("/tmp/nuage-random-ops-failure.log", m.log_text());
                panic!(
                    "seed {seed}: trees differ after op #{i}:\nlocal {:?}\nmount {:?}\n{diff:#?}",
                    summary(&a),
                    summary(&b)
                );
            }
        }
    }
    let expected = tree(local);
    assert!(
        expected == tree(&m.mp),
        "seed {seed}: final mount tree differs"
    );
    expected
}

/// Waits until the server, whose files are in folder `srv`, holds `expected` (every upload
/// done).
fn server_matches(srv: &Path, m: &Mount, seed: u64, expected: &[(String, Option<Vec<u8>>)]) {
    let same = wait_until(Duration::from_secs(60), || tree(srv) == expected);
    if !same {
        let _ = std::fs::write("/tmp/nuage-random-ops-failure.log", m.log_text());
    }
    assert!(
        same,
        "seed {seed}: the server differs after the queue drained:\nlocal  {:?}\nserver {:?}\nlog:\n{}",
        summary(expected),
        summary(&tree(srv)),
        m.log_text().lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn random_operations_match_a_local_folder_and_the_server() {
    let (count, seed) = (op_count(10_000), seed());
    eprintln!("random operations: {count} ops, NUAGE_RANDOM_SEED={seed}");
    // Uploads run while operations go on; NUAGE_RANDOM_UPLOAD_DELAY shortens the delay to make
    // races between uploads and renames more frequent.
    let upload_delay = std::env::var("NUAGE_RANDOM_UPLOAD_DELAY").unwrap_or_else(|_| "1".into());
    let cloud = Cloud::start();
    let m = Mount::new(MountSpec::new(&cloud.url()).args(&[
        "--upload-delay",
        &upload_delay,
        "--attr-ttl",
        "1",
        "--dir-ttl",
        "1",
    ]));
    let expected = mount_matches_a_local_folder(&cloud.files(), &m, count, seed);
    server_matches(&cloud.files(), &m, seed, &expected);
    m.unmount();
}

/// A mount of `url` that uploads each file as soon as it is closed (many more requests to
/// disturb), its lifetimes 1 s.
fn uploading_at_once(url: &str) -> MountSpec {
    MountSpec::new(url).args(&["--upload-delay", "0", "--attr-ttl", "1", "--dir-ttl", "1"])
}

/// Random operations on a mount of the server listening on `port` (its WebDAV root at
/// `path`, its files in folder `files`) through a relay that breaks every connection 20 to
/// 300 ms after it opens, also while the uploads go on: every result is the local folder's,
/// and the server ends with the local folder's tree.
fn through_a_breaking_relay(port: u16, path: &str, files: &Path, count: usize, seed: u64) {
    eprintln!("random operations through a breaking relay: {count} ops, NUAGE_RANDOM_SEED={seed}");
    let relay = Relay::start(port);
    let m = Mount::new(uploading_at_once(&format!("{}{path}", relay.url())));
    relay.set(RelayMode::Breaking { seed, span_ms: 300 });
    let expected = mount_matches_a_local_folder(files, &m, count, seed);
    server_matches(files, &m, seed, &expected);
    let cuts = relay.cuts();
    eprintln!("{cuts} connections cut");
    assert!(cuts >= 5, "seed {seed}: only {cuts} connections were cut");
    m.unmount();
}

/// The same through a network that keeps breaking connections: cut before an answer (the
/// server did the request, the answer is lost), in the middle of a body, or while a request
/// or an upload is sent. Programs see exactly what a local folder gives them, and once the
/// uploads are done the server holds exactly the local folder's tree: nothing lost, nothing
/// done twice (no folder or conflict copy more, no file deleted that a retried request
/// should have left).
#[test]
fn random_operations_through_connections_that_keep_breaking() {
    let cloud = Cloud::start();
    through_a_breaking_relay(cloud.port(), "/", &cloud.files(), op_count(6_000), seed());
}

/// The same against Apache `mod_dav`: no Nextcloud properties, no bulk or chunked uploads,
/// its own etags and modification times.
#[test]
fn apache_random_operations_through_connections_that_keep_breaking() {
    let apache = Apache::start();
    through_a_breaking_relay(
        apache.port,
        "/dav/",
        &apache.data(),
        op_count(4_000),
        seed(),
    );
}

/// Random operations on Apache through a network that delivers everything in pieces of 1
/// to 64 bytes (requests, answer heads, listings, file bodies cut at every place): every
/// result is the local folder's and the server ends with its tree.
#[test]
fn apache_random_operations_through_a_network_of_small_pieces() {
    let apache = Apache::start();
    through_small_pieces(
        apache.port,
        "/dav/",
        &apache.data(),
        op_count(1_500),
        seed(),
    );
}

/// The same against the Nextcloud test server (its properties, bulk uploads, JSON answers).
#[test]
fn random_operations_through_a_network_of_small_pieces() {
    let cloud = Cloud::start();
    through_small_pieces(cloud.port(), "/", &cloud.files(), op_count(1_500), seed());
}

fn through_small_pieces(port: u16, path: &str, files: &Path, count: usize, seed: u64) {
    eprintln!("random operations through a slicing relay: {count} ops, NUAGE_RANDOM_SEED={seed}");
    // A file of several blocks, read whole and in ranges: bodies of ranged answers in pieces.
    let film = pattern((3 << 20) + 4321, seed);
    std::fs::write(files.join("film.bin"), &film).expect("seed");
    let relay = Relay::start(port);
    relay.set(RelayMode::Sliced { seed });
    let m = Mount::new(uploading_at_once(&format!("{}{path}", relay.url())));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(m.path("film.bin")).expect("open");
        for (off, len) in [(2 << 20, 4096), ((1 << 20) - 10, 20), (100, 70_000)] {
            let mut got = vec![0u8; len];
            f.read_exact_at(&mut got, off as u64).expect("ranged read");
            assert!(got == film[off..off + len], "bytes at {off}");
        }
        assert!(
            std::fs::read(m.path("film.bin")).expect("read") == film,
            "whole file"
        );
    }
    std::fs::remove_file(m.path("film.bin")).expect("delete through the mount");
    assert!(!files.join("film.bin").exists());
    let expected = mount_matches_a_local_folder(files, &m, count, seed);
    server_matches(files, &m, seed, &expected);
    m.unmount();
}

/// Random operations through connections that keep breaking, the mount killed (`kill -9`)
/// halfway with what it had not sent yet (file contents, renames, deletions and folders that
/// met a broken connection), then mounted again on the same cache: it shows at once what the
/// local folder holds, goes on, and the server ends with the local folder's tree.
#[test]
fn random_operations_survive_kill_9_through_connections_that_keep_breaking() {
    let (count, seed) = (op_count(4_000), seed());
    eprintln!("random operations, kill -9 halfway: {count} ops, NUAGE_RANDOM_SEED={seed}");
    let cloud = Cloud::start();
    let relay = Relay::start(cloud.port());
    let cache = tempfile::tempdir().expect("tmp");
    let local = tempfile::tempdir().expect("tmp");
    let spec = |delay: &str| {
        MountSpec::new(&relay.url()).cache(cache.path()).args(&[
            "--upload-delay",
            delay,
            "--attr-ttl",
            "1",
            "--dir-ttl",
            "1",
        ])
    };
    // Uploads held back a little: the kill finds changes waiting.
    let mut first = Mount::new(spec("2"));
    relay.set(RelayMode::Breaking { seed, span_ms: 300 });
    mount_matches(&cloud.files(), &first, local.path(), count / 2, seed);
    let pending = first.pending();
    eprintln!("killed with {pending} changes not on the server yet");
    assert!(
        pending > 0,
        "seed {seed}: nothing was waiting when the mount was killed"
    );
    first.crash();
    relay.set(RelayMode::Through);
    let m = Mount::new(spec("0").at(&first.mp));
    relay.set(RelayMode::Breaking {
        seed: seed ^ 1,
        span_ms: 300,
    });
    let before = tree(local.path());
    assert!(
        tree(&m.mp) == before,
        "seed {seed}: after kill -9 and a new mount:\nlocal {:?}\nmount {:?}",
        summary(&before),
        summary(&tree(&m.mp))
    );
    let expected = mount_matches(&cloud.files(), &m, local.path(), count / 2, seed ^ 2);
    server_matches(&cloud.files(), &m, seed, &expected);
    assert!(relay.cuts() >= 5, "seed {seed}: only {} cuts", relay.cuts());
    m.unmount();
    drop(first);
}
