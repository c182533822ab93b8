"""Prometheus metrics of ``streamtag record`` (``--metrics-port``), served on loopback by
default, read from the recorder's counts at scrape time like the daemon's. The port has the
daemon's metrics port's bounds at their defaults (streamtag.wire.listener): no thread per
connection, a request head within 10 s, 64 connections at once, 16 from one address."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from streamtag.wire.listener import HttpListener, ListenerLimits, MetricsExposition

if TYPE_CHECKING:
    from streamtag.history.recorder import Recorder

_COUNTERS = (
    ("written", "streamtag_record_written_messages", "Messages committed to the database"),
    ("overflowed", "streamtag_record_queue_overflow_messages",
     "Messages dropped because the queue was full while the database was slow or down"),
    ("gaps", "streamtag_record_gaps", "Gaps stored (seq jumps and queue overflow runs)"),
    ("missed", "streamtag_record_missed_messages", "Messages the stored gaps say are missing"),
    ("restarts", "streamtag_record_daemon_restarts", "Streams seen under a new daemon session"),
    ("db_errors", "streamtag_record_db_errors", "Transactions that failed and were retried"),
    ("rejected", "streamtag_record_rejected_messages",
     "Messages the database refused outright, each stored as a gap (cause rejected; the log "
     "names each kind once)"),
    ("failed", "streamtag_record_failed_messages",
     "Messages that failed otherwise in writing, each stored as a gap (cause failed; the log "
     "names each kind once)"),
    ("invalid", "streamtag_record_invalid_messages", "Frames that did not decode"),
    ("snapshots", "streamtag_record_snapshots", "Control snapshots stored"),
)


class _Collector:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self):
        stats = self.recorder.stats
        received = CounterMetricFamily("streamtag_record_received_messages",
                                       "Messages received, by type", labels=["msg_type"])
        for msg_type, count in sorted(stats.received.items()):
            received.add_metric([msg_type], float(count))
        yield received
        for attribute, name, text in _COUNTERS:
            family = CounterMetricFamily(name, text)
            family.add_metric([], float(getattr(stats, attribute)))
            yield family
        depth = GaugeMetricFamily("streamtag_record_queue_messages",
                                  "Messages waiting for the database")
        depth.add_metric([], float(self.recorder.queue.qsize()))
        yield depth
        capacity = GaugeMetricFamily("streamtag_record_queue_capacity_messages",
                                     "The queue's size (--queue-size)")
        capacity.add_metric([], float(self.recorder.queue.maxsize))
        yield capacity
        up = GaugeMetricFamily("streamtag_record_db_up",
                               "1 when the last transaction succeeded, 0 while retrying")
        up.add_metric([], 1.0 if stats.db_up else 0.0)
        yield up


class RecorderMetrics:
    def __init__(self, recorder: Recorder, port: int, address: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(recorder))
        self._exposition = MetricsExposition(self.registry)
        self._server = HttpListener(address, port, self._exposition.answer, ListenerLimits(),
                                    f"record's metrics port {port}")
        self.port = self._server.port

    def close(self) -> None:
        self._server.close()
        self._exposition.close()
