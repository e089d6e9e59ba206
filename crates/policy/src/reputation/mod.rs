//! Reputation table and escalating bans: fail2ban's job, done inline.
//!
//! # Semantics (fail2ban vocabulary)
//!
//! * Every offense (probe hit, rate-limit rejection, upstream offense status, malformed request)
//!   carries a weight. A client's *score* is the sum of the weights of its offenses whose time
//!   lies within the last `findtime` (`offense.at + findtime > now`, a sliding window as in
//!   fail2ban). When the score reaches `maxretry` the client is banned for `bantime`; the
//!   offense that crosses the threshold returns [`Event::Banned`], so that request is the last
//!   one from the client to reach the upstream. The window is cleared by the ban.
//! * Escalation (`[reputation.bantime_increment]`, fail2ban's `bantime.increment`): the `n`-th
//!   ban of an offender lasts `bantime * factor^(n-1)` (the exponent is capped at 20 as fail2ban
//!   does). fail2ban's default formula is `bantime * 2^(n-1) * factor` with `factor = 1`; here
//!   `factor` is the growth base, so the sketch's `factor = 2` gives fail2ban's default series
//!   1, 2, 4, 8... When `multipliers` is non-empty it replaces the formula, as in fail2ban: the
//!   `n`-th ban lasts `bantime * multipliers[min(n-1, len-1)]` (`factor` is then unused). The
//!   result is capped at `maxtime` (0 = no cap), then a uniform random `0..=rndtime` is added
//!   so a botnet cannot compute the exact unban time. Without `increment`, every ban lasts
//!   `bantime`.
//! * Offender history (ban count, end of the last ban) outlives the ban and is forgotten
//!   `history` after the last ban ended (fail2ban's `dbpurgeage`, default here one week).
//!   Offenders that were never banned are forgotten once their window is empty.
//! * `ignoreip` clients are never counted and never banned (even inside a banned CIDR);
//!   `deny` networks are always refused and win over `ignoreip`. Both are address lists, as
//!   fail2ban's `ignoreip` and nginx's `deny`: they are matched against the client's address,
//!   not its (IPv6-aggregated) key; see "Client keys". Admin bans of a network that
//!   lies wholly inside `ignoreip` are refused ([`BanError::Ignored`]).
//! * Admin bans (`ban`) have an explicit duration, are never escalated and do not change the
//!   offender's ban count. Unbanning a client also clears its current window.
//!
//! # Client keys
//!
//! Clients are keyed by their identity: IPv4, or IPv6 masked to `ipv6_prefix` bits (a host
//! usually owns a whole /64). [`Reputation::check`], [`Reputation::offense`] and
//! [`Reputation::history`] take the client's *address* and aggregate it here
//! ([`crate::client::aggregate`], the same as [`crate::client::ClientIdentity::normalize`]),
//! because `deny` and `ignoreip` are matched against the address itself: an entry narrower
//! than `ipv6_prefix` (`::1`, the default `ignoreip`) names addresses, not identities.
//!
//! * `deny = ["2001:db8::5"]` refuses exactly that address. The rest of its /64 is served;
//!   it shares one identity with it for offenses, bans and limits, but nothing it did put it
//!   on a list.
//! * `ignoreip = ["::1"]`: offenses from `::1` are not counted, and `::1` is served even when
//!   its /64 identity is banned because of a neighbour.
//!
//! Passing a key still works (aggregation is idempotent), but then entries narrower than the
//! key cannot match it. A network given to [`Reputation::ban`]/[`Reputation::unban`] that is
//! at least as specific as a client key (IPv4 `/32`, IPv6 `/ipv6_prefix` or longer) is treated
//! as that one client key; anything wider is a CIDR ban.
//!
//! # Bounded memory
//!
//! * Offenders: at most `max_offenders` (a global count; one shard may hold up to twice its
//!   even share). When full, the shard of the new client drops forgettable entries and then
//!   evicts an eighth of its entries in one batch, so an IP-rotating flood costs amortized
//!   O(1) per new client. Currently banned offenders go first, then the least harmful (by
//!   `score + ban_count * maxretry`, then oldest last offense). A full table therefore never
//!   refuses a new offender: otherwise filling it with bans (100,000 IPv6 /64 identities are
//!   one /47) would leave every later client free to probe. A new client is left untracked
//!   (counted in [`Stats::offenders_untracked`]) only when its shard is empty while the other
//!   shards fill the global bound.
//! * Evicting a banned offender loses nothing that matters: its ban lives in the bans table
//!   and carries the ban count and end. When the ban ends (housekeeping or an admin unban) or
//!   the client offends again, the history (ban count, end of the last ban) is taken back
//!   from the ban entry, so escalation goes on as if the record had never left. Only the
//!   admin-facing `total_offenses` counter is lost.
//! * Offense memory per offender: the last `min(maxretry, 32)` weighted offenses. Weights are
//!   at least 1, so for `maxretry <= 32` this decides the threshold exactly; above that the two
//!   oldest entries are merged (keeping the newer time), which can only ban slightly earlier.
//! * CIDR bans are meant to be few (hundreds or thousands): each change republishes a copy of
//!   the network lists into every shard so that `check` takes one sharded lock only.
//! * Bans: at most `max_bans` active bans (exact plus CIDR). A ban beyond that is refused, never
//!   made by dropping an existing one: [`Reputation::ban`] returns [`BanError::Capacity`] and
//!   automatic bans are counted in [`Stats::bans_refused`] (the offender keeps its window, so
//!   it is banned as soon as room frees up).
//!
//! # Persistence
//!
//! Mutations return [`Event`]s carrying a global sequence number; the binary forwards them to a
//! writer thread owning a [`crate::persist::Journal`]. No file I/O happens here.

mod netset;
mod table;

use ipnet::IpNet;
use netset::NetSet;
use parking_lot::RwLock;
use rand::Rng;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

/// One minute in milliseconds.
const MINUTE_MS: u64 = 60_000;
/// One week in milliseconds.
const WEEK_MS: u64 = 7 * 24 * 60 * MINUTE_MS;
/// Most offenses remembered per offender (see the module docs on exactness).
const MAX_WINDOW_ENTRIES: usize = 32;
/// fail2ban caps the escalation exponent at 20; so do we.
const MAX_ESCALATION_EXPONENT: u32 = 20;
/// Aim for about this many offenders per shard (keeps batch eviction scans short).
const OFFENDERS_PER_SHARD: usize = 1024;
/// Most shards; enough to keep lock contention low on many cores.
const MAX_SHARDS: usize = 64;

/// Escalating ban times: `[reputation.bantime_increment]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Increment {
    /// Growth base: the `n`-th ban lasts `bantime * factor^(n-1)`.
    pub factor: f64,
    /// When non-empty, replaces the formula: the `n`-th ban lasts
    /// `bantime * multipliers[min(n-1, len-1)]`.
    pub multipliers: Vec<f64>,
    /// Longest escalated ban in milliseconds; 0 means no cap.
    pub maxtime_ms: u64,
    /// Largest random jitter added to an automatic ban, in milliseconds; 0 disables it.
    pub rndtime_ms: u64,
}

impl Default for Increment {
    fn default() -> Self {
        Self {
            factor: 2.0,
            multipliers: Vec::new(),
            maxtime_ms: WEEK_MS,
            rndtime_ms: 0,
        }
    }
}

