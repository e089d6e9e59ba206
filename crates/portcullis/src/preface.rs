//! A time bound on the HTTP/2 connection preface.
//!
//! Pingora awaits the client's preface (`PRI * HTTP/2.0 ...` and its first SETTINGS frame)
//! without a deadline once TLS has negotiated `h2`: a client that completes the handshake and
//! sends nothing held its connection, about 127 KB of memory and a task, forever. nginx closes
//! such a connection after `client_header_timeout` (60 s); so does this. [`PrefaceDeadline`]
//! wraps the TLS stream: until the preface and the first frame header have arrived, a read
//! that is still waiting when the deadline passes fails with `TimedOut`, which ends Pingora's
//! handshake; after that it is a plain pass-through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef, ALPN};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Bytes that must arrive before the deadline: the 24-byte preface and the 9-byte header of
/// the SETTINGS frame that must follow it (RFC 9113 3.4).
const PREFACE_AND_FRAME_HEADER: usize = 24 + 9;

/// A stream whose first [`PREFACE_AND_FRAME_HEADER`] bytes must arrive within a time bound.
#[derive(Debug)]
pub struct PrefaceDeadline {
    inner: Stream,
    /// Bytes still to arrive before the deadline stops applying.
    awaited: usize,
    deadline: Pin<Box<Sleep>>,
    /// Counts the connections cut here.
    expired: prometheus::IntCounter,
}

impl PrefaceDeadline {
    /// Wraps `inner`; its preface must arrive within `limit` from now, or the connection is
    /// cut and counted in `expired`.
    pub fn wrap(inner: Stream, limit: Duration, expired: prometheus::IntCounter) -> Stream {
        Box::new(PrefaceDeadline {
            inner,
            awaited: PREFACE_AND_FRAME_HEADER,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
            expired,
        })
    }
}

impl AsyncRead for PrefaceDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let got = buf.filled().len() - before;
                this.awaited = this.awaited.saturating_sub(got);
                Poll::Ready(result)
            }
            Poll::Pending if this.awaited == 0 => Poll::Pending,
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    this.expired.inc();
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 preface within client_header_timeout",
                    )))
                }
            },
        }
    }
}

impl AsyncWrite for PrefaceDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for PrefaceDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for PrefaceDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for PrefaceDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for PrefaceDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for PrefaceDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for PrefaceDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for PrefaceDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
