//! The fast path's HTTP/1 framing (`portcullis-h1`) against Pingora's HTTP/1 code, which the
//! `HttpProxy` path runs, on the same bytes.
//!
//! - [`request`]: a request head the fast path serves itself must be read by Pingora's server
//!   session as the same request (method, target, version, fields), ending at the same byte,
//!   with no body. A head the fast path hands to `HttpProxy` is Pingora's by construction.
//! - [`response`]: an upstream response read by the fast path (head, 1xx, body by length,
//!   chunked, or to the close) and by Pingora's client session must be accepted or refused
//!   alike, and when both accept, have the same status, the same decoded body and end at the
//!   same byte.
//!
//! Where the fast path refuses what Pingora accepts on purpose (it is stricter where RFC 9112
//! allows a recipient to refuse and nginx refuses), the case is named by a [`Deliberate`]
//! class, documented in docs/framing.md. Everything else is a [`Disagreement`].
#![forbid(unsafe_code)]

use std::io::Cursor;

use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_core::protocols::http::v1::server::HttpSession as DownstreamSession;
use portcullis_h1::chunked::Chunked;
use portcullis_h1::limits::{MAX_CHUNK_LINE, MAX_REQUEST_FIELDS};
use portcullis_h1::request::{self, Take};
use portcullis_h1::response::{self, Body, Parsed};
use tokio::io::AsyncWriteExt;

/// How a case came out when the two readers agree (or differ on purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Agreement {
    /// Both read the same message.
    BothAccept,
    /// Both refuse it.
    BothRefuse,
    /// Both need more bytes.
    BothIncomplete,
    /// The fast path hands the request to `HttpProxy` (Pingora itself).
    HandOff,
    /// The fast path refuses what Pingora accepts, on purpose.
    Deliberate(Deliberate),
}

/// The fast path is stricter than Pingora here, on purpose (docs/framing.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Deliberate {
    /// `Transfer-Encoding` and `Content-Length` together: Pingora drops the length, nginx
    /// and the fast path answer 502.
    TransferEncodingWithLength,
    /// `Content-Length: 5, 5`: Pingora (and hyper) fold equal values, nginx and the fast path
    /// refuse a value that is not digits.
    LengthList,
    /// Whitespace before a colon or obs-fold in a response header: Pingora's parser allows
    /// them in responses; nginx (since 1.21.1) and the fast path answer 502, which RFC 9112
    /// 5.2 allows for obs-fold, and which is safer than relaying either.
    LenientHeaderSyntax,
    /// A `101` to a request that asked for no upgrade.
    UnsolicitedSwitch,
    /// A byte that is no field character (bare LF, a control byte) in a chunk extension:
    /// Pingora (httparse's chunk-size parser) skips any byte there, so
    /// `2;\nxx\r\n55\r\n0\r\n\r\n…` is one body to nginx and another to Pingora.
    ChunkExtensionByte,
    /// A chunk-size line without digits (`\r\n`, `;x\r\n`): httparse reads it as size 0.
    ChunkSizeWithoutDigits,
    /// A trailer line that is no `name: value` field: Pingora only checks the CRLFs.
    TrailerSyntax,
    /// A chunk-size line over `MAX_CHUNK_LINE` (Pingora allows 8 KiB).
    ChunkLineLimit,
}

/// The fast path and Pingora read the same bytes differently.
#[derive(Debug)]
pub struct Disagreement(pub String);

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a reader made of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// A whole response.
    Accept {
        /// Final status.
        status: u16,
        /// The decoded body.
        body: Vec<u8>,
        /// Bytes the response took, informational responses included.
        end: usize,
        /// The body ran to the end of the bytes (close-delimited).
        until_close: bool,
    },
    /// More bytes are needed.
    Incomplete,
    /// Not a valid response; what was wrong.
    Refuse(String),
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread tokio runtime");
    }
    RUNTIME.with(|rt| rt.block_on(f))
}

// ---------------------------------------------------------------------------------------------
// Requests

/// What Pingora's server session reads of a request head.
#[derive(Debug)]
enum PingoraRequest {
    Accept {
        len: usize,
        method: String,
        target: Vec<u8>,
        version: http::Version,
        fields: http::HeaderMap,
        body_empty: bool,
    },
    Incomplete,
    Refuse,
}

