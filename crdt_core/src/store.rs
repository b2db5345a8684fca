//! The twin store: many twins, each a document of named fields (LWW registers, PN-counters, OR-sets,
//! multi-value registers) with one causal context. Every local mutation returns its delta as canonical bytes; `merge` joins any delta,
//! catch-up delta or full state (see `codec`).
//!
//! Layout, for memory: twins and names are interned to dense u32 ids; a twin's fields are one `Vec<Slot>`
//! sorted by (field id, kind), 24 bytes a numeric register (its write event an index into the twin's
//! table of events), replaced in place on overwrite. No per-twin hash index:
//! binary search over the sorted slots, and new names get the highest ids so their slots append.
use std::collections::BinaryHeap;
use std::time::{SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;

use crate::clock::{Hlc, Stamp};
use crate::context::{Context, Dot, ReplicaId};
use crate::counter::PnCounter;
use crate::error::{Error, Kind, Result};
use crate::intern::{Interner, MAX_NAME_BYTES};
use crate::lww::{order_key, LwwReg};
use crate::mvreg::MvReg;
use crate::orset::OrSet;
use crate::value::{FieldValue, Value};

/// Bounds that protect a node from oversized input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded message `merge` accepts.
    pub max_message_bytes: usize,
    /// Largest twin id, field name or set element.
    pub max_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_message_bytes: 64 << 20, max_name_bytes: MAX_NAME_BYTES }
    }
}

/// The value of one field as it is written (a slot stores a number inline, see `Slot`).
/// Counters, sets and multi-value registers (rare, larger) are boxed.
// `Box<String>` / `Box<Vec<u8>>` on purpose: a thin pointer keeps `Cell` at 16 bytes; text and blobs are
// rare in sensor twins, so their extra allocation is the cheaper side.
#[allow(clippy::box_collection)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(Box<String>),
    Bytes(Box<Vec<u8>>),
    Counter(Box<PnCounter>),
    Set(Box<OrSet>),
    Multi(Box<MvReg>),
}

impl Cell {
    pub(crate) fn from_value(v: Value) -> Cell {
        match v {
            Value::F64(x) => Cell::F64(x),
            Value::I64(x) => Cell::I64(x),
            Value::Bool(x) => Cell::Bool(x),
            Value::Str(s) => Cell::Str(Box::new(s)),
            Value::Bytes(b) => Cell::Bytes(Box::new(b)),
        }
    }
}

/// A read view of a slot's cell (numbers by value, the rest borrowed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CellRef<'a> {
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(&'a String),
    Bytes(&'a Vec<u8>),
    Counter(&'a PnCounter),
    Set(&'a OrSet),
    Multi(&'a MvReg),
}

impl CellRef<'_> {
    pub(crate) fn to_value(self) -> Option<Value> {
        Some(match self {
            CellRef::F64(x) => Value::F64(x),
            CellRef::I64(x) => Value::I64(x),
            CellRef::Bool(x) => Value::Bool(x),
            CellRef::Str(s) => Value::Str(s.clone()),
            CellRef::Bytes(b) => Value::Bytes(b.clone()),
            CellRef::Counter(_) | CellRef::Set(_) | CellRef::Multi(_) => return None,
        })
    }
}

impl Cell {
    pub(crate) fn as_ref(&self) -> CellRef<'_> {
        match self {
            Cell::F64(x) => CellRef::F64(*x),
            Cell::I64(x) => CellRef::I64(*x),
            Cell::Bool(x) => CellRef::Bool(*x),
            Cell::Str(s) => CellRef::Str(s),
            Cell::Bytes(b) => CellRef::Bytes(b),
            Cell::Counter(c) => CellRef::Counter(c),
            Cell::Set(s) => CellRef::Set(s),
            Cell::Multi(r) => CellRef::Multi(r),
        }
    }
}

/// The kind byte of an inline number. Its unused values are the niche the other `Slot` variants are told
/// apart by, so a slot is 24 bytes with the field, stamp, value and event inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum NumKind {
    F64 = 0,
    I64 = 1,
    Bool = 2,
}

/// An inline number's 24-bit event code: with this bit set, the low 23 bits are the counter of writer 0 (the
/// store's own replica, so local writes never touch the event table); else they index the twin's event table.
const DIRECT: u32 = 1 << 23;
/// Event table indices an inline number can hold; a register whose event lies beyond (a twin with millions
/// of live remote write events) is boxed with its writer and counter.
const INLINE_EVENTS: usize = DIRECT as usize;

/// A register's write event as a slot is built from it: the writer (index into the store's writer table),
/// its counter, and its inline code (`DIRECT`, or an index in the twin's table; `None`: box the register).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ev {
    pub(crate) writer: u32,
    pub(crate) counter: u64,
    ix: Option<u32>,
}

/// A numeric register inline: its bits, stamp, field and the index of its write event in the twin's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Num {
    bits: u64,
    stamp: Stamp,
    field: u32,
    ev_lo: u16,
    ev_hi: u8,
    kind: NumKind,
}

