//! The running configuration: validated settings plus the engines built from them.
//!
//! A reload builds a new [`Runtime`] and swaps it in; requests already in flight keep the one
//! they started with. Engines whose state must survive a reload (limiter zones that still
//! exist, the caps, the reputation table) are carried over from the previous runtime.

use std::fmt::Display;
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_gate::settings::{ApiRules, HeaderLimits};
use portcullis_gate::{Decision, Gate, GateSettings, Malformed, RequestFacts, Step, Walk, Walked};
use portcullis_policy::client::ClientIdentity;
use portcullis_policy::reputation::ReputationSettings;
use portcullis_policy::time::{Clock, SystemClock};
use prometheus::IntCounter;

use crate::access_log::{AccessLog, RequestLine};
use crate::config::Settings;
use crate::report::Reporter;
use crate::state::BanStore;
use crate::upstream::Upstream;

/// Everything a request needs to be decided and forwarded.
pub struct Runtime {
    /// The validated settings this runtime was built from.
    pub settings: Settings,
    /// Client identity resolver.
    pub client_ip: ClientIdentity,
    /// The walk of every request.
    pub gate: Gate,
    /// The ban table and its journal (shared by every runtime of the process).
    pub store: Arc<BanStore>,
    /// Where the walk's events go: metrics, logs, the ban store.
    pub reporter: Reporter,
    /// Upstream groups, indexed as in `settings.upstreams`.
    pub upstreams: Vec<Upstream>,
    /// The API's own routes (`[api]`), if configured.
    pub api: Option<crate::api::ApiModel>,
    /// Access log writer.
    pub access_log: Arc<AccessLog>,
    /// `portcullis_requests_total` resolved for every (route, decision) once, so the request
    /// path does not hash labels: index 0 is "no route", then one row per route.
    requests: Vec<Vec<IntCounter>>,
}

impl Runtime {
    /// The requests counter for a request on `route` (None: no route) with `decision`.
    pub fn request_counter(&self, route: Option<usize>, decision: Decision) -> &IntCounter {
        &self.requests[route.map_or(0, |r| r + 1)][decision as usize]
    }

    /// Counts a finished request (`portcullis_requests_total`, `portcullis_responses_total`)
    /// and writes its access log line: both proxy paths end a request here. `status` 0 means
    /// no response at all; `line` is only built when the access log is on.
    pub fn finish<'a>(
        &self,
        walk: &Walk,
        status: u16,
        body_bytes: usize,
        line: impl FnOnce() -> RequestLine<'a>,
    ) {
        self.request_counter(walk.route, walk.decision).inc();
        if status > 0 {
            crate::metrics::Metrics::get()
                .response_counter(status)
                .inc();
        }
        if self.access_log.enabled() {
            let route = self.route_name(walk.route);
            self.access_log
                .record_request(Some(&line()), walk, route, status, body_bytes);
        }
    }

    /// The name of `route` for metrics and logs (`-`: no route).
    pub fn route_name(&self, route: Option<usize>) -> &str {
        route
            .and_then(|r| self.settings.routes.get(r))
            .map_or("-", |r| r.name.as_str())
    }

    /// Walks `req` through every filter (see `portcullis_gate`); a zone shared by the
    /// cluster waits for Redis's answer (`[cluster] shared_timeout` at most).
    pub async fn decide(&self, req: &RequestFacts<'_>, walk: &mut Walk) -> Step {
        match self.gate.begin(req, walk, &self.reporter) {
            Walked::Decided(step) => step,
            Walked::AskCluster(check) => {
                let answer = crate::cluster::shared::ask(&check, &self.gate.settings().zones).await;
                self.gate.after_shared(walk, &check, answer, &self.reporter)
            }
        }
    }

    /// Counts a malformed request (and an offense of `client`'s, when known).
    pub fn malformed(&self, client: Option<IpAddr>, reason: Malformed, detail: &dyn Display) {
        self.gate
            .on_malformed(client, reason, detail, &self.reporter);
    }

    /// Builds a runtime from `settings`, keeping the state of `previous` where it still applies.
    pub fn build(settings: Settings, previous: Option<&Runtime>) -> Result<Runtime, String> {
        Runtime::build_with_clock(settings, previous, Arc::new(SystemClock))
    }

    /// [`Runtime::build`] on `clock` (a test's manual clock).
    pub fn build_with_clock(
        settings: Settings,
        previous: Option<&Runtime>,
        clock: Arc<dyn Clock>,
    ) -> Result<Runtime, String> {
        let access_log = match previous {
            Some(prev) if prev.settings.access_log.target == settings.access_log.target => {
                prev.access_log.reloaded(settings.access_log.format)
            }
            _ => Arc::new(AccessLog::open(&settings.access_log)?),
        };
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
        let api = settings
            .api
            .as_ref()
            .map(|a| crate::api::ApiModel::build(a, previous.and_then(|p| p.api.as_ref())));
        let gate_settings = GateSettings {
            client_ip: settings.client_ip.clone(),
            routes: settings.routes.clone(),
            zones: settings.zones.clone(),
            probes: settings.probes.clone(),
            api: api.as_ref().map(|a| ApiRules {
                spec: a.spec.clone(),
                unknown: a.unknown,
            }),
            reputation: settings.reputation.clone(),
            inflight: settings.inflight.clone(),
            header: HeaderLimits {
                max_line: settings.server.max_header_line,
                max_total: settings.server.max_header_bytes,
            },
        };
        let gate = Gate::new(
            gate_settings,
            store.reputation.clone(),
            clock,
            previous.map(|p| &p.gate),
        );
        let reporter = Reporter::new(
            store.clone(),
            settings.zones.iter().map(|z| z.engine.name.as_str()),
        );
        let m = &crate::metrics::Metrics::get().requests;
        let requests = std::iter::once("-")
            .chain(settings.routes.iter().map(|r| r.name.as_str()))
            .map(|route| {
                Decision::ALL
                    .iter()
                    .map(|d| m.with_label_values(&[route, d.as_str()]))
                    .collect()
            })
            .collect();
        Ok(Runtime {
            api,
            requests,
            client_ip: settings.client_ip.clone(),
            gate,
            store,
            reporter,
            upstreams: settings
                .upstreams
                .iter()
                .cloned()
                .map(Upstream::new)
                .collect(),
            access_log,
            settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_gate::{Answer, HeaderSize};

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
        let mut walk = Walk::default();
        let answer = match rt.decide(req, &mut walk).await {
            Step::Forward { .. } => None,
            Step::Refuse(answer) => Some(answer),
        };
        (answer, walk.decision)
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
            let before = rt.store.reputation.stats().offenses_by_kind.clone();
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
            let after = rt.store.reputation.stats().offenses_by_kind.clone();
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
        let stats = rt.store.reputation.stats();
        assert_eq!(stats.active_bans, 0);
        assert!(
            stats.offenses_by_kind.iter().all(|(_, n)| *n == 0),
            "{stats:?}"
        );
    }
}
