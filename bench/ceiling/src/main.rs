//! Lean proxy on pingora-core's server side with a thread-local upstream pool,
//! plus a bare pingora-proxy HttpProxy for comparison.
//! usage: lean-proxy (lean|bare) LISTEN UPSTREAM [steal|nosteal] [rehome]
use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::HttpSession as ClientSession;
use pingora_core::protocols::http::v1::server::HttpSession as ServerV1;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::RequestHeader;
use std::cell::RefCell;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const POOL_MAX: usize = 128;
thread_local! {
    static POOL: RefCell<Vec<Stream>> = RefCell::new(Vec::with_capacity(POOL_MAX));
}
fn pool_take() -> Option<Stream> {
    POOL.with(|p| p.borrow_mut().pop())
}
fn pool_put(s: Stream) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(s)
        }
    })
}

/// Request header for the upstream: Host kept, proxy_params headers, hop-by-hop removed.
fn build_req(ds: &ServerV1) -> Box<RequestHeader> {
    let mut req = Box::new(ds.req_header().clone());
    req.set_version(http::Version::HTTP_11);
    for h in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        req.remove_header(h);
    }
    let ip = ds
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let xff = match req.headers.get("x-forwarded-for") {
        Some(v) => {
            let mut s = String::from_utf8_lossy(v.as_bytes()).into_owned();
            s.push_str(", ");
            s.push_str(&ip);
            s
        }
        None => ip.clone(),
    };
    let _ = req.insert_header("X-Real-IP", ip);
    let _ = req.insert_header("X-Forwarded-For", xff);
    let _ = req.insert_header("X-Forwarded-Proto", "http");
    req
}

struct Lean {
    peer: HttpPeer,
    connector: TransportConnector,
}

impl Lean {
    /// Forward one request; Err means failure (check ds.response_written() for whether 502 is possible).
    async fn forward(&self, ds: &mut ServerV1) -> Result<()> {
        let has_body = !ds.is_body_empty();
        let mut tries = 0;
        let mut us = loop {
            tries += 1;
            let (stream, reused) = match pool_take() {
                Some(s) => (s, true),
                None => (self.connector.new_stream(&self.peer).await?, false),
            };
            let mut us = ClientSession::new(stream);
            let res = async {
                us.write_request_header(build_req(ds)).await?;
                if has_body {
                    while let Some(b) = ds.read_body_bytes().await? {
                        us.write_body(&b).await?;
                    }
                    us.finish_body().await?;
                }
                loop {
                    us.read_response().await?;
                    let st = us.resp_header().unwrap().status;
                    if !st.is_informational() || st == 101 {
                        break;
                    }
                }
                Ok::<_, Box<pingora_error::Error>>(())
            }
            .await;
            match res {
                Ok(()) => break us,
                // a pooled connection the upstream closed meanwhile: retry on a fresh one
                Err(_) if reused && !has_body && tries < 3 => continue,
                Err(e) => return Err(e),
            }
        };
        let mut resp = Box::new(us.resp_header().unwrap().clone());
        for h in ["connection", "keep-alive", "proxy-connection"] {
            resp.remove_header(h);
        }
        if ds.req_header().version != http::Version::HTTP_11
            && resp.headers.contains_key(http::header::TRANSFER_ENCODING)
        {
            // HTTP/1.0 client can't take chunked: close-delimit instead
            resp.remove_header(&http::header::TRANSFER_ENCODING);
        }
        ds.write_response_header(resp).await?;
        while let Some(b) = us.read_body_ref().await? {
            ds.write_body(b).await?;
        }
        us.respect_keepalive();
        if let Some(s) = us.reuse().await {
            pool_put(s);
        }
        Ok(())
    }
}