impl Num {
    fn ev(&self) -> u32 {
        u32::from(self.ev_lo) | u32::from(self.ev_hi) << 16
    }

    fn set_ev(&mut self, code: u32) {
        (self.ev_lo, self.ev_hi) = (code as u16, (code >> 16) as u8);
    }
}

/// A register kept boxed: text, bytes, or a number whose event did not fit inline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Boxed {
    stamp: Stamp,
    writer: u32,
    counter: u64,
    cell: Cell,
}

/// One field of a twin (with its field id). A numeric register is 24 bytes and allocates nothing: its
/// write event (writer, counter) is an index into the twin's event table, since most fields of a twin were
/// written by the same few events. Text, bytes, counters, sets and multi-value registers are boxed and
/// keep their metadata inside.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Slot {
    Num(Num),
    Reg(u32, Box<Boxed>),
    Counter(u32, Box<PnCounter>),
    Set(u32, Box<OrSet>),
    Multi(u32, Box<MvReg>),
}

const _: () = assert!(std::mem::size_of::<Slot>() == 24);

impl Slot {
    /// A register written by `ev` at `stamp`.
    pub(crate) fn register(field: u32, ev: Ev, stamp: Stamp, cell: Cell) -> Slot {
        let num = |bits: u64, kind: NumKind, code: u32| {
            Slot::Num(Num { bits, stamp, field, ev_lo: code as u16, ev_hi: (code >> 16) as u8, kind })
        };
        match (cell, ev.ix) {
            (Cell::F64(x), Some(ix)) => num(x.to_bits(), NumKind::F64, ix),
            (Cell::I64(x), Some(ix)) => num(x as u64, NumKind::I64, ix),
            (Cell::Bool(x), Some(ix)) => num(u64::from(x), NumKind::Bool, ix),
            (Cell::Counter(c), _) => Slot::Counter(field, c),
            (Cell::Set(s), _) => Slot::Set(field, s),
            (Cell::Multi(r), _) => Slot::Multi(field, r),
            (cell, _) => Slot::Reg(field, Box::new(Boxed { stamp, writer: ev.writer, counter: ev.counter, cell })),
        }
    }

    /// Overwrites a numeric register in place with a newer float written by `ev` (inline), without building
    /// or dropping a slot: the batch hot path. False (nothing changed) when the slot is not an inline
    /// number, the event is not inline, or `stamp` is not strictly newer: the caller takes the general path.
    #[inline]
    pub(crate) fn overwrite_f64(&mut self, ev: Ev, stamp: Stamp, value: f64) -> bool {
        match (self, ev.ix) {
            (Slot::Num(n), Some(code)) if stamp > n.stamp => {
                *n = Num { bits: value.to_bits(), stamp, field: n.field, ev_lo: 0, ev_hi: 0, kind: NumKind::F64 };
                n.set_ev(code);
                true
            }
            _ => false,
        }
    }

    /// An empty counter, set or multi-value register (`cell`'s kind).
    pub(crate) fn other(field: u32, cell: Cell) -> Slot {
        Slot::register(field, Ev { writer: 0, counter: 0, ix: None }, 0, cell)
    }

    #[inline]
    pub(crate) fn field(&self) -> u32 {
        match self {
            Slot::Num(n) => n.field,
            Slot::Reg(f, _) | Slot::Counter(f, _) | Slot::Set(f, _) | Slot::Multi(f, _) => *f,
        }
    }

    /// The HLC stamp of a register's write (0 for counters, sets and multi-value registers).
    #[inline]
    pub(crate) fn stamp(&self) -> Stamp {
        match self {
            Slot::Num(n) => n.stamp,
            Slot::Reg(_, b) => b.stamp,
            _ => 0,
        }
    }

