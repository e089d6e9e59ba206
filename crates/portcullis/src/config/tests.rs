use super::*;
use std::path::Path;

fn parse(text: &str) -> Result<Settings, Vec<ConfigError>> {
    Settings::parse(text, Path::new("/etc/portcullis"))
}

const MINIMAL: &str = r#"
[server]
listen = ["127.0.0.1:8080"]

[[upstream]]
name = "api"
servers = ["127.0.0.1:9999"]

[[route]]
upstream = "api"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let s = parse(MINIMAL).unwrap();
    assert_eq!(s.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(s.server.shutdown_grace, Duration::from_secs(3));
    assert_eq!(s.routes[0].path, "/");
    assert_eq!(s.routes[0].upstream, 0);
    assert!(s.metrics.is_none());
    assert_eq!(s.upstreams[0].connect_timeout, Duration::from_secs(2));
}

#[test]
fn the_design_sketch_is_accepted() {
    // Key names in the sketch are binding: tests outside the repository use them.
    let sketch =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/design/config-sketch.toml");
    let text = std::fs::read_to_string(&sketch)
        .unwrap_or_else(|e| panic!("{} must exist beside the repo: {e}", sketch.display()));
    let s = parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(s.routes.len(), 1);
    assert!(s.admin.is_some());
}

#[test]
fn unknown_keys_are_rejected_with_path_and_line() {
    let err = parse(&format!(
        "{MINIMAL}\n[client_ip]\nheaders = \"x-real-ip\"\n"
    ))
    .unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!(err[0].key, "client_ip.headers");
    assert_eq!(err[0].line, Some(13));
    assert!(
        err[0].message.contains("unknown field"),
        "{}",
        err[0].message
    );
}

#[test]
fn type_errors_name_the_key() {
    let err = parse("[server]\nlisten = \"127.0.0.1:8080\"\n").unwrap_err();
    assert_eq!(err[0].key, "server.listen");
    assert_eq!(err[0].line, Some(2));
}

#[test]
fn every_semantic_error_is_reported_at_once() {
    let text = r#"
[server]
listen = ["nope"]
shutdown_grace = "forever"

[client_ip]
trusted_proxies = ["10.0.0.0/8", "not-a-net"]
header = "forwarded"
ipv6_prefix = 200

[[upstream]]
name = "api"
servers = []

[[route]]
path = "api"
upstream = "missing"
rate_limit = ["nozone"]
"#;
    let errs = parse(text).unwrap_err();
    let keys: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        keys,
        vec![
            ("server.listen[0]", Some(3)),
            ("server.shutdown_grace", Some(4)),
            ("client_ip.trusted_proxies[1]", Some(7)),
            ("client_ip.header", Some(8)),
            ("client_ip.ipv6_prefix", Some(9)),
            ("upstream[0].servers", Some(13)),
            ("route[0].path", Some(16)),
            ("route[0].upstream", Some(17)),
            ("route[0].rate_limit[0]", Some(18)),
        ]
    );
}

#[test]
fn admin_on_public_address_needs_a_token() {
    let err = parse(&format!("{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9101\"\n")).unwrap_err();
    assert_eq!(err[0].key, "admin.token_file");
    assert!(parse(&format!(
        "{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:9101\"\n"
    ))
    .is_ok());
    assert!(parse(&format!(
        "{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9101\"\ntoken_file = \"admin.token\"\n"
    ))
    .is_ok());
}

#[test]
fn duplicate_routes_and_upstreams_are_errors() {
    let text = format!("{MINIMAL}\n[[upstream]]\nname = \"api\"\nservers = [\"127.0.0.1:1\"]\n\n[[route]]\nupstream = \"api\"\n");
    let errs = parse(&text).unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, vec!["upstream[1].name", "route[1].path"]);
}

#[test]
fn relative_paths_are_taken_from_the_config_directory() {
    let s = parse(&format!(
        "{MINIMAL}\n[access_log]\ntarget = \"access.log\"\n"
    ))
    .unwrap();
    assert_eq!(
        s.access_log.target,
        Some(Some(PathBuf::from("/etc/portcullis/access.log")))
    );
}

