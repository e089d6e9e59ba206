//! The differential property on stable: near-valid HTTP/1 messages (Transfer-Encoding and
//! Content-Length variants, chunk sizes with leading zeros and extensions, bare LF, obs-fold,
//! stray whitespace and control bytes, overflowing numbers, truncation, bytes after the end)
//! read by the fast path (`portcullis-h1`) and by Pingora must agree (`portcullis_h1_diff`).
//! The cargo-fuzz targets in fuzz/ run the same checks coverage-guided.

use std::collections::BTreeMap;
use std::sync::Mutex;

use portcullis_h1_diff::{request, response, Agreement};
use proptest::prelude::*;

/// Cases per property: enough to reach every generator branch many times, bounded so the
/// suite stays quick (each response case runs Pingora up to three times).
const CASES: u32 = 3000;

static TALLY: Mutex<BTreeMap<String, BTreeMap<String, u32>>> = Mutex::new(BTreeMap::new());

fn count(property: &str, outcome: &Agreement) {
    if let Ok(mut t) = TALLY.lock() {
        *t.entry(property.into())
            .or_default()
            .entry(format!("{outcome:?}"))
            .or_default() += 1;
    }
}

fn report(property: &str) {
    if let Ok(t) = TALLY.lock() {
        if let Some(outcomes) = t.get(property) {
            let total: u32 = outcomes.values().sum();
            eprintln!("{property}: {total} cases: {outcomes:?}");
        }
    }
}

fn line_end() -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r")]
}

fn content_length() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u64..40).prop_map(|n| n.to_string()),
        1 => (0usize..24, 0u64..40).prop_map(|(z, n)| format!("{}{n}", "0".repeat(z))),
        1 => prop::sample::select(vec![
            "+5", "-1", "5, 5", "5,5", "5, 6", " 5 ", "0x5", "", "5 5", "18446744073709551616",
            "99999999999999999999999", "\t5", "5\x0b", "1_0",
        ]).prop_map(String::from),
    ]
}

fn transfer_encoding() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "chunked",
        "gzip, chunked",
        "chunked, gzip",
        "xchunked",
        "chunked ",
        "CHUNKED",
        "chunked, identity",
        ",chunked",
        "chunk",
        "\"chunked\"",
        "cow chunked",
        "gzip",
        "",
    ])
    .prop_map(String::from)
}

/// A header field of the response, near-valid.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("X-Plain: yes".to_string()),
        2 => content_length().prop_map(|v| format!("Content-Length: {v}")),
        2 => transfer_encoding().prop_map(|v| format!("Transfer-Encoding: {v}")),
        1 => Just("Connection: close".to_string()),
        1 => prop::sample::select(vec![
            "Content-Length : 5", "Transfer-Encoding : chunked", "X-Folded: a\r\n b",
            " Transfer-Encoding: chunked", "Transfer-Encoding:\tchunked", "X: \x00",
            "Transfer_Encoding: chunked", "Transfer-Encoding: \x0bchunked", "X\u{85}: y",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
        ]).prop_map(String::from),
    ]
}

/// A chunk-size line: the size (as hex, maybe with leading zeros or off by one from `len`),
/// whitespace, extensions, its line end.
fn size_line(len: usize) -> impl Strategy<Value = String> {
    (
        prop_oneof![10 => Just(0i64), 1 => Just(1i64), 1 => Just(-1i64)],
        prop_oneof![6 => Just(0usize), 1 => 1usize..20],
        any::<bool>(),
        prop_oneof![
            6 => Just(""), 2 => Just(";a=b"), 1 => Just(" ;x"), 1 => Just("\t;x"), 1 => Just(" "),
            1 => Just(" x"), 1 => Just(";\n"), 1 => Just(";a\x00"), 1 => Just(";q=\"x y\""),
            1 => Just(";\x7f"), 1 => Just(";é"),
        ],
        line_end(),
    )
        .prop_map(move |(off, zeros, upper, ext, end)| {
            let size = (len as i64 + off).max(0);
            let hex = if upper {
                format!("{size:X}")
            } else {
                format!("{size:x}")
            };
            format!("{}{hex}{ext}{end}", "0".repeat(zeros))
        })
}

