//! End-to-end tests: the real binary, a real upstream, real HTTP on loopback.

mod support;

mod api;
mod cluster;
mod corpus;
mod fast_path;
mod filters;
mod h2guard;
mod hardening;
mod http;
mod http2;
mod nginx_diff;
mod operations;
mod proxy;
mod routing;
mod smuggling;

mod bench_smoke;
