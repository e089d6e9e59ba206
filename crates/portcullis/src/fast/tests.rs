//! The fast path in process, on tokio's paused clock and the gate's manual clock: one
//! connection over an in-memory pipe, no sockets, no sleeps. Time moves when a test says so,
//! so the deadlines of a connection (client_header_timeout, keepalive_timeout) and the ban
//! table's (bantime) are tested to the second without waiting for them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::protocols::Stream;
use portcullis_policy::time::ManualClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Conn, Deadline};
use crate::config::Settings;
use crate::runtime::Runtime;

/// A gateway in process: its runtime and the clock its engines read.
struct Gateway {
    runtime: Arc<ArcSwap<Runtime>>,
    clock: Arc<ManualClock>,
    /// Kept so connections never see the server stopping.
    _running: watch::Sender<bool>,
    shutdown: watch::Receiver<bool>,
}

/// One client connection: the client's end of the pipe and the task serving the other.
struct Client {
    pipe: DuplexStream,
    served: JoinHandle<Option<Vec<u8>>>,
}

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
client_header_timeout = "10s"
keepalive_timeout = "5s"

[[upstream]]
name = "api"
servers = ["127.0.0.1:9"]

[[route]]
path = "/api"
upstream = "api"

[probes]
builtin = true
action = "404"

[reputation]
maxretry = 2
findtime = "1m"
bantime = "10m"
ignoreip = []
"#;

impl Gateway {
    fn start() -> Gateway {
        let settings = Settings::parse(CONFIG, Path::new("/etc/portcullis")).expect("config");
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let runtime = Runtime::build_with_clock(settings, None, clock.clone()).expect("runtime");
        let (running, shutdown) = watch::channel(false);
        Gateway {
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            clock,
            _running: running,
            shutdown,
        }
    }

    /// A new connection from 192.0.2.1, served by the fast path.
    fn connect(&self) -> Client {
        let (pipe, server) = tokio::io::duplex(64 * 1024);
        let mut conn = Conn {
            peer: "192.0.2.1".parse().expect("address"),
            served: 0,
            max_requests: 1000,
            buf: Vec::with_capacity(4096),
            out: Vec::new(),
            resp: Vec::new(),
            shutdown: self.shutdown.clone(),
            client_deadline: Deadline::default(),
            upstream_deadline: Deadline::default(),
            send_timeout: Duration::from_secs(60),
        };
        let runtime = self.runtime.clone();
        // Accepted now, as `Edge::process_new` notes it before anything else.
        let accepted = tokio::time::Instant::now();
        let served = tokio::spawn(async move {
            let mut stream: Stream = Box::new(server);
            conn.serve(&mut stream, &runtime, accepted).await
        });
        Client { pipe, served }
    }

    fn banned(&self) -> bool {
        let rt = self.runtime.load();
        rt.gate
            .banned_now(
                "192.0.2.1".parse().expect("address"),
                rt.gate.clock().now_ms(),
            )
            .is_some()
    }
}

impl Client {
    async fn send(&mut self, bytes: &str) {
        self.pipe.write_all(bytes.as_bytes()).await.expect("write");
    }

    /// The status of the next response (its header and short body are read whole).
    async fn status(&mut self) -> u16 {
        let mut buf = vec![0; 4096];
        let n = self.pipe.read(&mut buf).await.expect("read");
        let head = String::from_utf8_lossy(&buf[..n]);
        head.get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a response: {head:?}"))
    }

    /// True once the gateway has closed the connection (read gives end of file).
    async fn closed(&mut self) -> bool {
        // Let the serving task run up to its next wait first.
        tokio::task::yield_now().await;
        if !self.served.is_finished() {
            return false;
        }
        let mut buf = [0; 64];
        matches!(self.pipe.read(&mut buf).await, Ok(0) | Err(_))
    }
}

async fn advance(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
    tokio::task::yield_now().await;
}

#[tokio::test(start_paused = true)]
async fn a_header_trickled_past_client_header_timeout_is_closed_and_is_an_offense() {
    let gateway = Gateway::start();
    for round in 0..2 {
        let mut client = gateway.connect();
        client.send("GET / HTTP/1.1\r\nHost: api\r\n").await;
        advance(9).await;
        assert!(!client.closed().await, "round {round}: open before 10 s");
        advance(2).await;
        assert!(client.closed().await, "round {round}: closed after 10 s");
    }
    // Two slowloris connections are maxretry 2.
    assert!(gateway.banned());
}

#[tokio::test(start_paused = true)]
async fn an_idle_kept_alive_connection_closes_at_keepalive_timeout() {
    let gateway = Gateway::start();
    let mut client = gateway.connect();
    // No route (the gateway answers 404 itself; no offense).
    client
        .send("GET /other HTTP/1.1\r\nHost: api\r\n\r\n")
        .await;
    assert_eq!(client.status().await, 404);
    advance(4).await;
    assert!(!client.closed().await, "open before keepalive_timeout");
    // A request in time: the idle wait starts again after its answer.
    client
        .send("GET /other HTTP/1.1\r\nHost: api\r\n\r\n")
        .await;
    assert_eq!(client.status().await, 404);
    advance(4).await;
    assert!(!client.closed().await, "4 s after the second answer");
    advance(2).await;
    assert!(client.closed().await, "closed 5 s after the last answer");
    assert!(!gateway.banned(), "an idle client is no offender");

    // A new connection that sends nothing gets client_header_timeout (10 s).
    let mut idle = gateway.connect();
    advance(9).await;
    assert!(!idle.closed().await);
    advance(2).await;
    assert!(idle.closed().await);
}

#[tokio::test(start_paused = true)]
async fn a_ban_ends_when_the_engines_clock_passes_bantime() {
    let gateway = Gateway::start();
    let mut client = gateway.connect();
    client
        .send("GET /.env HTTP/1.1\r\nHost: api\r\n\r\nGET /wp-login.php HTTP/1.1\r\nHost: api\r\n\r\n")
        .await;
    assert_eq!(client.status().await, 404);
    assert!(gateway.banned());
    // Banned: a probe is answered 403, not 404, until bantime has passed.
    gateway.clock.advance(10 * 60 * 1000 - 1);
    let mut again = gateway.connect();
    again.send("GET /.env HTTP/1.1\r\nHost: api\r\n\r\n").await;
    assert_eq!(again.status().await, 403);
    gateway.clock.advance(1);
    assert!(!gateway.banned());
    let mut after = gateway.connect();
    after.send("GET /.env HTTP/1.1\r\nHost: api\r\n\r\n").await;
    assert_eq!(after.status().await, 404);
}
