"""The seeded fault schedule of one chaos round (Jepsen's nemesis vocabulary, on real processes).

A schedule is fixed by its seed before the round starts: a list of faults, each with a start and an end,
executed as one timeline of begin/end steps. Every kind appears at least once when the round is long enough
(the first faults are one of each, shuffled), then kinds are drawn at random. Process faults (kill, pause)
never overlap on one node, nor do two clock jumps; partitions may overlap anything.

* ``partition``: the link between two nodes is cut (both ways), then restored.
* ``isolate``: every link of one node is cut, then restored.
* ``kill``: SIGKILL, then a restart on the same data after a while.
* ``kill+link``: the same, but the node comes back on a slow, lossy link (``DRSDTP_TEST_LINK``) that stays
  until its next restart (the final heal keeps it: convergence must get through it).
* ``pause``: SIGSTOP, then SIGCONT.
* ``clock+`` / ``clock-``: the node's clock jumps forward beyond the peers' ``max_offset_ms`` (they must
  refuse its stamps and count the refusals) or backward (its HLC must not go back), then returns to 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .cluster import MAX_OFFSET_MS

KINDS = ("partition", "isolate", "kill", "kill+link", "pause", "clock+", "clock-")


@dataclass(frozen=True)
class Fault:
    kind: str
    node: str
    start_s: float
    end_s: float
    peer: str = ""  # partition
    offset_ms: int = 0  # clock jumps
    link: str = ""  # kill+link: DRSDTP_TEST_LINK of the restarted node

    def describe(self) -> str:
        what = {
            "partition": f"cut {self.node} <-> {self.peer}",
            "isolate": f"isolate {self.node}",
            "kill": f"kill -9 {self.node}",
            "kill+link": f"kill -9 {self.node}, back on a bad link ({self.link})",
            "pause": f"SIGSTOP {self.node}",
            "clock+": f"clock of {self.node} {self.offset_ms:+d} ms",
            "clock-": f"clock of {self.node} {self.offset_ms:+d} ms",
        }[self.kind]
        return f"{what} for {self.end_s - self.start_s:.1f} s"


@dataclass(frozen=True)
class Step:
    at_s: float
    begin: bool
    fault: Fault


def plan(seed: int, nodes: list[str], duration_s: float) -> list[Fault]:
    rng = random.Random(seed)
    first = list(KINDS)
    rng.shuffle(first)
    process_free = dict.fromkeys(nodes, 0.0)  # kill/pause end
    clock_free = dict.fromkeys(nodes, 0.0)
    faults: list[Fault] = []
    t = rng.uniform(1.0, 2.0)
    while t < duration_s - 1.0:
        from_first = bool(first)
        kind = first.pop() if from_first else rng.choice(KINDS)
        # Mostly short; now and then longer than keepalive detection (10 + 5 s) takes to end a stream.
        length = rng.uniform(1.0, 6.0) if rng.random() < 0.85 else rng.uniform(12.0, 20.0)
        if kind in ("kill", "kill+link", "pause"):
            free = [n for n in nodes if process_free[n] <= t]
        elif kind.startswith("clock"):
            free = [n for n in nodes if clock_free[n] <= t]
        else:
            free = list(nodes)
        if not free:
            if from_first:
                first.append(kind)  # try it again a little later
            t += rng.uniform(0.5, 1.5)
            continue
        node = rng.choice(free)
        fault = Fault(kind, node, t, t + length)
        if kind == "partition":
            fault = Fault(kind, node, t, t + length, peer=rng.choice([n for n in nodes if n != node]))
        elif kind in ("kill", "kill+link", "pause"):
            process_free[node] = t + length
            if kind == "kill+link":
                link = f"delay_ms={rng.randint(20, 60)},jitter_ms=15,loss=0.02,seed={rng.randrange(1 << 30)}"
                fault = Fault(kind, node, t, t + length, link=link)
        elif kind.startswith("clock"):
            clock_free[node] = t + length + 0.5
            offset = MAX_OFFSET_MS + rng.randint(500, 2000) if kind == "clock+" else -rng.randint(300, 3000)
            fault = Fault(kind, node, t, t + length, offset_ms=offset)
        faults.append(fault)
        t += rng.uniform(1.5, 3.5)
    return faults


def timeline(faults: list[Fault]) -> list[Step]:
    steps = [Step(f.start_s, True, f) for f in faults] + [Step(f.end_s, False, f) for f in faults]
    return sorted(steps, key=lambda s: (s.at_s, s.begin))
