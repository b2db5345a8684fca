"""Rules in a real node process: a rule whose action fails is reported and counted (ListRules, /metrics,
`drsdtp rules`) and sits out, while the other rules go on firing."""

from __future__ import annotations

import json
import pathlib
import urllib.request
from collections.abc import AsyncIterator

import pytest

from drsdtp.wire.v1 import api_pb2
from tests.alarms.support import alarm_of, expose_metrics, report, run_cli
from tests.api.nodes import ApiNode, eventually
from tests.ingest.support import free_port

pytestmark = pytest.mark.integration

RULES = """
[alerting]
period_s = 0.1
[[rules]]
name = "good"
twins = "tank-*"
when = "level > 80"
[[rules]]
name = "bad"
twins = "tank-*"
when = "level > 80"
alarm = false
[[rules.actions]]
type = "set_desired"
field = "inlet"
value_expr = "no_such_field * 2"
"""


@pytest.fixture
async def node(tmp_path: pathlib.Path) -> AsyncIterator[tuple[ApiNode, int]]:
    n = ApiNode("solo", tmp_path)
    n.configure({}, RULES)
    metrics = free_port()
    expose_metrics(n, metrics)
    try:
        await n.start()
        yield n, metrics
    finally:
        n.stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


async def test_a_failing_rule_is_reported_counted_and_isolated(node: tuple[ApiNode, int]) -> None:
    n, metrics = node
    await n.call("Write", report("tank-1", create=True, level=90.0))

    async def good_raised(twin: str) -> bool:
        record = await alarm_of(n, "good", twin)
        return record is not None and record.active

    async def bad_failed() -> bool:
        reply = await n.call("ListRules", api_pb2.ListRulesRequest())
        return any(r.name == "bad" and r.errors for r in reply.rules)

    await eventually(lambda: good_raised("tank-1"), 30, "the good rule raised its alarm")
    await eventually(bad_failed, 30, "the bad rule's failure was counted")
    # The bad rule sits out (suspended); the good one goes on with a twin that comes later.
    await n.call("Write", report("tank-2", create=True, level=95.0))
    await eventually(lambda: good_raised("tank-2"), 30, "the good rule raised the second alarm")

    reply = await n.call("ListRules", api_pb2.ListRulesRequest())
    rules = {r.name: r for r in reply.rules}
    assert rules["good"].errors == 0 and rules["good"].active == 2 and rules["good"].matched == 2
    assert rules["bad"].errors == 1 and rules["bad"].suspended_until_ms > 0
    assert "no_such_field" in rules["bad"].last_error and "tank-1" in rules["bad"].last_error
    assert reply.passes > 0
    text = scrape(metrics)
    assert 'drsdtp_rule_errors_total{rule="bad"} 1.0' in text
    assert "drsdtp_rule_passes" in text
    assert "\ndrsdtp_alarms_active 2.0" in text  # the first scrape counts (then at most every 5 s)
    code, out, err = await run_cli("rules", "--json", "--api", f"127.0.0.1:{n.api_port}")
    assert code == 0, err
    docs = {d["name"]: d for d in json.loads(out)["rules"]}
    assert docs["bad"]["errors"] == 1 and docs["good"]["fired"] == 2
