"""Watch a twin, stop, and resume later from the saved cursor: the changes made meanwhile arrive, without
the initial snapshot. (A running watch also resumes by itself after a disconnect or a node restart.)

    python examples/watch_resume.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio
import os
import sys

from drsdtp.client import AsyncClient, NotFoundError

TARGET = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DRSDTP_API", "127.0.0.1:7401")
TWIN = "room-watch-example"


async def main() -> None:
    async with AsyncClient(TARGET, timeout=5) as client:
        try:
            await client.report(TWIN, {"temp_1": 18.0})
        except NotFoundError:
            await client.create(TWIN, model="room", values={"temp_1": 18.0})

        # First run: the snapshot of the twin, then one change; keep the cursor (a file, a database ...).
        async with client.watch([TWIN], fields=["temp_1"]) as watch:
            async for change in watch:
                print(f"{change.origin}: temp_1 = {change.twin.get('temp_1')!r}")
                if change.origin == "snapshot":
                    await client.report(TWIN, {"temp_1": 18.5})
                else:
                    break
            cursor = watch.cursor
        print(f"stopped at cursor {cursor}")

        # While nobody watches, the twin changes.
        await client.report(TWIN, {"temp_1": 19.0})

        # Later: resume after the cursor; the change made meanwhile arrives first.
        async with client.watch([TWIN], fields=["temp_1"], since=cursor) as watch:
            async for change in watch:
                print(f"resumed, {change.origin}: temp_1 = {change.twin.get('temp_1')!r}")
                if change.twin.get("temp_1") == 19.0:
                    break


asyncio.run(main())
