//! Properties of the reputation engine checked against a naive model.

use portcullis_policy::reputation::{OffenseKind, Reputation, ReputationSettings, Verdict};
use proptest::prelude::*;
use std::net::IpAddr;
use std::sync::Arc;

const T0: u64 = 1_700_000_000_000;

proptest! {
    /// With `maxretry <= 32` the bounded window decides exactly like keeping every offense.
    #[test]
    fn bounded_window_bans_exactly_like_the_unbounded_model(
        maxretry in 1u32..=32,
        findtime in 1u64..=1000,
        bantime in 1u64..=500,
        steps in proptest::collection::vec((0u64..=300, 1u32..=3), 1..200),
    ) {
        let rep = Reputation::new(ReputationSettings {
            maxretry,
            findtime_ms: findtime,
            bantime_ms: bantime,
            increment: None,
            ..ReputationSettings::default()
        });
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let mut now = T0;
        let mut model: Vec<(u64, u32)> = Vec::new();
        let mut banned_until = 0u64;
        for (gap, weight) in steps {
            now += gap;
            let expect_ban = if now < banned_until {
                false
            } else {
                model.push((now, weight));
                let score: u32 = model
                    .iter()
                    .filter(|(at, _)| at + findtime > now)
                    .map(|(_, w)| w)
                    .sum();
                if score >= maxretry {
                    model.clear();
                    banned_until = now + bantime;
                    true
                } else {
                    false
                }
            };
            let got = rep.offense(client, OffenseKind::Probe, weight, now).is_some();
            prop_assert_eq!(got, expect_ban, "at {}", now - T0);
            let is_banned = matches!(rep.check(client, now), Verdict::Banned { .. });
            prop_assert_eq!(is_banned, now < banned_until);
        }
    }
}

#[test]
fn concurrent_offenses_keep_counts_consistent() {
    let rep = Arc::new(Reputation::new(ReputationSettings {
        maxretry: 3,
        max_offenders: 2_000,
        increment: None,
        ..ReputationSettings::default()
    }));
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let rep = Arc::clone(&rep);
            std::thread::spawn(move || {
                let mut bans = 0;
                for i in 0..20_000u32 {
                    let client = IpAddr::from((0x0a00_0000 + (i * 7 + t) % 5_000).to_be_bytes());
                    if rep
                        .offense(client, OffenseKind::RateLimit, 1, T0 + u64::from(i))
                        .is_some()
                    {
                        bans += 1;
                    }
                    let _ = rep.check(client, T0 + u64::from(i));
                }
                bans
            })
        })
        .collect();
    let bans: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let stats = rep.stats();
    assert!(stats.offenders <= 2_000);
    assert_eq!(stats.active_bans, bans);
    assert_eq!(rep.bans(T0).len() as u64, bans);
    assert_eq!(stats.bans_by_reason[1], ("rate_limit", bans));
}

proptest! {
    /// Issue "HTTP hardening" item 4: the offender table never grows past `max_offenders` and
    /// never refuses a new offender, however many of its slots hold bans; every ban made is
    /// enforced until it ends.
    #[test]
    fn a_full_offender_table_evicts_and_never_blinds_the_engine(
        max_offenders in 1usize..=24,
        maxretry in 1u32..=4,
        steps in proptest::collection::vec((0u32..64, 1u32..=4, 0u64..=2_000, any::<bool>()), 1..400),
    ) {
        let rep = Reputation::new(ReputationSettings {
            maxretry,
            findtime_ms: 10_000,
            bantime_ms: 5_000,
            max_offenders,
            ..ReputationSettings::default()
        });
        let mut now = T0;
        let mut banned_until: std::collections::HashMap<IpAddr, u64> = Default::default();
        for (client, weight, gap, housekeeping) in steps {
            now += gap;
            if housekeeping {
                rep.expire(now);
            }
            // IPv6 /64 identities, as a scanner rotating through a /47 would use.
            let client = IpAddr::from(std::net::Ipv6Addr::from(
                (0x2001_0db8_0000_0000u128 + u128::from(client)) << 64,
            ));
            let was_banned = matches!(rep.check(client, now), Verdict::Banned { .. });
            prop_assert_eq!(
                was_banned,
                banned_until.get(&client).is_some_and(|&until| now < until)
            );
            let event = rep.offense(client, OffenseKind::Probe, weight, now);
            if !was_banned && weight >= maxretry {
                // One offense worth `maxretry` bans whatever else the table holds.
                prop_assert!(event.is_some(), "offense at {} not acted upon", now - T0);
            }
            if let Some(portcullis_policy::reputation::Event::Banned { ban, .. }) = event {
                banned_until.insert(client, ban.until_ms);
            }
            let stats = rep.stats();
            prop_assert!(stats.offenders <= max_offenders as u64);
            prop_assert_eq!(stats.offenders_untracked, 0);
        }
    }
}
