//! The ingest hot path: `Store::write_batch`, numeric readings by interned id, one event (dot) per twin,
//! and the delta of the whole batch encoded once at the end.
//!
//! Profiles of the first version showed two hash maps per reading (one to find the twin's event, one to
//! merge repeated fields), a binary search per reading, twice, and a delta built through per-twin vectors.
//! Here a reading costs an array index for its twin, a hinted slot lookup (the slot after the previous one
//! is tried first: a batch usually lists a twin's fields in the order they were interned) and one
//! compare-and-store; repeated fields are looked for only in a twin whose fields do not arrive in
//! ascending id order, and the delta is written straight into its bytes.
use hashbrown::HashMap;

use crate::clock::{stamp_at, Stamp};
use crate::codec::fast;
use crate::codec::FORMAT;
use crate::context::Dot;
use crate::error::{Error, Kind, Result};
use crate::lww::order_key;
use crate::store::{Cell, Ev, Slot, Store, Twin};

/// One twin's event in a batch.
struct Event {
    twin: u32,
    counter: u64,
    /// Its entry in the twin's event table.
    ev: Ev,
    /// Index of its first reading in the batch.
    start: usize,
    last_field: u32,
    /// Its fields arrived in strictly ascending id order, so none repeats.
    ascending: bool,
}

/// What validating a batch learned: the newest source stamp, and where each reading's register is.
struct Checked {
    max_source: Stamp,
    /// Per reading, the index of its register slot, or `NEW`.
    slots: Vec<u32>,
    /// Readings whose register does not exist yet (their slots are inserted, moving the others).
    new: usize,
}

const NEW: u32 = u32::MAX;

impl Twin {
    /// The register slot of `field` (`Ok`), or where it would go (`Err`), trying `hint` first. A field
    /// that holds only another kind is a `TypeConflict` for a register write.
    #[inline]
    fn register_slot(&self, field: u32, hint: usize) -> std::result::Result<usize, usize> {
        if let Some(s) = self.slots.get(hint) {
            if s.field() == field && s.kind() == Kind::Register {
                return Ok(hint);
            }
        }
        self.find(field, Kind::Register)
    }

    /// Whether `field` holds a kind other than a register (registers sort first among a field's slots, so
    /// such a slot sits where the register would be inserted).
    fn other_kind_at(&self, field: u32, at: usize) -> Option<Kind> {
        self.slots.get(at).filter(|s| s.field() == field).map(Slot::kind)
    }

    /// Inserts a slot, growing the vector by an eighth (at least 2 slots) rather than doubling it: a twin's
    /// fields are added once and then overwritten in place, so spare capacity would be kept for good. Steps
    /// of 2 below 16 slots keep a 10-field twin at 10 slots, not 12 (80 MB of a million-twin node); the
    /// extra reallocations happen once per field, when it is created.
    pub(crate) fn insert_slot(&mut self, at: usize, slot: Slot) {
        if self.slots.len() == self.slots.capacity() {
            self.slots.reserve_exact((self.slots.len() / 8).max(2));
        }
        self.slots.insert(at, slot);
    }
}

