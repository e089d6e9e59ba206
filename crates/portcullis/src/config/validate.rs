//! Raw file → validated [`Settings`], collecting every error with its key and line.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use portcullis_policy::client::{ClientHeader, ClientIdentity};
use portcullis_policy::limiter::{Delay, Rate, ZoneSettings};
use portcullis_policy::probes::{ProbeError, ProbeMatcher, ProbeSettings};
use portcullis_policy::reputation::{Increment, OffenseWeights, ReputationSettings};
use toml_edit::{ImDocument, Item, TableLike};

use super::environment::Environment;
use super::raw::*;
use super::*;

/// Collects errors, looking up each key's line in the parsed document.
pub(super) struct Check<'a> {
    text: &'a str,
    /// Files and names, for the few checks that need the machine.
    pub(super) env: &'a dyn Environment,
    doc: Option<ImDocument<&'a str>>,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Check<'a> {
    pub(super) fn new(text: &'a str, env: &'a dyn Environment) -> Self {
        Self {
            text,
            env,
            doc: ImDocument::parse(text).ok(),
            errors: Vec::new(),
        }
    }

    /// Records that `key` is wrong because of `message`.
    pub(super) fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let line = self
            .doc
            .as_ref()
            .and_then(|d| locate(d, &key))
            .map(|at| line_of(self.text, at));
        self.errors.push(ConfigError {
            key,
            line,
            message: message.into(),
        });
    }

    /// Parses a duration like "500ms", "10m", "1w".
    pub(super) fn duration(
        &mut self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(v) => match humantime::parse_duration(v.trim()) {
                Ok(d) => d,
                Err(e) => {
                    self.err(key, format!("{v:?} is not a duration ({e}); write e.g. \"500ms\", \"10m\", \"1h\", \"1w\""));
                    default
                }
            },
        }
    }

    /// An integer in `range`, or the default.
    pub(super) fn int(
        &mut self,
        key: &str,
        value: Option<i64>,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> i64 {
        match value {
            None => default,
            Some(v) if range.contains(&v) => v,
            Some(v) => {
                self.err(
                    key,
                    format!("{v} is out of range ({}..={})", range.start(), range.end()),
                );
                default
            }
        }
    }

    /// Parses a size as nginx writes it: bytes, or a number with `k`, `m` or `g` (powers of
    /// 1024). `0` means no limit (`None`), as in nginx.
    pub(super) fn size(
        &mut self,
        key: &str,
        value: Option<&RawSize>,
        default: Option<u64>,
    ) -> Option<u64> {
        let Some(raw) = value else {
            return default;
        };
        let (bytes, shown) = match raw {
            RawSize::Bytes(n) => (u64::try_from(*n).ok(), n.to_string()),
            RawSize::Text(t) => (parse_size(t), format!("{t:?}")),
        };
        match bytes {
            Some(0) => None,
            Some(n) => Some(n),
            None => {
                self.err(
                    key,
                    format!(
                        "{shown} is not a size; write e.g. \"1m\", \"512k\", or \"0\" for no limit"
                    ),
                );
                default
            }
        }
    }

    /// Parses a CIDR or a bare address (a /32 or /128).
    pub(super) fn net(&mut self, key: &str, value: &str) -> Option<IpNet> {
        parse_net(value).or_else(|| {
            self.err(key, format!("{value:?} is not an IP address or CIDR"));
            None
        })
    }

    /// Parses a listen address like "127.0.0.1:8080" or "[::1]:8080".
    pub(super) fn listen(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    key,
                    format!(
                        "{value:?} is not an address:port (e.g. \"0.0.0.0:8080\", \"[::]:8080\")"
                    ),
                );
                None
            }
        }
    }
}

