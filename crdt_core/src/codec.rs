//! The canonical binary encoding (schema: `proto/drsdtp/wire/v1/state.proto`) and everything that reads or
//! writes it: local-event deltas, full state, catch-up deltas, versions, digests, and `merge`.
//!
//! Decoding is two-phase: the whole message is validated (sizes, indices, column lengths, finite floats,
//! the clock gate) before anything is applied, so a bad message changes nothing and never panics.
use std::collections::{BTreeMap, BTreeSet};

use hashbrown::HashMap;
use prost::Message;

use crate::clock::Stamp;
use crate::context::{Context, Dot, ReplicaId};
use crate::counter::{CounterEntry, PnCounter};
use crate::entries::{for_each_numeric, is_reading, MergedReadings};
use crate::error::{corrupt, Error, Kind, Result};
use crate::intern;
use crate::lww::order_key;
use crate::mvreg::{MvReg, Sibling};
use crate::orset::OrSet;
use crate::pb;
use crate::store::{Cell, CellRef, RegisterEvent, Slot, Store, Twin};
use crate::value::{Value, MAX_VALUE_BYTES};
use crate::view::{DeltaView, GroupView, TwinView};

/// The format version this build writes (and reads, with V1: see `state.proto`'s `Format`).
pub const FORMAT: pb::Format = pb::Format::V2;

/// Replica ids used by a message, sorted, with their indices.
#[derive(Default)]
struct WriterTable {
    ids: BTreeSet<ReplicaId>,
    index: HashMap<ReplicaId, u32>,
}

impl WriterTable {
    fn add(&mut self, r: ReplicaId) {
        self.ids.insert(r);
    }
    fn add_context(&mut self, cc: &Context) {
        cc.replicas().for_each(|r| self.add(r));
    }
    fn freeze(&mut self) -> Vec<u64> {
        self.index = self.ids.iter().enumerate().map(|(i, &r)| (r, i as u32)).collect();
        self.ids.iter().copied().collect()
    }
    fn ix(&self, r: ReplicaId) -> u32 {
        self.index.get(&r).copied().unwrap_or(0)
    }
    fn context(&self, cc: &Context) -> pb::Context {
        let (writers, max) = cc.ranges().iter().map(|&(r, m)| (self.ix(r), m)).unzip();
        let (cloud_writers, cloud_counters) = cc.cloud().iter().map(|d| (self.ix(d.replica), d.counter)).unzip();
        pb::Context { writers, max, cloud_writers, cloud_counters }
    }
}

/// A register as it is encoded: writer, event counter, name, stamp, value.
type RegisterRow<'a> = (ReplicaId, u64, &'a str, Stamp, CellRef<'a>);

/// Groups register rows by event. With `canonical`, rows are first sorted by (writer, counter, name), the
/// order of full states; a local event's delta keeps the batch order (all its rows share one event).
fn write_groups(rows: &mut [RegisterRow<'_>], table: &WriterTable, canonical: bool) -> Vec<pb::WriteGroup> {
    if canonical {
        rows.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    }
    let mut groups = Vec::new();
    for chunk in rows.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let base = chunk.iter().map(|r| r.3).min().unwrap_or(0);
        let mut g =
            pb::WriteGroup { writer: table.ix(chunk[0].0), counter: chunk[0].1, stamp: base, ..Default::default() };
        let all_f64 = chunk.iter().all(|r| matches!(r.4, CellRef::F64(_)));
        if chunk.iter().any(|r| r.3 != base) {
            g.stamp_offsets = chunk.iter().map(|r| r.3 - base).collect();
        }
        for &(_, _, name, _, cell) in chunk.iter() {
            g.fields.push(name.to_owned());
            let kind = match cell {
                CellRef::F64(x) => {
                    g.f64s.push(x);
                    pb::ValueKind::F64
                }
                CellRef::I64(x) => {
                    g.i64s.push(x);
                    pb::ValueKind::I64
                }
                CellRef::Bool(x) => {
                    g.bools.push(x);
                    pb::ValueKind::Bool
                }
                CellRef::Str(s) => {
                    g.strs.push(s.clone());
                    pb::ValueKind::Str
                }
                CellRef::Bytes(b) => {
                    g.blobs.push(b.clone());
                    pb::ValueKind::Bytes
                }
                CellRef::Counter(_) | CellRef::Set(_) | CellRef::Multi(_) => continue,
            };
            if !all_f64 {
                g.kinds.push(kind as i32);
            }
        }
        groups.push(g);
    }
    groups
}

fn cell_kind(cell: &Cell) -> pb::ValueKind {
    match cell {
        Cell::I64(_) => pb::ValueKind::I64,
        Cell::Bool(_) => pb::ValueKind::Bool,
        Cell::Str(_) => pb::ValueKind::Str,
        Cell::Bytes(_) => pb::ValueKind::Bytes,
        _ => pb::ValueKind::F64,
    }
}

