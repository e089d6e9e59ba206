//! The three filters, as the proxy sees them: ban check, probe match, rate limits (plus the
//! concurrency caps), and the upstream status fed back into the reputation table.
//!
//! Each hook returns `Some(answered)` when it has dealt with the request itself.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::prelude::*;
use pingora::proxy::Session;
use portcullis_policy::limiter::{check_all, Decision as Limit, Zone};
use portcullis_policy::reputation::{OffenseKind, ReputationSettings, Verdict};
use smallvec::SmallVec;

use crate::config::{Refusal, Settings};
use crate::inflight::Caps;
use crate::metrics::FilterMetrics;
use crate::proxy::{Decision, Gateway, RequestCtx};
use crate::runtime::Runtime;
use crate::state::BanStore;

/// The filter engines of one runtime.
pub struct Filters {
    /// Rate-limit zones, indexed as `settings.zones`.
    pub zones: Vec<Arc<Zone>>,
    /// The ban table (shared by every runtime of the process).
    pub store: Arc<BanStore>,
    /// Concurrency caps (shared by every runtime of the process).
    pub caps: Arc<Caps>,
    /// `portcullis_rate_limit_decisions_total{decision="passed"}` per zone, resolved once.
    pub zone_passed: Vec<prometheus::IntCounter>,
}

impl Filters {
    /// Builds the engines for `settings`. With a `previous` runtime, the ban table, the caps and
    /// every zone whose settings did not change are carried over with their state.
    pub fn build(settings: &Settings, previous: Option<&Filters>) -> Result<Filters, String> {
        let rep_settings = settings
            .reputation
            .as_ref()
            .map(|r| r.engine.clone())
            .unwrap_or_else(|| ReputationSettings {
                ipv6_prefix: settings.client_ip_prefix(),
                ..ReputationSettings::default()
            });
        let store = match previous {
            Some(prev) => {
                prev.store.reputation.reconfigure(rep_settings);
                prev.store.clone()
            }
            None => Arc::new(BanStore::open(
                settings.server.state_dir.as_deref(),
                rep_settings,
            )?),
        };
        let zones = settings
            .zones
            .iter()
            .map(|z| {
                previous
                    .and_then(|p| p.zones.iter().find(|old| *old.settings() == z.engine))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Zone::new(z.engine.clone())))
            })
            .collect();
        let decisions = &FilterMetrics::get().rate_limit;
        let zone_passed = settings
            .zones
            .iter()
            .map(|z| decisions.with_label_values(&[z.engine.name.as_str(), "passed"]))
            .collect();
        Ok(Filters {
            zone_passed,
            zones,
            store,
            caps: previous.map_or_else(|| Arc::new(Caps::default()), |p| p.caps.clone()),
        })
    }
}

/// Milliseconds on a clock that never steps back (nginx's limiter assumes one; the wall clock
/// used for bans can jump with NTP).
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    // Start well above 0 so a client first seen now is never mistaken for "seen at epoch".
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1_000_000
}

/// Body of a refusal with `status`.
pub(crate) fn refusal_body(status: u16) -> &'static str {
    match status {
        403 => "403 Forbidden\n",
        404 => "404 Not Found\n",
        413 => "413 Request Entity Too Large\n",
        429 => "429 Too Many Requests\n",
        503 => "503 Service Unavailable\n",
        _ => "request refused\n",
    }
}

async fn refuse(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    how: Refusal,
) -> Result<Option<bool>> {
    match how {
        Refusal::Drop => Gateway::drop_connection(ctx).map(Some),
        Refusal::Status(s) => gw.refuse(session, s, refusal_body(s), &[]).await.map(Some),
    }
}

/// Reports an offense by `key` if reputation is configured, recording any resulting ban.
pub fn offense(rt: &Runtime, key: IpAddr, kind: OffenseKind, now: u64) {
    let Some(cfg) = &rt.settings.reputation else {
        return;
    };
    let store = &rt.filters.store;
    if let Some(event) = store
        .reputation
        .offense(key, kind, cfg.weights.weight(kind), now)
    {
        store.record(event);
    }
}

/// `Banned` or `Denied` when `key` may not be served at `now`.
pub fn banned_now(rt: &Runtime, key: IpAddr, now: u64) -> Option<Decision> {
    match rt.filters.store.reputation.check(key, now) {
        Verdict::Allow => None,
        Verdict::Banned { .. } => Some(Decision::Banned),
        Verdict::Denied => Some(Decision::Denied),
    }
}

/// How banned and denied clients are answered.
fn ban_action(rt: &Runtime) -> Refusal {
    rt.settings
        .reputation
        .as_ref()
        .map_or(Refusal::Status(403), |r| r.ban_action)
}

/// The ban refusal as an error, for phases that can no longer write a response themselves
/// (`fail_to_proxy` answers with the status, or closes the connection for `drop`).
pub fn refusal_error(ctx: &mut RequestCtx) -> Box<Error> {
    let action = ctx.rt.as_deref().map_or(Refusal::Status(403), ban_action);
    match action {
        Refusal::Drop => match Gateway::drop_connection(ctx) {
            Err(e) => e,
            Ok(_) => Error::explain(ErrorType::ConnectionClosed, "closed by policy"),
        },
        Refusal::Status(s) => Error::explain(
            ErrorType::HTTPStatus(s),
            "client banned while its request was in flight",
        ),
    }
}

