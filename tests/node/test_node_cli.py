"""CLI: check-config end to end (subprocess), argument mapping onto the Commands protocol, tables, times."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drsdtp import __version__
from drsdtp.cli import main, parse_time, setup_logging
from drsdtp.config import Address, NodeConfig
from drsdtp.console import Console, Progress, render_table
from drsdtp.errors import ConfigError, StorageError
from drsdtp.node_commands import (
    ApiTarget,
    AuditQuery,
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
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "drsdtp.example.toml"


def drsdtp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRSDTP_")}
    return subprocess.run(
        [sys.executable, "-m", "drsdtp", *args],
        cwd=REPO,
        env={**clean, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- end to end -------------------------------------------------------------------------------------------


def test_help_lists_every_subcommand() -> None:
    result = drsdtp("--help")
    assert result.returncode == 0
    commands = ("run", "demo", "status", "twins", "get", "history", "export", "check-config")
    for command in (*commands, "snapshot", "snapshots", "rollback", "audit", "insight"):
        assert command in result.stdout


def test_version() -> None:
    result = drsdtp("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"drsdtp {__version__}")


def test_check_config_prints_a_summary_of_the_example() -> None:
    result = drsdtp("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{EXAMPLE}: valid"
    assert any(line.split() == ["node_id", "edge-01"] for line in lines)
    assert any(line.split() == ["listen.metrics", "0.0.0.0:9464"] for line in lines)
    assert any(line.split() == ["edge-03", "[fd00::13]:7400"] for line in lines)
    assert any(line.split()[:2] == ["adapters[0]", "mqtt"] for line in lines)
    # Columns line up: every row of the summary table starts its value at the same offset.
    header = next(line for line in lines if line.startswith("SETTING"))
    offset = header.index("VALUE")
    body = lines[lines.index(header) + 1 : lines.index(header) + 5]
    assert all(row[offset - 2 : offset] == "  " and row[offset] != " " for row in body)


def test_check_config_reports_the_key_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('node_id = "a"\ndata_dir = "/d"\n[wal]\nfsync_bytes = "1MB"\n')
    result = drsdtp("check-config", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: wal.fsync_bytes: expected an integer, got a string ('1MB')"
    assert result.stdout == ""


def test_check_config_applies_env_overrides_unless_told_not_to() -> None:
    result = drsdtp("check-config", str(EXAMPLE), env={"DRSDTP_WAL__FSYNC_BYTES": "lots"})
    assert result.returncode == 2
    assert "DRSDTP_WAL__FSYNC_BYTES" in result.stderr
    result = drsdtp("check-config", "--no-env", str(EXAMPLE), env={"DRSDTP_WAL__FSYNC_BYTES": "lots"})
    assert result.returncode == 0, result.stderr
    result = drsdtp("check-config", str(EXAMPLE), env={"DRSDTP_NODE_ID": "edge-99"})
    assert result.returncode == 0, result.stderr
    assert any(line.split() == ["node_id", "DRSDTP_NODE_ID"] for line in result.stdout.splitlines())


def test_check_config_finds_the_file_through_drsdtp_config() -> None:
    result = drsdtp("check-config", env={"DRSDTP_CONFIG": str(EXAMPLE)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{EXAMPLE}: valid")


def test_check_config_checks_tls_files(tmp_path: Path) -> None:
    config = tmp_path / "tls.toml"
    config.write_text('node_id = "a"\ndata_dir = "d"\n[tls]\nca = "ca"\ncert = "c"\nkey = "k"\n')
    result = drsdtp("check-config", str(config))
    assert result.returncode == 2
    assert f"error: tls.ca: cannot read {tmp_path / 'ca'}" in result.stderr
    assert drsdtp("check-config", "--skip-files", str(config)).returncode == 0


def test_client_commands_report_an_unreachable_node_clearly(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        for args in (["status"], ["twins"], ["get", "pump-1"]):
            result = drsdtp(*args, "--api", f"127.0.0.1:{port}", "--timeout", "2")
            assert result.returncode == 1, args
            assert f"on 127.0.0.1:{port}: UNAVAILABLE" in result.stderr


def test_usage_errors_exit_2() -> None:
    result = drsdtp("twins", "--limit", "0")
    assert result.returncode == 2
    assert "must be at least 1" in result.stderr
    assert drsdtp().returncode == 2  # no subcommand


# --- argument mapping (in process, with a recording Commands) ---------------------------------------------


class Recording:
    """A Commands implementation that records what the CLI passed in."""

    def __init__(self, result: int = 0, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, object, object]] = []
        self.result = result
        self.fail = fail

    async def _record(self, name: str, first: object, second: object = None) -> int:
        self.calls.append((name, first, second))
        if self.fail is not None:
            raise self.fail
        return self.result

    async def run(
        self, config: NodeConfig, stop: asyncio.Event, console: Console, reloads: Reloads | None = None
    ) -> int:
        assert not stop.is_set()
        assert reloads is not None and reloads.load() == config  # SIGHUP re-reads the same file
        return await self._record("run", config)

    async def demo(self, options: DemoOptions, stop: asyncio.Event, console: Console) -> int:
        return await self._record("demo", options)

    async def status(self, target: ApiTarget, console: Console) -> int:
        return await self._record("status", target)

    async def twins(self, target: ApiTarget, query: TwinsQuery, console: Console) -> int:
        return await self._record("twins", target, query)

    async def get(self, target: ApiTarget, query: GetQuery, console: Console) -> int:
        return await self._record("get", target, query)

    async def history(self, target: ApiTarget, query: HistoryQuery, console: Console) -> int:
        return await self._record("history", target, query)

    async def export(self, target: ApiTarget, request: ExportRequest, console: Console) -> int:
        return await self._record("export", target, request)

    async def insight(self, target: ApiTarget, query: InsightQuery, console: Console) -> int:
        return await self._record("insight", target, query)

    async def snapshot(self, target: ApiTarget, request: SnapshotRequest, console: Console) -> int:
        return await self._record("snapshot", target, request)

    async def snapshots(self, target: ApiTarget, twin_id: str, console: Console) -> int:
        return await self._record("snapshots", target, twin_id)

    async def rollback(self, target: ApiTarget, request: RollbackRequest, console: Console) -> int:
        return await self._record("rollback", target, request)

    async def audit(self, target: ApiTarget, query: AuditQuery, console: Console) -> int:
        return await self._record("audit", target, query)

    async def deadletters(self, target: ApiTarget, query: DeadLettersQuery, console: Console) -> int:
        return await self._record("deadletters", target, query)

    async def replay_deadletters(
        self, target: ApiTarget, selection: DeadLetterSelection, console: Console
    ) -> int:
        return await self._record("replay_deadletters", target, selection)

    async def purge_deadletters(
        self, target: ApiTarget, selection: DeadLetterSelection, console: Console
    ) -> int:
        return await self._record("purge_deadletters", target, selection)

    async def recover(self, target: ApiTarget, request: RecoverRequest, console: Console) -> int:
        return await self._record("recover", target, request)

    def check_plugins(self, config: NodeConfig) -> Sequence[ConfigError]:
        return [ConfigError("adapters[0].topic", "required key is missing")] if self.fail else []


def call(argv: list[str], commands: Recording) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, commands=commands, console=Console(out, err))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DRSDTP_* variables from the caller; the root logger as main() found it."""
    for name in list(os.environ):
        if name.startswith("DRSDTP_"):
            monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_setup_logging_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    setup_logging("debug")
    setup_logging("warning")
    assert len(root.handlers) == before + 1
    assert root.level == logging.WARNING


