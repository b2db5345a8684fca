"""drsdtp: an edge-native digital-twin node around a Rust CRDT engine."""

__all__ = ["__version__"]

try:
    # The version maturin took from the workspace's Cargo.toml (its one home), compiled into the engine:
    # reading it costs nothing, where importlib.metadata would load email, zipfile and csv into every
    # process and scan the installed packages (issue 13: idle RSS).
    from drsdtp._core import __version__ as __version__
except ImportError:  # a checkout on PYTHONPATH without `make setup`
    __version__ = "0+unknown"
