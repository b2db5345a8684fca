"""Each notification target against a real server: the webhook's POST and HMAC signature, retries until a
target that was down comes back, an MQTT publish through mosquitto, an e-mail through an SMTP relay; and
the outbox's bound and durability."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drsdtp.errors import ConfigError
from drsdtp.notify.outbox import Outbox
from drsdtp.notify.service import NotifyService
from drsdtp.notify.targets import NotifyTarget, parse_targets
from drsdtp.supervisor import Backoff
from tests.ingest.support import Mosquitto, free_port, running
from tests.notify.receivers import HttpReceiver, SmtpReceiver

FAST = Backoff(initial_s=0.05, max_s=0.2)
EVENT: dict[str, Any] = {
    "id": "abc:1:raised", "event": "raised", "rule": "hot", "twin": "room-1", "severity": "major",
    "message": "too hot", "node": "n1", "inputs": {"t": 31.5},
}  # fmt: skip


@contextlib.asynccontextmanager
async def service(targets: Sequence[NotifyTarget], directory: Path) -> AsyncIterator[NotifyService]:
    async with NotifyService(targets, directory, max_items=100, max_bytes=1 << 20, backoff=FAST) as s:
        yield s


async def until(check: Any, what: str) -> None:
    """Polls ``check`` (a counter of the service) until it holds; 30 s bounds a hang, not a speed."""
    async with asyncio.timeout(30):
        while not check():  # noqa: ASYNC110 (the service has no event per counter)
            await asyncio.sleep(0.02)


async def test_webhook_down_then_back_gets_it_once_with_a_valid_signature(tmp_path: Path) -> None:
    port = free_port()
    (target,) = parse_targets(
        [{"name": "ops", "type": "webhook", "url": f"http://127.0.0.1:{port}/hook?x=1", "secret": "s3cret"}]
    )
    receiver = HttpReceiver(port)
    async with service([target], tmp_path) as notify:
        await notify.enqueue("ops", EVENT)
        await until(lambda: notify.stats["ops"].failures >= 3, "three refused attempts")
        assert len(notify.outbox) == 1
        await receiver.start()
        try:
            await until(lambda: notify.stats["ops"].sent == 1, "delivered")
        finally:
            await receiver.stop()
    (post,) = receiver.posts
    assert post.path == "/hook?x=1" and json.loads(post.body) == EVENT
    expected = "sha256=" + hmac.new(b"s3cret", post.body, hashlib.sha256).hexdigest()
    assert post.headers["x-drsdtp-signature"] == expected
    assert post.headers["x-drsdtp-id"] == "abc:1:raised"
    assert len(notify.outbox) == 0 and not await asyncio.to_thread(lambda: list(tmp_path.glob("*.json")))


async def test_a_refusing_webhook_is_retried_and_its_failures_counted(tmp_path: Path) -> None:
    port = free_port()
    (target,) = parse_targets([{"name": "ops", "type": "webhook", "url": f"http://127.0.0.1:{port}/"}])
    receiver = HttpReceiver(port, status=503)
    await receiver.start()
    try:
        async with service([target], tmp_path) as notify:
            await notify.enqueue("ops", EVENT)
            await until(lambda: len(receiver.posts) >= 2, "two attempts")
            assert notify.stats["ops"].sent == 0 and "HTTP 503" in notify.stats["ops"].last_error
            receiver.status = 204
            await until(lambda: notify.stats["ops"].sent == 1, "taken at last")
    finally:
        await receiver.stop()
    assert "signature" not in " ".join(receiver.posts[-1].headers)  # no secret, no signature


async def test_mqtt_publish_through_mosquitto(tmp_path: Path) -> None:
    with running(Mosquitto(tmp_path)) as broker:
        (target,) = parse_targets(
            [{"name": "bus", "type": "mqtt", "port": broker.port, "topic": "alarms/{severity}/{rule}/{twin}"}]
        )
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("alarms/#", qos=1)
            async with service([target], tmp_path / "outbox") as notify:
                await notify.enqueue("bus", EVENT)
                async with asyncio.timeout(30):
                    message = await anext(aiter(client.messages))
            assert str(message.topic) == "alarms/major/hot/room-1"
            assert isinstance(message.payload, bytes) and json.loads(message.payload) == EVENT


async def test_email_through_an_smtp_relay(tmp_path: Path) -> None:
    relay = SmtpReceiver(free_port())
    await relay.start()
    try:
        (target,) = parse_targets(
            [{"name": "mail", "type": "email", "host": "127.0.0.1", "port": relay.port,
              "sender": "drsdtp@plant.example", "to": ["ops@plant.example", "boss@plant.example"]}]
        )  # fmt: skip
        async with service([target], tmp_path) as notify:
            await notify.enqueue("mail", EVENT)
            await until(lambda: notify.stats["mail"].sent == 1, "mailed")
    finally:
        await relay.stop()
    (message,) = relay.messages
    assert relay.envelopes == [("drsdtp@plant.example", ["ops@plant.example", "boss@plant.example"])]
    assert message["Subject"] == "[major] hot raised on room-1"
    assert message["X-Drsdtp-Id"] == "abc:1:raised"
    assert "input t = 31.5" in message.get_content()


def test_outbox_survives_reopen_and_drops_the_oldest_beyond_its_bound(tmp_path: Path) -> None:
    box = Outbox(tmp_path, max_items=3, max_bytes=1 << 20)
    for i in range(5):
        box.put("ops", {"id": f"e{i}"})
    assert box.dropped == 2 and len(box) == 3
    (tmp_path / "0000000000000099.json").write_text("{torn")  # a damaged file is set aside, counted
    again = Outbox(tmp_path, max_items=3, max_bytes=1 << 20)
    assert [i.event["id"] for i in again.items.values()] == ["e2", "e3", "e4"]
    assert again.unreadable == 1 and (tmp_path / "0000000000000099.bad").exists()
    first = again.pending("ops")
    assert first is not None
    again.done(first.seq)
    assert [i.event["id"] for i in Outbox(tmp_path, max_items=3, max_bytes=1 << 20).items.values()] == [
        "e3",
        "e4",
    ]


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ({"name": "x", "type": "webhook", "url": "ftp://a/"}, "notify[0].url", "not an http"),
        ({"name": "x", "type": "pager"}, "notify[0].type", "must be one of"),
        ({"name": "x", "type": "mqtt", "topic": "a/{who}"}, "notify[0].topic", "unknown placeholder {who}"),
        (
            {"name": "x", "type": "email", "host": "h", "sender": "s", "to": []},
            "notify[0].to",
            "at least one recipient",
        ),
        ({"name": "x", "type": "webhook", "url": "http://a/", "secert": "s"}, "notify[0].secert", "unknown"),
    ],
)
def test_target_config_errors_name_the_key(table: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_targets([table])
    assert info.value.key == key and message in info.value.reason
