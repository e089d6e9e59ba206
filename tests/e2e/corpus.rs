//! A public request-smuggling corpus replayed against the gateway (on the fast path, and on
//! HttpProxy alone with `PORTCULLIS_E2E_FAST_PATH=false`), with every byte that reaches the
//! upstream logged: the upstream's strict parser must accept every byte it was sent, no
//! request may reach it that no case sent as such (a request hidden in another's body), and a
//! smuggler probe (one request) gives at most one request out, a refusal none.
//!
//! Sources:
//! - defparam/smuggler, commit 2be871e6151ce85167a277fab21c74c851d8b20b (MIT License,
//!   Copyright (c) 2020 Evan Custodio; notice below): the Transfer-Encoding mutations of its
//!   `configs/default.py`, `configs/doubles.py` and `configs/exhaustive.py`, ported to Rust in
//!   [`smuggler_mutations`], each sent as its CL.TE and TE.CL probes (`smuggler.py`
//!   `_check_clte` / `_check_tecl`, attack variants).
//! - The HTTP Garden (narfindustries/http-garden), commit
//!   ffb9164c6603f6201c1dc70afb08fd229e2778bc, `TROPHIES.md`, "Server Bugs": the payloads of its
//!   published findings that concern framing, written down from that list in [`GARDEN`] with
//!   the number of each finding (the repository is GPL-3.0; only these short test inputs are
//!   restated, not its code).
//!
//! smuggler's notice: Permission is hereby granted, free of charge, to any person obtaining a
//! copy of this software and associated documentation files (the "Software"), to deal in the
//! Software without restriction, including without limitation the rights to use, copy,
//! modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
//! permit persons to whom the Software is furnished to do so, subject to the following
//! conditions: The above copyright notice and this permission notice shall be included in all
//! copies or substantial portions of the Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT
//! WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
//! MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
//! AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN
//! AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
//! SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::support::*;

/// What the upstream saw.
#[derive(Default)]
struct Seen {
    /// Every byte it received, all connections.
    bytes: Arc<Mutex<Vec<u8>>>,
    /// The target of each request it parsed.
    targets: Vec<String>,
    /// Connections its parser gave up on.
    errors: Vec<String>,
}

/// hyper's strict HTTP/1.1 server, logging every byte and request.
async fn logging_upstream() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    let addr = listen(move |stream| {
        let log = log.clone();
        let requests = log.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let requests = requests.clone();
            async move {
                let target = req.uri().to_string();
                // A request counts once its body is whole: HttpProxy streams a body, so a
                // request refused mid-body (a bad chunk) leaves the upstream a head and a
                // body that never ends, which no server acts on.
                if req.into_body().collect().await.is_err() {
                    return Err("incomplete body");
                }
                requests.lock().unwrap().targets.push(target);
                let resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                Ok::<_, &'static str>(resp)
            }
        });
        async move {
            let io = TokioIo::new(Tap {
                inner: stream,
                read: log.lock().unwrap().bytes.clone(),
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                if e.is_parse() {
                    log.lock().unwrap().errors.push(e.to_string());
                }
            }
        }
    })
    .await;
    (addr, seen)
}

