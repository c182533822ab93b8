"""Prometheus metrics of a running daemon (``--metrics-port``), served on loopback by default,
and the orchestrator's probes on the same port.

Counters come from the engine's and the sources' own counts at scrape time; batch sizes,
forward times and window latencies are histograms observed as they happen. A stream the daemon
forgets (it keeps the last ended ones, ``daemon.ENDED_KEPT``) leaves the metrics too: its
counters with its status, its latency histogram by ``forget_stream``.

Audio health per stream (streamtag.engine.health, docs/operations.md "Dead air"): the gauge
``streamtag_silent`` (1 while the stream is silent), the counters ``streamtag_silent_seconds``
(audio seconds of confirmed silence), ``streamtag_silences`` (silences begun) and
``streamtag_clipping_windows`` (windows with samples at full scale), from the stream's counters;
with ``[health] loudness``, the gauge ``streamtag_loudness_lufs`` (EBU R128 momentary and
short-term loudness at the stream's last window).

What each stream's audio is (``[content]``, streamtag.engine.content): the gauge
``streamtag_stream_content{stream,content}`` (1 for the content of its last window: music,
speech, silence, tone or noise) and the counter ``streamtag_content_windows{stream,content}``
(windows published of each content), observed as windows are published, as the latency is.

``/healthz`` answers 200 whenever the process serves HTTP (a liveness probe: no answer means
restart it); ``/readyz`` answers 200 once the model is loaded, the sockets are bound and the
sources started, and 503 with the reason before that and from the moment a drain begins.

The port is a `streamtag.wire.listener.HttpListener` with ``[metrics]``'s bounds: no thread per
connection, a request head within ``header_timeout_s``, at most ``max_connections`` at once
(``max_connections_per_address`` from one address), the oldest unanswered one closed to make
room, so the probes are answered while the port is flooded. Connections it closed or refused
are counted in ``streamtag_http_closed_connections{reason}``.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
from collections import Counter
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from websockets.http11 import Request, Response

from streamtag.engine.content import CONTENT_KINDS
from streamtag.errors import ConfigError
from streamtag.wire.listener import (
    ConnectionLimiter,
    HttpListener,
    ListenerLimits,
    MetricsExposition,
    plain,
)

if TYPE_CHECKING:
    from streamtag.engine.batching import WindowResult

STATES = ("starting", "running", "reconnecting", "ended", "failed")


def metrics_error(address: str, port: int, exc: OSError) -> ConfigError:
    """The metrics HTTP server could not listen, as a one-line ConfigError naming the key."""
    where = f"{address}:{port}" if ":" not in address else f"[{address}]:{port}"
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"metrics.address {address!r} does not resolve ({exc.strerror}); "
                           "give an IP address of this machine (e.g. 127.0.0.1) or a host "
                           "name that resolves")
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"metrics.port {port}: {where} is already in use; stop the process "
                           "that holds it, or set another metrics.port (--metrics-port)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"metrics.address {address!r} is not an address of this machine "
                           f"({exc.strerror}); use one of its addresses, 127.0.0.1, or 0.0.0.0 "
                           "for every interface")
    if exc.errno == errno.EACCES:
        return ConfigError(f"metrics.port {port}: not allowed to listen on {where} "
                           f"({exc.strerror}); ports below 1024 need privileges, use 1024 or "
                           "above (--metrics-port)")
    return ConfigError(f"metrics.address {address!r}, metrics.port {port}: cannot listen on "
                       f"{where} ({exc.strerror or exc}); check both")


class Observed(Protocol):
    """What the metrics read of the daemon, at scrape time. The daemon, which creates its
    metrics, is one; this module does not import it."""

    engine: Any      # None while the model loads
    publisher: Any   # None until the sockets are bound

    def status(self) -> dict[str, Any]:
        """The control socket's ``status`` reply: streams with their state and counters, and
        the engine's counts. A supervisor's is asked with ``histograms=True`` (its workers'
        histograms in the same reply)."""

    def readiness(self) -> tuple[bool, str]:
        """Whether ``/readyz`` answers 200, and the reason it gives."""


# A stream's counters (its status's "counters", by key) as Prometheus counters: name, help.
STREAM_COUNTERS = {
    "samples": ("streamtag_samples", "Audio samples framed"),
    "windows": ("streamtag_windows", "Windows scored"),
    "dropped_windows": ("streamtag_dropped_windows",
                        "Windows dropped because inference fell behind"),
    "reconnects": ("streamtag_reconnects", "Source reconnections"),
    "overflows": ("streamtag_overflows", "Capture overflows"),
    "nonfinite": ("streamtag_nonfinite_samples", "NaN and infinite audio samples replaced by 0"),
    "nonfinite_windows": ("streamtag_nonfinite_windows",
                          "Windows skipped because the model's scores were not finite"),
    "silent_s": ("streamtag_silent_seconds",
                 "Audio seconds of silence (dead air), counted from each silence's start once it "
                 "has lasted [health] silence_s"),
    "silences": ("streamtag_silences", "Silences (dead air) begun"),
    "tones": ("streamtag_stuck_tones", "Of the silences, those that were a stuck tone"),
    "clipping_windows": ("streamtag_clipping_windows",
                         "Windows with at least [health] clip_samples samples at full scale"),
}


class _Collector:
    def __init__(self, daemon: Observed, merge_histograms: bool = False) -> None:
        """``merge_histograms``: a supervisor's, whose status brings its workers' histograms
        (one request per worker and scrape serves both)."""
        self.daemon = daemon
        self.merge_histograms = merge_histograms

    def collect(self):
        if self.daemon.engine is None or self.daemon.publisher is None:
            return  # still loading the model: nothing to count yet
        status = (self.daemon.status(histograms=True) if self.merge_histograms
                  else self.daemon.status())
        per_stream = {key: CounterMetricFamily(name, documentation, labels=["stream"])
                      for key, (name, documentation) in STREAM_COUNTERS.items()}
        silent = GaugeMetricFamily("streamtag_silent",
                                   "1 while the stream is silent (dead air), else 0",
                                   labels=["stream"])
        state = GaugeMetricFamily("streamtag_stream_state", "1 for the stream's current state",
                                  labels=["stream", "state"])
        loudness = GaugeMetricFamily(
            "streamtag_loudness_lufs",
            "EBU R128 loudness at the stream's last window, LUFS: momentary (400 ms) and "
            "short-term (3 s), where [health] loudness is on", labels=["stream", "meter"])
        for sid, info in status["streams"].items():
            for key, family in per_stream.items():
                family.add_metric([sid], float(info["counters"].get(key, 0)))
            for s in STATES:
                state.add_metric([sid, s], 1.0 if info["state"] == s else 0.0)
            if "silent" in info["counters"]:  # [health] on, the stream's engine part known
                silent.add_metric([sid], float(info["counters"]["silent"]))
            level = info.get("level") or {}
            for meter in ("momentary", "short_term"):
                if level.get(f"{meter}_lufs") is not None:
                    loudness.add_metric([sid, meter], float(level[f"{meter}_lufs"]))
        yield from per_stream.values()
        yield state
        yield silent
        yield loudness
        engine = status["engine"]
        batches = CounterMetricFamily("streamtag_batches", "Forward passes")
        batches.add_metric([], float(engine["batches"]))
        yield batches
        failed = CounterMetricFamily("streamtag_failed_batches", "Forward passes that failed")
        failed.add_metric([], float(engine["failed_batches"]))
        yield failed
        # `streamtag run --processes N`: the supervisor's merged status lists its workers.
        if "workers" in status:
            restarts = CounterMetricFamily(
                "streamtag_worker_restarts", "Worker processes started again after they died",
                labels=["worker"])
            up = GaugeMetricFamily("streamtag_worker_up", "1 while the worker process serves",
                                   labels=["worker"])
            for worker in status["workers"]:
                restarts.add_metric([str(worker["index"])], float(worker["restarts"]))
                up.add_metric([str(worker["index"])], 1.0 if worker["state"] == "running"
                              else 0.0)
            yield restarts
            yield up
        if self.merge_histograms:
            per_worker = status.get("histograms", [])
            yield from merged_histograms(per_worker)
            yield from content_families([s for samples in per_worker for s in samples
                                         if isinstance(s, list) and len(s) == 3])
        # No metric of dropped messages: the daemon's PUB socket drops a slow subscriber's
        # messages inside ZeroMQ, unseen; the subscriber sees them as gaps in seq.


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
HISTOGRAM_HELP = {"streamtag_batch_size": "Windows per forward pass",
                  "streamtag_forward_seconds": "Forward pass time",
                  "streamtag_window_latency_seconds":
                      "From a window's last sample to its publication"}
CONTENT_NOW = "streamtag_stream_content"
CONTENT_WINDOWS = "streamtag_content_windows"
CONTENT_HELP = {CONTENT_NOW: "1 for what the stream's last window was (music, speech, silence, "
                             "tone or noise), 0 for the other contents; none without [content]",
                CONTENT_WINDOWS: "Windows published, by what their audio was (music, speech, "
                                 "silence, tone or noise)"}


class Histograms:
    """The daemon's histograms, observed as things happen: batch sizes, forward times and each
    stream's window latency. A daemon with a metrics port serves them; a worker of ``run
    --processes`` (no port of its own) keeps them for the supervisor, which asks for their
    ``samples()`` at each scrape and serves them merged (``merged_histograms``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        def histogram(name: str, **options) -> Histogram:
            return Histogram(name, HISTOGRAM_HELP[name], registry=self.registry, **options)

        self.batch_size = histogram("streamtag_batch_size", buckets=BATCH_BUCKETS)
        self.forward = histogram("streamtag_forward_seconds")
        self.latency = histogram("streamtag_window_latency_seconds", labelnames=["stream"],
                                 buckets=LATENCY_BUCKETS)
        # stream -> windows per content, and its last window's content
        self._content_lock = threading.Lock()
        self._content_windows: dict[str, Counter[str]] = {}
        self._content_now: dict[str, str] = {}

    def observe_batch(self, size: int, forward_s: float) -> None:
        self.batch_size.observe(size)
        self.forward.observe(forward_s)

    def observe_window(self, result: WindowResult) -> None:
        self.latency.labels(result.stream_id).observe(result.latency_ms / 1000.0)
        if result.content is not None:
            with self._content_lock:
                self._content_windows.setdefault(result.stream_id, Counter())[
                    result.content] += 1
                self._content_now[result.stream_id] = result.content

    def forget_stream(self, stream_id: str) -> None:
        """Drops a stream's latency histogram and contents (if it has them): the daemon no
        longer lists the stream."""
        with contextlib.suppress(KeyError):
            self.latency.remove(stream_id)
        with self._content_lock:
            self._content_windows.pop(stream_id, None)
            self._content_now.pop(stream_id, None)

    def content_samples(self) -> list[list[Any]]:
        """The contents' gauge and counters as ``[name, labels, value]``: every content of
        each stream that has one, so a content not heard yet reads 0."""
        with self._content_lock:
            counted = {sid: dict(c) for sid, c in self._content_windows.items()}
            now = dict(self._content_now)
        return [sample for sid in sorted(counted) for kind in CONTENT_KINDS for sample in (
            [CONTENT_NOW, {"stream": sid, "content": kind}, 1.0 if now.get(sid) == kind
             else 0.0],
            [CONTENT_WINDOWS + "_total", {"stream": sid, "content": kind},
             float(counted[sid].get(kind, 0))])]

    def samples(self) -> list[list[Any]]:
        """Every bucket, count and sum as ``[name, labels, value]`` (JSON), and the
        contents' samples, for a supervisor."""
        return [[sample.name, sample.labels, sample.value]
                for metric in (self.batch_size, self.forward, self.latency)
                for family in metric.collect() for sample in family.samples
                if not sample.name.endswith("_created")] + self.content_samples()


def content_families(samples: list[list[Any]]):
    """The contents' gauge and counter families from ``Histograms.content_samples`` (of one
    daemon, or of every worker: each stream's come from the worker serving it)."""
    now = GaugeMetricFamily(CONTENT_NOW, CONTENT_HELP[CONTENT_NOW], labels=["stream", "content"])
    windows = CounterMetricFamily(CONTENT_WINDOWS, CONTENT_HELP[CONTENT_WINDOWS],
                                  labels=["stream", "content"])
    for name, labels, value in samples:
        if not isinstance(labels, dict) or set(labels) != {"stream", "content"}:
            continue
        family = now if name == CONTENT_NOW else windows if name == CONTENT_WINDOWS + "_total" \
            else None
        if family is not None:
            family.add_metric([str(labels["stream"]), str(labels["content"])], float(value))
    yield now
    yield windows


def merged_histograms(per_worker: list[list[list[Any]]]):
    """The workers' histograms (``Histograms.samples()`` of each), summed bucket by bucket: one
    batch-size and one forward-time histogram for the whole run, and each stream's latency
    from the worker that serves it."""
    # (family, labels without le) -> {"buckets": {le: count}, "sum": total}
    series: dict[tuple[str, tuple], dict[str, Any]] = {}
    for samples in per_worker:
        for name, labels, value in samples:
            family = next((f for f in HISTOGRAM_HELP if name.startswith(f + "_")), None)
            if family is None or not isinstance(labels, dict):
                continue
            kind = name[len(family) + 1:]
            key = (family, tuple(sorted((k, v) for k, v in labels.items() if k != "le")))
            entry = series.setdefault(key, {"buckets": {}, "sum": 0.0})
            if kind == "bucket" and "le" in labels:
                entry["buckets"][labels["le"]] = entry["buckets"].get(labels["le"], 0.0) \
                    + float(value)
            elif kind == "sum":
                entry["sum"] += float(value)
    families: dict[str, HistogramMetricFamily] = {}
    for (family, labels), entry in sorted(series.items()):
        out = families.get(family)
        if out is None:
            out = families[family] = HistogramMetricFamily(family, HISTOGRAM_HELP[family],
                                                           labels=[k for k, _ in labels])
        buckets = sorted(entry["buckets"].items(), key=lambda b: float(b[0]))
        out.add_metric([v for _, v in labels], buckets, entry["sum"])
    yield from families.values()


class DaemonMetrics:
    def __init__(self, daemon: Observed, port: int, address: str = "127.0.0.1",
                 merge_histograms: bool = False, limits: ListenerLimits | None = None) -> None:
        """``merge_histograms``: for a supervisor, which serves its workers' histograms from
        its status; a daemon observes its own (``self.histograms``). ``limits``: the port's
        connection bounds and timeouts (``[metrics]``; streamtag.wire.listener)."""
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(daemon, merge_histograms))
        self.histograms: Histograms | None = None
        if not merge_histograms:
            self.histograms = Histograms(self.registry)
            self.registry.register(_Contents(self.histograms))
        self._exposition = MetricsExposition(self.registry)
        self._server = HttpListener(address, port, _probes(daemon, self._exposition),
                                    limits or ListenerLimits(), f"metrics port {port}")
        self.port = self._server.port
        self.registry.register(ClosedConnections(self._server.limiter))

    def close(self) -> None:
        self._server.close()
        self._exposition.close()


