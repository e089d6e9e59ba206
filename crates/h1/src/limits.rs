//! The size limits of the fast path's HTTP/1 parsing, each with the reason for its value.

/// Most header fields of a request the fast path serves itself; a request with more goes to
/// `HttpProxy` (Pingora allows 256), which applies its own limit. 64 covers browsers and API
/// clients with room to spare, and keeps the parse's field array on the stack small.
pub const MAX_REQUEST_FIELDS: usize = 64;

/// Most bytes of a request header the fast path serves itself; a longer one goes to
/// `HttpProxy`, which applies `large_client_header_buffers`-style limits of its own.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Most header fields of an upstream response: Pingora's `MAX_HEADERS` of its HTTP/1 code,
/// so a response is refused or relayed alike on both proxy paths.
pub const MAX_RESPONSE_FIELDS: usize = 256;

/// Most bytes of an upstream response header: Pingora's `MAX_HEADER_SIZE`, for the same
/// reason.
pub const MAX_RESPONSE_HEAD: usize = 1_048_575;

/// Most bytes of one chunk-size line, extensions included. No upstream needs more than a few
/// bytes (no extension is registered that carries data); hyper allows 16 KiB of extensions
/// per body, Pingora 8 KiB per partial line. The fast path passes chunks on as they are, so a
/// line is bounded here, not by a buffer.
pub const MAX_CHUNK_LINE: u32 = 4096;

/// Most hex digits of a chunk size, leading zeros included: httparse's (and so Pingora's)
/// limit, 16 digits, which also keeps every size within `u64`.
pub const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

/// Most bytes of a chunked body's trailer section: hyper's `TRAILER_LIMIT`. Trailers pass to
/// the client as they are; nothing reads them, so a small bound costs nothing.
pub const MAX_TRAILERS: u32 = 16 * 1024;