    pub(crate) fn cell(&self) -> CellRef<'_> {
        match self {
            Slot::Num(n) => match n.kind {
                NumKind::F64 => CellRef::F64(f64::from_bits(n.bits)),
                NumKind::I64 => CellRef::I64(n.bits as i64),
                NumKind::Bool => CellRef::Bool(n.bits != 0),
            },
            Slot::Reg(_, b) => b.cell.as_ref(),
            Slot::Counter(_, c) => CellRef::Counter(c),
            Slot::Set(_, s) => CellRef::Set(s),
            Slot::Multi(_, r) => CellRef::Multi(r),
        }
    }

    #[inline]
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Slot::Counter(..) => Kind::Counter,
            Slot::Set(..) => Kind::Set,
            Slot::Multi(..) => Kind::MultiValue,
            Slot::Num(_) | Slot::Reg(..) => Kind::Register,
        }
    }

    pub(crate) fn counter_mut(&mut self) -> Option<&mut PnCounter> {
        match self {
            Slot::Counter(_, c) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn set_mut(&mut self) -> Option<&mut OrSet> {
        match self {
            Slot::Set(_, s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn multi_mut(&mut self) -> Option<&mut MvReg> {
        match self {
            Slot::Multi(_, r) => Some(r),
            _ => None,
        }
    }
}

fn kind_rank(kind: Kind) -> u8 {
    match kind {
        Kind::Register => 0,
        Kind::Counter => 1,
        Kind::Set => 2,
        Kind::MultiValue => 3,
    }
}

/// One twin: its causal context, its fields, and the write events its inline registers point to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Twin {
    pub(crate) cc: Context,
    pub(crate) slots: Vec<Slot>,
    /// (writer, counter) of register writes. Appended once per event that wins a field; entries no slot
    /// points to any more are dropped when the table reaches twice the live count of its last compaction
    /// (plus 2), so a twin overwritten batch after batch keeps one to three entries.
    events: Vec<(u32, u64)>,
    live_events: u32,
}

impl Twin {
    /// The write event of a register slot: writer index and counter (0, 0 for other kinds).
    #[inline]
    pub(crate) fn write_of(&self, s: &Slot) -> (u32, u64) {
        match s {
            Slot::Num(n) if n.ev() & DIRECT != 0 => (0, u64::from(n.ev() & !DIRECT)),
            Slot::Num(n) => self.events.get(n.ev() as usize).copied().unwrap_or((0, 0)),
            Slot::Reg(_, b) => (b.writer, b.counter),
            _ => (0, 0),
        }
    }

    /// The event (`writer`, `counter`) for the slots it is about to write: the table's last entry when it
    /// is that event, else a new entry (after dropping dead ones when the table has grown).
    pub(crate) fn event(&mut self, writer: u32, counter: u64) -> Ev {
        if writer == 0 && counter < u64::from(DIRECT) {
            return Ev { writer, counter, ix: Some(DIRECT | counter as u32) };
        }
        let n = self.events.len();
        if n > 0 && self.events[n - 1] == (writer, counter) {
            return Ev { writer, counter, ix: Some(n as u32 - 1) };
        }
        if n >= 2 * self.live_events as usize + 2 {
            self.compact_events();
        }
        let ix = self.events.len();
        if ix >= INLINE_EVENTS {
            return Ev { writer, counter, ix: None };
        }
        if self.events.len() == self.events.capacity() {
            self.events.reserve_exact((ix / 4).max(1));
        }
        self.events.push((writer, counter));
        Ev { writer, counter, ix: Some(ix as u32) }
    }

    /// Drops the events no slot points to, renumbering the slots' indices (order kept), and releases the
    /// table's spare capacity.
    fn compact_events(&mut self) {
        const DEAD: u32 = u32::MAX;
        let mut new_ix = vec![DEAD; self.events.len()];
        let mut kept: Vec<(u32, u64)> = Vec::new();
        for s in &mut self.slots {
            if let Slot::Num(n) = s {
                let old = n.ev() as usize;
                let Some(slot_ix) = new_ix.get_mut(old) else { continue }; // DIRECT codes lie beyond
                if *slot_ix == DEAD {
                    *slot_ix = kept.len() as u32;
                    kept.push(self.events[old]);
                }
                n.set_ev(*slot_ix);
            }
        }
        kept.shrink_to_fit();
        self.live_events = kept.len() as u32;
        self.events = kept;
    }

    pub(crate) fn find(&self, field: u32, kind: Kind) -> std::result::Result<usize, usize> {
        // New names get the highest ids, so a new field usually belongs at the end: skip the search.
        match self.slots.last() {
            None => return Err(0),
            Some(last) if last.field() < field => return Err(self.slots.len()),
            _ => {}
        }
        let key = (field, kind_rank(kind));
        self.slots.binary_search_by_key(&key, |s| (s.field(), kind_rank(s.kind())))
    }

    /// The slot of a counter, set or multi-value field, created empty if missing.
    pub(crate) fn slot_of(&mut self, field: u32, kind: Kind) -> usize {
        match self.find(field, kind) {
            Ok(i) => i,
            Err(i) => {
                let cell = match kind {
                    Kind::Set => Cell::Set(Box::default()),
                    Kind::MultiValue => Cell::Multi(Box::default()),
                    Kind::Counter | Kind::Register => Cell::Counter(Box::default()),
                };
                self.insert_slot(i, Slot::other(field, cell));
                i
            }
        }
    }

    /// The kind a field holds, preferring register, then counter, then set, then multi-value register
    /// (concurrent writes of different kinds to one name can meet in a merge; all are kept, reads prefer in
    /// this order).
    fn kind_of(&self, field: u32) -> Option<Kind> {
        if self.slots.last().is_none_or(|last| last.field() < field) {
            return None;
        }
        let start = self.slots.partition_point(|s| s.field() < field);
        self.slots.get(start).filter(|s| s.field() == field).map(Slot::kind)
    }
}

/// Where physical time comes from: the system clock (with an offset, the test hook for skewed clocks) or a
/// value set by the host (deterministic tests and simulations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeSource {
    System { offset_ms: i64 },
    Manual(u64),
}

/// Counters a host exports as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Twins with at least one event.
    pub twins: usize,
    /// Field slots across all twins.
    pub fields: usize,
    /// Writers known: this replica and every writer seen in a merge.
    pub writers: usize,
    /// Local register writes that lost to a newer value already present (late readings).
    pub superseded_writes: u64,
    /// Deltas merged.
    pub merges: u64,
}

/// The twin store of one replica.
pub struct Store {
    pub(crate) replica: ReplicaId,
    pub(crate) hlc: Hlc,
    time: TimeSource,
    /// Gate remote stamps on merge; off for scratch stores that only join deltas.
    pub(crate) gate: bool,
    pub(crate) writers: Vec<ReplicaId>,
    writer_index: HashMap<ReplicaId, u32>,
    pub(crate) twin_names: Interner,
    pub(crate) field_names: Interner,
    pub(crate) twins: Vec<Option<Twin>>,
    pub(crate) limits: Limits,
    pub(crate) superseded: u64,
    pub(crate) merges: u64,
    /// The last batch run's encoded field names (see `batch::NamesBlock`).
    pub(crate) names_block: crate::batch::NamesBlock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("replica", &self.replica).field("stats", &self.stats()).finish()
    }
}

