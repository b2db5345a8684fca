//! The ingest hot path: `Store::write_batch`, numeric readings by interned id, one event (dot) per twin,
//! and the delta of the whole batch encoded once at the end.
//!
//! Profiles of the first version showed two hash maps per reading (one to find the twin's event, one to
//! merge repeated fields), a binary search per reading, twice, and a delta built through per-twin vectors.
//! Here a reading costs an array index for its twin, a hinted slot lookup (the slot after the previous one
//! is tried first: a batch usually lists a twin's fields in the order they were interned) and one
//! compare-and-store; repeated fields are looked for only in a twin whose fields do not arrive in
//! ascending id order, and the delta is written straight into its bytes.
use std::ops::Range;

use hashbrown::HashMap;

use crate::clock::{stamp_at, Stamp};
use crate::codec::fast;
use crate::codec::FORMAT;
use crate::context::Dot;
use crate::error::{Error, Kind, Result};
use crate::intern::Interner;
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

/// The encoded field names (`WriteGroup.fields`) of the last run a delta was written for, kept for the next
/// batch: a poller writes the same fields in the same order every tick, so a run's names cost one comparison
/// of ids and one copy rather than a lookup and a copy per name. Bounded: a longer run is not kept.
#[derive(Debug, Default)]
pub(crate) struct NamesBlock {
    fields: Vec<u32>,
    bytes: Vec<u8>,
}

const MAX_BLOCK_FIELDS: usize = 1 << 16;

impl NamesBlock {
    /// The encoded names of `fields`, made anew unless they are the last run's.
    fn load(&mut self, names: &Interner, fields: &[u32]) -> &[u8] {
        if self.fields != fields {
            self.fields.clear();
            self.fields.extend_from_slice(fields);
            self.bytes.clear();
            for &f in fields {
                let name = names.name_bytes(f);
                if name.len() < 0x80 {
                    self.bytes.extend_from_slice(&[0x22, name.len() as u8]);
                    self.bytes.extend_from_slice(name);
                } else {
                    fast::bytes(4, name, &mut self.bytes);
                }
            }
        }
        &self.bytes
    }

