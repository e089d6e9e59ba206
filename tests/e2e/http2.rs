//! HTTP/2 connections as a client sees them on the TLS listener, with raw clients: the `h2`
//! crate's, whose received bytes are tapped to see the frames themselves, and hand-made frames
//! for the requests no HTTP/2 library sends. Issue "HTTP/2 and TLS": a ban closes the banned
//! client's connection with GOAWAY, `keepalive_requests` applies to HTTP/2 connections, and
//! the requests Pingora's HTTP/2 layer refuses by itself are counted as the HTTP/1 ones are.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

use crate::support::*;

/// A TLS connection to the gateway's TLS listener that negotiated `h2`.
async fn tls_h2(port: u16) -> TlsStream<TcpStream> {
    let connector = h2_connector();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

const GOAWAY: u8 = 0x7;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;

/// One HTTP/2 frame: type, flags, stream id, payload.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// The frames in `bytes` a server sent (no preface on that side); a cut-off last one is left.
fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut found = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 9 {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        if bytes.len() < at + 9 + len {
            break;
        }
        let stream =
            u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]])
                & 0x7fff_ffff;
        found.push(Frame {
            kind: bytes[at + 3],
            flags: bytes[at + 4],
            stream,
            payload: bytes[at + 9..at + 9 + len].to_vec(),
        });
        at += 9 + len;
    }
    found
}

/// An `h2` client connection over a tapped TLS stream: the request handle, the task driving
/// the connection (it ends when the connection does), and the server's bytes so far.
async fn h2_client(
    port: u16,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    Arc<Mutex<Vec<u8>>>,
) {
    let read = Arc::new(Mutex::new(Vec::new()));
    let tap = Tap {
        inner: tls_h2(port).await,
        read: read.clone(),
    };
    let (send, conn) = h2::client::handshake(tap).await.unwrap();
    (send, tokio::spawn(conn), read)
}

/// GETs `path` on `send` and returns the status, or `None` if the connection refused it.
async fn get(send: &mut h2::client::SendRequest<Bytes>, path: &str, xff: &str) -> Option<u16> {
    let request = ::http::Request::get(format!("https://localhost{path}"))
        .header("x-forwarded-for", xff)
        .body(())
        .unwrap();
    let ready = send.clone().ready().await.ok()?;
    *send = ready;
    let (response, _) = send.send_request(request, true).ok()?;
    let response = timeout(Duration::from_secs(5), response).await.ok()?.ok()?;
    let status = response.status().as_u16();
    // Read the body to its end, so the stream is done on both sides.
    let mut body = response.into_body();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Some(status)
}

