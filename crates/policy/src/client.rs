//! Client identity: who is this request really from?
//!
//! Behind a load balancer the TCP peer is the balancer, not the client. Only peers listed as
//! trusted proxies may name the client in a header; for everyone else the peer address is the
//! client, whatever the headers say, so a scanner cannot pick its own identity. The result is
//! normalized so that one client has one key: IPv4-mapped IPv6 addresses fold to IPv4, and IPv6
//! addresses are aggregated to a prefix (a single host usually owns a whole /64).

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// Which request header carries the client address when the peer is a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientHeader {
    /// `X-Forwarded-For`: the client is the right-most address that is not itself a trusted
    /// proxy (nginx `real_ip_recursive on`).
    XForwardedFor,
    /// `X-Real-IP`: a single address set by the trusted proxy.
    XRealIp,
}

impl ClientHeader {
    /// The lower-case header name.
    pub fn name(self) -> &'static str {
        match self {
            ClientHeader::XForwardedFor => "x-forwarded-for",
            ClientHeader::XRealIp => "x-real-ip",
        }
    }
}

/// Resolves the client identity of a request from its TCP peer and headers.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    trusted: Vec<IpNet>,
    header: ClientHeader,
    ipv6_prefix: u8,
}

impl ClientIdentity {
    /// A resolver trusting `trusted` proxies to name the client in `header`, aggregating IPv6
    /// clients to `ipv6_prefix` bits (clamped to 0..=128).
    pub fn new(trusted: Vec<IpNet>, header: ClientHeader, ipv6_prefix: u8) -> Self {
        let trusted = trusted.into_iter().map(|n| n.trunc()).collect();
        Self {
            trusted,
            header,
            ipv6_prefix: ipv6_prefix.min(128),
        }
    }

    /// Bits of an IPv6 identity.
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }

    /// The header this resolver reads.
    pub fn header(&self) -> ClientHeader {
        self.header
    }

    /// True when `addr` is a trusted proxy.
    pub fn is_trusted(&self, addr: IpAddr) -> bool {
        let addr = fold_mapped(addr);
        self.trusted.iter().any(|net| net.contains(&addr))
    }

    /// The client identity for a request from `peer` whose `header` values (in the order they
    /// appeared) are `values`. Values that do not parse are never trusted.
    pub fn resolve<'a, I>(&self, peer: IpAddr, values: I) -> IpAddr
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: DoubleEndedIterator,
    {
        self.normalize(self.address(peer, values))
    }

    /// The client's real address (for `X-Real-IP` and logs), before IPv6 aggregation; use
    /// [`ClientIdentity::normalize`] on it for the identity key.
    pub fn address<'a, I>(&self, peer: IpAddr, values: I) -> IpAddr
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: DoubleEndedIterator,
    {
        let peer = fold_mapped(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        match self.header {
            ClientHeader::XRealIp => values
                .into_iter()
                .next_back()
                .and_then(parse_addr)
                .unwrap_or(peer),
            ClientHeader::XForwardedFor => {
                // Walk from the right: every hop we trust may name the one before it. Stop at
                // the first untrusted address; a malformed entry ends the walk at the last
                // trusted hop, as nginx does.
                let mut client = peer;
                for value in values.into_iter().rev() {
                    for entry in value.rsplit(|&b| b == b',') {
                        if entry.iter().all(|b| b.is_ascii_whitespace()) {
                            continue;
                        }
                        match parse_addr(entry) {
                            Some(addr) => {
                                client = addr;
                                if !self.is_trusted(addr) {
                                    return client;
                                }
                            }
                            None => return client,
                        }
                    }
                }
                client
            }
        }
    }

    /// Folds IPv4-mapped IPv6 to IPv4 and aggregates IPv6 to the configured prefix.
    pub fn normalize(&self, addr: IpAddr) -> IpAddr {
        aggregate(addr, self.ipv6_prefix)
    }
}

