//! The walk: identity → ban → header size → Host → path → spec → probes → route → upgrade →
//! body size → rate limits → concurrency caps; then, around the upstream, the last-moment ban
//! re-check, the upstream's status, and malformed requests.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_policy::api::ApiMatch;
use portcullis_policy::limiter::{check_all, Decision as Limit, Zone};
use portcullis_policy::probes::Category;
use portcullis_policy::reputation::{OffenseKind, Reputation, Verdict};
use portcullis_policy::route_path;
use portcullis_policy::time::Clock;
use smallvec::SmallVec;

use crate::caps::{Caps, Guard};
use crate::observer::{Observer, ZoneOutcome};
use crate::outcome::{Answer, Decision, Malformed};
use crate::request::RequestFacts;
use crate::router::{host_without_port, valid_host, Router};
use crate::settings::{GateSettings, Refusal, UnknownRoute};

thread_local! {
    /// The normalized path of the request being routed on this thread: no allocation per
    /// request once it has grown to the longest path seen.
    static ROUTE_PATH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What the walk found about one request, carried by the proxy path until the request ends.
#[derive(Default)]
pub struct Walk {
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// The client's address as found by `[client_ip]`.
    pub client: Option<IpAddr>,
    /// The client's identity key (IPv6 aggregated).
    pub key: Option<IpAddr>,
    /// Index of the matched route.
    pub route: Option<usize>,
    /// What was decided.
    pub decision: Decision,
    /// The route's `client_max_body_size`; `None`: no limit.
    pub body_limit: Option<u64>,
    /// Concurrency slots held while the request is in flight (released on drop). At most two
    /// (per client, total), kept inline: no allocation per request.
    pub inflight: SmallVec<[Guard; 2]>,
}

/// What the proxy path does next with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forward it to the route's upstream, after waiting `delay_ms` (a rate-limit delay; 0:
    /// at once).
    Forward {
        /// Milliseconds to wait first.
        delay_ms: u64,
    },
    /// Answer it so, and forward nothing.
    Refuse(Answer),
}

/// What [`Gate::begin`] found: the step, or a question for the cluster first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walked {
    /// Decided here.
    Decided(Step),
    /// The route has zones shared by the cluster and this gateway's own count passed the
    /// request: ask the cluster ([`SharedCheck`]), then call [`Gate::after_shared`] with its
    /// answer, or with `None` when it did not answer in time (fail open to the local count).
    AskCluster(SharedCheck),
}

/// The question for the cluster about one request: may `key` spend a request in each of
/// `zones` (as several nginx `limit_req` lines: all or none). A plain value, so the gate
/// needs no network: the binary asks Redis and brings back a limiter decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCheck {
    /// The client's identity key.
    pub key: IpAddr,
    /// Indices into [`GateSettings::zones`] of the route's enforced shared zones.
    pub zones: SmallVec<[usize; 2]>,
    /// The client's address (offenses are counted against it).
    client: IpAddr,
    /// The delay this gateway's own zones asked for.
    local_delay_ms: u64,
}

/// What the rate limits made of a request they did not refuse.
enum Limited {
    /// Forward the request of the client keyed `key` after `delay_ms`.
    Forward { key: IpAddr, delay_ms: u64 },
    /// Ask the cluster first.
    Ask(SharedCheck),
}

/// The engines of one configuration, and the walk over them.
pub struct Gate {
    settings: GateSettings,
    router: Router,
    zones: Vec<Arc<Zone>>,
    reputation: Arc<Reputation>,
    caps: Arc<Caps>,
    clock: Arc<dyn Clock>,
}

impl Gate {
    /// The walk over `settings`, with the ban table `reputation` and the clock `clock`.
    /// With a `previous` gate, the caps and every zone whose settings did not change are
    /// carried over with their state (a reload does not forget who spent their burst).
    pub fn new(
        settings: GateSettings,
        reputation: Arc<Reputation>,
        clock: Arc<dyn Clock>,
        previous: Option<&Gate>,
    ) -> Gate {
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
        Gate {
            router: Router::new(&settings.routes),
            caps: previous.map_or_else(|| Arc::new(Caps::default()), |p| p.caps.clone()),
            zones,
            reputation,
            clock,
            settings,
        }
    }

    /// The settings the gate decides with.
    pub fn settings(&self) -> &GateSettings {
        &self.settings
    }

    /// The ban table.
    pub fn reputation(&self) -> &Arc<Reputation> {
        &self.reputation
    }

