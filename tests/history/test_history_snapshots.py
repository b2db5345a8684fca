"""Snapshots and rollback against the real engine: checksums, damaged files, registers, sets, counters,
desired fields."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from drsdtp.core import Store
from drsdtp.errors import StorageError, UnknownTwinError
from drsdtp.history import AuditLog, SnapshotStore
from drsdtp.history.rollback import field_kinds

T0 = 1_700_000_000_000


@pytest.fixture
def engine() -> Store:
    store = Store(1)
    store.set_manual_time(T0)
    store.set_many("boiler", {"setpoint": 70.0, "mode": "auto", "firmware": b"\x01\x02", "enabled": True,
                              "zone": 3})  # fmt: skip
    store.add("boiler", "tags", "north")
    store.add("boiler", "tags", "critical")
    store.increment("boiler", "starts", 5)
    return store


def _snapshots(tmp_path: Path, engine: Store, audit: AuditLog | None = None) -> SnapshotStore:
    clock = iter(range(T0, T0 + 10_000, 1000))
    return SnapshotStore(tmp_path / "snapshots", engine, audit, clock_ms=lambda: next(clock))


def _advance(engine: Store, ms: int) -> None:
    engine.set_manual_time(T0 + ms)


def test_snapshot_checksum_is_sha256_of_the_canonical_state(tmp_path: Path, engine: Store) -> None:
    snapshots = _snapshots(tmp_path, engine)
    info = snapshots.snapshot("boiler", "before firmware update", "alice")
    state = engine.encode_state(["boiler"])
    assert info.checksum == hashlib.sha256(state).hexdigest()
    assert (info.twin, info.reason, info.actor, info.size) == (
        "boiler",
        "before firmware update",
        "alice",
        len(state),
    )
    loaded, loaded_state = snapshots.load("boiler", info.id)
    assert loaded == info and loaded_state == state
    assert snapshots.list_snapshots("boiler") == [info]
    assert snapshots.values("boiler", info.id)["tags"] == frozenset({"north", "critical"})
    with pytest.raises(UnknownTwinError):
        snapshots.snapshot("nope", "x", "alice")


@pytest.mark.parametrize("damage", ["flip_state", "truncate", "flip_metadata"])
def test_damaged_snapshot_is_refused_with_a_clear_error(tmp_path: Path, engine: Store, damage: str) -> None:
    snapshots = _snapshots(tmp_path, engine)
    info = snapshots.snapshot("boiler", "baseline", "alice")
    (path,) = (tmp_path / "snapshots").rglob("*.snap")
    data = bytearray(path.read_bytes())
    if damage == "flip_state":
        data[-3] ^= 0x01
    elif damage == "truncate":
        del data[-4:]
    else:
        data[data.index(b'"actor"') + 10] ^= 0x01
    path.write_bytes(bytes(data))
    expected = {
        "flip_state": "checksum mismatch",
        "truncate": "truncated",
        "flip_metadata": "metadata checksum",
    }
    with pytest.raises(StorageError, match=f"corrupt and refused: .*{expected[damage]}"):
        snapshots.load("boiler", info.id)
    before = engine.fields("boiler")
    with pytest.raises(StorageError):
        snapshots.rollback("boiler", info.id, "bob", "restore")
    assert engine.fields("boiler") == before  # nothing written from a damaged snapshot
    assert snapshots.list_snapshots("boiler") == []  # listed snapshots are readable ones


def test_rollback_restores_registers_sets_and_counters(tmp_path: Path, engine: Store) -> None:
    audit = AuditLog(tmp_path / "audit")
    snapshots = _snapshots(tmp_path, engine, audit)
    baseline = snapshots.snapshot("boiler", "commissioned", "alice")
    expected = engine.fields("boiler")

    _advance(engine, 5_000)
    engine.set_many("boiler", {"setpoint": 85.5, "mode": "manual", "zone": 4})
    engine.remove("boiler", "tags", "north")
    engine.add("boiler", "tags", "overheated")
    engine.increment("boiler", "starts", 12)
    engine.set("boiler", "added_later", 1.0)
    peer = Store(2)
    peer.merge(engine.encode_state())

    _advance(engine, 10_000)
    result = snapshots.rollback("boiler", baseline.id, "bob", "bad tuning")
    restored = engine.fields("boiler")
    assert {k: v for k, v in restored.items() if k != "added_later"} == expected
    assert type(restored["zone"]) is int and restored["starts"] == 5
    assert result.extra_fields == ("added_later",)  # left alone, and said so
    assert restored["added_later"] == 1.0
    assert set(result.changed) == {"setpoint", "mode", "zone", "tags", "starts"}
    assert result.changed["starts"] == (17, 5)
    assert result.skipped == {}
    assert field_kinds(engine.encode_state(["boiler"]), "boiler")["starts"] == "counter"

    # The delta alone brings a replica that saw the bad state to the restored one.
    peer.merge(result.delta)
    assert peer.fields("boiler") == restored

    # A safety snapshot makes the rollback itself reversible.
    assert result.safety_snapshot is not None
    assert snapshots.values("boiler", result.safety_snapshot.id)["setpoint"] == 85.5

    (record,) = [r for r in audit.records("boiler") if r.action == "rollback"]
    assert (record.actor, record.reason, record.via, record.ref) == (
        "bob",
        "bad tuning",
        "rollback",
        baseline.id,
    )
    assert record.changes["setpoint"].old == 85.5 and record.changes["setpoint"].new == 70.0
    assert record.changes["tags"].new == frozenset({"north", "critical"})
    assert audit.verify().ok
    audit.close()


def test_rollback_to_the_current_state_writes_nothing(tmp_path: Path, engine: Store) -> None:
    snapshots = _snapshots(tmp_path, engine)
    info = snapshots.snapshot("boiler", "now", "alice")
    result = snapshots.rollback("boiler", info.id, "alice", "no-op", safety_snapshot=False)
    assert result.delta == b"" and result.changed == {}
    assert len(snapshots.list_snapshots("boiler")) == 1


def test_field_whose_kind_changed_is_skipped_not_converted(tmp_path: Path) -> None:
    engine = Store(1)
    engine.set_manual_time(T0)
    engine.set("pump", "level", 3)  # a register holding an int
    snapshots = _snapshots(tmp_path, engine)
    info = snapshots.snapshot("pump", "baseline", "alice")
    other = Store(2)
    other.set_manual_time(T0 + 1)
    other.increment("pump", "level", 9)  # another replica made it a counter
    engine.merge(other.encode_state())
    result = snapshots.rollback("pump", info.id, "bob", "try", safety_snapshot=False)
    assert "level" in result.skipped
    assert result.delta == b""


def test_rollback_desires_the_snapshot_value_and_skips_a_snapshot_conflict(tmp_path: Path) -> None:
    engine, other = Store(1), Store(2)
    engine.set_manual_time(T0)
    other.set_manual_time(T0 + 1)
    engine.desire("hvac", "setpoint", 21.0)
    engine.desire("hvac", "mode", "eco")
    engine.clear_desired("hvac", "mode")
    snapshots = _snapshots(tmp_path, engine)
    calm = snapshots.snapshot("hvac", "calm", "alice")
    assert field_kinds(engine.encode_state(["hvac"]), "hvac") == {"setpoint": "desired", "mode": "desired"}
    other.merge(engine.encode_state())
    concurrent = other.desire("hvac", "setpoint", 23.5)
    engine.desire("hvac", "setpoint", 19.0)
    engine.merge(concurrent)  # neither write saw the other: a conflict
    engine.desire("hvac", "mode", "boost")
    conflict = snapshots.snapshot("hvac", "conflict", "alice")
    assert engine.get("hvac", "setpoint") == (19.0, 23.5)

    result = snapshots.rollback("hvac", calm.id, "bob", "too warm", safety_snapshot=False)
    assert engine.get("hvac", "setpoint") == (21.0,)  # one write that saw both resolves the conflict
    assert engine.get("hvac", "mode") == ()
    assert result.changed == {"setpoint": ((19.0, 23.5), (21.0,)), "mode": (("boost",), ())}
    other.merge(result.delta)
    assert other.fields("hvac") == engine.fields("hvac")

    again = snapshots.rollback("hvac", conflict.id, "bob", "back", safety_snapshot=False)
    assert again.skipped == {"setpoint": "the snapshot holds 2 conflicting desired values"}
    assert engine.get("hvac", "setpoint") == (21.0,) and engine.get("hvac", "mode") == ("boost",)


def test_snapshots_are_pruned_to_the_newest_per_twin(tmp_path: Path, engine: Store) -> None:
    snapshots = SnapshotStore(
        tmp_path / "snapshots", engine, max_per_twin=3, clock_ms=iter(range(T0, T0 + 99)).__next__
    )
    taken = [snapshots.snapshot("boiler", f"n{i}", "alice") for i in range(5)]
    assert [s.id for s in snapshots.list_snapshots("boiler")] == [s.id for s in taken[2:]]
    with pytest.raises(StorageError, match="has no snapshot"):
        snapshots.load("boiler", taken[0].id)
