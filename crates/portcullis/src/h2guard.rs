//! The HTTP/2 connection guard: a time bound on the preface, and budgets on control frames.
//!
//! Pingora's HTTP/2 server (the `h2` crate) reads and writes each TLS stream that negotiated
//! `h2` through [`H2Guard`], which watches the bytes both ways and changes none of them:
//!
//! - **Preface.** Pingora awaits the client's preface (`PRI * HTTP/2.0 ...` and its first
//!   SETTINGS frame) without a deadline: a client that completed the handshake and sent nothing
//!   held its connection, about 127 KB of memory and a task, forever. nginx closes such a
//!   connection after `client_header_timeout` (60 s); so does this. Until the preface and the
//!   first frame header have arrived, a read still waiting when the deadline passes fails with
//!   `TimedOut`, which ends Pingora's handshake.
//! - **Floods.** Some frames cost the server work and carry no request: WINDOW_UPDATE,
//!   PRIORITY, PING, SETTINGS, RST_STREAM, empty DATA, frames of unknown types (the 2019
//!   advisories CVE-2019-9512/9514/9515/9518, and Rapid Reset, CVE-2023-44487, for streams a
//!   client opens and resets at once). The guard reads the 9-byte header of each frame as it
//!   passes (O(1) per frame, nothing allocated), and each kind spends from a per-connection
//!   budget that useful work refills: requests, response headers and DATA the server sends,
//!   and for PING and RST_STREAM a little with time (see [`BUDGETS`]). A client that overdraws
//!   one gets GOAWAY ENHANCE_YOUR_CALM, written between two of the server's frames (the guard
//!   follows the frame boundaries of what h2 writes), and the connection is closed, as nginx
//!   does. The `h2` crate has flood limits of its own (streams reset before they are accepted,
//!   small DATA frames, CONTINUATION, its own resets for protocol errors) and ends a connection
//!   with the same GOAWAY; the guard sees that GOAWAY on its way out and reports it too, so a
//!   flood is counted whichever layer cut it. Each flood is reported once through the
//!   connection's [`OnFlood`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef, ALPN};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The client's connection preface (RFC 9113 3.4).
const PREFACE_LEN: usize = 24;

/// Every frame starts with a header of this size (RFC 9113 4.1).
const FRAME_HEADER_LEN: usize = 9;

/// Bytes that must arrive before the preface deadline: the preface and the header of the
/// SETTINGS frame that must follow it.
const PREFACE_AND_FRAME_HEADER: usize = PREFACE_LEN + FRAME_HEADER_LEN;

/// How long a flooding connection is kept after the guard decided to close it: time for the
/// GOAWAY to be written and read (a client that stops reading cannot hold the connection
/// longer), while the client's frames still in flight are read and dropped, so the close is
/// not a TCP reset that could destroy the GOAWAY before the client reads it.
const FLOOD_LINGER: Duration = Duration::from_secs(1);

/// Reads of a closing connection's input dropped per poll, before yielding to other tasks.
const DRAIN_READS_PER_POLL: usize = 16;

/// The most frames of one kind a connection can have in hand: a long healthy connection
/// earns up to this much, so a flood on it still ends after at most this many frames
/// (about 200 KB, well under a millisecond of work).
const MAX_BANKED: u32 = 16_384;

/// ENHANCE_YOUR_CALM (RFC 9113 7): "the endpoint is generating excessive load".
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// The longest debug data of h2's own GOAWAYs the guard recognizes.
const GOAWAY_DEBUG_MAX: usize = 32;

// Frame types (RFC 9113 6; PRIORITY_UPDATE from RFC 9218).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const PRIORITY_UPDATE: u8 = 0x10;

/// END_STREAM on DATA and HEADERS; ACK on SETTINGS and PING.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;

/// What flooded a connection: the `frame` label of `portcullis_h2_floods_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// WINDOW_UPDATE frames beyond the data the server sent (CVE-2019-9517's cousin, the
    /// "window update flood" of issue 22).
    WindowUpdate,
    /// PRIORITY or PRIORITY_UPDATE frames beyond the requests (CVE-2019-9513).
    Priority,
    /// PINGs, each owed an answer (CVE-2019-9512).
    Ping,
    /// SETTINGS frames, each owed an ACK (CVE-2019-9515).
    Settings,
    /// Streams reset by the client beyond the responses it got: Rapid Reset (CVE-2023-44487),
    /// also when h2 cut it (`too_many_resets`).
    RstStream,
    /// DATA frames without data and without END_STREAM (CVE-2019-9518), also when h2 cut
    /// small DATA frames (`too_many_data_frames`).
    EmptyData,
    /// Frames of a type HTTP/2 does not define (ignored by h2, read all the same).
    UnknownFrame,
    /// h2 cut a header block: too many CONTINUATION frames (CVE-2024-27316) or too large.
    Headers,
    /// h2 cut a client whose frames made it reset too many streams (CVE-2019-9514).
    StreamErrors,
}

