//! Nextcloud-only endpoints: `status.php`, the OCS user endpoint, and finding the DAV root.
//!
//! Given a URL, [`discover`] decides whether it is a Nextcloud server address (then the DAV root
//! is `BASE/remote.php/dav/files/<user id>/`, with the user id asked from
//! `ocs/v2.php/cloud/user`, nextcloud-protocol.md §1.3), a Nextcloud DAV URL (contains
//! `/remote.php/`), or the URL of any other WebDAV folder.

use super::{DavError, Secret};
use reqwest::{Method, StatusCode, Url};
use std::time::Duration;

/// What `status.php` says.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ServerStatus {
    /// True on an installed instance.
    #[serde(default)]
    pub installed: bool,
    /// True while an admin has the instance in maintenance mode.
    #[serde(default)]
    pub maintenance: bool,
    /// Version string such as `30.0.4`.
    #[serde(default)]
    pub versionstring: String,
    /// Product name (`Nextcloud`).
    #[serde(default)]
    pub productname: String,
}

/// Where the files are and what kind of server holds them.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The DAV collection to mount.
    pub dav_root: Url,
    /// The Nextcloud base URL (`BASE`), when the server is a Nextcloud.
    pub nextcloud_base: Option<Url>,
    /// The Nextcloud user id, when known.
    pub user_id: Option<String>,
}

/// What an address copied from a browser's address bar on one of Nextcloud's web pages points
/// at (`https://host/sub/index.php/apps/files/?dir=/Cours&fileid=42`, `.../apps/files/files/42
/// ?dir=/Cours`, `.../login`, `.../f/42`, `.../s/<token>`): the server's base address and the
/// folder the Files app showed. Only a guess from the path: [`discover`] takes it when that
/// base answers as a Nextcloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebPage {
    /// The server's base address (`https://host/sub`).
    pub base: Url,
    /// The folder shown, below the user's root, without leading or trailing `/`.
    pub folder: Option<String>,
    /// A public share link's token (`/s/<token>`): a folder shared by link, not an account.
    pub share_token: Option<String>,
}

/// Reads `url` as the address of a Nextcloud web page, see [`WebPage`].
pub fn web_page(url: &Url) -> Option<WebPage> {
    let segs: Vec<&str> = url.path().split('/').collect();
    let at = (1..segs.len()).find(|&i| {
        let next = segs.get(i + 1).is_some_and(|n| !n.is_empty());
        match segs[i] {
            "index.php" | "login" => true,
            "apps" | "f" | "s" => next,
            _ => false,
        }
    })?;
    if segs[..at].contains(&"remote.php") {
        return None;
    }
    let page = if segs[at] == "index.php" {
        &segs[at + 1..]
    } else {
        &segs[at..]
    };
    let mut base = url.clone();
    base.set_path(&segs[..at].join("/"));
    base.set_query(None);
    base.set_fragment(None);
    let folder = url
        .query_pairs()
        .find(|(k, _)| k == "dir")
        .map(|(_, v)| v.trim_matches('/').to_string())
        .filter(|f| !f.is_empty() && !f.split('/').any(|s| s == ".." || s == "."));
    Some(WebPage {
        base,
        folder,
        share_token: match page {
            ["s", token, ..] => Some(super::path::decode(token)),
            _ => None,
        },
    })
}

/// Where a public link's folder is served, below the base (§1.1), followed by its token.
const PUBLIC_LINK_DAV: &str = "public.php/dav/files/";

/// Whether `dav_root` is the folder of a public link (`BASE/public.php/dav/files/<token>/`).
pub fn is_public_link(dav_root: &Url) -> bool {
    dav_root.path().contains(&format!("/{PUBLIC_LINK_DAV}"))
}

/// Splits `https://host/sub/remote.php/...` into the base `https://host/sub`.
fn base_of_dav_url(url: &Url) -> Option<Url> {
    let path = url.path();
    let i = path.find("/remote.php/")?;
    let mut base = url.clone();
    base.set_path(&path[..i]);
    Some(base)
}

fn join(base: &Url, rest: &str) -> Result<Url, DavError> {
    let s = format!("{}/{}", base.as_str().trim_end_matches('/'), rest);
    Url::parse(&s).map_err(|e| DavError::Config(format!("bad URL {s}: {e}")))
}

