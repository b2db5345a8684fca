"""deploy/install.sh in a throwaway root: an overlay of this machine's / (its upper layer in a temporary
directory, mounted in a private mount and network namespace), entered with chroot, so the script runs as
on a device, with the real paths, and the machine itself is never touched.

It installs the wheel `make dist` built, the user, the data dir, the hardened unit (which `systemd-analyze
verify` then checks where it was installed) and a starter config; the node it installed runs as its user;
a second install changes nothing an operator owns; --uninstall keeps the data, --purge removes it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, VERSION, WHEELHOUSE
from tests.deploy.test_container import healthcheck_command

# Building the artifacts (once per session) waits for the shared Rust build cache.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1800)]

# Debian's interpreter: the unit's ProtectHome=yes hides an interpreter under /root or /home from the node.
PYTHON = "/usr/bin/python3"
INSTALL = f"{REPO}/deploy/install.sh"

ENTER = r"""
set -eu
mount -t overlay overlay -o "lowerdir=/,upperdir=$UP,workdir=$WORK" "$MERGED"
mount -t proc proc "$MERGED/proc"
mount --rbind /dev "$MERGED/dev"
mount -t tmpfs tmpfs "$MERGED/run"   # no systemd runs in the root: install.sh leaves units alone
ip link set lo up
if [ -n "${IMAGE_CONFIG:-}" ]; then  # the image's runtime: its config, a data volume, /tmp, a read-only root
  mount --bind "$IMAGE_CONFIG" "$MERGED/etc/drsdtp/drsdtp.toml"
  mount -t tmpfs -o uid=10001,gid=10001,mode=0750 volume "$MERGED/var/lib/drsdtp"
  mount -t tmpfs tmpfs "$MERGED/tmp"
  mount -o remount,bind,ro "$MERGED"
fi
exec chroot "$MERGED" /usr/bin/env -i HOME=/root \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -euc "$SCRIPT"
"""


class Root:
    def __init__(self, base: Path) -> None:
        self.install = ""  # the install command line
        self.dirs = {name: base / name for name in ("up", "work", "merged")}
        for d in self.dirs.values():
            d.mkdir()

    def sh(self, script: str, check: bool = True, image: bool = False) -> subprocess.CompletedProcess[str]:
        env = {
            "IMAGE_CONFIG": str(REPO / "deploy" / "container" / "drsdtp.toml") if image else "",
            "PATH": os.environ["PATH"],
            "UP": str(self.dirs["up"]),
            "WORK": str(self.dirs["work"]),
            "MERGED": str(self.dirs["merged"]),
            "SCRIPT": script,
        }
        result = subprocess.run(
            ["unshare", "--mount", "--net", "--propagation", "private", "bash", "-c", ENTER],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check:
            assert result.returncode == 0, f"$ {script}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result


def can_overlay(base: Path) -> str | None:
    if os.geteuid() != 0:
        return "needs root (mount namespaces, overlayfs, chroot)"
    for tool in ("unshare", "chroot", "systemd-sysusers", "systemd-analyze", "setpriv", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path(PYTHON).is_file():
        return f"{PYTHON} is missing"
    probe = Root(base)
    result = probe.sh("test -x /usr/bin/python3", check=False)
    return None if result.returncode == 0 else f"cannot enter an overlay root here: {result.stderr.strip()}"


@pytest.fixture(scope="module")
def root(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Root:
    reason = can_overlay(tmp_path_factory.mktemp("probe"))
    if reason:
        pytest.skip(reason)
    r = Root(tmp_path_factory.mktemp("root"))
    r.install = f"{INSTALL} --wheel {wheel} --wheelhouse {WHEELHOUSE} --python {PYTHON}"
    first = r.sh(r.install)
    assert "wrote a starter config" in first.stdout
    return r


def test_install_lays_out_the_node(root: Root) -> None:
    out = root.sh(
        "drsdtp --version; readlink /usr/local/bin/drsdtp; getent passwd drsdtp | cut -d: -f6,7;"
        "stat -c '%U %a' /var/lib/drsdtp;"
        "drsdtp check-config /etc/drsdtp/drsdtp.toml >/dev/null && echo valid;"
        "/opt/drsdtp/bin/python -c 'import drsdtp._core, drsdtp; print(drsdtp.__file__)'"
    ).stdout.splitlines()
    assert out[0] == f"drsdtp {VERSION}"
    assert out[1] == "/opt/drsdtp/bin/drsdtp"
    assert out[2] == "/var/lib/drsdtp:/usr/sbin/nologin"
    assert out[3] == "drsdtp 750"
    assert out[4] == "valid"
    assert out[5].startswith("/opt/drsdtp/lib/")


def test_installed_unit_passes_systemd_analyze_verify(root: Root) -> None:
    unit = "/etc/systemd/system/drsdtp.service"
    good = root.sh(f"systemd-analyze verify {unit} 2>&1; echo rc=$?").stdout
    assert good.strip() == "rc=0", good  # verify exits 0 on unknown keys: any output counts
    assert root.sh(f"cmp {unit} {REPO}/deploy/systemd/drsdtp.service && echo same").stdout.strip() == "same"
    # The check can fail: the same unit with its command missing from the root.
    broken = root.sh(
        f"sed 's|/usr/local/bin/drsdtp|/usr/local/bin/drsdtp-gone|' {unit} > /tmp/x.service;"
        "systemd-analyze verify /tmp/x.service 2>&1 || echo failed"
    ).stdout
    assert "drsdtp-gone" in broken and "failed" in broken, broken


def test_installed_node_runs_as_its_user(root: Root) -> None:
    # The unit's command line, as its user, in the root's own network namespace (ports of the starter config).
    script = """
