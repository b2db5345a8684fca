"""Sparkplug B out: the node publishes its twins as a Sparkplug edge node, so a SCADA host sees them.

Settings::

    [sparkplug]
    host = "broker.plant.local"
    port = 1883
    group_id = "plant-a"
    edge_node_id = "edge-07"          # default: the node's id
    twins = ["line-1/*", "pump-*"]    # globs of the twins to publish (default: every twin but internal ones)
    interval_s = 1.0                  # data by exception, at most one NDATA per interval
    max_metrics = 100000              # metrics in a birth (more are left out, counted)

Each numeric field (float, integer, boolean) of a published twin is a metric named ``<twin>/<field>`` with an
alias; internal fields are left out. A field's health quality (its ``<field>.q``, in [0, 1]) rides on its
metric as properties, as SCADA hosts read them: ``Quality`` (Int32: 192 good, 0 bad, below
:data:`GOOD_QUALITY`) and ``drsdtp/quality`` (the score itself); a change of either is data too. The session:

* the MQTT will is the NDEATH with this session's ``bdSeq`` (counted up per connection and kept on disk,
  so a host can tell a late death certificate of an earlier session);
* NBIRTH carries ``bdSeq`` and every metric with its current value and datatype;
* NDATA carries, by alias, the metrics whose value changed since it was last published (the node's change
  feed says which twins to look at), ``seq`` counting 0..255 across birth and data;
* a metric that was not in the birth (a new twin or field, a field the intelligence starts to forecast)
  makes the next publication a new NBIRTH, as the specification requires; so does an NCMD
  ``Node Control/Rebirth``.

With ``forecasts = true`` (the default) a forecast field also has its forecast metrics, published by
exception past a deadband (:mod:`~drsdtp.northbound.sparkplug_forecast`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drsdtp._core import Store
from drsdtp.adapters.sparkplug_write import NAMESPACE, REBIRTH_METRIC
from drsdtp.api.feed import ChangeFeed
from drsdtp.config import SparkplugConfig
from drsdtp.errors import AdapterError
from drsdtp.history.files import atomic_write
from drsdtp.lifecycle import BackgroundService
from drsdtp.metrics import NodeMetrics
from drsdtp.northbound.sparkplug_forecast import FORECAST_METRICS, ForecastSource, Outlook, moved, numbers
from drsdtp.supervisor import Backoff, Supervisor
from drsdtp.wire.sparkplug import sparkplug_b_pb2 as spb

if TYPE_CHECKING:
    import aiomqtt

__all__ = ["PublisherStats", "SparkplugPublisher", "add_publisher_metrics"]

log = logging.getLogger(__name__)
GOOD_QUALITY = 0.5  # the executor's default interlock threshold (actuators' min_quality)
_GOOD, _BAD = 192, 0  # Sparkplug/OPC-style quality codes

Number = float | int | bool
Sample = tuple[Number, float | None]  # a value and its health quality (None: the field has none)
_FEED_BATCH = 10_000


@dataclass(slots=True)
class PublisherStats:
    births: int = 0
    data_messages: int = 0
    metrics_published: int = 0  # values in births and data
    metrics_left_out: int = 0  # past max_metrics
    rebirth_requests: int = 0  # NCMD Node Control/Rebirth received
    forecasts_published: int = 0  # forecast metric values in data (births not counted)
    forecasts_held_back: int = 0  # forecast values inside the deadband, not published


class SparkplugPublisher(BackgroundService):
    name = "sparkplug edge node"

    def __init__(
        self,
        config: SparkplugConfig,
        node_id: str,
        store: Store,
        feed: ChangeFeed,
        data_dir: Path,
        forecasts: ForecastSource | None = None,
    ):
        self.config = config
        self.forecasts = forecasts if config.forecasts else None
        self.edge = config.edge_node_id or node_id
        self.store = store
        self.feed = feed
        self.stats = PublisherStats()
        self._bd_path = data_dir / "sparkplug" / "bdseq"
        self._bd_seq = self._load_bd_seq()
        self._seq = 0
        self._aliases: dict[tuple[str, str], int] = {}
        self._last: dict[tuple[str, str], Sample] = {}
        # Per forecast field: the numbers last published (their metrics' aliases are in _aliases).
        self._forecast: dict[tuple[str, str], dict[str, float | None]] = {}
        self._pass = -1  # the intelligence pass whose forecasts were looked at
        self._rebirth = False
        self.supervisor: Supervisor[Any] = Supervisor(
            "sparkplug", self._client, self._session, Backoff(initial_s=0.2, max_s=config.max_backoff_s)
        )

    def topic(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.config.group_id}/{kind}/{self.edge}"

    async def run(self) -> None:
        await self.supervisor.run()

    # --- the session --------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[aiomqtt.Client]:
        import aiomqtt

        self._bd_seq = (self._bd_seq + 1) % 256  # a new session: a new death certificate
        self._save_bd_seq()
        c = self.config
        will = aiomqtt.Will(self.topic("NDEATH"), self._death(), qos=1)
        client = aiomqtt.Client(
            c.host,
            c.port,
            identifier=f"drsdtp-sparkplug-{self.edge}",
            username=c.username,
            password=_read(c.password_file),
            will=will,
            keepalive=c.keepalive_s,
            clean_session=True,
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise AdapterError(f"sparkplug: cannot connect to {c.host}:{c.port}: {exc}") from exc
        try:
            yield client
        finally:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await client.__aexit__(None, None, None)

    async def _session(self, client: aiomqtt.Client) -> None:
        import aiomqtt

        try:
            await client.subscribe(self.topic("NCMD"), qos=1)
            subscription = self.feed.subscribe()
            await self._birth(client)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._commands(client))
                while True:
                    await asyncio.sleep(self.config.interval_s)
                    changed: set[str] = set()
                    while True:  # every twin changed since the last look, without waiting
                        batch, subscription.cursor = self.feed.read(subscription.cursor, _FEED_BATCH)
                        if not batch:
                            break
                        changed.update(c.twin for c in batch)
                    new_pass = self.forecasts is not None and self.forecasts.passes != self._pass
                    if self._rebirth:
                        await self._birth(client)
                    elif changed or new_pass:
                        await self._data(client, changed, new_pass)
        except aiomqtt.MqttError as exc:
            raise AdapterError(f"sparkplug: connection lost: {exc}") from exc

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                payload = spb.Payload.FromString(bytes(message.payload))
            except Exception:  # a malformed command is the sender's problem
                log.warning("sparkplug: ignoring a malformed NCMD")
                continue
            if any(m.name == REBIRTH_METRIC and m.boolean_value for m in payload.metrics):
                self.stats.rebirth_requests += 1
                self._rebirth = True

    # --- messages -----------------------------------------------------------------------------------------

    def _published(self, twin: str) -> bool:
        if twin.startswith("_"):
            return False
        return any(fnmatch.fnmatchcase(twin, g) for g in self.config.twins)

    def _numeric(self, twin: str) -> list[tuple[str, Number, float | None]]:
        fields = self.store.fields(twin)
        out: list[tuple[str, Number, float | None]] = []
        for f, v in fields.items():
            if isinstance(v, float | int) and not f.startswith("_") and not f.endswith(".q"):
                q = fields.get(f + ".q")
                out.append(
                    (f, v, float(q) if isinstance(q, float | int) and not isinstance(q, bool) else None)
                )
        return out

    async def _birth(self, client: aiomqtt.Client) -> None:
        self._rebirth = False
        self._aliases.clear()
        self._last.clear()
        self._forecast.clear()
        if self.forecasts is not None:
            self._pass = self.forecasts.passes
        msg = self._message(seq=0)
        msg.metrics.add(name="bdSeq", datatype=spb.Int64, long_value=self._bd_seq)
        for twin in sorted(t for t in self.store.twins() if self._published(t)):
            for field, value, quality in self._numeric(twin):
                if len(self._aliases) >= self.config.max_metrics:
                    self.stats.metrics_left_out += 1
                    continue
                alias = len(self._aliases) + 1
                self._aliases[(twin, field)] = alias
                self._last[(twin, field)] = (value, quality)
                _set_value(msg.metrics.add(name=f"{twin}/{field}", alias=alias), value, quality, birth=True)
                outlook = self._outlook(twin, field)
                if outlook is not None:
                    if len(self._aliases) + len(FORECAST_METRICS) > self.config.max_metrics:
                        self.stats.metrics_left_out += len(FORECAST_METRICS)
                        continue
                    self._birth_forecast(msg, twin, field, outlook)
        self._seq = 1
        await client.publish(self.topic("NBIRTH"), msg.SerializeToString(), qos=0)
        self.stats.births += 1
        self.stats.metrics_published += len(msg.metrics) - 1
        log.info(
            "sparkplug: NBIRTH of %s with %d metrics (bdSeq %d)",
            self.edge,
            len(msg.metrics) - 1,
            self._bd_seq,
        )

    async def _data(self, client: aiomqtt.Client, twins: set[str], new_pass: bool = False) -> None:
        msg = self._message(seq=self._seq)
        for twin in sorted(t for t in twins if self._published(t)):
            for field, value, quality in self._numeric(twin):
                key = (twin, field)
                alias = self._aliases.get(key)
                room = len(self._aliases) < self.config.max_metrics
                if alias is None:
                    if room:
                        await self._birth(client)  # a metric the birth did not declare: birth again
                        return
                    continue
                fits = len(self._aliases) + len(FORECAST_METRICS) <= self.config.max_metrics
                if new_pass and key not in self._forecast and fits and self._outlook(twin, field) is not None:
                    await self._birth(client)  # a field forecast since the birth: its metrics need one
                    return
                old = self._last.get(key)
                if old is None or type(old[0]) is not type(value):
                    await self._birth(client)  # its datatype changed: only a birth may say so
                    return
                if old == (value, quality):
                    continue
                self._last[key] = (value, quality)
                _set_value(msg.metrics.add(alias=alias), value, quality, birth=False)
        if new_pass:
            self._data_forecasts(msg)
        if not msg.metrics:
            return
        self._seq = (self._seq + 1) % 256
        await client.publish(self.topic("NDATA"), msg.SerializeToString(), qos=0)
        self.stats.data_messages += 1
        self.stats.metrics_published += len(msg.metrics)

    def _outlook(self, twin: str, field: str) -> Outlook | None:
        return self.forecasts.outlook(twin, field) if self.forecasts is not None else None

    def _birth_forecast(self, msg: spb.Payload, twin: str, field: str, outlook: Outlook) -> None:
        published = numbers(outlook)
        self._forecast[(twin, field)] = published
        for name, number in published.items():
            alias = len(self._aliases) + 1
            self._aliases[(twin, f"{field}/forecast/{name}")] = alias
            metric = msg.metrics.add(name=f"{twin}/{field}/forecast/{name}", alias=alias, datatype=spb.Double)
            _set_forecast(metric, number)
            if name == "value":
                metric.properties.keys.append("horizon_s")
                metric.properties.values.add(type=spb.Double, double_value=outlook.horizon_s)

    def _data_forecasts(self, msg: spb.Payload) -> None:
        """The forecast metrics that moved past the deadband since they were last published."""
        assert self.forecasts is not None
        self._pass = self.forecasts.passes
        deadband = self.config.forecast_deadband
        for (twin, field), published in self._forecast.items():
            outlook = self.forecasts.outlook(twin, field)
            if outlook is None:
                continue
            fresh = numbers(outlook)
            before = dict(published)  # the interval last published scales every metric's deadband
            for name, number in fresh.items():
                if not moved(name, before[name], number, before, deadband):
                    self.stats.forecasts_held_back += number != before[name]
                    continue
                published[name] = number
                _set_forecast(
                    msg.metrics.add(alias=self._aliases[(twin, f"{field}/forecast/{name}")]), number
                )
                self.stats.forecasts_published += 1

    def _message(self, seq: int) -> spb.Payload:
        return spb.Payload(timestamp=int(time.time() * 1000), seq=seq)

    def _death(self) -> bytes:
        msg = spb.Payload(timestamp=int(time.time() * 1000))
        msg.metrics.add(name="bdSeq", datatype=spb.Int64, long_value=self._bd_seq)
        return msg.SerializeToString()

    def _load_bd_seq(self) -> int:
        try:
            return int(self._bd_path.read_text().strip()) % 256
        except (OSError, ValueError):
            return 255  # the first session counts up to 0

    def _save_bd_seq(self) -> None:
        try:
            self._bd_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self._bd_path, str(self._bd_seq).encode())
        except OSError as exc:  # a host then sees a repeated bdSeq after a restart: worth a warning only
            log.warning("sparkplug: cannot keep bdSeq in %s: %s", self._bd_path, exc)


def _set_value(metric: spb.Payload.Metric, value: Number, quality: float | None, *, birth: bool) -> None:
    if isinstance(value, bool):
        datatype, metric.boolean_value = spb.Boolean, value
    elif isinstance(value, int):
        datatype, metric.long_value = spb.Int64, value & (2**64 - 1)
    else:
        datatype, metric.double_value = spb.Double, value
    if birth:
        metric.datatype = datatype
    if quality is not None:
        props = metric.properties
        props.keys.extend(["Quality", "drsdtp/quality"])
        props.values.add(type=spb.Int32, int_value=_GOOD if quality >= GOOD_QUALITY else _BAD)
        props.values.add(type=spb.Double, double_value=quality)


def _set_forecast(metric: spb.Payload.Metric, number: float | None) -> None:
    if number is None:
        metric.is_null = True
    else:
        metric.double_value = number


def _read(path: Path | None) -> str | None:
    return path.read_text().strip() if path is not None else None


def add_publisher_metrics(metrics: NodeMetrics, publisher: SparkplugPublisher) -> None:
    st, sup = publisher.stats, publisher.supervisor.stats
    metrics.add_counter("drsdtp_sparkplug_births", "NBIRTH messages published.", lambda: st.births)
    metrics.add_counter(
        "drsdtp_sparkplug_data_messages", "NDATA messages published.", lambda: st.data_messages
    )
    metrics.add_counter(
        "drsdtp_sparkplug_metrics_published",
        "Metric values in births and data.",
        lambda: st.metrics_published,
    )
    metrics.add_counter(
        "drsdtp_sparkplug_metrics_left_out",
        "Metrics past sparkplug.max_metrics.",
        lambda: st.metrics_left_out,
    )
    metrics.add_counter(
        "drsdtp_sparkplug_rebirth_requests", "NCMD rebirth requests received.", lambda: st.rebirth_requests
    )
    metrics.add_counter(
        "drsdtp_sparkplug_forecasts_published",
        "Forecast metric values in data (moved past sparkplug.forecast_deadband).",
        lambda: st.forecasts_published,
    )
    metrics.add_counter(
        "drsdtp_sparkplug_forecasts_held_back",
        "Forecast values that changed within sparkplug.forecast_deadband, not published.",
        lambda: st.forecasts_held_back,
    )
    metrics.add_gauge(
        "drsdtp_sparkplug_connected", "1 while connected to the broker.", lambda: float(sup.connected)
    )