/// Sends case `n` (`raw`, tagged), then on the same connection a plain request with
/// `Connection: close` (tagged `N&end`), so the gateway closes once it has answered
/// everything, and reads until it does (10 s at most). Closing the sending side instead would
/// not do: Pingora takes a client's EOF for a client gone. The follow-up is where a
/// misframed case shows: bytes the gateway left over, or took from it, change the follow-up.
async fn replay(port: u16, raw: &[u8], n: usize) -> Vec<u8> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut sent = tagged(raw, n);
    sent.extend_from_slice(
        format!("GET /?tag={n}&end HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let _ = conn.write_all(&sent).await;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) = timeout(Duration::from_secs(10), conn.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    got
}

/// The case a request the upstream parsed belongs to: the number each case's request line
/// carries in its query (`tag=N`); `None` for a request no case sent as such (a hidden one).
fn case_of(target: &str) -> Option<usize> {
    target.split_once("tag=")?.1.parse().ok()
}

/// `raw` with `tag=N` in the query of its request line (framing unchanged).
fn tagged(raw: &[u8], n: usize) -> Vec<u8> {
    let Some(slash) = raw.iter().position(|&b| b == b'/') else {
        return raw.to_vec();
    };
    let join = if raw[slash..]
        .iter()
        .take_while(|&&b| b != b' ' && b != b'\n')
        .any(|&b| b == b'?')
    {
        "&"
    } else {
        "?"
    };
    let end = slash
        + raw[slash..]
            .iter()
            .position(|&b| b == b' ' || b == b'\n')
            .unwrap_or(0);
    let mut out = raw[..end].to_vec();
    out.extend_from_slice(format!("{join}tag={n}").as_bytes());
    // Requests a case pipelines on purpose (`GET / HTTP/1.1` after the first) carry the tag
    // too; the hidden ones (`/evil`, `/bad_path/pwned`) do not.
    let rest = String::from_utf8_lossy(&raw[end..]).into_owned();
    if rest.is_ascii() {
        out.extend_from_slice(
            rest.replace("GET / HTTP/1.1", &format!("GET /?tag={n} HTTP/1.1"))
                .as_bytes(),
        );
    } else {
        out.extend_from_slice(&raw[end..]);
    }
    out
}

/// Replays each case (sending it, then closing the sending side) and checks everything the
/// upstream parsed: no request it could not parse, none that no case sent as such (every
/// request a case sends carries its number), and at most `most` per case. Requests are counted
/// by their tag, not by when they arrive: a gateway may pass a request on after the client
/// has gone.
async fn replay_all(cases: &[(String, Vec<u8>)], most: usize) {
    let (upstream, seen) = logging_upstream().await;
    let gw = gateway_to(upstream).start().await;
    for (n, (_, raw)) in cases.iter().enumerate() {
        replay(gw.port, raw, n).await;
    }
    // A last plain request through the same pool: by its answer, the cases' requests are in.
    let last = cases.len();
    let got = replay(gw.port, b"GET / HTTP/1.1\r\nHost: api\r\n\r\n", last).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200") && got.ends_with(b"ok"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let log = std::mem::take(&mut *seen.lock().unwrap());
    let shown = |n: usize| {
        let raw = cases.get(n).map_or(&[][..], |c| &c.1[..]);
        format!(
            "{}: sent {:?}",
            cases.get(n).map_or("", |c| &c.0),
            String::from_utf8_lossy(raw)
        )
    };
    assert!(
        log.errors.is_empty(),
        "upstream parse errors {:?}\nupstream got {:?}",
        log.errors,
        String::from_utf8_lossy(&log.bytes.lock().unwrap())
    );
    let mut per_case = vec![0usize; cases.len() + 1];
    let mut followers = vec![0usize; cases.len() + 1];
    for target in &log.targets {
        if let Some(n) = target
            .strip_suffix("&end")
            .and_then(|t| t.strip_prefix("/?tag="))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n <= cases.len())
        {
            followers[n] += 1;
            continue;
        }
        match case_of(target) {
            Some(n) if n <= cases.len() => per_case[n] += 1,
            _ => panic!(
                "a request no case sent reached the upstream: {target}\nupstream got {:?}",
                String::from_utf8_lossy(&log.bytes.lock().unwrap())
            ),
        }
    }
    for (n, count) in per_case[..cases.len()].iter().enumerate() {
        assert!(*count <= most, "{count} requests out\n{}", shown(n));
        assert!(
            followers[n] <= 1,
            "the follow-up went out twice\n{}",
            shown(n)
        );
    }
    assert_eq!(
        followers[cases.len()],
        1,
        "the last plain request's follow-up"
    );
    let forwarded: usize = per_case[..cases.len()].iter().sum();
    let followed: usize = followers[..cases.len()].iter().sum();
    eprintln!(
        "{} cases, {forwarded} requests forwarded, {followed} follow-up requests forwarded intact",
        cases.len()
    );
}

