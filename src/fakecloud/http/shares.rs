//! The sharing API (nextcloud-protocol.md §12): public links and shares with other users of
//! the server (the fake's other users are [`COLLEAGUES`]): create, list by path, read,
//! change permissions and delete, with the "passwords are enforced" policy for links as a
//! knob. Shares belong to paths here (a real server follows the file id through renames).

use super::{authorized, form, is_ok, json, Resp, Shared};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::sync::atomic::Ordering;

/// The other users of the fake server, whom files can be shared with (the demo's activity
/// names the last two).
pub const COLLEAGUES: [&str; 4] = ["bob", "carol", "claire.martin", "paul.durand"];

/// One share: a public link, or a share with one user (`with`).
#[derive(Debug, Clone)]
pub(crate) struct Share {
    id: u64,
    with: Option<String>,
    permissions: u32,
    path: String,
    token: String,
    password: Option<String>,
    expiration: Option<String>,
    is_dir: bool,
    stime: u64,
}

/// The server's shares.
#[derive(Debug, Default)]
pub(crate) struct Shares {
    next: u64,
    all: Vec<Share>,
}

fn failure(status: StatusCode, message: &str) -> Resp {
    json(
        status,
        serde_json::json!({"ocs":{"meta":{"status":"failure","statuscode":status.as_u16(),
            "message":message},"data":[]}}),
    )
}

fn ok(data: serde_json::Value) -> Resp {
    json(
        StatusCode::OK,
        serde_json::json!({"ocs":{"meta":{"status":"ok","statuscode":200,"message":"OK"},
            "data":data}}),
    )
}

fn describe(shared: &Shared, s: &Share) -> serde_json::Value {
    if let Some(with) = &s.with {
        return serde_json::json!({
            "id": s.id.to_string(),
            "share_type": 0,
            "uid_owner": shared.cfg.user_id,
            "displayname_owner": shared.cfg.login,
            "permissions": s.permissions,
            "stime": s.stime,
            "expiration": null,
            "token": null,
            "path": s.path,
            "item_type": if s.is_dir { "folder" } else { "file" },
            "share_with": with,
            "share_with_displayname": with,
            "label": "",
            "note": "",
            "hide_download": 0,
        });
    }
    serde_json::json!({
        "id": s.id.to_string(),
        "share_type": 3,
        "uid_owner": shared.cfg.user_id,
        "displayname_owner": shared.cfg.login,
        "permissions": 1,
        "stime": s.stime,
        "expiration": s.expiration.as_ref().map(|d| format!("{d} 00:00:00")),
        "token": s.token,
        "url": format!("http://{}/s/{}", shared.addr, s.token),
        "path": s.path,
        "item_type": if s.is_dir { "folder" } else { "file" },
        "share_with": s.password.as_ref().map(|_| "***redacted***"),
        "label": "",
        "note": "",
        "hide_download": 0,
    })
}

/// `/` plus the path's segments: how shares name what they share.
fn normal(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segs.join("/"))
}

/// A valid `YYYY-MM-DD` that is not before today (UTC).
fn check_date(d: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = d.split('-').collect();
    let nums: Vec<u64> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    if parts.len() != 3
        || nums.len() != 3
        || parts[0].len() != 4
        || !(1..=12).contains(&nums[1])
        || !(1..=31).contains(&nums[2])
    {
        return Err("Invalid date, date format must be YYYY-MM-DD");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, dd, ..) = crate::writeback::civil_utc(now);
    if (nums[0] as i64, nums[1] as i64, nums[2] as i64) < (y, m, dd) {
        return Err("Expiration date is in the past");
    }
    Ok(())
}