class _Contents:
    """A collector of a daemon's contents (a supervisor serves its workers' from their
    samples, with the histograms)."""

    def __init__(self, histograms: Histograms) -> None:
        self.histograms = histograms

    def collect(self):
        yield from content_families(self.histograms.content_samples())


class ClosedConnections:
    """A collector of the connections a listener closed or refused, by reason."""

    def __init__(self, limiter: ConnectionLimiter) -> None:
        self.limiter = limiter

    def collect(self):
        closed = CounterMetricFamily(
            "streamtag_http_closed_connections",
            "Connections to this port closed or refused by its bounds (request head late, "
            "room made past the connection caps, refused)", labels=["reason"])
        for reason, count in sorted(self.limiter.closed().items()):
            closed.add_metric([reason], float(count))
        yield closed


def _probes(daemon: Observed, exposition: MetricsExposition):
    """The port's answers: /healthz and /readyz on the loop at once (no scrape waits before
    them), everything else the Prometheus exposition."""

    async def answer(request: Request) -> Response:
        path = urlsplit(request.path).path
        if path not in ("/healthz", "/readyz"):
            return await exposition.answer(request)
        ok, reason = (True, "serving") if path == "/healthz" else daemon.readiness()
        return plain(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, f"{reason}\n")

    return answer
