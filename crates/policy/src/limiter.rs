//! Per-client request rate limiting with nginx `limit_req` semantics.
//!
//! This mirrors `ngx_http_limit_req_module` (nginx 1.22) decision for decision, so a
//! configuration moved from nginx behaves the same:
//!
//! * A zone has a rate, kept in milli-requests per second like nginx (`"N r/s"` → `N*1000`,
//!   `"N r/m"` → `N*1000/60`, truncated, so `1r/m` is really 16/1000 r/s).
//! * Each client has an `excess` (milli-requests) and the millisecond of its last accepted
//!   request. A request computes `excess = max(0, excess - rate*ms/1000 + 1000)`; it is rejected
//!   when `excess > burst*1000`, otherwise `excess` and `last` are committed. A client seen for
//!   the first time starts at excess 0 and passes.
//! * Accepted requests whose excess is above the `delay` threshold are delayed by
//!   `(excess - delay*1000) * 1000 / rate` ms; `nodelay` means an infinite threshold, and no
//!   `nodelay`/`delay` means a threshold of 0 (every excess request is delayed).
//! * Several zones on one request ([`check_all`]): zones are looked up in order and the first
//!   that rejects decides; only the last zone commits during lookup, earlier zones commit
//!   afterwards and only if nobody rejected. The delay is the largest of the zones' delays.
//! * Clock steps backwards: nginx treats `now - last < -60 s` as 1 ms elapsed (and resyncs
//!   `last` on the next accepted request) and a smaller step back as 0 ms elapsed.
//!
//! Memory is bounded: a zone tracks at most `max_clients` clients and, when full, evicts a
//! client not seen recently (nginx evicts from the tail of its LRU queue when its shared memory
//! is full; here a CLOCK sweep approximates that LRU order). Entries whose state is
//! indistinguishable from "never seen" are dropped eagerly.
//! A tracked client costs about 38 bytes (a 32-byte entry plus 1.5 four-byte hash buckets),
//! against nginx's 128 bytes on 64-bit.
//!
//! Layout: a zone is split into power-of-two shards, each behind its own mutex, chosen by the
//! top bits of a keyed hash of the client address. A shard is a slab of fixed-size entries
//! (16-bit slot indices, so a shard holds at most 65534 clients) and an open-addressing index of
//! 32-bit buckets (16-bit slot + 16-bit hash tag, so probing rarely touches an entry that does
//! not match). Recency is tracked CLOCK-style (second chance): a hit only sets a "referenced"
//! flag in the entry it already reads, instead of relinking an LRU list (which touched two more
//! random entries per decision); eviction sweeps a hand over the slab, clearing referenced flags
//! and evicting the first unreferenced client, so a client seen since the hand last passed it
//! always outlives one that was not.

use parking_lot::Mutex;
use std::net::IpAddr;
use std::str::FromStr;

/// nginx keeps rates and excess in thousandths of a request.
const MILLI: u64 = 1000;

/// A backwards clock step larger than this is treated by nginx as 1 ms elapsed, not 0.
const CLOCK_BACKWARD_RESYNC_MS: u64 = 60_000;

/// The largest `burst` a zone accepts; excess is stored in 32 bits of milli-requests.
pub const MAX_BURST: u64 = 4_000_000;

/// Slots are 16-bit with `u16::MAX` reserved as the list terminator.
const MAX_SHARD_CAPACITY: usize = 65_534;

/// Upper bound on shards per zone.
const MAX_SHARDS: usize = 1024;

/// The largest `max_clients` a zone accepts (about 67 million).
pub const MAX_CLIENTS: usize = MAX_SHARD_CAPACITY * MAX_SHARDS;

/// Shards are sized to hold about this many clients: small enough to keep lock hold times and
/// per-shard growth short, large enough that zones up to this size share one CLOCK sweep.
const TARGET_SHARD_CAPACITY: usize = 4096;

/// Terminator of the free list.
const NIL: u16 = u16::MAX;

/// `Entry::state` of a free slot.
const FREE: u16 = 0;
/// `Entry::state` of a tracked client not seen since the CLOCK hand last passed it.
const LIVE: u16 = 1;
/// `Entry::state` of a tracked client seen since the CLOCK hand last passed it.
const REFERENCED: u16 = 2;

/// The smallest slab a shard allocates once it holds any client.
const MIN_SLAB: usize = 16;

/// A request rate, stored like nginx in milli-requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    milli_per_sec: u64,
}

impl Rate {
    /// `n` requests per second (nginx `Nr/s`). A zero rate is raised to the smallest rate,
    /// 1/1000 r/s, because a rate is a divisor.
    pub const fn per_second(n: u64) -> Rate {
        Rate::from_milli_per_sec(n.saturating_mul(MILLI))
    }

    /// `n` requests per minute (nginx `Nr/m`), truncated to whole milli-requests per second as
    /// nginx does. A zero rate is raised to 1/1000 r/s.
    pub const fn per_minute(n: u64) -> Rate {
        Rate::from_milli_per_sec(n.saturating_mul(MILLI) / 60)
    }

    /// A rate of `milli` thousandths of a request per second (at least 1).
    pub const fn from_milli_per_sec(milli: u64) -> Rate {
        Rate {
            milli_per_sec: if milli == 0 { 1 } else { milli },
        }
    }

    /// Parses an nginx rate: `"1r/s"`, `"60r/m"`, `"10 r/s"`. As in nginx a bare number means
    /// requests per second, the count must be a positive integer, and `r/m` truncates.
    pub fn parse(text: &str) -> Result<Rate, RateParseError> {
        let trimmed = text.trim();
        let (count, per_minute) = if let Some(count) = trimmed.strip_suffix("r/s") {
            (count, false)
        } else if let Some(count) = trimmed.strip_suffix("r/m") {
            (count, true)
        } else {
            (trimmed, false)
        };
        let count = count.trim();
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RateParseError::Malformed(text.to_owned()));
        }
        let n: u64 = count
            .parse()
            .map_err(|_| RateParseError::TooLarge(text.to_owned()))?;
        if n == 0 {
            return Err(RateParseError::Zero(text.to_owned()));
        }
        // Keep rate * elapsed-ms products comfortably inside u64 for any realistic gap.
        let milli = n
            .checked_mul(MILLI)
            .filter(|&m| m <= u64::from(u32::MAX))
            .ok_or_else(|| RateParseError::TooLarge(text.to_owned()))?;
        Ok(Rate::from_milli_per_sec(if per_minute {
            milli / 60
        } else {
            milli
        }))
    }

    /// The rate in milli-requests per second (nginx's internal unit).
    pub fn milli_per_sec(&self) -> u64 {
        self.milli_per_sec
    }
}

impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(text: &str) -> Result<Rate, RateParseError> {
        Rate::parse(text)
    }
}

