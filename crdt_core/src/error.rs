//! The engine's one error type. The PyO3 layer maps each variant onto the Python exception tree.
use thiserror::Error;

/// Which CRDT a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A last-writer-wins register.
    Register,
    /// A PN-counter.
    Counter,
    /// An add-wins OR-set.
    Set,
    /// A multi-value register (desired state).
    MultiValue,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Register => "register",
            Kind::Counter => "counter",
            Kind::Set => "set",
            Kind::MultiValue => "multi-value register",
        })
    }
}

/// Everything that can go wrong in the engine. No operation panics on bad input: it returns one of these.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A timestamp is further ahead of the local physical clock than the maximum offset allows.
    #[error(
        "clock skew: timestamp {remote_ms} ms is {} ms ahead of the local clock {local_ms} ms (max offset {max_offset_ms} ms)",
        remote_ms.saturating_sub(*local_ms)
    )]
    ClockSkew {
        /// Physical milliseconds of the refused stamp.
        remote_ms: u64,
        /// Local physical milliseconds when it was refused.
        local_ms: u64,
        /// The configured gate.
        max_offset_ms: u64,
    },
    /// Bytes that are not a valid encoding (truncated, corrupt or inconsistent).
    #[error("decode error: {0}")]
    Decode(String),
    /// An encoding of a format version this build does not know.
    #[error("decode error: unknown format version {0} (this build reads version 1)")]
    UnknownFormat(i32),
    /// A message larger than the configured limit; refused before decoding.
    #[error("decode error: message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the refused message.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A value the engine refuses to store (NaN, infinity, mismatched batch arrays ...).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// A name or payload longer than the engine's bounds.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// A local operation of one CRDT kind on a field that holds another.
    #[error("type conflict: field {field:?} of twin {twin:?} is a {existing}, not a {requested}")]
    TypeConflict {
        /// Twin id.
        twin: String,
        /// Field name.
        field: String,
        /// Kind the field holds.
        existing: Kind,
        /// Kind the operation needs.
        requested: Kind,
    },
    /// A counter update that would leave the 64-bit range.
    #[error("counter overflow: field {field:?} of twin {twin:?}")]
    CounterOverflow {
        /// Twin id.
        twin: String,
        /// Field name.
        field: String,
    },
    /// A twin (or interned id) the store does not know.
    #[error("unknown twin or field: {0}")]
    Unknown(String),
    /// The durable log or a snapshot failed.
    #[error("storage: {0}")]
    Storage(String),
}

/// Result alias of the engine.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn corrupt(msg: impl Into<String>) -> Error {
    Error::Decode(msg.into())
}
