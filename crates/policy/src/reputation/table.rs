//! The offender table of one shard: a dense slab of entries plus a small hash index into it.
//!
//! A `HashMap<IpAddr, Offender>` runs between 44 % and 87 % full, so its 104-byte entries
//! cost up to 2.3 times their size (1 M offenders took 245 MB that way). Here only the
//! 20-byte index entries pay for the load factor; the slab grows by a quarter at a time and
//! gives memory back when it empties. Keys are stored as 16 bytes (IPv4 as v4-mapped IPv6):
//! an `IpAddr` is 17 bytes and pads to 24 next to an 8-aligned value.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// A client key in 16 bytes.
type Key = [u8; 16];

fn key(ip: &IpAddr) -> Key {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inverse of [`key`]. Client keys never are v4-mapped IPv6 (client identity folds them to
/// IPv4), so mapping those back to IPv4 is lossless.
fn ip(key: &Key) -> IpAddr {
    Ipv6Addr::from(*key).to_canonical()
}

/// Slab growth step, at least: small tables should not reallocate on every insert.
const MIN_GROWTH: usize = 64;

/// Offender records keyed by client, with `HashMap`-like access.
#[derive(Debug)]
pub(super) struct Table<V> {
    index: HashMap<Key, u32>,
    slab: Vec<(Key, V)>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self {
            index: HashMap::new(),
            slab: Vec::new(),
        }
    }
}

impl<V: Default> Table<V> {
    /// How many entries.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when `key` has an entry.
    pub fn contains_key(&self, client: &IpAddr) -> bool {
        self.index.contains_key(&key(client))
    }

    /// The entry of `key`.
    pub fn get(&self, client: &IpAddr) -> Option<&V> {
        let &slot = self.index.get(&key(client))?;
        self.slab.get(slot as usize).map(|(_, v)| v)
    }

    /// The entry of `key`, mutably.
    pub fn get_mut(&mut self, client: &IpAddr) -> Option<&mut V> {
        let &slot = self.index.get(&key(client))?;
        self.slab.get_mut(slot as usize).map(|(_, v)| v)
    }

    /// The entry of `key`, created with `V::default()` when absent.
    pub fn get_or_default(&mut self, client: IpAddr) -> &mut V {
        let key = key(&client);
        let slot = match self.index.get(&key) {
            Some(&slot) => slot as usize,
            None => {
                if self.slab.len() == self.slab.capacity() {
                    // A quarter at a time: amortized O(1), at most 25 % spare.
                    self.slab
                        .reserve_exact((self.slab.len() / 4).max(MIN_GROWTH));
                }
                let slot = self.slab.len();
                self.slab.push((key, V::default()));
                self.index.insert(key, slot as u32);
                slot
            }
        };
        &mut self.slab[slot].1
    }

    /// Removes the entry of `key`.
    pub fn remove(&mut self, client: &IpAddr) -> Option<V> {
        let slot = self.index.remove(&key(client))? as usize;
        let (_, value) = self.slab.swap_remove(slot);
        if let Some((moved, _)) = self.slab.get(slot) {
            self.index.insert(*moved, slot as u32);
        }
        self.shrink();
        Some(value)
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&IpAddr, &mut V) -> bool) {
        let mut slot = 0;
        while slot < self.slab.len() {
            let (key, value) = &mut self.slab[slot];
            if keep(&ip(key), value) {
                slot += 1;
                continue;
            }
            let key = *key;
            self.index.remove(&key);
            self.slab.swap_remove(slot);
            if let Some((moved, _)) = self.slab.get(slot) {
                self.index.insert(*moved, slot as u32);
            }
        }
        self.shrink();
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &V)> {
        self.slab.iter().map(|(k, v)| (ip(k), v))
    }

    /// Returns memory once the table is well below its capacity (after a flood is forgotten).
    fn shrink(&mut self) {
        let len = self.slab.len();
        if self.slab.capacity() > 2 * len + MIN_GROWTH {
            self.slab.shrink_to(len + len / 4);
        }
        if self.index.capacity() > 4 * len + MIN_GROWTH {
            self.index.shrink_to(len + len / 4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(i.to_be_bytes())
    }

    #[test]
    fn keys_round_trip_both_families() {
        for client in ["192.0.2.1", "0.0.0.0", "2001:db8::1", "::1", "::"] {
            let client: IpAddr = client.parse().unwrap();
            assert_eq!(super::ip(&key(&client)), client);
        }
    }

    /// The table behaves as a map under any mix of inserts, removals and retains.
    #[test]
    fn matches_a_map_model() {
        let mut table: Table<u64> = Table::default();
        let mut model: BTreeMap<u32, u64> = BTreeMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 500) as u32;
            match x % 7 {
                0 => {
                    assert_eq!(table.remove(&ip(key)), model.remove(&key));
                }
                1 if step % 97 == 0 => {
                    table.retain(|k, v| {
                        !(matches!(k, IpAddr::V4(a) if a.octets()[3] % 3 == 0) && *v % 2 == 0)
                    });
                    model.retain(|k, v| !(k % 256 % 3 == 0 && *v % 2 == 0));
                }
                _ => {
                    *table.get_or_default(ip(key)) += step;
                    *model.entry(key).or_default() += step;
                }
            }
            assert_eq!(table.len(), model.len());
        }
        for (k, v) in &model {
            assert_eq!(table.get(&ip(*k)), Some(v));
        }
        let mut seen: Vec<_> = table.iter().map(|(k, v)| (k, *v)).collect();
        seen.sort();
        let mut want: Vec<_> = model.iter().map(|(k, v)| (ip(*k), *v)).collect();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn gives_memory_back_after_a_flood() {
        let mut table: Table<u64> = Table::default();
        for i in 0..100_000 {
            table.get_or_default(ip(i));
        }
        assert!(table.slab.capacity() <= 100_000 + 100_000 / 4 + MIN_GROWTH);
        table.retain(|k, _| matches!(k, IpAddr::V4(a) if u32::from(*a) < 100));
        assert_eq!(table.len(), 100);
        assert!(table.slab.capacity() < 1_000, "{}", table.slab.capacity());
        assert!(table.index.capacity() < 1_000, "{}", table.index.capacity());
        assert_eq!(table.get(&ip(99)), Some(&0));
        assert!(!table.contains_key(&ip(100)));
    }
}
