//! Last-writer-wins register. One entry per field, replaced in place: an overwrite costs no memory and leaves
//! no tombstone. Order: HLC stamp, then writer id, then the writer's event counter, so every pair of writes
//! is ordered the same way on every replica.
use crate::clock::Stamp;
use crate::context::{Dot, ReplicaId};
use crate::value::Value;

/// An LWW register entry: the value and the event that wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct LwwReg {
    /// Current value.
    pub value: Value,
    /// HLC stamp of the write (for sensor readings: the source time).
    pub stamp: Stamp,
    /// The event that wrote it.
    pub dot: Dot,
}

/// The total order of writes: stamp, then writer, then event counter.
pub fn order_key(stamp: Stamp, dot: Dot) -> (Stamp, ReplicaId, u64) {
    (stamp, dot.replica, dot.counter)
}

impl LwwReg {
    /// A register holding `value`, written by `dot` at `stamp`.
    pub fn new(value: Value, stamp: Stamp, dot: Dot) -> Self {
        Self { value, stamp, dot }
    }

    /// Whether this write wins over `other`.
    pub fn wins_over(&self, other: &LwwReg) -> bool {
        order_key(self.stamp, self.dot) > order_key(other.stamp, other.dot)
    }

    /// Join: keep the winning write. Idempotent, commutative, associative.
    pub fn merge(&mut self, other: &LwwReg) {
        if other.wins_over(self) {
            *self = other.clone();
        }
    }
}