impl Flood {
    /// Every kind, for exporting each from the start.
    pub const ALL: [Flood; 9] = [
        Flood::WindowUpdate,
        Flood::Priority,
        Flood::Ping,
        Flood::Settings,
        Flood::RstStream,
        Flood::EmptyData,
        Flood::UnknownFrame,
        Flood::Headers,
        Flood::StreamErrors,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Flood::WindowUpdate => "window_update",
            Flood::Priority => "priority",
            Flood::Ping => "ping",
            Flood::Settings => "settings",
            Flood::RstStream => "rst_stream",
            Flood::EmptyData => "empty_data",
            Flood::UnknownFrame => "unknown_frame",
            Flood::Headers => "headers",
            Flood::StreamErrors => "stream_errors",
        }
    }

    /// The kind h2 names in the debug data of its own GOAWAY ENHANCE_YOUR_CALM (h2 0.4,
    /// `library_go_away_data`); `None` for any other GOAWAY, which the guard does not count.
    fn from_h2_debug_data(debug: &[u8]) -> Option<Flood> {
        match debug {
            b"too_many_resets" => Some(Flood::RstStream),
            b"too_many_data_frames" => Some(Flood::EmptyData),
            b"too_many_continuations" | b"header_list_way_too_large" => Some(Flood::Headers),
            b"too_many_internal_resets" => Some(Flood::StreamErrors),
            _ => None,
        }
    }
}

/// Called once when the guard cuts a flooding connection, or sees h2 cut one.
pub type OnFlood = Box<dyn FnOnce(Flood) + Send + Sync>;

/// How many frames of one kind a connection may send, and what earns more.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// In hand when the connection opens.
    initial: u32,
    /// Earned with each request (a HEADERS frame opening a stream).
    per_request: u32,
    /// Earned with each response header (HEADERS frame) the server sends.
    per_response: u32,
    /// Earned with each DATA frame the server sends ...
    per_data_frame: u32,
    /// ... and with each whole KiB in it.
    per_data_kib: u32,
    /// Earned with each second of the connection's life.
    per_second: u32,
}

/// Frames the guard counts itself: the first [`BUDGETED`] of [`Flood::ALL`].
const BUDGETED: usize = 7;

/// The budget of each kind, in [`Flood::ALL`] order. The initial amounts are far above what
/// browsers, curl (nghttp2), Go and gRPC clients send on a new connection, and the refills
/// follow what makes a client send the frame; a flood overdraws within milliseconds.
const BUDGETS: [Budget; BUDGETED] = [
    // WINDOW_UPDATE: a client opens its windows once per connection and per stream, then
    // returns window for the data it reads: at most one stream and one connection update per
    // DATA frame, or per KiB for a client that reads in small pieces.
    Budget {
        initial: 256,
        per_request: 4,
        per_response: 0,
        per_data_frame: 2,
        per_data_kib: 1,
        per_second: 0,
    },
    // PRIORITY (and PRIORITY_UPDATE): Firefox sends a tree of a few idle streams once, and a
    // browser may reprioritize each request a few times (nginx allows 4 per stream).
    Budget {
        initial: 256,
        per_request: 4,
        per_response: 0,
        per_data_frame: 0,
        per_data_kib: 0,
        per_second: 0,
    },
    // PING: keep-alive pings come with time (one a second is far more than any client sends),
    // gRPC's bandwidth probes with data received. The server's own PINGs are answered from
    // the client's side and earn one each (see `Outbound`).
    Budget {
        initial: 64,
        per_request: 1,
        per_response: 0,
        per_data_frame: 1,
        per_data_kib: 0,
        per_second: 1,
    },
    // SETTINGS: one after the preface, one ACK for each of the server's (earned as they are
    // sent), and a rare change (gRPC raises its window a few times).
    Budget {
        initial: 32,
        per_request: 1,
        per_response: 0,
        per_data_frame: 0,
        per_data_kib: 0,
        per_second: 0,
    },
    // RST_STREAM: a browser cancels a burst of requests when the user navigates away, a
    // download when they seek, search-as-you-type one request per key at human speed. Rapid
    // Reset opens and resets streams before any response, thousands a second: requests earn
    // nothing here, responses do.
    Budget {
        initial: 64,
        per_request: 0,
        per_response: 1,
        per_data_frame: 0,
        per_data_kib: 0,
        per_second: 4,
    },
    // Empty DATA without END_STREAM: no client needs one; some flush an empty write.
    Budget {
        initial: 64,
        per_request: 1,
        per_response: 0,
        per_data_frame: 0,
        per_data_kib: 0,
        per_second: 0,
    },
    // Unknown types: Chrome sends an occasional GREASE frame (RFC 8701's idea for HTTP/2).
    Budget {
        initial: 64,
        per_request: 1,
        per_response: 0,
        per_data_frame: 0,
        per_data_kib: 0,
        per_second: 0,
    },
];