/// Why a rate string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateParseError {
    /// Not of the form `N r/s` or `N r/m`.
    #[error("invalid rate {0:?}: expected \"N r/s\" or \"N r/m\" with a whole number N")]
    Malformed(String),
    /// The count is zero.
    #[error("invalid rate {0:?}: must be at least 1 request")]
    Zero(String),
    /// The count does not fit.
    #[error("invalid rate {0:?}: too large")]
    TooLarge(String),
}

/// When accepted requests above the rate are delayed (nginx `nodelay` / `delay=N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delay {
    /// nginx `nodelay`: every request within the burst passes at once.
    NoDelay,
    /// nginx `delay=N`: the first `N` excess requests pass at once and the rest of the burst
    /// is delayed. `After(0)` is nginx's default when neither `nodelay` nor `delay` is given.
    After(u64),
}

impl Default for Delay {
    /// nginx's default: every excess request is delayed.
    fn default() -> Delay {
        Delay::After(0)
    }
}

impl Delay {
    /// The excess (milli-requests) up to which requests are not delayed.
    fn threshold_milli(self) -> u64 {
        match self {
            Delay::NoDelay => u64::MAX,
            Delay::After(n) => n.saturating_mul(MILLI),
        }
    }
}

/// One rate-limit zone's configuration (nginx `limit_req_zone` + `limit_req` in one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// The zone's name, for logs and metrics.
    pub name: String,
    /// The sustained rate.
    pub rate: Rate,
    /// How many requests above the rate are tolerated (nginx `burst`).
    pub burst: u64,
    /// Which accepted requests are delayed.
    pub delay: Delay,
    /// How many clients the zone tracks at most; the least recently seen are evicted.
    pub max_clients: usize,
}

impl ZoneSettings {
    /// Checks the limits a [`Zone`] can honour; [`Zone::new`] clamps values that fail this.
    pub fn validate(&self) -> Result<(), ZoneSettingsError> {
        if self.burst > MAX_BURST {
            return Err(ZoneSettingsError::BurstTooLarge {
                zone: self.name.clone(),
                burst: self.burst,
            });
        }
        if self.max_clients == 0 || self.max_clients > MAX_CLIENTS {
            return Err(ZoneSettingsError::MaxClientsOutOfRange {
                zone: self.name.clone(),
                max_clients: self.max_clients,
            });
        }
        Ok(())
    }
}

/// Why zone settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneSettingsError {
    /// `burst` above [`MAX_BURST`].
    #[error("rate_limit.{zone}: burst {burst} is above the maximum {MAX_BURST}")]
    BurstTooLarge {
        /// The zone's name.
        zone: String,
        /// The refused burst.
        burst: u64,
    },
    /// `max_clients` zero or above [`MAX_CLIENTS`].
    #[error("rate_limit.{zone}: max_clients {max_clients} must be between 1 and {MAX_CLIENTS}")]
    MaxClientsOutOfRange {
        /// The zone's name.
        zone: String,
        /// The refused value.
        max_clients: usize,
    },
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Forward it now.
    Pass,
    /// Forward it after waiting `ms` milliseconds (nginx delays it in the same way).
    Delay {
        /// How long to hold the request.
        ms: u64,
    },
    /// Refuse it (nginx answers `limit_req_status`).
    Reject {
        /// Index, in the slice given to [`check_all`], of the zone that refused it.
        zone: usize,
        /// How long until a request from this client would be accepted by that zone (passed or
        /// delayed), assuming it sends nothing meanwhile. Always at least 1.
        retry_after_ms: u64,
    },
}

impl Decision {
    /// True for [`Decision::Reject`].
    pub fn is_reject(&self) -> bool {
        matches!(self, Decision::Reject { .. })
    }

    /// For a rejection, `retry_after_ms` rounded up to whole seconds, at least 1 (a
    /// `Retry-After` header value); `None` otherwise.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match *self {
            Decision::Reject { retry_after_ms, .. } => Some(retry_after_ms.div_ceil(MILLI).max(1)),
            _ => None,
        }
    }
}

/// nginx's elapsed time since `last`, with its rules for a clock that went backwards.
fn elapsed_ms(now: u64, last: u64) -> u64 {
    match now.checked_sub(last) {
        Some(ms) => ms,
        None if last - now > CLOCK_BACKWARD_RESYNC_MS => 1,
        None => 0,
    }
}

/// nginx's `excess = max(0, excess - rate * ms / 1000 + 1000)`.
fn excess_after(stored: u64, rate: u64, ms: u64) -> u64 {
    let drained = rate.checked_mul(ms).map_or(u64::MAX, |p| p / MILLI);
    (stored + MILLI).saturating_sub(drained)
}

/// nginx's delay for an accepted request with `excess`, in ms (0 = not delayed).
fn delay_for(excess: u64, threshold_milli: u64, rate: u64) -> u64 {
    if excess <= threshold_milli {
        0
    } else {
        (excess - threshold_milli).saturating_mul(MILLI) / rate
    }
}

/// Milliseconds from `now` until a request from a client with this stored state would not be
/// rejected: the first elapsed time `t` with `rate * t / 1000 >= stored + 1000 - burst`.
fn retry_after(stored: u64, last: u64, now: u64, rate: u64, burst_milli: u64) -> u64 {
    let needed_drain = (stored + MILLI).saturating_sub(burst_milli);
    let needed_elapsed = needed_drain.saturating_mul(MILLI).div_ceil(rate);
    // Also right when the clock went back: the elapsed time only starts counting at `last`.
    last.saturating_add(needed_elapsed)
        .saturating_sub(now)
        .max(1)
}

/// The client address as one 128-bit key (see [`crate::client::mapped_bits`]).
fn client_key(client: IpAddr) -> [u64; 2] {
    let bits = crate::client::mapped_bits(client);
    [bits as u64, (bits >> 64) as u64]
}

/// The high and low halves of a 64x64-bit product folded together; a cheap strong mixer.
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Per-zone random seeds, so clients cannot pick addresses that collide in the index.
#[derive(Debug, Clone, Copy)]
struct KeyHasher {
    seeds: [u64; 3],
}

impl KeyHasher {
    fn random() -> KeyHasher {
        KeyHasher {
            seeds: rand::random(),
        }
    }

    fn hash(&self, key: [u64; 2]) -> u64 {
        let mixed = folded_multiply(key[0] ^ self.seeds[0], key[1] ^ self.seeds[1]);
        folded_multiply(mixed ^ self.seeds[2], 0x9E37_79B9_7F4A_7C15)
    }
}

/// The bucket a hash starts probing at, by multiply-shift on the low 32 bits so the bucket
/// count need not be a power of two.
fn home_bucket(hash: u64, buckets: usize) -> usize {
    ((u64::from(hash as u32) * buckets as u64) >> 32) as usize
}

/// 16 hash bits kept in the bucket so probes rarely fetch a non-matching entry.
fn hash_tag(hash: u64) -> u32 {
    ((hash >> 32) as u32) & 0xFFFF
}