/// The `[reputation]` jail settings, durations already converted to milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct ReputationSettings {
    /// Score (sum of offense weights within `findtime`) at which a client is banned.
    pub maxretry: u32,
    /// Length of the sliding offense window.
    pub findtime_ms: u64,
    /// Duration of a first ban.
    pub bantime_ms: u64,
    /// Escalation for repeat offenders; `None` = every ban lasts `bantime`.
    pub increment: Option<Increment>,
    /// How long an offender's ban history is kept after its last ban ended.
    pub history_ms: u64,
    /// Most offenders tracked at once.
    pub max_offenders: usize,
    /// Most active bans (exact and CIDR) at once; more are refused, never dropped.
    pub max_bans: usize,
    /// Networks never counted and never banned.
    pub ignoreip: Vec<IpNet>,
    /// Networks always refused.
    pub deny: Vec<IpNet>,
    /// Bits of an IPv6 client key (must match `client_ip.ipv6_prefix`).
    pub ipv6_prefix: u8,
}

impl Default for ReputationSettings {
    fn default() -> Self {
        Self {
            maxretry: 5,
            findtime_ms: 10 * MINUTE_MS,
            bantime_ms: 10 * MINUTE_MS,
            increment: Some(Increment::default()),
            history_ms: WEEK_MS,
            max_offenders: 100_000,
            max_bans: 1_000_000,
            ignoreip: Vec::new(),
            deny: Vec::new(),
            ipv6_prefix: 64,
        }
    }
}

/// What a client did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffenseKind {
    /// Requested a known probe path or used a scanner user agent.
    Probe,
    /// Was rejected by a rate limit.
    RateLimit,
    /// The upstream answered with one of `offense_status`.
    UpstreamStatus,
    /// Sent a request that could not be parsed.
    Malformed,
    /// Asked for a path the API's spec does not declare (`[api] unknown`).
    UnknownRoute,
    /// Flooded an HTTP/2 connection with control frames or reset streams (Rapid Reset); the
    /// connection was closed with GOAWAY ENHANCE_YOUR_CALM.
    Flood,
}

impl OffenseKind {
    /// Every kind, in a stable order (for metrics).
    pub const ALL: [OffenseKind; 6] = [
        OffenseKind::Probe,
        OffenseKind::RateLimit,
        OffenseKind::UpstreamStatus,
        OffenseKind::Malformed,
        OffenseKind::UnknownRoute,
        OffenseKind::Flood,
    ];

    /// The metric label: `probe`, `rate_limit`, `upstream_status`, `malformed`,
    /// `unknown_route`, `flood`.
    pub fn as_str(self) -> &'static str {
        match self {
            OffenseKind::Probe => "probe",
            OffenseKind::RateLimit => "rate_limit",
            OffenseKind::UpstreamStatus => "upstream_status",
            OffenseKind::Malformed => "malformed",
            OffenseKind::UnknownRoute => "unknown_route",
            OffenseKind::Flood => "flood",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Default weight of each offense kind; the configuration may override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffenseWeights {
    /// Weight of a probe hit (default 2: probes are a strong signal).
    pub probe: u32,
    /// Weight of a rate-limit rejection (default 1).
    pub rate_limit: u32,
    /// Weight of an upstream offense status (default 1).
    pub upstream_status: u32,
    /// Weight of a malformed request (default 1).
    pub malformed: u32,
    /// Weight of a request outside the API's spec (default 1, as an upstream 404 has).
    pub unknown_route: u32,
    /// Weight of an HTTP/2 flood (default 3: the connection is already cut, and with the
    /// default `maxretry` of 5 a client that reconnects to flood again is banned).
    pub flood: u32,
}

impl Default for OffenseWeights {
    fn default() -> Self {
        Self {
            probe: 2,
            rate_limit: 1,
            upstream_status: 1,
            malformed: 1,
            unknown_route: 1,
            flood: 3,
        }
    }
}

impl OffenseWeights {
    /// The weight of `kind`.
    pub fn weight(&self, kind: OffenseKind) -> u32 {
        match kind {
            OffenseKind::Probe => self.probe,
            OffenseKind::RateLimit => self.rate_limit,
            OffenseKind::UpstreamStatus => self.upstream_status,
            OffenseKind::Malformed => self.malformed,
            OffenseKind::UnknownRoute => self.unknown_route,
            OffenseKind::Flood => self.flood,
        }
    }
}

/// Who decided a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BanOrigin {
    /// The offense score reached `maxretry`.
    Automatic,
    /// An administrator.
    Manual,
}

/// Why a ban ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnbanCause {
    /// An administrator lifted it.
    Admin,
    /// Its time ran out (reported by [`Reputation::expire`]).
    Expired,
}

/// The decision for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not banned.
    Allow,
    /// Banned (by client or by a CIDR ban) until `until_ms`.
    Banned {
        /// When the ban ends (ms since the UNIX epoch; `u64::MAX` = never).
        until_ms: u64,
        /// Why the ban was made.
        reason: Arc<str>,
    },
    /// Inside a `deny` network.
    Denied,
}

/// A ban, as listed by the admin API and persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanInfo {
    /// The banned client (IPv4 `/32`, IPv6 `/ipv6_prefix`) or network.
    pub net: IpNet,
    /// Automatic or manual.
    pub origin: BanOrigin,
    /// Human-readable reason.
    pub reason: String,
    /// The offense kind that crossed the threshold (automatic bans).
    pub trigger: Option<OffenseKind>,
    /// The offense score when banned (automatic bans).
    pub score: u32,
    /// How many times this client has been banned automatically, this ban included.
    pub ban_count: u32,
    /// When the ban was made (ms since the UNIX epoch).
    pub created_ms: u64,
    /// When the ban ends (ms since the UNIX epoch; `u64::MAX` = never).
    pub until_ms: u64,
}

/// One remembered offense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffenseRecord {
    /// What happened.
    pub kind: OffenseKind,
    /// Its weight (merged entries carry the sum).
    pub weight: u32,
    /// When (ms since the UNIX epoch).
    pub at_ms: u64,
}

/// One client's record, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffenderInfo {
    /// The client key.
    pub client: IpAddr,
    /// Sum of offense weights within `findtime`.
    pub score: u32,
    /// The threshold it is compared with.
    pub maxretry: u32,
    /// Offenses within `findtime`, oldest first.
    pub recent: Vec<OffenseRecord>,
    /// Offenses ever counted for this client while it was tracked.
    pub total_offenses: u64,
    /// Automatic bans remembered for this client.
    pub ban_count: u32,
    /// When its last ban ended or will end (0 = never banned).
    pub last_ban_end_ms: u64,
    /// The ban currently applying to it (its own or a CIDR ban), if any.
    pub current_ban: Option<BanInfo>,
}

/// Something the journal must record (and the binary may log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A ban was made (or replaced).
    Banned {
        /// Global order of mutations: on replay the highest `seq` per network wins.
        seq: u64,
        /// The ban.
        ban: BanInfo,
    },
    /// A ban ended.
    Unbanned {
        /// Global order of mutations.
        seq: u64,
        /// The client or network.
        net: IpNet,
        /// When.
        at_ms: u64,
        /// Why.
        cause: UnbanCause,
    },
}

impl Event {
    /// The sequence number of the mutation.
    pub fn seq(&self) -> u64 {
        match self {
            Event::Banned { seq, .. } | Event::Unbanned { seq, .. } => *seq,
        }
    }
}

