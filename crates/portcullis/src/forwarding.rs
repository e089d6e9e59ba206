//! What both proxy paths write the same way: the forwarding headers, the bodies of the
//! gateway's own error answers, and the response framing rules they share.

use std::net::IpAddr;

/// Hop-by-hop fields of an upstream response that are not passed on (`Connection` is
/// written anew). `Upgrade` and `Trailer` are: a 426 names the protocol to upgrade to, and a
/// chunked body passes through with its trailers.
pub const HOP_BY_HOP_RESPONSE: [&str; 3] = ["keep-alive", "proxy-connection", "te"];

/// A `Content-Length` value: ASCII digits only (RFC 9110 `1*DIGIT`), optional whitespace
/// around. `+5`, `5, 5`, `0x5` and an empty value are not lengths.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The body of an error answer with `code` (a refusal's, or an upstream failure's).
pub fn upstream_error_body(code: u16) -> &'static str {
    match code {
        502 => "502 Bad Gateway: the upstream is unavailable\n",
        504 => "504 Gateway Timeout: the upstream did not answer in time\n",
        400 => "400 Bad Request\n",
        408 => "408 Request Timeout\n",
        403 | 404 | 413 | 429 | 503 => portcullis_gate::refusal_body(code),
        _ => "error\n",
    }
}

/// Appends X-Forwarded-For's new value to `out`: every non-empty field line the request had,
/// in order, joined with `, ` (as nginx joins them since 1.23), then `peer`. Both proxy paths
/// forward the whole list the client was chosen from: forwarding only the first line would let
/// a client behind a front proxy show the upstream an address of its choosing.
pub fn push_forwarded_for<'a>(
    out: &mut Vec<u8>,
    lines: impl IntoIterator<Item = &'a [u8]>,
    peer: IpAddr,
) {
    for line in lines {
        let line = line.trim_ascii();
        if !line.is_empty() {
            out.extend_from_slice(line);
            out.extend_from_slice(b", ");
        }
    }
    push_ip(out, peer);
}

/// Appends `ip` as text; IPv4 without the formatting machinery (this runs for every request).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => out.extend_from_slice(ipv4_text(v4, &mut [0; 15]).as_bytes()),
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// `v4` in dotted form, written into `buf` without the formatting machinery (a forwarding
/// header and an access log line each need one per request).
pub fn ipv4_text(v4: std::net::Ipv4Addr, buf: &mut [u8; 15]) -> &str {
    let mut n = 0;
    let mut put = |b: u8| {
        buf[n] = b;
        n += 1;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            put(b'.');
        }
        if octet >= 100 {
            put(b'0' + octet / 100);
        }
        if octet >= 10 {
            put(b'0' + octet / 10 % 10);
        }
        put(b'0' + octet % 10);
    }
    // Only ASCII digits and dots were written.
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}
