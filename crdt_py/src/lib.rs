//! `drsdtp._core`: the thin PyO3 face of `crdt_core`. It converts arguments, maps errors onto the Python
//! exception tree, and releases the GIL around real work (merge, encode, catch-up, batch writes). No CRDT
//! logic lives here.
use std::sync::{Mutex, MutexGuard};

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

mod audit;
mod convert;
mod entries;
mod errors;
mod names;
mod write;

use convert::{field_to_py, value_from_py, value_to_py};
use errors::IntoPy;

/// The source times of a batch given none (stamp with the clock), shared rather than zeroed per batch.
static NO_SOURCE_TIMES: [i64; 4096] = [0; 4096];

/// The twin names' memo (`twins`) or the field names'.
fn side(memo: &(names::Memo, names::Memo), twins: bool) -> &names::Memo {
    if twins {
        &memo.0
    } else {
        &memo.1
    }
}

/// Bytes out: one copy into a Python bytes object.
fn bytes<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, b)
}

/// The twin store of one replica (see `crdt_core::Store`). Thread-safe: calls from several Python threads
/// serialise on an internal lock, which heavy calls take with the GIL released.
#[pyclass(frozen, module = "drsdtp._core")]
struct Store {
    inner: Mutex<crdt_core::Store>,
    /// The last batch's twin and field names given by name (see `names`). Held only with the GIL and never
    /// across a release of it, so it cannot deadlock with `inner`.
    memo: Mutex<(names::Memo, names::Memo)>,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, crdt_core::Store> {
        // A panic cannot leave the engine half-updated (all mutations validate first), so a poisoned lock is
        // still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn memo(&self) -> MutexGuard<'_, (names::Memo, names::Memo)> {
        self.memo.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ids of twin names (`twins`) or field names, interned where new, in one call with the GIL released.
    fn ids_of(&self, py: Python<'_>, names: &Bound<'_, PyAny>, twins: bool) -> PyResult<Vec<u32>> {
        let what = if twins { "twin name" } else { "field name" };
        let names = names::Names::new(names, if twins { "twins" } else { "fields" })?;
        // The usual batch: the previous one's names again, compared outside the memo's lock (a comparison
        // that raises, from a str subclass's `__eq__`, only means the names are resolved by their text).
        let held = side(&self.memo(), twins).held(py);
        if let Some(held) = held {
            if names.equals(held.bind(py)).unwrap_or(false) {
                if let Some(ids) = side(&self.memo(), twins).ids_of_held(&held) {
                    return Ok(ids);
                }
            }
        }
        let names = names.snapshot();
        let mut resolved = side(&self.memo(), twins).resolve(&names);
        let interned = if resolved.missing.is_empty() {
            Vec::new()
        } else {
            let strings = names::missing_strings(&names, &resolved, what)?;
            let texts = strings.iter().map(|s| s.to_str()).collect::<PyResult<Vec<&str>>>()?;
            let at = &resolved.missing;
            py.detach(|| {
                let mut store = self.lock();
                if twins {
                    names::intern_all(&texts, at, what, |n| store.intern_twin(n))
                } else {
                    names::intern_all(&texts, at, what, |n| store.intern_field(n))
                }
            })
            .py_err()?
        };
        resolved.finish(&interned);
        let mut memo = self.memo();
        Ok(if twins { &mut memo.0 } else { &mut memo.1 }.remember(names, resolved))
    }
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (replica_id, *, max_offset_ms = 500, max_message_bytes = 67108864, max_name_bytes = 1024))]
    fn new(replica_id: u64, max_offset_ms: u64, max_message_bytes: usize, max_name_bytes: usize) -> Self {
        let mut s = crdt_core::Store::new(replica_id, max_offset_ms);
        s.set_limits(crdt_core::Limits { max_message_bytes, max_name_bytes });
        Self { inner: Mutex::new(s), memo: Mutex::default() }
    }

    #[getter]
    fn replica_id(&self) -> u64 {
        self.lock().replica()
    }

    #[getter]
    fn max_offset_ms(&self) -> u64 {
        self.lock().max_offset_ms()
    }

    fn __repr__(&self) -> String {
        let s = self.lock();
        let st = s.stats();
        format!("Store(replica_id={}, twins={}, fields={})", s.replica(), st.twins, st.fields)
    }

    fn __contains__(&self, twin: &str) -> bool {
        self.lock().contains_twin(twin)
    }

    // ----- local mutations -------------------------------------------------------------------------------

    fn set<'py>(
        &self,
        py: Python<'py>,
        twin: &str,
        field: &str,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let v = value_from_py(value)?;
        let d = self.lock().set(twin, field, v).py_err()?;
        Ok(bytes(py, &d))
    }

    fn set_many<'py>(&self, py: Python<'py>, twin: &str, values: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyBytes>> {
        let mut vals = Vec::with_capacity(values.len());
        for (k, v) in values.iter() {
            vals.push((k.extract::<String>()?, value_from_py(&v)?));
        }
        let d = self.lock().set_many(twin, vals).py_err()?;
        Ok(bytes(py, &d))
    }

    /// `set_many` for several distinct twins, one delta for them all (see `crdt_core::Store::set_many_twins`).
    fn set_many_twins<'py>(
        &self,
        py: Python<'py>,
        items: Vec<(String, Bound<'py, PyDict>)>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut all = Vec::with_capacity(items.len());
        for (twin, values) in items {
            let mut vals = Vec::with_capacity(values.len());
            for (k, v) in values.iter() {
                vals.push((k.extract::<String>()?, value_from_py(&v)?));
            }
            all.push((twin, vals));
        }
        let d = py.detach(|| self.lock().set_many_twins(all)).py_err()?;
        Ok(bytes(py, &d))
    }

    #[pyo3(signature = (twin, field, amount = 1))]
    fn increment<'py>(&self, py: Python<'py>, twin: &str, field: &str, amount: i64) -> PyResult<Bound<'py, PyBytes>> {
        let d = self.lock().increment(twin, field, amount).py_err()?;
        Ok(bytes(py, &d))
    }

    fn add<'py>(&self, py: Python<'py>, twin: &str, field: &str, element: &str) -> PyResult<Bound<'py, PyBytes>> {
        let d = self.lock().add(twin, field, element).py_err()?;
        Ok(bytes(py, &d))
    }

    fn remove<'py>(&self, py: Python<'py>, twin: &str, field: &str, element: &str) -> PyResult<Bound<'py, PyBytes>> {
        let d = self.lock().remove(twin, field, element).py_err()?;
        Ok(bytes(py, &d))
    }

    /// Adds (True) and removes (False) elements of one set in order, as `add`/`remove` one by one would,
    /// with one delta (the join of theirs): see `crdt_core::Store::set_ops`.
    fn set_ops<'py>(
        &self,
        py: Python<'py>,
        twin: &str,
        field: &str,
        ops: Vec<(bool, String)>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let refs: Vec<(bool, &str)> = ops.iter().map(|(add, e)| (*add, e.as_str())).collect();
        let d = py.detach(|| self.lock().set_ops(twin, field, &refs)).py_err()?;
        Ok(bytes(py, &d))
    }

    fn desire<'py>(
        &self,
        py: Python<'py>,
        twin: &str,
        field: &str,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let v = value_from_py(value)?;
        let d = self.lock().desire(twin, field, v).py_err()?;
        Ok(bytes(py, &d))
    }

    fn clear_desired<'py>(&self, py: Python<'py>, twin: &str, field: &str) -> PyResult<Bound<'py, PyBytes>> {
        let d = self.lock().clear_desired(twin, field).py_err()?;
        Ok(bytes(py, &d))
    }

    /// A request's counter, set and desired ops (`(twin, field, shape, items)`, see `write::field_writes`)
    /// applied as the single calls would, all or nothing, with one delta: `crdt_core::Store::write_ops`.
    fn write_ops<'py>(&self, py: Python<'py>, writes: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyBytes>> {
        let w = write::field_writes(writes)?;
        let d = py.detach(|| self.lock().write_ops(&w)).py_err()?;
        Ok(bytes(py, &d))
    }

    /// `write_batch`'s f64 readings, then `write_ops`'s ops, all or nothing, with one delta:
    /// `crdt_core::Store::write_mixed`.
    fn write_mixed<'py>(
        &self,
        py: Python<'py>,
        twin_ids: PyReadonlyArray1<'py, u32>,
        field_ids: PyReadonlyArray1<'py, u32>,
        values: PyReadonlyArray1<'py, f64>,
        source_ms: PyReadonlyArray1<'py, i64>,
        writes: &Bound<'py, PyList>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let w = write::field_writes(writes)?;
        let (t, f, v, s) = (twin_ids.as_slice()?, field_ids.as_slice()?, values.as_slice()?, source_ms.as_slice()?);
        let d = py.detach(|| self.lock().write_mixed(t, f, v, s, &w)).py_err()?;
        Ok(bytes(py, &d))
    }

    fn intern_twin(&self, name: &str) -> PyResult<u32> {
        self.lock().intern_twin(name).py_err()
    }

    fn intern_field(&self, name: &str) -> PyResult<u32> {
        self.lock().intern_field(name).py_err()
    }

    /// Interned ids of twin names (a list or tuple of str), one call per batch.
    fn intern_twins<'py>(&self, py: Python<'py>, names: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<u32>>> {
        Ok(PyArray1::from_vec(py, self.ids_of(py, names, true)?))
    }

    /// Interned ids of field names, one call per batch.
    fn intern_fields<'py>(&self, py: Python<'py>, names: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<u32>>> {
        Ok(PyArray1::from_vec(py, self.ids_of(py, names, false)?))
    }

    /// `write_batch` with twins and fields given by name.
    #[pyo3(signature = (twins, fields, values, source_ms = None))]
    fn write_named<'py>(
        &self,
        py: Python<'py>,
        twins: &Bound<'py, PyAny>,
        fields: &Bound<'py, PyAny>,
        values: PyReadonlyArray1<'py, f64>,
        source_ms: Option<PyReadonlyArray1<'py, i64>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let t = self.ids_of(py, twins, true)?;
        let f = self.ids_of(py, fields, false)?;
        let v = values.as_slice()?;
        let zeros;
        let s = match &source_ms {
            Some(a) => a.as_slice()?,
            None if v.len() <= NO_SOURCE_TIMES.len() => &NO_SOURCE_TIMES[..v.len()],
            None => {
                zeros = vec![0i64; v.len()];
                &zeros
            }
        };
        let d = py.detach(|| self.lock().write_batch(&t, &f, v, s)).py_err()?;
        Ok(bytes(py, &d))
    }

    /// A few f64 reports to one twin in one call (the API's small writes, see `write::write_f64s`): None
    /// when a field holds anything but an f64 register (nothing written), else the delta, the f64 each
    /// field held (NaN: nothing) and the twin's version after. Holds the GIL: a few rows are less work
    /// than releasing it.
    #[allow(clippy::type_complexity)]
    fn write_f64s<'py>(
        &self,
        py: Python<'py>,
        twin: &str,
        fields: Vec<String>,
        values: Vec<f64>,
    ) -> PyResult<Option<(Bound<'py, PyBytes>, Vec<f64>, u64)>> {
        if fields.len() != values.len() {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "write_f64s: {} fields, {} values",
                fields.len(),
                values.len()
            )));
        }
        let names: Vec<&str> = fields.iter().map(String::as_str).collect();
        let written = write::write_f64s(&mut self.lock(), twin, &names, &values).py_err()?;
        Ok(written.map(|w| (bytes(py, &w.delta), w.olds, w.version)))
    }

    fn twin_name(&self, twin_id: u32) -> Option<String> {
        self.lock().twin_name(twin_id).map(str::to_owned)
    }

    fn field_name(&self, field_id: u32) -> Option<String> {
        self.lock().field_name(field_id).map(str::to_owned)
    }

    fn write_batch<'py>(
        &self,
        py: Python<'py>,
        twin_ids: PyReadonlyArray1<'py, u32>,
        field_ids: PyReadonlyArray1<'py, u32>,
        values: PyReadonlyArray1<'py, f64>,
        source_ms: PyReadonlyArray1<'py, i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (t, f, v, s) = (twin_ids.as_slice()?, field_ids.as_slice()?, values.as_slice()?, source_ms.as_slice()?);
        let d = py.detach(|| self.lock().write_batch(t, f, v, s)).py_err()?;
        Ok(bytes(py, &d))
    }

    #[allow(clippy::type_complexity)]
    fn read_numeric<'py>(
        &self,
        py: Python<'py>,
        twin_ids: PyReadonlyArray1<'py, u32>,
        field_ids: PyReadonlyArray1<'py, u32>,
    ) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<u64>>)> {
        let (t, f) = (twin_ids.as_slice()?, field_ids.as_slice()?);
        let mut values = vec![0.0; t.len()];
        let mut stamps = vec![0u64; t.len()];
        py.detach(|| self.lock().read_numeric(t, f, &mut values, &mut stamps)).py_err()?;
        Ok((PyArray1::from_vec(py, values), PyArray1::from_vec(py, stamps)))
    }

    /// What each (twin, field) row would overwrite, by name, interning nothing (see
    /// `crdt_core::held`): the f64 each holds (NaN if none) and what kind of thing it holds.
    #[allow(clippy::type_complexity)]
    fn held_f64<'py>(
        &self,
        py: Python<'py>,
        twins: Vec<String>,
        fields: Vec<String>,
        twin: PyReadonlyArray1<'py, u32>,
        field: PyReadonlyArray1<'py, u32>,
    ) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<u8>>)> {
        let (t, f) = (twin.as_slice()?, field.as_slice()?);
        let mut olds = vec![0.0; t.len()];
        let mut kinds = vec![0u8; t.len()];
        let twins: Vec<&str> = twins.iter().map(String::as_str).collect();
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        py.detach(|| self.lock().held_f64(&twins, &fields, t, f, &mut olds, &mut kinds)).py_err()?;
        Ok((PyArray1::from_vec(py, olds), PyArray1::from_vec(py, kinds)))
    }

    // ----- reads -----------------------------------------------------------------------------------------

    fn get<'py>(&self, py: Python<'py>, twin: &str, field: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let v = self.lock().get(twin, field);
        v.map(|v| field_to_py(py, v)).transpose()
    }

    #[allow(clippy::type_complexity)]
    fn entry<'py>(
        &self,
        py: Python<'py>,
        twin: &str,
        field: &str,
    ) -> PyResult<Option<(Bound<'py, PyAny>, u64, u64, u64)>> {
        let e = self.lock().entry(twin, field);
        e.map(|e| Ok((value_to_py(py, e.value)?, e.stamp, e.dot.replica, e.dot.counter))).transpose()
    }

    /// A desired field's values as `entry` gives a register's: (value, stamp, writer, counter), in write order.
    #[allow(clippy::type_complexity)]
    fn desired<'py>(
        &self,
        py: Python<'py>,
        twin: &str,
        field: &str,
    ) -> PyResult<Option<Vec<(Bound<'py, PyAny>, u64, u64, u64)>>> {
        let siblings = self.lock().desired(twin, field);
        siblings
            .map(|list| {
                list.into_iter()
                    .map(|s| Ok((value_to_py(py, s.value)?, s.stamp, s.dot.replica, s.dot.counter)))
                    .collect::<PyResult<Vec<_>>>()
            })
            .transpose()
    }

    fn fields<'py>(&self, py: Python<'py>, twin: &str) -> PyResult<Bound<'py, PyDict>> {
        let fields = self.lock().fields(twin);
        let d = PyDict::new(py);
        for (k, v) in fields.unwrap_or_default() {
            d.set_item(k, field_to_py(py, v)?)?;
        }
        Ok(d)
    }

    /// Every field of a twin with the version of its state (`crdt_core::Store::field_versions`).
    fn field_versions(&self, twin: &str) -> Option<Vec<(String, u64)>> {
        self.lock().field_versions(twin)
    }

    fn twins(&self) -> Vec<String> {
        self.lock().twins()
    }

    #[pyo3(signature = (after, prefix, limit))]
    fn twins_page(&self, py: Python<'_>, after: Option<&str>, prefix: &str, limit: usize) -> Vec<String> {
        py.detach(|| self.lock().twins_page(after, prefix, limit))
    }

    fn context_digest(&self, twin: &str) -> Option<u64> {
        self.lock().context(twin).map(crdt_core::Context::digest)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let st = self.lock().stats();
        let d = PyDict::new(py);
        d.set_item("twins", st.twins)?;
        d.set_item("fields", st.fields)?;
        d.set_item("writers", st.writers)?;
        d.set_item("superseded_writes", st.superseded_writes)?;
        d.set_item("merges", st.merges)?;
        Ok(d)
    }

    // ----- replication -----------------------------------------------------------------------------------

    fn merge(&self, py: Python<'_>, delta: &[u8]) -> PyResult<Vec<String>> {
        py.detach(|| self.lock().merge(delta)).py_err()
    }

    /// A peer's batch in one call with the GIL released: per delta `True`/`False` (changed the store or not)
    /// or the exception refusing it, and the twins any of them changed, once each.
    fn merge_many<'py>(
        &self,
        py: Python<'py>,
        deltas: Vec<Bound<'py, PyBytes>>,
    ) -> PyResult<(Bound<'py, PyList>, Vec<String>)> {
        let slices: Vec<&[u8]> = deltas.iter().map(|d| d.as_bytes()).collect();
        let (outcomes, changed) = py.detach(|| self.lock().merge_many(&slices));
        Ok((outcome_list(py, outcomes)?, changed))
    }

    /// `merge_many`, plus the readings of the deltas it merged as numpy columns (delta index, twin id, field
    /// id, value, HLC stamp), from the same decode (see `crdt_core::MergedReadings`).
    #[allow(clippy::type_complexity)]
    fn merge_many_readings<'py>(
        &self,
        py: Python<'py>,
        deltas: Vec<Bound<'py, PyBytes>>,
    ) -> PyResult<(Bound<'py, PyList>, Vec<String>, Bound<'py, PyTuple>)> {
        let slices: Vec<&[u8]> = deltas.iter().map(|d| d.as_bytes()).collect();
        let mut r = crdt_core::MergedReadings::default();
        let (outcomes, changed) = py.detach(|| self.lock().merge_many_readings(&slices, &mut r));
        let columns = PyTuple::new(
            py,
            [
                PyArray1::from_vec(py, r.delta).into_any(),
                PyArray1::from_vec(py, r.twins).into_any(),
                PyArray1::from_vec(py, r.fields).into_any(),
                PyArray1::from_vec(py, r.values).into_any(),
                PyArray1::from_vec(py, r.stamps).into_any(),
            ],
        )?;
        Ok((outcome_list(py, outcomes)?, changed, columns))
    }

    #[pyo3(signature = (twins = None))]
    fn encode_state<'py>(&self, py: Python<'py>, twins: Option<Vec<String>>) -> Bound<'py, PyBytes> {
        let b = py.detach(|| self.lock().encode_state(twins.as_deref()));
        bytes(py, &b)
    }

    #[pyo3(signature = (twins = None))]
    fn version<'py>(&self, py: Python<'py>, twins: Option<Vec<String>>) -> Bound<'py, PyBytes> {
        let b = py.detach(|| self.lock().version(twins.as_deref()));
        bytes(py, &b)
    }

    #[pyo3(signature = (version, *, only_listed = false, max_bytes = 4194304))]
    fn catch_up<'py>(
        &self,
        py: Python<'py>,
        version: &[u8],
        only_listed: bool,
        max_bytes: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let chunks = py.detach(|| self.lock().catch_up(version, only_listed, max_bytes)).py_err()?;
        PyList::new(py, chunks.iter().map(|c| bytes(py, c)))
    }

    fn digest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let b = py.detach(|| self.lock().digest());
        bytes(py, &b)
    }

    fn differing_twins(&self, py: Python<'_>, peer_digest: &[u8]) -> PyResult<Vec<String>> {
        py.detach(|| self.lock().differing_twins(peer_digest)).py_err()
    }

    // ----- clock -----------------------------------------------------------------------------------------

    fn now(&self) -> u64 {
        self.lock().now()
    }

    fn clock_high_water(&self) -> u64 {
        self.lock().clock_high_water()
    }

    fn restore_clock(&self, high_water: u64) {
        self.lock().restore_clock(high_water);
    }

    fn physical_now(&self) -> u64 {
        self.lock().physical_now()
    }

    fn set_clock_offset_ms(&self, offset_ms: i64) {
        self.lock().set_clock_offset_ms(offset_ms);
    }

    #[pyo3(signature = (ms))]
    fn set_manual_time(&self, ms: Option<u64>) {
        self.lock().set_manual_time(ms);
    }
}