/// Why an admin ban was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BanError {
    /// The network lies wholly inside `ignoreip`.
    #[error("{0} is inside ignoreip")]
    Ignored(IpNet),
    /// `max_bans` bans are active.
    #[error("ban table full ({0} active bans)")]
    Capacity(usize),
    /// A ban must last at least one millisecond.
    #[error("ban duration must be positive")]
    ZeroDuration,
}

/// Counters for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Offenses reported, by kind (ignored clients included).
    pub offenses_by_kind: Vec<(&'static str, u64)>,
    /// Bans made, by trigger kind or `manual`.
    pub bans_by_reason: Vec<(&'static str, u64)>,
    /// Active bans (exact and CIDR; expired ones count until [`Reputation::expire`]).
    pub active_bans: u64,
    /// Offenders tracked.
    pub offenders: u64,
    /// Offenders evicted to make room.
    pub evictions: u64,
    /// New offenders (or histories of ended bans) not tracked because their shard was empty
    /// while the other shards filled `max_offenders`.
    pub offenders_untracked: u64,
    /// Bans refused because `max_bans` bans were active.
    pub bans_refused: u64,
    /// Bans lifted by an administrator.
    pub unbans: u64,
    /// Bans that ran out.
    pub expirations: u64,
}

/// A persisted ban: a [`BanInfo`] with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBan {
    /// Sequence number of the mutation that made it.
    pub seq: u64,
    /// The ban.
    pub ban: BanInfo,
}

/// A persisted offender history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHistory {
    /// Sequence number of the mutation that last changed it.
    pub seq: u64,
    /// The client key.
    pub client: IpAddr,
    /// Automatic bans so far.
    pub ban_count: u32,
    /// When its last ban ended or will end.
    pub last_ban_end_ms: u64,
}

/// Everything that survives a restart: active bans and offender histories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistentState {
    /// Active bans.
    pub bans: Vec<StoredBan>,
    /// Offender histories (clients with at least one ban).
    pub histories: Vec<StoredHistory>,
}

/// What [`Reputation::restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Bans now active.
    pub bans_restored: usize,
    /// Bans dropped because they had expired.
    pub bans_expired: usize,
    /// Bans dropped because `max_bans` was reached or the network is in `ignoreip`.
    pub bans_refused: usize,
    /// Histories now tracked.
    pub histories_restored: usize,
    /// Histories dropped because `history` had passed or the table was full.
    pub histories_dropped: usize,
}

/// Offenses kept inline in an [`Offender`]: most clients of a scan offend once or twice, and
/// a heap window per client would cost more than the rest of its entry (1 M offenders).
const INLINE_OFFENSES: usize = 1;

/// One tracked client.
#[derive(Debug, Clone, Default)]
struct Offender {
    /// Recent offenses, oldest first; at most `window_capacity` entries.
    window: SmallVec<[OffenseRecord; INLINE_OFFENSES]>,
    ban_count: u32,
    last_ban_end_ms: u64,
    last_seen_ms: u64,
    /// Score right after the last offense (or 0 after the window was cleared).
    last_score: u32,
    total_offenses: u64,
    /// Sequence number of the last history change (persisted with the history).
    seq: u64,
}

impl Offender {
    /// Drops offenses that left the window and returns the remaining score.
    fn prune(&mut self, now_ms: u64, findtime_ms: u64) -> u32 {
        let expired = self
            .window
            .iter()
            .take_while(|o| o.at_ms.saturating_add(findtime_ms) <= now_ms)
            .count();
        self.window.drain(..expired);
        self.score()
    }

    fn score(&self) -> u32 {
        self.window
            .iter()
            .fold(0u32, |sum, o| sum.saturating_add(o.weight))
    }

    /// The score within the window without mutating.
    fn score_at(&self, now_ms: u64, findtime_ms: u64) -> u32 {
        self.window
            .iter()
            .filter(|o| o.at_ms.saturating_add(findtime_ms) > now_ms)
            .fold(0u32, |sum, o| sum.saturating_add(o.weight))
    }

    fn push(&mut self, offense: OffenseRecord, capacity: usize) {
        while self.window.len() >= capacity.max(1) && self.window.len() >= 2 {
            // Merge the two oldest entries (keeping the newer time) instead of dropping one:
            // a forgotten weight could let a client stay under the threshold forever.
            let oldest = self.window.remove(0);
            self.window[0].weight = self.window[0].weight.saturating_add(oldest.weight);
        }
        self.window.push(offense);
    }

    /// True when nothing about this offender is worth remembering any more. Reads only
    /// inline fields (no window access): eviction scans whole shards and must not chase a
    /// pointer per entry.
    fn forgettable(&self, now_ms: u64, s: &ReputationSettings) -> bool {
        // Every offense is at or before `last_seen_ms`, so this implies an empty window.
        self.last_seen_ms.saturating_add(s.findtime_ms) <= now_ms
            && (self.ban_count == 0 || self.last_ban_end_ms.saturating_add(s.history_ms) <= now_ms)
    }

    /// The history an evicted offender left in its own ban entry (see the module docs). For a
    /// manual ban the ban's end stands in for the end of the last automatic one, which can
    /// only keep the history a little longer.
    fn from_ban(ban: &BanEntry, now_ms: u64) -> Self {
        Self {
            ban_count: ban.ban_count,
            last_ban_end_ms: ban.until_ms,
            last_seen_ms: ban.until_ms.min(now_ms),
            seq: ban.seq,
            ..Self::default()
        }
    }

    /// Eviction order key, least harmful first: the score as of the last offense (0 once the
    /// window has surely emptied) plus a full `maxretry` per past ban, then oldest first.
    fn harm(&self, now_ms: u64, s: &ReputationSettings) -> (u64, u64) {
        let score = if self.last_seen_ms.saturating_add(s.findtime_ms) <= now_ms {
            0
        } else {
            u64::from(self.last_score)
        };
        let past = u64::from(self.ban_count) * u64::from(s.maxretry.max(1));
        (score + past, self.last_seen_ms)
    }
}

/// One active ban.
#[derive(Debug, Clone)]
struct BanEntry {
    seq: u64,
    origin: BanOrigin,
    reason: Arc<str>,
    trigger: Option<OffenseKind>,
    score: u32,
    ban_count: u32,
    created_ms: u64,
    until_ms: u64,
}

impl BanEntry {
    fn active(&self, now_ms: u64) -> bool {
        self.until_ms > now_ms
    }

    fn info(&self, net: IpNet) -> BanInfo {
        BanInfo {
            net,
            origin: self.origin,
            reason: self.reason.to_string(),
            trigger: self.trigger,
            score: self.score,
            ban_count: self.ban_count,
            created_ms: self.created_ms,
            until_ms: self.until_ms,
        }
    }

    fn from_info(seq: u64, info: &BanInfo) -> Self {
        Self {
            seq,
            origin: info.origin,
            reason: Arc::from(info.reason.as_str()),
            trigger: info.trigger,
            score: info.score,
            ban_count: info.ban_count,
            created_ms: info.created_ms,
            until_ms: info.until_ms,
        }
    }
}

/// Offenders and exact bans whose keys hash to one shard.
#[derive(Debug, Default)]
struct Shard {
    offenders: table::Table<Offender>,
    bans: HashMap<IpAddr, BanEntry>,
    /// This shard's copy of the network lists, so a request takes one (sharded) lock only:
    /// a global lock would bounce its cache line between cores on every request.
    view: Arc<NetView>,
}