/// The GOAWAY frames the server sent: (last stream id, error code).
fn go_aways(read: &Mutex<Vec<u8>>) -> Vec<(u32, u32)> {
    frames(&read.lock().unwrap())
        .iter()
        .filter(|f| f.kind == GOAWAY && f.payload.len() >= 8)
        .map(|f| {
            let p = &f.payload;
            let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
            (last, u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
        })
        .collect()
}

/// Issue "HTTP/2 and TLS", finding 6 (What must be true 4): a banned client's HTTP/2
/// connection used to answer it 403 request after request, for as long as it liked. The
/// first refusal after the ban now comes with GOAWAY, and the connection ends.
#[tokio::test]
async fn a_banned_client_loses_its_http2_connection_with_goaway() {
    let up = upstream().run().await;
    let builder = gateway(&up)
        .extra(BEHIND_PROXY)
        .extra(PROBES_404)
        .extra("[reputation]\nmaxretry = 2\nignoreip = []");
    let (_gw, _, port) = with_tls(builder).await;
    let (mut send, conn, read) = h2_client(port).await;
    let client = "203.0.113.80";
    assert_eq!(get(&mut send, "/ok", client).await, Some(200));
    // A probe weighs 2: this one bans.
    assert_eq!(get(&mut send, "/.env", client).await, Some(404));
    // Another client on the same connection (a front proxy's) was served meanwhile.
    assert_eq!(get(&mut send, "/other", "203.0.113.81").await, Some(200));
    assert!(go_aways(&read).is_empty(), "no GOAWAY before the ban bites");
    assert_eq!(get(&mut send, "/ok", client).await, Some(403));
    // The connection ends, after a GOAWAY without an error.
    // (The client may see the close as an error: it may be writing when the server closes.)
    let ended = timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the connection did not end");
    let goaway = go_aways(&read);
    assert!(!goaway.is_empty(), "no GOAWAY");
    assert!(goaway.iter().all(|&(_, code)| code == 0), "{goaway:?}");
    // Nothing more goes on it.
    assert_eq!(get(&mut send, "/ok", client).await, None);
    assert_eq!(up.paths(), ["/ok", "/other"]);
}

/// Issue "HTTP/2 and TLS", finding 6: `keepalive_requests` (nginx: it applies to HTTP/2 too)
/// ends an HTTP/2 connection gracefully after that many requests: each is answered, then
/// GOAWAY, and the client's later requests go on a new connection.
#[tokio::test]
async fn keepalive_requests_ends_an_http2_connection_with_goaway() {
    let up = upstream().run().await;
    let (_gw, _, port) = with_tls(gateway(&up).server("keepalive_requests = 3")).await;
    let (mut send, conn, read) = h2_client(port).await;
    for i in 0..3 {
        assert_eq!(
            get(&mut send, &format!("/first/{i}"), "-").await,
            Some(200),
            "request {i}"
        );
    }
    // (The client may see the close as an error: it may be writing when the server closes.)
    let ended = timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the connection did not end");
    let goaway = go_aways(&read);
    // A graceful shutdown (h2's): GOAWAY with the highest stream id, a PING, then the final
    // GOAWAY naming the last request taken (stream 5, the third). On a loaded machine the
    // connection may end before the PING's answer: then the first one is all there is.
    assert!(!goaway.is_empty(), "no GOAWAY");
    assert!(
        goaway
            .iter()
            .all(|&(last, code)| code == 0 && (last == 5 || last == 0x7fff_ffff)),
        "{goaway:?}"
    );
    assert_eq!(get(&mut send, "/first/3", "-").await, None);
    // A new connection serves the next ones.
    let (mut again, _conn, _) = h2_client(port).await;
    assert_eq!(get(&mut again, "/second", "-").await, Some(200));
    assert_eq!(up.paths(), ["/first/0", "/first/1", "/first/2", "/second"]);
}

/// An HPACK header block of literal fields, neither indexed nor Huffman-coded.
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        assert!(
            name.len() < 127 && value.len() < 127,
            "one-byte lengths only"
        );
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// A frame's bytes.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// How the server answered one stream.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// A response header whose `:status` is 400 (HPACK static index 12).
    BadRequest,
    /// Some other response header.
    Response,
    /// RST_STREAM with this error code.
    Reset(u32),
}

