"""The client side of the application API (no daemon imports: grpc, protobuf and the generated stubs).

A seed for the client SDK: :func:`connect` and :func:`field_to_python`, which the CLI and tests use today.
"""

from drsdtp.client.channel import connect, field_to_python

__all__ = ["connect", "field_to_python"]