    /// The rate-limit zones, indexed as `settings().zones`.
    pub fn zones(&self) -> &[Arc<Zone>] {
        &self.zones
    }

    /// The concurrency caps.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// The clock the gate reads.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Walks `req` through every filter, in order, recording what it found in `walk`. A zone
    /// shared by the cluster is decided by this gateway's own count alone (as when the cluster
    /// does not answer); the proxy paths use [`Gate::begin`] to ask it.
    pub fn decide(&self, req: &RequestFacts<'_>, walk: &mut Walk, obs: &impl Observer) -> Step {
        match self.begin(req, walk, obs) {
            Walked::Decided(step) => step,
            Walked::AskCluster(check) => self.after_shared(walk, &check, None, obs),
        }
    }

    /// Walks `req` as [`Gate::decide`] does, but stops before the concurrency caps when a
    /// zone shared by the cluster must be asked.
    pub fn begin(&self, req: &RequestFacts<'_>, walk: &mut Walk, obs: &impl Observer) -> Walked {
        Walked::Decided(match self.walk(req, walk, obs) {
            Ok(Limited::Ask(check)) => return Walked::AskCluster(check),
            Ok(Limited::Forward { key, delay_ms }) => self.forward(walk, key, delay_ms, obs),
            Err(answer) => Step::Refuse(answer),
        })
    }

    /// Ends the walk of a request whose route has shared zones with the cluster's `answer`
    /// (the decision over `check.zones`, a rejection's `zone` indexing `check.zones`), or
    /// with `None`: the cluster did not answer, and this gateway's own count stands. A
    /// rejection is answered, counted and an offense exactly as a local zone's.
    pub fn after_shared(
        &self,
        walk: &mut Walk,
        check: &SharedCheck,
        answer: Option<Limit>,
        obs: &impl Observer,
    ) -> Step {
        let route = walk.route.and_then(|r| self.settings.routes.get(r));
        let enforced: SmallVec<[usize; 4]> = route
            .map(|r| {
                r.zones
                    .iter()
                    .copied()
                    .filter(|&i| !self.settings.zones[i].dry_run)
                    .collect()
            })
            .unwrap_or_default();
        let delay_ms = match answer.unwrap_or(Limit::Pass) {
            Limit::Pass => check.local_delay_ms,
            Limit::Delay { ms } => check.local_delay_ms.max(ms),
            decision @ Limit::Reject { zone, .. } => {
                let Some(&i) = check.zones.get(zone) else {
                    return self.forward_limited(
                        walk,
                        &enforced,
                        check.key,
                        check.local_delay_ms,
                        obs,
                    );
                };
                let rules = &self.settings.zones[i];
                obs.rate_limit(check.key, i, &rules.engine.name, ZoneOutcome::Rejected);
                walk.decision = Decision::RateLimited;
                self.offense(
                    check.client,
                    OffenseKind::RateLimit,
                    self.clock.now_ms(),
                    obs,
                );
                return Step::Refuse(Answer::Status {
                    status: rules.status,
                    retry_after: Some(decision.retry_after_secs().unwrap_or(1)),
                    close: false,
                });
            }
        };
        self.forward_limited(walk, &enforced, check.key, delay_ms, obs)
    }

    /// The zones `enforced` passed the request (after `delay_ms`): told, then the caps.
    fn forward_limited(
        &self,
        walk: &mut Walk,
        enforced: &[usize],
        key: IpAddr,
        delay_ms: u64,
        obs: &impl Observer,
    ) -> Step {
        self.report_passed(walk, enforced, key, delay_ms, obs);
        self.forward(walk, key, delay_ms, obs)
    }

    /// Tells `obs` that each zone of `enforced` passed (or delayed) the request.
    fn report_passed(
        &self,
        walk: &mut Walk,
        enforced: &[usize],
        key: IpAddr,
        delay_ms: u64,
        obs: &impl Observer,
    ) {
        let outcome = match delay_ms {
            0 => ZoneOutcome::Passed,
            _ => ZoneOutcome::Delayed,
        };
        for &i in enforced {
            obs.rate_limit(key, i, &self.settings.zones[i].engine.name, outcome);
        }
        if delay_ms > 0 {
            walk.decision = Decision::Delayed;
        }
    }

    /// The limits passed the request: the concurrency caps, then forward after `delay_ms`.
    fn forward(&self, walk: &mut Walk, key: IpAddr, delay_ms: u64, obs: &impl Observer) -> Step {
        if let Err(answer) = self.take_caps(walk, key, obs) {
            return Step::Refuse(answer);
        }
        if walk.decision == Decision::Undecided {
            walk.decision = Decision::Proxied;
        }
        Step::Forward { delay_ms }
    }