#[test]
fn reputation_keys_clients_like_client_ip() {
    // Admin bans of one IPv6 address cover the client's identity prefix only if the engine
    // and the resolver agree on it.
    let s = parse(&format!(
        "{MINIMAL}\n[client_ip]\nipv6_prefix = 48\n\n[reputation]\n"
    ))
    .unwrap();
    assert_eq!(s.reputation.as_ref().unwrap().engine.ipv6_prefix, 48);
    assert_eq!(s.client_ip_prefix(), 48);
}

#[test]
fn body_size_limits_follow_nginx() {
    // nginx's default, 1m, applies to every route unless set.
    let s = parse(MINIMAL).unwrap();
    assert_eq!(s.server.client_max_body_size, Some(1 << 20));
    assert_eq!(s.routes[0].max_body, Some(1 << 20));

    let text = MINIMAL
        .replace(
            "[server]\n",
            "[server]\nclient_max_body_size = \"10M\"\n",
        )
        .replace(
            "upstream = \"api\"\n",
            "upstream = \"api\"\n\n[[route]]\npath = \"/upload\"\nupstream = \"api\"\nclient_max_body_size = 0\n\n[[route]]\npath = \"/small\"\nupstream = \"api\"\nclient_max_body_size = \"512k\"\n",
        );
    let s = parse(&text).unwrap();
    assert_eq!(s.routes[0].max_body, Some(10 << 20));
    assert_eq!(s.routes[1].max_body, None, "0 means no limit");
    assert_eq!(s.routes[2].max_body, Some(512 << 10));
    assert_eq!(validate::parse_size("4096"), Some(4096));
    assert_eq!(validate::parse_size("1g"), Some(1 << 30));

    for bad in ["\"1mb\"", "\"-1\"", "\"m\"", "\"1.5m\"", "-5"] {
        let text = MINIMAL.replace(
            "[server]\n",
            &format!("[server]\nclient_max_body_size = {bad}\n"),
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err[0].key, "server.client_max_body_size", "{bad}");
        assert_eq!(err[0].line, Some(3), "{bad}");
        assert!(
            err[0].message.contains("not a size"),
            "{bad}: {}",
            err[0].message
        );
    }
    let err = parse(&MINIMAL.replace("[server]\n", "[server]\nclient_max_body_size = true\n"))
        .unwrap_err();
    assert_eq!(err[0].key, "server.client_max_body_size");
    assert!(
        err[0].message.contains("expected a size"),
        "{}",
        err[0].message
    );
}

#[test]
fn keepalive_timeout_follows_nginx() {
    assert_eq!(parse(MINIMAL).unwrap().server.keepalive_timeout, Some(75));
    let with = |v: &str| {
        parse(&MINIMAL.replace(
            "[server]\n",
            &format!("[server]\nkeepalive_timeout = \"{v}\"\n"),
        ))
    };
    assert_eq!(
        with("0s").unwrap().server.keepalive_timeout,
        None,
        "0 turns it off"
    );
    // Pingora counts whole seconds and reads 0 as "forever": round up.
    assert_eq!(with("500ms").unwrap().server.keepalive_timeout, Some(1));
    assert_eq!(with("2m").unwrap().server.keepalive_timeout, Some(120));
    let err = with("soon").unwrap_err();
    assert_eq!(err[0].key, "server.keepalive_timeout");
    assert_eq!(err[0].line, Some(3));
}

#[test]
fn keepalive_requests_follows_nginx() {
    assert_eq!(parse(MINIMAL).unwrap().server.keepalive_requests, 1000);
    let with = |v: &str| {
        parse(&MINIMAL.replace(
            "[server]\n",
            &format!("[server]\nkeepalive_requests = {v}\n"),
        ))
    };
    assert_eq!(with("1").unwrap().server.keepalive_requests, 1);
    let err = with("0").unwrap_err();
    assert_eq!(err[0].key, "server.keepalive_requests");
    assert_eq!(err[0].line, Some(3));
}

#[test]
fn client_header_timeout_follows_nginx() {
    let s = parse(MINIMAL).unwrap();
    assert_eq!(s.server.client_header_timeout, Duration::from_secs(60));
    let with = |v: &str| {
        parse(&MINIMAL.replace(
            "[server]\n",
            &format!("[server]\nclient_header_timeout = \"{v}\"\n"),
        ))
    };
    assert_eq!(
        with("10s").unwrap().server.client_header_timeout,
        Duration::from_secs(10)
    );
    let err = with("0s").unwrap_err();
    assert_eq!(err[0].key, "server.client_header_timeout");
    assert_eq!(err[0].line, Some(3));
}

