//! What a request carries from its header to its log line, on either proxy path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use portcullis_gate::Walk;
use portcullis_policy::time::{Clock, SystemClock};

use crate::runtime::Runtime;
use crate::upstream::Upstream;

/// The connection context carried from one request to the next on a kept-alive connection
/// (see `persist_connection_context`).
pub(crate) struct KeptAlive;

/// Per-request state carried between Pingora's phases.
#[derive(Default)]
pub struct RequestCtx {
    /// The configuration this request started under (a reload does not change it mid-way).
    pub rt: Option<Arc<Runtime>>,
    /// What the walk found: client, route, decision, the concurrency slots held.
    pub walk: Walk,
    /// True when the connection should be closed without an answer.
    pub drop_connection: bool,
    /// The upstream server chosen, and when.
    pub upstream: Option<(SocketAddr, Instant)>,
    /// Connection attempts so far.
    pub tries: usize,
    /// True while the last connection attempt failed (counted as `connect` already).
    pub connect_failed: bool,
    /// Request body bytes passed on so far.
    pub body_bytes: u64,
    /// The client went away before its answer was written (nginx logs such a request 499).
    pub client_gone: bool,
    /// Counts the request as in progress on its worker (workers.rs) until it ends.
    pub _busy: crate::load::Busy,
}

impl RequestCtx {
    /// Now, on the clock of the runtime the request started under (the engines' clock).
    pub fn now_ms(&self) -> u64 {
        match &self.rt {
            Some(rt) => rt.gate.clock().now_ms(),
            None => SystemClock.now_ms(),
        }
    }

    /// The upstream group of the matched route, once the request is routed.
    pub fn group(&self) -> Option<&Upstream> {
        let rt = self.rt.as_ref()?;
        rt.upstreams
            .get(rt.settings.routes[self.walk.route?].upstream)
    }
}