/// The parts of the settings the hot path needs, pre-scaled.
#[derive(Debug, Clone, Copy)]
struct Limits {
    rate: u64,
    burst_milli: u64,
    delay_threshold_milli: u64,
}

/// One tracked client: 32 bytes, aligned so no entry straddles two cache lines (the
/// allocator only guarantees 16-byte alignment, which would split every other entry).
#[derive(Debug, Clone, Copy)]
#[repr(align(32))]
struct Entry {
    key: [u64; 2],
    /// Millisecond (caller's clock) of the last accepted request.
    last_ms: u64,
    /// Milli-requests above the rate, as of `last_ms`.
    excess: u32,
    /// [`FREE`], [`LIVE`] or [`REFERENCED`]: the CLOCK state.
    state: u16,
    /// Next free slot while this slot is free.
    next_free: u16,
}

/// A slice of a zone behind one lock.
#[derive(Debug)]
struct Shard {
    /// Slab of entries; free slots are chained through `next_free` from `free`.
    entries: Vec<Entry>,
    /// Open-addressing index: 0 = empty, else `tag << 16 | (slot + 1)`; load ≤ 2/3.
    buckets: Vec<u32>,
    /// Hard cap on live entries.
    capacity: usize,
    len: usize,
    /// CLOCK hand: the next slot considered for expiry or eviction.
    hand: usize,
    free: u16,
    evictions: u64,
}

impl Shard {
    fn new(capacity: usize) -> Shard {
        Shard {
            entries: Vec::new(),
            buckets: Vec::new(),
            capacity,
            len: 0,
            hand: 0,
            free: NIL,
            evictions: 0,
        }
    }

    fn find(&self, key: [u64; 2], hash: u64) -> Option<(usize, u16)> {
        let buckets = self.buckets.len();
        if buckets == 0 {
            return None;
        }
        let tag = hash_tag(hash);
        let mut bucket = home_bucket(hash, buckets);
        loop {
            let value = self.buckets[bucket];
            if value == 0 {
                return None;
            }
            if value >> 16 == tag {
                let slot = (value & 0xFFFF) as u16 - 1;
                if self.entries[usize::from(slot)].key == key {
                    return Some((bucket, slot));
                }
            }
            bucket += 1;
            if bucket == buckets {
                bucket = 0;
            }
        }
    }

    fn index_insert(&mut self, hash: u64, slot: u16) {
        let buckets = self.buckets.len();
        let mut bucket = home_bucket(hash, buckets);
        while self.buckets[bucket] != 0 {
            bucket += 1;
            if bucket == buckets {
                bucket = 0;
            }
        }
        self.buckets[bucket] = hash_tag(hash) << 16 | (u32::from(slot) + 1);
    }

    /// Backward-shift deletion keeps probe sequences intact without tombstones.
    fn index_remove(&mut self, hasher: &KeyHasher, mut hole: usize) {
        let buckets = self.buckets.len();
        let mut bucket = hole;
        loop {
            bucket += 1;
            if bucket == buckets {
                bucket = 0;
            }
            let value = self.buckets[bucket];
            if value == 0 {
                break;
            }
            let slot = usize::from((value & 0xFFFF) as u16 - 1);
            let home = home_bucket(hasher.hash(self.entries[slot].key), buckets);
            // The entry may fill the hole if the hole lies on its probe path [home, bucket).
            let home_to_bucket = (bucket + buckets - home) % buckets;
            let hole_to_bucket = (bucket + buckets - hole) % buckets;
            if home_to_bucket >= hole_to_bucket {
                self.buckets[hole] = value;
                hole = bucket;
            }
        }
        self.buckets[hole] = 0;
    }

    /// Records a hit for the CLOCK sweep; touches only the entry being read anyway.
    fn touch(&mut self, slot: u16) {
        self.entries[usize::from(slot)].state = REFERENCED;
    }

    fn remove(&mut self, hasher: &KeyHasher, slot: u16) {
        let key = self.entries[usize::from(slot)].key;
        if let Some((bucket, _)) = self.find(key, hasher.hash(key)) {
            self.index_remove(hasher, bucket);
        }
        let entry = &mut self.entries[usize::from(slot)];
        entry.state = FREE;
        entry.next_free = self.free;
        self.free = slot;
        self.len -= 1;
    }

    /// Moves the hand to the next live slot (at or after it, wrapping) and returns that slot;
    /// `None` when the shard is empty.
    fn live_at_hand(&mut self) -> Option<u16> {
        if self.len == 0 {
            return None;
        }
        let slots = self.entries.len();
        let mut hand = self.hand;
        loop {
            if hand >= slots {
                hand = 0;
            }
            if self.entries[hand].state != FREE {
                self.hand = hand;
                return Some(hand as u16);
            }
            hand += 1;
        }
    }

    fn advance_hand(&mut self) {
        self.hand += 1;
        if self.hand >= self.entries.len() {
            self.hand = 0;
        }
    }

    /// Second chance: clears referenced flags under the hand until it reaches a client not seen
    /// since the last sweep, which it evicts.
    fn evict_one(&mut self, hasher: &KeyHasher) {
        while let Some(slot) = self.live_at_hand() {
            let entry = &mut self.entries[usize::from(slot)];
            if entry.state == REFERENCED {
                entry.state = LIVE;
                self.advance_hand();
            } else {
                self.remove(hasher, slot);
                self.advance_hand();
                self.evictions += 1;
                return;
            }
        }
    }

    /// True when a request now would see excess 0, exactly as if the client were new, so the
    /// entry can go without changing any decision.
    fn is_drained(&self, slot: u16, rate: u64, now: u64) -> bool {
        let entry = &self.entries[usize::from(slot)];
        excess_after(
            u64::from(entry.excess),
            rate,
            elapsed_ms(now, entry.last_ms),
        ) == 0
    }

    /// Like nginx's opportunistic expiry before each insert: drop up to two drained entries
    /// under the CLOCK hand (the eviction candidates), stopping at the first that still
    /// matters. Dropping a drained entry changes no decision, referenced or not.
    fn expire_at_hand(&mut self, hasher: &KeyHasher, rate: u64, now: u64) {
        for _ in 0..2 {
            match self.live_at_hand() {
                Some(slot) if self.is_drained(slot, rate, now) => {
                    self.remove(hasher, slot);
                    self.advance_hand();
                }
                _ => return,
            }
        }
    }

    /// Grows the slab (doubling, capped at the shard capacity) and rebuilds the index.
    fn grow(&mut self, hasher: &KeyHasher) {
        let current = self.entries.capacity();
        let target = (current * 2).max(MIN_SLAB).min(self.capacity);
        self.entries.reserve_exact(target - self.entries.len());
        let slab = self.entries.capacity();
        self.buckets = vec![0; slab + slab / 2 + 1];
        // Growing only happens with an empty free list, so every slot is live.
        for slot in 0..self.entries.len() {
            let hash = hasher.hash(self.entries[slot].key);
            self.index_insert(hash, slot as u16);
        }
    }

