//! Redis key names, all under `key_prefix` so several deployments can share one Redis.
//!
//! * `{prefix}ban:{net}`: one active ban (JSON, [`super::message`]), expiring with the ban.
//! * `{prefix}off:{client}`: the client's offenses within `findtime` (a sorted set by time,
//!   member `node:seq:weight`), expiring `findtime` after the last one.
//! * `{prefix}hist:{client}`: the client's cluster-wide automatic ban count, expiring
//!   `history` after its last ban ends (fail2ban's `dbpurgeage`).
//! * `{prefix}bans`, `{prefix}offenders`: indexes (sorted sets by expiry) that cap the number
//!   of ban and offender keys and list the bans to load at (re)connection.
//! * `{prefix}events`: the pub/sub channel of ban changes.
//! * `{prefix}rl:{zone}:{client}`: a `shared = true` zone's leaky bucket for one client (a
//!   hash: excess and last, as nginx keeps them), expiring when it has drained.
//! * `{prefix}rl:{zone}`: the index (a sorted set by expiry) that caps a shared zone's
//!   clients at its `max_clients`.

use std::net::IpAddr;

use ipnet::IpNet;

/// Key names for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// The ban of `net`.
    pub fn ban(&self, net: &IpNet) -> String {
        format!("{}ban:{}", self.prefix, net.trunc())
    }

    /// The ban of a network as the ban index lists it.
    pub fn ban_named(&self, net: &str) -> String {
        format!("{}ban:{net}", self.prefix)
    }

    /// The offense window of `client` (a client key).
    pub fn offenses(&self, client: IpAddr) -> String {
        format!("{}off:{client}", self.prefix)
    }

    /// The ban count of `client`.
    pub fn history(&self, client: IpAddr) -> String {
        format!("{}hist:{client}", self.prefix)
    }

    /// The index of active bans.
    pub fn ban_index(&self) -> String {
        format!("{}bans", self.prefix)
    }

    /// The index of offender windows.
    pub fn offender_index(&self) -> String {
        format!("{}offenders", self.prefix)
    }

    /// The leaky bucket of `client` (a client key) in the shared zone `zone`.
    pub fn rate(&self, zone: &str, client: IpAddr) -> String {
        format!("{}rl:{zone}:{client}", self.prefix)
    }

    /// The index of the shared zone `zone`'s clients.
    pub fn rate_index(&self, zone: &str) -> String {
        format!("{}rl:{zone}", self.prefix)
    }

    /// The pub/sub channel.
    pub fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }
}

/// The client key `net` stands for when it is no wider than one client (IPv4 `/32`, IPv6
/// `/ipv6_prefix` or longer), as the reputation table keys it.
pub fn client_of(net: &IpNet, ipv6_prefix: u8) -> Option<IpAddr> {
    match net {
        IpNet::V4(n) if n.prefix_len() == 32 => Some(IpAddr::V4(n.addr())),
        IpNet::V6(n) if n.prefix_len() >= ipv6_prefix.min(128) => {
            IpNet::new(IpAddr::V6(n.addr()), ipv6_prefix.min(128))
                .ok()
                .map(|k| k.network())
        }
        _ => None,
    }
}

/// The network a client key stands for (what its ban key is named after).
pub fn net_of(client: IpAddr, ipv6_prefix: u8) -> IpNet {
    let bits = match client {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => ipv6_prefix.min(128),
    };
    IpNet::new(client, bits).map_or(IpNet::from(client), |n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_client_keys() {
        let k = Keys::new("p:");
        let net: IpNet = "203.0.113.7/32".parse().unwrap();
        assert_eq!(k.ban(&net), "p:ban:203.0.113.7/32");
        assert_eq!(k.channel(), "p:events");
        let v6: IpNet = "2001:db8::5/128".parse().unwrap();
        assert_eq!(client_of(&v6, 64), Some("2001:db8::".parse().unwrap()));
        assert_eq!(client_of(&"10.0.0.0/8".parse().unwrap(), 64), None);
        assert_eq!(
            k.ban(&net_of("2001:db8::".parse().unwrap(), 64)),
            "p:ban:2001:db8::/64"
        );
    }
}
