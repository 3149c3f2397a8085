//! `nuage autostart`: mount a saved account at every login of the desktop session, through an
//! XDG autostart entry (`$XDG_CONFIG_HOME/autostart/nuage-<account>.desktop`, read by GNOME,
//! KDE, Xfce, Cinnamon, MATE...). The entry runs `nuage mount --daemon ACCOUNT MOUNTPOINT`;
//! the account's app password stays where `nuage login` saved it, never in the entry.

use super::AutostartArgs;
use crate::auth::AccountStore;
use anyhow::{anyhow, bail, Context};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Keys of our own in the entry: what `--list` shows.
const ACCOUNT_KEY: &str = "X-Nuage-Account";
const MOUNTPOINT_KEY: &str = "X-Nuage-Mountpoint";

/// The folder the desktop session reads autostart entries from.
fn autostart_dir() -> anyhow::Result<PathBuf> {
    let base =
        directories::BaseDirs::new().ok_or_else(|| anyhow!("cannot find the home folder"))?;
    Ok(base.config_dir().join("autostart"))
}

/// The entry's file name for `account` (any character outside a plain set becomes `_`).
fn entry_path(dir: &Path, account: &str) -> PathBuf {
    let safe: String = account
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("nuage-{safe}.desktop"))
}

/// A value of type string in a desktop entry (the specification's escapes).
fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_value`].
fn unescape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('s') => out.push(' '),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// The `Exec` value running `args`: each argument quoted, with `"`, `` ` ``, `$` and `\`
/// escaped inside the quotes, `%` doubled (it starts field codes), then the string escapes
/// (applied before the quoting when the entry is read).
fn exec_line(args: &[&str]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| {
            let mut q = String::from("\"");
            for c in a.chars() {
                match c {
                    '"' | '`' | '$' | '\\' => {
                        q.push('\\');
                        q.push(c);
                    }
                    '%' => q.push_str("%%"),
                    c => q.push(c),
                }
            }
            q.push('"');
            q
        })
        .collect();
    escape_value(&quoted.join(" "))
}

/// The entry that mounts `account` on `mountpoint` with the program at `exe`.
fn entry(exe: &str, account: &str, mountpoint: &str) -> String {
    format!(
        "[Desktop Entry]\nType=Application\nName=nuage: {name}\nComment=Mounts the cloud account {name} on {mp}\nExec={exec}\nTerminal=false\nNoDisplay=true\nX-GNOME-Autostart-enabled=true\n{ACCOUNT_KEY}={name}\n{MOUNTPOINT_KEY}={mp}\n",
        name = escape_value(account),
        mp = escape_value(mountpoint),
        exec = exec_line(&[exe, "mount", "--daemon", account, mountpoint]),
    )
}

/// The accounts mounted at login: (account, mount point, entry file).
fn entries(dir: &Path) -> Vec<(String, String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let key = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                    .map(unescape_value)
            };
            Some((key(ACCOUNT_KEY)?, key(MOUNTPOINT_KEY)?, e.path()))
        })
        .collect();
    out.sort();
    out
}

pub(super) fn autostart_command(a: AutostartArgs) -> anyhow::Result<ExitCode> {
    let dir = autostart_dir()?;
    let Some(account) = a.account.filter(|_| !a.list) else {
        let list = entries(&dir);
        if list.is_empty() {
            println!(
                "no account is mounted at login (add one with: nuage autostart ACCOUNT MOUNTPOINT)"
            );
        }
        for (account, mp, _) in list {
            println!("{account}\t{mp}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let path = entry_path(&dir, &account);
    if a.remove {
        let mine: Vec<PathBuf> = entries(&dir)
            .into_iter()
            .filter(|(acc, _, _)| *acc == account)
            .map(|(_, _, p)| p)
            .collect();
        if mine.is_empty() {
            bail!("{account} is not mounted at login");
        }
        for p in mine {
            std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
        println!("{account} will no longer be mounted at login");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(mountpoint) = a.mountpoint else {
        bail!("where should {account} be mounted? nuage autostart {account} MOUNTPOINT");
    };
    AccountStore::open_default()?.get(&account)?;
    let mountpoint = if mountpoint.is_absolute() {
        mountpoint
    } else {
        std::env::current_dir()?.join(mountpoint)
    };
    std::fs::create_dir_all(&mountpoint)
        .with_context(|| format!("cannot make the mount point {}", mountpoint.display()))?;
    let Some(mp) = mountpoint.to_str() else {
        bail!(
            "the mount point {} is not valid UTF-8",
            mountpoint.display()
        );
    };
    let acc = account.as_str();
    if mp.contains(['\n', '\r']) || acc.contains(['\n', '\r']) {
        bail!("a line break in the account or mount point name cannot go in an autostart entry");
    }
    let exe = std::env::current_exe().context("cannot find the nuage program")?;
    let exe = exe
        .to_str()
        .ok_or_else(|| anyhow!("the path of the nuage program is not valid UTF-8"))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let tmp = path.with_extension("desktop.tmp");
    std::fs::write(&tmp, entry(exe, acc, mp))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "{acc} will be mounted on {mp} at each login (autostart entry {}); to mount it now: nuage mount --daemon {acc} {mp}",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_exec_lines_follow_the_desktop_entry_escapes() {
        let odd = "a\\b\nc";
        assert_eq!(unescape_value(&escape_value(odd)), odd);
        assert_eq!(
            exec_line(&["/usr/bin/nuage", "it's 100% \"$HOME\" \\"]),
            "\"/usr/bin/nuage\" \"it's 100%% \\\\\"\\\\$HOME\\\\\" \\\\\\\\\""
        );
        assert_eq!(
            entry_path(Path::new("/x"), "marie.dupont@cloud/aca"),
            Path::new("/x/nuage-marie.dupont@cloud_aca.desktop")
        );
    }
}
