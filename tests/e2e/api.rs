//! `[api]` end to end, in front of a real FastAPI app (tests/apps/fastapi_app.py, run under
//! uvicorn from the venv scripts/setup makes): its `/openapi.json` loaded through
//! `openapi_url`, every route reachable, scanner requests refused before the app, a reload
//! picking up a changed spec, and a gateway that starts with the app down still serving.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::fast_path::read_response;
use crate::support::*;

/// The FastAPI app, killed when dropped.
struct FastApi {
    child: Child,
    port: u16,
}

impl Drop for FastApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl FastApi {
    /// Starts the app on a free port and waits until it answers.
    async fn start() -> FastApi {
        let python = workspace().join("target/pyenv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/setup (it installs FastAPI and uvicorn)",
            python.display()
        );
        let port = free_port();
        let child = Command::new(python)
            .arg(workspace().join("tests/apps/fastapi_app.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the FastAPI app");
        let app = FastApi { child, port };
        // Python imports FastAPI in about a second; a loaded machine (CI runs the suite on
        // two cores) can take many times that.
        let up = eventually(Duration::from_secs(60), || async {
            client().get(app.url("/_test/seen")).send().await.is_ok()
        })
        .await;
        assert!(up, "the FastAPI app did not start on port {port}");
        app
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The requests the app has served (method and path), its test routes aside.
    async fn seen(&self) -> Vec<String> {
        let resp = client().get(self.url("/_test/seen")).send().await.unwrap();
        resp.json().await.unwrap()
    }
}

/// Sends `METHOD target` with `body` (JSON) through the gateway as client `ip` and returns the
/// status and the response as text.
async fn send(gw: &Gateway, ip: &str, method: &str, target: &str, body: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nhost: api.test\r\nx-forwarded-for: {ip}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = read_response(&mut conn, method == "HEAD").await;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

fn api_config(spec_url: &str) -> String {
    format!(
        "[api]\nopenapi_url = \"{spec_url}\"\nunknown = \"refuse\"\nextra_paths = [\"/docs\"]\n\
         [reputation]\nmaxretry = 5\nignoreip = []\n"
    )
}

#[tokio::test]
async fn a_fastapi_app_behind_the_gateway_gets_its_own_clients_and_no_scanners() {
    let app = FastApi::start().await;
    let spec_url = app.url("/openapi.json");
    let addr = format!("127.0.0.1:{}", app.port).parse().unwrap();
    let gw = gateway_to(addr)
        .extra(BEHIND_PROXY)
        .extra(PROBES_404)
        .extra(&api_config(&spec_url))
        .start()
        .await;
    assert_eq!(
        gw.metric("portcullis_api_spec_templates", &[]).await,
        7.0,
        "the spec was not loaded: {}",
        gw.log()
    );

    // Every route, with values that look like probe words, from one client: all served, and
    // that client is never banned.
    let client = "198.51.100.20";
    let login = r#"{"username": "admin", "password": "wp-admin"}"#;
    let legit = [
        ("GET", "/health", ""),
        ("POST", "/api/v1/login/access-token", login),
        ("GET", "/api/v1/users/phpmyadmin@example.org", ""),
        ("GET", "/api/v1/users/root%40localhost", ""),
        ("GET", "/api/v1/files/.env.example", ""),
        ("GET", "/api/v1/files/wp-config-sample.php", ""),
        ("GET", "/api/v1/files/backup.sql", ""),
        ("GET", "/api/v1/articles/wp-login-guide", ""),
        ("GET", "/api/v1/articles/phpmyadmin", ""),
        ("GET", "/api/v1/items/", ""),
        ("POST", "/api/v1/items/", r#"{"name": ".git"}"#),
        ("GET", "/api/v1/items/42", ""),
        ("DELETE", "/api/v1/items/42", ""),
        ("HEAD", "/api/v1/items/42", ""),
        ("GET", "/docs", ""),
    ];
    for _ in 0..2 {
        for (method, target, body) in legit {
            let (status, answer) = send(&gw, client, method, target, body).await;
            assert!(
                matches!(status, 200 | 201 | 204 | 405),
                "{method} {target}: {answer}"
            );
        }
    }
    // (HEAD on FastAPI is its own 405: the gateway let it through, as the spec says.)
    let seen = app.seen().await;
    assert_eq!(seen.len(), 2 * legit.len(), "{seen:?}");
    assert_eq!(gw.metric("portcullis_bans_total", &[]).await, 0.0);

    // Scanners: refused before the app, each a first hit.
    let scanners = [
        "/.env",
        "/wp-login.php",
        "/phpmyadmin/index.php",
        "/api/v1/.git/config",
        "/api/v1/unknown",
        "/actuator/env",
        "/api/v1/users",
        "/api/v1/items/42/../../admin",
    ];
    for (i, target) in scanners.iter().enumerate() {
        let ip = format!("203.0.113.{}", 10 + i);
        let (status, answer) = send(&gw, &ip, "GET", target, "").await;
        assert_eq!(status, 404, "{target}: {answer}");
    }
    assert_eq!(
        app.seen().await.len(),
        seen.len(),
        "a scanner reached the app"
    );
    let unknown = [("category", "unknown_route"), ("action", "404")];
    assert!(gw.metric("portcullis_probe_hits_total", &unknown).await >= 2.0);

    // A method the path does not serve: 405 with the methods it does, before the app.
    let (status, answer) = send(&gw, client, "PUT", "/api/v1/users/a@example.org", "{}").await;
    assert_eq!(status, 405, "{answer}");
    assert!(answer.contains("allow: GET, HEAD, OPTIONS"), "{answer}");
    assert_eq!(app.seen().await.len(), seen.len());

    // A new route after a deploy: unknown until the gateway reloads, then served.
    let (status, _) = send(&gw, client, "GET", "/api/v1/beta", "").await;
    assert_eq!(status, 404);
    client_post(&app.url("/_test/add-beta")).await;
    let reload = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/reload", gw.admin_port))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
    let (status, answer) = send(&gw, client, "GET", "/api/v1/beta", "").await;
    assert_eq!(status, 200, "{answer}");
}

async fn client_post(url: &str) {
    let resp = client().post(url).send().await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
}

/// The app down when the gateway starts: no spec, so the gateway serves with the probe
/// blocklist alone (and says so), never refusing everything; the next reload loads it.
#[tokio::test]
async fn without_its_spec_the_gateway_serves_with_the_blocklist_alone() {
    let app = FastApi::start().await;
    let dead = format!("http://127.0.0.1:{}/openapi.json", free_port());
    let addr = format!("127.0.0.1:{}", app.port).parse().unwrap();
    let gw = gateway_to(addr)
        .extra(BEHIND_PROXY)
        .extra(PROBES_404)
        .extra(&api_config(&dead))
        .start()
        .await;
    assert_eq!(gw.metric("portcullis_api_spec_templates", &[]).await, 0.0);
    let failed = [("result", "error")];
    assert!(gw.metric("portcullis_api_spec_loads_total", &failed).await >= 1.0);
    assert!(
        gw.log().contains("serving with the probe blocklist alone"),
        "{}",
        gw.log()
    );
    let (status, answer) = send(&gw, "198.51.100.30", "GET", "/api/v1/articles/x", "").await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = send(&gw, "198.51.100.31", "GET", "/api/v1/not-in-spec", "").await;
    assert_eq!(status, 404, "forwarded: the app's own 404");
    assert_eq!(send(&gw, "198.51.100.32", "GET", "/.env", "").await.0, 404);
    assert_eq!(app.seen().await.len(), 2);

    // Pointed at the app and reloaded: the spec is in use.
    let text = gw.config_text().replace(&dead, &app.url("/openapi.json"));
    gw.rewrite_config(&text);
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || async {
            gw.metric("portcullis_api_spec_templates", &[]).await > 0.0
        })
        .await,
        "{}",
        gw.log()
    );
    let (status, _) = send(&gw, "198.51.100.33", "GET", "/api/v1/not-in-spec", "").await;
    assert_eq!(status, 404);
    assert_eq!(app.seen().await.len(), 2, "refused before the app now");
}
