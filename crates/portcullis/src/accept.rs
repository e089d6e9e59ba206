//! Bans enforced at connection accept, before any TLS or HTTP work.
//!
//! Where the TCP peer is itself the client (not a trusted proxy), a banned or denied scanner's
//! connection is closed as soon as it is accepted: it costs no TLS handshake and no HTTP
//! parsing. Connections from trusted proxies are always accepted; their clients are judged
//! per request, from the forwarding headers.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::ConnectionFilter;
use prometheus::{register_int_counter_vec, IntCounterVec};

use crate::runtime::Runtime;

fn refused() -> &'static IntCounterVec {
    static REFUSED: OnceLock<IntCounterVec> = OnceLock::new();
    REFUSED.get_or_init(|| {
        register_int_counter_vec!(
            "portcullis_connections_refused_total",
            "Connections closed at accept because the peer is banned or denied.",
            &["reason"]
        )
        .expect("register portcullis_connections_refused_total")
    })
}

/// Pingora connection filter consulting the ban table.
pub struct BanAtAccept {
    /// The running configuration.
    pub runtime: Arc<ArcSwap<Runtime>>,
}

impl std::fmt::Debug for BanAtAccept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BanAtAccept")
    }
}

impl BanAtAccept {
    /// Whether a connection from `peer` may go on; counts the refusal if not.
    pub fn allows(&self, peer: SocketAddr) -> bool {
        let rt = self.runtime.load();
        if rt.client_ip.is_trusted(peer.ip()) {
            return true;
        }
        // The address itself: the reputation table keys it, and matches `deny` against it.
        let now = rt.gate.clock().now_ms();
        let Some(refused_as) = rt.gate.banned_now(peer.ip(), now) else {
            return true;
        };
        // "banned" or "denied".
        refused().with_label_values(&[refused_as.as_str()]).inc();
        false
    }
}

#[async_trait]
impl ConnectionFilter for BanAtAccept {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        addr.is_none_or(|a| self.allows(*a))
    }
}

/// Registers the metric so it shows (at 0) before the first refusal.
pub fn register_metrics() {
    refused();
}