/// Sends a request with the bounded time of these small calls. One that only reads (`GET`,
/// `PROPFIND`) and whose connection broke before its answer came (a kept-alive connection
/// the server closed, a flaky network) goes once more, as [`super::DavClient`]'s do.
async fn send(rb: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response, DavError> {
    let (client, req) = rb.timeout(Duration::from_secs(30)).build_split();
    let req = req.map_err(|e| DavError::Config(format!("cannot build the request: {e}")))?;
    let again = if super::only_reads(req.method()) {
        req.try_clone()
    } else {
        None
    };
    match (client.execute(req).await, again) {
        (Err(e), Some(again)) if !e.is_timeout() => {
            tracing::debug!(error = %e, "connection broke: sent again");
            client.execute(again).await
        }
        (res, _) => res,
    }
    .map_err(|e| DavError::from_reqwest(&e, what))
}

/// Where the server answers for `url`: the same address, or the one it redirects to (the
/// `http://` address of an `https://` server, an installation that moved). Found with an
/// anonymous `GET` of `status.php` (public, §8.1) that follows redirects, so no password is
/// ever sent to an address that only redirects: an HTTP client following a redirect to
/// another origin drops the `Authorization` header, and most methods but `GET` turn into a
/// `GET`, so every later request to the old address would fail as if the password were wrong
/// or the server did not speak WebDAV.
pub async fn settled_base(http: &reqwest::Client, url: &Url) -> Result<Url, DavError> {
    Ok(probe(http, url).await?.0)
}

/// Reads `BASE/status.php`. `Ok(None)` when the server is not a Nextcloud.
pub async fn status(http: &reqwest::Client, base: &Url) -> Result<Option<ServerStatus>, DavError> {
    Ok(probe(http, base).await?.1)
}

/// One anonymous `GET` of `url/status.php`, following redirects: the address the server
/// answers at ([`settled_base`]), what its status says when it is a Nextcloud ([`status`]),
/// and whether a web page answered instead (a network's login page answers every address
/// so; so does a server with a page for every address).
async fn probe(
    http: &reqwest::Client,
    url: &Url,
) -> Result<(Url, Option<ServerStatus>, bool), DavError> {
    let asked = join(url, "status.php")?;
    let resp = send(http.get(asked.clone()), url.as_str()).await?;
    let last = resp.url();
    let settled = match last.path().strip_suffix("status.php") {
        Some(dir) if *last != asked => {
            let mut moved = last.clone();
            moved.set_path(dir);
            moved.set_query(None);
            moved.set_fragment(None);
            tracing::info!(asked = %url, answers = %moved, "the server answers at another address");
            moved
        }
        _ => url.clone(),
    };
    if resp.status() != StatusCode::OK {
        return Ok((settled, None, false));
    }
    let page = super::is_web_page(&resp);
    let body = resp
        .bytes()
        .await
        .map_err(|e| DavError::from_reqwest(&e, url.as_str()))?;
    let st = serde_json::from_slice::<ServerStatus>(&body)
        .ok()
        .filter(|s| s.installed || s.maintenance || !s.versionstring.is_empty());
    Ok((settled, st, page))
}

/// Whether `url` answers `PROPFIND` as a WebDAV server would (a multi-status, or a refusal
/// to a stranger), for an address whose `status.php` was a web page: a WebDAV server with a
/// page for every address, or a network's login page answering in the server's place
/// ([`DavError::NotTheServer`]). Asked without the password: such a page must not get it.
async fn answers_as_dav(http: &reqwest::Client, url: &Url) -> Result<(), DavError> {
    let method = Method::from_bytes(b"PROPFIND").map_err(|e| DavError::Config(e.to_string()))?;
    let rb = http
        .request(method, url.clone())
        .header("Depth", "0")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/xml; charset=utf-8",
        )
        .body(super::xml::PROPFIND_BODY);
    let resp = send(rb, url.as_str()).await?;
    if super::is_web_page(&resp) {
        return Err(super::not_the_server("PROPFIND", url.as_str()));
    }
    Ok(())
}

/// An authenticated OCS GET (§1.4): `OCS-APIRequest: true`, JSON, bounded time.
async fn ocs_get(
    http: &reqwest::Client,
    base: &Url,
    endpoint: &str,
    login: &str,
    password: &Secret,
) -> Result<serde_json::Value, DavError> {
    let resp = ocs_call(http, Method::GET, base, endpoint, login, password).await?;
    super::json_answer(resp, endpoint).await
}

/// One authenticated OCS request; a non-success status is an error.
async fn ocs_call(
    http: &reqwest::Client,
    method: Method,
    base: &Url,
    endpoint: &str,
    login: &str,
    password: &Secret,
) -> Result<reqwest::Response, DavError> {
    let url = join(base, &format!("ocs/v2.php/{endpoint}?format=json"))?;
    let rb = http
        .request(method.clone(), url)
        .basic_auth(login, Some(password.expose()))
        .header("OCS-APIRequest", "true")
        .header(reqwest::header::ACCEPT, "application/json");
    let resp = send(rb, base.as_str()).await?;
    let st = resp.status();
    if !st.is_success() {
        return Err(DavError::from_status(
            st,
            &method,
            &format!("ocs/v2.php/{endpoint}"),
        ));
    }
    Ok(resp)
}

/// Asks `ocs/v2.php/cloud/user` for the user id that DAV paths need.
pub async fn user_id(
    http: &reqwest::Client,
    base: &Url,
    login: &str,
    password: &Secret,
) -> Result<String, DavError> {
    let v = ocs_get(http, base, "cloud/user", login, password).await?;
    v.pointer("/ocs/data/id")
        .and_then(|id| id.as_str())
        .map(str::to_string)
        .ok_or_else(|| DavError::BadResponse("OCS user answer has no ocs.data.id".into()))
}

/// Reads `ocs/v2.php/cloud/capabilities` (§8.2); answers the `capabilities` object.
pub async fn capabilities(
    http: &reqwest::Client,
    base: &Url,
    login: &str,
    password: &Secret,
) -> Result<serde_json::Value, DavError> {
    let v = ocs_get(http, base, "cloud/capabilities", login, password).await?;
    Ok(v.pointer("/ocs/data/capabilities")
        .cloned()
        .unwrap_or(serde_json::Value::Null))
}

/// What the mount uses of the server's capabilities (§8.2), read once at mount time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capabilities {
    /// Chunked upload v2 is available.
    pub chunking: bool,
    /// Bulk upload is available.
    pub bulkupload: bool,
    /// The server's largest chunk size, when given.
    pub chunk_max_size: Option<u64>,
    /// How many chunks of one file the server takes at once (`files.chunked_upload.
    /// max_parallel_count`), when given.
    pub chunk_parallel: Option<u64>,
    /// The server's file name rules (§10).
    pub names: NameRules,
    /// The notify_push WebSocket URL, when the push daemon is set up (§9.2).
    pub notify_push: Option<String>,
    /// The Activity app answers its API v2 (§9.3).
    pub activity: bool,
}

