"""A Sparkplug B edge node for tests, built from the specification's payload schema (our copy in proto/)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from drsdtp.wire.sparkplug import sparkplug_b_pb2 as spb

Metric = tuple[str, int, int, float | bool | str]  # name, alias, datatype, value


@dataclass
class EdgeNode:
    group: str = "plant"
    node: str = "press-1"
    bd_seq: int = 0
    seq: int = 0

    def _payload(self, metrics: list[spb.Payload.Metric], ts: int = 0, seq: int | None = None) -> bytes:
        msg = spb.Payload(timestamp=ts or int(time.time() * 1000), seq=self.seq if seq is None else seq)
        msg.metrics.extend(metrics)
        self.seq = (self.seq + 1) % 256
        return msg.SerializeToString()

    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"spBv1.0/{self.group}/{kind}/{self.node}"
        return f"{base}/{device}" if device else base

    def birth(self, metrics: list[Metric]) -> tuple[str, bytes]:
        self.seq = 0
        bd = spb.Payload.Metric(name="bdSeq", datatype=spb.Int64, long_value=self.bd_seq)
        return self.topic("NBIRTH"), self._payload([bd, *(_metric(m, birth=True) for m in metrics)])

    def device_birth(self, device: str, metrics: list[Metric]) -> tuple[str, bytes]:
        return self.topic("DBIRTH", device), self._payload([_metric(m, birth=True) for m in metrics])

    def data(
        self, metrics: list[Metric], device: str | None = None, seq: int | None = None
    ) -> tuple[str, bytes]:
        kind = "DDATA" if device else "NDATA"
        return self.topic(kind, device), self._payload([_metric(m, birth=False) for m in metrics], seq=seq)

    def device_death(self, device: str) -> tuple[str, bytes]:
        return self.topic("DDEATH", device), self._payload([])

    def death(self, bd_seq: int | None = None) -> tuple[str, bytes]:
        msg = spb.Payload(timestamp=int(time.time() * 1000))
        msg.metrics.add(
            name="bdSeq", datatype=spb.Int64, long_value=self.bd_seq if bd_seq is None else bd_seq
        )
        return self.topic("NDEATH"), msg.SerializeToString()


def _metric(m: Metric, *, birth: bool) -> spb.Payload.Metric:
    name, alias, datatype, value = m
    out = (
        spb.Payload.Metric(alias=alias, datatype=datatype)
        if not birth
        else spb.Payload.Metric(name=name, alias=alias, datatype=datatype)
    )
    if not birth:
        out.ClearField("datatype")  # data carries the alias only, as real edge nodes send it
    if isinstance(value, bool):
        out.boolean_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif datatype in (spb.Float,):
        out.float_value = value
    elif datatype == spb.Double:
        out.double_value = value
    elif datatype in (spb.Int64, spb.UInt64):
        out.long_value = int(value) & (2**64 - 1)
    else:
        out.int_value = int(value) & (2**32 - 1)
    return out