/// Direct protobuf writers for the hot path (wire format: varint keys, length-delimited messages).
pub(crate) mod fast {
    /// Bytes of `v` as a varint.
    pub(crate) const fn varint_len(v: u64) -> usize {
        (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
    }
    pub(crate) fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    pub(crate) fn key(field: u32, wire: u32, out: &mut Vec<u8>) {
        varint(u64::from(field << 3 | wire), out);
    }
    pub(crate) fn bytes(field: u32, b: &[u8], out: &mut Vec<u8>) {
        key(field, 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    pub(crate) fn string(field: u32, s: &str, out: &mut Vec<u8>) {
        bytes(field, s.as_bytes(), out);
    }
    pub(crate) fn message(field: u32, body: &[u8], out: &mut Vec<u8>) {
        bytes(field, body, out);
    }
    pub(crate) fn packed_varints(field: u32, values: &[u64], out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(values.len() * 2);
        for &v in values {
            varint(v, &mut body);
        }
        bytes(field, &body, out);
    }
}

fn counter_state(name: &str, c: &PnCounter, table: &WriterTable, since: Option<&Context>) -> Option<pb::CounterState> {
    let mut s = pb::CounterState { field: name.to_owned(), ..Default::default() };
    for e in c.entries().iter().filter(|e| since.is_none_or(|v| !v.contains(e.dot()))) {
        s.writers.push(table.ix(e.replica));
        s.counters.push(e.counter);
        s.increments.push(e.increments);
        s.decrements.push(e.decrements);
    }
    (!s.writers.is_empty()).then_some(s)
}

fn set_state(name: &str, set: &OrSet, table: &WriterTable) -> pb::SetState {
    let elements = set
        .entries()
        .map(|(e, dots)| pb::SetElement {
            element: e.to_owned(),
            writers: dots.iter().map(|d| table.ix(d.replica)).collect(),
            counters: dots.iter().map(|d| d.counter).collect(),
        })
        .collect();
    pb::SetState { field: name.to_owned(), elements, context: Some(table.context(set.context())) }
}

fn multi_value_state(name: &str, reg: &MvReg, table: &WriterTable) -> pb::MultiValueState {
    let siblings = reg
        .siblings()
        .iter()
        .map(|s| pb::Sibling {
            writer: table.ix(s.dot.replica),
            counter: s.dot.counter,
            stamp: s.stamp,
            value: Some(match &s.value {
                Value::F64(x) => pb::sibling::Value::F64(*x),
                Value::I64(x) => pb::sibling::Value::I64(*x),
                Value::Bool(x) => pb::sibling::Value::Flag(*x),
                Value::Str(x) => pb::sibling::Value::Text(x.clone()),
                Value::Bytes(x) => pb::sibling::Value::Blob(x.clone()),
            }),
        })
        .collect();
    pb::MultiValueState { field: name.to_owned(), context: Some(table.context(reg.context())), siblings }
}

/// A validated message's register (see `validate`: writers in the table, every sibling has a value).
fn decode_multi_value(m: &pb::MultiValueState, replicas: &[u64]) -> Result<MvReg> {
    let siblings = m.siblings.iter().filter_map(|s| {
        let value = match s.value.as_ref()? {
            pb::sibling::Value::F64(x) => Value::F64(*x),
            pb::sibling::Value::I64(x) => Value::I64(*x),
            pb::sibling::Value::Flag(x) => Value::Bool(*x),
            pb::sibling::Value::Text(x) => Value::Str(x.clone()),
            pb::sibling::Value::Blob(x) => Value::Bytes(x.clone()),
        };
        Some(Sibling { value, stamp: s.stamp, dot: Dot::new(*replicas.get(s.writer as usize)?, s.counter) })
    });
    Ok(MvReg::from_parts(siblings, decode_context(m.context.as_ref(), replicas)?))
}

fn encode(msg: &impl Message) -> Vec<u8> {
    msg.encode_to_vec()
}

impl Store {
    fn writer_id(&self, ix: u32) -> ReplicaId {
        self.writers.get(ix as usize).copied().unwrap_or(0)
    }

    // ----- local-event deltas ----------------------------------------------------------------------------

    /// Delta of register events: for each (twin, dot, writes), the context `{dot}` and what the event wrote,
    /// one value per field. A write that lost locally to a newer value still travels: the context claims the
    /// event, so the delta must carry its effect (receivers keep `dot seen => effect joined`).
    ///
    /// This is the ingest hot path, so it writes the protobuf bytes directly (no message structs, no owned
    /// strings); `tests::fast_event_encoding_equals_prost` proves the bytes equal prost's.
    pub(crate) fn encode_register_events(&self, events: &[RegisterEvent]) -> Vec<u8> {
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_unstable_by(|&a, &b| self.twin_names.name(events[a].0).cmp(self.twin_names.name(events[b].0)));
        let mut out = Vec::with_capacity(16 + events.iter().map(|e| 24 + e.2.len() * 16).sum::<usize>());
        fast::key(1, 0, &mut out);
        fast::varint(FORMAT as u64, &mut out);
        fast::packed_varints(2, &[self.replica], &mut out);
        let mut twin = Vec::new();
        let mut group = Vec::new();
        for i in order {
            let (tid, dot, writes) = &events[i];
            twin.clear();
            group.clear();
            fast::string(1, self.twin_names.name(*tid), &mut twin);
            // Context {writers: [0], max: [counter]} for counter 1; a cloud dot otherwise.
            let mut ctx = Vec::with_capacity(16);
            if dot.counter == 1 {
                fast::packed_varints(1, &[0], &mut ctx);
                fast::packed_varints(2, &[1], &mut ctx);
            } else {
                fast::packed_varints(3, &[0], &mut ctx);
                fast::packed_varints(4, &[dot.counter], &mut ctx);
            }
            fast::message(2, &ctx, &mut twin);
            if !writes.is_empty() {
                self.encode_group(dot.counter, writes, &mut group);
                fast::message(3, &group, &mut twin);
            }
            fast::message(3, &twin, &mut out);
        }
        out
    }

    /// One WriteGroup (writer index 0: the only writer of a local event's delta).
    fn encode_group(&self, counter: u64, writes: &[(u32, Stamp, Cell)], out: &mut Vec<u8>) {
        let base = writes.iter().map(|w| w.1).min().unwrap_or(0);
        fast::key(2, 0, out);
        fast::varint(counter, out);
        if base != 0 {
            fast::key(3, 0, out);
            fast::varint(base, out);
        }
        for (f, _, _) in writes {
            fast::string(4, self.field_names.name(*f), out);
        }
        let all_f64 = writes.iter().all(|w| matches!(w.2, Cell::F64(_)));
        if !all_f64 {
            let kinds: Vec<u64> = writes.iter().map(|w| cell_kind(&w.2) as u64).collect();
            fast::packed_varints(5, &kinds, out);
        }
        let f64s: Vec<f64> =
            writes.iter().filter_map(|w| if let Cell::F64(x) = w.2 { Some(x) } else { None }).collect();
        if !f64s.is_empty() {
            fast::key(6, 2, out);
            fast::varint((f64s.len() * 8) as u64, out);
            for x in f64s {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        let i64s: Vec<u64> = writes
            .iter()
            .filter_map(|w| if let Cell::I64(x) = w.2 { Some(((x << 1) ^ (x >> 63)) as u64) } else { None })
            .collect();
        if !i64s.is_empty() {
            fast::packed_varints(7, &i64s, out);
        }
        let bools: Vec<u64> =
            writes.iter().filter_map(|w| if let Cell::Bool(x) = w.2 { Some(u64::from(x)) } else { None }).collect();
        if !bools.is_empty() {
            fast::packed_varints(8, &bools, out);
        }
        for w in writes {
            if let Cell::Str(x) = &w.2 {
                fast::string(9, x, out);
            }
        }
        for w in writes {
            if let Cell::Bytes(x) = &w.2 {
                fast::bytes(10, x, out);
            }
        }
        if writes.iter().any(|w| w.1 != base) {
            let offsets: Vec<u64> = writes.iter().map(|w| w.1 - base).collect();
            fast::packed_varints(11, &offsets, out);
        }
    }

    pub(crate) fn encode_counter_event(&self, tid: u32, fid: u32, dot: Dot) -> Vec<u8> {
        let mut table = WriterTable::default();
        table.add(self.replica);
        let replicas = table.freeze();
        let mut ts = pb::TwinState { twin: self.twin_names.name(tid).to_owned(), ..Default::default() };
        ts.context = Some(table.context(&Context::from_parts([], [dot])));
        if let Some(CellRef::Counter(c)) =
            self.twin(tid).and_then(|t| t.find(fid, Kind::Counter).ok().map(|i| t.slots[i].cell()))
        {
            let mut one = PnCounter::new();
            if let Some(e) = c.entry(dot.replica) {
                one.join_entry(e);
            }
            ts.counters.extend(counter_state(self.field_names.name(fid), &one, &table, None));
        }
        encode(&pb::StateDelta { format: FORMAT as i32, replicas, twins: vec![ts] })
    }

    /// Delta of set events: the twin dots of the events (`events`), and the whole set with its own context
    /// (see `orset`), which covers its writers' dots of other fields and so is never the twin context.
    pub(crate) fn encode_set_event(&self, tid: u32, fid: u32, events: &[Dot]) -> Vec<u8> {
        let empty = OrSet::new();
        let set = match self.twin(tid).and_then(|t| t.find(fid, Kind::Set).ok().map(|i| t.slots[i].cell())) {
            Some(CellRef::Set(s)) => s,
            _ => &empty,
        };
        let mut table = WriterTable::default();
        events.iter().for_each(|d| table.add(d.replica));
        table.add_context(set.context());
        let replicas = table.freeze();
        let ts = pb::TwinState {
            twin: self.twin_names.name(tid).to_owned(),
            context: Some(table.context(&Context::from_parts([], events.iter().copied()))),
            sets: vec![set_state(self.field_names.name(fid), set, &table)],
            ..Default::default()
        };
        encode(&pb::StateDelta { format: FORMAT as i32, replicas, twins: vec![ts] })
    }

    /// Delta of a multi-value event: the twin dot of the event, and the whole register (see `desired`).
    pub(crate) fn encode_multi_value_event(&self, tid: u32, fid: u32, dot: Dot) -> Vec<u8> {
        let empty = MvReg::new();
        let reg = match self.twin(tid).and_then(|t| t.find(fid, Kind::MultiValue).ok().map(|i| t.slots[i].cell())) {
            Some(CellRef::Multi(r)) => r,
            _ => &empty,
        };
        let mut table = WriterTable::default();
        table.add(dot.replica);
        table.add_context(reg.context());
        let replicas = table.freeze();
        let ts = pb::TwinState {
            twin: self.twin_names.name(tid).to_owned(),
            context: Some(table.context(&Context::from_parts([], [dot]))),
            multi_values: vec![multi_value_state(self.field_names.name(fid), reg, &table)],
            ..Default::default()
        };
        encode(&pb::StateDelta { format: FORMAT as i32, replicas, twins: vec![ts] })
    }

    /// Delta of a batch of counter, set and multi-value events (see `ops`): per twin (sorted by name), the
    /// twin dots of its events, and each touched field as the last of its single deltas carries it (a
    /// counter's own entry, a set or a multi-value register whole): the join of the single deltas. With
    /// `batch` (this store's `write_batch` delta, written just before), its twins' register writes and
    /// dots go in too: the join of both, without decoding, merging and encoding a state.
    pub(crate) fn encode_field_events(
        &self,
        touched: &[(u32, crate::ops::Touched)],
        batch: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let mut table = WriterTable::default();
        table.add(self.replica);
        let cell = |tid: u32, fid: u32, kind: Kind| {
            self.twin(tid).and_then(|t| t.find(fid, kind).ok().map(|i| t.slots[i].cell()))
        };
        for (tid, t) in touched {
            for &(fid, kind) in &t.fields {
                match cell(*tid, fid, kind) {
                    Some(CellRef::Set(s)) => table.add_context(s.context()),
                    Some(CellRef::Multi(r)) => table.add_context(r.context()),
                    _ => {}
                }
            }
        }
        let replicas = table.freeze();
        let mut twins: Vec<pb::TwinState> = Vec::with_capacity(touched.len());
        let mut contexts: Vec<Context> = Vec::with_capacity(touched.len());
        let mut at: HashMap<u32, usize> = HashMap::with_capacity(touched.len());
        for (tid, t) in touched {
            let mut ts = pb::TwinState { twin: self.twin_names.name(*tid).to_owned(), ..Default::default() };
            for &(fid, kind) in &t.fields {
                let name = self.field_names.name(fid);
                match cell(*tid, fid, kind) {
                    Some(CellRef::Counter(c)) => {
                        let mut one = PnCounter::new();
                        if let Some(e) = c.entry(self.replica) {
                            one.join_entry(e);
                        }
                        ts.counters.extend(counter_state(name, &one, &table, None));
                    }
                    Some(CellRef::Set(s)) => ts.sets.push(set_state(name, s, &table)),
                    Some(CellRef::Multi(r)) => ts.multi_values.push(multi_value_state(name, r, &table)),
                    _ => {}
                }
            }
            ts.counters.sort_by(|a, b| a.field.cmp(&b.field));
            ts.sets.sort_by(|a, b| a.field.cmp(&b.field));
            ts.multi_values.sort_by(|a, b| a.field.cmp(&b.field));
            at.insert(*tid, twins.len());
            twins.push(ts);
            contexts.push(Context::from_parts([], t.dots.iter().copied()));
        }
        if let Some(bytes) = batch {
            let msg = pb::StateDelta::decode(bytes).map_err(|e| corrupt(format!("a batch's own delta: {e}")))?;
            let me = table.ix(self.replica);
            for mut ts in msg.twins {
                let cc = decode_context(ts.context.as_ref(), &msg.replicas)?;
                ts.writes.iter_mut().for_each(|g| g.writer = me);
                match self.twin_names.get(&ts.twin).and_then(|tid| at.get(&tid)) {
                    Some(&i) => {
                        contexts[i].union(&cc);
                        twins[i].writes = ts.writes;
                    }
                    None => {
                        ts.context = Some(table.context(&cc));
                        twins.push(ts);
                    }
                }
            }
        }
        for (ts, cc) in twins.iter_mut().zip(&contexts) {
            ts.context = Some(table.context(cc));
        }
        twins.sort_by(|a, b| a.twin.cmp(&b.twin));
        Ok(encode(&pb::StateDelta { format: FORMAT as i32, replicas, twins }))
    }

    // ----- full state and catch-up -----------------------------------------------------------------------

    fn twin_ids_sorted(&self, names: Option<&[String]>) -> Vec<u32> {
        let mut ids: Vec<u32> = match names {
            Some(list) => {
                list.iter().filter_map(|n| self.twin_names.get(n)).filter(|&t| self.twin(t).is_some()).collect()
            }
            None => (0..self.twins.len() as u32).filter(|&t| self.twin(t).is_some()).collect(),
        };
        ids.sort_unstable_by(|&a, &b| self.twin_names.name(a).cmp(self.twin_names.name(b)));
        ids.dedup();
        ids
    }

    /// Encodes the given twins (filtered against `since` per twin when given) into messages of at most
    /// `max_bytes` each, writer table included; a twin too big for one message is split (see `split_twin`),
    /// and only a single unit larger than the budget makes a message exceed it. Every message carries the
    /// writer table of the whole transfer.
    pub(crate) fn encode_twins(
        &self,
        tids: &[u32],
        since: Option<&HashMap<String, Context>>,
        max_bytes: usize,
    ) -> Vec<Vec<u8>> {
        let empty = Context::new();
        let selected: Vec<(u32, &Twin, Option<&Context>)> = tids
            .iter()
            .filter_map(|&tid| {
                let t = self.twin(tid)?;
                let v = since.map(|m| m.get(self.twin_names.name(tid)).unwrap_or(&empty));
                match v {
                    Some(v) if v.includes(&t.cc) => None,
                    _ => Some((tid, t, v)),
                }
            })
            .collect();
        let mut table = WriterTable::default();
        for (_, t, v) in &selected {
            table.add_context(&t.cc);
            let mut seen_writers: BTreeSet<u32> = BTreeSet::new();
            for s in &t.slots {
                match s.cell() {
                    CellRef::Counter(c) => c.entries().iter().for_each(|e| table.add(e.replica)),
                    CellRef::Set(set) => table.add_context(set.context()),
                    CellRef::Multi(reg) => table.add_context(reg.context()),
                    _ => {
                        let (w, counter) = t.write_of(s);
                        if v.is_none_or(|v| !v.contains(Dot::new(self.writer_id(w), counter))) {
                            seen_writers.insert(w);
                        }
                    }
                }
            }
            seen_writers.into_iter().for_each(|w| table.add(self.writer_id(w)));
        }
        let replicas = table.freeze();
        // What every message spends before its first twin: the format and the writer table.
        let overhead =
            pb::StateDelta { format: FORMAT as i32, replicas: replicas.clone(), twins: Vec::new() }.encoded_len();
        let budget = max_bytes.saturating_sub(overhead);
        let mut out = Vec::new();
        let mut chunk: Vec<pb::TwinState> = Vec::new();
        let mut chunk_bytes = 0usize;
        for (tid, t, v) in selected {
            let ts = self.twin_state(tid, t, v, &table);
            let parts = if max_bytes == usize::MAX { vec![ts] } else { split_twin(ts, budget) };
            for ts in parts {
                // Counted as the message will hold it: tag and length prefix included.
                let len = prost::encoding::message::encoded_len(3, &ts);
                if !chunk.is_empty() && chunk_bytes + len > budget {
                    out.push(encode(&pb::StateDelta {
                        format: FORMAT as i32,
                        replicas: replicas.clone(),
                        twins: std::mem::take(&mut chunk),
                    }));
                    chunk_bytes = 0;
                }
                chunk_bytes += len;
                chunk.push(ts);
            }
        }
        if !chunk.is_empty() || out.is_empty() {
            out.push(encode(&pb::StateDelta { format: FORMAT as i32, replicas, twins: chunk }));
        }
        out
    }

    fn twin_state(&self, tid: u32, t: &Twin, since: Option<&Context>, table: &WriterTable) -> pb::TwinState {
        let mut rows: Vec<RegisterRow<'_>> = Vec::new();
        let mut counters = Vec::new();
        let mut sets = Vec::new();
        let mut multi_values = Vec::new();
        for s in &t.slots {
            let name = self.field_names.name(s.field());
            match s.cell() {
                CellRef::Counter(c) => counters.extend(counter_state(name, c, table, since)),
                // Sets travel whole: the receiver needs every surviving dot to tell removes from unseen adds.
                CellRef::Set(set) => sets.push(set_state(name, set, table)),
                // So do multi-value registers: their state is a function of the twin context (see `desired`).
                CellRef::Multi(reg) => multi_values.push(multi_value_state(name, reg, table)),
                cell => {
                    let (w, counter) = t.write_of(s);
                    let writer = self.writer_id(w);
                    if since.is_none_or(|v| !v.contains(Dot::new(writer, counter))) {
                        rows.push((writer, counter, name, s.stamp(), cell));
                    }
                }
            }
        }
        counters.sort_unstable_by(|a: &pb::CounterState, b| a.field.cmp(&b.field));
        sets.sort_unstable_by(|a: &pb::SetState, b| a.field.cmp(&b.field));
        multi_values.sort_unstable_by(|a: &pb::MultiValueState, b| a.field.cmp(&b.field));
        pb::TwinState {
            twin: self.twin_names.name(tid).to_owned(),
            context: Some(table.context(&t.cc)),
            writes: write_groups(&mut rows, table, true),
            counters,
            sets,
            multi_values,
        }
    }

    /// The full state (of the named twins, or of all), canonical: converged replicas encode identical bytes.
    pub fn encode_state(&self, twins: Option<&[String]>) -> Vec<u8> {
        let tids = self.twin_ids_sorted(twins);
        self.encode_twins(&tids, None, usize::MAX).pop().unwrap_or_default()
    }

    /// The full state of every twin in parts of about `max_bytes` each (a snapshot's chunks): merging every
    /// part gives the state [`encode_state`](Self::encode_state) encodes, and each part merges on its own.
    pub fn encode_state_chunks(&self, max_bytes: usize) -> Vec<Vec<u8>> {
        let tids = self.twin_ids_sorted(None);
        self.encode_twins(&tids, None, max_bytes)
    }

    /// What this replica has seen, per twin (of the named twins, or of all). Named twins this replica lacks
    /// are listed with an empty context, so a peer's catch-up sends them whole.
    pub fn version(&self, twins: Option<&[String]>) -> Vec<u8> {
        let mut entries: Vec<(String, Context)> = match twins {
            Some(list) => list.iter().map(|n| (n.clone(), self.context(n).cloned().unwrap_or_default())).collect(),
            None => self
                .twin_ids_sorted(None)
                .into_iter()
                .filter_map(|t| Some((self.twin_names.name(t).to_owned(), self.twin(t)?.cc.clone())))
                .collect(),
        };
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        let mut table = WriterTable::default();
        entries.iter().for_each(|(_, cc)| table.add_context(cc));
        let replicas = table.freeze();
        let twins = entries
            .iter()
            .map(|(n, cc)| pb::TwinVersion { twin: n.clone(), context: Some(table.context(cc)) })
            .collect();
        encode(&pb::StoreVersion { format: FORMAT as i32, replicas, twins })
    }

    /// Everything a peer at `version` lacks, in messages of about `max_bytes`. With `only_listed`, just the
    /// twins the version names (digest-driven catch-up); otherwise every twin, those the version does not
    /// name being sent whole. The result is for that peer only: it is not a delta to forward to others.
    pub fn catch_up(&self, version: &[u8], only_listed: bool, max_bytes: usize) -> Result<Vec<Vec<u8>>> {
        let v = self.decode_version(version)?;
        let names: Vec<String> = v.keys().cloned().collect();
        let tids = self.twin_ids_sorted(only_listed.then_some(names.as_slice()));
        Ok(self.encode_twins(&tids, Some(&v), max_bytes))
    }

    /// Per-twin digests of the causal contexts (equal digest: equal state).
    pub fn digest(&self) -> Vec<u8> {
        let tids = self.twin_ids_sorted(None);
        let twins = tids.iter().map(|&t| self.twin_names.name(t).to_owned()).collect();
        let digests = tids.iter().filter_map(|&t| self.twin(t)).map(|t| t.cc.digest()).collect();
        encode(&pb::StoreDigest { format: FORMAT as i32, twins, digests })
    }

    /// Twins whose state differs from a peer's digest: different digests, or present on one side only.
    pub fn differing_twins(&self, peer_digest: &[u8]) -> Result<Vec<String>> {
        self.check_size(peer_digest)?;
        let d = pb::StoreDigest::decode(peer_digest).map_err(|e| corrupt(e.to_string()))?;
        check_format(d.format)?;
        if d.twins.len() != d.digests.len() {
            return Err(corrupt("digest: twins and digests differ in length"));
        }
        let theirs: HashMap<&str, u64> = d.twins.iter().map(String::as_str).zip(d.digests.iter().copied()).collect();
        let mut out: BTreeSet<String> = BTreeSet::new();
        for tid in self.twin_ids_sorted(None) {
            let name = self.twin_names.name(tid);
            let mine = self.twin(tid).map(|t| t.cc.digest());
            if theirs.get(name).copied() != mine {
                out.insert(name.to_owned());
            }
        }
        for name in &d.twins {
            check_name(name, self.limits.max_name_bytes)?;
            if !self.contains_twin(name) {
                out.insert(name.clone());
            }
        }
        Ok(out.into_iter().collect())
    }

    fn check_size(&self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.limits.max_message_bytes {
            return Err(Error::TooLarge { size: bytes.len(), limit: self.limits.max_message_bytes });
        }
        Ok(())
    }

    fn decode_version(&self, bytes: &[u8]) -> Result<HashMap<String, Context>> {
        self.check_size(bytes)?;
        let v = pb::StoreVersion::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
        check_format(v.format)?;
        let mut out = HashMap::new();
        for tv in v.twins {
            check_name(&tv.twin, self.limits.max_name_bytes)?;
            let cc = decode_context(tv.context.as_ref(), &v.replicas)?;
            out.insert(tv.twin, cc);
        }
        Ok(out)
    }

    // ----- merge -----------------------------------------------------------------------------------------

    /// Joins a delta, catch-up delta or full state. All or nothing: a message that fails validation or the
    /// clock gate changes nothing. Returns the twins whose state changed.
    pub fn merge(&mut self, bytes: &[u8]) -> Result<Vec<String>> {
        let mut changed = Vec::new();
        self.merge_with(bytes, self.gate, Some(&mut changed), None)?;
        changed.sort_unstable();
        changed.dedup();
        Ok(changed)
    }

    /// Joins several deltas in turn, each all or nothing as [`Store::merge`] joins it (the one lock and call
    /// a peer's batch of deltas needs): per delta whether it changed the store or why it was refused, and
    /// the twins any of them changed, once each.
    pub fn merge_many(&mut self, deltas: &[&[u8]]) -> (Vec<Result<bool>>, Vec<String>) {
        self.merge_many_with(deltas, None)
    }

    /// [`Store::merge_many`], also listing the readings (numeric registers, see [`MergedReadings`]) of every
    /// delta it merged (changed or not; a refused one lists none), read from the same decoded message.
    pub fn merge_many_readings(
        &mut self,
        deltas: &[&[u8]],
        readings: &mut MergedReadings,
    ) -> (Vec<Result<bool>>, Vec<String>) {
        self.merge_many_with(deltas, Some(readings))
    }

    fn merge_many_with(
        &mut self,
        deltas: &[&[u8]],
        mut readings: Option<&mut MergedReadings>,
    ) -> (Vec<Result<bool>>, Vec<String>) {
        let mut changed = Vec::new();
        let outcomes = deltas
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let before = changed.len();
                let collect = readings.as_deref_mut().map(|r| (i as u32, r));
                let merged = self.merge_with(d, self.gate, Some(&mut changed), collect);
                let grew = changed.len() > before;
                changed.truncate(if merged.is_ok() { changed.len() } else { before });
                merged.map(|()| grew)
            })
            .collect();
        changed.sort_unstable();
        changed.dedup();
        (outcomes, changed)
    }

    /// Joins this replica's own durable state (log replay, snapshots): no clock gate, since the records were
    /// accepted before (the wall clock may have gone back since a reboot), but the clock still moves past
    /// every stamp, so it never stamps below what it issued before the crash.
    /// No size limit either: a snapshot part or log record is bounded by the log's own framing.
    pub fn merge_trusted(&mut self, bytes: &[u8]) -> Result<()> {
        self.merge_with(bytes, false, None, None)
    }

    /// `readings`: where to list the message's readings, and the message's index there (the caller's).
    fn merge_with(
        &mut self,
        bytes: &[u8],
        gate: bool,
        mut changed: Option<&mut Vec<String>>,
        readings: Option<(u32, &mut MergedReadings)>,
    ) -> Result<()> {
        if gate || changed.is_some() {
            self.check_size(bytes)?;
        }
        let msg = DeltaView::decode(bytes)?;
        check_format(msg.format)?;
        let checked = validate(&msg, self.limits)?;
        if gate && checked.max_stamp > 0 {
            let phys = self.physical_now();
            self.hlc.update(checked.max_stamp, phys)?;
        } else {
            self.hlc.restore(checked.max_stamp);
        }
        let mut names = FieldIds::default();
        // Per message, not per twin: the writer table's index of each replica, and one buffer of field ids.
        let wix: Vec<u32> =
            if msg.twins.is_empty() { Vec::new() } else { msg.replicas.iter().map(|&r| self.writer_ix(r)).collect() };
        let mut fids = Vec::new();
        for (ts, cc) in msg.twins.iter().zip(checked.contexts) {
            if self.merge_twin(ts, cc, (&msg.replicas, &wix), &mut names, &mut fids)? {
                if let Some(out) = changed.as_deref_mut() {
                    out.push(ts.twin.to_owned());
                }
            }
        }
        self.merges += 1;
        if let Some((index, out)) = readings {
            self.list_readings(&msg, index, out);
        }
        Ok(())
    }

    /// The readings of a merged message (its twins and fields are interned by now), tagged `index`.
    fn list_readings(&mut self, msg: &DeltaView<'_>, index: u32, out: &mut MergedReadings) {
        let mut names = FieldIds::default();
        for tv in &msg.twins {
            if tv.twin.starts_with('_') || tv.writes.is_empty() {
                continue;
            }
            let Ok(tid) = self.intern_twin(tv.twin) else { continue };
            for gv in &tv.writes {
                let Ok(fids) = names.ids(self, &gv.fields) else { continue };
                for_each_numeric(gv, |k, value, stamp| {
                    if is_reading(tv.twin, gv.fields[k]) {
                        out.push(index, tid, fids[k], value, stamp);
                    }
                });
            }
        }
    }

    /// Merges one twin; `writers` are the message's replica table and each one's index in ours, `fids` a
    /// scratch buffer for the write groups' field ids.
    fn merge_twin<'m>(
        &mut self,
        tv: &'m TwinView<'m>,
        cc: Context,
        (replicas, wix): (&[u64], &[u32]),
        names: &mut FieldIds<'m>,
        fids: &mut Vec<u32>,
    ) -> Result<bool> {
        let tid = self.intern_twin(tv.twin)?;
        let ts = &tv.rest;
        fids.clear();
        for g in &tv.writes {
            fids.extend_from_slice(names.ids(self, &g.fields)?);
        }
        let counter_fids: Vec<u32> = ts.counters.iter().map(|c| self.intern_field(&c.field)).collect::<Result<_>>()?;
        let set_fids: Vec<u32> = ts.sets.iter().map(|s| self.intern_field(&s.field)).collect::<Result<_>>()?;
        let mv_fids: Vec<u32> = ts.multi_values.iter().map(|m| self.intern_field(&m.field)).collect::<Result<_>>()?;
        let writers = std::mem::take(&mut self.writers);
        let t = self.twin_mut(tid);
        let mut changed = !t.cc.includes(&cc);
        let mut start = 0;
        for g in tv.writes.iter() {
            let fields = &fids[start..start + g.fields.len()];
            start += g.fields.len();
            let g = &g.g;
            let w = wix[g.writer as usize];
            let writer = Dot::new(replicas[g.writer as usize], g.counter);
            let all_f64 = g.kinds.is_empty(); // the numeric batch's shape: no kind column
            let mut cols = Columns::default();
            let mut hint = 0;
            // The group's entry in the twin's event table, made when one of its writes first wins.
            let mut ev = None;
            for (i, &fid) in fields.iter().enumerate() {
                let stamp = g.stamp + g.stamp_offsets.get(i).copied().unwrap_or(0);
                let cell = if all_f64 { Cell::F64(g.f64s.get(i).copied().unwrap_or(0.0)) } else { cols.next(g, i) };
                // A twin's fields usually arrive in the order of its slots: walk them instead of searching.
                match register_from(&t.slots, fid, hint) {
                    Some(at) => {
                        hint = at + 1;
                        let cur = &t.slots[at];
                        let (cw, cur_counter) = t.write_of(cur);
                        let cur_writer = writers.get(cw as usize).copied().unwrap_or(0);
                        let cur_key = order_key(cur.stamp(), Dot::new(cur_writer, cur_counter));
                        if order_key(stamp, writer) > cur_key {
                            let ev = *ev.get_or_insert_with(|| t.event(w, g.counter));
                            t.slots[at] = Slot::register(fid, ev, stamp, cell);
                            changed = true;
                        }
                    }
                    None => {
                        let ev = *ev.get_or_insert_with(|| t.event(w, g.counter));
                        changed |= Store::upsert_register(t, &writers, Slot::register(fid, ev, stamp, cell), false);
                    }
                }
            }
        }
        for (c, &fid) in ts.counters.iter().zip(&counter_fids) {
            let i = t.slot_of(fid, Kind::Counter);
            if let Some(counter) = t.slots[i].counter_mut() {
                for k in 0..c.writers.len() {
                    changed |= counter.join_entry(CounterEntry {
                        replica: replicas[c.writers[k] as usize],
                        counter: c.counters[k],
                        increments: c.increments[k],
                        decrements: c.decrements[k],
                    });
                }
            }
        }
        for (s, &fid) in ts.sets.iter().zip(&set_fids) {
            let elements = s.elements.iter().map(|e| {
                let dots =
                    e.writers.iter().zip(&e.counters).map(|(&w, &c)| Dot::new(replicas[w as usize], c)).collect();
                (e.element.clone(), dots)
            });
            let theirs = OrSet::from_parts(elements, decode_context(s.context.as_ref(), replicas)?);
            let i = t.slot_of(fid, Kind::Set);
            if let Some(set) = t.slots[i].set_mut() {
                changed |= set.merge(&theirs);
            }
        }
        for (m, &fid) in ts.multi_values.iter().zip(&mv_fids) {
            let theirs = decode_multi_value(m, replicas)?;
            let i = t.slot_of(fid, Kind::MultiValue);
            if let Some(reg) = t.slots[i].multi_mut() {
                changed |= reg.merge(&theirs);
            }
        }
        t.cc.union(&cc);
        self.writers = writers;
        Ok(changed)
    }
}

/// The register slot of `field` in a twin's sorted slots, looked for from `hint` on (a few steps, then a
/// search of the rest); `None` when absent or before `hint` (the caller then takes the general path).
fn register_from(slots: &[Slot], field: u32, hint: usize) -> Option<usize> {
    let rest = slots.get(hint..)?;
    let is_it = |s: &Slot| s.field() == field && s.kind() == Kind::Register;
    for (k, s) in rest.iter().take(4).enumerate() {
        if s.field() > field {
            return None;
        }
        if is_it(s) {
            return Some(hint + k);
        }
    }
    let start = rest.partition_point(|s| s.field() < field);
    rest.get(start).filter(|s| is_it(s)).map(|_| hint + start)
}

/// Field ids of a message's write groups: twins of one batch usually carry the same field list, so the
/// previous group's ids are reused when its names are equal (a comparison, not a hash per name).
#[derive(Default)]
struct FieldIds<'m> {
    names: &'m [&'m str],
    ids: Vec<u32>,
}

