"""drsdtp: an edge-native digital-twin node around a Rust CRDT engine."""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # The version maturin took from the workspace's Cargo.toml (its one home), compiled into the engine:
    # reading it costs nothing, where importlib.metadata would load email, zipfile and csv into every
    # process and scan the installed packages (issue 13: idle RSS). Read when first asked for, so that the
    # client SDK and the CLI's client commands, which never ask, do not load the engine (the SDK is
    # pure Python).
    if name != "__version__":
        raise AttributeError(f"module 'drsdtp' has no attribute {name!r}")
    try:
        from drsdtp._core import __version__ as version
    except ImportError:  # a checkout on PYTHONPATH without `make setup`, or the SDK alone
        version = "0+unknown"
    globals()["__version__"] = version
    return version
