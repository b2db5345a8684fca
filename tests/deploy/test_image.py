"""The node's image, built for real from Debian's packages without a container engine
(deploy/container/build-debian.sh: mmdebstrap, umoci) and run as its OCI config says: its user, environment,
entrypoint and command, on a read-only root with /tmp and the data volume writable. Behind a flag
(``DRSDTP_TEST_IMAGE=1``: root, mmdebstrap and umoci, and Debian's mirror; about 5 minutes;
``DRSDTP_TEST_IMAGE_OCI=DIR`` reuses the OCI layout a build made); the DaemonSet is then pinned to the digest
of the image just built.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.test_container import healthcheck_command, runtime
from tests.ingest.support import terminate

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "deploy" / "container" / "build-debian.sh"
WHEELHOUSE = REPO / ".stamps" / "wheelhouse"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        os.environ.get("DRSDTP_TEST_IMAGE") != "1",
        reason="builds an image from Debian's mirror: set DRSDTP_TEST_IMAGE=1 (root, mmdebstrap, umoci)",
    ),
]


@pytest.fixture(scope="module")
def oci(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [t for t in ("mmdebstrap", "umoci", "unshare") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(missing) or 'nothing else'}")
    prebuilt = os.environ.get("DRSDTP_TEST_IMAGE_OCI")
    if prebuilt:
        return Path(prebuilt)
    out = tmp_path_factory.mktemp("image")
    built = subprocess.run(
        [BUILD, out, wheel, WHEELHOUSE], capture_output=True, text=True, timeout=1800, check=False
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out / "oci"


def blob(layout: Path, digest: str) -> Any:
    return json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_text())


def test_the_image_config_is_the_containerfiles_runtime_stage(oci: Path) -> None:
    (entry,) = json.loads((oci / "index.json").read_text())["manifests"]
    config = blob(oci, blob(oci, entry["digest"])["config"]["digest"])["config"]
    (user,) = runtime("USER")
    assert config["User"] == user
    assert [config["Entrypoint"]] == [json.loads(e) for e in runtime("ENTRYPOINT")]
    assert config["Cmd"] == json.loads(runtime("CMD")[0])
    assert list(config["Volumes"]) == json.loads(runtime("VOLUME")[0])
    assert {p.split("/")[0] for p in config["ExposedPorts"]} == {
        p for e in runtime("EXPOSE") for p in e.split()
    }
    for setting in " ".join(runtime("ENV")).split():
        if "=" in setting:
            assert setting in config["Env"]


def test_the_image_runs_as_its_config_says_on_a_read_only_root(oci: Path, tmp_path: Path) -> None:
    version = json.loads((oci / "index.json").read_text())["manifests"][0]["annotations"][
        "org.opencontainers.image.ref.name"
    ]
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{oci}:{version}", bundle], check=True, capture_output=True
    )
    process = json.loads((bundle / "config.json").read_text())["process"]
    user = process["user"]
    assert (user["uid"], user["gid"]) == (10001, 10001)
    env = [*process["env"], "DRSDTP_NODE_ID=image-node"]
    root = bundle / "rootfs"
    # Its own network namespace (the image's ports, loopback only) and mount namespace: the root read-only,
    # /tmp and the volume writable (tmpfs); then chroot as the image's user with the image's environment.
    script = f"""set -e
ip link set lo up
r={shlex.quote(str(root))}
mount --bind "$r" "$r" && mount -o remount,bind,ro "$r"
mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
mount -t tmpfs -o uid=10001,gid=10001,mode=0750 tmpfs "$r/var/lib/drsdtp"
mount -t proc proc "$r/proc"
cd "$r"
exec chroot --userspec={user["uid"]}:{user["gid"]} "$r" /usr/bin/env -i {shlex.join(env)} \\
  {shlex.join(process["args"])}
"""
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        node = subprocess.Popen(
            ["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", script], stdout=out, stderr=out
        )

    def inside(*command: str) -> subprocess.CompletedProcess[str]:
        """``docker exec``: a command in the running image, as its user, with its environment."""
        return subprocess.run(
            ["nsenter", f"--mount=/proc/{node.pid}/ns/mnt", f"--net=/proc/{node.pid}/ns/net",
             "chroot", "--userspec=10001:10001", str(root), "/usr/bin/env", "-i", *env, *command],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    try:
        deadline = time.monotonic() + 120
        # The image's own HEALTHCHECK command says when it is healthy (/readyz on its metrics port).
        while inside(*healthcheck_command()).returncode != 0:
            assert node.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        status = inside("drsdtp", "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["node"] == "image-node"
        proc = Path(f"/proc/{node.pid}/status").read_text()
        assert "Uid:\t10001\t10001\t10001\t10001" in proc
        assert "CapEff:\t0000000000000000" in proc
        assert inside("touch", "/opt/drsdtp/probe").returncode != 0  # the root is read-only
    finally:
        terminate(node)
    assert node.returncode == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


def test_the_daemonset_is_pinned_to_the_built_image(oci: Path, tmp_path: Path) -> None:
    (entry,) = json.loads((oci / "index.json").read_text())["manifests"]
    done = subprocess.run(
        [REPO / "tools" / "release.sh", "manifests", tmp_path, "--oci", oci, "--image", "plant.local/drsdtp"],
        capture_output=True, text=True, timeout=60, env={"PY": sys.executable, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ds = yaml.safe_load((tmp_path / "daemonset.yaml").read_text())
    pod = ds["spec"]["template"]["spec"]
    assert {c["image"] for c in [*pod["initContainers"], *pod["containers"]]} == {
        f"plant.local/drsdtp@{entry['digest']}"
    }
    assert kubernetes_validate.validate(ds, "1.30.0", strict=True)
