//! Proxy workers for the plain listeners: one thread and one event loop each, as nginx runs
//! its worker processes.
//!
//! Pingora's listening service accepts on one thread and hands each connection to a random
//! thread of its pool, while tokio delivers a socket's readiness through the thread that
//! registered it: every read and write of half the connections then wakes the other thread
//! (an eventfd write and a context switch each). Several Pingora services cannot share an
//! address either (each takes ownership of the same descriptor, which is closed twice at
//! shutdown). A worker here owns a duplicate of each listening socket (with `[server]
//! reuseport`, a socket of its own) and accepts on it itself, so a connection, its timers and
//! its upstream connections (`fast::pool`) stay on the thread that accepted it. TLS listeners
//! stay on Pingora's own service (`serve.rs`).
//!
//! Which worker takes a new connection follows nginx's workers (`EPOLLEXCLUSIVE` wakes the first
//! worker waiting for events): the first worker takes it while it is idle, a later one only
//! while every worker before it is serving a request ([`Load`]). At a low rate one thread then
//! serves every connection and handles the requests that arrive together in one wake-up, where
//! two threads would each wake for their share; under load the connections spread over all
//! workers. docs/performance.md has the measurements.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::listening::Service as Listening;
use pingora::services::Service;

use crate::accept::BanAtAccept;
use crate::fast::Edge;
use crate::load::Load;

/// Pending connections the kernel queues per socket (as Pingora's listeners).
const BACKLOG: i32 = 65535;

/// One proxy worker: a single-threaded Pingora service accepting on its own sockets.
pub struct Worker {
    name: String,
    index: usize,
    /// `None`: the worker has sockets of its own (`reuseport`) and takes whatever they get.
    load: Option<&'static Load>,
    listeners: Vec<std::net::TcpListener>,
    edge: Arc<Edge>,
    filter: Arc<BanAtAccept>,
}

impl Worker {
    /// Worker `index`, serving `edge` on `listeners` (one per listen address, from [`bind`])
    /// and refusing banned peers at accept with `filter`. Workers sharing sockets share a
    /// `load`; with `reuseport` (sockets of their own, from [`bind`]) it is not used.
    pub fn new(
        index: usize,
        load: &'static Load,
        reuseport: bool,
        listeners: Vec<std::net::TcpListener>,
        edge: Edge,
        filter: Arc<BanAtAccept>,
    ) -> Self {
        Worker {
            name: format!("portcullis-{index}"),
            index,
            load: (!reuseport).then_some(load),
            listeners,
            edge: Arc::new(edge),
            filter,
        }
    }
}

/// Gives each of `workers` a listening socket for every address. With `reuseport`, each worker
/// binds a socket of its own (`SO_REUSEPORT`: the kernel spreads new connections over them);
/// otherwise each address is bound once and every worker gets a duplicate of its descriptor
/// (all workers wait on one queue, and [`Load`] decides who takes a connection).
pub fn bind(
    addrs: &[SocketAddr],
    workers: usize,
    reuseport: bool,
) -> io::Result<Vec<Vec<std::net::TcpListener>>> {
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers)
        .map(|_| Vec::with_capacity(addrs.len()))
        .collect();
    for addr in addrs {
        let cannot =
            |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
        let shared = if reuseport {
            None
        } else {
            Some(listener(*addr, false).map_err(cannot)?)
        };
        for worker in sockets.iter_mut() {
            worker.push(match &shared {
                Some(l) => l.try_clone()?,
                None => listener(*addr, true).map_err(cannot)?,
            });
        }
    }
    Ok(sockets)
}

fn listener(addr: SocketAddr, reuseport: bool) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // As Pingora's listeners: a restart can bind while old connections linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuseport)?;
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
        // The service's runtime is this one thread: every connection accepted below, and so
        // every request counted by `Busy`, runs here.
        if let Some(load) = self.load {
            load.enter(self.index);
        }
        let mut loops = Vec::with_capacity(self.listeners.len());
        for socket in self.listeners.drain(..) {
            // AsyncFd::new is deprecated because a caller could close the descriptor while it is
            // registered; here the AsyncFd owns the listener until it is dropped.
            #[allow(deprecated)]
            let listener = match AsyncFd::new(socket) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(worker = %self.name, error = %e, "cannot use listening socket");
                    continue;
                }
            };
            loops.push(tokio::spawn(accept_loop(
                listener,
                (self.load, self.index),
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

/// Accepts until shutdown the connections worker `index` of `load` takes (all of them without
/// a `load`); each one is served on this worker's thread.
async fn accept_loop(
    listener: AsyncFd<std::net::TcpListener>,
    (load, index): (Option<&'static Load>, usize),
    edge: Arc<Edge>,
    filter: Arc<BanAtAccept>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        let ready = tokio::select! {
            ready = listener.readable() => ready,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    // Dropping this descriptor stops this worker accepting; the socket closes
                    // with the last worker's.
                    return;
                }
                continue;
            }
        };
        let mut ready = match ready {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for connections");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if load.is_some_and(|l| !l.takes(index)) {
            // An earlier worker is idle and takes it (it is woken for every connection too);
            // this one waits for the next connection.
            ready.clear_ready();
            continue;
        }
        let Ok(accepted) = ready.try_io(|l| l.get_ref().accept()) else {
            continue; // taken by another worker
        };
        let (tcp, peer) = match accepted.and_then(|(tcp, peer)| {
            tcp.set_nonblocking(true)?;
            Ok((tokio::net::TcpStream::from_std(tcp)?, peer))
        }) {
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
        // Let the new connection start on a request that came with it before taking another,
        // so that this worker counts as busy when the next connection is placed.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Busy;

    #[test]
    fn the_first_worker_takes_connections_and_a_later_one_only_while_all_before_it_are_busy() {
        let load = Load::leaked(3);
        assert!(load.takes(0));
        assert!(!load.takes(1));
        assert!(!load.takes(2));

        load.enter(0);
        let first = Busy::start();
        assert!(load.takes(0));
        assert!(load.takes(1), "worker 0 is serving a request");
        assert!(!load.takes(2), "worker 1 is idle");
        let second = Busy::start();
        drop(first);
        assert!(load.takes(1), "worker 0 still has a request in progress");
        drop(second);
        assert!(!load.takes(1), "worker 0 is idle again");
    }

    #[test]
    fn a_request_off_the_workers_counts_nowhere() {
        let load = Load::leaked(2);
        let busy = Busy::start();
        assert!(!load.takes(1));
        drop(busy);
        assert!(!load.takes(1));
    }
}