/// An immutable copy of the network lists, republished into every shard when they change
/// (rare: admin CIDR bans, expiry, reload).
#[derive(Debug, Default)]
struct NetView {
    deny: NetSet,
    ignore: NetSet,
    /// Fast negative filter in front of `cidr_bans`.
    cidr_filter: NetSet,
    /// `(network, until_ms, reason)` of every CIDR ban.
    cidr_bans: Vec<(IpNet, u64, Arc<str>)>,
}

impl NetView {
    /// `(until_ms, reason)` of the active CIDR ban covering `client` that ends last.
    fn covering_ban(&self, client: IpAddr, now_ms: u64) -> Option<(u64, &Arc<str>)> {
        if !self.cidr_filter.contains(client) {
            return None;
        }
        self.cidr_bans
            .iter()
            .filter(|(net, until, _)| *until > now_ms && net.contains(&client))
            .max_by_key(|(_, until, _)| *until)
            .map(|(_, until, reason)| (*until, reason))
    }
}

/// Network-wide lists, consulted on every request.
#[derive(Debug, Default)]
struct Nets {
    deny: NetSet,
    ignore: NetSet,
    /// CIDR bans (wider than one client key).
    cidr_bans: HashMap<IpNet, BanEntry>,
    /// All CIDR ban networks, expired ones included until [`Reputation::expire`]; a fast
    /// negative filter in front of `cidr_bans`.
    cidr_filter: NetSet,
}

impl Nets {
    /// A fresh copy for the shards.
    fn view(&mut self) -> Arc<NetView> {
        self.cidr_filter = NetSet::new(self.cidr_bans.keys());
        Arc::new(NetView {
            deny: self.deny.clone(),
            ignore: self.ignore.clone(),
            cidr_filter: self.cidr_filter.clone(),
            cidr_bans: self
                .cidr_bans
                .iter()
                .map(|(net, b)| (*net, b.until_ms, b.reason.clone()))
                .collect(),
        })
    }

    /// The active CIDR ban covering `client` that ends last.
    fn covering_ban(&self, client: IpAddr, now_ms: u64) -> Option<(&IpNet, &BanEntry)> {
        if !self.cidr_filter.contains(client) {
            return None;
        }
        self.cidr_bans
            .iter()
            .filter(|(net, ban)| ban.active(now_ms) && net.contains(&client))
            .max_by_key(|(_, ban)| ban.until_ms)
    }
}

/// Counters behind [`Stats`].
#[derive(Debug, Default)]
struct Counters {
    offenses: [AtomicU64; OffenseKind::ALL.len()],
    /// Indexed by [`OffenseKind::index`]; the last slot is `manual`.
    bans: [AtomicU64; OffenseKind::ALL.len() + 1],
    evictions: AtomicU64,
    offenders_untracked: AtomicU64,
    bans_refused: AtomicU64,
    unbans: AtomicU64,
    expirations: AtomicU64,
}

/// Slot of manual bans in [`Counters::bans`].
const MANUAL_SLOT: usize = OffenseKind::ALL.len();

/// The reputation table: offenders, bans, escalation. `Send + Sync`; all methods take `&self`.
#[derive(Debug)]
pub struct Reputation {
    settings: RwLock<Arc<ReputationSettings>>,
    nets: RwLock<Nets>,
    shards: Box<[RwLock<Shard>]>,
    /// `log2(shards.len())`.
    shard_bits: u32,
    /// Random key so clients cannot choose to crowd one shard.
    shard_seed: u64,
    /// `settings.ipv6_prefix`, read without the settings lock on every request.
    ipv6_prefix: AtomicU8,
    active_bans: AtomicUsize,
    /// Offenders tracked over all shards.
    offender_count: AtomicUsize,
    next_seq: AtomicU64,
    counters: Counters,
}

impl Reputation {
    /// An empty table with `settings`.
    pub fn new(settings: ReputationSettings) -> Self {
        let wanted = (settings.max_offenders / OFFENDERS_PER_SHARD).clamp(1, MAX_SHARDS);
        // Round down to a power of two so the shard index is a shift.
        let shard_bits = usize::BITS - 1 - wanted.leading_zeros();
        let mut nets = Nets {
            deny: NetSet::new(&settings.deny),
            ignore: NetSet::new(&settings.ignoreip),
            ..Nets::default()
        };
        let view = nets.view();
        let shards = (0..1usize << shard_bits)
            .map(|_| {
                RwLock::new(Shard {
                    view: view.clone(),
                    ..Shard::default()
                })
            })
            .collect();
        let ipv6_prefix = settings.ipv6_prefix;
        Self {
            settings: RwLock::new(Arc::new(settings)),
            nets: RwLock::new(nets),
            shards,
            shard_bits,
            shard_seed: rand::thread_rng().gen(),
            ipv6_prefix: AtomicU8::new(ipv6_prefix),
            active_bans: AtomicUsize::new(0),
            offender_count: AtomicUsize::new(0),
            next_seq: AtomicU64::new(1),
            counters: Counters::default(),
        }
    }

    /// The current settings.
    pub fn settings(&self) -> Arc<ReputationSettings> {
        self.settings.read().clone()
    }

    /// Applies new settings (hot reload); bans and histories are kept. The number of shards
    /// is fixed at construction; a lower `max_offenders` is enforced as new clients arrive.
    pub fn reconfigure(&self, settings: ReputationSettings) {
        {
            let mut nets = self.nets.write();
            nets.deny = NetSet::new(&settings.deny);
            nets.ignore = NetSet::new(&settings.ignoreip);
            self.publish(&mut nets);
        }
        self.ipv6_prefix
            .store(settings.ipv6_prefix, Ordering::Relaxed);
        *self.settings.write() = Arc::new(settings);
    }

    /// The decision for a request from the client at `addr` (its real address, not only its
    /// key: see "Client keys" in the module docs): the first thing done on every request.
    pub fn check(&self, addr: IpAddr, now_ms: u64) -> Verdict {
        let (addr, client) = self.identify(addr);
        let shard = self.shard(client).read();
        let view = &shard.view;
        if view.deny.contains(addr) {
            return Verdict::Denied;
        }
        if view.ignore.contains(addr) {
            return Verdict::Allow;
        }
        if let Some((until_ms, reason)) = view.covering_ban(addr, now_ms) {
            return Verdict::Banned {
                until_ms,
                reason: reason.clone(),
            };
        }
        match shard.bans.get(&client) {
            Some(ban) if ban.active(now_ms) => Verdict::Banned {
                until_ms: ban.until_ms,
                reason: ban.reason.clone(),
            },
            _ => Verdict::Allow,
        }
    }

