//! `portcullis run`: builds the Pingora server from the settings and runs it until SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::config::start::StartSettings;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::runtime::Runtime;

/// Loads the configuration at `path` and serves until told to stop.
pub fn run(path: &Path) -> ExitCode {
    let settings = match Settings::load(path) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: configuration is not valid; not starting",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let _log_writer = crate::logging::init(&settings.log);
    Metrics::get();

    // Everything read at start comes from here: a reload warns about exactly these.
    let start = StartSettings::of(&settings);
    let mut conf = ServerConf {
        threads: start.threads,
        upstream_keepalive_pool_size: start.upstream_keepalive,
        // Pingora waits grace_period before stopping runtimes, then up to the shutdown
        // timeout: split the configured grace between the two (containers wait ~10 s).
        grace_period_seconds: Some(start.shutdown_grace.as_secs().saturating_sub(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        // Each proxy worker is a one-thread service (workers.rs): as a tokio current-thread
        // runtime it skips the multi-thread scheduler's bookkeeping on every wake-up.
        work_stealing: false,
        ..ServerConf::default()
    };
    if let Some(dir) = &start.state_dir {
        conf.pid_file = dir.join("portcullis.pid").display().to_string();
        conf.upgrade_sock = dir.join("upgrade.sock").display().to_string();
    }
    // Pingora logs a listener it cannot bind and keeps running without serving; bind every
    // address here first (all at once, so overlapping ones like 0.0.0.0 and [::] on one port
    // collide) to fail loudly instead.
    if let Err(e) = probe_binds(&settings) {
        eprintln!("{e}");
        tracing::error!(error = %e, "cannot listen; not starting");
        return ExitCode::FAILURE;
    }
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let StartSettings {
        listen,
        tls,
        metrics: metrics_addr,
        keepalive_requests,
        threads,
        reuseport,
        h2_idle_timeout,
        cluster,
        ..
    } = start;
    let admin = settings.admin.clone();
    let runtime = match Runtime::build(settings, None) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let shared = Arc::new(ArcSwap::from_pointee(runtime));
    crate::engine_metrics::EngineCollector::register(shared.clone());
    crate::cluster::metrics::ClusterMetrics::get();
    if let Some(cluster) = &cluster {
        // Before serving: the task loads every active ban as soon as Redis answers.
        let store = shared.load().store.clone();
        if let Err(e) = crate::cluster::start(cluster, store) {
            eprintln!("{e}");
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    }

    crate::accept::register_metrics();
    let filter = Arc::new(crate::accept::BanAtAccept {
        runtime: shared.clone(),
    });
    // The proxy: the fast path in front of HttpProxy (fast/mod.rs).
    let configuration = server.configuration.clone();
    let edge = || {
        let gateway = Gateway {
            runtime: shared.clone(),
        };
        let mut proxy = pingora::proxy::http_proxy(&configuration, gateway);
        // keepalive_timeout for HTTP/2 too, as nginx has it since http2_idle_timeout went
        // away (Pingora keeps an idle HTTP/2 connection forever otherwise). HTTP/1.1
        // connections get it per request, so a reload changes it there (proxy.rs). With
        // keep-alive off, an HTTP/2 connection closes as soon as it has been idle for a second.
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(h2_idle_timeout);
        // nginx's keepalive_requests (requests per connection; Pingora counts the reuses
        // after the first). Pingora's own default is no limit.
        options.keepalive_request_limit = Some(keepalive_requests - 1);
        proxy.server_options = Some(options);
        crate::fast::Edge {
            proxy: Arc::new(proxy),
            runtime: shared.clone(),
            max_requests: keepalive_requests,
        }
    };
    // Plain listeners: one worker per thread, each accepting on its own descriptor of the
    // sockets, so a connection stays on one thread (workers.rs says why).
    if !listen.is_empty() {
        let sockets = match crate::workers::bind(&listen, threads, reuseport) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("server.listen: {e}");
                tracing::error!(error = %e, "cannot listen; not starting");
                return ExitCode::FAILURE;
            }
        };
        let load = crate::load::Load::leaked(threads);
        for (index, sockets) in sockets.into_iter().enumerate() {
            let worker = crate::workers::Worker::new(
                index,
                load,
                reuseport,
                sockets,
                edge(),
                filter.clone(),
            );
            server.add_service(worker);
        }
    }
    if !tls.is_empty() {
        let mut secure = Service::new("portcullis-tls".to_string(), edge());
        secure.set_connection_filter(filter.clone());
        for t in &tls {
            let (Some(cert), Some(key)) = (t.cert.to_str(), t.key.to_str()) else {
                tracing::error!(listen = %t.listen, "TLS certificate and key paths must be UTF-8");
                return ExitCode::FAILURE;
            };
            let mut settings = match TlsSettings::intermediate(cert, key) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(listen = %t.listen, error = %e, "cannot set up TLS");
                    return ExitCode::FAILURE;
                }
            };
            settings.enable_h2();
            secure.add_tls_with_settings(&t.listen.to_string(), None, settings);
        }
        server.add_service(secure);
    }

    if let Some(addr) = metrics_addr {
        let mut metrics = pingora_prometheus::prometheus_http_service();
        metrics.threads = Some(1);
        metrics.add_tcp(&addr.to_string());
        server.add_service(metrics);
    }

    if let Some(admin) = admin {
        let token = match admin.token_file.as_deref().map(crate::admin::read_token) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot start the admin API");
                return ExitCode::FAILURE;
            }
        };
        let app = crate::admin::AdminApp {
            runtime: shared.clone(),
            token,
            config_path: path.to_path_buf(),
        };
        let mut svc = pingora::services::listening::Service::new(
            "admin".to_string(),
            pingora::apps::http_app::HttpServer::new_app(app),
        );
        svc.threads = Some(1);
        svc.add_tcp(&admin.listen.to_string());
        server.add_service(svc);
    }
    if let Err(e) = crate::reload::watch_sighup(path.to_path_buf(), shared.clone())
        .and_then(|()| crate::reload::spawn_housekeeping(shared.clone()))
    {
        tracing::error!(error = %e, "cannot start background threads");
        return ExitCode::FAILURE;
    }

    tracing::info!(
        listen = ?listen,
        tls = ?tls.iter().map(|t| t.listen).collect::<Vec<_>>(),
        metrics = ?metrics_addr,
        "portcullis {} starting",
        env!("CARGO_PKG_VERSION")
    );
    server.run(RunArgs::default());
    tracing::info!("portcullis stopped");
    ExitCode::SUCCESS
}

/// Binds every configured address at once and releases them, reporting the first failure.
fn probe_binds(settings: &Settings) -> Result<(), String> {
    let mut held = Vec::new();
    let addrs = settings
        .server
        .listen
        .iter()
        .map(|a| ("server.listen", *a))
        .chain(settings.server.tls.iter().map(|t| ("server.tls", t.listen)))
        .chain(settings.metrics.map(|a| ("metrics.listen", a)))
        .chain(settings.admin.as_ref().map(|a| ("admin.listen", a.listen)));
    for (key, addr) in addrs {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => held.push(l),
            Err(e) => return Err(format!("{key}: cannot listen on {addr}: {e}")),
        }
    }
    Ok(())
}