/// smuggler's `render_template(gadget)`: the gadget as the first field, then its fixed fields.
fn smuggler_template(gadget: &[u8], method: &str, cl: usize, body: &str) -> Vec<u8> {
    let mut p = format!("{method} /api?cb=1 HTTP/1.1\r\n").into_bytes();
    p.extend_from_slice(gadget);
    p.extend_from_slice(b"\r\nHost: api\r\nUser-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/78.0.3904.87 Safari/537.36\r\n");
    p.extend_from_slice(b"Content-type: application/x-www-form-urlencoded; charset=UTF-8\r\n");
    p.extend_from_slice(format!("Content-Length: {cl}\r\n\r\n{body}").as_bytes());
    p
}

/// The gadgets of smuggler's configs (default, doubles, exhaustive), deduplicated. Python's
/// `"%c" % i` for i ≥ 0x80 is a code point, written as UTF-8 by its socket layer: the same here.
fn smuggler_mutations() -> Vec<(String, Vec<u8>)> {
    let mut gadgets: Vec<(String, String)> = Vec::new();
    let mut add = |name: String, g: String| gadgets.push((name, g));
    let c = |i: u32| char::from_u32(i).map(String::from).unwrap_or_default();
    // configs/default.py and exhaustive.py, the named ones.
    for (name, g) in [
        ("nameprefix1", " Transfer-Encoding: chunked"),
        ("tabprefix1", "Transfer-Encoding:\tchunked"),
        ("tabprefix2", "Transfer-Encoding\t:\tchunked"),
        ("space1", "Transfer-Encoding : chunked"),
        ("spacejoin1", "Transfer Encoding: chunked"),
        ("underjoin1", "Transfer_Encoding: chunked"),
        ("smashed", "Transfer Encoding:chunked"),
        ("valueprefix1", "Transfer-Encoding:  chunked"),
        ("vertprefix1", "Transfer-Encoding:\u{000B}chunked"),
        ("commaCow", "Transfer-Encoding: chunked, cow"),
        ("cowComma", "Transfer-Encoding: cow, chunked"),
        ("contentEnc", "Content-Encoding: chunked"),
        ("linewrapped1", "Transfer-Encoding:\n chunked"),
        ("quoted", "Transfer-Encoding: \"chunked\""),
        ("aposed", "Transfer-Encoding: 'chunked'"),
        ("lazygrep", "Transfer-Encoding: chunk"),
        ("sarcasm", "TrAnSFer-EnCODinG: cHuNkeD"),
        ("yelling", "TRANSFER-ENCODING: CHUNKED"),
        ("0dsuffix", "Transfer-Encoding: chunked\r"),
        ("tabsuffix", "Transfer-Encoding: chunked\t"),
        (
            "revdualchunk",
            "Transfer-Encoding: cow\r\nTransfer-Encoding: chunked",
        ),
        ("0dspam", "Transfer\r-Encoding: chunked"),
        ("nested", "Transfer-Encoding: cow chunked bar"),
        ("spaceFF", "Transfer-Encoding:\u{FF}chunked"),
        ("accentCH", "Transfer-Encoding: ch\u{96}nked"),
        ("accentTE", "Transf\u{82}r-Encoding: chunked"),
        ("x-rout", "X:X\rTransfer-Encoding: chunked"),
        ("x-nout", "X:X\nTransfer-Encoding: chunked"),
    ] {
        add(name.into(), g.into());
    }
    // default.py's loop.
    for i in [
        0x1, 0x4, 0x8, 0x9, 0xa, 0xb, 0xc, 0xd, 0x1F, 0x20, 0x7f, 0xA0, 0xFF,
    ] {
        let x = c(i);
        for (name, g) in [
            ("midspace", format!("Transfer-Encoding:{x}chunked")),
            ("postspace", format!("Transfer-Encoding{x}: chunked")),
            ("prespace", format!("{x}Transfer-Encoding: chunked")),
            ("endspace", format!("Transfer-Encoding: chunked{x}")),
            ("xprespace", format!("X: X{x}Transfer-Encoding: chunked")),
            ("endspacex", format!("Transfer-Encoding: chunked{x}X: X")),
            ("rxprespace", format!("X: X\r{x}Transfer-Encoding: chunked")),
            ("xnprespace", format!("X: X{x}\nTransfer-Encoding: chunked")),
            ("endspacerx", format!("Transfer-Encoding: chunked\r{x}X: X")),
            ("endspacexn", format!("Transfer-Encoding: chunked{x}\nX: X")),
        ] {
            add(format!("{name}-{i:02x}"), g);
        }
    }
    // exhaustive.py's loops.
    for i in (0x1..0x20).chain(0x7F..0x100) {
        let x = c(i);
        for (name, g) in [
            ("midspace", format!("Transfer-Encoding:{x}chunked")),
            ("postspace", format!("Transfer-Encoding{x}: chunked")),
            ("prespace", format!("{x}Transfer-Encoding: chunked")),
            ("endspace", format!("Transfer-Encoding: chunked{x}")),
        ] {
            add(format!("{name}-{i:02x}"), g);
        }
    }
    // doubles.py's loops.
    for i in (0x1..0x21).chain(0x7F..0x100) {
        let x = c(i);
        for (name, g) in [
            ("XX-XX", format!("{x}Transfer-Encoding{x}: chunked")),
            ("X-X-", format!("{x}Transfer-Encoding:{x}chunked")),
            ("X--X", format!("{x}Transfer-Encoding: chunked{x}")),
            ("-XX-", format!("Transfer-Encoding{x}:{x}chunked")),
            ("-X-X", format!("Transfer-Encoding{x}: chunked{x}")),
            ("--XX", format!("Transfer-Encoding:{x}chunked{x}")),
        ] {
            add(format!("doubles-{name}-{i:02x}"), g);
        }
    }
    let mut unique = BTreeSet::new();
    let mut cases = Vec::new();
    for (name, gadget) in gadgets {
        if !unique.insert(gadget.clone()) {
            continue;
        }
        // _check_clte (cl=4, one chunk then the last) and _check_tecl (cl=6, last chunk + X).
        let clte = smuggler_template(gadget.as_bytes(), "POST", 4, "1\r\nZ\r\n0\r\n\r\n");
        let tecl = smuggler_template(gadget.as_bytes(), "POST", 6, "0\r\n\r\nX");
        cases.push((format!("smuggler {name} CL.TE"), clte));
        cases.push((format!("smuggler {name} TE.CL"), tecl));
    }
    cases
}

