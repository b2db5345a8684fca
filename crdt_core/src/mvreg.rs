//! Multi-value register (the optimised MV-register on a dot kernel), for desired state: a write replaces
//! every value its writer has seen with one new value; writes made concurrently (on two sides of a
//! partition) all stay as siblings, so no intent is silently dropped; a later write that has seen them all
//! resolves the conflict. A clear removes what its writer has seen and leaves no tombstone.
//!
//! The register numbers its own events, per writer (1, 2, ...), and keeps their causal context. A writer's
//! events reach others only inside whole register states, so every context is a plain version vector (one
//! entry per writer, no dot cloud) and the register never grows with its history: its size is bounded by
//! the writers that ever wrote it. Were its events numbered with the twin's dots instead, they would be
//! scattered among the twin's other events and pile up in the context's cloud, one per write.
//!
//! Deltas are the whole register, which right after a local write is just the new value and the context.
//! The classic one-dot delta (new dot; context = new dot + the siblings it covers) needs causal delivery:
//! received out of order, it marks a covered event as seen without what that event itself covered, and an
//! older value comes back (`tla/MVRegister.tla`, mutant `OneDotDelta`).
use crate::clock::Stamp;
use crate::context::{Context, Dot, ReplicaId};
use crate::lww::order_key;
use crate::value::Value;

/// One current value of a register, with the write that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sibling {
    /// The value written.
    pub value: Value,
    /// HLC stamp of the write.
    pub stamp: Stamp,
    /// The write: its writer and its number among that writer's events on this register.
    pub dot: Dot,
}

/// A multi-value register: the current siblings (sorted by dot, at most one per writer) and every register
/// event seen (writes and clears).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MvReg {
    siblings: Vec<Sibling>,
    cc: Context,
}

impl MvReg {
    /// An empty register.
    pub fn new() -> Self {
        Self::default()
    }

    /// A register from decoded parts (siblings in any order; a dot given twice keeps its first value).
    pub fn from_parts(siblings: impl IntoIterator<Item = Sibling>, cc: Context) -> Self {
        let mut siblings: Vec<Sibling> = siblings.into_iter().collect();
        siblings.sort_by_key(|s| s.dot);
        siblings.dedup_by_key(|s| s.dot);
        Self { siblings, cc }
    }

    /// The current siblings, sorted by dot (the canonical order of the encoding).
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// The current siblings in write order (stamp, then writer, then counter): the last is the one an LWW
    /// register would have kept.
    pub fn read(&self) -> Vec<&Sibling> {
        let mut out: Vec<&Sibling> = self.siblings.iter().collect();
        out.sort_by_key(|s| order_key(s.stamp, s.dot));
        out
    }

    /// Every register event seen.
    pub fn context(&self) -> &Context {
        &self.cc
    }

    /// Whether concurrent writes are waiting for a resolving write.
    pub fn is_conflict(&self) -> bool {
        self.siblings.len() > 1
    }

    /// Writes `value` as `replica`'s next event, replacing every sibling seen. Returns the new dot.
    pub fn write(&mut self, replica: ReplicaId, value: Value, stamp: Stamp) -> Dot {
        let dot = self.cc.next_dot(replica);
        self.siblings.clear();
        self.siblings.reserve_exact(1);
        self.siblings.push(Sibling { value, stamp, dot });
        self.cc.insert(dot);
        self.shrink();
        dot
    }

    /// Clears the register as `replica`'s next event: the siblings seen go, a concurrent write survives.
    pub fn clear(&mut self, replica: ReplicaId) -> Dot {
        let dot = self.cc.next_dot(replica);
        self.siblings.clear();
        self.cc.insert(dot);
        self.shrink();
        dot
    }

    /// Keeps no spare capacity: a store holds many registers, mostly with one value and one writer, and
    /// growth from zero would reserve room for four of each. Reallocates only after the register grew.
    fn shrink(&mut self) {
        self.siblings.shrink_to_fit();
        self.cc.shrink_to_fit();
    }

    fn has(&self, dot: Dot) -> bool {
        self.siblings.binary_search_by_key(&dot, |s| s.dot).is_ok()
    }

    /// Join. A sibling survives if both sides have it, or if the side lacking it has never seen its write.
    /// Idempotent, commutative, associative. Returns whether anything changed.
    pub fn merge(&mut self, other: &MvReg) -> bool {
        let before = self.siblings.len();
        self.siblings.retain(|s| other.has(s.dot) || !other.cc.contains(s.dot));
        let mut changed = self.siblings.len() != before;
        let fresh: Vec<&Sibling> =
            other.siblings.iter().filter(|s| !self.cc.contains(s.dot) && !self.has(s.dot)).collect();
        if !fresh.is_empty() {
            self.siblings.extend(fresh.into_iter().cloned());
            self.siblings.sort_by_key(|s| s.dot);
            changed = true;
        }
        if !self.cc.includes(&other.cc) {
            self.cc.union(&other.cc);
            changed = true;
        }
        if changed {
            self.shrink();
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(r: &MvReg) -> Vec<Value> {
        r.read().into_iter().map(|s| s.value.clone()).collect()
    }

    #[test]
    fn concurrent_writes_stay_until_a_write_that_saw_them() {
        let (mut a, mut b) = (MvReg::new(), MvReg::new());
        a.write(1, Value::F64(21.0), 10);
        b.write(2, Value::F64(23.5), 20);
        let (a0, b0) = (a.clone(), b.clone());
        a.merge(&b0);
        b.merge(&a0);
        assert_eq!(a, b);
        assert!(a.is_conflict());
        assert_eq!(values(&a), [Value::F64(21.0), Value::F64(23.5)]);
        b.write(2, Value::F64(22.0), 30);
        a.merge(&b);
        assert_eq!(values(&a), [Value::F64(22.0)]);
        assert_eq!(a.context(), &Context::from_parts([(1, 1), (2, 2)], []));
    }

    /// The out-of-order delivery that breaks one-dot deltas: three writes at one replica, the peer gets the
    /// first and the third. Whole-register deltas still leave it equal to the origin.
    #[test]
    fn out_of_order_writes_cannot_bring_an_old_value_back() {
        let mut a = MvReg::new();
        let mut states = Vec::new();
        for k in 1..=3 {
            a.write(1, Value::I64(k), k as u64);
            states.push(a.clone());
        }
        let mut b = MvReg::new();
        b.merge(&states[0]);
        b.merge(&states[2]);
        assert_eq!(b, a);
        assert!(b.context().cloud().is_empty());
    }

    #[test]
    fn a_clear_removes_what_it_saw_and_keeps_a_concurrent_write() {
        let (mut a, mut b) = (MvReg::new(), MvReg::new());
        a.write(1, Value::Bool(true), 1);
        b.merge(&a);
        b.clear(2);
        a.write(1, Value::Bool(false), 2);
        let a0 = a.clone();
        a.merge(&b);
        b.merge(&a0);
        assert_eq!(a, b);
        assert_eq!(values(&a), [Value::Bool(false)]);
        a.clear(1);
        assert!(a.siblings().is_empty());
        b.merge(&a);
        assert_eq!(b, a);
    }
}