/// Ban check and probe match: before routing, so refused requests cost the least.
pub async fn before_route(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    rt: &Runtime,
    key: IpAddr,
    now: u64,
) -> Result<Option<bool>> {
    if let Some(decision) = banned_now(rt, key, now) {
        ctx.decision = decision;
        return refuse(gw, session, ctx, ban_action(rt)).await;
    }

    if let Some(probes) = &rt.settings.probes {
        let req = session.req_header();
        let user_agent = req.headers.get("user-agent").map(|v| v.as_bytes());
        if let Some(hit) = probes.matcher.check(req.raw_path(), user_agent) {
            let action = match probes.action {
                Refusal::Drop => "drop",
                Refusal::Status(403) => "403",
                Refusal::Status(404) => "404",
                Refusal::Status(_) => "status",
            };
            FilterMetrics::get()
                .probe_hits
                .with_label_values(&[hit.category.as_str(), action])
                .inc();
            tracing::debug!(client = %key, category = hit.category.as_str(), rule = %hit.rule, "probe");
            ctx.decision = Decision::Probe;
            offense(rt, key, OffenseKind::Probe, now);
            return refuse(gw, session, ctx, probes.action).await;
        }
    }
    Ok(None)
}

/// Rate limits and concurrency caps of the matched route.
pub async fn after_route(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    rt: &Runtime,
    route: usize,
    key: IpAddr,
    now: u64,
) -> Result<Option<bool>> {
    let zone_ids = &rt.settings.routes[route].zones;
    if !zone_ids.is_empty() {
        let (dry, enforced): (SmallVec<[usize; 4]>, SmallVec<[usize; 4]>) = zone_ids
            .iter()
            .copied()
            .partition(|&i| rt.settings.zones[i].dry_run);
        let m = &FilterMetrics::get().rate_limit;
        let now_mono = monotonic_ms();
        let zones = |ids: &[usize]| -> SmallVec<[&Zone; 4]> {
            ids.iter().map(|&i| rt.filters.zones[i].as_ref()).collect()
        };
        if !dry.is_empty() {
            if let Limit::Reject { zone, .. } = check_all(&zones(&dry), key, now_mono) {
                let name = &rt.settings.zones[dry[zone]].engine.name;
                m.with_label_values(&[name, "dry_run"]).inc();
                tracing::info!(client = %key, zone = %name, "rate limit (dry run): would reject");
                ctx.decision = Decision::DryRun;
            }
        }
        match check_all(&zones(&enforced), key, now_mono) {
            Limit::Pass => {
                for &i in &enforced {
                    rt.filters.zone_passed[i].inc();
                }
            }
            Limit::Delay { ms } => {
                for &i in &enforced {
                    m.with_label_values(&[&rt.settings.zones[i].engine.name, "delayed"])
                        .inc();
                }
                ctx.decision = Decision::Delayed;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            decision @ Limit::Reject { zone, .. } => {
                let zone = &rt.settings.zones[enforced[zone]];
                m.with_label_values(&[&zone.engine.name, "rejected"]).inc();
                ctx.decision = Decision::RateLimited;
                offense(rt, key, OffenseKind::RateLimit, now);
                let retry = decision.retry_after_secs().unwrap_or(1).to_string();
                return gw
                    .refuse(
                        session,
                        zone.status,
                        refusal_body(zone.status),
                        &[("retry-after", retry)],
                    )
                    .await
                    .map(Some);
            }
        }
    }

    let caps = &rt.settings.inflight;
    if caps.per_client > 0 {
        match rt.filters.caps.client(key, caps.per_client) {
            Some(guard) => ctx.inflight.push(guard),
            None => return inflight_refusal(gw, session, ctx, rt, "client").await,
        }
    }
    if caps.total > 0 {
        match rt.filters.caps.total(caps.total) {
            Some(guard) => ctx.inflight.push(guard),
            None => return inflight_refusal(gw, session, ctx, rt, "total").await,
        }
    }
    Ok(None)
}

async fn inflight_refusal(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    rt: &Runtime,
    scope: &str,
) -> Result<Option<bool>> {
    FilterMetrics::get()
        .inflight_rejections
        .with_label_values(&[scope])
        .inc();
    ctx.decision = Decision::Inflight;
    ctx.inflight.clear();
    let status = rt.settings.inflight.status;
    gw.refuse(
        session,
        status,
        refusal_body(status),
        &[("retry-after", "1".into())],
    )
    .await
    .map(Some)
}

/// Feeds an upstream response status to the reputation table.
pub fn upstream_status(ctx: &RequestCtx, rt: &Runtime, status: u16, now: u64) {
    let (Some(cfg), Some(key)) = (&rt.settings.reputation, ctx.key) else {
        return;
    };
    if cfg.offense_status.contains(&status) {
        offense(rt, key, OffenseKind::UpstreamStatus, now);
    }
}
