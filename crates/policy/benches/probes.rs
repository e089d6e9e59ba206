//! Cost of one probe check, canonicalization included, with the built-in list plus 1,000
//! custom rules (400 exact paths, 400 prefixes, 200 regexes, and two user-agent regexes), and
//! with the built-in list alone (the default). Goal: under 1 µs per request.
//!
//! Run: `cargo bench -p portcullis-policy --bench probes`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_policy::probes::{canonicalize, ProbeMatcher, ProbeSettings};

fn settings_with_custom_rules() -> ProbeSettings {
    ProbeSettings {
        builtin: true,
        paths: (0..400).map(|i| format!("/legacy/page-{i}.html")).collect(),
        prefixes: (0..400).map(|i| format!("/old-app-{i}/")).collect(),
        regex: (0..200)
            .map(|i| format!(r"^/tenant-{i}/(debug|internal)/[a-z]+\.json$"))
            .collect(),
        user_agents: vec!["badbot".into(), r"evil-crawler/\d".into()],
        allow: vec!["/.well-known/acme-challenge/".into()],
        ..ProbeSettings::default()
    }
}

const BROWSER: &[u8] =
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

fn bench_check(c: &mut Criterion) {
    let matcher = ProbeMatcher::new(&settings_with_custom_rules()).expect("valid settings");
    let cases: [(&str, &[u8], &[u8]); 8] = [
        (
            "benign",
            b"/api/v1/users/42/orders?page=2&sort=desc",
            BROWSER,
        ),
        (
            "benign_api_client",
            b"/api/v1/search?q=.env",
            b"python-requests/2.31.0",
        ),
        ("probe", b"/wordpress/wp-login.php", BROWSER),
        ("encoded_probe", b"/cgi-bin/.%2e/.%2e/.%2e/bin/sh", BROWSER),
        (
            "encoded_benign",
            b"/api/v1/files/Annual%20Report%202024.pdf",
            BROWSER,
        ),
        // Worst case for the signatures: a long, encoded query that matches nothing.
        (
            "benign_long_query",
            b"/api/v1/search?q=how%20to%20configure%20a%20reverse%20proxy%20in%20front%20of%20fastapi&filter=lang%3Aen%2Ctype%3Aarticle&sort=-relevance&page=3&per_page=50&fields=id,title,summary,url,author,created_at,updated_at&include=tags%2Cauthor&utm_source=newsletter&utm_medium=email&utm_campaign=2024-05",
            BROWSER,
        ),
        (
            "signature_in_query",
            b"/api/v1/search?q=%24%7B%24%7Blower%3Aj%7Dndi%3Aldap%3A%2F%2Fx%2Fa%7D",
            BROWSER,
        ),
        ("probe_after_mounts", b"/api/old/wp-login.php", BROWSER),
    ];
    let mut group = c.benchmark_group("probes_check_builtin_plus_1000");
    for (name, path, agent) in cases {
        group.bench_function(name, |b| {
            b.iter(|| matcher.check(black_box(path), black_box(Some(agent))))
        });
    }
    group.finish();

    // The default configuration: built-in list only, no custom regexes.
    let builtin_only = ProbeMatcher::new(&ProbeSettings::default()).expect("built-in list");
    let mut group = c.benchmark_group("probes_check_builtin_only");
    for (name, path, agent) in [cases[0], cases[2], cases[4], cases[5], cases[6]] {
        group.bench_function(name, |b| {
            b.iter(|| builtin_only.check(black_box(path), black_box(Some(agent))))
        });
    }
    group.finish();

    c.bench_function("probes_canonicalize_alloc/encoded", |b| {
        b.iter(|| canonicalize(black_box(b"/static/..%2f..%2f%252e%252e/.ENV;x=1?y")))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_check
}
criterion_main!(benches);
