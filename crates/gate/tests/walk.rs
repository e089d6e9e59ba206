//! The walk on a manual clock: findtime windows, ban expiry and escalation, limiter drains and
//! delays, the last-moment ban re-check and the upstream status, with what the observer is
//! told. No test here sleeps: time moves when the test says so.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use portcullis_gate::settings::{
    HeaderLimits, InflightSettings, ProbesSettings, Refusal, ReputationConfig, RouteSettings,
    ZoneConfig,
};
use portcullis_gate::{
    Answer, Decision, Gate, GateSettings, HeaderSize, Malformed, Observer, RequestFacts, Step,
    Walk, Walked, ZoneOutcome,
};
use portcullis_policy::client::{ClientHeader, ClientIdentity};
use portcullis_policy::limiter::{Decision as Limit, Delay, Rate, ZoneSettings};
use portcullis_policy::probes::{Category, ProbeMatcher, ProbeSettings};
use portcullis_policy::reputation::{
    Event, Increment, OffenseKind, OffenseWeights, Reputation, ReputationSettings,
};
use portcullis_policy::time::ManualClock;

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;

/// Everything the observer was told, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Observer for Recorder {
    fn probe(&self, client: IpAddr, category: Category, _: &str, action: &'static str) {
        self.push(format!("probe {client} {} {action}", category.as_str()));
    }
    fn outside_spec(&self, client: IpAddr, _: &str, _: &str, c: &'static str, a: &'static str) {
        self.push(format!("outside_spec {client} {c} {a}"));
    }
    fn rate_limit(&self, client: IpAddr, _: usize, name: &str, outcome: ZoneOutcome) {
        self.push(format!("rate_limit {client} {name} {}", outcome.as_str()));
    }
    fn inflight_refused(&self, scope: &'static str) {
        self.push(format!("inflight_refused {scope}"));
    }
    fn malformed(&self, client: Option<IpAddr>, reason: Malformed, _: &dyn std::fmt::Display) {
        self.push(format!("malformed {client:?} {}", reason.as_str()));
    }
    fn offense(&self, addr: IpAddr, kind: OffenseKind, weight: u32, ban: Option<Event>) {
        self.push(format!("offense {addr} {} {weight}", kind.as_str()));
        if let Some(Event::Banned { ban, .. }) = ban {
            let secs = (ban.until_ms - ban.created_ms) / SECOND;
            self.push(format!("ban {} {secs}s #{}", ban.net, ban.ban_count));
        }
    }
}

/// A gate in front of an API: `/login` limited to 1r/s with a burst of 1 (`nodelay`), `/slow`
/// to 2r/s with a burst of 4 delayed (nginx's default), `/` open; the built-in probe list;
/// maxretry 3 in a findtime of 1 minute, bans of 10 minutes doubling per repeat; upstream 401s
/// count as offenses.
struct Harness {
    gate: Gate,
    clock: Arc<ManualClock>,
    seen: Recorder,
}

fn zone(name: &str, rate: &str, burst: u64, delay: Delay) -> ZoneConfig {
    ZoneConfig {
        engine: ZoneSettings {
            name: name.into(),
            rate: Rate::parse(rate).unwrap(),
            burst,
            delay,
            max_clients: 1000,
        },
        status: 429,
        dry_run: false,
        shared: false,
    }
}

fn route(path: &str, zones: Vec<usize>) -> RouteSettings {
    RouteSettings {
        name: path.into(),
        host: None,
        path: path.into(),
        upstream: 0,
        zones,
        max_body: Some(1024),
        websocket: false,
    }
}

impl Harness {
    fn new() -> Harness {
        let engine = ReputationSettings {
            maxretry: 3,
            findtime_ms: MINUTE,
            bantime_ms: 10 * MINUTE,
            increment: Some(Increment {
                factor: 2.0,
                ..Increment::default()
            }),
            ..ReputationSettings::default()
        };
        let settings = GateSettings {
            client_ip: ClientIdentity::new(vec![], ClientHeader::XForwardedFor, 64),
            routes: vec![
                route("/", vec![]),
                route("/login", vec![0]),
                route("/slow", vec![1]),
                route("/shared", vec![1, 2]),
            ],
            zones: vec![
                zone("login", "1r/s", 1, Delay::NoDelay),
                zone("slow", "2r/s", 4, Delay::After(0)),
                ZoneConfig {
                    shared: true,
                    ..zone("cluster", "1r/s", 2, Delay::NoDelay)
                },
            ],
            probes: Some(ProbesSettings {
                matcher: Arc::new(ProbeMatcher::new(&ProbeSettings::default()).unwrap()),
                action: Refusal::Status(404),
                dry_run: false,
            }),
            api: None,
            reputation: Some(ReputationConfig {
                engine: engine.clone(),
                offense_status: vec![401],
                ban_action: Refusal::Status(403),
                weights: OffenseWeights {
                    probe: 1,
                    ..OffenseWeights::default()
                },
            }),
            inflight: InflightSettings {
                per_client: 2,
                total: 0,
                status: 503,
            },
            header: HeaderLimits::default(),
        };
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let reputation = Arc::new(Reputation::new(engine));
        Harness {
            gate: Gate::new(settings, reputation, clock.clone(), None),
            clock,
            seen: Recorder::default(),
        }
    }

