"""The manifest: which block files are live, and which segments are already folded into blocks.

A compaction (all its steps: segment -> block, expiry, downsampling, merge) writes its new blocks first,
then commits by replacing the manifest atomically, then deletes the files it superseded. A crash anywhere
leaves either the old or the new manifest: block files it does not list are leftovers and are deleted on open,
segments below ``segment_floor`` were already folded into blocks. So no reading is ever counted twice.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

from drsdtp.history.files import atomic_write, storage_error

__all__ = ["Manifest", "read_manifest", "write_manifest"]

_log = logging.getLogger(__name__)
VERSION = 1


@dataclass(frozen=True, slots=True)
class Manifest:
    blocks: tuple[int, ...] = ()
    next_block_id: int = 1
    segment_floor: int = 0  # segments with a lower sequence are already in blocks
    journal_mark: int = 0  # every journalled batch up to this number is in blocks (drsdtp.history.journal)


def write_manifest(path: Path, manifest: Manifest) -> None:
    body = json.dumps(
        {
            "version": VERSION,
            "blocks": list(manifest.blocks),
            "next_block_id": manifest.next_block_id,
            "segment_floor": manifest.segment_floor,
            "journal_mark": manifest.journal_mark,
        },
        separators=(",", ":"),
    ).encode()
    atomic_write(path, b"%08x %s\n" % (zlib.crc32(body), body))


def read_manifest(path: Path) -> Manifest | None:
    """The committed manifest; None if there is none yet or it is damaged (logged; the caller recovers)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Manifest()
    except OSError as exc:
        raise storage_error(f"cannot read the history manifest {path}", exc) from exc
    crc_hex, _, body = data.rstrip(b"\n").partition(b" ")
    try:
        if int(crc_hex, 16) != zlib.crc32(body):
            raise ValueError("checksum mismatch")
        raw = json.loads(body)
        if raw["version"] != VERSION:
            raise ValueError(f"unknown version {raw['version']}")
        return Manifest(
            tuple(int(b) for b in raw["blocks"]),
            int(raw["next_block_id"]),
            int(raw["segment_floor"]),
            int(raw.get("journal_mark", 0)),  # absent in manifests written before the journal
        )
    except (ValueError, KeyError, TypeError) as exc:
        _log.error("history manifest %s is damaged (%s)", path, exc)
        return None
