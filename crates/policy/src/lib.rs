//! The portcullis decision engine.
//!
//! Everything here is pure Rust with no Pingora and no I/O on the request path: the proxy
//! layer asks the engine for a decision and acts on it. Every time-dependent call takes `now`
//! (milliseconds since the UNIX epoch) from the caller, so tests drive time with a
//! [`time::ManualClock`] instead of sleeping.
#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod limiter;
mod percent;
pub mod persist;
pub mod probes;
pub mod reputation;
pub mod route_path;
pub mod time;
