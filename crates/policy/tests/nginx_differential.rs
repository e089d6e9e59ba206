//! Differential test: the limiter against a real nginx `limit_req`.
//!
//! For each scenario a private nginx (foreground, single process, loopback only, temp prefix)
//! is started with one `limit_req_zone`, a scripted schedule of requests from one client
//! (127.0.0.1) is sent at fixed instants, and nginx's answers are compared with what
//! [`Zone::check`] and [`simulate`] decide for the *measured* send times:
//!
//! * the HTTP status of every request (Pass/Delay → 200, Reject → 429);
//! * nginx's own three-way decision (passed / delayed / rejected) and its `excess`, read back
//!   from its error log (`limiting requests, excess: …` / `delaying request, excess: …`), each
//!   request being tagged with its index in the query string;
//! * the delay: the response latency of every request ≈ the engine's delay.
//!
//! Two replays:
//!
//! * **On nginx's own clock.** The access log gives, per request, when nginx read it
//!   (`$msec - $request_time`). Replayed through the engine, these must give exactly nginx's
//!   decisions, and the delay nginx computed (from the excess it logged) must be the engine's
//!   to the ms. The only slack is 1 ms: nginx decides on its monotonic ms clock and logs the
//!   wall ms read at the same instant, and the two floor at different phases.
//! * **On the test's send times** (`Zone::check` and `simulate`). nginx reads its clock
//!   (`ngx_current_msec`, refreshed once per event loop iteration) a little after the test
//!   wrote the request. Schedules keep every request at least [`DESIGN_MARGIN_MS`] from a
//!   decision boundary (checked by `schedules_stay_clear_of_boundaries`, no nginx needed). A
//!   request nginx still decides differently must be explained by clock offsets within
//!   ±[`JITTER_MS`] ("boundary"), or, when the test or nginx was descheduled between the write
//!   and the read (tens of ms on a loaded machine), by nginx's own reading of that request
//!   ("stall"). Anything else fails.
//!
//! The hold time nginx logs must be the engine's delay (not early; late within a tolerance,
//! with one re-run of a scenario whose only problem is lateness).
//!
//! It needs nginx (`/usr/sbin/nginx` or `$NGINX`), which `scripts/setup` installs; without it
//! the test fails, it is not skipped.

use portcullis_policy::limiter::{simulate, Decision, Delay, Rate, Zone, ZoneSettings};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An arbitrary epoch for the engine's clock; only differences matter.
const T0: u64 = 1_700_000_000_000;

/// How far from a decision boundary every scheduled request must be (checked offline).
const DESIGN_MARGIN_MS: u64 = 10;

/// The per-request disagreement between the test's clock and nginx's accepted as a boundary
/// case: ≤ 1 ms from nginx flooring its clock, plus a couple of ms of event-loop lag.
const JITTER_MS: i64 = 3;

/// How long nginx held a request (its own `$request_time`, from reading the request to
/// logging the response) must be the engine's delay within these bounds. nginx arms its timer
/// from its cached clock (up to ~1 ms before the real arrival), its clock and ours differ by a
/// few ms (`JITTER_MS`; the engine's delay moves 1 ms per ms), so a request may be released
/// a few ms early. Late is nginx's own timer wake-up on a shared, loaded 2-core machine, where
/// 10–20 ms stalls happen. The client-side latency is checked only for not being early: on this
/// machine the reader thread's wake-up was seen to add up to 120 ms, which says nothing about
/// nginx or the engine (the maximum is printed).
/// A scenario failing only on lateness is run once more (stalls of 60 ms were seen).
const EARLY_TOLERANCE_MS: i64 = 5;
const LATE_TOLERANCE_MS: i64 = 20;

/// The client's view is looser than nginx's own hold time: the test takes its send timestamp
/// just after `write`, and a thread descheduled there (seen in CI: a request answered 5.6 ms
/// "before" its delay while nginx's own hold matched the engine to 1 ms) makes the answer look
/// early. Two clock-skew allowances on top of the early tolerance cover it; the strict check
/// is the hold time nginx itself logs.
const CLIENT_EARLY_TOLERANCE_MS: i64 = EARLY_TOLERANCE_MS + 2 * JITTER_MS;

