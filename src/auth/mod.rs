//! Saved accounts: the non-secret settings in `accounts.json`, the app passwords in the
//! desktop keyring (Secret Service) when one answers, else in `secrets.json` (mode 0600), both
//! under `$XDG_CONFIG_HOME/nuage/`.
//!
//! Nothing here prints a secret: [`Secret`] redacts itself, `accounts.json` never holds one,
//! and errors name the account, not the password.

use crate::webdav::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where an account's app password is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretPlace {
    /// The desktop keyring (Secret Service on Linux, Credential Manager on Windows).
    Keyring,
    /// `secrets.json`, readable only by the user.
    File,
}

/// Mount settings remembered with an account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOptions {
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Cache size such as `5G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<String>,
    /// Cache folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
}

/// One saved account (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The name used on the command line (`login@host` by default).
    pub name: String,
    /// The Nextcloud base URL.
    pub server: String,
    /// The login name (what Basic authentication sends).
    pub login: String,
    /// The user id (what DAV paths use).
    pub user_id: String,
    /// Where the app password is.
    pub secret_in: SecretPlace,
    /// Mount settings.
    #[serde(default)]
    pub options: AccountOptions,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AccountsFile {
    #[serde(default)]
    accounts: Vec<Account>,
}

/// Errors of the account store.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No account of that name.
    #[error("no saved account named {0:?} (see: nuage accounts)")]
    NoAccount(String),
    /// The account exists but its app password is gone.
    #[error("the app password of {0:?} is missing from the {1}; sign in again with: nuage login")]
    NoSecret(String, &'static str),
    /// File trouble.
    #[error("{0}")]
    Io(String),
}

/// The saved accounts of this user.
#[derive(Debug, Clone)]
pub struct AccountStore {
    dir: PathBuf,
    keyring: bool,
}

const SERVICE: &str = "nuage";

impl AccountStore {
    /// The store in `$XDG_CONFIG_HOME/nuage` (or `$NUAGE_CONFIG_DIR`). The keyring is used
    /// unless `NUAGE_KEYRING=off`.
    pub fn open_default() -> Result<AccountStore, AuthError> {
        let dir = match std::env::var_os("NUAGE_CONFIG_DIR") {
            Some(d) => PathBuf::from(d),
            None => directories::BaseDirs::new()
                .ok_or_else(|| AuthError::Io("cannot find the home folder".into()))?
                .config_dir()
                .join("nuage"),
        };
        let keyring = !matches!(
            std::env::var("NUAGE_KEYRING").as_deref(),
            Ok("off") | Ok("0") | Ok("no")
        );
        Ok(AccountStore { dir, keyring })
    }

    /// A store in `dir`, with or without the keyring.
    pub fn at(dir: &Path, keyring: bool) -> AccountStore {
        AccountStore {
            dir: dir.to_path_buf(),
            keyring,
        }
    }

    /// The folder of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn accounts_path(&self) -> PathBuf {
        self.dir.join("accounts.json")
    }

    fn secrets_path(&self) -> PathBuf {
        self.dir.join("secrets.json")
    }

    fn read_accounts(&self) -> Result<AccountsFile, AuthError> {
        match std::fs::read(self.accounts_path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                AuthError::Io(format!(
                    "{} is damaged ({e}); fix or remove it",
                    self.accounts_path().display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AccountsFile::default()),
            Err(e) => Err(AuthError::Io(format!(
                "cannot read {}: {e}",
                self.accounts_path().display()
            ))),
        }
    }

    /// Every saved account, sorted by name.
    pub fn list(&self) -> Result<Vec<Account>, AuthError> {
        let mut v = self.read_accounts()?.accounts;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// The account named `name`.
    pub fn get(&self, name: &str) -> Result<Account, AuthError> {
        self.list()?
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| AuthError::NoAccount(name.to_string()))
    }

    /// Saves (or replaces) an account with its app password; answers where the secret went.
    pub fn save(&self, mut account: Account, secret: &Secret) -> Result<SecretPlace, AuthError> {
        self.ensure_dir()?;
        let place = if self.keyring && keyring_set(&account.name, secret) {
            SecretPlace::Keyring
        } else {
            self.file_secret_set(&account.name, Some(secret))?;
            SecretPlace::File
        };
        if place == SecretPlace::Keyring {
            // A copy left in the file by an earlier login would outlive the keyring entry.
            self.file_secret_set(&account.name, None)?;
        }
        account.secret_in = place;
        let mut f = self.read_accounts()?;
        f.accounts.retain(|a| a.name != account.name);
        f.accounts.push(account);
        self.write_private(
            &self.accounts_path(),
            &serde_json::to_vec_pretty(&f).unwrap_or_default(),
        )?;
        Ok(place)
    }

    /// The app password of `account`.
    pub fn secret(&self, account: &Account) -> Result<Secret, AuthError> {
        match account.secret_in {
            SecretPlace::Keyring => keyring_get(&account.name)
                .ok_or_else(|| AuthError::NoSecret(account.name.clone(), "desktop keyring")),
            SecretPlace::File => self
                .file_secrets()?
                .remove(&account.name)
                .map(Secret::new)
                .ok_or_else(|| AuthError::NoSecret(account.name.clone(), "secrets file")),
        }
    }

    /// Forgets an account and its app password.
    pub fn remove(&self, name: &str) -> Result<Account, AuthError> {
        let mut f = self.read_accounts()?;
        let Some(i) = f.accounts.iter().position(|a| a.name == name) else {
            return Err(AuthError::NoAccount(name.to_string()));
        };
        let acc = f.accounts.remove(i);
        if acc.secret_in == SecretPlace::Keyring {
            keyring_delete(name);
        }
        self.file_secret_set(name, None)?;
        self.write_private(
            &self.accounts_path(),
            &serde_json::to_vec_pretty(&f).unwrap_or_default(),
        )?;
        Ok(acc)
    }

    fn ensure_dir(&self) -> Result<(), AuthError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| AuthError::Io(format!("cannot create {}: {e}", self.dir.display())))?;
        let _ = make_private(&self.dir);
        Ok(())
    }

    fn file_secrets(&self) -> Result<BTreeMap<String, String>, AuthError> {
        match std::fs::read(self.secrets_path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|_| {
                AuthError::Io(format!(
                    "{} is damaged; remove it and sign in again",
                    self.secrets_path().display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(AuthError::Io(format!(
                "cannot read {}: {e}",
                self.secrets_path().display()
            ))),
        }
    }

    fn file_secret_set(&self, name: &str, secret: Option<&Secret>) -> Result<(), AuthError> {
        let mut m = self.file_secrets()?;
        let changed = match secret {
            Some(s) => {
                m.insert(name.to_string(), s.expose().to_string())
                    .as_deref()
                    != Some(s.expose())
            }
            None => m.remove(name).is_some(),
        };
        if changed {
            self.ensure_dir()?;
            let body = serde_json::to_vec_pretty(&m).unwrap_or_default();
            self.write_private(&self.secrets_path(), &body)?;
        }
        Ok(())
    }

    /// Writes a file readable only by the user, atomically (temporary file, fsync, rename).
    fn write_private(&self, path: &Path, body: &[u8]) -> Result<(), AuthError> {
        let tmp = path.with_extension("tmp");
        let err =
            |e: std::io::Error| AuthError::Io(format!("cannot write {}: {e}", path.display()));
        let _ = std::fs::remove_file(&tmp);
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(&tmp).map_err(err)?;
        f.write_all(body).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(err)
    }
}

#[cfg(any(target_os = "linux", windows))]
fn keyring_entry(name: &str) -> Option<keyring::Entry> {
    // Without a session bus there is no Secret Service: do not even try.
    #[cfg(target_os = "linux")]
    std::env::var_os("DBUS_SESSION_BUS_ADDRESS")?;
    keyring::Entry::new(SERVICE, name).ok()
}

#[cfg(any(target_os = "linux", windows))]
fn keyring_set(name: &str, secret: &Secret) -> bool {
    match keyring_entry(name).map(|e| e.set_password(secret.expose())) {
        Some(Ok(())) => true,
        Some(Err(e)) => {
            tracing::info!(error = %e, "no desktop keyring: keeping the app password in a private file");
            false
        }
        None => false,
    }
}

#[cfg(any(target_os = "linux", windows))]
fn keyring_get(name: &str) -> Option<Secret> {
    keyring_entry(name)?.get_password().ok().map(Secret::new)
}

#[cfg(any(target_os = "linux", windows))]
fn keyring_delete(name: &str) {
    if let Some(e) = keyring_entry(name) {
        let _ = e.delete_credential();
    }
}

#[cfg(not(any(target_os = "linux", windows)))]
fn keyring_set(_name: &str, _secret: &Secret) -> bool {
    let _ = SERVICE;
    false
}

#[cfg(not(any(target_os = "linux", windows)))]
fn keyring_get(_name: &str) -> Option<Secret> {
    None
}

#[cfg(not(any(target_os = "linux", windows)))]
fn keyring_delete(_name: &str) {}

/// The default account name: `login@host` (with `:port` when not the default port).
pub fn default_account_name(login: &str, server: &reqwest::Url) -> String {
    let host = server.host_str().unwrap_or("server");
    match server.port() {
        Some(p) => format!("{login}@{host}:{p}"),
        None => format!("{login}@{host}"),
    }
}

/// Makes a folder readable by its owner only (0700): the settings and secrets folder, the
/// cache (copies of the account's files), the log folder.
pub fn make_private(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trip_is_private() {
        let d = tempfile::tempdir().expect("tmp");
        let st = AccountStore::at(d.path(), false);
        let acc = Account {
            name: "alice@h".into(),
            server: "https://h".into(),
            login: "alice".into(),
            user_id: "alice".into(),
            secret_in: SecretPlace::Keyring,
            options: AccountOptions::default(),
        };
        assert_eq!(
            st.save(acc.clone(), &Secret::new("s3cret")).expect("save"),
            SecretPlace::File
        );
        let got = st.get("alice@h").expect("get");
        assert_eq!(got.secret_in, SecretPlace::File);
        assert_eq!(st.secret(&got).expect("secret").expose(), "s3cret");
        let accounts = std::fs::read_to_string(d.path().join("accounts.json")).expect("read");
        assert!(!accounts.contains("s3cret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join("secrets.json"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        st.remove("alice@h").expect("remove");
        assert!(matches!(st.get("alice@h"), Err(AuthError::NoAccount(_))));
        let secrets = std::fs::read_to_string(d.path().join("secrets.json")).expect("read");
        assert!(!secrets.contains("s3cret"));
    }

    #[test]
    fn account_names() {
        let u = reqwest::Url::parse("https://cloud-aca.ac-besancon.fr").expect("url");
        assert_eq!(
            default_account_name("jdupont", &u),
            "jdupont@cloud-aca.ac-besancon.fr"
        );
        let u = reqwest::Url::parse("http://127.0.0.1:8080").expect("url");
        assert_eq!(default_account_name("a", &u), "a@127.0.0.1:8080");
    }
}