/// The write-ahead log of a store (see `crdt_core::Wal`): `append` buffers, `commit` writes and fsyncs the
/// group with the GIL released, `snapshot` writes the store's full state and truncates the log.
#[pyclass(frozen, module = "drsdtp._core")]
struct Wal {
    // Two locks: appends (on the event loop) only touch the buffer, so they never wait behind an fsync.
    buffer: Mutex<Pending>,
    inner: Mutex<crdt_core::Wal>,
    quarantine_entry: Option<String>,
}

/// Records buffered and not yet written. Every record gets its sequence number in the log; a commit reports
/// the highest one it made durable, so the host can release exactly the writers whose records are on disk,
/// whichever call (commit, snapshot, close) wrote them and whatever was appended meanwhile.
#[derive(Default)]
struct Pending {
    batch: crdt_core::Batch,
    last_seq: u64,
}

impl Pending {
    fn take(&mut self) -> (crdt_core::Batch, u64) {
        (std::mem::take(&mut self.batch), self.last_seq)
    }

    fn push(&mut self, kind: crdt_core::RecordKind, payload: &[u8]) -> PyResult<u64> {
        self.batch.push(kind, payload).py_err()?;
        self.last_seq += 1;
        Ok(self.last_seq)
    }
}

impl Wal {
    fn lock(&self) -> MutexGuard<'_, crdt_core::Wal> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn buffer(&self) -> MutexGuard<'_, Pending> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes what is buffered as one group (under the log's lock, so groups keep their order), then runs `then`.
    fn flush_then<T>(&self, then: impl FnOnce(&mut crdt_core::Wal) -> crdt_core::Result<T>) -> crdt_core::Result<u64> {
        let mut wal = self.lock();
        let (batch, seq) = self.buffer().take();
        wal.write_batch(&batch)?;
        then(&mut wal)?;
        Ok(seq)
    }
}

fn recovery_dict<'py>(py: Python<'py>, r: &crdt_core::Recovery) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("snapshot_seq", r.snapshot_seq)?;
    d.set_item("snapshot_bytes", r.snapshot_bytes)?;
    d.set_item("records", r.records)?;
    d.set_item("record_bytes", r.record_bytes)?;
    d.set_item("truncated_bytes", r.truncated_bytes)?;
    d.set_item("corrupt_records", r.corrupt_records)?;
    d.set_item("refused_records", r.refused_records)?;
    d.set_item("corrupt_snapshots", r.corrupt_snapshots)?;
    d.set_item("records_skipped", r.records_skipped)?;
    d.set_item("records_after_damage", r.records_after_damage)?;
    d.set_item("bytes_quarantined", r.bytes_quarantined)?;
    d.set_item("loss_suspected", u64::from(r.loss_suspected))?;
    d.set_item("aux_records", r.aux_records)?;
    d.set_item("unacked_dropped", r.unacked_dropped)?;
    d.set_item("quarantine_dropped", r.quarantine_dropped)?;
    d.set_item("fresh_snapshot", u64::from(r.fresh_snapshot))?;
    Ok(d)
}