impl Store {
    /// The batch write of the ingest hot path: parallel arrays of interned twin ids, interned field ids,
    /// finite f64 values and source times in ms (`<= 0`: stamp with the clock). One event (dot) per twin;
    /// a reading stamped with its source time loses to a newer reading already present (a late arrival),
    /// so the register holds the newest measurement. The whole batch is validated before anything applies.
    pub fn write_batch(
        &mut self,
        twin_ids: &[u32],
        field_ids: &[u32],
        values: &[f64],
        source_ms: &[i64],
    ) -> Result<Vec<u8>> {
        let n = twin_ids.len();
        if field_ids.len() != n || values.len() != n || source_ms.len() != n {
            return Err(Error::InvalidValue(format!(
                "batch arrays differ in length: twins {n}, fields {}, values {}, source times {}",
                field_ids.len(),
                values.len(),
                source_ms.len()
            )));
        }
        let phys = self.physical_now();
        let checked = self.check_batch(twin_ids, field_ids, values, source_ms, phys)?;
        let now = self.hlc.now(phys);
        if checked.max_source > 0 {
            self.hlc.update(checked.max_source, phys)?;
        }
        let wix = self.writer_ix(self.replica);
        let replica = self.replica;
        let mut events: Vec<Event> = Vec::new();
        let mut event_of: HashMap<u32, u32> = HashMap::new();
        let mut in_runs = true;
        let mut ev = 0usize;
        let mut hint = 0usize;
        for i in 0..n {
            let (tid, fid, value) = (twin_ids[i], field_ids[i], values[i]);
            let stamp = if source_ms[i] > 0 { stamp_at(source_ms[i] as u64) } else { now };
            // The twin's event: the current one (a run of one twin's readings), or one seen earlier, or new.
            let mut fresh = false;
            if events.get(ev).is_none_or(|e| e.twin != tid) {
                ev = match event_of.get(&tid) {
                    Some(&e) => {
                        in_runs = false;
                        e as usize
                    }
                    None => {
                        let t = self.twin_mut(tid);
                        let counter = t.cc.next_dot(replica).counter;
                        let table_ev = t.event(wix, counter);
                        event_of.insert(tid, events.len() as u32);
                        events.push(Event {
                            twin: tid,
                            counter,
                            ev: table_ev,
                            start: i,
                            last_field: fid,
                            ascending: true,
                        });
                        fresh = true;
                        events.len() - 1
                    }
                };
            }
            if !fresh {
                let e = &mut events[ev];
                e.ascending &= e.last_field < fid;
                e.last_field = fid;
            }
            let (counter, event) = (events[ev].counter, events[ev].ev);
            let Some(t) = self.twins.get_mut(tid as usize).and_then(Option::as_mut) else {
                unreachable!("the twin's event created it")
            };
            let found = if checked.new == 0 { Ok(checked.slots[i] as usize) } else { t.register_slot(fid, hint) };
            match found {
                Ok(j) => {
                    hint = j + 1;
                    let cur = &t.slots[j];
                    // The LWW order (stamp, writer, counter); a later reading of this batch (same writer and
                    // counter) replaces an earlier one on an equal stamp.
                    let wins = stamp > cur.stamp()
                        || (stamp == cur.stamp() && {
                            let (w, cur_counter) = t.write_of(cur);
                            let cur_writer = self.writers.get(w as usize).copied().unwrap_or(0);
                            order_key(stamp, Dot::new(replica, counter))
                                >= order_key(cur.stamp(), Dot::new(cur_writer, cur_counter))
                        });
                    if wins {
                        t.slots[j] = Slot::register(fid, event, stamp, Cell::F64(value));
                    } else {
                        self.superseded += 1;
                    }
                }
                Err(j) => {
                    hint = j + 1;
                    t.insert_slot(j, Slot::register(fid, event, stamp, Cell::F64(value)));
                }
            }
        }
        for e in &events {
            self.twin_mut(e.twin).cc.insert(Dot::new(replica, e.counter));
        }
        let batch = Batch { twin_ids, field_ids, values, source_ms, now };
        // When a twin's readings were interleaved with another's, each event's readings are gathered (in batch
        // order) through a permutation.
        let order: Option<Vec<u32>> = (!in_runs).then(|| {
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by_key(|&i| event_of.get(&twin_ids[i as usize]).copied().unwrap_or(0));
            order
        });
        Ok(self.encode_batch(&events, &batch, order.as_deref()))
    }

    /// Validates a batch before anything applies (ids interned, values finite, source times within the
    /// clock gate, no field of another kind) and finds each reading's register.
    fn check_batch(
        &self,
        twin_ids: &[u32],
        field_ids: &[u32],
        values: &[f64],
        source_ms: &[i64],
        phys: u64,
    ) -> Result<Checked> {
        let (twins, fields) = (self.twin_names.len(), self.field_names.len());
        let mut checked = Checked { max_source: 0, slots: Vec::with_capacity(twin_ids.len()), new: 0 };
        let mut hint = 0usize;
        for i in 0..twin_ids.len() {
            let (t, f, v, s) = (twin_ids[i], field_ids[i], values[i], source_ms[i]);
            if t as usize >= twins {
                return Err(Error::Unknown(format!("twin id {t} at index {i} was never interned")));
            }
            if f as usize >= fields {
                return Err(Error::Unknown(format!("field id {f} at index {i} was never interned")));
            }
            if !v.is_finite() {
                return Err(Error::InvalidValue(format!("non-finite float {v} at index {i}")));
            }
            if s > 0 {
                let stamp = stamp_at(s as u64);
                self.hlc.check(stamp, phys)?;
                checked.max_source = checked.max_source.max(stamp);
            }
            let Some(twin) = self.twin(t) else {
                checked.slots.push(NEW);
                checked.new += 1;
                continue;
            };
            match twin.register_slot(f, hint) {
                Ok(j) => {
                    hint = j + 1;
                    checked.slots.push(j as u32);
                }
                Err(j) => {
                    hint = j;
                    if let Some(existing) = twin.other_kind_at(f, j) {
                        return Err(Error::TypeConflict {
                            twin: self.twin_names.name(t).to_owned(),
                            field: self.field_names.name(f).to_owned(),
                            existing,
                            requested: Kind::Register,
                        });
                    }
                    checked.slots.push(NEW);
                    checked.new += 1;
                }
            }
        }
        Ok(checked)
    }