/// Parses "10.0.0.0/8", "10.0.0.1" or "::1" into a network, host bits cleared.
pub fn parse_net(value: &str) -> Option<IpNet> {
    let v = value.trim();
    v.parse::<IpNet>()
        .ok()
        .or_else(|| v.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

/// `keepalive_timeout` in Pingora's terms: whole seconds, at least 1 (Pingora reads 0 as
/// "forever"); zero turns keep-alive off, as in nginx.
fn keepalive_secs(d: Duration) -> Option<u64> {
    if d.is_zero() {
        None
    } else {
        Some(d.as_secs_f64().ceil() as u64)
    }
}

/// Parses `"1048576"`, `"512k"`, `"1m"`, `"1g"` (case-insensitive, powers of 1024) into bytes.
pub fn parse_size(value: &str) -> Option<u64> {
    let v = value.trim();
    let (digits, unit) = match v.char_indices().last()? {
        (at, c) if c.is_ascii_alphabetic() => (&v[..at], c.to_ascii_lowercase()),
        _ => (v, ' '),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let shift = match unit {
        ' ' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Byte offset in the document of the key named by a path like `route[1].upstream`; where a
/// key is missing (a required key left out), the offset of its nearest parent.
pub fn locate(doc: &ImDocument<&str>, path: &str) -> Option<usize> {
    locate_in(doc.as_table(), path)
}

fn locate_in(table: &dyn TableLike, path: &str) -> Option<usize> {
    let (part, rest) = match path.split_once('.') {
        Some((p, r)) => (p, Some(r)),
        None => (path, None),
    };
    let (name, index) = match part.split_once('[') {
        Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
        None => (part, None),
    };
    let (key, item) = table.get_key_value(name)?;
    let here = key.span().map(|s| s.start);
    let (next, here): (Option<&dyn TableLike>, Option<usize>) = match (index, item) {
        (None, _) => (item.as_table_like(), here),
        (Some(i), Item::ArrayOfTables(tables)) => match tables.get(i) {
            Some(t) => (
                Some(t as &dyn TableLike),
                t.span().map(|s| s.start).or(here),
            ),
            None => (None, here),
        },
        (Some(i), _) => match item.as_array().and_then(|a| a.get(i)) {
            Some(v) => (
                v.as_inline_table().map(|t| t as &dyn TableLike),
                v.span().map(|s| s.start).or(here),
            ),
            None => (None, here),
        },
    };
    match (rest, next) {
        (Some(rest), Some(t)) => locate_in(t, rest).or(here),
        _ => here,
    }
}

/// `large_client_header_buffers = "4 8k"` as nginx writes it: (number, size). The size bounds
/// the request line and each header field, number × size the whole header; at most 1 MiB in
/// all, the most Pingora reads.
fn header_buffers(c: &mut Check, value: Option<&str>) -> (usize, usize) {
    const KEY: &str = "server.large_client_header_buffers";
    let default = (4, 8 * 1024);
    let Some(text) = value else {
        return default;
    };
    let mut parts = text.split_whitespace();
    let parsed = match (parts.next(), parts.next(), parts.next()) {
        (Some(number), Some(size), None) => number
            .parse::<usize>()
            .ok()
            .zip(parse_size(size).and_then(|s| usize::try_from(s).ok())),
        _ => None,
    };
    match parsed {
        Some((number, size)) if number >= 1 && size >= 1024 && number * size <= 1_048_575 => {
            (number, size)
        }
        _ => {
            c.err(
                KEY,
                format!("{text:?} is not \"NUMBER SIZE\" as nginx writes it (e.g. \"4 8k\"; size at least 1k, at most 1m in all)"),
            );
            default
        }
    }
}

/// The most `client_body_buffer_size` may be: Pingora's body buffer (`BODY_BUF_LIMIT`).
const BODY_BUFFER_MAX: u64 = 64 * 1024;

/// Validates every section, collecting every error with its key and line. The checks are
/// pure; what they need of the machine (files, names) comes from `env`.
pub(super) fn validate(
    raw: RawConfig,
    text: &str,
    base: &Path,
    env: &dyn Environment,
) -> Result<Settings, Vec<ConfigError>> {
    let mut c = Check::new(text, env);
    let resolve_path = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let server = server(&mut c, &raw.server, &resolve_path);
    let metrics = metrics(&mut c, raw.metrics.as_ref());
    let admin = admin(&mut c, raw.admin.as_ref(), &resolve_path);
    let client_ip = client_ip(&mut c, &raw.client_ip);
    let (upstreams, upstream_index) = upstreams(&mut c, &raw.upstream);
    // [rate_limit.*], before routes so they can refer to zones.
    let zone_names: Vec<&String> = raw.rate_limit.keys().collect();
    let zones: Vec<ZoneConfig> = raw
        .rate_limit
        .iter()
        .map(|(name, z)| zone(&mut c, name, z))
        .collect();

    let routes = routes(
        &mut c,
        &raw.route,
        &zone_names,
        &upstream_index,
        server.client_max_body_size,
    );
    let probes = raw.probes.as_ref().map(|p| probes(&mut c, p));
    let api = raw.api.as_ref().map(|a| api(&mut c, a, &resolve_path));
    let reputation = raw
        .reputation
        .as_ref()
        .map(|r| reputation(&mut c, r, client_ip.ipv6_prefix()));
    let inflight = inflight(&mut c, &raw.inflight);
    let access_log = access_log(&mut c, raw.access_log.as_ref(), &resolve_path);
    let log = log(&mut c, &raw.log);
    let cluster = raw
        .cluster
        .as_ref()
        .map(|cl| cluster(&mut c, cl, &resolve_path));
    if cluster.is_none() {
        for z in zones.iter().filter(|z| z.shared) {
            c.err(
                format!("rate_limit.{}.shared", z.engine.name),
                "a shared zone needs [cluster] (the gateways count it together in Redis)",
            );
        }
    }

    if !c.errors.is_empty() {
        let mut errors = c.errors;
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        return Err(errors);
    }
    Ok(Settings {
        server,
        metrics,
        admin,
        client_ip,
        upstreams,
        routes,
        zones,
        probes,
        api,
        reputation,
        inflight,
        access_log,
        log,
        cluster,
    })
}

/// `[server]`.
fn server(c: &mut Check, s: &RawServer, resolve_path: &dyn Fn(&str) -> PathBuf) -> ServerSettings {
    let header_buffers = header_buffers(c, s.large_client_header_buffers.as_deref());
    let listen: Vec<SocketAddr> = s
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, l)| c.listen(&format!("server.listen[{i}]"), l))
        .collect();
    let mut tls = Vec::new();
    for (i, t) in s.tls.iter().enumerate() {
        let key = format!("server.tls[{i}]");
        let Some(addr) = c.listen(&format!("{key}.listen"), &t.listen) else {
            continue;
        };
        let (cert, keyfile) = (resolve_path(&t.cert), resolve_path(&t.key));
        for (name, p) in [("cert", &cert), ("key", &keyfile)] {
            if !c.env.is_file(p) {
                c.err(
                    format!("{key}.{name}"),
                    format!("{} is not a readable file", p.display()),
                );
            }
        }
        tls.push(TlsListener {
            listen: addr,
            cert,
            key: keyfile,
        });
    }
    if listen.is_empty() && tls.is_empty() && c.errors.is_empty() {
        c.err(
            "server.listen",
            "no listener: set at least one address, e.g. listen = [\"127.0.0.1:8080\"]",
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let server = ServerSettings {
        listen,
        tls,
        state_dir: s.state_dir.as_deref().map(resolve_path),
        threads: c.int("server.threads", s.threads, 1..=1024, cores) as usize,
        shutdown_grace: c.duration(
            "server.shutdown_grace",
            s.shutdown_grace.as_deref(),
            Duration::from_secs(3),
        ),
        upstream_keepalive: c.int(
            "server.upstream_keepalive",
            s.upstream_keepalive,
            0..=65536,
            128,
        ) as usize,
        // nginx's default: an API that takes larger uploads says so, per server or route.
        client_max_body_size: c.size(
            "server.client_max_body_size",
            s.client_max_body_size.as_ref(),
            Some(1024 * 1024),
        ),
        keepalive_timeout: keepalive_secs(c.duration(
            "server.keepalive_timeout",
            s.keepalive_timeout.as_deref(),
            Duration::from_secs(75),
        )),
        // nginx's default since 1.19.10: closing now and then frees per-connection memory and
        // lets a load balancer rebalance long-lived clients.
        keepalive_requests: c.int(
            "server.keepalive_requests",
            s.keepalive_requests,
            1..=i64::from(u32::MAX),
            1000,
        ) as u32,
        client_header_timeout: c.duration(
            "server.client_header_timeout",
            s.client_header_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        client_body_timeout: c.duration(
            "server.client_body_timeout",
            s.client_body_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        send_timeout: c.duration(
            "server.send_timeout",
            s.send_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        lingering_time: c.duration(
            "server.lingering_time",
            s.lingering_time.as_deref(),
            Duration::from_secs(30),
        ),
        lingering_timeout: c.duration(
            "server.lingering_timeout",
            s.lingering_timeout.as_deref(),
            Duration::from_secs(5),
        ),
        underscores_in_headers: s.underscores_in_headers.unwrap_or(false),
        max_header_line: header_buffers.1,
        max_header_bytes: header_buffers.0 * header_buffers.1,
        proxy_request_buffering: s.proxy_request_buffering.unwrap_or(true),
        client_body_buffer_size: {
            let size = c
                .size(
                    "server.client_body_buffer_size",
                    s.client_body_buffer_size.as_ref(),
                    Some(BODY_BUFFER_MAX),
                )
                .unwrap_or(0);
            if size > BODY_BUFFER_MAX {
                c.err(
                    "server.client_body_buffer_size",
                    format!(
                        "at most \"64k\" ({BODY_BUFFER_MAX} bytes): larger bodies are streamed"
                    ),
                );
            }
            size.min(BODY_BUFFER_MAX) as usize
        },
        fast_path: s.fast_path.unwrap_or(true),
        reuseport: s.reuseport.unwrap_or(false),
    };
    for (key, value) in [
        ("client_header_timeout", server.client_header_timeout),
        ("client_body_timeout", server.client_body_timeout),
        ("send_timeout", server.send_timeout),
        ("lingering_timeout", server.lingering_timeout),
    ] {
        if value.is_zero() {
            c.err(
                format!("server.{key}"),
                "must be more than 0: every connection state needs a time bound",
            );
        }
    }
    server
}

/// `[metrics]`.
fn metrics(c: &mut Check, m: Option<&RawMetrics>) -> Option<SocketAddr> {
    m.and_then(|m| c.listen("metrics.listen", &m.listen))
}

/// `[admin]`.
fn admin(
    c: &mut Check,
    a: Option<&RawAdmin>,
    resolve_path: &dyn Fn(&str) -> PathBuf,
) -> Option<AdminSettings> {
    a.and_then(|a| {
        let listen = c.listen("admin.listen", &a.listen)?;
        let token_file = a.token_file.as_deref().map(resolve_path);
        if !listen.ip().is_loopback() && token_file.is_none() {
            c.err(
                "admin.token_file",
                "the admin API listens on a non-loopback address without a token: set token_file or listen on 127.0.0.1",
            );
        }
        Some(AdminSettings { listen, token_file })
    })
}

/// `[client_ip]`.
fn client_ip(c: &mut Check, ci: &RawClientIp) -> ClientIdentity {
    let trusted: Vec<IpNet> = ci
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, n)| c.net(&format!("client_ip.trusted_proxies[{i}]"), n))
        .collect();
    let header = match ci.header.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("x-forwarded-for") => ClientHeader::XForwardedFor,
        Some("x-real-ip") => ClientHeader::XRealIp,
        Some(other) => {
            c.err(
                "client_ip.header",
                format!("{other:?} is not supported: use \"x-forwarded-for\" or \"x-real-ip\""),
            );
            ClientHeader::XForwardedFor
        }
    };
    let prefix = c.int("client_ip.ipv6_prefix", ci.ipv6_prefix, 1..=128, 64) as u8;
    ClientIdentity::new(trusted, header, prefix)
}

/// `[[upstream]]`: the groups, and each name's index.
fn upstreams(
    c: &mut Check,
    raw: &[RawUpstream],
) -> (Vec<UpstreamSettings>, HashMap<String, usize>) {
    let mut upstreams = Vec::new();
    let mut upstream_index = HashMap::new();
    for (i, u) in raw.iter().enumerate() {
        let key = format!("upstream[{i}]");
        if u.name.is_empty() {
            c.err(format!("{key}.name"), "must not be empty");
        }
        if upstream_index
            .insert(u.name.clone(), upstreams.len())
            .is_some()
        {
            c.err(
                format!("{key}.name"),
                format!("upstream {:?} is defined twice", u.name),
            );
        }
        if u.servers.is_empty() {
            c.err(
                format!("{key}.servers"),
                "list at least one server (\"host:port\")",
            );
        }
        let mut servers = Vec::new();
        for (j, srv) in u.servers.iter().enumerate() {
            match c.env.resolve(srv) {
                Some(addr) => servers.push(addr),
                None => c.err(
                    format!("{key}.servers[{j}]"),
                    format!("{srv:?} is not a reachable host:port (e.g. \"127.0.0.1:8000\")"),
                ),
            }
        }
        upstreams.push(UpstreamSettings {
            name: u.name.clone(),
            servers,
            connect_timeout: c.duration(
                &format!("{key}.connect_timeout"),
                u.connect_timeout.as_deref(),
                Duration::from_secs(2),
            ),
            read_timeout: c.duration(
                &format!("{key}.read_timeout"),
                u.read_timeout.as_deref(),
                Duration::from_secs(60),
            ),
            down_for: c.duration(
                &format!("{key}.down_for"),
                u.down_for.as_deref(),
                Duration::from_secs(5),
            ),
        });
    }
    (upstreams, upstream_index)
}

/// `[[route]]`, naming zones by `zone_names` and upstreams by `upstream_index`.
fn routes(
    c: &mut Check,
    raw: &[RawRoute],
    zone_names: &[&String],
    upstream_index: &HashMap<String, usize>,
    default_max_body: Option<u64>,
) -> Vec<RouteSettings> {
    let mut routes = Vec::new();
    let mut seen_routes = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("route[{i}]");
        let path = r.path.clone().unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            c.err(
                format!("{key}.path"),
                format!("{path:?} must start with '/'"),
            );
        }
        let host = r.host.as_ref().map(|h| h.trim().to_ascii_lowercase());
        if host.as_deref() == Some("") {
            c.err(
                format!("{key}.host"),
                "must not be empty; omit it to match any host",
            );
        }
        if let Some(prev) = seen_routes.insert((host.clone(), path.clone()), i) {
            c.err(
                format!("{key}.path"),
                format!("route[{prev}] already matches the same host and path"),
            );
        }
        let upstream = match upstream_index.get(&r.upstream) {
            Some(&u) => u,
            None => {
                c.err(
                    format!("{key}.upstream"),
                    format!("no [[upstream]] named {:?}", r.upstream),
                );
                0
            }
        };
        let mut zones = Vec::new();
        for (j, z) in r.rate_limit.iter().enumerate() {
            match zone_names.iter().position(|n| *n == z) {
                Some(idx) => zones.push(idx),
                None => c.err(
                    format!("{key}.rate_limit[{j}]"),
                    format!("no [rate_limit.{z}] zone"),
                ),
            }
        }
        let name = r.name.clone().unwrap_or_else(|| match &host {
            Some(h) => format!("{h}{path}"),
            None => path.clone(),
        });
        let max_body = c.size(
            &format!("{key}.client_max_body_size"),
            r.client_max_body_size.as_ref(),
            default_max_body,
        );
        routes.push(RouteSettings {
            name,
            host,
            path,
            upstream,
            zones,
            max_body,
            websocket: r.websocket.unwrap_or(false),
        });
    }
    if routes.is_empty() && c.errors.is_empty() {
        c.err("route", "no [[route]]: every request would get 404");
    }
    routes
}

/// `[inflight]`.
fn inflight(c: &mut Check, raw: &RawInflight) -> InflightSettings {
    InflightSettings {
        per_client: c.int("inflight.per_client", raw.per_client, 0..=1_000_000, 0) as usize,
        total: c.int("inflight.total", raw.total, 0..=10_000_000, 0) as usize,
        status: c.int("inflight.status", raw.status, 400..=599, 503) as u16,
    }
}

/// `[access_log]`.
fn access_log(
    c: &mut Check,
    raw: Option<&RawAccessLog>,
    resolve_path: &dyn Fn(&str) -> PathBuf,
) -> AccessLogSettings {
    match raw {
        None => AccessLogSettings {
            target: None,
            format: AccessLogFormat::Combined,
        },
        Some(a) => {
            let target = match a.target.as_deref() {
                None | Some("stdout") => Some(None),
                Some("off") => None,
                Some(p) => Some(Some(resolve_path(p))),
            };
            let format = match a.format.as_deref() {
                None | Some("combined") => AccessLogFormat::Combined,
                Some("json") => AccessLogFormat::Json,
                Some(other) => {
                    c.err(
                        "access_log.format",
                        format!("{other:?} is not a format: use \"combined\" or \"json\""),
                    );
                    AccessLogFormat::Combined
                }
            };
            AccessLogSettings { target, format }
        }
    }
}

/// `[log]`.
fn log(c: &mut Check, raw: &RawLog) -> LogSettings {
    let format = match raw.format.as_deref() {
        None | Some("human") => LogFormat::Human,
        Some("json") => LogFormat::Json,
        Some(other) => {
            c.err(
                "log.format",
                format!("{other:?} is not a format: use \"human\" or \"json\""),
            );
            LogFormat::Human
        }
    };
    let level = raw.level.clone().unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        c.err(
            "log.level",
            format!("{level:?} is not a log filter (e.g. \"info\", \"portcullis=debug\")"),
        );
    }
    LogSettings { format, level }
}

/// `[cluster]`.
fn cluster(
    c: &mut Check,
    cl: &RawCluster,
    resolve_path: &dyn Fn(&str) -> PathBuf,
) -> ClusterSettings {
    use redis::IntoConnectionInfo;
    let redis = cl.redis.trim().to_string();
    let scheme_ok = ["redis://", "rediss://", "valkey://", "valkeys://"]
        .iter()
        .any(|s| redis.starts_with(s));
    match redis.as_str().into_connection_info() {
        Ok(info) if scheme_ok => {
            if cl.password_file.is_some() && info.redis_settings().password().is_some() {
                c.err(
                    "cluster.password_file",
                    "the redis URL has a password already: give it in one place",
                );
            }
        }
        Ok(_) => c.err(
            "cluster.redis",
            format!("{redis:?}: write redis://host:port/db (or rediss:// for TLS)"),
        ),
        Err(e) => c.err(
            "cluster.redis",
            format!("{redis:?} is not a Redis URL ({e}); write e.g. \"redis://127.0.0.1:6379/0\""),
        ),
    }
    let key_prefix = cl
        .key_prefix
        .clone()
        .unwrap_or_else(|| "portcullis:".into());
    if key_prefix.is_empty()
        || key_prefix.len() > 64
        || key_prefix
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.err(
            "cluster.key_prefix",
            format!("{key_prefix:?}: 1 to 64 characters, no spaces"),
        );
    }
    let timeout = c.duration(
        "cluster.timeout",
        cl.timeout.as_deref(),
        Duration::from_millis(250),
    );
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        c.err(
            "cluster.timeout",
            "must be more than 0 and at most 60s: it bounds every Redis command",
        );
    }
    let queue = c.int("cluster.queue", cl.queue, 16..=1_000_000, 10_000) as usize;
    let shared_timeout = c.duration(
        "cluster.shared_timeout",
        cl.shared_timeout.as_deref(),
        Duration::from_millis(5),
    );
    if shared_timeout.is_zero() || shared_timeout > Duration::from_secs(1) {
        c.err(
            "cluster.shared_timeout",
            "must be more than 0 and at most 1s: a request of a shared zone waits on it",
        );
    }
    let password_file = cl.password_file.as_deref().map(resolve_path);
    if let Some(p) = &password_file {
        if !c.env.is_file(p) {
            c.err(
                "cluster.password_file",
                format!("{} is not a readable file", p.display()),
            );
        }
    }
    ClusterSettings {
        redis,
        key_prefix,
        timeout,
        password_file,
        queue,
        shared_timeout,
    }
}

