//! The three filters, as the proxy sees them: ban check, probe match, rate limits (plus the
//! concurrency caps), and the upstream status fed back into the reputation table.
//!
//! The filters decide; they never touch a connection. Each step returns the [`Answer`] the
//! request gets when it is not passed on, and the proxy (Pingora's `HttpProxy` or the fast
//! path) writes it.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::prelude::*;
use portcullis_policy::api::ApiMatch;
use portcullis_policy::limiter::{check_all, Decision as Limit, Zone};
use portcullis_policy::probes::Category;
use portcullis_policy::reputation::{OffenseKind, ReputationSettings, Verdict};
use portcullis_policy::route_path;
use smallvec::SmallVec;

use crate::config::{Refusal, Settings, UnknownRoute};
use crate::inflight::Caps;
use crate::metrics::FilterMetrics;
use crate::proxy::{Decision, Gateway, RequestCtx};
use crate::routes::host_without_port;
use crate::runtime::Runtime;
use crate::state::BanStore;

thread_local! {
    /// The normalized path of the request being routed on this thread: no allocation per
    /// request once it has grown to the longest path seen.
    static ROUTE_PATH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The filter engines of one runtime.
pub struct Filters {
    /// Rate-limit zones, indexed as `settings.zones`.
    pub zones: Vec<Arc<Zone>>,
    /// The ban table (shared by every runtime of the process).
    pub store: Arc<BanStore>,
    /// Concurrency caps (shared by every runtime of the process).
    pub caps: Arc<Caps>,
    /// `portcullis_rate_limit_decisions_total{decision="passed"}` per zone, resolved once.
    pub zone_passed: Vec<prometheus::IntCounter>,
}

impl Filters {
    /// Builds the engines for `settings`. With a `previous` runtime, the ban table, the caps and
    /// every zone whose settings did not change are carried over with their state.
    pub fn build(settings: &Settings, previous: Option<&Filters>) -> Result<Filters, String> {
        let rep_settings = settings
            .reputation
            .as_ref()
            .map(|r| r.engine.clone())
            .unwrap_or_else(|| ReputationSettings {
                ipv6_prefix: settings.client_ip_prefix(),
                ..ReputationSettings::default()
            });
        let store = match previous {
            Some(prev) => {
                prev.store.reputation.reconfigure(rep_settings);
                prev.store.clone()
            }
            None => Arc::new(BanStore::open(
                settings.server.state_dir.as_deref(),
                rep_settings,
            )?),
        };
        let zones = settings
            .zones
            .iter()
            .map(|z| {
                previous
                    .and_then(|p| p.zones.iter().find(|old| *old.settings() == z.engine))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Zone::new(z.engine.clone())))
            })
            .collect();
        let decisions = &FilterMetrics::get().rate_limit;
        let zone_passed = settings
            .zones
            .iter()
            .map(|z| decisions.with_label_values(&[z.engine.name.as_str(), "passed"]))
            .collect();
        Ok(Filters {
            zone_passed,
            zones,
            store,
            caps: previous.map_or_else(|| Arc::new(Caps::default()), |p| p.caps.clone()),
        })
    }
}

/// Milliseconds on a clock that never steps back (nginx's limiter assumes one; the wall clock
/// used for bans can jump with NTP).
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    // Start well above 0 so a client first seen now is never mistaken for "seen at epoch".
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1_000_000
}

/// Body of a refusal with `status`.
pub(crate) fn refusal_body(status: u16) -> &'static str {
    match status {
        403 => "403 Forbidden\n",
        404 => "404 Not Found\n",
        405 => "405 Method Not Allowed\n",
        413 => "413 Request Entity Too Large\n",
        429 => "429 Too Many Requests\n",
        503 => "503 Service Unavailable\n",
        _ => "request refused\n",
    }
}

/// How a request the gateway does not pass on is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A short plain-text response with this status (see [`refusal_body`]).
    Status {
        /// The HTTP status.
        status: u16,
        /// A `Retry-After` value in seconds, for rate and concurrency limits.
        retry_after: Option<u64>,
        /// Close the connection after the answer (a body that will not be read follows).
        close: bool,
    },
    /// Close the connection without an answer (nginx's 444).
    Drop,
    /// `405 Method Not Allowed` with this `Allow` value: the API's spec declares the path but
    /// not the method.
    NotAllowed {
        /// The methods the path serves, e.g. "GET, HEAD, OPTIONS".
        allow: &'static str,
    },
}

