"""The SDK's typed twin read from a message: fields decoded when read, the same values and equality as a
twin built field by field."""

from __future__ import annotations

import dataclasses

import pytest

from drsdtp.client.types import Change, Field, Twin
from drsdtp.wire.v1 import api_pb2


def message(extra: int = 0) -> api_pb2.Twin:
    fields = [
        api_pb2.FieldValue(name="temp", f64=21.5, stamp=7 << 16, writer=2, writer_node="n2"),
        api_pb2.FieldValue(name="tags", set=api_pb2.SetValue(elements=["b", "a"])),
        api_pb2.FieldValue(
            name="fan.desired",
            desired=api_pb2.DesiredValues(values=[api_pb2.FieldValue(i64=1), api_pb2.FieldValue(i64=2)]),
        ),
        *(api_pb2.FieldValue(name=f"x{i}", i64=i) for i in range(extra)),
    ]
    return api_pb2.Twin(twin_id="t", version=9, fields=fields)


def eager(t: api_pb2.Twin) -> Twin:
    return Twin(t.twin_id, t.version, {f.name: Field.from_pb(f) for f in t.fields})


def test_a_twin_from_a_message_reads_as_one_built_field_by_field() -> None:
    for extra in (0, 12):  # a few fields (scanned) and many (indexed)
        pb = message(extra)
        lazy, built = Twin.from_pb(pb), eager(pb)
        assert lazy == built and dict(lazy.fields) == dict(built.fields)
        assert lazy.get("temp") == 21.5 and lazy["tags"] == ("a", "b") and lazy.get("nope", 3) == 3
        assert lazy.fields["temp"].writer_node == "n2" and lazy.fields["temp"].time_ms == 7
        assert lazy.desired("fan") == (1, 2) and lazy.conflicts == {"fan": (1, 2)}
        assert list(lazy.fields) == [f.name for f in pb.fields] and len(lazy.fields) == 3 + extra
        assert "tags" in lazy.fields and "nope" not in lazy.fields
        assert lazy.values == built.values


def test_a_watch_change_reads_its_value_without_decoding_the_rest() -> None:
    pb = api_pb2.TwinChange(twin=message(), origin="local", cursor=5)
    change = Change.from_pb(pb)
    assert (change.origin, change.cursor, change.twin.twin_id) == ("local", 5, "t")
    assert change.twin.get("temp") == 21.5
    assert change == Change(eager(pb.twin), "local", 5)
    # Built without its __init__, still the frozen dataclass it says it is.
    assert dataclasses.replace(change, cursor=6) == Change(eager(pb.twin), "local", 6)
    assert repr(change).startswith("Change(twin=Twin(twin_id='t', version=9")
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.twin.version = 10  # type: ignore[misc]


def test_a_value_read_again_is_the_same_and_a_missing_field_gives_each_read_its_default() -> None:
    # The watches sharing a stream read the same Change: the first read decodes, the others reuse it.
    for extra in (0, 12):
        twin = Change.from_pb(api_pb2.TwinChange(twin=message(extra), origin="local", cursor=5)).twin
        for _ in range(3):
            assert twin.get("temp") == 21.5 and twin.get("tags") == ("a", "b")
            assert twin.get("fan.desired") == (1, 2)
            assert twin.get("nope") is None and twin.get("nope", 3) == 3 and twin.get("nope", "x") == "x"
        assert twin["temp"] == 21.5 and twin.fields["temp"].writer_node == "n2"
        with pytest.raises(KeyError):
            twin["nope"]
