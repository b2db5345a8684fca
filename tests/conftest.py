"""How the suite is split between pytest-xdist workers (``make test`` runs it with ``-n 2 --dist loadgroup``;
``PYTEST_ARGS=`` runs it serially).

A test file is the unit of distribution, so its module-scoped fixtures (brokers, servers, node processes)
start once and its tests run in order. A few directories share something bigger than a file and stay whole on
one worker: the session's release build and the host paths it installs to (deploy), the firmware built in
place by make (firmware), and the README's commands run in the checkout (docs); and two whose runs are heavy
enough that one at a time is what two cores carry: chaos (three node processes under timed faults) and
dashboard (Chromium). Those two also share one group, so they never run at the same time: chaos puts a veth
of each node's namespace in the root namespace, and Chromium fails every request in flight when the host's
interfaces change (``ERR_NETWORK_CHANGED``), a write from the page included.

The grouping is a scheduler of our own, not ``xdist_group`` marks: pytest-xdist 3.8 passes a mark's group to
its scheduler by rewriting the test's node id, which pytest 9.2's structured node ids ignore, so with marks
every test silently became its own group (pytest-dev/pytest-xdist#1386) and a module's tests, with its
module-scoped node, were spread over the workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ports import claim_scope

TESTS = Path(__file__).resolve().parent
WHOLE_DIRECTORIES = frozenset({"chaos", "dashboard", "deploy", "docs", "firmware"})


# Directories that run as one group: those whose tests change the root network namespace, with those a change
# of it breaks.
SHARED_GROUPS = {"chaos": "root-network", "dashboard": "root-network"}


@pytest.fixture(scope="module", autouse=True)
def _port_claims() -> Iterator[None]:
    """The ports a test module claims (``tests.ports.free_port``) are held until its fixtures have stopped
    their servers, then released for the other test processes. Autouse, so set up before the module's other
    fixtures and torn down after them."""
    with claim_scope():
        yield


def distribution_group(path: Path) -> str:
    relative = path.resolve().relative_to(TESTS)
    if len(relative.parts) > 1 and relative.parts[0] in WHOLE_DIRECTORIES:
        return SHARED_GROUPS.get(relative.parts[0], relative.parts[0])
    return relative.as_posix()


# Groups that take minutes, with their time in a loaded run (seconds, summed from ``--durations``): handed
# out first, longest first. xdist orders groups by their number of tests, so a long group of few tests (a
# campaign, a cluster) could start late and run alone while the other worker idled. A group not listed keeps
# xdist's order after these: a stale entry costs balance, never a test.
LONG_GROUPS: dict[str, float] = {
    "docs": 1440.0,
    "intelligence/test_detect.py": 1120.0,
    "deploy": 1060.0,
    "root-network": 360.0,
    "kernels/test_asset_kernels.py": 280.0,
    "intelligence/test_intel_engine.py": 250.0,
    "intelligence/test_intel_validation.py": 170.0,
    "intelligence/test_intel_health.py": 120.0,
}


def group_order(group: str, tests: int) -> tuple[float, int]:
    return (-LONG_GROUPS.get(group, 0.0), -tests)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist loadgroup``: xdist's scope scheduler with our groups as its scopes, longest first."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from collections import OrderedDict

    from xdist.scheduler import LoadScopeScheduling

    class ByDistributionGroup(LoadScopeScheduling):  # type: ignore[misc]  # xdist ships no types
        ordered = False
        workqueue: OrderedDict[str, dict[str, bool]]  # scope -> {nodeid: done}, built by schedule()

        def _split_scope(self, nodeid: str) -> str:
            return distribution_group(config.rootpath / nodeid.split("::", 1)[0])

        def _assign_work_unit(self, node: Any) -> None:
            # The first assignment sees the whole queue, built by schedule(): reorder it once.
            if not self.ordered:
                queue = sorted(self.workqueue.items(), key=lambda kv: group_order(kv[0], len(kv[1])))
                self.workqueue = OrderedDict(queue)
                self.ordered = True
            super()._assign_work_unit(node)

    return ByDistributionGroup(config, log)
