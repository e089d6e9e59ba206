//! The one Prometheus registry: every counter the gateway keeps, served on `[metrics] listen`.
//!
//! All metrics live in the `prometheus` crate's default registry, which is what
//! pingora-prometheus serves, so filters add theirs here and they appear on the same endpoint.

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, HistogramVec,
    IntCounterVec, IntGaugeVec,
};
use std::sync::OnceLock;

/// Every metric the gateway exports.
pub struct Metrics {
    /// `portcullis_requests_total{route, decision}`: what happened to each request.
    pub requests: IntCounterVec,
    /// `portcullis_responses_total{class}`: responses by status class (`2xx`, ..., `444`).
    pub responses: IntCounterVec,
    /// `portcullis_upstream_response_seconds{upstream}`: time to the upstream's response header.
    pub upstream_seconds: HistogramVec,
    /// `portcullis_upstream_errors_total{upstream, kind}`: connect failures and other errors.
    pub upstream_errors: IntCounterVec,
    /// `portcullis_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    /// `portcullis_config_reloads_total{result}`: hot reloads, `ok` or `error`.
    pub reloads: IntCounterVec,
}

impl Metrics {
    /// The process-wide metrics, registered on first use.
    pub fn get() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(Metrics::register)
    }

    fn register() -> Metrics {
        // Registration only fails on a duplicate name, which is a programming error caught by
        // every test run.
        let m = Metrics {
            requests: register_int_counter_vec!(
                "portcullis_requests_total",
                "Requests by route and decision (proxied, banned, probe, rate_limited, ...).",
                &["route", "decision"]
            )
            .expect("register portcullis_requests_total"),
            responses: register_int_counter_vec!(
                "portcullis_responses_total",
                "Responses sent to clients by status class (444 = connection closed unanswered).",
                &["class"]
            )
            .expect("register portcullis_responses_total"),
            upstream_seconds: register_histogram_vec!(
                "portcullis_upstream_response_seconds",
                "Time from choosing an upstream server to its response header.",
                &["upstream"],
                vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
            )
            .expect("register portcullis_upstream_response_seconds"),
            upstream_errors: register_int_counter_vec!(
                "portcullis_upstream_errors_total",
                "Upstream failures by upstream and kind (connect, proxy).",
                &["upstream", "kind"]
            )
            .expect("register portcullis_upstream_errors_total"),
            build_info: register_int_gauge_vec!(
                "portcullis_build_info",
                "Build information; the value is always 1.",
                &["version"]
            )
            .expect("register portcullis_build_info"),
            reloads: register_int_counter_vec!(
                "portcullis_config_reloads_total",
                "Configuration reloads by result (ok, error).",
                &["result"]
            )
            .expect("register portcullis_config_reloads_total"),
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m
    }
}

/// The `class` label for a response status: `2xx`, `4xx`, ...; 444 (dropped) stays itself.
pub fn status_class(status: u16) -> &'static str {
    match status {
        444 => "444",
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}
