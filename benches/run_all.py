"""``make bench``: run the benchmarks, print the issue-13 table, write it as JSON.

    .venv/bin/python benches/run_all.py                 # every bench at its real size (tens of minutes)
    .venv/bin/python benches/run_all.py --tiny          # smallest sizes, no Rust peers: checks the harness
    .venv/bin/python benches/run_all.py --only bench_replication.py --only peers

Each bench runs as its own process exactly as the README states (``.venv/bin/python benches/X.py``, or
``cargo run --release`` for the Rust peers), with ``$BENCH_JSON_OUT`` naming a file it appends its rows
to (``benches/bench_report.py``). The table lists every goal of issue 13 with the figure the issue started
from, what this run measured, the baseline measured in the same run and the ratio; a goal no bench
reported is shown as not measured, never as met. A bench that fails is reported (its output's tail) and
makes the exit status 1; missed goals do not (they are the result).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_report import human, load, verdict

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
RESULTS = REPO / "benches" / "results" / "latest.json"


@dataclasses.dataclass(frozen=True)
class Bench:
    name: str
    command: list[str]  # the full-size run, from the repository root
    tiny: list[str] | None  # extra arguments for --tiny; None: skipped in --tiny
    cwd: str = "."
    timeout_s: float = 3600


def script(name: str, *args: str) -> list[str]:
    return [PY, f"benches/{name}", *args]


# In the order they run: the in-process ones first, the multi-process ones (more load-sensitive) after.
BENCHES = [
    # Compiles yrs, automerge and crdts the first time (minutes): not in --tiny.
    Bench("peers", ["cargo", "run", "-q", "--release"], None, cwd="crdt_core/benches/peers"),
    Bench("bench_core", script("bench_core.py"), []),
    Bench("bench_node", script("bench_node.py"), ["--log-gb", "0.002", "--twins", "2000"]),
    Bench("bench_ingest_mqtt", script("bench_ingest_mqtt.py"), ["--quick"]),
    Bench("bench_ingest_modbus", script("bench_ingest_modbus.py"), ["--seconds", "1", "--reps", "1"]),
    Bench("bench_ingest_opcua", script("bench_ingest_opcua.py"), ["--seconds", "1", "--reps", "1"]),
    Bench("bench_replication", script("bench_replication.py"), ["--quick"]),
    Bench("bench_sparkplug", script("bench_sparkplug.py"), ["--metrics", "10", "--messages", "200"]),
    Bench(
        "bench_postgres",
        script("bench_postgres.py"),
        [
            "--outage-readings",
            "2000",
            "--steady-readings",
            "2000",
            "--outage-s",
            "2",
            "--outage-rate",
            "2000",
        ],
    ),
]

# Issue 13's goals: (measure as the benches name it, the figure the issue started from, goal).
ISSUE13: list[tuple[str, str, str]] = [
    ("core overwrites, deltas captured, vs crdts+ops", "0.3x", ">= 2x"),
    ("core overwrites vs a plain HashMap LWW loop", "-", ">= 0.67x (within 1.5x)"),
    ("Python batched writes vs pycrdt", "15x", ">= 50x"),
    ("Python by-name writes vs by-id", "0.37x", ">= 0.8x"),
    ("bytes per numeric field", "72.9 B", "<= 48 B"),
    ("bytes per 20-field twin", "1.55 KB", "<= 1.2 KB"),
    ("1M twins x 10 fields through a node, peak RSS", "3.2 GB", "<= 1 GB"),
    ("1M twins x 10 fields, snapshot memory", "the whole state", "<= 16 MB (O(chunk))"),
    ("idle node RSS", "61.4 MB", "<= 45 MB"),
    ("MQTT QoS 0, node vs bare paho", "38%", ">= 90%"),
    ("MQTT QoS 1, node vs bare paho", "62%", ">= 90%"),
    ("Modbus polls vs bare pymodbus", "68%", ">= 90%"),
    ("OPC UA vs bare asyncua", "93%", ">= 90%"),
    ("replication throughput node to node", "1.87M/s", ">= 5M/s"),
    ("replication latency p99, 3 nodes, WAL on, 10k/s", "unmeasured", "<= 2 ms"),
]

# Issue 17's measures (northbound): the issue sets no figures, only what to compare with.
ISSUE17: list[tuple[str, str, str]] = [
    ("Sparkplug DDATA into the twin vs the JSON path", "unmeasured", ">= 1x json_batch"),
    ("Sparkplug DDATA decode vs JSON batch", "unmeasured", "-"),
    ("PostgreSQL sustained readings vs bare COPY", "unmeasured", "-"),
    ("PostgreSQL catch-up after an outage vs bare COPY", "unmeasured", ">= the feed rate"),
    ("10-minute outage caught up in (extrapolated)", "unmeasured", "-"),
]


def run_bench(bench: Bench, tiny: bool, sink: Path) -> dict[str, Any]:
    command = bench.command + (bench.tiny or []) if tiny else bench.command
    env = {**os.environ, "BENCH_JSON_OUT": str(sink)}
    env.pop("PYTHONPATH", None)  # the benches import the package `make setup` installed, as a user's would
    print(f"\n=== {bench.name}: {' '.join(command)}", flush=True)
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=40)  # what a failure report shows
    with subprocess.Popen(
        command,
        cwd=REPO / bench.cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills the nodes it started too
    ) as proc:
        # Streamed as it comes (a full run takes minutes); a bench past its time is killed.
        timer = threading.Timer(bench.timeout_s, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line)
        code = proc.wait()
        timer.cancel()
    if time.monotonic() - start >= bench.timeout_s:
        tail.append(f"killed after {bench.timeout_s:.0f} s\n")
    return {"bench": bench.name, "exit": code, "seconds": round(time.monotonic() - start, 1),
            "tail": "".join(tail) if code else ""}  # fmt: skip


def summary(
    rows: dict[str, dict[str, Any]], goals: list[tuple[str, str, str]] = ISSUE13
) -> list[dict[str, Any]]:
    table = []
    for measure, now, goal in goals:
        row = find_row(rows, measure)
        table.append({"measure": measure, "issue_start": now, "issue_goal": goal, "row": row})
    return table


def find_row(rows: dict[str, dict[str, Any]], measure: str) -> dict[str, Any] | None:
    """The row a goal names: by its exact name, else the first whose name starts with it. A bench may qualify
    its row's name (`..., real nodes (WAL on), API columns`) without the goal going unreported."""
    if measure in rows:
        return rows[measure]
    return next((row for name, row in rows.items() if name.startswith(measure)), None)


