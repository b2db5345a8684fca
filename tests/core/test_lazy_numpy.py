"""drsdtp.lazy: numpy is imported at the first ``np.`` read, then every module's ``np`` is numpy itself (the
stand-in's attribute look-up is slower than a module's). In a fresh interpreter: this one has numpy."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import drsdtp.history.store as store, drsdtp.lazy as lazy
before = "numpy" in sys.modules
zeros = store.np.zeros(2)
import numpy
from drsdtp.lazy import numpy as later
print(before, type(zeros).__name__, store.np is numpy, lazy.numpy is numpy, later is numpy)
"""


def test_numpy_is_imported_at_first_use_and_rebound() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "ndarray", "True", "True", "True"]


def test_a_dunder_read_does_not_import_numpy() -> None:
    probe = "import sys\nfrom drsdtp.lazy import LazyModule\nm = LazyModule('numpy')\n"
    probe += "print(hasattr(m, '__wrapped__'), 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
