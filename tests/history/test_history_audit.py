"""The audit trail: hash chain verification against edits, deletions and truncation; torn tail; queries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from drsdtp.history import AuditLog, Change, changes_between
from drsdtp.history.audit import Readings

T0 = 1_700_000_000_000


def _fill(directory: Path, n: int = 5) -> AuditLog:
    audit = AuditLog(directory)
    for i in range(n):
        audit.record(
            actor="alice" if i % 2 == 0 else "rule:overheat",
            twin=f"boiler-{i % 2}",
            changes=changes_between({"setpoint": 70.0 + i}, {"setpoint": 71.0 + i, "mode": "manual"}),
            reason=f"step {i}",
            via="api" if i % 2 == 0 else "rule",
            ts_ms=T0 + i * 1000,
        )
    audit.flush()
    return audit


def _lines(directory: Path) -> list[bytes]:
    return (directory / "audit.log").read_bytes().splitlines(keepends=True)


def test_intact_chain_verifies_and_survives_reopen(tmp_path: Path) -> None:
    _fill(tmp_path).close()
    audit = AuditLog(tmp_path)
    record = audit.record(
        actor="bob", twin="boiler-0", changes={"x": Change(b"\x00\xff")}, reason="r", via="cli"
    )
    assert record.seq == 5
    audit.flush()
    result = audit.verify()
    assert result.ok and result.records == 6 and result.problems == []
    assert audit.records("boiler-0")[-1].changes["x"].new == b"\x00\xff"
    audit.close()


def test_edited_line_is_detected(tmp_path: Path) -> None:
    _fill(tmp_path).close()
    lines = _lines(tmp_path)
    record = json.loads(lines[2])
    record["actor"] = "mallory"
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    (tmp_path / "audit.log").write_bytes(b"".join(lines))
    result = AuditLog(tmp_path).verify()
    assert not result.ok
    assert any("line 3" in p and "edited" in p for p in result.problems), result.problems


def test_edit_with_a_recomputed_hash_still_breaks_the_next_link(tmp_path: Path) -> None:
    import hashlib

    _fill(tmp_path).close()
    lines = _lines(tmp_path)
    record = json.loads(lines[1])
    record["reason"] = "nothing to see"
    body = {k: v for k, v in record.items() if k != "hash"}
    record["hash"] = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    (tmp_path / "audit.log").write_bytes(b"".join(lines))
    problems = AuditLog(tmp_path).verify().problems
    assert any("line 3" in p and "does not follow" in p for p in problems), problems


def test_deleted_line_is_detected(tmp_path: Path) -> None:
    _fill(tmp_path).close()
    lines = _lines(tmp_path)
    del lines[1]
    (tmp_path / "audit.log").write_bytes(b"".join(lines))
    problems = AuditLog(tmp_path).verify().problems
    assert any("does not follow" in p for p in problems) and any("records missing" in p for p in problems)


def test_lines_cut_off_the_end_are_detected_through_the_head(tmp_path: Path) -> None:
    _fill(tmp_path).close()
    lines = _lines(tmp_path)
    (tmp_path / "audit.log").write_bytes(b"".join(lines[:-2]))
    problems = AuditLog(tmp_path).verify().problems
    assert any("cut off the end" in p for p in problems), problems


def test_torn_last_line_is_cut_on_open_and_the_chain_continues(tmp_path: Path) -> None:
    audit = _fill(tmp_path, 3)
    audit.record(actor="a", twin="t", changes={}, reason="unflushed", via="api")
    audit.close()
    data = (tmp_path / "audit.log").read_bytes()
    (tmp_path / "audit.log").write_bytes(data[:-20])  # a crash in the middle of the last append
    head = json.loads((tmp_path / "audit.head").read_bytes())
    # close() flushed the fourth record, so the head names it: rewind the head to the third (as if the
    # crash had come before that flush).
    (tmp_path / "audit.head").write_text(
        json.dumps({"seq": 2, "hash": json.loads(_lines(tmp_path)[2])["hash"]})
    )
    assert head["seq"] == 3
    reopened = AuditLog(tmp_path)
    assert reopened.cut_bytes > 0
    assert reopened.record(actor="a", twin="t", changes={}, reason="after", via="api").seq == 3
    reopened.flush()
    assert reopened.verify().ok
    reopened.close()


def test_records_query_by_twin_actor_and_time(tmp_path: Path) -> None:
    audit = _fill(tmp_path, 6)
    assert [r.seq for r in audit.records("boiler-1")] == [1, 3, 5]
    assert [r.seq for r in audit.records(actor="alice")] == [0, 2, 4]
    assert [r.seq for r in audit.records(start_ms=T0 + 2000, end_ms=T0 + 4000)] == [2, 3]
    first = audit.records("boiler-0")[0]
    assert first.changes["setpoint"].old == 70.0 and first.changes["setpoint"].old_known
    assert not first.changes["mode"].old_known and first.changes["mode"].new == "manual"
    assert (first.via, first.reason, first.action) == ("api", "step 0", "write")
    audit.close()


def test_records_are_canonical_json_whatever_their_names_and_text(tmp_path: Path) -> None:
    """Each line is the canonical JSON verify() recomputes, also for names and text that look like the
    record's own keys, and for readings written straight from their lists (Readings)."""
    audit = AuditLog(tmp_path)
    tricky = ['"prev":', "changes", "prev", "hash", "ünï", 'a"b\\c', "\x00changes\x00", "\u2028", ""]
    values = [1.0, -0.0, 1e-300, 12345678.9, 3.0, 0.1, 2.5e20, 7.0, -1.5]
    readings = Readings(tricky, values)
    assert dict(readings) == {n: Change(new=v) for n, v in zip(tricky, values, strict=True)}
    for i, changes in enumerate([readings, dict(readings), {"x": Change(b"\x00", 1, True)}, {}]):
        audit.append(
            actor=tricky[i], twin=f"t{i}", changes=changes, reason='"prev":"x" \x00changes\x00', via="api"
        )
    audit.record(actor="a", twin='"changes":', changes=readings, reason="", via="cli", ref='"prev":')
    audit.flush()
    lines = _lines(tmp_path)
    for line in lines:
        assert (
            line
            == json.dumps(
                json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
            + b"\n"
        )
    assert (
        json.loads(lines[0])["changes"] == json.loads(lines[1])["changes"]
    )  # Readings as a dict writes them
    result = audit.verify()
    assert result.ok and result.records == 5, result.problems
    assert [Change.from_json(v) for v in json.loads(lines[0])["changes"].values()] == [
        Change(new=v) for _, v in sorted(zip(tricky, values, strict=True))
    ]


def test_readings_are_written_as_pythons_json_writes_them() -> None:
    """Readings are encoded natively; the record's hash covers those bytes and verify() recomputes them with
    Python's json, so the two must agree on every float (random bit patterns, the boundaries between repr's
    positional and exponent notations, integral values, subnormals, short binary fractions of large values,
    where two shortest strings can tie), on every name's escapes, and on which old values are written."""
    rng = np.random.default_rng(11)
    floats = rng.integers(0, 2**64, 200_000, dtype=np.uint64).view(np.float64)
    floats = floats[np.isfinite(floats)].tolist()
    floats += [float(f"{d}e{e}") for d in (1, 9.999, 1.5, 123456789) for e in range(-330, 310)]
    floats += [float(2**k) for k in range(-1074, 1024)] + [-0.0, 0.0, 5e-324, 1e16, 1e-4, 1e-5, 0.1]
    floats += rng.normal(0.0, 1e3, 50_000).round(3).tolist()
    floats += [float(k) for k in range(-1000, 1000)] + [float(2**53 + k) for k in range(-20, 20)]
    floats += [1533661600446129.25, -243239575756529.625]  # ties between two shortest strings
    # Short binary fractions, exact in few digits or ties in the 17th (positional: written in place)
    floats += [
        s * (k + f)
        for k in (10**14 + 7, 2**52 - 3, 10**15 + 3, 20, 0)
        for f in (0.5, 0.25, 0.375)
        for s in (1, -1)
    ]
    floats += (rng.integers(-(2**60), 2**60, 20_000) / 2.0 ** rng.integers(1, 30, 20_000)).tolist()
    floats += [float(-(2**53) + k) for k in range(-20, 20)] + [float(10**k) for k in range(10, 22)]
    names = [f"f{i}" for i in range(len(floats))]
    olds = [None if i % 3 == 0 else floats[-i - 1] for i in range(len(floats))]
    for chunk in range(0, len(floats), 4096):
        part = slice(chunk, chunk + 4096)
        readings = Readings(names[part], floats[part], olds=olds[part])
        raw = {n: {"new": v} if o is None else {"new": v, "old": o} for n, v, o in
               zip(names[part], floats[part], olds[part], strict=True)}  # fmt: skip
        assert readings.canonical() == json.dumps(
            raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    odd = ["".join(map(chr, range(0x30))), "\u2028\ud7ff\ue000\U0010ffff", 'é"\\/', ""]
    assert Readings(odd, [1.0] * 4).canonical() == json.dumps(
        {n: {"new": 1.0} for n in odd}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def test_a_line_is_its_record_in_canonical_json_whatever_its_text(tmp_path: Path) -> None:
    """Lines are spelt out key by key (not json.dumps of the record): each must still be the canonical JSON
    that verify() recomputes, with quotes, escapes, non-ASCII text and numeric readings with old values."""
    audit = AuditLog(tmp_path)
    audit.record(
        actor='ä "q" \\ \n\u2028',
        twin="t\x01é",
        changes={"x": Change(new="é", old=1.5, old_known=True)},
        reason="",
        via="api",
        ref="cmd-1",
        ts_ms=T0,
    )
    audit.append(
        actor="app",
        twin="b",
        changes=Readings(["z", "a"], [1.0, 2e-300], olds=[None, -3.5]),
        reason="r",
        via="api",
    )
    audit.flush()
    for line in _lines(tmp_path):
        assert (
            line.rstrip(b"\n")
            == json.dumps(
                json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
        )
    assert audit.verify().ok
    last = audit.records()[-1]
    assert last.changes == {"a": Change(new=2e-300, old=-3.5, old_known=True), "z": Change(new=1.0)}


def test_a_request_of_many_twins_is_one_record_read_as_one_per_twin(tmp_path: Path) -> None:
    """One line per request, canonical JSON (twin names sorted, tricky text too), verified by the chain;
    readers get each twin's part as its own record, with the request's seq, hash, actor and reason."""
    audit = AuditLog(tmp_path)
    audit.append(actor="a", twin="before", changes={}, reason="", via="api")
    parts = [
        ("z-twin", "write", Readings(["b", "a"], [1.0, 2.5], olds=[0.5, None])),
        ('t"\\é', "create", {"_model": Change(new="room"), "x": Change(new=1, old=2, old_known=True)}),
        ("m", "write", Readings([], [])),
    ]
    audit.append_request(actor="app", reason="why", via="api", twins=parts)  # type: ignore[arg-type]
    audit.append_request(actor="one", reason="", via="api", twins=[("solo", "delete", {})])
    audit.flush()
    lines = _lines(tmp_path)
    assert len(lines) == 3
    raw = json.loads(lines[1])
    assert (
        lines[1]
        == json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    )
    assert (raw["twin"], raw["changes"], sorted(raw["twins"])) == ("", {}, ["m", 't"\\é', "z-twin"])
    assert "twins" not in json.loads(lines[2])  # a single twin: the record as before
    result = audit.verify()
    assert result.ok and result.records == 3, result.problems
    every = audit.records()
    assert [(r.seq, r.twin, r.action) for r in every] == [
        (0, "before", "write"),
        (1, "m", "write"),
        (1, 't"\\é', "create"),
        (1, "z-twin", "write"),
        (2, "solo", "delete"),
    ]
    assert len({r.hash for r in every[1:4]}) == 1 and every[1].actor == "app" and every[1].reason == "why"
    (z,) = audit.records("z-twin")
    assert z.changes == {"a": Change(new=2.5), "b": Change(new=1.0, old=0.5, old_known=True)}
    (t,) = audit.records('t"\\é', actor="app")
    assert t.changes["x"] == Change(new=1, old=2, old_known=True)
    assert audit.records("nobody") == []
    with pytest.raises(ValueError, match="twice"):
        audit.append_request(actor="a", reason="", via="api", twins=[("d", "write", {}), ("d", "write", {})])
    audit.close()
