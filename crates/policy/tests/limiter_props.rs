//! Property tests for the rate limiter: nginx's rate bound holds for any schedule, and the
//! sharded [`Zone`] agrees decision for decision with the reference model.

use portcullis_policy::limiter::{
    check_all, simulate, simulate_zones, Decision, Delay, Rate, Zone, ZoneSettings,
};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const T0: u64 = 1_700_000_000_000;

fn rate() -> impl Strategy<Value = Rate> {
    prop_oneof![
        (1u64..=50).prop_map(Rate::per_second),
        (1u64..=600).prop_map(Rate::per_minute),
        (1u64..=20_000).prop_map(Rate::from_milli_per_sec),
    ]
}

fn delay() -> impl Strategy<Value = Delay> {
    prop_oneof![Just(Delay::NoDelay), (0u64..=12).prop_map(Delay::After)]
}

fn settings() -> impl Strategy<Value = ZoneSettings> {
    (rate(), 0u64..=10, delay()).prop_map(|(rate, burst, delay)| ZoneSettings {
        name: "prop".into(),
        rate,
        burst,
        delay,
        max_clients: 1000,
    })
}

/// Sorted request times: mostly short gaps, with bursts in the same millisecond.
fn schedule() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(
        prop_oneof![Just(0u64), 0u64..50, 0u64..2_000, 0u64..120_000],
        1..150,
    )
    .prop_map(|gaps| {
        gaps.iter()
            .scan(T0, |now, gap| {
                *now += gap;
                Some(*now)
            })
            .collect()
    })
}

/// Times that may also step backwards, to compare clock-step handling.
fn unsorted_schedule() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(-90_000i64..90_000, 1..100).prop_map(|steps| {
        steps
            .iter()
            .scan(T0, |now, step| {
                *now = now.saturating_add_signed(*step);
                Some(*now)
            })
            .collect()
    })
}

fn client(n: u8) -> IpAddr {
    if n.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, u16::from(n), 0, 0, 0, 0, 0))
    }
}

proptest! {
    /// In any window [t0, t0 + T], at most rate*T + burst + 1 requests are let through.
    #[test]
    fn accepted_requests_respect_rate_plus_burst(s in settings(), times in schedule()) {
        let zone = Zone::new(s.clone());
        let accepted: Vec<u64> = times
            .iter()
            .filter(|&&now| !zone.check(client(1), now).is_reject())
            .copied()
            .collect();
        let rate = u128::from(s.rate.milli_per_sec());
        for (i, &start) in accepted.iter().enumerate() {
            for (j, &end) in accepted.iter().enumerate().skip(i) {
                let count = (j - i + 1) as u128;
                let window = u128::from(end - start);
                // count <= rate[milli/s] * window[ms] / 1e6 + burst + 1, kept in integers.
                prop_assert!(
                    count * 1_000_000 <= rate * window + (u128::from(s.burst) + 1) * 1_000_000,
                    "{count} accepted in {window} ms at {rate} milli-r/s, burst {}", s.burst
                );
            }
        }
    }

    /// The zone decides exactly like the reference model, clock steps included.
    #[test]
    fn zone_matches_model(s in settings(), times in prop_oneof![schedule(), unsorted_schedule()]) {
        let zone = Zone::new(s.clone());
        let real: Vec<Decision> = times.iter().map(|&now| zone.check(client(3), now)).collect();
        prop_assert_eq!(real, simulate(&s, &times));
    }

    /// Several zones on one request agree with the model of nginx's lookup/account passes.
    #[test]
    fn zones_match_model(all in prop::collection::vec(settings(), 1..4), times in schedule()) {
        let zones: Vec<Zone> = all.iter().cloned().map(Zone::new).collect();
        let refs: Vec<&Zone> = zones.iter().collect();
        let real: Vec<Decision> =
            times.iter().map(|&now| check_all(&refs, client(4), now)).collect();
        prop_assert_eq!(real, simulate_zones(&all, &times));
    }

    /// Interleaved clients do not affect each other: each sees its own model's decisions.
    #[test]
    fn clients_are_independent(
        s in settings(),
        requests in prop::collection::vec((0u8..12, 0u64..400), 1..300),
    ) {
        let zone = Zone::new(s.clone());
        let mut now = T0;
        let mut per_client: Vec<(Vec<u64>, Vec<Decision>)> = vec![Default::default(); 12];
        for (who, gap) in requests {
            now += gap;
            let decision = zone.check(client(who), now);
            per_client[usize::from(who)].0.push(now);
            per_client[usize::from(who)].1.push(decision);
        }
        for (times, decisions) in per_client {
            prop_assert_eq!(decisions, simulate(&s, &times));
        }
    }
}
