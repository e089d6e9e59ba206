//! The one Prometheus registry: every counter the gateway keeps, served on `[metrics] listen`.
//!
//! All metrics live in the `prometheus` crate's default registry, which is what
//! pingora-prometheus serves, so filters add theirs here and they appear on the same endpoint.

use std::sync::OnceLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge_vec,
    HistogramVec, IntCounter, IntCounterVec, IntGaugeVec,
};

/// Every metric the gateway exports.
pub struct Metrics {
    /// `portcullis_requests_total{route, decision}`: what happened to each request.
    pub requests: IntCounterVec,
    /// `portcullis_upstream_response_seconds{upstream}`: time to the upstream's response header.
    pub upstream_seconds: HistogramVec,
    /// `portcullis_upstream_errors_total{upstream, kind}`: connect failures and other errors.
    pub upstream_errors: IntCounterVec,
    /// `portcullis_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    /// `portcullis_config_reloads_total{result}`: hot reloads, `ok` or `error`.
    pub reloads: IntCounterVec,
    /// `portcullis_fast_path_requests_total`: requests the fast path served itself.
    pub fast_path_requests: IntCounter,
    /// `portcullis_fast_path_handoffs_total`: connections it handed to Pingora's `HttpProxy`.
    pub fast_path_handoffs: IntCounter,
    /// `portcullis_client_timeouts_total{kind}`: client connections cut because a time bound
    /// passed: `send` (send_timeout), `client_body` (client_body_timeout), `h2_preface`
    /// (client_header_timeout), `lingering` (lingering_time or lingering_timeout).
    pub client_timeouts: IntCounterVec,
    /// `portcullis_h2_floods_total{frame}`: HTTP/2 connections closed with GOAWAY
    /// ENHANCE_YOUR_CALM, by what flooded (`h2guard::Flood`).
    pub h2_floods: IntCounterVec,
    /// `portcullis_responses_total{class}`, resolved per class once, in [`CLASSES`] order, so the request path does
    /// not hash labels.
    response_classes: Vec<IntCounter>,
}

/// The `class` labels of `portcullis_responses_total`.
const CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "444", "other"];

impl Metrics {
    /// The process-wide metrics, registered on first use.
    pub fn get() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(Metrics::register)
    }

    fn register() -> Metrics {
        // Registration only fails on a duplicate name, which is a programming error caught by
        // every test run.
        let responses = register_int_counter_vec!(
            "portcullis_responses_total",
            "Responses sent to clients by status class (444 = connection closed unanswered).",
            &["class"]
        )
        .expect("register portcullis_responses_total");
        let m = Metrics {
            response_classes: CLASSES
                .iter()
                .map(|c| responses.with_label_values(&[c]))
                .collect(),
            requests: register_int_counter_vec!(
                "portcullis_requests_total",
                "Requests by route and decision (proxied, banned, probe, rate_limited, ...).",
                &["route", "decision"]
            )
            .expect("register portcullis_requests_total"),
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
            fast_path_requests: register_int_counter!(
                "portcullis_fast_path_requests_total",
                "Requests served on the fast path (plain HTTP/1.1 without a body); every other \
                 request is served by Pingora's HttpProxy."
            )
            .expect("register portcullis_fast_path_requests_total"),
            fast_path_handoffs: register_int_counter!(
                "portcullis_fast_path_handoffs_total",
                "Plain HTTP/1.1 connections handed from the fast path to Pingora's HttpProxy at \
                 the first request the fast path does not serve (a body, an upgrade, HTTP/1.0)."
            )
            .expect("register portcullis_fast_path_handoffs_total"),
            client_timeouts: register_int_counter_vec!(
                "portcullis_client_timeouts_total",
                "Client connections cut at a time bound, by kind (send, client_body, h2_preface, lingering).",
                &["kind"]
            )
            .expect("register portcullis_client_timeouts_total"),
            h2_floods: register_int_counter_vec!(
                "portcullis_h2_floods_total",
                "HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM for a flood, by frame \
                 (window_update, priority, ping, settings, rst_stream, empty_data, \
                 unknown_frame, headers, stream_errors).",
                &["frame"]
            )
            .expect("register portcullis_h2_floods_total"),
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
        // Every kind exported from the start at 0, so a dashboard shows 0, not "no data".
        for kind in ["send", "client_body", "h2_preface", "lingering"] {
            m.client_timeouts.with_label_values(&[kind]);
        }
        for flood in crate::h2guard::Flood::ALL {
            m.h2_floods.with_label_values(&[flood.as_str()]);
        }
        m
    }
}

