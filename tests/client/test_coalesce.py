"""Concurrent writes of one client joined into one request (drsdtp.client.coalesce), against a real node:
each caller still gets its own twins' versions, and its own error when the node refuses the joined
request (each write is then sent alone)."""

from __future__ import annotations

import asyncio

import pytest

from drsdtp.client import (
    AsyncClient,
    Create,
    InvalidArgumentError,
    NotFoundError,
    TwinWrite,
    increment,
    report,
)
from drsdtp.client.coalesce import WriteCoalescer
from drsdtp.wire.v1 import api_pb2


async def test_concurrent_writes_go_as_one_request_and_each_gets_its_twins(target: str) -> None:
    async with AsyncClient(target, timeout=10, coalesce_writes=1) as client:
        await client.write([TwinWrite(f"co-{i}", (), create=Create()) for i in range(6)])
        coalescer = client.coalescer
        assert coalescer is not None
        requests = coalescer.requests
        # Made in one step of the loop: one request.
        results = await asyncio.gather(
            *(
                client.write([TwinWrite(f"co-{i}", (report("x", float(i)), report("y", 1.0)))])
                for i in range(6)
            )
        )
        assert coalescer.requests - requests == 1
        assert [list(r.versions) for r in results] == [[f"co-{i}"] for i in range(6)]
        for i, result in enumerate(results):
            twin = await client.get(f"co-{i}")
            assert (twin["x"], twin["y"], twin.version) == (float(i), 1.0, result.versions[f"co-{i}"])
        # Writes to the same twin joined: applied in the order they were made, as if sent one by one.
        await asyncio.gather(*(client.report("co-0", {"x": float(v)}) for v in range(10, 16)))
        assert (await client.get("co-0"))["x"] == 15.0


async def test_a_refused_joined_request_is_sent_again_write_by_write(target: str) -> None:
    async with AsyncClient(target, timeout=10, coalesce_writes=1) as client:
        await client.write(
            [TwinWrite("co-ok", (), create=Create()), TwinWrite("co-n", (increment("n"),), create=Create())]
        )
        coalescer = client.coalescer
        assert coalescer is not None
        requests = coalescer.requests
        got = await asyncio.gather(
            client.report("co-ok", {"a": 1.0}),
            client.report("co-ok", {"b": 2.0}),
            client.report("co-missing", {"a": 1.0}),  # no such twin
            client.report("co-n", {"n": 1.5}),  # a counter
            client.report("co-ok", {"c": 3.0}),
            return_exceptions=True,
        )
        assert coalescer.requests - requests == 1 + 5  # joined (refused), then each alone
        assert isinstance(got[0], int) and isinstance(got[1], int) and isinstance(got[4], int)
        assert isinstance(got[2], NotFoundError) and got[2].field == "twins[0].twin_id"
        assert isinstance(got[3], InvalidArgumentError) and got[3].field == "twins[0].ops[0].field"
        twin = await client.get("co-ok")
        assert (twin["a"], twin["b"], twin["c"]) == (1.0, 2.0, 3.0)
        assert (await client.get("co-n"))["n"] == 1


async def test_writes_that_cannot_be_joined_go_alone(target: str) -> None:
    async with AsyncClient(target, timeout=10, coalesce_writes=1) as client:
        coalescer = client.coalescer
        assert coalescer is not None
        writes = coalescer.writes
        await asyncio.gather(
            client.write([TwinWrite("co-key", (), create=Create())], idempotency_key="co-key-1"),
            client.write([TwinWrite("co-key-2", (), create=Create())]),
        )
        assert coalescer.writes == writes  # creates and idempotent writes never wait to be joined


async def test_the_coalescer_joins_up_to_its_bound_and_only_equal_rests() -> None:
    sent: list[bytes] = []
    gate = asyncio.Event()

    async def send(data: bytes, limit_s: float) -> api_pb2.WriteReply:
        sent.append(data)
        await gate.wait()
        return api_pb2.WriteReply()

    coalescer = WriteCoalescer(send, in_flight=1, max_bytes=100)
    calls = [
        coalescer.write(b"A" * 10, b"r1", 5),
        coalescer.write(b"B" * 40, b"r1", 5),
        coalescer.write(b"C" * 40, b"r1", 5),  # with A and B: 92 bytes
        coalescer.write(b"D" * 40, b"r1", 5),  # over the bound: the next request
        coalescer.write(b"E" * 10, b"r2", 5),  # another rest: its own request
        coalescer.write(b"F" * 10, b"r1", 5),  # the first batch it fits in: D's
    ]
    tasks = [asyncio.create_task(c) for c in calls]
    for _ in range(10):  # every write made in one step of the loop, then sent: one request out (in_flight=1)
        await asyncio.sleep(0)
    assert sent == [b"A" * 10 + b"B" * 40 + b"C" * 40 + b"r1"]
    gate.set()
    await asyncio.gather(*tasks)
    assert sent[1:] == [b"D" * 40 + b"F" * 10 + b"r1", b"E" * 10 + b"r2"]
    assert (coalescer.requests, coalescer.writes) == (3, 6)
    with pytest.raises(ValueError, match="in_flight"):
        WriteCoalescer(send, in_flight=0)