/// A chunked body, near-valid.
fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(
            (0usize..24).prop_flat_map(|n| {
                (
                    size_line(n),
                    prop::collection::vec(any::<u8>(), n),
                    line_end(),
                )
            }),
            0..4,
        ),
        prop_oneof![
            4 => Just("0\r\n"), 1 => Just("0;x\r\n"), 1 => Just("000\r\n"), 1 => Just("0\n"),
            1 => Just("\r\n"), 1 => Just(";x\r\n"),
        ],
        prop_oneof![
            6 => Just(""), 2 => Just("X-Sum: 1\r\n"), 1 => Just("bad\r\n"), 1 => Just(": x\r\n"),
            1 => Just(" folded\r\n"), 1 => Just("X: 1\n"), 1 => Just("X:POST / HTTP/1.1\r\n"),
        ],
        line_end(),
    )
        .prop_map(|(chunks, last, trailer, end)| {
            let mut body = Vec::new();
            for (line, data, data_end) in chunks {
                body.extend_from_slice(line.as_bytes());
                body.extend_from_slice(&data);
                body.extend_from_slice(data_end.as_bytes());
            }
            body.extend_from_slice(last.as_bytes());
            body.extend_from_slice(trailer.as_bytes());
            body.extend_from_slice(end.as_bytes());
            body
        })
}

