//! Idle upstream connections of the fast path, kept per worker thread as nginx keeps them per
//! worker process: no lock, and the most recently used connection is reused first, so the
//! ones that sit idle longest are the ones closed when the pool is full.
//!
//! An idle connection must be silent. Bytes that arrive while it sits in the pool (a body sent
//! after a HEAD answer, bytes after a 204, a second response nobody asked for) would be read as
//! the answer to the next request, which may be another client's: every later response on
//! that connection would then be one request behind. So [`take`] hands out only connections
//! with nothing to read and not closed, as nginx and Pingora do; the others are closed.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

use tokio::net::TcpStream;

thread_local! {
    static IDLE: RefCell<Vec<(SocketAddr, TcpStream)>> = const { RefCell::new(Vec::new()) };
}

/// The most recently returned idle connection to `addr` that is still silent, if any; the
/// ones found readable on the way are closed.
pub fn take(addr: SocketAddr) -> Option<TcpStream> {
    IDLE.with_borrow_mut(|idle| loop {
        let i = idle.iter().rposition(|(a, _)| *a == addr)?;
        let (_, stream) = idle.remove(i);
        if is_silent(&stream) {
            return Some(stream);
        }
        tracing::debug!(upstream = %addr, "idle upstream connection readable: closed");
    })
}

/// True when `stream` has nothing to read and is not closed: a non-blocking peek at the socket
/// itself, not tokio's readiness, which may not have seen bytes that came since the last poll.
fn is_silent(stream: &TcpStream) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit()];
    match socket2::SockRef::from(stream).peek(&mut byte) {
        Err(e) => e.kind() == ErrorKind::WouldBlock,
        // Ok(0): the upstream closed; Ok(1): bytes nobody asked for.
        Ok(_) => false,
    }
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
