"""The suite's free ports (:mod:`tests.ports`): a port claimed by one process is handed to no other until its
claim ends, and a port in TIME_WAIT is passed over."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.ports import claim_scope, free_port

ROOT = Path(__file__).resolve().parents[1]


def port_from_another_process(first: int) -> int:
    """The port another test process (another worker, another run) is handed, looking from ``first``."""
    code = f"from tests.ports import free_port; print(free_port({first}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_a_claimed_port_goes_to_no_other_process_until_its_scope_ends() -> None:
    with claim_scope():
        port = free_port()
        assert port_from_another_process(port) != port  # nothing listens on it yet: only the claim stops it
        assert free_port(port) != port  # nor is it handed out twice here
    assert port_from_another_process(port) == port  # released with its scope


def test_a_port_in_time_wait_is_passed_over() -> None:
    with claim_scope():
        port = free_port()
    with socket.create_server(("127.0.0.1", port)) as server:
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server's side closes first: its end of the connection waits in TIME_WAIT
        client.close()
    with claim_scope():
        assert free_port(port) != port
