//! The API-spec positive model: behaviour on small specs written here, then real public specs
//! (tests/corpora/api/README.md gives their provenance): every declared route must be known,
//! whatever realistic value fills its parameters, and scanner paths must stay unknown.

use portcullis_policy::api::{ApiMatch, Spec, SpecError};

fn spec(text: &str) -> Spec {
    Spec::parse(text.as_bytes()).unwrap_or_else(|error| panic!("spec refused: {error}"))
}

fn error(text: &str) -> String {
    match Spec::parse(text.as_bytes()) {
        Ok(_) => panic!("spec accepted: {text}"),
        Err(error) => error.to_string(),
    }
}

fn check(spec: &Spec, method: &str, path: &str) -> ApiMatch {
    spec.check(method.as_bytes(), path.as_bytes())
}

/// An OpenAPI 3.1 JSON document with these `paths` (a JSON object body) and `servers`.
fn openapi(paths: &str, servers: &str) -> String {
    format!(
        r#"{{"openapi": "3.1.0", "info": {{"title": "t", "version": "1"}}{servers}, "paths": {{{paths}}}}}"#
    )
}

const OP: &str = r#"{"responses": {"200": {"description": "OK"}}}"#;

fn users_spec() -> Spec {
    spec(&openapi(
        &format!(
            r#""/users/": {{"get": {OP}, "post": {OP}}},
               "/users/me": {{"get": {OP}}},
               "/users/{{user_id}}": {{"get": {OP}, "delete": {OP}, "parameters": [], "summary": "x", "x-internal": true}},
               "/users/{{user_id}}/avatar": {{"put": {OP}}},
               "/users/me/settings/{{key}}": {{"get": {OP}}},
               "/files/{{name}}.{{ext}}": {{"get": {OP}}},
               "/": {{"get": {OP}}}"#
        ),
        "",
    ))
}

// --- Templates and parameters --------------------------------------------------------------

