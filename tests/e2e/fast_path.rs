//! The fast path (plain HTTP/1.1 without a body, crates/portcullis/src/fast) against
//! Pingora's `HttpProxy`: the same requests must get the same answers, and the upstream must
//! see the same requests, whichever path served them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// An upstream answering in every framing HTTP/1.1 has, by path, and recording each request
/// header it gets (header lines sorted, so order does not count).
async fn framing_upstream() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    let addr = listen(move |mut stream| {
        let rec = rec.clone();
        async move {
            let mut pending = Vec::new();
            loop {
                let head = match read_head_after(&mut stream, &mut pending).await {
                    Some(head) => head,
                    None => return,
                };
                let text = String::from_utf8_lossy(&head).to_string();
                let mut lines: Vec<&str> = text.trim_end().split("\r\n").collect();
                let request_line = lines.remove(0).to_string();
                let mut fields: Vec<String> = lines.iter().map(|l| l.to_ascii_lowercase()).collect();
                fields.sort();
                rec.lock()
                    .unwrap()
                    .push(format!("{request_line}\n{}", fields.join("\n")));
                let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
                let answer: &[u8] = match path.as_str() {
                    "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-kind: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                    "/until-close" => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nread me until the close",
                    "/no-content" => b"HTTP/1.1 204 No Content\r\nx-kind: empty\r\n\r\n",
                    "/not-modified" => b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n",
                    "/hints" => b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhints",
                    "/missing" => b"HTTP/1.1 404 Not Found\r\ncontent-length: 7\r\nconnection: close\r\n\r\nmissing",
                    "/hop" => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\ndate: Mon, 01 Jan 2001 00:00:00 GMT\r\nserver: api\r\n\r\nhop",
                    _ => b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-type: text/plain\r\n\r\nkept",
                };
                if stream.write_all(answer).await.is_err() || path == "/until-close" {
                    return;
                }
            }
        }
    })
    .await;
    (addr, seen)
}

/// Reads one request header, keeping bytes past it in `pending` for the next one.
async fn read_head_after(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = pending.split_off(end + 4);
            return Some(std::mem::replace(pending, rest));
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads one response as the client gets it and writes it down comparably: the status line,
/// the header fields sorted without `date`, the body; then whether the connection stayed open.
pub(crate) async fn read_response(conn: &mut TcpStream, head_request: bool) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut interim = String::new();
    let (head_len, fields, status) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = resp.parse(&buf) {
            if resp.code.is_some_and(|c| c < 200) {
                interim.push_str(&String::from_utf8_lossy(&buf[..n]));
                buf.drain(..n);
                continue;
            }
            let mut fields: Vec<String> = resp
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value);
                    format!("{}: {value}", h.name.to_ascii_lowercase())
                })
                .filter(|f| !f.starts_with("date: "))
                .collect();
            fields.sort();
            break (n, fields, resp.code.unwrap_or(0));
        }
        match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return format!("no response: {:?}", String::from_utf8_lossy(&buf)),
        }
    };
    let field = |name: &str| {
        fields
            .iter()
            .find_map(|f| f.strip_prefix(&format!("{name}: ")).map(str::to_string))
    };
    let length = field("content-length").and_then(|v| v.parse::<usize>().ok());
    let chunked = field("transfer-encoding").is_some();
    let body_done = |body: &[u8]| {
        if head_request || status == 204 || status == 304 {
            true
        } else if let Some(n) = length {
            body.len() >= n
        } else if chunked {
            body.ends_with(b"0\r\n\r\n")
        } else {
            false
        }
    };
    let mut open = true;
    while !body_done(&buf[head_len..]) {
        match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => {
                open = false;
                break;
            }
        }
    }
    let status_line =
        String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == b'\r').unwrap_or(0)])
            .to_string();
    // Chunk sizes are the sender's choice (HttpProxy re-chunks); the content is what counts.
    let body = match chunked {
        true => dechunk(&buf[head_len..]),
        false => String::from_utf8_lossy(&buf[head_len..]).to_string(),
    };
    if open {
        // Open until proven closed: a closed connection reads 0 at once.
        let mut byte = [0u8; 1];
        open = !matches!(
            tokio::time::timeout(Duration::from_millis(300), conn.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        );
    }
    format!(
        "{interim}{status_line}\n{}\n\n{body}\nopen: {open}",
        fields.join("\n")
    )
}