async fn pingora_request(bytes: &[u8]) -> PingoraRequest {
    let mut session = DownstreamSession::new(Box::new(Cursor::new(bytes.to_vec())));
    match session.read_request().await {
        Ok(Some(len)) => {
            let body_empty = session.is_body_empty();
            let h = session.req_header();
            PingoraRequest::Accept {
                len,
                method: h.method.as_str().to_string(),
                target: h.raw_path().to_vec(),
                version: h.version,
                fields: h.headers.clone(),
                body_empty,
            }
        }
        Ok(None) => PingoraRequest::Incomplete,
        Err(_) => PingoraRequest::Refuse,
    }
}

/// Checks the fast path's reading of the first request in `bytes` against Pingora's.
pub fn request(bytes: &[u8]) -> Result<Agreement, Disagreement> {
    let disagree = |what: String| {
        Err(Disagreement(format!(
            "{what}\nrequest: {:?}",
            bytes.escape_ascii().to_string()
        )))
    };
    match request::take(bytes) {
        Take::HandOff => Ok(Agreement::HandOff),
        Take::Partial => match block_on(pingora_request(bytes)) {
            PingoraRequest::Accept { len, .. } => disagree(format!(
                "fast path waits for more, Pingora read a request of {len} bytes"
            )),
            PingoraRequest::Incomplete => Ok(Agreement::BothIncomplete),
            // httparse said Partial to both; Pingora refuses a partial head only by size.
            PingoraRequest::Refuse => Ok(Agreement::BothIncomplete),
        },
        Take::Serve { len } => {
            let mut fields = [httparse::EMPTY_HEADER; MAX_REQUEST_FIELDS];
            let Some(req) = request::parse(&bytes[..len], &mut fields) else {
                return disagree("take() served a head parse() refuses".into());
            };
            let reference = block_on(pingora_request(bytes));
            let PingoraRequest::Accept {
                len: ref_len,
                method,
                target,
                version,
                fields: ref_fields,
                body_empty,
            } = reference
            else {
                return disagree(format!("fast path serves it, Pingora: {reference:?}"));
            };
            if ref_len != len {
                return disagree(format!(
                    "head ends at {len} on the fast path, at {ref_len} in Pingora"
                ));
            }
            if !body_empty {
                return disagree("fast path serves it without a body, Pingora reads a body".into());
            }
            if Some(method.as_str()) != req.method
                || Some(target.as_slice()) != req.path.map(str::as_bytes)
            {
                return disagree(format!(
                    "request line differs: Pingora {method} {:?}",
                    target.escape_ascii().to_string()
                ));
            }
            if version != http::Version::HTTP_11 {
                return disagree(format!("version differs: Pingora {version:?}"));
            }
            if ref_fields.len() != req.headers.len() {
                return disagree(format!(
                    "{} fields on the fast path, {} in Pingora",
                    req.headers.len(),
                    ref_fields.len()
                ));
            }
            for h in req.headers.iter() {
                let ours: Vec<&[u8]> = req
                    .headers
                    .iter()
                    .filter(|o| o.name.eq_ignore_ascii_case(h.name))
                    .map(|o| o.value)
                    .collect();
                let theirs: Vec<&[u8]> = ref_fields
                    .get_all(h.name)
                    .iter()
                    .map(|v| v.as_bytes())
                    .collect();
                if ours != theirs {
                    return disagree(format!("field {} differs: {ours:?} / {theirs:?}", h.name));
                }
            }
            Ok(Agreement::BothAccept)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

/// The fast path's reading of the response in `bytes` (to a HEAD request with
/// `head_request`): `fast::Conn::exchange` and `relay` as pure functions.
pub fn fast_response(bytes: &[u8], head_request: bool) -> Reading {
    let mut at = 0;
    loop {
        match response::head(&bytes[at..], head_request) {
            Parsed::Informational { len, .. } => at += len,
            Parsed::Partial => return Reading::Incomplete,
            Parsed::Invalid => return Reading::Refuse("head".into()),
            Parsed::Final { head, .. } => {
                let start = at + head.len;
                let rest = &bytes[start..];
                let status = head.status;
                return match head.body {
                    Body::Empty => Reading::Accept {
                        status,
                        body: Vec::new(),
                        end: start,
                        until_close: false,
                    },
                    Body::Length(n) => match usize::try_from(n) {
                        Ok(n) if n <= rest.len() => Reading::Accept {
                            status,
                            body: rest[..n].to_vec(),
                            end: start + n,
                            until_close: false,
                        },
                        _ => Reading::Incomplete,
                    },
                    Body::UntilClose => Reading::Accept {
                        status,
                        body: rest.to_vec(),
                        end: bytes.len(),
                        until_close: true,
                    },
                    Body::Chunked => {
                        let mut chunks = Chunked::default();
                        let mut body = Vec::new();
                        match chunks.feed_with(rest, |d| body.extend_from_slice(d)) {
                            Ok(Some(n)) => Reading::Accept {
                                status,
                                body,
                                end: start + n,
                                until_close: false,
                            },
                            Ok(None) => Reading::Incomplete,
                            Err(_) => Reading::Refuse(format!("chunk:{}", chunks.expecting())),
                        }
                    }
                };
            }
        }
    }
}

/// Pingora's reading of the response in `bytes`, as `HttpProxy` reads an upstream's answer
/// to a GET (or a HEAD): its client session on an in-memory connection the upstream closes
/// after `bytes`.
pub fn pingora_response(bytes: &[u8], head_request: bool) -> Reading {
    block_on(pingora_response_async(bytes, head_request))
}

async fn pingora_response_async(bytes: &[u8], head_request: bool) -> Reading {
    let incomplete = |e: &pingora_error::Error| {
        let kind = e.etype().as_str();
        if matches!(kind, "ConnectionClosed" | "PrematureBodyEnd" | "ReadError") {
            Reading::Incomplete
        } else {
            Reading::Refuse(e.to_string())
        }
    };
    let (ours, mut theirs) = tokio::io::duplex(bytes.len() + 4096);
    let mut session = UpstreamSession::new(Box::new(ours));
    let method = if head_request { "HEAD" } else { "GET" };
    let Ok(req) = pingora_http::RequestHeader::build(method, b"/", None) else {
        return Reading::Refuse("request header".into());
    };
    if session.write_request_header(Box::new(req)).await.is_err()
        || theirs.write_all(bytes).await.is_err()
    {
        return Reading::Refuse("in-memory connection".into());
    }
    drop(theirs);
    let status = loop {
        if let Err(e) = session.read_response().await {
            return incomplete(&e);
        }
        let status = session.resp_header().map_or(0, |h| h.status.as_u16());
        if !(100..200).contains(&status) || status == 101 {
            break status;
        }
    };
    let mut body = Vec::new();
    loop {
        match session.read_body_bytes().await {
            Ok(Some(b)) => body.extend_from_slice(&b),
            Ok(None) => break,
            Err(e) => return incomplete(&e),
        }
    }
    Reading::Accept {
        status,
        body,
        end: 0,
        until_close: false,
    }
}

/// Checks the fast path's reading of the response in `bytes` against Pingora's.
pub fn response(bytes: &[u8], head_request: bool) -> Result<Agreement, Disagreement> {
    let fast = fast_response(bytes, head_request);
    let reference = pingora_response(bytes, head_request);
    let disagree = |what: String| {
        Err(Disagreement(format!(
            "{what}\nfast path: {fast:?}\nPingora: {reference:?}\nresponse (HEAD: {head_request}): {:?}",
            bytes.escape_ascii().to_string()
        )))
    };
    match (&fast, &reference) {
        (
            Reading::Accept {
                status,
                body,
                end,
                until_close,
            },
            Reading::Accept {
                status: s2,
                body: b2,
                ..
            },
        ) => {
            if status != s2 || body != b2 {
                return disagree("both accept, different status or body".into());
            }
            if !until_close {
                // The boundary: Pingora reads the same message from the bytes up to the fast
                // path's end, and needs every one of them.
                match pingora_response(&bytes[..*end], head_request) {
                    Reading::Accept { body: b3, .. } if &b3 == body => {}
                    other => {
                        return disagree(format!("Pingora on the first {end} bytes: {other:?}"))
                    }
                }
                if *end > 0 {
                    if let r @ Reading::Accept { .. } =
                        pingora_response(&bytes[..end - 1], head_request)
                    {
                        return disagree(format!("Pingora ends before {end}: {r:?}"));
                    }
                }
            }
            Ok(Agreement::BothAccept)
        }
        (Reading::Refuse(why), Reading::Accept { .. } | Reading::Incomplete) => {
            match deliberate(bytes, head_request, why) {
                Some(class) => Ok(Agreement::Deliberate(class)),
                None if matches!(reference, Reading::Incomplete) && why.starts_with("chunk:") => {
                    // Refused at a byte before the input ran out: as strict as Pingora would
                    // be with the rest, or stricter for a named reason; re-check the prefix.
                    disagree(format!("fast path refuses ({why}), Pingora waits for more"))
                }
                None => disagree(format!("fast path refuses ({why}), Pingora does not")),
            }
        }
        (Reading::Refuse(_), Reading::Refuse(_)) => Ok(Agreement::BothRefuse),
        (Reading::Incomplete, Reading::Incomplete) => Ok(Agreement::BothIncomplete),
        _ => disagree("different verdicts".into()),
    }
}

/// The named reason the fast path refuses a response Pingora takes, if there is one.
fn deliberate(bytes: &[u8], head_request: bool, why: &str) -> Option<Deliberate> {
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut resp = httparse::Response::new(&mut fields);
    let mut lenient = httparse::ParserConfig::default();
    lenient.allow_spaces_after_header_name_in_responses(true);
    lenient.allow_obsolete_multiline_headers_in_responses(true);
    // Past any 1xx responses, as both readers go.
    let mut at = 0;
    loop {
        let mut f = [httparse::EMPTY_HEADER; 256];
        let mut r = httparse::Response::new(&mut f);
        match lenient.parse_response(&mut r, &bytes[at..]) {
            Ok(httparse::Status::Complete(n))
                if r.code.is_some_and(|c| (100..200).contains(&c) && c != 101) =>
            {
                // An informational head only the lenient parser takes (found by the fuzzer:
                // `HTTP/1.0 102 OK\r\nContent-Lentgh :5\r\n\r\n`).
                let mut f = [httparse::EMPTY_HEADER; 256];
                if httparse::Response::new(&mut f).parse(&bytes[at..]).is_err() {
                    return Some(Deliberate::LenientHeaderSyntax);
                }
                // A length that is no length beside Transfer-Encoding (found by the fuzzer):
                // Pingora lets Transfer-Encoding win and never reads the length; the fast path
                // refuses it on any 1xx.
                let named = |n: &str| r.headers.iter().any(|h| h.name.eq_ignore_ascii_case(n));
                let bad_length = r.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("content-length")
                        && portcullis_h1::content_length(h.value).is_none()
                });
                if named("transfer-encoding") && bad_length {
                    return Some(Deliberate::TransferEncodingWithLength);
                }
                at += n
            }
            _ => break,
        }
    }
    let head = &bytes[at..];
    if why == "head" {
        let strict = resp.parse(head);
        let mut f = [httparse::EMPTY_HEADER; 256];
        let mut r = httparse::Response::new(&mut f);
        let loose = lenient.parse_response(&mut r, head);
        if strict.is_err() && loose.is_ok() {
            return Some(Deliberate::LenientHeaderSyntax);
        }
        if r.code == Some(101) {
            return Some(Deliberate::UnsolicitedSwitch);
        }
        let named = |n: &'static str| {
            r.headers
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(n))
        };
        let te = named("transfer-encoding").count() > 0;
        let cl = named("content-length").count() > 0;
        let bodyless = head_request || matches!(r.code, Some(204 | 304));
        if te && cl {
            return Some(Deliberate::TransferEncodingWithLength);
        }
        if !te && !bodyless && named("content-length").any(|h| h.value.contains(&b',')) {
            return Some(Deliberate::LengthList);
        }
        if bodyless
            && cl
            && named("content-length").any(|h| portcullis_h1::content_length(h.value).is_none())
        {
            // A bodyless response with a bad length: Pingora ignores the length (no body by
            // definition), the fast path refuses it; nginx refuses it too.
            return Some(Deliberate::LengthList);
        }
        return None;
    }
    // A chunked body the fast path refused: find the size line or trailer it refused.
    let Ok(httparse::Status::Complete(n)) = lenient.parse_response(&mut resp, head) else {
        return None;
    };
    let body = &head[n..];
    let mut chunks = Chunked::default();
    let mut refused_at = 0;
    for (i, b) in body.iter().enumerate() {
        if chunks.feed(std::slice::from_ref(b)).is_err() {
            refused_at = i;
            break;
        }
    }
    let line_start = body[..refused_at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let line = &body[line_start..=refused_at.min(body.len().saturating_sub(1))];
    match why {
        "chunk:size" | "chunk:extension" | "chunk:size-whitespace"
            if refused_at - line_start >= MAX_CHUNK_LINE as usize =>
        {
            Some(Deliberate::ChunkLineLimit)
        }
        "chunk:extension" => Some(Deliberate::ChunkExtensionByte),
        // No hex digit before the extension or the line end (`\r\n`, `;x`, ` \r\n`).
        "chunk:size"
            if !line
                .iter()
                .take_while(|b| !matches!(b, b';' | b'\r' | b'\n'))
                .any(u8::is_ascii_hexdigit) =>
        {
            Some(Deliberate::ChunkSizeWithoutDigits)
        }
        "chunk:trailers" => Some(Deliberate::TrailerSyntax),
        _ => None,
    }
}
