"""Small durable-file helpers shared by the history, snapshot and audit stores."""

from __future__ import annotations

import os
from pathlib import Path

from drsdtp.errors import StorageError

__all__ = ["atomic_write", "fsync_dir", "read_exact", "storage_error"]


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (the directory entry itself must reach the disk)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise storage_error(f"cannot write {path}", exc) from exc


def read_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``, or fewer only at end of file."""
    parts: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


def storage_error(message: str, exc: OSError | None = None) -> StorageError:
    """A StorageError carrying the errno of the OSError behind it (callers may test ``errno``)."""
    if exc is None or exc.errno is None:
        return StorageError(message if exc is None else f"{message}: {exc}")
    return StorageError(exc.errno, f"{message}: {exc.strerror or exc}")
