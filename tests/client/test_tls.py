"""The SDK over TLS to a real node process with ``tls.api = "mutual"``: a client certificate from the
cluster CA gets in (ca/cert/key as paths or bytes); without one, or in plaintext, the node is unavailable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from drsdtp.client import AsyncClient, RetryPolicy, Tls, UnavailableError
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
        with pytest.raises(ValueError, match="both cert and key"):
            Tls(ca=operator.ca, cert=operator.cert).credentials()
    finally:
        node.stop()


async def _until_up(target: str, tls: Tls) -> None:
    patient = RetryPolicy(attempts=10_000, initial_s=0.1, max_s=0.5)
    async with AsyncClient(target, tls=tls, timeout=60, retry=patient) as client:
        await client.status()  # retried with backoff while the node starts, within the deadline
