//! Causal contexts: which events (dots) a replica has seen. A compact version vector of contiguous dots per
//! writer plus a small cloud of dots beyond them. Removes and overwrites leave no tombstones: a dot that is
//! in the context but no longer in the data was overwritten or removed.

/// Replica (writer) id.
pub type ReplicaId = u64;

/// One event: the `counter`-th event of `replica` on a twin. Counters start at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// Writer of the event.
    pub replica: ReplicaId,
    /// Its sequence number on that writer, from 1.
    pub counter: u64,
}

impl Dot {
    /// A dot.
    pub const fn new(replica: ReplicaId, counter: u64) -> Self {
        Self { replica, counter }
    }
}

/// A causal context. Canonical: `vv` sorted by replica with no zero entries; `cloud` sorted, every dot
/// beyond its replica's contiguous range and not adjacent to it.
///
/// Every twin holds one, and most have seen a single writer and no gaps: one range is kept inline and an
/// empty cloud costs one null pointer, so such a context is 32 bytes with no allocation (it was 48 bytes
/// plus a 32-byte heap block: 48 MB of a million-twin node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Context {
    vv: Ranges,
    cloud: Cloud,
}

const _: () = assert!(std::mem::size_of::<Context>() == 32);

/// The version vector: one range inline, more on the heap. Canonical (`Many` never holds exactly one), so
/// the derived equality and hash are those of the slice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Ranges {
    One([(ReplicaId, u64); 1]),
    Many(Vec<(ReplicaId, u64)>),
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges::Many(Vec::new())
    }
}

impl std::ops::Deref for Ranges {
    type Target = [(ReplicaId, u64)];
    fn deref(&self) -> &Self::Target {
        match self {
            Ranges::One(one) => one,
            Ranges::Many(v) => v,
        }
    }
}

impl std::ops::DerefMut for Ranges {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Ranges::One(one) => one,
            Ranges::Many(v) => v,
        }
    }
}

impl Ranges {
    fn from_vec(mut v: Vec<(ReplicaId, u64)>) -> Self {
        match v.len() {
            1 => Ranges::One([v[0]]),
            _ => {
                v.shrink_to_fit();
                Ranges::Many(v)
            }
        }
    }

    /// Changes the ranges as a vector (growing past one range, or shrinking back to it, changes the form).
    fn edit<R>(&mut self, f: impl FnOnce(&mut Vec<(ReplicaId, u64)>) -> R) -> R {
        let mut v = match std::mem::take(self) {
            Ranges::One(one) => {
                let mut v = Vec::with_capacity(2);
                v.push(one[0]);
                v
            }
            Ranges::Many(v) => v,
        };
        let out = f(&mut v);
        *self = Ranges::from_vec(v);
        out
    }

    fn insert(&mut self, i: usize, range: (ReplicaId, u64)) {
        if self.is_empty() {
            *self = Ranges::One([range]);
        } else {
            self.edit(|v| v.insert(i, range));
        }
    }
}

/// Dots beyond the contiguous ranges: rare (out-of-order delivery), so an empty cloud is a null pointer.
/// Canonical: never an empty vector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[allow(clippy::box_collection)] // a thin pointer: 8 bytes when empty, where a Vec is 24
struct Cloud(Option<Box<Vec<Dot>>>);

impl std::ops::Deref for Cloud {
    type Target = [Dot];
    fn deref(&self) -> &[Dot] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl Cloud {
    fn from_vec(mut v: Vec<Dot>) -> Self {
        if v.is_empty() {
            Cloud(None)
        } else {
            v.shrink_to_fit();
            Cloud(Some(Box::new(v)))
        }
    }

    fn take(&mut self) -> Vec<Dot> {
        self.0.take().map(|b| *b).unwrap_or_default()
    }
}

impl Context {
    /// The empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no event has been seen.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// Contiguous range `1..=max` seen of `replica`.
    pub fn contiguous(&self, replica: ReplicaId) -> u64 {
        match self.vv.binary_search_by_key(&replica, |e| e.0) {
            Ok(i) => self.vv[i].1,
            Err(_) => 0,
        }
    }

    /// Whether the event `dot` has been seen.
    pub fn contains(&self, dot: Dot) -> bool {
        dot.counter <= self.contiguous(dot.replica) || self.cloud.binary_search(&dot).is_ok()
    }