    /// Starts tracking `key` (known absent) with excess 0 as of `now`.
    fn insert(&mut self, hasher: &KeyHasher, rate: u64, key: [u64; 2], hash: u64, now: u64) {
        self.expire_at_hand(hasher, rate, now);
        if self.len >= self.capacity {
            self.evict_one(hasher);
        }
        // New clients start unreferenced: a flood of one-off clients is evicted before clients
        // seen twice.
        let entry = Entry {
            key,
            last_ms: now,
            excess: 0,
            state: LIVE,
            next_free: NIL,
        };
        let slot = if self.free != NIL {
            let slot = self.free;
            self.free = self.entries[usize::from(slot)].next_free;
            self.entries[usize::from(slot)] = entry;
            slot
        } else {
            if self.entries.len() == self.entries.capacity() {
                self.grow(hasher);
            }
            self.entries.push(entry);
            (self.entries.len() - 1) as u16
        };
        self.index_insert(hash, slot);
        self.len += 1;
    }

    fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.buckets.capacity() * std::mem::size_of::<u32>()
    }
}

/// Keeps each shard's lock on its own cache line so two threads do not false-share.
#[derive(Debug)]
#[repr(align(64))]
struct PaddedShard(Mutex<Shard>);

/// Result of looking a client up in one zone.
enum Lookup {
    Rejected { retry_after_ms: u64 },
    Accepted { excess: u64 },
}

/// One rate-limit zone: the per-client state for one `[rate_limit.NAME]` table.
///
/// All methods take `&self`; the zone is internally sharded and safe to share between threads.
#[derive(Debug)]
pub struct Zone {
    settings: ZoneSettings,
    limits: Limits,
    hasher: KeyHasher,
    shard_shift: u32,
    shards: Box<[PaddedShard]>,
}

impl Zone {
    /// A zone with no clients. Settings outside [`ZoneSettings::validate`]'s limits are clamped
    /// (burst to [`MAX_BURST`], max_clients to 1..=[`MAX_CLIENTS`]); [`Zone::settings`] shows
    /// the values in effect.
    pub fn new(mut settings: ZoneSettings) -> Zone {
        settings.burst = settings.burst.min(MAX_BURST);
        settings.max_clients = settings.max_clients.clamp(1, MAX_CLIENTS);
        let max_clients = settings.max_clients;
        let shard_count = max_clients
            .div_ceil(TARGET_SHARD_CAPACITY)
            .next_power_of_two()
            .min(MAX_SHARDS);
        let base = max_clients / shard_count;
        let extra = max_clients % shard_count;
        let shards = (0..shard_count)
            .map(|i| PaddedShard(Mutex::new(Shard::new(base + usize::from(i < extra)))))
            .collect();
        Zone {
            limits: Limits {
                rate: settings.rate.milli_per_sec(),
                burst_milli: settings.burst * MILLI,
                delay_threshold_milli: settings.delay.threshold_milli(),
            },
            settings,
            hasher: KeyHasher::random(),
            // Top hash bits pick the shard; the low 48 bits serve the index.
            shard_shift: 64 - shard_count.trailing_zeros(),
            shards,
        }
    }

    /// The settings in effect.
    pub fn settings(&self) -> &ZoneSettings {
        &self.settings
    }

    /// Decides one request from `client` at `now_ms` against this zone alone.
    pub fn check(&self, client: IpAddr, now_ms: u64) -> Decision {
        check_all(&[self], client, now_ms)
    }

