//! `portcullis_cluster_*`: whether Redis is reachable, what went through it, how late.
//!
//! Registered at start whether or not `[cluster]` is on, every label at 0, so a dashboard
//! shows 0 rather than "no data".

use std::sync::OnceLock;

use prometheus::{
    register_histogram, register_int_counter_vec, register_int_gauge, Histogram, IntCounterVec,
    IntGauge,
};

/// The cluster's metrics.
pub struct ClusterMetrics {
    /// `portcullis_cluster_up`: 1 while Redis answers, 0 otherwise (or without `[cluster]`).
    pub up: IntGauge,
    /// `portcullis_cluster_messages_total{direction, kind}`: bans and unbans published to and
    /// received from the other gateways.
    pub messages: IntCounterVec,
    /// `portcullis_cluster_offenses_total{result}`: offenses counted in Redis, and those whose
    /// cluster-wide score reached `maxretry`.
    pub offenses: IntCounterVec,
    /// `portcullis_cluster_refused_total{what}`: new offender or ban keys Redis did not take
    /// because the cluster-wide cap (`max_offenders`, `max_bans`) was reached.
    pub refused: IntCounterVec,
    /// `portcullis_cluster_dropped_total{reason}`: messages never sent to Redis.
    pub dropped: IntCounterVec,
    /// `portcullis_cluster_errors_total{kind}`: Redis failures.
    pub errors: IntCounterVec,
    /// `portcullis_cluster_sync_lag_seconds`: from a ban on one gateway to its enforcement
    /// here.
    pub sync_lag: Histogram,
    /// `portcullis_cluster_resync_total{what}`: bans loaded from Redis and written back to it
    /// at (re)connection, unbans replayed.
    pub resync: IntCounterVec,
    /// `portcullis_cluster_shared_total{result}`: what Redis answered for `shared = true`
    /// zones (passed, delayed, rejected).
    pub shared: IntCounterVec,
    /// `portcullis_cluster_shared_fallback_total{reason}`: requests of `shared = true` zones
    /// decided by this gateway's own count because Redis did not answer (down, timeout, error)
    /// or the zone's clients in Redis reached `max_clients` (full).
    pub shared_fallback: IntCounterVec,
}

impl ClusterMetrics {
    /// The process-wide cluster metrics, registered on first use.
    pub fn get() -> &'static ClusterMetrics {
        static METRICS: OnceLock<ClusterMetrics> = OnceLock::new();
        METRICS.get_or_init(ClusterMetrics::register)
    }

    fn register() -> ClusterMetrics {
        let m = ClusterMetrics {
            up: register_int_gauge!(
                "portcullis_cluster_up",
                "1 while the cluster's Redis answers; 0 when it does not or [cluster] is off."
            )
            .expect("register portcullis_cluster_up"),
            messages: register_int_counter_vec!(
                "portcullis_cluster_messages_total",
                "Ban changes published to the other gateways or received from them, by direction (published, received) and kind (ban, unban).",
                &["direction", "kind"]
            )
            .expect("register portcullis_cluster_messages_total"),
            offenses: register_int_counter_vec!(
                "portcullis_cluster_offenses_total",
                "Offenses counted cluster-wide in Redis, by result (counted, banned: the cluster-wide score reached maxretry).",
                &["result"]
            )
            .expect("register portcullis_cluster_offenses_total"),
            refused: register_int_counter_vec!(
                "portcullis_cluster_refused_total",
                "New offender or ban keys refused by Redis because the cluster-wide cap was reached (max_offenders, max_bans).",
                &["what"]
            )
            .expect("register portcullis_cluster_refused_total"),
            dropped: register_int_counter_vec!(
                "portcullis_cluster_dropped_total",
                "Offenses and ban changes not sent to Redis, by reason (queue_full, offline: offenses while Redis was unreachable).",
                &["reason"]
            )
            .expect("register portcullis_cluster_dropped_total"),
            errors: register_int_counter_vec!(
                "portcullis_cluster_errors_total",
                "Redis failures by kind (connect, timeout, io, script, decode, other).",
                &["kind"]
            )
            .expect("register portcullis_cluster_errors_total"),
            sync_lag: register_histogram!(
                "portcullis_cluster_sync_lag_seconds",
                "Time from a ban made on another gateway to its enforcement here (wall clocks of both hosts).",
                vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
            )
            .expect("register portcullis_cluster_sync_lag_seconds"),
            resync: register_int_counter_vec!(
                "portcullis_cluster_resync_total",
                "At each (re)connection: bans loaded from Redis, local bans written back to it, unbans made while it was away replayed.",
                &["what"]
            )
            .expect("register portcullis_cluster_resync_total"),
            shared: register_int_counter_vec!(
                "portcullis_cluster_shared_total",
                "Requests of shared = true rate-limit zones decided cluster-wide in Redis, by result (passed, delayed, rejected).",
                &["result"]
            )
            .expect("register portcullis_cluster_shared_total"),
            shared_fallback: register_int_counter_vec!(
                "portcullis_cluster_shared_fallback_total",
                "Requests of shared = true rate-limit zones decided by this gateway's own count, by reason (down, timeout, error: Redis did not answer in shared_timeout; full: the zone's max_clients reached in Redis).",
                &["reason"]
            )
            .expect("register portcullis_cluster_shared_fallback_total"),
        };
        for direction in ["published", "received"] {
            for kind in ["ban", "unban"] {
                m.messages.with_label_values(&[direction, kind]);
            }
        }
        for result in ["counted", "banned"] {
            m.offenses.with_label_values(&[result]);
        }
        for what in ["offender", "ban"] {
            m.refused.with_label_values(&[what]);
        }
        for reason in ["queue_full", "offline"] {
            m.dropped.with_label_values(&[reason]);
        }
        for kind in ErrorKind::ALL {
            m.errors.with_label_values(&[kind.as_str()]);
        }
        for result in ["passed", "delayed", "rejected"] {
            m.shared.with_label_values(&[result]);
        }
        for reason in ["down", "timeout", "error", "full"] {
            m.shared_fallback.with_label_values(&[reason]);
        }
        for what in ["loaded", "written_back", "unbans_replayed"] {
            m.resync.with_label_values(&[what]);
        }
        m
    }

    /// Counts a Redis failure.
    pub fn error(&self, kind: ErrorKind) {
        self.errors.with_label_values(&[kind.as_str()]).inc();
    }
}

/// The `kind` of `portcullis_cluster_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not connect (refused, unreachable, authentication).
    Connect,
    /// A command or connection attempt took longer than `timeout`.
    Timeout,
    /// The connection broke.
    Io,
    /// Redis answered with an error (a script failed, a wrong type).
    Script,
    /// A message or stored ban that is not what portcullis writes.
    Decode,
    /// Anything else.
    Other,
}

impl ErrorKind {
    const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Io,
        ErrorKind::Script,
        ErrorKind::Decode,
        ErrorKind::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::Script => "script",
            ErrorKind::Decode => "decode",
            ErrorKind::Other => "other",
        }
    }

    /// The kind of a Redis client error.
    pub fn of(e: &redis::RedisError) -> ErrorKind {
        if e.is_timeout() {
            ErrorKind::Timeout
        } else if e.is_connection_refusal() {
            ErrorKind::Connect
        } else if e.is_io_error() || e.is_connection_dropped() {
            ErrorKind::Io
        } else if matches!(e.kind(), redis::ErrorKind::Server(_)) {
            ErrorKind::Script
        } else {
            ErrorKind::Other
        }
    }
}
