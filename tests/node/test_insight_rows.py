"""The intelligence keeps per-field state only for twins with a model: a twin without one is remembered
once, not once per field (10M fields of model-less twins took 627 MB of cache, issue 13)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from drsdtp.adapters.base import ReadingBatch
from drsdtp.config import parse_config
from drsdtp.node.node import Node


async def test_readings_of_twins_without_a_model_cost_one_entry_per_twin(tmp_path: Path) -> None:
    config = parse_config(
        {
            "node_id": "rows",
            "data_dir": str(tmp_path),
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
            "history": {"enabled": False},
        }
    )
    async with Node(config) as node:
        store, n = node.store, 50
        twins = np.array([store.intern_twin(f"plain-{i // 10}") for i in range(n)], np.uint32)
        fields = np.array([store.intern_field(f"f{i % 10}") for i in range(n)], np.uint32)
        now = int(time.time() * 1000)
        batch = ReadingBatch(
            twins,
            fields,
            np.arange(n, dtype=np.float64),
            np.full(n, now, np.int64),
            np.zeros(n, np.uint8),
            np.zeros(n, np.bool_),
        )
        await node.intake.sink.apply(batch)
        insight = node.intelligence
        insight.observe_replicated(batch)
        # One byte per twin id, no dict entry, no per-field entry.
        assert all(insight._plain[int(t)] == 1 for t in twins)
        assert not {int(t) for t in twins} & set(insight._twins)
        assert insight._rows == {}, f"{len(insight._rows)} per-field entries for twins without a model"