/// The content of a chunked body, and its trailer fields.
fn dechunk(mut body: &[u8]) -> String {
    let mut out = String::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return format!("{out}<unterminated: {:?}>", String::from_utf8_lossy(body));
        };
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|&n| eol + 2 + n <= body.len()) else {
            return format!("{out}<bad chunk: {:?}>", String::from_utf8_lossy(body));
        };
        if size == 0 {
            let trailers = String::from_utf8_lossy(&body[eol + 2..]);
            return format!("{out}<trailers: {trailers:?}>");
        }
        out.push_str(&String::from_utf8_lossy(&body[eol + 2..eol + 2 + size]));
        body = body.get(eol + 4 + size..).unwrap_or(b"");
    }
}

/// Requests as scanners and API clients send them, each on its own connection.
fn requests() -> Vec<(&'static str, String)> {
    let host = "host: api.example\r\n";
    let mut list: Vec<(&'static str, String)> = vec![
        ("plain", format!("GET /kept?q=1&r=%20 HTTP/1.1\r\n{host}user-agent: curl/8\r\n\r\n")),
        (
            "spoofed forwarding and hop-by-hop fields",
            format!(
                "GET /kept HTTP/1.1\r\n{host}x-forwarded-for: 203.0.113.9\r\nx-real-ip: 1.2.3.4\r\n\
                 x-forwarded-proto: https\r\nconnection: keep-alive, te\r\nkeep-alive: 300\r\nte: trailers\r\n\r\n"
            ),
        ),
        ("head", format!("HEAD /kept HTTP/1.1\r\n{host}\r\n")),
        ("empty post", format!("POST /kept HTTP/1.1\r\n{host}content-length: 0\r\n\r\n")),
        ("client closes", format!("GET /kept HTTP/1.1\r\n{host}connection: close\r\n\r\n")),
        ("probe", format!("GET /.env HTTP/1.1\r\n{host}\r\n")),
        ("no host", "GET /kept HTTP/1.1\r\n\r\n".to_string()),
    ];
    for path in [
        "/chunked",
        "/until-close",
        "/no-content",
        "/not-modified",
        "/hints",
        "/missing",
        "/hop",
    ] {
        list.push(("framing", format!("GET {path} HTTP/1.1\r\n{host}\r\n")));
    }
    list
}

#[tokio::test]
async fn both_paths_answer_alike_and_forward_alike() {
    let mut answers = Vec::new();
    let mut forwarded = Vec::new();
    let mut logged = Vec::new();
    for fast in [true, false] {
        let (addr, seen) = framing_upstream().await;
        let gw = gateway_to(addr)
            .server(&format!("fast_path = {fast}"))
            .extra("[probes]\nbuiltin = true\naction = \"404\"")
            .extra("[access_log]\ntarget = \"access.log\"")
            .start()
            .await;
        // All at once: telling an open connection from a closed one takes a wait each.
        let port = gw.port;
        let mut got =
            futures_util::future::join_all(requests().into_iter().map(|(what, raw)| async move {
                let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                conn.write_all(raw.as_bytes()).await.unwrap();
                let answer = read_response(&mut conn, raw.starts_with("HEAD")).await;
                format!("{what}: {raw:?}\n{answer}")
            }))
            .await;
        // A kept-alive connection serves its second request too.
        let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        for path in ["/chunked", "/kept"] {
            let raw = format!("GET {path} HTTP/1.1\r\nhost: api.example\r\n\r\n");
            conn.write_all(raw.as_bytes()).await.unwrap();
            got.push(format!(
                "kept-alive {path}\n{}",
                read_response(&mut conn, false).await
            ));
        }
        let served = gw.metric("portcullis_fast_path_requests_total", &[]).await;
        assert_eq!(served, if fast { 16.0 } else { 0.0 }, "fast_path = {fast}");
        answers.push(got);
        forwarded.push(seen.lock().unwrap().clone());
        // The access log: the same lines, the time aside, in any order.
        let log = gw.config_path.parent().unwrap().join("access.log");
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        let all_there = || async { read().lines().count() >= 16 };
        assert!(
            eventually(Duration::from_secs(5), all_there).await,
            "{}",
            read()
        );
        let mut lines: Vec<String> = read()
            .lines()
            .map(|l| match (l.find('['), l.find(']')) {
                (Some(a), Some(b)) => format!("{}{}", &l[..a], &l[b..]),
                _ => l.to_string(),
            })
            .collect();
        lines.sort();
        logged.push(lines);
    }
    assert_eq!(logged[0], logged[1], "the access log lines differ");
    for (fast, proxy) in answers[0].iter().zip(&answers[1]) {
        assert_eq!(fast, proxy, "fast path (left) and HttpProxy (right) differ");
    }
    // Sorted: the requests above reached the upstream in any order.
    for seen in &mut forwarded {
        seen.sort();
    }
    assert_eq!(
        forwarded[0], forwarded[1],
        "the upstream saw different requests"
    );
}

