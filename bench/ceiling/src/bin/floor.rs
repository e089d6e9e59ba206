//! The floor: the least a tokio HTTP/1 proxy can do per request, with no Pingora at all
//! (`lean_proxy::serve`, see src/lib.rs), on tokio's own listener. A request the relay does
//! not take closes the connection: it answers the benchmark and exists to measure what any
//! tokio proxy costs here.
//!
//! usage: floor (mt|tpc) LISTEN UPSTREAM
//!   mt:  one multi-thread runtime (2 workers, work stealing), one listener
//!   tpc: thread per core, a current-thread runtime and an SO_REUSEPORT listener each
use std::net::SocketAddr;

use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const THREADS: usize = 2;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, listen, upstream) = match args.as_slice() {
        [_, m, l, u] => (m.clone(), l.parse::<SocketAddr>(), u.parse::<SocketAddr>()),
        _ => {
            eprintln!("usage: floor (mt|tpc) LISTEN UPSTREAM");
            std::process::exit(2);
        }
    };
    let (Ok(listen), Ok(upstream)) = (listen, upstream) else {
        eprintln!("LISTEN and UPSTREAM are addr:port");
        std::process::exit(2);
    };
    match mode.as_str() {
        "mt" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(THREADS)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let l = TcpListener::bind(listen).await.expect("bind");
                accept_loop(l, upstream).await
            });
        }
        "tpc" => {
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("runtime");
                        rt.block_on(async {
                            let l = reuseport_listener(listen);
                            accept_loop(l, upstream).await
                        })
                    })
                })
                .collect();
            for t in threads {
                let _ = t.join();
            }
        }
        _ => {
            eprintln!("mode is mt or tpc");
            std::process::exit(2);
        }
    }
}

fn reuseport_listener(addr: SocketAddr) -> TcpListener {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).expect("reuseaddr");
    s.set_reuse_port(true).expect("reuseport");
    s.set_nonblocking(true).expect("nonblocking");
    s.bind(&addr.into()).expect("bind");
    s.listen(1024).expect("listen");
    TcpListener::from_std(s.into()).expect("tokio listener")
}

async fn accept_loop(l: TcpListener, upstream: SocketAddr) {
    loop {
        let Ok((down, peer)) = l.accept().await else {
            continue;
        };
        let _ = down.set_nodelay(true);
        tokio::spawn(async move {
            let mut down = down;
            let _ = lean_proxy::serve(&mut down, &peer.ip().to_string(), upstream).await;
        });
    }
}
