//! Accounts of the fake server: the account password, app passwords, brute-force throttling
//! and Login Flow v2 (nextcloud-protocol.md §7).
//!
//! - Basic authentication accepts the login name or the user id with the account password or
//!   any live app password (§7.1). With two-factor enforced, the account password answers 401
//!   with the `password login forbidden` hint.
//! - Every failed login counts; once `bruteforce_max` failures are reached every authenticated
//!   request answers 429 (§7.7) until a success on a non-throttled path or a reset.
//! - Login Flow v2 (§7.2): `POST /index.php/login/v2` opens a flow named after the User-Agent;
//!   the poll endpoint answers 404 `[]` until the browser side finishes, then 200 once. The
//!   browser side is the flow page plus two form posts: `grant` (log in with the account
//!   password, a new app password is created) and `apptoken` (§7.3, an existing app password
//!   is handed over). Flows expire after `flow_lifetime` (1200 s).
//! - `GET /ocs/v2.php/core/getapppassword` and `DELETE /ocs/v2.php/core/apppassword` (§7.5).
//! - Sessions (§14.3): a DAV request whose Basic login succeeds opens one and gets its
//!   cookies; later requests with the session cookie are let in without checking
//!   credentials, except a `POST` (its CSRF check logs the session out). Revoking an app
//!   password ends the sessions opened with it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Auth {
    /// The account password.
    Account,
    /// An app password (the token itself).
    App(String),
    /// No or wrong credentials.
    Failed,
    /// The account password where two-factor authentication requires an app password.
    PasswordForbidden,
    /// Too many failures from this client.
    Throttled,
    /// A session cookie the server would not take (its CSRF check failed, §7.6).
    CsrfFailed,
}

struct Flow {
    created: Instant,
    client: String,
    login_token: String,
    result: Option<(String, String)>,
}

/// Mutable account state.
pub(super) struct Accounts {
    login: String,
    user_id: String,
    account_password: String,
    app_passwords: HashMap<String, String>,
    failures: u32,
    flows: HashMap<String, Flow>,
    /// Sessions opened by a DAV request's Basic login (§14.3), with the app password they
    /// were opened with (`None`: the account password).
    sessions: HashMap<String, Option<String>>,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A random-looking token of `len` characters from `[A-Za-z0-9]`.
pub(super) fn token(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let mut v = h.finish();
        for _ in 0..10 {
            if out.len() == len {
                break;
            }
            out.push(CHARS[(v % CHARS.len() as u64) as usize] as char);
            v /= CHARS.len() as u64;
        }
    }
    out
}

