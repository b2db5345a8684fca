//! Name interning: every twin id and field name is stored once, in one arena, and addressed by a dense u32.
//!
//! Memory per name (measured for a million field names, issue 13): the name's bytes, 4 bytes of end offset
//! and one 4-byte slot of an open-addressing table kept 53-80% full. The table is ours rather than a
//! `hashbrown` table because a power-of-two table is half empty just after it doubles (10.5 B per name at a
//! million names, against about 6 here), and the arena and offsets grow by an eighth, not by doubling: names
//! are added once and kept for good, so spare capacity would be kept for good too.
use hashbrown::DefaultHashBuilder;
use std::hash::BuildHasher;

use crate::error::{Error, Result};

/// Default bound on a twin id, field name or set element, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Bits of a table slot that hold `id + 1` (0 is an empty slot); the bits above hold a tag of the name's
/// hash, so a probe compares a name only when the tags agree.
const ID_BITS: u32 = 26;
const ID_MASK: u32 = (1 << ID_BITS) - 1;
/// At most this many names (ids 0..MAX_NAMES): 67 million, far above what fits a node's memory anyway.
const MAX_NAMES: usize = ID_MASK as usize;

/// An append-only string interner.
#[derive(Default)]
pub struct Interner {
    bytes: String,
    ends: Vec<u32>,
    /// Linear probing; the home slot of a hash is `hash * len >> 64` (any length, not only powers of two).
    table: Vec<u32>,
    hasher: DefaultHashBuilder,
}

fn span(ends: &[u32], id: u32) -> std::ops::Range<usize> {
    let i = id as usize;
    let end = ends.get(i).copied().unwrap_or(0) as usize;
    let start = if i == 0 { 0 } else { ends.get(i - 1).copied().unwrap_or(0) as usize };
    start..end
}

fn name_of<'a>(bytes: &'a str, ends: &[u32], id: u32) -> &'a str {
    bytes.get(span(ends, id)).unwrap_or("")
}

fn home(hash: u64, len: usize) -> usize {
    ((u128::from(hash) * len as u128) >> 64) as usize
}

fn tag(hash: u64) -> u32 {
    (hash as u32) & !ID_MASK
}

/// Grows `v` to hold `extra` more, by at least an eighth (amortised O(1) appends, little spare capacity).
fn reserve_eighth<T>(v: &mut Vec<T>, extra: usize) {
    if v.capacity() - v.len() < extra {
        v.reserve_exact(extra.max(v.len() / 8).max(16));
    }
}

