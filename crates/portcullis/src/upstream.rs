//! Upstream server groups: round robin, skipping servers that recently refused connections.
//!
//! Pingora's `lb` crate does active health checks from a background service per group; that
//! does not survive a hot reload that changes the groups, so this is the passive variant nginx
//! users know from `max_fails`/`fail_timeout`: a server that fails to connect is skipped for
//! `down_for`, and the request is retried on the next one.

use crate::config::UpstreamSettings;
use crate::metrics::Metrics;
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// One upstream group at run time.
#[derive(Debug)]
pub struct Upstream {
    /// The validated settings.
    pub settings: UpstreamSettings,
    /// `portcullis_upstream_response_seconds` for this group, resolved once.
    pub latency: prometheus::Histogram,
    down_until_ms: Vec<AtomicU64>,
    next: AtomicUsize,
}

impl Upstream {
    /// A group for `settings`, all servers up.
    pub fn new(settings: UpstreamSettings) -> Self {
        let down_until_ms = settings.servers.iter().map(|_| AtomicU64::new(0)).collect();
        let latency = crate::metrics::Metrics::get()
            .upstream_seconds
            .with_label_values(&[settings.name.as_str()]);
        Self {
            latency,
            settings,
            down_until_ms,
            next: AtomicUsize::new(0),
        }
    }

    /// The next server in round-robin order that is not marked down at `now_ms`. When every
    /// server is down the next one is tried anyway: a stale mark must not refuse all traffic.
    pub fn select(&self, now_ms: u64) -> Option<SocketAddr> {
        let n = self.settings.servers.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.down_until_ms[i].load(Ordering::Relaxed) <= now_ms)
            .or(Some(start % n))
            .map(|i| self.settings.servers[i])
    }

    /// Marks `addr` down until `now_ms + down_for`.
    pub fn mark_down(&self, addr: SocketAddr, now_ms: u64) {
        if let Some(i) = self.settings.servers.iter().position(|s| *s == addr) {
            let until = now_ms + self.settings.down_for.as_millis() as u64;
            self.down_until_ms[i].store(until, Ordering::Relaxed);
        }
    }

    /// How many servers the group has.
    pub fn len(&self) -> usize {
        self.settings.servers.len()
    }

    /// Records a failed connection to `addr` (shown as `server`) at `now_ms`: marks it down,
    /// counts `portcullis_upstream_errors_total{kind="connect"}` and logs it. True when another
    /// server may still take the request after `tries` attempts: never more than once around
    /// the group.
    pub fn connect_failed(
        &self,
        addr: SocketAddr,
        server: &dyn Display,
        error: &dyn Display,
        tries: usize,
        now_ms: u64,
    ) -> bool {
        self.mark_down(addr, now_ms);
        let name = self.settings.name.as_str();
        Metrics::get()
            .upstream_errors
            .with_label_values(&[name, "connect"])
            .inc();
        tracing::warn!(upstream = name, server = %server, error = %error, "upstream connect failed");
        tries < self.len()
    }

    /// Records a failure after connecting (the client gets 502 or 504, or a cut-off body):
    /// counts `portcullis_upstream_errors_total{kind="proxy"}` and logs it.
    pub fn failed(&self, error: &dyn Display) {
        let name = self.settings.name.as_str();
        Metrics::get()
            .upstream_errors
            .with_label_values(&[name, "proxy"])
            .inc();
        tracing::warn!(upstream = name, error = %error, "upstream failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn group(n: u16) -> Upstream {
        Upstream::new(UpstreamSettings {
            name: "api".into(),
            servers: (0..n)
                .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
                .collect(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            down_for: Duration::from_secs(5),
        })
    }

    #[test]
    fn round_robin_visits_every_server() {
        let g = group(3);
        let picks: Vec<u16> = (0..6).map(|_| g.select(0).unwrap().port()).collect();
        assert_eq!(picks, vec![9000, 9001, 9002, 9000, 9001, 9002]);
    }

    #[test]
    fn down_server_is_skipped_until_it_recovers() {
        let g = group(2);
        g.mark_down(SocketAddr::from(([127, 0, 0, 1], 9000)), 1_000);
        for _ in 0..4 {
            assert_eq!(g.select(1_000).unwrap().port(), 9001);
        }
        let later: Vec<u16> = (0..2).map(|_| g.select(6_000).unwrap().port()).collect();
        assert!(later.contains(&9000));
    }

    #[test]
    fn all_down_still_tries_one() {
        let g = group(1);
        g.mark_down(SocketAddr::from(([127, 0, 0, 1], 9000)), 0);
        assert_eq!(g.select(1).unwrap().port(), 9000);
    }
}
