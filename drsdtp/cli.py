"""The ``drsdtp`` command (also ``python -m drsdtp``).

This module is the edge of the program: the only place that configures logging and installs signal handlers.
Node-backed subcommands are parsed here and carried out by a :class:`~drsdtp.node_commands.Commands`
implementation; ``check-config`` is complete here.

Exit status: 0 success, 1 failure at run time, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import pwd
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from drsdtp import command_cli, intel_cli
from drsdtp.cli_client import args as cli_args
from drsdtp.config import (
    Address,
    NodeConfig,
    check_exposure,
    check_files,
    load_config,
    load_config_with_overrides,
    parse_address,
)
from drsdtp.console import Console
from drsdtp.errors import ConfigError, DrsdtpError
from drsdtp.kubeedge import cli as kubeedge_cli
from drsdtp.lifecycle import capture_signals
from drsdtp.node_commands import (
    DEFAULT_API,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    PID_FILE,
    ApiTarget,
    AuditQuery,
    Commands,
    DeadLetterSelection,
    DeadLettersQuery,
    DemoOptions,
    ExportRequest,
    GetQuery,
    HistoryQuery,
    InsightQuery,
    RecoverRequest,
    Reloads,
    RollbackRequest,
    SnapshotRequest,
    TwinsQuery,
    load_commands,
)
from drsdtp.rules import cli as rules_cli

__all__ = ["build_parser", "main", "parse_time", "setup_logging"]

log = logging.getLogger(__name__)

DEFAULT_CONFIG: Final = Path("/etc/drsdtp/drsdtp.toml")
_LEVELS: Final = ("debug", "info", "warning", "error")
_HANDLER_NAME: Final = "drsdtp-cli"
# Defaults come from instances: on a slots dataclass the class attribute is a descriptor, not the default.
_DEMO: Final = DemoOptions()
_TWINS: Final = TwinsQuery()
_HISTORY_LIMIT: Final = HistoryQuery(twin_id="", field="").limit
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_SYSLOG_PRIORITY: Final = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


# --- logging ----------------------------------------------------------------------------------------------


class _JournalFormatter(logging.Formatter):
    """``<priority>logger: message``: journald parses the prefix as the level and adds its own timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


def _stderr_is_journal() -> bool:
    # systemd sets JOURNAL_STREAM=<dev>:<inode> when stderr is connected to the journal.
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if _stderr_is_journal():
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)  # calling twice (tests, main() reused) must not duplicate lines
    root.addHandler(handler)
    root.setLevel(level.upper())


# --- argument types ---------------------------------------------------------------------------------------


def parse_time(text: str, *, now: float | None = None) -> float:
    """``now``, a duration ago (``90s``, ``15m``, ``2h``, ``7d``), or ISO 8601 (local time unless zoned)."""
    now = time.time() if now is None else now
    text = text.strip()
    if text == "now":
        return now
    match = _DURATION_RE.fullmatch(text.removeprefix("-"))
    if match:
        return now - float(match[1]) * _UNIT_SECONDS[match[2]]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use 'now', a duration ago like 15m/2h/7d, or ISO 8601"
        ) from None
    return moment.timestamp()  # a naive datetime is taken as local time


def _address(text: str) -> Address:
    try:
        return parse_address(text, "address")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _demo_nodes(text: str) -> int:
    value = _positive_int(text)
    if value > 26:  # nodes are named edge-a .. edge-z
        raise argparse.ArgumentTypeError(f"at most 26 demo nodes, got {value}")
    return value


def _letter_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a letter id (a number from the listing)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a letter id (a number from the listing)")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


# --- the parser -------------------------------------------------------------------------------------------