/// What one connection has in hand of each budgeted kind.
#[derive(Debug)]
struct Budgets {
    tokens: [u32; BUDGETED],
    /// Whole seconds of the connection's life already paid into each kind.
    paid_seconds: [u32; BUDGETED],
    opened: Instant,
}

impl Budgets {
    fn new(opened: Instant) -> Budgets {
        Budgets {
            tokens: BUDGETS.map(|b| b.initial),
            paid_seconds: [0; BUDGETED],
            opened,
        }
    }

    fn earn(&mut self, amount: impl Fn(&Budget) -> u32) {
        for (tokens, budget) in self.tokens.iter_mut().zip(BUDGETS.iter()) {
            *tokens = tokens.saturating_add(amount(budget)).min(MAX_BANKED);
        }
    }

    fn earn_one(&mut self, kind: Flood) {
        if let Some(tokens) = self.tokens.get_mut(kind as usize) {
            *tokens = tokens.saturating_add(1).min(MAX_BANKED);
        }
    }

    /// Spends one frame of `kind`: `false` when the budget is overdrawn.
    fn spend(&mut self, kind: Flood) -> bool {
        let i = kind as usize;
        let Some(&budget) = BUDGETS.get(i) else {
            return true;
        };
        if self.tokens[i] == 0 && budget.per_second > 0 {
            // The clock is read only here, when a budget with a time refill runs dry.
            let age = u32::try_from(self.opened.elapsed().as_secs()).unwrap_or(u32::MAX);
            let due = age.saturating_sub(self.paid_seconds[i]);
            self.paid_seconds[i] = age;
            self.tokens[i] = due.saturating_mul(budget.per_second).min(MAX_BANKED);
        }
        if self.tokens[i] == 0 {
            return false;
        }
        self.tokens[i] -= 1;
        true
    }
}