/// `[rate_limit.NAME]`.
fn zone(c: &mut Check, name: &str, z: &RawZone) -> ZoneConfig {
    let key = format!("rate_limit.{name}");
    let rate = match Rate::parse(&z.rate) {
        Ok(r) => r,
        Err(e) => {
            c.err(
                format!("{key}.rate"),
                format!("{e}; write e.g. \"10r/s\" or \"60r/m\""),
            );
            Rate::per_second(1)
        }
    };
    let burst = c.int(&format!("{key}.burst"), z.burst, 0..=1_000_000, 0) as u64;
    let delay = match (z.nodelay, z.delay) {
        (Some(true), Some(_)) => {
            c.err(
                format!("{key}.delay"),
                "set either nodelay = true or delay = N, not both",
            );
            Delay::NoDelay
        }
        (Some(true), None) => Delay::NoDelay,
        (_, Some(n)) => {
            Delay::After(c.int(&format!("{key}.delay"), Some(n), 0..=1_000_000, 0) as u64)
        }
        // nginx's default: every request above the rate is delayed (up to burst).
        (_, None) => Delay::After(0),
    };
    let max_clients = c.int(
        &format!("{key}.max_clients"),
        z.max_clients,
        1..=16_000_000,
        160_000,
    ) as usize;
    let engine = ZoneSettings {
        name: name.to_string(),
        rate,
        burst,
        delay,
        max_clients,
    };
    if let Err(e) = engine.validate() {
        c.err(key.clone(), e.to_string());
    }
    ZoneConfig {
        engine,
        status: c.int(&format!("{key}.status"), z.status, 400..=599, 429) as u16,
        dry_run: z.dry_run.unwrap_or(false),
        shared: z.shared.unwrap_or(false),
    }
}

