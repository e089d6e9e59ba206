//! The fast path: plain HTTP/1.1 requests without a body, relayed by portcullis itself.
//!
//! Pingora's HTTP/1 session and `HttpProxy` cost more per request than nginx does (see
//! docs/performance.md). Most API and scanner traffic is the simplest HTTP there is: a GET
//! with a handful of fields. [`Edge`] serves those on a plain-TCP connection with one parse,
//! the same filters (`filters::decide`) and a per-thread upstream pool, and hands everything
//! else to the unchanged `HttpProxy<Gateway>`, with the bytes it already read: TLS and HTTP/2
//! connections from the start, and a plain connection from its first request the fast path
//! does not take (a body, an upgrade, HTTP/1.0, bad syntax). Both paths answer, count and log
//! a request the same way; `[server] fast_path = false` turns this one off.

mod deadline;
mod pool;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use portcullis_policy::reputation::OffenseKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::h2guard::{Flood, OnFlood};
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::request_ctx::{KeptAlive, RequestCtx};
use crate::runtime::Runtime;
use crate::upstream::Upstream;
use deadline::Deadline;
use portcullis_gate::{Answer, Decision, Step};
use request::{Framing, Simple, MAX_HEADERS};
use response::{Body, Parsed};

/// Pingora's server application for the proxy listeners: the fast path in front of
/// `HttpProxy<Gateway>`.
pub struct Edge {
    /// The proxy that serves whatever the fast path does not.
    pub proxy: Arc<HttpProxy<Gateway>>,
    /// The current configuration and engines.
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// `[server] keepalive_requests`, as read at start (as `HttpProxy` reads it).
    pub max_requests: u32,
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = tokio::time::Instant::now();
        let (fast, header_time) = {
            let rt = self.runtime.load();
            (
                rt.settings.server.fast_path,
                rt.settings.server.client_header_timeout,
            )
        };
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // HTTP/2 over TLS: a deadline on the preface, budgets on control frames (h2guard.rs).
        let stream = match stream.selected_alpn_proto() {
            Some(pingora::protocols::ALPN::H2) => {
                let expired = Metrics::get()
                    .client_timeouts
                    .with_label_values(&["h2_preface"]);
                let on_flood = flood_report(self.runtime.clone(), peer);
                crate::h2guard::H2Guard::wrap(stream, header_time, expired, on_flood)
            }
            _ => stream,
        };
        let Some(peer) = peer.filter(|_| fast && stream.get_ssl_digest().is_none()) else {
            return self.proxy.process_new(stream, shutdown).await;
        };
        let mut conn = Conn {
            peer,
            served: 0,
            max_requests: self.max_requests,
            buf: Vec::with_capacity(4096),
            out: Vec::with_capacity(1024),
            resp: Vec::new(),
            shutdown: shutdown.clone(),
            client_deadline: Deadline::default(),
            upstream_deadline: Deadline::default(),
            send_timeout: self.runtime.load().settings.server.send_timeout,
        };
        let mut stream = stream;
        if let Some(read) = conn.serve(&mut stream, &self.runtime, accepted).await {
            self.hand_off(stream, read, conn.served, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

impl Edge {
    /// Gives the connection to `HttpProxy` for good, with the bytes already `read` parsed as
    /// the start of its next request, after `served` requests on the fast path. Pingora's own
    /// keep-alive loop from there on, as its `ServerApp` for `HttpProxy` runs it.
    async fn hand_off(&self, stream: Stream, read: Vec<u8>, served: u32, shutdown: &ShutdownWatch) {
        Metrics::get().fast_path_handoffs.inc();
        let mut session = ServerSession::new_http1(stream);
        // Pingora's defaults for a new connection; request_filter sets keepalive_timeout.
        session.set_keepalive((!*shutdown.borrow()).then_some(60));
        // Requests served here count against keepalive_requests too.
        let reuses = self.max_requests.saturating_sub(1).saturating_sub(served);
        session.set_keepalive_reuses_remaining(Some(reuses));
        if served > 0 {
            session.set_connection_user_context(Some(Box::new(KeptAlive)));
        }
        if !read.is_empty() {
            session.set_pipelined_prefix(BytesMut::from(&read[..]));
        }
        let mut result = self.proxy.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = result.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            result = self.proxy.process_new_http(session, shutdown).await;
        }
    }
}

/// What is done when an HTTP/2 connection from `peer` is cut for a flood: counted, logged,
/// and an offense of the peer's, unless it is a trusted proxy (the client behind it cannot be
/// known, as for junk it relays).
fn flood_report(runtime: Arc<ArcSwap<Runtime>>, peer: Option<IpAddr>) -> OnFlood {
    Box::new(move |flood: Flood| {
        Metrics::get()
            .h2_floods
            .with_label_values(&[flood.as_str()])
            .inc();
        let client = peer.map_or_else(|| "-".to_string(), |p| p.to_string());
        tracing::warn!(
            client = %client,
            frame = flood.as_str(),
            "HTTP/2 flood: connection closed with GOAWAY ENHANCE_YOUR_CALM"
        );
        let rt = runtime.load();
        if let Some(peer) = peer.filter(|p| !rt.client_ip.is_trusted(*p)) {
            let now = rt.gate.clock().now_ms();
            rt.gate.offense(peer, OffenseKind::Flood, now, &rt.reporter);
        }
    })
}

/// One client connection on the fast path.
struct Conn {
    peer: IpAddr,
    /// Requests answered so far.
    served: u32,
    max_requests: u32,
    /// Bytes read from the client and not yet served.
    buf: Vec<u8>,
    /// The header being sent upstream, or an answer being written.
    out: Vec<u8>,
    /// Bytes read from the upstream.
    resp: Vec<u8>,
    shutdown: ShutdownWatch,
    /// Times the client's reads.
    client_deadline: Deadline,
    /// Times the upstream's reads.
    upstream_deadline: Deadline,
    /// `[server] send_timeout` of the request being served.
    send_timeout: Duration,
}

/// What waiting for a request header ended with.
enum Wait {
    /// The header is whole and ends at this offset.
    Head(usize),
    /// A request the fast path does not parse: `HttpProxy` takes the connection.
    Other,
    /// The client closed, went idle past its time, or the server is stopping.
    Closed,
    /// Part of a header came, the rest not within client_header_timeout.
    Slow,
}

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    HandOff,
}

/// How a request to the upstream failed before its response header arrived.
enum Failure {
    /// The connection broke or closed; `stale`: before any byte of the response came.
    Broken { stale: bool },
    /// No answer within read_timeout.
    Timeout,
    /// The response was not valid HTTP/1.
    Invalid,
    /// The client went away while an informational response was passed on.
    ClientGone,
}

/// What the client got.
struct Served {
    status: u16,
    body_bytes: usize,
    keep_alive: bool,
}

impl Conn {
    /// Serves requests until the connection closes (`None`) or a request needs `HttpProxy`:
    /// then the bytes read and not served.
    async fn serve(
        &mut self,
        stream: &mut Stream,
        runtime: &ArcSwap<Runtime>,
        accepted: tokio::time::Instant,
    ) -> Option<Vec<u8>> {
        let mut since = accepted;
        // The current runtime without touching its reference count per request (a cache line
        // both threads would write); a reload is seen at the next request.
        let mut current = arc_swap::Cache::new(runtime);
        loop {
            let rt = current.load();
            let len = match self.read_head(stream, rt, since).await {
                Wait::Head(len) => len,
                Wait::Other => return Some(std::mem::take(&mut self.buf)),
                Wait::Closed => return None,
                Wait::Slow => {
                    crate::proxy::refused(rt, Some(self.peer), None, 408);
                    return None;
                }
            };
            let busy = crate::load::Busy::start();
            let next = self.request(stream, rt, len).await;
            drop(busy);
            match next {
                Next::KeepAlive => {
                    self.buf.drain(..len);
                    // An idle connection keeps no response buffer: thousands of kept-alive
                    // clients would hold 16 KiB each for nothing.
                    self.resp = Vec::new();
                    since = tokio::time::Instant::now();
                }
                Next::Close => {
                    let _ = AsyncWriteExt::shutdown(stream).await;
                    return None;
                }
                Next::HandOff => return Some(std::mem::take(&mut self.buf)),
            }
        }
    }

