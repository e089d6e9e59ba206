//! The request heads the fast path serves itself. Everything else (bodies, upgrades,
//! HTTP/1.0, bad syntax, more than [`MAX_REQUEST_FIELDS`] fields) goes to `HttpProxy` with
//! the bytes already read, so the fast path only has to agree with Pingora on the requests it
//! takes: that they are requests, end where Pingora says, and carry no body.

use crate::limits::{MAX_REQUEST_FIELDS, MAX_REQUEST_HEAD};

/// Whether a buffer holds a whole request header yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The header ends at this offset.
    Complete(usize),
    /// More bytes are needed.
    Partial,
    /// Not a request the fast path parses (bad syntax, too many fields): `HttpProxy` answers it.
    Other,
}

/// Where the request header in `buf` ends, if it is all there. A search for the blank line,
/// so a request is parsed once (by [`plain`]'s caller); only a buffer without one is parsed
/// here, to tell a partial header from one with bare-LF line ends (which goes to `HttpProxy`)
/// or from junk.
pub fn framing(buf: &[u8]) -> Framing {
    if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
        return Framing::Complete(end + 4);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_FIELDS];
    match httparse::Request::new(&mut headers).parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_HEAD => Framing::Partial,
        _ => Framing::Other,
    }
}

/// Whether `head` (the bytes up to the blank line [`framing`] found) parses as one request
/// header ending exactly there; a parse that ends elsewhere (bare-LF line ends) is for
/// `HttpProxy`.
pub fn parse<'h, 'b>(
    head: &'b [u8],
    fields: &'h mut [httparse::Header<'b>],
) -> Option<httparse::Request<'h, 'b>> {
    let mut req = httparse::Request::new(fields);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => Some(req),
        _ => None,
    }
}

/// What the fast path reads of a request it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plain<'b> {
    /// The client asked to close the connection after this request.
    pub close: bool,
    /// The Host field.
    pub host: Option<&'b [u8]>,
    /// The User-Agent field (the first, as HttpProxy's lookup finds it).
    pub user_agent: Option<&'b [u8]>,
}

/// `req` as a request the fast path serves: HTTP/1.1, an origin-form target, no body, no
/// upgrade, no expectation, one Host without userinfo. Anything else (HTTP/1.0, bodies,
/// `Transfer-Encoding`, WebSocket, `Expect`, absolute URIs, duplicate framing headers,
/// CONNECT) is `None`: `HttpProxy` knows all of HTTP/1.
pub fn plain<'b>(req: &httparse::Request<'_, 'b>) -> Option<Plain<'b>> {
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return None;
    };
    if method == "CONNECT" || !target.starts_with('/') || !target.bytes().all(target_byte) {
        return None;
    }
    let mut close = false;
    let mut host = None;
    let mut user_agent = None;
    let mut hosts = 0;
    let mut lengths = 0;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            if crate::content_length(h.value) != Some(0) {
                return None;
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            // Userinfo in Host is refused by Pingora (400): the same answer on both paths.
            if h.value.contains(&b'@') {
                return None;
            }
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
    Some(Plain {
        close,
        host,
        user_agent,
    })
}

/// What the fast path does with the bytes a client sent first: the composition of
/// [`framing`], [`parse`] and [`plain`] as `fast::Conn` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// It serves the request whose header is the first `len` bytes.
    Serve {
        /// Bytes of the header; the request has no body, so the next request starts here.
        len: usize,
    },
    /// It waits for more bytes.
    Partial,
    /// `HttpProxy` takes the connection with these bytes.
    HandOff,
}

/// [`Take`] for `buf`.
pub fn take(buf: &[u8]) -> Take {
    let len = match framing(buf) {
        Framing::Complete(len) => len,
        Framing::Partial => return Take::Partial,
        Framing::Other => return Take::HandOff,
    };
    let mut fields = [httparse::EMPTY_HEADER; MAX_REQUEST_FIELDS];
    match parse(&buf[..len], &mut fields).as_ref().and_then(plain) {
        Some(_) => Take::Serve { len },
        None => Take::HandOff,
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
pub fn target_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7e)
        && !matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'#'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(raw: &str) -> Option<(bool, Option<String>)> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_REQUEST_FIELDS];
        let req = parse(raw.as_bytes(), &mut fields)?;
        let p = plain(&req)?;
        Some((
            p.close,
            p.host.map(|h| String::from_utf8_lossy(h).into_owned()),
        ))
    }

    #[test]
    fn only_plain_requests_without_a_body_are_served() {
        assert_eq!(
            served("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some((false, Some("x".into())))
        );
        let close = "GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n";
        assert_eq!(served(close), Some((true, None)));
        assert!(served("POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some());
        for other in [
            "GET / HTTP/1.0\r\n\r\n",
            "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            "POST /a HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "PUT /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://x/a HTTP/1.1\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\n\r\n",
            "GET /a|b HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            // Pingora refuses userinfo in Host with a 400; the fast path hands it over.
            "GET / HTTP/1.1\r\nHost: a@evil\r\n\r\n",
        ] {
            assert_eq!(served(other), None, "{other:?}");
        }
        // `Content-Length: 00` is zero to Pingora as well: no body either way.
        assert!(served("POST /a HTTP/1.1\r\nContent-Length: 00\r\n\r\n").is_some());
    }

    #[test]
    fn framing_hands_over_what_it_cannot_parse() {
        assert_eq!(framing(b"GET / HTTP/1.1\r\n\r\n"), Framing::Complete(18));
        assert_eq!(framing(b"GET / HTTP/1.1\r\nHo"), Framing::Partial);
        assert_eq!(framing(b"\x16\x03\x01\x02\x00"), Framing::Other);
        assert_eq!(framing(b"GET / HTTP/1.1\nHost: x\n\n"), Framing::Other);
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_REQUEST_HEAD));
        assert_eq!(framing(long.as_bytes()), Framing::Other);
        // A bare-LF header that a later CRLFCRLF closes is not served: it ends elsewhere.
        assert_eq!(
            take(b"GET / HTTP/1.1\nA: b\n\nGET /x HTTP/1.1\r\n\r\n"),
            Take::HandOff
        );
        assert_eq!(
            take(b"GET / HTTP/1.1\r\n\r\nGET /x"),
            Take::Serve { len: 18 }
        );
    }
}