/// "404", "403", "drop", or any 4xx/5xx status as a string or number-like string.
fn refusal(c: &mut Check, key: &str, value: Option<&str>, default: Refusal) -> Refusal {
    match value {
        None => default,
        Some("drop") | Some("444") => Refusal::Drop,
        Some(v) => match v.parse::<u16>() {
            Ok(s) if (400..=599).contains(&s) => Refusal::Status(s),
            _ => {
                c.err(
                    key,
                    format!("{v:?} is not an action: use \"403\", \"404\" or \"drop\""),
                );
                default
            }
        },
    }
}

/// `[api]`. A spec file is read and compiled here, so a bad one is a configuration error (and
/// a reload keeps the old one); a URL is fetched when the runtime is built (`crate::api`).
fn api(c: &mut Check, a: &RawApi, resolve_path: &dyn Fn(&str) -> PathBuf) -> ApiSettings {
    use portcullis_policy::api::Spec;
    let unknown = match a.unknown.as_deref() {
        None | Some("refuse") => UnknownRoute::Refuse,
        Some("offense") => UnknownRoute::Offense,
        Some("log") => UnknownRoute::Log,
        Some(other) => {
            c.err(
                "api.unknown",
                format!("{other:?} is not an action: use \"refuse\", \"offense\" or \"log\""),
            );
            UnknownRoute::Refuse
        }
    };
    // extra_paths are checked once here, whatever the source.
    if let Err(e) = Spec::empty().with_extra_paths(&a.extra_paths) {
        c.err("api.extra_paths", e.to_string());
    }
    let fetch_timeout = c.duration(
        "api.fetch_timeout",
        a.fetch_timeout.as_deref(),
        Duration::from_secs(5),
    );
    let source = match (&a.openapi, &a.openapi_url) {
        (Some(_), Some(_)) => {
            c.err(
                "api.openapi_url",
                "set either openapi (a file) or openapi_url, not both",
            );
            None
        }
        (None, None) => {
            c.err(
                "api",
                "say where the spec is: openapi = \"FILE\" or openapi_url = \"http://...\"",
            );
            None
        }
        (Some(file), None) => {
            let path = resolve_path(file);
            let spec = c
                .env
                .read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|bytes| {
                    Spec::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
                });
            match spec {
                // A bad extra_paths entry is reported above, once.
                Ok(spec) => {
                    spec.with_extra_paths(&a.extra_paths)
                        .ok()
                        .map(|spec| ApiSource::File {
                            path,
                            spec: Arc::new(spec),
                        })
                }
                Err(e) => {
                    c.err("api.openapi", e);
                    None
                }
            }
        }
        (None, Some(url)) => match parse_spec_url(url) {
            Ok(_) => Some(ApiSource::Url(url.clone())),
            Err(e) => {
                c.err("api.openapi_url", e);
                None
            }
        },
    };
    ApiSettings {
        source: source.unwrap_or(ApiSource::Url(String::new())),
        unknown,
        extra_paths: a.extra_paths.clone(),
        fetch_timeout,
    }
}

