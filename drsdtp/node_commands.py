"""The seam between the CLI and the node: what each node-backed subcommand receives and the Protocol it calls.

The CLI parses arguments into the option objects below and calls a :class:`Commands` implementation; it never
touches the daemon or the gRPC client itself. :func:`load_commands` returns the node's implementation; tests
pass their own.

Conventions for implementations: return a process exit status (:data:`EXIT_OK`, :data:`EXIT_FAILURE`,
:data:`EXIT_USAGE`); print through the :class:`~drsdtp.console.Console` (tables, or :meth:`Console.json` when
``console.json_mode``; ``console.progress`` for long work); raise ``DrsdtpError`` subclasses for failures the
CLI should report as ``error: ...`` with status 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol, cast

from drsdtp.config import Address, NodeConfig, TlsConfig
from drsdtp.console import Console
from drsdtp.errors import ConfigError

__all__ = [
    "DEFAULT_API",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "PID_FILE",
    "ApiTarget",
    "AuditQuery",
    "Commands",
    "DeadLetterSelection",
    "DeadLettersQuery",
    "DemoOptions",
    "ExportRequest",
    "GetQuery",
    "HistoryQuery",
    "InsightQuery",
    "RecoverRequest",
    "Reloads",
    "RollbackRequest",
    "SnapshotRequest",
    "TwinsQuery",
    "load_commands",
]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2  # also bad configuration, like argparse's own usage errors

#: Where client commands look for the node's application API when not told otherwise (the default listen.api).
DEFAULT_API: Final = Address("127.0.0.1", 7401)
DEFAULT_DEMO_METRICS: Final = Address("127.0.0.1", 9464)


@dataclass(frozen=True, slots=True)
class ApiTarget:
    """Where a client command finds the node's application API."""

    address: Address
    tls: TlsConfig | None = None  # used when its ``api`` mode is on
    timeout_s: float = 5.0
    server_name: str | None = None  # the name the node's certificate must carry (its node id)
    token: str | None = None  # a bearer token (None: $DRSDTP_TOKEN, if set)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """``drsdtp demo``: a local node (or a few, replicating) fed by simulated sensors."""

    twins: int = 20
    rate_hz: float = 1.0  # readings per second per twin
    duration_s: float | None = None  # None: until interrupted
    nodes: int = 3  # replicating node processes
    seed: int = 0
    data_dir: Path | None = None  # None: a temporary directory removed on exit
    api: Address = DEFAULT_API  # so `drsdtp status` works against the demo
    metrics: Address = DEFAULT_DEMO_METRICS


@dataclass(frozen=True, slots=True)
class TwinsQuery:
    model: str | None = None
    scope: str | None = None
    prefix: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class GetQuery:
    twin_id: str
    fields: tuple[str, ...] = ()  # empty: all fields


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    twin_id: str
    field: str
    since: float | None = None  # unix seconds
    until: float | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class ExportRequest:
    output: Path | None = None  # None: stdout
    format: Literal["jsonl", "csv"] = "jsonl"
    prefix: str | None = None  # only twins whose id starts with it
    history: bool = False  # include raw history, not only the latest state


@dataclass(frozen=True, slots=True)
class InsightQuery:
    """``drsdtp insight``: twin intelligence as JSON (health, forecast, what-if, recommendations)."""

    twin_id: str
    kind: Literal["health", "forecast", "whatif", "recommendations"] = "health"
    scenario: str | None = None  # what-if: "fan off", "setpoint 18", "heater fails"
    horizon_min: float = 60.0


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """``drsdtp snapshot``: take a snapshot of a twin (``reason`` required: it goes to the audit trail)."""

    twin_id: str
    reason: str
    actor: str


@dataclass(frozen=True, slots=True)
class RollbackRequest:
    """``drsdtp rollback``: bring a twin back to one of its snapshots."""

    twin_id: str
    snapshot_id: str
    reason: str
    actor: str


