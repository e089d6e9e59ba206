//! The admin API (`[admin] listen`): list, add and remove bans, show a client's history,
//! reload the configuration. The `fail2ban-client` of portcullis; `portcullis bans ...` wraps it.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | `/bans` | active bans (JSON array) |
//! | POST | `/bans` | ban `{"target": "IP or CIDR", "duration": "1h", "reason": "..."}` |
//! | DELETE | `/bans?target=IP-or-CIDR` | unban |
//! | GET | `/clients/IP` | one client's offense history |
//! | POST | `/reload` | re-read the configuration file |
//! | GET | `/healthz` | liveness |
//!
//! With `token_file`, every call needs `Authorization: Bearer <token>`.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::BytesMut;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use portcullis_policy::time::{Clock, SystemClock};
use serde::Deserialize;
use serde_json::json;

use crate::config::validate::parse_net;
use crate::runtime::Runtime;

/// Largest request body accepted (a ban request is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// The admin HTTP app.
pub struct AdminApp {
    /// The running configuration (for the ban table).
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// The expected bearer token, if any.
    pub token: Option<String>,
    /// The configuration file, for `/reload`.
    pub config_path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanRequest {
    target: String,
    duration: Option<String>,
    reason: Option<String>,
}

fn respond(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    let mut text = body.to_string().into_bytes();
    text.push(b'\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", text.len())
        .body(text)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Vec<u8>> {
    respond(status, json!({ "error": message.into() }))
}

/// Compares in time independent of where the strings differ.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
                }
            }
            Ok(None) => return Ok(body.to_vec()),
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read body: {e}"),
                ))
            }
        }
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            v.replace("%2F", "/")
                .replace("%2f", "/")
                .replace("%3A", ":")
                .replace("%3a", ":")
        })
    })
}

impl AdminApp {
    async fn handle(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if let Some(token) = &self.token {
            let given = session
                .req_header()
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !same_token(given.trim().as_bytes(), token.as_bytes()) {
                return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            }
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let query = session.req_header().uri.query().map(str::to_string);
        let rt = self.runtime.load_full();
        let reputation = &rt.filters.store.reputation;
        let now = SystemClock.now_ms();
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => respond(StatusCode::OK, json!({ "status": "ok" })),
            (Method::GET, "/bans") => respond(StatusCode::OK, json!(reputation.bans(now))),
            (Method::POST, "/bans") => {
                let body = match read_body(session).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let req: BanRequest = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => {
                        return error(StatusCode::BAD_REQUEST, format!("bad ban request: {e}"))
                    }
                };
                let Some(net) = parse_net(&req.target) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("{:?} is not an IP or CIDR", req.target),
                    );
                };
                let duration = match req.duration.as_deref() {
                    None => std::time::Duration::from_millis(reputation.settings().bantime_ms),
                    Some(d) => match humantime::parse_duration(d) {
                        Ok(d) => d,
                        Err(e) => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                format!("{d:?} is not a duration: {e}"),
                            )
                        }
                    },
                };
                let reason = req.reason.unwrap_or_else(|| "manual".into());
                match reputation.ban(net, duration.as_millis() as u64, &reason, now) {
                    Ok(event) => {
                        rt.filters.store.record(event.clone());
                        respond(StatusCode::CREATED, json!(event))
                    }
                    Err(e) => error(StatusCode::CONFLICT, e.to_string()),
                }
            }
            (Method::DELETE, p) if p == "/bans" || p.starts_with("/bans/") => {
                let target = query_param(query.as_deref(), "target")
                    .or_else(|| p.strip_prefix("/bans/").map(str::to_string));
                let Some(net) = target.as_deref().and_then(parse_net) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "say which ban: DELETE /bans?target=IP-or-CIDR",
                    );
                };
                match reputation.unban(net, now) {
                    Some(event) => {
                        rt.filters.store.record(event.clone());
                        respond(StatusCode::OK, json!(event))
                    }
                    None => error(StatusCode::NOT_FOUND, format!("{net} is not banned")),
                }
            }
            (Method::GET, p) if p.starts_with("/clients/") => {
                let raw = p.trim_start_matches("/clients/");
                let Ok(ip) = raw.parse::<std::net::IpAddr>() else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("{raw:?} is not an IP address"),
                    );
                };
                let key = rt.client_ip.normalize(ip);
                match reputation.history(key, now) {
                    Some(info) => respond(StatusCode::OK, json!(info)),
                    None => error(StatusCode::NOT_FOUND, format!("no history for {key}")),
                }
            }
            (Method::POST, "/reload") => {
                match crate::reload::reload(&self.config_path, &self.runtime) {
                    Ok(()) => respond(StatusCode::OK, json!({ "reloaded": true })),
                    Err(errors) => respond(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({ "reloaded": false, "errors": errors }),
                    ),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        self.handle(session).await
    }
}

/// Reads the token from `path`, trimmed; an empty file is an error.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read admin token_file {}: {e}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(format!("admin token_file {} is empty", path.display()));
    }
    Ok(token)
}
