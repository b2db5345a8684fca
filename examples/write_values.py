"""Write reported and desired values with the asyncio client, and meet a conflict: a conditional write on a
version that is no longer current is refused, with the current version, and nothing changes.

    python examples/write_values.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio
import os
import sys

from drsdtp.client import AsyncClient, ConflictError, InvalidArgumentError

TARGET = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DRSDTP_API", "127.0.0.1:7401")
TWIN = "room-write-example"


async def main() -> None:
    async with AsyncClient(TARGET, timeout=5, actor="write_values example") as client:
        twins = await client.list_twins(prefix=TWIN)
        if not any(t.twin_id == TWIN for t in twins.twins):
            await client.create(TWIN, model="room")
        seen = await client.get(TWIN)

        # A manual reading (reported) and an intent for the heater (desired: kept in "heater.desired").
        version = await client.report(TWIN, {"temp_1": 19.5}, if_version=seen.version)
        version = await client.desire(TWIN, {"heater": 1.0}, if_version=version)
        print(f"reported temp_1 and desired heater: version {version}")

        # Someone else writes in between: a write conditional on the version we read first is refused.
        try:
            await client.report(TWIN, {"temp_1": 30.0}, if_version=seen.version)
        except ConflictError as exc:
            print(f"conflict: the twin is at version {exc.current_version}, not {seen.version}")
            print(f"that is the version our last write made: {exc.current_version == version}")
        # Re-read, decide again, write on the current version.
        current = await client.get(TWIN)
        await client.report(TWIN, {"temp_1": 20.0}, if_version=current.version)

        # A value out of the model's valid range is refused, naming the field; nothing is applied.
        try:
            await client.report(TWIN, {"temp_1": 500.0})
        except InvalidArgumentError as exc:
            print(f"refused: {exc.field}")

        twin = await client.get(TWIN)
        print(f"temp_1 = {twin['temp_1']!r}, heater desired = {twin.desired('heater')}")


asyncio.run(main())