#[async_trait]
impl HttpServerApp for Lean {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            _ => return None,
        }
        let ServerSession::H1(ds) = &mut session else {
            return None;
        };
        if let Err(_e) = self.forward(ds).await {
            if ds.response_written().is_some() {
                return None; // mid-body failure: drop the downstream connection
            }
            session.set_keepalive(None);
            let _ = session.respond_error(502).await;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(s)) => Some(ReusedHttpStream::from_reusable_stream(s, settings)),
            _ => None,
        }
    }
}

/// ServerApp wrapper that first re-registers the accepted socket with the *current* runtime's
/// I/O driver. Pingora accepts on one NoSteal runtime and spawns the connection task on a random
/// one, so otherwise ~half the downstream sockets are driven by the other thread's epoll and every
/// readiness event is a cross-thread wake (eventfd write). Then runs the same keepalive loop as
/// pingora's blanket `impl ServerApp for HttpServerApp`.
struct Rehome(Arc<Lean>);

fn rehome(stream: Stream) -> Stream {
    use std::os::fd::BorrowedFd;
    let fd = stream.id();
    let owned = match unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned() {
        Ok(o) => o,
        Err(_) => return stream,
    };
    let std_s = std::net::TcpStream::from(owned);
    if std_s.set_nonblocking(true).is_err() {
        return stream;
    }
    match tokio::net::TcpStream::from_std(std_s) {
        Ok(t) => {
            drop(stream); // deregisters from the accepting runtime, closes the original fd
            Box::new(pingora_core::protocols::l4::stream::Stream::from(t))
        }
        Err(_) => stream,
    }
}

#[async_trait]
impl ServerApp for Rehome {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(rehome(stream));
        session.set_keepalive(Some(60));
        let mut result = self.0.process_new_http(session, shutdown).await;
        while let Some((stream, ps)) = result.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(stream);
            if let Some(ps) = ps {
                ps.apply_to_session(&mut session);
            }
            result = self.0.process_new_http(session, shutdown).await;
        }
        None
    }
}

struct Bare {
    peer: HttpPeer,
}

#[async_trait]
impl pingora_proxy::ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(
        &self,
        _s: &mut pingora_proxy::Session,
        _c: &mut (),
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
    async fn upstream_request_filter(
        &self,
        s: &mut pingora_proxy::Session,
        req: &mut RequestHeader,
        _c: &mut (),
    ) -> Result<()> {
        let ip = s
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let xff = match req.headers.get("x-forwarded-for") {
            Some(v) => format!("{}, {}", String::from_utf8_lossy(v.as_bytes()), ip),
            None => ip.clone(),
        };
        req.insert_header("X-Real-IP", ip)?;
        req.insert_header("X-Forwarded-For", xff)?;
        req.insert_header("X-Forwarded-Proto", "http")?;
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("lean");
    let listen = args.get(2).cloned().unwrap_or("127.0.0.1:19502".into());
    let upstream = args.get(3).cloned().unwrap_or("127.0.0.1:19500".into());
    let steal = args.get(4).map(String::as_str) == Some("steal");

    let mut conf = ServerConf::default();
    conf.threads = 2;
    conf.work_stealing = steal;
    conf.upstream_keepalive_pool_size = 128;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    if mode == "bare" {
        let mut svc = pingora_proxy::http_proxy_service(
            &server.configuration,
            Bare {
                peer: HttpPeer::new(upstream.as_str(), false, String::new()),
            },
        );
        svc.add_tcp(&listen);
        server.add_service(svc);
    } else {
        let app = Lean {
            peer: HttpPeer::new(upstream.as_str(), false, String::new()),
            connector: TransportConnector::new(None),
        };
        if args.get(5).map(String::as_str) == Some("rehome") {
            let mut svc = Service::new("lean".to_string(), Rehome(Arc::new(app)));
            svc.add_tcp(&listen);
            server.add_service(svc);
        } else {
            let mut svc = Service::new("lean".to_string(), app);
            svc.add_tcp(&listen);
            server.add_service(svc);
        }
    }
    eprintln!(
        "{mode} on {listen} -> {upstream}, work_stealing={steal} {:?}",
        args.get(5)
    );
    server.run_forever();
}