def test_run_gets_the_validated_config() -> None:
    commands = Recording(result=0)
    assert call(["run", "--config", str(EXAMPLE)], commands)[0] == 0
    ((name, config, _),) = commands.calls
    assert name == "run"
    assert isinstance(config, NodeConfig)
    assert config.node_id == "edge-01"


def test_run_refuses_unreadable_tls_files_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('node_id = "a"\ndata_dir = "d"\n[tls]\nca = "ca"\ncert = "c"\nkey = "k"\n')
    commands = Recording()
    code, _, err = call(["run", "-c", str(path)], commands)
    assert code == 2
    assert "tls.ca" in err
    assert commands.calls == []


def test_a_drsdtp_error_from_a_command_is_reported_with_status_1() -> None:
    code, _, err = call(["status"], Recording(fail=StorageError("node unreachable")))
    assert (code, err) == (1, "error: node unreachable\n")


def test_a_service_failure_during_run_is_status_1() -> None:
    commands = Recording(fail=ExceptionGroup("drsdtp services failed", [OSError("address in use")]))
    code, _, err = call(["run", "-c", str(EXAMPLE)], commands)
    assert code == 1
    assert "address in use" in err


def test_client_commands_map_their_arguments() -> None:
    commands = Recording()
    call(["twins", "--api", "[::1]:9000", "--model", "pump", "--scope", "line-3", "--limit", "5"], commands)
    call(["get", "pump-1", "flow", "temp", "--timeout", "2"], commands)
    call(
        ["history", "pump-1", "flow", "--since", "2025-01-01T00:00:00Z", "--until", "now", "--limit", "10"],
        commands,
    )
    call(["export", "-o", "twins.csv", "--format", "csv", "--prefix", "pump-", "--history"], commands)
    call(["status"], commands)
    twins, get, history, export, status = commands.calls
    assert twins == ("twins", ApiTarget(Address("::1", 9000)), TwinsQuery("pump", "line-3", None, 5))
    assert get == (
        "get",
        ApiTarget(Address("127.0.0.1", 7401), timeout_s=2.0),
        GetQuery("pump-1", ("flow", "temp")),
    )
    query = history[2]
    assert isinstance(query, HistoryQuery)
    assert query.since == datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    assert query.until is not None
    assert query.until > query.since
    assert export[2] == ExportRequest(Path("twins.csv"), "csv", "pump-", True)
    assert status[1] == ApiTarget(Address("127.0.0.1", 7401))


