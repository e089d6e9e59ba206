//! HTTP semantics an API behind the gateway relies on: request bodies (sized, chunked,
//! `Expect: 100-continue`), large and streamed responses, HEAD, WebSocket upgrades, HTTP/2
//! clients in front of an HTTP/1 upstream, upstream timeouts, and an upstream that closes
//! kept-alive connections. Portcullis gets these from Pingora's `HttpProxy`; these tests are
//! how a Pingora upgrade (or a bug in it, see vendor/README.md) shows up here.
//!
//! The upstream is mostly hyper's HTTP/1.1 server, so body framing is checked by a real parser.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::support::*;

/// Size of the `/big` response.
const BIG: usize = 4 << 20;

/// Byte `i` of the `/big` response: a pattern that shows a dropped or repeated chunk.
fn big_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// Starts hyper on loopback with routes:
/// `/echo` (the request body back), `/big` (4 MiB, sized), `/stream` (chunked, 64 frames),
/// `/slow` (answers after 3 s), `/ws` (101, then echoes raw bytes), anything else "ok".
async fn http_upstream() -> SocketAddr {
    http_upstream_counting().await.0
}

/// [`http_upstream`], and how many connections it dropped for bytes that do not parse as HTTP.
async fn http_upstream_counting() -> (SocketAddr, Arc<AtomicUsize>) {
    let garbled = Arc::new(AtomicUsize::new(0));
    let counter = garbled.clone();
    let addr = listen(move |stream| {
        let counter = counter.clone();
        async move {
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(route))
                .with_upgrades()
                .await;
            if served.is_err_and(|e| e.is_parse()) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await;
    (addr, garbled)
}

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

async fn route(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let resp = match req.uri().path() {
        "/echo" => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(Response::builder().status(400).body(full("")).unwrap()),
            };
            Response::new(full(body))
        }
        "/big" => Response::new(full((0..BIG).map(big_byte).collect::<Vec<u8>>())),
        "/stream" => {
            let frames = (0..64).map(|i| Ok(Frame::data(Bytes::from(format!("frame {i};")))));
            Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(full("late"))
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                .body(full(""))
                .unwrap()
        }
        _ => Response::new(full("ok")),
    };
    Ok(resp)
}

/// Reads from `stream` until `buf` contains `needle` (bounded: 5 s); returns everything read.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> String {
    let found = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
    let wait = async {
        let mut chunk = [0u8; 4096];
        while !found(buf) {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "connection closed; got {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let done = timeout(Duration::from_secs(5), wait).await;
    let text = String::from_utf8_lossy(buf).into_owned();
    assert!(
        done.is_ok(),
        "no {:?} within 5 s; got {text:?}",
        String::from_utf8_lossy(needle)
    );
    text
}

/// Connects to the gateway's `port`, sends `raw`, and reads until `until` has arrived; the
/// connection (to go on with), what was read, and that as text.
async fn send_raw(port: u16, raw: &[u8], until: &[u8]) -> (TcpStream, Vec<u8>, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    conn.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    let text = read_until(&mut conn, &mut buf, until).await;
    (conn, buf, text)
}

/// Whether the gateway closes `conn` within `limit` (what arrives before is read and dropped).
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let mut rest = [0u8; 256];
    let eof = async {
        while let Ok(n) = conn.read(&mut rest).await {
            if n == 0 {
                return;
            }
        }
    };
    timeout(limit, eof).await.is_ok()
}

