//! Conversions between Python objects and engine values.
use crdt_core::{FieldValue, Value};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyFrozenSet, PyInt, PyString, PyTuple};

/// A Python value to a register value: float, int, bool, str or bytes.
pub fn value_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    // bool first: in Python it is also an int.
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.extract()?));
    }
    if obj.is_instance_of::<PyInt>() {
        return Ok(Value::I64(obj.extract()?));
    }
    if obj.is_instance_of::<PyFloat>() {
        return Ok(Value::F64(obj.extract()?));
    }
    if obj.is_instance_of::<PyString>() {
        return Ok(Value::Str(obj.extract()?));
    }
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "a register holds float, int, bool, str or bytes, not {}",
        obj.get_type().name()?
    )))
}

/// A register value to Python.
pub fn value_to_py<'py>(py: Python<'py>, v: Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::F64(x) => x.into_pyobject(py)?.into_any(),
        Value::I64(x) => x.into_pyobject(py)?.into_any(),
        Value::Bool(x) => PyBool::new(py, x).to_owned().into_any(),
        Value::Str(s) => s.into_pyobject(py)?.into_any(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any(),
    })
}

/// Any field to Python: a register's value, a counter's int, a set's frozenset of str, a multi-value
/// register's tuple of values (in write order; several while writes conflict, empty after a clear).
pub fn field_to_py<'py>(py: Python<'py>, v: FieldValue) -> PyResult<Bound<'py, PyAny>> {
    match v {
        FieldValue::Register(v) => value_to_py(py, v),
        FieldValue::Counter(n) => Ok(n.into_pyobject(py)?.into_any()),
        FieldValue::Set(elems) => Ok(PyFrozenSet::new(py, &elems)?.into_any()),
        FieldValue::MultiValue(values) => {
            let items = values.into_iter().map(|v| value_to_py(py, v)).collect::<PyResult<Vec<_>>>()?;
            Ok(PyTuple::new(py, items)?.into_any())
        }
    }
}
