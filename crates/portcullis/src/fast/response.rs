//! The response side of the fast path: reading the upstream's header, finding where its body
//! ends, and writing what the client gets.

use portcullis_gate::Field;

use crate::forwarding::HOP_BY_HOP_RESPONSE;

pub use portcullis_h1::chunked::Chunked;
use portcullis_h1::limits::MAX_RESPONSE_FIELDS;
pub use portcullis_h1::limits::MAX_RESPONSE_HEAD as MAX_HEADER_BYTES;
pub use portcullis_h1::response::{Body, Head};

/// The result of reading an upstream response header.
pub enum Parsed {
    /// A final response.
    Head(Head),
    /// An informational (1xx) response of `len` bytes: `103 Early Hints` and the like are
    /// passed on as HttpProxy does; a `100 Continue` nobody asked for (`Expect` is never on the
    /// fast path) is not.
    Informational {
        /// Bytes it took.
        len: usize,
        /// Pass it on to the client.
        forward: bool,
    },
    /// More bytes are needed.
    Partial,
    /// Not a valid response (or a `101` nobody asked for): a 502.
    Invalid,
}

/// Parses the upstream response header at the start of `buf` (the answer to a HEAD request
/// with `head_request`). For a final response, also writes the header the client gets into
/// `out` ([`client_header`]), announcing `keep_alive`.
pub fn parse(buf: &[u8], head_request: bool, keep_alive: bool, out: &mut Vec<u8>) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_RESPONSE_FIELDS];
    match portcullis_h1::response::parse(buf, head_request, &mut fields) {
        portcullis_h1::response::Parsed::Final {
            head,
            reason,
            fields,
        } => {
            out.clear();
            client_header(head.status, reason, fields, keep_alive, head.body, out);
            Parsed::Head(head)
        }
        portcullis_h1::response::Parsed::Informational { len, forward } => {
            Parsed::Informational { len, forward }
        }
        portcullis_h1::response::Parsed::Partial => Parsed::Partial,
        portcullis_h1::response::Parsed::Invalid => Parsed::Invalid,
    }
}

/// Writes the header the client gets for an upstream response into `out`: the status line
/// as HTTP/1.1, the upstream's fields minus hop-by-hop ones and `Date`, then `Date` and
/// `Connection` as Pingora's `HttpProxy` writes them. A body that ends with the upstream's
/// close is sent chunked ([`push_chunk`]), as `HttpProxy` sends it, so the client's connection
/// stays usable.
fn client_header(
    status: u16,
    reason: &str,
    headers: &[httparse::Header<'_>],
    keep_alive: bool,
    body: Body,
    out: &mut Vec<u8>,
) {
    let rechunk = body == Body::UntilClose;
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, status);
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        let name = h.name;
        if HOP_BY_HOP_RESPONSE
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
            || name.eq_ignore_ascii_case("connection")
            || name.eq_ignore_ascii_case("date")
            || (rechunk && name.eq_ignore_ascii_case("transfer-encoding"))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if rechunk {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    end_header(out, keep_alive);
}

/// Appends `data` as one chunk of a chunked body (nothing for no data: an empty chunk ends
/// the body).
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = data.len();
    while n > 0 {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n % 16];
        n /= 16;
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// `Date` and `Connection`, and the empty line.
fn end_header(out: &mut Vec<u8>, keep_alive: bool) {
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(pingora::protocols::http::date::get_cached_date().as_bytes());
    out.extend_from_slice(if keep_alive {
        b"\r\nconnection: keep-alive\r\n\r\n"
    } else {
        b"\r\nconnection: close\r\n\r\n"
    });
}

fn push_status(out: &mut Vec<u8>, status: u16) {
    let status = status.clamp(100, 999);
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
}

/// Writes a short plain-text response the gateway makes itself (a refusal, a 502) into `out`,
/// with the fields `Gateway::refuse` writes on the `HttpProxy` path.
pub fn own(status: u16, body: &str, field: Option<Field>, keep_alive: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, status);
    out.push(b' ');
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(
        b"\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\ncontent-length: ",
    );
    push_number(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    match field {
        Some(Field::RetryAfter(secs)) => {
            out.extend_from_slice(b"retry-after: ");
            push_number(out, secs);
            out.extend_from_slice(b"\r\n");
        }
        Some(Field::Allow(methods)) => {
            out.extend_from_slice(b"allow: ");
            out.extend_from_slice(methods.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => {}
    }
    end_header(out, keep_alive);
    out.extend_from_slice(body.as_bytes());
}

fn push_number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_answers_carry_what_the_proxy_path_writes() {
        let mut out = Vec::new();
        own(
            429,
            "429 Too Many Requests\n",
            Some(Field::RetryAfter(3)),
            false,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{text}"
        );
        for field in [
            "content-length: 22\r\n",
            "retry-after: 3\r\n",
            "connection: close\r\n",
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
        assert!(text.ends_with("\r\n\r\n429 Too Many Requests\n"));
    }
}
