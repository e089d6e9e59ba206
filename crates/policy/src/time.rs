//! Injectable time.
//!
//! Engines never read the clock themselves; callers pass `now` in milliseconds since the
//! UNIX epoch. Wall-clock milliseconds (rather than a monotonic instant) are used so that ban
//! expiry times can be persisted and compared across restarts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in milliseconds since the UNIX epoch.
pub trait Clock: Send + Sync + 'static {
    /// The current time in milliseconds since the UNIX epoch.
    fn now_ms(&self) -> u64;

    /// Milliseconds on a clock that never steps back, for the rate limiter (nginx's limiter
    /// assumes one; the wall clock used for bans can jump with NTP). A clock that cannot jump
    /// (a test's) may return `now_ms`.
    fn monotonic_ms(&self) -> u64 {
        self.now_ms()
    }
}

/// The real system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn monotonic_ms(&self) -> u64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        // Starts well above 0, so a client first seen now is never taken for "seen at 0".
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64
            + 1_000_000
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self(AtomicU64::new(start_ms))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
