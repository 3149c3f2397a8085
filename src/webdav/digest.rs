//! HTTP Digest authentication (RFC 7616, and RFC 2617 servers without `qop`): what some
//! WebDAV servers ask for instead of Basic (GNOME's phodav behind `chezdav` and
//! gnome-user-share, Apache with `mod_auth_digest`, some NAS boxes). The password never
//! travels; each request carries a hash of it, the server's nonce, the method and the path.
//!
//! This module only parses challenges and computes answers; [`super::AuthGate`] decides when.

use std::sync::atomic::{AtomicU32, Ordering};

/// The hash a challenge names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `MD5` (the default when none is named).
    Md5,
    /// `SHA-256`.
    Sha256,
}

/// A `Digest` challenge from a `WWW-Authenticate` header, with the count of requests made
/// with its nonce.
#[derive(Debug)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The `-sess` variant: the password hash is salted with the nonces.
    pub session: bool,
    /// `qop="auth"` offered (else the RFC 2069 form, without nonce count).
    pub qop_auth: bool,
    /// `stale=true`: the nonce we used expired, the password was right.
    pub stale: bool,
    /// The name the algorithm was given, sent back as is.
    algorithm_name: String,
    nc: AtomicU32,
}

/// Splits a `WWW-Authenticate` value into its challenges: scheme, then its parameters
/// (names lowercased, quoted values unquoted). Never fails: what cannot be read is skipped.
fn challenges(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    let b = value.as_bytes();
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut i = 0;
    let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&c);
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == start {
            i += 1; // a character no token holds: skipped
            continue;
        }
        let token = &value[start..i];
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' {
            // A parameter of the current challenge.
            j += 1;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            let mut v = String::new();
            if j < b.len() && b[j] == b'"' {
                j += 1;
                let mut bytes = Vec::new();
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' && j + 1 < b.len() {
                        j += 1;
                    }
                    bytes.push(b[j]);
                    j += 1;
                }
                j += 1; // the closing quote
                v = String::from_utf8_lossy(&bytes).into_owned();
            } else {
                let vs = j;
                while j < b.len() && b[j] != b',' && !b[j].is_ascii_whitespace() {
                    j += 1;
                }
                v.push_str(&value[vs..j]);
            }
            if let Some((_, params)) = out.last_mut() {
                params.push((token.to_ascii_lowercase(), v));
            }
            i = j;
        } else {
            out.push((token.to_string(), Vec::new()));
            i = j;
        }
    }
    out
}

/// The schemes the `WWW-Authenticate` values offer, as written (`Basic`, `Digest`, `NTLM`...).
pub fn schemes<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(challenges)
        .map(|(scheme, _)| scheme)
        .collect()
}

