//! Test builders: a recording upstream, the real portcullis binary, and a metrics reader.
//!
//! Everything binds to 127.0.0.1 on ephemeral ports; every wait is a bounded poll.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names lower-cased; repeated headers joined with ", ".
    pub headers: HashMap<String, String>,
}

/// A real HTTP/1.1 upstream that records every request and answers by path.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Builds an [`Upstream`]: `upstream().status("/missing", 404).run().await`.
pub struct UpstreamBuilder {
    statuses: Vec<(String, u16)>,
    slow: Vec<(String, Duration)>,
}

pub fn upstream() -> UpstreamBuilder {
    UpstreamBuilder {
        statuses: vec![],
        slow: vec![],
    }
}

impl UpstreamBuilder {
    /// Paths starting with `prefix` get `status` (others 200 with body "hello").
    pub fn status(mut self, prefix: &str, status: u16) -> Self {
        self.statuses.push((prefix.to_string(), status));
        self
    }

    /// Paths starting with `prefix` are answered after `delay`.
    pub fn slow(mut self, prefix: &str, delay: Duration) -> Self {
        self.slow.push((prefix.to_string(), delay));
        self
    }

    pub async fn run(self) -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rules = Arc::new((self.statuses, self.slow));
        let rec = seen.clone();
        let addr = listen(move |stream| {
            let (rec, rules) = (rec.clone(), rules.clone());
            async move {
                let _ = serve_conn(stream, rec, rules).await;
            }
        })
        .await;
        Upstream { addr, seen }
    }
}

/// Status by path prefix, and delay by path prefix.
type Rules = (Vec<(String, u16)>, Vec<(String, Duration)>);

async fn serve_conn(
    stream: tokio::net::TcpStream,
    rec: Arc<Mutex<Vec<Seen>>>,
    rules: Arc<Rules>,
) -> std::io::Result<()> {
    let (statuses, slow) = (&rules.0, &rules.1);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers: HashMap<String, String> = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers
                    .entry(k.trim().to_ascii_lowercase())
                    .and_modify(|e| {
                        e.push_str(", ");
                        e.push_str(v.trim())
                    })
                    .or_insert_with(|| v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).await?;
        let status = statuses
            .iter()
            .filter(|(p, _)| path.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map_or(200, |(_, s)| *s);
        if let Some((_, delay)) = slow.iter().find(|(p, _)| path.starts_with(p.as_str())) {
            tokio::time::sleep(*delay).await;
        }
        rec.lock().unwrap().push(Seen {
            method,
            path: path.clone(),
            headers,
        });
        let body = format!("hello from upstream: {path}");
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{body}",
            body.len()
        );
        w.write_all(resp.as_bytes()).await?;
    }
}

impl Upstream {
    /// Everything the upstream has received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Paths received so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }
}

/// Listens on an ephemeral loopback port and runs `handle` on each accepted connection, for
/// upstreams that a test shapes itself.
pub async fn listen<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// Reads a request head (through the blank line) from `stream`; `None` if the peer closes
/// first. The bytes after the head, if any, are returned too.
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((buf, rest));
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A port nothing listens on now.
///
/// Ports come from below the kernel's ephemeral range (32768+), so the outgoing connections
/// of tests running in parallel never take a port between this check and the gateway's bind;
/// each test process starts at its own offset and never hands out the same port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 400) as u16 * 30;
    for _ in 0..2_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// The portcullis binary, started on a generated config.