#[test]
fn params_match_exactly_one_non_empty_segment() {
    let spec = users_spec();
    assert_eq!(spec.template_count(), 7);
    assert_eq!(check(&spec, "GET", "/users/42"), ApiMatch::Known);
    assert_eq!(
        check(&spec, "GET", "/users/alice@example.org"),
        ApiMatch::Known
    );
    assert_eq!(check(&spec, "GET", "/users/42/extra"), ApiMatch::Unknown);
    assert_eq!(check(&spec, "GET", "/users/42/avatar/x"), ApiMatch::Unknown);
    assert_eq!(check(&spec, "GET", "/users"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/other"), ApiMatch::Unknown);
}

#[test]
fn static_segments_win_and_dead_ends_backtrack_to_params() {
    let spec = users_spec();
    // `me` is static; `/users/me/avatar` only exists through `{user_id}`.
    assert_eq!(check(&spec, "GET", "/users/me"), ApiMatch::Known);
    assert_eq!(check(&spec, "PUT", "/users/me/avatar"), ApiMatch::Known);
    assert_eq!(
        check(&spec, "GET", "/users/me/settings/theme"),
        ApiMatch::Known
    );
    // DELETE is declared on `{user_id}` only, and `me` matches it too.
    assert_eq!(check(&spec, "DELETE", "/users/me"), ApiMatch::Known);
    assert_eq!(
        check(&spec, "GET", "/users/42/settings/theme"),
        ApiMatch::Unknown
    );
}

#[test]
fn deep_backtracking_finds_the_param_branch() {
    let spec = spec(&openapi(
        &format!(
            r#""/a/b/c/d": {{"get": {OP}}},
               "/a/b/c/{{x}}/e": {{"get": {OP}}},
               "/a/{{p}}/{{q}}/d/f": {{"post": {OP}}},
               "/{{r}}/b/c/d/g": {{"put": {OP}}}"#
        ),
        "",
    ));
    assert_eq!(check(&spec, "GET", "/a/b/c/d/e"), ApiMatch::Known);
    assert_eq!(check(&spec, "POST", "/a/b/c/d/f"), ApiMatch::Known);
    assert_eq!(check(&spec, "PUT", "/a/b/c/d/g"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/a/b/c/d/h"), ApiMatch::Unknown);
}

#[test]
fn patterns_inside_a_segment() {
    let spec = users_spec();
    assert_eq!(check(&spec, "GET", "/files/report.pdf"), ApiMatch::Known);
    assert_eq!(
        check(&spec, "GET", "/files/archive.tar.gz"),
        ApiMatch::Known
    );
    assert_eq!(check(&spec, "GET", "/files/report"), ApiMatch::Unknown);
    assert_eq!(check(&spec, "GET", "/files/.env"), ApiMatch::Unknown);
}

#[test]
fn root_template() {
    let spec = users_spec();
    assert_eq!(check(&spec, "GET", "/"), ApiMatch::Known);
    let without_root = spec_without_root();
    assert_eq!(check(&without_root, "GET", "/"), ApiMatch::Unknown);
}

fn spec_without_root() -> Spec {
    spec(&openapi(&format!(r#""/items": {{"get": {OP}}}"#), ""))
}

#[test]
fn paths_are_case_sensitive_and_need_a_leading_slash() {
    let spec = users_spec();
    assert_eq!(check(&spec, "GET", "/Users/me"), ApiMatch::Unknown);
    assert_eq!(check(&spec, "OPTIONS", "*"), ApiMatch::Unknown);
    assert_eq!(check(&spec, "GET", "users/me"), ApiMatch::Unknown);
}

#[test]
fn non_utf8_and_odd_bytes_are_plain_bytes() {
    let spec = users_spec();
    assert_eq!(spec.check(b"GET", b"/users/\xff\xfe"), ApiMatch::Known);
    assert_eq!(spec.check(b"GET", b"/\xff"), ApiMatch::Unknown);
    assert_eq!(
        spec.check(b"G\0T", b"/users/1"),
        ApiMatch::MethodNotAllowed {
            allow: "DELETE, GET, HEAD, OPTIONS"
        }
    );
    // Callers merge slashes; an unmerged empty segment matches nothing.
    assert_eq!(spec.check(b"GET", &[b'/'; 10_000]), ApiMatch::Unknown);
    let deep = "/users/1".repeat(2_000);
    assert_eq!(check(&spec, "GET", &deep), ApiMatch::Unknown);
}

#[test]
fn static_segments_are_percent_decoded_to_meet_decoded_requests() {
    let spec = spec(&openapi(
        &format!(r#""/reports/annual%20report": {{"get": {OP}}}"#),
        "",
    ));
    assert_eq!(
        check(&spec, "GET", "/reports/annual report"),
        ApiMatch::Known
    );
}

#[test]
fn same_shape_templates_merge_their_methods() {
    // As in the FastAPI corpus: `/exam-attempts/{id}` GET and `/exam-attempts/{attempt_id}`
    // PATCH are one route.
    let spec = spec(&openapi(
        &format!(r#""/a/{{id}}": {{"get": {OP}}}, "/a/{{other}}": {{"patch": {OP}}}"#),
        "",
    ));
    assert_eq!(check(&spec, "GET", "/a/1"), ApiMatch::Known);
    assert_eq!(check(&spec, "PATCH", "/a/1"), ApiMatch::Known);
    assert_eq!(
        check(&spec, "PUT", "/a/1"),
        ApiMatch::MethodNotAllowed {
            allow: "GET, HEAD, OPTIONS, PATCH"
        }
    );
}

// --- Trailing slash ------------------------------------------------------------------------

#[test]
fn trailing_slash_is_ignored_both_ways() {
    let spec = users_spec();
    // Declared `/users/`, requested without; declared `/users/me`, requested with.
    assert_eq!(check(&spec, "POST", "/users"), ApiMatch::Known);
    assert_eq!(check(&spec, "POST", "/users/"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/users/me/"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/users/42/"), ApiMatch::Known);
}

// --- Methods -------------------------------------------------------------------------------

#[test]
fn undeclared_method_is_405_with_a_sorted_allow() {
    let spec = users_spec();
    assert_eq!(
        check(&spec, "DELETE", "/users/"),
        ApiMatch::MethodNotAllowed {
            allow: "GET, HEAD, OPTIONS, POST"
        }
    );
    // `/users/me` matches both `me` (GET) and `{user_id}` (GET, DELETE): the union.
    assert_eq!(
        check(&spec, "PATCH", "/users/me"),
        ApiMatch::MethodNotAllowed {
            allow: "DELETE, GET, HEAD, OPTIONS"
        }
    );
    assert_eq!(
        check(&spec, "GET", "/users/1/avatar"),
        ApiMatch::MethodNotAllowed {
            allow: "OPTIONS, PUT"
        }
    );
}

#[test]
fn options_always_passes_and_head_follows_get() {
    let spec = users_spec();
    assert_eq!(check(&spec, "OPTIONS", "/users/1/avatar"), ApiMatch::Known);
    assert_eq!(check(&spec, "HEAD", "/users/me"), ApiMatch::Known);
    assert!(matches!(
        check(&spec, "HEAD", "/users/1/avatar"),
        ApiMatch::MethodNotAllowed { .. }
    ));
    // OPTIONS does not make an unknown path known.
    assert_eq!(check(&spec, "OPTIONS", "/.env"), ApiMatch::Unknown);
}

#[test]
fn methods_are_case_sensitive_and_unknown_methods_are_refused() {
    let spec = users_spec();
    for method in ["get", "Get", "PROPFIND", "CONNECT", "QUERY", ""] {
        assert!(
            matches!(
                check(&spec, method, "/users/me"),
                ApiMatch::MethodNotAllowed { .. }
            ),
            "{method:?}"
        );
    }
}

#[test]
fn path_item_without_operations_only_allows_options() {
    let spec = spec(&openapi(
        r#""/empty": {"parameters": [], "summary": "nothing"}"#,
        "",
    ));
    assert_eq!(
        check(&spec, "GET", "/empty"),
        ApiMatch::MethodNotAllowed { allow: "OPTIONS" }
    );
    assert_eq!(check(&spec, "OPTIONS", "/empty"), ApiMatch::Known);
}

#[test]
fn local_refs_are_followed_and_external_refs_allow_everything() {
    let spec = spec(
        r##"{"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
            "paths": {
              "/pets": {"$ref": "#/components/pathItems/Pets"},
              "/pets-alias": {"$ref": "#/paths/~1pets", "delete": {}},
              "/remote": {"$ref": "other.yaml#/paths/~1remote"}
            },
            "components": {"pathItems": {"Pets": {"get": {}, "post": {}}}}}"##,
    );
    assert_eq!(spec.template_count(), 3);
    assert_eq!(check(&spec, "POST", "/pets"), ApiMatch::Known);
    assert!(matches!(
        check(&spec, "PUT", "/pets"),
        ApiMatch::MethodNotAllowed { .. }
    ));
    assert_eq!(check(&spec, "GET", "/pets-alias"), ApiMatch::Known);
    assert_eq!(check(&spec, "DELETE", "/pets-alias"), ApiMatch::Known);
    assert_eq!(check(&spec, "PURGE", "/remote"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/remote/x"), ApiMatch::Unknown);
}

// --- Base paths ----------------------------------------------------------------------------

fn items_with_servers(servers: &str) -> Spec {
    spec(&openapi(
        &format!(r#""/items/{{id}}": {{"get": {OP}}}"#),
        &format!(r#", "servers": {servers}"#),
    ))
}

#[test]
fn absolute_server_url_gives_its_path() {
    let spec = items_with_servers(r#"[{"url": "https://api.example.com/v1"}]"#);
    assert_eq!(spec.base_paths(), ["/v1"]);
    assert_eq!(check(&spec, "GET", "/v1/items/1"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/items/1"), ApiMatch::Unknown);
    assert_eq!(check(&spec, "GET", "/v2/items/1"), ApiMatch::Unknown);
}

#[test]
fn relative_root_and_absent_servers() {
    let relative = items_with_servers(r#"[{"url": "/api/v3"}]"#);
    assert_eq!(check(&relative, "GET", "/api/v3/items/1"), ApiMatch::Known);
    let no_slash = items_with_servers(r#"[{"url": "api"}]"#);
    assert_eq!(check(&no_slash, "GET", "/api/items/1"), ApiMatch::Known);
    for servers in [
        r#"[{"url": "/"}]"#,
        r#"[]"#,
        r#"[{"url": "https://example.com"}]"#,
    ] {
        let root = items_with_servers(servers);
        assert_eq!(root.base_paths(), [""], "{servers}");
        assert_eq!(
            check(&root, "GET", "/items/1"),
            ApiMatch::Known,
            "{servers}"
        );
    }
    let absent = spec(&openapi(
        &format!(r#""/items/{{id}}": {{"get": {OP}}}"#),
        "",
    ));
    assert_eq!(check(&absent, "GET", "/items/1"), ApiMatch::Known);
}

#[test]
fn several_servers_allow_any_of_their_base_paths() {
    let spec = items_with_servers(
        r#"[{"url": "https://api.example.com/v1"}, {"url": "http://localhost:8000/"}]"#,
    );
    assert_eq!(spec.base_paths(), ["/v1", ""]);
    assert_eq!(check(&spec, "GET", "/v1/items/1"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/items/1"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/v2/items/1"), ApiMatch::Unknown);
}

#[test]
fn server_variables_take_enum_and_default_values() {
    let spec = items_with_servers(
        r#"[{"url": "{scheme}://{host}/api/{version}",
             "variables": {"scheme": {"default": "https", "enum": ["https", "http"]},
                           "host": {"default": "example.com"},
                           "version": {"default": "v2", "enum": ["v1", "v2"]}}}]"#,
    );
    assert_eq!(spec.base_paths(), ["/api/v1", "/api/v2"]);
    assert_eq!(check(&spec, "GET", "/api/v1/items/1"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/api/v2/items/1"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/api/v3/items/1"), ApiMatch::Unknown);
    // A variable the server does not define matches one segment.
    let undefined = items_with_servers(r#"[{"url": "/tenants/{tenant}"}]"#);
    assert_eq!(
        check(&undefined, "GET", "/tenants/acme/items/1"),
        ApiMatch::Known
    );
    assert_eq!(
        check(&undefined, "GET", "/tenants/items/1"),
        ApiMatch::Unknown
    );
}

#[test]
fn path_item_servers_replace_the_document_servers() {
    let spec = spec(&openapi(
        &format!(
            r#""/items": {{"get": {OP}}},
               "/upload": {{"post": {OP}, "servers": [{{"url": "https://files.example.com/storage"}}]}}"#
        ),
        r#", "servers": [{"url": "/api"}]"#,
    ));
    assert_eq!(check(&spec, "GET", "/api/items"), ApiMatch::Known);
    assert_eq!(check(&spec, "POST", "/storage/upload"), ApiMatch::Known);
    assert_eq!(check(&spec, "POST", "/api/upload"), ApiMatch::Unknown);
}

#[test]
fn swagger_2_base_path() {
    let spec = spec(
        "swagger: '2.0'\ninfo: {title: t, version: '1'}\nbasePath: /v2\npaths:\n  /pet/{petId}:\n    get: {responses: {200: {description: ok}}}\n",
    );
    assert_eq!(spec.base_paths(), ["/v2"]);
    assert_eq!(check(&spec, "GET", "/v2/pet/1"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/pet/1"), ApiMatch::Unknown);
    let no_base = spec_yaml_swagger_without_base_path();
    assert_eq!(check(&no_base, "GET", "/pet/1"), ApiMatch::Known);
}

fn spec_yaml_swagger_without_base_path() -> Spec {
    spec("swagger: 2.0\npaths:\n  /pet/{petId}:\n    get: {}\n")
}

// --- Extra paths ---------------------------------------------------------------------------

#[test]
fn extra_paths_exact_and_prefix() {
    let extra: Vec<String> = ["/healthz", "/static/", "/docs/api%20v1/", "//metrics//x"]
        .iter()
        .map(|entry| entry.to_string())
        .collect();
    let spec = users_spec()
        .with_extra_paths(&extra)
        .expect("valid entries");
    assert_eq!(check(&spec, "GET", "/healthz"), ApiMatch::Extra);
    assert_eq!(check(&spec, "POST", "/healthz/"), ApiMatch::Extra);
    assert_eq!(check(&spec, "GET", "/healthz/deep"), ApiMatch::Unknown);
    assert_eq!(check(&spec, "GET", "/healthzz"), ApiMatch::Unknown);
    assert_eq!(check(&spec, "GET", "/static"), ApiMatch::Extra);
    assert_eq!(check(&spec, "GET", "/static/css/site.css"), ApiMatch::Extra);
    assert_eq!(check(&spec, "GET", "/staticfiles/x"), ApiMatch::Unknown);
    assert_eq!(
        check(&spec, "GET", "/docs/api v1/index.html"),
        ApiMatch::Extra
    );
    assert_eq!(check(&spec, "GET", "/metrics/x"), ApiMatch::Extra);
    // The spec still answers for its own routes; extras win over a 405.
    assert_eq!(check(&spec, "GET", "/users/me"), ApiMatch::Known);
    let overlapping = users_spec()
        .with_extra_paths(&["/users/".to_string()])
        .expect("valid entry");
    assert_eq!(check(&overlapping, "PATCH", "/users/me"), ApiMatch::Extra);
}

#[test]
fn extra_root_prefix_covers_everything_and_calls_accumulate() {
    let spec = spec_without_root()
        .with_extra_paths(&["/a".to_string()])
        .and_then(|spec| spec.with_extra_paths(&["/b/".to_string()]))
        .expect("valid entries");
    assert_eq!(check(&spec, "GET", "/a"), ApiMatch::Extra);
    assert_eq!(check(&spec, "GET", "/b/c"), ApiMatch::Extra);
    let everything = spec
        .with_extra_paths(&["/".to_string()])
        .expect("valid entry");
    assert_eq!(check(&everything, "GET", "/"), ApiMatch::Extra);
    assert_eq!(check(&everything, "GET", "/.env"), ApiMatch::Extra);
}

#[test]
fn bad_extra_paths_are_refused_with_their_index() {
    for (entry, reason) in [
        ("healthz", "must start with '/'"),
        ("/a?b=1", "query"),
        ("/files/{path}", "not templates"),
    ] {
        let error = users_spec()
            .with_extra_paths(&["/ok".to_string(), entry.to_string()])
            .expect_err(entry);
        let message = error.to_string();
        assert!(message.starts_with("extra_paths[1]"), "{message}");
        assert!(message.contains(reason), "{message}");
    }
}

// --- Formats, versions, errors -------------------------------------------------------------

#[test]
fn yaml_and_json_give_the_same_model() {
    let yaml = spec(
        "openapi: 3.0.3\ninfo:\n  title: t\n  version: '1'\nservers:\n  - url: /api\npaths:\n  /items/{id}:\n    get:\n      responses:\n        200:\n          description: ok\n    x-extension: &anchor {a: 1}\n  x-paths-extension: *anchor\n",
    );
    let json = items_with_servers(r#"[{"url": "/api"}]"#);
    assert_eq!(yaml.template_count(), 1);
    for path in ["/api/items/1", "/api/items/1/", "/items/1", "/api/items"] {
        assert_eq!(
            check(&yaml, "GET", path),
            check(&json, "GET", path),
            "{path}"
        );
    }
}

#[test]
fn versions_3_0_3_1_and_2_0_are_supported() {
    for header in [
        "openapi: 3.0.0",
        "openapi: '3.1.1'",
        "openapi: 3.1",
        "swagger: '2.0'",
        "swagger: 2.0",
    ] {
        let spec = spec(&format!("{header}\npaths:\n  /a: {{get: {{}}}}\n"));
        assert_eq!(check(&spec, "GET", "/a"), ApiMatch::Known, "{header}");
    }
    assert_eq!(
        spec("\u{feff}{\"openapi\": \"3.0.2\", \"paths\": {}}").template_count(),
        0
    );
}

#[test]
fn empty_paths_is_a_spec_that_knows_nothing() {
    let spec = spec(&openapi("", ""));
    assert_eq!(spec.template_count(), 0);
    assert_eq!(check(&spec, "GET", "/"), ApiMatch::Unknown);
    assert_eq!(check(&spec, "GET", "/anything"), ApiMatch::Unknown);
}

#[test]
fn errors_say_what_is_wrong() {
    let cases: [(&str, &str); 14] = [
        (r#"{"openapi": "3.0.0", "paths": {"#, "not valid JSON"),
        ("openapi: [unclosed\n", "not valid YAML"),
        ("", "empty or not an object"),
        ("- a\n- b\n", "empty or not an object"),
        (
            r#"{"info": {}, "paths": {}}"#,
            "no `openapi` or `swagger` field",
        ),
        (
            r#"{"openapi": "4.0.0", "paths": {}}"#,
            "unsupported version openapi 4.0.0",
        ),
        (
            r#"{"openapi": "3.2.0", "paths": {}}"#,
            "unsupported version openapi 3.2.0",
        ),
        (
            r#"{"swagger": "1.2", "paths": {}}"#,
            "unsupported version swagger 1.2",
        ),
        (r#"{"openapi": "3.0.0"}"#, "no `paths` object"),
        (
            r#"{"openapi": "3.0.0", "paths": []}"#,
            "`paths` must be an object",
        ),
        (
            r#"{"openapi": "3.0.0", "paths": {"/users/{id": {}}}"#,
            r#"bad template "/users/{id": unclosed '{'"#,
        ),
        (
            r#"{"openapi": "3.0.0", "paths": {"users": {}}}"#,
            r#"bad template "users": a path template must start with '/'"#,
        ),
        (
            r##"{"openapi": "3.0.0", "paths": {"/a": {"$ref": "#/nowhere"}}}"##,
            r##"bad path item "/a": `$ref` "#/nowhere" points to nothing"##,
        ),
        (
            r#"{"openapi": "3.0.0", "servers": [{"url": "/{v"}], "paths": {}}"#,
            r#"bad server URL "/{v""#,
        ),
    ];
    for (text, expected) in cases {
        let message = error(text);
        assert!(message.contains(expected), "{text}\n=> {message}");
    }
}

#[test]
fn circular_refs_and_garbage_do_not_panic() {
    let circular = error(
        r##"{"openapi": "3.1.0", "paths": {"/a": {"$ref": "#/paths/~1b"}, "/b": {"$ref": "#/paths/~1a"}}}"##,
    );
    assert!(circular.contains("circular"), "{circular}");
    for garbage in [
        &b"\xff\xfe\x00garbage"[..],
        b"{}",
        b"null",
        b"[1, 2]",
        b"openapi: 3.0.0\npaths:\n  /a: 5\n",
        b"openapi: 3.0.0\npaths:\n  /a:\n    $ref: 7\n",
        b"openapi: 3.0.0\nservers: {url: /x}\npaths: {}\n",
        b"openapi: 3.0.0\nservers: [{}]\npaths: {}\n",
        b"swagger: '2.0'\nbasePath: [1]\npaths: {}\n",
    ] {
        assert!(
            Spec::parse(garbage).is_err(),
            "{:?}",
            String::from_utf8_lossy(garbage)
        );
    }
}

#[test]
fn spec_error_is_a_std_error() {
    fn assert_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    assert_error(&SpecError::NoPaths);
}

// --- Real specs ----------------------------------------------------------------------------

/// Paths scanners send (fail2ban nginx-botsearch, honeypot logs): none is an API route.
const SCANNER_PATHS: &[&str] = &[
    "/.env",
    "/.env.example",
    "/wp-login.php",
    "/wp-admin/",
    "/xmlrpc.php",
    "/phpmyadmin/",
    "/phpMyAdmin/index.php",
    "/cgi-bin/luci",
    "/cgi-bin/.%2e/.%2e/bin/sh",
    "/.git/config",
    "/.git/HEAD",
    "/actuator/env",
    "/actuator/health",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/boaform/admin/formLogin",
    "/HNAP1/",
    "/server-status",
    "/.aws/credentials",
    "/config.json",
    "/admin",
    "/console",
    "/solr/admin/info/system",
    "/owa/auth/logon.aspx",
    "/remote/login",
    "/api/.env",
    "/api/v1/.env",
    "/backup.zip",
];

/// Values a parameter can take in real traffic, including ones that look like probe words.
const PARAM_VALUES: &[&str] = &[
    "42",
    "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "alice",
    "phpmyadmin@example.org",
    ".env.example",
    "wp-login-guide",
    "admin",
    "me",
    "a b",
    "x.json",
];

fn corpus(name: &str) -> (Spec, Vec<(String, Vec<String>)>) {
    let path = format!("{}/tests/corpora/api/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let spec = Spec::parse(&bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
    (spec, declared_routes(&bytes))
}

/// The templates and their methods, read independently of the crate with serde_json or
/// serde_yaml, so the test does not trust the code under test to list them.
fn declared_routes(bytes: &[u8]) -> Vec<(String, Vec<String>)> {
    let doc: serde_json::Value = match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes).expect("JSON"),
        _ => serde_yaml::from_slice(bytes).expect("YAML"),
    };
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(template, item)| {
            let declared = item
                .as_object()
                .expect("path item")
                .keys()
                .filter(|key| methods.contains(&key.as_str()))
                .map(|key| key.to_uppercase())
                .collect();
            (template.clone(), declared)
        })
        .collect()
}

/// Fills every `{param}` of `template` with `value`.
fn instantiate(template: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        out.push_str(value);
        let close = rest[open..].find('}').expect("balanced") + open;
        rest = &rest[close + 1..];
    }
    out + rest
}

/// Every declared route, under each of `base_paths`, with every value, with and without a
/// trailing slash, is known for each declared method plus HEAD (when GET) and OPTIONS; the
/// scanner paths are unknown under the root and under each base path.
fn assert_corpus(name: &str, base_paths: &[&str], expected_templates: usize) {
    let (spec, routes) = corpus(name);
    assert_eq!(spec.template_count(), expected_templates, "{name}");
    assert_eq!(spec.base_paths(), base_paths, "{name}");
    let mut checked = 0;
    for (template, methods) in &routes {
        for base in base_paths {
            for value in PARAM_VALUES {
                let path = format!("{base}{}", instantiate(template, value));
                let with_slash = format!("{}/", path.trim_end_matches('/'));
                let without_slash = path.trim_end_matches('/').to_string();
                for path in [&with_slash, &without_slash] {
                    let path = if path.is_empty() { "/" } else { path.as_str() };
                    let mut all = methods.clone();
                    all.push("OPTIONS".into());
                    if methods.iter().any(|method| method == "GET") {
                        all.push("HEAD".into());
                    }
                    for method in &all {
                        assert_eq!(
                            check(&spec, method, path),
                            ApiMatch::Known,
                            "{name}: {method} {path} ({template})"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 100, "{name}: only {checked} checks");
    for base in base_paths.iter().chain(&[""]) {
        for probe in SCANNER_PATHS {
            let path = format!("{base}{probe}");
            for method in ["GET", "POST", "HEAD", "OPTIONS"] {
                assert_eq!(
                    check(&spec, method, &path),
                    ApiMatch::Unknown,
                    "{name}: {method} {path}"
                );
            }
        }
    }
}

#[test]
fn corpus_petstore3_yaml() {
    assert_corpus("petstore3-openapi.yaml", &["/api/v3"], 13);
    let (spec, _) = corpus("petstore3-openapi.yaml");
    assert_eq!(
        check(&spec, "PATCH", "/api/v3/pet/7"),
        ApiMatch::MethodNotAllowed {
            allow: "DELETE, GET, HEAD, OPTIONS, POST"
        }
    );
    // `/user/login` is static next to `/user/{username}`: both answer.
    assert_eq!(check(&spec, "GET", "/api/v3/user/login"), ApiMatch::Known);
    assert_eq!(
        check(&spec, "DELETE", "/api/v3/user/login"),
        ApiMatch::Known
    );
    assert_eq!(check(&spec, "GET", "/pet/7"), ApiMatch::Unknown);
}

#[test]
fn corpus_fastapi_full_stack_template() {
    assert_corpus("fastapi-full-stack-template-openapi.json", &[""], 23);
    let (spec, _) = corpus("fastapi-full-stack-template-openapi.json");
    // Declared with a trailing slash, requested without (Starlette redirects).
    assert_eq!(check(&spec, "GET", "/api/v1/items"), ApiMatch::Known);
    assert_eq!(
        check(&spec, "PUT", "/api/v1/users/me"),
        ApiMatch::MethodNotAllowed {
            allow: "DELETE, GET, HEAD, OPTIONS, PATCH"
        }
    );
    // `{id}` GET and `{attempt_id}` PATCH are the same route.
    assert_eq!(
        check(&spec, "PATCH", "/api/v1/exam-attempts/9"),
        ApiMatch::Known
    );
    assert_eq!(
        check(&spec, "GET", "/api/v1/exam-attempts/9"),
        ApiMatch::Known
    );
    assert_eq!(check(&spec, "GET", "/docs"), ApiMatch::Unknown);
    let with_docs = spec
        .with_extra_paths(&["/docs".into(), "/openapi.json".into()])
        .expect("valid entries");
    assert_eq!(check(&with_docs, "GET", "/docs"), ApiMatch::Extra);
    assert_eq!(check(&with_docs, "GET", "/openapi.json"), ApiMatch::Extra);
}

#[test]
fn corpus_uspto_server_variable_and_root_template() {
    assert_corpus("uspto-openapi.json", &["/ds-api"], 3);
    let (spec, _) = corpus("uspto-openapi.json");
    assert_eq!(check(&spec, "GET", "/ds-api"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/ds-api/"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/"), ApiMatch::Unknown);
    assert_eq!(
        check(&spec, "GET", "/ds-api/oa_citations/v1/records"),
        ApiMatch::MethodNotAllowed {
            allow: "OPTIONS, POST"
        }
    );
    // Two parameters then a static segment: one-segment probes never reach a route.
    assert_eq!(
        check(&spec, "GET", "/ds-api/.git/config"),
        ApiMatch::Unknown
    );
}

#[test]
fn corpus_uber_swagger_2() {
    assert_corpus("uber-swagger.json", &["/v1"], 5);
    let (spec, _) = corpus("uber-swagger.json");
    assert_eq!(check(&spec, "GET", "/v1/estimates/price"), ApiMatch::Known);
    assert_eq!(check(&spec, "GET", "/v1/estimates"), ApiMatch::Unknown);
    assert_eq!(
        check(&spec, "POST", "/v1/me"),
        ApiMatch::MethodNotAllowed {
            allow: "GET, HEAD, OPTIONS"
        }
    );
}

// --- Properties ----------------------------------------------------------------------------

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any non-empty parameter value without '/' keeps a declared route known.
        #[test]
        fn any_segment_value_keeps_declared_routes_known(value in "[^/]{1,40}") {
            let (spec, routes) = corpus("fastapi-full-stack-template-openapi.json");
            for (template, methods) in &routes {
                let path = instantiate(template, &value);
                for method in methods {
                    prop_assert_eq!(check(&spec, method, &path), ApiMatch::Known, "{} {}", method, path);
                }
            }
        }

        /// Arbitrary bytes never panic, and the answer does not depend on a trailing slash.
        #[test]
        fn arbitrary_paths_do_not_panic(path in proptest::collection::vec(any::<u8>(), 0..200)) {
            let spec = users_spec();
            let with_slash = [b"/".as_slice(), &path, b"/"].concat();
            let without_slash = [b"/".as_slice(), &path].concat();
            if !path.ends_with(b"/") {
                prop_assert_eq!(spec.check(b"GET", &with_slash), spec.check(b"GET", &without_slash));
            }
            let _ = spec.check(&path, &path);
        }
    }
}