    /// Highest counter seen of `replica`, contiguous or not.
    pub fn max_counter(&self, replica: ReplicaId) -> u64 {
        let cloud_max = self.cloud.iter().filter(|d| d.replica == replica).map(|d| d.counter).max();
        cloud_max.unwrap_or(0).max(self.contiguous(replica))
    }

    /// The dot of the next local event of `replica`.
    pub fn next_dot(&self, replica: ReplicaId) -> Dot {
        Dot::new(replica, self.max_counter(replica) + 1)
    }

    /// Records `dot` as seen.
    pub fn insert(&mut self, dot: Dot) {
        if dot.counter == 0 || self.contains(dot) {
            return;
        }
        // The common case, a writer's next event with no cloud to absorb: extend its range in place (the
        // general path allocates while compacting).
        if self.cloud.is_empty() {
            match self.vv.binary_search_by_key(&dot.replica, |e| e.0) {
                Ok(i) if self.vv[i].1 + 1 == dot.counter => {
                    self.vv[i].1 = dot.counter;
                    return;
                }
                Err(i) if dot.counter == 1 => {
                    self.vv.insert(i, (dot.replica, 1));
                    return;
                }
                _ => {}
            }
        }
        let mut cloud = self.cloud.take();
        let pos = cloud.binary_search(&dot).unwrap_or_else(|p| p);
        cloud.insert(pos, dot);
        self.cloud = Cloud(Some(Box::new(cloud)));
        self.compact();
    }

    /// Records every event of `dot`'s writer up to `dot` as seen: what a writer's own event may claim of
    /// the writer's earlier events in a context kept for one field only (an OR-set's, see `orset`), where
    /// the dots in between that belong to other fields are no event of that field. Drops the writer's
    /// cloud dots the range now holds.
    pub fn cover(&mut self, dot: Dot) {
        if dot.counter <= self.contiguous(dot.replica) {
            return;
        }
        match self.vv.binary_search_by_key(&dot.replica, |e| e.0) {
            Ok(i) => self.vv[i].1 = dot.counter,
            Err(i) => self.vv.insert(i, (dot.replica, dot.counter)),
        }
        if self.cloud.iter().any(|d| d.replica == dot.replica) {
            let mut cloud = self.cloud.take();
            cloud.retain(|d| d.replica != dot.replica || d.counter > dot.counter);
            self.cloud = Cloud::from_vec(cloud);
            self.compact();
        }
    }

    /// Joins `other` into this context.
    pub fn union(&mut self, other: &Context) {
        for &(replica, max) in other.vv.iter() {
            match self.vv.binary_search_by_key(&replica, |e| e.0) {
                Ok(i) => self.vv[i].1 = self.vv[i].1.max(max),
                Err(i) => self.vv.insert(i, (replica, max)),
            }
        }
        if !other.cloud.is_empty() {
            let mut cloud = self.cloud.take();
            cloud.extend(other.cloud.iter().copied());
            cloud.sort_unstable();
            cloud.dedup();
            self.cloud = Cloud(Some(Box::new(cloud)));
        }
        self.compact();
    }

    /// Whether every event of `other` is in this context.
    pub fn includes(&self, other: &Context) -> bool {
        other.vv.iter().all(|&(r, max)| {
            let have = self.contiguous(r);
            have >= max || (have + 1..=max).all(|c| self.cloud.binary_search(&Dot::new(r, c)).is_ok())
        }) && other.cloud.iter().all(|&d| self.contains(d))
    }

    /// Releases spare capacity (contexts kept per field stay small; both parts are kept exact already).
    pub fn shrink_to_fit(&mut self) {
        if let Ranges::Many(v) = &mut self.vv {
            v.shrink_to_fit();
        }
    }

    /// Contiguous ranges, sorted by replica.
    pub fn ranges(&self) -> &[(ReplicaId, u64)] {
        &self.vv
    }

    /// Dots beyond the contiguous ranges, sorted.
    pub fn cloud(&self) -> &[Dot] {
        &self.cloud
    }

    /// Every replica that appears in the context, ascending.
    pub fn replicas(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        let mut all: Vec<ReplicaId> = self.vv.iter().map(|e| e.0).chain(self.cloud.iter().map(|d| d.replica)).collect();
        all.sort_unstable();
        all.dedup();
        all.into_iter()
    }

