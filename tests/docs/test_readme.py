"""The README is a contract: every line of its ```` ```sh ```` blocks runs here, as written.

Commands run from the checkout with ``.venv/bin`` first on the PATH (what ``. .venv/bin/activate`` does) and
no PYTHONPATH, so they use the package ``make setup`` installed. The README's ``drsdtp run --config
/etc/drsdtp/drsdtp.toml`` starts a real node on this test's config (the one substitution of a path); client
commands reach it through ``$DRSDTP_CONFIG``, and the placeholders TWIN, FIELD, SNAPSHOT and COMMAND stand
for one of its twins, a field, that twin's newest snapshot and the newest command, ``$TOKEN`` for a token;
a ``[bracketed]`` part of a synopsis is optional and left out. Benchmarks run with the
tiny sizes in ``TINY``; ``make demo`` runs until its nodes converge, then gets a Ctrl-C; ``make bench`` is
checked with ``make -n``, the benches its harness lists must be README benches (so they run tiny here), and
the harness itself runs tiny on one bench (the Rust peers compile the peer crates, minutes: not run);
``make test`` is CI itself; other make targets are checked with ``make -n`` (each has its own test).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.readme_commands import Command, bench_scripts, sh_commands
from tests.ingest.support import free_port, terminate

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
VENV_BIN = REPO / ".venv" / "bin"
DOC_CONFIG = "/etc/drsdtp/drsdtp.toml"
TWIN, FIELD = "room-1", "temp_1"
TIMEOUT_S = 180

# The smallest sizes each benchmark takes: enough to run every code path once.
TINY: dict[str, list[str]] = {
    "bench_core.py": [],  # fixed sizes, a few seconds
    "bench_node.py": ["--log-gb", "0.002", "--twins", "2000"],
    "bench_replication.py": ["--quick"],
    "bench_ingest_mqtt.py": ["--quick"],
    "bench_ingest_opcua.py": ["--seconds", "1", "--reps", "1"],
    "bench_ingest_modbus.py": ["--seconds", "1", "--reps", "1"],
    "bench_intelligence.py": ["--fields", "100", "--window", "100", "--reps", "1"],
    "validate_intelligence.py": [
        "--rooms-per-kind",
        "1",
        "--clean-rooms",
        "1",
        "--model-drift-rooms",
        "1",
        # 300 + 120 plant samples instead of 1800 + 360: every fault kind and the plant change still get
        # named and forecasts scored (tests/intelligence/test_intel_validation.py holds the accuracy floors).
        "--warmup",
        "300",
        "--observe",
        "120",
        "--verdict-units",
        "1",
        "--verdict-warmup",
        "100",
        "--verdict-observe",
        "60",
    ],
    "validate_anomaly.py": ["--per-character", "1", "--no-engine", "--no-splits"],
    "validate_forecast.py": ["--per-character", "1", "--origins", "3"],
    "bench_history.py": ["--seconds", "60"],
    "bench_api_write.py": ["--quick"],
    "bench_sdk.py": ["--quick"],
    "bench_memory.py": ["--keys", "100", "--streams", "2"],
    "bench_dashboard.py": ["--twins", "50", "--reps", "1", "--stream-s", "2", "--pairs", "1"],
    "bench_rules.py": ["--quick"],
    "bench_firmware.py": ["--quick"],
    "bench_postgres.py": [
        "--outage-readings=2000",
        "--steady-readings=2000",
        "--outage-s=2",
        "--outage-rate=2000",
    ],
    "bench_sparkplug.py": ["--metrics", "10", "--messages", "200"],
    "bench_commands.py": ["--commands", "5", "--rate-commands", "32"],
}

COMMANDS = sh_commands(README)
OPTIONAL = re.compile(r" \[(?:--?[a-z]|[A-Z])[^\]]*\]")
# Lines whose documented outcome, run after the lines above them, is a refusal: exit status 1, this message.
REFUSALS = {
    # "honoured unless it already finished": the lines above applied the newest command
    r"^drsdtp command --cancel COMMAND": "is already applied",
}
MAKE_RUN_HERE = {"make demo", "make test", "make bench"}


def kind(command: Command) -> str:
    text = command.command
    if text.startswith("make "):
        return f"make {text.split()[1]}"
    if "benches/" in text:
        return "bench"
    if re.match(r"drsdtp run\b", text):
        return "run"
    return "cli"


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("DRSDTP_")}
    return {
        **base,
        "PATH": f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}",
        "VIRTUAL_ENV": str(VENV_BIN.parent),
    }


def run(command: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=REPO,
        env={**env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def check(result: subprocess.CompletedProcess[str], what: str) -> None:
    output = f"$ {what}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    assert result.returncode == 0, output
    assert "Traceback" not in result.stderr, output


def test_the_readme_has_commands_of_every_kind() -> None:
    kinds = {kind(c) for c in COMMANDS}
    assert {"make demo", "make test", "make bench", "bench", "run", "cli"} <= kinds, kinds
    assert any(c.command == "drsdtp check-config deploy/drsdtp.example.toml" for c in COMMANDS)
    assert len([c for c in COMMANDS if kind(c) == "run"]) == 1, "one README line starts the node"


def test_every_referenced_bench_has_a_tiny_size() -> None:
    named = {name for c in COMMANDS for name in bench_scripts(c)}
    assert "bench_ingest_opcua.py" in named  # from the comment's bench_ingest_{opcua,modbus}.py
    assert named <= set(TINY), f"give these a tiny size in TINY: {sorted(named - set(TINY))}"
    for name in named:
        assert (REPO / "benches" / name).is_file(), name


@functools.cache
def readme_token() -> str:
    made = run("drsdtp token new readme --role viewer")
    check(made, "drsdtp token new")
    token = re.search(r"drsdtp_\S+", made.stdout)
    assert token, made.stdout
    return token[0]


# --- the node the README's `drsdtp run` line starts ------------------------------------------------------


class ReadmeNode:
    def __init__(self, root: Path) -> None:
        self.config = root / "drsdtp.toml"
        self.metrics = free_port()
        self.http = free_port()  # the HTTP/JSON face the README's curl lines reach as localhost:7402
        self.config.write_text(
            f'node_id = "readme"\ndata_dir = "{root / "data"}"\n'
            f'[listen]\napi = "127.0.0.1:{free_port()}"\nmetrics = "127.0.0.1:{self.metrics}"\n'
            f'peer = "127.0.0.1:{free_port()}"\n'
            '[[twins]]\nmatch = "room-*"\nmodel = "room"\n'
            '[[adapters]]\ntype = "simulated"\nname = "plant"\nrooms = 2\nseed = 1\ndt_s = 10.0\n'
            "speedup = 50.0\n"
            f'[api.http]\nlisten = "127.0.0.1:{self.http}"\n'
            # pump-1 and pump-2, whose valves the README's `drsdtp command` lines move
            '[[adapters]]\ntype = "simulated"\nname = "pumps"\nasset = "pump"\nrooms = 2\nspeedup = 20.0\n'
            + "".join(
                f'[[actuators]]\ntwin = "{pump}"\nfield = "valve"\nnode = "readme"\nadapter = "pumps"\n'
                'min = 0.0\nmax = 1.0\ntolerance = 0.05\n[actuators.write]\ninput = "valve"\n'
                for pump in ("pump-1", "pump-2")
            )
        )
        self.log = root / "node.log"

    def substitute(self, text: str) -> str:
        text = OPTIONAL.sub("", text)  # a [bracketed] part of a synopsis is optional: run the line without
        text = text.replace(DOC_CONFIG, str(self.config))
        text = text.replace("localhost:7402", f"127.0.0.1:{self.http}")
        text = re.sub(r"\bTWIN\b", TWIN, text)
        text = re.sub(r"\bFIELD\b", FIELD, text)
        if re.search(r"\bCOMMAND\b", text):
            text = re.sub(r"\bCOMMAND\b", self.newest_command(), text)
        if re.search(r"\bSNAPSHOT\b", text):
            text = re.sub(r"\bSNAPSHOT\b", self.newest_snapshot(), text)
        return text

    def newest_snapshot(self) -> str:
        listing = run(f"drsdtp snapshots {TWIN} --json", self.client_env)
        check(listing, "drsdtp snapshots --json")
        snapshots = json.loads(listing.stdout)
        assert snapshots, "the README uses SNAPSHOT before a line takes a snapshot"
        return str(max(snapshots, key=lambda s: s["created_ms"])["id"])

    def newest_command(self) -> str:
        listing = run("drsdtp commands --json", self.client_env)
        check(listing, "drsdtp commands --json")
        commands = json.loads(listing.stdout)
        assert commands, "the README uses COMMAND before a line issues a command"
        return str(commands[-1]["id"] if isinstance(commands, list) else commands["commands"][-1]["id"])

    @property
    def client_env(self) -> dict[str, str]:
        # $TOKEN: a shell variable the README's commands use, holding what `drsdtp token new` prints.
        return {"DRSDTP_CONFIG": str(self.config), "TOKEN": readme_token()}

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/readyz", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadmeNode]:
    node = ReadmeNode(tmp_path_factory.mktemp("readme-node"))
    (line,) = [c for c in COMMANDS if kind(c) == "run"]
    with node.log.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {node.substitute(line.command)}"],
            cwd=REPO,
            env=env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not node.ready():
            assert proc.poll() is None, f"{line.id} exited: {node.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"{line.id}: not ready in 60 s: {node.log.read_text()[-3000:]}"
            )
            time.sleep(0.2)
        # The simulated plant's first readings: the twin the placeholders name exists.
        while run(f"drsdtp get {TWIN} {FIELD}", node.client_env).returncode != 0:
            assert time.monotonic() < deadline, f"{TWIN}.{FIELD} never appeared"
            time.sleep(0.2)
        yield node
    finally:
        terminate(proc)
    assert proc.returncode == 0, f"the node did not stop cleanly: {node.log.read_text()[-3000:]}"


# --- one test per README line, in README order (they share the node) --------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("line", [c for c in COMMANDS if kind(c) in ("run", "cli")], ids=lambda c: c.id)
def test_readme_command(line: Command, node: ReadmeNode) -> None:
    if kind(line) == "run":
        assert node.ready()  # the fixture started the node with this very line
        return
    command = node.substitute(line.command)
    result = run(command, node.client_env)
    refusal = next((r for pattern, r in REFUSALS.items() if re.search(pattern, line.command)), None)
    if refusal is None:
        check(result, command)
    else:  # the documented answer
        assert (result.returncode, refusal in result.stderr) == (1, True), result.stderr


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("line", [c for c in COMMANDS if kind(c) == "bench"], ids=lambda c: c.id)
def test_readme_bench(line: Command) -> None:
    written = shlex.split(line.command)
    assert written[0] == ".venv/bin/python", line.id
    for name in bench_scripts(line):
        script = f"benches/{name}"
        # The line as written for its own script; the same interpreter for ones its comment names.
        args = written if written[1] == script else [written[0], script]
        command = shlex.join([*args, *TINY[name]])
        check(run(command), command)


@pytest.mark.integration
def test_make_bench_recipe_and_its_harness(tmp_path: Path) -> None:
    assert any(kind(c) == "make bench" for c in COMMANDS)
    dry = run("make -n bench")
    check(dry, "make -n bench")
    (harness,) = [ln for ln in dry.stdout.splitlines() if "benches/run_all.py" in ln]
    # Every bench it runs is one the README names, so test_readme_bench runs it tiny too.
    named = {name for c in COMMANDS for name in bench_scripts(c)}
    listed = run(f"{harness} --list")
    check(listed, "run_all.py --list")
    scripts = {ln.split()[1] for ln in listed.stdout.splitlines() if ln.split()[1].endswith(".py")}
    assert scripts <= named, f"make bench runs benches the README does not name: {sorted(scripts - named)}"
    # Its plumbing, end to end on the fastest bench: rows gathered, the table printed, the JSON written.
    out = tmp_path / "latest.json"
    command = f"{harness} --tiny --only bench_core --out {out}"
    result = run(command)
    check(result, command)
    assert "issue 13 goals" in result.stdout, result.stdout[-3000:]
    written = json.loads(out.read_text())
    measured = {t["measure"]: t["row"] for t in written["issue13"]}
    row = measured["Python batched writes vs pycrdt"]
    assert row is not None and row["baseline"] > 0 and row["ratio"] == row["value"] / row["baseline"], row
    assert measured["replication throughput node to node"] is None  # not run: reported as not measured
    print("make bench: recipe checked with make -n, its harness run on bench_core; the benches it runs")
    print("are each run tiny by test_readme_bench; its Rust peers (minutes to compile) are left to it")


def test_make_bench_finds_a_goal_in_a_qualified_row_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bench may qualify its row's name; the goal table must still report it, not say "not measured".
    monkeypatch.syspath_prepend(str(REPO / "benches"))  # run_all imports its sibling bench_report
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benches" / "run_all.py")
    assert spec is not None and spec.loader is not None
    run_all = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_all", run_all)  # its dataclasses look their module up
    spec.loader.exec_module(run_all)
    rows = {
        "replication throughput node to node, real nodes (WAL on), API columns": {"value": 1},
        "idle node RSS breakdown": {"value": 2},
        "idle node RSS": {"value": 3},
    }
    assert run_all.find_row(rows, "replication throughput node to node") == {"value": 1}
    assert run_all.find_row(rows, "idle node RSS") == {"value": 3}  # the exact name wins
    assert run_all.find_row(rows, "replication latency p99") is None


@pytest.mark.slow
@pytest.mark.integration
def test_make_demo_converges_and_stops_on_ctrl_c() -> None:
    assert any(kind(c) == "make demo" for c in COMMANDS)
    proc = subprocess.Popen(
        ["make", "demo"],
        cwd=REPO,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C reaches make and the nodes, as in a terminal
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + TIMEOUT_S
        for text in proc.stdout:
            seen.append(text)
            if "converged: all nodes hold identical state" in text:
                break
            assert time.monotonic() < deadline, "".join(seen[-40:])
        else:
            pytest.fail("make demo exited before converging:\n" + "".join(seen[-40:]))
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "".join(seen) + rest
    assert "Traceback" not in output, output[-3000:]
    assert "received SIGINT: shutting down" in output, output[-3000:]


@pytest.mark.parametrize(
    "line",
    [c for c in COMMANDS if kind(c).startswith("make ") and kind(c) not in MAKE_RUN_HERE],
    ids=lambda c: c.id,
)
def test_other_make_targets_exist(line: Command) -> None:
    # Each has its own test (make dist: tests/deploy/test_release.py); here only that the target exists.
    dry = run(f"{line.command} -n")
    check(dry, f"{line.command} -n")
    print(f"{line.command}: recipe checked with make -n; its own test runs it")


def test_make_test_is_this_run() -> None:
    assert any(kind(c) == "make test" for c in COMMANDS)
    dry = run("make -n test")
    check(dry, "make -n test")
    assert "pytest" in dry.stdout
    print(
        "make test: not run from inside itself (this suite is its last step); its recipe checked with make -n"
    )
