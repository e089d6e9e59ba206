//! Cost of the reputation engine on the request path.
//!
//! `check` runs first on every request, so it is measured for a client that is not banned
//! against a loaded table: 100k offenders, 10k exact bans, 100 CIDR bans, a few deny and
//! ignoreip networks. `offense` is measured for an existing offender below the threshold.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ipnet::IpNet;
use portcullis_policy::reputation::{OffenseKind, Reputation, ReputationSettings};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const T0: u64 = 1_700_000_000_000;

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// A table with 100k offenders (below threshold), 10k exact bans and 100 CIDR bans.
fn loaded() -> Reputation {
    let settings = ReputationSettings {
        maxretry: 1000,
        max_offenders: 100_000,
        ignoreip: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        deny: vec!["192.0.2.0/24".parse().unwrap()],
        ..ReputationSettings::default()
    };
    let rep = Reputation::new(settings);
    for i in 0..100_000u32 {
        rep.offense(v4(0x0a00_0000 + i), OffenseKind::UpstreamStatus, 1, T0);
    }
    for i in 0..10_000u32 {
        let net = IpNet::new(v4(0x0b00_0000 + i * 7), 32).unwrap();
        rep.ban(net, 3_600_000, "bench", T0).unwrap();
    }
    for i in 0..100u32 {
        // Mixed prefix lengths spread over 172.16.0.0/12 and beyond.
        let prefix = 16 + (i % 9) as u8;
        let net = IpNet::new(v4(0xac10_0000 + (i << 16)), prefix)
            .unwrap()
            .trunc();
        rep.ban(net, 3_600_000, "bench", T0).unwrap();
    }
    assert_eq!(rep.stats().offenders, 100_000);
    rep
}

fn bench(c: &mut Criterion) {
    let rep = loaded();
    let now = T0 + 1000;
    let mut group = c.benchmark_group("reputation");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));

    let mut i = 0u32;
    group.bench_function("check_not_banned_known_offender", |b| {
        b.iter(|| {
            i = (i + 1) % 100_000;
            black_box(rep.check(black_box(v4(0x0a00_0000 + i)), now))
        })
    });
    let mut j = 0u32;
    group.bench_function("check_not_banned_unknown_client", |b| {
        b.iter(|| {
            j = j.wrapping_add(0x9e37_79b9);
            black_box(rep.check(black_box(v4(0x5000_0000 | (j >> 4))), now))
        })
    });
    let mut k = 0u32;
    group.bench_function("check_banned_exact", |b| {
        b.iter(|| {
            k = (k + 1) % 10_000;
            black_box(rep.check(black_box(v4(0x0b00_0000 + k * 7)), now))
        })
    });
    let mut m = 0u32;
    group.bench_function("offense_existing_offender", |b| {
        b.iter(|| {
            m = (m + 1) % 100_000;
            black_box(rep.offense(
                black_box(v4(0x0a00_0000 + m)),
                OffenseKind::RateLimit,
                1,
                now,
            ))
        })
    });
    group.finish();

    // New clients arriving into a full table: pays for batch eviction.
    let mut group = c.benchmark_group("reputation_flood");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    let flood = loaded();
    let mut n = 0u32;
    group.bench_function("offense_new_client_full_table", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            black_box(flood.offense(black_box(v4(0x6000_0000 + n)), OffenseKind::Probe, 1, now))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
