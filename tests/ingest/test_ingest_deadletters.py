"""The dead-letter store on a real directory: bounds that hold across restarts, torn and corrupt records,
redeliveries recognised from disk, removal that stays removed, a failing disk."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from drsdtp.adapters.base import Rejected
from drsdtp.errors import StorageError
from drsdtp.ingest import letterlog
from drsdtp.ingest.deadletters import DeadLetterOptions, DeadLetterStore


def reject(i: int, size: int = 10, *, redelivery: bool = False, reason: str = "not JSON") -> Rejected:
    payload = f"{i:06d}".encode() + b"x" * max(0, size - 6)
    return Rejected(f"site/t{i}", 1_700_000_000_000 + i, reason, f"detail {i}", payload, redelivery)


@asynccontextmanager
async def opened(directory: Path, **options: int) -> AsyncIterator[DeadLetterStore]:
    async with DeadLetterStore(directory, DeadLetterOptions(**options)) as store:
        yield store


async def put_all(store: DeadLetterStore, rejects: list[Rejected], adapter: str = "site") -> None:
    for r in rejects:
        _, durable = await store.put(adapter, [r])
        if durable is not None:
            await durable


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir())


def sources(store: DeadLetterStore) -> list[str]:
    return [letter.source for letter in store.letters()]


async def test_count_bound_drops_the_oldest_and_holds_across_restarts(tmp_path: Path) -> None:
    async with opened(tmp_path, max_letters=16) as store:
        await put_all(store, [reject(i) for i in range(40)])
        assert len(store) <= 16
        assert sources(store)[-1] == "site/t39"  # the newest are kept
        dropped = sum(v for (_, _, outcome), v in store.counts().items() if outcome == "dropped")
        assert dropped == 40 - len(store)
        held = sources(store)
    async with opened(tmp_path, max_letters=16) as store:
        assert sources(store) == held  # the same letters after a restart, in order
        await put_all(store, [reject(i) for i in range(40, 60)])
        assert len(store) <= 16
        assert sources(store)[-1] == "site/t59"
    async with opened(tmp_path, max_letters=4) as store:  # a lowered bound applies on open
        assert len(store) <= 4
        assert sources(store)[-1] == "site/t59"
    async with opened(tmp_path, max_letters=16) as store:
        assert len(store) <= 4  # what was dropped is gone from disk, not just hidden


async def test_byte_bound_holds_on_disk_across_restarts(tmp_path: Path) -> None:
    bound = 65_536
    for round_ in range(3):
        async with opened(tmp_path, max_bytes=bound, max_letters=1000) as store:
            await put_all(store, [reject(1000 * round_ + i, size=3000) for i in range(40)])
            assert store.size_bytes <= bound
            assert disk_bytes(tmp_path) == store.size_bytes
            assert len(store) >= 10  # the bound is used, not just emptied
    async with opened(tmp_path, max_bytes=bound, max_letters=1000) as store:
        assert disk_bytes(tmp_path) == store.size_bytes <= bound


async def test_a_durable_letter_is_on_disk_before_its_awaitable_resolves(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        fresh, durable = await store.put("site", [reject(1), reject(2)])
        assert [r.source for r in fresh] == ["site/t1", "site/t2"]
        assert durable is not None
        await durable
        # A second store reading the same directory (a node restarted now) sees both letters.
        other = DeadLetterStore(tmp_path)
        assert sources(other) == ["site/t1", "site/t2"]
        assert await store.payload(store.letters()[1].id) == reject(2).payload


async def test_a_torn_tail_is_cut_and_the_store_goes_on(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await put_all(store, [reject(i) for i in range(5)])
    [segment] = letterlog.segments(tmp_path)
    path = letterlog.segment_path(tmp_path, segment)
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size - 7)  # a crash in the middle of appending the last record
    async with opened(tmp_path) as store:
        assert sources(store) == [f"site/t{i}" for i in range(4)]
        assert store.stats.corrupt == 1
        await put_all(store, [reject(9)])
        assert await store.payload(store.letters()[-1].id) == reject(9).payload
    async with opened(tmp_path) as store:
        assert sources(store) == [*(f"site/t{i}" for i in range(4)), "site/t9"]
        assert store.stats.corrupt == 0


async def test_a_corrupt_record_costs_its_segment_only_what_follows_it(tmp_path: Path) -> None:
    async with opened(tmp_path, max_letters=24) as store:  # 3 letters per segment
        await put_all(store, [reject(i) for i in range(9)])
    first = letterlog.segment_path(tmp_path, letterlog.segments(tmp_path)[0])
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit in the middle record
    first.write_bytes(bytes(data))
    async with opened(tmp_path, max_letters=24) as store:
        assert sources(store) == ["site/t0", *(f"site/t{i}" for i in range(3, 9))]
        assert store.stats.corrupt == 1


async def test_a_redelivery_is_recognised_even_after_a_restart(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await put_all(store, [reject(1)])
        fresh, durable = await store.put("site", [reject(1, redelivery=True)])
        assert (fresh, durable) == ([], None)
        await put_all(store, [reject(1)])  # not a redelivery: the sensor sent the same thing again
        assert len(store) == 2
    async with opened(tmp_path) as store:
        fresh, _ = await store.put("site", [reject(1, redelivery=True)])
        assert fresh == []
        fresh, _ = await store.put("other-adapter", [reject(1, redelivery=True)])
        assert len(fresh) == 1  # another adapter's message is another message
        assert store.counts()[("site", "not JSON", "duplicate")] == 1


async def test_removed_letters_stay_removed(tmp_path: Path) -> None:
    async with opened(tmp_path, max_letters=32) as store:  # 4 letters per segment
        await put_all(store, [reject(i) for i in range(10)])
        ids = [letter.id for letter in store.letters()]
        assert await store.remove([ids[1], ids[2], ids[5], 12345], "replayed") == 3
        assert await store.remove(ids[8:], "purged") == 2
        assert sources(store) == [f"site/t{i}" for i in (0, 3, 4, 6, 7)]
        for letter in store.letters():  # offsets were moved by the rewrite: payloads still read right
            assert (await store.payload(letter.id))[:6] == letter.source[-1:].rjust(6, "0").encode()
        assert store.counts()[("site", "not JSON", "replayed")] == 3
        assert disk_bytes(tmp_path) == store.size_bytes
        await put_all(store, [reject(20)])
    async with opened(tmp_path, max_letters=32) as store:
        assert sources(store) == [*(f"site/t{i}" for i in (0, 3, 4, 6, 7)), "site/t20"]
        assert await store.remove([letter.id for letter in store.letters()], "purged") == 6
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".dl")]
    async with opened(tmp_path, max_letters=32) as store:
        assert len(store) == 0


async def test_a_long_payload_is_kept_truncated_and_still_recognised(tmp_path: Path) -> None:
    async with opened(tmp_path, max_payload_bytes=300) as store:
        big = reject(1, size=1000)
        await put_all(store, [big])
        [letter] = store.letters()
        assert (letter.size, letter.kept, letter.truncated) == (1000, 300, True)
        assert await store.payload(letter.id) == big.payload[:300]
        fresh, _ = await store.put("site", [big._replace(redelivery=True)])
        assert fresh == []


async def test_a_failing_disk_drops_counted_and_the_store_goes_on(tmp_path: Path) -> None:
    async with opened(tmp_path, max_letters=8) as store:  # one letter per segment: each in its own file
        await put_all(store, [reject(0)])
        nxt = letterlog.segment_path(tmp_path, letterlog.segments(tmp_path)[-1] + 1)
        nxt.mkdir()  # the next segment cannot be written (a directory in its place)
        _, durable = await store.put("site", [reject(1)])
        assert durable is not None
        with pytest.raises(StorageError, match="not written"):
            await durable
        assert sources(store) == ["site/t0"]
        assert store.counts()[("site", "not JSON", "dropped")] == 1
        nxt.rmdir()
        await put_all(store, [reject(2)])
        assert sources(store) == ["site/t0", "site/t2"]


async def test_in_memory_store_has_the_same_bounds() -> None:
    store = DeadLetterStore(None, DeadLetterOptions(max_letters=5))
    await put_all(store, [reject(i) for i in range(12)])
    assert sources(store) == [f"site/t{i}" for i in range(7, 12)]
    assert store.counts()[("site", "not JSON", "dropped")] == 7
