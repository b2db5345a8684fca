//! Name interning: every twin id and field name is stored once, in one arena, and addressed by a dense u32.
//! About 4 bytes of offset plus the name's bytes plus one hash slot per name, so a million distinct field
//! names cost tens of megabytes, not hundreds.
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use crate::error::{Error, Result};

/// Default bound on a twin id, field name or set element, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// An append-only string interner.
#[derive(Default)]
pub struct Interner {
    bytes: String,
    ends: Vec<u32>,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

fn name_of<'a>(bytes: &'a str, ends: &[u32], id: u32) -> &'a str {
    let i = id as usize;
    let end = ends.get(i).copied().unwrap_or(0) as usize;
    let start = if i == 0 { 0 } else { ends.get(i - 1).copied().unwrap_or(0) as usize };
    bytes.get(start..end).unwrap_or("")
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

    /// The id of `name`, if interned.
    pub fn get(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.table.find(hash, |&id| name_of(&self.bytes, &self.ends, id) == name).copied()
    }

    /// The name of `id` (empty for an unknown id; callers check ids against `len` first).
    pub fn name(&self, id: u32) -> &str {
        name_of(&self.bytes, &self.ends, id)
    }

    /// Interns `name` (non-empty, at most `max_bytes`) and returns its id.
    pub fn intern(&mut self, name: &str, max_bytes: usize) -> Result<u32> {
        if let Some(id) = self.get(name) {
            return Ok(id);
        }
        check_name(name, max_bytes)?;
        let end = u32::try_from(self.bytes.len() + name.len())
            .map_err(|_| Error::Limit("interned names exceed 4 GiB".into()))?;
        let id = u32::try_from(self.ends.len()).map_err(|_| Error::Limit("too many names".into()))?;
        self.bytes.push_str(name);
        self.ends.push(end);
        let (bytes, ends, hasher) = (&self.bytes, &self.ends, &self.hasher);
        let hash = hasher.hash_one(name);
        self.table.insert_unique(hash, id, |&other| hasher.hash_one(name_of(bytes, ends, other)));
        Ok(id)
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
}