impl<'m> FieldIds<'m> {
    fn ids(&mut self, store: &mut Store, names: &'m [&'m str]) -> Result<&[u32]> {
        if names != self.names {
            self.ids = names.iter().map(|f| store.intern_field(f)).collect::<Result<_>>()?;
            self.names = names;
        }
        Ok(&self.ids)
    }
}

/// Reads a write group's values in field order from its columns.
#[derive(Default)]
struct Columns {
    f: usize,
    i: usize,
    b: usize,
    s: usize,
    x: usize,
}

impl Columns {
    fn next(&mut self, g: &pb::WriteGroup, i: usize) -> Cell {
        let kind = g.kinds.get(i).copied().unwrap_or(pb::ValueKind::F64 as i32);
        let take = |col: &mut usize| {
            *col += 1;
            *col - 1
        };
        match pb::ValueKind::try_from(kind).unwrap_or(pb::ValueKind::F64) {
            pb::ValueKind::F64 => Cell::F64(g.f64s.get(take(&mut self.f)).copied().unwrap_or(0.0)),
            pb::ValueKind::I64 => Cell::I64(g.i64s.get(take(&mut self.i)).copied().unwrap_or(0)),
            pb::ValueKind::Bool => Cell::Bool(g.bools.get(take(&mut self.b)).copied().unwrap_or(false)),
            pb::ValueKind::Str => Cell::Str(Box::new(g.strs.get(take(&mut self.s)).cloned().unwrap_or_default())),
            pb::ValueKind::Bytes => Cell::Bytes(Box::new(g.blobs.get(take(&mut self.x)).cloned().unwrap_or_default())),
        }
    }
}