impl Answer {
    /// A plain refusal with `status`.
    pub fn status(status: u16) -> Answer {
        Answer::Status {
            status,
            retry_after: None,
            close: false,
        }
    }

    /// A refusal with `status` after which the connection is closed (its body, if any, will
    /// not be read; or the client should not send more on it).
    pub fn closing(status: u16) -> Answer {
        Answer::Status {
            status,
            retry_after: None,
            close: true,
        }
    }

    fn refusal(how: Refusal) -> Answer {
        match how {
            Refusal::Drop => Answer::Drop,
            Refusal::Status(s) => Answer::status(s),
        }
    }
}

/// What the filters read from a request, whichever proxy parsed it.
pub struct RequestFacts<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// The client the peer speaks for (`[client_ip]`).
    pub client: IpAddr,
    /// The Host header (or the authority of an absolute URI), port included.
    pub host: Option<&'a str>,
    /// The method, as sent.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The request target as sent (path and query), for the probe matcher.
    pub raw_path: &'a [u8],
    /// The User-Agent header.
    pub user_agent: Option<&'a [u8]>,
    /// The body length the request declares (`Content-Length`); 0 when it declares none.
    pub declared_body: u64,
    /// The request asks to upgrade the connection (WebSocket).
    pub upgrade: bool,
    /// Sizes of the request header, for `large_client_header_buffers`.
    pub header: HeaderSize,
}

/// How large a request header is, as nginx measures it against `large_client_header_buffers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderSize {
    /// Bytes of the request line.
    pub request_line: usize,
    /// Bytes of the longest header field line.
    pub longest_field: usize,
    /// Bytes of the whole header.
    pub total: usize,
}

impl HeaderSize {
    /// Measures a header from its request line's length and its fields (name, value).
    pub fn of(request_line: usize, fields: impl Iterator<Item = (usize, usize)>) -> Self {
        let mut size = HeaderSize {
            request_line,
            longest_field: 0,
            total: request_line + 2,
        };
        for (name, value) in fields {
            // "name: value\r\n"
            let line = name + 2 + value;
            size.longest_field = size.longest_field.max(line);
            size.total += line + 2;
        }
        size.total += 2;
        size
    }
}

/// Runs every filter on a request, in order: ban check, probe match, route, body size, rate
/// limits (waiting out a delay), concurrency caps. Records what it found in `ctx`; `None`
/// means pass the request on to `ctx.route`'s upstream.
pub async fn decide(
    rt: &Runtime,
    ctx: &mut RequestCtx,
    req: &RequestFacts<'_>,
    now: u64,
) -> Option<Answer> {
    let key = rt.client_ip.normalize(req.client);
    ctx.peer = Some(req.peer);
    ctx.client = Some(req.client);
    ctx.key = Some(key);

    // Bans, the API's spec and probes before routing, so refused requests cost the least.
    let route = match ROUTE_PATH.with_borrow_mut(|path| admit(ctx, rt, req, path, now)) {
        Ok(route) => route,
        Err(answer) => return Some(answer),
    };
    ctx.route = Some(route);

    // A tunnel passes no filter after its 101: only routes that say so may open one.
    if req.upgrade && !rt.settings.routes[route].websocket {
        ctx.decision = Decision::UpgradeRefused;
        return Some(Answer::closing(403));
    }

    // A declared body over the limit is refused before it is read, and before any limit
    // spends a token on it (nginx checks client_max_body_size first too).
    ctx.body_limit = rt.settings.routes[route].max_body;
    if ctx.body_limit.is_some_and(|max| req.declared_body > max) {
        ctx.decision = Decision::TooLarge;
        return Some(Answer::closing(413));
    }

    if let Some(answer) = after_route(ctx, rt, route, key, now).await {
        return Some(answer);
    }
    if ctx.decision == Decision::Undecided {
        ctx.decision = Decision::Proxied;
    }
    None
}

