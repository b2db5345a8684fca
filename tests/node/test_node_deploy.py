"""deploy/: the systemd unit passes systemd-analyze, the KubeEdge manifests pass offline schema validation,
and the two agree with the config schema (paths, ports, deadlines)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from drsdtp.config import load_config, parse_config
from drsdtp.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"
KUBEEDGE = REPO / "deploy" / "kubeedge"
EXAMPLE = REPO / "deploy" / "drsdtp.example.toml"
UNIT = (SYSTEMD / "drsdtp.service").read_text()
INSTALLED_BINARY = "/usr/local/bin/drsdtp"
# KubeEdge 1.20 supports Kubernetes 1.30, so the manifests are validated against that version.
K8S_VERSION = "1.30.0"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)


# --- systemd ----------------------------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values, in order (systemd allows repeated keys)."""
    settings: dict[str, list[str]] = defaultdict(list)
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings[f"{section}.{key}"].append(value)
    return settings


def install_copy(text: str, tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart binary exists on this host.

    `systemd-analyze verify` checks that the ExecStart executable exists, and /usr/local/bin/drsdtp is not
    installed where the tests run. So the copy points ExecStart at a stub executable; nothing else changes.
    """
    assert INSTALLED_BINARY in text
    stub = tmp_path / "drsdtp"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / "drsdtp.service"
    unit.write_text(text.replace(INSTALLED_BINARY, str(stub)))
    return unit


def verify(text: str, tmp_path: Path) -> list[str]:
    """What `systemd-analyze verify` objects to: its exit status and every line it prints.

    verify exits 0 on unknown keys and unparsable values ("..., ignoring"), which would hide a typo in a
    hardening directive, so any output counts as a problem.
    """
    assert SYSTEMD_ANALYZE is not None
    unit = install_copy(text, tmp_path)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if result.returncode != 0:
        problems.append(f"exit status {result.returncode}")
    return problems


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert verify(UNIT, tmp_path) == []


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("Type=notify", "Type=notifyy", "Failed to parse service type"),
        ("ProtectSystem=strict", "ProtectSystme=strict", "Unknown key"),
        ("WatchdogSec=30", "WatchdogSec=soon", "Failed to parse"),
        (f"ExecStart={INSTALLED_BINARY}", "ExecStart=relative/drsdtp", "exit status"),
    ],
    ids=["bad type", "typo in a key", "bad duration", "relative ExecStart"],
)
def test_a_broken_unit_fails_verification(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in UNIT
    problems = verify(UNIT.replace(old, new), tmp_path)
    assert any(expected in p for p in problems), problems


@needs_systemd_analyze
def test_unit_exposure_is_low(tmp_path: Path) -> None:
    # `security --threshold` takes tenths: 20 means an overall exposure of at most 2.0 ("OK" starts below 3).
    assert SYSTEMD_ANALYZE is not None

    def exposure_ok(text: str) -> bool:
        unit = install_copy(text, tmp_path)
        command = [SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20", str(unit)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120).returncode == 0

    assert exposure_ok(UNIT)
    bare = "[Service]\nType=notify\nUser=drsdtp\nExecStart=/usr/local/bin/drsdtp run\n"
    assert not exposure_ok(bare)  # the check can fail: an unhardened unit is far above 2.0


def test_unit_has_the_required_settings() -> None:
    settings = unit_settings(UNIT)
    expected = {
        "Service.Type": ["notify"],
        "Service.NotifyAccess": ["main"],
        "Service.WatchdogSec": ["30"],
        "Service.Restart": ["on-failure"],
        "Service.User": ["drsdtp"],
        "Service.StateDirectory": ["drsdtp"],
        "Service.ProtectSystem": ["strict"],
        "Service.ProtectHome": ["yes"],
        "Service.PrivateTmp": ["yes"],
        "Service.NoNewPrivileges": ["yes"],
        "Service.CapabilityBoundingSet": [""],
        "Service.RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
        "Service.ExecStart": [f"{INSTALLED_BINARY} run --config /etc/drsdtp/drsdtp.toml"],
        "Install.WantedBy": ["multi-user.target"],
    }
    for key, values in expected.items():
        assert settings[key] == values, key
    assert settings["Service.SystemCallFilter"][0] == "@system-service"
    assert settings["Service.MemoryMax"]
    assert settings["Service.RestartSec"]


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


def test_systemd_waits_longer_than_the_node_shutdown_deadline() -> None:
    settings = unit_settings(UNIT)
    deadline = load_config(EXAMPLE, {}).shutdown_timeout_s
    assert _seconds(settings["Service.TimeoutStopSec"][0]) > deadline
    # The watchdog is pinged at half its interval; the ping must fit comfortably.
    assert _seconds(settings["Service.WatchdogSec"][0]) >= 2


def test_env_file_examples_are_valid_overrides() -> None:
    env: dict[str, str] = {}
    for raw in (SYSTEMD / "drsdtp.env").read_text().splitlines():
        line = raw.removeprefix("# ").strip()
        if re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", line):
            key, _, value = line.partition("=")
            env[key] = value
    assert "DRSDTP_NODE_ID" in env
    assert "PYTHONDONTWRITEBYTECODE" in env
    config = load_config(EXAMPLE, env)  # would raise ConfigError naming a bad variable
    assert config.node_id == env["DRSDTP_NODE_ID"]
    assert config.clock.ntp_server == env["DRSDTP_CLOCK__NTP_SERVER"]


def test_sysusers_defines_the_unit_user() -> None:
    lines = [
        ln for ln in (SYSTEMD / "drsdtp.sysusers").read_text().splitlines() if ln and not ln.startswith("#")
    ]
    assert [ln.split()[:2] for ln in lines] == [["u", unit_settings(UNIT)["Service.User"][0]]]


# --- KubeEdge ---------------------------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(KUBEEDGE.glob("*.yaml")):
        for doc in kubernetes_validate.utils.resources_from_file(str(path)):
            docs.append((f"{path.name}:{doc['kind']}", doc))
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for _, d in manifests() if d["kind"] == kind]
    return doc


def test_expected_manifests_exist() -> None:
    assert sorted(d["kind"] for _, d in manifests()) == ["ConfigMap", "DaemonSet", "Namespace", "Secret"]


@pytest.mark.parametrize(("name", "doc"), manifests(), ids=[name for name, _ in manifests()])
def test_manifest_passes_strict_schema_validation(name: str, doc: dict[str, Any]) -> None:
    # validate() raises on a schema violation, and SchemaNotFoundError for an unknown kind or apiVersion.
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.30"


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.template.spec.nodeSelectr", {"node-role.kubernetes.io/edge": ""}),
        ("spec.template.spec.terminationGracePeriodSeconds", "30"),
        ("spec.template.spec.containers.0.securityContext.readOnlyRootFs", True),
        ("spec.template.spec.hostNetwork", "yes"),
    ],
    ids=["misspelled field", "string for integer", "unknown securityContext field", "string for boolean"],
)
def test_a_broken_daemonset_fails_validation(path: str, value: Any) -> None:
    broken = copy.deepcopy(by_kind("DaemonSet"))
    _set(broken, path, value)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_daemonset_targets_edge_nodes_and_is_hardened() -> None:
    pod = by_kind("DaemonSet")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/edge": ""}
    assert {"key": "node-role.kubernetes.io/edge", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["hostNetwork"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (node,) = pod["containers"]
    assert node["securityContext"]["readOnlyRootFilesystem"] is True
    assert node["securityContext"]["allowPrivilegeEscalation"] is False
    assert node["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert set(node["resources"]["limits"]) == {"cpu", "memory"}
    probes = {kind: node[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {p["port"] for p in probes.values()} == {"metrics"}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"


def _volume_path(
    pod: dict[str, Any], container: dict[str, Any], volume_kind: str
) -> tuple[str, dict[str, Any]]:
    (volume,) = [v for v in pod["volumes"] if volume_kind in v]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    return mount["mountPath"], volume[volume_kind]


def test_manifests_agree_with_the_config_they_carry() -> None:
    pod = by_kind("DaemonSet")["spec"]["template"]["spec"]
    (node,) = pod["containers"]
    toml_text = by_kind("ConfigMap")["data"]["drsdtp.toml"]
    node_id_env = next(e for e in node["env"] if e["name"] == "DRSDTP_NODE_ID")
    assert node_id_env["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"

    config = parse_config(tomllib.loads(toml_text), env={"DRSDTP_NODE_ID": "edge-01"})
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(toml_text))  # the node id really comes from the environment
    assert info.value.key == "node_id"

    config_dir, config_map = _volume_path(pod, node, "configMap")
    assert config_map["name"] == by_kind("ConfigMap")["metadata"]["name"]
    assert node["args"] == ["run", "--config", f"{config_dir}/drsdtp.toml"]

    data_dir, host_path = _volume_path(pod, node, "hostPath")
    assert Path(data_dir) == config.data_dir == Path(host_path["path"])

    tls_dir, secret_volume = _volume_path(pod, node, "secret")
    secret = by_kind("Secret")
    assert secret_volume["secretName"] == secret["metadata"]["name"]
    assert config.tls is not None
    for file in (config.tls.ca, config.tls.cert, config.tls.key):
        assert file.parent == Path(tls_dir)
        assert file.name in secret["stringData"]

    ports = {p["name"]: p["containerPort"] for p in node["ports"]}
    assert ports["metrics"] == config.listen.metrics.port
    assert ports["peer"] == config.listen.peer.port
    assert pod["terminationGracePeriodSeconds"] > config.shutdown_timeout_s

    # A node skips its own peer entry, so the shared list works on every node.
    assert [p.name for p in config.peers] == ["edge-02"]


def test_secret_is_a_clearly_marked_placeholder() -> None:
    secret = by_kind("Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["stringData"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert all(v.startswith("REPLACE-ME") for v in secret["stringData"].values())
    assert "PLACEHOLDER" in (KUBEEDGE / "secret.yaml").read_text()


OFFLINE_CHECK = """
import sys, kubernetes_validate
sys.exit(sum(
    kubernetes_validate.utils.validate_file(name, sys.argv[1], strict=True, quiet=True, no_warn=False)
    for name in sys.argv[2:]
))
"""


def test_validation_works_without_a_network(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here (needs unshare -n, usually root)")
    files = [str(p) for p in sorted(KUBEEDGE.glob("*.yaml"))]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (KUBEEDGE / "daemonset.yaml").read_text().replace("hostNetwork: true", "hostNetwork: yes-please")
    )
    command = [unshare, "-n", sys.executable, "-c", OFFLINE_CHECK, K8S_VERSION]
    good = subprocess.run([*command, *files], capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stdout + good.stderr
    broken = subprocess.run([*command, str(bad)], capture_output=True, text=True, timeout=300)
    assert broken.returncode != 0
    assert "hostNetwork" in broken.stdout