/// File names the server refuses (§10): the `files.forbidden_*` capabilities plus the rules
/// every Nextcloud applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NameRules {
    /// Whole names (case-insensitive).
    pub names: Vec<String>,
    /// The part before the first dot (case-insensitive; dot-files excepted).
    pub basenames: Vec<String>,
    /// Characters.
    pub characters: Vec<String>,
    /// Endings (case-insensitive).
    pub extensions: Vec<String>,
}

/// The longest name Nextcloud stores, in UTF-8 bytes (nextcloud-protocol.md §10).
pub const MAX_NAME_BYTES: usize = 250;

impl NameRules {
    /// Why the server would refuse `name`, if it would.
    pub fn problem(&self, name: &str) -> Option<String> {
        let trimmed = name.trim();
        if trimmed.is_empty() || trimmed == "." || trimmed == ".." {
            return Some(format!("{name:?} is not a valid name on the server"));
        }
        if name.len() > MAX_NAME_BYTES {
            return Some(format!(
                "{name:?} is too long for the server (at most {MAX_NAME_BYTES} bytes)"
            ));
        }
        if let Some(c) = name.chars().find(|c| (*c as u32) < 32 || *c == '\\') {
            return Some(format!(
                "{name:?} contains {c:?}, which the server does not allow in names"
            ));
        }
        if let Some(c) = self
            .characters
            .iter()
            .find(|c| !c.is_empty() && name.contains(c.as_str()))
        {
            return Some(format!(
                "{name:?} contains \"{c}\", which the server does not allow in names"
            ));
        }
        let lower = name.to_lowercase();
        if self.names.iter().any(|n| n.to_lowercase() == lower) {
            return Some(format!("the server does not allow the name {name:?}"));
        }
        if !name.starts_with('.') {
            let base = lower.split('.').next().unwrap_or("");
            if self.basenames.iter().any(|b| b.to_lowercase() == base) {
                return Some(format!("the server reserves the name {base:?}"));
            }
        }
        let mut ext = self
            .extensions
            .iter()
            .map(|e| e.to_lowercase())
            .collect::<Vec<_>>();
        ext.push(".part".into());
        if let Some(e) = ext
            .iter()
            .find(|e| !e.is_empty() && lower.ends_with(e.as_str()))
        {
            return Some(format!(
                "the server does not allow names ending in {e:?} ({name:?})"
            ));
        }
        None
    }
}

fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Capabilities {
    /// Reads the parts nuage uses from the `capabilities` object.
    pub fn from_json(caps: &serde_json::Value) -> Capabilities {
        let files = caps.get("files");
        let mut names = strings(files.and_then(|f| f.get("forbidden_filenames")));
        for n in strings(files.and_then(|f| f.get("blacklisted_files"))) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let bulk = caps
            .pointer("/dav/bulkupload")
            .and_then(|v| v.as_str())
            .map(|v| v.starts_with('1'))
            .unwrap_or(false);
        let big = files
            .and_then(|f| f.get("bigfilechunking"))
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        Capabilities {
            chunking: has_chunking(caps) && big,
            bulkupload: bulk,
            chunk_max_size: caps
                .pointer("/files/chunked_upload/max_size")
                .and_then(|v| v.as_u64()),
            chunk_parallel: caps
                .pointer("/files/chunked_upload/max_parallel_count")
                .and_then(|v| v.as_u64()),
            names: NameRules {
                names,
                basenames: strings(files.and_then(|f| f.get("forbidden_filename_basenames"))),
                characters: strings(files.and_then(|f| f.get("forbidden_filename_characters"))),
                extensions: strings(files.and_then(|f| f.get("forbidden_filename_extensions"))),
            },
            notify_push: caps
                .pointer("/notify_push/endpoints/websocket")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            activity: caps.pointer("/activity/apiv2").is_some(),
        }
    }
}

/// A page of the Activity feed (§9.3): activities as the server gives them, and whether
/// more follow (a `Link: rel="next"`).
#[derive(Debug, Clone, Default)]
pub struct ActivityPage {
    /// The activities (`activity_id`, `datetime`, `type`, `user`, `subject`, `object_name`...).
    pub items: Vec<serde_json::Value>,
    /// More activities follow this page.
    pub more: bool,
}

/// One account's Nextcloud services beside its files' WebDAV (the Activity feed, public
/// links, the trash bin, file versions): the server, the credentials and the user id every
/// such call needs.
#[derive(Debug, Clone)]
pub struct Services {
    /// The HTTP client (the mount's, with its TLS settings).
    pub http: reqwest::Client,
    /// The server's base URL.
    pub base: Url,
    /// Login name.
    pub login: String,
    /// App password.
    pub password: Secret,
    /// The user id (the DAV paths' name for the account).
    pub user_id: String,
}

impl Services {
    /// A request with `method` to `url`, with the account's credentials.
    fn request(&self, method: &[u8], url: Url) -> Result<reqwest::RequestBuilder, DavError> {
        let m = Method::from_bytes(method).map_err(|e| DavError::Config(e.to_string()))?;
        Ok(self
            .http
            .request(m, url)
            .basic_auth(&self.login, Some(self.password.expose())))
    }
}

