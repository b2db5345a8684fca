//! `readings_json`: an audit record's numeric readings as the record's canonical JSON, one native call per
//! twin instead of a Python step per reading (a third of a bulk write's CPU). The bytes must be exactly
//! what Python's `json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)` writes: the
//! record's hash covers them and `AuditLog.verify` recomputes them with Python's json. So floats are
//! written by Python's own repr (`PyOS_double_to_string`, which `float.__repr__` calls): Rust's shortest
//! formatting breaks ties between two shortest strings differently (1533661600446129.25).
use std::ffi::CStr;
use std::fmt::Write;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

/// `{"a":{"new":1.0,"old":0.5},...}` for sorted, distinct `names`, their new values and (when given) the
/// old ones (None: not held before).
#[pyfunction]
#[pyo3(signature = (names, news, olds=None))]
pub fn readings_json(
    py: Python<'_>,
    names: &Bound<'_, PyList>,
    news: Vec<f64>,
    olds: Option<Vec<Option<f64>>>,
) -> PyResult<String> {
    if news.len() != names.len() || olds.as_ref().is_some_and(|o| o.len() != names.len()) {
        return Err(pyo3::exceptions::PyValueError::new_err("readings_json: names, news and olds differ in length"));
    }
    let mut out = String::with_capacity(names.len() * 48 + 2);
    out.push('{');
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(&mut out, name.downcast::<PyString>()?.to_str()?);
        out.push_str(":{\"new\":");
        json_float(py, &mut out, news[i])?;
        if let Some(old) = olds.as_ref().and_then(|o| o[i]) {
            out.push_str(",\"old\":");
            json_float(py, &mut out, old)?;
        }
        out.push('}');
    }
    out.push('}');
    Ok(out)
}

/// A string as json writes it with `ensure_ascii=False`: `"` and `\` escaped, control characters as `\n`,
/// `\r`, `\t`, `\b`, `\f` or `\u00XX`, everything else as it is.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A float as json writes it: `NaN`, `Infinity`, `-Infinity`, else its repr.
fn json_float(py: Python<'_>, out: &mut String, x: f64) -> PyResult<()> {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
    } else if x.fract() == 0.0 && x.abs() < 9007199254740992.0 && !(x == 0.0 && x.is_sign_negative()) {
        // An integral float below 2^53 is its integer's digits and ".0" (repr's shortest digits: no other
        // decimal lies within half an ulp <= 0.5 of it); readings often are integral, and this is 10x cheaper.
        let _ = write!(out, "{}.0", x as i64);
    } else {
        // SAFETY: the GIL is held (`py`); PyOS_double_to_string returns a NUL-terminated ASCII string
        // allocated with PyMem_Malloc (freed here, once) or NULL with an exception set.
        unsafe {
            let p = pyo3::ffi::PyOS_double_to_string(
                x,
                b'r' as std::ffi::c_char,
                0,
                pyo3::ffi::Py_DTSF_ADD_DOT_0,
                std::ptr::null_mut(),
            );
            if p.is_null() {
                return Err(PyErr::fetch(py));
            }
            out.push_str(&CStr::from_ptr(p).to_string_lossy());
            pyo3::ffi::PyMem_Free(p.cast());
        }
    }
    Ok(())
}
