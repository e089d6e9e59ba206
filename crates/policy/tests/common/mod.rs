//! Helpers shared by the reputation test files (each test file is its own crate and uses
//! what it needs).
#![allow(dead_code)]

use ipnet::IpNet;
use std::net::IpAddr;

/// One minute in ms.
pub const MIN: u64 = 60_000;
/// A fixed "now" (ms since the UNIX epoch) the tests start from.
pub const T0: u64 = 1_700_000_000_000;

/// An address literal.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A network literal.
pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
