//! A read-optimized set of IP networks.
//!
//! Networks are stored as sorted, merged, disjoint address intervals, so a membership test is
//! one binary search (a handful of comparisons) whatever the number of networks. This keeps the
//! per-request `ignoreip`/`deny`/CIDR-ban checks cheap even with hundreds of entries.

use ipnet::IpNet;
use std::net::IpAddr;

/// A set of IP networks answering "is this address inside any of them?".
#[derive(Debug, Clone, Default)]
pub(crate) struct NetSet {
    /// Inclusive `[first, last]` IPv4 intervals, sorted and disjoint.
    v4: Vec<(u32, u32)>,
    /// Inclusive `[first, last]` IPv6 intervals, sorted and disjoint.
    v6: Vec<(u128, u128)>,
}

impl NetSet {
    /// The set covering all of `nets`.
    pub(crate) fn new<'a, I: IntoIterator<Item = &'a IpNet>>(nets: I) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    /// True when `addr` lies inside one of the networks.
    #[inline]
    pub(crate) fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)).is_some(),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)).is_some(),
        }
    }

    /// True when every address of `net` lies inside the set.
    pub(crate) fn covers(&self, net: &IpNet) -> bool {
        match net {
            IpNet::V4(n) => find(&self.v4, u32::from(n.network()))
                .is_some_and(|(_, last)| last >= u32::from(n.broadcast())),
            IpNet::V6(n) => find(&self.v6, u128::from(n.network()))
                .is_some_and(|(_, last)| last >= u128::from(n.broadcast())),
        }
    }
}

/// The interval of `sorted` containing `x`, if any.
#[inline]
fn find<T: Copy + Ord>(sorted: &[(T, T)], x: T) -> Option<(T, T)> {
    let after = sorted.partition_point(|&(first, _)| first <= x);
    let candidate = *sorted.get(after.checked_sub(1)?)?;
    (candidate.1 >= x).then_some(candidate)
}

/// Sorts intervals and merges overlapping or adjacent ones so they become disjoint.
fn merge<T: Copy + Ord + num_like::Successor>(mut intervals: Vec<(T, T)>) -> Vec<(T, T)> {
    intervals.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(intervals.len());
    for (first, last) in intervals {
        match merged.last_mut() {
            Some(prev) if prev.1 >= first || prev.1.successor() == Some(first) => {
                prev.1 = prev.1.max(last);
            }
            _ => merged.push((first, last)),
        }
    }
    merged
}

mod num_like {
    /// The next integer, if it exists.
    pub(super) trait Successor: Sized {
        fn successor(self) -> Option<Self>;
    }
    impl Successor for u32 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
    impl Successor for u128 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> NetSet {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        NetSet::new(&nets)
    }

    #[test]
    fn membership_over_nested_and_disjoint_networks() {
        let s = set(&[
            "10.0.0.0/8",
            "10.1.0.0/16",
            "192.168.1.0/24",
            "2001:db8::/32",
        ]);
        assert!(s.contains("10.200.3.4".parse().unwrap()));
        assert!(s.contains("192.168.1.255".parse().unwrap()));
        assert!(!s.contains("192.168.2.0".parse().unwrap()));
        assert!(!s.contains("9.255.255.255".parse().unwrap()));
        assert!(s.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!s.contains("2001:db9::1".parse().unwrap()));
        assert!(!set(&[]).contains("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn adjacent_networks_merge_for_coverage() {
        let s = set(&["10.0.0.0/25", "10.0.0.128/25"]);
        assert!(s.covers(&"10.0.0.0/24".parse().unwrap()));
        assert!(!s.covers(&"10.0.0.0/23".parse().unwrap()));
        assert!(s.covers(&"10.0.0.7/32".parse().unwrap()));
    }
}