/// A name inside a message: empty is corruption, too long is a limit.
fn check_name(name: &str, max_bytes: usize) -> Result<()> {
    intern::check_name(name, max_bytes).map_err(|e| match e {
        Error::InvalidValue(m) => corrupt(m),
        other => other,
    })
}

/// V1 is still read: snapshots and logs written before V2. Its messages are V2's with set contexts that
/// hold only set events, which V2's sets join as they are.
fn check_format(format: i32) -> Result<()> {
    if format == FORMAT as i32 || format == pb::Format::V1 as i32 {
        Ok(())
    } else {
        Err(Error::UnknownFormat(format))
    }
}

fn replica_at(replicas: &[u64], ix: u32, what: &str) -> Result<ReplicaId> {
    replicas
        .get(ix as usize)
        .copied()
        .ok_or_else(|| corrupt(format!("{what}: writer index {ix} outside the table of {}", replicas.len())))
}

fn check_counter(c: u64, what: &str) -> Result<()> {
    if c == 0 {
        return Err(corrupt(format!("{what}: event counter 0 (counters start at 1)")));
    }
    Ok(())
}

fn decode_context(ctx: Option<&pb::Context>, replicas: &[u64]) -> Result<Context> {
    let Some(c) = ctx else { return Ok(Context::new()) };
    if c.writers.len() != c.max.len() || c.cloud_writers.len() != c.cloud_counters.len() {
        return Err(corrupt("context: column lengths differ"));
    }
    let mut ranges = Vec::with_capacity(c.writers.len());
    for (&w, &m) in c.writers.iter().zip(&c.max) {
        ranges.push((replica_at(replicas, w, "context")?, m));
    }
    let mut cloud = Vec::with_capacity(c.cloud_writers.len());
    for (&w, &n) in c.cloud_writers.iter().zip(&c.cloud_counters) {
        check_counter(n, "context")?;
        cloud.push(Dot::new(replica_at(replicas, w, "context")?, n));
    }
    Ok(Context::from_parts(ranges, cloud))
}

