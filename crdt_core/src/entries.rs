//! What a delta says about numeric registers, read without a store: the node feeds the readings a peer's
//! delta carries to its history and twin intelligence as if they had been ingested locally.
use crate::clock::Stamp;
use crate::context::ReplicaId;
use crate::error::Result;
use crate::pb;
use crate::store::Limits;
use crate::view::GroupView;

/// One numeric LWW register in a delta: which twin and field, the value (an `i64` widened to `f64`), the HLC
/// stamp of the write (for sensor readings: the source time in its upper 48 bits) and its writer.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericEntry {
    /// Twin id.
    pub twin: String,
    /// Field name.
    pub field: String,
    /// The register's value.
    pub value: f64,
    /// HLC stamp of the write.
    pub stamp: Stamp,
    /// Replica that wrote it.
    pub writer: ReplicaId,
}

/// Lists the `f64` and `i64` registers of a delta, catch-up delta or state, in message order (twin by twin).
/// The message is validated as `merge` validates it, so bad bytes give the same typed error and no entries.
/// Counters, sets, non-numeric registers and multi-value registers (desired state, not readings) are left out.
pub fn numeric_entries(bytes: &[u8], limits: Limits) -> Result<Vec<NumericEntry>> {
    let msg = crate::codec::decode_checked(bytes, limits)?;
    let mut out = Vec::new();
    for ts in &msg.twins {
        for gv in &ts.writes {
            let writer = msg.replicas[gv.g.writer as usize]; // index checked by validation
            for_each_numeric(gv, |k, value, stamp| {
                let (twin, field) = (ts.twin.to_owned(), gv.fields[k].to_owned());
                out.push(NumericEntry { twin, field, value, stamp, writer });
            });
        }
    }
    Ok(out)
}

/// Calls `f(index, value, stamp)` for each `f64` or `i64` register of a write group, in field order.
pub(crate) fn for_each_numeric(gv: &GroupView<'_>, mut f: impl FnMut(usize, f64, Stamp)) {
    let g = &gv.g;
    let stamp = |k: usize| g.stamp + g.stamp_offsets.get(k).copied().unwrap_or(0);
    if g.kinds.is_empty() {
        // The numeric batch's shape: every field an f64, no kind column.
        for (k, &value) in g.f64s.iter().take(gv.fields.len()).enumerate() {
            f(k, value, stamp(k));
        }
        return;
    }
    let (mut fi, mut ii) = (0usize, 0usize);
    for k in 0..gv.fields.len() {
        let kind = g.kinds.get(k).copied().unwrap_or(pb::ValueKind::F64 as i32);
        let value = match pb::ValueKind::try_from(kind).unwrap_or(pb::ValueKind::F64) {
            pb::ValueKind::F64 => {
                fi += 1;
                g.f64s.get(fi - 1).copied()
            }
            pb::ValueKind::I64 => {
                ii += 1;
                g.i64s.get(ii - 1).map(|&x| x as f64)
            }
            _ => None,
        };
        if let Some(value) = value {
            f(k, value, stamp(k));
        }
    }
}

/// Whether a register is a reading the node's history and intelligence learn from: not the node's own
/// bookkeeping (twins and fields starting with `_`) and not a quality score (`<field>.q`, the origin's verdict).
pub fn is_reading(twin: &str, field: &str) -> bool {
    !(twin.starts_with('_') || field.starts_with('_') || field.ends_with(".q"))
}

/// The readings (see [`is_reading`]) of the deltas one [`crate::Store::merge_many_readings`] call merged, as
/// columns of interned ids: taken from the decoded message the merge used, so a received delta is decoded
/// once for the store, the history and the intelligence.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MergedReadings {
    /// Index of the delta in the call's list.
    pub delta: Vec<u32>,
    /// Twin ids.
    pub twins: Vec<u32>,
    /// Field ids.
    pub fields: Vec<u32>,
    /// Values (an `i64` widened to `f64`).
    pub values: Vec<f64>,
    /// HLC stamps of the writes (for sensor readings: the source time in the upper 48 bits).
    pub stamps: Vec<Stamp>,
}

impl MergedReadings {
    /// How many readings.
    pub fn len(&self) -> usize {
        self.twins.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.twins.is_empty()
    }

    pub(crate) fn push(&mut self, delta: u32, twin: u32, field: u32, value: f64, stamp: Stamp) {
        self.delta.push(delta);
        self.twins.push(twin);
        self.fields.push(field);
        self.values.push(value);
        self.stamps.push(stamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Store, Value};

    #[test]
    fn lists_numeric_registers_with_their_stamps_and_writers() {
        let mut a = Store::new(7, 500);
        a.set_manual_time(Some(1_700_000_000_000));
        let t = a.intern_twin("pump-1").unwrap();
        let (flow, head) = (a.intern_field("flow").unwrap(), a.intern_field("head").unwrap());
        let batch = a.write_batch(&[t, t], &[flow, head], &[12.5, 31.0], &[1_699_999_999_000, 0]).unwrap();
        let entries = numeric_entries(&batch, Limits::default()).unwrap();
        let got: Vec<_> = entries.iter().map(|e| (e.field.as_str(), e.value, e.stamp >> 16, e.writer)).collect();
        assert_eq!(got, [("flow", 12.5, 1_699_999_999_000, 7), ("head", 31.0, 1_700_000_000_000, 7)]);

        let mixed = a
            .set_many(
                "meter-1",
                vec![
                    ("pulses".into(), Value::I64(-3)),
                    ("label".into(), Value::Str("main".into())),
                    ("on".into(), Value::Bool(true)),
                    ("kw".into(), Value::F64(4.5)),
                ],
            )
            .unwrap();
        a.add("meter-1", "tags", "x").unwrap();
        let entries = numeric_entries(&mixed, Limits::default()).unwrap();
        let got: Vec<_> = entries.iter().map(|e| (e.twin.as_str(), e.field.as_str(), e.value)).collect();
        assert_eq!(got, [("meter-1", "pulses", -3.0), ("meter-1", "kw", 4.5)]);
        // A desired value is an intent, not a reading.
        let desired = a.desire("meter-1", "kw_limit", Value::F64(9.0)).unwrap();
        assert!(numeric_entries(&desired, Limits::default()).unwrap().is_empty());
        assert_eq!(numeric_entries(&a.encode_state(None), Limits::default()).unwrap().len(), 4);
    }

    #[test]
    fn a_state_lists_the_winning_register_of_each_field() {
        let (mut a, mut b) = (Store::new(1, 500), Store::new(2, 500));
        a.set_manual_time(Some(1_000));
        b.set_manual_time(Some(1_200));
        a.set("t", "x", Value::F64(1.0)).unwrap();
        let newer = b.set("t", "x", Value::F64(2.0)).unwrap();
        a.merge(&newer).unwrap();
        let entries = numeric_entries(&a.encode_state(None), Limits::default()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].value, entries[0].writer), (2.0, 2));
    }

    #[test]
    fn bad_bytes_give_the_merge_errors() {
        let mut a = Store::new(1, 500);
        let delta = a.set("t", "x", Value::F64(1.0)).unwrap();
        assert!(matches!(numeric_entries(&delta[..delta.len() - 1], Limits::default()), Err(Error::Decode(_))));
        let small = Limits { max_message_bytes: 4, ..Limits::default() };
        assert!(matches!(numeric_entries(&delta, small), Err(Error::TooLarge { .. })));
    }
}