/// A connection starts on the fast path and moves to `HttpProxy` at its first request with a
/// body; keepalive_requests counts the requests of both.
#[tokio::test]
async fn a_connection_moves_to_httpproxy_at_a_request_with_a_body() {
    let (addr, seen) = framing_upstream().await;
    let gw = gateway_to(addr)
        .server("keepalive_requests = 3\nfast_path = true")
        .start()
        .await;
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let requests = [
        "GET /kept HTTP/1.1\r\nhost: a\r\n\r\n",
        "POST /kept HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
        "GET /kept HTTP/1.1\r\nhost: a\r\n\r\n",
    ];
    let mut answers = Vec::new();
    for raw in requests {
        conn.write_all(raw.as_bytes()).await.unwrap();
        answers.push(read_response(&mut conn, false).await);
    }
    for answer in &answers[..2] {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("open: true"), "{answer}");
    }
    assert!(answers[2].contains("connection: close"), "{}", answers[2]);
    assert!(answers[2].ends_with("open: false"), "{}", answers[2]);
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(
        gw.metric("portcullis_fast_path_requests_total", &[]).await,
        1.0
    );
    assert_eq!(
        gw.metric("portcullis_fast_path_handoffs_total", &[]).await,
        1.0
    );
}

/// Pipelined requests get their answers in order, each through every filter.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (addr, seen) = framing_upstream().await;
    let gw = gateway_to(addr)
        .server("fast_path = true")
        .extra("[probes]\nbuiltin = true\naction = \"404\"")
        .start()
        .await;
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let three = "GET /chunked HTTP/1.1\r\nhost: a\r\n\r\n\
                 GET /.env HTTP/1.1\r\nhost: a\r\n\r\n\
                 GET /kept HTTP/1.1\r\nhost: a\r\n\r\n";
    conn.write_all(three.as_bytes()).await.unwrap();
    // The three answers, one after the other on the connection.
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    while !all.ends_with(b"\r\n\r\nkept") {
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => all.extend_from_slice(&chunk[..n]),
            _ => panic!("incomplete: {:?}", String::from_utf8_lossy(&all)),
        }
    }
    let text = String::from_utf8_lossy(&all);
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} in {text}"))
    };
    assert!(
        at("6\r\n world\r\n0\r\n\r\n") < at("HTTP/1.1 404"),
        "{text}"
    );
    assert!(
        at("404 Not Found\n") < at("content-length: 4\r\n"),
        "{text}"
    );
    assert_eq!(text.matches("HTTP/1.1 ").count(), 3, "{text}");
    let paths: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.lines().next().unwrap_or("").to_string())
        .collect();
    assert_eq!(paths, ["GET /chunked HTTP/1.1", "GET /kept HTTP/1.1"]);
    assert_eq!(
        gw.metric("portcullis_fast_path_requests_total", &[]).await,
        3.0
    );
}

/// An upstream that dies in the middle of a body: the client sees the body cut short and its
/// connection closed (never a body that looks whole), and the failure is counted.
#[tokio::test]
async fn an_upstream_dying_mid_body_closes_the_client_connection() {
    let addr = listen(|mut stream| async move {
        if read_head(&mut stream).await.is_some() {
            let partial = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b";
            let _ = stream.write_all(partial).await;
        }
    })
    .await;
    let gw = gateway_to(addr).server("fast_path = true").start().await;
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    conn.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut conn, false).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("only ten b\nopen: false"), "{answer}");
    let failures = [("upstream", "api"), ("kind", "proxy")];
    assert_eq!(
        gw.metric_settles("portcullis_upstream_errors_total", &failures, 1.0)
            .await,
        1.0
    );
}