/// A twin state whose message field would exceed `max_bytes`, split into parts that fit: each write group,
/// counter, set and multi-value register is one unit (a unit larger than `max_bytes` travels alone). Only the last part carries the
/// twin's context, so a receiver whose stream breaks mid-twin holds the values it got but claims none of
/// them: its digest still differs from the sender's, and anti-entropy with the sender sends the remainder.
/// Limit: the values it got are not claimed either, so against a third replica with the same context its
/// digest matches while its state holds more; they reconcile when the twin next changes or the sender
/// finishes. Parts of one twin travel in order on one stream.
fn split_twin(ts: pb::TwinState, max_bytes: usize) -> Vec<pb::TwinState> {
    if prost::encoding::message::encoded_len(3, &ts) <= max_bytes {
        return vec![ts];
    }
    let pb::TwinState { twin, context, writes, counters, sets, multi_values } = ts;
    let mut packer = Packer::new(twin, max_bytes);
    for g in writes {
        packer.room(prost::encoding::message::encoded_len(3, &g));
        packer.part.writes.push(g);
    }
    for c in counters {
        packer.room(prost::encoding::message::encoded_len(4, &c));
        packer.part.counters.push(c);
    }
    for set in sets {
        packer.room(prost::encoding::message::encoded_len(5, &set));
        packer.part.sets.push(set);
    }
    for m in multi_values {
        packer.room(prost::encoding::message::encoded_len(6, &m));
        packer.part.multi_values.push(m);
    }
    if let Some(cc) = context {
        packer.room(prost::encoding::message::encoded_len(2, &cc));
        packer.part.context = Some(cc);
    }
    packer.parts.push(packer.part);
    packer.parts
}

