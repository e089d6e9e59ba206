//! Access log: nginx "combined" lines (so goaccess and friends keep working) with the
//! portcullis decision appended, or JSON lines.
//!
//! Request handling never waits on the disk: lines go through a bounded channel to a writer
//! thread, and when the writer falls behind, lines are dropped and counted rather than
//! slowing the proxy down. Every reload (SIGHUP, `POST /reload`) reopens a log file, so
//! logrotate can move it away and signal, as with nginx.

use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use prometheus::{register_int_counter, IntCounter};

use crate::config::{AccessLogFormat, AccessLogSettings};
use crate::proxy::{Decision, RequestCtx};

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// The access log of one runtime; shared across reloads while the target is unchanged.
pub struct AccessLog {
    sender: Option<SyncSender<String>>,
    format: Arc<AtomicU8>,
    /// Set on reload; the writer reopens its file before the next line.
    reopen: Arc<AtomicBool>,
}

fn dropped_lines() -> &'static IntCounter {
    static DROPPED: OnceLock<IntCounter> = OnceLock::new();
    DROPPED.get_or_init(|| {
        register_int_counter!(
            "portcullis_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind."
        )
        .expect("register portcullis_access_log_dropped_total")
    })
}

impl AccessLog {
    /// Opens the log described by `settings` (starting its writer thread), or a disabled one.
    pub fn open(settings: &AccessLogSettings) -> Result<AccessLog, String> {
        let format = Arc::new(AtomicU8::new(settings.format as u8));
        let reopen = Arc::new(AtomicBool::new(false));
        let Some(target) = &settings.target else {
            return Ok(AccessLog {
                sender: None,
                format,
                reopen,
            });
        };
        let out = Output::open(target.clone())?;
        let (tx, rx) = sync_channel(QUEUE);
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out, &flag))
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        dropped_lines();
        Ok(AccessLog {
            sender: Some(tx),
            format,
            reopen,
        })
    }

    /// The same log for a reloaded configuration: the new line format, and the file reopened
    /// (after logrotate moved it away, the new lines go to a new file at the same path).
    pub fn reloaded(&self, format: AccessLogFormat) -> Arc<AccessLog> {
        self.format.store(format as u8, Ordering::Relaxed);
        self.reopen.store(true, Ordering::Relaxed);
        Arc::new(AccessLog {
            sender: self.sender.clone(),
            format: self.format.clone(),
            reopen: self.reopen.clone(),
        })
    }

    /// Whether lines are written at all (building a line's inputs can be skipped otherwise).
    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Records one finished request.
    pub fn record(&self, session: &Session, ctx: &RequestCtx, status: u16) {
        let sent = session.body_bytes_sent();
        self.record_request(Some(session.req_header()), ctx, status, sent);
    }

    /// Records one finished request from its parts: what the fast path has instead of a
    /// session. `body_bytes` is the response body sent.
    pub fn record_request(
        &self,
        request: Option<&RequestHeader>,
        ctx: &RequestCtx,
        status: u16,
        body_bytes: usize,
    ) {
        self.send(&Entry {
            peer: ctx.peer,
            client: ctx.client,
            request,
            status,
            body_bytes,
            decision: ctx.decision.as_str(),
            route: route_name(ctx),
        });
    }

    /// Records a request refused before it could be proxied (see `ProxyHttp::request_refused`):
    /// `request` is `None` when its header could not be read.
    pub fn record_refused(
        &self,
        peer: Option<IpAddr>,
        client: Option<IpAddr>,
        request: Option<&RequestHeader>,
        status: u16,
        decision: Decision,
    ) {
        self.send(&Entry {
            peer,
            client,
            request,
            status,
            body_bytes: 0,
            decision: decision.as_str(),
            route: "-",
        });
    }

    fn send(&self, entry: &Entry<'_>) {
        let Some(sender) = &self.sender else {
            return;
        };
        let line = if self.format.load(Ordering::Relaxed) == AccessLogFormat::Json as u8 {
            json_line(entry)
        } else {
            combined_line(entry)
        };
        match sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                dropped_lines().inc()
            }
        }
    }
}

/// What one line says.
struct Entry<'a> {
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
    /// `None` when the bytes read were not an HTTP request header.
    request: Option<&'a RequestHeader>,
    status: u16,
    body_bytes: usize,
    decision: &'a str,
    route: &'a str,
}

fn open_append(path: &PathBuf) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open access log {}: {e}", path.display()))
}

/// Where the writer thread puts lines.
struct Output {
    /// The file's path; `None` for stdout.
    path: Option<PathBuf>,
    out: std::io::BufWriter<Box<dyn Write + Send>>,
}