#[pymethods]
impl Wal {
    /// Opens the log in `path`, recovering `store` from it; returns the log and a recovery report.
    #[staticmethod]
    #[pyo3(signature = (path, store, *, on_corruption = "quarantine", keep_snapshots = 2,
        quarantine_max_entries = 16, quarantine_max_bytes = 268435456))]
    fn open<'py>(
        py: Python<'py>,
        path: std::path::PathBuf,
        store: &Bound<'py, Store>,
        on_corruption: &str,
        keep_snapshots: usize,
        quarantine_max_entries: usize,
        quarantine_max_bytes: u64,
    ) -> PyResult<(Wal, Bound<'py, PyDict>)> {
        let on_corruption = match on_corruption {
            "quarantine" => crdt_core::OnCorruption::Quarantine,
            "refuse" => crdt_core::OnCorruption::Refuse,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "on_corruption must be \"quarantine\" or \"refuse\", got {other:?}"
                )))
            }
        };
        if keep_snapshots == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err("keep_snapshots must be at least 1"));
        }
        let options = crdt_core::WalOptions {
            on_corruption,
            keep_snapshots,
            quarantine: crdt_core::wal::Bounds { max_entries: quarantine_max_entries, max_bytes: quarantine_max_bytes },
        };
        let st = store.get();
        let (wal, rec) = py
            .detach(|| {
                let storage = crdt_core::Wal::fs(&path)?;
                crdt_core::Wal::open_with(Box::new(storage), &mut st.lock(), options)
            })
            .py_err()?;
        let pending = Pending { batch: crdt_core::Batch::default(), last_seq: wal.next_seq() - 1 };
        let quarantine_entry = rec.quarantine.as_ref().map(|q| path.join(q).display().to_string());
        let wal = Wal { buffer: Mutex::new(pending), inner: Mutex::new(wal), quarantine_entry };
        Ok((wal, recovery_dict(py, &rec)?))
    }

    /// Buffers one delta (durable after the next commit); returns its sequence number.
    fn append(&self, delta: &[u8]) -> PyResult<u64> {
        self.buffer().push(crdt_core::RecordKind::Delta, delta)
    }

    /// Buffers one host payload, made durable by the same group commit as deltas; the next open hands it
    /// back in log order (`take_recovered_aux`) instead of merging it. Returns its sequence number.
    fn append_aux(&self, payload: &[u8]) -> PyResult<u64> {
        self.buffer().push(crdt_core::RecordKind::Aux, payload)
    }

    /// The aux records recovery found, in log order (once).
    fn take_recovered_aux<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let aux = self.lock().take_recovered_aux();
        PyList::new(py, aux.iter().map(|a| bytes(py, a)))
    }

    /// Writes what is buffered and fsyncs once; returns the sequence number up to which records are durable.
    fn commit(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.flush_then(|_| Ok(()))).py_err()
    }

    /// Commits, then starts a new segment: records appended from here on survive the next `snapshot`. A host
    /// with a side log makes it durable before calling `snapshot`. Returns what `commit` returns.
    fn begin_snapshot(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.flush_then(crdt_core::Wal::begin_snapshot)).py_err()
    }

    /// Commits, then writes the store's full state as a snapshot (after `begin_snapshot` if none was begun),
    /// streamed to disk a chunk at a time, verifies it (read back a chunk at a time) and truncates the log. Returns the sequence number up to which records are durable, as
    /// `commit` does. A snapshot that fails to write or verify is counted (`stats()["failed_snapshots"]`,
    /// `last_snapshot_error`) and leaves the older ones in place; `StorageError` only when the log failed.
    fn snapshot(&self, py: Python<'_>, store: &Bound<'_, Store>) -> PyResult<u64> {
        let st = store.get();
        // The store's lock is taken for one chunk at a time: writers go on between chunks (what they add is
        // also in the log after the snapshot, and joins are idempotent), and memory stays at one chunk.
        let mut cursor = crdt_core::snapshot::StateChunks::new(crdt_core::wal::SNAPSHOT_CHUNK_BYTES);
        py.detach(|| self.flush_then(|wal| wal.snapshot_from(&mut || cursor.next(&st.lock())).map(|_| ()))).py_err()
    }

    /// Commits and marks the log closed cleanly (the next open then checks even the last group); accepts
    /// nothing after. Returns what `commit` returns.
    fn close(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.flush_then(crdt_core::Wal::close)).py_err()
    }

    #[getter]
    fn pending_bytes(&self) -> usize {
        self.buffer().batch.bytes()
    }

    #[getter]
    fn pending_records(&self) -> usize {
        self.buffer().batch.len()
    }

    /// Sequence number of the last record appended.
    #[getter]
    fn last_seq(&self) -> u64 {
        self.buffer().last_seq
    }

    /// The quarantine entry the recovery at open wrote, if it found damage.
    #[getter]
    fn quarantine_entry(&self) -> Option<String> {
        self.quarantine_entry.clone()
    }

    /// Why the last snapshot failed (None once one succeeds).
    #[getter]
    fn last_snapshot_error(&self, py: Python<'_>) -> Option<String> {
        // The log's lock is held through a commit's fsync: wait for it without the GIL (the caller is the
        // host's event loop, and other threads must go on meanwhile).
        py.detach(|| self.lock().last_snapshot_error().map(str::to_owned))
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.lock().stats());
        let d = PyDict::new(py);
        d.set_item("records", s.records)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("commits", s.commits)?;
        d.set_item("last_commit_ns", s.last_commit_ns)?;
        d.set_item("snapshots", s.snapshots)?;
        d.set_item("failed_snapshots", s.failed_snapshots)?;
        d.set_item("segment_bytes", s.segment_bytes)?;
        Ok(d)
    }
}

