//! Regression tests of the HTTP hardening sweep (issue "HTTP hardening") and of the HTTP/2
//! one: the bytes each finding described, sent on raw sockets to the real binary in front of
//! a scripted upstream, with what the client sees asserted. They run on both proxy paths
//! (scripts/test runs the e2e suite with the fast path on and off).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::fast_path::read_response;
use crate::support::*;

/// An upstream that answers `HEAD` with a header and then, when the test says so, sends a
/// whole second response on the same connection, as a HEAD handler that writes a body in a
/// second `send()` does (Python's `http.server` with `do_HEAD = do_GET`). Every other request
/// gets a body naming its own path. The second `Notify` tells the test the bytes were written.
async fn late_bytes_upstream() -> (std::net::SocketAddr, Arc<Notify>, Arc<Notify>) {
    let send_late = Arc::new(Notify::new());
    let late_sent = Arc::new(Notify::new());
    let (go, done) = (send_late.clone(), late_sent.clone());
    let addr = listen(move |mut stream| {
        let (go, done) = (go.clone(), done.clone());
        async move {
            while let Some((head, _)) = read_head(&mut stream).await {
                let text = String::from_utf8_lossy(&head).to_string();
                let path = text.split(' ').nth(1).unwrap_or("").to_string();
                if text.starts_with("HEAD ") {
                    let header = "HTTP/1.1 200 OK\r\ncontent-length: 52\r\n\r\n";
                    if stream.write_all(header.as_bytes()).await.is_err() {
                        return;
                    }
                    go.notified().await;
                    let late = "HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nattacker page";
                    let _ = stream.write_all(late.as_bytes()).await;
                    done.notify_one();
                    continue;
                }
                let body = format!("for {path}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, send_late, late_sent)
}

/// Finding 1: bytes an upstream sends on a kept-alive connection after its response ended must
/// never be taken for the next request's response. The connection is closed instead, as nginx
/// and Pingora close an idle upstream connection that becomes readable.
#[tokio::test]
async fn late_upstream_bytes_never_answer_the_next_request() {
    let (addr, send_late, late_sent) = late_bytes_upstream().await;
    let gw = gateway_to(addr).start().await;
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    for round in 0..3 {
        conn.write_all(b"HEAD /page HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut conn, true).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The late response is in the gateway's socket before the next request is sent.
        let sent = late_sent.notified();
        send_late.notify_one();
        tokio::time::timeout(Duration::from_secs(5), sent)
            .await
            .expect("the upstream wrote its late bytes");
        // The same client connection stays on the same worker, so the same upstream pool.
        let path = format!("/mine/{round}");
        let request = format!("GET {path} HTTP/1.1\r\nhost: a\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let answer = read_response(&mut conn, false).await;
        assert!(
            answer.contains(&format!("\n\nfor {path}\n")),
            "round {round}: the answer to {path} was {answer}"
        );
        // Another client, on a new connection, after the same late bytes.
        let mut other = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        other
            .write_all(b"GET /yours HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut other, false).await;
        assert!(
            answer.contains("\n\nfor /yours\n"),
            "round {round}: {answer}"
        );
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(100), conn.read_to_end(&mut rest)).await;
    assert!(
        !String::from_utf8_lossy(&rest).contains("attacker"),
        "{rest:?}"
    );
}

/// HTTP/2 finding 1: a client that cancels its requests (RST_STREAM CANCEL, as a browser does
/// on every navigation away, search-as-you-type or video seek) is never punished. Each cancel
/// is logged as nginx's 499 and counts as no offense, so fifty of them in `findtime` do not ban.
#[tokio::test]
async fn an_http2_client_cancelling_its_requests_is_never_banned() {
    // An upstream that takes every request and never answers; it counts arrivals.
    let arrivals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = arrivals.clone();
    let addr = listen(move |mut stream| {
        let counter = counter.clone();
        async move {
            while read_head(&mut stream).await.is_some() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    })
    .await;
    let builder = gateway_to(addr)
        .upstream("read_timeout = \"1s\"")
        .extra(BEHIND_PROXY)
        .extra("[access_log]\ntarget = \"access.json\"\nformat = \"json\"")
        .extra("[reputation]\nmaxretry = 3\nignoreip = []");
    let (gw, h2, port) = with_tls(builder).await;
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let browser = "198.51.100.7";
    for i in 0..50 {
        let request = h2
            .get(url(&format!("/slow/{i}")))
            .header("x-forwarded-for", browser)
            .send();
        let pending = tokio::spawn(request);
        // Cancelled once the request is at the upstream, waiting for its answer.
        let arrived = eventually(Duration::from_secs(5), || async {
            arrivals.load(std::sync::atomic::Ordering::SeqCst) > i
        })
        .await;
        assert!(
            arrived,
            "request {i} never reached the upstream: {}",
            gw.log()
        );
        // Dropping the response future resets the stream with CANCEL.
        pending.abort();
        let _ = pending.await;
    }
    // Still served: the gateway answers 502 for an upstream that does not, not 403.
    let resp = h2
        .get(url("/after"))
        .header("x-forwarded-for", browser)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 504);
    assert_eq!(gw.metric("portcullis_offenses_total", &[]).await, 0.0);
    assert_eq!(gw.metric("portcullis_bans_total", &[]).await, 0.0);
    // Fifty access-log lines with 499 for the cancelled requests.
    let path = gw.config_path.parent().unwrap().join("access.json");
    let cancelled = || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["status"] == 499)
            .count()
    };
    assert!(
        eventually(Duration::from_secs(5), || async { cancelled() == 50 }).await,
        "499 lines: {}",
        cancelled()
    );
}

/// Finding 8: `deny` and `ignoreip` are address lists (nginx's `deny`, fail2ban's `ignoreip`),
/// so an IPv6 entry narrower than `ipv6_prefix` names exactly its address, though clients are
/// counted and banned by their /64.
#[tokio::test]
async fn ipv6_deny_and_ignoreip_entries_narrower_than_the_prefix_match_their_address() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .extra(BEHIND_PROXY)
        .extra(PROBES_404)
        .extra(
            "[reputation]\nmaxretry = 4\ndeny = [\"2001:db8::5\"]\n\
             ignoreip = [\"2001:db8:1::7\"]",
        )
        .start()
        .await;
    assert_eq!(status_as(&gw, "2001:db8::5", "/").await, 403);
    assert_eq!(status_as(&gw, "2001:db8::6", "/").await, 200);
    // The ignored address probes as it likes and is never banned ...
    for _ in 0..6 {
        assert_eq!(status_as(&gw, "2001:db8:1::7", "/.env").await, 404);
    }
    assert_eq!(status_as(&gw, "2001:db8:1::7", "/").await, 200);
    // ... while a neighbour in its /64 gets the /64 banned, and stays refused.
    for _ in 0..2 {
        assert_eq!(status_as(&gw, "2001:db8:1::8", "/.env").await, 404);
    }
    assert_eq!(status_as(&gw, "2001:db8:1::8", "/").await, 403);
    assert_eq!(status_as(&gw, "2001:db8:1::9", "/").await, 403);
    assert_eq!(status_as(&gw, "2001:db8:1::7", "/").await, 200);
    assert_eq!(gw.metric("portcullis_bans_total", &[]).await, 1.0);
}

/// Finding 2: the upstream gets every X-Forwarded-For field line, joined as nginx joins them,
/// so a backend reading the header (uvicorn `--proxy-headers`) sees the client portcullis
/// limited, not one a client wrote in an earlier line. Finding 10's entries with a port or
/// leading zeros name their client instead of leaving the balancer's identity.
#[tokio::test]
async fn every_x_forwarded_for_line_reaches_the_upstream() {
    let up = upstream().run().await;
    let gw = gateway(&up).extra(BEHIND_PROXY).start().await;
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    conn.write_all(
        b"GET /who HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 6.6.6.6\r\n\
          x-forwarded-for: 7.7.7.7\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_response(&mut conn, false).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    conn.write_all(
        b"GET /port HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 198.051.100.009:4711\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_response(&mut conn, false).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = up.seen();
    let header = |i: usize, name: &str| seen[i].headers.get(name).cloned().unwrap_or_default();
    assert_eq!(header(0, "x-forwarded-for"), "6.6.6.6, 7.7.7.7, 127.0.0.1");
    assert_eq!(header(0, "x-real-ip"), "7.7.7.7");
    assert_eq!(header(1, "x-real-ip"), "198.51.100.9");
}

/// An upstream that answers the first request on each connection and reads the second one,
/// then closes without an answer, as a server does that acted on a request and died. Counts
/// the requests it got, by method.
async fn dies_on_the_second_request() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>)
{
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = got.clone();
    let addr = listen(move |mut stream| {
        let log = log.clone();
        async move {
            let mut served = 0;
            while let Some((head, _)) = read_head(&mut stream).await {
                let text = String::from_utf8_lossy(&head).to_string();
                let line = text.lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push(line);
                served += 1;
                if served == 2 {
                    return;
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(ok).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, got)
}

/// Finding 5: a request that was sent on a kept-alive upstream connection which then broke is
/// sent again only when it is idempotent; a POST is answered 502, never replayed.
#[tokio::test]
async fn a_post_is_never_replayed_on_a_new_upstream_connection() {
    let (addr, got) = dies_on_the_second_request().await;
    let gw = gateway_to(addr).start().await;
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    conn.write_all(b"GET /first HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut conn, false).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    conn.write_all(b"POST /pay HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut conn, false).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let posts = got
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "{:?}", got.lock().unwrap());
    // A GET in the same place is sent again, on a new connection, and answered.
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    for path in ["/one", "/two"] {
        let request = format!("GET {path} HTTP/1.1\r\nhost: a\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let answer = read_response(&mut conn, false).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    }
}

/// Sends `request` (a whole HTTP/1.1 request) to the admin API and returns the status.
async fn admin_status(gw: &Gateway, request: &str) -> u16 {
    let mut conn = TcpStream::connect(("127.0.0.1", gw.admin_port))
        .await
        .unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = read_response(&mut conn, false).await;
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Finding 9: the admin API without a token refuses what a web page could send it (a
/// DNS-rebinding Host, an Origin, a text/plain ban) and a ban of everyone.
#[tokio::test]
async fn the_admin_api_refuses_web_pages_and_bans_of_everyone() {
    let up = upstream().run().await;
    let gw = gateway(&up).start().await;
    let port = gw.admin_port;
    let ban = |host: &str, extra: &str, kind: &str, target: &str| {
        let body = format!("{{\"target\": \"{target}\", \"duration\": \"1m\"}}");
        format!(
            "POST /bans HTTP/1.1\r\nhost: {host}\r\n{extra}content-type: {kind}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let here = format!("127.0.0.1:{port}");
    let json = "application/json";
    // A page served by a name that resolves to 127.0.0.1.
    let rebound = ban(&format!("evil.example:{port}"), "", json, "203.0.113.9");
    assert_eq!(admin_status(&gw, &rebound).await, 403);
    let list = format!("GET /bans HTTP/1.1\r\nhost: evil.example:{port}\r\n\r\n");
    assert_eq!(admin_status(&gw, &list).await, 403);
    // A page of another site posting to 127.0.0.1 directly.
    let origin = ban(
        &here,
        "origin: http://evil.example\r\n",
        json,
        "203.0.113.9",
    );
    assert_eq!(admin_status(&gw, &origin).await, 403);
    let plain = ban(&here, "", "text/plain", "203.0.113.9");
    assert_eq!(admin_status(&gw, &plain).await, 415);
    for everyone in ["0.0.0.0/0", "::/0", "10.0.0.0/7"] {
        let request = ban(&here, "", json, everyone);
        assert_eq!(admin_status(&gw, &request).await, 400, "{everyone}");
    }
    assert_eq!(gw.metric("portcullis_bans_total", &[]).await, 0.0);
    assert_eq!(status_as(&gw, "203.0.113.9", "/").await, 200);
    // The CLI's own requests, and a plain JSON ban, still work.
    let good = ban(
        "localhost",
        "",
        "application/json; charset=utf-8",
        "203.0.113.0/24",
    );
    assert_eq!(admin_status(&gw, &good).await, 201);
    let (ok, out, err) = run_cli(&[
        "bans",
        "list",
        "--json",
        "--config",
        gw.config_path.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("203.0.113.0/24"), "{out}{err}");
}

/// Finding 6: upstream responses whose framing is ambiguous or malformed. Each is sent by a
/// scripted upstream after the bytes `SMUGGLED` would make a second response of; the client
/// must get a 502, or a response cut short (its connection closed), or one framed one way only,
/// and never the smuggled response.
#[tokio::test]
async fn malformed_response_framing_is_refused_or_reframed_never_relayed() {
    let smuggled = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nSMUGGLED";
    let cases: Vec<(&str, String)> = vec![
        ("te-and-cl", format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n{smuggled}")),
        ("cl-and-te", format!("HTTP/1.1 200 OK\r\ncontent-length: 41\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}")),
        ("cl-plus", format!("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello{smuggled}")),
        ("cl-list", format!("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello{smuggled}")),
        ("bare-lf-chunk", format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n{smuggled}")),
        ("long-extension", format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(100_000))),
        ("long-trailers", format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n{}\r\n", "x-t: 1\r\n".repeat(15_000))),
    ];
    let answers: Arc<Vec<(String, String)>> = Arc::new(
        cases
            .iter()
            .map(|(path, answer)| (format!("/{path}"), answer.clone()))
            .collect(),
    );
    let addr = listen(move |mut stream| {
        let answers = answers.clone();
        async move {
            while let Some((head, _)) = read_head(&mut stream).await {
                let text = String::from_utf8_lossy(&head).to_string();
                let path = text.split(' ').nth(1).unwrap_or("").to_string();
                let answer = answers.iter().find(|(p, _)| *p == path).map_or(
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string(),
                    |(_, a)| a.clone(),
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let gw = gateway_to(addr).start().await;
    for (path, _) in &cases {
        let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        let request =
            format!("GET /{path} HTTP/1.1\r\nhost: a\r\n\r\nGET /ok HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut all)).await;
        let text = String::from_utf8_lossy(&all).to_string();
        assert!(!text.contains("SMUGGLED"), "{path}: {text}");
        let first = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let both = first.contains("content-length") && first.contains("transfer-encoding");
        assert!(!both, "{path}: both framings relayed: {text}");
        if first.starts_with("http/1.1 200") {
            // Relayed whole or cut short; whatever follows it is the answer to /ok or nothing.
            assert!(
                !first.contains("content-length: +5") && !first.contains("5, 5"),
                "{path}: {first}"
            );
        } else {
            assert!(
                first.is_empty() || first.starts_with("http/1.1 502"),
                "{path}: {text}"
            );
        }
        // The next client on a fresh connection gets its own answer.
        let mut next = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        next.write_all(b"GET /ok HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut next, false).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.contains("\n\nok\n"),
            "after {path}: {answer}"
        );
    }
}

/// Finding 3: a client that never reads its response is cut after `send_timeout` (nginx's,
/// between two writes), and its upstream connection is released. A request body trickled
/// slower than `client_body_timeout` is answered 408; one that fits in
/// `client_body_buffer_size` is read whole before the upstream is contacted
/// (`proxy_request_buffering`), so it never holds an upstream connection at all, and a larger
/// one streamed is cut at the bound and its upstream connection released.
#[tokio::test]
async fn clients_that_stop_reading_or_sending_are_cut_at_their_time_bounds() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let accepted = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicUsize::new(0));
    let (opened, closed) = (accepted.clone(), released.clone());
    let addr = listen(move |mut stream| {
        let (opened, closed) = (opened.clone(), closed.clone());
        async move {
            opened.fetch_add(1, Ordering::SeqCst);
            if let Some((head, _)) = read_head(&mut stream).await {
                if head.starts_with(b"GET /huge") {
                    // Writes until the gateway closes the connection.
                    let block = vec![b'x'; 64 * 1024];
                    let header = "HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n";
                    let _ = stream.write_all(header.as_bytes()).await;
                    while stream.write_all(&block).await.is_ok() {}
                } else {
                    // Reads the body until the gateway closes the connection.
                    let mut chunk = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                    }
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    let gw = gateway_to(addr)
        .server("send_timeout = \"1s\"\nclient_body_timeout = \"1s\"")
        .start()
        .await;
    let mut reader = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    reader
        .write_all(b"GET /huge HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    // Never read: the gateway's writes stall once the socket buffers are full.
    let cut = eventually(Duration::from_secs(15), || async {
        released.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(cut, "the upstream connection is still held");
    let send = [("kind", "send")];
    assert_eq!(
        gw.metric("portcullis_client_timeouts_total", &send).await,
        1.0
    );

    // A small body, trickled: 408, and the upstream never saw it.
    let mut trickle = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    trickle
        .write_all(b"POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let answer = read_response(&mut trickle, false).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a buffered body reached the upstream"
    );

    // A body larger than the buffer is streamed: cut at the bound, its upstream released.
    let mut large = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    large
        .write_all(b"POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 1000000\r\n\r\nsome bytes")
        .await
        .unwrap();
    let answer = read_response(&mut large, false).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let cut = eventually(Duration::from_secs(10), || async {
        released.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(
        cut,
        "the upstream connection of the slow body is still held"
    );
    let body = [("kind", "client_body")];
    assert_eq!(
        gw.metric("portcullis_client_timeouts_total", &body).await,
        2.0
    );
    drop(reader);
}

/// HTTP/2 finding 2: a TLS connection that negotiates `h2` and never sends the connection
/// preface is closed after `client_header_timeout` (nginx's bound), and counted; a real HTTP/2
/// client on the same listener is served.
#[tokio::test]
async fn http2_connections_without_a_preface_are_closed_in_time() {
    use tokio_rustls::rustls;
    const SILENT: usize = 1000;
    let up = upstream().run().await;
    let (gw, h2, port) = with_tls(gateway(&up).server("client_header_timeout = \"1s\"")).await;
    let connector = h2_connector();
    // The count: 1,000 silent connections from one client, opened 50 at a time.
    let mut silent = Vec::new();
    for _ in 0..SILENT / 50 {
        let batch = (0..50).map(|_| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                connector.connect(name, tcp).await.unwrap()
            }
        });
        for tls in futures_util::future::join_all(batch).await {
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            silent.push(tls);
        }
    }
    // A client that speaks HTTP/2 is served meanwhile.
    let resp = h2
        .get(format!("https://localhost:{port}/ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    // Every silent connection is closed by the gateway within the bound (and some slack for
    // the time the others took to open).
    let started = std::time::Instant::now();
    for mut tls in silent {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match tls.read(&mut buf).await {
                    // The server's SETTINGS frame may come first; then the close.
                    Ok(n) if n > 0 => continue,
                    _ => return,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a preface-less connection was still open");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let preface = [("kind", "h2_preface")];
    assert_eq!(
        gw.metric_settles("portcullis_client_timeouts_total", &preface, SILENT as f64)
            .await,
        SILENT as f64
    );
}

/// HTTP/2 finding 4, the HTTP/1 half: a ban closes the banned client's kept-alive connection
/// after the answer, so it has no open connection to send more on.
#[tokio::test]
async fn a_banned_client_loses_its_kept_alive_connection() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .extra(BEHIND_PROXY)
        .extra(PROBES_404)
        .extra("[reputation]\nmaxretry = 2\nignoreip = []")
        .start()
        .await;
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let as_client = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 203.0.113.66\r\n\r\n")
    };
    conn.write_all(as_client("/ok").as_bytes()).await.unwrap();
    assert!(read_response(&mut conn, false)
        .await
        .starts_with("HTTP/1.1 200"));
    // A probe weighs 2: this one bans.
    conn.write_all(as_client("/.env").as_bytes()).await.unwrap();
    assert!(read_response(&mut conn, false)
        .await
        .starts_with("HTTP/1.1 404"));
    conn.write_all(as_client("/ok").as_bytes()).await.unwrap();
    let answer = read_response(&mut conn, false).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.ends_with("open: false"), "{answer}");
}

/// HTTP/2 finding 3, slow bodies: Pingora's HTTP/2 body reads have no timeout, so an h2
/// stream trickling a body held its upstream request. A body that fits in
/// `client_body_buffer_size` is now read before the upstream is contacted, each read within
/// `client_body_timeout`: 408, and no upstream connection.
#[tokio::test]
async fn a_slow_http2_body_is_cut_before_the_upstream() {
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let accepted = Arc::new(AtomicUsize::new(0));
    let opened = accepted.clone();
    let addr = listen(move |mut stream| {
        let opened = opened.clone();
        async move {
            opened.fetch_add(1, Ordering::SeqCst);
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    })
    .await;
    let (gw, h2, port) = with_tls(gateway_to(addr).server("client_body_timeout = \"1s\"")).await;
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"ten bytes.",
    ))]);
    let body = reqwest::Body::wrap_stream(first.chain(futures_util::stream::pending()));
    let resp = h2
        .post(format!("https://localhost:{port}/upload"))
        .header("content-length", "100")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 408);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the slow body reached the upstream"
    );
    let body = [("kind", "client_body")];
    assert_eq!(
        gw.metric("portcullis_client_timeouts_total", &body).await,
        1.0
    );
}

/// HTTP/2 item 3: a streamed h2 body (no length, so it goes on to the upstream as it comes)
/// that stalls is cut after client_body_timeout, 408 as on HTTP/1, and the upstream
/// connection it held is let go. (Pingora's h2 body reads had no timeout: the vendored
/// pingora-core times them with the session's read timeout.)
#[tokio::test]
async fn a_stalled_streamed_http2_body_is_cut_and_lets_the_upstream_go() {
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let released = Arc::new(AtomicUsize::new(0));
    let ended = released.clone();
    let addr = listen(move |mut stream| {
        let ended = ended.clone();
        async move {
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            ended.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    let (gw, h2, port) = with_tls(gateway_to(addr).server("client_body_timeout = \"1s\"")).await;
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"ten bytes.",
    ))]);
    let body = reqwest::Body::wrap_stream(first.chain(futures_util::stream::pending()));
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        h2.post(format!("https://localhost:{port}/upload"))
            .body(body)
            .send(),
    )
    .await
    .expect("answered within 10 s")
    .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 408);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let body = [("kind", "client_body")];
    assert_eq!(
        gw.metric("portcullis_client_timeouts_total", &body).await,
        1.0
    );
    let let_go = eventually(Duration::from_secs(5), || async {
        released.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(let_go, "the upstream connection is still held");
}

/// Finding 10, header sizes, as nginx's `large_client_header_buffers 4 8k`: a request line
/// over 8 KiB is 414, a field over 8 KiB or a header over 32 KiB is 400; just under passes.
#[tokio::test]
async fn request_headers_are_bounded_as_nginx_bounds_them() {
    let up = upstream().run().await;
    let gw = gateway(&up).start().await;
    let status = |request: String| async move {
        let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        let answer = read_response(&mut conn, false).await;
        answer.split(' ').nth(1).unwrap_or("").to_string()
    };
    let long_target = format!("/{}", "a".repeat(8 * 1024));
    let request = format!("GET {long_target} HTTP/1.1\r\nhost: a\r\n\r\n");
    assert_eq!(status(request).await, "414");
    let cookie = "c".repeat(8 * 1024);
    let request = format!("GET / HTTP/1.1\r\nhost: a\r\ncookie: {cookie}\r\n\r\n");
    assert_eq!(status(request).await, "400");
    let fields: String = (0..6)
        .map(|i| format!("x-f{i}: {}\r\n", "v".repeat(6000)))
        .collect();
    let request = format!("GET / HTTP/1.1\r\nhost: a\r\n{fields}\r\n");
    assert_eq!(status(request).await, "400");
    let fields: String = (0..4)
        .map(|i| format!("x-f{i}: {}\r\n", "v".repeat(6000)))
        .collect();
    let request = format!("GET /fits HTTP/1.1\r\nhost: a\r\n{fields}\r\n");
    assert_eq!(status(request).await, "200");
    assert_eq!(up.paths(), ["/fits"]);
    let reason = [("reason", "header_too_large")];
    assert_eq!(gw.metric("portcullis_malformed_total", &reason).await, 3.0);
}

/// Finding 10, header buffering: a connection buffers no more header than
/// `large_client_header_buffers` accepts (plus one line), as nginx: a header that never ends is
/// refused 400 after about 40 KiB, not read up to Pingora's 1 MiB. The client is still sending
/// when the answer comes.
#[tokio::test]
async fn a_header_that_never_ends_is_refused_after_the_configured_size() {
    let up = upstream().run().await;
    let gw = gateway(&up).start().await;
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n")
        .await
        .unwrap();
    // 4 KiB fields, one after the other, up to 200 KiB: far under 1 MiB.
    let field = format!("x-pad: {}\r\n", "p".repeat(4089));
    let mut sent = 0;
    while sent < 200 * 1024 {
        if conn.write_all(field.as_bytes()).await.is_err() {
            break; // refused and closed while we were still sending
        }
        sent += field.len();
    }
    // Refused: a 400, or (when the refusal met our unread bytes) a reset. Either way the
    // connection ends; read up to 1 MiB, it would wait for the rest of the header.
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut chunk).await {
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection is still open after {sent} bytes of header"
    );
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(up.paths().is_empty());
    assert!(
        gw.metric("portcullis_malformed_total", &[("reason", "bad_header")])
            .await
            >= 1.0
    );
}

/// Finding 10, request lengths: `Content-Length: 5, 5` or `+5` is refused 400 (the upstream
/// might read another length than the gateway did); `0005` reaches the upstream as `5`.
#[tokio::test]
async fn request_content_lengths_are_digits_and_forwarded_plain() {
    let up = upstream().run().await;
    let gw = gateway(&up).start().await;
    for length in ["5, 5", "+5"] {
        let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        let request =
            format!("POST /a HTTP/1.1\r\nhost: a\r\ncontent-length: {length}\r\n\r\nhello");
        conn.write_all(request.as_bytes()).await.unwrap();
        let answer = read_response(&mut conn, false).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{length}: {answer}");
    }
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    conn.write_all(b"POST /b HTTP/1.1\r\nhost: a\r\ncontent-length: 0005\r\n\r\nhello")
        .await
        .unwrap();
    let answer = read_response(&mut conn, false).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "{:?}", up.paths());
    assert_eq!(
        seen[0].headers.get("content-length").map(String::as_str),
        Some("5")
    );
}
