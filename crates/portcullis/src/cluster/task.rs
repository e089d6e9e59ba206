//! The cluster task: one connection to Redis for commands, one subscription, and the queue
//! from the hot path. Everything that waits on Redis waits here, never in a request.
//!
//! Up: each queued offense or ban change becomes one atomic script; each message from
//! another gateway is applied to the local table. Down: the gateway serves from its local
//! table (fail open); offenses are not shared, ban changes are kept for later (local bans
//! are in the table; unbans in a bounded list). At each (re)connection, in this order:
//! subscribe (so nothing published from then on is missed), replay the unbans made while
//! away, load every active ban, write back every local ban Redis does not have.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ipnet::IpNet;
use portcullis_policy::reputation::{ban_duration, BanInfo, BanOrigin, ReputationSettings};
use portcullis_policy::time::{Clock, SystemClock};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use tokio::sync::mpsc::Receiver;

use super::keys::{client_of, net_of, Keys};
use super::message::{decode_ban, encode_ban, Message};
use super::metrics::{ClusterMetrics, ErrorKind};
use super::scripts;
use crate::state::{BanStore, Outgoing};

/// First wait before reconnecting; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often an idle connection is checked (a half-open TCP connection says nothing).
const HEALTH_CHECK: Duration = Duration::from_secs(1);
/// Unbans made while Redis was away, kept for replay at most.
const MAX_PENDING_UNBANS: usize = 10_000;
/// Bans fetched per MGET, and written back per batch, at (re)connection.
const BATCH: usize = 256;
/// Ban durations passed to the offense script: the 1st to the 22nd ban (fail2ban caps the
/// escalation exponent at 20, so the series is flat by then unless `multipliers` is longer).
const DURATIONS: u32 = 22;

/// What the task needs.
pub struct Context {
    /// The Redis client (URL, password, TLS).
    pub client: redis::Client,
    /// Bound on connecting and on each command.
    pub timeout: Duration,
    /// Key names.
    pub keys: Keys,
    /// This gateway's id on the channel.
    pub node: String,
    /// The local ban table.
    pub store: Arc<BanStore>,
}

/// Why serving stopped.
struct Down(RedisError);

