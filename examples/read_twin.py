"""Read a twin with the blocking client: its typed fields, version and any desired-value conflict.

python examples/read_twin.py [HOST:PORT]      (default: $DRSDTP_API, else 127.0.0.1:7401)
"""

from __future__ import annotations

import os
import sys

from drsdtp.client import Client, NotFoundError

TARGET = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DRSDTP_API", "127.0.0.1:7401")

with Client(TARGET, timeout=5) as client:
    status = client.status()
    print(f"node {status.node_id} ({status.version}): {status.twins} twins, ready: {status.ready}")
    try:
        twin = client.get("room-example")
    except NotFoundError:  # also a KeyError
        client.create("room-example", model="room", values={"temp_1": 20.5})
        twin = client.get("room-example")
    print(f"{twin.twin_id} at version {twin.version}")
    for name, field in sorted(twin.fields.items()):
        print(f"  {name} = {field.value!r} ({field.kind}, written by {field.writer_node or field.writer})")
    for name, values in twin.conflicts.items():
        print(f"  conflict on {name}: {values}")
