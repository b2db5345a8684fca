#!/usr/bin/env bash
# Regenerates every committed file derived from proto/: the Rust types of crdt_core and api_wire (prost, via
# tools/protogen) and the Python modules under drsdtp/wire/ (grpcio-tools, with mypy stubs).
# protoc comes from the pinned grpcio-tools wheel, so the output depends only on requirements.lock.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${DRSDTP_PYTHON:-$root/.venv/bin/python}"
cd "$root"
if [ "${1:-}" = "--check" ]; then
  # Regenerate into a scratch copy of the tree's generated files and compare: CI fails on any drift.
  snap="$(mktemp -d)"
  trap 'rm -rf "$snap"' EXIT
  cp -a crdt_core/src/pb.rs drsdtp/wire "$snap/"
  cp -a api_wire/src/pb.rs "$snap/api_pb.rs"
  "$0"
  if ! diff -r -q "$snap/pb.rs" crdt_core/src/pb.rs >/dev/null || ! diff -r -q -x __pycache__ "$snap/wire" drsdtp/wire >/dev/null \
    || ! diff -q "$snap/api_pb.rs" api_wire/src/pb.rs >/dev/null; then
    diff -r -x __pycache__ "$snap/wire" drsdtp/wire | head -40 || true
    diff "$snap/pb.rs" crdt_core/src/pb.rs | head -40 || true
    diff "$snap/api_pb.rs" api_wire/src/pb.rs | head -40 || true
    rm -rf drsdtp/wire && cp -a "$snap/wire" drsdtp/wire && cp "$snap/pb.rs" crdt_core/src/pb.rs
    cp "$snap/api_pb.rs" api_wire/src/pb.rs
    echo "generated protobuf code drifted from proto/: run 'make proto' and commit the result" >&2
    exit 1
  fi
  echo "generated protobuf code matches proto/"
  exit 0
fi
export PATH="$(dirname "$py"):$PATH"  # protoc-gen-mypy lives next to the interpreter
PROTOC="$root/tools/protoc" DRSDTP_PYTHON="$py" CARGO_TARGET_DIR="$root/target" \
  cargo run --quiet --manifest-path tools/protogen/Cargo.toml
rm -f drsdtp/wire/v1/*_pb2*.py drsdtp/wire/v1/*_pb2*.pyi drsdtp/wire/sparkplug/*_pb2*.py drsdtp/wire/sparkplug/*_pb2*.pyi
rm -f drsdtp/wire/kubeedge/dmi/v1beta1/*_pb2*.py drsdtp/wire/kubeedge/dmi/v1beta1/*_pb2*.pyi
mapfile -t protos < <(cd proto && find drsdtp -name '*.proto' | sort)
grpc_services=()
for p in "${protos[@]}"; do grep -q '^service ' "proto/$p" && grpc_services+=("$p"); done
(cd proto && "$py" -m grpc_tools.protoc -I . --python_out=.. --mypy_out=.. "${protos[@]}")
if ((${#grpc_services[@]})); then
  (cd proto && "$py" -m grpc_tools.protoc -I . --grpc_python_out=.. --mypy_grpc_out=.. "${grpc_services[@]}")
fi
# KubeEdge's DMI contract (proto/kubeedge/, vendored unmodified, see its ORIGIN.md) keeps its own path on disk;
# protoc's VIRTUAL=DISK include maps it into our package, so the modules import as drsdtp.wire.kubeedge...
# while the wire names (package v1beta1: /v1beta1.DeviceManagerService/...) stay KubeEdge's.
dmi=drsdtp/wire/kubeedge/dmi/v1beta1
(cd proto && "$py" -m grpc_tools.protoc "-I$dmi=kubeedge/dmi/v1beta1" --python_out=.. --mypy_out=.. \
  --grpc_python_out=.. --mypy_grpc_out=.. "$dmi/api.proto")
for d in drsdtp/wire drsdtp/wire/v1 drsdtp/wire/sparkplug drsdtp/wire/kubeedge drsdtp/wire/kubeedge/dmi "$dmi"; do
  [ -f "$d/__init__.py" ] || echo '"""Generated from proto/ by tools/gen_proto.sh (`make proto`); never edit by hand."""' > "$d/__init__.py"
done