/// Runs until the queue closes (the process ends). `first_sync` hears once the first
/// connection attempt is over (bans loaded, or Redis unreachable).
pub async fn run(
    ctx: Context,
    mut queue: Receiver<Outgoing>,
    first_sync: std::sync::mpsc::SyncSender<()>,
) {
    let mut first_sync = Some(first_sync);
    let m = ClusterMetrics::get();
    let mut backoff = MIN_BACKOFF;
    let mut pending_unbans: Vec<(IpNet, u64)> = Vec::new();
    // Logged once per change, not per attempt.
    let mut was_up: Option<bool> = None;
    loop {
        match connect(&ctx).await {
            Ok((conn, pubsub)) => {
                let mut link = Link {
                    ctx: &ctx,
                    conn,
                    seq: 0,
                };
                let synced = link.resync(&mut pending_unbans).await;
                if let Some(tx) = first_sync.take() {
                    let _ = tx.send(());
                }
                match synced {
                    Ok(()) => {
                        super::shared::attach(shared_connection(&ctx).await);
                        m.up.set(1);
                        tracing::info!(redis = %redact(&ctx), node = %ctx.node, "cluster up: sharing bans and offenses through Redis");
                        backoff = MIN_BACKOFF;
                        let Down(e) = link.serve(pubsub, &mut queue, &mut pending_unbans).await;
                        super::shared::attach(None);
                        m.up.set(0);
                        m.error(ErrorKind::of(&e));
                        tracing::warn!(error = %e, "cluster down: Redis unreachable; serving with local bans only, new bans are made locally and written back when it returns");
                        was_up = Some(false);
                    }
                    Err(e) => {
                        m.error(ErrorKind::of(&e));
                        if was_up != Some(false) {
                            tracing::warn!(error = %e, "cluster down: cannot load bans from Redis; retrying");
                            was_up = Some(false);
                        }
                    }
                }
            }
            Err(e) => {
                if let Some(tx) = first_sync.take() {
                    let _ = tx.send(());
                }
                m.error(ErrorKind::of(&e));
                if was_up != Some(false) {
                    tracing::warn!(redis = %redact(&ctx), error = %e, "cluster down: cannot reach Redis; serving with local bans only, retrying");
                    was_up = Some(false);
                }
            }
        }
        // Wait before the next attempt, keeping the queue drained meanwhile.
        let wake = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake) => break,
                message = queue.recv() => match message {
                    None => return,
                    Some(message) => offline(message, &mut pending_unbans),
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The URL without its password, for logs.
fn redact(ctx: &Context) -> String {
    let info = ctx.client.get_connection_info();
    format!("{}", info.addr())
}

/// A message that arrives while Redis is away.
fn offline(message: Outgoing, pending_unbans: &mut Vec<(IpNet, u64)>) {
    let m = ClusterMetrics::get();
    match message {
        // Counted locally; the cluster-wide count resumes with the next offense.
        Outgoing::Offense { .. } => m.dropped.with_label_values(&["offline"]).inc(),
        // In the local table: written back at reconnection.
        Outgoing::Ban(_) => {}
        Outgoing::Unban { net, at_ms } => {
            if pending_unbans.len() < MAX_PENDING_UNBANS {
                pending_unbans.push((net, at_ms));
            } else {
                m.dropped.with_label_values(&["offline"]).inc();
            }
        }
    }
}

/// A command connection whose connect and every answer are bounded by `timeout`.
async fn multiplexed(ctx: &Context) -> Result<MultiplexedConnection, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(ctx.timeout))
        .set_response_timeout(Some(ctx.timeout));
    ctx.client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn connect(ctx: &Context) -> Result<(MultiplexedConnection, redis::aio::PubSub), RedisError> {
    let conn = multiplexed(ctx).await?;
    let mut pubsub = within(ctx.timeout, ctx.client.get_async_pubsub()).await?;
    within(ctx.timeout, pubsub.subscribe(ctx.keys.channel())).await?;
    Ok((conn, pubsub))
}

/// The connection of `shared = true` zones, with their script loaded (so a request never
/// pays for loading it); `None` when Redis refused it (shared zones then count locally).
async fn shared_connection(ctx: &Context) -> Option<MultiplexedConnection> {
    let mut conn = match multiplexed(ctx).await {
        Ok(conn) => conn,
        Err(e) => {
            ClusterMetrics::get().error(ErrorKind::of(&e));
            return None;
        }
    };
    if let Err(e) = within(ctx.timeout, scripts::limit().load_async(&mut conn)).await {
        ClusterMetrics::get().error(ErrorKind::of(&e));
        return None;
    }
    Some(conn)
}

/// `future`, or a timeout error after `limit`.
async fn within<T>(
    limit: Duration,
    future: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "Redis did not answer in time",
        ))),
    }
}

/// A live connection.
struct Link<'a> {
    ctx: &'a Context,
    conn: MultiplexedConnection,
    /// Makes offense members unique within this node.
    seq: u64,
}

