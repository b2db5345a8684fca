//! `crdt_core`: the CRDT engine of drsdtp, in pure Rust (no Python, no async runtime, no I/O framework).
//!
//! A [`Store`] holds many twins; a twin is a document of named fields, each an LWW register
//! ([`LwwReg`], HLC-stamped), a PN-counter ([`PnCounter`]), an add-wins OR-set ([`OrSet`]) or a
//! multi-value register ([`MvReg`], desired state that keeps concurrent writes), under one causal
//! [`Context`]. Every local mutation returns its delta as bytes in the canonical encoding of
//! `proto/drsdtp/wire/v1/state.proto`; [`Store::merge`] joins deltas, catch-up deltas and full states, and
//! is idempotent, commutative and associative. [`Store::catch_up`] computes everything a peer at a given
//! version lacks; [`Store::digest`] gives per-twin digests for anti-entropy.
//!
//! ```
//! use crdt_core::{FieldValue, Store, Value};
//! let mut a = Store::new(1, 500);
//! let mut b = Store::new(2, 500);
//! let d1 = a.set("pump-7", "rpm", Value::F64(1450.0)).unwrap();
//! let d2 = b.add("pump-7", "tags", "critical").unwrap();
//! a.merge(&d2).unwrap();
//! b.merge(&d1).unwrap();
//! assert_eq!(a.encode_state(None), b.encode_state(None));
//! assert_eq!(b.get("pump-7", "rpm"), Some(FieldValue::Register(Value::F64(1450.0))));
//! ```

mod batch;
pub mod clock;
pub mod codec;
pub mod context;
pub mod counter;
mod desired;
pub mod entries;
pub mod error;
pub mod held;
pub mod intern;
pub mod lww;
pub mod mvreg;
mod ops;
pub mod orset;
#[allow(missing_docs, clippy::all)]
#[rustfmt::skip]
pub mod pb;
pub mod snapshot;
pub mod store;
pub mod value;
mod view;
pub mod wal;

pub use clock::{Hlc, Stamp};
pub use codec::join;
pub use context::{Context, Dot, ReplicaId};
pub use counter::PnCounter;
pub use entries::{is_reading, numeric_entries, MergedReadings, NumericEntry};
pub use error::{Error, Kind, Result};
pub use lww::LwwReg;
pub use mvreg::{MvReg, Sibling};
pub use ops::{FieldOps, FieldWrite};
pub use orset::OrSet;
pub use store::{Limits, Store, StoreStats};
pub use value::{FieldValue, Value};
pub use wal::{Batch, OnCorruption, Options as WalOptions, RecordKind, Recovery, Storage, Wal, WalStats};
