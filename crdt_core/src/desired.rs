//! Desired state in the store: fields held by multi-value registers ([`crate::MvReg`]). A write is one twin event
//! (one twin dot, so digests and catch-up see it) and one register event (numbered by the register, see
//! `mvreg`); its delta claims the twin dot and carries the whole register, so whoever has seen the dot
//! holds the register as it was right after the write, and a register is a function of its twin's context.
use crate::error::{Kind, Result};
use crate::mvreg::Sibling;
use crate::store::{unreachable_kind, CellRef, Store};
use crate::value::Value;

impl Store {
    /// Writes a desired value: it replaces every value of the field this replica has seen; a concurrent
    /// write elsewhere stays beside it (a conflict) until a write that has seen both.
    pub fn desire(&mut self, twin: &str, field: &str, value: Value) -> Result<Vec<u8>> {
        value.validate()?;
        self.multi_value_op(twin, field, Some(value))
    }

    /// Clears a desired field: the values this replica has seen go (no tombstone), a concurrent write stays.
    pub fn clear_desired(&mut self, twin: &str, field: &str) -> Result<Vec<u8>> {
        self.multi_value_op(twin, field, None)
    }

    /// A desired field's current values with their writes, in write order (stamp, writer, counter: the
    /// last is the newest); several while writes conflict, none after a clear. `None` if the twin has no
    /// multi-value field of that name.
    pub fn desired(&self, twin: &str, field: &str) -> Option<Vec<Sibling>> {
        let t = self.twin_by_name(twin)?;
        let fid = self.field_names.get(field)?;
        match t.slots[t.find(fid, Kind::MultiValue).ok()?].cell() {
            CellRef::Multi(r) => Some(r.read().into_iter().cloned().collect()),
            _ => None,
        }
    }

    fn multi_value_op(&mut self, twin: &str, field: &str, value: Option<Value>) -> Result<Vec<u8>> {
        let tid = self.intern_twin(twin)?;
        let fid = self.intern_field(field)?;
        self.check_kind(tid, fid, Kind::MultiValue)?;
        let stamp = self.now();
        let replica = self.replica;
        let t = self.twin_mut(tid);
        let i = t.slot_of(fid, Kind::MultiValue);
        let Some(r) = t.slots[i].multi_mut() else { unreachable_kind() };
        match value {
            Some(v) => r.write(replica, v, stamp),
            None => r.clear(replica),
        };
        let dot = t.cc.next_dot(replica);
        t.cc.insert(dot);
        Ok(self.encode_multi_value_event(tid, fid, dot))
    }
}
