//! `readings_json`: an audit record's numeric readings as the record's canonical JSON, one native call per
//! twin instead of a Python step per reading (a third of a bulk write's CPU). The bytes must be exactly
//! what Python's `json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)` writes: the
//! record's hash covers them and `AuditLog.verify` recomputes them with Python's json. Floats take Rust's
//! shortest formatting (3x cheaper than Python's repr), except where two shortest strings could tie, which
//! Rust and Python break differently (1533661600446129.25): those take Python's own repr
//! (`PyOS_double_to_string`, which `float.__repr__` calls).
use std::ffi::CStr;
use std::fmt::Write;

use std::collections::HashMap;

use numpy::PyReadonlyArray1;
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

/// A bulk write's part of its request record, `{"TWIN":{"action":"write","changes":{...}},...}`: every
/// distinct twin of `twins` in name order (those that changed nothing with `{}`), each with the last value
/// row `r` of the request gave each of its fields where it differs from `olds[r]` (NaN: nothing held, so
/// no `"old"`). Row `r` writes `values[r]` to `fields[field[r]]` of `twins[twin[r]]`; a name may be listed
/// twice (one twin or field). `extra`: changes of fields other than these f64 registers, each
/// `(twin index, field name, the change's canonical JSON)`, merged into their twin's changes in name order
/// (a field must not also be one of the rows'). The same bytes as `AuditLog.append_request` writes from
/// `Readings` (and `Change` s) per twin, in one call instead of a few Python steps per twin and a vector
/// pass per request.
///
/// Rows from `readings_from` on are readings (a request's numeric columns): each twin's part names the
/// fields they wrote, `"readings":["a","b"]` (sorted, distinct; the key only where there are some), with
/// no values: a columns write of thousands of rows is telemetry, its values are in the history, and
/// spelling out each one's new and old value made its record 56 bytes a row (more than the write-ahead
/// log's entry) and a quarter of the writer's CPU. A field a reading row writes is named there, not in
/// `changes`.
#[pyfunction]
#[pyo3(signature = (twins, fields, twin, field, values, olds, extra = None, readings_from = None))]
#[allow(clippy::too_many_arguments)]
pub fn bulk_twins_json(
    py: Python<'_>,
    twins: Vec<String>,
    fields: Vec<String>,
    twin: PyReadonlyArray1<'_, u32>,
    field: PyReadonlyArray1<'_, u32>,
    values: PyReadonlyArray1<'_, f64>,
    olds: PyReadonlyArray1<'_, f64>,
    extra: Option<Vec<(u32, String, String)>>,
    readings_from: Option<usize>,
) -> PyResult<String> {
    let (t, f, news, olds) = (twin.as_slice()?, field.as_slice()?, values.as_slice()?, olds.as_slice()?);
    let n = t.len();
    let readings_from = readings_from.unwrap_or(n);
    if f.len() != n || news.len() != n || olds.len() != n {
        return Err(pyo3::exceptions::PyValueError::new_err("bulk_twins_json: columns differ in length"));
    }
    if t.iter().any(|&i| i as usize >= twins.len()) || f.iter().any(|&i| i as usize >= fields.len()) {
        return Err(pyo3::exceptions::PyValueError::new_err("bulk_twins_json: an index out of range"));
    }
    let mut extra = extra.unwrap_or_default();
    if extra.iter().any(|e| e.0 as usize >= twins.len()) {
        return Err(pyo3::exceptions::PyValueError::new_err("bulk_twins_json: an extra's twin out of range"));
    }
    // Each name's rank among the distinct names in code point order (UTF-8 byte order is the same).
    let ranks = |names: &[String]| -> (Vec<u32>, Vec<usize>) {
        let mut distinct: Vec<&str> = names.iter().map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let at: HashMap<&str, u32> = distinct.iter().enumerate().map(|(k, s)| (*s, k as u32)).collect();
        let first: HashMap<&str, usize> = names.iter().enumerate().rev().map(|(k, s)| (s.as_str(), k)).collect();
        let by_rank = distinct.iter().map(|s| first[s]).collect();
        (names.iter().map(|s| at[s.as_str()]).collect(), by_rank)
    };
    let (twin_rank, twin_at) = ranks(&twins);
    let (field_rank, field_at) = ranks(&fields);
    // The extras by (twin rank, field name).
    extra.sort_unstable_by(|a, b| (twin_rank[a.0 as usize], &a.1).cmp(&(twin_rank[b.0 as usize], &b.1)));
    let mut extras = extra.iter().peekable();
    // Rows by (twin, field) in name order; the last row of each pair is the value the request leaves.
    let mut rows: Vec<(u32, u32, u32)> =
        (0..n).map(|r| (twin_rank[t[r] as usize], field_rank[f[r] as usize], r as u32)).collect();
    rows.sort_unstable();
    let mut out =
        String::with_capacity(n * 40 + twin_at.len() * 40 + extra.iter().map(|e| e.2.len() + 8).sum::<usize>() + 2);
    out.push('{');
    let mut next = rows.iter().peekable();
    let mut change = String::new();
    let mut readings = String::new();
    for (tr, &name_at) in twin_at.iter().enumerate() {
        if tr > 0 {
            out.push(',');
        }
        json_str(&mut out, &twins[name_at]);
        out.push_str(":{\"action\":\"write\",\"changes\":{");
        let mut first = true;
        readings.clear();
        let mut emit = |out: &mut String, name: &str, body: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            json_str(out, name);
            out.push(':');
            out.push_str(body);
        };
        while let Some(&&(rt, rf, r)) = next.peek() {
            if rt as usize != tr {
                break;
            }
            next.next();
            if next.peek().is_some_and(|&&(nt, nf, _)| nt == rt && nf == rf) {
                continue; // a later row writes the same field
            }
            let name = &fields[field_at[rf as usize]];
            if r as usize >= readings_from {
                // Rows are in request order within a field, the readings last: one wrote it.
                readings.push(if readings.is_empty() { '[' } else { ',' });
                json_str(&mut readings, name);
                continue;
            }
            let (new, old) = (news[r as usize], olds[r as usize]);
            if new == old {
                continue; // unchanged (NaN, nothing held, differs from everything)
            }
            // The extras of this twin that sort before this field come first.
            while let Some(e) =
                extras.next_if(|e| twin_rank[e.0 as usize] as usize == tr && e.1.as_str() < name.as_str())
            {
                emit(&mut out, &e.1, &e.2);
            }
            change.clear();
            change.push_str("{\"new\":");
            json_float(py, &mut change, new)?;
            if !old.is_nan() {
                change.push_str(",\"old\":");
                json_float(py, &mut change, old)?;
            }
            change.push('}');
            emit(&mut out, name, &change);
        }
        while let Some(e) = extras.next_if(|e| twin_rank[e.0 as usize] as usize == tr) {
            emit(&mut out, &e.1, &e.2);
        }
        out.push('}');
        if !readings.is_empty() {
            out.push_str(",\"readings\":");
            out.push_str(&readings);
            out.push(']');
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
    } else if (1e-4..1e16).contains(&x.abs()) {
        // Where repr writes positional digits (decimal exponent in [-4, 16)), Rust's Display writes the
        // same shortest digits the same way: written in place, with no intermediate string (readings are
        // mostly here), unless two shortest strings could tie (see `may_tie`).
        let start = out.len();
        let _ = write!(out, "{x}");
        if tie_possible(x, &out[start..]) {
            out.truncate(start);
            python_repr(py, out, x)?;
        }
    } else if may_tie(x) {
        python_repr(py, out, x)?;
    } else {
        rust_repr(out, x);
    }
    Ok(())
}

