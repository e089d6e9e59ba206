//! Day-2 operations: hot reload, access log, damaged state files.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn sighup_reload_applies_valid_config_and_keeps_state() {
    let up = upstream().status("/missing", 404).run().await;
    let gw = gateway(&up)
        .route("rate_limit = [\"per_ip\"]")
        .extra(BEHIND_PROXY)
        .extra("[rate_limit.per_ip]\nrate = \"1r/m\"\nburst = 1\nnodelay = true")
        .extra("[reputation]\nmaxretry = 2\nignoreip = []")
        .extra("[probes]\naction = \"404\"")
        .start()
        .await;
    // Client A uses up its limiter budget; client B gets banned.
    assert_eq!(status_as(&gw, "198.51.100.1", "/").await, 200);
    assert_eq!(status_as(&gw, "198.51.100.1", "/").await, 200);
    assert_eq!(status_as(&gw, "198.51.100.1", "/").await, 429);
    assert_eq!(status_as(&gw, "198.51.100.2", "/missing").await, 404);
    assert_eq!(status_as(&gw, "198.51.100.2", "/missing").await, 404);
    assert_eq!(status_as(&gw, "198.51.100.2", "/").await, 403);
    assert_eq!(status_as(&gw, "198.51.100.3", "/secret-admin").await, 200);

    // A valid change: a custom probe path and a 403 action.
    let new = gw.config_text().replace(
        "[probes]\naction = \"404\"",
        "[probes]\naction = \"403\"\npaths = [\"/secret-admin\"]",
    );
    gw.rewrite_config(&new);
    gw.signal("HUP");
    assert_eq!(
        gw.metric_settles("portcullis_config_reloads_total", &[("result", "ok")], 1.0)
            .await,
        1.0
    );
    assert_eq!(
        status_as(&gw, "198.51.100.4", "/secret-admin").await,
        403,
        "new rule applies"
    );
    assert_eq!(
        status_as(&gw, "198.51.100.1", "/").await,
        429,
        "limiter state kept"
    );
    assert_eq!(status_as(&gw, "198.51.100.2", "/").await, 403, "ban kept");

    // An invalid change is rejected and the running config keeps serving.
    gw.rewrite_config(&new.replace("rate = \"1r/m\"", "rate = \"fast\""));
    gw.signal("HUP");
    assert_eq!(
        gw.metric_settles(
            "portcullis_config_reloads_total",
            &[("result", "error")],
            1.0
        )
        .await,
        1.0
    );
    assert!(
        eventually(Duration::from_secs(3), || async {
            gw.log().contains("rate_limit.per_ip.rate")
        })
        .await,
        "the error names the key:\n{}",
        gw.log()
    );
    assert_eq!(status_as(&gw, "198.51.100.5", "/secret-admin").await, 403);
    assert_eq!(status_as(&gw, "198.51.100.6", "/ok").await, 200);

    // The admin API reloads too, and reports the errors.
    let resp = client()
        .post(format!("http://127.0.0.1:{}/reload", gw.admin_port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("rate_limit.per_ip.rate"));
    gw.rewrite_config(&new);
    let resp = client()
        .post(format!("http://127.0.0.1:{}/reload", gw.admin_port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn access_log_is_nginx_combined_with_the_decision() {
    let up = upstream().run().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = gateway(&up)
        .extra(&format!(
            "[access_log]\ntarget = \"{}\"\nformat = \"combined\"",
            log.display()
        ))
        .extra("[probes]\naction = \"404\"")
        .start()
        .await;
    let c = client();
    c.get(gw.url("/items?page=2"))
        .header("user-agent", "goaccess-test/1.0")
        .header("referer", "https://example.com/")
        .send()
        .await
        .unwrap();
    c.get(gw.url("/.env")).send().await.unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), || async {
            read().lines().count() >= 2
        })
        .await,
        "access log lines: {:?}",
        read()
    );
    let text = read();
    // A line is written when its request ends, which can be after the client has its answer
    // and sent the next request (on another worker thread): the order is not the test's.
    let line = |path: &str| {
        text.lines()
            .find(|l| l.contains(path))
            .unwrap_or_else(|| panic!("no line for {path}: {text}"))
    };
    let re = regex::Regex::new(
        r#"^127\.0\.0\.1 - - \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "GET /items\?page=2 HTTP/1\.1" 200 \d+ "https://example\.com/" "goaccess-test/1\.0" decision=proxied route=/ client=127\.0\.0\.1$"#,
    )
    .unwrap();
    assert!(re.is_match(line("/items")), "{text}");
    let probe = line("/.env");
    assert!(probe.contains("\"GET /.env HTTP/1.1\" 404"), "{probe}");
    assert!(probe.contains("decision=probe"), "{probe}");
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[tokio::test]
async fn access_log_json_lines() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .extra("[access_log]\ntarget = \"access.json\"\nformat = \"json\"")
        .start()
        .await;
    client().get(gw.url("/j")).send().await.unwrap();
    let path = gw.config_path.parent().unwrap().join("access.json");
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(eventually(Duration::from_secs(5), || async { !read().is_empty() }).await);
    let line: serde_json::Value = serde_json::from_str(read().lines().next().unwrap()).unwrap();
    assert_eq!(line["status"], 200);
    assert_eq!(line["decision"], "proxied");
    assert_eq!(line["method"], "GET");
    assert_eq!(up.seen()[0].method, "GET");
}