/// HTTP Garden, TROPHIES.md "Server Bugs" at ffb9164c: the payloads of the framing findings,
/// by the line of the list they are on.
const GARDEN: &[(&str, &[u8])] = &[
    ("chunk size 0_2e (bug 1)", b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0_2e\r\n\r\nGET /evil HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    ("NUL and CR in a value (bug 2)", b"GET / HTTP/1.1\r\nHost: a\r\nHeader: v\x00\ralue\r\n\r\n"),
    ("space before the colon (bug 3)", b"GET / HTTP/1.1\r\nHost: whatever\r\nContent-Length : 34\r\n\r\nGET /evil HTTP/1.1\r\nHost: whatever\r\n\r\n"),
    ("whitespace before the first field (bug 4)", b"GET / HTTP/1.1\r\n\tContent-Length: 1\r\n\r\nX"),
    ("version 1.32 (bug 5)", b"GET /test HTTP/1.32\r\n\r\n"),
    ("LF in the request line (bug 9)", b"GET /\nHTTP/1.1\r\n\r\n"),
    ("Content-Length +1_0", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +1_0\r\n\r\n0123456789"),
    ("two chunked codings", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nZ\r\n0\r\n\r\n"),
    ("NBSP around chunked", b"POST / HTTP/1.1\r\nHost: whatever\r\nTransfer-Encoding: \xa0chunked\xa0\r\n\r\n0\r\n\r\n"),
    ("CR inside a value", b"GET / HTTP/1.1\r\nVisible: :/\rSmuggled: :)\r\n\r\n"),
    ("empty Content-Length", b"GET / HTTP/1.1\r\nHost: whatever\r\nContent-Length: \r\n\r\n"),
    ("empty chunk size", b"GET / HTTP/1.1\r\nHost: whatever\r\nTransfer-Encoding: chunked\r\n\r\n\r\n\r\n"),
    ("empty field name", b"GET / HTTP/1.1\r\n: ignored\r\nHost: whatever\r\n\r\n"),
    ("bare LF ends the header", b"GET / HTTP/1.1\r\nHost: a\r\nUseless:\n\nGET / HTTP/1.1\r\n\r\n"),
    ("\\x85 in a field name", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length\x85: 10\r\n\r\n0123456789"),
    ("leading comma in TE, with CL", b"GET / HTTP/1.1\r\nHost: whatever\r\nTransfer-Encoding: ,chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    ("two lengths, 1 then 0", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 0\r\n\r\nZ"),
    ("negative length", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -48\r\n\r\n"),
    ("field without colon", b"GET / HTTP/1.1\r\nContent-Length 10\r\n\r\n0123456789"),
    ("length 1Z", b"GET / HTTP/1.1\r\nContent-Length: 1Z\r\n\r\nZ"),
    ("CR before the next request", b"GET / HTTP/1.1\r\nHost: a\r\n\rZGET /evil: HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("CR CR in a chunk line", b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\r;ABCD\r\n34\r\nE\r\n0\r\n\r\nGET /evil HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    ("octal-looking length", b"GET / HTTP/1.1\r\nHost: whatever\r\nContent-Length: 010\r\n\r\n01234567"),
    ("CR in a value", b"GET / HTTP/1.1\r\nHost: whatever\r\nHeader: va\rlue\r\n\r\n"),
    ("a field name split by CRLF", b"POST / HTTP/1.1\r\nHost: whatever\r\nTransfer-\r\nEncoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    ("a request in the trailers", b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX:POST /evil HTTP/1.1\r\n\r\n"),
    ("empty then real length", b"GET / HTTP/1.1\r\nContent-Length: \r\nContent-Length: 43\r\n\r\nPOST /evil HTTP/1.1\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
    ("unknown coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: blegh\r\n\r\n1\r\nZ\r\n0\r\n\r\n"),
    ("invalid chunk size", b"POST / HTTP/1.1\r\nHost: whatever\r\nTransfer-Encoding: chunked\r\n\r\nINVALID!!!\r\nGET /evil HTTP/1.1\r\nHost: whatever\r\n\r\n"),
    ("CR CR before an extension", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\r;a\r\n02\r\n41\r\n0\r\n\r\nGET /bad_path/pwned HTTP/1.1\r\nHost: a\r\nContent-Length: 430\r\n\r\n0\r\n\r\n"),
    ("CR then LF in a chunk", b"POST /  HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r0\n"),
    ("junk after a chunk size", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1these-bytes-never-get-validated\r\nZ\r\n0\r\n\r\n"),
    ("leading comma in TE", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n"),
    ("bare LF after chunk data", b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\n0\r\n\r\n"),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: whatever\nConnection: close\n\n"),
    ("a request inside a chunk", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n17\r\n0\r\n\r\nGET /evil HTTP/1.1\r\n\r\n\r\n\r\n0\r\n\r\n"),
    ("chunk size -0x0", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-0x0\r\n\r\n"),
    ("lengths 0 then 31", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 31\r\n\r\nGET /evil HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("length and chunked", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("spaces before a chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n           0\r\n\r\n"),
    ("NUL after the body", b"GET / HTTP/1.1\r\nHost: whatever\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\x00"),
];

#[tokio::test]
async fn smuggler_transfer_encoding_mutations_give_one_request_or_none() {
    let cases = smuggler_mutations();
    assert!(cases.len() > 1_000, "{} cases", cases.len());
    replay_all(&cases, 1).await;
}

#[tokio::test]
async fn http_garden_findings_hide_no_request() {
    let cases: Vec<(String, Vec<u8>)> = GARDEN
        .iter()
        .map(|(name, raw)| (format!("garden: {name}"), raw.to_vec()))
        .collect();
    // "bare LF ends the header" is two requests to every parser that takes bare LF (httparse
    // does): both may go out, each answered.
    replay_all(&cases, 2).await;
}