#[test]
fn fast_path_is_on_unless_turned_off() {
    assert!(parse(MINIMAL).unwrap().server.fast_path);
    let with =
        |v: &str| parse(&MINIMAL.replace("[server]\n", &format!("[server]\nfast_path = {v}\n")));
    assert!(!with("false").unwrap().server.fast_path);
    let err = with("\"no\"").unwrap_err();
    assert_eq!(err[0].key, "server.fast_path");
    assert_eq!(err[0].line, Some(3));
}

#[test]
fn reuseport_is_off_unless_turned_on() {
    assert!(!parse(MINIMAL).unwrap().server.reuseport);
    let with =
        |v: &str| parse(&MINIMAL.replace("[server]\n", &format!("[server]\nreuseport = {v}\n")));
    assert!(with("true").unwrap().server.reuseport);
    let err = with("1").unwrap_err();
    assert_eq!(err[0].key, "server.reuseport");
    assert_eq!(err[0].line, Some(3));
}

/// The `[api]`, `[probes]` and `[cluster]` keys of the next design sketch (binding), with
/// `openapi` pointing at a spec the test provides.
#[test]
fn the_api_and_probes_sections_of_the_next_sketch_are_accepted() {
    let sketch = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/design/config-sketch-next.toml");
    let text = std::fs::read_to_string(&sketch)
        .unwrap_or_else(|e| panic!("{} must exist beside the repo: {e}", sketch.display()));
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    let api = doc["api"].as_table().expect("an [api] table").to_string();
    let probes = doc["probes"]
        .as_table()
        .expect("a [probes] table")
        .to_string();
    let cluster = doc["cluster"]
        .as_table()
        .expect("a [cluster] table")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let spec = r#"{"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
        "paths": {"/items/{id}": {"get": {}}, "/health": {"get": {}}}}"#;
    std::fs::write(dir.path().join("openapi.json"), spec).unwrap();
    let text = format!("{MINIMAL}\n[api]\n{api}\n[probes]\n{probes}\n[cluster]\n{cluster}");
    let s = Settings::parse(&text, dir.path()).unwrap_or_else(|e| panic!("{e:?}"));
    let cluster = s.cluster.as_ref().expect("[cluster] settings");
    assert_eq!(cluster.redis, "redis://127.0.0.1:6379/0");
    assert_eq!(cluster.key_prefix, "portcullis:");
    assert_eq!(cluster.timeout, Duration::from_millis(250));
    let probes = s.probes.as_ref().expect("[probes] settings");
    assert!(!probes.dry_run);
    let php = probes
        .matcher
        .check(b"/qzx7.asp", None)
        .map(|hit| hit.category);
    assert_eq!(php, Some(portcullis_policy::probes::Category::Extension));
    let api = s.api.expect("[api] settings");
    assert_eq!(api.unknown, UnknownRoute::Refuse);
    assert_eq!(api.extra_paths, ["/docs", "/redoc"]);
    match api.source {
        ApiSource::File { spec, .. } => assert_eq!(spec.template_count(), 2),
        ApiSource::Url(url) => panic!("a file, not {url}"),
    }
}

#[test]
fn api_errors_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), "{\"openapi\": \"3.0.0\"}").unwrap();
    let text = format!(
        "{MINIMAL}\n[api]\nopenapi = \"bad.json\"\nunknown = \"ignore\"\nextra_paths = [\"docs\"]\n"
    );
    let errors = Settings::parse(&text, dir.path()).unwrap_err();
    let find = |key: &str| {
        errors
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("no error for {key}: {errors:?}"))
    };
    assert_eq!(find("api.openapi").line, Some(13));
    assert!(find("api.openapi").message.contains("paths"), "{errors:?}");
    assert_eq!(find("api.unknown").line, Some(14));
    assert_eq!(find("api.extra_paths").line, Some(15));
    let missing = parse(&format!("{MINIMAL}\n[api]\nopenapi = \"none.json\"\n")).unwrap_err();
    assert!(missing[0].message.contains("cannot read"), "{missing:?}");
    let both = parse(&format!(
        "{MINIMAL}\n[api]\nopenapi = \"a.json\"\nopenapi_url = \"http://127.0.0.1:1/o\"\n"
    ))
    .unwrap_err();
    assert_eq!(both[0].key, "api.openapi_url");
    let https = parse(&format!(
        "{MINIMAL}\n[api]\nopenapi_url = \"https://x/o\"\n"
    ))
    .unwrap_err();
    assert!(https[0].message.contains("http://"), "{https:?}");
    let url = parse(&format!(
        "{MINIMAL}\n[api]\nopenapi_url = \"http://127.0.0.1:8000/openapi.json\"\nunknown = \"log\"\n"
    ))
    .unwrap();
    assert_eq!(url.api.map(|a| a.unknown), Some(UnknownRoute::Log));
}

