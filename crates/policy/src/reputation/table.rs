//! The offender table of one shard: a dense slab of entries plus a hash index of slot numbers.
//!
//! A `HashMap<IpAddr, Offender>` runs between 44 % and 87 % full, so its 104-byte entries
//! cost up to 2.3 times their size (1 M offenders took 326 MiB that way). Here the index holds
//! only 4-byte slot numbers (a `hashbrown::HashTable` that hashes the key in the slab), so only
//! those pay for the load factor; the slab grows by a quarter at a time and gives memory back
//! when it empties. Keys are stored as 16 bytes (IPv4 as v4-mapped IPv6): an `IpAddr` is 17
//! bytes and pads to 24 next to an 8-aligned value. Hashing is std's keyed SipHash, as in
//! `HashMap`: the keys are chosen by whoever sends requests.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};

use hashbrown::HashTable;

use crate::client::{fold_mapped, mapped_bits};

/// Slab growth step, at least: small tables should not reallocate on every insert.
const MIN_GROWTH: usize = 64;

/// A client key in 16 bytes.
type Key = [u8; 16];

fn key(ip: &IpAddr) -> Key {
    mapped_bits(*ip).to_be_bytes()
}

/// The inverse of [`key`]. Client keys never are v4-mapped IPv6 (client identity folds them to
/// IPv4), so mapping those back to IPv4 is lossless.
fn ip(key: &Key) -> IpAddr {
    fold_mapped(IpAddr::V6(Ipv6Addr::from(*key)))
}

/// Offender records keyed by client, with `HashMap`-like access.
#[derive(Debug)]
pub(super) struct Table<V> {
    /// Slot numbers into `slab`, found by the hash of the slot's key.
    index: HashTable<u32>,
    slab: Vec<(Key, V)>,
    hasher: RandomState,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self {
            index: HashTable::new(),
            slab: Vec::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<V: Default> Table<V> {
    /// How many entries.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// The slot holding `key`.
    fn slot(&self, key: &Key) -> Option<usize> {
        let slab = &self.slab;
        self.index
            .find(self.hasher.hash_one(key), |&s| slab[s as usize].0 == *key)
            .map(|&s| s as usize)
    }

    /// True when `client` has an entry.
    pub fn contains_key(&self, client: &IpAddr) -> bool {
        self.slot(&key(client)).is_some()
    }

    /// The entry of `client`.
    pub fn get(&self, client: &IpAddr) -> Option<&V> {
        let slot = self.slot(&key(client))?;
        Some(&self.slab[slot].1)
    }

    /// The entry of `client`, mutably.
    pub fn get_mut(&mut self, client: &IpAddr) -> Option<&mut V> {
        let slot = self.slot(&key(client))?;
        Some(&mut self.slab[slot].1)
    }

    /// The entry of `client`, created with `V::default()` when absent.
    pub fn get_or_default(&mut self, client: IpAddr) -> &mut V {
        let key = key(&client);
        let slot = match self.slot(&key) {
            Some(slot) => slot,
            None => {
                if self.slab.len() == self.slab.capacity() {
                    // A quarter at a time: amortized O(1), at most 25 % spare.
                    self.slab
                        .reserve_exact((self.slab.len() / 4).max(MIN_GROWTH));
                }
                let slot = self.slab.len();
                self.slab.push((key, V::default()));
                let Table {
                    index,
                    slab,
                    hasher,
                } = self;
                index.insert_unique(hasher.hash_one(key), slot as u32, |&s| {
                    hasher.hash_one(slab[s as usize].0)
                });
                slot
            }
        };
        &mut self.slab[slot].1
    }

    /// Removes the entry in `slot`, moving the last entry into it.
    fn remove_slot(&mut self, slot: usize) -> V {
        let Table {
            index,
            slab,
            hasher,
        } = self;
        if let Ok(entry) = index.find_entry(hasher.hash_one(slab[slot].0), |&s| s as usize == slot)
        {
            entry.remove();
        }
        let last = slab.len() - 1;
        let (_, value) = slab.swap_remove(slot);
        if slot != last {
            // The former last entry now lives in `slot`: point its index entry there.
            if let Some(s) = index.find_mut(hasher.hash_one(slab[slot].0), |&s| s as usize == last)
            {
                *s = slot as u32;
            }
        }
        value
    }

    /// Removes the entry of `client`.
    pub fn remove(&mut self, client: &IpAddr) -> Option<V> {
        let slot = self.slot(&key(client))?;
        let value = self.remove_slot(slot);
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
            } else {
                // The last entry moves into `slot`; look at it next.
                self.remove_slot(slot);
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
            let Table {
                index,
                slab,
                hasher,
            } = self;
            index.shrink_to(len + len / 4, |&s| hasher.hash_one(slab[s as usize].0));
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
