#!/usr/bin/env bash
# The node's image built without a container engine, from Debian's packages (root; mmdebstrap and umoci):
#   deploy/container/build-debian.sh OUT WHEEL WHEELHOUSE
# WHEEL is drsdtp's wheel (`make dist`: the Containerfile's build stage, done on the host), WHEELHOUSE the
# wheels of its dependencies (`.stamps/wheelhouse`); nothing is downloaded but Debian's packages.
# OUT/oci is an OCI image layout holding the image as drsdtp:VERSION: the Containerfile's runtime stage (Debian
# bookworm's python3, the venv at /opt/drsdtp, uid 10001, the config at /etc/drsdtp/drsdtp.toml, the data
# volume, ports 7400 and 9464, ENTRYPOINT and CMD). Load it with `skopeo copy oci:OUT/oci:VERSION ...` or
# `podman load`; pin the DaemonSet to it with `tools/release.sh manifests DIR --oci OUT/oci --image NAME`.
# Not in an OCI image: Docker's HEALTHCHECK (the DaemonSet's probes ask /readyz instead).
set -euo pipefail
out=${1:?usage: build-debian.sh OUT WHEEL WHEELHOUSE}
wheel=${2:?usage: build-debian.sh OUT WHEEL WHEELHOUSE}
wheelhouse=${3:?usage: build-debian.sh OUT WHEEL WHEELHOUSE}
here="$(cd "$(dirname "$0")" && pwd)"
[[ $(id -u) == 0 ]] || { echo "build-debian.sh: needs root (mmdebstrap and chroot)" >&2; exit 2; }
for tool in mmdebstrap umoci; do
  command -v $tool >/dev/null || { echo "build-debian.sh: needs $tool (apt-get install $tool)" >&2; exit 2; }
done
[[ -f $wheel ]] || { echo "build-debian.sh: no wheel at $wheel" >&2; exit 2; }
version=$(basename "$wheel" | cut -d- -f2)

rm -rf "$out"
mkdir -p "$out"
rootfs="$out/rootfs"
# python3-venv brings ensurepip, which makes the venv; the rest is Debian's minimal base.
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv bookworm "$rootfs"
mkdir -p "$rootfs/tmp/wheels"
cp "$wheel" "$wheelhouse"/*.whl "$rootfs/tmp/wheels/"
# In the image's own environment, nothing of the host's (pip settings, PYTHON* variables).
in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 chroot "$rootfs" "$@"; }
in_root /usr/bin/python3 -m venv /opt/drsdtp
in_root /opt/drsdtp/bin/pip install --quiet --disable-pip-version-check --no-index --find-links /tmp/wheels \
  "/tmp/wheels/$(basename "$wheel")[all]"
in_root /opt/drsdtp/bin/pip uninstall --quiet -y pip
rm -rf "$rootfs/tmp/wheels" "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
# The user, numeric as the Containerfile's, its data directory and the baked config.
echo "drsdtp:x:10001:" >> "$rootfs/etc/group"
echo "drsdtp:x:10001:10001::/var/lib/drsdtp:/usr/sbin/nologin" >> "$rootfs/etc/passwd"
install -d -o 10001 -g 10001 -m 0750 "$rootfs/var/lib/drsdtp"
install -D -m 0644 "$here/drsdtp.toml" "$rootfs/etc/drsdtp/drsdtp.toml"

image="$out/oci:$version"
umoci init --layout "$out/oci"
umoci new --image "$image"
umoci unpack --image "$image" "$out/bundle" >/dev/null
rm -rf "$out/bundle/rootfs"
mv "$rootfs" "$out/bundle/rootfs"
umoci repack --image "$image" "$out/bundle"
# The image's settings after the layer: a volume set first would be left out of it.
umoci config --image "$image" --config.user 10001:10001 --config.workingdir / --config.stopsignal SIGTERM \
  --config.env PATH=/opt/drsdtp/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 \
  --config.env DRSDTP_CONFIG=/etc/drsdtp/drsdtp.toml \
  --config.volume /var/lib/drsdtp --config.exposedports 7400/tcp --config.exposedports 9464/tcp \
  --config.entrypoint /opt/drsdtp/bin/drsdtp \
  --config.cmd run --config.cmd --config --config.cmd /etc/drsdtp/drsdtp.toml
umoci gc --layout "$out/oci"
rm -rf "$out/bundle"
python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$out/oci/index.json"
