"""Write idempotency keys: a retry of a write with the same key gets the original reply and applies nothing,
also after the node restarted.

Bounds: the newest ``max_keys`` keys (``limits.api_idempotency_keys``), none older than ``max_age_s``
(``limits.api_idempotency_s``). In memory a key costs its reply (a few dozen bytes per twin written) and a
digest of its request; on disk each record also holds the write's delta, so the file is bounded by
``2 × max_keys`` records of at most one request's size (compacted to the live ones past that).

Crash safety. Each record holds the write's delta and is appended (one ``write``, no fsync yet) in the same
step of the event loop that applies the write and appends it to the write-ahead log; the reply waits for
both the log's group commit and this file's fsync. On open, every record's delta is merged again (a merge is
idempotent: a write the log already held changes nothing), so a write is never remembered as done without
being applied. The one window left: a power cut after the log's fsync and before this file's, a write is
durable but its key is not, and a retry applies it once more (a process crash or SIGKILL loses neither: both
were written before the reply). Carrying the record in the log itself (an aux record in the same commit)
closes it once the log hands such records to the API.

Record: ``crc32 u32 | length u32 | payload``, payload ``at_ms i64 | key_len u16 | key | digest[32] |
reply_len u32 | reply | delta_len u32 | delta`` (little endian). A torn or corrupt tail is cut on open.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from drsdtp.history.files import atomic_write, fsync_dir, storage_error

__all__ = ["MAX_KEY_BYTES", "IdempotencyStore", "Remembered"]

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 128
_HEAD = struct.Struct("<II")
_TS_KEY = struct.Struct("<qH")
_LEN = struct.Struct("<I")
_DIGEST = 32
KEEP_DELTA_MS = 60_000


@dataclass(frozen=True, slots=True)
class Remembered:
    digest: bytes  # of the request, so the same key with another request is told apart
    reply: bytes
    at_ms: int


def _encode(key: bytes, entry: Remembered, delta: bytes) -> bytes:
    payload = b"".join(
        (
            _TS_KEY.pack(entry.at_ms, len(key)),
            key,
            entry.digest,
            _LEN.pack(len(entry.reply)),
            entry.reply,
            _LEN.pack(len(delta)),
            delta,
        )
    )
    return _HEAD.pack(zlib.crc32(payload), len(payload)) + payload


def _decode(payload: bytes) -> tuple[bytes, Remembered, bytes]:
    at_ms, key_len = _TS_KEY.unpack_from(payload, 0)
    pos = _TS_KEY.size
    key = payload[pos : pos + key_len]
    pos += key_len
    digest = payload[pos : pos + _DIGEST]
    pos += _DIGEST
    (reply_len,) = _LEN.unpack_from(payload, pos)
    pos += _LEN.size
    reply = payload[pos : pos + reply_len]
    pos += reply_len
    (delta_len,) = _LEN.unpack_from(payload, pos)
    pos += _LEN.size
    delta = payload[pos : pos + delta_len]
    if len(delta) != delta_len or len(digest) != _DIGEST:
        raise ValueError("short record")
    return key, Remembered(digest, reply, at_ms), delta


def _records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(end offset, payload) of each whole, intact record; stops at the first torn or corrupt one."""
    pos = 0
    while pos + _HEAD.size <= len(data):
        crc, length = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        payload = data[pos + _HEAD.size : end]
        if end > len(data) or zlib.crc32(payload) != crc:
            return
        yield end, payload
        pos = end