def test_snapshot_rollback_and_audit_map_their_arguments() -> None:
    commands = Recording()
    call(["snapshot", "pump-1", "-m", "before firmware 2.1", "--actor", "alice"], commands)
    call(["snapshots", "pump-1"], commands)
    call(
        ["rollback", "pump-1", "1700000000000-0a1b2c3d", "--reason", "bad firmware", "--actor", "bob"],
        commands,
    )
    call(["audit", "pump-1", "--since", "2025-01-01T00:00:00Z", "--actor", "bob", "--limit", "7"], commands)
    call(["snapshot", "pump-2", "-m", "x"], commands)
    snap, listing, rollback, audit, default_actor = commands.calls
    assert snap[2] == SnapshotRequest("pump-1", "before firmware 2.1", "alice")
    assert listing[2] == "pump-1"
    assert rollback[2] == RollbackRequest("pump-1", "1700000000000-0a1b2c3d", "bad firmware", "bob")
    assert audit[2] == AuditQuery("pump-1", datetime(2025, 1, 1, tzinfo=UTC).timestamp(), None, "bob", 7)
    # Without --actor: the local user at this host.
    assert isinstance(default_actor[2], SnapshotRequest)
    assert default_actor[2].actor.endswith(f"@{socket.gethostname()}")


def test_snapshot_and_rollback_require_a_reason() -> None:
    commands = Recording()
    for argv in (["snapshot", "pump-1"], ["rollback", "pump-1", "1700000000000-0a1b2c3d"]):
        with pytest.raises(SystemExit) as exit_:
            call(argv, commands)
        assert exit_.value.code == 2
    assert commands.calls == []


def test_recover_shows_and_accepts_with_a_reason() -> None:
    commands = Recording()
    call(["recover", "--json"], commands)
    call(["recover", "--accept", "-m", "restored from peers", "--actor", "ops"], commands)
    shown, accepted = commands.calls
    assert isinstance(shown[2], RecoverRequest) and not shown[2].accept and not shown[2].reason
    assert accepted[2] == RecoverRequest(True, "restored from peers", "ops")
    # An acknowledgement goes to the audit trail: it needs a reason.
    code, _, err = call(["recover", "--accept"], commands)
    assert code == 2 and "--reason" in err
    assert len(commands.calls) == 2


