//! The Pingora glue: asks the engine what to do with each request and acts on it.
//!
//! A request walks: client identity → ban check → probe match → route → rate limit → upstream,
//! and the upstream's status feeds the reputation table. Everything that decides lives in
//! `portcullis-policy`; this module only reads requests, writes responses and counts.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::v2::server::H2Refused;
use pingora::protocols::http::ServerSession;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};

use portcullis_gate::{Answer, Decision, Field, HeaderSize, Malformed, RequestFacts, Step};

use crate::access_log::RequestLine;
use crate::forwarding::{self, upstream_error_body};
use crate::metrics::Metrics;
use crate::request_ctx::{KeptAlive, RequestCtx};
use crate::runtime::Runtime;

/// The portcullis proxy: one per process, its configuration swapped on reload.
pub struct Gateway {
    /// The current configuration and engines.
    pub runtime: Arc<ArcSwap<Runtime>>,
}

impl Gateway {
    /// Sends a short plain-text response and marks the request answered.
    pub(crate) async fn refuse(
        &self,
        session: &mut Session,
        status: u16,
        body: &'static str,
        headers: &[(&'static str, String)],
    ) -> Result<bool> {
        let mut resp = ResponseHeader::build(status, Some(4 + headers.len()))?;
        resp.insert_header("content-type", "text/plain; charset=utf-8")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("cache-control", "no-store")?;
        for (name, value) in headers {
            resp.insert_header(*name, value.as_str())?;
        }
        session
            .write_response_header(Box::new(resp), body.is_empty())
            .await?;
        if !body.is_empty() {
            session
                .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
                .await?;
        }
        Ok(true)
    }

    /// Writes the walk's `answer`, or closes the connection for [`Answer::Drop`]. A request
    /// answered with `close` has a body that will not be read: a client that sent
    /// `Expect: 100-continue` never sends it.
    pub(crate) async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        answer: Answer,
    ) -> Result<bool> {
        // HTTP/2: keep-alive is per stream there; a banned or denied client's connection gets
        // GOAWAY, so it cannot go on sending requests to be refused one by one.
        if matches!(ctx.walk.decision, Decision::Banned | Decision::Denied) {
            if let Some(h2) = session.as_http2() {
                h2.go_away();
            }
        }
        let Some(reply) = answer.reply() else {
            return Gateway::drop_connection(ctx);
        };
        if reply.close {
            session.set_keepalive(None);
        }
        let field = match reply.field {
            Some(Field::RetryAfter(secs)) => Some(("retry-after", secs.to_string())),
            Some(Field::Allow(methods)) => Some(("allow", methods.to_string())),
            None => None,
        };
        self.refuse(session, reply.status, reply.body, field.as_slice())
            .await
    }

    /// Closes the connection without a response (nginx's 444).
    pub(crate) fn drop_connection(ctx: &mut RequestCtx) -> Result<bool> {
        ctx.drop_connection = true;
        Err(Error::explain(
            ErrorType::ConnectionClosed,
            "closed without response by policy",
        ))
    }
}

/// nginx's `proxy_request_buffering`, for the bodies that fit in `client_body_buffer_size`:
/// one whose declared length fits is read whole, each read within `client_body_timeout`,
/// before the upstream is contacted, so a client trickling its body holds no upstream
/// connection. Pingora sends the buffer (its retry buffer) first and reads nothing more.
/// Larger bodies, bodies of unknown length and `Expect: 100-continue` requests (the client
/// waits for the upstream's word) are streamed, each read still within `client_body_timeout`.
async fn buffer_body(session: &mut Session, server: &crate::config::ServerSettings) -> Result<()> {
    let declared = declared_body_len(session);
    let expects = session
        .req_header()
        .headers
        .contains_key(http::header::EXPECT);
    if !server.proxy_request_buffering
        || declared == 0
        || declared > server.client_body_buffer_size as u64
        || expects
        || session.is_upgrade_req()
    {
        return Ok(());
    }
    session.as_mut().enable_retry_buffering();
    // Each read is timed here too: Pingora's HTTP/2 body reads have no timeout of their own.
    // The client's failures (a timeout, a close) are the downstream's, as when streaming.
    loop {
        let read = tokio::time::timeout(server.client_body_timeout, session.read_request_body());
        match read.await {
            Ok(chunk) => {
                if chunk.map_err(|e| e.into_down())?.is_none() {
                    return Ok(());
                }
            }
            Err(_) => {
                return Err(Error::explain(
                    ErrorType::ReadTimedout,
                    "request body slower than client_body_timeout",
                )
                .into_down())
            }
        }
    }
}

/// True when `headers` (a request's or a response's) hold no `Content-Length`, or one of
/// ASCII digits only (`crate::forwarding::content_length`, the fast path's rule).
fn content_length_valid(headers: &http::HeaderMap) -> bool {
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => true,
        (Some(one), None) => crate::forwarding::content_length(one.as_bytes()).is_some(),
        (Some(_), Some(_)) => false,
    }
}

