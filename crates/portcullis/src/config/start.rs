//! The settings read once, when the process starts its listeners, threads and pools: a reload
//! cannot change them. `serve.rs` reads them from [`StartSettings`] and nowhere else, so the
//! list of keys a reload cannot apply is this struct's fields, not a list kept by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ClusterSettings, Settings, TlsListener};

/// Declares [`StartSettings`]: each field with the key a user writes and how it is read from
/// [`Settings`]; [`StartSettings::changed`] compares field by field.
macro_rules! start_settings {
    ($( $(#[$doc:meta])* $field:ident: $ty:ty = $key:literal, |$s:ident| $read:expr; )*) => {
        /// Settings that take effect at start only.
        #[derive(Debug, Clone, PartialEq)]
        pub struct StartSettings {
            $( $(#[$doc])* pub $field: $ty, )*
        }

        impl StartSettings {
            /// The start-only part of `settings`.
            pub fn of(settings: &Settings) -> StartSettings {
                StartSettings {
                    $( $field: { let $s = settings; $read }, )*
                }
            }

            /// The keys whose values differ between `self` and `new`.
            pub fn changed(&self, new: &StartSettings) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $( if self.$field != new.$field { keys.push($key); } )*
                keys
            }
        }
    };
}

start_settings! {
    /// Plain listeners (bound at start).
    listen: Vec<SocketAddr> = "server.listen", |s| s.server.listen.clone();
    /// TLS listeners with their certificate and key (loaded at start).
    tls: Vec<TlsListener> = "server.tls", |s| s.server.tls.clone();
    /// The metrics listener.
    metrics: Option<SocketAddr> = "metrics.listen", |s| s.metrics;
    /// The admin API listener.
    admin: Option<SocketAddr> = "admin.listen", |s| s.admin.as_ref().map(|a| a.listen);
    /// Where bans are journaled (opened at start), and the pid file.
    state_dir: Option<PathBuf> = "server.state_dir", |s| s.server.state_dir.clone();
    /// Proxy worker threads.
    threads: usize = "server.threads", |s| s.server.threads;
    /// Sockets per worker.
    reuseport: bool = "server.reuseport", |s| s.server.reuseport;
    /// Requests per connection (Pingora's server options, the fast path's limit).
    keepalive_requests: u32 = "server.keepalive_requests", |s| s.server.keepalive_requests;
    /// HttpProxy's upstream connection pool (the fast path's follows a reload).
    upstream_keepalive: usize = "server.upstream_keepalive", |s| s.server.upstream_keepalive;
    /// The HTTP/2 idle timeout, set from keepalive_timeout when the listeners start (HTTP/1
    /// takes a reload at once).
    h2_idle_timeout: Duration = "server.keepalive_timeout (HTTP/2)",
        |s| Duration::from_secs(s.server.keepalive_timeout.unwrap_or(1));
    /// Pingora's grace period on shutdown.
    shutdown_grace: Duration = "server.shutdown_grace", |s| s.server.shutdown_grace;
    /// The Redis connection and key names of the cluster task (started once).
    cluster: Option<ClusterSettings> = "cluster", |s| s.cluster.clone();
}
