//! Routing: which `[[route]]` serves a request, by optional Host and longest path prefix.

use crate::settings::RouteSettings;

/// Finds the route for a request.
///
/// Routes naming the request's host are tried first, then routes with no host (as nginx tries
/// the matching `server_name` block before the default server). Within those, the longest
/// matching path prefix wins. A prefix matches whole segments: `/api` matches `/api` and
/// `/api/users`, not `/apix`.
#[derive(Debug, Clone)]
pub struct Router {
    /// (host, path, route index), most specific first.
    entries: Vec<(Option<String>, String, usize)>,
}

impl Router {
    /// A router over `routes` (indices into that slice are returned).
    pub fn new(routes: &[RouteSettings]) -> Self {
        let mut entries: Vec<_> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.host.clone(), r.path.clone(), i))
            .collect();
        // Host routes before host-less ones; longer prefixes first.
        entries.sort_by(|a, b| {
            b.0.is_some()
                .cmp(&a.0.is_some())
                .then(b.1.len().cmp(&a.1.len()))
        });
        Self { entries }
    }

    /// The index of the route for `host` (without port, any case) and `path`, the request's
    /// normalized path (`portcullis_policy::route_path`).
    pub fn find(&self, host: Option<&str>, path: &[u8]) -> Option<usize> {
        self.entries
            .iter()
            .find(|(h, prefix, _)| {
                let host_ok = match h {
                    None => true,
                    Some(h) => host.is_some_and(|req| req.eq_ignore_ascii_case(h)),
                };
                host_ok && prefix_matches(prefix, path)
            })
            .map(|(_, _, i)| *i)
    }
}

fn prefix_matches(prefix: &str, path: &[u8]) -> bool {
    match path.strip_prefix(prefix.as_bytes()) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with(b"/"),
    }
}

/// True when a Host value is a host: a name (letters, digits, `-`, `.`, `_`), an IPv4
/// address or a bracketed IPv6 address, with an optional port. No user info (`a@evil`), no
/// path, no spaces or percent-escapes.
pub fn valid_host(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                ("", after)
            }
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, _)) => (name, &host[name.len()..]),
            None => (host, ""),
        },
    };
    let port_ok = match port.strip_prefix(':') {
        Some(digits) => digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()),
        None => port.is_empty(),
    };
    port_ok
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The host part of a Host header or authority: port and trailing dot removed.
pub fn host_without_port(host: &str) -> &str {
    let host = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str) -> RouteSettings {
        RouteSettings {
            name: path.into(),
            host: host.map(str::to_string),
            path: path.into(),
            upstream: 0,
            zones: vec![],
            max_body: None,
            websocket: false,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let r = Router::new(&[
            route(None, "/"),
            route(None, "/api"),
            route(None, "/api/v2/"),
        ]);
        assert_eq!(r.find(None, b"/"), Some(0));
        assert_eq!(r.find(None, b"/other"), Some(0));
        assert_eq!(r.find(None, b"/api"), Some(1));
        assert_eq!(r.find(None, b"/api/users"), Some(1));
        assert_eq!(r.find(None, b"/api/v2/users"), Some(2));
        // Whole segments only.
        assert_eq!(r.find(None, b"/apix"), Some(0));
    }

    #[test]
    fn host_routes_come_first_and_fall_back() {
        let r = Router::new(&[route(None, "/"), route(Some("api.example.com"), "/v1")]);
        assert_eq!(r.find(Some("API.example.com"), b"/v1/x"), Some(1));
        assert_eq!(r.find(Some("api.example.com"), b"/other"), Some(0));
        assert_eq!(r.find(Some("www.example.com"), b"/v1/x"), Some(0));
        assert_eq!(r.find(None, b"/v1/x"), Some(0));
    }

    #[test]
    fn no_route_is_none() {
        let r = Router::new(&[route(None, "/api")]);
        assert_eq!(r.find(None, b"/"), None);
        assert_eq!(r.find(None, b"/ap"), None);
    }

    #[test]
    fn hosts_are_names_or_addresses_with_a_port() {
        for good in [
            "api.example.com",
            "api.example.com:8080",
            "127.0.0.1:80",
            "[::1]:8443",
            "[::1]",
            "localhost",
            "a_b.internal",
            "",
        ] {
            assert!(valid_host(good), "{good}");
        }
        for bad in [
            "a@evil",
            "evil.com/x",
            "a b",
            "a%2e",
            "[::1",
            "[zz]:80",
            "a:b",
            "a:123456",
            "[::1]x",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn host_ports_are_ignored() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com."), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "::1");
        assert_eq!(host_without_port("example.com"), "example.com");
    }
}
