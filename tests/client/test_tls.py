"""The SDK over TLS to a real node process with ``tls.api = "mutual"``: a client certificate from the
cluster CA gets in (ca/cert/key as paths or bytes); without one, or in plaintext, the node is unavailable."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from drsdtp.client import AsyncClient, RetryPolicy, Tls, UnavailableError
from drsdtp.errors import ConfigError
from tests.api.nodes import ApiNode
from tests.gossip.pki import issue, make_ca


@pytest.mark.integration
async def test_mutual_tls_with_a_client_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "cluster-ca")
    node = ApiNode("tls", tmp_path)
    node_tls = issue(ca, tmp_path, node.node_id)
    node.configure(
        {},
        f'[tls]\nca = "{node_tls.ca}"\ncert = "{node_tls.cert}"\nkey = "{node_tls.key}"\napi = "mutual"\n',
    )
    node.spawn()
    target = f"127.0.0.1:{node.api_port}"
    try:
        operator = issue(ca, tmp_path, "operator")
        by_path = Tls(ca=operator.ca, cert=operator.cert, key=operator.key, server_name=node.node_id)
        by_bytes = dataclasses.replace(
            by_path,
            ca=operator.ca.read_bytes(),
            cert=operator.cert.read_bytes(),
            key=operator.key.read_bytes(),
        )
        await _until_up(target, by_path)
        for tls in (by_path, by_bytes):
            async with AsyncClient(target, tls=tls, timeout=5) as client:
                assert (await client.status()).node_id == node.node_id
        for refused in (None, Tls(ca=operator.ca, server_name=node.node_id)):  # plaintext; no certificate
            async with AsyncClient(target, tls=refused, timeout=2) as client:
                with pytest.raises(UnavailableError):
                    await client.status()
        with pytest.raises(ConfigError, match="both cert and key"):
            Tls(ca=operator.ca, cert=operator.cert).credentials()
    finally:
        node.stop()


async def _until_up(target: str, tls: Tls) -> None:
    patient = RetryPolicy(attempts=10_000, initial_s=0.1, max_s=0.5)
    async with AsyncClient(target, tls=tls, timeout=60, retry=patient) as client:
        await client.status()  # retried with backoff while the node starts, within the deadline


def test_unreadable_tls_files_are_a_config_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match=f"tls.ca: cannot read {missing}"):
        AsyncClient("127.0.0.1:1", tls=Tls(ca=missing))
    config = tmp_path / "node.toml"
    config.write_text(
        f'node_id = "n"\ndata_dir = "{tmp_path}"\n[tls]\nca = "{missing}"\ncert = "{tmp_path / "c"}"\n'
        f'key = "{tmp_path / "k"}"\napi = "server"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "drsdtp", "status", "--config", str(config)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: tls.ca: cannot read {missing}" in result.stderr