/// The identity key of `addr`: IPv4-mapped IPv6 folded to IPv4, IPv6 masked to `ipv6_prefix`
/// bits (clamped to 128). Idempotent, so a key maps to itself.
pub fn aggregate(addr: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match fold_mapped(addr) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = match ipv6_prefix.min(128) {
                0 => 0,
                p => u128::MAX << (128 - u32::from(p)),
            };
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

/// The address as one 128-bit number, IPv4 in the IPv4-mapped IPv6 space: a single key type
/// for tables of both families. IPv6 clients never occupy that space once mapped addresses
/// are folded to IPv4, and [`fold_mapped`] of the IPv6 address turns it back.
pub(crate) fn mapped_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().into(),
        IpAddr::V6(v6) => v6.into(),
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as plain IPv4; anything else unchanged.
pub fn fold_mapped(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Parses one header entry: an IPv4 or IPv6 address, optionally bracketed (`[::1]`), with
/// surrounding white space. Ports are not accepted: proxies do not add them to these headers.
fn parse_addr(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    // `[v6]` or `[v6]:port`.
    if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return v6
            .parse::<Ipv6Addr>()
            .ok()
            .map(|a| fold_mapped(IpAddr::V6(a)));
    }
    // More than one colon: a bare IPv6 address (it cannot carry a port unbracketed).
    if text.bytes().filter(|&b| b == b':').count() > 1 {
        return text.parse::<IpAddr>().ok().map(fold_mapped);
    }
    // `v4` or `v4:port`, as nginx's realip module (since 1.11) and load balancers that append
    // the port (Azure Application Gateway) write them.
    let v4 = match text.split_once(':') {
        Some((v4, port)) if is_port(port) => v4,
        Some(_) => return None,
        None => text,
    };
    parse_ipv4_decimal(v4).map(IpAddr::V4)
}

/// An IPv4 address in dotted decimal, leading zeros allowed and read as decimal, as nginx's
/// `ngx_inet_addr` reads them (`010.0.0.1` is 10.0.0.1): refusing them would leave every
/// client behind a balancer that writes them with the balancer's identity.
fn parse_ipv4_decimal(text: &str) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse::<u8>().ok()?;
    }
    match parts.next() {
        None => Some(std::net::Ipv4Addr::from(octets)),
        Some(_) => None,
    }
}