    /// Forgets a run too long to keep.
    fn trim(&mut self) {
        if self.fields.len() > MAX_BLOCK_FIELDS {
            *self = NamesBlock::default();
        }
    }
}

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
        let batch = Batch { twin_ids, field_ids, values, source_ms, now };
        let mut events: Vec<Event> = Vec::new();
        let mut event_of: HashMap<u32, u32> = HashMap::new();
        let mut in_runs = true;
        // A run of one twin's readings shares its event, its twin lookup and its ascending check.
        let mut start = 0usize;
        while start < n {
            let tid = twin_ids[start];
            let end = start + twin_ids[start..].iter().position(|&t| t != tid).unwrap_or(n - start);
            let fields = &field_ids[start..end];
            let e = match event_of.get(&tid) {
                Some(&e) => {
                    in_runs = false;
                    let e = &mut events[e as usize];
                    e.ascending &= e.last_field < fields[0];
                    e
                }
                None => {
                    let t = self.twin_mut(tid);
                    let counter = t.cc.next_dot(replica).counter;
                    let ev = t.event(wix, counter);
                    event_of.insert(tid, events.len() as u32);
                    events.push(Event { twin: tid, counter, ev, start, last_field: fields[0], ascending: true });
                    let last = events.len() - 1;
                    &mut events[last]
                }
            };
            e.ascending &= fields.windows(2).all(|w| w[0] < w[1]);
            e.last_field = fields[fields.len() - 1];
            let (counter, ev) = (e.counter, e.ev);
            self.apply_run(&batch, &checked, tid, start..end, Dot::new(replica, counter), ev);
            start = end;
        }
        for e in &events {
            self.twin_mut(e.twin).cc.insert(Dot::new(replica, e.counter));
        }
        // When a twin's readings were interleaved with another's, each event's readings are gathered (in batch
        // order) through a permutation.
        let order: Option<Vec<u32>> = (!in_runs).then(|| {
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by_key(|&i| event_of.get(&twin_ids[i as usize]).copied().unwrap_or(0));
            order
        });
        let mut block = std::mem::take(&mut self.names_block);
        let delta = self.encode_batch(&events, &batch, order.as_deref(), &mut block);
        block.trim();
        self.names_block = block;
        Ok(delta)
    }

    /// Applies one run of a twin's readings with its event (`dot`, `ev`). A reading newer than a numeric
    /// register overwrites it in place (the hot path: no slot is built or dropped); equal stamps, boxed
    /// registers and new fields take the general path.
    fn apply_run(&mut self, batch: &Batch<'_>, checked: &Checked, tid: u32, run: Range<usize>, dot: Dot, ev: Ev) {
        let Some(t) = self.twins.get_mut(tid as usize).and_then(Option::as_mut) else {
            unreachable!("the twin's event created it")
        };
        let mut hint = 0usize;
        for i in run {
            let (fid, value) = (batch.field_ids[i], batch.values[i]);
            let stamp = batch.stamp(i);
            let found = if checked.new == 0 { Ok(checked.slots[i] as usize) } else { t.register_slot(fid, hint) };
            match found {
                Ok(j) => {
                    hint = j + 1;
                    if t.slots[j].overwrite_f64(ev, stamp, value) {
                        continue;
                    }
                    let cur = &t.slots[j];
                    // The LWW order (stamp, writer, counter); a later reading of this batch (same writer and
                    // counter) replaces an earlier one on an equal stamp.
                    let wins = stamp > cur.stamp()
                        || (stamp == cur.stamp() && {
                            let (w, cur_counter) = t.write_of(cur);
                            let cur_writer = self.writers.get(w as usize).copied().unwrap_or(0);
                            order_key(stamp, dot) >= order_key(cur.stamp(), Dot::new(cur_writer, cur_counter))
                        });
                    if wins {
                        t.slots[j] = Slot::register(fid, ev, stamp, Cell::F64(value));
                    } else {
                        self.superseded += 1;
                    }
                }
                Err(j) => {
                    hint = j + 1;
                    t.insert_slot(j, Slot::register(fid, ev, stamp, Cell::F64(value)));
                }
            }
        }
    }

    /// Validates a batch before anything applies (ids interned, values finite, source times within the
    /// clock gate, no field of another kind) and finds each reading's register. The ids, values and source
    /// times are checked whole first (branch-free passes); only a batch that fails is walked reading by
    /// reading, so the error names the first bad reading.
    fn check_batch(
        &self,
        twin_ids: &[u32],
        field_ids: &[u32],
        values: &[f64],
        source_ms: &[i64],
        phys: u64,
    ) -> Result<Checked> {
        let (twins, fields) = (self.twin_names.len(), self.field_names.len());
        let bad = twin_ids.iter().filter(|&&t| t as usize >= twins).count()
            + field_ids.iter().filter(|&&f| f as usize >= fields).count()
            + values.iter().filter(|v| !v.is_finite()).count();
        let newest = source_ms.iter().copied().max().unwrap_or(0);
        let max_source = if newest > 0 { stamp_at(newest as u64) } else { 0 };
        // The gate is monotone in the stamp: the newest source time passing it clears them all.
        if bad > 0 || (max_source > 0 && self.hlc.check(max_source, phys).is_err()) {
            return Err(self.first_error(twin_ids, field_ids, values, source_ms, phys));
        }
        let n = twin_ids.len();
        let mut checked = Checked { max_source, slots: Vec::with_capacity(n), new: 0 };
        let mut hint = 0usize;
        let mut start = 0usize;
        while start < n {
            let t = twin_ids[start];
            let end = start + twin_ids[start..].iter().position(|&x| x != t).unwrap_or(n - start);
            let Some(twin) = self.twin(t) else {
                checked.slots.resize(end, NEW);
                checked.new += end - start;
                start = end;
                continue;
            };
            for &f in &field_ids[start..end] {
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
            start = end;
        }
        Ok(checked)
    }

    /// The error of the first bad reading of a batch `check_batch` refused, in reading order (its twin id,
    /// field id, value, then source time).
    #[cold]
    fn first_error(&self, twin_ids: &[u32], field_ids: &[u32], values: &[f64], source_ms: &[i64], phys: u64) -> Error {
        let (twins, fields) = (self.twin_names.len(), self.field_names.len());
        for i in 0..twin_ids.len() {
            let (t, f, v, s) = (twin_ids[i], field_ids[i], values[i], source_ms[i]);
            if t as usize >= twins {
                return Error::Unknown(format!("twin id {t} at index {i} was never interned"));
            }
            if f as usize >= fields {
                return Error::Unknown(format!("field id {f} at index {i} was never interned"));
            }
            if !v.is_finite() {
                return Error::InvalidValue(format!("non-finite float {v} at index {i}"));
            }
            if s > 0 {
                if let Err(e) = self.hlc.check(stamp_at(s as u64), phys) {
                    return e;
                }
            }
        }
        Error::InvalidValue("batch refused".into()) // not reached: the passes above found a bad reading
    }

    /// The batch's delta: per twin (sorted by name, as every delta), its event's dot and what it wrote, one
    /// value per field (a field repeated in the batch carries the reading that won inside it, at the place
    /// of its first reading). Written directly as protobuf bytes; the tests prove them equal to prost's.
    /// `order` gathers each event's readings when twins were interleaved (else each event is a run).
    fn encode_batch(
        &self,
        events: &[Event],
        batch: &Batch<'_>,
        order: Option<&[u32]>,
        block: &mut NamesBlock,
    ) -> Vec<u8> {
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
        let (mut group, mut offsets) = (Vec::new(), Vec::new());
        for e in by_name {
            let event = &events[e];
            let (a, b) = spans[e];
            // A run in ascending field order (the usual batch) is written straight into the delta, its
            // length computed first; other events are gathered, their repeats merged, in a scratch buffer.
            let run = order.is_none() && event.ascending;
            let (group_len, base) = if run {
                self.run_group_len(event.counter, batch, a..b, &mut offsets, block)
            } else {
                group.clear();
                group.reserve(16 + (b - a) * 16);
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
                (group.len(), 0)
            };
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
                + fast::varint_len(group_len as u64)
                + group_len;
            out.reserve(twin_len + 8);
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
            fast::key(3, 2, &mut out);
            fast::varint(group_len as u64, &mut out);
            if run {
                let at = out.len();
                self.write_run_group(event.counter, base, batch, a..b, &offsets, &block.bytes, &mut out);
                debug_assert_eq!(out.len() - at, group_len, "a run's group length was computed first");
            } else {
                out.extend_from_slice(&group);
            }
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
            let name = self.field_names.name_bytes(w.field);
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

    /// The stamps of a run's WriteGroup: its base (the oldest), and in `offsets` each reading's offset from
    /// it, or nothing when all are equal (a batch stamped by the clock).
    fn run_stamps(batch: &Batch<'_>, run: Range<usize>, offsets: &mut Vec<u64>) -> Stamp {
        offsets.clear();
        if batch.source_ms[run.clone()].iter().all(|&s| s <= 0) {
            return batch.now;
        }
        let base = run.clone().map(|i| batch.stamp(i)).min().unwrap_or(0);
        if run.clone().any(|i| batch.stamp(i) != base) {
            offsets.extend(run.map(|i| batch.stamp(i) - base));
        }
        base
    }

    /// The encoded length of a run's WriteGroup (as `write_run_group` writes it) and its base stamp; fills
    /// `offsets` and loads the run's names into `block`.
    fn run_group_len(
        &self,
        counter: u64,
        batch: &Batch<'_>,
        run: Range<usize>,
        offsets: &mut Vec<u64>,
        block: &mut NamesBlock,
    ) -> (usize, Stamp) {
        let base = Store::run_stamps(batch, run.clone(), offsets);
        let count = run.len();
        let names = block.load(&self.field_names, &batch.field_ids[run]).len();
        let mut len = 1 + fast::varint_len(counter) + names + 1 + fast::varint_len(count as u64 * 8) + count * 8;
        if base != 0 {
            len += 1 + fast::varint_len(base);
        }
        if !offsets.is_empty() {
            let body: usize = offsets.iter().map(|&o| fast::varint_len(o)).sum();
            len += 1 + fast::varint_len(body as u64) + body;
        }
        (len, base)
    }

    /// A run's WriteGroup (the bytes `encode_numeric_group` writes for it): its stamps from `run_stamps`,
    /// its encoded names from `run_group_len`.
    #[allow(clippy::too_many_arguments)]
    fn write_run_group(
        &self,
        counter: u64,
        base: Stamp,
        batch: &Batch<'_>,
        run: Range<usize>,
        offsets: &[u64],
        names: &[u8],
        out: &mut Vec<u8>,
    ) {
        fast::key(2, 0, out);
        fast::varint(counter, out);
        if base != 0 {
            fast::key(3, 0, out);
            fast::varint(base, out);
        }
        out.extend_from_slice(names);
        fast::key(6, 2, out);
        fast::varint((run.len() * 8) as u64, out);
        out.reserve(run.len() * 8);
        for v in &batch.values[run] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if !offsets.is_empty() {
            fast::packed_varints(11, offsets, out);
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
    #[inline]
    fn stamp(&self, i: usize) -> Stamp {
        let s = self.source_ms[i];
        if s > 0 {
            stamp_at(s as u64)
        } else {
            self.now
        }
    }

    fn reading(&self, i: usize) -> Reading {
        Reading { field: self.field_ids[i], stamp: self.stamp(i), value: self.values[i] }
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

    /// The run path (names kept from the previous batch, lengths computed before the bytes): ticks of the
    /// same fields, then other fields, long names, mixed source stamps and a twin written twice; every
    /// delta is prost's encoding and a peer fed the deltas converges.
    #[test]
    fn run_deltas_are_canonical_across_ticks() {
        let mut s = store();
        let mut peer = Store::new(8, 500);
        let long = "l".repeat(200);
        let f: Vec<u32> = ["a", "b", long.as_str(), "c"].iter().map(|n| s.intern_field(n).unwrap()).collect();
        let (t, u) = (s.intern_twin("t").unwrap(), s.intern_twin("u").unwrap());
        let old = 1_699_999_999_000;
        let batches: [(Vec<u32>, Vec<u32>, Vec<i64>); 6] = [
            (vec![t; 3], f[..3].to_vec(), vec![0; 3]),
            (vec![t; 3], f[..3].to_vec(), vec![0; 3]),
            (vec![t; 3], f[1..].to_vec(), vec![old, 0, old + 5]),
            (vec![t, t, u, u], vec![f[0], f[3], f[0], f[2]], vec![old + 1; 4]),
            (vec![u, t, u], vec![f[1], f[1], f[3]], vec![0, old + 2, 0]),
            (vec![t; 3], f[..3].to_vec(), vec![0; 3]),
        ];
        for (k, (tids, fids, src)) in batches.iter().enumerate() {
            let vals: Vec<f64> = (0..tids.len()).map(|i| (k * 10 + i) as f64).collect();
            let d = s.write_batch(tids, fids, &vals, src).unwrap();
            let msg = pb::StateDelta::decode(d.as_slice()).unwrap();
            assert_eq!(msg.encode_to_vec(), d, "batch {k}");
            peer.merge(&d).unwrap();
        }
        assert_eq!(peer.encode_state(None), s.encode_state(None));
        assert_eq!(s.get("t", &long), Some(FieldValue::Register(Value::F64(52.0))));
    }

    /// A refused batch names its first bad reading, in reading order.
    #[test]
    fn a_refused_batch_names_its_first_bad_reading() {
        let mut s = store();
        let (t, f) = (s.intern_twin("t").unwrap(), s.intern_field("f").unwrap());
        let err = s.write_batch(&[t, t, 9], &[f, f, f], &[1.0, f64::NAN, 1.0], &[0, 0, 0]).unwrap_err();
        assert!(err.to_string().contains("non-finite float NaN at index 1"), "{err}");
        let err = s.write_batch(&[t, t], &[f, 5], &[1.0, 1.0], &[0, 0]).unwrap_err();
        assert!(err.to_string().contains("field id 5 at index 1"), "{err}");
        let ahead = 1_700_000_000_000 + 3_600_000;
        let err = s.write_batch(&[t, t], &[f, f], &[1.0, 2.0], &[0, ahead]).unwrap_err();
        assert!(matches!(err, Error::ClockSkew { .. }), "{err}");
        assert_eq!(s.get("t", "f"), None, "nothing applied");
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
