"""The test-only fault hooks the chaos check drives: a clock offset file the HLC and ingest follow. Inert
unless its environment variable is set."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drsdtp import clock_offset_hook
from drsdtp.clock_offset_hook import ClockOffsetHook
from drsdtp.core import Store, replica_id
from drsdtp.errors import ClockSkewError
from drsdtp.ingest.pipeline import wall_ms

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
    assert clock_offset_hook.offset_ms() == 0


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