/// Reads the Activity feed (§9.3, filter `all`): with `since`, the activities after it,
/// oldest first (`sort=asc`); without, the newest `limit`, newest first. An empty page for
/// 304 (nothing new) and 204 (the user turned activities off).
pub async fn activities(
    api: &Services,
    since: Option<i64>,
    limit: u32,
) -> Result<ActivityPage, DavError> {
    let base = &api.base;
    let endpoint = "ocs/v2.php/apps/activity/api/v2/activity/all";
    let query = match since {
        Some(s) => format!("?format=json&since={s}&sort=asc&limit={limit}"),
        None => format!("?format=json&sort=desc&limit={limit}"),
    };
    let url = join(base, &format!("{endpoint}{query}"))?;
    let rb = api
        .request(b"GET", url)?
        .header("OCS-APIRequest", "true")
        .header(reqwest::header::ACCEPT, "application/json");
    let resp = send(rb, base.as_str()).await?;
    let st = resp.status();
    if st == reqwest::StatusCode::NOT_MODIFIED || st == reqwest::StatusCode::NO_CONTENT {
        return Ok(ActivityPage::default());
    }
    if !st.is_success() {
        return Err(DavError::from_status(st, &Method::GET, endpoint));
    }
    let more = resp
        .headers()
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("rel=\"next\""));
    let v = super::json_answer(resp, endpoint).await?;
    let items = v
        .pointer("/ocs/data")
        .and_then(|d| d.as_array())
        .cloned()
        .ok_or_else(|| DavError::BadResponse(format!("{endpoint} answer has no ocs.data list")))?;
    Ok(ActivityPage { items, more })
}

/// A public link to a file or folder (§12, share type 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicLink {
    /// The share id (to change or delete it).
    pub id: String,
    /// The address to give people: `https://cloud.example.org/s/<token>`.
    pub url: String,
    /// `YYYY-MM-DD HH:MM:SS`, when it expires.
    pub expiration: Option<String>,
}

/// The sharing API (§12), relative to the server's base URL.
const SHARES: &str = "ocs/v2.php/apps/files_sharing/api/v1/shares";

/// Share type of a public link (§12).
const SHARE_TYPE_LINK: i64 = 3;

/// The sharing API's address: the shares, or share `id`; answers in JSON.
fn shares_url(api: &Services, id: Option<&str>) -> Result<Url, DavError> {
    let mut url = match id {
        Some(id) => join(
            &api.base,
            &format!("{SHARES}/{}", super::path::encode_segment(id)),
        )?,
        None => join(&api.base, SHARES)?,
    };
    url.query_pairs_mut().append_pair("format", "json");
    Ok(url)
}

fn public_link_of(v: &serde_json::Value) -> Option<PublicLink> {
    let id = share_id(v)?;
    let url = v.get("url")?.as_str()?.to_string();
    let expiration = v
        .get("expiration")
        .and_then(|e| e.as_str())
        .filter(|e| !e.is_empty())
        .map(str::to_string);
    Some(PublicLink {
        id,
        url,
        expiration,
    })
}

/// Sends one sharing API request; a refusal carries the server's own sentence
/// (`ocs.meta.message`, e.g. "Passwords are enforced for link and mail shares").
async fn share_call(
    rb: reqwest::RequestBuilder,
    base: &Url,
    what: &str,
) -> Result<serde_json::Value, DavError> {
    let resp = send(
        rb.header("OCS-APIRequest", "true")
            .header(reqwest::header::ACCEPT, "application/json"),
        base.as_str(),
    )
    .await?;
    let st = resp.status();
    let body: Option<serde_json::Value> = resp.json().await.ok();
    if st.is_success() {
        return body
            .ok_or_else(|| DavError::BadResponse(format!("{what}: the answer is not JSON")));
    }
    let said = body
        .as_ref()
        .and_then(|b| b.pointer("/ocs/meta/message"))
        .and_then(|m| m.as_str())
        .filter(|m| !m.is_empty())
        .map(|m| format!("{what}: {m}"))
        .unwrap_or_else(|| what.to_string());
    Err(match st.as_u16() {
        403 => DavError::Forbidden(said),
        404 => DavError::NotFound(said),
        _ => DavError::from_status(st, &Method::POST, &said),
    })
}

/// The public links of `path` (relative to the user's files root, with a leading `/`).
pub async fn public_links(api: &Services, path: &str) -> Result<Vec<PublicLink>, DavError> {
    Ok(shares_of(api, path, SHARE_TYPE_LINK)
        .await?
        .iter()
        .filter_map(public_link_of)
        .collect())
}

/// The shares of type `kind` the user made of `path`, as the server describes them.
async fn shares_of(
    api: &Services,
    path: &str,
    kind: i64,
) -> Result<Vec<serde_json::Value>, DavError> {
    let mut url = shares_url(api, None)?;
    url.query_pairs_mut()
        .append_pair("path", path)
        .append_pair("reshares", "false");
    let rb = api.request(b"GET", url)?;
    let v = match share_call(rb, &api.base, "listing the shares").await {
        // Nothing shared there (some versions answer 404 for "no shares").
        Err(DavError::NotFound(_)) => return Ok(Vec::new()),
        other => other?,
    };
    let items = v
        .pointer("/ocs/data")
        .and_then(|d| d.as_array())
        .ok_or_else(|| DavError::BadResponse("the shares answer has no ocs.data list".into()))?;
    Ok(items
        .iter()
        .filter(|s| s.get("share_type").and_then(|t| t.as_i64()) == Some(kind))
        .cloned()
        .collect())
}

/// Share type of a share with one user of the server (§12).
const SHARE_TYPE_USER: i64 = 0;

/// A share of a file or folder with one user of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserShare {
    /// The share id (to change or delete it).
    pub id: String,
    /// The user it is shared with (`share_with`).
    pub with: String,
    /// Its permissions (§12: 1 read, 2 update, 4 create, 8 delete, 16 share).
    pub permissions: u32,
}

