"""A watch left running through a node restart resumes from its cursor by itself: every twin written
before the stop, while it reconnects, and after, arrives with its last value; nothing is missed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from drsdtp.client import AsyncClient, Change, UnavailableError
from tests.client.conftest import started, wait_ready


async def test_watch_resumes_after_a_node_restart_without_a_gap(tmp_path: Path) -> None:
    node = started(tmp_path, "restart")
    target = f"127.0.0.1:{node.api_port}"
    try:
        async with AsyncClient(target, timeout=10) as client:
            for i in range(3):
                await client.create(f"room-r{i}", model="room", values={"temp_1": 10.0})
            seen: dict[str, float] = {}
            changes: list[Change] = []
            watch = client.watch(prefix="room-r", fields=["temp_1"])

            async def read() -> None:
                async for change in watch:
                    changes.append(change)
                    seen[change.twin.twin_id] = float(change.twin["temp_1"])  # type: ignore[arg-type]

            reader = asyncio.create_task(read())
            await until(lambda: len(seen) == 3, "the snapshot arrives")
            await client.report("room-r0", {"temp_1": 11.0})
            await until(lambda: seen["room-r0"] == 11.0, "a change before the stop")
            before = watch.cursor

            node.stop()  # SIGTERM: a clean stop
            node.spawn()
            await asyncio.to_thread(wait_ready, node)
            # Written as soon as the node answers, likely before the watch is back: a resume misses none.
            await client.report("room-r1", {"temp_1": 12.0})
            await client.report("room-r2", {"temp_1": 13.0})
            await until(lambda: seen == {"room-r0": 11.0, "room-r1": 12.0, "room-r2": 13.0}, "every write")
            assert watch.reconnects >= 1 and watch.cursor is not None and before is not None
            assert watch.cursor > before  # HLC-numbered: later than anything before the restart
            assert all(c.origin != "snapshot" for c in changes[3:]), "a resume sends no new snapshot"
            await watch.aclose()
            await reader
    finally:
        node.stop()


async def test_a_watch_without_reconnect_raises_when_the_node_stops(tmp_path: Path) -> None:
    node = started(tmp_path, "once")
    try:
        async with AsyncClient(f"127.0.0.1:{node.api_port}", timeout=10) as client:
            await client.create("room-once", model="room")
            watch = client.watch(["room-once"], reconnect=False)
            first = await anext(watch)
            assert first.origin == "snapshot"
            node.kill()
            async with asyncio.timeout(30):
                ended: BaseException | None = None
                try:
                    await anext(watch)
                except (UnavailableError, StopAsyncIteration) as exc:  # an error, or the stream's end
                    ended = exc
            assert ended is not None, "the watch went on without its node"
            assert watch.reconnects == 0
    finally:
        node.stop()


async def until(check: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    """Polls ``check`` (the watch is read by another task: there is no event to wait on)."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)
