//! Bans made elsewhere (another gateway of a cluster): applied with their own expiry and
//! count, idempotent, and escalation going on from the cluster-wide count.

use portcullis_policy::reputation::{
    BanInfo, BanOrigin, Event, Increment, OffenseKind, Reputation, ReputationSettings, Verdict,
};

mod common;
use common::{ip, net, MIN, T0};

fn settings() -> ReputationSettings {
    ReputationSettings {
        maxretry: 3,
        findtime_ms: 10 * MIN,
        bantime_ms: 10 * MIN,
        increment: Some(Increment {
            factor: 2.0,
            multipliers: vec![],
            maxtime_ms: 0,
            rndtime_ms: 0,
        }),
        ..ReputationSettings::default()
    }
}

fn remote(net_text: &str, ban_count: u32, until_ms: u64) -> BanInfo {
    BanInfo {
        net: net(net_text),
        origin: BanOrigin::Automatic,
        reason: "score 3 reached maxretry 3 on the cluster".into(),
        trigger: Some(OffenseKind::Probe),
        score: 3,
        ban_count,
        created_ms: T0,
        until_ms,
    }
}

#[test]
fn a_remote_ban_is_enforced_with_its_own_expiry_and_reason() {
    let rep = Reputation::new(settings());
    let ban = remote("198.51.100.7/32", 2, T0 + 20 * MIN);
    let event = rep.apply_remote(&ban, T0).unwrap().expect("a new ban");
    assert!(matches!(&event, Event::Banned { ban: b, .. } if *b == ban));
    match rep.check(ip("198.51.100.7"), T0 + 19 * MIN) {
        Verdict::Banned { until_ms, reason } => {
            assert_eq!(until_ms, T0 + 20 * MIN);
            assert_eq!(&*reason, ban.reason.as_str());
        }
        other => panic!("expected a ban, got {other:?}"),
    }
    assert_eq!(rep.check(ip("198.51.100.7"), T0 + 20 * MIN), Verdict::Allow);
    // Counted where it was made, not here.
    assert!(rep.stats().bans_by_reason.iter().all(|(_, n)| *n == 0));
    assert_eq!(rep.stats().active_bans, 1);
}

#[test]
fn the_same_ban_twice_changes_nothing_and_a_longer_one_replaces_it() {
    let rep = Reputation::new(settings());
    let ban = remote("198.51.100.8/32", 1, T0 + 10 * MIN);
    assert!(rep.apply_remote(&ban, T0).unwrap().is_some());
    assert_eq!(rep.apply_remote(&ban, T0).unwrap(), None, "echo ignored");
    let shorter = remote("198.51.100.8/32", 1, T0 + 5 * MIN);
    assert_eq!(rep.apply_remote(&shorter, T0).unwrap(), None);
    let longer = remote("198.51.100.8/32", 2, T0 + 30 * MIN);
    assert!(rep.apply_remote(&longer, T0).unwrap().is_some());
    assert_eq!(rep.bans(T0)[0].until_ms, T0 + 30 * MIN);
    assert_eq!(rep.stats().active_bans, 1);
}

#[test]
fn escalation_goes_on_from_the_cluster_wide_ban_count() {
    let rep = Reputation::new(settings());
    let c = ip("198.51.100.9");
    // Tracked here first (one offense), then banned elsewhere for the third time.
    assert_eq!(rep.offense(c, OffenseKind::Probe, 1, T0), None);
    let ban = remote("198.51.100.9/32", 3, T0 + 40 * MIN);
    rep.apply_remote(&ban, T0).unwrap();
    assert_eq!(rep.history(c, T0).unwrap().ban_count, 3);
    // After it ends, the next local ban is the fourth: 10m * 2^3.
    let later = T0 + 41 * MIN;
    rep.expire(later);
    for i in 0..2 {
        assert_eq!(rep.offense(c, OffenseKind::Probe, 1, later + i), None);
    }
    match rep.offense(c, OffenseKind::Probe, 1, later + 2) {
        Some(Event::Banned { ban, .. }) => {
            assert_eq!(ban.ban_count, 4);
            assert_eq!(ban.until_ms - (later + 2), 80 * MIN);
        }
        other => panic!("expected the fourth ban, got {other:?}"),
    }
}

#[test]
fn an_untracked_client_keeps_the_remote_count_in_its_ban() {
    let rep = Reputation::new(settings());
    let c = ip("198.51.100.10");
    rep.apply_remote(&remote("198.51.100.10/32", 2, T0 + 20 * MIN), T0)
        .unwrap();
    let later = T0 + 21 * MIN;
    for i in 0..2 {
        assert_eq!(rep.offense(c, OffenseKind::Probe, 1, later + i), None);
    }
    match rep.offense(c, OffenseKind::Probe, 1, later + 2) {
        Some(Event::Banned { ban, .. }) => assert_eq!(ban.ban_count, 3),
        other => panic!("expected the third ban, got {other:?}"),
    }
}

#[test]
fn remote_cidr_bans_expired_bans_and_ignoreip() {
    let rep = Reputation::new(ReputationSettings {
        ignoreip: vec![net("192.0.2.0/24")],
        ..settings()
    });
    let cidr = BanInfo {
        origin: BanOrigin::Manual,
        trigger: None,
        ..remote("203.0.113.0/24", 0, T0 + MIN)
    };
    assert!(rep.apply_remote(&cidr, T0).unwrap().is_some());
    assert!(matches!(
        rep.check(ip("203.0.113.99"), T0),
        Verdict::Banned { .. }
    ));
    assert_eq!(rep.apply_remote(&cidr, T0).unwrap(), None);
    assert_eq!(
        rep.apply_remote(&remote("198.51.100.11/32", 1, T0), T0)
            .unwrap(),
        None,
        "already expired"
    );
    assert!(rep
        .apply_remote(&remote("192.0.2.1/32", 1, T0 + MIN), T0)
        .is_err());
}

#[test]
fn counted_key_skips_ignored_and_banned_clients() {
    let rep = Reputation::new(ReputationSettings {
        ignoreip: vec![net("192.0.2.0/24")],
        ..settings()
    });
    assert_eq!(rep.counted_key(ip("192.0.2.1"), T0), None);
    assert_eq!(
        rep.counted_key(ip("198.51.100.12"), T0),
        Some(ip("198.51.100.12"))
    );
    rep.apply_remote(&remote("198.51.100.12/32", 1, T0 + MIN), T0)
        .unwrap();
    assert_eq!(rep.counted_key(ip("198.51.100.12"), T0), None);
    assert_eq!(
        rep.counted_key(ip("2001:db8::1"), T0),
        Some(ip("2001:db8::")),
        "IPv6 keyed by its /64"
    );
}
