//! portcullis: an inline gateway that replaces nginx + fail2ban in front of an API server.
#![forbid(unsafe_code)]

mod accept;
mod access_log;
mod admin;
mod api;
mod cli;
mod cluster;
mod config;
mod engine_metrics;
mod fast;
mod forwarding;
mod h2guard;
mod load;
mod logging;
mod metrics;
mod proxy;
mod reload;
mod report;
mod request_ctx;
mod runtime;
mod serve;
mod state;
mod upstream;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: a proxy allocates and frees small buffers per request
/// from many threads, and glibc's allocator showed as ~12 % of CPU in the profile
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// portcullis: rate limiting, probe blocking and fail2ban-style bans in one reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
    },
    /// Manage bans through the running gateway's admin API (the fail2ban-client equivalents).
    Bans {
        /// Configuration file (for the admin address and token).
        #[arg(
            short,
            long,
            default_value = "/etc/portcullis/portcullis.toml",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: cli::BansCommand,
    },
    /// Validate a configuration file and exit: 0 when valid, 1 with every error otherwise.
    Check {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::Settings::load(&config) {
            Ok(settings) => {
                println!(
                    "{}: ok ({} listener(s), {} route(s), {} upstream(s))",
                    config.display(),
                    settings.server.listen.len() + settings.server.tls.len(),
                    settings.routes.len(),
                    settings.upstreams.len(),
                );
                match settings.api.as_ref().map(|a| &a.source) {
                    Some(config::ApiSource::File { path, spec }) => println!(
                        "{}: API spec ok ({} path template(s))",
                        path.display(),
                        spec.template_count()
                    ),
                    Some(config::ApiSource::Url(url)) => {
                        println!("{url}: API spec fetched at start and on every reload")
                    }
                    None => {}
                }
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!(
                    "{}: {} error(s); configuration is NOT valid",
                    config.display(),
                    errors.errors.len()
                );
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => serve::run(&config),
        Command::Bans { config, command } => cli::bans(&config, command),
    }
}
