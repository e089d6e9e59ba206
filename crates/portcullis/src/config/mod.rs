//! Configuration: the TOML file users write, and the validated settings the gateway runs on.
//!
//! Loading is two steps, as in river: [`raw`] mirrors the file (serde, unknown keys rejected)
//! and [`Settings::from_raw`] checks every value, collecting *all* problems at once so that
//! `portcullis check` can list them like `nginx -t`. Every error names its key path and, where
//! the file has it, the line.

pub mod environment;
pub mod raw;
pub mod start;
pub(crate) mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use portcullis_gate::settings::{
    InflightSettings, ProbesSettings, Refusal, ReputationConfig, RouteSettings, UnknownRoute,
    ZoneConfig,
};
use portcullis_policy::client::ClientIdentity;

use std::sync::Arc;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `rate_limit.per_ip.rate` or `route[1].upstream`.
    pub key: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    /// The file the errors refer to.
    pub path: PathBuf,
    /// The problems, in file order where known.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Validated settings for the whole gateway.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listeners, state, threads, shutdown.
    pub server: ServerSettings,
    /// Where `/metrics` is served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The admin API listener, if configured.
    pub admin: Option<AdminSettings>,
    /// How the client address is found.
    pub client_ip: ClientIdentity,
    /// Upstream server groups, by position (routes refer to them by index).
    pub upstreams: Vec<UpstreamSettings>,
    /// Routes in file order.
    pub routes: Vec<RouteSettings>,
    /// Rate-limit zones, by position (routes refer to them by index).
    pub zones: Vec<ZoneConfig>,
    /// Probe blocklist; `None` when `[probes]` is absent.
    pub probes: Option<ProbesSettings>,
    /// The API's own routes (its OpenAPI spec); `None` when `[api]` is absent.
    pub api: Option<ApiSettings>,
    /// Reputation and bans; `None` when `[reputation]` is absent.
    pub reputation: Option<ReputationConfig>,
    /// Concurrency caps.
    pub inflight: InflightSettings,
    /// Access log.
    pub access_log: AccessLogSettings,
    /// Diagnostic logging.
    pub log: LogSettings,
    /// Bans and offenses shared with other gateways; `None` when `[cluster]` is absent.
    pub cluster: Option<ClusterSettings>,
}

/// `[cluster]`: several gateways behind one load balancer share bans and offenses through
/// Redis (or Valkey).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis://` or `rediss://` (TLS) URL, as written.
    pub redis: String,
    /// Prefix of every key and of the channel, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Bound on connecting and on each Redis command (only the background task waits on it).
    pub timeout: Duration,
    /// File holding the Redis password (instead of writing it in the URL).
    pub password_file: Option<PathBuf>,
    /// Offenses and ban changes waiting for Redis at most; beyond that they are dropped
    /// (and counted), never waited for.
    pub queue: usize,
    /// Longest a request waits for Redis's answer about a `shared = true` zone before this
    /// gateway's own count decides (fail open).
    pub shared_timeout: Duration,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Plain-HTTP listeners.
    pub listen: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls: Vec<TlsListener>,
    /// Where bans and offender history persist; `None` keeps them in memory only.
    pub state_dir: Option<PathBuf>,
    /// Worker threads for the proxy.
    pub threads: usize,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Idle upstream connections kept for reuse.
    pub upstream_keepalive: usize,
    /// Largest request body accepted (nginx's `client_max_body_size`); `None`: no limit.
    /// Routes may set their own.
    pub client_max_body_size: Option<u64>,
    /// Whole seconds an idle client connection is kept open between requests (nginx's
    /// `keepalive_timeout`, at least 1); `None`: keep-alive off.
    pub keepalive_timeout: Option<u64>,
    /// Most requests served on one HTTP/1.1 client connection before it is closed (nginx's
    /// `keepalive_requests`).
    pub keepalive_requests: u32,
    /// Most time a request header may take to arrive, all reads together (nginx's
    /// `client_header_timeout`).
    pub client_header_timeout: Duration,
    /// Most time between two reads of a request body (nginx's `client_body_timeout`): a
    /// client that stops sending its body is answered 408.
    pub client_body_timeout: Duration,
    /// Most time between two writes to a client (nginx's `send_timeout`): a client that stops
    /// reading is closed, and stops holding its upstream connection.
    pub send_timeout: Duration,
    /// Most time a closing HTTP/1 connection keeps reading (and discarding) a request body
    /// that was answered without being read (nginx's `lingering_time`); zero: no lingering.
    pub lingering_time: Duration,
    /// Most time between two of those reads (nginx's `lingering_timeout`).
    pub lingering_timeout: Duration,
    /// Pass on header fields whose name holds an underscore (nginx's
    /// `underscores_in_headers`, off by default: such fields are dropped).
    pub underscores_in_headers: bool,
    /// Longest request line or header field (nginx's `large_client_header_buffers` size).
    pub max_header_line: usize,
    /// Most bytes of a whole request header (nginx's `large_client_header_buffers` number ×
    /// size).
    pub max_header_bytes: usize,
    /// Read a request body whole before contacting the upstream when its declared length is
    /// at most `client_body_buffer_size` (nginx's `proxy_request_buffering`).
    pub proxy_request_buffering: bool,
    /// Largest body read whole before the upstream is contacted (at most 64 KiB, Pingora's
    /// body buffer).
    pub client_body_buffer_size: usize,
    /// Serve plain HTTP/1.1 requests without a body on portcullis's own relay instead of
    /// Pingora's `HttpProxy` (see `fast`); everything else goes to `HttpProxy` either way.
    pub fast_path: bool,
    /// Give each worker its own listening socket (`SO_REUSEPORT`, as nginx's `listen ...
    /// reuseport`): the kernel spreads new connections evenly over the workers. `false`: the
    /// first idle worker takes each one (workers.rs).
    pub reuseport: bool,
}