def print_table(table: list[dict[str, Any]], title: str = "issue 13 goals") -> None:
    print(f"\n{title} ({load_note()})")
    print(f"  {'measure':<48} {'start':>10} {'now':>14} {'baseline (same run)':>26} {'ratio':>7}  "
          f"{'goal':<24} result")  # fmt: skip
    for t in table:
        r = t["row"]
        if r is None:
            now, base, ratio, result = "not measured", "-", "-", "-"
        else:
            now = f"{human(r['value'])} {r['unit']}"
            base = f"{human(r['baseline'])} {r['baseline_name'] or ''}" if r["baseline"] is not None else "-"
            ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
            result = verdict(r["met"])
        goal = r["goal"] if r and r["goal"] else t["issue_goal"]
        print(f"  {t['measure']:<48} {t['issue_start']:>10} {now:>14} {base[:26]:>26} {ratio:>7}  "
              f"{goal[:24]:<24} {result}")  # fmt: skip


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} on {os.cpu_count()} cores: rates move 30-50 % with load, ratios less"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="smallest sizes, Rust peers skipped")
    parser.add_argument("--only", action="append", metavar="BENCH", help="run only these (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"the JSON written (default {RESULTS})")
    parser.add_argument("--list", action="store_true", help="list the benches (name, what runs) and exit")
    args = parser.parse_args()
    if args.list:
        for b in BENCHES:
            print(b.name, Path(b.command[1]).name if b.command[0] == PY else " ".join(b.command))
        return 0
    known = {b.name for b in BENCHES}
    if args.only and not set(args.only) <= known:
        parser.error(f"unknown bench {sorted(set(args.only) - known)}; known: {sorted(known)}")
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    runs, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        sink = Path(tmp, "rows.jsonl")
        sink.touch()
        for bench in chosen:
            if args.tiny and bench.tiny is None:
                skipped.append(bench.name)
                continue
            runs.append(run_bench(bench, args.tiny, sink))
        records = load(str(sink))
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        for row in record["rows"]:
            rows[row["measure"]] = {**row, "bench": record["bench"]}
    table = summary(rows)
    print_table(table)
    northbound = summary(rows, ISSUE17)
    print_table(northbound, "issue 17 measures")
    failed = [r for r in runs if r["exit"] != 0]
    silent = [r["bench"] for r in runs if r["exit"] == 0 and r["bench"] not in {x["bench"] for x in records}]
    for r in failed:
        print(f"\nFAILED {r['bench']} (exit {r['exit']}):\n{r['tail']}")
    if skipped:
        print(f"\nskipped in --tiny: {', '.join(skipped)}")
    if silent:
        print(f"\nno result rows from: {', '.join(silent)} (not yet converted to bench_report.py)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tiny": args.tiny,
        "load": load_note(),
        "runs": runs,
        "skipped": skipped,
        "benches": records,
        "issue13": table,
        "issue17": northbound,
    }, indent=1) + "\n")  # fmt: skip
    print(f"\nwritten: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
