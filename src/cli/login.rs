//! `nuage login`, `nuage accounts`, `nuage logout`.
//!
//! Two ways in, as the academy's guide describes: the browser login flow (Login Flow v2,
//! nextcloud-protocol.md §7.2), or a login name plus an app password created in Settings >
//! Security (§7.3). The secret is checked against the server before anything is saved; an
//! account password is traded for an app password (§7.5) so that it is never stored.
//!
//! Exit statuses (also in `nuage login --help`): 3 server unreachable, 4 TLS failure, 5 not a
//! Nextcloud server, 6 maintenance, 7 wrong login or password, 8 throttled after failed logins,
//! 9 an app password is required, 10 the browser login expired or was cancelled.

use super::{AccountsArgs, LoginArgs, LogoutArgs};
use crate::auth::{default_account_name, Account, AccountOptions, AccountStore, SecretPlace};
use crate::webdav::{self, nextcloud, DavConfig, DavError, Secret};
use anyhow::{anyhow, Context};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// A login failure with its exit status.
#[derive(Debug)]
pub(super) struct LoginFailure {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoginFailure {}

/// The exit status for a server answer (see the module documentation).
pub(super) fn exit_code(e: &DavError) -> u8 {
    match e {
        DavError::Connect(_) | DavError::Timeout(_) => 3,
        DavError::Tls(_) => 4,
        DavError::NotNextcloud(_) => 5,
        DavError::Unavailable(_) => 6,
        DavError::Unauthorized => 7,
        DavError::TooManyRequests => 8,
        DavError::AppPasswordRequired => 9,
        _ => 1,
    }
}

fn fail(what: &str, e: DavError) -> anyhow::Error {
    let message = match &e {
        DavError::Unavailable(503) => {
            format!("{what}: the server is in maintenance mode; try again later")
        }
        DavError::Unauthorized => format!(
            "{what}: wrong login or app password (the server answered 401); nothing was saved"
        ),
        _ => format!("{what}: {e}"),
    };
    anyhow::Error::new(LoginFailure {
        code: exit_code(&e),
        message,
    })
}

fn server_url(raw: &str) -> anyhow::Result<reqwest::Url> {
    let t = raw.trim().trim_end_matches('/');
    let with_scheme = if t.contains("://") {
        t.to_string()
    } else {
        format!("https://{t}")
    };
    let u = reqwest::Url::parse(&with_scheme).map_err(|e| {
        anyhow!("invalid server address {raw:?}: {e} (example: https://cloud.example.org)")
    })?;
    if u.scheme() != "https" && u.scheme() != "http" {
        anyhow::bail!("invalid server address {raw}: it must start with https:// or http://");
    }
    super::reject_url_credentials(&u)?;
    Ok(u)
}

fn read_line(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn read_secret(prompt: &str) -> anyhow::Result<Secret> {
    let s = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).context("cannot read the app password")?
    } else {
        read_line("")?
    };
    if s.is_empty() {
        anyhow::bail!("no app password given");
    }
    Ok(Secret::new(s))
}

pub(super) fn login_command(a: LoginArgs) -> anyhow::Result<ExitCode> {
    let mut base = server_url(&a.server)?;
    // An address copied from a browser on one of the server's pages: its server.
    if let Some(page) = nextcloud::web_page(&base) {
        if page.share_token.is_some() {
            anyhow::bail!(
                "{base} is a public share link, not a server address: give the server address {} to sign in",
                page.base
            );
        }
        base = page.base;
    }
    let dav = DavConfig {
        insecure: a.insecure,
        ca_cert: a.ca_cert.clone(),
        ..DavConfig::default()
    };
    let http = webdav::http_client(&dav)?;
    let rt = super::mount::runtime()?;
    let what = format!("cannot sign in to {base}");
    let base = rt
        .block_on(nextcloud::settled_base(&http, &base))
        .map_err(|e| fail(&what, e))?;
    let (server, login, secret) = if a.app_password {
        let login = match &a.user {
            Some(u) => u.clone(),
            None => read_line("Login: ")?,
        };
        if login.is_empty() {
            anyhow::bail!("no login given (use --user LOGIN)");
        }
        let secret = read_secret(&format!("App password for {login}: "))?;
        (base.clone(), login, secret)
    } else {
        rt.block_on(browser_flow(&http, &base, a.no_browser))?
    };
    let user_id = rt
        .block_on(nextcloud::check_login(&http, &server, &login, &secret))
        .map_err(|e| fail(&what, e))?;
    // An account password is exchanged for an app password, which is what gets stored.
    let secret = match rt.block_on(nextcloud::get_app_password(&http, &server, &login, &secret)) {
        Ok(Some(app)) => {
            eprintln!(
                "note: that was your account password; nuage created an app password for this device instead and stores only that"
            );
            app
        }
        Ok(None) => secret,
        Err(e) => {
            tracing::debug!(error = %e, "getapppassword failed; keeping the given secret");
            secret
        }
    };
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| default_account_name(&login, &server));
    let store = AccountStore::open_default()?;
    let account = Account {
        name: name.clone(),
        server: server.as_str().trim_end_matches('/').to_string(),
        login: login.clone(),
        user_id,
        secret_in: SecretPlace::File,
        options: AccountOptions {
            read_only: a.read_only,
            cache_size: a.cache_size.clone(),
            cache_dir: a.cache_dir.clone(),
        },
    };
    let place = store.save(account, &secret)?;
    let where_ = match place {
        SecretPlace::Keyring => "in the desktop keyring".to_string(),
        SecretPlace::File => format!(
            "in {}, readable only by you",
            store.dir().join("secrets.json").display()
        ),
    };
    println!("saved account {name} (app password {where_})");
    println!("mount it with: nuage mount {name} ~/Nextcloud");
    Ok(ExitCode::SUCCESS)
}