impl Link<'_> {
    /// Replays unbans, loads every active ban, writes back local bans.
    async fn resync(&mut self, pending_unbans: &mut Vec<(IpNet, u64)>) -> Result<(), RedisError> {
        let m = ClusterMetrics::get();
        while let Some((net, at_ms)) = pending_unbans.last().copied() {
            self.unban(net, at_ms).await?;
            pending_unbans.pop();
            m.resync.with_label_values(&["unbans_replayed"]).inc();
        }
        let now = SystemClock.now_ms();
        let nets: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.ctx.keys.ban_index())
            .arg(now)
            .arg("+inf")
            .query_async(&mut self.conn)
            .await?;
        for chunk in nets.chunks(BATCH) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|net| self.ctx.keys.ban_named(net))
                .collect();
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut self.conn)
                .await?;
            for value in values.into_iter().flatten() {
                match decode_ban(&value) {
                    Some(ban) => {
                        if self.apply(&ban, SystemClock.now_ms()) {
                            m.resync.with_label_values(&["loaded"]).inc();
                        }
                    }
                    None => m.error(ErrorKind::Decode),
                }
            }
        }
        let local = self.ctx.store.reputation.bans(SystemClock.now_ms());
        for chunk in local.chunks(BATCH) {
            let writes = chunk.iter().map(|ban| {
                let mut conn = self.conn.clone();
                let ctx = self.ctx;
                async move { put(ctx, &mut conn, ban, true).await }
            });
            for result in futures_util::future::join_all(writes).await {
                if result? == "stored" {
                    m.resync.with_label_values(&["written_back"]).inc();
                }
            }
        }
        Ok(())
    }

    /// Serves until Redis goes away.
    async fn serve(
        &mut self,
        pubsub: redis::aio::PubSub,
        queue: &mut Receiver<Outgoing>,
        pending_unbans: &mut Vec<(IpNet, u64)>,
    ) -> Down {
        let mut messages = pubsub.into_on_message();
        let mut health = tokio::time::interval(HEALTH_CHECK);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = queue.recv() => {
                    let Some(message) = message else {
                        // The process is ending.
                        return Down(RedisError::from(std::io::Error::other("shutting down")));
                    };
                    if let Err(e) = self.send(&message).await {
                        if is_connection_error(&e) {
                            offline(message, pending_unbans);
                            return Down(e);
                        }
                        ClusterMetrics::get().error(ErrorKind::of(&e));
                        tracing::debug!(error = %e, "Redis refused a cluster update");
                    }
                }
                received = messages.next() => match received {
                    Some(msg) => self.receive(msg.get_payload_bytes()),
                    None => return Down(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the subscription connection closed",
                    ))),
                },
                _ = health.tick() => {
                    let ping: Result<String, RedisError> =
                        redis::cmd("PING").query_async(&mut self.conn).await;
                    if let Err(e) = ping {
                        return Down(e);
                    }
                }
            }
        }
    }

    /// Tells Redis (and through it the other gateways) about one local change.
    async fn send(&mut self, message: &Outgoing) -> Result<(), RedisError> {
        let m = ClusterMetrics::get();
        match message {
            Outgoing::Offense {
                client,
                kind,
                weight,
                at_ms,
            } => {
                let (result, value) = self
                    .offense(*client, kind.as_str(), *weight, *at_ms, None)
                    .await?;
                match result.as_str() {
                    "counted" => m.offenses.with_label_values(&["counted"]).inc(),
                    "banned" => {
                        m.offenses.with_label_values(&["banned"]).inc();
                        m.messages.with_label_values(&["published", "ban"]).inc();
                    }
                    "refused_offender" => m.refused.with_label_values(&["offender"]).inc(),
                    "refused_ban" => m.refused.with_label_values(&["ban"]).inc(),
                    _ => {}
                }
                self.apply_stored(&value);
            }
            Outgoing::Ban(ban) if ban.origin == BanOrigin::Automatic => {
                let client = client_of(&ban.net, self.ipv6_prefix());
                let Some(client) = client else {
                    return Ok(());
                };
                let (result, value) = self
                    .offense(
                        client,
                        ban.trigger.map_or("manual", |k| k.as_str()),
                        0,
                        ban.created_ms,
                        Some(ban),
                    )
                    .await?;
                match result.as_str() {
                    "banned" => m.messages.with_label_values(&["published", "ban"]).inc(),
                    "refused_ban" => m.refused.with_label_values(&["ban"]).inc(),
                    _ => {}
                }
                // The cluster's history may make it longer than the local table made it.
                self.apply_stored(&value);
            }
            Outgoing::Ban(ban) => {
                if put(self.ctx, &mut self.conn, ban, false).await? == "refused" {
                    m.refused.with_label_values(&["ban"]).inc();
                } else {
                    m.messages.with_label_values(&["published", "ban"]).inc();
                }
            }
            Outgoing::Unban { net, at_ms } => self.unban(*net, *at_ms).await?,
        }
        Ok(())
    }

    fn ipv6_prefix(&self) -> u8 {
        self.ctx.store.reputation.settings().ipv6_prefix
    }

    /// Runs the offense script: an offense, or (`local` given) a ban made here first.
    async fn offense(
        &mut self,
        client: IpAddr,
        kind: &str,
        weight: u32,
        at_ms: u64,
        local: Option<&BanInfo>,
    ) -> Result<(String, String), RedisError> {
        let settings = self.ctx.store.reputation.settings();
        let keys = &self.ctx.keys;
        let net = net_of(client, settings.ipv6_prefix);
        self.seq += 1;
        let (durations, rnd) = durations(&settings);
        let mut call = scripts::offense().prepare_invoke();
        call.key(keys.offenses(client))
            .key(keys.history(client))
            .key(keys.ban(&net))
            .key(keys.offender_index())
            .key(keys.ban_index())
            .arg(if local.is_some() { "ban" } else { "offense" })
            .arg(at_ms)
            .arg(weight)
            .arg(settings.findtime_ms.max(1))
            .arg(settings.maxretry)
            .arg(settings.history_ms)
            .arg(settings.max_offenders)
            .arg(settings.max_bans)
            .arg(&self.ctx.node)
            .arg(kind)
            .arg(client.to_string())
            .arg(net.to_string())
            .arg(keys.channel())
            .arg(format!("{}:{}", self.ctx.node, self.seq))
            .arg(rnd)
            .arg(local.map_or(0, |b| b.ban_count))
            .arg(local.map_or(0, |b| b.until_ms))
            .arg(local.map_or("", |b| b.reason.as_str()))
            .arg(local.map_or(0, |b| b.score))
            .arg(durations);
        call.invoke_async(&mut self.conn).await
    }

    /// Lifts a ban everywhere.
    async fn unban(&mut self, net: IpNet, at_ms: u64) -> Result<(), RedisError> {
        let keys = &self.ctx.keys;
        let client = client_of(&net, self.ipv6_prefix());
        let message = Message {
            node: self.ctx.node.clone(),
            at_ms,
            ban: None,
            unban: Some(net.trunc()),
        };
        let mut call = scripts::unban().prepare_invoke();
        call.key(keys.ban(&net))
            .key(keys.ban_index())
            .key(client.map_or_else(
                || keys.offenses(IpAddr::from([0, 0, 0, 0])),
                |c| keys.offenses(c),
            ))
            .key(keys.offender_index())
            .arg(net.trunc().to_string())
            .arg(client.map_or_else(String::new, |c| c.to_string()))
            .arg(keys.channel())
            .arg(message.encode());
        let _: i64 = call.invoke_async(&mut self.conn).await?;
        ClusterMetrics::get()
            .messages
            .with_label_values(&["published", "unban"])
            .inc();
        Ok(())
    }

    /// A ban the offense script returned: enforce it here too (when it is new or longer).
    fn apply_stored(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        match decode_ban(value.as_bytes()) {
            Some(ban) => {
                self.apply(&ban, SystemClock.now_ms());
            }
            None => ClusterMetrics::get().error(ErrorKind::Decode),
        }
    }

    /// Applies a ban from Redis to the local table; true when it changed something.
    fn apply(&self, ban: &BanInfo, now_ms: u64) -> bool {
        match self.ctx.store.reputation.apply_remote(ban, now_ms) {
            Ok(Some(event)) => {
                self.ctx.store.record_remote(event);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(client = %ban.net, error = %e, "ban from the cluster not applied");
                false
            }
        }
    }

    /// A message from the channel.
    fn receive(&self, payload: &[u8]) {
        let m = ClusterMetrics::get();
        let Some(message) = Message::decode(payload) else {
            m.error(ErrorKind::Decode);
            return;
        };
        if message.node == self.ctx.node {
            return;
        }
        let now = SystemClock.now_ms();
        if let Some(ban) = &message.ban {
            m.messages.with_label_values(&["received", "ban"]).inc();
            self.apply(ban, now);
            if message.at_ms > 0 {
                m.sync_lag
                    .observe(now.saturating_sub(message.at_ms) as f64 / 1000.0);
            }
        }
        if let Some(net) = message.unban {
            m.messages.with_label_values(&["received", "unban"]).inc();
            if let Some(event) = self.ctx.store.reputation.unban(net, now) {
                self.ctx.store.record_remote(event);
            }
        }
    }
}

