//! The fast-path design on Pingora: Pingora's server (listeners, threads, accept, its `Stream`
//! layers) with a `ServerApp` that relays simple HTTP/1.1 requests itself
//! (`lean_proxy::serve`, src/lib.rs) and hands any other request, with the bytes already read,
//! to pingora-proxy's `HttpProxy` through `HttpPersistentSettings::set_pipelined_prefix`; the
//! connection then stays with `HttpProxy`. Measures whether a portcullis fast path inside
//! Pingora keeps the floor's speed.
//!
//! usage: hybrid LISTEN UPSTREAM [steal|nosteal]
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_proxy::{HttpProxy, ProxyHttp, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the hand-off path proxies with: pingora-proxy with nothing but the peer.
struct Bare {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

struct Hybrid {
    proxy: Arc<HttpProxy<Bare>>,
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ServerApp for Hybrid {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let lean_proxy::Outcome::HandOff(read) =
            lean_proxy::serve(&mut stream, &ip, self.upstream).await
        else {
            return None;
        };
        // Pingora's own keep-alive loop from here on, starting with the bytes already read.
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(Some(60));
        let mut settings = HttpPersistentSettings::for_session(&session);
        settings.set_pipelined_prefix(BytesMut::from(&read[..]));
        settings.apply_to_session(&mut session);
        let mut result = self.proxy.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = result.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            result = self.proxy.process_new_http(session, shutdown).await;
        }
        None
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args.get(1).cloned().unwrap_or("127.0.0.1:19502".into());
    let upstream = args.get(2).cloned().unwrap_or("127.0.0.1:19500".into());
    let steal = args.get(3).map(String::as_str) != Some("nosteal");
    let Ok(upstream_addr) = upstream.parse() else {
        eprintln!("UPSTREAM is addr:port");
        std::process::exit(2);
    };
    let mut conf = ServerConf::default();
    conf.threads = 2;
    conf.work_stealing = steal;
    conf.upstream_keepalive_pool_size = 128;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let bare = Bare {
        peer: HttpPeer::new(upstream.as_str(), false, String::new()),
    };
    let proxy = Arc::new(pingora_proxy::http_proxy(&server.configuration, bare));
    let app = Hybrid {
        proxy,
        upstream: upstream_addr,
    };
    let mut svc = Service::new("hybrid".to_string(), app);
    svc.add_tcp(&listen);
    server.add_service(svc);
    eprintln!("hybrid on {listen} -> {upstream}, work_stealing={steal}");
    server.run_forever();
}