fn share_id(v: &serde_json::Value) -> Option<String> {
    match v.get("id")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn user_share_of(v: &serde_json::Value) -> Option<UserShare> {
    Some(UserShare {
        id: share_id(v)?,
        with: v.get("share_with")?.as_str()?.to_string(),
        permissions: v
            .get("permissions")
            .and_then(|p| p.as_u64())
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(1),
    })
}

/// The users `path` is shared with.
pub async fn user_shares(api: &Services, path: &str) -> Result<Vec<UserShare>, DavError> {
    Ok(shares_of(api, path, SHARE_TYPE_USER)
        .await?
        .iter()
        .filter_map(user_share_of)
        .collect())
}

/// Shares `path` with the user `with`, with `permissions`.
pub async fn share_with_user(
    api: &Services,
    path: &str,
    with: &str,
    permissions: u32,
) -> Result<UserShare, DavError> {
    let perms = permissions.to_string();
    let form = [
        ("path", path),
        ("shareType", "0"),
        ("shareWith", with),
        ("permissions", perms.as_str()),
    ];
    let rb = api.request(b"POST", shares_url(api, None)?)?.form(&form);
    let v = share_call(rb, &api.base, "sharing").await?;
    v.pointer("/ocs/data")
        .and_then(user_share_of)
        .ok_or_else(|| DavError::BadResponse("the new share has no id or user".into()))
}

/// Changes the permissions of a share.
pub async fn set_share_permissions(
    api: &Services,
    id: &str,
    permissions: u32,
) -> Result<(), DavError> {
    let perms = permissions.to_string();
    let rb = api
        .request(b"PUT", shares_url(api, Some(id))?)?
        .form(&[("permissions", perms.as_str())]);
    share_call(rb, &api.base, "changing the share")
        .await
        .map(|_| ())
}

/// Creates a read-only public link to `path`, with an optional password and expiry date
/// (`YYYY-MM-DD`).
pub async fn create_public_link(
    api: &Services,
    path: &str,
    link_password: Option<&Secret>,
    expire: Option<&str>,
) -> Result<PublicLink, DavError> {
    let mut form: Vec<(&str, &str)> =
        vec![("path", path), ("shareType", "3"), ("permissions", "1")];
    if let Some(p) = link_password {
        form.push(("password", p.expose()));
    }
    if let Some(e) = expire {
        form.push(("expireDate", e));
    }
    let rb = api.request(b"POST", shares_url(api, None)?)?.form(&form);
    let v = share_call(rb, &api.base, "creating the link").await?;
    v.pointer("/ocs/data")
        .and_then(public_link_of)
        .ok_or_else(|| DavError::BadResponse("the new share has no id or url".into()))
}

/// Deletes a share.
pub async fn delete_share(api: &Services, id: &str) -> Result<(), DavError> {
    let rb = api.request(b"DELETE", shares_url(api, Some(id))?)?;
    share_call(rb, &api.base, "deleting the share")
        .await
        .map(|_| ())
}

/// One item in the trash bin (§13).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrashItem {
    /// Its name in the trash bin (`plan.odt.d1764432540`): what a restore names.
    pub entry: String,
    /// The name it had.
    pub name: String,
    /// Where it was, from the user's root (`Cours/plan.odt`).
    pub location: String,
    /// When it was deleted (Unix time).
    pub deleted: u64,
    /// Its size in bytes (files).
    pub size: u64,
    /// A folder (deleted with its content).
    pub dir: bool,
}

fn trash_root(base: &Url, user_id: &str) -> Result<Url, DavError> {
    join(
        base,
        &format!(
            "remote.php/dav/trashbin/{}/trash/",
            super::path::encode_segment(user_id)
        ),
    )
}

/// The members of a DAV collection (`PROPFIND Depth: 1` of `url` with `body`), each with its
/// last path segment (decoded), the collection itself left out.
async fn list_collection(
    api: &Services,
    url: Url,
    body: &'static str,
    what: &str,
) -> Result<Vec<(String, super::xml::PropResponse)>, DavError> {
    let root_path = super::path::decode(url.path());
    let rb = api
        .request(b"PROPFIND", url)?
        .header("Depth", "1")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/xml; charset=utf-8",
        )
        .body(body);
    let resp = send(rb, api.base.as_str()).await?;
    let st = resp.status();
    if st.as_u16() != 207 {
        return Err(DavError::from_status(st, &Method::GET, what));
    }
    let text = resp
        .text()
        .await
        .map_err(|e| DavError::from_reqwest(&e, api.base.as_str()))?;
    Ok(super::xml::parse_multistatus(&text)?
        .into_iter()
        .filter(|r| {
            !r.href.is_empty() && r.href.trim_end_matches('/') != root_path.trim_end_matches('/')
        })
        .filter_map(|r| {
            let entry = r.href.trim_end_matches('/').rsplit('/').next()?.to_string();
            Some((entry, r))
        })
        .collect())
}

/// `MOVE from` to `to` (the trash bin's and the versions' restores).
async fn dav_move(api: &Services, from: Url, to: &Url, what: &str) -> Result<(), DavError> {
    let rb = api
        .request(b"MOVE", from)?
        .header("Destination", to.as_str());
    let resp = send(rb, api.base.as_str()).await?;
    let st = resp.status();
    if !st.is_success() {
        return Err(DavError::from_status(st, &Method::GET, what));
    }
    Ok(())
}

/// The trash bin's items (`PROPFIND Depth: 1` of `remote.php/dav/trashbin/<uid>/trash`),
/// newest first.
pub async fn trash_list(api: &Services) -> Result<Vec<TrashItem>, DavError> {
    let (base, user_id) = (&api.base, api.user_id.as_str());
    let url = trash_root(base, user_id)?;
    let entries = list_collection(
        api,
        url,
        super::xml::PROPFIND_TRASH,
        "the trash bin (remote.php/dav/trashbin)",
    )
    .await?;
    let mut items: Vec<TrashItem> = entries
        .into_iter()
        .map(|(entry, r)| {
            let name = r.trash_filename.clone().unwrap_or_else(|| entry.clone());
            TrashItem {
                location: r
                    .trash_location
                    .clone()
                    .unwrap_or_else(|| name.clone())
                    .trim_matches('/')
                    .to_string(),
                name,
                deleted: r.trash_deleted.unwrap_or(0),
                size: r.content_length.or(r.oc_size).unwrap_or(0),
                dir: r.is_dir,
                entry,
            }
        })
        .collect();
    items.sort_by(|a, b| {
        b.deleted
            .cmp(&a.deleted)
            .then_with(|| a.entry.cmp(&b.entry))
    });
    Ok(items)
}

