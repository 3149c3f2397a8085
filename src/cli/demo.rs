//! `nuage demo`: a demo cloud served on 127.0.0.1 by the built-in Nextcloud-compatible server,
//! mounted like a real account. The server's files live in a local folder filled once with a
//! few documents, a folder of pictures and one 200 MiB file.

// Outside Unix only the command's shell is built (see `demo_inner`).
#![cfg_attr(not(unix), allow(unused_imports, dead_code))]

use super::mount::{daemonize, is_daemon_child, report, run_mount, runtime, MountPlan};
use super::{DemoArgs, Platform};
use crate::webdav::{DavConfig, Secret};
use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password";
const BIG_FILE_SIZE: u64 = 200 << 20;

pub(super) fn demo_command(platform: &dyn Platform, a: DemoArgs) -> anyhow::Result<ExitCode> {
    if a.common.daemon && !is_daemon_child() {
        return daemonize(None);
    }
    if is_daemon_child() {
        // The parent sends a password line; the demo does not need it.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    report(demo_inner(platform, a))
}

/// The demo server keeps file ids as inode numbers: Unix only for now.
#[cfg(not(unix))]
fn demo_inner(_platform: &dyn Platform, _a: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the demo cloud runs on Linux and macOS only; mount a real account instead")
}

#[cfg(unix)]
fn demo_inner(platform: &dyn Platform, a: DemoArgs) -> anyhow::Result<ExitCode> {
    let base = super::mount::cache_base()?;
    let home = a
        .data_dir
        .clone()
        .unwrap_or_else(|| base.join("demo-server"));
    let data = home.join("files");
    fill_demo_folder(&home, &data)
        .with_context(|| format!("cannot prepare the demo files in {}", data.display()))?;
    let rt = runtime()?;
    let server = rt
        .block_on(crate::fakecloud::FakeCloud::start(
            crate::fakecloud::FakeCloudConfig {
                root: data.clone(),
                login: DEMO_USER.into(),
                user_id: DEMO_USER.into(),
                passwords: vec![DEMO_PASSWORD.into()],
                quota: Some(5 << 30),
                names: Default::default(),
                notify_push: false,
                bulk_upload: true,
            },
            0,
        ))
        .context("cannot start the demo server on 127.0.0.1")?;
    // What colleagues did, for `nuage activity` to show.
    server.record_activity(
        "claire.martin",
        "file_changed",
        "/Documents/Emploi du temps.csv",
    );
    server.record_activity("paul.durand", "shared", "/Images");
    server.record_activity("claire.martin", "file_created", "/Documents/Bienvenue.txt");
    if !is_daemon_child() {
        eprintln!(
            "demo cloud served at {} (user {DEMO_USER}), files in {}",
            server.base_url(),
            data.display()
        );
    }
    let mut common = a.common.clone();
    if common.cache_dir.is_none() {
        common.cache_dir = Some(base.join("demo-cache"));
    }
    let plan = MountPlan {
        account: None,
        url: server.base_url(),
        user: Some(DEMO_USER.into()),
        password: Some(Secret::new(DEMO_PASSWORD)),
        mountpoint: a.mountpoint.clone(),
        common,
        dav: DavConfig::default(),
    };
    let res = run_mount(platform, &rt, plan);
    drop(server);
    res
}

/// Writes the demo files into `root` unless `home` says they are already there.
fn fill_demo_folder(home: &Path, root: &Path) -> std::io::Result<()> {
    let done = home.join("complete");
    if done.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(root.join("Documents"))?;
    std::fs::create_dir_all(root.join("Images"))?;
    std::fs::create_dir_all(root.join("Vidéos"))?;
    std::fs::write(
        root.join("Documents/Bienvenue.txt"),
        "Bienvenue sur nuage !\n\n\
         Ce dossier est un cloud de démonstration servi sur 127.0.0.1.\n\
         Les fichiers apparaissent tout de suite ; seuls les blocs lus sont téléchargés.\n\
         Essayez : cat, less, cp, ou ouvrez les images.\n",
    )?;
    std::fs::write(
        root.join("Documents/Compte rendu — conseil de classe.md"),
        "# Conseil de classe du 12 novembre\n\n- Présents : équipe pédagogique de 2nde B\n\
         - Points abordés : résultats du trimestre, projet de sortie, orientation\n",
    )?;
    std::fs::write(
        root.join("Documents/Emploi du temps.csv"),
        "jour,heure,classe,salle\nlundi,08:00,2nde B,B112\nlundi,10:00,1ère S2,C204\nmardi,14:00,Tle G1,A003\n",
    )?;
    for (i, name) in ["Lever de soleil.bmp", "Forêt.bmp", "Océan.bmp"]
        .iter()
        .enumerate()
    {
        std::fs::write(root.join("Images").join(name), bmp(320, 200, i as u32))?;
    }
    let mut f = std::fs::File::create(root.join("Vidéos/Grand fichier (200 Mo).bin"))?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..BIG_FILE_SIZE / buf.len() as u64 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    std::fs::write(done, b"")?;
    Ok(())
}

/// A small uncompressed 24-bit BMP with a colour gradient.
fn bmp(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut v = Vec::with_capacity(size as usize);
    v.extend_from_slice(b"BM");
    v.extend_from_slice(&size.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&54u32.to_le_bytes());
    v.extend_from_slice(&40u32.to_le_bytes());
    v.extend_from_slice(&(w as i32).to_le_bytes());
    v.extend_from_slice(&(h as i32).to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&24u16.to_le_bytes());
    v.extend_from_slice(&[0u8; 24]);
    for y in 0..h {
        for x in 0..w {
            let r = ((x * 255 / w) as u8).wrapping_add((seed * 80) as u8);
            let g = (y * 255 / h) as u8;
            let b = (((x + y) * 255 / (w + h)) as u8).wrapping_mul(seed as u8 + 1);
            v.extend_from_slice(&[b, g, r]);
        }
        v.resize(v.len() + (row - w * 3) as usize, 0);
    }
    v
}
