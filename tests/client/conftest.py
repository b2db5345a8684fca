"""A real ``drsdtp run`` node process for the SDK, CLI and example tests (tests/api/nodes.py's ApiNode),
shared by every test here (each uses twins of its own); a test that restarts a node, or needs another
config, takes its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drsdtp.client import ApiError, Client
from tests.api.nodes import ApiNode


def wait_ready(node: ApiNode, limit_s: float = 60, token: str | None = None) -> None:
    """Returns once the node's API answers (``token``: one it accepts, when it requires one)."""
    deadline = time.monotonic() + limit_s
    with Client(f"127.0.0.1:{node.api_port}", timeout=2, token=token) as client:
        while True:
            assert node.proc is not None and node.proc.poll() is None, (
                f"{node.name} exited: {(node.dir / 'node.log').read_text()[-2000:]}"
            )
            try:
                client.status()
                return
            except ApiError:
                assert time.monotonic() < deadline, f"{node.name} did not answer in time"
                time.sleep(0.2)


def started(root: Path, name: str = "sdk", extra: str = "", token: str | None = None) -> ApiNode:
    node = ApiNode(name, root)
    node.configure({}, extra)
    node.spawn()
    wait_ready(node, token=token)
    return node


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiNode]:
    n = started(tmp_path_factory.mktemp("node"))
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture(scope="session")
def target(node: ApiNode) -> str:
    return f"127.0.0.1:{node.api_port}"