impl Accounts {
    /// The first password is the account password, the others are app passwords.
    pub(super) fn new(login: &str, user_id: &str, passwords: &[String]) -> Accounts {
        let mut it = passwords.iter();
        let account_password = it.next().cloned().unwrap_or_default();
        Accounts {
            login: login.into(),
            user_id: user_id.into(),
            account_password,
            app_passwords: it.map(|p| (p.clone(), "initial".to_string())).collect(),
            failures: 0,
            flows: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    fn user_matches(&self, user: &str) -> bool {
        user == self.login || user == self.user_id
    }

    /// Checks Basic credentials.
    pub(super) fn check(
        &mut self,
        user: &str,
        password: &str,
        two_factor: bool,
        bruteforce_max: u32,
    ) -> Auth {
        if bruteforce_max > 0 && self.failures >= bruteforce_max {
            return Auth::Throttled;
        }
        let res = if !self.user_matches(user) {
            Auth::Failed
        } else if self.app_passwords.contains_key(password) {
            Auth::App(password.to_string())
        } else if password == self.account_password && !password.is_empty() {
            if two_factor {
                Auth::PasswordForbidden
            } else {
                Auth::Account
            }
        } else {
            Auth::Failed
        };
        match res {
            Auth::Failed | Auth::PasswordForbidden => self.failures += 1,
            _ => self.failures = 0,
        }
        res
    }

    /// Forgets the failure count (an admin's `occ security:bruteforce:reset`).
    pub(super) fn reset_throttle(&mut self) {
        self.failures = 0;
    }

    /// Creates an app password for `client`.
    pub(super) fn new_app_password(&mut self, client: &str) -> String {
        let t = token(72);
        self.app_passwords.insert(t.clone(), client.to_string());
        t
    }

    /// Revokes an app password; false when it did not exist. The sessions opened with it
    /// end with it (the reference allows them a short while more; this server takes none).
    pub(super) fn revoke(&mut self, app_password: &str) -> bool {
        self.sessions
            .retain(|_, p| p.as_deref() != Some(app_password));
        self.app_passwords.remove(app_password).is_some()
    }

    /// Opens a session for a successful Basic login; answers its id.
    pub(super) fn open_session(&mut self, auth: &Auth) -> String {
        let id = token(26);
        let app = match auth {
            Auth::App(p) => Some(p.clone()),
            _ => None,
        };
        self.sessions.insert(id.clone(), app);
        id
    }

    /// Who the live session `id` was opened as (`None`: no such session).
    pub(super) fn session(&self, id: &str) -> Option<Auth> {
        let app = self.sessions.get(id)?;
        Some(app.clone().map_or(Auth::Account, Auth::App))
    }

    /// Ends a session (a logout).
    pub(super) fn end_session(&mut self, id: &str) {
        self.sessions.remove(id);
    }

    /// Live app passwords with their client names.
    pub(super) fn app_passwords(&self) -> Vec<(String, String)> {
        self.app_passwords
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Starts a flow; answers (poll token, login token).
    pub(super) fn start_flow(&mut self, client: &str) -> (String, String) {
        let poll = token(128);
        let login = token(128);
        self.flows.insert(
            poll.clone(),
            Flow {
                created: Instant::now(),
                client: client.to_string(),
                login_token: login.clone(),
                result: None,
            },
        );
        (poll, login)
    }

    fn expire(&mut self, lifetime: Duration) {
        self.flows.retain(|_, f| f.created.elapsed() < lifetime);
    }

    /// The poll: the result once, then never again.
    pub(super) fn poll(
        &mut self,
        poll_token: &str,
        lifetime: Duration,
    ) -> Option<(String, String)> {
        self.expire(lifetime);
        let done = self
            .flows
            .get(poll_token)
            .map(|f| f.result.is_some())
            .unwrap_or(false);
        if done {
            self.flows.remove(poll_token).and_then(|f| f.result)
        } else {
            None
        }
    }

    /// True when `login_token` names a live, unfinished flow.
    pub(super) fn flow_open(&mut self, login_token: &str, lifetime: Duration) -> bool {
        self.expire(lifetime);
        self.flows
            .values()
            .any(|f| f.login_token == login_token && f.result.is_none())
    }

    /// The browser side, "log in and grant access": the account password (or an app password)
    /// creates a new app password named after the flow's client.
    pub(super) fn grant(
        &mut self,
        login_token: &str,
        user: &str,
        password: &str,
        lifetime: Duration,
    ) -> Result<(), &'static str> {
        self.expire(lifetime);
        let ok = self.user_matches(user)
            && (password == self.account_password || self.app_passwords.contains_key(password));
        if !ok {
            self.failures += 1;
            return Err("Wrong login or password.");
        }
        let client = self
            .flows
            .values()
            .find(|f| f.login_token == login_token && f.result.is_none())
            .map(|f| f.client.clone())
            .ok_or("The login token is invalid or has expired.")?;
        let app = self.new_app_password(&client);
        let login = self.login.clone();
        if let Some(f) = self
            .flows
            .values_mut()
            .find(|f| f.login_token == login_token)
        {
            f.result = Some((login, app));
        }
        Ok(())
    }

    /// The browser side, "alternative log in using app password" (§7.3): hands over that
    /// same app password when it belongs to `user`.
    pub(super) fn apptoken(
        &mut self,
        login_token: &str,
        user: &str,
        app_password: &str,
        lifetime: Duration,
    ) -> Result<(), &'static str> {
        self.expire(lifetime);
        if !(self.user_matches(user) && self.app_passwords.contains_key(app_password)) {
            self.failures += 1;
            return Err("Invalid app password");
        }
        let login = self.login.clone();
        let f = self
            .flows
            .values_mut()
            .find(|f| f.login_token == login_token && f.result.is_none())
            .ok_or("The login token is invalid or has expired.")?;
        f.result = Some((login, app_password.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_result_is_given_once_and_expires() {
        let mut a = Accounts::new("alice", "alice-id", &["pw".into()]);
        let life = Duration::from_secs(1200);
        let (poll, login) = a.start_flow("nuage test");
        assert_eq!(a.poll(&poll, life), None);
        assert!(a.grant(&login, "alice", "wrong", life).is_err());
        a.grant(&login, "alice", "pw", life).expect("grant");
        let (user, app) = a.poll(&poll, life).expect("result");
        assert_eq!(user, "alice");
        assert_eq!(app.len(), 72);
        assert_eq!(a.poll(&poll, life), None, "never twice");
        assert_eq!(a.check("alice", &app, false, 10), Auth::App(app.clone()));
        let (poll2, _) = a.start_flow("x");
        assert_eq!(a.poll(&poll2, Duration::ZERO), None, "expired");
    }

    #[test]
    fn two_factor_and_throttling() {
        let mut a = Accounts::new("alice", "alice", &["pw".into(), "app".into()]);
        assert_eq!(a.check("alice", "pw", true, 3), Auth::PasswordForbidden);
        assert_eq!(a.check("alice", "app", true, 3), Auth::App("app".into()));
        for _ in 0..3 {
            assert_eq!(a.check("alice", "bad", false, 3), Auth::Failed);
        }
        assert_eq!(a.check("alice", "app", false, 3), Auth::Throttled);
        a.reset_throttle();
        assert_eq!(a.check("alice", "pw", false, 3), Auth::Account);
    }
}