/// A TCP port number in decimal.
fn is_port(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 5
        && text.parse::<u16>().is_ok()
        && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_with_ports_and_leading_zeros_name_their_client() {
        assert_eq!(parse_addr(b"203.0.113.7:51234"), Some(ip("203.0.113.7")));
        assert_eq!(parse_addr(b" 010.001.002.003 "), Some(ip("10.1.2.3")));
        assert_eq!(parse_addr(b"[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_addr(b"[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_addr(b"2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_addr(b"::ffff:192.0.2.1"), Some(ip("192.0.2.1")));
        for bad in [
            &b"1.2.3.4:"[..],
            b"1.2.3.4:99999",
            b"1.2.3.4:+80",
            b"1.2.3",
            b"1.2.3.4.5",
            b"1.2.3.256",
            b"0001.2.3.4",
            b"[2001:db8::1]x",
            b"unknown",
            b"",
        ] {
            assert_eq!(parse_addr(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let id = xff(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(&id, "10.0.0.1", &["198.51.100.9:4711, 10.0.0.2:80"]),
            ip("198.51.100.9")
        );
    }

    fn xff(trusted: &[&str]) -> ClientIdentity {
        ClientIdentity::new(
            trusted.iter().map(|n| n.parse().unwrap()).collect(),
            ClientHeader::XForwardedFor,
            64,
        )
    }

    fn resolve(id: &ClientIdentity, peer: &str, headers: &[&str]) -> IpAddr {
        id.resolve(ip(peer), headers.iter().map(|h| h.as_bytes()))
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_headers_say() {
        let id = xff(&["10.0.0.0/8"]);
        assert_eq!(resolve(&id, "203.0.113.7", &["1.2.3.4"]), ip("203.0.113.7"));
        let real = ClientIdentity::new(
            vec!["10.0.0.0/8".parse().unwrap()],
            ClientHeader::XRealIp,
            64,
        );
        assert_eq!(
            resolve(&real, "203.0.113.7", &["1.2.3.4"]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn trusted_peer_names_the_rightmost_untrusted_address() {
        let id = xff(&["10.0.0.0/8"]);
        // The client spoofs 6.6.6.6; the balancer appends the real address.
        assert_eq!(
            resolve(&id, "10.0.0.2", &["6.6.6.6, 198.51.100.9"]),
            ip("198.51.100.9")
        );
        // Chains of trusted proxies are walked through.
        assert_eq!(
            resolve(&id, "10.0.0.2", &["6.6.6.6, 198.51.100.9, 10.1.1.1"]),
            ip("198.51.100.9")
        );
        // Several header lines count as one list, in order.
        assert_eq!(
            resolve(&id, "10.0.0.2", &["6.6.6.6", "198.51.100.9", "10.9.9.9"]),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn all_trusted_chain_yields_the_leftmost() {
        let id = xff(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(&id, "10.0.0.2", &["10.0.0.3, 10.0.0.4"]),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn malformed_entries_are_never_trusted() {
        let id = xff(&["10.0.0.0/8"]);
        assert_eq!(resolve(&id, "10.0.0.2", &["garbage"]), ip("10.0.0.2"));
        assert_eq!(
            resolve(&id, "10.0.0.2", &["1.2.3.4, nonsense"]),
            ip("10.0.0.2")
        );
        assert_eq!(resolve(&id, "10.0.0.2", &[""]), ip("10.0.0.2"));
        assert_eq!(resolve(&id, "10.0.0.2", &[]), ip("10.0.0.2"));
        assert_eq!(
            id.resolve(ip("10.0.0.2"), [&[0xff, 0xfe][..]]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn x_real_ip_from_trusted_peer() {
        let id = ClientIdentity::new(
            vec!["10.0.0.0/8".parse().unwrap()],
            ClientHeader::XRealIp,
            64,
        );
        assert_eq!(
            resolve(&id, "10.0.0.2", &["198.51.100.9"]),
            ip("198.51.100.9")
        );
        assert_eq!(resolve(&id, "10.0.0.2", &["not an ip"]), ip("10.0.0.2"));
    }

    #[test]
    fn ipv4_mapped_ipv6_folds_to_ipv4() {
        let id = xff(&["10.0.0.0/8"]);
        assert_eq!(resolve(&id, "::ffff:203.0.113.7", &[]), ip("203.0.113.7"));
        // A mapped trusted proxy is still trusted.
        assert_eq!(
            resolve(&id, "::ffff:10.0.0.2", &["::ffff:198.51.100.9"]),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn ipv6_clients_aggregate_to_the_prefix() {
        let id = xff(&[]);
        assert_eq!(
            resolve(&id, "2001:db8:1:2:aaaa::1", &[]),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            resolve(&id, "2001:db8:1:2:bbbb::9", &[]),
            resolve(&id, "2001:db8:1:2:aaaa::1", &[])
        );
        assert_ne!(
            resolve(&id, "2001:db8:1:3::1", &[]),
            resolve(&id, "2001:db8:1:2::1", &[])
        );
        let full = ClientIdentity::new(vec![], ClientHeader::XForwardedFor, 128);
        assert_eq!(resolve(&full, "2001:db8::1", &[]), ip("2001:db8::1"));
    }

    #[test]
    fn bracketed_ipv6_in_header() {
        let id = ClientIdentity::new(
            vec!["::1/128".parse().unwrap()],
            ClientHeader::XForwardedFor,
            128,
        );
        assert_eq!(resolve(&id, "::1", &["[2001:db8::5]"]), ip("2001:db8::5"));
    }
}