/// Puts a trash bin item back where it was (`MOVE` to `trashbin/<uid>/restore/<entry>`).
pub async fn trash_restore(api: &Services, entry: &str) -> Result<(), DavError> {
    let (base, user_id) = (&api.base, api.user_id.as_str());
    let seg = super::path::encode_segment(entry);
    let from = join(&trash_root(base, user_id)?, &seg)?;
    let to = join(
        base,
        &format!(
            "remote.php/dav/trashbin/{}/restore/{seg}",
            super::path::encode_segment(user_id)
        ),
    )?;
    dav_move(api, from, &to, &format!("restoring {entry}")).await
}

/// One earlier version of a file (§13).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileVersion {
    /// Its name in the versions collection (a timestamp): what a restore names.
    pub entry: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was saved (Unix time).
    pub modified: u64,
    /// The label given to it in the web interface, if any.
    pub label: Option<String>,
    /// Who saved it, if the server says.
    pub author: Option<String>,
}

fn versions_root(base: &Url, user_id: &str, fileid: u64) -> Result<Url, DavError> {
    join(
        base,
        &format!(
            "remote.php/dav/versions/{}/versions/{fileid}/",
            super::path::encode_segment(user_id)
        ),
    )
}

/// The earlier versions of file `fileid` (`PROPFIND Depth: 1` of
/// `remote.php/dav/versions/<uid>/versions/<fileid>`), newest first.
pub async fn versions_list(api: &Services, fileid: u64) -> Result<Vec<FileVersion>, DavError> {
    let (base, user_id) = (&api.base, api.user_id.as_str());
    let url = versions_root(base, user_id, fileid)?;
    let entries = list_collection(
        api,
        url,
        super::xml::PROPFIND_VERSIONS,
        "the file's versions",
    )
    .await?;
    let mut out: Vec<FileVersion> = entries
        .into_iter()
        .map(|(entry, r)| {
            let modified = r
                .mtime
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .or_else(|| entry.parse().ok())
                .unwrap_or(0);
            FileVersion {
                size: r.content_length.unwrap_or(0),
                modified,
                label: r.version_label.clone().filter(|l| !l.is_empty()),
                author: r.version_author.clone().filter(|a| !a.is_empty()),
                entry,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| b.entry.cmp(&a.entry))
    });
    Ok(out)
}

/// Makes an earlier version the file's content again (`MOVE` to
/// `versions/<uid>/restore/target`); the content it replaces becomes a version itself.
pub async fn version_restore(api: &Services, fileid: u64, entry: &str) -> Result<(), DavError> {
    let (base, user_id) = (&api.base, api.user_id.as_str());
    let from = join(
        &versions_root(base, user_id, fileid)?,
        &super::path::encode_segment(entry),
    )?;
    let to = join(
        base,
        &format!(
            "remote.php/dav/versions/{}/restore/target",
            super::path::encode_segment(user_id)
        ),
    )?;
    dav_move(api, from, &to, &format!("restoring version {entry}")).await
}

/// A started Login Flow v2 (§7.2).
#[derive(Debug, Clone)]
pub struct LoginFlow {
    /// The page the user opens in a browser.
    pub login_url: String,
    /// Where to poll.
    pub poll_endpoint: String,
    /// The poll token (a secret: it yields the app password).
    pub token: Secret,
}

/// What a finished Login Flow v2 hands over.
#[derive(Debug, Clone)]
pub struct FlowResult {
    /// The server's own idea of its base URL.
    pub server: String,
    /// The login name.
    pub login: String,
    /// The new app password.
    pub app_password: Secret,
}

/// `POST BASE/index.php/login/v2`: starts a browser login (§7.2).
pub async fn start_login_flow(http: &reqwest::Client, base: &Url) -> Result<LoginFlow, DavError> {
    let url = join(base, "index.php/login/v2")?;
    let rb = http.post(url);
    let resp = send(rb, base.as_str()).await?;
    let st = resp.status();
    if !st.is_success() {
        return Err(DavError::from_status(
            st,
            &Method::POST,
            "index.php/login/v2",
        ));
    }
    let v = super::json_answer(resp, "login flow").await?;
    let get = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| DavError::BadResponse(format!("login flow answer has no {p}")))
    };
    Ok(LoginFlow {
        login_url: get("/login")?,
        poll_endpoint: get("/poll/endpoint")?,
        token: Secret::new(get("/poll/token")?),
    })
}

/// One poll of a login flow: `Ok(None)` while the user has not finished (404).
pub async fn poll_login_flow(
    http: &reqwest::Client,
    flow: &LoginFlow,
) -> Result<Option<FlowResult>, DavError> {
    let rb = http
        .post(&flow.poll_endpoint)
        .form(&[("token", flow.token.expose())]);
    let resp = send(rb, &flow.poll_endpoint).await?;
    match resp.status() {
        StatusCode::NOT_FOUND => Ok(None),
        StatusCode::OK => {
            let v = super::json_answer(resp, "login flow result").await?;
            let get = |k: &str| {
                v.get(k)
                    .and_then(|x| x.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| DavError::BadResponse(format!("login flow result has no {k}")))
            };
            Ok(Some(FlowResult {
                server: get("server")?,
                login: get("loginName")?,
                app_password: Secret::new(get("appPassword")?),
            }))
        }
        st => Err(DavError::from_status(st, &Method::POST, "login flow poll")),
    }
}