    /// The walk up to the concurrency caps: what the rate limits made of the request.
    fn walk(
        &self,
        req: &RequestFacts<'_>,
        walk: &mut Walk,
        obs: &impl Observer,
    ) -> Result<Limited, Answer> {
        let now = self.clock.now_ms();
        let key = self.settings.client_ip.normalize(req.client);
        walk.peer = Some(req.peer);
        walk.client = Some(req.client);
        walk.key = Some(key);

        // Bans, the API's spec and probes before routing, so refused requests cost the least.
        let admitted = ROUTE_PATH.with_borrow_mut(|path| self.admit(walk, req, path, now, obs));
        let route = admitted?;
        walk.route = Some(route);
        let rules = &self.settings.routes[route];

        // A tunnel passes no filter after its 101: only routes that say so may open one.
        if req.upgrade && !rules.websocket {
            walk.decision = Decision::UpgradeRefused;
            return Err(Answer::closing(403));
        }

        // A declared body over the limit is refused before it is read, and before any limit
        // spends a token on it (nginx checks client_max_body_size first too).
        walk.body_limit = rules.max_body;
        if walk.body_limit.is_some_and(|max| req.declared_body > max) {
            walk.decision = Decision::TooLarge;
            return Err(Answer::closing(413));
        }

        self.limit(walk, route, req.client, key, now, obs)
    }

    /// The last-moment ban re-check, just before the request is written to the upstream: a
    /// client banned while its request waited (a delay, a slow body, a connect) is refused.
    pub fn before_upstream(&self, walk: &mut Walk) -> Option<Answer> {
        let client = walk.client?;
        let decision = self.banned_now(client, self.clock.now_ms())?;
        walk.decision = decision;
        Some(self.ban_answer())
    }

    /// The upstream answered `status`: an offense where `[reputation] offense_status` says.
    pub fn on_response(&self, walk: &Walk, status: u16, obs: &impl Observer) {
        let (Some(cfg), Some(client)) = (&self.settings.reputation, walk.client) else {
            return;
        };
        if cfg.offense_status.contains(&status) {
            self.offense(
                client,
                OffenseKind::UpstreamStatus,
                self.clock.now_ms(),
                obs,
            );
        }
    }

    /// A malformed request: counted under its reason, and an offense of `client`'s when the
    /// client is known.
    pub fn on_malformed(
        &self,
        client: Option<IpAddr>,
        reason: Malformed,
        detail: &dyn std::fmt::Display,
        obs: &impl Observer,
    ) {
        obs.malformed(client, reason, detail);
        if let Some(client) = client {
            self.offense(client, OffenseKind::Malformed, self.clock.now_ms(), obs);
        }
    }

    /// Counts an offense of `kind` by the client at `client` (its address: the table keys it
    /// itself and matches `ignoreip` against the address), if reputation is on.
    pub fn offense(&self, client: IpAddr, kind: OffenseKind, now: u64, obs: &impl Observer) {
        let Some(cfg) = &self.settings.reputation else {
            return;
        };
        let weight = cfg.weights.weight(kind);
        let ban = self.reputation.offense(client, kind, weight, now);
        obs.offense(client, kind, weight, ban);
    }

    /// `Banned` or `Denied` when the client at `client` (its address, matched against
    /// `deny`) may not be served at `now`.
    pub fn banned_now(&self, client: IpAddr, now: u64) -> Option<Decision> {
        match self.reputation.check(client, now) {
            Verdict::Allow => None,
            Verdict::Banned { .. } => Some(Decision::Banned),
            Verdict::Denied => Some(Decision::Denied),
        }
    }

    /// How banned and denied clients are answered.
    pub fn ban_refusal(&self) -> Refusal {
        self.settings
            .reputation
            .as_ref()
            .map_or(Refusal::Status(403), |r| r.ban_action)
    }

    /// How a banned or denied client is answered. The connection is closed after the answer:
    /// nginx's `deny` leaves that to the client, but a banned client should keep no kept-alive
    /// connection to send more on.
    pub fn ban_answer(&self) -> Answer {
        match self.ban_refusal() {
            Refusal::Drop => Answer::Drop,
            Refusal::Status(status) => Answer::closing(status),
        }
    }

