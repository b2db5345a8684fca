//! Add-wins observed-remove set (the dot kernel of delta-state CRDTs) with its own causal context.
//! Each present element keeps the dots of the adds that put it there; a remove drops those dots and the
//! context remembers them, so removes leave no tombstones. A concurrent add carries a dot the remover never
//! saw, so it survives: add wins.
//!
//! The set travels whole, with its context, in every delta and catch-up. The classic one-dot delta (new
//! dot, context = new + superseded dots) is only correct under causal delivery: received out of order it
//! lets a replica record a killing event as seen without learning what it killed, after which equal
//! contexts no longer imply equal state. `tla/DotKernelSet.tla` checks the whole-set protocol.
//!
//! Its events take their twin's dots, which the twin's other fields share, so between two set events of
//! one writer lie that writer's writes of other fields. A local event therefore covers every lower dot of
//! its writer in the set's context ([`Context::cover`]): the writer has seen all its own set events, and
//! the dots in between are no element's, so claiming them changes nothing for the set, and the context
//! stays one range per writer however the twin is written (it used to keep a cloud dot per gap). This
//! context is the set's alone: a delta must never claim it as its twin's context, or a receiver would take
//! the twin's other writes as seen without holding them (`DotKernelSet.tla`, mutant TwinClaimsSetContext).
use std::collections::BTreeMap;

use crate::context::{Context, Dot};

/// An OR-set: elements with their add dots, and every set event seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrSet {
    elems: BTreeMap<String, Vec<Dot>>,
    cc: Context,
}

impl OrSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set from decoded parts.
    pub fn from_parts(elems: impl IntoIterator<Item = (String, Vec<Dot>)>, cc: Context) -> Self {
        let mut s = OrSet { elems: BTreeMap::new(), cc };
        for (e, mut dots) in elems {
            dots.sort_unstable();
            dots.dedup();
            if !dots.is_empty() {
                s.elems.insert(e, dots);
            }
        }
        s
    }

    /// Whether `element` is present.
    pub fn contains(&self, element: &str) -> bool {
        self.elems.contains_key(element)
    }

    /// Present elements, sorted.
    pub fn elements(&self) -> impl Iterator<Item = &str> {
        self.elems.keys().map(String::as_str)
    }

    /// Present elements with their dots, sorted.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[Dot])> {
        self.elems.iter().map(|(e, d)| (e.as_str(), d.as_slice()))
    }

    /// Every set event seen (adds and removes).
    pub fn context(&self) -> &Context {
        &self.cc
    }

    /// Number of present elements.
    pub fn len(&self) -> usize {
        self.elems.len()
    }

    /// True when no element is present.
    pub fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }

    /// Adds `element` as the new local event `dot` (a dot above every dot of its writer seen so far),
    /// superseding the element's dots seen so far.
    pub fn add(&mut self, element: &str, dot: Dot) {
        self.elems.insert(element.to_owned(), vec![dot]);
        self.cc.cover(dot);
    }

    /// Removes `element` as the new local event `dot` (the adds this replica has seen; concurrent ones
    /// survive).
    pub fn remove(&mut self, element: &str, dot: Dot) {
        self.elems.remove(element);
        self.cc.cover(dot);
    }

    /// Join. A dot survives if both sides have it, or if the side lacking it has never seen it.
    /// Idempotent, commutative, associative. Returns whether anything changed.
    pub fn merge(&mut self, other: &OrSet) -> bool {
        let mut changed = false;
        let (ctx, other_ctx) = (&self.cc, &other.cc);
        self.elems.retain(|element, dots| {
            let theirs = other.elems.get(element).map(Vec::as_slice).unwrap_or(&[]);
            let before = dots.len();
            dots.retain(|d| theirs.binary_search(d).is_ok() || !other_ctx.contains(*d));
            changed |= dots.len() != before;
            !dots.is_empty()
        });
        for (element, theirs) in &other.elems {
            let fresh: Vec<Dot> = theirs.iter().copied().filter(|d| !ctx.contains(*d)).collect();
            if fresh.is_empty() {
                continue;
            }
            let dots = self.elems.entry(element.clone()).or_default();
            let before = dots.len();
            dots.extend(fresh);
            dots.sort_unstable();
            dots.dedup();
            changed |= dots.len() != before;
        }
        if !self.cc.includes(&other.cc) {
            self.cc.union(&other.cc);
            changed = true;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counterexample TLC found against one-dot deltas: add, add, add at one replica; the peer sees the
    /// first and the third only. With whole-set deltas it still ends equal to the origin.
    #[test]
    fn out_of_order_adds_cannot_leave_a_stale_dot() {
        let mut a = OrSet::new();
        let mut states = Vec::new();
        for k in 1..=3 {
            a.add("x", Dot::new(1, k));
            states.push(a.clone());
        }
        let mut b = OrSet::new();
        b.merge(&states[0]);
        b.merge(&states[2]);
        assert_eq!(b, a);
        a.remove("x", Dot::new(1, 4));
        b.merge(&a);
        assert!(!b.contains("x"));
    }
}
