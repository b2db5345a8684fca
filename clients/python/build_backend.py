"""A PEP 517 backend that builds the ``drsdtp-client`` wheel from the repository's own sources.

The wheel holds exactly the client's files: ``drsdtp/__init__.py`` (made here: the version, from
Cargo.toml), ``drsdtp/errors.py`` (the project's exception tree, which the SDK's errors extend),
``drsdtp/protobytes.py`` (the hand-written wire bytes the SDK shares with the node), ``drsdtp/client/`` and
``drsdtp/wire/``. Its dependencies are read from the generated stubs, so they always
match the code generator's versions. Only the standard library is used: building needs no network.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
import zipfile
from pathlib import Path
from typing import Any

NAME = "drsdtp_client"
ROOT = Path(__file__).resolve().parents[2]
_FILES = ("drsdtp/errors.py", "drsdtp/protobytes.py", "drsdtp/py.typed")
_TREES = ("drsdtp/client", "drsdtp/wire")
_TAG = "py3-none-any"


def _version() -> str:
    """The release version, from its one home: the workspace's Cargo.toml."""
    with (ROOT / "Cargo.toml").open("rb") as f:
        version: str = tomllib.load(f)["workspace"]["package"]["version"]
    return version


def _init() -> bytes:
    """``drsdtp/__init__.py`` of this distribution: the node's reads the version of the ``drsdtp``
    distribution, which is not installed beside the client alone."""
    return (
        '"""drsdtp: the client SDK of drsdtp digital-twin nodes (the drsdtp-client distribution)."""\n\n'
        f'__version__ = "{_version()}"\n'
    ).encode()


def _requirements() -> list[str]:
    """grpcio and protobuf at least as new as the generator of drsdtp/wire (the stubs check at import)."""
    grpc_gen = (ROOT / "drsdtp/wire/v1/api_pb2_grpc.py").read_text()
    pb_gen = (ROOT / "drsdtp/wire/v1/api_pb2.py").read_text()
    grpc_version = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", grpc_gen)
    pb_version = re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", pb_gen)
    assert grpc_version and pb_version, "the generated stubs name no generator versions"
    return [f"grpcio>={grpc_version[1]}", f"protobuf>={'.'.join(pb_version.groups())}"]


def _sources() -> list[Path]:
    files = [ROOT / f for f in _FILES]
    for tree in _TREES:
        files += sorted(p for p in (ROOT / tree).rglob("*") if p.suffix in (".py", ".pyi") and p.is_file())
    return files


def _metadata() -> str:
    lines = [
        "Metadata-Version: 2.1",
        "Name: drsdtp-client",
        f"Version: {_version()}",
        "Summary: Client SDK for the application API of drsdtp digital-twin nodes",
        "License: Apache-2.0",
        "Requires-Python: >=3.11",
        *(f"Requires-Dist: {r}" for r in _requirements()),
    ]
    return "\n".join(lines) + "\n"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(
    wheel_directory: str, config_settings: dict[str, Any] | None = None, metadata_directory: str | None = None
) -> str:
    version = _version()
    dist_info = f"{NAME}-{version}.dist-info"
    filename = f"{NAME}-{version}-{_TAG}.whl"
    entries: list[tuple[str, bytes]] = [("drsdtp/__init__.py", _init())]
    entries += [(p.relative_to(ROOT).as_posix(), p.read_bytes()) for p in _sources()]
    entries.append((f"{dist_info}/METADATA", _metadata().encode()))
    wheel = f"Wheel-Version: 1.0\nGenerator: drsdtp build_backend\nRoot-Is-Purelib: true\nTag: {_TAG}\n"
    entries.append((f"{dist_info}/WHEEL", wheel.encode()))
    record = [_record_line(name, data) for name, data in entries] + [f"{dist_info}/RECORD,,"]
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    with zipfile.ZipFile(Path(wheel_directory) / filename, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return filename


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return []


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    dist_info = Path(metadata_directory) / f"{NAME}-{_version()}.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(_metadata())
    return dist_info.name