    /// How many clients are tracked now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.0.lock().len).sum()
    }

    /// True when no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many clients were evicted so far to make room (not counting drained entries that
    /// were dropped because forgetting them changes nothing).
    pub fn evictions(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.0.lock().evictions)
            .sum()
    }

    /// Drops every entry whose state at `now_ms` is the same as a never-seen client's; returns
    /// how many. Optional housekeeping: inserts already drop drained entries lazily.
    pub fn expire_idle(&self, now_ms: u64) -> usize {
        let rate = self.limits.rate;
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.0.lock();
            for slot in 0..shard.entries.len() {
                let slot = slot as u16;
                if shard.entries[usize::from(slot)].state != FREE
                    && shard.is_drained(slot, rate, now_ms)
                {
                    shard.remove(&self.hasher, slot);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Heap bytes held by the client table (entries plus index), for metrics.
    pub fn memory_bytes(&self) -> usize {
        let tables: usize = self.shards.iter().map(|s| s.0.lock().heap_bytes()).sum();
        tables + self.shards.len() * std::mem::size_of::<PaddedShard>()
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // `checked_shr` covers the single-shard case (shift by 64).
        let index = hash.checked_shr(self.shard_shift).unwrap_or(0) as usize;
        &self.shards[index].0
    }

    /// nginx `ngx_http_limit_req_lookup`: marks the client as recently seen, rejects above the burst,
    /// and when `commit` records the request. A client not tracked is accepted with excess 0
    /// and only inserted when committing.
    fn lookup(&self, key: [u64; 2], hash: u64, now: u64, commit: bool) -> Lookup {
        let Limits {
            rate, burst_milli, ..
        } = self.limits;
        let mut shard = self.shard(hash).lock();
        let Some((_, slot)) = shard.find(key, hash) else {
            if commit {
                shard.insert(&self.hasher, rate, key, hash, now);
            }
            return Lookup::Accepted { excess: 0 };
        };
        shard.touch(slot);
        let entry = &mut shard.entries[usize::from(slot)];
        let ms = elapsed_ms(now, entry.last_ms);
        let excess = excess_after(u64::from(entry.excess), rate, ms);
        if excess > burst_milli {
            return Lookup::Rejected {
                retry_after_ms: retry_after(
                    u64::from(entry.excess),
                    entry.last_ms,
                    now,
                    rate,
                    burst_milli,
                ),
            };
        }
        if commit {
            Self::commit(entry, excess, ms, now);
        }
        Lookup::Accepted { excess }
    }

    /// nginx `ngx_http_limit_req_account` for one earlier zone: recompute and record without a
    /// burst check (the lookup already passed).
    fn account(&self, key: [u64; 2], hash: u64, now: u64) -> u64 {
        let rate = self.limits.rate;
        let mut shard = self.shard(hash).lock();
        let Some((_, slot)) = shard.find(key, hash) else {
            // Evicted by another thread since the lookup, or never tracked: nginx's node
            // created during lookup also accounts to excess 0.
            shard.insert(&self.hasher, rate, key, hash, now);
            return 0;
        };
        let entry = &mut shard.entries[usize::from(slot)];
        let ms = elapsed_ms(now, entry.last_ms);
        let excess = excess_after(u64::from(entry.excess), rate, ms);
        Self::commit(entry, excess, ms, now);
        excess
    }

    fn commit(entry: &mut Entry, excess: u64, ms: u64, now: u64) {
        entry.excess = u32::try_from(excess).unwrap_or(u32::MAX);
        // nginx keeps `last` when no time passed, so sub-millisecond drains are not lost.
        if ms != 0 {
            entry.last_ms = now;
        }
    }

    fn delay_for(&self, excess: u64) -> u64 {
        delay_for(excess, self.limits.delay_threshold_milli, self.limits.rate)
    }
}

/// Decides one request from `client` at `now_ms` against several zones, like several
/// `limit_req` lines in one nginx location.
///
/// Zones are looked up in order; the first to reject decides (its index is reported) and no
/// zone's budget is consumed. Only if all accept is the request recorded in every zone, and
/// the result is delayed by the largest delay any zone asks for. `zones` should be distinct
/// (nginx refuses duplicates); an empty slice passes everything.
pub fn check_all(zones: &[&Zone], client: IpAddr, now_ms: u64) -> Decision {
    let Some((last_zone, earlier)) = zones.split_last() else {
        return Decision::Pass;
    };
    let key = client_key(client);
    let hash_in = |zone: &Zone| zone.hasher.hash(key);
    for (index, zone) in earlier.iter().enumerate() {
        if let Lookup::Rejected { retry_after_ms } = zone.lookup(key, hash_in(zone), now_ms, false)
        {
            return Decision::Reject {
                zone: index,
                retry_after_ms,
            };
        }
    }
    let excess = match last_zone.lookup(key, hash_in(last_zone), now_ms, true) {
        Lookup::Rejected { retry_after_ms } => {
            return Decision::Reject {
                zone: earlier.len(),
                retry_after_ms,
            }
        }
        Lookup::Accepted { excess } => excess,
    };
    let mut max_delay = last_zone.delay_for(excess);
    // nginx accounts the earlier zones from the last towards the first.
    for zone in earlier.iter().rev() {
        let excess = zone.account(key, hash_in(zone), now_ms);
        max_delay = max_delay.max(zone.delay_for(excess));
    }
    if max_delay == 0 {
        Decision::Pass
    } else {
        Decision::Delay { ms: max_delay }
    }
}

/// Reference model: the decisions nginx would make for one client sending requests at
/// `times_ms` (in order) to a location with a single `limit_req` of these settings.
///
/// Written independently of [`Zone`] as a literal transcription of nginx's lookup/account code
/// with signed arithmetic, for differential tests (against [`Zone`] and against real nginx).
/// `max_clients` is ignored: one client is never evicted.
pub fn simulate(settings: &ZoneSettings, times_ms: &[u64]) -> Vec<Decision> {
    simulate_zones(std::slice::from_ref(settings), times_ms)
}

/// Reference model for several `limit_req` lines in one location (see [`simulate`]).
pub fn simulate_zones(zones: &[ZoneSettings], times_ms: &[u64]) -> Vec<Decision> {
    let mut nodes: Vec<Option<ModelNode>> = vec![None; zones.len()];
    times_ms
        .iter()
        .map(|&now| model_request(zones, &mut nodes, now))
        .collect()
}

/// nginx's `ngx_http_limit_req_node_t`, reduced to what decides.
#[derive(Debug, Clone, Copy)]
struct ModelNode {
    excess: i64,
    last: u64,
}

/// `ms` as nginx computes it, as a signed difference with its backwards-clock rules.
fn model_ms(now: u64, last: u64) -> i64 {
    let ms = now as i128 - last as i128;
    if ms < -60_000 {
        1
    } else if ms < 0 {
        0
    } else {
        i64::try_from(ms).unwrap_or(i64::MAX)
    }
}

fn model_excess(node: ModelNode, rate: i64, ms: i64) -> i64 {
    let drained = (i128::from(rate) * i128::from(ms) / 1000).min(i128::from(i64::MAX)) as i64;
    (node.excess - drained + 1000).max(0)
}

fn model_delay(zone: &ZoneSettings, excess: i64) -> u64 {
    let threshold = match zone.delay {
        Delay::NoDelay => i64::MAX,
        Delay::After(n) => i64::try_from(n.saturating_mul(1000)).unwrap_or(i64::MAX),
    };
    if excess <= threshold {
        0
    } else {
        ((excess - threshold) * 1000 / zone.rate.milli_per_sec() as i64) as u64
    }
}

fn model_request(zones: &[ZoneSettings], nodes: &mut [Option<ModelNode>], now: u64) -> Decision {
    if zones.is_empty() {
        return Decision::Pass;
    }
    let last_zone = zones.len() - 1;
    let mut last_excess = 0;
    // Handler loop: lookup each zone, committing only in the last (`account` flag).
    for (n, zone) in zones.iter().enumerate() {
        let rate = zone.rate.milli_per_sec() as i64;
        let burst = zone.burst.min(MAX_BURST) as i64 * 1000;
        match nodes[n] {
            Some(node) => {
                let ms = model_ms(now, node.last);
                let excess = model_excess(node, rate, ms);
                if excess > burst {
                    let needed = node.excess + 1000 - burst;
                    let elapsed = (needed * 1000 + rate - 1) / rate;
                    let retry = node.last as i128 + elapsed as i128 - now as i128;
                    return Decision::Reject {
                        zone: n,
                        retry_after_ms: retry.clamp(1, i128::from(u64::MAX)) as u64,
                    };
                }
                if n == last_zone {
                    nodes[n] = Some(ModelNode {
                        excess,
                        last: if ms != 0 { now } else { node.last },
                    });
                    last_excess = excess;
                }
            }
            None => {
                // A new node starts at excess 0. nginx creates it with `last = 0` in earlier
                // zones (far in the past on its monotonic clock), which `account` turns into
                // excess 0 as well; a node left behind by a later rejection is equally fresh.
                if n == last_zone {
                    nodes[n] = Some(ModelNode {
                        excess: 0,
                        last: now,
                    });
                }
            }
        }
    }
    // ngx_http_limit_req_account: the last zone's delay, then earlier zones from last to first.
    let mut max_delay = model_delay(&zones[last_zone], last_excess);
    for n in (0..last_zone).rev() {
        let zone = &zones[n];
        let excess = match nodes[n] {
            Some(node) => {
                let ms = model_ms(now, node.last);
                let excess = model_excess(node, zone.rate.milli_per_sec() as i64, ms);
                nodes[n] = Some(ModelNode {
                    excess,
                    last: if ms != 0 { now } else { node.last },
                });
                excess
            }
            None => {
                nodes[n] = Some(ModelNode {
                    excess: 0,
                    last: now,
                });
                0
            }
        };
        max_delay = max_delay.max(model_delay(zone, excess));
    }
    if max_delay == 0 {
        Decision::Pass
    } else {
        Decision::Delay { ms: max_delay }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const T0: u64 = 1_700_000_000_000;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    fn settings(rate: Rate, burst: u64, delay: Delay) -> ZoneSettings {
        ZoneSettings {
            name: "test".into(),
            rate,
            burst,
            delay,
            max_clients: 1000,
        }
    }

    fn zone(rate: Rate, burst: u64, delay: Delay) -> Zone {
        Zone::new(settings(rate, burst, delay))
    }

    fn reject(zone: usize, retry_after_ms: u64) -> Decision {
        Decision::Reject {
            zone,
            retry_after_ms,
        }
    }

    #[test]
    fn rate_parsing_matches_nginx_units() {
        assert_eq!(Rate::parse("1r/s").unwrap().milli_per_sec(), 1000);
        assert_eq!(Rate::parse("10 r/s").unwrap().milli_per_sec(), 10_000);
        assert_eq!(Rate::parse(" 60r/m ").unwrap().milli_per_sec(), 1000);
        assert_eq!(Rate::parse("1r/m").unwrap().milli_per_sec(), 16);
        assert_eq!(Rate::parse("30r/m").unwrap(), Rate::per_minute(30));
        assert_eq!(Rate::parse("5").unwrap(), Rate::per_second(5));
        assert_eq!("2r/s".parse::<Rate>().unwrap(), Rate::per_second(2));
        for bad in [
            "", "r/s", "abc", "-1r/s", "+1r/s", "1.5r/s", "1r/h", "1 r / s",
        ] {
            assert!(
                matches!(Rate::parse(bad), Err(RateParseError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(Rate::parse("0r/s"), Err(RateParseError::Zero(_))));
        assert!(matches!(
            Rate::parse("99999999999999999999r/s"),
            Err(RateParseError::TooLarge(_))
        ));
        assert_eq!(Rate::per_second(0).milli_per_sec(), 1);
    }

    #[test]
    fn burst_zero_nodelay_one_per_second() {
        let z = zone(Rate::per_second(1), 0, Delay::NoDelay);
        let c = ip(1);
        assert_eq!(z.check(c, T0), Decision::Pass);
        assert_eq!(z.check(c, T0 + 1), reject(0, 999));
        assert_eq!(z.check(c, T0 + 999), reject(0, 1));
        assert_eq!(z.check(c, T0 + 1000), Decision::Pass);
        assert_eq!(z.check(c, T0 + 1500), reject(0, 500));
        // Rejected requests do not consume budget.
        assert_eq!(z.check(c, T0 + 2000), Decision::Pass);
        // Another client is independent.
        assert_eq!(z.check(ip(2), T0 + 2000), Decision::Pass);
    }

    #[test]
    fn burst_five_nodelay() {
        let z = zone(Rate::per_second(1), 5, Delay::NoDelay);
        let c = ip(1);
        // nginx lets burst + 1 through at once: the first request starts at excess 0.
        for _ in 0..6 {
            assert_eq!(z.check(c, T0), Decision::Pass);
        }
        assert_eq!(z.check(c, T0), reject(0, 1000));
        assert_eq!(z.check(c, T0 + 400), reject(0, 600));
        assert_eq!(z.check(c, T0 + 1000), Decision::Pass);
        assert_eq!(z.check(c, T0 + 1000), reject(0, 1000));
        // After a long pause the whole burst is available again.
        for _ in 0..6 {
            assert_eq!(z.check(c, T0 + 60_000), Decision::Pass);
        }
        assert!(z.check(c, T0 + 60_000).is_reject());
    }

    #[test]
    fn default_delay_mode_delays_every_excess_request() {
        let z = zone(Rate::per_second(2), 3, Delay::default());
        let c = ip(1);
        assert_eq!(z.check(c, T0), Decision::Pass);
        assert_eq!(z.check(c, T0), Decision::Delay { ms: 500 });
        assert_eq!(z.check(c, T0), Decision::Delay { ms: 1000 });
        assert_eq!(z.check(c, T0), Decision::Delay { ms: 1500 });
        assert_eq!(z.check(c, T0), reject(0, 500));
        // 100 ms drain 200 milli: excess 3000 - 200 + 1000 = 3800 > 3000.
        assert_eq!(z.check(c, T0 + 100), reject(0, 400));
        // 500 ms drain 1000: 3000 - 1000 + 1000 = 3000, delayed 3000 * 1000 / 2000.
        assert_eq!(z.check(c, T0 + 500), Decision::Delay { ms: 1500 });
    }

    #[test]
    fn delay_after_n_passes_n_then_delays() {
        let z = zone(Rate::per_second(1), 5, Delay::After(2));
        let c = ip(1);
        assert_eq!(z.check(c, T0), Decision::Pass); // 0
        assert_eq!(z.check(c, T0), Decision::Pass); // 1000
        assert_eq!(z.check(c, T0), Decision::Pass); // 2000
        assert_eq!(z.check(c, T0), Decision::Delay { ms: 1000 }); // 3000
        assert_eq!(z.check(c, T0), Decision::Delay { ms: 2000 }); // 4000
        assert_eq!(z.check(c, T0), Decision::Delay { ms: 3000 }); // 5000
        assert!(z.check(c, T0).is_reject());
        // 250 ms drain 250: 5750 is still above the burst.
        assert_eq!(z.check(c, T0 + 250), reject(0, 750));
        // 1250 ms drain 1250: 4750 → delayed (4750 - 2000) ms.
        assert_eq!(z.check(c, T0 + 1250), Decision::Delay { ms: 2750 });
    }

    #[test]
    fn tiny_delay_rounds_to_pass_like_nginx() {
        // Excess 1 milli over the threshold at 10 r/s is 0.1 ms: nginx passes it undelayed.
        let z = zone(Rate::per_second(10), 2, Delay::After(1));
        let c = ip(1);
        assert_eq!(z.check(c, T0), Decision::Pass);
        assert_eq!(z.check(c, T0), Decision::Pass); // 1000
        assert_eq!(z.check(c, T0 + 99), Decision::Delay { ms: 1 }); // 1000-990+1000 = 1010
        assert_eq!(z.check(c, T0 + 299), Decision::Pass); // 1010-2000+1000 = 10
    }

    #[test]
    fn per_minute_rates_truncate_like_nginx() {
        // 6r/m = 100 milli/s: a request needs 10 s of drain.
        let z = zone(Rate::per_minute(6), 0, Delay::NoDelay);
        let c = ip(1);
        assert_eq!(z.check(c, T0), Decision::Pass);
        assert_eq!(z.check(c, T0 + 9_999), reject(0, 1));
        assert_eq!(z.check(c, T0 + 10_000), Decision::Pass);
        // 1r/m is 16 milli/s in nginx, so a request needs 62.5 s, not 60 s.
        let z = zone(Rate::per_minute(1), 0, Delay::NoDelay);
        assert_eq!(z.check(c, T0), Decision::Pass);
        assert_eq!(z.check(c, T0 + 60_000), reject(0, 2_500));
        assert_eq!(z.check(c, T0 + 62_499), reject(0, 1));
        assert_eq!(z.check(c, T0 + 62_500), Decision::Pass);
    }

    #[test]
    fn retry_after_rounds_up_to_seconds() {
        let z = zone(Rate::per_minute(1), 0, Delay::NoDelay);
        let c = ip(1);
        assert_eq!(z.check(c, T0).retry_after_secs(), None);
        let d = z.check(c, T0 + 1);
        assert_eq!(d, reject(0, 62_499));
        assert_eq!(d.retry_after_secs(), Some(63));
        assert_eq!(reject(0, 1).retry_after_secs(), Some(1));
        assert_eq!(reject(0, 1000).retry_after_secs(), Some(1));
        assert_eq!(reject(0, 1001).retry_after_secs(), Some(2));
        // The advertised time is exact: one ms earlier is still rejected, then it passes.
        let z = zone(Rate::per_second(3), 2, Delay::NoDelay);
        for _ in 0..3 {
            assert!(!z.check(c, T0).is_reject());
        }
        let Decision::Reject { retry_after_ms, .. } = z.check(c, T0 + 10) else {
            panic!("expected a rejection");
        };
        assert!(z.check(c, T0 + 10 + retry_after_ms - 1).is_reject());
        assert!(!z.check(c, T0 + 10 + retry_after_ms).is_reject());
    }

    #[test]
    fn later_zone_rejecting_does_not_consume_earlier_budget() {
        let roomy = zone(Rate::per_second(1), 5, Delay::NoDelay);
        let strict = zone(Rate::per_second(1), 0, Delay::NoDelay);
        let c = ip(7);
        assert_eq!(check_all(&[&roomy, &strict], c, T0), Decision::Pass);
        for _ in 0..10 {
            assert_eq!(check_all(&[&roomy, &strict], c, T0 + 10), reject(1, 990));
        }
        // roomy recorded only the one accepted request: 5 more fit in its burst.
        for _ in 0..5 {
            assert_eq!(roomy.check(c, T0 + 10), Decision::Pass);
        }
        assert!(roomy.check(c, T0 + 10).is_reject());
        // The first zone rejecting is reported as index 0, and the second is not touched.
        // roomy: 4990 stored at T0 + 10 needs 990 ms of drain.
        let other = zone(Rate::per_second(1), 0, Delay::NoDelay);
        assert_eq!(check_all(&[&roomy, &other], c, T0 + 20), reject(0, 980));
        assert!(other.is_empty());
    }

    #[test]
    fn multiple_zones_delay_is_the_maximum_and_all_commit() {
        let slow = zone(Rate::per_second(1), 10, Delay::default());
        let fast = zone(Rate::per_second(4), 10, Delay::default());
        let nodelay = zone(Rate::per_second(1), 10, Delay::NoDelay);
        let c = ip(9);
        let zones = [&slow, &fast, &nodelay];
        assert_eq!(check_all(&zones, c, T0), Decision::Pass);
        // Every zone now holds excess 1000: slow asks 1000 ms, fast 250 ms, nodelay 0.
        assert_eq!(check_all(&zones, c, T0), Decision::Delay { ms: 1000 });
        assert_eq!(
            check_all(&[&fast, &nodelay], c, T0),
            Decision::Delay { ms: 500 }
        );
        assert_eq!(slow.len(), 1);
        assert_eq!(fast.len(), 1);
        // Both requests were committed in slow: excess 2000 → delayed 2000 ms.
        assert_eq!(slow.check(c, T0), Decision::Delay { ms: 2000 });
        assert_eq!(check_all(&[], c, T0), Decision::Pass);
    }

    #[test]
    fn eviction_drops_a_client_not_seen_recently() {
        let mut s = settings(Rate::per_second(1), 0, Delay::NoDelay);
        s.max_clients = 3;
        let z = Zone::new(s);
        let (a, b, c, d) = (ip(1), ip(2), ip(3), ip(4));
        for client in [a, b, c] {
            assert_eq!(z.check(client, T0), Decision::Pass);
        }
        // `a` is seen again (a rejected request still counts as seen), so `b` is the oldest.
        assert!(z.check(a, T0 + 1).is_reject());
        assert_eq!(z.check(d, T0 + 2), Decision::Pass);
        assert_eq!(z.len(), 3);
        assert_eq!(z.evictions(), 1);
        // a, c and d are still limited; b was forgotten and passes as a new client would.
        assert!(z.check(a, T0 + 3).is_reject());
        assert!(z.check(c, T0 + 3).is_reject());
        assert!(z.check(d, T0 + 3).is_reject());
        assert_eq!(z.check(b, T0 + 3), Decision::Pass);
        assert_eq!(z.evictions(), 2);
        assert_eq!(z.len(), 3);
    }

    #[test]
    fn eviction_spares_every_client_seen_since_the_last_sweep() {
        // One shard of 1000: 1000 clients, half of them seen again, then 500 newcomers. CLOCK
        // must evict exactly the 500 idle ones and keep every recently seen client.
        let mut s = settings(Rate::per_second(1), 0, Delay::NoDelay);
        s.max_clients = 1000;
        let z = Zone::new(s);
        assert_eq!(z.shards.len(), 1);
        for n in 0..1000 {
            assert_eq!(z.check(ip(n), T0), Decision::Pass);
        }
        for n in (0..1000).step_by(2) {
            assert!(z.check(ip(n), T0 + 1).is_reject());
        }
        for n in 1000..1500 {
            assert_eq!(z.check(ip(n), T0 + 2), Decision::Pass);
        }
        assert_eq!(z.evictions(), 500);
        assert_eq!(z.len(), 1000);
        // Every recently seen client and every newcomer is still limited.
        for n in (0..1000).step_by(2).chain(1000..1500) {
            assert!(z.check(ip(n), T0 + 3).is_reject(), "client {n} was evicted");
        }
        assert_eq!(z.evictions(), 500);
        // The idle ones were forgotten: they pass as new clients would.
        assert_eq!(z.check(ip(1), T0 + 3), Decision::Pass);
        assert_eq!(z.check(ip(999), T0 + 3), Decision::Pass);
    }

    #[test]
    fn drained_entries_expire_without_counting_as_evictions() {
        let z = zone(Rate::per_second(1), 2, Delay::NoDelay);
        for n in 0..10 {
            z.check(ip(n), T0);
        }
        // A busy client: excess 2000 at T0.
        for _ in 0..3 {
            z.check(ip(100), T0);
        }
        assert_eq!(z.len(), 11);
        // After 999 ms nobody is drained yet (a new request would still see excess 1).
        assert_eq!(z.expire_idle(T0 + 999), 0);
        // At 1000 ms the single-request clients are as good as new; the busy one is not.
        assert_eq!(z.expire_idle(T0 + 1000), 10);
        assert_eq!(z.len(), 1);
        assert_eq!(z.check(ip(100), T0 + 1000), Decision::Pass); // 2000 - 1000 + 1000
        assert!(z.check(ip(100), T0 + 1000).is_reject());
        assert_eq!(z.expire_idle(T0 + 4000), 1);
        assert!(z.is_empty());
        assert_eq!(z.evictions(), 0);
    }

    #[test]
    fn inserts_drop_drained_entries_under_the_clock_hand() {
        let mut s = settings(Rate::per_second(1), 0, Delay::NoDelay);
        s.max_clients = 2;
        let z = Zone::new(s);
        z.check(ip(1), T0);
        z.check(ip(2), T0);
        // Both are drained at +1 s, so inserting a third evicts nothing that matters.
        z.check(ip(3), T0 + 1000);
        assert_eq!(z.evictions(), 0);
        assert_eq!(z.len(), 1);
    }

    #[test]
    fn clock_going_backwards_follows_nginx() {
        let z = zone(Rate::per_second(1), 1, Delay::NoDelay);
        let c = ip(1);
        assert_eq!(z.check(c, T0), Decision::Pass); // excess 0, last T0
                                                    // Up to 60 s back counts as no time passed.
        assert_eq!(z.check(c, T0 - 30_000), Decision::Pass); // 1000, last kept at T0
        assert_eq!(z.check(c, T0 - 30_000), reject(0, 31_000));
        // More than 60 s back counts as 1 ms: 2000 - 1 + 1000 > 1000.
        assert_eq!(z.check(c, T0 - 90_000), reject(0, 91_000));
        let z = zone(Rate::per_second(1), 1, Delay::NoDelay);
        assert_eq!(z.check(c, T0), Decision::Pass);
        // 0 - 1 + 1000 = 999 fits the burst, and `last` resyncs to the new clock.
        assert_eq!(z.check(c, T0 - 90_000), Decision::Pass);
        assert_eq!(z.check(c, T0 - 89_000), Decision::Pass); // 999 - 1000 + 1000
                                                             // Extremes do not panic.
        for now in [0, 1, u64::MAX, u64::MAX - 1, 0] {
            z.check(c, now);
            z.expire_idle(now);
        }
        let huge = zone(
            Rate::per_second(u64::MAX),
            MAX_BURST,
            Delay::After(u64::MAX),
        );
        for now in [u64::MAX, 0, u64::MAX] {
            huge.check(c, now);
        }
    }

    #[test]
    fn flood_of_distinct_clients_stays_within_max_clients() {
        for max_clients in [1, 7, 4096, 10_000, 50_000] {
            let mut s = settings(Rate::per_second(1), 0, Delay::NoDelay);
            s.max_clients = max_clients;
            let z = Zone::new(s);
            let flood = 10 * max_clients as u32;
            for n in 0..flood {
                // Half IPv4, half IPv6 /64s, all within the same millisecond.
                let client = if n % 2 == 0 {
                    ip(n)
                } else {
                    IpAddr::V6(Ipv6Addr::from(u128::from(n) << 64))
                };
                z.check(client, T0);
                assert!(z.shards.len() > 1 || z.len() <= max_clients);
            }
            assert!(z.len() <= max_clients, "{} > {max_clients}", z.len());
            assert!(z.len() >= max_clients * 9 / 10, "{} tracked", z.len());
            assert_eq!(z.evictions(), u64::from(flood) - z.len() as u64);
        }
    }

    #[test]
    fn settings_are_validated_and_clamped() {
        let mut s = settings(Rate::per_second(1), MAX_BURST + 1, Delay::NoDelay);
        assert!(matches!(
            s.validate(),
            Err(ZoneSettingsError::BurstTooLarge { .. })
        ));
        s.burst = 1;
        s.max_clients = 0;
        assert!(matches!(
            s.validate(),
            Err(ZoneSettingsError::MaxClientsOutOfRange { .. })
        ));
        s.burst = MAX_BURST + 1;
        let z = Zone::new(s);
        assert_eq!(z.settings().burst, MAX_BURST);
        assert_eq!(z.settings().max_clients, 1);
        assert!(z.settings().clone().validate().is_ok());
    }

    #[test]
    fn ipv4_and_ipv6_clients_are_distinct() {
        let z = zone(Rate::per_second(1), 0, Delay::NoDelay);
        let v4 = ip(0x0102_0304);
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0102, 0x0304));
        assert_eq!(z.check(v4, T0), Decision::Pass);
        assert_eq!(z.check(v6, T0), Decision::Pass);
        assert!(z.check(v4, T0).is_reject());
        assert!(z.check(v6, T0).is_reject());
    }

    #[test]
    fn entries_are_compact_and_zones_shareable() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        assert_eq!(std::mem::align_of::<Entry>(), 32);
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Zone>();
    }

    #[test]
    fn index_survives_heavy_churn() {
        // Many inserts, evictions and expiries through one small shard must keep every tracked
        // client findable (a broken backward-shift delete would lose entries).
        let mut s = settings(Rate::per_second(1), 3, Delay::NoDelay);
        s.max_clients = 100;
        let z = Zone::new(s);
        let mut now = T0;
        for round in 0..200u32 {
            for n in 0..150u32 {
                let client = ip(round.wrapping_mul(7919) ^ n.wrapping_mul(104_729));
                z.check(client, now);
            }
            now += 37;
            if round % 10 == 0 {
                z.expire_idle(now);
            }
        }
        let shard = z.shards[0].0.lock();
        let mut walked = 0;
        for (slot, entry) in shard.entries.iter().enumerate() {
            if entry.state == FREE {
                continue;
            }
            let key = entry.key;
            assert_eq!(
                shard
                    .find(key, z.hasher.hash(key))
                    .map(|(_, s)| usize::from(s)),
                Some(slot)
            );
            walked += 1;
        }
        assert_eq!(walked, shard.len);
        let mut free = 0;
        let mut slot = shard.free;
        while slot != NIL {
            assert_eq!(shard.entries[usize::from(slot)].state, FREE);
            free += 1;
            slot = shard.entries[usize::from(slot)].next_free;
        }
        assert_eq!(free + shard.len, shard.entries.len());
        assert!(shard.len <= 100);
    }

    #[test]
    fn model_matches_the_worked_examples() {
        let s = settings(Rate::per_second(1), 5, Delay::After(2));
        let times = [T0, T0, T0, T0, T0, T0, T0, T0 + 250, T0 + 1250];
        assert_eq!(
            simulate(&s, &times),
            vec![
                Decision::Pass,
                Decision::Pass,
                Decision::Pass,
                Decision::Delay { ms: 1000 },
                Decision::Delay { ms: 2000 },
                Decision::Delay { ms: 3000 },
                reject(0, 1000),
                reject(0, 750),
                Decision::Delay { ms: 2750 },
            ]
        );
    }
}