    fn send(&self, client: &str, path: &str) -> (Step, Walk) {
        let mut walk = Walk::default();
        let step = self.gate.decide(&get(client, path), &mut walk, &self.seen);
        (step, walk)
    }

    fn status(&self, client: &str, path: &str) -> u16 {
        match self.send(client, path).0 {
            Step::Forward { .. } => 200,
            Step::Refuse(Answer::Status { status, .. }) => status,
            Step::Refuse(other) => panic!("unexpected answer {other:?}"),
        }
    }

    fn advance(&self, ms: u64) {
        self.clock.advance(ms);
    }
}

fn get<'a>(client: &str, path: &'a str) -> RequestFacts<'a> {
    let ip: IpAddr = client.parse().unwrap();
    RequestFacts {
        peer: ip,
        client: ip,
        host: Some("api.example"),
        method: "GET",
        path,
        raw_path: path.as_bytes(),
        user_agent: None,
        declared_body: 0,
        upgrade: false,
        header: HeaderSize::of(20, std::iter::empty()),
    }
}

const SCANNER: &str = "203.0.113.7";

#[test]
fn offenses_older_than_findtime_do_not_add_up() {
    let h = Harness::new();
    assert_eq!(h.status(SCANNER, "/.env"), 404);
    assert_eq!(h.status(SCANNER, "/wp-login.php"), 404);
    // The first two fall out of the window: a third a minute later bans no one.
    h.advance(MINUTE + 1);
    assert_eq!(h.status(SCANNER, "/.git/config"), 404);
    assert_eq!(h.status(SCANNER, "/"), 200);
    // Three within a minute do.
    h.advance(10 * SECOND);
    assert_eq!(h.status(SCANNER, "/phpmyadmin/"), 404);
    assert!(h.seen.take().iter().all(|e| !e.starts_with("ban")));
    h.advance(10 * SECOND);
    assert_eq!(h.status(SCANNER, "/.env"), 404);
    let told = h.seen.take();
    assert!(
        told.contains(&"ban 203.0.113.7/32 600s #1".to_string()),
        "{told:?}"
    );
    let (step, walk) = h.send(SCANNER, "/");
    assert_eq!(step, Step::Refuse(Answer::closing(403)));
    assert_eq!(walk.decision, Decision::Banned);
}

#[test]
fn a_ban_ends_at_bantime_and_a_repeat_ban_lasts_twice_as_long() {
    let h = Harness::new();
    for path in ["/.env", "/.env", "/.env"] {
        assert_eq!(h.status(SCANNER, path), 404);
    }
    assert_eq!(h.status(SCANNER, "/"), 403);
    h.advance(10 * MINUTE - 1);
    assert_eq!(
        h.status(SCANNER, "/"),
        403,
        "one millisecond before bantime"
    );
    h.advance(1);
    assert_eq!(h.status(SCANNER, "/"), 200, "at bantime");

    // Back for more: the second ban is 20 minutes.
    for _ in 0..3 {
        assert_eq!(h.status(SCANNER, "/.env"), 404);
    }
    let told = h.seen.take();
    assert!(
        told.contains(&"ban 203.0.113.7/32 1200s #2".to_string()),
        "{told:?}"
    );
    h.advance(10 * MINUTE);
    assert_eq!(h.status(SCANNER, "/"), 403, "still banned after 10 minutes");
    h.advance(10 * MINUTE);
    assert_eq!(h.status(SCANNER, "/"), 200);
}

