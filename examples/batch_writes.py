"""Batch writes: many twins in one request (validated whole, applied in one commit), retried safely with an
idempotency key; and bulk numeric readings in columns, the fast path.

    python examples/batch_writes.py [HOST:PORT]
"""

from __future__ import annotations

import os
import sys

from drsdtp.client import Client, Columns, Create, TwinWrite, new_idempotency_key, report

TARGET = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DRSDTP_API", "127.0.0.1:7401")
TWINS = [f"room-batch-{i}" for i in range(20)]

with Client(TARGET, timeout=10) as client:
    existing = {t.twin_id for t in client.list_twins(prefix="room-batch-", limit=1000).twins}
    creates = [TwinWrite(t, create=Create(model="room")) for t in TWINS if t not in existing]
    if creates:
        client.write(creates)

    # One request for every twin; the key makes a retry (after a timeout, a lost reply) apply nothing twice.
    key = new_idempotency_key()
    batch = [
        TwinWrite(t, (report("temp_1", 20.0 + i / 10), report("humidity", 45.0))) for i, t in enumerate(TWINS)
    ]
    first = client.write(batch, idempotency_key=key)
    again = client.write(batch, idempotency_key=key)
    print(f"wrote {len(first.versions)} twins; the retry was a repeat: {again.repeated}")

    # Bulk readings: 20 twins x 50 readings of temp_2 in columns.
    rows = [(t, "temp_2", 15.0 + (n % 10) / 10) for n in range(50) for t in TWINS]
    result = client.write([], columns=Columns.from_rows(rows))
    print(f"wrote {len(rows)} readings in columns to {len(result.versions)} twins")
    print(f"{TWINS[0]}: temp_2 = {client.get(TWINS[0], ['temp_2'])['temp_2']!r}")
