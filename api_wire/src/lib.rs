//! The application API's `Write` request decoded natively, into columns.
//!
//! A bulk write (many twins, each reporting f64 readings; or `NumericColumns`) costs Python about 1.5 µs
//! per op just to read the protobuf message. Here the request is decoded with prost (types generated from
//! `proto/drsdtp/wire/v1/api.proto` by `make proto`, checked for drift in CI like the Python stubs) into
//! flat columns: the twins in request order, each twin's ops as a range of rows, the distinct field names
//! once, and every value in one array. Python then checks once per twin and once per distinct field name
//! and applies the whole request with one native batch write.
//!
//! The other common kinds of op (counter increments, set adds and removes, f64 desired values, desired
//! fields cleared) come out as a second set of columns, one row an op in request order ([`OtherOps`]), so
//! such a request takes the same native path. Anything else (creates, deletes, desired values other than
//! f64, `clear_desired: false`, a body that does not parse) is [`Decoded::General`]: the node decodes it
//! with the Python protobuf runtime and takes its general path, as before. This crate never refuses a
//! request; it only recognises the bulk shape.

use std::collections::HashMap;

use prost::Message;

#[allow(missing_docs, clippy::all)]
#[rustfmt::skip]
pub mod pb;

pub use pb::NumericColumns;

/// A `WriteRequest` in the bulk shape: every `TwinWrite` only reports f64 values (optionally under
/// `if_version`); a twin may be listed more than once (the SDK joins concurrent writes by concatenating
/// their twins); `columns` as sent.
#[derive(Debug, Default, PartialEq)]
pub struct WriteColumns {
    /// `ack` (an `AckLevel` number), `replicas`, `replicate_timeout_ms`, `actor`, `reason` as sent.
    pub ack: i32,
    /// Peers that must acknowledge (`ACK_REPLICATED`).
    pub replicas: u32,
    /// How long to wait for them.
    pub replicate_timeout_ms: u32,
    /// Who writes, as the caller states it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The request's idempotency key ("": none); the node digests the request as the general path does.
    pub idempotency_key: String,
    /// `twins[i].twin_id`, in request order.
    pub twins: Vec<String>,
    /// `(i, version)` for each twin `i` that sets `if_version`.
    pub if_versions: Vec<(u32, u64)>,
    /// Twin `i`'s ops are rows `starts[i]..starts[i + 1]` (`twins.len() + 1` entries).
    pub starts: Vec<u32>,
    /// The distinct field names of the ops, in order of first use.
    pub names: Vec<String>,
    /// Row `r` writes field `names[field[r]]`.
    pub field: Vec<u32>,
    /// Row `r` reports `values[r]`.
    pub values: Vec<f64>,
    /// The request's numeric columns, as sent.
    pub columns: NumericColumns,
    /// The ops other than f64 reports.
    pub other: OtherOps,
}

/// Op kinds in [`OtherOps::kind`].
pub const INCREMENT: u8 = 1;
/// An element added to a set.
pub const ADD: u8 = 2;
/// An element removed from a set.
pub const REMOVE: u8 = 3;
/// An f64 desired value.
pub const DESIRE: u8 = 4;
/// A desired field cleared (`clear_desired: true`).
pub const CLEAR: u8 = 5;

/// A request's ops other than f64 reports, one row each, in request order: row `r` is of kind
/// `kind[r]` on field `names[field[r]]` of twin `twins[twin[r]]` (the listing index, as in
/// [`WriteColumns::twins`]), with `amount[r]` (INCREMENT), `element[r]` (ADD, REMOVE) or `value[r]`
/// (DESIRE); the other two are 0, "" and 0.0.
#[derive(Debug, Default, PartialEq)]
pub struct OtherOps {
    /// The op's twin listing.
    pub twin: Vec<u32>,
    /// INCREMENT, ADD, REMOVE, DESIRE or CLEAR.
    pub kind: Vec<u8>,
    /// The distinct field names of these ops, in order of first use.
    pub names: Vec<String>,
    /// Row `r`'s field.
    pub field: Vec<u32>,
    /// An increment's amount.
    pub amount: Vec<i64>,
    /// A set op's element.
    pub element: Vec<String>,
    /// A desired value.
    pub value: Vec<f64>,
}

