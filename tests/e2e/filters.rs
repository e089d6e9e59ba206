//! The three filters through the real binary: rate limits, probes, reputation and bans.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn rate_limit_rejects_with_429_and_retry_after() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .route("rate_limit = [\"per_ip\"]")
        .extra("[rate_limit.per_ip]\nrate = \"1r/s\"\nburst = 0\nnodelay = true")
        .start()
        .await;
    let first = client().get(gw.url("/a")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = client().get(gw.url("/b")).send().await.unwrap();
    assert_eq!(second.status(), 429);
    let retry: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1).contains(&retry), "Retry-After {retry}");
    assert!(second.text().await.unwrap().contains("Too Many Requests"));
    assert_eq!(
        up.paths(),
        vec!["/a"],
        "the rejected request never reached the upstream"
    );
    assert_eq!(
        gw.metric_settles(
            "portcullis_rate_limit_decisions_total",
            &[("zone", "per_ip"), ("decision", "rejected")],
            1.0
        )
        .await,
        1.0
    );
    assert_eq!(
        gw.metric_settles("portcullis_rate_limit_clients", &[("zone", "per_ip")], 1.0)
            .await,
        1.0
    );
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_limited_separately() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .route("rate_limit = [\"per_ip\"]")
        .extra(BEHIND_PROXY)
        .extra("[rate_limit.per_ip]\nrate = \"1r/m\"\nburst = 1\nnodelay = true")
        .start()
        .await;
    assert_eq!(status_as(&gw, "198.51.100.1", "/").await, 200);
    assert_eq!(status_as(&gw, "198.51.100.1", "/").await, 200);
    assert_eq!(status_as(&gw, "198.51.100.1", "/").await, 429);
    // Another client behind the same balancer has its own budget.
    assert_eq!(status_as(&gw, "198.51.100.2", "/").await, 200);
    assert_eq!(status_as(&gw, "198.51.100.2", "/").await, 200);
    assert_eq!(status_as(&gw, "198.51.100.2", "/").await, 429);
    assert_eq!(up.seen().len(), 4);
}

