//! A request's counter, set and desired-value events as one batch with one delta.
//!
//! [`Store::increment`], [`Store::set_ops`], [`Store::desire`] and [`Store::clear_desired`] each return a
//! delta; an API request that touches a few hundred such fields joined a few hundred deltas, which cost
//! more than the writes. [`Store::write_ops`] applies the same events, in the same order and with the
//! same dots and stamps, and returns one delta: the join of the deltas the calls one by one would have
//! returned (per twin, the events' dots and each touched field as its last delta carries it: a counter's
//! own entry, a set or a multi-value register whole). Every op is checked before anything applies, so an
//! error leaves the store as it was. [`Store::write_mixed`] puts a batch of f64 readings
//! ([`Store::write_batch`]) in front, all or nothing, with one delta for both.
use hashbrown::{HashMap, HashSet};

use crate::context::Dot;
use crate::counter::PnCounter;
use crate::error::{Error, Kind, Result};
use crate::store::{unreachable_kind, CellRef, Store};
use crate::value::Value;

/// The events of one field in a batch of ops, applied in order, each its own event (dot).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldOps {
    /// PN-counter increments (negative: decrements), as [`Store::increment`] applies each.
    Increments(Vec<i64>),
    /// OR-set adds (`true`) and removes (`false`), as [`Store::set_ops`] applies them.
    Set(Vec<(bool, String)>),
    /// Desired values ([`Store::desire`]) and clears (`None`, [`Store::clear_desired`]).
    Desired(Vec<Option<Value>>),
}

impl FieldOps {
    fn kind(&self) -> Kind {
        match self {
            FieldOps::Increments(_) => Kind::Counter,
            FieldOps::Set(_) => Kind::Set,
            FieldOps::Desired(_) => Kind::MultiValue,
        }
    }

    fn len(&self) -> usize {
        match self {
            FieldOps::Increments(a) => a.len(),
            FieldOps::Set(s) => s.len(),
            FieldOps::Desired(d) => d.len(),
        }
    }
}

/// One field's ops: twin, field name, events.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldWrite {
    /// The twin's id.
    pub twin: String,
    /// The field's name (a desired field's as stored, e.g. `sp.desired`).
    pub field: String,
    /// What to apply, in order.
    pub ops: FieldOps,
}

impl FieldWrite {
    /// `ops` on `field` of `twin`.
    pub fn new(twin: impl Into<String>, field: impl Into<String>, ops: FieldOps) -> Self {
        Self { twin: twin.into(), field: field.into(), ops }
    }
}

/// What a twin's events of the batch touched, for its delta: their dots, and each field once (by kind).
#[derive(Debug, Default)]
pub(crate) struct Touched {
    pub(crate) dots: Vec<Dot>,
    pub(crate) fields: Vec<(u32, Kind)>,
}

impl Store {
    /// Applies every field's ops in order as the single calls would (one event each, the same dots and
    /// stamps) and returns one delta, the join of theirs. All or nothing: names, elements, values, field
    /// kinds (the store's and the batch's own) and counter overflow are checked first.
    pub fn write_ops(&mut self, writes: &[FieldWrite]) -> Result<Vec<u8>> {
        let ids = self.check_ops(writes, &HashSet::new())?;
        let touched = self.apply_ops(writes, &ids);
        self.encode_field_events(&touched, None)
    }

    /// [`Store::write_batch`] of f64 readings, then [`Store::write_ops`], all or nothing, with one delta
    /// (their join). A field both reported and written by an op is a type conflict.
    pub fn write_mixed(
        &mut self,
        twin_ids: &[u32],
        field_ids: &[u32],
        values: &[f64],
        source_ms: &[i64],
        writes: &[FieldWrite],
    ) -> Result<Vec<u8>> {
        let reported: HashSet<(u32, u32)> = if writes.is_empty() {
            HashSet::new()
        } else {
            twin_ids.iter().copied().zip(field_ids.iter().copied()).collect()
        };
        let ids = self.check_ops(writes, &reported)?;
        let batch =
            if twin_ids.is_empty() { None } else { Some(self.write_batch(twin_ids, field_ids, values, source_ms)?) };
        if writes.is_empty() {
            return batch.ok_or_else(|| Error::InvalidValue("write_mixed: nothing to write".into()));
        }
        let touched = self.apply_ops(writes, &ids);
        self.encode_field_events(&touched, batch.as_deref())
    }