/// How far the delay nginx computed (from the excess it logged) may be from the engine's for
/// the same request replayed on nginx's own clock: 1 ms because nginx decides on its monotonic
/// ms clock but logs the wall ms read in the same instant (the two floor at different phases),
/// 1 ms for the truncating division. A real difference in the algorithm would be far larger:
/// one request of excess is 1000/rate s (50–100 ms here).
const DELAY_DIFF_TOLERANCE_MS: i64 = 2;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

struct Scenario {
    name: &'static str,
    rate: &'static str,
    burst: u64,
    delay: Delay,
    /// Request instants, ms from the start, non-decreasing.
    times: Vec<u64>,
}

impl Scenario {
    fn settings(&self) -> ZoneSettings {
        ZoneSettings {
            name: "z".into(),
            rate: Rate::parse(self.rate).unwrap(),
            burst: self.burst,
            delay: self.delay,
            max_clients: 1000,
        }
    }

    fn limit_req(&self) -> String {
        let mode = match self.delay {
            Delay::NoDelay => " nodelay".to_string(),
            Delay::After(0) => String::new(),
            Delay::After(n) => format!(" delay={n}"),
        };
        // nginx refuses an explicit `burst=0`: no burst is written as no `burst=` at all.
        let burst = match self.burst {
            0 => String::new(),
            n => format!(" burst={n}"),
        };
        format!("limit_req zone=z{burst}{mode};")
    }
}

/// Builds a schedule from bursts and trickles.
#[derive(Default)]
struct Schedule(Vec<u64>);

impl Schedule {
    /// `n` requests back to back at `at`.
    fn burst(mut self, at: u64, n: usize) -> Self {
        self.0.extend(std::iter::repeat_n(at, n));
        self
    }
    /// `n` requests at `start`, `start + every`, ...
    fn every(mut self, start: u64, every: u64, n: usize) -> Self {
        self.0.extend((0..n as u64).map(|k| start + k * every));
        self
    }
    fn done(self) -> Vec<u64> {
        assert!(self.0.windows(2).all(|w| w[0] <= w[1]), "unsorted schedule");
        self.0
    }
}

