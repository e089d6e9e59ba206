//! What both proxy paths write the same way: the forwarding headers, the bodies of the
//! gateway's own error answers, and the response framing rules they share.

use std::net::IpAddr;

/// Hop-by-hop fields of an upstream response that are not passed on (`Connection` is
/// written anew). `Upgrade` and `Trailer` are: a 426 names the protocol to upgrade to, and a
/// chunked body passes through with its trailers.
pub const HOP_BY_HOP_RESPONSE: [&str; 3] = ["keep-alive", "proxy-connection", "te"];

/// A `Content-Length` value: digits only (`portcullis_h1::content_length`), one rule for
/// requests and responses on both paths.
pub use portcullis_h1::content_length;

/// Fields of the client's request the gateway replaces toward the upstream, as nginx's
/// `proxy_params` sets them.
pub const SET_BY_GATEWAY: [&str; 3] = ["x-real-ip", "x-forwarded-for", "x-forwarded-proto"];

/// Whether the client's field `name` goes on to the upstream as it came: not one the gateway
/// sets, and not named with `_` unless `underscores` (nginx's `underscores_in_headers`): a
/// CGI or WSGI backend reads `X_Forwarded_For` as `X-Forwarded-For`.
pub fn passes(name: &str, underscores: bool) -> bool {
    (underscores || !name.contains('_'))
        && !SET_BY_GATEWAY.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Gives `field` each field the gateway sets, in order: X-Real-IP the client, X-Forwarded-For
/// every line the request had joined with the TCP peer appended, X-Forwarded-Proto the
/// scheme the client used. `buf` holds the values.
pub fn set_fields<'a>(
    client: IpAddr,
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    tls: bool,
    buf: &mut Vec<u8>,
    mut field: impl FnMut(&'static str, &[u8]),
) {
    buf.clear();
    push_ip(buf, client);
    field("x-real-ip", buf);
    buf.clear();
    push_forwarded_for(buf, forwarded_for, peer);
    field("x-forwarded-for", buf);
    field(
        "x-forwarded-proto",
        if tls { b"https".as_slice() } else { b"http" },
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_ip_writes_what_display_writes() {
        let addrs = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.9.100",
            "192.168.1.99",
            "1.20.100.7",
            "::1",
            "2001:db8::ff00:42:8329",
            "::ffff:192.0.2.1",
        ];
        for text in addrs {
            let ip: IpAddr = text.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
        for n in (0..=u32::MAX).step_by(7_919_993) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(n));
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
        let peer = "127.0.0.1".parse().unwrap();
        let list = |lines: &[&[u8]]| {
            let mut out = Vec::new();
            push_forwarded_for(&mut out, lines.iter().copied(), peer);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(list(&[b"203.0.113.50"]), "203.0.113.50, 127.0.0.1");
        let lines: [&[u8]; 3] = [b"6.6.6.6 ", b"", b"7.7.7.7, 8.8.8.8"];
        assert_eq!(list(&lines), "6.6.6.6, 7.7.7.7, 8.8.8.8, 127.0.0.1");
        assert_eq!(list(&[]), "127.0.0.1");
    }

    #[test]
    fn the_gateway_sets_its_fields_and_passes_the_rest() {
        assert!(passes("accept", false));
        assert!(!passes("X_Forwarded_For", false));
        assert!(passes("x_custom", true));
        assert!(!passes("X-Forwarded-For", true));
        let mut fields = Vec::new();
        let client = "203.0.113.9".parse().unwrap();
        let peer = "10.0.0.2".parse().unwrap();
        let lines: [&[u8]; 2] = [b"198.51.100.1", b"203.0.113.9"];
        set_fields(client, peer, lines, true, &mut Vec::new(), |n, v| {
            fields.push(format!("{n}: {}", String::from_utf8_lossy(v)))
        });
        assert_eq!(
            fields,
            [
                "x-real-ip: 203.0.113.9",
                "x-forwarded-for: 198.51.100.1, 203.0.113.9, 10.0.0.2",
                "x-forwarded-proto: https"
            ]
        );
    }
}