/// Reports an offense by the client at `client` (its address: the reputation table keys it
/// itself, and matches `ignoreip` against the address) if reputation is configured, recording
/// any resulting ban.
pub fn offense(rt: &Runtime, client: IpAddr, kind: OffenseKind, now: u64) {
    let Some(cfg) = &rt.settings.reputation else {
        return;
    };
    rt.filters
        .store
        .offense(client, kind, cfg.weights.weight(kind), now);
}

/// Why a request was refused as malformed: the `reason` of `portcullis_malformed_total`. Only
/// protocol violations are: a client that cancels or goes away never is (`proxy.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Bytes that are not an HTTP request header (Pingora's 400).
    BadHeader,
    /// A `CONNECT` to a reverse proxy (open-proxy scanners; 405).
    Connect,
    /// A header slower than `client_header_timeout` (slowloris; 408).
    HeaderTimeout,
    /// A body slower than `client_body_timeout` (408).
    BodyTimeout,
    /// A body that cannot be read as its framing says, or an HTTP/2 protocol error (400).
    BadBody,
    /// A path that cannot be normalized safely (400).
    BadPath,
    /// A Host that is no host (400).
    BadHost,
    /// A request line, header field or header larger than `large_client_header_buffers`.
    HeaderTooLarge,
}

impl Malformed {
    /// Every reason, for exporting each from the start.
    pub const ALL: [Malformed; 8] = [
        Malformed::BadHeader,
        Malformed::Connect,
        Malformed::HeaderTimeout,
        Malformed::BodyTimeout,
        Malformed::BadBody,
        Malformed::BadPath,
        Malformed::BadHost,
        Malformed::HeaderTooLarge,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::BadHeader => "bad_header",
            Malformed::Connect => "connect",
            Malformed::HeaderTimeout => "header_timeout",
            Malformed::BodyTimeout => "body_timeout",
            Malformed::BadBody => "bad_body",
            Malformed::BadPath => "bad_path",
            Malformed::BadHost => "bad_host",
            Malformed::HeaderTooLarge => "header_too_large",
        }
    }
}

/// Counts a malformed request under its `reason` and makes it an offense of `client`'s (when
/// the client is known).
pub fn malformed(rt: &Runtime, client: Option<IpAddr>, reason: Malformed, now: u64) {
    FilterMetrics::get()
        .malformed
        .with_label_values(&[reason.as_str()])
        .inc();
    if let Some(client) = client {
        offense(rt, client, OffenseKind::Malformed, now);
    }
}

/// `Banned` or `Denied` when the client at `client` (its address, matched against `deny`) may
/// not be served at `now`.
pub fn banned_now(rt: &Runtime, client: IpAddr, now: u64) -> Option<Decision> {
    match rt.filters.store.reputation.check(client, now) {
        Verdict::Allow => None,
        Verdict::Banned { .. } => Some(Decision::Banned),
        Verdict::Denied => Some(Decision::Denied),
    }
}

/// How banned and denied clients are answered.
fn ban_action(rt: &Runtime) -> Refusal {
    rt.settings
        .reputation
        .as_ref()
        .map_or(Refusal::Status(403), |r| r.ban_action)
}

/// How a banned or denied client is answered.
///
/// The connection is closed after the answer, as nginx's `deny` leaves it to the client but
/// a ban should not: a banned client keeps no kept-alive HTTP/1 connection to send more on.
pub fn ban_answer(rt: &Runtime) -> Answer {
    match ban_action(rt) {
        Refusal::Drop => Answer::Drop,
        Refusal::Status(status) => Answer::closing(status),
    }
}

/// The ban refusal as an error, for phases that can no longer write a response themselves
/// (`fail_to_proxy` answers with the status, or closes the connection for `drop`).
pub fn refusal_error(ctx: &mut RequestCtx) -> Box<Error> {
    let action = ctx.rt.as_deref().map_or(Refusal::Status(403), ban_action);
    match action {
        Refusal::Drop => match Gateway::drop_connection(ctx) {
            Err(e) => e,
            Ok(_) => Error::explain(ErrorType::ConnectionClosed, "closed by policy"),
        },
        Refusal::Status(s) => Error::explain(
            ErrorType::HTTPStatus(s),
            "client banned while its request was in flight",
        ),
    }
}