    /// Records an offense of `weight` by the client at `addr` (its real address, not only its
    /// key: see "Client keys" in the module docs), counted against its key. Returns
    /// [`Event::Banned`] when this offense brings the score to `maxretry`. `ignoreip`
    /// addresses and already banned clients are not counted; a zero weight counts in the
    /// metrics only.
    pub fn offense(
        &self,
        addr: IpAddr,
        kind: OffenseKind,
        weight: u32,
        now_ms: u64,
    ) -> Option<Event> {
        self.counters.offenses[kind.index()].fetch_add(1, Ordering::Relaxed);
        if weight == 0 {
            return None;
        }
        let settings = self.settings();
        let (addr, client) = self.identify(addr);
        let mut shard = self.shard(client).write();
        if shard.view.ignore.contains(addr) {
            return None;
        }
        if shard.bans.get(&client).is_some_and(|b| b.active(now_ms)) {
            return None;
        }
        if !shard.offenders.contains_key(&client) {
            if !self.make_room(&mut shard, now_ms, &settings) {
                self.counters
                    .offenders_untracked
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
            // An offender evicted while banned: its ended ban (not yet dropped by
            // housekeeping) still holds its history.
            let seed = shard
                .bans
                .get(&client)
                .map(|b| Offender::from_ban(b, now_ms))
                .filter(|o| !o.forgettable(now_ms, &settings));
            if let Some(seed) = seed {
                *shard.offenders.get_or_default(client) = seed;
            }
        }
        let offender = shard.offenders.get_or_default(client);
        offender.prune(now_ms, settings.findtime_ms);
        let capacity = (settings.maxretry as usize).clamp(1, MAX_WINDOW_ENTRIES);
        offender.push(
            OffenseRecord {
                kind,
                weight,
                at_ms: now_ms,
            },
            capacity,
        );
        offender.last_seen_ms = offender.last_seen_ms.max(now_ms);
        offender.total_offenses += 1;
        let score = offender.score();
        offender.last_score = score;
        if score < settings.maxretry {
            return None;
        }
        let ban_count = offender.ban_count.saturating_add(1);
        let until_ms = now_ms.saturating_add(ban_duration(&settings, ban_count));
        if !self.reserve_ban(&mut shard, now_ms) {
            self.counters.bans_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let seq = self.next_seq();
        let offender = shard.offenders.get_or_default(client);
        offender.ban_count = ban_count;
        offender.last_ban_end_ms = until_ms;
        offender.window.clear();
        offender.last_score = 0;
        offender.seq = seq;
        let reason: Arc<str> = Arc::from(format!(
            "score {score} reached maxretry {} within findtime {}s (last offense: {})",
            settings.maxretry,
            settings.findtime_ms / 1000,
            kind.as_str()
        ));
        let entry = BanEntry {
            seq,
            origin: BanOrigin::Automatic,
            reason,
            trigger: Some(kind),
            score,
            ban_count,
            created_ms: now_ms,
            until_ms,
        };
        let info = entry.info(self.client_net(client, &settings));
        if let Some(old) = shard.bans.insert(client, entry) {
            // An expired entry was still present: the reservation double counted it.
            drop(old);
            self.active_bans.fetch_sub(1, Ordering::Relaxed);
        }
        self.counters.bans[kind.index()].fetch_add(1, Ordering::Relaxed);
        Some(Event::Banned { seq, ban: info })
    }

    /// Bans `net` (one client or a CIDR) for `duration_ms` (`u64::MAX` = forever). Replaces an
    /// existing ban of the same network.
    pub fn ban(
        &self,
        net: IpNet,
        duration_ms: u64,
        reason: &str,
        now_ms: u64,
    ) -> Result<Event, BanError> {
        if duration_ms == 0 {
            return Err(BanError::ZeroDuration);
        }
        let settings = self.settings();
        let net = net.trunc();
        if self.nets.read().ignore.covers(&net) {
            return Err(BanError::Ignored(net));
        }
        let until_ms = now_ms.saturating_add(duration_ms);
        let mut entry = BanEntry {
            seq: 0,
            origin: BanOrigin::Manual,
            reason: Arc::from(reason),
            trigger: None,
            score: 0,
            ban_count: 0,
            created_ms: now_ms,
            until_ms,
        };
        let (seq, info) = if let Some(client) = self.client_key(&net, &settings) {
            let mut shard = self.shard(client).write();
            let replacing = shard.bans.get(&client).is_some_and(|b| b.active(now_ms));
            if !replacing && !self.reserve_ban(&mut shard, now_ms) {
                self.counters.bans_refused.fetch_add(1, Ordering::Relaxed);
                return Err(BanError::Capacity(self.active_bans.load(Ordering::Relaxed)));
            }
            entry.seq = self.next_seq();
            entry.ban_count = match shard.offenders.get(&client) {
                Some(o) => o.ban_count,
                // Evicted while banned: the ban being replaced holds the count.
                None => shard.bans.get(&client).map_or(0, |b| b.ban_count),
            };
            let seq = entry.seq;
            let info = entry.info(self.client_net(client, &settings));
            if shard.bans.insert(client, entry).is_some() && !replacing {
                // An expired entry was replaced: it was still counted.
                self.active_bans.fetch_sub(1, Ordering::Relaxed);
            }
            (seq, info)
        } else {
            let mut nets = self.nets.write();
            let existing = nets.cidr_bans.get(&net).map(|b| b.active(now_ms));
            if existing != Some(true) && !self.try_reserve_ban() {
                self.counters.bans_refused.fetch_add(1, Ordering::Relaxed);
                return Err(BanError::Capacity(self.active_bans.load(Ordering::Relaxed)));
            }
            entry.seq = self.next_seq();
            let seq = entry.seq;
            let info = entry.info(net);
            if nets.cidr_bans.insert(net, entry).is_some() && existing == Some(false) {
                self.active_bans.fetch_sub(1, Ordering::Relaxed);
            }
            self.publish(&mut nets);
            (seq, info)
        };
        self.counters.bans[MANUAL_SLOT].fetch_add(1, Ordering::Relaxed);
        Ok(Event::Banned { seq, ban: info })
    }

    /// Lifts the ban of `net` (one client or exactly that CIDR). Unbanning a client also
    /// clears its offense window so it is not banned again at once. `None` when `net` was not
    /// banned.
    pub fn unban(&self, net: IpNet, now_ms: u64) -> Option<Event> {
        let settings = self.settings();
        let net = net.trunc();
        let seq;
        if let Some(client) = self.client_key(&net, &settings) {
            let mut shard = self.shard(client).write();
            let removed = shard.bans.remove(&client)?;
            self.active_bans.fetch_sub(1, Ordering::Relaxed);
            seq = self.next_seq();
            if let Some(offender) = shard.offenders.get_mut(&client) {
                offender.window.clear();
                offender.last_score = 0;
                if removed.active(now_ms) && removed.origin == BanOrigin::Automatic {
                    offender.last_ban_end_ms = now_ms;
                }
                offender.seq = seq;
            } else {
                let mut history = Offender::from_ban(&removed, now_ms);
                history.last_ban_end_ms = history.last_ban_end_ms.min(now_ms);
                history.seq = seq;
                self.remember(&mut shard, client, history, now_ms, &settings);
            }
            if !removed.active(now_ms) {
                return Some(self.unbanned(seq, net, now_ms, UnbanCause::Expired));
            }
            self.counters.unbans.fetch_add(1, Ordering::Relaxed);
            Some(self.unbanned(seq, net, now_ms, UnbanCause::Admin))
        } else {
            let mut nets = self.nets.write();
            let removed = nets.cidr_bans.remove(&net)?;
            self.active_bans.fetch_sub(1, Ordering::Relaxed);
            seq = self.next_seq();
            self.publish(&mut nets);
            let cause = if removed.active(now_ms) {
                self.counters.unbans.fetch_add(1, Ordering::Relaxed);
                UnbanCause::Admin
            } else {
                UnbanCause::Expired
            };
            Some(self.unbanned(seq, net, now_ms, cause))
        }
    }

    /// The client key an offense by `addr` would be counted against, or `None` when it would
    /// not be counted (`ignoreip`, `deny`, or the key is banned already). A cluster counts
    /// offenses elsewhere too and forwards only those this table counts.
    pub fn counted_key(&self, addr: IpAddr, now_ms: u64) -> Option<IpAddr> {
        let (addr, client) = self.identify(addr);
        let shard = self.shard(client).read();
        let view = &shard.view;
        if view.deny.contains(addr) || view.ignore.contains(addr) {
            return None;
        }
        if view.covering_ban(addr, now_ms).is_some()
            || shard.bans.get(&client).is_some_and(|b| b.active(now_ms))
        {
            return None;
        }
        Some(client)
    }

    /// Applies a ban made elsewhere (another gateway of a cluster) with its own expiry, reason
    /// and escalation count. Returns the [`Event::Banned`] to journal, or `None` when an
    /// active ban of the same network already lasts at least as long (nothing changed; this
    /// also ends echo loops). The offender's ban count rises to the ban's, so the next ban
    /// made here escalates from the cluster-wide history. Not counted in
    /// [`Stats::bans_by_reason`]: the gateway that made the ban counted it.
    pub fn apply_remote(&self, ban: &BanInfo, now_ms: u64) -> Result<Option<Event>, BanError> {
        if ban.until_ms <= now_ms {
            return Ok(None);
        }
        let settings = self.settings();
        let net = ban.net.trunc();
        if self.nets.read().ignore.covers(&net) {
            return Err(BanError::Ignored(net));
        }
        let newer = |existing: Option<&BanEntry>| {
            existing.is_none_or(|b| !b.active(now_ms) || b.until_ms < ban.until_ms)
        };
        if let Some(client) = self.client_key(&net, &settings) {
            let mut shard = self.shard(client).write();
            if !newer(shard.bans.get(&client)) {
                return Ok(None);
            }
            let replacing = shard.bans.get(&client).is_some_and(|b| b.active(now_ms));
            if !replacing && !self.reserve_ban(&mut shard, now_ms) {
                self.counters.bans_refused.fetch_add(1, Ordering::Relaxed);
                return Err(BanError::Capacity(self.active_bans.load(Ordering::Relaxed)));
            }
            let seq = self.next_seq();
            let info = BanInfo {
                net: self.client_net(client, &settings),
                ..ban.clone()
            };
            if let Some(offender) = shard.offenders.get_mut(&client) {
                if ban.origin == BanOrigin::Automatic {
                    offender.ban_count = offender.ban_count.max(ban.ban_count);
                    offender.last_ban_end_ms = offender.last_ban_end_ms.max(ban.until_ms);
                }
                offender.window.clear();
                offender.last_score = 0;
                offender.seq = seq;
            }
            if shard
                .bans
                .insert(client, BanEntry::from_info(seq, &info))
                .is_some()
                && !replacing
            {
                // An expired entry was replaced: it was still counted.
                self.active_bans.fetch_sub(1, Ordering::Relaxed);
            }
            Ok(Some(Event::Banned { seq, ban: info }))
        } else {
            let mut nets = self.nets.write();
            if !newer(nets.cidr_bans.get(&net)) {
                return Ok(None);
            }
            let existing = nets.cidr_bans.get(&net).map(|b| b.active(now_ms));
            if existing != Some(true) && !self.try_reserve_ban() {
                self.counters.bans_refused.fetch_add(1, Ordering::Relaxed);
                return Err(BanError::Capacity(self.active_bans.load(Ordering::Relaxed)));
            }
            let seq = self.next_seq();
            let info = BanInfo { net, ..ban.clone() };
            if nets
                .cidr_bans
                .insert(net, BanEntry::from_info(seq, &info))
                .is_some()
                && existing == Some(false)
            {
                self.active_bans.fetch_sub(1, Ordering::Relaxed);
            }
            self.publish(&mut nets);
            Ok(Some(Event::Banned { seq, ban: info }))
        }
    }

    /// Every active ban, oldest first.
    pub fn bans(&self, now_ms: u64) -> Vec<BanInfo> {
        let settings = self.settings();
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            out.extend(
                shard
                    .bans
                    .iter()
                    .filter(|(_, b)| b.active(now_ms))
                    .map(|(ip, b)| b.info(self.client_net(*ip, &settings))),
            );
        }
        let nets = self.nets.read();
        out.extend(
            nets.cidr_bans
                .iter()
                .filter(|(_, b)| b.active(now_ms))
                .map(|(net, b)| b.info(*net)),
        );
        out.sort_by_key(|b| (b.created_ms, b.net));
        out
    }

    /// The record of the client `addr` belongs to (an address or a key): score, recent
    /// offenses, ban count, current ban. `None` when the client is neither tracked nor banned.
    pub fn history(&self, addr: IpAddr, now_ms: u64) -> Option<OffenderInfo> {
        let settings = self.settings();
        let (_, client) = self.identify(addr);
        let cidr_ban = {
            let nets = self.nets.read();
            nets.covering_ban(client, now_ms)
                .map(|(net, ban)| ban.info(*net))
        };
        let shard = self.shard(client).read();
        let own_ban = shard
            .bans
            .get(&client)
            .filter(|b| b.active(now_ms))
            .map(|b| b.info(self.client_net(client, &settings)));
        let current_ban = match (own_ban, cidr_ban) {
            (Some(a), Some(b)) => Some(if a.until_ms >= b.until_ms { a } else { b }),
            (a, b) => a.or(b),
        };
        let offender = shard.offenders.get(&client);
        if offender.is_none() && current_ban.is_none() {
            return None;
        }
        let offender = match offender {
            Some(o) => o.clone(),
            // Evicted while banned: the ban entry holds the history.
            None => shard
                .bans
                .get(&client)
                .map(|b| Offender::from_ban(b, now_ms))
                .unwrap_or_default(),
        };
        let recent: Vec<OffenseRecord> = offender
            .window
            .iter()
            .filter(|o| o.at_ms.saturating_add(settings.findtime_ms) > now_ms)
            .copied()
            .collect();
        Some(OffenderInfo {
            client,
            score: offender.score_at(now_ms, settings.findtime_ms),
            maxretry: settings.maxretry,
            recent,
            total_offenses: offender.total_offenses,
            ban_count: offender.ban_count,
            last_ban_end_ms: offender.last_ban_end_ms,
            current_ban,
        })
    }

    /// Counters for metrics.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let offenders = self.offender_count.load(Ordering::Relaxed) as u64;
        let mut bans_by_reason: Vec<(&'static str, u64)> = OffenseKind::ALL
            .iter()
            .map(|k| (k.as_str(), c.bans[k.index()].load(Ordering::Relaxed)))
            .collect();
        bans_by_reason.push(("manual", c.bans[MANUAL_SLOT].load(Ordering::Relaxed)));
        Stats {
            offenses_by_kind: OffenseKind::ALL
                .iter()
                .map(|k| (k.as_str(), c.offenses[k.index()].load(Ordering::Relaxed)))
                .collect(),
            bans_by_reason,
            active_bans: self.active_bans.load(Ordering::Relaxed) as u64,
            offenders,
            evictions: c.evictions.load(Ordering::Relaxed),
            offenders_untracked: c.offenders_untracked.load(Ordering::Relaxed),
            bans_refused: c.bans_refused.load(Ordering::Relaxed),
            unbans: c.unbans.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
        }
    }

    /// Housekeeping, to call every few seconds: drops expired bans (returning an
    /// [`Event::Unbanned`] with [`UnbanCause::Expired`] for each, for logs and the journal) and
    /// forgets offenders with nothing left to remember.
    pub fn expire(&self, now_ms: u64) -> Vec<Event> {
        let settings = self.settings();
        let mut events = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let expired: Vec<IpAddr> = shard
                .bans
                .iter()
                .filter(|(_, b)| !b.active(now_ms))
                .map(|(ip, _)| *ip)
                .collect();
            for client in expired {
                let Some(ban) = shard.bans.remove(&client) else {
                    continue;
                };
                self.active_bans.fetch_sub(1, Ordering::Relaxed);
                self.counters.expirations.fetch_add(1, Ordering::Relaxed);
                if !shard.offenders.contains_key(&client) {
                    let history = Offender::from_ban(&ban, now_ms);
                    self.remember(&mut shard, client, history, now_ms, &settings);
                }
                let seq = self.next_seq();
                let net = self.client_net(client, &settings);
                events.push(self.unbanned(seq, net, now_ms, UnbanCause::Expired));
            }
            let Shard {
                offenders, bans, ..
            } = &mut *shard;
            let before = offenders.len();
            offenders.retain(|ip, o| bans.contains_key(ip) || !o.forgettable(now_ms, &settings));
            self.offender_count
                .fetch_sub(before - offenders.len(), Ordering::Relaxed);
        }
        let mut nets = self.nets.write();
        let expired: Vec<IpNet> = nets
            .cidr_bans
            .iter()
            .filter(|(_, b)| !b.active(now_ms))
            .map(|(net, _)| *net)
            .collect();
        if !expired.is_empty() {
            for net in expired {
                nets.cidr_bans.remove(&net);
                self.active_bans.fetch_sub(1, Ordering::Relaxed);
                self.counters.expirations.fetch_add(1, Ordering::Relaxed);
                let seq = self.next_seq();
                events.push(self.unbanned(seq, net, now_ms, UnbanCause::Expired));
            }
            self.publish(&mut nets);
        }
        events
    }

