//! Proxy workers for the plain listeners: one thread and one event loop each, as nginx runs
//! its worker processes.
//!
//! Pingora's listening service accepts on one thread and hands each connection to a random
//! thread of its pool, while tokio delivers a socket's readiness through the thread that
//! registered it: every read and write of half the connections then wakes the other thread
//! (an eventfd write and a context switch each). Several Pingora services cannot share an
//! address either (each takes ownership of the same descriptor, which is closed twice at
//! shutdown). A worker here owns a duplicate of each listening socket and accepts on it itself,
//! so a connection, its timers and its upstream connections (`fast::pool`) stay on the thread
//! that accepted it. TLS listeners stay on Pingora's own service (`serve.rs`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::listening::Service as Listening;
use pingora::services::Service;

use crate::accept::BanAtAccept;
use crate::fast::Edge;

/// Pending connections the kernel queues per socket (as Pingora's listeners).
const BACKLOG: i32 = 65535;

/// One proxy worker: a single-threaded Pingora service accepting on its own sockets.
pub struct Worker {
    name: String,
    listeners: Vec<std::net::TcpListener>,
    edge: Arc<Edge>,
    filter: Arc<BanAtAccept>,
}

impl Worker {
    /// Worker `index`, serving `edge` on `listeners` (one per listen address, from [`bind`])
    /// and refusing banned peers at accept with `filter`.
    pub fn new(
        index: usize,
        listeners: Vec<std::net::TcpListener>,
        edge: Edge,
        filter: Arc<BanAtAccept>,
    ) -> Self {
        Worker {
            name: format!("portcullis-{index}"),
            listeners,
            edge: Arc::new(edge),
            filter,
        }
    }
}

/// Binds each address once and gives each of `workers` its own descriptor of every socket
/// (a duplicate: the kernel hands each new connection to one of the accepting workers).
pub fn bind(addrs: &[SocketAddr], workers: usize) -> io::Result<Vec<Vec<std::net::TcpListener>>> {
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers)
        .map(|_| Vec::with_capacity(addrs.len()))
        .collect();
    for addr in addrs {
        let listener = listener(*addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        for worker in sockets.iter_mut() {
            worker.push(listener.try_clone()?);
        }
    }
    Ok(sockets)
}

fn listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // As Pingora's listeners: a restart can bind while old connections linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[async_trait]
impl Service for Worker {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let mut loops = Vec::with_capacity(self.listeners.len());
        for socket in self.listeners.drain(..) {
            let listener = match tokio::net::TcpListener::from_std(socket) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(worker = %self.name, error = %e, "cannot use listening socket");
                    continue;
                }
            };
            loops.push(tokio::spawn(accept_loop(
                listener,
                self.edge.clone(),
                self.filter.clone(),
                shutdown.clone(),
            )));
        }
        for l in loops {
            let _ = l.await;
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

/// Accepts until shutdown; each connection is served on this worker's thread.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    edge: Arc<Edge>,
    filter: Arc<BanAtAccept>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    // Dropping this descriptor stops this worker accepting; the socket closes
                    // with the last worker's.
                    return;
                }
                continue;
            }
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of file descriptors: accept() fails at once until some close.
                if e.raw_os_error() == Some(24) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        if !filter.allows(peer) {
            continue;
        }
        // As Pingora's listener does: responses are written whole, Nagle only delays them.
        let _ = tcp.set_nodelay(true);
        let mut stream = Stream::from(tcp);
        let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
        // Known from accept(): saves a getpeername() when the proxy asks for the client.
        let _ = digest.peer_addr.set(Some(peer.into()));
        stream.set_socket_digest(digest);
        tokio::spawn(Listening::<Edge>::handle_event(
            Box::new(stream),
            edge.clone(),
            shutdown.clone(),
        ));
    }
}