#[tokio::test]
async fn dry_run_counts_but_lets_requests_through() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .route("rate_limit = [\"trial\"]")
        .extra("[rate_limit.trial]\nrate = \"1r/m\"\nburst = 0\nnodelay = true\ndry_run = true")
        .start()
        .await;
    for _ in 0..3 {
        assert_eq!(
            client().get(gw.url("/")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(up.seen().len(), 3);
    assert_eq!(
        gw.metric_settles(
            "portcullis_rate_limit_decisions_total",
            &[("zone", "trial"), ("decision", "dry_run")],
            2.0
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn delay_mode_holds_excess_requests_instead_of_rejecting() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .route("rate_limit = [\"smooth\"]")
        .extra("[rate_limit.smooth]\nrate = \"5r/s\"\nburst = 5")
        .start()
        .await;
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(
            client().get(gw.url("/")).send().await.unwrap().status(),
            200
        );
    }
    // At 5r/s the 2nd and 3rd requests are released ~200 ms apart (nginx's delay), not refused.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(up.seen().len(), 3);
    assert!(
        gw.metric_settles(
            "portcullis_rate_limit_decisions_total",
            &[("decision", "delayed")],
            2.0
        )
        .await
            >= 1.0
    );
}

/// Probe paths from real scanner traffic, and benign look-alikes.
const SCANNER: &[&str] = &[
    "/.env",
    "/.git/config",
    "/wp-login.php",
    "/phpmyadmin/",
    "/cgi-bin/.%2e/.%2e/.%2e/bin/sh",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/boaform/admin/formLogin",
    "/actuator/env",
    "/%2e%65nv",
    "//.env",
    "/api/../.env",
];
const BENIGN: &[&str] = &[
    "/api/v1/search?q=.env",
    "/blog/how-to-use-dotenv-files",
    "/users/admin",
    "/static/app.js",
    "/.well-known/acme-challenge/token123",
    "/robots.txt",
    "/favicon.ico",
];

#[tokio::test]
async fn scanner_session_never_reaches_the_upstream() {
    let up = upstream().run().await;
    let gw = gateway(&up).extra(PROBES_404).start().await;
    let c = client();
    for (probe, benign) in SCANNER.iter().zip(BENIGN.iter().cycle()) {
        let r = c.get(gw.url(probe)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{probe}");
        let r = c.get(gw.url(benign)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{benign}");
    }
    for benign in BENIGN {
        assert_eq!(
            c.get(gw.url(benign)).send().await.unwrap().status(),
            200,
            "{benign}"
        );
    }
    let seen = up.paths();
    for probe in SCANNER {
        assert!(
            !seen.iter().any(|p| p == probe),
            "{probe} reached the upstream"
        );
    }
    for benign in BENIGN {
        assert!(
            seen.iter().any(|p| p == benign),
            "{benign} did not reach the upstream"
        );
    }
    assert_eq!(seen.len(), SCANNER.len() + BENIGN.len());
    let hits = gw
        .metric_settles(
            "portcullis_probe_hits_total",
            &[("action", "404")],
            SCANNER.len() as f64,
        )
        .await;
    assert_eq!(hits, SCANNER.len() as f64);
    assert!(
        gw.metric("portcullis_probe_hits_total", &[("category", "secrets")])
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn scanner_user_agents_and_drop_action() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .extra("[probes]\naction = \"drop\"\nuser_agents = [\"evilscan\"]")
        .start()
        .await;
    // A dropped request gets no HTTP response at all (nginx 444).
    let dropped = client().get(gw.url("/.env")).send().await;
    assert!(
        dropped.is_err(),
        "expected the connection to be closed, got {dropped:?}"
    );
    let by_agent = client()
        .get(gw.url("/fine"))
        .header("user-agent", "EvilScan/1.0")
        .send()
        .await;
    assert!(by_agent.is_err());
    assert_eq!(
        client().get(gw.url("/fine")).send().await.unwrap().status(),
        200
    );
    assert_eq!(up.paths(), vec!["/fine"]);
    assert_eq!(
        gw.metric_settles("portcullis_responses_total", &[("class", "444")], 2.0)
            .await,
        2.0
    );
}

const JAIL: &str =
    "[reputation]\nmaxretry = 5\nfindtime = \"10m\"\nbantime = \"10m\"\nignoreip = []\n";

#[tokio::test]
async fn five_upstream_404s_and_the_sixth_request_never_reaches_the_upstream() {
    let up = upstream().status("/missing", 404).run().await;
    let gw = gateway(&up).extra(BEHIND_PROXY).extra(JAIL).start().await;
    let me = "203.0.113.9";
    for i in 0..5 {
        assert_eq!(status_as(&gw, me, &format!("/missing/{i}")).await, 404);
    }
    assert_eq!(
        status_as(&gw, me, "/api/ok").await,
        403,
        "banned after the 5th offense"
    );
    assert_eq!(
        up.seen().len(),
        5,
        "the 6th request never reached the upstream"
    );
    // Another client is unaffected.
    assert_eq!(status_as(&gw, "203.0.113.10", "/api/ok").await, 200);
    assert_eq!(
        gw.metric_settles("portcullis_bans_active", &[], 1.0).await,
        1.0
    );
    assert_eq!(
        gw.metric("portcullis_bans_total", &[("reason", "upstream_status")])
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("portcullis_offenses_total", &[("kind", "upstream_status")])
            .await,
        5.0
    );
    assert!(gw.log().contains("ban"), "ban is logged");
}

/// A request held by the limiter's delay when its client is banned is refused as it leaves:
/// nothing of a client reaches the upstream once the ban is made.
#[tokio::test]
async fn a_request_in_flight_when_its_client_is_banned_never_reaches_the_upstream() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .extra(BEHIND_PROXY)
        .extra(JAIL)
        .route("rate_limit = [\"smooth\"]")
        .extra("[rate_limit.smooth]\nrate = \"1r/s\"\nburst = 5")
        .start()
        .await;
    let me = "203.0.113.21";
    assert_eq!(status_as(&gw, me, "/first").await, 200);
    // At 1r/s the second request is held for a second (nginx's delay mode).
    let held = tokio::spawn(get_url_as(gw.url("/held"), me));
    assert!(
        eventually(Duration::from_secs(5), || async {
            gw.metric(
                "portcullis_rate_limit_decisions_total",
                &[("decision", "delayed")],
            )
            .await
                == 1.0
        })
        .await
    );
    let config = gw.config_path.to_str().unwrap().to_string();
    let (ok, out, err) = run_cli(&["bans", "add", me, "--config", &config]);
    assert!(ok, "{out}{err}");
    let held = held.await.unwrap();
    assert_eq!(held.status(), 403);
    assert_eq!(held.text().await.unwrap(), "403 Forbidden\n");
    assert_eq!(up.paths(), vec!["/first".to_string()]);
    assert_eq!(
        gw.metric_settles("portcullis_requests_total", &[("decision", "banned")], 1.0)
            .await,
        1.0
    );
}

#[tokio::test]
async fn probe_scanner_is_banned_after_the_configured_weight() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .extra(BEHIND_PROXY)
        .extra(JAIL)
        .extra("[reputation.weights]\nprobe = 5\n\n[probes]\naction = \"404\"")
        .start()
        .await;
    let scanner = "192.0.2.66";
    assert_eq!(status_as(&gw, scanner, "/wp-login.php").await, 404);
    // One probe (weight 5 = maxretry) bans: even a benign path is now refused.
    assert_eq!(status_as(&gw, scanner, "/api/ok").await, 403);
    assert!(up.seen().is_empty());
    assert_eq!(status_as(&gw, "192.0.2.67", "/api/ok").await, 200);
}

#[tokio::test]
async fn ignoreip_clients_are_never_banned() {
    let up = upstream().status("/missing", 404).run().await;
    let gw = gateway(&up)
        .extra(BEHIND_PROXY)
        .extra("[reputation]\nmaxretry = 2\nignoreip = [\"203.0.113.0/24\"]")
        .start()
        .await;
    for _ in 0..6 {
        assert_eq!(status_as(&gw, "203.0.113.5", "/missing").await, 404);
    }
    assert_eq!(status_as(&gw, "203.0.113.5", "/ok").await, 200);
    assert_eq!(up.seen().len(), 7);
}

#[tokio::test]
async fn deny_networks_are_always_refused() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .extra(BEHIND_PROXY)
        .extra("[reputation]\ndeny = [\"198.18.0.0/15\"]")
        .start()
        .await;
    assert_eq!(status_as(&gw, "198.19.1.1", "/").await, 403);
    assert_eq!(status_as(&gw, "198.20.1.1", "/").await, 200);
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn bans_survive_kill_9_and_restart_and_the_cli_unbans() {
    let up = upstream().status("/missing", 404).run().await;
    let mut gw = gateway(&up).extra(BEHIND_PROXY).extra(JAIL).start().await;
    let me = "203.0.113.77";
    for _ in 0..5 {
        assert_eq!(status_as(&gw, me, "/missing").await, 404);
    }
    assert_eq!(status_as(&gw, me, "/").await, 403);
    // A manual CIDR ban through the CLI too.
    let config = gw.config_path.to_str().unwrap().to_string();
    let (ok, out, err) = run_cli(&[
        "bans",
        "add",
        "198.51.100.0/24",
        "--duration",
        "1h",
        "--reason",
        "abuse report",
        "--config",
        &config,
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(status_as(&gw, "198.51.100.20", "/").await, 403);

    gw.restart().await; // SIGKILL, then start on the same state_dir
    assert_eq!(status_as(&gw, me, "/").await, 403, "ban survived kill -9");
    assert_eq!(
        status_as(&gw, "198.51.100.20", "/").await,
        403,
        "CIDR ban survived"
    );
    let (ok, list, err) = run_cli(&["bans", "list", "--config", &config]);
    assert!(ok, "{err}");
    assert!(list.contains("203.0.113.77/32"), "{list}");
    assert!(list.contains("abuse report"), "{list}");

    let (ok, out, err) = run_cli(&["bans", "remove", me, "--config", &config]);
    assert!(ok, "{out}{err}");
    assert_eq!(status_as(&gw, me, "/").await, 200, "unban restores access");
    let (ok, show, _) = run_cli(&["bans", "show", me, "--config", &config]);
    assert!(ok);
    assert!(show.contains("\"ban_count\":1"), "{show}");
}

#[tokio::test]
async fn admin_api_requires_the_token_when_configured() {
    let up = upstream().run().await;
    let dir = tempfile::tempdir().unwrap();
    let token = write_file(dir.path(), "admin.token", "s3cret\n");
    let gw = gateway(&up)
        .admin(&format!("token_file = \"{}\"", token.display()))
        .start()
        .await;
    let url = format!("http://127.0.0.1:{}/bans", gw.admin_port);
    let anon = client().get(&url).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    let authed = client()
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(authed.status(), 200);
    let (ok, out, err) = run_cli(&[
        "bans",
        "list",
        "--json",
        "--config",
        gw.config_path.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "[]");
}

#[tokio::test]
async fn a_banned_direct_peer_is_refused_at_accept() {
    let up = upstream().run().await;
    // No trusted proxies: the TCP peer (127.0.0.1) is the client itself.
    let gw = gateway(&up)
        .extra("[reputation]\nignoreip = []")
        .start()
        .await;
    assert_eq!(
        client()
            .get(gw.url("/before"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let config = gw.config_path.to_str().unwrap().to_string();
    let (ok, out, err) = run_cli(&[
        "bans",
        "add",
        "127.0.0.1",
        "--duration",
        "10m",
        "--config",
        &config,
    ]);
    assert!(ok, "{out}{err}");
    // The connection is closed before any HTTP is read: no response at all.
    let refused = client().get(gw.url("/after")).send().await;
    assert!(
        refused.is_err(),
        "expected a closed connection, got {refused:?}"
    );
    assert_eq!(
        gw.metric_settles(
            "portcullis_connections_refused_total",
            &[("reason", "banned")],
            1.0
        )
        .await,
        1.0
    );
    // The admin listener is not filtered, so the ban can be lifted.
    let (ok, out, err) = run_cli(&["bans", "remove", "127.0.0.1", "--config", &config]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        client()
            .get(gw.url("/again"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(up.paths(), vec!["/before", "/again"]);
}

#[tokio::test]
async fn concurrency_caps_refuse_excess_in_flight_requests() {
    let up = upstream()
        .slow("/slow", Duration::from_millis(700))
        .run()
        .await;
    let gw = gateway(&up)
        .extra(BEHIND_PROXY)
        .extra("[inflight]\nper_client = 1\ntotal = 2\nstatus = 503")
        .start()
        .await;
    // Client A holds its one slot with a slow request; its second concurrent one is refused.
    let slow_a = tokio::spawn(get_url_as(gw.url("/slow/a"), "198.51.100.1"));
    assert!(
        eventually(Duration::from_secs(3), || async {
            gw.metric("portcullis_inflight_requests", &[]).await == 1.0
        })
        .await
    );
    let second = get_as(&gw, "198.51.100.1", "/fast").await;
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));
    // Client B takes the second global slot; client C finds the gateway full.
    let slow_b = tokio::spawn(get_url_as(gw.url("/slow/b"), "198.51.100.2"));
    assert!(
        eventually(Duration::from_secs(3), || async {
            gw.metric("portcullis_inflight_requests", &[]).await == 2.0
        })
        .await
    );
    assert_eq!(status_as(&gw, "198.51.100.3", "/fast").await, 503);
    assert_eq!(slow_a.await.unwrap().status(), 200);
    assert_eq!(slow_b.await.unwrap().status(), 200);
    // Slots are released when requests finish.
    assert_eq!(status_as(&gw, "198.51.100.3", "/fast").await, 200);
    assert_eq!(
        gw.metric(
            "portcullis_inflight_rejections_total",
            &[("scope", "client")]
        )
        .await,
        1.0
    );
    assert_eq!(
        gw.metric(
            "portcullis_inflight_rejections_total",
            &[("scope", "total")]
        )
        .await,
        1.0
    );
}