/// `…/apps/files_sharing/api/v1/shares[/<id>]`.
pub(super) async fn handle(shared: &Shared, req: Request<Incoming>, rest: &str) -> Resp {
    if !is_ok(&authorized(shared, req.headers())) {
        return failure(StatusCode::UNAUTHORIZED, "Current user is not logged in");
    }
    let id = rest.trim_matches('/');
    let method = req.method().clone();
    if !id.is_empty() {
        let Ok(id) = id.parse::<u64>() else {
            return failure(
                StatusCode::NOT_FOUND,
                "Wrong share ID, share does not exist",
            );
        };
        let changes = if method == Method::PUT {
            Some(form(req).await)
        } else {
            None
        };
        let mut st = shared.shares.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = st.all.iter().position(|s| s.id == id) else {
            return failure(
                StatusCode::NOT_FOUND,
                "Wrong share ID, share does not exist",
            );
        };
        return match method {
            Method::GET => ok(serde_json::json!([describe(shared, &st.all[i])])),
            Method::PUT => {
                let f = changes.unwrap_or_default();
                let s = &mut st.all[i];
                match f.get("permissions").map(|p| p.parse::<u32>()) {
                    Some(Ok(p)) if (1..=31).contains(&p) && p & 1 == 1 => s.permissions = p,
                    Some(_) => return failure(StatusCode::BAD_REQUEST, "Wrong permissions"),
                    None => {}
                }
                ok(describe(shared, s))
            }
            Method::DELETE => {
                st.all.remove(i);
                ok(serde_json::json!([]))
            }
            _ => failure(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        };
    }
    match method {
        Method::GET => {
            let q = super::decoded_pairs(req.uri().query().unwrap_or(""));
            let path = q.get("path").map(|v| normal(v));
            if let Some(p) = &path {
                if !shared.file_path(p).exists() {
                    return failure(
                        StatusCode::NOT_FOUND,
                        "Wrong path, file/folder does not exist",
                    );
                }
            }
            let st = shared.shares.lock().unwrap_or_else(|p| p.into_inner());
            let list: Vec<serde_json::Value> = st
                .all
                .iter()
                .filter(|s| path.as_ref().is_none_or(|p| &s.path == p))
                .map(|s| describe(shared, s))
                .collect();
            ok(serde_json::Value::Array(list))
        }
        Method::POST => {
            let f = form(req).await;
            let Some(path) = f.get("path").map(|p| normal(p)) else {
                return failure(
                    StatusCode::NOT_FOUND,
                    "Please specify a file or folder path",
                );
            };
            let local = shared.file_path(&path);
            let Ok(md) = std::fs::metadata(&local) else {
                return failure(
                    StatusCode::NOT_FOUND,
                    "Wrong path, file/folder does not exist",
                );
            };
            match f.get("shareType").map(String::as_str) {
                Some("3") => {}
                Some("0") => return share_with_user(shared, &f, &path, md.is_dir()),
                _ => return failure(StatusCode::BAD_REQUEST, "Unknown share type"),
            }
            let password = f.get("password").filter(|p| !p.is_empty()).cloned();
            if password.is_none() && shared.knobs.links_need_password.load(Ordering::Relaxed) {
                return failure(
                    StatusCode::FORBIDDEN,
                    "Passwords are enforced for link and mail shares",
                );
            }
            let expiration = f.get("expireDate").filter(|d| !d.is_empty()).cloned();
            if let Some(d) = &expiration {
                if let Err(why) = check_date(d) {
                    return failure(StatusCode::BAD_REQUEST, why);
                }
            }
            let mut st = shared.shares.lock().unwrap_or_else(|p| p.into_inner());
            st.next += 1;
            let id = st.next;
            let stime = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let s = Share {
                id,
                with: None,
                permissions: 1,
                token: format!(
                    "Lk{id:04}{:x}",
                    stime.wrapping_mul(2_654_435_761) & 0xffff_ffff
                ),
                path: path.clone(),
                password,
                expiration,
                is_dir: md.is_dir(),
                stime,
            };
            let out = describe(shared, &s);
            st.all.push(s);
            drop(st);
            shared.record(&shared.cfg.user_id, "shared", &path, None, 0);
            ok(out)
        }
        _ => failure(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
    }
}

/// A share of `path` with the user named in `shareWith`.
fn share_with_user(
    shared: &Shared,
    f: &std::collections::HashMap<String, String>,
    path: &str,
    is_dir: bool,
) -> Resp {
    let Some(with) = f.get("shareWith").filter(|w| !w.is_empty()) else {
        return failure(StatusCode::BAD_REQUEST, "Please specify a valid user");
    };
    if *with == shared.cfg.user_id || *with == shared.cfg.login {
        return failure(StatusCode::FORBIDDEN, "You cannot share to yourself");
    }
    if !COLLEAGUES.contains(&with.as_str()) {
        return failure(StatusCode::NOT_FOUND, "Please specify a valid user");
    }
    let permissions = match f.get("permissions").map(|p| p.parse::<u32>()) {
        None => 31,
        Some(Ok(p)) if (1..=31).contains(&p) && p & 1 == 1 => p,
        Some(_) => return failure(StatusCode::BAD_REQUEST, "Wrong permissions"),
    };
    let mut st = shared.shares.lock().unwrap_or_else(|p| p.into_inner());
    if st
        .all
        .iter()
        .any(|s| s.path == path && s.with.as_ref() == Some(with))
    {
        return failure(
            StatusCode::FORBIDDEN,
            &format!("Path is already shared with {with}"),
        );
    }
    st.next += 1;
    let s = Share {
        id: st.next,
        with: Some(with.clone()),
        permissions,
        path: path.to_string(),
        token: String::new(),
        password: None,
        expiration: None,
        is_dir,
        stime: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let out = describe(shared, &s);
    st.all.push(s);
    drop(st);
    shared.record(&shared.cfg.user_id, "shared", path, None, 0);
    ok(out)
}

impl Shared {
    /// The shares of `path` (tests check what the server holds).
    fn shares_at(&self, path: &str) -> Vec<Share> {
        let p = normal(path);
        self.shares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .iter()
            .filter(|s| s.path == p)
            .cloned()
            .collect()
    }

    /// The users `path` is shared with, and the permissions of each share.
    pub(crate) fn user_shares_of(&self, path: &str) -> Vec<(String, u32)> {
        self.shares_at(path)
            .into_iter()
            .filter_map(|s| s.with.map(|w| (w, s.permissions)))
            .collect()
    }

    /// The public link with `token`: the path it shares (relative to the user's root) and
    /// its password, if one protects it.
    pub(crate) fn link(&self, token: &str) -> Option<(String, Option<String>)> {
        self.shares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .iter()
            .find(|s| s.with.is_none() && s.token == token)
            .map(|s| (s.path.clone(), s.password.clone()))
    }

    /// The public links of `path`: token, expiry date, whether a password protects it.
    pub(crate) fn links_of(&self, path: &str) -> Vec<(String, Option<String>, bool)> {
        self.shares_at(path)
            .into_iter()
            .filter(|s| s.with.is_none())
            .map(|s| (s.token, s.expiration, s.password.is_some()))
            .collect()
    }
}