/// The walk up to the route: ban, path, the API's spec, probes, route. `path` is the buffer
/// the normalized path is written to. `Ok`: the route; `Err`: the answer instead.
fn admit(
    ctx: &mut RequestCtx,
    rt: &Runtime,
    req: &RequestFacts<'_>,
    path: &mut Vec<u8>,
    now: u64,
) -> Result<usize, Answer> {
    if let Some(decision) = banned_now(rt, req.client, now) {
        ctx.decision = decision;
        return Err(ban_answer(rt));
    }

    // nginx's large_client_header_buffers: a request line longer than one buffer is 414, a
    // field longer than one or a header larger than all of them 400. (Pingora has read up to
    // 1 MiB by now; these are the answers nginx gives.)
    let server = &rt.settings.server;
    let too_large = if req.header.request_line > server.max_header_line {
        Some(414)
    } else if req.header.longest_field > server.max_header_line
        || req.header.total > server.max_header_bytes
    {
        Some(400)
    } else {
        None
    };
    if let Some(status) = too_large {
        ctx.decision = Decision::Malformed;
        malformed(rt, Some(req.client), Malformed::HeaderTooLarge, now);
        return Err(Answer::closing(status));
    }

    // A Host that is no host (`a@evil`, spaces, a path) is refused as nginx refuses it: an
    // upstream building URLs from it would send its users elsewhere.
    if req.host.is_some_and(|h| !crate::routes::valid_host(h)) {
        ctx.decision = Decision::Malformed;
        malformed(rt, Some(req.client), Malformed::BadHost, now);
        return Err(Answer::closing(400));
    }

    // Decided on the path as the upstream will see it, decoded and resolved as nginx does
    // before it picks a location: `/api/v1/%6Cogin` is the login route.
    let normalized = route_path::normalize(req.path.as_bytes(), path);
    let api = rt
        .api
        .as_ref()
        .and_then(|api| Some((api, api.spec.as_deref()?)));
    let verdict = match (api, &normalized) {
        (Some((_, spec)), Ok(())) => Some(spec.check(req.method.as_bytes(), path)),
        _ => None,
    };
    let in_spec = matches!(verdict, Some(ApiMatch::Known | ApiMatch::Extra));

    if let Some(probes) = &rt.settings.probes {
        if let Some(hit) = probes.matcher.check(req.raw_path, req.user_agent) {
            // A request the API's spec declares is never refused by the path lists: the
            // spec knows better (`/repos/phpmyadmin/...` is a repository name there).
            if !(in_spec && path_rule(hit.category)) {
                let answer = Answer::refusal(probes.action);
                let action = match probes.dry_run {
                    true => "dry_run",
                    false => answer_label(&answer),
                };
                FilterMetrics::get()
                    .probe_hits
                    .with_label_values(&[hit.category.as_str(), action])
                    .inc();
                tracing::debug!(client = %req.client, category = hit.category.as_str(), rule = %hit.rule, action, "probe");
                // A dry run refuses nothing and counts no offense: it is how an operator
                // learns what enforcing would refuse, without banning anyone for it.
                if !probes.dry_run {
                    ctx.decision = Decision::Probe;
                    offense(rt, req.client, OffenseKind::Probe, now);
                    return Err(answer);
                }
            }
        }
    }

    // Outside the spec, and no probe: `[api] unknown` says what it gets.
    if let (Some((api, _)), Some(verdict)) = (api, verdict) {
        outside_spec(ctx, rt, api.unknown, verdict, req, now)?;
    }

    // A path that cannot be normalized safely and is no probe: nginx answers it 400 too.
    if let Err(why) = normalized {
        tracing::debug!(client = %req.client, path = req.path, %why, "path refused");
        ctx.decision = Decision::Malformed;
        malformed(rt, Some(req.client), Malformed::BadPath, now);
        return Err(Answer::closing(400));
    }

    let host = req.host.map(host_without_port);
    match rt.router.find(host, path) {
        Some(route) => Ok(route),
        None => {
            ctx.decision = Decision::NoRoute;
            Err(Answer::status(404))
        }
    }
}

/// True for probe categories that are path lists or the extension rule, which a spec's route
/// overrides; the structural checks (traversal, double encoding, control bytes), payload
/// signatures (Log4Shell, shell injection, ... in the path or query) and scanner user agents
/// still refuse a request the spec declares.
fn path_rule(category: Category) -> bool {
    !matches!(
        category,
        Category::Traversal | Category::ScannerAgent | Category::Signature
    )
}

