//! What the walk reads from a request, whichever proxy path parsed it.

use std::net::IpAddr;

/// What the filters read from a request, whichever proxy parsed it.
pub struct RequestFacts<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// The client the peer speaks for (`[client_ip]`).
    pub client: IpAddr,
    /// The Host header (or the authority of an absolute URI), port included.
    pub host: Option<&'a str>,
    /// The method, as sent.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The request target as sent (path and query), for the probe matcher.
    pub raw_path: &'a [u8],
    /// The User-Agent header.
    pub user_agent: Option<&'a [u8]>,
    /// The body length the request declares (`Content-Length`); 0 when it declares none.
    pub declared_body: u64,
    /// The request asks to upgrade the connection (WebSocket).
    pub upgrade: bool,
    /// Sizes of the request header, for `large_client_header_buffers`.
    pub header: HeaderSize,
}

/// How large a request header is, as nginx measures it against `large_client_header_buffers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderSize {
    /// Bytes of the request line.
    pub request_line: usize,
    /// Bytes of the longest header field line.
    pub longest_field: usize,
    /// Bytes of the whole header.
    pub total: usize,
}

impl HeaderSize {
    /// Measures a header from its request line's length and its fields (name, value).
    pub fn of(request_line: usize, fields: impl Iterator<Item = (usize, usize)>) -> Self {
        let mut size = HeaderSize {
            request_line,
            longest_field: 0,
            total: request_line + 2,
        };
        for (name, value) in fields {
            // "name: value\r\n"
            let line = name + 2 + value;
            size.longest_field = size.longest_field.max(line);
            size.total += line + 2;
        }
        size.total += 2;
        size
    }
}