impl OtherOps {
    fn push(&mut self, names: &mut HashMap<String, u32>, twin: u32, field: String, op: pb::field_op::Op) -> bool {
        use pb::field_op::Op;
        let (kind, amount, element, value) = match op {
            Op::Increment(amount) => (INCREMENT, amount, String::new(), 0.0),
            Op::Add(element) => (ADD, 0, element, 0.0),
            Op::Remove(element) => (REMOVE, 0, element, 0.0),
            Op::Desire(pb::FieldValue { value: Some(pb::field_value::Value::F64(v)), .. }) => {
                (DESIRE, 0, String::new(), v)
            }
            Op::ClearDesired(true) => (CLEAR, 0, String::new(), 0.0),
            _ => return false,
        };
        let next = names.len() as u32;
        let ix = *names.entry(field).or_insert(next);
        if ix == next {
            self.names.push(String::new()); // filled from the map at the end
        }
        self.twin.push(twin);
        self.kind.push(kind);
        self.field.push(ix);
        self.amount.push(amount);
        self.element.push(element);
        self.value.push(value);
        true
    }
}

/// What [`decode_write`] made of a request.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// The bulk shape, in columns.
    Columns(Box<WriteColumns>),
    /// Anything else, with the reason (for counting): the general path decodes it.
    General(&'static str),
}

/// Decodes a serialized `WriteRequest` (see [`Decoded`]).
pub fn decode_write(body: &[u8]) -> Decoded {
    let Ok(request) = pb::WriteRequest::decode(body) else {
        return Decoded::General("does not parse");
    };
    match columns(request) {
        Ok(columns) => Decoded::Columns(Box::new(columns)),
        Err(reason) => Decoded::General(reason),
    }
}