impl Metrics {
    /// The responses counter for `status`'s class: `2xx`, `4xx`, ...; 444 (dropped) is its own.
    pub fn response_counter(&self, status: u16) -> &IntCounter {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            444 => 5,
            400..=499 => 3,
            500..=599 => 4,
            _ => 6,
        };
        &self.response_classes[class]
    }
}

/// Counters the filters bump on the request path.
pub struct FilterMetrics {
    /// `portcullis_rate_limit_decisions_total{zone, decision}`: passed, delayed, rejected, dry_run.
    pub rate_limit: IntCounterVec,
    /// `portcullis_probe_hits_total{category, action}`.
    pub probe_hits: IntCounterVec,
    /// `portcullis_inflight_rejections_total{scope}`: `client` or `total`.
    pub inflight_rejections: IntCounterVec,
    /// `portcullis_malformed_total{reason}`: requests refused as malformed, by what was wrong.
    pub malformed: IntCounterVec,
}

impl FilterMetrics {
    /// The process-wide filter counters, registered on first use.
    pub fn get() -> &'static FilterMetrics {
        static METRICS: OnceLock<FilterMetrics> = OnceLock::new();
        METRICS.get_or_init(|| FilterMetrics {
            rate_limit: register_int_counter_vec!(
                "portcullis_rate_limit_decisions_total",
                "Rate-limit decisions by zone: passed, delayed, rejected, dry_run (would have been rejected).",
                &["zone", "decision"]
            )
            .expect("register portcullis_rate_limit_decisions_total"),
            probe_hits: register_int_counter_vec!(
                "portcullis_probe_hits_total",
                "Requests matching the probe blocklist, by category and action.",
                &["category", "action"]
            )
            .expect("register portcullis_probe_hits_total"),
            inflight_rejections: register_int_counter_vec!(
                "portcullis_inflight_rejections_total",
                "Requests refused by a concurrency cap, by scope (client, total).",
                &["scope"]
            )
            .expect("register portcullis_inflight_rejections_total"),
            malformed: {
                let malformed = register_int_counter_vec!(
                "portcullis_malformed_total",
                "Requests refused as malformed (each a malformed offense), by reason.",
                &["reason"]
            )
            .expect("register portcullis_malformed_total");
                // Every reason exported from the start at 0.
                for reason in portcullis_gate::Malformed::ALL {
                    malformed.with_label_values(&[reason.as_str()]);
                }
                malformed
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_gate::Decision;

    #[test]
    fn decision_indices_follow_declaration_order() {
        for (i, d) in Decision::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "{d:?}");
        }
    }

    #[test]
    fn response_classes() {
        let m = Metrics::get();
        let before = m.response_counter(444).get();
        m.response_counter(444).inc();
        assert_eq!(m.response_counter(444).get(), before + 1);
        assert!(!std::ptr::eq(
            m.response_counter(404),
            m.response_counter(444)
        ));
        assert!(std::ptr::eq(
            m.response_counter(404),
            m.response_counter(499)
        ));
        assert!(std::ptr::eq(
            m.response_counter(200),
            m.response_counter(204)
        ));
        assert!(std::ptr::eq(m.response_counter(0), m.response_counter(999)));
    }
}