/// Checks a login against the server before anything is saved (§7.3): the server must be a
/// Nextcloud out of maintenance, and the OCS user endpoint must accept the password. Answers
/// the user id. A refused password is told apart from an account that needs an app password
/// by the `password login forbidden` hint of a DAV answer (§7.1).
pub async fn check_login(
    http: &reqwest::Client,
    base: &Url,
    login: &str,
    password: &Secret,
) -> Result<String, DavError> {
    match status(http, base).await? {
        None => return Err(DavError::NotNextcloud(base.to_string())),
        Some(st) if st.maintenance => return Err(DavError::Unavailable(503)),
        Some(_) => {}
    }
    // A DAV request first: its 401 tells a wrong password from an account that needs an app
    // password (the `password login forbidden` hint, §7.1). Any other answer means the login
    // was accepted (the path may differ from the user id, which the OCS call finds next).
    let url = join(
        base,
        &format!(
            "remote.php/dav/files/{}/",
            super::path::encode_segment(login)
        ),
    )?;
    let method = Method::from_bytes(b"PROPFIND").map_err(|e| DavError::Config(e.to_string()))?;
    let rb = http
        .request(method.clone(), url)
        .basic_auth(login, Some(password.expose()))
        .header("Depth", "0");
    let resp = send(rb, base.as_str()).await?;
    let st = resp.status();
    if st == StatusCode::UNAUTHORIZED {
        let body = resp.text().await.unwrap_or_default();
        return Err(if body.contains("password login forbidden") {
            DavError::AppPasswordRequired
        } else {
            DavError::Unauthorized
        });
    }
    if matches!(st.as_u16(), 429 | 503) {
        return Err(DavError::from_status(st, &method, "remote.php/dav"));
    }
    user_id(http, base, login, password).await
}

