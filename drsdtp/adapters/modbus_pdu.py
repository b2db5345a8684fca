"""Register read responses (function codes 3 and 4) that keep the registers' bytes, registered on the
adapter's pymodbus client in place of pymodbus' own.

pymodbus decodes a response register by register (one ``struct.unpack`` and one ``append`` each) and then
formats the whole PDU, every register in it, into a debug message it builds whether or not debug logging is
on: for a 100-register read that is about half of the bare client's CPU per poll. These classes keep the
response's bytes instead (checked as pymodbus checks them), which :class:`~drsdtp.adapters.modbus_codec.
BlockDecoder` unpacks with one ``struct`` call; ``registers`` is still there, decoded on first use.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

__all__ = ["RAW_RESPONSES", "RawHoldingResponse", "RawInputResponse"]


class _RawRegisters(ReadHoldingRegistersResponse):
    """A register read response holding its registers as bytes (``raw``, big-endian, as on the wire)."""

    raw: bytes = b""
    _registers: Sequence[int] | None = None

    @property
    def registers(self) -> Sequence[int]:
        if self._registers is None:
            self._registers = struct.unpack(f">{len(self.raw) // 2}H", self.raw[: len(self.raw) & ~1])
        return self._registers

    @registers.setter
    def registers(self, value: Sequence[int]) -> None:
        self._registers = value

    def decode(self, data: bytes) -> None:
        if (data_len := int(data[0])) >= len(data):  # the check pymodbus makes
            raise ModbusIOException(
                f"byte_count {data_len} > length of packet {len(data)}", function_code=self.function_code
            )
        self.raw = bytes(data[1 : 1 + data_len])
        self._registers = None

    def __str__(self) -> str:  # for pymodbus' debug message: no register formatted
        return (
            f"{type(self).__name__}(dev_id={self.dev_id}, transaction_id={self.transaction_id}, "
            f"{len(self.raw)} bytes)"
        )


class RawHoldingResponse(_RawRegisters):
    function_code = ReadHoldingRegistersResponse.function_code


class RawInputResponse(_RawRegisters):
    function_code = ReadInputRegistersResponse.function_code


RAW_RESPONSES = (RawHoldingResponse, RawInputResponse)
