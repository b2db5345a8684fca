#!/usr/bin/env bash
# Bounded libFuzzer run of the decoder (needs a nightly toolchain and cargo-fuzz; installs cargo-fuzz if
# missing). Seeds the corpus with the golden vectors. Usage: crdt_core/fuzz/run.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
if ! rustup toolchain list 2>/dev/null | grep -q nightly; then
  echo "fuzz: skipped, no nightly toolchain on this machine (the stable mutation fuzzer in crdt_core/tests/fuzz_decode.rs ran instead)"
  exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
mkdir -p corpus/decode
python3 - <<'PY'
import pathlib
for f in pathlib.Path("../tests/vectors").glob("*.hex"):
    pathlib.Path("corpus/decode", f.stem).write_bytes(bytes.fromhex("".join(f.read_text().split())))
PY
cargo +nightly fuzz run decode corpus/decode -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -n 12