    /// Waits for a whole request header, as `HttpProxy` does: on a new connection for
    /// client_header_timeout from the accept (`since`); on a kept-alive one for
    /// keepalive_timeout until the first byte, and client_header_timeout more for the rest.
    async fn read_head(
        &mut self,
        stream: &mut Stream,
        rt: &Runtime,
        since: tokio::time::Instant,
    ) -> Wait {
        let server = &rt.settings.server;
        let idle_for = Duration::from_secs(server.keepalive_timeout.unwrap_or(0));
        let header_time = server.client_header_timeout;
        let (first_byte_by, head_by) = match self.served {
            0 => (since + header_time, since + header_time),
            _ => (since + idle_for, since + idle_for + header_time),
        };
        loop {
            if !self.buf.is_empty() {
                match request::framing(&self.buf) {
                    Framing::Complete(n) => return Wait::Head(n),
                    Framing::Other => return Wait::Other,
                    Framing::Partial => {}
                }
            } else if *self.shutdown.borrow() {
                return Wait::Closed;
            }
            let by = if self.buf.is_empty() {
                first_byte_by
            } else {
                head_by
            };
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            // A stopping server closes an idle connection when its runtime stops (after
            // shutdown_grace); a request that comes before is answered with `close`.
            let read = self.client_deadline.run(by, stream.read_buf(&mut self.buf));
            match read.await {
                None if self.buf.is_empty() => return Wait::Closed,
                None => return Wait::Slow,
                Some(Ok(0)) | Some(Err(_)) => return Wait::Closed,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Serves the request whose header is the first `len` bytes read.
    async fn request(&mut self, stream: &mut Stream, rt: &Arc<Runtime>, len: usize) -> Next {
        let buf = std::mem::take(&mut self.buf);
        let next = self.request_in(stream, rt, &buf[..len]).await;
        self.buf = buf;
        next
    }

    async fn request_in(&mut self, stream: &mut Stream, rt: &Arc<Runtime>, head: &[u8]) -> Next {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut fields);
        // Ending anywhere but at the blank line found (bare-LF line ends) is for HttpProxy.
        match parsed.parse(head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            _ => return Next::HandOff,
        }
        let Some(req) = Simple::new(&parsed) else {
            return Next::HandOff;
        };
        self.served += 1;
        self.send_timeout = rt.settings.server.send_timeout;
        Metrics::get().fast_path_requests.inc();
        let mut ctx = RequestCtx {
            rt: Some(rt.clone()),
            ..RequestCtx::default()
        };
        let facts = req.facts(rt, self.peer);
        let step = rt.decide(&facts, &mut ctx.walk).await;
        // nginx's keepalive_timeout "0" and keepalive_requests, the client's own wish, and a
        // server that is stopping all close the connection after this answer.
        let keep_alive = !req.close
            && rt.settings.server.keepalive_timeout.is_some()
            && self.served < self.max_requests
            && !*self.shutdown.borrow();
        let served = match step {
            Step::Refuse(answer) => self.refuse(stream, &mut ctx, answer, keep_alive).await,
            Step::Forward { delay_ms } => {
                if delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                self.forward(stream, rt, &mut ctx, &req, keep_alive).await
            }
        };
        tracing::debug!(
            client = ?ctx.walk.client,
            target = req.target,
            status = served.status,
            decision = ctx.walk.decision.as_str(),
            "fast path"
        );
        rt.finish(&ctx.walk, served.status, served.body_bytes, || {
            req.log_line()
        });
        match served.keep_alive {
            true => Next::KeepAlive,
            false => Next::Close,
        }
    }

    /// Gives a refusal the filters decided: a status with its body, or a closed connection.
    async fn refuse(
        &mut self,
        stream: &mut Stream,
        ctx: &mut RequestCtx,
        answer: Answer,
        keep_alive: bool,
    ) -> Served {
        match answer.reply() {
            Some(reply) => {
                let keep_alive = keep_alive && !reply.close;
                self.answer(stream, reply.status, reply.body, reply.field, keep_alive)
                    .await
            }
            None => {
                ctx.drop_connection = true;
                Served {
                    status: 444,
                    body_bytes: 0,
                    keep_alive: false,
                }
            }
        }
    }

    /// Writes an answer the gateway makes itself.
    async fn answer(
        &mut self,
        stream: &mut Stream,
        status: u16,
        body: &str,
        field: Option<portcullis_gate::Field>,
        keep_alive: bool,
    ) -> Served {
        self.out.clear();
        response::own(status, body, field, keep_alive, &mut self.out);
        let written = write(stream, &self.out, self.send_timeout).await;
        Served {
            status,
            body_bytes: body.len(),
            keep_alive: keep_alive && written,
        }
    }

    /// Passes the request on to the route's upstream and relays the response.
    async fn forward(
        &mut self,
        stream: &mut Stream,
        rt: &Runtime,
        ctx: &mut RequestCtx,
        req: &Simple<'_, '_>,
        keep_alive: bool,
    ) -> Served {
        let (Some(route), Some(client)) = (ctx.walk.route, ctx.walk.client) else {
            return self.answer(stream, 500, "error\n", None, false).await;
        };
        let group = &rt.upstreams[rt.settings.routes[route].upstream];
        let underscores = rt.settings.server.underscores_in_headers;
        req.upstream_header(client, self.peer, underscores, &mut self.out);
        let head_request = req.method.eq_ignore_ascii_case("HEAD");
        // Only an idempotent request may be sent again after it left on a kept connection that
        // turned out dead: the upstream may have acted on it before closing (RFC 9110 9.2.2;
        // Pingora's default error_while_proxy and nginx's proxy_next_upstream decide alike).
        let replayable =
            http::Method::from_bytes(req.method.as_bytes()).is_ok_and(|m| m.is_idempotent());
        loop {
            let Some(addr) = group.select(rt.gate.clock().now_ms()) else {
                return self
                    .upstream_failed(stream, ctx, group, 502, "no servers")
                    .await;
            };
            ctx.tries += 1;
            let started = Instant::now();
            ctx.upstream = Some((addr, started));
            let mut up = match pool::take(addr) {
                Some(up) => (up, true),
                None => match connect(addr, group.settings.connect_timeout).await {
                    Ok(up) => (up, false),
                    Err(e) => {
                        let now = rt.gate.clock().now_ms();
                        if group.connect_failed(addr, &addr, &e, ctx.tries, now) {
                            continue;
                        }
                        let timed_out = e.kind() == std::io::ErrorKind::TimedOut;
                        let status = if timed_out { 504 } else { 502 };
                        return self.answer_failure(stream, ctx, status).await;
                    }
                },
            };
            // The last moment before the request leaves: a client banned while this request
            // was delayed or connecting (often by its own concurrent requests' 404s) is refused
            // here, so no request reaches the upstream after its client's ban.
            if let Some(answer) = rt.gate.before_upstream(&mut ctx.walk) {
                pool::give_back(addr, up.0, rt.settings.server.upstream_keepalive);
                return self.refuse(stream, ctx, answer, keep_alive).await;
            }
            let head = loop {
                match self
                    .exchange(stream, &mut up.0, group, head_request, keep_alive)
                    .await
                {
                    Ok(head) => break head,
                    // A kept connection the upstream closed while it sat idle: once more on a
                    // new one, as nginx and Pingora do.
                    Err(Failure::Broken { stale: true }) if up.1 && replayable => {
                        match connect(addr, group.settings.connect_timeout).await {
                            Ok(fresh) => up = (fresh, false),
                            Err(_) => {
                                return self
                                    .upstream_failed(stream, ctx, group, 502, "reconnect")
                                    .await;
                            }
                        }
                    }
                    // Logged as nginx logs a client that left before its answer.
                    Err(Failure::ClientGone) => {
                        return Served {
                            status: 499,
                            body_bytes: 0,
                            keep_alive: false,
                        }
                    }
                    Err(failure) => {
                        let (status, what) = match failure {
                            Failure::Timeout => (504, "read timed out"),
                            Failure::Invalid => (502, "invalid response"),
                            Failure::Broken { .. } | Failure::ClientGone => {
                                (502, "connection broken")
                            }
                        };
                        return self.upstream_failed(stream, ctx, group, status, what).await;
                    }
                }
            };
            group.latency.observe(started.elapsed().as_secs_f64());
            rt.gate.on_response(&ctx.walk, head.status, &rt.reporter);
            let (up, _) = up;
            return self
                .relay(stream, up, addr, head, keep_alive, rt, group, ctx)
                .await;
        }
    }

    /// Sends the request header on `up` and reads the response header into `self.resp`; the
    /// header for the client is then in `self.out`.
    async fn exchange(
        &mut self,
        stream: &mut Stream,
        up: &mut TcpStream,
        group: &Upstream,
        head_request: bool,
        keep_alive: bool,
    ) -> Result<response::Head, Failure> {
        if up.write_all(&self.out).await.is_err() {
            return Err(Failure::Broken { stale: true });
        }
        self.resp.clear();
        let mut skipped = 0;
        loop {
            if self.resp.capacity() - self.resp.len() < 1024 {
                if self.resp.len() >= response::MAX_HEADER_BYTES {
                    return Err(Failure::Invalid);
                }
                self.resp.reserve(16 * 1024);
            }
            match self.read_upstream(up, group).await {
                None => return Err(Failure::Timeout),
                Some(Err(_)) | Some(Ok(0)) => {
                    return Err(Failure::Broken {
                        stale: self.resp.is_empty() && skipped == 0,
                    })
                }
                Some(Ok(_)) => {}
            }
            loop {
                match response::parse(&self.resp, head_request, keep_alive, &mut self.out) {
                    Parsed::Head(head) => return Ok(head),
                    Parsed::Informational { len, forward } => {
                        if forward && !write(stream, &self.resp[..len], self.send_timeout).await {
                            return Err(Failure::ClientGone);
                        }
                        self.resp.drain(..len);
                        skipped += 1;
                    }
                    Parsed::Partial => break,
                    Parsed::Invalid => return Err(Failure::Invalid),
                }
            }
        }
    }

    /// Reads what the upstream sends next into `self.resp`, within the group's read_timeout
    /// (`None` when it passed).
    async fn read_upstream(
        &mut self,
        up: &mut TcpStream,
        group: &Upstream,
    ) -> Option<std::io::Result<usize>> {
        let by = tokio::time::Instant::now() + group.settings.read_timeout;
        self.upstream_deadline
            .run(by, up.read_buf(&mut self.resp))
            .await
    }

    /// Writes the response whose header is in `self.resp` to the client, with its body, and
    /// keeps the upstream connection if it can carry another request.
    #[allow(clippy::too_many_arguments)]
    async fn relay(
        &mut self,
        stream: &mut Stream,
        mut up: TcpStream,
        addr: SocketAddr,
        head: response::Head,
        keep_alive: bool,
        rt: &Runtime,
        group: &Upstream,
        ctx: &mut RequestCtx,
    ) -> Served {
        // The client's header is in `self.out` already (response::parse).
        let rechunk = head.body == Body::UntilClose;
        self.resp.drain(..head.len);
        let mut left = match head.body {
            Body::Length(n) => n,
            _ => 0,
        };
        let mut chunks = response::Chunked::default();
        let mut body_bytes = 0;
        // Each round passes on what `self.resp` holds (first what came with the header), then
        // reads more.
        loop {
            let n = self.resp.len();
            let (take, end) = match head.body {
                Body::Empty => (0, true),
                Body::Length(_) => {
                    let take = (n as u64).min(left);
                    left -= take;
                    (take as usize, left == 0)
                }
                Body::Chunked => match chunks.feed(&self.resp) {
                    Ok(Some(end)) => (end, true),
                    Ok(None) => (n, false),
                    // Nothing written yet (the header waits in `self.out` with the first
                    // bytes): the client gets a 502, as for an invalid header.
                    Err(_) if !self.out.is_empty() => {
                        return self
                            .upstream_failed(stream, ctx, group, 502, "invalid chunked body")
                            .await
                    }
                    Err(_) => {
                        return self
                            .broken_body(stream, group, ctx, head.status, body_bytes)
                            .await
                    }
                },
                Body::UntilClose => (n, false),
            };
            body_bytes = match head.body {
                Body::Chunked => chunks.content() as usize,
                _ => body_bytes + take,
            };
            match rechunk {
                true => response::push_chunk(&mut self.out, &self.resp[..take]),
                false => self.out.extend_from_slice(&self.resp[..take]),
            }
            let written = self.out.is_empty() || write(stream, &self.out, self.send_timeout).await;
            if end {
                // Bytes past the end of the body: the upstream is out of step; not reused.
                if head.reusable && take == n {
                    pool::give_back(addr, up, rt.settings.server.upstream_keepalive);
                }
                return Served {
                    status: head.status,
                    body_bytes,
                    keep_alive: keep_alive && written,
                };
            }
            if !written {
                return Served {
                    status: head.status,
                    body_bytes,
                    keep_alive: false,
                };
            }
            self.out.clear();
            self.resp.clear();
            self.resp.reserve(16 * 1024);
            match self.read_upstream(&mut up, group).await {
                Some(Ok(0)) if rechunk => {
                    let written = write(stream, b"0\r\n\r\n", self.send_timeout).await;
                    return Served {
                        status: head.status,
                        body_bytes,
                        keep_alive: keep_alive && written,
                    };
                }
                Some(Ok(n)) if n > 0 => {}
                _ => {
                    return self
                        .broken_body(stream, group, ctx, head.status, body_bytes)
                        .await
                }
            }
        }
    }

    /// The upstream failed after its header was passed on: the client's connection is closed
    /// so it sees a truncated body, not a whole one.
    async fn broken_body(
        &mut self,
        stream: &mut Stream,
        group: &Upstream,
        ctx: &mut RequestCtx,
        status: u16,
        body_bytes: usize,
    ) -> Served {
        ctx.walk.decision = Decision::UpstreamError;
        group.failed(&"response body broken");
        let _ = stream.flush().await;
        Served {
            status,
            body_bytes,
            keep_alive: false,
        }
    }

    /// The upstream failed before its header came: 502 or 504, as nginx answers.
    async fn upstream_failed(
        &mut self,
        stream: &mut Stream,
        ctx: &mut RequestCtx,
        group: &Upstream,
        status: u16,
        what: &str,
    ) -> Served {
        group.failed(&what);
        self.answer_failure(stream, ctx, status).await
    }

    /// Answers an upstream failure (already counted) with `status`.
    async fn answer_failure(
        &mut self,
        stream: &mut Stream,
        ctx: &mut RequestCtx,
        status: u16,
    ) -> Served {
        ctx.walk.decision = Decision::UpstreamError;
        // As HttpProxy: the client's connection is not reused after an upstream failure.
        let body = crate::forwarding::upstream_error_body(status);
        self.answer(stream, status, body, None, false).await
    }
}

/// Connects to `addr` within `timeout` (an error of kind `TimedOut` when the time ran out).
async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(up)) => {
            let _ = up.set_nodelay(true);
            Ok(up)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timed out",
        )),
    }
}

/// Writes and flushes `bytes` to the client within `send_timeout`; false when the client is
/// gone, or read nothing for that long (nginx's `send_timeout`: a client that stops reading
/// must not hold its task and upstream connection forever).
async fn write(stream: &mut Stream, bytes: &[u8], send_timeout: Duration) -> bool {
    let sent = async { stream.write_all(bytes).await.is_ok() && stream.flush().await.is_ok() };
    match tokio::time::timeout(send_timeout, sent).await {
        Ok(written) => written,
        Err(_) => {
            Metrics::get()
                .client_timeouts
                .with_label_values(&["send"])
                .inc();
            false
        }
    }
}