/// Joins deltas (or states) into one delta. `bytes` are read in place: extracting a `Vec<u8>` would
/// copy each one byte by byte through the sequence protocol (other buffers still are).
#[pyfunction]
#[pyo3(signature = (deltas, *, max_message_bytes = 67108864))]
fn join<'py>(
    py: Python<'py>,
    deltas: Vec<Bound<'py, PyAny>>,
    max_message_bytes: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let limits = crdt_core::Limits { max_message_bytes, ..Default::default() };
    let owned: Vec<Option<Vec<u8>>> = deltas
        .iter()
        .map(|d| if d.is_instance_of::<PyBytes>() { Ok(None) } else { d.extract::<Vec<u8>>().map(Some) })
        .collect::<PyResult<_>>()?;
    let refs: Vec<&[u8]> = deltas
        .iter()
        .zip(&owned)
        .map(|(d, o)| match (o, d.downcast::<PyBytes>()) {
            (Some(v), _) => v.as_slice(),
            (None, Ok(b)) => b.as_bytes(),
            (None, Err(_)) => &[], // not reached: every non-bytes was extracted above
        })
        .collect();
    let b = py.detach(|| crdt_core::join(&refs, limits)).py_err()?;
    Ok(bytes(py, &b))
}

/// Decodes a delta or state into `{twin: {field: value}}` (for tools and tests).
#[pyfunction]
fn decode_state<'py>(py: Python<'py>, state: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    let twins = py.detach(|| crdt_core::codec::decode_fields(state)).py_err()?;
    let out = PyDict::new(py);
    for (twin, fields) in twins {
        let d = PyDict::new(py);
        for (k, v) in fields {
            d.set_item(k, field_to_py(py, v)?)?;
        }
        out.set_item(twin, d)?;
    }
    Ok(out)
}

