"""Reload without a restart: SIGHUP (or ``drsdtp reload``) re-reads the config and applies its models.

What a reload covers: the models (``[[models]]``, ``models_dir``, ``[[kernels]]``), validated as at start; a
config that does not read or validate is refused (logged, counted) and the running models stay. Everything
else (listen addresses, peers, adapters, twin rules, time scale ...) needs a restart; a reload that changes
those logs what it left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from drsdtp.errors import ConfigError
from drsdtp.lifecycle import BackgroundService
from drsdtp.node_commands import Reloads

if TYPE_CHECKING:
    from drsdtp.node.node import Node

__all__ = ["PidFile", "ReloadService"]

log = logging.getLogger(__name__)


class ReloadService(BackgroundService):
    name = "reload"

    def __init__(self, node: Node, reloads: Reloads) -> None:
        self.node, self.reloads = node, reloads

    async def run(self) -> None:
        while True:
            await self.reloads.requested.wait()
            self.reloads.requested.clear()
            try:
                config = await asyncio.to_thread(self.reloads.load)
            except ConfigError as exc:
                self.node.intelligence.refused_reloads += 1
                log.error("reload refused (the config does not read), the running models stay: %s", exc)
                continue
            try:
                self.node.reload(config)  # counts its own refusals
            except ConfigError as exc:
                log.error("reload refused, the running models stay: %s", exc)


class PidFile:
    """Writes this process's id to ``path`` while the daemon runs (removed on the way out)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> PidFile:
        self.path.write_text(f"{os.getpid()}\n")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(OSError):  # already gone: nothing to clean
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()