/// Fills parts of one twin's state up to a byte budget.
struct Packer {
    parts: Vec<pb::TwinState>,
    part: pb::TwinState,
    base: usize,
    size: usize,
    max_bytes: usize,
}

impl Packer {
    /// `max_bytes` bounds a part as a message field: 5 bytes are kept for its tag and length prefix.
    fn new(twin: String, max_bytes: usize) -> Self {
        let part = pb::TwinState { twin, ..Default::default() };
        let base = part.encoded_len();
        Packer { parts: Vec::new(), part, base, size: base, max_bytes: max_bytes.saturating_sub(5) }
    }

    /// Makes room for a unit of `field` bytes (tag and length included), starting a new part if needed.
    fn room(&mut self, field: usize) {
        if self.size > self.base && self.size + field > self.max_bytes {
            let next = pb::TwinState { twin: self.part.twin.clone(), ..Default::default() };
            self.parts.push(std::mem::replace(&mut self.part, next));
            self.size = self.base;
        }
        self.size += field;
    }
}

/// What validation learns on the way: each twin's context and the newest stamp (for the clock gate).
struct Checked {
    contexts: Vec<Context>,
    max_stamp: Stamp,
}

fn validate(msg: &DeltaView<'_>, limits: crate::store::Limits) -> Result<Checked> {
    let names = |n: &str| check_name(n, limits.max_name_bytes);
    let mut contexts = Vec::with_capacity(msg.twins.len());
    let mut max_stamp = 0;
    for tv in &msg.twins {
        let ts = &tv.rest;
        names(tv.twin)?;
        contexts.push(decode_context(ts.context.as_ref(), &msg.replicas)?);
        for GroupView { g, fields } in &tv.writes {
            replica_at(&msg.replicas, g.writer, "write")?;
            check_counter(g.counter, "write")?;
            let n = fields.len();
            if (!g.kinds.is_empty() && g.kinds.len() != n)
                || (!g.stamp_offsets.is_empty() && g.stamp_offsets.len() != n)
            {
                return Err(corrupt("write: kinds or stamp offsets do not match the fields"));
            }
            let mut want = [0usize; 5];
            for i in 0..n {
                let k = g.kinds.get(i).copied().unwrap_or(0);
                let k = pb::ValueKind::try_from(k).map_err(|_| corrupt(format!("write: unknown value kind {k}")))?;
                want[k as usize] += 1;
            }
            if want != [g.f64s.len(), g.i64s.len(), g.bools.len(), g.strs.len(), g.blobs.len()] {
                return Err(corrupt("write: value columns do not match the kinds"));
            }
            if let Some(x) = g.f64s.iter().find(|x| !x.is_finite()) {
                return Err(corrupt(format!("write: non-finite float {x}")));
            }
            if g.strs.iter().any(|s| s.len() > MAX_VALUE_BYTES) || g.blobs.iter().any(|b| b.len() > MAX_VALUE_BYTES) {
                return Err(Error::Limit("write: value larger than 1 MiB".into()));
            }
            for f in fields {
                names(f)?;
            }
            let top = g.stamp_offsets.iter().max().copied().unwrap_or(0);
            max_stamp = max_stamp.max(g.stamp.checked_add(top).ok_or_else(|| corrupt("write: stamp overflow"))?);
        }
        for c in &ts.counters {
            names(&c.field)?;
            let n = c.writers.len();
            if c.counters.len() != n || c.increments.len() != n || c.decrements.len() != n {
                return Err(corrupt("counter: column lengths differ"));
            }
            for k in 0..n {
                replica_at(&msg.replicas, c.writers[k], "counter")?;
                check_counter(c.counters[k], "counter")?;
                if c.increments[k] > i64::MAX as u64 || c.decrements[k] > i64::MAX as u64 {
                    return Err(corrupt("counter: a sum beyond the 64-bit range"));
                }
            }
        }
        for s in &ts.sets {
            names(&s.field)?;
            let set_cc = decode_context(s.context.as_ref(), &msg.replicas)?;
            for e in &s.elements {
                for (&w, &c) in e.writers.iter().zip(&e.counters) {
                    if !set_cc.contains(Dot::new(replica_at(&msg.replicas, w, "set")?, c)) {
                        return Err(corrupt("set: an element's dot is missing from the set's context"));
                    }
                }
            }
            for e in &s.elements {
                names(&e.element)?;
                if e.writers.len() != e.counters.len() {
                    return Err(corrupt("set: column lengths differ"));
                }
                for (&w, &c) in e.writers.iter().zip(&e.counters) {
                    replica_at(&msg.replicas, w, "set")?;
                    check_counter(c, "set")?;
                }
            }
        }
        for m in &ts.multi_values {
            names(&m.field)?;
            max_stamp = max_stamp.max(validate_multi_value(m, &msg.replicas)?);
        }
    }
    Ok(Checked { contexts, max_stamp })
}

