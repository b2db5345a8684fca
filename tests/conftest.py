"""How the suite is split between pytest-xdist workers, when it runs on them (opt-in:
``make test-python PYTEST_ARGS="-n 2 --dist loadgroup"``; serial by default).

A test file is the unit of distribution, so its module-scoped fixtures (brokers, servers, node processes)
start once. A few directories share something bigger than a file and stay whole on one worker: the session's
release build (deploy), the firmware built in place by make (firmware), and the README's commands run in the
checkout (docs); and two whose runs are heavy enough that one at a time is what two cores carry: chaos (three
node processes under timed faults) and dashboard (Chromium).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
WHOLE_DIRECTORIES = frozenset({"chaos", "dashboard", "deploy", "docs", "firmware"})


def distribution_group(path: Path) -> str:
    relative = path.resolve().relative_to(TESTS)
    if len(relative.parts) > 1 and relative.parts[0] in WHOLE_DIRECTORIES:
        return relative.parts[0]
    return relative.as_posix()


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist declares this marker too; declared here so --strict-markers holds without it installed.
    config.addinivalue_line("markers", "xdist_group(name): run the tests of one group on one xdist worker")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(distribution_group(item.path)))