    /// The walk up to the route: ban, header size, Host, path, the API's spec, probes, route.
    /// `path` is the buffer the normalized path is written to.
    fn admit(
        &self,
        walk: &mut Walk,
        req: &RequestFacts<'_>,
        path: &mut Vec<u8>,
        now: u64,
        obs: &impl Observer,
    ) -> Result<usize, Answer> {
        if let Some(decision) = self.banned_now(req.client, now) {
            walk.decision = decision;
            return Err(self.ban_answer());
        }

        // nginx's large_client_header_buffers: a request line longer than one buffer is 414, a
        // field longer than one or a header larger than all of them 400.
        let limits = &self.settings.header;
        let too_large = if req.header.request_line > limits.max_line {
            Some(414)
        } else if req.header.longest_field > limits.max_line || req.header.total > limits.max_total
        {
            Some(400)
        } else {
            None
        };
        if let Some(status) = too_large {
            return Err(self.malformed(walk, req, Malformed::HeaderTooLarge, &status, now, obs));
        }

        // A Host that is no host (`a@evil`, spaces, a path) is refused as nginx refuses it: an
        // upstream building URLs from it would send its users elsewhere.
        if let Some(host) = req.host.filter(|h| !valid_host(h)) {
            return Err(self.malformed(walk, req, Malformed::BadHost, &host, now, obs));
        }

        // Decided on the path as the upstream will see it, decoded and resolved as nginx does
        // before it picks a location: `/api/v1/%6Cogin` is the login route.
        let normalized = route_path::normalize(req.path.as_bytes(), path);
        let api = self
            .settings
            .api
            .as_ref()
            .and_then(|api| Some((api.unknown, api.spec.as_deref()?)));
        let verdict = match (api, &normalized) {
            (Some((_, spec)), Ok(())) => Some(spec.check(req.method.as_bytes(), path)),
            _ => None,
        };
        let in_spec = matches!(verdict, Some(ApiMatch::Known | ApiMatch::Extra));

        if let Some(probes) = &self.settings.probes {
            if let Some(hit) = probes.matcher.check(req.raw_path, req.user_agent) {
                // A request the API's spec declares is never refused by the path lists: the
                // spec knows better (`/repos/phpmyadmin/...` is a repository name there).
                if !(in_spec && path_rule(hit.category)) {
                    let answer = Answer::refusal(probes.action);
                    let action = match probes.dry_run {
                        true => "dry_run",
                        false => answer_label(&answer),
                    };
                    obs.probe(req.client, hit.category, &hit.rule, action);
                    // A dry run refuses nothing and counts no offense: it is how an operator
                    // learns what enforcing would refuse, without banning anyone for it.
                    if !probes.dry_run {
                        walk.decision = Decision::Probe;
                        self.offense(req.client, OffenseKind::Probe, now, obs);
                        return Err(answer);
                    }
                }
            }
        }

        // Outside the spec, and no probe: `[api] unknown` says what it gets.
        if let (Some((unknown, _)), Some(verdict)) = (api, verdict) {
            self.outside_spec(walk, unknown, verdict, req, now, obs)?;
        }

        // A path that cannot be normalized safely and is no probe: nginx answers it 400 too.
        if let Err(why) = normalized {
            return Err(self.malformed(walk, req, Malformed::BadPath, &why, now, obs));
        }

        let host = req.host.map(host_without_port);
        match self.router.find(host, path) {
            Some(route) => Ok(route),
            None => {
                walk.decision = Decision::NoRoute;
                Err(Answer::status(404))
            }
        }
    }

    /// Refuses `req` as malformed for `reason`: counted, an offense, and the connection closed
    /// after the answer (414 for a request line too long, 400 otherwise).
    fn malformed(
        &self,
        walk: &mut Walk,
        req: &RequestFacts<'_>,
        reason: Malformed,
        detail: &dyn std::fmt::Display,
        now: u64,
        obs: &impl Observer,
    ) -> Answer {
        walk.decision = Decision::Malformed;
        obs.malformed(Some(req.client), reason, detail);
        self.offense(req.client, OffenseKind::Malformed, now, obs);
        let long_line = reason == Malformed::HeaderTooLarge
            && req.header.request_line > self.settings.header.max_line;
        Answer::closing(if long_line { 414 } else { 400 })
    }

