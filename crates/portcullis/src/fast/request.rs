//! The request side of the fast path: which requests it takes, what the filters read from
//! them, and the header sent upstream.

use std::net::IpAddr;

use crate::access_log::RequestLine;
use crate::runtime::Runtime;
use portcullis_gate::{HeaderSize, RequestFacts};

use crate::forwarding;

pub use portcullis_h1::limits::MAX_REQUEST_FIELDS as MAX_HEADERS;
pub use portcullis_h1::request::{framing, Framing, HOP_BY_HOP};

/// A parsed request the fast path serves, as `portcullis_h1::request::plain` decides: HTTP/1.1,
/// an origin-form target, no body, no upgrade, no expectation. Anything else goes to
/// `HttpProxy`, which knows all of HTTP/1.
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
        let plain = portcullis_h1::request::plain(req)?;
        let (Some(method), Some(target)) = (req.method, req.path) else {
            return None;
        };
        Some(Simple {
            method,
            target,
            headers: req.headers,
            close: plain.close,
            host: plain.host,
            user_agent: plain.user_agent,
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

/// Appends the field line `name: value`.
fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
