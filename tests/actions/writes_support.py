"""A pymodbus server that records every write it receives (the device's view: how many writes landed)."""

from __future__ import annotations

from pymodbus.constants import ExcCodes

from tests.ingest.modbus_server import ModbusServer

WRITE_CODES = {5: "coil", 6: "register", 15: "coils", 16: "registers"}


class RecordingModbusServer(ModbusServer):
    def __init__(self, holding: dict[int, list[int]], **kwargs: object) -> None:
        super().__init__(holding, **kwargs)  # type: ignore[arg-type]
        self.writes: list[tuple[str, int, list[int] | list[bool]]] = []
        self.refuse_writes_at: int | None = None  # a holding address whose writes answer IllegalValue

    def _action(self, unit: int):  # type: ignore[no-untyped-def]
        inner = super()._action(unit)

        async def action(
            func_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            if func_code in WRITE_CODES and values:  # the simulator also calls it without values
                if address == self.refuse_writes_at:
                    return ExcCodes.ILLEGAL_VALUE
                self.writes.append((WRITE_CODES[func_code], address, list(values or [])))
            result: ExcCodes | None = await inner(func_code, start_address, address, count, registers, values)
            return result

        return action
