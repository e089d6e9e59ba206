//! `[cluster]`: several gateways behind one load balancer share bans and offenses through
//! Redis (or Valkey).
//!
//! The request path never waits on Redis: [`crate::state::BanStore`] hands offenses and ban
//! changes to a bounded queue ([`crate::state::ClusterLink`]), and one background task
//! ([`task`]) on a thread of its own turns them into atomic Lua scripts ([`scripts`]) and
//! applies what the other gateways publish to the local table. When Redis is unreachable the
//! gateway goes on with its local table and journal (fail open) and converges when it
//! returns. `docs/operations.md` ("Several gateways") has the operator's view.

mod keys;
mod message;
pub mod metrics;
mod scripts;
pub mod shared;
mod task;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::config::ClusterSettings;
use crate::state::{BanStore, ClusterLink};

/// Starts the cluster task for `store` and waits (bounded) for its first connection attempt,
/// so a gateway that starts while Redis is up enforces every active ban from its first
/// request; while Redis is down, start is delayed by `timeout` at most. Fails only on what a restart cannot fix by itself: an
/// unreadable password file, a URL the client refuses, no thread.
pub fn start(settings: &ClusterSettings, store: Arc<BanStore>) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    let mut info = settings
        .redis
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("cluster.redis: {e}"))?;
    if let Some(path) = &settings.password_file {
        let password = std::fs::read_to_string(path)
            .map_err(|e| format!("cluster.password_file {}: {e}", path.display()))?;
        let redis = info.redis_settings().clone().set_password(password.trim());
        info = info.set_redis_settings(redis);
    }
    let client = redis::Client::open(info).map_err(|e| format!("cluster.redis: {e}"))?;
    let m = metrics::ClusterMetrics::get();
    let (tx, rx) = tokio::sync::mpsc::channel(settings.queue);
    store.attach_cluster(ClusterLink {
        queue: tx,
        dropped: m.dropped.with_label_values(&["queue_full"]),
    });
    shared::init(
        settings.shared_timeout,
        keys::Keys::new(&settings.key_prefix),
    );
    let ctx = task::Context {
        client,
        timeout: settings.timeout,
        keys: keys::Keys::new(&settings.key_prefix),
        node: node_id(),
        store,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the cluster task: {e}"))?;
    let (synced_tx, synced) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || runtime.block_on(task::run(ctx, rx, synced_tx)))
        .map_err(|e| format!("cannot start the cluster task: {e}"))?;
    // Connecting, subscribing and loading take a few round trips of `timeout` at most each;
    // a Redis that holds many bans may need longer, and is then caught up with as it serves.
    if synced.recv_timeout(settings.timeout * 8).is_err() {
        tracing::warn!("the first sync with Redis is taking long; serving meanwhile");
    }
    Ok(())
}

/// A name for this gateway on the channel, unique per process: the host name (when known),
/// the process id and a random part (a container's pid is often 1).
fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{host}-{}-{:08x}", std::process::id(), random as u32)
}