/// A near-valid upstream response, maybe truncated, maybe followed by more bytes.
fn upstream_response() -> impl Strategy<Value = (Vec<u8>, bool)> {
    (
        prop_oneof![
            1 => Just(""),
            1 => Just("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
            1 => Just("HTTP/1.1 100 Continue\r\n\r\n"),
        ],
        prop_oneof![
            8 => Just("HTTP/1.1 200 OK"), 1 => Just("HTTP/1.0 200 OK"), 1 => Just("HTTP/1.1 204 No Content"),
            1 => Just("HTTP/1.1 304 Not Modified"), 1 => Just("HTTP/1.1 404 "), 1 => Just("HTTP/1.1 101 Switching"),
            1 => Just("HTTP/1.1 000 Zero"), 1 => Just("HTTP/1.1 099 Low"), 1 => Just("HTTP/1.1 200"),
            1 => Just("HTTP/1.1 999 Odd"), 1 => Just("HTTP/1.1 200 O\x01K"),
        ],
        prop::collection::vec((field(), line_end()), 0..4),
        line_end(),
        prop_oneof![
            2 => chunked_body(),
            1 => prop::collection::vec(any::<u8>(), 0..48),
        ],
        prop_oneof![4 => Just(""), 1 => Just("NEXT"), 1 => Just("HTTP/1.1 200 OK\r\n\r\n")],
        prop_oneof![6 => Just(None), 1 => (0usize..200).prop_map(Some)],
        prop_oneof![5 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(info, status, fields, end, body, after, cut, head_request)| {
            let mut bytes = info.as_bytes().to_vec();
            bytes.extend_from_slice(status.as_bytes());
            bytes.extend_from_slice(b"\r\n");
            for (f, e) in fields {
                bytes.extend_from_slice(f.as_bytes());
                bytes.extend_from_slice(e.as_bytes());
            }
            bytes.extend_from_slice(end.as_bytes());
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(after.as_bytes());
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            (bytes, head_request)
        })
}

/// A near-valid request head in the forms smuggling scanners use.
fn client_request() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            6 => Just("GET"),
            1 => prop::sample::select(vec!["HEAD", "POST", "DELETE", "G=\":<>\"", "GET\x00", "get", "CONNECT"]),
        ],
        prop::sample::select(vec![
            "/", "/a?b=1", "/%", "/%zz", "/a|b", "/a b", "http://x/a", "*", "/\x7f", "/é", "//x", "/a#f",
            "/.env", "/a;b", "/~u", "/a{b}", "!",
        ]),
        prop_oneof![
            6 => Just("HTTP/1.1"),
            1 => prop::sample::select(vec!["HTTP/1.0", "HTTP/1.32", "HTTP/2.0", "HTTP/1.1 ", "http/1.1"]),
        ],
        prop::collection::vec(
            (
                prop_oneof![
                    4 => Just("Host: api".to_string()),
                    1 => Just("Host: a@evil".to_string()),
                    1 => Just("Host: a\x00b".to_string()),
                    2 => content_length().prop_map(|v| format!("Content-Length: {v}")),
                    1 => transfer_encoding().prop_map(|v| format!("Transfer-Encoding: {v}")),
                    1 => Just("Connection: close, x-drop".to_string()),
                    1 => Just("Connection: Upgrade".to_string()),
                    1 => Just("Expect: 100-continue".to_string()),
                    1 => Just("X-Forwarded-For: 6.6.6.6".to_string()),
                    1 => prop::sample::select(vec![
                        "Content-Length : 0", " Host: x", "X: a\r\n b", "X_Y: 1", "X: \x01",
                        "Transfer-Encoding:\x0bchunked", "X:X\rTransfer-Encoding: chunked",
                        ": empty", "NoColon", "Content-Length\u{85}: 10",
                    ]).prop_map(String::from),
                ],
                line_end(),
            ),
            0..5,
        ),
        line_end(),
        prop_oneof![3 => Just(""), 1 => Just("GET /smuggled HTTP/1.1\r\n\r\n"), 1 => Just("0\r\n\r\n")],
        prop_oneof![6 => Just(None), 1 => (0usize..120).prop_map(Some)],
    )
        .prop_map(|(method, target, version, fields, end, after, cut)| {
            let mut bytes = format!("{method} {target} {version}\r\n").into_bytes();
            for (f, e) in fields {
                bytes.extend_from_slice(f.as_bytes());
                bytes.extend_from_slice(e.as_bytes());
            }
            bytes.extend_from_slice(end.as_bytes());
            bytes.extend_from_slice(after.as_bytes());
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_path_reads_upstream_responses_as_pingora_does((bytes, head_request) in upstream_response()) {
        match response(&bytes, head_request) {
            Ok(outcome) => count("responses", &outcome),
            Err(d) => prop_assert!(false, "{}", d),
        }
    }

    #[test]
    fn the_fast_path_serves_only_requests_pingora_reads_alike(bytes in client_request()) {
        match request(&bytes) {
            Ok(outcome) => count("requests", &outcome),
            Err(d) => prop_assert!(false, "{}", d),
        }
    }
}

/// Prints the tally of the two properties (run with `--nocapture` to see it); runs last by
/// name only when the test threads allow, so it is informative, not asserted.
#[test]
fn zz_tally() {
    report("responses");
    report("requests");
}

/// Disagreements the differential comparison found, settled by changing the fast path; each
/// now reads the same on both paths.
#[test]
fn settled_disagreements_stay_settled() {
    let agree = |raw: &[u8], want: Agreement| {
        let got = response(raw, false).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(got, want, "{:?}", raw.escape_ascii().to_string());
    };
    // 1. A status below 100: Pingora refuses it; the fast path took it and wrote `100` to the
    //    client (push_status clamps), an informational answer followed by a body.
    agree(
        b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
        Agreement::BothRefuse,
    );
    // 2. Content-Length with leading zeros past 19 characters: Pingora and nginx read 5; the
    //    fast path refused it (a 502 where HttpProxy relays).
    agree(
        b"HTTP/1.1 200 OK\r\nContent-Length: 00000000000000000005\r\n\r\nhello",
        Agreement::BothAccept,
    );
    // 3. A 16-digit chunk size with leading zeros: httparse (Pingora) allows 16 digits, the
    //    fast path stopped at 15.
    agree(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000005\r\nhello\r\n0\r\n\r\n",
        Agreement::BothAccept,
    );
    // 4. `5 x`: whitespace after a size then no `;`: httparse (Pingora) and hyper refuse it;
    //    the fast path read `x` as an extension.
    agree(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n",
        Agreement::BothRefuse,
    );
    // Finding 7 of issue 20 on the response side: a bare LF in a chunk extension. Published
    // Pingora skips it; the vendored pingora-core (vendor/pingora-core.patch) refuses a
    // control byte in a chunk-size line, as the fast path does: both refuse.
    agree(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n55\r\n0\r\n\r\n",
        Agreement::BothRefuse,
    );
    // Found by the fuzzer in CI: an informational response whose Content-Length is no length
    // was relayed by the fast path; Pingora refuses it.
    agree(
        b"HTTP/1.1 103 Early Hints\r\nContent-Length: Link: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        Agreement::BothRefuse,
    );
    // Found by the fuzzer (a gap in the classification, not in the fast path): whitespace
    // before a colon in an informational response.
    assert_eq!(
        response(b"HTTP/1.0 102 OK\r\nContent-Lentgh :5\r\n\r\n", true)
            .unwrap_or_else(|d| panic!("{d}")),
        Agreement::Deliberate(portcullis_h1_diff::Deliberate::LenientHeaderSyntax)
    );
    // Found by the fuzzer (a gap in the classification): an informational response with
    // Transfer-Encoding and a Content-Length that is no length. Pingora lets Transfer-Encoding
    // win and never reads the length; the fast path refuses the length, as for any 1xx.
    assert_eq!(
        response(
            b"HTTP/1.1 199 OK\r\nTransfer-Encoding: cl\xff\r\nContent-Length: 5cl5close\r\n\r\n",
            true
        )
        .unwrap_or_else(|d| panic!("{d}")),
        Agreement::Deliberate(portcullis_h1_diff::Deliberate::TransferEncodingWithLength)
    );
    // Requests: `Host: a@evil` is refused by Pingora (400); the fast path served it.
    assert_eq!(
        request(b"GET / HTTP/1.1\r\nHost: a@evil\r\n\r\n").unwrap_or_else(|d| panic!("{d}")),
        Agreement::HandOff
    );
}
