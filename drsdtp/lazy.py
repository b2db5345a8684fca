"""numpy, imported on first use (issue 13: idle RSS).

An idle node holds no readings, so it needs no arrays: numpy and its BLAS cost it about 15 MB of RSS and a
thread pool. Modules that work on arrays write::

    if TYPE_CHECKING:
        import numpy as np
    else:
        from drsdtp.lazy import numpy as np

mypy sees numpy itself; at run time ``np`` is a stand-in that imports numpy at its first attribute access
and then keeps each attribute it was asked for in its own ``__dict__``, so a later ``np.zeros`` is the same
dictionary look-up as on the real module. Nothing at import time of such a module may touch ``np`` (type
aliases are strings: ``F64: TypeAlias = "npt.NDArray[np.float64]"``).
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """A module imported at the first attribute read; each attribute cached on first read."""

    def __getattr__(self, name: str) -> Any:
        # Only reached when ``name`` is not cached yet (normal look-up finds cached ones first).
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # introspection (copy, pickle, doctest) must not import numpy
        value = getattr(importlib.import_module(self.__name__), name)
        setattr(self, name, value)
        return value


numpy = LazyModule("numpy")