/// `[probes]`.
fn probes(c: &mut Check, p: &RawProbes) -> ProbesSettings {
    let settings = ProbeSettings {
        builtin: p.builtin.unwrap_or(true),
        paths: p.paths.clone(),
        prefixes: p.prefixes.clone(),
        regex: p.regex.clone(),
        user_agents: p.user_agents.clone(),
        allow: p
            .allow
            .clone()
            .unwrap_or_else(|| vec!["/.well-known/acme-challenge/".into()]),
        deny_extensions: p.deny_extensions.clone().unwrap_or_else(|| {
            portcullis_policy::probes::DEFAULT_DENY_EXTENSIONS
                .iter()
                .map(|e| e.to_string())
                .collect()
        }),
    };
    let matcher = match ProbeMatcher::new(&settings) {
        Ok(m) => m,
        Err(e) => {
            let key = match &e {
                ProbeError::InvalidEntry { list, index, .. } => format!("probes.{list}[{index}]"),
                ProbeError::TooLarge { list, .. } => format!("probes.{list}"),
                ProbeError::Builtin(_) => "probes.builtin".to_string(),
            };
            c.err(key, e.to_string());
            ProbeMatcher::new(&ProbeSettings {
                builtin: false,
                ..ProbeSettings::default()
            })
            .unwrap_or_else(|_| unreachable!("an empty probe list always builds"))
        }
    };
    ProbesSettings {
        matcher: Arc::new(matcher),
        action: refusal(
            c,
            "probes.action",
            p.action.as_deref(),
            Refusal::Status(404),
        ),
        dry_run: p.dry_run.unwrap_or(false),
    }
}

