"""The one exception tree of drsdtp.

Every error drsdtp raises on purpose is a ``DrsdtpError``. Where the meaning matches a stdlib exception the
class subclasses it too (``ValueError`` for bad input, ``TypeError`` for a type clash, ``OverflowError``,
``ConnectionError``), so callers may catch either. The native engine (:mod:`drsdtp._core`) raises these same
classes: its Rust error enum is mapped onto this tree in one place (``crdt_py/src/errors.rs``).
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "ClockSkewError",
    "ConfigError",
    "CounterOverflowError",
    "DecodeError",
    "DrsdtpError",
    "InvalidValueError",
    "LimitError",
    "MissingSnapshotError",
    "NotReadyError",
    "PreconditionError",
    "ReplicationTimeoutError",
    "StorageError",
    "TypeConflictError",
    "UnknownTwinError",
]


class DrsdtpError(Exception):
    """Root of every error drsdtp raises on purpose."""


class DecodeError(DrsdtpError, ValueError):
    """Bytes that are not a valid encoding: truncated, corrupt, oversized or of an unknown format version."""


class ClockSkewError(DrsdtpError, ValueError):
    """A timestamp is further ahead of the local clock than the configured maximum offset."""


class InvalidValueError(DrsdtpError, ValueError):
    """A value the engine refuses to store, such as NaN or an infinite float."""


class LimitError(DrsdtpError, ValueError):
    """An input exceeds a configured bound (names, batch or message size)."""


class TypeConflictError(DrsdtpError, TypeError):
    """A field already holds another CRDT type (a register cannot become a set or a counter)."""


class CounterOverflowError(DrsdtpError, OverflowError):
    """A counter update would overflow its 64-bit range."""


class UnknownTwinError(DrsdtpError, KeyError):
    """The twin (or field) is not in the store."""


class PreconditionError(DrsdtpError):
    """The node is not in the state a request needs (a feature off, a condition on the twin's version)."""


class NotReadyError(DrsdtpError):
    """The node cannot answer this yet (e.g. before its first intelligence pass): retry shortly."""


class ReplicationTimeoutError(DrsdtpError, TimeoutError):
    """Peers did not acknowledge a write within its deadline (the write stays applied and replicates on)."""


class StorageError(DrsdtpError, OSError):
    """The durable log or a snapshot could not be read or written."""


class MissingSnapshotError(StorageError, LookupError):
    """The twin has no snapshot with that id (on this node)."""


class ConfigError(DrsdtpError, ValueError):
    """A configuration value is missing or invalid; the message names the key and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class AdapterError(DrsdtpError, ConnectionError):
    """An ingestion adapter lost or could not establish its connection (the supervisor retries)."""
