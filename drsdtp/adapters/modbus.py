"""Modbus TCP adapter (pymodbus 3.16): polled register maps, read in contiguous blocks.

Settings::

    [[adapters]]
    type = "modbus"
    name = "meters"
    host = "10.0.0.5"
    port = 502
    timeout_s = 1.0          # per request
    retries = 0              # per request, before the block counts as failed
    poll_interval_s = 1.0    # default for every register; 0 polls back to back
    request_gap_ms = 0       # pause between requests: pacing for slow devices and serial gateways
    max_block = 100          # registers per read (the protocol allows 125, or 2000 bits)
    max_gap = 8              # unused registers a merged read may span
    twin = "meter-1"         # defaults for the registers ...
    unit = 1
    order = "ABCD"           # ABCD | CDAB | BADC | DCBA (see drsdtp.adapters.modbus_codec)
    [[adapters.registers]]
    field = "voltage"
    table = "holding"        # holding | input | coil | discrete
    address = 0
    data_type = "float32"    # int16 uint16 int32 uint32 int64 uint64 float32 float64 bool (also a default)
    scale = 0.1              # value = raw * scale + offset
    offset = 0.0

Writes (:class:`drsdtp.adapters.write.Writer`), on the session's connection (pymodbus serialises requests)::

    [actuators.write]
    table = "holding"        # holding | coil
    address = 40
    unit = 1
    data_type = "float32"    # as for reads (coils: bool); one or more registers written in one request
    order = "ABCD"
    scale = 0.1              # raw = (value - offset) / scale, the inverse of a read; integer types round
    offset = 0.0

A write response acknowledges; an exception response (illegal address, illegal value ...) rejects with its
code; a value that does not fit the type rejects before anything is sent. While the session is down a write
raises AdapterError (the executor retries; the supervisor reconnects).

Isolation: a read refused with a Modbus exception (e.g. IllegalAddress for one missing register) is split
into per-register reads for the rest of the session, so only the failing registers are reported BAD; a unit
that times out marks only its own registers BAD. Only when every request of a poll fails, or the TCP
connection drops, does the session fail and the supervisor reconnect. pymodbus' own reconnect is disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from drsdtp.adapters.base import AdapterStats, Quality, Rejected, SourceBatch
from drsdtp.adapters.common import CommonSettings, SharedSettings, parse_common, require_module
from drsdtp.adapters.modbus_codec import (
    BIT_TABLES,
    ORDERS,
    TABLES,
    TYPES,
    Block,
    BlockDecoder,
    RegisterSpec,
    encode,
    plan_blocks,
)
from drsdtp.adapters.settings import Table
from drsdtp.adapters.write import NotConnectedError, WriteOutcome, WriteRequest, WriteStatus, WriteTarget
from drsdtp.errors import AdapterError
from drsdtp.ingest.pipeline import wall_ms
from drsdtp.ingest.ratelog import RateLimitedLog
from drsdtp.supervisor import cancel_check

__all__ = ["ModbusAdapter", "ModbusSettings", "build", "decode_response"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModbusSettings:
    common: CommonSettings
    host: str
    port: int
    timeout_s: float
    retries: int
    request_gap_s: float
    max_block: int
    max_gap: int
    registers: tuple[RegisterSpec, ...]


def _parse_register(t: Table, d: dict[str, Any]) -> RegisterSpec:
    table = t.choice("table", TABLES, d["table"])
    type_ = t.choice("data_type", tuple(TYPES), "bool" if table in BIT_TABLES else d["data_type"])
    if (type_ == "bool") != (table in BIT_TABLES):
        raise t.error("data_type", "coils and discrete inputs are 'bool'; registers are numeric types")
    spec = RegisterSpec(
        twin=t.get_str("twin", d["twin"]) if d["twin"] is not None or t.has("twin") else "",
        field=t.get_str("field"),
        unit=t.get_int("unit", d["unit"], lo=0, hi=255),
        table=table,
        address=t.get_int("address", lo=0, hi=65535),
        type=type_,
        order=t.choice("order", ORDERS, d["order"]),
        scale=t.get_float("scale", 1.0),
        offset=t.get_float("offset", 0.0),
        poll_interval_s=t.get_float("poll_interval_s", d["poll_interval_s"], lo=0.0),
    )
    if not spec.twin:
        raise t.error("twin", "is required (or set twin on the adapter)")
    if spec.end > 65536:
        raise t.error("address", f"{spec.type} at {spec.address} runs past register 65535")
    t.done()
    return spec


def parse_settings(raw: Mapping[str, Any], key: str) -> ModbusSettings:
    t = Table(raw, key)
    require_module(t, "pymodbus", "modbus")
    common = parse_common(t)
    defaults = {
        "twin": t.opt_str("twin"),
        "unit": t.get_int("unit", 1, lo=0, hi=255),
        "table": t.choice("table", TABLES, "holding"),
        "data_type": t.choice("data_type", tuple(TYPES), "uint16"),
        "order": t.choice("order", ORDERS, "ABCD"),
        "poll_interval_s": t.get_float("poll_interval_s", 1.0, lo=0.0),
    }
    registers = tuple(_parse_register(r, defaults) for r in t.tables("registers", required=True))
    seen: dict[tuple[str, str], int] = {}
    for i, r in enumerate(registers):
        if (r.twin, r.field) in seen:
            first = seen[r.twin, r.field]
            raise t.error(f"registers[{i}].field", f"{r.twin}/{r.field} is already registers[{first}]")
        seen[r.twin, r.field] = i
    settings = ModbusSettings(
        common=common,
        host=t.get_str("host"),
        port=t.get_int("port", 502, lo=1, hi=65535),
        timeout_s=t.get_float("timeout_s", 1.0, lo=0.01),
        retries=t.get_int("retries", 0, lo=0, hi=10),
        request_gap_s=t.get_float("request_gap_ms", 0.0, lo=0.0) / 1000.0,
        max_block=t.get_int("max_block", 100, lo=1, hi=2000),
        max_gap=t.get_int("max_gap", 8, lo=0, hi=2000),
        registers=registers,
    )
    t.done()
    return settings


def build(raw: Mapping[str, Any], key: str) -> ModbusAdapter:
    return ModbusAdapter(parse_settings(raw, key))


def decode_response(decoder: BlockDecoder, raw: Any, batch: SourceBatch, now_ms: int) -> str | None:
    """Append one read's readings to ``batch``. A response that cannot be decoded (fewer registers than
    asked for, values that are no registers) becomes a dead letter instead; returns what was wrong."""
    block = decoder.block
    try:
        values = decoder.values(raw)
        if len(values) != len(decoder.fields):
            raise ValueError(f"{len(values)} values for {len(decoder.fields)} registers")
    except Exception as exc:  # this response's fault, never the session's
        detail = f"{type(exc).__name__}: {exc}"[:300]
        try:
            words = b"".join(int(w).to_bytes(2, "big", signed=False) for w in list(raw)[:4096])
        except (TypeError, ValueError, OverflowError):
            words = repr(raw)[:4096].encode()
        label = f"unit {block.unit} {block.table} {block.start}+{block.count}"
        batch.reject(Rejected(label, now_ms, "bad response", detail, words))
        return detail
    batch.extend(decoder.twins, decoder.fields, values, now_ms)
    return None


def _wire_words(raw: Any) -> bytes:
    """A response's registers (or bits) as they were on the wire, for its dead letter (at most 4096)."""
    return b"".join(int(w & 0xFFFF).to_bytes(2, "big") for w in list(raw)[: 1 << 12])


