//! An upstream response header as the fast path reads it: its status, and where its body
//! ends. Strict where a relayed response would otherwise be read differently by the client:
//! `Content-Length` digits only, `Transfer-Encoding` and `Content-Length` together refused (as
//! nginx refuses them), a status below 100 refused.

use crate::limits::MAX_RESPONSE_FIELDS;

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body (HEAD, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding ([`crate::chunked::Chunked`]).
    Chunked,
    /// The body ends when the upstream closes the connection.
    UntilClose,
}

/// What the fast path reads of a final response's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Bytes the header took in the buffer.
    pub len: usize,
    /// How the body ends.
    pub body: Body,
    /// The upstream connection may carry another request once this body is read.
    pub reusable: bool,
}

/// The result of reading an upstream response header.
#[derive(Debug)]
pub enum Parsed<'h, 'b> {
    /// A final response, with the fields and reason phrase it came with.
    Final {
        /// Status, length, framing.
        head: Head,
        /// The reason phrase.
        reason: &'b str,
        /// The header fields, in order.
        fields: &'h [httparse::Header<'b>],
    },
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
/// with `head_request`), with room for `fields.len()` fields ([`MAX_RESPONSE_FIELDS`] is
/// Pingora's).
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    head_request: bool,
    fields: &'h mut [httparse::Header<'b>],
) -> Parsed<'h, 'b> {
    let mut resp = httparse::Response::new(fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Parsed::Invalid;
    };
    let reason = resp.reason.unwrap_or("");
    let fields: &'h [httparse::Header<'b>] = resp.headers;
    match status {
        // Found by the differential test: `HTTP/1.1 000` parses, Pingora refuses it (no
        // status code), and the fast path wrote it to the client as `100`.
        0..=99 => return Parsed::Invalid,
        101 => return Parsed::Invalid,
        // Found by the fuzzer: an informational response with a Content-Length that is no
        // length (`Content-Length: Link: </a>`) was relayed; Pingora refuses it. Content-Length
        // means nothing on a 1xx (RFC 9110 8.6), but an invalid one says the upstream is broken:
        // 502 on both paths.
        100..=199 => {
            let bad_length = fields.iter().any(|f| {
                f.name.eq_ignore_ascii_case("content-length")
                    && crate::content_length(f.value).is_none()
            });
            if bad_length {
                return Parsed::Invalid;
            }
            return Parsed::Informational {
                len,
                forward: status != 100,
            };
        }
        _ => {}
    }
    match framing(fields, status, head_request, version) {
        Some((body, reusable)) => Parsed::Final {
            head: Head {
                status,
                len,
                body,
                reusable,
            },
            reason,
            fields,
        },
        None => Parsed::Invalid,
    }
}

/// [`parse`] with Pingora's field limit, for callers that need only the [`Head`].
pub fn head(buf: &[u8], head_request: bool) -> Parsed<'static, 'static> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_RESPONSE_FIELDS];
    match parse(buf, head_request, &mut fields) {
        Parsed::Final { head, .. } => Parsed::Final {
            head,
            reason: "",
            fields: &[],
        },
        Parsed::Informational { len, forward } => Parsed::Informational { len, forward },
        Parsed::Partial => Parsed::Partial,
        Parsed::Invalid => Parsed::Invalid,
    }
}

/// How a final response's body ends and whether its connection can be reused, or `None`
/// when its framing is invalid (RFC 9112 6.3).
fn framing(
    fields: &[httparse::Header<'_>],
    status: u16,
    head_request: bool,
    version: u8,
) -> Option<(Body, bool)> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut reusable = version == 1;
    for h in fields {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = crate::content_length(h.value)?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a final `chunked` coding frames the body; anything else reads to the close.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            reusable = false;
        }
    }
    // Both framings at once is how responses are smuggled past a proxy: refused (502), as
    // nginx refuses it, rather than relayed with both for the client to choose from.
    if chunked.is_some() && length.is_some() {
        return None;
    }
    let body = if head_request || status == 204 || status == 304 {
        Body::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Body::Chunked,
            (Some(false), _) => Body::UntilClose,
            (None, Some(n)) => Body::Length(n),
            (None, None) => Body::UntilClose,
        }
    };
    if body == Body::UntilClose {
        reusable = false;
    }
    Some((body, reusable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_head(raw: &str, head_request: bool) -> Head {
        match head(raw.as_bytes(), head_request) {
            Parsed::Final { head, .. } => head,
            other => panic!("not a final response: {raw:?}: {other:?}"),
        }
    }

    #[test]
    fn the_body_ends_where_the_upstream_says() {
        let fixed = final_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false);
        assert_eq!((fixed.body, fixed.reusable), (Body::Length(5), true));
        let chunked = final_head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!((chunked.body, chunked.reusable), (Body::Chunked, true));
        let close = final_head("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((close.body, close.reusable), (Body::UntilClose, false));
        let old = final_head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert!(!old.reusable);
        let closing = final_head(
            "HTTP/1.1 404 No\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!((closing.status, closing.reusable), (404, false));
        for empty in [
            final_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            final_head("HTTP/1.1 204 No Content\r\n\r\n", false),
            final_head(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                false,
            ),
        ] {
            assert_eq!((empty.body, empty.reusable), (Body::Empty, true));
        }
        assert!(matches!(
            head(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200",
                false
            ),
            Parsed::Informational {
                len: 40,
                forward: true
            }
        ));
    }

    #[test]
    fn ambiguous_or_malformed_framing_is_invalid() {
        for invalid in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                matches!(head(invalid.as_bytes(), false), Parsed::Invalid),
                "{invalid:?}"
            );
        }
    }
}