/// Checks a multi-value register against what every honest replica holds (see `mvreg`): its context is a
/// version vector, each sibling is its writer's newest event in it (so at most one per writer, and the
/// register stays bounded by its writers), with a valid value. Returns the newest stamp, for the clock gate.
fn validate_multi_value(m: &pb::MultiValueState, replicas: &[u64]) -> Result<Stamp> {
    let cc = decode_context(m.context.as_ref(), replicas)?;
    if !cc.cloud().is_empty() {
        return Err(corrupt("multi-value: the register's context is not a version vector"));
    }
    let mut writers: Vec<u32> = m.siblings.iter().map(|s| s.writer).collect();
    writers.sort_unstable();
    if writers.windows(2).any(|w| w[0] == w[1]) {
        return Err(corrupt("multi-value: two siblings of one writer"));
    }
    let mut max_stamp = 0;
    for s in &m.siblings {
        let w = replica_at(replicas, s.writer, "multi-value")?;
        check_counter(s.counter, "multi-value")?;
        if cc.contiguous(w) != s.counter {
            return Err(corrupt("multi-value: a sibling is not its writer's newest event in the register"));
        }
        match &s.value {
            None => return Err(corrupt("multi-value: a sibling without a value")),
            Some(pb::sibling::Value::F64(x)) if !x.is_finite() => {
                return Err(corrupt(format!("multi-value: non-finite float {x}")))
            }
            Some(pb::sibling::Value::Text(x)) if x.len() > MAX_VALUE_BYTES => {
                return Err(Error::Limit("multi-value: value larger than 1 MiB".into()))
            }
            Some(pb::sibling::Value::Blob(x)) if x.len() > MAX_VALUE_BYTES => {
                return Err(Error::Limit("multi-value: value larger than 1 MiB".into()))
            }
            Some(_) => {}
        }
        max_stamp = max_stamp.max(s.stamp);
    }
    Ok(max_stamp)
}

/// Joins deltas (or states) into one: the join of a delta buffer, for gossip. The inputs must be deltas
/// that may travel anywhere (local events and joins of them, or full states), not peer-specific catch-ups.
pub fn join(deltas: &[&[u8]], limits: crate::store::Limits) -> Result<Vec<u8>> {
    let mut scratch = Store::scratch();
    scratch.set_limits(limits);
    for d in deltas {
        scratch.merge(d)?;
    }
    Ok(scratch.encode_state(None))
}

/// Decodes and fully validates a delta or state (sizes, indices, columns, names) without applying it.
pub(crate) fn decode_checked(bytes: &[u8], limits: crate::store::Limits) -> Result<DeltaView<'_>> {
    if bytes.len() > limits.max_message_bytes {
        return Err(Error::TooLarge { size: bytes.len(), limit: limits.max_message_bytes });
    }
    let msg = DeltaView::decode(bytes)?;
    check_format(msg.format)?;
    validate(&msg, limits)?;
    Ok(msg)
}

/// Checks that `bytes` decode as a delta or state this build can merge (without merging them): how a
/// snapshot is verified after it is written. No size limit: a snapshot chunk is bounded by the log's framing.
pub fn check_state(bytes: &[u8], limits: crate::store::Limits) -> Result<()> {
    decode_checked(bytes, crate::store::Limits { max_message_bytes: usize::MAX, ..limits }).map(|_| ())
}