pub struct Gateway {
    pub child: Option<Child>,
    pub port: u16,
    pub metrics_port: u16,
    pub admin_port: u16,
    /// Keeps the temporary directory (config, state, logs) alive as long as the gateway.
    pub dir: Arc<tempfile::TempDir>,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// `RUST_LOG` for the binary.
    log_level: String,
    /// With [`GatewayBuilder::stderr_never_read`]: the read end of the binary's stderr, held
    /// open and never read, as a stalled log collector would.
    unread_stderr: Option<Option<std::process::ChildStderr>>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Builds a gateway config: `gateway(&up).extra("[probes]\n...").start()`.
pub struct GatewayBuilder {
    upstreams: Vec<SocketAddr>,
    extra: String,
    route_extra: String,
    upstream_extra: String,
    server_extra: String,
    admin_extra: String,
    dir: Option<Arc<tempfile::TempDir>>,
    ports: Option<(u16, u16, u16)>,
    root_path: String,
    log_level: String,
    stderr_never_read: bool,
}

pub fn gateway(up: &Upstream) -> GatewayBuilder {
    gateway_to(up.addr)
}

/// A gateway in front of any upstream server listening at `addr`.
pub fn gateway_to(addr: SocketAddr) -> GatewayBuilder {
    GatewayBuilder {
        upstreams: vec![addr],
        extra: String::new(),
        route_extra: String::new(),
        upstream_extra: String::new(),
        server_extra: String::new(),
        admin_extra: String::new(),
        dir: None,
        ports: None,
        root_path: "/".into(),
        log_level: "info".into(),
        stderr_never_read: false,
    }
}

impl GatewayBuilder {
    /// Upstream servers instead of the one given to [`gateway`].
    pub fn servers(mut self, servers: Vec<SocketAddr>) -> Self {
        self.upstreams = servers;
        self
    }
    /// TOML appended to the config file.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
    /// The path prefix of the built-in route (default "/").
    pub fn route_path(mut self, path: &str) -> Self {
        self.root_path = path.into();
        self
    }
    /// Keys added to the built-in `[[route]]`.
    pub fn route(mut self, toml: &str) -> Self {
        self.route_extra.push_str(toml);
        self.route_extra.push('\n');
        self
    }
    /// Keys added to the built-in `[[upstream]]`.
    pub fn upstream(mut self, toml: &str) -> Self {
        self.upstream_extra.push_str(toml);
        self.upstream_extra.push('\n');
        self
    }
    /// Keys added to `[server]`.
    pub fn server(mut self, toml: &str) -> Self {
        self.server_extra.push_str(toml);
        self.server_extra.push('\n');
        self
    }
    /// `RUST_LOG` for the binary (default "info").
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }
    /// The binary's stderr goes to a pipe that nobody reads (its log is then empty).
    pub fn stderr_never_read(mut self) -> Self {
        self.stderr_never_read = true;
        self
    }
    /// Keys added to `[admin]`.
    pub fn admin(mut self, toml: &str) -> Self {
        self.admin_extra.push_str(toml);
        self.admin_extra.push('\n');
        self
    }
    /// Fixes the directory the config (and any files written beside it) will live in.
    fn with_dir(mut self) -> Self {
        if self.dir.is_none() {
            self.dir = Some(Arc::new(tempfile::tempdir().unwrap()));
        }
        self
    }
    /// Writes the config and returns its path without starting anything.
    pub fn write(&self) -> (Arc<tempfile::TempDir>, PathBuf, (u16, u16, u16)) {
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().unwrap()));
        let (port, metrics_port, admin_port) = self
            .ports
            .unwrap_or_else(|| (free_port(), free_port(), free_port()));
        let servers: Vec<String> = self.upstreams.iter().map(|a| format!("\"{a}\"")).collect();
        let config = format!(
            r#"
[server]
listen = ["127.0.0.1:{port}"]
state_dir = "state"
shutdown_grace = "1s"
threads = 2
{fast_path}{server_extra}
[metrics]
listen = "127.0.0.1:{metrics_port}"

[admin]
listen = "127.0.0.1:{admin_port}"
{admin_extra}
[[upstream]]
name = "api"
servers = [{servers}]
down_for = "30s"
{upstream_extra}
[[route]]
path = "{root_path}"
upstream = "api"
{route_extra}
[log]
level = "info"

{extra}
"#,
            servers = servers.join(", "),
            // The suite runs on either proxy path (scripts/test runs it on both).
            fast_path = match std::env::var("PORTCULLIS_E2E_FAST_PATH") {
                Ok(v) if !self.server_extra.contains("fast_path") => format!("fast_path = {v}\n"),
                _ => String::new(),
            },
            server_extra = self.server_extra,
            admin_extra = self.admin_extra,
            route_extra = self.route_extra,
            // Short, so tests with a dead server finish fast, unless the test sets its own.
            upstream_extra = if self.upstream_extra.contains("connect_timeout") {
                self.upstream_extra.clone()
            } else {
                format!("connect_timeout = \"1s\"\n{}", self.upstream_extra)
            },
            extra = self.extra,
            root_path = self.root_path,
        );
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, config).unwrap();
        (dir, path, (port, metrics_port, admin_port))
    }

    /// Starts the binary and waits until it serves.
    pub async fn start(self) -> Gateway {
        let (dir, config_path, (port, metrics_port, admin_port)) = self.write();
        let log_path = dir.path().join(format!("gateway-{}.log", free_port()));
        let mut gw = Gateway {
            child: None,
            log_level: self.log_level.clone(),
            unread_stderr: self.stderr_never_read.then_some(None),
            port,
            metrics_port,
            admin_port,
            dir,
            config_path,
            log_path,
        };
        gw.spawn();
        gw.wait_ready().await;
        gw
    }
}

