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
//!
//! Without a token the API trusts whoever can reach its (loopback) port, so it refuses what
//! only a browser would send there: a `Host` that is a DNS name (DNS rebinding: a page whose
//! name resolves to 127.0.0.1), and any request carrying `Origin` (a page of another site). A
//! ban is made only from a JSON body (`Content-Type: application/json`, which a page cannot
//! send cross-site without a CORS preflight this API never grants), and never of a network
//! wider than `MIN_BAN_PREFIX_V4` / `MIN_BAN_PREFIX_V6` bits: nobody means to ban the Internet.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::BytesMut;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::json;

use crate::config::validate::parse_net;
use crate::runtime::Runtime;

/// Largest request body accepted (a ban request is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// The widest IPv4 network a ban may name (a /8 is a whole registry block already).
const MIN_BAN_PREFIX_V4: u8 = 8;
/// The widest IPv6 network a ban may name.
const MIN_BAN_PREFIX_V6: u8 = 16;

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

/// Compares `given` with `token` in a time that tells nothing of the token: both are hashed
/// with a key drawn at start (SipHash), and the digests compared whole. Comparing the bytes
/// directly would return early on a length mismatch, and so tell the token's length.
fn same_token(given: &[u8], token: &[u8]) -> bool {
    use std::hash::{BuildHasher, Hasher};
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let key = KEY.get_or_init(std::collections::hash_map::RandomState::new);
    let digest = |bytes: &[u8]| {
        let mut h = key.build_hasher();
        h.write(bytes);
        h.finish()
    };
    digest(given) ^ digest(token) == 0
}

/// Why a request without a token is refused before it is read, if it is: one a browser sends
/// for a page (see the module docs), never the CLI or curl.
fn browser_request(session: &ServerSession) -> Option<&'static str> {
    let headers = &session.req_header().headers;
    if headers.contains_key(http::header::ORIGIN) {
        return Some("requests from web pages (Origin) are not accepted");
    }
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let name = portcullis_gate::router::host_without_port(host);
    let literal =
        name.parse::<std::net::IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost");
    (!literal).then_some("Host must be an IP address or localhost (or configure token_file)")
}

/// True when `headers` say the body is JSON.
fn json_body(session: &ServerSession) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
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
        } else if let Some(why) = browser_request(session) {
            return error(StatusCode::FORBIDDEN, why);
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let query = session.req_header().uri.query().map(str::to_string);
        let rt = self.runtime.load_full();
        let reputation = &rt.store.reputation;
        let now = rt.gate.clock().now_ms();
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => respond(StatusCode::OK, json!({ "status": "ok" })),
            (Method::GET, "/bans") => respond(StatusCode::OK, json!(reputation.bans(now))),
            (Method::POST, "/bans") => {
                if !json_body(session) {
                    return error(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "a ban request is JSON: Content-Type: application/json",
                    );
                }
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
                let widest = match net {
                    ipnet::IpNet::V4(_) => MIN_BAN_PREFIX_V4,
                    ipnet::IpNet::V6(_) => MIN_BAN_PREFIX_V6,
                };
                if net.prefix_len() < widest {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("{net} is too wide to ban: at most a /{widest}"),
                    );
                }
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
                        rt.store.record(event.clone());
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
                        rt.store.record(event.clone());
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
