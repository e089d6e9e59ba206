//! Hot reload (SIGHUP or `POST /reload`) and periodic housekeeping.
//!
//! A reload validates the file first; an invalid one is rejected with every error logged and
//! the running configuration untouched. A valid one is swapped in for new requests while
//! requests in flight finish under the old one; bans, offender history, concurrency counts and
//! the state of every rate-limit zone whose settings did not change carry over.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::start::StartSettings;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// Re-reads `path` and swaps the new runtime in; on error returns the messages.
pub fn reload(path: &Path, shared: &ArcSwap<Runtime>) -> Result<(), Vec<String>> {
    let m = &Metrics::get().reloads;
    let settings = match Settings::load(path) {
        Ok(s) => s,
        Err(errors) => {
            let messages: Vec<String> = errors.errors.iter().map(|e| e.to_string()).collect();
            for e in &messages {
                tracing::error!(config = %path.display(), error = %e, "reload rejected");
            }
            tracing::error!(config = %path.display(), "reload rejected; the old configuration keeps serving");
            m.with_label_values(&["error"]).inc();
            return Err(messages);
        }
    };
    let previous = shared.load_full();
    let restart_only = StartSettings::of(&previous.settings).changed(&StartSettings::of(&settings));
    if !restart_only.is_empty() {
        tracing::warn!(
            keys = %restart_only.join(", "),
            "these settings changed and take effect on restart only; the rest is reloaded"
        );
    }
    match Runtime::build(settings, Some(&previous)) {
        Ok(rt) => {
            shared.store(Arc::new(rt));
            m.with_label_values(&["ok"]).inc();
            tracing::info!(config = %path.display(), "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            tracing::error!(config = %path.display(), error = %e, "reload failed; the old configuration keeps serving");
            m.with_label_values(&["error"]).inc();
            Err(vec![e])
        }
    }
}

/// Reloads on every SIGHUP, on a thread of its own.
pub fn watch_sighup(path: PathBuf, shared: Arc<ArcSwap<Runtime>>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Register now, before serving, so an early SIGHUP never takes the default action (exit).
    let mut hup = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    })?;
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            rt.block_on(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading configuration");
                    let _ = reload(&path, &shared);
                }
            })
        })?;
    Ok(())
}

/// Every second: ends expired bans (logged and journaled), forgets drained limiter entries.
pub fn spawn_housekeeping(shared: Arc<ArcSwap<Runtime>>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let rt = shared.load_full();
            let clock = rt.gate.clock();
            let now = clock.now_ms();
            for event in rt.store.reputation.expire(now) {
                rt.store.record(event);
            }
            let now_mono = clock.monotonic_ms();
            for zone in rt.gate.zones() {
                zone.expire_idle(now_mono);
            }
        })?;
    Ok(())
}
