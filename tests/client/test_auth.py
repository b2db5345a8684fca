"""The SDK's and the CLI's bearer tokens against a real node that requires them ([[api.tokens]]): the
node's refusals arrive as the SDK's errors (UnauthenticatedError, PermissionDeniedError), with what to
check, and the CLI's --token / $DRSDTP_TOKEN reach it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from drsdtp.api.auth.tokens import hash_token, new_token
from drsdtp.client import Client, PermissionDeniedError, UnauthenticatedError
from tests.api.nodes import ApiNode
from tests.client.conftest import started

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {role: new_token() for role in ("viewer", "operator", "admin")}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiNode]:
    entries = "".join(
        f'[[api.tokens]]\nname = "{role}-app"\nrole = "{role}"\nhash = "{hash_token(token)}"\n'
        for role, token in TOKENS.items()
    )
    node = started(tmp_path_factory.mktemp("auth"), "auth", entries, token=TOKENS["viewer"])
    try:
        yield node
    finally:
        node.stop()


def test_the_sdk_maps_the_nodes_refusals(guarded: ApiNode) -> None:
    target = f"127.0.0.1:{guarded.api_port}"
    with Client(target, token=TOKENS["admin"]) as admin:
        admin.create("room-auth", model="room", values={"temp_1": 20.0})
    with Client(target, token=TOKENS["viewer"]) as viewer:
        assert viewer.get("room-auth")["temp_1"] == 20.0
        with pytest.raises(PermissionDeniedError) as denied:
            viewer.report("room-auth", {"temp_1": 21.0})
    assert isinstance(denied.value, PermissionError) and "PERMISSION_DENIED" in str(denied.value)
    with Client(target, token="") as anonymous, pytest.raises(UnauthenticatedError) as unknown:
        anonymous.get("room-auth")
    assert "check the token" in str(unknown.value)
    with Client(target, token="not-a-token") as wrong, pytest.raises(UnauthenticatedError):
        wrong.status()
    with Client(target, token=TOKENS["operator"]) as operator:
        operator.report("room-auth", {"temp_1": 21.0})
        assert operator.get("room-auth")["temp_1"] == 21.0


def test_the_cli_sends_its_token(guarded: ApiNode) -> None:
    target = f"127.0.0.1:{guarded.api_port}"
    with Client(target, token=TOKENS["admin"]) as admin:
        admin.create("room-auth-cli", model="room")

    def drsdtp(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "DRSDTP_TOKEN"}
        if token is not None:
            env["DRSDTP_TOKEN"] = token
        return subprocess.run(
            [sys.executable, "-m", "drsdtp", *args, "--api", target],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert drsdtp("set", "room-auth-cli", "temp_1=22", token=TOKENS["operator"]).returncode == 0
    refused = drsdtp("set", "room-auth-cli", "temp_1=23", "--token", TOKENS["viewer"])
    assert (
        refused.returncode == 1
        and "PERMISSION_DENIED" in refused.stderr
        and "Traceback" not in refused.stderr
    )
    anonymous = drsdtp("get", "room-auth-cli")
    assert anonymous.returncode == 1 and "UNAUTHENTICATED" in anonymous.stderr
    shown = drsdtp("get", "room-auth-cli", "--json", "--token", TOKENS["viewer"])
    assert shown.returncode == 0 and '"temp_1": 22' in shown.stdout