fn scenarios() -> Vec<Scenario> {
    vec![
        // 10 r/s: one request per 100 ms, no burst. Burst, then trickles at 85 ms (every other
        // one rejected) and 115 ms (all pass), an idle gap, a burst again.
        Scenario {
            name: "10r/s burst=0 nodelay",
            rate: "10r/s",
            burst: 0,
            delay: Delay::NoDelay,
            times: Schedule::default()
                .burst(0, 4)
                .every(150, 85, 6)
                .every(750, 115, 5)
                .burst(1700, 3)
                .done(),
        },
        // 20 r/s (50 ms), burst 5 passed at once: a burst of 8 (6 pass), a trickle at 41 ms
        // (faster than the rate: the bucket gains 0.18 per request), one at 59 ms (slower),
        // an idle gap that empties the bucket, then a burst again.
        Scenario {
            name: "20r/s burst=5 nodelay",
            rate: "20r/s",
            burst: 5,
            delay: Delay::NoDelay,
            times: Schedule::default()
                .burst(0, 8)
                .every(127, 41, 8)
                .every(465, 59, 6)
                .burst(1300, 8)
                .done(),
        },
        // 20 r/s, burst 5, no nodelay: every request above the rate is held 50 ms per excess
        // request, requests beyond the burst are rejected.
        Scenario {
            name: "20r/s burst=5 (delay all)",
            rate: "20r/s",
            burst: 5,
            delay: Delay::After(0),
            times: Schedule::default()
                .burst(0, 8)
                .every(112, 41, 6)
                .every(380, 64, 5)
                .burst(1300, 4)
                .done(),
        },
        // 10 r/s, burst 5, delay=2: the first 2 excess requests go at once, the rest are held.
        Scenario {
            name: "10r/s burst=5 delay=2",
            rate: "10r/s",
            burst: 5,
            delay: Delay::After(2),
            times: Schedule::default()
                .burst(0, 8)
                .every(116, 50, 6)
                .every(560, 116, 4)
                .burst(1400, 5)
                .done(),
        },
        // 700 r/m: nginx keeps 700000/60 = 11666 milli-requests per second (truncated), one
        // request per 85.7 ms; delays are computed with the truncated rate.
        Scenario {
            name: "700r/m burst=3 delay=1",
            rate: "700r/m",
            burst: 3,
            delay: Delay::After(1),
            times: Schedule::default()
                .burst(0, 6)
                .every(102, 44, 6)
                .every(536, 96, 5)
                .burst(1500, 5)
                .done(),
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    Pass,
    Delay,
    Reject,
}

impl Class {
    fn of(d: &Decision) -> Class {
        match d {
            Decision::Pass => Class::Pass,
            Decision::Delay { .. } => Class::Delay,
            Decision::Reject { .. } => Class::Reject,
        }
    }
    fn status(self) -> u16 {
        match self {
            Class::Reject => 429,
            _ => 200,
        }
    }
    fn letter(self) -> char {
        match self {
            Class::Pass => 'P',
            Class::Delay => 'D',
            Class::Reject => 'R',
        }
    }
}

fn engine_delay(d: &Decision) -> u64 {
    match d {
        Decision::Delay { ms } => *ms,
        _ => 0,
    }
}

/// The engine's decisions for requests at `times` (ms from start): a fresh [`Zone`], checked
/// to agree with the reference model [`simulate`].
fn engine(settings: &ZoneSettings, times: &[u64]) -> Vec<Decision> {
    let zone = Zone::new(settings.clone());
    let abs: Vec<u64> = times.iter().map(|t| T0 + t).collect();
    let live: Vec<Decision> = abs.iter().map(|&t| zone.check(CLIENT, t)).collect();
    assert_eq!(live, simulate(settings, &abs), "Zone and simulate disagree");
    live
}

/// The smallest shift of request `i` (with everything after it, so order is kept) within
/// `limit` ms that changes its decision class; `None` if none does.
fn boundary_distance(settings: &ZoneSettings, times: &[u64], i: usize, limit: u64) -> Option<u64> {
    let base = Class::of(&simulate(settings, &abs(times))[i]);
    let gap_before = if i == 0 { 0 } else { times[i] - times[i - 1] };
    for d in 1..=limit {
        for shift in [d as i64, -(d as i64)] {
            if shift < 0 && d > gap_before {
                continue;
            }
            let shifted: Vec<u64> = times
                .iter()
                .enumerate()
                .map(|(j, &t)| if j >= i { (t as i64 + shift) as u64 } else { t })
                .collect();
            if Class::of(&simulate(settings, &abs(&shifted))[i]) != base {
                return Some(d);
            }
        }
    }
    None
}

fn abs(times: &[u64]) -> Vec<u64> {
    times.iter().map(|t| T0 + t).collect()
}

/// A transcription of `ngx_http_limit_req_lookup` + the delay computation of
/// `ngx_http_limit_req_handler` (nginx 1.22), used only to search for clock offsets that
/// explain a disagreement. It is checked against the engine on every measured schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct NgxNode {
    excess: i64,
    last: i64,
}

struct NgxLimits {
    rate: i64,
    burst: i64,
    delay: i64,
}

impl NgxLimits {
    fn of(s: &ZoneSettings) -> NgxLimits {
        NgxLimits {
            rate: s.rate.milli_per_sec() as i64,
            burst: s.burst as i64 * 1000,
            delay: match s.delay {
                Delay::NoDelay => i64::MAX,
                Delay::After(n) => n as i64 * 1000,
            },
        }
    }

    /// The class, nginx's `excess`, and the node after the request.
    fn lookup(&self, node: Option<NgxNode>, now: i64) -> (Class, i64, Option<NgxNode>) {
        let Some(mut lr) = node else {
            return (
                Class::Pass,
                0,
                Some(NgxNode {
                    excess: 0,
                    last: now,
                }),
            );
        };
        let mut ms = now - lr.last;
        if ms < -60000 {
            ms = 1;
        } else if ms < 0 {
            ms = 0;
        }
        let excess = (lr.excess - self.rate * ms / 1000 + 1000).max(0);
        if excess > self.burst {
            return (Class::Reject, excess, node);
        }
        lr.excess = excess;
        if ms != 0 {
            lr.last = now;
        }
        let delay = if excess <= self.delay {
            0
        } else {
            (excess - self.delay) * 1000 / self.rate
        };
        let class = if delay == 0 {
            Class::Pass
        } else {
            Class::Delay
        };
        (class, excess, Some(lr))
    }
}

/// Searches for per-request offsets in ±`jitter` ms under which nginx's algorithm yields
/// exactly `observed`. Returns the index of the first request no offset can explain.
fn explain(
    settings: &ZoneSettings,
    candidates: &[Vec<i64>],
    observed: &[Class],
) -> Result<(), usize> {
    let limits = NgxLimits::of(settings);
    let mut states: HashSet<Option<NgxNode>> = HashSet::from([None]);
    for (i, (times, &want)) in candidates.iter().zip(observed).enumerate() {
        let mut next = HashSet::new();
        for state in &states {
            for &t in times {
                let (class, _, after) = limits.lookup(*state, t);
                if class == want {
                    next.insert(after);
                }
            }
        }
        if next.is_empty() {
            return Err(i);
        }
        // The state set stays small (the excess telescopes), but bound it anyway.
        states = next.into_iter().take(50_000).collect();
    }
    Ok(())
}

/// Every ms within `jitter` of each time.
fn around(times: &[u64], jitter: i64) -> Vec<Vec<i64>> {
    times
        .iter()
        .map(|&t| (t as i64 - jitter..=t as i64 + jitter).collect())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

fn nginx_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NGINX") {
        return Some(PathBuf::from(path));
    }
    [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// A running nginx; killed when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn start(binary: &Path, scenario: &Scenario) -> Nginx {
        let mut last_error = String::new();
        for _attempt in 0..3 {
            match Nginx::try_start(binary, scenario) {
                Ok(nginx) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn try_start(binary: &Path, scenario: &Scenario) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir(p.join("www")).unwrap();
        std::fs::write(p.join("www/ok.txt"), "ok\n").unwrap();
        // A port that was free a moment ago; a lost race is retried with another.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = p.display();
        // `return 200` would answer in the rewrite phase, before limit_req (preaccess) runs,
        // so the location serves a static file.
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  log_format held '$arg_i $request_time $msec $status';\n\
             access_log {d}/access.log held;\n\
             client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             limit_req_zone $binary_remote_addr zone=z:1m rate={rate};\n\
             server {{\n    listen 127.0.0.1:{port};\n\
             location / {{\n      root {d}/www;\n      {limit_req}\n      limit_req_status 429;\n    }}\n  }}\n}}\n",
            rate = scenario.rate,
            limit_req = scenario.limit_req(),
        );
        let conf_path = p.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        // `-e` keeps nginx from opening its compiled-in error log before reading the config.
        let mut child = Command::new(binary)
            .arg("-p")
            .arg(p)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(p.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(p.join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited with {status}: {log}"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(Nginx { child, addr, dir });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("nginx did not listen on {addr} within 5 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// nginx's access log by request index.
    fn access_log(&self) -> HashMap<usize, Access> {
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        // "i $request_time $msec $status", times in seconds with 3 decimals.
        let ms = |field: &str| field.replace('.', "").parse::<i64>().ok();
        log.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let index = fields.first()?.parse().ok()?;
                let held_ms = ms(fields.get(1)?)?;
                let end_ms = ms(fields.get(2)?)?;
                Some((
                    index,
                    Access {
                        held_ms,
                        start_ms: end_ms - held_ms,
                    },
                ))
            })
            .collect()
    }
}

