//! `[cluster]`: three (and four) real gateways sharing bans and offenses through a real
//! Redis (Debian's `redis-server`, installed by scripts/setup), started here on a free
//! loopback port with persistence off and stopped by PID.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A redis-server of our own, killed (SIGKILL) when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// Debian's redis-server, or the server `PORTCULLIS_REDIS_SERVER` names (scripts/test runs
/// these tests again with Valkey's; a relative path is from the repository root).
fn redis_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("PORTCULLIS_REDIS_SERVER") {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let path = root.join(path);
        assert!(
            path.exists(),
            "PORTCULLIS_REDIS_SERVER: no {}",
            path.display()
        );
        return path;
    }
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("redis-server is not installed: run scripts/setup")
}

impl Redis {
    async fn start() -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new(redis_binary())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let port = self.port;
        assert!(
            eventually(Duration::from_secs(10), || async move { ping(port).await }).await,
            "redis-server did not answer on port {port}"
        );
    }

    /// SIGKILL: no goodbye to the clients.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port, empty (persistence is off).
    async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Whether a Redis answers PING on `port`.
async fn ping(port: u16) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && &buf == b"+PONG\r\n"
}

const MAXRETRY: usize = 5;

/// A jail of maxretry 5 (upstream 404s are offenses) and the cluster section.
fn member(up: &Upstream, redis: &Redis) -> GatewayBuilder {
    gateway(up)
        .extra(BEHIND_PROXY)
        .extra("[reputation]\nmaxretry = 5\nfindtime = \"10m\"\nbantime = \"10m\"\nignoreip = []\n")
        .extra(&format!(
            "[cluster]\nredis = \"{}\"\nkey_prefix = \"e2e:\"\ntimeout = \"250ms\"\n",
            redis.url()
        ))
}

async fn start_cluster(up: &Upstream, redis: &Redis, n: usize) -> Vec<Gateway> {
    start_all((0..n).map(|_| member(up, redis))).await
}

/// Starts a gateway from each builder, then waits until every one reports the cluster up.
async fn start_all(builders: impl IntoIterator<Item = GatewayBuilder>) -> Vec<Gateway> {
    let mut gws = Vec::new();
    for builder in builders {
        gws.push(builder.start().await);
    }
    wait_all_up(&gws, 1.0).await;
    gws
}

async fn wait_all_up(gws: &[Gateway], want: f64) {
    for gw in gws {
        wait_up(gw, want).await;
    }
}

async fn wait_up(gw: &Gateway, want: f64) {
    assert!(
        eventually(Duration::from_secs(15), || async {
            gw.metric("portcullis_cluster_up", &[]).await == want
        })
        .await,
        "portcullis_cluster_up never became {want}; log:\n{}",
        gw.log()
    );
}

/// Whether every gateway in `gws` refuses `client` within `limit`.
async fn all_refuse(gws: &[Gateway], client: &str, limit: Duration) -> bool {
    all_answer(gws.iter(), client, 403, limit).await
}

/// Whether every gateway in `gws` lets `client` through within `limit`.
async fn all_admit(gws: &[&Gateway], client: &str, limit: Duration) -> bool {
    all_answer(gws.iter().copied(), client, 200, limit).await
}

/// Whether every gateway answers `client`'s GET /ok with `status` within `limit`.
async fn all_answer<'g>(
    gws: impl Iterator<Item = &'g Gateway>,
    client: &str,
    status: u16,
    limit: Duration,
) -> bool {
    for gw in gws {
        let answered = eventually(limit, || async {
            status_as(gw, client, "/ok").await == status
        })
        .await;
        if !answered {
            return false;
        }
    }
    true
}

