//! The reputation table and its persistence, shared by every runtime across reloads.
//!
//! When a ban starts or ends, its journal record is written (one `write(2)`, no fsync) before
//! the request that caused it is answered, so a `kill -9` right after a ban cannot lose it.
//! Bans are rare next to requests; the slow parts (`fdatasync`, snapshots) run on a
//! background thread that group-commits once a second.
//!
//! With `[cluster]`, offenses this table counted and ban changes made here also leave the
//! process for the other gateways ([`ClusterLink`]): handed to the cluster task through a
//! bounded queue, never waited for (`src/cluster/`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use ipnet::IpNet;
use portcullis_policy::persist::{Journal, SyncPolicy};
use std::net::IpAddr;

use portcullis_policy::reputation::{
    BanInfo, Event, OffenseKind, Reputation, ReputationSettings, UnbanCause,
};
use portcullis_policy::time::{Clock, SystemClock};

/// How often the writer compacts the journal into a snapshot, at the latest; the snapshot also
/// carries offender histories that no ban event recorded.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);

/// The ban table and its journal writer.
pub struct BanStore {
    /// The engine.
    pub reputation: Arc<Reputation>,
    journal: Option<Arc<Shared>>,
    /// Where offenses and ban changes go for the other gateways, when `[cluster]` is on.
    cluster: OnceLock<ClusterLink>,
}

/// What this gateway tells the others (through the cluster task).
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// An offense this table counted without it banning the client.
    Offense {
        /// The client key (IPv4, or IPv6 aggregated to `ipv6_prefix`).
        client: IpAddr,
        /// What it did.
        kind: OffenseKind,
        /// Its weight.
        weight: u32,
        /// When (ms since the UNIX epoch).
        at_ms: u64,
    },
    /// A ban made here: by the engine (this table reached `maxretry` first) or an
    /// administrator.
    Ban(BanInfo),
    /// A ban lifted here by an administrator.
    Unban {
        /// The client or network.
        net: IpNet,
        /// When.
        at_ms: u64,
    },
}

/// The sending end of the cluster queue. Sending never waits: a full queue drops the message
/// and counts it (the local table has already decided; only sharing is lost).
pub struct ClusterLink {
    /// The queue to the cluster task.
    pub queue: tokio::sync::mpsc::Sender<Outgoing>,
    /// Messages dropped because the queue was full.
    pub dropped: prometheus::IntCounter,
}

impl ClusterLink {
    fn send(&self, message: Outgoing) {
        if self.queue.try_send(message).is_err() {
            self.dropped.inc();
        }
    }
}

