//! `numeric_entries`: what a delta says about numeric registers (see `crdt_core::entries`).
use pyo3::prelude::*;

use crate::errors::IntoPy;

/// Lists a delta's `f64`/`i64` registers as `(twin, field, value, stamp)`, validated as `merge` would.
#[pyfunction]
#[pyo3(signature = (delta, *, max_message_bytes = 67108864))]
#[allow(clippy::type_complexity)]
pub fn numeric_entries(
    py: Python<'_>,
    delta: &[u8],
    max_message_bytes: usize,
) -> PyResult<Vec<(String, String, f64, u64)>> {
    let limits = crdt_core::Limits { max_message_bytes, ..Default::default() };
    let entries = py.detach(|| crdt_core::numeric_entries(delta, limits)).py_err()?;
    Ok(entries.into_iter().map(|e| (e.twin, e.field, e.value, e.stamp)).collect())
}