class _Version(argparse.Action):
    """``--version``: the version read only when asked for (it is the engine's; a client command never
    loads the engine)."""

    def __init__(
        self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None
    ) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from drsdtp import __version__

        print(f"drsdtp {__version__}")  # on stdout, as argparse's own version action prints it
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drsdtp",
        description="Edge-native digital-twin node: CRDT twins, field ingestion, peer replication.",
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    parser.add_argument(
        "--log-level", choices=_LEVELS, help="default: the config's log_level (run) or warning"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_option(p: argparse.ArgumentParser, help_text: str) -> None:
        p.add_argument(
            "--config",
            "-c",
            type=Path,
            metavar="PATH",
            help=f"{help_text} (default: $DRSDTP_CONFIG or {DEFAULT_CONFIG})",
        )

    p = sub.add_parser("run", help="run the node daemon")
    config_option(p, "config file")

    p = sub.add_parser("demo", help="run local replicating nodes fed by simulated plants")
    p.add_argument(
        "--twins",
        type=_positive_int,
        default=_DEMO.twins,
        help="simulated twins (default: %(default)s)",
    )
    p.add_argument("--rate", type=_positive_float, default=_DEMO.rate_hz, help="readings/s per twin")
    p.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--nodes", type=_demo_nodes, default=_DEMO.nodes, help="replicating nodes (1-26)")
    p.add_argument("--seed", type=int, default=_DEMO.seed, help="simulation seed")
    p.add_argument("--data-dir", type=Path, help="keep the demo's data here (default: a temporary directory)")
    p.add_argument("--api", type=_address, default=_DEMO.api, metavar="HOST:PORT", help="application API")
    p.add_argument("--metrics", type=_address, default=_DEMO.metrics, metavar="HOST:PORT", help="metrics")

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--api",
            type=_address,
            metavar="HOST:PORT",
            help=f"node API (default: from --config, or {DEFAULT_API})",
        )
        config_option(p, "take the API address and TLS settings from this config")
        p.add_argument("--timeout", type=_positive_float, default=5.0, metavar="SECONDS", help="per request")
        p.add_argument("--json", action="store_true", help="print JSON instead of tables")
        p.add_argument("--token", help="bearer token for the node's API (default: $DRSDTP_TOKEN)")
        return p

    client("status", "show a running node's health, peers and clock")
    p = client("twins", "list twins")
    p.add_argument("--model", help="only twins of this model")
    p.add_argument("--scope", help="only twins in this scope")
    p.add_argument("--prefix", help="only twin ids starting with this")
    p.add_argument(
        "--limit",
        type=_positive_int,
        default=_TWINS.limit,
        help="at most this many (default: %(default)s)",
    )
    p = client("get", "show a twin's fields")
    p.add_argument("twin_id", metavar="TWIN")
    p.add_argument("fields", nargs="*", metavar="FIELD", help="only these fields (default: all)")
    p = client("history", "show a field's history")
    p.add_argument("twin_id", metavar="TWIN")
    p.add_argument("field", metavar="FIELD")
    p.add_argument("--since", type=parse_time, metavar="TIME", help="now, 15m, 2h, 7d or ISO 8601")
    p.add_argument("--until", type=parse_time, metavar="TIME", help="as --since (default: now)")
    p.add_argument("--limit", type=_positive_int, default=_HISTORY_LIMIT, help="at most this many points")
    p = client("export", "export twins (latest state, optionally history)")
    p.add_argument("--output", "-o", default="-", metavar="PATH", help="file to write (default: stdout)")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--prefix", help="only twin ids starting with this")
    p.add_argument("--history", action="store_true", help="include raw history")

    p = client("insight", "twin intelligence: health, forecast, what-if, recommendations, model (JSON)")
    p.add_argument("twin_id", metavar="TWIN")
    p.add_argument(
        "kind",
        choices=("health", "forecast", "whatif", "recommendations", "model"),
        nargs="?",
        default="health",
    )
    p.add_argument(
        "--scenario",
        help='what-if: "fan off", "setpoint 18", "speed 2400" (an input), "tau_s x0.5" (a parameter)',
    )
    p.add_argument("--horizon-min", type=_positive_float, default=60.0, help="what-if horizon in minutes")

    intel_cli.add_parsers(client)

    def actor(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--actor", default=_default_actor(), help="who asks, for the audit trail (default: %(default)s)"
        )

    rules_cli.add_parsers(client, actor)

    p = client("snapshot", "take a checksummed snapshot of a twin, for rollback")
    p.add_argument("twin_id", metavar="TWIN")
    p.add_argument("--reason", "-m", required=True, help="why (recorded in the audit trail)")
    actor(p)
    p = client("snapshots", "list a twin's snapshots")
    p.add_argument("twin_id", metavar="TWIN")
    p = client("rollback", "bring a twin back to a snapshot (a safety snapshot is taken first)")
    p.add_argument("twin_id", metavar="TWIN")
    p.add_argument("snapshot_id", metavar="SNAPSHOT")
    p.add_argument("--reason", "-m", required=True, help="why (recorded in the audit trail)")
    actor(p)
    p = client("audit", "show the audit trail of snapshots and rollbacks, and verify its hash chain")
    p.add_argument("twin_id", nargs="?", metavar="TWIN", help="only this twin")
    p.add_argument("--since", type=parse_time, metavar="TIME", help="now, 15m, 2h, 7d or ISO 8601")
    p.add_argument("--until", type=parse_time, metavar="TIME", help="as --since")
    p.add_argument("--actor", help="only records by this actor")
    p.add_argument("--limit", type=_positive_int, default=100, help="the newest this many records")

    p = client("deadletters", "list the messages adapters could not decode; replay or purge them")
    p.add_argument("--adapter", help="only this adapter's letters")
    p.add_argument("--limit", type=_positive_int, default=100, help="the newest this many letters")
    actions = p.add_subparsers(dest="letters_action", metavar="ACTION")
    for name, help_text in (
        (
            "replay",
            "decode letters again with the node's current config and apply them (removed once applied)",
        ),
        ("purge", "delete letters"),
    ):
        a = actions.add_parser(name, help=help_text)
        a.add_argument("ids", nargs="*", type=_letter_id, metavar="ID", help="letter ids (see the listing)")
        a.add_argument("--all", action="store_true", help="every letter (of --adapter, when given)")
        # The listing's options are accepted here too; SUPPRESS keeps ones given before ACTION.
        a.add_argument("--adapter", default=argparse.SUPPRESS, help="only this adapter's letters")
        a.add_argument("--api", type=_address, default=argparse.SUPPRESS, metavar="HOST:PORT")
        a.add_argument("--config", "-c", type=Path, default=argparse.SUPPRESS, metavar="PATH")
        a.add_argument("--timeout", type=_positive_float, default=argparse.SUPPRESS, metavar="SECONDS")
        a.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    p = sub.add_parser(
        "reload", help="re-read the models of a running node (validated first; SIGHUP does the same)"
    )
    config_option(p, "the running node's config file (its data_dir holds the pid)")
    p = client("recover", "show what the write-ahead log's recovery found; --accept acknowledges it")
    p.add_argument("--accept", action="store_true", help="acknowledge it: the node becomes ready")
    p.add_argument("--reason", "-m", default="", help="why the loss is acceptable (required with --accept)")
    actor(p)
    cli_args.add_parsers(client)  # set, desire, tag, create, delete, watch
    command_cli.add_parsers(client, actor)  # command, commands (drsdtp.command_cli)

    p = sub.add_parser("check-config", help="validate a config file and print a summary")
    p.add_argument(
        "path", nargs="?", type=Path, metavar="PATH", help=f"default: $DRSDTP_CONFIG or {DEFAULT_CONFIG}"
    )
    p.add_argument("--no-env", action="store_true", help="ignore DRSDTP_* environment overrides")
    p.add_argument("--skip-files", action="store_true", help="do not check that TLS files are readable")

    p = sub.add_parser("token", help="make an API bearer token, or hash one, for [[api.tokens]]")
    token = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    q = token.add_parser("new", help="print a new random token and the [[api.tokens]] entry to paste")
    q.add_argument("name", help="the token's name (the identity the audit trail records: token:NAME)")
    q.add_argument("--role", choices=("viewer", "operator", "engineer", "admin"), default="viewer")
    q.add_argument(
        "--scope", action="append", default=[], metavar="GLOB", help="twin ids or 'prefix*' (repeat)"
    )
    token.add_parser("hash", help="read a token on standard input, print its hash")
    kubeedge_cli.add_parser(sub, f"config file (default: $DRSDTP_CONFIG or {DEFAULT_CONFIG})")
    return parser


