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

/// Reads `BASE/status.php`. `Ok(None)` when the server is not a Nextcloud.
pub async fn status(http: &reqwest::Client, base: &Url) -> Result<Option<ServerStatus>, DavError> {
    let url = join(base, "status.php")?;
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| DavError::from_reqwest(&e, base.as_str()))?;
    if resp.status() != StatusCode::OK {
        return Ok(None);
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| DavError::from_reqwest(&e, base.as_str()))?;
    Ok(serde_json::from_slice::<ServerStatus>(&body)
        .ok()
        .filter(|s| s.installed || s.maintenance || !s.versionstring.is_empty()))
}

/// An authenticated OCS GET (§1.4): `OCS-APIRequest: true`, JSON, bounded time.
async fn ocs_get(
    http: &reqwest::Client,
    base: &Url,
    endpoint: &str,
    login: &str,
    password: &Secret,
) -> Result<serde_json::Value, DavError> {
    let url = join(base, &format!("ocs/v2.php/{endpoint}?format=json"))?;
    let resp = http
        .get(url)
        .basic_auth(login, Some(password.expose()))
        .header("OCS-APIRequest", "true")
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| DavError::from_reqwest(&e, base.as_str()))?;
    let st = resp.status();
    if !st.is_success() {
        return Err(DavError::from_status(
            st,
            &Method::GET,
            &format!("ocs/v2.php/{endpoint}"),
        ));
    }
    resp.json()
        .await
        .map_err(|e| DavError::BadResponse(format!("{endpoint} answer is not JSON: {e}")))
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

/// Finds the DAV root for `url`.
pub async fn discover(
    http: &reqwest::Client,
    url: &Url,
    login: Option<&str>,
    password: Option<&Secret>,
) -> Result<Endpoint, DavError> {
    if let Some(base) = base_of_dav_url(url) {
        return Ok(Endpoint {
            dav_root: url.clone(),
            nextcloud_base: Some(base),
            user_id: None,
        });
    }
    match status(http, url).await? {
        Some(st) => {
            if st.maintenance {
                return Err(DavError::Unavailable);
            }
            let (Some(login), Some(pw)) = (login, password) else {
                return Err(DavError::Config(
                    "this is a Nextcloud server: give the login with --user".into(),
                ));
            };
            let id = user_id(http, url, login, pw).await?;
            let dav_root = join(
                url,
                &format!("remote.php/dav/files/{}/", super::path::encode_segment(&id)),
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
    fn base_from_dav_url() {
        let u = Url::parse("https://h/nc/remote.php/dav/files/alice/").expect("url");
        assert_eq!(base_of_dav_url(&u).expect("base").as_str(), "https://h/nc");
        let plain = Url::parse("https://h/dav/").expect("url");
        assert!(base_of_dav_url(&plain).is_none());
    }
}
