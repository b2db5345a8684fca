"""The intelligence keeps per-field state only for twins with a model: a twin without one is remembered
once, not once per field (10M fields of model-less twins took 627 MB of cache, issue 13)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from drsdtp.adapters.base import ReadingBatch
from drsdtp.config import parse_config
from drsdtp.models import MODEL_FIELD
from drsdtp.node.node import Node


def _config(tmp_path: Path) -> dict[str, object]:
    return {
        "node_id": "rows",
        "data_dir": str(tmp_path),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "history": {"enabled": False},
    }


def _readings(node: Node, twin: str, n: int) -> ReadingBatch:
    """``n`` readings of ``twin`` (``n // 10`` twins ``twin-<k>`` when ``twin`` ends with ``-``)."""
    store = node.store
    names = [f"{twin}{i // 10}" if twin.endswith("-") else twin for i in range(n)]
    return ReadingBatch(
        np.array([store.intern_twin(t) for t in names], np.uint32),
        np.array([store.intern_field(f"temp_{1 + i % 2}") for i in range(n)], np.uint32),
        np.arange(n, dtype=np.float64),
        np.full(n, int(time.time() * 1000), np.int64),
        np.zeros(n, np.uint8),
        np.zeros(n, np.bool_),
    )


async def test_readings_of_twins_without_a_model_cost_one_entry_per_twin(tmp_path: Path) -> None:
    async with Node(parse_config(_config(tmp_path))) as node:
        batch = _readings(node, "plain-", 50)
        twins = batch.twin_ids
        await node.intake.sink.apply(batch)
        insight = node.intelligence
        insight.observe_replicated(batch)
        # One byte per twin id, no dict entry, no per-field entry.
        assert all(insight._plain[int(t)] == 1 for t in twins)
        assert not {int(t) for t in twins} & set(insight._twins)
        assert insight._rows == {}, f"{len(insight._rows)} per-field entries for twins without a model"


async def test_a_pass_builds_no_engine_for_readings_of_twins_without_a_model(tmp_path: Path) -> None:
    """Importing and building the engine took ~0.2 s on the event loop at the first pass after the first
    reading: a stall of every peer stream and API call of a node that holds no modelled twin at all."""
    async with Node(parse_config(_config(tmp_path))) as node:
        insight = node.intelligence
        insight.observe_replicated(_readings(node, "plain-", 20))
        assert await insight.pass_once() is False
        assert insight._engine is None and insight.passes == 0
        # The other side: the first reading of a modelled twin builds it, and the pass runs.
        await node.commit(node.store.set("room-1", MODEL_FIELD, "room"), ["room-1"], "local")
        insight.observe_replicated(_readings(node, "room-1", 2))
        assert await insight.pass_once() is True
        assert insight._engine is not None and insight.passes == 1
