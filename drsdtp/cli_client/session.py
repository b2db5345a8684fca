"""The SDK client of a CLI command: address, TLS, token and deadline from the command line and config."""

from __future__ import annotations

from drsdtp.client import AsyncClient, tls_from_config
from drsdtp.node_commands import ApiTarget

__all__ = ["open_client"]


def open_client(target: ApiTarget, actor: str = "") -> AsyncClient:
    """An :class:`AsyncClient` for ``target`` (use it with ``async with``)."""
    host = f"[{target.address.host}]" if ":" in target.address.host else target.address.host
    return AsyncClient(
        f"{host}:{target.address.port}",
        token=target.token,
        tls=tls_from_config(target.tls, target.server_name),
        timeout=target.timeout_s,
        actor=actor,
    )