def _covers(block: Block, written: tuple[int, str, int, int]) -> bool:
    unit, table, first, end = written
    same = block.unit == unit and block.table == table
    return same and first < block.start + block.count and block.start < end


def _next_due(due: float, now: float, interval: float) -> float:
    """Keep the schedule on its grid; after a stall, skip missed polls instead of bursting to catch up."""
    if interval <= 0:
        return now  # poll back to back (benchmarks, fast local devices)
    return due + interval * max(1, math.ceil((now - due) / interval))


@dataclass(frozen=True, slots=True)
class ModbusWriteTarget:
    unit: int
    table: str  # holding | coil
    address: int
    type: str
    order: str
    scale: float
    offset: float

    @property
    def label(self) -> str:
        return f"unit {self.unit} {self.table} {self.address}"


_INT_RANGES = {
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint64": (0, (1 << 64) - 1),
}


def parse_write_target(raw: Mapping[str, Any], key: str) -> ModbusWriteTarget:
    t = Table(raw, key)
    table = t.choice("table", ("holding", "coil"), "holding")
    type_ = t.choice("data_type", tuple(TYPES), "bool" if table == "coil" else "uint16")
    if (type_ == "bool") != (table == "coil"):
        raise t.error("data_type", "coils are 'bool'; holding registers are numeric types")
    target = ModbusWriteTarget(
        unit=t.get_int("unit", 1, lo=0, hi=255),
        table=table,
        address=t.get_int("address", lo=0, hi=65535),
        type=type_,
        order=t.choice("order", ORDERS, "ABCD"),
        scale=t.get_float("scale", 1.0),
        offset=t.get_float("offset", 0.0),
    )
    if target.scale == 0:
        raise t.error("scale", "must not be 0 (a write divides by it)")
    if target.address + TYPES[type_][0] > 65536:
        raise t.error("address", f"{type_} at {target.address} runs past register 65535")
    t.done()
    return target


