//! Register values.
use crate::error::{Error, Result};

/// What an LWW register (or a sibling of a multi-value register) holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A finite float (NaN and infinities are refused: they break equality and every statistic downstream).
    F64(f64),
    /// A signed integer.
    I64(i64),
    /// A flag.
    Bool(bool),
    /// Text.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// Largest string or bytes value, so one register cannot exhaust memory or a gossip frame.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

impl Value {
    /// Refuses values the engine will not store.
    pub fn validate(&self) -> Result<()> {
        match self {
            Value::F64(x) if !x.is_finite() => Err(Error::InvalidValue(format!("non-finite float {x}"))),
            Value::Str(s) if s.len() > MAX_VALUE_BYTES => {
                Err(Error::Limit(format!("string value of {} bytes", s.len())))
            }
            Value::Bytes(b) if b.len() > MAX_VALUE_BYTES => {
                Err(Error::Limit(format!("bytes value of {} bytes", b.len())))
            }
            _ => Ok(()),
        }
    }
}

/// The read view of any field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// An LWW register's value.
    Register(Value),
    /// A PN-counter's total.
    Counter(i64),
    /// An OR-set's elements, sorted.
    Set(Vec<String>),
    /// A multi-value register's values in write order (stamp, writer, counter): one normally, several while
    /// concurrent writes conflict, none after a clear.
    MultiValue(Vec<Value>),
}