#[test]
fn a_zone_refuses_beyond_its_burst_and_drains_at_its_rate() {
    let h = Harness::new();
    let user = "198.51.100.1";
    // 1r/s with a burst of 1, nodelay: two at once, the third refused with Retry-After.
    assert_eq!(h.status(user, "/login"), 200);
    assert_eq!(h.status(user, "/login"), 200);
    let (step, walk) = h.send(user, "/login");
    assert_eq!(
        step,
        Step::Refuse(Answer::Status {
            status: 429,
            retry_after: Some(1),
            close: false
        })
    );
    assert_eq!(walk.decision, Decision::RateLimited);
    // Another client is not limited by this one.
    assert_eq!(h.status("198.51.100.2", "/login"), 200);
    // One request drains per second.
    h.advance(999);
    assert_eq!(h.status(user, "/login"), 429);
    h.advance(1);
    assert_eq!(h.status(user, "/login"), 200);
    assert_eq!(h.status(user, "/login"), 429);
    let told = h.seen.take();
    assert!(
        told.contains(&format!("rate_limit {user} login rejected")),
        "{told:?}"
    );
    assert!(
        told.contains(&format!("offense {user} rate_limit 1")),
        "{told:?}"
    );
}

#[test]
fn a_delayed_zone_says_how_long_to_wait_as_nginx_does() {
    let h = Harness::new();
    let user = "198.51.100.3";
    // 2r/s, burst 4, no nodelay: each request beyond the rate waits for its slot, 500 ms apart.
    let delays: Vec<u64> = (0..5)
        .map(|_| match h.send(user, "/slow").0 {
            Step::Forward { delay_ms } => delay_ms,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(delays, vec![0, 500, 1000, 1500, 2000]);
    // The sixth is beyond the burst.
    assert_eq!(h.status(user, "/slow"), 429);
    // Two seconds later the four excess requests have drained: the next is one over the rate
    // again, and waits one slot (nginx: excess 1000 at 2r/s is 500 ms).
    h.advance(2 * SECOND);
    let (step, walk) = h.send(user, "/slow");
    assert_eq!(step, Step::Forward { delay_ms: 500 });
    assert_eq!(walk.decision, Decision::Delayed);
}

#[test]
fn a_client_banned_while_its_request_waited_is_refused_before_the_upstream() {
    let h = Harness::new();
    let (step, mut walk) = h.send(SCANNER, "/");
    assert_eq!(step, Step::Forward { delay_ms: 0 });
    assert_eq!(h.gate.before_upstream(&mut walk), None);
    // Its concurrent requests get it banned meanwhile.
    for _ in 0..3 {
        h.status(SCANNER, "/.env");
    }
    assert_eq!(
        h.gate.before_upstream(&mut walk),
        Some(Answer::closing(403))
    );
    assert_eq!(walk.decision, Decision::Banned);
}

#[test]
fn upstream_statuses_named_in_offense_status_ban_like_fail2ban() {
    let h = Harness::new();
    let guesser = "192.0.2.50";
    for _ in 0..3 {
        let (step, walk) = h.send(guesser, "/");
        assert_eq!(step, Step::Forward { delay_ms: 0 });
        h.gate.on_response(&walk, 200, &h.seen);
        h.gate.on_response(&walk, 401, &h.seen);
    }
    assert_eq!(h.status(guesser, "/"), 403);
    let told = h.seen.take();
    let offenses = told
        .iter()
        .filter(|e| e.starts_with("offense 192.0.2.50 upstream_status"))
        .count();
    assert_eq!(offenses, 3, "{told:?}");
}

#[test]
fn malformed_requests_are_counted_by_reason_and_ban() {
    let h = Harness::new();
    let client: IpAddr = "192.0.2.60".parse().unwrap();
    for _ in 0..3 {
        h.gate
            .on_malformed(Some(client), Malformed::BodyTimeout, &"test", &h.seen);
    }
    // Junk no client can be blamed for is counted, and bans no one.
    h.gate
        .on_malformed(None, Malformed::BadHeader, &"test", &h.seen);
    let told = h.seen.take();
    assert_eq!(
        told.iter()
            .filter(|e| e.starts_with("malformed Some(192.0.2.60) body_timeout"))
            .count(),
        3
    );
    assert!(told.contains(&"malformed None bad_header".to_string()));
    assert_eq!(h.status("192.0.2.60", "/"), 403);
}

#[test]
fn concurrency_slots_are_held_by_the_walk_until_it_ends() {
    let h = Harness::new();
    let user = "198.51.100.9";
    let (_, first) = h.send(user, "/");
    let (_, second) = h.send(user, "/");
    let (step, third) = h.send(user, "/");
    assert_eq!(
        step,
        Step::Refuse(Answer::Status {
            status: 503,
            retry_after: Some(1),
            close: false
        })
    );
    assert_eq!(third.decision, Decision::Inflight);
    drop(first);
    assert_eq!(h.status(user, "/"), 200);
    drop(second);
}

#[test]
fn the_walk_decides_on_the_path_the_upstream_will_see() {
    let h = Harness::new();
    let user = "198.51.100.20";
    // `/%6Cogin` is `/login` to the upstream: the login zone counts it.
    assert_eq!(h.status(user, "/login"), 200);
    assert_eq!(h.status(user, "/%6Cogin"), 200);
    assert_eq!(h.status(user, "//login"), 429);
    assert_eq!(h.status(user, "/x/../login"), 429);
    // A path climbing above the root is refused as malformed.
    let (step, walk) = h.send("198.51.100.21", "/../../etc/passwd");
    assert!(matches!(step, Step::Refuse(_)), "{step:?}");
    assert!(
        matches!(walk.decision, Decision::Malformed | Decision::Probe),
        "{:?}",
        walk.decision
    );
}

/// A route with a zone shared by the cluster: the walk asks before the caps, and the
/// cluster's refusal is answered, counted and an offense exactly as a local zone's.
#[test]
fn a_shared_zone_asks_the_cluster_and_its_refusal_is_a_local_refusal() {
    let h = Harness::new();
    let user = "198.51.100.9";
    let mut walk = Walk::default();
    let check = match h.gate.begin(&get(user, "/shared"), &mut walk, &h.seen) {
        Walked::AskCluster(check) => check,
        other => panic!("expected a question for the cluster, got {other:?}"),
    };
    assert_eq!(
        check.zones.as_slice(),
        &[2],
        "only the shared zone is asked"
    );
    assert!(
        walk.inflight.is_empty(),
        "no cap is held while the cluster is asked"
    );
    assert!(h.seen.take().is_empty(), "nothing told before the answer");
    // The other gateways spent the burst: the cluster refuses, retry in 1.5 s.
    let refused = Limit::Reject {
        zone: 0,
        retry_after_ms: 1500,
    };
    let step = h
        .gate
        .after_shared(&mut walk, &check, Some(refused), &h.seen);
    assert_eq!(
        step,
        Step::Refuse(Answer::Status {
            status: 429,
            retry_after: Some(2),
            close: false
        })
    );
    assert_eq!(walk.decision, Decision::RateLimited);
    assert!(walk.inflight.is_empty());
    assert_eq!(
        h.seen.take(),
        vec![
            format!("rate_limit {user} cluster rejected"),
            format!("offense {user} rate_limit 1"),
        ]
    );

    // The cluster asks for a delay longer than the local zones': the longer one holds, and
    // the request holds its concurrency slot like any forwarded one.
    let mut walk = Walk::default();
    let Walked::AskCluster(check) = h.gate.begin(&get(user, "/shared"), &mut walk, &h.seen) else {
        panic!("expected a question for the cluster");
    };
    let step = h
        .gate
        .after_shared(&mut walk, &check, Some(Limit::Delay { ms: 700 }), &h.seen);
    assert_eq!(step, Step::Forward { delay_ms: 700 });
    assert_eq!(walk.decision, Decision::Delayed);
    assert_eq!(walk.inflight.len(), 1);
    assert_eq!(
        h.seen.take(),
        vec![
            format!("rate_limit {user} slow delayed"),
            format!("rate_limit {user} cluster delayed"),
        ]
    );
}

/// No answer from the cluster (Redis slow or down): this gateway's own count of the shared
/// zone decides, as if the zone were local (fail open, never wider than one gateway).
#[test]
fn a_shared_zone_without_an_answer_falls_back_to_the_local_count() {
    let h = Harness::new();
    let user = "198.51.100.10";
    let mut passed = 0;
    // Four, not more: each refusal is an offense, and the third would ban the client.
    for _ in 0..4 {
        let mut walk = Walk::default();
        let step = match h.gate.begin(&get(user, "/shared"), &mut walk, &h.seen) {
            Walked::AskCluster(check) => h.gate.after_shared(&mut walk, &check, None, &h.seen),
            Walked::Decided(step) => step,
        };
        if let Step::Forward { .. } = step {
            passed += 1;
        }
    }
    // 1r/s with a burst of 2 on this gateway alone: three pass, the rest are refused locally
    // without asking the cluster at all.
    assert_eq!(passed, 3);
    let mut walk = Walk::default();
    assert!(matches!(
        h.gate.begin(&get(user, "/shared"), &mut walk, &h.seen),
        Walked::Decided(Step::Refuse(Answer::Status { status: 429, .. }))
    ));
    let told = h.seen.take();
    assert!(
        told.contains(&format!("rate_limit {user} cluster rejected")),
        "{told:?}"
    );
    // A second later the local count has drained one request.
    h.advance(SECOND);
    let mut walk = Walk::default();
    assert!(matches!(
        h.gate.begin(&get(user, "/shared"), &mut walk, &h.seen),
        Walked::AskCluster(_)
    ));
}
