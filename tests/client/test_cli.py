"""The CLI's write and watch commands against a real node process, as a user runs them: human output by
default, ``--json`` on request, clear errors without tracebacks (a stopped node, a closed pipe), and no
daemon module loaded by a client command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from drsdtp.client import Client
from tests.client.conftest import started
from tests.ingest.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def drsdtp(target: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drsdtp", *args, "--api", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_create_set_desire_tag_delete(target: str) -> None:
    created = ok(
        drsdtp(target, "create", "room-cli", "--model", "room", "--meta", "site=lab", "--set", "temp_1=20")
    )
    assert created.startswith("room-cli: created of model room (version ")
    ok(drsdtp(target, "set", "room-cli", "temp_1=21.5", "humidity=40", "--reason", "manual reading"))
    ok(drsdtp(target, "desire", "room-cli", "heater=1", "fan=0.5"))
    ok(drsdtp(target, "desire", "room-cli", "--clear", "fan"))
    tagged = ok(drsdtp(target, "tag", "room-cli", "+north", "+east", "--field", "zones"))
    assert tagged.startswith("room-cli: zones +north +east")
    ok(drsdtp(target, "tag", "room-cli", "-east", "--field", "zones"))
    with Client(target) as client:
        twin = client.get("room-cli")
    assert (twin["temp_1"], twin["humidity"], twin["meta.site"]) == (21.5, 40, "lab")
    assert twin.desired("heater") == (1,) and twin.desired("fan") == () and twin["zones"] == ("north",)
    shown = ok(drsdtp(target, "get", "room-cli"))
    assert "heater.desired" in shown and f"version {twin.version}" in shown
    doc = json.loads(ok(drsdtp(target, "set", "room-cli", "temp_1=22", "--json")))
    assert doc["twin"] == "room-cli" and doc["version"] != twin.version and doc["repeated"] is False
    ok(drsdtp(target, "delete", "room-cli"))
    gone = drsdtp(target, "get", "room-cli")
    assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr


def test_values_are_typed_from_the_command_line(target: str) -> None:
    ok(drsdtp(target, "create", "bag-cli"))
    ok(drsdtp(target, "set", "bag-cli", "n=3", "x=2.5", "on=true", "label=pump A", 'code="42"'))
    with Client(target) as client:
        twin = client.get("bag-cli")
    assert [twin.fields[f].kind for f in ("n", "x", "on", "label", "code")] == [
        "i64",
        "f64",
        "flag",
        "text",
        "text",
    ]
    assert (twin["n"], twin["x"], twin["on"], twin["label"], twin["code"]) == (3, 2.5, True, "pump A", "42")


def test_refusals_name_the_field_and_exit_1(target: str) -> None:
    ok(drsdtp(target, "create", "room-refused", "--model", "room"))
    bad = drsdtp(target, "set", "room-refused", "temp_1=500")
    assert bad.returncode == 1 and "twins[0].ops[0].report" in bad.stderr and "valid range" in bad.stderr
    stale = drsdtp(target, "set", "room-refused", "temp_1=20", "--if-version", "5")
    assert stale.returncode == 1 and "FAILED_PRECONDITION" in stale.stderr and "not 5" in stale.stderr
    usage = drsdtp(target, "set", "room-refused", "temp_1")
    assert usage.returncode == 2 and "is not FIELD=VALUE" in usage.stderr
    assert "Traceback" not in bad.stderr + stale.stderr + usage.stderr


def test_idempotency_key_applies_once(target: str) -> None:
    ok(drsdtp(target, "create", "bag-idem-cli"))
    ok(drsdtp(target, "set", "bag-idem-cli", "n=1", "--idempotency-key", "k-1"))
    repeat = ok(drsdtp(target, "set", "bag-idem-cli", "n=1", "--idempotency-key", "k-1"))
    assert "nothing applied again" in repeat


def test_watch_prints_changes_and_resumes_from_a_cursor(target: str) -> None:
    ok(drsdtp(target, "create", "room-watch-cli", "--model", "room", "--set", "temp_1=19"))
    first = ok(drsdtp(target, "watch", "room-watch-cli", "--json", "--count", "1"))
    change = json.loads(first)
    assert change["origin"] == "snapshot" and change["fields"]["temp_1"] == 19 and change["cursor"] > 0
    ok(drsdtp(target, "set", "room-watch-cli", "temp_1=19.5"))
    resumed = drsdtp(target, "watch", "room-watch-cli", "--since", str(change["cursor"]), "--count", "1")
    line = ok(resumed)
    assert "room-watch-cli  local @" in line and "temp_1=19.5" in line
    assert "resume with: drsdtp watch --since " in resumed.stderr


def test_a_closed_pipe_ends_quietly(target: str) -> None:
    ok(drsdtp(target, "create", "room-pipe", "--model", "room"))
    listed = subprocess.run(
        f"{sys.executable} -m drsdtp twins --api {target} | head -1",
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.stdout.count("\n") == 1 and "Traceback" not in listed.stderr, listed.stderr
    # The watch notices the closed pipe on its next write: changes keep coming until it has exited.
    watch = subprocess.Popen(
        f"{sys.executable} -m drsdtp watch room-pipe --api {target} | head -1",
        shell=True,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with Client(target) as client:
        for i in range(600):
            if watch.poll() is not None:
                break
            client.report("room-pipe", {"temp_1": 20.0 + i % 10})
            time.sleep(0.05)
    out, err = watch.communicate(timeout=30)
    assert out.count("\n") == 1, out
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_stopped_node_says_what_to_check() -> None:
    result = drsdtp(f"127.0.0.1:{free_port()}", "set", "room-1", "temp_1=1", "--timeout", "2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "UNAVAILABLE" in result.stderr and "is the node running" in result.stderr


def test_a_client_command_loads_no_daemon_module(target: str) -> None:
    ok(drsdtp(target, "create", "room-mods", "--model", "room"))
    probe = (
        "import sys, atexit\n"
        "atexit.register(lambda: print(' '.join(sorted(m for m in sys.modules if m.startswith('drsdtp'))),"
        " file=sys.stderr))\n"
        "from drsdtp.cli import main\n"
        f"sys.exit(main(['get', 'room-mods', '--api', '{target}']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stderr.split()
    print(f"`drsdtp get` loads {len(loaded)} drsdtp modules")
    daemon = [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in DAEMON]
    assert "drsdtp.client" in loaded and not daemon, daemon


DAEMON = {
    "_core",
    "node",
    "api",
    "gossip",
    "history",
    "ingest",
    "adapters",
    "intelligence",
    "kernels",
    "models",
}


PLANT = '[[adapters]]\ntype = "simulated"\nname = "plant"\nrooms = 1\nseed = 1\ndt_s = 10.0\nspeedup = 50.0\n'


def test_insight_prints_text_unless_asked_for_json(tmp_path: Path) -> None:
    node = started(tmp_path, "plant", PLANT)
    target = f"127.0.0.1:{node.api_port}"
    try:
        deadline = time.monotonic() + 60
        while (forecast := drsdtp(target, "insight", "room-1", "forecast")).returncode != 0:
            assert "no intelligence pass has run yet" in forecast.stderr, forecast.stderr
            assert time.monotonic() < deadline, "no intelligence pass in time"
            time.sleep(0.5)
        text = ok(forecast)
        assert text.startswith("room-1: forecast\nFIELD") and "+5 MIN" in text and "temp_1" in text
        assert "{" not in text and len(text.splitlines()) < 30
        doc = json.loads(ok(drsdtp(target, "insight", "room-1", "forecast", "--json")))
        assert {f["field"] for f in doc["forecasts"]} >= {"temp_1", "humidity"}
        whatif = ok(drsdtp(target, "insight", "room-1", "whatif", "--scenario", "fan off"))
        assert "trajectories:" in whatif and "{" not in whatif and "61 values" in whatif
    finally:
        node.stop()
