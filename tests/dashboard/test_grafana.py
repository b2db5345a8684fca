"""deploy/grafana/drsdtp-node.json, the Grafana dashboard of a node's Prometheus metrics: it is a dashboard
Grafana imports (panels placed on its grid, one Prometheus data source chosen at import, a node selector),
and every metric it queries is one a real node, fed by the simulated plant, exposes on /metrics."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http.support import HttpNode, http_node

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "drsdtp-node.json"
PLANT = '[[adapters]]\ntype = "simulated"\nname = "plant"\nrooms = 1\nseed = 1\ndt_s = 1.0\nspeedup = 10.0\n'
# The series each family type adds to its name in the exposition format.
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpNode]:
    with http_node(tmp_path_factory.mktemp("grafana"), PLANT) as n:
        yield n


def exposed(text: str) -> set[str]:
    """Every series name /metrics can hold: its samples', and each declared family's (with its suffixes)
    even while the family has no sample (a peer-labelled gauge on a node without peers)."""
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(family)
        names.update(family + s for s in SUFFIXES.get(kind, ()))
    return names


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc["panels"] if p["type"] != "row"]


def test_the_dashboard_is_one_grafana_imports() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and isinstance(doc["schemaVersion"], int)
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert "drsdtp_node_info" in variables["instance"]["definition"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        spot = {(grid["y"] + dy, grid["x"] + dx) for dy in range(grid["h"]) for dx in range(grid["w"])}
        assert not spot & cells, f"{panel['title']} overlaps another panel"
        cells |= spot
    for panel in panels(doc):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
            assert 'instance=~"$instance"' in expr, f"{panel['title']}: {expr} ignores the node selector"


def test_every_metric_it_queries_exists_on_a_real_node(node: HttpNode) -> None:
    node.wait_health()  # an intelligence pass ran: the health and anomaly families are filled
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=20) as reply:
        text: str = reply.read().decode()
    names = exposed(text)
    doc = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in panels(doc)
        for target in panel["targets"]
        for name in re.findall(r"\bdrsdtp_[a-z0-9_]+\b", target["expr"])
    }
    assert len(queried) >= 25
    assert queried - names == set(), "queried but not on /metrics"
    # The ingest panels have samples to show: the plant's adapter delivered readings.
    assert 'drsdtp_ingest_received_total{source="plant"}' in text
