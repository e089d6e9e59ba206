//! `[api]`: the API's own routes, from its OpenAPI spec (`portcullis_policy::api` matches).
//!
//! A spec file is compiled during validation. A spec URL (`openapi_url`, FastAPI serves one at
//! `/openapi.json`) is fetched each time a runtime is built, at start and on every reload. A
//! fetch that fails keeps the spec the previous runtime had; a gateway that never got one
//! serves with the probe blocklist alone and says so in a warning and in
//! `portcullis_api_spec_templates` (0). It never refuses everything for want of a spec.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use portcullis_policy::api::Spec;
use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};

use crate::config::{parse_spec_url as parse_url, ApiSettings, ApiSource, UnknownRoute};

/// Largest spec accepted from `openapi_url` (GitHub's whole REST API spec is about 10 MB).
const MAX_SPEC_BYTES: usize = 32 * 1024 * 1024;

/// The `[api]` model a runtime decides with.
pub struct ApiModel {
    /// The compiled spec; `None` when it could not be fetched yet (blocklist only).
    pub spec: Option<Arc<Spec>>,
    /// What a request outside the spec gets.
    pub unknown: UnknownRoute,
}

/// The metrics of `[api]`.
struct ApiMetrics {
    /// `portcullis_api_spec_templates`: templates in the spec in use; 0 without a spec.
    templates: IntGauge,
    /// `portcullis_api_spec_loads_total{result}`: spec loads by result (`ok`, `error`).
    loads: IntCounterVec,
}

fn metrics() -> &'static ApiMetrics {
    static METRICS: OnceLock<ApiMetrics> = OnceLock::new();
    METRICS.get_or_init(|| ApiMetrics {
        templates: register_int_gauge!(
            "portcullis_api_spec_templates",
            "Path templates of the API spec in use ([api]); 0 when no spec could be loaded."
        )
        .expect("register portcullis_api_spec_templates"),
        loads: register_int_counter_vec!(
            "portcullis_api_spec_loads_total",
            "API spec loads ([api] openapi or openapi_url) by result: ok, error.",
            &["result"]
        )
        .expect("register portcullis_api_spec_loads_total"),
    })
}

impl ApiModel {
    /// The model for `settings`: the file's spec, or the URL's fetched now; on a failed fetch
    /// the spec of `previous`, if it had one.
    pub fn build(settings: &ApiSettings, previous: Option<&ApiModel>) -> ApiModel {
        let m = metrics();
        let spec = match &settings.source {
            ApiSource::File { spec, .. } => {
                m.loads.with_label_values(&["ok"]).inc();
                Some(spec.clone())
            }
            ApiSource::Url(url) => match fetch_spec(url, settings) {
                Ok(spec) => {
                    m.loads.with_label_values(&["ok"]).inc();
                    tracing::info!(url = %url, templates = spec.template_count(), "API spec loaded");
                    Some(Arc::new(spec))
                }
                Err(why) => {
                    m.loads.with_label_values(&["error"]).inc();
                    let kept = previous.and_then(|p| p.spec.clone());
                    match &kept {
                        Some(_) => {
                            tracing::warn!(url = %url, error = %why, "API spec not loaded; the previous spec stays in use")
                        }
                        None => {
                            tracing::warn!(url = %url, error = %why, "API spec not loaded; serving with the probe blocklist alone until a reload loads it")
                        }
                    }
                    kept
                }
            },
        };
        let templates = spec.as_ref().map_or(0, |s| s.template_count());
        m.templates
            .set(i64::try_from(templates).unwrap_or(i64::MAX));
        ApiModel {
            spec,
            unknown: settings.unknown,
        }
    }
}

/// Fetches and compiles the spec at `url`, `extra_paths` added.
fn fetch_spec(url: &str, settings: &ApiSettings) -> Result<Spec, String> {
    let body = fetch(url, settings.fetch_timeout)?;
    Spec::parse(&body)
        .and_then(|spec| spec.with_extra_paths(&settings.extra_paths))
        .map_err(|e| e.to_string())
}

/// GETs `url` within `timeout` and returns the body of its `200` answer. HTTP/1.0 with
/// `Connection: close`, so the body ends at the close and no chunked decoding is needed.
fn fetch(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let parsed = parse_url(url)?;
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = parsed
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", parsed.authority))?
        .collect();
    let addr = addrs
        .first()
        .ok_or_else(|| format!("{} resolves to no address", parsed.authority))?;
    let mut stream = TcpStream::connect_timeout(addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let host = parsed.authority.trim_end_matches(":80");
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json, application/yaml\r\nUser-Agent: portcullis\r\nConnection: close\r\n\r\n",
        parsed.target
    );
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("cannot send the request to {addr}: {e}"))?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no whole answer from {url} within {timeout:?}"));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading the answer from {url}: {e}")),
        }
        if answer.len() > MAX_SPEC_BYTES {
            return Err(format!(
                "the spec at {url} is larger than {MAX_SPEC_BYTES} bytes"
            ));
        }
    }
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Response::new(&mut fields);
    let len = match head.parse(&answer) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(format!("{url} did not answer with HTTP")),
    };
    match head.code {
        Some(200) => {}
        code => return Err(format!("{url} answered {}", code.unwrap_or(0))),
    }
    let chunked = head.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && !h.value.eq_ignore_ascii_case(b"identity")
    });
    if chunked {
        return Err(format!(
            "{url} answered an HTTP/1.0 request with a chunked body"
        ));
    }
    let length = head
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = answer.split_off(len);
    if let Some(length) = length {
        if body.len() < length {
            return Err(format!(
                "{url}: the body ended after {} of {length} bytes",
                body.len()
            ));
        }
        body.truncate(length);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_with_a_host() {
        let url = parse_url("http://127.0.0.1:8000/openapi.json").unwrap();
        assert_eq!(url.authority, "127.0.0.1:8000");
        assert_eq!(url.target, "/openapi.json");
        assert_eq!(parse_url("http://api").unwrap().authority, "api:80");
        assert_eq!(parse_url("http://[::1]/x").unwrap().authority, "[::1]:80");
        assert_eq!(
            parse_url("http://[::1]:81/x").unwrap().authority,
            "[::1]:81"
        );
        assert!(parse_url("https://api/openapi.json").is_err());
        assert!(parse_url("http:///openapi.json").is_err());
        assert!(parse_url("http://u:p@api/openapi.json").is_err());
        assert!(parse_url("http://api/a b").is_err());
    }
}