    /// The batch's delta: per twin (sorted by name, as every delta), its event's dot and what it wrote, one
    /// value per field (a field repeated in the batch carries the reading that won inside it, at the place
    /// of its first reading). Written directly as protobuf bytes; the tests prove them equal to prost's.
    /// `order` gathers each event's readings when twins were interleaved (else each event is a run).
    fn encode_batch(&self, events: &[Event], batch: &Batch<'_>, order: Option<&[u32]>) -> Vec<u8> {
        let n = batch.twin_ids.len();
        let mut by_name: Vec<usize> = (0..events.len()).collect();
        if events.len() > 1 {
            by_name.sort_unstable_by(|&a, &b| {
                self.twin_names.name(events[a].twin).cmp(self.twin_names.name(events[b].twin))
            });
        }
        // Each event's readings: a run of the batch, or a run of `order`.
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(events.len());
        match order {
            None => {
                for (e, event) in events.iter().enumerate() {
                    spans.push((event.start, events.get(e + 1).map_or(n, |next| next.start)));
                }
            }
            Some(order) => {
                let mut start = 0;
                for chunk in order.chunk_by(|&a, &b| batch.twin_ids[a as usize] == batch.twin_ids[b as usize]) {
                    spans.push((start, start + chunk.len()));
                    start += chunk.len();
                }
            }
        }
        let mut out = Vec::with_capacity(16 + events.len() * 32 + n * 18);
        fast::key(1, 0, &mut out);
        fast::varint(FORMAT as u64, &mut out);
        fast::packed_varints(2, &[self.replica], &mut out);
        let mut group = Vec::with_capacity(16 + n * 16);
        for e in by_name {
            let event = &events[e];
            let (a, b) = spans[e];
            group.clear();
            match order {
                _ if !event.ascending => {
                    let indices: Vec<usize> = match order {
                        None => (a..b).collect(),
                        Some(order) => order[a..b].iter().map(|&i| i as usize).collect(),
                    };
                    let merged = merge_repeats(indices.into_iter().map(|i| batch.reading(i)));
                    self.encode_numeric_group(event.counter, merged.iter().copied(), &mut group);
                }
                None => self.encode_numeric_group(event.counter, (a..b).map(|i| batch.reading(i)), &mut group),
                Some(order) => self.encode_numeric_group(
                    event.counter,
                    order[a..b].iter().map(|&i| batch.reading(i as usize)),
                    &mut group,
                ),
            }
            let name = self.twin_names.name(event.twin);
            // Context {writers: [0], max: [counter]} for counter 1; a cloud dot otherwise.
            let counter_len = fast::varint_len(event.counter);
            let ctx_len = if event.counter == 1 { 6 } else { 5 + counter_len };
            let twin_len = 1
                + fast::varint_len(name.len() as u64)
                + name.len()
                + 2
                + ctx_len
                + 1
                + fast::varint_len(group.len() as u64)
                + group.len();
            fast::key(3, 2, &mut out);
            fast::varint(twin_len as u64, &mut out);
            fast::string(1, name, &mut out);
            fast::key(2, 2, &mut out);
            fast::varint(ctx_len as u64, &mut out);
            if event.counter == 1 {
                out.extend_from_slice(&[0x0a, 0x01, 0x00, 0x12, 0x01, 0x01]);
            } else {
                out.extend_from_slice(&[0x1a, 0x01, 0x00, 0x22]);
                fast::varint(counter_len as u64, &mut out);
                fast::varint(event.counter, &mut out);
            }
            fast::message(3, &group, &mut out);
        }
        out
    }

    /// One WriteGroup of numeric readings (writer index 0: the only writer of a local event's delta).
    fn encode_numeric_group(&self, counter: u64, writes: impl Iterator<Item = Reading> + Clone, out: &mut Vec<u8>) {
        let base = writes.clone().map(|w| w.stamp).min().unwrap_or(0);
        fast::key(2, 0, out);
        fast::varint(counter, out);
        if base != 0 {
            fast::key(3, 0, out);
            fast::varint(base, out);
        }
        let mut count = 0usize;
        for w in writes.clone() {
            let name = self.field_names.name(w.field).as_bytes();
            if name.len() < 0x80 {
                out.extend_from_slice(&[0x22, name.len() as u8]);
                out.extend_from_slice(name);
            } else {
                fast::bytes(4, name, out);
            }
            count += 1;
        }
        fast::key(6, 2, out);
        fast::varint((count * 8) as u64, out);
        for w in writes.clone() {
            out.extend_from_slice(&w.value.to_le_bytes());
        }
        if writes.clone().any(|w| w.stamp != base) {
            let offsets: Vec<u64> = writes.map(|w| w.stamp - base).collect();
            fast::packed_varints(11, &offsets, out);
        }
    }
}

/// One reading, as its event wrote it.
#[derive(Clone, Copy)]
struct Reading {
    field: u32,
    stamp: Stamp,
    value: f64,
}