/// Acts on the spec's `verdict` for a request outside it (unknown path, or a method the path
/// does not serve) as `unknown` says: `Err` with the answer (404, or 405 with `Allow`) when
/// refused; counted, and an offense unless only logged.
fn outside_spec(
    ctx: &mut RequestCtx,
    rt: &Runtime,
    unknown: UnknownRoute,
    verdict: ApiMatch,
    req: &RequestFacts<'_>,
    now: u64,
) -> Result<(), Answer> {
    let (answer, decision, category) = match verdict {
        ApiMatch::Known | ApiMatch::Extra => return Ok(()),
        ApiMatch::Unknown => (Answer::status(404), Decision::UnknownRoute, "unknown_route"),
        ApiMatch::MethodNotAllowed { allow } => (
            Answer::NotAllowed { allow },
            Decision::MethodNotAllowed,
            "method",
        ),
    };
    let action = match unknown {
        UnknownRoute::Refuse => answer_label(&answer),
        UnknownRoute::Offense => "offense",
        UnknownRoute::Log => "log",
    };
    FilterMetrics::get()
        .probe_hits
        .with_label_values(&[category, action])
        .inc();
    tracing::debug!(client = %req.client, method = req.method, path = req.path, category, action, "outside the API spec");
    if unknown != UnknownRoute::Log {
        offense(rt, req.client, OffenseKind::UnknownRoute, now);
    }
    match unknown {
        UnknownRoute::Refuse => {
            ctx.decision = decision;
            Err(answer)
        }
        UnknownRoute::Offense | UnknownRoute::Log => Ok(()),
    }
}

/// The `action` label of a refusal in `portcullis_probe_hits_total`.
fn answer_label(answer: &Answer) -> &'static str {
    match answer {
        Answer::Drop => "drop",
        Answer::NotAllowed { .. } => "405",
        Answer::Status { status: 404, .. } => "404",
        Answer::Status { status: 403, .. } => "403",
        Answer::Status { .. } => "status",
    }
}

