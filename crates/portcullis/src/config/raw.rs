//! The configuration file as written: serde structs that reject unknown keys.
//!
//! Nothing here is used past validation; see [`super::Settings`] for what the gateway runs on.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub metrics: Option<RawMetrics>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub client_ip: RawClientIp,
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
    #[serde(default)]
    pub rate_limit: BTreeMap<String, RawZone>,
    pub probes: Option<RawProbes>,
    pub api: Option<RawApi>,
    pub reputation: Option<RawReputation>,
    #[serde(default)]
    pub inflight: RawInflight,
    pub access_log: Option<RawAccessLog>,
    #[serde(default)]
    pub log: RawLog,
    pub cluster: Option<RawCluster>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default)]
    pub listen: Vec<String>,
    #[serde(default)]
    pub tls: Vec<RawTls>,
    pub state_dir: Option<String>,
    pub threads: Option<i64>,
    pub shutdown_grace: Option<String>,
    pub upstream_keepalive: Option<i64>,
    pub client_max_body_size: Option<RawSize>,
    pub keepalive_timeout: Option<String>,
    pub keepalive_requests: Option<i64>,
    pub client_header_timeout: Option<String>,
    pub client_body_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub lingering_time: Option<String>,
    pub lingering_timeout: Option<String>,
    pub underscores_in_headers: Option<bool>,
    pub proxy_request_buffering: Option<bool>,
    pub large_client_header_buffers: Option<String>,
    pub client_body_buffer_size: Option<RawSize>,
    pub fast_path: Option<bool>,
    pub reuseport: Option<bool>,
}

/// A size as nginx writes it (`"1m"`, `"512k"`, `"0"`) or a number of bytes.
#[derive(Debug, Clone)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl serde::de::Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                // Named here so a type error reads like the other size errors.
                f.write_str("a size such as \"1m\" or \"512k\", or a number of bytes")
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: String,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub header: Option<String>,
    pub ipv6_prefix: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    pub servers: Vec<String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub down_for: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub upstream: String,
    #[serde(default)]
    pub rate_limit: Vec<String>,
    pub client_max_body_size: Option<RawSize>,
    pub websocket: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    pub rate: String,
    pub burst: Option<i64>,
    pub nodelay: Option<bool>,
    pub delay: Option<i64>,
    pub status: Option<i64>,
    pub max_clients: Option<i64>,
    pub dry_run: Option<bool>,
    pub shared: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbes {
    pub builtin: Option<bool>,
    pub action: Option<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub regex: Vec<String>,
    #[serde(default)]
    pub user_agents: Vec<String>,
    pub allow: Option<Vec<String>>,
    pub deny_extensions: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub openapi: Option<String>,
    pub openapi_url: Option<String>,
    pub unknown: Option<String>,
    #[serde(default)]
    pub extra_paths: Vec<String>,
    pub fetch_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReputation {
    pub maxretry: Option<i64>,
    pub findtime: Option<String>,
    pub bantime: Option<String>,
    pub offense_status: Option<Vec<i64>>,
    pub ignoreip: Option<Vec<String>>,
    #[serde(default)]
    pub deny: Vec<String>,
    pub ban_action: Option<String>,
    pub history: Option<String>,
    pub max_offenders: Option<i64>,
    pub max_bans: Option<i64>,
    #[serde(default)]
    pub weights: RawWeights,
    pub bantime_increment: Option<RawIncrement>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeights {
    pub probe: Option<i64>,
    pub rate_limit: Option<i64>,
    pub status: Option<i64>,
    pub malformed: Option<i64>,
    pub unknown_route: Option<i64>,
    pub flood: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIncrement {
    pub enabled: Option<bool>,
    pub factor: Option<f64>,
    pub multipliers: Option<Vec<f64>>,
    pub maxtime: Option<String>,
    pub rndtime: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInflight {
    pub per_client: Option<i64>,
    pub total: Option<i64>,
    pub status: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// "stdout", "off", or a file path.
    pub target: Option<String>,
    /// "combined" or "json".
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// "human" or "json".
    pub format: Option<String>,
    pub level: Option<String>,
}

/// `[cluster]`: several gateways sharing bans and offenses through Redis.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis: String,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
    pub password_file: Option<String>,
    pub queue: Option<i64>,
    pub shared_timeout: Option<String>,
}

/// The key path a serde error is about, worked out from where it points in the file.
///
/// toml's errors carry a byte span but not the key path, so the path is rebuilt from the
/// nearest table header above the span and the key on the span's line.
pub fn error_key(text: &str, err: &toml::de::Error) -> String {
    let Some(span) = err.span() else {
        return "(file)".into();
    };
    let before = &text[..span.start.min(text.len())];
    let mut table = String::new();
    for line in before.lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix("[[").and_then(|t| t.split("]]").next()) {
            table = h.trim().to_string();
        } else if let Some(h) = t.strip_prefix('[').and_then(|t| t.split(']').next()) {
            table = h.trim().to_string();
        }
    }
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.starts_with('['));
    // An unknown-field error names the field in its message; prefer that.
    let unknown = err
        .message()
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
        .map(str::to_string);
    match (unknown.or(key), table.is_empty()) {
        (Some(k), true) => k,
        (Some(k), false) => format!("{table}.{k}"),
        (None, false) => table,
        (None, true) => "(file)".into(),
    }
}