/// The batch's arrays, to read its readings back for the delta.
struct Batch<'a> {
    twin_ids: &'a [u32],
    field_ids: &'a [u32],
    values: &'a [f64],
    source_ms: &'a [i64],
    now: Stamp,
}

impl Batch<'_> {
    fn reading(&self, i: usize) -> Reading {
        let s = self.source_ms[i];
        Reading {
            field: self.field_ids[i],
            stamp: if s > 0 { stamp_at(s as u64) } else { self.now },
            value: self.values[i],
        }
    }
}

/// One reading per field, at the place of the field's first reading, holding the one that won inside the
/// batch: the newest stamp, the later reading on a tie.
fn merge_repeats(writes: impl Iterator<Item = Reading>) -> Vec<Reading> {
    let mut position: HashMap<u32, usize> = HashMap::new();
    let mut out: Vec<Reading> = Vec::new();
    for w in writes {
        match position.entry(w.field) {
            hashbrown::hash_map::Entry::Occupied(p) => {
                let kept = &mut out[*p.get()];
                if w.stamp >= kept.stamp {
                    *kept = w;
                }
            }
            hashbrown::hash_map::Entry::Vacant(p) => {
                p.insert(out.len());
                out.push(w);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb;
    use crate::value::{FieldValue, Value};

    fn store() -> Store {
        let mut s = Store::new(7, 500);
        s.set_manual_time(Some(1_700_000_000_000));
        s
    }

    /// Interleaved twins and repeated fields out of id order: the delta is prost's encoding, one value per
    /// field at the place of its first reading, holding the batch's winner (newest stamp, later on a tie).
    #[test]
    fn repeats_and_interleaving_give_one_canonical_value_per_field() {
        let mut s = store();
        let (a, b) = (s.intern_twin("b-twin").unwrap(), s.intern_twin("a-twin").unwrap());
        let (x, y) = (s.intern_field("x").unwrap(), s.intern_field("y").unwrap());
        let old = 1_699_999_999_000;
        let d = s
            .write_batch(
                &[a, b, a, a, a, b],
                &[y, x, x, y, x, x],
                &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                &[0, 0, old, 0, 0, 0],
            )
            .unwrap();
        let msg = pb::StateDelta::decode(d.as_slice()).unwrap();
        assert_eq!(msg.encode_to_vec(), d);
        let names: Vec<&str> = msg.twins.iter().map(|t| t.twin.as_str()).collect();
        assert_eq!(names, ["a-twin", "b-twin"]);
        assert_eq!(
            (msg.twins[0].writes[0].fields.clone(), msg.twins[0].writes[0].f64s.clone()),
            (vec!["x".into()], vec![6.0])
        );
        let g = &msg.twins[1].writes[0];
        assert_eq!((g.fields.clone(), g.f64s.clone()), (vec!["y".to_owned(), "x".to_owned()], vec![4.0, 5.0]));
        assert!(g.stamp_offsets.is_empty(), "the old reading of x lost inside the batch");
        assert_eq!(s.get("b-twin", "x"), Some(FieldValue::Register(Value::F64(5.0))));
        let mut peer = Store::new(8, 500);
        peer.merge(&d).unwrap();
        assert_eq!(peer.encode_state(None), s.encode_state(None));
    }

    /// A field of another kind refuses the whole batch before anything applies.
    #[test]
    fn a_type_conflict_refuses_the_whole_batch() {
        let mut s = store();
        s.increment("t", "n", 1).unwrap();
        let before = s.encode_state(None);
        let (t, n, m) = (s.intern_twin("t").unwrap(), s.intern_field("n").unwrap(), s.intern_field("m").unwrap());
        let err = s.write_batch(&[t, t], &[m, n], &[1.0, 2.0], &[0, 0]).unwrap_err();
        assert!(matches!(err, Error::TypeConflict { existing: Kind::Counter, .. }), "{err}");
        assert_eq!(s.encode_state(None), before);
    }

    /// Slots grow by an eighth, not by doubling: twins of 10 and 20 fields keep no spare slot, one of 11
    /// at most one.
    #[test]
    fn slot_vectors_grow_by_an_eighth() {
        let mut s = store();
        let f: Vec<u32> = (0..20).map(|i| s.intern_field(&format!("f{i}")).unwrap()).collect();
        for (name, n, spare) in [("a", 10, 0), ("b", 20, 0), ("c", 11, 1)] {
            let t = s.intern_twin(name).unwrap();
            s.write_batch(&vec![t; n], &f[..n], &vec![1.0; n], &vec![0; n]).unwrap();
            let twin = s.twin(t).unwrap();
            assert!(twin.slots.capacity() - twin.slots.len() <= spare, "{name}: capacity {}", twin.slots.capacity());
        }
    }
}
