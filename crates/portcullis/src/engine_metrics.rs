//! The engines' own state in `/metrics`, read at each scrape: limiter zones, the reputation
//! table, the caps, dropped log lines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::runtime::Runtime;

/// Engine state read at scrape time: tracked clients, evictions, offenses, bans.
///
/// The engines keep their own atomic counters; copying them into Prometheus types when
/// `/metrics` is scraped keeps the request path free of a second set of counters.
pub struct EngineCollector {
    runtime: Arc<ArcSwap<Runtime>>,
    zone_clients: IntGaugeVec,
    zone_evictions: IntCounterVec,
    offenses: IntCounterVec,
    bans: IntCounterVec,
    bans_active: IntGauge,
    bans_refused: IntCounter,
    offenders: IntGauge,
    offender_evictions: IntCounter,
    inflight: IntGauge,
    log_dropped: IntCounter,
    last_zone_evictions: Mutex<HashMap<String, u64>>,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl EngineCollector {
    /// Registers the collector for the engines of `runtime` in the default registry.
    pub fn register(runtime: Arc<ArcSwap<Runtime>>) {
        let c = EngineCollector {
            runtime,
            zone_clients: IntGaugeVec::new(
                opts(
                    "portcullis_rate_limit_clients",
                    "Clients tracked per rate-limit zone.",
                ),
                &["zone"],
            )
            .expect("valid metric"),
            zone_evictions: IntCounterVec::new(
                opts(
                    "portcullis_rate_limit_evictions_total",
                    "Clients evicted from a full rate-limit zone (clients not seen recently first).",
                ),
                &["zone"],
            )
            .expect("valid metric"),
            offenses: IntCounterVec::new(
                opts(
                    "portcullis_offenses_total",
                    "Offenses reported to the reputation table, by kind.",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            bans: IntCounterVec::new(
                opts(
                    "portcullis_bans_total",
                    "Bans issued, by reason (the offense kind that crossed maxretry, or manual).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            bans_active: IntGauge::with_opts(opts("portcullis_bans_active", "Bans in force."))
                .expect("valid metric"),
            bans_refused: IntCounter::with_opts(opts(
                "portcullis_bans_refused_total",
                "Bans not made because the ban table was full (max_bans).",
            ))
            .expect("valid metric"),
            offenders: IntGauge::with_opts(opts(
                "portcullis_offenders_tracked",
                "Clients with offenses or ban history in the reputation table.",
            ))
            .expect("valid metric"),
            offender_evictions: IntCounter::with_opts(opts(
                "portcullis_offender_evictions_total",
                "Offenders evicted from a full reputation table (lowest score, oldest first).",
            ))
            .expect("valid metric"),
            inflight: IntGauge::with_opts(opts(
                "portcullis_inflight_requests",
                "Requests being forwarded now.",
            ))
            .expect("valid metric"),
            log_dropped: IntCounter::with_opts(opts(
                "portcullis_log_dropped_total",
                "Diagnostic log lines dropped because stderr did not keep up.",
            ))
            .expect("valid metric"),
            last_zone_evictions: Mutex::new(HashMap::new()),
        };
        if let Err(e) = prometheus::register(Box::new(c)) {
            tracing::error!(error = %e, "cannot register engine metrics");
        }
    }
}

/// Raises `counter` to the engine's cumulative `value` (engines count, Prometheus mirrors).
fn mirror(counter: &IntCounter, value: u64) {
    let have = counter.get();
    if value > have {
        counter.inc_by(value - have);
    }
}

impl Collector for EngineCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = Vec::new();
        d.extend(self.zone_clients.desc());
        d.extend(self.zone_evictions.desc());
        d.extend(self.offenses.desc());
        d.extend(self.bans.desc());
        d.extend(self.bans_active.desc());
        d.extend(self.bans_refused.desc());
        d.extend(self.offenders.desc());
        d.extend(self.offender_evictions.desc());
        d.extend(self.inflight.desc());
        d.extend(self.log_dropped.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let rt = self.runtime.load();
        let f = &rt.gate;
        self.zone_clients.reset();
        if let Ok(mut last) = self.last_zone_evictions.lock() {
            for zone in f.zones() {
                let name = zone.settings().name.as_str();
                self.zone_clients
                    .with_label_values(&[name])
                    .set(zone.len() as i64);
                // A reload may replace a zone, restarting its count: add only what is new.
                let now = zone.evictions();
                let prev = last.insert(name.to_string(), now).unwrap_or(0);
                let delta = if now >= prev { now - prev } else { now };
                self.zone_evictions.with_label_values(&[name]).inc_by(delta);
            }
        }
        let stats = f.reputation().stats();
        for (kind, n) in &stats.offenses_by_kind {
            mirror(&self.offenses.with_label_values(&[kind]), *n);
        }
        for (reason, n) in &stats.bans_by_reason {
            mirror(&self.bans.with_label_values(&[reason]), *n);
        }
        self.bans_active.set(stats.active_bans as i64);
        mirror(&self.bans_refused, stats.bans_refused);
        self.offenders.set(stats.offenders as i64);
        mirror(&self.offender_evictions, stats.evictions);
        self.inflight.set(f.caps().total_inflight() as i64);
        mirror(&self.log_dropped, crate::logging::dropped_lines());

        let mut out = Vec::new();
        out.extend(self.zone_clients.collect());
        out.extend(self.zone_evictions.collect());
        out.extend(self.offenses.collect());
        out.extend(self.bans.collect());
        out.extend(self.bans_active.collect());
        out.extend(self.bans_refused.collect());
        out.extend(self.offenders.collect());
        out.extend(self.offender_evictions.collect());
        out.extend(self.inflight.collect());
        out.extend(self.log_dropped.collect());
        out
    }
}
