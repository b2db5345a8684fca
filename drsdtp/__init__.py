"""drsdtp: an edge-native digital-twin node around a Rust CRDT engine."""

from importlib.metadata import PackageNotFoundError, version

try:
    # Installed metadata: the version maturin took from Cargo.toml, its one home.
    __version__ = version("drsdtp")
except PackageNotFoundError:  # a checkout on PYTHONPATH without `make setup`
    __version__ = "0+unknown"