    /// Active bans and offender histories, for a snapshot.
    pub fn export(&self, now_ms: u64) -> PersistentState {
        let settings = self.settings();
        let mut state = PersistentState::default();
        for shard in self.shards.iter() {
            let shard = shard.read();
            state
                .bans
                .extend(
                    shard
                        .bans
                        .iter()
                        .filter(|(_, b)| b.active(now_ms))
                        .map(|(ip, b)| StoredBan {
                            seq: b.seq,
                            ban: b.info(self.client_net(*ip, &settings)),
                        }),
                );
            state.histories.extend(
                shard
                    .offenders
                    .iter()
                    .filter(|(_, o)| {
                        o.ban_count > 0
                            && o.last_ban_end_ms.saturating_add(settings.history_ms) > now_ms
                    })
                    .map(|(ip, o)| StoredHistory {
                        seq: o.seq,
                        client: ip,
                        ban_count: o.ban_count,
                        last_ban_end_ms: o.last_ban_end_ms,
                    }),
            );
        }
        let nets = self.nets.read();
        state
            .bans
            .extend(
                nets.cidr_bans
                    .iter()
                    .filter(|(_, b)| b.active(now_ms))
                    .map(|(net, b)| StoredBan {
                        seq: b.seq,
                        ban: b.info(*net),
                    }),
            );
        state
    }

