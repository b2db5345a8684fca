"""What the modules a ``drsdtp run`` process imports hold on the Python heap, by package (issue 13: idle RSS).

``python benches/module_heap.py CONFIG [SECONDS]`` runs ``drsdtp run --config CONFIG`` in this process with
tracemalloc on and every module's import measured on its own: the bytes its loading and its body allocated
that are still held, less what the imports it made allocated (each of those is counted as itself). Once
its API accepts connections and SECONDS (default 5) of idling later, it stops the node (SIGTERM, as
systemd does) and prints one JSON object: ``{"traced": bytes held at idle, "modules": {name: bytes}}``.
``bench_memory.py`` runs it beside the real daemon and groups the modules by package. ``--allocator``
runs the node without tracemalloc and prints Python's small-object allocator at idle instead:
``{"arenas": 1 MiB arenas in use, "allocated_blocks": bytes in their live blocks}``.

Not the daemon process itself (tracemalloc costs memory and time of its own), but the same command, config
and imports, so the same modules and objects.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import tomllib
import tracemalloc
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Measured(importlib.abc.Loader):
    """A module's loader with its ``exec_module`` measured (everything else is the loader's own)."""

    def __init__(self, loader: Any, name: str, meter: ModuleMeter) -> None:
        self._loader, self._name, self._meter = loader, name, meter

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._loader, attr)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        meter = self._meter
        meter.stack.append(0)
        before = tracemalloc.get_traced_memory()[0]
        try:
            self._loader.exec_module(module)
        finally:
            total = tracemalloc.get_traced_memory()[0] - before
            children = meter.stack.pop()
            meter.own[self._name] = meter.own.get(self._name, 0) + total - children
            if meter.stack:
                meter.stack[-1] += total


class ModuleMeter(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: finds each module with the finders after it and measures its import."""

    def __init__(self) -> None:
        self.own: dict[str, int] = {}
        self.stack: list[int] = []

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec: importlib.machinery.ModuleSpec | None = finder.find_spec(name, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _Measured(spec.loader, name, self)
            return spec
        return None


def _after_serving(config: str, seconds: float, stop: Callable[[], None]) -> threading.Event:
    """Calls ``stop`` ``seconds`` after the node's API accepts a connection (a loaded machine can take longer
    than the idle time to start, and a SIGTERM before the node handles it kills the process); setting the
    returned event cancels it."""
    with open(config, "rb") as f:
        host, _, port = tomllib.load(f)["listen"]["api"].rpartition(":")
    cancelled = threading.Event()

    def wait() -> None:
        while not cancelled.is_set():
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                cancelled.wait(0.2)
        if not cancelled.wait(seconds):
            stop()

    threading.Thread(target=wait, daemon=True).start()
    return cancelled


def allocator_stats() -> dict[str, int]:
    """Python's small-object allocator (``sys._debugmallocstats``, which writes to the C stderr): arenas in
    use and the bytes in their live blocks. Only without tracemalloc, whose hooks hide the allocator."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode()
    return {
        key: int(line.split("=")[1].replace(",", ""))
        for line in text.splitlines()
        for key, label in (
            ("arenas", "# arenas allocated current"),
            ("allocated_blocks", "# bytes in allocated"),
        )
        if line.startswith(label)
    }


def _run_until_idle(config: str, seconds: float, at_idle: Callable[[], None]) -> None:
    """Runs a node on ``config``; ``seconds`` after it serves, ``at_idle`` runs and the node is stopped."""

    def stop() -> None:
        at_idle()
        os.kill(os.getpid(), signal.SIGTERM)

    timer = _after_serving(config, seconds, stop)
    from drsdtp.cli import main as cli_main

    try:
        cli_main(["run", "--config", config])
    finally:
        timer.set()


def allocator_main(config: str, seconds: float) -> None:
    """``--allocator``: the same node without tracemalloc; prints the allocator's figures at idle as JSON."""
    stats: dict[str, int] = {}
    _run_until_idle(config, seconds, lambda: stats.update(allocator_stats()))
    print(json.dumps(stats))


def main(config: str, seconds: float) -> None:
    tracemalloc.start()
    meter = ModuleMeter()
    sys.meta_path.insert(0, meter)
    idle: list[int] = []
    _run_until_idle(config, seconds, lambda: idle.append(tracemalloc.get_traced_memory()[0]))
    print(json.dumps({"traced": idle[0] if idle else -1, "modules": meter.own}))


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    args = [a for a in sys.argv[1:] if a != "--allocator"]
    (allocator_main if "--allocator" in sys.argv else main)(args[0], float(args[1]) if len(args) > 1 else 5.0)
