"""The release artifacts, built once per session by the one command that makes them (tools/release.sh);
``DRSDTP_TEST_DIST=DIR`` reuses what it made in DIR."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.installed import clean_env

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / ".stamps" / "wheelhouse"
VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not WHEELHOUSE.is_dir():
        pytest.skip(
            f"no wheelhouse at {WHEELHOUSE}: run `make setup` (it downloads the runtime dependencies)"
        )
    prebuilt = os.environ.get("DRSDTP_TEST_DIST")  # a dist/ made by tools/release.sh of this checkout
    if prebuilt:
        return Path(prebuilt)
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [REPO / "tools" / "release.sh", out],
        cwd=REPO,
        env=clean_env(PY=sys.executable),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob(f"drsdtp-{VERSION}-*.whl")
    return found