    /// Acts on the spec's `verdict` for a request outside it (unknown path, or a method the
    /// path does not serve) as `unknown` says: `Err` with the answer (404, or 405 with
    /// `Allow`) when refused; counted, and an offense unless only logged.
    fn outside_spec(
        &self,
        walk: &mut Walk,
        unknown: UnknownRoute,
        verdict: ApiMatch,
        req: &RequestFacts<'_>,
        now: u64,
        obs: &impl Observer,
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
        obs.outside_spec(req.client, req.method, req.path, category, action);
        if unknown != UnknownRoute::Log {
            self.offense(req.client, OffenseKind::UnknownRoute, now, obs);
        }
        match unknown {
            UnknownRoute::Refuse => {
                walk.decision = decision;
                Err(answer)
            }
            UnknownRoute::Offense | UnknownRoute::Log => Ok(()),
        }
    }

    /// The route's rate-limit zones: `Ok` with the delay to wait (0: none) or the question
    /// for the cluster, or the refusal. This gateway's own count decides first, shared zones
    /// included: the cluster, which sees these requests and the other gateways', would refuse
    /// what it refuses, so a local refusal costs no round trip.
    fn limit(
        &self,
        walk: &mut Walk,
        route: usize,
        client: IpAddr,
        key: IpAddr,
        now: u64,
        obs: &impl Observer,
    ) -> Result<Limited, Answer> {
        let zone_ids = &self.settings.routes[route].zones;
        if zone_ids.is_empty() {
            return Ok(Limited::Forward { key, delay_ms: 0 });
        }
        let zone_rules = &self.settings.zones;
        let (dry, enforced): (SmallVec<[usize; 4]>, SmallVec<[usize; 4]>) = zone_ids
            .iter()
            .copied()
            .partition(|&i| zone_rules[i].dry_run);
        let now_mono = self.clock.monotonic_ms();
        let zones = |ids: &[usize]| -> SmallVec<[&Zone; 4]> {
            ids.iter().map(|&i| self.zones[i].as_ref()).collect()
        };
        if !dry.is_empty() {
            if let Limit::Reject { zone, .. } = check_all(&zones(&dry), key, now_mono) {
                let i = dry[zone];
                obs.rate_limit(key, i, &zone_rules[i].engine.name, ZoneOutcome::DryRun);
                walk.decision = Decision::DryRun;
            }
        }
        let local_delay_ms = match check_all(&zones(&enforced), key, now_mono) {
            Limit::Pass => 0,
            Limit::Delay { ms } => ms,
            decision @ Limit::Reject { zone, .. } => {
                let i = enforced[zone];
                let rules = &zone_rules[i];
                obs.rate_limit(key, i, &rules.engine.name, ZoneOutcome::Rejected);
                walk.decision = Decision::RateLimited;
                self.offense(client, OffenseKind::RateLimit, now, obs);
                return Err(Answer::Status {
                    status: rules.status,
                    retry_after: Some(decision.retry_after_secs().unwrap_or(1)),
                    close: false,
                });
            }
        };
        let shared: SmallVec<[usize; 2]> = enforced
            .iter()
            .copied()
            .filter(|&i| zone_rules[i].shared)
            .collect();
        if !shared.is_empty() {
            // Told once the cluster has answered (or not), so each zone is counted once.
            return Ok(Limited::Ask(SharedCheck {
                key,
                zones: shared,
                client,
                local_delay_ms,
            }));
        }
        self.report_passed(walk, &enforced, key, local_delay_ms, obs);
        Ok(Limited::Forward {
            key,
            delay_ms: local_delay_ms,
        })
    }

    /// The concurrency caps (`[inflight]`): the slots are held in `walk` until it is dropped.
    fn take_caps(&self, walk: &mut Walk, key: IpAddr, obs: &impl Observer) -> Result<(), Answer> {
        let caps = &self.settings.inflight;
        if caps.per_client > 0 {
            let slot = self.caps.client(key, caps.per_client);
            self.hold(walk, slot, "client", obs)?;
        }
        if caps.total > 0 {
            let slot = self.caps.total(caps.total);
            self.hold(walk, slot, "total", obs)?;
        }
        Ok(())
    }

    /// Keeps a cap's `slot` in `walk`, or refuses the request when the cap (`scope`) is full.
    fn hold(
        &self,
        walk: &mut Walk,
        slot: Option<Guard>,
        scope: &'static str,
        obs: &impl Observer,
    ) -> Result<(), Answer> {
        match slot {
            Some(guard) => {
                walk.inflight.push(guard);
                Ok(())
            }
            None => {
                obs.inflight_refused(scope);
                walk.decision = Decision::Inflight;
                walk.inflight.clear();
                Err(Answer::Status {
                    status: self.settings.inflight.status,
                    retry_after: Some(1),
                    close: false,
                })
            }
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