/// A request as nginx's access log records it.
struct Access {
    /// `$request_time`: from reading the request to logging the response.
    held_ms: i64,
    /// `$msec - $request_time`: nginx's (wall) clock when it read the request.
    start_ms: i64,
}

/// What nginx logged about request `i`: its class and excess (milli-requests). Requests it
/// passed without delay are not logged.
fn parse_log(log: &str) -> HashMap<usize, (Class, i64)> {
    let mut out = HashMap::new();
    for line in log.lines() {
        let class = if line.contains("limiting requests, excess:") {
            Class::Reject
        } else if line.contains("delaying request, excess:") {
            Class::Delay
        } else {
            continue;
        };
        let excess = line
            .split("excess: ")
            .nth(1)
            .and_then(|rest| rest.split([' ', ',']).next())
            .and_then(|num| {
                let (whole, frac) = num.split_once('.')?;
                Some(whole.parse::<i64>().ok()? * 1000 + frac.parse::<i64>().ok()?)
            })
            .unwrap_or_else(|| panic!("unparsable nginx log line: {line}"));
        let index = line
            .split("GET /ok.txt?i=")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("nginx log line without request index: {line}"));
        assert!(
            out.insert(index, (class, excess)).is_none(),
            "request {index} logged twice"
        );
    }
    out
}

