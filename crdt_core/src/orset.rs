//! Add-wins observed-remove set over a shared causal context (the dot kernel of delta-state CRDTs).
//! Each present element keeps the dots of the adds that put it there; a remove drops those dots, and the
//! context remembers them, so removes leave no tombstones. A concurrent add carries a dot the remover never
//! saw, so it survives: add wins.
use std::collections::BTreeMap;

use crate::context::{Context, Dot};

/// An OR-set's data; its causal context lives with the twin that owns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrSet {
    elems: BTreeMap<String, Vec<Dot>>,
}

impl OrSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
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

    /// Number of present elements.
    pub fn len(&self) -> usize {
        self.elems.len()
    }

    /// True when no element is present.
    pub fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }

    /// Adds `element` with the new event `dot`. Returns the dots it supersedes: the delta of this add is
    /// `{element: [dot]}` with context `superseded + dot`.
    pub fn add(&mut self, element: &str, dot: Dot) -> Vec<Dot> {
        let old = self.elems.insert(element.to_owned(), vec![dot]);
        old.unwrap_or_default()
    }

    /// Removes `element`. Returns the dots removed: the delta of this remove is the empty set with context
    /// `removed` (plus the remove's own event).
    pub fn remove(&mut self, element: &str) -> Vec<Dot> {
        self.elems.remove(element).unwrap_or_default()
    }

    /// Inserts one element's dots as decoded (no context logic; used to build delta sets).
    pub fn insert_dots(&mut self, element: String, mut dots: Vec<Dot>) {
        dots.sort_unstable();
        dots.dedup();
        if !dots.is_empty() {
            self.elems.insert(element, dots);
        }
    }

    /// Join of `(self, ctx)` with `(other, other_ctx)`; the caller joins the contexts afterwards.
    /// A dot survives if both sides have it, or if the side lacking it has never seen it.
    pub fn merge(&mut self, ctx: &Context, other: &OrSet, other_ctx: &Context) -> bool {
        let mut changed = false;
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
        changed
    }
}