impl Output {
    fn open(path: Option<PathBuf>) -> Result<Output, String> {
        let out: Box<dyn Write + Send> = match &path {
            None => Box::new(std::io::stdout()),
            Some(path) => Box::new(open_append(path)?),
        };
        Ok(Output {
            path,
            out: std::io::BufWriter::new(out),
        })
    }

    /// Flushes and reopens the file. On failure the old file stays in use: a log line in the
    /// moved file is better than none.
    fn reopen(&mut self) {
        let _ = self.out.flush();
        let Some(path) = &self.path else {
            return;
        };
        match open_append(path) {
            Ok(file) => self.out = std::io::BufWriter::new(Box::new(file)),
            Err(e) => {
                tracing::warn!(error = %e, "access log not reopened; still writing to the old file")
            }
        }
    }
}

fn write_lines(rx: Receiver<String>, mut output: Output, reopen: &AtomicBool) {
    loop {
        let received = rx.recv_timeout(Duration::from_millis(200));
        if reopen.swap(false, Ordering::Relaxed) {
            output.reopen();
        }
        let out = &mut output.out;
        match received {
            Ok(line) => {
                let _ = out.write_all(line.as_bytes());
                // Keep writing while lines are queued; flush when the queue is idle.
                while let Ok(line) = rx.try_recv() {
                    let _ = out.write_all(line.as_bytes());
                }
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
    }
}

fn header<'a>(entry: &'a Entry<'_>, name: &str) -> Option<&'a str> {
    entry
        .request?
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

/// `$request`: `-` when no request header could be read, as nginx logs an empty request.
fn request_line(entry: &Entry<'_>) -> String {
    let Some(req) = entry.request else {
        return "-".to_string();
    };
    let target = req
        .uri
        .path_and_query()
        .map_or_else(|| req.uri.path().to_string(), |p| p.as_str().to_string());
    format!("{} {} {:?}", req.method, target, req.version)
}

fn route_name(ctx: &RequestCtx) -> &str {
    match (ctx.rt.as_ref(), ctx.route) {
        (Some(rt), Some(r)) => rt.settings.routes[r].name.as_str(),
        _ => "-",
    }
}

fn addr_or_dash(addr: Option<IpAddr>) -> String {
    addr.map_or_else(|| "-".to_string(), |a| a.to_string())
}

/// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
/// "$http_user_agent" decision=... route=... client=...`
fn combined_line(entry: &Entry<'_>) -> String {
    let mut line = String::with_capacity(256);
    let _ = write!(
        line,
        "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\" decision={} route={} client={}",
        addr_or_dash(entry.peer),
        time_local(SystemTime::now()),
        escape(&request_line(entry)),
        entry.status,
        entry.body_bytes,
        escape(header(entry, "referer").unwrap_or("-")),
        escape(header(entry, "user-agent").unwrap_or("-")),
        entry.decision,
        entry.route,
        addr_or_dash(entry.client),
    );
    line.push('\n');
    line
}

fn json_line(entry: &Entry<'_>) -> String {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let req = entry.request;
    let value = serde_json::json!({
        "time": ts,
        "remote_addr": entry.peer.map(|p| p.to_string()),
        "client": entry.client.map(|c| c.to_string()),
        "method": req.map(|r| r.method.as_str()),
        "uri": req.map(|r| r.uri.to_string()),
        "protocol": req.map(|r| format!("{:?}", r.version)),
        "status": entry.status,
        "body_bytes_sent": entry.body_bytes,
        "referer": header(entry, "referer"),
        "user_agent": header(entry, "user-agent"),
        "decision": entry.decision,
        "route": entry.route,
    });
    let mut line = value.to_string();
    line.push('\n');
    line
}

/// Escapes `"`, `\` and control bytes as nginx does (`\xHH`).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02X}", c as u32 & 0xff);
            }
            c => out.push(c),
        }
    }
    out
}

/// nginx's `$time_local` in UTC: `24/Nov/2026:21:05:00 +0000`.
fn time_local(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_local_matches_nginx_format() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_986_300); // 2026-11-30T...
        let s = time_local(t);
        assert!(s.ends_with(" +0000"), "{s}");
        assert_eq!(time_local(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(
            time_local(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "29/Feb/2000:00:00:00 +0000"
        );
    }

    #[test]
    fn escape_quotes_and_controls() {
        assert_eq!(escape("a\"b\\c\n"), "a\\x22b\\x5Cc\\x0A");
        assert_eq!(escape("curl/8.0"), "curl/8.0");
    }
}
