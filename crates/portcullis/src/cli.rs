//! `portcullis bans ...`: the `fail2ban-client` equivalents, talking to the admin API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::config::Settings;

/// What to do with bans.
#[derive(Debug, Subcommand)]
pub enum BansCommand {
    /// List active bans (like `fail2ban-client status JAIL`).
    List {
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ban an IP or CIDR (like `fail2ban-client set JAIL banip IP`).
    Add {
        /// IP address or CIDR.
        target: String,
        /// How long, e.g. "1h", "7d"; default: the configured bantime.
        #[arg(short, long)]
        duration: Option<String>,
        /// Why, shown in the ban list.
        #[arg(short, long)]
        reason: Option<String>,
    },
    /// Lift a ban (like `fail2ban-client set JAIL unbanip IP`).
    Remove {
        /// IP address or CIDR, as banned.
        target: String,
    },
    /// Show one client's offense history and ban.
    Show {
        /// IP address.
        ip: String,
    },
}

/// Where the admin API is and how to authenticate, from the config file.
struct Admin {
    addr: SocketAddr,
    token: Option<String>,
}

fn admin_from_config(config: &Path) -> Result<Admin, String> {
    let settings = Settings::load(config).map_err(|e| e.to_string())?;
    let admin = settings.admin.ok_or_else(|| {
        format!(
            "{}: no [admin] section; the admin API is off",
            config.display()
        )
    })?;
    let token = admin
        .token_file
        .as_deref()
        .map(crate::admin::read_token)
        .transpose()?;
    Ok(Admin {
        addr: admin.listen,
        token,
    })
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
fn call(
    admin: &Admin,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut stream =
        TcpStream::connect_timeout(&admin.addr, Duration::from_secs(5)).map_err(|e| {
            format!(
                "cannot reach the admin API at {}: {e} (is portcullis running?)",
                admin.addr
            )
        })?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        admin.addr,
        body.len()
    );
    if let Some(token) = &admin.token {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("cannot send to the admin API: {e}"))?;
    let mut resp = Vec::new();
    stream
        .read_to_end(&mut resp)
        .map_err(|e| format!("cannot read the admin API's answer: {e}"))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "the admin API answered with garbage".to_string())?;
    let value = serde_json::from_str(body.trim()).unwrap_or(Value::String(body.to_string()));
    Ok((status, value))
}

fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Runs one `bans` command against the gateway configured in `config`.
pub fn bans(config: &Path, command: BansCommand) -> ExitCode {
    let result = admin_from_config(config).and_then(|admin| match command {
        BansCommand::List { json } => call(&admin, "GET", "/bans", None).map(|(s, v)| {
            if json || s != 200 {
                (s, v.to_string())
            } else {
                let mut out = String::from(
                    "TARGET                                  UNTIL                 BANS  REASON\n",
                );
                for ban in v.as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{:<39} {:<21} {:>4}  {}\n",
                        ban["net"].as_str().unwrap_or("?"),
                        ban["until_ms"].as_u64().map(time).unwrap_or_default(),
                        ban["ban_count"].as_u64().unwrap_or(0),
                        ban["reason"].as_str().unwrap_or(""),
                    ));
                }
                (s, out.trim_end().to_string())
            }
        }),
        BansCommand::Add {
            target,
            duration,
            reason,
        } => {
            let body = json!({ "target": target, "duration": duration, "reason": reason });
            call(&admin, "POST", "/bans", Some(&body)).map(|(s, v)| (s, v.to_string()))
        }
        BansCommand::Remove { target } => {
            let path = format!("/bans?target={}", target.replace('/', "%2F"));
            call(&admin, "DELETE", &path, None).map(|(s, v)| (s, v.to_string()))
        }
        BansCommand::Show { ip } => {
            call(&admin, "GET", &format!("/clients/{ip}"), None).map(|(s, v)| (s, v.to_string()))
        }
    });
    match result {
        Ok((status, out)) if (200..300).contains(&status) => {
            // A reader that stops early (`| head`, `| grep -q`) is no error of ours: println!
            // would panic on the closed pipe.
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), "{out}");
            ExitCode::SUCCESS
        }
        Ok((status, out)) => {
            eprintln!("admin API answered {status}: {out}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