#[tokio::test]
async fn request_bodies_reach_the_upstream_intact() {
    let gw = gateway_to(http_upstream().await).start().await;

    // A sized body larger than any single read buffer.
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 97) as u8).collect();
    let resp = client()
        .post(gw.url("/echo"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());

    // A chunked upload, as streaming clients send it.
    let chunked = b"POST /echo HTTP/1.1\r\nhost: api\r\ntransfer-encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";
    let (_, _, text) = send_raw(gw.port, chunked, b"hello world").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn expect_100_continue_gets_an_interim_answer_before_the_body() {
    let gw = gateway_to(http_upstream().await).start().await;
    // curl sends this for large uploads and waits for "100 Continue" before the body.
    let expect = b"POST /echo HTTP/1.1\r\nhost: api\r\ncontent-length: 11\r\n\
                   expect: 100-continue\r\n\r\n";
    let (mut conn, mut buf, interim) = send_raw(gw.port, expect, b"\r\n\r\n").await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    conn.write_all(b"hello world").await.unwrap();
    let text = read_until(&mut conn, &mut buf, b"hello world").await;
    assert!(text.contains("HTTP/1.1 200"), "{text}");
}

/// nginx's `client_max_body_size`: 1m unless set, per server or route, `0` for no limit.
#[tokio::test]
async fn a_declared_body_over_client_max_body_size_gets_413_before_the_upstream() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .route_path("/small")
        .route("client_max_body_size = \"1k\"")
        .extra("[[route]]\npath = \"/\"\nupstream = \"api\"")
        .extra("[[route]]\npath = \"/unlimited\"\nupstream = \"api\"\nclient_max_body_size = 0")
        .start()
        .await;
    let post = |path: &str, len: usize| client().post(gw.url(path)).body(vec![b'x'; len]).send();
    assert_eq!(post("/small", 1024).await.unwrap().status(), 200);
    assert_eq!(post("/small", 1025).await.unwrap().status(), 413);
    assert_eq!(
        post("/", 1 << 20).await.unwrap().status(),
        200,
        "1m by default"
    );
    assert_eq!(post("/", (1 << 20) + 1).await.unwrap().status(), 413);
    assert_eq!(post("/unlimited", 3 << 20).await.unwrap().status(), 200);

    // A client that asks first is told before it sends a byte of the body.
    let expect = b"POST /small HTTP/1.1\r\nhost: api\r\ncontent-length: 10485760\r\n\
                   expect: 100-continue\r\n\r\n";
    let (mut conn, _, text) = send_raw(gw.port, expect, b"\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // ... and the connection is closed, not left waiting for a body.
    assert!(
        closed_within(&mut conn, Duration::from_secs(5)).await,
        "still open after 413"
    );

    let paths: Vec<String> = up.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/small", "/", "/unlimited"]);
    let too_large = &[("decision", "too_large")];
    assert_eq!(
        gw.metric_settles("portcullis_requests_total", too_large, 3.0)
            .await,
        3.0
    );
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_with_413_once_it_passes_the_limit() {
    let gw = gateway_to(http_upstream().await)
        .route("client_max_body_size = \"1k\"")
        .start()
        .await;
    let chunk = format!("200\r\n{}\r\n", "y".repeat(0x200));
    let within = format!(
        "POST /echo HTTP/1.1\r\nhost: api\r\ntransfer-encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    let (_, _, text) = send_raw(gw.port, within.as_bytes(), b"yyyy").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    let over = format!(
        "POST /echo HTTP/1.1\r\nhost: api\r\ntransfer-encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );
    let (_, _, text) = send_raw(gw.port, over.as_bytes(), b"\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

/// nginx's lingering close: a client that sends its whole too-large body before it reads
/// the answer, as Python's `requests` does, gets to read the 413. Closing with the body
/// unread makes the kernel reset the connection, so such a client's next write fails and it
/// reports "connection reset" instead of the answer (16 MiB is more than loopback's socket
/// buffers hold, so without lingering the write fails every time).
#[tokio::test]
async fn a_client_that_sends_a_too_large_body_whole_reads_the_413() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .route("client_max_body_size = \"1k\"")
        .start()
        .await;
    let body = vec![b'x'; 16 << 20];
    for _ in 0..2 {
        let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nhost: api\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&body)
            .await
            .expect("the whole body is taken, not reset");
        let mut answer = Vec::new();
        timeout(Duration::from_secs(5), conn.read_to_end(&mut answer))
            .await
            .expect("closed after the answer")
            .expect("the answer, not a reset");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    }
    assert!(up.seen().is_empty(), "nothing reached the upstream");
    let lingering = &[("kind", "lingering")];
    assert_eq!(
        gw.metric("portcullis_client_timeouts_total", lingering)
            .await,
        0.0
    );
}

/// The lingering read is bounded: after the answer, a client that stops sending is closed
/// `lingering_timeout` after its last byte, and one that keeps trickling is closed at
/// `lingering_time`, each counted in `portcullis_client_timeouts_total{kind="lingering"}`.
#[tokio::test]
async fn a_lingering_close_ends_at_lingering_timeout_and_lingering_time() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .route("client_max_body_size = \"1k\"")
        .server("lingering_timeout = \"1s\"\nlingering_time = \"3s\"")
        .start()
        .await;
    let head = b"POST /upload HTTP/1.1\r\nhost: api\r\ncontent-length: 16777216\r\n\r\n";
    let lingering = &[("kind", "lingering")];
    let cut_after = |want: f64| {
        let gw = &gw;
        async move {
            let started = std::time::Instant::now();
            assert!(
                eventually(Duration::from_secs(8), || async {
                    gw.metric("portcullis_client_timeouts_total", lingering)
                        .await
                        == want
                })
                .await,
                "the lingering read was never cut"
            );
            started.elapsed()
        }
    };

    // Sends a little of the body, then nothing: cut lingering_timeout later.
    let (mut conn, _, text) = send_raw(gw.port, head, b"\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    conn.write_all(&[b'x'; 1024]).await.unwrap();
    // The answer is whole: the gateway's side of the connection is shut down at once.
    assert!(closed_within(&mut conn, Duration::from_secs(1)).await);
    let took = cut_after(1.0).await;
    assert!(took >= Duration::from_millis(700), "cut after {took:?}");

    // Keeps sending a byte every 100 ms: cut at lingering_time, not before.
    let (mut conn, _, text) = send_raw(gw.port, head, b"\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let started = std::time::Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if conn.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    cut_after(2.0).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2_700) && took < Duration::from_secs(8),
        "cut after {took:?}"
    );
    trickle.abort();
    assert!(up.seen().is_empty(), "nothing reached the upstream");
}

/// nginx's `keepalive_timeout`: an idle client connection is closed, not kept forever.
#[tokio::test]
async fn an_idle_keepalive_connection_is_closed_after_keepalive_timeout() {
    let gw = gateway_to(http_upstream().await)
        .server("keepalive_timeout = \"1s\"")
        .start()
        .await;
    let get = b"GET /a HTTP/1.1\r\nhost: api\r\n\r\n";
    let (mut conn, mut buf, text) = send_raw(gw.port, get, b"ok").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Still usable while less than the timeout has passed.
    buf.clear();
    conn.write_all(get).await.unwrap();
    let text = read_until(&mut conn, &mut buf, b"ok").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let idle = std::time::Instant::now();
    assert!(
        closed_within(&mut conn, Duration::from_secs(10)).await,
        "not closed within 10 s"
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "closed too early"
    );
}

/// nginx's `keepalive_requests`: a connection serves that many requests, then closes.
#[tokio::test]
async fn a_connection_closes_after_keepalive_requests() {
    let gw = gateway_to(http_upstream().await)
        .server("keepalive_requests = 3")
        .start()
        .await;
    let get = b"GET /a HTTP/1.1\r\nhost: api\r\n\r\n";
    let (mut conn, mut buf, text) = send_raw(gw.port, get, b"ok").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for _ in 2..=3 {
        buf.clear();
        conn.write_all(get).await.unwrap();
        let text = read_until(&mut conn, &mut buf, b"ok").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    assert!(
        buf.to_ascii_lowercase()
            .windows(17)
            .any(|w| w == b"connection: close"),
        "the third answer announces the close: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // Well before keepalive_timeout (75 s).
    assert!(
        closed_within(&mut conn, Duration::from_secs(5)).await,
        "still open after the third request"
    );
}

#[tokio::test]
async fn large_and_streamed_responses_arrive_byte_for_byte() {
    let gw = gateway_to(http_upstream().await).start().await;

    let resp = client().get(gw.url("/big")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(BIG as u64));
    let got = resp.bytes().await.unwrap();
    assert_eq!(got.len(), BIG);
    let first_bad = got.iter().enumerate().position(|(i, b)| *b != big_byte(i));
    assert_eq!(
        first_bad, None,
        "the body differs from what the upstream sent"
    );

    let resp = client().get(gw.url("/stream")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let want: String = (0..64).map(|i| format!("frame {i};")).collect();
    assert_eq!(resp.text().await.unwrap(), want);
}

#[tokio::test]
async fn head_gets_headers_only_and_the_connection_stays_usable() {
    let gw = gateway_to(http_upstream().await).start().await;
    let head_request = b"HEAD /big HTTP/1.1\r\nhost: api\r\n\r\n";
    let (mut conn, mut buf, head) = send_raw(gw.port, head_request, b"\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {BIG}")),
        "HEAD keeps the length of the body it omits: {head}"
    );
    // No body follows: the next response on the same connection starts right after.
    buf.clear();
    conn.write_all(b"GET /other HTTP/1.1\r\nhost: api\r\n\r\n")
        .await
        .unwrap();
    let next = read_until(&mut conn, &mut buf, b"\r\n\r\nok").await;
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");
}

/// Upgrades one connection to a WebSocket through `port` and echoes two messages over it;
/// `Err` says where the tunnel broke.
async fn websocket_session(port: u16) -> Result<(), String> {
    let upgrade = b"GET /ws HTTP/1.1\r\nhost: api\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
                    sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (mut conn, mut buf, head) = send_raw(port, upgrade, b"\r\n\r\n").await;
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("no 101: {head}"));
    }
    for msg in [&b"first frame"[..], b"second frame"] {
        buf.clear();
        conn.write_all(msg).await.map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 64];
        while buf.len() < msg.len() {
            let n = match timeout(Duration::from_secs(5), conn.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                other => return Err(format!("reading the echo: {other:?}")),
            };
            if n == 0 {
                return Err(format!(
                    "closed after the 101 and {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(())
}

/// A WebSocket upstream as fast as one can be: it sends its 101 as soon as it accepts the
/// connection (so the answer is already there when the gateway looks for it), reads the
/// request, then echoes raw bytes.
async fn eager_ws_upstream() -> SocketAddr {
    listen(|mut stream| async move {
        let switching =
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
        if stream.write_all(switching).await.is_err() {
            return;
        }
        let Some((_, early)) = read_head(&mut stream).await else {
            return;
        };
        if stream.write_all(&early).await.is_err() {
            return;
        }
        let mut chunk = [0u8; 1024];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 || stream.write_all(&chunk[..n]).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// Runs `count` WebSocket sessions through `port` at once; the errors of those that broke.
async fn websocket_sessions(port: u16, count: usize) -> Vec<String> {
    let sessions: Vec<_> = (0..count)
        .map(|_| tokio::spawn(websocket_session(port)))
        .collect();
    let mut broken = Vec::new();
    for session in sessions {
        if let Err(e) = session.await.unwrap() {
            broken.push(e);
        }
    }
    broken
}

#[tokio::test]
async fn websocket_upgrade_relays_both_ways() {
    let gw = gateway_to(http_upstream().await)
        .route("websocket = true")
        .start()
        .await;
    let broken = websocket_sessions(gw.port, 10).await;
    assert!(
        broken.is_empty(),
        "{} of 10 tunnels broke: {broken:?}",
        broken.len()
    );

    // When the 101 is read before the upgrade request's own end of body, pingora 0.9.1 took
    // that end for the end of the tunnel and closed it after the 101 (pingora#946; patched in
    // vendor/pingora-proxy). An upstream that answers at once makes that order the common one.
    let gw = gateway_to(eager_ws_upstream().await)
        .route("websocket = true")
        .start()
        .await;
    let broken = websocket_sessions(gw.port, 40).await;
    assert!(
        broken.is_empty(),
        "{} of 40 tunnels broke: {broken:?}",
        broken.len()
    );
}

#[tokio::test]
async fn a_silent_websocket_is_closed_after_read_timeout() {
    let gw = gateway_to(http_upstream().await)
        .upstream("read_timeout = \"300ms\"")
        .route("websocket = true")
        .start()
        .await;
    let upgrade =
        b"GET /ws HTTP/1.1\r\nhost: api\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n";
    let (mut conn, _, head) = send_raw(gw.port, upgrade, b"\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // As nginx's proxy_read_timeout: an upstream silent that long ends the tunnel.
    let mut chunk = [0u8; 64];
    let read = timeout(Duration::from_secs(5), conn.read(&mut chunk)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the tunnel stayed open: {read:?}"
    );
}

#[tokio::test]
async fn a_slow_upstream_gets_504_after_read_timeout() {
    let gw = gateway_to(http_upstream().await)
        .upstream("read_timeout = \"300ms\"")
        .start()
        .await;
    let resp = client().get(gw.url("/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("did not answer in time"));
    assert_eq!(
        gw.metric(
            "portcullis_upstream_errors_total",
            &[("upstream", "api"), ("kind", "proxy")]
        )
        .await,
        1.0
    );
    // Fast paths on the same upstream are unaffected.
    assert_eq!(
        client().get(gw.url("/")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn an_upstream_that_never_accepts_gets_504_after_connect_timeout() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so connecting
    // times out, as with a firewalled or overloaded upstream host.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(1).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        // Connections past the queue's room hang in SYN-SENT; don't wait for them.
        if let Ok(Ok(c)) = timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            fillers.push(c);
        }
    }
    let gw = gateway_to(addr)
        .upstream("connect_timeout = \"300ms\"")
        .start()
        .await;
    let resp = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let connect_errors = gw
        .metric(
            "portcullis_upstream_errors_total",
            &[("upstream", "api"), ("kind", "connect")],
        )
        .await;
    assert_eq!(connect_errors, 1.0);
}

/// An upstream like gunicorn with a short keepalive: it answers without `connection: close`
/// and then closes the connection anyway, racing the gateway's reuse of it.
async fn closing_upstream() -> SocketAddr {
    listen(|mut stream| async move {
        if read_head(&mut stream).await.is_some() {
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            let _ = stream.write_all(ok).await;
        }
    })
    .await
}

#[tokio::test]
async fn an_upstream_closing_kept_alive_connections_costs_clients_nothing() {
    let gw = gateway_to(closing_upstream().await).start().await;
    let client = client();
    let mut statuses = Vec::new();
    for i in 0..200 {
        let resp = client.get(gw.url(&format!("/r{i}"))).send().await.unwrap();
        statuses.push(resp.status().as_u16());
    }
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(failed, 0, "statuses: {statuses:?}");
}

#[tokio::test]
async fn http2_clients_get_the_same_bodies_from_an_http1_upstream() {
    let (upstream, garbled) = http_upstream_counting().await;
    let (_gw, h2, port) = with_tls(gateway_to(upstream)).await;
    let url = |path: &str| format!("https://localhost:{port}{path}");

    // An h2 upload carries no chunked framing; the h1 upstream still gets the whole body.
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 89) as u8).collect();
    let resp = h2
        .post(url("/echo"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());

    let got = h2
        .get(url("/big"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), BIG);
    assert!(got.iter().enumerate().all(|(i, b)| *b == big_byte(i)));

    let resp = h2.get(url("/stream")).send().await.unwrap();
    let want: String = (0..64).map(|i| format!("frame {i};")).collect();
    assert_eq!(resp.text().await.unwrap(), want);

    // A streamed upload (no length): h2 ends it with an empty DATA frame, which must become
    // exactly one chunked terminator upstream. A second one would be parsed by the upstream as
    // the start of another request and poison the kept-alive connection for the next client.
    for _ in 0..5 {
        let parts = ["part one;", "part two;", "part three"].map(Ok::<_, Infallible>);
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(parts));
        let resp = h2.post(url("/echo")).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "part one;part two;part three");
        assert_eq!(h2.get(url("/")).send().await.unwrap().status(), 200);
    }
    assert_eq!(
        garbled.load(Ordering::Relaxed),
        0,
        "the upstream got bytes that are not HTTP"
    );
}

/// Connections the gateway holds open in state ESTABLISHED on its local `port` (from
/// /proc/net/tcp: loopback IPv4 only, as every test listens on 127.0.0.1).
fn established_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == local && f[3] == "01"
        })
        .count()
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_keepalive_timeout() {
    let (gw, h2, port) =
        with_tls(gateway_to(http_upstream().await).server("keepalive_timeout = \"1s\"")).await;
    let resp = h2
        .get(format!("https://localhost:{port}/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.text().await.unwrap(), "ok");
    assert_eq!(established_on(port), 1, "the client keeps its connection");
    // The gateway closes it once idle for keepalive_timeout (polled, bounded).
    let closed = eventually(Duration::from_secs(10), || async {
        established_on(port) == 0
    })
    .await;
    assert!(closed, "still open; log:\n{}", gw.log());
}

#[tokio::test]
async fn http2_bodies_over_client_max_body_size_get_413() {
    let (gw, h2, port) =
        with_tls(gateway_to(http_upstream().await).route("client_max_body_size = \"1k\"")).await;
    let url = format!("https://localhost:{port}/echo");
    // Declared length: refused before the body is read.
    let resp = h2.post(&url).body(vec![b'x'; 2048]).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 413);
    // No length (DATA frames until the end of the stream): cut off once past the limit.
    let parts = (0..4).map(|_| Ok::<_, Infallible>(vec![b'y'; 512]));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(parts));
    let resp = h2.post(&url).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    // Within the limit, both ways, the body arrives whole.
    let resp = h2.post(&url).body(vec![b'z'; 1024]).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 1024);
    let too_large = &[("decision", "too_large")];
    assert_eq!(
        gw.metric_settles("portcullis_requests_total", too_large, 2.0)
            .await,
        2.0
    );
}

/// `[[route]] websocket`: a tunnel passes no filter after its 101, so only routes that allow
/// it upgrade (off by default, as nginx upgrades only where configured); elsewhere an upgrade
/// is refused 403 before the upstream.
#[tokio::test]
async fn upgrades_only_on_routes_that_allow_them() {
    let upstream = http_upstream().await;
    let gw = gateway_to(upstream)
        .extra("[[route]]\npath = \"/ws\"\nupstream = \"api\"\nwebsocket = true\n")
        .start()
        .await;
    let refused =
        b"GET /chat HTTP/1.1\r\nhost: api\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n";
    let (_, _, head) = send_raw(gw.port, refused, b"\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let allowed =
        b"GET /ws HTTP/1.1\r\nhost: api\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n";
    let (_, _, head) = send_raw(gw.port, allowed, b"\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let decided = [("decision", "upgrade_refused")];
    assert_eq!(gw.metric("portcullis_requests_total", &decided).await, 1.0);
}
