#!/usr/bin/env bash
# Release artifacts from one command (`make dist`):
#   tools/release.sh [OUT]             OUT (default dist/) gets drsdtp's wheel for this machine, its sdist (builds
#                                      wherever Rust >= the workspace's rust-version is present, e.g. a Raspberry
#                                      Pi), the SDK's pure-Python wheel when clients/python/ packages it, and
#                                      SHA256SUMS over all of them.
#   tools/release.sh manifests OUT [--image NAME] [--digest sha256:HEX | --oci DIR]
#                                      the KubeEdge manifests with the node's image by NAME (default
#                                      $DRSDTP_IMAGE, else the placeholder), pinned by digest once the image is
#                                      built (--oci reads it from the image's OCI layout), else NAME:VERSION.
#   tools/release.sh wheelhouse DIR    the wheels of the node's runtime dependencies (pins from
#                                      requirements.lock) and of maturin, so fresh venvs install offline.
# The version has one home: [workspace.package] version in Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MATURIN=${MATURIN:-$(dirname "$PY")/maturin}

# The runtime dependencies (pyproject's [project] dependencies, every extra included), pinned as in
# requirements.lock.
pinned_runtime_deps() {
  "$PY" - <<'EOF'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
names = [*project["dependencies"], *project["optional-dependencies"]["all"], "maturin"]
pins = {}
for line in open("requirements.lock"):
    if "==" in line and not line.startswith("#"):
        name, ver = line.split("#")[0].strip().split("==")
        pins[re.sub(r"[-_.]+", "-", name).lower()] = ver
for spec in names:
    match = re.match(r"([A-Za-z0-9_.-]+)(\[[\w,]+\])?", spec)
    name = re.sub(r"[-_.]+", "-", match[1]).lower()
    print(f"{name}{match[2] or ''}=={pins[name]}")
EOF
}

if [[ ${1:-} == manifests ]]; then
  shift
  exec "$PY" -m drsdtp.kubeedge.manifests "$@"
fi

if [[ ${1:-} == wheelhouse ]]; then
  dir=${2:?usage: tools/release.sh wheelhouse DIR}
  mkdir -p "$dir"
  mapfile -t deps < <(pinned_runtime_deps)
  # The lock constrains the transitive dependencies too.
  "$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: -c requirements.lock -d "$dir" "${deps[@]}"
  exit 0
fi

out=${1:-dist}
version=$("$PY" -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["version"])')
rm -rf "$out"
mkdir -p "$out"
echo "drsdtp $version -> $out/"
"$MATURIN" build --release --quiet --out "$out" 2>&1 | grep -v '^Requirement\|^Ignoring' || true
"$MATURIN" sdist --out "$out" 2>&1 | grep -v '^Requirement\|^Ignoring' || true
if [[ -f clients/python/pyproject.toml ]]; then
  # The SDK: pure Python (grpcio + protobuf), built by its own backend.
  "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$out" ./clients/python
fi
shopt -s nullglob
artifacts=("$out"/*.whl "$out"/*.tar.gz)
[[ -n $(compgen -G "$out/drsdtp-$version-*.whl") ]] || { echo "no drsdtp $version wheel in $out" >&2; exit 1; }
[[ -f $out/drsdtp-$version.tar.gz ]] || { echo "no drsdtp $version sdist in $out" >&2; exit 1; }
(cd "$out" && sha256sum -- "${artifacts[@]##*/}" > SHA256SUMS)
cat "$out/SHA256SUMS"
