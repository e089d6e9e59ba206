//! The whole walk of one request through `Gate::decide`: ban check, header size, Host, path
//! normalization, probes, route, body size, one rate-limit zone and the caps; with an observer
//! that counts nothing, so what is measured is the decision itself.
//!
//! Run: `cargo bench -p portcullis-gate --bench walk`

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_gate::settings::{
    HeaderLimits, InflightSettings, ProbesSettings, Refusal, ReputationConfig, RouteSettings,
    ZoneConfig,
};
use portcullis_gate::{Gate, GateSettings, HeaderSize, RequestFacts, Unobserved, Walk};
use portcullis_policy::client::{ClientHeader, ClientIdentity};
use portcullis_policy::limiter::{Delay, Rate, ZoneSettings};
use portcullis_policy::probes::{ProbeMatcher, ProbeSettings};
use portcullis_policy::reputation::{OffenseWeights, Reputation, ReputationSettings};
use portcullis_policy::time::SystemClock;

fn gate() -> Gate {
    let route = |path: &str, zones: Vec<usize>| RouteSettings {
        name: path.into(),
        host: None,
        path: path.into(),
        upstream: 0,
        zones,
        max_body: Some(1 << 20),
        websocket: false,
    };
    let engine = ReputationSettings::default();
    let settings = GateSettings {
        client_ip: ClientIdentity::new(vec![], ClientHeader::XForwardedFor, 64),
        routes: vec![route("/", vec![]), route("/api", vec![0])],
        zones: vec![ZoneConfig {
            engine: ZoneSettings {
                name: "per_ip".into(),
                // Never refusing (a refusal is an offense, and offenses ban): the bench measures
                // the walk of a request that passes every filter.
                rate: Rate::parse("1000000r/s").expect("rate"),
                burst: 1_000_000_000,
                delay: Delay::NoDelay,
                max_clients: 100_000,
            },
            status: 429,
            dry_run: false,
            shared: false,
        }],
        probes: Some(ProbesSettings {
            matcher: Arc::new(ProbeMatcher::new(&ProbeSettings::default()).expect("probes")),
            action: Refusal::Status(404),
            dry_run: false,
        }),
        api: None,
        reputation: Some(ReputationConfig {
            engine: engine.clone(),
            offense_status: vec![],
            ban_action: Refusal::Status(403),
            weights: OffenseWeights {
                probe: 0,
                ..OffenseWeights::default()
            },
        }),
        inflight: InflightSettings {
            per_client: 100,
            total: 10_000,
            status: 503,
        },
        header: HeaderLimits::default(),
    };
    let reputation = Arc::new(Reputation::new(engine));
    Gate::new(settings, reputation, Arc::new(SystemClock), None)
}

fn request(path: &str) -> RequestFacts<'_> {
    let client: IpAddr = "203.0.113.9".parse().expect("address");
    RequestFacts {
        peer: client,
        client,
        host: Some("api.example.com"),
        method: "GET",
        path,
        raw_path: path.as_bytes(),
        user_agent: Some(b"python-requests/2.31"),
        declared_body: 0,
        upgrade: false,
        header: HeaderSize::of(40, [(4, 15), (10, 20), (6, 3)].into_iter()),
    }
}

fn walk(c: &mut Criterion) {
    let gate = gate();
    let mut group = c.benchmark_group("gate_decide");
    for (name, path) in [
        ("api_request_one_zone", "/api/v1/users/42/orders"),
        ("encoded_api_request", "/api/v1/%75sers/42/../42/orders"),
        ("probe_refused", "/wp-login.php"),
        ("no_zone", "/healthz"),
    ] {
        let req = request(path);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut walk = Walk::default();
                black_box(gate.decide(black_box(&req), &mut walk, &Unobserved))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = walk
}
criterion_main!(benches);