def encode_write(target: ModbusWriteTarget, value: object) -> list[int] | bool:
    """The registers (or the coil) a value is written as: the inverse of a read. ValueError says why not."""
    if target.table == "coil":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise ValueError(f"a coil takes true/false (or 0/1), got {value!r}")
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"a register takes a finite number, got {value!r}")
    raw = (value - target.offset) / target.scale
    if target.type in _INT_RANGES:
        lo, hi = _INT_RANGES[target.type]
        raw = round(raw)
        if not lo <= raw <= hi:
            raise ValueError(f"{value!r} is {raw} raw, outside {target.type} [{lo}, {hi}]")
    return encode(raw, target.type, target.order)


_READS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


class _Refused(Exception):
    """The device answered with a Modbus exception code (the request reached it)."""


class ModbusAdapter(SharedSettings):
    kind = "modbus"

    def __init__(self, settings: ModbusSettings) -> None:
        self.settings = settings
        self.common = settings.common
        self._stats = AdapterStats()
        self._fail_log = RateLimitedLog(_log, f"{settings.common.name}: failed reads")
        # Adaptive sampling (a rule's `sampling` action): overrides every register's poll interval.
        self.sampling_interval_s: float | None = None
        self._resampled = False
        # Points written since the last poll, (unit, table, first, end): polled at once, so a command's echo
        # (the device's reported value) does not wait out the poll interval.
        self._written: set[tuple[int, str, int, int]] = set()
        self._resample = asyncio.Event()  # wakes the poll loop: a new rate, or a point written
        self._client: Any = None  # the session's, while one is open: writes go over it

    def set_sampling_interval(self, interval_s: float | None) -> None:
        """Polls every block at this interval from now on (None: back to the configured intervals)."""
        self.sampling_interval_s = interval_s
        self._resampled = True
        self._resample.set()  # wakes a poll loop waiting out a long interval

    def write_target(self, raw: Mapping[str, Any], key: str) -> ModbusWriteTarget:
        return parse_write_target(raw, key)

    async def write(self, target: WriteTarget, request: WriteRequest) -> WriteOutcome:
        from pymodbus.exceptions import ConnectionException, ModbusException

        assert isinstance(target, ModbusWriteTarget)
        try:
            encoded = encode_write(target, request.value)
        except (ValueError, OverflowError, struct.error) as exc:
            return WriteOutcome(WriteStatus.REJECTED, f"{target.label}: {exc}")
        client = self._client
        if client is None or not client.connected:
            raise NotConnectedError(
                f"{self.name}: not connected to {self.settings.host}:{self.settings.port}"
            )
        try:
            if isinstance(encoded, bool):
                rr = await client.write_coil(target.address, encoded, device_id=target.unit)
            elif len(encoded) == 1:
                rr = await client.write_register(target.address, encoded[0], device_id=target.unit)
            else:
                rr = await client.write_registers(target.address, encoded, device_id=target.unit)
        except ConnectionException as exc:
            raise AdapterError(f"{self.name}: {exc}") from exc
        except ModbusException as exc:  # no (valid) response in time
            raise TimeoutError(f"{self.name}: {target.label}: {exc}") from exc
        if rr.isError():
            code = getattr(rr, "exception_code", "?")
            return WriteOutcome(WriteStatus.REJECTED, f"{target.label}: exception code {code}")
        count = 1 if isinstance(encoded, bool) else len(encoded)
        self._written.add((target.unit, target.table, target.address, target.address + count))
        self._resample.set()
        return WriteOutcome(WriteStatus.ACKNOWLEDGED, f"{target.label} written")

    @property
    def stats(self) -> AdapterStats:
        return self._stats

    def blocks(self) -> list[Block]:
        s = self.settings
        return plan_blocks(s.registers, s.max_block, s.max_gap)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncIterator[SourceBatch]]:
        from pymodbus.client import AsyncModbusTcpClient

        from drsdtp.adapters.modbus_pdu import RAW_RESPONSES

        s = self.settings
        client = AsyncModbusTcpClient(
            s.host, port=s.port, timeout=s.timeout_s, retries=s.retries, reconnect_delay=0, name=self.name
        )
        for response in RAW_RESPONSES:  # register reads keep their bytes (this client only)
            client.register(response)
        # One silent unit must not make pymodbus drop the connection the other units share.
        client.set_max_no_responses(1 << 30)
        try:
            if not await client.connect():
                raise AdapterError(f"{self.name}: cannot connect to {s.host}:{s.port}")
            self._client = client
            yield self._polls(client)
        finally:
            self._client = None
            client.close()

    async def _polls(self, client: Any) -> AsyncIterator[SourceBatch]:
        loop = asyncio.get_running_loop()
        blocks = self.blocks()
        decoders = [BlockDecoder(b) for b in blocks]
        due = [loop.time()] * len(blocks)
        check = cancel_check()  # the generator runs in the task that consumes it
        while True:
            check()
            now = loop.time()
            wait = min(due) - now
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._resample.wait()
                now = loop.time()
            if self._resample.is_set():
                self._resample.clear()
                # A new rate takes effect now, not after the old interval's poll.
                if self._resampled and self.sampling_interval_s is not None:
                    due = [min(d, now + self.sampling_interval_s) for d in due]
                self._resampled = False
                written, self._written = self._written, set()
                for i, block in enumerate(blocks):
                    if any(_covers(block, w) for w in written):
                        due[i] = now  # read back what was just written (the schedule goes on from there)
                continue
            batch = SourceBatch(wall_ms())
            attempted = silent = 0
            split: list[tuple[int, list[Block]]] = []
            for i, block in enumerate(blocks):
                if due[i] > now:
                    continue
                interval = self.sampling_interval_s
                due[i] = _next_due(due[i], now, block.poll_interval_s if interval is None else interval)
                attempted += 1
                check()
                try:
                    await self._read(client, decoders[i], batch)
                except AdapterError:
                    raise
                except _Refused as exc:
                    if len(block.specs) > 1:
                        # Isolate the bad register(s): from now on read this block register by register.
                        singles = [
                            Block(block.unit, block.table, r.address, r.count, (r,), block.poll_interval_s)
                            for r in block.specs
                        ]
                        split.append((i, singles))
                        for single in singles:
                            await self._read_or_mark_bad(client, BlockDecoder(single), batch)
                    else:
                        self._mark_bad(block, batch, str(exc))
                except (TimeoutError, OSError) as exc:
                    silent += 1
                    self._mark_bad(block, batch, f"no response: {exc}")
                if not client.connected:
                    raise AdapterError(f"{self.name}: connection lost")
            for i, singles in reversed(split):
                blocks[i : i + 1] = singles
                decoders[i : i + 1] = [BlockDecoder(b) for b in singles]
                due[i : i + 1] = [due[i]] * len(singles)
            self._stats.messages += attempted
            if len(batch) or batch.rejects:
                yield batch
            if attempted and silent == attempted:
                # Nothing answered at all: a half-open connection or a hung gateway; a new one is cheap.
                raise AdapterError(f"{self.name}: no response to any read of the poll")

    async def _read_or_mark_bad(self, client: Any, decoder: BlockDecoder, batch: SourceBatch) -> None:
        try:
            await self._read(client, decoder, batch)
        except AdapterError:
            raise
        except (_Refused, TimeoutError, OSError) as exc:
            self._mark_bad(decoder.block, batch, str(exc))

    async def _read(self, client: Any, decoder: BlockDecoder, batch: SourceBatch) -> None:
        from pymodbus.exceptions import ConnectionException, ModbusException

        block = decoder.block
        gap = self.settings.request_gap_s
        if gap:
            await asyncio.sleep(gap)
        read = getattr(client, _READS[block.table])
        try:
            rr = await read(block.start, count=block.count, device_id=block.unit)
        except ConnectionException as exc:
            raise AdapterError(f"{self.name}: {exc}") from exc
        except ModbusException as exc:  # ModbusIOException: no (valid) response in time
            raise TimeoutError(str(exc)) from exc
        if rr.isError():
            raise _Refused(
                f"unit {block.unit} {block.table} {block.start}+{block.count}: exception code "
                f"{getattr(rr, 'exception_code', '?')}"
            )
        # A register read's bytes (drsdtp.adapters.modbus_pdu), unpacked by the decoder in one call.
        raw = rr.bits if decoder.bits else getattr(rr, "raw", None) or rr.registers
        try:
            values = decoder.values(raw)
        except Exception as exc:  # e.g. a short response: this response's fault, not the session's
            detail = f"{type(exc).__name__}: {exc}"[:300]
            words = raw[: 1 << 13] if isinstance(raw, bytes) else _wire_words(raw)
            batch.reject(Rejected(self._label(block), wall_ms(), "bad response", detail, words))
            raise _Refused(f"unusable response: {detail}") from None
        batch.extend(decoder.twins, decoder.fields, values, wall_ms())

    @staticmethod
    def _label(block: Block) -> str:
        return f"unit {block.unit} {block.table} {block.start}+{block.count}"

    def _mark_bad(self, block: Block, batch: SourceBatch, reason: str) -> None:
        self._fail_log.warn(
            f"{block.unit}/{block.table}/{block.start}",
            "unit %d %s %d+%d: %s",
            block.unit,
            block.table,
            block.start,
            block.count,
            reason,
        )
        ts = wall_ms()
        for spec in block.specs:
            batch.add(spec.twin, spec.field, math.nan, ts, Quality.BAD)
        self._stats.bad_reads += len(block.specs)
