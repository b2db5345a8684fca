//! What a batch of numeric writes would overwrite, read by name without interning anything: the API's
//! bulk write path checks that every field it writes is new or an f64 register, and audits the value it
//! replaced, with one call per request instead of reading every twin's fields into Python.

use crate::error::{Error, Result};
use crate::store::{CellRef, Store};

/// The field holds nothing (or the twin does not exist).
pub const HELD_NOTHING: u8 = 0;
/// The field is an f64 register (and nothing else under its name).
pub const HELD_F64: u8 = 1;
/// Anything else: an integer, flag, text or bytes register, a counter, a set, a multi-value register, or
/// several kinds under one name (met in a merge).
pub const HELD_OTHER: u8 = 2;

impl Store {
    /// Row `r` names field `fields[field[r]]` of twin `twins[twin[r]]`; `kinds[r]` gets what the field holds
    /// (`HELD_*`) and `olds[r]` its f64 (NaN unless `HELD_F64`). Unknown names are `HELD_NOTHING`.
    pub fn held_f64(
        &self,
        twins: &[&str],
        fields: &[&str],
        twin: &[u32],
        field: &[u32],
        olds: &mut [f64],
        kinds: &mut [u8],
    ) -> Result<()> {
        let n = twin.len();
        if field.len() != n || olds.len() != n || kinds.len() != n {
            return Err(Error::InvalidValue("held_f64: arrays differ in length".into()));
        }
        let tids: Vec<Option<u32>> = twins.iter().map(|t| self.twin_names.get(t)).collect();
        let fids: Vec<Option<u32>> = fields.iter().map(|f| self.field_names.get(f)).collect();
        for r in 0..n {
            let (Some(&tid), Some(&fid)) = (tids.get(twin[r] as usize), fids.get(field[r] as usize)) else {
                return Err(Error::InvalidValue(format!("held_f64: row {r} indexes past the names")));
            };
            (olds[r], kinds[r]) = match (tid.and_then(|t| self.twin(t)), fid) {
                (Some(t), Some(fid)) => {
                    let start = t.slots.partition_point(|s| s.field() < fid);
                    let mut same = t.slots[start..].iter().take_while(|s| s.field() == fid);
                    match (same.next(), same.next()) {
                        (None, _) => (f64::NAN, HELD_NOTHING),
                        (Some(s), None) => match s.cell() {
                            CellRef::F64(x) => (x, HELD_F64),
                            _ => (f64::NAN, HELD_OTHER),
                        },
                        (Some(_), Some(_)) => (f64::NAN, HELD_OTHER),
                    }
                }
                _ => (f64::NAN, HELD_NOTHING),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn says_what_each_field_holds_without_interning() {
        let mut s = Store::new(1, 500);
        s.set("a", "x", Value::F64(1.5)).unwrap();
        s.set("a", "t", Value::Str("hi".into())).unwrap();
        s.set("a", "i", Value::I64(3)).unwrap();
        s.increment("a", "c", 2).unwrap();
        let (twins, fields) = (["a", "ghost"], ["x", "t", "i", "c", "new"]);
        let (twin, field) = ([0, 0, 0, 0, 0, 1], [0, 1, 2, 3, 4, 0]);
        let (mut olds, mut kinds) = ([0.0; 6], [9u8; 6]);
        s.held_f64(&twins, &fields, &twin, &field, &mut olds, &mut kinds).unwrap();
        assert_eq!(kinds, [HELD_F64, HELD_OTHER, HELD_OTHER, HELD_OTHER, HELD_NOTHING, HELD_NOTHING]);
        assert_eq!(olds[0], 1.5);
        assert!(olds[1..].iter().all(|x| x.is_nan()));
        assert_eq!(s.field_names.get("new"), None); // nothing interned
        assert!(s.held_f64(&twins, &fields, &[2], &[0], &mut [0.0], &mut [0]).is_err());
    }
}