/// The gateway's bans, as its admin API lists them.
async fn bans_of(gw: &Gateway) -> serde_json::Value {
    client()
        .get(format!("http://127.0.0.1:{}/bans", gw.admin_port))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A metric summed over every gateway of the cluster.
async fn metric_sum(gws: &[Gateway], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for gw in gws {
        sum += gw.metric(name, labels).await;
    }
    sum
}

fn cli(gw: &Gateway, args: &[&str]) {
    let config = gw.config_path.to_str().unwrap().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", &config]);
    let (ok, out, err) = run_cli(&all);
    assert!(ok, "portcullis {args:?}: {out}{err}");
}

fn seen_from(up: &Upstream, client: &str) -> usize {
    up.seen()
        .iter()
        .filter(|s| s.headers.get("x-forwarded-for").map(String::as_str) == Some(client))
        .count()
}

/// `scanner` gets `maxretry` upstream 404s from `gw` alone, and is then refused by it.
async fn banned_alone(gw: &Gateway, scanner: &str) {
    for i in 0..MAXRETRY {
        assert_eq!(status_as(gw, scanner, &format!("/missing/{i}")).await, 404);
    }
    assert_eq!(status_as(gw, scanner, "/ok").await, 403);
}

/// Sends a scanner round-robin over `gws` until one refuses it (bounded), as a load
/// balancer spreads it.
async fn scan(gws: &[Gateway], client: &str) -> usize {
    for i in 0..30 {
        let gw = &gws[i % gws.len()];
        if status_as(gw, client, &format!("/missing/{i}")).await == 403 {
            return i;
        }
    }
    panic!("{client} was never banned");
}

/// (a) A scanner spread round-robin over three gateways is banned cluster-wide at
/// `maxretry` (not 3 × maxretry) and refused by all three.
#[tokio::test]
async fn cluster_a_scanner_spread_over_three_gateways_is_banned_by_all() {
    let redis = Redis::start().await;
    let up = upstream().status("/missing", 404).run().await;
    let gws = start_cluster(&up, &redis, 3).await;
    let scanner = "203.0.113.50";
    scan(&gws, scanner).await;
    assert!(all_refuse(&gws, scanner, Duration::from_secs(1)).await);
    let reached = seen_from(&up, scanner);
    assert!(
        reached <= MAXRETRY + 2,
        "the scanner reached the upstream {reached} times (bound: maxretry + 2)"
    );
    let cluster_bans = metric_sum(
        &gws,
        "portcullis_cluster_offenses_total",
        &[("result", "banned")],
    )
    .await;
    assert_eq!(
        cluster_bans, 1.0,
        "exactly one gateway's offense reached maxretry"
    );
    // Another client is untouched everywhere.
    for gw in &gws {
        assert_eq!(status_as(gw, "203.0.113.51", "/ok").await, 200);
    }
}

/// Escalation (bantime_increment) counts the client's bans on every gateway: banned once
/// through gateway 0's share, unbanned, then banned again: the second ban lasts twice as long
/// wherever it is made, and every gateway shows ban count 2.
#[tokio::test]
async fn cluster_escalation_uses_the_cluster_wide_ban_count() {
    let redis = Redis::start().await;
    let up = upstream().status("/missing", 404).run().await;
    let gws = start_all((0..3).map(|_| {
        member(&up, &redis).extra("[reputation.bantime_increment]\nfactor = 2\nmaxtime = \"1d\"\n")
    }))
    .await;
    let scanner = "203.0.113.90";
    scan(&gws, scanner).await;
    assert!(all_refuse(&gws, scanner, Duration::from_secs(1)).await);
    cli(&gws[0], &["bans", "remove", scanner]);
    assert!(
        all_admit(
            &gws.iter().collect::<Vec<_>>(),
            scanner,
            Duration::from_secs(1)
        )
        .await
    );
    // Rotated differently this time: another gateway's offense reaches maxretry.
    scan(&gws[1..], scanner).await;
    assert!(all_refuse(&gws, scanner, Duration::from_secs(1)).await);
    for gw in &gws {
        let bans = bans_of(gw).await;
        let ban = bans
            .as_array()
            .and_then(|b| b.iter().find(|b| b["net"] == "203.0.113.90/32"))
            .unwrap_or_else(|| panic!("no ban in {bans}"));
        assert_eq!(ban["ban_count"], 2, "{ban}");
        let length = ban["until_ms"].as_u64().unwrap() - ban["created_ms"].as_u64().unwrap();
        assert_eq!(length, 20 * 60 * 1000, "second ban: 2 × bantime; {ban}");
    }
}

/// (b) `bans add` on one gateway is enforced by the other two within 1 s, and `bans remove`
/// likewise; the ban propagation p99 over 60 bans is printed and held to 100 ms (item 2).
#[tokio::test]
async fn cluster_b_bans_add_on_one_is_enforced_by_the_others_within_a_second() {
    let redis = Redis::start().await;
    let up = upstream().run().await;
    let gws = start_cluster(&up, &redis, 3).await;
    let target = "198.51.100.7";
    cli(
        &gws[0],
        &[
            "bans",
            "add",
            target,
            "--duration",
            "1h",
            "--reason",
            "abuse",
        ],
    );
    assert!(all_refuse(&gws[1..], target, Duration::from_secs(1)).await);
    let bans = bans_of(&gws[2]).await;
    assert!(
        bans.as_array().is_some_and(|b| b
            .iter()
            .any(|b| b["net"] == "198.51.100.7/32" && b["reason"] == "abuse")),
        "{bans}"
    );
    cli(&gws[1], &["bans", "remove", target]);
    assert!(
        all_admit(&[&gws[0], &gws[2]], target, Duration::from_secs(1)).await,
        "unban reached every gateway"
    );

    // Propagation: from the admin API's answer on one gateway to the first refusal on the next,
    // polled on one kept-alive client so the poll itself costs little.
    let admin = client();
    let mut lags = Vec::new();
    for i in 0..60usize {
        let (from, to) = (&gws[i % 3], &gws[(i + 1) % 3]);
        let ip = format!("198.51.101.{i}");
        let made = admin
            .post(format!("http://127.0.0.1:{}/bans", from.admin_port))
            .header("content-type", "application/json")
            .body(format!(r#"{{"target": "{ip}", "duration": "1h"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 201);
        let t0 = Instant::now();
        loop {
            let status = admin
                .get(to.url("/ok"))
                .header("x-forwarded-for", &ip)
                .send()
                .await
                .unwrap()
                .status();
            if status == 403 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(2), "{ip} never reached");
        }
        lags.push(t0.elapsed());
    }
    lags.sort();
    let p99 = lags[lags.len() * 99 / 100 - 1];
    let p50 = lags[lags.len() / 2];
    println!("ban propagation over loopback: p50 {p50:?}, p99 {p99:?} (60 bans)");
    assert!(p99 <= Duration::from_millis(100), "p99 {p99:?}");
    let received = metric_sum(&gws, "portcullis_cluster_sync_lag_seconds_count", &[]).await;
    assert!(
        received >= 120.0,
        "every ban timed on the two others: {received}"
    );
}

/// (c) Redis killed with SIGKILL: every gateway keeps serving and keeps its bans, says so
/// once, and a new ban holds locally.
#[tokio::test]
async fn cluster_c_redis_killed_every_gateway_keeps_serving_and_banning() {
    let mut redis = Redis::start().await;
    let up = upstream().status("/missing", 404).run().await;
    let gws = start_cluster(&up, &redis, 3).await;
    let before = "198.51.100.20";
    cli(&gws[0], &["bans", "add", before]);
    assert!(all_refuse(&gws, before, Duration::from_secs(1)).await);

    redis.kill9();
    wait_all_up(&gws, 0.0).await;
    for gw in &gws {
        assert_eq!(
            status_as(gw, "203.0.113.60", "/ok").await,
            200,
            "still serving"
        );
        assert_eq!(status_as(gw, before, "/ok").await, 403, "ban kept");
    }
    // A scanner on one gateway alone is banned there as without a cluster.
    let scanner = "203.0.113.61";
    banned_alone(&gws[1], scanner).await;
    // Time for a few reconnection attempts: the change is logged once, not per attempt.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for gw in &gws {
        let log = gw.log();
        assert_eq!(log.matches("cluster down").count(), 1, "{log}");
        assert!(
            gw.metric("portcullis_cluster_errors_total", &[]).await >= 1.0,
            "errors counted"
        );
    }
}

/// (d) Redis restarted (empty): the bans made while it was away are written back, every
/// gateway converges, and a new ban reaches the others again.
#[tokio::test]
async fn cluster_d_redis_restarted_bans_converge() {
    let mut redis = Redis::start().await;
    let up = upstream().status("/missing", 404).run().await;
    let gws = start_cluster(&up, &redis, 3).await;
    let before = "198.51.100.30";
    cli(&gws[0], &["bans", "add", before]);
    assert!(all_refuse(&gws, before, Duration::from_secs(1)).await);
    redis.kill9();
    wait_all_up(&gws, 0.0).await;
    let scanner = "203.0.113.70";
    banned_alone(&gws[2], scanner).await;
    assert_eq!(
        status_as(&gws[0], scanner, "/ok").await,
        200,
        "not shared while down"
    );

    redis.restart().await;
    wait_all_up(&gws, 1.0).await;
    // Written back by the gateway that made it, then published to the others.
    assert!(all_refuse(&gws, scanner, Duration::from_secs(2)).await);
    assert!(all_refuse(&gws, before, Duration::from_secs(1)).await);
    let after = "198.51.100.31";
    cli(&gws[2], &["bans", "add", after]);
    assert!(all_refuse(&gws, after, Duration::from_secs(1)).await);
    let written = metric_sum(
        &gws,
        "portcullis_cluster_resync_total",
        &[("what", "written_back")],
    )
    .await;
    assert!(
        written >= 2.0,
        "both bans written back to the empty Redis: {written}"
    );
}

/// (e) A fourth gateway started later enforces the existing bans from its first request.
#[tokio::test]
async fn cluster_e_a_gateway_started_later_enforces_existing_bans_at_once() {
    let redis = Redis::start().await;
    let up = upstream().status("/missing", 404).run().await;
    let gws = start_cluster(&up, &redis, 3).await;
    let manual = "198.51.100.40";
    cli(&gws[1], &["bans", "add", manual]);
    let scanner = "203.0.113.80";
    scan(&gws, scanner).await;
    assert!(all_refuse(&gws, manual, Duration::from_secs(1)).await);
    let late = member(&up, &redis).start().await;
    assert_eq!(status_as(&late, manual, "/ok").await, 403, "first request");
    assert_eq!(status_as(&late, scanner, "/ok").await, 403);
    assert_eq!(status_as(&late, "203.0.113.81", "/ok").await, 200);
    assert_eq!(
        late.metric("portcullis_cluster_resync_total", &[("what", "loaded")])
            .await,
        2.0
    );
}

/// The resident set of a gateway, in KiB.
fn rss_kib(gw: &Gateway) -> u64 {
    let pid = gw.child.as_ref().expect("running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Soak: 60 s of mixed traffic (clients, scanners, manual bans) through three gateways with
/// Redis restarted twice (SIGKILL, empty on return). No ban is lost, nothing panics, and no
/// gateway's memory grows past a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_soak_sixty_seconds_with_redis_restarted_twice() {
    let mut redis = Redis::start().await;
    let up = upstream().status("/missing", 404).run().await;
    let gws = std::sync::Arc::new(start_cluster(&up, &redis, 3).await);
    let start = Instant::now();
    let run_for = Duration::from_secs(60);
    let banned = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));

    let mut tasks = Vec::new();
    // Two well-behaved clients rotating over the gateways.
    for c in 0..2u32 {
        let gws = gws.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while start.elapsed() < run_for {
                let ip = format!("10.1.{c}.{}", i % 200);
                let status = status_as(&gws[i % 3], &ip, "/ok").await;
                assert_eq!(status, 200, "a good client was refused");
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // Scanners, one after another, each spread over the gateways until refused.
    {
        let (gws, banned) = (gws.clone(), banned.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            while start.elapsed() < run_for {
                let ip = format!("203.0.{}.{}", 100 + n / 250, n % 250);
                let mut i = 0usize;
                while start.elapsed() < run_for && i < 40 {
                    if status_as(&gws[i % 3], &ip, &format!("/missing/{i}")).await == 403 {
                        banned.lock().unwrap().insert(ip.clone());
                        break;
                    }
                    i += 1;
                }
                n += 1;
            }
        }));
    }
    // A manual ban every 500 ms on a gateway in turn, Redis up or not.
    {
        let (gws, banned) = (gws.clone(), banned.clone());
        tasks.push(tokio::spawn(async move {
            let admin = client();
            let mut n = 0usize;
            while start.elapsed() < run_for {
                let ip = format!("198.18.{}.{}", n / 250, n % 250);
                let made = admin
                    .post(format!("http://127.0.0.1:{}/bans", gws[n % 3].admin_port))
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"target": "{ip}", "duration": "1h"}}"#))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(made.status(), 201);
                banned.lock().unwrap().insert(ip);
                n += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    // Warm-up done: the baseline for memory.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let baseline: Vec<u64> = gws.iter().map(rss_kib).collect();
    for (down_at, up_at) in [(15, 20), (35, 40)] {
        tokio::time::sleep(Duration::from_secs(down_at).saturating_sub(start.elapsed())).await;
        redis.kill9();
        tokio::time::sleep(Duration::from_secs(up_at).saturating_sub(start.elapsed())).await;
        redis.restart().await;
    }
    for t in tasks {
        t.await.expect("a traffic task failed");
    }
    wait_all_up(&gws, 1.0).await;
    let banned: Vec<String> = banned.lock().unwrap().iter().cloned().collect();
    assert!(banned.len() > 50, "only {} bans made", banned.len());
    // No lost ban: every gateway refuses every client banned anywhere (converged).
    for ip in &banned {
        assert!(
            all_refuse(&gws, ip, Duration::from_secs(5)).await,
            "{ip} is not banned everywhere"
        );
    }
    for (gw, base) in gws.iter().zip(&baseline) {
        let rss = rss_kib(gw);
        println!("soak: RSS {base} KiB after warm-up, {rss} KiB at the end");
        assert!(
            rss <= base + 32 * 1024,
            "RSS grew from {base} KiB to {rss} KiB (bound: +32 MiB)"
        );
        let log = gw.log();
        assert!(!log.contains("panicked"), "{log}");
        assert!(gw.child.is_some());
    }
    println!(
        "soak: {} bans, all enforced by the three gateways",
        banned.len()
    );
}

/// A gateway whose one route has the `shared = true` zone `api` (`zone`: its other keys), no
/// jail (a 429 stays a 429), and the cluster section with `shared_timeout`.
fn shared_member(up: &Upstream, redis: &Redis, zone: &str, timeout: &str) -> GatewayBuilder {
    gateway(up)
        .extra(BEHIND_PROXY)
        .extra(&format!("[rate_limit.api]\n{zone}\nshared = true\n"))
        .route("rate_limit = [\"api\"]")
        .extra(&format!(
            "[cluster]\nredis = \"{}\"\nkey_prefix = \"e2e:\"\ntimeout = \"250ms\"\nshared_timeout = \"{timeout}\"\n",
            redis.url()
        ))
}

/// One inline command to the test's Redis, its reply line (`:42`, `$-1`, ...).
async fn redis_reply(redis: &Redis, command: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
        .await
        .unwrap();
    s.write_all(format!("{command}\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
        .await
        .expect("Redis answers")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
}

/// A `shared = true` zone holds across the cluster: a client spread round-robin over three
/// gateways gets rate + burst passes in all, where three local zones would give it three
/// times as many.
#[tokio::test]
async fn cluster_shared_zone_holds_across_three_gateways() {
    let redis = Redis::start().await;
    let up = upstream().run().await;
    let zone = "rate = \"1r/m\"\nburst = 5\nnodelay = true";
    let gws = start_all((0..3).map(|_| shared_member(&up, &redis, zone, "250ms"))).await;
    let client = "203.0.113.70";
    let mut statuses = Vec::new();
    for i in 0..18 {
        statuses.push(status_as(&gws[i % 3], client, "/ok").await);
    }
    let passed = statuses.iter().filter(|&&s| s == 200).count();
    // 1r/m drains nothing within the test: 1 + burst 5 pass cluster-wide.
    assert_eq!(passed, 6, "{statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    assert_eq!(up.seen().len(), 6, "requests that reached the upstream");
    // Each gateway saw 6 requests, within its own count: every refusal was the cluster's.
    let rejected = metric_sum(
        &gws,
        "portcullis_cluster_shared_total",
        &[("result", "rejected")],
    )
    .await;
    assert_eq!(rejected, 12.0);
    // Every request answered by the cluster: no fallback to the local count, whatever the reason.
    let fallbacks = metric_sum(&gws, "portcullis_cluster_shared_fallback_total", &[]).await;
    assert_eq!(fallbacks, 0.0);
    // Another client has its own bucket.
    assert_eq!(status_as(&gws[1], "203.0.113.71", "/ok").await, 200);
    // The bucket expires once drained: excess 5 + 1 requests at 1r/m (16 milli-requests per
    // second, truncated as nginx does) is 6,000 / 16 = 375 s.
    let pttl = redis_reply(&redis, &format!("PTTL e2e:rl:api:{client}")).await;
    let ms: u64 = pttl.trim_start_matches(':').parse().expect(&pttl);
    assert!(ms > 370_000 && ms <= 375_000, "PTTL {pttl}");
    // The zone's index counts both clients (the cap of max_clients).
    assert_eq!(redis_reply(&redis, "ZCARD e2e:rl:api").await, ":2");
}

/// A shared zone without `nodelay` delays as nginx does, across the cluster: four requests
/// at once over three gateways at 10r/s wait 0, 100, 200 and 300 ms (each gateway alone
/// would have seen at most two, and delayed by 100 ms at most).
#[tokio::test]
async fn cluster_shared_zone_delays_to_the_cluster_wide_rate() {
    let redis = Redis::start().await;
    let up = upstream().run().await;
    let zone = "rate = \"10r/s\"\nburst = 5";
    let gws = start_all((0..3).map(|_| shared_member(&up, &redis, zone, "250ms"))).await;
    let client = "203.0.113.73";
    let started = Instant::now();
    let requests = (0..4).map(|i| {
        let gw = &gws[i % 3];
        async move { (status_as(gw, client, "/ok").await, started.elapsed()) }
    });
    let answers = futures_util::future::join_all(requests).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        slowest >= Duration::from_millis(250),
        "the fourth request waited for the cluster-wide rate: {answers:?}"
    );
    let delayed = metric_sum(
        &gws,
        "portcullis_cluster_shared_total",
        &[("result", "delayed")],
    )
    .await;
    assert_eq!(delayed, 3.0);
}

/// Redis stopped (hung) and then killed: a request of a shared zone waits `shared_timeout`
/// at most, then this gateway's own count decides (fail open); one warning, not one per
/// request.
#[tokio::test]
async fn cluster_shared_zone_fails_open_to_the_local_count_within_the_timeout() {
    let mut redis = Redis::start().await;
    let up = upstream().run().await;
    let gw = shared_member(
        &up,
        &redis,
        "rate = \"1r/m\"\nburst = 2\nnodelay = true",
        "50ms",
    )
    .start()
    .await;
    wait_up(&gw, 1.0).await;
    let client = "203.0.113.72";
    assert_eq!(status_as(&gw, client, "/ok").await, 200);
    assert_eq!(
        gw.metric("portcullis_cluster_shared_total", &[("result", "passed")])
            .await,
        1.0
    );

    // A hung Redis: the connection stays open and nothing answers.
    let pid = redis.child.as_ref().expect("redis runs").id().to_string();
    let stopped = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    assert!(stopped.success());
    let margin = Duration::from_millis(250);
    let started = Instant::now();
    assert_eq!(status_as(&gw, client, "/ok").await, 200);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(50) + margin,
        "a request waited {took:?}"
    );
    assert_eq!(
        gw.metric(
            "portcullis_cluster_shared_fallback_total",
            &[("reason", "timeout")]
        )
        .await,
        1.0
    );

    // Killed: the local count goes on (1 + burst 2 on this gateway), then refuses.
    redis.kill9();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        statuses.push(status_as(&gw, client, "/ok").await);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(50) + margin,
            "a request waited {took:?}"
        );
    }
    assert_eq!(statuses, vec![200, 429, 429]);
    assert_eq!(up.seen().len(), 3, "requests that reached the upstream");
    let log = gw.log();
    assert_eq!(
        log.matches("shared rate limits: Redis did not answer in time")
            .count(),
        1,
        "one warning at the change:\n{log}"
    );
}

/// `shared = true` without `[cluster]` is a config error naming the key and its line.
#[tokio::test]
async fn cluster_shared_zone_without_a_cluster_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "shared.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[upstream]]\nname = \"api\"\nservers = [\"127.0.0.1:9999\"]\n\n[rate_limit.api]\nrate = \"10r/s\"\nshared = true\n\n[[route]]\nupstream = \"api\"\nrate_limit = [\"api\"]\n",
    );
    let (ok, _out, err) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("line 10: rate_limit.api.shared"), "{err}");
    assert!(err.contains("[cluster]"), "{err}");
}
