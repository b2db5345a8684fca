"""A rule's notification with real node processes: the webhook target is down when the alarm is raised, the
node is killed (SIGKILL) with the notification in its outbox, and once the target is back the restarted
node delivers it, signed, exactly once (the restart neither loses nor raises it again)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import pathlib
import urllib.request

import pytest

from drsdtp.alarms.record import alarm_id
from tests.alarms.support import alarm_of, expose_metrics, report
from tests.api.nodes import ApiNode, eventually
from tests.ingest.support import free_port
from tests.notify.receivers import HttpReceiver

pytestmark = pytest.mark.integration


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith((name + " ", name + "{")):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_webhook_that_is_down_gets_the_notification_after_a_restart(tmp_path: pathlib.Path) -> None:
    hook, metrics = free_port(), free_port()
    node = ApiNode("solo", tmp_path)
    node.configure(
        {},
        "[alerting]\nperiod_s = 0.1\nretry_min_s = 0.05\nretry_max_s = 0.2\n"
        f'[[notify]]\nname = "ops"\ntype = "webhook"\nurl = "http://127.0.0.1:{hook}/alarms"\nsecret = "k"\n'
        '[[rules]]\nname = "tank-high"\ntwins = "tank-*"\nwhen = "level > 80"\nseverity = "critical"\n'
        '[[rules.actions]]\ntype = "notify"\ntarget = "ops"\n',
    )
    expose_metrics(node, metrics)
    receiver = HttpReceiver(hook)
    try:
        await node.start()
        await node.call("Write", report("tank-1", create=True, level=95.0))

        async def queued_and_failing() -> bool:
            pending = await asyncio.to_thread(metric, metrics, "drsdtp_notify_pending")
            failures = await asyncio.to_thread(metric, metrics, "drsdtp_notify_failures_total")
            return pending == 1 and failures >= 2

        await eventually(queued_and_failing, 30, "the notification waits in the outbox, retried")
        node.kill()
        await receiver.start()
        await node.start()
        async with asyncio.timeout(60):
            await receiver.arrived.wait()
        await eventually(
            lambda: asyncio.to_thread(lambda: metric(metrics, "drsdtp_notify_pending") == 0),
            30,
            "outbox empty",
        )
        await eventually(
            lambda: asyncio.to_thread(lambda: metric(metrics, "drsdtp_rule_passes_total") > 20),
            30,
            "more passes",
        )
        record = await alarm_of(node, "tank-high", "tank-1")
        assert record is not None and record.active and record.count == 1
    finally:
        node.stop()
        await receiver.stop()
    (post,) = receiver.posts  # once: the restart did not raise the active alarm again
    event = json.loads(post.body)
    alarm = alarm_id("tank-high", "tank-1")
    assert (event["event"], event["alarm"], event["episode"], event["severity"]) == (
        "raised",
        alarm,
        1,
        "critical",
    )
    assert event["inputs"] == {"level": 95.0}
    assert (
        post.headers["x-drsdtp-signature"]
        == "sha256=" + hmac.new(b"k", post.body, hashlib.sha256).hexdigest()
    )
    assert post.headers["x-drsdtp-id"] == f"{alarm}:1:raised"
