"""drsdtp: an edge-native digital-twin node around a Rust CRDT engine."""

__version__ = "0.1.0"