/// `[reputation]`: a fail2ban jail.
fn reputation(c: &mut Check, r: &RawReputation, ipv6_prefix: u8) -> ReputationConfig {
    let defaults = ReputationSettings::default();
    let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
    let nets = |c: &mut Check, key: &str, list: &[String]| -> Vec<IpNet> {
        list.iter()
            .enumerate()
            .filter_map(|(i, n)| c.net(&format!("reputation.{key}[{i}]"), n))
            .collect()
    };
    let ignoreip = match &r.ignoreip {
        Some(list) => nets(c, "ignoreip", list),
        // fail2ban's default: never ban the host itself.
        None => vec![
            IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(127, 0, 0, 0),
                8,
            )),
            IpNet::from(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
        ],
    };
    let deny = nets(c, "deny", &r.deny);
    let increment = match &r.bantime_increment {
        None => None,
        Some(inc) if inc.enabled == Some(false) => None,
        Some(inc) => {
            let factor = inc.factor.unwrap_or(2.0);
            if !(factor.is_finite() && factor >= 1.0) {
                c.err(
                    "reputation.bantime_increment.factor",
                    format!("{factor} must be a number >= 1"),
                );
            }
            let multipliers = inc.multipliers.clone().unwrap_or_default();
            for (i, m) in multipliers.iter().enumerate() {
                if !(m.is_finite() && *m > 0.0) {
                    c.err(
                        format!("reputation.bantime_increment.multipliers[{i}]"),
                        format!("{m} must be a positive number"),
                    );
                }
            }
            Some(Increment {
                factor,
                multipliers,
                maxtime_ms: ms(c.duration(
                    "reputation.bantime_increment.maxtime",
                    inc.maxtime.as_deref(),
                    Duration::from_secs(7 * 86_400),
                )),
                rndtime_ms: ms(c.duration(
                    "reputation.bantime_increment.rndtime",
                    inc.rndtime.as_deref(),
                    Duration::ZERO,
                )),
            })
        }
    };
    let engine = ReputationSettings {
        maxretry: c.int(
            "reputation.maxretry",
            r.maxretry,
            1..=1_000_000,
            i64::from(defaults.maxretry),
        ) as u32,
        findtime_ms: ms(c.duration(
            "reputation.findtime",
            r.findtime.as_deref(),
            Duration::from_millis(defaults.findtime_ms),
        )),
        bantime_ms: ms(c.duration(
            "reputation.bantime",
            r.bantime.as_deref(),
            Duration::from_millis(defaults.bantime_ms),
        )),
        increment,
        history_ms: ms(c.duration(
            "reputation.history",
            r.history.as_deref(),
            Duration::from_millis(defaults.history_ms),
        )),
        max_offenders: c.int(
            "reputation.max_offenders",
            r.max_offenders,
            1..=100_000_000,
            defaults.max_offenders as i64,
        ) as usize,
        max_bans: c.int(
            "reputation.max_bans",
            r.max_bans,
            1..=100_000_000,
            defaults.max_bans as i64,
        ) as usize,
        ignoreip,
        deny,
        ipv6_prefix,
    };
    if engine.findtime_ms == 0 {
        c.err("reputation.findtime", "must be longer than 0");
    }
    if engine.bantime_ms == 0 {
        c.err("reputation.bantime", "must be longer than 0");
    }
    let offense_status = match &r.offense_status {
        None => vec![403, 404, 444],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                if (100..=599).contains(s) {
                    Some(*s as u16)
                } else {
                    c.err(
                        format!("reputation.offense_status[{i}]"),
                        format!("{s} is not an HTTP status"),
                    );
                    None
                }
            })
            .collect(),
    };
    let w = &r.weights;
    let dw = OffenseWeights::default();
    let weight = |c: &mut Check, key: &str, v: Option<i64>, d: u32| {
        c.int(
            &format!("reputation.weights.{key}"),
            v,
            0..=1_000_000,
            i64::from(d),
        ) as u32
    };
    let weights = OffenseWeights {
        probe: weight(c, "probe", w.probe, dw.probe),
        rate_limit: weight(c, "rate_limit", w.rate_limit, dw.rate_limit),
        upstream_status: weight(c, "status", w.status, dw.upstream_status),
        malformed: weight(c, "malformed", w.malformed, dw.malformed),
        unknown_route: weight(c, "unknown_route", w.unknown_route, dw.unknown_route),
        flood: weight(c, "flood", w.flood, dw.flood),
    };
    ReputationConfig {
        engine,
        offense_status,
        ban_action: refusal(
            c,
            "reputation.ban_action",
            r.ban_action.as_deref(),
            Refusal::Status(403),
        ),
        weights,
    }
}
