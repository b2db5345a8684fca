"""PostgreSQL history sink: readings streamed through a durable local outbox, each stored exactly once.

Exported metrics (registered by :func:`add_sink_metrics`): ``drsdtp_postgres_rows_total``,
``drsdtp_postgres_batches_total``, ``drsdtp_postgres_replayed_records_total`` (skipped: already held),
``drsdtp_postgres_duplicate_readings_total`` (a reading delivered twice upstream, stored once),
``drsdtp_postgres_dropped_records_total{where}`` (``queue``: the worker fell behind; ``outbox``: past the disk
budget or torn by a crash), ``drsdtp_postgres_connected`` 0/1, ``drsdtp_postgres_reconnects_total``,
``drsdtp_postgres_outbox_bytes``, ``drsdtp_postgres_backlog_journals`` (journal numbers the outbox holds
beyond what the database holds), and for reading history back ``drsdtp_postgres_archive_queries_total``,
``drsdtp_postgres_archive_points_total`` and ``drsdtp_postgres_archive_failures_total``; for events
(:mod:`~drsdtp.northbound.postgres.events`) ``drsdtp_postgres_events_total``,
``drsdtp_postgres_duplicate_events_total`` and ``drsdtp_postgres_events_connected``; for twin changes
(:mod:`~drsdtp.northbound.postgres.changes`) ``drsdtp_postgres_twin_changes_total``,
``drsdtp_postgres_duplicate_twin_changes_total`` and ``drsdtp_postgres_changes_connected``.
"""

from __future__ import annotations

from drsdtp.metrics import NodeMetrics
from drsdtp.northbound.postgres.changes import ChangeSink
from drsdtp.northbound.postgres.events import EventSink
from drsdtp.northbound.postgres.sink import PostgresSink, SinkStats

__all__ = [
    "ChangeSink",
    "EventSink",
    "PostgresSink",
    "SinkStats",
    "add_change_metrics",
    "add_event_metrics",
    "add_sink_metrics",
]


def add_change_metrics(metrics: NodeMetrics, sink: ChangeSink) -> None:
    st, sup = sink.stats, sink.supervisor.stats
    metrics.add_counter(
        "drsdtp_postgres_twin_changes",
        "Field states other than readings (desired, metadata, sets, deletions) the database committed.",
        lambda: st.rows,
    )
    metrics.add_counter(
        "drsdtp_postgres_duplicate_twin_changes",
        "Field states the database held already (another node's, a replay after a crash or reconnect).",
        lambda: st.duplicates,
    )
    metrics.add_gauge(
        "drsdtp_postgres_changes_connected",
        "1 while the twin changes connection is up.",
        lambda: float(sup.connected),
    )


def add_event_metrics(metrics: NodeMetrics, sink: EventSink) -> None:
    st, sup = sink.stats, sink.supervisor.stats
    metrics.add_counter(
        "drsdtp_postgres_events", "Anomalies, alarm and command transitions the database committed.",
        lambda: st.rows,
    )  # fmt: skip
    metrics.add_counter(
        "drsdtp_postgres_duplicate_events",
        "Event rows the database held already (another node's, a replay, a record changed in place).",
        lambda: st.duplicates,
    )
    metrics.add_gauge(
        "drsdtp_postgres_events_connected",
        "1 while the events connection is up.",
        lambda: float(sup.connected),
    )


def add_sink_metrics(metrics: NodeMetrics, sink: PostgresSink) -> None:
    st, outbox, sup = sink.stats, sink.outbox, sink.supervisor.stats
    metrics.add_counter("drsdtp_postgres_rows", "Readings the database committed.", lambda: st.rows)
    metrics.add_counter("drsdtp_postgres_batches", "COPY transactions committed.", lambda: st.batches)
    metrics.add_counter(
        "drsdtp_postgres_replayed_records",
        "Outbox records skipped because the database already held them (a replay after a crash).",
        lambda: st.skipped_records,
    )
    metrics.add_labelled_counter(
        "drsdtp_postgres_dropped_records",
        "Journal records that will never reach the database: queue (the outbox worker fell behind), "
        "outbox (past outbox_max_bytes, or a crash tore them).",
        ("where",),
        lambda: {("queue",): st.queue_dropped, ("outbox",): outbox.stats.dropped_records},
    )
    metrics.add_counter(
        "drsdtp_postgres_duplicate_readings",
        "Readings the database already held (delivered twice upstream), not stored again.",
        lambda: st.duplicates,
    )
    metrics.add_gauge("drsdtp_postgres_connected", "1 while connected.", lambda: float(sup.connected))
    metrics.add_counter("drsdtp_postgres_reconnects", "Connections after the first.", lambda: sup.reconnects)
    metrics.add_gauge("drsdtp_postgres_outbox_bytes", "Bytes in the local outbox.", lambda: outbox.size_bytes)
    metrics.add_gauge(
        "drsdtp_postgres_backlog_journals",
        "Journal numbers in the outbox beyond what the database holds (0: caught up).",
        lambda: max(outbox.mark - st.database_journal, 0),
    )
    if sink.archive is not None:
        archive = sink.archive.stats
        metrics.add_counter(
            "drsdtp_postgres_archive_queries", "History reads sent to the database.", lambda: archive.queries
        )
        metrics.add_counter(
            "drsdtp_postgres_archive_points", "History points read back from the database.",
            lambda: archive.points,
        )  # fmt: skip
        metrics.add_counter(
            "drsdtp_postgres_archive_failures",
            "History reads the database could not answer (the node answered from its own history).",
            lambda: archive.failures,
        )
