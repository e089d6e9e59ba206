//! Diagnostic logging with `tracing`; Pingora's `log` records are bridged into it.
//!
//! Lines go to stderr through a bounded queue and a writer thread, as access log lines do: a
//! stderr that stops draining (a full pipe to a stalled journald or container runtime) must
//! not stop the proxy's threads, which write a line per ban. When the queue is full, lines
//! are dropped and counted in `portcullis_log_dropped_total`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `[log] level`. Keep the
/// guard until exit: dropping it flushes the lines still queued.
pub fn init(settings: &LogSettings) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    // try_init also installs the log → tracing bridge, so Pingora's own logs arrive here.
    let _ = match settings.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}

/// Log lines dropped so far because stderr did not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}