#[test]
fn large_client_header_buffers_reads_as_nginx_writes_it() {
    let s = parse(MINIMAL).unwrap();
    assert_eq!(
        (s.server.max_header_line, s.server.max_header_bytes),
        (8192, 32768)
    );
    let text = MINIMAL.replace(
        "listen = [\"127.0.0.1:8080\"]",
        "listen = [\"127.0.0.1:8080\"]\nlarge_client_header_buffers = \"8 16k\"",
    );
    let s = parse(&text).unwrap();
    assert_eq!(
        (s.server.max_header_line, s.server.max_header_bytes),
        (16384, 131072)
    );
    for bad in ["8k", "4 8k 1", "0 8k", "4 100", "4 1m", "four 8k"] {
        let text = MINIMAL.replace(
            "listen = [\"127.0.0.1:8080\"]",
            &format!("listen = [\"127.0.0.1:8080\"]\nlarge_client_header_buffers = \"{bad}\""),
        );
        let errors = parse(&text).unwrap_err();
        assert_eq!(errors[0].key, "server.large_client_header_buffers", "{bad}");
        assert_eq!(errors[0].line, Some(4), "{bad}");
    }
}

/// Files and names of a test's own: validation asks the environment, never the disk or DNS.
struct FakeMachine;

impl environment::Environment for FakeMachine {
    fn is_file(&self, path: &Path) -> bool {
        path.starts_with("/etc/portcullis/tls")
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not on this machine", path.display()),
        ))
    }
    fn resolve(&self, host_port: &str) -> Option<std::net::SocketAddr> {
        match host_port {
            "api.internal:8000" => "10.0.0.7:8000".parse().ok(),
            _ => None,
        }
    }
}

#[test]
fn files_and_names_come_from_the_environment() {
    let text = r#"
[server]
listen = ["127.0.0.1:8080"]
tls = [{ listen = "127.0.0.1:8443", cert = "tls/cert.pem", key = "keys/key.pem" }]

[[upstream]]
name = "api"
servers = ["api.internal:8000", "db.internal:5432"]

[[route]]
path = "/"
upstream = "api"

[api]
openapi = "openapi.json"
"#;
    let raw: raw::RawConfig = toml::from_str(text).unwrap();
    let errors = validate::validate(raw, text, Path::new("/etc/portcullis"), &FakeMachine)
        .expect_err("two missing files and an unknown name");
    let found: Vec<(&str, Option<usize>)> =
        errors.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        found,
        vec![
            ("server.tls[0].key", Some(4)),
            ("upstream[0].servers[1]", Some(8)),
            ("api.openapi", Some(15)),
        ],
        "{errors:?}"
    );
    // And the name it knows resolves to the address it gave.
    let fixed = text
        .replace(", \"db.internal:5432\"", "")
        .replace("keys/key.pem", "tls/key.pem")
        .replace("[api]\nopenapi = \"openapi.json\"\n", "");
    let raw: raw::RawConfig = toml::from_str(&fixed).unwrap();
    let settings = validate::validate(raw, &fixed, Path::new("/etc/portcullis"), &FakeMachine)
        .expect("valid on the fake machine");
    assert_eq!(
        settings.upstreams[0].servers,
        vec!["10.0.0.7:8000".parse().unwrap()]
    );
}

