//! Concurrency caps (nginx `limit_conn`): requests in flight per client and in total.
//!
//! Per client, pingora-limits' `Inflight` estimator counts requests in flight by client key
//! in fixed memory (a count-min sketch: it can overestimate under heavy collision, never
//! underestimate), so an IP-rotating flood cannot grow a table. The total is one atomic.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pingora_limits::inflight::Inflight;

/// Releases one in-flight slot when dropped.
pub enum Guard {
    /// A per-client slot (held only for its own `Drop`, which decrements the estimator).
    Client(#[allow(dead_code)] pingora_limits::inflight::Guard),
    /// A slot of the global cap.
    Total(Arc<AtomicUsize>),
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Total(n) = self {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Concurrency caps; shared across reloads so counts stay right for requests in flight.
pub struct Caps {
    per_client: Inflight,
    total: Arc<AtomicUsize>,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            per_client: Inflight::new(),
            total: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Caps {
    /// Takes a per-client slot for `client`, or `None` when it already has `limit` in flight.
    pub fn client(&self, client: IpAddr, limit: usize) -> Option<Guard> {
        let (guard, n) = self.per_client.incr(client, 1);
        (n as usize <= limit).then_some(Guard::Client(guard))
    }

    /// Takes a slot of the global cap, or `None` when `limit` requests are in flight.
    pub fn total(&self, limit: usize) -> Option<Guard> {
        let n = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let guard = Guard::Total(self.total.clone());
        (n <= limit).then_some(guard)
    }

    /// Requests in flight in total.
    pub fn total_inflight(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}
