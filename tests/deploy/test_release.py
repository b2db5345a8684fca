"""`make dist` (tools/release.sh): the wheel and, separately, the sdist install into fresh venvs, offline
(dependencies from the wheelhouse `make setup` downloads), and each runs a node.

The sdist is built from source in its venv (maturin and the Rust toolchain, the shared CARGO_TARGET_DIR
when set), as on a device without a prebuilt wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import VERSION, WHEELHOUSE
from tests.deploy.installed import check_installed_command, clean_env

REPO = Path(__file__).resolve().parents[2]

# Building the artifacts (once per session) waits for the shared Rust build cache.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1800)]


def sh(
    *args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, (
        f"$ {' '.join(map(str, args))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def fresh_venv(root: Path) -> Path:
    sh(sys.executable, "-m", "venv", root)
    return root / "bin"


def pip_install(bin_dir: Path, *what: str | Path, env: dict[str, str] | None = None) -> None:
    pip: list[str | Path] = [
        bin_dir / "python",
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--find-links",
        WHEELHOUSE,
    ]
    sh(*pip, *what, env=env)


def test_dist_holds_wheel_sdist_and_checksums(dist: Path, tmp_path: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    wheels = [n for n in names if n.startswith(f"drsdtp-{VERSION}-") and n.endswith(".whl")]
    assert len(wheels) == 1, names
    assert f"drsdtp-{VERSION}.tar.gz" in names
    sums = (dist / "SHA256SUMS").read_text().split("\n")
    listed = sorted(line.split()[1] for line in sums if line)
    assert listed == sorted(n for n in names if n != "SHA256SUMS")
    sh("sha256sum", "--check", "--strict", "SHA256SUMS", cwd=dist)
    tampered = tmp_path / "tampered"
    shutil.copytree(dist, tampered)
    (tampered / wheels[0]).write_bytes((tampered / wheels[0]).read_bytes() + b"\0")  # the check can fail
    assert subprocess.run(
        ["sha256sum", "--check", "SHA256SUMS"], cwd=tampered, capture_output=True
    ).returncode
    if (REPO / "clients" / "python" / "pyproject.toml").is_file():
        assert any(n.endswith(".whl") and not n.startswith("drsdtp-") for n in names), names
    else:
        print("no clients/python/pyproject.toml on this branch: no SDK wheel to build")


def test_wheel_installs_and_runs_a_node_in_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    (wheel,) = dist.glob(f"drsdtp-{VERSION}-*.whl")
    pip_install(bin_dir, f"{wheel}[all]")
    where = sh(bin_dir / "python", "-c", "import drsdtp, drsdtp._core; print(drsdtp.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout
    assert check_installed_command(bin_dir / "drsdtp", tmp_path) == f"drsdtp {VERSION}"


def test_sdist_builds_installs_and_runs_a_node_in_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    pip_install(bin_dir, "maturin")
    # No build isolation: the build backend comes from the venv (offline); cargo may not fetch either.
    cargo = {
        "CARGO_NET_OFFLINE": "true",
        "PATH": f"{Path.home() / '.cargo' / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    pip_install(bin_dir, "--no-build-isolation", f"{dist / f'drsdtp-{VERSION}.tar.gz'}[all]", env=cargo)
    where = sh(bin_dir / "python", "-c", "import drsdtp._core; print(drsdtp._core.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout
    assert check_installed_command(bin_dir / "drsdtp", tmp_path) == f"drsdtp {VERSION}"
