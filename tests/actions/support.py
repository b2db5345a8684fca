"""Helpers for the command tests: actuator tables and books over real stores and a real change feed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drsdtp.actions.actuators import Actuators, parse_actuators
from drsdtp.actions.book import CommandBook, CommandLimits
from drsdtp.api.feed import ChangeFeed
from drsdtp.core import Store, replica_id


def actuator(**overrides: Any) -> dict[str, Any]:
    """One ``[[actuators]]`` table: pump-1's valve on node a, through adapter "plant"."""
    table: dict[str, Any] = {
        "twin": "pump-1",
        "field": "valve",
        "node": "a",
        "adapter": "plant",
        "min": 0.0,
        "max": 1.0,
        "write": {"input": "valve"},
    }
    table.update(overrides)
    return {k: v for k, v in table.items() if v is not None}  # None: leave the key out


class Replica:
    """A store, its change feed and a command book; ``commit`` keeps every delta so tests can replicate
    them (``deliver_to``)."""

    def __init__(self, node: str, actuators: Actuators, limits: CommandLimits | None = None) -> None:
        self.node = node
        self.store = Store(replica_id(node))
        self.feed = ChangeFeed()
        self.deltas: list[bytes] = []
        self.book = CommandBook(
            self.store, self.commit, node_id=node, actuators=actuators, changes=self.feed, limits=limits
        )

    async def commit(self, delta: bytes, twins: Sequence[str], origin: str) -> None:
        self.deltas.append(delta)
        self.feed.publish(twins, origin)

    def deliver_to(self, other: Replica) -> None:
        for delta in self.deltas:
            changed = other.store.merge(delta)
            other.feed.publish(changed, "peer")


def replicas(*names: str, tables: list[dict[str, Any]] | None = None) -> list[Replica]:
    actuators = parse_actuators(tables if tables is not None else [actuator()])
    return [Replica(n, actuators) for n in names]
