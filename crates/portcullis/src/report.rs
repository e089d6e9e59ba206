//! How the walk's events reach the operator: the binary's [`Observer`] counts them in
//! `/metrics`, logs them, and records the bans they cause in the ban store (journal, log).

use std::fmt::Display;
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_gate::{Malformed, Observer, ZoneOutcome};
use portcullis_policy::probes::Category;
use portcullis_policy::reputation::{Event, OffenseKind};
use prometheus::IntCounter;

use crate::metrics::FilterMetrics;
use crate::state::BanStore;

/// The observer of one runtime.
pub struct Reporter {
    /// The ban table's store: where the bans the walk makes are recorded.
    store: Arc<BanStore>,
    /// `portcullis_rate_limit_decisions_total{decision="passed"}` per zone, resolved once:
    /// the one zone outcome of nearly every request.
    zone_passed: Vec<IntCounter>,
}

impl Reporter {
    /// The observer for zones named `zones` (in the settings' order), recording into `store`.
    pub fn new<'a>(store: Arc<BanStore>, zones: impl Iterator<Item = &'a str>) -> Reporter {
        let decisions = &FilterMetrics::get().rate_limit;
        Reporter {
            store,
            zone_passed: zones
                .map(|name| decisions.with_label_values(&[name, "passed"]))
                .collect(),
        }
    }
}

impl Observer for Reporter {
    fn probe(&self, client: IpAddr, category: Category, rule: &str, action: &'static str) {
        FilterMetrics::get()
            .probe_hits
            .with_label_values(&[category.as_str(), action])
            .inc();
        tracing::debug!(%client, category = category.as_str(), rule, action, "probe");
    }

    fn outside_spec(
        &self,
        client: IpAddr,
        method: &str,
        path: &str,
        category: &'static str,
        action: &'static str,
    ) {
        FilterMetrics::get()
            .probe_hits
            .with_label_values(&[category, action])
            .inc();
        tracing::debug!(%client, method, path, category, action, "outside the API spec");
    }

    fn rate_limit(&self, client: IpAddr, zone: usize, name: &str, outcome: ZoneOutcome) {
        match (outcome, self.zone_passed.get(zone)) {
            (ZoneOutcome::Passed, Some(passed)) => passed.inc(),
            _ => FilterMetrics::get()
                .rate_limit
                .with_label_values(&[name, outcome.as_str()])
                .inc(),
        }
        if outcome == ZoneOutcome::DryRun {
            tracing::info!(%client, zone = name, "rate limit (dry run): would reject");
        }
    }

    fn inflight_refused(&self, scope: &'static str) {
        FilterMetrics::get()
            .inflight_rejections
            .with_label_values(&[scope])
            .inc();
    }

    fn malformed(&self, client: Option<IpAddr>, reason: Malformed, detail: &dyn Display) {
        FilterMetrics::get()
            .malformed
            .with_label_values(&[reason.as_str()])
            .inc();
        tracing::debug!(client = ?client, reason = reason.as_str(), %detail, "malformed request");
    }

    fn offense(&self, addr: IpAddr, kind: OffenseKind, weight: u32, ban: Option<Event>) {
        self.store.offense_counted(addr, kind, weight, ban);
    }
}
