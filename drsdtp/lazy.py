"""numpy, imported on first use (issue 13: idle RSS).

An idle node holds no readings, so it needs no arrays: numpy and its BLAS cost it about 12 MB of RSS and a
thread. Modules that work on arrays write::

    if TYPE_CHECKING:
        import numpy as np
    else:
        from drsdtp.lazy import numpy as np

mypy sees numpy itself; at run time ``np`` is a stand-in that imports numpy at its first attribute read.
Then every loaded module's global ``np`` that is the stand-in is rebound to numpy itself (and so is this
module's ``numpy``, for modules imported later): a module type's attribute look-up is specialised by the
interpreter, a stand-in's is about 3x slower, and hot loops read ``np.`` often. Nothing at import time of
such a module may touch ``np`` (type aliases are strings: ``F64: TypeAlias = "npt.NDArray[np.float64]"``).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


class LazyModule(types.ModuleType):
    """A module imported at the first attribute read; each attribute cached on first read."""

    def __getattr__(self, name: str) -> Any:
        # Only reached when ``name`` is not cached yet (normal look-up finds cached ones first).
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # introspection (copy, pickle, doctest) must not import numpy
        module = importlib.import_module(self.__name__)
        _rebind(self, module)
        value = getattr(module, name)
        setattr(self, name, value)  # for whoever still holds the stand-in (a reference taken earlier)
        return value


def _rebind(proxy: LazyModule, module: types.ModuleType) -> None:
    """Point every module global ``np`` that is ``proxy`` at ``module`` (one pass over sys.modules)."""
    if globals().get(proxy.__name__) is proxy:
        globals()[proxy.__name__] = module
    for loaded in list(sys.modules.values()):
        namespace = getattr(loaded, "__dict__", None)
        if isinstance(namespace, dict) and namespace.get("np") is proxy:
            namespace["np"] = module


numpy = LazyModule("numpy")


def exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A package's module ``__getattr__`` (PEP 562) that imports each exported name from its submodule on
    first read (issue 13: idle RSS). Importing one submodule runs its package's ``__init__`` first: an
    ``__init__`` that imported every submodule made ``from drsdtp.intelligence.spec import FieldSpec`` load
    the whole engine. ``names`` maps an exported name to ``submodule`` or ``submodule:attribute`` (an alias).
    The package keeps its imports under ``TYPE_CHECKING`` for mypy; ``tests/daemon/test_idle_imports.py``
    checks every name resolves."""

    def __getattr__(name: str) -> Any:
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        value = getattr(importlib.import_module(f"{package}.{module}"), attribute or name)
        setattr(sys.modules[package], name, value)  # later reads are plain module look-ups
        return value

    return __getattr__
