//! notify_push (nextcloud-protocol.md §9.2): a WebSocket at `/push/ws`. The client sends its
//! login name, then its (app) password, within 15 s; the server answers `authenticated` or
//! `err: Invalid credentials` and closes. Afterwards it sends `notify_file` whenever something
//! changed in the user's files (here: after every successful DAV write, and on demand for
//! changes made behind the server's back). Pings are answered by the library.

use super::auth::Auth;
use super::http::Shared;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

/// Answers the WebSocket upgrade and serves the connection in the background.
pub(super) fn upgrade(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Response<super::http::FakeBody> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec());
    let is_ws = req
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.eq_ignore_ascii_case("websocket"))
        .unwrap_or(false);
    let (Some(key), true) = (key, is_ws) else {
        return super::http::plain(StatusCode::BAD_REQUEST, "websocket upgrade expected");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        serve(shared, ws).await;
    });
    let mut r = super::http::plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("connection", HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}

async fn serve<S>(shared: Arc<Shared>, mut ws: tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut creds = Vec::new();
    while creds.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => creds.push(t.to_string()),
            Ok(Some(Ok(_))) => {}
            _ => return,
        }
    }
    let ok = matches!(
        shared.accounts().check(
            &creds[0],
            &creds[1],
            shared.knobs.two_factor.load(Ordering::Relaxed),
            shared.knobs.bruteforce_max.load(Ordering::Relaxed),
        ),
        Auth::Account | Auth::App(_)
    );
    if !ok {
        let _ = ws.send(Message::text("err: Invalid credentials")).await;
        let _ = ws.close(None).await;
        return;
    }
    let mut rx = shared.push.subscribe();
    if ws.send(Message::text("authenticated")).await.is_err() {
        return;
    }
    shared.stats.push_clients.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(m) => {
                    if ws.send(Message::text(m)).await.is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            },
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    shared.stats.push_clients.fetch_sub(1, Ordering::SeqCst);
}
