"""The series catalog: durable (twin, field) -> series id, so segments and blocks store 4-byte ids.

Engine intern ids are per process; these ids are the store's own and survive restarts. File: one line per
series, ``crc32-hex json``, append-only. A new line is fsynced by the store's ``flush`` before the segment
that uses it, so every flushed reading has a flushed name; a torn last line is cut on open.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from json.encoder import encode_basestring as _string  # a JSON string literal, as json.dumps writes it
from pathlib import Path

from drsdtp.history.files import storage_error

__all__ = ["LOST_TWIN", "Catalog"]

_log = logging.getLogger(__name__)

# Twin name of placeholder entries: ids that blocks use but a damaged catalog lost. Reserving them keeps a
# new series from inheriting another one's readings.
LOST_TWIN = "\x00lost"


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: dict[tuple[str, str], int] = {}
        self.names: list[tuple[str, str]] = []
        self.cut_bytes = 0
        self._load()
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise storage_error(f"cannot open the history catalog {path}", exc) from exc
        self._dirty = False

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise storage_error(f"cannot read the history catalog {self.path}", exc) from exc
        offset = 0
        for line in data.splitlines(keepends=True):
            entry = _parse(line) if line.endswith(b"\n") else None
            if entry is None or entry[0] != len(self.names):
                break
            self._remember(entry[1], entry[2])
            offset += len(line)
        if offset < len(data):
            self.cut_bytes = len(data) - offset
            _log.warning(
                "history catalog %s: torn or corrupt line at byte %d; cut %d bytes",
                self.path,
                offset,
                self.cut_bytes,
            )
            try:
                os.truncate(self.path, offset)
            except OSError as exc:
                raise storage_error(f"cannot cut the torn tail of {self.path}", exc) from exc

    def _remember(self, twin: str, field: str) -> int:
        series = len(self.names)
        self.names.append((twin, field))
        self.ids[(twin, field)] = series
        return series

    def define(self, keys: list[tuple[str, str]]) -> list[int]:
        """Ids of (twin, field) keys, defining (and appending, not yet fsynced) the new ones."""
        out: list[int] = []
        lines: list[bytes] = []
        for key in keys:
            series = self.ids.get(key)
            if series is None:
                series = self._remember(*key)
                # The bytes json.dumps of {"id", "twin", "field"} gives (ensure_ascii=False), at a tenth of
                # its cost: a replica catching up defines every series it receives.
                text = f'{{"id": {series}, "twin": {_string(key[0])}, "field": {_string(key[1])}}}'
                body = text.encode()
                lines.append(b"%08x %s\n" % (zlib.crc32(body), body))
            out.append(series)
        if lines:
            data = b"".join(lines)
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except OSError as exc:
                raise storage_error(f"cannot append to the history catalog {self.path}", exc) from exc
            self._dirty = True
        return out

    def reserve(self, count: int) -> None:
        """Make sure ids below ``count`` are taken (placeholders named ``LOST_TWIN``)."""
        missing = range(len(self.names), count)
        if missing:
            _log.error(
                "history catalog %s lost the names of series %d..%d", self.path, missing[0], missing[-1]
            )
            self.define([(LOST_TWIN, str(i)) for i in missing])
            self.sync()

    def sync(self) -> None:
        if self._dirty:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise storage_error(f"cannot fsync the history catalog {self.path}", exc) from exc
            self._dirty = False

    def close(self) -> None:
        os.close(self._fd)


def _parse(line: bytes) -> tuple[int, str, str] | None:
    crc_hex, _, body = line.rstrip(b"\n").partition(b" ")
    try:
        if int(crc_hex, 16) != zlib.crc32(body):
            return None
        entry = json.loads(body)
        return int(entry["id"]), str(entry["twin"]), str(entry["field"])
    except (ValueError, KeyError, TypeError):
        return None
