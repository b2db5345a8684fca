"""Memory figures behind the node's budget (``drsdtp/node/budget.py``, README "Memory budget"), measured on
real ``drsdtp run`` processes fed through a real mosquitto:

1. idle RSS of a node with an MQTT adapter and history, by component (from ``/proc/PID/smaps``: grpc's
   library, libpython, OpenSSL, our native module, other libraries, and the heap: Python's objects and
   every native allocation), the heap split (brk heap, thread stacks, other anonymous mappings) with the
   threads by name and the private dirty bytes, and the Python heap of the same command and config by
   package (``benches/module_heap.py``: what each imported module holds, measured with tracemalloc) with
   Python's small-object allocator at idle (the same, without tracemalloc);
2. RSS per twin (one value field and its _scope each), after ingesting --keys twins and settling;
3. RSS per Watch stream whose client froze, on a node holding thousands of twins;
4. peak RSS with every flood at once (as ``tests/daemon/test_node_memory_budget.py``), against the budget.

Run: ``.venv/bin/python benches/bench_memory.py [--keys 20000] [--streams 100] [--idle]`` (``--idle``: part 1
only, about half a minute). Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import pathlib
import subprocess
import sys
import tempfile
import threading
from collections import Counter

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

from drsdtp.config import load_config
from drsdtp.node.budget import memory_budget
from tests.daemon.floods import (
    Daemon,
    RssSampler,
    api_abuse,
    frozen_watchers,
    mqtt_flood,
    peer_flood,
    rss_bytes,
)
from tests.daemon.test_node_memory_budget import node_body
from tests.ingest.support import Mosquitto, running

MIB = 2**20


def rss_by_component(pid: int) -> dict[str, int]:
    """Resident bytes by what maps them: a library by name, anonymous memory and the brk heap as "heap"."""
    groups: dict[str, str | tuple[str, ...]] = {
        "grpc": "cygrpc",
        "libpython": "libpython",
        "openssl": ("libcrypto", "libssl", "_ssl", "_hashlib"),
        "drsdtp._core": "_core.",
    }
    out: dict[str, int] = dict.fromkeys([*groups, "other libraries", "heap"], 0)
    name = "heap"
    for line in pathlib.Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):  # a mapping's header line
            path = head[5] if len(head) > 5 else ""
            base = path.rsplit("/", 1)[-1]
            name = next((g for g, pre in groups.items() if base.startswith(pre)), "")
            if not name:
                name = "other libraries" if path.startswith("/") else "heap"  # [heap], [stack], anonymous
        elif head[0] == "Rss:":
            out[name] += int(head[1]) * 1024
    return out


def heap_parts(pid: int) -> tuple[dict[str, int], Counter[str]]:
    """The "heap" of :func:`rss_by_component` split by what holds it: the brk heap (malloc's main arena:
    Python's objects over 512 B and native allocations), thread stacks (the mapping each thread's stack
    pointer is in, from ``/proc/PID/task/TID/syscall``), other anonymous mappings (Python's 1 MiB
    small-object arenas, other threads' malloc arenas, large blocks), and every mapping's private dirty
    bytes (what is the process's alone: the rest of its RSS is clean library pages, shared and reclaimable);
    and the threads by name."""
    names: Counter[str] = Counter()
    stack_pointers: list[int] = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            names[(task / "comm").read_text().strip()] += 1
            syscall = (task / "syscall").read_text().split()
            if len(syscall) > 2:  # "running" has no registers to show
                stack_pointers.append(int(syscall[-2], 16))
    out = {"brk heap": 0, "thread stacks": 0, "anonymous": 0, "private dirty": 0}
    part = ""
    for line in pathlib.Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):
            path = head[5] if len(head) > 5 else ""
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            if path == "[heap]":
                part = "brk heap"
            elif path == "[stack]" or (not path and any(lo <= sp < hi for sp in stack_pointers)):
                part = "thread stacks"
            else:
                part = "" if path else "anonymous"
        elif head[0] == "Rss:" and part:
            out[part] += int(head[1]) * 1024
        elif head[0] == "Private_Dirty:":
            out["private dirty"] += int(head[1]) * 1024
    return out, names


def python_allocator(config: pathlib.Path, seconds: float = 8.0) -> str:
    """Python's small-object allocator at idle, from the same command and config without tracemalloc (which
    hides it): its arenas and the bytes in live blocks (``module_heap.py --allocator``)."""
    script = pathlib.Path(__file__).with_name("module_heap.py")
    out = subprocess.run(
        [sys.executable, str(script), str(config), str(seconds), "--allocator"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    return (
        f"  Python's small-object allocator at idle (no tracemalloc): {stats['arenas']} arenas of 1 MiB, "
        f"{stats['allocated_blocks'] / MIB:.1f} MiB in live blocks of <= 512 B"
    )


def python_heap(workdir: pathlib.Path, body: str, seconds: float = 8.0) -> list[str]:
    """What the modules of ``drsdtp run`` with this config hold on the Python heap, by package."""
    node = Daemon(workdir, body)
    node.workdir.mkdir()
    script = pathlib.Path(__file__).with_name("module_heap.py")
    out = subprocess.run(
        [sys.executable, str(script), str(node.write_config()), str(seconds)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    allocator = python_allocator(node.config_path, seconds)
    heap = json.loads(out.stdout.strip().splitlines()[-1])
    by_package: Counter[str] = Counter()
    for name, size in heap["modules"].items():
        parts = name.split(".")
        by_package[".".join(parts[:2]) if parts[0] == "drsdtp" else parts[0]] += size
    modules = sum(heap["modules"].values())
    own = sum(v for k, v in by_package.items() if k.startswith("drsdtp"))
    return [
        f"  Python heap at idle (tracemalloc, same command and config): {heap['traced'] / MIB:.1f} MiB; the "
        f"{len(heap['modules'])} modules it imports hold {modules / MIB:.1f} MiB (code and objects), "
        f"drsdtp's own {own / MIB:.1f}",
        "  by package: " + ", ".join(f"{k} {v / MIB:.2f}" for k, v in by_package.most_common(14)) + " MiB",
        allocator,
    ]


async def settle(node: Daemon, seconds: float = 5.0) -> int:
    await asyncio.sleep(seconds)
    return rss_bytes(node.pid)


async def fill(node: Daemon, broker_port: int, keys: int) -> int:
    """Ingests ``keys`` new keys through the broker; returns the twins the node then holds."""
    stop = threading.Event()
    flood = asyncio.create_task(
        asyncio.to_thread(mqtt_flood, broker_port, stop, keys=keys, oversized_bytes=0)
    )
    twins = 0
    for _ in range(1200):
        twins = (await node.status()).twins
        if twins >= keys:
            break
        await asyncio.sleep(0.1)
    stop.set()
    await flood
    return twins


async def main(keys: int, streams: int, idle_only: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        (root / "broker").mkdir()
        with running(Mosquitto(root / "broker")) as broker:
            # Before the daemon: the same MQTT client id would take over its session.
            heap = python_heap(root / "heap", node_body(broker.port))
            # 1 and 2: idle, then per key.
            node = Daemon(
                root / "a", node_body(broker.port).replace("api_max_watchers = 32", "api_max_watchers = 1000")
            )
            node.workdir.mkdir()
            try:
                await node.start()
                idle = await settle(node)
                print(f"idle node:               {idle / MIB:7.1f} MiB")
                parts = rss_by_component(node.pid)
                print("  by component: " + ", ".join(f"{k} {v / MIB:.1f}" for k, v in parts.items()) + " MiB")
                heap_split, threads = heap_parts(node.pid)
                print(
                    "  the heap: " + ", ".join(f"{k} {v / MIB:.1f}" for k, v in heap_split.items()) + " MiB"
                )
                print(
                    f"  {sum(threads.values())} threads: "
                    + ", ".join(f"{k} {n}" for k, n in threads.most_common())
                )
                print("\n".join(heap))
                if idle_only:
                    return
                twins = await fill(node, broker.port, keys)
                filled = await settle(node)
                status = await node.status()
                per_key = (filled - idle) / max(twins, 1)
                print(
                    f"after {twins} twins, {status.fields} fields: {filled / MIB:7.1f} MiB "
                    f"({per_key:.0f} B per twin of {status.fields / max(twins, 1):.1f} fields)"
                )
                # 3: frozen Watch streams on that node.
                before = await settle(node, 2)
                with RssSampler(node.pid) as rss:
                    async with frozen_watchers(node.api_port, streams):
                        await asyncio.sleep(10)
                per_stream = (rss.peak - before) / streams
                print(f"{streams} frozen Watch streams: peak +{(rss.peak - before) / MIB:.1f} MiB "
                      f"({per_stream / 1024:.0f} KiB per stream)")  # fmt: skip
            finally:
                node.stop()
            # 4: everything at once, against the budget.
            node = Daemon(root / "b", node_body(broker.port))
            node.workdir.mkdir()
            node.write_config()
            budget = memory_budget(load_config(node.config_path, {}), peer_twins=200, peer_fields=4000)
            try:
                await node.start()
                stop_threads, stop = threading.Event(), asyncio.Event()
                with RssSampler(node.pid) as rss:
                    tasks = [
                        asyncio.create_task(
                            asyncio.to_thread(
                                mqtt_flood, broker.port, stop_threads, keys=keys, oversized_bytes=16384
                            )
                        ),
                        asyncio.create_task(peer_flood(node.peer_port, stop, twins=200, fields=20, batch=32)),
                        asyncio.create_task(api_abuse(node.api_port, stop)),
                    ]
                    await asyncio.sleep(5)
                    async with contextlib.AsyncExitStack() as clients:
                        await asyncio.gather(
                            *(
                                clients.enter_async_context(frozen_watchers(node.api_port, 100))
                                for _ in range(3)
                            )
                        )
                        await asyncio.sleep(20)
                        stop.set()
                        stop_threads.set()
                        await asyncio.gather(*tasks)
            finally:
                node.stop()
            print(f"every flood at once: peak {rss.peak / MIB:7.1f} MiB, budget {budget.total / MIB:.1f} MiB")
            print(budget.describe())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--idle", action="store_true", help="only the idle node's figures")
    args = parser.parse_args()
    asyncio.run(main(args.keys, args.streams, args.idle))