/// Stores a local ban in Redis (`nx`: only when Redis does not have it) and publishes it.
async fn put(
    ctx: &Context,
    conn: &mut MultiplexedConnection,
    ban: &BanInfo,
    nx: bool,
) -> Result<String, RedisError> {
    let now = SystemClock.now_ms();
    let settings = ctx.store.reputation.settings();
    let forever = ban.until_ms == u64::MAX;
    let ttl = if forever {
        0
    } else {
        ban.until_ms.saturating_sub(now).max(1)
    };
    let message = Message {
        node: ctx.node.clone(),
        at_ms: if nx { 0 } else { ban.created_ms },
        ban: Some(ban.clone()),
        unban: None,
    };
    let client = client_of(&ban.net, settings.ipv6_prefix);
    let count = match (client, ban.origin) {
        (Some(_), BanOrigin::Automatic) => ban.ban_count,
        _ => 0,
    };
    let mut call = scripts::put().prepare_invoke();
    call.key(ctx.keys.ban(&ban.net))
        .key(ctx.keys.ban_index())
        .key(client.map_or_else(
            || ctx.keys.history(IpAddr::from([0, 0, 0, 0])),
            |c| ctx.keys.history(c),
        ))
        .arg(encode_ban(ban))
        .arg(ttl)
        .arg(if forever {
            "+inf".to_string()
        } else {
            ban.until_ms.to_string()
        })
        .arg(now)
        .arg(settings.max_bans)
        .arg(ban.net.trunc().to_string())
        .arg(ctx.keys.channel())
        .arg(message.encode())
        .arg(if nx { "1" } else { "0" })
        .arg(count)
        .arg(settings.history_ms);
    call.invoke_async(conn).await
}

