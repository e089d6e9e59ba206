//! The relay shared by `floor` and `hybrid`: the least an HTTP/1 proxy can do per request.
//! Each downstream connection owns one upstream connection for its lifetime (no pool, no
//! lock, no task per request); the request header is parsed with httparse and forwarded with
//! nginx's `proxy_params` headers added and hop-by-hop ones dropped; the response is relayed
//! as it comes (Content-Length framed only). It takes HTTP/1.1 requests without a body and
//! hands anything else back to the caller, unread bytes included.
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How [`serve`] ended.
pub enum Outcome {
    /// The connection is done (closed by either side, or failed).
    Closed,
    /// A request this relay does not take: the bytes read so far, starting with its header.
    HandOff(Vec<u8>),
}

/// Whether the relay takes this request: HTTP/1.1, no body, no upgrade, no expectation.
fn simple(req: &httparse::Request) -> bool {
    req.version == Some(1)
        && req.method != Some("CONNECT")
        && req.headers.iter().all(|h| {
            let n = h.name;
            !(n.eq_ignore_ascii_case("transfer-encoding")
                || n.eq_ignore_ascii_case("upgrade")
                || n.eq_ignore_ascii_case("expect")
                || (n.eq_ignore_ascii_case("content-length") && h.value != b"0"))
        })
}

/// Serves one downstream connection until either side closes or errs.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    down: &mut S,
    ip: &str,
    upstream: SocketAddr,
) -> Outcome {
    relay(down, ip, upstream).await.unwrap_or(Outcome::Closed)
}

async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    down: &mut S,
    ip: &str,
    upstream: SocketAddr,
) -> std::io::Result<Outcome> {
    let mut up: Option<TcpStream> = None;
    let mut req_buf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    let mut resp_buf = vec![0u8; 16384];
    loop {
        // Read one request header.
        req_buf.clear();
        let head_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&req_buf) {
                Ok(httparse::Status::Complete(_)) if !simple(&req) => {
                    return Ok(Outcome::HandOff(std::mem::take(&mut req_buf)));
                }
                Ok(httparse::Status::Complete(n)) => {
                    out.clear();
                    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
                    out.extend_from_slice(b" HTTP/1.1\r\n");
                    let mut xff: Option<&[u8]> = None;
                    for h in req.headers.iter() {
                        let name = h.name;
                        if name.eq_ignore_ascii_case("connection")
                            || name.eq_ignore_ascii_case("keep-alive")
                            || name.eq_ignore_ascii_case("x-real-ip")
                            || name.eq_ignore_ascii_case("x-forwarded-proto")
                        {
                            continue;
                        }
                        if name.eq_ignore_ascii_case("x-forwarded-for") {
                            xff = Some(h.value);
                            continue;
                        }
                        out.extend_from_slice(name.as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(h.value);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"X-Real-IP: ");
                    out.extend_from_slice(ip.as_bytes());
                    out.extend_from_slice(b"\r\nX-Forwarded-For: ");
                    if let Some(v) = xff {
                        out.extend_from_slice(v);
                        out.extend_from_slice(b", ");
                    }
                    out.extend_from_slice(ip.as_bytes());
                    out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n\r\n");
                    break n;
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Ok(Outcome::HandOff(std::mem::take(&mut req_buf))),
            }
            let mut chunk = [0u8; 4096];
            let n = down.read(&mut chunk).await?;
            if n == 0 {
                return Ok(Outcome::Closed);
            }
            req_buf.extend_from_slice(&chunk[..n]);
        };
        if head_len != req_buf.len() {
            // pipelined bytes behind this request: not this relay's business
            return Ok(Outcome::HandOff(std::mem::take(&mut req_buf)));
        }

        // Forward it; reconnect once if the kept upstream connection went away.
        let mut attempt = 0;
        loop {
            if up.is_none() {
                let s = TcpStream::connect(upstream).await?;
                let _ = s.set_nodelay(true);
                up = Some(s);
            }
            let Some(u) = up.as_mut() else { continue };
            if u.write_all(&out).await.is_err() && attempt == 0 {
                up = None;
                attempt += 1;
                continue;
            }
            // Relay the response: header, then Content-Length bytes of body.
            let mut filled = 0;
            let total = loop {
                let n = u.read(&mut resp_buf[filled..]).await?;
                if n == 0 {
                    break None;
                }
                filled += n;
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut headers);
                if let Ok(httparse::Status::Complete(h)) = resp.parse(&resp_buf[..filled]) {
                    let len = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break Some(h + len);
                }
            };
            let Some(total) = total else {
                if attempt == 0 && filled == 0 {
                    up = None;
                    attempt += 1;
                    continue;
                }
                return Ok(Outcome::Closed);
            };
            down.write_all(&resp_buf[..filled.min(total)]).await?;
            down.flush().await?;
            let mut left = total.saturating_sub(filled);
            while left > 0 {
                let n = u.read(&mut resp_buf[..left.min(16384)]).await?;
                if n == 0 {
                    return Ok(Outcome::Closed);
                }
                down.write_all(&resp_buf[..n]).await?;
                down.flush().await?;
                left -= n;
            }
            break;
        }
    }
}