/// logrotate moves the file away and sends SIGHUP (as for nginx): later lines go to a new file
/// at the configured path, and nothing is lost from the moved one.
#[tokio::test]
async fn a_reload_reopens_the_access_log_after_rotation() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .extra("[access_log]\ntarget = \"access.log\"\nformat = \"combined\"")
        .start()
        .await;
    let path = gw.config_path.parent().unwrap().join("access.log");
    let rotated = gw.config_path.parent().unwrap().join("access.log.1");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    client().get(gw.url("/before")).send().await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            read(&path).contains("/before")
        })
        .await
    );

    std::fs::rename(&path, &rotated).unwrap();
    gw.signal("HUP");
    // The reload is applied in the background: keep asking until a line lands in the new file.
    assert!(
        eventually(Duration::from_secs(10), || async {
            client().get(gw.url("/after")).send().await.unwrap();
            read(&path).contains("/after")
        })
        .await,
        "no new access log at {}; log:\n{}",
        path.display(),
        gw.log()
    );
    assert!(read(&rotated).contains("/before"));
    assert!(!read(&path).contains("/before"));
}

#[tokio::test]
async fn damaged_state_files_are_reported_and_never_stop_startup() {
    let up = upstream().status("/missing", 404).run().await;
    let mut gw = gateway(&up)
        .extra(BEHIND_PROXY)
        .extra("[reputation]\nmaxretry = 1\nignoreip = []")
        .start()
        .await;
    assert_eq!(status_as(&gw, "203.0.113.1", "/missing").await, 404);
    assert_eq!(status_as(&gw, "203.0.113.1", "/").await, 403);
    gw.kill9();
    // Garbage appended to the journal (a torn write, a bad disk) after the good record.
    let journal = gw.state_dir().join("reputation.journal");
    let mut bytes = std::fs::read(&journal).unwrap_or_default();
    bytes.extend_from_slice(b"0000ffff deadbeef {not json at all\n\x00\x01garbage");
    std::fs::write(&journal, bytes).unwrap();
    gw.restart().await;
    assert_eq!(
        status_as(&gw, "203.0.113.1", "/").await,
        403,
        "the good record was kept"
    );
    assert_eq!(status_as(&gw, "203.0.113.2", "/").await, 200);
    assert!(gw.log().contains("damaged"), "{}", gw.log());
}

/// A log collector that stops reading (a stalled journald, a paused `| less`) fills the pipe
/// behind stderr; the proxy must go on serving and count what it could not log.
#[tokio::test]
async fn a_stderr_nobody_reads_does_not_stop_the_proxy() {
    let up = upstream().run().await;
    // Pingora's debug lines: well over a pipe's 64 KiB within the requests below (HttpProxy
    // writes several per request; the fast path one).
    let gw = gateway(&up)
        .server("fast_path = false")
        .log_level("debug")
        .stderr_never_read()
        .start()
        .await;
    let client = client();
    for i in 0..1500 {
        let sent = tokio::time::timeout(
            Duration::from_secs(5),
            client.get(gw.url(&format!("/r{i}"))).send(),
        )
        .await;
        let status = sent
            .unwrap_or_else(|_| panic!("request {i} hung"))
            .unwrap()
            .status();
        assert_eq!(status, 200, "request {i}");
    }
    // The pipe did fill up: lines were dropped, not waited for.
    assert!(gw.metric("portcullis_log_dropped_total", &[]).await > 0.0);
}
