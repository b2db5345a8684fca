"""A real pymodbus TCP server (in the test's event loop) with two units, restartable on the same port.

Faults are injected the way real devices fail: a register that answers IllegalAddress, and a unit that stops
answering (requests for it hang until the test ends).
"""

from __future__ import annotations

import asyncio
from typing import Self

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from .support import free_port


class ModbusServer:
    def __init__(
        self,
        holding: dict[int, list[int]],
        *,
        coils: list[bool] | None = None,
        discrete: list[bool] | None = None,
        inputs: list[int] | None = None,
    ) -> None:
        self.port = free_port()
        self.holding = holding  # unit -> initial holding registers from address 0
        self.coils = coils or [False] * 16
        self.discrete = discrete or [False] * 16
        self.inputs = inputs or [0] * 16
        self.bad_address: int | None = None  # holding register that answers IllegalAddress
        self.silent_units: set[int] = set()
        self.release = asyncio.Event()  # lets hung requests finish when the test ends
        self.server: ModbusTcpServer | None = None

    def _action(self, unit: int):  # type: ignore[no-untyped-def]
        async def action(
            func_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            if unit in self.silent_units:
                await self.release.wait()
                return ExcCodes.GATEWAY_NO_RESPONSE
            if (
                func_code == 3
                and self.bad_address is not None
                and address <= self.bad_address < address + count
            ):
                return ExcCodes.ILLEGAL_ADDRESS
            return None

        return action

    def _devices(self) -> list[SimDevice]:
        return [
            SimDevice(
                id=unit,
                simdata=(
                    [SimData(0, values=list(self.coils), datatype=DataType.BITS)],
                    [SimData(0, values=list(self.discrete), datatype=DataType.BITS)],
                    [SimData(0, values=list(words), datatype=DataType.REGISTERS)],
                    [SimData(0, values=list(self.inputs), datatype=DataType.REGISTERS)],
                ),
                action=self._action(unit),
            )
            for unit, words in self.holding.items()
        ]

    async def start(self) -> None:
        self.server = ModbusTcpServer(self._devices(), address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()  # type: ignore[no-untyped-call]
            self.server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await self.stop()