/// Rate limits and concurrency caps of the matched route.
async fn after_route(
    ctx: &mut RequestCtx,
    rt: &Runtime,
    route: usize,
    key: IpAddr,
    now: u64,
) -> Option<Answer> {
    let zone_ids = &rt.settings.routes[route].zones;
    if !zone_ids.is_empty() {
        let (dry, enforced): (SmallVec<[usize; 4]>, SmallVec<[usize; 4]>) = zone_ids
            .iter()
            .copied()
            .partition(|&i| rt.settings.zones[i].dry_run);
        let m = &FilterMetrics::get().rate_limit;
        let now_mono = monotonic_ms();
        let zones = |ids: &[usize]| -> SmallVec<[&Zone; 4]> {
            ids.iter().map(|&i| rt.filters.zones[i].as_ref()).collect()
        };
        if !dry.is_empty() {
            if let Limit::Reject { zone, .. } = check_all(&zones(&dry), key, now_mono) {
                let name = &rt.settings.zones[dry[zone]].engine.name;
                m.with_label_values(&[name, "dry_run"]).inc();
                tracing::info!(client = %key, zone = %name, "rate limit (dry run): would reject");
                ctx.decision = Decision::DryRun;
            }
        }
        match check_all(&zones(&enforced), key, now_mono) {
            Limit::Pass => {
                for &i in &enforced {
                    rt.filters.zone_passed[i].inc();
                }
            }
            Limit::Delay { ms } => {
                for &i in &enforced {
                    m.with_label_values(&[&rt.settings.zones[i].engine.name, "delayed"])
                        .inc();
                }
                ctx.decision = Decision::Delayed;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            decision @ Limit::Reject { zone, .. } => {
                let zone = &rt.settings.zones[enforced[zone]];
                m.with_label_values(&[&zone.engine.name, "rejected"]).inc();
                ctx.decision = Decision::RateLimited;
                offense(rt, ctx.client.unwrap_or(key), OffenseKind::RateLimit, now);
                return Some(Answer::Status {
                    status: zone.status,
                    retry_after: Some(decision.retry_after_secs().unwrap_or(1)),
                    close: false,
                });
            }
        }
    }

    let caps = &rt.settings.inflight;
    if caps.per_client > 0 {
        match rt.filters.caps.client(key, caps.per_client) {
            Some(guard) => ctx.inflight.push(guard),
            None => return Some(inflight_refusal(ctx, rt, "client")),
        }
    }
    if caps.total > 0 {
        match rt.filters.caps.total(caps.total) {
            Some(guard) => ctx.inflight.push(guard),
            None => return Some(inflight_refusal(ctx, rt, "total")),
        }
    }
    None
}

fn inflight_refusal(ctx: &mut RequestCtx, rt: &Runtime, scope: &str) -> Answer {
    FilterMetrics::get()
        .inflight_rejections
        .with_label_values(&[scope])
        .inc();
    ctx.decision = Decision::Inflight;
    ctx.inflight.clear();
    Answer::Status {
        status: rt.settings.inflight.status,
        retry_after: Some(1),
        close: false,
    }
}

/// Feeds an upstream response status to the reputation table.
pub fn upstream_status(ctx: &RequestCtx, rt: &Runtime, status: u16, now: u64) {
    let (Some(cfg), Some(client)) = (&rt.settings.reputation, ctx.client) else {
        return;
    };
    if cfg.offense_status.contains(&status) {
        offense(rt, client, OffenseKind::UpstreamStatus, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
client_max_body_size = "1k"

[[upstream]]
name = "api"
servers = ["127.0.0.1:9999"]

[[route]]
path = "/api"
upstream = "api"
rate_limit = ["per_ip"]

[rate_limit.per_ip]
rate = "1r/m"
burst = 0
nodelay = true

[probes]
builtin = true
action = "404"

[reputation]
maxretry = 2
ignoreip = []

[reputation.weights]
probe = 2
"#;

    fn runtime() -> Runtime {
        let settings = Settings::parse(CONFIG, std::path::Path::new("/etc/portcullis")).unwrap();
        Runtime::build(settings, None).unwrap()
    }

    fn get(client: &str, path: &'static str) -> RequestFacts<'static> {
        let ip: IpAddr = client.parse().unwrap();
        RequestFacts {
            peer: ip,
            client: ip,
            host: Some("api.example:8080"),
            method: "GET",
            path,
            raw_path: path.as_bytes(),
            user_agent: None,
            declared_body: 0,
            upgrade: false,
            header: HeaderSize::default(),
        }
    }

    async fn decide_now(rt: &Runtime, req: &RequestFacts<'_>) -> (Option<Answer>, Decision) {
        let mut ctx = RequestCtx::default();
        let answer = decide(rt, &mut ctx, req, 1_000_000).await;
        (answer, ctx.decision)
    }

    /// The order users rely on: probes before routes, the body size before the rate limit
    /// spends a token, and a client banned by its offenses refused before anything else.
    #[tokio::test]
    async fn decide_runs_the_filters_in_order() {
        let rt = runtime();
        let pass = decide_now(&rt, &get("192.0.2.1", "/api/users")).await;
        assert_eq!(pass, (None, Decision::Proxied));

        // A probe under no route is still a probe, not a 404 for want of a route.
        let probe = decide_now(&rt, &get("192.0.2.2", "/.env")).await;
        assert_eq!(probe, (Some(Answer::status(404)), Decision::Probe));
        let no_route = decide_now(&rt, &get("192.0.2.3", "/other")).await;
        assert_eq!(no_route, (Some(Answer::status(404)), Decision::NoRoute));

        // 413 closes the connection and leaves the zone's one token unspent.
        let mut upload = get("192.0.2.4", "/api/upload");
        upload.declared_body = 2048;
        let too_large = Answer::Status {
            status: 413,
            retry_after: None,
            close: true,
        };
        assert_eq!(
            decide_now(&rt, &upload).await,
            (Some(too_large), Decision::TooLarge)
        );
        upload.declared_body = 10;
        assert_eq!(decide_now(&rt, &upload).await, (None, Decision::Proxied));
        let limited = decide_now(&rt, &upload).await;
        let Some(Answer::Status {
            status: 429,
            retry_after: Some(_),
            close: false,
        }) = limited.0
        else {
            panic!("second request in a minute: {limited:?}");
        };
        assert_eq!(limited.1, Decision::RateLimited);

        // A probe weighs maxretry here: its sender is banned, for every path.
        let banned = decide_now(&rt, &get("192.0.2.2", "/api/users")).await;
        let closing = Answer::Status {
            status: 403,
            retry_after: None,
            close: true,
        };
        assert_eq!(banned, (Some(closing), Decision::Banned));
    }

    /// `[api] unknown`: refused (404 / 405 with Allow, an offense), forwarded and counted, or
    /// only logged; a path the spec declares is never taken for a probe.
    #[tokio::test]
    async fn the_api_spec_refuses_or_counts_what_it_does_not_declare() {
        let dir = tempfile::tempdir().unwrap();
        let spec = r#"{"swagger": "2.0", "basePath": "/api", "info": {"title": "t", "version": "1"},
            "paths": {"/repos/{owner}/{repo}": {"get": {}, "delete": {}}}}"#;
        std::fs::write(dir.path().join("spec.json"), spec).unwrap();
        for (mode, offenses) in [("refuse", 2), ("offense", 2), ("log", 0)] {
            let text = format!("{CONFIG}\n[api]\nopenapi = \"spec.json\"\nunknown = \"{mode}\"\n");
            let settings = Settings::parse(&text, dir.path()).unwrap();
            let rt = Runtime::build(settings, None).unwrap();
            // A repository named phpmyadmin is an API route here, not a probe.
            let known =
                decide_now(&rt, &get("192.0.2.1", "/api/repos/phpmyadmin/phpmyadmin")).await;
            assert_eq!(known, (None, Decision::Proxied), "{mode}");
            let mut put = get("192.0.2.2", "/api/repos/a/b");
            put.method = "PUT";
            let unknown = get("192.0.2.3", "/api/other");
            // A probe outside the spec is a probe (its heavier offense), in every mode.
            let probe = decide_now(&rt, &get("192.0.2.4", "/.env")).await;
            assert_eq!(
                probe,
                (Some(Answer::status(404)), Decision::Probe),
                "{mode}"
            );
            let before = rt.filters.store.reputation.stats().offenses_by_kind.clone();
            let (put, unknown) = (decide_now(&rt, &put).await, decide_now(&rt, &unknown).await);
            match mode {
                "refuse" => {
                    let allow = "DELETE, GET, HEAD, OPTIONS";
                    assert_eq!(
                        put,
                        (
                            Some(Answer::NotAllowed { allow }),
                            Decision::MethodNotAllowed
                        )
                    );
                    assert_eq!(unknown, (Some(Answer::status(404)), Decision::UnknownRoute));
                }
                _ => {
                    assert_eq!(put, (None, Decision::Proxied), "{mode}");
                    assert_eq!(unknown, (None, Decision::Proxied), "{mode}");
                }
            }
            let after = rt.filters.store.reputation.stats().offenses_by_kind.clone();
            let count = |list: &[(&'static str, u64)]| {
                list.iter()
                    .find(|(k, _)| *k == "unknown_route")
                    .map_or(0, |(_, n)| *n)
            };
            assert_eq!(count(&after) - count(&before), offenses, "{mode}");
        }
    }

    /// `[probes] dry_run`: a probe is counted and forwarded, and costs its sender nothing.
    #[tokio::test]
    async fn a_probe_dry_run_refuses_nothing_and_bans_no_one() {
        let text = CONFIG.replace("action = \"404\"", "action = \"404\"\ndry_run = true");
        let settings = Settings::parse(&text, std::path::Path::new("/etc/portcullis")).unwrap();
        let rt = Runtime::build(settings, None).unwrap();
        // One request each: the route's 1r/m limit is not the point here.
        for client in ["192.0.2.9", "192.0.2.10", "192.0.2.11"] {
            let probe = decide_now(&rt, &get(client, "/api/.env")).await;
            assert_eq!(probe, (None, Decision::Proxied));
        }
        let stats = rt.filters.store.reputation.stats();
        assert_eq!(stats.active_bans, 0);
        assert!(
            stats.offenses_by_kind.iter().all(|(_, n)| *n == 0),
            "{stats:?}"
        );
    }
}
