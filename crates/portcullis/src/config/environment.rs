//! What validating a configuration needs of the machine: whether a file is there, what it
//! holds, what a host name resolves to. Kept behind one trait so every other check is pure,
//! and a test can validate against files and names of its own.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

/// Files and names, as validation sees them.
pub trait Environment {
    /// True when `path` is a file that can be opened.
    fn is_file(&self, path: &Path) -> bool;
    /// The bytes of the file at `path`.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// The first address `host:port` resolves to (DNS for a name).
    fn resolve(&self, host_port: &str) -> Option<SocketAddr>;
}

/// This machine's files and resolver.
#[derive(Debug, Default, Clone, Copy)]
pub struct System;

impl Environment for System {
    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn resolve(&self, host_port: &str) -> Option<SocketAddr> {
        host_port.to_socket_addrs().ok()?.next()
    }
}