class IdempotencyStore:
    def __init__(
        self,
        path: Path,
        *,
        max_keys: int,
        max_age_s: float,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.path = path
        self.max_keys = max_keys
        self.max_age_ms = int(max_age_s * 1000)
        self._clock_ms = clock_ms
        self._keys: collections.OrderedDict[bytes, Remembered] = collections.OrderedDict()
        self._fd: int | None = None
        self._on_file = 0  # records in the file, live or not
        self._flushing: asyncio.Future[None] | None = None
        self._dirty = False
        self.cut_bytes = 0  # a torn or corrupt tail cut on open
        self.repeats = 0  # requests answered from a key (counted by the write service)

    def __len__(self) -> int:
        return len(self._keys)

    def open(self, merge: Callable[[bytes], None]) -> None:
        """Loads the file, hands every retained record's delta to ``merge`` (oldest first), cuts a damaged
        tail and opens the file for appending."""
        try:
            data = self.path.read_bytes() if self.path.exists() else b""
        except OSError as exc:
            raise storage_error(f"cannot read {self.path}", exc) from exc
        good = 0
        oldest = self._clock_ms() - self.max_age_ms
        for end, payload in _records(data):
            good = end
            self._on_file += 1
            try:
                key, entry, delta = _decode(payload)
            except (ValueError, struct.error):
                continue  # an intact frame with a bad body: only a bug writes one; skip it
            if delta:
                merge(delta)
            if entry.at_ms >= oldest:
                self._keys[key] = entry
                self._keys.move_to_end(key)
        self.cut_bytes = len(data) - good
        if self.cut_bytes:
            log.warning("idempotency keys: cut a damaged tail of %d bytes from %s", self.cut_bytes, self.path)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        # Keeps every delta: the caller commits what the merges changed only after this returns.
        self._rewrite(data[:good], keep_deltas_from_ms=0)  # drops what was cut or expired

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None

    def get(self, key: str) -> Remembered | None:
        entry = self._keys.get(key.encode())
        if entry is not None and entry.at_ms < self._clock_ms() - self.max_age_ms:
            return None
        return entry

    def remember(self, key: str, digest: bytes, reply: bytes, delta: bytes) -> None:
        """Appends the record now (one write: a process crash after it loses nothing); :meth:`flush` makes
        it durable. Call it in the same loop step that applies the write."""
        raw = key.encode()
        entry = Remembered(digest, reply, self._clock_ms())
        self._keys[raw] = entry
        self._keys.move_to_end(raw)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        if self._on_file >= 2 * self.max_keys + 64:
            self._compact()
        self._append(_encode(raw, entry, delta))

    async def flush(self) -> None:
        """Returns once every record appended before the call is on disk (one fsync for those waiting)."""
        self._dirty = True
        while self._dirty:
            if self._flushing is None:
                self._dirty = False
                self._flushing = asyncio.ensure_future(asyncio.to_thread(self._fsync))
                try:
                    await asyncio.shield(self._flushing)
                finally:
                    self._flushing = None
                return
            await asyncio.shield(self._flushing)  # then fsync again for what came after it started

    def _fsync(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise storage_error(f"cannot fsync {self.path}", exc) from exc

    def _append(self, record: bytes) -> None:
        assert self._fd is not None, "open() first"
        try:
            written = os.write(self._fd, record)
            if written != len(record):
                raise OSError(f"short write ({written} of {len(record)} bytes)")
        except OSError as exc:
            raise storage_error(f"cannot append to {self.path}", exc) from exc
        self._on_file += 1

    def _compact(self) -> None:
        """Rewrites the file with the live keys only. A delta older than :data:`KEEP_DELTA_MS` is in the
        write-ahead log by then (or the log failed, and the node acknowledges nothing more until a restart
        merges the file again), so only younger ones are kept."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise storage_error(f"cannot read {self.path}", exc) from exc
        self._rewrite(data, keep_deltas_from_ms=self._clock_ms() - KEEP_DELTA_MS)

    def _rewrite(self, data: bytes, *, keep_deltas_from_ms: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        records = []
        for _, payload in _records(data):
            try:
                key, entry, delta = _decode(payload)
            except (ValueError, struct.error):
                continue
            if self._keys.get(key) == entry:  # live, and its latest record
                records.append(_encode(key, entry, delta if entry.at_ms >= keep_deltas_from_ms else b""))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, b"".join(records))
        self._on_file = len(records)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise storage_error(f"cannot open {self.path}", exc) from exc
        fsync_dir(self.path.parent)