/// The body length the request declares (`Content-Length`); 0 when it declares none.
fn declared_body_len(session: &Session) -> u64 {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| crate::forwarding::content_length(v.as_bytes()))
        .unwrap_or(0)
}

/// The path and query of a request target: an absolute-form target (`http://api/.env`, as
/// scanners send to find open proxies) without its scheme and authority, so the probe rules,
/// anchored at the start of the path, see `/.env`.
fn origin_form(target: &[u8]) -> &[u8] {
    if target.starts_with(b"/") {
        return target;
    }
    let Some(scheme_end) = target.windows(3).position(|w| w == b"://") else {
        return target;
    };
    let rest = &target[scheme_end + 3..];
    match rest.iter().position(|&b| matches!(b, b'/' | b'?')) {
        Some(path) => &rest[path..],
        None => b"/",
    }
}

/// The client `peer` speaks for: itself, or, when it is a trusted proxy, the address its
/// forwarding header names (`[client_ip]`).
fn client_of(rt: &Runtime, peer: IpAddr, req: &RequestHeader) -> IpAddr {
    let values = req
        .headers
        .get_all(rt.client_ip.header().name())
        .iter()
        .map(|v| v.as_bytes());
    rt.client_ip.address(peer, values)
}

/// The request's Host: the Host header, or the authority of an absolute URI (HTTP/2).
fn request_host(session: &Session) -> Option<&str> {
    let req = session.req_header();
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// Counts and logs a request refused before its header could be read whole (`status` 400 or
/// 408) or served at all (405). An offense of the `malformed` kind, as nginx's 400s are in
/// fail2ban's nginx-bad-request jail. Without a `request` the junk can only be blamed on the
/// peer, and never on a trusted proxy, which only relays it.
pub(crate) fn refused(
    rt: &Runtime,
    peer: Option<IpAddr>,
    request: Option<&RequestHeader>,
    status: u16,
) {
    let reason = match status {
        405 => Malformed::Connect,
        408 => Malformed::HeaderTimeout,
        _ => Malformed::BadHeader,
    };
    refused_for(rt, peer, request, status, reason);
}

/// [`refused`], for a `reason` the status does not tell.
fn refused_for(
    rt: &Runtime,
    peer: Option<IpAddr>,
    request: Option<&RequestHeader>,
    status: u16,
    reason: Malformed,
) {
    let client = peer.and_then(|peer| match request {
        Some(req) => Some(client_of(rt, peer, req)),
        None => (!rt.client_ip.is_trusted(peer)).then_some(peer),
    });
    rt.malformed(client, reason, &status);
    rt.request_counter(None, Decision::Malformed).inc();
    Metrics::get().response_counter(status).inc();
    rt.access_log
        .record_refused(peer, client, request, status, Decision::Malformed);
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        // Pingora makes the context once a request header has been read.
        RequestCtx {
            _busy: crate::load::Busy::start(),
            ..RequestCtx::default()
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Answer pipelined HTTP/1.1 requests in order, as nginx does, instead of closing after
        // the first; each one still goes through every filter on its own.
        session.set_pipelining_enabled(true);
        Ok(())
    }

    fn request_header_timeout(&self) -> Option<Duration> {
        Some(self.runtime.load().settings.server.client_header_timeout)
    }

    fn request_header_limit(&self) -> Option<usize> {
        // nginx's large_client_header_buffers bounds what a connection buffers (4 x 8k by
        // default). One line more is read, so a header just over the limit still gets nginx's
        // exact answer from the walk (414 for the request line, 400 otherwise); past that
        // Pingora stops reading and refuses it (400, malformed).
        let server = &self.runtime.load().settings.server;
        Some(server.max_header_bytes + server.max_header_line)
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        _ctx: &Self::CTX,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        // Marks the connection as kept alive, so the next header's deadline allows for the
        // keep-alive wait first; a new connection gets client_header_timeout from the accept,
        // as in nginx. A box of a zero-sized type does not allocate.
        Some(Box::new(KeptAlive))
    }

    fn request_refused(&self, session: &ServerSession, status: u16) {
        // Pingora refused it before any other hook: bytes that are not an HTTP request header
        // (400; a TLS hello on the plain port, a header line without a colon), a CONNECT
        // (405; open-proxy scanners) or a header trickled in slower than client_header_timeout
        // (408; slowloris).
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // Only a CONNECT had its header read (405).
        let request = (status == 405).then(|| session.req_header());
        refused(&self.runtime.load(), peer, request, status);
    }

    fn h2_request_refused(
        &self,
        digest: &pingora::protocols::Digest,
        request: Option<&RequestHeader>,
        refused: H2Refused,
    ) {
        // An HTTP/2 request refused while its stream was accepted (answered 400, or reset as
        // not valid HTTP/2), before any other hook: counted, logged and an offense as the
        // HTTP/1 equivalents are, each under its reason; logged as nginx logs them, 400.
        // Without the request (a reset), only the peer can be blamed, never a trusted proxy.
        let peer = digest
            .socket_digest
            .as_ref()
            .and_then(|d| d.peer_addr())
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let reason = match refused {
            H2Refused::Authority => Malformed::BadHost,
            H2Refused::Path => Malformed::BadPath,
            H2Refused::Protocol => Malformed::BadHeader,
        };
        refused_for(&self.runtime.load(), peer, request, 400, reason);
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let rt = self.runtime.load_full();
        ctx.rt = Some(rt.clone());
        // nginx's keepalive_timeout: left alone, Pingora keeps an idle HTTP/1.1 connection open
        // forever. Only where keep-alive is on: an HTTP/1.0 client that did not ask for it
        // waits for the close.
        if session.get_keepalive().is_some() {
            session.set_keepalive(rt.settings.server.keepalive_timeout);
        }
        // nginx's send_timeout and client_body_timeout: Pingora's per-write and per-read
        // timeouts have their semantics (between two writes, between two reads). Without them
        // a client that stops reading, or trickles its body, holds an upstream connection.
        session.set_write_timeout(Some(rt.settings.server.send_timeout));
        session.set_read_timeout(Some(rt.settings.server.client_body_timeout));

        // 1. Who is asking.
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let Some(peer) = peer else {
            // Not an inet socket (e.g. a Unix socket in tests): nothing to decide on.
            ctx.walk.decision = Decision::Malformed;
            return self.refuse(session, 400, "400 Bad Request\n", &[]).await;
        };
        // One Content-Length of digits only: `5, 5` or `+5` is read one way by Pingora and
        // maybe another by the upstream. (A leading-zero length is rewritten on the way out.)
        if !content_length_valid(&session.req_header().headers) {
            ctx.walk.decision = Decision::Malformed;
            let client = client_of(&rt, peer, session.req_header());
            rt.malformed(Some(client), Malformed::BadHeader, &"Content-Length");
            session.set_keepalive(None);
            return self.refuse(session, 400, "400 Bad Request\n", &[]).await;
        }
        let req = session.req_header();
        let facts = RequestFacts {
            peer,
            client: client_of(&rt, peer, req),
            host: request_host(session),
            method: req.method.as_str(),
            path: req.uri.path(),
            raw_path: origin_form(req.raw_path()),
            user_agent: req.headers.get("user-agent").map(|v| v.as_bytes()),
            declared_body: declared_body_len(session),
            upgrade: session.is_upgrade_req(),
            header: HeaderSize::of(
                req.method.as_str().len() + 1 + req.raw_path().len() + 9,
                req.headers.iter().map(|(n, v)| (n.as_str().len(), v.len())),
            ),
        };
        match rt.decide(&facts, &mut ctx.walk).await {
            Step::Forward { delay_ms } => {
                if delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                buffer_body(session, &rt.settings.server).await?;
                Ok(false)
            }
            Step::Refuse(answer) => self.answer(session, ctx, answer).await,
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some(upstream) = ctx.group() else {
            return Err(Error::explain(ErrorType::InternalError, "no route chosen"));
        };
        let addr = upstream
            .select(ctx.now_ms())
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "upstream has no servers"))?;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(upstream.settings.connect_timeout);
        peer.options.read_timeout = Some(upstream.settings.read_timeout);
        ctx.tries += 1;
        ctx.upstream = Some((addr, Instant::now()));
        // A retry replays the body from its start: count it from there against the limit.
        ctx.body_bytes = 0;
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_failed = true;
        if let (Some(upstream), Some((addr, _))) = (ctx.group(), ctx.upstream) {
            let retry = upstream.connect_failed(addr, peer, &e, ctx.tries, ctx.now_ms());
            e.set_retry(retry);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The last moment before the request leaves: a client banned while this request was
        // delayed or waiting (often by its own concurrent requests' 404s) is refused here, so no
        // request reaches the upstream after its client's ban.
        let refused = match ctx.rt.clone() {
            Some(rt) => rt.gate.before_upstream(&mut ctx.walk),
            None => None,
        };
        if let Some(answer) = refused {
            return Err(refusal_error(ctx, answer));
        }
        // Connected: a failure from here on is a proxy failure, not a connect failure.
        ctx.connect_failed = false;
        // `0005` forwarded as `5`: the upstream reads the length request_filter validated.
        let length = upstream_request
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| crate::forwarding::content_length(v.as_bytes()));
        if let Some(length) = length {
            upstream_request.insert_header(http::header::CONTENT_LENGTH, length.to_string())?;
        }
        // The client's X-Real-IP and X-Forwarded-* are replaced, and with nginx's
        // underscores_in_headers off a field named with `_` is dropped (forwarding::passes).
        let underscores = ctx
            .rt
            .as_ref()
            .is_some_and(|rt| rt.settings.server.underscores_in_headers);
        let dropped: smallvec::SmallVec<[http::HeaderName; 4]> = upstream_request
            .headers
            .keys()
            .filter(|name| !forwarding::passes(name.as_str(), underscores))
            .cloned()
            .collect();
        for name in dropped {
            upstream_request.remove_header(&name);
        }
        if let (Some(client), Some(peer)) = (ctx.walk.client, ctx.walk.peer) {
            // Every X-Forwarded-For line, joined: the client was chosen from all of them.
            let lines = session.req_header().headers.get_all("x-forwarded-for");
            let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
            let mut set = smallvec::SmallVec::<[(&'static str, Bytes); 3]>::new();
            let mut buf = Vec::with_capacity(64);
            let lines = lines.iter().map(|v| v.as_bytes());
            forwarding::set_fields(client, peer, lines, tls, &mut buf, |name, value| {
                set.push((name, Bytes::copy_from_slice(value)))
            });
            for (name, value) in set {
                let value = http::HeaderValue::from_maybe_shared(value)
                    .explain_err(ErrorType::InvalidHTTPHeader, |_| "forwarding header")?;
                upstream_request.insert_header(name, value)?;
            }
        }
        // HTTP/2 clients send :authority, not Host; an HTTP/1.1 upstream needs Host.
        if upstream_request.headers.get(http::header::HOST).is_none() {
            if let Some(authority) = session.req_header().uri.authority().map(|a| a.to_string()) {
                upstream_request.insert_header(http::header::HOST, authority)?;
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // An HTTP/2 client ends a body of unknown length with an empty DATA frame. Pingora 0.9
        // writes that empty chunk to a chunked HTTP/1 upstream as a terminator and then writes
        // the terminator again, so the upstream reads a stray "0\r\n\r\n" as the next request
        // on a kept-alive connection (cloudflare/pingora#935). No data is the same end, once.
        if end_of_stream && body.as_ref().is_some_and(|b| b.is_empty()) {
            *body = None;
        }
        // A body without a declared length is streamed: refuse it once it passes the limit.
        // The upstream has the start of it and its connection is closed, never reused.
        if let (Some(max), Some(chunk)) = (ctx.walk.body_limit, body.as_ref()) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > max {
                ctx.walk.decision = Decision::TooLarge;
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body larger than client_max_body_size",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The upstream connection's own hop-by-hop fields (`keep-alive: timeout=5` from
        // gunicorn) say nothing about the client's connection, as in nginx.
        for name in crate::forwarding::HOP_BY_HOP_RESPONSE {
            upstream_response.remove_header(name);
        }
        // Pingora relays `Content-Length: 5, 5` or `+5` as it came; a client may read either
        // framing from it. Refused (502), as nginx and the fast path refuse it.
        if !content_length_valid(&upstream_response.headers) {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "upstream sent an invalid Content-Length",
            )
            .map_err(|e| e.into_up());
        }
        if let (Some(rt), Some(upstream), Some((_, started))) =
            (ctx.rt.as_ref(), ctx.group(), ctx.upstream)
        {
            upstream.latency.observe(started.elapsed().as_secs_f64());
            rt.gate
                .on_response(&ctx.walk, upstream_response.status.as_u16(), &rt.reporter);
        }
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, _error: &Error) -> bool {
        // A policy drop is not an error worth a log line per scanner request, nor a client
        // that cancelled its request (the access log has it, as 499).
        ctx.drop_connection || ctx.client_gone
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        if ctx.drop_connection {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                // As nginx: an upstream slower than its timeouts is a 504, any other failure 502.
                ErrorSource::Upstream => match e.etype() {
                    ErrorType::ConnectTimedout
                    | ErrorType::ReadTimedout
                    | ErrorType::WriteTimedout => 504,
                    _ => 502,
                },
                ErrorSource::Downstream if client_went_away(e) => {
                    ctx.client_gone = true;
                    0
                }
                // A client that read nothing for send_timeout: nothing more can be written.
                ErrorSource::Downstream if *e.etype() == ErrorType::WriteTimedout => {
                    Metrics::get()
                        .client_timeouts
                        .with_label_values(&["send"])
                        .inc();
                    ctx.client_gone = true;
                    0
                }
                // A body trickled slower than client_body_timeout: 408 as nginx, and a
                // malformed offense as the header's slowloris is.
                ErrorSource::Downstream if *e.etype() == ErrorType::ReadTimedout => {
                    Metrics::get()
                        .client_timeouts
                        .with_label_values(&["client_body"])
                        .inc();
                    408
                }
                ErrorSource::Downstream => 400,
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code == 502 || code == 504 {
            ctx.walk.decision = Decision::UpstreamError;
            // Connect failures were counted (and logged) as `connect` by fail_to_connect.
            if let (Some(upstream), false) = (ctx.group(), ctx.connect_failed) {
                upstream.failed(e);
            }
        } else if code == 400 || code == 408 {
            ctx.walk.decision = Decision::Malformed;
            let reason = match code {
                408 => Malformed::BodyTimeout,
                _ => Malformed::BadBody,
            };
            if let Some(rt) = ctx.rt.as_ref() {
                rt.malformed(ctx.walk.client, reason, e);
            }
        }
        if code > 0 {
            let body = upstream_error_body(code);
            if let Err(err) = session
                .respond_error_with_body(code, Bytes::from_static(body.as_bytes()))
                .await
            {
                tracing::debug!(error = %err, "could not send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = match session.response_written() {
            _ if ctx.drop_connection => 444,
            Some(written) => written.status.as_u16(),
            None if ctx.client_gone => 499,
            None => 0,
        };
        let Some(rt) = ctx.rt.clone() else {
            ctx.walk.inflight.clear();
            return;
        };
        let sent = session.body_bytes_sent();
        rt.finish(&ctx.walk, status, sent, || {
            RequestLine::of(session.req_header())
        });
        // The request is over: its in-flight slots go before any lingering read.
        ctx.walk.inflight.clear();
        if lingers(session, ctx) {
            linger(session, &rt.settings.server).await;
        }
    }
}

/// Whether a connection about to close should first read what is left of the request body
/// (nginx's `lingering_close`): an HTTP/1 connection, not kept alive, whose request was
/// answered before its body was read whole, from a client that is still sending it. Closing
/// a socket with unread bytes makes the kernel send a reset, which can reach the client
/// before it reads the answer: a 413 becomes "connection reset" in the client's hands.
/// Not for a connection dropped on purpose (444), a client banned or denied, or a malformed
/// request (nginx does not linger after a 400 either), and not for `Expect: 100-continue`
/// with nothing read: that client sends no body until told to.
fn lingers(session: &mut Session, ctx: &RequestCtx) -> bool {
    if session.is_http2()
        || session.get_keepalive().is_some()
        || ctx.drop_connection
        || ctx.client_gone
        || matches!(
            ctx.walk.decision,
            Decision::Banned | Decision::Denied | Decision::Malformed
        )
    {
        return false;
    }
    let waits_for_continue = session.body_bytes_read() == 0
        && session
            .req_header()
            .headers
            .get("expect")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    !waits_for_continue && !session.is_body_done()
}

/// Ends the response side (FIN, so the client sees the answer end), then reads and discards
/// the rest of the body: each read within `lingering_timeout`, all within `lingering_time`.
async fn linger(session: &mut Session, server: &crate::config::ServerSettings) {
    if server.lingering_time.is_zero() {
        return;
    }
    let started = Instant::now();
    // On HTTP/1 (the only case here) this shuts down the sending side only.
    session.shutdown().await;
    session.set_read_timeout(Some(server.lingering_timeout));
    session.set_total_drain_timeout(Some(server.lingering_time));
    let drained = session.drain_request_body().await;
    if drained
        .as_ref()
        .is_err_and(|e| *e.etype() == ErrorType::ReadTimedout)
    {
        Metrics::get()
            .client_timeouts
            .with_label_values(&["lingering"])
            .inc();
    }
    tracing::debug!(took = ?started.elapsed(), ok = drained.is_ok(), "lingering close");
}

/// The last-moment ban refusal as an error, for the phases that can no longer write a response
/// themselves: `fail_to_proxy` answers with the status, or closes the connection for a drop.
fn refusal_error(ctx: &mut RequestCtx, answer: Answer) -> Box<Error> {
    match answer {
        Answer::Drop => match Gateway::drop_connection(ctx) {
            Err(e) => e,
            Ok(_) => Error::explain(ErrorType::ConnectionClosed, "closed by policy"),
        },
        Answer::Status { status, .. } => Error::explain(
            ErrorType::HTTPStatus(status),
            "client banned while its request was in flight",
        ),
        Answer::NotAllowed { .. } => Error::explain(ErrorType::HTTPStatus(405), "refused"),
    }
}

/// True when a downstream error `e` only says the client left: it closed or reset its
/// connection, or cancelled its HTTP/2 stream (RST_STREAM, as a browser does on every
/// navigation away). Never an offense, on any protocol, as nginx logs it 499 and serves on.
/// An HTTP/2 error h2 raised itself because the client broke the protocol is not one.
fn client_went_away(e: &Error) -> bool {
    match e.etype() {
        ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => true,
        // Pingora reports a client's RST_STREAM as an H2Error with no cause ("Client closed
        // H2, reason: CANCEL"), and a failure of the stream as h2's own error: one h2 raised
        // itself (`is_library`) is a protocol violation it found; any other (the client's
        // reset or GOAWAY, a broken socket) is the client leaving.
        ErrorType::H2Error => match e.root_cause().downcast_ref::<h2::Error>() {
            Some(h2) => !h2.is_library(),
            None => innermost(e)
                .context
                .as_ref()
                .is_some_and(|c| c.as_str().starts_with("Client closed H2")),
        },
        _ => false,
    }
}

/// The last Pingora error in `e`'s chain of causes (the one that says what happened; the
/// outer ones add where).
fn innermost(e: &Error) -> &Error {
    let mut inner = e;
    while let Some(next) = inner
        .cause
        .as_deref()
        .and_then(|c| c.downcast_ref::<pingora::BError>())
    {
        inner = next;
    }
    inner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_targets_are_matched_by_their_path() {
        assert_eq!(origin_form(b"/a?b"), b"/a?b");
        assert_eq!(origin_form(b"http://api/.env"), b"/.env");
        assert_eq!(origin_form(b"http://api:80?x=1"), b"?x=1");
        assert_eq!(origin_form(b"http://api"), b"/");
        assert_eq!(origin_form(b"*"), b"*");
    }
}
