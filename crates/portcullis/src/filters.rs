//! The three filters, as the proxy sees them: ban check, probe match, rate limits.
//!
//! Each returns `Some(answered)` when it has dealt with the request itself.

use std::net::IpAddr;

use pingora::prelude::*;
use pingora::proxy::Session;

use crate::config::Settings;
use crate::proxy::{Gateway, RequestCtx};
use crate::runtime::Runtime;

/// The filter engines of one runtime.
pub struct Filters {}

impl Filters {
    /// Builds the engines for `settings`, carrying state over from `previous`.
    pub fn build(_settings: &Settings, _previous: Option<&Filters>) -> Result<Filters, String> {
        Ok(Filters {})
    }
}

/// Ban check and probe match: before routing, so refused requests cost the least.
pub async fn before_route(
    _gw: &Gateway,
    _session: &mut Session,
    _ctx: &mut RequestCtx,
    _rt: &Runtime,
    _key: IpAddr,
    _now: u64,
) -> Result<Option<bool>> {
    Ok(None)
}

/// Rate limits and concurrency caps of the matched route.
pub async fn after_route(
    _gw: &Gateway,
    _session: &mut Session,
    _ctx: &mut RequestCtx,
    _rt: &Runtime,
    _route: usize,
    _key: IpAddr,
    _now: u64,
) -> Result<Option<bool>> {
    Ok(None)
}

/// Feeds an upstream response status to the reputation table.
pub fn upstream_status(_ctx: &RequestCtx, _rt: &Runtime, _status: u16) {}
