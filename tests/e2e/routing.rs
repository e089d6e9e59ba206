//! Routing decides on the path the upstream will see, as nginx does before it picks a
//! `location`: the same encoded and tricky paths sent to real nginx (one `location` per route)
//! and to portcullis (the same routes) pick the same route, or are refused alike; and the
//! upstream gets the request target as it was sent.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// The routes of both sides: (name, path prefix). A prefix matches whole segments in
/// portcullis; nginx gets `location = P` and `location P/` for that (or `location P` for a
/// prefix that ends in `/`).
const ROUTES: [(&str, &str); 6] = [
    ("root", "/"),
    ("login", "/api/v1/login"),
    ("api", "/api"),
    ("admin", "/admin/"),
    ("static", "/static"),
    ("items", "/api/v1/items/"),
];

/// Request targets under test: each base path through every disguise a client can give it.
fn corpus() -> Vec<String> {
    let bases = [
        "/api/v1/login",
        "/api/v1/login/access-token",
        "/api/v1/items/42",
        "/api/v1/other",
        "/api",
        "/admin/users",
        "/admin",
        "/static/app.js",
        "/staticx/app.js",
        "/",
    ];
    let mut out = BTreeSet::new();
    for base in bases {
        let segments: Vec<&str> = base.split('/').skip(1).collect();
        let join = |sep: &str, segs: &[String]| format!("/{}", segs.join(sep));
        let owned: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
        // Each segment's first letter percent-encoded, lower and upper hex.
        let encode_first = |upper: bool| {
            let segs: Vec<String> = owned
                .iter()
                .map(|s| match s.chars().next() {
                    Some(c) if c.is_ascii_alphanumeric() => match upper {
                        true => format!("%{:02X}{}", c as u8, &s[1..]),
                        false => format!("%{:02x}{}", c as u8, &s[1..]),
                    },
                    _ => s.clone(),
                })
                .collect();
            join("/", &segs)
        };
        // `;` parameters on the first segment (Tomcat's `/..;/` trick relies on them).
        let first_with_param = match owned.split_first() {
            Some((first, rest)) => {
                let mut segs = vec![format!("{first};a=b")];
                segs.extend(rest.iter().cloned());
                join("/", &segs)
            }
            None => "/;a=b".to_string(),
        };
        let variants = [
            base.to_string(),
            encode_first(false),
            encode_first(true),
            join("%2F", &owned),
            join("%2f", &owned),
            join("%252F", &owned),
            join("//", &owned),
            format!("/{base}"),
            format!("//{}", &base[1..]),
            format!("/x/..{base}"),
            format!("/./{}", &base[1..]),
            format!("/x/%2e%2e{base}"),
            format!("/x%2f..{base}"),
            format!("{base}/"),
            format!("{base}/."),
            format!("{base}/.."),
            format!("{base}."),
            format!("{base};jsessionid=1"),
            first_with_param,
            base.to_uppercase(),
            format!("{base}?next=/../../admin"),
            format!("{base}%3Fx=1"),
            format!("{base}%C0%AF"),
            format!("{base}%C3%A9"),
            format!("/..{base}"),
            format!("{base}%00.json"),
            format!("{base}%zz"),
            format!("{base}/%2e%2e/%2e%2e/%2e%2e"),
        ];
        out.extend(variants);
    }
    out.into_iter().collect()
}

/// nginx answering each route's name from its `location`s.
fn start_route_nginx(dir: &Path, port: u16) -> Nginx {
    let mut locations = String::new();
    for (name, prefix) in ROUTES {
        let answer = format!("{{ default_type text/plain; return 200 \"{name}\"; }}\n");
        match prefix.ends_with('/') {
            true => locations.push_str(&format!("    location {prefix} {answer}")),
            false => {
                locations.push_str(&format!("    location = {prefix} {answer}"));
                locations.push_str(&format!("    location {prefix}/ {answer}"));
            }
        }
    }
    start_nginx(
        dir,
        &format!("  server {{\n    listen 127.0.0.1:{port};\n{locations}  }}"),
    )
}