/// One TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    /// Address to bind.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Address to bind.
    pub listen: SocketAddr,
    /// File holding the bearer token, if any.
    pub token_file: Option<PathBuf>,
}

/// One `[[upstream]]`.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Name routes refer to.
    pub name: String,
    /// Resolved server addresses.
    pub servers: Vec<SocketAddr>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for each read from the upstream.
    pub read_timeout: Duration,
    /// How long a server that refused a connection is skipped.
    pub down_for: Duration,
}

/// `[api]`: the positive model of the API behind the gateway.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Where the spec comes from.
    pub source: ApiSource,
    /// What a request outside the spec gets.
    pub unknown: UnknownRoute,
    /// Paths served outside the spec (`/docs`); a trailing `/` makes a prefix.
    pub extra_paths: Vec<String>,
    /// How long fetching `openapi_url` may take.
    pub fetch_timeout: Duration,
}

/// Where `[api]` reads the spec.
#[derive(Debug, Clone)]
pub enum ApiSource {
    /// `openapi`: a file, compiled during validation (an invalid spec is a config error).
    File {
        /// The resolved path.
        path: PathBuf,
        /// The compiled spec, `extra_paths` included.
        spec: Arc<portcullis_policy::api::Spec>,
    },
    /// `openapi_url`: fetched from the upstream when the runtime is built (start, reload).
    Url(String),
}

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// nginx "combined" with the portcullis decision appended.
    Combined,
    /// One JSON object a line.
    Json,
}

/// `[access_log]`.
#[derive(Debug, Clone)]
pub struct AccessLogSettings {
    /// `None` = off; `Some(None)` = stdout; `Some(Some(path))` = that file.
    pub target: Option<Option<PathBuf>>,
    /// Line format.
    pub format: AccessLogFormat,
}

/// Diagnostic log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object a line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Line format.
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `portcullis=debug`.
    pub level: String,
}

impl Settings {
    /// The IPv6 aggregation prefix of client identities.
    pub fn client_ip_prefix(&self) -> u8 {
        self.client_ip.ipv6_prefix()
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            path: path.to_path_buf(),
            errors: vec![ConfigError {
                key: "(file)".into(),
                line: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Settings::parse(&text, base).map_err(|errors| ConfigErrors {
            path: path.to_path_buf(),
            errors,
        })
    }

    /// Parses and validates configuration text; relative paths in it are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Settings, Vec<ConfigError>> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            vec![ConfigError {
                key: raw::error_key(text, &e),
                line,
                message: e.message().trim().to_string(),
            }]
        })?;
        validate::validate(raw, text, base, &environment::System)
    }
}

/// An `openapi_url` taken apart: `host:port` to connect to, the Host header, and the target.
#[derive(Debug, PartialEq, Eq)]
pub struct SpecUrl {
    /// `host:port` (port 80 when the URL names none).
    pub authority: String,
    /// The request target (path and query).
    pub target: String,
}

/// Parses an `openapi_url`: plain `http://` only, as the spec is fetched from the upstream
/// portcullis proxies to, usually on the same host or network.
pub fn parse_spec_url(url: &str) -> Result<SpecUrl, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "{url:?} is not an http:// URL (the spec is fetched from the upstream, e.g. \"http://127.0.0.1:8000/openapi.json\")"
        ));
    };
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no host (or has user info)"));
    }
    if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("{url:?} has spaces or control bytes in its path"));
    }
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    let authority = match has_port {
        true => authority.to_string(),
        false => format!("{authority}:80"),
    };
    Ok(SpecUrl {
        authority,
        target: target.to_string(),
    })
}

/// 1-based line number of byte offset `at` in `text`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests;
