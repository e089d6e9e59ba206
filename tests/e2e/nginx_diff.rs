//! The same request schedule sent to real nginx `limit_req` and to the portcullis binary must
//! get the same status sequence. (crates/policy/tests/nginx_differential.rs checks the engine
//! against nginx request by request, delays included; this checks the whole binary.)

use std::path::Path;
use std::time::{Duration, Instant};

use portcullis_policy::limiter::{simulate, Decision, Delay, Rate, ZoneSettings};

use crate::support::*;

/// nginx with one `limit_req` zone in front of a static file (a `return` would answer before
/// limit_req runs).
fn start_limit_nginx(dir: &Path, port: u16, rate: &str, burst: u64) -> Nginx {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "ok").unwrap();
    start_nginx(
        dir,
        &format!(
            "  limit_req_zone $binary_remote_addr zone=z:1m rate={rate};
  limit_req_status 429;
  server {{
    listen 127.0.0.1:{port};
    location / {{ limit_req zone=z burst={burst} nodelay; root {d}/www; }}
  }}"
        ),
    )
}

#[tokio::test]
async fn binary_and_nginx_give_the_same_status_sequence() {
    let up = upstream().run().await;
    let gw = gateway(&up)
        .route("rate_limit = [\"z\"]")
        .extra("[rate_limit.z]\nrate = \"2r/s\"\nburst = 3\nnodelay = true")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nginx = start_limit_nginx(dir.path(), port, "2r/s", 3);
    let nginx_url = format!("http://127.0.0.1:{port}/");
    assert!(
        eventually(Duration::from_secs(5), || async {
            client().get(&nginx_url).send().await.is_ok()
        })
        .await,
        "nginx did not start"
    );
    // Let the probe request drain from nginx's bucket (2r/s: 500 ms a request).
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // A burst, a trickle just under the rate, an idle gap, a second burst. Every request is
    // at least 100 ms from a decision boundary (checked below against the reference model):
    // a loaded CI machine delays a request by tens of milliseconds, so the rate is slow
    // enough (2r/s) for that not to move a request across a boundary.
    let schedule: [u64; 16] = [
        0, 0, 0, 0, 0, 0, 750, 1250, 1750, 2100, 4500, 4500, 4500, 4500, 4500, 5050,
    ];
    let zone = ZoneSettings {
        name: "z".into(),
        rate: Rate::per_second(2),
        burst: 3,
        delay: Delay::NoDelay,
        max_clients: 16,
    };
    for shift in [0, 100] {
        let early: Vec<u64> = schedule.iter().map(|t| t + 1000 - shift).collect();
        let late: Vec<u64> = schedule.iter().map(|t| t + 1000 + shift).collect();
        assert_eq!(
            simulate(&zone, &early),
            simulate(&zone, &late),
            "schedule near a boundary"
        );
    }
    let expected: Vec<u16> = simulate(&zone, &schedule)
        .into_iter()
        .map(|d| match d {
            Decision::Reject { .. } => 429,
            _ => 200,
        })
        .collect();
    assert!(
        expected.contains(&200) && expected.contains(&429),
        "the schedule must exercise both decisions: {expected:?}"
    );

    let c = client();
    let start = Instant::now();
    let mut from_nginx = Vec::new();
    let mut from_portcullis = Vec::new();
    for at in schedule {
        let wait = Duration::from_millis(at).saturating_sub(start.elapsed());
        tokio::time::sleep(wait).await;
        let (a, b) = tokio::join!(c.get(&nginx_url).send(), c.get(gw.url("/")).send());
        from_nginx.push(a.unwrap().status().as_u16());
        from_portcullis.push(b.unwrap().status().as_u16());
    }
    assert_eq!(from_nginx, expected, "nginx vs the reference model");
    assert_eq!(from_portcullis, from_nginx, "portcullis vs nginx");
}
