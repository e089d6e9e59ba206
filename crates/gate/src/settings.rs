//! What the walk needs of the configuration, validated: the binary's config module builds
//! these from the file (and re-exports the types), so the walk never sees raw TOML.

use std::sync::Arc;

use portcullis_policy::api::Spec;
use portcullis_policy::client::ClientIdentity;
use portcullis_policy::limiter::ZoneSettings;
use portcullis_policy::probes::ProbeMatcher;
use portcullis_policy::reputation::{OffenseWeights, ReputationSettings};

/// Everything the walk decides with.
#[derive(Debug, Clone)]
pub struct GateSettings {
    /// `[client_ip]`: trusted proxies and the IPv6 prefix a client is keyed by.
    pub client_ip: ClientIdentity,
    /// `[[route]]`s, in file order.
    pub routes: Vec<RouteSettings>,
    /// `[rate_limit.NAME]` zones; routes name them by index.
    pub zones: Vec<ZoneConfig>,
    /// `[probes]`, if on.
    pub probes: Option<ProbesSettings>,
    /// `[api]`, if configured.
    pub api: Option<ApiRules>,
    /// `[reputation]`, if on.
    pub reputation: Option<ReputationConfig>,
    /// `[inflight]`.
    pub inflight: InflightSettings,
    /// nginx's `large_client_header_buffers`.
    pub header: HeaderLimits,
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Label used in metrics and logs (`host` + `path`, or `name`).
    pub name: String,
    /// Host header to match (lower case, no port); `None` matches any.
    pub host: Option<String>,
    /// Path prefix.
    pub path: String,
    /// Index of the route's upstream group (the binary's `Settings::upstreams`).
    pub upstream: usize,
    /// Indices into [`GateSettings::zones`].
    pub zones: Vec<usize>,
    /// Largest request body accepted on this route; `None`: no limit.
    pub max_body: Option<u64>,
    /// Requests may upgrade (WebSocket) on this route. After the `101` a tunnel passes no
    /// filter, so only routes that serve WebSockets should allow it (nginx too upgrades only
    /// where `proxy_set_header Upgrade` is configured).
    pub websocket: bool,
}

/// What to do with a request that matched a probe rule or a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Answer with this status.
    Status(u16),
    /// Close the connection without answering (nginx's 444).
    Drop,
}

/// One `[rate_limit.NAME]` zone.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The engine's settings (rate, burst, delay, max_clients).
    pub engine: ZoneSettings,
    /// Status of a rejection (nginx `limit_req_status`).
    pub status: u16,
    /// Count and log, never reject or delay (nginx `limit_req_dry_run`).
    pub dry_run: bool,
    /// The limit holds across every gateway of the cluster: the walk asks the cluster
    /// ([`crate::Walked::AskCluster`]) and falls back to this gateway's own count.
    pub shared: bool,
}

/// `[probes]`.
#[derive(Debug, Clone)]
pub struct ProbesSettings {
    /// The compiled matcher (built during validation, so bad rules are config errors).
    pub matcher: Arc<ProbeMatcher>,
    /// What a hit gets.
    pub action: Refusal,
    /// Count and log hits, refuse nothing (`[probes] dry_run`).
    pub dry_run: bool,
}

/// `[api]` as the walk uses it: the spec in use and what a request outside it gets.
#[derive(Debug, Clone)]
pub struct ApiRules {
    /// The compiled spec; `None` while none could be loaded (the blocklist alone decides).
    pub spec: Option<Arc<Spec>>,
    /// What a request outside the spec gets.
    pub unknown: UnknownRoute,
}

/// `[api] unknown`: what a request whose path the spec does not know gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownRoute {
    /// Refused with 404 before the upstream, an offense of its own kind.
    Refuse,
    /// Forwarded, and counted as an offense.
    Offense,
    /// Forwarded, counted in metrics and logged only (a dry run).
    Log,
}

/// `[reputation]`.
#[derive(Debug, Clone)]
pub struct ReputationConfig {
    /// Engine settings.
    pub engine: ReputationSettings,
    /// Upstream statuses that count as offenses.
    pub offense_status: Vec<u16>,
    /// What a banned or denied client gets.
    pub ban_action: Refusal,
    /// Weight of each offense kind.
    pub weights: OffenseWeights,
}

/// `[inflight]`: concurrency caps (nginx `limit_conn`).
#[derive(Debug, Clone, Default)]
pub struct InflightSettings {
    /// Requests one client may have in flight at once; 0 = unlimited.
    pub per_client: usize,
    /// Requests the whole gateway forwards at once; 0 = unlimited.
    pub total: usize,
    /// Status for a request refused by a cap.
    pub status: u16,
}

/// nginx's `large_client_header_buffers` (default `4 8k`): the longest request line or
/// header field, and the whole header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLimits {
    /// Longest request line or header field line, in bytes.
    pub max_line: usize,
    /// Largest whole header, in bytes.
    pub max_total: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        HeaderLimits {
            max_line: 8 * 1024,
            max_total: 32 * 1024,
        }
    }
}
