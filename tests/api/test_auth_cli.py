"""The CLI around authorization: ``drsdtp token new`` prints a token and the entry to paste (which then
validates and identifies the token), ``drsdtp token hash`` hashes one from standard input, and
``check-config`` / ``run`` refuse a plaintext API off loopback that nothing protects."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from drsdtp.api.auth import Authority, Credentials
from drsdtp.api.caller import Caller
from drsdtp.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


def drsdtp(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drsdtp", *argv],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_token_new_prints_a_token_and_an_entry_that_identifies_it(tmp_path: Path) -> None:
    done = drsdtp("token", "new", "mes", "--role", "operator", "--scope", "line1/*")
    assert done.returncode == 0, done.stderr
    first, _, entry = done.stdout.partition("\n\n")
    token = first.rsplit(" ", 1)[1]
    assert token.startswith("drsdtp_") and token not in entry  # only the hash goes to the config
    config = parse_config({"node_id": "n", "data_dir": str(tmp_path), "api": tomllib.loads(entry)["api"]})
    caller = await Authority(config.api).identify(
        Credentials("ipv4:127.0.0.1:1", authorization=f"Bearer {token}")
    )
    assert caller == Caller("token:mes", True, "operator", ("line1/*",))
    hashed = drsdtp("token", "hash", stdin=token + "\n")
    assert hashed.returncode == 0 and hashed.stdout.strip() == config.api.tokens[0].hash
    bad = drsdtp("token", "new", "x", "--scope", "a*b")
    assert bad.returncode == 2 and "is not a scope" in bad.stderr


def test_a_plaintext_api_off_loopback_is_refused_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    base = f'node_id = "n"\ndata_dir = "{tmp_path / "data"}"\n[listen]\napi = "0.0.0.0:7455"\n'
    path.write_text(base)
    for argv in (["check-config", str(path)], ["run", "--config", str(path)]):
        done = drsdtp(*argv)
        assert done.returncode == 2, done.stdout
        assert "listen.api: 0.0.0.0 is not a loopback address" in done.stderr
        assert "api.allow_plaintext_remote" in done.stderr
    path.write_text(base + "[api]\nallow_plaintext_remote = true\n")
    assert drsdtp("check-config", str(path)).returncode == 0
