//! The reputation table and its persistence, shared by every runtime across reloads.
//!
//! The request path only calls the engine and, when a ban starts or ends, hands the event to
//! a writer thread over a channel; the journal's file I/O never happens on the request path.

use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use portcullis_policy::persist::Journal;
use portcullis_policy::reputation::{Event, Reputation, ReputationSettings, UnbanCause};
use portcullis_policy::time::{Clock, SystemClock};

/// How often the writer compacts the journal into a snapshot, at the latest; the snapshot also
/// carries offender histories that no ban event recorded.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);

/// The ban table and its journal writer.
pub struct BanStore {
    /// The engine.
    pub reputation: Arc<Reputation>,
    events: Option<Sender<Event>>,
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
                events: None,
            });
        };
        let now = SystemClock.now_ms();
        let (journal, state, load) = Journal::open(dir, now)
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
        let (tx, rx) = channel();
        let rep = reputation.clone();
        std::thread::Builder::new()
            .name("ban-journal".into())
            .spawn(move || write_journal(journal, rx, rep))
            .map_err(|e| format!("cannot start the journal writer: {e}"))?;
        Ok(BanStore {
            reputation,
            events: Some(tx),
        })
    }

    /// Logs a ban event and queues it for the journal.
    pub fn record(&self, event: Event) {
        log_event(&event);
        if let Some(tx) = &self.events {
            if tx.send(event).is_err() {
                tracing::error!("journal writer has stopped; this ban change is not persisted");
            }
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

fn write_journal(mut journal: Journal, rx: Receiver<Event>, reputation: Arc<Reputation>) {
    let mut since_snapshot = std::time::Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(event) => {
                if let Err(e) = journal.append(&event) {
                    tracing::error!(error = %e, "cannot append to the ban journal");
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if journal.needs_compaction() || since_snapshot.elapsed() >= SNAPSHOT_EVERY {
            if let Err(e) = journal.snapshot(&reputation, SystemClock.now_ms()) {
                tracing::error!(error = %e, "cannot write the state snapshot");
            }
            since_snapshot = std::time::Instant::now();
        }
    }
}
