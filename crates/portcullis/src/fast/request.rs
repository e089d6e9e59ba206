//! The request side of the fast path: which requests it takes, what the filters read from
//! them, and the header sent upstream.

use std::net::IpAddr;

use crate::access_log::RequestLine;
use crate::runtime::Runtime;
use portcullis_gate::{HeaderSize, RequestFacts};

use crate::forwarding;

/// Most header fields the fast path parses; a request with more goes to `HttpProxy`.
pub const MAX_HEADERS: usize = 64;

/// Most bytes a request header may take on the fast path; a longer one goes to `HttpProxy`,
/// which applies its own limit.
pub const MAX_HEAD: usize = 16 * 1024;

/// Whether a buffer holds a whole request header yet.
pub enum Framing {
    /// The header ends at this offset.
    Complete(usize),
    /// More bytes are needed.
    Partial,
    /// Not a request the fast path parses (bad syntax, too many fields): `HttpProxy` answers it.
    Other,
}

/// Where the request header in `buf` ends, if it is all there. A search for the blank line,
/// so a request is parsed once (in [`Simple::new`]'s caller); only a buffer without one is
/// parsed here, to tell a partial header from one with bare-LF line ends (which goes to
/// `HttpProxy`) or from junk.
pub fn framing(buf: &[u8]) -> Framing {
    if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
        return Framing::Complete(end + 4);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut headers).parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Framing::Partial,
        _ => Framing::Other,
    }
}

/// A parsed request the fast path may serve: HTTP/1.1, an origin-form target, no body, no
/// upgrade, no expectation. Anything else (HTTP/1.0, bodies, `Transfer-Encoding`, WebSocket,
/// `Expect`, absolute URIs, duplicate framing headers, CONNECT) goes to `HttpProxy`, which
/// knows all of HTTP/1.
pub struct Simple<'r, 'b> {
    /// The method, as sent.
    pub method: &'b str,
    /// The request target (path and query), as sent.
    pub target: &'b str,
    /// The header fields, in order.
    pub headers: &'r [httparse::Header<'b>],
    /// The client asked to close the connection after this request.
    pub close: bool,
    /// The Host field.
    pub host: Option<&'b [u8]>,
    /// The User-Agent field (the first, as HttpProxy's lookup finds it).
    pub user_agent: Option<&'b [u8]>,
}

