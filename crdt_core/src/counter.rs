//! PN-counter: one (increments, decrements) pair per writer, each with the dot of that writer's last update
//! so a catch-up ships only the pairs a peer has not seen. Only a writer changes its own pair, so the join is
//! the per-writer maximum.
use crate::context::{Dot, ReplicaId};

/// One writer's share of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterEntry {
    /// The writer.
    pub replica: ReplicaId,
    /// Counter of the writer's last event that touched this counter.
    pub counter: u64,
    /// Sum of its increments (never negative, at most `i64::MAX`).
    pub increments: u64,
    /// Sum of its decrements (never negative, at most `i64::MAX`).
    pub decrements: u64,
}

impl CounterEntry {
    /// The dot of the writer's last update.
    pub fn dot(&self) -> Dot {
        Dot::new(self.replica, self.counter)
    }
}

/// A PN-counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PnCounter {
    entries: Vec<CounterEntry>,
}

impl PnCounter {
    /// A zero counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// The total, if it fits in an i64.
    pub fn value(&self) -> Option<i64> {
        let total: i128 = self.entries.iter().map(|e| i128::from(e.increments) - i128::from(e.decrements)).sum();
        i64::try_from(total).ok()
    }

    /// Per-writer entries, sorted by writer.
    pub fn entries(&self) -> &[CounterEntry] {
        &self.entries
    }

    /// Applies `amount` (negative: a decrement) as event `dot`. Returns the updated entry (the delta), or
    /// `None` when a sum or the total would leave the 64-bit range (nothing changes then).
    pub fn apply(&mut self, dot: Dot, amount: i64) -> Option<CounterEntry> {
        let mut next = self.entry(dot.replica).unwrap_or(CounterEntry {
            replica: dot.replica,
            counter: 0,
            increments: 0,
            decrements: 0,
        });
        let limit = i64::MAX as u64;
        if amount >= 0 {
            next.increments = next.increments.checked_add(amount as u64).filter(|v| *v <= limit)?;
        } else {
            next.decrements = next.decrements.checked_add(amount.unsigned_abs()).filter(|v| *v <= limit)?;
        }
        next.counter = dot.counter;
        let mut trial = self.clone();
        trial.join_entry(next);
        trial.value()?;
        *self = trial;
        Some(next)
    }

    /// One writer's entry.
    pub fn entry(&self, replica: ReplicaId) -> Option<CounterEntry> {
        self.entries.binary_search_by_key(&replica, |e| e.replica).ok().map(|i| self.entries[i])
    }

    /// Joins one writer's entry: the per-component maximum. Returns whether anything changed.
    pub fn join_entry(&mut self, e: CounterEntry) -> bool {
        match self.entries.binary_search_by_key(&e.replica, |x| x.replica) {
            Ok(i) => {
                let cur = &mut self.entries[i];
                let next = CounterEntry {
                    replica: e.replica,
                    counter: cur.counter.max(e.counter),
                    increments: cur.increments.max(e.increments),
                    decrements: cur.decrements.max(e.decrements),
                };
                let changed = next != *cur;
                *cur = next;
                changed
            }
            Err(i) => {
                self.entries.insert(i, e);
                true
            }
        }
    }

    /// Join. Idempotent, commutative, associative.
    pub fn merge(&mut self, other: &PnCounter) -> bool {
        other.entries.iter().fold(false, |changed, e| self.join_entry(*e) | changed)
    }
}