/// The journal and whether it holds records not yet fsync'd.
struct Shared {
    journal: Mutex<Journal>,
    dirty: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Journal> {
        // A panic while appending leaves the journal usable: records are whole lines.
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BanStore {
    /// Creates the table, loading `state_dir` if given (never failing on corrupt content:
    /// what can be read is kept and the rest reported), and starts the journal writer.
    pub fn open(
        state_dir: Option<&Path>,
        settings: ReputationSettings,
    ) -> Result<BanStore, String> {
        let reputation = Arc::new(Reputation::new(settings));
        let Some(dir) = state_dir else {
            tracing::warn!("no server.state_dir: bans are kept in memory only and lost on restart");
            return Ok(BanStore {
                reputation,
                journal: None,
                cluster: OnceLock::new(),
            });
        };
        let now = SystemClock.now_ms();
        let (mut journal, state, load) = Journal::open(dir, now)
            .map_err(|e| format!("cannot use state_dir {}: {e}", dir.display()))?;
        for problem in &load.errors {
            tracing::error!(state_dir = %dir.display(), problem = %problem, "state file damaged; kept what could be read");
        }
        let restored = reputation.restore(state, now);
        tracing::info!(
            state_dir = %dir.display(),
            bans = restored.bans_restored,
            expired = restored.bans_expired,
            histories = restored.histories_restored,
            "state loaded"
        );
        journal.set_sync_policy(SyncPolicy::Manual);
        let shared = Arc::new(Shared {
            journal: Mutex::new(journal),
            dirty: AtomicBool::new(false),
        });
        let (rep, bg) = (reputation.clone(), shared.clone());
        std::thread::Builder::new()
            .name("ban-journal".into())
            .spawn(move || sync_journal(bg, rep))
            .map_err(|e| format!("cannot start the journal writer: {e}"))?;
        Ok(BanStore {
            reputation,
            journal: Some(shared),
            cluster: OnceLock::new(),
        })
    }

    /// Sends offenses and ban changes to the cluster from now on (once, at start).
    pub fn attach_cluster(&self, link: ClusterLink) {
        if self.cluster.set(link).is_err() {
            tracing::error!("the cluster link was attached twice; keeping the first");
        }
    }

    /// An offense of `weight` by the client at `addr` was counted in the table, and `ban` is
    /// the ban it caused: recorded here. Every offense passes here (the walk's observer calls
    /// it): it is the seam where offenses leave the process.
    ///
    /// With a cluster, an offense the table counted without banning is also counted
    /// cluster-wide; one that banned goes out as the ban (which counts in the cluster's
    /// history). The table did not count it when the client is in `ignoreip` or banned: then
    /// [`Reputation::counted_key`] says so now as it did then.
    pub fn offense_counted(
        &self,
        addr: IpAddr,
        kind: OffenseKind,
        weight: u32,
        ban: Option<Event>,
    ) {
        if let Some(event) = ban {
            self.record(event);
            return;
        }
        let Some(link) = self.cluster.get() else {
            return;
        };
        let now_ms = SystemClock.now_ms();
        if let Some(client) = (weight > 0)
            .then(|| self.reputation.counted_key(addr, now_ms))
            .flatten()
        {
            link.send(Outgoing::Offense {
                client,
                kind,
                weight,
                at_ms: now_ms,
            });
        }
    }

    /// Logs a ban event, appends it to the journal and tells the cluster. Every ban change
    /// made on this gateway goes through here.
    pub fn record(&self, event: Event) {
        if let Some(link) = self.cluster.get() {
            match &event {
                Event::Banned { ban, .. } => link.send(Outgoing::Ban(ban.clone())),
                Event::Unbanned {
                    net,
                    at_ms,
                    cause: UnbanCause::Admin,
                    ..
                } => link.send(Outgoing::Unban {
                    net: *net,
                    at_ms: *at_ms,
                }),
                // Every gateway (and Redis) expires a ban on its own.
                Event::Unbanned { .. } => {}
            }
        }
        self.persist(event);
    }

    /// Logs and journals a ban change received from another gateway, without sending it back.
    pub fn record_remote(&self, event: Event) {
        self.persist(event);
    }

    fn persist(&self, event: Event) {
        log_event(&event);
        if let Some(shared) = &self.journal {
            if let Err(e) = shared.lock().append(&event) {
                tracing::error!(error = %e, "cannot append to the ban journal; this ban change is not persisted");
            }
            shared.dirty.store(true, Ordering::Release);
        }
    }
}

/// Ban and unban events as structured log lines.
pub fn log_event(event: &Event) {
    match event {
        Event::Banned { ban, .. } => tracing::warn!(
            target: "portcullis::bans",
            client = %ban.net,
            reason = %ban.reason,
            offense = ?ban.trigger.map(|k| k.as_str()),
            score = ban.score,
            ban_count = ban.ban_count,
            duration_s = ban.until_ms.saturating_sub(ban.created_ms) / 1000,
            "ban"
        ),
        Event::Unbanned { net, cause, .. } => tracing::info!(
            target: "portcullis::bans",
            client = %net,
            cause = match cause { UnbanCause::Admin => "admin", UnbanCause::Expired => "expired" },
            "unban"
        ),
    }
}

/// Once a second: fdatasync what was appended (group commit); compact into a snapshot when
/// the journal has grown or a minute has passed.
///
/// The journal lock is held only for the quick parts (a file-handle dup, a rename): a request
/// that bans a client appends under it, and a flood bans hundreds a second, so an fsync or a
/// snapshot under the lock would block the proxy's worker threads for as long as the disk
/// takes (on cloud volumes an fsync can take tens to hundreds of milliseconds).
fn sync_journal(shared: Arc<Shared>, reputation: Arc<Reputation>) {
    let mut since_snapshot = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if shared.dirty.swap(false, Ordering::AcqRel) {
            let synced = shared
                .lock()
                .sync_handle()
                .and_then(|file| file.sync_data());
            if let Err(e) = synced {
                tracing::error!(error = %e, "cannot fsync the ban journal");
            }
        }
        let due = shared.lock().needs_compaction() || since_snapshot.elapsed() >= SNAPSHOT_EVERY;
        if due {
            let rotated = shared.lock().rotate();
            // Exported after the rotation: every record in the rotated file is in it.
            let written = rotated
                .and_then(|rotated| rotated.finish(&reputation.export(SystemClock.now_ms())));
            if let Err(e) = written {
                tracing::error!(error = %e, "cannot write the state snapshot");
            }
            since_snapshot = std::time::Instant::now();
        }
    }
}