/// A local register write before it is applied: interned field, value.
type PendingWrite = (u32, Cell);

/// What one local event wrote, per field: interned field, stamp, value.
pub(crate) type EventWrites = Vec<(u32, Stamp, Cell)>;

/// One twin's register event: twin id, its dot, what it wrote.
pub(crate) type RegisterEvent = (u32, Dot, EventWrites);

impl Store {
    /// A store for replica `replica` that refuses remote stamps more than `max_offset_ms` ahead.
    pub fn new(replica: ReplicaId, max_offset_ms: u64) -> Self {
        Self {
            replica,
            hlc: Hlc::new(max_offset_ms),
            time: TimeSource::System { offset_ms: 0 },
            gate: true,
            // Writer 0 is this replica from the start (its events below 2^23 are coded in the slots
            // directly, see `DIRECT`), whatever a recovery or a peer's delta brings in first.
            writers: vec![replica],
            writer_index: HashMap::from([(replica, 0)]),
            twin_names: Interner::new(),
            field_names: Interner::new(),
            twins: Vec::new(),
            limits: Limits::default(),
            superseded: 0,
            merges: 0,
            names_block: crate::batch::NamesBlock::default(),
        }
    }

    /// A store used only to join deltas: no clock gate, never writes.
    pub fn scratch() -> Self {
        let mut s = Self::new(0, u64::MAX / 2);
        s.gate = false;
        s
    }

    /// This replica's id.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// Current limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Replaces the limits.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Uses the system clock shifted by `offset_ms` (a skewed clock, for tests and simulations).
    pub fn set_clock_offset_ms(&mut self, offset_ms: i64) {
        self.time = TimeSource::System { offset_ms };
    }

    /// Freezes physical time at `ms` (deterministic tests); `None` returns to the system clock.
    pub fn set_manual_time(&mut self, ms: Option<u64>) {
        self.time = match ms {
            Some(ms) => TimeSource::Manual(ms),
            None => TimeSource::System { offset_ms: 0 },
        };
    }

    /// Physical milliseconds now, as this store sees them.
    pub fn physical_now(&self) -> u64 {
        match self.time {
            TimeSource::Manual(ms) => ms,
            TimeSource::System { offset_ms } => {
                let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                wall.saturating_add_signed(offset_ms)
            }
        }
    }

    /// A fresh HLC stamp.
    pub fn now(&mut self) -> Stamp {
        let phys = self.physical_now();
        self.hlc.now(phys)
    }

    /// The clock's high-water mark, for the host to persist.
    pub fn clock_high_water(&self) -> Stamp {
        self.hlc.high_water()
    }

    /// Restores a persisted high-water mark.
    pub fn restore_clock(&mut self, high_water: Stamp) {
        self.hlc.restore(high_water);
    }

    /// The clock gate in milliseconds.
    pub fn max_offset_ms(&self) -> u64 {
        self.hlc.max_offset_ms()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> StoreStats {
        let live = self.twins.iter().flatten();
        StoreStats {
            twins: live.clone().count(),
            fields: live.map(|t| t.slots.len()).sum(),
            writers: self.writers.len(),
            superseded_writes: self.superseded,
            merges: self.merges,
        }
    }

    // ----- interning -------------------------------------------------------------------------------------

    /// The dense id of a twin (interned on first use; the twin exists once something is written to it).
    pub fn intern_twin(&mut self, name: &str) -> Result<u32> {
        self.twin_names.intern(name, self.limits.max_name_bytes)
    }

    /// The dense id of a field name (shared by all twins).
    pub fn intern_field(&mut self, name: &str) -> Result<u32> {
        self.field_names.intern(name, self.limits.max_name_bytes)
    }

    /// The name of an interned twin id.
    pub fn twin_name(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.twin_names.len()).then(|| self.twin_names.name(id))
    }