/// Per merged delta `True`/`False` (changed the store or not) or the exception refusing it.
fn outcome_list(py: Python<'_>, outcomes: Vec<crdt_core::Result<bool>>) -> PyResult<Bound<'_, PyList>> {
    let items: Vec<Py<PyAny>> = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(grew) => pyo3::types::PyBool::new(py, grew).to_owned().into_any().unbind(),
            Err(e) => errors::to_py(e).into_value(py).into_any(),
        })
        .collect();
    PyList::new(py, items)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Store>()?;
    m.add_class::<Wal>()?;
    m.add_class::<write::WriteColumns>()?;
    m.add_function(wrap_pyfunction!(write::decode_write, m)?)?;
    m.add_function(wrap_pyfunction!(audit::readings_json, m)?)?;
    m.add_function(wrap_pyfunction!(audit::bulk_twins_json, m)?)?;
    m.add_function(wrap_pyfunction!(join, m)?)?;
    m.add_function(wrap_pyfunction!(decode_state, m)?)?;
    m.add_function(wrap_pyfunction!(entries::numeric_entries, m)?)?;
    m.add("HELD_NOTHING", crdt_core::held::HELD_NOTHING)?;
    m.add("HELD_F64", crdt_core::held::HELD_F64)?;
    m.add("HELD_OTHER", crdt_core::held::HELD_OTHER)?;
    m.add("OP_INCREMENT", api_wire::INCREMENT)?;
    m.add("OP_ADD", api_wire::ADD)?;
    m.add("OP_REMOVE", api_wire::REMOVE)?;
    m.add("OP_DESIRE", api_wire::DESIRE)?;
    m.add("OP_CLEAR", api_wire::CLEAR)?;
    m.add("FORMAT_VERSION", crdt_core::codec::FORMAT as i32)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
