"""The memory budget of a node: what its resident set can reach, item by item, from its config.

Every input a node takes from outside is bounded by a config key; this module adds the bounds up. The
per-item costs are measured (``benches/bench_memory.py``, a 2-core x86-64 box, Python 3.11) with headroom;
the README's "Memory budget" section explains each line. The integration test
``tests/daemon/test_node_memory_budget.py`` pushes every input to its limit at once and holds a real node
process to this total.

What it does not bound: state that peers replicate to this node beyond
``limits.max_twins`` and ``max_fields`` (merged whatever the caps), which depends on the other nodes'
caps; pass it as ``peer_twins`` and ``peer_fields``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from drsdtp.config import NodeConfig

__all__ = ["MemoryBudget", "memory_budget"]

_KIB, _MIB = 1 << 10, 1 << 20

# Measured by benches/bench_memory.py (figures in the README), rounded up.
# An idle node with an MQTT adapter (64 MiB), plus work in flight: batches being decoded and written, gRPC
# buffers of a few connections.
BASE_BYTES = 96 * _MIB
# Per twin and per field slot the store holds (limits.max_twins, max_fields): names, slots, the twin's
# record, history series, feed and ingest entries (measured: 2.2 to 4.1 KiB per twin of 2 fields).
TWIN_BYTES = 2560
FIELD_BYTES = 1024
KEY_TABLE_BYTES = 256  # per ingest.max_keys entry: an adapter's deadband and period state
QUEUED_MESSAGE_BYTES = 1 * _KIB  # an MQTT message held in the client queue, besides its payload
READING_BYTES = 256  # a reading buffered between an adapter and the store
DELTA_READING_BYTES = 64  # encoded bytes per reading in a local delta (one delta per ingest batch)
CALL_BYTES = 32 * _KIB  # gRPC's own state for one call, stream or unary
SNAPSHOT_PAGE_IDS = 512  # twin ids a Watch holds while sending its snapshot (drsdtp.api.services.watch)
WATCH_CACHE_BYTES = 8 * _MIB  # changes encoded once and messages built once for every Watch (the same module)
LISTING_ENTRY_BYTES = 400  # per twin while a ListTwins reply is built (one at a time: it never awaits)
DELTA_LOG_MAX_BYTES = 256 * _MIB  # GossipLimits.buffer_bytes: the delta log's own byte cap
REQUEST_BYTES = 64 * _KIB  # the API's receive limit
QUEUED_HISTORY_READING_BYTES = 48  # a reading queued for the history worker (its four array entries)
# History holds the live segment's readings and folds a sealed one within a flush (drsdtp.node.history);
# folding sorts and copies them a few times, and compaction reads blocks of up to merge_target_bytes.
HISTORY_SEGMENT_COPIES = 8
HISTORY_BLOCK_COPIES = 4


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryBudget:
    items: Mapping[str, int]  # what -> bytes

    @property
    def total(self) -> int:
        return sum(self.items.values())

    def describe(self) -> str:
        rows = [f"  {name:<28} {size / _MIB:9.1f} MiB" for name, size in self.items.items()]
        return "\n".join([*rows, f"  {'total':<28} {self.total / _MIB:9.1f} MiB"])


def memory_budget(config: NodeConfig, *, peer_twins: int = 0, peer_fields: int = 0) -> MemoryBudget:
    """The bound on a node's RSS under ``config`` (plus what peers replicate to it)."""
    from drsdtp.adapters import build_adapter  # adapters validate their own tables

    limits = config.limits
    adapters = [build_adapter(raw, f"adapters[{i}]") for i, raw in enumerate(config.adapters)]
    keys = sum(a.ingest.max_keys for a in adapters)
    twins, fields = limits.max_twins, limits.max_fields
    readings = sum(a.ingest.buffer_readings for a in adapters)
    queued = sum(_client_queue_bytes(getattr(a, "settings", None)) for a in adapters)
    largest_delta = max(
        [limits.max_message_bytes, *(a.ingest.max_batch * DELTA_READING_BYTES for a in adapters)]
    )
    message = limits.max_message_bytes  # the largest message the API or a peer link sends or takes
    history = 0
    if config.history.enabled:
        from drsdtp.history.options import HistoryOptions
        from drsdtp.node.history import MAX_QUEUED_READINGS

        options = HistoryOptions.from_config(config.history)
        history = (
            MAX_QUEUED_READINGS * QUEUED_HISTORY_READING_BYTES
            + HISTORY_SEGMENT_COPIES * options.segment_bytes
            + HISTORY_BLOCK_COPIES * options.merge_target_bytes
        )
    items = {
        "base": BASE_BYTES,
        # What ingestion may create; the health quality (<field>.q) is not capped, at most one per value
        # field (every twin holds at least its _scope besides its values).
        "twins and fields": twins * TWIN_BYTES + fields * FIELD_BYTES,
        "quality fields": max(0, fields - twins) * FIELD_BYTES,
        "ingest key tables": keys * KEY_TABLE_BYTES,
        # Merged from peers whatever the caps (refusing it would break convergence).
        "replicated state": peer_twins * TWIN_BYTES + peer_fields * FIELD_BYTES,
        "adapter client queues": queued,
        "ingest buffers": readings * READING_BYTES,
        "delta log": min(limits.peer_buffer * largest_delta, DELTA_LOG_MAX_BYTES),
        # Per peer stream: the message being read and the one being written (links are few: seeds and
        # members; max_peers bounds the state kept, two streams per linked peer at most).
        "peer links": 2 * max(1, len(config.peers)) * (CALL_BYTES + 2 * message),
        # One message in flight (the TwinChange object, its bytes, gRPC's copy) and a page of ids.
        "watch streams": limits.api_max_watchers
        * (CALL_BYTES + 3 * message + SNAPSHOT_PAGE_IDS * (limits.max_name_bytes + 64))
        + WATCH_CACHE_BYTES,
        # The request, its reply (and its bytes) in flight; plus the one reply being built, which for
        # ListTwins grows with the twins (replies beyond max_message_bytes are refused when sent).
        "history": history,
        "api requests": limits.api_max_requests * (CALL_BYTES + REQUEST_BYTES + 2 * message)
        + (twins + peer_twins) * LISTING_ENTRY_BYTES,
    }
    return MemoryBudget(items)


def _client_queue_bytes(settings: Any) -> int:
    """What an adapter's own client may queue before the pipeline takes it: the MQTT inbox holds up to
    ``max_queued_qos0`` messages (QoS 1 beyond ``max_unacked`` resets the session), each up to
    ``max_payload_bytes`` (a bigger one is refused when decoded)."""
    qos0 = getattr(settings, "max_queued_qos0", None)
    if qos0 is None:
        return 0  # polling adapters (OPC UA, Modbus, serial, simulated) hold one poll at a time
    held = max(qos0, getattr(settings, "max_unacked", 0))
    payload = settings.limits.max_payload_bytes
    return int(held * (payload + QUEUED_MESSAGE_BYTES))
