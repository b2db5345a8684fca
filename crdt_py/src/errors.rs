//! The one place engine errors become Python exceptions: each variant maps onto a class of the tree in
//! `drsdtp/errors.py` (which subclasses the stdlib exceptions where the meaning matches).
use crdt_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyType;

fn class_name(e: &Error) -> &'static str {
    match e {
        Error::ClockSkew { .. } => "ClockSkewError",
        Error::Decode(_) | Error::UnknownFormat(_) | Error::TooLarge { .. } => "DecodeError",
        Error::InvalidValue(_) => "InvalidValueError",
        Error::Limit(_) => "LimitError",
        Error::TypeConflict { .. } => "TypeConflictError",
        Error::CounterOverflow { .. } => "CounterOverflowError",
        Error::Unknown(_) => "UnknownTwinError",
        Error::Storage(_) => "StorageError",
        _ => "DrsdtpError",
    }
}

/// Converts an engine error into the matching Python exception.
pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let class = py
            .import("drsdtp.errors")
            .and_then(|m| m.getattr(class_name(&e)))
            .and_then(|c| c.downcast_into::<PyType>().map_err(PyErr::from));
        match class {
            Ok(class) => {
                let err = PyErr::from_type(class, e.to_string());
                if let Error::ClockSkew { remote_ms, local_ms, max_offset_ms } = e {
                    let value = err.value(py);
                    let _ = value.setattr("remote_ms", remote_ms);
                    let _ = value.setattr("local_ms", local_ms);
                    let _ = value.setattr("max_offset_ms", max_offset_ms);
                }
                err
            }
            Err(import_error) => import_error,
        }
    })
}

/// `Result` of the engine to `PyResult`.
pub trait IntoPy<T> {
    /// Maps the error side.
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for crdt_core::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
