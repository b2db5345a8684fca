"""The test-only fault hooks the chaos check drives: a clock offset file the HLC and ingest follow, and slow,
lossy peer links in the gossip transport. Both are inert unless their environment variable is set."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drsdtp import clock_offset_hook
from drsdtp.clock_offset_hook import ClockOffsetHook
from drsdtp.config import load_config_with_overrides
from drsdtp.core import Store, replica_id
from drsdtp.errors import ClockSkewError, ConfigError
from drsdtp.gossip.errors import PeerError
from drsdtp.gossip.link_hook import ENV as LINK_ENV
from drsdtp.gossip.link_hook import LinkFaults, ShapedStream
from drsdtp.ingest.pipeline import wall_ms
from tests.gossip.support import eventually, running, same_state

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def offset_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "offset"
    yield path
    # The offset is process-wide: put this process's clock back for the tests that follow.
    path.write_text("0")
    ClockOffsetHook(path, Store(1)).poll()
    clock_offset_hook._offset_ms = 0


def test_the_hooks_are_inert_without_their_variables() -> None:
    assert ClockOffsetHook.from_environment(Store(1), env={}) is None
    assert LinkFaults.from_environment(env={}) is None
    assert clock_offset_hook.offset_ms() == 0


def test_the_hook_variables_are_not_config_overrides(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'node_id = "n1"\ndata_dir = "{tmp_path}"\n')
    env = {clock_offset_hook.ENV: str(tmp_path / "offset"), LINK_ENV: "delay_ms=5"}
    assert load_config_with_overrides(config, env)[1] == {}
    with pytest.raises(ConfigError, match="DRSDTP_TEST_OTHER"):
        load_config_with_overrides(config, {"DRSDTP_TEST_OTHER": "1"})  # still no silent typos


def test_clock_jumps_move_the_hlc_and_ingest_clock_but_never_back(offset_file: Path) -> None:
    store = Store(replica_id("jumpy"), max_offset_ms=500)
    offset_file.write_text("5000\n")
    hook = ClockOffsetHook.from_environment(store, env={clock_offset_hook.ENV: str(offset_file)})
    assert hook is not None  # and the first offset is applied before the node stamps anything
    before = time.time_ns() // 1_000_000
    physical, ingest = store.physical_now(), wall_ms()
    after = time.time_ns() // 1_000_000
    assert before + 5000 <= physical <= after + 5000
    assert before + 5000 <= ingest <= after + 5000
    ahead = store.now()

    offset_file.write_text("-3000")  # a backward step of eight seconds
    hook.poll()
    before = time.time_ns() // 1_000_000
    physical = store.physical_now()
    assert physical <= time.time_ns() // 1_000_000 - 3000
    assert physical >= before - 3000
    assert store.now() > ahead  # the HLC never goes backwards
    # The gate reads the shifted clock: a peer stamping with the true time is now 3 s ahead.
    peer = Store(replica_id("peer"))
    with pytest.raises(ClockSkewError):
        store.merge(peer.set("t", "f", 1.0))
    assert hook.applied == -3000 and clock_offset_hook.offset_ms() == -3000


def test_a_bad_offset_file_is_reported_and_changes_nothing(offset_file: Path) -> None:
    store = Store(1)
    hook = ClockOffsetHook(offset_file, store)
    hook.poll()  # missing: no offset
    assert hook.applied == 0 and hook.bad_reads == 0
    offset_file.write_text("700")
    hook.poll()
    for bad in ("soon", "1.5", str(10**15)):
        offset_file.write_text(bad)
        hook.poll()
    assert hook.bad_reads == 3 and hook.applied == 700


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("delay_ms=50,jitter_ms=80", "jitter_ms <= delay_ms"),
        ("loss=1", "loss must be in [0, 1)"),
        ("latency=5", "'latency=5'"),
        ("delay_ms=fast", "'fast' is not a number"),
    ],
)
def test_a_bad_link_spec_names_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=LINK_ENV) as error:
        LinkFaults.parse(text)
    assert problem in str(error.value)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []

    async def read(self) -> bytes | None:
        return None

    async def write(self, data: bytes) -> None:
        self.sent.append((asyncio.get_running_loop().time(), data))


async def test_a_slow_link_delays_every_message_and_keeps_their_order() -> None:
    inner = Recorder()
    stream = ShapedStream(inner, LinkFaults.parse("delay_ms=40,jitter_ms=30"), random.Random(3))
    pump = asyncio.create_task(stream.pump())
    loop = asyncio.get_running_loop()
    written = []
    for i in range(20):
        written.append(loop.time())
        await stream.write(bytes([i]))  # returns at once: latency, not a throughput cap
    await eventually(lambda: len(inner.sent) == 20, what="every message sent")
    pump.cancel()
    assert [data for _, data in inner.sent] == [bytes([i]) for i in range(20)]
    assert all(sent >= at + 0.010 for (sent, _), at in zip(inner.sent, written, strict=True))


async def test_a_lossy_link_resets_the_stream_instead_of_dropping_inside_it() -> None:
    inner = Recorder()
    stream = ShapedStream(inner, LinkFaults.parse("loss=0.2"), random.Random(5))
    resets = 0
    for i in range(200):
        try:
            await stream.write(i.to_bytes(2, "big"))
        except PeerError:
            resets += 1
    assert 10 < resets < 80
    assert len(inner.sent) == 200 - resets


async def test_replication_converges_through_slow_lossy_links(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LINK_ENV, "delay_ms=20,jitter_ms=10,loss=0.05,seed=11")
    async with running("a") as a, running("b", peers=[("a", a.port)]) as b:
        for i in range(300):
            a.on_local_delta(a.store.set("press", f"a{i}", i))
            b.on_local_delta(b.store.set("press", f"b{i}", i))
            if i % 20 == 0:
                await asyncio.sleep(0.05)
        await eventually(lambda: same_state(a.store, b.store), timeout_s=60, what="convergence")
    assert a.store.get("press", "b299") == 299 and b.store.get("press", "a299") == 299
    assert a.peer_stats()["b"].sessions > 1, "the lossy link reset streams"
