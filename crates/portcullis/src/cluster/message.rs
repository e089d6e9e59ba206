//! What gateways say to each other on the channel, and how a ban is stored in Redis: JSON,
//! so `redis-cli` shows it readably (`GET portcullis:ban:203.0.113.7/32`).

use ipnet::IpNet;
use portcullis_policy::reputation::BanInfo;
use serde::{Deserialize, Serialize};

/// One message on the channel: a ban or an unban, tagged with the gateway that sent it so it
/// does not apply its own messages again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The sending gateway's node id.
    pub node: String,
    /// When the ban change was made (ms since the UNIX epoch); 0 for bans written back at
    /// reconnection, which are not timed.
    pub at_ms: u64,
    /// A ban to enforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban: Option<BanInfo>,
    /// A ban to lift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unban: Option<IpNet>,
}

impl Message {
    /// Parses a message; `None` when it is not one (counted as a decode error by the caller).
    pub fn decode(bytes: &[u8]) -> Option<Message> {
        serde_json::from_slice(bytes).ok()
    }

    /// The JSON text.
    pub fn encode(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A stored ban (the value of a `ban:` key).
pub fn decode_ban(bytes: &[u8]) -> Option<BanInfo> {
    serde_json::from_slice(bytes).ok()
}

/// The JSON of a ban, as stored and as the Lua scripts write it.
pub fn encode_ban(ban: &BanInfo) -> String {
    serde_json::to_string(ban).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy::reputation::{BanOrigin, OffenseKind};

    #[test]
    fn a_ban_as_the_lua_script_writes_it_decodes() {
        // The shape of `cjson.encode` plus the integers the script formats itself.
        let text = br#"{"net":"203.0.113.7/32","origin":"automatic","reason":"score 5 reached maxretry 5 within findtime 600s (last offense: probe) on the cluster","trigger":"probe","score":5,"ban_count":2,"created_ms":1764640000123,"until_ms":1764641200123}"#;
        let ban = decode_ban(text).expect("decodes");
        assert_eq!(ban.net, "203.0.113.7/32".parse::<IpNet>().unwrap());
        assert_eq!(ban.origin, BanOrigin::Automatic);
        assert_eq!(ban.trigger, Some(OffenseKind::Probe));
        assert_eq!(ban.ban_count, 2);
        assert_eq!(ban.until_ms, 1_764_641_200_123);
    }

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let ban = BanInfo {
            net: "2001:db8::/64".parse().unwrap(),
            origin: BanOrigin::Manual,
            reason: "manual".into(),
            trigger: None,
            score: 0,
            ban_count: 0,
            created_ms: 1,
            until_ms: u64::MAX,
        };
        let m = Message {
            node: "gw-1".into(),
            at_ms: 5,
            ban: Some(ban),
            unban: None,
        };
        assert_eq!(Message::decode(m.encode().as_bytes()), Some(m));
        let unban = br#"{"node":"gw-2","at_ms":7,"unban":"198.51.100.0/24"}"#;
        assert_eq!(
            Message::decode(unban).and_then(|m| m.unban),
            Some("198.51.100.0/24".parse().unwrap())
        );
        assert_eq!(Message::decode(b"not json"), None);
        assert_eq!(decode_ban(br#"{"net":"x"}"#), None);
    }
}