    /// Builds a context from ranges and cloud dots in any order (decoding); returns it in canonical form.
    pub fn from_parts(
        ranges: impl IntoIterator<Item = (ReplicaId, u64)>,
        cloud: impl IntoIterator<Item = Dot>,
    ) -> Self {
        let mut vv: Vec<(ReplicaId, u64)> = ranges.into_iter().filter(|r| r.1 > 0).collect();
        vv.sort_unstable();
        // Keep the largest range per replica (sorted ascending, so the last of each run).
        vv.reverse();
        vv.dedup_by_key(|r| r.0);
        vv.reverse();
        let mut cloud: Vec<Dot> = cloud.into_iter().filter(|d| d.counter > 0).collect();
        cloud.sort_unstable();
        cloud.dedup();
        let mut ctx = Context { vv: Ranges::from_vec(vv), cloud: Cloud::from_vec(cloud) };
        ctx.compact();
        ctx
    }

    /// A stable 64-bit digest (FNV-1a over the canonical form): equal contexts, equal digests, on every
    /// platform and build.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |x: u64| {
            for b in x.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        feed(self.vv.len() as u64);
        for &(r, m) in self.vv.iter() {
            feed(r);
            feed(m);
        }
        feed(self.cloud.len() as u64);
        for d in self.cloud.iter() {
            feed(d.replica);
            feed(d.counter);
        }
        h
    }

    /// Moves cloud dots that became contiguous into the version vector.
    fn compact(&mut self) {
        let cloud = self.cloud.take();
        if cloud.is_empty() {
            return;
        }
        let mut kept = Vec::with_capacity(cloud.len());
        self.vv.edit(|vv| {
            for dot in cloud {
                let i = match vv.binary_search_by_key(&dot.replica, |e| e.0) {
                    Ok(i) => i,
                    Err(i) => {
                        vv.insert(i, (dot.replica, 0));
                        i
                    }
                };
                let max = &mut vv[i].1;
                if dot.counter == *max + 1 {
                    *max += 1;
                } else if dot.counter > *max {
                    kept.push(dot);
                }
            }
            vv.retain(|e| e.1 > 0);
        });
        self.cloud = Cloud::from_vec(kept);
        // The cloud is sorted by (replica, counter), so one pass absorbs runs; a second catches nothing new
        // unless a run was split across replicas, which sorting prevents.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_dots_compact_into_the_vector() {
        let mut c = Context::new();
        c.insert(Dot::new(7, 3));
        c.insert(Dot::new(7, 1));
        assert_eq!(c.contiguous(7), 1);
        assert!(c.contains(Dot::new(7, 3)) && !c.contains(Dot::new(7, 2)));
        c.insert(Dot::new(7, 2));
        assert_eq!(c.contiguous(7), 3);
        assert!(c.cloud().is_empty());
        assert_eq!(c.next_dot(7), Dot::new(7, 4));
    }

    #[test]
    fn cover_claims_the_writer_up_to_the_dot_and_absorbs_its_cloud() {
        let mut c = Context::from_parts([(1, 2), (2, 1)], [Dot::new(1, 5), Dot::new(1, 9), Dot::new(2, 4)]);
        c.cover(Dot::new(1, 7));
        assert_eq!(c, Context::from_parts([(1, 7), (2, 1)], [Dot::new(1, 9), Dot::new(2, 4)]));
        c.cover(Dot::new(1, 8));
        assert_eq!(c, Context::from_parts([(1, 9), (2, 1)], [Dot::new(2, 4)]));
        c.cover(Dot::new(1, 3));
        c.cover(Dot::new(3, 2));
        assert_eq!(c, Context::from_parts([(1, 9), (2, 1), (3, 2)], [Dot::new(2, 4)]));
    }

    #[test]
    fn includes_sees_gaps() {
        let a = Context::from_parts([(1, 2)], [Dot::new(1, 5)]);
        let b = Context::from_parts([(1, 5)], []);
        assert!(b.includes(&a));
        assert!(!a.includes(&b));
        let mut u = a.clone();
        u.union(&b);
        assert_eq!(u, b);
        assert_ne!(a.digest(), b.digest());
    }
}
