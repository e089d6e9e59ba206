//! Idle upstream connections of the fast path, kept per worker thread as nginx keeps them per
//! worker process: no lock, and the most recently used connection is reused first, so the
//! ones that sit idle longest are the ones closed when the pool is full.

use std::cell::RefCell;
use std::net::SocketAddr;

use tokio::net::TcpStream;

thread_local! {
    static IDLE: RefCell<Vec<(SocketAddr, TcpStream)>> = const { RefCell::new(Vec::new()) };
}

/// The most recently returned idle connection to `addr`, if any.
pub fn take(addr: SocketAddr) -> Option<TcpStream> {
    IDLE.with_borrow_mut(|idle| {
        let i = idle.iter().rposition(|(a, _)| *a == addr)?;
        Some(idle.remove(i).1)
    })
}

/// Keeps `stream` for reuse; with `capacity` connections already idle on this thread, the
/// least recently used one is closed. A `capacity` of 0 keeps nothing.
pub fn give_back(addr: SocketAddr, stream: TcpStream, capacity: usize) {
    if capacity == 0 {
        return;
    }
    IDLE.with_borrow_mut(|idle| {
        if idle.len() >= capacity {
            idle.remove(0);
        }
        idle.push((addr, stream));
    });
}
