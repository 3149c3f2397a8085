//! Block downloads over plain HTTP, read straight from the socket (`webdav::rawget`): against
//! Apache, and against a scripted server for what Apache does not do on demand (closing a
//! kept-alive connection, staying silent, cutting a body short, answering 412 or 200).

mod common;

use common::*;
use nuage::webdav::{Credentials, DavClient, DavConfig, DavError, RemotePath, Secret};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A client for a server known to take Basic (as a mount learns from its first request).
fn client(url: &str, cfg: &DavConfig) -> DavClient {
    let http = nuage::webdav::http_client(cfg).expect("client");
    DavClient::new(
        http,
        reqwest::Url::parse(url).expect("url"),
        Some(Credentials {
            user: USER.into(),
            password: Secret::new(PASSWORD),
        }),
        cfg,
    )
    .with_basic_auth()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `len` bytes at `start` of a file of `size` bytes through `get_range` and `fill`; whether
/// they came straight from the socket.
async fn fetch(
    dav: &DavClient,
    name: &str,
    (start, len): (u64, u64),
    size: u64,
) -> Result<(Vec<u8>, bool), DavError> {
    let mut body = dav
        .get_range(&RemotePath::new(name), (start, len), size, None)
        .await?;
    let direct = body.is_direct();
    let mut buf = vec![0; len as usize];
    assert_eq!(body.fill(&mut buf).await?, buf.len(), "short body");
    Ok((buf, direct))
}

#[test]
fn apache_ranges_are_read_straight_from_the_socket_byte_for_byte() {
    let apache = Apache::start();
    let data = pattern(5 << 20, 11);
    std::fs::write(apache.data().join("big.bin"), &data).expect("seed");
    apache.fix_owner();
    let rt = runtime();
    let dav = client(&apache.url(), &DavConfig::default());
    rt.block_on(async {
        for (start, len) in [
            (0u64, 1u64 << 20),
            (3 << 20, 1 << 20),
            (123_457, 70_001),
            ((5 << 20) - 10, 10),
        ] {
            let (got, direct) = fetch(&dav, "big.bin", (start, len), data.len() as u64)
                .await
                .expect("get");
            assert!(
                direct,
                "plain HTTP to Apache should be read from the socket"
            );
            let end = (start + len).min(data.len() as u64) as usize;
            assert!(
                got[..] == data[start as usize..end],
                "bytes differ at {start}"
            );
        }
        // A changed file (another etag) is refused, as through reqwest.
        let mut body = dav
            .get_range(
                &RemotePath::new("big.bin"),
                (0, 10),
                5 << 20,
                Some("\"not-the-etag\""),
            )
            .await;
        assert!(
            matches!(body, Err(DavError::PreconditionFailed(_))),
            "{:?}",
            body.as_mut().err()
        );
        // A client that does not know yet how the server wants the password: its first
        // read goes through reqwest, which learns it from the server's 401 (Basic), and the
        // next ones come straight from the socket.
        let fresh = DavClient::new(
            nuage::webdav::http_client(&DavConfig::default()).expect("client"),
            reqwest::Url::parse(&apache.url()).expect("url"),
            Some(Credentials {
                user: USER.into(),
                password: Secret::new(PASSWORD),
            }),
            &DavConfig::default(),
        );
        let first = fetch(&fresh, "big.bin", (0, 100), data.len() as u64).await;
        let (got, direct) = first.expect("get");
        assert!(!direct && got[..] == data[..100]);
        let (got, direct) = fetch(&fresh, "big.bin", (100, 100), data.len() as u64)
            .await
            .expect("get");
        assert!(direct && got[..] == data[100..200]);
        // Wrong password: the usual refusal.
        let bad = DavClient::new(
            nuage::webdav::http_client(&DavConfig::default()).expect("client"),
            reqwest::Url::parse(&apache.url()).expect("url"),
            Some(Credentials {
                user: USER.into(),
                password: Secret::new("wrong"),
            }),
            &DavConfig::default(),
        );
        let r = bad
            .get_range(&RemotePath::new("big.bin"), (0, 10), 5 << 20, None)
            .await;
        assert!(matches!(r, Err(DavError::Unauthorized)), "{:?}", r.err());
    });
}

/// What the scripted server does with each request on a connection.
#[derive(Clone, Copy)]
enum Act {
    /// A 206 for the asked range, then keep the connection.
    Partial,
    /// A 206, then close the connection (without saying so).
    PartialThenClose,
    /// Read the request, answer nothing.
    Silent,
    /// A 206 whose body stops halfway, then close.
    Short,
    /// 412.
    Changed,
    /// 200 with the whole file.
    Whole,
}

struct Scripted {
    port: u16,
    /// Connections accepted, and every request head received.
    connections: Arc<Mutex<usize>>,
    requests: Arc<Mutex<Vec<String>>>,
}

const FILE_LEN: usize = 100_000;

fn file_bytes() -> Vec<u8> {
    pattern(FILE_LEN, 5)
}

impl Scripted {
    /// A server that answers the n-th request of the whole run with `script[n]` (the last
    /// entry repeats).
    fn start(script: Vec<Act>) -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let connections = Arc::new(Mutex::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (c2, r2) = (connections.clone(), requests.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                *c2.lock().expect("lock") += 1;
                let (r3, script) = (r2.clone(), script.clone());
                std::thread::spawn(move || serve(s, &r3, &script));
            }
        });
        Scripted {
            port,
            connections,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/dav/", self.port)
    }

    fn connections(&self) -> usize {
        *self.connections.lock().expect("lock")
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

fn serve(mut s: TcpStream, requests: &Mutex<Vec<String>>, script: &[Act]) {
    let data = file_bytes();
    loop {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let n = {
            let mut r = requests.lock().expect("lock");
            r.push(head.clone());
            r.len() - 1
        };
        let act = script[n.min(script.len() - 1)];
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Range: bytes="))
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| {
                (
                    a.parse::<usize>().unwrap_or(0),
                    b.trim().parse::<usize>().unwrap_or(0),
                )
            });
        let (a, z) = range.unwrap_or((0, FILE_LEN - 1));
        let z = z.min(FILE_LEN - 1);
        let partial = |s: &mut TcpStream, body: &[u8]| {
            let h = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{z}/{FILE_LEN}\r\nContent-Length: {}\r\n\r\n",
                z - a + 1
            );
            let _ = s.write_all(h.as_bytes());
            let _ = s.write_all(body);
        };
        match act {
            Act::Partial => partial(&mut s, &data[a..=z]),
            Act::PartialThenClose => {
                partial(&mut s, &data[a..=z]);
                return;
            }
            Act::Silent => {
                std::thread::sleep(Duration::from_secs(30));
                return;
            }
            Act::Short => {
                partial(&mut s, &data[a..a + (z - a) / 2]);
                return;
            }
            Act::Changed => {
                let _ =
                    s.write_all(b"HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\n\r\n");
            }
            Act::Whole => {
                let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {FILE_LEN}\r\n\r\n");
                let _ = s.write_all(h.as_bytes());
                let _ = s.write_all(&data);
            }
        }
    }
}

