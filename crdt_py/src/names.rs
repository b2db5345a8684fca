//! Names to interned ids for batches given by name, one native call per batch.
//!
//! A Python loop over a dict (the first `BatchWriter`) cost more than the batch write itself, and so did
//! converting each name to a Rust string on every call. Here a name is resolved without touching it when it
//! is the very string object that stood at the same place in the previous batch (a poller sends the same
//! keys every tick) or the one just before it (a twin's readings in a row): one pointer comparison. Only
//! the rest is read as text and interned, with the GIL released, under the store's lock.
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

/// A batch's names: a list or a tuple of str.
pub enum Names<'a, 'py> {
    List(&'a Bound<'py, PyList>),
    Tuple(&'a Bound<'py, PyTuple>),
}

impl<'a, 'py> Names<'a, 'py> {
    pub fn new(arg: &'a Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(list) = arg.downcast::<PyList>() {
            Ok(Names::List(list))
        } else if let Ok(tuple) = arg.downcast::<PyTuple>() {
            Ok(Names::Tuple(tuple))
        } else {
            Err(PyTypeError::new_err(format!("{what}: a list or tuple of str, not {}", arg.get_type())))
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Names::List(l) => l.len(),
            Names::Tuple(t) => t.len(),
        }
    }

    /// The addresses of the items, for identity only (never dereferenced), to `visit` in order until it
    /// returns false; the container is asked once which kind it is, not once per item.
    fn addresses(&self, mut visit: impl FnMut(usize, usize) -> bool) {
        let (container, get): (_, unsafe extern "C" fn(_, _) -> _) = match self {
            Names::List(l) => (l.as_ptr(), pyo3::ffi::PyList_GetItem),
            Names::Tuple(t) => (t.as_ptr(), pyo3::ffi::PyTuple_GetItem),
        };
        for i in 0..self.len() {
            // SAFETY: the GIL is held and `i` is in bounds; the borrowed pointer is only compared, not used,
            // and no Python code runs while the batch is resolved, so the container cannot change under us.
            let at = unsafe { get(container, i as pyo3::ffi::Py_ssize_t) } as usize;
            if !visit(i, at) {
                return;
            }
        }
    }

    fn item(&self, i: usize) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Names::List(l) => l.get_item(i),
            Names::Tuple(t) => t.get_item(i),
        }
    }
}

/// The names of the previous batch, held (so an address cannot be reused by another string while it is
/// remembered) with their addresses and ids, by place. Bounded: longer batches are not remembered.
#[derive(Default)]
pub struct Memo {
    held: Vec<Py<PyAny>>,
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
    /// Every place held the memo's object: nothing to remember anew.
    remembered: bool,
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
    /// Resolves what the memo knows of `names`: when every place holds the very object it held in the
    /// previous batch (a poller's fixed lists), one pass of pointer comparisons and a copy of the ids.
    pub fn resolve(&self, names: &Names<'_, '_>) -> Resolved {
        let n = names.len();
        if self.addresses.len() == n {
            let mut same = true;
            names.addresses(|i, at| {
                same = self.addresses[i] == at;
                same
            });
            if same {
                let (missing, copies) = (Vec::new(), Vec::new());
                return Resolved { ids: self.ids.clone(), missing, copies, addresses: Vec::new(), remembered: true };
            }
        }
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
            true
        });
        Resolved { ids, missing, copies, addresses, remembered: false }
    }

    /// Remembers this batch's names and ids (unless the memo already held them all).
    pub fn remember(&mut self, names: &Names<'_, '_>, resolved: Resolved) -> PyResult<Vec<u32>> {
        if resolved.remembered {
            return Ok(resolved.ids);
        }
        self.held.clear();
        self.addresses.clear();
        self.ids.clear();
        if resolved.ids.len() <= MAX_REMEMBERED {
            self.held = (0..names.len()).map(|i| names.item(i).map(Bound::unbind)).collect::<PyResult<_>>()?;
            self.addresses = resolved.addresses;
            self.ids.extend_from_slice(&resolved.ids);
        }
        Ok(resolved.ids)
    }
}

/// The texts of the missing places, as strings the caller keeps alive while it reads them.
pub fn missing_strings<'py>(
    names: &Names<'_, 'py>,
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