/// Login Flow v2: prints the address, opens the browser when there is a desktop, polls.
async fn browser_flow(
    http: &reqwest::Client,
    base: &reqwest::Url,
    no_browser: bool,
) -> anyhow::Result<(reqwest::Url, String, Secret)> {
    let what = format!("cannot sign in to {base}");
    match nextcloud::status(http, base)
        .await
        .map_err(|e| fail(&what, e))?
    {
        None => return Err(fail(&what, DavError::NotNextcloud(base.to_string()))),
        Some(st) if st.maintenance => return Err(fail(&what, DavError::Unavailable(503))),
        Some(_) => {}
    }
    // Ctrl-C cancels from now on (registered before the address is shown).
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot watch for Ctrl-C")?;
    let flow = nextcloud::start_login_flow(http, base)
        .await
        .map_err(|e| fail(&what, e))?;
    println!("Open this address in your browser and approve the access:");
    println!("{}", flow.login_url);
    let _ = std::io::stdout().flush();
    let desktop =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if desktop && !no_browser {
        let _ = std::process::Command::new("xdg-open")
            .arg(&flow.login_url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    eprintln!("waiting for the approval (up to 20 minutes; Ctrl-C cancels)...");
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    let mut failures = 0u32;
    loop {
        if Instant::now() >= deadline {
            return Err(anyhow::Error::new(LoginFailure {
                code: 10,
                message: format!(
                    "{what}: the login was not approved within 20 minutes; run nuage login again"
                ),
            }));
        }
        match nextcloud::poll_login_flow(http, &flow).await {
            Ok(Some(r)) => {
                let server = server_url(&r.server).unwrap_or_else(|_| base.clone());
                return Ok((server, r.login, r.app_password));
            }
            Ok(None) => failures = 0,
            Err(e) if e.is_retryable() && failures < 10 => failures += 1,
            Err(e) => return Err(fail(&what, e)),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = cancelled(
                #[cfg(unix)]
                &mut interrupt,
            ) => {
                return Err(anyhow::Error::new(LoginFailure {
                    code: 10,
                    message: format!("{what}: cancelled"),
                }));
            }
        }
    }
}

#[cfg(unix)]
async fn cancelled(s: &mut tokio::signal::unix::Signal) {
    s.recv().await;
}

#[cfg(not(unix))]
async fn cancelled() {
    let _ = tokio::signal::ctrl_c().await;
}

pub(super) fn accounts_command(a: AccountsArgs) -> anyhow::Result<ExitCode> {
    let store = AccountStore::open_default()?;
    let list = store.list()?;
    if a.json {
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|acc| {
                serde_json::json!({"name": acc.name, "server": acc.server, "login": acc.login,
                    "user_id": acc.user_id, "secret_in": acc.secret_in, "options": acc.options})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no saved accounts (add one with: nuage login https://cloud.example.org)");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<40} {:<40} {:<20} SECRET", "NAME", "SERVER", "LOGIN");
    for acc in list {
        let place = match acc.secret_in {
            SecretPlace::Keyring => "keyring",
            SecretPlace::File => "file",
        };
        println!(
            "{:<40} {:<40} {:<20} {place}",
            acc.name, acc.server, acc.login
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn logout_command(a: LogoutArgs) -> anyhow::Result<ExitCode> {
    let store = AccountStore::open_default()?;
    let acc = store.get(&a.account)?;
    match store.secret(&acc) {
        Ok(secret) => {
            let dav = DavConfig {
                insecure: a.insecure,
                ca_cert: a.ca_cert.clone(),
                connect_timeout: Duration::from_secs(10),
                read_timeout: Duration::from_secs(15),
                request_timeout: Duration::from_secs(20),
            };
            let res = server_url(&acc.server).and_then(|base| {
                let http = webdav::http_client(&dav)?;
                let rt = super::mount::runtime()?;
                rt.block_on(nextcloud::revoke_app_password(
                    &http, &base, &acc.login, &secret,
                ))
                .map_err(anyhow::Error::new)
            });
            match res {
                Ok(()) => eprintln!("revoked the app password on {}", acc.server),
                Err(e) => eprintln!(
                    "warning: could not revoke the app password on the server ({e:#}); revoke it in the web interface under Settings > Security"
                ),
            }
        }
        Err(e) => eprintln!("warning: {e}"),
    }
    store.remove(&acc.name)?;
    println!("forgot account {}", acc.name);
    Ok(ExitCode::SUCCESS)
}