    /// The name of an interned field id.
    pub fn field_name(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.field_names.len()).then(|| self.field_names.name(id))
    }

    pub(crate) fn writer_ix(&mut self, replica: ReplicaId) -> u32 {
        if let Some(&ix) = self.writer_index.get(&replica) {
            return ix;
        }
        let ix = self.writers.len() as u32;
        self.writers.push(replica);
        self.writer_index.insert(replica, ix);
        ix
    }

    pub(crate) fn twin_mut(&mut self, tid: u32) -> &mut Twin {
        let i = tid as usize;
        if self.twins.len() <= i {
            self.twins.resize_with(i + 1, || None);
        }
        self.twins[i].get_or_insert_with(Twin::default)
    }

    pub(crate) fn twin(&self, tid: u32) -> Option<&Twin> {
        self.twins.get(tid as usize).and_then(Option::as_ref)
    }

    pub(crate) fn twin_by_name(&self, name: &str) -> Option<&Twin> {
        self.twin_names.get(name).and_then(|t| self.twin(t))
    }

    /// Joins a register write into a twin: it replaces the current value only if it wins the LWW order
    /// (`or_equal` lets a later item of the same local batch replace an earlier one). Returns whether it did.
    pub(crate) fn upsert_register(twin: &mut Twin, writers: &[ReplicaId], write: Slot, or_equal: bool) -> bool {
        match twin.find(write.field(), Kind::Register) {
            Ok(i) => {
                let key = |s: &Slot| {
                    let (w, counter) = twin.write_of(s);
                    order_key(s.stamp(), Dot::new(writers.get(w as usize).copied().unwrap_or(0), counter))
                };
                let (new_key, cur_key) = (key(&write), key(&twin.slots[i]));
                let wins = new_key > cur_key || (or_equal && new_key == cur_key);
                if wins {
                    twin.slots[i] = write;
                }
                wins
            }
            Err(i) => {
                twin.insert_slot(i, write);
                true
            }
        }
    }

    pub(crate) fn check_kind(&self, tid: u32, fid: u32, requested: Kind) -> Result<()> {
        match self.twin(tid).and_then(|t| t.kind_of(fid)) {
            Some(existing) if existing != requested => Err(Error::TypeConflict {
                twin: self.twin_names.name(tid).to_owned(),
                field: self.field_names.name(fid).to_owned(),
                existing,
                requested,
            }),
            _ => Ok(()),
        }
    }

    // ----- local mutations (each returns its delta) ------------------------------------------------------

    /// Writes one register.
    pub fn set(&mut self, twin: &str, field: &str, value: Value) -> Result<Vec<u8>> {
        self.set_many(twin, vec![(field.to_owned(), value)])
    }

    /// Writes several registers of one twin as one event (one dot, one stamp). A name given twice keeps
    /// its last value.
    pub fn set_many(&mut self, twin: &str, values: Vec<(String, Value)>) -> Result<Vec<u8>> {
        self.set_many_twins(vec![(twin.to_owned(), values)])
    }

    /// [`Store::set_many`] for several distinct twins at once, with one delta for them all (what the join
    /// of their deltas would be, without encoding and decoding each): a batch of records is one log
    /// record. Every value, name and field kind is checked before anything is written, so an error
    /// leaves the store as it was; a twin named twice is an error.
    pub fn set_many_twins(&mut self, items: Vec<(String, Vec<(String, Value)>)>) -> Result<Vec<u8>> {
        let mut checked: Vec<(u32, Vec<PendingWrite>)> = Vec::with_capacity(items.len());
        for (twin, values) in items {
            for (_, v) in &values {
                v.validate()?;
            }
            let tid = self.intern_twin(&twin)?;
            if checked.iter().any(|(t, _)| *t == tid) {
                return Err(Error::InvalidValue(format!("set_many_twins: the twin {twin:?} is named twice")));
            }
            let mut pending: Vec<PendingWrite> = Vec::with_capacity(values.len());
            for (name, v) in values {
                let fid = self.intern_field(&name)?;
                self.check_kind(tid, fid, Kind::Register)?;
                pending.push((fid, Cell::from_value(v)));
            }
            checked.push((tid, pending));
        }
        let stamp = self.now();
        let wix = self.writer_ix(self.replica);
        let replica = self.replica;
        let writers = std::mem::take(&mut self.writers);
        let mut events: Vec<RegisterEvent> = Vec::with_capacity(checked.len());
        for (tid, pending) in checked {
            let t = self.twin_mut(tid);
            let dot = t.cc.next_dot(replica);
            // A name given twice keeps its last value.
            let mut writes: EventWrites = Vec::with_capacity(pending.len());
            for (fid, cell) in pending.into_iter().rev() {
                if !writes.iter().any(|w| w.0 == fid) {
                    writes.push((fid, stamp, cell));
                }
            }
            writes.reverse();
            let ev = t.event(wix, dot.counter);
            for (fid, _, cell) in &writes {
                Store::upsert_register(t, &writers, Slot::register(*fid, ev, stamp, cell.clone()), true);
            }
            t.cc.insert(dot);
            events.push((tid, dot, writes));
        }
        self.writers = writers;
        Ok(self.encode_register_events(&events))
    }

    /// Adds `amount` (negative to subtract) to a PN-counter.
    pub fn increment(&mut self, twin: &str, field: &str, amount: i64) -> Result<Vec<u8>> {
        let tid = self.intern_twin(twin)?;
        let fid = self.intern_field(field)?;
        self.check_kind(tid, fid, Kind::Counter)?;
        self.now();
        let replica = self.replica;
        let t = self.twin_mut(tid);
        let dot = t.cc.next_dot(replica);
        let i = match t.find(fid, Kind::Counter) {
            Ok(i) => i,
            Err(i) => {
                t.insert_slot(i, Slot::other(fid, Cell::Counter(Box::default())));
                i
            }
        };
        let Some(c) = t.slots[i].counter_mut() else { unreachable_kind() };
        if c.apply(dot, amount).is_none() {
            if c.entries().is_empty() {
                t.slots.remove(i);
            }
            return Err(Error::CounterOverflow { twin: twin.to_owned(), field: field.to_owned() });
        }
        t.cc.insert(dot);
        Ok(self.encode_counter_event(tid, fid, dot))
    }

    /// Adds `element` to an add-wins OR-set.
    pub fn add(&mut self, twin: &str, field: &str, element: &str) -> Result<Vec<u8>> {
        self.set_op(twin, field, element, true)
    }

    /// Removes `element` from an OR-set (the adds this replica has seen; a concurrent add survives).
    pub fn remove(&mut self, twin: &str, field: &str, element: &str) -> Result<Vec<u8>> {
        self.set_op(twin, field, element, false)
    }

    fn set_op(&mut self, twin: &str, field: &str, element: &str, add: bool) -> Result<Vec<u8>> {
        self.set_ops(twin, field, &[(add, element)])
    }

    /// Adds (`true`) and removes (`false`) elements of one OR-set in order, each its own event as
    /// [`Store::add`] and [`Store::remove`] make it, and returns one delta: the set after the last, which
    /// is the join of the deltas the calls one by one return (each holds the whole set, and a later one
    /// includes an earlier one). The set travels whole in every delta (see `orset`), so joining a request's
    /// 1,000 adds one delta at a time was quadratic in the set's size. Checks every element first: all or
    /// nothing.
    pub fn set_ops(&mut self, twin: &str, field: &str, ops: &[(bool, &str)]) -> Result<Vec<u8>> {
        if ops.is_empty() {
            return Err(Error::InvalidValue(format!("{twin}.{field}: no set operation to apply")));
        }
        for (_, element) in ops {
            crate::intern::check_name(element, self.limits.max_name_bytes)?;
        }
        let tid = self.intern_twin(twin)?;
        let fid = self.intern_field(field)?;
        self.check_kind(tid, fid, Kind::Set)?;
        self.now();
        let replica = self.replica;
        let t = self.twin_mut(tid);
        let i = match t.find(fid, Kind::Set) {
            Ok(i) => i,
            Err(i) => {
                t.insert_slot(i, Slot::other(fid, Cell::Set(Box::default())));
                i
            }
        };
        let mut events = Vec::with_capacity(ops.len());
        for &(add, element) in ops {
            let dot = t.cc.next_dot(replica);
            let Some(s) = t.slots[i].set_mut() else { unreachable_kind() };
            if add {
                s.add(element, dot);
            } else {
                s.remove(element, dot);
            }
            t.cc.insert(dot);
            events.push(dot);
        }
        Ok(self.encode_set_event(tid, fid, &events))
    }

    // ----- reads -----------------------------------------------------------------------------------------

    /// Ids of the twins that exist, sorted.
    pub fn twins(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .twins
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_some())
            .map(|(i, _)| self.twin_names.name(i as u32).to_owned())
            .collect();
        names.sort_unstable();
        names
    }

    /// At most `limit` ids of existing twins that start with `prefix` and sort after `after`, sorted: a
    /// listing in pages, so a reader of a large store (a watcher's initial snapshot) holds one page of names
    /// rather than all of them. One pass over the twins per page, keeping only the `limit` smallest.
    pub fn twins_page(&self, after: Option<&str>, prefix: &str, limit: usize) -> Vec<String> {
        let mut smallest: BinaryHeap<&str> = BinaryHeap::with_capacity(limit.saturating_add(1).min(1 << 16));
        let names = self.twins.iter().enumerate().filter(|(_, t)| t.is_some());
        for name in names.map(|(i, _)| self.twin_names.name(i as u32)) {
            if !name.starts_with(prefix) || after.is_some_and(|a| name <= a) {
                continue;
            }
            if smallest.len() < limit {
                smallest.push(name);
            } else if smallest.peek().is_some_and(|&largest| name < largest) {
                smallest.pop();
                smallest.push(name);
            }
        }
        smallest.into_sorted_vec().into_iter().map(str::to_owned).collect()
    }

    /// Whether a twin exists.
    pub fn contains_twin(&self, twin: &str) -> bool {
        self.twin_by_name(twin).is_some()
    }

    fn read_slot(&self, slot: &Slot) -> FieldValue {
        match slot.cell() {
            CellRef::Counter(c) => {
                FieldValue::Counter(c.value().unwrap_or(if c.entries().is_empty() { 0 } else { i64::MAX }))
            }
            CellRef::Set(s) => FieldValue::Set(s.elements().map(str::to_owned).collect()),
            CellRef::Multi(r) => FieldValue::MultiValue(r.read().into_iter().map(|s| s.value.clone()).collect()),
            cell => FieldValue::Register(cell.to_value().unwrap_or(Value::Bool(false))),
        }
    }

    /// A field's current value (a register before a counter before a set before a multi-value register,
    /// should a merge have met several kinds under one name).
    pub fn get(&self, twin: &str, field: &str) -> Option<FieldValue> {
        let t = self.twin_by_name(twin)?;
        let fid = self.field_names.get(field)?;
        let start = t.slots.partition_point(|s| s.field() < fid);
        t.slots.get(start).filter(|s| s.field() == fid).map(|s| self.read_slot(s))
    }

    /// A register with the write that set it.
    pub fn entry(&self, twin: &str, field: &str) -> Option<LwwReg> {
        let t = self.twin_by_name(twin)?;
        let fid = self.field_names.get(field)?;
        let s = &t.slots[t.find(fid, Kind::Register).ok()?];
        let (w, counter) = t.write_of(s);
        let writer = self.writers.get(w as usize).copied().unwrap_or(0);
        Some(LwwReg::new(s.cell().to_value()?, s.stamp(), Dot::new(writer, counter)))
    }

    /// Every field of a twin with the version of its state, sorted by name (the field `get` reads): a
    /// digest of the events that made the state (a register's write, a counter's last dot per writer, a
    /// set's or a multi-value register's own causal context). Replicas that hold the same events give the
    /// same version and every later event of the field gives another, so (twin, field, version) names one
    /// state of a field across the cluster (what a northbound sink keys a change by).
    pub fn field_versions(&self, twin: &str) -> Option<Vec<(String, u64)>> {
        let t = self.twin_by_name(twin)?;
        let mut out: Vec<(String, u64)> = Vec::with_capacity(t.slots.len());
        let mut last: Option<u32> = None;
        for s in &t.slots {
            if last == Some(s.field()) {
                continue;
            }
            last = Some(s.field());
            let version = match s.cell() {
                CellRef::Counter(c) => fnv(c.entries().iter().flat_map(|e| [e.replica, e.counter])),
                // Tagged: a set's context is a version vector like a multi-value register's (see `orset`),
                // and two fields of one twin must not share a version.
                CellRef::Set(set) => fnv([set.context().digest(), u64::from(b's')]),
                CellRef::Multi(r) => r.context().digest(),
                _ => {
                    let (w, counter) = t.write_of(s);
                    let writer = self.writers.get(w as usize).copied().unwrap_or(0);
                    fnv([s.stamp(), writer, counter])
                }
            };
            out.push((self.field_names.name(s.field()).to_owned(), version));
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }

    /// All fields of a twin, sorted by name (one value per name, as `get`).
    pub fn fields(&self, twin: &str) -> Option<Vec<(String, FieldValue)>> {
        let t = self.twin_by_name(twin)?;
        let mut out: Vec<(String, FieldValue)> = Vec::with_capacity(t.slots.len());
        let mut last: Option<u32> = None;
        for s in &t.slots {
            if last == Some(s.field()) {
                continue;
            }
            last = Some(s.field());
            out.push((self.field_names.name(s.field()).to_owned(), self.read_slot(s)));
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }

    /// Numeric register values and stamps for parallel arrays of interned ids (the analytics hot path).
    /// Missing or non-numeric fields read as NaN with stamp 0; integers and flags read as floats.
    pub fn read_numeric(
        &self,
        twin_ids: &[u32],
        field_ids: &[u32],
        values: &mut [f64],
        stamps: &mut [u64],
    ) -> Result<()> {
        let n = twin_ids.len();
        if field_ids.len() != n || values.len() != n || stamps.len() != n {
            return Err(Error::InvalidValue("read arrays differ in length".into()));
        }
        for i in 0..n {
            let slot =
                self.twin(twin_ids[i]).and_then(|t| t.find(field_ids[i], Kind::Register).ok().map(|j| &t.slots[j]));
            (values[i], stamps[i]) = match slot.map(|s| (s.cell(), s.stamp())) {
                Some((CellRef::F64(x), st)) => (x, st),
                Some((CellRef::I64(x), st)) => (x as f64, st),
                Some((CellRef::Bool(x), st)) => (f64::from(u8::from(x)), st),
                _ => (f64::NAN, 0),
            };
        }
        Ok(())
    }

    /// A twin's causal context (what it has seen).
    pub fn context(&self, twin: &str) -> Option<&Context> {
        self.twin_by_name(twin).map(|t| &t.cc)
    }
}

#[cold]
pub(crate) fn unreachable_kind() -> ! {
    // `find` located a slot of the requested kind, so the match above always succeeds.
    unreachable!("slot kind changed under a find")
}

/// FNV-1a over little-endian words (stable on every platform and build, as `Context::digest`).
fn fnv(words: impl IntoIterator<Item = u64>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot gives back every value, stamp and event it was given: numbers inline with their event coded
    /// directly (writer 0, counter below 2^23) or as an index in the twin's table, boxed with their writer and
    /// counter when the table is full; text and bytes always boxed.
    #[test]
    fn slots_keep_values_and_events_exactly() {
        let values =
            [Value::F64(-0.5), Value::F64(1e300), Value::I64(i64::MIN), Value::Bool(true), Value::Str("x".into())];
        let mut t = Twin::default();
        let counters = [1, u64::from(DIRECT) - 1, u64::from(DIRECT), 1 << 56, u64::MAX];
        for (writer, counter) in [0, 3].into_iter().flat_map(|w| counters.map(|c| (w, c))) {
            for v in &values {
                let ev = t.event(writer, counter);
                let s = Slot::register(7, ev, 99, Cell::from_value(v.clone()));
                assert_eq!((s.field(), s.stamp(), t.write_of(&s)), (7, 99, (writer, counter)));
                assert_eq!(s.cell().to_value().as_ref(), Some(v));
                assert_eq!(s.kind(), Kind::Register);
                let full = Ev { ix: None, ..ev };
                let boxed = Slot::register(7, full, 99, Cell::from_value(v.clone()));
                assert!(matches!(boxed, Slot::Reg(..)));
                assert_eq!((t.write_of(&boxed), boxed.cell().to_value().as_ref()), ((writer, counter), Some(v)));
            }
        }
        // Writer 0's events below 2^23 take no table entry; another writer's take one, reused by repeats.
        let mut t = Twin::default();
        t.event(0, u64::from(DIRECT) - 1);
        assert!(t.events.is_empty());
        assert_eq!(t.event(3, 1), t.event(3, 1));
        assert_eq!(t.events, [(3, 1)]);
        let mut s = Slot::other(1, Cell::Counter(Box::default()));
        assert!(s.counter_mut().is_some() && s.set_mut().is_none() && s.kind() == Kind::Counter);
        assert_eq!((s.field(), s.stamp(), t.write_of(&s)), (1, 0, (0, 0)));
    }

    /// Writer 0 is the store's own replica even when a peer's delta arrives first: its writes stay coded
    /// in the slots, only the peer's event takes a table entry.
    #[test]
    fn own_writes_take_no_event_table_entry_after_a_merge() {
        let (mut a, mut b) = (Store::new(1, 500), Store::new(2, 500));
        b.merge(&a.set("t", "x", Value::F64(1.0)).unwrap()).unwrap();
        b.set("t", "y", Value::F64(2.0)).unwrap();
        assert_eq!(b.twin_by_name("t").unwrap().events, [(1, 1)]);
        assert_eq!((b.entry("t", "x").unwrap().dot, b.entry("t", "y").unwrap().dot), (Dot::new(1, 1), Dot::new(2, 1)));
    }

    /// Events no slot points to are dropped and the slots renumbered: a twin overwritten event after event
    /// keeps a table of at most three entries, and every slot still names its own write.
    #[test]
    fn dead_events_are_dropped_and_slots_keep_their_writes() {
        let mut t = Twin::default();
        for counter in 1..=1000u64 {
            let ev = t.event(1, counter);
            // Field 0 is written by every event, field `counter` once (it keeps that event alive).
            let at = t.find(0, Kind::Register);
            let slot = Slot::register(0, ev, counter, Cell::F64(counter as f64));
            match at {
                Ok(i) => t.slots[i] = slot,
                Err(i) => t.insert_slot(i, slot),
            }
            if counter % 100 == 0 {
                let at = t.find(counter as u32, Kind::Register).unwrap_err();
                t.insert_slot(at, Slot::register(counter as u32, ev, counter, Cell::I64(-1)));
            }
        }
        assert!(t.events.len() <= 2 * t.live_events as usize + 2, "{} events", t.events.len());
        assert!(t.events.len() <= 24, "{} events for 11 slots", t.events.len());
        for s in &t.slots {
            let want = if s.field() == 0 { 1000 } else { u64::from(s.field()) };
            assert_eq!(t.write_of(s), (1, want));
        }
    }
}
