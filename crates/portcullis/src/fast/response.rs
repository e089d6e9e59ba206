//! The response side of the fast path: reading the upstream's header, finding where its body
//! ends, and writing what the client gets.

use portcullis_gate::Field;

use crate::forwarding::{content_length, HOP_BY_HOP_RESPONSE};

/// Most header fields an upstream response may have: Pingora's limit (`MAX_HEADERS` of its
/// HTTP/1 code), so a response is refused or relayed alike on both proxy paths.
const MAX_HEADERS: usize = 256;

/// Most bytes an upstream response header may take: Pingora's `MAX_HEADER_SIZE`.
pub const MAX_HEADER_BYTES: usize = 1_048_575;

/// Most bytes of one chunk-size line, extensions included (hyper allows 16 KiB of extensions
/// per body; no upstream needs more than a few bytes).
const MAX_CHUNK_LINE: u32 = 4096;

/// Most bytes of a chunked body's trailer section.
const MAX_TRAILERS: u32 = 16 * 1024;

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body (HEAD, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding, passed on as it is.
    Chunked,
    /// The body ends when the upstream closes the connection.
    UntilClose,
}

/// An upstream response header, as the fast path passes it on.
#[derive(Debug)]
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
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let Some(status) = resp.code else {
        return Parsed::Invalid;
    };
    match status {
        101 => return Parsed::Invalid,
        100..=199 => {
            return Parsed::Informational {
                len,
                forward: status != 100,
            }
        }
        _ => {}
    }
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut reusable = resp.version == Some(1);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = content_length(h.value) else {
                return Parsed::Invalid;
            };
            if length.is_some_and(|l| l != n) {
                return Parsed::Invalid;
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
        return Parsed::Invalid;
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
    out.clear();
    let reason = resp.reason.unwrap_or("");
    client_header(status, reason, resp.headers, keep_alive, body, out);
    Parsed::Head(Head {
        status,
        len,
        body,
        reusable,
    })
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

/// Finds the end of a chunked body passed through unchanged, fed as it arrives. The grammar is
/// RFC 9112's, strictly: every line ends in CRLF (a bare LF is how one request or response is
/// read as two by different parsers), extensions hold visible characters only, a size line is
/// at most `MAX_CHUNK_LINE` bytes and the trailers at most `MAX_TRAILERS`.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    /// Bytes left of the current chunk (or the size being read).
    size: u64,
    /// Hex digits read of the current size.
    digits: u8,
    /// Bytes of the current size line, or of the trailer section.
    line: u32,
    /// Content bytes seen so far (chunk data, without the framing).
    content: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// A chunked body that does not follow the grammar.
#[derive(Debug, PartialEq, Eq)]
pub struct BadChunk;

impl Chunked {
    /// Feeds the next bytes of the body. `Some(n)`: the body ended after the first `n` of them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() {
            if self.state == Data {
                let take = self.size.min((bytes.len() - i) as u64);
                self.size -= take;
                self.content += take;
                i += take as usize;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            if matches!(self.state, Size | Extension | SizeLf) {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(BadChunk);
                }
            }
            if matches!(self.state, TrailerStart | Trailer | TrailerLf | EndLf) {
                self.line += 1;
                if self.line > MAX_TRAILERS {
                    return Err(BadChunk);
                }
            }
            self.state = match (self.state, b) {
                (Size, b) if b.is_ascii_hexdigit() => {
                    self.digits += 1;
                    if self.digits > 15 {
                        return Err(BadChunk);
                    }
                    self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                    Size
                }
                (Size, b';' | b' ' | b'\t') if self.digits > 0 => Extension,
                (Size, b'\r') if self.digits > 0 => SizeLf,
                (Extension, b'\r') => SizeLf,
                (Extension, b'\t' | b' '..=b'~' | 0x80..=0xff) => Extension,
                (SizeLf, b'\n') => self.after_size(),
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Size,
                (TrailerStart, b'\r') => EndLf,
                (EndLf, b'\n') => Done,
                (Trailer, b'\r') => TrailerLf,
                (TrailerStart | Trailer, b'\t' | b' '..=b'~' | 0x80..=0xff) => Trailer,
                (TrailerLf, b'\n') => TrailerStart,
                _ => return Err(BadChunk),
            };
            if self.state == Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Content bytes fed so far: what the access log counts as body, as HttpProxy does.
    pub fn content(&self) -> u64 {
        self.content
    }

    fn after_size(&mut self) -> ChunkState {
        self.digits = 0;
        self.line = 0;
        if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_request: bool) -> Head {
        match parse(raw.as_bytes(), head_request, true, &mut Vec::new()) {
            Parsed::Head(h) => h,
            _ => panic!("not a final response: {raw:?}"),
        }
    }

    #[test]
    fn the_body_ends_where_the_upstream_says() {
        let fixed = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false);
        assert_eq!((fixed.body, fixed.reusable), (Body::Length(5), true));
        let chunked = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!((chunked.body, chunked.reusable), (Body::Chunked, true));
        let close = head("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((close.body, close.reusable), (Body::UntilClose, false));
        let old = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert!(!old.reusable);
        let closing = head(
            "HTTP/1.1 404 No\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!((closing.status, closing.reusable), (404, false));
        for empty in [
            head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            head("HTTP/1.1 204 No Content\r\n\r\n", false),
            head(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                false,
            ),
        ] {
            assert_eq!((empty.body, empty.reusable), (Body::Empty, true));
        }
        assert!(matches!(
            parse(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200",
                false,
                true,
                &mut Vec::new()
            ),
            Parsed::Informational {
                len: 40,
                forward: true
            }
        ));
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
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse(invalid.as_bytes(), false, true, &mut Vec::new()),
                    Parsed::Invalid
                ),
                "{invalid:?}"
            );
        }
    }

    #[test]
    fn chunked_bodies_end_after_the_last_chunk_and_trailers() {
        let body = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        // Whole, and split at every byte: the same end, just before NEXT.
        let mut whole = Chunked::default();
        assert_eq!(whole.feed(body), Ok(Some(body.len() - 4)));
        assert_eq!(whole.content(), 15);
        for split in 1..body.len() - 4 {
            let mut parts = Chunked::default();
            assert_eq!(parts.feed(&body[..split]), Ok(None), "split at {split}");
            assert_eq!(parts.feed(&body[split..]), Ok(Some(body.len() - 4 - split)));
        }
        let mut bare = Chunked::default();
        assert_eq!(bare.feed(b"0\r\n\r\n"), Ok(Some(5)));
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX",
            b"fffffffffffffffff\r\n",
            // Bare LF anywhere: after the size, the data, the extension, the trailers.
            b"5\nhello\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5;a\nhello\r\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\n\n",
            // A control byte in an extension or a trailer; a CR alone.
            b"5;a\x00b\r\n",
            b"0\r\nX: \x01\r\n\r\n",
            b"5\rhello",
        ] {
            assert_eq!(Chunked::default().feed(bad), Err(BadChunk), "{bad:?}");
        }
        // A 100 KB chunk extension and 100 KB of trailers are cut at their limits.
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'x', 100_000));
        assert_eq!(Chunked::default().feed(&long), Err(BadChunk));
        let mut trailers = b"0\r\n".to_vec();
        for i in 0..10_000 {
            trailers.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        assert_eq!(Chunked::default().feed(&trailers), Err(BadChunk));
        // Within the limits, fed a byte at a time.
        let mut fine = b"5;".to_vec();
        fine.extend(std::iter::repeat_n(b'e', 4000));
        fine.extend_from_slice(b"\r\nhello\r\n0\r\nx: 1\r\n\r\n");
        let mut chunks = Chunked::default();
        let ends: Vec<_> = fine.iter().map(|b| chunks.feed(&[*b])).collect();
        assert_eq!(ends.last(), Some(&Ok(Some(1))));
        assert!(ends[..ends.len() - 1].iter().all(|e| *e == Ok(None)));
    }

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