    /// Loads persisted bans and histories (typically right after [`Reputation::new`]).
    /// Expired bans and histories older than `history` are dropped; entries already present
    /// with a newer sequence number are kept.
    pub fn restore(&self, state: PersistentState, now_ms: u64) -> RestoreReport {
        let settings = self.settings();
        let mut report = RestoreReport::default();
        let mut max_seq = 0;
        for h in state.histories {
            max_seq = max_seq.max(h.seq);
            if h.ban_count == 0 || h.last_ban_end_ms.saturating_add(settings.history_ms) <= now_ms {
                report.histories_dropped += 1;
                continue;
            }
            let mut shard = self.shard(h.client).write();
            if !shard.offenders.contains_key(&h.client)
                && !self.make_room(&mut shard, now_ms, &settings)
            {
                report.histories_dropped += 1;
                continue;
            }
            let offender = shard.offenders.get_or_default(h.client);
            if offender.seq <= h.seq {
                offender.seq = h.seq;
                offender.ban_count = h.ban_count;
                offender.last_ban_end_ms = h.last_ban_end_ms;
                offender.last_seen_ms = offender.last_seen_ms.max(h.last_ban_end_ms.min(now_ms));
            }
            report.histories_restored += 1;
        }
        for stored in state.bans {
            max_seq = max_seq.max(stored.seq);
            let ban = &stored.ban;
            if ban.until_ms <= now_ms {
                report.bans_expired += 1;
                continue;
            }
            let net = ban.net.trunc();
            if self.nets.read().ignore.covers(&net) {
                report.bans_refused += 1;
                continue;
            }
            let entry = BanEntry::from_info(stored.seq, ban);
            let restored = if let Some(client) = self.client_key(&net, &settings) {
                let mut shard = self.shard(client).write();
                match shard.bans.get(&client).map(|b| b.seq) {
                    Some(existing) if existing > stored.seq => true,
                    Some(_) => {
                        shard.bans.insert(client, entry);
                        true
                    }
                    None if self.reserve_ban(&mut shard, now_ms) => {
                        shard.bans.insert(client, entry);
                        true
                    }
                    None => false,
                }
            } else {
                let mut nets = self.nets.write();
                let ok = match nets.cidr_bans.get(&net).map(|b| b.seq) {
                    Some(existing) if existing > stored.seq => true,
                    Some(_) => {
                        nets.cidr_bans.insert(net, entry);
                        true
                    }
                    None if self.try_reserve_ban() => {
                        nets.cidr_bans.insert(net, entry);
                        true
                    }
                    None => false,
                };
                self.publish(&mut nets);
                ok
            };
            if restored {
                report.bans_restored += 1;
            } else {
                report.bans_refused += 1;
            }
        }
        self.next_seq.fetch_max(max_seq + 1, Ordering::Relaxed);
        report
    }

    // ---- internals ----

    /// `(address, key)` of a client address: IPv4-mapped IPv6 folded to IPv4, and the key
    /// aggregated to `ipv6_prefix` bits.
    fn identify(&self, addr: IpAddr) -> (IpAddr, IpAddr) {
        let addr = crate::client::fold_mapped(addr);
        let key = crate::client::aggregate(addr, self.ipv6_prefix.load(Ordering::Relaxed));
        (addr, key)
    }

    fn shard(&self, client: IpAddr) -> &RwLock<Shard> {
        if self.shard_bits == 0 {
            return &self.shards[0];
        }
        let folded = match client {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                (bits >> 64) as u64 ^ bits as u64
            }
        };
        // Fibonacci hashing of the seeded key: cheap and spreads nearby addresses.
        let mixed = (folded ^ self.shard_seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.shards[(mixed >> (64 - self.shard_bits)) as usize]
    }

    /// Copies the network lists into every shard. Called with `nets` locked for writing, so
    /// publications cannot interleave; the lock order is always `nets`, then a shard.
    fn publish(&self, nets: &mut Nets) {
        let view = nets.view();
        for shard in self.shards.iter() {
            shard.write().view = view.clone();
        }
    }

    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    fn unbanned(&self, seq: u64, net: IpNet, at_ms: u64, cause: UnbanCause) -> Event {
        Event::Unbanned {
            seq,
            net,
            at_ms,
            cause,
        }
    }

