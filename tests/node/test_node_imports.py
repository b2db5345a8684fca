"""A node imports the heavy libraries only for the features that need them (issue 13: idle RSS): aiohttp
for the HTTP face (~11 MB), PyJWT and cryptography for api.oidc (~9 MB)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[2]
HEAVY = ("aiohttp", "jwt", "cryptography")

# A node started and stopped in a fresh interpreter, with the CLI loaded as `drsdtp run` loads it; prints
# which heavy modules were imported.
PROGRAM = """
import asyncio, json, sys
import drsdtp.cli
from drsdtp.config import parse_config
from drsdtp.node.node import Node

async def main():
    listen = {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"}
    extra = json.loads(sys.argv[2])
    config = parse_config({"node_id": "imports", "data_dir": sys.argv[1], "listen": listen, **extra})
    async with Node(config):
        pass

asyncio.run(main())
print(json.dumps(sorted(m for m in json.loads(sys.argv[3]) if m in sys.modules)))
"""


def heavy_imports(data_dir: pathlib.Path, extra: dict[str, object]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(data_dir), json.dumps(extra), json.dumps(HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    found: list[str] = json.loads(out.strip().splitlines()[-1])
    return found


def test_a_plain_node_imports_neither_aiohttp_nor_jwt(tmp_path: pathlib.Path) -> None:
    assert heavy_imports(tmp_path, {}) == []


def test_the_http_face_brings_aiohttp(tmp_path: pathlib.Path) -> None:
    found = heavy_imports(tmp_path, {"api": {"http": {"listen": "127.0.0.1:0"}}})
    assert "aiohttp" in found