/// One upstream per route: answers the route's name and records each request target.
async fn route_upstream(name: &'static str, targets: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    listen(move |mut stream| {
        let targets = targets.clone();
        async move {
            while let Some((head, _)) = read_head(&mut stream).await {
                let line = String::from_utf8_lossy(&head).to_string();
                let target = line.split(' ').nth(1).unwrap_or("").to_string();
                targets.lock().unwrap().push(target);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                    name.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// Sends `GET target` on a new connection and returns the status, and the body of a 200.
async fn get_raw(port: u16, target: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, if status == 200 { body } else { String::new() })
}

#[tokio::test]
async fn portcullis_picks_the_route_nginx_picks_for_every_encoded_path() {
    let targets = Arc::new(Mutex::new(Vec::new()));
    let mut config = String::new();
    let mut first = None;
    for (name, prefix) in ROUTES {
        let addr = route_upstream(name, targets.clone()).await;
        if name == "root" {
            first = Some(addr);
            continue;
        }
        config.push_str(&format!(
            "[[upstream]]\nname = \"to_{name}\"\nservers = [\"{addr}\"]\n\n\
             [[route]]\npath = \"{prefix}\"\nupstream = \"to_{name}\"\n\n"
        ));
    }
    let root = first.expect("a root route");
    let gw = gateway_to(root).extra(&config).start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nginx = start_route_nginx(dir.path(), port);
    assert!(
        eventually(Duration::from_secs(5), || async {
            TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await,
        "nginx did not start"
    );

    let corpus = corpus();
    assert!(corpus.len() >= 200, "{} paths", corpus.len());
    let mut differ = Vec::new();
    let mut refused = 0;
    for target in &corpus {
        let from_nginx = get_raw(port, target).await;
        let from_portcullis = get_raw(gw.port, target).await;
        if from_nginx.0 == 400 {
            refused += 1;
        }
        if from_nginx != from_portcullis {
            differ.push(format!(
                "{target}: nginx {from_nginx:?}, portcullis {from_portcullis:?}"
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} paths routed otherwise than nginx routes them:\n{}",
        differ.len(),
        corpus.len(),
        differ.join("\n")
    );
    // The corpus exercises refusals and every route; the gateway's own refusals are counted
    // under their reason.
    assert!(refused >= 10, "{refused} refused");
    let bad_path = gw
        .metric("portcullis_malformed_total", &[("reason", "bad_path")])
        .await;
    assert!(bad_path >= 1.0, "{bad_path}");
    // Forwarded as sent: every target the upstreams got is one of the corpus, unchanged.
    let seen = targets.lock().unwrap().clone();
    let routed = corpus.len() - refused;
    assert_eq!(seen.len(), routed, "{seen:?}");
    for target in &seen {
        assert!(corpus.contains(target), "forwarded as {target}");
    }
}

/// A route-scoped login limit cannot be walked past by encoding the path: every disguise of
/// the login path is the login route, and is limited with it.
#[tokio::test]
async fn a_login_limit_holds_for_every_disguise_of_the_login_path() {
    let up = upstream().run().await;
    let config = "[[route]]\npath = \"/api/v1/login\"\nupstream = \"api\"\n\
                  rate_limit = [\"login\"]\n\n\
                  [rate_limit.login]\nrate = \"1r/m\"\nburst = 0\nnodelay = true\n";
    let gw = gateway(&up).extra(config).start().await;
    assert_eq!(get_raw(gw.port, "/api/v1/login/access-token").await.0, 200);
    for disguise in [
        "/api/v1/%6Cogin/access-token",
        "/%61pi/v1/login/access-token",
        "/api/v1/login%2faccess-token",
        "//api/v1/login/access-token",
        "/api//v1/login/access-token",
        "/x/../api/v1/login/access-token",
        "/./api/v1/login/access-token",
        "/api/v1/x/%2e%2e/login/access-token",
    ] {
        assert_eq!(get_raw(gw.port, disguise).await.0, 429, "{disguise}");
    }
    // Other paths are not limited.
    assert_eq!(get_raw(gw.port, "/api/v1/items").await.0, 200);
    let login_calls = up
        .paths()
        .iter()
        .filter(|p| p.contains("login") || p.contains("ogin"))
        .count();
    assert_eq!(login_calls, 1, "{:?}", up.paths());
}