/// A frame header (RFC 9113 4.1).
#[derive(Debug, Clone, Copy)]
struct Head {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Head {
    fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Head {
        Head {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// Frame boundaries of one direction of the byte stream.
#[derive(Debug, Default)]
struct Framing {
    head: [u8; FRAME_HEADER_LEN],
    /// Bytes of `head` read so far.
    head_len: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
}

impl Framing {
    /// Between two frames.
    fn at_boundary(&self) -> bool {
        self.head_len == 0 && self.payload_left == 0
    }

    /// Bytes that surely belong to the current frame: the rest of its header, or of its
    /// payload once the header is known.
    fn frame_left(&self) -> usize {
        if self.head_len > 0 {
            FRAME_HEADER_LEN - self.head_len
        } else {
            self.payload_left
        }
    }

    /// Takes bytes from the front of `bytes` into the current frame; returns how many, and the
    /// frame header when it has just become whole.
    fn take(&mut self, bytes: &[u8]) -> (usize, Option<Head>) {
        if self.payload_left > 0 {
            let n = self.payload_left.min(bytes.len());
            self.payload_left -= n;
            return (n, None);
        }
        let n = (FRAME_HEADER_LEN - self.head_len).min(bytes.len());
        self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
        self.head_len += n;
        if self.head_len < FRAME_HEADER_LEN {
            return (n, None);
        }
        self.head_len = 0;
        let head = Head::parse(&self.head);
        self.payload_left = head.len as usize;
        (n, Some(head))
    }
}

/// What the client sends.
#[derive(Debug)]
struct Inbound {
    /// Preface bytes still to pass before the first frame.
    preface_left: usize,
    framing: Framing,
    /// The highest stream the client opened: the last stream of the guard's GOAWAY.
    last_stream: u32,
}

impl Inbound {
    fn new() -> Inbound {
        Inbound {
            preface_left: PREFACE_LEN,
            framing: Framing::default(),
            last_stream: 0,
        }
    }

    /// Reads `bytes`, spending from `budgets` for each frame. On an overdraw: what overdrew,
    /// and where in `bytes` the offending frame starts (0 when it began in an earlier read).
    fn observe(&mut self, bytes: &[u8], budgets: &mut Budgets) -> Option<(usize, Flood)> {
        let mut at = 0;
        while at < bytes.len() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len() - at);
                self.preface_left -= n;
                at += n;
                continue;
            }
            let head_start = at.saturating_sub(self.framing.head_len);
            let (n, head) = self.framing.take(&bytes[at..]);
            at += n;
            let Some(head) = head else { continue };
            let spent = match head.kind {
                DATA if head.len == 0 && head.flags & END_STREAM == 0 => Some(Flood::EmptyData),
                HEADERS => {
                    // Trailers come on an open stream; a higher number opens one.
                    if head.stream > self.last_stream {
                        self.last_stream = head.stream;
                        budgets.earn(|b| b.per_request);
                    }
                    None
                }
                PRIORITY | PRIORITY_UPDATE => Some(Flood::Priority),
                RST_STREAM => Some(Flood::RstStream),
                SETTINGS => Some(Flood::Settings),
                PING => Some(Flood::Ping),
                WINDOW_UPDATE => Some(Flood::WindowUpdate),
                // h2 bounds these itself: DATA by flow control and its small-frame budget,
                // CONTINUATION per header block; PUSH_PROMISE from a client and a GOAWAY
                // end the connection.
                DATA | PUSH_PROMISE | GOAWAY | CONTINUATION => None,
                _ => Some(Flood::UnknownFrame),
            };
            if let Some(kind) = spent {
                if !budgets.spend(kind) {
                    return Some((head_start, kind));
                }
            }
        }
        None
    }
}

/// What the server (h2) sends.
#[derive(Debug, Default)]
struct Outbound {
    framing: Framing,
    /// The payload of a GOAWAY being written: last stream, error code, debug data.
    goaway: Option<([u8; 8 + GOAWAY_DEBUG_MAX], usize, usize)>,
}

impl Outbound {
    /// Reads what was written, earning into `budgets` for the work in it; h2's own flood
    /// GOAWAY once it has passed whole.
    fn observe(&mut self, mut bytes: &[u8], budgets: &mut Budgets) -> Option<Flood> {
        let mut flood = None;
        while !bytes.is_empty() {
            let in_payload = self.framing.payload_left > 0;
            let (n, head) = self.framing.take(bytes);
            if in_payload {
                if let Some((buf, len, total)) = &mut self.goaway {
                    let keep = n.min(buf.len() - *len);
                    buf[*len..*len + keep].copy_from_slice(&bytes[..keep]);
                    *len += keep;
                    *total -= n;
                }
            }
            bytes = &bytes[n..];
            if let Some(head) = head {
                match head.kind {
                    DATA => {
                        let kib = head.len >> 10;
                        budgets.earn(|b| b.per_data_frame + b.per_data_kib * kib);
                    }
                    HEADERS => budgets.earn(|b| b.per_response),
                    PING if head.flags & ACK == 0 => budgets.earn_one(Flood::Ping),
                    SETTINGS if head.flags & ACK == 0 => budgets.earn_one(Flood::Settings),
                    GOAWAY => self.goaway = Some(([0; 8 + GOAWAY_DEBUG_MAX], 0, head.len as usize)),
                    _ => {}
                }
            }
            if let Some((buf, len, 0)) = self.goaway {
                self.goaway = None;
                flood = flood.or_else(|| h2_flood(&buf[..len]));
            }
        }
        flood
    }
}

/// The flood an outgoing GOAWAY payload reports, if it is h2's own ENHANCE_YOUR_CALM.
fn h2_flood(payload: &[u8]) -> Option<Flood> {
    let code = payload.get(4..8)?;
    if u32::from_be_bytes([code[0], code[1], code[2], code[3]]) != ENHANCE_YOUR_CALM {
        return None;
    }
    Flood::from_h2_debug_data(&payload[8..])
}

/// A GOAWAY frame: last stream `last_stream`, ENHANCE_YOUR_CALM, no debug data.
fn enhance_your_calm(last_stream: u32) -> [u8; FRAME_HEADER_LEN + 8] {
    let mut frame = [0u8; FRAME_HEADER_LEN + 8];
    frame[2] = 8;
    frame[3] = GOAWAY;
    frame[9..13].copy_from_slice(&last_stream.to_be_bytes());
    frame[13..17].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    frame
}

/// A flooding connection on its way out.
#[derive(Debug)]
struct Closing {
    goaway: [u8; FRAME_HEADER_LEN + 8],
    written: usize,
    flushed: bool,
    shut: bool,
}

/// A TLS stream carrying HTTP/2, between the client and Pingora's h2 server.
pub struct H2Guard {
    inner: Stream,
    /// Preface bytes still to arrive before `deadline` stops applying.
    awaited: usize,
    /// The preface deadline; once a flood is found, the end of the linger.
    deadline: Pin<Box<Sleep>>,
    /// Counts the connections cut at the preface deadline.
    expired: prometheus::IntCounter,
    inbound: Inbound,
    outbound: Outbound,
    budgets: Budgets,
    closing: Option<Closing>,
    on_flood: Option<OnFlood>,
}

impl std::fmt::Debug for H2Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Guard")
            .field("inner", &self.inner)
            .field("awaited", &self.awaited)
            .field("budgets", &self.budgets)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl H2Guard {
    /// Wraps `inner`: its preface must arrive within `preface_limit` from now, or the
    /// connection is cut and counted in `expired`; a flood is cut and reported to `on_flood`.
    pub fn wrap(
        inner: Stream,
        preface_limit: Duration,
        expired: prometheus::IntCounter,
        on_flood: OnFlood,
    ) -> Stream {
        let now = Instant::now();
        Box::new(H2Guard {
            inner,
            awaited: PREFACE_AND_FRAME_HEADER,
            deadline: Box::pin(tokio::time::sleep_until(now + preface_limit)),
            expired,
            inbound: Inbound::new(),
            outbound: Outbound::default(),
            budgets: Budgets::new(now),
            closing: None,
            on_flood: Some(on_flood),
        })
    }

    fn report(&mut self, flood: Flood) {
        if let Some(on_flood) = self.on_flood.take() {
            on_flood(flood);
        }
    }

    /// Starts closing a connection that overdrew its budget of `flood`.
    fn start_closing(&mut self, flood: Flood) {
        self.report(flood);
        self.deadline.as_mut().reset(Instant::now() + FLOOD_LINGER);
        self.closing = Some(Closing {
            goaway: enhance_your_calm(self.inbound.last_stream),
            written: 0,
            flushed: false,
            shut: false,
        });
    }

    /// Writes the GOAWAY, flushes it and closes the sending side. Only called between two of
    /// h2's frames.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(closing) = self.closing.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while closing.written < closing.goaway.len() {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &closing.goaway[closing.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            closing.written += n;
        }
        if !closing.flushed {
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            closing.flushed = true;
        }
        if !closing.shut {
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            closing.shut = true;
        }
        Poll::Ready(Ok(()))
    }

    /// The read side of a closing connection: the GOAWAY out (when h2 is between frames;
    /// otherwise h2's next write finishes its frame first), then the client's input dropped
    /// until it closes or the linger ends; then the error that ends h2's connection.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let aborted = || {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "HTTP/2 flood: closed with GOAWAY ENHANCE_YOUR_CALM",
            )))
        };
        if self.deadline.as_mut().poll(cx).is_ready() {
            return aborted();
        }
        if !self.outbound.framing.at_boundary() {
            // h2 holds the rest of its frame and writes it when the socket takes it; the
            // deadline above bounds the wait.
            return Poll::Pending;
        }
        match self.poll_goaway(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return aborted(),
            Poll::Ready(Ok(())) => {}
        }
        for _ in 0..DRAIN_READS_PER_POLL {
            let mut scratch = [0u8; 4096];
            let mut dropped = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut dropped) {
                Poll::Ready(Ok(())) if !dropped.filled().is_empty() => {}
                Poll::Ready(_) => return aborted(),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// A write of a closing connection: the rest of h2's current frame, then the GOAWAY;
    /// whatever h2 writes after it is dropped.
    fn poll_write_closing(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if !self.outbound.framing.at_boundary() {
            let end = buf.len().min(self.outbound.framing.frame_left());
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..end]))?;
            self.outbound.observe(&buf[..n], &mut self.budgets);
            return Poll::Ready(Ok(n));
        }
        ready!(self.poll_goaway(cx))?;
        Poll::Ready(Ok(buf.len()))
    }

    /// Follows what the inner stream took of a write.
    fn written(&mut self, bytes: &[u8]) {
        if let Some(flood) = self.outbound.observe(bytes, &mut self.budgets) {
            self.report(flood);
        }
    }
}