/// Every key read only at start is reported by a reload that changes it; the list is the
/// fields of `StartSettings`, read by `serve.rs`.
#[test]
fn a_reload_names_every_setting_that_needs_a_restart() {
    let base = r#"
[server]
listen = ["127.0.0.1:8080"]
threads = 2
keepalive_timeout = "75s"
upstream_keepalive = 128

[[upstream]]
name = "api"
servers = ["127.0.0.1:8000"]

[[route]]
path = "/"
upstream = "api"
"#;
    let before = start::StartSettings::of(&parse(base).unwrap());
    let same_start = base.replace("[[route]]", "[inflight]\ntotal = 10\n\n[[route]]");
    assert!(before
        .changed(&start::StartSettings::of(&parse(&same_start).unwrap()))
        .is_empty());
    let changed = base
        .replace("threads = 2", "threads = 3")
        .replace("\"75s\"", "\"30s\"")
        .replace("upstream_keepalive = 128", "upstream_keepalive = 64");
    assert_eq!(
        before.changed(&start::StartSettings::of(&parse(&changed).unwrap())),
        vec![
            "server.threads",
            "server.upstream_keepalive",
            "server.keepalive_timeout (HTTP/2)"
        ]
    );
}

#[test]
fn cluster_defaults_and_errors_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings::parse(MINIMAL, dir.path()).unwrap();
    assert!(s.cluster.is_none(), "off without the section");
    let text = format!(
        "{MINIMAL}\n[cluster]\nredis = \"rediss://:pw@redis.internal:6380/2\"\nkey_prefix = \"prod:\"\npassword_file = \"pw\"\n"
    );
    let errors = Settings::parse(&text, dir.path()).unwrap_err();
    assert_eq!(errors[0].key, "cluster.password_file", "{errors:?}");
    let text = format!(
        "{MINIMAL}\n[cluster]\nredis = \"http://127.0.0.1:6379\"\nkey_prefix = \"a b\"\ntimeout = \"0s\"\nqueue = 1\nspeed = 3\n"
    );
    let errors = Settings::parse(&text, dir.path()).unwrap_err();
    assert_eq!(
        errors[0].key, "cluster.speed",
        "unknown keys are errors: {errors:?}"
    );
    let text = format!(
        "{MINIMAL}\n[cluster]\nredis = \"http://127.0.0.1:6379\"\nkey_prefix = \"a b\"\ntimeout = \"0s\"\nqueue = 1\n"
    );
    let errors = Settings::parse(&text, dir.path()).unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "cluster.redis",
            "cluster.key_prefix",
            "cluster.timeout",
            "cluster.queue"
        ]
    );
    let base = MINIMAL.lines().count();
    assert_eq!(errors[0].line, Some(base + 3), "{errors:?}");
    let text = format!("{MINIMAL}\n[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n");
    let c = Settings::parse(&text, dir.path()).unwrap().cluster.unwrap();
    assert_eq!(
        (c.key_prefix.as_str(), c.timeout, c.queue, c.password_file),
        ("portcullis:", Duration::from_millis(250), 10_000, None)
    );
    // The cluster task starts once: a reload that changes the section says it needs a restart.
    let other = text.replace("6379/0", "6380/0");
    let started = start::StartSettings::of(&Settings::parse(&text, dir.path()).unwrap());
    let reloaded = start::StartSettings::of(&Settings::parse(&other, dir.path()).unwrap());
    assert_eq!(started.changed(&reloaded), vec!["cluster"]);
}

#[test]
fn a_shared_zone_needs_a_cluster_and_names_its_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let zone = "\n[rate_limit.login]\nrate = \"1r/s\"\nshared = true\n";
    let errors = Settings::parse(&format!("{MINIMAL}{zone}"), dir.path()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "rate_limit.login.shared");
    assert_eq!(errors[0].line, Some(MINIMAL.lines().count() + 4));
    assert!(errors[0].message.contains("[cluster]"), "{errors:?}");
    let cluster = "\n[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n";
    let s = Settings::parse(&format!("{MINIMAL}{zone}{cluster}"), dir.path()).unwrap();
    assert!(s.zones[0].shared);
    assert_eq!(s.cluster.unwrap().shared_timeout, Duration::from_millis(5));
    let slow = format!("{MINIMAL}{zone}{cluster}shared_timeout = \"2s\"\n");
    let errors = Settings::parse(&slow, dir.path()).unwrap_err();
    assert_eq!(errors[0].key, "cluster.shared_timeout", "{errors:?}");
}
