"""The SDK installs alone: importing it loads no daemon module, and its pure-Python wheel
(clients/python) installed into a fresh virtualenv, next to grpcio and protobuf only, runs an example
against a real node."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import drsdtp  # the node's package: its version is the release's, which the wheel must carry
from tests.api.nodes import ApiNode

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ("drsdtp", "drsdtp.errors", "drsdtp.protobytes", "drsdtp.client", "drsdtp.wire")


def test_importing_the_client_loads_no_daemon_module() -> None:
    probe = (
        "import sys\n"
        "import drsdtp.client\n"
        "from drsdtp.client import AsyncClient, Client\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('drsdtp'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    loaded = result.stdout.split()
    outside = [m for m in loaded if not any(m == a or m.startswith(f"{a}.") for a in ALLOWED)]
    assert "drsdtp.client.aio" in loaded and not outside, outside
    assert "drsdtp._core" not in loaded


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def test_the_pure_wheel_installs_alone_and_runs_an_example(tmp_path: Path, node: ApiNode) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
         str(ROOT / "clients" / "python")],
        check=True,
        timeout=120,
    )  # fmt: skip
    (wheel,) = dist.glob("drsdtp_client-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    code = [n for n in names if not n.startswith("drsdtp_client-")]
    assert all(n.endswith((".py", ".pyi", "py.typed")) for n in code), code  # no native module
    outside = [n for n in code if not n.startswith(("drsdtp/client/", "drsdtp/wire/"))]
    assert sorted(outside) == [
        "drsdtp/__init__.py",
        "drsdtp/errors.py",
        "drsdtp/protobytes.py",
        "drsdtp/py.typed",
    ]
    requires = sorted(
        line.split(": ", 1)[1].split(">=")[0]
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist")
    )
    assert requires == ["grpcio", "protobuf"]

    # A fresh virtualenv: the wheel installed by pip; grpcio and protobuf (already installed here: no
    # network) made visible through a .pth of links to just those (and what grpcio itself requires).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
         str(wheel)],
        check=True,
        timeout=120,
    )  # fmt: skip
    ours = _site_packages(Path(sys.executable))
    deps = tmp_path / "deps"
    deps.mkdir()
    # typing_extensions: grpcio's own requirement.
    patterns = ("grpc", "grpcio-*.dist-info", "google", "protobuf-*.dist-info", "typing_extensions*")
    for pattern in patterns:
        for path in ours.glob(pattern):
            (deps / path.name).symlink_to(path)
    (_site_packages(python) / "deps.pth").write_text(f"{deps}\n")
    check = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr  # its requirements are met by those two

    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "DRSDTP_API": f"127.0.0.1:{node.api_port}"}
    lonely = subprocess.run(
        [str(python), "-c", "import drsdtp._core"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert lonely.returncode != 0 and "No module named 'drsdtp._core'" in lonely.stderr
    example = subprocess.run(
        [str(python), str(ROOT / "examples" / "read_twin.py")],
        cwd=tmp_path,  # not the checkout: the installed wheel is the only drsdtp
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert example.returncode == 0, example.stderr
    assert "node node-sdk" in example.stdout and "room-example at version" in example.stdout
    shown = subprocess.run(
        [str(python), "-c", "import drsdtp; print(drsdtp.__version__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.stdout.strip() == drsdtp.__version__ and f"drsdtp_client-{drsdtp.__version__}-" in wheel.name
