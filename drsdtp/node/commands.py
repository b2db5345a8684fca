"""The CLI's node-backed commands: ``run`` serves a node, ``demo`` runs a local cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from drsdtp.config import NodeConfig
from drsdtp.console import Console
from drsdtp.errors import ConfigError
from drsdtp.lifecycle import run_services
from drsdtp.node_commands import EXIT_OK, PID_FILE, DemoOptions, Reloads
from drsdtp.sdnotify import SystemdNotifier


class NodeCommands:
    """The node-backed part of :class:`drsdtp.node_commands.Commands`; the client commands are the
    SDK-based :class:`~drsdtp.cli_client.commands.ClientCommands`, which ``drsdtp run`` never imports."""

    async def run(
        self, config: NodeConfig, stop: asyncio.Event, console: Console, reloads: Reloads | None = None
    ) -> int:
        from drsdtp.node.gc_settle import GcSettle
        from drsdtp.node.loop_lag import LoopLag
        from drsdtp.node.node import Node  # the daemon's imports stay out of client commands
        from drsdtp.node.reload import PidFile, ReloadService

        node = Node(config)
        services = node.services()
        if reloads is not None:
            services.append(ReloadService(node, reloads))
        lag = LoopLag()
        node.metrics.add_histogram(
            "drsdtp_event_loop_lag_seconds", "How late the event loop ran a timer (its stalls).", lag.lag
        )
        services.append(lag)
        services.append(GcSettle(node.metrics))  # last: every start-up object exists when it is entered
        with PidFile(config.data_dir / PID_FILE):
            await run_services(
                services,
                stop=stop,
                shutdown_timeout=config.shutdown_timeout_s,
                notifier=SystemdNotifier.from_env(),
            )
        return EXIT_OK

    async def demo(self, options: DemoOptions, stop: asyncio.Event, console: Console) -> int:
        from drsdtp.node.cluster_demo import run_demo

        return await run_demo(options, stop, console)

    def check_plugins(self, config: NodeConfig) -> Sequence[ConfigError]:
        problems: list[ConfigError] = []
        try:
            from drsdtp.adapters import build_adapter
        except ImportError:  # pragma: no cover - the adapters package ships with drsdtp
            return problems
        from drsdtp.kernels import default_registry
        from drsdtp.models import ModelCatalog

        for i, raw in enumerate(config.adapters):
            try:
                build_adapter(raw, f"adapters[{i}]")
            except ConfigError as exc:
                problems.append(exc)
        try:
            ModelCatalog.from_config(config, default_registry())
        except ConfigError as exc:
            problems.append(exc)
        return problems
