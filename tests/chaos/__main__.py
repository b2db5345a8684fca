"""The chaos check for nights: ``python -m tests.chaos --minutes N [--seed S] [--proxies]``.

Runs rounds of ``--round-s`` seconds of faults on one cluster (three ``drsdtp run`` processes, in network
namespaces when root, else behind TCP proxies) until the time is up; every round heals, then must lose no
acknowledged write and converge within ``--converge-s`` seconds of the heal (a target this tool enforces;
the test suite only records it). Prints one line per round, and the seed, fault timeline and node logs of a
failing round. ``--seed S --rounds 1`` replays one round's schedule (the timing of a real run still varies).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

from .net import namespaces_unavailable
from .run import Settings, run_rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="run rounds for this long")
    parser.add_argument("--rounds", type=int, help="stop after this many rounds")
    parser.add_argument("--seed", type=int, help="first round's seed (then seed+1, ...); default random")
    parser.add_argument("--round-s", type=float, default=60.0, help="seconds of faults per round")
    parser.add_argument("--rate", type=float, default=15.0, help="writes per second per node")
    parser.add_argument("--converge-s", type=float, default=10.0, help="convergence target after a heal")
    parser.add_argument("--proxies", action="store_true", help="TCP proxies even when namespaces work")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    why_not = namespaces_unavailable() if not args.proxies else "--proxies"
    if why_not:
        print(f"network namespaces not used ({why_not}): nodes behind TCP proxies")
    settings = Settings(namespaces=why_not is None, chaos_s=args.round_s, rate=args.rate)
    first = args.seed if args.seed is not None else random.randrange(1 << 31)
    seeds = itertools.islice(itertools.count(first), args.rounds)
    root = Path(tempfile.mkdtemp(prefix="drsdtp-chaos-"))
    until = time.monotonic() + args.minutes * 60
    reports, failure = asyncio.run(run_rounds(settings, root, seeds, until=until))
    if failure is None:
        slow = [r for r in reports if r.converged_s is None or r.converged_s > args.converge_s]
        if slow:
            failure = (
                f"{len(slow)} rounds converged later than {args.converge_s} s after the heal: "
                + "; ".join(
                    f"seed {r.seed}: {r.converged_s:.1f} s" for r in slow if r.converged_s is not None
                )
            )
    print(f"{len(reports)} rounds; work dir {root}" + ("" if args.keep or failure else " (removed)"))
    if failure:
        (root / "failure.txt").write_text(failure)
        print(f"CHAOS CHECK FAILED (also in {root / 'failure.txt'})\n{failure}", file=sys.stderr)
        return 1
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
