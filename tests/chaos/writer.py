"""The chaos check's writers: QoS 1 publishes to each node's topics, every one distinguishable afterwards.

Write ``seq`` to node ``n`` sets field ``v<seq>`` of twin ``<n>-<seq % 8>`` to ``seq``: one field per write,
so a write that is missing was lost, never superseded (an LWW overwrite could not tell the two apart).

A PUBACK comes from the broker, which holds the message for the node's persistent session until the node
acknowledges it after its write-ahead log made it durable (``drsdtp/adapters/mqtt.py``); a broker that is
never faulted makes the two promises one: a PUBACKed write must reach the node and, through replication,
every node whose scopes hold it. Writes without a PUBACK (the run ended first) may go either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import paho.mqtt.client as paho

TWINS_PER_NODE = 8


@dataclass(frozen=True, slots=True)
class Write:
    node: str
    seq: int

    @property
    def twin(self) -> str:
        return f"{self.node}-{self.seq % TWINS_PER_NODE}"

    @property
    def field(self) -> str:
        return f"v{self.seq}"

    @property
    def topic(self) -> str:
        return f"chaos/{self.node}/{self.twin}/{self.field}"


class Writers:
    """One MQTT client per node, publishing at ``rate`` writes per second per node while :meth:`run` runs."""

    def __init__(self, broker_port: int, nodes: list[str], client_prefix: str) -> None:
        self.nodes = nodes
        self.next_seq = dict.fromkeys(nodes, 0)
        self._pending: list[tuple[paho.MQTTMessageInfo, Write]] = []
        self.acked: set[Write] = set()
        self.sent: list[Write] = []
        self.clients = {}
        for node in nodes:
            client = paho.Client(
                paho.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
                client_id=f"{client_prefix}-pub-{node}",
            )
            client.max_queued_messages_set(0)
            client.max_inflight_messages_set(1000)
            client.connect("127.0.0.1", broker_port)
            client.loop_start()
            self.clients[node] = client

    def publish(self, node: str) -> None:
        write = Write(node, self.next_seq[node])
        self.next_seq[node] += 1
        info = self.clients[node].publish(write.topic, str(write.seq), qos=1)
        self.sent.append(write)
        self._pending.append((info, write))

    def collect(self) -> None:
        """Moves the PUBACKed writes to :attr:`acked`."""
        still = []
        for info, write in self._pending:
            if info.is_published():
                self.acked.add(write)
            else:
                still.append((info, write))
        self._pending = still

    async def run(self, rate: float) -> None:
        """Until cancelled: one write per node every ``1 / rate`` seconds."""
        while True:
            for node in self.nodes:
                self.publish(node)
            self.collect()
            await asyncio.sleep(1 / rate)

    async def settle(self, timeout_s: float = 15) -> None:
        """Waits for outstanding PUBACKs (up to ``timeout_s``; the rest count as unacknowledged)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._pending:
                    self.collect()
                    await asyncio.sleep(0.05)
        self.collect()

    def close(self) -> None:
        for client in self.clients.values():
            client.loop_stop()
            client.disconnect()