/// One request as observed.
struct Observed {
    /// ms from the schedule start, right after the request was written (it is on nginx's
    /// socket by then: loopback delivers within the write call).
    sent_ms: u64,
    status: u16,
    /// First response byte minus `sent`.
    latency_ms: f64,
}

/// Sends `times` to nginx, each request on its own connection opened beforehand (so nginx
/// has accepted it and only has to read it), and collects the answers; a thread per request
/// reads its response, so a delayed request does not hold back the next.
fn run_schedule(addr: SocketAddr, times: &[u64]) -> Vec<Observed> {
    let mut conns: Vec<TcpStream> = Vec::new();
    // Readers are blocked in `read` before the clock starts, so none has to be spawned and
    // scheduled when its answer arrives.
    let mut readers: Vec<JoinHandle<(u16, Instant)>> = Vec::new();
    for _ in times {
        let conn = TcpStream::connect(addr).expect("connect to nginx");
        conn.set_nodelay(true).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = conn.try_clone().unwrap();
        conns.push(conn);
        readers.push(std::thread::spawn(move || {
            let mut first = [0u8; 1];
            reader
                .read_exact(&mut first)
                .expect("no response from nginx");
            let arrived = Instant::now();
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            let mut all = first.to_vec();
            all.extend(rest);
            let text = String::from_utf8_lossy(&all);
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad response: {text:?}"));
            (status, arrived)
        }));
    }
    // Let nginx accept every connection before the clock starts.
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now() + Duration::from_millis(20);
    let mut sent: Vec<Instant> = Vec::new();
    for (i, (&t, conn)) in times.iter().zip(&mut conns).enumerate() {
        let at = start + Duration::from_millis(t);
        // Sleep most of the way, spin the last stretch for a precise send.
        loop {
            let now = Instant::now();
            if now >= at {
                break;
            }
            let left = at - now;
            if left > Duration::from_millis(2) {
                std::thread::sleep(left - Duration::from_millis(2));
            } else {
                std::hint::spin_loop();
            }
        }
        let request = format!("GET /ok.txt?i={i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).expect("send request");
        sent.push(Instant::now());
    }
    let observed = readers
        .into_iter()
        .zip(sent)
        .map(|(reader, sent)| {
            let (status, arrived) = reader.join().expect("reader thread");
            Observed {
                sent_ms: (sent - start).as_micros() as u64 / 1000,
                status,
                latency_ms: (arrived - sent).as_secs_f64() * 1000.0,
            }
        })
        .collect();
    // The write sides stay open until every answer is in: nginx treats a client's EOF while
    // a request is delayed as the client going away.
    drop(conns);
    observed
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Offline check of the scenario design: no scheduled request is within `DESIGN_MARGIN_MS`
/// of a change of decision, so clock noise should not flip any of them.
#[test]
fn schedules_stay_clear_of_boundaries() {
    for scenario in scenarios() {
        let settings = scenario.settings();
        let decisions = engine(&settings, &scenario.times);
        let letters: String = decisions.iter().map(|d| Class::of(d).letter()).collect();
        println!("{:<28} {letters}", scenario.name);
        for (i, decision) in decisions.iter().enumerate() {
            if let Some(d) = boundary_distance(&settings, &scenario.times, i, DESIGN_MARGIN_MS) {
                panic!(
                    "{}: request {i} at {} ms ({decision:?}) is {d} ms from a decision boundary",
                    scenario.name, scenario.times[i]
                );
            }
        }
        let classes: HashSet<Class> = decisions.iter().map(Class::of).collect();
        assert!(
            classes.contains(&Class::Reject),
            "{}: nothing rejected",
            scenario.name
        );
        assert!(
            classes.contains(&Class::Pass),
            "{}: nothing passed",
            scenario.name
        );
    }
}

/// Runs one scenario against a fresh nginx. Returns disagreements, and requests nginx released
/// later than `LATE_TOLERANCE_MS` after the engine's delay (a stalled process, not a decision).
fn check_scenario(binary: &Path, scenario: &Scenario) -> (Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut late = Vec::new();
    let settings = scenario.settings();
    let limits = NgxLimits::of(&settings);
    let name = scenario.name;
    let nginx = Nginx::start(binary, scenario);
    let observed = run_schedule(nginx.addr, &scenario.times);
    let log = parse_log(&nginx.error_log());
    let access = nginx.access_log();
    drop(nginx);
    let n = observed.len();

    // nginx's decision per request: from its error log, cross-checked with the status.
    let nginx_classes: Vec<Class> = (0..n)
        .map(|i| log.get(&i).map_or(Class::Pass, |&(class, _)| class))
        .collect();
    for (i, (o, c)) in observed.iter().zip(&nginx_classes).enumerate() {
        assert_eq!(
            o.status,
            c.status(),
            "{name}: request {i}: HTTP status {} but nginx logged {c:?}",
            o.status
        );
    }
    let Some(nginx_start) = (0..n)
        .map(|i| access.get(&i).map(|a| a.start_ms))
        .collect::<Option<Vec<i64>>>()
    else {
        panic!("{name}: a request is missing from nginx's access log");
    };
    let first = *nginx_start.iter().min().unwrap();
    // nginx's clock readings, ms from its first request.
    let nginx_times: Vec<u64> = nginx_start.iter().map(|&s| (s - first) as u64).collect();
    // The test's clock readings (right after each write).
    let times: Vec<u64> = observed.iter().map(|o| o.sent_ms).collect();

    // A: the engine fed nginx's own clock readings. nginx decides on its monotonic ms
    // clock and logs wall-clock ms read in the same instant; the two floor at different
    // phases, so a reading may be off by 1 ms. Nothing else separates them.
    let on_nginx_clock = engine(&settings, &nginx_times);
    let classes_a: Vec<Class> = on_nginx_clock.iter().map(Class::of).collect();
    let mismatches_a = (0..n).filter(|&i| classes_a[i] != nginx_classes[i]).count();
    if let Err(i) = explain(&settings, &around(&nginx_times, 1), &nginx_classes) {
        failures.push(format!(
            "{name}: on nginx's own clock, request {i} (at {} ms): nginx {:?}, engine {:?}",
            nginx_times[i], nginx_classes[i], on_nginx_clock[i]
        ));
    }

    // B: the engine fed the test's send times (Zone::check and simulate). Requests near a
    // boundary may go either way (±JITTER_MS); a request whose send time the test or nginx
    // measured late because a process was descheduled is explained by nginx's own reading.
    let decisions = engine(&settings, &times);
    // The transcription used for explanations must itself agree with the engine.
    let mut node = None;
    for (i, &t) in times.iter().enumerate() {
        let (class, _, after) = limits.lookup(node, t as i64);
        node = after;
        assert_eq!(
            class,
            Class::of(&decisions[i]),
            "transcription differs from engine"
        );
    }
    let engine_classes: Vec<Class> = decisions.iter().map(Class::of).collect();
    let boundary: Vec<usize> = (0..n)
        .filter(|&i| engine_classes[i] != nginx_classes[i])
        .collect();
    let status_mismatches = boundary
        .iter()
        .filter(|&&i| engine_classes[i].status() != nginx_classes[i].status())
        .count();
    // How the two clocks line up: the median difference.
    let mut offsets: Vec<i64> = (0..n)
        .map(|i| times[i] as i64 - nginx_times[i] as i64)
        .collect();
    offsets.sort_unstable();
    let offset = offsets[n / 2];
    let skews: Vec<i64> = (0..n)
        .map(|i| times[i] as i64 - nginx_times[i] as i64 - offset)
        .collect();
    let max_skew = skews.iter().map(|s| s.abs()).max().unwrap_or(0);
    let mut stalls = 0;
    if explain(&settings, &around(&times, JITTER_MS), &nginx_classes).is_err() {
        let widened: Vec<Vec<i64>> = (0..n)
            .map(|i| {
                let mut c: Vec<i64> =
                    (times[i] as i64 - JITTER_MS..=times[i] as i64 + JITTER_MS).collect();
                let theirs = nginx_times[i] as i64 + offset;
                c.extend(theirs - 1..=theirs + 1);
                c
            })
            .collect();
        stalls = skews.iter().filter(|s| s.abs() > JITTER_MS).count();
        if let Err(i) = explain(&settings, &widened, &nginx_classes) {
            failures.push(format!(
                "{name}: request {i} (sent at {} ms): nginx {:?}, engine {:?}; no clock \
                 offset within ±{JITTER_MS} ms (nor nginx's own reading) explains it",
                times[i], nginx_classes[i], decisions[i]
            ));
        }
    }

    // Delays. nginx's delay, from the excess it logged, must be the engine's on nginx's
    // clock (1 ms reading difference, 1 ms truncation); how long nginx held the request
    // must be about that; the client must not get the answer before it.
    let mut max_delay_diff = 0i64;
    let mut held_range = (0.0f64, 0.0f64);
    let mut max_client_late = 0.0f64;
    for i in 0..n {
        if classes_a[i] != nginx_classes[i] || nginx_classes[i] == Class::Reject {
            continue;
        }
        let want = engine_delay(&on_nginx_clock[i]) as i64;
        if let Some(&(Class::Delay, excess)) = log.get(&i) {
            let nginx_delay = (excess - limits.delay) * 1000 / limits.rate;
            max_delay_diff = max_delay_diff.max((nginx_delay - want).abs());
            if (nginx_delay - want).abs() > DELAY_DIFF_TOLERANCE_MS {
                failures.push(format!(
                    "{name}: request {i}: nginx delayed {nginx_delay} ms (excess {excess}), \
                     engine {want} ms on nginx's clock"
                ));
            }
        }
        let held = access[&i].held_ms as f64;
        let want = want as f64;
        held_range = (held_range.0.min(held - want), held_range.1.max(held - want));
        if held < want - EARLY_TOLERANCE_MS as f64 || held > want + LATE_TOLERANCE_MS as f64 {
            late.push(format!(
                "{name}: request {i}: nginx held it {held} ms, engine delay {want} ms"
            ));
        }
        let latency = observed[i].latency_ms;
        max_client_late = max_client_late.max(latency - want);
        if latency < want - CLIENT_EARLY_TOLERANCE_MS as f64 {
            failures.push(format!(
                "{name}: request {i}: answered after {latency:.1} ms, before the engine's \
                 delay {want} ms"
            ));
        }
    }

    println!(
        "{name:<26} n={n:<3} nginx P/D/R {}/{}/{}  nginx-clock mismatches {mismatches_a}  \
         send-time matches {} boundary {} (status {status_mismatches}) stall {stalls}  \
         clock skew ≤{max_skew} ms  delay diff ≤{max_delay_diff} ms  \
         held-delay [{:.0}, +{:.0}] ms  client late ≤{max_client_late:.0} ms",
        nginx_classes.iter().filter(|c| **c == Class::Pass).count(),
        nginx_classes.iter().filter(|c| **c == Class::Delay).count(),
        nginx_classes
            .iter()
            .filter(|c| **c == Class::Reject)
            .count(),
        n - boundary.len(),
        boundary.len(),
        held_range.0,
        held_range.1,
    );
    if !boundary.is_empty() || mismatches_a > 0 || max_skew > JITTER_MS {
        let letters = |c: &[Class]| c.iter().map(|c| c.letter()).collect::<String>();
        println!("  sent ms    {times:?}");
        println!("  nginx ms   {nginx_times:?} (+{offset})");
        println!("  engine     {}", letters(&engine_classes));
        println!("  engine/ngx {}", letters(&classes_a));
        println!("  nginx      {}", letters(&nginx_classes));
    }
    (failures, late)
}

#[test]
fn limiter_decides_like_nginx() {
    let binary = nginx_binary()
        .expect("nginx is not installed (/usr/sbin/nginx or $NGINX): run scripts/setup");
    let began = Instant::now();
    let mut failures = Vec::new();
    for scenario in scenarios() {
        let (mut hard, mut late) = check_scenario(&binary, &scenario);
        if hard.is_empty() && !late.is_empty() {
            // Only late releases: nginx (or the machine) stalled. Once more, on a fresh nginx.
            println!(
                "  late release ({}); running the scenario again",
                late.join("; ")
            );
            (hard, late) = check_scenario(&binary, &scenario);
        }
        failures.extend(hard);
        failures.extend(late);
    }
    println!("total {:.1} s", began.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "nginx differential failures:\n{}",
        failures.join("\n")
    );
}
