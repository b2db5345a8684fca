//! `decode_write`: the API's Write request decoded natively (`api_wire`) into columns for Python.
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

/// A Write request in the bulk shape, as columns (see `api_wire::WriteColumns`): built once, read by the
/// API's write service.
#[pyclass(frozen, get_all, module = "drsdtp._core")]
pub struct WriteColumns {
    ack: i32,
    replicas: u32,
    replicate_timeout_ms: u32,
    actor: Py<PyString>,
    reason: Py<PyString>,
    idempotency_key: Py<PyString>,
    twins: Py<PyList>,
    if_versions: Py<PyList>,
    starts: Py<PyArray1<u32>>,
    names: Py<PyList>,
    field: Py<PyArray1<u32>>,
    values: Py<PyArray1<f64>>,
    col_twin_ids: Py<PyList>,
    col_fields: Py<PyList>,
    col_twin: Py<PyArray1<u32>>,
    col_field: Py<PyArray1<u32>>,
    col_values: Py<PyArray1<f64>>,
    col_source_ms: Py<PyArray1<i64>>,
    // The ops other than f64 reports (`api_wire::OtherOps`), one row each in request order.
    op_twin: Py<PyArray1<u32>>,
    op_kind: Py<PyArray1<u8>>,
    op_names: Py<PyList>,
    op_field: Py<PyArray1<u32>>,
    op_amount: Py<PyArray1<i64>>,
    op_element: Py<PyList>,
    op_value: Py<PyArray1<f64>>,
}

/// The request as `WriteColumns`, or (anything else) the reason it is not in the bulk shape.
#[pyfunction]
pub fn decode_write(py: Python<'_>, body: &Bound<'_, PyBytes>) -> PyResult<Py<PyAny>> {
    let data = body.as_bytes();
    let decoded = py.detach(|| api_wire::decode_write(data));
    let c = match decoded {
        api_wire::Decoded::General(why) => return Ok(PyString::new(py, why).into_any().unbind()),
        api_wire::Decoded::Columns(c) => *c,
    };
    let cols = c.columns;
    let other = c.other;
    let out = WriteColumns {
        ack: c.ack,
        replicas: c.replicas,
        replicate_timeout_ms: c.replicate_timeout_ms,
        actor: PyString::new(py, &c.actor).unbind(),
        reason: PyString::new(py, &c.reason).unbind(),
        idempotency_key: PyString::new(py, &c.idempotency_key).unbind(),
        twins: PyList::new(py, c.twins)?.unbind(),
        if_versions: PyList::new(py, c.if_versions)?.unbind(),
        starts: PyArray1::from_vec(py, c.starts).unbind(),
        names: PyList::new(py, c.names)?.unbind(),
        field: PyArray1::from_vec(py, c.field).unbind(),
        values: PyArray1::from_vec(py, c.values).unbind(),
        col_twin_ids: PyList::new(py, cols.twin_ids)?.unbind(),
        col_fields: PyList::new(py, cols.fields)?.unbind(),
        col_twin: PyArray1::from_vec(py, cols.twin).unbind(),
        col_field: PyArray1::from_vec(py, cols.field).unbind(),
        col_values: PyArray1::from_vec(py, cols.values).unbind(),
        col_source_ms: PyArray1::from_vec(py, cols.source_ms).unbind(),
        op_twin: PyArray1::from_vec(py, other.twin).unbind(),
        op_kind: PyArray1::from_vec(py, other.kind).unbind(),
        op_names: PyList::new(py, other.names)?.unbind(),
        op_field: PyArray1::from_vec(py, other.field).unbind(),
        op_amount: PyArray1::from_vec(py, other.amount).unbind(),
        op_element: PyList::new(py, other.element)?.unbind(),
        op_value: PyArray1::from_vec(py, other.value).unbind(),
    };
    Ok(Bound::new(py, out)?.into_any().unbind())
}

/// A small write (`drsdtp.api.write_small`): f64 reports to one twin, in request order. `olds[r]`: the f64
/// field `fields[r]` held before (NaN: nothing); `version`: the twin's context digest after.
pub struct Written {
    pub delta: Vec<u8>,
    pub olds: Vec<f64>,
    pub version: u64,
}

/// Reads what each field holds and, unless one holds anything but an f64 register (then `None`, nothing
/// written or interned), writes them all as the bulk path does (one `write_batch` of one twin, stamped by
/// the clock): the same event, state and delta, from one call instead of a dozen numpy steps.
pub fn write_f64s(
    store: &mut crdt_core::Store,
    twin: &str,
    fields: &[&str],
    values: &[f64],
) -> crdt_core::Result<Option<Written>> {
    let n = fields.len();
    let rows: Vec<u32> = (0..n as u32).collect();
    let mut olds = vec![0.0; n];
    let mut kinds = vec![0u8; n];
    store.held_f64(&[twin], fields, &vec![0; n], &rows, &mut olds, &mut kinds)?;
    if kinds.contains(&crdt_core::held::HELD_OTHER) {
        return Ok(None);
    }
    let tid = store.intern_twin(twin)?;
    let fids = fields.iter().map(|f| store.intern_field(f)).collect::<crdt_core::Result<Vec<u32>>>()?;
    let delta = store.write_batch(&vec![tid; n], &fids, values, &vec![0; n])?;
    let version = store.context(twin).map_or(0, crdt_core::Context::digest);
    Ok(Some(Written { delta, olds, version }))
}

/// A batch's field ops from Python: `(twin, field, shape, items)` tuples, `shape` one of `"counter"`
/// (items: ints), `"set"` (items: `(add, element)`) or `"desired"` (items: values, None to clear); see
/// `crdt_core::FieldWrite`. A shape it does not know is a ValueError naming it.
pub fn field_writes(writes: &Bound<'_, PyList>) -> PyResult<Vec<crdt_core::FieldWrite>> {
    use crdt_core::FieldOps;
    let mut out = Vec::with_capacity(writes.len());
    for item in writes.iter() {
        let (twin, field, shape, items): (String, String, Bound<'_, PyString>, Bound<'_, PyAny>) = item.extract()?;
        let ops = match shape.to_str()? {
            "counter" => FieldOps::Increments(items.extract()?),
            "set" => FieldOps::Set(items.extract()?),
            "desired" => {
                let mut values = Vec::new();
                for v in items.try_iter()? {
                    let v = v?;
                    values.push(if v.is_none() { None } else { Some(crate::convert::value_from_py(&v)?) });
                }
                FieldOps::Desired(values)
            }
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "{twin}.{field}: unknown op shape {other:?} (counter, set or desired)"
                )))
            }
        };
        out.push(crdt_core::FieldWrite { twin, field, ops });
    }
    Ok(out)
}
