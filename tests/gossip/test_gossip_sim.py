"""The seeded in-process simulation (see ``tests/gossip/sim.py``): five replicas of the real engine running
the real protocol class through a network that drops, duplicates, reorders and partitions, with crash
restarts that recover from the real write-ahead log (some mid-commit, leaving a torn tail). Each seed must
converge to the oracle and the sequential spec; a failure prints ``SEED=...``.

Longer runs: ``python -m tests.gossip.sim --seeds 5000`` (``--strict``, ``--scopes`` for the variants).
"""

from __future__ import annotations

import logging

import pytest

from .sim import SCOPED, SimSettings, Simulation, run_seed

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def quiet_protocol_warnings() -> None:
    # Truncation warnings are expected by the hundred here; keep pytest's log capture small and fast.
    logging.getLogger("drsdtp.gossip").setLevel(logging.ERROR)


@pytest.mark.parametrize("seed", range(1000))
def test_lossy_network_with_partitions_and_crashes_converges(seed: int) -> None:
    sim = run_seed(seed, SimSettings())
    assert sim.counts["delivered"] > 0


@pytest.mark.parametrize("seed", range(1000, 1100))
def test_delta_path_alone_converges_once_healed(seed: int) -> None:
    run_seed(seed, SimSettings(strict=True))


@pytest.mark.parametrize("seed", range(2000, 2040))
def test_partial_replication_keeps_each_node_to_its_scopes(seed: int) -> None:
    run_seed(seed, SCOPED)


def test_the_faults_actually_happen() -> None:
    """Across a few seeds the schedule drops, duplicates, partitions and crashes (some mid-commit, so that
    recovery cuts a torn tail), logs take snapshots, and buffers truncate."""
    totals: dict[str, int] = {}
    truncations = repairs = 0
    for seed in range(10):
        sim = run_seed(seed, SimSettings())
        for key, value in sim.counts.items():
            totals[key] = totals.get(key, 0) + value
        for replica in sim.replicas.values():
            for link in replica.core.links.values():
                truncations += link.stats.truncations
                repairs += link.stats.catchups
    assert totals["dropped"] > 0.05 * totals["delivered"]
    assert totals["duplicated"] > 0
    assert totals["crashes"] > 0 and totals["partitions"] > 0
    assert totals["snapshots"] > 0
    assert totals["torn_commits"] > 0 and totals["torn_bytes_cut"] > 0  # the real recovery cut them
    assert truncations > 0 and repairs > 0


def test_without_the_durability_barrier_crashes_break_convergence() -> None:
    """The simulation can fail: shipping catch-up state that holds not-yet-durable local writes lets a
    crashed node reissue an event its peers already have (the reason for ``Inbound.after_sync``)."""
    failures = 0
    for seed in range(20):
        try:
            Simulation(seed, SimSettings(durable_barrier=False, crash=0.03)).run()
        except AssertionError:
            failures += 1
    assert failures >= 5


def test_a_log_that_loses_acknowledged_writes_breaks_the_check() -> None:
    """Durability bugs show up too: a disk that loses the last group the log committed (acknowledged, maybe
    already shipped) when the node crashes makes the replicas differ from each other or from the oracle."""
    failures = 0
    for seed in range(20):
        try:
            Simulation(seed, SimSettings(lose_last_commit=True, crash=0.03)).run()
        except AssertionError:
            failures += 1
    assert failures >= 5
