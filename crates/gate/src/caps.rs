//! Concurrency caps (nginx `limit_conn`): requests in flight per client and in total.
//!
//! Per client, a count-min sketch counts requests in flight by client key in fixed memory: it
//! can overestimate under heavy collision, never underestimate, and an IP-rotating flood cannot
//! grow a table. The total is one atomic.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;

/// Rows of the sketch: the estimate is the smallest of a client's counters, one per row.
const ROWS: usize = 4;
/// Counters per row (a power of two: a row's index is 13 bits of the hash). With 4 rows of
/// 8192, a client shares all four counters with another only when tens of thousands of
/// clients are in flight at once.
const SLOTS: usize = 8192;

/// In-flight counts per client key, in fixed memory.
struct Sketch {
    hasher: RandomState,
    counts: Box<[AtomicIsize]>,
}

impl Sketch {
    fn new() -> Self {
        Sketch {
            hasher: RandomState::new(),
            counts: (0..ROWS * SLOTS).map(|_| AtomicIsize::new(0)).collect(),
        }
    }

    /// The counter of `key` in each row: one hash, cut into a 16-bit piece per row (one
    /// SipHash per request instead of one per row, which cost more than the rest of the caps).
    fn cells(&self, key: IpAddr) -> [usize; ROWS] {
        let hash = self.hasher.hash_one(key);
        std::array::from_fn(|row| row * SLOTS + ((hash >> (16 * row)) as usize & (SLOTS - 1)))
    }

    /// Adds one at `cells` and returns the estimate after it.
    fn incr(&self, cells: &[usize; ROWS]) -> isize {
        cells
            .iter()
            .map(|&c| self.counts[c].fetch_add(1, Ordering::Relaxed) + 1)
            .min()
            .unwrap_or(0)
    }

    fn decr(&self, cells: &[usize; ROWS]) {
        for &c in cells {
            self.counts[c].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Releases one in-flight slot when dropped.
pub enum Guard {
    /// A per-client slot.
    Client(SketchSlot),
    /// A slot of the global cap.
    Total(Arc<AtomicUsize>),
}

/// What a per-client slot gives back: the sketch and the counters it added to.
pub struct SketchSlot {
    sketch: Arc<Sketch>,
    cells: [usize; ROWS],
}

impl Drop for SketchSlot {
    fn drop(&mut self) {
        self.sketch.decr(&self.cells);
    }
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
    per_client: Arc<Sketch>,
    total: Arc<AtomicUsize>,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            per_client: Arc::new(Sketch::new()),
            total: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Caps {
    /// Takes a per-client slot for `client`, or `None` when it already has `limit` in flight.
    pub fn client(&self, client: IpAddr, limit: usize) -> Option<Guard> {
        let cells = self.per_client.cells(client);
        let n = self.per_client.incr(&cells);
        let guard = Guard::Client(SketchSlot {
            sketch: self.per_client.clone(),
            cells,
        });
        (n.max(0) as usize <= limit).then_some(guard)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_limit_and_its_slots_back() {
        let caps = Caps::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| caps.client(a, 3).unwrap()).collect();
        assert!(caps.client(a, 3).is_none(), "a fourth is over the limit");
        assert!(
            caps.client(b, 3).is_some(),
            "another client is not counted with a"
        );
        drop(held);
        assert!(caps.client(a, 3).is_some(), "slots are released on drop");
    }

    #[test]
    fn the_total_counts_every_request() {
        let caps = Caps::default();
        let g1 = caps.total(2).unwrap();
        let _g2 = caps.total(2).unwrap();
        assert!(caps.total(2).is_none());
        assert_eq!(caps.total_inflight(), 2);
        drop(g1);
        assert!(caps.total(2).is_some());
    }
}