impl AsyncRead for H2Guard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.closing.is_some() {
            return this.poll_close(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                this.awaited = this.awaited.saturating_sub(got.len());
                if let Some((keep, flood)) = this.inbound.observe(got, &mut this.budgets) {
                    // h2 never sees the frame that overdrew, nor any after it.
                    buf.set_filled(before + keep);
                    this.start_closing(flood);
                    if keep == 0 {
                        return this.poll_close(cx);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.awaited == 0 => Poll::Pending,
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    this.expired.inc();
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 preface within client_header_timeout",
                    )))
                }
            },
        }
    }
}

impl AsyncWrite for H2Guard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.closing.is_some() {
            return this.poll_write_closing(cx, buf);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.written(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closing.as_ref().is_some_and(|c| c.shut) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closing.is_some() {
            // Never inside one of h2's frames; the read side closes it then.
            if !self.outbound.framing.at_boundary() {
                return Poll::Ready(Ok(()));
            }
            return self.poll_goaway(cx);
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.closing.is_some() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return this.poll_write_closing(cx, first);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(b.len());
            this.written(&b[..take]);
            left -= take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for H2Guard {
    async fn shutdown(&mut self) {
        if self.closing.is_none() {
            self.inner.shutdown().await
        }
    }
}

impl UniqueID for H2Guard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for H2Guard {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for H2Guard {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for H2Guard {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for H2Guard {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for H2Guard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CLIENT_PREFACE: &[u8; PREFACE_LEN] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn window_update() -> Vec<u8> {
        frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes())
    }

    /// A client's bytes: the preface and its SETTINGS.
    fn opening() -> Vec<u8> {
        let mut b = CLIENT_PREFACE.to_vec();
        b.extend(frame(SETTINGS, 0, 0, &[]));
        b
    }

    fn budgets() -> Budgets {
        Budgets::new(Instant::now())
    }

    /// Feeds `bytes` to a fresh `Inbound` one byte at a time (the worst split), returning
    /// the flood and how many bytes of `bytes` passed.
    fn observe_bytewise(bytes: &[u8], budgets: &mut Budgets) -> Option<(usize, Flood)> {
        let mut inbound = Inbound::new();
        for (i, b) in bytes.iter().enumerate() {
            if let Some((at, flood)) = inbound.observe(std::slice::from_ref(b), budgets) {
                return Some((i + at, flood));
            }
        }
        None
    }

    #[test]
    fn each_control_frame_kind_floods_past_its_initial_budget() {
        let cases = [
            (Flood::WindowUpdate, window_update()),
            (Flood::Priority, frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 16])),
            (
                Flood::Priority,
                frame(PRIORITY_UPDATE, 0, 0, b"\0\0\0\x01u=1"),
            ),
            (Flood::Ping, frame(PING, 0, 0, &[7; 8])),
            (Flood::Ping, frame(PING, ACK, 0, &[7; 8])),
            (Flood::Settings, frame(SETTINGS, 0, 0, &[])),
            (
                Flood::RstStream,
                frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()),
            ),
            (Flood::EmptyData, frame(DATA, 0, 1, &[])),
            (Flood::UnknownFrame, frame(0xfa, 0, 0, b"grease")),
        ];
        for (kind, one) in cases {
            let initial = BUDGETS[kind as usize].initial as usize;
            let mut bytes = opening();
            let opening_len = bytes.len();
            // The opening SETTINGS is one of the budget's.
            let allowed = initial - usize::from(kind == Flood::Settings);
            for _ in 0..allowed + 1 {
                bytes.extend_from_slice(&one);
            }
            let want = opening_len + allowed * one.len();
            let mut b = budgets();
            assert_eq!(
                Inbound::new().observe(&bytes, &mut b),
                Some((want, kind)),
                "{kind:?}"
            );
            // Read byte by byte, all but the last byte of the header have passed.
            assert_eq!(
                observe_bytewise(&bytes, &mut budgets()),
                Some((want + FRAME_HEADER_LEN - 1, kind)),
                "{kind:?}, byte by byte"
            );
        }
    }

    #[test]
    fn frames_that_end_a_request_or_carry_data_cost_nothing() {
        let mut bytes = opening();
        for _ in 0..10_000 {
            bytes.extend(frame(DATA, END_STREAM, 1, &[]));
            bytes.extend(frame(DATA, 0, 1, b"body"));
            bytes.extend(frame(CONTINUATION, 0, 1, b""));
        }
        assert_eq!(Inbound::new().observe(&bytes, &mut budgets()), None);
    }

    #[test]
    fn requests_and_data_sent_refill_the_budgets() {
        let mut b = budgets();
        let mut inbound = Inbound::new();
        let mut outbound = Outbound::default();
        assert_eq!(inbound.observe(&opening(), &mut b), None);
        // A long download: per 16 KiB DATA frame sent, the client returns window on the
        // stream and on the connection, and pings now and then; never cut.
        for stream in (1..2_000u32).step_by(2) {
            assert_eq!(
                inbound.observe(&frame(HEADERS, 0x5, stream, b"h"), &mut b),
                None
            );
            outbound.observe(&frame(HEADERS, 0x4, stream, b"h"), &mut b);
            for _ in 0..20 {
                outbound.observe(&frame(DATA, 0, stream, &[0; 16_384]), &mut b);
                let mut returned = frame(WINDOW_UPDATE, 0, stream, &16_384u32.to_be_bytes());
                returned.extend(window_update());
                returned.extend(frame(PING, 0, 0, &[1; 8]));
                assert_eq!(inbound.observe(&returned, &mut b), None);
            }
            // Each request is reprioritized and, once in three, cancelled after its headers.
            let mut more = frame(PRIORITY, 0, stream, &[0, 0, 0, 0, 16]).repeat(4);
            if stream % 3 == 0 {
                more.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
            }
            assert_eq!(inbound.observe(&more, &mut b), None);
        }
        // What was earned is bounded: a flood on this connection is cut after MAX_BANKED.
        let flood = window_update().repeat(MAX_BANKED as usize + 1);
        assert!(matches!(
            inbound.observe(&flood, &mut b),
            Some((_, Flood::WindowUpdate))
        ));
    }

    #[test]
    fn resets_are_earned_by_responses_not_by_requests() {
        // Rapid Reset: open, reset, again; the requests earn no resets.
        let mut b = budgets();
        let mut inbound = Inbound::new();
        inbound.observe(&opening(), &mut b);
        let initial = BUDGETS[Flood::RstStream as usize].initial;
        let mut cut = None;
        for stream in (1..1_000u32).step_by(2) {
            let mut pair = frame(HEADERS, 0x5, stream, b"h");
            pair.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
            if let Some((_, flood)) = inbound.observe(&pair, &mut b) {
                cut = Some((stream / 2, flood));
                break;
            }
        }
        assert_eq!(cut, Some((initial, Flood::RstStream)));
        // A client that resets after each response header never runs out.
        let mut b = budgets();
        let (mut inbound, mut outbound) = (Inbound::new(), Outbound::default());
        inbound.observe(&opening(), &mut b);
        for stream in (1..10_000u32).step_by(2) {
            assert_eq!(
                inbound.observe(&frame(HEADERS, 0x5, stream, b"h"), &mut b),
                None
            );
            outbound.observe(&frame(HEADERS, 0x4, stream, b"h"), &mut b);
            let reset = frame(RST_STREAM, 0, stream, &8u32.to_be_bytes());
            assert_eq!(inbound.observe(&reset, &mut b), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cancels_at_human_speed_and_keepalive_pings_never_run_out() {
        let mut b = budgets();
        let mut inbound = Inbound::new();
        inbound.observe(&opening(), &mut b);
        // An hour of search-as-you-type that the API never answers in time (two cancels a
        // second), and a keep-alive ping every 5 s.
        for second in 0..3_600u32 {
            let stream = 1 + second * 4;
            let mut typed = frame(HEADERS, 0x5, stream, b"h");
            typed.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
            typed.extend(frame(HEADERS, 0x5, stream + 2, b"h"));
            typed.extend(frame(RST_STREAM, 0, stream + 2, &8u32.to_be_bytes()));
            if second % 5 == 0 {
                typed.extend(frame(PING, 0, 0, &[1; 8]));
            }
            assert_eq!(inbound.observe(&typed, &mut b), None, "second {second}");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
    }

    #[test]
    fn h2s_own_flood_goaway_is_recognized_even_when_written_in_pieces() {
        let mut payload = 7u32.to_be_bytes().to_vec();
        payload.extend(ENHANCE_YOUR_CALM.to_be_bytes());
        payload.extend(b"too_many_resets");
        let goaway = frame(GOAWAY, 0, 0, &payload);
        let mut outbound = Outbound::default();
        let mut b = budgets();
        let mut seen = Vec::new();
        for byte in &goaway {
            seen.extend(outbound.observe(std::slice::from_ref(byte), &mut b));
        }
        assert_eq!(seen, [Flood::RstStream]);
        // A GOAWAY of another code (a graceful shutdown, a ban) is no flood.
        let mut graceful = 7u32.to_be_bytes().to_vec();
        graceful.extend(0u32.to_be_bytes());
        let mut written = frame(GOAWAY, 0, 0, &graceful);
        written.extend(frame(DATA, 0, 1, &[0; 100]));
        assert_eq!(outbound.observe(&written, &mut b), None);
        assert!(outbound.framing.at_boundary());
    }

    /// Runs a guard over one end of a pipe; `h2` plays Pingora's h2 server on it.
    fn guarded() -> (Stream, tokio::io::DuplexStream, Arc<Mutex<Vec<Flood>>>) {
        let (server, client) = tokio::io::duplex(1 << 20);
        let floods = Arc::new(Mutex::new(Vec::new()));
        let seen = floods.clone();
        let guard = H2Guard::wrap(
            Box::new(server),
            Duration::from_secs(60),
            prometheus::IntCounter::new("preface_expired", "test").unwrap(),
            Box::new(move |f| seen.lock().unwrap().push(f)),
        );
        (guard, client, floods)
    }

    #[tokio::test]
    async fn a_flood_gets_goaway_enhance_your_calm_between_two_frames_and_a_close() {
        let (mut h2, mut client, floods) = guarded();
        // The server is half-way through a DATA frame when the flood comes.
        let data = frame(DATA, 0, 1, &[b'x'; 1000]);
        h2.write_all(&data[..500]).await.unwrap();
        let mut flood = opening();
        flood.extend(frame(HEADERS, 0x5, 1, b"h"));
        flood.extend(window_update().repeat(10_000));
        client.write_all(&flood).await.unwrap();
        // h2 reads what comes before the frame that overdrew, then an error; it goes on
        // writing its frames meanwhile.
        let mut read = Vec::new();
        let mut chunk = [0u8; 8192];
        let error = loop {
            match h2.read(&mut chunk).await {
                Ok(0) => panic!("end of input instead of an error"),
                Ok(n) => read.extend_from_slice(&chunk[..n]),
                Err(e) => break e,
            }
            if read.len() > 30 && h2.write_all(&data[500..]).await.is_ok() {
                // The rest of the frame goes out; anything after the GOAWAY is dropped.
                h2.write_all(&frame(DATA, 0, 1, b"late")).await.unwrap();
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        let budget = BUDGETS[Flood::WindowUpdate as usize];
        // The initial budget, one request's and one DATA frame's.
        let earned = (budget.initial + budget.per_request + budget.per_data_frame) as usize;
        assert_eq!(read.len(), opening().len() + 10 + earned * 13);
        assert_eq!(*floods.lock().unwrap(), [Flood::WindowUpdate]);
        // The client got the whole DATA frame, then GOAWAY(last stream 1, ENHANCE_YOUR_CALM),
        // then the end.
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let mut want = data.clone();
        let mut payload = 1u32.to_be_bytes().to_vec();
        payload.extend(ENHANCE_YOUR_CALM.to_be_bytes());
        want.extend(frame(GOAWAY, 0, 0, &payload));
        assert_eq!(got, want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flooder_that_stops_reading_is_dropped_after_the_linger() {
        let (server, mut client) = tokio::io::duplex(64);
        let floods = Arc::new(Mutex::new(Vec::new()));
        let seen = floods.clone();
        let mut h2 = H2Guard::wrap(
            Box::new(server),
            Duration::from_secs(60),
            prometheus::IntCounter::new("preface_expired", "test").unwrap(),
            Box::new(move |f| seen.lock().unwrap().push(f)),
        );
        // The pipe holds 64 bytes: the server's writes fill it, the client never reads.
        h2.write_all(&[0; 9]).await.unwrap(); // an empty DATA frame header
        let filler = frame(DATA, 0, 1, &[0; 40]);
        h2.write_all(&filler).await.unwrap();
        let writer = tokio::spawn(async move {
            let mut flood = opening();
            flood.extend(frame(PING, 0, 0, &[0; 8]).repeat(100));
            let _ = client.write_all(&flood).await;
            client
        });
        let started = Instant::now();
        let mut chunk = [0u8; 64];
        let error = loop {
            match h2.read(&mut chunk).await {
                Ok(n) => assert!(n > 0),
                Err(e) => break e,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        assert!(started.elapsed() >= FLOOD_LINGER);
        assert_eq!(*floods.lock().unwrap(), [Flood::Ping]);
        drop(writer);
    }
}
