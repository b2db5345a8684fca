//! Names to interned ids for batches given by name, one native call per batch.
//!
//! A Python loop over a dict (the first `BatchWriter`) cost more than the batch write itself, and so did
//! converting each name to a Rust string on every call. Here a batch whose names equal the previous batch's
//! (a poller sends the same keys every tick) is recognised by one comparison of the two lists, run by Python's
//! own list comparison (a pointer comparison per item when the strings are the same objects): a per-item
//! `PyList_GetItem` through the stable ABI cost 18% of a by-name write. Otherwise a name is resolved without
//! touching it when it is the very string object that stood at the same place in the previous batch or the
//! one just before it (a twin's readings in a row); only the rest is read as text and interned, with the GIL
//! released, under the store's lock.
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

/// A batch's names: a list or a tuple of str.
pub enum Names<'py> {
    List(Bound<'py, PyList>),
    Tuple(Bound<'py, PyTuple>),
}

impl<'py> Names<'py> {
    pub fn new(arg: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(list) = arg.downcast::<PyList>() {
            Ok(Names::List(list.clone()))
        } else if let Ok(tuple) = arg.downcast::<PyTuple>() {
            Ok(Names::Tuple(tuple.clone()))
        } else {
            Err(PyTypeError::new_err(format!("{what}: a list or tuple of str, not {}", arg.get_type())))
        }
    }

    /// The names as they are now, out of the caller's reach: a list is copied (its items shared), a tuple
    /// cannot change. A batch is resolved from its snapshot, which the memo then keeps.
    pub fn snapshot(&self) -> Names<'py> {
        match self {
            Names::List(l) => Names::List(l.get_slice(0, l.len())),
            Names::Tuple(t) => Names::Tuple(t.clone()),
        }
    }

    fn any(&self) -> &Bound<'py, PyAny> {
        match self {
            Names::List(l) => l.as_any(),
            Names::Tuple(t) => t.as_any(),
        }
    }

    /// Whether the names equal `held` (the same kind of container, `==` item by item, as dict keys compare).
    /// May run Python code (a str subclass's `__eq__`): never called with a lock held.
    pub fn equals(&self, held: &Bound<'py, PyAny>) -> PyResult<bool> {
        self.any().eq(held)
    }

    pub fn len(&self) -> usize {
        match self {
            Names::List(l) => l.len(),
            Names::Tuple(t) => t.len(),
        }
    }

    /// The addresses of the items, for identity only (never dereferenced), in order.
    fn addresses(&self, mut visit: impl FnMut(usize, usize)) {
        let (container, get): (_, unsafe extern "C" fn(_, _) -> _) = match self {
            Names::List(l) => (l.as_ptr(), pyo3::ffi::PyList_GetItem),
            Names::Tuple(t) => (t.as_ptr(), pyo3::ffi::PyTuple_GetItem),
        };
        for i in 0..self.len() {
            // SAFETY: the GIL is held and `i` is in bounds (the names are a snapshot no one else holds); the
            // borrowed pointer is only compared, not used.
            let at = unsafe { get(container, i as pyo3::ffi::Py_ssize_t) } as usize;
            visit(i, at);
        }
    }

    fn item(&self, i: usize) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Names::List(l) => l.get_item(i),
            Names::Tuple(t) => t.get_item(i),
        }
    }
}

/// The names of the previous batch (a snapshot, holding its strings, so an address cannot be reused by
/// another string while it is remembered) with their addresses and ids, by place. Bounded: longer batches
/// are not remembered.
#[derive(Default)]
pub struct Memo {
    held: Option<Py<PyAny>>,
    addresses: Vec<usize>,
    ids: Vec<u32>,
}

const MAX_REMEMBERED: usize = 1 << 16;

/// A batch's names resolved as far as the memo goes: `ids` is complete once `finish` got the ids of the
/// `missing` places (interned by the caller); `copies` repeat the id before them.
pub struct Resolved {
    pub ids: Vec<u32>,
    pub missing: Vec<usize>,
    copies: Vec<usize>,
    addresses: Vec<usize>,
}

impl Resolved {
    /// Fills in the interned ids of the missing places (in `missing` order), then the repeats.
    pub fn finish(&mut self, interned: &[u32]) {
        for (&i, &id) in self.missing.iter().zip(interned) {
            self.ids[i] = id;
        }
        for &i in &self.copies {
            self.ids[i] = self.ids[i - 1];
        }
    }
}

impl Memo {
    /// The previous batch's names, for the caller to compare a batch with once the memo's lock is released.
    pub fn held(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.held.as_ref().map(|h| h.clone_ref(py))
    }

    /// The ids of `held` (from `held`), unless another batch was remembered since.
    pub fn ids_of_held(&self, held: &Py<PyAny>) -> Option<Vec<u32>> {
        // `held` keeps the snapshot alive, so the same address is the same snapshot.
        (self.held.as_ref().map(Py::as_ptr) == Some(held.as_ptr())).then(|| self.ids.clone())
    }

    /// Resolves what the memo knows of `names` (a snapshot), place by place.
    pub fn resolve(&self, names: &Names<'_>) -> Resolved {
        let n = names.len();
        let mut ids = vec![0u32; n];
        let mut addresses = Vec::with_capacity(n);
        let (mut missing, mut copies) = (Vec::new(), Vec::new());
        names.addresses(|i, at| {
            addresses.push(at);
            if self.addresses.get(i) == Some(&at) {
                ids[i] = self.ids[i];
            } else if i > 0 && addresses[i - 1] == at {
                copies.push(i);
            } else {
                missing.push(i);
            }
        });
        Resolved { ids, missing, copies, addresses }
    }

    /// Remembers this batch's names (the snapshot it was resolved from) and ids.
    pub fn remember(&mut self, names: Names<'_>, resolved: Resolved) -> Vec<u32> {
        self.held = None;
        self.addresses.clear();
        self.ids.clear();
        if resolved.ids.len() <= MAX_REMEMBERED {
            self.held = Some(names.any().clone().unbind());
            self.addresses = resolved.addresses;
            self.ids.extend_from_slice(&resolved.ids);
        }
        resolved.ids
    }
}

/// The texts of the missing places, as strings the caller keeps alive while it reads them.
pub fn missing_strings<'py>(
    names: &Names<'py>,
    resolved: &Resolved,
    what: &str,
) -> PyResult<Vec<Bound<'py, PyString>>> {
    resolved
        .missing
        .iter()
        .map(|&i| {
            names.item(i)?.downcast_into::<PyString>().map_err(|e| {
                PyTypeError::new_err(format!("{what} at index {i}: a str, not {}", e.into_inner().get_type()))
            })
        })
        .collect()
}

/// Interns `texts` (the names at places `at` of a batch) with `intern`; an error names the place.
pub fn intern_all(
    texts: &[&str],
    at: &[usize],
    what: &str,
    mut intern: impl FnMut(&str) -> crdt_core::Result<u32>,
) -> crdt_core::Result<Vec<u32>> {
    texts
        .iter()
        .zip(at)
        .map(|(name, &i)| {
            intern(name).map_err(|e| match e {
                crdt_core::Error::InvalidValue(m) => {
                    crdt_core::Error::InvalidValue(format!("{what} at index {i}: {m}"))
                }
                crdt_core::Error::Limit(m) => crdt_core::Error::Limit(format!("{what} at index {i}: {m}")),
                other => other,
            })
        })
        .collect()
}