    /// The client key `net` stands for, when it is no wider than one client.
    fn client_key(&self, net: &IpNet, settings: &ReputationSettings) -> Option<IpAddr> {
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 => Some(IpAddr::V4(n.addr())),
            IpNet::V6(n) if n.prefix_len() >= settings.ipv6_prefix.min(128) => {
                let key = IpNet::new(IpAddr::V6(n.addr()), settings.ipv6_prefix.min(128))
                    .map(|k| k.network())
                    .unwrap_or(IpAddr::V6(n.addr()));
                Some(key)
            }
            _ => None,
        }
    }

    /// The network a client key stands for.
    fn client_net(&self, client: IpAddr, settings: &ReputationSettings) -> IpNet {
        let bits = match client {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => settings.ipv6_prefix.min(128),
        };
        IpNet::new(client, bits).map_or(IpNet::from(client), |n| n.trunc())
    }

    /// Takes one slot of `max_bans`; false when full.
    fn try_reserve_ban(&self) -> bool {
        let max = self.settings.read().max_bans;
        self.active_bans
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Like [`Self::try_reserve_ban`], first purging expired bans of `shard` when full.
    fn reserve_ban(&self, shard: &mut Shard, now_ms: u64) -> bool {
        if self.try_reserve_ban() {
            return true;
        }
        let before = shard.bans.len();
        shard.bans.retain(|_, b| b.active(now_ms));
        let purged = before - shard.bans.len();
        if purged > 0 {
            self.active_bans.fetch_sub(purged, Ordering::Relaxed);
            self.counters
                .expirations
                .fetch_add(purged as u64, Ordering::Relaxed);
        }
        self.try_reserve_ban()
    }

    /// Tracks `history` for `client` (not tracked yet) when it is still worth remembering:
    /// the history of an evicted banned offender whose ban just ended.
    fn remember(
        &self,
        shard: &mut Shard,
        client: IpAddr,
        history: Offender,
        now_ms: u64,
        settings: &ReputationSettings,
    ) {
        if history.ban_count == 0 || history.forgettable(now_ms, settings) {
            return;
        }
        if self.make_room(shard, now_ms, settings) {
            *shard.offenders.get_or_default(client) = history;
        } else {
            self.counters
                .offenders_untracked
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Makes room for one more offender in `shard` and counts it (the caller inserts it);
    /// false only when the shard is empty while the other shards fill the global bound.
    ///
    /// The bound is global (`max_offenders` over all shards), so uneven shards still fill the
    /// whole table; one shard may hold at most twice its even share so eviction scans stay
    /// short. The slot is reserved with a compare-and-swap so concurrent inserts in other
    /// shards cannot push the count past `max_offenders`.
    fn make_room(&self, shard: &mut Shard, now_ms: u64, settings: &ReputationSettings) -> bool {
        let max = settings.max_offenders.max(1);
        let shard_max = (max / self.shards.len()).max(1) * 2;
        loop {
            if shard.offenders.len() < shard_max
                && self
                    .offender_count
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < max).then_some(n + 1)
                    })
                    .is_ok()
            {
                return true;
            }
            // Each round removes at least one entry, so this ends.
            if !self.evict(shard, now_ms, settings) {
                return false;
            }
        }
    }

    /// Frees offender slots of `shard`: forgettable entries if any, else a batch of an eighth
    /// of the shard, banned offenders first, then least harmful. False when the shard is empty.
    fn evict(&self, shard: &mut Shard, now_ms: u64, settings: &ReputationSettings) -> bool {
        let Shard {
            offenders, bans, ..
        } = shard;
        let before = offenders.len();
        offenders.retain(|_, o| !o.forgettable(now_ms, settings));
        let forgotten = before - offenders.len();
        if forgotten > 0 {
            self.offender_count.fetch_sub(forgotten, Ordering::Relaxed);
            return true;
        }
        if offenders.len() == 0 {
            return false;
        }
        // A banned offender's record is redundant with its ban entry (see the module docs):
        // it is the cheapest to let go, so it sorts first.
        let banned = |ip: &IpAddr| bans.get(ip).is_some_and(|b| b.active(now_ms));
        let mut candidates: Vec<((bool, u64, u64), IpAddr)> = offenders
            .iter()
            .map(|(ip, o)| {
                let (harm, seen) = o.harm(now_ms, settings);
                ((!banned(&ip), harm, seen), ip)
            })
            .collect();
        // Evict a batch so a flood of new clients pays for one scan per `len / 8` inserts
        // instead of one per insert.
        let batch = (offenders.len() / 8).clamp(1, candidates.len());
        if batch < candidates.len() {
            candidates.select_nth_unstable(batch - 1);
        }
        for (_, ip) in &candidates[..batch] {
            offenders.remove(ip);
        }
        self.offender_count.fetch_sub(batch, Ordering::Relaxed);
        self.counters
            .evictions
            .fetch_add(batch as u64, Ordering::Relaxed);
        true
    }
}

/// How long the `ban_count`-th automatic ban of an offender lasts (see the module docs).
pub fn ban_duration(settings: &ReputationSettings, ban_count: u32) -> u64 {
    let Some(inc) = &settings.increment else {
        return settings.bantime_ms;
    };
    let previous = ban_count.saturating_sub(1);
    let multiplier = if inc.multipliers.is_empty() {
        inc.factor
            .max(1.0)
            .powi(previous.min(MAX_ESCALATION_EXPONENT) as i32)
    } else {
        let last = inc.multipliers.len() - 1;
        inc.multipliers[(previous as usize).min(last)].max(0.0)
    };
    // Float to integer casts saturate, so huge products become u64::MAX before the cap.
    let mut duration = (settings.bantime_ms as f64 * multiplier) as u64;
    if inc.maxtime_ms > 0 {
        duration = duration.min(inc.maxtime_ms);
    }
    if inc.rndtime_ms > 0 {
        duration = duration.saturating_add(rand::thread_rng().gen_range(0..=inc.rndtime_ms));
    }
    duration.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 M offenders must fit the 200 MB budget: an entry is 16 key bytes plus this record in
    /// the slab, and a 4-byte slot number in the index (docs/performance.md).
    #[test]
    fn an_offender_record_stays_within_64_bytes() {
        assert!(
            std::mem::size_of::<Offender>() <= 64,
            "{}",
            std::mem::size_of::<Offender>()
        );
    }

    #[test]
    fn escalation_follows_factor_powers_and_caps() {
        let s = ReputationSettings {
            bantime_ms: 1000,
            increment: Some(Increment {
                factor: 2.0,
                multipliers: vec![],
                maxtime_ms: 5000,
                rndtime_ms: 0,
            }),
            ..ReputationSettings::default()
        };
        let series: Vec<u64> = (1..=5).map(|n| ban_duration(&s, n)).collect();
        assert_eq!(series, vec![1000, 2000, 4000, 5000, 5000]);
        // Absurd ban counts neither overflow nor exceed the cap.
        assert_eq!(ban_duration(&s, u32::MAX), 5000);
    }

    #[test]
    fn no_increment_means_constant_bantime() {
        let s = ReputationSettings {
            bantime_ms: 700,
            increment: None,
            ..ReputationSettings::default()
        };
        assert_eq!(ban_duration(&s, 1), 700);
        assert_eq!(ban_duration(&s, 9), 700);
    }

    #[test]
    fn window_merges_instead_of_forgetting_when_full() {
        let mut o = Offender::default();
        for t in 0..10 {
            o.push(
                OffenseRecord {
                    kind: OffenseKind::Probe,
                    weight: 1,
                    at_ms: t,
                },
                4,
            );
        }
        assert_eq!(o.window.len(), 4);
        assert_eq!(o.score(), 10);
    }
}
