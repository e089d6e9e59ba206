//! The foundation: proxying, forwarding headers, errors, TLS, metrics, config checks, shutdown.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn proxies_with_nginx_proxy_params_headers() {
    let up = upstream().run().await;
    let gw = gateway(&up).start().await;
    let resp = client()
        .get(gw.url("/api/items?x=1"))
        .header("host", "api.example.com")
        .header("x-forwarded-for", "203.0.113.50")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        "hello from upstream: /api/items?x=1"
    );

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(
        h["host"], "api.example.com",
        "Host is kept as the client sent it"
    );
    // The peer is not a trusted proxy, so its X-Forwarded-For does not name the client...
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    // ...but the chain is kept and the peer appended, as $proxy_add_x_forwarded_for does.
    assert_eq!(h["x-forwarded-for"], "203.0.113.50, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn trusted_proxy_names_the_client_and_spoofing_is_ignored() {
    let up = upstream().run().await;
    let trusted = gateway(&up)
        .extra("[client_ip]\ntrusted_proxies = [\"127.0.0.0/8\"]\nheader = \"x-forwarded-for\"")
        .start()
        .await;
    // The client prepends a spoofed address; the trusted balancer appends the real one.
    let resp = client()
        .get(trusted.url("/"))
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.seen()[0].headers["x-real-ip"], "198.51.100.7");

    // Without trust, the same header changes nothing.
    let up2 = upstream().run().await;
    let untrusted = gateway(&up2)
        .extra("[client_ip]\ntrusted_proxies = [\"10.0.0.0/8\"]")
        .start()
        .await;
    client()
        .get(untrusted.url("/"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(up2.seen()[0].headers["x-real-ip"], "127.0.0.1");
}

#[tokio::test]
async fn no_route_is_404_and_never_reaches_the_upstream() {
    let up = upstream().run().await;
    let gw = gateway(&up).route_path("/api").start().await;
    let resp = client().get(gw.url("/other")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let ok = client().get(gw.url("/api/x")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(up.paths(), vec!["/api/x"]);
    assert_eq!(
        gw.metric_settles(
            "portcullis_requests_total",
            &[("decision", "no_route")],
            1.0
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn upstream_down_gives_502_and_the_gateway_keeps_serving() {
    let up = upstream().run().await;
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = gateway(&up).servers(vec![dead]).start().await;
    for _ in 0..3 {
        let resp = client().get(gw.url("/x")).send().await.unwrap();
        assert_eq!(resp.status(), 502);
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("upstream"),
            "short explanatory body, got {body:?}"
        );
    }
    assert_eq!(
        gw.metric_settles(
            "portcullis_requests_total",
            &[("decision", "upstream_error")],
            3.0
        )
        .await,
        3.0
    );
    assert_eq!(
        gw.metric_settles("portcullis_responses_total", &[("class", "5xx")], 3.0)
            .await,
        3.0
    );
    // Counted once, as what it was: a failure to connect, not a failure mid-request.
    let errors = "portcullis_upstream_errors_total";
    let connect = gw.metric(errors, &[("upstream", "api"), ("kind", "connect")]);
    assert!(connect.await >= 1.0);
    let proxy = gw.metric(errors, &[("upstream", "api"), ("kind", "proxy")]);
    assert_eq!(proxy.await, 0.0);
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

#[tokio::test]
async fn a_down_server_is_skipped() {
    let up = upstream().run().await;
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = gateway(&up).servers(vec![dead, up.addr]).start().await;
    for i in 0..6 {
        let resp = client()
            .get(gw.url(&format!("/r{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
    }
    assert_eq!(up.seen().len(), 6);
}

#[tokio::test]
async fn metrics_count_routes_decisions_statuses_and_latency() {
    let up = upstream().status("/missing", 404).run().await;
    let gw = gateway(&up).start().await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(c.get(gw.url("/ok")).send().await.unwrap().status(), 200);
    }
    assert_eq!(
        c.get(gw.url("/missing")).send().await.unwrap().status(),
        404
    );
    let proxied = gw
        .metric_settles(
            "portcullis_requests_total",
            &[("route", "/"), ("decision", "proxied")],
            4.0,
        )
        .await;
    assert_eq!(proxied, 4.0);
    assert_eq!(
        gw.metric_settles("portcullis_responses_total", &[("class", "2xx")], 3.0)
            .await,
        3.0
    );
    assert_eq!(
        gw.metric_settles("portcullis_responses_total", &[("class", "4xx")], 1.0)
            .await,
        1.0
    );
    assert_eq!(
        gw.metric_settles(
            "portcullis_upstream_response_seconds_count",
            &[("upstream", "api")],
            4.0
        )
        .await,
        4.0
    );
    assert_eq!(
        gw.metric_settles("portcullis_build_info", &[], 1.0).await,
        1.0
    );
}

#[tokio::test]
async fn tls_termination_with_http2() {
    let up = upstream().run().await;
    let (gw, tls_client, tls_port) = with_tls(gateway(&up)).await;
    let resp = tls_client
        .get(format!("https://localhost:{tls_port}/secure"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "ALPN negotiates h2"
    );
    let seen = up.seen();
    assert_eq!(seen[0].path, "/secure");
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
    assert_eq!(seen[0].headers["host"], format!("localhost:{tls_port}"));
    drop(gw);
}

#[tokio::test]
async fn check_accepts_the_shipped_configs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    for dir in ["config", "deploy"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let (ok, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()]);
                assert!(ok, "{}: {out}{err}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 1, "config/portcullis.toml must exist");
}

#[tokio::test]
async fn check_names_every_bad_key_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "bad.toml",
        r#"[server]
listen = ["127.0.0.1:notaport"]

[[upstream]]
name = "api"
servers = ["127.0.0.1:9999"]
connect_timeout = "soon"

[[route]]
path = "/"
upstream = "nope"
"#,
    );
    let (ok, _out, err) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("line 2: server.listen[0]"), "{err}");
    assert!(err.contains("line 7: upstream[0].connect_timeout"), "{err}");
    assert!(err.contains("line 11: route[0].upstream"), "{err}");
    assert!(err.contains("3 error(s)"), "{err}");

    let unknown = write_file(
        dir.path(),
        "unknown.toml",
        "[server]\nlisten = []\nlisten_typo = 1\n",
    );
    let (ok, _out, err) = run_cli(&["check", "--config", unknown.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("line 3: server.listen_typo"), "{err}");

    // `run` refuses the same file cleanly: an error, not a panic.
    let (ok, _out, err) = run_cli(&["run", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("not valid"), "{err}");
}

#[tokio::test]
async fn sigterm_shuts_down_within_the_grace_period() {
    let up = upstream().run().await;
    let mut gw = gateway(&up).start().await;
    assert_eq!(
        client().get(gw.url("/")).send().await.unwrap().status(),
        200
    );
    gw.signal("TERM");
    let (status, took) = gw
        .wait_exit(Duration::from_secs(8))
        .expect("exits after SIGTERM");
    assert!(status.success(), "clean exit, got {status:?}");
    // shutdown_grace is 1s in tests; Pingora's default would be 300 s.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn version_flag() {
    let (ok, out, _) = run_cli(&["--version"]);
    assert!(ok);
    assert!(out.starts_with("portcullis "), "{out}");
}

#[tokio::test]
async fn a_port_in_use_stops_startup_with_a_clear_error() {
    let up = upstream().run().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (_dir, path, _) = gateway(&up).write();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "listen = [\"127.0.0.1:",
        &format!("listen = [\"127.0.0.1:{port}\", \"127.0.0.1:"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(binary())
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("server.listen: cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

/// Which worker takes a connection (`[server] reuseport`, workers.rs) must never leave one
/// unserved: with shared sockets a later worker takes connections only while the first is
/// busy, with `reuseport` each worker drains its own socket.
#[tokio::test]
async fn new_connections_are_served_when_idle_and_while_a_slow_request_is_in_progress() {
    let up = upstream()
        .slow("/slow", Duration::from_millis(1500))
        .run()
        .await;
    for reuseport in [false, true] {
        let gw = gateway(&up)
            .server(&format!("reuseport = {reuseport}"))
            // counts the requests being forwarded (portcullis_inflight_requests)
            .extra("[inflight]\ntotal = 100")
            .start()
            .await;
        fresh_connections(&gw, &format!("/idle-{reuseport}/")).await;
        let slow = tokio::spawn(client().get(gw.url("/slow")).send());
        assert_eq!(
            gw.metric_settles("portcullis_inflight_requests", &[], 1.0)
                .await,
            1.0,
            "the slow request is being forwarded"
        );
        fresh_connections(&gw, &format!("/busy-{reuseport}/")).await;
        assert!(
            !slow.is_finished(),
            "all answered while the slow one was in progress"
        );
        assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    }
    let paths = up.paths();
    for phase in ["/idle-false/", "/busy-false/", "/idle-true/", "/busy-true/"] {
        assert_eq!(
            paths.iter().filter(|p| p.starts_with(phase)).count(),
            16,
            "{phase}"
        );
    }
}

/// Sixteen requests, each on a new connection (a client without a pool each): new source
/// ports, which the kernel hashes over the workers' own sockets with reuseport.
async fn fresh_connections(gw: &Gateway, prefix: &str) {
    for i in 0..16 {
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let resp = tokio::time::timeout(
            Duration::from_secs(1),
            fresh.get(gw.url(&format!("{prefix}{i}"))).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("{prefix}{i}: connection unanswered"))
        .unwrap();
        assert_eq!(resp.status(), 200);
    }
}