#[test]
fn kept_alive_connections_are_reused_and_carry_the_credentials() {
    let srv = Scripted::start(vec![Act::Partial]);
    let rt = runtime();
    let dav = client(&srv.url(), &DavConfig::default());
    let data = file_bytes();
    rt.block_on(async {
        for i in 0..5u64 {
            let (got, direct) = fetch(&dav, "f.bin", (i * 1000, 1000), FILE_LEN as u64)
                .await
                .expect("get");
            assert!(direct);
            assert!(got[..] == data[(i * 1000) as usize..(i * 1000 + 1000) as usize]);
        }
    });
    assert_eq!(srv.connections(), 1, "one connection for sequential GETs");
    use base64::Engine;
    let want = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    for r in srv.requests() {
        assert!(r.starts_with("GET /dav/f.bin HTTP/1.1\r\n"), "{r}");
        assert!(r.contains(&want), "no credentials in {r}");
        assert!(r.contains(&format!("Host: 127.0.0.1:{}", srv.port)), "{r}");
    }
}

#[test]
fn a_kept_alive_connection_the_server_closed_is_replaced() {
    let srv = Scripted::start(vec![Act::PartialThenClose]);
    let rt = runtime();
    let dav = client(&srv.url(), &DavConfig::default());
    let data = file_bytes();
    rt.block_on(async {
        for i in 0..3u64 {
            let (got, _) = fetch(&dav, "f.bin", (i * 5000, 5000), FILE_LEN as u64)
                .await
                .expect("get after a close");
            assert!(got[..] == data[(i * 5000) as usize..(i * 5000 + 5000) as usize]);
            // Let the server's close arrive before the next request.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(srv.connections(), 3);
}

#[test]
fn error_answers_are_taken_as_they_are_and_others_asked_again() {
    // 412: the file changed, on the first answer.
    let srv = Scripted::start(vec![Act::Changed]);
    let rt = runtime();
    let dav = client(&srv.url(), &DavConfig::default());
    let r = rt.block_on(fetch(&dav, "f.bin", (0, 100), FILE_LEN as u64));
    assert!(
        matches!(r, Err(DavError::PreconditionFailed(_))),
        "{:?}",
        r.err()
    );
    assert_eq!(srv.requests().len(), 1);
    // 200 with the whole file: asked again through reqwest, the asked range cut out of it.
    let srv = Scripted::start(vec![Act::Whole]);
    let dav = client(&srv.url(), &DavConfig::default());
    let (got, direct) = rt
        .block_on(fetch(&dav, "f.bin", (4000, 3000), FILE_LEN as u64))
        .expect("get");
    assert!(!direct);
    assert!(got[..] == file_bytes()[4000..7000]);
    assert_eq!(srv.requests().len(), 2);
    // An answer for a file of another size than the one listed (a server without etags
    // whose file was replaced): the file changed, whether the answer is a 206 or a 200.
    for act in [Act::Partial, Act::Whole] {
        let srv = Scripted::start(vec![act]);
        let dav = client(&srv.url(), &DavConfig::default());
        let r = rt.block_on(fetch(&dav, "f.bin", (0, 100), FILE_LEN as u64 + 1));
        assert!(
            matches!(r, Err(DavError::PreconditionFailed(_))),
            "{:?}",
            r.err()
        );
        // With a strong etag, If-Match tells a change: a listed size that is off is not
        // taken as one.
        let r = rt.block_on(dav.get_range(
            &RemotePath::new("f.bin"),
            (0, 100),
            FILE_LEN as u64 + 1,
            Some("\"v1\""),
        ));
        assert!(r.is_ok(), "{:?}", r.err());
    }
}

#[test]
fn a_body_cut_short_is_an_error_and_a_silent_server_a_bounded_timeout() {
    let srv = Scripted::start(vec![Act::Short]);
    let rt = runtime();
    let dav = client(&srv.url(), &DavConfig::default());
    let r = rt.block_on(async {
        let mut body = dav
            .get_range(
                &RemotePath::new("f.bin"),
                (0, 20_000),
                FILE_LEN as u64,
                None,
            )
            .await?;
        let mut buf = vec![0; 20_000];
        body.fill(&mut buf).await
    });
    assert!(
        !matches!(r, Ok(20_000)),
        "a cut body passed as complete: {r:?}"
    );

    let srv = Scripted::start(vec![Act::Silent]);
    let cfg = DavConfig {
        read_timeout: Duration::from_secs(1),
        ..DavConfig::default()
    };
    let dav = client(&srv.url(), &cfg);
    let t = Instant::now();
    let r = rt.block_on(fetch(&dav, "f.bin", (0, 100), FILE_LEN as u64));
    assert!(matches!(r, Err(DavError::Timeout(_))), "{:?}", r.err());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
