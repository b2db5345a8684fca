"""A short node run by an installed ``drsdtp`` command (a fresh venv, or the tree deploy/install.sh made):
it must find its own package (native module, model library, wire code), start, ingest and stop cleanly."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.ingest.support import free_port, terminate

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "drsdtp.example.toml"


def clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH, no virtualenv and no DRSDTP_* overrides of the test run leak into the installed node."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("DRSDTP_")}
    return {**env, **extra}


def node_config(root: Path) -> tuple[Path, int]:
    """A config with a simulated plant of two rooms; returns it and its metrics port."""
    metrics = free_port()
    config = root / "node.toml"
    config.write_text(
        f'node_id = "installed"\ndata_dir = "{root / "data"}"\n'
        f'[listen]\napi = "127.0.0.1:{free_port()}"\nmetrics = "127.0.0.1:{metrics}"\n'
        f'peer = "127.0.0.1:{free_port()}"\n'
        '[[twins]]\nmatch = "room-*"\nmodel = "room"\n'
        '[[adapters]]\ntype = "simulated"\nname = "plant"\nrooms = 2\nseed = 1\ndt_s = 10.0\nspeedup = 50.0\n'
    )
    return config, metrics


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def check_installed_command(drsdtp: Path, root: Path) -> str:
    """``drsdtp --version``, ``check-config`` of the example, then a node: ready, a twin of the room model
    readable through the same command, SIGTERM, exit 0. Runs outside the checkout. Returns the version."""
    env = clean_env()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(drsdtp), *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
        )

    version = cli("--version")
    assert version.returncode == 0, version.stderr
    checked = cli("check-config", str(EXAMPLE))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "pump" in checked.stdout  # the example's model, extending the library's centrifugal_pump

    config, metrics = node_config(root)
    log = root / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(drsdtp), "run", "--config", str(config)], cwd=root, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            got = cli("get", "room-1", "temp_1", "--config", str(config))
            if ready(metrics) and got.returncode == 0:
                break
            assert time.monotonic() < deadline, f"not ready: {got.stderr}\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        assert "temp_1" in got.stdout
    finally:
        terminate(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
    return version.stdout.strip()
