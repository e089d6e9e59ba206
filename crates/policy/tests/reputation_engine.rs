//! Behaviour of the reputation engine: windows, weights, escalation, lists, capacity.

use portcullis_policy::reputation::{
    ban_duration, BanError, BanOrigin, Event, Increment, OffenseKind, Reputation,
    ReputationSettings, UnbanCause, Verdict,
};
use std::net::IpAddr;

mod common;
use common::{ip, net, MIN, T0};

/// fail2ban-like jail: maxretry 5, findtime 10m, bantime 10m, no escalation.
fn settings() -> ReputationSettings {
    ReputationSettings {
        maxretry: 5,
        findtime_ms: 10 * MIN,
        bantime_ms: 10 * MIN,
        increment: None,
        ..ReputationSettings::default()
    }
}

fn is_banned(rep: &Reputation, client: IpAddr, now: u64) -> bool {
    matches!(rep.check(client, now), Verdict::Banned { .. })
}

#[test]
fn five_offenses_within_findtime_ban_and_the_fifth_returns_the_event() {
    let rep = Reputation::new(settings());
    let c = ip("203.0.113.7");
    for i in 0..4 {
        let now = T0 + i * 2 * MIN;
        assert_eq!(rep.offense(c, OffenseKind::UpstreamStatus, 1, now), None);
        assert_eq!(rep.check(c, now), Verdict::Allow);
    }
    let now = T0 + 10 * MIN - 1;
    let event = rep
        .offense(c, OffenseKind::UpstreamStatus, 1, now)
        .expect("the fifth offense bans");
    match event {
        Event::Banned { ban, .. } => {
            assert_eq!(ban.net, net("203.0.113.7/32"));
            assert_eq!(ban.origin, BanOrigin::Automatic);
            assert_eq!(ban.trigger, Some(OffenseKind::UpstreamStatus));
            assert_eq!(ban.score, 5);
            assert_eq!(ban.ban_count, 1);
            assert_eq!(ban.until_ms, now + 10 * MIN);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(is_banned(&rep, c, now));
    assert_eq!(rep.stats().bans_by_reason[2], ("upstream_status", 1));
}

#[test]
fn five_offenses_spread_over_eleven_minutes_do_not_ban() {
    let rep = Reputation::new(settings());
    let c = ip("203.0.113.8");
    for i in 0..5 {
        // 0, 2m45s, 5m30s, 8m15s, 11m: the first has left the window by the fifth.
        let now = T0 + i * 11 * MIN / 4;
        assert_eq!(rep.offense(c, OffenseKind::UpstreamStatus, 1, now), None);
    }
    assert_eq!(rep.check(c, T0 + 11 * MIN), Verdict::Allow);
    assert_eq!(rep.history(c, T0 + 11 * MIN).unwrap().score, 4);
}

#[test]
fn offense_exactly_findtime_old_has_left_the_window() {
    let rep = Reputation::new(settings());
    let c = ip("203.0.113.9");
    rep.offense(c, OffenseKind::Probe, 4, T0);
    assert_eq!(
        rep.offense(c, OffenseKind::Malformed, 1, T0 + 10 * MIN),
        None
    );
    assert!(rep
        .offense(c, OffenseKind::Malformed, 1, T0 + 10 * MIN - 1)
        .is_none());
    // 4 (at T0, still in the window at T0+10m-1) was expired by the prune at T0+10m, so
    // the score is 2 now.
    assert_eq!(rep.history(c, T0 + 10 * MIN).unwrap().score, 2);
}

#[test]
fn weights_add_up() {
    let rep = Reputation::new(settings());
    let c = ip("198.51.100.1");
    assert!(rep.offense(c, OffenseKind::Probe, 2, T0).is_none());
    assert!(rep.offense(c, OffenseKind::Probe, 2, T0 + 1).is_none());
    let info = rep.history(c, T0 + 2).unwrap();
    assert_eq!(info.score, 4);
    assert_eq!(info.recent.len(), 2);
    assert_eq!(info.recent[0].kind, OffenseKind::Probe);
    let event = rep.offense(c, OffenseKind::RateLimit, 1, T0 + 2);
    assert!(matches!(event, Some(Event::Banned { .. })));
    // A single heavy offense can ban on its own.
    let d = ip("198.51.100.2");
    assert!(rep.offense(d, OffenseKind::Probe, 5, T0).is_some());
    // Zero weight counts in metrics only.
    let e = ip("198.51.100.3");
    for _ in 0..10 {
        assert!(rep.offense(e, OffenseKind::Malformed, 0, T0).is_none());
    }
    assert!(rep.history(e, T0).is_none());
    assert_eq!(rep.stats().offenses_by_kind[3], ("malformed", 10));
}

#[test]
fn bans_expire_and_banned_clients_are_not_counted() {
    let rep = Reputation::new(settings());
    let c = ip("192.0.2.10");
    assert!(rep.offense(c, OffenseKind::Probe, 5, T0).is_some());
    // Offenses while banned do not extend or re-trigger the ban.
    assert!(rep.offense(c, OffenseKind::Probe, 5, T0 + MIN).is_none());
    assert!(is_banned(&rep, c, T0 + 10 * MIN - 1));
    assert_eq!(rep.check(c, T0 + 10 * MIN), Verdict::Allow);
    assert_eq!(rep.bans(T0 + 10 * MIN), vec![]);
    assert_eq!(rep.stats().active_bans, 1, "counted until housekeeping");
    let events = rep.expire(T0 + 10 * MIN);
    assert!(matches!(
        events.as_slice(),
        [Event::Unbanned {
            cause: UnbanCause::Expired,
            ..
        }]
    ));
    let stats = rep.stats();
    assert_eq!(stats.active_bans, 0);
    assert_eq!(stats.expirations, 1);
}

fn escalating(inc: Increment) -> ReputationSettings {
    ReputationSettings {
        maxretry: 1,
        bantime_ms: 10 * MIN,
        increment: Some(inc),
        ..settings()
    }
}

/// Bans `c` over and over, each time right after the previous ban expired; returns durations.
fn ban_series(rep: &Reputation, c: IpAddr, n: usize) -> Vec<u64> {
    let mut now = T0;
    let mut out = Vec::new();
    for _ in 0..n {
        match rep.offense(c, OffenseKind::Probe, 1, now) {
            Some(Event::Banned { ban, .. }) => {
                out.push(ban.until_ms - now);
                now = ban.until_ms;
            }
            other => panic!("expected a ban, got {other:?}"),
        }
    }
    out
}

#[test]
fn escalation_multiplies_by_factor_and_caps_at_maxtime() {
    let rep = Reputation::new(escalating(Increment {
        factor: 2.0,
        multipliers: vec![],
        maxtime_ms: 60 * MIN,
        rndtime_ms: 0,
    }));
    let series = ban_series(&rep, ip("192.0.2.20"), 5);
    assert_eq!(
        series,
        vec![10 * MIN, 20 * MIN, 40 * MIN, 60 * MIN, 60 * MIN]
    );
    assert_eq!(rep.history(ip("192.0.2.20"), T0).unwrap().ban_count, 5);
}

#[test]
fn escalation_with_factor_three() {
    let s = escalating(Increment {
        factor: 3.0,
        multipliers: vec![],
        maxtime_ms: 0,
        rndtime_ms: 0,
    });
    assert_eq!(ban_duration(&s, 1), 10 * MIN);
    assert_eq!(ban_duration(&s, 2), 30 * MIN);
    assert_eq!(ban_duration(&s, 3), 90 * MIN);
}

#[test]
fn escalation_multipliers_list_repeats_its_last_entry() {
    let rep = Reputation::new(escalating(Increment {
        factor: 99.0, // unused when multipliers are given
        multipliers: vec![1.0, 5.0, 12.0],
        maxtime_ms: 0,
        rndtime_ms: 0,
    }));
    let series = ban_series(&rep, ip("192.0.2.21"), 5);
    assert_eq!(
        series,
        vec![10 * MIN, 50 * MIN, 120 * MIN, 120 * MIN, 120 * MIN]
    );
}

#[test]
fn escalation_jitter_stays_within_rndtime() {
    let s = escalating(Increment {
        factor: 2.0,
        multipliers: vec![],
        maxtime_ms: 30 * MIN,
        rndtime_ms: MIN,
    });
    let mut seen_jitter = false;
    for n in 1..200u32 {
        let base = (10 * MIN * 2u64.pow((n - 1).min(20))).min(30 * MIN);
        let d = ban_duration(&s, n);
        assert!(d >= base && d <= base + MIN, "ban {n}: {d} vs {base}");
        seen_jitter |= d != base;
    }
    assert!(seen_jitter);
}

#[test]
fn history_outlives_the_ban_and_is_forgotten_after_history() {
    let s = ReputationSettings {
        maxretry: 1,
        history_ms: 60 * MIN,
        increment: Some(Increment {
            factor: 2.0,
            multipliers: vec![],
            maxtime_ms: 0,
            rndtime_ms: 0,
        }),
        ..settings()
    };
    let rep = Reputation::new(s);
    let c = ip("192.0.2.30");
    rep.offense(c, OffenseKind::Probe, 1, T0).unwrap();
    let ban_end = T0 + 10 * MIN;
    rep.expire(ban_end);
    let info = rep.history(c, ban_end + 59 * MIN).expect("history kept");
    assert_eq!(info.ban_count, 1);
    assert_eq!(info.current_ban, None);
    // Second ban within history escalates.
    match rep.offense(c, OffenseKind::Probe, 1, ban_end + 59 * MIN) {
        Some(Event::Banned { ban, .. }) => assert_eq!(ban.ban_count, 2),
        other => panic!("{other:?}"),
    }
    let second_end = ban_end + 59 * MIN + 20 * MIN;
    rep.expire(second_end + 60 * MIN - 1);
    assert!(rep.history(c, second_end + 60 * MIN - 1).is_some());
    rep.expire(second_end + 60 * MIN);
    assert!(rep.history(c, second_end + 60 * MIN).is_none());
    assert_eq!(rep.stats().offenders, 0);
    // Forgotten: the next ban starts over.
    match rep.offense(c, OffenseKind::Probe, 1, second_end + 61 * MIN) {
        Some(Event::Banned { ban, .. }) => {
            assert_eq!(ban.ban_count, 1);
            assert_eq!(ban.until_ms - ban.created_ms, 10 * MIN);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ignoreip_is_never_counted_or_banned() {
    let rep = Reputation::new(ReputationSettings {
        ignoreip: vec![net("127.0.0.1/8"), net("::1/128"), net("10.0.0.0/8")],
        ..settings()
    });
    let c = ip("127.0.0.5");
    for i in 0..50 {
        assert!(rep.offense(c, OffenseKind::Probe, 5, T0 + i).is_none());
    }
    assert_eq!(rep.check(c, T0), Verdict::Allow);
    assert!(rep.history(c, T0).is_none());
    assert_eq!(
        rep.ban(net("127.0.0.9/32"), MIN, "x", T0),
        Err(BanError::Ignored(net("127.0.0.9/32")))
    );
    // A wider CIDR ban is accepted but ignored clients inside it stay allowed.
    rep.ban(net("0.0.0.0/0"), MIN, "everyone", T0).unwrap();
    assert_eq!(rep.check(ip("10.1.2.3"), T0), Verdict::Allow);
    assert!(is_banned(&rep, ip("8.8.8.8"), T0));
}

#[test]
fn deny_is_always_denied_even_over_ignoreip() {
    let rep = Reputation::new(ReputationSettings {
        ignoreip: vec![net("10.0.0.0/8")],
        deny: vec![net("10.66.0.0/16"), net("2001:db8:bad::/48")],
        ..settings()
    });
    assert_eq!(rep.check(ip("10.66.1.1"), T0), Verdict::Denied);
    assert_eq!(rep.check(ip("2001:db8:bad:1::"), T0), Verdict::Denied);
    assert_eq!(rep.check(ip("10.67.1.1"), T0), Verdict::Allow);
    assert_eq!(rep.check(ip("2001:db8:bad0::"), T0), Verdict::Allow);
}

#[test]
fn cidr_ban_covers_addresses_inside() {
    let rep = Reputation::new(settings());
    let event = rep
        .ban(net("198.51.100.77/24"), 5 * MIN, "abusive network", T0)
        .unwrap();
    match &event {
        Event::Banned { ban, .. } => {
            assert_eq!(ban.net, net("198.51.100.0/24"), "normalized to the network");
            assert_eq!(ban.origin, BanOrigin::Manual);
        }
        other => panic!("{other:?}"),
    }
    match rep.check(ip("198.51.100.200"), T0 + 1) {
        Verdict::Banned { until_ms, reason } => {
            assert_eq!(until_ms, T0 + 5 * MIN);
            assert_eq!(&*reason, "abusive network");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rep.check(ip("198.51.101.1"), T0 + 1), Verdict::Allow);
    let info = rep.history(ip("198.51.100.3"), T0).unwrap();
    assert_eq!(info.current_ban.unwrap().net, net("198.51.100.0/24"));
    // IPv6 network ban.
    rep.ban(net("2001:db8::/32"), MIN, "v6", T0).unwrap();
    assert!(is_banned(&rep, ip("2001:db8:1:2::"), T0));
    // Expiry applies to CIDR bans too.
    assert_eq!(
        rep.check(ip("198.51.100.200"), T0 + 5 * MIN),
        Verdict::Allow
    );
    assert_eq!(rep.expire(T0 + 5 * MIN).len(), 2);
    assert_eq!(rep.stats().active_bans, 0);
    assert_eq!(rep.stats().bans_by_reason.last(), Some(&("manual", 2)));
}

#[test]
fn ipv6_bans_use_the_client_prefix() {
    let rep = Reputation::new(settings());
    // An admin names one address; the client key is its /64.
    let event = rep
        .ban(net("2001:db8:1:2::abcd/128"), MIN, "one host", T0)
        .unwrap();
    assert!(matches!(&event, Event::Banned { ban, .. } if ban.net == net("2001:db8:1:2::/64")));
    assert!(is_banned(&rep, ip("2001:db8:1:2::"), T0));
    assert!(rep.unban(net("2001:db8:1:2::/64"), T0).is_some());
    assert_eq!(rep.check(ip("2001:db8:1:2::"), T0), Verdict::Allow);
}

#[test]
fn unban_restores_access_and_clears_the_window() {
    let rep = Reputation::new(settings());
    let c = ip("192.0.2.40");
    for i in 0..5 {
        rep.offense(c, OffenseKind::RateLimit, 1, T0 + i);
    }
    assert!(is_banned(&rep, c, T0 + 5));
    let event = rep.unban(net("192.0.2.40/32"), T0 + 6).unwrap();
    assert!(matches!(
        event,
        Event::Unbanned { cause: UnbanCause::Admin, at_ms, .. } if at_ms == T0 + 6
    ));
    assert_eq!(rep.check(c, T0 + 6), Verdict::Allow);
    // Not instantly re-banned: the window starts from zero.
    for i in 0..4 {
        assert!(rep
            .offense(c, OffenseKind::RateLimit, 1, T0 + 10 + i)
            .is_none());
    }
    let info = rep.history(c, T0 + 20).unwrap();
    assert_eq!(info.score, 4);
    assert_eq!(info.ban_count, 1, "history survives the unban");
    assert!(rep.unban(net("192.0.2.99/32"), T0).is_none());
    // CIDR unban.
    rep.ban(net("10.9.0.0/16"), MIN, "net", T0).unwrap();
    assert!(rep.unban(net("10.9.0.0/16"), T0).is_some());
    assert_eq!(rep.check(ip("10.9.1.1"), T0), Verdict::Allow);
    assert_eq!(rep.stats().unbans, 2);
}

#[test]
fn admin_ban_lists_and_replaces() {
    let rep = Reputation::new(settings());
    assert_eq!(
        rep.ban(net("192.0.2.50/32"), 0, "x", T0),
        Err(BanError::ZeroDuration)
    );
    rep.ban(net("192.0.2.50/32"), MIN, "first", T0).unwrap();
    rep.ban(net("192.0.2.50/32"), 2 * MIN, "second", T0 + 1)
        .unwrap();
    rep.ban(net("192.0.2.0/28"), 3 * MIN, "range", T0 + 2)
        .unwrap();
    let bans = rep.bans(T0 + 3);
    assert_eq!(bans.len(), 2);
    assert_eq!(bans[0].reason, "second");
    assert_eq!(bans[0].until_ms, T0 + 1 + 2 * MIN);
    assert_eq!(bans[1].net, net("192.0.2.0/28"));
    assert_eq!(rep.stats().active_bans, 2);
}

#[test]
fn max_bans_refuses_new_bans_and_keeps_existing_ones() {
    let rep = Reputation::new(ReputationSettings {
        max_bans: 3,
        maxretry: 1,
        ..settings()
    });
    for i in 0..3 {
        rep.ban(net(&format!("192.0.2.{i}/32")), MIN, "x", T0)
            .unwrap();
    }
    assert_eq!(
        rep.ban(net("192.0.2.200/32"), MIN, "x", T0),
        Err(BanError::Capacity(3))
    );
    assert!(rep.ban(net("10.0.0.0/8"), MIN, "x", T0).is_err());
    // Automatic bans are refused too, and counted.
    assert!(rep
        .offense(ip("192.0.2.201"), OffenseKind::Probe, 1, T0)
        .is_none());
    assert_eq!(rep.stats().bans_refused, 3);
    for i in 0..3 {
        assert!(is_banned(&rep, ip(&format!("192.0.2.{i}")), T0));
    }
    // Replacing an existing ban needs no new slot.
    rep.ban(net("192.0.2.1/32"), 5 * MIN, "longer", T0).unwrap();
    // Room frees up once housekeeping drops expired bans; the refused offender is banned on
    // its next offense.
    rep.expire(T0 + MIN);
    assert!(rep
        .offense(ip("192.0.2.201"), OffenseKind::Probe, 1, T0 + MIN)
        .is_some());
}

#[test]
fn flood_of_distinct_offenders_stays_within_capacity_and_keeps_bans() {
    let capacity = 1000;
    let rep = Reputation::new(ReputationSettings {
        max_offenders: capacity,
        ..settings()
    });
    // A few real offenders first: two banned, one with a high score.
    let banned = [ip("192.0.2.1"), ip("192.0.2.2")];
    for c in banned {
        assert!(rep.offense(c, OffenseKind::Probe, 5, T0).is_some());
    }
    let suspect = ip("192.0.2.3");
    rep.offense(suspect, OffenseKind::Probe, 4, T0);
    // Then 10x capacity distinct IPv4 clients, one offense each.
    for i in 0..(10 * capacity as u32) {
        let c = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
        rep.offense(c, OffenseKind::UpstreamStatus, 1, T0 + 1 + u64::from(i));
        assert!(rep.stats().offenders <= capacity as u64);
    }
    let stats = rep.stats();
    assert!(stats.offenders <= capacity as u64);
    assert!(stats.evictions >= 9 * capacity as u64);
    for c in banned {
        assert!(is_banned(&rep, c, T0 + MIN), "active ban evicted");
        assert_eq!(rep.history(c, T0 + MIN).unwrap().ban_count, 1);
    }
    assert_eq!(rep.history(suspect, T0 + MIN).unwrap().score, 4);
    // The oldest low-score offenders went first; the most recent ones are still tracked.
    assert!(rep.history(ip("10.0.0.0"), T0 + MIN).is_none());
    let last = IpAddr::from((0x0a00_0000u32 + 10 * capacity as u32 - 1).to_be_bytes());
    assert!(rep.history(last, T0 + MIN).is_some());
}

#[test]
fn eviction_prefers_lowest_score_then_oldest() {
    let rep = Reputation::new(ReputationSettings {
        max_offenders: 8,
        ..settings()
    });
    // Fill: one score-3 client seen first, then seven score-1 clients.
    rep.offense(ip("192.0.2.100"), OffenseKind::Probe, 3, T0);
    for i in 0..7u64 {
        rep.offense(
            ip(&format!("192.0.2.{i}")),
            OffenseKind::Malformed,
            1,
            T0 + 1 + i,
        );
    }
    // One more client: a batch of 1 (capacity / 8) must go, the oldest score-1 one.
    rep.offense(ip("192.0.2.50"), OffenseKind::Malformed, 1, T0 + 100);
    assert_eq!(rep.stats().offenders, 8);
    assert!(rep.history(ip("192.0.2.100"), T0 + 100).is_some());
    assert!(rep.history(ip("192.0.2.0"), T0 + 100).is_none());
    assert!(rep.history(ip("192.0.2.1"), T0 + 100).is_some());
}

#[test]
fn table_full_of_banned_offenders_evicts_them_for_new_ones() {
    let rep = Reputation::new(ReputationSettings {
        max_offenders: 2,
        maxretry: 1,
        ..settings()
    });
    rep.offense(ip("192.0.2.1"), OffenseKind::Probe, 1, T0)
        .unwrap();
    rep.offense(ip("192.0.2.2"), OffenseKind::Probe, 1, T0)
        .unwrap();
    assert!(rep
        .offense(ip("192.0.2.3"), OffenseKind::Probe, 1, T0)
        .is_some());
    let stats = rep.stats();
    assert_eq!(stats.offenders_untracked, 0);
    assert!(stats.offenders <= 2);
    assert_eq!(stats.active_bans, 3);
    for c in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        assert!(is_banned(&rep, ip(c), T0), "{c}");
    }
}

/// Issue "HTTP hardening" item 4: once every offender slot held a ban, new clients were not
/// tracked and could probe freely.
#[test]
fn offender_table_full_of_bans_still_bans_a_new_offender() {
    let capacity = 64;
    let rep = Reputation::new(ReputationSettings {
        max_offenders: capacity,
        ..settings()
    });
    // IPv6 /64 identities: a /47 holds 2^17 of them, so filling the table costs nothing.
    let banned: Vec<IpAddr> = (0..capacity as u128)
        .map(|i| {
            IpAddr::from(std::net::Ipv6Addr::from(
                (0x2001_0db8_0000_0000u128 + i) << 64,
            ))
        })
        .collect();
    for &c in &banned {
        assert!(rep.offense(c, OffenseKind::Probe, 5, T0).is_some());
    }
    assert_eq!(rep.stats().offenders, capacity as u64);
    let newcomer = ip("203.0.113.50");
    for i in 0..4 {
        assert!(rep
            .offense(newcomer, OffenseKind::UpstreamStatus, 1, T0 + 1 + i)
            .is_none());
        assert!(rep.stats().offenders <= capacity as u64);
    }
    assert!(
        rep.offense(newcomer, OffenseKind::UpstreamStatus, 1, T0 + 5)
            .is_some(),
        "the fifth offense of a new client must ban it"
    );
    assert!(is_banned(&rep, newcomer, T0 + 6));
    let stats = rep.stats();
    assert!(stats.offenders <= capacity as u64);
    assert_eq!(stats.offenders_untracked, 0);
    // Bans live in their own table: evicting the offender records lifted none of them, and
    // their ban counts are still reported.
    for &c in &banned {
        assert!(is_banned(&rep, c, T0 + 6), "{c}");
        assert_eq!(rep.history(c, T0 + 6).expect("banned").ban_count, 1);
    }
}

/// A banned offender evicted from the offender table still escalates on its next ban, both
/// before and after housekeeping has dropped its expired ban.
#[test]
fn escalation_survives_eviction_of_a_banned_offender() {
    let s = ReputationSettings {
        maxretry: 1,
        max_offenders: 8,
        history_ms: 60 * MIN,
        increment: Some(Increment {
            factor: 2.0,
            multipliers: vec![],
            maxtime_ms: 0,
            rndtime_ms: 0,
        }),
        ..settings()
    };
    for housekeeping in [false, true] {
        let rep = Reputation::new(s.clone());
        let a = ip("192.0.2.77");
        assert!(rep.offense(a, OffenseKind::Probe, 1, T0).is_some());
        // Plenty of other banned offenders push `a`'s record out of the offender table.
        for i in 0..64u32 {
            let c = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            assert!(rep.offense(c, OffenseKind::Probe, 1, T0 + 1).is_some());
        }
        assert!(rep.stats().offenders <= 8);
        assert!(rep.stats().evictions > 0);
        assert!(is_banned(&rep, a, T0 + 2));
        let ban_end = T0 + 10 * MIN;
        if housekeeping {
            rep.expire(ban_end);
            assert_eq!(
                rep.history(a, ban_end).expect("history kept").ban_count,
                1,
                "the expired ban leaves its history behind"
            );
        }
        match rep.offense(a, OffenseKind::Probe, 1, ban_end + MIN) {
            Some(Event::Banned { ban, .. }) => {
                assert_eq!(ban.ban_count, 2, "housekeeping {housekeeping}");
                assert_eq!(ban.until_ms - ban.created_ms, 20 * MIN);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// An administrator lifting the ban of an evicted offender keeps its ban count, as when the
/// offender is still tracked.
#[test]
fn unban_of_an_evicted_offender_keeps_its_history() {
    let rep = Reputation::new(ReputationSettings {
        maxretry: 1,
        max_offenders: 8,
        ..settings()
    });
    let a = ip("192.0.2.78");
    rep.offense(a, OffenseKind::Probe, 1, T0).unwrap();
    for i in 0..64u32 {
        let c = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
        rep.offense(c, OffenseKind::Probe, 1, T0 + 1).unwrap();
    }
    rep.unban(net("192.0.2.78/32"), T0 + 2).unwrap();
    let info = rep.history(a, T0 + 3).expect("history kept");
    assert_eq!(info.ban_count, 1);
    assert_eq!(info.last_ban_end_ms, T0 + 2);
    assert!(rep.stats().offenders <= 8);
}

#[test]
fn reconfigure_keeps_bans_and_applies_new_lists() {
    let rep = Reputation::new(settings());
    rep.offense(ip("192.0.2.1"), OffenseKind::Probe, 5, T0)
        .unwrap();
    rep.reconfigure(ReputationSettings {
        maxretry: 2,
        deny: vec![net("192.0.2.128/25")],
        ..settings()
    });
    assert!(is_banned(&rep, ip("192.0.2.1"), T0));
    assert_eq!(rep.check(ip("192.0.2.200"), T0), Verdict::Denied);
    assert!(rep
        .offense(ip("192.0.2.9"), OffenseKind::Probe, 2, T0)
        .is_some());
    assert_eq!(rep.settings().maxretry, 2);
}

#[test]
fn events_serialize_as_json_with_network_strings() {
    let rep = Reputation::new(settings());
    let event = rep.ban(net("10.0.0.0/8"), MIN, "why", T0).unwrap();
    let json = serde_json::to_string(&event).unwrap();
    assert!(json.contains("\"event\":\"banned\""), "{json}");
    assert!(json.contains("\"net\":\"10.0.0.0/8\""), "{json}");
    let back: Event = serde_json::from_str(&json).unwrap();
    assert_eq!(back, event);
    let info = serde_json::to_value(rep.history(ip("10.1.1.1"), T0).unwrap()).unwrap();
    assert_eq!(info["current_ban"]["origin"], "manual");
}

#[test]
fn engine_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Reputation>();
}

/// Issue "HTTP hardening" item 8: `deny`/`ignoreip` entries narrower than `ipv6_prefix` never
/// matched, because the engine only saw the client's /64 key. The engine now takes the
/// client's address and aggregates it itself.
#[test]
fn ipv6_ignoreip_narrower_than_the_prefix_protects_the_address_it_names() {
    // The shipped default `ignoreip`.
    let rep = Reputation::new(ReputationSettings {
        ignoreip: vec![net("127.0.0.0/8"), net("::1/128")],
        ..settings()
    });
    // `::1` itself is never counted...
    for i in 0..20 {
        assert!(rep
            .offense(ip("::1"), OffenseKind::Probe, 5, T0 + i)
            .is_none());
    }
    assert!(rep.history(ip("::1"), T0 + 20).is_none());
    // ...and stays served when a neighbour of its /64 gets the shared identity banned.
    assert!(rep
        .offense(ip("::2"), OffenseKind::Probe, 5, T0 + 30)
        .is_some());
    assert_eq!(rep.check(ip("::1"), T0 + 31), Verdict::Allow);
    assert!(is_banned(&rep, ip("::2"), T0 + 31));
    assert!(
        is_banned(&rep, ip("::3"), T0 + 31),
        "the /64 is one identity"
    );
    // The key itself (what callers used to pass) is still understood.
    assert!(is_banned(&rep, ip("::"), T0 + 31));
    assert_eq!(rep.history(ip("::2"), T0 + 31).unwrap().client, ip("::"));
    // An admin ban of the named address is refused; one of its /64 is not, and spares it.
    assert_eq!(
        rep.ban(net("::1/128"), MIN, "x", T0),
        Err(BanError::Ignored(net("::1/128")))
    );
    rep.ban(net("::/64"), MIN, "x", T0 + 40).unwrap();
    assert_eq!(rep.check(ip("::1"), T0 + 41), Verdict::Allow);
}

#[test]
fn ipv6_deny_narrower_than_the_prefix_refuses_exactly_that_address() {
    let rep = Reputation::new(ReputationSettings {
        deny: vec![net("::1/128"), net("2001:db8::5/128")],
        ..settings()
    });
    assert_eq!(rep.check(ip("::1"), T0), Verdict::Denied);
    assert_eq!(rep.check(ip("2001:db8::5"), T0), Verdict::Denied);
    // `deny` is an address list: the rest of the /64 is served...
    assert_eq!(rep.check(ip("2001:db8::6"), T0), Verdict::Allow);
    assert_eq!(rep.check(ip("::2"), T0), Verdict::Allow);
    // ...but shares one identity for bans.
    rep.ban(net("2001:db8::7/128"), MIN, "x", T0).unwrap();
    assert!(is_banned(&rep, ip("2001:db8::6"), T0));
    assert_eq!(rep.check(ip("2001:db8::5"), T0), Verdict::Denied);
    assert!(is_banned(&rep, ip("2001:db8:0:0:ffff::1"), T0));
    assert_eq!(rep.check(ip("2001:db8:0:1::6"), T0), Verdict::Allow);
}

#[test]
fn offenses_from_addresses_of_one_prefix_add_up_to_one_identity() {
    let rep = Reputation::new(ReputationSettings {
        ipv6_prefix: 56,
        ..settings()
    });
    for i in 0..4u16 {
        let c = IpAddr::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, i, 0, 0, 0, 1));
        assert!(rep.offense(c, OffenseKind::RateLimit, 1, T0).is_none());
    }
    match rep.offense(ip("2001:db8:0:ff::9"), OffenseKind::RateLimit, 1, T0) {
        Some(Event::Banned { ban, .. }) => assert_eq!(ban.net, net("2001:db8::/56")),
        other => panic!("{other:?}"),
    }
    assert!(is_banned(&rep, ip("2001:db8:0:42::1"), T0));
    assert_eq!(rep.check(ip("2001:db8:0:100::1"), T0), Verdict::Allow);
    assert_eq!(rep.stats().offenders, 1);
}

#[test]
fn ipv4_mapped_addresses_are_their_ipv4_client() {
    let rep = Reputation::new(ReputationSettings {
        maxretry: 1,
        deny: vec![net("198.51.100.9/32")],
        ..settings()
    });
    rep.offense(ip("::ffff:192.0.2.1"), OffenseKind::Probe, 1, T0)
        .unwrap();
    assert!(is_banned(&rep, ip("192.0.2.1"), T0));
    assert!(is_banned(&rep, ip("::ffff:192.0.2.1"), T0));
    assert_eq!(rep.check(ip("::ffff:198.51.100.9"), T0), Verdict::Denied);
}
