//! How the walk reports what it did: metrics, logs, the ban journal and the cluster are the
//! binary's business, so the walk tells an [`Observer`] and never reaches into globals.

use std::fmt::Display;
use std::net::IpAddr;

use portcullis_policy::probes::Category;
use portcullis_policy::reputation::{Event, OffenseKind};

use crate::outcome::Malformed;

/// What a rate-limit zone did with a request; the `decision` label of
/// `portcullis_rate_limit_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneOutcome {
    /// Within the rate (or the burst, `nodelay`).
    Passed,
    /// Within the burst, delayed to the rate.
    Delayed,
    /// Over the burst: refused.
    Rejected,
    /// Over the burst in a dry-run zone: counted only.
    DryRun,
}

impl ZoneOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneOutcome::Passed => "passed",
            ZoneOutcome::Delayed => "delayed",
            ZoneOutcome::Rejected => "rejected",
            ZoneOutcome::DryRun => "dry_run",
        }
    }
}

/// Receives every event of the walk. Each method is called on the request's thread, inside
/// the walk: implementations count and log, and hand slow work (a disk, a network) elsewhere.
pub trait Observer {
    /// A probe rule matched `client`'s request. `action` is what it got: `403`, `404`,
    /// `status`, `drop`, or `dry_run` (counted only).
    fn probe(&self, client: IpAddr, category: Category, rule: &str, action: &'static str);

    /// A request outside the API's spec: `category` is `unknown_route` or `method`, `action`
    /// what `[api] unknown` made of it (`404`, `405`, `offense`, `log`).
    fn outside_spec(
        &self,
        client: IpAddr,
        method: &str,
        path: &str,
        category: &'static str,
        action: &'static str,
    );

    /// What zone `zone` (its index and name) did with a request of `client`.
    fn rate_limit(&self, client: IpAddr, zone: usize, name: &str, outcome: ZoneOutcome);

    /// A concurrency cap refused a request: `scope` is `client` or `total`.
    fn inflight_refused(&self, scope: &'static str);

    /// A malformed request, by reason (`client` when known).
    fn malformed(&self, client: Option<IpAddr>, reason: Malformed, detail: &dyn Display);

    /// An offense of `weight` by the client at `addr` was counted; `ban` is the ban it caused,
    /// which the observer must record (journal, log, cluster): the table already enforces it.
    fn offense(&self, addr: IpAddr, kind: OffenseKind, weight: u32, ban: Option<Event>);
}

/// An observer that ignores everything; for benchmarks and tests that count nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unobserved;

impl Observer for Unobserved {
    fn probe(&self, _: IpAddr, _: Category, _: &str, _: &'static str) {}
    fn outside_spec(&self, _: IpAddr, _: &str, _: &str, _: &'static str, _: &'static str) {}
    fn rate_limit(&self, _: IpAddr, _: usize, _: &str, _: ZoneOutcome) {}
    fn inflight_refused(&self, _: &'static str) {}
    fn malformed(&self, _: Option<IpAddr>, _: Malformed, _: &dyn Display) {}
    fn offense(&self, _: IpAddr, _: OffenseKind, _: u32, _: Option<Event>) {}
}
