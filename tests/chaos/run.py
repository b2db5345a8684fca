"""One chaos round on a running cluster: writes under a seeded fault schedule, then heal, converge, check.

The round (Jepsen's shape): QoS 1 writers publish to every node while the schedule cuts links, kills and
restarts, pauses and resumes nodes, jumps clocks and gives nodes bad links. Then the writers stop and their
PUBACKs settle, and everything heals: links up, clocks back to 0, paused nodes resumed, dead ones
restarted (a bad link stays until a node's next restart). From the moment every node answers again the
round polls the state digests; once they agree it reads every node's state and classifies each
acknowledged write (present or lost). It records how long after the heal the nodes converged, the
clock-skew refusals the nodes counted, and whether any node's HLC went backwards.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .checker import Verdict, classify
from .cluster import Cluster
from .schedule import Fault, Step, plan, timeline
from .writer import Writers


@dataclass(frozen=True)
class Settings:
    namespaces: bool
    chaos_s: float = 30.0
    rate: float = 15.0  # writes per second per node
    nodes: tuple[str, ...] = ("a", "b", "c")
    liveness_s: float = 60.0  # a cap on waiting for convergence, not a speed check
    faults: tuple[Fault, ...] | None = None  # a fixed schedule instead of the seeded one
    wal_off: tuple[str, ...] = ()  # nodes running without a write-ahead log (the checker's own test)


@dataclass
class RoundReport:
    seed: int
    net: str
    chaos_s: float
    faults: list[Fault]
    timeline: list[str] = field(default_factory=list)
    verdict: Verdict | None = None
    acked: int = 0
    sent: int = 0
    converged_s: float | None = None  # from the heal (every node up again) to converged and complete
    heal_s: float = 0.0  # from the end of the chaos phase to every node up again
    skew_refusals: int = 0  # clock-skew refusals counted by the nodes (payloads and handshakes)
    hlc_regressions: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict is not None and self.verdict.ok and not self.hlc_regressions

    def summary(self) -> str:
        kinds = collections.Counter(f.kind for f in self.faults)
        converged = f"{self.converged_s:.1f} s" if self.converged_s is not None else "never"
        verdict = self.verdict.describe() if self.verdict is not None else "no verdict"
        return (
            f"chaos round seed={self.seed} on {self.net}: {len(self.faults)} faults {dict(kinds)}; "
            f"{self.acked} of {self.sent} writes acknowledged; heal took {self.heal_s:.1f} s, converged "
            f"{converged} after it; {self.skew_refusals} clock-skew refusals; {verdict}; "
            f"{self.verdict.unacked_present if self.verdict else 0} unacknowledged writes present"
        )

    def failure(self, cluster: Cluster) -> str:
        """The seed, the fault timeline and what each node logged last (for a failed round)."""
        proxies = " --proxies" if self.net == "proxies" else ""
        replay = f"python -m tests.chaos --seed {self.seed} --rounds 1 --round-s {self.chaos_s:g}{proxies}"
        lines = [self.summary(), f"replay the schedule (not its timing): {replay}"]
        lines += ["fault timeline:", *self.timeline]
        lines += self.hlc_regressions
        for name, node in cluster.nodes.items():
            lines += [f"--- {name}: {node.log_path} (last lines)", node.log_tail(15)]
        return "\n".join(lines)


class Round:
    def __init__(self, cluster: Cluster, writers: Writers, settings: Settings, seed: int) -> None:
        self.cluster = cluster
        self.writers = writers
        self.settings = settings
        self.seed = seed
        self.names = list(cluster.nodes)
        faults = (
            list(settings.faults) if settings.faults is not None else plan(seed, self.names, settings.chaos_s)
        )
        self.report = RoundReport(seed, cluster.net.kind, settings.chaos_s, faults)
        self._cuts: collections.Counter[frozenset[str]] = collections.Counter()
        self._t0 = 0.0
        # Per node and process start: the highest HLC and skew-refusal count seen (counters restart with it).
        self._lives: dict[str, int] = dict.fromkeys(self.names, 0)
        self._hlc: dict[tuple[str, int], int] = {}
        self._refusals: dict[tuple[str, int], int] = {}

    def _log(self, text: str) -> None:
        self.report.timeline.append(f"{time.monotonic() - self._t0:7.2f} s  {text}")

    async def run(self) -> RoundReport:
        s = self.settings
        self._t0 = time.monotonic()
        self._log(f"seed {self.seed}, {s.chaos_s:.0f} s of faults on {self.cluster.net.kind}")
        writing = asyncio.create_task(self.writers.run(s.rate))
        watching = asyncio.create_task(self._watch())
        try:
            for step in timeline(self.report.faults):
                if step.at_s > s.chaos_s:
                    break  # what is still in force is undone by the heal
                await self._until(step.at_s)
                await self._apply(step)
            await self._until(s.chaos_s)
        finally:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        await self.writers.settle()
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await self._sample()  # the refusal counters as they stand before the heal restarts anyone
        self.report.acked, self.report.sent = len(self.writers.acked), len(self.writers.sent)
        healing = time.monotonic()
        await self._heal()
        healed = time.monotonic()
        self.report.heal_s = healed - healing
        self._log("healed: every node up, every link restored, every clock at offset 0")
        self.report.verdict = await self._converge(healed)
        return self.report

    async def _until(self, at_s: float) -> None:
        await asyncio.sleep(max(0.0, self._t0 + at_s - time.monotonic()))

    # --- faults -----------------------------------------------------------------------------------------

    async def _apply(self, step: Step) -> None:
        f, node = step.fault, self.cluster.nodes[step.fault.node]
        if f.kind in ("partition", "isolate"):
            peers = [f.peer] if f.kind == "partition" else [n for n in self.names if n != f.node]
            for peer in peers:
                if step.begin:
                    self._cut(f.node, peer)
                else:
                    self._restore(f.node, peer)
        elif f.kind in ("kill", "kill+link"):
            if step.begin:
                await node.kill()
                self._lives[f.node] += 1
            else:
                node.start(link=f.link or None)
        elif f.kind == "pause" and step.begin:
            node.pause()
        elif f.kind == "pause":
            node.resume()
        else:
            node.set_clock(f.offset_ms if step.begin else 0)
        self._log(("begin " if step.begin else "end   ") + f.describe())

    def _cut(self, a: str, b: str) -> None:
        pair = frozenset((a, b))
        if not self._cuts[pair]:
            self.cluster.net.cut(a, b)
        self._cuts[pair] += 1

    def _restore(self, a: str, b: str) -> None:
        pair = frozenset((a, b))
        self._cuts[pair] -= 1
        if not self._cuts[pair]:
            self.cluster.net.heal(a, b)

    async def _heal(self) -> None:
        self.cluster.net.heal_all()
        self._cuts.clear()
        for name, node in self.cluster.nodes.items():
            node.set_clock(0)
            if node.paused:
                node.resume()
            if not node.running:
                node.start()
                self._lives[name] += 1
        await self.cluster.wait_ready(self.names)

    # --- observations -----------------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._sample()

    async def _sample(self) -> None:
        """Each live node's HLC (it must never go back within a process) and skew-refusal counters."""
        for name, node in self.cluster.nodes.items():
            if not node.running or node.paused:
                continue
            life = (name, self._lives[name])
            status = await node.status()
            if status is not None:
                before = self._hlc.get(life, 0)
                if status.hlc < before:
                    self.report.hlc_regressions.append(f"{name}: HLC went back from {before} to {status.hlc}")
                self._hlc[life] = max(before, status.hlc)
            try:
                metrics = await node.metrics()
            except OSError:
                continue
            skew = sum(v for series, v in metrics.items() if 'reason="clock_skew"' in series)
            self._refusals[life] = max(self._refusals.get(life, 0), int(skew))
        self.report.skew_refusals = sum(self._refusals.values())

    async def _converge(self, healed: float) -> Verdict:
        nodes = self.cluster.nodes
        deadline = healed + self.settings.liveness_s
        while True:
            statuses = await asyncio.gather(*(n.status() for n in nodes.values()))
            digests = {name: s.state_digest for name, s in zip(nodes, statuses, strict=True) if s is not None}
            last_try = time.monotonic() > deadline
            if len(digests) == len(nodes) and (len(set(digests.values())) == 1 or last_try):
                states = dict(
                    zip(nodes, await asyncio.gather(*(n.twins() for n in nodes.values())), strict=True)
                )
                verdict = classify(states, digests, self.writers.acked, self.writers.sent)
                if verdict.ok:
                    self.report.converged_s = time.monotonic() - healed
                    self._log(f"converged, every acknowledged write on every node ({self.report.acked})")
                    return verdict
                if last_try:
                    self._log(f"not converged after {self.settings.liveness_s:.0f} s: {verdict.describe()}")
                    return verdict
            elif last_try:
                missing = sorted(set(nodes) - set(digests))
                self._log(f"nodes {missing} did not answer {self.settings.liveness_s:.0f} s after the heal")
                return Verdict(digests, unreachable=missing)
            await asyncio.sleep(0.25)


async def run_rounds(
    settings: Settings,
    root: Path,
    seeds: Iterable[int],
    *,
    until: float = math.inf,
    out: Callable[[str], None] = print,
) -> tuple[list[RoundReport], str | None]:
    """Rounds on one cluster (its data and acknowledged writes accumulate) until the seeds run out, the
    monotonic clock passes ``until`` or a round fails; returns the reports and the failure's text."""
    async with Cluster(
        root, list(settings.nodes), namespaces=settings.namespaces, wal_off=settings.wal_off
    ) as cluster:
        writers = Writers(cluster.broker.port, list(settings.nodes), root.name)
        reports: list[RoundReport] = []
        try:
            for seed in seeds:
                report = await Round(cluster, writers, settings, seed).run()
                reports.append(report)
                out(report.summary())
                if not report.ok:
                    return reports, report.failure(cluster)
                if time.monotonic() > until:
                    break
        finally:
            writers.close()
    return reports, None