impl Challenge {
    /// The best `Digest` challenge among `WWW-Authenticate` values (SHA-256 before MD5), or
    /// `None` when there is none this client can answer (no Digest, an unknown algorithm,
    /// or only `qop=auth-int`).
    pub fn pick<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
        let mut best: Option<Challenge> = None;
        for v in values {
            for (scheme, params) in challenges(v) {
                if !scheme.eq_ignore_ascii_case("digest") {
                    continue;
                }
                let Some(c) = Self::from_params(&params) else {
                    continue;
                };
                let better = match &best {
                    None => true,
                    Some(b) => b.algorithm == Algorithm::Md5 && c.algorithm == Algorithm::Sha256,
                };
                if better {
                    best = Some(c);
                }
            }
        }
        best
    }

    fn from_params(params: &[(String, String)]) -> Option<Challenge> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let nonce = get("nonce")?.to_string();
        let algorithm_name = get("algorithm").unwrap_or("MD5").to_string();
        let (algorithm, session) = match algorithm_name.to_ascii_uppercase().as_str() {
            "MD5" => (Algorithm::Md5, false),
            "MD5-SESS" => (Algorithm::Md5, true),
            "SHA-256" => (Algorithm::Sha256, false),
            "SHA-256-SESS" => (Algorithm::Sha256, true),
            _ => return None,
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(q) => {
                if !q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")) {
                    return None;
                }
                true
            }
        };
        Some(Challenge {
            realm: get("realm").unwrap_or("").to_string(),
            nonce,
            opaque: get("opaque").map(str::to_string),
            algorithm,
            session,
            qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            algorithm_name,
            nc: AtomicU32::new(0),
        })
    }

    fn hash(&self, data: &str) -> String {
        match self.algorithm {
            Algorithm::Md5 => format!("{:x}", md5::compute(data.as_bytes())),
            Algorithm::Sha256 => {
                use sha2::Digest as _;
                let d = sha2::Sha256::digest(data.as_bytes());
                d.iter().map(|b| format!("{b:02x}")).collect()
            }
        }
    }

    /// The `Authorization` value for `method` on `uri` (the request target as sent: path and
    /// query), counting one more request with this nonce.
    pub fn authorization(&self, user: &str, password: &str, method: &str, uri: &str) -> String {
        let nc = self.nc.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        self.authorization_with(user, password, method, uri, nc, &new_cnonce())
    }

    fn authorization_with(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let mut ha1 = self.hash(&format!("{user}:{}:{password}", self.realm));
        if self.session {
            ha1 = self.hash(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = self.hash(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            self.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            self.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut h = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", algorithm={}, response=\"{response}\"",
            quote(user),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            self.algorithm_name,
        );
        if let Some(o) = &self.opaque {
            h.push_str(&format!(", opaque=\"{}\"", quote(o)));
        }
        if self.qop_auth {
            h.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        h
    }
}

/// A quoted-string's inside (RFC 9110 §5.6.4).
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A client nonce: 128 bits from the process's randomly keyed hashers, as hex.
fn new_cnonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_2617_example() {
        let c = Challenge::pick([
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        ])
        .expect("a challenge");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert!(c.qop_auth && !c.stale && !c.session);
        let h = c.authorization_with(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(
            h.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{h}"
        );
        assert!(
            h.contains("nc=00000001") && h.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"")
        );
    }

    #[test]
    fn the_rfc_7616_example_prefers_sha_256() {
        // Two challenges in one header and one in another, as RFC 7616 §3.9.1 sends them.
        let c = Challenge::pick([
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=MD5, \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\", Basic realm=\"x\"",
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        ])
        .expect("a challenge");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        let args = (
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        let h = c.authorization_with(args.0, args.1, args.2, args.3, args.4, args.5);
        assert!(
            h.contains(
                "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
            ),
            "{h}"
        );
        assert!(h.contains("algorithm=SHA-256"));
        let md5 = Challenge::pick([
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=MD5, \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        ])
        .expect("a challenge");
        let h = md5.authorization_with(args.0, args.1, args.2, args.3, args.4, args.5);
        assert!(
            h.contains("response=\"8ca523f5e9506fed4657c9700eebdbec\""),
            "{h}"
        );
    }

    #[test]
    fn challenges_it_cannot_answer_and_odd_ones() {
        assert!(Challenge::pick(["Basic realm=\"Nextcloud\", charset=\"UTF-8\""]).is_none());
        assert!(Challenge::pick(["Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\""]).is_none());
        assert!(
            Challenge::pick(["Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256"]).is_none()
        );
        assert!(
            Challenge::pick(["Digest realm=\"r\""]).is_none(),
            "no nonce"
        );
        assert!(Challenge::pick(["Negotiate abc==, \"unclosed", ",,=,", ""]).is_none());
        // Bytes outside ASCII anywhere: read or skipped, never a panic.
        let c = Challenge::pick(["é Digest realm=\"Académie\", nonce=nœud, opaque=\"ü"])
            .expect("a challenge");
        assert_eq!((c.realm.as_str(), c.nonce.as_str()), ("Académie", "nœud"));
        assert_eq!(c.opaque.as_deref(), Some("ü"));
        assert_eq!(
            schemes(["Negotiate, NTLM", "Basic realm=\"a, b\", charset=\"UTF-8\""]),
            ["Negotiate", "NTLM", "Basic"]
        );
        // No qop (RFC 2069), stale, an escaped quote, lowercase scheme and names.
        let c = Challenge::pick(["digest REALM=\"a \\\"b\\\"\", NONCE=xyz, stale=TRUE"])
            .expect("a challenge");
        assert!(c.stale && !c.qop_auth);
        assert_eq!(c.realm, "a \"b\"");
        assert_eq!(c.nonce, "xyz");
        let h = c.authorization("u\"1", "p", "PROPFIND", "/dav/a%20b/");
        assert!(
            h.starts_with("Digest username=\"u\\\"1\", realm=\"a \\\"b\\\"\""),
            "{h}"
        );
        assert!(!h.contains("nc="));
        // Counts requests with one nonce; client nonces differ.
        let c = Challenge::pick(["Digest realm=\"r\", nonce=\"n\", qop=auth"]).expect("c");
        let (a, b) = (
            c.authorization("u", "p", "GET", "/"),
            c.authorization("u", "p", "GET", "/"),
        );
        assert!(a.contains("nc=00000001") && b.contains("nc=00000002"));
        let cn = |h: &str| h.split("cnonce=").nth(1).map(str::to_string);
        assert_ne!(cn(&a), cn(&b));
    }
}