impl Interner {
    /// An empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of interned names.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The table slot holding `name` (`Ok`) or the empty slot where it would go (`Err`).
    fn probe(&self, name: &str, hash: u64) -> std::result::Result<usize, usize> {
        let n = self.table.len();
        if n == 0 {
            return Err(0);
        }
        let (want, mut i) = (tag(hash), home(hash, n));
        loop {
            let e = self.table[i];
            if e == 0 {
                return Err(i);
            }
            if e & !ID_MASK == want && name_of(&self.bytes, &self.ends, (e & ID_MASK) - 1) == name {
                return Ok(i);
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
    }

    /// The id of `name`, if interned.
    pub fn get(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.probe(name, hash).ok().map(|i| (self.table[i] & ID_MASK) - 1)
    }

    /// The name of `id` (empty for an unknown id; callers check ids against `len` first).
    pub fn name(&self, id: u32) -> &str {
        name_of(&self.bytes, &self.ends, id)
    }

    /// The UTF-8 bytes of `id`'s name (as `name`, without checking char boundaries: the delta encoders'
    /// hot path, which copies them).
    #[inline]
    pub fn name_bytes(&self, id: u32) -> &[u8] {
        self.bytes.as_bytes().get(span(&self.ends, id)).unwrap_or(&[])
    }

    /// Interns `name` (non-empty, at most `max_bytes`) and returns its id.
    pub fn intern(&mut self, name: &str, max_bytes: usize) -> Result<u32> {
        let hash = self.hasher.hash_one(name);
        let mut at = match self.probe(name, hash) {
            Ok(i) => return Ok((self.table[i] & ID_MASK) - 1),
            Err(i) => i,
        };
        check_name(name, max_bytes)?;
        let end = u32::try_from(self.bytes.len() + name.len())
            .map_err(|_| Error::Limit("interned names exceed 4 GiB".into()))?;
        let id = self.ends.len();
        if id >= MAX_NAMES {
            return Err(Error::Limit(format!("too many names (limit {MAX_NAMES})")));
        }
        // Keep the table at most 80% full; grow it by half.
        if (id + 1) * 5 > self.table.len() * 4 {
            self.grow();
            at = self.probe(name, hash).err().unwrap_or(0);
        }
        if self.bytes.capacity() - self.bytes.len() < name.len() {
            self.bytes.reserve_exact(name.len().max(self.bytes.len() / 8).max(256));
        }
        self.bytes.push_str(name);
        reserve_eighth(&mut self.ends, 1);
        self.ends.push(end);
        self.table[at] = tag(hash) | (id as u32 + 1);
        Ok(id as u32)
    }

    /// Rebuilds the table half as large again (each name's hash is computed anew from the arena).
    fn grow(&mut self) {
        let n = (self.table.len() + self.table.len() / 2).max(16);
        let mut table = vec![0u32; n];
        for e in self.table.iter().copied().filter(|&e| e != 0) {
            let hash = self.hasher.hash_one(name_of(&self.bytes, &self.ends, (e & ID_MASK) - 1));
            let mut i = home(hash, n);
            while table[i] != 0 {
                i = if i + 1 == n { 0 } else { i + 1 };
            }
            table[i] = e;
        }
        self.table = table;
    }
}

/// Refuses empty and oversized names.
pub fn check_name(name: &str, max_bytes: usize) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidValue("empty name".into()));
    }
    if name.len() > max_bytes {
        return Err(Error::Limit(format!("name of {} bytes (limit {max_bytes})", name.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_bounded() {
        let mut i = Interner::new();
        let a = i.intern("temp", 16).unwrap();
        let b = i.intern("hum", 16).unwrap();
        assert_eq!(i.intern("temp", 16).unwrap(), a);
        assert_eq!((i.name(a), i.name(b)), ("temp", "hum"));
        assert_eq!(i.get("nope"), None);
        assert!(matches!(i.intern("x".repeat(17).as_str(), 16), Err(Error::Limit(_))));
        assert!(matches!(i.intern("", 16), Err(Error::InvalidValue(_))));
        for n in 0..10_000 {
            i.intern(&format!("s{n}"), 16).unwrap();
        }
        assert_eq!(i.get("s9999"), Some(10_001));
        assert_eq!(i.name(u32::MAX), "");
    }

    /// Through every growth of the table, each name keeps its id and is found again; the table stays at
    /// most 80% full and the arena and offsets keep at most an eighth (or a small minimum) spare.
    #[test]
    fn names_survive_growth_and_spare_capacity_stays_small() {
        let mut i = Interner::new();
        let names: Vec<String> = (0..200_000).map(|n| format!("field-{n}")).collect();
        for (n, name) in names.iter().enumerate() {
            assert_eq!(i.intern(name, 64).unwrap(), n as u32);
            assert!(i.table.len() * 4 >= i.len() * 5, "table over 80% full at {n}");
        }
        for (n, name) in names.iter().enumerate().rev() {
            assert_eq!((i.get(name), i.name(n as u32)), (Some(n as u32), name.as_str()));
        }
        assert_eq!(i.get("field-200000"), None);
        assert!(i.bytes.capacity() <= i.bytes.len() + i.bytes.len() / 8 + 256);
        assert!(i.ends.capacity() <= i.ends.len() + i.ends.len() / 8 + 16);
        assert!(i.table.len() * 100 <= i.len() * 190, "table {} for {} names", i.table.len(), i.len());
    }
}