impl<'r, 'b> Simple<'r, 'b> {
    /// `req` as a request the fast path serves, or `None`.
    pub fn new(req: &'r httparse::Request<'_, 'b>) -> Option<Self> {
        let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
            return None;
        };
        let headers: &'r [httparse::Header<'b>] = req.headers;
        if method == "CONNECT" || !target.starts_with('/') || !target.bytes().all(target_byte) {
            return None;
        }
        let mut close = false;
        let mut host = None;
        let mut user_agent = None;
        let mut hosts = 0;
        let mut lengths = 0;
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                if h.value != b"0" {
                    return None;
                }
            } else if name.eq_ignore_ascii_case("host") {
                hosts += 1;
                host = Some(h.value);
            } else if name.eq_ignore_ascii_case("user-agent") {
                user_agent = user_agent.or(Some(h.value));
            } else if name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return None;
                    }
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("upgrade")
                || name.eq_ignore_ascii_case("expect")
            {
                return None;
            }
        }
        if hosts > 1 || lengths > 1 {
            return None;
        }
        Some(Simple {
            method,
            target,
            headers,
            close,
            host,
            user_agent,
        })
    }

    /// What the filters read from this request from `peer`.
    pub fn facts(&self, rt: &Runtime, peer: IpAddr) -> RequestFacts<'b> {
        let forwarded = rt.client_ip.header().name();
        let values = self
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(forwarded))
            .map(|h| h.value);
        RequestFacts {
            peer,
            client: rt.client_ip.address(peer, values),
            host: self.host.and_then(|h| std::str::from_utf8(h).ok()),
            method: self.method,
            path: self.target.split('?').next().unwrap_or(self.target),
            raw_path: self.target.as_bytes(),
            user_agent: self.user_agent,
            declared_body: 0,
            // Upgrades go to HttpProxy (`Simple::new`).
            upgrade: false,
            header: HeaderSize::of(
                // "METHOD target HTTP/1.1"
                self.method.len() + 1 + self.target.len() + 9,
                self.headers.iter().map(|h| (h.name.len(), h.value.len())),
            ),
        }
    }

    /// Writes the header for the upstream into `out`: the request as sent, hop-by-hop fields
    /// dropped, and nginx's `proxy_params` (X-Real-IP the client, X-Forwarded-For with the TCP
    /// peer appended, X-Forwarded-Proto) as the `HttpProxy` path sends them.
    ///
    /// Fields named in `Connection` are hop-by-hop too (RFC 9110 7.6.1), and fields whose name
    /// holds an underscore are dropped unless `underscores` (nginx's `underscores_in_headers`):
    /// `X_Forwarded_For` is the same field as `X-Forwarded-For` to a CGI-style backend.
    pub fn upstream_header(
        &self,
        client: IpAddr,
        peer: IpAddr,
        underscores: bool,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        let named: smallvec::SmallVec<[&[u8]; 4]> = self
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .collect();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for h in self.headers {
            let name = h.name;
            if HOP_BY_HOP.iter().any(|n| name.eq_ignore_ascii_case(n))
                || named
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
                || !forwarding::passes(name, underscores)
            {
                continue;
            }
            push_field(out, name, h.value);
        }
        let lines = self
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|h| h.value);
        let mut value = Vec::with_capacity(64);
        forwarding::set_fields(client, peer, lines, false, &mut value, |name, value| {
            push_field(out, name, value)
        });
        out.extend_from_slice(b"\r\n");
    }

    /// What the access log writes of this request.
    pub fn log_line(&self) -> RequestLine<'b> {
        // Visible ASCII only, as `HeaderValue::to_str` lets through on the HttpProxy path.
        let text = |v: Option<&'b [u8]>| {
            v.filter(|v| v.iter().all(|&b| b == b'\t' || (32..127).contains(&b)))
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        let referer = self
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("referer"))
            .map(|h| h.value);
        RequestLine {
            method: self.method,
            target: self.target,
            version: "HTTP/1.1",
            referer: text(referer),
            user_agent: text(self.user_agent),
        }
    }
}

/// Hop-by-hop fields: they describe one connection, and are not passed on.
pub const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Bytes a request target may hold on the fast path: visible ASCII except those the `http`
/// crate's URI parser refuses, so both paths see the same targets.
fn target_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7e)
        && !matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'#'
        )
}

/// Appends the field line `name: value`.
fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Option<(String, bool)> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(raw.as_bytes()).ok()?;
        Simple::new(&req).map(|s| (s.target.to_string(), s.close))
    }

    #[test]
    fn only_plain_requests_without_a_body_are_simple() {
        let get = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(parse(get), Some(("/a?b=1".into(), false)));
        let close = "GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n";
        assert_eq!(parse(close), Some(("/".into(), true)));
        let empty_post = "POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert!(parse(empty_post).is_some());
        for other in [
            "GET / HTTP/1.0\r\n\r\n",
            "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "POST /a HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "PUT /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://x/a HTTP/1.1\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\n\r\n",
            "GET /a|b HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert_eq!(parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn framing_hands_over_what_it_cannot_parse() {
        assert!(matches!(
            framing(b"GET / HTTP/1.1\r\n\r\n"),
            Framing::Complete(18)
        ));
        assert!(matches!(framing(b"GET / HTTP/1.1\r\nHo"), Framing::Partial));
        assert!(matches!(framing(b"\x16\x03\x01\x02\x00"), Framing::Other));
        assert!(matches!(
            framing(b"GET / HTTP/1.1\nHost: x\n\n"),
            Framing::Other
        ));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(framing(long.as_bytes()), Framing::Other));
    }
}