def test_client_target_comes_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('node_id = "a"\ndata_dir = "d"\n[listen]\napi = "0.0.0.0:7555"\n')
    commands = Recording()
    call(["status", "--config", str(path)], commands)
    # A wildcard listen address is reached through loopback; a TLS API must present the node id.
    assert commands.calls[0][1] == ApiTarget(Address("127.0.0.1", 7555), server_name="a")
    # --api moves the address only: TLS settings and the node id still come from the config.
    path.write_text(
        path.read_text() + '[tls]\nca = "ca.crt"\ncert = "n.crt"\nkey = "n.key"\napi = "mutual"\n'
    )
    call(["status", "--config", str(path), "--api", "10.0.0.5:7401"], commands)
    target = commands.calls[1][1]
    assert isinstance(target, ApiTarget)
    assert target.address == Address("10.0.0.5", 7401) and target.server_name == "a"
    assert target.tls is not None and target.tls.api == "mutual"


def test_history_rejects_since_after_until() -> None:
    commands = Recording()
    code, _, err = call(["history", "t", "f", "--since", "now", "--until", "1h"], commands)
    assert code == 2
    assert "--since is after --until" in err
    assert commands.calls == []


def test_demo_options() -> None:
    commands = Recording()
    call(
        ["demo", "--twins", "3", "--rate", "0.5", "--duration", "9", "--nodes", "2", "--api", "127.0.0.1:0"],
        commands,
    )
    options = commands.calls[0][1]
    assert options == DemoOptions(twins=3, rate_hz=0.5, duration_s=9.0, nodes=2, api=Address("127.0.0.1", 0))
    with pytest.raises(SystemExit) as refused:  # nodes are named edge-a .. edge-z
        call(["demo", "--nodes", "27"], commands)
    assert refused.value.code == 2 and len(commands.calls) == 1


def test_check_config_includes_plugin_errors_from_the_commands() -> None:
    code, _, err = call(["check-config", str(EXAMPLE)], Recording(fail=RuntimeError("x")))
    assert code == 2
    assert "error: adapters[0].topic: required key is missing" in err


# --- helpers ----------------------------------------------------------------------------------------------


def test_parse_time() -> None:
    now = 1_700_000_000.0
    assert parse_time("now", now=now) == now
    assert parse_time("90s", now=now) == now - 90
    assert parse_time("-15m", now=now) == now - 900
    assert parse_time("2h", now=now) == now - 7200
    assert parse_time("1.5d", now=now) == now - 129_600
    assert parse_time("2024-05-01T12:00:00+02:00") == datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp()
    with pytest.raises(Exception, match="not a time"):
        parse_time("yesterday")


def test_render_table_aligns_columns() -> None:
    table = render_table(
        ("twin", "value", "ok", "note"), [("pump-1", 3.5, True, None), ("p", 12, False, "x")]
    )
    assert table.splitlines() == [
        "TWIN    VALUE  OK   NOTE",
        "pump-1    3.5  yes  -",
        "p          12  no   x",
    ]


def test_render_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="2 cells"):
        render_table(("a", "b", "c"), [(1, 2)])


def test_progress_on_a_pipe_prints_only_the_final_line() -> None:
    stream = io.StringIO()
    with Progress(stream, "exporting", total=4) as progress:
        for _ in range(4):
            progress.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("exporting: 4/4 (100%), done in ")


def test_progress_reports_interruption() -> None:
    stream = io.StringIO()
    try:
        with Progress(stream, "export", total=None) as progress:
            progress.advance(7)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert stream.getvalue().startswith("export: 7, interrupted in ")


def test_deadletters_parses_listing_replay_and_purge() -> None:
    commands = Recording()
    assert call(["deadletters", "--adapter", "site", "--limit", "5"], commands)[0] == 0
    assert call(["deadletters", "replay", "7", "9", "--json"], commands)[0] == 0
    assert call(["deadletters", "--adapter", "site", "purge", "--all"], commands)[0] == 0
    (_, _, listing), (_, _, replay), (_, _, purge) = commands.calls
    assert listing == DeadLettersQuery("site", 5)
    assert replay == DeadLetterSelection((7, 9), False, None)
    assert purge == DeadLetterSelection((), True, "site")
    code, _, err = call(["deadletters", "replay"], commands)
    assert code == 2 and "ids or --all" in err
    code, _, err = call(["deadletters", "purge", "3", "--all"], commands)
    assert code == 2 and "not both" in err
    assert len(commands.calls) == 3