impl Gateway {
    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log_path).unwrap();
        let stderr = match self.unread_stderr {
            Some(_) => Stdio::piped(),
            None => Stdio::from(log.try_clone().unwrap()),
        };
        let mut child = Command::new(binary())
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", &self.log_level)
            .stdout(log)
            .stderr(stderr)
            .stdin(Stdio::null())
            .spawn()
            .expect("start portcullis");
        if let Some(held) = self.unread_stderr.as_mut() {
            *held = child.stderr.take();
        }
        self.child = Some(child);
    }

    /// Polls the proxy and metrics ports until both answer (bounded: 20 s).
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = client();
        loop {
            let metrics_ok = client
                .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
                .send()
                .await
                .is_ok();
            let proxy_ok = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok();
            if metrics_ok && proxy_ok {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("gateway exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not become ready; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The gateway's log output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The value of one sample in `/metrics`, e.g. `metric("portcullis_requests_total",
    /// &[("decision", "proxied")])`: the sum over samples whose labels include `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = client()
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sum_metric(&text, name, labels)
    }

    /// Polls `/metrics` (bounded: 3 s) until the sample sum equals `want`, and returns the last
    /// value seen. Counters are bumped in the logging phase, just after the response is sent,
    /// so a test reading right after its last response must allow for that.
    pub async fn metric_settles(&self, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let v = self.metric(name, labels).await;
            if v == want || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGKILL and waits for the process to go.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} {pid} failed");
    }

    /// Waits (bounded) for the process to exit; returns its exit status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        while start.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some((status, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Restarts on the same config, state and ports.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_ready().await;
    }

    /// Rewrites the config file (for reload tests).
    pub fn rewrite_config(&self, text: &str) {
        let mut f = std::fs::File::create(&self.config_path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sums samples of `name` whose label set includes every pair in `labels`.
pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A plain HTTP client with no connection reuse surprises and a bounded timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap()
}

/// Starts `builder` with a TLS listener too (a fresh self-signed cert for "localhost") and
/// returns it with a client that trusts the cert and resolves "localhost" to it, and the port.
pub async fn with_tls(builder: GatewayBuilder) -> (Gateway, reqwest::Client, u16) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let tls_port = free_port();
    let builder = builder.with_dir();
    let dir = builder.dir.clone().unwrap();
    let cert_path = write_file(dir.path(), "cert.pem", &cert_pem);
    let key_path = write_file(dir.path(), "key.pem", &cert.key_pair.serialize_pem());
    let gw = builder
        .server(&format!(
            "tls = [{{ listen = \"127.0.0.1:{tls_port}\", cert = \"{}\", key = \"{}\" }}]",
            cert_path.display(),
            key_path.display()
        ))
        .start()
        .await;
    // The TLS listener may start after the plain one that start() waited for.
    let listening = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
            .await
            .is_ok()
    })
    .await;
    assert!(listening, "the TLS listener never came up: {}", gw.log());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], tls_port).into())
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap();
    (gw, client, tls_port)
}

/// Runs `portcullis ARGS` and returns (success, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Polls `cond` every 20 ms until it is true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The built-in scanner list on, probes answered 404.
pub const PROBES_404: &str = "[probes]\nbuiltin = true\naction = \"404\"";

/// Loopback is the trusted balancer; each test client names itself in X-Forwarded-For.
pub const BEHIND_PROXY: &str = "[client_ip]\ntrusted_proxies = [\"127.0.0.1/32\"]\n";

/// GET `url` as the client `client_ip` (named in X-Forwarded-For).
pub async fn get_url_as(url: String, client_ip: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("x-forwarded-for", client_ip)
        .send()
        .await
        .unwrap()
}

/// GET `path` through the gateway as the client `client_ip`.
pub async fn get_as(gw: &Gateway, client_ip: &str, path: &str) -> reqwest::Response {
    get_url_as(gw.url(path), client_ip).await
}

/// The status of [`get_as`].
pub async fn status_as(gw: &Gateway, client_ip: &str, path: &str) -> u16 {
    get_as(gw, client_ip, path).await.status().as_u16()
}

/// A real nginx (scripts/setup installs it), stopped when dropped.
pub struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The nginx binary; the suite needs one (scripts/setup installs nginx-light).
pub fn nginx_binary() -> &'static str {
    [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("nginx is not installed: run scripts/setup")
}

/// Starts nginx in the foreground with everything it writes under `dir`, and `http` as the
/// inside of its `http {}` block (the `server` blocks and zones of a test).
pub fn start_nginx(dir: &Path, http: &str) -> Nginx {
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log;
events {{}}
http {{
  access_log off;
  client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3;
  uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;
{http}
}}
"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    Nginx(child)
}

/// Accepts any server certificate: the test's gateway has a fresh self-signed one.
#[derive(Debug)]
pub struct AnyCert(pub std::sync::Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
        _server_name: &tokio_rustls::rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connector to the gateway's TLS listener (its self-signed certificate accepted) that
/// offers `h2` only: for tests that write HTTP/2 frames themselves.
pub fn h2_connector() -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// A stream that keeps a copy of every byte read from it (an h2 client's view of the
/// server's frames, an upstream's log of what the gateway sent).
pub struct Tap<S> {
    pub inner: S,
    pub read: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = buf.filled()[before..].to_vec();
        self.read.lock().unwrap().extend_from_slice(&got);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
