//! The store's full state a bounded step at a time, for a snapshot streamed to disk: memory stays
//! O(chunk) however big the store is, and a host that shares the store between threads can release its
//! lock between steps.
//!
//! Each step encodes the next twins in id order (not the canonical name order of
//! [`Store::encode_state`]: a snapshot is only ever merged, and merging ignores order) into messages of
//! at most the budget, each with the writer table of its own twins, so every chunk merges on its own.
//! Twins are never removed from a store and each only grows by joins, so a step taken after writes that
//! came later still encodes a state that includes everything before the snapshot began: the log records
//! after that point are replayed over it on recovery, and joins are idempotent.
use crate::store::{CellRef, Store, Twin};
use crate::value::Value;

/// A cursor over a store's twins that yields its full state in chunks.
#[derive(Debug, Clone)]
pub struct StateChunks {
    next: u32,
    max_bytes: usize,
}

impl StateChunks {
    /// A cursor at the first twin, yielding messages of at most `max_bytes` (a single field, counter, set
    /// or multi-value register larger than that travels alone).
    pub fn new(max_bytes: usize) -> Self {
        StateChunks { next: 0, max_bytes: max_bytes.max(1) }
    }

    /// The next step: the twins after the last step whose estimated encoding fills `max_bytes`, encoded
    /// into messages of at most `max_bytes` each (usually one); None once every twin was yielded. The
    /// estimate errs high, so a step holds about one chunk.
    pub fn next(&mut self, store: &Store) -> Option<Vec<Vec<u8>>> {
        let end = store.twins.len() as u32;
        let mut tids = Vec::new();
        let mut bytes = 0usize;
        while self.next < end && bytes < self.max_bytes {
            let tid = self.next;
            if let Some(t) = store.twin(tid) {
                let w = weight(store, tid, t);
                // Keep the step under budget unless it would be empty.
                if !tids.is_empty() && bytes + w > self.max_bytes {
                    break;
                }
                bytes += w;
                tids.push(tid);
            }
            self.next += 1;
        }
        if tids.is_empty() {
            return None;
        }
        Some(store.encode_twins(&tids, None, self.max_bytes))
    }
}

/// An upper estimate of a twin's encoded size (names, values, stamps and counters as full-width varints).
fn weight(store: &Store, tid: u32, t: &Twin) -> usize {
    let context = |n: usize| 12 * n;
    let mut w = 16 + store.twin_names.name(tid).len() + context(t.cc.ranges().len() + t.cc.cloud().len());
    for s in &t.slots {
        w += 8 + store.field_names.name(s.field()).len();
        w += match s.cell() {
            CellRef::F64(_) | CellRef::I64(_) | CellRef::Bool(_) => 32,
            CellRef::Str(x) => 32 + x.len(),
            CellRef::Bytes(x) => 32 + x.len(),
            CellRef::Counter(c) => 40 * c.entries().len(),
            CellRef::Set(set) => {
                let c = set.context();
                context(c.ranges().len() + c.cloud().len())
                    + set.entries().map(|(e, dots)| 8 + e.len() + 16 * dots.len()).sum::<usize>()
            }
            CellRef::Multi(reg) => {
                let c = reg.context();
                context(c.ranges().len() + c.cloud().len())
                    + reg.siblings().iter().map(|s| 48 + value_bytes(&s.value)).sum::<usize>()
            }
        };
    }
    w
}

fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Str(x) => x.len(),
        Value::Bytes(x) => x.len(),
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(twins: usize, fields: usize) -> Store {
        let mut s = Store::new(7, 500);
        for t in 0..twins {
            for f in 0..fields {
                s.set(&format!("twin-{t}"), &format!("field-{f}"), Value::F64(t as f64 + f as f64 / 10.0)).unwrap();
            }
        }
        s.add("twin-0", "tags", "north").unwrap();
        s.increment("twin-1", "starts", 3).unwrap();
        s.desire("twin-2", "heater", Value::Bool(true)).unwrap();
        s
    }

    #[test]
    fn every_step_fits_its_budget_and_the_steps_merge_to_the_state() {
        let s = store(2_000, 10);
        let budget = 16 << 10;
        let mut cursor = StateChunks::new(budget);
        let mut copy = Store::new(8, 500);
        let mut steps = 0;
        while let Some(parts) = cursor.next(&s) {
            steps += 1;
            // The structural bound: a step is about one chunk, never the whole state.
            assert!(parts.iter().map(Vec::len).sum::<usize>() <= budget, "a step of {parts:?} parts");
            for p in &parts {
                copy.merge(p).unwrap();
            }
        }
        assert!(steps > 10, "{steps} steps");
        assert_eq!(copy.encode_state(None), s.encode_state(None));
    }

    #[test]
    fn a_twin_bigger_than_the_budget_is_split() {
        let s = store(3, 400);
        let mut cursor = StateChunks::new(4 << 10);
        let mut copy = Store::new(8, 500);
        while let Some(parts) = cursor.next(&s) {
            for p in &parts {
                assert!(p.len() <= 4 << 10, "{} bytes", p.len());
                copy.merge(p).unwrap();
            }
        }
        assert_eq!(copy.encode_state(None), s.encode_state(None));
    }

    #[test]
    fn an_empty_store_has_no_steps() {
        assert!(StateChunks::new(1 << 20).next(&Store::new(1, 500)).is_none());
    }
}
