//! The running configuration: validated settings plus the engines built from them.
//!
//! A reload builds a new [`Runtime`] and swaps it in; requests already in flight keep the one
//! they started with. Engines whose state must survive a reload (limiter zones that still
//! exist, the reputation table) are carried over from the previous runtime.

use std::sync::Arc;

use portcullis_policy::client::ClientIdentity;

use prometheus::IntCounter;

use crate::access_log::AccessLog;
use crate::config::Settings;
use crate::filters::Filters;
use crate::proxy::Decision;
use crate::routes::Router;
use crate::upstream::Upstream;

/// Everything a request needs to be decided and forwarded.
pub struct Runtime {
    /// The validated settings this runtime was built from.
    pub settings: Settings,
    /// Client identity resolver.
    pub client_ip: ClientIdentity,
    /// Route lookup.
    pub router: Router,
    /// Upstream groups, indexed as in `settings.upstreams`.
    pub upstreams: Vec<Upstream>,
    /// The filters: bans, probes, limits.
    pub filters: Filters,
    /// The API's own routes (`[api]`), if configured.
    pub api: Option<crate::api::ApiModel>,
    /// Access log writer.
    pub access_log: Arc<AccessLog>,
    /// `portcullis_requests_total` resolved for every (route, decision) once, so the request
    /// path does not hash labels: index 0 is "no route", then one row per route.
    requests: Vec<Vec<IntCounter>>,
}

impl Runtime {
    /// The requests counter for a request on `route` (None: no route) with `decision`.
    pub fn request_counter(&self, route: Option<usize>, decision: Decision) -> &IntCounter {
        &self.requests[route.map_or(0, |r| r + 1)][decision as usize]
    }

    /// Builds a runtime from `settings`, keeping the state of `previous` where it still applies.
    pub fn build(settings: Settings, previous: Option<&Runtime>) -> Result<Runtime, String> {
        let access_log = match previous {
            Some(prev) if prev.settings.access_log.target == settings.access_log.target => {
                prev.access_log.reloaded(settings.access_log.format)
            }
            _ => Arc::new(AccessLog::open(&settings.access_log)?),
        };
        let filters = Filters::build(&settings, previous.map(|p| &p.filters))?;
        let m = &crate::metrics::Metrics::get().requests;
        let requests = std::iter::once("-")
            .chain(settings.routes.iter().map(|r| r.name.as_str()))
            .map(|route| {
                Decision::ALL
                    .iter()
                    .map(|d| m.with_label_values(&[route, d.as_str()]))
                    .collect()
            })
            .collect();
        let api = settings
            .api
            .as_ref()
            .map(|a| crate::api::ApiModel::build(a, previous.and_then(|p| p.api.as_ref())));
        Ok(Runtime {
            api,
            requests,
            client_ip: settings.client_ip.clone(),
            router: Router::new(&settings.routes),
            upstreams: settings
                .upstreams
                .iter()
                .cloned()
                .map(Upstream::new)
                .collect(),
            filters,
            access_log,
            settings,
        })
    }
}
