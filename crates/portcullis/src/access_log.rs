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
use prometheus::{register_int_counter, IntCounter};

use crate::config::{AccessLogFormat, AccessLogSettings};
use portcullis_gate::{Decision, Walk};

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

    /// Records one finished request from its parts: what the fast path has instead of a
    /// session. `body_bytes` is the response body sent.
    pub fn record_request(
        &self,
        request: Option<&RequestLine<'_>>,
        walk: &Walk,
        route: &str,
        status: u16,
        body_bytes: usize,
    ) {
        self.send(&Entry {
            peer: walk.peer,
            client: walk.client,
            request,
            status,
            body_bytes,
            decision: walk.decision.as_str(),
            route,
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
        let request = request.map(RequestLine::of);
        self.send(&Entry {
            peer,
            client,
            request: request.as_ref(),
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

/// What a line says of the request itself, borrowed from whichever proxy parsed it (the fast
/// path has no Pingora header to lend, and building one only for the log cost more than the
/// line).
pub struct RequestLine<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The request target: path and query (nginx's `$request_uri`).
    pub target: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub version: &'static str,
    /// The Referer field.
    pub referer: Option<&'a str>,
    /// The User-Agent field.
    pub user_agent: Option<&'a str>,
}

impl<'a> RequestLine<'a> {
    /// The parts of a Pingora request header.
    pub fn of(req: &'a RequestHeader) -> Self {
        let field = |name| req.headers.get(name).and_then(|v| v.to_str().ok());
        RequestLine {
            method: req.method.as_str(),
            target: req
                .uri
                .path_and_query()
                .map_or_else(|| req.uri.path(), |p| p.as_str()),
            version: version_name(req.version),
            referer: field("referer"),
            user_agent: field("user-agent"),
        }
    }
}

/// The protocol as nginx's `$server_protocol` writes it.
fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// What one line says.
struct Entry<'a> {
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
    /// `None` when the bytes read were not an HTTP request header.
    request: Option<&'a RequestLine<'a>>,
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

/// Appends `$request`: `-` when no request header could be read, as nginx logs an empty
/// request.
fn push_request_line(line: &mut String, entry: &Entry<'_>) {
    let Some(req) = entry.request else {
        line.push('-');
        return;
    };
    push_escaped(line, req.method);
    line.push(' ');
    push_escaped(line, req.target);
    line.push(' ');
    line.push_str(req.version);
}

/// Appends the address, or `-`. IPv4 without the formatting machinery: `Display` for an
/// address was a quarter of a line's cost.
fn push_addr(line: &mut String, addr: Option<IpAddr>) {
    match addr {
        None => line.push('-'),
        Some(IpAddr::V4(v4)) => line.push_str(crate::forwarding::ipv4_text(v4, &mut [0; 15])),
        Some(IpAddr::V6(v6)) => {
            let _ = write!(line, "{v6}");
        }
    }
}

/// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
/// "$http_user_agent" decision=... route=... client=...`, written into one buffer.
fn combined_line(entry: &Entry<'_>) -> String {
    let mut line = String::with_capacity(256);
    push_addr(&mut line, entry.peer);
    line.push_str(" - - [");
    push_time_local(&mut line, SystemTime::now());
    line.push_str("] \"");
    push_request_line(&mut line, entry);
    let _ = write!(line, "\" {} {} \"", entry.status, entry.body_bytes);
    let request = entry.request;
    push_escaped(&mut line, request.and_then(|r| r.referer).unwrap_or("-"));
    line.push_str("\" \"");
    push_escaped(&mut line, request.and_then(|r| r.user_agent).unwrap_or("-"));
    line.push_str("\" decision=");
    line.push_str(entry.decision);
    line.push_str(" route=");
    line.push_str(entry.route);
    line.push_str(" client=");
    push_addr(&mut line, entry.client);
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
        "method": req.map(|r| r.method),
        "uri": req.map(|r| r.target),
        "protocol": req.map(|r| r.version),
        "status": entry.status,
        "body_bytes_sent": entry.body_bytes,
        "referer": req.and_then(|r| r.referer),
        "user_agent": req.and_then(|r| r.user_agent),
        "decision": entry.decision,
        "route": entry.route,
    });
    let mut line = value.to_string();
    line.push('\n');
    line
}

/// Escapes `"`, `\` and control bytes as nginx does (`\xHH`).
#[cfg(test)]
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s);
    out
}

/// Appends `s` escaped as [`escape`] describes.
fn push_escaped(out: &mut String, s: &str) {
    // Most values need no escaping: copy them whole.
    if !s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        out.push_str(s);
        return;
    }
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
}

/// nginx's `$time_local` in UTC: `24/Nov/2026:21:05:00 +0000`.
#[cfg(test)]
fn time_local(t: SystemTime) -> String {
    let mut out = String::new();
    push_time_local(&mut out, t);
    out
}

/// Appends `$time_local`; formatted once a second per thread, as nginx caches its time strings.
fn push_time_local(out: &mut String, t: SystemTime) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            text.clear();
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (y, m, d) = civil_from_days(days as i64);
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let _ = write!(
                text,
                "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
                MONTHS[(m - 1) as usize],
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            );
        }
        out.push_str(text);
    });
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
    fn combined_lines_carry_every_field_escaped() {
        let mut req = RequestHeader::build("GET", b"/a?b=1", None).unwrap();
        req.insert_header("user-agent", "scan \"x\"").unwrap();
        let entry = Entry {
            peer: Some("10.0.0.1".parse().unwrap()),
            client: Some("2001:db8::1".parse().unwrap()),
            request: Some(&RequestLine::of(&req)),
            status: 404,
            body_bytes: 14,
            decision: "probe",
            route: "-",
        };
        let line = combined_line(&entry);
        let (before, after) = line.split_once(" +0000] ").unwrap();
        assert!(before.starts_with("10.0.0.1 - - ["), "{line}");
        assert_eq!(
            after,
            "\"GET /a?b=1 HTTP/1.1\" 404 14 \"-\" \"scan \\x22x\\x22\" \
             decision=probe route=- client=2001:db8::1\n"
        );
        let refused = Entry {
            request: None,
            client: None,
            ..entry
        };
        assert!(combined_line(&refused)
            .contains("] \"-\" 404 14 \"-\" \"-\" decision=probe route=- client=-\n"));
    }

    #[test]
    fn escape_quotes_and_controls() {
        assert_eq!(escape("a\"b\\c\n"), "a\\x22b\\x5Cc\\x0A");
        assert_eq!(escape("curl/8.0"), "curl/8.0");
    }
}
