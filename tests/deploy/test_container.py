"""deploy/container/Containerfile, verified statically: this machine has no container engine, and an image
from Debian's packages cannot run the Containerfile's build stage (bookworm's Rust is older than the
workspace's rust-version). What the image's runtime stage does (the venv at /opt/drsdtp, a numeric non-root
user, a read-only root, the data volume, the HEALTHCHECK command) is run for real in the install test's
throwaway root (tests/deploy/test_install.py::test_the_image_runtime_contract), and in an image built from
Debian's packages with the host's wheel (deploy/container/build-debian.sh, tests/deploy/test_image.py, behind
DRSDTP_TEST_IMAGE=1)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from drsdtp.config import parse_config

REPO = Path(__file__).resolve().parents[2]
CONTAINER = REPO / "deploy" / "container"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n\s*", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


CONTAINERFILE = instructions((CONTAINER / "Containerfile").read_text())


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for word, rest in CONTAINERFILE:
        if word == "FROM":
            found.append([])
        found[-1].append((word, rest))
    return found


def runtime(word: str) -> list[str]:
    return [rest for w, rest in stages()[-1] if w == word]


def healthcheck_command() -> list[str]:
    (check,) = runtime("HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    assert isinstance(command, list)
    return [str(c) for c in command]


def image_config() -> dict[str, object]:
    return tomllib.loads((CONTAINER / "drsdtp.toml").read_text())


def test_multi_stage_build_then_slim_runtime() -> None:
    build, run = stages()
    assert build[0][1].endswith(" AS build")
    assert "maturin build --release" in " ".join(r for w, r in build if w == "RUN")
    assert run[0][1].startswith("docker.io/library/debian:") and "slim" in run[0][1]
    # Both stages on the same Debian release: the venv's interpreter path and ABI match.
    assert build[0][1].split()[0].split("-")[-1] == run[0][1].split(":")[1].split("-")[0] == "bookworm"
    assert next(r for w, r in run if w == "COPY").startswith("--from=build /opt/drsdtp /opt/drsdtp")
    assert not any("cargo" in r or "rust" in r for w, r in run if w == "RUN")


def test_runs_as_a_numeric_non_root_user_with_data_on_a_volume() -> None:
    (user,) = runtime("USER")
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0 and gid != 0
    # The k8s manifests run the pod as the same user.
    daemonset = (REPO / "deploy" / "kubeedge" / "daemonset.yaml").read_text()
    assert f"runAsUser: {uid}" in daemonset and f"runAsGroup: {gid}" in daemonset
    (volume,) = runtime("VOLUME")
    config = parse_config(image_config(), env={})
    assert json.loads(volume) == [str(config.data_dir)]
    assert any(f"-o {uid} -g {gid} -m 0750 {config.data_dir}" in r for r in runtime("RUN"))


def test_read_only_root_needs_no_writes_outside_the_volume() -> None:
    env = " ".join(runtime("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "DRSDTP_CONFIG=/etc/drsdtp/drsdtp.toml" in env


def test_healthcheck_probes_readyz_on_the_metrics_port() -> None:
    command = healthcheck_command()
    config = parse_config(image_config(), env={})
    assert command[0] == "/opt/drsdtp/bin/python"
    assert f"http://127.0.0.1:{config.listen.metrics.port}/readyz" in command[-1]
    (check,) = runtime("HEALTHCHECK")
    assert "--start-period=" in check  # a long log replay is not a failed container


def test_image_config_validates_and_exposes_its_ports() -> None:
    config = parse_config(image_config(), env={"DRSDTP_NODE_ID": "edge-07"})
    assert config.node_id == "edge-07"
    exposed = {int(p) for e in runtime("EXPOSE") for p in e.split()}
    assert exposed == {config.listen.peer.port, config.listen.metrics.port}
    assert config.listen.api.host == "127.0.0.1"  # plaintext API stays on loopback
    assert runtime("ENTRYPOINT") == ['["/opt/drsdtp/bin/drsdtp"]']
    assert json.loads(runtime("CMD")[0]) == ["run", "--config", "/etc/drsdtp/drsdtp.toml"]


def test_build_context_excludes_build_outputs_and_holds_what_is_copied() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "target", "dist", ".stamps"} <= set(ignored)
    sources = [s for w, r in stages()[0] if w == "COPY" for s in r.split()[:-1]]
    assert "crdt_core" in sources and "drsdtp" in sources
    for source in sources:
        assert (REPO / source).exists(), source