/// Whether `x`, written `shortest`, could be a tie (see `may_tie`): only when its exact decimal expansion
/// has exactly one significant digit more than `shortest` (the tie's midpoint). A shortest string with as
/// many digits as the expansion is the exact value, which nothing ties with: 20.5 or 0.25 (sensor
/// resolutions) are exact, and `may_tie` alone sent them all to Python.
fn tie_possible(x: f64, shortest: &str) -> bool {
    let Some(exact) = exact_digits(x) else { return may_tie(x) };
    let digits = shortest.bytes().filter(u8::is_ascii_digit);
    let significant = digits.skip_while(|&d| d == b'0').count() as u32; // no trailing zeros: not integral
    exact == significant + 1
}

/// The number of significant digits of a non-integral `x`'s exact decimal expansion when it has at most
/// 26 binary fraction digits (None otherwise: then it has more than 18 digits and cannot tie).
fn exact_digits(x: f64) -> Option<u32> {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let (mut m, mut e) = if exp == 0 { (frac, -1074) } else { (frac | (1 << 52), exp - 1075) };
    if m == 0 {
        return None;
    }
    let zeros = m.trailing_zeros();
    m >>= zeros;
    e += zeros as i32;
    if e >= 0 || -e > 26 {
        return None;
    }
    let exact = u128::from(m) * 5u128.pow((-e) as u32); // odd: no trailing zero
    Some(exact.checked_ilog10().map_or(1, |d| d + 1))
}