fn columns(request: pb::WriteRequest) -> Result<WriteColumns, &'static str> {
    let cols = request.columns.unwrap_or_default();
    if request.twins.is_empty() && cols.values.is_empty() {
        return Err("nothing to write");
    }
    let rows: usize = request.twins.iter().map(|t| t.ops.len()).sum();
    let mut out = WriteColumns {
        ack: request.ack,
        replicas: request.replicas,
        replicate_timeout_ms: request.replicate_timeout_ms,
        actor: request.actor,
        reason: request.reason,
        idempotency_key: request.idempotency_key,
        twins: Vec::with_capacity(request.twins.len()),
        starts: Vec::with_capacity(request.twins.len() + 1),
        field: Vec::with_capacity(rows),
        values: Vec::with_capacity(rows),
        columns: cols,
        ..WriteColumns::default()
    };
    out.starts.push(0);
    let mut name_ix: HashMap<String, u32> = HashMap::new();
    let mut other_ix: HashMap<String, u32> = HashMap::new();
    for (i, tw) in request.twins.into_iter().enumerate() {
        if tw.create.is_some() || tw.delete {
            return Err("create or delete");
        }
        if tw.ops.is_empty() {
            return Err("a twin without ops");
        }
        if let Some(version) = tw.if_version {
            out.if_versions.push((i as u32, version));
        }
        for op in tw.ops {
            let v = match op.op {
                Some(pb::field_op::Op::Report(pb::FieldValue {
                    value: Some(pb::field_value::Value::F64(v)), ..
                })) => v,
                Some(other) => {
                    if out.other.push(&mut other_ix, i as u32, op.field, other) {
                        continue;
                    }
                    return Err("an op other than an f64 report, increment, set add or remove, f64 desire or clear");
                }
                None => return Err("an op without a kind"),
            };
            let next = name_ix.len() as u32;
            let ix = *name_ix.entry(op.field).or_insert(next);
            if ix == next {
                out.names.push(String::new()); // filled from the map below (the map owns the name)
            }
            out.field.push(ix);
            out.values.push(v);
        }
        out.starts.push(out.field.len() as u32);
        out.twins.push(tw.twin_id);
    }
    for (name, ix) in name_ix {
        out.names[ix as usize] = name;
    }
    for (name, ix) in other_ix {
        out.other.names[ix as usize] = name;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::{field_op, field_value, FieldOp, FieldValue, TwinWrite, WriteRequest};

    fn report(field: &str, v: f64) -> FieldOp {
        FieldOp {
            field: field.into(),
            op: Some(field_op::Op::Report(FieldValue {
                value: Some(field_value::Value::F64(v)),
                ..Default::default()
            })),
        }
    }

    fn twin(id: &str, ops: Vec<FieldOp>) -> TwinWrite {
        TwinWrite { twin_id: id.into(), ops, ..Default::default() }
    }

    #[test]
    fn bulk_reports_become_columns_with_each_name_once() {
        let request = WriteRequest {
            twins: vec![
                twin("a", vec![report("x", 1.0), report("y", 2.0)]),
                TwinWrite { if_version: Some(7), ..twin("b", vec![report("y", 3.0), report("z", -0.0)]) },
            ],
            actor: "app".into(),
            reason: "why".into(),
            ack: 1,
            replicas: 2,
            ..Default::default()
        };
        let Decoded::Columns(c) = decode_write(&request.encode_to_vec()) else { panic!("not columns") };
        assert_eq!(c.twins, ["a", "b"]);
        assert_eq!(c.starts, [0, 2, 4]);
        assert_eq!(c.names, ["x", "y", "z"]);
        assert_eq!(c.field, [0, 1, 1, 2]);
        assert_eq!(c.values, [1.0, 2.0, 3.0, -0.0]);
        assert!(c.values[3].is_sign_negative());
        assert_eq!(c.if_versions, [(1, 7)]);
        assert_eq!((c.actor.as_str(), c.reason.as_str(), c.ack, c.replicas), ("app", "why", 1, 2));
    }

    #[test]
    fn a_twin_listed_twice_keeps_each_listing_in_order() {
        let request = WriteRequest {
            twins: vec![
                twin("a", vec![report("x", 1.0)]),
                twin("b", vec![report("x", 2.0)]),
                twin("a", vec![report("x", 3.0)]),
            ],
            ..Default::default()
        };
        let Decoded::Columns(c) = decode_write(&request.encode_to_vec()) else { panic!("not columns") };
        assert_eq!(
            (c.twins, c.starts, c.values),
            (vec!["a".into(), "b".into(), "a".into()], vec![0, 1, 2, 3], vec![1.0, 2.0, 3.0])
        );
    }

    #[test]
    fn other_kinds_of_op_become_their_own_rows_in_request_order() {
        let op = |field: &str, op| FieldOp { field: field.into(), op: Some(op) };
        let desire =
            |v| field_op::Op::Desire(FieldValue { value: Some(field_value::Value::F64(v)), ..Default::default() });
        let request = WriteRequest {
            twins: vec![
                twin(
                    "a",
                    vec![
                        report("x", 1.0),
                        op("n", field_op::Op::Increment(-3)),
                        op("s", field_op::Op::Add("e".into())),
                    ],
                ),
                twin("b", vec![op("s", field_op::Op::Remove("f".into())), op("sp", desire(2.5))]),
            ],
            ..Default::default()
        };
        let Decoded::Columns(c) = decode_write(&request.encode_to_vec()) else { panic!("not columns") };
        assert_eq!((c.starts, c.names, c.values), (vec![0, 1, 1], vec!["x".to_string()], vec![1.0]));
        let o = c.other;
        assert_eq!(o.twin, [0, 0, 1, 1]);
        assert_eq!(o.kind, [INCREMENT, ADD, REMOVE, DESIRE]);
        assert_eq!(o.names, ["n", "s", "sp"]);
        assert_eq!(o.field, [0, 1, 1, 2]);
        assert_eq!(o.amount, [-3, 0, 0, 0]);
        assert_eq!(o.element, ["", "e", "f", ""]);
        assert_eq!(o.value, [0.0, 0.0, 0.0, 2.5]);
    }

    #[test]
    fn columns_alone_pass_through() {
        let cols = NumericColumns {
            twin_ids: vec!["t".into()],
            fields: vec!["f".into()],
            twin: vec![0, 0],
            field: vec![0, 0],
            values: vec![1.0, 2.0],
            source_ms: vec![],
        };
        let request = WriteRequest { columns: Some(cols.clone()), ..Default::default() };
        let Decoded::Columns(c) = decode_write(&request.encode_to_vec()) else { panic!("not columns") };
        assert_eq!((c.columns, c.twins.len(), c.starts), (cols, 0, vec![0]));
    }

    #[test]
    fn every_other_shape_goes_the_general_way() {
        let text = FieldOp {
            field: "t".into(),
            op: Some(field_op::Op::Report(FieldValue {
                value: Some(field_value::Value::Text("x".into())),
                ..Default::default()
            })),
        };
        let cases = [
            (WriteRequest::default(), "nothing to write"),
            (
                WriteRequest { twins: vec![TwinWrite { delete: true, ..twin("a", vec![]) }], ..Default::default() },
                "create or delete",
            ),
            (WriteRequest { twins: vec![twin("a", vec![])], ..Default::default() }, "a twin without ops"),
            (
                WriteRequest { twins: vec![twin("a", vec![text])], ..Default::default() },
                "an op other than an f64 report, increment, set add or remove, f64 desire or clear",
            ),
            (
                WriteRequest {
                    twins: vec![twin(
                        "a",
                        vec![FieldOp { field: "x".into(), op: Some(field_op::Op::ClearDesired(false)) }],
                    )],
                    ..Default::default()
                },
                "an op other than an f64 report, increment, set add or remove, f64 desire or clear",
            ),
            (
                WriteRequest {
                    twins: vec![twin("a", vec![FieldOp { field: "x".into(), op: None }])],
                    ..Default::default()
                },
                "an op without a kind",
            ),
        ];
        for (request, why) in cases {
            assert_eq!(decode_write(&request.encode_to_vec()), Decoded::General(why));
        }
        assert_eq!(decode_write(b"\xff\xff\xff"), Decoded::General("does not parse"));
    }
}
