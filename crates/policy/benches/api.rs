//! Cost of one API-spec check: a generated spec of 1,000 templates (50 resources with
//! static and parameter siblings, nested sub-resources) and a real FastAPI spec. Goal: under
//! about 0.3 µs per check.
//!
//! Run: `cargo bench -p portcullis-policy --bench api`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_policy::api::Spec;

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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_check
}
criterion_main!(benches);