/// `GET /ocs/v2.php/core/getapppassword` (§7.5): trades an account password for an app
/// password. `Ok(None)` when `password` already is an app password (403).
pub async fn get_app_password(
    http: &reqwest::Client,
    base: &Url,
    login: &str,
    password: &Secret,
) -> Result<Option<Secret>, DavError> {
    match ocs_get(http, base, "core/getapppassword", login, password).await {
        Ok(v) => Ok(v
            .pointer("/ocs/data/apppassword")
            .and_then(|x| x.as_str())
            .map(Secret::new)),
        Err(DavError::Forbidden(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `DELETE /ocs/v2.php/core/apppassword` (§7.5): revokes the app password used.
pub async fn revoke_app_password(
    http: &reqwest::Client,
    base: &Url,
    login: &str,
    password: &Secret,
) -> Result<(), DavError> {
    ocs_call(
        http,
        Method::DELETE,
        base,
        "core/apppassword",
        login,
        password,
    )
    .await
    .map(|_| ())
}

/// True when the capabilities offer chunked upload (`dav.chunking` >= 1.0).
pub fn has_chunking(caps: &serde_json::Value) -> bool {
    caps.pointer("/dav/chunking")
        .and_then(|v| v.as_str())
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
        .map(|major| major >= 1)
        .unwrap_or(false)
}

/// The chunked-upload area matching a files URL (`…/dav/files/<uid>/` → `…/dav/uploads/<uid>/`).
pub fn uploads_url(dav_root: &Url) -> Option<Url> {
    let path = dav_root.path();
    let i = path.find("/remote.php/dav/files/")?;
    let mut u = dav_root.clone();
    u.set_path(&format!(
        "{}/remote.php/dav/uploads/{}",
        &path[..i],
        &path[i + "/remote.php/dav/files/".len()..]
    ));
    Some(u)
}

/// The user id in a Nextcloud DAV root (`…/remote.php/dav/files/<uid>/…`).
pub fn user_id_in(dav_root: &Url) -> Option<String> {
    let path = dav_root.path();
    let i = path.find("/remote.php/dav/files/")?;
    let rest = &path[i + "/remote.php/dav/files/".len()..];
    let uid = rest.split('/').next().filter(|s| !s.is_empty())?;
    Some(super::path::decode(uid))
}

/// The path of a `…/remote.php/dav/files/<uid>/<sub>/` root below the user's root (`<sub>`,
/// decoded; `""` for the user's root). `None` for other URLs.
pub fn root_in_user_root(dav_root: &Url) -> Option<String> {
    let path = dav_root.path();
    let i = path.find("/remote.php/dav/files/")?;
    let rest = &path[i + "/remote.php/dav/files/".len()..];
    let after_uid = rest.split_once('/').map(|(_, r)| r).unwrap_or("");
    Some(super::path::decode(after_uid).trim_matches('/').to_string())
}

/// Finds the DAV root for `url`.
pub async fn discover(
    http: &reqwest::Client,
    url: &Url,
    login: Option<&str>,
    password: Option<&Secret>,
) -> Result<Endpoint, DavError> {
    // An address copied from a browser on one of Nextcloud's web pages: when the part before
    // the page is a Nextcloud, that server is mounted, and the folder the page showed.
    let mut found = None;
    if let Some(page) = web_page(url).filter(|_| base_of_dav_url(url).is_none()) {
        if let Ok((base, Some(st), _)) = probe(http, &page.base).await {
            if let Some(token) = &page.share_token {
                // A folder shared by a public link: its own WebDAV, no account (§1.1).
                tracing::info!(asked = %url, server = %base, "a public link: mounting the folder it shares");
                return Ok(Endpoint {
                    dav_root: join(
                        &base,
                        &format!("{PUBLIC_LINK_DAV}{}/", super::path::encode_segment(token)),
                    )?,
                    nextcloud_base: None,
                    user_id: None,
                });
            }
            tracing::info!(asked = %url, server = %base, folder = ?page.folder, "a web page's address: mounting its server's files");
            found = Some((base, Some(st), page.folder));
        }
    }
    // Else one request tells where the server answers and whether it is a Nextcloud.
    let (settled, st, folder) = match found {
        Some(f) => f,
        None => {
            let (settled, st, page) = probe(http, url).await?;
            if st.is_none() && page && base_of_dav_url(&settled).is_none() {
                answers_as_dav(http, &settled).await?;
            }
            (settled, st, None)
        }
    };
    let url = &settled;
    if let Some(base) = base_of_dav_url(url) {
        return Ok(Endpoint {
            dav_root: url.clone(),
            nextcloud_base: Some(base),
            user_id: None,
        });
    }
    match st {
        Some(st) => {
            if st.maintenance {
                return Err(DavError::Unavailable(503));
            }
            let (Some(login), Some(pw)) = (login, password) else {
                return Err(DavError::Config(
                    "this is a Nextcloud server: give the login with --user".into(),
                ));
            };
            let id = user_id(http, url, login, pw).await?;
            let mut below = String::new();
            for seg in folder.iter().flat_map(|f| f.split('/')) {
                below.push_str(&super::path::encode_segment(seg));
                below.push('/');
            }
            let dav_root = join(
                url,
                &format!(
                    "remote.php/dav/files/{}/{below}",
                    super::path::encode_segment(&id)
                ),
            )?;
            Ok(Endpoint {
                dav_root,
                nextcloud_base: Some(url.clone()),
                user_id: Some(id),
            })
        }
        None => Ok(Endpoint {
            dav_root: url.clone(),
            nextcloud_base: None,
            user_id: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_area_and_chunking() {
        let u = Url::parse("https://h/nc/remote.php/dav/files/al%20ice/").expect("url");
        assert_eq!(
            uploads_url(&u).expect("uploads").as_str(),
            "https://h/nc/remote.php/dav/uploads/al%20ice/"
        );
        assert!(has_chunking(&serde_json::json!({"dav":{"chunking":"1.0"}})));
        assert!(!has_chunking(&serde_json::json!({"dav":{}})));
    }

    #[test]
    fn chunk_hints_from_the_capabilities() {
        // As in the sample of nextcloud-protocol.md §8.2.
        let c = Capabilities::from_json(&serde_json::json!({
            "dav": {"chunking": "1.0", "bulkupload": "1.0"},
            "files": {"bigfilechunking": true,
                      "chunked_upload": {"max_size": 104857600, "max_parallel_count": 5}}
        }));
        assert!(c.chunking && c.bulkupload);
        assert_eq!(c.chunk_max_size, Some(104857600));
        assert_eq!(c.chunk_parallel, Some(5));
        let old = Capabilities::from_json(&serde_json::json!({"dav": {"chunking": "1.0"}}));
        assert_eq!((old.chunk_max_size, old.chunk_parallel), (None, None));
    }

    #[test]
    fn web_page_addresses() {
        let page = |s: &str| web_page(&Url::parse(s).expect("url"));
        let p = page("https://cloud-aca.ac-besancon.fr/index.php/apps/files/?dir=/Mes%20cours/2026%C3%A9&fileid=42")
            .expect("files app");
        assert_eq!(p.base.as_str(), "https://cloud-aca.ac-besancon.fr/");
        assert_eq!(p.folder.as_deref(), Some("Mes cours/2026é"));
        assert_eq!(p.share_token, None);
        let p = page("https://h/nc/apps/files/files/42?dir=/Cours/&openfile=true").expect("pretty");
        assert_eq!(p.base.as_str(), "https://h/nc");
        assert_eq!(p.folder.as_deref(), Some("Cours"));
        let p = page("https://h/index.php/apps/files/?dir=/").expect("root");
        assert_eq!((p.base.as_str(), p.folder), ("https://h/", None));
        assert_eq!(
            page("https://h/login").expect("login").base.as_str(),
            "https://h/"
        );
        assert_eq!(
            page("https://h/nc/f/42").expect("file").base.as_str(),
            "https://h/nc"
        );
        let share = |s: &str| page(s).and_then(|p| p.share_token);
        assert_eq!(share("https://h/s/AbCd1234").as_deref(), Some("AbCd1234"));
        assert_eq!(
            share("https://h/nc/index.php/s/AbCd1234/download").as_deref(),
            Some("AbCd1234")
        );
        // Not web pages: a server address, DAV URLs, folders merely named so.
        assert_eq!(page("https://h/nc/"), None);
        assert_eq!(page("https://h/remote.php/dav/files/u/apps/x/"), None);
        assert_eq!(page("https://h/dav/apps/"), None);
        // A `..` in `dir` is no folder below the root.
        assert_eq!(
            page("https://h/apps/files/?dir=/a/../..")
                .expect("page")
                .folder,
            None
        );
    }

    #[test]
    fn bulk_paths_below_the_user_root() {
        let u = Url::parse("https://h/remote.php/dav/files/al%20ice/").expect("url");
        assert_eq!(root_in_user_root(&u).as_deref(), Some(""));
        let u = Url::parse("https://h/nc/remote.php/dav/files/bob/Mes%20cours/2026/").expect("url");
        assert_eq!(root_in_user_root(&u).as_deref(), Some("Mes cours/2026"));
        assert!(root_in_user_root(&Url::parse("https://h/dav/").expect("url")).is_none());
    }

    #[test]
    fn base_from_dav_url() {
        let u = Url::parse("https://h/nc/remote.php/dav/files/alice/").expect("url");
        assert_eq!(base_of_dav_url(&u).expect("base").as_str(), "https://h/nc");
        let plain = Url::parse("https://h/dav/").expect("url");
        assert!(base_of_dav_url(&plain).is_none());
    }
}