# --- entry point ------------------------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None, *, commands: Commands | None = None, console: Console | None = None
) -> int:
    args = build_parser().parse_args(cli_args.rewrite_tag_args(sys.argv[1:] if argv is None else argv))
    console = console or Console(json_mode=getattr(args, "json", False))
    commands = commands or load_commands()
    handler = _HANDLERS[args.command]
    try:
        return handler(args, commands, console)
    except ConfigError as exc:
        console.error(str(exc))
        return EXIT_USAGE
    except DrsdtpError as exc:
        console.error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        console.message("interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`drsdtp watch | head`): stop quietly, and keep the interpreter's final
        # flush of stdout from failing again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def _config_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("DRSDTP_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def _client_level(args: argparse.Namespace) -> str:
    level: str = args.log_level or os.environ.get("DRSDTP_LOG_LEVEL", "").lower() or "warning"
    return level if level in _LEVELS else "warning"


def _cmd_run(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    config = load_config(_config_path(args.config))
    setup_logging(args.log_level or config.log_level)
    problems = check_files(config) + check_exposure(config)
    for problem in problems:
        console.error(str(problem))
    if problems:
        return EXIT_USAGE
    path = _config_path(args.config)
    reloads = Reloads(load=lambda: load_config(path))
    return _serve(lambda stop: commands.run(config, stop, console, reloads), console, reloads.requested)


def _cmd_demo(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    setup_logging(args.log_level or os.environ.get("DRSDTP_LOG_LEVEL", "").lower() or "info")
    options = DemoOptions(
        twins=args.twins,
        rate_hz=args.rate,
        duration_s=args.duration,
        nodes=args.nodes,
        seed=args.seed,
        data_dir=args.data_dir,
        api=args.api,
        metrics=args.metrics,
    )
    return _serve(lambda stop: commands.demo(options, stop, console), console)


def _serve(
    start: Callable[[asyncio.Event], Coroutine[Any, Any, int]],
    console: Console,
    hangup: asyncio.Event | None = None,
) -> int:
    """Run a long-lived command: SIGTERM/SIGINT set its stop event, SIGHUP sets ``hangup`` (reload)."""

    async def serve() -> int:
        stop = asyncio.Event()
        with capture_signals(stop), _on_hangup(hangup):
            return await start(stop)

    try:
        return asyncio.run(serve())
    except asyncio.CancelledError:
        console.error("shutdown forced by a second signal")
        return EXIT_FAILURE
    except ExceptionGroup as group:
        for exc in _leaves(group):
            log.error("%s: %s", type(exc).__name__, exc, exc_info=exc)
        console.error("; ".join(str(exc) for exc in _leaves(group)))
        return EXIT_FAILURE


@contextlib.contextmanager
def _on_hangup(event: asyncio.Event | None) -> Iterator[None]:
    """SIGHUP sets ``event`` (a reload request) while the block runs."""
    if event is None:
        yield
        return
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, event.set)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


def _target(args: argparse.Namespace) -> ApiTarget:
    """The address from --api, else the config's listen.api; TLS and the node id from the config if any."""
    if args.config is None and not os.environ.get("DRSDTP_CONFIG"):
        return ApiTarget(args.api or DEFAULT_API, timeout_s=args.timeout, token=args.token)
    config = load_config(_config_path(args.config))
    address = config.listen.api
    # A wildcard listen address is reachable locally through loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)
    return ApiTarget(
        args.api or Address(host, address.port),
        tls=config.tls,
        timeout_s=args.timeout,
        server_name=config.node_id,
        token=args.token,
    )


def _run_client(args: argparse.Namespace, request: Callable[[ApiTarget], Coroutine[Any, Any, int]]) -> int:
    setup_logging(_client_level(args))
    return asyncio.run(request(_target(args)))


def _cmd_status(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    return _run_client(args, lambda target: commands.status(target, console))


def _cmd_twins(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    query = TwinsQuery(model=args.model, scope=args.scope, prefix=args.prefix, limit=args.limit)
    return _run_client(args, lambda target: commands.twins(target, query, console))


def _cmd_get(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    query = GetQuery(twin_id=args.twin_id, fields=tuple(args.fields))
    return _run_client(args, lambda target: commands.get(target, query, console))


def _cmd_history(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    if args.since is not None and args.until is not None and args.since > args.until:
        console.error("--since is after --until")
        return EXIT_USAGE
    query = HistoryQuery(
        twin_id=args.twin_id, field=args.field, since=args.since, until=args.until, limit=args.limit
    )
    return _run_client(args, lambda target: commands.history(target, query, console))


def _cmd_insight(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    if args.kind == "whatif" and not args.scenario:
        console.error("whatif needs --scenario")
        return EXIT_USAGE
    query = InsightQuery(args.twin_id, args.kind, args.scenario, args.horizon_min)
    return _run_client(args, lambda target: commands.insight(target, query, console))


def _cmd_anomalies(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    return _run_client(args, lambda target: intel_cli.run_anomalies(target, args, console))


def _cmd_alarms(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    return _run_client(args, lambda target: rules_cli.run_alarms(target, args, console))


def _cmd_ack(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    return _run_client(args, lambda target: rules_cli.run_ack(target, args, console))


def _cmd_rules(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    return _run_client(args, lambda target: rules_cli.run_rules(target, args, console))


def _cmd_relate(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    return _run_client(args, lambda target: intel_cli.run_relate(target, args, console))


def _cmd_query(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    return _run_client(args, lambda target: intel_cli.run_query(target, args, console))


def _cmd_export(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    output = None if args.output == "-" else Path(args.output)
    request = ExportRequest(output=output, format=args.format, prefix=args.prefix, history=args.history)
    return _run_client(args, lambda target: commands.export(target, request, console))


def _default_actor() -> str:
    # getpass.getuser()'s look-up, without getpass: it imports termios (0.2 MiB), and every process parses
    # this default, the node's too (issue 13: idle RSS).
    names = (os.environ.get(k) for k in ("LOGNAME", "USER", "LNAME", "USERNAME"))
    user = next((n for n in names if n), None)
    if user is None:
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:  # no passwd entry (containers)
            user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _cmd_snapshot(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    request = SnapshotRequest(args.twin_id, args.reason, args.actor)
    return _run_client(args, lambda target: commands.snapshot(target, request, console))


def _cmd_snapshots(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    return _run_client(args, lambda target: commands.snapshots(target, args.twin_id, console))


def _cmd_rollback(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    request = RollbackRequest(args.twin_id, args.snapshot_id, args.reason, args.actor)
    return _run_client(args, lambda target: commands.rollback(target, request, console))


def _cmd_audit(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    if args.since is not None and args.until is not None and args.since > args.until:
        console.error("--since is after --until")
        return EXIT_USAGE
    query = AuditQuery(args.twin_id, args.since, args.until, args.actor, args.limit)
    return _run_client(args, lambda target: commands.audit(target, query, console))


def _cmd_deadletters(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    action = args.letters_action
    if action is None:
        query = DeadLettersQuery(args.adapter, args.limit)
        return _run_client(args, lambda target: commands.deadletters(target, query, console))
    if bool(args.ids) == args.all:
        console.error(f"deadletters {action}: name letter ids or --all, not both")
        return EXIT_USAGE
    selection = DeadLetterSelection(tuple(args.ids), args.all, args.adapter)
    if action == "replay":
        return _run_client(args, lambda target: commands.replay_deadletters(target, selection, console))
    return _run_client(args, lambda target: commands.purge_deadletters(target, selection, console))


def _cmd_recover(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    if args.accept and not args.reason.strip():
        console.error("recover --accept needs --reason (it goes to the audit trail)")
        return EXIT_USAGE
    request = RecoverRequest(args.accept, args.reason, args.actor)
    return _run_client(args, lambda target: commands.recover(target, request, console))


def _cmd_app(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    """set, desire, tag, create, delete, watch: on the SDK (imported only for them)."""
    from drsdtp.cli_client.write_commands import HANDLERS

    handler = HANDLERS[args.command]
    return _run_client(args, lambda target: handler(args, target, console))


def _cmd_command_cli(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    return command_cli.HANDLERS[args.command](args, _run_client, console)


def _cmd_check_config(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    setup_logging(_client_level(args))
    path = _config_path(args.path)
    config, overrides = load_config_with_overrides(path, {} if args.no_env else None)
    problems = [] if args.skip_files else check_files(config)
    problems.extend(check_exposure(config))
    problems.extend(commands.check_plugins(config))
    problems.extend(rules_cli.check_config(config))
    problems.extend(command_cli.check_config(config))
    for problem in problems:
        console.error(str(problem))
    if problems:
        return EXIT_USAGE
    console.line(f"{path}: valid")
    console.line()
    console.fields(_summary(config))
    if overrides:
        console.line()
        console.table(("key", "set by"), sorted(overrides.items()), title="Environment overrides")
    if config.peers:
        console.line()
        console.table(("peer", "address"), [(p.name, str(p.address)) for p in config.peers], title="Peers")
    for title, tables in (("Adapters", config.adapters), ("Kernels", config.kernels)):
        if tables:
            console.line()
            plugins = [(f"{title.lower()}[{i}]", t["type"], len(t) - 1) for i, t in enumerate(tables)]
            console.table(("key", "type", "other keys"), plugins, title=title)
    _print_models(config, console)
    if config.twins:
        console.line()
        rules = [(r.match, r.model, r.scope or config.scopes[0]) for r in config.twins]
        console.table(("match", "model", "scope"), rules, title="Twin rules")
    if config.rules:
        console.line()
        header = ("rule", "twins", "when", "for", "alarm", "actions")
        console.table(header, rules_cli.rules_table(config), title="Rules")
    return EXIT_OK


def _cmd_token(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    from drsdtp.api.auth.tokens import hash_token, new_token  # only here: the CLI stays light

    if args.token_command == "hash":
        text = sys.stdin.readline().strip()
        if not text:
            console.error("token hash: no token on standard input")
            return EXIT_USAGE
        console.line(hash_token(text))
        return EXIT_OK
    from drsdtp.config import scope_problem

    for glob in args.scope:
        problem = scope_problem(glob)
        if problem:
            console.error(f"--scope: {problem}")
            return EXIT_USAGE
    secret = new_token()
    scopes = ", ".join(f'"{g}"' for g in args.scope or ["*"])
    console.line(f"token (give it to the client; the node keeps only its hash): {secret}")
    console.line()
    console.line("[[api.tokens]]")
    console.line(f'name = "{args.name}"')
    console.line(f'role = "{args.role}"')
    console.line(f'hash = "{hash_token(secret)}"')
    console.line(f"scopes = [{scopes}]")
    return EXIT_OK


def _print_models(config: NodeConfig, console: Console) -> None:
    from drsdtp.kernels import default_registry  # numpy and the kernels: only when checking a config
    from drsdtp.models import ModelCatalog

    catalog = ModelCatalog.from_config(config, default_registry())
    rows = [
        (m.name, m.version, m.fingerprint, m.spec.kernel or "-", len(m.spec.fields), m.source)
        for m in catalog
    ]
    console.line()
    header = ("model", "version", "fingerprint", "kernel", "fields", "declared in")
    console.table(header, rows, title="Models")
    for note in catalog.notes:
        console.line(f"note: {note}")


def _cmd_reload(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    """Validate the config as the daemon will, then SIGHUP the daemon whose pid its data_dir holds."""
    setup_logging(_client_level(args))
    path = _config_path(args.config)
    config = load_config(path)
    problems = list(commands.check_plugins(config))
    for problem in problems:
        console.error(f"{problem} (not sent: the running node keeps its models)")
    if problems:
        return EXIT_USAGE
    pid_file = config.data_dir / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        console.error(f"no running node found through {pid_file}: {exc}")
        return EXIT_FAILURE
    console.line(
        f"reload requested from node {config.node_id} (pid {pid}); it logs the outcome, and "
        "`drsdtp insight TWIN model` shows the model version in use"
    )
    return EXIT_OK


def _summary(config: NodeConfig) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        ("node_id", config.node_id),
        ("data_dir", str(config.data_dir)),
        ("scopes", ", ".join(config.scopes)),
        ("log_level", config.log_level),
        ("shutdown_timeout_s", config.shutdown_timeout_s),
        ("listen.peer", str(config.listen.peer)),
        ("listen.api", str(config.listen.api)),
        ("listen.metrics", str(config.listen.metrics)),
        ("clock.max_offset_ms", config.clock.max_offset_ms),
        ("clock.ntp_server", config.clock.ntp_server or "off (offset reported unknown)"),
        (
            "tls",
            "off" if config.tls is None else f"on (peers: mutual; API: {config.tls.api})",
        ),
        ("peers", len(config.peers)),
    ]
    for section in ("limits", "wal", "history"):
        for f in dataclasses.fields(getattr(config, section)):
            value = getattr(getattr(config, section), f.name)
            if isinstance(value, tuple):
                value = ", ".join(f"{t.interval_s}s for {t.retention_s}s" for t in value) or "none"
            rows.append((f"{section}.{f.name}", value))
    rows += [
        ("adapters", len(config.adapters)),
        ("models", len(config.models)),
        ("models_dir", str(config.models_dir) if config.models_dir else "none"),
        ("kernels", len(config.kernels)),
        ("intelligence.time_scale", config.intelligence.time_scale),
        ("twin rules", len(config.twins)),
    ]
    return rows


def _cmd_kubeedge(args: argparse.Namespace, commands: Commands, console: Console) -> int:
    return kubeedge_cli.run(args, _config_path(args.config), console)


_HANDLERS: Final[dict[str, Callable[[argparse.Namespace, Commands, Console], int]]] = {
    "kubeedge": _cmd_kubeedge,
    "run": _cmd_run,
    "demo": _cmd_demo,
    "status": _cmd_status,
    "insight": _cmd_insight,
    "anomalies": _cmd_anomalies,
    "alarms": _cmd_alarms,
    "ack": _cmd_ack,
    "rules": _cmd_rules,
    "relate": _cmd_relate,
    "query": _cmd_query,
    "twins": _cmd_twins,
    "get": _cmd_get,
    "history": _cmd_history,
    "export": _cmd_export,
    "snapshot": _cmd_snapshot,
    "snapshots": _cmd_snapshots,
    "rollback": _cmd_rollback,
    "audit": _cmd_audit,
    "deadletters": _cmd_deadletters,
    "recover": _cmd_recover,
    "check-config": _cmd_check_config,
    **dict.fromkeys(("set", "desire", "tag", "create", "delete", "watch"), _cmd_app),
    "token": _cmd_token,
    "reload": _cmd_reload,
    "command": _cmd_command_cli,
    "commands": _cmd_command_cli,
}