    /// Each write's (twin id, field id) if every op may apply, else the first op's error. `reported`:
    /// the (twin, field) register writes that go with the ops (none may be an op's field).
    fn check_ops(&mut self, writes: &[FieldWrite], reported: &HashSet<(u32, u32)>) -> Result<Vec<(u32, u32)>> {
        let mut ids = Vec::with_capacity(writes.len());
        let mut kinds: HashMap<(u32, u32), Kind> = HashMap::new();
        let mut counters: HashMap<(u32, u32), PnCounter> = HashMap::new();
        for w in writes {
            if w.ops.len() == 0 {
                return Err(Error::InvalidValue(format!("{}.{}: no operation to apply", w.twin, w.field)));
            }
            match &w.ops {
                FieldOps::Set(ops) => {
                    for (_, element) in ops {
                        crate::intern::check_name(element, self.limits.max_name_bytes)?;
                    }
                }
                FieldOps::Desired(values) => {
                    for v in values.iter().flatten() {
                        v.validate()?;
                    }
                }
                FieldOps::Increments(_) => {}
            }
            let tid = self.intern_twin(&w.twin)?;
            let fid = self.intern_field(&w.field)?;
            let kind = w.ops.kind();
            let conflict = |existing| Error::TypeConflict {
                twin: w.twin.clone(),
                field: w.field.clone(),
                existing,
                requested: kind,
            };
            match kinds.get(&(tid, fid)) {
                Some(&existing) if existing != kind => return Err(conflict(existing)),
                Some(_) => {}
                None => {
                    if reported.contains(&(tid, fid)) {
                        return Err(conflict(Kind::Register));
                    }
                    self.check_kind(tid, fid, kind)?;
                    kinds.insert((tid, fid), kind);
                }
            }
            if let FieldOps::Increments(amounts) = &w.ops {
                let held = counters.entry((tid, fid)).or_insert_with(|| self.counter_of(tid, fid));
                for &amount in amounts {
                    if held.apply(Dot::new(self.replica, 1), amount).is_none() {
                        return Err(Error::CounterOverflow { twin: w.twin.clone(), field: w.field.clone() });
                    }
                }
            }
            ids.push((tid, fid));
        }
        Ok(ids)
    }

    /// A counter field's current state (empty if none).
    fn counter_of(&self, tid: u32, fid: u32) -> PnCounter {
        let t = self.twin(tid);
        match t.and_then(|t| t.find(fid, Kind::Counter).ok().map(|i| t.slots[i].cell())) {
            Some(CellRef::Counter(c)) => c.clone(),
            _ => PnCounter::new(),
        }
    }