/// Sends each header list as a request without a body on one raw HTTP/2 connection (streams
/// 1, 3, 5, ...) and returns how each was answered, in order.
async fn raw_requests(port: u16, requests: &[Vec<(&str, &str)>]) -> Vec<Option<Outcome>> {
    let mut tls = tls_h2(port).await;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for (i, fields) in requests.iter().enumerate() {
        // END_STREAM | END_HEADERS
        out.extend(frame(HEADERS, 0x5, 1 + 2 * i as u32, &header_block(fields)));
    }
    tls.write_all(&out).await.unwrap();
    let mut outcomes: Vec<Option<Outcome>> = requests.iter().map(|_| None).collect();
    let mut read = Vec::new();
    let mut acked = false;
    let mut chunk = [0u8; 4096];
    while outcomes.iter().any(Option::is_none) {
        match timeout(Duration::from_secs(5), tls.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => read.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        for f in frames(&read) {
            if f.kind == SETTINGS && f.flags & 0x1 == 0 && !acked {
                tls.write_all(&frame(SETTINGS, 0x1, 0, &[])).await.unwrap();
                acked = true;
            }
            let index = (f.stream as usize).wrapping_sub(1) / 2;
            let Some(slot) = outcomes.get_mut(index).filter(|_| f.stream % 2 == 1) else {
                continue;
            };
            match f.kind {
                HEADERS if f.payload.first() == Some(&0x8c) => {
                    slot.get_or_insert(Outcome::BadRequest);
                }
                HEADERS => {
                    slot.get_or_insert(Outcome::Response);
                }
                RST_STREAM if f.payload.len() == 4 => {
                    let code = u32::from_be_bytes([
                        f.payload[0],
                        f.payload[1],
                        f.payload[2],
                        f.payload[3],
                    ]);
                    slot.get_or_insert(Outcome::Reset(code));
                }
                _ => {}
            }
        }
    }
    outcomes
}

/// Issue "HTTP/2 and TLS", finding 5: the requests Pingora's HTTP/2 layer refuses by itself
/// were refused without a log line or an offense, where their HTTP/1 equivalents are logged
/// and banned: a conflicting, missing or userinfo-carrying authority (400), and, reset by the
/// h2 library before Pingora sees them, a `:path` in absolute form or with a space and
/// conflicting lengths. Each is now counted under its reason (`bad_host`; the resets, whose
/// request was never decoded, `bad_header`), logged (400, as nginx logs it) and an offense.
#[tokio::test]
async fn requests_the_http2_layer_refuses_are_counted_logged_and_offenses() {
    let up = upstream().run().await;
    let builder = gateway(&up)
        .extra("[access_log]\ntarget = \"access.json\"\nformat = \"json\"")
        .extra("[reputation]\nmaxretry = 100\nignoreip = []");
    let (gw, _, port) = with_tls(builder).await;
    let request = |path: &'static str, more: &[(&'static str, &'static str)]| {
        let mut fields = vec![(":method", "GET"), (":scheme", "https"), (":path", path)];
        fields.extend_from_slice(more);
        fields
    };
    let authority = (":authority", "localhost");
    let requests = [
        request("/conflict", &[authority, ("host", "elsewhere")]),
        request("/no-authority", &[]),
        request("/userinfo", &[(":authority", "user@localhost")]),
        request(
            "/lengths",
            &[authority, ("content-length", "0"), ("content-length", "1")],
        ),
        request("http://elsewhere/absolute", &[authority]),
        request("/with space", &[authority]),
        request("/fine", &[authority]),
    ];
    let protocol_error = 0x1;
    let outcomes = raw_requests(port, &requests).await;
    assert_eq!(
        outcomes,
        [
            Some(Outcome::BadRequest),
            Some(Outcome::BadRequest),
            Some(Outcome::BadRequest),
            Some(Outcome::Reset(protocol_error)),
            Some(Outcome::Reset(protocol_error)),
            Some(Outcome::Reset(protocol_error)),
            Some(Outcome::Response),
        ]
    );
    assert_eq!(up.paths(), ["/fine"]);
    let reason = |r: &'static str| [("reason", r)];
    assert_eq!(
        gw.metric_settles("portcullis_malformed_total", &reason("bad_host"), 3.0)
            .await,
        3.0
    );
    let header = reason("bad_header");
    assert_eq!(gw.metric("portcullis_malformed_total", &header).await, 3.0);
    let malformed = [("kind", "malformed")];
    assert_eq!(
        gw.metric("portcullis_offenses_total", &malformed).await,
        6.0
    );
    // Six access-log lines, 400 and decision malformed, blaming the client.
    let path = gw.config_path.parent().unwrap().join("access.json");
    let refused = || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["status"] == 400 && l["decision"] == "malformed")
            .filter(|l| l["client"] == "127.0.0.1")
            .count()
    };
    assert!(
        eventually(Duration::from_secs(5), || async { refused() == 6 }).await,
        "refused lines: {}",
        refused()
    );
}

/// Enough refused HTTP/2 requests ban their sender, as enough HTTP/1 ones do.
#[tokio::test]
async fn a_client_sending_requests_the_http2_layer_refuses_is_banned() {
    let up = upstream().run().await;
    let builder = gateway(&up).extra("[reputation]\nmaxretry = 2\nignoreip = []");
    let (gw, h2, port) = with_tls(builder).await;
    let conflicting = vec![
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/"),
        (":authority", "localhost"),
        ("host", "elsewhere"),
    ];
    let outcomes = raw_requests(port, &[conflicting.clone(), conflicting]).await;
    assert_eq!(
        outcomes,
        [Some(Outcome::BadRequest), Some(Outcome::BadRequest)]
    );
    assert_eq!(
        gw.metric_settles("portcullis_bans_total", &[], 1.0).await,
        1.0
    );
    // Its next connection is refused at accept.
    let refused = h2.get(format!("https://localhost:{port}/ok")).send().await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(up.paths().is_empty());
}