/// Whether two shortest decimal strings could lie exactly as close to `x` (a tie, which Rust's shortest
/// formatting and Python's repr break differently). A tie needs `x`'s exact decimal expansion to end one
/// digit after the shortest string's last, so to have at most 18 significant digits: `x` = odd `m` x
/// 2^-k is exactly `m` x 5^k / 10^k, whose significant digits are those of `m` x 5^k (odd: no trailing
/// zero). False for nearly every non-integral reading: only short binary fractions of large values tie.
fn may_tie(x: f64) -> bool {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let (mut m, mut e) = if exp == 0 { (frac, -1074) } else { (frac | (1 << 52), exp - 1075) };
    if m == 0 {
        return true; // zero: let Python write it
    }
    let zeros = m.trailing_zeros();
    m >>= zeros;
    e += zeros as i32;
    if e >= 0 {
        return true; // an integer of 2^53 or more: rare, Python writes it
    }
    let k = (-e) as u32;
    if k > 26 {
        return false; // 5^27 > 10^18: more than 18 digits
    }
    u128::from(m) * 5u128.pow(k) < 1_000_000_000_000_000_000
}

/// Python's repr of a finite float, by Python itself.
fn python_repr(py: Python<'_>, out: &mut String, x: f64) -> PyResult<()> {
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
    Ok(())
}

/// Python's repr of a finite float that cannot tie (see `may_tie`): Rust's shortest digits (the same:
/// the shortest that read back as `x`, the closest to it among them), laid out as repr does: positional
/// when the decimal exponent is in [-4, 16), else `d.ddde+XX`.
fn rust_repr(out: &mut String, x: f64) {
    let mut sci = String::with_capacity(32);
    let _ = write!(sci, "{:e}", x.abs()); // "1.5e-7", "1.2345e3"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (head, rest) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if x.is_sign_negative() {
        out.push('-');
    }
    let digits = head.len() + rest.len(); // head is one digit
    let decpt = exp + 1; // the value is 0.DIGITS x 10^decpt
    if !(-4 < decpt && decpt <= 16) {
        out.push_str(head);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-decpt) as usize));
        out.push_str(head);
        out.push_str(rest);
    } else if (decpt as usize) < digits {
        let split = decpt as usize - 1; // digits of `rest` before the point
        out.push_str(head);
        out.push_str(&rest[..split]);
        out.push('.');
        out.push_str(&rest[split..]);
    } else {
        out.push_str(head);
        out.push_str(rest);
        out.extend(std::iter::repeat_n('0', decpt as usize - digits));
        out.push_str(".0");
    }
}
