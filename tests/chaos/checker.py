"""After the heal: which acknowledged writes each node holds, and whether the nodes agree.

Jepsen's set checker, for distinct-field writes: an acknowledged write is *present* on a node that holds
its field with its value, *lost* on a node that should hold it (every node here: one scope) and does not.
Writes without a PUBACK may go either way; those present are counted, never required.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .writer import Write


@dataclass
class Verdict:
    digests: dict[str, int]
    lost: dict[str, list[Write]] = field(default_factory=dict)  # node -> acknowledged writes it lacks
    present: int = 0  # (node, acknowledged write) pairs found
    unacked_present: int = 0  # writes without a PUBACK found on every node
    unreachable: list[str] = field(default_factory=list)  # nodes that did not answer

    @property
    def converged(self) -> bool:
        return not self.unreachable and len(set(self.digests.values())) == 1

    @property
    def ok(self) -> bool:
        return self.converged and not any(self.lost.values())

    def describe(self) -> str:
        lost = {n: len(ws) for n, ws in self.lost.items() if ws}
        sample = {n: [f"{w.twin}/{w.field}" for w in ws[:5]] for n, ws in self.lost.items() if ws}
        digests = ", ".join(f"{n}={d:016x}" for n, d in sorted(self.digests.items()))
        unreachable = f"; no answer from {self.unreachable}" if self.unreachable else ""
        return f"lost per node {lost or 0} {sample if sample else ''}; digests {digests}{unreachable}"


def classify(
    states: dict[str, dict[str, dict[str, object]]],
    digests: dict[str, int],
    acked: Iterable[Write],
    sent: Iterable[Write],
) -> Verdict:
    """``states``: node -> twin -> field -> value, as read through each node's API."""
    verdict = Verdict(digests, lost={n: [] for n in states})
    acked = set(acked)

    def holds(node: str, w: Write) -> bool:
        return states[node].get(w.twin, {}).get(w.field) == float(w.seq)

    for w in sorted(acked, key=lambda w: (w.node, w.seq)):
        for node in states:
            if holds(node, w):
                verdict.present += 1
            else:
                verdict.lost[node].append(w)
    verdict.unacked_present = sum(
        1 for w in sent if w not in acked and all(holds(node, w) for node in states)
    )
    return verdict