/// Parses a full state into a map of twin -> fields, for tests and tools.
pub fn decode_fields(bytes: &[u8]) -> Result<BTreeMap<String, Vec<(String, crate::value::FieldValue)>>> {
    let mut scratch = Store::scratch();
    scratch.merge(bytes)?;
    Ok(scratch.twins().into_iter().filter_map(|t| Some((t.clone(), scratch.fields(&t)?))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::numeric_entries;
    use crate::store::Limits;
    use crate::value::Value;

    /// A batch merges delta by delta: one refused delta changes nothing and names no twin, the others
    /// apply; a redundant one reports no change; the changed twins are listed once.
    #[test]
    fn merge_many_readings_lists_the_numeric_registers_of_what_it_merged() {
        let mut a = Store::new(1, 500);
        a.set_manual_time(Some(1_700_000_000_000));
        let d1 = a
            .set_many(
                "pump",
                vec![
                    ("flow".into(), Value::F64(1.5)),
                    ("label".into(), Value::Str("p".into())),
                    ("count".into(), Value::I64(-4)),
                    ("flow.q".into(), Value::F64(0.9)),
                    ("_meta".into(), Value::F64(7.0)),
                ],
            )
            .unwrap();
        let own = a.set_many("_members", vec![("a".into(), Value::F64(1.0))]).unwrap();
        let t = a.intern_twin("tank").unwrap();
        let lvl = a.intern_field("level").unwrap();
        let d2 = a.write_batch(&[t, t], &[lvl, lvl], &[3.0, 4.0], &[1_699_999_999_000, 0]).unwrap();
        let mut b = Store::new(2, 500);
        let mut readings = MergedReadings::default();
        let garbage: &[u8] = b"\x08\x01\x12\xff garbage";
        let (outcomes, _) = b.merge_many_readings(&[&d1, garbage, &own, &d2, &d1], &mut readings);
        assert!(outcomes[1].is_err());
        let (pump, tank) = (b.intern_twin("pump").unwrap(), b.intern_twin("tank").unwrap());
        let (flow, count, level) =
            (b.intern_field("flow").unwrap(), b.intern_field("count").unwrap(), b.intern_field("level").unwrap());
        let got: Vec<_> = (0..readings.len())
            .map(|i| (readings.delta[i], readings.twins[i], readings.fields[i], readings.values[i]))
            .collect();
        // Per delta as numeric_entries lists them (duplicates within a batch kept), the names' rules applied;
        // the redundant copy of d1 (index 4) lists them again: the caller keeps what changed the store.
        assert_eq!(
            got,
            [
                (0, pump, flow, 1.5),
                (0, pump, count, -4.0),
                (3, tank, level, 4.0),
                (4, pump, flow, 1.5),
                (4, pump, count, -4.0)
            ]
        );
        let entries = numeric_entries(&d2, Limits::default()).unwrap();
        assert_eq!(readings.stamps[2], entries.last().unwrap().stamp);
    }

    #[test]
    fn merge_many_answers_for_each_delta() {
        let mut a = Store::new(1, 500);
        let d1 = a.set_many("t1", vec![("x".into(), Value::F64(1.0))]).unwrap();
        let d2 = a.set_many("t2", vec![("x".into(), Value::F64(2.0))]).unwrap();
        let d3 = a.set_many("t1", vec![("y".into(), Value::F64(3.0))]).unwrap();
        let mut b = Store::new(2, 500);
        let garbage: &[u8] = b"\x08\x01\x12\xff garbage";
        let (outcomes, changed) = b.merge_many(&[&d1, garbage, &d2, &d1, &d3]);
        let shape: Vec<Option<bool>> = outcomes.iter().map(|o| o.as_ref().ok().copied()).collect();
        assert_eq!(shape, [Some(true), None, Some(true), Some(false), Some(true)]);
        assert!(matches!(outcomes[1], Err(Error::Decode(_))));
        assert_eq!(changed, ["t1", "t2"]);
        assert_eq!(b.digest(), a.digest());
    }

    /// Several twins' writes in one delta: canonical (prost re-encodes it byte for byte), a replica that
    /// merges it holds what the writer holds, and a refused batch leaves the writer's store as it was.
    #[test]
    fn set_many_twins_is_one_canonical_delta_or_nothing() {
        let mut a = Store::new(7, 500);
        let first = a.set_many("t1", vec![("x".into(), Value::F64(0.5))]).unwrap();
        let before = a.digest();
        let bad = a.set_many_twins(vec![
            ("t2".into(), vec![("x".into(), Value::F64(1.0))]),
            ("t3".into(), vec![("y".into(), Value::F64(f64::NAN))]),
        ]);
        assert!(matches!(bad, Err(Error::InvalidValue(_))));
        let twice = a.set_many_twins(vec![
            ("t2".into(), vec![("x".into(), Value::F64(1.0))]),
            ("t2".into(), vec![("y".into(), Value::F64(2.0))]),
        ]);
        assert!(matches!(twice, Err(Error::InvalidValue(m)) if m.contains("named twice")));
        assert_eq!(a.digest(), before);
        let delta = a
            .set_many_twins(vec![
                ("t2".into(), vec![("x".into(), Value::F64(1.0)), ("s".into(), Value::Str("é".into()))]),
                ("t1".into(), vec![("y".into(), Value::I64(3)), ("y".into(), Value::I64(4))]),
                ("t0".into(), vec![("z".into(), Value::Bool(true))]),
            ])
            .unwrap();
        let msg = pb::StateDelta::decode(delta.as_slice()).unwrap();
        assert_eq!(msg.encode_to_vec(), delta);
        let mut b = Store::new(8, 500);
        b.merge(&first).unwrap();
        let mut changed = b.merge(&delta).unwrap();
        changed.sort();
        assert_eq!(changed, ["t0", "t1", "t2"]);
        assert_eq!(b.get("t1", "y"), Some(crate::value::FieldValue::Register(Value::I64(4))));
        assert_eq!(b.get("t2", "s"), Some(crate::value::FieldValue::Register(Value::Str("é".into()))));
        assert_eq!(b.digest(), a.digest());
    }

    /// The hand-written hot-path encoder and prost agree byte for byte (prost is the schema's reference).
    #[test]
    fn fast_event_encoding_equals_prost() {
        let mut s = Store::new(42, 500);
        s.set_manual_time(Some(1_700_000_000_000));
        let cases: Vec<Vec<(String, Value)>> = vec![
            vec![("a".into(), Value::F64(1.5)), ("b".into(), Value::F64(-0.0))],
            vec![
                ("x".into(), Value::I64(-3)),
                ("y".into(), Value::Bool(true)),
                ("z".into(), Value::Str("é".into())),
                ("w".into(), Value::Bytes(vec![0, 1])),
                ("v".into(), Value::I64(i64::MIN)),
                ("u".into(), Value::F64(2.0)),
            ],
        ];
        for (k, case) in cases.into_iter().enumerate() {
            for twin in ["t1", "t0"] {
                let fast = s.set_many(twin, case.clone()).unwrap();
                let msg = pb::StateDelta::decode(fast.as_slice()).unwrap();
                assert_eq!(msg.encode_to_vec(), fast, "case {k}");
            }
        }
        let (t1, t2) = (s.intern_twin("b").unwrap(), s.intern_twin("a").unwrap());
        let f = s.intern_field("f").unwrap();
        let g = s.intern_field("g").unwrap();
        let fast = s
            .write_batch(&[t1, t2, t1], &[f, g, g], &[1.0, 2.0, 3.0], &[1_699_999_999_000, 0, 1_699_999_999_500])
            .unwrap();
        let msg = pb::StateDelta::decode(fast.as_slice()).unwrap();
        assert_eq!(msg.encode_to_vec(), fast);
        assert_eq!(msg.twins.iter().map(|t| t.twin.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(msg.twins[1].writes[0].stamp_offsets.len(), 2);
    }
}