    /// Applies checked writes (see `check_ops`); per twin (in order of first touch), what they touched.
    fn apply_ops(&mut self, writes: &[FieldWrite], ids: &[(u32, u32)]) -> Vec<(u32, Touched)> {
        let replica = self.replica;
        let mut out: Vec<(u32, Touched)> = Vec::new();
        let mut at: HashMap<u32, usize> = HashMap::new();
        for (w, &(tid, fid)) in writes.iter().zip(ids) {
            let k = *at.entry(tid).or_insert_with(|| {
                out.push((tid, Touched::default()));
                out.len() - 1
            });
            let kind = w.ops.kind();
            let touched = &mut out[k].1;
            if !touched.fields.contains(&(fid, kind)) {
                touched.fields.push((fid, kind));
            }
            match &w.ops {
                FieldOps::Increments(amounts) => {
                    for &amount in amounts {
                        self.now(); // as `increment` ticks the clock
                        let t = self.twin_mut(tid);
                        let dot = t.cc.next_dot(replica);
                        let i = t.slot_of(fid, Kind::Counter);
                        let Some(c) = t.slots[i].counter_mut() else { unreachable_kind() };
                        let applied = c.apply(dot, amount);
                        debug_assert!(applied.is_some(), "check_ops simulated every increment");
                        t.cc.insert(dot);
                        touched.dots.push(dot);
                    }
                }
                FieldOps::Set(ops) => {
                    self.now(); // as `set_ops` ticks the clock
                    let t = self.twin_mut(tid);
                    let i = t.slot_of(fid, Kind::Set);
                    for (add, element) in ops {
                        let dot = t.cc.next_dot(replica);
                        let Some(s) = t.slots[i].set_mut() else { unreachable_kind() };
                        if *add {
                            s.add(element, dot);
                        } else {
                            s.remove(element, dot);
                        }
                        t.cc.insert(dot);
                        touched.dots.push(dot);
                    }
                }
                FieldOps::Desired(values) => {
                    for value in values {
                        let stamp = self.now();
                        let t = self.twin_mut(tid);
                        let i = t.slot_of(fid, Kind::MultiValue);
                        let Some(r) = t.slots[i].multi_mut() else { unreachable_kind() };
                        match value {
                            Some(v) => r.write(replica, v.clone(), stamp),
                            None => r.clear(replica),
                        };
                        let dot = t.cc.next_dot(replica);
                        t.cc.insert(dot);
                        touched.dots.push(dot);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::FieldValue;

    fn store(replica: u64) -> Store {
        let mut s = Store::new(replica, 500);
        s.set_manual_time(Some(1_700_000_000_000));
        s
    }

    /// A batch touching every kind, with repeats of a twin and a field, clears and a set the store held.
    fn writes() -> Vec<FieldWrite> {
        use FieldOps::*;
        vec![
            FieldWrite::new("b", "n", Increments(vec![3, -1])),
            FieldWrite::new("a", "tags", Set(vec![(true, "x".into()), (true, "y".into()), (false, "old".into())])),
            FieldWrite::new("a", "sp.desired", Desired(vec![Some(Value::F64(1.5)), None, Some(Value::I64(2))])),
            FieldWrite::new("b", "tags", Set(vec![(false, "x".into())])),
            FieldWrite::new("a", "n", Increments(vec![i64::MAX - 10])),
            FieldWrite::new("b", "n", Increments(vec![7])),
        ]
    }

    /// The same events one call at a time, and their deltas.
    fn one_by_one(s: &mut Store, writes: &[FieldWrite]) -> Vec<Vec<u8>> {
        let mut deltas = Vec::new();
        for w in writes {
            let (t, f) = (w.twin.as_str(), w.field.as_str());
            match &w.ops {
                FieldOps::Increments(a) => a.iter().for_each(|&x| deltas.push(s.increment(t, f, x).unwrap())),
                FieldOps::Set(ops) => {
                    let refs: Vec<(bool, &str)> = ops.iter().map(|(a, e)| (*a, e.as_str())).collect();
                    deltas.push(s.set_ops(t, f, &refs).unwrap());
                }
                FieldOps::Desired(values) => values.iter().for_each(|v| {
                    deltas.push(match v {
                        Some(v) => s.desire(t, f, v.clone()).unwrap(),
                        None => s.clear_desired(t, f).unwrap(),
                    })
                }),
            }
        }
        deltas
    }

    /// Two stores with the same history: a peer's events merged, the set holding `old`.
    fn twins_with_history() -> (Store, Store) {
        let mut peer = store(9);
        let d = [peer.add("a", "tags", "old").unwrap(), peer.desire("a", "sp.desired", Value::F64(0.5)).unwrap()];
        let (mut x, mut y) = (store(7), store(7));
        for s in [&mut x, &mut y] {
            d.iter().for_each(|d| _ = s.merge(d).unwrap());
            s.set("a", "f", Value::F64(1.0)).unwrap();
        }
        (x, y)
    }

    /// The batch leaves the state the calls one by one leave (byte for byte), and its delta is the join
    /// of theirs (byte for byte): a peer merging either holds the same.
    #[test]
    fn a_batch_is_the_calls_one_by_one_with_their_joined_delta() {
        let (mut batched, mut single) = twins_with_history();
        let delta = batched.write_ops(&writes()).unwrap();
        let deltas = one_by_one(&mut single, &writes());
        assert_eq!(batched.encode_state(None), single.encode_state(None));
        let refs: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
        assert_eq!(delta, crate::codec::join(&refs, batched.limits()).unwrap());
        assert_eq!(batched.get("b", "n"), Some(FieldValue::Counter(9)));
        assert_eq!(batched.get("a", "tags"), Some(FieldValue::Set(vec!["x".to_owned(), "y".to_owned()])));
    }

    /// Merging the batch delta is idempotent and commutes with another replica's concurrent delta.
    #[test]
    fn the_batch_delta_merges_idempotently_and_commutes() {
        let (mut a, _) = twins_with_history();
        let delta = a.write_ops(&writes()).unwrap();
        let mut other = store(3);
        let theirs = other
            .write_ops(&[
                FieldWrite::new("a", "tags", FieldOps::Set(vec![(true, "x".into())])),
                FieldWrite::new("b", "n", FieldOps::Increments(vec![5])),
                FieldWrite::new("a", "sp.desired", FieldOps::Desired(vec![Some(Value::F64(4.0))])),
            ])
            .unwrap();
        let (mut p, mut q) = (store(1), store(2));
        p.merge(&delta).unwrap();
        p.merge(&theirs).unwrap();
        p.merge(&delta).unwrap();
        q.merge(&theirs).unwrap();
        q.merge(&delta).unwrap();
        assert_eq!(p.encode_state(None), q.encode_state(None));
        assert_eq!(p.get("b", "n"), Some(FieldValue::Counter(14)));
        // The concurrent add of x survives the batch's remove; both desired writes stay as a conflict.
        assert!(matches!(p.get("a", "tags"), Some(FieldValue::Set(s)) if s.iter().any(|e| e == "x")));
        assert!(matches!(p.get("a", "sp.desired"), Some(FieldValue::MultiValue(v)) if v.len() == 2));
    }

    /// A bad op anywhere in the batch (a kind conflict with the store or inside the batch, an overflow, a
    /// bad value, an element too long, a field also reported) changes nothing, and the error names it.
    #[test]
    fn a_bad_op_anywhere_changes_nothing() {
        use FieldOps::*;
        let long = "e".repeat(2000);
        let cases: Vec<(FieldWrite, &str)> = vec![
            (FieldWrite::new("a", "f", Increments(vec![1])), "\"f\" of twin \"a\" is a register"),
            (FieldWrite::new("b", "n", Set(vec![(true, "x".into())])), "\"n\" of twin \"b\" is a counter"),
            (FieldWrite::new("a", "n", Increments(vec![11])), "counter"),
            (FieldWrite::new("a", "sp.desired", Desired(vec![Some(Value::F64(f64::NAN))])), "NaN"),
            (FieldWrite::new("a", "tags", Set(vec![(true, long)])), "limit"),
            (FieldWrite::new("a", "e", Increments(vec![])), "a.e: no operation"),
        ];
        for (bad, why) in cases {
            let (mut s, _) = twins_with_history();
            let before = s.encode_state(None);
            let mut all = writes();
            all.insert(3, bad);
            let err = s.write_ops(&all).unwrap_err().to_string();
            assert!(err.contains(why), "{err} does not say {why}");
            assert_eq!(s.encode_state(None), before, "{err}");
        }
        let (mut s, _) = twins_with_history();
        let before = s.encode_state(None);
        let (t, f) = (s.intern_twin("a").unwrap(), s.intern_field("n").unwrap());
        let err = s.write_mixed(&[t], &[f], &[1.0], &[0], &writes()).unwrap_err().to_string();
        assert!(err.contains("\"n\" of twin \"a\" is a register"), "{err}");
        assert_eq!(s.encode_state(None), before);
        let err = s.write_mixed(&[t], &[f], &[f64::NAN], &[0], &writes()[..1]).unwrap_err().to_string();
        assert!(err.contains("non-finite"), "{err}");
        assert_eq!(s.encode_state(None), before);
    }

    /// f64 readings and ops together: the state of `write_batch` then the calls one by one, one delta
    /// equal to the join of theirs.
    #[test]
    fn write_mixed_is_the_batch_then_the_ops() {
        let (mut mixed, mut single) = twins_with_history();
        let ids = |s: &mut Store| {
            let t: Vec<u32> = ["b", "a", "b"].iter().map(|n| s.intern_twin(n).unwrap()).collect();
            let f: Vec<u32> = ["x", "f", "y"].iter().map(|n| s.intern_field(n).unwrap()).collect();
            (t, f)
        };
        let (t, f) = ids(&mut mixed);
        let delta = mixed.write_mixed(&t, &f, &[1.0, 2.0, 3.0], &[0, 0, 0], &writes()).unwrap();
        let (t, f) = ids(&mut single);
        let mut deltas = vec![single.write_batch(&t, &f, &[1.0, 2.0, 3.0], &[0, 0, 0]).unwrap()];
        deltas.extend(one_by_one(&mut single, &writes()));
        assert_eq!(mixed.encode_state(None), single.encode_state(None));
        let refs: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
        assert_eq!(delta, crate::codec::join(&refs, mixed.limits()).unwrap());
    }
}
