//! Requests that change names, whose answer is lost after the server did them (the
//! connection closes before the answer's first byte): against Apache `mod_dav` through a
//! relay that drops one answer. The client sends the request again on a new connection and
//! takes what the server then says for what it is: done by the first request, or refused.

mod common;

use common::*;
use nuage::webdav::{Credentials, DavClient, DavConfig, DavError, Depth, RemotePath, Secret};

struct Setup {
    apache: Apache,
    relay: Relay,
    dav: DavClient,
    rt: tokio::runtime::Runtime,
}

/// Apache holding `files` (name, content), and a client that has talked to it once through
/// the relay (so that a connection is open).
fn setup(files: &[(&str, &str)]) -> Setup {
    let apache = Apache::start();
    for (name, content) in files {
        std::fs::write(apache.data().join(name), content).expect("seed");
    }
    apache.fix_owner();
    let relay = Relay::start(apache.port);
    let cfg = DavConfig::default();
    let http = nuage::webdav::http_client(&cfg).expect("client");
    let dav = DavClient::new(
        http,
        reqwest::Url::parse(&format!("{}/dav/", relay.url())).expect("url"),
        Some(Credentials {
            user: USER.into(),
            password: Secret::new(PASSWORD),
        }),
        &cfg,
    )
    .with_basic_auth();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(dav.propfind(&RemotePath::new(""), Depth::One))
        .expect("listing");
    Setup {
        apache,
        relay,
        dav,
        rt,
    }
}

impl Setup {
    /// Runs `f` with the next answer lost; checks that one was.
    fn losing_one<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let before = self.relay.cuts();
        self.relay.set(RelayMode::LoseAnswer);
        let out = self.rt.block_on(f);
        assert_eq!(self.relay.cuts(), before + 1, "no answer was lost");
        out
    }
}

#[test]
fn a_move_delete_or_mkcol_whose_answer_is_lost_counts_as_done() {
    let s = setup(&[("a.txt", "contenu"), ("gone.txt", "x")]);
    let data = s.apache.data();
    let p = RemotePath::new;

    let moved = s.losing_one(s.dav.move_to(&p("a.txt"), &p("b.txt"), false, false));
    assert!(moved.is_ok(), "{moved:?}");
    assert!(!data.join("a.txt").exists());
    assert_eq!(
        std::fs::read(data.join("b.txt")).expect("moved"),
        b"contenu"
    );

    let deleted = s.losing_one(s.dav.delete(&p("gone.txt"), false, None));
    assert!(deleted.is_ok(), "{deleted:?}");
    assert!(!data.join("gone.txt").exists());

    let made = s.losing_one(s.dav.mkcol(&p("dossier")));
    assert!(made.is_ok(), "{made:?}");
    assert!(data.join("dossier").is_dir());
}

#[test]
fn a_refusal_after_a_lost_answer_is_still_a_refusal() {
    let s = setup(&[("fichier", "x"), ("source.txt", "s"), ("pris.txt", "p")]);
    let data = s.apache.data();
    let p = RemotePath::new;

    // A name a file holds: refused both times (Apache: 400), not taken for a folder made.
    let made = s.losing_one(s.dav.mkcol(&p("fichier")));
    assert!(made.is_err(), "{made:?}");
    assert!(data.join("fichier").is_file());

    // Moving onto a name taken (no overwrite): refused both times (412), both files kept.
    let moved = s.losing_one(
        s.dav
            .move_to(&p("source.txt"), &p("pris.txt"), false, false),
    );
    assert!(
        matches!(moved, Err(DavError::PreconditionFailed(_))),
        "{moved:?}"
    );
    assert_eq!(std::fs::read(data.join("pris.txt")).expect("kept"), b"p");
    assert_eq!(std::fs::read(data.join("source.txt")).expect("kept"), b"s");

    // Moving what is not there: not found both times.
    let moved = s.losing_one(
        s.dav
            .move_to(&p("absent.txt"), &p("ailleurs.txt"), false, false),
    );
    assert!(matches!(moved, Err(DavError::NotFound(_))), "{moved:?}");
}

/// What a mount, `nuage login` and the activity feed read from Nextcloud besides WebDAV
/// (`status.php`, the OCS user and capabilities), its answer lost: asked once more, the
/// answer is the server's.
#[test]
fn a_nextcloud_read_whose_answer_is_lost_is_asked_again() {
    let cloud = Cloud::start();
    let relay = Relay::start(cloud.port());
    let http = nuage::webdav::http_client(&DavConfig::default()).expect("client");
    let base = reqwest::Url::parse(&relay.url()).expect("url");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let password = Secret::new(PASSWORD);
    use nuage::webdav::nextcloud as nc;
    for round in 1..=3u64 {
        relay.set(RelayMode::LoseAnswer);
        let asked = match round {
            1 => rt
                .block_on(nc::status(&http, &base))
                .map(|s| s.map(|s| s.productname)),
            2 => rt
                .block_on(nc::user_id(&http, &base, USER, &password))
                .map(Some),
            _ => rt
                .block_on(nc::capabilities(&http, &base, USER, &password))
                .map(|c| c.pointer("/dav/chunking").map(|v| v.to_string())),
        };
        assert_eq!(relay.cuts(), round, "round {round}: no answer was lost");
        let got = asked.expect("answered").expect("an answer");
        assert!(!got.is_empty(), "round {round}");
        if round == 2 {
            assert_eq!(got, USER_ID);
        }
    }
}
