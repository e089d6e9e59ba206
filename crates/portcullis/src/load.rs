//! How busy each proxy worker is: the count of requests in progress per worker thread, which
//! decides which worker takes a new connection (`workers.rs`).

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};

/// Requests in progress on each worker: what decides which worker takes a new connection.
pub struct Load {
    busy: Box<[Slot]>,
}

/// One worker's count, on a cache line of its own: only that worker writes it.
#[repr(align(128))]
#[derive(Default)]
struct Slot(AtomicU32);

impl Load {
    /// The counts for `workers` workers, for the life of the process (as the workers).
    pub fn leaked(workers: usize) -> &'static Load {
        Box::leak(Box::new(Load {
            busy: (0..workers.max(1)).map(|_| Slot::default()).collect(),
        }))
    }

    /// Whether worker `index` takes a new connection now: the first worker always does (so
    /// every connection is taken), a later one only while every worker before it is busy.
    pub fn takes(&self, index: usize) -> bool {
        self.busy
            .iter()
            .take(index)
            .all(|s| s.0.load(Ordering::Relaxed) > 0)
    }

    /// Makes the calling thread worker `index`: [`Busy`] counts its requests from now on.
    pub fn enter(&'static self, index: usize) {
        SLOT.set(self.busy.get(index).map(|s| &s.0));
    }
}

thread_local! {
    static SLOT: Cell<Option<&'static AtomicU32>> = const { Cell::new(None) };
}

/// A request in progress on this thread's worker, until dropped. On a thread that is not a
/// worker (TLS listeners) it counts nothing.
#[derive(Default)]
pub struct Busy(Option<&'static AtomicU32>);

impl Busy {
    /// Counts a request that has started.
    pub fn start() -> Busy {
        let slot = SLOT.get();
        if let Some(s) = slot {
            s.fetch_add(1, Ordering::Relaxed);
        }
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            s.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
