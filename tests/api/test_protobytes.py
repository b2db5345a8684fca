"""The hand-written wire bytes (drsdtp.protobytes) are protobuf's own: a varint for every size, a tag read
from a descriptor, and a Watch message joined from its changes' cached bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drsdtp.api.services.watch import _join
from drsdtp.protobytes import LENGTH, VARINT, length_prefixed, tag, varint
from drsdtp.wire.v1 import api_pb2


@given(st.integers(min_value=1, max_value=2**64 - 1))
def test_a_varint_is_protobufs(n: int) -> None:
    # A uint64 field holding n (0 is not written) is its one-byte tag and n's varint.
    assert api_pb2.StatusReply(twins=n).SerializeToString() == tag(
        api_pb2.StatusReply, "twins", VARINT
    ) + varint(n)


def test_a_tag_is_read_from_the_descriptor() -> None:
    number = api_pb2.TwinChange.DESCRIPTOR.fields_by_name["changes"].number
    assert tag(api_pb2.TwinChange, "changes", LENGTH) == varint(number << 3 | LENGTH)
    assert length_prefixed(b"x" * 300) == b"\xac\x02" + b"x" * 300


@given(st.lists(st.tuples(st.text(max_size=300), st.floats(allow_nan=False)), min_size=1, max_size=8))
def test_a_joined_watch_message_is_protobufs(changes: list[tuple[str, float]]) -> None:
    pbs = [
        api_pb2.TwinChange(
            twin=api_pb2.Twin(twin_id=t, fields=[api_pb2.FieldValue(name="v", f64=v)]),
            origin="local",
            cursor=i + 1,
        )
        for i, (t, v) in enumerate(changes)
    ]
    group = [(pb.SerializeToString(), f"change:{i + 1}", i + 1) for i, pb in enumerate(pbs)]
    data, position, cursor = _join(group, "proto")
    expected = pbs[0] if len(pbs) == 1 else api_pb2.TwinChange(changes=pbs)
    assert data == expected.SerializeToString()
    assert (position, cursor) == (f"change:{len(pbs)}", len(pbs))