setpriv --reuid=drsdtp --regid=drsdtp --init-groups --inh-caps=-all \
  /usr/local/bin/drsdtp run --config /etc/drsdtp/drsdtp.toml > /tmp/node.log 2>&1 &
node=$!
for _ in $(seq 300); do
  /opt/drsdtp/bin/python -c \
    "import urllib.request as u; u.urlopen('http://127.0.0.1:9464/readyz', timeout=1)" 2>/dev/null && break
  kill -0 $node || { cat /tmp/node.log; exit 1; }
  sleep 0.2
done
drsdtp status --json | /opt/drsdtp/bin/python -c "import json, sys; print(json.load(sys.stdin)['node'])"
kill -TERM $node; wait $node; echo "exit=$?"
stat -c %U /var/lib/drsdtp/* | sort -u
"""
    out = root.sh(script).stdout.splitlines()
    hostname = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    assert out[0] == hostname
    assert "exit=0" in out
    assert out[-1] == "drsdtp"  # everything it wrote belongs to its user


def test_the_image_runtime_contract(root: Root) -> None:
    # deploy/container/Containerfile's runtime stage, emulated on the same /opt/drsdtp layout: its config,
    # its numeric user without a passwd entry, its environment, a read-only root with the data volume and
    # /tmp writable; ENTRYPOINT + CMD run, and its HEALTHCHECK command must pass.
    health = shlex.join(healthcheck_command())
    script = f"""
touch /opt/drsdtp/probe 2>/dev/null && {{ echo "the root is writable"; exit 1; }}
export PATH=/opt/drsdtp/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export DRSDTP_CONFIG=/etc/drsdtp/drsdtp.toml DRSDTP_NODE_ID=image-node
setpriv --reuid=10001 --regid=10001 --clear-groups --inh-caps=-all \
  /opt/drsdtp/bin/drsdtp run --config /etc/drsdtp/drsdtp.toml > /tmp/node.log 2>&1 &
node=$!
for _ in $(seq 300); do
  setpriv --reuid=10001 --regid=10001 --clear-groups {health} 2>/dev/null && echo healthy && break
  kill -0 $node || {{ cat /tmp/node.log; exit 1; }}
  sleep 0.2
done
drsdtp status --json | python3 -c "import json, sys; print(json.load(sys.stdin)['node'])"
kill -TERM $node; wait $node; echo "exit=$?"
stat -c %u /var/lib/drsdtp/* | sort -u
"""
    out = root.sh(script, image=True).stdout.splitlines()
    assert out[:2] == ["healthy", "image-node"], out
    assert "exit=0" in out
    assert out[-1] == "10001"


def test_a_second_install_keeps_what_the_operator_owns(root: Root) -> None:
    edited = "# edited by the operator"
    root.sh(f"echo {shlex.quote(edited)} >> /etc/drsdtp/drsdtp.toml; echo keep > /var/lib/drsdtp/mine")
    again = root.sh(root.install)
    assert "starter config" not in again.stdout
    out = root.sh(
        "tail -n1 /etc/drsdtp/drsdtp.toml; cat /var/lib/drsdtp/mine; grep -c '^drsdtp:' /etc/passwd"
    )
    assert out.stdout.splitlines() == [edited, "keep", "1"]


def test_uninstall_keeps_the_data_and_purge_removes_it(root: Root) -> None:
    exists = "for p in /opt/drsdtp /usr/local/bin/drsdtp /etc/systemd/system/drsdtp.service /etc/drsdtp \
/var/lib/drsdtp/mine; do test -e $p && echo $p; done; getent passwd drsdtp >/dev/null && echo user; true"
    root.sh(f"{INSTALL} --uninstall")
    assert root.sh(exists).stdout.split() == ["/etc/drsdtp", "/var/lib/drsdtp/mine", "user"]
    root.sh(f"{INSTALL} --uninstall")  # idempotent too
    root.sh(f"{INSTALL} --uninstall --purge")
    assert root.sh(exists).stdout.split() == []
    refused = root.sh(f"{INSTALL} --purge", check=False)
    assert refused.returncode == 2 and "--purge goes with --uninstall" in refused.stderr