/// The duration of the 1st, 2nd, ... automatic ban without the random part, and a random
/// part for this ban (`0..=rndtime`), for the offense script.
fn durations(settings: &ReputationSettings) -> (Vec<u64>, u64) {
    let mut fixed = settings.clone();
    if let Some(inc) = &mut fixed.increment {
        inc.rndtime_ms = 0;
    }
    let count = settings
        .increment
        .as_ref()
        .map_or(1, |inc| DURATIONS.max(inc.multipliers.len() as u32 + 1));
    let series: Vec<u64> = (1..=count).map(|n| ban_duration(&fixed, n)).collect();
    // ban_duration adds the random part itself; what it adds over the fixed one is it.
    let rnd = ban_duration(settings, 1).saturating_sub(series[0]);
    (series, rnd)
}

/// An error after which the connection is not worth using.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy::reputation::Increment;

    #[test]
    fn durations_follow_the_escalation_and_the_random_part_is_separate() {
        let settings = ReputationSettings {
            bantime_ms: 1000,
            increment: Some(Increment {
                factor: 2.0,
                multipliers: vec![],
                maxtime_ms: 10_000,
                rndtime_ms: 50,
            }),
            ..ReputationSettings::default()
        };
        let (series, rnd) = durations(&settings);
        assert_eq!(series.len(), DURATIONS as usize);
        assert_eq!(&series[..5], &[1000, 2000, 4000, 8000, 10_000]);
        assert!(rnd <= 50);
        let flat = ReputationSettings {
            bantime_ms: 700,
            increment: None,
            ..ReputationSettings::default()
        };
        assert_eq!(durations(&flat), (vec![700], 0));
    }
}
