//! `shared = true` rate-limit zones: one round trip to Redis per request of such a zone, an
//! atomic script ([`super::scripts::limit`]) that keeps nginx's leaky bucket for every
//! gateway at once. The request waits `shared_timeout` at most; without an answer in time
//! (Redis slow, down, or not yet connected) the gateway's own count of the zone decides
//! (fail open), counted in `portcullis_cluster_shared_fallback_total` and logged once per
//! change, not per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use portcullis_gate::settings::ZoneConfig;
use portcullis_gate::SharedCheck;
use portcullis_policy::limiter::{Decision as Limit, Delay};
use redis::aio::MultiplexedConnection;

use super::keys::Keys;
use super::metrics::ClusterMetrics;
use super::scripts;

/// The connection the requests of shared zones use, while Redis is up.
struct Shared {
    /// A connection of its own, so a request never queues behind the cluster task's loads;
    /// `None` while Redis is down (requests then fall back at once, without waiting).
    conn: Mutex<Option<MultiplexedConnection>>,
    timeout: Duration,
    keys: Keys,
    /// Whether the last request was answered: the warning is logged at the change only.
    answering: AtomicBool,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// Sets the timeout and key names (once, at start).
pub(super) fn init(timeout: Duration, keys: Keys) {
    let _ = SHARED.set(Shared {
        conn: Mutex::new(None),
        timeout,
        keys,
        answering: AtomicBool::new(true),
    });
}

/// The cluster task connected (`Some`) or lost Redis (`None`).
pub(super) fn attach(conn: Option<MultiplexedConnection>) {
    if let Some(shared) = SHARED.get() {
        *shared.conn.lock().unwrap_or_else(PoisonError::into_inner) = conn;
    }
}

/// Asks Redis whether `check.key` may spend a request in each of `check.zones` (indices into
/// `zones`). `None`: no answer in time, or `[cluster]` off; the caller's local count stands.
pub async fn ask(check: &SharedCheck, zones: &[ZoneConfig]) -> Option<Limit> {
    let shared = SHARED.get()?;
    let m = ClusterMetrics::get();
    let conn = shared
        .conn
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some(mut conn) = conn else {
        return shared.fell_back("down");
    };
    let mut invocation = scripts::limit().prepare_invoke();
    for &i in &check.zones {
        invocation.key(shared.keys.rate(&zones.get(i)?.engine.name, check.key));
    }
    for &i in &check.zones {
        invocation.key(shared.keys.rate_index(&zones.get(i)?.engine.name));
    }
    invocation.arg(check.zones.len()).arg(check.key.to_string());
    for &i in &check.zones {
        let zone = &zones.get(i)?.engine;
        let threshold = match zone.delay {
            Delay::NoDelay => -1,
            Delay::After(n) => i64::try_from(n.saturating_mul(1000)).unwrap_or(i64::MAX),
        };
        invocation
            .arg(zone.rate.milli_per_sec())
            .arg(zone.burst.saturating_mul(1000))
            .arg(threshold)
            .arg(zone.max_clients);
    }
    let answer = tokio::time::timeout(
        shared.timeout,
        invocation.invoke_async::<(String, u64, u64)>(&mut conn),
    )
    .await;
    let (verdict, a, b) = match answer {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            m.error(super::metrics::ErrorKind::of(&e));
            tracing::debug!(error = %e, "shared rate limit: Redis failed");
            return shared.fell_back("error");
        }
        Err(_) => return shared.fell_back("timeout"),
    };
    let decision = match verdict.as_str() {
        "pass" if a == 0 => Limit::Pass,
        "pass" => Limit::Delay { ms: a },
        "reject" => Limit::Reject {
            zone: usize::try_from(a).unwrap_or(usize::MAX),
            retry_after_ms: b.max(1),
        },
        "full" => return shared.fell_back("full"),
        _ => return shared.fell_back("error"),
    };
    if !shared.answering.swap(true, Ordering::Relaxed) {
        tracing::info!("shared rate limits: Redis answers again; shared zones count cluster-wide");
    }
    let result = match decision {
        Limit::Pass => "passed",
        Limit::Delay { .. } => "delayed",
        Limit::Reject { .. } => "rejected",
    };
    m.shared.with_label_values(&[result]).inc();
    Some(decision)
}

impl Shared {
    /// Counts a request decided locally for `reason`, warns at the change, and says so.
    fn fell_back(&self, reason: &'static str) -> Option<Limit> {
        let m = ClusterMetrics::get();
        m.shared_fallback.with_label_values(&[reason]).inc();
        // A full zone is a flood, not an outage: counted, and not worth a state change.
        if reason != "full" && self.answering.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                reason,
                timeout_ms = self.timeout.as_millis() as u64,
                "shared rate limits: Redis did not answer in time; each gateway counts shared zones alone until it does"
            );
        }
        None
    }
}