@dataclass(frozen=True, slots=True)
class RecoverRequest:
    """``drsdtp recover``: show what the write-ahead log's recovery found; with ``accept``, acknowledge it
    (``reason`` required: it goes to the audit trail) so the node becomes ready."""

    accept: bool = False
    reason: str = ""
    actor: str = ""


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """``drsdtp audit``: the audit trail (snapshots and rollbacks), newest ``limit`` records."""

    twin_id: str | None = None
    since: float | None = None  # unix seconds
    until: float | None = None
    actor: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class DeadLettersQuery:
    """``drsdtp deadletters``: the newest ``limit`` letters (of ``adapter`` when set)."""

    adapter: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class DeadLetterSelection:
    """``drsdtp deadletters replay|purge``: the letters ``ids``, or every letter (of ``adapter`` when set)."""

    ids: tuple[int, ...] = ()
    all: bool = False
    adapter: str | None = None


@dataclass(slots=True)
class Reloads:
    """``drsdtp run`` and SIGHUP: ``requested`` is set by the CLI's handler; the daemon then calls ``load``
    (the config file read and validated again) and applies what a reload covers (the models)."""

    load: Callable[[], NodeConfig]
    requested: asyncio.Event = field(default_factory=asyncio.Event)


#: The daemon's process id, in its data directory while it runs (``drsdtp reload`` signals it).
PID_FILE: Final = "drsdtp.pid"


class Commands(Protocol):
    """What the node provides to the CLI. ``stop`` is set by SIGTERM/SIGINT (the CLI installs handlers)."""

    async def run(
        self, config: NodeConfig, stop: asyncio.Event, console: Console, reloads: Reloads | None = None
    ) -> int: ...

    async def demo(self, options: DemoOptions, stop: asyncio.Event, console: Console) -> int: ...

    async def status(self, target: ApiTarget, console: Console) -> int: ...

    async def twins(self, target: ApiTarget, query: TwinsQuery, console: Console) -> int: ...

    async def get(self, target: ApiTarget, query: GetQuery, console: Console) -> int: ...

    async def history(self, target: ApiTarget, query: HistoryQuery, console: Console) -> int: ...

    async def export(self, target: ApiTarget, request: ExportRequest, console: Console) -> int: ...

    async def insight(self, target: ApiTarget, query: InsightQuery, console: Console) -> int: ...

    async def snapshot(self, target: ApiTarget, request: SnapshotRequest, console: Console) -> int: ...

    async def snapshots(self, target: ApiTarget, twin_id: str, console: Console) -> int: ...

    async def rollback(self, target: ApiTarget, request: RollbackRequest, console: Console) -> int: ...

    async def audit(self, target: ApiTarget, query: AuditQuery, console: Console) -> int: ...

    async def deadletters(self, target: ApiTarget, query: DeadLettersQuery, console: Console) -> int: ...

    async def replay_deadletters(
        self, target: ApiTarget, selection: DeadLetterSelection, console: Console
    ) -> int: ...

    async def purge_deadletters(
        self, target: ApiTarget, selection: DeadLetterSelection, console: Console
    ) -> int: ...
    async def recover(self, target: ApiTarget, request: RecoverRequest, console: Console) -> int: ...

    def check_plugins(self, config: NodeConfig) -> Sequence[ConfigError]:
        """Deeper validation of the adapter and kernel tables (by their plugins), for ``check-config``."""
        ...


def load_commands() -> Commands:
    """The implementation the CLI uses: the client commands from :mod:`drsdtp.cli_client` (on the SDK, no
    daemon imports), the rest (``run``, ``demo`` ...) from the node's; each imported only when called, so
    ``--help`` stays fast and ``drsdtp get`` loads no daemon module."""
    return cast(Commands, _LazyCommands())


class _LazyCommands:
    def __getattr__(self, name: str) -> Any:
        if name in _NODE_COMMANDS:  # the daemon's commands load no SDK module (an idle node's RSS)
            from drsdtp.node.commands import NodeCommands

            return getattr(NodeCommands(), name)
        from drsdtp.cli_client.commands import ClientCommands

        return getattr(ClientCommands(), name)


_NODE_COMMANDS: Final = frozenset({"run", "demo", "check_plugins"})
