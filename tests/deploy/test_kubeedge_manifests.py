"""The release's KubeEdge manifests: the node's image by the name a user chooses, pinned by digest when built
(``tools/release.sh manifests``), still valid for Kubernetes; and the mapper mode's DaemonSet patch, merged as
``kubectl patch`` does, valid and as hardened as it can be while reaching edgecore's root-owned socket."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from drsdtp.config import parse_config
from drsdtp.kubeedge.manifests import PLACEHOLDER

REPO = Path(__file__).resolve().parents[2]
KUBEEDGE = REPO / "deploy" / "kubeedge"
VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]
K8S_VERSION = "1.30.0"  # KubeEdge 1.20's
DIGEST = "sha256:" + "ab" * 32


def manifests(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REPO / "tools" / "release.sh", "manifests", str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PY": sys.executable, "PATH": "/usr/bin:/bin"},
    )


def images(doc: dict[str, Any]) -> list[str]:
    pod = doc["spec"]["template"]["spec"]
    return [c["image"] for c in [*pod.get("initContainers", []), *pod["containers"]]]


def daemonset(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    assert doc["kind"] == "DaemonSet"
    return doc


def test_the_placeholder_carries_this_releases_tag() -> None:
    assert set(images(daemonset(KUBEEDGE / "daemonset.yaml"))) == {f"{PLACEHOLDER}:{VERSION}"}


def test_the_image_is_pinned_by_digest_under_the_chosen_name(tmp_path: Path) -> None:
    done = manifests("--image", "registry.plant.local:5000/ot/drsdtp", "--digest", DIGEST, out=tmp_path)
    assert done.returncode == 0, done.stderr
    ds = daemonset(tmp_path / "daemonset.yaml")
    assert set(images(ds)) == {f"registry.plant.local:5000/ot/drsdtp@{DIGEST}"}
    assert kubernetes_validate.validate(ds, K8S_VERSION, strict=True)
    # Everything else is copied as it is.
    others = sorted(p.name for p in KUBEEDGE.glob("*.yaml") if p.name != "daemonset.yaml")
    for name in others:
        assert (tmp_path / name).read_text() == (KUBEEDGE / name).read_text()


def test_the_digest_comes_from_the_images_oci_layout(tmp_path: Path) -> None:
    layout = tmp_path / "image"
    layout.mkdir()
    manifest = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST, "size": 1}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    env_named = subprocess.run(
        [REPO / "tools" / "release.sh", "manifests", str(tmp_path / "out"), "--oci", str(layout)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PY": sys.executable, "PATH": "/usr/bin:/bin", "DRSDTP_IMAGE": "example.org/drsdtp"},
    )
    assert env_named.returncode == 0, env_named.stderr
    assert set(images(daemonset(tmp_path / "out" / "daemonset.yaml"))) == {f"example.org/drsdtp@{DIGEST}"}


def test_without_a_digest_the_tag_is_the_version(tmp_path: Path) -> None:
    done = manifests("--image", "example.org/drsdtp", out=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(images(daemonset(tmp_path / "daemonset.yaml"))) == {f"example.org/drsdtp:{VERSION}"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--digest", "sha256:1234"], "--digest: 'sha256:1234' is not sha256:<64 hex digits>"),
        (["--image", "Example.org/Drsdtp:1"], "--image: 'Example.org/Drsdtp:1' is not an image name"),
        (["--oci", "/nonexistent"], "--oci: /nonexistent is not an OCI image layout"),
    ],
    ids=["short digest", "tag in the name", "no layout"],
)
def test_a_bad_reference_is_named(tmp_path: Path, args: list[str], message: str) -> None:
    done = manifests(*args, out=tmp_path / "out")
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


def merge(base: Any, patch: Any) -> Any:
    """A strategic merge patch as Kubernetes applies it to these fields: maps merged, lists of named
    objects merged by name, other values replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(p, dict) and "name" in p for p in patch)
    ):
        merged = [copy.deepcopy(b) for b in base]
        names = [b.get("name") for b in merged]
        for item in patch:
            if item["name"] in names:
                i = names.index(item["name"])
                merged[i] = merge(merged[i], item)
            else:
                merged.append(item)
        return merged
    return patch


def test_the_mapper_patch_reaches_edgecore_and_stays_hardened() -> None:
    base = daemonset(KUBEEDGE / "daemonset.yaml")
    patched = merge(base, yaml.safe_load((KUBEEDGE / "mapper" / "daemonset-patch.yaml").read_text()))
    assert kubernetes_validate.validate(patched, K8S_VERSION, strict=True)
    pod = patched["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 0
    (node,) = pod["containers"]
    assert node["securityContext"] == base["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert node["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert node["securityContext"]["readOnlyRootFilesystem"] is True
    assert "add" not in node["securityContext"]["capabilities"]
    mounts = {m["name"]: m for m in node["volumeMounts"]}
    assert mounts["kubeedge"] == {"name": "kubeedge", "mountPath": "/etc/kubeedge", "readOnly": True}
    assert {m["name"] for m in base["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]} < set(
        mounts
    )
    (init,) = pod["initContainers"]
    assert init["command"] == ["chown", "-R", "0:0", mounts["data"]["mountPath"]]
    # The ConfigMap's config with [kubeedge] added: edgecore's socket is in the mounted directory, the node's
    # own in the data directory on the host (where edgecore, as root, reaches it).
    configmap = yaml.safe_load((KUBEEDGE / "configmap.yaml").read_text())
    raw = tomllib.loads(
        configmap["data"]["drsdtp.toml"] + '\n[kubeedge]\nedgecore_socket = "/etc/kubeedge/dmi.sock"\n'
    )
    config = parse_config(raw, env={"DRSDTP_NODE_ID": "edge-01"})
    assert config.kubeedge is not None
    assert config.kubeedge.edgecore_socket.parent == Path(mounts["kubeedge"]["mountPath"])
    assert Path(mounts["data"]["mountPath"]) == config.data_dir
