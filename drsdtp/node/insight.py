"""Twin intelligence in the node: readings of modelled twins feed the rolling windows; a periodic pass
computes health, traits, forecasts and divergence; each field's quality score is written back to the twin
as the LWW field ``<field>.q`` (so it replicates with the value); the API serves health, forecasts and
what-if runs as JSON documents.

Models come from the config's ``[[kernels]]`` tables; ``type = "room"`` is the built-in thermal room (the
simulated plant's, ``drsdtp.sim.room_spec``; ``expected_period_s`` sets its sensors' reporting period). A
twin gets a model from the ``[[twins]]`` rules (its ``_model`` field). With no tables, ``room`` is defined
with a 10 s period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from drsdtp.adapters.base import ReadingBatch
from drsdtp.errors import ConfigError, DrsdtpError, InvalidValueError
from drsdtp.intelligence.engine import TwinIntelligence
from drsdtp.lifecycle import BackgroundService
from drsdtp.models import MODEL_FIELD
from drsdtp.sim.room_spec import room_model_spec

if TYPE_CHECKING:
    from drsdtp.node.node import Node

log = logging.getLogger(__name__)

PASS_INTERVAL_S = 2.0
QUALITY_STEP = 0.05  # write a quality back only when it moved this much (spares the log and the peers)


class InsightService(BackgroundService):
    name = "intelligence"

    def __init__(self, node: Node) -> None:
        self.node = node
        tables = node.config.kernels or ({"type": "room"},)
        self._specs = [model_from_table(table, f"kernels[{i}]") for i, table in enumerate(tables)]
        self.models = {spec.name for spec in self._specs}
        self._engine: TwinIntelligence | None = None
        self._twins: dict[int, str | None] = {}  # engine-known twin ids -> model (None: not modelled)
        self._rows: dict[int, int] = {}  # (twin id << 32 | field id) -> engine row, -1: not a model field
        self._written: dict[tuple[str, str], float] = {}
        self.passes = 0

    @property
    def engine(self) -> TwinIntelligence:
        """Built on first use: its windows cost a few MB that a node without modelled twins should not pay."""
        if self._engine is None:
            self._engine = TwinIntelligence()
            for spec in self._specs:
                self._engine.add_model(spec)
        return self._engine

    def _model_of(self, twin_id: int) -> str | None:
        if twin_id not in self._twins:
            name = self.node.store.twin_name(twin_id) or ""
            model = self.node.store.get(name, MODEL_FIELD)
            model = model if isinstance(model, str) and model in self.models else None
            if model is not None:
                self.engine.add_twin(name, model)
            self._twins[twin_id] = model
        return self._twins[twin_id]

    def _row(self, key: int) -> int:
        row = self._rows.get(key)
        if row is None:
            twin_id, field_id = key >> 32, key & 0xFFFFFFFF
            row = -1
            if self._model_of(twin_id) is not None:
                twin = self.node.store.twin_name(twin_id) or ""
                field = self.node.store.field_name(field_id) or ""
                try:
                    row = self.engine.row(twin, field)
                except DrsdtpError:
                    row = -1
            self._rows[key] = row
        return row

    def observe(self, batch: ReadingBatch, twins: list[str]) -> None:
        """Intake observer: map (twin, field) ids to engine rows once per distinct pair, then one ingest."""
        keys = (batch.twin_ids.astype(np.int64) << 32) | batch.field_ids.astype(np.int64)
        distinct, inverse = np.unique(keys, return_inverse=True)
        rows = np.fromiter((self._row(int(k)) for k in distinct), np.intp, len(distinct))[inverse]
        keep = rows >= 0
        if keep.any():
            self.engine.ingest(rows[keep], batch.source_ms[keep] / 1000.0, batch.values[keep])

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PASS_INTERVAL_S)
            if not self._rows:
                continue
            self.engine.evaluate(time.time())
            self.passes += 1
            await self._write_quality()

    async def _write_quality(self) -> None:
        store = self.node.store
        writes: list[tuple[bytes, list[str]]] = []
        for twin_id, model in list(self._twins.items()):
            if model is None:
                continue
            twin = store.twin_name(twin_id) or ""
            changed = {
                name: q
                for name, q in self.engine.quality_fields(twin).items()
                if abs(self._written.get((twin, name), -1.0) - q) >= QUALITY_STEP
            }
            if changed:
                self._written.update({(twin, k): v for k, v in changed.items()})
                writes.append((store.set_many(twin, dict(changed)), [twin]))
        await self.node.commit_all(writes, "local")

    def insight(self, twin: str, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """health | forecast | whatif | recommendations, as JSON-ready documents."""
        if self.passes == 0:
            raise DrsdtpError("no intelligence pass has run yet; try again in a few seconds")
        eng = self.engine
        if kind == "health":
            return eng.health(twin).to_dict()
        if kind == "forecast":
            fields = params.get("fields") or [f.name for f in eng.models[self._twin_model(twin)].fields]
            return {"twin": twin, "forecasts": [eng.forecast(twin, f).to_dict() for f in fields]}
        if kind == "whatif":
            scenario = params.get("scenario")
            if not isinstance(scenario, str):
                raise InvalidValueError(
                    'what-if needs {"scenario": "fan off" | "setpoint 18" | "heater fails"}'
                )
            horizon = float(params.get("horizon_min", 60)) * 60
            return eng.what_if(twin, scenario, horizon_s=horizon).to_dict()
        if kind == "recommendations":
            return {"twin": twin, "recommendations": [r.to_dict() for r in eng.recommendations(twin)]}
        raise InvalidValueError(f"unknown insight kind {kind!r} (health, forecast, whatif, recommendations)")

    def _twin_model(self, twin: str) -> str:
        model = self.node.store.get(twin, MODEL_FIELD)
        if not isinstance(model, str) or model not in self.models:
            raise DrsdtpError(f"twin {twin!r} has no model with twin intelligence")
        return model


def model_from_table(table: Any, key: str) -> Any:
    kind = table.get("type")
    if kind != "room":
        raise ConfigError(f"{key}.type", f"unknown model type {kind!r} (built in: room)")
    unknown = set(table) - {"type", "name", "expected_period_s"}
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown key (type, name, expected_period_s)")
    period = table.get("expected_period_s", 10.0)
    if isinstance(period, bool) or not isinstance(period, int | float) or not 0 < period <= 86_400:
        raise ConfigError(f"{key}.expected_period_s", f"expected seconds in (0, 86400], got {period!r}")
    name = table.get("name", "room")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}.name", "expected a non-empty string")
    return room_model_spec(dt_s=float(period), name=name)
